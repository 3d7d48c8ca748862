//! `broker:`: the embedded broker's limits, its logins and its TLS identity.

use std::path::Path;

use super::{read_secret, Problems};
use crate::broker::passwords::Secret;
use crate::config::schema;

/// Checks `broker:` and reads its users file.
pub(super) fn check(raw: schema::Broker, p: &mut Problems) -> schema::Broker {
    if raw.max_connections == 0 {
        p.error(
            "broker.max_connections",
            "must be at least 1",
            Some("write e.g. max_connections: 64".into()),
        );
    }
    if raw.max_connections_per_peer == 0 {
        p.error(
            "broker.max_connections_per_peer",
            "must be at least 1",
            Some("write e.g. max_connections_per_peer: 16 (loopback clients are exempt)".into()),
        );
    }
    if raw.max_topics == 0 {
        p.error(
            "broker.max_topics",
            "must be at least 1: local clients could publish and subscribe to nothing",
            Some("write e.g. max_topics: 50000".into()),
        );
    }
    if raw.max_filters == 0 {
        p.error(
            "broker.max_filters",
            "must be at least 1: local clients could subscribe to nothing",
            Some("write e.g. max_filters: 64".into()),
        );
    }
    if raw.nice > 19 {
        p.error(
            "broker.nice",
            "must be between 0 and 19",
            Some(
                "write e.g. nice: 10 (0 serves local clients at the same priority as the readings)"
                    .into(),
            ),
        );
    }
    if raw.max_inflight == 0 || raw.max_inflight > u16::MAX as usize {
        p.error("broker.max_inflight", "must be between 1 and 65535", None);
    }
    if raw.window.as_u64() < 4 * 1024 || raw.window.as_u64() > 1 << 30 {
        p.error(
            "broker.window",
            format!("{} is out of range", raw.window),
            Some("write a size between 4KiB and 1GiB, e.g. window: 64KiB".into()),
        );
    }
    if raw.connect_timeout < std::time::Duration::from_secs(1)
        || raw.connect_timeout.as_millis() > u16::MAX as u128
    {
        p.error(
            "broker.connect_timeout",
            "must be between 1s and 65s",
            Some("write e.g. connect_timeout: 5s".into()),
        );
    }

    let mut broker = raw;
    if let Some(file) = broker.users_file.clone() {
        broker.users = read_users(&file, p);
    }
    if let Some(tls) = &broker.tls {
        if let Err(why) = crate::tls::check_server_identity(&tls.cert_file, &tls.key_file) {
            p.error(
                "broker.tls",
                why,
                Some(
                    "give a PEM certificate chain in cert_file and its PEM private key in key_file"
                        .into(),
                ),
            );
        }
        match &tls.client_ca_file {
            Some(ca) => {
                if let Err(why) = crate::tls::client_roots(ca) {
                    p.error(
                        "broker.tls.client_ca_file",
                        why,
                        Some("give the PEM certificate of the CA that signs your clients' certificates".into()),
                    );
                }
            }
            None if tls.require_client_cert => p.error(
                "broker.tls.require_client_cert",
                "requires client_ca_file: which CA's certificates would be accepted?",
                Some("add client_ca_file: /etc/serial2mqtt/clients-ca.pem".into()),
            ),
            None => {}
        }
    }

    broker
}

/// Whether anyone who reaches the broker may connect from another host and publish anywhere:
/// a listener off loopback that takes anonymous clients, with no access rules to limit them.
pub fn open_to_the_network(broker: &schema::Broker) -> bool {
    !broker.listen.ip().is_loopback() && anonymous_allowed(broker) && broker.acl_file.is_none()
}

/// Whether a client may connect without a login (no users file, and no client certificate
/// required).
pub fn anonymous_allowed(broker: &schema::Broker) -> bool {
    broker.users_file.is_none() && !broker.tls.as_ref().is_some_and(|t| t.require_client_cert)
}

/// Reads `broker.acl_file` with `{gateway}` and `{device}` expanded; each bad line is an error
/// naming file and line.
pub(super) fn read_acl(
    broker: &mut schema::Broker,
    gateway: &str,
    devices: &[String],
    p: &mut Problems,
) {
    let Some(file) = broker.acl_file.clone() else {
        return;
    };
    let key = "broker.acl_file";
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) => {
            p.error(
                key,
                format!("cannot read {}: {e}", file.display()),
                Some("create it: e.g. `user homeassistant` then `topic readwrite #` (mosquitto's acl_file format)".into()),
            );
            return;
        }
    };
    match crate::broker::acl::Acl::parse(&text, gateway, devices) {
        Ok(acl) => {
            if let Some(users) = &broker.users {
                let certs = broker
                    .tls
                    .as_ref()
                    .is_some_and(|t| t.client_ca_file.is_some());
                let mut unknown: Vec<&str> =
                    acl.users().filter(|u| !users.0.contains_key(*u)).collect();
                unknown.sort();
                if !unknown.is_empty() && !certs {
                    p.warn(
                        key,
                        format!(
                            "{}: user(s) {} have rules but no login in {}",
                            file.display(),
                            unknown.join(", "),
                            broker
                                .users_file
                                .as_ref()
                                .map(|f| f.display().to_string())
                                .unwrap_or_default()
                        ),
                        Some("add their logins with `serial2mqtt passwd FILE USER`, or fix the names".into()),
                    );
                }
            }
            broker.acl = Some(acl);
        }
        Err(errors) => {
            for e in errors {
                p.error(
                    key,
                    format!("{}:{}: {}", file.display(), e.line, e.message),
                    Some(e.hint),
                );
            }
        }
    }
}

/// Whether a broker running with these settings must take no commands: it is open to the
/// network ([`open_to_the_network`]) and `allow_anonymous_commands` does not accept that. The
/// gateway asks this of the broker *in force* (the listener bound at start, the logins and
/// access rules a reload swapped in), never of a file that is not applied yet: a reload that
/// only writes `listen: 127.0.0.1:1883` leaves the network listener running.
pub fn refuses_commands(broker: &schema::Broker) -> bool {
    open_to_the_network(broker) && !broker.allow_anonymous_commands
}

/// Turns off the commands of `devices` when `broker` refuses them ([`refuses_commands`]).
/// The gateway calls it where it applies a config (start, reload) with the broker in force,
/// and `serial2mqtt check` with the file's broker, which is the one a start would run.
/// Returns the devices whose commands it turned off.
pub fn commands_in_force(
    broker: &schema::Broker,
    devices: &mut [crate::config::Device],
) -> Vec<String> {
    if !refuses_commands(broker) {
        return Vec::new();
    }
    devices
        .iter_mut()
        .filter(|d| !d.commands.is_empty())
        .map(|d| {
            d.commands.clear();
            d.name.clone()
        })
        .collect()
}

/// A listener on the network without logins lets anyone there connect: `check` says so, and
/// that a gateway serving it takes no commands (which write to the devices) unless
/// `allow_anonymous_commands` says otherwise. Only a warning: the gateway turns the commands
/// off where it applies a config, from the broker in force ([`refuses_commands`]). Readings go
/// on either way.
pub(super) fn anonymous_network(
    broker: &schema::Broker,
    devices: &[crate::config::Device],
    p: &mut Problems,
) {
    if !open_to_the_network(broker) {
        return;
    }
    let listen = broker.listen;
    let commanded: Vec<&str> = devices
        .iter()
        .filter(|d| !d.commands.is_empty())
        .map(|d| d.name.as_str())
        .collect();
    if commanded.is_empty() {
        p.warn(
            "broker.listen",
            format!("the broker listens on {listen} without logins: anyone on the network can connect, read every reading and publish"),
            Some("set broker.users_file (serial2mqtt passwd FILE USER), or listen on 127.0.0.1:1883".into()),
        );
    } else if broker.allow_anonymous_commands {
        p.warn(
            "broker.allow_anonymous_commands",
            format!("the broker listens on {listen} without logins and takes commands: anyone on the network can write to {}", commanded.join(", ")),
            Some("set broker.users_file (serial2mqtt passwd FILE USER), or listen on 127.0.0.1:1883".into()),
        );
    } else {
        p.warn(
            "broker.listen",
            format!("the broker listens on {listen} without logins, so the commands of {} are off while it does: anyone on the network could write to the devices", commanded.join(", ")),
            Some("set broker.users_file (serial2mqtt passwd FILE USER), listen on 127.0.0.1:1883, or accept the risk with broker.allow_anonymous_commands: true (broker settings take effect at the next restart)".into()),
        );
    }
}

/// Reads `broker.users_file`: `user:hash` per line (plain-text passwords still work, with a
/// warning naming their line); blank lines and `#` comments skipped.
fn read_users(file: &Path, p: &mut Problems) -> Option<schema::Users> {
    let key = "broker.users_file";
    let create = format!(
        "create it with `serial2mqtt passwd {} USER` (one line per user, chmod 640)",
        file.display()
    );
    let text = read_secret(key, file, create, p)?;
    let mut users = std::collections::HashMap::new();
    let mut plain = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        match line.split_once(':') {
            Some((user, stored)) if !user.is_empty() && !stored.is_empty() => {
                match Secret::parse(stored) {
                    Ok(secret) => {
                        if secret.plain().is_some() {
                            plain.push(format!("{}:{} (`{user}`)", file.display(), i + 1));
                        }
                        users.insert(user.to_owned(), secret);
                    }
                    Err(why) => p.error(
                        key,
                        format!(
                            "{}:{}: user `{user}`'s password hash: {why}",
                            file.display(),
                            i + 1
                        ),
                        Some(format!(
                            "write it again with `serial2mqtt passwd {} {user}`",
                            file.display()
                        )),
                    ),
                }
            }
            // The line may hold a password: say where, never what.
            _ => p.error(
                key,
                format!("{}:{}: not a `user:password` line", file.display(), i + 1),
                Some("write one `user:password` per line".into()),
            ),
        }
    }
    if !plain.is_empty() {
        p.warn(
            key,
            format!(
                "plain-text passwords (deprecated: anyone who reads the file can log in) at {}",
                plain.join(", ")
            ),
            Some(format!(
                "hash each one: `serial2mqtt passwd {} USER` (it prompts, or reads the password from stdin)",
                file.display()
            )),
        );
    }
    if users.is_empty() {
        p.error(
            key,
            format!(
                "{} holds no `user:password` line: no client could log in",
                file.display()
            ),
            Some("add a line like `dashboard:a-long-password`, or remove users_file".into()),
        );
        return None;
    }
    Some(schema::Users(users))
}

//! `serial2mqtt status`: what a running daemon reports, as a table for a person at a terminal.
//!
//! The daemon already publishes a retained JSON summary on `serial2mqtt/{gateway}/stats` every
//! `gateway.stats_interval` (first one 2 s after start). `status` connects to the embedded
//! broker like any local client (logging in with the first user of `broker.users_file`; on a
//! TLS listener trusting `--ca-file`, by default `broker.tls.cert_file`, and checking `--host`),
//! takes that retained message and renders it: no second channel into the daemon to secure or
//! keep in step.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, TlsConfiguration, Transport};

use crate::broker::connect_addr;
use crate::config;
use crate::config::schema::Tls;
use crate::config::Config;
use crate::gateway::summary::Summary;

/// Fetches and prints the summary of the gateway running from the config at `path`.
pub fn main(path: PathBuf, tls: &TlsTarget) -> ExitCode {
    // Warnings (a port missing now) are `check`'s business, not a status reader's.
    let config = match config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let Some(rt) = super::runtime() else {
        return ExitCode::FAILURE;
    };
    match rt.block_on(fetch(&config, tls)) {
        Ok(summary) => {
            print!("{}", render(&config.gateway.id, &summary));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("serial2mqtt: {e}");
            ExitCode::FAILURE
        }
    }
}

/// How long `status` waits for the broker and the retained summary.
const WAIT: Duration = Duration::from_secs(5);

/// How to reach a TLS listener: the CA to trust and the host name its certificate carries.
#[derive(Debug, Default)]
pub struct TlsTarget {
    /// CA certificates (PEM); default: the listener's own `cert_file` (a self-signed one, or a
    /// chain that includes its CA).
    pub ca_file: Option<std::path::PathBuf>,
    /// Host name to connect to and verify; default: the listen address.
    pub host: Option<String>,
    /// The login, its password in `SERIAL2MQTT_PASSWORD`; default: the users file's first
    /// plain-text one.
    pub user: Option<String>,
}

/// The login `status` uses: `--user` with SERIAL2MQTT_PASSWORD, else the users file's first
/// plain-text login; hashed logins cannot be read back, so they need `--user`.
fn credentials(config: &Config, target: &TlsTarget) -> Result<Option<(String, String)>, String> {
    let Some(users) = &config.broker.users else {
        return Ok(None);
    };
    if let Some(user) = &target.user {
        let password = std::env::var("SERIAL2MQTT_PASSWORD").map_err(|_| {
            format!(
                "--user {user}: put its password in the SERIAL2MQTT_PASSWORD environment variable"
            )
        })?;
        return Ok(Some((user.clone(), password)));
    }
    let mut plain: Vec<(&String, &str)> = users
        .0
        .iter()
        .filter_map(|(u, s)| s.plain().map(|p| (u, p)))
        .collect();
    plain.sort();
    match plain.first() {
        Some((u, p)) => Ok(Some(((*u).clone(), (*p).to_owned()))),
        None => Err("the broker's logins are hashed: run `SERIAL2MQTT_PASSWORD=... serial2mqtt status --user NAME`".into()),
    }
}

/// Fetches the daemon's latest summary from its broker.
pub async fn fetch(config: &Config, target: &TlsTarget) -> Result<Summary, String> {
    let addr = connect_addr(config.broker.listen);
    let topic = format!("serial2mqtt/{}/stats", config.gateway.id);
    let id = format!("serial2mqtt-status-{}", std::process::id());
    let host = target.host.clone().unwrap_or_else(|| addr.ip().to_string());
    let mut opts = MqttOptions::new(id, host, addr.port());
    opts.set_keep_alive(Duration::from_secs(10));
    opts.set_max_packet_size(1 << 20, 1 << 20);
    if let Some((user, password)) = credentials(config, target)? {
        opts.set_credentials(user, password);
    }
    if let Some(tls) = &config.broker.tls {
        let trust = Tls {
            ca_file: Some(
                target
                    .ca_file
                    .clone()
                    .unwrap_or_else(|| tls.cert_file.clone()),
            ),
            cert_file: None,
            key_file: None,
        };
        let client = crate::tls::client_config(Some(&trust))?;
        opts.set_transport(Transport::Tls(TlsConfiguration::Rustls(client)));
    }
    let (client, mut events) = AsyncClient::new(opts, 10);
    client
        .subscribe(&topic, QoS::AtMostOnce)
        .await
        .map_err(|e| e.to_string())?;
    let got = tokio::time::timeout(WAIT, async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) if p.topic == topic => {
                    return serde_json::from_slice::<Summary>(&p.payload)
                        .map_err(|e| format!("the summary on {topic} is not a gateway summary: {e}"));
                }
                Ok(Event::Incoming(Packet::SubAck(a)))
                    if a.return_codes.contains(&rumqttc::SubscribeReasonCode::Failure) =>
                {
                    return Err(format!(
                        "the broker refused the subscription to {topic}: broker.acl_file must let this login read it (e.g. `topic read serial2mqtt/{}/#` in its section)",
                        config.gateway.id
                    ));
                }
                Ok(_) => {}
                Err(e) => {
                    return Err(format!(
                        "cannot reach the gateway's broker on {addr}: {e} (is serial2mqtt running with this config?)"
                    ))
                }
            }
        }
    })
    .await;
    let _ = client.try_disconnect();
    match got {
        Ok(result) => result,
        Err(_) => Err(format!(
            "no summary on {topic} within {}s: the gateway publishes one 2 s after start, then every gateway.stats_interval ({}); is it 0?",
            WAIT.as_secs(),
            humantime::format_duration(config.gateway.stats_interval)
        )),
    }
}

/// Renders a summary as a few lines and a table.
pub fn render(gateway: &str, summary: &Summary) -> String {
    let mut out = String::new();
    let at = if summary.at.is_empty() {
        "?"
    } else {
        &summary.at
    };
    let uptime = humantime::format_duration(Duration::from_secs(summary.uptime_s));
    let _ = writeln!(out, "gateway {gateway}: summary of {at}, up {uptime}");
    let mut rows = vec![[
        "DEVICE",
        "STATE",
        "FRAMES",
        "MESSAGES",
        "UNMATCHED",
        "BAD",
        "COMMANDS ok/rej/fail",
    ]
    .map(String::from)];
    for (name, d) in &summary.devices {
        rows.push([
            name.clone(),
            if d.online { "online" } else { "offline" }.into(),
            d.frames.to_string(),
            d.messages.to_string(),
            d.unmatched.to_string(),
            d.bad().to_string(),
            format!(
                "{}/{}/{}",
                d.commands.written, d.commands.rejected, d.commands.failed
            ),
        ]);
    }
    if rows.len() == 1 {
        let _ = writeln!(out, "no devices");
    } else {
        let widths: Vec<usize> = (0..rows[0].len())
            .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
            .collect();
        for r in &rows {
            let line: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(cell, w)| format!("{cell:<w$}"))
                .collect();
            let _ = writeln!(out, "{}", line.join("  ").trim_end());
        }
    }
    if let Some(q) = &summary.queue {
        let _ = writeln!(
            out,
            "queue: {} messages waiting, {} on disk in {} segment(s), {} dropped",
            q.depth,
            bytesize::ByteSize::b(q.bytes),
            q.segments,
            q.dropped.total(),
        );
    }
    match &summary.uplink {
        Some(u) => {
            let _ = writeln!(
                out,
                "uplink: {}, {} connection(s), {} delivered",
                if u.connected {
                    "connected"
                } else {
                    "offline, buffering"
                },
                u.connects,
                u.delivered,
            );
        }
        None => {
            let _ = writeln!(out, "uplink: none configured");
        }
    }
    if let Some(m) = &summary.modbus_server {
        let refused = m.denied + m.malformed + m.unknown_unit + m.busy + m.unanswered;
        let _ = writeln!(
            out,
            "modbus server: {} connection(s), {} forwarded, {} cached, {refused} refused ({} busy, {} unanswered, {} denied), {} connection(s) closed",
            m.connections, m.forwarded, m.cached, m.busy, m.unanswered, m.denied, m.closed,
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_summary_renders_as_a_table() {
        let s = serde_json::json!({
            "at": "2026-11-24T22:00:00Z", "uptime_s": 3725,
            "devices": {
                "greenhouse": {"online": true, "frames": 1200, "messages": 2400, "unmatched": 3,
                    "too_long": 1, "corrupt": 0, "incomplete": 1, "invalid_utf8": 0, "bad_topic": 0,
                    "commands": {"written": 5, "rejected": 1, "failed": 0}},
                "meter": {"online": false, "frames": 0, "messages": 0}
            },
            "queue": {"depth": 12, "bytes": 4096, "segments": 1, "dropped": {"full": 2}},
            "uplink": {"connected": false, "connects": 3, "delivered": 2388},
            "modbus_server": {"connections": 2, "forwarded": 40, "cached": 900, "busy": 3,
                "unanswered": 1, "denied": 2, "malformed": 1, "closed": 4}
        });
        let text = render("gw", &serde_json::from_value(s).unwrap());
        assert_eq!(
            text,
            "gateway gw: summary of 2026-11-24T22:00:00Z, up 1h 2m 5s\n\
             DEVICE      STATE    FRAMES  MESSAGES  UNMATCHED  BAD  COMMANDS ok/rej/fail\n\
             greenhouse  online   1200    2400      3          2    5/1/0\n\
             meter       offline  0       0         0          0    0/0/0\n\
             queue: 12 messages waiting, 4.0 KiB on disk in 1 segment(s), 2 dropped\n\
             uplink: offline, buffering, 3 connection(s), 2388 delivered\n\
             modbus server: 2 connection(s), 40 forwarded, 900 cached, 7 refused (3 busy, 1 unanswered, 2 denied), 4 connection(s) closed\n"
        );
    }
}

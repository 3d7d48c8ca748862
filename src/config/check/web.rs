//! `web:` — the dashboard's listener: loopback is open to the machine's own users (as `status`
//! is); any other address needs a token, read here from `token_file` so that a missing or weak
//! one stops the gateway at start with the line to fix, not at the first browser's visit; and
//! its caps and timeouts, so that no peer can hold it (or the gateway's descriptors).

use std::net::SocketAddr;
use std::time::Duration;

use super::{read_secret, warn_if_world_readable};
use crate::config::diagnostics::Problems;
use crate::config::model::WebSettings;
use crate::config::schema;
use crate::http::Limits;

/// Shorter tokens are refused: a dashboard on the LAN is guessed at by whoever is on it.
pub const MIN_TOKEN_LEN: usize = 16;
/// Shorter tokens are a warning: 32 random characters are past guessing even unthrottled.
pub const STRONG_TOKEN_LEN: usize = 32;
/// A token of fewer different characters is a warning, whatever its length (`aaaa...`, a
/// word repeated). A random token of 32 hex digits has fewer only once in tens of millions.
const MIN_DISTINCT_CHARS: usize = 8;
/// The command that makes a strong token (32 characters of base64), for the messages.
fn make_token(file: &std::path::Path) -> String {
    format!(
        "`head -c 24 /dev/urandom | base64 > {0} && chmod 640 {0}`",
        file.display()
    )
}

/// Checks `web:`; `taken` are the other listeners' addresses, with their keys.
pub(super) fn check(
    raw: schema::Web,
    taken: &[(&str, SocketAddr)],
    p: &mut Problems,
) -> Option<WebSettings> {
    for (key, addr) in taken {
        if *addr == raw.listen {
            p.error(
                "web.listen",
                format!(
                    "{} is {key}'s address too: one port, one listener",
                    raw.listen
                ),
                Some(format!(
                    "give the dashboard another port, e.g. {}:8080",
                    raw.listen.ip()
                )),
            );
            return None;
        }
    }
    let limits = limits("web", &raw, p)?;
    let token = match &raw.token_file {
        Some(file) => Some(read_token("web.token_file", file, p)?),
        None if !raw.listen.ip().is_loopback() => {
            p.error(
                "web.listen",
                format!(
                    "the dashboard on {} would show every device and reading to anyone on the network",
                    raw.listen
                ),
                Some(format!(
                    "set web.token_file to a file holding a token of {STRONG_TOKEN_LEN}+ random \
                     characters (e.g. {}), or listen on 127.0.0.1:{}",
                    make_token(std::path::Path::new("/etc/serial2mqtt/web-token")),
                    raw.listen.port()
                )),
            );
            return None;
        }
        None => None,
    };
    if let Some(tls) = &raw.tls {
        if let Err(why) = crate::tls::check_server_identity(&tls.cert_file, &tls.key_file) {
            p.error(
                "web.tls",
                why,
                Some(
                    "give a PEM certificate chain in cert_file and its PEM private key in key_file (the broker's may serve here too)"
                        .into(),
                ),
            );
            return None;
        }
        warn_if_world_readable("web.tls.key_file", &tls.key_file, p);
    }
    Some(WebSettings {
        listen: raw.listen,
        token,
        tls: raw.tls,
        limits,
    })
}

/// The caps and timeouts of `web:` (`section`), in range.
fn limits(section: &str, raw: &schema::Web, p: &mut Problems) -> Option<Limits> {
    let mut ok = true;
    let defaults = Limits::WEB;
    if raw.max_connections == 0 {
        p.error(
            &format!("{section}.max_connections"),
            "must be at least 1",
            Some(format!(
                "write e.g. max_connections: {}",
                defaults.max_connections
            )),
        );
        ok = false;
    }
    if raw.max_connections_per_peer == 0 {
        p.error(
            &format!("{section}.max_connections_per_peer"),
            "must be at least 1",
            Some(format!(
                "write e.g. max_connections_per_peer: {}",
                defaults.max_connections_per_peer
            )),
        );
        ok = false;
    } else if raw.max_connections_per_peer > raw.max_connections && raw.max_connections > 0 {
        p.warn(
            &format!("{section}.max_connections_per_peer"),
            format!(
                "{} is more than {section}.max_connections ({}): one address may take every place",
                raw.max_connections_per_peer, raw.max_connections
            ),
            Some(format!(
                "write at most a quarter of max_connections, e.g. max_connections_per_peer: {}",
                (raw.max_connections / 4).max(1)
            )),
        );
    }
    for (key, value, max, example) in [
        (
            "header_timeout",
            raw.header_timeout,
            Duration::from_secs(600),
            defaults.header_timeout,
        ),
        (
            "idle_timeout",
            raw.idle_timeout,
            Duration::from_secs(86_400),
            defaults.idle_timeout,
        ),
    ] {
        if value < Duration::from_secs(1) || value > max {
            p.error(
                &format!("{section}.{key}"),
                format!(
                    "{} is out of range: between 1s and {} (a longer one lets an idle peer hold a connection that long)",
                    humantime::format_duration(value),
                    humantime::format_duration(max)
                ),
                Some(format!(
                    "write e.g. {key}: {}",
                    humantime::format_duration(example)
                )),
            );
            ok = false;
        }
    }
    ok.then_some(Limits {
        max_connections: raw.max_connections,
        max_connections_per_peer: raw.max_connections_per_peer,
        header_timeout: raw.header_timeout,
        idle_timeout: raw.idle_timeout,
    })
}

/// The token at `key` (`web.token_file`, `metrics.token_file`): the file's first line,
/// trimmed; an error when it is too short to resist guessing, a warning when it is short of
/// [`STRONG_TOKEN_LEN`] or made of few different characters. Never the token in a message.
pub(super) fn read_token(key: &str, file: &std::path::Path, p: &mut Problems) -> Option<String> {
    let create = format!("create it: {}", make_token(file));
    let text = read_secret(key, file, create, p)?;
    let token = text.lines().next().unwrap_or("").trim().to_owned();
    // Never the token itself in a message: only its length.
    if token.chars().count() < MIN_TOKEN_LEN {
        p.error(
            key,
            format!(
                "the token in {} has {} characters; at least {MIN_TOKEN_LEN} are needed",
                file.display(),
                token.chars().count()
            ),
            Some(format!("write a random one: {}", make_token(file))),
        );
        return None;
    }
    let length = token.chars().count();
    let distinct = token
        .chars()
        .collect::<std::collections::HashSet<char>>()
        .len();
    if length < STRONG_TOKEN_LEN {
        p.warn(
            key,
            format!(
                "the token in {} has {length} characters: with a few addresses it can be \
                 guessed in time; {STRONG_TOKEN_LEN} random ones cannot",
                file.display()
            ),
            Some(format!("write a random one: {}", make_token(file))),
        );
    } else if distinct < MIN_DISTINCT_CHARS {
        p.warn(
            key,
            format!(
                "the token in {} is made of {distinct} different characters: it is easy to guess",
                file.display()
            ),
            Some(format!("write a random one: {}", make_token(file))),
        );
    }
    Some(token)
}

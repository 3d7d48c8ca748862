//! `web:` — the dashboard's listener: loopback is open to the machine's own users (as `status`
//! is); any other address needs a token, read here from `token_file` so that a missing or weak
//! one stops the gateway at start with the line to fix, not at the first browser's visit.

use std::net::SocketAddr;

use super::{read_secret, warn_if_world_readable};
use crate::config::diagnostics::Problems;
use crate::config::model::WebSettings;
use crate::config::schema;

/// Shorter tokens are refused: a dashboard on the LAN is guessed at by whoever is on it.
pub const MIN_TOKEN_LEN: usize = 16;

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
    let token = match &raw.token_file {
        Some(file) => Some(read_token(file, p)?),
        None if !raw.listen.ip().is_loopback() => {
            p.error(
                "web.listen",
                format!(
                    "the dashboard on {} would show every device and reading to anyone on the network",
                    raw.listen
                ),
                Some(format!(
                    "set web.token_file to a file holding a token of {MIN_TOKEN_LEN}+ characters \
                     (e.g. `head -c 24 /dev/urandom | base64 > /etc/serial2mqtt/web-token`), \
                     or listen on 127.0.0.1:{}",
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
    })
}

/// The token: the file's first line, trimmed, long enough to resist guessing.
fn read_token(file: &std::path::Path, p: &mut Problems) -> Option<String> {
    let key = "web.token_file";
    let create = format!(
        "create it: `head -c 24 /dev/urandom | base64 > {0} && chmod 640 {0}`",
        file.display()
    );
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
            Some(format!(
                "write a longer one: `head -c 24 /dev/urandom | base64 > {}`",
                file.display()
            )),
        );
        return None;
    }
    Some(token)
}

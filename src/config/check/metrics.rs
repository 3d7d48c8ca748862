//! `metrics:` — the Prometheus endpoint: device names and counters, so off loopback it wants a
//! token as the dashboard does. Without one it still starts (configs written before the token
//! existed keep working) but `check` and the start say who can read it.

use std::net::SocketAddr;

use super::web::read_token;
use crate::config::diagnostics::Problems;
use crate::config::model::MetricsSettings;
use crate::config::schema;

/// Checks `metrics:`; `web` is the dashboard's address, whose listener serves `/metrics` too
/// when it is the same.
pub(super) fn check(
    raw: schema::Metrics,
    web: Option<SocketAddr>,
    p: &mut Problems,
) -> Option<MetricsSettings> {
    let shared = web == Some(raw.listen);
    let token = match &raw.token_file {
        Some(_) if shared => {
            p.warn(
                "metrics.token_file",
                format!(
                    "is not used: /metrics is on the dashboard's listener ({}), behind web.token_file",
                    raw.listen
                ),
                Some(format!(
                    "remove metrics.token_file and give Prometheus the dashboard's token, or give \
                     metrics its own port, e.g. {}:9898",
                    raw.listen.ip()
                )),
            );
            None
        }
        Some(file) => Some(read_token("metrics.token_file", file, p)?),
        None if !shared && !raw.listen.ip().is_loopback() => {
            p.warn(
                "metrics.listen",
                open_warning(raw.listen),
                Some(open_help(raw.listen)),
            );
            None
        }
        None => None,
    };
    Some(MetricsSettings {
        listen: raw.listen,
        token,
    })
}

/// Why an open `/metrics` off loopback is a warning (also logged at start).
pub fn open_warning(listen: SocketAddr) -> String {
    format!("/metrics on {listen} answers anyone on the network: device names and counters, no token asked")
}

/// What to do about it.
pub fn open_help(listen: SocketAddr) -> String {
    format!(
        "set metrics.token_file to a file holding a token (`head -c 24 /dev/urandom | base64 > \
         /etc/serial2mqtt/metrics-token`) and give Prometheus `authorization: {{credentials_file: \
         /etc/prometheus/serial2mqtt-token}}`, or listen on 127.0.0.1:{}",
        listen.port()
    )
}

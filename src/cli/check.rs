//! `serial2mqtt check`: validates a config file; exit 0 with a one-line summary of what would
//! run, or 1 with every error and what to write instead.

use std::path::PathBuf;
use std::process::ExitCode;

use super::load_or_report;

/// Checks the file at `path`.
pub fn main(path: PathBuf) -> ExitCode {
    match load_or_report(&path) {
        Some(c) => {
            let uplink = match &c.uplink {
                Some(u) => format!(
                    ", uplink to {} through the queue in {}",
                    u.endpoints
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(" then "),
                    c.queue.dir.display()
                ),
                None => ", no uplink".to_owned(),
            };
            let mut extras = String::new();
            let commands: usize = c.devices.iter().map(|d| d.commands.len()).sum();
            if commands > 0 {
                extras += &format!(", {commands} command(s)");
            }
            let entities = crate::homeassistant::Discovery {
                prefix: &c.homeassistant.discovery_prefix,
                gateway: &c.gateway.id,
            }
            .configs(&c.devices)
            .len();
            if entities > 0 {
                extras += &format!(", {entities} Home Assistant entities");
            }
            if let Some(m) = c.metrics {
                extras += &format!(", metrics on http://{m}/metrics");
            }
            println!(
                "{}: OK (gateway `{}`, {} device(s), broker on {}{uplink}{extras})",
                path.display(),
                c.gateway.id,
                c.devices.len(),
                c.broker.listen
            );
            ExitCode::SUCCESS
        }
        None => ExitCode::FAILURE,
    }
}

//! Commands (MQTT → a device) on the line: rendered (a Modbus point's write, or the command's
//! own bytes), written within the write timeout, and answered on the command's reply topic.

use std::time::Duration;

use tracing::{debug, warn};

use super::{write, Limits};
use crate::downlink::Request;
use crate::serial::link::Link;
use crate::serial::port::PortTask;
use crate::stats::DeviceStats;

/// How long a command waits for an answer: as long as the device's slowest poll does (a
/// device that is never polled is not waited for).
pub(super) fn answer_window(d: &crate::config::Device) -> Duration {
    d.polls.iter().map(|p| p.timeout).max().unwrap_or_default()
}

/// Writes one command and answers on its reply topic: Ok(Some(bytes written)), Ok(None) when
/// it was not written (refused, timed out), Err when the port is gone.
pub(super) async fn command(
    task: &PortTask,
    port: &mut Box<dyn Link>,
    request: &Request,
    limits: &mut Limits,
) -> Result<Option<usize>, String> {
    let Some((device, command)) = task.command(request) else {
        return Ok(None); // routed by an older config: nothing to do
    };
    let stats = &task.stats[request.member];
    let name = &device.name;
    let rendered = match (command.command.point(), &device.modbus) {
        (Some(point), Some(unit)) => crate::modbus::write::request(unit, point, &request.payload),
        _ => command
            .command
            .render(&task.gateway, name, &device.framing, &request.payload),
    };
    let bytes = match rendered {
        Ok(bytes) => bytes,
        Err(why) => {
            DeviceStats::bump(&stats.commands_rejected);
            if let Some(n) = limits.commands.hit() {
                warn!(device = %name, command = %command.command.name, suppressed = n, "command rejected: {why}");
            }
            task.reply(command, format!("error: {why}")).await;
            return Ok(None);
        }
    };
    match write(port, &bytes).await {
        Ok(()) => {
            DeviceStats::bump(&stats.commands_written);
            debug!(device = %name, command = %command.command.name, bytes = bytes.len(), "command written");
            task.reply(command, "ok".into()).await;
            Ok(Some(bytes.len()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            DeviceStats::bump(&stats.commands_failed);
            if let Some(n) = limits.commands.hit() {
                warn!(device = %name, command = %command.command.name, suppressed = n, "command not written: {e}");
            }
            task.reply(command, format!("error: {e}")).await;
            Ok(None)
        }
        Err(e) => {
            DeviceStats::bump(&stats.commands_failed);
            task.reply(command, format!("error: write failed: {e}"))
                .await;
            Err(format!("write error: {e}"))
        }
    }
}

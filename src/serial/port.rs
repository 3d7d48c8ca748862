//! One port and the devices on it (one, or several on a shared RS-485 line): what a port task
//! owns, and how it announces its devices (`online`/`offline` on their retained state topics)
//! and answers their commands (reply topics). [`super::task`] runs the port's life (open, serve,
//! reopen), [`super::bus`] its traffic.
//!
//! A device that talks by itself is `online` while its port is open; a polled one once it
//! answers, and `offline` again after `offline_after` unanswered polls. While the port is
//! closed a command is answered at once with an error on its reply topic rather than kept: a
//! relay switched minutes late, when the adapter is plugged back in, is worse than a clear
//! refusal.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::Device;
use crate::downlink::Request;
use crate::message::Message;
use crate::outlet::Outlet;
use crate::pacing::RateLimit;
use crate::rules::command::DeviceCommand;
use crate::stats::DeviceStats;

/// First delay before reopening a port that is gone.
pub const REOPEN_MIN: Duration = Duration::from_millis(250);
/// Longest delay between reopen attempts: how long a replugged device may wait to come back.
pub const REOPEN_MAX: Duration = Duration::from_secs(5);
/// Longest a command's bytes may take to leave for the port (a line stopped by flow control).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything a port task needs.
pub struct PortTask {
    /// The devices on the port, in config order (index = `Request::member`); at least one.
    pub devices: Vec<Device>,
    /// Their counters, in the same order.
    pub stats: Vec<Arc<DeviceStats>>,
    /// Where the serial path is (a simulator's pty path overrides the config).
    pub path: PathBuf,
    /// The gateway id.
    pub gateway: Arc<str>,
    /// Where messages go.
    pub outlet: Outlet,
    /// Stops the task.
    pub shutdown: CancellationToken,
    /// Their records for the dashboard, in the same order, when there is a dashboard.
    pub recent: Vec<Arc<crate::recent::DeviceRecent>>,
    /// The latest registers its Modbus units answered, for the Modbus TCP server.
    pub cache: Arc<crate::modbus::cache::RegisterCache>,
    /// The part of the line's time sharing programs get while polls wait too (0..=1).
    pub share: f64,
}

/// What a port task is asked: its devices' commands, and sharing programs' exchanges.
pub struct Inbox {
    /// Commands from MQTT.
    pub requests: tokio::sync::mpsc::Receiver<Request>,
    /// Requests of programs sharing the line (the Modbus TCP server).
    pub exchanges: tokio::sync::mpsc::Receiver<super::exchange::Exchange>,
}

/// Why serving an open port stopped.
pub(super) enum Stop {
    /// The gateway is stopping (or the devices are being replaced).
    Shutdown,
    /// The port went away; the reason, for the log.
    Gone(String),
}

/// Turns an open error into one sentence a user can act on.
pub fn explain_open_error(path: &Path, e: &tokio_serial::Error) -> String {
    use tokio_serial::ErrorKind as K;
    let p = path.display();
    match e.kind {
        // serialport reports a port held by another program (EBUSY, flock) as NoDevice too.
        _ if e.description.contains("busy") || e.description.contains("lock") => {
            format!("{p} is in use by another program: {}", e.description)
        }
        K::NoDevice => format!("{p} is not present (unplugged?): {}", e.description),
        K::Io(io::ErrorKind::NotFound) => format!("{p} does not exist (unplugged?)"),
        K::Io(io::ErrorKind::PermissionDenied) => format!(
            "permission denied opening {p}: add the service user to the `dialout` group (sudo usermod -aG dialout $USER) and log in again"
        ),
        _ if ["ENOTTY", "Inappropriate ioctl", "Not a typewriter"]
            .iter()
            .any(|m| e.description.contains(m)) =>
        {
            format!("{p} is not a serial port (not a terminal device: a regular file, /dev/null, ...)")
        }
        _ if e.description.contains("EISDIR") || e.description.contains("directory") => {
            format!("{p} is a directory, not a serial device")
        }
        _ => format!("cannot open {p}: {}", e.description),
    }
}

impl PortTask {
    /// Marks device `m` online or offline and announces it on its state topic if that is news
    /// (the first announcement of a run is always made, so a stale retained state is replaced).
    pub(super) async fn set_online(&self, m: usize, online: bool, announced: &mut Announced) {
        self.stats[m].online.store(online, Ordering::Relaxed);
        if announced.0[m] == Some(online) {
            return;
        }
        announced.0[m] = Some(online);
        if online {
            info!(device = %self.devices[m].name, port = %self.path.display(), "device online");
        }
        self.publish_state(m, if online { "online" } else { "offline" })
            .await;
    }

    pub(super) async fn publish_state(&self, m: usize, state: &'static str) {
        let msg = Message {
            topic: self.devices[m].state_topic.clone(),
            payload: Bytes::from_static(state.as_bytes()),
            qos: 1,
            retain: true,
        };
        // A closed outlet means the gateway is stopping; nothing else to do.
        let _ = self.outlet.send(vec![msg]).await;
    }

    /// Answers a command that cannot be written now.
    pub(super) async fn refuse(&self, request: &Request, why: &str, refusals: &mut RateLimit) {
        let Some((device, command)) = self.command(request) else {
            return;
        };
        DeviceStats::bump(&self.stats[request.member].commands_failed);
        if let Some(n) = refusals.hit() {
            warn!(device = %device.name, command = %command.command.name, suppressed = n, "command not written: {why}");
        }
        self.reply(command, format!("error: {why}")).await;
    }

    /// The device and command a request is for (None: routed by an older config).
    pub(super) fn command(&self, request: &Request) -> Option<(&Device, &DeviceCommand)> {
        let device = self.devices.get(request.member)?;
        Some((device, device.commands.get(request.command)?))
    }

    /// Publishes `text` on the command's reply topic, if it has one.
    pub(super) async fn reply(&self, command: &DeviceCommand, text: String) {
        if let Some(topic) = &command.reply_topic {
            let m = Message {
                topic: topic.clone(),
                payload: Bytes::from(text),
                qos: 1,
                retain: false,
            };
            // A closed outlet means the gateway is stopping.
            let _ = self.outlet.send(vec![m]).await;
        }
    }
}

/// What each device's state topic last said in this run (None: nothing yet).
pub(super) struct Announced(Vec<Option<bool>>);

impl Announced {
    pub(super) fn new(devices: usize) -> Self {
        Self(vec![None; devices])
    }
}

//! One device: owns its serial port for the life of the daemon.
//!
//! The task opens the port, reads frames, runs the rules and hands messages to the outlet. When
//! the port goes away (a read of 0 bytes or an I/O error, as after a USB unplug) it logs once,
//! publishes `offline` on the device's retained state topic, and reopens with capped exponential
//! backoff — it never spins. Bad frames are counted and logged rate-limited, never fatal.
//!
//! The same task writes the device's commands (MQTT → serial, see [`crate::downlink`]), one
//! at a time between reads, so writes to a port never interleave. While the port is closed a
//! command is answered at once with an error on its reply topic rather than kept: a relay
//! switched minutes late, when the adapter is plugged back in, is worse than a clear refusal.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_serial::SerialPortBuilderExt;
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::framing::{Decoded, DropReason, FrameDecoder};
use crate::config::Device;
use crate::downlink::Request;
use crate::frames::FrameHandler;
use crate::message::Message;
use crate::outlet::Outlet;
use crate::pacing::{RateLimit, LOG_EVERY};
use crate::rules::command::DeviceCommand;
use crate::stats::DeviceStats;

/// First delay before reopening a port that is gone.
pub const REOPEN_MIN: Duration = Duration::from_millis(250);
/// Longest delay between reopen attempts: how long a replugged device may wait to come back.
pub const REOPEN_MAX: Duration = Duration::from_secs(5);
/// Longest a command's bytes may take to leave for the port (a line stopped by flow control).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);

/// Everything a device task needs.
pub struct DeviceTask {
    /// The device's config.
    pub device: Device,
    /// Where the serial path is (a simulator's pty path overrides the config).
    pub path: PathBuf,
    /// The gateway id.
    pub gateway: Arc<str>,
    /// Where messages go.
    pub outlet: Outlet,
    /// Counters.
    pub stats: Arc<DeviceStats>,
    /// Stops the task.
    pub shutdown: CancellationToken,
}

/// Why reading stopped.
enum Stop {
    Shutdown,
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

impl DeviceTask {
    /// Runs until shutdown, taking the device's commands from `requests`.
    pub async fn run(self, mut requests: mpsc::Receiver<Request>) {
        let name = self.device.name.clone();
        let mut refusals = RateLimit::new(LOG_EVERY);
        let mut delays = crate::pacing::backoff(REOPEN_MIN, REOPEN_MAX);
        let mut last_error: Option<String> = None;
        let mut announced_offline = false;
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            match self.open() {
                Ok(port) => {
                    let opened = std::time::Instant::now();
                    last_error = None;
                    DeviceStats::bump(&self.stats.opens);
                    self.stats.online.store(true, Ordering::Relaxed);
                    info!(device = %name, port = %self.path.display(), "device online");
                    self.publish_state("online").await;
                    let stop = self.read(port, &mut requests).await;
                    self.stats.online.store(false, Ordering::Relaxed);
                    // A port that opens and fails at once must not flap at the shortest delay:
                    // the backoff starts over only after the port stayed up for a while.
                    if opened.elapsed() >= REOPEN_MAX {
                        delays = crate::pacing::backoff(REOPEN_MIN, REOPEN_MAX);
                    }
                    match stop {
                        Stop::Shutdown => break,
                        Stop::Gone(why) => {
                            warn!(device = %name, port = %self.path.display(), "device offline: {why}; reopening with backoff");
                            self.publish_state("offline").await;
                            announced_offline = true;
                        }
                    }
                }
                Err(why) => {
                    if last_error.as_deref() != Some(why.as_str()) {
                        warn!(device = %name, "device offline: {why}; retrying every {}s at most", REOPEN_MAX.as_secs());
                        last_error = Some(why);
                    } else {
                        debug!(device = %name, "still offline");
                    }
                    if !announced_offline {
                        self.publish_state("offline").await;
                        announced_offline = true;
                    }
                }
            }
            let delay = delays.next().unwrap_or(REOPEN_MAX);
            let wait = tokio::time::sleep(delay);
            tokio::pin!(wait);
            let stopping = loop {
                tokio::select! {
                    _ = self.shutdown.cancelled() => break true,
                    _ = &mut wait => break false,
                    Some(request) = requests.recv() => {
                        self.refuse(&request, "the device is offline", &mut refusals).await;
                    }
                }
            };
            if stopping {
                break;
            }
        }
        self.publish_state("offline").await;
        info!(device = %name, "device stopped: {}", self.stats.summary());
    }

    /// The silence that ends a frame, for `gap` framing.
    fn gap(&self) -> Option<Duration> {
        let crate::serial::framing::Framing::Gap(gap) = &self.device.framing else {
            return None;
        };
        let d = &self.device.serial;
        let data = match d.data_bits {
            tokio_serial::DataBits::Five => 5,
            tokio_serial::DataBits::Six => 6,
            tokio_serial::DataBits::Seven => 7,
            tokio_serial::DataBits::Eight => 8,
        };
        let parity = u32::from(d.parity != tokio_serial::Parity::None);
        let stop = match d.stop_bits {
            tokio_serial::StopBits::One => 1,
            tokio_serial::StopBits::Two => 2,
        };
        Some(gap.duration(d.baud, 1 + data + parity + stop))
    }

    fn open(&self) -> Result<tokio_serial::SerialStream, String> {
        let s = self.device.serial;
        tokio_serial::new(self.path.to_string_lossy(), s.baud)
            .data_bits(s.data_bits)
            .parity(s.parity)
            .stop_bits(s.stop_bits)
            .flow_control(s.flow_control)
            .open_native_async()
            .map_err(|e| explain_open_error(&self.path, &e))
    }

    async fn publish_state(&self, state: &'static str) {
        let m = Message {
            topic: self.device.state_topic.clone(),
            payload: Bytes::from_static(state.as_bytes()),
            qos: 1,
            retain: true,
        };
        // A closed outlet means the gateway is stopping; nothing else to do.
        let _ = self.outlet.send(vec![m]).await;
    }

    async fn read(
        &self,
        port: tokio_serial::SerialStream,
        requests: &mut mpsc::Receiver<Request>,
    ) -> Stop {
        let decoder = FrameDecoder::new(&self.device.framing, self.device.max_frame);
        let mut frames = FramedRead::with_capacity(port, decoder, 8 * 1024);
        let mut handler = FrameHandler::new(&self.device, &self.gateway, &self.stats);
        let mut refusals = RateLimit::new(LOG_EVERY);
        let gap = self.gap();
        loop {
            // `gap` framing: the frame in progress ends when the line stays silent this long.
            let silence = gap.and_then(|g| frames.decoder().gap_deadline(g));
            // Reading a frame is cancel-safe: a command may be written between two reads.
            let item = tokio::select! {
                _ = self.shutdown.cancelled() => return Stop::Shutdown,
                Some(request) = requests.recv() => {
                    if let Err(why) = self.write(frames.get_mut(), &request, &mut refusals).await {
                        return Stop::Gone(why);
                    }
                    continue;
                }
                item = frames.next() => item,
                _ = tokio::time::sleep_until(silence.unwrap_or_else(std::time::Instant::now).into()), if silence.is_some() => {
                    // Bytes may have come in since the deadline was taken: then wait on.
                    let due = gap.and_then(|g| frames.decoder().gap_deadline(g));
                    if due.is_some_and(|t| t > std::time::Instant::now()) {
                        continue;
                    }
                    // Bytes already waiting on the port (this task was not scheduled in time)
                    // belong to the frame: no silence yet.
                    {
                        use tokio_serial::SerialPort as _;
                        if frames.get_ref().bytes_to_read().is_ok_and(|n| n > 0) {
                            continue;
                        }
                    }
                    let whole = frames.decoder_mut().silence();
                    let buf = frames.read_buffer_mut();
                    if !whole || buf.is_empty() {
                        buf.clear();
                        continue;
                    }
                    Some(Ok(Decoded::Frame(buf.split().freeze())))
                }
            };
            match item {
                Some(Ok(Decoded::Frame(frame))) => {
                    let messages: Vec<Message> = handler.handle(&frame).collect();
                    if !messages.is_empty() && self.outlet.send(messages).await.is_err() {
                        return Stop::Shutdown;
                    }
                }
                Some(Ok(Decoded::Dropped(reason))) => handler.dropped(reason),
                Some(Ok(Decoded::Resync(bytes))) => handler.resync(bytes),
                // The loop now watches for the silence that ends this frame.
                Some(Ok(Decoded::GapStarted)) => {}
                Some(Err(e)) => {
                    // The bytes of a frame in progress are lost with the port: say so.
                    if frames.decoder().has_partial(frames.read_buffer()) {
                        handler.dropped(DropReason::Incomplete);
                    }
                    return Stop::Gone(format!("read error: {e}"));
                }
                None => return Stop::Gone("the port closed (read returned 0 bytes)".into()),
            }
        }
    }

    /// Writes one command to the open port and answers on its reply topic. An I/O error means
    /// the port is gone (returned, after the reply); anything else keeps the port.
    async fn write(
        &self,
        port: &mut tokio_serial::SerialStream,
        request: &Request,
        refusals: &mut RateLimit,
    ) -> Result<(), String> {
        let Some(command) = self.device.commands.get(request.command) else {
            return Ok(()); // routed by an older config: nothing to do
        };
        let name = &self.device.name;
        let bytes = match command.command.render(
            &self.gateway,
            name,
            &self.device.framing,
            &request.payload,
        ) {
            Ok(bytes) => bytes,
            Err(why) => {
                DeviceStats::bump(&self.stats.commands_rejected);
                if let Some(n) = refusals.hit() {
                    warn!(device = %name, command = %command.command.name, suppressed = n, "command rejected: {why}");
                }
                self.reply(command, format!("error: {why}")).await;
                return Ok(());
            }
        };
        let written = tokio::time::timeout(WRITE_TIMEOUT, async {
            port.write_all(&bytes).await?;
            port.flush().await
        })
        .await;
        match written {
            Ok(Ok(())) => {
                DeviceStats::bump(&self.stats.commands_written);
                debug!(device = %name, command = %command.command.name, bytes = bytes.len(), "command written");
                self.reply(command, "ok".into()).await;
                Ok(())
            }
            Ok(Err(e)) => {
                DeviceStats::bump(&self.stats.commands_failed);
                self.reply(command, format!("error: write failed: {e}"))
                    .await;
                Err(format!("write error: {e}"))
            }
            Err(_) => {
                DeviceStats::bump(&self.stats.commands_failed);
                let why = format!(
                    "the port did not take the bytes within {}s (flow control holding it?)",
                    WRITE_TIMEOUT.as_secs()
                );
                if let Some(n) = refusals.hit() {
                    warn!(device = %name, command = %command.command.name, suppressed = n, "command not written: {why}");
                }
                self.reply(command, format!("error: {why}")).await;
                Ok(())
            }
        }
    }

    /// Answers a command that cannot be written now.
    async fn refuse(&self, request: &Request, why: &str, refusals: &mut RateLimit) {
        let Some(command) = self.device.commands.get(request.command) else {
            return;
        };
        DeviceStats::bump(&self.stats.commands_failed);
        if let Some(n) = refusals.hit() {
            warn!(device = %self.device.name, command = %command.command.name, suppressed = n, "command not written: {why}");
        }
        self.reply(command, format!("error: {why}")).await;
    }

    /// Publishes `text` on the command's reply topic, if it has one.
    async fn reply(&self, command: &DeviceCommand, text: String) {
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

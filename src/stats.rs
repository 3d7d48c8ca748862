//! Counters that make bad input visible without flooding the log (the log lines themselves are
//! paced by [`crate::pacing`]).
//!
//! Every dropped or unmatched frame is counted per device; log lines about them are rate-limited
//! (the first one at once, then at most one summary per interval), so a device spewing garbage
//! costs a counter increment per frame, not a log write.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

/// Counters of one device, shared with whoever reports them.
#[derive(Debug, Default)]
pub struct DeviceStats {
    /// Frames decoded.
    pub frames: AtomicU64,
    /// Messages handed to the broker.
    pub messages: AtomicU64,
    /// Frames no rule matched.
    pub unmatched: AtomicU64,
    /// Frames only `drop: true` rules matched: known, unwanted on purpose.
    pub dropped: AtomicU64,
    /// Frames longer than `max_frame`, dropped.
    pub too_long: AtomicU64,
    /// Frames that failed their framing's decoding (COBS, SLIP), dropped.
    pub corrupt: AtomicU64,
    /// Frames cut short by the port going away (unplugged mid-frame), dropped.
    pub incomplete: AtomicU64,
    /// Bytes skipped to find the next frame (`fixed` framing with start/end bytes).
    pub resync_bytes: AtomicU64,
    /// Frames that were not UTF-8 where text rules needed text.
    pub invalid_utf8: AtomicU64,
    /// Frames whose checksum did not match (or was missing): never published.
    pub bad_checksum: AtomicU64,
    /// Messages whose rendered topic was not publishable.
    pub bad_topic: AtomicU64,
    /// Matched frames whose computed `values:` could not be computed: nothing published.
    pub bad_value: AtomicU64,
    /// Modbus requests answered with an exception (illegal data address, busy, ...).
    pub exceptions: AtomicU64,
    /// Exception answers by Modbus point: which register of a map is the wrong one. Locked
    /// only on an exception, never on a reading.
    pub point_exceptions: Mutex<BTreeMap<String, u64>>,
    /// Times the port was opened.
    pub opens: AtomicU64,
    /// Poll requests written (retries included).
    pub polls: AtomicU64,
    /// Poll requests left unanswered within their timeout.
    pub timeouts: AtomicU64,
    /// Frames on a shared line that no request of this device asked for (late answers).
    pub unsolicited: AtomicU64,
    /// Commands written to the port.
    pub commands_written: AtomicU64,
    /// Commands refused: the payload did not fit the command (no match, not hex, unframeable).
    pub commands_rejected: AtomicU64,
    /// Commands not written: the device was offline, or the write failed or timed out.
    pub commands_failed: AtomicU64,
    /// Whether the device is online: its port is open and, if it is polled, it answers.
    pub online: AtomicBool,
}

impl DeviceStats {
    /// Adds one to a counter.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one exception answer for each of `points` (the points of the request it
    /// answered), and one for the device.
    pub fn exception<'a>(&self, points: impl IntoIterator<Item = &'a str>) {
        Self::bump(&self.exceptions);
        if let Ok(mut map) = self.point_exceptions.lock() {
            for p in points {
                match map.get_mut(p) {
                    Some(n) => *n += 1,
                    None => {
                        map.insert(p.to_owned(), 1);
                    }
                }
            }
        }
    }

    /// A copy of the counters, for the stats message, `status` and logs.
    pub fn counts(&self) -> DeviceCounts {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        DeviceCounts {
            online: self.online.load(Ordering::Relaxed),
            frames: g(&self.frames),
            messages: g(&self.messages),
            unmatched: g(&self.unmatched),
            dropped: g(&self.dropped),
            too_long: g(&self.too_long),
            corrupt: g(&self.corrupt),
            incomplete: g(&self.incomplete),
            resync_bytes: g(&self.resync_bytes),
            invalid_utf8: g(&self.invalid_utf8),
            bad_checksum: g(&self.bad_checksum),
            bad_topic: g(&self.bad_topic),
            bad_value: g(&self.bad_value),
            exceptions: g(&self.exceptions),
            point_exceptions: self
                .point_exceptions
                .lock()
                .map(|m| m.clone())
                .unwrap_or_default(),
            opens: g(&self.opens),
            polls: g(&self.polls),
            timeouts: g(&self.timeouts),
            unsolicited: g(&self.unsolicited),
            commands: CommandCounts {
                written: g(&self.commands_written),
                rejected: g(&self.commands_rejected),
                failed: g(&self.commands_failed),
            },
        }
    }

    /// A one-line summary for logs.
    pub fn summary(&self) -> String {
        self.counts().to_string()
    }
}

/// One device's counters at one moment, as the stats message carries them (missing keys read
/// as 0, so `status` reads a summary from an older or newer gateway).
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct DeviceCounts {
    /// Whether the port was open.
    pub online: bool,
    /// Frames decoded.
    pub frames: u64,
    /// Messages handed on.
    pub messages: u64,
    /// Frames no rule matched.
    pub unmatched: u64,
    /// Frames dropped on purpose (`drop: true`).
    pub dropped: u64,
    /// Frames over `max_frame`.
    pub too_long: u64,
    /// Frames that failed their framing's decoding.
    pub corrupt: u64,
    /// Frames cut short by the port going away.
    pub incomplete: u64,
    /// Bytes skipped to find the next frame.
    pub resync_bytes: u64,
    /// Frames that were not UTF-8 where text was needed.
    pub invalid_utf8: u64,
    /// Frames that failed their checksum.
    pub bad_checksum: u64,
    /// Messages whose topic was not publishable.
    pub bad_topic: u64,
    /// Frames whose computed values could not be computed.
    pub bad_value: u64,
    /// Modbus exception answers.
    pub exceptions: u64,
    /// Modbus exception answers by point (absent when there were none).
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub point_exceptions: BTreeMap<String, u64>,
    /// Times the port was opened.
    pub opens: u64,
    /// Poll requests written.
    pub polls: u64,
    /// Polls unanswered within their timeout.
    pub timeouts: u64,
    /// Frames on a shared line no request asked for.
    pub unsolicited: u64,
    /// Commands written, rejected, failed.
    pub commands: CommandCounts,
}

/// A device's command counters.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct CommandCounts {
    /// Written to the port.
    pub written: u64,
    /// Refused: the payload did not fit.
    pub rejected: u64,
    /// Not written: offline, write error or timeout.
    pub failed: u64,
}

impl DeviceCounts {
    /// Frames dropped as bad, whatever the reason (the BAD column of `status`).
    pub fn bad(&self) -> u64 {
        self.too_long
            + self.corrupt
            + self.incomplete
            + self.invalid_utf8
            + self.bad_checksum
            + self.bad_topic
            + self.bad_value
    }
}

impl std::fmt::Display for DeviceCounts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "frames={} messages={} unmatched={} too_long={} corrupt={} incomplete={} invalid_utf8={} bad_checksum={} bad_topic={} bad_value={} exceptions={} opens={} polls={} timeouts={} unsolicited={} commands_written={} commands_rejected={} commands_failed={}",
            self.frames,
            self.messages,
            self.unmatched,
            self.too_long,
            self.corrupt,
            self.incomplete,
            self.invalid_utf8,
            self.bad_checksum,
            self.bad_topic,
            self.bad_value,
            self.exceptions,
            self.opens,
            self.polls,
            self.timeouts,
            self.unsolicited,
            self.commands.written,
            self.commands.rejected,
            self.commands.failed,
        )
    }
}

/// The running devices' counters, by name: for the stats message, the status line and metrics.
pub type DeviceList = std::sync::Arc<std::sync::Mutex<Vec<(String, std::sync::Arc<DeviceStats>)>>>;

/// A copy of every running device's counters, in the order they run.
pub fn counts_of(list: &DeviceList) -> Vec<(String, DeviceCounts)> {
    list.lock()
        .map(|d| d.iter().map(|(n, s)| (n.clone(), s.counts())).collect())
        .unwrap_or_default()
}

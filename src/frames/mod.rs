//! A device's frames once the framing has cut them: run through the device's rules into
//! messages, and everything that goes wrong on the way (no rule matched, not UTF-8, a topic
//! that cannot be published, bytes skipped or dropped by the framing) counted per reason and
//! logged rate-limited. A frame that fails its device's [`checksum`] never reaches the rules.
//! One handler serves the device task and `serial2mqtt test-rule`, so a
//! rule tried at the terminal behaves as it will on the line.

use std::sync::atomic::Ordering;
use std::time::SystemTime;

use bytes::Bytes;
use tracing::warn;

pub mod checksum;

use crate::config::Device;
use crate::message::Message;
use crate::pacing::{RateLimit, LOG_EVERY};
use crate::rules::report::Reports;
use crate::rules::template::Builtins;
use crate::rules::{Problem, Verdict};
use crate::serial::framing::DropReason;
use crate::stats::DeviceStats;

/// Applies the rules to frames and keeps the per-reason counters and rate limits.
pub struct FrameHandler<'a> {
    device: &'a Device,
    gateway: &'a str,
    stats: &'a DeviceStats,
    messages: Vec<Message>,
    problems: Vec<Problem>,
    /// What each report-by-exception topic last published.
    reports: Reports,
    limits: [RateLimit; 8],
}

impl<'a> FrameHandler<'a> {
    /// A handler for one device.
    pub fn new(device: &'a Device, gateway: &'a str, stats: &'a DeviceStats) -> Self {
        Self {
            device,
            gateway,
            stats,
            messages: Vec::new(),
            problems: Vec::new(),
            reports: Reports::default(),
            limits: std::array::from_fn(|_| RateLimit::new(LOG_EVERY)),
        }
    }

    /// Runs one frame through the checksum and the rules; returns the messages to publish.
    pub fn handle(&mut self, frame: &Bytes) -> std::vec::Drain<'_, Message> {
        self.run(frame, "");
        self.messages.drain(..)
    }

    /// Like [`Self::handle`] for a frame answering `request` (`{request}` in templates); None
    /// when the frame failed its checksum (counted and logged): it is no answer.
    pub fn answer(&mut self, frame: &Bytes, request: &str) -> Option<std::vec::Drain<'_, Message>> {
        if self.run(frame, request) {
            Some(self.messages.drain(..))
        } else {
            None
        }
    }

    /// Fills `messages` from one frame; false when it failed its checksum.
    fn run(&mut self, frame: &Bytes, request: &str) -> bool {
        DeviceStats::bump(&self.stats.frames);
        self.messages.clear();
        self.problems.clear();
        if !self.checked(frame) {
            return false;
        }
        let env = Builtins {
            gateway: self.gateway,
            device: &self.device.name,
            frame,
            now: SystemTime::now(),
            request,
        };
        let verdict = self.device.rules.apply(
            &env,
            &mut self.messages,
            &mut self.problems,
            &mut self.reports,
        );
        let name = &self.device.name;
        for problem in &self.problems {
            match problem {
                Problem::Topic(why) => {
                    DeviceStats::bump(&self.stats.bad_topic);
                    if let Some(n) = self.limits[0].hit() {
                        warn!(device = %name, suppressed = n, "message not published: {why}");
                    }
                }
                Problem::Value(why) => {
                    DeviceStats::bump(&self.stats.bad_value);
                    if let Some(n) = self.limits[7].hit() {
                        warn!(device = %name, suppressed = n, "frame's messages not published: {why}");
                    }
                }
            }
        }
        match verdict {
            Verdict::Matched => {}
            Verdict::Dropped => DeviceStats::bump(&self.stats.dropped),
            Verdict::Unmatched => {
                DeviceStats::bump(&self.stats.unmatched);
                if let Some(n) = self.limits[1].hit() {
                    warn!(device = %name, suppressed = n, frame = %String::from_utf8_lossy(&frame[..frame.len().min(200)]), "frame matched no rule");
                }
            }
            Verdict::InvalidUtf8 => {
                DeviceStats::bump(&self.stats.invalid_utf8);
                if let Some(n) = self.limits[2].hit() {
                    warn!(device = %name, suppressed = n, frame_hex = %hex::encode(&frame[..frame.len().min(64)]), "frame is not UTF-8 text (wrong baud rate?)");
                }
            }
        }
        if matches!(verdict, Verdict::Unmatched | Verdict::InvalidUtf8) {
            if let Some(topic) = &self.device.unmatched_topic {
                self.messages.push(Message {
                    topic: topic.clone(),
                    payload: frame.clone(),
                    qos: 0,
                    retain: false,
                });
            }
        }
        self.stats
            .messages
            .fetch_add(self.messages.len() as u64, Ordering::Relaxed);
        true
    }

    /// What was wrong with the last frame's messages (a topic that cannot be published, a
    /// value that cannot be computed): logged rate-limited on the line, shown by `test-rule`.
    pub fn problems(&self) -> &[Problem] {
        &self.problems
    }

    /// Whether the frame passes the device's checksum (or it has none); counts and logs a failure.
    fn checked(&mut self, frame: &[u8]) -> bool {
        let Some(checksum) = &self.device.checksum else {
            return true;
        };
        let Err(failure) = checksum.verify(frame) else {
            return true;
        };
        DeviceStats::bump(&self.stats.bad_checksum);
        if let Some(n) = self.limits[6].hit() {
            warn!(device = %self.device.name, checksum = %checksum.spec().name(), suppressed = n, frame_hex = %hex::encode(&frame[..frame.len().min(64)]), "frame dropped: bad checksum ({failure})");
        }
        false
    }

    /// Counts and logs (rate-limited) bytes skipped to find the next frame.
    pub fn resync(&mut self, bytes: usize) {
        self.stats
            .resync_bytes
            .fetch_add(bytes as u64, Ordering::Relaxed);
        if let Some(n) = self.limits[5].hit() {
            warn!(device = %self.device.name, bytes, suppressed = n, "skipped {bytes} bytes to find the next frame (its start/end bytes did not match: a lost or extra byte on the line, or the wrong framing)");
        }
    }

    /// Counts and logs (rate-limited) bytes the framer dropped.
    pub fn dropped(&mut self, reason: DropReason) {
        let name = &self.device.name;
        match reason {
            DropReason::TooLong => {
                DeviceStats::bump(&self.stats.too_long);
                if let Some(n) = self.limits[3].hit() {
                    warn!(device = %name, suppressed = n, max_frame = self.device.max_frame, "frame longer than max_frame dropped (wrong framing or baud rate?)");
                }
            }
            DropReason::Corrupt => {
                DeviceStats::bump(&self.stats.corrupt);
                if let Some(n) = self.limits[4].hit() {
                    warn!(device = %name, suppressed = n, framing = self.device.framing.name(), "corrupt frame dropped");
                }
            }
            DropReason::Incomplete => {
                // Once per disconnect at most: no rate limit needed.
                DeviceStats::bump(&self.stats.incomplete);
                warn!(device = %name, "a frame cut short by the disconnect was dropped");
            }
        }
    }
}

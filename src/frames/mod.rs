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
pub mod trial;

use crate::config::Device;
use crate::message::Message;
use crate::modbus::{decode, Unit};
use crate::pacing::{RateLimit, LOG_EVERY};
use crate::recent::{Outcome, Shown, Tap};
use crate::rules::report::Reports;
use crate::rules::template::Builtins;
use crate::rules::template::{Lookup, Value, Var};
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
    /// A Modbus device's read cycles in progress, one per read group.
    cycles: Vec<Option<Cycle>>,
    /// Each point's latest value, for the rules of a cycle that name points of other groups
    /// (only kept when the unit has more than one group).
    latest: Vec<Option<Value<'static>>>,
    limits: [RateLimit; 9],
    /// The dashboard's sample of this device's frames, when there is a dashboard.
    tap: Option<Tap>,
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
            cycles: Vec::new(),
            latest: Vec::new(),
            limits: std::array::from_fn(|_| RateLimit::new(LOG_EVERY)),
            tap: None,
        }
    }

    /// The same handler, also keeping a sample of its frames for the dashboard.
    pub fn with_tap(mut self, tap: Option<Tap>) -> Self {
        self.tap = tap;
        self
    }

    /// Gives the dashboard `frame` and what became of it, if the tap wants one of its kind
    /// now (the outcome is only built then).
    fn show(&mut self, frame: &[u8], rejected: bool, outcome: impl FnOnce(&Self) -> Outcome) {
        let Some(mut tap) = self.tap.take() else {
            return;
        };
        if tap.wants(rejected) {
            tap.keep(frame, outcome(self));
        }
        self.tap = Some(tap);
    }

    /// The outcome of the frame just handled, from its messages and problems; `rule` is the
    /// first that matched.
    fn outcome(&self, rule: Option<&str>) -> Outcome {
        let messages = self.messages.iter().map(Shown::of).collect();
        let rule = rule.map(str::to_owned);
        if self.problems.is_empty() {
            Outcome::Published { rule, messages }
        } else {
            let why: Vec<&str> = self.problems.iter().map(|p| p.text()).collect();
            Outcome::BadMessage {
                rule,
                why: why.join("; "),
                messages,
            }
        }
    }

    /// Runs one frame through the checksum and the rules; returns the messages to publish.
    pub fn handle(&mut self, frame: &Bytes) -> std::vec::Drain<'_, Message> {
        self.run(frame, "");
        self.messages.drain(..)
    }

    /// Like [`Self::handle`] for a frame answering `request` (`{request}` in templates); None
    /// when the frame failed its checksum (counted and logged): it is no answer. For a Modbus
    /// device the frame is its unit's answer to that request; the messages come when the read
    /// cycle is complete.
    pub fn answer(&mut self, frame: &Bytes, request: &str) -> Option<std::vec::Drain<'_, Message>> {
        if self.device.modbus.is_some() {
            return self.modbus_answer(frame, request);
        }
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
        let text = match &self.device.checksum {
            Some(c) => &frame[..c.binary_trailer(frame).unwrap_or(frame.len())],
            None => &frame[..],
        };
        let (verdict, first) = self.device.rules.apply_traced(
            &env,
            text,
            &mut self.messages,
            &mut self.problems,
            &mut self.reports,
        );
        self.count_problems();
        let name = &self.device.name;
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
                    if self.device.checksum.is_some() {
                        // It proved itself: the bytes are right, the rules are not.
                        warn!(device = %name, suppressed = n, frame_hex = %hex::encode(&frame[..frame.len().min(64)]), "frame passed its checksum but is not UTF-8 text: match it with a binary rule (`fields:`)");
                    } else {
                        warn!(device = %name, suppressed = n, frame_hex = %hex::encode(&frame[..frame.len().min(64)]), "frame is not UTF-8 text (wrong baud rate?)");
                    }
                }
            }
        }
        match verdict {
            Verdict::Matched => {
                let rejected = !self.problems.is_empty();
                self.show(frame, rejected, |h| h.outcome(first));
            }
            Verdict::Dropped => self.show(frame, false, |_| Outcome::Dropped),
            Verdict::Unmatched => self.show(frame, true, |h| Outcome::Unmatched {
                closest: h.device.rules.closest(frame),
            }),
            Verdict::InvalidUtf8 => self.show(frame, true, |_| Outcome::InvalidUtf8),
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

    /// A Modbus answer: checked, decoded into the cycle's values; None when it is no answer
    /// (bad CRC, not a response to the request), so the poll is asked again.
    fn modbus_answer(
        &mut self,
        frame: &Bytes,
        request: &str,
    ) -> Option<std::vec::Drain<'_, Message>> {
        DeviceStats::bump(&self.stats.frames);
        self.messages.clear();
        self.problems.clear();
        if !self.checked(frame) {
            return None;
        }
        let unit = self.device.modbus.clone()?;
        let Some(r) = unit.request(request) else {
            // A command's echo, or a frame nobody asked for: nothing to publish.
            return Some(self.messages.drain(..));
        };
        let name = &self.device.name;
        match decode::decode(unit.unit, &unit.requests[r], &unit.points, frame) {
            Ok(values) => {
                let cycle = self.cycle(&unit, unit.requests[r].group);
                for (i, v) in values {
                    if let Some(slot) = cycle.values.get_mut(i) {
                        *slot = Some(v);
                    }
                }
            }
            Err(decode::Failure::Exception(why)) => {
                let points = || {
                    unit.requests[r]
                        .points
                        .iter()
                        .filter_map(|&i| unit.points.get(i).map(|p| p.name.as_str()))
                };
                self.stats.exception(points());
                if let Some(n) = self.limits[8].hit() {
                    let points: Vec<&str> = points().collect();
                    warn!(device = %name, unit = unit.unit, request, suppressed = n, "Modbus exception: {why}; not read this cycle: {}", points.join(", "));
                }
                let why = why.to_string();
                self.show(frame, true, |_| Outcome::Exception { why });
            }
            Err(decode::Failure::Broken) => {
                DeviceStats::bump(&self.stats.corrupt);
                if let Some(n) = self.limits[4].hit() {
                    warn!(device = %name, unit = unit.unit, request, suppressed = n, frame_hex = %hex::encode(&frame[..frame.len().min(64)]), "not an answer to the request (another unit or function?)");
                }
                self.show(frame, true, |_| Outcome::Corrupt {
                    why: "not an answer to the request (another unit or function?)".into(),
                });
                return None;
            }
        }
        self.finish(r);
        // The answer, with the messages of the cycle it completed (none while it goes on).
        let rejected = !self.problems.is_empty();
        self.show(frame, rejected, |h| h.outcome(None));
        Some(self.messages.drain(..))
    }

    /// A Modbus device's `request` was given up (no answer after its retries): its points are
    /// not read this cycle. Returns the cycle's messages if that completed it.
    pub fn unanswered(&mut self, request: &str) -> std::vec::Drain<'_, Message> {
        self.messages.clear();
        self.problems.clear();
        if let Some(r) = self.device.modbus.as_ref().and_then(|u| u.request(request)) {
            self.finish(r);
        }
        self.messages.drain(..)
    }

    /// Group `group`'s read cycle in progress (a new one when none is).
    fn cycle(&mut self, unit: &Unit, group: usize) -> &mut Cycle {
        if self.cycles.len() <= group {
            self.cycles.resize_with(group + 1, || None);
        }
        self.cycles[group].get_or_insert_with(|| Cycle::new(unit, group))
    }

    /// Marks request `r` of its group's cycle done; when all are, runs the device's rules on
    /// the values read and starts the group's next cycle. With several groups, the rules run
    /// are those whose most often read point is in this group; the points of other groups
    /// they name are their latest readings.
    fn finish(&mut self, r: usize) {
        let Some(unit) = self.device.modbus.clone() else {
            return;
        };
        let Some(group) = unit.requests.get(r).map(|q| q.group) else {
            return;
        };
        let cycle = self.cycle(&unit, group);
        if let Some(done) = cycle.done.get_mut(r) {
            *done = true;
        }
        if !cycle.done.iter().all(|d| *d) {
            return;
        }
        let Some(mut cycle) = self.cycles[group].take() else {
            return;
        };
        if unit.groups > 1 {
            self.latest.resize(unit.points.len(), None);
            for (i, p) in unit.points.iter().enumerate() {
                if p.group == group {
                    if let Some(v) = &cycle.values[i] {
                        self.latest[i] = Some(v.clone());
                    }
                } else {
                    cycle.values[i] = self.latest[i].clone();
                }
            }
        }
        let table = PointValues {
            unit: &unit,
            values: &cycle.values,
        };
        // The group a rule belongs to: its fastest point's (the first group if it names none).
        let belongs = |rule: &crate::rules::Rule| {
            unit.groups <= 1
                || rule
                    .point_names()
                    .iter()
                    .filter_map(|n| unit.points.iter().find(|p| p.name == *n))
                    .map(|p| p.group)
                    .min()
                    .unwrap_or(0)
                    == group
        };
        let env = Builtins {
            gateway: self.gateway,
            device: &self.device.name,
            frame: &[],
            now: SystemTime::now(),
            request: "",
        };
        self.device.rules.apply_points(
            &env,
            &table,
            &belongs,
            &mut self.messages,
            &mut self.problems,
            &mut self.reports,
        );
        self.count_problems();
        self.stats
            .messages
            .fetch_add(self.messages.len() as u64, Ordering::Relaxed);
    }

    /// Counts and logs (rate-limited) the last frame's (or cycle's) problems.
    fn count_problems(&mut self) {
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
                        warn!(device = %name, suppressed = n, "messages not published: {why}");
                    }
                }
            }
        }
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
        let checksum = checksum.spec().name().to_string();
        self.show(frame, true, |_| Outcome::BadChecksum {
            checksum,
            why: failure.to_string(),
        });
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
        self.show(&[], true, |_| Outcome::Resync { bytes });
    }

    /// Shows the dashboard that a poll went unanswered (counted and logged by the bus).
    pub fn timed_out(&mut self, request: &str, timeout: std::time::Duration, attempt: u32) {
        self.show(&[], true, |_| Outcome::Timeout {
            request: request.to_owned(),
            timeout_ms: timeout.as_millis() as u64,
            attempt: attempt + 1,
        });
    }

    /// Shows the dashboard a frame on a shared line that no request asked for (counted and
    /// logged by the bus).
    pub fn unsolicited(&mut self, frame: &[u8]) {
        self.show(frame, true, |_| Outcome::Unsolicited);
    }

    /// Counts and logs (rate-limited) bytes the framer dropped.
    pub fn dropped(&mut self, reason: DropReason) {
        let max_frame = self.device.max_frame;
        let framing = self.device.framing.name();
        self.show(&[], true, |_| match reason {
            DropReason::TooLong => Outcome::TooLong { max_frame },
            DropReason::Corrupt => Outcome::Corrupt {
                why: format!("{framing} decoding failed"),
            },
            DropReason::Incomplete => Outcome::Incomplete,
        });
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

/// A Modbus read group's cycle: the values read so far and which requests are done (those
/// of other groups count as done).
struct Cycle {
    values: Vec<Option<Value<'static>>>,
    done: Vec<bool>,
}

impl Cycle {
    fn new(unit: &Unit, group: usize) -> Self {
        Self {
            values: vec![None; unit.points.len()],
            done: unit.requests.iter().map(|r| r.group != group).collect(),
        }
    }
}

/// A cycle's values by point name, for `points: true` rules.
struct PointValues<'a> {
    unit: &'a Unit,
    values: &'a [Option<Value<'static>>],
}

impl Lookup for PointValues<'_> {
    fn value(&self, var: &Var) -> Option<Value<'_>> {
        let Var::Path(path) = var else { return None };
        let [name] = path.as_slice() else { return None };
        let i = self.unit.points.iter().position(|p| &p.name == name)?;
        self.values.get(i)?.clone()
    }
}

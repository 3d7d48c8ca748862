//! The gateway's recent past, kept for the web dashboard: a sample of each device's frames with
//! what became of them (the messages they made, or why they were rejected), each published
//! topic's latest value and its last hour, the log's last lines, and the queue's depth.
//!
//! It exists only when `web:` is configured, and costs the readings next to nothing even then:
//! a frame is recorded only while its device's budget for the current tick lasts
//! ([`FRAMES_PER_TICK`] per [`TICK`], rejected frames on a budget of their own so that good
//! frames never hide the bad ones), so a device at 10,000 frames/s costs the same few copies a
//! second as one at 50; every other frame costs one atomic load and one store. Everything is
//! bounded: rings of fixed length, at most [`MAX_TOPICS`] topics per device, one history point
//! per topic per second for an hour.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use indexmap::IndexMap;
use serde::Serialize;

/// The coarse clock's step: frames are sampled per tick.
pub const TICK: Duration = Duration::from_millis(100);
/// Frames recorded per device per tick while a browser watches (50 a second), and as many
/// rejected ones.
pub const FRAMES_PER_TICK: u32 = 5;
/// ... and while none does (10 a second: the latest values and the plots stay current).
pub const FRAMES_PER_TICK_UNWATCHED: u32 = 1;
/// Frames kept per device, of all outcomes.
pub const FRAMES_KEPT: usize = 100;
/// Rejected frames kept per device, apart from the others.
pub const REJECTED_KEPT: usize = 50;
/// Bytes of a frame kept (its full length is recorded too).
pub const FRAME_BYTES_KEPT: usize = 256;
/// Characters of a payload kept for display.
pub const PAYLOAD_CHARS_KEPT: usize = 200;
/// Topics tracked per device (latest value and history); more are counted, not kept.
pub const MAX_TOPICS: usize = 64;
/// Topics with a history, gateway-wide (about 32 KiB each when full): others show their
/// latest value only. The bound on the plots' memory, whatever the number of devices.
pub const MAX_PLOTTED: usize = 128;
/// History points per topic and of the queue's depth: an hour at one a second.
pub const HISTORY_POINTS: usize = 3600;
/// Log lines kept.
pub const LOG_LINES_KEPT: usize = 500;

/// Milliseconds since the Unix epoch, for the browser's clock.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The whole gateway's recent past.
pub struct Recent {
    started: Instant,
    /// The coarse clock, in [`TICK`]s since `started`, advanced by [`Recent::advance`].
    tick: AtomicU64,
    next_id: AtomicU64,
    devices: Mutex<IndexMap<String, Arc<DeviceRecent>>>,
    log: Mutex<VecDeque<LogLine>>,
    queue: Mutex<QueueHistory>,
    /// Topics given a history so far (at most [`MAX_PLOTTED`]).
    plotted: AtomicU64,
    /// Browsers watching now (event streams open).
    watchers: AtomicU64,
}

impl Default for Recent {
    fn default() -> Self {
        Self {
            started: Instant::now(),
            tick: AtomicU64::new(1),
            next_id: AtomicU64::new(1),
            devices: Mutex::default(),
            log: Mutex::default(),
            queue: Mutex::default(),
            plotted: AtomicU64::new(0),
            watchers: AtomicU64::new(0),
        }
    }
}

impl Recent {
    /// Moves the coarse clock to now (called every [`TICK`] by the dashboard's ticker).
    pub fn advance(&self) {
        let ticks = (self.started.elapsed().as_millis() / TICK.as_millis()) as u64 + 1;
        self.tick.store(ticks, Ordering::Relaxed);
    }

    /// A browser started (`true`) or stopped watching: the frames are sampled more while one
    /// does.
    pub fn watching(&self, started: bool) {
        if started {
            self.watchers.fetch_add(1, Ordering::Relaxed);
        } else {
            self.watchers.fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// The frames a device may record per tick now.
    fn budget(&self) -> u32 {
        if self.watchers.load(Ordering::Relaxed) > 0 {
            FRAMES_PER_TICK
        } else {
            FRAMES_PER_TICK_UNWATCHED
        }
    }

    /// The coarse clock now.
    pub fn tick(&self) -> u64 {
        self.tick.load(Ordering::Relaxed)
    }

    /// Seconds since the gateway started (the history's time axis).
    pub fn seconds(&self) -> u32 {
        self.started.elapsed().as_secs() as u32
    }

    /// When tick `t` was, by the wall clock (for "last frame 3 s ago").
    pub fn tick_to_unix_ms(&self, t: u64) -> u64 {
        let ago = self.tick().saturating_sub(t) * TICK.as_millis() as u64;
        unix_ms(SystemTime::now()).saturating_sub(ago)
    }

    /// The record of device `name`: the one it had (a reload keeps its history) or a new one.
    pub fn device(self: &Arc<Self>, name: &str) -> Arc<DeviceRecent> {
        let mut devices = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        Arc::clone(devices.entry(name.to_owned()).or_insert_with(|| {
            Arc::new(DeviceRecent {
                name: name.to_owned(),
                hub: Arc::downgrade(self),
                last_tick: AtomicU64::new(0),
                inner: Mutex::default(),
            })
        }))
    }

    /// Forgets the devices not in `keep` (removed by a reload), and their plots.
    pub fn retain(&self, keep: &[String]) {
        let mut devices = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        devices.retain(|name, d| {
            let stays = keep.contains(name);
            if !stays {
                let inner = d.inner.lock().unwrap_or_else(|e| e.into_inner());
                let plots = inner.topics.values().filter(|t| t.plotted).count() as u64;
                self.plotted.fetch_sub(plots, Ordering::Relaxed);
            }
            stays
        });
    }

    /// Takes one of the [`MAX_PLOTTED`] histories, if one is left.
    fn take_plot(&self) -> bool {
        self.plotted
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                (n < MAX_PLOTTED as u64).then_some(n + 1)
            })
            .is_ok()
    }

    /// Every device's record, in the order they were first seen.
    pub fn devices(&self) -> Vec<Arc<DeviceRecent>> {
        let devices = self.devices.lock().unwrap_or_else(|e| e.into_inner());
        devices.values().cloned().collect()
    }

    fn id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Keeps one log line (the oldest goes when the ring is full).
    pub fn log(&self, level: &'static str, device: Option<String>, text: String) {
        let line = LogLine {
            id: self.id(),
            at_ms: unix_ms(SystemTime::now()),
            level,
            device,
            text,
        };
        let mut log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        if log.len() == LOG_LINES_KEPT {
            log.pop_front();
        }
        log.push_back(line);
    }

    /// The log lines after id `after`.
    pub fn log_since(&self, after: u64) -> Vec<LogLine> {
        let log = self.log.lock().unwrap_or_else(|e| e.into_inner());
        log.iter().filter(|l| l.id > after).cloned().collect()
    }

    /// Records the queue's state once a second: its depth for the plot, and which sequence
    /// numbers existed when, for the age of the oldest unsent message.
    pub fn queue_sample(&self, depth: u64, next_seq: u64) {
        let now = self.seconds();
        let mut q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        if q.depth.len() == HISTORY_POINTS {
            q.depth.pop_front();
        }
        q.depth.push_back((now, depth));
        if q.appended.back().is_none_or(|&(_, s)| s != next_seq) {
            if q.appended.len() == HISTORY_POINTS {
                // Thin out the older half rather than forget the oldest: a days-old backlog
                // still gets an age, less precise the older it is.
                let mut i = 0;
                q.appended.retain(|_| {
                    i += 1;
                    i > HISTORY_POINTS / 2 || i % 2 == 0
                });
            }
            q.appended.push_back((now, next_seq));
        }
    }

    /// How old the oldest unsent message is (records up to `acked` are delivered), in seconds:
    /// None when nothing waits; at least the uptime when it was queued before the start.
    pub fn oldest_unsent_s(&self, acked: u64, next_seq: u64) -> Option<u32> {
        let oldest = acked + 1;
        if oldest >= next_seq {
            return None;
        }
        let now = self.seconds();
        let q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        // The first sample that had record `oldest` appended: it was there by then. None of
        // them: it came before the first sample, so it is as old as the gateway at least.
        let at = q
            .appended
            .iter()
            .find(|&&(_, next)| next > oldest)
            .map(|&(t, _)| t)
            .unwrap_or(0);
        Some(now.saturating_sub(at))
    }

    /// The queue's depth over the last hour: (seconds since start, depth).
    pub fn queue_history(&self) -> Vec<(u32, u64)> {
        let q = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        q.depth.iter().copied().collect()
    }
}

#[derive(Default)]
struct QueueHistory {
    depth: VecDeque<(u32, u64)>,
    /// (second, the queue's next sequence number then), when it changed.
    appended: VecDeque<(u32, u64)>,
}

/// One log line as the dashboard shows it.
#[derive(Debug, Clone, Serialize)]
pub struct LogLine {
    /// Increasing: the browser asks for the lines after the last it has.
    pub id: u64,
    /// When, by the wall clock.
    pub at_ms: u64,
    /// ERROR, WARN, INFO, DEBUG, TRACE.
    pub level: &'static str,
    /// The `device` field of the event, when it has one.
    pub device: Option<String>,
    /// The message and the other fields.
    pub text: String,
}

/// One device's recent past.
pub struct DeviceRecent {
    /// The device's name.
    pub name: String,
    hub: std::sync::Weak<Recent>,
    /// The tick of its last frame (0: none yet).
    last_tick: AtomicU64,
    inner: Mutex<DeviceInner>,
}

#[derive(Default)]
struct DeviceInner {
    frames: VecDeque<FrameRecord>,
    rejected: VecDeque<FrameRecord>,
    topics: IndexMap<String, TopicSeries>,
    /// Topics seen beyond [`MAX_TOPICS`], not tracked.
    topics_untracked: u64,
}

impl DeviceRecent {
    /// When its last frame came, by the wall clock; None before the first.
    pub fn last_frame_ms(&self) -> Option<u64> {
        let t = self.last_tick.load(Ordering::Relaxed);
        let hub = self.hub.upgrade()?;
        (t > 0).then(|| hub.tick_to_unix_ms(t))
    }

    /// Its kept frames after id `after`, oldest first (all outcomes and the rejected ones,
    /// merged).
    pub fn frames_since(&self, after: u64) -> Vec<FrameRecord> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let mut out: Vec<FrameRecord> = inner
            .frames
            .iter()
            .chain(inner.rejected.iter())
            .filter(|f| f.id > after)
            .cloned()
            .collect();
        // A record is in one ring only: merged by id, nothing to deduplicate.
        out.sort_by_key(|f| f.id);
        out
    }

    /// Each tracked topic's latest value, in the order first seen, and how many topics were
    /// not tracked.
    pub fn topics(&self) -> (Vec<TopicLatest>, u64) {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let latest = inner
            .topics
            .iter()
            .map(|(topic, s)| TopicLatest {
                topic: topic.clone(),
                payload: s.payload.clone(),
                at_ms: s.at_ms,
                numeric: !s.history.is_empty(),
            })
            .collect();
        (latest, inner.topics_untracked)
    }

    /// Each numeric topic's history: (seconds since start, value).
    pub fn histories(&self) -> Vec<(String, Vec<(u32, f32)>)> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner
            .topics
            .iter()
            .filter(|(_, s)| !s.history.is_empty())
            .map(|(t, s)| (t.clone(), s.history.iter().copied().collect()))
            .collect()
    }

    fn keep(&self, frame: &[u8], outcome: Outcome) {
        let Some(hub) = self.hub.upgrade() else {
            return;
        };
        let now = SystemTime::now();
        let record = FrameRecord {
            id: hub.id(),
            at_ms: unix_ms(now),
            len: frame.len(),
            bytes: frame[..frame.len().min(FRAME_BYTES_KEPT)].to_vec(),
            outcome,
        };
        let second = hub.seconds();
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if let Outcome::Published { messages, .. } = &record.outcome {
            for m in messages {
                inner.topic(&hub, &m.topic, &m.payload, record.at_ms, second);
            }
        }
        let ring = if record.outcome.rejected() {
            &mut inner.rejected
        } else {
            &mut inner.frames
        };
        let cap = if record.outcome.rejected() {
            REJECTED_KEPT
        } else {
            FRAMES_KEPT
        };
        if ring.len() == cap {
            ring.pop_front();
        }
        ring.push_back(record);
    }
}

impl DeviceInner {
    fn topic(&mut self, hub: &Recent, topic: &str, payload: &str, at_ms: u64, second: u32) {
        if !self.topics.contains_key(topic) && self.topics.len() >= MAX_TOPICS {
            self.topics_untracked += 1;
            return;
        }
        let series = self.topics.entry(topic.to_owned()).or_default();
        series.payload.clear();
        series.payload.push_str(payload);
        series.at_ms = at_ms;
        if let Ok(v) = payload.trim().parse::<f32>() {
            if !series.plotted && !series.unplotted {
                series.plotted = hub.take_plot();
                series.unplotted = !series.plotted;
            }
            if series.plotted
                && v.is_finite()
                && series.history.back().is_none_or(|&(s, _)| s != second)
            {
                if series.history.len() == HISTORY_POINTS {
                    series.history.pop_front();
                }
                series.history.push_back((second, v));
            }
        }
    }
}

#[derive(Default)]
struct TopicSeries {
    payload: String,
    at_ms: u64,
    history: VecDeque<(u32, f32)>,
    /// It holds one of the gateway's [`MAX_PLOTTED`] histories.
    plotted: bool,
    /// It is numeric, but none was left for it.
    unplotted: bool,
}

/// A topic's latest value.
#[derive(Debug, Clone, Serialize)]
pub struct TopicLatest {
    /// The topic.
    pub topic: String,
    /// Its last payload (shortened), as text.
    pub payload: String,
    /// When it was published.
    pub at_ms: u64,
    /// Whether it has a plottable history.
    pub numeric: bool,
}

/// One frame and what became of it.
#[derive(Debug, Clone, Serialize)]
pub struct FrameRecord {
    /// Increasing across the gateway.
    pub id: u64,
    /// When it was read.
    pub at_ms: u64,
    /// Its length (it is kept up to [`FRAME_BYTES_KEPT`] bytes).
    pub len: usize,
    /// Its bytes (the first [`FRAME_BYTES_KEPT`]).
    #[serde(serialize_with = "as_hex")]
    pub bytes: Vec<u8>,
    /// What became of it.
    pub outcome: Outcome,
}

fn as_hex<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(bytes))
}

/// A message a frame made, shortened for display.
#[derive(Debug, Clone, Serialize)]
pub struct Shown {
    /// Its topic.
    pub topic: String,
    /// Its payload as text (lossy, shortened).
    pub payload: String,
}

impl Shown {
    /// A message for display.
    pub fn of(m: &crate::message::Message) -> Self {
        let text = String::from_utf8_lossy(&m.payload);
        let payload = match text.char_indices().nth(PAYLOAD_CHARS_KEPT) {
            Some((i, _)) => format!("{}…", &text[..i]),
            None => text.into_owned(),
        };
        Self {
            topic: m.topic.to_string(),
            payload,
        }
    }
}

/// What became of a frame: published, or why not.
#[derive(Debug, Clone, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Outcome {
    /// Rules matched and made these messages.
    Published {
        /// The first rule that matched.
        rule: Option<String>,
        /// The messages.
        messages: Vec<Shown>,
    },
    /// Only `drop: true` rules matched.
    Dropped,
    /// No rule matched.
    Unmatched {
        /// The rule that came closest, and where it parted from the frame.
        closest: Option<crate::rules::explain::Closest>,
    },
    /// Not UTF-8 where text rules needed text.
    InvalidUtf8,
    /// Failed the device's checksum.
    BadChecksum {
        /// The checksum's name.
        checksum: String,
        /// Expected and received values, or what was missing.
        why: String,
    },
    /// Matched, but a value could not be computed or a topic was not publishable.
    BadMessage {
        /// The first rule that matched.
        rule: Option<String>,
        /// What went wrong.
        why: String,
        /// The messages that were made anyway.
        messages: Vec<Shown>,
    },
    /// Longer than `max_frame`.
    TooLong {
        /// The device's `max_frame`.
        max_frame: usize,
    },
    /// Failed the framing's decoding (COBS, SLIP), or not an answer to the Modbus request.
    Corrupt {
        /// What was wrong.
        why: String,
    },
    /// Cut short by the port going away.
    Incomplete,
    /// Bytes skipped to find the next frame.
    Resync {
        /// How many.
        bytes: usize,
    },
    /// A Modbus exception answer.
    Exception {
        /// The exception.
        why: String,
    },
    /// A poll went unanswered within its timeout (no frame: the bytes that never came).
    Timeout {
        /// The poll's name.
        request: String,
        /// Its timeout.
        timeout_ms: u64,
        /// Which attempt it was (1: the first ask).
        attempt: u32,
    },
    /// A frame on a shared line that no request asked for (a late answer?).
    Unsolicited,
}

impl Outcome {
    /// Whether the frame was refused for a fault (not published and not dropped on purpose).
    pub fn rejected(&self) -> bool {
        !matches!(self, Outcome::Published { .. } | Outcome::Dropped)
    }
}

/// A device task's side of its record: decides per frame, on its own budget, whether to keep
/// it. Owned by the task, so the decision takes no lock.
pub struct Tap {
    /// The gateway's record, held (not looked up per frame: the hot path takes no refcount).
    hub: Arc<Recent>,
    device: Arc<DeviceRecent>,
    window: u64,
    taken: u32,
    rejected_taken: u32,
}

impl Tap {
    /// A tap into a device's record (none when the gateway's record is gone).
    pub fn new(device: Arc<DeviceRecent>) -> Option<Self> {
        Some(Self {
            hub: device.hub.upgrade()?,
            device,
            window: 0,
            taken: 0,
            rejected_taken: 0,
        })
    }

    /// Notes that a frame came; true when it is within this tick's budget for its kind, so the
    /// caller builds its outcome and calls [`Self::keep`].
    pub fn wants(&mut self, rejected: bool) -> bool {
        let hub = &self.hub;
        let now = hub.tick();
        self.device.last_tick.store(now, Ordering::Relaxed);
        if now != self.window {
            self.window = now;
            self.taken = 0;
            self.rejected_taken = 0;
        }
        let taken = if rejected {
            &mut self.rejected_taken
        } else {
            &mut self.taken
        };
        if *taken < hub.budget() {
            *taken += 1;
            true
        } else {
            false
        }
    }

    /// Keeps a frame the tap wanted.
    pub fn keep(&self, frame: &[u8], outcome: Outcome) {
        self.device.keep(frame, outcome);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shown(topic: &str, payload: &str) -> Shown {
        Shown {
            topic: topic.into(),
            payload: payload.into(),
        }
    }

    #[test]
    fn a_device_at_any_rate_is_sampled_within_its_budget_per_tick() {
        let hub = Arc::new(Recent::default());
        let mut tap = Tap::new(hub.device("d")).unwrap();
        let kept = (0..1000).filter(|_| tap.wants(false)).count();
        assert_eq!(kept, FRAMES_PER_TICK_UNWATCHED as usize, "nobody watches");
        hub.watching(true);
        hub.tick.fetch_add(1, Ordering::Relaxed);
        let kept = (0..1000).filter(|_| tap.wants(false)).count();
        assert_eq!(kept, FRAMES_PER_TICK as usize, "one tick, one budget");
        // Rejected frames have a budget of their own: a flood of good frames never hides them.
        assert!(tap.wants(true));
        hub.tick.fetch_add(1, Ordering::Relaxed);
        assert!(tap.wants(false), "a new tick, a new budget");
    }

    #[test]
    fn rings_and_topics_stay_bounded_and_good_frames_do_not_push_out_rejected_ones() {
        let hub = Arc::new(Recent::default());
        let d = hub.device("d");
        d.keep(b"bad", Outcome::Unmatched { closest: None });
        for i in 0..(FRAMES_KEPT + 10) {
            let topic = format!("t/{i}");
            d.keep(
                b"21.5",
                Outcome::Published {
                    rule: None,
                    messages: vec![shown(&topic, "21.5")],
                },
            );
        }
        let frames = d.frames_since(0);
        assert_eq!(frames.len(), FRAMES_KEPT + 1);
        assert!(matches!(frames[0].outcome, Outcome::Unmatched { .. }));
        let (topics, untracked) = d.topics();
        assert_eq!(topics.len(), MAX_TOPICS);
        assert_eq!(untracked, (FRAMES_KEPT + 10 - MAX_TOPICS) as u64);
        assert!(topics[0].numeric && topics[0].payload == "21.5");
    }

    #[test]
    fn a_topic_gets_one_history_point_a_second_and_text_gets_none() {
        let hub = Arc::new(Recent::default());
        let d = hub.device("d");
        for v in ["1", "2", "3"] {
            d.keep(
                v.as_bytes(),
                Outcome::Published {
                    rule: None,
                    messages: vec![shown("n", v), shown("s", "on")],
                },
            );
        }
        let h = d.histories();
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h[0].0, "n");
        assert_eq!(
            h[0].1,
            vec![(0, 1.0)],
            "the first point of the second stays"
        );
        assert_eq!(d.topics().0[0].payload, "3", "the latest value is the last");
    }

    #[test]
    fn the_oldest_unsent_age_comes_from_when_its_sequence_number_appeared() {
        let hub = Recent::default();
        assert_eq!(hub.oldest_unsent_s(9, 10), None, "all acknowledged");
        hub.queue_sample(0, 10);
        // Record 10 exists from the next sample on.
        hub.queue_sample(1, 11);
        assert_eq!(hub.oldest_unsent_s(9, 11), Some(0));
        // Before any sample: as old as the gateway.
        let fresh = Recent::default();
        assert_eq!(fresh.oldest_unsent_s(0, 5), Some(0));
    }

    #[test]
    fn plots_are_bounded_gateway_wide_and_freed_with_their_device() {
        let hub = Arc::new(Recent::default());
        let keep = |d: &DeviceRecent, t: &str| {
            d.keep(
                b"1",
                Outcome::Published {
                    rule: None,
                    messages: vec![shown(t, "1")],
                },
            )
        };
        let a = hub.device("a");
        for i in 0..MAX_TOPICS {
            keep(&a, &format!("t/{i}"));
        }
        let b = hub.device("b");
        for i in 0..MAX_TOPICS {
            keep(&b, &format!("t/{i}"));
        }
        let c = hub.device("c");
        keep(&c, "late");
        assert_eq!(a.histories().len() + b.histories().len(), MAX_PLOTTED);
        assert!(c.histories().is_empty(), "none left for c");
        assert_eq!(
            c.topics().0[0].payload,
            "1",
            "its latest value is still shown"
        );
        hub.retain(&["b".into(), "c".into()]);
        keep(&c, "later");
        assert_eq!(c.histories().len(), 1, "a's plots were freed");
    }

    #[test]
    fn the_log_ring_keeps_the_last_lines() {
        let hub = Recent::default();
        for i in 0..(LOG_LINES_KEPT + 5) {
            hub.log("INFO", None, format!("line {i}"));
        }
        let lines = hub.log_since(0);
        assert_eq!(lines.len(), LOG_LINES_KEPT);
        assert_eq!(lines[0].text, "line 5");
        let last = lines[lines.len() - 1].id;
        assert!(hub.log_since(last).is_empty());
    }
}

//! What the dashboard's JSON says: the gateway at one moment (devices, queue, uplink), built
//! from the counters the gateway keeps anyway and the dashboard's [`Recent`] record, plus the
//! rule tester's answer. One serde struct per thing the page shows, so the page's fields are
//! named in one place.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::config::{Device, PortSource};
use crate::frames::trial::Trial;
use crate::queue::thread::QueueHandle;
use crate::recent::{unix_ms, Recent, Shown, TopicLatest};
use crate::rules::Problem;
use crate::stats::{counts_of, DeviceCounts, DeviceList};
use crate::uplink::UplinkState;

/// A device that has been silent for this many of its usual intervals is shown stale.
const STALE_INTERVALS: u32 = 3;
/// ... and never after less than this.
const STALE_MIN: Duration = Duration::from_secs(5);

/// The gateway at one moment.
#[derive(Debug, Serialize)]
pub struct State {
    /// The gateway's id.
    pub gateway: String,
    /// Now, by the gateway's clock (the page shows ages against it).
    pub now_ms: u64,
    /// Seconds since start (the plots' time axis).
    pub uptime_s: u32,
    /// The devices, in config order.
    pub devices: Vec<DeviceView>,
    /// The queue, with an uplink (and when it answered).
    pub queue: Option<QueueView>,
    /// The uplink, when there is one.
    pub uplink: Option<UplinkView>,
}

/// One device's row.
#[derive(Debug, Serialize)]
pub struct DeviceView {
    /// Its name.
    pub name: String,
    /// Its port (a path, or the simulator it is).
    pub port: String,
    /// The product it was configured as (`model:`), e.g. "Eastron SDM120-Modbus".
    pub model: Option<String>,
    /// The unit of each topic that declares one (`unit_of_measurement`), by topic.
    pub units: BTreeMap<String, String>,
    /// Its polls' names and periods (empty: it speaks unasked).
    pub polls: Vec<String>,
    /// `online`, `offline` or `not answering` (polled and its last polls timed out).
    pub state: &'static str,
    /// When its last frame came.
    pub last_frame_ms: Option<u64>,
    /// Its last frame is older than its usual interval allows.
    pub stale: bool,
    /// Frames a second, over the last few seconds.
    pub frames_per_s: f64,
    /// Its counters.
    pub counts: DeviceCounts,
    /// Frames dropped as bad, all reasons.
    pub bad: u64,
    /// Its topics' latest values.
    pub topics: Vec<TopicLatest>,
    /// Topics beyond the tracked ones.
    pub topics_untracked: u64,
}

/// The queue's part.
#[derive(Debug, Serialize)]
pub struct QueueView {
    /// Messages waiting for an acknowledgement.
    pub depth: u64,
    /// Bytes on disk.
    pub bytes: u64,
    /// Segment files.
    pub segments: usize,
    /// How old the oldest unsent message is, in seconds (about; none when nothing waits).
    pub oldest_unsent_s: Option<u32>,
    /// Dropped to stay within `queue.max_bytes`.
    pub dropped_full: u64,
    /// Not stored: the disk was full.
    pub dropped_disk_full: u64,
    /// Lost to corruption found while reading.
    pub dropped_corrupt: u64,
    /// Too large to ever fit.
    pub dropped_too_large: u64,
    /// Bytes the queue had written to its disk since the start, in whole pages (what the SD
    /// card pays).
    pub written_bytes: u64,
    /// The same per day at the rate of the last minute.
    pub written_per_day: f64,
}

/// The uplink's part.
#[derive(Debug, Serialize)]
pub struct UplinkView {
    /// Connected now.
    pub connected: bool,
    /// Since when (connected or not); None before the first connection.
    pub since_ms: Option<u64>,
    /// Successful connections so far (reconnects are this minus one).
    pub connects: u64,
    /// Messages acknowledged upstream.
    pub delivered: u64,
    /// Acknowledged a second, over the last few seconds.
    pub delivered_per_s: f64,
    /// Not sent: the broker's profile would refuse them.
    pub refused_by_profile: u64,
    /// Why the last session failed, if one has.
    pub last_error: Option<String>,
}

/// Rates are measured over this much of the counters' recent past.
const RATE_WINDOW: Duration = Duration::from_secs(5);

/// One counter's recent readings.
#[derive(Default)]
struct Readings {
    /// (when, value), oldest first, spanning about [`RATE_WINDOW`].
    recent: std::collections::VecDeque<(Instant, u64)>,
    /// When the counter first moved, and its value then (for the usual interval).
    first: Option<(Instant, u64)>,
}

/// Rates of the counters, from readings the dashboard's sampler takes once a second.
#[derive(Default)]
pub struct Rates {
    readings: HashMap<String, Readings>,
}

impl Rates {
    /// Takes a reading of counter `key`.
    fn update(&mut self, key: &str, value: u64, now: Instant) {
        let r = self.readings.entry(key.to_owned()).or_default();
        if r.recent.back().is_some_and(|&(_, v)| value < v) {
            // The counters restarted (a reload replaced the device).
            *r = Readings::default();
        }
        r.recent.push_back((now, value));
        while r.recent.len() > 2
            && r.recent
                .get(1)
                .is_some_and(|&(t, _)| now.duration_since(t) >= RATE_WINDOW)
        {
            r.recent.pop_front();
        }
        if r.first.is_none() && value > 0 {
            r.first = Some((now, value));
        }
    }

    fn rate_of(r: &Readings) -> f64 {
        match (r.recent.front(), r.recent.back()) {
            (Some(&(t0, v0)), Some(&(t1, v1))) if t1 > t0 => {
                (v1 - v0) as f64 / t1.duration_since(t0).as_secs_f64()
            }
            _ => 0.0,
        }
    }

    /// The rate of `key` at its last reading.
    fn rate(&self, key: &str) -> f64 {
        self.readings.get(key).map(Self::rate_of).unwrap_or(0.0)
    }

    /// The mean interval of `key`'s events, at its last reading.
    fn mean(&self, key: &str) -> Option<Duration> {
        let r = self.readings.get(key)?;
        let (t, v0) = r.first?;
        let &(now, v) = r.recent.back()?;
        let events = v.saturating_sub(v0);
        (events > 0).then(|| now.duration_since(t) / events as u32)
    }
}

/// Where a snapshot comes from.
pub struct Sources {
    /// The gateway's id.
    pub gateway: String,
    /// The dashboard's record.
    pub recent: Arc<Recent>,
    /// The running devices' counters.
    pub list: DeviceList,
    /// The devices as configured now (a reload replaces them).
    pub devices: tokio::sync::watch::Receiver<Arc<Vec<Device>>>,
    /// The queue, with an uplink.
    pub queue: Option<QueueHandle>,
    /// The uplink's state, with an uplink.
    pub uplink: Option<Arc<UplinkState>>,
    /// Counter rates, updated by the sampler.
    pub rates: std::sync::Mutex<Rates>,
    /// The Prometheus metrics, when `/metrics` is served here too.
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
}

impl Sources {
    /// Once a second: the rates, and the queue's depth for its history.
    pub async fn sample(&self) {
        let now = Instant::now();
        let counts = counts_of(&self.list);
        if let Ok(mut rates) = self.rates.lock() {
            for (name, c) in &counts {
                rates.update(&format!("frames/{name}"), c.frames, now);
            }
            if let Some(u) = &self.uplink {
                rates.update("delivered", u.delivered.load(Ordering::Relaxed), now);
            }
        }
        if let Some(q) = &self.queue {
            if let Ok(Ok(st)) = tokio::time::timeout(Duration::from_secs(1), q.stats()).await {
                self.recent.queue_sample(st.depth, st.next_seq);
                if let Ok(mut rates) = self.rates.lock() {
                    rates.update("queue_written", st.written, now);
                }
            }
        }
    }

    /// The gateway now.
    pub async fn state(&self) -> State {
        let counts: HashMap<String, DeviceCounts> = counts_of(&self.list).into_iter().collect();
        let records: HashMap<String, _> = self
            .recent
            .devices()
            .into_iter()
            .map(|d| (d.name.clone(), d))
            .collect();
        let configured = self.devices.borrow().clone();
        let now_ms = unix_ms(SystemTime::now());
        let mut devices = Vec::with_capacity(configured.len());
        for d in configured.iter() {
            let counts = counts.get(&d.name).cloned().unwrap_or_default();
            let (frames_per_s, mean) = match self.rates.lock() {
                Ok(r) => {
                    let key = format!("frames/{}", d.name);
                    (r.rate(&key), r.mean(&key))
                }
                Err(_) => (0.0, None),
            };
            let record = records.get(&d.name);
            let last_frame_ms = record.and_then(|r| r.last_frame_ms());
            let (topics, topics_untracked) = record.map(|r| r.topics()).unwrap_or_default();
            let usual = d
                .polls
                .iter()
                .map(|p| p.every)
                .min()
                .or(mean)
                .unwrap_or(STALE_MIN);
            let stale = last_frame_ms.is_some_and(|t| {
                Duration::from_millis(now_ms.saturating_sub(t))
                    > (usual * STALE_INTERVALS).max(STALE_MIN)
            });
            let state = if !counts.online {
                "offline"
            } else if !d.polls.is_empty() && stale && counts.timeouts > 0 {
                "not answering"
            } else {
                "online"
            };
            devices.push(DeviceView {
                name: d.name.clone(),
                port: match &d.source {
                    PortSource::Path(p) => p.display().to_string(),
                    PortSource::Simulated(sim) => format!("simulated {:?}", sim.profile),
                },
                model: d
                    .spec
                    .entry
                    .model
                    .as_ref()
                    .map(|m| format!("{} {}", m.manufacturer, m.name)),
                units: d
                    .rules
                    .entities(&self.gateway, &d.name)
                    .filter_map(|(topic, e)| {
                        let unit = e.extra.get("unit_of_measurement")?.as_str()?;
                        Some((topic, unit.to_owned()))
                    })
                    .collect(),
                polls: d
                    .polls
                    .iter()
                    .map(|p| format!("{} every {}", p.name, humantime::format_duration(p.every)))
                    .collect(),
                state,
                last_frame_ms,
                stale,
                frames_per_s,
                bad: counts.bad(),
                counts,
                topics,
                topics_untracked,
            });
        }
        let queue = match &self.queue {
            Some(q) => match tokio::time::timeout(Duration::from_secs(1), q.stats()).await {
                Ok(Ok(st)) => Some(QueueView {
                    depth: st.depth,
                    bytes: st.bytes,
                    segments: st.segments,
                    oldest_unsent_s: (st.depth > 0)
                        .then(|| self.recent.oldest_unsent_s(st.acked, st.next_seq))
                        .flatten(),
                    dropped_full: st.drops.full,
                    dropped_disk_full: st.drops.disk_full,
                    dropped_corrupt: st.drops.corrupt_segments,
                    dropped_too_large: st.drops.too_large,
                    written_bytes: st.written,
                    written_per_day: self
                        .rates
                        .lock()
                        .map(|r| r.rate("queue_written") * 86_400.0)
                        .unwrap_or(0.0),
                }),
                _ => None,
            },
            None => None,
        };
        let uplink = self.uplink.as_ref().map(|u| {
            let since = u.since_ms.load(Ordering::Relaxed);
            UplinkView {
                connected: u.connected.load(Ordering::Relaxed),
                since_ms: (since > 0).then_some(since),
                connects: u.connects.load(Ordering::Relaxed),
                delivered: u.delivered.load(Ordering::Relaxed),
                delivered_per_s: self
                    .rates
                    .lock()
                    .map(|r| r.rate("delivered"))
                    .unwrap_or(0.0),
                refused_by_profile: u.refused_by_profile.load(Ordering::Relaxed),
                last_error: u.last_error(),
            }
        });
        State {
            gateway: self.gateway.clone(),
            now_ms,
            uptime_s: self.recent.seconds(),
            devices,
            queue,
            uplink,
        }
    }
}

/// The rule tester's answer.
#[derive(Debug, Serialize)]
pub struct TrialView {
    /// The checksum's name and verdict, if the device has one.
    pub checksum: Option<ChecksumView>,
    /// A rule matched.
    pub matched: bool,
    /// Only `drop: true` rules matched.
    pub dropped: bool,
    /// The messages, with their flags.
    pub messages: Vec<MessageView>,
    /// What was left out, and why.
    pub problems: Vec<String>,
    /// The counter the frame would move on the line when it is rejected (`unmatched`, ...).
    pub rejected_as: Option<&'static str>,
    /// When no rule matched: the closest one and where it parted from the frame.
    pub closest: Option<crate::rules::explain::Closest>,
}

/// A checksum's verdict.
#[derive(Debug, Serialize)]
pub struct ChecksumView {
    /// Its name.
    pub name: String,
    /// It matched.
    pub ok: bool,
    /// The check value, or why it failed.
    pub detail: String,
}

/// A message the tester made.
#[derive(Debug, Serialize)]
pub struct MessageView {
    /// Topic and payload.
    #[serde(flatten)]
    pub shown: Shown,
    /// Its QoS.
    pub qos: u8,
    /// Retained.
    pub retain: bool,
}

impl From<Trial> for TrialView {
    fn from(t: Trial) -> Self {
        let c = &t.counts;
        let bad_checksum = matches!(&t.checksum, Some((_, Err(_))));
        let rejected_as = [
            (u64::from(bad_checksum), "bad_checksum"),
            (c.invalid_utf8, "invalid_utf8"),
            (c.unmatched, "unmatched"),
            (c.bad_value, "bad_value"),
            (c.bad_topic, "bad_topic"),
        ]
        .into_iter()
        .find(|(n, _)| *n > 0)
        .map(|(_, name)| name);
        TrialView {
            checksum: t.checksum.map(|(name, r)| ChecksumView {
                name,
                ok: r.is_ok(),
                detail: match r {
                    Ok(v) | Err(v) => v,
                },
            }),
            matched: t.matched,
            dropped: t.dropped,
            messages: t
                .messages
                .iter()
                .map(|m| MessageView {
                    shown: Shown::of(m),
                    qos: m.qos,
                    retain: m.retain,
                })
                .collect(),
            problems: t
                .problems
                .iter()
                .map(|p| Problem::text(p).to_owned())
                .collect(),
            rejected_as,
            closest: t.closest,
        }
    }
}

//! The gateway's summary of itself: one serde struct, published retained as the stats message,
//! read back by `serial2mqtt status`, and shortened into the systemd status line, so that its
//! keys are written in one place.

use indexmap::IndexMap;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};

use crate::queue::thread::QueueHandle;
use crate::stats::{DeviceCounts, DeviceList};
use crate::uplink::UplinkState;

/// Everything the stats message says (missing keys read as empty: `status` reads a summary
/// from an older or newer gateway).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Summary {
    /// When it was taken (RFC 3339, seconds).
    pub at: String,
    /// Seconds since the gateway started.
    pub uptime_s: u64,
    /// Each running device's counters, by name, in the order they run.
    pub devices: IndexMap<String, DeviceCounts>,
    /// The store-and-forward queue, when there is an uplink (and it answered).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub queue: Option<QueueSummary>,
    /// The uplink, when there is one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub uplink: Option<UplinkSummary>,
    /// The Modbus TCP server, when it is on.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub modbus_server: Option<crate::server::ServerSummary>,
}

/// The queue's part of the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct QueueSummary {
    /// Messages waiting for an acknowledgement.
    pub depth: u64,
    /// Bytes on disk.
    pub bytes: u64,
    /// Segment files.
    pub segments: usize,
    /// Messages dropped, by reason.
    pub dropped: Dropped,
    /// Bytes the queue had written to its disk since the start, in whole pages.
    pub written_bytes: u64,
}

/// Messages the queue dropped, by reason.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Dropped {
    /// Oldest unsent ones, to stay within `queue.max_bytes`.
    pub full: u64,
    /// Not stored: the disk was full.
    pub disk_full: u64,
    /// Lost to corruption found while reading.
    pub corrupt: u64,
    /// Too large to ever fit.
    pub too_large: u64,
}

impl Dropped {
    /// All of them.
    pub fn total(&self) -> u64 {
        self.full + self.disk_full + self.corrupt + self.too_large
    }
}

/// The uplink's part of the summary.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct UplinkSummary {
    /// Connected to a broker now.
    pub connected: bool,
    /// Successful connections so far.
    pub connects: u64,
    /// Messages acknowledged upstream.
    pub delivered: u64,
    /// Messages not sent because the broker's profile would refuse them (topic, size).
    #[serde(default)]
    pub refused_by_profile: u64,
}

/// Where a summary's parts come from.
pub struct Sources<'a> {
    /// When the gateway started.
    pub started: Instant,
    /// The running devices.
    pub devices: &'a DeviceList,
    /// The queue, with an uplink.
    pub queue: Option<&'a QueueHandle>,
    /// The uplink's state, with an uplink.
    pub uplink: Option<&'a UplinkState>,
    /// The Modbus TCP server, when it is on.
    pub server: Option<&'a crate::server::Shared>,
}

impl Summary {
    /// Takes a summary now; a queue that does not answer within `wait` is left out.
    pub async fn collect(from: &Sources<'_>, wait: Duration) -> Self {
        let devices = crate::stats::counts_of(from.devices).into_iter().collect();
        let queue = match from.queue {
            Some(q) => match tokio::time::timeout(wait, q.stats()).await {
                Ok(Ok(st)) => Some(QueueSummary {
                    depth: st.depth,
                    bytes: st.bytes,
                    segments: st.segments,
                    dropped: Dropped {
                        full: st.drops.full,
                        disk_full: st.drops.disk_full,
                        corrupt: st.drops.corrupt_segments,
                        too_large: st.drops.too_large,
                    },
                    written_bytes: st.written,
                }),
                _ => None,
            },
            None => None,
        };
        let uplink = from.uplink.map(|u| UplinkSummary {
            connected: u.connected.load(Ordering::Relaxed),
            connects: u.connects.load(Ordering::Relaxed),
            delivered: u.delivered.load(Ordering::Relaxed),
            refused_by_profile: u.refused_by_profile.load(Ordering::Relaxed),
        });
        Self {
            at: humantime::format_rfc3339_seconds(SystemTime::now()).to_string(),
            uptime_s: from.started.elapsed().as_secs(),
            devices,
            queue,
            uplink,
            modbus_server: from.server.map(crate::server::Shared::summary),
        }
    }

    /// The one-line status for `systemctl status`.
    pub fn status_line(&self) -> String {
        let online = self.devices.values().filter(|d| d.online).count();
        let mut line = format!("{online}/{} devices online", self.devices.len());
        if let Some(u) = &self.uplink {
            let state = if u.connected {
                "connected"
            } else {
                "offline, buffering"
            };
            match &self.queue {
                Some(q) => line.push_str(&format!(", queue {} messages, uplink {state}", q.depth)),
                None => line.push_str(&format!(", queue busy, uplink {state}")),
            }
        }
        line
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_says_devices_queue_and_uplink() {
        let mut s = Summary::default();
        s.devices.insert(
            "a".into(),
            DeviceCounts {
                online: true,
                ..Default::default()
            },
        );
        s.devices.insert("b".into(), DeviceCounts::default());
        assert_eq!(s.status_line(), "1/2 devices online");
        s.uplink = Some(UplinkSummary::default());
        assert_eq!(
            s.status_line(),
            "1/2 devices online, queue busy, uplink offline, buffering"
        );
        s.queue = Some(QueueSummary {
            depth: 7,
            ..Default::default()
        });
        s.uplink = Some(UplinkSummary {
            connected: true,
            ..Default::default()
        });
        assert_eq!(
            s.status_line(),
            "1/2 devices online, queue 7 messages, uplink connected"
        );
    }

    #[test]
    fn a_summary_reads_back_what_it_wrote_and_tolerates_missing_keys() {
        let mut s = Summary {
            at: "2026-12-02T00:00:00Z".into(),
            uptime_s: 5,
            ..Default::default()
        };
        s.devices.insert(
            "a".into(),
            DeviceCounts {
                frames: 3,
                ..Default::default()
            },
        );
        let text = serde_json::to_string(&s).unwrap();
        assert!(
            !text.contains("queue") && !text.contains("uplink"),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<Summary>(&text).unwrap(), s);
        let old: Summary = serde_json::from_str(r#"{"devices":{"m":{"online":true}}}"#).unwrap();
        assert!(old.devices["m"].online);
    }
}

//! `queue:`: the store-and-forward queue's size, segments and sync interval.

use std::time::Duration;

use super::Problems;
use crate::config::model::QueueSettings;
use crate::config::schema;

/// Checks `queue:`; problems go to `p`.
pub(super) fn check(
    raw: &schema::Queue,
    state_dir: &std::path::Path,
    p: &mut Problems,
) -> QueueSettings {
    let max = raw.max_bytes.as_u64();
    let seg = raw.segment_bytes.as_u64();
    if seg < 64 * 1024 {
        p.error(
            "queue.segment_bytes",
            "must be at least 64KiB",
            Some("write e.g. segment_bytes: 16MiB".into()),
        );
    } else if max < 2 * seg {
        p.error(
            "queue.max_bytes",
            format!(
                "must be at least twice segment_bytes ({})",
                raw.segment_bytes
            ),
            Some("raise max_bytes or lower segment_bytes".into()),
        );
    }
    if raw.flush_interval > Duration::from_secs(10) {
        p.error(
            "queue.flush_interval",
            "longer than 10s puts too much at risk in a power cut",
            Some("write e.g. flush_interval: 100ms (0 syncs every message)".into()),
        );
    }
    QueueSettings {
        dir: state_dir.join("queue"),
        max_bytes: max,
        segment_bytes: seg,
        flush_interval: raw.flush_interval,
    }
}

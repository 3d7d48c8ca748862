//! One frame tried on a device's rules, outside the line: what `serial2mqtt test-rule` prints
//! and what the dashboard's rule tester shows, both from this one function, which runs the very
//! [`FrameHandler`] the device task uses (with counters of its own, so nothing running is
//! touched, and nothing is written anywhere).

use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::FrameHandler;
use crate::config::Device;
use crate::message::Message;
use crate::rules::explain::Closest;
use crate::rules::Problem;
use crate::stats::{DeviceCounts, DeviceStats};

/// What became of the frame.
#[derive(Debug)]
pub struct Trial {
    /// The device's checksum, if it has one: its name, and the check value (hex, two digits a
    /// byte) or why it failed (a failed frame goes no further).
    pub checksum: Option<(String, Result<String, String>)>,
    /// The messages it made.
    pub messages: Vec<Message>,
    /// Messages left out: a topic that cannot be published, a value that cannot be computed.
    pub problems: Vec<Problem>,
    /// A rule matched (possibly a `drop: true` one).
    pub matched: bool,
    /// Only `drop: true` rules matched.
    pub dropped: bool,
    /// The counters the frame moved (which reason, when it was rejected).
    pub counts: DeviceCounts,
    /// When no rule matched: the one that came closest, and where it parted from the frame.
    pub closest: Option<Closest>,
}

impl Trial {
    /// Whether a value could not be computed (the rule's messages were left out).
    pub fn bad_value(&self) -> bool {
        self.problems.iter().any(|p| matches!(p, Problem::Value(_)))
    }
}

/// Runs `frame` through `device`'s checksum and rules as the device task would.
pub fn try_frame(device: &Device, gateway: &str, frame: &[u8]) -> Trial {
    let bytes = Bytes::copy_from_slice(frame);
    let checksum = device.checksum.as_ref().map(|c| {
        (
            c.spec().name().to_string(),
            c.verify(&bytes)
                .map(|v| c.show(v))
                .map_err(|f| f.to_string()),
        )
    });
    let stats = DeviceStats::default();
    if let Some((_, Err(_))) = &checksum {
        return Trial {
            checksum,
            messages: Vec::new(),
            problems: Vec::new(),
            matched: false,
            dropped: false,
            counts: stats.counts(),
            closest: None,
        };
    }
    let mut handler = FrameHandler::new(device, gateway, &stats);
    let messages: Vec<Message> = handler.handle(&bytes).collect();
    let problems = handler.problems().to_vec();
    let matched = stats.unmatched.load(Ordering::Relaxed) == 0
        && stats.invalid_utf8.load(Ordering::Relaxed) == 0;
    Trial {
        checksum,
        messages,
        problems,
        matched,
        dropped: stats.dropped.load(Ordering::Relaxed) > 0,
        counts: stats.counts(),
        closest: (!matched).then(|| device.rules.closest(frame)).flatten(),
    }
}

//! How often things may repeat: log lines about a repeated event (at once, then at most one
//! summary per interval) and the capped, jittered backoff between retries (a port to reopen,
//! an uplink to reconnect). One place, so every loop in the gateway paces itself the same way.

use std::time::{Duration, Instant};

/// How often a repeated log line (a bad frame, a refused command) may appear per device and
/// reason.
pub const LOG_EVERY: Duration = Duration::from_secs(10);

/// Decides when a repeated event may be logged again.
#[derive(Debug)]
pub struct RateLimit {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl RateLimit {
    /// At most one log line per `every`.
    pub fn new(every: Duration) -> Self {
        Self {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// Records one event. Returns `Some(n)` when it should be logged now, `n` being how many
    /// events were not logged since the last line.
    pub fn hit(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(t) if now.duration_since(t) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// Delays between retries: doubling from `min` up to `max`, with jitter, forever.
///
/// backon adds its jitter (up to +100 %) after its own cap: capped again so `max` holds.
pub fn backoff(min: Duration, max: Duration) -> impl Iterator<Item = Duration> {
    use backon::BackoffBuilder;
    backon::ExponentialBuilder::default()
        .with_min_delay(min)
        .with_max_delay(max)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
        .map(move |d| d.min(max))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_event_logs_then_suppresses_and_counts() {
        let mut r = RateLimit::new(Duration::from_secs(3600));
        assert_eq!(r.hit(), Some(0));
        assert_eq!(r.hit(), None);
        assert_eq!(r.hit(), None);
        r.last = Some(Instant::now() - Duration::from_secs(7200));
        assert_eq!(r.hit(), Some(2));
    }

    #[test]
    fn backoff_doubles_and_never_passes_its_cap() {
        let max = Duration::from_millis(800);
        let d: Vec<Duration> = backoff(Duration::from_millis(100), max).take(12).collect();
        assert!(d[0] >= Duration::from_millis(100), "{d:?}");
        assert!(d.iter().all(|&x| x <= max), "{d:?}");
        assert!(
            d[6..].iter().all(|&x| x >= Duration::from_millis(400)),
            "{d:?}"
        );
    }
}

//! The ordered stop, within one deadline: systemd kills the service `TimeoutStopSec` (20 s in
//! the shipped unit) after asking it to stop, and whatever is not durable by then is lost to a
//! SIGKILL. So the whole stop gets [`DEADLINE`], each step what is left of it minus what the
//! steps after it need; a step that overruns is cut short with a warning and the next one runs.
//! The queue's final sync comes last but one and has its reserve: it is what keeps data.

use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

use tracing::warn;

/// The whole stop, from the signal to the last step: below the unit's `TimeoutStopSec=20s`.
pub const DEADLINE: Duration = Duration::from_secs(15);

/// A stop under way.
pub struct Stop {
    deadline: Instant,
}

impl Stop {
    /// A stop that must end within `budget` from now.
    pub fn within(budget: Duration) -> Self {
        Self {
            deadline: Instant::now() + budget,
        }
    }

    /// Runs one step with what is left of the deadline, keeping `reserve` for the steps after
    /// it; `None` when it was cut short.
    pub async fn step<F: Future>(
        &self,
        what: &str,
        reserve: Duration,
        step: F,
    ) -> Option<F::Output> {
        let left = self.left().saturating_sub(reserve);
        match tokio::time::timeout(left, step).await {
            Ok(v) => Some(v),
            Err(_) => {
                warn!("stopping: {what} did not finish within {left:?}; going on without it");
                None
            }
        }
    }

    /// What is left of the deadline.
    pub fn left(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Paused time: the deadline arithmetic is checked exactly, not against a busy machine.
    #[tokio::test(start_paused = true)]
    async fn a_step_that_overruns_is_cut_and_leaves_the_reserve() {
        let stop = Stop::within(Duration::from_millis(400));
        let t = Instant::now();
        let r = stop
            .step(
                "a stuck step",
                Duration::from_millis(300),
                std::future::pending::<()>(),
            )
            .await;
        assert!(r.is_none());
        assert_eq!(t.elapsed(), Duration::from_millis(100));
        assert_eq!(
            stop.left(),
            Duration::from_millis(300),
            "the reserve is kept"
        );
        assert_eq!(
            stop.step("a quick step", Duration::ZERO, async { 7 }).await,
            Some(7)
        );
    }
}

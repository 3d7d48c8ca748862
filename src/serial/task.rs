//! A port's life: opened, served, and reopened with capped exponential backoff when it goes
//! away (a read of 0 bytes or an I/O error, as after a USB unplug): logged once, every device
//! on it announced `offline`, never a busy loop. Bad frames are counted and logged
//! rate-limited by the frame handlers, never fatal.

use std::sync::atomic::Ordering;

use tracing::{debug, info, warn};

use super::exchange::Outcome;
use super::port::{Announced, Inbox, PortTask, Stop, REOPEN_MAX, REOPEN_MIN};
use crate::pacing::{RateLimit, LOG_EVERY};
use crate::stats::DeviceStats;

impl PortTask {
    /// Runs until shutdown, taking the devices' commands and sharing programs' exchanges from
    /// `inbox`.
    pub async fn run(self, mut inbox: Inbox) {
        let port_name = self.path.display().to_string();
        let mut refusals = RateLimit::new(LOG_EVERY);
        let mut delays = crate::pacing::backoff(REOPEN_MIN, REOPEN_MAX);
        let mut last_error: Option<String> = None;
        let mut announced = Announced::new(self.devices.len());
        loop {
            if self.shutdown.is_cancelled() {
                break;
            }
            match super::link::open(&self.path, &self.devices[0].serial).await {
                Ok(port) => {
                    let opened = std::time::Instant::now();
                    last_error = None;
                    for (m, d) in self.devices.iter().enumerate() {
                        DeviceStats::bump(&self.stats[m].opens);
                        // A polled device is online when it answers, not when its port opens.
                        if d.polls.is_empty() {
                            self.set_online(m, true, &mut announced).await;
                        }
                    }
                    info!(port = %port_name, device = %self.names(), "port open");
                    let stop = super::bus::serve(&self, port, &mut inbox, &mut announced).await;
                    // A port that opens and fails at once must not flap at the shortest delay:
                    // the backoff starts over only after the port stayed up for a while.
                    if opened.elapsed() >= REOPEN_MAX {
                        delays = crate::pacing::backoff(REOPEN_MIN, REOPEN_MAX);
                    }
                    match stop {
                        Stop::Shutdown => break,
                        Stop::Gone(why) => {
                            warn!(port = %port_name, device = %self.names(), "device offline: {why}; reopening with backoff");
                            for m in 0..self.devices.len() {
                                self.set_online(m, false, &mut announced).await;
                            }
                        }
                    }
                }
                Err(why) => {
                    if last_error.as_deref() != Some(why.as_str()) {
                        warn!(device = %self.names(), "device offline: {why}; retrying every {}s at most", REOPEN_MAX.as_secs());
                        last_error = Some(why);
                    } else {
                        debug!(device = %self.names(), "still offline");
                    }
                    for m in 0..self.devices.len() {
                        self.set_online(m, false, &mut announced).await;
                    }
                }
            }
            let delay = delays.next().unwrap_or(REOPEN_MAX);
            let wait = tokio::time::sleep(delay);
            tokio::pin!(wait);
            let stopping = loop {
                tokio::select! {
                    _ = self.shutdown.cancelled() => break true,
                    _ = &mut wait => break false,
                    Some(request) = inbox.requests.recv() => {
                        self.refuse(&request, "the device is offline", &mut refusals).await;
                    }
                    Some(exchange) = inbox.exchanges.recv() => {
                        let _ = exchange.answer.send(Outcome::Closed);
                    }
                }
            };
            if stopping {
                break;
            }
        }
        for (m, d) in self.devices.iter().enumerate() {
            self.stats[m].online.store(false, Ordering::Relaxed);
            self.publish_state(m, "offline").await;
            info!(device = %d.name, "device stopped: {}", self.stats[m].summary());
        }
    }

    /// The devices' names, for logs.
    fn names(&self) -> String {
        let names: Vec<&str> = self.devices.iter().map(|d| d.name.as_str()).collect();
        names.join(",")
    }
}

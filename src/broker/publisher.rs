//! The in-process publisher: one thread moving the gateway's messages from its bounded outbox
//! into rumqttd's link, in batches, and keeping the link's subscriptions what the downlink
//! needs (the link's sending half lives here, so subscribing does too).

use std::collections::HashSet;
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttd::local::LinkTx;
use rumqttd::protocol::{Packet, Publish};
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::error;

use super::bridge::Echoes;
use super::Downlink;
use crate::message::Message;

/// At most this many local publishes go to rumqttd's router in one event.
///
/// Why: rumqttd's in-process link queues packets in a buffer and wakes the router with one event
/// per `send`, on a channel of 1,000 events of about 800 bytes each; both grow to their
/// high-water mark and keep it. One event per message let a burst (a starved Pi catching up on
/// its serial backlog) fill that channel: +1.3 MiB resident for good (heaptrack, BENCHMARKS.md).
/// The router takes the whole buffer at each event, so a batch keeps the order.
const LINK_BATCH: usize = 32;

/// The publisher waits while the link's buffer holds this many packets the router has not
/// taken yet: bounds the buffer (a `Packet` is several hundred bytes; the buffer's capacity is
/// kept) with the same backpressure the blocking `send` gave, one step earlier.
const LINK_BACKLOG: usize = 128;

/// Waits, briefly, for rumqttd's router to take what the link's buffer holds. Gives up after
/// a few seconds: a router that is gone shows as an error of the next `send`.
fn wait_for_router(link_tx: &LinkTx) {
    if link_tx.buffer().len() < LINK_BACKLOG {
        return; // the usual case: no clock read on the hot path
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while link_tx.buffer().len() >= LINK_BACKLOG && Instant::now() < deadline {
        thread::sleep(Duration::from_micros(200));
    }
}

/// The publisher thread's state.
pub(super) struct Publisher {
    pub link_tx: LinkTx,
    pub outbox: mpsc::Receiver<Message>,
    /// Subscribes to the downlink's filters as they change; `None` when the link subscribes
    /// to everything (with a bridge).
    pub downlink: Option<Arc<dyn Downlink>>,
    /// Set when the bridge must tell our publishes from local clients'.
    pub echoes: Option<Arc<Echoes>>,
    /// Cancelled when the link fails.
    pub failed: CancellationToken,
}

impl Publisher {
    /// Runs until the outbox closes (every sender dropped) or the link fails.
    pub async fn run(mut self) {
        // Without a downlink to follow, a signal that never comes.
        let follow = self.downlink.is_some();
        let changed = self
            .downlink
            .as_ref()
            .map_or_else(|| Arc::new(Notify::new()), |d| d.changed());
        let mut subscribed = HashSet::new();
        let mut batch = Vec::with_capacity(LINK_BATCH);
        loop {
            let m = tokio::select! {
                m = self.outbox.recv() => m,
                _ = changed.notified(), if follow => {
                    if let Some(d) = &self.downlink {
                        if let Err(e) = resubscribe(&mut self.link_tx, &mut subscribed, d.filters()) {
                            error!("{e}");
                            self.failed.cancel();
                            break;
                        }
                    }
                    continue;
                }
            };
            let Some(m) = m else { break };
            // Whatever else is waiting goes in the same batch: one router event for all of it
            // (see LINK_BATCH).
            let mut next = Some(m);
            while let Some(m) = next {
                let topic = Bytes::from(m.topic);
                if let Some(e) = &self.echoes {
                    e.remember(&topic, &m.payload);
                }
                batch.push(Packet::Publish(
                    Publish::new(topic, m.payload, m.retain),
                    None,
                ));
                next = if batch.len() < LINK_BATCH {
                    self.outbox.try_recv().ok()
                } else {
                    None
                };
            }
            wait_for_router(&self.link_tx);
            // Never empty (it holds `m`); `send` of the last one wakes the router.
            let Some(last) = batch.pop() else { continue };
            self.link_tx.buffer().extend(batch.drain(..));
            if let Err(e) = self.link_tx.send(last).await {
                error!("embedded broker link closed, local publishing stopped: {e}");
                self.failed.cancel();
                break;
            }
        }
    }
}

/// Makes the link's subscriptions `wanted`: new ones first, then the old ones go (a message in
/// between may come twice, dropped as a copy by the link; never not at all).
fn resubscribe(
    link_tx: &mut LinkTx,
    subscribed: &mut HashSet<String>,
    wanted: Vec<String>,
) -> Result<(), String> {
    for filter in &wanted {
        if subscribed.contains(filter) {
            continue;
        }
        link_tx.subscribe(filter.clone()).map_err(|e| {
            format!("embedded broker link refused the subscription to {filter}: {e}")
        })?;
        subscribed.insert(filter.clone());
    }
    let stale: Vec<String> = subscribed
        .iter()
        .filter(|f| !wanted.contains(f))
        .cloned()
        .collect();
    for filter in stale {
        link_tx.unsubscribe(filter.clone()).map_err(|e| {
            format!("embedded broker link refused to unsubscribe from {filter}: {e}")
        })?;
        subscribed.remove(&filter);
    }
    Ok(())
}

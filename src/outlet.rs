//! Where the messages a device produces go: the local broker always, and, for topics the
//! uplink forwards, the store-and-forward queue — directly, never through the broker, so a busy
//! broker or a flooding local client cannot make the uplink lose a reading.

use crate::message::{Filters, Message, Outbox};
use crate::queue::thread::{Closed, QueueHandle};

/// The uplink's side of an outlet.
#[derive(Clone)]
pub struct Upstream {
    /// The queue.
    pub queue: QueueHandle,
    /// Local filters that go upstream.
    pub forward: Filters,
}

/// A device's way out; cheap to clone.
#[derive(Clone)]
pub struct Outlet {
    /// The local broker's outbox.
    pub local: Outbox,
    /// The queue, when there is an uplink.
    pub upstream: Option<Upstream>,
}

impl Outlet {
    /// Hands messages on, queue first (durability), then the local broker; waits while either
    /// is busy. Fails only when the gateway is stopping.
    pub async fn send(&self, messages: Vec<Message>) -> Result<(), Closed> {
        if let Some(up) = &self.upstream {
            let forwarded: Vec<Message> = messages
                .iter()
                .filter(|m| up.forward.matches(&m.topic))
                .cloned()
                .collect();
            if !forwarded.is_empty() {
                up.queue.append(forwarded).await?;
            }
        }
        for m in messages {
            self.local.send(m).await.map_err(|_| Closed)?;
        }
        Ok(())
    }
}

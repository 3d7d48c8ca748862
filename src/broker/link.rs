//! The receiving half of the gateway's link into rumqttd: its own thread, answering the
//! router's `Unschedule` with `ready()` (so the router's buffers for our link never grow), and
//! handing each message to the downlink and, with a bridge, to the bridge.

use std::sync::Arc;

use rumqttd::local::LinkRx;
use rumqttd::Notification;
use tokio_util::sync::CancellationToken;
use tracing::error;

use super::bridge::{Bridge, Echoes};
use super::recent::Recent;
use super::Downlink;

/// Messages remembered to drop the copies that come while the link's filters are swapped
/// (they come within a few messages of each other).
const COPIES: usize = 16;

/// The link's receiving thread.
pub(super) struct Receiver {
    pub link_rx: LinkRx,
    pub downlink: Arc<dyn Downlink>,
    /// With a bridge: it, and the gateway's own publishes to leave out.
    pub bridge: Option<(Bridge, Arc<Echoes>)>,
    /// Without a bridge the link follows the downlink's filters, and a message may come through
    /// an old and a new one while they are swapped: the same buffers both times, dropped here.
    pub copies: Option<Recent>,
    /// Cancelled when the link is gone.
    pub failed: CancellationToken,
}

impl Receiver {
    /// Runs until rumqttd drops the link.
    pub fn run(mut self) {
        loop {
            match self.link_rx.recv() {
                Ok(Some(Notification::Unschedule)) => {
                    if self.link_rx.ready().is_err() {
                        break;
                    }
                }
                Ok(Some(Notification::Forward(f))) => {
                    let (topic, payload) = (&f.publish.topic, &f.publish.payload);
                    if let Some(copies) = &mut self.copies {
                        if copies.position(topic, payload).is_some() {
                            continue;
                        }
                        copies.push(topic, payload);
                    }
                    self.downlink.dispatch(topic, payload);
                    if let Some((b, echoes)) = &self.bridge {
                        b.forward_local_client(f, echoes);
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
        error!("embedded broker dropped the gateway's link");
        self.failed.cancel();
    }
}

/// A ring for [`Receiver::copies`].
pub(super) fn copies() -> Recent {
    Recent::new(COPIES, COPIES)
}

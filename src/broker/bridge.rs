//! What local clients publish, forwarded upstream like a bridge does.
//!
//! The gateway's own messages reach the queue directly from the rules (never through the
//! broker, whose in-process link is QoS 0 and whose log drops data for a reader that falls
//! behind), so they must be left out here without sending anything twice. rumqttd cannot say
//! who published a forwarded message (3.1.1 has no "no local"; publish properties crash its
//! 3.1.1 encoder), but it hands back the very buffers it was given: the publisher remembers the
//! topic and payload buffers of its own recent publishes ([`Echoes`]), and a forward whose
//! buffers are the same allocations is the gateway's own.

use std::sync::Mutex;

use bytes::Bytes;

use super::recent::Recent;
use crate::message::{Filters, Message};

/// Where the bridge puts a local client's message for upstream (the uplink's queue); it may
/// block: it runs on the link's own thread.
pub type Sink = Box<dyn Fn(Message) + Send>;

/// Forwards local clients' messages on the `forward` filters to `sink`.
pub struct Bridge {
    /// Local filters whose messages go upstream.
    pub forward: Filters,
    /// Where they go.
    pub sink: Sink,
}

/// Most own publishes remembered; beyond it the oldest are forgotten (their echoes were lost).
const ECHOES: usize = 65_536;

/// Capacity of the ring kept after a burst has drained (steady state needs a few dozen).
const ECHOES_KEPT: usize = 1024;

/// The gateway's own recent publishes, in order.
pub(super) struct Echoes(Mutex<Recent>);

impl Default for Echoes {
    fn default() -> Self {
        Self(Mutex::new(Recent::new(ECHOES, ECHOES_KEPT)))
    }
}

impl Echoes {
    /// Remembers one of the gateway's own publishes.
    pub fn remember(&self, topic: &Bytes, payload: &Bytes) {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(topic, payload);
    }

    /// Whether the forward is one of ours; forgets it and every older one (forwards arrive in
    /// publish order, so older ones were dropped by the broker).
    fn is_own(&self, topic: &Bytes, payload: &Bytes) -> bool {
        let mut r = self.0.lock().unwrap_or_else(|e| e.into_inner());
        match r.position(topic, payload) {
            Some(pos) => {
                r.forget_through(pos);
                true
            }
            None => false,
        }
    }
}

impl Bridge {
    /// Forwards one message the link received, unless it is the gateway's own or not on a
    /// forwarded topic.
    pub(super) fn forward_local_client(&self, f: rumqttd::Forward, echoes: &Echoes) {
        if echoes.is_own(&f.publish.topic, &f.publish.payload) {
            return; // the gateway's own: already queued by the rules
        }
        let Ok(topic) = std::str::from_utf8(&f.publish.topic) else {
            return;
        };
        if !self.forward.matches(topic) {
            return;
        }
        (self.sink)(Message {
            topic: topic.to_owned(),
            payload: f.publish.payload,
            qos: 1,
            retain: f.publish.retain,
        });
    }
}

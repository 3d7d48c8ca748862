//! Downlink routing: MQTT messages on command topics — published by local clients, or brought
//! down from upstream by `uplink.subscribe` — handed to the devices whose commands listen there.
//!
//! The embedded broker's link delivers every local message to [`Routes::dispatch`] (on the
//! link's thread, so it never waits); each device has a small bounded inbox of requests and its
//! task writes them to the port one at a time, so writes to one device are serialized and never
//! interleave with each other. A device whose inbox is full (a client flooding commands faster
//! than the line takes them) loses the extra requests: counted and logged, rate-limited.
//!
//! Delivery on this path is at most once: rumqttd's in-process link is QoS 0. A sender that
//! needs to know uses the command's `reply_topic`, which answers every request it receives.
//!
//! Without a bridge the link does not subscribe to `#`: otherwise every reading the gateway
//! publishes would come back through the link to be looked at (about 15 % more CPU per
//! reading). It subscribes to [`Routes::filters`]: filters that cover the command filters and
//! Home Assistant's status topic and never overlap. Why covers and not the command filters
//! themselves: rumqttd keeps one log per filter and serves a link filter by filter, so a burst
//! on two command topics of one device (`.../on`, `.../off`) came out grouped by topic, not in
//! the order it was sent. Through filters that never overlap each message has exactly one way
//! in, and what arrives is in the broker's order. While a reload swaps the covers, a message
//! may come through an old and a new one; it is the same buffers both times, and the broker's
//! link drops the copy. [`Routes`] is the broker's [`Downlink`]: the broker asks it what to
//! subscribe and hands it messages, knowing nothing of routes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};
use tracing::warn;

use crate::broker::Downlink;
use crate::message::topic_matches;
use crate::pacing::RateLimit;
use crate::rules::command::DeviceCommand;

/// Requests a device may have waiting before more are dropped.
pub const INBOX: usize = 32;

/// One MQTT message for one of a device's commands.
#[derive(Debug)]
pub struct Request {
    /// Which of its port's devices it is for (0 on a port of one device).
    pub member: usize,
    /// Index into the device's `commands`.
    pub command: usize,
    /// The message's payload.
    pub payload: Bytes,
}

/// Which device listens on which filter.
struct Route {
    device: String,
    filter: String,
    command: usize,
    inbox: mpsc::Sender<Request>,
    member: usize,
}

/// The routing table, shared by the gateway (which changes it as devices start and stop) and
/// the broker link (which dispatches); cheap to clone.
#[derive(Clone)]
pub struct Routes {
    routes: Arc<RwLock<Vec<Route>>>,
    /// Signalled when the first route appears, so the link subscribes only when needed.
    pub wanted: Arc<Notify>,
    /// Requests dropped because a device's inbox was full.
    pub dropped: Arc<AtomicU64>,
    limit: Arc<Mutex<RateLimit>>,
    /// Home Assistant's status topic, once discovery is on.
    birth_topic: Arc<RwLock<Option<String>>>,
    /// Signalled when Home Assistant says `online` there (it restarted: announce again).
    pub births: Arc<Notify>,
    /// Set once a command or discovery exists: until then `dispatch` has nothing to do (with a
    /// bridge every local message reaches it, so this keeps it off the readings' path).
    active: Arc<AtomicBool>,
}

impl Default for Routes {
    fn default() -> Self {
        Self {
            routes: Arc::default(),
            wanted: Arc::default(),
            dropped: Arc::default(),
            limit: Arc::new(Mutex::new(RateLimit::new(Duration::from_secs(10)))),
            birth_topic: Arc::default(),
            births: Arc::default(),
            active: Arc::default(),
        }
    }
}

impl Routes {
    /// Routes the device's commands to `inbox` (replacing any old routes of the device).
    /// `member` is the device's place on its port (the port task's inbox is shared).
    pub fn register(
        &self,
        device: &str,
        member: usize,
        commands: &[DeviceCommand],
        inbox: mpsc::Sender<Request>,
    ) {
        self.remove(device);
        if commands.is_empty() {
            return;
        }
        if let Ok(mut routes) = self.routes.write() {
            for (i, c) in commands.iter().enumerate() {
                routes.push(Route {
                    device: device.to_owned(),
                    filter: c.filter.clone(),
                    command: i,
                    inbox: inbox.clone(),
                    member,
                });
            }
        }
        self.active.store(true, Ordering::Relaxed);
        self.wanted.notify_one();
    }

    /// Watches Home Assistant's status topic for its `online` (the link subscribes if needed).
    pub fn watch_births(&self, topic: &str) {
        if let Ok(mut t) = self.birth_topic.write() {
            *t = Some(topic.to_owned());
        }
        self.active.store(true, Ordering::Relaxed);
        self.wanted.notify_one();
    }

    /// Stops routing to the device (the link's covers are recomputed).
    pub fn remove(&self, device: &str) {
        if let Ok(mut routes) = self.routes.write() {
            let before = routes.len();
            routes.retain(|r| r.device != device);
            if routes.len() != before {
                self.wanted.notify_one();
            }
        }
    }

    /// The filters the broker link must subscribe to: ones that cover every command's filter,
    /// and Home Assistant's status topic once discovery is on, with no two overlapping (see the
    /// module's doc: one way in per message keeps the broker's order).
    pub fn filters(&self) -> Vec<String> {
        let mut by_device: Vec<(String, Vec<String>)> = Vec::new();
        if let Ok(routes) = self.routes.read() {
            for r in routes.iter() {
                match by_device.iter_mut().find(|(d, _)| *d == r.device) {
                    Some((_, filters)) => filters.push(r.filter.clone()),
                    None => by_device.push((r.device.clone(), vec![r.filter.clone()])),
                }
            }
        }
        let mut groups: Vec<Vec<String>> = by_device.into_iter().map(|(_, f)| f).collect();
        if let Ok(Some(t)) = self.birth_topic.read().as_deref().cloned() {
            groups.push(vec![t]);
        }
        covers(&groups)
    }

    /// Hands a local message to every command whose filter matches its topic; never blocks.
    /// Returns how many devices' inboxes took it.
    pub fn dispatch(&self, topic_bytes: &Bytes, payload: &Bytes) -> usize {
        if !self.active.load(Ordering::Relaxed) {
            return 0;
        }
        let Ok(topic) = std::str::from_utf8(topic_bytes) else {
            return 0;
        };
        let birth = self
            .birth_topic
            .read()
            .is_ok_and(|t| t.as_deref() == Some(topic));
        if birth && payload.as_ref() == b"online" {
            self.births.notify_one();
        }
        let Ok(routes) = self.routes.read() else {
            return 0;
        };
        let mut taken = 0;
        for r in routes.iter().filter(|r| topic_matches(&r.filter, topic)) {
            let request = Request {
                member: r.member,
                command: r.command,
                payload: payload.clone(),
            };
            match r.inbox.try_send(request) {
                Ok(()) => taken += 1,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    self.dropped.fetch_add(1, Ordering::Relaxed);
                    let hit = self.limit.lock().ok().and_then(|mut l| l.hit());
                    if let Some(suppressed) = hit {
                        warn!(device = %r.device, topic, suppressed, "command dropped: {INBOX} requests are already waiting for the device");
                    }
                }
                // The device is stopping; its replacement registers its own inbox.
                Err(mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        taken
    }
}

impl Downlink for Routes {
    fn filters(&self) -> Vec<String> {
        Routes::filters(self)
    }

    fn changed(&self) -> Arc<Notify> {
        Arc::clone(&self.wanted)
    }

    fn dispatch(&self, topic: &Bytes, payload: &Bytes) {
        Routes::dispatch(self, topic, payload);
    }
}

/// Filters that cover each group of filters (one group per device, whose order matters) and
/// never overlap one another: each group's common literal levels + `#` (a level with a wildcard
/// ends the common part), and of two covers where one holds the other, only the wider.
///
/// Written here, not taken from a crate: it is the gateway's own ordering rule, a few lines
/// over MQTT's level syntax.
pub fn covers(groups: &[Vec<String>]) -> Vec<String> {
    let mut prefixes: Vec<Vec<&str>> = Vec::new();
    for group in groups {
        let mut common: Option<Vec<&str>> = None;
        for filter in group {
            let literal: Vec<&str> = filter
                .split('/')
                .take_while(|l| !l.contains(['+', '#']))
                .collect();
            common = Some(match common {
                None => literal,
                Some(c) => c
                    .iter()
                    .zip(&literal)
                    .take_while(|(a, b)| a == b)
                    .map(|(a, _)| *a)
                    .collect(),
            });
        }
        if let Some(c) = common {
            prefixes.push(c);
        }
    }
    // Shortest first: a prefix is kept unless a kept one is a prefix of it (covers it).
    prefixes.sort_by_key(|p| p.len());
    let mut kept: Vec<Vec<&str>> = Vec::new();
    for p in prefixes {
        if !kept.iter().any(|k| p.starts_with(k)) {
            kept.push(p);
        }
    }
    let mut out: Vec<String> = kept
        .iter()
        .map(|p| {
            if p.is_empty() {
                "#".to_owned()
            } else {
                format!("{}/#", p.join("/"))
            }
        })
        .collect();
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn groups(g: &[&[&str]]) -> Vec<Vec<String>> {
        g.iter()
            .map(|f| f.iter().map(|s| s.to_string()).collect())
            .collect()
    }

    #[test]
    fn covers_never_overlap_and_cover_every_filter() {
        let cases: &[(&[&[&str]], &[&str])] = &[
            (&[&["cmd/gw/relay/set"]], &["cmd/gw/relay/set/#"]),
            (
                &[&["cmd/gw/relay/on", "cmd/gw/relay/off"]],
                &["cmd/gw/relay/#"],
            ),
            (
                &[
                    &["cmd/gw/a/set"],
                    &["cmd/gw/b/set"],
                    &["homeassistant/status"],
                ],
                &["cmd/gw/a/set/#", "cmd/gw/b/set/#", "homeassistant/status/#"],
            ),
            // One device's filter inside another's cover: the wider one takes both.
            (
                &[&["cmd/gw/relay/on", "cmd/gw/relay/off"], &["cmd/gw/#"]],
                &["cmd/gw/#"],
            ),
            (&[&["cmd/+/relay/set"]], &["cmd/#"]),
            (&[&["a/x", "b/y"]], &["#"]),
            (&[&["+/set"], &["cmd/x"]], &["#"]),
        ];
        for (input, want) in cases {
            let got = covers(&groups(input));
            assert_eq!(got, *want, "{input:?}");
            for f in input.iter().flat_map(|g| g.iter()) {
                let probe = f.replace('+', "p").replace('#', "h");
                assert!(
                    got.iter().any(|c| topic_matches(c, &probe)),
                    "{f} not covered by {got:?}"
                );
            }
        }
    }
}

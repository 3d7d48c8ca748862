//! The broker's tables that local clients can grow, bounded: retained messages (by count and
//! payload bytes), topic names and subscription filters, and persistent sessions.
//!
//! rumqttd keeps all three in memory without a bound and never gives the memory back (200,000
//! retained messages of 1 KiB: 9.6 → 323 MiB; every distinct topic ~280 bytes once someone
//! subscribes to `#`; a log of up to `broker.window` per distinct filter; every persistent
//! session until the process ends). Every client packet
//! passes through the gatekeeper, so it keeps the books here, before rumqttd sees the packet:
//! - a retained message that does not fit is delivered live but not kept (its retain flag is
//!   cleared); an earlier retained message on that topic stays as it was;
//! - a PUBLISH to a new topic when the table of topic names is full, or a SUBSCRIBE to a new
//!   filter when the table of filters is full, is refused like one the access rules deny;
//! - a persistent session (clean session 0) for a new client id when the sessions are full is
//!   refused with CONNACK "server unavailable".
//!
//! Each refusal is counted and logged at most once per [`LOG_EVERY`] per kind. The gateway's
//! own messages go through its in-process link and are not counted here: their topics come
//! from the config.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use tracing::warn;

use crate::listener::more;
use crate::pacing::{RateLimit, LOG_EVERY};

/// The bounds, from `broker:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bounds {
    /// Retained messages kept.
    pub retained: usize,
    /// Their payload bytes.
    pub retained_bytes: usize,
    /// Distinct topic names published by local clients.
    pub names: usize,
    /// Distinct subscription filters of local clients (rumqttd keeps a log of up to
    /// `broker.window` per filter).
    pub filters: usize,
    /// Persistent sessions (clean session 0), by client id.
    pub sessions: usize,
}

/// What happens to a local client's PUBLISH.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// On its way as sent.
    Pass,
    /// On its way with the retain flag cleared: the retained table is full.
    NotRetained,
    /// Refused: the table of topic names is full.
    Refused,
}

/// Refusals so far, by kind (for the stats and Prometheus).
#[derive(Debug, Default)]
pub struct Refusals {
    /// Retained messages delivered but not kept.
    pub retained: AtomicU64,
    /// Publishes and subscriptions refused for a new topic name or filter.
    pub names: AtomicU64,
    /// Persistent sessions refused.
    pub sessions: AtomicU64,
}

/// The books.
#[derive(Debug)]
pub struct Tables {
    bounds: Bounds,
    books: Mutex<Books>,
    /// Refusals so far.
    pub refused: Refusals,
    logs: Mutex<[RateLimit; 3]>,
}

#[derive(Debug, Default)]
struct Books {
    /// Topic → payload bytes of its retained message.
    retained: HashMap<String, usize>,
    retained_bytes: usize,
    names: HashSet<String>,
    filters: HashSet<String>,
    sessions: HashSet<String>,
}

impl Tables {
    /// Empty tables with `bounds`.
    pub fn new(bounds: Bounds) -> Tables {
        Tables {
            bounds,
            books: Mutex::new(Books::default()),
            refused: Refusals::default(),
            logs: Mutex::new([
                RateLimit::new(LOG_EVERY),
                RateLimit::new(LOG_EVERY),
                RateLimit::new(LOG_EVERY),
            ]),
        }
    }

    /// Books a PUBLISH to `topic` (`retain`, with `payload_len` bytes).
    pub fn publish(&self, topic: &str, retain: bool, payload_len: usize) -> Verdict {
        let Ok(mut b) = self.books.lock() else {
            return Verdict::Refused;
        };
        if !b.names.contains(topic) {
            if b.names.len() >= self.bounds.names {
                drop(b);
                self.names_full(&format!("publish to `{topic}`"));
                return Verdict::Refused;
            }
            b.names.insert(topic.to_owned());
        }
        if !retain {
            return Verdict::Pass;
        }
        let old = b.retained.get(topic).copied();
        if payload_len == 0 {
            // An empty retained message clears the topic's.
            if let Some(old) = old {
                b.retained.remove(topic);
                b.retained_bytes -= old;
            }
            return Verdict::Pass;
        }
        let count = b.retained.len() + usize::from(old.is_none());
        let bytes = b.retained_bytes - old.unwrap_or(0) + payload_len;
        if count > self.bounds.retained || bytes > self.bounds.retained_bytes {
            drop(b);
            self.refused.retained.fetch_add(1, Ordering::Relaxed);
            self.log(0, || {
                format!(
                    "the broker keeps at most {} retained messages of {} bytes in all \
                     (broker.max_retained, broker.max_retained_bytes): a retained message on \
                     `{topic}` was delivered but not kept",
                    self.bounds.retained, self.bounds.retained_bytes
                )
            });
            return Verdict::NotRetained;
        }
        b.retained.insert(topic.to_owned(), payload_len);
        b.retained_bytes = bytes;
        Verdict::Pass
    }

    /// Books a subscription to `filter`; false when the table of filters is full.
    pub fn subscribe(&self, filter: &str) -> bool {
        let Ok(mut b) = self.books.lock() else {
            return false;
        };
        if b.filters.contains(filter) {
            return true;
        }
        if b.filters.len() >= self.bounds.filters {
            drop(b);
            self.refused.names.fetch_add(1, Ordering::Relaxed);
            self.log(1, || {
                format!(
                    "the broker keeps at most {} subscription filters (broker.max_filters): a \
                     subscription to `{filter}` was refused",
                    self.bounds.filters
                )
            });
            return false;
        }
        b.filters.insert(filter.to_owned());
        true
    }

    /// Books a persistent session for `client_id`; false when the sessions are full.
    pub fn session(&self, client_id: &str) -> bool {
        let Ok(mut b) = self.books.lock() else {
            return false;
        };
        if b.sessions.contains(client_id) {
            return true;
        }
        if b.sessions.len() >= self.bounds.sessions {
            drop(b);
            self.refused.sessions.fetch_add(1, Ordering::Relaxed);
            self.log(2, || {
                format!(
                    "the broker keeps at most {} persistent sessions (broker.max_sessions): \
                     client `{client_id}` was refused; connect with a clean session, or reuse \
                     a client id",
                    self.bounds.sessions
                )
            });
            return false;
        }
        b.sessions.insert(client_id.to_owned());
        true
    }

    /// Forgets `client_id`'s persistent session: it connected with a clean session, which ends
    /// the old one.
    pub fn forget_session(&self, client_id: &str) {
        if let Ok(mut b) = self.books.lock() {
            b.sessions.remove(client_id);
        }
    }

    /// Retained messages and their payload bytes booked now.
    pub fn retained(&self) -> (usize, usize) {
        self.books
            .lock()
            .map(|b| (b.retained.len(), b.retained_bytes))
            .unwrap_or_default()
    }

    fn names_full(&self, what: &str) {
        self.refused.names.fetch_add(1, Ordering::Relaxed);
        self.log(1, || {
            format!(
                "the broker keeps at most {} topic names (broker.max_topics): {what} refused",
                self.bounds.names
            )
        });
    }

    fn log(&self, which: usize, line: impl FnOnce() -> String) {
        let n = self.logs.lock().ok().and_then(|mut l| l[which].hit());
        if let Some(n) = n {
            warn!("local broker: {}{}", line(), more(n));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tables() -> Tables {
        Tables::new(Bounds {
            retained: 2,
            retained_bytes: 100,
            names: 3,
            filters: 1,
            sessions: 1,
        })
    }

    #[test]
    fn retained_messages_are_kept_up_to_their_count_and_bytes() {
        let t = tables();
        assert_eq!(t.publish("a", true, 40), Verdict::Pass);
        assert_eq!(t.publish("b", true, 40), Verdict::Pass);
        assert_eq!(t.publish("c", true, 1), Verdict::NotRetained, "count");
        assert_eq!(t.publish("a", true, 70), Verdict::NotRetained, "bytes");
        assert_eq!(
            t.publish("a", true, 60),
            Verdict::Pass,
            "a replacement that fits"
        );
        assert_eq!(t.retained(), (2, 100));
        assert_eq!(t.publish("a", true, 0), Verdict::Pass, "cleared");
        assert_eq!(t.retained(), (1, 40));
        assert_eq!(t.publish("c", true, 1), Verdict::Pass);
        assert_eq!(t.publish("c", false, 1000), Verdict::Pass, "not retained");
        assert_eq!(t.refused.retained.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn new_names_are_refused_when_the_table_is_full_old_ones_still_work() {
        let t = tables();
        for topic in ["a", "b", "c"] {
            assert_eq!(t.publish(topic, false, 1), Verdict::Pass);
        }
        assert!(t.subscribe("x/#"));
        assert_eq!(t.publish("d", false, 1), Verdict::Refused);
        assert!(!t.subscribe("y/#"));
        assert_eq!(t.publish("a", false, 1), Verdict::Pass);
        assert!(t.subscribe("x/#"));
        assert_eq!(t.refused.names.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn persistent_sessions_are_bounded_by_client_id() {
        let t = tables();
        assert!(t.session("one"));
        assert!(t.session("one"), "the same session again");
        assert!(!t.session("two"));
        t.forget_session("one");
        assert!(t.session("two"));
    }
}

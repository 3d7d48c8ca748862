//! A ring of recent messages' buffers, compared by address: rumqttd hands back the very
//! buffers it was given (or took from one client), so "the same allocation" means "the same
//! message", which no comparison of contents could tell. Used for the bridge's echo check (our
//! own publishes coming back) and the link's copy check (one message through two filters).

use std::collections::VecDeque;

use bytes::Bytes;

/// Recent (topic, payload) buffers, oldest first; each is held, so its address cannot be
/// reused by another message while it is remembered.
pub(super) struct Recent {
    ring: VecDeque<(Bytes, Bytes)>,
    cap: usize,
    /// Capacity kept after a burst drained (see [`Recent::forget_through`]).
    kept: usize,
}

impl Recent {
    /// Remembers at most `cap` messages; after a burst, shrinks back to `kept` slots.
    pub fn new(cap: usize, kept: usize) -> Self {
        Self {
            ring: VecDeque::new(),
            cap,
            kept,
        }
    }

    /// Remembers a message (forgetting the oldest when full).
    pub fn push(&mut self, topic: &Bytes, payload: &Bytes) {
        if self.ring.len() >= self.cap {
            self.ring.pop_front();
        }
        self.ring.push_back((topic.clone(), payload.clone()));
    }

    /// Where the message with these very buffers is, if remembered.
    pub fn position(&self, topic: &Bytes, payload: &Bytes) -> Option<usize> {
        let same = |(t, p): &(Bytes, Bytes)| {
            t.as_ptr() == topic.as_ptr()
                && t.len() == topic.len()
                && p.as_ptr() == payload.as_ptr()
                && p.len() == payload.len()
        };
        self.ring.iter().position(same)
    }

    /// Forgets the message at `pos` and every older one. A burst (a starved Pi catching up)
    /// leaves a large, mostly empty ring: its memory is given back once it has drained, or it
    /// would stay resident for good.
    pub fn forget_through(&mut self, pos: usize) {
        self.ring.drain(..=pos);
        if self.ring.capacity() > self.kept && self.ring.len() < self.kept / 4 {
            self.ring.shrink_to(self.kept);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_buffers_are_found_equal_contents_are_not() {
        let mut r = Recent::new(2, 2);
        // Owned buffers: two `Bytes::from("a/b")` would share one static address.
        let b = |s: &str| Bytes::copy_from_slice(s.as_bytes());
        let (t, p) = (b("a/b"), b("1"));
        r.push(&t, &p);
        assert_eq!(r.position(&t, &p.clone()), Some(0));
        assert_eq!(r.position(&b("a/b"), &b("1")), None);
        let (t2, p2) = (b("c"), b("2"));
        r.push(&t2, &p2);
        r.push(&t2, &b("3"));
        assert_eq!(
            r.position(&t, &p),
            None,
            "the oldest is forgotten when full"
        );
        r.forget_through(0);
        assert_eq!(r.position(&t2, &p2), None);
    }
}

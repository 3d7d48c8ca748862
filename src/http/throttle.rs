//! Wrong tokens, per peer address: a listener that asks for a token answers a peer that keeps
//! guessing with `429 Too Many Requests` for a lockout that doubles each time, so a token is
//! guessed at a few tries an hour instead of thousands a second.
//!
//! Rules: [`FAILURES`] wrong tokens within [`WINDOW`] lock the peer out for [`FIRST_LOCKOUT`],
//! doubling with each lockout up to [`MAX_LOCKOUT`]. While locked out every request of the
//! peer that needs the token is refused unread, the right token too (otherwise the lockout
//! would still answer whether a guess was right). A peer that has been quiet for
//! [`MAX_LOCKOUT`] is forgotten. An IPv6 peer is its /64 (one host is given a whole /64).
//!
//! Bound: at most [`MAX_PEERS`] addresses are tracked (about 100 KiB); when the table is full
//! of peers still remembered, every other address shares one more entry, so a guesser with
//! many addresses locks out newcomers for a while, never the peers already known, and never
//! grows the table. Wrong tokens are logged at most once per [`LOG_EVERY`] with how many were
//! not, never with the token tried, and counted (`serial2mqtt_http_wrong_tokens_total`,
//! `serial2mqtt_http_throttled_total`).

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tracing::warn;

use crate::listener::more;
use crate::pacing::{RateLimit, LOG_EVERY};

/// Wrong tokens a peer may send within [`WINDOW`].
pub const FAILURES: u32 = 5;
/// The window the failures are counted in.
pub const WINDOW: Duration = Duration::from_secs(60);
/// The first lockout; each next one is twice as long.
pub const FIRST_LOCKOUT: Duration = Duration::from_secs(60);
/// The longest lockout, and how long a quiet peer is remembered.
pub const MAX_LOCKOUT: Duration = Duration::from_secs(3600);
/// Addresses tracked at most.
pub const MAX_PEERS: usize = 1024;

/// One listener's record of wrong tokens.
#[derive(Debug)]
pub struct Throttle {
    listener: &'static str,
    table: Mutex<Table>,
    log: Mutex<RateLimit>,
    lockout_log: Mutex<RateLimit>,
}

#[derive(Debug, Default)]
struct Table {
    peers: HashMap<IpAddr, Peer>,
    /// Every address that found the table full.
    others: Option<Peer>,
}

#[derive(Debug, Clone, Copy)]
struct Peer {
    window_start: Instant,
    failures: u32,
    /// Lockouts so far: the next lasts [`FIRST_LOCKOUT`] × 2^strikes.
    strikes: u32,
    locked_until: Option<Instant>,
    /// The last wrong token, or the end of the last lockout.
    last: Instant,
}

impl Peer {
    fn new(now: Instant) -> Peer {
        Peer {
            window_start: now,
            failures: 0,
            strikes: 0,
            locked_until: None,
            last: now,
        }
    }

    fn forgotten(&self, now: Instant) -> bool {
        let last = self.locked_until.map_or(self.last, |u| u.max(self.last));
        now.saturating_duration_since(last) >= MAX_LOCKOUT
    }
}

/// The key a peer is tracked by: IPv4 as is (also when mapped into IPv6), IPv6 by its /64.
fn key(peer: IpAddr) -> IpAddr {
    match peer.to_canonical() {
        IpAddr::V6(v6) => {
            let s = v6.segments();
            IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// How long a lockout lasts, the `strikes`-th (from 1).
fn lockout(strikes: u32) -> Duration {
    let doublings = strikes.saturating_sub(1).min(16);
    FIRST_LOCKOUT
        .saturating_mul(1 << doublings)
        .min(MAX_LOCKOUT)
}

impl Throttle {
    /// An empty record for the listener `listener` (its name in log lines and metrics).
    pub fn new(listener: &'static str) -> Throttle {
        Throttle {
            listener,
            table: Mutex::new(Table::default()),
            log: Mutex::new(RateLimit::new(LOG_EVERY)),
            lockout_log: Mutex::new(RateLimit::new(LOG_EVERY)),
        }
    }

    /// How long `peer` is still locked out, if it is (counted as a throttled request).
    pub fn locked(&self, peer: IpAddr) -> Option<Duration> {
        let wait = self.locked_at(peer, Instant::now());
        if wait.is_some() {
            metrics::counter!("serial2mqtt_http_throttled_total", "listener" => self.listener)
                .increment(1);
        }
        wait
    }

    /// Records a wrong token from `peer` (logged at most once per [`LOG_EVERY`]).
    pub fn failed(&self, peer: IpAddr) {
        metrics::counter!("serial2mqtt_http_wrong_tokens_total", "listener" => self.listener)
            .increment(1);
        if let Some(n) = self.log.lock().ok().and_then(|mut r| r.hit()) {
            warn!(
                listener = self.listener,
                %peer,
                "{}: a wrong token from {peer}{}",
                self.listener,
                more(n)
            );
        }
        if let Some(locked) = self.failed_at(peer, Instant::now()) {
            if let Some(n) = self.lockout_log.lock().ok().and_then(|mut r| r.hit()) {
                warn!(
                    listener = self.listener,
                    %peer,
                    "{}: {peer} sent {FAILURES} wrong tokens within {} s: refused for {} s{}",
                    self.listener,
                    WINDOW.as_secs(),
                    locked.as_secs(),
                    more(n)
                );
            }
        }
    }

    /// Forgets `peer`'s wrong tokens: it has just shown the right one.
    pub fn passed(&self, peer: IpAddr) {
        if let Ok(mut t) = self.table.lock() {
            t.peers.remove(&key(peer));
        }
    }

    /// Addresses tracked now (at most [`MAX_PEERS`]).
    pub fn tracked(&self) -> usize {
        self.table.lock().map(|t| t.peers.len()).unwrap_or(0)
    }

    fn locked_at(&self, peer: IpAddr, now: Instant) -> Option<Duration> {
        let t = self.table.lock().ok()?;
        let entry = match t.peers.get(&key(peer)) {
            Some(p) => Some(p),
            None if t.peers.len() >= MAX_PEERS => t.others.as_ref(),
            None => None,
        }?;
        let until = entry.locked_until?;
        (until > now).then(|| until - now)
    }

    /// Records a wrong token at `now`; the lockout it starts, if it starts one.
    fn failed_at(&self, peer: IpAddr, now: Instant) -> Option<Duration> {
        let mut t = self.table.lock().ok()?;
        let k = key(peer);
        if !t.peers.contains_key(&k) && t.peers.len() >= MAX_PEERS {
            t.peers.retain(|_, p| !p.forgotten(now));
        }
        let entry = if t.peers.contains_key(&k) || t.peers.len() < MAX_PEERS {
            t.peers.entry(k).or_insert_with(|| Peer::new(now))
        } else {
            t.others.get_or_insert_with(|| Peer::new(now))
        };
        if entry.forgotten(now) {
            *entry = Peer::new(now);
        }
        if entry.locked_until.is_some_and(|u| u > now) {
            return None;
        }
        if now.saturating_duration_since(entry.window_start) > WINDOW {
            entry.window_start = now;
            entry.failures = 0;
        }
        entry.failures += 1;
        entry.last = now;
        if entry.failures < FAILURES {
            return None;
        }
        entry.failures = 0;
        entry.strikes += 1;
        let locked = lockout(entry.strikes);
        entry.locked_until = Some(now + locked);
        entry.window_start = now + locked;
        Some(locked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn five_wrong_tokens_in_a_minute_lock_the_peer_out_and_each_lockout_doubles() {
        let t = Throttle::new("test");
        let a = ip("192.0.2.7");
        let mut now = Instant::now();
        for _ in 0..FAILURES - 1 {
            assert_eq!(t.failed_at(a, now), None);
            now += Duration::from_secs(5);
        }
        assert_eq!(t.locked_at(a, now), None);
        assert_eq!(t.failed_at(a, now), Some(FIRST_LOCKOUT));
        assert_eq!(t.locked_at(a, now), Some(FIRST_LOCKOUT));
        assert_eq!(t.locked_at(ip("192.0.2.8"), now), None, "others go on");
        // Wrong tokens while locked out do not extend it; after it, five more lock it out
        // twice as long.
        assert_eq!(t.failed_at(a, now + Duration::from_secs(1)), None);
        now += FIRST_LOCKOUT;
        assert_eq!(t.locked_at(a, now), None);
        for _ in 0..FAILURES - 1 {
            assert_eq!(t.failed_at(a, now), None);
        }
        assert_eq!(t.failed_at(a, now), Some(FIRST_LOCKOUT * 2));
        assert_eq!(lockout(3), FIRST_LOCKOUT * 4);
        assert_eq!(lockout(40), MAX_LOCKOUT);
    }

    #[test]
    fn wrong_tokens_spread_over_more_than_the_window_do_not_lock_out() {
        let t = Throttle::new("test");
        let a = ip("192.0.2.7");
        let mut now = Instant::now();
        for _ in 0..20 {
            assert_eq!(t.failed_at(a, now), None);
            now += WINDOW / 3;
        }
    }

    #[test]
    fn the_right_token_forgets_the_wrong_ones_and_a_quiet_peer_is_forgotten() {
        let t = Throttle::new("test");
        let a = ip("192.0.2.7");
        let now = Instant::now();
        for _ in 0..FAILURES - 1 {
            t.failed_at(a, now);
        }
        t.passed(a);
        assert_eq!(t.failed_at(a, now), None, "counting starts again");
        for _ in 0..FAILURES - 1 {
            t.failed_at(a, now);
        }
        assert!(t.locked_at(a, now).is_some());
        // Long after: a clean slate, the first lockout again.
        let later = now + FIRST_LOCKOUT + MAX_LOCKOUT;
        for _ in 0..FAILURES - 1 {
            assert_eq!(t.failed_at(a, later), None);
        }
        assert_eq!(t.failed_at(a, later), Some(FIRST_LOCKOUT));
    }

    #[test]
    fn an_ipv6_host_is_its_64_and_a_mapped_ipv4_is_the_ipv4() {
        let t = Throttle::new("test");
        let now = Instant::now();
        for i in 0..FAILURES {
            t.failed_at(ip(&format!("2001:db8:1:2::{}", i + 1)), now);
        }
        assert!(t.locked_at(ip("2001:db8:1:2:ffff::9"), now).is_some());
        assert!(t.locked_at(ip("2001:db8:1:3::1"), now).is_none());
        for _ in 0..FAILURES {
            t.failed_at(ip("::ffff:192.0.2.9"), now);
        }
        assert!(t.locked_at(ip("192.0.2.9"), now).is_some());
    }

    #[test]
    fn the_table_never_holds_more_than_max_peers_and_the_rest_share_one_entry() {
        let t = Throttle::new("test");
        let now = Instant::now();
        for i in 0..MAX_PEERS as u32 {
            let peer = IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000u32 + i));
            assert_eq!(t.failed_at(peer, now), None);
        }
        assert_eq!(t.tracked(), MAX_PEERS);
        // Newcomers share one entry: five of them lock out every newcomer, not the known.
        for i in 0..FAILURES {
            t.failed_at(
                IpAddr::V4(std::net::Ipv4Addr::from(0x0b00_0000u32 + i)),
                now,
            );
        }
        assert_eq!(t.tracked(), MAX_PEERS);
        assert!(t.locked_at(ip("11.1.2.3"), now).is_some());
        assert!(t.locked_at(ip("10.0.0.1"), now).is_none());
        // Once the known ones are forgotten, a newcomer gets an entry of its own again.
        let later = now + MAX_LOCKOUT + FIRST_LOCKOUT;
        assert_eq!(t.failed_at(ip("11.1.2.3"), later), None);
        assert_eq!(t.tracked(), 1);
    }
}

//! Which request goes on a port's line next: the bus scheduler's decisions, without I/O.
//!
//! Every device on a port has its polls, each due on its own interval. The line carries one
//! transaction at a time (the port task enforces that); when it is free, the request due
//! earliest goes next, ties taken in turn from the device after the one served last, so a
//! device with many or slow polls cannot starve the others. A poll that could not run on time
//! runs as soon as the line is free, once: missed turns are skipped, never piled up, and a
//! device never has two requests outstanding. A device that stopped answering (`offline_after`
//! misses in a row) is asked once every `offline_poll` (default 10 s), counted from one request
//! to the next (its timeouts do not stretch the period), so a dead meter costs the bus a
//! timeout now and then rather than on every turn. The first answer puts it back on its own
//! intervals at once, counted from the request it answered. Commands do not pass through here:
//! the port task sends them before any poll.
//!
//! Programs sharing the line (the Modbus TCP server's clients) queue their requests beside the
//! polls. Between clients, [`Turns`] takes one request from each in turn, so one greedy client
//! cannot hold the line against the others. Between the clients and the gateway's own polls,
//! [`Share`] gives the clients their configured part of the line's time whenever both wait
//! (and all of it when no poll is due, and none when no client waits): neither side can starve
//! the other.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::config::Device;

/// The polling state of one device on the port.
#[derive(Debug)]
struct Member {
    /// When each of its polls is due next.
    due: Vec<Instant>,
    /// Their intervals.
    every: Vec<Duration>,
    /// Unanswered polls in a row.
    misses: u32,
    /// Misses that make it offline.
    offline_after: u32,
    /// How often it is asked while offline.
    offline_poll: Duration,
    /// When its last request went out.
    sent: Option<Instant>,
}

/// The polls of one port's devices and who is offline.
#[derive(Debug)]
pub struct Schedule {
    members: Vec<Member>,
    /// The device served last (ties go to the next one).
    last: usize,
}

/// What the port task should do about a device after a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Availability {
    /// Nothing changed.
    Same,
    /// It answered after being offline (or for the first time): announce `online`.
    Online,
    /// It just reached `offline_after` misses: announce `offline`.
    Offline,
}

impl Schedule {
    /// Every poll due at `now` (they go out in turn as the line allows).
    pub fn new(devices: &[&Device], now: Instant) -> Self {
        let members = devices
            .iter()
            .map(|d| Member {
                due: vec![now; d.polls.len()],
                every: d.polls.iter().map(|p| p.every).collect(),
                misses: 0,
                offline_after: d.offline_after,
                offline_poll: d.offline_poll,
                sent: None,
            })
            .collect();
        Self {
            members,
            last: devices.len().saturating_sub(1),
        }
    }

    /// The poll to send now as `(device, poll)`, or when the next one is due (None: no polls).
    pub fn next(&self, now: Instant) -> Result<(usize, usize), Option<Instant>> {
        let n = self.members.len();
        let mut best: Option<(Instant, usize, usize, usize)> = None;
        for (m, member) in self.members.iter().enumerate() {
            // Distance in turn order from the device after the last served: breaks ties.
            let turn = (m + n - (self.last + 1) % n.max(1)) % n.max(1);
            for (p, due) in member.due.iter().enumerate() {
                let better = match best {
                    None => true,
                    Some((d, t, _, _)) => (*due, turn) < (d, t),
                };
                if better {
                    best = Some((*due, turn, m, p));
                }
            }
        }
        match best {
            Some((due, _, m, p)) if due <= now => Ok((m, p)),
            Some((due, ..)) => Err(Some(due)),
            None => Err(None),
        }
    }

    /// Records that poll `p` of device `m` went out at `now`: its next turn is one interval
    /// after the one it was due for, or the first turn after `now` on that grid (no catching up).
    pub fn started(&mut self, m: usize, p: usize, now: Instant) {
        self.last = m;
        let Some(member) = self.members.get_mut(m) else {
            return;
        };
        let offline = member.misses >= member.offline_after;
        member.sent = Some(now);
        if let (Some(due), Some(every)) = (member.due.get_mut(p), member.every.get(p)) {
            *due += *every;
            if *due <= now {
                // Turns missed while the line was busy are skipped, keeping the poll's phase.
                let behind = (now - *due).as_nanos() / every.as_nanos().max(1) + 1;
                *due += every.saturating_mul(u32::try_from(behind).unwrap_or(u32::MAX));
            }
            if offline {
                *due = (*due).max(now + member.offline_poll);
            }
        }
    }

    /// Device `m` answered a poll. One that was offline is back on its own intervals at once:
    /// each poll's next turn is one interval after the request that was answered, not the
    /// offline turn planned when it went out.
    pub fn answered(&mut self, m: usize, first_answer: bool) -> Availability {
        let Some(member) = self.members.get_mut(m) else {
            return Availability::Same;
        };
        let was_offline = member.misses >= member.offline_after;
        member.misses = 0;
        if let (true, Some(sent)) = (was_offline, member.sent) {
            for (due, every) in member.due.iter_mut().zip(&member.every) {
                *due = (*due).min(sent + *every);
            }
        }
        if was_offline || first_answer {
            Availability::Online
        } else {
            Availability::Same
        }
    }

    /// Device `m` left a poll unanswered (all its retries timed out) at `now`. Once that makes
    /// it offline, none of its polls comes before `offline_poll` after the unanswered request
    /// went out, including the turns already planned at the online rate.
    pub fn missed(&mut self, m: usize, now: Instant) -> Availability {
        let Some(member) = self.members.get_mut(m) else {
            return Availability::Same;
        };
        member.misses = member.misses.saturating_add(1);
        if member.misses >= member.offline_after {
            let earliest = member.sent.unwrap_or(now) + member.offline_poll;
            for due in &mut member.due {
                *due = (*due).max(earliest);
            }
        }
        if member.misses == member.offline_after {
            Availability::Offline
        } else {
            Availability::Same
        }
    }

    /// Whether device `m` is offline by its misses.
    pub fn is_offline(&self, m: usize) -> bool {
        self.members
            .get(m)
            .is_some_and(|member| member.misses >= member.offline_after)
    }
}

/// Requests of several clients, served one from each in turn.
#[derive(Debug)]
pub struct Turns<T> {
    /// Each client with requests waiting, in the order their turns come.
    queues: VecDeque<(u64, VecDeque<T>)>,
}

impl<T> Default for Turns<T> {
    fn default() -> Self {
        Self {
            queues: VecDeque::new(),
        }
    }
}

impl<T> Turns<T> {
    /// Queues `item` of `client` behind its own earlier ones.
    pub fn push(&mut self, client: u64, item: T) {
        match self.queues.iter_mut().find(|(c, _)| *c == client) {
            Some((_, q)) => q.push_back(item),
            None => self.queues.push_back((client, VecDeque::from([item]))),
        }
    }

    /// The next request: the oldest of the client whose turn it is (who then goes last).
    pub fn pop(&mut self) -> Option<T> {
        let (client, mut q) = self.queues.pop_front()?;
        let item = q.pop_front();
        if !q.is_empty() {
            self.queues.push_back((client, q));
        }
        item
    }

    /// Whether no request waits.
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// Takes out every request for which `gone` holds (expired, or for a device that cannot
    /// answer now), in queue order.
    pub fn drain_where(&mut self, mut gone: impl FnMut(&T) -> bool) -> Vec<T> {
        let mut out = Vec::new();
        for (_, q) in self.queues.iter_mut() {
            let mut kept = VecDeque::with_capacity(q.len());
            for item in q.drain(..) {
                if gone(&item) {
                    out.push(item);
                } else {
                    kept.push_back(item);
                }
            }
            *q = kept;
        }
        self.queues.retain(|(_, q)| !q.is_empty());
        out
    }
}

/// How much of the line's recent time went to clients and to the gateway's own polls, so that
/// when both wait the side behind its share goes next.
#[derive(Debug, Clone)]
pub struct Share {
    /// The clients' part, 0..=1.
    clients: f64,
    own: Duration,
    theirs: Duration,
}

/// The time over which the shares are kept: older use counts for half, then a quarter, ...
const SHARE_WINDOW: Duration = Duration::from_secs(10);

impl Share {
    /// Clients get `clients` (0..=1) of the line's time when the gateway's polls wait too.
    pub fn new(clients: f64) -> Self {
        Self {
            clients: clients.clamp(0.0, 1.0),
            own: Duration::ZERO,
            theirs: Duration::ZERO,
        }
    }

    /// When a poll is due and a client waits: whether the client goes first.
    pub fn clients_first(&self) -> bool {
        let total = (self.own + self.theirs).as_secs_f64();
        if total == 0.0 {
            return self.clients > 0.0;
        }
        self.theirs.as_secs_f64() / total < self.clients
    }

    /// A transaction of a client (`client`) or of the gateway held the line for `busy`.
    pub fn used(&mut self, client: bool, busy: Duration) {
        if client {
            self.theirs += busy;
        } else {
            self.own += busy;
        }
        if self.own + self.theirs > SHARE_WINDOW {
            self.own /= 2;
            self.theirs /= 2;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clients_take_turns_and_get_their_share_when_polls_wait_too() {
        let mut t = Turns::default();
        for i in 0..5 {
            t.push(1, ("greedy", i));
        }
        t.push(2, ("modest", 0));
        t.push(3, ("modest", 0));
        let order: Vec<_> = std::iter::from_fn(|| t.pop()).take(4).collect();
        assert_eq!(
            order,
            [("greedy", 0), ("modest", 0), ("modest", 0), ("greedy", 1)]
        );
        let gone = t.drain_where(|(_, i)| *i == 3);
        assert_eq!(gone, [("greedy", 3)]);
        assert_eq!(t.pop(), Some(("greedy", 2)));
        assert_eq!(t.pop(), Some(("greedy", 4)));
        assert!(t.is_empty());

        // Both always waiting: the line's time splits as configured, whatever each costs.
        for part in [0.25, 0.5, 0.8] {
            let mut s = Share::new(part);
            let (mut theirs, mut own) = (Duration::ZERO, Duration::ZERO);
            for _ in 0..2000 {
                if s.clients_first() {
                    let busy = Duration::from_millis(30); // a client's long read
                    s.used(true, busy);
                    theirs += busy;
                } else {
                    let busy = Duration::from_millis(12);
                    s.used(false, busy);
                    own += busy;
                }
            }
            let got = theirs.as_secs_f64() / (theirs + own).as_secs_f64();
            assert!((got - part).abs() < 0.03, "share {part}: clients got {got}");
        }
        assert!(!Share::new(0.0).clients_first());
    }

    fn device(everies: &[u64]) -> Device {
        let mut yaml = String::from(
            "devices:\n  - name: d\n    port: /dev/ttyUSB-test\n    rules: [r]\n    poll:\n",
        );
        for (i, e) in everies.iter().enumerate() {
            yaml.push_str(&format!("      - {{name: p{i}, write: x, every: {e}ms}}\n"));
        }
        yaml.push_str("rules:\n  r: {publish: [{topic: t}]}\n");
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("c.yaml");
        std::fs::write(&f, yaml).unwrap();
        crate::config::load(&f).unwrap().devices.remove(0)
    }

    #[test]
    fn ties_go_round_the_devices_and_late_polls_are_not_piled_up() {
        let (a, b, c) = (device(&[100]), device(&[100, 100]), device(&[100]));
        let t0 = Instant::now();
        let mut s = Schedule::new(&[&a, &b, &c], t0);
        let mut order = Vec::new();
        let mut now = t0;
        for _ in 0..4 {
            let (m, p) = s.next(now).unwrap();
            s.started(m, p, now);
            order.push((m, p));
            now += Duration::from_millis(1);
        }
        // One turn each before the second poll of device 1.
        assert_eq!(order, [(0, 0), (1, 0), (2, 0), (1, 1)]);
        assert_eq!(s.next(now), Err(Some(t0 + Duration::from_millis(100))));
        // The line was busy for a second: each poll runs once, not ten times.
        let late = t0 + Duration::from_secs(1);
        let mut ran = 0;
        while let Ok((m, p)) = s.next(late) {
            s.started(m, p, late);
            ran += 1;
        }
        assert_eq!(ran, 4);
    }

    #[test]
    fn a_device_goes_offline_after_its_misses_and_is_asked_less() {
        let d = device(&[100]);
        let t0 = Instant::now();
        let mut s = Schedule::new(&[&d], t0);
        assert_eq!(s.answered(0, true), Availability::Online);
        assert_eq!(s.missed(0, t0), Availability::Same);
        assert_eq!(s.missed(0, t0), Availability::Same);
        // The turn planned at the online rate (t0 + 100 ms) moves out with the third miss.
        assert_eq!(s.missed(0, t0), Availability::Offline);
        assert_eq!(s.next(t0), Err(Some(t0 + Duration::from_secs(10))));
        assert_eq!(s.missed(0, t0), Availability::Same, "announced once");
        assert!(s.is_offline(0));
        // Asked at its offline turn: the next one is offline_poll later.
        let turn = t0 + Duration::from_secs(10);
        assert_eq!(s.next(turn), Ok((0, 0)));
        s.started(0, 0, turn);
        assert_eq!(s.next(turn), Err(Some(turn + Duration::from_secs(10))));
        assert_eq!(s.answered(0, false), Availability::Online);
        assert_eq!(s.answered(0, false), Availability::Same);
    }

    /// A dead device is asked every `offline_poll` from request to request, whatever its
    /// timeout (it was `offline_poll` plus the timeout), and one that answers again is read at
    /// its own interval right away (it waited one more `offline_poll`).
    #[test]
    fn an_offline_device_is_probed_on_its_period_and_back_on_its_interval_at_once() {
        let d = device(&[2000]);
        let (off, timeout) = (d.offline_poll, Duration::from_millis(400));
        let t0 = Instant::now();
        let mut s = Schedule::new(&[&d], t0);
        let mut now = t0;
        // Three unanswered requests make it offline.
        for _ in 0..d.offline_after {
            let at = match s.next(now) {
                Ok(_) => now,
                Err(Some(due)) => due,
                Err(None) => panic!("no poll"),
            };
            s.started(0, 0, at);
            now = at + timeout;
            s.missed(0, now);
        }
        assert!(s.is_offline(0));
        // Offline: each probe is offline_poll after the one before, not after its timeout.
        let mut probes = Vec::new();
        for _ in 0..3 {
            let Err(Some(due)) = s.next(now) else {
                panic!("a probe is planned")
            };
            s.started(0, 0, due);
            probes.push(due);
            now = due + timeout;
            s.missed(0, now);
        }
        assert_eq!(probes[1] - probes[0], off);
        assert_eq!(probes[2] - probes[1], off);
        // The next probe is answered: the poll after it is 2 s later, not offline_poll.
        let Err(Some(due)) = s.next(now) else {
            panic!("a probe is planned")
        };
        s.started(0, 0, due);
        assert_eq!(s.answered(0, false), Availability::Online);
        assert_eq!(s.next(due), Err(Some(due + Duration::from_millis(2000))));
    }
}

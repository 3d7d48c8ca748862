//! What every listener we own (the broker's gate, the dashboard, the metrics endpoint) shares so
//! that no peer on the LAN can starve the gateway: connection caps in total and per peer
//! address (and the HTTP listeners' [`Limits`], caps with timeouts), an accept loop that backs off when the process is out of descriptors, and the
//! descriptor budget that keeps a reserve for the serial ports and the queue.
//!
//! Why caps per peer *and* in total: a total cap alone lets one peer take every slot (and so
//! lock out everybody else); a per-peer cap alone lets a few peers exhaust descriptors. The
//! loopback address may be exempt from the per-peer cap (every local client shares it, and a
//! LAN peer cannot come from it); it still counts in the total.
//!
//! Why a descriptor budget: the process has one `RLIMIT_NOFILE` for the broker, the dashboard,
//! the serial ports and the queue. At start the soft limit is raised to the hard one
//! ([`raise_fd_limit`]); the listeners' caps then must leave [`FD_RESERVE`] descriptors free,
//! and [`Budget`] scales them down (with a warning that names the unit's `LimitNOFILE`) when
//! they would not.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tracing::{info, warn};

use crate::pacing::{RateLimit, LOG_EVERY};

/// Descriptors kept free of every listener's connections: the serial ports (reopened after a
/// replug), the queue's segment files and directory, the uplink's socket, the journal, the
/// runtime's own. Far more than a gateway with a dozen devices needs.
pub const FD_RESERVE: u64 = 128;

/// How many connections a listener takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caps {
    /// Connections at once, from everybody.
    pub total: usize,
    /// Connections at once from one address (loopback exempt when `exempt_loopback`).
    pub per_peer: usize,
    /// Whether connections from a loopback address skip the per-peer cap.
    pub exempt_loopback: bool,
}

/// What one listener allows: its caps and its timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections at once, from everybody.
    pub max_connections: usize,
    /// Connections at once from one address (loopback exempt).
    pub max_connections_per_peer: usize,
    /// Time for a request's headers (and for a TLS handshake) to arrive.
    pub header_timeout: Duration,
    /// Time a connection may move no byte either way before it is closed.
    pub idle_timeout: Duration,
}

impl Limits {
    /// The dashboard's defaults: a few browsers and scripts, fit for a 512 MiB Pi.
    pub const WEB: Limits = Limits {
        max_connections: 64,
        max_connections_per_peer: 16,
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
    };
    /// The metrics endpoint's (a Prometheus server or two scrape it).
    pub const METRICS: Limits = Limits {
        max_connections: 16,
        max_connections_per_peer: 4,
        header_timeout: Duration::from_secs(10),
        idle_timeout: Duration::from_secs(60),
    };

    /// The caps as [`Admission`] counts them.
    pub fn caps(&self) -> Caps {
        Caps {
            total: self.max_connections,
            per_peer: self.max_connections_per_peer,
            exempt_loopback: true,
        }
    }

    /// These limits with the caps scaled by `factor` (the descriptor budget's).
    pub fn scaled(self, factor: f64) -> Limits {
        Limits {
            max_connections: scaled(self.max_connections, factor),
            max_connections_per_peer: scaled(self.max_connections_per_peer, factor),
            ..self
        }
    }
}

/// Why a connection was not admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The listener holds [`Caps::total`] connections.
    Total(usize),
    /// This peer holds [`Caps::per_peer`] connections.
    Peer(usize),
}

impl std::fmt::Display for Full {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Full::Total(n) => write!(f, "all {n} connections are taken"),
            Full::Peer(n) => write!(f, "this address already holds {n} connections"),
        }
    }
}

/// Counts one listener's connections against its [`Caps`]; a [`Ticket`] holds a place.
#[derive(Debug)]
pub struct Admission {
    /// The listener's name in log lines (`dashboard`, `metrics`, `local broker`).
    name: &'static str,
    caps: Caps,
    held: Mutex<Held>,
    /// Connections refused because the listener or the peer was full.
    pub refused: AtomicU64,
    log: Mutex<RateLimit>,
}

#[derive(Debug, Default)]
struct Held {
    total: usize,
    /// At most `caps.total` entries: an address is removed when its last connection ends.
    by_peer: HashMap<IpAddr, usize>,
}

/// A place in an [`Admission`], given back when dropped.
#[derive(Debug)]
pub struct Ticket {
    admission: Arc<Admission>,
    peer: IpAddr,
}

impl Admission {
    /// A listener called `name` (for log lines) with `caps`.
    pub fn new(name: &'static str, caps: Caps) -> Arc<Admission> {
        Arc::new(Admission {
            name,
            caps,
            held: Mutex::new(Held::default()),
            refused: AtomicU64::new(0),
            log: Mutex::new(RateLimit::new(LOG_EVERY)),
        })
    }

    /// The caps in force.
    pub fn caps(&self) -> Caps {
        self.caps
    }

    /// Connections held now.
    pub fn held(&self) -> usize {
        self.held.lock().map(|h| h.total).unwrap_or(0)
    }

    /// A place for a connection from `peer`, or why there is none (counted, and logged at most
    /// once per [`LOG_EVERY`]).
    pub fn admit(self: &Arc<Self>, peer: IpAddr) -> Result<Ticket, Full> {
        let verdict = match self.held.lock() {
            Ok(mut held) => {
                let mine = held.by_peer.get(&peer).copied().unwrap_or(0);
                let exempt = self.caps.exempt_loopback && peer.is_loopback();
                if held.total >= self.caps.total {
                    Err(Full::Total(self.caps.total))
                } else if !exempt && mine >= self.caps.per_peer {
                    Err(Full::Peer(self.caps.per_peer))
                } else {
                    held.total += 1;
                    held.by_peer.insert(peer, mine + 1);
                    Ok(())
                }
            }
            // A poisoned lock means a panic while counting: refuse rather than guess.
            Err(_) => Err(Full::Total(self.caps.total)),
        };
        match verdict {
            Ok(()) => Ok(Ticket {
                admission: Arc::clone(self),
                peer,
            }),
            Err(full) => {
                self.refused.fetch_add(1, Ordering::Relaxed);
                if let Some(n) = self.log.lock().ok().and_then(|mut r| r.hit()) {
                    warn!(
                        listener = self.name,
                        %peer,
                        "{}: refused a connection from {peer}: {full}{}",
                        self.name,
                        more(n)
                    );
                }
                Err(full)
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        if let Ok(mut held) = self.admission.held.lock() {
            held.total = held.total.saturating_sub(1);
            if let Some(n) = held.by_peer.get_mut(&self.peer) {
                *n -= 1;
                if *n == 0 {
                    held.by_peer.remove(&self.peer);
                }
            }
        }
    }
}

/// The end of a rate-limited line: how many were not logged since the last one.
pub fn more(n: u64) -> String {
    if n > 0 {
        format!(" ({n} more since the last line)")
    } else {
        String::new()
    }
}

/// Accepts the next connection. Errors (out of descriptors, mostly) are logged at most once per
/// [`LOG_EVERY`] and retried after a pause that doubles up to a second, so a listener at the
/// descriptor limit neither spins nor floods the journal.
pub async fn accept(
    listener: &TcpListener,
    name: &str,
    log: &mut RateLimit,
) -> (TcpStream, SocketAddr) {
    let mut pause = Duration::from_millis(10);
    loop {
        match listener.accept().await {
            Ok(c) => return c,
            Err(e) => {
                if let Some(n) = log.hit() {
                    let hint = if is_out_of_descriptors(&e) {
                        " (out of file descriptors: see LimitNOFILE in the unit)"
                    } else {
                        ""
                    };
                    warn!("{name}: cannot accept a connection: {e}{hint}{}", more(n));
                }
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
        }
    }
}

fn is_out_of_descriptors(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(code) if code == rustix::io::Errno::MFILE.raw_os_error() || code == rustix::io::Errno::NFILE.raw_os_error())
}

/// Raises the soft descriptor limit to the hard one (the unit sets `LimitNOFILE`; a shell's
/// soft limit is often 1,024 under a far higher hard one) and returns the limit in force.
///
/// The limits are read from `/proc/self/limits`: rustix's `getrlimit` cannot report an error
/// (a seccomp filter that refused the call would leave it with no answer), `setrlimit` can.
pub fn raise_fd_limit() -> u64 {
    let Some((soft, hard)) = std::fs::read_to_string("/proc/self/limits")
        .ok()
        .as_deref()
        .and_then(open_files_limits)
    else {
        warn!("cannot read the descriptor limit (/proc/self/limits); assuming 1024");
        return 1024;
    };
    let (Some(soft), hard) = (soft, hard) else {
        return u64::MAX;
    };
    let target = hard.unwrap_or(u64::MAX).min(1 << 20);
    if target <= soft {
        return soft;
    }
    let raised = rustix::process::Rlimit {
        current: Some(target),
        maximum: hard,
    };
    match rustix::process::setrlimit(rustix::process::Resource::Nofile, raised) {
        Ok(()) => {
            info!(from = soft, to = target, "raised the descriptor limit");
            target
        }
        Err(e) => {
            warn!("cannot raise the descriptor limit from {soft} to {target}: {e}");
            soft
        }
    }
}

/// The soft and hard "Max open files" of a `/proc/PID/limits` text (None: unlimited).
fn open_files_limits(text: &str) -> Option<(Option<u64>, Option<u64>)> {
    let line = text.lines().find(|l| l.starts_with("Max open files"))?;
    let mut words = line["Max open files".len()..].split_whitespace();
    let value = |w: &str| match w {
        "unlimited" => Some(None),
        n => n.parse().ok().map(Some),
    };
    Some((value(words.next()?)?, value(words.next()?)?))
}

/// Shares the descriptors above [`FD_RESERVE`] among the listeners' caps.
#[derive(Debug)]
pub struct Budget {
    limit: u64,
    /// Descriptors each listener may hold at most: its cap times descriptors per connection.
    wanted: Vec<(&'static str, u64)>,
}

impl Budget {
    /// A budget under the descriptor limit `limit`.
    pub fn new(limit: u64) -> Budget {
        Budget {
            limit,
            wanted: Vec::new(),
        }
    }

    /// Asks for `connections` places of `fds_each` descriptors for the listener `name`.
    pub fn want(&mut self, name: &'static str, connections: usize, fds_each: u64) {
        self.wanted.push((name, connections as u64 * fds_each));
    }

    /// The factor (at most 1) to scale every cap by so that all of them fit with the reserve;
    /// below 1 it warns, naming the limit that would let them fit.
    pub fn scale(&self) -> f64 {
        let wanted: u64 = self.wanted.iter().map(|(_, n)| n).sum();
        let room = self.limit.saturating_sub(FD_RESERVE);
        if wanted <= room {
            return 1.0;
        }
        let scale = room as f64 / wanted as f64;
        let parts: Vec<String> = self
            .wanted
            .iter()
            .map(|(name, n)| format!("{name} {n}"))
            .collect();
        warn!(
            "the descriptor limit {} cannot hold the listeners' connections ({}) and the {} kept \
             for ports and the queue: their caps are scaled to {:.0} %; raise LimitNOFILE to {} \
             or lower the caps",
            self.limit,
            parts.join(", "),
            FD_RESERVE,
            scale * 100.0,
            wanted + FD_RESERVE
        );
        scale
    }
}

/// `cap` scaled by `factor`, never below 1.
pub fn scaled(cap: usize, factor: f64) -> usize {
    if factor >= 1.0 {
        cap
    } else {
        ((cap as f64 * factor) as usize).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_peer_gets_its_share_and_the_total_holds_for_everybody() {
        let a = Admission::new(
            "test",
            Caps {
                total: 3,
                per_peer: 2,
                exempt_loopback: true,
            },
        );
        let t1 = a.admit(ip("192.0.2.1")).unwrap();
        let _t2 = a.admit(ip("192.0.2.1")).unwrap();
        assert_eq!(a.admit(ip("192.0.2.1")).unwrap_err(), Full::Peer(2));
        let _t3 = a.admit(ip("192.0.2.2")).unwrap();
        assert_eq!(a.admit(ip("192.0.2.3")).unwrap_err(), Full::Total(3));
        assert_eq!(a.admit(ip("127.0.0.1")).unwrap_err(), Full::Total(3));
        drop(t1);
        assert_eq!(a.held(), 2);
        let _t4 = a.admit(ip("192.0.2.3")).unwrap();
        assert_eq!(a.refused.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn loopback_is_exempt_from_the_per_peer_cap_only_when_asked() {
        let caps = Caps {
            total: 10,
            per_peer: 1,
            exempt_loopback: true,
        };
        let a = Admission::new("test", caps);
        let held: Vec<Ticket> = (0..5).map(|_| a.admit(ip("127.0.0.1")).unwrap()).collect();
        assert_eq!(held.len(), 5);
        let b = Admission::new(
            "test",
            Caps {
                exempt_loopback: false,
                ..caps
            },
        );
        let _t = b.admit(ip("::1")).unwrap();
        assert_eq!(b.admit(ip("::1")).unwrap_err(), Full::Peer(1));
    }

    #[test]
    fn the_open_files_limits_are_read_from_proc() {
        let text = "Limit                     Soft Limit           Hard Limit           Units\n\
                    Max processes             95338                95338                processes\n\
                    Max open files            1024                 524288               files\n";
        assert_eq!(open_files_limits(text), Some((Some(1024), Some(524288))));
        let unlimited = "Max open files            unlimited            unlimited            files";
        assert_eq!(open_files_limits(unlimited), Some((None, None)));
        assert!(raise_fd_limit() >= 1024);
    }

    #[test]
    fn the_budget_scales_caps_to_leave_the_reserve() {
        let mut b = Budget::new(1024);
        b.want("gate", 300, 3);
        b.want("web", 100, 1);
        let f = b.scale();
        assert!(f < 1.0);
        let used = scaled(300, f) as u64 * 3 + scaled(100, f) as u64;
        assert!(used + FD_RESERVE <= 1024, "{used}");
        let mut roomy = Budget::new(65_536);
        roomy.want("gate", 300, 3);
        assert_eq!(roomy.scale(), 1.0);
    }
}

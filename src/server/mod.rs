//! The Modbus TCP server: other programs (evcc, Home Assistant's Modbus integration, a vendor's
//! setup tool) reach the Modbus units on the gateway's buses through it, and the bus stays one
//! master's. A request for a unit goes into that unit's bus as an
//! [`Exchange`](crate::serial::exchange::Exchange), between the gateway's own polls, one
//! transaction on the line at a time; the answer goes back with the client's transaction id.
//!
//! - [`request`] reads a request strictly (what cannot be forwarded safely is answered with an
//!   exception and never reaches the line); [`access`] says who may read and write what.
//! - [`connection`] serves one client: requests may be pipelined, at most `max_queued` at once
//!   (more: exception 6); a read the unit's `cache:` covers is answered from the gateway's
//!   latest reading with no bus time; a unit that does not answer gets exception 0x0B within
//!   `max_wait` plus the device's timeout.
//! - Bounds: connections in total and per address ([`crate::listener::Admission`]); requests per
//!   connection (`max_queued`) and per bus ([`crate::serial::exchange::INBOX`]); a connection
//!   idle for `idle_timeout`, one whose frame cannot be cut (a bad MBAP header), or one that
//!   does not take its answers within [`WRITE_TIMEOUT`] is closed. Every refusal is counted
//!   ([`Counters`]) and logged at most once per [`crate::pacing::LOG_EVERY`] per kind.

pub mod access;
pub mod connection;
pub mod request;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::config::model::ServerSettings;
use crate::listener::{Admission, Caps};
use crate::pacing::{RateLimit, LOG_EVERY};
use crate::serial::exchange::Registry;

/// Longest a client may take to accept an answer (a client that never reads is closed).
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest the rest of a frame may take once its header has arrived.
pub const FRAME_TIMEOUT: Duration = Duration::from_secs(5);

/// The server's counters as the stats message carries them.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ServerSummary {
    /// Requests answered from the line.
    pub forwarded: u64,
    /// Reads answered from the gateway's latest reading.
    pub cached: u64,
    /// Requests refused by the grants.
    pub denied: u64,
    /// Requests that could not be read.
    pub malformed: u64,
    /// Requests for a unit not served.
    pub unknown_unit: u64,
    /// Requests over a limit or past `max_wait`.
    pub busy: u64,
    /// Requests the unit did not answer.
    pub unanswered: u64,
    /// Connections closed (bad frames, idle or slow clients).
    pub closed: u64,
    /// Connections refused by the caps.
    pub refused_connections: u64,
    /// Connections open now.
    pub connections: u64,
}

/// What the server did, for the log, the stats and tests.
#[derive(Debug, Default)]
pub struct Counters {
    /// Requests answered from the line.
    pub forwarded: AtomicU64,
    /// Reads answered from the gateway's latest reading.
    pub cached: AtomicU64,
    /// Requests refused by the grants (exception 1 or 2).
    pub denied: AtomicU64,
    /// Requests that could not be read (exception 1 or 3).
    pub malformed: AtomicU64,
    /// Requests for a unit the server does not serve (exception 0x0A).
    pub unknown_unit: AtomicU64,
    /// Requests over a client's or a bus's limit, or that waited past `max_wait` (exception 6).
    pub busy: AtomicU64,
    /// Requests the unit did not answer (exception 0x0B).
    pub unanswered: AtomicU64,
    /// Connections closed for a frame that cannot be cut, an idle or a slow client.
    pub closed: AtomicU64,
}

impl Counters {
    /// Adds one to `counter`.
    pub fn bump(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// What every connection shares.
pub struct Shared {
    /// The checked settings.
    pub settings: ServerSettings,
    /// Where the devices' buses are.
    pub registry: Registry,
    /// What was done.
    pub counters: Counters,
    /// One rate limit per kind of refusal, for the log.
    pub logs: Mutex<[RateLimit; 6]>,
    /// The connection caps.
    pub admission: Arc<Admission>,
}

impl Shared {
    /// The counters now, for the stats message.
    pub fn summary(&self) -> ServerSummary {
        let c = &self.counters;
        let n = |c: &AtomicU64| c.load(Ordering::Relaxed);
        ServerSummary {
            forwarded: n(&c.forwarded),
            cached: n(&c.cached),
            denied: n(&c.denied),
            malformed: n(&c.malformed),
            unknown_unit: n(&c.unknown_unit),
            busy: n(&c.busy),
            unanswered: n(&c.unanswered),
            closed: n(&c.closed),
            refused_connections: n(&self.admission.refused),
            connections: self.admission.held() as u64,
        }
    }
}

/// A bound listener, not yet serving.
pub struct Bound {
    listener: TcpListener,
    shared: Arc<Shared>,
}

/// Binds the listener (so a taken port stops the start with a clear error).
pub async fn bind(settings: &ServerSettings, registry: Registry) -> Result<Bound, std::io::Error> {
    let listener = TcpListener::bind(settings.listen).await.map_err(|e| {
        std::io::Error::new(
            e.kind(),
            format!("modbus_server: cannot listen on {}: {e}", settings.listen),
        )
    })?;
    Ok(Bound {
        listener,
        shared: Arc::new(Shared {
            settings: settings.clone(),
            registry,
            counters: Counters::default(),
            logs: Mutex::new(std::array::from_fn(|_| RateLimit::new(LOG_EVERY))),
            admission: Admission::new(
                "modbus server",
                Caps {
                    total: settings.max_connections,
                    per_peer: settings.max_connections_per_peer,
                    exempt_loopback: true,
                },
            ),
        }),
    })
}

impl Bound {
    /// The address it listens on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Serves clients until `shutdown`; then waits for the connections to end.
    pub fn serve(self, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            let s = &self.shared.settings;
            info!(listen = %s.listen, units = s.units.len(), "Modbus TCP server listening");
            let admission = Arc::clone(&self.shared.admission);
            let tracker = TaskTracker::new();
            let mut log = RateLimit::new(LOG_EVERY);
            let mut next_id = 0u64;
            loop {
                let (stream, peer) = tokio::select! {
                    _ = shutdown.cancelled() => break,
                    c = crate::listener::accept(&self.listener, "modbus server", &mut log) => c,
                };
                let Ok(ticket) = admission.admit(peer.ip()) else {
                    continue; // counted and logged by the admission; dropping closes it
                };
                next_id += 1;
                let shared = Arc::clone(&self.shared);
                let stop = shutdown.clone();
                let id = next_id;
                tracker.spawn(async move {
                    let _ticket = ticket;
                    connection::serve(stream, peer, id, &shared, stop).await;
                });
            }
            tracker.close();
            tracker.wait().await;
            let m = self.shared.summary();
            info!(
                "Modbus TCP server stopped: {} forwarded, {} cached, {} denied, {} malformed, {} unknown unit, {} busy, {} unanswered, {} connections closed, {} refused",
                m.forwarded, m.cached, m.denied, m.malformed, m.unknown_unit, m.busy, m.unanswered, m.closed, m.refused_connections
            );
        })
    }

    /// The counters, shared with the serving task.
    pub fn shared(&self) -> Arc<Shared> {
        Arc::clone(&self.shared)
    }
}

/// The kinds of refusal, each logged at its own rate.
#[derive(Debug, Clone, Copy)]
pub enum Refusal {
    /// Not granted.
    Denied = 0,
    /// Cannot be read.
    Malformed = 1,
    /// No such unit.
    UnknownUnit = 2,
    /// Over a limit, or waited too long.
    Busy = 3,
    /// The unit did not answer.
    Unanswered = 4,
    /// The connection was closed.
    Closed = 5,
}

impl Shared {
    /// Counts a refusal and logs it, rate-limited per kind.
    pub fn refused(&self, kind: Refusal, peer: SocketAddr, why: std::fmt::Arguments<'_>) {
        let c = &self.counters;
        Counters::bump(match kind {
            Refusal::Denied => &c.denied,
            Refusal::Malformed => &c.malformed,
            Refusal::UnknownUnit => &c.unknown_unit,
            Refusal::Busy => &c.busy,
            Refusal::Unanswered => &c.unanswered,
            Refusal::Closed => &c.closed,
        });
        let hit = self
            .logs
            .lock()
            .ok()
            .and_then(|mut l| l[kind as usize].hit());
        if let Some(n) = hit {
            warn!(client = %peer, "modbus server: {why}{}", crate::listener::more(n));
        }
    }
}

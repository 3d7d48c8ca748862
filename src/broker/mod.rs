//! The embedded MQTT broker (rumqttd) that local clients use, and the in-process link the
//! gateway publishes through.
//!
//! rumqttd's API is blocking: `Broker::start` never returns and `LinkTx` blocks on a bounded
//! channel. So the broker runs on its own thread, and a dedicated publisher thread moves messages
//! from the gateway's bounded outbox into the link. When the router is busy the publisher blocks,
//! the outbox fills and device tasks wait: backpressure, not loss. Another thread drains the
//! link's receive side, answering `Unschedule` with `ready()`, so the router's buffers for our
//! link never grow.
//!
//! The files: [`settings`] (rumqttd's configuration), `port` (the listen port and who holds
//! it), `publisher` (our messages into the link), `link` (the link's receiving half, to the
//! [`Downlink`] and the `bridge`), `recent` (buffers compared by address), [`passwords`] (the
//! users file's hashes), [`acl`] (access rules), [`gate`] (the local clients' listener, always in
//! front of rumqttd: it bounds connections and the tables clients grow, checks logins, rules,
//! client certificates and wills) and `access` (the logins and rules in force, swapped on
//! reload). rumqttd itself listens only on a loopback port that only the gate can log in to.
//!
//! Delivery QoS: rumqttd's in-process links publish at QoS 0 (its `Publish::new`), and rumqttd
//! forwards every message at the QoS of each subscriber's subscription. So a local subscriber
//! gets the QoS it subscribed with; the rule's `retain` flag is honoured here, and the rule's
//! `qos` matters on the uplink. Nothing is lost on this hop: it is a blocking in-process channel.

mod access;
pub mod acl;
mod bridge;
pub mod gate;
mod link;
pub mod passwords;
mod port;
mod publisher;
mod recent;
pub mod settings;

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::{mpsc, Notify};
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use crate::config::schema;
use crate::listener::Caps;
use crate::message::{Message, Outbox};
pub use access::AccessControl;
pub use bridge::{Bridge, Sink};

/// Messages that may wait between the devices and the broker link.
pub const OUTBOX_CAPACITY: usize = 1024;
/// Time the broker gets at shutdown to deliver the last messages (device `offline` states).
pub const LINGER: Duration = Duration::from_millis(200);

/// What the link hands local messages to (the devices' commands), and what it subscribes for
/// them; the downlink implements it, so the broker needs no knowledge of routes.
pub trait Downlink: Send + Sync {
    /// The filters the link must subscribe to now; they must never overlap (one way in per
    /// message keeps the broker's order).
    fn filters(&self) -> Vec<String>;
    /// Signalled whenever [`Downlink::filters`] may have changed.
    fn changed(&self) -> Arc<Notify>;
    /// One message from the link, on its thread: must never block.
    fn dispatch(&self, topic: &Bytes, payload: &Bytes);
}

/// Why the broker could not start.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// The listen address is taken or not ours.
    #[error("cannot listen on {addr}: {source}. {holder}: stop it or change `broker.listen`")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: io::Error,
        /// Who holds the port, as far as /proc tells.
        holder: String,
    },
    /// The broker did not accept connections in time.
    #[error("the embedded broker did not start listening on {0} within 5 s")]
    NotListening(SocketAddr),
    /// rumqttd refused the in-process link.
    #[error("cannot attach to the embedded broker: {0}")]
    Link(String),
    /// A thread could not be spawned.
    #[error("cannot start a broker thread: {0}")]
    Thread(#[from] io::Error),
}

/// A running embedded broker; dropping it does not stop the broker (it lives as long as the
/// process), but joining the publisher flushes what devices handed over.
pub struct LocalBroker {
    publisher: Option<thread::JoinHandle<()>>,
    /// Logins and access rules, for reloads.
    pub access: AccessControl,
    /// The bounded tables local clients grow (their refusals, for the stats).
    pub tables: Arc<gate::tables::Tables>,
    /// The local clients' connections (refused ones, for the stats).
    pub admission: Arc<crate::listener::Admission>,
}

/// What the local broker refused and holds, for Prometheus.
#[derive(Debug, Clone)]
pub struct Bounds {
    /// Retained messages, names and sessions.
    pub tables: Arc<gate::tables::Tables>,
    /// Connections.
    pub admission: Arc<crate::listener::Admission>,
}

/// Starts the broker behind its gatekeeper (taking at most `caps` local clients), waits until
/// it accepts TCP connections, and returns the outbox that feeds
/// it together with the handle to flush it on shutdown. If the broker or its link dies later,
/// `failed` is cancelled so the daemon exits (and its supervisor restarts it) instead of running
/// on without a broker.
pub fn start(
    settings: &schema::Broker,
    caps: Caps,
    failed: CancellationToken,
    bridge: Option<Bridge>,
    downlink: Arc<dyn Downlink>,
) -> Result<(LocalBroker, Outbox), BrokerError> {
    let access = access::Access::new(settings);
    let control = AccessControl::new(Arc::clone(&access));
    let (gate, listener) = start_gate(settings, Arc::clone(&access), caps)?;
    let mut broker = rumqttd::Broker::new(settings::rumqttd_config(
        settings,
        gate.inner,
        gate.secret.clone(),
    ));
    // rumqttd lets a new connection with the same client id take over an existing one, our
    // link included: an id no local client will guess keeps the gateway's link its own.
    let link_id = format!("serial2mqtt-internal-{:016x}", fastrand::u64(..));
    let (mut link_tx, link_rx) = broker
        .link(&link_id)
        .map_err(|e| BrokerError::Link(e.to_string()))?;

    let broker_failed = failed.clone();
    let gate_failed = failed.clone();
    let nice = settings.nice;
    thread::Builder::new()
        .name("broker".into())
        .spawn(move || {
            // rumqttd made its router thread in `Broker::new` (above, at our priority: it also
            // carries the gateway's own publishes); the threads `start` makes serve local
            // clients and inherit this thread's lower priority.
            lower_priority(nice);
            match broker.start() {
                Ok(()) => error!("embedded broker stopped"),
                Err(e) => error!("embedded broker stopped: {e}"),
            }
            broker_failed.cancel();
        })?;

    // With a bridge: one subscription to everything, filtered here (overlapping `forward`
    // filters would otherwise deliver a message once per filter). Without one, the downlink's
    // filters, never overlapping (so each message has one way in and keeps the broker's order),
    // swapped as they change on reload, so the gateway's own readings do not all come back
    // through the link.
    let all = bridge.is_some();
    if all {
        link_tx
            .subscribe("#")
            .map_err(|e| BrokerError::Link(e.to_string()))?;
    }
    let echoes = all.then(|| Arc::new(bridge::Echoes::default()));
    let receiver = link::Receiver {
        link_rx,
        downlink: Arc::clone(&downlink),
        bridge: bridge.zip(echoes.clone()),
        copies: (!all).then(link::copies),
        failed: failed.clone(),
    };
    thread::Builder::new()
        .name("broker-acks".into())
        .spawn(move || receiver.run())?;

    let (tx, rx) = mpsc::channel::<Message>(OUTBOX_CAPACITY);
    let handle = tokio::runtime::Handle::current();
    let publisher = publisher::Publisher {
        link_tx,
        outbox: rx,
        downlink: (!all).then_some(downlink),
        echoes,
        failed,
    };
    // `LinkTx::send` is an async fn that blocks on a channel: run it on this thread only.
    let publisher = thread::Builder::new()
        .name("broker-publish".into())
        .spawn(move || handle.block_on(publisher.run()))?;

    wait_listening(gate.inner)?;
    let gate = Arc::new(gate);
    let tables = Arc::clone(&gate.tables);
    let admission = Arc::clone(&gate.admission);
    thread::Builder::new()
        .name("broker-gate".into())
        .spawn(move || {
            lower_priority(nice);
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match runtime.and_then(|rt| {
                rt.block_on(async {
                    let listener = tokio::net::TcpListener::from_std(listener)?;
                    gate.run(listener).await;
                    Ok::<(), io::Error>(())
                })
            }) {
                Ok(()) => error!("local broker listener stopped"),
                Err(e) => error!("local broker listener stopped: {e}"),
            }
            gate_failed.cancel();
        })?;
    Ok((
        LocalBroker {
            publisher: Some(publisher),
            access: control,
            tables,
            admission,
        },
        tx,
    ))
}

/// Binds the local clients' listener for the gatekeeper and picks rumqttd's loopback port
/// behind it (a free one, found by binding port 0).
fn start_gate(
    settings: &schema::Broker,
    access: Arc<access::Access>,
    caps: Caps,
) -> Result<(gate::Gate, std::net::TcpListener), BrokerError> {
    let listener = port::bind(settings.listen)?;
    listener.set_nonblocking(true)?;
    let inner = port::bind(SocketAddr::from((Ipv4Addr::LOCALHOST, 0)))?.local_addr()?;
    let secret = gate::new_secret().map_err(BrokerError::Link)?;
    Ok((
        gate::Gate::new(settings, access, inner, secret, caps),
        listener,
    ))
}

/// Lowers the calling thread's CPU priority by `steps` nice steps (capped at 19); threads it
/// creates inherit it. On Linux the nice value belongs to the thread, not the process.
///
/// Why: on a Pi's one to four cores a local client flooding the broker would otherwise take
/// the CPU the serial path and the uplink need (`cargo bench --bench abuse`). A thread may
/// always lower its own priority; only a seccomp filter (a unit without `setpriority`) stops it.
fn lower_priority(steps: u8) {
    if steps == 0 {
        return;
    }
    let result = rustix::process::getpriority_process(None).and_then(|now| {
        let target = (now + i32::from(steps)).min(19);
        rustix::process::setpriority_process(None, target).map(|()| target)
    });
    match result {
        Ok(n) => debug!(nice = n, "local clients served at lower CPU priority"),
        Err(e) => warn!(
            "cannot lower the CPU priority of the threads serving local clients ({e}): a \
             flooding local client competes with the readings for CPU"
        ),
    }
}

/// The address a local client would connect to for a listen address (0.0.0.0 → 127.0.0.1).
pub fn connect_addr(listen: SocketAddr) -> SocketAddr {
    match listen {
        SocketAddr::V4(a) if a.ip().is_unspecified() => (Ipv4Addr::LOCALHOST, a.port()).into(),
        SocketAddr::V6(a) if a.ip().is_unspecified() => (Ipv6Addr::LOCALHOST, a.port()).into(),
        other => other,
    }
}

fn wait_listening(listen: SocketAddr) -> Result<(), BrokerError> {
    let addr = connect_addr(listen);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
            return Ok(());
        }
        thread::sleep(Duration::from_millis(5));
    }
    Err(BrokerError::NotListening(listen))
}

impl LocalBroker {
    /// Its bounded tables and connections, for the collectors.
    pub fn bounds(&self) -> Bounds {
        Bounds {
            tables: Arc::clone(&self.tables),
            admission: Arc::clone(&self.admission),
        }
    }

    /// Waits (up to `timeout`) until every message handed to the outbox was handed to the
    /// broker's router, then gives the broker [`LINGER`] to deliver them to connected clients
    /// (best effort: the local broker keeps nothing across a restart anyway). Call after every
    /// outbox sender is dropped.
    pub fn flush(&mut self, timeout: Duration) {
        let Some(publisher) = self.publisher.take() else {
            return;
        };
        let deadline = Instant::now() + timeout;
        while !publisher.is_finished() {
            if Instant::now() > deadline {
                warn!("local broker publisher still busy after {timeout:?}; exiting anyway");
                return;
            }
            thread::sleep(Duration::from_millis(5));
        }
        let _ = publisher.join();
        thread::sleep(LINGER);
    }
}

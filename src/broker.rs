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
//! Delivery QoS: rumqttd's in-process links publish at QoS 0 (its `Publish::new`), and rumqttd
//! forwards every message at the QoS of each subscriber's subscription. So a local subscriber
//! gets the QoS it subscribed with; the rule's `retain` flag is honoured here, and the rule's
//! `qos` matters on the uplink. Nothing is lost on this hop: it is a blocking in-process channel.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use bytes::Bytes;
use rumqttd::protocol::{Packet, Publish};
use rumqttd::{
    Config as RumqttdConfig, ConnectionSettings, Notification, RouterConfig, ServerSettings,
    TlsConfig,
};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{debug, error, warn};

use crate::config::schema;
use crate::downlink::Routes;
use crate::message::{topic_matches, Message, Outbox};
use crate::queue::thread::QueueHandle;

/// Messages that may wait between the devices and the broker link.
pub const OUTBOX_CAPACITY: usize = 1024;
/// Time the broker gets at shutdown to deliver the last messages (device `offline` states).
pub const LINGER: Duration = Duration::from_millis(200);

/// At most this many local publishes go to rumqttd's router in one event.
///
/// Why: rumqttd's in-process link queues packets in a buffer and wakes the router with one event
/// per `send`, on a channel of 1,000 events of about 800 bytes each; both grow to their
/// high-water mark and keep it. One event per message let a burst (a starved Pi catching up on
/// its serial backlog) fill that channel: +1.3 MiB resident for good (heaptrack, BENCHMARKS.md).
/// The router takes the whole buffer at each event, so a batch keeps the order.
const LINK_BATCH: usize = 32;

/// The publisher waits while the link's buffer holds this many packets the router has not
/// taken yet: bounds the buffer (a `Packet` is several hundred bytes; the buffer's capacity is
/// kept) with the same backpressure the blocking `send` gave, one step earlier.
const LINK_BACKLOG: usize = 128;

/// Waits, briefly, for rumqttd's router to take what the link's buffer holds. Gives up after
/// a few seconds: a router that is gone shows as an error of the next `send`.
fn wait_for_router(link_tx: &rumqttd::local::LinkTx) {
    if link_tx.buffer().len() < LINK_BACKLOG {
        return; // the usual case: no clock read on the hot path
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while link_tx.buffer().len() >= LINK_BACKLOG && Instant::now() < deadline {
        thread::sleep(Duration::from_micros(200));
    }
}

/// rumqttd keeps each subscription filter's recent messages in a log of this many segments;
/// `broker.window` is split across them, and the oldest segment is dropped as a whole.
const SEGMENTS: usize = 4;

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

/// The rumqttd configuration built from ours.
pub fn rumqttd_config(settings: &schema::Broker) -> RumqttdConfig {
    let connections = ConnectionSettings {
        connection_timeout_ms: settings.connect_timeout.as_millis().min(u16::MAX as u128) as u16,
        max_payload_size: settings.max_payload.as_u64() as usize,
        max_inflight_count: settings.max_inflight,
        auth: settings.users.as_ref().map(|u| u.0.clone()),
        external_auth: None,
        dynamic_filters: false,
    };
    let server = ServerSettings {
        name: "local".to_owned(),
        listen: settings.listen,
        tls: settings.tls.as_ref().map(|t| TlsConfig::Rustls {
            capath: None,
            certpath: t.cert_file.to_string_lossy().into_owned(),
            keypath: t.key_file.to_string_lossy().into_owned(),
        }),
        next_connection_delay_ms: 1,
        connections,
    };
    let router = RouterConfig {
        // One more than the users' clients for the gateway's own link.
        max_connections: settings.max_connections + 1,
        max_outgoing_packet_count: 200,
        // rumqttd counts topic + payload bytes only (about 530 bytes of memory per small
        // message in practice), and memory grows with segment size (rumqtt issue #1001).
        // A message larger than a segment still fits: a segment may overflow by its last message.
        max_segment_size: (settings.window.as_u64() as usize / SEGMENTS).max(1024),
        max_segment_count: SEGMENTS,
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: Default::default(),
    };
    RumqttdConfig {
        id: 0,
        router,
        v4: Some(HashMap::from([("local".to_owned(), server)])),
        ..Default::default()
    }
}

/// A running embedded broker; dropping it does not stop the broker (it lives as long as the
/// process), but joining the publisher flushes what devices handed over.
pub struct LocalBroker {
    publisher: Option<thread::JoinHandle<()>>,
}

/// Starts the broker, waits until it accepts TCP connections, and returns the outbox that feeds
/// it together with the handle to flush it on shutdown. If the broker or its link dies later,
/// `failed` is cancelled so the daemon exits (and its supervisor restarts it) instead of running
/// on without a broker.
pub fn start(
    settings: &schema::Broker,
    failed: CancellationToken,
    bridge: Option<Bridge>,
    routes: Routes,
) -> Result<(LocalBroker, Outbox), BrokerError> {
    // rumqttd binds on its own thread and only logs a failure: try the address first so a taken
    // port is a clear error at start.
    TcpListener::bind(settings.listen).map_err(|source| BrokerError::Listen {
        addr: settings.listen,
        holder: match listener_holder(settings.listen.port()) {
            Some((pid, name)) if name == "serial2mqtt" => {
                format!("Another serial2mqtt (PID {pid}) listens there")
            }
            Some((pid, name)) => format!("`{name}` (PID {pid}) listens there"),
            None if source.kind() == io::ErrorKind::AddrInUse => {
                "Another program (an MQTT broker such as mosquitto?) listens there".to_string()
            }
            None => "The address may not be one of this machine's".to_string(),
        },
        source,
    })?;

    let mut broker = rumqttd::Broker::new(rumqttd_config(settings));
    // rumqttd lets a new connection with the same client id take over an existing one, our
    // link included: an id no local client will guess keeps the gateway's link its own.
    let link_id = format!("serial2mqtt-internal-{:016x}", fastrand::u64(..));
    let (mut link_tx, mut link_rx) = broker
        .link(&link_id)
        .map_err(|e| BrokerError::Link(e.to_string()))?;

    let broker_failed = failed.clone();
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
    // filters would otherwise deliver a message once per filter). Without one, covers of what
    // the commands and Home Assistant's status need, never overlapping (so each message has one
    // way in and keeps the broker's order: see `downlink`), swapped as they change on reload,
    // so the gateway's own readings do not all come back through the link.
    let all = bridge.is_some();
    // One subscription delivers each message once: no copies to look for.
    routes
        .dedupe
        .store(!all, std::sync::atomic::Ordering::Relaxed);
    if all {
        link_tx
            .subscribe("#")
            .map_err(|e| BrokerError::Link(e.to_string()))?;
    }
    let mut subscribed = std::collections::HashSet::new();
    let wanted_routes = routes.clone();
    let wanted = Arc::clone(&routes.wanted);
    let echoes = Arc::new(Echoes::default());
    let acks_echoes = Arc::clone(&echoes);
    let bridged = bridge.is_some();
    let acks_failed = failed.clone();
    thread::Builder::new()
        .name("broker-acks".into())
        .spawn(move || {
            loop {
                match link_rx.recv() {
                    Ok(Some(Notification::Unschedule)) => {
                        if link_rx.ready().is_err() {
                            break;
                        }
                    }
                    Ok(Some(Notification::Forward(f))) => {
                        routes.dispatch(&f.publish.topic, &f.publish.payload);
                        if let Some(b) = &bridge {
                            b.forward_local_client(f, &acks_echoes);
                        }
                    }
                    Ok(_) => {}
                    Err(_) => break,
                }
            }
            error!("embedded broker dropped the gateway's link");
            acks_failed.cancel();
        })?;

    let (tx, mut rx) = mpsc::channel::<Message>(OUTBOX_CAPACITY);
    let handle = tokio::runtime::Handle::current();
    let publisher = thread::Builder::new()
        .name("broker-publish".into())
        .spawn(move || {
            // `LinkTx::send` is an async fn that blocks on a channel: run it on this thread only.
            handle.block_on(async move {
                let mut batch = Vec::with_capacity(LINK_BATCH);
                loop {
                    let m = tokio::select! {
                        m = rx.recv() => m,
                        _ = wanted.notified(), if !all => {
                            let mut refused = false;
                            let covers = wanted_routes.filters();
                            // New covers first, then the old ones go: a message in between may
                            // come twice (dropped as a copy), never not at all.
                            for filter in &covers {
                                if subscribed.contains(filter) {
                                    continue;
                                }
                                if let Err(e) = link_tx.subscribe(filter.clone()) {
                                    error!("embedded broker link refused the subscription to {filter}: {e}");
                                    refused = true;
                                    break;
                                }
                                subscribed.insert(filter.clone());
                            }
                            let stale: Vec<String> = subscribed
                                .iter()
                                .filter(|f| !covers.contains(f))
                                .cloned()
                                .collect();
                            for filter in stale {
                                if let Err(e) = link_tx.unsubscribe(filter.clone()) {
                                    error!("embedded broker link refused to unsubscribe from {filter}: {e}");
                                    refused = true;
                                    break;
                                }
                                subscribed.remove(&filter);
                            }
                            if refused {
                                failed.cancel();
                                break;
                            }
                            continue;
                        }
                    };
                    let Some(m) = m else { break };
                    // Whatever else is waiting goes in the same batch: one router event for
                    // all of it (see LINK_BATCH).
                    let mut next = Some(m);
                    while let Some(m) = next {
                        let topic = Bytes::from(m.topic);
                        if bridged {
                            echoes.remember(&topic, &m.payload);
                        }
                        batch.push(Packet::Publish(Publish::new(topic, m.payload, m.retain), None));
                        next = if batch.len() < LINK_BATCH { rx.try_recv().ok() } else { None };
                    }
                    wait_for_router(&link_tx);
                    // Never empty (it holds `m`); `send` of the last one wakes the router.
                    let Some(last) = batch.pop() else { continue };
                    link_tx.buffer().extend(batch.drain(..));
                    if let Err(e) = link_tx.send(last).await {
                        error!("embedded broker link closed, local publishing stopped: {e}");
                        failed.cancel();
                        break;
                    }
                }
            })
        })?;

    wait_listening(settings.listen)?;
    Ok((
        LocalBroker {
            publisher: Some(publisher),
        },
        tx,
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

/// Forwards what local clients publish to the uplink's queue, like a bridge.
///
/// The gateway's own messages reach the queue directly from the rules (never through the
/// broker, whose in-process link is QoS 0 and whose log drops data for a reader that falls
/// behind), so they must be left out here without sending anything twice. rumqttd cannot say
/// who published a forwarded message (3.1.1 has no "no local"; publish properties crash its
/// 3.1.1 encoder), but it hands back the very buffers it was given: the publisher remembers the
/// topic and payload buffers of its own recent publishes ([`Echoes`]), and a forward whose buffers
/// are the same allocations is the gateway's own.
pub struct Bridge {
    /// Local filters whose messages go upstream.
    pub forward: Vec<String>,
    /// The uplink's queue.
    pub queue: QueueHandle,
}

/// The gateway's own recent publishes, in order, holding their buffers (so an address cannot be
/// reused by a client's message while it is remembered).
#[derive(Default)]
struct Echoes {
    recent: Mutex<VecDeque<(Bytes, Bytes)>>,
}

/// Most own publishes remembered; beyond it the oldest are forgotten (their echoes were lost).
const ECHOES: usize = 65_536;

/// Capacity of the ring kept after a burst has drained (steady state needs a few dozen).
const ECHOES_KEPT: usize = 1024;

impl Echoes {
    fn remember(&self, topic: &Bytes, payload: &Bytes) {
        let mut r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        if r.len() >= ECHOES {
            r.pop_front();
        }
        r.push_back((topic.clone(), payload.clone()));
    }

    /// Whether the forward is one of ours; forgets it and every older one (forwards arrive in
    /// publish order, so older ones were dropped by the broker).
    fn is_own(&self, topic: &Bytes, payload: &Bytes) -> bool {
        let mut r = self.recent.lock().unwrap_or_else(|e| e.into_inner());
        let same = |(t, p): &(Bytes, Bytes)| {
            t.as_ptr() == topic.as_ptr()
                && p.as_ptr() == payload.as_ptr()
                && p.len() == payload.len()
        };
        match r.iter().position(same) {
            Some(pos) => {
                r.drain(..=pos);
                // A burst (a starved Pi catching up) leaves a large, mostly empty ring: give
                // the memory back once it has drained, or it stays resident for good.
                if r.capacity() > ECHOES_KEPT && r.len() < ECHOES_KEPT / 4 {
                    r.shrink_to(ECHOES_KEPT);
                }
                true
            }
            None => false,
        }
    }
}

impl Bridge {
    fn forward_local_client(&self, f: rumqttd::Forward, echoes: &Echoes) {
        if echoes.is_own(&f.publish.topic, &f.publish.payload) {
            return; // the gateway's own: already queued by the rules
        }
        let Ok(topic) = std::str::from_utf8(&f.publish.topic) else {
            return;
        };
        if !self
            .forward
            .iter()
            .any(|filter| topic_matches(filter, topic))
        {
            return;
        }
        let m = Message {
            topic: topic.to_owned(),
            payload: f.publish.payload,
            qos: 1,
            retain: f.publish.retain,
        };
        // Blocking is right here: this thread only serves the link.
        let _ = self.queue.append_blocking(vec![m]);
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

/// The process listening on TCP `port` (PID and command name), from /proc: for an error
/// message that names who holds a taken port. `None` when /proc does not tell (another user's
/// process, another network namespace).
fn listener_holder(port: u16) -> Option<(u32, String)> {
    const LISTEN: &str = "0A";
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (cols.get(1), cols.get(3), cols.get(9))
            else {
                continue;
            };
            let local_port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if *state == LISTEN && local_port == Some(port) {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if inodes.iter().any(|i| target.as_os_str() == i.as_str()) {
                let name = std::fs::read_to_string(entry.path().join("comm"))
                    .map(|c| c.trim().to_string())
                    .unwrap_or_default();
                return Some((pid, name));
            }
        }
    }
    None
}

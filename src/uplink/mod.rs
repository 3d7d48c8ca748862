//! The uplink: drains the store-and-forward queue into the upstream broker with rumqttc.
//!
//! The queue is the source of truth. rumqttc with `clean_session = true` silently drops
//! unacknowledged publishes when it reconnects, so a session never trusts it with more than its
//! window: each publish is paired with its packet id when rumqttc writes it
//! (`Outgoing::Publish`, in request order), PUBACKs are cumulative (MQTT 3.1.1 §4.6: a broker
//! acknowledges QoS 1 publishes in the order it received them), and the queue's ack cursor moves
//! only on PUBACK. Every session is a fresh client that starts reading at the cursor, so what was
//! in flight at a disconnect is sent again (at-least-once), and nothing is skipped.
//!
//! Around the data: birth `online` and last will `offline` on the retained status topic, a
//! graceful `offline` at shutdown, exponential backoff with jitter between connection attempts
//! (rumqttc has none), a failover list of brokers, and `subscribe` filters brought down into the
//! local broker. MQTT 3.1.1 or 5 ([`client`]): the session loop is the same for both; MQTT 5
//! adds user properties and brokers that refuse a message by reason code (kept, retried).

pub mod client;
pub mod profile;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use client::{Ev, Events};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::{Endpoint, UplinkSettings};
use crate::message::Outbox;
use crate::queue::thread::{Closed, QueueHandle};
use crate::queue::Record;

/// First delay between connection attempts.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest delay between connection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(60);
/// How often, while waiting to reconnect, the uplink checks whether the broker's TCP port
/// answers (a connect and a close: no TLS, no MQTT).
const PROBE_EVERY: Duration = Duration::from_millis(250);

/// Name of the uplink's publish → PUBACK latency histogram, in seconds.
pub const PUBLISH_LATENCY: &str = "serial2mqtt_uplink_publish_seconds";

/// Buckets of the latency histogram: loopback brokers answer in well under a millisecond,
/// cloud brokers in tens of milliseconds, a struggling link in seconds.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// What the rest of the gateway can see of the uplink.
#[derive(Debug, Default)]
pub struct UplinkState {
    /// Connected to a broker now.
    pub connected: AtomicBool,
    /// Successful connections so far.
    pub connects: AtomicU64,
    /// Messages acknowledged upstream.
    pub delivered: AtomicU64,
    /// Messages not sent because the broker (`uplink.profile`) would refuse them.
    pub refused_by_profile: AtomicU64,
    /// When `connected` last changed (Unix milliseconds; 0: never connected).
    pub since_ms: AtomicU64,
    /// Why the last session failed or was refused (empty: none has).
    pub last_error: std::sync::Mutex<String>,
}

impl UplinkState {
    /// Sets `connected`, noting when it changed.
    fn set_connected(&self, now: bool) {
        if self.connected.swap(now, Ordering::Relaxed) != now {
            let ms = crate::recent::unix_ms(std::time::SystemTime::now());
            self.since_ms.store(ms, Ordering::Relaxed);
        }
    }

    /// Notes why a session ended.
    fn failed(&self, why: &str) {
        if let Ok(mut last) = self.last_error.lock() {
            why.clone_into(&mut last);
        }
    }

    /// Why the last session failed, if one has.
    pub fn last_error(&self) -> Option<String> {
        let last = self.last_error.lock().ok()?;
        (!last.is_empty()).then(|| last.clone())
    }
}

/// The uplink task's inputs.
pub struct Uplink {
    /// Validated settings.
    pub settings: UplinkSettings,
    /// The queue to drain.
    pub queue: QueueHandle,
    /// Where messages from `subscribe` go (the local broker).
    pub local: Outbox,
    /// Shared counters.
    pub state: Arc<UplinkState>,
    /// Stops the task (after announcing `offline`).
    pub shutdown: CancellationToken,
}

/// How a session ended.
enum End {
    Shutdown,
    Failed {
        why: String,
        was_connected: bool,
    },
    /// MQTT 5: the broker refused a message. Same broker again, but the backoff keeps growing:
    /// a broker that refuses it now will likely refuse it a second from now.
    Refused(String),
    /// Azure IoT Hub: the SAS token is about to expire; reconnect with a new one at once.
    Renew,
}

/// Why a pause between connection attempts ended.
enum Woke {
    /// The backoff delay passed.
    Elapsed,
    /// The broker's port answers again after it did not.
    Reachable,
}

/// Whether a TCP connection to the broker's port opens within [`PROBE_EVERY`] (closed at once).
async fn reachable(endpoint: &Endpoint) -> bool {
    let connect = tokio::net::TcpStream::connect((endpoint.host.as_str(), endpoint.port));
    matches!(tokio::time::timeout(PROBE_EVERY, connect).await, Ok(Ok(_)))
}

type ReadFuture = Pin<Box<dyn Future<Output = Result<Vec<Record>, Closed>> + Send>>;

impl Uplink {
    /// Runs until shutdown: connect, drain, reconnect with backoff, fail over.
    pub async fn run(self) {
        let mut delays = crate::pacing::backoff(BACKOFF_MIN, BACKOFF_MAX);
        let mut index = 0usize;
        let mut last_error = String::new();
        let mut last_attempt: Option<Instant> = None;
        loop {
            let endpoint = &self.settings.endpoints[index % self.settings.endpoints.len()];
            // Brokers that allow one CONNECT per second per client id (AWS IoT).
            let min = self.settings.limits.min_connect_interval;
            if let Some(wait) = last_attempt.and_then(|t| min.checked_sub(t.elapsed())) {
                tokio::select! {
                    _ = self.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(wait) => {}
                }
            }
            last_attempt = Some(Instant::now());
            let ended = self.session(endpoint).await;
            if let End::Renew = ended {
                info!(broker = %endpoint, "uplink: reconnecting with a new SAS token");
                continue;
            }
            if let End::Refused(why) = &ended {
                self.state.set_connected(false);
                self.state.failed(why);
                let delay = delays.next().unwrap_or(BACKOFF_MAX);
                warn!(broker = %endpoint, "uplink: {why}; retrying in {:.1}s", delay.as_secs_f64());
                tokio::select! {
                    _ = self.shutdown.cancelled() => break,
                    _ = tokio::time::sleep(delay) => {}
                }
                continue;
            }
            match ended {
                End::Shutdown | End::Refused(_) | End::Renew => break,
                End::Failed { why, was_connected } => {
                    self.state.set_connected(false);
                    self.state.failed(&why);
                    if was_connected {
                        delays = crate::pacing::backoff(BACKOFF_MIN, BACKOFF_MAX);
                    } else {
                        // Not reachable: try the next broker of the failover list.
                        index += 1;
                    }
                    let delay = delays.next().unwrap_or(BACKOFF_MAX);
                    if why != last_error || was_connected {
                        warn!(broker = %endpoint, "uplink down: {why}; messages are kept in the queue; retrying in {:.1}s", delay.as_secs_f64());
                        last_error = why;
                    } else {
                        debug!(broker = %endpoint, "uplink still down: {why}");
                    }
                    let next = &self.settings.endpoints[index % self.settings.endpoints.len()];
                    match self.pause(delay, next).await {
                        None => break,
                        Some(Woke::Reachable) => {
                            info!(broker = %next, "uplink: the broker answers again; reconnecting");
                            delays = crate::pacing::backoff(BACKOFF_MIN, BACKOFF_MAX);
                        }
                        Some(Woke::Elapsed) => {}
                    }
                }
            }
        }
        self.state.set_connected(false);
    }

    /// Waits out `delay` before the next attempt on `endpoint`, or less: when the broker's TCP
    /// port stops answering and then answers again (the network, or the broker, is back), only a
    /// random part of `reconnect_spread` more, so delivery resumes within about a second of the
    /// outage's end, however long the backoff had grown, and a fleet spreads its reconnects. A
    /// broker whose port answers all along (it refuses the session, TLS fails, it hangs before
    /// CONNACK) gets the whole backoff: the probe only shortens a wait for a network that came
    /// back. None at shutdown.
    async fn pause(&self, delay: Duration, endpoint: &Endpoint) -> Option<Woke> {
        let sleep = tokio::time::sleep(delay);
        tokio::pin!(sleep);
        let mut tick = tokio::time::interval(PROBE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut was_down = false;
        loop {
            let probe = async {
                tick.tick().await;
                reachable(endpoint).await
            };
            tokio::select! {
                _ = self.shutdown.cancelled() => return None,
                _ = &mut sleep => return Some(Woke::Elapsed),
                up = probe => {
                    if !up {
                        was_down = true;
                    } else if was_down {
                        let spread = self.settings.reconnect_spread.mul_f64(fastrand::f64());
                        tokio::select! {
                            _ = self.shutdown.cancelled() => return None,
                            _ = &mut sleep => return Some(Woke::Elapsed),
                            _ = tokio::time::sleep(spread) => return Some(Woke::Reachable),
                        }
                    }
                }
            }
        }
    }

    /// Connects to `endpoint` and waits for its CONNACK.
    async fn connect(&self, endpoint: &Endpoint) -> Result<(client::Client, Events), End> {
        let failed = |why: String| End::Failed {
            why,
            was_connected: false,
        };
        let capacity = self.settings.inflight as usize + 64;
        let (client, mut events) =
            client::new(&self.settings, endpoint, capacity).map_err(failed)?;
        let connected = tokio::select! {
            _ = self.shutdown.cancelled() => return Err(End::Shutdown),
            r = tokio::time::timeout(self.settings.connect_timeout, wait_connack(&mut events)) => r,
        };
        match connected {
            Err(_) => Err(failed(format!(
                "no CONNACK within {} (the broker accepted the connection but did not answer; uplink.connect_timeout)",
                humantime::format_duration(self.settings.connect_timeout)
            ))),
            Ok(Err(why)) => Err(failed(why)),
            Ok(Ok(())) => Ok((client, events)),
        }
    }

    /// One connection, from CONNECT to its end.
    async fn session(&self, endpoint: &Endpoint) -> End {
        let failed = |why: String, was_connected| End::Failed { why, was_connected };
        let (client, mut events) = match self.connect(endpoint).await {
            Ok(c) => c,
            Err(end) => return end,
        };
        // Everything up to the queue's cursor is delivered; start right after it.
        let mut next = match self.queue.stats().await {
            Ok(st) => st.acked + 1,
            Err(_) => return End::Shutdown,
        };
        self.state.set_connected(true);
        let n = self.state.connects.fetch_add(1, Ordering::Relaxed) + 1;
        info!(broker = %endpoint, client_id = %self.settings.client_id, connects = n, resume_at = next, "uplink connected");

        // Publishes handed to rumqttc, waiting for their packet id (None: not a queue record).
        let mut unsent: VecDeque<Option<u64>> = VecDeque::new();
        // Packet ids in flight, in the order they were written.
        let mut inflight: VecDeque<(u16, Option<u64>, Instant)> = VecDeque::new();
        let status = self.settings.status_topic.clone();
        if client
            .publish(
                status,
                self.settings.limits.retain,
                Bytes::from_static(b"online"),
                None,
                None,
            )
            .is_ok()
        {
            unsent.push_back(None);
        }
        for f in &self.settings.subscribe {
            if let Err(e) = client.subscribe(f) {
                warn!("uplink: cannot subscribe to {f}: {e}");
            }
        }

        let window = self.settings.inflight as usize;
        let mut reading: Option<ReadFuture> = None;
        let mut pace: Option<Pin<Box<tokio::time::Sleep>>> = None;
        // Azure IoT Hub closes a connection when its SAS token expires: a new session with a
        // new token starts a little before (a tenth of the token's life, at most a minute).
        let renew = self.settings.azure.as_ref().map(|a| {
            let margin = (a.token_ttl / 10).min(Duration::from_secs(60));
            Box::pin(tokio::time::sleep(a.token_ttl.saturating_sub(margin)))
        });
        let mut renew = renew;
        let mut skipped = crate::pacing::RateLimit::new(crate::pacing::LOG_EVERY);
        loop {
            let room = window.saturating_sub(unsent.len() + inflight.len());
            // Refill in batches (a quarter of the window), not one message per PUBACK: each
            // read is a round trip to the queue thread.
            let outstanding = unsent.len() + inflight.len();
            if reading.is_none()
                && pace.is_none()
                && room > 0
                && (room >= window / 4 || outstanding == 0)
            {
                reading = Some(Box::pin(self.queue.read(next, room)));
            }
            tokio::select! {
                _ = self.shutdown.cancelled() => {
                    self.goodbye(&client, &mut events).await;
                    return End::Shutdown;
                }
                _ = async {
                    match pace.as_mut() {
                        Some(p) => p.await,
                        None => std::future::pending().await,
                    }
                } => pace = None,
                _ = async {
                    match renew.as_mut() {
                        Some(r) => r.await,
                        None => std::future::pending().await,
                    }
                } => {
                    self.goodbye_quietly(&client, &mut events).await;
                    return End::Renew;
                }
                records = async {
                    match reading.as_mut() {
                        Some(r) => r.await,
                        None => std::future::pending().await,
                    }
                } => {
                    reading = None;
                    let Ok(records) = records else { return End::Shutdown };
                    let count = records.len();
                    let mut bytes = 0usize;
                    for r in records {
                        let mut topic = format!("{}{}", self.settings.topic_prefix, r.message.topic);
                        if let Some(why) = self.settings.limits.refuses(&topic, r.message.payload.len()) {
                            // The broker would refuse it (and drop the connection): skipped, so
                            // it does not block the queue forever; counted, logged.
                            self.state.refused_by_profile.fetch_add(1, Ordering::Relaxed);
                            if let Some(more) = skipped.hit() {
                                warn!(seq = r.seq, "uplink: a message is not sent: {why}{}", if more > 0 { format!(" ({more} more since the last line)") } else { String::new() });
                            }
                            next = r.seq + 1;
                            continue;
                        }
                        if let Some(azure) = &self.settings.azure {
                            topic = azure.events_topic(&topic);
                        }
                        bytes += r.message.payload.len();
                        let retain = r.message.retain && self.settings.limits.retain;
                        let tag = client::Tag { gateway: &self.settings.gateway, seq: r.seq };
                        match client.publish(topic, retain, r.message.payload, Some(tag), self.settings.message_expiry) {
                            Ok(()) => {
                                unsent.push_back(Some(r.seq));
                                next = r.seq + 1;
                            }
                            Err(e) => return failed(format!("client request failed: {e}"), true),
                        }
                    }
                    let by_count = self.settings.max_rate.map(|r| count as f64 / f64::from(r));
                    let by_bytes = self.settings.limits.max_bytes_rate.map(|r| bytes as f64 / f64::from(r));
                    if let Some(secs) = by_count.into_iter().chain(by_bytes).reduce(f64::max) {
                        pace = Some(Box::pin(tokio::time::sleep(Duration::from_secs_f64(secs))));
                    }
                }
                event = events.poll() => match event {
                    Ok(Ev::Published(pkid)) => {
                        if let Some(seq) = unsent.pop_front() {
                            inflight.push_back((pkid, seq, Instant::now()));
                        }
                    }
                    Ok(Ev::Acked { refused: Some(reason), .. }) => {
                        // MQTT 5: the broker did not take it. Keep it in the queue and retry
                        // in a new session (backoff), rather than lose it.
                        // A clean DISCONNECT: the status stays `online` (no last will), the gateway is up.
                        client.disconnect();
                        let _ = tokio::time::timeout(Duration::from_secs(1), events.poll()).await;
                        return End::Refused(format!("the broker refused a message ({reason}); it stays in the queue and is sent again"));
                    }
                    Ok(Ev::Acked { pkid, refused: None }) => {
                        // Cumulative: everything written before this packet id is acknowledged too.
                        let (highest, delivered) = acknowledged(&mut inflight, pkid);
                        if let Some(seq) = highest {
                            self.state.delivered.fetch_add(delivered, Ordering::Relaxed);
                            if self.queue.ack(seq).await.is_err() {
                                return End::Shutdown;
                            }
                        }
                    }
                    Ok(Ev::Message(m)) => {
                        if self.local.send(m).await.is_err() {
                            return End::Shutdown;
                        }
                    }
                    Ok(Ev::SubscribeRefused) => {
                        warn!("uplink: the broker refused a subscription of `uplink.subscribe`");
                    }
                    Ok(Ev::ConnAck | Ev::Other) => {}
                    Err(why) => return failed(why, true),
                },
            }
        }
    }

    /// A clean DISCONNECT without `offline` (the gateway is up; a new session follows at once).
    async fn goodbye_quietly(&self, client: &client::Client, events: &mut Events) {
        client.disconnect();
        let _ = tokio::time::timeout(Duration::from_secs(1), events.poll()).await;
    }

    /// Announces `offline` (retained) and disconnects, within a couple of seconds.
    async fn goodbye(&self, client: &client::Client, events: &mut Events) {
        let status = self.settings.status_topic.clone();
        let retain = self.settings.limits.retain;
        if client
            .publish(status, retain, Bytes::from_static(b"offline"), None, None)
            .is_err()
        {
            return;
        }
        let done = async {
            let mut offline_pkid = None;
            loop {
                match events.poll().await {
                    Ok(Ev::Published(pkid)) => offline_pkid = Some(pkid),
                    Ok(Ev::Acked { pkid, .. }) if Some(pkid) == offline_pkid => break,
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
            client.disconnect();
            let _ = events.poll().await;
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), done).await;
    }
}

async fn wait_connack(events: &mut Events) -> Result<(), String> {
    loop {
        if let Ev::ConnAck = events.poll().await? {
            return Ok(());
        }
    }
}

/// A PUBACK for `pkid` acknowledges it and everything written before it: takes them out of
/// `inflight` (recording their latency) and returns the highest queue record among them and
/// how many queue records they were.
fn acknowledged(
    inflight: &mut VecDeque<(u16, Option<u64>, Instant)>,
    pkid: u16,
) -> (Option<u64>, u64) {
    let Some(pos) = inflight.iter().position(|(p, _, _)| *p == pkid) else {
        return (None, 0);
    };
    let mut highest = None;
    let mut delivered = 0;
    let latency = metrics::histogram!(PUBLISH_LATENCY);
    for (_, seq, sent) in inflight.drain(..=pos) {
        latency.record(sent.elapsed().as_secs_f64());
        if seq.is_some() {
            delivered += 1;
            highest = seq;
        }
    }
    (highest, delivered)
}

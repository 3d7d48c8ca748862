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
//! local broker.

pub mod tls;

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backon::BackoffBuilder;
use bytes::Bytes;
use rumqttc::{
    AsyncClient, ConnectionError, Event, EventLoop, LastWill, MqttOptions, Outgoing, Packet, QoS,
    Transport,
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::uplink::{Endpoint, UplinkSettings};
use crate::message::{Message, Outbox};
use crate::queue::service::{Closed, QueueHandle};
use crate::queue::Record;

/// First delay between connection attempts.
const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest delay between connection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// What the rest of the gateway can see of the uplink.
#[derive(Debug, Default)]
pub struct UplinkState {
    /// Connected to a broker now.
    pub connected: AtomicBool,
    /// Successful connections so far.
    pub connects: AtomicU64,
    /// Messages acknowledged upstream.
    pub delivered: AtomicU64,
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
    Failed { why: String, was_connected: bool },
}

type ReadFuture = Pin<Box<dyn Future<Output = Result<Vec<Record>, Closed>> + Send>>;

impl Uplink {
    /// Runs until shutdown: connect, drain, reconnect with backoff, fail over.
    pub async fn run(self) {
        let mut delays = backoff();
        let mut index = 0usize;
        let mut last_error = String::new();
        loop {
            let endpoint = &self.settings.endpoints[index % self.settings.endpoints.len()];
            match self.session(endpoint).await {
                End::Shutdown => break,
                End::Failed { why, was_connected } => {
                    self.state.connected.store(false, Ordering::Relaxed);
                    if was_connected {
                        delays = backoff();
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
                    tokio::select! {
                        _ = self.shutdown.cancelled() => break,
                        _ = tokio::time::sleep(delay) => {}
                    }
                }
            }
        }
        self.state.connected.store(false, Ordering::Relaxed);
    }

    fn options(&self, endpoint: &Endpoint) -> Result<MqttOptions, String> {
        let s = &self.settings;
        let mut o = MqttOptions::new(s.client_id.clone(), endpoint.host.clone(), endpoint.port);
        o.set_keep_alive(s.keep_alive);
        o.set_clean_session(true);
        o.set_max_packet_size(s.max_packet, s.max_packet);
        o.set_inflight(s.inflight);
        o.set_request_channel_capacity(s.inflight as usize + 64);
        o.set_last_will(LastWill::new(
            &s.status_topic,
            "offline",
            QoS::AtLeastOnce,
            true,
        ));
        if let Some(user) = &s.username {
            let pass = s
                .password
                .as_ref()
                .map(|p| p.expose().to_owned())
                .unwrap_or_default();
            o.set_credentials(user.clone(), pass);
        }
        if endpoint.tls {
            let config = tls::client_config(s.tls.as_ref())?;
            o.set_transport(Transport::tls_with_config(
                rumqttc::TlsConfiguration::Rustls(config),
            ));
        }
        Ok(o)
    }

    /// One connection, from CONNECT to its end.
    async fn session(&self, endpoint: &Endpoint) -> End {
        let failed = |why: String, was_connected| End::Failed { why, was_connected };
        let opts = match self.options(endpoint) {
            Ok(o) => o,
            Err(why) => return failed(why, false),
        };
        let (client, mut events) = AsyncClient::new(opts, self.settings.inflight as usize + 64);
        // Wait for CONNACK.
        let connected = tokio::select! {
            _ = self.shutdown.cancelled() => return End::Shutdown,
            r = tokio::time::timeout(self.settings.connect_timeout, wait_connack(&mut events)) => r,
        };
        match connected {
            Err(_) => {
                return failed(
                    format!(
                        "no CONNACK within {} (the broker accepted the connection but did not answer; uplink.connect_timeout)",
                        humantime::format_duration(self.settings.connect_timeout)
                    ),
                    false,
                )
            }
            Ok(Err(why)) => return failed(why, false),
            Ok(Ok(())) => {}
        }
        // Everything up to the queue's cursor is delivered; start right after it.
        let mut next = match self.queue.stats().await {
            Ok(st) => st.acked + 1,
            Err(_) => return End::Shutdown,
        };
        self.state.connected.store(true, Ordering::Relaxed);
        let n = self.state.connects.fetch_add(1, Ordering::Relaxed) + 1;
        info!(broker = %endpoint, client_id = %self.settings.client_id, connects = n, resume_at = next, "uplink connected");

        // Publishes handed to rumqttc, waiting for their packet id (None: not a queue record).
        let mut unsent: VecDeque<Option<u64>> = VecDeque::new();
        // Packet ids in flight, in the order they were written.
        let mut inflight: VecDeque<(u16, Option<u64>, Instant)> = VecDeque::new();
        if client
            .try_publish(
                &self.settings.status_topic,
                QoS::AtLeastOnce,
                true,
                "online",
            )
            .is_ok()
        {
            unsent.push_back(None);
        }
        for f in &self.settings.subscribe {
            if let Err(e) = client.try_subscribe(f, QoS::AtLeastOnce) {
                warn!("uplink: cannot subscribe to {f}: {e}");
            }
        }

        let window = self.settings.inflight as usize;
        let mut reading: Option<ReadFuture> = None;
        let mut pace: Option<Pin<Box<tokio::time::Sleep>>> = None;
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
                records = async {
                    match reading.as_mut() {
                        Some(r) => r.await,
                        None => std::future::pending().await,
                    }
                } => {
                    reading = None;
                    let Ok(records) = records else { return End::Shutdown };
                    let count = records.len();
                    for r in records {
                        let topic = format!("{}{}", self.settings.topic_prefix, r.message.topic);
                        match client.try_publish(topic, QoS::AtLeastOnce, r.message.retain, r.message.payload) {
                            Ok(()) => {
                                unsent.push_back(Some(r.seq));
                                next = r.seq + 1;
                            }
                            Err(e) => return failed(format!("client request failed: {e}"), true),
                        }
                    }
                    if let Some(rate) = self.settings.max_rate {
                        let secs = count as f64 / f64::from(rate);
                        pace = Some(Box::pin(tokio::time::sleep(Duration::from_secs_f64(secs))));
                    }
                }
                event = events.poll() => match event {
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => {
                        if let Some(seq) = unsent.pop_front() {
                            inflight.push_back((pkid, seq, Instant::now()));
                        }
                    }
                    Ok(Event::Incoming(Packet::PubAck(ack))) => {
                        // Cumulative: everything written before this packet id is acknowledged too.
                        let Some(pos) = inflight.iter().position(|(p, _, _)| *p == ack.pkid) else { continue };
                        let mut highest = None;
                        let mut delivered = 0;
                        let latency = metrics::histogram!(crate::prometheus::PUBLISH_LATENCY);
                        for (_, seq, sent) in inflight.drain(..=pos) {
                            latency.record(sent.elapsed().as_secs_f64());
                            if seq.is_some() {
                                delivered += 1;
                                highest = seq;
                            }
                        }
                        if let Some(seq) = highest {
                            self.state.delivered.fetch_add(delivered, Ordering::Relaxed);
                            if self.queue.ack(seq).await.is_err() {
                                return End::Shutdown;
                            }
                        }
                    }
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let m = Message {
                            topic: p.topic,
                            payload: p.payload,
                            qos: 0,
                            retain: p.retain,
                        };
                        if self.local.send(m).await.is_err() {
                            return End::Shutdown;
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(ack))) => {
                        if ack.return_codes.iter().any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)) {
                            warn!("uplink: the broker refused a subscription of `uplink.subscribe`");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => return failed(describe(&e), true),
                },
            }
        }
    }

    /// Announces `offline` (retained) and disconnects, within a couple of seconds.
    async fn goodbye(&self, client: &AsyncClient, events: &mut EventLoop) {
        if client
            .try_publish(
                &self.settings.status_topic,
                QoS::AtLeastOnce,
                true,
                Bytes::from_static(b"offline"),
            )
            .is_err()
        {
            return;
        }
        let done = async {
            let mut offline_pkid = None;
            loop {
                match events.poll().await {
                    Ok(Event::Outgoing(Outgoing::Publish(pkid))) => offline_pkid = Some(pkid),
                    Ok(Event::Incoming(Packet::PubAck(ack))) if Some(ack.pkid) == offline_pkid => {
                        break
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
            let _ = client.try_disconnect();
            let _ = events.poll().await;
        };
        let _ = tokio::time::timeout(Duration::from_secs(2), done).await;
    }
}

async fn wait_connack(events: &mut EventLoop) -> Result<(), String> {
    loop {
        match events.poll().await {
            Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
            Ok(_) => {}
            Err(e) => return Err(describe(&e)),
        }
    }
}

/// One line a user can act on.
fn describe(e: &ConnectionError) -> String {
    match e {
        ConnectionError::ConnectionRefused(code) => format!(
            "the broker refused the connection ({code:?}): check uplink.username, uplink.password_file and uplink.client_id"
        ),
        ConnectionError::Tls(t) => format!("TLS failed: {t} (check the broker's certificate, uplink.tls.ca_file and the host name)"),
        ConnectionError::Io(io) if io.to_string().contains("failed to lookup address") => {
            format!("cannot resolve the broker's host name ({io}): check uplink.url and the DNS")
        }
        ConnectionError::Io(io) => format!("network error: {io}"),
        ConnectionError::NetworkTimeout => "network timeout".into(),
        other => other.to_string(),
    }
}

fn backoff() -> impl Iterator<Item = Duration> {
    backon::ExponentialBuilder::default()
        .with_min_delay(BACKOFF_MIN)
        .with_max_delay(BACKOFF_MAX)
        .with_factor(2.0)
        .with_jitter()
        .without_max_times()
        .build()
        .map(|d| d.min(BACKOFF_MAX))
}

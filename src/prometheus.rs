//! The optional Prometheus endpoint (`metrics.listen`), for Grafana and alerting.
//!
//! The gateway already counts everything it reports in atomics (per device, queue, uplink,
//! downlink) for the stats message and the status line. Rather than counting a second time on
//! the hot path, a collector copies those counters into the `metrics` facade once a second; the
//! recorder (`metrics-exporter-prometheus`, which rumqttd links anyway) renders them, and
//! `/metrics` is served by our own listener ([`crate::http::serve`]: caps, header and idle
//! timeouts, like the dashboard's), or by the dashboard's when `metrics.listen` is
//! `web.listen`. Values are therefore at most a second old. The one metric made on the hot
//! path is the uplink's publish latency histogram, recorded per acknowledged message; the
//! listeners count their refusals, timeouts and wrong tokens (`serial2mqtt_http_*`) as they
//! happen, which is rare.
//!
//! Access: device names and counters are not for everybody. With `metrics.token_file`,
//! Prometheus sends the token (`Authorization: Bearer`, its `authorization:
//! {credentials_file: ...}`), throttled per peer as the dashboard's; without it, on loopback
//! only local host names are answered (DNS rebinding), and on another address anyone is (a
//! warning from `check` and at start).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Request, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics::{counter, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::config::model::MetricsSettings;
use crate::downlink::Routes;
use crate::http::auth::{self, Token};
use crate::http::throttle::Throttle;
use crate::http::Limits;
use crate::queue::thread::QueueHandle;
use crate::stats::{DeviceList, DeviceStats};
use crate::uplink::{UplinkState, LATENCY_BUCKETS, PUBLISH_LATENCY};

/// How often the collector copies the counters.
pub const COLLECT_EVERY: Duration = Duration::from_secs(1);

/// Why the endpoint did not start.
#[derive(Debug, thiserror::Error)]
#[error("cannot serve metrics on {addr}: {reason} (check metrics.listen: is the port taken?)")]
pub struct MetricsError {
    addr: SocketAddr,
    reason: String,
}

/// Installs the global recorder for the endpoint on `listen`; `/metrics` is what the returned
/// handle renders, served by [`Bound::serve`] or by the dashboard.
pub fn install(listen: SocketAddr) -> Result<PrometheusHandle, MetricsError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(PUBLISH_LATENCY.into()), &LATENCY_BUCKETS)
        .and_then(|b| b.install_recorder())
        .map_err(|e| MetricsError {
            addr: listen,
            reason: e.to_string(),
        })?;
    describe();
    Ok(handle)
}

/// The listener's name in log lines and metrics.
const NAME: &str = "metrics";

/// The endpoint's own listener, bound at start so that a taken port stops the gateway with a
/// clear message.
pub struct Bound {
    listener: tokio::net::TcpListener,
    settings: MetricsSettings,
    limits: Limits,
}

/// Binds `metrics.listen`, to be served within `limits`.
pub async fn bind(settings: &MetricsSettings, limits: Limits) -> Result<Bound, MetricsError> {
    let listener = tokio::net::TcpListener::bind(settings.listen)
        .await
        .map_err(|e| MetricsError {
            addr: settings.listen,
            reason: e.to_string(),
        })?;
    Ok(Bound {
        listener,
        settings: settings.clone(),
        limits,
    })
}

/// What the endpoint's requests are checked and answered with.
struct Endpoint {
    handle: PrometheusHandle,
    token: Option<Token>,
    throttle: Throttle,
    /// Listening on loopback: without a token, only local host names are answered.
    loopback: bool,
}

impl Bound {
    /// Serves `/metrics` from `handle` until `shutdown`.
    pub fn serve(
        self,
        handle: PrometheusHandle,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let listen = self.settings.listen;
        let loopback = listen.ip().is_loopback();
        match (&self.settings.token, loopback) {
            (Some(_), _) => {
                info!(listen = %listen, "Prometheus metrics on http://{listen}/metrics (token required)")
            }
            (None, true) => {
                info!(listen = %listen, "Prometheus metrics on http://{listen}/metrics")
            }
            (None, false) => warn!(
                listen = %listen,
                "{}; {}",
                crate::config::check::metrics::open_warning(listen),
                crate::config::check::metrics::open_help(listen)
            ),
        }
        let endpoint = Arc::new(Endpoint {
            handle,
            token: self.settings.token.as_deref().map(Token::new),
            throttle: Throttle::new(NAME),
            loopback,
        });
        let router = Router::new()
            .route("/metrics", get(render))
            .fallback(|| async { (StatusCode::NOT_FOUND, "only /metrics is served here\n") })
            .layer(axum::middleware::from_fn_with_state(
                Arc::clone(&endpoint),
                guard,
            ))
            .with_state(endpoint);
        tokio::spawn(crate::http::serve(
            self.listener,
            NAME,
            self.limits,
            None,
            router,
            shutdown,
        ))
    }
}

async fn render(State(endpoint): State<Arc<Endpoint>>) -> Response {
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        endpoint.handle.render(),
    )
        .into_response()
}

/// The token (throttled per peer) or, without one on loopback, a local host name.
async fn guard(State(endpoint): State<Arc<Endpoint>>, req: Request, next: Next) -> Response {
    let Some(token) = &endpoint.token else {
        if endpoint.loopback && !auth::local_host(req.headers()) {
            return (
                StatusCode::FORBIDDEN,
                "scrape by the machine's address (127.0.0.1 or localhost): without \
                 metrics.token_file no other host name is answered\n",
            )
                .into_response();
        }
        return next.run(req).await;
    };
    let peer = auth::peer(&req);
    if let Some(wait) = endpoint.throttle.locked(peer) {
        return auth::locked_out(wait);
    }
    match auth::bearer(req.headers()) {
        Some(b) if token.matches(b) => {
            endpoint.throttle.passed(peer);
            return next.run(req).await;
        }
        Some(_) => endpoint.throttle.failed(peer),
        None => {}
    }
    let mut refused = (
        StatusCode::UNAUTHORIZED,
        "/metrics needs its token (metrics.token_file): send Authorization: Bearer TOKEN \
         (Prometheus: authorization: {credentials_file: ...})\n",
    )
        .into_response();
    refused
        .headers_mut()
        .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    refused
}

/// The `# HELP` lines.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
    describe_counter!(
        "serial2mqtt_http_refused_total",
        "Connections refused (503) by an HTTP listener: all its places, or the peer's, were taken"
    );
    describe_counter!(
        "serial2mqtt_http_timeouts_total",
        "Connections an HTTP listener closed: no headers or TLS handshake in time, or idle"
    );
    describe_counter!(
        "serial2mqtt_http_wrong_tokens_total",
        "Requests to an HTTP listener with a wrong token (bearer, cookie or login form)"
    );
    describe_counter!(
        "serial2mqtt_http_throttled_total",
        "Requests answered 429: their address sent too many wrong tokens"
    );
    describe_gauge!(
        "serial2mqtt_modbus_server_connections",
        "Connections the Modbus TCP server holds"
    );
    describe_counter!(
        "serial2mqtt_modbus_server_requests_total",
        "Modbus TCP requests answered, from the line (forwarded) or the latest reading (cached)"
    );
    describe_counter!(
        "serial2mqtt_modbus_server_refused_total",
        "Modbus TCP requests answered with an exception of the gateway's, by reason"
    );
    describe_counter!(
        "serial2mqtt_modbus_server_closed_total",
        "Modbus TCP connections closed: a frame that cannot be cut, idle, or not reading"
    );
    describe_counter!(
        "serial2mqtt_modbus_server_refused_connections_total",
        "Modbus TCP connections refused: all places, or the address's, were taken"
    );
    describe_gauge!(
        "serial2mqtt_device_online",
        "1 while the device's port is open"
    );
    describe_counter!(
        "serial2mqtt_device_opens_total",
        "Times the device's port was opened"
    );
    describe_counter!("serial2mqtt_frames_total", "Frames read from the device");
    describe_counter!(
        "serial2mqtt_frames_unmatched_total",
        "Frames no rule matched"
    );
    describe_counter!("serial2mqtt_frames_bad_total", "Frames dropped, by reason");
    describe_counter!(
        "serial2mqtt_messages_published_total",
        "Messages the rules made"
    );
    describe_counter!(
        "serial2mqtt_messages_bad_topic_total",
        "Messages not published: their topic was invalid"
    );
    describe_counter!(
        "serial2mqtt_commands_total",
        "Commands (MQTT to serial), by result"
    );
    describe_counter!(
        "serial2mqtt_commands_dropped_total",
        "Commands dropped: the device had too many waiting"
    );
    describe_gauge!(
        "serial2mqtt_queue_depth_messages",
        "Messages in the store-and-forward queue, not yet acknowledged upstream"
    );
    describe_gauge!(
        "serial2mqtt_queue_bytes",
        Unit::Bytes,
        "Bytes of the queue's segment files"
    );
    describe_gauge!("serial2mqtt_queue_segments", "Segment files of the queue");
    describe_counter!(
        "serial2mqtt_queue_written_bytes_total",
        "Bytes the queue had written to its disk since the start, in whole 4 KiB pages (records, padding, segment headers, ack cursor, sequence reservations; not the filesystem's journal)"
    );
    describe_counter!(
        "serial2mqtt_queue_dropped_total",
        "Queued messages dropped, by reason"
    );
    describe_gauge!(
        "serial2mqtt_uplink_connected",
        "1 while connected to the upstream broker"
    );
    describe_counter!(
        "serial2mqtt_uplink_connects_total",
        "Successful connections to the upstream broker"
    );
    describe_counter!(
        "serial2mqtt_uplink_reconnects_total",
        "Connections after the first"
    );
    describe_counter!(
        "serial2mqtt_uplink_delivered_total",
        "Messages acknowledged by the upstream broker"
    );
    describe_gauge!(
        "serial2mqtt_broker_connections",
        "Local MQTT clients connected (or connecting) now"
    );
    describe_gauge!(
        "serial2mqtt_broker_retained_messages",
        "Retained messages of local clients kept by the broker"
    );
    describe_gauge!(
        "serial2mqtt_broker_retained_bytes",
        "Payload bytes of those retained messages"
    );
    describe_counter!(
        "serial2mqtt_broker_refused_total",
        "What the local broker refused at a bound: connections, retained messages (delivered \
         but not kept), new topic names or filters, persistent sessions"
    );
    describe_histogram!(
        PUBLISH_LATENCY,
        Unit::Seconds,
        "Upstream publish to PUBACK latency"
    );
}

/// What the collector reads.
pub struct Sources {
    /// The running devices' counters, by name.
    pub devices: DeviceList,
    /// The queue, when there is an uplink.
    pub queue: Option<QueueHandle>,
    /// The uplink's state, when there is one.
    pub uplink: Option<Arc<UplinkState>>,
    /// The command routes (their dropped counter).
    pub routes: Routes,
    /// The local broker's connections and bounded tables.
    pub broker: crate::broker::Bounds,
    /// The Modbus TCP server, when it is on.
    pub server: Option<Arc<crate::server::Shared>>,
}

/// Copies the counters into the recorder every [`COLLECT_EVERY`] until `shutdown`.
pub async fn collect(sources: Sources, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(COLLECT_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        collect_once(&sources).await;
    }
}

async fn collect_once(s: &Sources) {
    let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let devices: Vec<(String, Arc<DeviceStats>)> =
        s.devices.lock().map(|d| d.clone()).unwrap_or_default();
    for (name, d) in devices {
        let dev = name.clone();
        gauge!("serial2mqtt_device_online", "device" => dev.clone()).set(
            if d.online.load(Ordering::Relaxed) {
                1.0
            } else {
                0.0
            },
        );
        counter!("serial2mqtt_device_opens_total", "device" => dev.clone()).absolute(g(&d.opens));
        counter!("serial2mqtt_frames_total", "device" => dev.clone()).absolute(g(&d.frames));
        counter!("serial2mqtt_frames_unmatched_total", "device" => dev.clone())
            .absolute(g(&d.unmatched));
        for (reason, c) in [
            ("too_long", &d.too_long),
            ("corrupt", &d.corrupt),
            ("incomplete", &d.incomplete),
            ("invalid_utf8", &d.invalid_utf8),
            ("bad_checksum", &d.bad_checksum),
            ("bad_value", &d.bad_value),
        ] {
            counter!("serial2mqtt_frames_bad_total", "device" => dev.clone(), "reason" => reason)
                .absolute(g(c));
        }
        counter!("serial2mqtt_polls_total", "device" => dev.clone()).absolute(g(&d.polls));
        counter!("serial2mqtt_modbus_exceptions_total", "device" => dev.clone())
            .absolute(g(&d.exceptions));
        let by_point = d
            .point_exceptions
            .lock()
            .map(|m| m.clone())
            .unwrap_or_default();
        for (point, n) in by_point {
            counter!("serial2mqtt_modbus_point_exceptions_total", "device" => dev.clone(), "point" => point)
                .absolute(n);
        }
        counter!("serial2mqtt_poll_timeouts_total", "device" => dev.clone())
            .absolute(g(&d.timeouts));
        counter!("serial2mqtt_frames_unsolicited_total", "device" => dev.clone())
            .absolute(g(&d.unsolicited));
        counter!("serial2mqtt_frames_dropped_total", "device" => dev.clone())
            .absolute(g(&d.dropped));
        counter!("serial2mqtt_resync_bytes_total", "device" => dev.clone())
            .absolute(g(&d.resync_bytes));
        counter!("serial2mqtt_messages_published_total", "device" => dev.clone())
            .absolute(g(&d.messages));
        counter!("serial2mqtt_messages_bad_topic_total", "device" => dev.clone())
            .absolute(g(&d.bad_topic));
        for (result, c) in [
            ("written", &d.commands_written),
            ("rejected", &d.commands_rejected),
            ("failed", &d.commands_failed),
        ] {
            counter!("serial2mqtt_commands_total", "device" => dev.clone(), "result" => result)
                .absolute(g(c));
        }
    }
    counter!("serial2mqtt_commands_dropped_total").absolute(g(&s.routes.dropped));
    let b = &s.broker;
    gauge!("serial2mqtt_broker_connections").set(b.admission.held() as f64);
    let (retained, retained_bytes) = b.tables.retained();
    gauge!("serial2mqtt_broker_retained_messages").set(retained as f64);
    gauge!("serial2mqtt_broker_retained_bytes").set(retained_bytes as f64);
    for (reason, n) in [
        ("connections", g(&b.admission.refused)),
        ("retained", g(&b.tables.refused.retained)),
        ("names", g(&b.tables.refused.names)),
        ("sessions", g(&b.tables.refused.sessions)),
    ] {
        counter!("serial2mqtt_broker_refused_total", "bound" => reason).absolute(n);
    }
    if let Some(q) = &s.queue {
        if let Ok(st) = q.stats().await {
            gauge!("serial2mqtt_queue_depth_messages").set(st.depth as f64);
            gauge!("serial2mqtt_queue_bytes").set(st.bytes as f64);
            gauge!("serial2mqtt_queue_segments").set(st.segments as f64);
            counter!("serial2mqtt_queue_written_bytes_total").absolute(st.written);
            for (reason, n) in [
                ("full", st.drops.full),
                ("disk_full", st.drops.disk_full),
                ("corrupt", st.drops.corrupt_segments),
                ("too_large", st.drops.too_large),
            ] {
                counter!("serial2mqtt_queue_dropped_total", "reason" => reason).absolute(n);
            }
        }
    }
    if let Some(srv) = &s.server {
        let m = srv.summary();
        gauge!("serial2mqtt_modbus_server_connections").set(m.connections as f64);
        for (result, n) in [("forwarded", m.forwarded), ("cached", m.cached)] {
            counter!("serial2mqtt_modbus_server_requests_total", "result" => result).absolute(n);
        }
        for (reason, n) in [
            ("denied", m.denied),
            ("malformed", m.malformed),
            ("unknown_unit", m.unknown_unit),
            ("busy", m.busy),
            ("unanswered", m.unanswered),
        ] {
            counter!("serial2mqtt_modbus_server_refused_total", "reason" => reason).absolute(n);
        }
        counter!("serial2mqtt_modbus_server_closed_total").absolute(m.closed);
        counter!("serial2mqtt_modbus_server_refused_connections_total")
            .absolute(m.refused_connections);
    }
    if let Some(u) = &s.uplink {
        let connected = u.connected.load(Ordering::Relaxed);
        gauge!("serial2mqtt_uplink_connected").set(if connected { 1.0 } else { 0.0 });
        let connects = g(&u.connects);
        counter!("serial2mqtt_uplink_connects_total").absolute(connects);
        counter!("serial2mqtt_uplink_reconnects_total").absolute(connects.saturating_sub(1));
        counter!("serial2mqtt_uplink_delivered_total").absolute(g(&u.delivered));
        counter!("serial2mqtt_uplink_refused_by_profile_total").absolute(g(&u.refused_by_profile));
    }
}

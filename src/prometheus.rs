//! The optional Prometheus endpoint (`metrics.listen`), for Grafana and alerting.
//!
//! The gateway already counts everything it reports in atomics (per device, queue, uplink,
//! downlink) for the stats message and the status line. Rather than counting a second time on
//! the hot path, a collector copies those counters into the `metrics` facade once a second; the
//! exporter (`metrics-exporter-prometheus`, which rumqttd links anyway) serves them over HTTP,
//! on its own listener, or from the dashboard's when `metrics.listen` is `web.listen`.
//! Values are therefore at most a second old. The one metric made on the hot path is the
//! uplink's publish latency histogram, recorded per acknowledged message.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use metrics::{counter, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use tokio_util::sync::CancellationToken;

use crate::downlink::Routes;
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

/// Installs the global recorder and serves `/metrics` on `listen` (from the current runtime).
pub fn start(listen: SocketAddr) -> Result<(), MetricsError> {
    let fail = |e: &dyn std::fmt::Display| MetricsError {
        addr: listen,
        reason: e.to_string(),
    };
    // Bind first: the exporter reports a taken port only from its background task.
    std::net::TcpListener::bind(listen).map_err(|e| fail(&e))?;
    PrometheusBuilder::new()
        .with_http_listener(listen)
        .set_buckets_for_metric(Matcher::Full(PUBLISH_LATENCY.into()), &LATENCY_BUCKETS)
        .map_err(|e| fail(&e))?
        .install()
        .map_err(|e| fail(&e))?;
    describe();
    Ok(())
}

/// Installs the global recorder without a listener of its own: the dashboard serves
/// `/metrics` from what the returned handle renders (`metrics.listen` = `web.listen`).
pub fn install() -> Result<PrometheusHandle, MetricsError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(PUBLISH_LATENCY.into()), &LATENCY_BUCKETS)
        .and_then(|b| b.install_recorder())
        .map_err(|e| MetricsError {
            addr: SocketAddr::from(([0, 0, 0, 0], 0)),
            reason: e.to_string(),
        })?;
    describe();
    Ok(handle)
}

/// The `# HELP` lines.
fn describe() {
    use metrics::{describe_counter, describe_gauge, describe_histogram, Unit};
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

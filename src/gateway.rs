//! Wiring: start the broker, one task per device, and stop everything through one path.
//!
//! Data flows one way: device task (serial → frames → rules) → outbox → broker link. Shutdown is
//! a single [`CancellationToken`]: devices stop reading and announce `offline`, their outbox
//! senders drop, the publisher drains what is left into the broker, and `run` returns.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use std::sync::atomic::Ordering;

use bytes::Bytes;

use crate::broker;
use crate::config::uplink::QueueSettings;
use crate::config::{Config, PortSource};
use crate::message::Message;
use crate::outlet::{Outlet, Upstream};
use crate::queue::{self, service::QueueHandle};
use crate::serial::device::DeviceTask;
use crate::serial::simulate;
use crate::stats::DeviceStats;
use crate::uplink::{Uplink, UplinkState};

/// Why the gateway could not run.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The embedded broker did not start.
    #[error(transparent)]
    Broker(#[from] broker::BrokerError),
    /// The embedded broker stopped while the gateway ran.
    #[error(
        "the embedded broker stopped; exiting so that the service manager restarts serial2mqtt"
    )]
    BrokerDied,
    /// The queue could not be opened.
    #[error("cannot open the store-and-forward queue in {dir}: {source} (check gateway.state_dir: it must be writable by the service user)")]
    Queue {
        /// The queue directory.
        dir: std::path::PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A task of the gateway panicked (a bug): exit so the service manager restarts us.
    #[error("internal error: {0}")]
    Task(String),
    /// A simulated device could not get a pseudo-terminal.
    #[error("device `{device}`: cannot create a pseudo-terminal for the simulator: {source}")]
    Simulator {
        /// The device.
        device: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Opens the store-and-forward queue and reports what recovery did.
async fn open_queue(settings: &QueueSettings) -> Result<QueueHandle, GatewayError> {
    let s = settings.clone();
    let (handle, recovery) = tokio::task::spawn_blocking(move || queue::service::start(&s))
        .await
        .map_err(|e| GatewayError::Task(e.to_string()))?
        .map_err(|source| GatewayError::Queue {
            dir: settings.dir.clone(),
            source,
        })?;
    if recovery.torn_bytes > 0 {
        warn!(
            bytes = recovery.torn_bytes,
            "queue: a write torn by a crash or power cut was cut off"
        );
    }
    for p in &recovery.set_aside {
        warn!(path = %p.display(), "queue: an unreadable segment was set aside");
    }
    if recovery.cursor_corrupt {
        warn!("queue: the ack cursor was damaged; resending from the oldest stored message (duplicates, not loss)");
    }
    info!(dir = %settings.dir.display(), waiting = recovery.depth, "store-and-forward queue open");
    Ok(handle)
}

/// Publishes a retained JSON summary of devices, queue and uplink every `every`.
async fn publish_stats(
    every: Duration,
    topic: String,
    outlet: Outlet,
    devices: Vec<(String, Arc<DeviceStats>)>,
    queue: Option<QueueHandle>,
    uplink: Arc<UplinkState>,
    shutdown: CancellationToken,
) {
    if every.is_zero() {
        return;
    }
    let mut tick = tokio::time::interval(every);
    tick.tick().await;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut doc = serde_json::Map::new();
        let devs: serde_json::Map<String, serde_json::Value> = devices
            .iter()
            .map(|(name, s)| (name.clone(), s.to_json()))
            .collect();
        doc.insert("devices".into(), devs.into());
        if let Some(q) = &queue {
            if let Ok(st) = q.stats().await {
                doc.insert(
                    "queue".into(),
                    serde_json::json!({
                        "depth": st.depth,
                        "bytes": st.bytes,
                        "segments": st.segments,
                        "dropped": {
                            "full": st.drops.full,
                            "disk_full": st.drops.disk_full,
                            "corrupt": st.drops.corrupt_segments,
                            "too_large": st.drops.too_large,
                        },
                    }),
                );
                doc.insert(
                    "uplink".into(),
                    serde_json::json!({
                        "connected": uplink.connected.load(Ordering::Relaxed),
                        "connects": uplink.connects.load(Ordering::Relaxed),
                        "delivered": uplink.delivered.load(Ordering::Relaxed),
                    }),
                );
            }
        }
        let m = Message {
            topic: topic.clone(),
            payload: Bytes::from(serde_json::Value::Object(doc).to_string()),
            qos: 0,
            retain: true,
        };
        // Through the outlet: it is forwarded upstream like any message on a `forward` topic.
        if outlet.send(vec![m]).await.is_err() {
            return;
        }
    }
}

/// Runs the gateway until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), GatewayError> {
    let started = std::time::Instant::now();

    // The queue first: it must be open (and repaired) before anything produces messages.
    let queue = match &config.uplink {
        Some(_) => Some(open_queue(&config.queue).await?),
        None => None,
    };

    let listen = config.broker.listen;
    let settings = config.broker;
    let broker_failed = CancellationToken::new();
    let bridge = match (&config.uplink, &queue) {
        (Some(u), Some(q)) => Some(broker::Bridge {
            forward: u.forward.clone(),
            queue: q.clone(),
        }),
        _ => None,
    };
    // Starting rumqttd blocks briefly (threads, waiting for its listener): off the async workers.
    let failed = broker_failed.clone();
    let (mut local, outbox) =
        tokio::task::spawn_blocking(move || broker::start(&settings, failed, bridge))
            .await
            .map_err(|e| GatewayError::Task(e.to_string()))??;
    info!(listen = %listen, elapsed_ms = started.elapsed().as_millis() as u64, "embedded MQTT broker listening");

    let outlet = Outlet {
        local: outbox.clone(),
        upstream: match (&config.uplink, &queue) {
            (Some(u), Some(q)) => Some(Upstream {
                queue: q.clone(),
                forward: u.forward.clone().into(),
            }),
            _ => None,
        },
    };
    let uplink_state = Arc::new(UplinkState::default());
    let uplink_stop = CancellationToken::new();
    let uplink_task = match (config.uplink.clone(), &queue) {
        (Some(settings), Some(q)) => {
            let task = Uplink {
                settings,
                queue: q.clone(),
                local: outbox.clone(),
                state: Arc::clone(&uplink_state),
                shutdown: uplink_stop.clone(),
            };
            Some(tokio::spawn(task.run()))
        }
        _ => None,
    };

    let gateway: Arc<str> = Arc::from(config.gateway.id.as_str());
    // Simulators stop after the devices, so a stopping device does not see its port vanish.
    let simulators = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let mut device_stats: Vec<(String, Arc<DeviceStats>)> = Vec::new();
    for device in config.devices {
        let path = match &device.source {
            PortSource::Path(p) => p.clone(),
            PortSource::Simulated(sim) => {
                let path = simulate::start(&device.name, sim, &device.framing, simulators.clone())
                    .map_err(|source| GatewayError::Simulator {
                        device: device.name.clone(),
                        source,
                    })?;
                info!(device = %device.name, port = %path.display(), profile = ?sim.profile, "simulated sensor started");
                path
            }
        };
        let stats = Arc::new(DeviceStats::default());
        device_stats.push((device.name.clone(), Arc::clone(&stats)));
        let task = DeviceTask {
            device,
            path,
            gateway: Arc::clone(&gateway),
            outlet: outlet.clone(),
            stats,
            shutdown: shutdown.clone(),
        };
        tasks.spawn(task.run());
    }
    let stats_task = tokio::spawn(publish_stats(
        config.gateway.stats_interval,
        format!("serial2mqtt/{}/stats", config.gateway.id),
        outlet.clone(),
        device_stats.clone(),
        queue.clone(),
        Arc::clone(&uplink_state),
        shutdown.clone(),
    ));
    drop(outbox);
    drop(outlet);
    info!(gateway = %gateway, devices = tasks.len(), "gateway running");

    let mut task_failed = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = broker_failed.cancelled() => {
                shutdown.cancel();
                break;
            }
            Some(done) = tasks.join_next() => {
                // Device tasks only end on shutdown; one that ends early has panicked.
                if let Err(e) = done {
                    error!("a device task failed: {e}; stopping");
                    task_failed = Some(e.to_string());
                    shutdown.cancel();
                    break;
                }
            }
        }
    }
    info!("stopping");
    while tasks.join_next().await.is_some() {}
    let _ = stats_task.await;
    simulators.cancel();
    // The uplink goes after the devices (their last messages are queued), announcing `offline`;
    // then the queue makes everything durable.
    uplink_stop.cancel();
    if let Some(t) = uplink_task {
        let _ = t.await;
    }
    if let Some(q) = &queue {
        q.stop().await;
    }
    let _ = tokio::task::spawn_blocking(move || local.flush(Duration::from_secs(5))).await;
    if broker_failed.is_cancelled() {
        return Err(GatewayError::BrokerDied);
    }
    if let Some(e) = task_failed {
        return Err(GatewayError::Task(e));
    }
    info!("serial2mqtt stopped");
    Ok(())
}

//! Wiring: start the queue, the broker, the uplink and one task per device; apply reloads;
//! stop everything through one path.
//!
//! Data flows one way: device task (serial → frames → rules) → outlet → queue and broker link.
//! A reload (SIGHUP) restarts only the devices whose settings or rules changed; the queue, the
//! broker with its sessions and retained messages, and the uplink keep running. Shutdown is a
//! single [`CancellationToken`]: devices stop reading and announce `offline`, their outlet
//! senders drop, the publisher drains what is left into the broker, the uplink says goodbye,
//! the queue syncs, and `run` returns.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use std::sync::atomic::Ordering;

use bytes::Bytes;

use crate::broker;
use crate::config::QueueSettings;
use crate::config::{Config, ConfigDiff, Device, PortSource};
use crate::downlink::{self, Routes};
use crate::homeassistant;
use crate::message::{Filters, Message};
use crate::outlet::{Outlet, Upstream};
use crate::prometheus;
use crate::queue::{self, thread::QueueHandle};
use crate::serial::device::DeviceTask;
use crate::serial::simulate;
use crate::stats::{DeviceList, DeviceStats};
use crate::systemd::Systemd;
use crate::uplink::{Uplink, UplinkState};

/// A retained QoS 1 message for the embedded broker.
fn local_message(topic: &str, payload: &'static str) -> Message {
    Message {
        topic: topic.to_owned(),
        payload: Bytes::from_static(payload.as_bytes()),
        qos: 1,
        retain: true,
    }
}

/// Publishes discovery messages on the embedded broker (never upstream: see `homeassistant`).
async fn announce(local: &crate::message::Outbox, messages: Vec<Message>) {
    for m in messages {
        if local.send(m).await.is_err() {
            return;
        }
    }
}

/// When the first stats message goes out after start, at the latest.
const FIRST_STATS: Duration = Duration::from_secs(2);
/// How often the systemd status line is refreshed when no watchdog sets the pace.
const STATUS_EVERY: Duration = Duration::from_secs(10);

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
    /// Another process holds the state_dir, or it cannot be locked.
    #[error(transparent)]
    StateDir(#[from] crate::statedir::LockError),
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
    /// The Prometheus endpoint did not start.
    #[error(transparent)]
    Metrics(#[from] prometheus::MetricsError),
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
    let (handle, recovery) = tokio::task::spawn_blocking(move || queue::thread::start(&s))
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
    for p in &recovery.strays {
        warn!(path = %p.display(), "queue: {} is named like a queue segment but is not a regular file; it is ignored (remove it: the gateway never wrote it)", p.display());
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
    devices: DeviceList,
    queue: Option<QueueHandle>,
    uplink: Arc<UplinkState>,
    shutdown: CancellationToken,
) {
    if every.is_zero() {
        return;
    }
    let started = std::time::Instant::now();
    // The first summary soon after start (devices have had time to open), then every `every`.
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + every.min(FIRST_STATS), every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let mut doc = serde_json::Map::new();
        doc.insert(
            "at".into(),
            humantime::format_rfc3339_seconds(std::time::SystemTime::now())
                .to_string()
                .into(),
        );
        doc.insert("uptime_s".into(), started.elapsed().as_secs().into());
        let devs: serde_json::Map<String, serde_json::Value> = devices
            .lock()
            .map(|d| {
                d.iter()
                    .map(|(name, s)| (name.clone(), s.to_json()))
                    .collect()
            })
            .unwrap_or_default();
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

/// One running device: its task and what stops it.
struct Running {
    stats: Arc<DeviceStats>,
    stop: CancellationToken,
    /// Stops its simulator, if it is simulated (after the device, so it does not see its
    /// port vanish).
    simulator: Option<CancellationToken>,
    /// Ends when the device task has ended.
    done: tokio::task::JoinHandle<()>,
}

/// Starts, replaces and stops device tasks; everything else of the gateway stays up.
struct Devices {
    running: Vec<(String, Running)>,
    gateway: Arc<str>,
    outlet: Outlet,
    shutdown: CancellationToken,
    list: DeviceList,
    /// A device task that panicked reports here.
    failed: mpsc::UnboundedSender<String>,
    /// Where the broker link sends the devices' commands.
    routes: Routes,
}

impl Devices {
    fn start(&mut self, device: Device) -> Result<(), GatewayError> {
        let name = device.name.clone();
        let stop = self.shutdown.child_token();
        let (path, simulator) = match &device.source {
            PortSource::Path(p) => (p.clone(), None),
            PortSource::Simulated(sim) => {
                let sim_stop = CancellationToken::new();
                let path = simulate::start(&device.name, sim, &device.framing, sim_stop.clone())
                    .map_err(|source| GatewayError::Simulator {
                        device: device.name.clone(),
                        source,
                    })?;
                info!(device = %device.name, port = %path.display(), profile = ?sim.profile, "simulated sensor started");
                (path, Some(sim_stop))
            }
        };
        let stats = Arc::new(DeviceStats::default());
        let task = DeviceTask {
            device,
            path,
            gateway: Arc::clone(&self.gateway),
            outlet: self.outlet.clone(),
            stats: Arc::clone(&stats),
            shutdown: stop.clone(),
        };
        let (inbox, requests) = mpsc::channel(downlink::INBOX);
        self.routes.register(&name, &task.device.commands, inbox);
        let handle = tokio::spawn(task.run(requests));
        let failed = self.failed.clone();
        let who = name.clone();
        let done = tokio::spawn(async move {
            if let Err(e) = handle.await {
                let _ = failed.send(format!("device `{who}`: {e}"));
            }
        });
        self.running.push((
            name,
            Running {
                stats,
                stop,
                simulator,
                done,
            },
        ));
        self.publish_list();
        Ok(())
    }

    /// Stops the named device (its task announces `offline`) and waits for it.
    async fn stop(&mut self, name: &str) {
        let Some(i) = self.running.iter().position(|(n, _)| n == name) else {
            return;
        };
        let (_, r) = self.running.remove(i);
        self.routes.remove(name);
        r.stop.cancel();
        let _ = r.done.await;
        if let Some(sim) = r.simulator {
            sim.cancel();
        }
        self.publish_list();
    }

    async fn stop_all(&mut self) {
        let names: Vec<String> = self.running.iter().map(|(n, _)| n.clone()).collect();
        for r in self.running.iter() {
            r.1.stop.cancel();
        }
        for name in names {
            self.stop(&name).await;
        }
    }

    /// Applies a new config's devices as `diff` says: removed ones stop, changed ones restart,
    /// new ones start, unchanged ones keep running (and keep their port open). A device that is
    /// not running (it failed to start) is started.
    async fn reload(
        &mut self,
        diff: &ConfigDiff,
        devices: Vec<Device>,
    ) -> Result<(), GatewayError> {
        for name in &diff.removed {
            info!(device = %name, "reload: device removed");
            self.stop(name).await;
        }
        for device in devices {
            let running = self.running.iter().any(|(n, _)| *n == device.name);
            if diff.changed.contains(&device.name) {
                info!(device = %device.name, "reload: device changed, restarting it");
                self.stop(&device.name).await;
            } else if diff.added.contains(&device.name) {
                info!(device = %device.name, "reload: device added");
            } else if running {
                continue;
            }
            self.start(device)?;
        }
        Ok(())
    }

    fn publish_list(&self) {
        if let Ok(mut list) = self.list.lock() {
            *list = self
                .running
                .iter()
                .map(|(n, r)| (n.clone(), Arc::clone(&r.stats)))
                .collect();
        }
    }

    fn online(&self) -> usize {
        self.running
            .iter()
            .filter(|(_, r)| r.stats.online.load(Ordering::Relaxed))
            .count()
    }
}

/// A one-line status for `systemctl status`.
async fn status_line(
    devices: &Devices,
    queue: Option<&QueueHandle>,
    uplink: Option<&UplinkState>,
) -> String {
    let mut line = format!(
        "{}/{} devices online",
        devices.online(),
        devices.running.len()
    );
    if let (Some(q), Some(u)) = (queue, uplink) {
        let state = if u.connected.load(Ordering::Relaxed) {
            "connected"
        } else {
            "offline, buffering"
        };
        match tokio::time::timeout(Duration::from_secs(1), q.stats()).await {
            Ok(Ok(st)) => line.push_str(&format!(", queue {} messages, uplink {state}", st.depth)),
            _ => line.push_str(&format!(", queue busy, uplink {state}")),
        }
    }
    line
}

/// Runs the gateway until `shutdown` is cancelled, applying each config that arrives on
/// `reloads` (already validated) to the devices and rules.
pub async fn run(
    config: Config,
    shutdown: CancellationToken,
    mut reloads: mpsc::Receiver<Config>,
    systemd: Systemd,
) -> Result<(), GatewayError> {
    let started = std::time::Instant::now();
    // Before anything is bound or opened: a second gateway on this state_dir stops here, with
    // a message naming the first. Without an uplink nothing is stored there: the state_dir is
    // claimed if it exists (a second copy of the service still stops here), never created.
    let _claim = crate::statedir::lock(&config.gateway.state_dir, config.uplink.is_some())?;
    // What runs now, for the reloads to compare with: the devices as last applied, the other
    // sections as started.
    let mut running = config.clone();
    if let Some(listen) = config.metrics {
        prometheus::start(listen)?;
        info!(listen = %listen, "Prometheus metrics on http://{listen}/metrics");
    }

    // The queue first: it must be open (and repaired) before anything produces messages.
    let queue = match &config.uplink {
        Some(_) => Some(open_queue(&config.queue).await?),
        None => None,
    };

    let listen = config.broker.listen;
    let settings = config.broker;
    let broker_failed = CancellationToken::new();
    let bridge = match (&config.uplink, &queue) {
        (Some(u), Some(q)) => {
            let q = q.clone();
            Some(broker::Bridge {
                forward: Filters::new(&u.forward),
                // Blocking is right here: it runs on the link's own thread.
                sink: Box::new(move |m| {
                    let _ = q.append_blocking(vec![m]);
                }),
            })
        }
        _ => None,
    };
    // Starting rumqttd blocks briefly (threads, waiting for its listener): off the async workers.
    let failed = broker_failed.clone();
    // Devices register their commands as they start; the first one makes the link subscribe.
    let routes = Routes::default();
    let link_routes = routes.clone();
    let (mut local, outbox) = tokio::task::spawn_blocking(move || {
        broker::start(&settings, failed, bridge, Arc::new(link_routes))
    })
    .await
    .map_err(|e| GatewayError::Task(e.to_string()))??;
    info!(listen = %listen, elapsed_ms = started.elapsed().as_millis() as u64, "embedded MQTT broker listening");

    let outlet = Outlet {
        local: outbox.clone(),
        upstream: match (&config.uplink, &queue) {
            (Some(u), Some(q)) => Some(Upstream {
                queue: q.clone(),
                forward: Filters::new(&u.forward),
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
    // Local only (never forwarded): the gateway's status and Home Assistant discovery.
    let local_only = outbox.clone();
    drop(outbox);
    let status_topic = homeassistant::gateway_status_topic(&config.gateway.id);
    let _ = local_only
        .send(local_message(&status_topic, "online"))
        .await;
    let ha = config.homeassistant.clone();
    let gateway_id = config.gateway.id.clone();
    let discovery = |devices: &[Device]| {
        homeassistant::Discovery {
            prefix: &ha.discovery_prefix,
            gateway: &gateway_id,
        }
        .configs(devices)
    };
    let mut announced = discovery(&config.devices);
    if !announced.is_empty() {
        routes.watch_births(&ha.status_topic);
    }
    announce(
        &local_only,
        homeassistant::transition(&Default::default(), &announced),
    )
    .await;

    let (failed_tx, mut device_failed) = mpsc::unbounded_channel();
    let mut devices = Devices {
        running: Vec::new(),
        gateway: Arc::from(config.gateway.id.as_str()),
        outlet: outlet.clone(),
        shutdown: shutdown.clone(),
        list: DeviceList::default(),
        failed: failed_tx,
        routes,
    };
    for device in config.devices {
        devices.start(device)?;
    }
    let stats_task = tokio::spawn(publish_stats(
        config.gateway.stats_interval,
        format!("serial2mqtt/{}/stats", config.gateway.id),
        outlet,
        Arc::clone(&devices.list),
        queue.clone(),
        Arc::clone(&uplink_state),
        shutdown.clone(),
    ));
    let collector = config.metrics.map(|_| {
        tokio::spawn(prometheus::collect(
            prometheus::Sources {
                devices: Arc::clone(&devices.list),
                queue: queue.clone(),
                uplink: uplink_task.as_ref().map(|_| Arc::clone(&uplink_state)),
                routes: devices.routes.clone(),
            },
            shutdown.clone(),
        ))
    });
    info!(gateway = %devices.gateway, devices = devices.running.len(), "gateway running");
    let uplink = uplink_task.as_ref().map(|_| uplink_state.as_ref());
    systemd.ready(&status_line(&devices, queue.as_ref(), uplink).await);

    // The watchdog is pinged from this loop: if the runtime stalls, the pings stop and systemd
    // restarts the service. The status line is refreshed at the same pace.
    let mut tick = tokio::time::interval(systemd.watchdog_every().unwrap_or(STATUS_EVERY));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut task_failed = None;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            _ = broker_failed.cancelled() => {
                shutdown.cancel();
                break;
            }
            Some(why) = device_failed.recv() => {
                // Device tasks only end when stopped; one that ends otherwise has panicked.
                error!("a device task failed: {why}; stopping");
                task_failed = Some(why);
                shutdown.cancel();
                break;
            }
            Some(new) = reloads.recv() => {
                let diff = ConfigDiff::between(&running, &new);
                for what in &diff.restart {
                    warn!("reload: `{what}` settings changed; they take effect at the next restart (systemctl restart serial2mqtt)");
                }
                let now = discovery(&new.devices);
                if !now.is_empty() {
                    devices.routes.watch_births(&ha.status_topic);
                }
                running.devices = new.devices.clone();
                match devices.reload(&diff, new.devices).await {
                    Ok(()) => info!(
                        added = diff.added.len(),
                        changed = diff.changed.len(),
                        removed = diff.removed.len(),
                        "config reloaded"
                    ),
                    Err(e) => error!("reload: {e}"),
                }
                announce(&local_only, homeassistant::transition(&announced, &now)).await;
                announced = now;
                systemd.ready(&status_line(&devices, queue.as_ref(), uplink).await);
            }
            _ = devices.routes.births.notified() => {
                info!(entities = announced.len(), "Home Assistant is online: announcing the entities again");
                announce(&local_only, homeassistant::transition(&announced, &announced)).await;
            }
            _ = tick.tick() => {
                systemd.watchdog();
                systemd.status(&status_line(&devices, queue.as_ref(), uplink).await);
            }
        }
    }
    info!("stopping");
    systemd.stopping();
    devices.stop_all().await;
    let _ = stats_task.await;
    if let Some(c) = collector {
        let _ = c.await;
    }
    // The last outlet clone goes with `devices`: the publisher then drains into the broker.
    drop(devices);
    let _ = local_only
        .send(local_message(&status_topic, "offline"))
        .await;
    drop(local_only);
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

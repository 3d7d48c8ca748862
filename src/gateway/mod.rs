//! Wiring: start the queue, the broker, the uplink and one task per device; apply reloads;
//! stop everything through one path.
//!
//! Data flows one way: device task (serial → frames → rules) → outlet → queue and broker link.
//! A reload (SIGHUP) restarts only the devices whose settings or rules changed ([`ConfigDiff`]);
//! the queue, the broker with its sessions and retained messages, and the uplink keep running.
//! Shutdown is a single [`CancellationToken`], then an ordered stop within one deadline
//! ([`shutdown`]): devices stop reading and announce `offline`, their outlet senders drop, the
//! publisher drains what is left into the broker, the uplink says goodbye, the queue syncs,
//! and `run` returns. `devices` supervises the device tasks; [`summary`] is what the gateway
//! says of itself (stats message, `status`, systemd status line).

mod devices;
pub mod shutdown;
pub mod summary;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::broker::{self, LocalBroker};
use crate::config::check::{commands_in_force, refuses_commands};
use crate::config::model::ServerSettings;
use crate::config::{Config, ConfigDiff, Device, QueueSettings};
use crate::downlink::Routes;
use crate::homeassistant;
use crate::listener::{self, Budget, Caps};
use crate::message::{Filters, Message, Outbox};
use crate::outlet::{Outlet, Upstream};
use crate::prometheus;
use crate::queue::{self, thread::QueueHandle};
use crate::recent::Recent;
use crate::serial::exchange::Registry;
use crate::stats::DeviceList;
use crate::systemd::Systemd;
use crate::uplink::{Uplink, UplinkState};
use devices::Devices;
use summary::{Sources, Summary};

/// A retained QoS 1 message for the embedded broker.
fn local_message(topic: &str, payload: &'static str) -> Message {
    Message {
        topic: topic.to_owned(),
        payload: Bytes::from_static(payload.as_bytes()),
        qos: 1,
        retain: true,
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
    /// The web dashboard did not start.
    #[error(transparent)]
    Web(#[from] crate::web::WebError),
    /// The Modbus TCP server's listener could not be bound.
    #[error("{0}")]
    ModbusServer(std::io::Error),
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
    if recovery.seq_corrupt {
        warn!("queue: the file of reserved sequence numbers was damaged; numbering continues 2^40 higher, so no number is used twice");
    }
    info!(dir = %settings.dir.display(), waiting = recovery.depth, "store-and-forward queue open");
    Ok(handle)
}

/// Publishes the retained [`Summary`] every `every` (the first one soon after start, when the
/// devices have had time to open); through the outlet, so it is forwarded upstream like any
/// message on a `forward` topic.
/// What the stats message is made from, owned by its task.
struct StatsParts {
    devices: DeviceList,
    queue: Option<QueueHandle>,
    uplink: Option<Arc<UplinkState>>,
    server: Option<Arc<crate::server::Shared>>,
}

async fn publish_stats(
    every: Duration,
    topic: String,
    outlet: Outlet,
    parts: StatsParts,
    shutdown: CancellationToken,
) {
    let StatsParts {
        devices,
        queue,
        uplink,
        server,
    } = parts;
    if every.is_zero() {
        return;
    }
    let started = Instant::now();
    let mut tick =
        tokio::time::interval_at(tokio::time::Instant::now() + every.min(FIRST_STATS), every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let from = Sources {
            started,
            devices: &devices,
            queue: queue.as_ref(),
            uplink: uplink.as_deref(),
            server: server.as_deref(),
        };
        let summary = Summary::collect(&from, every).await;
        let Ok(json) = serde_json::to_vec(&summary) else {
            continue;
        };
        let m = Message {
            topic: topic.clone(),
            payload: Bytes::from(json),
            qos: 0,
            retain: true,
        };
        if outlet.send(vec![m]).await.is_err() {
            return;
        }
    }
}

/// The embedded broker, started off the async workers (rumqttd blocks briefly: threads, its
/// listener), with the devices' command routes as its downlink and, with an uplink, the bridge
/// that forwards local clients' messages into the queue; its connection cap scaled by `scale`
/// (see [`listener_budget`]).
async fn start_broker(
    config: &Config,
    queue: Option<&QueueHandle>,
    routes: Routes,
    failed: CancellationToken,
    scale: f64,
) -> Result<(LocalBroker, Outbox), GatewayError> {
    let settings = config.broker.clone();
    let bridge = match (&config.uplink, queue) {
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
    let caps = Caps {
        total: listener::scaled(settings.max_connections, scale),
        per_peer: settings.max_connections_per_peer,
        exempt_loopback: true,
    };
    tokio::task::spawn_blocking(move || {
        broker::start(&settings, caps, failed, bridge, Arc::new(routes))
    })
    .await
    .map_err(|e| GatewayError::Task(e.to_string()))?
    .map_err(GatewayError::from)
}

/// The uplink's task, when there is an uplink.
struct UplinkTask {
    state: Arc<UplinkState>,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

fn start_uplink(config: &Config, queue: Option<&QueueHandle>, local: Outbox) -> Option<UplinkTask> {
    let (settings, queue) = (config.uplink.clone()?, queue?.clone());
    let state = Arc::new(UplinkState::default());
    let stop = CancellationToken::new();
    let task = Uplink {
        settings,
        queue,
        local,
        state: Arc::clone(&state),
        shutdown: stop.clone(),
    };
    Some(UplinkTask {
        state,
        stop,
        task: tokio::spawn(task.run()),
    })
}

/// Home Assistant discovery on the embedded broker only (never upstream: see `homeassistant`):
/// what is announced now, so that a reload announces the difference.
struct Announcer {
    settings: crate::config::schema::HomeAssistantSettings,
    gateway: String,
    local: Outbox,
    announced: std::collections::BTreeMap<String, Bytes>,
}

impl Announcer {
    /// Announces the devices' entities, removing the ones that are gone; starts watching Home
    /// Assistant's status once there is something to announce.
    async fn announce(&mut self, devices: &[Device], routes: &Routes) {
        let now = homeassistant::Discovery {
            prefix: &self.settings.discovery_prefix,
            gateway: &self.gateway,
        }
        .configs(devices);
        if !now.is_empty() {
            routes.watch_births(&self.settings.status_topic);
        }
        self.send(homeassistant::transition(&self.announced, &now))
            .await;
        self.announced = now;
    }

    /// Home Assistant restarted: everything again.
    async fn again(&self) {
        info!(
            entities = self.announced.len(),
            "Home Assistant is online: announcing the entities again"
        );
        self.send(homeassistant::transition(&self.announced, &self.announced))
            .await;
    }

    async fn send(&self, messages: Vec<Message>) {
        for m in messages {
            if self.local.send(m).await.is_err() {
                return;
            }
        }
    }
}

/// Raises the descriptor limit and returns the factor every listener's caps (the local
/// broker's, the dashboard's, the metrics endpoint's) are scaled by so that their connections
/// leave [`listener::FD_RESERVE`] descriptors for the ports and the queue (1 unless the limit
/// is very low; a warning then says which limit fits).
fn listener_budget(config: &Config) -> f64 {
    let mut budget = Budget::new(listener::raise_fd_limit());
    budget.want(
        "local broker",
        config.broker.max_connections,
        broker::gate::FDS_PER_CLIENT,
    );
    let web = config.web.as_ref();
    if let Some(w) = web {
        budget.want("dashboard", w.limits.max_connections, 1);
    }
    if let Some(s) = &config.modbus_server {
        budget.want("modbus server", s.max_connections, 1);
    }
    if let Some(m) = &config.metrics {
        if web.map(|w| w.listen) != Some(m.listen) {
            budget.want("metrics", crate::http::Limits::METRICS.max_connections, 1);
        }
    }
    budget.scale()
}

/// Runs the gateway until `shutdown` is cancelled, applying each config that arrives on
/// `reloads` (already validated) to the devices and rules; `recent` is the dashboard's record
/// (with `web:`), which the log already writes into.
pub async fn run(
    mut config: Config,
    shutdown: CancellationToken,
    mut reloads: mpsc::Receiver<Config>,
    systemd: Systemd,
    recent: Option<Arc<Recent>>,
) -> Result<(), GatewayError> {
    let started = Instant::now();
    // Before anything is bound or opened: a second gateway on this state_dir stops here, with
    // a message naming the first. Without an uplink nothing is stored there: the state_dir is
    // claimed if it exists (a second copy of the service still stops here), never created.
    let _claim = crate::statedir::lock(&config.gateway.state_dir, config.uplink.is_some())?;
    let web_listen = config.web.as_ref().map(|w| w.listen);
    let budget = listener_budget(&config);
    let mut metrics_on_web = None;
    let mut metrics_own = None;
    if let Some(m) = &config.metrics {
        let handle = prometheus::install(m.listen)?;
        if Some(m.listen) == web_listen {
            metrics_on_web = Some(handle);
            info!(listen = %m.listen, "Prometheus metrics on the dashboard's listener, /metrics");
        } else {
            let limits = crate::http::Limits::METRICS.scaled(budget);
            metrics_own = Some((prometheus::bind(m, limits).await?, handle));
        }
    }
    let web = match &config.web {
        Some(settings) => {
            let mut settings = settings.clone();
            settings.limits = settings.limits.scaled(budget);
            Some(crate::web::bind(&settings).await?)
        }
        None => None,
    };
    let shared = Registry::default();
    let modbus_server = match &config.modbus_server {
        Some(settings) => Some(
            crate::server::bind(
                &ServerSettings {
                    max_connections: listener::scaled(settings.max_connections, budget),
                    ..settings.clone()
                },
                shared.clone(),
            )
            .await
            .map_err(GatewayError::ModbusServer)?,
        ),
        None => None,
    };
    // The queue first: it must be open (and repaired) before anything produces messages.
    let queue = match &config.uplink {
        Some(_) => Some(open_queue(&config.queue).await?),
        None => None,
    };
    let broker_failed = CancellationToken::new();
    // Devices register their commands as they start; the first one makes the link subscribe.
    let routes = Routes::default();
    let (local, outbox) = start_broker(
        &config,
        queue.as_ref(),
        routes.clone(),
        broker_failed.clone(),
        budget,
    )
    .await?;
    // The broker just started is the one in force: `check` has said whether it refuses commands.
    commands_in_force(&config.broker, &mut config.devices);
    let listen = config.broker.listen;
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
    let uplink = start_uplink(&config, queue.as_ref(), outbox.clone());
    // Local only (never forwarded): the gateway's status and Home Assistant discovery.
    let status_topic = homeassistant::gateway_status_topic(&config.gateway.id);
    let _ = outbox.send(local_message(&status_topic, "online")).await;
    let mut announcer = Announcer {
        settings: config.homeassistant.clone(),
        gateway: config.gateway.id.clone(),
        local: outbox,
        announced: Default::default(),
    };
    announcer.announce(&config.devices, &routes).await;

    let (failed_tx, device_failed) = mpsc::unbounded_channel();
    let mut devices = Devices {
        running: Vec::new(),
        gateway: Arc::from(config.gateway.id.as_str()),
        outlet: outlet.clone(),
        shutdown: shutdown.clone(),
        list: DeviceList::default(),
        failed: failed_tx,
        routes,
        recent: recent.clone(),
        shared,
        share: config.modbus_server.as_ref().map_or(0.0, |s| s.share),
    };
    devices.start_all(config.devices.clone())?;
    let uplink_state = uplink.as_ref().map(|u| Arc::clone(&u.state));
    let server_counters = modbus_server.as_ref().map(crate::server::Bound::shared);
    let mut helpers = vec![tokio::spawn(publish_stats(
        config.gateway.stats_interval,
        format!("serial2mqtt/{}/stats", config.gateway.id),
        outlet,
        StatsParts {
            devices: Arc::clone(&devices.list),
            queue: queue.clone(),
            uplink: uplink_state.clone(),
            server: server_counters.clone(),
        },
        shutdown.clone(),
    ))];
    if let Some(server) = modbus_server {
        helpers.push(server.serve(shutdown.clone()));
    }
    if let Some((bound, handle)) = metrics_own {
        helpers.push(bound.serve(handle, shutdown.clone()));
    }
    if config.metrics.is_some() {
        helpers.push(tokio::spawn(prometheus::collect(
            prometheus::Sources {
                devices: Arc::clone(&devices.list),
                queue: queue.clone(),
                uplink: uplink_state.clone(),
                routes: devices.routes.clone(),
                broker: local.bounds(),
                server: server_counters.clone(),
            },
            shutdown.clone(),
        )));
    }
    let (web_devices, web_devices_rx) =
        tokio::sync::watch::channel(Arc::new(config.devices.clone()));
    if let (Some(bound), Some(recent)) = (web, recent) {
        let sources = crate::web::view::Sources {
            gateway: config.gateway.id.clone(),
            recent,
            list: Arc::clone(&devices.list),
            devices: web_devices_rx,
            queue: queue.clone(),
            uplink: uplink_state.clone(),
            rates: Default::default(),
            metrics: metrics_on_web,
        };
        helpers.push(bound.serve(sources, shutdown.clone()));
    }
    info!(gateway = %devices.gateway, devices = config.devices.len(), "gateway running");
    let serving = Serving {
        started,
        running: config,
        devices,
        announcer,
        queue,
        uplink_state,
        systemd,
        access: local.access.clone(),
        web_devices,
    };
    let (serving, task_failed) = serving
        .serve(shutdown, broker_failed.clone(), &mut reloads, device_failed)
        .await;
    serving.stop(helpers, uplink, local, &status_topic).await;
    if broker_failed.is_cancelled() {
        return Err(GatewayError::BrokerDied);
    }
    if let Some(e) = task_failed {
        return Err(GatewayError::Task(e));
    }
    info!("serial2mqtt stopped");
    Ok(())
}

/// What the running gateway's loop works with.
struct Serving {
    started: Instant,
    /// What runs now, for the reloads to compare with: the devices as last applied, the other
    /// sections as started.
    running: Config,
    devices: Devices,
    announcer: Announcer,
    queue: Option<QueueHandle>,
    uplink_state: Option<Arc<UplinkState>>,
    systemd: Systemd,
    /// The broker's logins and access rules, which a reload may replace.
    access: broker::AccessControl,
    /// The devices the dashboard shows (and its rule tester runs), replaced on reload.
    web_devices: tokio::sync::watch::Sender<Arc<Vec<Device>>>,
}

impl Serving {
    /// The summary for the status line (the queue gets a second to answer).
    async fn status_line(&self) -> String {
        let from = Sources {
            started: self.started,
            devices: &self.devices.list,
            queue: self.queue.as_ref(),
            uplink: self.uplink_state.as_deref(),
            server: None,
        };
        Summary::collect(&from, Duration::from_secs(1))
            .await
            .status_line()
    }

    /// Serves until shutdown (or a failed broker or device task): reloads, Home Assistant's
    /// restarts, the watchdog and the status line. Returns why a task failed, if one did.
    async fn serve(
        mut self,
        shutdown: CancellationToken,
        broker_failed: CancellationToken,
        reloads: &mut mpsc::Receiver<Config>,
        mut device_failed: mpsc::UnboundedReceiver<String>,
    ) -> (Self, Option<String>) {
        self.systemd.ready(&self.status_line().await);
        // The watchdog is pinged from this loop: if the runtime stalls, the pings stop and
        // systemd restarts the service. The status line is refreshed at the same pace.
        let mut tick = tokio::time::interval(self.systemd.watchdog_every().unwrap_or(STATUS_EVERY));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let births = Arc::clone(&self.devices.routes.births);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return (self, None),
                _ = broker_failed.cancelled() => {
                    shutdown.cancel();
                    return (self, None);
                }
                Some(why) = device_failed.recv() => {
                    // Device tasks only end when stopped; one that ends otherwise has panicked.
                    error!("a device task failed: {why}; stopping");
                    shutdown.cancel();
                    return (self, Some(why));
                }
                Some(new) = reloads.recv() => self.reload(new).await,
                _ = births.notified() => self.announcer.again().await,
                _ = tick.tick() => {
                    self.systemd.watchdog();
                    self.systemd.status(&self.status_line().await);
                }
            }
        }
    }

    /// Applies a checked config: what needs a restart is named, the access rules are swapped
    /// in, the commands follow the broker in force, the devices change as the diff says, Home
    /// Assistant hears of the difference.
    async fn reload(&mut self, mut new: Config) {
        let mut diff = ConfigDiff::between(&self.running, &new);
        for what in &diff.restart {
            warn!("reload: `{what}` settings changed; they take effect at the next restart (systemctl restart serial2mqtt)");
        }
        if diff.access {
            self.access.reload(&new.broker);
            info!("reload: the broker's logins and access rules are in force (new connections, and every later packet of the connected clients)");
            self.running.broker.users_file = new.broker.users_file.clone();
            self.running.broker.users = new.broker.users.clone();
            self.running.broker.acl_file = new.broker.acl_file.clone();
            self.running.broker.acl = new.broker.acl.clone();
        }
        self.command_policy(&new.broker, &mut new.devices, &mut diff);
        self.running.devices = new.devices.clone();
        self.web_devices.send_replace(Arc::new(new.devices.clone()));
        match self.devices.reload(&diff, new.devices).await {
            Ok(()) => info!(
                added = diff.added.len(),
                changed = diff.changed.len(),
                removed = diff.removed.len(),
                "config reloaded"
            ),
            Err(e) => error!("reload: {e}"),
        }
        self.announcer
            .announce(&self.running.devices, &self.devices.routes)
            .await;
        self.systemd.ready(&self.status_line().await);
    }

    /// Who may command the devices follows the broker in force, as the access swap above left
    /// it (`self.running.broker`), never the file's broker settings that wait for a restart
    /// (`file`). A device whose commands go on or off with it is restarted, so that its routes
    /// follow, although its own settings did not change; the log says which and why.
    fn command_policy(
        &self,
        file: &crate::config::schema::Broker,
        devices: &mut [Device],
        diff: &mut ConfigDiff,
    ) {
        let broker = &self.running.broker;
        let off = commands_in_force(broker, devices);
        let running = |name: &str| self.running.devices.iter().find(|r| r.name == name);
        let (mut now_off, mut still_off, mut now_on) = (Vec::new(), Vec::new(), Vec::new());
        for d in devices.iter() {
            let Some(r) = running(&d.name) else {
                if off.contains(&d.name) {
                    still_off.push(d.name.clone());
                }
                continue;
            };
            let was_on = !r.commands.is_empty();
            let is_on = !d.commands.is_empty();
            if off.contains(&d.name) {
                if was_on {
                    now_off.push(d.name.clone());
                } else {
                    still_off.push(d.name.clone());
                }
            } else if is_on && !was_on && !r.spec.commands.is_empty() {
                now_on.push(d.name.clone());
            }
            if was_on != is_on && !diff.changed.contains(&d.name) {
                diff.changed.push(d.name.clone());
            }
        }
        if !off.is_empty() {
            let next = if refuses_commands(file) {
                "set broker.users_file (serial2mqtt passwd FILE USER) or broker.acl_file, or listen on 127.0.0.1:1883 and restart"
            } else {
                "the file's broker settings that allow them take effect at the next restart (systemctl restart serial2mqtt)"
            };
            let why = format!(
                "the broker in force listens on {} without logins or access rules, so anyone on the network could write to the devices; {next}",
                broker.listen
            );
            if !now_off.is_empty() {
                warn!(
                    "reload: the commands of {} are off from now: {why}",
                    now_off.join(", ")
                );
            }
            if !still_off.is_empty() {
                warn!(
                    "reload: the commands of {} stay off: {why}",
                    still_off.join(", ")
                );
            }
        }
        if !now_on.is_empty() {
            info!(
                "reload: the commands of {} are on again: the broker in force takes logins or access rules",
                now_on.join(", ")
            );
        }
    }

    /// The ordered stop (see [`shutdown`]): devices, helpers, the gateway's `offline`, the
    /// uplink, the queue's final sync, the broker's last deliveries; all within one deadline.
    async fn stop(
        mut self,
        helpers: Vec<tokio::task::JoinHandle<()>>,
        uplink: Option<UplinkTask>,
        mut local: LocalBroker,
        status_topic: &str,
    ) {
        info!("stopping");
        self.systemd.stopping();
        let stop = shutdown::Stop::within(shutdown::DEADLINE);
        // Kept for the steps after the devices: the uplink's goodbye, the queue's sync, the
        // broker's last deliveries.
        let (for_uplink, for_queue, for_broker) = (
            Duration::from_secs(3),
            Duration::from_secs(3),
            Duration::from_secs(1),
        );
        stop.step(
            "the devices",
            for_uplink + for_queue + for_broker,
            self.devices.stop_all(),
        )
        .await;
        for h in helpers {
            let _ = stop
                .step("the stats", for_uplink + for_queue + for_broker, h)
                .await;
        }
        // The last outlet clone goes with the devices: the publisher then drains into the
        // broker.
        drop(self.devices);
        let _ = self
            .announcer
            .local
            .send(local_message(status_topic, "offline"))
            .await;
        drop(self.announcer);
        // The uplink goes after the devices (their last messages are queued), announcing
        // `offline`; then the queue makes everything durable.
        if let Some(u) = uplink {
            u.stop.cancel();
            let _ = stop
                .step("the uplink", for_queue + for_broker, u.task)
                .await;
        }
        if let Some(q) = &self.queue {
            stop.step("the queue's final sync", for_broker, q.stop())
                .await;
        }
        let flush = stop.left().min(Duration::from_secs(5));
        let _ = tokio::task::spawn_blocking(move || local.flush(flush)).await;
    }
}

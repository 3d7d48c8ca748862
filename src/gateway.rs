//! Wiring: start the broker, one task per device, and stop everything through one path.
//!
//! Data flows one way: device task (serial → frames → rules) → outbox → broker link. Shutdown is
//! a single [`CancellationToken`]: devices stop reading and announce `offline`, their outbox
//! senders drop, the publisher drains what is left into the broker, and `run` returns.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::{error, info};

use crate::broker;
use crate::config::{Config, PortSource};
use crate::serial::device::DeviceTask;
use crate::serial::simulate;
use crate::stats::DeviceStats;

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

/// Runs the gateway until `shutdown` is cancelled.
pub async fn run(config: Config, shutdown: CancellationToken) -> Result<(), GatewayError> {
    let started = std::time::Instant::now();
    let listen = config.broker.listen;
    let settings = config.broker;
    let broker_failed = CancellationToken::new();
    // Starting rumqttd blocks briefly (threads, waiting for its listener): off the async workers.
    let failed = broker_failed.clone();
    let (mut local, outbox) = tokio::task::spawn_blocking(move || broker::start(&settings, failed))
        .await
        .map_err(|e| GatewayError::Task(e.to_string()))??;
    info!(listen = %listen, elapsed_ms = started.elapsed().as_millis() as u64, "embedded MQTT broker listening");

    let gateway: Arc<str> = Arc::from(config.gateway.id.as_str());
    // Simulators stop after the devices, so a stopping device does not see its port vanish.
    let simulators = CancellationToken::new();
    let mut tasks = JoinSet::new();
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
        let task = DeviceTask {
            device,
            path,
            gateway: Arc::clone(&gateway),
            outbox: outbox.clone(),
            stats: Arc::new(DeviceStats::default()),
            shutdown: shutdown.clone(),
        };
        tasks.spawn(task.run());
    }
    drop(outbox);
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
    simulators.cancel();
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

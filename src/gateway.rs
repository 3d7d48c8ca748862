//! Wiring: start the broker, one task per device, and stop everything through one path.
//!
//! Data flows one way: device task (serial → frames → rules) → outbox → broker link. Shutdown is
//! a single [`CancellationToken`]: devices stop reading and announce `offline`, their outbox
//! senders drop, the publisher drains what is left into the broker, and `run` returns.

use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;
use tracing::info;

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
    let (mut local, outbox) = tokio::task::block_in_place(|| broker::start(&settings))?;
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

    shutdown.cancelled().await;
    info!("stopping");
    while tasks.join_next().await.is_some() {}
    simulators.cancel();
    tokio::task::block_in_place(|| local.flush(Duration::from_secs(5)));
    info!("stopped");
    Ok(())
}

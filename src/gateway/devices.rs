//! The device tasks: started, replaced on reload, stopped; everything else of the gateway stays
//! up while they change.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::GatewayError;
use crate::config::{ConfigDiff, Device, PortSource};
use crate::downlink::{self, Routes};
use crate::outlet::Outlet;
use crate::serial::device::DeviceTask;
use crate::serial::simulate;
use crate::stats::{DeviceList, DeviceStats};

/// One running device: its task and what stops it.
pub(super) struct Running {
    pub stats: Arc<DeviceStats>,
    stop: CancellationToken,
    /// Stops its simulator, if it is simulated (after the device, so it does not see its
    /// port vanish).
    simulator: Option<CancellationToken>,
    /// Ends when the device task has ended.
    done: tokio::task::JoinHandle<()>,
}

/// Starts, replaces and stops device tasks; everything else of the gateway stays up.
pub(super) struct Devices {
    pub running: Vec<(String, Running)>,
    pub gateway: Arc<str>,
    pub outlet: Outlet,
    pub shutdown: CancellationToken,
    pub list: DeviceList,
    /// A device task that panicked reports here.
    pub failed: mpsc::UnboundedSender<String>,
    /// Where the broker link sends the devices' commands.
    pub routes: Routes,
}

impl Devices {
    /// Starts a device task (and its simulator, if any); its commands are routed to it.
    pub fn start(&mut self, device: Device) -> Result<(), GatewayError> {
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
    pub async fn stop(&mut self, name: &str) {
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

    /// Stops every device: all are told at once, then each is waited for.
    pub async fn stop_all(&mut self) {
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
    pub async fn reload(
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

    /// Makes the list the stats and metrics read match the running devices.
    fn publish_list(&self) {
        if let Ok(mut list) = self.list.lock() {
            *list = self
                .running
                .iter()
                .map(|(n, r)| (n.clone(), Arc::clone(&r.stats)))
                .collect();
        }
    }
}

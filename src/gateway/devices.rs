//! The port tasks: started, replaced on reload, stopped; everything else of the gateway stays
//! up while they change. Devices that name one port share one task (a bus); a simulated device
//! has a pseudo-terminal of its own.

use std::sync::Arc;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::GatewayError;
use crate::config::{ConfigDiff, Device, PortSource};
use crate::downlink::{self, Routes};
use crate::modbus::cache::RegisterCache;
use crate::outlet::Outlet;
use crate::serial::exchange::{self, Registry, Target};
use crate::serial::port::{Inbox, PortTask};
use crate::serial::simulate;
use crate::stats::{DeviceList, DeviceStats};

/// One running port task: its devices and what stops it.
pub(super) struct Running {
    /// Its devices' names, in config order.
    pub names: Vec<String>,
    /// Their counters, in the same order.
    pub stats: Vec<Arc<DeviceStats>>,
    stop: CancellationToken,
    /// Stops its simulator, if it is simulated (after the device, so it does not see its
    /// port vanish).
    simulator: Option<CancellationToken>,
    /// Ends when the task has ended.
    done: tokio::task::JoinHandle<()>,
}

/// Starts, replaces and stops port tasks; everything else of the gateway stays up.
pub(super) struct Devices {
    pub running: Vec<Running>,
    pub gateway: Arc<str>,
    pub outlet: Outlet,
    pub shutdown: CancellationToken,
    pub list: DeviceList,
    /// A task that panicked reports here.
    pub failed: mpsc::UnboundedSender<String>,
    /// Where the broker link sends the devices' commands.
    pub routes: Routes,
    /// The dashboard's record of the devices, when there is a dashboard.
    pub recent: Option<Arc<crate::recent::Recent>>,
    /// Where the Modbus TCP server finds the Modbus devices' buses.
    pub shared: Registry,
    /// The part of a line's time the server's clients get while polls wait too.
    pub share: f64,
}

/// The devices grouped by the port they share, in the order each port first appears.
pub fn by_port(devices: Vec<Device>) -> Vec<Vec<Device>> {
    let mut groups: Vec<(Option<std::path::PathBuf>, Vec<Device>)> = Vec::new();
    for d in devices {
        let key = d.source.key();
        match groups.iter_mut().find(|(k, _)| key.is_some() && *k == key) {
            Some((_, g)) => g.push(d),
            None => groups.push((key, vec![d])),
        }
    }
    groups.into_iter().map(|(_, g)| g).collect()
}

impl Devices {
    /// Starts one task per port for `devices`.
    pub fn start_all(&mut self, devices: Vec<Device>) -> Result<(), GatewayError> {
        for group in by_port(devices) {
            self.start(group)?;
        }
        Ok(())
    }

    /// Starts the task of one port's devices (and its simulator, if any); their commands are
    /// routed to it.
    pub fn start(&mut self, devices: Vec<Device>) -> Result<(), GatewayError> {
        let Some(first) = devices.first() else {
            return Ok(());
        };
        let stop = self.shutdown.child_token();
        let (path, simulator) = match &first.source {
            PortSource::Path(p) => (p.clone(), None),
            PortSource::Simulated(sim) => {
                let sim_stop = CancellationToken::new();
                let path = simulate::start(&first.name, sim, &first.framing, sim_stop.clone())
                    .map_err(|source| GatewayError::Simulator {
                        device: first.name.clone(),
                        source,
                    })?;
                info!(device = %first.name, port = %path.display(), profile = ?sim.profile, "simulated sensor started");
                (path, Some(sim_stop))
            }
        };
        let names: Vec<String> = devices.iter().map(|d| d.name.clone()).collect();
        let stats: Vec<Arc<DeviceStats>> = devices
            .iter()
            .map(|_| Arc::new(DeviceStats::default()))
            .collect();
        let (inbox, requests) = mpsc::channel(downlink::INBOX);
        let (exchanges_in, exchanges) = mpsc::channel(exchange::INBOX);
        let cache = Arc::new(RegisterCache::default());
        for (m, d) in devices.iter().enumerate() {
            self.routes.register(&d.name, m, &d.commands, inbox.clone());
            if let Some(unit) = &d.modbus {
                let target = Target {
                    inbox: exchanges_in.clone(),
                    member: m,
                    unit: unit.unit,
                    cache: Arc::clone(&cache),
                };
                self.shared.register(&d.name, target);
            }
        }
        let recent = match &self.recent {
            Some(r) => devices.iter().map(|d| r.device(&d.name)).collect(),
            None => Vec::new(),
        };
        let task = PortTask {
            devices,
            stats: stats.clone(),
            path,
            gateway: Arc::clone(&self.gateway),
            outlet: self.outlet.clone(),
            shutdown: stop.clone(),
            recent,
            cache,
            share: self.share,
        };
        let handle = tokio::spawn(task.run(Inbox {
            requests,
            exchanges,
        }));
        let failed = self.failed.clone();
        let who = names.join(", ");
        let done = tokio::spawn(async move {
            if let Err(e) = handle.await {
                let _ = failed.send(format!("device `{who}`: {e}"));
            }
        });
        self.running.push(Running {
            names,
            stats,
            stop,
            simulator,
            done,
        });
        self.publish_list();
        Ok(())
    }

    /// Stops the task at `i` (its devices announce `offline`) and waits for it.
    async fn stop_at(&mut self, i: usize) {
        let r = self.running.remove(i);
        for name in &r.names {
            self.routes.remove(name);
            self.shared.remove(name);
        }
        r.stop.cancel();
        let _ = r.done.await;
        if let Some(sim) = r.simulator {
            sim.cancel();
        }
        self.publish_list();
    }

    /// Stops every task: all are told at once, then each is waited for.
    pub async fn stop_all(&mut self) {
        for r in self.running.iter() {
            r.stop.cancel();
        }
        while !self.running.is_empty() {
            self.stop_at(0).await;
        }
    }

    /// Applies a new config's devices as `diff` says: a port whose devices are all unchanged
    /// keeps running (and keeps its port open); any other is stopped and started anew with its
    /// new devices (on a bus, changing one device restarts its port's task). A device that is
    /// not running (it failed to start) is started.
    pub async fn reload(
        &mut self,
        diff: &ConfigDiff,
        devices: Vec<Device>,
    ) -> Result<(), GatewayError> {
        for name in &diff.removed {
            info!(device = %name, "reload: device removed");
        }
        let groups = by_port(devices);
        let untouched = |names: &[String]| {
            names
                .iter()
                .all(|n| !diff.changed.contains(n) && !diff.added.contains(n))
        };
        let mut i = 0;
        while i < self.running.len() {
            let names = &self.running[i].names;
            let keep = untouched(names)
                && groups
                    .iter()
                    .any(|g| g.iter().map(|d| &d.name).eq(names.iter()));
            if keep {
                i += 1;
            } else {
                self.stop_at(i).await;
            }
        }
        for group in groups {
            let names: Vec<String> = group.iter().map(|d| d.name.clone()).collect();
            if self.running.iter().any(|r| r.names == names) {
                continue;
            }
            for name in &names {
                if diff.changed.contains(name) {
                    info!(device = %name, "reload: device changed, restarting it");
                } else if diff.added.contains(name) {
                    info!(device = %name, "reload: device added");
                }
            }
            self.start(group)?;
        }
        Ok(())
    }

    /// Makes the list the stats and metrics read match the running devices.
    fn publish_list(&self) {
        if let Ok(mut list) = self.list.lock() {
            *list = self
                .running
                .iter()
                .flat_map(|r| r.names.iter().cloned().zip(r.stats.iter().cloned()))
                .collect();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::by_port;

    /// Devices that name one server by one URL (however its host is spelled) share one bus;
    /// another transport or port on the same host is another line.
    #[test]
    fn devices_naming_one_url_share_one_bus() {
        let unit = |name: &str, port: &str, unit: u8| {
            format!("  - {{name: {name}, port: \"{port}\", modbus: {{unit: {unit}, points: [{{name: v, input: 0}}]}}, rules: [r]}}\n")
        };
        let text = format!(
            "gateway: {{id: gw}}\nbroker: {{listen: \"127.0.0.1:1884\"}}\ndevices:\n{}{}{}{}rules:\n  r: {{points: true, publish: [{{topic: t, payload: \"{{v}}\"}}]}}\n",
            unit("a", "tcp://GW.local:4001", 1),
            unit("b", "rfc2217://gw.local:4001", 1),
            unit("c", "tcp://gw.local:4001/", 2),
            unit("d", "modbus-tcp://gw.local:502", 1),
        );
        let config = crate::config::parse(&text, std::path::Path::new("gw.yaml"))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
        let groups: Vec<Vec<String>> = by_port(config.devices)
            .into_iter()
            .map(|g| g.into_iter().map(|d| d.name).collect())
            .collect();
        assert_eq!(groups, [vec!["a", "c"], vec!["b"], vec!["d"]]);
    }
}

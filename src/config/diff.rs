//! What a reload changes: devices added, changed and removed, and the sections a running
//! gateway cannot take over (they need a restart). Computed in one place, by value, so that the
//! log says exactly what changed and nothing else.

use super::model::Config;

/// The difference between the running config and a new one.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct ConfigDiff {
    /// Devices only in the new config, in its order.
    pub added: Vec<String>,
    /// Devices in both whose definition (entry, rules, commands, topics) differs.
    pub changed: Vec<String>,
    /// Devices only in the old config.
    pub removed: Vec<String>,
    /// Sections that differ and take effect only at the next start.
    pub restart: Vec<&'static str>,
    /// The broker's logins or access rules differ (files' contents included): the running
    /// broker may take them over (`broker::AccessControl::reload`).
    pub access: bool,
}

/// The broker settings without its logins and access rules.
fn without_access(b: &super::schema::Broker) -> super::schema::Broker {
    super::schema::Broker {
        users_file: None,
        users: None,
        acl_file: None,
        acl: None,
        ..b.clone()
    }
}

impl ConfigDiff {
    /// Compares `old` (running) with `new` (just checked).
    pub fn between(old: &Config, new: &Config) -> Self {
        let mut diff = Self::default();
        for d in &new.devices {
            match old.devices.iter().find(|o| o.name == d.name) {
                None => diff.added.push(d.name.clone()),
                Some(o) if o.spec != d.spec => diff.changed.push(d.name.clone()),
                Some(_) => {}
            }
        }
        for o in &old.devices {
            if !new.devices.iter().any(|d| d.name == o.name) {
                diff.removed.push(o.name.clone());
            }
        }
        let sections = [
            ("gateway", old.gateway != new.gateway),
            (
                "broker",
                without_access(&old.broker) != without_access(&new.broker),
            ),
            ("uplink", old.uplink != new.uplink),
            ("queue", old.queue != new.queue),
            ("log", old.log_level != new.log_level),
            ("metrics", old.metrics != new.metrics),
            ("web", old.web != new.web),
            ("modbus_server", old.modbus_server != new.modbus_server),
            ("homeassistant", old.homeassistant != new.homeassistant),
        ];
        diff.access = (
            &old.broker.users_file,
            &old.broker.users,
            &old.broker.acl_file,
        ) != (
            &new.broker.users_file,
            &new.broker.users,
            &new.broker.acl_file,
        ) || old.broker.acl != new.broker.acl;
        diff.restart = sections
            .into_iter()
            .filter(|(_, changed)| *changed)
            .map(|(name, _)| name)
            .collect();
        diff
    }

    /// Whether the devices or any section differ.
    pub fn is_empty(&self) -> bool {
        self.added.is_empty()
            && self.changed.is_empty()
            && self.removed.is_empty()
            && self.restart.is_empty()
            && !self.access
    }
}

//! `homeassistant:` and what discovery would announce: topics that are valid, and no two
//! entities of one device with the same unique id.

use std::collections::BTreeMap;

use super::Problems;
use crate::config::model::Device;
use crate::config::schema;
use crate::homeassistant::entity::object_id;

/// Checks the discovery settings and the entities the devices would announce.
pub(super) fn check(
    raw: &schema::HomeAssistantSettings,
    devices: &[Device],
    gateway: &str,
    p: &mut Problems,
) {
    for (i, d) in devices.iter().enumerate() {
        for (object, first, second) in clashes(d, gateway) {
            p.error(
                &format!("devices[{i}]"),
                format!(
                    "device `{}`: two Home Assistant entities would both be `{object}` (`{first}` and `{second}`)",
                    d.name
                ),
                Some("give one of them its own homeassistant: {object_id: ...}".into()),
            );
        }
    }
    if let Some(why) = crate::message::topic_problem(&raw.discovery_prefix) {
        p.error(
            "homeassistant.discovery_prefix",
            why,
            Some("write e.g. discovery_prefix: homeassistant".into()),
        );
    }
    if let Some(why) = crate::message::topic_problem(&raw.status_topic) {
        p.error(
            "homeassistant.status_topic",
            why,
            Some("write e.g. status_topic: homeassistant/status".into()),
        );
    }
}

/// Entities of one device that would share a unique id: (object id, its two topics).
fn clashes(device: &Device, gateway: &str) -> Vec<(String, String, String)> {
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    let mut out = Vec::new();
    let states = device.rules.entities(gateway, &device.name);
    let commands = device.commands.iter().filter_map(|c| {
        c.command
            .homeassistant
            .as_ref()
            .map(|e| (c.filter.clone(), e))
    });
    for (topic, e) in states.chain(commands) {
        let id = object_id(&topic, e);
        match seen.get(&id) {
            Some(first) if *first != topic => out.push((id, first.clone(), topic)),
            Some(_) => {}
            None => {
                seen.insert(id, topic);
            }
        }
    }
    out
}

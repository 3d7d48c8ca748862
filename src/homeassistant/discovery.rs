//! Home Assistant MQTT discovery: the configs announced for the devices of a config, which
//! entities would clash, and the retained messages that move Home Assistant from one set of
//! configs to the next.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{json, Map, Value};

use super::entity::{humanize, id_part, object_id};
use crate::config::Device;
use crate::message::Message;

/// The gateway's own retained status on the embedded broker (`online` while it runs).
pub fn gateway_status_topic(gateway: &str) -> String {
    format!("serial2mqtt/{gateway}/status")
}

/// Discovery settings and everything needed to render the configs.
pub struct Discovery<'a> {
    /// `homeassistant` by default.
    pub prefix: &'a str,
    /// The gateway id.
    pub gateway: &'a str,
}

impl Discovery<'_> {
    /// Every retained discovery config for these devices, by topic (empty when nothing is
    /// announced: then not even the gateway is).
    pub fn configs(&self, devices: &[Device]) -> BTreeMap<String, Bytes> {
        let mut out = BTreeMap::new();
        let gw = id_part(self.gateway);
        let status = gateway_status_topic(self.gateway);
        let gateway_device = format!("serial2mqtt_{gw}");
        let origin = json!({"name": "serial2mqtt", "sw_version": env!("CARGO_PKG_VERSION")});
        for d in devices {
            let dev = id_part(&d.name);
            let entities = d
                .rules
                .entities(self.gateway, &d.name)
                .map(|(topic, e)| (topic, e, "state_topic"))
                .chain(d.commands.iter().filter_map(|c| {
                    c.command
                        .homeassistant
                        .as_ref()
                        .map(|e| (c.filter.clone(), e, "command_topic"))
                }));
            for (topic, e, topic_key) in entities {
                let object = object_id(&topic, e);
                let unique = format!("{gw}_{dev}_{object}");
                let mut config = Map::new();
                // Shown after the device's name: "greenhouse Temperature".
                config.insert("name".into(), humanize(&object).into());
                config.extend(e.extra.clone());
                config.insert(topic_key.into(), topic.into());
                config.insert("unique_id".into(), unique.clone().into());
                config.insert(
                    "availability".into(),
                    json!([
                        {"topic": d.state_topic, "payload_available": "online", "payload_not_available": "offline"},
                        {"topic": status, "payload_available": "online", "payload_not_available": "offline"},
                    ]),
                );
                config.insert("availability_mode".into(), "all".into());
                // A device built from a model is shown as that product.
                let (manufacturer, model) = match &d.spec.entry.model {
                    Some(m) => (m.manufacturer.as_str(), m.name.as_str()),
                    None => ("serial2mqtt", "serial device"),
                };
                let mut device = json!({
                    "identifiers": [format!("serial2mqtt_{gw}_{dev}")],
                    "name": d.name,
                    "manufacturer": manufacturer,
                    "model": model,
                    "via_device": gateway_device,
                });
                if let (Some(m), Some(obj)) = (&d.spec.entry.model, device.as_object_mut()) {
                    obj.insert("model_id".into(), m.id.clone().into());
                }
                config.insert("device".into(), device);
                config.insert("origin".into(), origin.clone());
                out.insert(
                    format!("{}/{}/{unique}/config", self.prefix, e.component),
                    Bytes::from(Value::Object(config).to_string()),
                );
            }
        }
        if !out.is_empty() {
            let config = json!({
                "name": "Gateway",
                "unique_id": format!("{gw}_gateway"),
                "device_class": "connectivity",
                "entity_category": "diagnostic",
                "state_topic": status,
                "payload_on": "online",
                "payload_off": "offline",
                "device": {
                    "identifiers": [gateway_device],
                    "name": format!("serial2mqtt {}", self.gateway),
                    "manufacturer": "serial2mqtt",
                    "model": "gateway",
                    "sw_version": env!("CARGO_PKG_VERSION"),
                },
                "origin": origin,
            });
            out.insert(
                format!("{}/binary_sensor/{gw}_gateway/config", self.prefix),
                Bytes::from(config.to_string()),
            );
        }
        out
    }
}

/// The retained messages that take Home Assistant from `old` to `new`: an empty config for
/// each entity that is gone (Home Assistant deletes it), then every current config.
pub fn transition(old: &BTreeMap<String, Bytes>, new: &BTreeMap<String, Bytes>) -> Vec<Message> {
    let gone = old
        .keys()
        .filter(|t| !new.contains_key(*t))
        .map(|t| (t, Bytes::new()));
    let current = new.iter().map(|(t, p)| (t, p.clone()));
    gone.chain(current)
        .map(|(topic, payload)| Message {
            topic: topic.clone(),
            payload,
            qos: 1,
            retain: true,
        })
        .collect()
}

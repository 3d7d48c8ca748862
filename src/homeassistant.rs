//! Home Assistant MQTT discovery: the sensors and switches of the config appear in Home
//! Assistant by themselves.
//!
//! A rule's publish entry (or a command) may carry `homeassistant: {component: sensor,
//! device_class: temperature, ...}`. For each device using it, the gateway publishes a retained
//! config on `<prefix>/<component>/<gateway>_<device>_<object>/config` with the state (or
//! command) topic, a `unique_id`, the device (linked `via_device` to the gateway, which has a
//! connectivity entity of its own) and availability tied to both the device's `online`/`offline`
//! topic and the gateway's status. They are published on start, again whenever Home Assistant
//! announces itself (`homeassistant/status` = `online`), and on reload; an entity removed from
//! the config gets an empty retained config, which makes Home Assistant delete it.
//!
//! Discovery goes to the embedded broker only (where Home Assistant connects, or where a bridge
//! of its own picks it up), never through the uplink: upstream, `topic_prefix` would make every
//! topic inside the configs wrong.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_json::{json, Map, Value};

use crate::config::{schema, Device};
use crate::message::Message;

/// Components a rule's message (a state) may be announced as.
pub const STATE_COMPONENTS: [&str; 4] = ["sensor", "binary_sensor", "number", "text"];
/// Components a command may be announced as.
pub const COMMAND_COMPONENTS: [&str; 5] = ["switch", "button", "number", "select", "text"];

/// Keys the gateway writes itself: a config that sets them is refused.
const RESERVED: [&str; 9] = [
    "state_topic",
    "command_topic",
    "unique_id",
    "device",
    "availability",
    "availability_topic",
    "availability_mode",
    "origin",
    "platform",
];

/// The gateway's own retained status on the embedded broker (`online` while it runs).
pub fn gateway_status_topic(gateway: &str) -> String {
    format!("serial2mqtt/{gateway}/status")
}

/// One announced entity, compiled from `homeassistant:`.
#[derive(Debug, Clone, PartialEq)]
pub struct Entity {
    /// `sensor`, `switch`, ...
    pub component: String,
    /// Last part of the unique id and discovery topic; defaults to the topic's last level.
    pub object_id: Option<String>,
    /// The other keys, as Home Assistant spells them (`device_class`, `unit_of_measurement`, ...).
    pub extra: Map<String, Value>,
}

impl Entity {
    /// Checks a `homeassistant:` mapping; `allowed` are the components valid where it stands,
    /// the first being the default. The error is (what is wrong, what to write instead).
    pub fn compile(
        raw: &schema::HomeAssistant,
        allowed: &[&str],
    ) -> Result<Self, (String, String)> {
        let component = raw.component.as_deref().unwrap_or(allowed[0]);
        if !allowed.contains(&component) {
            return Err((
                format!("Home Assistant component `{component}` is not possible here"),
                format!("write component: one of {}", allowed.join(", ")),
            ));
        }
        if let Some(id) = &raw.object_id {
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            {
                return Err((
                    format!("object_id `{id}` may only have letters, digits, _ and -"),
                    "write e.g. object_id: temperature".into(),
                ));
            }
        }
        let mut extra = Map::new();
        for (k, v) in &raw.extra {
            if RESERVED.contains(&k.as_str()) {
                return Err((
                    format!("`{k}` is set by serial2mqtt"),
                    format!("remove `{k}`: the gateway fills it in from the rule, the device and the gateway"),
                ));
            }
            let v = serde_json::to_value(v)
                .map_err(|e| (format!("`{k}`: {e}"), "write a plain value".into()))?;
            extra.insert(k.clone(), v);
        }
        Ok(Self {
            component: component.to_owned(),
            object_id: raw.object_id.clone(),
            extra,
        })
    }
}

/// Only letters, digits, `_` and `-` survive in ids and discovery topics.
fn id_part(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// The entity's object id: its `object_id`, or the last level of its topic.
pub fn object_id(topic: &str, e: &Entity) -> String {
    e.object_id
        .clone()
        .unwrap_or_else(|| id_part(topic.rsplit('/').next().unwrap_or("value")))
}

/// Entities of one device that would share a unique id: (object id, its two topics).
pub fn clashes(device: &Device, gateway: &str) -> Vec<(String, String, String)> {
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

/// `relative_humidity` → `Relative humidity`.
fn humanize(id: &str) -> String {
    let text = id.replace(['_', '-'], " ");
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => text,
    }
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
                config.insert(
                    "device".into(),
                    json!({
                        "identifiers": [format!("serial2mqtt_{gw}_{dev}")],
                        "name": d.name,
                        "manufacturer": "serial2mqtt",
                        "model": "serial device",
                        "via_device": gateway_device,
                    }),
                );
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

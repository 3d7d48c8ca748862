//! Home Assistant's entity vocabulary: the components a state or a command may be announced
//! as, and a `homeassistant:` mapping checked into an [`Entity`]. A leaf (it knows only the
//! raw YAML shape), so that config and rules can use it without knowing about discovery.

use serde_json::{Map, Value};

use crate::config::schema;

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
pub fn id_part(s: &str) -> String {
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

/// `relative_humidity` → `Relative humidity`.
pub fn humanize(id: &str) -> String {
    let text = id.replace(['_', '-'], " ");
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => text,
    }
}

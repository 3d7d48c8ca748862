//! Home Assistant: the sensors and switches of the config appear in Home Assistant by
//! themselves, by MQTT discovery.
//!
//! [`entity`] is the vocabulary (components, `homeassistant:` checked, object ids), a leaf that
//! config and rules use; [`discovery`] renders the retained configs for the devices of a config.
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

pub mod discovery;
pub mod entity;

pub use discovery::{gateway_status_topic, transition, Discovery};
pub use entity::{Entity, COMMAND_COMPONENTS, STATE_COMPONENTS};

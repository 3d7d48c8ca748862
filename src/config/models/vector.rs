//! A model's test vectors as written in its file: an input (a frame, the bytes on the line,
//! or the registers a Modbus unit holds) and the exact messages it must give. `models::vectors`
//! runs them.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_yaml::{Mapping, Value};

/// The device name test vectors run with (`{device}` in their topics).
pub const DEVICE: &str = "test";

/// One test vector of a model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vector {
    /// What it shows, and where its values come from.
    pub about: String,
    /// Parameters other than the defaults.
    #[serde(default)]
    pub parameters: Mapping,
    /// One frame as the framing cuts it, as text.
    pub frame: Option<String>,
    /// One frame as hex bytes.
    pub frame_hex: Option<String>,
    /// The bytes on the line, as text, cut by the model's framing.
    pub stream: Option<String>,
    /// The bytes on the line as hex.
    pub stream_hex: Option<String>,
    /// What a Modbus unit holds: any entry not given reads 0.
    pub registers: Option<Registers>,
    /// Exactly these messages, in this order.
    pub expect: Vec<Expected>,
}

/// A Modbus unit's tables, by 0-based address; a list fills consecutive addresses.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Registers {
    /// Coils (0 or 1 each).
    #[serde(default)]
    pub coils: BTreeMap<u16, Words>,
    /// Discrete inputs (0 or 1 each).
    #[serde(default)]
    pub discretes: BTreeMap<u16, Words>,
    /// Input registers.
    #[serde(default)]
    pub input: BTreeMap<u16, Words>,
    /// Holding registers.
    #[serde(default)]
    pub holding: BTreeMap<u16, Words>,
}

/// One register, or several from its address on.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Words {
    /// One.
    One(u16),
    /// Consecutive.
    Many(Vec<u16>),
}

/// A message a vector must give.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Expected {
    /// Its topic, exactly.
    pub topic: String,
    /// Text compared exactly, or a mapping or list compared with the payload read as JSON.
    pub payload: Value,
    /// Whether it is retained (unchecked when not given).
    #[serde(default)]
    pub retain: Option<bool>,
}

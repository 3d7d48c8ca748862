//! The YAML file's shape, exactly as users write it: serde types with defaults and no logic.
//!
//! Every struct rejects unknown keys, so a typo is an error with a suggestion instead of a setting
//! that silently does nothing. `config/serial2mqtt.yaml` documents every key defined here.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

use crate::serial::framing::Framing;

/// The whole config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct File {
    /// Identity and local state of this gateway.
    #[serde(default)]
    pub gateway: Gateway,
    /// The embedded MQTT broker.
    #[serde(default)]
    pub broker: Broker,
    /// Log verbosity.
    #[serde(default)]
    pub log: Log,
    /// Serial devices to read.
    #[serde(default)]
    pub devices: Vec<Device>,
    /// Named rules that devices refer to.
    #[serde(default)]
    pub rules: BTreeMap<String, Rule>,
}

/// `gateway:` — identity and state of this gateway.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Gateway {
    /// `{gateway}` in templates; the host name when omitted.
    pub id: Option<String>,
    /// Directory for the gateway's durable state (the store-and-forward queue).
    #[serde(default = "default_state_dir")]
    pub state_dir: PathBuf,
    /// Retained `online`/`offline` topic per device.
    #[serde(default = "default_state_topic")]
    pub state_topic: String,
    /// Where frames that no rule matched are published (raw bytes); not published when omitted.
    pub unmatched_topic: Option<String>,
}

impl Default for Gateway {
    fn default() -> Self {
        Self {
            id: None,
            state_dir: default_state_dir(),
            state_topic: default_state_topic(),
            unmatched_topic: None,
        }
    }
}

fn default_state_dir() -> PathBuf {
    PathBuf::from("/var/lib/serial2mqtt")
}

fn default_state_topic() -> String {
    "serial2mqtt/{gateway}/devices/{device}/state".to_owned()
}

/// `broker:` — the embedded rumqttd broker that local clients connect to.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Broker {
    /// TCP address of the MQTT 3.1.1 listener.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Most local clients connected at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Largest MQTT packet a local client may send.
    #[serde(default = "default_max_payload")]
    pub max_payload: ByteSize,
    /// QoS 1/2 messages in flight per local client.
    #[serde(default = "default_max_inflight")]
    pub max_inflight: usize,
    /// Time a new TCP connection has to send CONNECT.
    #[serde(default = "default_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Recent messages kept per subscription (topic + payload bytes) for subscribers that fall
    /// behind or are offline with a persistent session; memory grows with it.
    #[serde(default = "default_window")]
    pub window: ByteSize,
}

impl Default for Broker {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            max_connections: default_max_connections(),
            max_payload: default_max_payload(),
            max_inflight: default_max_inflight(),
            connect_timeout: default_connect_timeout(),
            window: default_window(),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 1883))
}
fn default_max_connections() -> usize {
    64
}
fn default_max_payload() -> ByteSize {
    ByteSize::kib(256)
}
fn default_max_inflight() -> usize {
    100
}
fn default_window() -> ByteSize {
    ByteSize::kib(64)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

/// `log:` — verbosity (`RUST_LOG` overrides it).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Log {
    /// A tracing filter: `info`, `debug`, `serial2mqtt=debug,rumqttd=warn`.
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for Log {
    fn default() -> Self {
        Self {
            level: default_log_level(),
        }
    }
}

fn default_log_level() -> String {
    "info".to_owned()
}

/// One entry of `devices:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Device {
    /// `{device}` in templates; unique.
    pub name: String,
    /// Serial device path; prefer a stable `/dev/serial/by-id/...` link.
    pub port: Option<PathBuf>,
    /// A built-in simulated sensor on a pseudo-terminal, instead of `port`.
    pub simulate: Option<Simulate>,
    /// Line speed.
    #[serde(default = "default_baud")]
    pub baud: u32,
    /// 5, 6, 7 or 8.
    #[serde(default = "default_data_bits")]
    pub data_bits: u8,
    /// Parity bit.
    #[serde(default)]
    pub parity: Parity,
    /// 1 or 2.
    #[serde(default = "default_stop_bits")]
    pub stop_bits: u8,
    /// Flow control.
    #[serde(default)]
    pub flow_control: FlowControl,
    /// How bytes are cut into frames.
    #[serde(default = "default_framing")]
    pub framing: Framing,
    /// Largest frame in bytes; longer frames are dropped and counted.
    #[serde(default = "default_max_frame")]
    pub max_frame: usize,
    /// Rules tried on each frame, in this order.
    #[serde(default)]
    pub rules: Vec<String>,
}

fn default_baud() -> u32 {
    9600
}
fn default_data_bits() -> u8 {
    8
}
fn default_stop_bits() -> u8 {
    1
}
fn default_framing() -> Framing {
    Framing::Lines
}
fn default_max_frame() -> usize {
    1024
}

/// Parity setting of a serial line.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Parity {
    /// No parity bit.
    #[default]
    None,
    /// Odd parity.
    Odd,
    /// Even parity.
    Even,
}

/// Flow control of a serial line.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FlowControl {
    /// None.
    #[default]
    None,
    /// XON/XOFF.
    Software,
    /// RTS/CTS.
    Hardware,
}

/// `simulate:` — a built-in sensor that writes frames into a pseudo-terminal (demo and tests).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Simulate {
    /// What the simulated sensor sends.
    pub profile: SimProfile,
    /// Time between frames.
    #[serde(default = "default_sim_interval", with = "humantime_serde")]
    pub interval: Duration,
}

fn default_sim_interval() -> Duration {
    Duration::from_secs(2)
}

/// The simulated sensors available.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SimProfile {
    /// Text lines `T=21.5;H=40`.
    Climate,
    /// JSON lines `{"id":"ws1","temperature":12.3,...}`.
    WeatherJson,
    /// Binary frames: u16le centivolts, i16le milliamps (use with `framing: cobs`).
    Power,
}

/// One entry of `rules:`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rule {
    /// Regex on a text frame; named captures become placeholders.
    #[serde(rename = "match")]
    pub match_: Option<String>,
    /// The frame is a JSON object; its fields are placeholders.
    #[serde(default)]
    pub json: bool,
    /// The frame is binary; these fields are decoded into placeholders.
    pub fields: Option<Vec<Field>>,
    /// Also try the device's next rules after this one matched.
    #[serde(default, rename = "continue")]
    pub continue_: bool,
    /// Messages produced when the rule matches.
    pub publish: Vec<Publish>,
}

/// One binary field of a `fields:` rule.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Field {
    /// Placeholder name.
    pub name: String,
    /// Byte offset in the frame.
    pub offset: usize,
    /// Encoding, e.g. `u16le`, `i32be`, `f32le`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Multiply the raw value.
    pub scale: Option<f64>,
    /// Add to the scaled value.
    pub add: Option<f64>,
    /// Round the result to this many decimals (default: from `scale`).
    pub decimals: Option<u8>,
}

/// One message a rule publishes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Publish {
    /// Topic template.
    pub topic: String,
    /// Payload template: a string, or a mapping/list that becomes JSON. Default `{frame}`.
    pub payload: Option<serde_yaml::Value>,
    /// 0, 1 or 2.
    #[serde(default)]
    pub qos: u8,
    /// Retained on the broker.
    #[serde(default)]
    pub retain: bool,
}

//! `devices:` entries as users write them: the port and its line, framing and checksum, the
//! polls that ask a silent device, and the rules and commands it uses.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::frames::checksum::ChecksumSpec;
use crate::serial::framing::Framing;

/// One entry of `devices:`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
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
    /// The check value every frame carries; a frame that fails it is never published.
    #[serde(default)]
    pub checksum: Option<ChecksumSpec>,
    /// Rules tried on each frame, in this order.
    #[serde(default)]
    pub rules: Vec<String>,
    /// Commands whose MQTT messages are written to this device.
    #[serde(default)]
    pub commands: Vec<String>,
    /// Requests written to a device that speaks only when asked, each on its own interval.
    #[serde(default)]
    pub poll: Vec<Poll>,
    /// Polls in a row left unanswered before the device is announced `offline`.
    #[serde(default = "default_offline_after")]
    pub offline_after: u32,
    /// How often a device that stopped answering is still asked (instead of every interval).
    #[serde(default = "default_offline_poll", with = "humantime_serde")]
    pub offline_poll: Duration,
    /// Silence kept on the line after an answer (or a timeout) before the next request
    /// (default 3.5 character times).
    #[serde(default, with = "humantime_serde")]
    pub turnaround: Option<Duration>,
    /// A Modbus RTU unit read by its register map (the polls, framing and checksum follow).
    pub modbus: Option<Modbus>,
    /// The model it was expanded from (`model:` is read before serde, by `models::expand`).
    #[serde(skip)]
    pub model: Option<ModelInfo>,
}

/// `modbus:` of a device: its unit id, how it is read, and its register map.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Modbus {
    /// The unit (slave) id, 1..=247.
    pub unit: u8,
    /// How often the map is read.
    #[serde(default = "default_modbus_every", with = "humantime_serde")]
    pub every: Duration,
    /// Longest wait for each answer.
    #[serde(default = "default_modbus_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Times a request is sent again when unanswered or its CRC fails.
    #[serde(default = "default_modbus_retries")]
    pub retries: u32,
    /// Registers (or coils) between two points that may be read along to join their requests.
    #[serde(default = "default_max_gap")]
    pub max_gap: u16,
    /// Most registers one request reads (the protocol's limit is 125; some devices take fewer).
    #[serde(default = "default_max_registers")]
    pub max_registers: u16,
    /// Most coils or discrete inputs one request reads (the protocol's limit is 2000).
    #[serde(default = "default_max_bits")]
    pub max_bits: u16,
    /// The points read.
    pub points: Vec<ModbusPoint>,
}

/// One point of a Modbus register map.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModbusPoint {
    /// The placeholder its value fills in the device's rules.
    pub name: String,
    /// A coil (function 1), by its 0-based protocol address.
    pub coil: Option<u16>,
    /// A discrete input (function 2), 0-based.
    pub discrete: Option<u16>,
    /// An input register (function 4), 0-based.
    pub input: Option<u16>,
    /// A holding register (function 3), 0-based.
    pub holding: Option<u16>,
    /// A register in the 1-based Modicon notation datasheets print: 00001 coil, 10001
    /// discrete, 30001 input, 40001 holding (or 6 digits: 300001).
    pub register: Option<u32>,
    /// u16 i16 u32 i32 u64 i64 f32 f64 (registers, default u16), string, or bool (coils and
    /// discretes, their only type).
    #[serde(rename = "type")]
    pub type_: Option<String>,
    /// Order of a 32/64-bit value's bytes, A most significant: abcd (default, the Modbus
    /// convention), cdab (low word first), badc, dcba.
    pub order: Option<String>,
    /// Registers of a `string` (two characters each), or coils/discrete inputs read as one
    /// number (2 to 64, the first address its least significant bit).
    pub length: Option<u16>,
    /// One bit (0 = least significant) of a 16-bit register, read as 0 or 1.
    pub bit: Option<u8>,
    /// Multiplier.
    pub scale: Option<f64>,
    /// Addend, after the scale.
    pub add: Option<f64>,
    /// Decimals kept (default: those of scale and add).
    pub decimals: Option<u8>,
    /// The engineering unit (V, A, kWh), shown by `check`'s request plan.
    pub unit: Option<String>,
    /// How often this point is read, when not the unit's `every` (a serial number once a
    /// day, an energy counter every minute, the voltage every second).
    #[serde(default, with = "humantime_serde")]
    pub every: Option<Duration>,
}

fn default_modbus_every() -> Duration {
    Duration::from_secs(10)
}
fn default_modbus_timeout() -> Duration {
    Duration::from_millis(500)
}
fn default_modbus_retries() -> u32 {
    1
}
fn default_max_gap() -> u16 {
    10
}
fn default_max_registers() -> u16 {
    125
}
fn default_max_bits() -> u16 {
    2000
}

/// One entry of a device's `poll:`: what to send, how often, how long to wait for the answer.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Poll {
    /// `{request}` in the rules of its answers (default `poll`, or `poll1`, `poll2`, ...).
    pub name: Option<String>,
    /// The request as text (YAML escapes such as "\r\n" and "\x02" work).
    pub write: Option<String>,
    /// The request as hex bytes.
    pub write_hex: Option<String>,
    /// Time from one request to the next.
    #[serde(with = "humantime_serde")]
    pub every: Duration,
    /// Longest wait for the answer.
    #[serde(default = "default_poll_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// Times the request is sent again when unanswered (or answered with a bad checksum).
    #[serde(default)]
    pub retries: u32,
    /// Discard bytes waiting on the port before sending (stale or late answers).
    #[serde(default = "default_true")]
    pub flush: bool,
}

impl Device {
    /// The line settings as written, which devices sharing a port must agree on.
    pub fn line(&self) -> (u32, u8, Parity, u8, FlowControl) {
        (
            self.baud,
            self.data_bits,
            self.parity,
            self.stop_bits,
            self.flow_control,
        )
    }
}

fn default_offline_after() -> u32 {
    3
}
fn default_offline_poll() -> Duration {
    Duration::from_secs(10)
}
fn default_poll_timeout() -> Duration {
    Duration::from_secs(1)
}
fn default_true() -> bool {
    true
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
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Simulate {
    /// What the simulated sensor sends.
    pub profile: SimProfile,
    /// Time between frames.
    #[serde(default = "default_sim_interval", with = "humantime_serde")]
    pub interval: Duration,
    /// The share of frames (0 to 1) with one byte garbled, as on a noisy line: what the
    /// dashboard's frames page shows rejected.
    #[serde(default)]
    pub noise: f64,
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

/// Identity of the model a device was expanded from (for Home Assistant and the dashboard).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelInfo {
    /// The model's name (`eastron-sdm630`).
    pub id: String,
    /// Its maker.
    pub manufacturer: String,
    /// The product's name.
    pub name: String,
}

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

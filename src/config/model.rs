//! The validated config: what the rest of the gateway runs from. Built only by the checks in
//! [`super::check`], so every value here has been checked (names, topics, files, ranges).

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::diagnostics::Diagnostic;
use super::schema;
pub use crate::queue::QueueSettings;
use crate::rules::command::DeviceCommand;
use crate::rules::RuleSet;
use crate::serial::framing::Framing;

/// A validated config, ready to run.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file it came from.
    pub source: PathBuf,
    /// Gateway identity and state directory.
    pub gateway: Gateway,
    /// Embedded broker settings.
    pub broker: schema::Broker,
    /// Log filter.
    pub log_level: String,
    /// Devices, with their compiled rules.
    pub devices: Vec<Device>,
    /// The upstream broker, if any.
    pub uplink: Option<UplinkSettings>,
    /// The store-and-forward queue (used when there is an uplink).
    pub queue: QueueSettings,
    /// The Prometheus endpoint, if it is on.
    pub metrics: Option<MetricsSettings>,
    /// Home Assistant discovery prefix and birth topic.
    pub homeassistant: schema::HomeAssistantSettings,
    /// The web dashboard, if it is on.
    pub web: Option<WebSettings>,
    /// The Modbus TCP server, if it is on.
    pub modbus_server: Option<ServerSettings>,
    /// Things that are legal but probably not meant (an unused rule, a missing port).
    pub warnings: Vec<Diagnostic>,
}

/// The Modbus TCP server, checked: every unit names a Modbus device, every grant parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    /// Where it listens.
    pub listen: std::net::SocketAddr,
    /// Connections at once, from everybody.
    pub max_connections: usize,
    /// Connections at once from one address (loopback exempt).
    pub max_connections_per_peer: usize,
    /// Requests one connection may have waiting at once.
    pub max_queued: usize,
    /// The clients' part of a line's time while polls wait too (0..=1).
    pub share: f64,
    /// Longest a request waits for the line.
    pub max_wait: Duration,
    /// A connection idle this long is closed.
    pub idle_timeout: Duration,
    /// The units clients reach, by the unit id they address.
    pub units: Vec<ServedUnit>,
}

/// One device clients reach.
#[derive(Debug, Clone, PartialEq)]
pub struct ServedUnit {
    /// The gateway's device.
    pub device: String,
    /// The unit id clients address.
    pub unit: u8,
    /// Reads younger than this are answered from the gateway's latest reading.
    pub cache: Option<Duration>,
    /// Who may read what.
    pub read: Vec<Access>,
    /// Who may write what.
    pub write: Vec<Access>,
}

/// Clients and the addresses they may reach.
#[derive(Debug, Clone, PartialEq)]
pub struct Access {
    /// The clients' networks; empty means any client.
    pub clients: Vec<ipnet::IpNet>,
    /// Per table (coils, discretes, holding, input), the address ranges granted; None grants
    /// every address of every table.
    pub tables: Option<[Vec<std::ops::RangeInclusive<u16>>; 4]>,
}

/// The dashboard's listener, checked: a token wherever it is not loopback.
#[derive(Clone, PartialEq)]
pub struct WebSettings {
    /// Where it listens.
    pub listen: std::net::SocketAddr,
    /// The access token (from `web.token_file`), if one is set.
    pub token: Option<String>,
    /// HTTPS: the certificate chain and key files (read again for each connection, so a
    /// renewed certificate is served without a restart).
    pub tls: Option<schema::WebTls>,
    /// Its connection caps and timeouts.
    pub limits: crate::http::Limits,
}

impl fmt::Debug for WebSettings {
    // The token never reaches a log line, not even a debug one.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebSettings")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "(set)"))
            .field("tls", &self.tls)
            .field("limits", &self.limits)
            .finish()
    }
}

/// The Prometheus endpoint, checked: its own listener, or the dashboard's when `listen` is
/// `web.listen` (the dashboard's token then guards it).
#[derive(Clone, PartialEq)]
pub struct MetricsSettings {
    /// Where it listens.
    pub listen: std::net::SocketAddr,
    /// The token Prometheus sends (from `metrics.token_file`), if one is set; unused on the
    /// dashboard's listener.
    pub token: Option<String>,
}

impl fmt::Debug for MetricsSettings {
    // As for the dashboard: the token is never shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MetricsSettings")
            .field("listen", &self.listen)
            .field("token", &self.token.as_ref().map(|_| "(set)"))
            .finish()
    }
}

/// Identity of this gateway.
#[derive(Debug, Clone, PartialEq)]
pub struct Gateway {
    /// `{gateway}` in templates.
    pub id: String,
    /// Durable state directory.
    pub state_dir: PathBuf,
    /// Stats message period (zero: off).
    pub stats_interval: Duration,
}

/// Where a device's bytes come from.
#[derive(Debug, Clone)]
pub enum PortSource {
    /// A serial device path.
    Path(PathBuf),
    /// A built-in simulated sensor on a pseudo-terminal.
    Simulated(schema::Simulate),
}

impl PortSource {
    /// What identifies the port: devices with the same key share one line (a bus). The path
    /// as the system resolves it (two links to one adapter are one port), a URL in its
    /// normal form; none for a simulator, whose pseudo-terminal is its own.
    pub fn key(&self) -> Option<PathBuf> {
        match self {
            PortSource::Path(p) => Some(match crate::serial::link::address::Address::parse(p) {
                Ok(a) => a.key(),
                // `check` refuses it; the path as written keeps such devices together.
                Err(_) => p.clone(),
            }),
            PortSource::Simulated(_) => None,
        }
    }
}

/// Line settings of a serial port.
#[derive(Debug, Clone, Copy)]
pub struct SerialSettings {
    /// Baud rate.
    pub baud: u32,
    /// Data bits.
    pub data_bits: tokio_serial::DataBits,
    /// Parity.
    pub parity: tokio_serial::Parity,
    /// Stop bits.
    pub stop_bits: tokio_serial::StopBits,
    /// Flow control.
    pub flow_control: tokio_serial::FlowControl,
}

impl SerialSettings {
    /// Data bits per character, as a number (5-8).
    pub fn data_bits_count(&self) -> u8 {
        match self.data_bits {
            tokio_serial::DataBits::Five => 5,
            tokio_serial::DataBits::Six => 6,
            tokio_serial::DataBits::Seven => 7,
            tokio_serial::DataBits::Eight => 8,
        }
    }

    /// Stop bits per character, as a number (1 or 2).
    pub fn stop_bits_count(&self) -> u8 {
        match self.stop_bits {
            tokio_serial::StopBits::One => 1,
            tokio_serial::StopBits::Two => 2,
        }
    }

    /// Bits on the wire per character: start, data, parity, stop.
    pub fn bits_per_char(&self) -> u32 {
        let parity = u32::from(self.parity != tokio_serial::Parity::None);
        1 + u32::from(self.data_bits_count()) + parity + u32::from(self.stop_bits_count())
    }

    /// How long `bytes` take on the wire at this speed.
    pub fn wire_time(&self, bytes: usize) -> Duration {
        Duration::from_nanos(
            bytes as u64 * u64::from(self.bits_per_char()) * 1_000_000_000
                / u64::from(self.baud.max(1)),
        )
    }
}

/// One request of a polled device, validated.
#[derive(Debug, Clone, PartialEq)]
pub struct Poll {
    /// `{request}` in the rules of its answers.
    pub name: String,
    /// The bytes written.
    pub bytes: bytes::Bytes,
    /// Time from one request to the next.
    pub every: Duration,
    /// Longest wait for the answer.
    pub timeout: Duration,
    /// Sends again when unanswered.
    pub retries: u32,
    /// Discard waiting input first.
    pub flush: bool,
}

/// One device, validated.
/// Whether the devices of one port are several protocols of one talking device (a receiver's
/// NMEA and UBX) rather than a bus of devices that answer requests: more than one, none
/// polled, and one at least never asked anything. Such a port's frames are each cut by the
/// framing that recognises them ([`crate::serial::framing::Mux`]).
pub fn mixed(devices: &[&Device]) -> bool {
    devices.len() > 1
        && devices.iter().all(|d| d.polls.is_empty())
        && devices.iter().any(|d| d.commands.is_empty())
}

#[derive(Debug, Clone)]
pub struct Device {
    /// `{device}` in templates.
    pub name: String,
    /// Where its bytes come from.
    pub source: PortSource,
    /// Line settings.
    pub serial: SerialSettings,
    /// Frame splitting.
    pub framing: Framing,
    /// Largest frame.
    pub max_frame: usize,
    /// The check every frame must pass before the rules see it.
    pub checksum: Option<crate::frames::checksum::Checksum>,
    /// Compiled rules in try order.
    pub rules: RuleSet,
    /// Retained `online`/`offline` topic.
    pub state_topic: String,
    /// Topic for unmatched frames, if any.
    pub unmatched_topic: Option<String>,
    /// Commands written to the device, with filters expanded for it.
    pub commands: Vec<DeviceCommand>,
    /// Requests written on their intervals (a device that speaks only when asked).
    pub polls: Vec<Poll>,
    /// Unanswered polls in a row before `offline` is announced.
    pub offline_after: u32,
    /// How often an offline device is still asked.
    pub offline_poll: Duration,
    /// Silence after a transaction before the next request on the port.
    pub turnaround: Duration,
    /// The Modbus unit it is, read by its register map (its polls are the map's requests).
    pub modbus: Option<std::sync::Arc<crate::modbus::Unit>>,
    /// What it was built from: a reload restarts the device only when this changed.
    pub spec: DeviceSpec,
}

/// Everything a [`Device`] is built from, as the user wrote it: equal specs build the same
/// device. Compared by value on reload (compiled regexes and templates cannot be).
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceSpec {
    /// Its entry under `devices:`.
    pub entry: schema::Device,
    /// The definitions of the rules it names, in its order.
    pub rules: Vec<schema::Rule>,
    /// The definitions of the commands it names, in its order.
    pub commands: Vec<schema::Command>,
    /// The gateway id (`{gateway}` in its topics and filters).
    pub gateway: String,
    /// Its rendered state and unmatched topics.
    pub topics: (String, Option<String>),
}

/// A password: never printed.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(pub(super) String);

impl Secret {
    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// One upstream broker address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// `mqtts://` or `wss://`.
    pub tls: bool,
    /// Host name or address.
    pub host: String,
    /// TCP port.
    pub port: u16,
    /// `ws://` or `wss://`: MQTT over WebSockets, on this HTTP path (e.g. `/mqtt`).
    pub websocket: Option<String>,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = match (self.tls, self.websocket.is_some()) {
            (false, false) => "mqtt",
            (true, false) => "mqtts",
            (false, true) => "ws",
            (true, true) => "wss",
        };
        // An IPv6 address in brackets, as in a URL.
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(
            f,
            "{scheme}://{host}:{}{}",
            self.port,
            self.websocket.as_deref().unwrap_or("")
        )
    }
}

/// The uplink, ready to connect.
#[derive(Debug, Clone, PartialEq)]
pub struct UplinkSettings {
    /// Failover list, tried in order.
    pub endpoints: Vec<Endpoint>,
    /// MQTT client id.
    pub client_id: String,
    /// User name.
    pub username: Option<String>,
    /// Password, read from `password_file`.
    pub password: Option<Secret>,
    /// TLS files.
    pub tls: Option<schema::Tls>,
    /// Keep-alive.
    pub keep_alive: Duration,
    /// Time allowed from TCP connect to CONNACK.
    pub connect_timeout: Duration,
    /// Longest random delay before reconnecting once the broker's port answers again.
    pub reconnect_spread: Duration,
    /// What the broker accepts (`uplink.profile`).
    pub limits: crate::uplink::profile::Limits,
    /// Azure IoT Hub: the device, its user name and SAS tokens.
    pub azure: Option<crate::uplink::profile::AzureDevice>,
    /// Local filters forwarded upstream.
    pub forward: Vec<String>,
    /// Prefix of every upstream topic ("" for none).
    pub topic_prefix: String,
    /// Upstream filters brought down.
    pub subscribe: Vec<String>,
    /// Retained online/offline topic upstream.
    pub status_topic: String,
    /// Messages in flight.
    pub inflight: u16,
    /// Largest packet.
    pub max_packet: usize,
    /// Replay pacing, messages per second.
    pub max_rate: Option<u32>,
    /// 3 (MQTT 3.1.1) or 5.
    pub protocol: u8,
    /// MQTT 5 message expiry.
    pub message_expiry: Option<Duration>,
    /// The gateway id (an MQTT 5 user property of every forwarded message).
    pub gateway: String,
}

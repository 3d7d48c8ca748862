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

mod device;
mod server;

pub use device::*;
pub use server::*;

/// The whole config file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
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
    /// Named commands (MQTT → serial) that devices refer to.
    #[serde(default)]
    pub commands: BTreeMap<String, Command>,
    /// The upstream broker; nothing leaves the gateway when omitted.
    pub uplink: Option<Uplink>,
    /// The on-disk store-and-forward queue in front of the uplink.
    #[serde(default)]
    pub queue: Queue,
    /// The Prometheus endpoint; off when omitted.
    pub metrics: Option<Metrics>,
    /// Home Assistant discovery settings (discovery itself is on when an entity is announced).
    #[serde(default)]
    pub homeassistant: HomeAssistantSettings,
    /// The web dashboard; off when omitted.
    pub web: Option<Web>,
    /// The Modbus TCP server sharing the buses; off when omitted.
    pub modbus_server: Option<ModbusServer>,
}

/// `homeassistant:` — where Home Assistant listens for discovery and announces itself.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HomeAssistantSettings {
    /// Discovery topic prefix.
    #[serde(default = "default_ha_prefix")]
    pub discovery_prefix: String,
    /// Home Assistant's birth/last-will topic: `online` there makes the gateway republish.
    #[serde(default = "default_ha_status")]
    pub status_topic: String,
}

impl Default for HomeAssistantSettings {
    fn default() -> Self {
        Self {
            discovery_prefix: default_ha_prefix(),
            status_topic: default_ha_status(),
        }
    }
}

fn default_ha_prefix() -> String {
    "homeassistant".into()
}
fn default_ha_status() -> String {
    "homeassistant/status".into()
}

/// `homeassistant:` on a publish entry or a command — how Home Assistant shows it.
#[derive(Debug, Clone, Deserialize, PartialEq)]
pub struct HomeAssistant {
    /// `sensor`, `binary_sensor`, ... for readings; `switch`, `button`, ... for commands.
    pub component: Option<String>,
    /// Last part of the entity's unique id (default: the topic's last level).
    pub object_id: Option<String>,
    /// Any other discovery key, passed as written (`name`, `device_class`, ...).
    #[serde(flatten)]
    pub extra: BTreeMap<String, serde_yaml::Value>,
}

fn default_protocol() -> u8 {
    3
}

/// `metrics:` — a Prometheus endpoint for scraping.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Metrics {
    /// Address of the HTTP listener serving `/metrics`.
    pub listen: SocketAddr,
    /// A file whose first line is the token Prometheus must send (`Authorization: Bearer`);
    /// without it, an address other than loopback answers anyone (a warning).
    pub token_file: Option<PathBuf>,
}

/// `web:` — the dashboard: devices, frames and why they were rejected, a rule tester, the
/// queue and the uplink, the log, in a browser.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Web {
    /// Address of the HTTP listener (loopback unless a token is set).
    pub listen: SocketAddr,
    /// A file whose first line is the access token; required on any address but loopback.
    pub token_file: Option<PathBuf>,
    /// HTTPS instead of HTTP: the certificate and key, as for the broker's listener.
    pub tls: Option<WebTls>,
    /// Connections at once, from everybody (each holds a descriptor and some memory).
    #[serde(default = "default_web_max_connections")]
    pub max_connections: usize,
    /// Connections at once from one address (loopback exempt), so that one peer cannot take
    /// every place.
    #[serde(default = "default_web_max_connections_per_peer")]
    pub max_connections_per_peer: usize,
    /// Time a request's headers (and a TLS handshake) have to arrive; a keep-alive
    /// connection's next request too.
    #[serde(default = "default_web_header_timeout", with = "humantime_serde")]
    pub header_timeout: Duration,
    /// Time a connection may move no byte either way before it is closed.
    #[serde(default = "default_web_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
}

fn default_web_max_connections() -> usize {
    crate::listener::Limits::WEB.max_connections
}
fn default_web_max_connections_per_peer() -> usize {
    crate::listener::Limits::WEB.max_connections_per_peer
}
fn default_web_header_timeout() -> Duration {
    crate::listener::Limits::WEB.header_timeout
}
fn default_web_idle_timeout() -> Duration {
    crate::listener::Limits::WEB.idle_timeout
}

/// `web.tls:` — the dashboard's certificate.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WebTls {
    /// Certificate chain (PEM), the server's certificate first.
    pub cert_file: PathBuf,
    /// Its private key (PEM).
    pub key_file: PathBuf,
}

/// One value or a list of them (`url: mqtt://a` or `url: [mqtt://a, mqtt://b]`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum OneOrMany {
    /// A single value.
    One(String),
    /// A list, in order.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The values, in order.
    pub fn to_vec(&self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s.clone()],
            Self::Many(v) => v.clone(),
        }
    }
}

/// `uplink:` — the upstream MQTT broker messages are forwarded to.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Uplink {
    /// `mqtt://`, `mqtts://`, `ws://` or `wss://` URL; a list is a failover list, tried in order.
    /// Optional only with `profile: azure_iot_hub` (the hub of the connection string).
    pub url: Option<OneOrMany>,
    /// The broker's dialect and limits: generic, aws_iot, azure_iot_hub, emqx_serverless.
    #[serde(default)]
    pub profile: crate::uplink::profile::Profile,
    /// Azure IoT Hub: a file holding the device's connection string
    /// (`HostName=...;DeviceId=...;SharedAccessKey=...`).
    pub connection_string_file: Option<PathBuf>,
    /// Azure IoT Hub: how long each SAS token made from the connection string is valid; the
    /// uplink reconnects with a new one before it expires.
    #[serde(default = "default_token_ttl", with = "humantime_serde")]
    pub token_ttl: Duration,
    /// MQTT client id upstream; `{gateway}` allowed.
    #[serde(default = "default_client_id")]
    pub client_id: String,
    /// User name upstream.
    pub username: Option<String>,
    /// File holding the password (first line), so it is never in the config or the logs.
    pub password_file: Option<PathBuf>,
    /// TLS files for `mqtts://`.
    pub tls: Option<Tls>,
    /// MQTT keep-alive.
    #[serde(default = "default_keep_alive", with = "humantime_serde")]
    pub keep_alive: Duration,
    /// How long a broker has to answer CONNECT (TCP and TLS included) before the attempt counts
    /// as failed and the next one is scheduled.
    #[serde(default = "default_uplink_connect_timeout", with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// When the broker's port answers again after an outage, the uplink reconnects after a
    /// random delay up to this long, so a fleet of gateways does not reconnect at one instant.
    #[serde(default = "default_reconnect_spread", with = "humantime_serde")]
    pub reconnect_spread: Duration,
    /// MQTT version upstream: 3 (3.1.1, the default) or 5.
    #[serde(default = "default_protocol")]
    pub protocol: u8,
    /// MQTT 5 only: how long the upstream broker keeps a message for subscribers (off: forever).
    #[serde(default, with = "humantime_serde")]
    pub message_expiry: Option<Duration>,
    /// Filters on local topics whose messages go upstream.
    #[serde(default = "default_forward")]
    pub forward: Vec<String>,
    /// Prepended to every topic upstream; `{gateway}` allowed.
    pub topic_prefix: Option<String>,
    /// Upstream filters whose messages are brought down into the local broker; `{gateway}` allowed.
    #[serde(default)]
    pub subscribe: Vec<String>,
    /// Retained `online`/`offline` of the gateway upstream (birth and last will); `{gateway}` allowed.
    #[serde(default = "default_status_topic")]
    pub status_topic: String,
    /// QoS 1 messages sent upstream before waiting for acknowledgements.
    #[serde(default = "default_inflight")]
    pub inflight: u16,
    /// Largest MQTT packet sent or accepted upstream.
    #[serde(default = "default_max_packet")]
    pub max_packet: ByteSize,
    /// Pace the replay of a backlog (messages per second); unpaced when omitted.
    pub max_rate: Option<u32>,
}

fn default_client_id() -> String {
    "{gateway}".to_owned()
}
fn default_keep_alive() -> Duration {
    Duration::from_secs(30)
}
fn default_uplink_connect_timeout() -> Duration {
    Duration::from_secs(10)
}
fn default_token_ttl() -> Duration {
    Duration::from_secs(3600)
}
fn default_reconnect_spread() -> Duration {
    Duration::from_millis(500)
}
fn default_forward() -> Vec<String> {
    vec!["#".to_owned()]
}
fn default_status_topic() -> String {
    "serial2mqtt/{gateway}/status".to_owned()
}
fn default_inflight() -> u16 {
    100
}
fn default_max_packet() -> ByteSize {
    ByteSize::mib(1)
}

/// `uplink.tls:` — certificates for `mqtts://`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// CA certificates (PEM) that sign the server's certificate; the system's roots when omitted.
    pub ca_file: Option<PathBuf>,
    /// Client certificate chain (PEM) for mutual TLS.
    pub cert_file: Option<PathBuf>,
    /// Client private key (PEM) for mutual TLS.
    pub key_file: Option<PathBuf>,
}

/// `queue:` — the store-and-forward queue under `gateway.state_dir`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Queue {
    /// Most disk space; the oldest messages are dropped (and counted) beyond it.
    #[serde(default = "default_queue_max")]
    pub max_bytes: ByteSize,
    /// Size of one segment file.
    #[serde(default = "default_segment")]
    pub segment_bytes: ByteSize,
    /// Group commit: how often appended messages are made durable; `0` syncs every append.
    #[serde(default = "default_flush", with = "humantime_serde")]
    pub flush_interval: Duration,
}

impl Default for Queue {
    fn default() -> Self {
        Self {
            max_bytes: default_queue_max(),
            segment_bytes: default_segment(),
            flush_interval: default_flush(),
        }
    }
}

fn default_queue_max() -> ByteSize {
    ByteSize::mib(512)
}
fn default_segment() -> ByteSize {
    ByteSize::mib(16)
}
fn default_flush() -> Duration {
    Duration::from_millis(100)
}

/// `gateway:` — identity and state of this gateway.
#[derive(Debug, Clone, Deserialize, PartialEq)]
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
    /// How often the retained stats message is published; `0` turns it off.
    #[serde(default = "default_stats_interval", with = "humantime_serde")]
    pub stats_interval: Duration,
}

fn default_stats_interval() -> Duration {
    Duration::from_secs(30)
}

impl Default for Gateway {
    fn default() -> Self {
        Self {
            id: None,
            state_dir: default_state_dir(),
            state_topic: default_state_topic(),
            unmatched_topic: None,
            stats_interval: default_stats_interval(),
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
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Broker {
    /// TCP address of the MQTT 3.1.1 listener.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Most local clients connected at once, counting those that have not logged in yet.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Most connections at once from one address (loopback exempt), so one host cannot take
    /// every place.
    #[serde(default = "default_max_connections_per_peer")]
    pub max_connections_per_peer: usize,
    /// Most retained messages kept for local clients (more are delivered but not kept).
    #[serde(default = "default_max_retained")]
    pub max_retained: usize,
    /// Most payload bytes of those retained messages, in all.
    #[serde(default = "default_max_retained_bytes")]
    pub max_retained_bytes: ByteSize,
    /// Most distinct topic names local clients may publish to (the broker keeps each in
    /// memory for as long as it runs).
    #[serde(default = "default_max_topics")]
    pub max_topics: usize,
    /// Most distinct subscription filters of local clients (each keeps up to `window`).
    #[serde(default = "default_max_filters")]
    pub max_filters: usize,
    /// Most persistent sessions (clean session 0) of local clients, by client id.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
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
    /// A file of `user:hash` lines (`serial2mqtt passwd`, or mosquitto_passwd's): when set,
    /// local clients must log in with one of them.
    pub users_file: Option<PathBuf>,
    /// The users read from `users_file` (filled in by validation).
    #[serde(skip)]
    pub users: Option<Users>,
    /// Access rules per user and topic (mosquitto's `acl_file` format): when set, a client
    /// may read and write only what the file grants it.
    pub acl_file: Option<PathBuf>,
    /// The rules read from `acl_file` (filled in by validation).
    #[serde(skip)]
    pub acl: Option<crate::broker::acl::Acl>,
    /// TLS on the listener instead of plain TCP.
    pub tls: Option<BrokerTls>,
    /// Take commands although anyone who reaches a network listener without logins may send
    /// them (default false: such a gateway takes no commands).
    #[serde(default)]
    pub allow_anonymous_commands: bool,
    /// How many nice steps below the serial path and the uplink the threads serving local
    /// clients run, so a flooding client cannot take the CPU the readings need (0 = equal).
    #[serde(default = "default_nice")]
    pub nice: u8,
}

/// `broker.tls:` — the local listener's certificate (re-read for each new connection, so a
/// renewed certificate takes effect without a restart).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BrokerTls {
    /// Certificate chain (PEM), the server's certificate first.
    pub cert_file: PathBuf,
    /// Its private key (PEM).
    pub key_file: PathBuf,
    /// CA certificate(s) (PEM) whose client certificates are a login: the certificate's
    /// common name (CN) is the user name, for `acl_file` too.
    pub client_ca_file: Option<PathBuf>,
    /// Refuse clients without such a certificate (default false: they log in with a password,
    /// or connect anonymously when there is no users file).
    #[serde(default)]
    pub require_client_cert: bool,
}

/// Local broker logins, user name → stored secret (a hash, or a deprecated plain-text
/// password). `Debug` shows the names only.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Users(pub std::collections::HashMap<String, crate::broker::passwords::Secret>);

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut names: Vec<&String> = self.0.keys().collect();
        names.sort();
        write!(f, "Users({names:?}, passwords hidden)")
    }
}

impl Default for Broker {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            max_connections: default_max_connections(),
            max_connections_per_peer: default_max_connections_per_peer(),
            max_retained: default_max_retained(),
            max_retained_bytes: default_max_retained_bytes(),
            max_topics: default_max_topics(),
            max_filters: default_max_filters(),
            max_sessions: default_max_sessions(),
            max_payload: default_max_payload(),
            max_inflight: default_max_inflight(),
            connect_timeout: default_connect_timeout(),
            window: default_window(),
            users_file: None,
            users: None,
            acl_file: None,
            acl: None,
            tls: None,
            allow_anonymous_commands: false,
            nice: default_nice(),
        }
    }
}

fn default_listen() -> SocketAddr {
    // This host only until the user opts into the network (as mosquitto 2.0 does).
    SocketAddr::from(([127, 0, 0, 1], 1883))
}
fn default_max_connections() -> usize {
    64
}
fn default_max_connections_per_peer() -> usize {
    16
}
// The bounds below are sized for a 512 MiB Pi: together at most about 40 MiB of broker
// memory (a retained message costs about 1.6 times its payload in rumqttd, a name ~280 bytes
// there and ~100 here).
fn default_max_retained() -> usize {
    10_000
}
fn default_max_retained_bytes() -> ByteSize {
    ByteSize::mib(8)
}
fn default_max_topics() -> usize {
    50_000
}
fn default_max_filters() -> usize {
    // Each may hold up to `window` (about 2 MiB of memory at the default 64KiB when full).
    64
}
fn default_max_sessions() -> usize {
    1_000
}
fn default_max_payload() -> ByteSize {
    ByteSize::kib(256)
}
fn default_max_inflight() -> usize {
    100
}
fn default_nice() -> u8 {
    10
}
fn default_window() -> ByteSize {
    ByteSize::kib(64)
}
fn default_connect_timeout() -> Duration {
    Duration::from_secs(5)
}

/// `log:` — verbosity (`RUST_LOG` overrides it).
#[derive(Debug, Clone, Deserialize, PartialEq)]
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

/// One entry of `rules:`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
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
    /// A binary rule matches only frames that begin with these bytes (hex): one message type
    /// of a binary protocol (UBX NAV-PVT: `B5 62 01 07`).
    pub starts_hex: Option<String>,
    /// The rule reads a Modbus device's points: its placeholders are point names, and it runs
    /// once per read cycle.
    #[serde(default)]
    pub points: bool,
    /// Also try the device's next rules after this one matched.
    #[serde(default, rename = "continue")]
    pub continue_: bool,
    /// Frames this rule matches are known and unwanted (NMEA `$GPGSV`, a banner): nothing is
    /// published, and they count as `dropped`, not `unmatched`.
    #[serde(default)]
    pub drop: bool,
    /// Messages produced when the rule matches.
    #[serde(default)]
    pub publish: Vec<Publish>,
    /// Placeholders published as text in JSON payloads whatever they look like (an id `0042`).
    #[serde(default)]
    pub types: std::collections::BTreeMap<String, ValueType>,
    /// Computed values, in order: name → expression on the rule's placeholders (and the values
    /// before it). A mapping, so its order is the order written.
    #[serde(default)]
    pub values: serde_yaml::Mapping,
}

/// The JSON type a rule gives a placeholder (`types: {id: string}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ValueType {
    /// Always a JSON string.
    String,
}

/// One entry of `commands:` — MQTT messages turned into bytes written to a device.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Command {
    /// MQTT filter to listen on; `{gateway}` and `{device}` are expanded per device.
    pub subscribe: String,
    /// Regex the payload must match; named captures become placeholders. Default: any payload.
    #[serde(rename = "match")]
    pub match_: Option<String>,
    /// Template of the text written to the device.
    pub write: Option<String>,
    /// Template of the bytes written, as hex (spaces allowed), for binary devices.
    pub write_hex: Option<String>,
    /// A Modbus device's point the payload is written to (a coil: ON/OFF; a holding register:
    /// a number in its type, order and scale).
    pub point: Option<String>,
    /// Wrap the bytes in the device's framing (a line's `\n`, COBS, SLIP, length prefix).
    #[serde(default)]
    pub encode: bool,
    /// Let the payload and captures placed into `write` carry control characters (CR, LF, the
    /// device's frame delimiter, ...). Default false: such a payload is refused, so that a
    /// client allowed one command cannot end it and append another.
    #[serde(default)]
    pub allow_control: bool,
    /// Topic that gets `ok` or `error: …` for each command; `{gateway}`/`{device}` expanded.
    pub reply_topic: Option<String>,
    /// Announce this command to Home Assistant (a switch, a button, ...).
    pub homeassistant: Option<HomeAssistant>,
}

/// One binary field of a `fields:` rule.
#[derive(Debug, Clone, Deserialize, PartialEq)]
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
#[derive(Debug, Clone, Deserialize, PartialEq)]
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
    /// Announce this message to Home Assistant as an entity.
    pub homeassistant: Option<HomeAssistant>,
    /// Publish only when the reading changed by more than this (`0.5`, `2%`; `0`: any change).
    pub deadband: Option<DeadbandValue>,
    /// Republish an unchanged reading at least this often (with or without a deadband).
    #[serde(default, with = "humantime_serde")]
    pub heartbeat: Option<std::time::Duration>,
    /// Never publish on this topic more often than this.
    #[serde(default, with = "humantime_serde")]
    pub min_interval: Option<std::time::Duration>,
}

/// `deadband:` as written: a number, or a percentage as text (`"2%"`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum DeadbandValue {
    /// An absolute change.
    Number(f64),
    /// `"2%"`, or a number written as text.
    Text(String),
}

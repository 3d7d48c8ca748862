//! `modbus_server:` as users write it: the Modbus TCP server through which other programs
//! (evcc, Home Assistant, a vendor's tool) reach the gateway's Modbus devices on its buses.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;

/// `modbus_server:` — other programs reach the gateway's Modbus units through it; their
/// requests go on the bus between the gateway's own polls.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ModbusServer {
    /// Address of the Modbus TCP listener (loopback by default: the LAN is opt-in).
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Connections at once, from everybody.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Connections at once from one address (loopback exempt).
    #[serde(default = "default_max_connections_per_peer")]
    pub max_connections_per_peer: usize,
    /// Requests one connection may have waiting for the line at once; more are answered
    /// with exception 6 (server busy).
    #[serde(default = "default_max_queued")]
    pub max_queued: usize,
    /// The part of a line's time the clients get while the gateway's polls wait too
    /// (`50%` or `0.5`); the rest is the gateway's.
    #[serde(default = "default_share")]
    pub share: Share,
    /// Longest a request waits for the line; past it the client gets exception 0x0B.
    #[serde(default = "default_max_wait", with = "humantime_serde")]
    pub max_wait: Duration,
    /// A connection that sends no request this long is closed.
    #[serde(default = "default_idle_timeout", with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// The devices clients may reach, and what each client may do there.
    pub units: Vec<ServerUnit>,
}

/// A share of the line: a fraction (`0.5`) or a percentage (`50%`).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Share {
    /// 0..=1.
    Fraction(f64),
    /// `N%`.
    Text(String),
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 1502))
}
fn default_max_connections() -> usize {
    16
}
fn default_max_connections_per_peer() -> usize {
    4
}
fn default_max_queued() -> usize {
    4
}
fn default_share() -> Share {
    Share::Fraction(0.5)
}
fn default_max_wait() -> Duration {
    Duration::from_secs(1)
}
fn default_idle_timeout() -> Duration {
    Duration::from_secs(300)
}

/// One device clients may reach.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ServerUnit {
    /// The gateway's device (one with `modbus:`).
    pub device: String,
    /// The unit id clients address it by (default: its own on the line).
    pub unit: Option<u8>,
    /// Answer reads from the gateway's own latest reading when it is younger than this.
    #[serde(default, with = "humantime_serde")]
    pub cache: Option<Duration>,
    /// Who may read what (default: every client, everything).
    pub read: Option<Vec<Grant>>,
    /// Who may write what (default: nobody, nothing).
    #[serde(default)]
    pub write: Vec<Grant>,
}

/// Clients and the addresses they may reach.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Grant {
    /// `any`, or a list of addresses and networks (`192.168.1.20`, `10.0.0.0/24`).
    pub clients: Clients,
    /// Coil addresses (0-based): `2`, `"0-15"`, `"0x10-0x1F"`.
    pub coils: Option<Vec<Addresses>>,
    /// Discrete input addresses.
    pub discretes: Option<Vec<Addresses>>,
    /// Holding register addresses.
    pub holding: Option<Vec<Addresses>>,
    /// Input register addresses.
    pub input: Option<Vec<Addresses>>,
}

/// `any` or a list.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Clients {
    /// `any`.
    One(String),
    /// Addresses and networks.
    Many(Vec<String>),
}

/// One address or a range of them.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum Addresses {
    /// One address.
    One(u16),
    /// `a-b`, decimal or 0x hex, or one address as text.
    Range(String),
}

//! serial2mqtt: serial/USB sensor frames to MQTT, by YAML rules, through an embedded broker.
//!
//! The module tree follows the data: [`serial`] (ports and framing) → [`frames`] (a frame
//! through the device's [`rules`]) → [`message`] → [`outlet`] → [`broker`] (embedded rumqttd)
//! and [`queue`] (the on-disk store-and-forward log that [`uplink`] drains). Back the other way,
//! [`downlink`] routes MQTT messages on command topics to the devices that write them to their
//! ports ([`rules::command`] says what bytes). [`gateway`] wires it together from a checked
//! [`config`] (whose device [`models`] expand to the full form before it is read); [`cli`] is
//! the command line, and [`scan`] finds what is on a port; [`web`] is the dashboard, which reads what
//! [`recent`] samples on the way; [`homeassistant`], [`prometheus`], [`systemd`],
//! [`statedir`], [`tls`], [`stats`] and [`pacing`] serve around them; [`listener`] bounds
//! every listener's connections, and [`http`] is the server the dashboard and the metrics
//! endpoint run on.

pub mod broker;
pub mod cli;
pub mod config;
pub mod downlink;
pub mod frames;
pub mod gateway;
pub mod homeassistant;
pub mod http;
pub mod listener;
pub mod message;
pub mod modbus;
pub mod models;
pub mod outlet;
pub mod pacing;
pub mod prometheus;
pub mod queue;
pub mod recent;
pub mod rules;
pub mod scan;
pub mod serial;
pub mod server;
pub mod statedir;
pub mod stats;
pub mod systemd;
pub mod tls;
pub mod uplink;
pub mod web;

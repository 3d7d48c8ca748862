//! The bus's boundary to programs that share its line (the Modbus TCP server): an exchange is
//! request bytes for one device, how long it may wait for the line, and a oneshot for what
//! came of it. The bus takes exchanges beside its own polls and commands, one transaction on
//! the line at a time, and never sees the network; the server finds a device's bus through the
//! [`Registry`], which the gateway keeps current as port tasks start and stop.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use bytes::Bytes;
use tokio::sync::{mpsc, oneshot};

use crate::modbus::cache::RegisterCache;

/// Exchanges a port task holds before it stops taking more (the server bounds each client's
/// share of it; see `modbus_server.max_queued`).
pub const INBOX: usize = 256;

/// One request of a sharing program for device `member` of a port.
#[derive(Debug)]
pub struct Exchange {
    /// The device's place on its port.
    pub member: usize,
    /// Who asked (a connection), for fair turns between clients.
    pub client: u64,
    /// The request as it goes on the line (an RTU frame, CRC included).
    pub request: Vec<u8>,
    /// Not on the line by then: answered [`Outcome::Expired`] instead.
    pub expires: Instant,
    /// Where what came of it goes.
    pub answer: oneshot::Sender<Outcome>,
}

/// What came of an exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The device's answer frame, as the device's framing cut it and its checksum passed.
    Answer(Bytes),
    /// Written, and no good answer came within the device's timeout.
    NoAnswer,
    /// The line was not free for it in time.
    Expired,
    /// The device is offline (missed polls): not asked, to spare the line a timeout.
    Offline,
    /// The port is closed (unplugged, or the server is gone).
    Closed,
}

/// Where a device's exchanges go, and what the server may answer without them.
#[derive(Debug, Clone)]
pub struct Target {
    /// Its port task's inbox.
    pub inbox: mpsc::Sender<Exchange>,
    /// Its place on the port.
    pub member: usize,
    /// Its Modbus unit id on the line.
    pub unit: u8,
    /// Its latest readings.
    pub cache: Arc<RegisterCache>,
}

/// The devices that can be reached by name; shared by the gateway (which changes it as port
/// tasks start and stop) and the server (which looks up); cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Registry(Arc<RwLock<HashMap<String, Target>>>);

impl Registry {
    /// Makes `device` reachable at `target` (replacing what it was).
    pub fn register(&self, device: &str, target: Target) {
        if let Ok(mut map) = self.0.write() {
            map.insert(device.to_string(), target);
        }
    }

    /// Makes `device` unreachable (its port task stopped).
    pub fn remove(&self, device: &str) {
        if let Ok(mut map) = self.0.write() {
            map.remove(device);
        }
    }

    /// Where `device` is now, if it runs.
    pub fn get(&self, device: &str) -> Option<Target> {
        self.0.read().ok()?.get(device).cloned()
    }
}

//! Modbus RTU master: a device described by its register map is read on the port's bus
//! scheduler like any polled device, and its answers become typed values for its rules.
//!
//! The map (`map`) says where each point lives (table and 0-based address, whatever spelling
//! the user took from the datasheet) and how its registers read (type, word order, scale).
//! The plan (`plan`) coalesces the points into as few read requests as the protocol allows;
//! each request becomes one of the device's polls, so the scheduler serves Modbus units and
//! other devices on one line with the same guarantees: one transaction at a time, the
//! turnaround kept, a dead unit backed off to `offline_poll`. The answers (`decode`) are
//! checked (unit, function, byte count, CRC) and turned into the points' values; the device's
//! rules run once a cycle, when every request of it has been answered or given up.
//!
//! The wire format comes from the `rmodbus` crate (requests with their CRC, response parsing
//! and the exception codes' names): a codec with no I/O of its own. tokio-modbus was the other
//! candidate; it owns the serial stream, which here belongs to the port task that also serves
//! polls and commands of non-Modbus devices on the same line, and it has no response timeout
//! or inter-request turnaround of its own, which are the scheduler's job here. What is ours:
//! the map, the coalescing plan and the values, which reuse the binary fields' types and word
//! orders (`rules::binary`).

pub mod cache;
pub mod decode;
pub mod map;
pub mod mbap;
pub mod plan;
pub mod write;

pub use map::{Point, Table};
pub use plan::Request;

/// A unit's compiled map: its points and the requests that read them.
#[derive(Debug)]
pub struct Unit {
    /// The unit id.
    pub unit: u8,
    /// The points, in the order written.
    pub points: Vec<Point>,
    /// The read requests, each one of the device's polls (same index).
    pub requests: Vec<Request>,
    /// Read groups: points with an `every` of their own are read apart, each interval its
    /// own cycle (1 when the whole map is read at the unit's `every`).
    pub groups: usize,
}

impl Unit {
    /// The request a poll of this device is, by the poll's name.
    pub fn request(&self, poll: &str) -> Option<usize> {
        self.requests.iter().position(|r| r.name == poll)
    }
}

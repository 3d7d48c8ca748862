//! The serial side: open a port, ask its devices, cut its bytes into frames, survive unplugging.
//!
//! [`link`] is the transport under a port (a serial device today); [`task`] owns one port for its whole life (open, serve, reopen with backoff) with every
//! device on it ([`port`]); [`bus`] serves an open port's traffic one transaction at a time, in the order
//! [`schedule`] decides; [`framing`] holds the frame decoders; [`simulate`] is a built-in sensor
//! on a pseudo-terminal for the demo and tests.

pub mod bus;
pub mod exchange;
pub mod framing;
pub mod link;
pub mod port;
pub mod ports;
pub mod schedule;
pub mod simulate;
pub mod task;

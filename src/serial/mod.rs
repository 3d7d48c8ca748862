//! The serial side: open a port, cut its bytes into frames, survive unplugging.
//!
//! [`device`] owns one port for its whole life (open, read, reopen with backoff); [`framing`] holds
//! the frame decoders; [`simulate`] is a built-in sensor on a pseudo-terminal for the demo and tests.

pub mod device;
pub mod framing;
pub mod ports;
pub mod simulate;

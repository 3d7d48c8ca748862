//! What a port task reads and writes: the transport under a port's line. Today a serial
//! device; network serial servers (raw TCP, RFC 2217) and Modbus TCP units plug in here, behind
//! the same [`Link`] trait, so the bus, its framings and its schedule never know which one it is.

use std::path::Path;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_serial::{SerialPort as _, SerialPortBuilderExt as _, SerialStream};

use super::port::explain_open_error;
use crate::config::SerialSettings;

/// An open line: bytes both ways, plus the two things the bus asks of a serial port beyond that.
pub trait Link: AsyncRead + AsyncWrite + Unpin + Send + Sync {
    /// Throws away bytes received and not yet read (stale or late answers); best effort.
    fn discard_input(&mut self);
    /// Bytes received and not yet read, when the transport can tell (0 when it cannot).
    fn waiting(&self) -> usize;
}

impl Link for SerialStream {
    fn discard_input(&mut self) {
        // Best effort: a port that cannot flush still has the read buffer cleared by the bus.
        let _ = self.clear(tokio_serial::ClearBuffer::Input);
    }

    fn waiting(&self) -> usize {
        self.bytes_to_read().map_or(0, |n| n as usize)
    }
}

/// Opens the line at `path` with the line settings `s`; the error is one sentence a user can
/// act on.
pub async fn open(path: &Path, s: &SerialSettings) -> Result<Box<dyn Link>, String> {
    let port = tokio_serial::new(path.to_string_lossy(), s.baud)
        .data_bits(s.data_bits)
        .parity(s.parity)
        .stop_bits(s.stop_bits)
        .flow_control(s.flow_control)
        .open_native_async()
        .map_err(|e| explain_open_error(path, &e))?;
    Ok(Box::new(port))
}

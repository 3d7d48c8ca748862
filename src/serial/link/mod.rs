//! What a port task reads and writes: the transport under a port's line. A serial device, or
//! a network serial server ([`tcp`], [`rfc2217`]) or Modbus TCP units ([`modbus_tcp`]), named
//! by the port's [`address`]: all behind the same [`Link`] trait, so the bus, its framings and
//! its schedule never know which one it is.
//!
//! A network port behaves as a USB adapter does: a connection that cannot be made is an open
//! error (one sentence: refused, unreachable, name not resolved, timed out); one closed or
//! reset by the server, or found dead by the socket's timers ([`net`]), is a port gone, and the
//! port task announces its devices offline and reconnects with backoff. The bus's timings stay
//! the line's (`wire_time` from the line settings): the server still sends at that speed.

pub mod address;
pub mod modbus_tcp;
pub mod net;
pub mod rfc2217;
pub mod tcp;

use std::path::Path;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_serial::{SerialPort as _, SerialPortBuilderExt as _, SerialStream};

use self::address::{Address, Transport};
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

/// Opens the line `port:` names (a device's path, or a URL) with the line settings `s`; the
/// error is one sentence a user can act on.
pub async fn open(path: &Path, s: &SerialSettings) -> Result<Box<dyn Link>, String> {
    let (transport, host, port) = match Address::parse(path) {
        Ok(Address::Device(path)) => return open_device(&path, s),
        Ok(Address::Net {
            transport,
            host,
            port,
        }) => (transport, host, port),
        Err(e) => return Err(e.to_string()),
    };
    let shown = path.display().to_string();
    let stream = net::connect(&host, port, &shown).await?;
    Ok(match transport {
        Transport::Tcp => Box::new(stream),
        Transport::Rfc2217 => Box::new(rfc2217::open(stream, s, &shown).await?),
        Transport::ModbusTcp => Box::new(modbus_tcp::ModbusTcp::new(stream, &shown)),
    })
}

/// Opens a serial device.
fn open_device(path: &Path, s: &SerialSettings) -> Result<Box<dyn Link>, String> {
    let port = tokio_serial::new(path.to_string_lossy(), s.baud)
        .data_bits(s.data_bits)
        .parity(s.parity)
        .stop_bits(s.stop_bits)
        .flow_control(s.flow_control)
        .open_native_async()
        .map_err(|e| explain_open_error(path, &e))?;
    Ok(Box::new(port))
}

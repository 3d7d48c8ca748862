//! `tcp://`: a raw TCP serial server (ser2net `raw`, USR-TCP232 and Waveshare in "TCP server"
//! mode, Moxa NPort "TCP server"): the connection carries the line's bytes both ways, nothing
//! else. The line settings are the server's own (set in its web page); Modbus RTU over TCP is
//! this transport with the `modbus_rtu` framing.

use tokio::net::TcpStream;

use super::Link;

impl Link for TcpStream {
    /// Reads away what the kernel holds now; bytes still on the way from the server arrive
    /// later (the bus's timeout and framing treat them as on a serial line).
    fn discard_input(&mut self) {
        let mut buf = [0u8; 512];
        // Ok(0) is the end of the stream: the next read sees it again and the port is gone.
        while let Ok(1..) = self.try_read(&mut buf) {}
    }

    /// A socket does not tell without an ioctl the crate does not otherwise need: 0.
    fn waiting(&self) -> usize {
        0
    }
}

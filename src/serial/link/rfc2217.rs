//! `rfc2217://`: a telnet serial server with the COM-PORT-OPTION (RFC 2217; ser2net's
//! `telnet(rfc2217)`, Moxa "RFC2217" mode, pyserial's server). After connecting, the device's
//! line settings (baud, data bits, parity, stop bits, flow control) are sent by the option's
//! subnegotiation and the server's answers awaited, so the config, not the server's web page,
//! decides how the line is set. Then the connection carries the line's bytes, with telnet's
//! escaping: a 0xFF data byte travels doubled (IAC IAC) both ways, and negotiation and
//! subnegotiation are cut out of what is read. We agree to BINARY both ways (no CR/NUL
//! rewriting) and to COM-PORT-OPTION, and refuse every other option. (ser2net 4.3 opens with
//! WILL/DO SUPPRESS-GO-AHEAD, WILL ECHO, DONT ECHO, DO/WILL BINARY and DO COM-PORT-OPTION;
//! it answers each setting with its own record of the value in force when it answers, which
//! is why each setting is sent once: two quick baud settings are both answered with the
//! second, and a pty's even parity is answered though the kernel keeps none. PURGE-DATA is
//! answered too.)
//!
//! Ours, not a crate's: the subset is a handful of bytes (RFC 854's command parser, six
//! subnegotiations of RFC 2217), and no maintained async crate offers it as a byte stream.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf as _, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _, ReadBuf};
use tokio::net::TcpStream;
use tracing::{info, warn};

use super::Link;
use crate::config::SerialSettings;

const IAC: u8 = 255;
const DONT: u8 = 254;
const DO: u8 = 253;
const WONT: u8 = 252;
const WILL: u8 = 251;
const SB: u8 = 250;
const SE: u8 = 240;
const BINARY: u8 = 0;
const COM_PORT: u8 = 44;

/// COM-PORT-OPTION commands a client sends (the server answers each with the code + 100).
const SET_BAUDRATE: u8 = 1;
const SET_DATASIZE: u8 = 2;
const SET_PARITY: u8 = 3;
const SET_STOPSIZE: u8 = 4;
const SET_CONTROL: u8 = 5;
const PURGE_DATA: u8 = 12;
/// PURGE-DATA's value: the server's buffer of bytes received from the line.
const PURGE_RECEIVED: u8 = 1;
/// Above this many bytes waiting to be sent, a write waits for the socket first.
const MAX_OUT: usize = 16 * 1024;

/// Where the telnet parser is in the byte stream.
#[derive(Debug, Clone, Copy, Default)]
enum State {
    #[default]
    Data,
    Iac,
    /// After IAC WILL/WONT/DO/DONT: the option byte comes next.
    Verb(u8),
    Sb,
    SbIac,
}

/// A connection to an RFC 2217 server: the telnet layer over a TCP stream.
pub struct Rfc2217 {
    stream: TcpStream,
    t: Telnet,
}

/// The telnet side of the connection, without I/O: what was received, what to send.
#[derive(Default)]
struct Telnet {
    state: State,
    /// The subnegotiation being read (option byte first).
    sb: Vec<u8>,
    /// Options we said WILL to and the server has not refused: [BINARY, COM_PORT].
    local: [bool; 2],
    /// Options the server said WILL to and we agreed: [BINARY, COM_PORT].
    remote: [bool; 2],
    /// The server agreed to COM-PORT-OPTION (DO), or refused it (DONT): None until it says.
    com_port: Option<bool>,
    /// The server's answers to our settings, by client command (1..=5); its value bytes.
    answers: [Option<Vec<u8>>; 6],
    /// Line bytes received and not yet read.
    data: BytesMut,
    /// Bytes to send: escaped line bytes and our telnet answers, in order.
    out: BytesMut,
}

/// Index of an option in `local`/`remote`, if it is one we agree to.
fn agreed(option: u8) -> Option<usize> {
    match option {
        BINARY => Some(0),
        COM_PORT => Some(1),
        _ => None,
    }
}

/// Connects, negotiates, and sets the line to `s`; `shown` names the server in errors.
pub async fn open(stream: TcpStream, s: &SerialSettings, shown: &str) -> Result<Rfc2217, String> {
    let mut link = Rfc2217 {
        stream,
        t: Telnet {
            local: [true, true],
            ..Telnet::default()
        },
    };
    link.t
        .out
        .extend_from_slice(&[IAC, WILL, BINARY, IAC, DO, BINARY, IAC, WILL, COM_PORT]);
    let deadline = tokio::time::Instant::now() + super::net::CONNECT_TIMEOUT;
    match tokio::time::timeout_at(deadline, link.negotiate(s, shown)).await {
        Ok(Ok(())) => Ok(link),
        Ok(Err(why)) => Err(format!("{shown}: {why}")),
        Err(_) => Err(format!(
            "{shown} did not take the line settings within {}s: is it a telnet port with RFC 2217 (ser2net `telnet(rfc2217)`, Moxa \"RFC2217\" mode)? For a raw TCP port write tcp://",
            super::net::CONNECT_TIMEOUT.as_secs()
        )),
    }
}

impl Rfc2217 {
    /// Waits for the server's DO COM-PORT-OPTION, sends the settings, waits for its answers.
    async fn negotiate(&mut self, s: &SerialSettings, shown: &str) -> Result<(), String> {
        let mut sent = false;
        let mut buf = [0u8; 1024];
        loop {
            if !self.t.out.is_empty() {
                let out = self.t.out.split();
                self.stream
                    .write_all(&out)
                    .await
                    .map_err(|e| format!("write error while negotiating: {e}"))?;
            }
            match self.t.com_port {
                Some(false) => {
                    return Err("the server refused the RFC 2217 COM-PORT-OPTION (a telnet port without it? ser2net needs `telnet(rfc2217)`)".into())
                }
                Some(true) if !sent => {
                    self.t.settings(s);
                    sent = true;
                    continue;
                }
                Some(true) if self.t.answers[1..=4].iter().all(Option::is_some) => {
                    self.t.check_answers(s, shown);
                    return Ok(());
                }
                _ => {}
            }
            let n = self
                .stream
                .read(&mut buf)
                .await
                .map_err(|e| format!("read error while negotiating: {e}"))?;
            if n == 0 {
                return Err("the server closed the connection while negotiating (another client connected already?)".into());
            }
            self.t.feed(&buf[..n]);
        }
    }

    /// Sends what `out` holds.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.t.out.is_empty() {
            let n = ready!(Pin::new(&mut self.stream).poll_write(cx, &self.t.out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.t.out.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl Telnet {
    /// Queues the five settings' subnegotiations.
    fn settings(&mut self, s: &SerialSettings) {
        use tokio_serial::{FlowControl, Parity};
        let (size, stop) = (s.data_bits_count(), s.stop_bits_count());
        let parity = match s.parity {
            Parity::None => 1,
            Parity::Odd => 2,
            Parity::Even => 3,
        };
        let control = match s.flow_control {
            FlowControl::None => 1,
            FlowControl::Software => 2,
            FlowControl::Hardware => 3,
        };
        self.subnegotiate(SET_BAUDRATE, &s.baud.to_be_bytes());
        self.subnegotiate(SET_DATASIZE, &[size]);
        self.subnegotiate(SET_PARITY, &[parity]);
        self.subnegotiate(SET_STOPSIZE, &[stop]);
        self.subnegotiate(SET_CONTROL, &[control]);
    }

    /// Logs the line as the server answered it: a warning when it set other values than
    /// asked (it could not set them), else once at info, so the log shows the line in use.
    fn check_answers(&self, s: &SerialSettings, shown: &str) {
        let answered = self.line();
        let asked = line_text(s);
        if answered == asked {
            info!(port = %shown, "line set by RFC 2217: {answered}");
        } else {
            warn!(port = %shown, "the RFC 2217 server set the line to {answered}, not the {asked} asked for (a speed or format the port cannot do?)");
        }
    }

    /// The line as the server's answers describe it: `19200 8E1`.
    fn line(&self) -> String {
        let one = |c: u8| {
            self.answers[usize::from(c)]
                .as_deref()
                .and_then(|v| v.first().copied())
        };
        let baud = self.answers[usize::from(SET_BAUDRATE)]
            .as_deref()
            .and_then(|v| <[u8; 4]>::try_from(v).ok())
            .map_or(0, u32::from_be_bytes);
        let parity = match one(SET_PARITY) {
            Some(1) => 'N',
            Some(2) => 'O',
            Some(3) => 'E',
            Some(4) => 'M',
            Some(5) => 'S',
            _ => '?',
        };
        let stop = match one(SET_STOPSIZE) {
            Some(1) => "1",
            Some(2) => "2",
            Some(3) => "1.5",
            _ => "?",
        };
        let size = one(SET_DATASIZE).unwrap_or_default();
        format!("{baud} {size}{parity}{stop}")
    }

    /// Queues IAC SB COM-PORT-OPTION `command` `value` IAC SE, the value's 0xFF doubled.
    fn subnegotiate(&mut self, command: u8, value: &[u8]) {
        self.out.extend_from_slice(&[IAC, SB, COM_PORT, command]);
        escape(value, &mut self.out);
        self.out.extend_from_slice(&[IAC, SE]);
    }

    /// Runs received bytes through the telnet parser: line bytes to `data`, our answers to
    /// negotiation to `out`, the server's COM-PORT answers to `answers`.
    fn feed(&mut self, raw: &[u8]) {
        for &b in raw {
            self.state = match (self.state, b) {
                (State::Data, IAC) => State::Iac,
                (State::Data, _) => {
                    self.data.extend_from_slice(&[b]);
                    State::Data
                }
                (State::Iac, IAC) => {
                    self.data.extend_from_slice(&[IAC]);
                    State::Data
                }
                (State::Iac, WILL | WONT | DO | DONT) => State::Verb(b),
                (State::Iac, SB) => {
                    self.sb.clear();
                    State::Sb
                }
                // NOP, GA, BRK, ... carry nothing for a serial line.
                (State::Iac, _) => State::Data,
                (State::Verb(verb), option) => {
                    self.negotiation(verb, option);
                    State::Data
                }
                (State::Sb, IAC) => State::SbIac,
                (State::Sb, _) => {
                    // A subnegotiation has a few bytes; a runaway one is cut, not grown.
                    if self.sb.len() < 64 {
                        self.sb.push(b);
                    }
                    State::Sb
                }
                (State::SbIac, SE) => {
                    self.subnegotiation();
                    State::Data
                }
                (State::SbIac, _) => {
                    if self.sb.len() < 64 {
                        self.sb.push(b);
                    }
                    State::Sb
                }
            };
        }
    }

    /// Answers IAC `verb` `option` (RFC 854: a request to enter a state already in is not
    /// answered, so two agreeing parties never loop).
    fn negotiation(&mut self, verb: u8, option: u8) {
        let slot = agreed(option);
        let reply = match (verb, slot) {
            (DO, Some(i)) => {
                if option == COM_PORT {
                    self.com_port = Some(true);
                }
                (!std::mem::replace(&mut self.local[i], true)).then_some(WILL)
            }
            (DO, None) => Some(WONT),
            (DONT, Some(i)) => {
                if option == COM_PORT {
                    self.com_port = Some(false);
                }
                std::mem::replace(&mut self.local[i], false).then_some(WONT)
            }
            (WILL, Some(i)) => (!std::mem::replace(&mut self.remote[i], true)).then_some(DO),
            (WILL, None) => Some(DONT),
            (WONT, Some(i)) => std::mem::replace(&mut self.remote[i], false).then_some(DONT),
            _ => None,
        };
        if let Some(r) = reply {
            self.out.extend_from_slice(&[IAC, r, option]);
        }
    }

    /// A whole subnegotiation: the server's answer to one of our settings is kept.
    fn subnegotiation(&mut self) {
        if let [COM_PORT, code, value @ ..] = self.sb.as_slice() {
            if let Some(slot) = code.checked_sub(100).filter(|c| (1..=5).contains(c)) {
                self.answers[usize::from(slot)] = Some(value.to_vec());
            }
        }
    }
}

/// Line settings as `19200 8E1`.
fn line_text(s: &SerialSettings) -> String {
    let parity = match s.parity {
        tokio_serial::Parity::None => 'N',
        tokio_serial::Parity::Odd => 'O',
        tokio_serial::Parity::Even => 'E',
    };
    format!(
        "{} {}{parity}{}",
        s.baud,
        s.data_bits_count(),
        s.stop_bits_count()
    )
}

/// Appends `bytes` with every 0xFF doubled.
fn escape(bytes: &[u8], out: &mut BytesMut) {
    for chunk in bytes.split_inclusive(|&b| b == IAC) {
        out.extend_from_slice(chunk);
        if chunk.last() == Some(&IAC) {
            out.extend_from_slice(&[IAC]);
        }
    }
}

impl AsyncRead for Rfc2217 {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.t.data.is_empty() {
                let n = this.t.data.len().min(buf.remaining());
                buf.put_slice(&this.t.data.split_to(n));
                return Poll::Ready(Ok(()));
            }
            // Our answers to the server's negotiation go out as soon as the socket takes them.
            if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
                return Poll::Ready(Err(e));
            }
            let mut raw = [0u8; 2048];
            let mut rb = ReadBuf::new(&mut raw);
            ready!(Pin::new(&mut this.stream).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                return Poll::Ready(Ok(())); // the end of the stream: the port is gone
            }
            this.t.feed(rb.filled());
        }
    }
}

impl AsyncWrite for Rfc2217 {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.t.out.len() > MAX_OUT {
            ready!(this.poll_drain(cx))?;
        }
        escape(buf, &mut this.t.out);
        // What the socket does not take now goes with the flush.
        if let Poll::Ready(Err(e)) = this.poll_drain(cx) {
            return Poll::Ready(Err(e));
        }
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }
}

impl Link for Rfc2217 {
    /// Asks the server to drop what it received from the line (PURGE-DATA, sent before the
    /// next request), and drops what has reached us; negotiation in it is still answered.
    fn discard_input(&mut self) {
        self.t.subnegotiate(PURGE_DATA, &[PURGE_RECEIVED]);
        let mut buf = [0u8; 512];
        while let Ok(n @ 1..) = self.stream.try_read(&mut buf) {
            self.t.feed(&buf[..n]);
        }
        self.t.data.clear();
    }

    fn waiting(&self) -> usize {
        self.t.data.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_bytes_are_escaped_and_unescaped_and_telnet_is_cut_out() {
        let mut out = BytesMut::new();
        escape(&[1, 0xFF, 2, 0xFF], &mut out);
        assert_eq!(&out[..], [1, 0xFF, 0xFF, 2, 0xFF, 0xFF]);
        let mut t = Telnet {
            local: [true, true],
            ..Telnet::default()
        };
        // Data with an escaped 0xFF, a NOP, the server's options, and a COM-PORT answer
        // (baud 9600) split across reads.
        t.feed(&[
            7, IAC, IAC, 8, IAC, 241, IAC, DO, COM_PORT, IAC, WILL, 3, IAC, SB, COM_PORT,
        ]);
        t.feed(&[101, 0, 0, 0x25, 0x80, IAC, SE, 9, IAC, DO, 24]);
        assert_eq!(&t.data[..], [7, 0xFF, 8, 9]);
        assert_eq!(t.com_port, Some(true));
        assert_eq!(t.answers[1].as_deref(), Some(&[0, 0, 0x25, 0x80][..]));
        // Already agreed to COM-PORT: no answer; SGA (3) and terminal type (24) refused.
        assert_eq!(&t.out[..], [IAC, DONT, 3, IAC, WONT, 24]);
        t.out.clear();
        t.feed(&[IAC, WILL, BINARY, IAC, WILL, BINARY]);
        assert_eq!(&t.out[..], [IAC, DO, BINARY], "answered once");
        t.feed(&[IAC, DONT, COM_PORT]);
        assert_eq!(t.com_port, Some(false));
    }
}

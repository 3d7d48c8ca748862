//! `modbus-tcp://`: Modbus TCP units (meters and inverters with an Ethernet port, or a Modbus
//! TCP gateway in front of an RS-485 bus). The bus goes on speaking RTU: each request it
//! writes (unit, PDU, CRC) leaves as an MBAP frame with a new transaction id, and each MBAP
//! answer comes back as the RTU frame a unit on a line would have sent (unit, PDU, a fresh
//! CRC), so the `modbus_rtu` framing, the decoding, polls and commands work unchanged.
//!
//! A request is what was written between two flushes (the bus and `modbus read` flush after
//! each one). Only the answer to the request outstanding is passed on: one with another
//! transaction id (an answer that came after its timeout, when the next request is already
//! out) is dropped, counted and logged rate-limited, as a late answer on a line would be
//! discarded. A header that is not Modbus (protocol id, length) leaves the stream uncuttable:
//! the read fails and the connection is made anew. MBAP is [`crate::modbus::mbap`]'s, ours.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf as _, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tracing::warn;

use super::Link;
use crate::modbus::mbap;
use crate::pacing::{RateLimit, LOG_EVERY};

/// A connection to a Modbus TCP server, seen as an RTU line.
pub struct ModbusTcp {
    stream: TcpStream,
    shown: String,
    /// The transaction id of the last request sent.
    transaction: u16,
    /// The transaction whose answer is awaited, if any.
    outstanding: Option<u16>,
    /// RTU bytes written since the last flush: the request being written.
    request: BytesMut,
    /// MBAP bytes to send.
    out: BytesMut,
    /// MBAP bytes received, not yet a whole frame.
    received: BytesMut,
    /// RTU answers not yet read.
    answers: BytesMut,
    /// Answers dropped (another transaction id), since the connection opened.
    dropped: u64,
    limit: RateLimit,
}

impl ModbusTcp {
    /// The link over a connected stream; `shown` names the server in logs.
    pub fn new(stream: TcpStream, shown: &str) -> Self {
        Self {
            stream,
            shown: shown.to_owned(),
            // Starts anywhere: ids of an earlier connection's requests are not reused at once.
            transaction: fastrand::u16(..),
            outstanding: None,
            request: BytesMut::new(),
            out: BytesMut::new(),
            received: BytesMut::new(),
            answers: BytesMut::new(),
            dropped: 0,
            limit: RateLimit::new(LOG_EVERY),
        }
    }

    /// The RTU request written so far, as an MBAP frame queued to send.
    fn convert_request(&mut self) {
        let request = self.request.split();
        if request.is_empty() {
            return;
        }
        let Some((unit, pdu)) = mbap::from_rtu(&request) else {
            if let Some(n) = self.limit.hit() {
                warn!(server = %self.shown, suppressed = n, bytes = %hex::encode(&request[..request.len().min(64)]), "not a Modbus RTU frame (bad CRC): not sent to the Modbus TCP server (only `modbus:` devices and `modbus_rtu` framing go to modbus-tcp://)");
            }
            return;
        };
        self.transaction = self.transaction.wrapping_add(1);
        self.outstanding = Some(self.transaction);
        self.out
            .extend_from_slice(&mbap::frame(self.transaction, unit, pdu));
    }

    /// Cuts whole MBAP frames out of `received`: the outstanding answer becomes an RTU frame
    /// in `answers`, others are dropped. Err when the stream is not Modbus TCP.
    fn cut(&mut self) -> io::Result<()> {
        while self.received.len() >= mbap::HEADER {
            let mut head = [0u8; mbap::HEADER];
            head.copy_from_slice(&self.received[..mbap::HEADER]);
            let h = mbap::header(&head).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{} sent a frame that is not Modbus TCP: {e}", self.shown),
                )
            })?;
            if self.received.len() < mbap::HEADER + h.pdu_len {
                return Ok(());
            }
            self.received.advance(mbap::HEADER);
            let pdu = self.received.split_to(h.pdu_len);
            if self.outstanding == Some(h.transaction) {
                self.outstanding = None;
                self.answers.extend_from_slice(&mbap::rtu(h.unit, &pdu));
            } else {
                self.dropped += 1;
                if let Some(n) = self.limit.hit() {
                    warn!(server = %self.shown, transaction = h.transaction, awaited = ?self.outstanding, dropped = self.dropped, suppressed = n, "Modbus TCP answer to no request outstanding dropped (a late answer? raise the poll's timeout)");
                }
            }
        }
        Ok(())
    }

    /// Sends what `out` holds.
    fn poll_drain(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while !self.out.is_empty() {
            let n = ready!(Pin::new(&mut self.stream).poll_write(cx, &self.out))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.out.advance(n);
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for ModbusTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.answers.is_empty() {
                let n = this.answers.len().min(buf.remaining());
                buf.put_slice(&this.answers.split_to(n));
                return Poll::Ready(Ok(()));
            }
            let mut raw = [0u8; 1024];
            let mut rb = ReadBuf::new(&mut raw);
            ready!(Pin::new(&mut this.stream).poll_read(cx, &mut rb))?;
            if rb.filled().is_empty() {
                return Poll::Ready(Ok(())); // the end of the stream: the port is gone
            }
            this.received.extend_from_slice(rb.filled());
            this.cut()?;
        }
    }
}

impl AsyncWrite for ModbusTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        // An RTU frame is at most 256 bytes: more without a flush is not a request.
        let room = 256usize.saturating_sub(this.request.len());
        if room == 0 {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "over 256 bytes written without a flush: not one Modbus RTU request",
            )));
        }
        let n = buf.len().min(room);
        this.request.extend_from_slice(&buf[..n]);
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.convert_request();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.stream).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_drain(cx))?;
        Pin::new(&mut this.stream).poll_shutdown(cx)
    }
}

impl Link for ModbusTcp {
    /// Answers not yet read are dropped, and so is the one still awaited (it would come late):
    /// the stream's frames are still cut whole, so nothing is lost of the next answer.
    fn discard_input(&mut self) {
        self.answers.clear();
        self.outstanding = None;
    }

    fn waiting(&self) -> usize {
        self.answers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    /// A request leaves as MBAP with a fresh transaction id; of two answers only the one with
    /// that id comes back, as RTU; a stream that is not Modbus TCP is a read error.
    #[tokio::test]
    async fn only_the_outstanding_answer_comes_back_as_rtu() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (mut server, _) = listener.accept().await.unwrap();
        let mut link = ModbusTcp::new(client, "test");
        link.write_all(&mbap::rtu(1, &[4, 0, 0, 0, 1]))
            .await
            .unwrap();
        link.flush().await.unwrap();
        let mut request = [0u8; 12];
        server.read_exact(&mut request).await.unwrap();
        let h = mbap::header(request[..7].try_into().unwrap()).unwrap();
        assert_eq!((h.unit, &request[7..]), (1, &[4u8, 0, 0, 0, 1][..]));
        let late = mbap::frame(h.transaction.wrapping_sub(1), 1, &[4, 2, 0, 7]);
        let answer = mbap::frame(h.transaction, 1, &[4, 2, 0, 9]);
        server.write_all(&[late, answer].concat()).await.unwrap();
        let want = mbap::rtu(1, &[4, 2, 0, 9]);
        let mut got = vec![0u8; want.len()];
        link.read_exact(&mut got).await.unwrap();
        assert_eq!(got, want);
        assert_eq!(link.dropped, 1);
        server.write_all(&[0, 1, 0, 7, 0, 3, 1]).await.unwrap();
        let e = link.read(&mut got).await.unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{e}");
    }
}

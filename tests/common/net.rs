//! Raw TCP against our HTTP listeners: connections that never finish their request, answers
//! read to the end, the gateway's open descriptors (a LAN peer's address is
//! `common::lan_address`).

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A connection that sends the start of a request line and never the rest.
pub fn hold(to: SocketAddr) -> TcpStream {
    let mut s = TcpStream::connect(to).expect("connect");
    s.write_all(b"GET /api/state HTTP/1.1\r\nHost: x")
        .expect("send a partial request");
    s
}

/// What the peer sent until it closed, or until `within`; and when it closed (None: still
/// open). A reset counts as closed.
pub fn read_until_closed(s: &mut TcpStream, within: Duration) -> (String, Option<Duration>) {
    let start = Instant::now();
    let mut out = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = within.saturating_sub(start.elapsed());
        if left.is_zero() {
            return (String::from_utf8_lossy(&out).into_owned(), None);
        }
        s.set_read_timeout(Some(left)).expect("read timeout");
        match s.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(_) => break,
        }
    }
    (
        String::from_utf8_lossy(&out).into_owned(),
        Some(start.elapsed()),
    )
}

/// The descriptors process `pid` holds now.
pub fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A request (with `Connection: close`) from this host to `to`; (status, whole answer).
pub fn request(to: SocketAddr, request: &str) -> (u16, String) {
    let mut s = TcpStream::connect(to).expect("connect");
    s.write_all(request.as_bytes()).expect("send");
    let (text, _) = read_until_closed(&mut s, Duration::from_secs(5));
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    (status, text)
}

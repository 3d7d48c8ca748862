//! Raw TCP against our HTTP listeners: connections that never finish their request, answers
//! read to the end, the gateway's open descriptors, and an address of this host that is not
//! loopback (so a test can be a peer on the LAN).

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// An IPv4 address of this host other than loopback: connecting to it from here makes the
/// connection's peer that address, as a LAN peer's would be. None when the host has none
/// (then the test says SKIPPED; under CI=true it fails).
pub fn lan_address() -> Option<IpAddr> {
    let mut found = None;
    // SAFETY: getifaddrs fills a list that is read here and freed once, by freeifaddrs.
    unsafe {
        let mut list: *mut libc::ifaddrs = std::ptr::null_mut();
        if libc::getifaddrs(&mut list) == 0 {
            let mut at = list;
            while !at.is_null() && found.is_none() {
                let addr = (*at).ifa_addr;
                if !addr.is_null() && i32::from((*addr).sa_family) == libc::AF_INET {
                    let v4 = &*(addr as *const libc::sockaddr_in);
                    let ip = std::net::Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr));
                    if !ip.is_loopback() && !ip.is_unspecified() {
                        found = Some(IpAddr::V4(ip));
                    }
                }
                at = (*at).ifa_next;
            }
            libc::freeifaddrs(list);
        }
    }
    if found.is_none() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("this host has no address but loopback: the per-peer tests need one");
        }
        eprintln!("SKIPPED: this host has no address but loopback");
    }
    found
}

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

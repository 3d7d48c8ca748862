//! Connecting to a network serial server the way a port is opened: one attempt with a time
//! limit, an error that is one sentence a user can act on (refused, unreachable, name not
//! resolved, timed out), and a socket set up to notice a server that died silently.
//!
//! A server that is switched off or loses its cable sends no FIN or RST: a read would wait
//! forever. Two kernel timers find it, with no traffic of ours when the line is idle:
//! TCP keepalive probes an idle connection ([`KEEPALIVE_IDLE`], then [`KEEPALIVE_INTERVAL`]
//! times [`KEEPALIVE_PROBES`]), and `TCP_USER_TIMEOUT` ([`USER_TIMEOUT`]) ends a connection
//! whose written bytes stay unacknowledged, which is the case on a polled bus, where keepalive
//! never starts because requests keep going out. Poll timeouts alone would only mark the
//! devices offline and keep writing into a dead socket; with these the read fails, the port is
//! gone, and the task reconnects with backoff like after a USB unplug. socket2 (already under
//! tokio) sets them.

use std::io;
use std::time::Duration;

use tokio::net::TcpStream;

/// Longest wait for a server to accept the connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Idle time before the first keepalive probe.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
/// Time between keepalive probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// Unanswered probes before the connection counts as dead.
pub const KEEPALIVE_PROBES: u32 = 3;
/// Longest time written bytes may stay unacknowledged before the connection counts as dead.
pub const USER_TIMEOUT: Duration = Duration::from_secs(20);

/// Connects to `host:port` (`shown` names it in errors): the first address that accepts,
/// with `TCP_NODELAY` (a request leaves at once, not after the previous answer's ACK) and the
/// dead-peer timers above.
pub async fn connect(host: &str, port: u16, shown: &str) -> Result<TcpStream, String> {
    let addrs: Vec<std::net::SocketAddr> =
        match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::lookup_host((host, port))).await {
            Ok(Ok(addrs)) => addrs.collect(),
            Ok(Err(e)) => {
                return Err(format!(
                    "cannot connect to {shown}: the name {host} is not resolved ({e}); check the spelling, or write the server's IP address"
                ))
            }
            Err(_) => {
                return Err(format!(
                    "cannot connect to {shown}: resolving {host} took over {}s (is DNS reachable?)",
                    CONNECT_TIMEOUT.as_secs()
                ))
            }
        };
    let mut last = format!("cannot connect to {shown}: {host} has no address");
    for addr in addrs {
        match tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                setup(&stream).map_err(|e| format!("cannot set up the connection to {shown}: {e}"))?;
                return Ok(stream);
            }
            Ok(Err(e)) => last = explain(shown, &e),
            Err(_) => {
                last = format!(
                    "cannot connect to {shown}: no answer within {}s (server off, or a firewall dropping the connection?)",
                    CONNECT_TIMEOUT.as_secs()
                )
            }
        }
    }
    Err(last)
}

/// No Nagle delay, and the dead-peer timers.
fn setup(stream: &TcpStream) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let sock = socket2::SockRef::from(stream);
    sock.set_tcp_keepalive(
        &socket2::TcpKeepalive::new()
            .with_time(KEEPALIVE_IDLE)
            .with_interval(KEEPALIVE_INTERVAL)
            .with_retries(KEEPALIVE_PROBES),
    )?;
    sock.set_tcp_user_timeout(Some(USER_TIMEOUT))
}

/// A connect error as one sentence.
fn explain(shown: &str, e: &io::Error) -> String {
    use io::ErrorKind as K;
    use rustix::io::Errno;
    // By errno: io::ErrorKind's unreachable kinds are newer than this crate's Rust version.
    let errno = Errno::from_io_error(e);
    let why = match e.kind() {
        _ if errno == Some(Errno::HOSTUNREACH) || errno == Some(Errno::NETUNREACH) => {
            "host unreachable (check the address, the cable and the network)"
        }
        K::ConnectionRefused => {
            "connection refused (the server is up but nothing listens on that port: check the port number and the server's mode)"
        }
        K::TimedOut => "timed out (server off, or a firewall dropping the connection?)",
        K::PermissionDenied => "not permitted (a local firewall rule?)",
        _ => return format!("cannot connect to {shown}: {e}"),
    };
    format!("cannot connect to {shown}: {why}")
}

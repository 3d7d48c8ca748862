//! A fault-injecting TCP proxy in front of an upstream broker: `down()` is a network outage as
//! the gateway sees it (connections reset, connects refused) while the broker and its
//! subscribers stay up; `blackhole()` accepts connections and never answers (a broker that hangs
//! before CONNACK); `stall()` stops the broker's replies (PUBACKs) from reaching the gateway on
//! open connections. Shared by the uplink tests and the uplink benchmark.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

const FORWARD: u8 = 0;
const BLACKHOLE: u8 = 1;

/// A proxy from `port` to `upstream` on loopback.
pub struct Proxy {
    pub port: u16,
    upstream: u16,
    tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
    mode: Arc<AtomicU8>,
    /// True while replies from the broker are held back.
    stalled: watch::Sender<bool>,
    accepted: Arc<AtomicUsize>,
    /// When each forwarded connection sent its MQTT CONNECT (probes that open and close a
    /// connection send nothing and are not in it).
    connects: Arc<Mutex<Vec<Instant>>>,
}

impl Proxy {
    /// Starts forwarding on a free port.
    pub async fn start(upstream: u16) -> Self {
        let probe = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("proxy port");
        let port = probe.local_addr().expect("proxy addr").port();
        drop(probe);
        let p = Self {
            port,
            upstream,
            tasks: Arc::new(Mutex::new(Vec::new())),
            mode: Arc::new(AtomicU8::new(FORWARD)),
            stalled: watch::channel(false).0,
            accepted: Arc::new(AtomicUsize::new(0)),
            connects: Arc::new(Mutex::new(Vec::new())),
        };
        p.up().await;
        p
    }

    /// Connections accepted so far (connection attempts that reached the proxy, the uplink's
    /// reachability probes included; [`Proxy::connects`] counts MQTT sessions).
    pub fn accepted(&self) -> usize {
        self.accepted.load(Ordering::Relaxed)
    }

    /// When forwarded connections sent their MQTT CONNECT, in order.
    pub fn connects(&self) -> Vec<Instant> {
        self.connects.lock().unwrap().clone()
    }

    /// New connections are accepted and then ignored: nothing is forwarded, nothing answered.
    pub fn blackhole(&self) {
        self.mode.store(BLACKHOLE, Ordering::Relaxed);
    }

    /// New connections are forwarded again (after `blackhole`).
    pub fn forward(&self) {
        self.mode.store(FORWARD, Ordering::Relaxed);
    }

    /// Holds back everything the broker sends (CONNACK, PUBACK, PINGRESP) on every connection;
    /// the gateway's packets still reach the broker.
    pub fn stall(&self, stalled: bool) {
        self.stalled.send_replace(stalled);
    }

    /// Accepts connections again (after `down`).
    pub async fn up(&self) {
        // The listener of the aborted accept task is dropped when that task is next polled:
        // until then the port is still taken.
        let deadline = Instant::now() + Duration::from_secs(3);
        let listener = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(e) if Instant::now() > deadline => panic!("proxy bind: {e}"),
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        let upstream = self.upstream;
        let tasks = Arc::clone(&self.tasks);
        let mode = Arc::clone(&self.mode);
        let accepted = Arc::clone(&self.accepted);
        let connects = Arc::clone(&self.connects);
        let stalled = self.stalled.subscribe();
        let accept = tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                accepted.fetch_add(1, Ordering::Relaxed);
                let blackhole = mode.load(Ordering::Relaxed) == BLACKHOLE;
                let stalled = stalled.clone();
                let connects = Arc::clone(&connects);
                let conn = tokio::spawn(async move {
                    if blackhole {
                        swallow(inbound, connects).await;
                    } else {
                        pump(inbound, upstream, stalled, connects).await;
                    }
                });
                tasks.lock().unwrap().push(conn.abort_handle());
            }
        });
        self.tasks.lock().unwrap().push(accept.abort_handle());
    }

    /// Drops every connection and stops listening.
    pub fn down(&self) {
        for t in self.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }
}

/// Reads and discards until the peer closes (noting a CONNECT, as [`pump`] does).
async fn swallow(mut inbound: tokio::net::TcpStream, connects: Arc<Mutex<Vec<Instant>>>) {
    let mut buf = [0u8; 4096];
    if let Ok(1..) = inbound.read(&mut buf).await {
        if buf[0] >> 4 == 1 {
            connects.lock().unwrap().push(Instant::now());
        }
    }
    while matches!(inbound.read(&mut buf).await, Ok(n) if n > 0) {}
}

/// Forwards both ways; the broker-to-gateway direction pauses while `stalled` is true.
async fn pump(
    inbound: tokio::net::TcpStream,
    upstream: u16,
    mut stalled: watch::Receiver<bool>,
    connects: Arc<Mutex<Vec<Instant>>>,
) {
    let Ok(out) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
        return;
    };
    let _ = inbound.set_nodelay(true);
    let _ = out.set_nodelay(true);
    let (mut in_r, mut in_w) = inbound.into_split();
    let (mut out_r, mut out_w) = out.into_split();
    let up = async move {
        let mut first = vec![0u8; 4096];
        if let Ok(n @ 1..) = in_r.read(&mut first).await {
            // Packet type 1: CONNECT.
            if first[0] >> 4 == 1 {
                connects.lock().unwrap().push(Instant::now());
            }
            if out_w.write_all(&first[..n]).await.is_ok() {
                let _ = tokio::io::copy(&mut in_r, &mut out_w).await;
            }
        }
        let _ = out_w.shutdown().await;
    };
    let down = async move {
        let mut buf = vec![0u8; 16 * 1024];
        loop {
            let n = match out_r.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            };
            // Held while stalled; the broker's further bytes wait in its socket buffers.
            if stalled.wait_for(|s| !*s).await.is_err() {
                return;
            }
            if in_w.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
        let _ = in_w.shutdown().await;
    };
    tokio::select! {
        _ = up => {}
        _ = down => {}
    }
}

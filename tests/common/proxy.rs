//! A TCP proxy in front of an upstream broker: `down()` is a network outage as the gateway
//! sees it (connections reset, connects refused) while the broker and its subscribers stay up.
//! Shared by the uplink tests and the uplink benchmark.

use std::sync::{Arc, Mutex};

/// A proxy from `port` to `upstream` on loopback.
pub struct Proxy {
    pub port: u16,
    upstream: u16,
    tasks: Arc<Mutex<Vec<tokio::task::AbortHandle>>>,
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
        };
        p.up().await;
        p
    }

    /// Accepts connections again (after `down`).
    pub async fn up(&self) {
        // The listener of the aborted accept task is dropped when that task is next polled:
        // until then the port is still taken.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(3);
        let listener = loop {
            match tokio::net::TcpListener::bind(("127.0.0.1", self.port)).await {
                Ok(l) => break l,
                Err(e) if std::time::Instant::now() > deadline => panic!("proxy bind: {e}"),
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(20)).await,
            }
        };
        let upstream = self.upstream;
        let tasks = Arc::clone(&self.tasks);
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let conn = tokio::spawn(async move {
                    if let Ok(mut out) =
                        tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await
                    {
                        let _ = inbound.set_nodelay(true);
                        let _ = out.set_nodelay(true);
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut out).await;
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

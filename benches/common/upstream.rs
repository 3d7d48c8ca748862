//! The upstream side of the uplink benchmarks: a mosquitto broker and a subscriber that records
//! when each sequence number first arrived.

use std::collections::BTreeMap;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use super::free_port;
use crate::mosquitto::spawn_mosquitto;

/// What arrived upstream: sequence number → first arrival.
pub type Arrivals = Arc<Mutex<BTreeMap<u64, Instant>>>;

pub struct Mosquitto {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Mosquitto {
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let child = spawn_mosquitto(
            &dir.path().join("m.conf"),
            &format!("listener {port} 127.0.0.1\nallow_anonymous true\nuser root\nmax_queued_messages 0\nmax_inflight_messages 0\n"),
            port,
        );
        Self {
            child,
            port,
            _dir: dir,
        }
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub async fn subscribe(port: u16) -> Arrivals {
    let mut opts = MqttOptions::new(format!("bench-sub-{}", fastrand_id()), "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(30));
    opts.set_inflight(1000);
    let (client, mut events) = AsyncClient::new(opts, 10_000);
    // QoS 0 to the measuring subscriber: the uplink's QoS 1 is between the system and the
    // broker; acknowledging every delivery to the subscriber too would measure mosquitto.
    client
        .subscribe("bench/#", QoS::AtMostOnce)
        .await
        .expect("subscribe");
    let got: Arrivals = Arc::new(Mutex::new(BTreeMap::new()));
    let g = Arc::clone(&got);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut tx = Some(tx);
    tokio::spawn(async move {
        let _client = client;
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let now = Instant::now();
                    if let Some(seq) = std::str::from_utf8(&p.payload)
                        .ok()
                        .and_then(|s| s.parse().ok())
                    {
                        g.lock().unwrap().entry(seq).or_insert(now);
                    }
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(t) = tx.take() {
                        let _ = t.send(());
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    rx.await.expect("suback");
    got
}

pub fn fastrand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    u64::from(std::process::id()) * 1000 + N.fetch_add(1, Ordering::Relaxed)
}

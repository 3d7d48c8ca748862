//! An upstream broker for the uplink tests (mosquitto), a subscriber that records what arrives
//! there, and the gateway config and frames those tests share.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Child;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

use super::mosquitto::spawn_mosquitto;
use super::{free_port, have_tool, Pty};

/// A mosquitto broker on loopback whose persistence survives restarts.
pub struct Mosquitto {
    pub child: Option<Child>,
    pub port: u16,
    /// Its MQTT-over-WebSockets listener.
    pub ws_port: u16,
    pub dir: tempfile::TempDir,
}

impl Mosquitto {
    pub fn start() -> Option<Self> {
        if !have_tool("mosquitto") {
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        let mut m = Self {
            child: None,
            port: free_port(),
            ws_port: free_port(),
            dir,
        };
        m.restart();
        Some(m)
    }

    pub fn restart(&mut self) {
        let conf = self.dir.path().join("mosquitto.conf");
        let child = spawn_mosquitto(
            &conf,
            &format!(
                "listener {} 127.0.0.1\nlistener {} 127.0.0.1\nprotocol websockets\nallow_anonymous true\nuser root\npersistence true\npersistence_location {}/\nmax_queued_messages 0\nautosave_interval 1\nlog_dest file {}/mosquitto.log\nlog_type all\n",
                self.port,
                self.ws_port,
                self.dir.path().display(),
                self.dir.path().display()
            ),
            self.port,
        );
        self.child = Some(child);
    }
}

impl Drop for Mosquitto {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// An upstream subscriber, connected to the broker directly (not through the proxy); records
/// every payload on its topic filter, in order.
pub struct Upstream {
    pub got: Arc<Mutex<Vec<(String, String)>>>,
}

impl Upstream {
    pub async fn subscribe(port: u16, filter: &str) -> Self {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // A client id of its own: two subscribers sharing one would take each other's session.
        let id = format!("upstream-{}-{n}", std::process::id());
        let mut opts = MqttOptions::new(id, "127.0.0.1", port);
        opts.set_clean_session(false);
        opts.set_keep_alive(Duration::from_secs(5));
        let (client, mut events) = AsyncClient::new(opts, 1000);
        client.subscribe(filter, QoS::AtLeastOnce).await.unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let got2 = Arc::clone(&got);
        let (tx, mut suback) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let _client = client;
            loop {
                match events.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => got2.lock().unwrap().push((
                        p.topic.clone(),
                        String::from_utf8_lossy(&p.payload).into_owned(),
                    )),
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = tx.send(());
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(5), suback.recv())
            .await
            .expect("SUBACK");
        Self { got }
    }

    pub fn payloads(&self, topic: &str) -> Vec<u64> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _)| t == topic)
            .filter_map(|(_, p)| p.parse().ok())
            .collect()
    }

    /// Waits until every number in `1..=n` arrived on `topic`; returns what arrived, in order.
    pub async fn wait_all(&self, topic: &str, n: u64, timeout: Duration) -> Vec<u64> {
        let deadline = Instant::now() + timeout;
        loop {
            let got = self.payloads(topic);
            let distinct: BTreeSet<u64> = got.iter().copied().collect();
            if (1..=n).all(|i| distinct.contains(&i)) {
                return got;
            }
            if Instant::now() > deadline {
                let missing: Vec<u64> = (1..=n).filter(|i| !distinct.contains(i)).collect();
                panic!(
                    "missing {} of {n} on {topic}: {:?}",
                    missing.len(),
                    &missing[..missing.len().min(20)]
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// First arrivals must be in order; duplicates (at-least-once) may repeat earlier numbers.
pub fn assert_in_order(got: &[u64]) {
    let mut seen = BTreeSet::new();
    let mut last_new = 0;
    for &n in got {
        if seen.insert(n) {
            assert!(
                n > last_new,
                "{n} arrived after {last_new} for the first time: out of order"
            );
            last_new = n;
        }
    }
}

pub fn uplink_config(port_path: &Path, upstream: u16, state: &Path, extra: &str) -> String {
    format!(
        r#"
gateway: {{id: gw1, state_dir: "{state}"}}
broker: {{listen: "127.0.0.1:{{port}}"}}
uplink:
  url: mqtt://127.0.0.1:{upstream}
  forward: ["sensors/#"]
  topic_prefix: "sites/{{gateway}}/"
  keep_alive: 5s
{extra}
queue: {{flush_interval: 50ms}}
devices:
  - {{name: d, port: {port}, rules: [seq]}}
rules:
  seq:
    match: '^seq=(?P<n>\d+)$'
    publish: [{{topic: "sensors/{{device}}/seq", payload: "{{n}}", qos: 1}}]
"#,
        state = state.display(),
        port = port_path.display(),
    )
}

pub async fn write_frames(pty: &mut Pty, range: std::ops::RangeInclusive<u64>, gap: Duration) {
    for i in range {
        pty.write(format!("seq={i}\n").as_bytes()).await;
        if !gap.is_zero() {
            tokio::time::sleep(gap).await;
        }
    }
}

/// `config` (from [`uplink_config`]) with its uplink over MQTT-over-WebSockets (`ws://`).
pub fn over_websockets(config: &str) -> String {
    let out = config.replacen("url: mqtt://", "url: ws://", 1);
    assert_ne!(out, config, "no mqtt:// url in {config}");
    out
}

pub const TOPIC: &str = "sites/gw1/sensors/d/seq";

/// An upstream broker: mosquitto when installed (required in CI), else another serial2mqtt's
/// embedded rumqttd.
pub enum AnyBroker {
    Mosquitto(Mosquitto),
    Rumqttd(super::Gateway),
}

impl AnyBroker {
    pub fn start() -> Self {
        if let Some(m) = Mosquitto::start() {
            return AnyBroker::Mosquitto(m);
        }
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("mosquitto is required in CI (.ci/run installs it)");
        }
        AnyBroker::Rumqttd(super::start_gateway(
            "gateway: {id: up, state_dir: \"{dir}/state\"}\nbroker: {listen: \"127.0.0.1:{port}\"}\ndevices: []\n",
        ))
    }

    pub fn port(&self) -> u16 {
        match self {
            AnyBroker::Mosquitto(m) => m.port,
            AnyBroker::Rumqttd(g) => g.port,
        }
    }
}

//! The systems the uplink benchmarks compare: serial2mqtt, a Python pyserial + paho-mqtt script
//! publishing upstream, and that script behind a local mosquitto with a bridge; and the frame
//! writer and arrival wait they share.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;

use super::upstream::Arrivals;
use super::{free_port, wait_port};
use crate::mosquitto::spawn_mosquitto;

/// A system under test, restartable on the same state.
pub trait System {
    fn name(&self) -> &'static str;
    /// Starts the system; every process it runs (CPU, writes and kill -9 apply to all).
    fn start(&mut self, pty: &Path, uplink_port: u16) -> Vec<Child>;
}

pub struct Ours {
    pub state: tempfile::TempDir,
}

impl System for Ours {
    fn name(&self) -> &'static str {
        "serial2mqtt"
    }
    fn start(&mut self, pty: &Path, uplink_port: u16) -> Vec<Child> {
        let local = free_port();
        let yaml = format!(
            "gateway: {{id: bench, state_dir: {state}, stats_interval: 0s}}\nbroker: {{listen: \"127.0.0.1:{local}\"}}\nlog: {{level: error}}\n\
             uplink: {{url: \"mqtt://127.0.0.1:{uplink_port}\", forward: [\"bench/#\"], keep_alive: 5s, status_topic: status/bench}}\n\
             queue: {{flush_interval: 100ms}}\n\
             devices:\n  - {{name: d0, port: {pty}, baud: 115200, rules: [seq]}}\n\
             rules:\n  seq:\n    match: '^seq=(?P<n>\\d+)$'\n    publish: [{{topic: 'bench/{{device}}', payload: '{{n}}', qos: 1}}]\n",
            state = self.state.path().display(),
            pty = pty.display()
        );
        let config = self.state.path().join("bench.yaml");
        std::fs::write(&config, yaml).expect("config");
        let child = Command::new(super::gateway_bin())
            .args(["run", "--config"])
            .arg(&config)
            .stderr(Stdio::null())
            .spawn()
            .expect("serial2mqtt");
        assert!(wait_port(local, Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(300));
        vec![child]
    }
}

pub struct Python;

impl System for Python {
    fn name(&self) -> &'static str {
        "python"
    }
    fn start(&mut self, pty: &Path, uplink_port: u16) -> Vec<Child> {
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peer/pyserial_paho_upstream.py");
        let mut child = Command::new("python3")
            .arg("-u")
            .arg(script)
            .args([
                "127.0.0.1",
                &uplink_port.to_string(),
                &format!("d0={}", pty.display()),
            ])
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3");
        let mut line = String::new();
        let out = child.stdout.take().expect("stdout");
        std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line).expect("ready");
        std::thread::sleep(Duration::from_millis(300));
        vec![child]
    }
}

/// The other setup a user would build: the same Python reader publishing to a local mosquitto
/// with persistence (`autosave_interval 1`) and a bridge to the upstream broker.
pub struct MosquittoBridge {
    pub dir: tempfile::TempDir,
    /// The bridge's `restart_timeout` (None: mosquitto's default backoff).
    pub restart_timeout: Option<&'static str>,
}

impl System for MosquittoBridge {
    fn name(&self) -> &'static str {
        "python+mosquitto bridge"
    }
    fn start(&mut self, pty: &Path, uplink_port: u16) -> Vec<Child> {
        let local = free_port();
        let d = self.dir.path();
        let broker = spawn_mosquitto(
            &d.join("bridge.conf"),
            &format!(
                "listener {local} 127.0.0.1\nallow_anonymous true\nuser root\npersistence true\npersistence_location {}/\n\
                 autosave_interval 1\nmax_queued_messages 0\n\
                 connection up\naddress 127.0.0.1:{uplink_port}\ntopic bench/# out 1\ncleansession false\n\
                 {}bridge_attempt_unsubscribe false\n",
                d.display(),
                self.restart_timeout
                    .map(|t| format!("restart_timeout {t}\n"))
                    .unwrap_or_default()
            ),
            local,
        );
        let mut procs = Python.start(pty, local);
        procs.push(broker);
        procs
    }
}

pub async fn write_seq(
    pty: &mut tokio_serial::SerialStream,
    seqs: std::ops::Range<u64>,
    rate: u64,
) {
    if rate == 0 {
        let mut buf = Vec::with_capacity(64 * 1024);
        let mut i = seqs.start;
        while i < seqs.end {
            buf.clear();
            while buf.len() < 60 * 1024 && i < seqs.end {
                buf.extend_from_slice(format!("seq={i}\n").as_bytes());
                i += 1;
            }
            pty.write_all(&buf).await.expect("write");
        }
        return;
    }
    let per_ms = (rate / 1000).max(1);
    let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 * per_ms / rate));
    let mut i = seqs.start;
    while i < seqs.end {
        tick.tick().await;
        let mut buf = Vec::new();
        for _ in 0..per_ms {
            if i < seqs.end {
                buf.extend_from_slice(format!("seq={i}\n").as_bytes());
                i += 1;
            }
        }
        pty.write_all(&buf).await.expect("write");
    }
}

pub async fn wait_range(
    got: &Arrivals,
    seqs: std::ops::Range<u64>,
    idle: Duration,
) -> (usize, Option<Instant>) {
    let mut last_count = 0;
    let mut last_change = Instant::now();
    loop {
        let (count, last) = {
            let g = got.lock().unwrap();
            let r: Vec<Instant> = g.range(seqs.clone()).map(|(_, t)| *t).collect();
            (r.len(), r.iter().max().copied())
        };
        if count as u64 == seqs.end - seqs.start {
            return (count, last);
        }
        if count != last_count {
            last_count = count;
            last_change = Instant::now();
        } else if last_change.elapsed() > idle {
            return (count, last);
        }
        // Counting a large range costs the bench CPU that the systems measured need.
        let poll = if seqs.end - seqs.start > 100_000 {
            250
        } else {
            20
        };
        tokio::time::sleep(Duration::from_millis(poll)).await;
    }
}

/// Whether the peers can run (python3 with pyserial and paho-mqtt).
pub fn peer_available() -> bool {
    std::env::var("BENCH_PEER").as_deref() != Ok("0")
        && Command::new("python3")
            .args(["-c", "import serial, paho.mqtt.client"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

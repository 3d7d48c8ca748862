//! End-to-end pipeline benchmark: frames written into a pty, read back by a TCP MQTT subscriber.
//!
//! Compares serial2mqtt (embedded broker) with the setup a user would otherwise write: a Python
//! script with pyserial + paho-mqtt publishing to mosquitto. Both get the same 4 ptys (one
//! active), the same frames (`seq=N`), the same rule (regex, publish the number) and the same
//! subscriber. Each figure is the median of BENCH_RUNS runs (default 3).
//!
//! Run: `cargo bench --bench pipeline` (needs mosquitto, python3, pyserial, paho-mqtt 1.6 for the
//! peer; without them only serial2mqtt is measured). BENCH_COMMANDS=1 gives every device a
//! command (MQTT → serial) too; BENCH_FRAMES=json reads JSON frames with a `json: true` rule.
//! BENCH_ACL=1 adds a third system, serial2mqtt with `broker.acl_file` (its subscriber relayed
//! by the gatekeeper, every delivery checked), and gives mosquitto the same acl_file.
//! BENCH_WEB=1 turns the web dashboard on (no browser connected: what it costs the readings
//! to be sampled for it).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::io::AsyncWriteExt;
use tokio::sync::Notify;

mod common;
#[path = "../tests/common/mosquitto.rs"]
mod mosquitto;

use common::*;
use mosquitto::spawn_mosquitto;

const DEVICES: usize = 4;

/// A system under test: its processes (CPU and RSS are summed over them) and broker port.
struct Running {
    children: Vec<Child>,
    port: u16,
    startup: Duration,
    _dir: tempfile::TempDir,
}

impl Running {
    fn cpu(&self) -> f64 {
        self.children.iter().map(|c| cpu_seconds(c.id())).sum()
    }
    fn rss(&self) -> f64 {
        self.children.iter().map(|c| peak_rss_mib(c.id())).sum()
    }
    fn rss_now(&self) -> f64 {
        self.children
            .iter()
            .map(|c| status_mib(c.id(), "VmRSS:"))
            .sum()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// BENCH_FRAMES=json: JSON frames (`{"seq":N,"t":21.50,"h":40}`, a `json: true` rule) instead
/// of `seq=N` lines and a regex; serial2mqtt only (the peer script reads lines).
fn json_frames() -> bool {
    static JSON: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
    *JSON.get_or_init(|| std::env::var("BENCH_FRAMES").is_ok_and(|v| v == "json"))
}

/// Frame number `seq` as the device writes it.
fn frame(seq: u64) -> String {
    if json_frames() {
        format!("{{\"seq\":{seq},\"t\":21.50,\"h\":40}}\n")
    } else {
        format!("seq={seq}\n")
    }
}

/// The access rules of BENCH_ACL=1 (mosquitto's format, read by both brokers): anonymous clients
/// (the subscriber, and the peer's publishing script) may use the readings' topics, plus a
/// dashboard and a commander as a real file has.
const BENCH_ACL: &str = "topic readwrite bench/#\ntopic deny bench/secret/#\nuser dashboard\ntopic read #\nuser homeassistant\ntopic readwrite cmd/#\n";

fn acl_bench() -> bool {
    std::env::var("BENCH_ACL").is_ok_and(|v| v == "1")
}

fn start_serial2mqtt(ports: &[PathBuf]) -> Running {
    start_gateway(ports, false)
}

fn start_serial2mqtt_acl(ports: &[PathBuf]) -> Running {
    start_gateway(ports, true)
}

fn start_gateway(ports: &[PathBuf], acl: bool) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let acl_file = dir.path().join("acl");
    std::fs::write(&acl_file, BENCH_ACL).expect("acl file");
    let acl = if acl {
        format!(", acl_file: {}", acl_file.display())
    } else {
        String::new()
    };
    let web = if env_or("BENCH_WEB", 0u8) == 1 {
        format!("web: {{listen: \"127.0.0.1:{}\"}}\n", free_port())
    } else {
        String::new()
    };
    let mut yaml = format!(
        "gateway: {{id: bench, state_dir: {}}}\nbroker: {{listen: \"127.0.0.1:{port}\"{acl}}}\nlog: {{level: warn}}\n{web}devices:\n",
        dir.path().display()
    );
    // BENCH_COMMANDS=1: every device also takes a command, so the broker hands the gateway
    // every local message (its own readings included) to route: what commands cost the readings.
    let commands = env_or("BENCH_COMMANDS", 0u8) == 1;
    for (i, p) in ports.iter().enumerate() {
        yaml += &format!(
            "  - {{name: d{i}, port: {}, baud: 115200, rules: [seq]{}}}\n",
            p.display(),
            if commands { ", commands: [set]" } else { "" }
        );
    }
    if json_frames() {
        yaml += "rules:\n  seq:\n    json: true\n    publish: [{topic: 'bench/{device}', payload: '{seq}'}]\n";
    } else {
        yaml += "rules:\n  seq:\n    match: '^seq=(?P<n>\\d+)$'\n    publish: [{topic: 'bench/{device}', payload: '{n}'}]\n";
    }
    if commands {
        yaml += "commands:\n  set:\n    subscribe: 'cmd/{device}/set'\n    write: '{payload}'\n";
    }
    let config = dir.path().join("bench.yaml");
    std::fs::write(&config, yaml).expect("config");
    let t0 = Instant::now();
    let child = Command::new(common::gateway_bin())
        .args(["run", "--config"])
        .arg(&config)
        .stderr(Stdio::null())
        .spawn()
        .expect("serial2mqtt");
    assert!(
        wait_port(port, Duration::from_secs(10)),
        "serial2mqtt did not listen"
    );
    let startup = t0.elapsed();
    // Let the device tasks open their ports.
    std::thread::sleep(Duration::from_millis(300));
    Running {
        children: vec![child],
        port,
        startup,
        _dir: dir,
    }
}

fn peer_available() -> Result<(), String> {
    if json_frames() {
        return Err("line frames (BENCH_FRAMES=json measures serial2mqtt only)".into());
    }
    let py = Command::new("python3")
        .args(["-c", "import serial, paho.mqtt.client"])
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !py {
        return Err(
            "python3 with pyserial and paho-mqtt 1.6 (pip install pyserial 'paho-mqtt==1.6.1')"
                .into(),
        );
    }
    let mosq = Command::new("sh")
        .args(["-c", "command -v mosquitto"])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !mosq {
        return Err("mosquitto (apt-get install mosquitto)".into());
    }
    Ok(())
}

fn start_peer(ports: &[PathBuf]) -> Running {
    let dir = tempfile::tempdir().expect("tempdir");
    let port = free_port();
    let t0 = Instant::now();
    let acl_file = dir.path().join("acl");
    std::fs::write(&acl_file, BENCH_ACL).expect("acl file");
    let acl = if acl_bench() {
        format!("acl_file {}\n", acl_file.display())
    } else {
        String::new()
    };
    let mosq = spawn_mosquitto(
        &dir.path().join("mosquitto.conf"),
        &format!("listener {port} 127.0.0.1\nallow_anonymous true\nuser root\n{acl}"),
        port,
    );
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peer/pyserial_paho.py");
    let mut py = Command::new("python3")
        .arg("-u")
        .arg(script)
        .args(["127.0.0.1", &port.to_string()])
        .args(
            ports
                .iter()
                .enumerate()
                .map(|(i, p)| format!("d{i}={}", p.display())),
        )
        .stdout(Stdio::piped())
        .spawn()
        .expect("python3");
    let mut line = String::new();
    let stdout = py.stdout.take().expect("stdout");
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut line)
        .expect("ready line");
    assert_eq!(line.trim(), "ready");
    let startup = t0.elapsed();
    std::thread::sleep(Duration::from_millis(300));
    Running {
        children: vec![py, mosq],
        port,
        startup,
        _dir: dir,
    }
}

/// A TCP subscriber that records when each sequence number arrived.
struct Sink {
    count: Arc<AtomicU64>,
    arrivals: Arc<Mutex<Vec<(u64, Instant)>>>,
    notify: Arc<Notify>,
}

async fn subscribe(port: u16) -> Sink {
    let mut opts = MqttOptions::new(format!("bench-{}", std::process::id()), "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(60));
    let (client, mut eventloop) = AsyncClient::new(opts, 100_000);
    client
        .subscribe("bench/#", QoS::AtMostOnce)
        .await
        .expect("subscribe");
    let count = Arc::new(AtomicU64::new(0));
    let arrivals = Arc::new(Mutex::new(Vec::with_capacity(1 << 20)));
    let notify = Arc::new(Notify::new());
    let (c, a, n) = (count.clone(), arrivals.clone(), notify.clone());
    let (subacked_tx, subacked_rx) = tokio::sync::oneshot::channel();
    let mut subacked_tx = Some(subacked_tx);
    tokio::spawn(async move {
        let _client = client;
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let now = Instant::now();
                    if let Some(seq) = std::str::from_utf8(&p.payload)
                        .ok()
                        .and_then(|s| s.parse().ok())
                    {
                        a.lock().unwrap().push((seq, now));
                    }
                    c.fetch_add(1, Ordering::Relaxed);
                    n.notify_one();
                }
                Ok(Event::Incoming(Packet::SubAck(_))) => {
                    if let Some(tx) = subacked_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(_) => {}
                Err(_) => return,
            }
        }
    });
    subacked_rx.await.expect("suback");
    Sink {
        count,
        arrivals,
        notify,
    }
}

impl Sink {
    /// Waits until `n` messages arrived or nothing arrived for `idle`.
    async fn wait_for(&self, n: u64, idle: Duration) -> u64 {
        loop {
            let got = self.count.load(Ordering::Relaxed);
            if got >= n {
                return got;
            }
            if tokio::time::timeout(idle, self.notify.notified())
                .await
                .is_err()
                && self.count.load(Ordering::Relaxed) == got
            {
                return got;
            }
        }
    }
}

struct Throughput {
    fps: f64,
    cpu_per_1000: f64,
    lost: u64,
}

/// Writes `frames` frames, as fast as possible (`rate` 0) or paced at `rate` frames/s, and
/// counts what the subscriber receives.
async fn throughput(
    sys: &Running,
    master: &mut tokio_serial::SerialStream,
    frames: u64,
    rate: u64,
) -> Throughput {
    let sink = subscribe(sys.port).await;
    let cpu0 = sys.cpu();
    let t0 = Instant::now();
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut seq = 0u64;
    // Paced: one chunk per millisecond.
    let chunk = if rate == 0 {
        u64::MAX
    } else {
        (rate / 1000).max(1)
    };
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    while seq < frames {
        buf.clear();
        if rate > 0 {
            tick.tick().await;
        }
        let end = seq.saturating_add(chunk).min(frames);
        while buf.len() < 60 * 1024 && seq < end {
            buf.extend_from_slice(frame(seq).as_bytes());
            seq += 1;
        }
        master.write_all(&buf).await.expect("pty write");
        // Let the subscriber (same runtime) read: the bench must not be the bottleneck.
        tokio::task::yield_now().await;
    }
    let got = sink.wait_for(frames, Duration::from_secs(5)).await;
    let last = sink
        .arrivals
        .lock()
        .unwrap()
        .last()
        .map(|&(_, t)| t)
        .unwrap_or(t0);
    let secs = last.duration_since(t0).as_secs_f64().max(1e-9);
    // Let the CPU counters settle (they tick at 100 Hz).
    tokio::time::sleep(Duration::from_millis(50)).await;
    let cpu = sys.cpu() - cpu0;
    Throughput {
        fps: got as f64 / secs,
        cpu_per_1000: cpu / (got.max(1) as f64 / 1000.0),
        lost: frames - got.min(frames),
    }
}

/// p50 and p99 latency in ms at `rate` frames/s for `secs`.
async fn latency(
    sys: &Running,
    master: &mut tokio_serial::SerialStream,
    rate: u64,
    secs: u64,
) -> (f64, f64) {
    let sink = subscribe(sys.port).await;
    let n = rate * secs;
    let mut sent = Vec::with_capacity(n as usize);
    let mut tick = tokio::time::interval(Duration::from_nanos(1_000_000_000 / rate));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    for seq in 0..n {
        tick.tick().await;
        sent.push(Instant::now());
        master
            .write_all(frame(seq).as_bytes())
            .await
            .expect("write");
    }
    sink.wait_for(n, Duration::from_secs(3)).await;
    let mut lat: Vec<f64> = sink
        .arrivals
        .lock()
        .unwrap()
        .iter()
        .filter_map(|&(seq, t)| {
            sent.get(seq as usize)
                .map(|s| t.duration_since(*s).as_secs_f64() * 1000.0)
        })
        .collect();
    lat.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 - 1.0) * p).round() as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    (pct(0.50), pct(0.99))
}

#[derive(Default)]
struct Figures {
    max_fps: Vec<f64>,
    max_lost: Vec<f64>,
    lossless: Vec<f64>,
    lossless_cpu: Vec<f64>,
    cpu: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    startup: Vec<f64>,
    rss: Vec<f64>,
    idle_rss: Vec<f64>,
    idle: Vec<f64>,
}

/// What one system is asked to do.
struct Load {
    /// Frames in the unpaced burst.
    burst: u64,
    /// Paced rates tried, lowest first, each for `seconds`: the highest one delivered in full and
    /// on time (at least 90% of the offered rate) is the system's sustained throughput.
    rates: Vec<u64>,
    /// Seconds per paced rate.
    seconds: u64,
}

/// The common rate at which CPU per frame is compared (both systems sustain it).
const CPU_RATE: u64 = 2_000;

async fn measure(
    name: &str,
    load: &Load,
    start: fn(&[PathBuf]) -> Running,
    runs: usize,
) -> Figures {
    let mut f = Figures::default();
    for run in 0..runs {
        let mut ptys: Vec<Pty> = (0..DEVICES).map(|_| pty()).collect();
        let paths: Vec<PathBuf> = ptys.iter().map(|p| p.path.clone()).collect();
        let sys = start(&paths);
        f.startup.push(sys.startup.as_secs_f64() * 1000.0);
        let idle0 = sys.cpu();
        tokio::time::sleep(Duration::from_secs(5)).await;
        f.idle.push((sys.cpu() - idle0) / 5.0 * 100.0);
        f.idle_rss.push(sys.rss_now());
        let cpu = throughput(&sys, &mut ptys[0].master, CPU_RATE * 5, CPU_RATE).await;
        f.cpu.push(cpu.cpu_per_1000);
        let (p50, p99) = latency(&sys, &mut ptys[1].master, 200, 5).await;
        f.p50.push(p50);
        f.p99.push(p99);
        let (mut lossless, mut lossless_cpu) = (0.0, f64::NAN);
        for &rate in &load.rates {
            let t = throughput(&sys, &mut ptys[2].master, rate * load.seconds, rate).await;
            // A pty blocks its writer when the reader lags, so "nothing lost" alone would not
            // show a reader that cannot keep up: the delivered rate must match the offered one.
            if t.lost > 0 || t.fps < 0.9 * rate as f64 {
                break;
            }
            (lossless, lossless_cpu) = (t.fps, t.cpu_per_1000);
        }
        f.lossless.push(lossless);
        f.lossless_cpu.push(lossless_cpu);
        let max = throughput(&sys, &mut ptys[3].master, load.burst, 0).await;
        f.max_fps.push(max.fps);
        f.max_lost.push(max.lost as f64);
        f.rss.push(sys.rss());
        eprintln!(
            "{name} run {}: lossless at {lossless:.0}/s ({lossless_cpu:.4} CPU-s/1000), burst {:.0} frames/s delivered (lost {} of {}), \
             {:.4} CPU-s/1000 at {CPU_RATE}/s, p50 {:.2} ms, p99 {:.2} ms, startup {:.1} ms, peak RSS {:.1} MiB, idle CPU {:.2}%",
            run + 1, max.fps, max.lost, load.burst, cpu.cpu_per_1000, p50, p99,
            sys.startup.as_secs_f64() * 1000.0, sys.rss(), f.idle[run]
        );
    }
    f
}

fn main() {
    if !benchmarking() {
        return;
    }
    let runs: usize = env_or("BENCH_RUNS", 3);
    let ours_load = Load {
        burst: 300_000,
        rates: vec![25_000, 50_000, 100_000, 150_000, 200_000, 300_000],
        seconds: 3,
    };
    let peer_load = Load {
        burst: 20_000,
        rates: vec![1_000, 2_000, 4_000, 6_000, 8_000, 12_000, 16_000],
        seconds: 3,
    };
    let rt = runtime();
    rt.block_on(async {
        let ours = measure("serial2mqtt", &ours_load, start_serial2mqtt, runs).await;
        let gated = if acl_bench() {
            Some(measure("serial2mqtt+acl_file", &ours_load, start_serial2mqtt_acl, runs).await)
        } else {
            None
        };
        let peer = match peer_available() {
            Ok(()) if std::env::var("BENCH_PEER").as_deref() != Ok("0") => Some(measure("python+mosquitto", &peer_load, start_peer, runs).await),
            Ok(()) => None,
            Err(missing) => {
                eprintln!("peer not measured: needs {missing}");
                None
            }
        };
        println!("\nmedians of {runs} runs ({DEVICES} devices configured, 1 active; latency at 200 frames/s)\n");
        if gated.is_some() {
            println!("| metric | serial2mqtt | serial2mqtt, acl_file | ratio (acl_file / none) | pyserial+paho+mosquitto, acl_file | ratio (ours / peer, both with acl_file) |");
            println!("|---|---|---|---|---|---|");
        } else {
            println!("| metric | serial2mqtt | pyserial+paho+mosquitto | ratio |");
            println!("|---|---|---|---|");
        }
        type Metric = fn(&Figures) -> &Vec<f64>;
        let row = |name: &str, metric: Metric, fmt: &dyn Fn(f64) -> String, higher_better: bool| {
            let ma = median(metric(&ours).clone());
            let mb = peer.as_ref().map(|p| median(metric(p).clone()));
            let better = |x: f64, y: f64| if higher_better { x / y } else { y / x };
            match (&gated, mb) {
                (Some(g), mb) => {
                    let mg = median(metric(g).clone());
                    let (pb, pr) = mb
                        .map(|mb| (fmt(mb), format!("{:.1}× better", better(mg, mb))))
                        .unwrap_or(("–".into(), "–".into()));
                    println!("| {name} | {} | {} | {:.2} | {pb} | {pr} |", fmt(ma), fmt(mg), mg / ma);
                }
                (None, Some(mb)) => println!("| {name} | {} | {} | {:.1}× better |", fmt(ma), fmt(mb), better(ma, mb)),
                (None, None) => println!("| {name} | {} | – | – |", fmt(ma)),
            }
        };
        row("sustained throughput, frames/s (highest paced rate delivered in full and on time)", |f| &f.lossless, &|v| format!("{v:.0}"), true);
        row("CPU seconds per 1000 frames at that rate", |f| &f.lossless_cpu, &|v| format!("{v:.4}"), false);
        row("burst: frames/s delivered when 300k (peer 20k) frames are written at once", |f| &f.max_fps, &|v| format!("{v:.0}"), true);
        row("burst: frames lost by the QoS 0 subscriber", |f| &f.max_lost, &|v| format!("{v:.0}"), false);
        row(&format!("CPU seconds per 1000 frames at {CPU_RATE} frames/s"), |f| &f.cpu, &|v| format!("{v:.4}"), false);
        row("latency p50 at 200 frames/s, ms", |f| &f.p50, &|v| format!("{v:.2}"), false);
        row("latency p99 at 200 frames/s, ms", |f| &f.p99, &|v| format!("{v:.2}"), false);
        row("startup until the broker listens, ms", |f| &f.startup, &|v| format!("{v:.1}"), false);
        row("RSS idle with 4 devices, MiB (all processes)", |f| &f.idle_rss, &|v| format!("{v:.1}"), false);
        row("peak RSS after all runs, MiB (all processes)", |f| &f.rss, &|v| format!("{v:.1}"), false);
        row("idle CPU, % of one core", |f| &f.idle, &|v| format!("{v:.2}"), false);
    });
}

//! Uplink benchmark: frames written into a pty reach a subscriber on an upstream mosquitto,
//! through serial2mqtt's on-disk queue, side by side with a Python pyserial + paho-mqtt script
//! publishing upstream at QoS 1 (its backlog lives in RAM). A TCP proxy in front of mosquitto
//! makes the outages.
//!
//! Run: `cargo bench --bench uplink` (needs mosquitto; the peer also python3 with pyserial and
//! paho-mqtt 1.6). BENCH_RUNS (default 3), BENCH_BACKLOG (default 200000), BENCH_PEER=0.

mod common;
#[path = "../tests/common/mosquitto.rs"]
mod mosquitto;
#[path = "../tests/common/proxy.rs"]
mod proxy;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::upstream::*;
use common::*;
use mosquitto::spawn_mosquitto;
use proxy::Proxy;
use tokio::io::AsyncWriteExt;

/// A system under test, restartable on the same state.
trait System {
    fn name(&self) -> &'static str;
    /// Starts the system; every process it runs (CPU, writes and kill -9 apply to all).
    fn start(&mut self, pty: &Path, uplink_port: u16) -> Vec<Child>;
}

struct Ours {
    state: tempfile::TempDir,
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
        let child = Command::new(common::gateway_bin())
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

struct Python;

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
struct MosquittoBridge {
    dir: tempfile::TempDir,
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
                 restart_timeout 1 1\nbridge_attempt_unsubscribe false\n",
                d.display()
            ),
            local,
        );
        let mut procs = Python.start(pty, local);
        procs.push(broker);
        procs
    }
}

async fn write_seq(pty: &mut tokio_serial::SerialStream, seqs: std::ops::Range<u64>, rate: u64) {
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

async fn wait_range(
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

#[derive(Default)]
struct Figures {
    sustained: Vec<f64>,
    p50: Vec<f64>,
    p99: Vec<f64>,
    drain: Vec<f64>,
    bytes_per_msg: Vec<f64>,
    kill_lost: Vec<f64>,
    peak_rss: Vec<f64>,
}

async fn measure(sys: &mut dyn System, rates: &[u64], backlog: u64, runs: usize) -> Figures {
    let mut f = Figures::default();
    for run in 0..runs {
        let broker = Mosquitto::start();
        let proxy = Proxy::start(broker.port).await;
        let got = subscribe(broker.port).await;
        let mut p = pty();
        let mut procs = sys.start(&p.path, proxy.port);
        let written = |procs: &[Child]| procs.iter().map(|c| write_bytes(c.id())).sum::<u64>();
        let base = |phase: u64| phase * 100_000_000;

        // Sustained: the highest paced rate delivered in full and on time.
        let mut sustained = 0.0;
        for (k, &rate) in rates.iter().enumerate() {
            let n = rate * 3;
            let r = base(1) + (k as u64) * 10_000_000;
            let t0 = Instant::now();
            write_seq(&mut p.master, r..r + n, rate).await;
            let (count, last) = wait_range(&got, r..r + n, Duration::from_secs(3)).await;
            let secs = last.map_or(f64::INFINITY, |l| l.duration_since(t0).as_secs_f64());
            let fps = count as f64 / secs;
            if (count as u64) < n || fps < 0.9 * rate as f64 {
                break;
            }
            sustained = fps;
        }
        f.sustained.push(sustained);

        // Latency at 200 frames/s.
        let r = base(2);
        let mut sent = Vec::new();
        let mut tick = tokio::time::interval(Duration::from_millis(5));
        for i in 0..1000 {
            tick.tick().await;
            sent.push(Instant::now());
            p.master
                .write_all(format!("seq={}\n", r + i).as_bytes())
                .await
                .expect("write");
        }
        wait_range(&got, r..r + 1000, Duration::from_secs(3)).await;
        let mut lat: Vec<f64> = {
            let g = got.lock().unwrap();
            g.range(r..r + 1000)
                .map(|(s, t)| t.duration_since(sent[(s - r) as usize]).as_secs_f64() * 1000.0)
                .collect()
        };
        lat.sort_by(f64::total_cmp);
        let pct = |q: f64| {
            lat.get(((lat.len() as f64 - 1.0) * q).round() as usize)
                .copied()
                .unwrap_or(f64::NAN)
        };
        f.p50.push(pct(0.5));
        f.p99.push(pct(0.99));

        // Storage bytes written per message at 1,000 frames/s.
        let w0 = written(&procs);
        let r = base(3);
        write_seq(&mut p.master, r..r + 5000, 1000).await;
        wait_range(&got, r..r + 5000, Duration::from_secs(3)).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        f.bytes_per_msg.push((written(&procs) - w0) as f64 / 5000.0);

        // Drain: a backlog built during an outage, delivered after it.
        proxy.down();
        let r = base(4);
        write_seq(&mut p.master, r..r + backlog, 0).await;
        tokio::time::sleep(Duration::from_secs(2)).await;
        proxy.up().await;
        let t0 = Instant::now();
        let (drained, last) = wait_range(&got, r..r + backlog, Duration::from_secs(10)).await;
        let secs = last.map_or(f64::INFINITY, |l| l.duration_since(t0).as_secs_f64());
        f.drain.push(drained as f64 / secs);
        f.peak_rss
            .push(procs.iter().map(|c| peak_rss_mib(c.id())).sum::<f64>());

        // Kill -9 during an outage, 1 s after the last frame; restart on the same state.
        proxy.down();
        let r = base(5);
        write_seq(&mut p.master, r..r + 1000, 1000).await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        for c in &mut procs {
            let _ = c.kill();
            let _ = c.wait();
        }
        proxy.up().await;
        procs = sys.start(&p.path, proxy.port);
        let (count, _) = wait_range(&got, r..r + 1000, Duration::from_secs(8)).await;
        f.kill_lost.push((1000 - count) as f64);
        for c in &mut procs {
            let _ = c.kill();
            let _ = c.wait();
        }
        eprintln!(
            "{} run {}: sustained {:.0}/s, p50 {:.2} ms, p99 {:.2} ms, {:.1} bytes written/msg, drain {:.0}/s ({drained} of {backlog}), lost on kill -9: {}, peak RSS {:.1} MiB",
            sys.name(), run + 1, sustained, f.p50[run], f.p99[run], f.bytes_per_msg[run], f.drain[run], f.kill_lost[run], f.peak_rss[run]
        );
    }
    f
}

fn peer_available() -> bool {
    std::env::var("BENCH_PEER").as_deref() != Ok("0")
        && Command::new("python3")
            .args(["-c", "import serial, paho.mqtt.client"])
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

fn main() {
    if !benchmarking() {
        return;
    }
    let runs: usize = env_or("BENCH_RUNS", 3);
    let backlog: u64 = env_or("BENCH_BACKLOG", 200_000);
    let rt = runtime();
    rt.block_on(async {
        let mut ours = Ours {
            state: tempfile::tempdir().expect("tempdir"),
        };
        let o = measure(
            &mut ours,
            &[5_000, 10_000, 25_000, 50_000, 60_000, 75_000, 100_000],
            backlog,
            runs,
        )
        .await;
        let peers: Vec<(&str, Figures)> = if peer_available() {
            let direct = measure(
                &mut Python,
                &[500, 1_000, 2_000, 4_000, 8_000],
                backlog / 20,
                runs,
            )
            .await;
            let mut bridge_sys = MosquittoBridge {
                dir: tempfile::tempdir().expect("tempdir"),
            };
            let bridge = measure(
                &mut bridge_sys,
                &[500, 1_000, 2_000, 4_000, 8_000],
                backlog / 20,
                runs,
            )
            .await;
            vec![
                ("pyserial+paho direct", direct),
                ("pyserial+paho → mosquitto bridge", bridge),
            ]
        } else {
            eprintln!("peers not measured: need python3 with pyserial and paho-mqtt 1.6");
            Vec::new()
        };
        println!(
            "\nmedians of {runs} runs; upstream mosquitto behind a TCP proxy; QoS 1 upstream\n"
        );
        let mut header = "| metric | serial2mqtt |".to_owned();
        let mut rule = "|---|---|".to_owned();
        for (name, _) in &peers {
            header += &format!(" {name} | ratio |");
            rule += "---|---|";
        }
        println!("{header}\n{rule}");
        let row = |name: &str, pick: &dyn Fn(&Figures) -> Vec<f64>, higher: bool| {
            let ours = median(pick(&o));
            let mut line = format!("| {name} | {ours:.2} |");
            for (_, f) in &peers {
                let theirs = median(pick(f));
                let ratio = if higher { ours / theirs } else { theirs / ours };
                line += &format!(" {theirs:.2} | {ratio:.1}× |");
            }
            println!("{line}");
        };
        row(
            "sustained frames/s end to end (highest paced rate in full, on time)",
            &|f| f.sustained.clone(),
            true,
        );
        row("latency p50 at 200 frames/s, ms", &|f| f.p50.clone(), false);
        row("latency p99 at 200 frames/s, ms", &|f| f.p99.clone(), false);
        row(
            &format!(
                "drain of a backlog (ours {backlog}, peers {}), messages/s",
                backlog / 20
            ),
            &|f| f.drain.clone(),
            true,
        );
        row(
            "storage bytes written per message at 1,000 frames/s",
            &|f| f.bytes_per_msg.clone(),
            false,
        );
        row(
            "frames lost of 1,000 on kill -9 1 s after the last frame, during an outage",
            &|f| f.kill_lost.clone(),
            false,
        );
        row(
            "peak RSS of all processes of the setup by the end of the drain, MiB",
            &|f| f.peak_rss.clone(),
            false,
        );
    });
}

//! Sharing the bus: a Modbus TCP client reading through the gateway's server while the gateway
//! polls four meters at 9600 baud, on the simulator that keeps the wire's timing
//! (benches/common/meters.rs).
//! - **Efficiency**: the gateway polls every meter every 10 ms (more than the line carries) and
//!   a client reads 10 holding registers of meter 2 in a loop, one request at a time: every
//!   transaction is an 8-byte request and a 25-byte answer, so the line's limit is
//!   `1 / ((8 + 25) x 10 / 9600 s + turnaround)`; the transactions of both, against it, and
//!   how they split.
//! - **Cached reads**: the client reads registers the gateway's last poll covers (`cache:`):
//!   the time from request to answer, p50 and p99, with the gateway polling as usual.
//! - **The gateway's cycle**: every meter polled every 500 ms, without a client and with the
//!   busy client: the interval between two polls of meter 1 (mean, p99, max).
//!
//! Run: `cargo bench --bench share` (BENCH_SECONDS=N per phase, default 10; BENCH_RUNS=N,
//! default 3).

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

mod common;
#[allow(dead_code)]
#[path = "../tests/common/mosquitto.rs"]
mod mosquitto;

use common::meters::{char_time, simulate, Gaps, Seen, REQUEST};
use common::*;

const METERS: u8 = 4;
const BAUD: u32 = 9600;
const POINTS: u16 = 10;
const ANSWER: usize = 5 + 2 * POINTS as usize;

/// The gateway polling the meters every `every` (input registers 0-9), and its server.
fn config(pty: &std::path::Path, every: &str, port: u16, server: u16) -> String {
    let points: Vec<String> = (0..POINTS)
        .map(|i| format!("{{name: r{i}, input: {i}}}"))
        .collect();
    let mut devices = String::new();
    let mut units = String::new();
    for a in 1..=METERS {
        devices.push_str(&format!(
            "  - name: m{a}\n    port: {}\n    baud: {BAUD}\n    modbus: {{unit: {a}, every: {every}, timeout: 100ms, retries: 0, points: [{}]}}\n    rules: [m]\n",
            pty.display(),
            points.join(", ")
        ));
        units.push_str(&format!("    - {{device: m{a}, cache: 10s}}\n"));
    }
    format!(
        "gateway: {{id: bench}}\nbroker: {{listen: \"127.0.0.1:{port}\"}}\ndevices:\n{devices}\
         rules:\n  m:\n    points: true\n    publish: [{{topic: \"bench/{{device}}\", payload: \"{{r0}}\"}}]\n\
         modbus_server:\n  listen: 127.0.0.1:{server}\n  units:\n{units}"
    )
}

/// A Modbus TCP client asking `pdu` of `unit` in a loop, one at a time, until `stop`: the
/// microseconds each answer took.
async fn client(server: u16, unit: u8, pdu: [u8; 5], stop: Arc<AtomicBool>) -> Vec<u64> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", server))
        .await
        .expect("connect to the server");
    let _ = s.set_nodelay(true);
    let mut took = Vec::new();
    let mut tx = 0u16;
    let mut head = [0u8; 7];
    let mut body = vec![0u8; 256];
    while !stop.load(Ordering::Relaxed) {
        tx = tx.wrapping_add(1);
        let mut f = tx.to_be_bytes().to_vec();
        f.extend_from_slice(&[0, 0, 0, 6, unit]);
        f.extend_from_slice(&pdu);
        let t = Instant::now();
        if s.write_all(&f).await.is_err() || s.read_exact(&mut head).await.is_err() {
            break;
        }
        let len = usize::from(u16::from_be_bytes([head[4], head[5]])).saturating_sub(1);
        if s.read_exact(&mut body[..len]).await.is_err() {
            break;
        }
        if body[0] == pdu[0] {
            took.push(t.elapsed().as_micros() as u64);
        }
    }
    took
}

/// The gateway on the simulated bus, and what the meters saw.
struct Bus {
    child: Child,
    answered: Arc<AtomicU64>,
    seen: Seen,
    server: u16,
    _sim: tokio::task::JoinHandle<()>,
    _dir: tempfile::TempDir,
}

fn start(rt: &tokio::runtime::Runtime, every: &str) -> Bus {
    let pty = rt.block_on(async { pty() });
    let (port, server) = (free_port(), free_port());
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("share.yaml");
    std::fs::write(&cfg, config(&pty.path, every, port, server)).expect("config");
    let answered = Arc::new(AtomicU64::new(0));
    let seen = Seen::default();
    let sim = {
        let _in_runtime = rt.enter();
        simulate(pty, answered.clone(), BAUD, Gaps::default(), seen.clone())
    };
    let child = Command::new(gateway_bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("log")).expect("log"))
        .spawn()
        .expect("start serial2mqtt");
    assert!(
        wait_port(server, Duration::from_secs(10)),
        "gateway did not start"
    );
    // Every meter read once (the cache is filled, the schedule settled).
    std::thread::sleep(Duration::from_secs(1));
    Bus {
        child,
        answered,
        seen,
        server,
        _sim: sim,
        _dir: dir,
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs `client` against the bus for `seconds` (none when `busy` is false); returns the
/// answers' times and the requests the meters saw in the window.
fn window(
    rt: &tokio::runtime::Runtime,
    bus: &Bus,
    seconds: u64,
    busy: Option<(u8, [u8; 5])>,
) -> Window {
    let stop = Arc::new(AtomicBool::new(false));
    let handle = busy.map(|(unit, pdu)| rt.spawn(client(bus.server, unit, pdu, stop.clone())));
    std::thread::sleep(Duration::from_millis(200));
    let from = tokio::time::Instant::now();
    let a0 = bus.answered.load(Ordering::Relaxed);
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let a1 = bus.answered.load(Ordering::Relaxed);
    let elapsed = t0.elapsed().as_secs_f64();
    let to = tokio::time::Instant::now();
    stop.store(true, Ordering::Relaxed);
    let took = handle
        .map(|h| rt.block_on(h).unwrap_or_default())
        .unwrap_or_default();
    let seen: Vec<_> = bus
        .seen
        .lock()
        .map(|s| {
            s.iter()
                .filter(|(at, ..)| *at >= from && *at < to)
                .copied()
                .collect()
        })
        .unwrap_or_default();
    Window {
        took,
        seen,
        answered: a1 - a0,
        elapsed,
    }
}

/// What one measured window saw.
struct Window {
    /// Microseconds each of the client's answers took.
    took: Vec<u64>,
    /// The requests on the line: when, unit, function.
    seen: Vec<(tokio::time::Instant, u8, u8)>,
    /// Transactions answered.
    answered: u64,
    /// Seconds measured.
    elapsed: f64,
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() - 1) as f64 * p).round() as usize]
}

fn main() {
    if !benchmarking() {
        return;
    }
    let rt = runtime();
    let seconds = env_or("BENCH_SECONDS", 10u64);
    let runs = env_or("BENCH_RUNS", 3usize);
    let ct = char_time(BAUD).as_secs_f64();
    let limit = 1.0 / ((REQUEST + ANSWER) as f64 * 10.0 / f64::from(BAUD) + 3.5 * ct);
    // A client's read of 10 holding registers of meter 2: the same size as a poll.
    let read = (2u8, [3, 0, 0, 0, POINTS as u8]);

    println!("sharing the bus at {BAUD} baud, {METERS} meters polled every 10 ms (more than the line carries), without and with a client reading 10 registers of meter 2 in a loop (runs alternate):");
    let (mut alone, mut eff) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let bus = start(&rt, "10ms");
        let w = window(&rt, &bus, seconds, None);
        alone.push(w.answered as f64 / w.elapsed);
        drop(bus);
        let bus = start(&rt, "10ms");
        let Window {
            took,
            seen,
            answered: n,
            elapsed,
        } = window(&rt, &bus, seconds, Some(read));
        let client = seen.iter().filter(|(_, _, f)| *f == 3).count() as f64 / elapsed;
        let total = n as f64 / elapsed;
        let ms: Vec<f64> = took.iter().map(|&us| us as f64 / 1000.0).collect();
        eff.push((
            total,
            client,
            percentile(ms.clone(), 0.5),
            percentile(ms, 0.99),
        ));
    }
    let pct = |v: &[f64]| {
        v.iter()
            .map(|r| format!("{:.1} %", 100.0 * r / limit))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let polls_only = median(alone.clone());
    println!(
        "  polls only: {polls_only:.2} transactions/s of a limit of {limit:.2}: {:.1} % (runs: {})",
        100.0 * polls_only / limit,
        pct(&alone)
    );
    let total = median(eff.iter().map(|e| e.0).collect());
    let client = median(eff.iter().map(|e| e.1).collect());
    println!(
        "  with the client: {total:.2} transactions/s: {:.1} % (runs: {}), x{:.2} of polls only; the client's {client:.2}/s = {:.0} % of them, the gateway's {:.2}/s; the client's answer p50 {:.1} ms, p99 {:.1} ms",
        100.0 * total / limit,
        pct(&eff.iter().map(|e| e.0).collect::<Vec<_>>()),
        total / polls_only,
        100.0 * client / total,
        total - client,
        median(eff.iter().map(|e| e.2).collect()),
        median(eff.iter().map(|e| e.3).collect()),
    );

    println!(
        "cached reads (registers the last poll covers, cache: 10s), meters polled every 500 ms:"
    );
    let mut cached = Vec::new();
    for _ in 0..runs {
        let bus = start(&rt, "500ms");
        let Window { took, seen, .. } =
            window(&rt, &bus, seconds, Some((1, [4, 0, 0, 0, POINTS as u8])));
        let on_line = seen.iter().filter(|(_, u, f)| *u == 1 && *f == 4).count();
        let ms: Vec<f64> = took.iter().map(|&us| us as f64 / 1000.0).collect();
        cached.push((
            ms.len(),
            percentile(ms.clone(), 0.5),
            percentile(ms.clone(), 0.99),
            percentile(ms, 1.0),
            on_line,
        ));
    }
    for (n, p50, p99, max, on_line) in &cached {
        println!("  {n} reads: p50 {:.3} ms, p99 {:.3} ms, max {:.2} ms; meter 1's reads on the line meanwhile: {on_line} (its polls only)", p50, p99, max);
    }

    println!("the gateway's cycle: meters polled every 500 ms, the interval between two polls of meter 1:");
    for (label, busy) in [("no client", None), ("a busy client", Some(read))] {
        let mut rows = Vec::new();
        for _ in 0..runs {
            let bus = start(&rt, "500ms");
            let seen = window(&rt, &bus, seconds, busy).seen;
            let polls: Vec<tokio::time::Instant> = seen
                .iter()
                .filter(|(_, u, f)| *u == 1 && *f == 4)
                .map(|(at, ..)| *at)
                .collect();
            let gaps: Vec<f64> = polls
                .windows(2)
                .map(|w| (w[1] - w[0]).as_secs_f64() * 1000.0)
                .collect();
            let mean = gaps.iter().sum::<f64>() / gaps.len().max(1) as f64;
            rows.push((mean, percentile(gaps.clone(), 0.99), percentile(gaps, 1.0)));
        }
        println!(
            "  {label}: mean {:.1} ms, p99 {:.1} ms, max {:.1} ms (medians of {runs} runs)",
            median(rows.iter().map(|r| r.0).collect()),
            median(rows.iter().map(|r| r.1).collect()),
            median(rows.iter().map(|r| r.2).collect()),
        );
    }
}

//! A shared RS-485 bus at 9600 baud: how close the port's scheduler comes to the line's
//! physical limit, and what polled devices cost when little happens.
//!
//! The simulator enforces the wire's timing: a request occupies the line for its bytes' time
//! (10 bits a character at 9600 baud: 1.04 ms) before the addressed meter starts answering, and
//! the 25-byte answer is written at one character per 1.04 ms. Four meters (Modbus-style frames:
//! an 8-byte request, a 25-byte answer with its CRC) share the line.
//! - **Efficiency**: every meter polled every 10 ms (far more than the line carries), so the
//!   bus is always busy; transactions per second against the limit
//!   `1 / ((8 + 25) x 10 / 9600 s + turnaround)`, turnaround being the default 3.5 characters.
//! - **Idle**: every meter polled once a second; the gateway's CPU time and context switches
//!   per transaction.
//!
//! Run: `cargo bench --bench bus` (BENCH_SECONDS=N per phase, default 10).

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

mod common;
#[allow(dead_code)]
#[path = "../tests/common/mosquitto.rs"]
mod mosquitto;

use common::meters::{char_time, modbus_crc, simulate, Gaps, REQUEST};
use common::*;

const ANSWER: usize = 25;
const METERS: u8 = 4;
/// Registers each answer carries (points of a Modbus map).
const POINTS: usize = 10;

/// How the gateway asks the meters.
#[derive(Clone, Copy, PartialEq)]
enum Setup {
    /// `poll:` with the request written by hand, `length` framing, `checksum: modbus`.
    Polls,
    /// `modbus:` with a 10-point register map (input registers 0-9).
    Modbus,
}

fn config(pty: &std::path::Path, every: &str, port: u16, setup: Setup, baud: u32) -> String {
    if setup == Setup::Modbus {
        let points: Vec<String> = (0..POINTS)
            .map(|i| format!("{{name: r{i}, input: {i}}}"))
            .collect();
        let mut devices = String::new();
        for a in 1..=METERS {
            devices.push_str(&format!(
                "  - name: m{a}\n    port: {}\n    baud: {baud}\n    modbus: {{unit: {a}, every: {every}, timeout: 100ms, retries: 0, points: [{}]}}\n    rules: [m]\n",
                pty.display(),
                points.join(", ")
            ));
        }
        let json: Vec<String> = (0..POINTS).map(|i| format!("r{i}: \"{{r{i}}}\"")).collect();
        return format!(
            "gateway: {{id: bench}}\nbroker: {{listen: \"127.0.0.1:{port}\"}}\ndevices:\n{devices}\
             rules:\n  m:\n    points: true\n    publish: [{{topic: \"bench/{{device}}\", payload: {{{}}}}}]\n",
            json.join(", ")
        );
    }
    let mut devices = String::new();
    for a in 1..=METERS {
        let mut req = vec![a, 0x04, 0, 0, 0, 10];
        req.extend_from_slice(&modbus_crc(&req));
        devices.push_str(&format!(
            r#"  - name: m{a}
    port: {}
    baud: {baud}
    framing: {{length: {{start_hex: "{a:02X} 04", at: 2, width: 1, trailer: 2}}}}
    checksum: modbus
    poll: [{{name: read, write_hex: "{}", every: {every}, timeout: 100ms}}]
    rules: [m]
"#,
            pty.display(),
            hex::encode(&req)
        ));
    }
    format!(
        "gateway: {{id: bench}}\nbroker: {{listen: \"127.0.0.1:{port}\"}}\ndevices:\n{devices}\
         rules:\n  m:\n    fields: [{{name: v, offset: 3, type: u16be}}]\n    publish: [{{topic: \"bench/{{device}}\", payload: \"{{v}}\"}}]\n"
    )
}

/// Context switches (voluntary + involuntary) of every thread of `pid`.
fn switches(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(|t| t.ok())
        .map(|t| {
            std::fs::read_to_string(t.path().join("status"))
                .unwrap_or_default()
                .lines()
                .filter(|l| l.contains("ctxt_switches"))
                .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
                .sum::<u64>()
        })
        .sum()
}

/// Runs the gateway on the bus for `seconds` after a second of warm-up: (transactions/s,
/// CPU seconds, context switches) over the measured window.
fn phase(
    rt: &tokio::runtime::Runtime,
    every: &str,
    seconds: u64,
    setup: Setup,
    baud: u32,
) -> (f64, f64, u64, f64) {
    let pty = rt.block_on(async { pty() });
    let port = free_port();
    let dir = tempfile::tempdir().expect("tempdir");
    let cfg = dir.path().join("bus.yaml");
    std::fs::write(&cfg, config(&pty.path, every, port, setup, baud)).expect("config");
    let answered = Arc::new(AtomicU64::new(0));
    let gaps = Gaps::default();
    let _sim = {
        let _in_runtime = rt.enter();
        simulate(
            pty,
            answered.clone(),
            baud,
            gaps.clone(),
            Default::default(),
        )
    };
    let mut child = Command::new(gateway_bin())
        .args(["run", "--config"])
        .arg(&cfg)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("log")).expect("log"))
        .spawn()
        .expect("start serial2mqtt");
    assert!(
        wait_port(port, Duration::from_secs(10)),
        "gateway did not start"
    );
    std::thread::sleep(Duration::from_secs(1));
    if let Ok(mut g) = gaps.lock() {
        g.clear();
    }
    let (a0, c0, s0) = (
        answered.load(Ordering::Relaxed),
        cpu_seconds(child.id()),
        switches(child.id()),
    );
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(seconds));
    let (a1, c1, s1) = (
        answered.load(Ordering::Relaxed),
        cpu_seconds(child.id()),
        switches(child.id()),
    );
    let elapsed = t0.elapsed().as_secs_f64();
    let _ = child.kill();
    let _ = child.wait();
    if a1 == a0 && every != "1h" {
        let log = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
        eprintln!("no transactions; the gateway said:\n{log}");
    }
    let gap_ms = gaps
        .lock()
        .map(|g| median(g.iter().map(|&us| us as f64 / 1000.0).collect()))
        .unwrap_or(0.0);
    ((a1 - a0) as f64 / elapsed, c1 - c0, s1 - s0, gap_ms)
}

/// The peer, written the obvious way: a pymodbus client polling the four meters in turn as
/// fast as they answer, on the same simulator. Transactions/s, or None without pymodbus.
fn peer(rt: &tokio::runtime::Runtime, seconds: u64, baud: u32) -> Option<f64> {
    let script =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/peer/pymodbus_poll.py");
    let ok = Command::new("python3")
        .args(["-c", "import pymodbus, serial"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        return None;
    }
    let pty = rt.block_on(async { pty() });
    let answered = Arc::new(AtomicU64::new(0));
    let path = pty.path.clone();
    let _sim = {
        let _in_runtime = rt.enter();
        simulate(
            pty,
            answered.clone(),
            baud,
            Gaps::default(),
            Default::default(),
        )
    };
    let out = Command::new("python3")
        .arg(script)
        .arg(&path)
        .args([baud.to_string(), METERS.to_string(), seconds.to_string()])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout).trim().parse().ok()
}

fn main() {
    if !benchmarking() {
        return;
    }
    let rt = runtime();
    let seconds = env_or("BENCH_SECONDS", 10u64);
    let runs = env_or("BENCH_RUNS", 3usize);
    let limit = |baud: u32| {
        let b = f64::from(baud);
        1.0 / ((REQUEST + ANSWER) as f64 * 10.0 / b + 3.5 * 10.0 / b)
    };
    println!(
        "bus efficiency, {METERS} meters ({REQUEST}-byte request, {ANSWER}-byte answer = {POINTS} registers, turnaround 3.5 chars):"
    );
    for (setup, label) in [
        (Setup::Polls, "polls written by hand"),
        (Setup::Modbus, "modbus: register map"),
    ] {
        for baud in [9600u32, 19200] {
            if setup == Setup::Polls && baud != 9600 {
                continue;
            }
            let measured: Vec<(f64, f64, u64, f64)> = (0..runs)
                .map(|_| phase(&rt, "10ms", seconds, setup, baud))
                .collect();
            let rates: Vec<f64> = measured.iter().map(|m| m.0).collect();
            let gap = median(measured.iter().map(|m| m.3).collect());
            let rate = median(rates.clone());
            let peer_rate = if setup == Setup::Modbus {
                let p: Vec<f64> = (0..runs).filter_map(|_| peer(&rt, seconds, baud)).collect();
                (!p.is_empty()).then(|| median(p))
            } else {
                None
            };
            let peer_text = match peer_rate {
                Some(p) => format!(
                    "; pymodbus client {p:.2} tx/s ({:.1} %): serial2mqtt x{:.2}",
                    100.0 * p / limit(baud),
                    rate / p
                ),
                None => String::new(),
            };
            println!(
                "  {label} at {baud}: {rate:.2} transactions/s ({:.0} points/s) of a limit of {:.2}: {:.1} % (runs: {}); answer end to next request {gap:.2} ms (turnaround {:.2} ms){peer_text}",
                rate * POINTS as f64,
                limit(baud),
                100.0 * rate / limit(baud),
                rates.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(", "),
                3.5 * char_time(baud).as_secs_f64() * 1000.0
            );
        }
    }
    let mut idle = Vec::new();
    for _ in 0..runs {
        idle.push(phase(&rt, "1s", seconds, Setup::Modbus, 9600));
    }
    idle.sort_by(|a, b| a.1.total_cmp(&b.1));
    let (tx, cpu, sw, _) = idle[runs / 2];
    // The same gateway asking nothing (one poll an hour): what the process costs by itself.
    let mut quiet = Vec::new();
    for _ in 0..runs {
        quiet.push(phase(&rt, "1h", seconds, Setup::Modbus, 9600));
    }
    quiet.sort_by(|a, b| a.1.total_cmp(&b.1));
    let (_, cpu0, sw0, _) = quiet[runs / 2];
    let s = seconds as f64;
    let n = tx * s;
    println!("idle, {METERS} Modbus units read once a second ({POINTS} points each), against the same gateway reading nothing:");
    println!(
        "  {tx:.2} transactions/s; CPU {:.2} ms/s (nothing read: {:.2} ms/s), {:.2} ms per 1000 points; context switches {:.1}/s (nothing read: {:.1}/s): {:.1} per transaction",
        1000.0 * cpu / s,
        1000.0 * cpu0 / s,
        1000.0 * cpu / (n * POINTS as f64).max(1.0) * 1000.0,
        sw as f64 / s,
        sw0 as f64 / s,
        (sw as f64 - sw0 as f64) / n.max(1.0)
    );
}

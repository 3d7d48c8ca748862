//! Helpers shared by the benchmarks: pseudo-terminals, ports, /proc figures.
#![allow(dead_code)]

pub mod meters;
pub mod systems;
pub mod upstream;

use std::path::PathBuf;
use std::time::{Duration, Instant};

/// A pty pair: the bench writes to `master`, the system under test opens `path`.
pub struct Pty {
    pub master: tokio_serial::SerialStream,
    pub path: PathBuf,
}

pub fn pty() -> Pty {
    use std::os::fd::AsRawFd as _;
    use tokio_serial::SerialPort as _;
    let (master, slave) = tokio_serial::SerialStream::pair().expect("pty pair");
    let path = PathBuf::from(slave.name().expect("pty name"));
    drop(slave);
    // SAFETY: fcntl on a descriptor we own; keeps the master out of spawned processes.
    unsafe { libc::fcntl(master.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
    Pty { master, path }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub fn wait_port(port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    false
}

/// utime + stime of a process, in seconds.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields after ")": state is index 0, utime is 11, stime 12.
    (ticks(11) + ticks(12)) / 100.0
}

/// Peak resident set (VmHWM) in MiB.
pub fn peak_rss_mib(pid: u32) -> f64 {
    status_mib(pid, "VmHWM:")
}

/// A memory figure of /proc/PID/status in MiB.
pub fn status_mib(pid: u32, key: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(key))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

/// The median (upper middle) of a list.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Bytes the process wrote to storage (`write_bytes` of /proc/PID/io).
pub fn write_bytes(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("write_bytes: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A number from the environment (`BENCH_RUNS=5`), or `default` when unset or not a number.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Whether this is a benchmark run: `cargo bench` passes --bench; `cargo test --benches` does
/// not, and must not start minutes of measuring.
pub fn benchmarking() -> bool {
    std::env::args().any(|a| a == "--bench")
}

/// The runtime the benches drive clients and ptys from.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime")
}

/// The gateway binary to measure: this build's, or `SERIAL2MQTT_BENCH_BIN` (another build, for
/// side-by-side figures of two versions with the same harness).
pub fn gateway_bin() -> std::path::PathBuf {
    std::env::var_os("SERIAL2MQTT_BENCH_BIN")
        .map(Into::into)
        .unwrap_or_else(|| env!("CARGO_BIN_EXE_serial2mqtt").into())
}

//! Wear benchmark: what the on-disk queue costs an SD card, measured black-box as bytes written
//! to a real block device per reading, uplink up and down, because wear is what kills a Pi's card.
//!
//! Per measurement: a fresh ext4 (mkfs.ext4 defaults, mounted `-o data=ordered` as Pi OS does) on
//! a file-backed loop device holds the gateway's `state_dir`; the release gateway reads one pty
//! device sending `T=21.5` (the frame is the payload, 6 bytes) at a fixed rate and forwards it at
//! QoS 1 to a local mosquitto behind a TCP proxy (cut for the "down" rows). After a warm-up,
//! `sync`, then sectors written (field 7 of /sys/block/loopN/stat) over a steady window, then
//! `sync` again. Also read in the same window, to tell where the bytes go: ext4 journal commits
//! (/proc/fs/jbd2), the data pages the gateway dirtied (`write_bytes` of /proc/PID/io), and the
//! bytes the queue appended to its segment files.
//!
//! Run as root (losetup, mkfs.ext4, mount) with mosquitto installed: `cargo bench --bench wear`.
//! BENCH_SECONDS (window, default 60), BENCH_WARMUP (seconds, default 10), BENCH_RUNS (default
//! 3, medians), BENCH_FLUSH (the queue's flush_interval, default 100ms), BENCH_RATES (readings/s,
//! default "10,200").

mod common;
#[path = "../tests/common/mosquitto.rs"]
mod mosquitto;
#[path = "../tests/common/proxy.rs"]
mod proxy;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::upstream::Mosquitto;
use common::*;
use proxy::Proxy;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::io::AsyncWriteExt;

/// Size of the (sparse) image: large enough for mkfs.ext4's default type (4 KiB blocks, a
/// 64 MiB journal), as on a card, not the "small" type's 1 KiB blocks.
const IMAGE_BYTES: u64 = 2 << 30;
/// The frame every reading sends.
const FRAME: &[u8] = b"T=21.5\n";

/// Runs a command; panics with its name and output when it fails.
fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd).args(args).output().unwrap_or_else(|e| {
        panic!("cannot run {cmd}: {e} (the wear bench needs root, util-linux and e2fsprogs)")
    });
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// A fresh ext4 on a loop device, mounted; unmounted and detached on drop (panics included).
struct LoopFs {
    dir: tempfile::TempDir,
    /// `/dev/loopN`, once attached.
    dev: Option<String>,
    mounted: bool,
}

impl LoopFs {
    fn create() -> Self {
        let dir = tempfile::tempdir().expect("tempdir for the loop image");
        let mut fs = Self {
            dir,
            dev: None,
            mounted: false,
        };
        let img = fs.dir.path().join("card.img");
        std::fs::File::create(&img)
            .and_then(|f| f.set_len(IMAGE_BYTES))
            .expect("create the loop image");
        let img = img.to_str().expect("utf-8 temp path");
        fs.dev = Some(run("losetup", &["--find", "--show", img]));
        let dev = fs.dev.clone().unwrap_or_default();
        run("mkfs.ext4", &["-q", &dev]);
        let mnt = fs.mnt();
        std::fs::create_dir(&mnt).expect("create the mount point");
        run(
            "mount",
            &["-o", "data=ordered", &dev, mnt.to_str().unwrap_or_default()],
        );
        fs.mounted = true;
        fs
    }

    fn mnt(&self) -> PathBuf {
        self.dir.path().join("mnt")
    }

    /// `loopN`.
    fn name(&self) -> String {
        self.dev
            .as_deref()
            .and_then(|d| d.rsplit('/').next())
            .unwrap_or_default()
            .to_owned()
    }

    /// Sectors (512 bytes) written and write requests completed, from the device's stat.
    fn written(&self) -> (u64, u64) {
        let stat = std::fs::read_to_string(format!("/sys/block/{}/stat", self.name()))
            .expect("read /sys/block/loopN/stat");
        let f: Vec<u64> = stat
            .split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect();
        (f[6], f[4])
    }

    /// Journal commits so far and the average blocks logged per commit (/proc/fs/jbd2).
    fn journal(&self) -> (u64, u64) {
        let info = std::fs::read_to_string(format!("/proc/fs/jbd2/{}-8/info", self.name()))
            .unwrap_or_default();
        let commits = info
            .split_whitespace()
            .next()
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        let logged = info
            .lines()
            .find(|l| l.contains("logged blocks per transaction"))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|n| n.parse().ok())
            .unwrap_or(0);
        (commits, logged)
    }

    /// Waits until the device has written nothing for 8 s (mkfs leaves ext4's lazy inode-table
    /// initialisation to the kernel after mounting, tens of MB; jbd2 commits every 5 s).
    fn settle(&self) {
        let deadline = Instant::now() + Duration::from_secs(90);
        let mut last = self.written().0;
        let mut still = Instant::now();
        while still.elapsed() < Duration::from_secs(8) {
            assert!(
                Instant::now() < deadline,
                "{} kept writing for 90 s after mkfs",
                self.name()
            );
            std::thread::sleep(Duration::from_millis(500));
            let now = self.written().0;
            if now != last {
                last = now;
                still = Instant::now();
            }
        }
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        if self.mounted {
            let mnt = self.mnt();
            let mut done = false;
            for _ in 0..20 {
                if Command::new("umount")
                    .arg(&mnt)
                    .status()
                    .is_ok_and(|s| s.success())
                {
                    done = true;
                    break;
                }
                std::thread::sleep(Duration::from_millis(250));
            }
            if !done {
                eprintln!("{}: busy, unmounting lazily", mnt.display());
                let _ = Command::new("umount").arg("-l").arg(&mnt).status();
            }
        }
        if let Some(dev) = &self.dev {
            let _ = Command::new("losetup").args(["-d", dev]).status();
        }
    }
}

/// The gateway process, killed on drop (before the filesystem it writes to is unmounted).
struct Gateway(Child);

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_gateway(
    state: &Path,
    config_dir: &Path,
    pty: &Path,
    uplink_port: u16,
    flush: &str,
) -> Gateway {
    let local = free_port();
    let yaml = format!(
        "gateway: {{id: wear, state_dir: {state}, stats_interval: 0s}}\nbroker: {{listen: \"127.0.0.1:{local}\"}}\nlog: {{level: error}}\n\
         uplink: {{url: \"mqtt://127.0.0.1:{uplink_port}\", forward: [\"bench/#\"], keep_alive: 5s, status_topic: status/wear}}\n\
         queue: {{flush_interval: {flush}}}\n\
         devices:\n  - {{name: d0, port: {pty}, baud: 115200, rules: [t]}}\n\
         rules:\n  t:\n    match: '^T='\n    publish: [{{topic: 'bench/{{device}}', payload: '{{frame}}', qos: 1}}]\n",
        state = state.display(),
        pty = pty.display()
    );
    // The config lives off the measured device.
    let config = config_dir.join("wear.yaml");
    std::fs::write(&config, yaml).expect("write the gateway config");
    let child = Command::new(gateway_bin())
        .args(["run", "--config"])
        .arg(&config)
        .stderr(Stdio::null())
        .spawn()
        .expect("start the gateway binary (cargo build --release, or SERIAL2MQTT_BENCH_BIN)");
    let gw = Gateway(child);
    assert!(
        wait_port(local, Duration::from_secs(10)),
        "the gateway did not listen"
    );
    gw
}

/// Counts publishes arriving on `bench/#` upstream.
async fn count_upstream(port: u16) -> Arc<AtomicU64> {
    let mut opts = MqttOptions::new(
        format!("wear-sub-{}", std::process::id()),
        "127.0.0.1",
        port,
    );
    opts.set_keep_alive(Duration::from_secs(30));
    let (client, mut events) = AsyncClient::new(opts, 1000);
    client
        .subscribe("bench/#", QoS::AtMostOnce)
        .await
        .expect("subscribe upstream");
    let n = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&n);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut tx = Some(tx);
    tokio::spawn(async move {
        let _client = client;
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(_))) => {
                    count.fetch_add(1, Ordering::Relaxed);
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
    rx.await.expect("suback from the upstream mosquitto");
    n
}

/// Bytes of the queue's segment files.
fn segment_bytes(queue: &Path) -> u64 {
    std::fs::read_dir(queue)
        .map(|d| {
            d.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with(".seg"))
                .filter_map(|e| e.metadata().ok())
                .map(|m| m.len())
                .sum()
        })
        .unwrap_or(0)
}

/// Everything read at one instant.
#[derive(Clone, Copy)]
struct Snapshot {
    at: Instant,
    sectors: u64,
    ios: u64,
    commits: u64,
    /// Blocks logged per journal commit, jbd2's average since mount.
    logged: u64,
    readings: u64,
    delivered: u64,
    data: u64,
    segments: u64,
}

/// One measurement's figures, per reading unless said otherwise.
#[derive(Default, Clone)]
struct Figures {
    bytes: f64,
    bytes_per_sec: f64,
    ios: f64,
    commits: f64,
    logged_blocks: f64,
    data: f64,
    appended: f64,
    delivered: f64,
}

async fn measure(rate: u64, up: bool, window: Duration, warmup: Duration, flush: &str) -> Figures {
    let fs = LoopFs::create();
    let state = fs.mnt().join("state");
    std::fs::create_dir(&state).expect("create state_dir on the loop device");
    fs.settle();

    let broker = Mosquitto::start();
    let proxy = Proxy::start(broker.port).await;
    let delivered = count_upstream(broker.port).await;
    let mut p = pty();
    let gw = start_gateway(&state, fs.dir.path(), &p.path, proxy.port, flush);
    let pid = gw.0.id();

    let readings = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (readings, stop) = (Arc::clone(&readings), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / rate));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                p.master
                    .write_all(FRAME)
                    .await
                    .expect("write a frame to the pty");
                readings.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    if !up {
        proxy.down();
    }
    tokio::time::sleep(warmup).await;

    let snap = || {
        run("sync", &[]);
        let (sectors, ios) = fs.written();
        let (commits, logged) = fs.journal();
        Snapshot {
            at: Instant::now(),
            sectors,
            ios,
            commits,
            logged,
            readings: readings.load(Ordering::Relaxed),
            delivered: delivered.load(Ordering::Relaxed),
            data: write_bytes(pid),
            segments: segment_bytes(&state.join("queue")),
        }
    };
    let a = snap();
    tokio::time::sleep(window).await;
    let b = snap();
    stop.store(true, Ordering::Relaxed);
    let _ = writer.await;
    drop(gw);
    drop(proxy);
    drop(broker);

    let n = (b.readings - a.readings).max(1) as f64;
    let commits = b.commits - a.commits;
    let bytes = (b.sectors - a.sectors) as f64 * 512.0;
    // jbd2 gives only an average since mount, in whole blocks (truncated): a difference of two
    // would be off by up to a block, so the one at the end of the window (most of the commits
    // since mount are in it) is the figure.
    let logged_blocks = b.logged as f64;
    Figures {
        bytes: bytes / n,
        bytes_per_sec: bytes / b.at.duration_since(a.at).as_secs_f64(),
        ios: (b.ios - a.ios) as f64 / n,
        commits: commits as f64 / n,
        logged_blocks,
        data: b.data.saturating_sub(a.data) as f64 / n,
        appended: b.segments.saturating_sub(a.segments) as f64 / n,
        delivered: (b.delivered - a.delivered) as f64 / n,
    }
}

/// 1234567 → "1,234,567".
fn thousands(v: f64) -> String {
    let s = format!("{:.0}", v);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

fn main() {
    if !benchmarking() {
        return;
    }
    let runs: usize = env_or("BENCH_RUNS", 3);
    let window = Duration::from_secs(env_or("BENCH_SECONDS", 60));
    let warmup = Duration::from_secs(env_or("BENCH_WARMUP", 10));
    let flush = std::env::var("BENCH_FLUSH").unwrap_or_else(|_| "100ms".to_owned());
    let flush_secs = humantime::parse_duration(&flush)
        .expect("BENCH_FLUSH: a duration such as 100ms, 1s or 0s")
        .as_secs_f64();
    let rates: Vec<u64> = std::env::var("BENCH_RATES")
        .unwrap_or_else(|_| "10,200".to_owned())
        .split(',')
        .map(|r| {
            r.trim()
                .parse()
                .expect("BENCH_RATES: readings/s, comma-separated")
        })
        .collect();
    let rows: Vec<(u64, bool)> = rates
        .iter()
        .flat_map(|&r| [(r, true), (r, false)])
        .collect();

    let rt = runtime();
    let mut all: Vec<Vec<Figures>> = vec![Vec::new(); rows.len()];
    for run in 1..=runs {
        for (i, &(rate, up)) in rows.iter().enumerate() {
            let f = rt.block_on(measure(rate, up, window, warmup, &flush));
            eprintln!(
                "run {run}, {rate}/s, uplink {}: {:.0} bytes/reading ({:.2} writes, {:.2} journal commits of {:.1} logged blocks, {:.0} data bytes dirtied, {:.1} bytes appended to segments; {:.2} delivered upstream per reading)",
                if up { "up" } else { "down" },
                f.bytes, f.ios, f.commits, f.logged_blocks, f.data, f.appended, f.delivered
            );
            all[i].push(f);
        }
    }
    // Every reading is the same record, so a measurement that appended less per reading than
    // the others did not keep up: its window is no steady state, and it is said so.
    let record = all.iter().flatten().map(|f| f.appended).fold(0.0, f64::max);
    let mut behind = Vec::new();
    for (i, &(rate, up)) in rows.iter().enumerate() {
        for (run, f) in all[i].iter().enumerate() {
            if f.appended < 0.95 * record {
                behind.push(format!(
                    "run {}, {rate}/s, uplink {}: only {:.0} % of the readings written were stored in the window (the gateway fell behind or stalled); its figures are low",
                    run + 1,
                    if up { "up" } else { "down" },
                    100.0 * f.appended / record
                ));
            }
        }
    }

    println!(
        "\nmedians of {runs} runs; {}s window after {}s warm-up; ext4 (mkfs defaults, data=ordered) on a loop device; flush_interval {flush}; frames `T=21.5` (6-byte payload), QoS 1 upstream\n",
        window.as_secs(),
        warmup.as_secs()
    );
    println!("| readings/s | uplink | bytes written to the device per reading | per group commit (readings/s × flush_interval) | per day | device writes per reading | journal commits per reading | blocks logged per journal commit (jbd2's average since mount) | data bytes dirtied per reading | bytes appended to the queue per reading | delivered upstream per reading |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    for (i, &(rate, up)) in rows.iter().enumerate() {
        let m = |pick: &dyn Fn(&Figures) -> f64| median(all[i].iter().map(pick).collect());
        let per_commit = if flush_secs > 0.0 {
            thousands(m(&|f| f.bytes_per_sec) * flush_secs)
        } else {
            "-".to_owned()
        };
        println!(
            "| {rate} | {} | {} | {per_commit} | {:.1} GB | {:.2} | {:.2} | {:.1} | {} | {:.1} | {:.2} |",
            if up { "up" } else { "down" },
            thousands(m(&|f| f.bytes)),
            m(&|f| f.bytes_per_sec) * 86_400.0 / 1e9,
            m(&|f| f.ios),
            m(&|f| f.commits),
            m(&|f| f.logged_blocks),
            thousands(m(&|f| f.data)),
            m(&|f| f.appended),
            m(&|f| f.delivered),
        );
    }
    for b in &behind {
        println!("\nnot steady: {b}");
    }
}

//! Reconnect benchmark: how long after the network comes back the backlog of an outage is
//! delivered upstream, and what a fleet of gateways does to a broker that comes back.
//!
//! Outages: frames at 200/s into a pty, the upstream mosquitto behind a TCP proxy that goes
//! down (connections reset, connects refused) for 5 s and 60 s (BENCH_LONG=1 adds 10 min, for
//! serial2mqtt only), repeated; for each, the time from the proxy listening again to the first
//! and to the last delivery of the frames written during the outage. Side by side: a Python
//! pyserial + paho-mqtt script publishing upstream (paho's reconnect: 1 s doubling to 120 s)
//! and that script behind a local mosquitto bridge (mosquitto's default restart_timeout).
//!
//! Fleet (BENCH_FLEET=N, default 100): N gateways with an uplink through one proxy, which goes
//! down for 20 s and comes back; the MQTT CONNECTs per second that reach it afterwards (and
//! the time until all N are back).
//!
//! Run: `cargo bench --bench reconnect` (needs mosquitto; the peers python3, pyserial and
//! paho-mqtt 1.6). BENCH_RUNS scales the repetitions (default 5 for 5 s, 3 for 60 s);
//! BENCH_OUTAGES=0 measures the fleet only, BENCH_FLEET=0 the outages only.

mod common;
#[path = "../tests/common/mosquitto.rs"]
mod mosquitto;
#[path = "../tests/common/proxy.rs"]
mod proxy;

use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::systems::*;
use common::upstream::*;
use common::*;
use proxy::Proxy;
use tokio::io::AsyncWriteExt;

/// Frames per second written during the outages.
const RATE: u64 = 200;

/// Writes `seq=N` at [`RATE`] until the process ends; `next` is the next sequence number.
fn writer(mut master: tokio_serial::SerialStream, next: Arc<AtomicU64>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / RATE));
        loop {
            tick.tick().await;
            let n = next.fetch_add(1, Ordering::Relaxed);
            if master
                .write_all(format!("seq={n}\n").as_bytes())
                .await
                .is_err()
            {
                return;
            }
        }
    });
}

/// Per outage length: seconds from "reachable again" to the first and to the last delivery
/// of the outage's frames.
#[derive(Default, Clone)]
struct Back {
    first: Vec<f64>,
    last: Vec<f64>,
}

fn percentile(mut v: Vec<f64>, p: f64) -> f64 {
    if v.is_empty() {
        return f64::NAN;
    }
    v.sort_by(|a, b| a.total_cmp(b));
    let i = ((v.len() - 1) as f64 * p).round() as usize;
    v[i]
}

async fn outages(sys: &mut dyn System, plan: &[(u64, usize)]) -> Vec<Back> {
    let broker = Mosquitto::start();
    let proxy = Proxy::start(broker.port).await;
    let got = subscribe(broker.port).await;
    let p = pty();
    let procs: Vec<Child> = sys.start(&p.path, proxy.port);
    let next = Arc::new(AtomicU64::new(0));
    writer(p.master, Arc::clone(&next));
    let mut out = vec![Back::default(); plan.len()];
    for (i, &(secs, reps)) in plan.iter().enumerate() {
        for rep in 0..reps {
            // Connected and delivering before each outage.
            let settle = next.load(Ordering::Relaxed);
            let (n, _) = wait_range(&got, settle..settle + 1, Duration::from_secs(60)).await;
            assert_eq!(n, 1, "{} never delivered seq {settle}", sys.name());
            tokio::time::sleep(Duration::from_secs(2)).await;
            proxy.down();
            let from = next.load(Ordering::Relaxed) + 1;
            tokio::time::sleep(Duration::from_secs(secs)).await;
            let to = next.load(Ordering::Relaxed);
            proxy.up().await;
            let back = Instant::now();
            let (count, last) = wait_range(&got, from..to, Duration::from_secs(200)).await;
            let first = got.lock().unwrap().range(from..to).map(|(_, t)| *t).min();
            let since = |t: Option<Instant>| {
                t.map(|t| t.saturating_duration_since(back).as_secs_f64())
                    .unwrap_or(f64::NAN)
            };
            let (f, l) = (since(first), since(last));
            println!(
                "{} outage {secs}s #{}: first {f:.2}s, last {l:.2}s after the network returned ({count} of {} delivered)",
                sys.name(),
                rep + 1,
                to - from
            );
            out[i].first.push(f);
            out[i].last.push(l);
        }
    }
    for mut c in procs {
        let _ = c.kill();
        let _ = c.wait();
    }
    out
}

/// N gateways uplinking through one proxy, which goes down for `down` and comes back: the
/// MQTT CONNECTs that reach it afterwards, as offsets from its return.
async fn fleet(n: usize, down: Duration) -> Vec<f64> {
    let broker = Mosquitto::start();
    let proxy = Proxy::start(broker.port).await;
    let dirs: Vec<tempfile::TempDir> = (0..n)
        .map(|_| tempfile::tempdir().expect("tempdir"))
        .collect();
    let mut procs = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        let local = free_port();
        let yaml = format!(
            "gateway: {{id: gw{i}, state_dir: {dir}, stats_interval: 0s}}\nbroker: {{listen: \"127.0.0.1:{local}\"}}\nlog: {{level: warn}}\n\
             uplink: {{url: \"mqtt://127.0.0.1:{port}\", keep_alive: 30s}}\ndevices: []\n",
            dir = d.path().display(),
            port = proxy.port
        );
        let config = d.path().join("gw.yaml");
        std::fs::write(&config, yaml).expect("config");
        let log = std::fs::File::create(d.path().join("stderr")).expect("log file");
        procs.push(
            Command::new(gateway_bin())
                .args(["run", "--config"])
                .arg(&config)
                .stderr(Stdio::from(log))
                .spawn()
                .expect("serial2mqtt"),
        );
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (i, c) in procs.iter_mut().enumerate() {
        if let Ok(Some(status)) = c.try_wait() {
            let log = std::fs::read_to_string(dirs[i].path().join("stderr")).unwrap_or_default();
            panic!("gateway {i} exited ({status}): {log}");
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while proxy.connects().len() < n {
        assert!(
            Instant::now() < deadline,
            "the fleet did not connect: {} of {n} after 60 s",
            proxy.connects().len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    proxy.down();
    tokio::time::sleep(down).await;
    let before = proxy.connects().len();
    proxy.up().await;
    let back = Instant::now();
    let deadline = back + Duration::from_secs(120);
    while proxy.connects().len() < before + n && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let offsets = proxy.connects()[before..]
        .iter()
        .map(|t| t.saturating_duration_since(back).as_secs_f64())
        .collect();
    for mut c in procs {
        let _ = c.kill();
        let _ = c.wait();
    }
    offsets
}

fn main() {
    if !benchmarking() {
        return;
    }
    let scale: usize = env_or("BENCH_RUNS", 1);
    let long = env_or("BENCH_LONG", 0u8) == 1;
    let fleet_size: usize = env_or("BENCH_FLEET", 100);
    let rt = runtime();
    rt.block_on(async {
        let plan = [(5, 5 * scale), (60, 3 * scale)];
        let mut ours_plan = plan.to_vec();
        if long {
            ours_plan.push((600, 1));
        }
        let mut ours = Ours {
            state: tempfile::tempdir().expect("tempdir"),
        };
        let outages_on = env_or("BENCH_OUTAGES", 1u8) == 1;
        let mut rows = Vec::new();
        if outages_on {
            rows.push(("serial2mqtt", outages(&mut ours, &ours_plan).await));
        }
        if outages_on && peer_available() && env_or("BENCH_PEER", 1u8) == 1 {
            rows.push(("pyserial+paho direct", outages(&mut Python, &plan).await));
            let mut bridge = MosquittoBridge {
                dir: tempfile::tempdir().expect("tempdir"),
                restart_timeout: None,
            };
            rows.push((
                "pyserial+paho → mosquitto bridge",
                outages(&mut bridge, &plan).await,
            ));
        } else {
            eprintln!("peers not measured: they need python3 with pyserial and paho-mqtt 1.6");
        }
        println!("\nseconds from the network's return to the first / last delivery of the outage's frames (p50 / p95)\n");
        println!("| system | outage | runs | first p50 | first p95 | last p50 | last p95 |");
        println!("|---|---|---|---|---|---|---|");
        for (name, backs) in &rows {
            for (i, b) in backs.iter().enumerate() {
                let secs = ours_plan[i].0;
                println!(
                    "| {name} | {} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
                    humantime::format_duration(Duration::from_secs(secs)),
                    b.first.len(),
                    percentile(b.first.clone(), 0.5),
                    percentile(b.first.clone(), 0.95),
                    percentile(b.last.clone(), 0.5),
                    percentile(b.last.clone(), 0.95),
                );
            }
        }

        if fleet_size > 0 {
            let offsets = fleet(fleet_size, Duration::from_secs(20)).await;
            let mut per_100ms = std::collections::BTreeMap::<i64, usize>::new();
            for o in &offsets {
                *per_100ms.entry((o * 10.0).floor() as i64).or_default() += 1;
            }
            let peak_100ms = per_100ms.values().max().copied().unwrap_or(0);
            let mut per_s = std::collections::BTreeMap::<i64, usize>::new();
            for o in &offsets {
                *per_s.entry(o.floor() as i64).or_default() += 1;
            }
            let peak_s = per_s.values().max().copied().unwrap_or(0);
            println!(
                "\nfleet of {fleet_size} gateways, proxy down 20 s then back: {} CONNECTs, first {:.2} s, all by {:.2} s (p50 {:.2} s, p95 {:.2} s); peak {peak_s} per second, {} per second over the busiest 100 ms",
                offsets.len(),
                percentile(offsets.clone(), 0.0),
                percentile(offsets.clone(), 1.0),
                percentile(offsets.clone(), 0.5),
                percentile(offsets.clone(), 0.95),
                peak_100ms * 10
            );
            println!("CONNECTs per 100 ms after the return: {per_100ms:?}");
        }
    });
}

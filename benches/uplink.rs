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

use std::process::Child;
use std::time::{Duration, Instant};

use common::systems::*;
use common::upstream::*;
use common::*;
use proxy::Proxy;
use tokio::io::AsyncWriteExt;

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
                // Retries every second: the drain measured, not mosquitto's backoff.
                restart_timeout: Some("1 1"),
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

//! Abusive local clients against the serial path and the uplink: frames written into a pty
//! reach a subscriber on an upstream mosquitto through the queue, once with a quiet local
//! broker and once while local clients abuse it (one flooding publishes, one subscribed to `#`
//! that never reads, 100 connecting at once, malformed packets). The figure is the ratio of
//! the two throughputs (target: the abused run keeps at least 80 %).
//!
//! Run: `cargo bench --bench abuse` (needs mosquitto). BENCH_RUNS (default 3), BENCH_FRAMES
//! (default 100000).

mod common;
#[path = "../tests/common/mosquitto.rs"]
mod mosquitto;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::upstream::*;
use common::*;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::io::AsyncWriteExt;

/// Starts the gateway on `pty` with an uplink to `upstream`; returns it and its broker port.
fn start_gateway(pty: &std::path::Path, upstream: u16, dir: &std::path::Path) -> (Child, u16) {
    let port = free_port();
    let config = dir.join("config.yaml");
    std::fs::write(
        &config,
        format!(
            r#"
gateway: {{id: bench, state_dir: "{state}", stats_interval: 0s}}
broker: {{listen: "127.0.0.1:{port}", max_connections: 256}}
uplink: {{url: "mqtt://127.0.0.1:{upstream}", forward: ["bench/#"]}}
devices:
  - {{name: d0, port: {pty}, rules: [seq], max_frame: 64}}
rules:
  seq:
    match: '^seq=(?P<n>\d+)$'
    publish: [{{topic: "bench/{{device}}", payload: "{{n}}", qos: 1}}]
"#,
            state = dir.join("state").display(),
            pty = pty.display(),
        ),
    )
    .expect("config");
    let child = Command::new(common::gateway_bin())
        .args(["run", "--config"])
        .arg(&config)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start serial2mqtt");
    assert!(
        wait_port(port, Duration::from_secs(10)),
        "gateway did not listen"
    );
    (child, port)
}

/// Starts the abusive clients; they run until the returned tasks are aborted.
async fn abuse(port: u16) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    // Subscribed to everything, never reads after its SUBACK.
    let (stuck, mut ev) = AsyncClient::new(MqttOptions::new("stuck", "127.0.0.1", port), 10);
    stuck
        .subscribe("#", QoS::AtLeastOnce)
        .await
        .expect("subscribe");
    while !matches!(ev.poll().await, Ok(Event::Incoming(Packet::SubAck(_)))) {}
    tasks.push(tokio::spawn(async move {
        let _keep = (stuck, ev);
        std::future::pending::<()>().await;
    }));
    // Floods QoS 0 publishes of 512 bytes as fast as it can.
    tasks.push(tokio::spawn(async move {
        let (c, mut ev) = AsyncClient::new(MqttOptions::new("flooder", "127.0.0.1", port), 1000);
        tokio::spawn(async move { while ev.poll().await.is_ok() {} });
        let payload = vec![b'z'; 512];
        let mut i = 0u64;
        while c
            .publish(
                format!("noise/{}", i % 50),
                QoS::AtMostOnce,
                false,
                payload.clone(),
            )
            .await
            .is_ok()
        {
            i += 1;
        }
    }));
    // 100 clients at once.
    for i in 0..100 {
        let (c, mut ev) = AsyncClient::new(
            MqttOptions::new(format!("crowd-{i}"), "127.0.0.1", port),
            10,
        );
        tasks.push(tokio::spawn(async move {
            let _c = c;
            while ev.poll().await.is_ok() {}
        }));
    }
    // Malformed packets, again and again.
    tasks.push(tokio::spawn(async move {
        loop {
            if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                let _ = s.write_all(b"\x10\xff\xff\xff\xff\x7fnot mqtt").await;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }));
    tokio::time::sleep(Duration::from_millis(500)).await;
    tasks
}

/// Writes `n` frames as fast as the pty takes them; returns frames/s delivered upstream.
async fn run_once(abused: bool, n: u64) -> f64 {
    let broker = Mosquitto::start();
    let got = subscribe(broker.port).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let mut p = pty();
    let (mut gw, port) = start_gateway(&p.path, broker.port, dir.path());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let tasks = if abused {
        abuse(port).await
    } else {
        Vec::new()
    };
    let t0 = Instant::now();
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut i = 1;
    while i <= n {
        buf.clear();
        while buf.len() < 60 * 1024 && i <= n {
            buf.extend_from_slice(format!("seq={i}\n").as_bytes());
            i += 1;
        }
        p.master.write_all(&buf).await.expect("write");
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let secs = loop {
        let (count, last) = {
            let g = got.lock().expect("lock");
            (
                g.range(1..=n).count() as u64,
                g.range(1..=n).map(|(_, t)| *t).max(),
            )
        };
        if count == n {
            break last.map_or(f64::NAN, |l| l.duration_since(t0).as_secs_f64());
        }
        assert!(Instant::now() < deadline, "only {count} of {n} arrived");
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    for t in tasks {
        t.abort();
    }
    let _ = gw.kill();
    let _ = gw.wait();
    n as f64 / secs
}

fn main() {
    if !benchmarking() {
        return;
    }
    let runs: usize = env_or("BENCH_RUNS", 3);
    let n: u64 = env_or("BENCH_FRAMES", 100_000);
    let rt = runtime();
    rt.block_on(async {
        let (mut quiet, mut abused) = (Vec::new(), Vec::new());
        for run in 1..=runs {
            quiet.push(run_once(false, n).await);
            abused.push(run_once(true, n).await);
            eprintln!(
                "run {run}: quiet {:.0} frames/s, abused {:.0} frames/s",
                quiet[run - 1],
                abused[run - 1]
            );
        }
        let (q, a) = (median(quiet), median(abused));
        println!("\nmedians of {runs} runs, {n} frames through the queue to an upstream mosquitto\n");
        println!("| local broker | frames/s end to end | ratio |");
        println!("|---|---|---|");
        println!("| quiet | {q:.0} | 1.00 |");
        println!("| abused (flood, stuck `#` subscriber, 100 clients, malformed packets) | {a:.0} | {:.2} |", a / q);
    });
}

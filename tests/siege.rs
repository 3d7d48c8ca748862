//! The gateway under the attacks a LAN peer can mount, all at once, with the descriptor limit a
//! shell gives (1,024): 1,100 slow HTTP clients on the dashboard, 1,000 MQTT connections that
//! never send CONNECT, and 200,000 retained messages of 1 KiB on distinct topics. Proves the
//! bounds hold: the gateway's memory stays within its stated bound, the serial readings keep
//! reaching a local subscriber, and a replugged adapter is read again.
//!
//! Ignored (under a minute): `cargo test --release --test siege -- --ignored --nocapture`
//! (`SERIAL2MQTT_TEST_BIN=path` runs another build); the figures it prints go in BENCHMARKS.md.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use rumqttc::{AsyncClient, MqttOptions, QoS};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

const T: Duration = Duration::from_secs(10);
/// What the gateway may grow by under all the attacks at once: the broker's stated bounds
/// (about 40 MiB) and the connections' buffers.
const RSS_BOUND_MIB: u64 = 64;

async fn connect_from(from: IpAddr, port: u16) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(from, 0))?;
    socket.connect(SocketAddr::new(from, port)).await
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a siege of a minute or two; figures for BENCHMARKS.md"]
async fn the_bounds_hold_under_every_attack_at_once() {
    // This process holds thousands of connections itself.
    serial2mqtt::listener::raise_fd_limit();
    let lan = lan_address().expect("a non-loopback IPv4 address to act as a LAN peer");
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("usb-climate");
    let pty = Pty::new();
    repoint(&link, &pty.path);
    let token = dir.path().join("web.token");
    std::fs::write(&token, "0123456789abcdef0123456789abcdef0123456789abcdef").unwrap();
    let web_port = free_port();
    let yaml = format!(
        r#"
gateway: {{id: siege, state_dir: "{{dir}}/state", stats_interval: 0s}}
broker: {{listen: "0.0.0.0:{{port}}"}}
web: {{listen: "0.0.0.0:{web_port}", token_file: "{token}"}}
devices:
  - {{name: climate, port: "{link}", rules: [climate]}}
rules:
  climate:
    match: '^T=(?P<temp>-?\d+(?:\.\d+)?);H=(?P<hum>\d+)$'
    publish: [{{topic: "sensors/{{device}}/temperature", payload: "{{temp}}"}}]
"#,
        token = token.display(),
        link = link.display()
    );
    // The descriptor limit a shell's session gives, soft and hard.
    let gw = start_gateway_with(&yaml, free_port(), |config, _| {
        let mut c = Command::new("sh");
        c.args([
            "-c",
            "ulimit -Sn 1024 && ulimit -Hn 1024 && exec \"$@\"",
            "sh",
        ])
        .arg(
            std::env::var_os("SERIAL2MQTT_TEST_BIN")
                .unwrap_or_else(|| env!("CARGO_BIN_EXE_serial2mqtt").into()),
        )
        .args(["run", "--config"])
        .arg(config);
        c
    });
    gw.wait_log("device online", T).await;
    let pid = gw.child.id();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_before = status_kib(pid, "VmRSS:");

    // Readings every 20 ms, counted at a local subscriber.
    let mut sub = Subscriber::connect(gw.port, &["sensors/#"], QoS::AtMostOnce).await;
    let received = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&received);
    tokio::spawn(async move {
        while tokio::time::timeout(Duration::from_secs(600), sub.next(Duration::from_secs(600)))
            .await
            .is_ok()
        {
            counted.fetch_add(1, Ordering::Relaxed);
        }
    });
    let (pty_tx, mut pty_rx) = tokio::sync::mpsc::channel::<Pty>(1);
    let written = Arc::new(AtomicUsize::new(0));
    let writes = Arc::clone(&written);
    let writer = tokio::spawn(async move {
        let mut pty = pty;
        let mut tick = tokio::time::interval(Duration::from_millis(20));
        loop {
            tick.tick().await;
            if let Ok(new) = pty_rx.try_recv() {
                pty = new;
            }
            let n = writes.fetch_add(1, Ordering::Relaxed);
            pty.write(format!("T={}.0;H=40\n", n % 40).as_bytes()).await;
        }
    });

    // The flooding client logs in first (the held connections below fill the places left).
    let mut opts = MqttOptions::new("flood", "127.0.0.1", gw.port);
    opts.set_max_packet_size(1 << 20, 1 << 20);
    let (client, mut events) = AsyncClient::new(opts, 1000);
    loop {
        match tokio::time::timeout(T, events.poll()).await {
            Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::ConnAck(_)))) => break,
            Ok(Ok(_)) => {}
            other => panic!("the flooding client did not connect: {other:?}"),
        }
    }
    let flooding = tokio::spawn(async move {
        loop {
            if events.poll().await.is_err() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });

    let started = Instant::now();
    // 1,100 slow HTTP clients: a request line and one header, then nothing.
    let mut slow = Vec::new();
    let (mut http_refused, mut http_failed) = (0, 0);
    for _ in 0..1100 {
        match connect_from(lan, web_port).await {
            Ok(mut tcp) => {
                if tcp
                    .write_all(b"GET / HTTP/1.1\r\nHost: gw\r\n")
                    .await
                    .is_err()
                {
                    http_refused += 1;
                }
                slow.push(tcp);
            }
            Err(_) => http_failed += 1,
        }
    }
    // 1,000 MQTT connections that never send CONNECT, from the LAN and from loopback.
    let mut mqtt = Vec::new();
    let mut mqtt_failed = 0;
    for i in 0..1000 {
        let from = if i % 2 == 0 {
            lan
        } else {
            "127.0.0.1".parse().unwrap()
        };
        match connect_from(from, gw.port).await {
            Ok(tcp) => mqtt.push(tcp),
            Err(_) => mqtt_failed += 1,
        }
    }
    let fds_peak_connect = open_fds(pid);
    // 200,000 retained messages of 1 KiB on distinct topics, as fast as one client sends.
    let payload = vec![b'x'; 1024];
    let flood_deadline = Instant::now() + Duration::from_secs(120);
    let mut flooded = 0;
    while flooded < 200_000 && Instant::now() < flood_deadline {
        let sent = tokio::time::timeout(
            Duration::from_secs(5),
            client.publish(
                format!("flood/{flooded}"),
                QoS::AtMostOnce,
                true,
                payload.clone(),
            ),
        )
        .await;
        if !matches!(sent, Ok(Ok(()))) {
            break;
        }
        flooded += 1;
    }
    let attack_secs = started.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let rss_peak = status_kib(pid, "VmHWM:");
    let fds_peak = open_fds(pid).max(fds_peak_connect);

    // A replug while the attack's connections are still open.
    let replugged = Pty::new();
    repoint(&link, &replugged.path);
    let before_replug = received.load(Ordering::Relaxed);
    pty_tx.send(replugged).await.unwrap();
    let deadline = Instant::now() + T;
    while received.load(Ordering::Relaxed) < before_replug + 10 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let after_replug = received.load(Ordering::Relaxed) - before_replug;
    writer.abort();
    flooding.abort();
    let (w, r) = (
        written.load(Ordering::Relaxed),
        received.load(Ordering::Relaxed),
    );
    let rss_now = status_kib(pid, "VmRSS:");
    let closed_slow = {
        let mut n = 0;
        for tcp in &mut slow {
            let mut b = [0u8; 256];
            if matches!(
                tokio::time::timeout(
                    Duration::from_millis(1),
                    tokio::io::AsyncReadExt::read(tcp, &mut b)
                )
                .await,
                Ok(Ok(_)) | Ok(Err(_))
            ) {
                n += 1;
            }
        }
        n
    };
    println!(
        "siege: {attack_secs:.1} s of attack; HTTP 1100 slow clients ({http_failed} not \
         connected, {http_refused} refused at once, {closed_slow} answered or closed by now); \
         MQTT 1000 connections ({mqtt_failed} not connected); {flooded} of 200k retained x 1 KiB \
         sent\n\
         gateway: RSS {} → peak {} → {} MiB; descriptors peak {fds_peak} of 1024; readings \
         {r} of {w} written reached the subscriber; {after_replug} after the replug",
        rss_before / 1024,
        rss_peak / 1024,
        rss_now / 1024,
    );
    assert!(
        rss_peak < rss_before + RSS_BOUND_MIB * 1024,
        "RSS grew from {rss_before} to {rss_peak} KiB\n{}",
        gw.logs()
    );
    assert!(fds_peak < 1024 - 64, "descriptors: {fds_peak}");
    assert!(r * 10 >= w * 9, "only {r} of {w} readings arrived");
    assert!(after_replug >= 10, "the replugged adapter was not read");
    assert_eq!(flooded, 200_000, "the flood stalled");
    assert!(
        gw.logs().contains("was delivered but not kept"),
        "the retained bound was not reached"
    );
    drop(slow);
    drop(mqtt);
}

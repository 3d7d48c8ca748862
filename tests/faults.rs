//! The uplink under network faults, injected by a TCP proxy between the gateway and a real
//! upstream broker: a broker that accepts TCP but never answers CONNECT, one that stops
//! acknowledging, one that flaps, a host name that does not resolve. Each time: a clear line in
//! the log, readings kept in the queue, nothing lost once the fault clears.

mod common;

use std::time::{Duration, Instant};

use common::proxy::Proxy;
use common::upstream::*;
use common::*;

const T: Duration = Duration::from_secs(10);

/// Resident memory of a process, KiB.
fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn a_broker_that_never_answers_connect_is_timed_out_and_retried_with_backoff() {
    let broker = AnyBroker::start();
    let upstream = Upstream::subscribe(broker.port(), "sites/#").await;
    let proxy = Proxy::start(broker.port()).await;
    proxy.blackhole();
    let state = tempfile::tempdir().unwrap();
    let mut pty = Pty::new();
    let extra = "  connect_timeout: 500ms\n";
    let gw = start_gateway(&uplink_config(&pty.path, proxy.port, state.path(), extra));
    gw.wait_log("no CONNACK within 500ms", T).await;
    write_frames(&mut pty, 1..=30, Duration::from_millis(5)).await;

    // Attempts keep coming, spaced by the backoff (1 s, 2 s, 4 s... with jitter), not a storm:
    // the port answers all along, so the reachability probe never cuts the backoff short.
    let t0 = Instant::now();
    tokio::time::sleep(Duration::from_secs(4)).await;
    let attempts = proxy.connects().len();
    assert!(
        (2..=5).contains(&attempts),
        "{attempts} attempts in {:?}",
        t0.elapsed()
    );
    assert!(gw.logs().contains("messages are kept in the queue"));

    // The broker answers again: everything queued arrives, in order.
    proxy.forward();
    let got = upstream.wait_all(TOPIC, 30, Duration::from_secs(30)).await;
    assert_in_order(&got);
}

#[tokio::test]
async fn a_broker_that_stops_acknowledging_fills_the_queue_on_disk_not_memory() {
    let broker = AnyBroker::start();
    let upstream = Upstream::subscribe(broker.port(), "sites/#").await;
    let proxy = Proxy::start(broker.port()).await;
    let state = tempfile::tempdir().unwrap();
    let mut pty = Pty::new();
    let gw = start_gateway(&uplink_config(&pty.path, proxy.port, state.path(), ""));
    gw.wait_log("uplink connected", T).await;
    write_frames(&mut pty, 1..=20, Duration::from_millis(2)).await;
    upstream.wait_all(TOPIC, 20, T).await;

    // PUBACKs (and everything else from the broker) stop; the window fills, then the queue grows.
    proxy.stall(true);
    let pid = gw.child.id();
    let before = rss_kib(pid);
    let n = 20_000;
    for chunk in (21..=n).collect::<Vec<u64>>().chunks(500) {
        let text: String = chunk.iter().map(|i| format!("seq={i}\n")).collect();
        pty.write(text.as_bytes()).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid);
    let queued: u64 = std::fs::read_dir(state.path().join("queue"))
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    assert!(queued > 500_000, "{queued} bytes on disk for {n} messages");
    assert!(
        after < before + 8 * 1024,
        "RSS grew from {before} KiB to {after} KiB while {n} messages waited"
    );

    // Acks flow again (or the keep-alive expired and the uplink reconnected): all arrive.
    proxy.stall(false);
    let got = upstream.wait_all(TOPIC, n, Duration::from_secs(60)).await;
    assert_in_order(&got);
}

#[tokio::test]
async fn a_flapping_broker_loses_nothing_and_is_not_stormed() {
    let broker = AnyBroker::start();
    let upstream = Upstream::subscribe(broker.port(), "sites/#").await;
    let proxy = Proxy::start(broker.port()).await;
    let state = tempfile::tempdir().unwrap();
    let mut pty = Pty::new();
    let gw = start_gateway(&uplink_config(&pty.path, proxy.port, state.path(), ""));
    gw.wait_log("uplink connected", T).await;

    // 60 s of a network that is up 2 s, down 2 s, while readings come at 20 per second.
    let start = Instant::now();
    let mut next = 1u64;
    let mut up = true;
    let mut flip = Instant::now() + Duration::from_secs(2);
    while start.elapsed() < Duration::from_secs(60) {
        pty.write(format!("seq={next}\n").as_bytes()).await;
        next += 1;
        if Instant::now() >= flip {
            if up {
                proxy.down();
            } else {
                proxy.up().await;
            }
            up = !up;
            flip = Instant::now() + Duration::from_secs(2);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if !up {
        proxy.up().await;
    }
    let n = next - 1;
    let got = upstream.wait_all(TOPIC, n, Duration::from_secs(90)).await;
    assert_in_order(&got);
    // At most one attempt a second on average: the backoff spaces them even though every
    // up period lets a connection succeed (the reachability probes, which open and close a
    // TCP connection, are not sessions).
    let attempts = proxy.connects().len();
    assert!(attempts <= 62, "{attempts} connection attempts in 60 s");
    // It reconnected (how often during the flapping depends on where the growing, jittered
    // delays fall against the 2 s windows: from 1 to about 10 here).
    let connects = gw.logs().matches("uplink connected").count();
    assert!(connects >= 2, "{connects} connections");
}

#[tokio::test]
async fn a_host_name_that_does_not_resolve_is_one_clear_line_and_readings_wait() {
    let state = tempfile::tempdir().unwrap();
    let mut pty = Pty::new();
    let config = uplink_config(&pty.path, 1883, state.path(), "").replace(
        "mqtt://127.0.0.1:1883",
        "mqtt://serial2mqtt-test.invalid:1883",
    );
    let gw = start_gateway(&config);
    let mut local = Subscriber::connect(gw.port, &["sensors/#"], rumqttc::QoS::AtMostOnce).await;
    gw.wait_log("uplink down", T).await;
    write_frames(&mut pty, 1..=5, Duration::from_millis(5)).await;
    // Local delivery is unaffected.
    for i in 1..=5 {
        assert_eq!(local.next(T).await.payload, i.to_string());
    }
    let logs = gw.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("uplink down"))
        .expect("an uplink down line");
    assert!(
        line.contains("serial2mqtt-test.invalid") && line.contains("resolve"),
        "{line}"
    );
    assert_eq!(logs.matches("uplink down").count(), 1, "said once: {logs}");
}

/// The newest `queue.dropped.disk_full` figure from the gateway's stats messages.
async fn disk_full_drops(stats: &mut Subscriber, timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    let mut last = 0;
    while Instant::now() < deadline {
        let Ok(m) = tokio::time::timeout(Duration::from_millis(1500), stats.next(timeout)).await
        else {
            break;
        };
        let v: serde_json::Value = serde_json::from_str(&m.payload).unwrap();
        last = v["queue"]["dropped"]["disk_full"].as_u64().unwrap_or(0);
    }
    last
}

/// Waits until a stats message says nothing in the queue awaits an acknowledgement.
async fn queue_acked(stats: &mut Subscriber) {
    let deadline = Instant::now() + T;
    loop {
        let m = stats.next(T).await;
        let v: serde_json::Value = serde_json::from_str(&m.payload).unwrap();
        if v["queue"]["depth"].as_u64() == Some(0) {
            return;
        }
        assert!(Instant::now() < deadline, "the queue never emptied: {v}");
    }
}

/// Sorted numbers as runs of consecutive ones, `(first, last)`.
fn runs(numbers: &[u64]) -> Vec<(u64, u64)> {
    let mut out: Vec<(u64, u64)> = Vec::new();
    for &n in numbers {
        match out.last_mut() {
            Some((_, last)) if *last + 1 == n => *last = n,
            _ => out.push((n, n)),
        }
    }
    out
}

#[tokio::test]
async fn a_full_disk_keeps_the_newest_counts_the_drops_and_recovers_when_space_returns() {
    if !can_unshare() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("the full-disk test needs root and unshare(1) in CI (a private tmpfs)");
        }
        eprintln!("SKIPPED: needs root and unshare(1) to mount a small tmpfs for the queue");
        return;
    }
    let broker = AnyBroker::start();
    let upstream = Upstream::subscribe(broker.port(), "sites/#").await;
    let proxy = Proxy::start(broker.port()).await;
    let state = tempfile::tempdir().unwrap();
    let mut pty = Pty::new();
    // The queue's cap is far above the disk: the disk fills first.
    let config = uplink_config(&pty.path, proxy.port, state.path(), "")
        .replace(
            "queue: {flush_interval: 50ms}",
            "queue: {flush_interval: 50ms, segment_bytes: 64KiB, max_bytes: 64MiB}",
        )
        .replace(
            "gateway: {id: gw1,",
            "gateway: {id: gw1, stats_interval: 1s,",
        );
    let tmpfs = state.path().to_owned();
    let gw = start_gateway_with(&config, free_port(), move |config, _| {
        // A 256 KiB tmpfs over the state directory, in the gateway's own mount namespace.
        let mut c = std::process::Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount -t tmpfs -o size=256k tmpfs "$1" && exec "$2" run --config "$3""#)
            .arg("sh")
            .arg(&tmpfs)
            .arg(env!("CARGO_BIN_EXE_serial2mqtt"))
            .arg(config);
        c
    });
    let mut stats = Subscriber::connect(
        gw.port,
        &["serial2mqtt/gw1/stats"],
        rumqttc::QoS::AtMostOnce,
    )
    .await;
    gw.wait_log("uplink connected", T).await;
    write_frames(&mut pty, 1..=10, Duration::from_millis(2)).await;
    upstream.wait_all(TOPIC, 10, T).await;
    // Acknowledged too, before the cut: a reading upstream has but whose PUBACK the cut stops
    // is rightly counted as dropped when its segment goes for room, and would be counted twice.
    queue_acked(&mut stats).await;

    // Offline, 20,000 readings (about 900 KB of records) meet 256 KiB of disk.
    proxy.down();
    gw.wait_log("uplink down", T).await;
    let n: u64 = 20_010;
    for chunk in (11..=n).collect::<Vec<u64>>().chunks(500) {
        let text: String = chunk.iter().map(|i| format!("seq={i}\n")).collect();
        pty.write(text.as_bytes()).await;
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let dropped = disk_full_drops(&mut stats, Duration::from_secs(3)).await;
    assert!(dropped > 10_000, "drops counted: {dropped}\n{}", gw.logs());
    assert!(gw.logs().contains("disk full"), "{}", gw.logs());
    // A running total while it lasts, rate-limited, whose last figure is the stats' figure even
    // though no reading follows the burst (it was the first batch's count alone).
    let totals = |logs: &str| -> Vec<u64> {
        logs.lines()
            .filter_map(|l| l.split("the disk is full: ").nth(1))
            .filter_map(|r| r.split(' ').next()?.parse().ok())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(15);
    while totals(&gw.logs()).last() != Some(&dropped) {
        assert!(
            Instant::now() < deadline,
            "the log's totals {:?} never reached the stats' {dropped}\n{}",
            totals(&gw.logs()),
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        totals(&gw.logs()).len() <= 3,
        "rate-limited: {:?}",
        totals(&gw.logs())
    );

    // Back online: what fitted is delivered, the newest included, in order.
    proxy.up().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !upstream.payloads(TOPIC).contains(&n) {
        assert!(
            Instant::now() < deadline,
            "the newest reading never arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got = upstream.payloads(TOPIC);
    assert_in_order(&got);
    let distinct: std::collections::BTreeSet<u64> =
        got.iter().copied().filter(|&s| s > 10).collect();
    // Exactly the oldest were dropped: what arrived is one unbroken run ending at the newest,
    // and delivered + dropped accounts for every reading.
    let first = *distinct.iter().next().unwrap();
    assert_eq!(
        distinct.len() as u64,
        n - first + 1,
        "a gap in what was kept"
    );
    let dropped = disk_full_drops(&mut stats, Duration::from_secs(2)).await;
    assert_eq!(
        distinct.len() as u64 + dropped,
        n - 10,
        "delivered + dropped"
    );

    // Space came back as the delivered segments were deleted: new readings are stored and sent,
    // and the log says so once, with the total lost in between.
    tokio::time::sleep(Duration::from_secs(5)).await;
    write_frames(&mut pty, n + 1..=n + 2000, Duration::ZERO).await;
    gw.wait_log("storing works again", T).await;
    let logs = gw.logs();
    let line = logs
        .lines()
        .find(|l| l.contains("storing works again"))
        .unwrap_or_default();
    assert!(
        line.contains(&format!("{dropped} messages were lost to the full disk")),
        "{line}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got: std::collections::BTreeSet<u64> = upstream.payloads(TOPIC).into_iter().collect();
        let missing: Vec<u64> = (n + 1..=n + 2000).filter(|s| !got.contains(s)).collect();
        if missing.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "readings after recovery missing: {} of them, {:?}\n{}",
            missing.len(),
            runs(&missing),
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_state_dir_that_cannot_be_written_is_a_clear_error_at_start() {
    let dir = tempfile::tempdir().unwrap();
    // A plain file where the directory should be: not writable as a directory, even for root.
    let state = dir.path().join("state");
    std::fs::write(&state, "not a directory").unwrap();
    let config = dir.path().join("config.yaml");
    std::fs::write(
        &config,
        format!(
            "gateway: {{id: g, state_dir: \"{}\"}}\nbroker: {{listen: \"127.0.0.1:{}\"}}\nuplink: {{url: \"mqtt://127.0.0.1:1\"}}\ndevices: []\n",
            state.display(),
            free_port()
        ),
    )
    .unwrap();
    let out = serial2mqtt_command()
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot lock {}", state.display()))
            && err.contains("gateway.state_dir is not a directory")
            && err.contains("writable"),
        "{err}"
    );
}

// ---- serial faults ----

#[tokio::test]
async fn an_unplug_in_the_middle_of_a_frame_drops_that_frame_counts_it_and_the_next_is_clean() {
    let pty1 = Pty::new();
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("usb-sensor");
    repoint(&link, &pty1.path);
    let mut pty1 = pty1;
    let mut gw = start_gateway(&climate_config(&link, ""));
    let mut sub = Subscriber::connect(gw.port, &["sensors/#"], rumqttc::QoS::AtLeastOnce).await;
    gw.wait_log("device online", T).await;

    pty1.write(b"T=19.0;H=30\nT=21.5;H=").await;
    assert_eq!(sub.next(T).await.payload, "19.0");
    assert_eq!(sub.next(T).await.payload, "30");
    tokio::time::sleep(Duration::from_millis(100)).await;
    drop(pty1); // unplugged mid-frame
    gw.wait_log("a frame cut short by the disconnect was dropped", T)
        .await;

    let mut pty2 = Pty::new();
    repoint(&link, &pty2.path);
    gw.wait_log("device online device=greenhouse", T).await;
    let deadline = Instant::now() + T;
    while gw.logs().matches("device online").count() < 2 {
        assert!(Instant::now() < deadline, "never reopened\n{}", gw.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    pty2.write(b"T=22.0;H=41\n").await;
    // The next frame is whole: neither half of the cut one leaked into it.
    assert_eq!(sub.next(T).await.payload, "22.0");
    assert_eq!(sub.next(T).await.payload, "41");
    assert!(gw.terminate().success());
    assert!(gw.logs().contains("incomplete=1"), "{}", gw.logs());
}

/// Writes `bytes` of what `make` produces into the pty at about `per_sec`, in 16 KiB pieces.
async fn flood(pty: &mut Pty, total: usize, per_sec: usize, make: impl Fn(usize) -> u8) {
    let piece = 16 * 1024;
    let start = Instant::now();
    let mut sent = 0;
    while sent < total {
        let chunk: Vec<u8> = (sent..sent + piece).map(&make).collect();
        pty.write(&chunk).await;
        sent += piece;
        let due = Duration::from_secs_f64(sent as f64 / per_sec as f64);
        if let Some(wait) = due.checked_sub(start.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
}

#[tokio::test]
async fn a_megabyte_per_second_without_newlines_is_cut_at_max_frame_with_flat_memory() {
    let mut pty = Pty::new();
    let gw = start_gateway(&climate_config(&pty.path, ""));
    let mut sub = Subscriber::connect(gw.port, &["sensors/#"], rumqttc::QoS::AtLeastOnce).await;
    gw.wait_log("device online", T).await;
    let pid = gw.child.id();
    flood(&mut pty, 512 * 1024, 1 << 20, |_| b'x').await;
    let warm = rss_kib(pid);
    flood(&mut pty, 3 << 20, 1 << 20, |_| b'x').await;
    let after = rss_kib(pid);
    assert!(
        after < warm + 2048,
        "RSS {warm} KiB -> {after} KiB while 3 MiB without a newline arrived"
    );
    // The overlong "frame" ends at the next newline; the reading after it is intact.
    pty.write(b"\nT=20.0;H=50\n").await;
    assert_eq!(sub.next(T).await.payload, "20.0");
    let logs = gw.logs();
    assert!(
        logs.contains("frame longer than max_frame dropped"),
        "{logs}"
    );
}

#[tokio::test]
async fn line_noise_at_the_wrong_baud_rate_is_counted_not_fatal_and_memory_stays_flat() {
    let mut pty = Pty::new();
    let gw = start_gateway(&climate_config(&pty.path, "  stats_interval: 1s"));
    let mut stats = Subscriber::connect(
        gw.port,
        &["serial2mqtt/testgw/stats"],
        rumqttc::QoS::AtMostOnce,
    )
    .await;
    let mut sub = Subscriber::connect(gw.port, &["sensors/#"], rumqttc::QoS::AtLeastOnce).await;
    gw.wait_log("device online", T).await;
    let pid = gw.child.id();
    // Pseudo-random bytes with a newline now and then, as a mismatched baud rate produces.
    let noise = |i: usize| {
        let x = (i as u32).wrapping_mul(2_654_435_761).rotate_left(13);
        if x % 53 == 0 {
            b'\n'
        } else {
            (x >> 8) as u8
        }
    };
    flood(&mut pty, 256 * 1024, 1 << 20, noise).await;
    let warm = rss_kib(pid);
    flood(&mut pty, 2 << 20, 1 << 20, noise).await;
    let after = rss_kib(pid);
    assert!(after < warm + 2048, "RSS {warm} KiB -> {after} KiB");
    pty.write(b"\nT=20.5;H=51\n").await;
    assert_eq!(
        sub.next_on("sensors/greenhouse/temperature", T)
            .await
            .payload,
        "20.5"
    );
    // Counted: frames that matched no rule or were not text, per device, in the stats message.
    let deadline = Instant::now() + T;
    loop {
        let m = stats.next(T).await;
        let v: serde_json::Value = serde_json::from_str(&m.payload).unwrap();
        let d = &v["devices"]["greenhouse"];
        let bad = d["unmatched"].as_u64().unwrap_or(0) + d["invalid_utf8"].as_u64().unwrap_or(0);
        if bad > 1000 {
            break;
        }
        assert!(Instant::now() < deadline, "garbage not counted: {d}");
    }
    assert!(gw.logs().contains("wrong baud rate?"), "{}", gw.logs());
}

// ---- TLS faults ----

/// A CA and a server certificate for `names`, signed by it (expired if `expired`), as PEM files
/// `<tag>-ca.pem`, `<tag>-server.pem`, `<tag>-server.key` in `dir`.
fn tls_files(dir: &std::path::Path, tag: &str, names: &[&str], expired: bool) {
    use rcgen::{
        date_time_ymd, BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair,
    };
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, format!("test CA {tag}"));
    let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();
    let key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
    if expired {
        params.not_before = date_time_ymd(2020, 1, 1);
        params.not_after = date_time_ymd(2021, 1, 1);
    }
    let cert = params.signed_by(&key, &ca).unwrap();
    std::fs::write(dir.join(format!("{tag}-ca.pem")), ca.pem()).unwrap();
    std::fs::write(dir.join(format!("{tag}-server.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{tag}-server.key")), key.serialize_pem()).unwrap();
}

#[tokio::test]
async fn bad_server_certificates_are_one_clear_line_each_and_readings_wait() {
    if !have_tool("mosquitto") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tls_files(d, "good", &["localhost"], false);
    tls_files(d, "other", &["localhost"], false); // trusted by nobody here
    tls_files(d, "expired", &["localhost"], true);
    tls_files(d, "wronghost", &["broker.example.net"], false);
    // (server cert files, CA the gateway trusts, what the log must say)
    let cases = [
        ("other", "good", "unknownissuer"),
        ("expired", "expired", "certificateexpired"),
        ("wronghost", "wronghost", "notvalidforname"),
    ];
    for (server, trusted, cause) in cases {
        let port = free_port();
        let mut broker = common::mosquitto::spawn_mosquitto(
            &d.join(format!("{server}.conf")),
            &format!(
                "listener {port} 127.0.0.1\ncertfile {d}/{server}-server.pem\nkeyfile {d}/{server}-server.key\nallow_anonymous true\nuser root\n",
                d = d.display()
            ),
            port,
        );
        let state = tempfile::tempdir().unwrap();
        let mut pty = Pty::new();
        let tls = format!("  tls: {{ca_file: {}/{trusted}-ca.pem}}\n", d.display());
        let config = uplink_config(&pty.path, port, state.path(), &tls)
            .replace("mqtt://127.0.0.1", "mqtts://localhost");
        let gw = start_gateway(&config);
        let mut local =
            Subscriber::connect(gw.port, &["sensors/#"], rumqttc::QoS::AtMostOnce).await;
        gw.wait_log("uplink down", T).await;
        write_frames(&mut pty, 1..=3, Duration::from_millis(5)).await;
        for i in 1..=3 {
            assert_eq!(local.next(T).await.payload, i.to_string(), "{server}");
        }
        let logs = gw.logs();
        let line = logs
            .lines()
            .find(|l| l.contains("uplink down"))
            .unwrap_or_default();
        let squashed = line.to_lowercase().replace(' ', "");
        assert!(
            line.contains("TLS failed") && squashed.contains(cause),
            "{server}: want a TLS line naming {cause}: {line}"
        );
        assert!(line.contains("messages are kept in the queue"), "{line}");
        drop(gw);
        let _ = broker.kill();
        let _ = broker.wait();
    }
}

#[tokio::test]
async fn a_port_without_permission_says_to_join_dialout_and_the_rest_keeps_running() {
    let denied = Pty::new();
    let mut good = Pty::new();
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    if root {
        // The gateway runs as nobody: give it the good port, as the dialout group would.
        std::os::unix::fs::chown(&good.path, Some(65534), Some(65534)).unwrap();
    } else {
        // Not root: take our own permission away. Root ignores modes, so it runs as nobody.
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&denied.path, std::fs::Permissions::from_mode(0o000)).unwrap();
    }
    let config = climate_config(&good.path, "").replace(
        "\nrules:\n",
        &format!(
            "\n  - name: locked\n    port: {}\n    rules: [climate]\nrules:\n",
            denied.path.display()
        ),
    );
    let gw = start_gateway_with(&config, free_port(), move |config, _| {
        let mut c = serial2mqtt_command();
        if root {
            use std::os::unix::fs::PermissionsExt;
            let dir = config.parent().unwrap();
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).unwrap();
            std::fs::set_permissions(config, std::fs::Permissions::from_mode(0o644)).unwrap();
            let mut s = std::process::Command::new("setpriv");
            s.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(c.get_program())
                .args(c.get_args());
            c = s;
        }
        c.args(["run", "--config"]).arg(config);
        c
    });
    let mut sub = Subscriber::connect(gw.port, &["sensors/#"], rumqttc::QoS::AtMostOnce).await;
    gw.wait_log("permission denied opening", T).await;
    let line = gw
        .logs()
        .lines()
        .find(|l| l.contains("permission denied") && l.contains("device=locked"))
        .unwrap_or_default()
        .to_owned();
    assert!(
        line.contains("dialout") && line.contains("device=locked"),
        "{line}"
    );
    if root {
        // As nobody the good pty is not ours either: the point here is the message.
        return;
    }
    gw.wait_log("device online device=greenhouse", T).await;
    good.write(b"T=18.5;H=60\n").await;
    assert_eq!(sub.next(T).await.payload, "18.5");
}

// ---- local broker abuse ----

#[tokio::test]
async fn abusive_local_clients_cost_no_reading_on_the_serial_path_or_the_uplink() {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
    use tokio::io::AsyncWriteExt;

    let broker = AnyBroker::start();
    let upstream = Upstream::subscribe(broker.port(), "sites/#").await;
    let state = tempfile::tempdir().unwrap();
    let mut pty = Pty::new();
    let config = uplink_config(&pty.path, broker.port(), state.path(), "").replace(
        "broker: {listen: \"127.0.0.1:{port}\"}",
        "broker: {listen: \"127.0.0.1:{port}\", max_connections: 160}",
    );
    assert!(config.contains("max_connections: 160"));
    let gw = start_gateway(&config);
    gw.wait_log("uplink connected", T).await;
    let port = gw.port;

    // A subscriber to everything that stops reading once subscribed.
    let mut opts = MqttOptions::new("never-reads", "127.0.0.1", port);
    opts.set_keep_alive(Duration::from_secs(60));
    let (stuck, mut stuck_events) = AsyncClient::new(opts, 10);
    stuck.subscribe("#", QoS::AtLeastOnce).await.unwrap();
    loop {
        if let Ok(Event::Incoming(Packet::SubAck(_))) = stuck_events.poll().await {
            break;
        }
    }
    // A client flooding the broker with publishes, as fast as it can.
    let flood = tokio::spawn(async move {
        let (c, mut ev) = AsyncClient::new(MqttOptions::new("flooder", "127.0.0.1", port), 1000);
        let pump = tokio::spawn(async move { while ev.poll().await.is_ok() {} });
        let payload = vec![b'z'; 512];
        for i in 0u64.. {
            if c.publish(
                format!("noise/{}", i % 50),
                QoS::AtMostOnce,
                false,
                payload.clone(),
            )
            .await
            .is_err()
            {
                break;
            }
        }
        pump.abort();
    });
    // 100 clients connecting at once, and staying.
    let mut crowd = Vec::new();
    for i in 0..100 {
        let (c, mut ev) = AsyncClient::new(
            MqttOptions::new(format!("crowd-{i}"), "127.0.0.1", port),
            10,
        );
        crowd.push((
            c,
            tokio::spawn(async move { while ev.poll().await.is_ok() {} }),
        ));
    }
    // Clients sending malformed packets.
    for garbage in [
        &b"\x10\xff\xff\xff\xff\x7fnot mqtt"[..],
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &[0u8; 64][..],
    ] {
        if let Ok(mut s) = tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            let _ = s.write_all(garbage).await;
        }
    }

    // Meanwhile 3,000 readings at 500 per second on the serial port.
    let n = 3000;
    for chunk in (1..=n).collect::<Vec<u64>>().chunks(50) {
        let text: String = chunk.iter().map(|i| format!("seq={i}\n")).collect();
        pty.write(text.as_bytes()).await;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = upstream.wait_all(TOPIC, n, Duration::from_secs(60)).await;
    assert_in_order(&got);
    flood.abort();
    drop(stuck);
    for (_, pump) in crowd {
        pump.abort();
    }
    // The broker and the gateway are still fine: a new client gets a fresh reading.
    let mut late = Subscriber::connect(port, &["sensors/#"], QoS::AtMostOnce).await;
    pty.write(b"seq=3001\n").await;
    assert_eq!(late.next_on("sensors/d/seq", T).await.payload, "3001");
}

/// Each thread of a process: its name and nice value, from /proc.
fn thread_priorities(pid: u32) -> Vec<(String, i32)> {
    let mut out = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).expect("tasks") {
        let dir = task.expect("task").path();
        let name = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap_or_default();
        // Fields after the `(comm)`: state is the 3rd field of stat, nice the 19th.
        let after = stat.rsplit_once(") ").map_or("", |(_, rest)| rest);
        if let Some(nice) = after.split(' ').nth(16).and_then(|n| n.parse().ok()) {
            out.push((name.trim().to_string(), nice));
        }
    }
    out
}

#[tokio::test]
async fn threads_serving_local_clients_run_below_the_readings_cpu_priority() {
    for (setting, expected) in [("", 10), ("\n  nice: 3", 3), ("\n  nice: 0", 0)] {
        let pty = Pty::new();
        let config = climate_config(&pty.path, "").replace(
            "  listen: 127.0.0.1:{port}\n",
            &format!("  listen: 127.0.0.1:{{port}}{setting}\n"),
        );
        assert!(
            config.contains(&format!("{{port}}{setting}\n")),
            "not patched: {config}"
        );
        let mut gw = start_gateway(&config);
        // The listener accepts (into its backlog) as soon as it is bound; the threads are all
        // there once the broker says it listens.
        gw.wait_log("embedded MQTT broker listening", T).await;
        let threads = thread_priorities(gw.child.id());
        gw.terminate();
        // The gatekeeper's thread takes the TCP clients and relays them to rumqttd's server
        // thread (named after our listener, `local`).
        let mut served: Vec<(String, i32)> = threads
            .iter()
            .filter(|(n, _)| n == "local" || n == "broker-gate")
            .cloned()
            .collect();
        served.sort();
        assert_eq!(
            served,
            [("broker-gate".into(), expected), ("local".into(), expected)],
            "threads: {threads:?}"
        );
        // Everything on the readings' path stays at the process's priority, the router
        // included: it carries the gateway's own publishes to local subscribers.
        for (name, nice) in &threads {
            if !["local", "broker", "broker-gate"].contains(&name.as_str()) {
                assert_eq!(*nice, 0, "{name} lowered too: {threads:?}");
            }
        }
        assert!(
            threads.iter().any(|(n, _)| n.starts_with("router")),
            "no router thread: {threads:?}"
        );
    }
}

// ---- security ----

/// Whether a client with these credentials gets a CONNACK that accepts it.
async fn can_log_in(port: u16, login: Option<(&str, &str)>) -> bool {
    use rumqttc::{AsyncClient, Event, MqttOptions, Packet};
    let mut opts = MqttOptions::new(format!("login-{}", fastrand_id()), "127.0.0.1", port);
    if let Some((u, p)) = login {
        opts.set_credentials(u, p);
    }
    let (_c, mut ev) = AsyncClient::new(opts, 10);
    let outcome = tokio::time::timeout(T, async {
        loop {
            match ev.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(a))) => {
                    return a.code == rumqttc::ConnectReturnCode::Success;
                }
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    })
    .await;
    outcome.unwrap_or(false)
}

fn fastrand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed) + u64::from(std::process::id()) * 1000
}

/// The climate config on `pty` with `users` as its broker's users file.
fn with_users_file(pty: &Pty, users: &std::path::Path) -> String {
    climate_config(&pty.path, "").replace(
        "broker:\n  listen: 127.0.0.1:{port}",
        &format!(
            "broker:\n  listen: 127.0.0.1:{{port}}\n  users_file: {}",
            users.display()
        ),
    )
}

/// `check` on `config`: it must pass; what it printed (stdout and stderr).
fn check_passes(config: &std::path::Path) -> String {
    let out = serial2mqtt_command()
        .arg("check")
        .arg(config)
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{said}");
    said
}

/// A subscriber logged in as `user` gets the next reading written to `pty`.
async fn reads_as(gw: &Gateway, pty: &mut Pty, user: &str, password: &str) {
    let mut opts = rumqttc::MqttOptions::new(format!("{user}-sub"), "127.0.0.1", gw.port);
    opts.set_credentials(user, password);
    let mut sub = Subscriber::connect_with(opts, &["sensors/#"], rumqttc::QoS::AtMostOnce).await;
    pty.write(b"T=23.5;H=45\n").await;
    assert_eq!(sub.next(T).await.payload, "23.5");
}

#[tokio::test]
async fn a_users_file_makes_local_clients_log_in_and_its_passwords_never_show() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("broker.users");
    std::fs::write(
        &users,
        "# local dashboards\ndash:s3cret-pass\n\nnodered:other-pass\n",
    )
    .unwrap();
    std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o640)).unwrap();
    let mut pty = Pty::new();
    let config = with_users_file(&pty, &users);
    assert!(config.contains("users_file"));
    let gw = start_gateway(&config);
    gw.wait_log("device online", T).await;

    assert!(!can_log_in(gw.port, None).await, "anonymous refused");
    assert!(
        !can_log_in(gw.port, Some(("dash", "wrong"))).await,
        "wrong password refused"
    );
    assert!(can_log_in(gw.port, Some(("nodered", "other-pass"))).await);

    // A logged-in subscriber gets the readings.
    reads_as(&gw, &mut pty, "dash", "s3cret-pass").await;

    // Never in the logs, never in `check`; a world-readable file gets a warning.
    assert!(!gw.logs().contains("s3cret-pass") && !gw.logs().contains("other-pass"));
    std::fs::set_permissions(&users, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = check_passes(&gw.config_path());
    assert!(text.contains("readable by every user"), "{text}");
    assert!(
        !text.contains("s3cret-pass") && !text.contains("other-pass"),
        "{text}"
    );
}

/// Passwords used to be stored in plain text. `serial2mqtt passwd` writes a salted PBKDF2 hash
/// (mosquitto_passwd's `$7$` format), mosquitto_passwd's own hashes work too (an independent
/// implementation), and an old plain-text line keeps working with a warning naming its line.
#[tokio::test]
async fn hashed_logins_from_passwd_and_mosquitto_passwd_are_verified() {
    use std::io::Write as _;
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("broker.users");
    let passwd = |user: &str, password: &str| {
        let mut child = serial2mqtt_command()
            .arg("passwd")
            .arg(&users)
            .arg(user)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        writeln!(child.stdin.take().unwrap(), "{password}").unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    assert!(passwd("dash", "first-pass").contains("added `dash`"));
    assert!(passwd("dash", "s3cret-pass").contains("changed the password of `dash`"));
    let mode = std::fs::metadata(&users).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o640, "a new users file is not world-readable");
    std::fs::OpenOptions::new()
        .append(true)
        .open(&users)
        .unwrap()
        .write_all(b"old:plain-pass\n")
        .unwrap();
    let mosquitto = have_tool("mosquitto_passwd");
    if mosquitto {
        let ok = std::process::Command::new("mosquitto_passwd")
            .arg("-b")
            .arg(&users)
            .args(["ha", "mosq-pass"])
            .status()
            .unwrap();
        assert!(ok.success());
    }
    let text = std::fs::read_to_string(&users).unwrap();
    assert!(
        text.contains("dash:$7$20000$") && !text.contains("s3cret-pass"),
        "{text}"
    );
    assert_eq!(text.matches("dash:").count(), 1, "{text}");

    let mut pty = Pty::new();
    let config = with_users_file(&pty, &users);
    let gw = start_gateway(&config);
    gw.wait_log("device online", T).await;
    assert!(can_log_in(gw.port, Some(("dash", "s3cret-pass"))).await);
    assert!(
        !can_log_in(gw.port, Some(("dash", "first-pass"))).await,
        "the old password"
    );
    assert!(!can_log_in(gw.port, Some(("dash", "s3cret-pasS"))).await);
    assert!(!can_log_in(gw.port, Some(("nobody", "s3cret-pass"))).await);
    assert!(!can_log_in(gw.port, None).await, "anonymous refused");
    assert!(
        can_log_in(gw.port, Some(("old", "plain-pass"))).await,
        "plain text still works"
    );
    if mosquitto {
        assert!(can_log_in(gw.port, Some(("ha", "mosq-pass"))).await);
        assert!(!can_log_in(gw.port, Some(("ha", "mosq-pasS"))).await);
    }
    // The logged-in client gets readings.
    reads_as(&gw, &mut pty, "dash", "s3cret-pass").await;

    let said = check_passes(&gw.config_path());
    assert!(
        said.contains(&format!("plain-text passwords (deprecated: anyone who reads the file can log in) at {}:2 (`old`)", users.display())),
        "{said}"
    );
    assert!(said.contains("serial2mqtt passwd"), "{said}");
    let logs = gw.logs();
    for secret in ["s3cret-pass", "plain-pass", "mosq-pass", "$7$"] {
        assert!(
            !logs.contains(secret) && !said.contains(secret),
            "{secret} shown"
        );
    }
    // `status` logs in with a hashed login given on the command line.
    let out = serial2mqtt_command()
        .args(["status", "--user", "dash", "--config"])
        .arg(gw.config_path())
        .env("SERIAL2MQTT_PASSWORD", "s3cret-pass")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("testgw"),
        "{out:?}"
    );
}

#[test]
fn a_malformed_users_file_names_the_line_but_not_its_content() {
    let dir = tempfile::tempdir().unwrap();
    let users = dir.path().join("broker.users");
    std::fs::write(&users, "dash:ok-pass\njust-a-password-no-colon\n").unwrap();
    let config = dir.path().join("c.yaml");
    std::fs::write(
        &config,
        format!("broker: {{users_file: {}}}\ndevices: []\n", users.display()),
    )
    .unwrap();
    let out = serial2mqtt_command()
        .arg("check")
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("broker.users:2: not a `user:password` line"),
        "{err}"
    );
    assert!(!err.contains("just-a-password"), "{err}");
}

#[tokio::test]
async fn the_local_listener_speaks_tls_with_logins_and_plain_tcp_gets_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tls_files(d, "local", &["localhost"], false);
    let users = d.join("broker.users");
    std::fs::write(&users, "dash:tls-pass\n").unwrap();
    let mut pty = Pty::new();
    let config = climate_config(&pty.path, "  stats_interval: 1s").replace(
        "broker:\n  listen: 127.0.0.1:{port}",
        &format!(
            "broker:\n  listen: 127.0.0.1:{{port}}\n  users_file: {u}\n  tls: {{cert_file: {d}/local-server.pem, key_file: {d}/local-server.key}}",
            u = users.display(),
            d = d.display()
        ),
    );
    assert!(config.contains("cert_file"));
    let gw = start_gateway(&config);
    gw.wait_log("device online", T).await;

    // Plain MQTT on the TLS port gets no CONNACK.
    assert!(!can_log_in(gw.port, Some(("dash", "tls-pass"))).await);

    let tls = serial2mqtt::tls::client_config(Some(&serial2mqtt::config::schema::Tls {
        ca_file: Some(d.join("local-ca.pem")),
        cert_file: None,
        key_file: None,
    }))
    .unwrap();
    let mut opts = rumqttc::MqttOptions::new("tls-sub", "localhost", gw.port);
    opts.set_credentials("dash", "tls-pass");
    opts.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(tls),
    ));
    let mut sub = Subscriber::connect_with(opts, &["sensors/#"], rumqttc::QoS::AtMostOnce).await;
    pty.write(b"T=24.5;H=44\n").await;
    assert_eq!(sub.next(T).await.payload, "24.5");

    // `serial2mqtt status` gets through the same TLS listener and login.
    let status = serial2mqtt_command()
        .args(["status", "--host", "localhost", "--ca-file"])
        .arg(d.join("local-ca.pem"))
        .arg("--config")
        .arg(gw.config_path())
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&status.stdout);
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert!(out.contains("greenhouse  online"), "{out}");
}

#[test]
fn a_broker_key_that_does_not_load_is_a_check_error() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    tls_files(d, "x", &["localhost"], false);
    std::fs::write(d.join("bad.key"), "not a key\n").unwrap();
    let config = d.join("c.yaml");
    std::fs::write(
        &config,
        format!(
            "broker: {{tls: {{cert_file: {d}/x-server.pem, key_file: {d}/bad.key}}}}\ndevices: []\n",
            d = d.display()
        ),
    )
    .unwrap();
    let out = serial2mqtt_command()
        .arg("check")
        .arg(&config)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        err.contains("broker.tls") && err.contains("bad.key"),
        "{err}"
    );
}

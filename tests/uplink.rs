//! The uplink through the store-and-forward queue, against a real upstream broker (mosquitto)
//! that the tests stop and restart, and a gateway killed with SIGKILL.

mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::mosquitto::spawn_mosquitto;
use common::proxy::Proxy;
use common::upstream::*;
use common::*;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};

#[tokio::test]
async fn an_upstream_outage_loses_nothing_and_the_backlog_drains_in_order() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    outage(broker.port, "").await;
}

/// The same over MQTT 5 (`uplink.protocol: 5`, rumqttc's v5 client).
#[tokio::test]
async fn an_outage_over_mqtt5_loses_nothing_and_the_backlog_drains_in_order() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    outage(broker.port, "  protocol: 5").await;
}

/// The same against a rumqttd upstream (another serial2mqtt with no devices: its embedded
/// broker), so the outage path is proven where mosquitto is not installed too.
#[tokio::test]
async fn an_outage_against_a_rumqttd_upstream_loses_nothing_either() {
    let upstream = start_gateway(
        "gateway: {id: upstream, state_dir: \"{dir}/state\"}\nbroker: {listen: \"127.0.0.1:{port}\"}\ndevices: []\n",
    );
    outage(upstream.port, "").await;
}

/// The same over MQTT-over-WebSockets (`ws://`, mosquitto's websockets listener): for networks
/// that only let HTTP(S) out.
#[tokio::test]
async fn an_outage_over_websockets_loses_nothing_and_the_backlog_drains_in_order() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    outage_via(broker.port, broker.ws_port, "", true).await;
}

/// Frames keep coming during a 1 s network outage; afterwards every one arrives, in order.
async fn outage(broker_port: u16, uplink_extra: &str) {
    outage_via(broker_port, broker_port, uplink_extra, false).await;
}

/// [`outage`] with the uplink to `uplink_port` (over WebSockets when `ws`), the subscriber on
/// `broker_port`.
async fn outage_via(broker_port: u16, uplink_port: u16, uplink_extra: &str, ws: bool) {
    let upstream = Upstream::subscribe(broker_port, "sites/#").await;
    let proxy = Proxy::start(uplink_port).await;
    let state = tempfile::tempdir().unwrap();
    let mut pty = Pty::new();
    let mut config = uplink_config(&pty.path, proxy.port, state.path(), uplink_extra);
    if ws {
        config = over_websockets(&config);
    }
    let gw = start_gateway(&config);
    gw.wait_log("uplink connected", T).await;

    write_frames(&mut pty, 1..=50, Duration::from_millis(5)).await;
    upstream.wait_all(TOPIC, 50, T).await;

    // Network down: frames keep coming and are queued.
    proxy.down();
    gw.wait_log("uplink down", T).await;
    write_frames(&mut pty, 51..=300, Duration::from_millis(2)).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    proxy.up().await;

    let got = upstream.wait_all(TOPIC, 300, Duration::from_secs(30)).await;
    assert_in_order(&got);
    if ws {
        let url = format!("broker=ws://127.0.0.1:{}/mqtt", proxy.port);
        assert!(gw.logs().contains(&url), "{url} in {}", gw.logs());
    }
    assert!(
        gw.logs().matches("uplink connected").count() >= 2,
        "{}",
        gw.logs()
    );
}

/// After a long outage the backoff has grown to seconds; the uplink still delivers within
/// about a second of the network's return, because it checks the broker's port while it waits.
#[tokio::test]
async fn after_a_long_outage_delivery_resumes_about_a_second_after_the_network_returns() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let upstream = Upstream::subscribe(broker.port, "sites/#").await;
    let proxy = Proxy::start(broker.port).await;
    let state = tempfile::tempdir().unwrap();
    let mut pty = Pty::new();
    let gw = start_gateway(&uplink_config(&pty.path, proxy.port, state.path(), ""));
    gw.wait_log("uplink connected", T).await;

    proxy.down();
    gw.wait_log("uplink down", T).await;
    write_frames(&mut pty, 1..=20, Duration::from_millis(5)).await;
    // Attempts after about 1, 2, 4 and 8 s fail: the next one is 8 to 16 s away.
    tokio::time::sleep(Duration::from_secs(16)).await;
    proxy.up().await;
    let back = Instant::now();
    upstream.wait_all(TOPIC, 20, Duration::from_secs(20)).await;
    let took = back.elapsed();
    assert!(
        gw.logs().contains("the broker answers again; reconnecting"),
        "{}",
        gw.logs()
    );
    // 250 ms probe period + up to 500 ms spread + connect; the backoff alone would wait seconds.
    assert!(
        took < Duration::from_secs(3),
        "took {took:?}: {}",
        gw.logs()
    );
}

/// A fleet whose broker comes back does not reconnect at one instant: each gateway waits a
/// random part of `reconnect_spread` after its probe finds the port open again, and all are
/// back within about a second (`cargo bench --bench reconnect` measures 100 of them).
#[tokio::test]
async fn a_fleet_spreads_its_reconnects_when_the_broker_comes_back() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let proxy = Proxy::start(broker.port).await;
    const FLEET: usize = 12;
    let gateways: Vec<Gateway> = (0..FLEET)
        .map(|i| {
            start_gateway(&format!(
                "gateway: {{id: fleet{i}, state_dir: \"{{dir}}/state\", stats_interval: 0s}}\nbroker: {{listen: \"127.0.0.1:{{port}}\"}}\nuplink: {{url: \"mqtt://127.0.0.1:{}\"}}\ndevices: []\n",
                proxy.port
            ))
        })
        .collect();
    for gw in &gateways {
        gw.wait_log("uplink connected", T).await;
    }
    proxy.down();
    for gw in &gateways {
        gw.wait_log("uplink down", T).await;
    }
    tokio::time::sleep(Duration::from_secs(5)).await;
    let before = proxy.connects().len();
    proxy.up().await;
    let back = Instant::now();
    let deadline = back + Duration::from_secs(20);
    while proxy.connects().len() < before + FLEET {
        assert!(
            Instant::now() < deadline,
            "not all reconnected: {:?}",
            proxy.connects().len() - before
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let offsets: Vec<Duration> = proxy.connects()[before..]
        .iter()
        .map(|t| t.saturating_duration_since(back))
        .collect();
    let first = offsets.iter().min().copied().unwrap_or_default();
    let last = offsets.iter().max().copied().unwrap_or_default();
    // Spread: not one burst (12 uniform draws over 500 ms all within 50 ms: about 1e-11).
    assert!(last - first > Duration::from_millis(50), "{offsets:?}");
    // And soon: probe period + spread + connect, far below the backoff of a 5 s outage.
    assert!(last < Duration::from_secs(3), "{offsets:?}");
}

#[tokio::test]
async fn a_gateway_killed_with_sigkill_during_an_outage_loses_nothing_once_flushed() {
    sigkill_during_an_outage("").await;
}

#[tokio::test]
async fn a_sigkill_during_an_outage_loses_nothing_over_mqtt5_either() {
    sigkill_during_an_outage("  protocol: 5").await;
}

async fn sigkill_during_an_outage(uplink_extra: &str) {
    sigkill_during_an_outage_via(uplink_extra, false).await;
}

#[tokio::test]
async fn a_sigkill_during_an_outage_over_websockets_loses_nothing_either() {
    sigkill_during_an_outage_via("", true).await;
}

async fn sigkill_during_an_outage_via(uplink_extra: &str, ws: bool) {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let upstream = Upstream::subscribe(broker.port, "sites/#").await;
    let proxy = Proxy::start(if ws { broker.ws_port } else { broker.port }).await;
    let state = tempfile::tempdir().unwrap();
    let mut pty = Pty::new();
    let mut config = uplink_config(&pty.path, proxy.port, state.path(), uplink_extra);
    if ws {
        config = over_websockets(&config);
    }
    let mut gw = start_gateway(&config);
    gw.wait_log("uplink connected", T).await;
    write_frames(&mut pty, 1..=20, Duration::from_millis(5)).await;
    upstream.wait_all(TOPIC, 20, T).await;

    proxy.down();
    gw.wait_log("uplink down", T).await;
    write_frames(&mut pty, 21..=200, Duration::from_millis(1)).await;
    // Wait past the flush interval (50 ms) since the last frame, then kill -9.
    tokio::time::sleep(Duration::from_millis(500)).await;
    gw.child.kill().unwrap();
    gw.child.wait().unwrap();

    // A torn write on top, as if the power had failed mid-append.
    let queue_dir = state.path().join("queue");
    let (_, last) = std::fs::read_dir(&queue_dir)
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "seg"))
        .map(|p| (p.clone(), p))
        .max()
        .unwrap();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&last)
        .unwrap();
    std::io::Write::write_all(&mut f, &[0x42; 37]).unwrap();
    drop(f);

    proxy.up().await;
    let gw2 = start_gateway(&config);
    gw2.wait_log("store-and-forward queue open", T).await;
    gw2.wait_log("cut off", T).await;
    let got = upstream.wait_all(TOPIC, 200, Duration::from_secs(30)).await;
    assert_in_order(&got);
}

#[tokio::test]
async fn local_clients_messages_are_bridged_once_and_the_gateways_own_are_not_doubled() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let upstream = Upstream::subscribe(broker.port, "sites/#").await;
    let state = tempfile::tempdir().unwrap();
    let mut pty = Pty::new();
    let gw = start_gateway(&uplink_config(&pty.path, broker.port, state.path(), ""));
    gw.wait_log("uplink connected", T).await;

    // A local client publishes into the embedded broker.
    let opts = MqttOptions::new("local-app", "127.0.0.1", gw.port);
    let (client, mut events) = AsyncClient::new(opts, 100);
    tokio::spawn(async move { while events.poll().await.is_ok() {} });
    for i in 1..=30u64 {
        client
            .publish("sensors/app/value", QoS::AtLeastOnce, false, i.to_string())
            .await
            .unwrap();
    }
    client
        .publish("other/not-forwarded", QoS::AtLeastOnce, false, "x")
        .await
        .unwrap();
    write_frames(&mut pty, 1..=30, Duration::from_millis(3)).await;

    let app = upstream
        .wait_all("sites/gw1/sensors/app/value", 30, T)
        .await;
    let own = upstream.wait_all(TOPIC, 30, T).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        upstream.payloads("sites/gw1/sensors/app/value").len(),
        30,
        "bridged once: {app:?}"
    );
    assert_eq!(
        upstream.payloads(TOPIC).len(),
        30,
        "own messages once: {own:?}"
    );
    assert!(upstream
        .payloads("sites/gw1/other/not-forwarded")
        .is_empty());
}

#[tokio::test]
async fn status_is_online_while_connected_and_offline_after_a_graceful_stop() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let state = tempfile::tempdir().unwrap();
    let pty = Pty::new();
    let mut gw = start_gateway(&uplink_config(&pty.path, broker.port, state.path(), ""));
    gw.wait_log("uplink connected", T).await;
    let status = Upstream::subscribe(broker.port, "serial2mqtt/gw1/status").await;
    let deadline = Instant::now() + T;
    while !status
        .got
        .lock()
        .unwrap()
        .iter()
        .any(|(_, p)| p == "online")
    {
        assert!(Instant::now() < deadline, "no retained online");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let code = tokio::task::spawn_blocking(move || gw.terminate())
        .await
        .unwrap();
    assert!(code.success());
    let deadline = Instant::now() + T;
    while status.got.lock().unwrap().last().map(|(_, p)| p.as_str()) != Some("offline") {
        assert!(
            Instant::now() < deadline,
            "no offline: {:?}",
            status.got.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

const T: Duration = Duration::from_secs(10);

#[tokio::test]
async fn mutual_tls_and_a_password_against_mosquitto() {
    if !have_tool("mosquitto") || !have_tool("mosquitto_passwd") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::certs::certificates(d, "", &["client"]);
    let ok = Command::new("mosquitto_passwd")
        .args(["-c", "-b"])
        .arg(d.join("passwd"))
        .args(["gw-17", "s3cret"])
        .status()
        .unwrap();
    assert!(ok.success());
    let port = free_port();
    let mut broker = spawn_mosquitto(
        &d.join("mosquitto.conf"),
        &format!(
            "listener {port} 127.0.0.1\ncafile {d}/ca.pem\ncertfile {d}/server.pem\nkeyfile {d}/server.key\nrequire_certificate true\nallow_anonymous false\npassword_file {d}/passwd\nuser root\n",
            d = d.display()
        ),
        port,
    );
    std::fs::write(d.join("uplink.secret"), "s3cret\n").unwrap();
    let tls = |password: &str| {
        std::fs::write(d.join("uplink.secret"), format!("{password}\n")).unwrap();
        format!(
            "  username: gw-17\n  password_file: {d}/uplink.secret\n  tls: {{ca_file: {d}/ca.pem, cert_file: {d}/client.pem, key_file: {d}/client.key}}\n",
            d = d.display()
        )
    };
    // A checker subscribed upstream over the same TLS, with the same credentials.
    let mut opts = MqttOptions::new("checker", "localhost", port);
    opts.set_credentials("gw-17", "s3cret");
    let config = serial2mqtt::tls::client_config(Some(&serial2mqtt::config::schema::Tls {
        ca_file: Some(d.join("ca.pem")),
        cert_file: Some(d.join("client.pem")),
        key_file: Some(d.join("client.key")),
    }))
    .unwrap();
    opts.set_transport(rumqttc::Transport::tls_with_config(
        rumqttc::TlsConfiguration::Rustls(config),
    ));
    let (client, mut events) = AsyncClient::new(opts, 100);
    client.subscribe("sites/#", QoS::AtLeastOnce).await.unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let got2 = Arc::clone(&got);
    tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => got2
                    .lock()
                    .unwrap()
                    .push(String::from_utf8_lossy(&p.payload).into_owned()),
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let state = tempfile::tempdir().unwrap();
    let mut pty = Pty::new();

    // A wrong password: one clear line, and the readings wait in the queue.
    let cfg = uplink_config(&pty.path, port, state.path(), &tls("wrong"))
        .replace("mqtt://127.0.0.1", "mqtts://localhost");
    let gw = start_gateway(&cfg);
    gw.wait_log("the broker refused the connection", T).await;
    write_frames(&mut pty, 1..=10, Duration::from_millis(5)).await;
    assert!(
        !gw.logs().contains("s3cret") && !gw.logs().contains("wrong"),
        "no secret in the logs"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(gw);

    // The right one: connected over mutual TLS, and the readings queued meanwhile arrive.
    let cfg = uplink_config(&pty.path, port, state.path(), &tls("s3cret"))
        .replace("mqtt://127.0.0.1", "mqtts://localhost");
    let gw = start_gateway(&cfg);
    gw.wait_log("uplink connected", T).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    write_frames(&mut pty, 11..=12, Duration::ZERO).await;
    let deadline = Instant::now() + T;
    loop {
        let g = got.lock().unwrap().clone();
        if (1..=12).all(|i| g.contains(&i.to_string())) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "not everything over TLS: {g:?}\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!gw.logs().contains("s3cret"));
    let _ = broker.kill();
    let _ = broker.wait();
}

#[tokio::test]
async fn a_full_queue_drops_the_oldest_counts_them_and_delivers_the_newest() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let upstream = Upstream::subscribe(broker.port, "sites/#").await;
    let proxy = Proxy::start(broker.port).await;
    let state = tempfile::tempdir().unwrap();
    let mut pty = Pty::new();
    let config = uplink_config(&pty.path, proxy.port, state.path(), "")
        .replace(
            "queue: {flush_interval: 50ms}",
            "queue: {flush_interval: 50ms, max_bytes: 128KiB, segment_bytes: 64KiB}",
        )
        .replace(
            "gateway: {id: gw1,",
            "gateway: {id: gw1, stats_interval: 300ms,",
        );
    let gw = start_gateway(&config);
    gw.wait_log("uplink connected", T).await;
    proxy.down();
    gw.wait_log("uplink down", T).await;
    // ~60 bytes a record: 5,000 records are over twice the 128 KiB cap.
    let n = 5000u64;
    let mut batch = String::new();
    for i in 1..=n {
        batch.push_str(&format!("seq={i}\n"));
    }
    let mut local = Subscriber::connect(gw.port, &["serial2mqtt/gw1/stats"], QoS::AtMostOnce).await;
    pty.write(batch.as_bytes()).await;
    gw.wait_log("store-and-forward queue full", T).await;
    // Every frame taken (and stored, dropping the oldest) before the uplink comes back: a
    // drop while it is sending cuts a gap in the middle, rightly, which is not this test's case.
    stats_until(&mut local, "gw1", |v| {
        v["devices"]["d"]["messages"].as_u64() >= Some(n)
    })
    .await;
    proxy.up().await;

    // The newest arrive; the oldest were dropped.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = upstream.payloads(TOPIC);
        if got.contains(&n) {
            assert_in_order(&got);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "newest never arrived; got {}, max {:?}\n{}\nMOSQUITTO\n{}",
            got.len(),
            got.iter().max(),
            gw.logs(),
            std::fs::read_to_string(broker.dir.path().join("mosquitto.log")).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let delivered: BTreeSet<u64> = upstream.payloads(TOPIC).into_iter().collect();
    let oldest_kept = *delivered.first().unwrap();
    assert!(oldest_kept > 1, "the cap must have dropped the oldest");
    let expected: BTreeSet<u64> = (oldest_kept..=n).collect();
    assert!(
        delivered == expected,
        "exactly the oldest are missing: {} of {} delivered\n{}",
        delivered.len(),
        expected.len(),
        gw.logs()
    );
    let missing = oldest_kept - 1;
    // The stats message reports exactly the drops. It is read from the local broker: only the
    // readings go through the queue, so nothing is stored (and nothing more dropped) once the
    // last frame is taken, and the readings upstream are exactly the newest.
    stats_until(&mut local, "gw1", |v| {
        v["queue"]["dropped"]["full"].as_u64() == Some(missing)
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_broker_fails_over_to_the_next_url() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let upstream = Upstream::subscribe(broker.port, "sites/#").await;
    let dead = free_port();
    let state = tempfile::tempdir().unwrap();
    let mut pty = Pty::new();
    let config = uplink_config(&pty.path, broker.port, state.path(), "").replace(
        &format!("url: mqtt://127.0.0.1:{}", broker.port),
        &format!(
            "url: [\"mqtt://127.0.0.1:{dead}\", \"mqtt://127.0.0.1:{}\"]",
            broker.port
        ),
    );
    let gw = start_gateway(&config);
    gw.wait_log(&format!("broker=mqtt://127.0.0.1:{dead}"), T)
        .await;
    gw.wait_log(
        &format!("uplink connected broker=mqtt://127.0.0.1:{}", broker.port),
        Duration::from_secs(15),
    )
    .await;
    write_frames(&mut pty, 1..=10, Duration::from_millis(2)).await;
    upstream.wait_all(TOPIC, 10, T).await;
}

#[tokio::test]
async fn max_rate_paces_the_replay_of_a_backlog() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let upstream = Upstream::subscribe(broker.port, "sites/#").await;
    let proxy = Proxy::start(broker.port).await;
    let state = tempfile::tempdir().unwrap();
    let mut pty = Pty::new();
    let gw = start_gateway(&uplink_config(
        &pty.path,
        proxy.port,
        state.path(),
        "  max_rate: 200",
    ));
    gw.wait_log("uplink connected", T).await;
    proxy.down();
    gw.wait_log("uplink down", T).await;
    write_frames(&mut pty, 1..=400, Duration::ZERO).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.up().await;
    // Time from the first replayed message to the last, so the reconnect delay does not count.
    let deadline = Instant::now() + Duration::from_secs(20);
    while upstream.payloads(TOPIC).is_empty() {
        assert!(Instant::now() < deadline, "nothing replayed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let first = Instant::now();
    upstream.wait_all(TOPIC, 400, Duration::from_secs(20)).await;
    let took = first.elapsed();
    // 400 messages at 200/s take about 2 s (the first window of 100 goes at once); unpaced, a
    // few milliseconds.
    assert!(
        took >= Duration::from_millis(1200),
        "replayed in {took:?}: not paced"
    );
}

/// MQTT 5: every forwarded message carries the gateway id and the queue's sequence number as
/// user properties (consecutive, so a consumer can drop replayed duplicates and see gaps), and
/// the configured message expiry.
#[tokio::test]
async fn mqtt5_messages_carry_the_gateway_and_a_consecutive_sequence_number() {
    use rumqttc::v5::mqttbytes::v5::Packet as P5;
    use rumqttc::v5::mqttbytes::QoS as Q5;
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let (sub, mut events) = rumqttc::v5::AsyncClient::new(
        rumqttc::v5::MqttOptions::new("v5-consumer", "127.0.0.1", broker.port),
        100,
    );
    sub.subscribe("sites/#", Q5::AtLeastOnce).await.unwrap();
    let got = Arc::new(Mutex::new(Vec::new()));
    let got2 = Arc::clone(&got);
    let (subacked_tx, subacked) = tokio::sync::oneshot::channel();
    let mut subacked_tx = Some(subacked_tx);
    tokio::spawn(async move {
        loop {
            match events.poll().await {
                Ok(rumqttc::v5::Event::Incoming(P5::Publish(p))) => {
                    let props = p.properties.unwrap_or_default();
                    let user: std::collections::BTreeMap<String, String> =
                        props.user_properties.into_iter().collect();
                    got2.lock().unwrap().push((
                        String::from_utf8_lossy(&p.topic).into_owned(),
                        String::from_utf8_lossy(&p.payload).into_owned(),
                        user,
                        props.message_expiry_interval,
                    ));
                }
                Ok(rumqttc::v5::Event::Incoming(P5::SubAck(_))) => {
                    if let Some(tx) = subacked_tx.take() {
                        let _ = tx.send(());
                    }
                }
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    subacked.await.unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut pty = Pty::new();
    let gw = start_gateway(&uplink_config(
        &pty.path,
        broker.port,
        state.path(),
        "  protocol: 5\n  message_expiry: 1h",
    ));
    gw.wait_log("uplink connected", T).await;
    write_frames(&mut pty, 1..=30, Duration::from_millis(2)).await;
    let deadline = Instant::now() + T;
    let readings = loop {
        let readings: Vec<_> = got
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, ..)| t == TOPIC)
            .cloned()
            .collect();
        if readings.len() >= 30 {
            break readings;
        }
        assert!(
            Instant::now() < deadline,
            "only {} of 30 arrived",
            readings.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let seqs: Vec<u64> = readings
        .iter()
        .map(|(_, _, user, _)| {
            assert_eq!(
                user.get("gateway").map(String::as_str),
                Some("gw1"),
                "{user:?}"
            );
            user["seq"].parse().expect("seq is a number")
        })
        .collect();
    // The readings are queue records in order; the device's retained `online` took a number
    // before them, so they are consecutive from there.
    let first = seqs[0];
    assert_eq!(seqs, (first..first + 30).collect::<Vec<u64>>());
    let payloads: Vec<&str> = readings.iter().map(|(_, p, ..)| p.as_str()).collect();
    assert_eq!(payloads[0], "1");
    for (_, _, _, expiry) in &readings {
        let e = expiry.expect("message expiry set");
        assert!(e > 3500 && e <= 3600, "expiry {e}");
    }
}

/// MQTT 5: a broker that refuses a message (here: an ACL denies the topic; PUBACK reason
/// "not authorized") does not make the gateway drop it. It stays in the queue, the refusal is
/// logged, and it is delivered once the broker takes it. (Over 3.1.1 mosquitto acknowledges a
/// denied publish like any other and drops it: nobody can tell.)
#[tokio::test]
async fn mqtt5_a_message_the_broker_refuses_stays_queued_until_it_is_taken() {
    if !have_tool("mosquitto") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let acl = dir.path().join("acl");
    std::fs::write(&acl, "topic readwrite serial2mqtt/#\ntopic read sites/#\n").unwrap();
    let base = format!("listener {port} 127.0.0.1\nallow_anonymous true\nuser root\n");
    let conf = dir.path().join("mosquitto.conf");
    let mut strict = spawn_mosquitto(&conf, &format!("{base}acl_file {}\n", acl.display()), port);

    let state = tempfile::tempdir().unwrap();
    let mut pty = Pty::new();
    let gw = start_gateway(&uplink_config(
        &pty.path,
        port,
        state.path(),
        "  protocol: 5",
    ));
    gw.wait_log("uplink connected", T).await;
    write_frames(&mut pty, 1..=5, Duration::from_millis(5)).await;
    gw.wait_log("the broker refused a message (NotAuthorized)", T)
        .await;

    // The broker's rules change (a restart with the topic allowed): everything arrives, in order.
    let _ = strict.kill();
    let _ = strict.wait();
    let mut open = spawn_mosquitto(&conf, &base, port);
    let upstream = Upstream::subscribe(port, "sites/#").await;
    let got = upstream.wait_all(TOPIC, 5, Duration::from_secs(30)).await;
    assert_in_order(&got);
    let _ = open.kill();
    let _ = open.wait();
}

/// A mosquitto with a plain listener and a TLS one (the certificates of [`common::certs::certificates`] in `d`;
/// `tls_extra` are more lines for the TLS listener, `extra` for the broker): the child and
/// both ports, plain first.
fn tls_mosquitto(d: &Path, tls_extra: &str, extra: &str) -> (std::process::Child, u16, u16) {
    common::certs::certificates(d, "", &["client"]);
    let (plain, tls) = (free_port(), free_port());
    let broker = spawn_mosquitto(
        &d.join("mosquitto.conf"),
        &format!(
            "listener {plain} 127.0.0.1\nlistener {tls} 127.0.0.1\n{tls_extra}certfile {d}/server.pem\nkeyfile {d}/server.key\nallow_anonymous true\nuser root\n{extra}",
            d = d.display()
        ),
        plain,
    );
    (broker, plain, tls)
}

/// `wss://`: MQTT over WebSockets over TLS, to mosquitto's TLS websockets listener, with the
/// uplink's CA file.
#[tokio::test]
async fn the_uplink_speaks_mqtt_over_websockets_over_tls() {
    if !have_tool("mosquitto") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (mut broker, plain, wss) = tls_mosquitto(d, "protocol websockets\n", "");
    let upstream = Upstream::subscribe(plain, "sites/#").await;
    let state = tempfile::tempdir().unwrap();
    let mut pty = Pty::new();
    let cfg = uplink_config(
        &pty.path,
        wss,
        state.path(),
        &format!("  tls: {{ca_file: {}/ca.pem}}", d.display()),
    )
    .replace("mqtt://127.0.0.1", "wss://localhost");
    let gw = start_gateway(&cfg);
    gw.wait_log("uplink connected", T).await;
    assert!(
        gw.logs()
            .contains(&format!("broker=wss://localhost:{wss}/mqtt")),
        "{}",
        gw.logs()
    );
    write_frames(&mut pty, 1..=20, Duration::from_millis(5)).await;
    let got = upstream.wait_all(TOPIC, 20, T).await;
    assert_in_order(&got);
    let _ = broker.kill();
    let _ = broker.wait();
}

/// `profile: aws_iot`: a message over AWS IoT's 128 KiB payload limit is skipped and counted
/// instead of being sent (a broker that enforces the limit, here mosquitto's
/// `max_packet_size`, drops the connection, and the same message would come back after each
/// reconnect, holding up the queue forever); the messages after it flow.
#[tokio::test]
async fn a_profile_skips_what_its_broker_would_refuse_and_the_rest_flows() {
    if !have_tool("mosquitto") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut broker = spawn_mosquitto(
        &dir.path().join("mosquitto.conf"),
        &format!(
            "listener {port} 127.0.0.1\nallow_anonymous true\nuser root\nmax_packet_size 132000\n"
        ),
        port,
    );
    let upstream = Upstream::subscribe(port, "sites/#").await;
    let state = tempfile::tempdir().unwrap();
    let mut pty = Pty::new();
    let config = uplink_config(&pty.path, port, state.path(), "  profile: aws_iot")
        .replace(
            "  - {name: d, port:",
            "  - {name: d, max_frame: 262144, rules: [seq, big], port:",
        )
        .replace(", rules: [seq]}", "}")
        .replace(
            "rules:\n  seq:",
            "rules:\n  big:\n    match: '^big=(?P<v>x+)$'\n    publish: [{topic: \"sensors/{device}/seq\", payload: \"{v}\", qos: 1}]\n  seq:",
        );
    let gw = start_gateway(&config);
    gw.wait_log("uplink connected", T).await;
    write_frames(&mut pty, 1..=5, Duration::from_millis(5)).await;
    let big = format!("big={}\n", "x".repeat(130 * 1024));
    pty.write(big.as_bytes()).await;
    write_frames(&mut pty, 6..=10, Duration::from_millis(5)).await;
    let got = upstream.wait_all(TOPIC, 10, T).await;
    assert_in_order(&got);
    gw.wait_log(
        "a message is not sent: its payload (133120 bytes) is over aws_iot's 131072",
        T,
    )
    .await;
    assert_eq!(
        gw.logs().matches("uplink connected").count(),
        1,
        "never disconnected: {}",
        gw.logs()
    );
    let _ = broker.kill();
    let _ = broker.wait();
}

/// `profile: azure_iot_hub` against a mosquitto that mimics IoT Hub: TLS only, and an ACL that
/// lets the device's IoT Hub user name write nothing but `devices/dev1/messages/events/#` (a
/// publish elsewhere is dropped). The readings arrive there with their topic as a property;
/// the user name is the one IoT Hub expects (mosquitto's log shows it).
#[tokio::test]
async fn the_azure_profile_speaks_iot_hubs_topics_and_user_name() {
    if !have_tool("mosquitto") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let user = "localhost/dev1/?api-version=2021-04-12";
    std::fs::write(
        d.join("acl"),
        format!("user {user}\ntopic write devices/dev1/messages/events/#\ntopic read devices/dev1/messages/devicebound/#\nuser checker\ntopic read #\n"),
    )
    .unwrap();
    let (mut broker, plain, tls_port) = tls_mosquitto(
        d,
        "",
        &format!(
            "acl_file {d}/acl\nlog_dest file {d}/mosquitto.log\nlog_type all\n",
            d = d.display()
        ),
    );
    // The checker logs in as `checker` (it may read everything).
    let mut opts = MqttOptions::new("checker", "127.0.0.1", plain);
    opts.set_credentials("checker", "x");
    let (client, mut events) = AsyncClient::new(opts, 100);
    client.subscribe("#", QoS::AtLeastOnce).await.unwrap();
    let got: Arc<Mutex<Vec<(String, String, bool)>>> = Arc::default();
    let g = Arc::clone(&got);
    tokio::spawn(async move {
        let _client = client;
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => g.lock().unwrap().push((
                    p.topic.clone(),
                    String::from_utf8_lossy(&p.payload).into_owned(),
                    p.retain,
                )),
                Ok(_) => {}
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    std::fs::write(
        d.join("azure.connection"),
        "HostName=localhost;DeviceId=dev1;SharedAccessKey=c2VjcmV0LWtleS1mb3ItdGVzdHM=\n",
    )
    .unwrap();
    let state = tempfile::tempdir().unwrap();
    let mut pty = Pty::new();
    let config = uplink_config(
        &pty.path,
        tls_port,
        state.path(),
        &format!(
            "  profile: azure_iot_hub\n  connection_string_file: {d}/azure.connection\n  tls: {{ca_file: {d}/ca.pem}}",
            d = d.display()
        ),
    )
    .replace("mqtt://127.0.0.1", "mqtts://localhost");
    let gw = start_gateway(&config);
    gw.wait_log("uplink connected", T).await;
    write_frames(&mut pty, 1..=5, Duration::from_millis(5)).await;

    let events_topic = "devices/dev1/messages/events/topic=sites%2Fgw1%2Fsensors%2Fd%2Fseq";
    let deadline = Instant::now() + T;
    loop {
        let readings: Vec<String> = got
            .lock()
            .unwrap()
            .iter()
            .filter(|(t, _, _)| t == events_topic)
            .map(|(_, p, _)| p.clone())
            .collect();
        if readings.len() == 5 {
            assert_eq!(readings, ["1", "2", "3", "4", "5"]);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{:?}\n{}",
            got.lock().unwrap(),
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let all = got.lock().unwrap().clone();
    assert!(
        all.iter()
            .all(|(t, _, retain)| t.starts_with("devices/dev1/messages/events/") && !retain),
        "only IoT Hub's telemetry topic, never retained: {all:?}"
    );
    assert!(
        all.iter().any(|(t, p, _)| t
            == "devices/dev1/messages/events/topic=serial2mqtt%2Fgw1%2Fstatus"
            && p == "online"),
        "{all:?}"
    );
    let log = std::fs::read_to_string(d.join("mosquitto.log")).unwrap();
    assert!(
        log.contains("as dev1 (") && log.contains(&format!("u'{user}'")),
        "{log}"
    );
    assert!(!gw.logs().contains("SharedAccessSignature") && !gw.logs().contains("c2Vj"));
    let _ = broker.kill();
    let _ = broker.wait();
}

/// With the uplink up and acknowledging within the flush interval, readings go upstream at
/// once and are never written: the queue's wear counter does not move and its segment holds
/// nothing but its header. With the uplink down they are written (group commits), and counted.
#[tokio::test]
async fn readings_acknowledged_in_time_never_touch_the_disk() {
    let Some(broker) = Mosquitto::start() else {
        return;
    };
    let upstream = Upstream::subscribe(broker.port, "sites/#").await;
    let proxy = Proxy::start(broker.port).await;
    let state = tempfile::tempdir().unwrap();
    let mut pty = Pty::new();
    let config = uplink_config(&pty.path, proxy.port, state.path(), "")
        .replace("{id: gw1,", "{id: gw1, stats_interval: 1s,")
        .replace("flush_interval: 50ms", "flush_interval: 1s");
    let gw = start_gateway(&config);
    let mut stats = Subscriber::connect(gw.port, &["serial2mqtt/gw1/stats"], QoS::AtMostOnce).await;
    gw.wait_log("uplink connected", T).await;
    let written = |v: &serde_json::Value| v["queue"]["written_bytes"].as_u64().unwrap();
    let start = written(&stats_until(&mut stats, "gw1", |v| v["queue"].is_object()).await);

    write_frames(&mut pty, 1..=200, Duration::from_millis(5)).await;
    upstream.wait_all(TOPIC, 200, T).await;
    let v = stats_until(&mut stats, "gw1", |v| {
        v["uplink"]["delivered"].as_u64() >= Some(200)
    })
    .await;
    assert_eq!(
        written(&v),
        start,
        "nothing written for readings acknowledged in time: {v}"
    );
    let segment_bytes = || -> u64 {
        std::fs::read_dir(state.path().join("queue"))
            .unwrap()
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "seg"))
            .map(|e| e.metadata().unwrap().len())
            .sum()
    };
    assert_eq!(segment_bytes(), 8, "only the segment's header is on disk");

    proxy.down();
    gw.wait_log("uplink down", T).await;
    write_frames(&mut pty, 201..=260, Duration::from_millis(5)).await;
    let v = stats_until(&mut stats, "gw1", |v| {
        v["queue"]["depth"].as_u64() >= Some(60) && written(v) > start
    })
    .await;
    assert!(segment_bytes() > 8, "{v}");
    proxy.up().await;
    let got = upstream.wait_all(TOPIC, 260, Duration::from_secs(30)).await;
    assert_in_order(&got);
}

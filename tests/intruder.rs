//! The local broker against an intruder on the LAN, through the real binary over real sockets
//! (raw MQTT packets, rumqttc, paho, mosquitto_passwd's files): connection caps before and after
//! CONNECT, per address and in total, with a clear CONNACK when full; a subscriber whose filter
//! holds messages it may not read stays connected; retained messages, topic names and persistent
//! sessions are bounded; a will is checked against the rules in force when it is sent; an
//! unknown user name costs what a known one costs; MQTT 5 and a second CONNECT are answered as
//! the specs say.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use rumqttc::mqttbytes::v4::{Connect, LastWill, Packet as Raw};
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const T: Duration = Duration::from_secs(10);

/// A gateway with one climate sensor and `broker_extra` under `broker:`, listening on every
/// address.
fn config(pty: &Path, broker_extra: &str) -> String {
    format!(
        r#"
gateway: {{id: gw, state_dir: "{{dir}}/state"}}
broker:
  listen: "0.0.0.0:{{port}}"
  connect_timeout: 1s
{broker_extra}
devices:
  - name: climate
    port: {pty}
    rules: [climate]
rules:
  climate:
    match: '^T=(?P<temp>-?\d+(?:\.\d+)?);H=(?P<hum>\d+)$'
    publish:
      - {{topic: "sensors/{{device}}/temperature", payload: "{{temp}}", qos: 1}}
      - {{topic: "sensors/{{device}}/humidity", payload: "{{hum}}", qos: 1}}
"#,
        pty = pty.display()
    )
}

/// A raw TCP connection to the gateway's broker from `from`.
async fn raw_from(from: IpAddr, port: u16) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::new(from, 0)).unwrap();
    socket
        .connect(SocketAddr::new(from, port))
        .await
        .expect("connect")
}

fn encode(p: Raw) -> BytesMut {
    let mut out = BytesMut::new();
    p.write(&mut out, 1 << 20).unwrap();
    out
}

/// What the broker sends first (up to `n` bytes, or less if it closes), within `within`.
async fn first_bytes(tcp: &mut TcpStream, n: usize, within: Duration) -> Vec<u8> {
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    let _ = tokio::time::timeout(within, async {
        while got.len() < n {
            match tcp.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(k) => got.extend_from_slice(&buf[..k]),
            }
        }
    })
    .await;
    got
}

/// Whether the broker closed `tcp` within `within` (without sending anything first).
async fn closed_within(tcp: &mut TcpStream, within: Duration) -> bool {
    let mut buf = [0u8; 16];
    matches!(
        tokio::time::timeout(within, tcp.read(&mut buf)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

/// Connects with rumqttc and returns the CONNACK's code.
async fn connack(opts: MqttOptions) -> Result<(), String> {
    let (_client, mut events) = AsyncClient::new(opts, 10);
    tokio::time::timeout(T, async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(_))) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
    })
    .await
    .unwrap_or_else(|_| Err("no CONNACK".into()))
}

fn opts(id: &str, port: u16) -> MqttOptions {
    let mut o = MqttOptions::new(format!("{id}-{}", std::process::id()), "127.0.0.1", port);
    o.set_keep_alive(Duration::from_secs(30));
    o
}

#[tokio::test]
async fn a_lan_peer_gets_its_share_of_connections_and_is_told_when_full() {
    let Some(lan) = lan_address() else { return };
    let pty = Pty::new();
    let gw = start_gateway(&config(
        &pty.path,
        "  max_connections: 12\n  max_connections_per_peer: 4",
    ));
    gw.wait_log("device online", T).await;

    // Four connections that never send CONNECT: held, then closed at connect_timeout.
    let started = Instant::now();
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(raw_from(lan, gw.port).await);
    }
    // The fifth from the same address is refused at once with CONNACK "server unavailable".
    let mut fifth = raw_from(lan, gw.port).await;
    fifth
        .write_all(&encode(Raw::Connect(Connect::new("fifth"))))
        .await
        .unwrap();
    assert_eq!(first_bytes(&mut fifth, 4, T).await, [0x20, 2, 0, 3]);
    // Local clients are not locked out meanwhile.
    connack(opts("local", gw.port))
        .await
        .expect("a local client logs in");
    for tcp in &mut held {
        assert!(
            closed_within(tcp, Duration::from_secs(3)).await,
            "closed at connect_timeout"
        );
    }
    assert!(started.elapsed() < Duration::from_secs(4));
    // Its places are free again.
    let mut again = raw_from(lan, gw.port).await;
    again
        .write_all(&encode(Raw::Connect(Connect::new("again"))))
        .await
        .unwrap();
    assert_eq!(first_bytes(&mut again, 4, T).await, [0x20, 2, 0, 0]);
    gw.wait_log("refused a connection from", T).await;
}

#[tokio::test]
async fn when_every_place_is_taken_a_client_gets_server_unavailable_not_silence() {
    let pty = Pty::new();
    let gw = start_gateway(&config(&pty.path, "  max_connections: 8"));
    gw.wait_log("device online", T).await;
    // The start-up probe's connection is gone by now.
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut clients = Vec::new();
    for i in 0..8 {
        let mut tcp = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
        tcp.write_all(&encode(Raw::Connect(Connect::new(format!("c{i}")))))
            .await
            .unwrap();
        assert_eq!(first_bytes(&mut tcp, 4, T).await, [0x20, 2, 0, 0]);
        clients.push(tcp);
    }
    let err = connack(opts("ninth", gw.port)).await.unwrap_err();
    assert!(err.contains("ServiceUnavailable"), "{err}");
    drop(clients);
    tokio::time::sleep(Duration::from_millis(300)).await;
    connack(opts("later", gw.port))
        .await
        .expect("a place again");
}

/// An ACL that lets `watcher` read the temperatures only, inside its `sensors/#` filter.
const ACL: &str = "\
user watcher
topic read sensors/+/temperature
topic write status/watcher
user writer
topic readwrite #
";

/// A gateway with `watcher` and `writer` logins and [`ACL`], its device online.
async fn with_acl(dir: &Path) -> (Gateway, Pty, std::path::PathBuf) {
    let extra = logins_and_rules(dir, &[("watcher", "w-pass"), ("writer", "x-pass")], ACL);
    let pty = Pty::new();
    let gw = start_gateway(&config(&pty.path, &extra));
    gw.wait_log("device online", T).await;
    (gw, pty, dir.join("acl"))
}

fn with_login(id: &str, port: u16, user: &str, password: &str) -> MqttOptions {
    let mut o = opts(id, port);
    o.set_credentials(user, password);
    o
}

#[tokio::test]
async fn a_subscriber_stays_connected_when_its_filter_holds_messages_it_may_not_read() {
    for qos in [QoS::AtLeastOnce, QoS::ExactlyOnce] {
        let dir = tempfile::tempdir().unwrap();
        let (gw, mut pty, _acl) = with_acl(dir.path()).await;

        // A subscriber that acknowledges slowly (as a busy client does): the denied humidity
        // message after each temperature must not overtake the temperature's acknowledgement.
        let mut o = with_login("watcher", gw.port, "watcher", "w-pass");
        o.set_manual_acks(true);
        let (client, mut events) = AsyncClient::new(o, 100);
        client.subscribe("sensors/#", qos).await.unwrap();
        let mut connacks = 0;
        let mut temps = Vec::new();
        let mut subscribed = false;
        let deadline = Instant::now() + Duration::from_secs(8);
        while temps.len() < 5 && Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_millis(300), events.poll()).await {
                Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => connacks += 1,
                Ok(Ok(Event::Incoming(Packet::SubAck(_)))) => subscribed = true,
                Ok(Ok(Event::Incoming(Packet::Publish(p)))) => {
                    assert_eq!(p.topic, "sensors/climate/temperature");
                    temps.push(String::from_utf8_lossy(&p.payload).into_owned());
                    tokio::time::sleep(Duration::from_millis(150)).await;
                    client.ack(&p).await.unwrap();
                }
                Ok(Ok(_)) => {}
                // Quiet: the next reading (one at a time, each a temperature then a humidity).
                Err(_) if subscribed => {
                    pty.write(format!("T={}.5;H=40\n", 20 + temps.len()).as_bytes())
                        .await
                }
                Err(_) => {}
                Ok(Err(e)) => panic!(
                    "{qos:?}: the subscriber was disconnected: {e}\n{}",
                    gw.logs()
                ),
            }
        }
        assert_eq!(temps, ["20.5", "21.5", "22.5", "23.5", "24.5"], "{qos:?}");
        assert_eq!(connacks, 1, "{qos:?}: one connection throughout");
    }
}

#[tokio::test]
async fn paho_at_qos_1_and_2_gets_every_reading_it_may_read_without_reconnecting() {
    if !have_tool("python3") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (gw, mut pty, _acl) = with_acl(dir.path()).await;
    let script = r#"
import sys, time, paho.mqtt.client as mqtt
qos = int(sys.argv[2]); got = []; connects = [0]
def on_connect(c, u, f, rc):
    connects[0] += 1; c.subscribe("sensors/#", qos)
def on_subscribe(c, u, mid, granted):
    print("subscribed", flush=True)
def on_message(c, u, m):
    got.append(m.payload.decode())
    if len(got) == 10: c.disconnect()
c = mqtt.Client("paho-watcher-%d" % qos)
c.username_pw_set("watcher", "w-pass")
c.on_connect = on_connect; c.on_subscribe = on_subscribe; c.on_message = on_message
c.connect("127.0.0.1", int(sys.argv[1]), 30)
c.loop_forever()
print("got", len(got), "connects", connects[0])
"#;
    for qos in [1, 2] {
        let mut child = tokio::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(gw.port.to_string())
            .arg(qos.to_string())
            .stdout(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut out = child.stdout.take().unwrap();
        let mut first = [0u8; 11];
        tokio::time::timeout(T, out.read_exact(&mut first))
            .await
            .unwrap()
            .unwrap();
        for i in 0..10 {
            pty.write(format!("T={i};H=40\n").as_bytes()).await;
            tokio::time::sleep(Duration::from_millis(30)).await;
        }
        let mut rest = String::new();
        tokio::time::timeout(T, out.read_to_string(&mut rest))
            .await
            .unwrap_or_else(|_| panic!("QoS {qos}: paho did not get 10 readings\n{}", gw.logs()))
            .unwrap();
        assert_eq!(rest.trim(), "got 10 connects 1", "QoS {qos}");
    }
}

#[tokio::test]
async fn retained_messages_names_and_sessions_are_bounded() {
    let pty = Pty::new();
    let gw = start_gateway(&config(
        &pty.path,
        "  max_retained: 5\n  max_retained_bytes: 1MiB\n  max_topics: 20\n  max_filters: 1\n  max_sessions: 2",
    ));
    gw.wait_log("device online", T).await;
    let (client, mut events) = AsyncClient::new(opts("flood", gw.port), 100);
    tokio::spawn(async move { while events.poll().await.is_ok() {} });
    for i in 0..10 {
        client
            .publish(
                format!("r/{i}"),
                QoS::AtLeastOnce,
                true,
                format!("kept {i}"),
            )
            .await
            .unwrap();
    }
    gw.wait_log("a retained message on `r/5` was delivered but not kept", T)
        .await;
    let mut sub = Subscriber::connect(gw.port, &["r/#"], QoS::AtLeastOnce).await;
    let mut retained = Vec::new();
    while let Ok(r) = tokio::time::timeout(Duration::from_millis(700), sub.next(T)).await {
        retained.push(r.topic);
    }
    retained.sort();
    assert_eq!(retained, ["r/0", "r/1", "r/2", "r/3", "r/4"]);

    // Topic names: 10 so far; 10 more fit, the next new one is refused.
    for i in 0..12 {
        client
            .publish(format!("n/{i}"), QoS::AtLeastOnce, false, "x")
            .await
            .unwrap();
    }
    gw.wait_log(
        "topic names (broker.max_topics): publish to `n/10` refused",
        T,
    )
    .await;
    // Filters: `r/#` is the one there is room for; the same filter again is no new one.
    let _again = Subscriber::connect(gw.port, &["r/#"], QoS::AtLeastOnce).await;
    let (c, mut ev) = AsyncClient::new(opts("filters", gw.port), 10);
    c.subscribe("other/#", QoS::AtLeastOnce).await.unwrap();
    let codes = tokio::time::timeout(T, async {
        loop {
            if let Ok(Event::Incoming(Packet::SubAck(a))) = ev.poll().await {
                return a.return_codes;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(codes, [rumqttc::SubscribeReasonCode::Failure]);

    // Sessions: two persistent ones fit, a third is refused with "server unavailable".
    for id in ["p1", "p2"] {
        let mut o = opts(id, gw.port);
        o.set_clean_session(false);
        connack(o).await.unwrap();
    }
    let mut o = opts("p3", gw.port);
    o.set_clean_session(false);
    let err = connack(o).await.unwrap_err();
    assert!(err.contains("ServiceUnavailable"), "{err}");
    let mut o = opts("p1", gw.port);
    o.set_clean_session(false);
    connack(o).await.expect("a known session id reconnects");
}

/// Connects as `user` with a will on `status/watcher` and drops the connection without
/// DISCONNECT.
async fn vanish_with_will(port: u16, user: &str, password: &str) {
    let mut c = Connect::new(format!("will-{user}"));
    c.set_login(user, password);
    c.last_will = Some(LastWill::new(
        "status/watcher",
        "gone",
        QoS::AtLeastOnce,
        false,
    ));
    let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    tcp.write_all(&encode(Raw::Connect(c))).await.unwrap();
    assert_eq!(first_bytes(&mut tcp, 4, T).await, [0x20, 2, 0, 0]);
    drop(tcp);
}

#[tokio::test]
async fn a_will_is_checked_against_the_rules_in_force_when_it_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, _pty, acl) = with_acl(dir.path()).await;
    let mut sub = Subscriber::connect_with(
        with_login("sub", gw.port, "writer", "x-pass"),
        &["status/#"],
        QoS::AtLeastOnce,
    )
    .await;
    // Allowed: the will is published when the client vanishes.
    vanish_with_will(gw.port, "watcher", "w-pass").await;
    let r = sub.next_on("status/watcher", T).await;
    assert_eq!(r.payload, "gone");

    // The right to write there is revoked by reload; the next vanishing publishes nothing.
    let mut c = Connect::new("will-watcher-2");
    c.set_login("watcher", "w-pass");
    c.last_will = Some(LastWill::new(
        "status/watcher",
        "gone again",
        QoS::AtLeastOnce,
        false,
    ));
    let mut tcp = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    tcp.write_all(&encode(Raw::Connect(c))).await.unwrap();
    assert_eq!(first_bytes(&mut tcp, 4, T).await, [0x20, 2, 0, 0]);
    std::fs::write(&acl, ACL.replace("topic write status/watcher\n", "")).unwrap();
    gw.signal("HUP");
    gw.wait_log("logins and access rules are in force", T).await;
    drop(tcp);
    gw.wait_log("its will on `status/watcher` is not published", T)
        .await;
    sub.assert_quiet(Duration::from_millis(500)).await;

    // A clean DISCONNECT publishes no will either (and was never the issue).
    let mut c = Connect::new("will-writer");
    c.set_login("writer", "x-pass");
    c.last_will = Some(LastWill::new(
        "status/writer",
        "gone",
        QoS::AtLeastOnce,
        false,
    ));
    let mut tcp = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    tcp.write_all(&encode(Raw::Connect(c))).await.unwrap();
    assert_eq!(first_bytes(&mut tcp, 4, T).await, [0x20, 2, 0, 0]);
    tcp.write_all(&encode(Raw::Disconnect)).await.unwrap();
    drop(tcp);
    sub.assert_quiet(Duration::from_millis(500)).await;
}

/// Median time of `n` refused logins as `user`.
async fn refused_login_time(port: u16, user: &str, n: usize) -> Duration {
    let mut times = Vec::new();
    for _ in 0..n {
        let mut c = Connect::new(format!("timing-{}", times.len()));
        c.set_login(user, "wrong-password");
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let started = Instant::now();
        tcp.write_all(&encode(Raw::Connect(c))).await.unwrap();
        let got = first_bytes(&mut tcp, 4, T).await;
        times.push(started.elapsed());
        assert_eq!(got, [0x20, 2, 0, 4], "bad user name or password");
    }
    times.sort();
    times[n / 2]
}

#[tokio::test]
async fn an_unknown_user_name_costs_what_a_known_one_costs() {
    if !have_tool("mosquitto_passwd") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("passwd");
    std::fs::write(&file, "").unwrap();
    // mosquitto_passwd's own hashes (PBKDF2-SHA512, 101 rounds): cheap to verify.
    let ok = Command::new("mosquitto_passwd")
        .arg("-b")
        .arg(&file)
        .args(["alice", "alice-pass"])
        .status()
        .unwrap();
    assert!(ok.success());
    let pty = Pty::new();
    let gw = start_gateway(&config(
        &pty.path,
        &format!("  users_file: {}", file.display()),
    ));
    gw.wait_log("device online", T).await;
    let known = refused_login_time(gw.port, "alice", 21).await;
    let unknown = refused_login_time(gw.port, "mallory", 21).await;
    let ratio = unknown.as_secs_f64() / known.as_secs_f64();
    assert!(
        (0.33..3.0).contains(&ratio),
        "a wrong password for a known user takes {known:?}, an unknown user {unknown:?}"
    );
}

#[tokio::test]
async fn mqtt_5_gets_its_connack_and_a_second_connect_closes_the_connection() {
    let pty = Pty::new();
    let gw = start_gateway(&config(&pty.path, ""));
    gw.wait_log("device online", T).await;
    // MQTT 5 CONNECT: name, level 5, clean start, keep-alive 60, no properties, id "v5".
    let v5 = [
        0x10, 15, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 60, 0, 0, 2, b'v', b'5',
    ];
    let mut tcp = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    tcp.write_all(&v5).await.unwrap();
    assert_eq!(first_bytes(&mut tcp, 5, T).await, [0x20, 3, 0, 0x84, 0]);
    assert!(closed_within(&mut tcp, T).await);

    let mut tcp = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
    tcp.write_all(&encode(Raw::Connect(Connect::new("twice"))))
        .await
        .unwrap();
    assert_eq!(first_bytes(&mut tcp, 4, T).await, [0x20, 2, 0, 0]);
    tcp.write_all(&encode(Raw::Connect(Connect::new("twice"))))
        .await
        .unwrap();
    assert!(
        closed_within(&mut tcp, T).await,
        "a second CONNECT closes the connection"
    );
}

/// Starts the gateway under the descriptor limits `soft` and `hard` (a shell's `ulimit -n`).
fn start_with_fd_limits(yaml: &str, soft: u64, hard: u64) -> Gateway {
    start_gateway_with(yaml, free_port(), |config, _| {
        let mut c = Command::new("sh");
        c.args([
            "-c",
            &format!("ulimit -Sn {soft} && ulimit -Hn {hard} && exec \"$@\""),
            "sh",
        ])
        .arg(env!("CARGO_BIN_EXE_serial2mqtt"))
        .args(["run", "--config"])
        .arg(config);
        c
    })
}

/// The soft and hard "Max open files" of a process.
fn open_files_limits(pid: u32) -> (String, String) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let mut words = line["Max open files".len()..].split_whitespace();
    (words.next().unwrap().into(), words.next().unwrap().into())
}

#[tokio::test]
async fn the_descriptor_limit_is_raised_and_caps_that_do_not_fit_are_scaled_down() {
    let pty = Pty::new();
    // A shell's soft limit under a higher hard one: raised at start (to this process's hard
    // limit at most, which a process that is not root cannot exceed).
    let ours = open_files_limits(std::process::id()).1;
    let hard = ours.parse::<u64>().map_or(4096, |h| h.min(4096));
    let gw = start_with_fd_limits(&config(&pty.path, ""), 256, hard);
    gw.wait_log("device online", T).await;
    assert_eq!(
        open_files_limits(gw.child.id()),
        (hard.to_string(), hard.to_string())
    );
    gw.wait_log("raised the descriptor limit", T).await;
    drop(gw);

    // A hard limit too low for 64 clients of 3 descriptors each beside the reserve of 128:
    // the caps shrink, and the log says which limit would hold them.
    let gw = start_with_fd_limits(&config(&pty.path, ""), 256, 256);
    gw.wait_log("device online", T).await;
    gw.wait_log("raise LimitNOFILE to 320", T).await;
    let mut held = Vec::new();
    loop {
        let mut tcp = TcpStream::connect(("127.0.0.1", gw.port)).await.unwrap();
        tcp.write_all(&encode(Raw::Connect(Connect::new(format!(
            "c{}",
            held.len()
        )))))
        .await
        .unwrap();
        let answer = first_bytes(&mut tcp, 4, T).await;
        if answer != [0x20, 2, 0, 0] {
            assert_eq!(answer, [0x20, 2, 0, 3], "refused as server unavailable");
            break;
        }
        held.push(tcp);
        assert!(held.len() < 64, "the cap was not scaled down");
    }
    assert!(held.len() >= 30, "{} places", held.len());
}

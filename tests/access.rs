//! Access rules (`broker.acl_file`) and client certificates on the embedded broker, with real
//! clients (rumqttc, mosquitto_pub/sub, paho) over real sockets: a denied publish never reaches
//! a device, a denied subscription gets nothing, a client only receives what it may read, and
//! a client certificate's CN is its user.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS, SubscribeReasonCode};
use tokio::io::AsyncReadExt;

const T: Duration = Duration::from_secs(10);

/// A relay (commands) and climate readings, with `broker_extra` added under `broker:`.
fn config(port: &Path, broker_extra: &str) -> String {
    format!(
        r#"
gateway: {{id: gw, state_dir: "{{dir}}/state"}}
broker:
  listen: "127.0.0.1:{{port}}"
{broker_extra}
devices:
  - name: relay
    port: {port}
    rules: [climate]
    commands: [switch]
rules:
  climate:
    match: '^T=(?P<temp>-?\d+(?:\.\d+)?);H=(?P<hum>\d+)$'
    publish: [{{topic: "sensors/{{device}}/temperature", payload: "{{temp}}"}}]
commands:
  switch:
    subscribe: "cmd/{{gateway}}/{{device}}/set"
    match: '^(?P<state>ON|OFF)$'
    write: "R1={{state}}\r\n"
    reply_topic: "cmd/{{gateway}}/{{device}}/result"
"#,
        port = port.display()
    )
}

const ACL: &str = "\
# Anonymous clients: nothing (there are logins).
user dashboard
topic read #
user homeassistant
topic readwrite cmd/{gateway}/{device}/#
topic read sensors/#
";

/// A gateway with `logins` in a users file and [`ACL`] as its access rules, its device online.
async fn with_rules(dir: &Path, logins: &[(&str, &str)]) -> (Gateway, Pty) {
    let pty = Pty::new();
    let gw = start_gateway(&config(&pty.path, &logins_and_rules(dir, logins, ACL)));
    gw.wait_log("device online", T).await;
    (gw, pty)
}

fn login(id: &str, port: u16, user: &str, password: &str) -> MqttOptions {
    let mut opts = MqttOptions::new(format!("{id}-{}", std::process::id()), "127.0.0.1", port);
    opts.set_credentials(user, password);
    opts
}

/// Publishes at QoS 1 and waits for the PUBACK (denied publishes are acknowledged too).
async fn publish_as(opts: MqttOptions, topic: &str, payload: &[u8]) {
    let (client, mut events) = AsyncClient::new(opts, 10);
    client
        .publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
        .await
        .unwrap();
    puback(&mut events).await;
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_millis(300), events.poll()).await;
}

/// Polls until a PUBACK comes.
async fn puback(events: &mut rumqttc::EventLoop) {
    tokio::time::timeout(T, async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::PubAck(_))) => break,
                Ok(_) => {}
                Err(e) => panic!("publisher: {e}"),
            }
        }
    })
    .await
    .expect("PUBACK")
}

/// Reads what the gateway writes to the device, up to `want` bytes or `quiet` of silence.
async fn written(pty: &mut Pty, quiet: Duration) -> String {
    let mut out = Vec::new();
    let mut buf = [0u8; 256];
    while let Ok(Ok(n)) = tokio::time::timeout(quiet, pty.master.read(&mut buf)).await {
        if n == 0 {
            break;
        }
        out.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Subscribes and returns the SUBACK's codes, with the client to read from.
async fn subscribe(
    opts: MqttOptions,
    filters: &[&str],
) -> (AsyncClient, rumqttc::EventLoop, Vec<SubscribeReasonCode>) {
    let (client, mut events) = AsyncClient::new(opts, 100);
    client
        .subscribe_many(
            filters
                .iter()
                .map(|f| rumqttc::SubscribeFilter::new(f.to_string(), QoS::AtLeastOnce)),
        )
        .await
        .unwrap();
    let codes = tokio::time::timeout(T, async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::SubAck(a))) => return a.return_codes,
                Ok(_) => {}
                Err(e) => panic!("subscriber: {e}"),
            }
        }
    })
    .await
    .expect("SUBACK");
    (client, events, codes)
}

/// The topics a subscriber receives within `period`.
async fn topics_within(events: &mut rumqttc::EventLoop, period: Duration) -> Vec<String> {
    let mut topics = Vec::new();
    let _ = tokio::time::timeout(period, async {
        loop {
            if let Ok(Event::Incoming(Packet::Publish(p))) = events.poll().await {
                topics.push(p.topic.clone());
            }
        }
    })
    .await;
    topics
}

#[tokio::test]
async fn access_rules_let_only_named_users_command_and_read() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, mut pty) = with_rules(
        dir.path(),
        &[("dashboard", "dash-pass"), ("homeassistant", "ha-pass")],
    )
    .await;

    // The dashboard reads everything, the device's retained state included...
    let (_d, mut dash, codes) =
        subscribe(login("dash", gw.port, "dashboard", "dash-pass"), &["#"]).await;
    assert_eq!(codes, vec![SubscribeReasonCode::Success(QoS::AtLeastOnce)]);
    // ...Home Assistant is granted `#` too, but gets only what it may read; a subscription
    // that can match nothing it may read is refused, the other in the same SUBSCRIBE granted.
    let (_h, mut ha, codes) = subscribe(
        login("ha", gw.port, "homeassistant", "ha-pass"),
        &["#", "serial2mqtt/#", "sensors/+/temperature"],
    )
    .await;
    assert_eq!(
        codes,
        vec![
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
            SubscribeReasonCode::Failure,
            SubscribeReasonCode::Success(QoS::AtLeastOnce),
        ]
    );

    // Home Assistant may command: the relay is written, and the reply comes back to both.
    publish_as(
        login("ha-pub", gw.port, "homeassistant", "ha-pass"),
        "cmd/gw/relay/set",
        b"ON",
    )
    .await;
    assert_eq!(
        written(&mut pty, Duration::from_millis(500)).await,
        "R1=ON\r\n"
    );
    pty.write(b"T=21.5;H=40\n").await;

    // The dashboard may not: acknowledged (its session goes on), never written to the device.
    publish_as(
        login("dash-pub", gw.port, "dashboard", "dash-pass"),
        "cmd/gw/relay/set",
        b"OFF",
    )
    .await;
    // And mosquitto_pub with the same login: the same.
    if have_tool("mosquitto_pub") {
        let ok = Command::new("mosquitto_pub")
            .args(["-h", "127.0.0.1", "-p", &gw.port.to_string()])
            .args(["-u", "dashboard", "-P", "dash-pass", "-q", "1"])
            .args(["-t", "cmd/gw/relay/set", "-m", "OFF"])
            .status()
            .unwrap();
        assert!(ok.success());
    }
    assert_eq!(written(&mut pty, Duration::from_millis(800)).await, "");
    gw.wait_log("publish to `cmd/gw/relay/set` denied by broker.acl_file", T)
        .await;

    let dash_topics = topics_within(&mut dash, Duration::from_millis(800)).await;
    for t in [
        "serial2mqtt/gw/devices/relay/state",
        "cmd/gw/relay/result",
        "sensors/relay/temperature",
    ] {
        assert!(dash_topics.iter().any(|x| x == t), "{t} in {dash_topics:?}");
    }
    let ha_topics = topics_within(&mut ha, Duration::from_millis(300)).await;
    assert!(
        ha_topics.iter().any(|x| x == "sensors/relay/temperature"),
        "{ha_topics:?}"
    );
    assert!(
        ha_topics.iter().any(|x| x == "cmd/gw/relay/result"),
        "{ha_topics:?}"
    );
    assert!(
        ha_topics
            .iter()
            .all(|t| t.starts_with("sensors/") || t.starts_with("cmd/gw/relay/")),
        "Home Assistant got what it may not read: {ha_topics:?}"
    );

    // A wrong password is refused, and so is an anonymous client.
    let (_c, mut bad) = AsyncClient::new(login("bad", gw.port, "homeassistant", "nope"), 10);
    let refused = tokio::time::timeout(T, async {
        loop {
            match bad.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(a))) => return a.code,
                Ok(_) => {}
                Err(rumqttc::ConnectionError::ConnectionRefused(code)) => return code,
                Err(e) => panic!("{e}"),
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(refused, rumqttc::ConnectReturnCode::BadUserNamePassword);
    gw.wait_log("user `homeassistant`: wrong user name or password", T)
        .await;
    assert!(!gw.logs().contains("ha-pass") && !gw.logs().contains("nope"));
}

#[tokio::test]
async fn paho_gets_its_mixed_subscription_answered_in_order() {
    if !have_tool("python3") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (gw, _pty) = with_rules(dir.path(), &[("homeassistant", "ha-pass")]).await;
    let script = r#"
import sys, paho.mqtt.client as mqtt
def on_connect(c, u, f, rc):
    c.subscribe([("serial2mqtt/#", 1), ("sensors/#", 1), ("cmd/gw/relay/result", 0)])
def on_subscribe(c, u, mid, granted):
    print(list(granted)); c.disconnect()
c = mqtt.Client("paho-acl")
c.username_pw_set("homeassistant", "ha-pass")
c.on_connect = on_connect
c.on_subscribe = on_subscribe
c.connect("127.0.0.1", int(sys.argv[1]))
c.loop_forever()
"#;
    let out = tokio::time::timeout(
        T,
        tokio::process::Command::new("python3")
            .arg("-c")
            .arg(script)
            .arg(gw.port.to_string())
            .output(),
    )
    .await
    .expect("paho finished")
    .unwrap();
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{said}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(said.trim(), "[128, 1, 0]");
}

/// mosquitto_pub over TLS with a client certificate (`None`: without one); whether it
/// succeeded.
fn mosquitto_pub_tls(dir: &Path, port: u16, cert: Option<(&str, &str)>, payload: &str) -> bool {
    let mut cmd = Command::new("mosquitto_pub");
    cmd.args(["-h", "localhost", "-p", &port.to_string(), "-q", "1"])
        .arg("--cafile")
        .arg(dir.join("good-ca.pem"))
        .args(["-t", "cmd/gw/relay/set", "-m", payload])
        .stderr(Stdio::null());
    if let Some((tag, cn)) = cert {
        cmd.arg("--cert")
            .arg(dir.join(format!("{tag}-{cn}.pem")))
            .arg("--key")
            .arg(dir.join(format!("{tag}-{cn}.key")));
    }
    cmd.status().unwrap().success()
}

#[tokio::test]
async fn a_client_certificate_is_a_login_and_its_cn_the_user() {
    if !have_tool("mosquitto_pub") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    common::certs::certificates(d, "good-", &["homeassistant", "dashboard"]);
    common::certs::certificates(d, "other-", &["homeassistant"]);
    let acl = write_temp(d, "acl", ACL);
    let mut pty = Pty::new();
    let gw = start_gateway(&config(
        &pty.path,
        &format!(
            "  acl_file: {acl}\n  tls:\n    cert_file: {d}/good-server.pem\n    key_file: {d}/good-server.key\n    client_ca_file: {d}/good-ca.pem\n    require_client_cert: true",
            acl = acl.display(),
            d = d.display()
        ),
    ));
    gw.wait_log("device online", T).await;

    // CN=homeassistant may command; the gateway writes the relay.
    let deadline = std::time::Instant::now() + T;
    let mut seen = String::new();
    while !seen.contains("R1=ON") {
        assert!(
            std::time::Instant::now() < deadline,
            "never written: {}",
            gw.logs()
        );
        assert!(mosquitto_pub_tls(
            d,
            gw.port,
            Some(("good", "homeassistant")),
            "ON"
        ));
        seen += &written(&mut pty, Duration::from_millis(300)).await;
    }
    // CN=dashboard may only read: accepted, not written.
    assert!(mosquitto_pub_tls(
        d,
        gw.port,
        Some(("good", "dashboard")),
        "OFF"
    ));
    // A certificate from another CA, or none at all: refused at the handshake.
    assert!(!mosquitto_pub_tls(
        d,
        gw.port,
        Some(("other", "homeassistant")),
        "OFF"
    ));
    assert!(!mosquitto_pub_tls(d, gw.port, None, "OFF"));
    assert_eq!(written(&mut pty, Duration::from_millis(800)).await, "");
    gw.wait_log("refused: TLS handshake failed", T).await;
    gw.wait_log("local client 127.0.0.1", T).await;
    assert!(gw
        .logs()
        .contains("(dashboard): publish to `cmd/gw/relay/set` denied"));

    // mosquitto_sub: CN=dashboard reads the readings; CN=homeassistant's subscription to what
    // it may not read is refused.
    let sub = |cn: &str, filter: &str| {
        tokio::process::Command::new("mosquitto_sub")
            .args([
                "-h",
                "localhost",
                "-p",
                &gw.port.to_string(),
                "-C",
                "1",
                "-W",
                "5",
            ])
            .arg("--cafile")
            .arg(d.join("good-ca.pem"))
            .arg("--cert")
            .arg(d.join(format!("good-{cn}.pem")))
            .arg("--key")
            .arg(d.join(format!("good-{cn}.key")))
            .args(["-t", filter])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    let reader = sub("dashboard", "sensors/#");
    let refused = sub("homeassistant", "serial2mqtt/#");
    tokio::time::sleep(Duration::from_millis(500)).await;
    pty.write(b"T=19.5;H=40\n").await;
    let read = reader.wait_with_output().await.unwrap();
    assert_eq!(String::from_utf8_lossy(&read.stdout).trim(), "19.5");
    let refused = refused.wait_with_output().await.unwrap();
    assert!(refused.stdout.is_empty(), "{refused:?}");
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("denied"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
}

#[tokio::test]
async fn check_names_bad_rule_lines_and_who_commands_each_device() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let users = users_file(d, &[("dashboard", "a"), ("homeassistant", "b")]);
    let acl = write_temp(d, "acl", ACL);
    let pty = Pty::new();
    let with_acl = |acl: &Path| {
        config(
            &pty.path,
            &format!(
                "  users_file: {}\n  acl_file: {}",
                users.display(),
                acl.display()
            ),
        )
        .replace("{port}", "1883")
        .replace("{dir}", &d.display().to_string())
    };
    let file = write_temp(d, "good.yaml", &with_acl(&acl));
    let out = serial2mqtt_command()
        .arg("check")
        .arg(&file)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{said}");
    assert!(
        said.contains("access rules from ") && said.contains("relay commanded by homeassistant;")
            || said.contains("relay commanded by homeassistant\n"),
        "{said}"
    );

    let bad = write_temp(
        d,
        "bad-acl",
        "user dashboard\ntopic read sensors/#/x\ntopics read #\n",
    );
    let file = write_temp(d, "bad.yaml", &with_acl(&bad));
    let out = serial2mqtt_command()
        .arg("check")
        .arg(&file)
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success());
    for needle in [
        format!(
            "{}:2: `sensors/#/x` is not a valid MQTT topic filter",
            bad.display()
        ),
        "`#` only as the last level".to_owned(),
        format!("{}:3: unknown keyword `topics`", bad.display()),
    ] {
        assert!(said.contains(&needle), "{needle} in {said}");
    }
}

#[tokio::test]
async fn a_reload_puts_new_logins_and_rules_in_force_for_connected_clients_too() {
    let dir = tempfile::tempdir().unwrap();
    let (gw, mut pty) = with_rules(dir.path(), &[("dashboard", "dash-pass")]).await;

    // The dashboard stays connected across the reload.
    let (dash, mut events) = AsyncClient::new(login("dash", gw.port, "dashboard", "dash-pass"), 10);
    dash.publish("cmd/gw/relay/set", QoS::AtLeastOnce, false, "ON")
        .await
        .unwrap();
    puback(&mut events).await;
    assert_eq!(written(&mut pty, Duration::from_millis(500)).await, "");

    // Now the dashboard may command, and a new login exists.
    std::fs::write(
        dir.path().join("acl"),
        format!("{ACL}user dashboard\ntopic write cmd/{{gateway}}/{{device}}/set\n"),
    )
    .unwrap();
    users_file(dir.path(), &[("homeassistant", "ha-pass")]);
    gw.signal("HUP");
    gw.wait_log("logins and access rules are in force", T).await;
    assert!(
        !gw.logs().contains("`broker` settings changed"),
        "no restart needed: {}",
        gw.logs()
    );

    dash.publish("cmd/gw/relay/set", QoS::AtLeastOnce, false, "ON")
        .await
        .unwrap();
    puback(&mut events).await;
    assert_eq!(
        written(&mut pty, Duration::from_millis(800)).await,
        "R1=ON\r\n"
    );
    publish_as(
        login("ha-pub", gw.port, "homeassistant", "ha-pass"),
        "cmd/gw/relay/set",
        b"OFF",
    )
    .await;
    assert_eq!(
        written(&mut pty, Duration::from_millis(800)).await,
        "R1=OFF\r\n"
    );
}

/// Whether a client logging in as `user` gets a successful CONNACK.
async fn logs_in(port: u16, user: &str, password: &str) -> bool {
    let (_c, mut events) = AsyncClient::new(login("try", port, user, password), 10);
    tokio::time::timeout(T, async {
        loop {
            match events.poll().await {
                Ok(Event::Incoming(Packet::ConnAck(a))) => {
                    return a.code == rumqttc::ConnectReturnCode::Success
                }
                Ok(_) => {}
                Err(_) => return false,
            }
        }
    })
    .await
    .unwrap_or(false)
}

#[tokio::test]
async fn logins_and_access_rules_added_by_reload_take_effect_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let mut pty = Pty::new();
    let gw = start_gateway(&config(&pty.path, ""));
    gw.wait_log("device online", T).await;
    // No logins yet: anyone may connect (and, on loopback, command).
    assert!(logs_in(gw.port, "anyone", "anything").await);

    // Every client goes through the gatekeeper, so logins and rules can arrive by reload.
    let users = users_file(
        dir.path(),
        &[("dashboard", "dash-pass"), ("homeassistant", "ha-pass")],
    );
    let acl = write_temp(dir.path(), "acl", ACL);
    let text = std::fs::read_to_string(gw.config_path()).unwrap().replace(
        "broker:\n",
        &format!(
            "broker:\n  users_file: {}\n  acl_file: {}\n",
            users.display(),
            acl.display()
        ),
    );
    std::fs::write(gw.config_path(), text).unwrap();
    gw.signal("HUP");
    gw.wait_log("logins and access rules are in force", T).await;
    assert!(!logs_in(gw.port, "anyone", "anything").await);
    assert!(logs_in(gw.port, "homeassistant", "ha-pass").await);
    publish_as(
        login("dash", gw.port, "dashboard", "dash-pass"),
        "cmd/gw/relay/set",
        b"ON",
    )
    .await;
    assert_eq!(
        written(&mut pty, Duration::from_millis(500)).await,
        "",
        "read-only user"
    );
    publish_as(
        login("ha", gw.port, "homeassistant", "ha-pass"),
        "cmd/gw/relay/set",
        b"ON",
    )
    .await;
    assert_eq!(
        written(&mut pty, Duration::from_millis(500)).await,
        "R1=ON\r\n"
    );
}

/// A client that sends its PUBLISH in the same segment as its CONNECT (pipelined, before the
/// CONNACK) is checked like any other: a denied command still never reaches the device.
#[tokio::test]
async fn a_publish_pipelined_with_connect_is_checked_too() {
    use rumqttc::mqttbytes::v4::{Connect, Packet as Raw, Publish};
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let (gw, mut pty) = with_rules(
        dir.path(),
        &[("dashboard", "dash-pass"), ("homeassistant", "ha-pass")],
    )
    .await;
    let pipelined = |user: &str, password: &str, payload: &str| {
        let mut connect = Connect::new(format!("raw-{user}"));
        connect.set_login(user, password);
        let mut publish = Publish::new("cmd/gw/relay/set", rumqttc::QoS::AtLeastOnce, payload);
        publish.pkid = 1;
        let mut bytes = bytes::BytesMut::new();
        Raw::Connect(connect).write(&mut bytes, 1 << 20).unwrap();
        Raw::Publish(publish).write(&mut bytes, 1 << 20).unwrap();
        bytes
    };
    for (user, password, payload) in [
        ("dashboard", "dash-pass", "ON"),
        ("homeassistant", "ha-pass", "OFF"),
    ] {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", gw.port))
            .await
            .unwrap();
        tcp.write_all(&pipelined(user, password, payload))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        drop(tcp);
    }
    // Only Home Assistant's OFF: the dashboard's ON was dropped.
    assert_eq!(
        written(&mut pty, Duration::from_millis(800)).await,
        "R1=OFF\r\n"
    );
}

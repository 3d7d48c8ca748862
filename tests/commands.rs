//! Commands back to devices (MQTT → serial), end to end: the real binary, a pty pair standing in
//! for the device, MQTT clients on the embedded broker and on an upstream broker. Each test
//! reads the exact bytes the device would receive from the pty's other end.

mod common;

use std::time::Duration;

use common::upstream::*;
use common::*;
use rumqttc::{AsyncClient, Event, MqttOptions, Outgoing, Packet, QoS};
use tokio::io::AsyncReadExt;

const T: Duration = Duration::from_secs(10);

/// A relay on `port` that takes `ON`/`OFF` on `cmd/{gateway}/{device}/set`, and also reports
/// readings (`T=..;H=..`), so both directions run on one port.
fn relay_config(port: &std::path::Path, extra: &str) -> String {
    format!(
        r#"
gateway: {{id: gw, state_dir: "{{dir}}/state"}}
broker: {{listen: "127.0.0.1:{{port}}"}}
{extra}
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

/// Publishes one message at QoS 1 and waits for its PUBACK.
async fn publish(port: u16, topic: &str, payload: &[u8]) {
    let id = format!("cmd-{}-{}", std::process::id(), fastrand::u32(..));
    let (client, mut events) = AsyncClient::new(MqttOptions::new(id, "127.0.0.1", port), 10);
    client
        .publish(topic, QoS::AtLeastOnce, false, payload.to_vec())
        .await
        .expect("publish");
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
    .expect("PUBACK");
    let _ = client.disconnect().await;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while !matches!(
            events.poll().await,
            Ok(Event::Outgoing(Outgoing::Disconnect)) | Err(_)
        ) {}
    })
    .await;
}

/// Reads exactly `n` bytes the gateway wrote to the device.
async fn read_bytes(pty: &mut Pty, n: usize) -> Vec<u8> {
    let mut buf = vec![0u8; n];
    tokio::time::timeout(T, pty.master.read_exact(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("{n} bytes were not written to the device within {T:?}"))
        .expect("read pty");
    buf
}

/// Waits until the relay takes commands: its port is open (a pty master reads EIO until the
/// gateway opens the other side) and the link's subscription to the command topic is active
/// (a command published before that is not delivered). Proven by one command written whole.
async fn wait_commands_ready(gw: &Gateway, pty: &mut Pty) {
    wait_ready_on(gw, gw.port, pty, "cmd/gw/relay/set", b"OFF").await;
}

/// [`wait_commands_ready`] with a command on `topic` of the broker on `broker` (the gateway's,
/// or the upstream one) whose `payload` makes the relay write `R1=OFF\r\n`.
async fn wait_ready_on(gw: &Gateway, broker: u16, pty: &mut Pty, topic: &str, payload: &[u8]) {
    wait_written(gw, broker, pty, topic, payload, b"R1=OFF\r\n").await;
}

/// Once the device is online, publishes `payload` on `topic` until the device is written
/// `expected` (the port open and the command subscription active: no race with start-up).
async fn wait_written(
    gw: &Gateway,
    broker: u16,
    pty: &mut Pty,
    topic: &str,
    payload: &[u8],
    expected: &[u8],
) {
    gw.wait_log("device online", T).await;
    let deadline = std::time::Instant::now() + T;
    loop {
        publish(broker, topic, payload).await;
        let mut buf = vec![0u8; expected.len()];
        if let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_millis(500), pty.master.read_exact(&mut buf)).await
        {
            assert_eq!(buf, expected);
            // An earlier attempt may have been written late: nothing of it may stay behind.
            let mut rest = [0u8; 64];
            while let Ok(Ok(n)) =
                tokio::time::timeout(Duration::from_millis(300), pty.master.read(&mut rest)).await
            {
                assert_eq!(n % expected.len(), 0, "{:?}", &rest[..n]);
            }
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the device never took a command:\n{}",
            gw.logs()
        );
    }
}

/// Asserts the relay was written `R1=<state>\r\n` for each state, whole and in this order.
async fn assert_relay_wrote(pty: &mut Pty, states: &[&str]) {
    let expected: Vec<u8> = states
        .iter()
        .flat_map(|s| format!("R1={s}\r\n").into_bytes())
        .collect();
    assert_eq!(
        String::from_utf8_lossy(&read_bytes(pty, expected.len()).await),
        String::from_utf8_lossy(&expected),
        "the relay got other commands, or in another order than they were sent"
    );
}

/// Asserts the gateway writes nothing to the device for `quiet`.
async fn assert_nothing_written(pty: &mut Pty, quiet: Duration) {
    let mut buf = [0u8; 256];
    if let Ok(Ok(n)) = tokio::time::timeout(quiet, pty.master.read(&mut buf)).await {
        panic!(
            "unexpected bytes written: {:?}",
            String::from_utf8_lossy(&buf[..n])
        );
    }
}

#[tokio::test]
async fn a_local_client_switches_a_relay_and_gets_a_reply() {
    let mut pty = Pty::new();
    let gw = start_gateway(&relay_config(&pty.path, ""));
    wait_commands_ready(&gw, &mut pty).await;
    let mut replies = Subscriber::connect(
        gw.port,
        &["cmd/gw/relay/result", "sensors/#"],
        QoS::AtLeastOnce,
    )
    .await;

    publish(gw.port, "cmd/gw/relay/set", b"ON").await;
    assert_eq!(read_bytes(&mut pty, 7).await, b"R1=ON\r\n");
    assert_eq!(
        replies.next_on("cmd/gw/relay/result", T).await.payload,
        "ok"
    );

    publish(gw.port, "cmd/gw/relay/set", b"OFF").await;
    assert_eq!(read_bytes(&mut pty, 8).await, b"R1=OFF\r\n");
    assert_eq!(
        replies.next_on("cmd/gw/relay/result", T).await.payload,
        "ok"
    );

    // A payload the command does not accept: refused with the reason, nothing written.
    publish(gw.port, "cmd/gw/relay/set", b"toggle").await;
    let refusal = replies.next_on("cmd/gw/relay/result", T).await.payload;
    assert!(
        refusal.starts_with("error: the payload does not match"),
        "{refusal}"
    );
    assert_nothing_written(&mut pty, Duration::from_millis(300)).await;

    // The same port still reads: both directions share it.
    pty.write(b"T=21.5;H=40\n").await;
    assert_eq!(
        replies
            .next_on("sensors/relay/temperature", T)
            .await
            .payload,
        "21.5"
    );
    // Another device's topic is not this relay's.
    publish(gw.port, "cmd/gw/other/set", b"ON").await;
    assert_nothing_written(&mut pty, Duration::from_millis(300)).await;
}

#[tokio::test]
async fn writes_to_one_device_are_serialized_in_arrival_order() {
    let mut pty = Pty::new();
    let gw = start_gateway(&relay_config(&pty.path, ""));
    wait_commands_ready(&gw, &mut pty).await;
    // One client, many commands back to back: each write whole, in order.
    let (client, mut events) =
        AsyncClient::new(MqttOptions::new("burst", "127.0.0.1", gw.port), 100);
    tokio::spawn(async move { while events.poll().await.is_ok() {} });
    let states: Vec<&str> = (0..20)
        .map(|i| if i % 2 == 0 { "ON" } else { "OFF" })
        .collect();
    for s in &states {
        client
            .publish(
                "cmd/gw/relay/set",
                QoS::AtLeastOnce,
                false,
                s.as_bytes().to_vec(),
            )
            .await
            .expect("publish");
    }
    assert_relay_wrote(&mut pty, &states).await;
}

#[tokio::test]
async fn an_offline_device_answers_with_an_error_instead_of_queueing() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("ttyUSB-not-plugged");
    let gw = start_gateway(&relay_config(&missing, ""));
    let mut replies =
        Subscriber::connect(gw.port, &["cmd/gw/relay/result"], QoS::AtLeastOnce).await;
    publish(gw.port, "cmd/gw/relay/set", b"ON").await;
    assert_eq!(
        replies.next_on("cmd/gw/relay/result", T).await.payload,
        "error: the device is offline"
    );
    // Plugged in later: the refused command is not replayed; new ones are written.
    let mut pty = Pty::new();
    std::os::unix::fs::symlink(&pty.path, &missing).unwrap();
    gw.wait_log("device online", T).await;
    assert_nothing_written(&mut pty, Duration::from_millis(500)).await;
    publish(gw.port, "cmd/gw/relay/set", b"OFF").await;
    assert_eq!(read_bytes(&mut pty, 8).await, b"R1=OFF\r\n");
    assert_eq!(
        replies.next_on("cmd/gw/relay/result", T).await.payload,
        "ok"
    );
}

#[tokio::test]
async fn a_command_from_the_upstream_broker_reaches_the_device() {
    let upstream = AnyBroker::start();
    let mut pty = Pty::new();
    let uplink = format!(
        "uplink:\n  url: mqtt://127.0.0.1:{}\n  subscribe: [\"cmd/{{gateway}}/#\"]\n  forward: [\"cmd/+/+/result\"]",
        upstream.port(),
    );
    let gw = start_gateway(&relay_config(&pty.path, &uplink));
    gw.wait_log("uplink connected", T).await;
    // "connected" comes before the uplink's SUBSCRIBE is acknowledged: a command published
    // in between is not delivered, so wait until one is.
    wait_ready_on(&gw, upstream.port(), &mut pty, "cmd/gw/relay/set", b"OFF").await;
    let mut replies =
        Subscriber::connect(upstream.port(), &["cmd/gw/relay/result"], QoS::AtLeastOnce).await;
    publish(upstream.port(), "cmd/gw/relay/set", b"ON").await;
    assert_eq!(read_bytes(&mut pty, 7).await, b"R1=ON\r\n");
    // The reply goes back up like any forwarded message.
    assert_eq!(
        replies.next_on("cmd/gw/relay/result", T).await.payload,
        "ok"
    );
}

#[tokio::test]
async fn binary_commands_are_written_in_the_devices_framing() {
    let mut pty = Pty::new();
    let config = format!(
        r#"
gateway: {{id: gw, state_dir: "{{dir}}/state"}}
broker: {{listen: "127.0.0.1:{{port}}"}}
devices:
  - {{name: valve, port: {port}, framing: cobs, commands: [open, raw]}}
commands:
  open:
    subscribe: "valves/{{device}}/open"
    match: '^(?P<pct>[0-9a-f]{{2}})$'
    write_hex: "01 00 {{pct}}"
    encode: true
  raw:
    subscribe: "valves/{{device}}/raw"
    write_hex: "{{payload_hex}}"
"#,
        port = pty.path.display()
    );
    let gw = start_gateway(&config);
    // COBS of 01 00 64, then the 00 delimiter.
    let cobs = [0x02, 0x01, 0x02, 0x64, 0x00];
    wait_written(&gw, gw.port, &mut pty, "valves/valve/open", b"64", &cobs).await;
    // Not encoded: the payload's bytes as they are.
    publish(gw.port, "valves/valve/raw", &[0xff, 0x00, 0x7e]).await;
    assert_eq!(read_bytes(&mut pty, 3).await, [0xff, 0x00, 0x7e]);
}

#[tokio::test]
async fn a_command_added_by_reload_works_without_a_restart() {
    let mut pty = Pty::new();
    let without = relay_config(&pty.path, "").replace("    commands: [switch]\n", "");
    assert!(!without.contains("commands: [switch]"));
    let gw = start_gateway(&without);
    publish(gw.port, "cmd/gw/relay/set", b"ON").await;
    assert_nothing_written(&mut pty, Duration::from_millis(300)).await;

    let with = relay_config(&pty.path, "")
        .replace("{port}", &gw.port.to_string())
        .replace("{dir}", &gw.dir.path().display().to_string());
    std::fs::write(gw.config_path(), with).unwrap();
    gw.signal("HUP");
    gw.wait_log("config reloaded", T).await;
    // The broker link subscribes for commands on its own thread after the reload: a command
    // before that is not taken (delivery here is at most once), so wait until one is.
    wait_commands_ready(&gw, &mut pty).await;
    let mut replies =
        Subscriber::connect(gw.port, &["cmd/gw/relay/result"], QoS::AtLeastOnce).await;
    publish(gw.port, "cmd/gw/relay/set", b"ON").await;
    assert_eq!(read_bytes(&mut pty, 7).await, b"R1=ON\r\n");
    assert_eq!(
        replies.next_on("cmd/gw/relay/result", T).await.payload,
        "ok"
    );
}

#[tokio::test]
async fn a_message_matching_overlapping_command_filters_is_written_once_per_command() {
    let mut pty = Pty::new();
    let config = format!(
        r#"
gateway: {{id: gw, state_dir: "{{dir}}/state"}}
broker: {{listen: "127.0.0.1:{{port}}"}}
devices:
  - {{name: relay, port: {port}, commands: [one, two]}}
commands:
  one: {{subscribe: "cmd/+/relay/set", write: "A={{payload}}\n"}}
  two: {{subscribe: "cmd/gw/#", write: "B={{payload}}\n"}}
"#,
        port = pty.path.display()
    );
    let gw = start_gateway(&config);
    // The broker delivers the message once per matching filter of the gateway's link; each
    // command still writes it exactly once.
    wait_written(
        &gw,
        gw.port,
        &mut pty,
        "cmd/gw/relay/set",
        b"ON",
        b"A=ON\nB=ON\n",
    )
    .await;
    publish(gw.port, "cmd/gw/relay/set", b"OFF").await;
    assert_eq!(read_bytes(&mut pty, 12).await, b"A=OFF\nB=OFF\n");
    assert_nothing_written(&mut pty, Duration::from_millis(300)).await;
}

/// A relay switched by two command topics of its own (`.../on` and `.../off`), and a second
/// relay whose command topic lies under a filter of the first: the broker's per-filter delivery
/// must not reorder what one client sent in a row.
fn two_topic_config(port: &std::path::Path, other: &std::path::Path) -> String {
    format!(
        r#"
gateway: {{id: gw, state_dir: "{{dir}}/state"}}
broker: {{listen: "127.0.0.1:{{port}}"}}
devices:
  - {{name: relay, port: {port}, commands: [on, off]}}
  - {{name: other, port: {other}, commands: [any]}}
commands:
  on: {{subscribe: "cmd/{{gateway}}/{{device}}/on", write: "R1=ON\r\n"}}
  off: {{subscribe: "cmd/{{gateway}}/{{device}}/off", write: "R1=OFF\r\n"}}
  any: {{subscribe: "cmd/{{gateway}}/#", write: "X\n"}}
"#,
        port = port.display(),
        other = other.display()
    )
}

#[tokio::test]
async fn commands_on_two_topics_of_one_device_are_written_in_the_order_they_were_sent() {
    let mut pty = Pty::new();
    let mut other = Pty::new();
    let gw = start_gateway(&two_topic_config(&pty.path, &other.path));
    // Ready when one command comes through whole (port open, subscriptions active).
    wait_ready_on(&gw, gw.port, &mut pty, "cmd/gw/relay/off", b"").await;

    // One client, a burst in an irregular order (the INBOX bounds a burst: stay under it).
    let (client, mut events) =
        AsyncClient::new(MqttOptions::new("burst2", "127.0.0.1", gw.port), 100);
    tokio::spawn(async move { while events.poll().await.is_ok() {} });
    let mut states = Vec::new();
    let mut rng = fastrand::Rng::with_seed(7);
    for _ in 0..24 {
        states.push(if rng.bool() { "ON" } else { "OFF" });
    }
    for s in &states {
        let topic = format!("cmd/gw/relay/{}", s.to_ascii_lowercase());
        client
            .publish(topic, QoS::AtLeastOnce, false, Vec::new())
            .await
            .expect("publish");
    }
    assert_relay_wrote(&mut pty, &states).await;
    // The other relay's filter covers both topics: it got one write per message, too.
    let mut buf = vec![0u8; 2 * (states.len() + 1)];
    tokio::time::timeout(T, other.master.read_exact(&mut buf))
        .await
        .expect("the other relay got every message")
        .expect("read pty");
}

/// A broker on the network without logins used to take commands from anyone who reached it
/// (a guest Wi-Fi, a compromised plug). Such a gateway now takes none, says why, and keeps
/// reading; `broker.allow_anonymous_commands: true` is the explicit opt-in.
#[tokio::test]
async fn an_open_network_listener_takes_no_commands_unless_allowed() {
    let open = |extra: &str, pty: &Pty| {
        relay_config(&pty.path, extra).replace(
            "broker: {listen: \"127.0.0.1:{port}\"}",
            "broker: {listen: \"0.0.0.0:{port}\"}",
        )
    };
    let mut pty = Pty::new();
    let yaml = open("", &pty);
    assert!(yaml.contains("0.0.0.0:{port}"), "{yaml}");
    let gw = start_gateway(&yaml);
    gw.wait_log("the commands of relay are off", T).await;
    gw.wait_log("device online", T).await;
    for _ in 0..5 {
        publish(gw.port, "cmd/gw/relay/set", b"ON").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_nothing_written(&mut pty, Duration::from_millis(500)).await;
    drop(gw);

    let mut pty = Pty::new();
    let yaml = open("", &pty).replace(
        "listen: \"0.0.0.0:{port}\"}",
        "listen: \"0.0.0.0:{port}\", allow_anonymous_commands: true}",
    );
    assert!(yaml.contains("allow_anonymous_commands"), "{yaml}");
    let gw = start_gateway(&yaml);
    gw.wait_log("anyone on the network can write to relay", T)
        .await;
    wait_commands_ready(&gw, &mut pty).await;
}

/// The relay's config served on the network (`0.0.0.0`, reached here through 127.0.0.1) with
/// no logins; `broker_extra` goes into the `broker:` mapping, `baud` is the relay's line speed.
fn network_relay(pty: &Pty, broker_extra: &str, baud: u32) -> String {
    relay_config(&pty.path, "")
        .replace(
            "broker: {listen: \"127.0.0.1:{port}\"}",
            &format!("broker: {{listen: \"0.0.0.0:{{port}}\"{broker_extra}}}"),
        )
        .replace(
            "    rules: [climate]\n",
            &format!("    baud: {baud}\n    rules: [climate]\n"),
        )
}

/// Writes `yaml` over the running gateway's config, sends SIGHUP, and waits until the reload
/// is applied and the relay (restarted or not) is online again.
async fn reload(gw: &Gateway, yaml: &str) {
    let count = |what: &str| gw.logs().matches(what).count();
    let (onlines, reloads, restarts) = (
        count("device online"),
        count("config reloaded"),
        count("restarting it"),
    );
    let yaml = yaml
        .replace("{port}", &gw.port.to_string())
        .replace("{dir}", &gw.dir.path().display().to_string());
    std::fs::write(gw.config_path(), yaml).unwrap();
    gw.signal("HUP");
    let deadline = std::time::Instant::now() + T;
    while count("config reloaded") == reloads {
        assert!(
            std::time::Instant::now() < deadline,
            "no reload:\n{}",
            gw.logs()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    if count("restarting it") > restarts {
        while count("device online") == onlines {
            assert!(
                std::time::Instant::now() < deadline,
                "relay not back:\n{}",
                gw.logs()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// An anonymous client keeps sending `ON` for a while (the link subscribes on its own thread
/// after a reload, so one message proves nothing): the relay must be written nothing, and no
/// reply may say a command was taken.
async fn assert_anonymous_commands_refused(gw: &Gateway, pty: &mut Pty) {
    let mut replies =
        Subscriber::connect(gw.port, &["cmd/gw/relay/result"], QoS::AtLeastOnce).await;
    for _ in 0..10 {
        publish(gw.port, "cmd/gw/relay/set", b"ON").await;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_nothing_written(pty, Duration::from_millis(500)).await;
    replies.assert_quiet(Duration::from_millis(300)).await;
}

/// Issue 31: the file said `listen: 127.0.0.1`, but a listener is bound at start, so the
/// broker kept serving 0.0.0.0 without logins after the reload; the relay, restarted for its
/// new baud, took commands again from anyone on the network. Who may command a device
/// follows the broker in force, not a file that is not applied yet.
#[tokio::test]
async fn a_reload_to_loopback_does_not_turn_commands_on_while_the_network_listener_runs() {
    let mut pty = Pty::new();
    let gw = start_gateway(&network_relay(&pty, "", 9600));
    gw.wait_log("the commands of relay are off", T).await;
    gw.wait_log("device online", T).await;

    let loopback = network_relay(&pty, "", 19200).replace("0.0.0.0:{port}", "127.0.0.1:{port}");
    reload(&gw, &loopback).await;
    gw.wait_log(
        "`broker` settings changed; they take effect at the next restart",
        T,
    )
    .await;
    gw.wait_log("reload: device changed, restarting it", T)
        .await;
    gw.wait_log("the commands of relay stay off", T).await;
    assert_anonymous_commands_refused(&gw, &mut pty).await;
}

/// `allow_anonymous_commands` is a broker setting: like the others, a reload does not apply
/// it (the log says so); the relay restarted by the same reload takes no commands.
#[tokio::test]
async fn allow_anonymous_commands_waits_for_a_restart() {
    let mut pty = Pty::new();
    let gw = start_gateway(&network_relay(&pty, "", 9600));
    gw.wait_log("the commands of relay are off", T).await;
    gw.wait_log("device online", T).await;

    reload(
        &gw,
        &network_relay(&pty, ", allow_anonymous_commands: true", 19200),
    )
    .await;
    gw.wait_log(
        "`broker` settings changed; they take effect at the next restart",
        T,
    )
    .await;
    gw.wait_log("the commands of relay stay off", T).await;
    assert_anonymous_commands_refused(&gw, &mut pty).await;
}

/// Access rules made the network listener safe to command through; a reload that removes
/// them takes effect at once (the rules are swapped in), so the commands go off at once too,
/// although the relay's own settings did not change.
#[tokio::test]
async fn a_reload_that_drops_the_access_rules_turns_commands_off() {
    let mut pty = Pty::new();
    let rules = tempfile::tempdir().unwrap();
    let acl = write_temp(rules.path(), "acl", "topic readwrite #\n");
    let guarded = network_relay(&pty, &format!(", acl_file: \"{}\"", acl.display()), 9600);
    let gw = start_gateway(&guarded);
    wait_commands_ready(&gw, &mut pty).await;

    reload(&gw, &network_relay(&pty, "", 9600)).await;
    gw.wait_log("the broker's logins and access rules are in force", T)
        .await;
    gw.wait_log("the commands of relay are off from now", T)
        .await;
    assert_anonymous_commands_refused(&gw, &mut pty).await;
}

/// Issue 31: the README's `write: "FAN={payload}\n"` (no `match:`) wrote the payload byte for
/// byte, so `1\nR1=ON` reached the device as two commands and a client allowed only the fan
/// topic could switch the relay. A payload that carries a line end or another control
/// character is refused like one that does not match: an error on the reply topic, a log line,
/// the `rejected` counter; the device gets nothing of it.
#[tokio::test]
async fn a_payload_cannot_smuggle_a_second_command_to_the_device() {
    let mut pty = Pty::new();
    let config = format!(
        r#"
gateway: {{id: gw, state_dir: "{{dir}}/state", stats_interval: 1s}}
broker: {{listen: "127.0.0.1:{{port}}"}}
devices:
  - {{name: fan, port: {port}, commands: [fan]}}
commands:
  fan:
    subscribe: "cmd/{{gateway}}/{{device}}/fan"
    write: "FAN={{payload}}\n"
    reply_topic: "cmd/{{gateway}}/{{device}}/fan/result"
"#,
        port = pty.path.display()
    );
    let gw = start_gateway(&config);
    wait_written(&gw, gw.port, &mut pty, "cmd/gw/fan/fan", b"1", b"FAN=1\n").await;
    let mut replies = Subscriber::connect(
        gw.port,
        &["cmd/gw/fan/fan/result", "serial2mqtt/gw/stats"],
        QoS::AtLeastOnce,
    )
    .await;
    for (payload, what) in [
        (&b"1\nR1=ON"[..], "a line feed (0x0A)"),
        (b"1\rX", "a carriage return (0x0D)"),
    ] {
        publish(gw.port, "cmd/gw/fan/fan", payload).await;
        let reply = replies.next_on("cmd/gw/fan/fan/result", T).await.payload;
        assert!(
            reply.starts_with("error: the payload holds") && reply.contains(what),
            "{reply}"
        );
        assert_nothing_written(&mut pty, Duration::from_millis(300)).await;
    }
    gw.wait_log("command rejected: the payload holds a line feed (0x0A)", T)
        .await;
    let stats = stats_until(&mut replies, "gw", |s| {
        s["devices"]["fan"]["commands"]["rejected"].as_u64() == Some(2)
    })
    .await;
    assert_eq!(stats["devices"]["fan"]["commands"]["written"], 1, "{stats}");
    // An ordinary payload still goes through, whole.
    publish(gw.port, "cmd/gw/fan/fan", b"2").await;
    assert_eq!(read_bytes(&mut pty, 6).await, b"FAN=2\n");
}

/// A command that must pass control bytes (a terminal line, a raw pass-through) says so with
/// `allow_control: true`; its payloads are written as they are.
#[tokio::test]
async fn allow_control_passes_a_payload_as_it_is() {
    let mut pty = Pty::new();
    let config = format!(
        r#"
gateway: {{id: gw, state_dir: "{{dir}}/state"}}
broker: {{listen: "127.0.0.1:{{port}}"}}
devices:
  - {{name: term, port: {port}, commands: [raw]}}
commands:
  raw: {{subscribe: "cmd/{{gateway}}/{{device}}/raw", write: "{{payload}}", allow_control: true}}
"#,
        port = pty.path.display()
    );
    let gw = start_gateway(&config);
    wait_written(
        &gw,
        gw.port,
        &mut pty,
        "cmd/gw/term/raw",
        b"A\r\n",
        b"A\r\n",
    )
    .await;
    publish(gw.port, "cmd/gw/term/raw", b"1\nR1=ON").await;
    assert_eq!(read_bytes(&mut pty, 7).await, b"1\nR1=ON");
}

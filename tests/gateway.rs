//! End-to-end: frames written into a real pty reach a real MQTT client over TCP through the
//! real `serial2mqtt` binary and its embedded broker.

mod common;

use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

use common::*;
use rumqttc::QoS;

const T: Duration = Duration::from_secs(5);

#[tokio::test]
async fn frames_on_a_serial_port_reach_a_tcp_subscriber() {
    let mut pty = Pty::new();
    let gw = start_gateway(&climate_config(&pty.path, ""));
    let mut sub = Subscriber::connect(gw.port, &["sensors/#"], QoS::AtMostOnce).await;
    gw.wait_log("device online", T).await;

    pty.write(b"T=21.5;H=40\n").await;
    let t = sub.next(T).await;
    assert_eq!(
        (t.topic.as_str(), t.payload.as_str()),
        ("sensors/greenhouse/temperature", "21.5")
    );
    let h = sub.next(T).await;
    assert_eq!(
        (h.topic.as_str(), h.payload.as_str()),
        ("sensors/greenhouse/humidity", "40")
    );

    // Split across writes, with CRLF: still one frame.
    pty.write(b"T=-3.25;").await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    pty.write(b"H=77\r\n").await;
    assert_eq!(sub.next(T).await.payload, "-3.25");
    assert_eq!(sub.next(T).await.payload, "77");
}

#[tokio::test]
async fn retain_and_qos_from_the_rule_reach_subscribers() {
    let mut pty = Pty::new();
    let gw = start_gateway(&climate_config(&pty.path, ""));
    let mut live = Subscriber::connect(gw.port, &["sensors/#"], QoS::AtLeastOnce).await;
    gw.wait_log("device online", T).await;
    pty.write(b"T=19.0;H=55\n").await;

    // A live subscriber gets the message at its subscription's QoS, not flagged retained.
    let m = live.next_on("sensors/greenhouse/temperature", T).await;
    assert_eq!(m.payload, "19.0");
    assert_eq!(m.qos, QoS::AtLeastOnce);
    assert!(!m.retain, "a live delivery is not a retained replay");
    let _ = live.next_on("sensors/greenhouse/humidity", T).await;

    // A subscriber arriving later gets the retained temperature (retain: true in the rule) and
    // not the humidity (retain: false).
    let mut late = Subscriber::connect(gw.port, &["sensors/#"], QoS::AtLeastOnce).await;
    let r = late.next(T).await;
    assert_eq!(r.topic, "sensors/greenhouse/temperature");
    assert_eq!(r.payload, "19.0");
    assert!(r.retain, "retained flag set on replay");
    assert_eq!(r.qos, QoS::AtLeastOnce);
    late.assert_quiet(Duration::from_millis(500)).await;
}

#[tokio::test]
async fn device_state_is_retained_online_and_goes_offline_on_unplug_then_online_on_replug() {
    let pty1 = Pty::new();
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("usb-sensor");
    repoint(&link, &pty1.path);
    let gw = start_gateway(&climate_config(&link, ""));
    let state_topic = "serial2mqtt/testgw/devices/greenhouse/state";
    let mut sub = Subscriber::connect(gw.port, &[state_topic, "sensors/#"], QoS::AtLeastOnce).await;
    assert_eq!(sub.next_on(state_topic, T).await.payload, "online");

    // Unplug: the master side goes away, the gateway's reads fail.
    drop(pty1);
    gw.wait_log("device offline", T).await;
    sub.next_change(state_topic, "online", "offline", T).await;

    // Replug as a different pty behind the same stable link, as /dev/serial/by-id does.
    let mut pty2 = Pty::new();
    repoint(&link, &pty2.path);
    sub.next_change(state_topic, "offline", "online", Duration::from_secs(10))
        .await;
    pty2.write(b"T=22.0;H=41\n").await;
    assert_eq!(
        sub.next_on("sensors/greenhouse/temperature", T)
            .await
            .payload,
        "22.0"
    );

    // A late subscriber sees the retained current state.
    let mut late = Subscriber::connect(gw.port, &[state_topic], QoS::AtMostOnce).await;
    let s = late.next(T).await;
    assert_eq!((s.payload.as_str(), s.retain), ("online", true));
}

#[tokio::test]
async fn a_port_missing_at_start_comes_online_when_it_appears() {
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("not-yet");
    let gw = start_gateway(&climate_config(&link, ""));
    let state_topic = "serial2mqtt/testgw/devices/greenhouse/state";
    let mut sub = Subscriber::connect(gw.port, &[state_topic, "sensors/#"], QoS::AtMostOnce).await;
    assert_eq!(sub.next_on(state_topic, T).await.payload, "offline");
    gw.wait_log("does not exist (unplugged?)", T).await;

    let mut pty = Pty::new();
    repoint(&link, &pty.path);
    sub.next_change(state_topic, "offline", "online", Duration::from_secs(10))
        .await;
    pty.write(b"T=1;H=2\n").await;
    assert_eq!(
        sub.next_on("sensors/greenhouse/temperature", T)
            .await
            .payload,
        "1"
    );
}

#[tokio::test]
async fn bad_input_is_counted_and_logged_and_never_stops_good_frames() {
    let mut pty = Pty::new();
    let extra = "  unmatched_topic: serial2mqtt/{gateway}/devices/{device}/unmatched";
    let mut gw = start_gateway(&climate_config(&pty.path, extra));
    let mut sub = Subscriber::connect(
        gw.port,
        &["sensors/#", "serial2mqtt/+/devices/+/unmatched"],
        QoS::AtMostOnce,
    )
    .await;
    gw.wait_log("device online", T).await;

    // Overlong (max_frame is 64), invalid UTF-8, garbage, a frame that matches nothing.
    let mut junk = vec![b'x'; 5000];
    junk.push(b'\n');
    junk.extend_from_slice(b"T=\xff\xfe;H=1\n");
    junk.extend_from_slice(&[0u8, 1, 2, 3, 0x80, 0xc0, b'\n']);
    junk.extend_from_slice(b"hello world\n");
    pty.write(&junk).await;
    pty.write(b"T=20.5;H=50\n").await;

    let mut got = Vec::new();
    loop {
        let m = sub.next(T).await;
        let done = m.topic == "sensors/greenhouse/humidity";
        got.push(m);
        if done {
            break;
        }
    }
    let unmatched: Vec<_> = got
        .iter()
        .filter(|m| m.topic.ends_with("/unmatched"))
        .collect();
    assert!(
        unmatched.iter().any(|m| m.payload == "hello world"),
        "{got:?}"
    );
    assert!(got
        .iter()
        .any(|m| m.topic == "sensors/greenhouse/temperature" && m.payload == "20.5"));
    assert!(
        !got.iter().any(|m| m.payload.contains("xxxxxxxx")),
        "overlong frame must not be published"
    );

    gw.wait_log("frame longer than max_frame dropped", T).await;
    gw.wait_log("not UTF-8", T).await;
    gw.wait_log("frame matched no rule", T).await;
    assert!(gw.is_running());

    // The counters reach the log on shutdown; SIGTERM exits 0.
    let status = gw.terminate();
    assert!(status.success(), "{status:?}");
    let logs = gw.logs();
    assert!(logs.contains("too_long=1"), "{logs}");
    assert!(logs.contains("invalid_utf8=2"), "{logs}");
    assert!(!logs.contains("panicked"), "{logs}");
}

#[tokio::test]
async fn sigterm_announces_offline_and_exits_cleanly() {
    let pty = Pty::new();
    let mut gw = start_gateway(&climate_config(&pty.path, ""));
    let state_topic = "serial2mqtt/testgw/devices/greenhouse/state";
    let mut sub = Subscriber::connect(gw.port, &[state_topic], QoS::AtLeastOnce).await;
    assert_eq!(sub.next_on(state_topic, T).await.payload, "online");
    let status = tokio::task::spawn_blocking(move || {
        let s = gw.terminate();
        (s, gw)
    });
    sub.next_change(state_topic, "online", "offline", T).await;
    let (status, gw) = status.await.unwrap();
    assert!(status.success(), "{status:?}\n{}", gw.logs());
    assert!(gw.logs().contains("serial2mqtt stopped"), "{}", gw.logs());
}

#[tokio::test]
async fn json_and_binary_rules_publish_typed_json() {
    let mut text = Pty::new();
    let mut bin = Pty::new();
    let yaml = format!(
        r#"
gateway: {{id: testgw}}
broker: {{listen: "127.0.0.1:{{port}}"}}
devices:
  - {{name: garden, port: {text}, rules: [weather]}}
  - {{name: meter, port: {bin}, framing: cobs, rules: [power]}}
rules:
  weather:
    json: true
    publish:
      - {{topic: "sensors/{{device}}/{{id}}/state", payload: {{t: "{{temperature}}", h: "{{humidity}}"}}}}
  power:
    fields:
      - {{name: volts, offset: 0, type: u16le, scale: 0.01}}
      - {{name: amps, offset: 2, type: i16le, scale: 0.001}}
    publish:
      - {{topic: "power/{{device}}", payload: {{v: "{{volts}}", a: "{{amps}}"}}}}
"#,
        text = text.path.display(),
        bin = bin.path.display()
    );
    let gw = start_gateway(&yaml);
    let mut sub = Subscriber::connect(gw.port, &["sensors/#", "power/#"], QoS::AtMostOnce).await;
    gw.wait_log("device online device=meter", T).await;
    gw.wait_log("device online device=garden", T).await;

    text.write(br#"{"id":"ws1","temperature":12.5,"humidity":81}"#)
        .await;
    text.write(b"\n").await;
    let m = sub.next_on("sensors/garden/ws1/state", T).await;
    assert_eq!(m.payload, r#"{"t":12.5,"h":81}"#);

    let mut payload = 23049u16.to_le_bytes().to_vec();
    payload.extend_from_slice(&(-1250i16).to_le_bytes());
    let mut wire = Vec::new();
    serial2mqtt::serial::framing::encode_frame(
        &serial2mqtt::serial::framing::Framing::Cobs,
        &payload,
        &mut wire,
    );
    bin.write(&wire).await;
    let m = sub.next_on("power/meter", T).await;
    assert_eq!(m.payload, r#"{"v":230.49,"a":-1.25}"#);
}

#[tokio::test]
async fn a_taken_broker_port_is_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let config = write_temp(
        dir.path(),
        "c.yaml",
        &format!("broker: {{listen: \"127.0.0.1:{port}\"}}\n"),
    );
    let out = serial2mqtt_command()
        .args(["run", "--config"])
        .arg(&config)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot listen on 127.0.0.1:{port}")),
        "{err}"
    );
    assert!(err.contains("broker.listen"), "{err}");
}

#[tokio::test]
async fn mosquitto_sub_sees_the_readings() {
    if !have_tool("mosquitto_sub") {
        return;
    }
    let mut pty = Pty::new();
    let gw = start_gateway(&climate_config(&pty.path, ""));
    gw.wait_log("device online", T).await;
    let mut sub = tokio::process::Command::new("mosquitto_sub")
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &gw.port.to_string(),
            "-t",
            "sensors/#",
            "-v",
            "-W",
            "20",
        ])
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // mosquitto_sub says nothing when its subscription is in place, so the
    // frame is written again until the live (not retained) humidity shows up:
    // a slow start of the subscriber then costs a repeat, not the test.
    let mut lines = BufReader::new(sub.stdout.take().unwrap()).lines();
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while !text.contains("sensors/greenhouse/humidity 40") {
        assert!(tokio::time::Instant::now() < deadline, "{text}");
        pty.write(b"T=21.5;H=40\n").await;
        let until = tokio::time::Instant::now() + Duration::from_secs(1);
        while let Ok(Ok(Some(line))) = tokio::time::timeout_at(until, lines.next_line()).await {
            text.push_str(&line);
            text.push('\n');
        }
    }
    // The retained temperature and the live humidity, in the README's format.
    assert!(
        text.contains("sensors/greenhouse/temperature 21.5"),
        "{text}"
    );
    assert!(text.contains("sensors/greenhouse/humidity 40"), "{text}");
}

#[tokio::test]
async fn ports_that_cannot_be_serial_devices_get_a_clear_error_and_the_rest_keeps_running() {
    let mut pty = Pty::new();
    let dir = tempfile::tempdir().unwrap();
    let file = write_temp(dir.path(), "plain.txt", "not a tty");
    let yaml = format!(
        r#"
gateway: {{id: testgw}}
broker: {{listen: "127.0.0.1:{{port}}"}}
devices:
  - {{name: adir, port: {dir}, rules: [all]}}
  - {{name: afile, port: {file}, rules: [all]}}
  - {{name: gone, port: {dir}/ttyUSB9, rules: [all]}}
  - {{name: good, port: {pty}, rules: [all]}}
rules:
  all: {{publish: [{{topic: "raw/{{device}}"}}]}}
"#,
        dir = dir.path().display(),
        file = file.display(),
        pty = pty.path.display()
    );
    let gw = start_gateway(&yaml);
    gw.wait_log("is a directory, not a serial device", T).await;
    gw.wait_log("plain.txt is not a serial port", T).await;
    gw.wait_log("ttyUSB9 does not exist (unplugged?)", T).await;
    let mut sub = Subscriber::connect(gw.port, &["raw/#"], QoS::AtMostOnce).await;
    gw.wait_log("device=good", T).await;
    pty.write(b"still here\n").await;
    let m = sub.next(T).await;
    assert_eq!(
        (m.topic.as_str(), m.payload.as_str()),
        ("raw/good", "still here")
    );
    // Each failing device logged its reason once, not once per retry.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(
        gw.logs()
            .matches("is a directory, not a serial device")
            .count(),
        1,
        "{}",
        gw.logs()
    );
}

#[tokio::test]
async fn a_port_held_by_another_program_is_reported_as_in_use() {
    let pty = Pty::new();
    // Another program holds the port (serialport opens it exclusively, TIOCEXCL).
    let path = pty.path.to_string_lossy().into_owned();
    let _held = tokio_serial::SerialStream::open(&tokio_serial::new(&path, 9600))
        .expect("open the pty slave exclusively");
    let yaml = format!(
        "gateway: {{id: testgw}}\nbroker: {{listen: \"127.0.0.1:{{port}}\"}}\ndevices:\n  - {{name: first, port: {path}, rules: [all]}}\nrules:\n  all: {{publish: [{{topic: raw}}]}}\n",
    );
    let gw = start_gateway(&yaml);
    gw.wait_log("is in use by another program", T).await;
    assert_eq!(
        gw.logs().matches("device online").count(),
        0,
        "{}",
        gw.logs()
    );
}

#[tokio::test]
async fn the_demo_simulator_feeds_the_real_serial_path() {
    let yaml = r#"
gateway: {id: demo}
broker: {listen: "127.0.0.1:{port}"}
devices:
  - name: greenhouse
    simulate: {profile: climate, interval: 50ms}
    rules: [climate]
  - name: meter
    simulate: {profile: power, interval: 50ms}
    framing: cobs
    rules: [power]
rules:
  climate:
    match: '^T=(?P<temp>-?\d+(?:\.\d+)?);H=(?P<hum>\d+)$'
    publish: [{topic: "sensors/{device}/temperature", payload: "{temp}"}]
  power:
    fields:
      - {name: volts, offset: 0, type: u16le, scale: 0.01}
    publish: [{topic: "power/{device}", payload: {v: "{volts}"}}]
"#;
    let gw = start_gateway(yaml);
    let mut sub = Subscriber::connect(gw.port, &["sensors/#", "power/#"], QoS::AtMostOnce).await;
    let t = sub.next_on("sensors/greenhouse/temperature", T).await;
    let temp: f64 = t.payload.parse().expect("a number");
    assert!((15.0..=30.0).contains(&temp), "{temp}");
    let p = sub.next_on("power/meter", T).await;
    let v: serde_json::Value = serde_json::from_str(&p.payload).unwrap();
    assert!((215.0..=245.0).contains(&v["v"].as_f64().unwrap()), "{v}");
    assert!(
        gw.logs().contains("simulated sensor started"),
        "{}",
        gw.logs()
    );
}

/// A backlog read at once (a Pi catching up) reaches local subscribers whole and in order: the
/// gateway hands it to the broker in batches (`LINK_BATCH` in src/broker.rs).
#[tokio::test]
async fn a_burst_of_frames_reaches_a_local_subscriber_whole_and_in_order() {
    let mut pty = Pty::new();
    let gw = start_gateway(&climate_config(&pty.path, ""));
    let mut sub = Subscriber::connect(gw.port, &["sensors/#"], QoS::AtLeastOnce).await;
    gw.wait_log("device online", T).await;

    let burst: String = (1..=500).map(|i| format!("T={i};H={i}\n")).collect();
    pty.write(burst.as_bytes()).await;
    for i in 1..=500 {
        for topic in [
            "sensors/greenhouse/temperature",
            "sensors/greenhouse/humidity",
        ] {
            let m = sub.next(T).await;
            assert_eq!(
                (m.topic.as_str(), m.payload.as_str()),
                (topic, i.to_string().as_str())
            );
        }
    }
}

/// Two gateways on one state_dir would each send and delete the other's queued readings: the
/// second refuses to start, naming the directory and the first one's PID, and starts once the
/// first is gone (kill -9 included: the lock dies with its process).
#[tokio::test]
async fn a_second_gateway_on_the_same_state_dir_refuses_to_start_naming_the_first() {
    let state = tempfile::tempdir().unwrap();
    let yaml = format!(
        "gateway: {{id: gw1, state_dir: \"{}\"}}\nbroker: {{listen: \"127.0.0.1:{{port}}\"}}\n\
         uplink: {{url: \"mqtt://127.0.0.1:{}\"}}\ndevices: []\n",
        state.path().display(),
        free_port()
    );
    let mut first = start_gateway(&yaml);
    let dir = tempfile::tempdir().unwrap();
    let config = write_temp(
        dir.path(),
        "second.yaml",
        &yaml.replace("{port}", &free_port().to_string()),
    );
    let mut second = serial2mqtt_command()
        .args(["run", "--config"])
        .arg(&config)
        .env("NO_COLOR", "1")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while second.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = second.kill();
            panic!("a second gateway on the same state_dir kept running");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let out = second.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "gateway.state_dir {} is in use by another serial2mqtt (PID {})",
            state.path().display(),
            first.child.id()
        )),
        "{err}"
    );
    first.child.kill().unwrap();
    first.child.wait().unwrap();
    let _second = start_gateway(&yaml);
}

/// A directory named like a queue segment made every start fail (`Is a directory`, no path):
/// under systemd a restart loop. Now the gateway starts, names it and leaves it alone.
#[tokio::test]
async fn a_directory_named_like_a_queue_segment_is_reported_and_the_gateway_runs() {
    let state = tempfile::tempdir().unwrap();
    let stray = state.path().join("queue/00000000000000000001.seg");
    std::fs::create_dir_all(&stray).unwrap();
    let gw = start_gateway(&format!(
        "gateway: {{id: gw1, state_dir: \"{}\"}}\nbroker: {{listen: \"127.0.0.1:{{port}}\"}}\n\
         uplink: {{url: \"mqtt://127.0.0.1:{}\"}}\ndevices: []\n",
        state.path().display(),
        free_port()
    ));
    gw.wait_log("store-and-forward queue open", T).await;
    let logs = gw.logs();
    assert!(
        logs.contains(&format!(
            "{} is named like a queue segment but is not a regular file",
            stray.display()
        )),
        "{logs}"
    );
    assert!(stray.is_dir());
}

/// A gateway `testgw` on a free port with these `devices:` and `rules:` entries.
fn testgw(devices: &str, rules: &str) -> String {
    format!(
        "gateway: {{id: testgw}}\nbroker: {{listen: \"127.0.0.1:{{port}}\"}}\ndevices:\n{devices}rules:\n{rules}"
    )
}

/// One lost byte used to shift every later `fixed` frame for good (a PM2.5 of 5683.2 instead
/// of 11.1, forever, without a word). With start and end bytes the decoder finds the next
/// frame, and the skipped bytes are counted and logged.
#[tokio::test]
async fn a_lost_byte_costs_one_fixed_frame_not_every_later_one() {
    let mut pty = Pty::new();
    let yaml = testgw(
        &format!(
            r#"  - name: sds
    port: {}
    baud: 9600
    framing: {{fixed: 10, start_hex: "AA C0", end_hex: "AB"}}
    rules: [pm]
"#,
            pty.path.display()
        ),
        SDS011_PM_RULE,
    );
    let gw = start_gateway(&yaml);
    let mut sub = Subscriber::connect(gw.port, &["sensors/#"], QoS::AtMostOnce).await;
    gw.wait_log("device online", T).await;
    let mut wire = sds011(111);
    let mut damaged = sds011(222);
    damaged.remove(3); // a byte lost on the line
    wire.extend(damaged);
    for pm in [333, 444, 555] {
        wire.extend(sds011(pm));
    }
    pty.write(&wire).await;
    let mut got = Vec::new();
    for _ in 0..4 {
        got.push(sub.next_on("sensors/sds/pm25", T).await.payload);
    }
    assert_eq!(got, ["11.1", "33.3", "44.4", "55.5"]);
    gw.wait_log("to find the next frame", T).await;
}

/// `gap` framing: a frame ends after the line is silent (Modbus RTU's way); a short reply
/// between two long ones is one frame of its own, not the start of a shifted stream.
#[tokio::test]
async fn gap_framing_ends_frames_at_silence_so_a_short_reply_shifts_nothing() {
    let mut pty = Pty::new();
    let yaml = testgw(
        &format!(
            r#"  - name: meter
    port: {}
    baud: 9600
    framing: {{gap: 40ms}}
    rules: [reply]
"#,
            pty.path.display()
        ),
        r#"  reply:
    # A 7-byte reply: address, function, byte count, value (u16 BE, tenths), CRC. The 5-byte
    # exception reply is too short for the `crc` field, so no rule matches it.
    fields:
      - {name: volts, offset: 3, type: u16be, scale: 0.1}
      - {name: crc, offset: 5, type: u16le}
    publish:
      - {topic: "power/{device}/volts", payload: "{volts}"}
"#,
    );
    let gw = start_gateway(&yaml);
    let mut sub = Subscriber::connect(gw.port, &["power/#"], QoS::AtMostOnce).await;
    gw.wait_log("device online", T).await;
    let reply = |v: u16| {
        let mut f = vec![0x01, 0x03, 0x02];
        f.extend_from_slice(&v.to_be_bytes());
        f.extend_from_slice(&[0x12, 0x34]); // CRC (not checked by the framing)
        f
    };
    for frame in [reply(2301), vec![0x01, 0x83, 0x02, 0xC0, 0xF1], reply(2302)] {
        // Bytes of one frame arrive in two pieces with a pause shorter than the gap.
        let (a, b) = frame.split_at(2);
        pty.write(a).await;
        tokio::time::sleep(Duration::from_millis(2)).await;
        pty.write(b).await;
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    assert_eq!(sub.next(T).await.payload, "230.1");
    assert_eq!(
        sub.next(T).await.payload,
        "230.2",
        "not shifted by the short reply"
    );
    sub.assert_quiet(Duration::from_millis(200)).await;
}

/// Frames a user knowingly does not want (NMEA `$GPGSV`, a banner) used to be "unmatched" and
/// logged every 10 s forever; a `drop: true` rule takes them: nothing published, counted as
/// `dropped` in the stats, no warning.
#[tokio::test]
async fn a_drop_rule_takes_known_frames_quietly_and_counts_them() {
    let mut pty = Pty::new();
    let yaml = climate_config(&pty.path, "  stats_interval: 1s")
        .replace("rules: [climate]", "rules: [gsv, climate]")
        .replace(
            "rules:\n  climate:",
            "rules:\n  gsv:\n    match: '^\\$GPGSV,'\n    drop: true\n  climate:",
        );
    let gw = start_gateway(&yaml);
    let mut sub = Subscriber::connect(
        gw.port,
        &["sensors/#", "serial2mqtt/testgw/stats"],
        QoS::AtMostOnce,
    )
    .await;
    gw.wait_log("device online", T).await;
    pty.write(b"$GPGSV,3,1,11,03,03,111,00*74\n$GPGSV,3,2,11,04,15,270,00*76\nT=21.5;H=40\n")
        .await;
    assert_eq!(
        sub.next_on("sensors/greenhouse/temperature", T)
            .await
            .payload,
        "21.5"
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let stats = sub.next_on("serial2mqtt/testgw/stats", T).await;
        let v: serde_json::Value = serde_json::from_str(&stats.payload).unwrap();
        let d = &v["devices"]["greenhouse"];
        if d["frames"] == 3 {
            assert_eq!(
                (d["dropped"].as_u64(), d["unmatched"].as_u64()),
                (Some(2), Some(0))
            );
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{v}");
    }
    assert!(!gw.logs().contains("matched no rule"), "{}", gw.logs());
}

/// A JSON field or capture used in a topic (`"id":"x/y"`) used to add topic levels: the
/// reading went to `sensors/x/y/state`. Such a message is not published; the reason is logged
/// and counted as `bad_topic`; the next good frame goes where it should.
#[tokio::test]
async fn a_value_from_the_frame_never_adds_topic_levels() {
    let mut pty = Pty::new();
    let yaml = testgw(
        &format!(
            r#"  - {{name: garden, port: {}, rules: [weather]}}
"#,
            pty.path.display()
        ),
        r#"  weather:
    json: true
    publish:
      - {topic: "sensors/{id}/state", payload: "{t}"}
"#,
    );
    let gw = start_gateway(&yaml);
    let mut sub = Subscriber::connect(gw.port, &["sensors/#"], QoS::AtMostOnce).await;
    gw.wait_log("device online", T).await;
    pty.write(b"{\"id\":\"x/y\",\"t\":1}\n{\"id\":\"ws1\",\"t\":2}\n")
        .await;
    let m = sub.next(T).await;
    assert_eq!(
        (m.topic.as_str(), m.payload.as_str()),
        ("sensors/ws1/state", "2")
    );
    gw.wait_log("would add a topic level", T).await;
}

/// A zero-padded reading (DSMR's `001234.567`, NMEA's `08`) used to be published as a string
/// while `12.345` was a number: the same field flipped type from reading to reading. Now the
/// rule decides: numbers whatever their digits, text where `types:` says so.
#[tokio::test]
async fn a_fields_json_type_never_depends_on_its_digits() {
    let mut pty = Pty::new();
    let yaml = testgw(
        &format!(
            r#"  - {{name: p1, port: {}, rules: [energy]}}
"#,
            pty.path.display()
        ),
        r#"  energy:
    match: '^(?P<meter>\d+) 1-0:1\.8\.1\((?P<kwh>\d+\.\d+)\*kWh\)$'
    types: {meter: string}
    publish:
      - {topic: "power/{device}", payload: {meter: "{meter}", kwh: "{kwh}"}}
"#,
    );
    let gw = start_gateway(&yaml);
    let mut sub = Subscriber::connect(gw.port, &["power/#"], QoS::AtMostOnce).await;
    gw.wait_log("device online", T).await;
    pty.write(b"0042 1-0:1.8.1(001234.567*kWh)\n0042 1-0:1.8.1(12345.678*kWh)\n")
        .await;
    assert_eq!(
        sub.next(T).await.payload,
        r#"{"meter":"0042","kwh":1234.567}"#
    );
    assert_eq!(
        sub.next(T).await.payload,
        r#"{"meter":"0042","kwh":12345.678}"#
    );
}

/// A JSON frame's `10.000` used to be published as `10.0` (parsed into a float and printed
/// again): the digits the device sent are kept, in text payloads and in JSON ones.
#[tokio::test]
async fn a_json_frames_numbers_keep_the_devices_digits() {
    let mut pty = Pty::new();
    let yaml = testgw(
        &format!(
            r#"  - {{name: s, port: {}, rules: [reading]}}
"#,
            pty.path.display()
        ),
        r#"  reading:
    json: true
    publish:
      - {topic: "t/text", payload: "{t}"}
      - {topic: "t/json", payload: {t: "{t}", n: "{n}"}}
"#,
    );
    let gw = start_gateway(&yaml);
    let mut sub = Subscriber::connect(gw.port, &["t/#"], QoS::AtMostOnce).await;
    gw.wait_log("device online", T).await;
    pty.write(b"{\"t\": 10.000, \"n\": 7}\n").await;
    assert_eq!(sub.next_on("t/text", T).await.payload, "10.000");
    assert_eq!(
        sub.next_on("t/json", T).await.payload,
        r#"{"t":10.000,"n":7}"#
    );
}

/// A second gateway whose broker port is taken by the first used to be told "another MQTT
/// broker (mosquitto?)"; it is told the holder is serial2mqtt, with its PID.
#[tokio::test]
async fn a_broker_port_taken_by_another_gateway_names_it() {
    let first =
        start_gateway("gateway: {id: a}\nbroker: {listen: \"127.0.0.1:{port}\"}\ndevices: []\n");
    let dir = tempfile::tempdir().unwrap();
    let config = write_temp(
        dir.path(),
        "second.yaml",
        &format!(
            "gateway: {{id: b, state_dir: \"{}/state\"}}\nbroker: {{listen: \"127.0.0.1:{}\"}}\ndevices: []\n",
            dir.path().display(),
            first.port
        ),
    );
    let out = serial2mqtt_command()
        .args(["run", "--config"])
        .arg(&config)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("(PID {}) listens there", first.child.id())),
        "{err}"
    );
    // Under an emulator (cross/smoke.sh) the process is named after the emulator.
    if std::env::var_os("SERIAL2MQTT_TEST_RUNNER").is_none() {
        assert!(err.contains("Another serial2mqtt (PID"), "{err}");
    }
}

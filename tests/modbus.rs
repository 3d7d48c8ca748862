//! The Modbus RTU master against an independent slave: pymodbus serving units on a pty cable.
//! Needs python3 with pymodbus (`pip install pymodbus==3.6.9 pyserial`); without it the tests skip
//! outside CI and fail in it.

mod common;

use std::time::Duration;

use common::line::Cable;
use common::slave::slave;
use common::*;
use rumqttc::QoS;

const T: Duration = Duration::from_secs(10);

fn regs_f32(v: f32) -> [u16; 2] {
    let b = v.to_be_bytes();
    [
        u16::from_be_bytes([b[0], b[1]]),
        u16::from_be_bytes([b[2], b[3]]),
    ]
}

/// Two units on one bus, every type and order the map offers, coalesced into few requests;
/// the rules publish one message per point and one JSON per device.
#[tokio::test]
async fn two_units_are_read_by_their_maps_from_pymodbus() {
    let dir = tempfile::tempdir().unwrap();
    let cable = Cable::new();
    // Unit 1: an SDM120-like meter: f32 input registers 0 (V), 6 (A), 12 (W); a u32 energy
    // in Wh low word first at holding 100; a status word with bit 2 set; a model string.
    let mut ir = vec![0u16; 20];
    ir[0..2].copy_from_slice(&regs_f32(230.5));
    ir[6..8].copy_from_slice(&regs_f32(4.25));
    ir[12..14].copy_from_slice(&regs_f32(979.6));
    let mut hr = vec![0u16; 120];
    hr[100] = 0x1170; // 70000 Wh = 0x00011170, low word first
    hr[101] = 0x0001;
    hr[102] = 0b100;
    hr[103] = u16::from_be_bytes(*b"SD");
    hr[104] = u16::from_be_bytes(*b"M1");
    hr[105] = u16::from_be_bytes(*b"20");
    hr[106] = (-125i16) as u16;
    let spec = serde_json::json!({
        "baud": 9600,
        "units": {
            "1": {"ir": ir, "hr": hr, "co": [true, false, true]},
            "2": {"ir": [2301, 0, 0, 0], "hr": [0]},
        }
    });
    let Some(_slave) = slave(&cable.device_path, &spec, dir.path()) else {
        return;
    };
    let port = cable.gateway_path.display();
    let yaml = format!(
        r#"gateway: {{id: testgw, stats_interval: 1s}}
broker: {{listen: "127.0.0.1:{{port}}"}}
devices:
  - name: meter
    port: {port}
    modbus:
      unit: 1
      every: 300ms
      timeout: 300ms
      points:
        - {{name: voltage, register: 30001, type: f32, unit: V}}
        - {{name: current, input: 6, type: f32}}
        - {{name: power, input: 0x000C, type: f32}}
        - {{name: energy, holding: 100, type: u32, order: cdab, scale: 0.001}}
        - {{name: alarm, holding: 102, bit: 2}}
        - {{name: model, holding: 103, type: string, length: 3}}
        - {{name: temperature, holding: 106, type: i16, scale: 0.1}}
        - {{name: relay, coil: 2}}
    rules: [meter_points, meter_json]
  - name: small
    port: {port}
    modbus: {{unit: 2, every: 300ms, timeout: 300ms, points: [{{name: voltage, input: 0, scale: 0.1}}]}}
    rules: [small]
rules:
  meter_points:
    points: true
    continue: true
    publish:
      - {{topic: "modbus/{{device}}/voltage", payload: "{{voltage}}"}}
      - {{topic: "modbus/{{device}}/energy", payload: "{{energy}}"}}
  meter_json:
    points: true
    publish:
      - topic: "modbus/{{device}}/state"
        payload: {{v: "{{voltage}}", a: "{{current}}", w: "{{power}}", kwh: "{{energy}}", alarm: "{{alarm}}", model: "{{model}}", t: "{{temperature}}", relay: "{{relay}}"}}
  small:
    points: true
    publish: [{{topic: "modbus/{{device}}/voltage", payload: "{{voltage}}"}}]
"#
    );
    let gw = start_gateway(&yaml);
    let mut sub = Subscriber::connect(gw.port, &["modbus/#"], QoS::AtMostOnce).await;
    assert_eq!(
        sub.next_on("modbus/meter/voltage", T).await.payload,
        "230.5"
    );
    assert_eq!(sub.next_on("modbus/meter/energy", T).await.payload, "70");
    let state: serde_json::Value =
        serde_json::from_str(&sub.next_on("modbus/meter/state", T).await.payload).unwrap();
    assert_eq!(
        state,
        serde_json::json!({"v": 230.5, "a": 4.25, "w": 979.6, "kwh": 70.0, "alarm": 1, "model": "SDM120", "t": -12.5, "relay": 1}),
        "{}",
        gw.logs()
    );
    assert_eq!(
        sub.next_on("modbus/small/voltage", T).await.payload,
        "230.1"
    );
}

/// A device of [`config`]: its name, unit id, and points as (name, where) pairs.
type Unit<'a> = (&'a str, u8, &'a [(&'a str, &'a str)]);

/// A gateway config with one Modbus device per `(name, unit, points)` on `port`, each with a
/// `points: true` rule publishing `{point}` of each point on `modbus/{device}/{point}`.
fn config(port: &std::path::Path, devices: &[Unit<'_>]) -> String {
    let mut yaml = String::from(
        "gateway: {id: testgw, stats_interval: 1s}\nbroker: {listen: \"127.0.0.1:{port}\"}\ndevices:\n",
    );
    let mut rules = String::from("rules:\n");
    for (name, unit, points) in devices {
        let list: Vec<String> = points
            .iter()
            .map(|(p, place)| format!("{{name: {p}, {place}}}"))
            .collect();
        yaml.push_str(&format!(
            "  - name: {name}\n    port: {}\n    offline_after: 2\n    offline_poll: 2s\n    modbus: {{unit: {unit}, every: 200ms, timeout: 150ms, retries: 0, points: [{}]}}\n    rules: [{}]\n",
            port.display(),
            list.join(", "),
            points.iter().map(|(p, _)| format!("{name}_{p}")).collect::<Vec<_>>().join(", ")
        ));
        for (p, _) in points.iter() {
            rules.push_str(&format!(
                "  {name}_{p}:\n    points: true\n    continue: true\n    publish: [{{topic: \"modbus/{{device}}/{p}\", payload: \"{{{p}}}\"}}]\n"
            ));
        }
    }
    yaml + &rules
}

/// A point past the end of the unit's registers gets an exception (illegal data address):
/// named in the log, counted, and the cycle's other points are still published.
#[tokio::test]
async fn an_exception_is_named_and_counted_and_the_other_points_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let cable = Cable::new();
    let spec = serde_json::json!({"units": {"1": {"ir": [2301, 17], "hr": vec![5; 10]}}});
    let Some(_slave) = slave(&cable.device_path, &spec, dir.path()) else {
        return;
    };
    let yaml = config(
        &cable.gateway_path,
        &[(
            "m",
            1,
            &[("volts", "input: 0"), ("missing", "holding: 500")],
        )],
    );
    let gw = start_gateway(&yaml);
    let mut sub = Subscriber::connect(
        gw.port,
        &["modbus/#", "serial2mqtt/testgw/stats"],
        QoS::AtMostOnce,
    )
    .await;
    assert_eq!(sub.next_on("modbus/m/volts", T).await.payload, "2301");
    gw.wait_log(
        "Modbus exception: illegal data address (02); not read this cycle: missing",
        T,
    )
    .await;
    let d = counters(&mut sub, "m", 6).await;
    assert!(d["exceptions"].as_u64() >= Some(2), "{d}");
    // Counted per point: the register of the map that is wrong, not the one that reads.
    assert!(d["point_exceptions"]["missing"].as_u64() >= Some(2), "{d}");
    assert!(d["point_exceptions"].get("volts").is_none(), "{d}");
    assert_eq!(
        d["timeouts"].as_u64(),
        Some(0),
        "an exception is an answer: {d}"
    );
    assert!(
        !sub.seen
            .lock()
            .unwrap()
            .iter()
            .any(|m| m.topic == "modbus/m/missing"),
        "a point not read is never published"
    );
}

/// A unit that does not answer is announced offline and asked only every offline_poll; the
/// unit beside it on the bus keeps its pace.
#[tokio::test]
async fn a_dead_unit_is_announced_and_does_not_slow_the_other() {
    let dir = tempfile::tempdir().unwrap();
    let cable = Cable::new();
    let spec = serde_json::json!({"units": {"1": {"ir": [2301]}}});
    let Some(_slave) = slave(&cable.device_path, &spec, dir.path()) else {
        return;
    };
    let yaml = config(
        &cable.gateway_path,
        &[
            ("alive", 1, &[("v", "input: 0")]),
            ("dead", 9, &[("v", "input: 0")]),
        ],
    );
    let gw = start_gateway(&yaml);
    let state = "serial2mqtt/testgw/devices/dead/state";
    let mut sub = Subscriber::connect(gw.port, &["modbus/#", state], QoS::AtMostOnce).await;
    sub.next_change(state, "online", "offline", T).await;
    let start = std::time::Instant::now();
    let mut updates = 0;
    while start.elapsed() < Duration::from_secs(2) {
        if tokio::time::timeout(Duration::from_millis(500), sub.next_on("modbus/alive/v", T))
            .await
            .is_ok()
        {
            updates += 1;
        }
    }
    assert!(
        updates >= 7,
        "the live unit read every 200 ms while the other is dead: {updates} in 2 s"
    );
    assert!(gw.logs().contains("device offline"), "{}", gw.logs());
}

/// Bytes flipped on the line corrupt some answers: their CRC fails, they are counted and
/// asked again, and a wrong value is never published.
#[tokio::test]
async fn a_corrupted_answer_is_never_published() {
    let dir = tempfile::tempdir().unwrap();
    // Every third chunk from the slave has its last byte flipped (the CRC, or data before it).
    let cable = Cable::with_faults(|n, bytes| {
        if n % 3 == 1 {
            if let Some(b) = bytes.last_mut() {
                *b ^= 0x10;
            }
        }
    });
    let spec = serde_json::json!({"units": {"1": {"ir": [2301, 4250]}}});
    let Some(_slave) = slave(&cable.device_path, &spec, dir.path()) else {
        return;
    };
    let yaml = config(
        &cable.gateway_path,
        &[("m", 1, &[("volts", "input: 0"), ("amps", "input: 1")])],
    )
    .replace("retries: 0", "retries: 2");
    let gw = start_gateway(&yaml);
    let mut sub = Subscriber::connect(
        gw.port,
        &["modbus/#", "serial2mqtt/testgw/stats"],
        QoS::AtMostOnce,
    )
    .await;
    let d = counters(&mut sub, "m", 12).await;
    assert!(
        d["bad_checksum"].as_u64() >= Some(1) || d["corrupt"].as_u64() >= Some(1),
        "{d}"
    );
    let seen = sub.seen.lock().unwrap().clone();
    let volts: Vec<&str> = seen
        .iter()
        .filter(|m| m.topic == "modbus/m/volts")
        .map(|m| m.payload.as_str())
        .collect();
    assert!(volts.len() >= 3, "{seen:?}");
    assert!(volts.iter().all(|v| *v == "2301"), "{volts:?}");
    assert!(seen
        .iter()
        .filter(|m| m.topic == "modbus/m/amps")
        .all(|m| m.payload == "4250"));
}

/// config/examples/sdm120.yaml as written (port, broker port and interval changed) against
/// pymodbus loaded with an SDM120's input registers.
#[tokio::test]
async fn the_sdm120_example_reads_an_sdm120_register_map() {
    let dir = tempfile::tempdir().unwrap();
    let cable = Cable::new();
    let mut ir = vec![0u16; 344];
    for (at, v) in [
        (0x0000, 231.4f32),
        (0x0006, 2.125),
        (0x000C, 480.3),
        (0x0012, 491.7),
        (0x0018, -105.2),
        (0x001E, 0.977),
        (0x0046, 49.98),
        (0x0048, 1234.567),
        (0x004A, 1.5),
        (0x0156, 1236.067),
    ] {
        ir[at..at + 2].copy_from_slice(&regs_f32(v));
    }
    let spec = serde_json::json!({"baud": 2400, "units": {"1": {"ir": ir}}});
    let Some(_slave) = slave(&cable.device_path, &spec, dir.path()) else {
        return;
    };
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/sdm120.yaml");
    let mut yaml = std::fs::read_to_string(path).unwrap();
    for (from, to) in [
        ("127.0.0.1:1883", "127.0.0.1:{port}".to_string()),
        (
            "/dev/serial/by-id/usb-FTDI_USB_RS485-if00-port0",
            cable.gateway_path.display().to_string(),
        ),
        ("every: 10s", "every: 300ms".to_string()),
    ] {
        assert!(yaml.contains(from), "{from}");
        yaml = yaml.replace(from, &to);
    }
    let gw = start_gateway(&yaml);
    let mut sub =
        Subscriber::connect(gw.port, &["power/#", "homeassistant/#"], QoS::AtMostOnce).await;
    // Home Assistant discovery announces the energy entity (retained, on connect), on a
    // device shown as the model's product.
    let config: serde_json::Value = serde_json::from_str(
        &sub.next_on(
            "homeassistant/sensor/pi-power_sdm120_energy_total/config",
            T,
        )
        .await
        .payload,
    )
    .unwrap();
    assert_eq!(config["device_class"], "energy", "{config}");
    assert_eq!(
        config["state_topic"], "power/sdm120/energy_total",
        "{config}"
    );
    assert_eq!(
        (
            &config["device"]["manufacturer"],
            &config["device"]["model"]
        ),
        (
            &serde_json::json!("Eastron"),
            &serde_json::json!("SDM120-Modbus")
        ),
        "{config}"
    );
    // One read cycle: every point on its topic, rounded to what the meter resolves.
    for (topic, want) in [
        ("voltage", "231.4"),
        ("current", "2.125"),
        ("power", "480.3"),
        ("apparent_power", "491.7"),
        ("reactive_power", "-105.2"),
        ("power_factor", "0.977"),
        ("frequency", "49.98"),
        ("energy_import", "1234.567"),
        ("energy_export", "1.5"),
        ("energy_total", "1236.067"),
    ] {
        let topic = format!("power/sdm120/{topic}");
        assert_eq!(sub.next_on(&topic, T).await.payload, want, "{topic}");
    }
}

/// Commands from MQTT reach the unit's registers and coils (seen by the slave, and read back
/// by the next cycle), serialized with the polls on the same bus; a payload that does not fit
/// the point is refused on the reply topic and never written.
#[tokio::test]
async fn commands_write_coils_and_registers_in_their_type_and_order() {
    let dir = tempfile::tempdir().unwrap();
    let cable = Cable::new();
    let spec = serde_json::json!({"units": {"1": {"hr": vec![0; 30], "co": vec![false; 8]}}});
    let Some(mut slave) = slave(&cable.device_path, &spec, dir.path()) else {
        return;
    };
    let port = cable.gateway_path.display();
    let yaml = format!(
        r#"gateway: {{id: testgw}}
broker: {{listen: "127.0.0.1:{{port}}"}}
devices:
  - name: vfd
    port: {port}
    modbus:
      unit: 1
      every: 200ms
      timeout: 200ms
      points:
        - {{name: setpoint, holding: 16, type: i16, scale: 0.1}}
        - {{name: limit, holding: 20, type: f32, order: cdab}}
        - {{name: run, coil: 3}}
        - {{name: relays, coil: 4, length: 4}}
    rules: [vfd]
    commands: [set_setpoint, set_limit, set_run, set_relays]
rules:
  vfd:
    points: true
    publish: [{{topic: "vfd/state", payload: {{setpoint: "{{setpoint}}", limit: "{{limit}}", run: "{{run}}", relays: "{{relays}}"}}}}]
commands:
  set_setpoint: {{subscribe: "vfd/setpoint/set", point: setpoint, reply_topic: "vfd/setpoint/result"}}
  set_limit: {{subscribe: "vfd/limit/set", point: limit}}
  set_run: {{subscribe: "vfd/run/set", point: run}}
  set_relays: {{subscribe: "vfd/relays/set", point: relays}}
"#
    );
    let gw = start_gateway(&yaml);
    let mut sub = Subscriber::connect(gw.port, &["vfd/#"], QoS::AtLeastOnce).await;
    sub.next_on("vfd/state", T).await;
    let client = sub.client.clone();
    let publish = |topic: &'static str, payload: &'static str| {
        let client = client.clone();
        async move {
            client
                .publish(topic, QoS::AtLeastOnce, false, payload)
                .await
                .unwrap()
        }
    };
    publish("vfd/setpoint/set", "23.5").await;
    assert_eq!(slave.next_write().await, "write 1 hr 16 [235]");
    assert_eq!(sub.next_on("vfd/setpoint/result", T).await.payload, "ok");
    publish("vfd/limit/set", "230.5").await;
    let b = 230.5f32.to_be_bytes();
    let (hi, lo) = (
        u16::from_be_bytes([b[0], b[1]]),
        u16::from_be_bytes([b[2], b[3]]),
    );
    assert_eq!(
        slave.next_write().await,
        format!("write 1 hr 20 [{lo}, {hi}]"),
        "low word first"
    );
    publish("vfd/run/set", "ON").await;
    assert_eq!(slave.next_write().await, "write 1 co 3 [True]");
    // Function 15: coils 4..=7 at once, the first coil the number's least significant bit.
    publish("vfd/relays/set", "0b1101").await;
    assert_eq!(
        slave.next_write().await,
        "write 1 co 4 [True, False, True, True]"
    );
    // Read back by the next cycles.
    let deadline = std::time::Instant::now() + T;
    loop {
        let state: serde_json::Value =
            serde_json::from_str(&sub.next_on("vfd/state", T).await.payload).unwrap();
        if state == serde_json::json!({"setpoint": 23.5, "limit": 230.5, "run": 1, "relays": 13}) {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{state}");
    }
    publish("vfd/setpoint/set", "9999").await;
    let refused = sub.next_on("vfd/setpoint/result", T).await.payload;
    assert!(refused.starts_with("error: 9999 does not fit"), "{refused}");
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(slave.writes(), 4, "nothing more written");
}

/// `serial2mqtt modbus read` asks the unit once and shows every word order side by side: the
/// one that reads 230.5 is the map's order.
#[tokio::test]
async fn the_probe_shows_every_word_order_side_by_side() {
    let dir = tempfile::tempdir().unwrap();
    let cable = Cable::new();
    let [hi, lo] = regs_f32(230.5);
    let spec = serde_json::json!({"units": {"17": {"ir": [lo, hi, 7, 0]}}});
    let Some(_slave) = slave(&cable.device_path, &spec, dir.path()) else {
        return;
    };
    let port = cable.gateway_path.clone();
    let run = move |args: &[&str]| {
        let out = serial2mqtt_command()
            .args(["modbus", "read", "--port"])
            .arg(&port)
            .args(args)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, out, err) = tokio::task::spawn_blocking(move || {
        run(&["--unit", "17", "--register", "30001", "--count", "4"])
    })
    .await
    .unwrap();
    assert!(ok, "{err}");
    assert!(out.contains("unit 17, input 0..=3 (4 entries)"), "{out}");
    let cdab = out
        .lines()
        .find(|l| l.contains("order: cdab") && l.contains("f32="))
        .unwrap_or_default();
    assert!(
        cdab.contains("f32=230.5"),
        "the low-word-first order reads 230.5:\n{out}"
    );
    let abcd = out
        .lines()
        .find(|l| l.contains("order: abcd"))
        .unwrap_or_default();
    assert!(!abcd.contains("f32=230.5"), "{out}");
    assert!(out.contains("64-bit values from address 0"), "{out}");
}

/// A unit that is not there: a clear failure naming what to check.
#[tokio::test]
async fn the_probe_says_what_to_check_when_nothing_answers() {
    let dir = tempfile::tempdir().unwrap();
    let cable = Cable::new();
    let spec = serde_json::json!({"units": {"1": {"ir": [1]}}});
    let Some(_slave) = slave(&cable.device_path, &spec, dir.path()) else {
        return;
    };
    let port = cable.gateway_path.clone();
    let out = tokio::task::spawn_blocking(move || {
        serial2mqtt_command()
            .args(["modbus", "read", "--port"])
            .arg(&port)
            .args(["--unit", "5", "--input", "0", "--timeout", "300ms"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no answer from unit 5 within 300ms"), "{err}");
    assert!(err.contains("check the unit id, the baud rate"), "{err}");
}

/// The example's text with the broker's port, the adapter and the interval changed (each must
/// occur).
fn example(name: &str, port: &std::path::Path, every: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/examples")
        .join(format!("{name}.yaml"));
    let mut yaml = std::fs::read_to_string(path).unwrap();
    for (from, to) in [
        ("127.0.0.1:1883", "127.0.0.1:{port}".to_string()),
        (
            "/dev/serial/by-id/usb-1a86_USB_Serial-if00-port0",
            port.display().to_string(),
        ),
        (every, "every: 300ms".to_string()),
    ] {
        assert!(yaml.contains(from), "{name}: {from}");
        yaml = yaml.replace(from, &to);
    }
    yaml
}

/// config/examples/pzem004t.yaml against two PZEM-004T register maps on one bus: 230.1 V,
/// 70 A (stored low word first), 16107 W, 123456 Wh, 50 Hz, pf 1.00; the second in alarm.
#[tokio::test]
async fn the_pzem004t_example_reads_two_meters_low_word_first() {
    let dir = tempfile::tempdir().unwrap();
    let cable = Cable::new();
    let meter = |alarm: u16| serde_json::json!({"ir": [2301, 0x1170, 0x0001, 0x752E, 0x0002, 0xE240, 0x0001, 500, 100, alarm]});
    let spec = serde_json::json!({"units": {"1": meter(0), "2": meter(0xFFFF)}});
    let Some(_slave) = slave(&cable.device_path, &spec, dir.path()) else {
        return;
    };
    let yaml = example("pzem004t", &cable.gateway_path, "every: 5s");
    let gw = start_gateway(&yaml);
    let mut sub = Subscriber::connect(gw.port, &["power/#"], QoS::AtMostOnce).await;
    for (device, alarm) in [("pzem_kitchen", "OFF"), ("pzem_heatpump", "ON")] {
        for (topic, want) in [
            ("voltage", "230.1"),
            ("current", "70"),
            ("power", "16107"),
            ("energy", "123.456"),
            ("frequency", "50"),
            ("power_factor", "1"),
            ("alarm", alarm),
        ] {
            let topic = format!("power/{device}/{topic}");
            assert_eq!(
                sub.next_on(&topic, T).await.payload,
                want,
                "{topic}: the low-word-first current reads 70 A"
            );
        }
    }
}

/// A reload that adds a point to one unit restarts that unit's port only: the other unit's
/// port stays open, and the new point is read and published.
#[tokio::test]
async fn reload_adds_a_point_without_restarting_the_other_unit() {
    let dir = tempfile::tempdir().unwrap();
    let (cable_a, cable_b) = (Cable::new(), Cable::new());
    let spec = serde_json::json!({"units": {"1": {"ir": [2301, 4250]}}});
    let (Some(_a), Some(_b)) = (
        slave(&cable_a.device_path, &spec, &subdir(dir.path(), "a")),
        slave(&cable_b.device_path, &spec, &subdir(dir.path(), "b")),
    ) else {
        return;
    };
    let before = config(&cable_a.gateway_path, &[("a", 1, &[("volts", "input: 0")])]);
    let b_only = config(&cable_b.gateway_path, &[("b", 1, &[("volts", "input: 0")])]);
    // One file with both devices: a's section, then b's device and rule lines.
    let merge = |a: &str| {
        let (a_head, a_rules) = a.split_once("rules:\n").unwrap();
        let (b_head, b_rules) = b_only.split_once("rules:\n").unwrap();
        let b_device = b_head.split_once("devices:\n").unwrap().1;
        format!("{a_head}{b_device}rules:\n{a_rules}{b_rules}")
    };
    let gw = start_gateway(&merge(&before));
    let mut sub = Subscriber::connect(gw.port, &["modbus/#"], QoS::AtMostOnce).await;
    sub.next_on("modbus/a/volts", T).await;
    sub.next_on("modbus/b/volts", T).await;
    let after = config(
        &cable_a.gateway_path,
        &[("a", 1, &[("volts", "input: 0"), ("amps", "input: 1")])],
    );
    let text = merge(&after)
        .replace("{port}", &gw.port.to_string())
        .replace("{dir}", &gw.dir.path().display().to_string());
    std::fs::write(gw.config_path(), text).unwrap();
    gw.signal("HUP");
    gw.wait_log("config reloaded", T).await;
    assert_eq!(sub.next_on("modbus/a/amps", T).await.payload, "4250");
    let logs = gw.logs();
    let opened = |port: &std::path::Path| {
        logs.lines()
            .filter(|l| l.contains("port open") && l.contains(&port.display().to_string()))
            .count()
    };
    assert_eq!(
        opened(&cable_a.gateway_path),
        2,
        "a's port restarted:\n{logs}"
    );
    assert_eq!(
        opened(&cable_b.gateway_path),
        1,
        "b's port untouched:\n{logs}"
    );
}

/// `dir/name`, created (for two slaves' files in one test).
fn subdir(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let d = dir.join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Six points in two stretches of input registers are read by two requests a cycle (counted
/// on the cable: 8 bytes each), not six.
#[tokio::test]
async fn adjacent_points_are_read_by_one_request() {
    let dir = tempfile::tempdir().unwrap();
    let cable = Cable::new();
    let spec = serde_json::json!({"units": {"1": {"ir": (0..80).collect::<Vec<u16>>()}}});
    let Some(_slave) = slave(&cable.device_path, &spec, dir.path()) else {
        return;
    };
    let yaml = config(
        &cable.gateway_path,
        &[(
            "m",
            1,
            &[
                ("a", "input: 0"),
                ("b", "input: 1"),
                ("c", "input: 4, type: u32"),
                ("d", "input: 12"),
                ("e", "input: 70"),
                ("f", "input: 72"),
            ],
        )],
    );
    let gw = start_gateway(&yaml);
    let mut sub = Subscriber::connect(gw.port, &["modbus/m/f"], QoS::AtMostOnce).await;
    for _ in 0..5 {
        sub.next_on("modbus/m/f", T).await;
    }
    drop(gw);
    let requests = cable.sent.load(std::sync::atomic::Ordering::Relaxed) / 8;
    // 5 cycles seen, maybe a sixth begun: 2 requests each.
    assert!(
        (10..=12).contains(&requests),
        "{requests} requests for 5 cycles"
    );
}

/// Memory with 8 units x 50 points on one bus, read every second for 20 s from pymodbus: the
/// figure goes in BENCHMARKS.md. `cargo test --release --test modbus -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "a measurement; figures go in BENCHMARKS.md"]
async fn memory_with_8_units_of_50_points() {
    let dir = tempfile::tempdir().unwrap();
    let cable = Cable::new();
    let mut units = serde_json::Map::new();
    for u in 1..=8 {
        units.insert(
            u.to_string(),
            serde_json::json!({"hr": (0..60).collect::<Vec<u16>>()}),
        );
    }
    let spec = serde_json::json!({"units": units});
    let Some(_slave) = slave(&cable.device_path, &spec, dir.path()) else {
        return;
    };
    let points: Vec<String> = (0..50)
        .map(|i| format!("{{name: p{i}, holding: {i}}}"))
        .collect();
    let json: Vec<String> = (0..50).map(|i| format!("p{i}: \"{{p{i}}}\"")).collect();
    let mut yaml = String::from(
        "gateway: {id: testgw, stats_interval: 1s}\nbroker: {listen: \"127.0.0.1:{port}\"}\ndevices:\n",
    );
    for u in 1..=8 {
        yaml.push_str(&format!(
            "  - name: u{u}\n    port: {}\n    modbus: {{unit: {u}, every: 1s, timeout: 200ms, points: [{}]}}\n    rules: [all]\n",
            cable.gateway_path.display(),
            points.join(", ")
        ));
    }
    yaml.push_str(&format!(
        "rules:\n  all:\n    points: true\n    publish: [{{topic: \"m/{{device}}\", payload: {{{}}}}}]\n",
        json.join(", ")
    ));
    let gw = start_gateway(&yaml);
    let mut sub = Subscriber::connect(gw.port, &["m/#"], QoS::AtMostOnce).await;
    let start = std::time::Instant::now();
    let mut cycles = 0;
    while start.elapsed() < Duration::from_secs(20) {
        sub.next_on("m/u8", T).await;
        cycles += 1;
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", gw.child.id())).unwrap();
    let field = |k: &str| {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .map(|l| {
                l.split_whitespace()
                    .nth(1)
                    .unwrap_or("0")
                    .parse::<f64>()
                    .unwrap_or(0.0)
                    / 1024.0
            })
            .unwrap_or(0.0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{}/stat", gw.child.id())).unwrap();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let cpu = (f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap()) / 100.0;
    eprintln!(
        "8 units x 50 points, every 1s: {cycles} cycles of u8 in 20 s; RSS {:.1} MiB, peak {:.1} MiB; CPU {:.2} s in all ({:.1} ms per 1000 points read)",
        field("VmRSS:"),
        field("VmHWM:"),
        cpu,
        1000.0 * cpu / (cycles as f64 * 8.0 * 50.0) * 1000.0
    );
}

/// A point with an `every` of its own is read apart from the map, at its interval: its rule
/// runs after each of its reads, and a rule naming fast and slow points runs with the fast
/// ones, the slow point its latest reading.
#[tokio::test]
async fn a_point_with_its_own_interval_is_read_at_it() {
    let dir = tempfile::tempdir().unwrap();
    let cable = Cable::new();
    let spec = serde_json::json!({"units": {"1": {"ir": [2301, 17], "hr": vec![42; 10]}}});
    let Some(_slave) = slave(&cable.device_path, &spec, dir.path()) else {
        return;
    };
    let port = cable.gateway_path.display();
    let yaml = format!(
        r#"gateway: {{id: testgw}}
broker: {{listen: "127.0.0.1:{{port}}"}}
devices:
  - name: m
    port: {port}
    modbus:
      unit: 1
      every: 200ms
      timeout: 150ms
      points:
        - {{name: volts, input: 0, scale: 0.1}}
        - {{name: serial, holding: 5, every: 1500ms}}
    rules: [volts, serial, both]
rules:
  volts:
    points: true
    continue: true
    publish: [{{topic: "modbus/m/volts", payload: "{{volts}}"}}]
  serial:
    points: true
    continue: true
    publish: [{{topic: "modbus/m/serial", payload: "{{serial}}"}}]
  both:
    points: true
    publish: [{{topic: "modbus/m/state", payload: {{v: "{{volts}}", serial: "{{serial}}"}}}}]
"#
    );
    let gw = start_gateway(&yaml);
    let mut sub = Subscriber::connect(gw.port, &["modbus/#"], QoS::AtMostOnce).await;
    // From the first read of the slow point to its fourth: three of its intervals.
    let mut serial = Vec::new();
    let (mut volts, mut states) = (0, 0);
    let deadline = std::time::Instant::now() + 3 * T;
    while serial.len() < 4 {
        assert!(std::time::Instant::now() < deadline, "{}", gw.logs());
        let m = sub.next(T).await;
        match m.topic.as_str() {
            "modbus/m/serial" => {
                assert_eq!(m.payload, "42");
                serial.push(std::time::Instant::now());
            }
            "modbus/m/volts" if !serial.is_empty() => {
                assert_eq!(m.payload, "230.1");
                volts += 1;
            }
            "modbus/m/state" if !serial.is_empty() => {
                let state: serde_json::Value = serde_json::from_str(&m.payload).unwrap();
                assert_eq!(state, serde_json::json!({"v": 230.1, "serial": 42}));
                states += 1;
            }
            _ => {}
        }
    }
    for pair in serial.windows(2) {
        let apart = pair[1] - pair[0];
        assert!(
            apart > Duration::from_millis(1200),
            "the slow point read {apart:?} after the last"
        );
    }
    // 4.5 s at 200 ms: ~22 fast cycles (at least half of them, on a busy machine).
    assert!(volts >= 11, "{volts} fast readings in three slow intervals");
    assert!(
        states + 2 >= volts && states <= volts + 2,
        "the rule naming both runs with the fast point: {states} vs {volts}"
    );
}

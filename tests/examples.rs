//! The ready-made configs in config/examples/, each run as written against a simulated device
//! on a pty (only the port path, the broker's port and the intervals are changed, and each
//! change is checked to have happened), so an example that stops working fails here.

mod common;

use std::time::Duration;

use common::devices::*;
use common::*;
use rumqttc::QoS;

const T: Duration = Duration::from_secs(10);

/// Each one's run-test is here, but the Modbus maps' (pzem004t, sdm120): tests/modbus.rs,
/// against pymodbus.
const EXAMPLES: [&str; 9] = [
    "dsmr5",
    "mhz19",
    "nmea-gps",
    "pzem004t",
    "rs485-two-meters",
    "sdm120",
    "sds011",
    "ublox-gps",
    "vedirect-mppt",
];

fn path(name: &str) -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("config/examples")
        .join(format!("{name}.yaml"))
}

/// The example as written, with each `(from, to)` replaced (each must occur) and the broker on
/// the test's port.
fn example(name: &str, changes: &[(&str, &str)]) -> String {
    let mut yaml = std::fs::read_to_string(path(name)).unwrap();
    for (from, to) in [("127.0.0.1:1883", "127.0.0.1:{port}")]
        .iter()
        .chain(changes)
    {
        assert!(yaml.contains(from), "{name}: `{from}` not found");
        yaml = yaml.replace(from, to);
    }
    yaml
}

fn json(payload: &str) -> serde_json::Value {
    serde_json::from_str(payload).unwrap_or_else(|e| panic!("{payload}: {e}"))
}

#[test]
fn every_example_passes_check_and_has_a_test() {
    let mut found: Vec<String> = std::fs::read_dir(path("x").parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    found.sort();
    let expected: Vec<String> = EXAMPLES.iter().map(|e| format!("{e}.yaml")).collect();
    assert_eq!(found, expected, "a new example needs its test here");
    for name in EXAMPLES {
        let out = serial2mqtt_command()
            .args(["check", "--config"])
            .arg(path(name))
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{name}: {stderr}");
        // The only warnings are for the ports, which this machine does not have.
        for line in stderr.lines().filter(|l| l.contains("warning")) {
            assert!(line.contains("does not exist now"), "{name}: {line}");
        }
    }
}

#[tokio::test]
async fn mhz19_example_polls_and_publishes_changes() {
    let pty = Pty::new();
    let port = pty.path.display().to_string();
    let yaml = example(
        "mhz19",
        &[("/dev/serial0", &port), ("every: 10s", "every: 200ms")],
    );
    // 400, 403 (inside the deadband), 430, 430, 470, ...
    let _sim = mhz19(pty, |i| Some([400, 403, 430, 430, 470][i.min(4)]));
    let gw = start_gateway(&yaml);
    let mut sub = Subscriber::connect(gw.port, &["sensors/#"], QoS::AtMostOnce).await;
    for ppm in ["400", "430", "470"] {
        assert_eq!(sub.next_on("sensors/co2/co2", T).await.payload, ppm);
    }
}

#[tokio::test]
async fn sds011_example_reads_the_active_sensor_and_asks_the_quiet_one() {
    let (mut active, quiet) = (Pty::new(), Pty::new());
    let (a, q) = (
        active.path.display().to_string(),
        quiet.path.display().to_string(),
    );
    let yaml = example(
        "sds011",
        &[
            ("/dev/serial/by-id/usb-1a86_USB2.0-Serial-if00-port0", &a),
            ("/dev/serial/by-id/usb-1a86_USB2.0-Serial-if00-port1", &q),
            ("every: 30s", "every: 300ms"),
        ],
    );
    let sim = sds011_query(quiet, |i| 50 + 100 * i as u16);
    let gw = start_gateway(&yaml);
    let mut sub = Subscriber::connect(gw.port, &["sensors/#"], QoS::AtMostOnce).await;
    gw.wait_log("device online", T).await;
    active.write(&sds011(111)).await;
    assert_eq!(sub.next_on("sensors/balcony/pm25", T).await.payload, "11.1");
    // 5.0, 15.0, 25.0 µg/m³: each beyond the 10 % deadband.
    for pm in ["5", "15", "25"] {
        assert_eq!(sub.next_on("sensors/kitchen/pm25", T).await.payload, pm);
    }
    drop(gw);
    assert!(sim.await.unwrap() >= 3);
}

#[tokio::test]
async fn nmea_example_publishes_positions_in_degrees_and_nothing_unproven() {
    let mut pty = Pty::new();
    let port = pty.path.display().to_string();
    let yaml = example("nmea-gps", &[("/dev/ttyACM0", &port)]);
    let gw = start_gateway(&yaml);
    let mut sub = Subscriber::connect(gw.port, &["gps/#"], QoS::AtMostOnce).await;
    gw.wait_log("device online", T).await;
    let gga = nmea("GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,");
    let mut corrupted = nmea("GPGGA,123520,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,");
    corrupted = corrupted.replace("4807.038", "4907.038"); // a changed digit, old *hh
    let mut wire = String::new();
    wire.push_str(&nmea(
        "GPGSV,3,1,11,03,03,111,00,04,15,270,00,06,01,010,00,13,06,292,00",
    ));
    wire.push_str(&corrupted);
    wire.push_str(&nmea(
        "GNGGA,123521,3345.1234,S,15112.5000,W,2,10,0.8,-12.5,M,,M,,",
    ));
    wire.push_str(&nmea(
        "GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W",
    ));
    wire.push_str(&nmea("GPGGA,123522,,,,,0,00,99.99,,,,,,"));
    wire.push_str(&gga);
    pty.write(wire.as_bytes()).await;
    let south = json(&sub.next_on("gps/gps/position", T).await.payload);
    assert_eq!(
        south,
        serde_json::json!({"lat": -33.7520567, "lon": -151.2083333, "alt_m": -12.5, "fix": 2, "sats": 10, "hdop": 0.8}),
        "the corrupted GGA before it was never published"
    );
    // The same GGA's altitude and satellites, as Home Assistant entities of their own.
    assert_eq!(sub.next_on("gps/gps/altitude", T).await.payload, "-12.5");
    assert_eq!(sub.next_on("gps/gps/satellites", T).await.payload, "10");
    assert_eq!(sub.next_on("gps/gps/speed", T).await.payload, "41.5");
    assert_eq!(
        json(&sub.next_on("gps/gps/position", T).await.payload),
        serde_json::json!({"fix": 0})
    );
    let munich = json(&sub.next_on("gps/gps/position", T).await.payload);
    assert_eq!(
        (munich["lat"].as_f64(), munich["lon"].as_f64()),
        (Some(48.1173), Some(11.5166667))
    );
    assert_eq!(sub.next_on("gps/gps/altitude", T).await.payload, "545.4");
    gw.wait_log("bad checksum", T).await;
    // Never a value of the corrupted GGA (latitude 49.1173), on any topic.
    let seen = sub.seen.lock().unwrap().clone();
    assert!(
        !seen.iter().any(|m| m.payload.contains("49.1173")),
        "{seen:?}"
    );
}

#[tokio::test]
async fn dsmr5_example_takes_each_value_from_a_proven_telegram() {
    let mut pty = Pty::new();
    let port = pty.path.display().to_string();
    let yaml = example(
        "dsmr5",
        &[(
            "/dev/serial/by-id/usb-FTDI_FT232R_USB_UART_P1-if00-port0",
            &port,
        )],
    );
    let gw = start_gateway(&yaml);
    let mut sub = Subscriber::connect(gw.port, &["energy/#"], QoS::AtMostOnce).await;
    gw.wait_log("device online", T).await;
    pty.write(&dsmr_telegram("001234.567", "01.193")).await;
    for (topic, want) in [
        ("energy/p1/energy_import_t1", "1234.567"),
        ("energy/p1/energy_import_t2", "4567.89"),
        ("energy/p1/energy_export_t1", "0"),
        ("energy/p1/power_import", "1193"),
        ("energy/p1/power_export", "0"),
        ("energy/p1/voltage_l1", "229"),
    ] {
        assert_eq!(sub.next_on(topic, T).await.payload, want, "{topic}");
    }
    // A telegram damaged on the line (its power changed, its CRC kept): never published.
    let damaged = String::from_utf8(dsmr_telegram("001234.569", "02.500"))
        .unwrap()
        .replace("02.500", "09.500");
    pty.write(damaged.as_bytes()).await;
    // The next telegram: one counter moved, the other did not; the power changed.
    pty.write(&dsmr_telegram("001234.571", "00.950")).await;
    assert_eq!(
        sub.next_on("energy/p1/power_import", T).await.payload,
        "950",
        "the damaged telegram's power was published"
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = sub.seen.lock().unwrap().clone();
    let on = |topic: &str| {
        seen.iter()
            .filter(|m| m.topic == topic)
            .map(|m| m.payload.as_str())
            .collect::<Vec<_>>()
    };
    // Counters on every change (an unchanged one waits for its 5-minute heartbeat), the
    // instantaneous values every telegram; nothing from the damaged one.
    assert_eq!(
        on("energy/p1/energy_import_t1"),
        ["1234.567", "1234.571"],
        "{seen:?}"
    );
    assert_eq!(on("energy/p1/energy_import_t2"), ["4567.89"], "{seen:?}");
    assert_eq!(on("energy/p1/power_import"), ["1193", "950"], "{seen:?}");
    assert_eq!(on("energy/p1/voltage_l1"), ["229", "229"], "{seen:?}");
    // The telegram has no L2/L3, no per-phase values and no gas: their topics stay silent.
    assert!(
        !seen
            .iter()
            .any(|m| m.topic.ends_with("_l2") || m.topic.ends_with("/gas")),
        "{seen:?}"
    );
}

#[tokio::test]
async fn rs485_example_serves_two_meters_and_one_going_silent_does_not_stop_the_other() {
    let pty = Pty::new();
    let port = pty.path.display().to_string();
    let adapter = "/dev/serial/by-id/usb-1a86_USB_Serial-if00-port0";
    let yaml = example(
        "rs485-two-meters",
        &[
            (adapter, &port),
            ("every: 5s", "every: 250ms"),
            ("offline_poll: 30s", "offline_poll: 2s"),
        ],
    );
    // Meter 1 measures 230.1 V, 70 A, 16107 W, 123.456 kWh; meter 2 answers 4 times, then not.
    let sim = pzem016_bus(pty, |addr, n| match addr {
        1 => Some(pzem016_registers(2301, 70_000, 161_070, 123_456 + n as u32)),
        2 if n < 4 => Some(pzem016_registers(2298, 1_250, 2_870, 5_000)),
        _ => None,
    });
    let gw = start_gateway(&yaml);
    let state = "serial2mqtt/pi-power/devices/meter2/state";
    let mut sub = Subscriber::connect(gw.port, &["power/#", state], QoS::AtMostOnce).await;
    let m1 = json(&sub.next_on("power/meter1/state", T).await.payload);
    assert_eq!(
        (
            m1["voltage"].as_f64(),
            m1["current"].as_f64(),
            m1["power"].as_f64(),
            m1["frequency"].as_f64(),
            m1["power_factor"].as_f64(),
            m1["alarm"].as_bool()
        ),
        (
            Some(230.1),
            Some(70.0),
            Some(16107.0),
            Some(50.0),
            Some(1.0),
            Some(false)
        ),
        "{m1}: the low-word-first current reads 70 A"
    );
    let m2 = json(&sub.next_on("power/meter2/state", T).await.payload);
    assert_eq!(
        (m2["current"].as_f64(), m2["energy_kwh"].as_f64()),
        (Some(1.25), Some(5.0)),
        "{m2}"
    );
    sub.next_change(state, "online", "offline", T).await;
    let offline_at = std::time::Instant::now();
    // Meter 1 keeps its pace while meter 2 is silent.
    let before = json(&sub.next_on("power/meter1/state", T).await.payload)["energy_kwh"]
        .as_f64()
        .unwrap();
    let start = std::time::Instant::now();
    let mut updates = 0;
    while start.elapsed() < Duration::from_secs(2) {
        if let Ok(m) = tokio::time::timeout(
            Duration::from_millis(500),
            sub.next_on("power/meter1/state", T),
        )
        .await
        {
            assert!(json(&m.payload)["energy_kwh"].as_f64().unwrap() > before);
            updates += 1;
        }
    }
    assert!(
        updates >= 5,
        "meter1 asked every 250 ms while meter2 is offline: {updates} updates in 2 s"
    );
    drop(gw);
    let asked = sim.await.unwrap();
    // Offline, meter 2 is asked once per offline_poll (2 s), with its one retry.
    let while_offline = asked
        .iter()
        .filter(|(a, at)| *a == 2 && *at > offline_at)
        .count();
    assert!(
        while_offline <= 4,
        "an offline meter is asked every offline_poll, not every poll: {while_offline} requests"
    );
}

#[tokio::test]
async fn vedirect_example_publishes_every_proven_block_whatever_its_closing_byte() {
    let mut pty = Pty::new();
    let port = pty.path.display().to_string();
    let yaml = example(
        "vedirect-mppt",
        &[(
            "/dev/serial/by-id/usb-VictronEnergy_BV_VE_Direct_cable_VE1234AB-if00-port0",
            &port,
        )],
    );
    let yaml = yaml.replace(
        "gateway: {id: pi-solar}",
        "gateway: {id: pi-solar, stats_interval: 1s}",
    );
    let gw = start_gateway(&yaml);
    let mut sub = Subscriber::connect(gw.port, &["solar/#"], QoS::AtMostOnce).await;
    let mut stats = Subscriber::connect(gw.port, &["serial2mqtt/+/stats"], QoS::AtMostOnce).await;
    gw.wait_log("device online", T).await;
    // The controller sends a block every second; the first ones may meet a port still being
    // set up, so blocks go out until one is read.
    let first = vedirect_block(12_530, -200);
    let deadline = std::time::Instant::now() + T;
    loop {
        pty.write(&first).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        if !sub.seen.lock().unwrap().is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "no block was read");
    }
    for (topic, want) in [
        ("solar/mppt/battery_voltage", "12.53"),
        ("solar/mppt/battery_current", "-0.2"),
        ("solar/mppt/panel_voltage", "18.94"),
        ("solar/mppt/panel_power", "25"),
        ("solar/mppt/state", "3"),
        ("solar/mppt/tracker", "2"),
        ("solar/mppt/error", "0"),
        ("solar/mppt/yield_total", "12.34"),
        ("solar/mppt/yield_today", "0.12"),
        ("solar/mppt/max_power_today", "85"),
    ] {
        assert_eq!(sub.next_on(topic, T).await.payload, want, "{topic}");
    }
    // A block damaged on the line (its current changed, its checksum kept): never published.
    let mut damaged = vedirect_block(12_600, -1500);
    let at = damaged.windows(5).position(|w| w == b"-1500").unwrap();
    damaged[at + 1] = b'7';
    // HEX-protocol messages between the blocks (a ping answer, an asynchronous update).
    let hex: [&[u8]; 2] = [b":51641F9\n", b":A0102000543\n"];
    let before = stats_until(&mut stats, "pi-solar", |_| true).await;
    pty.write(hex[0]).await;
    pty.write(&damaged).await;
    pty.write(hex[1]).await;
    // A block whose closing byte is no text (0x80-0xFF): published.
    let (ma, high) = (1..2_000_000)
        .step_by(997)
        .map(|ma| (-ma, vedirect_block(12_700, -ma)))
        .find(|(_, b)| b[b.len() - 1] >= 0x80)
        .unwrap();
    assert!(first[first.len() - 1] < 0x80 || high[high.len() - 1] >= 0x80);
    pty.write(&high).await;
    assert_eq!(
        sub.next_on("solar/mppt/battery_voltage", T).await.payload,
        "12.7"
    );
    let current = sub.next_on("solar/mppt/battery_current", T).await.payload;
    assert_eq!(current, format!("{}", f64::from(ma) / 1000.0));
    tokio::time::sleep(Duration::from_millis(300)).await;
    let seen = sub.seen.lock().unwrap().clone();
    assert!(
        !seen
            .iter()
            .any(|m| m.payload == "-1.7" || m.payload == "12.6"),
        "the damaged block was published: {seen:?}"
    );
    // The HEX messages are the second device's known traffic, the damaged block the text
    // device's one bad checksum: nothing else counted as damage.
    let frames = |v: &serde_json::Value, d: &str| v["devices"][d]["frames"].as_u64().unwrap();
    let (text0, hex0) = (frames(&before, "mppt"), frames(&before, "mppt-hex"));
    let v = stats_until(&mut stats, "pi-solar", |v| {
        frames(v, "mppt") >= text0 + 2 && frames(v, "mppt-hex") >= hex0 + 2
    })
    .await;
    assert_eq!(damage(&v["devices"]["mppt-hex"]), [0; 5], "{v}");
    assert_eq!(damage(&v["devices"]["mppt"]), [1, 0, 0, 0, 0], "{v}");
    assert_eq!(v["devices"]["mppt-hex"]["dropped"], 2, "{v}");
}

/// The counters a device's line damage shows in: all 0 for traffic that is no damage.
fn damage(counters: &serde_json::Value) -> [u64; 5] {
    [
        "bad_checksum",
        "resync_bytes",
        "unmatched",
        "invalid_utf8",
        "too_long",
    ]
    .map(|k| {
        counters[k]
            .as_u64()
            .unwrap_or_else(|| panic!("{k} in {counters}"))
    })
}

#[tokio::test]
async fn ublox_example_reads_nmea_and_ubx_from_one_port_and_neither_is_the_others_damage() {
    let mut pty = Pty::new();
    let port = pty.path.display().to_string();
    let yaml = example(
        "ublox-gps",
        &[
            (
                "/dev/serial/by-id/usb-u-blox_AG_-_www.u-blox.com_u-blox_GNSS_receiver-if00",
                &port,
            ),
            (
                "gateway: {id: pi-tracker}",
                "gateway: {id: pi-tracker, stats_interval: 1s}",
            ),
        ],
    );
    let gw = start_gateway(&yaml);
    let sub = Subscriber::connect(gw.port, &["gps/#"], QoS::AtMostOnce).await;
    let mut stats = Subscriber::connect(gw.port, &["serial2mqtt/+/stats"], QoS::AtMostOnce).await;
    gw.wait_log("device online", T).await;
    // A second of the receiver's output: RMC, NAV-PVT, GSA, an ACK-ACK, GGA.
    let second = |i: i32, pvt: Vec<u8>| {
        let mut wire = nmea(&format!(
            "GPRMC,1235{i:02},A,4807.038,N,01131.000,E,{}.0,084.4,230394,003.1,W",
            10 + i
        ))
        .into_bytes();
        wire.extend(pvt);
        wire.extend(nmea("GPGSA,A,3,04,05,,09,12,,,24,,,,,2.5,1.3,2.1").into_bytes());
        wire.extend(ubx(0x05, 0x01, &[0x06, 0x01]));
        wire.extend(
            nmea("GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,").into_bytes(),
        );
        wire
    };
    let position = |i: i32| (481_170_000 + i, 115_160_000 - i);
    // The first seconds may meet a port still being set up: send until one is read.
    let deadline = std::time::Instant::now() + T;
    loop {
        let (lat, lon) = position(0);
        pty.write(&second(0, nav_pvt(lat, lon))).await;
        tokio::time::sleep(Duration::from_millis(300)).await;
        let seen = sub.seen.lock().unwrap().clone();
        let topics = |t: &str| seen.iter().filter(|m| m.topic == t).count();
        if topics("gps/gps-ubx/position") >= 1 && topics("gps/gps/speed") >= 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "nothing was read");
    }
    let before = {
        let v = stats_until(&mut stats, "pi-tracker", |_| true).await;
        [
            v["devices"]["gps"]["frames"].as_u64(),
            v["devices"]["gps-ubx"]["frames"].as_u64(),
        ]
    };
    // Five seconds; the third's NAV-PVT has a wrong CK_B, the fourth's lost a payload byte.
    for i in 1..=5 {
        let (lat, lon) = position(i);
        let mut pvt = nav_pvt(lat, lon);
        match i {
            3 => *pvt.last_mut().unwrap() ^= 0x10,
            4 => {
                pvt.remove(50);
            }
            _ => {}
        }
        pty.write(&second(i, pvt)).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Each second is 3 NMEA frames and 2 UBX frames; the frame that lost a byte cost the GSA
    // sentence it ran into, so 14 NMEA frames and 10 UBX frames (2 of them failing their check).
    let [gps0, ubx0] = before.map(|f| f.unwrap());
    let v = stats_until(&mut stats, "pi-tracker", |v| {
        v["devices"]["gps"]["frames"].as_u64() >= Some(gps0 + 14)
            && v["devices"]["gps-ubx"]["frames"].as_u64() >= Some(ubx0 + 10)
    })
    .await;
    assert_eq!(damage(&v["devices"]["gps"]), [0; 5], "NMEA side: {v}");
    assert_eq!(
        damage(&v["devices"]["gps-ubx"]),
        [2, 0, 0, 0, 0],
        "UBX side: {v}"
    );
    let seen = sub.seen.lock().unwrap().clone();
    let speeds: Vec<&str> = seen
        .iter()
        .filter(|m| m.topic == "gps/gps/speed")
        .map(|m| m.payload.as_str())
        .collect();
    // Every second's RMC (knots 11..15), the damaged frames' seconds too.
    for i in 1..=5 {
        let kmh = format!("{}", (f64::from(10 + i) * 1.852 * 10.0).round() / 10.0);
        assert!(speeds.contains(&kmh.as_str()), "{kmh} not in {speeds:?}");
    }
    let positions: Vec<serde_json::Value> = seen
        .iter()
        .filter(|m| m.topic == "gps/gps-ubx/position")
        .map(|m| json(&m.payload))
        .collect();
    let lats: Vec<f64> = positions
        .iter()
        .map(|p| p["lat"].as_f64().unwrap())
        .collect();
    for i in [1, 2, 5] {
        let want = f64::from(position(i).0) * 1e-7;
        assert!(
            lats.iter().any(|l| (l - want).abs() < 1e-9),
            "{want} not in {lats:?}"
        );
    }
    // Never a position from a damaged frame, nor from an ACK read as NAV-PVT.
    for i in [3, 4] {
        let bad = f64::from(position(i).0) * 1e-7;
        assert!(
            !lats.iter().any(|l| (l - bad).abs() < 1e-9),
            "{bad} published: {lats:?}"
        );
    }
    assert_eq!(positions.len(), 4, "{positions:?}");
    assert!(
        positions.iter().all(|p| p["fix"] == 3 && p["sats"] == 12),
        "{positions:?}"
    );
    assert!(
        seen.iter()
            .any(|m| m.topic == "gps/gps-ubx/satellites" && m.payload == "12"),
        "{seen:?}"
    );
    // The NMEA device publishes the GGA's position on its own topics.
    let gga = seen
        .iter()
        .find(|m| m.topic == "gps/gps/position")
        .map(|m| json(&m.payload));
    assert_eq!(
        gga,
        Some(
            serde_json::json!({"lat": 48.1173, "lon": 11.5166667, "alt_m": 545.4, "fix": 1, "sats": 8, "hdop": 0.9})
        ),
        "{seen:?}"
    );
    let logs = gw.logs();
    let warned = logs
        .lines()
        .filter(|l| l.contains("WARN") && l.split_whitespace().any(|w| w == "device=gps"));
    assert_eq!(warned.count(), 0, "{logs}");
}

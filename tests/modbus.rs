//! The Modbus RTU master against an independent slave: pymodbus serving units on a pty cable.
//! Needs python3 with pymodbus (`pip install pymodbus==3.6.9 pyserial`); without it the tests skip
//! outside CI and fail in it.

mod common;

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::line::Cable;
use common::*;
use rumqttc::QoS;

const T: Duration = Duration::from_secs(10);

/// pymodbus on `port`, serving `spec` (see tests/modbus/slave.py); None when it cannot run here.
fn slave(port: &std::path::Path, spec: &serde_json::Value, dir: &std::path::Path) -> Option<Slave> {
    let ok = Command::new("python3")
        .args(["-c", "import pymodbus"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("CI").is_err(),
            "pymodbus is needed in CI: pip install pymodbus==3.6.9 pyserial"
        );
        eprintln!("skipped: python3 with pymodbus is not installed (pip install pymodbus==3.6.9 pyserial)");
        return None;
    }
    let spec_path = dir.join("slave.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/modbus/slave.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(port)
        .arg(&spec_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    assert_eq!(
        rx.recv_timeout(T).ok().as_deref(),
        Some("ready"),
        "pymodbus did not start"
    );
    Some(Slave { child })
}

/// The slave process, killed when dropped.
struct Slave {
    child: Child,
}

impl Drop for Slave {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

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

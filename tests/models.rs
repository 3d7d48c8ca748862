//! Devices configured by model, end to end: the real binary, a simulated device on a pty that
//! is silent until asked (where the real one is), and a subscriber on the broker. The other
//! protocol families' simulator tests use models too: binary push and Modbus in tests/scan.rs,
//! the examples' text telegram, text block and binary polled devices in tests/examples.rs.

mod common;

use std::time::Duration;

use common::*;
use rumqttc::QoS;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Duration = Duration::from_secs(10);

/// A Vaisala WXT530 in polled mode at address 0: once `go` is set, answers `0R0<cr><lf>` with
/// its next composite data message after 30 ms, and nothing else; returns the requests it got.
fn wxt530(
    pty: Pty,
    answers: Vec<&'static str>,
    go: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> tokio::task::JoinHandle<Vec<String>> {
    tokio::spawn(async move {
        let mut answered = 0;
        let mut master = pty.master;
        let _keep = pty.path;
        let mut requests = Vec::new();
        let mut line = Vec::new();
        let mut byte = [0u8; 1];
        let mut opened = false;
        loop {
            match master.read_exact(&mut byte).await {
                Ok(_) => opened = true,
                // Nobody has opened the port yet: wait. Closed after it was: the gateway is gone.
                Err(e) if e.raw_os_error() == Some(libc::EIO) && !opened => {
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
                Err(_) => break,
            }
            line.push(byte[0]);
            if !line.ends_with(b"\r\n") {
                continue;
            }
            let request = String::from_utf8_lossy(&line).into_owned();
            line.clear();
            requests.push(request.clone());
            if request != "0R0\r\n" || !go.load(std::sync::atomic::Ordering::Relaxed) {
                continue;
            }
            let Some(answer) = answers.get(answered).copied() else {
                continue;
            };
            answered += 1;
            tokio::time::sleep(Duration::from_millis(30)).await;
            if master
                .write_all(format!("{answer}\r\n").as_bytes())
                .await
                .is_err()
            {
                break;
            }
        }
        requests
    })
}

#[tokio::test]
async fn a_polled_ascii_weather_station_is_one_line_of_config() {
    let pty = Pty::new();
    let yaml = format!(
        "gateway: {{id: gw, state_dir: \"{{dir}}/state\"}}\nbroker: {{listen: \"127.0.0.1:{{port}}\"}}\n\
         devices:\n  - {{name: roof, port: {}, model: vaisala-wxt530, every: 300ms}}\n",
        pty.path.display()
    );
    // The user guide's own answer, then one in °F (never published as °C), then a change:
    // answered once the subscriber is there.
    let go = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sim = wxt530(
        pty,
        vec![
            "0R0,Dx=005D,Sx=2.8M,Ta=23.0C,Ua=30.0P,Pa=1028.2H,Hd=0.00M,Rd=10s,Th=23.6C",
            "0R0,Dx=005D,Sx=2.8M,Ta=73.4F,Ua=30.0P,Pa=1028.2H,Hd=0.00M,Rd=10s,Th=23.6C",
            "0R0,Dx=010D,Sx=3.1M,Ta=24.5C,Ua=31.0P,Pa=1027.9H,Hd=0.00M,Rd=10s,Th=24.0C",
        ],
        go.clone(),
    );
    let gw = start_gateway(&yaml);
    let mut sub = Subscriber::connect(gw.port, &["weather/#"], QoS::AtMostOnce).await;
    go.store(true, std::sync::atomic::Ordering::Relaxed);
    // Consecutive temperatures: the °F reading in between published none.
    assert_eq!(
        sub.next_on("weather/roof/temperature", T).await.payload,
        "23.0"
    );
    assert_eq!(
        sub.next_on("weather/roof/temperature", T).await.payload,
        "24.5"
    );
    assert_eq!(
        sub.next_on("weather/roof/pressure", T).await.payload,
        "1027.9"
    );
    drop(gw);
    let requests = sim.await.unwrap();
    assert!(requests.len() >= 3, "{requests:?}");
    assert!(
        requests.iter().all(|r| r == "0R0\r\n"),
        "nothing but the read request: {requests:?}"
    );
}

#[test]
fn every_model_s_test_vectors_pass_through_the_command_line() {
    let out = serial2mqtt_command()
        .args(["models", "test", "--config", "/nonexistent/config.yaml"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.trim_end().ends_with(" failed"), "{stdout}");
    assert!(stdout.contains(", 0 failed"), "{stdout}");
    let list = serial2mqtt_command()
        .args(["models", "list", "--config", "/nonexistent/config.yaml"])
        .output()
        .unwrap();
    let models = String::from_utf8_lossy(&list.stdout).lines().count();
    assert!(models >= 30, "{models} models");
}

/// RSS and CPU of a gateway reading 8 Eastron SDM630 units (17 points, 3 requests each, every
/// second) configured by model, against the same 8 written out in full (`check --expand`), in
/// one run, from pymodbus. Figures in BENCHMARKS.md:
/// `CI=true cargo test --release --test models memory -- --ignored --nocapture`.
#[tokio::test]
#[ignore = "a measurement (20 s per configuration); figures in BENCHMARKS.md"]
async fn memory_with_8_model_based_meters_and_the_same_written_out() {
    use common::devices::sdm630_input_registers;
    use common::line::Cable;
    use common::slave::slave;
    let mut figures = Vec::new();
    for written_out in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let cable = Cable::new();
        let mut units = serde_json::Map::new();
        for u in 1..=8 {
            units.insert(
                u.to_string(),
                serde_json::json!({"ir": sdm630_input_registers()}),
            );
        }
        let Some(_slave) = slave(
            &cable.device_path,
            &serde_json::json!({"units": units}),
            dir.path(),
        ) else {
            return;
        };
        let mut yaml = String::from(
            "gateway: {id: testgw, state_dir: \"{dir}/state\"}\nbroker: {listen: \"127.0.0.1:{port}\"}\ndevices:\n",
        );
        for u in 1..=8 {
            yaml.push_str(&format!(
                "  - {{name: m{u}, port: {}, model: eastron-sdm630, unit: {u}, every: 1s}}\n",
                cable.gateway_path.display()
            ));
        }
        if written_out {
            let file = dir.path().join("models.yaml");
            let placeholders = [("{port}", "65000"), ("{dir}", "/placeholder-dir")];
            let mut text = yaml.clone();
            for (from, to) in placeholders {
                text = text.replace(from, to);
            }
            std::fs::write(&file, &text).unwrap();
            let out = serial2mqtt_command()
                .args(["check", "--expand"])
                .arg(&file)
                .output()
                .unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            yaml = String::from_utf8(out.stdout)
                .unwrap()
                .replace("  model: eastron-sdm630\n", "");
            for (from, to) in placeholders {
                yaml = yaml.replace(to, from);
            }
            assert!(!yaml.contains("model:"), "{yaml}");
        }
        let gw = start_gateway(&yaml);
        let mut sub = Subscriber::connect(gw.port, &["power/#"], QoS::AtMostOnce).await;
        let start = std::time::Instant::now();
        let mut cycles = 0;
        while start.elapsed() < Duration::from_secs(20) {
            sub.next_on("power/m8/voltage_l1", T).await;
            cycles += 1;
        }
        let pid = gw.child.id();
        let mib = |k: &str| status_kib(pid, k) as f64 / 1024.0;
        let cpu = cpu_seconds(pid);
        let what = if written_out {
            "written out"
        } else {
            "by model"
        };
        eprintln!(
            "8 SDM630 units {what}, every 1s: {cycles} cycles of m8 in 20 s; RSS {:.1} MiB, peak {:.1} MiB; CPU {cpu:.2} s",
            mib("VmRSS:"),
            mib("VmHWM:")
        );
        assert!(cycles >= 15, "{what}: {cycles} cycles");
        figures.push((mib("VmHWM:"), cpu));
    }
    eprintln!(
        "peak RSS by model / written out: {:.2}; CPU {:.2}",
        figures[0].0 / figures[1].0,
        figures[0].1 / figures[1].1
    );
}

/// A model's writable point, switched on by naming it: EPEver's load switch (coil 2) from
/// `solar/<device>/load/set`, written to a pymodbus unit, its state read back and published.
#[tokio::test]
async fn a_model_s_command_writes_its_point_once_the_device_names_it() {
    use common::line::Cable;
    use common::slave::slave;
    let dir = tempfile::tempdir().unwrap();
    let cable = Cable::new();
    let mut ir = vec![0u16; 0x3320];
    ir[0x3104] = 1230; // battery 12.30 V
    let spec =
        serde_json::json!({"baud": 115200, "units": {"1": {"ir": ir, "co": vec![false; 16]}}});
    let Some(mut slave) = slave(&cable.device_path, &spec, dir.path()) else {
        return;
    };
    let yaml = format!(
        "gateway: {{id: gw, state_dir: \"{{dir}}/state\"}}\nbroker: {{listen: \"127.0.0.1:{{port}}\"}}\n\
         devices:\n  - {{name: charger, port: {}, model: epever-tracer, every: 300ms, commands: [load]}}\n",
        cable.gateway_path.display()
    );
    let gw = start_gateway(&yaml);
    let mut sub = Subscriber::connect(gw.port, &["solar/#"], QoS::AtLeastOnce).await;
    assert_eq!(
        sub.next_on("solar/charger/battery_voltage", T)
            .await
            .payload,
        "12.3"
    );
    assert_eq!(sub.next_on("solar/charger/load", T).await.payload, "OFF");
    sub.client
        .publish("solar/charger/load/set", QoS::AtLeastOnce, false, "ON")
        .await
        .unwrap();
    assert_eq!(slave.next_write().await, "write 1 co 2 [True]");
    assert_eq!(
        sub.next_on("solar/charger/load/result", T).await.payload,
        "ok"
    );
    sub.next_change("solar/charger/load", "OFF", "ON", T).await;
    // A payload the command does not take is refused with the reason.
    sub.client
        .publish("solar/charger/load/set", QoS::AtLeastOnce, false, "MAYBE")
        .await
        .unwrap();
    let refused = sub.next_on("solar/charger/load/result", T).await.payload;
    assert!(refused.starts_with("error"), "{refused}");
    assert_eq!(slave.writes(), 1);
}

//! `serial2mqtt scan` on simulated lines that, like real ones, carry only garbage while the
//! scanner's end is at another speed or parity: it finds a talking device at a speed its model
//! does not leave the factory with, and two different Modbus models (pymodbus, an independent
//! implementation) at addresses nobody would guess, within the time it states first; and the
//! snippet it prints, pasted into a config, publishes the devices' values.

mod common;

use std::process::Output;
use std::time::{Duration, Instant};

use common::devices::{sdm120_registers, sdm630_input_registers};
use common::line::Cable;
use common::slave::slave;
use common::*;
use rumqttc::QoS;
use tokio::io::AsyncWriteExt;

const T: Duration = Duration::from_secs(10);

/// Runs the scan; (output, wall time).
async fn scan(port: &std::path::Path, dir: &std::path::Path, args: &[&str]) -> (Output, Duration) {
    let mut c = serial2mqtt_command();
    c.arg("scan")
        .arg(port)
        .args(["--config"])
        .arg(dir.join("none.yaml"))
        .args(args);
    let started = Instant::now();
    let out = tokio::task::spawn_blocking(move || c.output().unwrap())
        .await
        .unwrap();
    (out, started.elapsed())
}

/// The bounds the scan stated before it began: (quiet line, a talking device), in seconds.
fn stated(stderr: &str) -> (f64, f64) {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("this takes at most"))
        .unwrap_or_else(|| panic!("no stated bound:\n{stderr}"));
    let nums: Vec<f64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    (nums[0], nums[1])
}

/// The snippet as part of a config for the gateway (broker on the test's port).
fn config_with(snippet: &str) -> String {
    format!(
        "gateway: {{id: scanned, state_dir: \"{{dir}}/state\"}}\nbroker: {{listen: \"127.0.0.1:{{port}}\"}}\n{snippet}"
    )
}

#[tokio::test]
async fn a_talking_device_is_found_at_an_unexpected_speed_and_its_snippet_publishes() {
    // An SDS011 (factory 9600 baud) set to 19200, sending every 200 ms.
    let cable = Cable::gated(19200, 'N');
    let device = cable.device_path.clone();
    // The frames repeat one reading, which the model's deadband publishes once, and the
    // gateway may read frames that waited on the line before its subscriber is there: once
    // the gateway runs, the sensor alternates between two readings far apart.
    let paused = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pause = paused.clone();
    let alternate = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let alternating = alternate.clone();
    let sim = tokio::spawn(async move {
        let mut port =
            tokio_serial::SerialStream::open(&tokio_serial::new(device.to_string_lossy(), 19200))
                .unwrap();
        loop {
            if pause.load(std::sync::atomic::Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
            let clean_air = [0xAA, 0xC0, 0x53, 0x00, 0x93, 0x00, 0xA1, 0x60, 0xE7, 0xAB];
            if alternating.load(std::sync::atomic::Ordering::Relaxed) {
                if port.write_all(&clean_air).await.is_err() {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            // 123.6 / 261.8 µg/m³ (the model's first test vector).
            let frame = [0xAA, 0xC0, 0xD4, 0x04, 0x3A, 0x0A, 0xA1, 0x60, 0x1D, 0xAB];
            if port.write_all(&frame).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let dir = tempfile::tempdir().unwrap();
    let (out, took) = scan(
        &cable.gateway_path,
        dir.path(),
        &["--listen", "2s", "--units", "1-2"],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stderr}\n{stdout}");
    assert!(
        stdout.contains("model: nova-sds011") && stdout.contains("baud: 19200"),
        "{stdout}\n{stderr}"
    );
    assert!(stdout.contains("# certain:"), "{stdout}");
    let (_, talking) = stated(&stderr);
    assert!(
        took.as_secs_f64() <= talking + 2.0,
        "took {took:?}, stated {talking} s:\n{stderr}"
    );

    paused.store(true, std::sync::atomic::Ordering::Relaxed);
    let gw = start_gateway(&config_with(&stdout));
    let mut sub = Subscriber::connect(gw.port, &["air/#"], QoS::AtMostOnce).await;
    alternate.store(true, std::sync::atomic::Ordering::Relaxed);
    paused.store(false, std::sync::atomic::Ordering::Relaxed);
    // Both readings arrive, each exactly as the frames carry it.
    for (topic, want, other) in [
        ("air/nova_sds011/pm25", "123.6", "8.3"),
        ("air/nova_sds011/pm10", "261.8", "14.7"),
    ] {
        let mut seen = std::collections::BTreeSet::new();
        while seen.len() < 2 {
            let got = sub.next_on(topic, T).await.payload;
            assert!(got == want || got == other, "{topic}: {got}");
            seen.insert(got);
        }
    }
    sim.abort();
}

#[tokio::test]
async fn two_modbus_models_are_found_at_unexpected_addresses_and_their_snippet_publishes() {
    let cable = Cable::gated(9600, 'N');
    let dir = tempfile::tempdir().unwrap();
    let (sdm120_ir, sdm120_hr) = sdm120_registers();
    let spec = serde_json::json!({
        "baud": 9600,
        "units": {
            // An SDM120 (factory 2400 baud) set to 9600: its map is an SDM230's too, and only
            // its meter code (holding 0xFC02) tells them apart.
            "3": {"ir": sdm120_ir, "hr": sdm120_hr},
            "7": {"ir": sdm630_input_registers()},
            // An XY-MD02: 21.7 °C, 48.3 %RH in input registers 1 and 2.
            "12": {"ir": [0, 217, 483]},
        }
    });
    let Some(_slave) = slave(&cable.device_path, &spec, dir.path()) else {
        return;
    };
    let (out, took) = scan(
        &cable.gateway_path,
        dir.path(),
        &["--listen", "1s", "--units", "1-15"],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    eprintln!("{stderr}{stdout}");
    assert!(out.status.success(), "{stderr}\n{stdout}");
    // Eastron's three-phase meters share one register map: any of them reads this unit right,
    // and the scan says that the others fit as well.
    let meter = stdout
        .lines()
        .find(|l| l.contains("unit: 7}"))
        .unwrap_or_else(|| panic!("unit 7 not found:\n{stdout}\n{stderr}"));
    assert!(
        ["eastron-sdm630", "eastron-sdm72d-2"]
            .iter()
            .any(|m| meter.contains(&format!("model: {m},"))),
        "{stdout}"
    );
    assert!(stdout.contains("fits as well:"), "{stdout}");
    let meter_name = meter
        .split("name: ")
        .nth(1)
        .and_then(|r| r.split(',').next())
        .unwrap()
        .to_owned();
    assert!(
        stdout.contains("{name: xy_md02_12, port:"),
        "{stdout}\n{stderr}"
    );
    assert!(
        stdout.contains("model: xy-md02, unit: 12}"),
        "{stdout}\n{stderr}"
    );
    assert_eq!(stdout.matches("  - {name:").count(), 3, "{stdout}");
    let sdm120 = stdout
        .lines()
        .find(|d| d.contains("unit: 3,") || d.contains("unit: 3}"))
        .unwrap_or_else(|| panic!("unit 3 not found:\n{stdout}"));
    assert!(sdm120.contains("model: eastron-sdm120,"), "{stdout}");
    assert!(
        sdm120.ends_with("baud: 9600}"),
        "not its factory speed: {stdout}"
    );
    assert!(stdout.contains("its model code reads 0x0020"), "{stdout}");
    let (quiet, _) = stated(&stderr);
    // The stated bound is for a line where nothing answers; each unit found adds the reading
    // of every Modbus model's map (at most a few seconds each).
    assert!(
        took.as_secs_f64() <= quiet + 2.0 * 10.0,
        "took {took:?}, stated {quiet} s:\n{stderr}"
    );

    let gw = start_gateway(&config_with(&stdout));
    let mut power = Subscriber::connect(gw.port, &["power/#"], QoS::AtMostOnce).await;
    let mut climate = Subscriber::connect(gw.port, &["climate/#"], QoS::AtMostOnce).await;
    // The first read may come before the subscriptions: the next one is a cycle later (the
    // models' defaults: 10 s for the meter, 30 s for the sensor).
    let cycle = |every: u64| Duration::from_secs(every + 5);
    assert_eq!(
        power
            .next_on(&format!("power/{meter_name}/voltage_l2"), cycle(10))
            .await
            .payload,
        "229.8"
    );
    let mut sdm120 =
        Subscriber::connect(gw.port, &["power/eastron_sdm120_3/#"], QoS::AtMostOnce).await;
    assert_eq!(
        sdm120
            .next_on("power/eastron_sdm120_3/voltage", cycle(10))
            .await
            .payload,
        "229.6"
    );
    assert_eq!(
        climate
            .next_on("climate/xy_md02_12/temperature", cycle(30))
            .await
            .payload,
        "21.7"
    );
    assert_eq!(
        climate
            .next_on("climate/xy_md02_12/humidity", T)
            .await
            .payload,
        "48.3"
    );
}

#[tokio::test]
async fn nothing_on_the_line_is_exit_1_with_what_to_try() {
    let cable = Cable::gated(9600, 'N');
    let dir = tempfile::tempdir().unwrap();
    let (out, took) = scan(
        &cable.gateway_path,
        dir.path(),
        &["--listen", "1s", "--units", "1-2", "--bauds", "9600"],
    )
    .await;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(out.stdout.is_empty());
    assert!(stderr.contains("nothing found"), "{stderr}");
    let (quiet, _) = stated(&stderr);
    assert!(
        took.as_secs_f64() <= quiet + 2.0,
        "took {took:?}:\n{stderr}"
    );
}

/// A port of the running gateway is not scanned (the scan's requests would go between the
/// gateway's), unless asked to share it.
#[tokio::test]
async fn a_port_of_the_running_gateway_is_refused_unless_shared() {
    let pty = Pty::new();
    let gw = start_gateway(&format!(
        "gateway: {{id: held, state_dir: \"{{dir}}/state\"}}\nbroker: {{listen: \"127.0.0.1:{{port}}\"}}\n\
         devices:\n  - {{name: dust, port: {}, model: nova-sds011}}\n",
        pty.path.display()
    ));
    gw.wait_log("gateway running", T).await;
    let config = gw.dir.path().join("config.yaml");
    let run = |share: bool| {
        let mut c = serial2mqtt_command();
        c.arg("scan")
            .arg(&pty.path)
            .arg("--config")
            .arg(&config)
            .args(["--listen", "1s", "--units", "1", "--bauds", "9600"]);
        if share {
            c.arg("--share");
        }
        c.output().unwrap()
    };
    let out = run(false);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("is a port of the running gateway"),
        "{stderr}"
    );
    assert!(stderr.contains("--share"), "{stderr}");
    // Asked to share, it tries: the gateway's exclusive hold on the port is what stops it.
    let out = run(true);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("is a port of the running gateway"),
        "{stderr}"
    );
    assert!(stderr.contains("is in use by another program"), "{stderr}");
    assert_eq!(out.status.code(), Some(2), "{stderr}");
}

//! Local apps written with paho-mqtt 1.6 use the embedded broker like any MQTT broker.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn have_paho() -> bool {
    if !have_tool("python3") {
        return false;
    }
    let ok = Command::new("python3")
        .args(["-c", "import paho.mqtt.client"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("python3 paho-mqtt 1.6 is required in CI (.ci/run installs it)");
        }
        eprintln!("SKIPPED: python3 paho-mqtt is not installed (pip install 'paho-mqtt==1.6.1')");
    }
    ok
}

fn script(name: &str) -> String {
    format!("{}/tests/paho/{name}", env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn wildcards_qos_retained_last_will_persistent_sessions_and_a_chat_room() {
    if !have_paho() {
        return;
    }
    let gw = start_gateway("gateway: {id: t}\nbroker: {listen: \"127.0.0.1:{port}\"}\n");
    let out = Command::new("python3")
        .arg(script("broker_features.py"))
        .args(["127.0.0.1", &gw.port.to_string()])
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("6 passed, 0 failed"), "{text}");
}

/// The seed article's publisher and subscriber, unchanged: they connect to localhost:1883, so
/// this test needs that port free.
#[test]
fn the_seed_articles_paho_scripts_work_unchanged_on_port_1883() {
    if !have_paho() {
        return;
    }
    if std::net::TcpListener::bind("127.0.0.1:1883").is_err() {
        panic!("port 1883 is taken: stop the MQTT broker running there to run this test");
    }
    let gw = start_gateway_on(
        "gateway: {id: t}\nbroker: {listen: \"127.0.0.1:{port}\"}\n",
        1883,
    );
    let out_path = gw.path("subscriber.out");
    let mut sub = Command::new("python3")
        .arg("-u")
        .arg(script("seed_subscriber.py"))
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("subscriber");
    std::thread::sleep(Duration::from_millis(700));
    let mut publisher = Command::new("python3")
        .arg(script("seed_publisher.py"))
        .spawn()
        .expect("publisher");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut received = String::new();
    while Instant::now() < deadline {
        received = std::fs::read_to_string(&out_path).unwrap_or_default();
        if received.contains("Received message: 25.6\nTopic: home/temperature") {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = publisher.kill();
    let _ = sub.kill();
    let _ = publisher.wait();
    let _ = sub.wait();
    assert!(
        received.contains("Received message: 25.6\nTopic: home/temperature"),
        "subscriber printed: {received:?}\n{}",
        gw.logs()
    );
}

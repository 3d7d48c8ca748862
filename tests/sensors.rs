//! Real sensors' frames on pty pairs: checksums that prove a frame, and the counters and logs a
//! user sees when a line corrupts one.

mod common;

use std::time::Duration;

use common::*;
use rumqttc::QoS;

const T: Duration = Duration::from_secs(10);

fn testgw(devices: &str, rules: &str) -> String {
    format!(
        "gateway: {{id: testgw, stats_interval: 1s}}\nbroker: {{listen: \"127.0.0.1:{{port}}\"}}\n\
         devices:\n{devices}rules:\n{rules}"
    )
}

/// Waits for a stats message in which `device` has seen `frames` frames; returns its counters.
async fn counters(sub: &mut Subscriber, device: &str, frames: u64) -> serde_json::Value {
    let deadline = std::time::Instant::now() + T;
    loop {
        let stats = sub.next_on("serial2mqtt/testgw/stats", T).await;
        let v: serde_json::Value = serde_json::from_str(&stats.payload).unwrap();
        let d = &v["devices"][device];
        if d["frames"].as_u64() >= Some(frames) {
            return d.clone();
        }
        assert!(std::time::Instant::now() < deadline, "{v}");
    }
}

/// A flipped data bit keeps an SDS011 frame's length, start and end bytes: only its checksum
/// tells. Such a frame used to be published as a reading (a PM2.5 of 36.7 for 11.1); now it is
/// dropped, counted as `bad_checksum`, and logged with the expected and the received sum.
#[tokio::test]
async fn a_frame_that_fails_its_checksum_is_never_published() {
    let mut pty = Pty::new();
    let yaml = testgw(
        &format!(
            r#"  - name: sds
    port: {}
    framing: {{fixed: 10, start_hex: "AA C0", end_hex: "AB"}}
    checksum: sds011
    rules: [pm]
"#,
            pty.path.display()
        ),
        r#"  pm:
    fields:
      - {name: pm25, offset: 2, type: u16le, scale: 0.1}
    publish:
      - {topic: "sensors/{device}/pm25", payload: "{pm25}"}
"#,
    );
    let gw = start_gateway(&yaml);
    let mut sub = Subscriber::connect(
        gw.port,
        &["sensors/#", "serial2mqtt/testgw/stats"],
        QoS::AtMostOnce,
    )
    .await;
    gw.wait_log("device online", T).await;
    let mut wire = sds011(111);
    let mut flipped = sds011(111);
    flipped[3] ^= 0x01; // 0x016F: 36.7 where the sensor measured 11.1
    wire.extend(flipped);
    wire.extend(sds011(222));
    pty.write(&wire).await;
    assert_eq!(sub.next_on("sensors/sds/pm25", T).await.payload, "11.1");
    assert_eq!(sub.next_on("sensors/sds/pm25", T).await.payload, "22.2");
    let d = counters(&mut sub, "sds", 3).await;
    assert_eq!(
        (d["bad_checksum"].as_u64(), d["messages"].as_u64()),
        (Some(1), Some(2)),
        "{d}"
    );
    // The flipped bit adds one to the sum of the data bytes; the frame still carries the old.
    let sum = sds011(111)[8];
    let line = format!(
        "bad checksum (expected 0x{:02X}, received 0x{sum:02X})",
        sum.wrapping_add(1)
    );
    gw.wait_log(&line, T).await;
}

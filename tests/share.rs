//! Sharing the bus: other programs reach the Modbus units on the gateway's line through its
//! Modbus TCP server while the gateway polls them. Independent implementations on both sides:
//! pymodbus serves the units on a pty cable (RTU), pymodbus's TCP client and mbpoll ask through
//! the server. Needs python3 with pymodbus and mbpoll (`apt install mbpoll`); without them the
//! tests skip outside CI and fail in it.

mod common;

use std::time::Duration;

use common::line::Cable;
use common::slave::{client, slave};
use common::*;
use rumqttc::QoS;
use serde_json::json;

const T: Duration = Duration::from_secs(10);

/// Four units polled every 200 ms by the gateway, each published on `share/<device>`, and a
/// server on `server_port` with `units` (YAML list items) and `extra` server keys.
fn config(port: &std::path::Path, server_port: u16, units: &str, extra: &str) -> String {
    let mut yaml = String::from(
        "gateway: {id: testgw, stats_interval: 1s}\nbroker: {listen: \"127.0.0.1:{port}\"}\ndevices:\n",
    );
    for u in 1..=4 {
        yaml += &format!(
            "  - name: u{u}\n    port: {}\n    offline_after: 2\n    offline_poll: 2s\n    modbus: {{unit: {u}, every: 200ms, timeout: 150ms, retries: 0, points: [{{name: a, holding: 0}}, {{name: b, input: 1}}]}}\n    rules: [p]\n",
            port.display()
        );
    }
    yaml += "rules:\n  p: {points: true, publish: [{topic: \"share/{device}\", payload: \"{a} {b}\"}]}\n";
    yaml += &format!("modbus_server:\n  listen: 127.0.0.1:{server_port}\n{extra}  units:\n{units}");
    yaml
}

/// Each unit's registers: holding 0.. = unit*100 + i, input 0.. = unit*1000 + i.
fn units_spec(silent: &[u8]) -> serde_json::Value {
    let mut units = serde_json::Map::new();
    for u in 1..=4u16 {
        if silent.contains(&(u as u8)) {
            continue;
        }
        let hr: Vec<u16> = (0..20).map(|i| u * 100 + i).collect();
        let ir: Vec<u16> = (0..20).map(|i| u * 1000 + i).collect();
        units.insert(
            u.to_string(),
            json!({"hr": hr, "ir": ir, "co": vec![false; 8]}),
        );
    }
    json!({"baud": 9600, "units": units})
}

/// The line never carried two requests at once: every turn of the gateway's is exactly one
/// RTU request and is followed by the device's answer before the next request (no unit here
/// is silent, so no request may go unanswered). Returns how many requests crossed.
fn assert_one_at_a_time(cable: &Cable) -> usize {
    let crc = crc::Crc::<u16>::new(&crc::CRC_16_MODBUS);
    let turns = cable.traffic.turns();
    let mut requests = 0;
    for (i, (up, bytes)) in turns.iter().enumerate() {
        let n = bytes.len();
        let whole = n >= 4 && crc.checksum(&bytes[..n - 2]).to_le_bytes() == bytes[n - 2..];
        assert!(
            whole,
            "turn {i} ({}) is not one frame: {}",
            if *up { "request" } else { "answer" },
            hex(bytes)
        );
        if *up {
            requests += 1;
            // A request is 8 bytes here (reads, single writes): two at once would be 16.
            assert_eq!(n, 8, "turn {i}: {} is not one request", hex(bytes));
            if let Some((next_up, next)) = turns.get(i + 1) {
                assert!(
                    !next_up,
                    "turn {i}: a request followed a request without its answer: {}",
                    hex(next)
                );
            }
        }
    }
    requests
}

/// Runs mbpoll once against the server (0-based addresses); whether it succeeded, its output.
async fn mbpoll(server: u16, args: &str) -> (bool, String) {
    let out = tokio::process::Command::new("mbpoll")
        .args([
            "-m",
            "tcp",
            "-p",
            &server.to_string(),
            "-0",
            "-1",
            "-o",
            "2",
        ])
        .args(args.split_whitespace())
        .output()
        .await
        .unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    (out.status.success(), text)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// pymodbus's client and mbpoll read and write through the server while the gateway polls the
/// same four units: both get correct values, writes are allowed and refused as configured, and
/// the line never carries two requests at once.
#[tokio::test]
async fn clients_and_the_gateway_share_the_bus_one_request_at_a_time() {
    if !have_tool("mbpoll") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cable = Cable::new();
    let Some(mut slave) = slave(&cable.device_path, &units_spec(&[]), dir.path()) else {
        return;
    };
    let server = free_port();
    let units = "    - {device: u1, cache: 5s}\n    - {device: u2, write: [{clients: [127.0.0.1], holding: [\"10-11\"]}]}\n    - {device: u3, unit: 13, read: [{clients: any, holding: [\"0-9\"]}]}\n    - {device: u4}\n";
    let gw = start_gateway(&config(&cable.gateway_path, server, units, ""));
    let mut sub = Subscriber::connect(
        gw.port,
        &["share/#", "serial2mqtt/testgw/stats"],
        QoS::AtMostOnce,
    )
    .await;
    for u in 1..=4 {
        let want = format!("{} {}", u * 100, u * 1000 + 1);
        assert_eq!(
            sub.next_on(&format!("share/u{u}"), T).await.payload,
            want,
            "{}",
            gw.logs()
        );
    }
    let ops = json!([
        {"op": "hr", "unit": 1, "address": 0, "count": 1, "repeat": 20},
        {"op": "ir", "unit": 2, "address": 2, "count": 3, "repeat": 10},
        {"op": "hr", "unit": 13, "address": 5, "count": 5, "repeat": 10},
        {"op": "hr", "unit": 4, "address": 0, "count": 20, "repeat": 10},
        {"op": "write_hr", "unit": 2, "address": 10, "value": 4321},
        {"op": "hr", "unit": 2, "address": 10, "count": 2},
        {"op": "write_hr", "unit": 4, "address": 10, "value": 1},
        {"op": "write_hr", "unit": 2, "address": 12, "value": 1},
        {"op": "hr", "unit": 13, "address": 10, "count": 1},
        {"op": "hr", "unit": 9, "address": 0, "count": 1},
    ]);
    let got = client(server, &ops, dir.path()).await;
    let ok = |i: usize| got[i]["ok"].clone();
    let all: Vec<u16> = (0..20).map(|i| 400 + i).collect();
    let reads = [
        (0..20, json!([100])),
        (20..30, json!([2002, 2003, 2004])),
        (30..40, json!([305, 306, 307, 308, 309])),
        (40..50, json!(all)),
    ];
    for (range, want) in reads {
        for r in &got[range] {
            assert_eq!(r["ok"], want, "{r}");
        }
    }
    assert_eq!(ok(50), json!([]), "granted write: {}", got[50]);
    assert_eq!(ok(51), json!([4321, 211]), "{}", got[51]);
    assert_eq!(
        got[52]["exception"], 1,
        "unit 4 grants no write: {}",
        got[52]
    );
    assert_eq!(
        got[53]["exception"], 1,
        "unit 2 grants 10-11 only: {}",
        got[53]
    );
    assert_eq!(
        got[54]["exception"], 2,
        "unit 13 grants reads of 0-9 only: {}",
        got[54]
    );
    assert_eq!(got[55]["exception"], 10, "no unit 9 here: {}", got[55]);
    assert_eq!(slave.next_write().await, "write 2 hr 10 [4321]");

    // mbpoll, another implementation: a read of unit 4, a granted write to unit 2, a refused
    // one to unit 13.
    let (read_ok, text) = mbpoll(server, "-a 4 -t 3 -r 1 -c 2 127.0.0.1").await;
    assert!(
        read_ok && text.contains("[1]: \t4001") && text.contains("[2]: \t4002"),
        "{text}"
    );
    let (write_ok, text) = mbpoll(server, "-a 2 -t 4 -r 11 127.0.0.1 77").await;
    assert!(write_ok, "{text}");
    assert_eq!(slave.next_write().await, "write 2 hr 11 [77]");
    let (refused_ok, text) = mbpoll(server, "-a 13 -t 4 -r 3 127.0.0.1 5").await;
    assert!(!refused_ok && text.contains("Illegal function"), "{text}");
    assert_eq!(
        slave.writes(),
        2,
        "the refused writes never reached the line"
    );

    // The gateway's own readings went on, correct, all along.
    for u in 1..=4 {
        let want = format!("{} {}", u * 100, u * 1000 + 1);
        assert_eq!(sub.next_on(&format!("share/u{u}"), T).await.payload, want);
    }
    let stats = stats_until(&mut sub, "testgw", |v| {
        v["modbus_server"]["forwarded"].as_u64() >= Some(33)
    })
    .await;
    let s = &stats["modbus_server"];
    assert_eq!(
        (
            s["cached"].as_u64(),
            s["denied"].as_u64(),
            s["unknown_unit"].as_u64()
        ),
        (Some(20), Some(4), Some(1)),
        "{s}"
    );
    let requests = assert_one_at_a_time(&cable);
    assert!(requests > 40, "{requests} requests on the line");
}

//! What one frame costs from the framer's output to its messages, in process: the frame
//! handler (checksum, rules, computed values, report by exception) that every device task
//! runs, on the kinds of rules the examples use. The end-to-end pipeline (`--bench pipeline`)
//! measures the same path with the ports, the broker and a subscriber around it.
//!
//! Run: `cargo bench --bench frames` (BENCH_RUNS=N, default 5; the median is printed).

use std::path::Path;
use std::time::{Duration, Instant};

use bytes::Bytes;
use serial2mqtt::frames::FrameHandler;
use serial2mqtt::stats::DeviceStats;

const FRAMES: usize = 200_000;

/// One case: a device with its framing, checksum and rule, and a frame it would read.
struct Case {
    name: &'static str,
    device: &'static str,
    rules: &'static str,
    frame: fn(u32) -> Vec<u8>,
}

fn sds011(n: u32) -> Vec<u8> {
    let pm = (n % 1000) as u16;
    let mut f = vec![0xAA, 0xC0];
    f.extend_from_slice(&pm.to_le_bytes());
    f.extend_from_slice(&[0x20, 0x00, 0x01, 0x02]);
    let sum = f[2..8].iter().fold(0u8, |a, b| a.wrapping_add(*b));
    f.extend_from_slice(&[sum, 0xAB]);
    f
}

fn gga(n: u32) -> Vec<u8> {
    let body = format!(
        "GPGGA,1235{:02},4807.{:03},N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,",
        n % 60,
        n % 1000
    );
    let sum = body.bytes().fold(0u8, |a, b| a ^ b);
    format!("${body}*{sum:02X}").into_bytes()
}

fn cases() -> Vec<Case> {
    vec![
        Case {
            name: "text regex (the pipeline bench's rule)",
            device: "framing: lines",
            rules: r#"
  r:
    match: '^seq=(?P<n>\d+)$'
    publish: [{topic: "bench/{device}", payload: "{n}"}]"#,
            frame: |n| format!("seq={n}").into_bytes(),
        },
        Case {
            name: "binary fields",
            device: r#"framing: {fixed: 10, start_hex: "AA C0", end_hex: "AB"}"#,
            rules: r#"
  r:
    fields: [{name: pm25, offset: 2, type: u16le, scale: 0.1}]
    publish: [{topic: "bench/{device}", payload: "{pm25}"}]"#,
            frame: sds011,
        },
        Case {
            name: "binary fields + sds011 checksum",
            device: r#"framing: {fixed: 10, start_hex: "AA C0", end_hex: "AB"}
    checksum: sds011"#,
            rules: r#"
  r:
    fields: [{name: pm25, offset: 2, type: u16le, scale: 0.1}]
    publish: [{topic: "bench/{device}", payload: "{pm25}"}]"#,
            frame: sds011,
        },
        Case {
            name: "binary + checksum + expression",
            device: r#"framing: {fixed: 10, start_hex: "AA C0", end_hex: "AB"}
    checksum: sds011"#,
            rules: r#"
  r:
    fields: [{name: raw, offset: 2, type: u16le}]
    values: {pm25: "round(raw * 0.1 + 0.05, 1)"}
    publish: [{topic: "bench/{device}", payload: "{pm25}"}]"#,
            frame: sds011,
        },
        Case {
            name: "NMEA GGA + nmea checksum, JSON",
            device: "framing: lines\n    checksum: nmea",
            rules: r#"
  r:
    match: '^\$GPGGA,[\d.]*,(?P<lat>\d+\.\d+),(?P<ns>[NS]),(?P<lon>\d+\.\d+),(?P<ew>[EW]),(?P<fix>\d)'
    publish: [{topic: "bench/{device}", payload: {lat: "{lat}", ns: "{ns}", lon: "{lon}", ew: "{ew}"}}]"#,
            frame: gga,
        },
        Case {
            name: "NMEA GGA + nmea checksum + 2 expressions, JSON",
            device: "framing: lines\n    checksum: nmea",
            rules: r#"
  r:
    match: '^\$GPGGA,[\d.]*,(?P<lat>\d+\.\d+),(?P<ns>[NS]),(?P<lon>\d+\.\d+),(?P<ew>[EW]),(?P<fix>\d)'
    values: {latitude: "nmea_degrees(lat, ns)", longitude: "nmea_degrees(lon, ew)"}
    publish: [{topic: "bench/{device}", payload: {lat: "{latitude}", lon: "{longitude}"}}]"#,
            frame: gga,
        },
    ]
}

fn per_frame(case: &Case) -> Option<Duration> {
    let yaml = format!(
        "gateway: {{id: bench}}\ndevices:\n  - name: d\n    port: /dev/null-bench\n    {}\n    rules: [r]\nrules:{}\n",
        case.device, case.rules
    );
    // A build without a case's keys (another version, measured side by side) skips it.
    let config = serial2mqtt::config::parse(&yaml, Path::new("bench.yaml")).ok()?;
    let device = &config.devices[0];
    let frames: Vec<Bytes> = (0..1000).map(|n| Bytes::from((case.frame)(n))).collect();
    let stats = DeviceStats::default();
    let mut handler = FrameHandler::new(device, "bench", &stats);
    let start = Instant::now();
    let mut messages = 0;
    for i in 0..FRAMES {
        messages += handler.handle(&frames[i % frames.len()]).len();
    }
    let elapsed = start.elapsed();
    assert_eq!(
        messages, FRAMES,
        "{}: every frame makes its message",
        case.name
    );
    Some(elapsed / FRAMES as u32)
}

fn main() {
    let runs: usize = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    println!(
        "{:<50} {:>10}",
        "per frame (frame handler, in process)", "ns/frame"
    );
    for case in cases() {
        let Some(mut times) = (0..runs)
            .map(|_| per_frame(&case))
            .collect::<Option<Vec<_>>>()
        else {
            println!("{:<50} {:>10}", case.name, "(not in this build)");
            continue;
        };
        times.sort();
        println!("{:<50} {:>10}", case.name, times[runs / 2].as_nanos());
    }
}

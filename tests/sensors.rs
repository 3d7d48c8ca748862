//! Real sensors' frames on pty pairs: checksums that prove a frame, and the counters and logs a
//! user sees when a line corrupts one.

mod common;

use std::time::Duration;

use common::devices::*;
use common::*;
use rumqttc::QoS;

const T: Duration = Duration::from_secs(10);

fn testgw(devices: &str, rules: &str) -> String {
    format!(
        "gateway: {{id: testgw, stats_interval: 1s}}\nbroker: {{listen: \"127.0.0.1:{{port}}\"}}\n\
         devices:\n{devices}rules:\n{rules}"
    )
}

/// A gateway reading an SDS011 (start/end bytes, its checksum, PM2.5 rule) on `port`, and a
/// subscriber to its readings and stats, once the device is online.
async fn sds011_gateway(port: &std::path::Path) -> (Gateway, Subscriber) {
    let yaml = testgw(
        &format!(
            r#"  - name: sds
    port: {}
    framing: {{fixed: 10, start_hex: "AA C0", end_hex: "AB"}}
    checksum: sds011
    rules: [pm]
"#,
            port.display()
        ),
        SDS011_PM_RULE,
    );
    let gw = start_gateway(&yaml);
    let sub = Subscriber::connect(
        gw.port,
        &["sensors/#", "serial2mqtt/testgw/stats"],
        QoS::AtMostOnce,
    )
    .await;
    gw.wait_log("device online", T).await;
    (gw, sub)
}

/// A flipped data bit keeps an SDS011 frame's length, start and end bytes: only its checksum
/// tells. Such a frame used to be published as a reading (a PM2.5 of 36.7 for 11.1); now it is
/// dropped, counted as `bad_checksum`, and logged with the expected and the received sum.
#[tokio::test]
async fn a_frame_that_fails_its_checksum_is_never_published() {
    let mut pty = Pty::new();
    let (gw, mut sub) = sds011_gateway(&pty.path).await;
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

/// The README's UBX example (its `length` framing and `checksum: ubx`), with `port` for its
/// port, in a config for the tests' gateway `testgw`.
fn readme_ubx_config(port: &std::path::Path) -> String {
    let readme = include_str!("../README.md");
    let section = readme
        .split("### A u-blox receiver speaking UBX")
        .nth(1)
        .expect("the README's UBX section");
    let block = section
        .split("```yaml\n")
        .nth(1)
        .and_then(|b| b.split("```").next())
        .expect("the README's UBX example");
    assert!(block.contains("checksum: ubx"), "{block}");
    let block: String = block
        .lines()
        .map(|l| match l.strip_prefix("    port: ") {
            Some(_) => format!("    port: {}\n", port.display()),
            None => format!("{l}\n"),
        })
        .collect();
    format!(
        "gateway: {{id: testgw, stats_interval: 1s}}\nbroker: {{listen: \"127.0.0.1:{{port}}\"}}\n{block}"
    )
}

/// Issue 32: a NAV-PVT frame with two errors that cancel in the sum of its bytes (CK_A right,
/// CK_B wrong) was published with `sum8`, a position some 730 m off. The README's example
/// frames UBX with `length` and checks both bytes with `checksum: ubx`: each good position is
/// published once, the damaged frame never, and it is counted and logged.
#[tokio::test]
async fn the_readme_ubx_receiver_never_publishes_a_frame_with_a_wrong_ck_b() {
    let mut pty = Pty::new();
    let gw = start_gateway(&readme_ubx_config(&pty.path));
    let mut readings = Subscriber::connect(gw.port, &["gps/#"], QoS::AtMostOnce).await;
    let mut stats =
        Subscriber::connect(gw.port, &["serial2mqtt/testgw/stats"], QoS::AtMostOnce).await;
    gw.wait_log("device online", T).await;

    let good = nav_pvt(481_173_000, 115_166_666);
    // One byte of the latitude one up and the next one down: the same sum, CK_A unchanged.
    let mut damaged = good.clone();
    damaged[35] = damaged[35].wrapping_add(1);
    damaged[36] = damaged[36].wrapping_sub(1);
    assert_eq!(damaged[98], good[98], "CK_A is the same");
    let later = nav_pvt(-337_000_000, 1_512_000_000);
    // Garbage before the first frame: the framing finds the sync bytes.
    let mut wire = vec![0x00, 0xB5, 0x13];
    for f in [&good, &damaged, &later] {
        wire.extend_from_slice(f);
    }
    pty.write(&wire).await;

    for (lat, lon) in [(48.1173, 11.5166666), (-33.7, 151.2)] {
        let m = readings.next_on("gps/gps", T).await;
        let v: serde_json::Value = serde_json::from_str(&m.payload).unwrap();
        assert_eq!(
            (v["lat"].as_f64(), v["lon"].as_f64()),
            (Some(lat), Some(lon)),
            "{}",
            m.payload
        );
    }
    let d = counters(&mut stats, "gps", 3).await;
    assert_eq!(
        (d["bad_checksum"].as_u64(), d["messages"].as_u64()),
        (Some(1), Some(2)),
        "{d}"
    );
    readings.assert_quiet(Duration::from_millis(300)).await;
    // The log shows both check bytes as they are on the wire, CK_A first: the damaged
    // frame's own (recomputed) and the ones it carries.
    let own = ubx(0x01, 0x07, &damaged[6..98]);
    gw.wait_log(
        &format!(
            "bad checksum (expected 0x{:02X}{:02X}, received 0x{:02X}{:02X})",
            own[98], own[99], damaged[98], damaged[99]
        ),
        T,
    )
    .await;
}

fn mhz19_config(pty: &Pty, poll: &str) -> String {
    testgw(
        &format!(
            r#"  - name: co2
    port: {}
    framing: {{fixed: 9, start_hex: "FF 86"}}
    checksum: mhz19
    offline_after: 2
    offline_poll: 400ms
    poll:
      - {{name: read, write_hex: "FF 01 86 00 00 00 00 00 79", {poll}}}
    rules: [co2]
"#,
            pty.path.display()
        ),
        r#"  co2:
    fields:
      - {name: ppm, offset: 2, type: u16be}
    publish:
      - {topic: "sensors/{device}/{request}", payload: "{ppm}"}
"#,
    )
}

/// A sensor that speaks only when asked is polled on its interval; its answers are ruled with
/// `{request}`; silence is counted as timeouts and, after `offline_after`, announced on the
/// state topic, and the next answer brings it back `online`.
#[tokio::test]
async fn a_silent_sensor_is_polled_and_its_silence_is_announced() {
    let pty = Pty::new();
    let yaml = mhz19_config(&pty, "every: 200ms, timeout: 150ms");
    // Answers 0..5, silent for 6..9, answers again from 10 on.
    let sim = mhz19(pty, |i| (!(6..10).contains(&i)).then_some(400 + i as u16));
    let gw = start_gateway(&yaml);
    let state = "serial2mqtt/testgw/devices/co2/state";
    let mut sub = Subscriber::connect(
        gw.port,
        &["sensors/#", state, "serial2mqtt/testgw/stats"],
        QoS::AtMostOnce,
    )
    .await;
    let first: u32 = sub
        .next_on("sensors/co2/read", T)
        .await
        .payload
        .parse()
        .unwrap();
    assert!((400..406).contains(&first), "{first}");
    sub.next_change(state, "online", "offline", T).await;
    sub.next_change(state, "offline", "online", T).await;
    let d = counters(&mut sub, "co2", 12).await;
    assert!(d["timeouts"].as_u64() >= Some(4), "{d}");
    assert_eq!(d["bad_checksum"].as_u64(), Some(0), "{d}");
    assert!(
        gw.logs().contains("polls in a row unanswered"),
        "{}",
        gw.logs()
    );
    // The requests kept their interval (none piled up while the sensor was silent).
    drop(gw);
    let arrivals = sim.await.unwrap();
    for pair in arrivals.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(150),
            "requests {gap:?} apart: {arrivals:?}"
        );
    }
}

/// An answer that fails its checksum is no answer: the poll is sent again at once (retries)
/// and the good answer is published; the bad one never is.
#[tokio::test]
async fn a_corrupted_answer_is_asked_again_and_never_published() {
    let pty = Pty::new();
    let yaml = mhz19_config(&pty, "every: 1s, timeout: 300ms, retries: 1");
    // The first answer is corrupted (checksum off by one), the retry's is good.
    let _sim = mhz19(pty, |i| Some(if i == 0 { 60_777 } else { 800 }));
    let gw = start_gateway(&yaml);
    let mut sub = Subscriber::connect(
        gw.port,
        &["sensors/#", "serial2mqtt/testgw/stats"],
        QoS::AtMostOnce,
    )
    .await;
    assert_eq!(sub.next_on("sensors/co2/read", T).await.payload, "800");
    let d = counters(&mut sub, "co2", 2).await;
    assert_eq!(d["bad_checksum"].as_u64(), Some(1), "{d}");
    assert_eq!(d["timeouts"].as_u64(), Some(0), "{d}");
    assert!(gw.logs().contains("bad checksum"), "{}", gw.logs());
}

/// A P1 port pushes a multi-line telegram every second. The `telegram` framing cuts it whole
/// from `/` to the CRC, the `dsmr` checksum proves it, and two rules take a value each. A
/// telegram with one changed digit is dropped as bad_checksum; one cut short by a lost
/// stretch of bytes (the next telegram's `/` arriving before its `!`) costs only itself.
#[tokio::test]
async fn dsmr_telegrams_are_cut_whole_and_proven_by_their_crc() {
    let mut pty = Pty::new();
    let yaml = testgw(
        &format!(
            r#"  - name: p1
    port: {}
    baud: 115200
    framing: {{telegram: {{start: "/", end: "!", trailer: 4}}}}
    max_frame: 2048
    checksum: dsmr
    rules: [import, power]
"#,
            pty.path.display()
        ),
        r#"  import:
    match: '1-0:1\.8\.1\((?P<kwh>\d+\.\d+)\*kWh\)'
    continue: true
    publish:
      - {topic: "power/{device}/import_t1", payload: "{kwh}"}
  power:
    match: '1-0:1\.7\.0\((?P<kw>\d+\.\d+)\*kW\)'
    publish:
      - {topic: "power/{device}/power", payload: "{kw}"}
"#,
    );
    let gw = start_gateway(&yaml);
    let mut sub = Subscriber::connect(
        gw.port,
        &["power/#", "serial2mqtt/testgw/stats"],
        QoS::AtMostOnce,
    )
    .await;
    gw.wait_log("device online", T).await;
    let mut wire = dsmr_telegram("001234.567", "01.193");
    let mut changed = dsmr_telegram("001234.568", "01.193");
    let crc_at = changed.len() - 6;
    changed[crc_at..crc_at + 4].copy_from_slice(&wire[crc_at..crc_at + 4]);
    wire.extend(changed);
    let cut_short = dsmr_telegram("001234.569", "01.200");
    wire.extend_from_slice(&cut_short[..150]);
    wire.extend(dsmr_telegram("001234.570", "00.950"));
    pty.write(&wire).await;
    let first = sub.next_on("power/p1/import_t1", T).await.payload;
    assert_eq!(first, "001234.567");
    assert_eq!(sub.next_on("power/p1/power", T).await.payload, "01.193");
    assert_eq!(
        sub.next_on("power/p1/import_t1", T).await.payload,
        "001234.570",
        "the changed and the cut-short telegram are never published"
    );
    let d = counters(&mut sub, "p1", 3).await;
    assert_eq!(
        (
            d["frames"].as_u64(),
            d["bad_checksum"].as_u64(),
            d["messages"].as_u64()
        ),
        (Some(3), Some(1), Some(4)),
        "{d}"
    );
    assert!(d["resync_bytes"].as_u64() >= Some(150), "{d}");
}

/// What the bus simulator saw: each request's first byte's arrival, its line, and when the
/// addressed meter's answer finished on the wire (None: not answered).
#[derive(Debug, Clone)]
struct Transaction {
    arrived: std::time::Instant,
    line: String,
    answered: Option<std::time::Instant>,
}

/// An RS-485 line with text meters at addresses 01..: each is silent until a line `AA:READ`
/// (or `AA:SET=v`) for its address arrives, then answers `AA:VALUE=n` (`AA:OK`) after its
/// own delay, byte by byte at 9600 baud (1.04 ms a character), as a half-duplex bus does.
/// Requests are read concurrently with the answers, so one arriving while an answer is still
/// on the wire (a collision on a real bus) is seen and recorded.
fn rs485_bus(
    pty: Pty,
    delays_ms: &'static [u64],
) -> (
    tokio::task::JoinHandle<()>,
    std::sync::Arc<std::sync::Mutex<Vec<Transaction>>>,
) {
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let log: Arc<Mutex<Vec<Transaction>>> = Arc::default();
    let seen = log.clone();
    let task = tokio::spawn(async move {
        let _keep = pty.path;
        let (read, mut write) = tokio::io::split(pty.master);
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(usize, String)>();
        let reader_log = seen.clone();
        tokio::spawn(async move {
            let mut lines = tokio::io::BufReader::new(read);
            let mut line = String::new();
            loop {
                line.clear();
                match lines.read_line(&mut line).await {
                    // No gateway on the other end yet (once it was there, EIO means it left).
                    Err(e)
                        if e.raw_os_error() == Some(libc::EIO)
                            && reader_log.lock().unwrap().is_empty() =>
                    {
                        tokio::time::sleep(Duration::from_millis(10)).await;
                        continue;
                    }
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let text = line.trim_end().to_string();
                let mut log = reader_log.lock().unwrap();
                log.push(Transaction {
                    arrived: std::time::Instant::now(),
                    line: text.clone(),
                    answered: None,
                });
                let _ = tx.send((log.len() - 1, text));
            }
        });
        let char_time = Duration::from_micros(1042);
        while let Some((index, line)) = rx.recv().await {
            let Some((addr, what)) = line.split_once(':') else {
                continue;
            };
            let Some(delay) = addr
                .parse::<usize>()
                .ok()
                .and_then(|a| delays_ms.get(a.wrapping_sub(1)))
            else {
                continue; // nobody at that address: silence
            };
            let arrived = seen.lock().unwrap()[index].arrived;
            tokio::time::sleep_until((arrived + Duration::from_millis(*delay)).into()).await;
            let answer = if what == "READ" {
                format!("{addr}:VALUE={}\n", index)
            } else {
                format!("{addr}:OK\n")
            };
            let start = tokio::time::Instant::now();
            for (i, byte) in answer.bytes().enumerate() {
                tokio::time::sleep_until(start + char_time * i as u32).await;
                if write.write_all(&[byte]).await.is_err() {
                    return;
                }
            }
            seen.lock().unwrap()[index].answered = Some(std::time::Instant::now());
        }
    });
    (task, log)
}

/// Three meters on one RS-485 port, one of them slow to answer, polled every 100 ms (more than
/// the line can carry: `check` warns), and a burst of commands to one of them: the port puts
/// one request on the wire at a time, never while an answer is still coming, commands go
/// between polls, and the slow meter does not starve the fast ones (nor they it).
#[tokio::test]
async fn a_shared_bus_never_has_two_requests_out_and_shares_its_time() {
    let pty = Pty::new();
    let port = pty.path.display().to_string();
    let meter = |n: u8| {
        let commands = if n == 2 { "\n    commands: [set]" } else { "" };
        format!(
            r#"  - name: m{n}
    port: {port}
    poll:
      - {{name: read, write: "0{n}:READ\n", every: 100ms, timeout: 300ms}}
    rules: [reading]{commands}
"#
        )
    };
    let mut yaml = testgw(
        &format!("{}{}{}", meter(1), meter(2), meter(3)),
        r#"  reading:
    match: '^0\d:(?:VALUE=\d+|OK)$'
    publish:
      - {topic: "meters/{device}/{request}", payload: "{frame}"}
"#,
    );
    yaml.push_str(
        r#"commands:
  set:
    subscribe: "cmd/{device}/set"
    write: "02:SET={payload}\n"
"#,
    );
    // Meter 3 takes 120 ms to answer; 1 and 2 take 10 ms.
    let (_sim, log) = rs485_bus(pty, &[10, 10, 120]);
    let gw = start_gateway(&yaml);
    let mut sub = Subscriber::connect(gw.port, &["meters/#"], QoS::AtMostOnce).await;
    for m in ["m1", "m2", "m3"] {
        sub.next_on(&format!("meters/{m}/read"), T).await;
    }
    for v in 0..5 {
        sub.client
            .publish("cmd/m2/set", QoS::AtLeastOnce, false, format!("{v}"))
            .await
            .unwrap();
    }
    for _ in 0..5 {
        assert_eq!(sub.next_on("meters/m2/set", T).await.payload, "02:OK");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    drop(gw);
    let log = log.lock().unwrap().clone();
    for pair in log.windows(2) {
        if let Some(answered) = pair[0].answered {
            assert!(
                pair[1].arrived >= answered,
                "{:?} arrived {:?} before the answer to {:?} was over",
                pair[1].line,
                answered - pair[1].arrived,
                pair[0].line
            );
        }
    }
    let count = |what: &str| log.iter().filter(|t| t.line.starts_with(what)).count();
    let sets: Vec<&str> = log
        .iter()
        .filter(|t| t.line.starts_with("02:SET="))
        .map(|t| t.line.as_str())
        .collect();
    assert_eq!(
        sets,
        ["02:SET=0", "02:SET=1", "02:SET=2", "02:SET=3", "02:SET=4"]
    );
    let reads = [count("01:READ"), count("02:READ"), count("03:READ")];
    let (least, most) = (*reads.iter().min().unwrap(), *reads.iter().max().unwrap());
    assert!(least >= 5, "every meter is asked: {reads:?}");
    assert!(most <= 2 * least, "no meter starves another: {reads:?}");
    // The last one may have been cut off by the gateway's stop.
    assert!(
        log[..log.len() - 1].iter().all(|t| t.answered.is_some()),
        "every request was answered within its timeout: {log:?}"
    );
}

/// An SDS011 in active mode behind a noisy line (0.3 % of bytes dropped, 0.3 % flipped, 0.3 %
/// inserted): every reading that is published is one the sensor sent, in the order it sent
/// them; the damaged frames are counted (bad_checksum, resync_bytes), and the others get
/// through.
#[tokio::test]
async fn a_noisy_line_costs_frames_never_a_wrong_reading() {
    let line = line::FaultyLine::new(line::Faults {
        drop_ppm: 3000,
        flip_ppm: 3000,
        insert_ppm: 3000,
        seed: 7,
    })
    .await;
    let (_gw, mut sub) = sds011_gateway(&line.gateway_path).await;
    let mut device = line.device;
    const SENT: u16 = 400;
    for n in 1..=SENT {
        device.write(&sds011(n * 10 + 1)).await; // 0.1, 1.1, 2.1, ...: one decimal
    }
    // Read until the counters stop moving: everything written has been cut and ruled.
    let mut last = None;
    let deadline = std::time::Instant::now() + T;
    let d = loop {
        let stats = sub.next_on("serial2mqtt/testgw/stats", T).await;
        let v: serde_json::Value = serde_json::from_str(&stats.payload).unwrap();
        let d = v["devices"]["sds"].clone();
        let now = (d["frames"].as_u64(), d["resync_bytes"].as_u64());
        if now.0 > Some(0) && last == Some(now) {
            break d;
        }
        last = Some(now);
        assert!(std::time::Instant::now() < deadline, "{v}");
    };
    let published: Vec<String> = sub
        .seen
        .lock()
        .unwrap()
        .iter()
        .filter(|m| m.topic == "sensors/sds/pm25")
        .map(|m| m.payload.clone())
        .collect();
    let values: Vec<u16> = published
        .iter()
        .map(|p| (p.parse::<f64>().unwrap() * 10.0).round() as u16)
        .collect();
    for v in &values {
        assert!(
            v % 10 == 1 && (1..=SENT).contains(&(v / 10)),
            "never sent: {v}"
        );
    }
    assert!(
        values.windows(2).all(|w| w[0] < w[1]),
        "published in the order sent: {values:?}"
    );
    let faults = &line.injected;
    let injected = faults.dropped.load(std::sync::atomic::Ordering::Relaxed)
        + faults.flipped.load(std::sync::atomic::Ordering::Relaxed)
        + faults.inserted.load(std::sync::atomic::Ordering::Relaxed);
    assert!(injected > 20, "the line made faults: {injected}");
    assert!(
        values.len() as u16 >= SENT * 7 / 10 && (values.len() as u16) < SENT,
        "{} of {SENT} readings published with {injected} faults",
        values.len()
    );
    assert_eq!(d["messages"].as_u64(), Some(values.len() as u64), "{d}");
    eprintln!(
        "{} of {SENT} readings published, {injected} faults: {d}",
        values.len()
    );
    assert!(
        d["bad_checksum"].as_u64() > Some(0) && d["resync_bytes"].as_u64() > Some(0),
        "{d}"
    );
}

/// A CO2 sensor polled every 100 ms whose readings wobble by ±3 ppm: with `deadband: 10` and
/// `heartbeat: 1s` the gateway publishes the first reading, one heartbeat a second while it
/// wobbles, and a real change (a window opened: 400 → 520 ppm) at once.
#[tokio::test]
async fn report_by_exception_publishes_changes_and_heartbeats_only() {
    let pty = Pty::new();
    let yaml = mhz19_config(&pty, "every: 100ms, timeout: 80ms").replace(
        r#"payload: "{ppm}"}"#,
        r#"payload: "{ppm}", deadband: 10, heartbeat: 1s}"#,
    );
    assert!(yaml.contains("deadband: 10"), "{yaml}");
    let changed_at = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(usize::MAX));
    let change = changed_at.clone();
    let _sim = mhz19(pty, move |i| {
        let wobble = [0u16, 3, 6, 2, 4, 1][i % 6];
        let base = if i >= change.load(std::sync::atomic::Ordering::Relaxed) {
            520
        } else {
            400
        };
        Some(base + wobble)
    });
    let gw = start_gateway(&yaml);
    let mut sub = Subscriber::connect(
        gw.port,
        &["sensors/#", "serial2mqtt/testgw/stats"],
        QoS::AtMostOnce,
    )
    .await;
    let first = std::time::Instant::now();
    sub.next_on("sensors/co2/read", T).await;
    let mut times = Vec::new();
    while first.elapsed() < Duration::from_millis(3500) {
        let m = tokio::time::timeout(
            Duration::from_millis(200),
            sub.next_on("sensors/co2/read", T),
        )
        .await;
        if let Ok(m) = m {
            let ppm: u16 = m.payload.parse().unwrap();
            assert!((400..=406).contains(&ppm), "{ppm}");
            times.push(first.elapsed());
        }
    }
    // About 35 polls answered; one heartbeat a second was published.
    assert!(
        (2..=4).contains(&times.len()),
        "heartbeats only while it wobbles: {times:?}"
    );
    for pair in times.windows(2) {
        assert!(pair[1] - pair[0] >= Duration::from_millis(900), "{times:?}");
    }
    changed_at.store(0, std::sync::atomic::Ordering::Relaxed);
    let asked = std::time::Instant::now();
    let m = sub.next_on("sensors/co2/read", T).await;
    assert!(m.payload.parse::<u16>().unwrap() >= 520, "{}", m.payload);
    assert!(
        asked.elapsed() < Duration::from_millis(500),
        "a change goes out with the next poll, not the next heartbeat: {:?}",
        asked.elapsed()
    );
    let d = counters(&mut sub, "co2", 30).await;
    assert!(
        d["messages"].as_u64() < Some(10),
        "{d}: most answers published nothing"
    );
}

/// A VE.Direct charge controller: every block that passes its checksum is published once,
/// whatever its closing byte (half of real blocks close with 0x80-0xFF, which is no text: they
/// were all dropped as "not UTF-8"), and a corrupted block never is.
#[tokio::test]
async fn vedirect_blocks_are_published_whatever_their_checksum_byte() {
    let mut pty = Pty::new();
    let yaml = testgw(
        &format!(
            r#"  - name: mppt
    port: {}
    baud: 19200
    framing: {{telegram: {{start: "\r\nPID\t", end: "\r\nChecksum\t", trailer: 1}}}}
    checksum: neg8
    rules: [battery]
"#,
            pty.path.display()
        ),
        r#"  battery:
    match: '\r\nV\t(?P<mv>\d+)\r\nI\t(?P<ma>-?\d+)\r\n'
    publish:
      - {topic: "solar/{device}/battery", payload: "{mv} {ma}"}
"#,
    );
    let gw = start_gateway(&yaml);
    let mut sub = Subscriber::connect(
        gw.port,
        &["solar/#", "serial2mqtt/testgw/stats"],
        QoS::AtMostOnce,
    )
    .await;
    gw.wait_log("device online", T).await;
    // Currents of 1 to 6 digits spread the closing byte over its whole range.
    let reading = |i: u32| (12_500 + i * 41, 3 - (i as i32).pow(5));
    let blocks: Vec<((u32, i32), Vec<u8>)> = (0..16)
        .map(|i| (reading(i), vedirect_block(reading(i).0, reading(i).1)))
        .collect();
    let high = blocks
        .iter()
        .filter(|(_, b)| b[b.len() - 1] >= 0x80)
        .count();
    assert!(
        (4..=12).contains(&high),
        "{high} of 16 blocks close with 0x80-0xFF"
    );
    // A block whose voltage was damaged on the line (one digit changed, its checksum kept).
    let mut damaged = vedirect_block(13_000, -200);
    let at = damaged.windows(5).position(|w| w == b"13000").unwrap();
    damaged[at] = b'2';
    let mut wire = Vec::new();
    for (i, (_, b)) in blocks.iter().enumerate() {
        wire.extend_from_slice(b);
        if i == 7 {
            wire.extend_from_slice(&damaged);
        }
    }
    for chunk in wire.chunks(256) {
        pty.write(chunk).await;
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let mut got = Vec::new();
    for _ in 0..16 {
        got.push(sub.next_on("solar/mppt/battery", T).await.payload);
    }
    let want: Vec<String> = blocks
        .iter()
        .map(|((mv, ma), _)| format!("{mv} {ma}"))
        .collect();
    assert_eq!(got, want);
    let d = counters(&mut sub, "mppt", 17).await;
    assert_eq!(
        (
            d["messages"].as_u64(),
            d["bad_checksum"].as_u64(),
            d["invalid_utf8"].as_u64()
        ),
        (Some(16), Some(1), Some(0)),
        "{d}"
    );
    assert!(!gw.logs().contains("wrong baud rate"), "{}", gw.logs());
}

/// A meter that stops answering and comes back, on a real pty: while offline it is asked once
/// every `offline_poll` counted from request to request (its timeouts used to stretch that:
/// 1.3 s for 1 s here), and its first answer puts it back on its own interval at once (it used
/// to wait one more `offline_poll`).
#[tokio::test]
async fn a_dead_meter_is_probed_on_its_period_and_read_at_its_rate_once_back() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let pty = Pty::new();
    let yaml = testgw(
        &format!(
            r#"  - name: meter
    port: {}
    poll:
      - {{name: read, write: "01:READ\n", every: 400ms, timeout: 300ms}}
    offline_after: 3
    offline_poll: 1s
    rules: [reading]
"#,
            pty.path.display()
        ),
        r#"  reading:
    match: '^01:VALUE=\d+$'
    publish:
      - {topic: "meters/{device}", payload: "{frame}"}
"#,
    );
    // The meter: answers `01:VALUE=n` 5 ms after each request while `alive`.
    let alive = Arc::new(AtomicBool::new(true));
    let requests: Arc<Mutex<Vec<(std::time::Instant, bool)>>> = Arc::default();
    let (on, seen) = (alive.clone(), requests.clone());
    let _meter = tokio::spawn(async move {
        let _keep = pty.path;
        let (read, mut write) = tokio::io::split(pty.master);
        let mut lines = tokio::io::BufReader::new(read);
        let mut line = String::new();
        loop {
            line.clear();
            match lines.read_line(&mut line).await {
                Err(e) if e.raw_os_error() == Some(libc::EIO) => {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let answering = on.load(Ordering::SeqCst);
            let n = {
                let mut log = seen.lock().unwrap();
                log.push((std::time::Instant::now(), answering));
                log.len()
            };
            if answering {
                tokio::time::sleep(Duration::from_millis(5)).await;
                if write
                    .write_all(format!("01:VALUE={n}\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    });
    let gw = start_gateway(&yaml);
    let mut sub = Subscriber::connect(
        gw.port,
        &["meters/#", "serial2mqtt/testgw/devices/meter/state"],
        QoS::AtMostOnce,
    )
    .await;
    sub.next_on("meters/meter", T).await;
    // Dead: announced offline, then probed.
    alive.store(false, Ordering::SeqCst);
    sub.next_change(
        "serial2mqtt/testgw/devices/meter/state",
        "online",
        "offline",
        T,
    )
    .await;
    let dead_from = requests.lock().unwrap().len();
    tokio::time::sleep(Duration::from_millis(4200)).await;
    // Back: the next probe is answered.
    alive.store(true, Ordering::SeqCst);
    sub.next_change(
        "serial2mqtt/testgw/devices/meter/state",
        "offline",
        "online",
        T,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let log = requests.lock().unwrap().clone();
    let probes: Vec<std::time::Instant> = log[dead_from..]
        .iter()
        .take_while(|(_, answered)| !answered)
        .map(|(at, _)| *at)
        .collect();
    assert!(probes.len() >= 3, "{} probes", probes.len());
    for pair in probes.windows(2) {
        let gap = pair[1] - pair[0];
        assert!(
            gap >= Duration::from_millis(950) && gap < Duration::from_millis(1200),
            "offline probes {gap:?} apart, want offline_poll (1 s)"
        );
    }
    // The first answered probe, then reads at the 200 ms interval again.
    let back = log
        .iter()
        .rposition(|(_, answered)| !answered)
        .map(|i| i + 1)
        .unwrap();
    let after: Vec<std::time::Instant> = log[back..].iter().map(|(at, _)| *at).collect();
    assert!(after.len() >= 3, "{} reads after coming back", after.len());
    let gap = after[1] - after[0];
    assert!(
        gap < Duration::from_millis(700),
        "the read after the first answer came {gap:?} later, want its 400 ms interval"
    );
}

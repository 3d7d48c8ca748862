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
        SDS011_PM_RULE,
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

/// An MH-Z19 CO2 sensor on the pty: silent until sent `FF 01 86 00 00 00 00 00 79`, then
/// answers `FF 86 HH LL .. CS` after 20 ms with its real checksum. `answers` says, request by
/// request, what it does: Some(ppm) answers, None stays silent; a ppm above 60000 answers
/// with a corrupted checksum. Returns the times the requests arrived.
fn mhz19(
    pty: Pty,
    answers: impl Fn(usize) -> Option<u16> + Send + 'static,
) -> tokio::task::JoinHandle<Vec<std::time::Instant>> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    tokio::spawn(async move {
        let mut master = pty.master;
        let _keep = pty.path;
        let mut arrivals = Vec::new();
        let mut req = [0u8; 9];
        while let Ok(Ok(_)) =
            tokio::time::timeout(Duration::from_secs(5), master.read_exact(&mut req)).await
        {
            assert_eq!(hex::encode(req), "ff0186000000000079", "the read command");
            arrivals.push(std::time::Instant::now());
            let Some(ppm) = answers(arrivals.len() - 1) else {
                continue;
            };
            tokio::time::sleep(Duration::from_millis(20)).await;
            let mut f = vec![0xFF, 0x86];
            f.extend_from_slice(&(ppm % 60000).to_be_bytes());
            f.extend_from_slice(&[0x47, 0x00, 0x00, 0x00]);
            let sum = f[1..8].iter().fold(0u8, |a, b| a.wrapping_add(*b));
            f.push(0u8.wrapping_sub(sum).wrapping_add(u8::from(ppm > 60000)));
            if master.write_all(&f).await.is_err() {
                break;
            }
        }
        arrivals
    })
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

/// A DSMR 5 P1 telegram as a Landis+Gyr E360 sends it: header, blank line, OBIS lines, `!`
/// and the CRC-16/ARC of everything from `/` through `!` as four hex digits, then CR LF.
fn dsmr_telegram(import_kwh: &str, power_kw: &str) -> Vec<u8> {
    let body = format!(
        "/Ene5\\T210-D ESMR5.0\r\n\r\n1-3:0.2.8(50)\r\n0-0:1.0.0(261202151500W)\r\n\
         0-0:96.1.1(4530303437303030303037363330383138)\r\n\
         1-0:1.8.1({import_kwh}*kWh)\r\n1-0:1.8.2(004567.890*kWh)\r\n\
         1-0:2.8.1(000000.000*kWh)\r\n0-0:96.14.0(0002)\r\n1-0:1.7.0({power_kw}*kW)\r\n\
         1-0:2.7.0(00.000*kW)\r\n0-0:96.7.21(00010)\r\n1-0:32.7.0(229.0*V)\r\n!"
    );
    let crc = crc::Crc::<u16>::new(&crc::CRC_16_ARC).checksum(body.as_bytes());
    format!("{body}{crc:04X}\r\n").into_bytes()
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

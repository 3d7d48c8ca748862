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

/// The tests here measure paces and waits on a line pymodbus serves: they run one at a time,
/// so that four simulated buses do not share two cores.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn one_at_a_time() -> tokio::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().await
}

/// Four units polled every 200 ms by the gateway, each published on `share/<device>`, and a
/// server on `server_port` with `units` (YAML list items) and `extra` server keys.
fn config(port: &std::path::Path, server_port: u16, units: &str, extra: &str) -> String {
    let mut yaml = String::from(
        "gateway: {id: testgw, stats_interval: 1s}\nbroker: {listen: \"127.0.0.1:{port}\"}\ndevices:\n",
    );
    for u in 1..=4 {
        yaml += &format!(
            "  - name: u{u}\n    port: {}\n    offline_after: 2\n    offline_poll: 2s\n    modbus: {{unit: {u}, every: 200ms, timeout: 300ms, retries: 0, points: [{{name: a, holding: 0}}, {{name: b, input: 1}}]}}\n    rules: [p]\n",
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
    let _one = one_at_a_time().await;
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
        v["modbus_server"]["forwarded"].as_u64() >= Some(34)
            && v["modbus_server"]["denied"].as_u64() >= Some(4)
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

/// A Modbus TCP frame: transaction `tx`, `unit`, `pdu`.
fn mbap(tx: u16, unit: u8, pdu: &[u8]) -> Vec<u8> {
    let mut f = tx.to_be_bytes().to_vec();
    f.extend_from_slice(&[0, 0]);
    f.extend_from_slice(&(pdu.len() as u16 + 1).to_be_bytes());
    f.push(unit);
    f.extend_from_slice(pdu);
    f
}

/// Reads one answer frame: (transaction, unit, pdu); None when the server closed.
async fn answer(stream: &mut tokio::net::TcpStream) -> Option<(u16, u8, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; 7];
    tokio::time::timeout(T, stream.read_exact(&mut head))
        .await
        .ok()?
        .ok()?;
    let len = u16::from_be_bytes([head[4], head[5]]) as usize - 1;
    let mut pdu = vec![0u8; len];
    stream.read_exact(&mut pdu).await.ok()?;
    Some((u16::from_be_bytes([head[0], head[1]]), head[6], pdu))
}

/// Whether the server closed the connection within `within`.
async fn closed(stream: &mut tokio::net::TcpStream, within: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 512];
    let deadline = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}

/// A unit that does not answer gets exception 0x0B within max_wait plus its timeout, and at
/// once when it is known offline; a greedy client that keeps its queue full neither stops the
/// gateway's polls nor a modest client's reads.
#[tokio::test]
async fn a_dead_unit_is_answered_0x0b_in_time_and_a_greedy_client_starves_nobody() {
    let _one = one_at_a_time().await;
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let cable = Cable::new();
    let Some(_slave) = slave(&cable.device_path, &units_spec(&[4]), dir.path()) else {
        return;
    };
    let server = free_port();
    let units = "    - {device: u1}\n    - {device: u2}\n    - {device: u3}\n    - {device: u4}\n";
    // pymodbus takes a few ms per request on the pty (tens when the machine is busy): the
    // units are polled every 500 ms here, so that the polls need well under the 75 % of the
    // line they keep while clients wait (`share: 25%`).
    let yaml = config(&cable.gateway_path, server, units, "  share: 25%\n")
        .replace("every: 200ms", "every: 500ms");
    let gw = start_gateway(&yaml);
    let state = "serial2mqtt/testgw/devices/u4/state";
    let mut sub = Subscriber::connect(gw.port, &["share/#", state], QoS::AtMostOnce).await;
    assert_eq!(sub.next_on("share/u1", T).await.payload, "100 1001");
    // The first asks of the dead unit go on the line (it is not known dead yet).
    let first = client(
        server,
        &json!([{"op": "hr", "unit": 4, "address": 0, "count": 1}]),
        dir.path(),
    )
    .await;
    assert_eq!(first[0]["exception"], 11, "{}", first[0]);
    assert!(
        first[0]["ms"].as_f64().unwrap() < 1000.0 + 300.0 + 200.0,
        "{}",
        first[0]
    );
    sub.next_change(state, "online", "offline", T).await;
    let known = client(
        server,
        &json!([{"op": "hr", "unit": 4, "address": 0, "count": 1, "repeat": 5}]),
        dir.path(),
    )
    .await;
    for r in &known {
        assert_eq!(r["exception"], 11, "{r}");
        assert!(
            r["ms"].as_f64().unwrap() < 50.0,
            "known offline: answered at once: {r}"
        );
    }

    // The polls' pace alone, then with a greedy client keeping 4 reads of unit 2 waiting.
    let t0 = std::time::Instant::now();
    tokio::time::sleep(Duration::from_secs(3)).await;
    let t1 = std::time::Instant::now();
    let mut greedy = tokio::net::TcpStream::connect(("127.0.0.1", server))
        .await
        .unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (answered, busy) = (
        std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0)),
        std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0)),
    );
    let others = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let answered_n = answered.clone();
    let flood = {
        let (stop, answered, busy, others) =
            (stop.clone(), answered.clone(), busy.clone(), others.clone());
        tokio::spawn(async move {
            let (mut rd, mut wr) = greedy.split();
            let mut tx = 0u16;
            // Keep 6 in flight: 4 may wait, the rest are answered busy at once.
            for _ in 0..6 {
                tx += 1;
                wr.write_all(&mbap(tx, 2, &[3, 0, 0, 0, 20])).await.unwrap();
            }
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                use tokio::io::AsyncReadExt;
                let mut head = [0u8; 7];
                if rd.read_exact(&mut head).await.is_err() {
                    break;
                }
                let mut pdu = vec![0u8; u16::from_be_bytes([head[4], head[5]]) as usize - 1];
                rd.read_exact(&mut pdu).await.unwrap();
                if pdu[0] == 3 {
                    answered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                } else if pdu == [0x83, 6] {
                    busy.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                } else {
                    others.lock().unwrap().push(pdu);
                }
                tx = tx.wrapping_add(1);
                wr.write_all(&mbap(tx, 2, &[3, 0, 0, 0, 20])).await.unwrap();
            }
        })
    };
    let ops = json!([{"op": "ir", "unit": 3, "address": 0, "count": 2, "repeat": 20}]);
    let modest = client(server, &ops, dir.path());
    let t2 = std::time::Instant::now();
    let (_, modest) = tokio::join!(tokio::time::sleep(Duration::from_secs(3)), modest);
    let t3 = std::time::Instant::now();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let _ = flood.await;
    let answered = answered_n.load(std::sync::atomic::Ordering::Relaxed);
    // pymodbus now and then answers later than the 300 ms timeout when both cores are busy:
    // that read gets 0x0B (and the late answer is dropped as unsolicited). Nothing else.
    let others = others.lock().unwrap().clone();
    assert!(
        others.iter().all(|pdu| pdu == &[0x83, 0x0B]) && others.len() as u64 * 10 <= answered,
        "only busy, and a rare 0x0B, may come back: {others:?} of {answered}\n{}",
        gw.logs()
    );
    assert!(
        answered >= 30,
        "the greedy client was served too: {answered} reads in ~3 s"
    );
    assert!(
        busy.load(std::sync::atomic::Ordering::Relaxed) > 0,
        "its requests past max_queued were answered busy"
    );
    // The gateway's own requests to unit 1 on the line, without and with the greedy client.
    // The polls keep 75 % of the line while the client waits (`share: 25%`): their pace stays
    // within 70 % of the pace alone even on a machine so busy that pymodbus's slowness fills
    // the line with polls alone (with clients always first the polls stopped altogether).
    let polls = |from, to| {
        cable
            .traffic
            .timed_turns()
            .iter()
            .filter(|(at, up, b)| *up && *at >= from && *at < to && b[0] == 1)
            .count()
    };
    let (alone, with_greedy) = (polls(t0, t1), polls(t2, t3));
    assert!(
        with_greedy * 10 >= alone * 7,
        "the polls kept their pace: {with_greedy} requests to unit 1 in 3 s with the greedy client, {alone} without\n{}",
        gw.logs()
    );
    assert_eq!(sub.next_on("share/u1", T).await.payload, "100 1001");
    let mut ms: Vec<f64> = modest
        .iter()
        .map(|r| {
            assert_eq!(r["ok"], json!([3000, 3001]), "{r}");
            r["ms"].as_f64().unwrap()
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    // Every read was answered with its values (a starved one would have been answered busy
    // after max_wait, 500 ms); the median waited a few turns of the greedy client's.
    assert!(
        ms[ms.len() / 2] < 100.0,
        "the modest client waited a few turns: {ms:?}"
    );
}

/// Bad input from the network: a frame that cannot be cut closes its connection; a request
/// that cannot be read gets its exception and the connection goes on; a flood is answered busy
/// past `max_queued`; a client that never reads its answers, or sends nothing, is closed; and
/// all the while another client is served and the gateway's polls go on.
#[tokio::test]
async fn bad_frames_floods_and_clients_that_never_read_are_refused_and_counted() {
    let _one = one_at_a_time().await;
    use tokio::io::AsyncWriteExt;
    let dir = tempfile::tempdir().unwrap();
    let cable = Cable::new();
    let Some(_slave) = slave(&cable.device_path, &units_spec(&[]), dir.path()) else {
        return;
    };
    let server = free_port();
    let units = "    - {device: u1, cache: 10s}\n    - {device: u2}\n";
    let metrics_port = free_port();
    let yaml = config(&cable.gateway_path, server, units, "  idle_timeout: 2s\n").replace(
        "modbus_server:",
        &format!("metrics: {{listen: \"127.0.0.1:{metrics_port}\"}}\nmodbus_server:"),
    );
    let gw = start_gateway(&yaml);
    let mut sub = Subscriber::connect(
        gw.port,
        &["share/#", "serial2mqtt/testgw/stats"],
        QoS::AtMostOnce,
    )
    .await;
    assert_eq!(sub.next_on("share/u1", T).await.payload, "100 1001");
    let connect = || tokio::net::TcpStream::connect(("127.0.0.1", server));

    // Frames that cannot be cut: another protocol id, a length of 0, a length past a PDU.
    for head in [
        [0, 1, 0, 1, 0, 6, 1],
        [0, 1, 0, 0, 0, 0, 1],
        [0, 1, 0, 0, 1, 0, 1],
    ] {
        let mut c = connect().await.unwrap();
        c.write_all(&head).await.unwrap();
        c.write_all(&[3, 0, 0, 0, 1]).await.unwrap();
        assert!(closed(&mut c, T).await, "{head:?} closes the connection");
    }
    // Requests that can be cut but not served: each its exception, the connection stays.
    let mut c = connect().await.unwrap();
    for (pdu, code) in [
        (&[0x08u8, 0, 0, 0, 0][..], 1u8),      // diagnostics: not forwarded
        (&[0x03, 0, 0, 0][..], 3),             // a read one byte short
        (&[0x03, 0, 0, 0, 0][..], 3),          // count 0
        (&[0x10, 0, 1, 0, 2, 2, 0, 1][..], 3), // byte count disagrees
        (&[0x2B, 0x0E, 1, 0][..], 1),          // device identification
    ] {
        c.write_all(&mbap(7, 1, pdu)).await.unwrap();
        assert_eq!(
            answer(&mut c).await,
            Some((7, 1, vec![pdu[0] | 0x80, code])),
            "{pdu:?}"
        );
    }
    c.write_all(&mbap(8, 2, &[3, 0, 0, 0, 2])).await.unwrap();
    assert_eq!(
        answer(&mut c).await,
        Some((8, 2, vec![3, 4, 0, 200, 0, 201])),
        "still served"
    );

    // A flood of 500 reads at once: 4 go to the line, the rest are answered busy at once.
    let mut flood = connect().await.unwrap();
    let burst: Vec<u8> = (0..500u16)
        .flat_map(|tx| mbap(tx, 2, &[4, 0, 0, 0, 1]))
        .collect();
    flood.write_all(&burst).await.unwrap();
    let (mut ok, mut busy) = (0, 0);
    for _ in 0..500 {
        match answer(&mut flood).await {
            Some((_, 2, pdu)) if pdu == [4, 2, 0x07, 0xD0] => ok += 1,
            Some((_, 2, pdu)) if pdu == [0x84, 6] => busy += 1,
            other => panic!("{other:?}"),
        }
    }
    assert!(ok >= 4 && busy >= 400, "{ok} answered, {busy} busy");

    // A client that never reads: cached reads pile up until its buffers are full; it is
    // closed within the write timeout, while another client is served.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut never = socket
        .connect(([127, 0, 0, 1], server).into())
        .await
        .unwrap();
    let one: Vec<u8> = (0..2000u16)
        .flat_map(|tx| mbap(tx, 1, &[3, 0, 0, 0, 1]))
        .collect();
    let started = std::time::Instant::now();
    let writer = tokio::spawn(async move {
        while started.elapsed() < Duration::from_secs(15) {
            if never.write_all(&one).await.is_err() {
                return true;
            }
        }
        false
    });
    c.write_all(&mbap(9, 1, &[3, 0, 0, 0, 1])).await.unwrap();
    assert_eq!(
        answer(&mut c).await,
        Some((9, 1, vec![3, 2, 0, 100])),
        "others are served meanwhile"
    );
    assert!(
        tokio::time::timeout(Duration::from_secs(20), writer)
            .await
            .unwrap()
            .unwrap(),
        "the server closed the client that never reads"
    );
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );

    // A client that sends nothing is closed after idle_timeout.
    let mut idle = connect().await.unwrap();
    assert!(
        closed(&mut idle, Duration::from_secs(4)).await,
        "an idle connection is closed"
    );

    let stats = stats_until(&mut sub, "testgw", |v| {
        v["modbus_server"]["closed"].as_u64() >= Some(5)
    })
    .await;
    let s = &stats["modbus_server"];
    assert_eq!(s["malformed"].as_u64(), Some(5), "{s}");
    assert!(s["busy"].as_u64() >= Some(400), "{s}");
    assert_eq!(
        sub.next_on("share/u2", T).await.payload,
        "200 2001",
        "the polls went on"
    );
    // Three frames that could not be cut, the client that never read, the idle one (and the
    // others once they idle).
    assert!(s["closed"].as_u64() >= Some(5), "{s}");
    // The same counters on /metrics (copied once a second).
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let text = tokio::task::spawn_blocking(move || {
        use std::io::{Read, Write};
        let mut c = std::net::TcpStream::connect(("127.0.0.1", metrics_port)).unwrap();
        c.write_all(b"GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .unwrap();
        let mut text = String::new();
        c.read_to_string(&mut text).unwrap();
        text
    })
    .await
    .unwrap();
    assert!(
        text.contains("serial2mqtt_modbus_server_refused_total{reason=\"malformed\"} 5"),
        "{text}"
    );
    assert!(
        text.contains("serial2mqtt_modbus_server_requests_total{result=\"cached\"} "),
        "{text}"
    );
    assert!(
        gw.logs().contains(
            "closed a connection whose frames cannot be cut: protocol id 1 is not Modbus"
        ),
        "{}",
        gw.logs()
    );
}

/// The adapter unplugged and plugged back (a new cable behind the same by-id link): while it
/// is gone a client's read is answered 0x0B at once, not after a timeout; once it is back the
/// reads go through again.
#[tokio::test]
async fn an_unplugged_bus_answers_0x0b_at_once_and_serves_again_when_replugged() {
    let _one = one_at_a_time().await;
    let dir = tempfile::tempdir().unwrap();
    let link = dir.path().join("usb-rs485");
    let first = Cable::new();
    let Some(slave1) = slave(&first.device_path, &units_spec(&[]), dir.path()) else {
        return;
    };
    repoint(&link, &first.gateway_path);
    let server = free_port();
    let units = "    - {device: u1}\n";
    let gw = start_gateway(&config(&link, server, units, ""));
    let state = "serial2mqtt/testgw/devices/u1/state";
    let mut sub = Subscriber::connect(gw.port, &["share/#", state], QoS::AtMostOnce).await;
    assert_eq!(sub.next_on("share/u1", T).await.payload, "100 1001");
    let read = json!([{"op": "hr", "unit": 1, "address": 3, "count": 1}]);
    assert_eq!(
        client(server, &read, dir.path()).await[0]["ok"],
        json!([103])
    );

    // Unplugged: the pty pair goes away, as /dev/ttyUSB0 does.
    drop(slave1);
    drop(first);
    sub.next_change(state, "online", "offline", T).await;
    let gone = client(server, &read, dir.path()).await;
    assert_eq!(gone[0]["exception"], 11, "{}", gone[0]);
    assert!(
        gone[0]["ms"].as_f64().unwrap() < 50.0,
        "at once: {}",
        gone[0]
    );

    // Plugged back.
    let second = Cable::new();
    let Some(_slave2) = slave(&second.device_path, &units_spec(&[]), dir.path()) else {
        return;
    };
    repoint(&link, &second.gateway_path);
    sub.next_change(state, "offline", "online", Duration::from_secs(20))
        .await;
    assert_eq!(
        client(server, &read, dir.path()).await[0]["ok"],
        json!([103]),
        "{}",
        gw.logs()
    );
}

//! Life under systemd, without a running systemd: the real binary with `NOTIFY_SOCKET` and
//! `WATCHDOG_USEC` pointing at a socket the test owns, SIGHUP reloads of a rewritten config file,
//! and the journal path with a journald socket stand-in that reads the logger's datagrams.

mod common;

use std::collections::HashMap;
use std::net::TcpStream;
use std::os::unix::net::UnixDatagram;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;
use rumqttc::QoS;

const T: Duration = Duration::from_secs(5);

/// Receives datagrams on a socket of ours in a thread, each with its arrival time.
fn collect(sock: UnixDatagram) -> std::sync::mpsc::Receiver<(Instant, Vec<u8>)> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 256 * 1024];
        while let Ok(n) = sock.recv(&mut buf) {
            if tx.send((Instant::now(), buf[..n].to_vec())).is_err() {
                return;
            }
        }
    });
    rx
}

/// The next notification containing `needle`, skipping others.
fn next_with(
    rx: &std::sync::mpsc::Receiver<(Instant, Vec<u8>)>,
    needle: &str,
    timeout: Duration,
) -> (Instant, String) {
    let deadline = Instant::now() + timeout;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((at, msg)) => {
                let text = String::from_utf8_lossy(&msg).into_owned();
                if text.lines().any(|l| l == needle || l.starts_with(needle)) {
                    return (at, text);
                }
            }
            Err(_) => panic!("no notification with {needle:?} within {timeout:?}"),
        }
    }
}

fn notify_config(pty: &Path, dead_upstream: u16) -> String {
    format!(
        "{}uplink:\n  url: mqtt://127.0.0.1:{dead_upstream}\n  forward: [\"sensors/#\"]\n",
        climate_config(pty, "")
    )
}

#[tokio::test]
async fn ready_once_the_broker_listens_without_waiting_for_the_uplink_then_watchdog_then_stopping()
{
    let pty = Pty::new();
    let sockdir = tempfile::tempdir().unwrap();
    let sock_path = sockdir.path().join("notify.sock");
    let rx = collect(UnixDatagram::bind(&sock_path).unwrap());
    // The upstream broker is unreachable: readiness must not wait for it.
    let dead = free_port();
    let port = free_port();
    let mut gw = start_gateway_with(&notify_config(&pty.path, dead), port, |config, _| {
        let mut c = serial2mqtt_command();
        c.args(["run", "--config"])
            .arg(config)
            .env("NOTIFY_SOCKET", &sock_path)
            .env("WATCHDOG_USEC", "400000");
        c
    });

    let (ready_at, ready) = next_with(&rx, "READY=1", T);
    // At READY the broker already accepts connections.
    assert!(TcpStream::connect(("127.0.0.1", port)).is_ok());
    assert!(ready.contains("STATUS="), "{ready}");
    assert!(
        ready.contains("uplink offline"),
        "ready while the uplink is down: {ready}"
    );
    assert!(ready_at.elapsed() < Duration::from_secs(2));

    // WATCHDOG=1 at about half of WATCHDOG_USEC (200 ms), with a status line alongside.
    let mut pings = Vec::new();
    let mut status = None;
    let until = Instant::now() + Duration::from_secs(2);
    while Instant::now() < until {
        if let Ok((at, msg)) = rx.recv_timeout(Duration::from_millis(100)) {
            let text = String::from_utf8_lossy(&msg).into_owned();
            if text.lines().any(|l| l == "WATCHDOG=1") {
                pings.push(at);
            }
            if let Some(s) = text.lines().find(|l| l.starts_with("STATUS=")) {
                status = Some(s.to_owned());
            }
        }
    }
    assert!(
        (7..=13).contains(&pings.len()),
        "{} pings in 2 s, expected about 10",
        pings.len()
    );
    let gaps: Vec<f64> = pings
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).as_secs_f64() * 1000.0)
        .collect();
    let mut sorted = gaps.clone();
    sorted.sort_by(f64::total_cmp);
    let median = sorted[sorted.len() / 2];
    assert!(
        (150.0..=260.0).contains(&median),
        "median gap {median} ms: {gaps:?}"
    );
    let status = status.expect("a STATUS line");
    assert!(
        status.contains("1/1 devices online") && status.contains("queue 0 messages"),
        "{status}"
    );

    gw.signal("TERM");
    next_with(&rx, "STOPPING=1", T);
    let code = gw.terminate();
    assert!(code.success(), "exit {code:?}\n{}", gw.logs());
}

/// Two devices; a reload changes one device's rules and leaves the other alone. Readings go
/// upstream too, to the broker on `upstream`.
fn two_devices(a: &Path, b: &Path, a_topic: &str, upstream: u16) -> String {
    format!(
        r#"
gateway:
  id: testgw
  state_dir: "{{dir}}/state"
broker:
  listen: 127.0.0.1:{{port}}
uplink:
  url: mqtt://127.0.0.1:{upstream}
  forward: ["sensors/#"]
devices:
  - name: alpha
    port: {a}
    rules: [alpha]
  - name: beta
    port: {b}
    rules: [beta]
rules:
  alpha:
    match: '^(?P<v>\d+)$'
    publish: [{{topic: "{a_topic}", payload: "{{v}}"}}]
  beta:
    match: '^(?P<v>\d+)$'
    publish: [{{topic: "sensors/beta", payload: "{{v}}"}}]
"#,
        a = a.display(),
        b = b.display()
    )
}

#[tokio::test]
async fn sighup_applies_changed_rules_and_keeps_sessions_retained_and_untouched_devices() {
    let mut a = Pty::new();
    let mut b = Pty::new();
    // The upstream broker: another serial2mqtt's embedded one.
    let up = start_gateway(
        "gateway: {id: up, state_dir: \"{dir}/state\"}\nbroker: {listen: \"127.0.0.1:{port}\"}\ndevices: []\n",
    );
    let mut upstream = Subscriber::connect(up.port, &["sensors/#"], QoS::AtLeastOnce).await;
    let mut gw = start_gateway(&two_devices(&a.path, &b.path, "sensors/alpha", up.port));
    gw.wait_log("device online device=beta", T).await;
    gw.wait_log("uplink connected", T).await;
    let mut sub = Subscriber::connect(gw.port, &["sensors/#", "devices/#"], QoS::AtLeastOnce).await;
    // A local client's retained message and the subscriber's session must survive the reload.
    let mut states =
        Subscriber::connect(gw.port, &["serial2mqtt/+/device/#"], QoS::AtMostOnce).await;
    {
        let opts = rumqttc::MqttOptions::new("retainer", "127.0.0.1", gw.port);
        let (client, mut ev) = rumqttc::AsyncClient::new(opts, 10);
        client
            .publish("sensors/note", QoS::AtLeastOnce, true, "kept")
            .await
            .unwrap();
        let deadline = Instant::now() + T;
        while Instant::now() < deadline {
            if let Ok(Ok(rumqttc::Event::Incoming(rumqttc::Packet::PubAck(_)))) =
                tokio::time::timeout(T, ev.poll()).await
            {
                break;
            }
        }
    }
    assert_eq!(sub.next_on("sensors/note", T).await.payload, "kept");
    a.write(b"1\n").await;
    assert_eq!(sub.next_on("sensors/alpha", T).await.payload, "1");

    std::fs::write(
        gw.config_path(),
        two_devices(&a.path, &b.path, "sensors/alpha/v2", up.port)
            .replace("{port}", &gw.port.to_string())
            .replace("{dir}", &gw.dir.path().display().to_string()),
    )
    .unwrap();
    gw.signal("HUP");
    gw.wait_log("config reloaded", T).await;
    let logs = gw.logs();
    assert!(logs.contains("added=0 changed=1 removed=0"), "{logs}");

    // The changed device maps with its new rule, the same subscriber connection receives it.
    a.write(b"2\n").await;
    assert_eq!(sub.next_on("sensors/alpha/v2", T).await.payload, "2");
    // Upstream too, over the same uplink session: it never reconnected.
    assert_eq!(upstream.next_on("sensors/alpha/v2", T).await.payload, "2");
    assert_eq!(gw.logs().matches("uplink connected").count(), 1);
    b.write(b"3\n").await;
    assert_eq!(sub.next_on("sensors/beta", T).await.payload, "3");
    // The untouched device was never restarted: no offline for it, one open only.
    tokio::time::sleep(Duration::from_millis(200)).await;
    while let Ok(m) = tokio::time::timeout(Duration::from_millis(200), states.next(T)).await {
        assert!(
            !(m.topic.ends_with("/beta/state") && m.payload == "offline"),
            "beta was restarted"
        );
    }
    assert_eq!(gw.logs().matches("device online device=beta").count(), 1);
    // The retained message is still there for a new client.
    let mut late = Subscriber::connect(gw.port, &["sensors/note"], QoS::AtMostOnce).await;
    assert_eq!(late.next(T).await.payload, "kept");
    assert!(gw.terminate().success());
}

/// A reload reports what changed and nothing else: an edited comment changes nothing (it used
/// to report the queue as changed), a section that needs a restart is named, alone.
#[tokio::test]
async fn a_reload_reports_only_what_really_changed() {
    let pty = Pty::new();
    let mut gw = start_gateway(&climate_config(&pty.path, ""));
    gw.wait_log("device online", T).await;
    let good = std::fs::read_to_string(gw.config_path()).unwrap();

    std::fs::write(gw.config_path(), format!("# edited by hand\n{good}")).unwrap();
    gw.signal("HUP");
    gw.wait_log("config reloaded", T).await;
    let logs = gw.logs();
    assert!(logs.contains("added=0 changed=0 removed=0"), "{logs}");
    assert!(!logs.contains("settings changed"), "{logs}");

    std::fs::write(
        gw.config_path(),
        format!("{good}\nqueue: {{flush_interval: 20ms}}\n"),
    )
    .unwrap();
    gw.signal("HUP");
    let deadline = Instant::now() + T;
    while gw.logs().matches("config reloaded").count() < 2 {
        assert!(Instant::now() < deadline, "{}", gw.logs());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let logs = gw.logs();
    let warned: Vec<&str> = logs
        .lines()
        .filter(|l| l.contains("settings changed"))
        .collect();
    assert_eq!(warned.len(), 1, "{logs}");
    assert!(warned[0].contains("`queue` settings changed"), "{logs}");
    assert_eq!(
        gw.logs().matches("device online").count(),
        1,
        "the device never restarted"
    );
    assert!(gw.terminate().success());
}

#[tokio::test]
async fn a_broken_config_on_sighup_is_rejected_with_its_line_and_the_old_one_keeps_running() {
    let mut pty = Pty::new();
    let mut gw = start_gateway(&climate_config(&pty.path, ""));
    let mut sub = Subscriber::connect(gw.port, &["sensors/#"], QoS::AtMostOnce).await;
    gw.wait_log("device online", T).await;

    let good = std::fs::read_to_string(gw.config_path()).unwrap();
    std::fs::write(
        gw.config_path(),
        good.replace("rules: [climate]", "rules: [climat]"),
    )
    .unwrap();
    gw.signal("HUP");
    gw.wait_log("reload rejected", T).await;
    let logs = gw.logs();
    assert!(logs.contains("config.yaml:"), "file and line: {logs}");
    assert!(logs.contains("climate"), "the suggestion: {logs}");

    pty.write(b"T=20.5;H=50\n").await;
    assert_eq!(sub.next(T).await.payload, "20.5");
    assert!(gw.is_running());
    assert!(gw.terminate().success());
}

/// An editor that truncated the file, or a failed copy: the empty file used to be accepted as
/// "no devices" on SIGHUP, and every device stopped. It is rejected; the devices keep running.
#[tokio::test]
async fn an_empty_config_on_sighup_is_rejected_and_no_device_stops() {
    let mut pty = Pty::new();
    let mut gw = start_gateway(&climate_config(&pty.path, ""));
    let mut sub = Subscriber::connect(gw.port, &["sensors/#"], QoS::AtMostOnce).await;
    gw.wait_log("device online", T).await;
    std::fs::write(gw.config_path(), "").unwrap();
    gw.signal("HUP");
    gw.wait_log("reload rejected", T).await;
    let logs = gw.logs();
    assert!(logs.contains("the file is empty"), "{logs}");
    assert!(
        !logs.contains("device stopped") && !logs.contains("offline"),
        "{logs}"
    );
    pty.write(b"T=20.5;H=50\n").await;
    assert_eq!(sub.next(T).await.payload, "20.5");
    assert!(gw.terminate().success());
}

/// Splits a journal native-protocol datagram into its fields.
fn journal_fields(mut d: &[u8]) -> HashMap<String, String> {
    let mut out = HashMap::new();
    while !d.is_empty() {
        let line_end = d.iter().position(|&b| b == b'\n').unwrap_or(d.len());
        let line = &d[..line_end];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            out.insert(
                String::from_utf8_lossy(&line[..eq]).into_owned(),
                String::from_utf8_lossy(&line[eq + 1..]).into_owned(),
            );
            d = &d[(line_end + 1).min(d.len())..];
        } else {
            // NAME\n<u64 LE length><bytes>\n
            let name = String::from_utf8_lossy(line).into_owned();
            let rest = &d[line_end + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            out.insert(
                name,
                String::from_utf8_lossy(&rest[8..8 + len]).into_owned(),
            );
            d = &rest[(8 + len + 1).min(rest.len())..];
        }
    }
    out
}

#[tokio::test]
async fn under_systemd_logs_reach_the_journal_with_identifier_priority_and_fields() {
    if !can_unshare() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("the journal test needs root and unshare(1) in CI");
        }
        eprintln!("SKIPPED: needs root and unshare(1) for a private /run/systemd/journal");
        return;
    }
    // journald's socket path is fixed: in a private mount namespace, our directory is mounted
    // over /run/systemd/journal and our socket stands in for journald's.
    let journal_dir = tempfile::tempdir().unwrap();
    let rx = collect(UnixDatagram::bind(journal_dir.path().join("socket")).unwrap());
    std::fs::create_dir_all("/run/systemd/journal").unwrap();
    let pty = Pty::new();
    let missing = journal_dir.path().join("ttyUSB9");
    let config = climate_config(&pty.path, "").replace(
        "\nrules:\n",
        &format!(
            "\n  - name: absent\n    port: {}\n    rules: [climate]\nrules:\n",
            missing.display()
        ),
    );
    let jdir = journal_dir.path().to_owned();
    let mut gw = start_gateway_with(&config, free_port(), move |config, log| {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(log).unwrap();
        let mut c = Command::new("unshare");
        c.args(["--mount", "--propagation", "private", "sh", "-c"])
            .arg(r#"mount --bind "$1" /run/systemd/journal && exec "$2" run --config "$3""#)
            .arg("sh")
            .arg(&jdir)
            .arg(env!("CARGO_BIN_EXE_serial2mqtt"))
            .arg(config)
            .env("JOURNAL_STREAM", format!("{}:{}", m.dev(), m.ino()));
        c
    });

    let mut seen = Vec::new();
    let deadline = Instant::now() + T;
    let (mut info, mut warning) = (None, None);
    while Instant::now() < deadline && (info.is_none() || warning.is_none()) {
        if let Ok((_, d)) = rx.recv_timeout(Duration::from_millis(200)) {
            if d.is_empty() {
                continue; // the logger's connection probe
            }
            let f = journal_fields(&d);
            let msg = f.get("MESSAGE").cloned().unwrap_or_default();
            if msg.contains("embedded MQTT broker listening") {
                info = Some(f.clone());
            }
            if f.get("DEVICE").map(String::as_str) == Some("absent") && f["PRIORITY"] == "4" {
                warning = Some(f.clone());
            }
            seen.push(f);
        }
    }
    let info = info.unwrap_or_else(|| panic!("no broker line in the journal: {seen:?}"));
    assert_eq!(info["SYSLOG_IDENTIFIER"], "serial2mqtt");
    assert_eq!(info["PRIORITY"], "5", "info is `notice` in the journal");
    assert!(
        info["MESSAGE"].contains("listen="),
        "fields in the text too"
    );
    assert!(info.contains_key("LISTEN"), "fields as journal fields");
    let warning = warning.unwrap_or_else(|| panic!("no warning for the absent port: {seen:?}"));
    assert!(warning["MESSAGE"].contains("device=absent"), "{warning:?}");
    // Nothing went to stderr: under systemd the journal is the log.
    assert!(
        !gw.logs().contains("broker listening"),
        "stderr: {}",
        gw.logs()
    );
    assert!(gw.terminate().success());
}

//! Health from outside: the Prometheus endpoint scraped over HTTP, and `serial2mqtt status`
//! reading a running daemon, with the real binary, a pty and real brokers.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::upstream::*;
use common::*;

const T: Duration = Duration::from_secs(10);

/// One scrape of `/metrics`: the body.
fn scrape(port: u16) -> String {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("connect to metrics");
    s.set_read_timeout(Some(T)).unwrap();
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    s.read_to_string(&mut text).expect("read scrape");
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    text.split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default()
}

/// The value of the sample whose name and labels are exactly `series`.
fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines().filter(|l| !l.starts_with('#')).find_map(|l| {
        l.strip_prefix(series)?
            .strip_prefix(' ')?
            .trim()
            .parse()
            .ok()
    })
}

/// Scrapes until `series` reaches at least `min` (the collector runs once a second).
fn wait_sample(port: u16, series: &str, min: f64) -> String {
    let deadline = Instant::now() + T;
    loop {
        let body = scrape(port);
        if sample(&body, series).is_some_and(|v| v >= min) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never reached {min}:\n{body}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[tokio::test]
async fn grafana_can_scrape_devices_queue_uplink_and_latency() {
    let upstream = AnyBroker::start();
    let got = Upstream::subscribe(upstream.port(), "sites/#").await;
    let mut pty = Pty::new();
    let state = tempfile::tempdir().unwrap();
    let metrics = free_port();
    let config = uplink_config(&pty.path, upstream.port(), state.path(), "")
        .replace(
            "devices:\n",
            &format!("metrics: {{listen: \"127.0.0.1:{metrics}\"}}\ndevices:\n"),
        )
        .replace("rules: [seq]}", "rules: [seq], max_frame: 32}");
    assert!(
        config.contains("max_frame: 32") && config.contains("metrics:"),
        "{config}"
    );
    let gw = start_gateway(&config);
    gw.wait_log("uplink connected", T).await;

    write_frames(&mut pty, 1..=5, Duration::ZERO).await;
    pty.write(b"no rule matches this\n").await;
    pty.write(format!("{}\n", "x".repeat(100)).as_bytes()).await;
    got.wait_all(TOPIC, 5, T).await;

    let body = wait_sample(metrics, "serial2mqtt_uplink_delivered_total", 5.0);
    let body = if sample(
        &body,
        r#"serial2mqtt_frames_bad_total{device="d",reason="too_long"}"#,
    ) == Some(1.0)
    {
        body
    } else {
        wait_sample(
            metrics,
            r#"serial2mqtt_frames_bad_total{device="d",reason="too_long"}"#,
            1.0,
        )
    };
    let v =
        |series: &str| sample(&body, series).unwrap_or_else(|| panic!("no {series} in:\n{body}"));
    assert_eq!(v(r#"serial2mqtt_frames_total{device="d"}"#), 6.0);
    assert_eq!(v(r#"serial2mqtt_frames_unmatched_total{device="d"}"#), 1.0);
    assert_eq!(
        v(r#"serial2mqtt_messages_published_total{device="d"}"#),
        5.0
    );
    assert_eq!(v(r#"serial2mqtt_device_online{device="d"}"#), 1.0);
    assert_eq!(v("serial2mqtt_uplink_connected"), 1.0);
    assert_eq!(v("serial2mqtt_uplink_connects_total"), 1.0);
    assert_eq!(v("serial2mqtt_uplink_reconnects_total"), 0.0);
    assert_eq!(v(r#"serial2mqtt_queue_dropped_total{reason="full"}"#), 0.0);
    assert!(v("serial2mqtt_queue_bytes") > 0.0);
    // The wear counter, in whole pages: at least the sequence reservation's.
    let written = v("serial2mqtt_queue_written_bytes_total");
    assert!(written >= 4096.0 && written % 4096.0 == 0.0, "{body}");
    // The latency histogram: every acknowledged publish (5 readings, the `online` status, and
    // the device's retained state if forwarded) counted, in buckets Grafana can use.
    assert!(
        v("serial2mqtt_uplink_publish_seconds_count") >= 5.0,
        "{body}"
    );
    assert!(v(r#"serial2mqtt_uplink_publish_seconds_bucket{le="+Inf"}"#) >= 5.0);
    assert!(
        body.contains(r#"serial2mqtt_uplink_publish_seconds_bucket{le="0.001"}"#),
        "{body}"
    );
    assert!(
        body.contains("# HELP serial2mqtt_queue_depth_messages"),
        "{body}"
    );
    // Everything was acknowledged: the queue drains to 0.
    let deadline = Instant::now() + T;
    while sample(&scrape(metrics), "serial2mqtt_queue_depth_messages") != Some(0.0) {
        assert!(Instant::now() < deadline, "queue depth never 0");
        std::thread::sleep(Duration::from_millis(200));
    }

    // The uplink going away shows up too.
    drop(upstream);
    let deadline = Instant::now() + T;
    while sample(&scrape(metrics), "serial2mqtt_uplink_connected") != Some(0.0) {
        assert!(
            Instant::now() < deadline,
            "still connected after the broker went away"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_taken_metrics_port_is_a_clear_error_at_start() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = tempfile::tempdir().unwrap();
    let config = write_temp(
        dir.path(),
        "c.yaml",
        &format!(
            "gateway: {{id: g, state_dir: \"{}\"}}\nbroker: {{listen: \"127.0.0.1:{}\"}}\nmetrics: {{listen: \"127.0.0.1:{port}\"}}\ndevices: []\n",
            dir.path().display(),
            free_port()
        ),
    );
    let out = serial2mqtt_command()
        .args(["run", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot serve metrics on 127.0.0.1:{port}"))
            && err.contains("metrics.listen"),
        "{err}"
    );
}

/// Runs `serial2mqtt status` on a config; its exit success, stdout and stderr.
fn status(config: &std::path::Path) -> (bool, String, String) {
    let out = serial2mqtt_command()
        .args(["status", "--config"])
        .arg(config)
        .output()
        .expect("run status");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn status_shows_a_running_gateways_devices_even_behind_a_login() {
    let mut pty = Pty::new();
    let users = tempfile::tempdir().unwrap();
    let users_file = write_temp(users.path(), "broker.users", "alice:wonderland\n");
    let config = climate_config(&pty.path, "  stats_interval: 1s").replace(
        "  listen: 127.0.0.1:{port}\n",
        &format!(
            "  listen: 127.0.0.1:{{port}}\n  users_file: {}\n",
            users_file.display()
        ),
    );
    assert!(config.contains("users_file"), "{config}");
    let gw = start_gateway(&config);
    for t in 0..3 {
        pty.write(format!("T=2{t}.5;H=40\n").as_bytes()).await;
    }
    pty.write(b"garbage\n").await;
    let deadline = Instant::now() + T;
    let table = loop {
        let (ok, out, err) = status(&gw.config_path());
        assert!(ok, "status failed: {err}");
        let row: Vec<&str> = out
            .lines()
            .find(|l| l.starts_with("greenhouse"))
            .map(|l| l.split_whitespace().collect())
            .unwrap_or_default();
        if row.get(2) == Some(&"4") {
            break out;
        }
        assert!(
            Instant::now() < deadline,
            "status never showed the frames:\n{out}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    assert!(
        table.starts_with("gateway testgw: summary of 20"),
        "{table}"
    );
    assert!(table.contains("DEVICE      STATE"), "{table}");
    // Online, 4 frames, 6 messages (2 per reading), 1 unmatched, 0 bad, no commands.
    let row: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with("greenhouse"))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    assert_eq!(
        row,
        ["greenhouse", "online", "4", "6", "1", "0", "0/0/0"],
        "{table}"
    );
    assert!(table.contains("uplink: none configured"), "{table}");
}

#[tokio::test]
async fn status_without_a_running_gateway_says_so() {
    let pty = Pty::new();
    let dir = tempfile::tempdir().unwrap();
    let config = write_temp(
        dir.path(),
        "c.yaml",
        &climate_config(&pty.path, "")
            .replace("{port}", &free_port().to_string())
            .replace("{dir}", &dir.path().display().to_string()),
    );
    let (ok, _, err) = status(&config);
    assert!(!ok);
    assert!(
        err.contains("cannot reach the gateway's broker") && err.contains("is serial2mqtt running"),
        "{err}"
    );
}

/// `serial2mqtt check` on `config`: (success, stdout, stderr).
fn check(config: &std::path::Path) -> (bool, String, String) {
    let out = serial2mqtt_command()
        .arg("check")
        .arg(config)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Issue 31: `metrics.listen: 0.0.0.0:...` answered anyone, without a word from `check`. Now,
/// without `metrics.token_file`, `check` and the start warn (and it still starts and serves:
/// configs written before keep working); with one, a scrape needs the token, as Prometheus's
/// `authorization: {credentials_file: ...}` sends it; and the endpoint runs on the hardened
/// listener: past its 16 connections, a 503 at once.
#[tokio::test]
async fn metrics_off_loopback_want_a_token_and_refuse_past_their_cap() {
    use common::net::{hold, read_until_closed, request};
    let Some(lan) = common::lan_address() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let yaml = |token: &str| {
        format!(
            "gateway: {{id: g, state_dir: \"{}\"}}\nbroker: {{listen: \"127.0.0.1:{{port}}\"}}\nmetrics: {{listen: \"0.0.0.0:{port}\"{token}}}\ndevices: []\n",
            dir.path().display()
        )
    };
    let scrape = |auth: &str| {
        request(
            std::net::SocketAddr::new(lan, port),
            &format!("GET /metrics HTTP/1.1\r\nHost: pi:{port}\r\n{auth}Connection: close\r\n\r\n"),
        )
    };

    // No token: a warning from check and at start; served as before.
    let open = write_temp(dir.path(), "open.yaml", &yaml("").replace("{port}", "1"));
    let (ok, _, err) = check(&open);
    assert!(ok, "a warning, not an error: {err}");
    assert!(
        err.contains("warning: metrics.listen")
            && err.contains("answers anyone on the network")
            && err.contains("metrics.token_file")
            && err.contains("credentials_file"),
        "{err}"
    );
    let gw = start_gateway(&yaml(""));
    gw.wait_log("answers anyone on the network", T).await;
    let (status, text) = scrape("");
    assert_eq!(status, 200, "{text}");
    drop(gw);

    // A token: required, and only the right one does.
    let token = "a-token-for-prometheus-0123456789abcdef";
    let file = write_temp(dir.path(), "metrics-token", &format!("{token}\n"));
    std::fs::set_permissions(&file, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let with_token = yaml(&format!(", token_file: \"{}\"", file.display()));
    let guarded = write_temp(
        dir.path(),
        "guarded.yaml",
        &with_token.replace("{port}", "1"),
    );
    let (ok, _, err) = check(&guarded);
    assert!(ok && !err.contains("warning"), "{err}");
    let gw = start_gateway(&with_token);
    gw.wait_log("(token required)", T).await;
    let (status, text) = scrape("");
    assert_eq!(status, 401, "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("www-authenticate: bearer"),
        "{text}"
    );
    assert!(!text.contains("serial2mqtt_"), "{text}");
    let (status, _) = scrape("Authorization: Bearer not-the-token-at-all\r\n");
    assert_eq!(status, 401);
    let (status, text) = scrape(&format!("Authorization: Bearer {token}\r\n"));
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("# TYPE serial2mqtt_"), "{text}");

    // The cap: 16 connections that never finish their request, then a 503 at once.
    let local = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let held: Vec<_> = (0..16).map(|_| hold(local)).collect();
    let mut over = hold(local);
    let (text, closed) = read_until_closed(&mut over, Duration::from_secs(1));
    assert!(closed.is_some(), "{text:?}");
    assert!(
        text.starts_with("HTTP/1.1 503") && text.contains("all 16 connections are taken"),
        "{text}"
    );
    drop(held);
    assert!(!gw.logs().contains(token), "the token is never logged");
}

//! Shared test harness: the real binary, real pseudo-terminals, a real MQTT client over TCP.
#![allow(dead_code)]

pub mod certs;
pub mod devices;
pub mod line;
pub mod mosquitto;
pub mod net;
pub mod powercut;
pub mod proxy;
pub mod slave;
pub mod upstream;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rumqttc::{AsyncClient, Event, MqttOptions, Packet, QoS};
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

/// A TCP port that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Whether a system tool is installed; in CI (`CI=true`) a missing tool fails the test instead.
pub fn have_tool(tool: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !found {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("{tool} is required in CI (.ci/run installs it)");
        }
        eprintln!("SKIPPED: {tool} is not installed (CI=true makes this a failure)");
    }
    found
}

/// A figure of /proc/PID/status in KiB (`"VmRSS:"`, `"VmHWM:"`, `"RssAnon:"`); 0 if absent.
pub fn status_kib(pid: u32, key: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// CPU seconds (user + system) a process has used.
pub fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    // After ")": state is field 0, utime 11, stime 12 (clock ticks of 1/100 s).
    let ticks: f64 = fields.get(11..13).map_or(0.0, |f| {
        f.iter().filter_map(|v| v.parse::<f64>().ok()).sum()
    });
    ticks / 100.0
}

/// A pseudo-terminal pair: the test writes to `master`; the gateway opens `path` by name.
pub struct Pty {
    pub master: tokio_serial::SerialStream,
    pub path: PathBuf,
}

impl Pty {
    pub fn new() -> Self {
        use tokio_serial::SerialPort as _;
        let (master, slave) = tokio_serial::SerialStream::pair().expect("pty pair");
        let path = PathBuf::from(slave.name().expect("slave name"));
        // posix_openpt does not set close-on-exec: without this every gateway process the tests
        // spawn would inherit the master, and closing ours would not unplug anything.
        use std::os::fd::AsRawFd as _;
        // SAFETY: fcntl on a file descriptor we own, with valid arguments.
        let rc = unsafe { libc::fcntl(master.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
        assert_eq!(rc, 0, "set FD_CLOEXEC on the pty master");
        // The slave is reopened by the gateway by path; ours is closed here.
        drop(slave);
        Self { master, path }
    }

    pub async fn write(&mut self, bytes: &[u8]) {
        self.master.write_all(bytes).await.expect("write to pty");
        self.master.flush().await.expect("flush pty");
    }
}

/// A running gateway process with its config, stderr captured to a file.
pub struct Gateway {
    pub child: Child,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub log: PathBuf,
}

/// Writes `yaml` (with `{port}` replaced by a free port) and starts the real binary on it.
pub fn start_gateway(yaml: &str) -> Gateway {
    let port = free_port();
    start_gateway_on(yaml, port)
}

pub fn start_gateway_on(yaml: &str, port: u16) -> Gateway {
    start_gateway_with(yaml, port, |config, _| {
        let mut c = serial2mqtt_command();
        c.args(["run", "--config"]).arg(config);
        c
    })
}

/// The binary under test: this build's, or `SERIAL2MQTT_TEST_BIN` (a cross-built one) run
/// through `SERIAL2MQTT_TEST_RUNNER` (e.g. `qemu-aarch64-static -L /usr/aarch64-linux-gnu`), so
/// the same end-to-end tests prove the ARM builds under emulation (`cross/smoke.sh`).
pub fn serial2mqtt_command() -> Command {
    let bin = std::env::var_os("SERIAL2MQTT_TEST_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_serial2mqtt")));
    let runner = std::env::var("SERIAL2MQTT_TEST_RUNNER").unwrap_or_default();
    let mut words = runner.split_whitespace();
    match words.next() {
        Some(program) => {
            let mut c = Command::new(program);
            c.args(words).arg(bin);
            c
        }
        None => Command::new(bin),
    }
}

/// Like [`start_gateway_on`], with the command made by `command(config, log)` (to set the
/// environment, or to wrap the binary); stderr goes to `log`, already created.
pub fn start_gateway_with(
    yaml: &str,
    port: u16,
    command: impl FnOnce(&Path, &Path) -> Command,
) -> Gateway {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("config.yaml");
    let yaml = yaml
        .replace("{port}", &port.to_string())
        .replace("{dir}", &dir.path().display().to_string());
    std::fs::write(&config, yaml).expect("write config");
    let log = dir.path().join("gateway.log");
    let stderr = std::fs::File::create(&log).expect("log file");
    // TEST_RUST_LOG=debug shows a test's gateway in detail (its log is in the failure message).
    let filter = std::env::var("TEST_RUST_LOG").unwrap_or("info".into());
    let child = command(&config, &log)
        .env("RUST_LOG", filter)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .expect("start serial2mqtt");
    let gw = Gateway {
        child,
        port,
        dir,
        log,
    };
    gw.wait_listening();
    gw
}

impl Gateway {
    fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("gateway did not listen on {}:\n{}", self.port, self.logs());
    }

    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log contains `needle`.
    pub async fn wait_log(&self, needle: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            if self.logs().contains(needle) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("log never contained {needle:?}:\n{}", self.logs());
    }

    pub fn is_running(&mut self) -> bool {
        self.child.try_wait().expect("try_wait").is_none()
    }

    /// Sends a signal (`"HUP"`, `"TERM"`, ...).
    pub fn signal(&self, name: &str) {
        let pid = self.child.id().to_string();
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .expect("kill");
        assert!(ok.success(), "kill -{name} {pid}");
    }

    /// The config file the gateway runs on (rewrite it, then SIGHUP, to reload).
    pub fn config_path(&self) -> PathBuf {
        self.path("config.yaml")
    }

    /// SIGTERM, then the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal("TERM");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!(
                    "gateway did not stop within 10 s of SIGTERM:\n{}",
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One received publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Received {
    pub topic: String,
    pub payload: String,
    pub qos: QoS,
    pub retain: bool,
}

/// A rumqttc subscriber on the gateway's broker.
pub struct Subscriber {
    pub client: AsyncClient,
    rx: mpsc::UnboundedReceiver<Received>,
    pub seen: Arc<Mutex<Vec<Received>>>,
}

impl Subscriber {
    /// Connects and subscribes to `filters` at `qos`; returns once the SUBACK arrived.
    pub async fn connect(port: u16, filters: &[&str], qos: QoS) -> Self {
        let opts = MqttOptions::new(format!("test-{}", fastrand_id()), "127.0.0.1", port);
        Self::connect_with(opts, filters, qos).await
    }

    /// The same with options of the caller's (credentials, TLS).
    pub async fn connect_with(mut opts: MqttOptions, filters: &[&str], qos: QoS) -> Self {
        opts.set_keep_alive(Duration::from_secs(30));
        opts.set_max_packet_size(1 << 20, 1 << 20);
        let (client, mut eventloop) = AsyncClient::new(opts, 10_000);
        for f in filters {
            client.subscribe(*f, qos).await.expect("subscribe");
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let (suback_tx, mut suback_rx) = mpsc::unbounded_channel();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let seen2 = Arc::clone(&seen);
        tokio::spawn(async move {
            loop {
                match eventloop.poll().await {
                    Ok(Event::Incoming(Packet::Publish(p))) => {
                        let r = Received {
                            topic: p.topic.clone(),
                            payload: String::from_utf8_lossy(&p.payload).into_owned(),
                            qos: p.qos,
                            retain: p.retain,
                        };
                        seen2.lock().unwrap().push(r.clone());
                        if tx.send(r).is_err() {
                            return;
                        }
                    }
                    Ok(Event::Incoming(Packet::SubAck(_))) => {
                        let _ = suback_tx.send(());
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        for _ in filters {
            tokio::time::timeout(Duration::from_secs(5), suback_rx.recv())
                .await
                .expect("SUBACK within 5 s");
        }
        Self { client, rx, seen }
    }

    /// The next message, or a panic after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Received {
        tokio::time::timeout(timeout, self.rx.recv())
            .await
            .unwrap_or_else(|_| panic!("no message within {timeout:?}"))
            .expect("subscriber alive")
    }

    /// The next message on `topic`, skipping others.
    pub async fn next_on(&mut self, topic: &str, timeout: Duration) -> Received {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = tokio::time::timeout(left, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("nothing on {topic} within {timeout:?}"))
                .expect("subscriber alive");
            if m.topic == topic {
                return m;
            }
        }
    }

    /// Waits until `topic` changes from `from` to `to`: copies of `from` in between are
    /// skipped (a subscription made while a retained state is published gets it twice: the
    /// retained copy and the live one), anything else fails.
    pub async fn next_change(&mut self, topic: &str, from: &str, to: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let m = self.next_on(topic, left).await;
            if m.payload == to {
                return;
            }
            assert_eq!(m.payload, from, "{topic}: expected {from} until {to}");
        }
    }

    /// Asserts nothing arrives for `quiet`.
    pub async fn assert_quiet(&mut self, quiet: Duration) {
        if let Ok(Some(m)) = tokio::time::timeout(quiet, self.rx.recv()).await {
            panic!("unexpected message {m:?}");
        }
    }
}

fn fastrand_id() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    std::process::id() as u64 * 1_000_000 + N.fetch_add(1, Ordering::Relaxed)
}

/// Points symlink `link` at `target`, replacing it atomically (a by-id link after a replug).
pub fn repoint(link: &Path, target: &Path) {
    let tmp = link.with_extension("new");
    let _ = std::fs::remove_file(&tmp);
    std::os::unix::fs::symlink(target, &tmp).expect("symlink");
    std::fs::rename(&tmp, link).expect("rename symlink");
}

/// The standard climate rule set with a device reading `port`.
pub fn climate_config(port: &Path, extra_gateway: &str) -> String {
    format!(
        r#"
gateway:
  id: testgw
  state_dir: "{{dir}}/state"
{extra_gateway}
broker:
  listen: 127.0.0.1:{{port}}
devices:
  - name: greenhouse
    port: {port}
    baud: 115200
    max_frame: 64
    rules: [climate]
rules:
  climate:
    match: '^T=(?P<temp>-?\d+(?:\.\d+)?);H=(?P<hum>\d+)$'
    publish:
      - topic: sensors/{{device}}/temperature
        payload: "{{temp}}"
        qos: 1
        retain: true
      - topic: sensors/{{device}}/humidity
        payload: "{{hum}}"
"#,
        port = port.display()
    )
}

/// Writes the contents to a file in a fresh temp dir (for CLI tests).
pub fn write_temp(dir: &Path, name: &str, contents: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, contents).expect("write");
    p
}

/// A users file with hashed logins (1,000 rounds: quick), written by `serial2mqtt passwd`
/// from stdin.
pub fn users_file(dir: &Path, logins: &[(&str, &str)]) -> PathBuf {
    let file = dir.join("users");
    for (user, password) in logins {
        let mut child = serial2mqtt_command()
            .arg("passwd")
            .arg(&file)
            .arg(user)
            .args(["--iterations", "1000"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("serial2mqtt passwd");
        use std::io::Write;
        writeln!(child.stdin.take().expect("stdin"), "{password}").expect("password");
        assert!(child.wait().expect("passwd ran").success());
    }
    file
}

/// The `broker:` lines for `logins` (a users file) and `acl` (an access rules file), both
/// written into `dir`.
pub fn logins_and_rules(dir: &Path, logins: &[(&str, &str)], acl: &str) -> String {
    let users = users_file(dir, logins);
    let acl = write_temp(dir, "acl", acl);
    format!(
        "  users_file: {}\n  acl_file: {}",
        users.display(),
        acl.display()
    )
}

/// An IPv4 address of this machine that is not loopback, for a test to connect from as a LAN
/// peer would. None (with a message) when there is none; in CI that is a failure.
pub fn lan_address() -> Option<std::net::IpAddr> {
    let out = Command::new("hostname").arg("-I").output().ok()?;
    let found = String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|a| a.parse::<std::net::IpAddr>().ok())
        .find(|a| a.is_ipv4() && !a.is_loopback());
    if found.is_none() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            panic!("CI needs a non-loopback IPv4 address (hostname -I) to act as a LAN peer");
        }
        eprintln!("SKIPPED: no non-loopback IPv4 address to act as a LAN peer");
    }
    found
}

/// Whether this process may make a mount namespace (root with util-linux's unshare).
pub fn can_unshare() -> bool {
    Command::new("unshare")
        .args(["--mount", "true"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// An SDS011-like frame: AA C0, PM2.5 (u16 LE, tenths), four more data bytes, checksum, AB.
pub fn sds011(pm25_tenths: u16) -> Vec<u8> {
    let mut f = vec![0xAA, 0xC0];
    f.extend_from_slice(&pm25_tenths.to_le_bytes());
    f.extend_from_slice(&[0x20, 0x00, 0x01, 0x02]);
    let sum = f[2..8].iter().fold(0u8, |a, b| a.wrapping_add(*b));
    f.extend_from_slice(&[sum, 0xAB]);
    f
}

/// The rule that reads an SDS011 frame's PM2.5 (u16 LE tenths at byte 2) to sensors/{device}/pm25.
pub const SDS011_PM_RULE: &str = r#"  pm:
    fields:
      - {name: pm25, offset: 2, type: u16le, scale: 0.1}
    publish:
      - {topic: "sensors/{device}/pm25", payload: "{pm25}"}
"#;

/// A u-blox UBX frame: B5 62, class, id, the payload's length (u16 LE), the payload, and CK_A,
/// CK_B computed as the u-blox protocol description writes them (over class through payload).
pub fn ubx(class: u8, id: u8, payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0xB5, 0x62, class, id];
    f.extend_from_slice(&(payload.len() as u16).to_le_bytes());
    f.extend_from_slice(payload);
    let (mut ck_a, mut ck_b) = (0u8, 0u8);
    for &b in &f[2..] {
        ck_a = ck_a.wrapping_add(b);
        ck_b = ck_b.wrapping_add(ck_a);
    }
    f.extend_from_slice(&[ck_a, ck_b]);
    f
}

/// A UBX NAV-PVT frame (class 01, id 07, 92 payload bytes) at `lat`, `lon` (1e-7 degrees, i32
/// LE at payload offsets 28 and 24, so frame bytes 34 and 30), a 3D fix with 12 satellites;
/// the other fields are filler.
pub fn nav_pvt(lat: i32, lon: i32) -> Vec<u8> {
    let mut payload: Vec<u8> = (0..92u8).map(|i| i.wrapping_mul(29)).collect();
    payload[20] = 3; // fixType: 3D
    payload[23] = 12; // numSV
    payload[24..28].copy_from_slice(&lon.to_le_bytes());
    payload[28..32].copy_from_slice(&lat.to_le_bytes());
    ubx(0x01, 0x07, &payload)
}

/// For a gateway with id `testgw` and a `stats_interval`: waits for a stats message in which
/// `device` has seen `frames` frames; returns its counters.
pub async fn counters(sub: &mut Subscriber, device: &str, frames: u64) -> serde_json::Value {
    let v = stats_until(sub, "testgw", |v| {
        v["devices"][device]["frames"].as_u64() >= Some(frames)
    })
    .await;
    v["devices"][device].clone()
}

/// The first stats message of `gateway` (on the broker `sub` is connected to) that `done` says
/// is the one waited for; fails after 30 s with the last one seen.
pub async fn stats_until(
    sub: &mut Subscriber,
    gateway: &str,
    done: impl Fn(&serde_json::Value) -> bool,
) -> serde_json::Value {
    let topic = format!("serial2mqtt/{gateway}/stats");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stats = sub.next_on(&topic, Duration::from_secs(10)).await;
        let v: serde_json::Value = serde_json::from_str(&stats.payload).unwrap();
        if done(&v) {
            return v;
        }
        assert!(Instant::now() < deadline, "{v}");
    }
}

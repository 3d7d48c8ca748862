//! Network transports under a port, against real servers on loopback: socat as a raw TCP
//! serial server and ser2net with RFC 2217, both in front of a pty cable to a pymodbus RTU
//! unit; pymodbus's own Modbus TCP server, and pymodbus speaking RTU over TCP. Each server is
//! stopped and started again on its port, which the gateway must treat like an adapter
//! unplugged and plugged back in. Needs socat, ser2net and python3 with pymodbus (and for the
//! silent-death test root, unshare(1) and ip(8)): without one a test skips outside CI and
//! fails in it.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::line::{line_of, two_stop_bits, Cable};
use common::slave::{slave, tcp_slave};
use common::*;
use rumqttc::QoS;

const T: Duration = Duration::from_secs(15);
const STATE: &str = "serial2mqtt/testgw/devices/meter/state";

/// A server process (socat, ser2net), killed when dropped: the connection it holds ends at
/// once, as when a serial server is switched off cleanly or its service restarts.
struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Whether something listens on TCP `port` of 127.0.0.1 (read from /proc, so that no test
/// connection uses up a server that takes a single client).
fn listening(port: u16) -> bool {
    let want = format!(":{port:04X} ");
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .any(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            f.len() > 3 && format!("{} ", f[1]).ends_with(&want) && f[3] == "0A"
        })
}

/// Starts `command` and waits until it listens on `port`.
fn start(mut command: Command, port: u16) -> Server {
    let child = command
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the server");
    let server = Server(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while !listening(port) {
        assert!(Instant::now() < deadline, "{command:?} never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    server
}

/// socat as a raw TCP serial server in front of `pty`: one client, bytes both ways.
fn socat(port: u16, pty: &Path) -> Server {
    let mut c = Command::new("socat");
    c.arg(format!("TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr"))
        .arg(format!("{},raw,echo=0", pty.display()));
    start(c, port)
}

/// ser2net 4 serving `pty` as a telnet port with RFC 2217, the line set to 9600n81 until a
/// client says otherwise.
fn ser2net(port: u16, pty: &Path, dir: &Path) -> Server {
    let config = dir.join("ser2net.yaml");
    std::fs::write(
        &config,
        format!(
            "%YAML 1.1\n---\nconnection: &meter\n  accepter: telnet(rfc2217),tcp,127.0.0.1,{port}\n  connector: serialdev,{},9600n81,local\n  options:\n    kickolduser: true\n",
            pty.display()
        ),
    )
    .expect("write ser2net.yaml");
    let mut c = Command::new("ser2net");
    c.args(["-n", "-u", "-c"])
        .arg(&config)
        .arg("-P")
        .arg(dir.join("ser2net.pid"));
    start(c, port)
}

/// A Modbus unit 1 with volts at input 0 (÷10), amps at input 1 (÷100) and coils.
fn unit(volts: u16) -> serde_json::Value {
    serde_json::json!({"units": {"1": {"ir": [volts, 425], "co": vec![false; 8]}}})
}

/// The gateway's config: unit 1 on `port` (a URL), polled every 200 ms, offline after two
/// misses; its points on `modbus/meter/<point>`, a command switching coil 3.
fn config(port: &str, line: &str) -> String {
    r#"gateway: {id: testgw}
broker: {listen: "127.0.0.1:{port}"}
devices:
  - name: meter
    port: "URL"
    LINE
    offline_after: 2
    offline_poll: 1s
    modbus:
      unit: 1
      every: 200ms
      timeout: 300ms
      retries: 0
      points:
        - {name: volts, input: 0, scale: 0.1}
        - {name: amps, input: 1, scale: 0.01}
        - {name: run, coil: 3}
    rules: [volts, amps, run]
    commands: [set_run]
rules:
  volts: {points: true, continue: true, publish: [{topic: "modbus/{device}/volts", payload: "{volts}"}]}
  amps: {points: true, continue: true, publish: [{topic: "modbus/{device}/amps", payload: "{amps}"}]}
  run: {points: true, publish: [{topic: "modbus/{device}/run", payload: "{run}"}]}
commands:
  set_run: {subscribe: "modbus/meter/run/set", point: run, reply_topic: "modbus/meter/run/result"}
"#
    .replace("URL", port)
    .replace("LINE", line)
}

/// The values arrive; with the server stopped (dropped) the device is announced offline;
/// started again on its port by `restart`, it is online again and the values flow.
async fn values_survive_a_restart<S>(
    sub: &mut Subscriber,
    gw: &Gateway,
    server: &mut Option<S>,
    restart: impl FnOnce() -> Option<S>,
) {
    assert_eq!(
        sub.next_on("modbus/meter/volts", T).await.payload,
        "230.1",
        "{}",
        gw.logs()
    );
    assert_eq!(sub.next_on("modbus/meter/amps", T).await.payload, "4.25");
    *server = None;
    sub.next_change(STATE, "online", "offline", T).await;
    *server = restart();
    sub.next_change(STATE, "offline", "online", T).await;
    assert_eq!(
        sub.next_on("modbus/meter/volts", T).await.payload,
        "230.1",
        "{}",
        gw.logs()
    );
}

/// `tcp://`: socat passes the line's bytes to and from a pymodbus RTU unit on a pty; the
/// gateway's Modbus RTU master reads it through the socket as through an adapter. socat
/// killed: offline; socat back: online and read again.
#[tokio::test]
async fn a_raw_tcp_serial_server_carries_an_rtu_bus_and_its_restart_is_an_unplug() {
    if !have_tool("socat") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cable = Cable::new();
    let Some(_slave) = slave(&cable.device_path, &unit(2301), dir.path()) else {
        return;
    };
    let port = free_port();
    let mut server = Some(socat(port, &cable.gateway_path));
    let gw = start_gateway(&config(&format!("tcp://127.0.0.1:{port}"), ""));
    let mut sub = Subscriber::connect(gw.port, &["modbus/#", STATE], QoS::AtMostOnce).await;
    let pty = cable.gateway_path.clone();
    values_survive_a_restart(&mut sub, &gw, &mut server, || Some(socat(port, &pty))).await;
    assert!(
        gw.logs().contains("device offline: the port closed"),
        "{}",
        gw.logs()
    );
}

/// `rfc2217://`: ser2net starts the line at 9600 8N1, and the unit behind the cable speaks
/// at 19200 only: values flow only because the config's line settings travel by the
/// COM-PORT-OPTION, and the pty ends up set to them: 19200 baud, two stop bits. A Linux pty
/// cannot hold parity (the kernel forces 8 data bits and no parity), so even parity is seen
/// in ser2net's answer, which the gateway logs. ser2net killed: offline; back: online.
#[tokio::test]
async fn rfc2217_sets_the_line_the_config_asks_for_and_a_restart_is_an_unplug() {
    if !have_tool("ser2net") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let cable = Cable::gated(19200, 'N');
    // Unit 2 beside it on the bus: its request (02 04 00 FF 00 01) and its answer (02 04 02
    // FF FF ..) carry 0xFF, telnet's IAC, which must travel doubled both ways.
    let mut spec = unit(2301);
    let mut high = vec![0u16; 256];
    high[255] = 0xFFFF;
    spec["units"]["2"] = serde_json::json!({"ir": high});
    let Some(_slave) = slave(&cable.device_path, &spec, dir.path()) else {
        return;
    };
    let port = free_port();
    let mut server = Some(ser2net(port, &cable.gateway_path, dir.path()));
    let url = format!("rfc2217://127.0.0.1:{port}");
    let line = "baud: 19200\n    parity: even\n    stop_bits: 2";
    let yaml = config(&url, line).replace(
        "rules:\n  volts:",
        &format!(
            "  - name: high\n    port: \"{url}\"\n    {line}\n    modbus: {{unit: 2, every: 200ms, timeout: 300ms, retries: 0, points: [{{name: top, input: 255}}]}}\n    rules: [top]\nrules:\n  top: {{points: true, publish: [{{topic: \"modbus/{{device}}/top\", payload: \"{{top}}\"}}]}}\n  volts:"
        ),
    );
    let gw = start_gateway(&yaml);
    let mut sub = Subscriber::connect(gw.port, &["modbus/#", STATE], QoS::AtMostOnce).await;
    assert_eq!(
        sub.next_on("modbus/meter/volts", T).await.payload,
        "230.1",
        "{}",
        gw.logs()
    );
    assert_eq!(sub.next_on("modbus/high/top", T).await.payload, "65535");
    assert_eq!(line_of(&cable.gateway_path), Some((19200, 'N')));
    assert_eq!(two_stop_bits(&cable.gateway_path), Some(true));
    gw.wait_log("line set by RFC 2217: 19200 8E2", T).await;
    let (pty, state) = (cable.gateway_path.clone(), dir.path().to_owned());
    values_survive_a_restart(&mut sub, &gw, &mut server, || {
        Some(ser2net(port, &pty, &state))
    })
    .await;
    assert_eq!(line_of(&cable.gateway_path), Some((19200, 'N')));
}

/// `modbus-tcp://`: pymodbus's Modbus TCP server is read through the RTU master (each request
/// sent as MBAP, each answer turned back into RTU), a command switches its coil, and a
/// restart of the server is an unplug.
#[tokio::test]
async fn modbus_tcp_units_are_read_and_written_and_a_restart_is_an_unplug() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let Some(mut server) = tcp_slave(port, false, &unit(2301), dir.path()) else {
        return;
    };
    let gw = start_gateway(&config(&format!("modbus-tcp://127.0.0.1:{port}"), ""));
    let mut sub = Subscriber::connect(gw.port, &["modbus/#", STATE], QoS::AtLeastOnce).await;
    assert_eq!(
        sub.next_on("modbus/meter/volts", T).await.payload,
        "230.1",
        "{}",
        gw.logs()
    );
    assert_eq!(sub.next_on("modbus/meter/run", T).await.payload, "0");
    sub.client
        .publish("modbus/meter/run/set", QoS::AtLeastOnce, false, "ON")
        .await
        .unwrap();
    assert_eq!(server.next_write().await, "write 1 co 3 [True]");
    assert_eq!(
        sub.next_on("modbus/meter/run/result", T).await.payload,
        "ok"
    );
    sub.next_change("modbus/meter/run", "0", "1", T).await;
    let mut server = Some(server);
    let spec_dir = dir.path().to_owned();
    values_survive_a_restart(&mut sub, &gw, &mut server, || {
        tcp_slave(port, false, &unit(2301), &spec_dir)
    })
    .await;
}

/// RTU over TCP: pymodbus with its RTU framer on a TCP port is `tcp://` with the `modbus_rtu`
/// framing a `modbus:` map implies; a restart is an unplug.
#[tokio::test]
async fn rtu_over_tcp_is_a_raw_tcp_port_and_a_restart_is_an_unplug() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let Some(server) = tcp_slave(port, true, &unit(2301), dir.path()) else {
        return;
    };
    let gw = start_gateway(&config(&format!("tcp://127.0.0.1:{port}"), ""));
    let mut sub = Subscriber::connect(gw.port, &["modbus/#", STATE], QoS::AtMostOnce).await;
    let mut server = Some(server);
    let spec_dir = dir.path().to_owned();
    values_survive_a_restart(&mut sub, &gw, &mut server, || {
        tcp_slave(port, true, &unit(2301), &spec_dir)
    })
    .await;
}

/// A server that is not there is an open error in one sentence, retried like a missing
/// adapter: nothing listening (refused), a name that does not resolve.
#[tokio::test]
async fn a_server_that_is_not_there_is_named_in_one_sentence() {
    let port = free_port();
    let gw = start_gateway(&config(&format!("tcp://127.0.0.1:{port}"), ""));
    let mut sub = Subscriber::connect(gw.port, &[STATE], QoS::AtMostOnce).await;
    assert_eq!(sub.next_on(STATE, T).await.payload, "offline");
    gw.wait_log(
        &format!("device offline: cannot connect to tcp://127.0.0.1:{port}: connection refused"),
        T,
    )
    .await;
    let gw = start_gateway(&config("modbus-tcp://no-such-host.invalid:502", ""));
    gw.wait_log(
        "cannot connect to modbus-tcp://no-such-host.invalid:502: the name no-such-host.invalid is not resolved",
        T,
    )
    .await;
}

/// `serial2mqtt modbus read` opens its port as the gateway does: a Modbus TCP unit by URL.
#[tokio::test]
async fn the_probe_reads_a_modbus_tcp_unit() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let Some(_server) = tcp_slave(port, false, &unit(2301), dir.path()) else {
        return;
    };
    let url = format!("modbus-tcp://127.0.0.1:{port}");
    let out = tokio::task::spawn_blocking(move || {
        serial2mqtt_command()
            .args(["modbus", "read", "--port", &url])
            .args(["--unit", "1", "--input", "0", "--count", "2"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("unit 1, input 0..=1 (2 entries)"), "{text}");
    assert!(text.contains("2301"), "{text}");
}

/// A server that dies silently (no FIN, no RST: its cable pulled, its power cut) is found by
/// the socket's timers, not only by poll timeouts: the polls mark the device offline at once,
/// the connection is given up within TCP_USER_TIMEOUT (20 s), reconnects time out in one
/// sentence, and when the network is back the device is online again. The cut is loopback
/// taken down in a private network namespace (gateway and pymodbus inside it), so packets
/// vanish; the test reads the gateway's log. Takes about 40 s.
#[tokio::test]
async fn a_silently_dead_server_is_found_and_reconnected() {
    if !std::process::Command::new("unshare")
        .args(["--net", "true"])
        .status()
        .is_ok_and(|s| s.success())
    {
        assert!(
            std::env::var("CI").is_err(),
            "the dead-server test needs root and unshare(1) in CI (a private network namespace)"
        );
        eprintln!("SKIPPED: needs root and unshare(1) for a private network namespace");
        return;
    }
    if !have_tool("ip") || !common::slave::have_pymodbus() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let (modbus, broker) = (5020, 47010);
    std::fs::write(d.join("spec.json"), unit(2301).to_string()).unwrap();
    std::fs::write(
        d.join("gw.yaml"),
        config(&format!("tcp://127.0.0.1:{modbus}"), "").replace("{port}", &broker.to_string()),
    )
    .unwrap();
    let script = format!(
        "ip link set lo up\n\
         python3 {slave} rtu-tcp:{modbus} spec.json &\n\
         S=$!\n\
         sleep 1.5\n\
         {gateway} run --config gw.yaml 2>> gw.log &\n\
         G=$!\n\
         sleep 3\n\
         echo CUT >> gw.log\n\
         ip link set lo down\n\
         sleep 26\n\
         echo BACK >> gw.log\n\
         ip link set lo up\n\
         sleep 8\n\
         kill $G $S\n\
         wait\n",
        slave = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/modbus/slave.py")
            .display(),
        gateway = env!("CARGO_BIN_EXE_serial2mqtt"),
    );
    std::fs::write(d.join("run.sh"), script).unwrap();
    let dir_path = d.to_owned();
    let status = tokio::task::spawn_blocking(move || {
        Command::new("unshare")
            .args(["--net", "sh", "run.sh"])
            .current_dir(&dir_path)
            .status()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(status.success());
    let log = std::fs::read_to_string(d.join("gw.log")).unwrap();
    let at = |needle: &str, from: usize| {
        log[from..]
            .find(needle)
            .map(|i| from + i)
            .unwrap_or_else(|| panic!("no {needle:?} after byte {from} of the log:\n{log}"))
    };
    let cut = at("CUT", at("device online", 0));
    let dead = at("device offline: read error: Connection timed out", cut);
    let back = at("BACK", dead);
    at("device online", back);
    // Given up by the timers, not waited on forever: between the cut and the back.
    assert!(at("2 polls in a row unanswered", cut) < dead, "{log}");
}

//! pymodbus, an independent Modbus implementation, serving units on a serial port
//! (tests/modbus/slave.py): the simulated bus of the Modbus and scan tests.

use std::io::BufRead as _;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const T: Duration = Duration::from_secs(10);

/// pymodbus on `port`, serving `spec` (see tests/modbus/slave.py); None when it cannot run here.
pub fn slave(
    port: &std::path::Path,
    spec: &serde_json::Value,
    dir: &std::path::Path,
) -> Option<Slave> {
    serve(port.as_os_str(), spec, dir)
}

/// pymodbus on TCP port `port` of 127.0.0.1: Modbus TCP (MBAP frames), or with `rtu` the RTU
/// frames a serial server would carry (RTU over TCP).
pub fn tcp_slave(
    port: u16,
    rtu: bool,
    spec: &serde_json::Value,
    dir: &std::path::Path,
) -> Option<Slave> {
    let target = format!("{}:{port}", if rtu { "rtu-tcp" } else { "tcp" });
    serve(std::ffi::OsStr::new(&target), spec, dir)
}

/// Whether python3 with pymodbus is here; in CI its absence fails the test.
pub fn have_pymodbus() -> bool {
    let ok = Command::new("python3")
        .args(["-c", "import pymodbus"])
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        assert!(
            std::env::var("CI").is_err(),
            "pymodbus is needed in CI: pip install pymodbus==3.6.9 pyserial"
        );
        eprintln!("skipped: python3 with pymodbus is not installed (pip install pymodbus==3.6.9 pyserial)");
    }
    ok
}

fn serve(port: &std::ffi::OsStr, spec: &serde_json::Value, dir: &std::path::Path) -> Option<Slave> {
    if !have_pymodbus() {
        return None;
    }
    let writes = dir.join("writes.log");
    let mut spec = spec.clone();
    spec["writes"] = serde_json::json!(writes);
    let spec_path = dir.join("slave.json");
    std::fs::write(&spec_path, spec.to_string()).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/modbus/slave.py");
    let mut child = Command::new("python3")
        .arg(script)
        .arg(port)
        .arg(&spec_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout)
            .lines()
            .map_while(Result::ok)
        {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    assert_eq!(
        rx.recv_timeout(T).ok().as_deref(),
        Some("ready"),
        "pymodbus did not start"
    );
    Some(Slave {
        child,
        writes,
        seen: 0,
    })
}

/// The slave process, killed when dropped, and the file its writes are reported in.
pub struct Slave {
    child: Child,
    pub writes: std::path::PathBuf,
    seen: usize,
}

impl Slave {
    /// The next `write UNIT TABLE ADDRESS [VALUES]` line the slave reported (async: the test's
    /// MQTT client runs on the same thread and must go on sending).
    pub async fn next_write(&mut self) -> String {
        let deadline = std::time::Instant::now() + T;
        loop {
            let text = std::fs::read_to_string(&self.writes).unwrap_or_default();
            if let Some(line) = text.lines().nth(self.seen) {
                self.seen += 1;
                return line.to_owned();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no write reached the slave"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// How many writes the slave has reported so far.
    pub fn writes(&self) -> usize {
        std::fs::read_to_string(&self.writes)
            .unwrap_or_default()
            .lines()
            .count()
    }
}

impl Drop for Slave {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs pymodbus's TCP client (tests/modbus/client.py) against `host:port` with `ops`; one JSON
/// value per request, in order (see the script). Async: the test's MQTT client goes on.
pub async fn client(
    port: u16,
    ops: &serde_json::Value,
    dir: &std::path::Path,
) -> Vec<serde_json::Value> {
    let ops_path = dir.join(format!("ops-{}.json", fastrand_name()));
    std::fs::write(&ops_path, ops.to_string()).unwrap();
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/modbus/client.py");
    let out = tokio::process::Command::new("python3")
        .arg(script)
        .arg("127.0.0.1")
        .arg(port.to_string())
        .arg(&ops_path)
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "client.py: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// A name no other call of this process has used.
fn fastrand_name() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

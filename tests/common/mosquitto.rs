//! Starting a mosquitto broker from a config text and waiting until it listens. Shared by the
//! tests and the benchmarks, which run mosquitto as an upstream broker or as a peer.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Writes `config` to `conf`, starts `mosquitto -c conf` (output discarded) and returns once
/// `port` accepts connections; panics after 10 s.
pub fn spawn_mosquitto(conf: &Path, config: &str, port: u16) -> Child {
    std::fs::write(conf, config).expect("write mosquitto config");
    let child = Command::new("mosquitto")
        .arg("-c")
        .arg(conf)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mosquitto");
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "mosquitto did not listen on {port}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    child
}

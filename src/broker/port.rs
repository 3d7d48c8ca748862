//! The listen port: bound by the gatekeeper at start, and when it is taken, who holds it.

use std::io;
use std::net::{SocketAddr, TcpListener};

use super::BrokerError;

/// Binds `listen`; a taken port is an error naming its holder.
pub(super) fn bind(listen: SocketAddr) -> Result<TcpListener, BrokerError> {
    TcpListener::bind(listen).map_err(|source| BrokerError::Listen {
        addr: listen,
        holder: match listener_holder(listen.port()) {
            Some((pid, name)) if name == "serial2mqtt" => {
                format!("Another serial2mqtt (PID {pid}) listens there")
            }
            Some((pid, name)) => format!("`{name}` (PID {pid}) listens there"),
            None if source.kind() == io::ErrorKind::AddrInUse => {
                "Another program (an MQTT broker such as mosquitto?) listens there".to_string()
            }
            None => "The address may not be one of this machine's".to_string(),
        },
        source,
    })
}

/// The process listening on TCP `port` (PID and command name), from /proc: for an error
/// message that names who holds a taken port. `None` when /proc does not tell (another user's
/// process, another network namespace).
fn listener_holder(port: u16) -> Option<(u32, String)> {
    const LISTEN: &str = "0A";
    let mut inodes = Vec::new();
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (Some(local), Some(state), Some(inode)) = (cols.get(1), cols.get(3), cols.get(9))
            else {
                continue;
            };
            let local_port = local
                .rsplit(':')
                .next()
                .and_then(|p| u16::from_str_radix(p, 16).ok());
            if *state == LISTEN && local_port == Some(port) {
                inodes.push(format!("socket:[{inode}]"));
            }
        }
    }
    if inodes.is_empty() {
        return None;
    }
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(target) = std::fs::read_link(fd.path()) else {
                continue;
            };
            if inodes.iter().any(|i| target.as_os_str() == i.as_str()) {
                let name = std::fs::read_to_string(entry.path().join("comm"))
                    .map(|c| c.trim().to_string())
                    .unwrap_or_default();
                return Some((pid, name));
            }
        }
    }
    None
}

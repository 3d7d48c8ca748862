//! `serial2mqtt ports`: the serial ports of this machine with their USB identity and the stable
//! `/dev/serial/by-id/...` path to write in the config (a replugged adapter may come back as
//! another ttyUSBn; its by-id link does not change). Ports come from sysfs through
//! tokio-serial's enumeration (no libudev); pseudo-terminals are not serial hardware and are
//! not listed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use tokio_serial::SerialPortType;

/// Where udev puts the stable links.
pub const BY_ID: &str = "/dev/serial/by-id";

/// One port as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Port {
    /// The device node, e.g. `/dev/ttyUSB0`.
    pub path: PathBuf,
    /// `usb 1a86:7523 QinHeng Electronics CH340 serial 1234`, `pci`, `bluetooth`, `built-in`.
    pub kind: String,
    /// The `/dev/serial/by-id` link that points at it, when there is one.
    pub stable: Option<PathBuf>,
}

/// Maps each device node to the link in `dir` that points at it.
pub fn stable_links(dir: &Path) -> HashMap<PathBuf, PathBuf> {
    let mut links = HashMap::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return links;
    };
    for entry in entries.flatten() {
        let link = entry.path();
        if let Ok(target) = std::fs::canonicalize(&link) {
            links.insert(target, link);
        }
    }
    links
}

fn describe(kind: &SerialPortType) -> String {
    match kind {
        SerialPortType::UsbPort(u) => {
            let mut s = format!("usb {:04x}:{:04x}", u.vid, u.pid);
            for part in [&u.manufacturer, &u.product].into_iter().flatten() {
                s.push(' ');
                s.push_str(part);
            }
            if let Some(serial) = &u.serial_number {
                s.push_str(&format!(" serial {serial}"));
            }
            s
        }
        SerialPortType::PciPort => "pci".into(),
        SerialPortType::BluetoothPort => "bluetooth".into(),
        SerialPortType::Unknown => "built-in (UART)".into(),
    }
}

/// The serial ports of this machine, USB ones first; an error says why none can be listed.
pub fn list() -> Result<Vec<Port>, String> {
    // The enumeration panics when sysfs lacks the tty class (some containers): ask first.
    if !Path::new("/sys/class/tty").is_dir() {
        return Err(
            "/sys/class/tty is missing (no sysfs here?): serial ports cannot be listed".into(),
        );
    }
    let found =
        tokio_serial::available_ports().map_err(|e| format!("cannot list serial ports: {e}"))?;
    let links = stable_links(Path::new(BY_ID));
    let mut ports: Vec<Port> = found
        .into_iter()
        .map(|p| {
            let path = PathBuf::from(&p.port_name);
            let real = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
            Port {
                stable: links.get(&real).cloned(),
                kind: describe(&p.port_type),
                path,
            }
        })
        .collect();
    ports.sort_by_key(|p| (!p.kind.starts_with("usb"), p.path.clone()));
    Ok(ports)
}

/// The table `serial2mqtt ports` prints.
pub fn render(ports: &[Port]) -> String {
    if ports.is_empty() {
        return "No serial ports found. Plug the adapter in and run this again; \
                `dmesg | tail` shows what the kernel made of it.\n"
            .into();
    }
    let mut out = String::new();
    for p in ports {
        out.push_str(&format!("{}  {}\n", p.path.display(), p.kind));
        match &p.stable {
            Some(link) => out.push_str(&format!("    port: {}\n", link.display())),
            None => out.push_str(&format!(
                "    port: {}   (no stable {BY_ID} link for it)\n",
                p.path.display()
            )),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_links_map_device_nodes_to_their_by_id_link() {
        let dir = tempfile::tempdir().unwrap();
        let node = dir.path().join("ttyUSB0");
        std::fs::write(&node, "").unwrap();
        let by_id = dir.path().join("by-id");
        std::fs::create_dir(&by_id).unwrap();
        let link = by_id.join("usb-1a86_USB_Serial-if00-port0");
        std::os::unix::fs::symlink("../ttyUSB0", &link).unwrap();
        let links = stable_links(&by_id);
        assert_eq!(links.get(&node.canonicalize().unwrap()), Some(&link));
        assert!(stable_links(&dir.path().join("missing")).is_empty());
    }

    #[test]
    fn the_table_gives_the_line_to_paste_into_the_config() {
        let ports = [
            Port {
                path: "/dev/ttyUSB0".into(),
                kind: "usb 1a86:7523 QinHeng CH340".into(),
                stable: Some("/dev/serial/by-id/usb-1a86_USB_Serial-if00-port0".into()),
            },
            Port {
                path: "/dev/ttyAMA0".into(),
                kind: "built-in (UART)".into(),
                stable: None,
            },
        ];
        let t = render(&ports);
        assert!(t.contains("/dev/ttyUSB0  usb 1a86:7523 QinHeng CH340\n    port: /dev/serial/by-id/usb-1a86_USB_Serial-if00-port0\n"), "{t}");
        assert!(t.contains("    port: /dev/ttyAMA0   (no stable"), "{t}");
        assert!(render(&[]).starts_with("No serial ports found"));
    }
}

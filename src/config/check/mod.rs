//! The checks: one small function per section of the file, each taking its raw part (and what
//! it refers to) and reporting into [`Problems`], so that every problem of the file is found in
//! one pass and each section's rules live in one place. [`check`] runs them in order: sections
//! that others refer to first (gateway id, rules and commands), devices, then the cross-device
//! checks.

mod broker;
pub use broker::{anonymous_allowed, commands_in_force, open_to_the_network, refuses_commands};
mod buses;
mod devices;
mod gateway;
mod homeassistant;
pub mod metrics;
mod modbus;
mod polls;
mod profile;
mod queue;
mod rules;
mod server;
mod uplink;
mod web;

use std::path::Path;

use super::diagnostics::{Diagnostic, Problems};
use super::locate::Locations;
use super::model::Config;
use super::schema;
use crate::rules::template::{Template, TemplateError};

/// Checks every section of the raw file and builds the validated [`Config`]; every error found
/// is returned, not just the first.
pub fn check(
    raw: schema::File,
    file: &Path,
    locations: &Locations,
) -> Result<Config, Vec<Diagnostic>> {
    let mut p = Problems::new(locations);
    let gw = gateway::check(raw.gateway, &mut p);
    gateway::log_level(&raw.log, &mut p);
    let mut broker = broker::check(raw.broker, &mut p);
    let mut library = rules::compile(&raw.rules, &raw.commands, &mut p);
    let names: Vec<String> = raw.devices.iter().map(|d| d.name.clone()).collect();
    let devices = devices::check(raw.devices, &gw, &mut library, &mut p);
    broker::read_acl(&mut broker, &gw.gateway.id, &names, &mut p);
    broker::anonymous_network(&broker, &devices, &mut p);
    buses::check(&devices, &names, &mut p);
    library.warn_unused(&mut p);
    rules::reply_loops(&devices, &mut p);
    homeassistant::check(&raw.homeassistant, &devices, &gw.gateway.id, &mut p);
    let uplink = raw
        .uplink
        .and_then(|u| uplink::check(u, &gw.gateway.id, &mut p));
    if let Some(u) = &uplink {
        profile::topics(u, &devices, &gw.gateway.id, &mut p);
    }
    let queue = queue::check(&raw.queue, &gw.gateway.state_dir, &mut p);
    let listeners = [("broker.listen", broker.listen)];
    // metrics.listen may be the dashboard's own address: one listener serves both.
    let web_listen = raw.web.as_ref().map(|w| w.listen);
    let metrics = raw
        .metrics
        .clone()
        .and_then(|m| metrics::check(m, web_listen, &mut p));
    let web = raw.web.and_then(|w| web::check(w, &listeners, &mut p));
    let mut taken = vec![("broker.listen", broker.listen)];
    taken.extend(web_listen.map(|a| ("web.listen", a)));
    taken.extend(raw.metrics.as_ref().map(|m| ("metrics.listen", m.listen)));
    let modbus_server = raw
        .modbus_server
        .and_then(|s| server::check(s, &devices, &taken, &mut p));

    if !p.errors.is_empty() {
        return Err(p.errors);
    }
    Ok(Config {
        source: file.to_owned(),
        gateway: gw.gateway,
        broker,
        log_level: raw.log.level,
        devices,
        uplink,
        queue,
        metrics,
        homeassistant: raw.homeassistant,
        web,
        modbus_server,
        warnings: p.warnings,
    })
}

/// A topic of the gateway's own (device state, unmatched frames): `{gateway}` and `{device}` only.
fn builtin_only_template(text: &str) -> Result<Template, TemplateError> {
    let t = Template::parse_static(text, "this topic")?;
    if t.literals().any(|l| l.contains(['+', '#'])) {
        return Err(TemplateError {
            message: format!("topic `{text}` contains a wildcard"),
            help: Some("remove + and #".into()),
        });
    }
    Ok(t)
}

/// Checks that `port` can be a serial port: a missing one (it may be plugged in later), and
/// anything that exists and cannot be one, is a warning saying what it is. A network
/// transport's URL is checked for its form only (the server may be off now); a malformed one
/// is an error saying what to write.
fn check_port(port: &Path, key: &str, p: &mut Problems) {
    use std::os::unix::fs::FileTypeExt;
    match crate::serial::link::address::Address::parse(port) {
        Ok(crate::serial::link::address::Address::Device(_)) => {}
        Ok(_) => return,
        Err(e) => {
            p.error(key, e.message, Some(e.help));
            return;
        }
    }
    let shown = port.display();
    let help = Some(
        "write the device's path, e.g. /dev/ttyUSB0, or better its /dev/serial/by-id/... link (`serial2mqtt ports` lists them)"
            .to_string(),
    );
    let meta = match std::fs::metadata(port) {
        Ok(m) => m,
        Err(e) if e.raw_os_error() == Some(40) => {
            // ELOOP
            p.warn(key, format!("{shown} is a symlink loop"), help);
            return;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dangling = std::fs::symlink_metadata(port).is_ok();
            p.warn(
                key,
                if dangling {
                    format!("{shown} is a symlink to nothing now; the device stays offline until its target appears")
                } else {
                    format!("{shown} does not exist now; the device stays offline until it appears")
                },
                None,
            );
            return;
        }
        Err(e) => {
            p.warn(key, format!("cannot inspect {shown}: {e}"), None);
            return;
        }
    };
    let ft = meta.file_type();
    let what = if ft.is_dir() {
        "a directory"
    } else if ft.is_file() {
        "a regular file"
    } else if ft.is_fifo() {
        "a named pipe"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_block_device() {
        "a block device (a disk)"
    } else if ft.is_char_device() && {
        use std::os::unix::fs::MetadataExt;
        // Major 1: the memory devices (/dev/null, /dev/zero, /dev/full, /dev/random, ...).
        (meta.rdev() >> 8) & 0xfff == 1
    } {
        "a memory device like /dev/null or /dev/zero"
    } else {
        return;
    };
    // A warning, not an error: the other devices still run, and this one retries (and says
    // why) until its path is fixed.
    p.warn(key, format!("{shown} is {what}, not a serial port"), help);
}

/// Why `name` cannot be one topic level (a gateway id, a device name), if it cannot.
fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.contains(['+', '#', '/', '\0']) {
        Some("contains one of + # / (it becomes a single topic level)")
    } else {
        None
    }
}

/// Reads a file holding a secret (users, a token, a connection string): an error saying how
/// to `create` it when it cannot be read, a warning when every user can read it.
fn read_secret(key: &str, file: &Path, create: String, p: &mut Problems) -> Option<String> {
    match std::fs::read_to_string(file) {
        Ok(text) => {
            warn_if_world_readable(key, file, p);
            Some(text)
        }
        Err(e) => {
            p.error(
                key,
                format!("cannot read {}: {e}", file.display()),
                Some(create),
            );
            None
        }
    }
}

#[cfg(unix)]
/// A warning when a file holding a secret can be read by every user.
fn warn_if_world_readable(key: &str, file: &std::path::Path, p: &mut Problems) {
    use std::os::unix::fs::PermissionsExt;
    if let Ok(m) = std::fs::metadata(file) {
        if m.permissions().mode() & 0o004 != 0 {
            p.warn(
                key,
                format!("{} is readable by every user", file.display()),
                Some(format!("chmod 600 {}", file.display())),
            );
        }
    }
}

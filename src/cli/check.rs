//! `serial2mqtt check`: validates a config file; exit 0 with a one-line summary of what would
//! run, or 1 with every error and what to write instead.

use std::path::PathBuf;
use std::process::ExitCode;

use super::load_or_report;

/// Prints the file at `path` as the gateway reads it (models expanded), after checking it.
pub fn expand(path: &std::path::Path) -> ExitCode {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: cannot read: {e}", path.display());
            return ExitCode::FAILURE;
        }
    };
    if load_or_report(path).is_none() {
        return ExitCode::FAILURE;
    }
    match crate::config::expanded(&text, path).and_then(|v| {
        serde_yaml::to_string(&v).map_err(|e| crate::config::ConfigError {
            file: path.to_owned(),
            diagnostics: vec![crate::config::Diagnostic {
                position: None,
                message: e.to_string(),
                help: None,
            }],
        })
    }) {
        Ok(yaml) => {
            print!("{yaml}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// Checks the file at `path`.
pub fn main(path: PathBuf) -> ExitCode {
    match load_or_report(&path) {
        Some(mut c) => {
            // What a start would run: the commands a network listener without logins refuses
            // are off (the gateway applies the same rule to the broker in force).
            let broker = c.broker.clone();
            let off = crate::config::check::commands_in_force(&broker, &mut c.devices);
            let uplink = match &c.uplink {
                Some(u) => format!(
                    ", uplink to {} through the queue in {}",
                    u.endpoints
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(" then "),
                    c.queue.dir.display()
                ),
                None => ", no uplink".to_owned(),
            };
            let mut extras = String::new();
            let commands: usize = c.devices.iter().map(|d| d.commands.len()).sum();
            if commands > 0 {
                extras += &format!(", {commands} command(s)");
            }
            let entities = crate::homeassistant::Discovery {
                prefix: &c.homeassistant.discovery_prefix,
                gateway: &c.gateway.id,
            }
            .configs(&c.devices)
            .len();
            if entities > 0 {
                extras += &format!(", {entities} Home Assistant entities");
            }
            if let Some(m) = &c.metrics {
                let access = if m.token.is_some() {
                    " (token required)"
                } else {
                    ""
                };
                extras += &format!(", metrics on http://{}/metrics{access}", m.listen);
            }
            if let Some(w) = &c.web {
                let scheme = if w.tls.is_some() { "https" } else { "http" };
                let access = if w.token.is_some() {
                    "token required"
                } else {
                    "this host only"
                };
                extras += &format!(", dashboard on {scheme}://{}/ ({access})", w.listen);
            }
            println!(
                "{}: OK (gateway `{}`, {} device(s), broker on {}{uplink}{extras})",
                path.display(),
                c.gateway.id,
                c.devices.len(),
                c.broker.listen
            );
            println!("  {}", security(&c, &off));
            for d in &c.devices {
                if let Some(unit) = &d.modbus {
                    print!("{}", modbus_plan(d, unit));
                }
            }
            if let Some(s) = &c.modbus_server {
                print!("{}", modbus_server(s, &c.devices));
            }
            ExitCode::SUCCESS
        }
        None => ExitCode::FAILURE,
    }
}

/// One line on who can reach the broker from where, and who can command which device (`off`:
/// the devices whose commands the broker refuses).
fn security(c: &crate::config::Config, off: &[String]) -> String {
    let b = &c.broker;
    let from = if b.listen.ip().is_loopback() {
        "this host only"
    } else {
        "the network"
    };
    let mut logins = Vec::new();
    if let Some(u) = &b.users {
        logins.push(format!(
            "{} login(s) from {}",
            u.0.len(),
            b.users_file
                .as_ref()
                .map(|f| f.display().to_string())
                .unwrap_or_default()
        ));
    }
    if let Some(ca) = b.tls.as_ref().and_then(|t| t.client_ca_file.as_ref()) {
        logins.push(format!(
            "client certificates from {} (CN = user)",
            ca.display()
        ));
    }
    if crate::config::check::anonymous_allowed(b) {
        logins.push("anonymous".to_owned());
    }
    let tls = if b.tls.is_some() { ", TLS" } else { "" };
    let acl = b
        .acl_file
        .as_ref()
        .map(|f| format!(", access rules from {}", f.display()))
        .unwrap_or_default();
    let commanded: Vec<&crate::config::Device> = c
        .devices
        .iter()
        .filter(|d| !d.commands.is_empty())
        .collect();
    let commands = if !off.is_empty() {
        format!(
            "commands of {} off (a network listener without logins)",
            off.join(", ")
        )
    } else if commanded.is_empty() {
        "no device takes commands".to_owned()
    } else {
        let parts: Vec<String> = commanded
            .iter()
            .map(|d| format!("{} commanded by {}", d.name, commanders(b, d)))
            .collect();
        parts.join(", ")
    };
    format!(
        "security: broker on {} ({from}; {}{tls}{acl}); {commands}",
        b.listen,
        logins.join(", ")
    )
}

/// Who may publish on a device's command topics.
fn commanders(b: &crate::config::schema::Broker, d: &crate::config::Device) -> String {
    let anonymous = crate::config::check::anonymous_allowed(b);
    let Some(acl) = &b.acl else {
        return if b.users.is_none() && b.listen.ip().is_loopback() {
            "any client on this host".to_owned()
        } else if !anonymous {
            "logged-in users".to_owned()
        } else {
            "anyone on the network".to_owned()
        };
    };
    let may = |user: Option<&str>| {
        let rights = acl.rights(user, "");
        d.commands.iter().any(|c| rights.may_write_into(&c.filter))
    };
    let mut who: Vec<String> = acl
        .users()
        .filter(|u| may(Some(u)))
        .map(str::to_owned)
        .collect();
    who.sort();
    if anonymous && may(None) {
        who.insert(0, "anonymous clients".to_owned());
    }
    if acl.has_patterns() {
        who.push("users their `pattern` lines allow".to_owned());
    }
    if who.is_empty() {
        "nobody (broker.acl_file grants no one its command topics)".to_owned()
    } else {
        who.join(" and ")
    }
}

/// The Modbus TCP server: who reaches which unit, and per bus what the clients may take of the
/// line's time against the gateway's own polls (their cycle budget).
fn modbus_server(
    s: &crate::config::model::ServerSettings,
    devices: &[crate::config::Device],
) -> String {
    let from = if s.listen.ip().is_loopback() {
        "this host only"
    } else {
        "the network"
    };
    let mut out = format!("  modbus server on {} ({from}):\n", s.listen);
    for u in &s.units {
        let cache = match u.cache {
            Some(age) => format!(
                ", reads answered from the last poll when younger than {}",
                humantime::format_duration(age)
            ),
            None => String::new(),
        };
        let writes = if u.write.is_empty() {
            "no writes"
        } else {
            "writes as granted"
        };
        out += &format!("    unit {} = {}{cache}, {writes}\n", u.unit, u.device);
    }
    let served: Vec<&crate::config::Device> = devices
        .iter()
        .filter(|d| s.units.iter().any(|u| u.device == d.name))
        .collect();
    let mut buses: Vec<Option<std::path::PathBuf>> = Vec::new();
    for d in &served {
        if !buses.contains(&d.source.key()) {
            buses.push(d.source.key());
        }
    }
    let pct = |f: f64| format!("{:.0}%", f * 100.0);
    for key in buses {
        let members: Vec<&crate::config::Device> =
            devices.iter().filter(|d| d.source.key() == key).collect();
        let Some(first) = members.first() else {
            continue;
        };
        // The polls' part of the line when every unit answers.
        let polls: f64 = members
            .iter()
            .flat_map(|d| d.polls.iter().map(move |p| (d, p)))
            .map(|(d, p)| {
                let answer = d
                    .modbus
                    .as_ref()
                    .and_then(|u| u.request(&p.name))
                    .and_then(|i| d.modbus.as_ref()?.requests.get(i))
                    .map_or(p.bytes.len(), |r| {
                        5 + if r.table.bits() {
                            usize::from(r.count).div_ceil(8)
                        } else {
                            usize::from(r.count) * 2
                        }
                    });
                (d.serial.wire_time(p.bytes.len() + answer) + d.turnaround).as_secs_f64()
                    / p.every.as_secs_f64().max(1e-6)
            })
            .sum();
        let names: Vec<&str> = members.iter().map(|d| d.name.as_str()).collect();
        let keep = 1.0 - s.share;
        let verdict = if polls <= keep {
            "the polls keep their intervals while clients are busy".to_owned()
        } else if keep <= 0.0 {
            "busy clients can stop the polls (share: 100%)".to_owned()
        } else {
            format!(
                "while clients are busy the polls fall behind: each runs about {:.1}x its interval",
                polls / keep
            )
        };
        // The longest a poll may wait for one client's transaction: a 125-register read.
        let longest = first.serial.wire_time(8 + 255) + first.turnaround;
        out += &format!(
            "    bus {} ({}): the polls take {} of the line when every unit answers; clients may take up to {} while polls wait ({verdict}); a poll may wait up to {} behind a client's longest read\n",
            key.as_ref().map_or_else(|| "(simulated)".into(), |k| k.display().to_string()),
            names.join(", "),
            pct(polls),
            pct(s.share),
            humantime::format_duration(std::time::Duration::from_millis(longest.as_millis() as u64)),
        );
    }
    out
}

/// A Modbus device's request plan: each request with the points it reads, and the time one
/// read cycle takes on the line when every unit answers (request and answer bytes at the line
/// speed, plus the turnaround after each).
fn modbus_plan(d: &crate::config::Device, unit: &crate::modbus::Unit) -> String {
    let every = d.polls.first().map(|p| p.every).unwrap_or_default();
    let mut out = format!(
        "  {}: Modbus unit {}, {} point(s) in {} request(s) every {}\n",
        d.name,
        unit.unit,
        unit.points.len(),
        unit.requests.len(),
        humantime::format_duration(every)
    );
    // Time on the line per read group (points with an `every` of their own are read apart).
    let mut wire = vec![(std::time::Duration::ZERO, every); unit.groups.max(1)];
    let width = unit
        .requests
        .iter()
        .map(|r| r.name.len())
        .max()
        .unwrap_or(0);
    for (r, poll) in unit.requests.iter().zip(&d.polls) {
        let points: Vec<String> = r
            .points
            .iter()
            .filter_map(|&i| unit.points.get(i))
            .map(|p| match &p.unit {
                Some(u) => format!("{} ({u})", p.name),
                None => p.name.clone(),
            })
            .collect();
        let data = if r.table.bits() {
            usize::from(r.count).div_ceil(8)
        } else {
            usize::from(r.count) * 2
        };
        if let Some(g) = wire.get_mut(r.group) {
            g.0 += d.serial.wire_time(r.bytes.len() + 5 + data) + d.turnaround;
            g.1 = poll.every;
        }
        out += &format!("    {:<width$}  {}\n", r.name, points.join(", "));
    }
    let ms = |t: std::time::Duration| {
        humantime::format_duration(std::time::Duration::from_millis(t.as_millis() as u64))
    };
    let mut line = format!(
        "    one cycle: {} on the line at {} baud when the unit answers",
        ms(wire[0].0),
        d.serial.baud
    );
    if wire.len() > 1 {
        line += &format!(
            " (the points read every {})",
            humantime::format_duration(wire[0].1)
        );
        for (t, every) in &wire[1..] {
            line += &format!(
                "; every {}: {} more",
                humantime::format_duration(*every),
                ms(*t)
            );
        }
    }
    out + &line + "\n"
}

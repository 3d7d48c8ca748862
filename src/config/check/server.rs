//! `modbus_server:` — the Modbus TCP server that shares the gateway's buses: every unit names a
//! Modbus device and a unit id no other unit takes, every client list and address range parses,
//! nothing is writable unless a grant names its table and addresses, and a server open to the
//! network says so.

use std::net::SocketAddr;
use std::ops::RangeInclusive;
use std::time::Duration;

use crate::config::diagnostics::Problems;
use crate::config::model::{Access, Device, ServedUnit, ServerSettings};
use crate::config::schema::{self, Addresses, Clients, Grant};

/// Checks `modbus_server:` against the devices; `taken` are the other listeners' addresses.
pub(super) fn check(
    raw: schema::ModbusServer,
    devices: &[Device],
    taken: &[(&str, SocketAddr)],
    p: &mut Problems,
) -> Option<ServerSettings> {
    let errors = p.errors.len();
    if let Some((key, _)) = taken.iter().find(|(_, a)| *a == raw.listen) {
        p.error(
            "modbus_server.listen",
            format!("{} is {key}'s address too: one port, one listener", raw.listen),
            Some(format!(
                "give the Modbus server another port, e.g. {}:1502 (502 needs privileges the service does not have)",
                raw.listen.ip()
            )),
        );
    }
    for (key, value) in [
        ("max_connections", raw.max_connections),
        ("max_connections_per_peer", raw.max_connections_per_peer),
        ("max_queued", raw.max_queued),
    ] {
        if value == 0 {
            p.error(
                &format!("modbus_server.{key}"),
                "must be at least 1",
                Some(format!(
                    "remove it for the default, or write e.g. `{key}: 4`"
                )),
            );
        }
    }
    let share = share(&raw.share, p);
    if raw.max_wait.is_zero() {
        p.error(
            "modbus_server.max_wait",
            "a request must be allowed some time to wait for the line",
            Some("remove it for the default (1s), or write e.g. `max_wait: 500ms`".into()),
        );
    }
    if raw.units.is_empty() {
        p.error(
            "modbus_server.units",
            "no units: clients could reach nothing",
            Some("list the devices to share, e.g. `units: [{device: meter}]`".into()),
        );
    }
    let mut units: Vec<ServedUnit> = Vec::new();
    for (i, u) in raw.units.into_iter().enumerate() {
        let at = format!("modbus_server.units[{i}]");
        if let Some(unit) = served(u, &at, devices, &units, p) {
            units.push(unit);
        }
    }
    let open = !raw.listen.ip().is_loopback();
    if open
        && units
            .iter()
            .any(|u| u.write.iter().any(|g| g.clients.is_empty()))
    {
        p.warn(
            "modbus_server.listen",
            format!(
                "any host that reaches {} may write to a unit (a grant with `clients: any`)",
                raw.listen
            ),
            Some("name the clients that may write: `clients: [192.168.1.20]`".into()),
        );
    }
    if p.errors.len() > errors {
        return None;
    }
    Some(ServerSettings {
        listen: raw.listen,
        max_connections: raw.max_connections,
        max_connections_per_peer: raw.max_connections_per_peer,
        max_queued: raw.max_queued,
        share: share?,
        max_wait: raw.max_wait,
        idle_timeout: raw.idle_timeout.max(Duration::from_secs(1)),
        units,
    })
}

/// One unit: its device, unit id and grants.
fn served(
    u: schema::ServerUnit,
    at: &str,
    devices: &[Device],
    before: &[ServedUnit],
    p: &mut Problems,
) -> Option<ServedUnit> {
    let Some(d) = devices.iter().find(|d| d.name == u.device) else {
        let names: Vec<&str> = devices.iter().map(|d| d.name.as_str()).collect();
        let help = match crate::config::diagnostics::suggest(&u.device, names.iter().copied()) {
            Some(s) => format!("did you mean `{s}`?"),
            None => format!("name one of the devices: {}", names.join(", ")),
        };
        p.error(
            &format!("{at}.device"),
            format!("there is no device `{}`", u.device),
            Some(help),
        );
        return None;
    };
    let Some(modbus) = &d.modbus else {
        p.error(
            &format!("{at}.device"),
            format!("device `{}` is not a Modbus unit: only a device with `modbus:` can be reached through the server", d.name),
            Some("name a device that has a `modbus:` section (or a Modbus model)".into()),
        );
        return None;
    };
    if before.iter().any(|b| b.device == d.name) {
        p.error(
            &format!("{at}.device"),
            format!("device `{}` is listed twice", d.name),
            Some("keep one entry per device".into()),
        );
        return None;
    }
    let unit = u.unit.unwrap_or(modbus.unit);
    if unit == 0 {
        p.error(
            &format!("{at}.unit"),
            "unit 0 is the broadcast address, which gets no answer",
            Some("give it a unit id of 1-255".into()),
        );
        return None;
    }
    if let Some(b) = before.iter().find(|b| b.unit == unit) {
        p.error(
            &format!("{at}.unit"),
            format!(
                "unit {unit} is device `{}`'s already: clients could not tell them apart",
                b.device
            ),
            Some(format!(
                "give this one another id clients address it by, e.g. `unit: {}`",
                unit.saturating_add(100)
            )),
        );
        return None;
    }
    if u.cache.is_some_and(|c| c.is_zero()) {
        p.error(
            &format!("{at}.cache"),
            "a zero age caches nothing",
            Some("remove it to read the device each time, or write e.g. `cache: 2s`".into()),
        );
    }
    let read = match &u.read {
        None => vec![Access {
            clients: Vec::new(),
            tables: None,
        }],
        Some(list) => grants(list, &format!("{at}.read"), false, p)?,
    };
    let write = grants(&u.write, &format!("{at}.write"), true, p)?;
    Some(ServedUnit {
        device: d.name.clone(),
        unit,
        cache: u.cache,
        read,
        write,
    })
}

/// A list of grants; for writing, each must name its tables.
fn grants(raw: &[Grant], at: &str, writing: bool, p: &mut Problems) -> Option<Vec<Access>> {
    let mut out = Vec::new();
    let mut ok = true;
    for (i, g) in raw.iter().enumerate() {
        let at = format!("{at}[{i}]");
        let clients = clients(&g.clients, &format!("{at}.clients"), p);
        let lists = [&g.coils, &g.discretes, &g.holding, &g.input];
        let tables = if lists.iter().all(|l| l.is_none()) {
            if writing {
                p.error(
                    &at,
                    "a write grant must say which addresses may be written",
                    Some("add e.g. `holding: [\"0x0010-0x0011\"]` or `coils: [2]`".into()),
                );
                ok = false;
            }
            None
        } else {
            let mut tables: [Vec<RangeInclusive<u16>>; 4] = Default::default();
            for ((key, list), table) in ["coils", "discretes", "holding", "input"]
                .iter()
                .zip(lists)
                .zip(&mut tables)
            {
                for (j, a) in list.iter().flatten().enumerate() {
                    match range(a) {
                        Ok(r) => table.push(r),
                        Err(why) => {
                            p.error(&format!("{at}.{key}[{j}]"), why, Some("write an address (`16`, `\"0x10\"`) or a range (`\"16-31\"`, `\"0x10-0x1F\"`), 0-based as on the wire".into()));
                            ok = false;
                        }
                    }
                }
            }
            Some(tables)
        };
        match clients {
            Some(clients) => out.push(Access { clients, tables }),
            None => ok = false,
        }
    }
    ok.then_some(out)
}

/// `any` (empty) or the networks listed.
fn clients(raw: &Clients, at: &str, p: &mut Problems) -> Option<Vec<ipnet::IpNet>> {
    let help = || {
        Some("write `any`, or a list of addresses and networks: `[192.168.1.20, 10.0.0.0/24, \"::1\"]`".into())
    };
    let list = match raw {
        Clients::One(s) if s == "any" => return Some(Vec::new()),
        Clients::One(s) => vec![s.clone()],
        Clients::Many(v) => v.clone(),
    };
    let mut out = Vec::new();
    for s in &list {
        let net = s
            .parse::<ipnet::IpNet>()
            .or_else(|_| s.parse::<std::net::IpAddr>().map(ipnet::IpNet::from));
        match net {
            Ok(n) => out.push(n),
            Err(_) => {
                p.error(at, format!("`{s}` is not an address or a network"), help());
                return None;
            }
        }
    }
    if out.is_empty() {
        p.error(at, "an empty list grants nobody anything", help());
        return None;
    }
    Some(out)
}

/// `16`, `"0x10"`, `"16-31"`, `"0x10-0x1F"`.
fn range(a: &Addresses) -> Result<RangeInclusive<u16>, String> {
    let text = match a {
        Addresses::One(n) => return Ok(*n..=*n),
        Addresses::Range(s) => s.trim(),
    };
    let number = |s: &str| {
        let s = s.trim();
        match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
            Some(hex) => u16::from_str_radix(hex, 16),
            None => s.parse::<u16>(),
        }
        .map_err(|_| format!("`{s}` is not an address of 0-65535"))
    };
    match text.split_once('-') {
        None => number(text).map(|n| n..=n),
        Some((a, b)) => {
            let (a, b) = (number(a)?, number(b)?);
            if a > b {
                return Err(format!("`{text}` ends before it starts"));
            }
            Ok(a..=b)
        }
    }
}

/// `50%` or `0.5`, within 0..=1.
fn share(raw: &schema::Share, p: &mut Problems) -> Option<f64> {
    let value = match raw {
        schema::Share::Fraction(f) => Some(*f),
        schema::Share::Text(s) => s
            .trim()
            .strip_suffix('%')
            .and_then(|n| n.trim().parse::<f64>().ok())
            .map(|n| n / 100.0),
    };
    match value {
        Some(v) if (0.0..=1.0).contains(&v) => Some(v),
        _ => {
            p.error(
                "modbus_server.share",
                "must be a part of the line's time between 0% and 100%",
                Some("write e.g. `share: 50%` (or `0.5`)".into()),
            );
            None
        }
    }
}

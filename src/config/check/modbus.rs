//! A device's `modbus:`: its unit id, its points (each at its key when wrong), and the plan
//! that reads them, which becomes the device's polls; its framing and checksum are Modbus
//! RTU's. The rules it uses must be `points: true` rules naming its points.

use std::sync::Arc;
use std::time::Duration;

use super::Problems;
use crate::config::diagnostics::suggest;
use crate::config::model::Poll;
use crate::config::schema;
use crate::frames::checksum::{Checksum, ChecksumSpec};
use crate::modbus::plan::{plan, Limits};
use crate::modbus::{map, Unit};
use crate::rules::Rule;
use crate::serial::framing::Framing;

/// What a Modbus device is read with: the compiled unit, its polls, framing and checksum.
pub(super) struct Reading {
    pub unit: Arc<Unit>,
    pub polls: Vec<Poll>,
    pub framing: Framing,
    pub checksum: Checksum,
}

/// Checks `d.modbus` (which is set) and what it replaces: `poll:`, `framing:`, `checksum:`.
pub(super) fn check(d: &schema::Device, path: &str, p: &mut Problems) -> Option<Reading> {
    let m = d.modbus.as_ref()?;
    let at = format!("{path}.modbus");
    let mut ok = true;
    // 248-255 are reserved by the protocol, but some devices answer one of them whatever
    // their own address (Senseair S8: 254, "any sensor"): taken when alone on the line
    // (`buses` refuses it on a shared one).
    if m.unit == 0 {
        p.error(
            &format!("{at}.unit"),
            format!("unit {} is not a Modbus unit id", m.unit),
            Some(
                "write the device's address, 1 to 247 (0 is broadcast, which never answers)".into(),
            ),
        );
        ok = false;
    }
    ok &= replaced_keys(d, path, p);
    if m.timeout.is_zero() || m.every.is_zero() {
        p.error(
            &at,
            "modbus.every and modbus.timeout must be longer than 0",
            Some("write e.g. `every: 10s, timeout: 500ms`".into()),
        );
        ok = false;
    }
    if m.points.is_empty() {
        p.error(
            &format!("{at}.points"),
            "a Modbus device with no points reads nothing",
            Some("add e.g. `points: [{name: voltage, input: 0, type: f32}]`".into()),
        );
        ok = false;
    }
    let mut points = Vec::with_capacity(m.points.len());
    for (i, raw) in m.points.iter().enumerate() {
        let here = format!("{at}.points[{i}]");
        if raw.every.is_some_and(|e| e.is_zero()) {
            p.error(
                &format!("{here}.every"),
                format!("point `{}` is read every 0s", raw.name),
                Some("write how often it is read, e.g. `every: 1h`, or remove `every` to read it with the map (modbus.every)".into()),
            );
            ok = false;
        }
        if points.iter().any(|q: &map::Point| q.name == raw.name) {
            p.error(
                &format!("{here}.name"),
                format!("point name `{}` is used twice", raw.name),
                Some("give each point its own name: it is the rules' placeholder".into()),
            );
            ok = false;
        }
        match map::compile(raw) {
            Ok(point) => points.push(point),
            Err(e) => {
                let key = if e.key.is_empty() {
                    here
                } else {
                    format!("{here}.{}", e.key)
                };
                p.error(&key, e.message, Some(e.help));
                ok = false;
            }
        }
    }
    if !ok {
        return None;
    }
    let limits = Limits {
        max_gap: m.max_gap,
        max_registers: m.max_registers,
        max_bits: m.max_bits,
    };
    let intervals: Vec<Option<Duration>> = m.points.iter().map(|p| p.every).collect();
    let groups = map::group(&mut points, &intervals, m.every);
    let mut requests = plan(m.unit, &points, limits);
    if groups.len() > 1 {
        // Names stay unique (and say so in logs and `check`) when points are read at their
        // own intervals.
        for r in &mut requests {
            let every = groups.get(r.group).copied().unwrap_or(m.every);
            r.name = format!("{} every {}", r.name, humantime::format_duration(every));
        }
    }
    let polls = requests
        .iter()
        .map(|r| Poll {
            name: r.name.clone(),
            bytes: bytes::Bytes::from(r.bytes.clone()),
            every: groups.get(r.group).copied().unwrap_or(m.every),
            timeout: m.timeout,
            retries: m.retries,
            flush: true,
        })
        .collect();
    Some(Reading {
        unit: Arc::new(Unit {
            unit: m.unit,
            points,
            requests,
            groups: groups.len(),
        }),
        polls,
        framing: Framing::ModbusRtu(Some(m.unit)),
        checksum: ChecksumSpec::named("modbus")?.compile(),
    })
}

/// A Modbus device's `poll:`, `framing:` and `checksum:` come from its map: any other value
/// written for them is an error. False when there is one.
fn replaced_keys(d: &schema::Device, path: &str, p: &mut Problems) -> bool {
    let mut ok = true;
    if !d.poll.is_empty() {
        p.error(
            &format!("{path}.poll"),
            "a Modbus device is polled by its register map",
            Some("remove `poll:`; `modbus.every` sets how often the map is read".into()),
        );
        ok = false;
    }
    if !matches!(d.framing, Framing::Lines | Framing::ModbusRtu(_)) {
        p.error(
            &format!("{path}.framing"),
            format!(
                "a Modbus device's answers are Modbus RTU frames, not `{}`",
                d.framing.name()
            ),
            Some("remove `framing:`; it is set for Modbus devices".into()),
        );
        ok = false;
    }
    let modbus_crc = ChecksumSpec::named("modbus");
    let same = |c: &ChecksumSpec| {
        modbus_crc.as_ref().is_some_and(|m| {
            ChecksumSpec {
                label: m.label.clone(),
                ..c.clone()
            } == *m
        })
    };
    if d.checksum.as_ref().is_some_and(|c| !same(c)) {
        p.error(
            &format!("{path}.checksum"),
            "a Modbus device's answers carry Modbus RTU's CRC",
            Some("remove `checksum:`; it is set for Modbus devices".into()),
        );
        ok = false;
    }
    ok
}

/// The device's rules against its points: a Modbus device's rules are `points: true` rules,
/// and each point they name must be one of its points.
pub(super) fn rules(
    device: &str,
    unit: Option<&Unit>,
    rules: &[Arc<Rule>],
    names: &[String],
    path: &str,
    p: &mut Problems,
) {
    for (j, (rule, name)) in rules.iter().zip(names).enumerate() {
        let at = format!("{path}.rules[{j}]");
        match unit {
            Some(unit) => {
                if !rule.reads_points() {
                    p.error(
                        &at,
                        format!("rule `{name}` reads frames, but `{device}` is read by its register map"),
                        Some(format!("give rule `{name}` `points: true` and use the point names as placeholders")),
                    );
                    continue;
                }
                let known: Vec<&str> = unit.points.iter().map(|q| q.name.as_str()).collect();
                for used in rule.point_names() {
                    if !known.contains(&used) {
                        let near = suggest(used, known.iter().copied())
                            .map(|s| format!("did you mean {{{s}}}? "))
                            .unwrap_or_default();
                        p.error(
                            &at,
                            format!(
                                "rule `{name}` uses {{{used}}}, which is not a point of `{device}`"
                            ),
                            Some(format!("{near}points: {}", known.join(", "))),
                        );
                    }
                }
            }
            None if rule.reads_points() => p.error(
                &at,
                format!("rule `{name}` reads Modbus points, but `{device}` has no `modbus:`"),
                Some(
                    "use it on a Modbus device, or give the rule a `match`, `json` or `fields`"
                        .into(),
                ),
            ),
            None => {}
        }
    }
}

/// The device's `point:` commands against its points: only a Modbus device has points, and
/// only coils and holding registers can be written.
pub(super) fn commands(
    device: &str,
    unit: Option<&Unit>,
    commands: &[crate::rules::command::DeviceCommand],
    path: &str,
    p: &mut Problems,
) {
    for (j, c) in commands.iter().enumerate() {
        let Some(point) = c.command.point() else {
            continue;
        };
        let at = format!("{path}.commands[{j}]");
        let name = &c.command.name;
        let Some(unit) = unit else {
            p.error(
                &at,
                format!("command `{name}` writes Modbus point `{point}`, but `{device}` has no `modbus:`"),
                Some("use `write:` or `write_hex:` for a device that is not a Modbus unit".into()),
            );
            continue;
        };
        let known: Vec<&str> = unit.points.iter().map(|q| q.name.as_str()).collect();
        match unit.points.iter().find(|q| q.name == point) {
            None => {
                let near = suggest(point, known.iter().copied())
                    .map(|s| format!("did you mean `{s}`? "))
                    .unwrap_or_default();
                p.error(
                    &at,
                    format!(
                        "command `{name}` writes point `{point}`, which `{device}` does not have"
                    ),
                    Some(format!("{near}points: {}", known.join(", "))),
                );
            }
            Some(q)
                if !matches!(
                    q.table,
                    crate::modbus::Table::Coils | crate::modbus::Table::Holding
                ) || matches!(q.kind, map::Kind::Bit(_)) =>
            {
                p.error(
                    &at,
                    format!("command `{name}` writes point `{point}`, a {} that cannot be written", q.table.name()),
                    Some("write coils and whole holding registers; input registers and discrete inputs are read-only".into()),
                );
            }
            Some(_) => {}
        }
    }
}

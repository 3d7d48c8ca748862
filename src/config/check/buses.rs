//! Several devices on one port: an RS-485 bus, or several protocols of one talking device. They
//! must agree on the line settings. On a bus each must be asked (polls or commands: on a shared
//! line a device speaks only when spoken to), and the polls must fit the line's time even when
//! devices do not answer, which `check` computes from the request bytes at the line speed, the
//! timeouts, retries and turnarounds. Several protocols (none polled) must be told apart by
//! their frames' start bytes.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::Problems;
use crate::config::model::Device;

/// The cross-device checks of every port; `names` are the devices in file order (for paths).
pub(super) fn check(devices: &[Device], names: &[String], p: &mut Problems) {
    let mut buses: BTreeMap<PathBuf, Vec<&Device>> = BTreeMap::new();
    for d in devices {
        if let Some(key) = d.source.key() {
            buses.entry(key).or_default().push(d);
        }
    }
    let at = |d: &Device| {
        let i = names.iter().position(|n| *n == d.name).unwrap_or(0);
        format!("devices[{i}]")
    };
    for (port, members) in &buses {
        let first = members[0];
        if members.len() > 1 {
            for d in &members[1..] {
                if d.spec.entry.line() != first.spec.entry.line() {
                    p.error(
                        &format!("{}.baud", at(d)),
                        format!(
                            "devices `{}` and `{}` share {} but not its line settings (baud, data_bits, parity, stop_bits, flow_control)",
                            first.name,
                            d.name,
                            port.display()
                        ),
                        Some("devices on one bus speak at one speed: give them the same line settings".into()),
                    );
                }
            }
            for d in members {
                if let Some(unit) = d.modbus.as_ref().map(|u| u.unit).filter(|u| *u > 247) {
                    p.error(
                        &format!("{}.modbus.unit", at(d)),
                        format!(
                            "unit {unit} of `{}` is a reserved address, which a device answers whatever its own: not on {}, which it shares",
                            d.name,
                            port.display()
                        ),
                        Some("write the device's own address, 1 to 247 (set it first with the device alone on the line)".into()),
                    );
                }
            }
            if crate::config::model::mixed(members) {
                protocols(port, members, &at, p);
            } else {
                for d in members {
                    if d.polls.is_empty() && d.commands.is_empty() {
                        p.error(
                            &at(d),
                            format!(
                                "device `{}` shares {} with other devices but is never asked: on a shared line a device answers only requests",
                                d.name,
                                port.display()
                            ),
                            Some("add `poll:` requests (or `commands:`), or give it its own port; devices that all talk by themselves (one receiver's NMEA and UBX) may share a port when none is polled".into()),
                        );
                    }
                }
            }
        }
        load(port, members, &at, p);
    }
}

/// Several protocols of one talking device: their frames must be told apart by their start
/// bytes, with at most one protocol cut by a delimiter.
fn protocols(
    port: &std::path::Path,
    members: &[&Device],
    at: &dyn Fn(&Device) -> String,
    p: &mut Problems,
) {
    let framings: Vec<&crate::serial::framing::Framing> =
        members.iter().map(|d| &d.framing).collect();
    if let Err(why) = crate::serial::framing::can_share(&framings) {
        let last = members[members.len() - 1];
        let names: Vec<&str> = members.iter().map(|d| d.name.as_str()).collect();
        p.error(
            &format!("{}.framing", at(last)),
            format!(
                "devices {} read {} as several protocols (none is polled), but {why}",
                names.join(", "),
                port.display()
            ),
            Some("each protocol's frames must start with their own start bytes (`telegram`, `length`, `fixed` with `start_hex`); one may be `lines`, `delimiter` or `cobs`, and takes the rest".into()),
        );
    }
}

/// Warns when the polls of one port cannot keep their intervals while devices time out. The
/// warning names the key the user wrote that asks the most of the line: a device's `poll:`, or
/// a Modbus device's `modbus.every` (its polls are made from its register map).
fn load(
    port: &std::path::Path,
    members: &[&Device],
    at: &dyn Fn(&Device) -> String,
    p: &mut Problems,
) {
    let mut share = 0.0;
    let mut cycle = Duration::ZERO;
    let mut fastest: Option<Duration> = None;
    let mut busiest: Option<(f64, &Device)> = None;
    for d in members {
        let mut mine = 0.0;
        for poll in &d.polls {
            let attempt = d.serial.wire_time(poll.bytes.len()) + poll.timeout;
            let worst = attempt * (1 + poll.retries) + d.turnaround;
            cycle += worst;
            mine += worst.as_secs_f64() / poll.every.as_secs_f64().max(1e-6);
            fastest = Some(fastest.map_or(poll.every, |f| f.min(poll.every)));
        }
        share += mine;
        if busiest.is_none_or(|(most, _)| mine > most) {
            busiest = Some((mine, d));
        }
    }
    if share <= 1.0 {
        return;
    }
    let key = match busiest {
        Some((_, d)) if d.modbus.is_some() => format!("{}.modbus.every", at(d)),
        Some((_, d)) => format!("{}.poll", at(d)),
        None => format!("{}.poll", at(members[0])),
    };
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    p.warn(
        &key,
        format!(
            "the polls on {} cannot keep their intervals when devices do not answer: they need {:.0}% of the line's time (all polls once take {:.0} ms at worst: request bytes at the line speed, timeout x (1 + retries), turnaround; the fastest is every {:.0} ms)",
            port.display(),
            share * 100.0,
            ms(cycle),
            ms(fastest.unwrap_or_default()),
        ),
        Some(format!(
            "lengthen the intervals by at least {:.0}% or shorten the timeouts; a device that answers takes less, but one that is unplugged costs its full timeout",
            (share - 1.0) * 100.0
        )),
    );
}

//! `devices:`: each device's name, port, line settings and framing, and the rules and commands
//! it names; the result is the device with its topics rendered and its rules shared.

use std::collections::HashSet;

use super::gateway::GatewayParts;
use super::rules::{Library, Lookup};
use super::{check_port, name_problem, Problems};
use crate::config::model::{Device, DeviceSpec, PortSource, SerialSettings};
use crate::config::schema;
use crate::rules::command::DeviceCommand;
use crate::rules::RuleSet;
use crate::serial::framing::Framing;

/// What the devices checked so far claim: a name is one device's (ports may be shared: a bus,
/// checked in [`super::buses`]).
#[derive(Default)]
struct Claims {
    names: HashSet<String>,
}

/// Checks every device; only devices without errors are returned (the file is refused anyway
/// when any has one, so the cross-device checks see the good ones).
pub(super) fn check(
    raw: Vec<schema::Device>,
    gw: &GatewayParts,
    library: &mut Library,
    p: &mut Problems,
) -> Vec<Device> {
    let mut claims = Claims::default();
    let mut devices = Vec::with_capacity(raw.len());
    for (i, d) in raw.into_iter().enumerate() {
        if let Some(device) = one(d, &format!("devices[{i}]"), gw, library, &mut claims, p) {
            devices.push(device);
        }
    }
    devices
}

fn one(
    d: schema::Device,
    path: &str,
    gw: &GatewayParts,
    library: &mut Library,
    claims: &mut Claims,
    p: &mut Problems,
) -> Option<Device> {
    if let Some(why) = name_problem(&d.name) {
        p.error(
            &format!("{path}.name"),
            format!("device name `{}` {why}", d.name),
            None,
        );
    }
    if !claims.names.insert(d.name.clone()) {
        p.error(
            &format!("{path}.name"),
            format!("device name `{}` is used twice", d.name),
            Some("give each device its own name".into()),
        );
    }
    let source = source(&d, path, p);
    let serial = serial(&d, path, p);
    let (mut polls, turnaround) = super::polls::check(&d, serial.as_ref(), path, p);
    framing(&d, path, p);
    let rules = rules(&d, path, library, p);
    let commands = commands(&d, path, &gw.gateway.id, library, p);
    let modbus = d
        .modbus
        .as_ref()
        .and_then(|_| super::modbus::check(&d, path, p));
    let mut framing = d.framing.clone();
    let mut checksum = d.checksum.as_ref().map(|c| c.compile());
    if let Some(m) = &modbus {
        polls = m.polls.clone();
        framing = m.framing.clone();
        checksum = Some(m.checksum.clone());
    }
    modbus_tcp(&d, &framing, path, p);
    if d.modbus.is_none() || modbus.is_some() {
        let names: Vec<String> = d
            .rules
            .iter()
            .filter(|r| matches!(library.rule(r), Lookup::Found(_)))
            .cloned()
            .collect();
        let unit = modbus.as_ref().map(|m| m.unit.as_ref());
        super::modbus::rules(&d.name, unit, &rules, &names, path, p);
        super::modbus::commands(&d.name, unit, &commands, path, p);
    }
    if d.rules.is_empty() && d.commands.is_empty() && d.poll.is_empty() && d.modbus.is_none() {
        p.warn(
            path,
            format!("device `{}` has no rules: every frame is unmatched", d.name),
            Some("add e.g. `rules: [climate]`".into()),
        );
    }
    let id = &gw.gateway.id;
    let state_topic = gw
        .state_topic
        .as_ref()
        .map(|t| t.render_static(id, &d.name));
    let unmatched_topic = gw
        .unmatched_topic
        .as_ref()
        .map(|t| t.render_static(id, &d.name));
    for (key, topic) in [
        ("gateway.state_topic", &state_topic),
        ("gateway.unmatched_topic", &unmatched_topic),
    ] {
        if let Some(why) = topic.as_deref().and_then(crate::message::topic_problem) {
            p.error(
                key,
                format!("for device `{}`: {why}", d.name),
                Some("write a topic such as serial2mqtt/{gateway}/devices/{device}/state".into()),
            );
        }
    }
    let state_topic = state_topic.unwrap_or_default();
    let (rule_defs, command_defs) = library.definitions(&d.rules, &d.commands);
    let spec = DeviceSpec {
        entry: d.clone(),
        rules: rule_defs,
        commands: command_defs,
        gateway: id.clone(),
        topics: (state_topic.clone(), unmatched_topic.clone()),
    };
    Some(Device {
        spec,
        state_topic,
        unmatched_topic,
        name: d.name,
        source: source?,
        serial: serial?,
        framing,
        max_frame: d.max_frame,
        checksum,
        polls,
        modbus: modbus.map(|m| m.unit),
        offline_after: d.offline_after,
        offline_poll: d.offline_poll,
        turnaround,
        rules: RuleSet::new(rules),
        commands,
    })
}

/// A `modbus-tcp://` port carries Modbus requests only: its device must speak Modbus RTU (a
/// `modbus:` map, or polls with `modbus_rtu` framing), which the link converts.
fn modbus_tcp(d: &schema::Device, framing: &Framing, path: &str, p: &mut Problems) {
    use crate::serial::link::address::{Address, Transport};
    let Some(port) = &d.port else { return };
    let Ok(Address::Net {
        transport: Transport::ModbusTcp,
        ..
    }) = Address::parse(port)
    else {
        return;
    };
    if !matches!(framing, Framing::ModbusRtu(_)) {
        p.error(
            &format!("{path}.port"),
            format!(
                "device `{}` is on {} but does not speak Modbus (its framing is `{}`)",
                d.name,
                port.display(),
                framing.name()
            ),
            Some("give it a `modbus:` map (or `framing: modbus_rtu` and polls); a serial server that passes any bytes is tcp://HOST:PORT".into()),
        );
    }
}

/// `port` or `simulate`: exactly one.
fn source(d: &schema::Device, path: &str, p: &mut Problems) -> Option<PortSource> {
    match (&d.port, &d.simulate) {
        (Some(port), None) => {
            check_port(port, &format!("{path}.port"), p);
            Some(PortSource::Path(port.clone()))
        }
        (None, Some(sim)) => {
            if !(0.0..=1.0).contains(&sim.noise) {
                p.error(
                    &format!("{path}.simulate.noise"),
                    format!("noise {} is not a share of frames", sim.noise),
                    Some("write a number from 0 (a clean line) to 1 (every frame garbled), e.g. 0.05".into()),
                );
                return None;
            }
            Some(PortSource::Simulated(sim.clone()))
        }
        (Some(_), Some(_)) => {
            p.error(
                path,
                format!("device `{}` sets both `port` and `simulate`", d.name),
                Some(
                    "keep `port` for a real device, or `simulate` for the built-in simulator"
                        .into(),
                ),
            );
            None
        }
        (None, None) => {
            p.error(
                path,
                format!("device `{}` has no `port`", d.name),
                Some(
                    "add e.g. `port: /dev/serial/by-id/usb-...` (see `ls -l /dev/serial/by-id/`)"
                        .into(),
                ),
            );
            None
        }
    }
}

/// Baud rate, data bits, parity, stop bits, flow control.
fn serial(d: &schema::Device, path: &str, p: &mut Problems) -> Option<SerialSettings> {
    let data_bits = match d.data_bits {
        5 => Some(tokio_serial::DataBits::Five),
        6 => Some(tokio_serial::DataBits::Six),
        7 => Some(tokio_serial::DataBits::Seven),
        8 => Some(tokio_serial::DataBits::Eight),
        n => {
            p.error(
                &format!("{path}.data_bits"),
                format!("{n} data bits are not possible"),
                Some("write 5, 6, 7 or 8".into()),
            );
            None
        }
    };
    let stop_bits = match d.stop_bits {
        1 => Some(tokio_serial::StopBits::One),
        2 => Some(tokio_serial::StopBits::Two),
        n => {
            p.error(
                &format!("{path}.stop_bits"),
                format!("{n} stop bits are not possible"),
                Some("write 1 or 2".into()),
            );
            None
        }
    };
    if d.baud == 0 {
        p.error(
            &format!("{path}.baud"),
            "baud must be above 0",
            Some("write e.g. baud: 115200".into()),
        );
    }
    let parity = match d.parity {
        schema::Parity::None => tokio_serial::Parity::None,
        schema::Parity::Odd => tokio_serial::Parity::Odd,
        schema::Parity::Even => tokio_serial::Parity::Even,
    };
    let flow_control = match d.flow_control {
        schema::FlowControl::None => tokio_serial::FlowControl::None,
        schema::FlowControl::Software => tokio_serial::FlowControl::Software,
        schema::FlowControl::Hardware => tokio_serial::FlowControl::Hardware,
    };
    Some(SerialSettings {
        baud: d.baud,
        data_bits: data_bits?,
        parity,
        stop_bits: stop_bits?,
        flow_control,
    })
}

/// The framing's own rules, a text delimiter that is not the byte it looks like, and frames
/// that fit `max_frame`.
fn framing(d: &schema::Device, path: &str, p: &mut Problems) {
    if let Err(e) = d.framing.validate() {
        p.error(&format!("{path}.framing"), e, None);
    }
    if let Framing::Delimiter(bytes) = &d.framing {
        // `"\xAB"` in YAML is the character U+00AB: the two bytes C2 AB on the wire.
        if let Some(c) = std::str::from_utf8(bytes)
            .ok()
            .and_then(|t| t.chars().find(|c| ('\u{80}'..='\u{ff}').contains(c)))
        {
            p.warn(
                &format!("{path}.framing"),
                format!(
                    "the delimiter contains the character U+{:04X}, which is {} bytes on the wire ({}), not the byte {:02X}",
                    c as u32,
                    c.len_utf8(),
                    hex::encode_upper(c.to_string()),
                    c as u32
                ),
                Some(format!(
                    "for the single byte {:02X}, write `framing: {{delimiter_hex: \"{:02X}\"}}`",
                    c as u32, c as u32
                )),
            );
        }
    }
    if let Framing::Fixed(f) = &d.framing {
        let n = f.size;
        if n > d.max_frame {
            p.error(
                &format!("{path}.framing"),
                format!(
                    "fixed frames of {n} bytes are larger than max_frame ({})",
                    d.max_frame
                ),
                Some(format!("raise max_frame to at least {n}")),
            );
        }
    }
    if d.max_frame == 0 || d.max_frame > 16 * 1024 * 1024 {
        p.error(
            &format!("{path}.max_frame"),
            format!("{} is out of range", d.max_frame),
            Some("write a size in bytes between 1 and 16777216".into()),
        );
    }
}

/// The rules the device names, in its order; a binary rule reading past a fixed frame is an
/// error (it could never match).
fn rules(
    d: &schema::Device,
    path: &str,
    library: &mut Library,
    p: &mut Problems,
) -> Vec<std::sync::Arc<crate::rules::Rule>> {
    let mut rules = Vec::with_capacity(d.rules.len());
    for (j, r) in d.rules.iter().enumerate() {
        match library.rule(r) {
            Lookup::Found(rule) => {
                if let (Framing::Fixed(f), Some(need)) = (&d.framing, rule.min_len()) {
                    if need > f.size {
                        p.error(
                            &format!("{path}.rules[{j}]"),
                            format!(
                                "rule `{r}` reads bytes up to {need}, past the end of this device's {}-byte frames: it can never match",
                                f.size
                            ),
                            Some(format!(
                                "check the fields' offsets and types in rule `{r}`, or the frame size in `framing: {{fixed: {}}}`",
                                f.size
                            )),
                        );
                    }
                }
                rules.push(rule);
            }
            Lookup::Broken => {}
            Lookup::Missing(help) => p.error(
                &format!("{path}.rules[{j}]"),
                format!("device `{}` uses rule `{r}`, which is not defined", d.name),
                Some(help),
            ),
        }
    }
    rules
}

/// The commands the device names, with their filters expanded for it; commands that share no
/// first topic level get a warning (keeping their order costs a look at every message).
fn commands(
    d: &schema::Device,
    path: &str,
    gateway: &str,
    library: &mut Library,
    p: &mut Problems,
) -> Vec<DeviceCommand> {
    let mut out = Vec::with_capacity(d.commands.len());
    for (j, c) in d.commands.iter().enumerate() {
        match library.command(c) {
            Lookup::Found(command) => out.push(command.for_device(gateway, &d.name)),
            Lookup::Broken => {}
            Lookup::Missing(help) => p.error(
                &format!("{path}.commands[{j}]"),
                format!(
                    "device `{}` uses command `{c}`, which is not defined",
                    d.name
                ),
                Some(help),
            ),
        }
    }
    let filters: Vec<String> = out.iter().map(|c| c.filter.clone()).collect();
    if filters.len() > 1 && crate::downlink::covers(std::slice::from_ref(&filters)) == ["#"] {
        p.warn(
            &format!("{path}.commands"),
            format!(
                "the commands of `{}` share no first topic level ({}): to keep their order the gateway must look at every message on its broker",
                d.name,
                filters.join(", ")
            ),
            Some("give them a common prefix, e.g. `cmd/{gateway}/{device}/...`".into()),
        );
    }
    out
}

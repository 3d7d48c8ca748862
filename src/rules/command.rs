//! Commands: the downlink rules that turn an MQTT message into bytes written to a device.
//!
//! Compiled once from `commands:`, like the uplink rules: an optional regex the payload must
//! match (its named captures become placeholders), a template of what to write (text, or hex
//! for binary devices), whether to wrap the bytes in the device's framing, and the filter and
//! reply topic whose `{gateway}`/`{device}` are expanded per device. Rendering never fails
//! silently: a payload that does not match, a hex template that does not decode or bytes the
//! framing cannot carry give a sentence that goes to the reply topic and the log.

use std::sync::Arc;
use std::time::SystemTime;

use regex::Regex;

use super::template::{Builtin, Builtins, NoValues, Span, Template, TemplateError, Var, BUILTINS};
use super::{err, Captures, CompileError};
use crate::config::diagnostics::suggest;
use crate::config::schema;
use crate::homeassistant::entity::{Entity, COMMAND_COMPONENTS};
use crate::message::{filter_problem, topic_problem};
use crate::serial::framing::{encode_frame, Framing};

/// Extra placeholder names a command's `write` has: the MQTT payload, as text and as hex.
const PAYLOAD_NAMES: [&str; 2] = ["payload", "payload_hex"];

/// What is written, before the optional framing.
#[derive(Debug)]
enum Write {
    /// The rendered text's bytes.
    Text(Template),
    /// The rendered text decoded from hex (whitespace ignored).
    Hex(Template),
    /// The payload written to this Modbus point by its device's unit.
    Point(String),
}

/// One compiled command.
#[derive(Debug)]
pub struct Command {
    /// The command's name in the config.
    pub name: String,
    subscribe: Template,
    matcher: Option<Regex>,
    write: Write,
    encode: bool,
    /// The payload and captures in `write` may carry control characters (`allow_control`).
    allow_control: bool,
    reply_topic: Option<Template>,
    /// Announced to Home Assistant as this entity (its command topic is the filter).
    pub homeassistant: Option<Entity>,
}

/// A command as one device uses it: filter and reply topic expanded for that device.
#[derive(Debug, Clone)]
pub struct DeviceCommand {
    /// The compiled command.
    pub command: Arc<Command>,
    /// The MQTT filter its messages arrive on.
    pub filter: String,
    /// Where `ok` / `error: …` goes, if anywhere.
    pub reply_topic: Option<String>,
}

/// `subscribe:`: a filter once `{gateway}` and `{device}` are filled in.
fn subscribe(name: &str, text: &str, errors: &mut Vec<CompileError>) -> Option<Template> {
    match Template::parse_static(text, "`subscribe`") {
        Ok(t) => {
            if let Some(why) = filter_problem(&t.render_static("gw", "dev")) {
                errors.push(err(
                    "subscribe",
                    format!("command `{name}`: `{text}` is not an MQTT filter: {why}"),
                    Some("write e.g. subscribe: \"cmd/{gateway}/{device}/set\"".into()),
                ));
            }
            Some(t)
        }
        Err(e) => {
            errors.push(err(
                "subscribe",
                format!("command `{name}`: {}", e.message),
                e.help,
            ));
            None
        }
    }
}

/// `reply_topic:`: a topic once `{gateway}` and `{device}` are filled in.
fn reply_topic(name: &str, text: Option<&str>, errors: &mut Vec<CompileError>) -> Option<Template> {
    match Template::parse_static(text?, "`reply_topic`") {
        Ok(t) => {
            if let Some(why) = topic_problem(&t.render_static("gw", "dev")) {
                errors.push(err(
                    "reply_topic",
                    format!("command `{name}`: `{}` is not a topic: {why}", text?),
                    Some("write e.g. reply_topic: \"cmd/{gateway}/{device}/result\"".into()),
                ));
            }
            Some(t)
        }
        Err(e) => {
            errors.push(err(
                "reply_topic",
                format!("command `{name}`: {}", e.message),
                e.help,
            ));
            None
        }
    }
}

/// `match:` on the payload: the regex and its capture names by index.
fn payload_regex(
    name: &str,
    pattern: &str,
    errors: &mut Vec<CompileError>,
) -> (Option<Regex>, Vec<String>) {
    let mut slots: Vec<String> = Vec::new();
    match Regex::new(pattern) {
        Ok(re) => {
            for (i, n) in re.capture_names().enumerate() {
                if let Some(n) = n {
                    if BUILTINS.contains(&n) || PAYLOAD_NAMES.contains(&n) {
                        errors.push(err(
                            "match",
                            format!("command `{name}`: capture name `{n}` is also a built-in placeholder"),
                            Some(format!("rename the capture, e.g. (?P<{n}_value>...)")),
                        ));
                    }
                    slots.resize(i + 1, String::new());
                    slots[i] = n.to_owned();
                }
            }
            (Some(re), slots)
        }
        Err(e) => {
            errors.push(err(
                "match",
                format!("command `{name}`: the regex does not compile: {e}"),
                Some("e.g. match: '^(?P<state>ON|OFF)$' (single quotes keep backslashes)".into()),
            ));
            (None, slots)
        }
    }
}

/// What a placeholder of a command may name: the payload, a capture, a built-in.
fn resolve(n: &str, slots: &[String]) -> Result<Var, TemplateError> {
    match n {
        "payload" => return Ok(Var::Builtin(Builtin::Frame)),
        "payload_hex" => return Ok(Var::Builtin(Builtin::FrameHex)),
        _ => {}
    }
    if let Some(i) = slots.iter().position(|s| s == n) {
        return Ok(Var::Slot(i));
    }
    let known: Vec<&str> = BUILTINS
        .iter()
        .copied()
        .chain(PAYLOAD_NAMES)
        .chain(slots.iter().map(String::as_str).filter(|s| !s.is_empty()))
        .collect();
    let help = match suggest(n, known.iter().copied()) {
        Some(s) => format!("did you mean {{{s}}}?"),
        None => format!(
            "use {{payload}}, a named capture of `match`, or one of: {}",
            known.join(", ")
        ),
    };
    Err(TemplateError {
        message: format!("placeholder {{{n}}} names nothing"),
        help: Some(help),
    })
}

/// `write:` (text) or `write_hex:` (hex pairs): exactly one of them.
fn write(
    name: &str,
    raw: &schema::Command,
    resolve: &dyn Fn(&str) -> Result<Var, TemplateError>,
    errors: &mut Vec<CompileError>,
) -> Option<Write> {
    if let Some(point) = &raw.point {
        if raw.write.is_some() || raw.write_hex.is_some() || raw.encode {
            errors.push(err(
                "point",
                format!("command `{name}` writes Modbus point `{point}`: it has no `write`, `write_hex` or `encode`"),
                Some("keep `point:` for a Modbus device, or `write:` for other devices".into()),
            ));
            return None;
        }
        return Some(Write::Point(point.clone()));
    }
    let (key, text) = match (&raw.write, &raw.write_hex) {
        (Some(_), Some(_)) => {
            errors.push(err(
                "",
                format!("command `{name}` sets both `write` and `write_hex`"),
                Some("keep `write` for text, or `write_hex` for binary bytes".into()),
            ));
            return None;
        }
        (None, None) => {
            errors.push(err(
                "",
                format!("command `{name}` has no `write`"),
                Some(
                    "add e.g. write: \"R1={state}\\r\\n\" (or write_hex: \"01 05 {payload_hex}\")"
                        .into(),
                ),
            ));
            return None;
        }
        (Some(text), None) => ("write", text),
        (None, Some(text)) => ("write_hex", text),
    };
    let t = match Template::parse(text, resolve) {
        Ok(t) => t,
        Err(e) => {
            errors.push(err(key, format!("command `{name}`: {}", e.message), e.help));
            return None;
        }
    };
    if key == "write" {
        return Some(Write::Text(t));
    }
    let lits: String = t.literals().collect();
    if lits
        .chars()
        .any(|c| !c.is_ascii_hexdigit() && !c.is_whitespace())
    {
        errors.push(err(
            "write_hex",
            format!("command `{name}`: `{text}` has characters that are not hex digits"),
            Some("write bytes as hex pairs, e.g. write_hex: \"01 05 00 ff\"".into()),
        ));
    }
    Some(Write::Hex(t))
}

/// `homeassistant:` of a command: a valid entity on a plain topic (Home Assistant publishes to
/// one topic, never a wildcard).
fn entity(name: &str, raw: &schema::Command, errors: &mut Vec<CompileError>) -> Option<Entity> {
    match Entity::compile(raw.homeassistant.as_ref()?, &COMMAND_COMPONENTS) {
        Ok(e) => {
            if raw.subscribe.contains(['+', '#']) {
                errors.push(err(
                    "homeassistant",
                    format!("command `{name}`: Home Assistant publishes to one topic, but `{}` is a wildcard filter", raw.subscribe),
                    Some("subscribe to a plain topic, e.g. \"cmd/{gateway}/{device}/set\"".into()),
                ));
            }
            Some(e)
        }
        Err((message, help)) => {
            errors.push(err(
                "homeassistant",
                format!("command `{name}`: {message}"),
                Some(help),
            ));
            None
        }
    }
}

impl Command {
    /// Compiles the command named `name`; every problem found is returned.
    pub fn compile(name: &str, raw: &schema::Command) -> Result<Self, Vec<CompileError>> {
        let mut errors = Vec::new();
        let subscribe = subscribe(name, &raw.subscribe, &mut errors);
        let reply_topic = reply_topic(name, raw.reply_topic.as_deref(), &mut errors);
        let (matcher, slots) = match &raw.match_ {
            None => (None, Vec::new()),
            Some(pattern) => payload_regex(name, pattern, &mut errors),
        };
        let resolve = |n: &str| resolve(n, &slots);
        let write = write(name, raw, &resolve, &mut errors);
        if raw.allow_control && raw.write.is_none() {
            errors.push(err(
                "allow_control",
                format!("command `{name}` sets allow_control, which is only for `write` (text): `write_hex` writes the bytes it is given and `point:` a typed value"),
                Some("remove allow_control, or write text with write:".into()),
            ));
        }
        let homeassistant = entity(name, raw, &mut errors);
        match (subscribe, write) {
            (Some(subscribe), Some(write)) if errors.is_empty() => Ok(Self {
                homeassistant,
                name: name.to_owned(),
                subscribe,
                matcher,
                write,
                encode: raw.encode,
                allow_control: raw.allow_control,
                reply_topic,
            }),
            _ => Err(errors),
        }
    }

    /// The command as `device` of `gateway` uses it.
    pub fn for_device(self: &Arc<Self>, gateway: &str, device: &str) -> DeviceCommand {
        DeviceCommand {
            command: Arc::clone(self),
            filter: self.subscribe.render_static(gateway, device),
            reply_topic: self
                .reply_topic
                .as_ref()
                .map(|t| t.render_static(gateway, device)),
        }
    }

    /// The bytes to write for one MQTT payload, or why there are none (for the reply topic).
    pub fn render(
        &self,
        gateway: &str,
        device: &str,
        framing: &Framing,
        payload: &[u8],
    ) -> Result<Vec<u8>, String> {
        let env = Builtins {
            gateway,
            device,
            frame: payload,
            now: SystemTime::now(),
            request: "",
        };
        let Some(template) = self.template() else {
            return Err("a Modbus point is written by its device's unit, not rendered".into());
        };
        let (text, spans) = match &self.matcher {
            None => template.render_spans(&env, &NoValues),
            Some(re) => {
                let Ok(s) = std::str::from_utf8(payload) else {
                    return Err("the payload is not UTF-8 text".into());
                };
                let Some(caps) = re.captures(s) else {
                    return Err(format!("the payload does not match `{}`", re.as_str()));
                };
                template.render_spans(&env, &Captures(caps))
            }
        }
        .ok_or_else(|| "the payload lacks a value the command uses".to_owned())?;
        if matches!(self.write, Write::Text(_)) && !self.allow_control {
            self.refuse_smuggled(&text, &spans, framing)?;
        }
        let bytes = match &self.write {
            Write::Text(_) | Write::Point(_) => text.into_bytes(),
            Write::Hex(_) => {
                let digits: String = text.chars().filter(|c| !c.is_whitespace()).collect();
                hex::decode(&digits).map_err(|e| format!("`{digits}` is not hex: {e}"))?
            }
        };
        if !self.encode {
            return Ok(bytes);
        }
        let unframeable = match framing {
            Framing::Lines if bytes.contains(&b'\n') => Some("contains a line break"),
            Framing::Delimiter(d) if contains(&bytes, d) => Some("contains the delimiter"),
            Framing::Fixed(f) if bytes.len() != f.size => {
                Some("does not have the fixed frame size")
            }
            _ => None,
        };
        if let Some(why) = unframeable {
            return Err(format!(
                "{} bytes to write {why} of the device's {} framing",
                bytes.len(),
                framing.name()
            ));
        }
        let mut out = Vec::with_capacity(bytes.len() + 8);
        encode_frame(framing, &bytes, &mut out);
        if out.is_empty() && !bytes.is_empty() {
            return Err(format!(
                "{} bytes do not fit the device's {} framing",
                bytes.len(),
                framing.name()
            ));
        }
        Ok(out)
    }

    /// Refuses a text whose values from the sender (the payload, a capture of it) carry a
    /// control character or one of the device's frame markers: the device would take what
    /// follows as another command (`1\nR1=ON` to a fan's `FAN={payload}\n`). The template's own
    /// text is the config's and is not checked; `{gateway}`, `{device}` and `{now}` are not the
    /// sender's either.
    fn refuse_smuggled(
        &self,
        text: &str,
        spans: &[Span<'_>],
        framing: &Framing,
    ) -> Result<(), String> {
        const REFUSED: &str = "it could end the command and start another, so nothing is written (a command that must pass it says allow_control: true)";
        let senders: Vec<(String, &std::ops::Range<usize>)> = spans
            .iter()
            .filter_map(|(var, range)| {
                let who = match var {
                    Var::Builtin(Builtin::Frame) => "the payload".to_owned(),
                    Var::Builtin(Builtin::FrameHex) => "{payload_hex}".to_owned(),
                    Var::Slot(i) => {
                        let name = self
                            .matcher
                            .as_ref()
                            .and_then(|re| re.capture_names().nth(*i).flatten())
                            .unwrap_or("a capture");
                        format!("the value of {{{name}}}")
                    }
                    _ => return None,
                };
                Some((who, range))
            })
            .collect();
        let bytes = text.as_bytes();
        for (who, range) in &senders {
            let value = bytes.get((*range).clone()).unwrap_or_default();
            if let Some(&b) = value.iter().find(|&&b| b < 0x20 || b == 0x7f) {
                return Err(format!(
                    "{who} holds {} (0x{b:02X}): {REFUSED}",
                    control_name(b)
                ));
            }
        }
        for (marker, what) in framing.markers() {
            let found = bytes
                .windows(marker.len())
                .enumerate()
                .filter(|(_, w)| *w == marker)
                .find_map(|(i, _)| {
                    let at = i..i + marker.len();
                    senders
                        .iter()
                        .find(|(_, r)| r.start < at.end && at.start < r.end)
                });
            if let Some((who, _)) = found {
                let shown = match std::str::from_utf8(marker) {
                    Ok(s) if s.bytes().all(|b| (0x20..0x7f).contains(&b)) => format!("{s:?}"),
                    _ => format!("0x{}", hex::encode_upper(marker)),
                };
                return Err(format!(
                    "{who} holds the device's {what} {shown} ({} framing): {REFUSED}",
                    framing.name()
                ));
            }
        }
        Ok(())
    }

    /// Which key writes whatever payload a client sends to the device, if one does: `{payload}`
    /// in `write` (any text) or `{payload}`/`{payload_hex}` in `write_hex` (any bytes), with no
    /// `match:` to limit it. `check` warns of it.
    pub fn unbounded_payload(&self) -> Option<&'static str> {
        if self.matcher.is_some() {
            return None;
        }
        let payload = |v: &Var, hex: bool| match v {
            Var::Builtin(Builtin::Frame) => true,
            Var::Builtin(Builtin::FrameHex) => hex,
            _ => false,
        };
        match &self.write {
            Write::Text(t) if t.vars().any(|v| payload(v, false)) => Some("write"),
            Write::Hex(t) if t.vars().any(|v| payload(v, true)) => Some("write_hex"),
            _ => None,
        }
    }

    fn template(&self) -> Option<&Template> {
        match &self.write {
            Write::Text(t) | Write::Hex(t) => Some(t),
            Write::Point(_) => None,
        }
    }

    /// The Modbus point a `point:` command writes (its device's unit encodes the payload).
    pub fn point(&self) -> Option<&str> {
        match &self.write {
            Write::Point(p) => Some(p),
            _ => None,
        }
    }
}

/// A control character's name, for the refusal.
fn control_name(b: u8) -> &'static str {
    match b {
        0x00 => "a NUL",
        0x09 => "a tab",
        0x0a => "a line feed",
        0x0d => "a carriage return",
        0x1b => "an escape",
        0x7f => "a delete",
        _ => "a control character",
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::serial::framing::{Endian, LengthPrefix};

    fn compile(yaml: &str) -> Result<Arc<Command>, Vec<CompileError>> {
        let raw: schema::Command = serde_yaml::from_str(yaml).expect("command yaml");
        Command::compile("c", &raw).map(Arc::new)
    }

    fn errors(yaml: &str) -> String {
        compile(yaml)
            .expect_err("must not compile")
            .iter()
            .map(|e| format!("{}: {} ({:?})", e.path, e.message, e.help))
            .collect::<Vec<_>>()
            .join("\n")
    }

    fn render(c: &Command, framing: &Framing, payload: &[u8]) -> Result<Vec<u8>, String> {
        c.render("gw", "relay", framing, payload)
    }

    #[test]
    fn filter_and_reply_topic_are_expanded_per_device() {
        let c = compile(
            "{subscribe: 'cmd/{gateway}/{device}/set', write: x, reply_topic: 'r/{device}'}",
        )
        .unwrap();
        let d = c.for_device("gw1", "relay");
        assert_eq!(d.filter, "cmd/gw1/relay/set");
        assert_eq!(d.reply_topic.as_deref(), Some("r/relay"));
    }

    #[test]
    fn captures_and_payload_fill_the_write_template() {
        let c = compile("{subscribe: a, match: '^(?P<state>ON|OFF)$', write: \"R1={state} {payload} {device}\\r\\n\"}").unwrap();
        assert_eq!(
            render(&c, &Framing::Lines, b"ON").unwrap(),
            b"R1=ON ON relay\r\n"
        );
        let e = render(&c, &Framing::Lines, b"on").unwrap_err();
        assert_eq!(e, "the payload does not match `^(?P<state>ON|OFF)$`");
        assert_eq!(
            render(&c, &Framing::Lines, &[0xff]).unwrap_err(),
            "the payload is not UTF-8 text"
        );
    }

    #[test]
    fn without_match_any_payload_is_taken() {
        let c = compile("{subscribe: a, write: 'SET {payload}'}").unwrap();
        assert_eq!(render(&c, &Framing::Lines, b"42").unwrap(), b"SET 42");
    }

    /// Issue 31: `write: "FAN={payload}\n"` wrote `1\nR1=ON` as two commands. A value placed
    /// into a command's text cannot carry a line end or any other control character.
    #[test]
    fn a_payload_cannot_carry_a_second_command() {
        let c = compile("{subscribe: a, write: \"FAN={payload}\\n\"}").unwrap();
        assert_eq!(render(&c, &Framing::Lines, b"1").unwrap(), b"FAN=1\n");
        for (payload, what) in [
            (&b"1\nR1=ON"[..], "a line feed (0x0A)"),
            (b"1\rX", "a carriage return (0x0D)"),
            (b"1\x00X", "a NUL (0x00)"),
            (b"1\tX", "a tab (0x09)"),
            (b"1\x1b[2J", "an escape (0x1B)"),
            (b"1\x7f", "a delete (0x7F)"),
            (b"1\x04", "a control character (0x04)"),
        ] {
            let e = render(&c, &Framing::Lines, payload).unwrap_err();
            assert!(e.contains("the payload holds") && e.contains(what), "{e}");
            assert!(e.contains("allow_control: true"), "{e}");
        }
        // The command's own text keeps its line end; the payload's text is what is checked.
        let c =
            compile("{subscribe: a, match: '(?s)^(?P<v>.*)$', write: \"S={v}\\r\\n\"}").unwrap();
        assert_eq!(render(&c, &Framing::Lines, b"1 2").unwrap(), b"S=1 2\r\n");
        let e = render(&c, &Framing::Lines, b"1\r\nS=9").unwrap_err();
        assert!(
            e.contains("the value of {v} holds a carriage return"),
            "{e}"
        );
        // {payload} is checked even when a `match:` (here unanchored) let the payload through.
        let c =
            compile("{subscribe: a, match: '(?P<v>[0-3])', write: \"F={payload}\\n\"}").unwrap();
        let e = render(&c, &Framing::Lines, b"1\nR1=ON").unwrap_err();
        assert!(e.contains("a line feed"), "{e}");
        // {payload_hex} is hex digits whatever the payload: nothing in it to refuse.
        let c = compile("{subscribe: a, write: \"H={payload_hex}\\n\"}").unwrap();
        assert_eq!(
            render(&c, &Framing::Lines, b"1\nR1=ON").unwrap(),
            b"H=310a52313d4f4e\n"
        );
    }

    /// The device's own frame markers are refused in a value too, even printable ones, and a
    /// marker the value completes with the command's text next to it.
    #[test]
    fn a_payload_cannot_carry_the_devices_frame_delimiter() {
        let semicolon = Framing::Delimiter(b";".to_vec());
        let c = compile("{subscribe: a, write: 'SET {payload};'}").unwrap();
        assert_eq!(render(&c, &semicolon, b"1").unwrap(), b"SET 1;");
        let e = render(&c, &semicolon, b"1;R1=ON").unwrap_err();
        assert!(e.contains("the device's frame delimiter"), "{e}");
        let end = Framing::Delimiter(b"END".to_vec());
        let c = compile("{subscribe: a, write: 'X{payload}ND'}").unwrap();
        assert_eq!(render(&c, &end, b"1").unwrap(), b"X1ND");
        let e = render(&c, &end, b"E").unwrap_err();
        assert!(e.contains("the device's frame delimiter"), "{e}");
        // A device name is the config's, not the sender's: a delimiter in it is no concern.
        let dash = Framing::Delimiter(b"-".to_vec());
        let c = compile("{subscribe: a, write: '{device}:{payload}-'}").unwrap();
        assert_eq!(
            c.render("gw", "a-b", &dash, b"1").unwrap(),
            b"a-b:1-".to_vec()
        );
    }

    /// `allow_control: true` is the command's own opt-in: its payloads pass as they are.
    #[test]
    fn allow_control_lets_a_command_write_control_bytes() {
        let c = compile("{subscribe: a, write: '{payload}', allow_control: true}").unwrap();
        assert_eq!(
            render(&c, &Framing::Lines, b"1\nR1=ON").unwrap(),
            b"1\nR1=ON"
        );
        let e = errors("{subscribe: a, write_hex: '{payload_hex}', allow_control: true}");
        assert!(
            e.contains("allow_control") && e.contains("only for `write`"),
            "{e}"
        );
    }

    /// `check` warns of a command whose payload reaches the device unchecked: any text (or,
    /// in hex, any bytes) whoever may publish on its topic chooses.
    #[test]
    fn a_command_without_match_is_named() {
        let c = compile("{subscribe: a, write: \"FAN={payload}\\n\"}").unwrap();
        assert_eq!(c.unbounded_payload(), Some("write"));
        let c = compile("{subscribe: a, write_hex: '01 {payload_hex}'}").unwrap();
        assert_eq!(c.unbounded_payload(), Some("write_hex"));
        for bounded in [
            "{subscribe: a, match: '^(?P<s>[0-3])$', write: \"FAN={s}\\n\"}",
            "{subscribe: a, match: '^[0-3]$', write: \"FAN={payload}\\n\"}",
            "{subscribe: a, write: \"H={payload_hex}\\n\"}",
            "{subscribe: a, write: \"ON\\n\"}",
        ] {
            assert_eq!(
                compile(bounded).unwrap().unbounded_payload(),
                None,
                "{bounded}"
            );
        }
    }

    #[test]
    fn encode_wraps_the_bytes_in_the_devices_framing() {
        let c = compile("{subscribe: a, write: '{payload}', encode: true, allow_control: true}")
            .unwrap();
        assert_eq!(render(&c, &Framing::Lines, b"hi").unwrap(), b"hi\n");
        assert_eq!(
            render(&c, &Framing::Slip, b"hi").unwrap(),
            [0xc0, b'h', b'i', 0xc0]
        );
        let prefix = Framing::LengthPrefix(LengthPrefix {
            width: 1,
            endian: Endian::Big,
        });
        assert_eq!(render(&c, &prefix, b"hi").unwrap(), [2, b'h', b'i']);
        assert_eq!(
            render(&c, &prefix, &[b'x'; 300]).unwrap_err(),
            "300 bytes do not fit the device's length_prefix framing"
        );
        let e = render(&c, &Framing::Lines, b"a\nb").unwrap_err();
        assert!(e.contains("contains a line break"), "{e}");
        let e = render(
            &c,
            &Framing::Fixed(crate::serial::framing::Fixed::size(4)),
            b"abc",
        )
        .unwrap_err();
        assert!(e.contains("fixed frame size"), "{e}");
        assert_eq!(
            render(
                &c,
                &Framing::Fixed(crate::serial::framing::Fixed::size(3)),
                b"abc"
            )
            .unwrap(),
            b"abc"
        );
    }

    #[test]
    fn write_hex_decodes_and_refuses_what_is_not_hex() {
        let c = compile("{subscribe: a, write_hex: '01 05 {payload}'}").unwrap();
        assert_eq!(
            render(&c, &Framing::Cobs, b"ff 00").unwrap(),
            [1, 5, 0xff, 0]
        );
        let e = render(&c, &Framing::Cobs, b"zz").unwrap_err();
        assert!(e.starts_with("`0105zz` is not hex"), "{e}");
        let c = compile("{subscribe: a, write_hex: '{payload_hex}'}").unwrap();
        assert_eq!(render(&c, &Framing::Cobs, &[0, 1, 2]).unwrap(), [0, 1, 2]);
    }

    #[test]
    fn compile_errors_say_what_to_write() {
        let e = errors("{subscribe: a, write: '{stat}', match: '^(?P<state>ON)$'}");
        assert!(
            e.contains("placeholder {stat} names nothing") && e.contains("did you mean {state}?"),
            "{e}"
        );
        let e = errors("{subscribe: a}");
        assert!(
            e.contains("command `c` has no `write`") && e.contains("write_hex"),
            "{e}"
        );
        let e = errors("{subscribe: a, write: x, write_hex: '00'}");
        assert!(e.contains("sets both `write` and `write_hex`"), "{e}");
        let e = errors("{subscribe: a, write_hex: '01 xyz'}");
        assert!(
            e.contains("write_hex") && e.contains("not hex digits"),
            "{e}"
        );
        let e = errors("{subscribe: 'cmd/{payload}', write: x}");
        assert!(
            e.contains("subscribe: ") && e.contains("only {gateway} and {device}"),
            "{e}"
        );
        let e = errors("{subscribe: 'cmd/#/x', write: x}");
        assert!(e.contains("is not an MQTT filter"), "{e}");
        let e = errors("{subscribe: a, write: x, reply_topic: 'r/+'}");
        assert!(
            e.contains("reply_topic") && e.contains("is not a topic"),
            "{e}"
        );
        let e = errors("{subscribe: a, write: x, match: '(?P<payload>.*)'}");
        assert!(
            e.contains("capture name `payload` is also a built-in"),
            "{e}"
        );
        let e = errors("{subscribe: a, write: x, match: '(unclosed'}");
        assert!(e.contains("the regex does not compile"), "{e}");
    }

    proptest::proptest! {
        /// Whatever a sender publishes, a text command without `allow_control` writes it only
        /// when no control byte and no frame marker of the device comes from it (a marker the
        /// payload completes with the command's own text included), and refuses it only then.
        #[test]
        fn a_text_command_refuses_exactly_the_payloads_that_could_end_it(
            which in 0usize..8,
            payload in proptest::collection::vec(
                proptest::sample::select(b"1AN;<ED>/!\n\r\t\x00\x1b\x7f\xc0\xc2\xaa\xff".to_vec()),
                0..16,
            ),
        ) {
            use crate::serial::framing::{Fixed, Telegram};
            let framing = [
                Framing::Lines,
                Framing::Delimiter(b"\r\n".to_vec()),
                Framing::Delimiter(b";".to_vec()),
                Framing::Delimiter(b"<END>".to_vec()),
                Framing::Cobs,
                Framing::Slip,
                Framing::Fixed(Fixed { size: 24, start: vec![0xaa], end: vec![0xab] }),
                Framing::Telegram(Telegram { start: b"/".to_vec(), end: b"!".to_vec(), trailer: 0 }),
            ][which].clone();
            let c = compile("{subscribe: a, write: \"<{payload}ND>\\n\"}").unwrap();
            let text = String::from_utf8_lossy(&payload).into_owned();
            let out = format!("<{text}ND>\n").into_bytes();
            let value = 1..1 + text.len();
            let control = text.bytes().any(|b| b < 0x20 || b == 0x7f);
            let marker = framing.markers().iter().any(|(m, _)| {
                out.windows(m.len())
                    .enumerate()
                    .any(|(i, w)| w == *m && i < value.end && value.start < i + m.len())
            });
            match render(&c, &framing, &payload) {
                Ok(bytes) => {
                    proptest::prop_assert!(!control && !marker, "{:?} got through", bytes);
                    proptest::prop_assert_eq!(bytes, out);
                }
                Err(e) => proptest::prop_assert!(control || marker, "{:?} refused: {}", text, e),
            }
        }
    }
}

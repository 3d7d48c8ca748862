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

use super::template::{Builtin, Builtins, NoValues, Template, TemplateError, Var, BUILTINS};
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
        let homeassistant = entity(name, raw, &mut errors);
        match (subscribe, write) {
            (Some(subscribe), Some(write)) if errors.is_empty() => Ok(Self {
                homeassistant,
                name: name.to_owned(),
                subscribe,
                matcher,
                write,
                encode: raw.encode,
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
        let text = match &self.matcher {
            None => template.render(&env, &NoValues),
            Some(re) => {
                let Ok(s) = std::str::from_utf8(payload) else {
                    return Err("the payload is not UTF-8 text".into());
                };
                let Some(caps) = re.captures(s) else {
                    return Err(format!("the payload does not match `{}`", re.as_str()));
                };
                template.render(&env, &Captures(caps))
            }
        }
        .ok_or_else(|| "the payload lacks a value the command uses".to_owned())?;
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

    #[test]
    fn encode_wraps_the_bytes_in_the_devices_framing() {
        let c = compile("{subscribe: a, write: '{payload}', encode: true}").unwrap();
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
}

//! Topic and payload templates: `sensors/{device}/temperature`, `"{temp}"`, or a JSON object built
//! from placeholders.
//!
//! A template is parsed once, when the config loads, into literal text and resolved variable
//! references, so a placeholder that names nothing is a `check` error and rendering a frame is a
//! walk over a short list with no lookups by name.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::time::{SystemTime, UNIX_EPOCH};

/// Placeholders every rule has, whatever its kind.
pub const BUILTINS: [&str; 7] = [
    "gateway",
    "device",
    "frame",
    "frame_hex",
    "now",
    "now_ms",
    "request",
];

/// A placeholder that every rule provides.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    /// The gateway id.
    Gateway,
    /// The device name.
    Device,
    /// The frame as text (lossy for binary frames).
    Frame,
    /// The frame as lowercase hex.
    FrameHex,
    /// Time of the frame, RFC 3339 UTC with milliseconds.
    Now,
    /// Time of the frame, Unix milliseconds.
    NowMs,
    /// The name of the poll (or command) the frame answers; empty for a frame sent unasked.
    Request,
}

impl Builtin {
    /// The placeholder's name, as written between braces.
    pub fn name(self) -> &'static str {
        match self {
            Self::Gateway => "gateway",
            Self::Device => "device",
            Self::Frame => "frame",
            Self::FrameHex => "frame_hex",
            Self::Now => "now",
            Self::NowMs => "now_ms",
            Self::Request => "request",
        }
    }

    /// The built-in with this name, if any.
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "gateway" => Self::Gateway,
            "device" => Self::Device,
            "frame" => Self::Frame,
            "frame_hex" => Self::FrameHex,
            "now" => Self::Now,
            "now_ms" => Self::NowMs,
            "request" => Self::Request,
            _ => return None,
        })
    }
}

/// What a placeholder refers to, resolved when the rule is compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Var {
    /// A built-in.
    Builtin(Builtin),
    /// The n-th value the rule extracted (capture group index, or binary field index).
    Slot(usize),
    /// A field of a JSON frame, by dotted path.
    Path(Vec<String>),
    /// The n-th of the rule's computed `values:`.
    Computed(usize),
}

/// One piece of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Lit(String),
    Var(Var),
}

/// A parsed text template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

/// A number taken from a binary field.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Num {
    /// Signed integer.
    I(i64),
    /// Unsigned integer.
    U(u64),
    /// Floating point (already rounded).
    F(f64),
}

/// The value of one placeholder for one frame.
#[derive(Debug, Clone)]
pub enum Value<'a> {
    /// Text (a regex capture, a built-in).
    Str(Cow<'a, str>),
    /// A number (a binary field, `now_ms`).
    Num(Num),
    /// A JSON frame's field, with its type.
    Json(&'a serde_json::Value),
}

/// Looks up placeholder values for one frame.
pub trait Lookup {
    /// The value of `var`, or `None` when the frame lacks it (a missing JSON field).
    fn value(&self, var: &Var) -> Option<Value<'_>>;
}

/// The built-in values of one frame.
#[derive(Debug, Clone, Copy)]
pub struct Builtins<'a> {
    /// Gateway id.
    pub gateway: &'a str,
    /// Device name.
    pub device: &'a str,
    /// The raw frame.
    pub frame: &'a [u8],
    /// When the frame was read.
    pub now: SystemTime,
    /// The poll or command it answers ("" for none).
    pub request: &'a str,
}

impl<'a> Builtins<'a> {
    /// The value of a built-in.
    pub fn value(&self, b: Builtin) -> Value<'a> {
        match b {
            Builtin::Gateway => Value::Str(Cow::Borrowed(self.gateway)),
            Builtin::Device => Value::Str(Cow::Borrowed(self.device)),
            Builtin::Frame => Value::Str(String::from_utf8_lossy(self.frame)),
            Builtin::FrameHex => Value::Str(Cow::Owned(hex::encode(self.frame))),
            Builtin::Now => {
                // humantime panics outside years 1970..=9999: clamp a clock that is that wrong.
                let max = UNIX_EPOCH + std::time::Duration::from_secs(253_402_300_799);
                let now = self.now.clamp(UNIX_EPOCH, max);
                Value::Str(Cow::Owned(
                    humantime::format_rfc3339_millis(now).to_string(),
                ))
            }
            Builtin::Request => Value::Str(Cow::Borrowed(self.request)),
            Builtin::NowMs => {
                let ms = self
                    .now
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_millis() as u64)
                    .unwrap_or(0);
                Value::Num(Num::U(ms))
            }
        }
    }
}

impl std::fmt::Display for Num {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Num::I(v) => write!(f, "{v}"),
            Num::U(v) => write!(f, "{v}"),
            Num::F(v) => write!(f, "{v}"),
        }
    }
}

impl Value<'_> {
    /// Appends the value as text: strings as they are, numbers in shortest form, JSON compact.
    pub fn write_text(&self, out: &mut String) {
        match self {
            Value::Str(s) => out.push_str(s),
            Value::Num(n) => {
                let _ = write!(out, "{n}");
            }
            Value::Json(serde_json::Value::String(s)) => out.push_str(s),
            Value::Json(v) => {
                let _ = write!(out, "{v}");
            }
        }
    }

    /// The value as a typed JSON value: numbers stay numbers, and text that reads as a JSON
    /// number or boolean (`"21.5"`, `"true"`) becomes one.
    pub fn to_json(&self) -> serde_json::Value {
        match self {
            Value::Str(s) => infer_json(s),
            Value::Num(Num::I(v)) => serde_json::Value::from(*v),
            Value::Num(Num::U(v)) => serde_json::Value::from(*v),
            Value::Num(Num::F(v)) => serde_json::Number::from_f64(*v)
                .map(serde_json::Value::Number)
                .unwrap_or(serde_json::Value::Null),
            Value::Json(v) => (*v).clone(),
        }
    }
}

fn infer_json(s: &str) -> serde_json::Value {
    match s {
        "true" => return serde_json::Value::Bool(true),
        "false" => return serde_json::Value::Bool(false),
        _ => {}
    }
    match device_number(s) {
        Some(n) => serde_json::Value::Number(n),
        None => serde_json::Value::String(s.to_owned()),
    }
}

/// A number as devices write them: `-?digits(.digits)?([eE][+-]?digits)?`, leading zeros
/// included (DSMR's `001234.567`, NMEA's `08`), so a field's JSON type never depends on the
/// digits that arrive. An integer too big for 64 bits (an id) is `None`, never a lossy float.
fn device_number(s: &str) -> Option<serde_json::Number> {
    let (sign, body) = match s.strip_prefix('-') {
        Some(rest) => ("-", rest),
        None => ("", s),
    };
    let int_end = body
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(body.len());
    if int_end == 0 {
        return None;
    }
    let rest = &body[int_end..];
    let mut tail = rest.as_bytes();
    if let Some(frac) = tail.strip_prefix(b".") {
        let n = frac.iter().take_while(|b| b.is_ascii_digit()).count();
        if n == 0 {
            return None;
        }
        tail = &frac[n..];
    }
    if let Some(exp) = tail.strip_prefix(b"e").or_else(|| tail.strip_prefix(b"E")) {
        let exp = exp
            .strip_prefix(b"+")
            .or_else(|| exp.strip_prefix(b"-"))
            .unwrap_or(exp);
        if exp.is_empty() || !exp.iter().all(u8::is_ascii_digit) {
            return None;
        }
        tail = &[];
    }
    if !tail.is_empty() {
        return None;
    }
    let digits = body[..int_end].trim_start_matches('0');
    let int = if digits.is_empty() { "0" } else { digits };
    if rest.is_empty() {
        let text = format!("{sign}{int}");
        return match text.parse::<i64>() {
            Ok(v) => Some(v.into()),
            Err(_) => text.parse::<u64>().ok().map(Into::into),
        };
    }
    serde_json::from_str(&format!("{sign}{int}{rest}")).ok()
}

/// Where one placeholder's value landed in a rendered text: the placeholder and its bytes.
pub type Span<'t> = (&'t Var, std::ops::Range<usize>);

/// Why a template did not parse or names an unknown placeholder.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError {
    /// What is wrong.
    pub message: String,
    /// What to write instead.
    pub help: Option<String>,
}

impl Template {
    /// Parses `text`, resolving each `{name}` with `resolve` (built-ins first). `{{`/`}}` are
    /// literal braces.
    pub fn parse(
        text: &str,
        resolve: &dyn Fn(&str) -> Result<Var, TemplateError>,
    ) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut lit = String::new();
        let mut chars = text.char_indices().peekable();
        while let Some((i, c)) = chars.next() {
            match c {
                '{' if chars.peek().map(|&(_, c)| c) == Some('{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek().map(|&(_, c)| c) == Some('}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let rest = &text[i + 1..];
                    let Some(end) = rest.find('}') else {
                        return Err(TemplateError {
                            message: format!("`{{` without a closing `}}` in \"{text}\""),
                            help: Some("write `{{` for a literal brace".into()),
                        });
                    };
                    let name = rest[..end].trim();
                    if name.is_empty() || name.contains('{') {
                        return Err(TemplateError {
                            message: format!("empty or malformed placeholder in \"{text}\""),
                            help: Some(
                                "placeholders look like {name}; write `{{` for a literal brace"
                                    .into(),
                            ),
                        });
                    }
                    let var = match Builtin::from_name(name) {
                        Some(b) => Var::Builtin(b),
                        None => resolve(name)?,
                    };
                    if !lit.is_empty() {
                        parts.push(Part::Lit(std::mem::take(&mut lit)));
                    }
                    parts.push(Part::Var(var));
                    // Skip the name and the closing brace (`end` is a byte offset).
                    while chars.next_if(|&(j, _)| j <= i + 1 + end).is_some() {}
                }
                '}' => {
                    return Err(TemplateError {
                        message: format!("`}}` without an opening `{{` in \"{text}\""),
                        help: Some("write `}}` for a literal brace".into()),
                    })
                }
                c => lit.push(c),
            }
        }
        if !lit.is_empty() {
            parts.push(Part::Lit(lit));
        }
        Ok(Self { parts })
    }

    /// Parses a template that may use `{gateway}` and `{device}` only (topics fixed per
    /// device); `what` names where it stands, for the error's help line.
    pub fn parse_static(text: &str, what: &str) -> Result<Self, TemplateError> {
        let not_here = |n: &str| TemplateError {
            message: format!("placeholder {{{n}}} is not available here"),
            help: Some(format!(
                "only {{gateway}} and {{device}} can be used in {what}"
            )),
        };
        let t = Self::parse(text, &|n| Err(not_here(n)))?;
        for v in t.vars() {
            match v {
                Var::Builtin(Builtin::Gateway | Builtin::Device) => {}
                Var::Builtin(b) => return Err(not_here(b.name())),
                _ => return Err(not_here("?")),
            }
        }
        Ok(t)
    }

    /// The placeholders, in order.
    pub fn vars(&self) -> impl Iterator<Item = &Var> {
        self.parts.iter().filter_map(|p| match p {
            Part::Var(v) => Some(v),
            Part::Lit(_) => None,
        })
    }

    /// The literal text between placeholders (used to validate topics at load time).
    pub fn literals(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Lit(s) => Some(s.as_str()),
            Part::Var(_) => None,
        })
    }

    /// The placeholder when the whole template is exactly one placeholder (typed JSON values).
    pub fn single_var(&self) -> Option<&Var> {
        match self.parts.as_slice() {
            [Part::Var(v)] => Some(v),
            _ => None,
        }
    }

    /// Renders into `out`; `None` when the frame lacks a referenced value.
    pub fn render_into(
        &self,
        env: &Builtins<'_>,
        lookup: &dyn Lookup,
        out: &mut String,
    ) -> Option<()> {
        for part in &self.parts {
            match part {
                Part::Lit(s) => out.push_str(s),
                Part::Var(Var::Builtin(b)) => env.value(*b).write_text(out),
                Part::Var(v) => lookup.value(v)?.write_text(out),
            }
        }
        Some(())
    }

    /// Renders like [`Template::render`], and says where each placeholder's value landed in
    /// the text (byte ranges, in order): a command checks the values a sender chose apart from
    /// the template's own text (its line end is the config's, a payload's is not).
    pub fn render_spans(
        &self,
        env: &Builtins<'_>,
        lookup: &dyn Lookup,
    ) -> Option<(String, Vec<Span<'_>>)> {
        let mut out = String::new();
        let mut spans = Vec::new();
        for part in &self.parts {
            let start = out.len();
            match part {
                Part::Lit(s) => {
                    out.push_str(s);
                    continue;
                }
                Part::Var(v @ Var::Builtin(b)) => {
                    env.value(*b).write_text(&mut out);
                    spans.push((v, start..out.len()));
                }
                Part::Var(v) => {
                    lookup.value(v)?.write_text(&mut out);
                    spans.push((v, start..out.len()));
                }
            }
        }
        Some((out, spans))
    }

    /// Renders a topic: like [`Template::render`], but a value that would change the topic's
    /// shape (a `/` adding a level, a wildcard, a NUL) is an `Err` describing it. Values from the
    /// frame must never choose where a reading goes beyond the level they fill.
    pub fn render_topic(
        &self,
        env: &Builtins<'_>,
        lookup: &dyn Lookup,
    ) -> Option<Result<String, String>> {
        let mut out = String::new();
        for part in &self.parts {
            let start = out.len();
            match part {
                Part::Lit(s) => {
                    out.push_str(s);
                    continue;
                }
                // Gateway ids and device names are checked when the config is loaded.
                Part::Var(Var::Builtin(b @ (Builtin::Gateway | Builtin::Device))) => {
                    env.value(*b).write_text(&mut out);
                    continue;
                }
                Part::Var(Var::Builtin(b)) => env.value(*b).write_text(&mut out),
                Part::Var(v) => lookup.value(v)?.write_text(&mut out),
            }
            let shape = |b: &&u8| matches!(**b, b'/' | b'+' | b'#' | 0);
            if let Some(c) = out.as_bytes()[start..]
                .iter()
                .find(shape)
                .map(|&b| char::from(b))
            {
                let what = match c {
                    '/' => "a `/` (it would add a topic level)",
                    '\0' => "a NUL character",
                    _ => "an MQTT wildcard",
                };
                let name = match part {
                    Part::Var(Var::Builtin(b)) => format!("{{{}}}", b.name()),
                    Part::Var(Var::Path(p)) => format!("{{{}}}", p.join(".")),
                    _ => "a placeholder".to_string(),
                };
                return Some(Err(format!(
                    "the value of {name} in the topic contains {what}: {:?}; the message is not published",
                    &out[start..]
                )));
            }
        }
        Some(Ok(out))
    }

    /// Renders to a new string; `None` when the frame lacks a referenced value.
    pub fn render(&self, env: &Builtins<'_>, lookup: &dyn Lookup) -> Option<String> {
        let mut out = String::new();
        self.render_into(env, lookup, &mut out)?;
        Some(out)
    }

    /// The template with `{gateway}` and `{device}` filled in and every other placeholder
    /// kept as written (`{temp}`): a topic's shape, for checks made before any frame.
    pub fn render_shape(&self, gateway: &str, device: &str) -> String {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Lit(s) => out.push_str(s),
                Part::Var(Var::Builtin(Builtin::Gateway)) => out.push_str(gateway),
                Part::Var(Var::Builtin(Builtin::Device)) => out.push_str(device),
                Part::Var(Var::Builtin(b)) => {
                    out.push('{');
                    out.push_str(b.name());
                    out.push('}');
                }
                Part::Var(Var::Path(p)) => {
                    out.push('{');
                    out.push_str(&p.join("."));
                    out.push('}');
                }
                // Captures and computed values are resolved to positions: their names are gone.
                Part::Var(Var::Slot(_) | Var::Computed(_)) => out.push_str("{…}"),
            }
        }
        out
    }

    /// Renders a template that may only use `{gateway}` and `{device}` (state topics).
    pub fn render_static(&self, gateway: &str, device: &str) -> String {
        let env = Builtins {
            gateway,
            device,
            frame: &[],
            now: SystemTime::UNIX_EPOCH,
            request: "",
        };
        self.render(&env, &NoValues).unwrap_or_default()
    }
}

/// A lookup with no values: for templates that use built-ins only.
pub struct NoValues;

impl Lookup for NoValues {
    fn value(&self, _var: &Var) -> Option<Value<'_>> {
        None
    }
}

/// A JSON payload template: a YAML mapping/list whose strings are templates.
#[derive(Debug, Clone)]
pub enum JsonTemplate {
    /// A YAML scalar that is not a string (number, bool, null): copied as is.
    Literal(serde_json::Value),
    /// A string: one placeholder alone keeps the value's type; anything else renders to text.
    Text(Template),
    /// A string whose one placeholder the rule declared text (`types: {id: string}`).
    AsText(Template),
    /// A JSON object.
    Object(Vec<(String, JsonTemplate)>),
    /// A JSON array.
    Array(Vec<JsonTemplate>),
}

impl JsonTemplate {
    /// Builds from the YAML value of a `payload:` mapping or list.
    pub fn parse(
        value: &serde_yaml::Value,
        resolve: &dyn Fn(&str) -> Result<Var, TemplateError>,
    ) -> Result<Self, TemplateError> {
        use serde_yaml::Value as Y;
        Ok(match value {
            Y::Null => Self::Literal(serde_json::Value::Null),
            Y::Bool(b) => Self::Literal(serde_json::Value::Bool(*b)),
            Y::Number(n) => {
                Self::Literal(serde_json::to_value(n).unwrap_or(serde_json::Value::Null))
            }
            Y::String(s) => Self::Text(Template::parse(s, resolve)?),
            Y::Sequence(items) => Self::Array(
                items
                    .iter()
                    .map(|v| Self::parse(v, resolve))
                    .collect::<Result<_, _>>()?,
            ),
            Y::Mapping(map) => {
                let mut fields = Vec::with_capacity(map.len());
                for (k, v) in map {
                    let key = match k {
                        Y::String(s) => s.clone(),
                        other => serde_yaml::to_string(other)
                            .unwrap_or_default()
                            .trim()
                            .to_owned(),
                    };
                    fields.push((key, Self::parse(v, resolve)?));
                }
                Self::Object(fields)
            }
            Y::Tagged(t) => Self::parse(&t.value, resolve)?,
        })
    }

    /// Every placeholder of every string in it.
    pub fn vars(&self) -> Vec<&Var> {
        match self {
            Self::Literal(_) => Vec::new(),
            Self::Text(t) | Self::AsText(t) => t.vars().collect(),
            Self::Object(fields) => fields.iter().flat_map(|(_, t)| t.vars()).collect(),
            Self::Array(items) => items.iter().flat_map(JsonTemplate::vars).collect(),
        }
    }

    /// Builds the JSON value for one frame; `None` when the frame lacks a referenced value.
    pub fn render(&self, env: &Builtins<'_>, lookup: &dyn Lookup) -> Option<serde_json::Value> {
        Some(match self {
            Self::Literal(v) => v.clone(),
            Self::AsText(t) => serde_json::Value::String(t.render(env, lookup)?),
            Self::Text(t) => match t.single_var() {
                Some(Var::Builtin(b)) => env.value(*b).to_json(),
                Some(v) => lookup.value(v)?.to_json(),
                None => serde_json::Value::String(t.render(env, lookup)?),
            },
            Self::Object(fields) => {
                let mut map = serde_json::Map::with_capacity(fields.len());
                for (k, t) in fields {
                    map.insert(k.clone(), t.render(env, lookup)?);
                }
                serde_json::Value::Object(map)
            }
            Self::Array(items) => serde_json::Value::Array(
                items
                    .iter()
                    .map(|t| t.render(env, lookup))
                    .collect::<Option<_>>()?,
            ),
        })
    }

    /// The same template with the placeholders in `text` published as JSON strings, whatever
    /// their values look like (a rule's `types: {name: string}`).
    pub fn with_text_vars(self, text: &[Var]) -> Self {
        match self {
            Self::Text(t) if t.single_var().is_some_and(|v| text.contains(v)) => Self::AsText(t),
            Self::Object(fields) => Self::Object(
                fields
                    .into_iter()
                    .map(|(k, v)| (k, v.with_text_vars(text)))
                    .collect(),
            ),
            Self::Array(items) => {
                Self::Array(items.into_iter().map(|v| v.with_text_vars(text)).collect())
            }
            other => other,
        }
    }

    /// Every text template inside (to validate placeholders).
    pub fn templates(&self) -> Vec<&Template> {
        let mut out = Vec::new();
        self.collect(&mut out);
        out
    }

    fn collect<'a>(&'a self, out: &mut Vec<&'a Template>) {
        match self {
            Self::Literal(_) => {}
            Self::Text(t) | Self::AsText(t) => out.push(t),
            Self::Object(f) => f.iter().for_each(|(_, t)| t.collect(out)),
            Self::Array(i) => i.iter().for_each(|t| t.collect(out)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A capture's JSON type depends on the rule, never on the digits that arrive: DSMR and
    /// NMEA zero-pad, and typed stores reject a field that flips between string and number.
    #[test]
    fn numeric_text_is_a_number_whatever_its_leading_zeros() {
        use serde_json::json;
        // A number in JSON as the device wrote it, leading zeros aside: 10.000 stays 10.000.
        for (text, want) in [
            ("12", "12"),
            ("08", "8"),
            ("-007", "-7"),
            ("0", "0"),
            ("000", "0"),
            ("12.345", "12.345"),
            ("01.193", "1.193"),
            ("001234.567", "1234.567"),
            ("10.000", "10.000"),
            ("-00.50", "-0.50"),
            ("1e3", "1e+3"),
            ("18446744073709551615", "18446744073709551615"),
        ] {
            let v = infer_json(text);
            assert!(v.is_number(), "{text}: {v}");
            assert_eq!(v.to_string(), want, "{text}");
        }
        for text in [
            "",
            "-",
            "12.",
            ".5",
            "0x1F",
            "1,5",
            "12a",
            "1e",
            "+5",
            "99999999999999999999999",
        ] {
            assert_eq!(infer_json(text), json!(text), "{text:?} stays text");
        }
        assert_eq!(infer_json("true"), json!(true));
    }

    struct Slots(Vec<&'static str>);
    impl Lookup for Slots {
        fn value(&self, var: &Var) -> Option<Value<'_>> {
            match var {
                Var::Slot(i) => self.0.get(*i).map(|s| Value::Str(Cow::Borrowed(*s))),
                _ => None,
            }
        }
    }

    fn resolve(name: &str) -> Result<Var, TemplateError> {
        match name {
            "temp" => Ok(Var::Slot(0)),
            "hum" => Ok(Var::Slot(1)),
            _ => Err(TemplateError {
                message: format!("unknown placeholder {{{name}}}"),
                help: None,
            }),
        }
    }

    fn env() -> Builtins<'static> {
        Builtins {
            gateway: "gw",
            device: "greenhouse",
            frame: b"T=21.5;H=40",
            now: UNIX_EPOCH + std::time::Duration::from_millis(1_700_000_000_123),
            request: "",
        }
    }

    #[test]
    fn renders_builtins_and_slots() {
        let t = Template::parse("sensors/{gateway}/{device}/{temp}", &resolve).unwrap();
        let out = t.render(&env(), &Slots(vec!["21.5", "40"])).unwrap();
        assert_eq!(out, "sensors/gw/greenhouse/21.5");
    }

    #[test]
    fn frame_hex_and_time_builtins() {
        let t = Template::parse("{frame_hex} {now} {now_ms}", &resolve).unwrap();
        let out = t.render(&env(), &NoValues).unwrap();
        assert_eq!(
            out,
            "543d32312e353b483d3430 2023-11-14T22:13:20.123Z 1700000000123"
        );
    }

    #[test]
    fn doubled_braces_are_literal() {
        let t = Template::parse("{{\"t\": {temp}}}", &resolve).unwrap();
        assert_eq!(t.render(&env(), &Slots(vec!["1"])).unwrap(), "{\"t\": 1}");
    }

    #[test]
    fn unknown_placeholder_is_an_error() {
        let e = Template::parse("x/{tmp}", &resolve).unwrap_err();
        assert!(e.message.contains("{tmp}"), "{e:?}");
    }

    #[test]
    fn unclosed_brace_is_an_error_with_help() {
        let e = Template::parse("x/{temp", &resolve).unwrap_err();
        assert!(e.help.unwrap().contains("{{"));
        assert!(Template::parse("x}", &resolve).is_err());
        assert!(Template::parse("x/{}", &resolve).is_err());
    }

    #[test]
    fn json_payload_keeps_types() {
        let yaml: serde_yaml::Value = serde_yaml::from_str(
            "{t: '{temp}', h: '{hum}', label: 'T {temp}', n: 3, ok: true, d: '{device}'}",
        )
        .unwrap();
        let t = JsonTemplate::parse(&yaml, &resolve).unwrap();
        let v = t.render(&env(), &Slots(vec!["21.5", "040"])).unwrap();
        assert_eq!(
            v,
            // "040" is the number 40: zero-padding never makes a number text.
            serde_json::json!({"t": 21.5, "h": 40, "label": "T 21.5", "n": 3, "ok": true, "d": "greenhouse"})
        );
    }

    #[test]
    fn missing_value_fails_the_render() {
        let t = Template::parse("{hum}", &resolve).unwrap();
        assert!(t.render(&env(), &Slots(vec!["1"])).is_none());
    }
}

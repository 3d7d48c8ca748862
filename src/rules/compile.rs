//! A rule as written (`match`/`json`/`fields`, `publish`, `types`, `drop`) compiled into a
//! [`Rule`]: the matcher, each output's templates resolved against the matcher's names, and
//! every problem found reported at its key, not just the first.

use regex::Regex;

use super::binary::{decimals_of, BinField, FieldType, TYPE_NAMES};
use super::expr::Expr;
use super::report::{Deadband, Report};
use super::template::{self, JsonTemplate, Template, TemplateError, Var, BUILTINS};
use super::{braces, err, CompileError, Matcher, Output, Payload, Rule};
use crate::config::diagnostics::suggest;
use crate::config::schema;
use crate::homeassistant::entity::{Entity, STATE_COMPONENTS};

impl Rule {
    /// Compiles the rule named `name`; every problem found is returned, not just the first.
    pub fn compile(name: &str, raw: &schema::Rule) -> Result<Self, Vec<CompileError>> {
        let mut errors = Vec::new();
        let kinds = [
            raw.match_.is_some(),
            raw.json,
            raw.fields.is_some(),
            raw.points,
        ]
        .iter()
        .filter(|k| **k)
        .count();
        if kinds > 1 {
            errors.push(err(
                "",
                format!("rule `{name}` sets more than one of `match`, `json: true`, `fields` and `points: true`"),
                Some("a rule reads a frame one way: keep one of them (split it into two rules if needed)".into()),
            ));
            return Err(errors);
        }
        let (matcher, slots) = if let Some(pattern) = &raw.match_ {
            // A regex that does not compile is the only error reported: its placeholders
            // cannot be checked against captures it does not have, and errors about them would
            // only bury the one that matters.
            regex(name, pattern, &mut errors).ok_or_else(|| errors.clone())?
        } else if raw.json {
            (Matcher::Json, Vec::new())
        } else if raw.points {
            (Matcher::Points, Vec::new())
        } else if raw.fields.is_some() || raw.starts_hex.is_some() {
            binary(name, raw.fields.as_deref().unwrap_or_default(), &mut errors)
        } else {
            (Matcher::Any, Vec::new())
        };
        let matcher = starts(name, raw, matcher, &mut errors);
        let (values, computed) = values(name, raw, &matcher, &slots, &mut errors);
        let names = Names {
            rule: name,
            matcher: &matcher,
            slots: &slots,
            computed: &computed,
        };
        let resolve = |n: &str| names.resolve(n);
        check_publishes_or_drops(name, raw, &mut errors);
        // `types:` names placeholders of this rule; a name it does not have is an error.
        let mut text_vars = Vec::new();
        for (n, ty) in &raw.types {
            match (resolve(n), ty) {
                (Ok(v), schema::ValueType::String) => text_vars.push(v),
                (Err(e), _) => errors.push(err(format!("types.{n}"), e.message, e.help)),
            }
        }
        let outputs: Vec<Output> = raw
            .publish
            .iter()
            .enumerate()
            .filter_map(|(i, p)| output(name, i, p, &resolve, &text_vars, &mut errors))
            .collect();
        if errors.is_empty() {
            Ok(Self {
                name: name.to_owned(),
                matcher,
                outputs,
                continue_: raw.continue_,
                drop: raw.drop,
                values,
                probe: Default::default(),
            })
        } else {
            Err(errors)
        }
    }
}

/// `match:`: the regex and its capture names by index; `None` when it does not compile.
fn regex(
    name: &str,
    pattern: &str,
    errors: &mut Vec<CompileError>,
) -> Option<(Matcher, Vec<String>)> {
    match Regex::new(pattern) {
        Ok(re) => {
            let mut slots = Vec::new();
            for (i, n) in re.capture_names().enumerate() {
                if let Some(n) = n {
                    if BUILTINS.contains(&n) {
                        errors.push(err(
                            "match",
                            format!(
                                "rule `{name}`: capture name `{n}` is also a built-in placeholder"
                            ),
                            Some(format!("rename the capture, e.g. (?P<{n}_value>...)")),
                        ));
                    }
                    slots.resize(i + 1, String::new());
                    slots[i] = n.to_owned();
                }
            }
            Some((Matcher::Regex(re), slots))
        }
        Err(e) => {
            errors.push(err(
                "match",
                format!("rule `{name}`: the regex does not compile: {e}"),
                Some("named captures look like (?P<temp>-?\\d+(?:\\.\\d+)?); quote the pattern in single quotes".into()),
            ));
            None
        }
    }
}

/// `fields:`: binary fields by name, type, offset, scale; their names are the slots.
fn binary(
    name: &str,
    fields: &[schema::Field],
    errors: &mut Vec<CompileError>,
) -> (Matcher, Vec<String>) {
    let mut compiled = Vec::with_capacity(fields.len());
    for (i, f) in fields.iter().enumerate() {
        let path = format!("fields[{i}]");
        if BUILTINS.contains(&f.name.as_str()) {
            errors.push(err(
                format!("{path}.name"),
                format!(
                    "rule `{name}`: field name `{}` is also a built-in placeholder",
                    f.name
                ),
                Some("choose another name".into()),
            ));
        }
        if compiled.iter().any(|c: &BinField| c.name == f.name) {
            errors.push(err(
                format!("{path}.name"),
                format!("rule `{name}`: field `{}` is defined twice", f.name),
                None,
            ));
        }
        let Some(ty) = FieldType::parse(&f.type_) else {
            let help = match suggest(&f.type_, TYPE_NAMES) {
                Some(s) => format!("did you mean `{s}`? types: {}", TYPE_NAMES.join(", ")),
                None => format!("types: {}", TYPE_NAMES.join(", ")),
            };
            errors.push(err(
                format!("{path}.type"),
                format!("rule `{name}`: unknown field type `{}`", f.type_),
                Some(help),
            ));
            continue;
        };
        let decimals = f.decimals.unwrap_or_else(|| match (f.scale, f.add) {
            (None, None) => 12,
            (s, a) => decimals_of(s.unwrap_or(1.0)).max(decimals_of(a.unwrap_or(0.0))),
        });
        if f.offset.checked_add(ty.size()).is_none() {
            errors.push(err(
                format!("{path}.offset"),
                format!("rule `{name}`: offset {} is out of range", f.offset),
                Some("write the field's byte offset in the frame, e.g. offset: 2".into()),
            ));
            continue;
        }
        compiled.push(BinField {
            name: f.name.clone(),
            offset: f.offset,
            ty,
            scale: f.scale,
            add: f.add,
            decimals,
        });
    }
    let slots = compiled.iter().map(|f| f.name.clone()).collect();
    let min_len = compiled.iter().filter_map(BinField::end).max().unwrap_or(0);
    (
        Matcher::Binary {
            fields: compiled,
            min_len,
            starts: Vec::new(),
        },
        slots,
    )
}

/// `starts_hex:` on a binary rule: the bytes its frames begin with. On a text or JSON rule it
/// is an error (a regex says how text begins).
fn starts(
    name: &str,
    raw: &schema::Rule,
    matcher: Matcher,
    errors: &mut Vec<CompileError>,
) -> Matcher {
    let Some(text) = &raw.starts_hex else {
        return matcher;
    };
    let Matcher::Binary {
        fields,
        min_len,
        starts: _,
    } = matcher
    else {
        errors.push(err(
            "starts_hex",
            format!("rule `{name}`: `starts_hex` picks binary frames, but this rule reads text, JSON or points"),
            Some("begin the regex with what the frame starts with (`match: '^\\$GPGGA,'`), or read the frame with `fields:`".into()),
        ));
        return matcher;
    };
    match crate::serial::framing::hex_text(text) {
        Some(bytes) if !bytes.is_empty() => Matcher::Binary {
            fields,
            min_len: min_len.max(bytes.len()),
            starts: bytes,
        },
        _ => {
            errors.push(err(
                "starts_hex",
                format!("rule `{name}`: starts_hex `{text}` is not hex bytes"),
                Some(
                    "write the bytes as pairs of hex digits, e.g. starts_hex: \"B5 62 01 07\""
                        .into(),
                ),
            ));
            Matcher::Binary {
                fields,
                min_len,
                starts: Vec::new(),
            }
        }
    }
}

/// `values:`: each expression compiled against the matcher's names and the values before it;
/// returns them and their names.
fn values(
    name: &str,
    raw: &schema::Rule,
    matcher: &Matcher,
    slots: &[String],
    errors: &mut Vec<CompileError>,
) -> (Vec<Expr>, Vec<String>) {
    let mut compiled = Vec::new();
    let mut names: Vec<String> = Vec::new();
    for (key, source) in &raw.values {
        let Some(key) = key.as_str() else {
            errors.push(err(
                "values",
                format!("rule `{name}`: a value's name must be text"),
                Some("write e.g. `values: {celsius: \"(f - 32) / 1.8\"}`".into()),
            ));
            continue;
        };
        let path = format!("values.{key}");
        let source = match source {
            serde_yaml::Value::String(s) => s.clone(),
            serde_yaml::Value::Number(n) => n.to_string(),
            _ => {
                errors.push(err(
                    &path,
                    format!("rule `{name}`: value `{key}` is not an expression"),
                    Some("write the expression as text, e.g. `raw * 0.1`".into()),
                ));
                continue;
            }
        };
        let clash = if BUILTINS.contains(&key) {
            Some("a built-in placeholder")
        } else if slots.iter().any(|s| s == key) {
            Some(match matcher {
                Matcher::Binary { .. } => "a field of `fields`",
                _ => "a named capture of `match`",
            })
        } else if names.iter().any(|n| n == key) {
            Some("another value")
        } else {
            None
        };
        if let Some(what) = clash {
            errors.push(err(
                &path,
                format!("rule `{name}`: value `{key}` has the name of {what}"),
                Some(format!(
                    "give the computed value its own name, e.g. `{key}_value`"
                )),
            ));
            continue;
        }
        let earlier = Names {
            rule: name,
            matcher,
            slots,
            computed: &names,
        };
        match Expr::compile(key, &source, &|n| earlier.resolve(n)) {
            Ok(e) => compiled.push(e),
            Err(e) => errors.push(err(
                &path,
                format!("rule `{name}`: value `{key}`: {}", e.message),
                e.help,
            )),
        }
        names.push(key.to_owned());
    }
    (compiled, names)
}

/// What a placeholder of this rule may name: a computed value, a JSON path, a capture or
/// field, a built-in.
struct Names<'a> {
    rule: &'a str,
    matcher: &'a Matcher,
    slots: &'a [String],
    computed: &'a [String],
}

impl Names<'_> {
    fn resolve(&self, n: &str) -> Result<Var, TemplateError> {
        if let Some(i) = self.computed.iter().position(|c| c == n) {
            return Ok(Var::Computed(i));
        }
        if let Some(b) = template::Builtin::from_name(n) {
            return Ok(Var::Builtin(b));
        }
        if matches!(self.matcher, Matcher::Json) {
            return Ok(Var::Path(n.split('.').map(str::to_owned).collect()));
        }
        // A device's points: checked against each Modbus device that uses the rule.
        if matches!(self.matcher, Matcher::Points) {
            return Ok(Var::Path(vec![n.to_owned()]));
        }
        if let Some(i) = self.slots.iter().position(|s| s == n) {
            return Ok(Var::Slot(i));
        }
        let known: Vec<&str> = self
            .slots
            .iter()
            .filter(|s| !s.is_empty())
            .map(String::as_str)
            .chain(self.computed.iter().map(String::as_str))
            .chain(BUILTINS)
            .collect();
        let what = match self.matcher {
            Matcher::Regex(_) => "a named capture of `match`",
            Matcher::Binary { .. } => "a field of `fields`",
            _ => "a built-in",
        };
        let help = match suggest(n, known.iter().copied()) {
            Some(s) => format!("did you mean {{{s}}}? available: {}", braces(&known)),
            None => format!("available: {}", braces(&known)),
        };
        Err(TemplateError {
            message: format!(
                "rule `{}`: placeholder {{{n}}} is not {what} or a built-in",
                self.rule
            ),
            help: Some(help),
        })
    }
}

/// A rule publishes something, or drops on purpose: never both, never neither.
fn check_publishes_or_drops(name: &str, raw: &schema::Rule, errors: &mut Vec<CompileError>) {
    if raw.drop && !raw.publish.is_empty() {
        errors.push(err(
            "drop",
            format!("rule `{name}` has `drop: true` and `publish:`: a drop rule publishes nothing"),
            Some("remove `publish:` to drop these frames, or `drop: true` to publish them".into()),
        ));
    } else if !raw.drop && raw.publish.is_empty() {
        errors.push(err(
            "publish",
            format!("rule `{name}` publishes nothing"),
            Some(
                "add at least one `- topic: ...` under `publish:`, or write `drop: true` to \
                 drop the frames it matches on purpose (counted as dropped, not unmatched)"
                    .into(),
            ),
        ));
    }
}

/// One `publish:` entry: its topic and payload templates, QoS, and Home Assistant entity.
fn output(
    name: &str,
    i: usize,
    p: &schema::Publish,
    resolve: &dyn Fn(&str) -> Result<Var, TemplateError>,
    text_vars: &[Var],
    errors: &mut Vec<CompileError>,
) -> Option<Output> {
    let path = format!("publish[{i}]");
    let topic = match Template::parse(&p.topic, resolve) {
        Ok(t) => {
            if let Some(lit) = t.literals().find(|l| l.contains(['+', '#'])) {
                errors.push(err(
                    format!("{path}.topic"),
                    format!(
                        "rule `{name}`: topic `{}` contains a wildcard (`{lit}`)",
                        p.topic
                    ),
                    Some("publish topics name one topic: remove + and #".into()),
                ));
            }
            if p.topic.is_empty() {
                errors.push(err(
                    format!("{path}.topic"),
                    format!("rule `{name}`: empty topic"),
                    None,
                ));
            }
            Some(t)
        }
        Err(e) => {
            errors.push(err(format!("{path}.topic"), e.message, e.help));
            None
        }
    };
    let payload = match &p.payload {
        None => Template::parse("{frame}", resolve).map(Payload::Text),
        Some(serde_yaml::Value::String(s)) => Template::parse(s, resolve).map(Payload::Text),
        Some(v @ (serde_yaml::Value::Mapping(_) | serde_yaml::Value::Sequence(_))) => {
            JsonTemplate::parse(v, resolve).map(|t| Payload::Json(t.with_text_vars(text_vars)))
        }
        Some(other) => {
            // A bare number or bool: publish its text.
            let text = serde_yaml::to_string(other).unwrap_or_default();
            Template::parse(text.trim(), resolve).map(Payload::Text)
        }
    };
    let payload = match payload {
        Ok(p) => Some(p),
        Err(e) => {
            errors.push(err(format!("{path}.payload"), e.message, e.help));
            None
        }
    };
    if p.qos > 2 {
        errors.push(err(
            format!("{path}.qos"),
            format!("rule `{name}`: qos {} is not an MQTT QoS", p.qos),
            Some("write qos: 0, 1 or 2".into()),
        ));
    }
    let homeassistant = entity(name, &path, p, topic.as_ref(), errors);
    let report = report(name, &path, p, errors);
    Some(Output {
        topic: topic?,
        payload: payload?,
        qos: p.qos.min(2),
        retain: p.retain,
        homeassistant,
        report,
    })
}

/// `deadband`, `heartbeat`, `min_interval` of a publish entry: the report-by-exception policy.
fn report(
    name: &str,
    path: &str,
    p: &schema::Publish,
    errors: &mut Vec<CompileError>,
) -> Option<Report> {
    if p.deadband.is_none() && p.heartbeat.is_none() && p.min_interval.is_none() {
        return None;
    }
    let deadband = match &p.deadband {
        None => Deadband::Absolute(0.0),
        Some(schema::DeadbandValue::Number(d)) if *d >= 0.0 && d.is_finite() => {
            Deadband::Absolute(*d)
        }
        Some(schema::DeadbandValue::Text(t)) => {
            let t = t.trim();
            let parsed = match t.strip_suffix('%') {
                Some(pct) => pct.trim().parse::<f64>().ok().map(Deadband::Percent),
                None => t.parse::<f64>().ok().map(Deadband::Absolute),
            };
            match parsed {
                Some(d @ (Deadband::Absolute(x) | Deadband::Percent(x)))
                    if x >= 0.0 && x.is_finite() =>
                {
                    d
                }
                _ => {
                    errors.push(deadband_error(name, path, t));
                    return None;
                }
            }
        }
        Some(schema::DeadbandValue::Number(d)) => {
            errors.push(deadband_error(name, path, &d.to_string()));
            return None;
        }
    };
    for (key, d) in [("heartbeat", p.heartbeat), ("min_interval", p.min_interval)] {
        if d.is_some_and(|d| d.is_zero()) {
            errors.push(err(
                format!("{path}.{key}"),
                format!("rule `{name}`: {key} of 0 means nothing"),
                Some(format!(
                    "write a duration, e.g. {key}: 5m, or remove the key"
                )),
            ));
            return None;
        }
    }
    if let (Some(h), Some(m)) = (p.heartbeat, p.min_interval) {
        if m >= h {
            errors.push(err(
                format!("{path}.min_interval"),
                format!(
                    "rule `{name}`: min_interval ({}) is not shorter than heartbeat ({}): the \
                     heartbeat could never be kept",
                    humantime::format_duration(m),
                    humantime::format_duration(h)
                ),
                Some("make min_interval shorter than heartbeat, or remove one of them".into()),
            ));
            return None;
        }
    }
    Some(Report {
        deadband,
        heartbeat: p.heartbeat,
        min_interval: p.min_interval,
    })
}

fn deadband_error(name: &str, path: &str, written: &str) -> CompileError {
    err(
        format!("{path}.deadband"),
        format!("rule `{name}`: deadband `{written}` is not a change a reading can make"),
        Some(
            "write an absolute change (deadband: 0.5), a percentage of the last value \
             (deadband: 2%), or 0 for any change"
                .into(),
        ),
    )
}

/// `homeassistant:` of a publish entry: a valid entity, on a topic that is one per device.
fn entity(
    name: &str,
    path: &str,
    p: &schema::Publish,
    topic: Option<&Template>,
    errors: &mut Vec<CompileError>,
) -> Option<Entity> {
    let e = match Entity::compile(p.homeassistant.as_ref()?, &STATE_COMPONENTS) {
        Ok(e) => e,
        Err((message, help)) => {
            errors.push(err(
                format!("{path}.homeassistant"),
                format!("rule `{name}`: {message}"),
                Some(help),
            ));
            return None;
        }
    };
    let per_frame = topic.is_some_and(|t| {
        t.vars().any(|v| {
            !matches!(
                v,
                Var::Builtin(template::Builtin::Gateway | template::Builtin::Device)
            )
        })
    });
    if per_frame {
        errors.push(err(
            format!("{path}.homeassistant"),
            format!(
                "rule `{name}`: Home Assistant needs one state topic per device, but `{}` changes with the frame",
                p.topic
            ),
            Some(format!(
                "use only {{gateway}} and {{device}} in this topic, or announce the {} with one rule per topic",
                e.component
            )),
        ));
    }
    Some(e)
}

//! Rules: the step that turns one frame into MQTT messages, configured in YAML.
//!
//! A rule is compiled once from the config into a matcher (a regex on text, a JSON object, or
//! binary fields) and a list of message templates. A device lists the rules it uses; for each
//! frame they are tried **in that order and the first rule that matches wins**, unless it says
//! `continue: true`, in which case the following rules are tried too. A frame that no rule matches
//! is reported as unmatched (counted, optionally published raw by the gateway).
//!
//! Compile-time checks catch what would otherwise be a runtime surprise: every placeholder must
//! be a built-in or something the matcher provides (a named capture, a field name).

pub mod binary;
pub mod command;
pub mod template;

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use regex::Regex;

use crate::config::diagnostics::suggest;
use crate::config::schema;
use crate::homeassistant::entity::{Entity, STATE_COMPONENTS};
use crate::message::{topic_problem, Message};
use binary::{decimals_of, BinField, FieldType, TYPE_NAMES};
use template::{
    Builtins, JsonTemplate, Lookup, Num, Template, TemplateError, Value, Var, BUILTINS,
};

/// A problem found while compiling a rule, with the path of the offending key inside the rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompileError {
    /// Key path relative to the rule (`match`, `publish[0].topic`).
    pub path: String,
    /// What is wrong.
    pub message: String,
    /// What to write instead.
    pub help: Option<String>,
}

/// What a rule matches frames with.
#[derive(Debug)]
enum Matcher {
    /// Every frame.
    Any,
    /// A regex on the frame as UTF-8 text; slots are capture groups.
    Regex(Regex),
    /// The frame is a JSON object; placeholders are its fields.
    Json,
    /// Binary fields; slots are the fields; frames shorter than `min_len` do not match.
    Binary {
        fields: Vec<BinField>,
        min_len: usize,
    },
}

#[derive(Debug)]
enum Payload {
    Text(Template),
    Json(JsonTemplate),
}

#[derive(Debug)]
struct Output {
    topic: Template,
    payload: Payload,
    qos: u8,
    retain: bool,
    /// Announced to Home Assistant as this entity.
    homeassistant: Option<Entity>,
}

/// One compiled rule.
#[derive(Debug)]
pub struct Rule {
    /// The rule's name in the config.
    pub name: String,
    matcher: Matcher,
    outputs: Vec<Output>,
    continue_: bool,
    /// `drop: true`: matches and publishes nothing, on purpose.
    drop: bool,
}

/// The rules of one device, in the order they are tried.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: Vec<Arc<Rule>>,
}

/// What happened to one frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// At least one rule matched.
    Matched,
    /// Only `drop: true` rules matched: a known frame, unwanted on purpose.
    Dropped,
    /// No rule matched.
    Unmatched,
    /// No rule matched, and the frame is not UTF-8 while text rules were tried.
    InvalidUtf8,
}

fn err(path: impl Into<String>, message: impl Into<String>, help: Option<String>) -> CompileError {
    CompileError {
        path: path.into(),
        message: message.into(),
        help,
    }
}

impl Rule {
    /// Compiles the rule named `name`; every problem found is returned, not just the first.
    pub fn compile(name: &str, raw: &schema::Rule) -> Result<Self, Vec<CompileError>> {
        let mut errors = Vec::new();
        let kinds = [raw.match_.is_some(), raw.json, raw.fields.is_some()]
            .iter()
            .filter(|k| **k)
            .count();
        if kinds > 1 {
            errors.push(err(
                "",
                format!("rule `{name}` sets more than one of `match`, `json: true` and `fields`"),
                Some("a rule reads a frame one way: keep one of them (split it into two rules if needed)".into()),
            ));
            return Err(errors);
        }

        let mut slot_names: Vec<String> = Vec::new();
        let matcher = if let Some(pattern) = &raw.match_ {
            match Regex::new(pattern) {
                Ok(re) => {
                    for (i, n) in re.capture_names().enumerate() {
                        if let Some(n) = n {
                            if BUILTINS.contains(&n) {
                                errors.push(err(
                                    "match",
                                    format!("rule `{name}`: capture name `{n}` is also a built-in placeholder"),
                                    Some(format!("rename the capture, e.g. (?P<{n}_value>...)")),
                                ));
                            }
                            slot_names.resize(i + 1, String::new());
                            slot_names[i] = n.to_owned();
                        }
                    }
                    Matcher::Regex(re)
                }
                Err(e) => {
                    errors.push(err(
                        "match",
                        format!("rule `{name}`: the regex does not compile: {e}"),
                        Some("named captures look like (?P<temp>-?\\d+(?:\\.\\d+)?); quote the pattern in single quotes".into()),
                    ));
                    // Its placeholders cannot be checked against captures it does not have:
                    // errors about them would only bury the one that matters.
                    return Err(errors);
                }
            }
        } else if raw.json {
            Matcher::Json
        } else if let Some(fields) = &raw.fields {
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
            slot_names = compiled.iter().map(|f| f.name.clone()).collect();
            let min_len = compiled.iter().filter_map(BinField::end).max().unwrap_or(0);
            Matcher::Binary {
                fields: compiled,
                min_len,
            }
        } else {
            Matcher::Any
        };

        let is_json = matches!(matcher, Matcher::Json);
        let resolve = |n: &str| -> Result<Var, TemplateError> {
            if is_json {
                return Ok(Var::Path(n.split('.').map(str::to_owned).collect()));
            }
            if let Some(i) = slot_names.iter().position(|s| s == n) {
                return Ok(Var::Slot(i));
            }
            let known: Vec<&str> = slot_names
                .iter()
                .filter(|s| !s.is_empty())
                .map(String::as_str)
                .chain(BUILTINS)
                .collect();
            let what = match &matcher {
                Matcher::Regex(_) => "a named capture of `match`",
                Matcher::Binary { .. } => "a field of `fields`",
                _ => "a built-in",
            };
            let help = match suggest(n, known.iter().copied()) {
                Some(s) => format!("did you mean {{{s}}}? available: {}", braces(&known)),
                None => format!("available: {}", braces(&known)),
            };
            Err(TemplateError {
                message: format!("rule `{name}`: placeholder {{{n}}} is not {what} or a built-in"),
                help: Some(help),
            })
        };

        if raw.drop && !raw.publish.is_empty() {
            errors.push(err(
                "drop",
                format!(
                    "rule `{name}` has `drop: true` and `publish:`: a drop rule publishes nothing"
                ),
                Some(
                    "remove `publish:` to drop these frames, or `drop: true` to publish them"
                        .into(),
                ),
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
        // `types:` names placeholders of this rule; a name it does not have is an error.
        let mut text_vars = Vec::new();
        for (n, ty) in &raw.types {
            match (resolve(n), ty) {
                (Ok(v), schema::ValueType::String) => text_vars.push(v),
                (Err(e), _) => errors.push(err(format!("types.{n}"), e.message, e.help)),
            }
        }
        let mut outputs = Vec::with_capacity(raw.publish.len());
        for (i, p) in raw.publish.iter().enumerate() {
            let path = format!("publish[{i}]");
            let topic = match Template::parse(&p.topic, &resolve) {
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
                None => Template::parse("{frame}", &resolve).map(Payload::Text),
                Some(serde_yaml::Value::String(s)) => {
                    Template::parse(s, &resolve).map(Payload::Text)
                }
                Some(v @ (serde_yaml::Value::Mapping(_) | serde_yaml::Value::Sequence(_))) => {
                    JsonTemplate::parse(v, &resolve)
                        .map(|t| Payload::Json(t.with_text_vars(&text_vars)))
                }
                Some(other) => {
                    // A bare number or bool: publish its text.
                    let text = serde_yaml::to_string(other).unwrap_or_default();
                    Template::parse(text.trim(), &resolve).map(Payload::Text)
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
            let homeassistant = match &p.homeassistant {
                None => None,
                Some(raw) => match Entity::compile(raw, &STATE_COMPONENTS) {
                    Ok(e) => Some(e),
                    Err((message, help)) => {
                        errors.push(err(
                            format!("{path}.homeassistant"),
                            format!("rule `{name}`: {message}"),
                            Some(help),
                        ));
                        None
                    }
                },
            };
            if let (Some(e), Some(t)) = (&homeassistant, &topic) {
                let per_frame = t.vars().any(|v| {
                    !matches!(
                        v,
                        Var::Builtin(template::Builtin::Gateway | template::Builtin::Device)
                    )
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
            }
            if let (Some(topic), Some(payload)) = (topic, payload) {
                outputs.push(Output {
                    topic,
                    payload,
                    qos: p.qos.min(2),
                    retain: p.retain,
                    homeassistant,
                });
            }
        }

        if errors.is_empty() {
            Ok(Self {
                name: name.to_owned(),
                matcher,
                outputs,
                continue_: raw.continue_,
                drop: raw.drop,
            })
        } else {
            Err(errors)
        }
    }

    /// The shortest frame a binary rule can read (its fields' end), `None` for other rules.
    pub fn min_len(&self) -> Option<usize> {
        match &self.matcher {
            Matcher::Binary { min_len, .. } => Some(*min_len),
            _ => None,
        }
    }

    fn needs_text(&self) -> bool {
        matches!(self.matcher, Matcher::Regex(_) | Matcher::Json)
    }
}

fn braces(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("{{{n}}}"))
        .collect::<Vec<_>>()
        .join(" ")
}

struct Captures<'a>(regex::Captures<'a>);
impl Lookup for Captures<'_> {
    fn value(&self, var: &Var) -> Option<Value<'_>> {
        match var {
            Var::Slot(i) => Some(Value::Str(Cow::Borrowed(
                self.0.get(*i).map_or("", |m| m.as_str()),
            ))),
            _ => None,
        }
    }
}

struct Fields(Vec<Num>);
impl Lookup for Fields {
    fn value(&self, var: &Var) -> Option<Value<'_>> {
        match var {
            Var::Slot(i) => self.0.get(*i).copied().map(Value::Num),
            _ => None,
        }
    }
}

struct JsonFields<'a>(&'a serde_json::Value);
impl Lookup for JsonFields<'_> {
    fn value(&self, var: &Var) -> Option<Value<'_>> {
        let Var::Path(path) = var else { return None };
        let mut v = self.0;
        for key in path {
            v = match v {
                serde_json::Value::Object(m) => m.get(key)?,
                serde_json::Value::Array(a) => a.get(key.parse::<usize>().ok()?)?,
                _ => return None,
            };
        }
        Some(Value::Json(v))
    }
}

/// Per-frame state shared by the rules of a set: the frame decoded once, lazily.
struct FrameView<'a> {
    frame: &'a [u8],
    text: Option<Option<&'a str>>,
    json: Option<Option<serde_json::Value>>,
}

impl<'a> FrameView<'a> {
    fn text(&mut self) -> Option<&'a str> {
        *self
            .text
            .get_or_insert_with(|| std::str::from_utf8(self.frame).ok())
    }

    fn json(&mut self) -> Option<&serde_json::Value> {
        let frame = self.frame;
        self.json
            .get_or_insert_with(|| {
                serde_json::from_slice::<serde_json::Value>(frame)
                    .ok()
                    .filter(serde_json::Value::is_object)
            })
            .as_ref()
    }
}

impl RuleSet {
    /// A set trying `rules` in order.
    pub fn new(rules: Vec<Arc<Rule>>) -> Self {
        Self { rules }
    }

    /// Whether the set has no rules at all.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// The messages announced to Home Assistant: their topic for this device, and the entity.
    pub fn entities<'a>(
        &'a self,
        gateway: &'a str,
        device: &'a str,
    ) -> impl Iterator<Item = (String, &'a Entity)> + 'a {
        self.rules.iter().flat_map(move |r| {
            r.outputs.iter().filter_map(move |o| {
                o.homeassistant
                    .as_ref()
                    .map(|e| (o.topic.render_static(gateway, device), e))
            })
        })
    }

    /// Applies the rules to one frame, appending messages to `out`. A message whose rendered
    /// topic cannot be published is left out and described in `problems`.
    pub fn apply(
        &self,
        env: &Builtins<'_>,
        out: &mut Vec<Message>,
        problems: &mut Vec<String>,
    ) -> Verdict {
        let mut view = FrameView {
            frame: env.frame,
            text: None,
            json: None,
        };
        let mut matched = false;
        let mut kept = false;
        let mut text_tried = false;
        for rule in &self.rules {
            text_tried |= rule.needs_text();
            let hit = match &rule.matcher {
                Matcher::Any => emit(rule, env, &template::NoValues, out, problems),
                Matcher::Regex(re) => match view.text().and_then(|t| re.captures(t)) {
                    Some(caps) => emit(rule, env, &Captures(caps), out, problems),
                    None => false,
                },
                Matcher::Json => match view.json() {
                    Some(v) => emit(rule, env, &JsonFields(v), out, problems),
                    None => false,
                },
                Matcher::Binary { fields, min_len } => {
                    if env.frame.len() < *min_len {
                        false
                    } else {
                        // Never shift values between slots if a field cannot be read.
                        let nums: Option<Vec<_>> =
                            fields.iter().map(|f| f.read(env.frame)).collect();
                        match nums {
                            Some(nums) => emit(rule, env, &Fields(nums), out, problems),
                            None => false,
                        }
                    }
                }
            };
            if hit {
                matched = true;
                kept |= !rule.drop;
                if !rule.continue_ {
                    break;
                }
            }
        }
        if kept {
            Verdict::Matched
        } else if matched {
            Verdict::Dropped
        } else if text_tried && view.text().is_none() {
            Verdict::InvalidUtf8
        } else {
            Verdict::Unmatched
        }
    }
}

/// Renders every output of a matched rule. All-or-nothing on missing values (a JSON frame without
/// a field the rule uses does not match the rule); a bad rendered topic skips only that message.
fn emit(
    rule: &Rule,
    env: &Builtins<'_>,
    lookup: &dyn Lookup,
    out: &mut Vec<Message>,
    problems: &mut Vec<String>,
) -> bool {
    let start = out.len();
    for o in &rule.outputs {
        let Some(topic) = o.topic.render_topic(env, lookup) else {
            out.truncate(start);
            return false;
        };
        let payload = match &o.payload {
            Payload::Text(t) => t.render(env, lookup).map(|s| Bytes::from(s.into_bytes())),
            Payload::Json(t) => t
                .render(env, lookup)
                .map(|v| Bytes::from(serde_json::to_vec(&v).unwrap_or_default())),
        };
        let Some(payload) = payload else {
            out.truncate(start);
            return false;
        };
        let topic = match topic {
            Ok(topic) => topic,
            Err(problem) => {
                problems.push(format!("rule `{}`: {problem}", rule.name));
                continue;
            }
        };
        if let Some(problem) = topic_problem(&topic) {
            problems.push(format!("rule `{}`: {problem}: {topic:?}", rule.name));
            continue;
        }
        out.push(Message {
            topic,
            payload,
            qos: o.qos,
            retain: o.retain,
        });
    }
    true
}

#[cfg(test)]
mod tests;

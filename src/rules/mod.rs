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
mod compile;
pub mod explain;
pub mod expr;
pub mod report;
pub mod template;

use std::borrow::Cow;
use std::sync::Arc;

use bytes::Bytes;
use regex::Regex;

use crate::homeassistant::entity::Entity;
use crate::message::{topic_problem, Message};
use binary::BinField;
use template::{Builtins, JsonTemplate, Lookup, Num, Template, Value, Var};

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
    /// Binary fields; slots are the fields; frames shorter than `min_len`, or not beginning
    /// with `starts`, do not match.
    Binary {
        fields: Vec<BinField>,
        min_len: usize,
        starts: Vec<u8>,
    },
    /// A Modbus device's points, by name (a read cycle, not a frame).
    Points,
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
    /// Report by exception (deadband, heartbeat, min_interval), if set.
    report: Option<report::Report>,
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
    /// Computed `values:`, in the order written (each may use the ones before it).
    values: Vec<expr::Expr>,
    /// Its regex as a prefix matcher, built the first time a frame it did not match is
    /// explained ([`explain`]); never on the way of a frame.
    probe: std::sync::OnceLock<Option<regex_automata::hybrid::dfa::DFA>>,
}

/// Something wrong with one matched frame's messages, counted by its kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Problem {
    /// A rendered topic cannot be published (a wildcard, a `/` from a value); that message
    /// is left out.
    Topic(String),
    /// A computed value could not be computed for this frame; the rule's messages are left out.
    Value(String),
}

impl Problem {
    /// What went wrong, naming the rule.
    pub fn text(&self) -> &str {
        match self {
            Problem::Topic(t) | Problem::Value(t) => t,
        }
    }
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

    /// Whether the rule reads a Modbus device's points (`points: true`).
    pub fn reads_points(&self) -> bool {
        matches!(self.matcher, Matcher::Points)
    }

    /// The point names a `points: true` rule uses, for checking them against its devices.
    pub fn point_names(&self) -> Vec<&str> {
        let mut vars: Vec<&Var> = Vec::new();
        for o in &self.outputs {
            vars.extend(o.topic.vars());
            match &o.payload {
                Payload::Text(t) => vars.extend(t.vars()),
                Payload::Json(t) => vars.extend(t.vars()),
            }
        }
        for e in &self.values {
            vars.extend(e.vars());
        }
        let mut names: Vec<&str> = Vec::new();
        for v in vars {
            if let Var::Path(p) = v {
                if let [name] = p.as_slice() {
                    if !names.contains(&name.as_str()) {
                        names.push(name);
                    }
                }
            }
        }
        names
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

/// Which rules of a set a Modbus read cycle runs (those of its read group).
pub type RuleFilter<'a> = dyn Fn(&Rule) -> bool + 'a;

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
    /// Every message a rule may make: the rule's name, its topic with `{gateway}` and
    /// `{device}` filled in (other placeholders left as `{name}`: their values never hold a
    /// `/`, so the topic's levels are final), and its retain flag. For `check`'s look at what
    /// a cloud broker would refuse.
    pub fn topics<'a>(
        &'a self,
        gateway: &'a str,
        device: &'a str,
    ) -> impl Iterator<Item = (&'a str, String, bool)> + 'a {
        self.rules.iter().flat_map(move |r| {
            r.outputs.iter().map(move |o| {
                (
                    r.name.as_str(),
                    o.topic.render_shape(gateway, device),
                    o.retain,
                )
            })
        })
    }

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
    /// topic cannot be published, or a rule whose values cannot be computed, is left out and
    /// described in `problems`; one that its output reports by exception and that has not
    /// changed enough (per `reports`, the device's memory of what it published) is left out.
    pub fn apply(
        &self,
        env: &Builtins<'_>,
        out: &mut Vec<Message>,
        problems: &mut Vec<Problem>,
        reports: &mut report::Reports,
    ) -> Verdict {
        self.apply_traced(env, env.frame, out, problems, reports).0
    }

    /// [`Self::apply`], also naming the first rule that matched (for the dashboard).
    /// `text` is what text and JSON rules see of the frame (see [`Emit`]).
    pub fn apply_traced(
        &self,
        env: &Builtins<'_>,
        text: &[u8],
        out: &mut Vec<Message>,
        problems: &mut Vec<Problem>,
        reports: &mut report::Reports,
    ) -> (Verdict, Option<&str>) {
        let (verdict, first) = self.run(
            Emit {
                env,
                text: Some(text),
                out,
                problems,
                reports,
                now: None,
            },
            None,
        );
        (verdict, first.map(|i| self.rules[i].name.as_str()))
    }

    /// [`Self::apply`] with report-by-exception timing at `now` instead of the clock's (for a
    /// recorded trace replayed faster than it happened).
    pub fn apply_at(
        &self,
        env: &Builtins<'_>,
        out: &mut Vec<Message>,
        problems: &mut Vec<Problem>,
        reports: &mut report::Reports,
        now: std::time::Instant,
    ) -> Verdict {
        self.run(
            Emit {
                env,
                text: None,
                out,
                problems,
                reports,
                now: Some(now),
            },
            None,
        )
        .0
    }

    /// Runs the `points: true` rules that `belongs` keeps on one read cycle of a Modbus
    /// device, whose values `points` looks up by name (`env.frame` is empty).
    pub fn apply_points(
        &self,
        env: &Builtins<'_>,
        points: &dyn Lookup,
        belongs: &RuleFilter<'_>,
        out: &mut Vec<Message>,
        problems: &mut Vec<Problem>,
        reports: &mut report::Reports,
    ) -> Verdict {
        self.run(
            Emit {
                env,
                text: None,
                out,
                problems,
                reports,
                now: None,
            },
            Some((points, belongs)),
        )
        .0
    }

    /// Tries the rules in order: the frame's rules, or with `points` a Modbus read cycle's
    /// `points: true` rules. Also says which rule matched first, by index.
    fn run(
        &self,
        mut ctx: Emit<'_, '_>,
        cycle: Option<(&dyn Lookup, &RuleFilter)>,
    ) -> (Verdict, Option<usize>) {
        let points = cycle.map(|(p, _)| p);
        let env = ctx.env;
        let mut view = FrameView {
            frame: ctx.text.unwrap_or(env.frame),
            text: None,
            json: None,
        };
        let mut matched = false;
        let mut kept = false;
        let mut text_tried = false;
        let mut first = None;
        for (i, rule) in self.rules.iter().enumerate() {
            if rule.reads_points() != points.is_some()
                || cycle.is_some_and(|(_, belongs)| !belongs(rule))
            {
                continue;
            }
            text_tried |= rule.needs_text();
            let hit = match &rule.matcher {
                Matcher::Any => emit(rule, &mut ctx, &template::NoValues),
                Matcher::Regex(re) => match view.text().and_then(|t| re.captures(t)) {
                    Some(caps) => emit(rule, &mut ctx, &Captures(caps)),
                    None => false,
                },
                Matcher::Json => match view.json() {
                    Some(v) => emit(rule, &mut ctx, &JsonFields(v)),
                    None => false,
                },
                Matcher::Points => points.is_some_and(|p| emit(rule, &mut ctx, p)),
                Matcher::Binary {
                    fields,
                    min_len,
                    starts,
                } => {
                    if env.frame.len() < *min_len || !env.frame.starts_with(starts) {
                        false
                    } else {
                        // Never shift values between slots if a field cannot be read.
                        let nums: Option<Vec<_>> =
                            fields.iter().map(|f| f.read(env.frame)).collect();
                        match nums {
                            Some(nums) => emit(rule, &mut ctx, &Fields(nums)),
                            None => false,
                        }
                    }
                }
            };
            if hit {
                first = first.or(Some(i));
                matched = true;
                kept |= !rule.drop;
                if !rule.continue_ {
                    break;
                }
            }
        }
        let verdict = if kept {
            Verdict::Matched
        } else if matched {
            Verdict::Dropped
        } else if text_tried && view.text().is_none() {
            Verdict::InvalidUtf8
        } else {
            Verdict::Unmatched
        };
        (verdict, first)
    }
}

/// Where one frame's messages go, and the state they are checked against.
struct Emit<'a, 'e> {
    env: &'a Builtins<'e>,
    /// What text and JSON rules see of the frame (None: all of it): the frame without a binary
    /// check value at its end, which is no text.
    text: Option<&'e [u8]>,
    out: &'a mut Vec<Message>,
    problems: &'a mut Vec<Problem>,
    reports: &'a mut report::Reports,
    /// Read once per frame, and only if an output reports by exception.
    now: Option<std::time::Instant>,
}

/// Renders every output of a matched rule, its computed values first. All-or-nothing on
/// missing values (a JSON frame without a field the rule uses does not match the rule); a bad
/// rendered topic skips only that message; a value that cannot be computed skips the rule's
/// messages (the rule still matched).
fn emit(rule: &Rule, ctx: &mut Emit<'_, '_>, lookup: &dyn Lookup) -> bool {
    if rule.values.is_empty() {
        return render(rule, ctx, lookup);
    }
    let mut computed = Vec::with_capacity(rule.values.len());
    for e in &rule.values {
        let scope = WithComputed {
            base: lookup,
            computed: &computed,
        };
        match e.eval(ctx.env, &scope) {
            Ok(v) => computed.push(v),
            // A JSON frame without the field: the rule does not match it.
            Err(expr::EvalError::Missing(_)) => return false,
            // The rule matched; its messages cannot be made from this frame.
            Err(why) => {
                ctx.problems
                    .push(Problem::Value(format!("rule `{}`: {why}", rule.name)));
                return true;
            }
        }
    }
    let scope = WithComputed {
        base: lookup,
        computed: &computed,
    };
    render(rule, ctx, &scope)
}

/// A matcher's values plus the rule's computed ones.
struct WithComputed<'a> {
    base: &'a dyn Lookup,
    computed: &'a [Value<'static>],
}

impl Lookup for WithComputed<'_> {
    fn value(&self, var: &Var) -> Option<Value<'_>> {
        match var {
            Var::Computed(i) => self.computed.get(*i).cloned(),
            v => self.base.value(v),
        }
    }
}

/// Renders the outputs of a matched rule with its values looked up in `lookup`.
fn render(rule: &Rule, ctx: &mut Emit<'_, '_>, lookup: &dyn Lookup) -> bool {
    let env = ctx.env;
    let start = ctx.out.len();
    let mut held = Vec::new();
    for (i, o) in rule.outputs.iter().enumerate() {
        let Some(topic) = o.topic.render_topic(env, lookup) else {
            ctx.out.truncate(start);
            return false;
        };
        let (payload, reading) = match &o.payload {
            Payload::Text(t) => match t.render(env, lookup) {
                Some(s) => {
                    let bytes = Bytes::from(s.into_bytes());
                    let reading = o.report.as_ref().map(|_| report::Reading::text(&bytes));
                    (bytes, reading)
                }
                None => {
                    ctx.out.truncate(start);
                    return false;
                }
            },
            Payload::Json(t) => match t.render(env, lookup) {
                Some(v) => {
                    let bytes = Bytes::from(serde_json::to_vec(&v).unwrap_or_default());
                    (bytes, o.report.as_ref().map(|_| report::Reading::Json(v)))
                }
                None => {
                    ctx.out.truncate(start);
                    return false;
                }
            },
        };
        let topic = match topic {
            Ok(topic) => topic,
            Err(problem) => {
                ctx.problems
                    .push(Problem::Topic(format!("rule `{}`: {problem}", rule.name)));
                continue;
            }
        };
        if let Some(problem) = topic_problem(&topic) {
            ctx.problems.push(Problem::Topic(format!(
                "rule `{}`: {problem}: {topic:?}",
                rule.name
            )));
            continue;
        }
        if let Some(reading) = reading {
            // Decided once every output rendered: a frame lacking a value publishes nothing
            // and must not count as published.
            held.push((ctx.out.len(), i, reading));
        }
        ctx.out.push(Message {
            topic,
            payload,
            qos: o.qos,
            retain: o.retain,
        });
    }
    if !held.is_empty() {
        let now = *ctx.now.get_or_insert_with(std::time::Instant::now);
        let mut keep = vec![true; ctx.out.len() - start];
        for (at, i, reading) in held {
            let Some(report) = &rule.outputs[i].report else {
                continue;
            };
            keep[at - start] = ctx.reports.admit(report, &ctx.out[at].topic, reading, now);
        }
        let mut k = keep.into_iter();
        let mut index = 0;
        ctx.out.retain(|_| {
            index += 1;
            index <= start || k.next().unwrap_or(true)
        });
    }
    true
}

#[cfg(test)]
mod tests;

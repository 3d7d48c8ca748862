//! `rules:` and `commands:`: each compiled once (devices share them), then what the devices
//! made of them: names used by no device, replies that would loop back as commands.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use super::Problems;
use crate::config::diagnostics::suggest;
use crate::config::model::Device;
use crate::config::schema;
use crate::rules::command::{Command, DeviceCommand};
use crate::rules::{CompileError, Rule};

/// The compiled rules and commands by name, and which of them devices use.
pub(super) struct Library<'a> {
    raw_rules: &'a BTreeMap<String, schema::Rule>,
    raw_commands: &'a BTreeMap<String, schema::Command>,
    rules: BTreeMap<String, Arc<Rule>>,
    commands: BTreeMap<String, Arc<Command>>,
    used_rules: BTreeSet<String>,
    used_commands: BTreeSet<String>,
}

/// Compiles every rule and command; each problem is reported at its key.
pub(super) fn compile<'a>(
    raw_rules: &'a BTreeMap<String, schema::Rule>,
    raw_commands: &'a BTreeMap<String, schema::Command>,
    p: &mut Problems,
) -> Library<'a> {
    let mut rules = BTreeMap::new();
    for (name, rule) in raw_rules {
        match Rule::compile(name, rule) {
            Ok(r) => {
                rules.insert(name.clone(), Arc::new(r));
            }
            Err(errs) => report(p, "rules", name, errs),
        }
    }
    let mut commands = BTreeMap::new();
    for (name, command) in raw_commands {
        match Command::compile(name, command) {
            Ok(c) => {
                unbounded_payload(name, &c, p);
                commands.insert(name.clone(), Arc::new(c));
            }
            Err(errs) => report(p, "commands", name, errs),
        }
    }
    Library {
        raw_rules,
        raw_commands,
        rules,
        commands,
        used_rules: BTreeSet::new(),
        used_commands: BTreeSet::new(),
    }
}

/// A command that writes whatever payload a client sends lets anyone allowed its topic choose
/// what the device gets (a text command's control characters are refused at run time, the
/// rest is not; a hex command's bytes are not checked at all): a warning showing the `match:`
/// that limits it to what the device takes.
fn unbounded_payload(name: &str, c: &Command, p: &mut Problems) {
    let Some(key) = c.unbounded_payload() else {
        return;
    };
    let (what, hint) = if key == "write" {
        (
            "any payload a client sends into its text",
            "add a `match:` for the payloads the device takes, e.g. match: '^(?P<value>[0-3])$', and write {value} in place of {payload}",
        )
    } else {
        (
            "any bytes a client sends (a whole frame of its own, too)",
            "add a `match:` for the payloads the device takes, e.g. match: '^(?P<value>[0-9a-fA-F]{2})$', and write {value} in place of the payload",
        )
    };
    p.warn(
        &format!("commands.{name}.{key}"),
        format!("command `{name}` writes {what}: it has no `match:`, so whoever may publish on its topic chooses what the device gets"),
        Some(hint.into()),
    );
}

fn report(p: &mut Problems, section: &str, name: &str, errs: Vec<CompileError>) {
    for e in errs {
        let path = if e.path.is_empty() {
            format!("{section}.{name}")
        } else {
            format!("{section}.{name}.{}", e.path)
        };
        p.error(&path, e.message, e.help);
    }
}

/// What a device's reference to a rule or command found.
pub(super) enum Lookup<T> {
    /// Compiled.
    Found(Arc<T>),
    /// Defined but did not compile: reported where it is defined.
    Broken,
    /// Not defined; the help says what is.
    Missing(String),
}

impl Library<'_> {
    /// The rule a device names (marked used).
    pub fn rule(&mut self, name: &str) -> Lookup<Rule> {
        self.used_rules.insert(name.to_owned());
        lookup(name, &self.rules, self.raw_rules.keys(), "rules")
    }

    /// The command a device names (marked used).
    pub fn command(&mut self, name: &str) -> Lookup<Command> {
        self.used_commands.insert(name.to_owned());
        lookup(name, &self.commands, self.raw_commands.keys(), "commands")
    }

    /// The definitions of the named rules and commands that exist (for a device's spec).
    pub fn definitions(
        &self,
        rules: &[String],
        commands: &[String],
    ) -> (Vec<schema::Rule>, Vec<schema::Command>) {
        (
            rules
                .iter()
                .filter_map(|r| self.raw_rules.get(r).cloned())
                .collect(),
            commands
                .iter()
                .filter_map(|c| self.raw_commands.get(c).cloned())
                .collect(),
        )
    }

    /// Rules and commands no device uses: warnings (they do nothing).
    pub fn warn_unused(&self, p: &mut Problems) {
        for (section, kind, raw, used) in [
            (
                "rules",
                "rule",
                self.raw_rules.keys().collect::<Vec<_>>(),
                &self.used_rules,
            ),
            (
                "commands",
                "command",
                self.raw_commands.keys().collect(),
                &self.used_commands,
            ),
        ] {
            for name in raw.into_iter().filter(|n| !used.contains(*n)) {
                p.warn(
                    &format!("{section}.{name}"),
                    format!("{kind} `{name}` is not used by any device"),
                    Some(format!(
                        "add `{name}` to a device's `{section}:` list, or remove it"
                    )),
                );
            }
        }
    }
}

fn lookup<'k, T>(
    name: &str,
    compiled: &BTreeMap<String, Arc<T>>,
    defined: impl Iterator<Item = &'k String>,
    section: &str,
) -> Lookup<T> {
    if let Some(t) = compiled.get(name) {
        return Lookup::Found(Arc::clone(t));
    }
    let names: Vec<&str> = defined.map(String::as_str).collect();
    if names.contains(&name) {
        return Lookup::Broken;
    }
    Lookup::Missing(match suggest(name, names.iter().copied()) {
        Some(s) => format!("did you mean `{s}`?"),
        None if names.is_empty() => format!("define it under `{section}:`"),
        None => format!("{section} defined: {}", names.join(", ")),
    })
}

/// Replies on a topic some command listens to would be taken as commands, and answered, and...
pub(super) fn reply_loops(devices: &[Device], p: &mut Problems) {
    let filters: Vec<&DeviceCommand> = devices.iter().flat_map(|d| &d.commands).collect();
    let mut looping = std::collections::BTreeSet::new();
    for c in &filters {
        let Some(reply) = &c.reply_topic else {
            continue;
        };
        if let Some(other) = filters
            .iter()
            .find(|o| crate::message::topic_matches(&o.filter, reply))
        {
            if looping.insert(c.command.name.clone()) {
                p.error(
                    &format!("commands.{}.reply_topic", c.command.name),
                    format!(
                        "replies on `{reply}` would be taken as commands by `{}` (it subscribes to `{}`)",
                        other.command.name, other.filter
                    ),
                    Some("put replies under another topic, e.g. reply_topic: \"cmd/{gateway}/{device}/result\" next to subscribe: \"cmd/{gateway}/{device}/set\"".into()),
                );
            }
        }
    }
}

//! Access rules for local clients (`broker.acl_file`, in mosquitto's `acl_file` format), so a
//! dashboard may read everything while only named users may command the devices.
//!
//! rumqttd has no access control of its own: the gatekeeper (`gate`) holds each client's
//! [`Rights`] and checks every PUBLISH it sends (write), every SUBSCRIBE (a filter that can
//! match nothing readable is refused) and every message delivered to it (read).
//!
//! The file: lines before the first `user` line are for anonymous clients; `user NAME` starts
//! a user's lines; `topic [read|write|readwrite|deny] FILTER` grants (readwrite when the word is
//! left out) or denies; `pattern ...` lines apply to every client, with `%u` (user name) and
//! `%c` (client id) substituted. `{gateway}` and `{device}` (one line per device) are expanded
//! in both. `deny` wins over any grant. Blank lines and lines starting with `#` are skipped.
//! Topics match filters as everywhere in the gateway (`message::topic_matches`; rumqttc's
//! `matches` never matches a `$` topic); filter-against-filter overlap and cover are here.

use std::collections::HashMap;

use crate::message::topic_matches as matches;

/// What a line allows or forbids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Receive messages (subscribe and be delivered).
    Read,
    /// Publish (and set a will).
    Write,
    /// Both.
    ReadWrite,
    /// Neither, whatever else grants it.
    Deny,
}

/// One rule: an access on a topic filter (for `pattern` lines, before substitution).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Grant {
    access: Access,
    filter: String,
}

/// The parsed file: grants per user, for anonymous clients, and for everyone (patterns).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Acl {
    anonymous: Vec<Grant>,
    users: HashMap<String, Vec<Grant>>,
    patterns: Vec<Grant>,
}

/// A problem on one line of the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based line number.
    pub line: usize,
    /// What is wrong.
    pub message: String,
    /// What to write instead.
    pub hint: String,
}

/// What one connected client may do, with patterns substituted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Rights {
    read: Vec<String>,
    write: Vec<String>,
    deny: Vec<String>,
}

impl Acl {
    /// Parses the file's text; `{gateway}` becomes `gateway` and a line with `{device}` becomes
    /// one line per name in `devices`. Every bad line is reported, not just the first.
    pub fn parse(text: &str, gateway: &str, devices: &[String]) -> Result<Acl, Vec<LineError>> {
        let mut acl = Acl::default();
        let mut errors = Vec::new();
        let mut user: Option<String> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |message: String, hint: &str| LineError {
                line: i + 1,
                message,
                hint: hint.to_owned(),
            };
            let (word, rest) = line
                .split_once(char::is_whitespace)
                .map(|(w, r)| (w, r.trim()))
                .unwrap_or((line, ""));
            match word {
                "user" => {
                    if rest.is_empty() {
                        errors.push(err(
                            "`user` without a name".into(),
                            "write `user NAME` (the login from broker.users_file, or a client certificate's CN)",
                        ));
                    } else {
                        acl.users.entry(rest.to_owned()).or_default();
                        user = Some(rest.to_owned());
                    }
                }
                "topic" | "pattern" => {
                    let pattern = word == "pattern";
                    let (access, filter) = match rest.split_once(char::is_whitespace) {
                        Some((a, f)) => match access_word(a) {
                            Some(a) => (a, f.trim()),
                            None => (Access::ReadWrite, rest),
                        },
                        None => (Access::ReadWrite, rest),
                    };
                    if filter.is_empty() || access_word(filter).is_some() {
                        errors.push(err(
                            format!("`{word}` without a topic filter"),
                            "write e.g. `topic read sensors/#` (read, write, readwrite or deny, then a filter)",
                        ));
                        continue;
                    }
                    if !pattern && (filter.contains("%u") || filter.contains("%c")) {
                        errors.push(err(
                            format!("`{filter}`: %u and %c are substituted in `pattern` lines only"),
                            "write `pattern ...` for a rule per user or client id",
                        ));
                        continue;
                    }
                    let expanded = match expand(filter, gateway, devices) {
                        Ok(e) => e,
                        Err(why) => {
                            errors.push(err(format!("`{filter}`: {why}"), "only {gateway} and {device} are expanded (and %u, %c in `pattern` lines)"));
                            continue;
                        }
                    };
                    let mut bad = false;
                    for f in &expanded {
                        if !valid_filter(f) {
                            errors.push(err(
                                format!("`{f}` is not a valid MQTT topic filter"),
                                "`#` only as the last level, `+` only as a whole level, e.g. `sensors/+/temperature` or `cmd/#`",
                            ));
                            bad = true;
                            break;
                        }
                    }
                    if bad {
                        continue;
                    }
                    let into = if pattern {
                        &mut acl.patterns
                    } else {
                        match &user {
                            Some(u) => acl.users.entry(u.clone()).or_default(),
                            None => &mut acl.anonymous,
                        }
                    };
                    into.extend(expanded.into_iter().map(|filter| Grant { access, filter }));
                }
                other => errors.push(err(
                    format!("unknown keyword `{other}`"),
                    "each line is `user NAME`, `topic [read|write|readwrite|deny] FILTER` or `pattern [read|write|readwrite|deny] FILTER`",
                )),
            }
        }
        if errors.is_empty() {
            Ok(acl)
        } else {
            Err(errors)
        }
    }

    /// The rights of a client logged in as `user` (None: anonymous) with `client_id`. A client
    /// id or user name holding a wildcard would widen a pattern: such a client gets none of the
    /// patterns' grants, and all of their denials as deny-everything.
    pub fn rights(&self, user: Option<&str>, client_id: &str) -> Rights {
        let own = match user {
            Some(u) => self.users.get(u).map(Vec::as_slice).unwrap_or(&[]),
            None => &self.anonymous,
        };
        let mut rights = Rights::default();
        for g in own {
            rights.add(g.access, g.filter.clone());
        }
        let wild = |s: &str| s.contains('+') || s.contains('#');
        for g in &self.patterns {
            let needs_user = g.filter.contains("%u");
            if needs_user && user.is_none() {
                continue;
            }
            let unsafe_sub = (needs_user && user.is_some_and(wild))
                || (g.filter.contains("%c") && wild(client_id));
            if unsafe_sub {
                if g.access == Access::Deny {
                    rights.add(Access::Deny, "#".into());
                }
                continue;
            }
            let filter = g
                .filter
                .replace("%u", user.unwrap_or(""))
                .replace("%c", client_id);
            rights.add(g.access, filter);
        }
        rights
    }

    /// The user names the file has sections for.
    pub fn users(&self) -> impl Iterator<Item = &str> {
        self.users.keys().map(String::as_str)
    }

    /// Whether any `pattern` line exists (they apply to every client).
    pub fn has_patterns(&self) -> bool {
        !self.patterns.is_empty()
    }
}

impl Rights {
    fn add(&mut self, access: Access, filter: String) {
        match access {
            Access::Read => self.read.push(filter),
            Access::Write => self.write.push(filter),
            Access::ReadWrite => {
                self.read.push(filter.clone());
                self.write.push(filter);
            }
            Access::Deny => self.deny.push(filter),
        }
    }

    /// Whether a message on `topic` may be delivered to the client.
    pub fn may_read(&self, topic: &str) -> bool {
        self.read.iter().any(|f| matches(f, topic)) && !self.denied(topic)
    }

    /// Whether the client may publish on `topic` (or set a will there).
    pub fn may_write(&self, topic: &str) -> bool {
        self.write.iter().any(|f| matches(f, topic)) && !self.denied(topic)
    }

    /// Whether a subscription to `filter` could ever deliver something (it overlaps a readable
    /// filter and is not wholly denied); what it delivers is still checked per message.
    pub fn may_subscribe(&self, filter: &str) -> bool {
        valid_filter(filter)
            && self.read.iter().any(|f| overlaps(f, filter))
            && !self.deny.iter().any(|d| covers(d, filter))
    }

    /// Whether the client may publish some topic that `filter` matches (a command's
    /// subscription, for `check`'s summary of who commands what).
    pub fn may_write_into(&self, filter: &str) -> bool {
        self.write.iter().any(|f| overlaps(f, filter))
            && !self.deny.iter().any(|d| covers(d, filter))
    }

    fn denied(&self, topic: &str) -> bool {
        self.deny.iter().any(|f| matches(f, topic))
    }
}

fn access_word(word: &str) -> Option<Access> {
    Some(match word {
        "read" => Access::Read,
        "write" => Access::Write,
        "readwrite" => Access::ReadWrite,
        "deny" => Access::Deny,
        _ => return None,
    })
}

/// `{gateway}` and `{device}` expanded (a filter with `{device}` becomes one per device).
fn expand(filter: &str, gateway: &str, devices: &[String]) -> Result<Vec<String>, String> {
    let mut rest = filter;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            return Err("a `{` without its `}`".into());
        };
        let name = &rest[open + 1..open + close];
        if name != "gateway" && name != "device" {
            return Err(format!("unknown placeholder {{{name}}}"));
        }
        rest = &rest[open + close + 1..];
    }
    let filter = filter.replace("{gateway}", gateway);
    if filter.contains("{device}") {
        Ok(devices
            .iter()
            .map(|d| filter.replace("{device}", d))
            .collect())
    } else {
        Ok(vec![filter])
    }
}

/// Whether `filter` is a valid MQTT topic filter: `#` alone as the last level, `+` alone in its
/// level, not empty.
pub fn valid_filter(filter: &str) -> bool {
    if filter.is_empty() {
        return false;
    }
    let levels: Vec<&str> = filter.split('/').collect();
    levels.iter().enumerate().all(|(i, l)| {
        if l.contains('#') {
            *l == "#" && i + 1 == levels.len()
        } else {
            !l.contains('+') || *l == "+"
        }
    })
}

/// Whether some topic matches both filters.
fn overlaps(a: &str, b: &str) -> bool {
    let dollar = |f: &str| f.starts_with('$');
    let wild_start = |f: &str| f.starts_with('+') || f.starts_with('#');
    if (dollar(a) && wild_start(b)) || (dollar(b) && wild_start(a)) {
        return false;
    }
    let (mut a, mut b) = (a.split('/'), b.split('/'));
    loop {
        match (a.next(), b.next()) {
            (Some("#"), _) | (_, Some("#")) => return true,
            (None, None) => return true,
            (Some(x), Some(y)) if x == "+" || y == "+" || x == y => {}
            _ => return false,
        }
    }
}

/// Whether every topic that `inner` matches is matched by `outer`.
fn covers(outer: &str, inner: &str) -> bool {
    if outer.starts_with('+') || outer.starts_with('#') {
        // `$` topics escape a leading wildcard; `inner` could still match them only if it
        // names `$...` literally.
        if inner.starts_with('$') {
            return false;
        }
    }
    let (mut o, mut i) = (outer.split('/'), inner.split('/'));
    loop {
        match (o.next(), i.next()) {
            (Some("#"), _) => return true,
            (None, None) => return true,
            (Some("+"), Some(y)) if y != "#" => {}
            (Some(x), Some(y)) if x == y && x != "+" => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acl(text: &str) -> Acl {
        Acl::parse(text, "gw", &["relay".into(), "meter".into()]).unwrap()
    }

    #[test]
    fn filters_match_topics_as_mqtt_says() {
        assert!(matches("sensors/#", "sensors"));
        assert!(matches("sensors/#", "sensors/a/b"));
        assert!(matches("sensors/+/t", "sensors/a/t"));
        assert!(!matches("sensors/+/t", "sensors/a/b/t"));
        assert!(!matches("sensors/+", "sensors"));
        assert!(matches("#", "a"));
        assert!(!matches("#", "$SYS/uptime"));
        assert!(!matches("+/uptime", "$SYS/uptime"));
        assert!(matches("$SYS/#", "$SYS/uptime"));
        assert!(!matches("a/b", "a/b/c"));
        assert!(matches("a//b", "a//b"));
    }

    #[test]
    fn overlap_and_cover_are_about_the_topics_both_match() {
        assert!(overlaps("sensors/#", "#"));
        assert!(overlaps("sensors/+/t", "+/a/+"));
        assert!(!overlaps("sensors/+/t", "power/#"));
        assert!(!overlaps("a/+", "a/b/c"));
        assert!(overlaps("a/#", "a"));
        assert!(!overlaps("#", "$SYS/#"));
        assert!(covers("#", "a/+/b"));
        assert!(covers("a/+/#", "a/b/c"));
        assert!(!covers("a/+", "a/#"));
        assert!(!covers("a/b", "a/+"));
        assert!(!covers("#", "$SYS/x"));
    }

    #[test]
    fn sections_patterns_and_placeholders() {
        let a = acl("# comment\ntopic read sensors/#\n\nuser dashboard\ntopic read #\nuser homeassistant\ntopic cmd/{gateway}/{device}/set\ntopic deny cmd/gw/meter/#\npattern write clients/%c/status\n");
        let anon = a.rights(None, "x");
        assert!(anon.may_read("sensors/t"));
        assert!(!anon.may_read("cmd/gw/relay/set"));
        assert!(!anon.may_write("sensors/t"));
        assert!(anon.may_write("clients/x/status"));
        assert!(!anon.may_write("clients/y/status"));
        let dash = a.rights(Some("dashboard"), "d");
        assert!(dash.may_read("cmd/gw/relay/set"));
        assert!(!dash.may_write("cmd/gw/relay/set"));
        assert!(dash.may_subscribe("#"));
        let ha = a.rights(Some("homeassistant"), "ha");
        assert!(ha.may_write("cmd/gw/relay/set"));
        assert!(ha.may_read("cmd/gw/relay/set"));
        assert!(!ha.may_write("cmd/gw/meter/set"), "deny wins");
        assert!(!ha.may_subscribe("cmd/gw/meter/#"), "wholly denied");
        assert!(ha.may_subscribe("cmd/+/+/set"));
        assert!(!ha.may_subscribe("sensors/#"), "nothing readable there");
        let stranger = a.rights(Some("nobody"), "n");
        assert!(
            !stranger.may_read("sensors/t"),
            "a user has only their section"
        );
    }

    #[test]
    fn wildcards_in_names_never_widen_a_pattern() {
        let a = acl(
            "pattern readwrite clients/%c/#\npattern deny private/%u/#\ntopic read private/#\n",
        );
        let r = a.rights(None, "#");
        assert!(!r.may_write("clients/other/x"));
        let r = a.rights(Some("bob"), "ok");
        assert!(r.may_write("clients/ok/x"));
        let r = a.rights(Some("+"), "ok");
        assert!(
            !r.may_read("private/a/b"),
            "an unsafe deny denies everything"
        );
        assert!(
            !r.may_write("clients/ok/x"),
            "an unsafe deny denies everything"
        );
    }

    #[test]
    fn bad_lines_are_named_with_what_to_write() {
        let e = Acl::parse(
            "topic read\nuser\ntopics read a\ntopic read a/#/b\ntopic read %u/x\ntopic read {site}/x\n",
            "gw",
            &[],
        )
        .unwrap_err();
        let lines: Vec<usize> = e.iter().map(|e| e.line).collect();
        assert_eq!(lines, vec![1, 2, 3, 4, 5, 6], "{e:?}");
        assert!(e[2].message.contains("topics"), "{e:?}");
        assert!(e[3].hint.contains("last level"), "{e:?}");
        assert!(e[4].hint.contains("pattern"), "{e:?}");
        assert!(e[5].message.contains("{site}"), "{e:?}");
    }

    #[test]
    fn access_word_is_optional_as_in_mosquitto() {
        let a = acl("topic sensors/#\n");
        let r = a.rights(None, "c");
        assert!(r.may_read("sensors/a") && r.may_write("sensors/a"));
    }
}

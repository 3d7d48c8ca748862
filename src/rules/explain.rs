//! Why no rule matched a frame: the rule that came closest, and where it parted from the frame.
//! What the dashboard's frames page shows next to "no rule matched", so that a user whose
//! sensor sends `T:21.5` to a rule written for `T=21.5` sees "rule `climate` reads `T` and
//! expects something else at byte 2 (`:`)" instead of guessing.
//!
//! Never on a frame's way: it runs only for the frames the dashboard samples. A regex rule is
//! walked as a lazy DFA over the frame (regex-automata, the engine the regex crate is built
//! on, so it is the same language) until it can no longer match: the more bytes it takes, the
//! closer the rule. Binary rules are judged by length, JSON rules by whether the frame is JSON.

use regex_automata::hybrid::dfa::DFA;
use regex_automata::{Anchored, Input};

use super::{Matcher, Rule, RuleSet};

/// The rule that came closest to matching a frame, and why it did not.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Closest {
    /// The rule's name.
    pub rule: String,
    /// Where it parted from the frame, in words.
    pub why: String,
}

/// How far a regex gets into `text` (anchored at its start): Some(n) when it can no longer
/// match after the first n bytes, None when every byte could still be part of a match (the
/// frame ends too early, or the pattern would match later than its start).
fn parted_at(dfa: &DFA, text: &str) -> Option<usize> {
    let mut cache = dfa.create_cache();
    let input = Input::new(text).anchored(Anchored::Yes);
    let mut state = dfa.start_state_forward(&mut cache, &input).ok()?;
    for (i, &b) in text.as_bytes().iter().enumerate() {
        state = dfa.next_state(&mut cache, state, b).ok()?;
        if state.is_dead() {
            return Some(i);
        }
        if state.is_quit() {
            return None;
        }
    }
    None
}

/// What a rule read of `text` before byte `at` (its last 16 bytes at most), and the byte it
/// stopped at, both printable.
fn parted(text: &str, at: usize) -> (String, String) {
    let from = floor_boundary(text, at.saturating_sub(16));
    let at = floor_boundary(text, at);
    let read = text[from..at].escape_debug().to_string();
    let read = if from > 0 { format!("…{read}") } else { read };
    let next = text[at..]
        .chars()
        .next()
        .map(|c| c.escape_debug().to_string());
    (read, next.unwrap_or_default())
}

/// The char boundary at or before `i` (`str::floor_char_boundary`, not in every supported
/// toolchain).
fn floor_boundary(text: &str, i: usize) -> usize {
    let mut i = i.min(text.len());
    while !text.is_char_boundary(i) {
        i -= 1;
    }
    i
}

impl Rule {
    fn probe(&self) -> Option<&DFA> {
        self.probe
            .get_or_init(|| match &self.matcher {
                Matcher::Regex(re) => DFA::new(re.as_str()).ok(),
                _ => None,
            })
            .as_ref()
    }
}

impl RuleSet {
    /// The rule that came closest to matching `frame` (none when the device has no frame
    /// rules).
    pub fn closest(&self, frame: &[u8]) -> Option<Closest> {
        let text = std::str::from_utf8(frame).ok();
        // (score, rule, why): the higher the score, the closer; the first of equals wins.
        let mut candidates: Vec<(usize, &Rule, String)> = Vec::new();
        for rule in self.rules.iter().map(|r| r.as_ref()) {
            match &rule.matcher {
                Matcher::Regex(re) => {
                    let Some(text) = text else {
                        candidates.push((
                            0,
                            rule,
                            "the frame is not UTF-8 text, and this rule reads text".into(),
                        ));
                        continue;
                    };
                    match rule.probe().and_then(|dfa| parted_at(dfa, text)) {
                        Some(0) => candidates.push((1,
                            rule,
                            format!("its pattern `{}` does not match the frame's first byte", re.as_str()),
                        )),
                        Some(n) => candidates.push((n + 1,
                            rule,
                            {
                                let (read, next) = parted(text, n);
                                let bytes = if n == 1 { "1 byte".to_string() } else { format!("{n} bytes") };
                                format!("matches `{read}` ({bytes}), then not `{next}` at byte {}", n + 1)
                            },
                        )),
                        None if re.is_match(text) => candidates.push((text.len() + 1,
                            rule,
                            "its pattern matches, but a value it uses is missing from the frame".into(),
                        )),
                        None => candidates.push((text.len() + 1,
                            rule,
                            "the frame ends before the rule's pattern does (a cut-short frame, or more is expected)".into(),
                        )),
                    }
                }
                Matcher::Binary { min_len, .. } if frame.len() < *min_len => candidates.push((
                    frame.len() * 100 / (*min_len).max(1) / 10,
                    rule,
                    format!(
                        "needs at least {min_len} bytes; the frame has {}",
                        frame.len()
                    ),
                )),
                Matcher::Binary { .. } => {
                    candidates.push((1, rule, "a field could not be read from the frame".into()))
                }
                Matcher::Json => {
                    let json = serde_json::from_slice::<serde_json::Value>(frame).ok();
                    match json {
                        Some(v) if v.is_object() => candidates.push((
                            frame.len(),
                            rule,
                            "the frame is a JSON object, but a field the rule uses is missing"
                                .into(),
                        )),
                        _ => candidates.push((0, rule, "the frame is not a JSON object".into())),
                    }
                }
                Matcher::Any | Matcher::Points => {}
            }
        }
        let best = candidates
            .into_iter()
            .fold(None, |best: Option<(usize, &Rule, String)>, c| match best {
                Some(b) if b.0 >= c.0 => Some(b),
                _ => Some(c),
            });
        best.map(|(_, rule, why)| Closest {
            rule: rule.name.clone(),
            why,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::schema;
    use std::sync::Arc;

    fn set(rules: &[(&str, &str)]) -> RuleSet {
        RuleSet::new(
            rules
                .iter()
                .map(|(name, yaml)| {
                    let raw: schema::Rule = serde_yaml::from_str(yaml).unwrap();
                    Arc::new(Rule::compile(name, &raw).unwrap())
                })
                .collect(),
        )
    }

    #[test]
    fn the_closest_regex_rule_is_the_one_that_reads_furthest_and_says_where_it_parted() {
        let s = set(&[
            ("gps", "match: '^\\$GPGGA,(?P<t>[0-9.]+)'\npublish: [{topic: a, payload: '{t}'}]"),
            ("climate", "match: '^T=(?P<t>-?[0-9.]+);H=(?P<h>[0-9]+)$'\npublish: [{topic: a, payload: '{t}'}]"),
        ]);
        let c = s.closest(b"T=21.5;X=40").unwrap();
        assert_eq!(c.rule, "climate");
        assert_eq!(c.why, "matches `T=21.5;` (7 bytes), then not `X` at byte 8");
        let c = s.closest(b"T:21.5").unwrap();
        assert_eq!(c.rule, "climate");
        assert_eq!(c.why, "matches `T` (1 byte), then not `:` at byte 2");
        let c = s.closest(b"T=21.5;H=").unwrap();
        assert!(c.why.contains("ends before"), "{}", c.why);
        let c = s.closest(b"\xff\xfe").unwrap();
        assert!(c.why.contains("not UTF-8"), "{}", c.why);
    }

    #[test]
    fn binary_and_json_rules_say_what_the_frame_lacks() {
        let s = set(&[(
            "power",
            "fields: [{name: v, offset: 0, type: u16le}, {name: a, offset: 2, type: i16le}]\npublish: [{topic: a, payload: '{v}'}]",
        )]);
        let c = s.closest(b"\x01\x02").unwrap();
        assert!(
            c.why.contains("at least 4 bytes; the frame has 2"),
            "{}",
            c.why
        );
        let s = set(&[("j", "json: true\npublish: [{topic: a, payload: '{temp}'}]")]);
        assert!(s
            .closest(b"nope")
            .unwrap()
            .why
            .contains("not a JSON object"));
        assert!(s
            .closest(br#"{"x":1}"#)
            .unwrap()
            .why
            .contains("field the rule uses is missing"));
    }
}

//! Where each key of a YAML file sits, so that errors found after parsing (a bad regex, an unknown
//! rule name) can still point at `file:line:column` like serde's own errors do.
//!
//! serde_yaml keeps no spans once a value is deserialized, so the file is walked once more with
//! yaml-rust2's event parser, which reports a marker for every node.

use std::collections::HashMap;

use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// A 1-based line and column in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// 1-based line.
    pub line: usize,
    /// 1-based column.
    pub column: usize,
}

/// Positions of every mapping key and sequence item, by dotted path (`devices[0].baud`).
#[derive(Debug, Default)]
pub struct Locations {
    by_path: HashMap<String, Position>,
    /// Keys that appear twice in one mapping, in file order.
    pub duplicates: Vec<Duplicate>,
}

/// A key written twice in one mapping: YAML loaders keep only one of the two, silently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    /// Dotted path of the key (`rules.climate`).
    pub path: String,
    /// Where it first appears.
    pub first: Position,
    /// Where it appears again.
    pub again: Position,
}

impl Locations {
    /// Walks `text`; a file that does not parse yields an empty map (serde reports that error).
    pub fn scan(text: &str) -> Self {
        let mut walker = Walker::default();
        let mut parser = Parser::new_from_str(text);
        if parser.load(&mut walker, false).is_err() {
            return Self::default();
        }
        Self {
            by_path: walker.found,
            duplicates: walker.duplicates,
        }
    }

    /// The first position (in file order) of a key named `key`, wherever it is.
    pub fn find_key(&self, key: &str) -> Option<Position> {
        self.by_path
            .iter()
            .filter(|(path, _)| {
                path.strip_suffix(key)
                    .is_some_and(|rest| rest.is_empty() || rest.ends_with('.'))
            })
            .map(|(_, pos)| *pos)
            .min_by_key(|p| (p.line, p.column))
    }

    /// Gives `path` (a key that is not in the file: one a model added) the position of `to`
    /// (or of its nearest ancestor), so that its errors point there.
    pub fn alias(&mut self, path: String, to: &str) {
        if let Some(pos) = self.find(to) {
            self.by_path.entry(path).or_insert(pos);
        }
    }

    /// The position of `path`, or of its nearest ancestor that has one.
    pub fn find(&self, path: &str) -> Option<Position> {
        let mut p = path;
        loop {
            if let Some(pos) = self.by_path.get(p) {
                return Some(*pos);
            }
            let cut = p.rfind(['.', '['])?;
            p = &p[..cut];
        }
    }
}

enum Frame {
    Map {
        path: String,
        key: Option<String>,
        /// Keys seen in this mapping, with their first position.
        keys: HashMap<String, Position>,
    },
    Seq {
        path: String,
        index: usize,
    },
}

#[derive(Default)]
struct Walker {
    stack: Vec<Frame>,
    found: HashMap<String, Position>,
    duplicates: Vec<Duplicate>,
}

fn join(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_owned()
    } else {
        format!("{parent}.{key}")
    }
}

fn position(mark: Marker) -> Position {
    // yaml-rust2 lines are 1-based, columns 0-based.
    Position {
        line: mark.line(),
        column: mark.col() + 1,
    }
}

impl Walker {
    /// The path of the node that starts now, recording it; advances the parent's state.
    fn child_path(&mut self, mark: Marker) -> Option<String> {
        let pos = position(mark);
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Seq { path, index }) => {
                let p = format!("{path}[{index}]");
                *index += 1;
                self.found.entry(p.clone()).or_insert(pos);
                Some(p)
            }
            Some(Frame::Map { path, key, .. }) => key.take().map(|k| join(path, &k)),
        }
    }

    fn scalar(&mut self, value: String, mark: Marker) {
        let pos = position(mark);
        match self.stack.last_mut() {
            Some(Frame::Map { path, key, keys }) => {
                if key.is_none() {
                    let full = join(path, &value);
                    match keys.get(&value) {
                        Some(&first) => self.duplicates.push(Duplicate {
                            path: full,
                            first,
                            again: pos,
                        }),
                        None => {
                            keys.insert(value.clone(), pos);
                            self.found.insert(full, pos);
                        }
                    }
                    *key = Some(value);
                } else {
                    *key = None;
                }
            }
            Some(Frame::Seq { path, index }) => {
                self.found.entry(format!("{path}[{index}]")).or_insert(pos);
                *index += 1;
            }
            None => {}
        }
    }
}

impl MarkedEventReceiver for Walker {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(value, ..) => self.scalar(value, mark),
            Event::Alias(_) => self.scalar(String::new(), mark),
            Event::MappingStart(..) => {
                let path = self.child_path(mark).unwrap_or_default();
                self.stack.push(Frame::Map {
                    path,
                    key: None,
                    keys: HashMap::new(),
                });
            }
            Event::SequenceStart(..) => {
                let path = self.child_path(mark).unwrap_or_default();
                self.stack.push(Frame::Seq { path, index: 0 });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_keys_and_items_by_path() {
        let text = "gateway:\n  id: pi\ndevices:\n  - name: a\n    baud: 9600\n  - {name: b, port: /dev/x}\nrules:\n  climate:\n    match: 'x'\n";
        let loc = Locations::scan(text);
        assert_eq!(
            loc.find("gateway.id"),
            Some(Position { line: 2, column: 3 })
        );
        assert_eq!(
            loc.find("devices[0].baud"),
            Some(Position { line: 5, column: 5 })
        );
        assert_eq!(loc.find("devices[1].port").map(|p| p.line), Some(6));
        assert_eq!(loc.find("rules.climate.match").map(|p| p.line), Some(9));
        // Unknown leaf: falls back to the nearest ancestor.
        assert_eq!(
            loc.find("rules.climate.publish[3]").map(|p| p.line),
            Some(8)
        );
        assert!(loc.duplicates.is_empty());
    }

    #[test]
    fn a_key_written_twice_in_one_mapping_is_found_with_both_lines() {
        let text = "rules:\n  a: {match: x}\n  b: {match: y}\n  a: {match: z}\ndevices:\n  - {name: d, name: e}\nrules: {}\n";
        let d = Locations::scan(text).duplicates;
        let got: Vec<(&str, usize, usize)> = d
            .iter()
            .map(|d| (d.path.as_str(), d.first.line, d.again.line))
            .collect();
        assert_eq!(
            got,
            [
                ("rules.a", 2, 4),
                ("devices[0].name", 6, 6),
                ("rules", 1, 7)
            ]
        );
        // The same name in two different mappings is no duplicate.
        assert!(Locations::scan("a: {x: 1}\nb: {x: 2}\n")
            .duplicates
            .is_empty());
    }
}

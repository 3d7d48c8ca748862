//! What the user reads when a config is wrong: each problem as `file:line:column: message`
//! plus what to write instead, and the nearest valid word for a typo.

use std::fmt;
use std::path::{Path, PathBuf};

use super::locate::{Locations, Position};

/// One problem in the config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// Where in the file, when known.
    pub position: Option<Position>,
    /// What is wrong.
    pub message: String,
    /// What to write instead.
    pub help: Option<String>,
}

/// Why a config file cannot be used: every problem found, with positions.
#[derive(Debug)]
pub struct ConfigError {
    /// The file.
    pub file: PathBuf,
    /// The problems.
    pub diagnostics: Vec<Diagnostic>,
}

impl Diagnostic {
    /// Formats as `file:line:column: prefix: message` with an indented help line.
    pub fn render(&self, file: &Path, prefix: &str) -> String {
        let mut s = match self.position {
            Some(p) => format!(
                "{}:{}:{}: {prefix}: {}",
                file.display(),
                p.line,
                p.column,
                self.message
            ),
            None => format!("{}: {prefix}: {}", file.display(), self.message),
        };
        if let Some(h) = &self.help {
            s.push_str("\n  help: ");
            s.push_str(h);
        }
        s
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.diagnostics.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{}", d.render(&self.file, "error"))?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigError {}

/// The closest of `candidates` to `word`, when it is close enough to be a likely typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .into_iter()
        .map(|c| (strsim::jaro_winkler(word, c), c))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// Turns a serde_yaml error into a diagnostic: position from the error, the trailing
/// "at line … column …" removed, and for an unknown key or value the nearest valid one.
pub(super) fn serde_diagnostic(e: &serde_yaml::Error) -> Diagnostic {
    let mut message = e.to_string();
    if let Some(cut) = message.rfind(" at line ") {
        if message[cut..].contains(" column ") {
            message.truncate(cut);
        }
    }
    let position = e.location().map(|l| Position {
        line: l.line(),
        column: l.column(),
    });
    let mut help = None;
    for what in ["unknown field `", "unknown variant `"] {
        let Some(start) = message.find(what) else {
            continue;
        };
        let rest = &message[start + what.len()..];
        let Some(end) = rest.find('`') else { continue };
        let word = rest[..end].to_owned();
        let expected: Vec<String> = rest[end..]
            .split('`')
            .skip(2)
            .step_by(2)
            .map(str::to_owned)
            .collect();
        let noun = if what.contains("field") {
            "keys"
        } else {
            "values"
        };
        let list = expected.join(", ");
        help = Some(match suggest(&word, expected.iter().map(String::as_str)) {
            Some(s) => format!("did you mean `{s}`? valid {noun} here: {list}"),
            None if list.is_empty() => format!("remove `{word}`"),
            None => format!("valid {noun} here: {list}"),
        });
        if let Some(cut) = message.find(", expected") {
            message.truncate(cut);
        }
    }
    // Type errors that say what was wrong but not what to write.
    let hints: [(&str, &str); 5] = [
        ("expected a boolean", "write true or false"),
        (
            "expected a duration",
            "write a duration with a unit, e.g. 30s, 500ms, 5m (a bare number has no unit)",
        ),
        (
            "invalid socket address syntax",
            "write an IP address and a port, e.g. 127.0.0.1:1883 (loopback only) or 0.0.0.0:1883 (every interface); host names are not accepted here",
        ),
        (
            "expected integer overflow",
            "write a size, e.g. 512MiB, 64KiB or 2GB",
        ),
        ("expected u64", "write a size, e.g. 512MiB, 64KiB or 2GB"),
    ];
    if help.is_none() {
        if let Some((_, h)) = hints.iter().find(|(m, _)| message.contains(m)) {
            help = Some((*h).to_string());
        }
    }
    if message.contains("expected integer overflow") {
        // bytesize's own wording: the value is not a size at all.
        message = message.replace("expected integer overflow", "expected a size");
    }
    if help.is_none() && message.contains("did not find expected") {
        help = Some("check the indentation and quoting around this line; quote values that contain `: ` or start with `{` or `*`".into());
    }
    Diagnostic {
        position,
        message,
        help,
    }
}

/// The problems found by the checks: errors (the file is refused) and warnings (it runs).
pub struct Problems<'a> {
    locations: &'a Locations,
    /// Refuse the file.
    pub errors: Vec<Diagnostic>,
    /// Legal but probably not meant.
    pub warnings: Vec<Diagnostic>,
}

impl<'a> Problems<'a> {
    /// No problems yet; positions are looked up in `locations`.
    pub fn new(locations: &'a Locations) -> Self {
        Self {
            locations,
            errors: Vec::new(),
            warnings: Vec::new(),
        }
    }
    fn diag(&self, path: &str, message: String, help: Option<String>) -> Diagnostic {
        Diagnostic {
            position: self.locations.find(path),
            message: if path.is_empty() {
                message
            } else {
                format!("{path}: {message}")
            },
            help,
        }
    }
    /// An error at the key `path` (dotted, e.g. `devices[0].port`).
    pub fn error(&mut self, path: &str, message: impl Into<String>, help: Option<String>) {
        let d = self.diag(path, message.into(), help);
        self.errors.push(d);
    }
    /// A warning at the key `path`.
    pub fn warn(&mut self, path: &str, message: impl Into<String>, help: Option<String>) {
        let d = self.diag(path, message.into(), help);
        self.warnings.push(d);
    }
}

//! Configuration: the YAML file a user edits, checked as a whole before anything starts.
//!
//! Loading is two steps. serde reads the file into [`schema`] types (unknown keys rejected, with
//! the nearest valid key suggested; serde stops at the first such error), then [`validate`]
//! checks what serde cannot — names that refer to each other, regexes, templates, serial
//! settings — and compiles the rules, reporting every problem of that step at once. Each is
//! `file:line:column: message` plus a line saying what to write instead.

pub mod locate;
pub mod schema;
pub mod uplink;

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::rules::command::{Command, DeviceCommand};
use crate::rules::template::{Template, TemplateError};
use crate::rules::{suggest, Rule, RuleSet};
use crate::serial::framing::Framing;
use locate::{Locations, Position};

/// Where the daemon looks for its config when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/serial2mqtt/config.yaml";

/// A validated config, ready to run.
#[derive(Debug)]
pub struct Config {
    /// The file it came from.
    pub source: PathBuf,
    /// Gateway identity and state directory.
    pub gateway: Gateway,
    /// Embedded broker settings.
    pub broker: schema::Broker,
    /// Log filter.
    pub log_level: String,
    /// Devices, with their compiled rules.
    pub devices: Vec<Device>,
    /// The upstream broker, if any.
    pub uplink: Option<uplink::UplinkSettings>,
    /// The store-and-forward queue (used when there is an uplink).
    pub queue: uplink::QueueSettings,
    /// Where the Prometheus endpoint listens, if anywhere.
    pub metrics: Option<std::net::SocketAddr>,
    /// Home Assistant discovery prefix and birth topic.
    pub homeassistant: schema::HomeAssistantSettings,
    /// Things that are legal but probably not meant (an unused rule, a missing port).
    pub warnings: Vec<Diagnostic>,
}

/// Identity of this gateway.
#[derive(Debug, Clone)]
pub struct Gateway {
    /// `{gateway}` in templates.
    pub id: String,
    /// Durable state directory.
    pub state_dir: PathBuf,
    /// Stats message period (zero: off).
    pub stats_interval: std::time::Duration,
}

/// Where a device's bytes come from.
#[derive(Debug, Clone)]
pub enum PortSource {
    /// A serial device path.
    Path(PathBuf),
    /// A built-in simulated sensor on a pseudo-terminal.
    Simulated(schema::Simulate),
}

/// Line settings of a serial port.
#[derive(Debug, Clone, Copy)]
pub struct SerialSettings {
    /// Baud rate.
    pub baud: u32,
    /// Data bits.
    pub data_bits: tokio_serial::DataBits,
    /// Parity.
    pub parity: tokio_serial::Parity,
    /// Stop bits.
    pub stop_bits: tokio_serial::StopBits,
    /// Flow control.
    pub flow_control: tokio_serial::FlowControl,
}

/// One device, validated.
#[derive(Debug, Clone)]
pub struct Device {
    /// `{device}` in templates.
    pub name: String,
    /// Where its bytes come from.
    pub source: PortSource,
    /// Line settings.
    pub serial: SerialSettings,
    /// Frame splitting.
    pub framing: Framing,
    /// Largest frame.
    pub max_frame: usize,
    /// Compiled rules in try order.
    pub rules: RuleSet,
    /// Retained `online`/`offline` topic.
    pub state_topic: String,
    /// Topic for unmatched frames, if any.
    pub unmatched_topic: Option<String>,
    /// Commands written to the device, with filters expanded for it.
    pub commands: Vec<DeviceCommand>,
}

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

/// Reads and validates the config file at `path`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
        file: path.to_owned(),
        diagnostics: vec![Diagnostic {
            position: None,
            message: format!("cannot read the config file: {e}"),
            help: Some(format!(
                "pass --config FILE, or create {} from config/serial2mqtt.yaml",
                path.display()
            )),
        }],
    })?;
    parse(&text, path)
}

/// Parses and validates config text; `file` is used in messages.
pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
    let fail = |diagnostics| ConfigError {
        file: file.to_owned(),
        diagnostics,
    };
    // An empty file (an editor that truncated it, a failed copy) is never "no devices": on a
    // reload it would stop every device. Comments only count as empty too.
    if matches!(
        serde_yaml::from_str::<serde_yaml::Value>(text),
        Ok(serde_yaml::Value::Null)
    ) {
        return Err(fail(vec![Diagnostic {
            position: None,
            message: "the file is empty (no settings, at most comments)".into(),
            help: Some(
                "write the gateway's settings; start from config/serial2mqtt.yaml (installed as \
                 /usr/share/doc/serial2mqtt/serial2mqtt.yaml)"
                    .into(),
            ),
        }]));
    }
    // YAML loaders keep one of two equal keys silently (a second rule named like the first
    // replaces it): each one is an error at the second, naming the first.
    let locations = Locations::scan(text);
    if !locations.duplicates.is_empty() {
        return Err(fail(
            locations
                .duplicates
                .iter()
                .map(|d| Diagnostic {
                    position: Some(d.again),
                    message: format!(
                        "`{}` is written twice (first at line {}): the second would silently replace the first",
                        d.path, d.first.line
                    ),
                    help: Some("give one of them another name, or merge them into one".into()),
                })
                .collect(),
        ));
    }
    let raw: schema::File = match serde_yaml::from_str(text) {
        Ok(raw) => raw,
        Err(e) => return Err(fail(vec![serde_diagnostic(&e)])),
    };
    validate(raw, file, &locations).map_err(fail)
}

/// Turns a serde_yaml error into a diagnostic: position from the error, the trailing
/// "at line … column …" removed, and for an unknown key or value the nearest valid one.
fn serde_diagnostic(e: &serde_yaml::Error) -> Diagnostic {
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

pub(crate) struct Problems<'a> {
    locations: &'a Locations,
    errors: Vec<Diagnostic>,
    warnings: Vec<Diagnostic>,
}

impl Problems<'_> {
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
    fn error(&mut self, path: &str, message: impl Into<String>, help: Option<String>) {
        let d = self.diag(path, message.into(), help);
        self.errors.push(d);
    }
    fn warn(&mut self, path: &str, message: impl Into<String>, help: Option<String>) {
        let d = self.diag(path, message.into(), help);
        self.warnings.push(d);
    }
}

/// A topic of the gateway's own (device state, unmatched frames): `{gateway}` and `{device}` only.
fn builtin_only_template(text: &str) -> Result<Template, TemplateError> {
    let t = Template::parse_static(text, "this topic")?;
    if t.literals().any(|l| l.contains(['+', '#'])) {
        return Err(TemplateError {
            message: format!("topic `{text}` contains a wildcard"),
            help: Some("remove + and #".into()),
        });
    }
    Ok(t)
}

/// Checks that `port` can be a serial port: a missing one (it may be plugged in later), and
/// anything that exists and cannot be one, is a warning saying what it is.
fn check_port(port: &Path, key: &str, p: &mut Problems) {
    use std::os::unix::fs::FileTypeExt;
    let shown = port.display();
    let help = Some(
        "write the device's path, e.g. /dev/ttyUSB0, or better its /dev/serial/by-id/... link (`serial2mqtt ports` lists them)"
            .to_string(),
    );
    let meta = match std::fs::metadata(port) {
        Ok(m) => m,
        Err(e) if e.raw_os_error() == Some(40) => {
            // ELOOP
            p.warn(key, format!("{shown} is a symlink loop"), help);
            return;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let dangling = std::fs::symlink_metadata(port).is_ok();
            p.warn(
                key,
                if dangling {
                    format!("{shown} is a symlink to nothing now; the device stays offline until its target appears")
                } else {
                    format!("{shown} does not exist now; the device stays offline until it appears")
                },
                None,
            );
            return;
        }
        Err(e) => {
            p.warn(key, format!("cannot inspect {shown}: {e}"), None);
            return;
        }
    };
    let ft = meta.file_type();
    let what = if ft.is_dir() {
        "a directory"
    } else if ft.is_file() {
        "a regular file"
    } else if ft.is_fifo() {
        "a named pipe"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_block_device() {
        "a block device (a disk)"
    } else if ft.is_char_device() && {
        use std::os::unix::fs::MetadataExt;
        // Major 1: the memory devices (/dev/null, /dev/zero, /dev/full, /dev/random, ...).
        (meta.rdev() >> 8) & 0xfff == 1
    } {
        "a memory device like /dev/null or /dev/zero"
    } else {
        return;
    };
    // A warning, not an error: the other devices still run, and this one retries (and says
    // why) until its path is fixed.
    p.warn(key, format!("{shown} is {what}, not a serial port"), help);
}

fn name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        Some("is empty")
    } else if name.contains(['+', '#', '/', '\0']) {
        Some("contains one of + # / (it becomes a single topic level)")
    } else {
        None
    }
}

/// Checks cross-references and values, and compiles the rules.
fn validate(
    raw: schema::File,
    file: &Path,
    locations: &Locations,
) -> Result<Config, Vec<Diagnostic>> {
    let mut p = Problems {
        locations,
        errors: Vec::new(),
        warnings: Vec::new(),
    };

    let id = match raw.gateway.id {
        Some(id) => id,
        None => gethostname::gethostname().to_string_lossy().into_owned(),
    };
    if let Some(why) = name_problem(&id) {
        p.error(
            "gateway.id",
            format!("gateway id `{id}` {why}"),
            Some("use letters, digits, - and _, e.g. `greenhouse-pi`".into()),
        );
    }
    let state_topic = builtin_only_template(&raw.gateway.state_topic)
        .map_err(|e| p.error("gateway.state_topic", e.message, e.help))
        .ok();
    let unmatched_topic = raw.gateway.unmatched_topic.as_deref().and_then(|t| {
        builtin_only_template(t)
            .map_err(|e| p.error("gateway.unmatched_topic", e.message, e.help))
            .ok()
    });

    if raw.broker.max_connections == 0 {
        p.error(
            "broker.max_connections",
            "must be at least 1",
            Some("write e.g. max_connections: 64".into()),
        );
    }
    if raw.broker.nice > 19 {
        p.error(
            "broker.nice",
            "must be between 0 and 19",
            Some(
                "write e.g. nice: 10 (0 serves local clients at the same priority as the readings)"
                    .into(),
            ),
        );
    }
    if raw.broker.max_inflight == 0 || raw.broker.max_inflight > u16::MAX as usize {
        p.error("broker.max_inflight", "must be between 1 and 65535", None);
    }
    if raw.broker.window.as_u64() < 4 * 1024 || raw.broker.window.as_u64() > 1 << 30 {
        p.error(
            "broker.window",
            format!("{} is out of range", raw.broker.window),
            Some("write a size between 4KiB and 1GiB, e.g. window: 64KiB".into()),
        );
    }
    if raw.broker.connect_timeout < std::time::Duration::from_secs(1)
        || raw.broker.connect_timeout.as_millis() > u16::MAX as u128
    {
        p.error(
            "broker.connect_timeout",
            "must be between 1s and 65s",
            Some("write e.g. connect_timeout: 5s".into()),
        );
    }

    let mut broker = raw.broker;
    if let Some(file) = broker.users_file.clone() {
        broker.users = read_users(&file, &mut p);
    }
    if let Some(tls) = &broker.tls {
        if let Err(why) = crate::uplink::tls::check_server_identity(&tls.cert_file, &tls.key_file) {
            p.error(
                "broker.tls",
                why,
                Some(
                    "give a PEM certificate chain in cert_file and its PEM private key in key_file"
                        .into(),
                ),
            );
        }
    }

    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&raw.log.level) {
        p.error(
            "log.level",
            format!("`{}` is not a log filter: {e}", raw.log.level),
            Some("write error, warn, info, debug or trace".into()),
        );
    }

    // Compile every rule once; devices share them.
    let mut compiled = std::collections::BTreeMap::new();
    for (name, rule) in &raw.rules {
        match Rule::compile(name, rule) {
            Ok(r) => {
                compiled.insert(name.clone(), Arc::new(r));
            }
            Err(errs) => {
                for e in errs {
                    let path = if e.path.is_empty() {
                        format!("rules.{name}")
                    } else {
                        format!("rules.{name}.{}", e.path)
                    };
                    p.error(&path, e.message, e.help);
                }
            }
        }
    }

    let mut commands = std::collections::BTreeMap::new();
    for (name, command) in &raw.commands {
        match Command::compile(name, command) {
            Ok(c) => {
                commands.insert(name.clone(), Arc::new(c));
            }
            Err(errs) => {
                for e in errs {
                    let path = if e.path.is_empty() {
                        format!("commands.{name}")
                    } else {
                        format!("commands.{name}.{}", e.path)
                    };
                    p.error(&path, e.message, e.help);
                }
            }
        }
    }

    let mut used = std::collections::BTreeSet::new();
    let mut used_commands = std::collections::BTreeSet::new();
    let mut names = std::collections::HashSet::new();
    let mut ports: std::collections::HashMap<PathBuf, String> = std::collections::HashMap::new();
    let mut devices = Vec::with_capacity(raw.devices.len());
    for (i, d) in raw.devices.into_iter().enumerate() {
        let path = format!("devices[{i}]");
        if let Some(why) = name_problem(&d.name) {
            p.error(
                &format!("{path}.name"),
                format!("device name `{}` {why}", d.name),
                None,
            );
        }
        if !names.insert(d.name.clone()) {
            p.error(
                &format!("{path}.name"),
                format!("device name `{}` is used twice", d.name),
                Some("give each device its own name".into()),
            );
        }
        let source = match (d.port, d.simulate) {
            (Some(port), None) => {
                check_port(&port, &format!("{path}.port"), &mut p);
                // One port, one reader: a second device on it would steal half the bytes.
                let key = std::fs::canonicalize(&port).unwrap_or_else(|_| port.clone());
                if let Some(first) = ports.get(&key) {
                    p.error(
                        &format!("{path}.port"),
                        format!(
                            "{} is also the port of device `{first}`: two devices cannot read one port (each would get part of the bytes)",
                            port.display()
                        ),
                        Some("keep one device per port; give each device its own adapter".into()),
                    );
                } else {
                    ports.insert(key, d.name.clone());
                }
                Some(PortSource::Path(port))
            }
            (None, Some(sim)) => Some(PortSource::Simulated(sim)),
            (Some(_), Some(_)) => {
                p.error(
                    &path,
                    format!("device `{}` sets both `port` and `simulate`", d.name),
                    Some(
                        "keep `port` for a real device, or `simulate` for the built-in simulator"
                            .into(),
                    ),
                );
                None
            }
            (None, None) => {
                p.error(&path, format!("device `{}` has no `port`", d.name), Some("add e.g. `port: /dev/serial/by-id/usb-...` (see `ls -l /dev/serial/by-id/`)".into()));
                None
            }
        };
        let data_bits = match d.data_bits {
            5 => Some(tokio_serial::DataBits::Five),
            6 => Some(tokio_serial::DataBits::Six),
            7 => Some(tokio_serial::DataBits::Seven),
            8 => Some(tokio_serial::DataBits::Eight),
            n => {
                p.error(
                    &format!("{path}.data_bits"),
                    format!("{n} data bits are not possible"),
                    Some("write 5, 6, 7 or 8".into()),
                );
                None
            }
        };
        let stop_bits = match d.stop_bits {
            1 => Some(tokio_serial::StopBits::One),
            2 => Some(tokio_serial::StopBits::Two),
            n => {
                p.error(
                    &format!("{path}.stop_bits"),
                    format!("{n} stop bits are not possible"),
                    Some("write 1 or 2".into()),
                );
                None
            }
        };
        if d.baud == 0 {
            p.error(
                &format!("{path}.baud"),
                "baud must be above 0",
                Some("write e.g. baud: 115200".into()),
            );
        }
        if let Err(e) = d.framing.validate() {
            p.error(&format!("{path}.framing"), e, None);
        }
        if let Framing::Delimiter(bytes) = &d.framing {
            // `"\xAB"` in YAML is the character U+00AB: the two bytes C2 AB on the wire.
            if let Some(c) = std::str::from_utf8(bytes)
                .ok()
                .and_then(|t| t.chars().find(|c| ('\u{80}'..='\u{ff}').contains(c)))
            {
                p.warn(
                    &format!("{path}.framing"),
                    format!(
                        "the delimiter contains the character U+{:04X}, which is {} bytes on the wire ({}), not the byte {:02X}",
                        c as u32,
                        c.len_utf8(),
                        hex::encode_upper(c.to_string()),
                        c as u32
                    ),
                    Some(format!(
                        "for the single byte {:02X}, write `framing: {{delimiter_hex: \"{:02X}\"}}`",
                        c as u32, c as u32
                    )),
                );
            }
        }
        if let Framing::Fixed(f) = &d.framing {
            let n = f.size;
            if n > d.max_frame {
                p.error(
                    &format!("{path}.framing"),
                    format!(
                        "fixed frames of {n} bytes are larger than max_frame ({})",
                        d.max_frame
                    ),
                    Some(format!("raise max_frame to at least {n}")),
                );
            }
        }
        if d.max_frame == 0 || d.max_frame > 16 * 1024 * 1024 {
            p.error(
                &format!("{path}.max_frame"),
                format!("{} is out of range", d.max_frame),
                Some("write a size in bytes between 1 and 16777216".into()),
            );
        }
        let mut rules = Vec::with_capacity(d.rules.len());
        for (j, r) in d.rules.iter().enumerate() {
            used.insert(r.clone());
            match compiled.get(r) {
                Some(rule) => {
                    if let (Framing::Fixed(f), Some(need)) = (&d.framing, rule.min_len()) {
                        if need > f.size {
                            p.error(
                                &format!("{path}.rules[{j}]"),
                                format!(
                                    "rule `{r}` reads bytes up to {need}, past the end of this device's {}-byte frames: it can never match",
                                    f.size
                                ),
                                Some(format!(
                                    "check the fields' offsets and types in rule `{r}`, or the frame size in `framing: {{fixed: {}}}`",
                                    f.size
                                )),
                            );
                        }
                    }
                    rules.push(Arc::clone(rule));
                }
                None if raw.rules.contains_key(r) => {} // reported where the rule is defined
                None => {
                    let help = match suggest(r, raw.rules.keys().map(String::as_str)) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None if raw.rules.is_empty() => "define it under `rules:`".to_owned(),
                        None => format!(
                            "rules defined: {}",
                            raw.rules.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    };
                    p.error(
                        &format!("{path}.rules[{j}]"),
                        format!("device `{}` uses rule `{r}`, which is not defined", d.name),
                        Some(help),
                    );
                }
            }
        }
        let mut device_commands = Vec::with_capacity(d.commands.len());
        for (j, c) in d.commands.iter().enumerate() {
            used_commands.insert(c.clone());
            match commands.get(c) {
                Some(command) => device_commands.push(command.for_device(&id, &d.name)),
                None if raw.commands.contains_key(c) => {} // reported where it is defined
                None => {
                    let help = match suggest(c, raw.commands.keys().map(String::as_str)) {
                        Some(s) => format!("did you mean `{s}`?"),
                        None if raw.commands.is_empty() => "define it under `commands:`".to_owned(),
                        None => format!(
                            "commands defined: {}",
                            raw.commands.keys().cloned().collect::<Vec<_>>().join(", ")
                        ),
                    };
                    p.error(
                        &format!("{path}.commands[{j}]"),
                        format!(
                            "device `{}` uses command `{c}`, which is not defined",
                            d.name
                        ),
                        Some(help),
                    );
                }
            }
        }
        let filters: Vec<String> = device_commands.iter().map(|c| c.filter.clone()).collect();
        if filters.len() > 1 && crate::downlink::covers(std::slice::from_ref(&filters)) == ["#"] {
            p.warn(
                &format!("{path}.commands"),
                format!(
                    "the commands of `{}` share no first topic level ({}): to keep their order the gateway must look at every message on its broker",
                    d.name,
                    filters.join(", ")
                ),
                Some("give them a common prefix, e.g. `cmd/{gateway}/{device}/...`".into()),
            );
        }
        if d.rules.is_empty() && d.commands.is_empty() {
            p.warn(
                &path,
                format!("device `{}` has no rules: every frame is unmatched", d.name),
                Some("add e.g. `rules: [climate]`".into()),
            );
        }
        let parity = match d.parity {
            schema::Parity::None => tokio_serial::Parity::None,
            schema::Parity::Odd => tokio_serial::Parity::Odd,
            schema::Parity::Even => tokio_serial::Parity::Even,
        };
        let flow_control = match d.flow_control {
            schema::FlowControl::None => tokio_serial::FlowControl::None,
            schema::FlowControl::Software => tokio_serial::FlowControl::Software,
            schema::FlowControl::Hardware => tokio_serial::FlowControl::Hardware,
        };
        let device_state_topic = state_topic.as_ref().map(|t| t.render_static(&id, &d.name));
        let device_unmatched_topic = unmatched_topic
            .as_ref()
            .map(|t| t.render_static(&id, &d.name));
        for (key, topic) in [
            ("gateway.state_topic", &device_state_topic),
            ("gateway.unmatched_topic", &device_unmatched_topic),
        ] {
            if let Some(why) = topic.as_deref().and_then(crate::message::topic_problem) {
                p.error(
                    key,
                    format!("for device `{}`: {why}", d.name),
                    Some(
                        "write a topic such as serial2mqtt/{gateway}/devices/{device}/state".into(),
                    ),
                );
            }
        }
        if let (Some(source), Some(data_bits), Some(stop_bits)) = (source, data_bits, stop_bits) {
            devices.push(Device {
                state_topic: device_state_topic.unwrap_or_default(),
                unmatched_topic: device_unmatched_topic,
                name: d.name,
                source,
                serial: SerialSettings {
                    baud: d.baud,
                    data_bits,
                    parity,
                    stop_bits,
                    flow_control,
                },
                framing: d.framing,
                max_frame: d.max_frame,
                rules: RuleSet::new(rules),
                commands: device_commands,
            });
        }
    }
    for name in raw.rules.keys().filter(|n| !used.contains(*n)) {
        p.warn(
            &format!("rules.{name}"),
            format!("rule `{name}` is not used by any device"),
            Some(format!(
                "add `{name}` to a device's `rules:` list, or remove it"
            )),
        );
    }

    for (i, d) in devices.iter().enumerate() {
        for (object, first, second) in crate::homeassistant::clashes(d, &id) {
            p.error(
                &format!("devices[{i}]"),
                format!(
                    "device `{}`: two Home Assistant entities would both be `{object}` (`{first}` and `{second}`)",
                    d.name
                ),
                Some("give one of them its own homeassistant: {object_id: ...}".into()),
            );
        }
    }
    // A reply on a topic some command listens to would be taken as a command, and answered...
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
    for name in raw.commands.keys().filter(|n| !used_commands.contains(*n)) {
        p.warn(
            &format!("commands.{name}"),
            format!("command `{name}` is not used by any device"),
            Some(format!(
                "add `{name}` to a device's `commands:` list, or remove it"
            )),
        );
    }

    let ha = &raw.homeassistant;
    if let Some(why) = crate::message::topic_problem(&ha.discovery_prefix) {
        p.error(
            "homeassistant.discovery_prefix",
            why,
            Some("write e.g. discovery_prefix: homeassistant".into()),
        );
    }
    if let Some(why) = crate::message::topic_problem(&ha.status_topic) {
        p.error(
            "homeassistant.status_topic",
            why,
            Some("write e.g. status_topic: homeassistant/status".into()),
        );
    }

    let uplink = raw
        .uplink
        .and_then(|u| uplink::validate_uplink(u, &id, &mut p));
    let queue = uplink::validate_queue(&raw.queue, &raw.gateway.state_dir, &mut p);

    if !p.errors.is_empty() {
        return Err(p.errors);
    }
    Ok(Config {
        source: file.to_owned(),
        gateway: Gateway {
            id,
            state_dir: raw.gateway.state_dir,
            stats_interval: raw.gateway.stats_interval,
        },
        broker,
        log_level: raw.log.level,
        devices,
        uplink,
        queue,
        metrics: raw.metrics.map(|m| m.listen),
        homeassistant: raw.homeassistant,
        warnings: p.warnings,
    })
}

/// Reads `broker.users_file`: `user:password` per line; blank lines and `#` comments skipped.
fn read_users(file: &Path, p: &mut Problems) -> Option<schema::Users> {
    let key = "broker.users_file";
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            p.error(
                key,
                format!("cannot read {}: {e}", file.display()),
                Some("create it with one `user:password` per line (chmod 640)".into()),
            );
            return None;
        }
    };
    uplink::warn_if_world_readable(key, file, p);
    let mut users = std::collections::HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        match line.split_once(':') {
            Some((user, pass)) if !user.is_empty() && !pass.is_empty() => {
                users.insert(user.to_owned(), pass.to_owned());
            }
            // The line may hold a password: say where, never what.
            _ => p.error(
                key,
                format!("{}:{}: not a `user:password` line", file.display(), i + 1),
                Some("write one `user:password` per line".into()),
            ),
        }
    }
    if users.is_empty() {
        p.error(
            key,
            format!(
                "{} holds no `user:password` line: no client could log in",
                file.display()
            ),
            Some("add a line like `dashboard:a-long-password`, or remove users_file".into()),
        );
        return None;
    }
    Some(schema::Users(users))
}

#[cfg(test)]
mod tests;

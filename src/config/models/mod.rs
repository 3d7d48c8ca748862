//! Device models: named, parameterised pieces of config (a device entry and its rules) that a
//! device takes with `model:` instead of writing them out.
//!
//! A model is data, not code: a YAML file in the format of `docs/models.md`, shipped in the
//! binary ([`builtin`], from `models/` of the source tree) or in the user's own directory,
//! which replaces a built-in of the same name. [`expand`] turns every model-based device into
//! the full form before the config is read (beside the merge keys, in `config::parse`), so every
//! check of the full form runs on it, and the full form stays first-class. The test
//! [`vector`]s are run by `crate::models::vectors` through the very code a device runs.

pub mod builtin;
pub mod expand;
pub mod vector;

pub use vector::{Expected, Registers, Vector, Words, DEVICE};

/// The identity a device built from a model carries (defined with the device entry it is on).
pub use crate::config::schema::ModelInfo;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use indexmap::IndexMap;
use serde::Deserialize;

/// One model file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Model {
    /// The name devices use (`eastron-sdm630`).
    pub model: String,
    /// Shown in Home Assistant's device and on the dashboard.
    pub manufacturer: String,
    /// The product as its maker names it.
    pub name: String,
    /// One line on what it is.
    #[serde(default)]
    pub about: String,
    /// How it talks, for the table of models and for `scan`.
    pub family: Family,
    /// Where its registers, frames and scales come from.
    pub documents: Vec<Document>,
    /// What a device may set, with defaults; `${name}` in `device` and `rules`.
    #[serde(default)]
    pub parameters: IndexMap<String, Parameter>,
    /// The keys of a `devices:` entry (all but name, port and simulate).
    pub device: serde_yaml::Mapping,
    /// Rules, as `rules:` of a config file, named by the device's `rules:`.
    #[serde(default)]
    pub rules: serde_yaml::Mapping,
    /// Commands (writable points), as `commands:` of a config file: on only for a device whose
    /// `commands:` names them.
    #[serde(default)]
    pub commands: serde_yaml::Mapping,
    /// What `scan` tries and what a real device reads.
    #[serde(default)]
    pub scan: Option<Scan>,
    /// Inputs and the exact messages they must give.
    #[serde(default)]
    pub tests: Vec<Vector>,
}

/// How a device talks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
pub enum Family {
    /// A Modbus RTU energy meter.
    #[serde(rename = "modbus meter")]
    ModbusMeter,
    /// A Modbus RTU sensor.
    #[serde(rename = "modbus sensor")]
    ModbusSensor,
    /// A Modbus RTU charge controller or inverter.
    #[serde(rename = "modbus inverter")]
    ModbusInverter,
    /// A text telegram pushed by the device (DSMR P1).
    #[serde(rename = "text telegram")]
    TextTelegram,
    /// Text blocks with a checksum pushed by the device (VE.Direct).
    #[serde(rename = "text block")]
    TextBlock,
    /// Binary frames pushed by the device.
    #[serde(rename = "binary push")]
    BinaryPush,
    /// Binary answers to polls.
    #[serde(rename = "binary polled")]
    BinaryPolled,
    /// Text answers to polls.
    #[serde(rename = "polled ascii")]
    PolledAscii,
    /// NMEA 0183 sentences.
    #[serde(rename = "nmea")]
    Nmea,
}

impl Family {
    /// As written in model files.
    pub fn name(self) -> &'static str {
        match self {
            Self::ModbusMeter => "modbus meter",
            Self::ModbusSensor => "modbus sensor",
            Self::ModbusInverter => "modbus inverter",
            Self::TextTelegram => "text telegram",
            Self::TextBlock => "text block",
            Self::BinaryPush => "binary push",
            Self::BinaryPolled => "binary polled",
            Self::PolledAscii => "polled ascii",
            Self::Nmea => "nmea",
        }
    }

    /// Whether devices of this family are Modbus units.
    pub fn modbus(self) -> bool {
        matches!(
            self,
            Self::ModbusMeter | Self::ModbusSensor | Self::ModbusInverter
        )
    }
}

/// A document a model was written from.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Document {
    /// Its title and version as printed.
    pub title: String,
    /// Where it was read.
    #[serde(default)]
    pub url: Option<String>,
}

/// A parameter of a model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parameter {
    /// The value when a device does not set it; none: the device must.
    #[serde(default)]
    pub default: Option<serde_yaml::Value>,
    /// What it is, for `serial2mqtt models show` and errors.
    #[serde(default)]
    pub about: String,
}

/// What `scan` tries, and what values a real device of this model reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scan {
    /// Line speeds to try, the factory setting first.
    #[serde(default)]
    pub bauds: Vec<u32>,
    /// Parities to try, the factory setting first.
    #[serde(default)]
    pub parity: Vec<crate::config::schema::Parity>,
    /// Ranges a real device's values fall in: a value outside rules the model out.
    #[serde(default)]
    pub plausible: BTreeMap<String, [f64; 2]>,
    /// A register that names the model (a meter code): its value proves it, another value
    /// rules it out.
    #[serde(default)]
    pub signature: Option<Signature>,
}

/// A Modbus register whose value the vendor documents as this model's code.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// An input register (function 4), 0-based.
    pub input: Option<u16>,
    /// A holding register (function 3), 0-based.
    pub holding: Option<u16>,
    /// The values a device of this model reads there.
    pub values: Vec<u16>,
    /// Where the document says so.
    #[serde(default)]
    pub about: String,
}

/// Where a model came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    /// Shipped in the binary, from this file of `models/`.
    BuiltIn(&'static str),
    /// The user's file.
    File(PathBuf),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::BuiltIn(file) => write!(f, "built-in models/{file}"),
            Self::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A model and where it came from.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The model.
    pub model: Model,
    /// Its file.
    pub origin: Origin,
    /// The file's text (`models show`).
    pub text: String,
}

impl Loaded {
    /// The identity a device built from it carries.
    pub fn info(&self) -> ModelInfo {
        ModelInfo {
            id: self.model.model.clone(),
            manufacturer: self.model.manufacturer.clone(),
            name: self.model.name.clone(),
        }
    }
}

/// The models a config can use: the built-ins, then the user's directory.
#[derive(Debug, Clone, Default)]
pub struct Library {
    models: BTreeMap<String, Loaded>,
    /// A user's file that replaced a built-in, as `(file, name)`.
    pub replaced: Vec<(PathBuf, String)>,
}

/// The directory of a config's own models: `models/` beside the file.
pub fn user_dir(config: &Path) -> PathBuf {
    config
        .parent()
        .unwrap_or_else(|| Path::new("."))
        .join("models")
}

impl Library {
    /// The models shipped in the binary (each is checked by the test suite; one that does not
    /// read is left out and named in the error list).
    pub fn builtin() -> (Self, Vec<String>) {
        Self::builtin_only(|_| true)
    }

    /// The built-ins whose file is named for one of `names` (a file is named for its model:
    /// a test keeps it so), so that a config reads only the models it uses.
    pub fn builtin_for(names: &[String]) -> (Self, Vec<String>) {
        Self::builtin_only(|file| {
            names
                .iter()
                .any(|n| file.strip_suffix(".yaml") == Some(n.as_str()))
        })
    }

    fn builtin_only(wanted: impl Fn(&str) -> bool) -> (Self, Vec<String>) {
        let mut lib = Self::default();
        let mut errors = Vec::new();
        for &(file, text) in builtin::FILES.iter().filter(|(f, _)| wanted(f)) {
            match parse(text, &format!("models/{file}")) {
                Ok(model) => {
                    lib.models.insert(
                        model.model.clone(),
                        Loaded {
                            model,
                            origin: Origin::BuiltIn(file),
                            text: text.to_owned(),
                        },
                    );
                }
                Err(e) => errors.push(e),
            }
        }
        (lib, errors)
    }

    /// The built-ins and the `*.yaml` files of `dir` (when it exists); errors say which file,
    /// line and what is wrong.
    pub fn with_dir(dir: &Path) -> Result<Self, Vec<String>> {
        Self::dir_over(Self::builtin(), dir)
    }

    /// [`Self::with_dir`] with only the built-ins named in `names` read.
    pub fn with_dir_for(dir: &Path, names: &[String]) -> Result<Self, Vec<String>> {
        Self::dir_over(Self::builtin_for(names), dir)
    }

    fn dir_over(
        (mut lib, mut errors): (Self, Vec<String>),
        dir: &Path,
    ) -> Result<Self, Vec<String>> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return if errors.is_empty() {
                    Ok(lib)
                } else {
                    Err(errors)
                };
            }
            Err(e) => return Err(vec![format!("{}: cannot read: {e}", dir.display())]),
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|x| x == "yaml" || x == "yml"))
            .collect();
        files.sort();
        for path in files {
            match lib.add_file(&path) {
                Ok(()) => {}
                Err(e) => errors.push(e),
            }
        }
        if errors.is_empty() {
            Ok(lib)
        } else {
            Err(errors)
        }
    }

    /// Reads one model file into the library (replacing a model of the same name).
    pub fn add_file(&mut self, path: &Path) -> Result<(), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{}: cannot read: {e}", path.display()))?;
        let model = parse(&text, &path.display().to_string())?;
        let name = model.model.clone();
        let old = self.models.insert(
            name.clone(),
            Loaded {
                model,
                origin: Origin::File(path.to_owned()),
                text,
            },
        );
        if old.is_some_and(|o| matches!(o.origin, Origin::BuiltIn(_))) {
            self.replaced.push((path.to_owned(), name));
        }
        Ok(())
    }

    /// The model named `name`.
    pub fn get(&self, name: &str) -> Option<&Loaded> {
        self.models.get(name)
    }

    /// Every model, by name.
    pub fn iter(&self) -> impl Iterator<Item = &Loaded> {
        self.models.values()
    }

    /// A device of model `model` named `name` on `port`, with `keys` (parameters and overrides)
    /// as a device entry would give them, built as `config::parse` builds it.
    pub fn device(
        &self,
        model: &str,
        name: &str,
        port: &str,
        keys: &serde_yaml::Mapping,
    ) -> Result<crate::config::Device, String> {
        use serde_yaml::{Mapping, Value};
        let mut device = Mapping::new();
        device.insert("name".into(), name.into());
        device.insert("port".into(), port.into());
        device.insert("model".into(), model.into());
        for (k, v) in keys {
            device.insert(k.clone(), v.clone());
        }
        let mut gateway = Mapping::new();
        gateway.insert("id".into(), "gw".into());
        let mut file = Mapping::new();
        file.insert("gateway".into(), Value::Mapping(gateway));
        file.insert(
            "devices".into(),
            Value::Sequence(vec![Value::Mapping(device)]),
        );
        let text = serde_yaml::to_string(&Value::Mapping(file)).map_err(|e| e.to_string())?;
        let config = crate::config::parse_with(&text, Path::new("model.yaml"), self)
            .map_err(|e| format!("the model does not expand to a valid device:\n{e}"))?;
        config
            .devices
            .into_iter()
            .next()
            .ok_or_else(|| "the model expands to no device".into())
    }

    /// The name nearest to a misspelt one, if any is near.
    pub fn nearest(&self, name: &str) -> Option<&str> {
        let built_in = builtin::FILES
            .iter()
            .filter_map(|(f, _)| f.strip_suffix(".yaml"));
        self.models
            .keys()
            .map(String::as_str)
            .chain(built_in)
            .map(|k| (strsim::jaro_winkler(k, name), k))
            .filter(|(score, _)| *score > 0.8)
            .max_by(|a, b| a.0.total_cmp(&b.0))
            .map(|(_, k)| k)
    }
}

/// Reads a model file's text; `file` names it in errors (`file:line:column: what`).
pub fn parse(text: &str, file: &str) -> Result<Model, String> {
    let model: Model = serde_yaml::from_str(text).map_err(|e| match e.location() {
        Some(at) => format!("{file}:{}:{}: {e}", at.line(), at.column()),
        None => format!("{file}: {e}"),
    })?;
    let undeclared = expand::undeclared(&model);
    if let Some(p) = undeclared.first() {
        return Err(format!(
            "{file}: `${{{p}}}` is used but not declared under `parameters:` (declared: {})",
            declared(&model)
        ));
    }
    if !model
        .model
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
    {
        return Err(format!(
            "{file}: model name `{}` must be lower-case letters, digits and `-` (e.g. eastron-sdm630)",
            model.model
        ));
    }
    Ok(model)
}

/// The declared parameters, for messages.
fn declared(model: &Model) -> String {
    if model.parameters.is_empty() {
        "none".into()
    } else {
        model
            .parameters
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }
}

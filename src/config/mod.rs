//! Configuration: the YAML file a user edits, checked as a whole before anything starts.
//!
//! Loading is load → parse → check. serde reads the file into [`schema`] types (unknown keys
//! rejected, with the nearest valid key suggested; serde stops at the first such error), after
//! [`locate`] has found every key's position (and any key written twice). Then [`check`] runs one
//! small check per section — names that refer to each other, regexes, templates, serial
//! settings, files — and compiles the rules, reporting every problem of that step at once, as
//! [`diagnostics`]: `file:line:column: message` plus a line saying what to write instead. The
//! result is the validated [`model`]; [`diff`] says what a reload changes.

pub mod check;
pub mod diagnostics;
pub mod diff;
pub mod locate;
pub mod model;
pub mod models;
pub mod schema;

use std::path::Path;

use serde::Deserialize;

pub use diagnostics::{ConfigError, Diagnostic};

pub use model::{
    Config, Device, DeviceSpec, Endpoint, Gateway, PortSource, QueueSettings, Secret,
    SerialSettings, UplinkSettings, WebSettings,
};

pub use diff::ConfigDiff;

use locate::Locations;

/// Where the daemon looks for its config when `--config` is not given.
pub const DEFAULT_PATH: &str = "/etc/serial2mqtt/config.yaml";

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

/// Parses and validates config text; `file` is used in messages, and its directory's
/// `models/` extends the built-in models.
pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
    parse_inner(text, file, None)
}

/// [`parse`] with the models of `library` (a model file under test).
pub fn parse_with(
    text: &str,
    file: &Path,
    library: &crate::config::models::Library,
) -> Result<Config, ConfigError> {
    parse_inner(text, file, Some(library))
}

fn parse_inner(
    text: &str,
    file: &Path,
    library: Option<&crate::config::models::Library>,
) -> Result<Config, ConfigError> {
    let fail = |diagnostics| ConfigError {
        file: file.to_owned(),
        diagnostics,
    };
    // An empty file (an editor that truncated it, a failed copy) is never "no devices": on a
    // reload it would stop every device. Comments only count as empty too.
    let value = serde_yaml::from_str::<serde_yaml::Value>(text);
    if matches!(value, Ok(serde_yaml::Value::Null)) {
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
    let mut locations = Locations::scan(text);
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
    let mut replaced = Vec::new();
    let raw: schema::File = match value {
        // YAML merge keys (`<<: *line`: several devices sharing settings) are resolved first,
        // the loader leaves them to the application; top-level `x-` keys hold the anchors.
        // Then devices that name a model are expanded to the full form.
        Ok(mut value)
            if has_merge_keys(&value)
                || has_extension_keys(&value)
                || crate::config::models::expand::uses_models(&value) =>
        {
            let models =
                resolve(&mut value, file, library, &mut locations, &mut replaced).map_err(fail)?;
            crate::config::models::expand::strip_model_keys(&mut value);
            let devices = value.get("devices").cloned();
            match serde::Deserialize::deserialize(value) {
                Ok(raw) => {
                    let mut raw: schema::File = raw;
                    for (d, m) in raw.devices.iter_mut().zip(models) {
                        d.model = m;
                    }
                    raw
                }
                Err(e) => {
                    // Merged values carry no positions: point at the key the error names.
                    let mut d = diagnostics::serde_diagnostic(&e);
                    d.position = d.position.or_else(|| {
                        let key = d.message.split('`').nth(1)?;
                        locations.find_key(key)
                    });
                    if d.position.is_none() {
                        // A value of the wrong type names no key: find the device it is in.
                        if let Some(i) = failing_device(devices.as_ref()) {
                            d.position = locations.find(&format!("devices[{i}]"));
                            d.message = format!("devices[{i}]: {}", d.message);
                        }
                    }
                    return Err(fail(vec![d]));
                }
            }
        }
        _ => match serde_yaml::from_str(text) {
            Ok(raw) => raw,
            Err(e) => return Err(fail(vec![diagnostics::serde_diagnostic(&e)])),
        },
    };
    let mut config = check::check(raw, file, &locations).map_err(fail)?;
    for (path, name) in replaced {
        config.warnings.push(Diagnostic {
            position: None,
            message: format!("{} replaces the built-in model `{name}`", path.display()),
            help: Some("rename its `model:` to keep both".into()),
        });
    }
    Ok(config)
}

/// The index of the first device entry that does not read as one.
fn failing_device(devices: Option<&serde_yaml::Value>) -> Option<usize> {
    devices?
        .as_sequence()?
        .iter()
        .position(|d| schema::Device::deserialize(d.clone()).is_err())
}

/// The file as the gateway reads it: merge keys resolved, `x-` keys gone, every device that
/// names a model in its full form (`check --expand`).
pub fn expanded(text: &str, file: &Path) -> Result<serde_yaml::Value, ConfigError> {
    let fail = |diagnostics| ConfigError {
        file: file.to_owned(),
        diagnostics,
    };
    let mut value: serde_yaml::Value =
        serde_yaml::from_str(text).map_err(|e| fail(vec![diagnostics::serde_diagnostic(&e)]))?;
    let mut locations = Locations::scan(text);
    resolve(&mut value, file, None, &mut locations, &mut Vec::new()).map_err(fail)?;
    Ok(value)
}

/// Resolves merge keys and `x-` keys, and expands model-based devices (the library: the
/// built-ins and `models/` beside `file`); returns each device's model.
fn resolve(
    value: &mut serde_yaml::Value,
    file: &Path,
    library: Option<&crate::config::models::Library>,
    locations: &mut Locations,
    replaced: &mut Vec<(std::path::PathBuf, String)>,
) -> Result<Vec<Option<crate::config::models::ModelInfo>>, Vec<Diagnostic>> {
    if let serde_yaml::Value::Mapping(m) = value {
        m.retain(|k, _| !is_extension_key(k));
    }
    if let Err(e) = value.apply_merge() {
        return Err(vec![diagnostics::serde_diagnostic(&e)]);
    }
    if !crate::config::models::expand::uses_models(value) {
        return Ok(Vec::new());
    }
    if let Some(library) = library {
        return crate::config::models::expand::expand(value, library, locations);
    }
    let dir = crate::config::models::user_dir(file);
    // Only the built-ins the devices name are read (each is a YAML tree while it is expanded).
    let names = crate::config::models::expand::named(value);
    let library = crate::config::models::Library::with_dir_for(&dir, &names).map_err(|errors| {
        errors
            .into_iter()
            .map(|message| Diagnostic {
                position: None,
                message: format!("model file {message}"),
                help: Some("fix the model file, or move it out of the models directory".into()),
            })
            .collect::<Vec<_>>()
    })?;
    replaced.extend(library.replaced.iter().cloned());
    crate::config::models::expand::expand(value, &library, locations)
}

/// A top-level key that is no setting but a place for anchors (`x-line: &line {...}`), as
/// in Compose files.
fn is_extension_key(k: &serde_yaml::Value) -> bool {
    k.as_str().is_some_and(|k| k.starts_with("x-"))
}

fn has_extension_keys(v: &serde_yaml::Value) -> bool {
    v.as_mapping()
        .is_some_and(|m| m.keys().any(is_extension_key))
}

/// Whether a mapping anywhere in `v` has a `<<` merge key.
fn has_merge_keys(v: &serde_yaml::Value) -> bool {
    match v {
        serde_yaml::Value::Mapping(m) => m
            .iter()
            .any(|(k, v)| k.as_str() == Some("<<") || has_merge_keys(v)),
        serde_yaml::Value::Sequence(s) => s.iter().any(has_merge_keys),
        serde_yaml::Value::Tagged(t) => has_merge_keys(&t.value),
        _ => false,
    }
}

#[cfg(test)]
mod tests;

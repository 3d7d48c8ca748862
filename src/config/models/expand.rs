//! A model-based device turned into the full form, on the YAML tree before serde reads it:
//! the model's `device:` with the parameters filled in, the device's own keys merged over it,
//! and the model's rules added to the file's `rules:` under the device's name. Every check of
//! the full form then runs on the result, and its errors point at the device's line.

use std::collections::BTreeMap;

use serde_yaml::{Mapping, Value};

use super::{Library, Loaded, Model, ModelInfo};
use crate::config::locate::Locations;
use crate::config::Diagnostic;

/// The keys of a `devices:` entry (`schema::Device`; a test keeps the two lists equal).
pub const DEVICE_KEYS: &[&str] = &[
    "name",
    "port",
    "simulate",
    "baud",
    "data_bits",
    "parity",
    "stop_bits",
    "flow_control",
    "framing",
    "max_frame",
    "checksum",
    "rules",
    "commands",
    "poll",
    "offline_after",
    "offline_poll",
    "turnaround",
    "modbus",
];

/// Keys of a device entry that stay the device's own and never come from a model.
const OWN_KEYS: &[&str] = &["name", "port", "simulate"];

/// Whether any device of the file names a model.
pub fn uses_models(file: &Value) -> bool {
    devices(file).is_some_and(|d| d.iter().any(|d| d.get("model").is_some()))
}

/// The model names the devices of the file give.
pub fn named(file: &Value) -> Vec<String> {
    devices(file)
        .map(|d| {
            d.iter()
                .filter_map(|d| d.get("model")?.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn devices(file: &Value) -> Option<&Vec<Value>> {
    file.get("devices")?.as_sequence()
}

/// Expands every device of `file` that names a model; returns, per device, the model it came
/// from. Rules added are given positions in `locations` (the device's `model:` line), so that
/// their errors point there.
pub fn expand(
    file: &mut Value,
    library: &Library,
    locations: &mut Locations,
) -> Result<Vec<Option<ModelInfo>>, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    let mut infos = Vec::new();
    let mut added = [("rules", Mapping::new()), ("commands", Mapping::new())];
    let Some(list) = file.get_mut("devices").and_then(Value::as_sequence_mut) else {
        return Ok(infos);
    };
    for (i, entry) in list.iter_mut().enumerate() {
        let at = format!("devices[{i}]");
        let Some(model_name) = entry.get("model").cloned() else {
            infos.push(None);
            continue;
        };
        let here = locations.find(&format!("{at}.model"));
        let mut fail = |message: String, help: Option<String>| {
            errors.push(Diagnostic {
                position: here,
                message: format!("{at}.model: {message}"),
                help,
            });
        };
        let Some(name) = model_name.as_str() else {
            fail(
                "`model` must be a model's name".into(),
                Some(
                    "write e.g. model: eastron-sdm630 (`serial2mqtt models list` shows them)"
                        .into(),
                ),
            );
            infos.push(None);
            continue;
        };
        let Some(loaded) = library.get(name) else {
            let help = match library.nearest(name) {
                Some(near) => format!("did you mean `{near}`? (`serial2mqtt models list` shows them all)"),
                None => "`serial2mqtt models list` shows the models; your own go in models/ beside the config file".into(),
            };
            fail(format!("there is no model `{name}`"), Some(help));
            infos.push(None);
            continue;
        };
        let Some(device_name) = entry.get("name").and_then(Value::as_str).map(str::to_owned) else {
            // serde says that `name` is missing.
            infos.push(Some(loaded.info()));
            continue;
        };
        match one(entry, loaded, &device_name) {
            Ok(rules) => {
                // A device key filled from a parameter points at the parameter's line (a
                // warning on `modbus.every` at the device's `every: 50ms`).
                let mut filled = Vec::new();
                param_paths(
                    &Value::Mapping(loaded.model.device.clone()),
                    "",
                    &mut filled,
                );
                for (path, param) in filled {
                    locations.alias(format!("{at}.{path}"), &format!("{at}.{param}"));
                }
                for (section, got) in [(0, rules.rules), (1, rules.commands)] {
                    for (k, v) in got {
                        if let Some(n) = k.as_str() {
                            let path = format!("{}.{n}", added[section].0);
                            locations.alias(path, &format!("{at}.model"));
                        }
                        added[section].1.insert(k, v);
                    }
                }
                infos.push(Some(loaded.info()));
            }
            Err(Problem { message, help }) => {
                fail(format!("model `{name}`: {message}"), help);
                infos.push(Some(loaded.info()));
            }
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    for (section, defs) in added {
        if defs.is_empty() {
            continue;
        }
        let Some(root) = file.as_mapping_mut() else {
            return Ok(infos);
        };
        let map = root
            .entry(Value::from(section))
            .or_insert_with(|| Value::Mapping(Mapping::new()));
        if map.is_null() {
            *map = Value::Mapping(Mapping::new());
        }
        let Some(map) = map.as_mapping_mut() else {
            continue;
        };
        let what = if section == "rules" {
            "rule"
        } else {
            "command"
        };
        for (k, v) in defs {
            if map.contains_key(&k) {
                let name = k.as_str().unwrap_or_default();
                errors.push(Diagnostic {
                    position: locations.find(&format!("{section}.{name}")),
                    message: format!(
                        "{what} `{name}` is also the name a model gives its {what} for the device `{}`",
                        name.split('/').next().unwrap_or_default()
                    ),
                    help: Some(format!("rename your {what} (names with `/` are the models')")),
                });
            } else {
                map.insert(k, v);
            }
        }
    }
    if errors.is_empty() {
        Ok(infos)
    } else {
        Err(errors)
    }
}

/// Why one device did not expand.
struct Problem {
    message: String,
    help: Option<String>,
}

/// Expands one device entry in place; returns the rules and commands it brings.
fn one(entry: &mut Value, loaded: &Loaded, device: &str) -> Result<Adopted, Problem> {
    let model = &loaded.model;
    let Some(written) = entry.as_mapping() else {
        return Err(Problem {
            message: "a device is a mapping of keys".into(),
            help: None,
        });
    };
    // The device's keys: its own, the model's parameters, and overrides of device keys.
    let mut params: BTreeMap<String, Value> = BTreeMap::new();
    let mut own = Mapping::new();
    let mut overrides = Mapping::new();
    for (k, v) in written {
        let Some(key) = k.as_str() else { continue };
        if key == "model" {
            continue;
        }
        if model.parameters.contains_key(key) {
            params.insert(key.to_owned(), v.clone());
        } else if OWN_KEYS.contains(&key) {
            own.insert(k.clone(), v.clone());
        } else if DEVICE_KEYS.contains(&key) {
            overrides.insert(k.clone(), v.clone());
        } else {
            return Err(Problem {
                message: format!("`{key}` is neither one of its parameters nor a device key"),
                help: Some(format!(
                    "its parameters: {}; any key of a device overrides the model's (`serial2mqtt models show {}`)",
                    super::declared(model),
                    model.model
                )),
            });
        }
    }
    for (p, spec) in &model.parameters {
        if params.contains_key(p) {
            continue;
        }
        match &spec.default {
            Some(v) => {
                params.insert(p.clone(), v.clone());
            }
            None => {
                return Err(Problem {
                    message: format!("its parameter `{p}` has no default: the device must set it"),
                    help: Some(format!("write e.g. {p}: ... ({})", spec.about)),
                })
            }
        }
    }
    let mut device_keys = Value::Mapping(model.device.clone());
    substitute(&mut device_keys, &params).map_err(|message| Problem {
        message,
        help: None,
    })?;
    merge(&mut device_keys, Value::Mapping(overrides));
    // The model's rules and commands, under the device's name; the device's lists may name
    // them short. A model's commands are there to be named: none is on unless the device's
    // `commands:` lists it (a write is the user's choice).
    let rules = adopt(&mut device_keys, "rules", &model.rules, &params, device)?;
    let commands = adopt(
        &mut device_keys,
        "commands",
        &model.commands,
        &params,
        device,
    )?;
    let Value::Mapping(device_keys) = device_keys else {
        return Err(Problem {
            message: "its `device:` is not a mapping".into(),
            help: None,
        });
    };
    // The device's own keys first, as a person would write it (`check --expand`).
    let mut full = own;
    full.insert(Value::from("model"), Value::from(model.model.as_str()));
    for (k, v) in device_keys {
        if !full.contains_key(&k) {
            full.insert(k, v);
        }
    }
    *entry = Value::Mapping(full);
    Ok(Adopted { rules, commands })
}

/// What a device takes from its model besides its own keys, by their new names.
struct Adopted {
    rules: Mapping,
    commands: Mapping,
}

/// The definitions of `defined` (the model's rules or commands) that the device's list `key`
/// names, filled with the parameters and renamed `<device>/<name>` in the list too.
fn adopt(
    device_keys: &mut Value,
    key: &str,
    defined: &Mapping,
    params: &BTreeMap<String, Value>,
    device: &str,
) -> Result<Mapping, Problem> {
    let mut out = Mapping::new();
    let Some(list) = device_keys.get_mut(key).and_then(Value::as_sequence_mut) else {
        return Ok(out);
    };
    for r in list.iter_mut() {
        let Some(short) = r.as_str().map(str::to_owned) else {
            continue;
        };
        let Some(def) = defined.get(short.as_str()) else {
            continue;
        };
        let mut def = def.clone();
        substitute(&mut def, params).map_err(|message| Problem {
            message,
            help: None,
        })?;
        let name = format!("{device}/{short}");
        *r = Value::from(name.as_str());
        out.insert(Value::from(name), def);
    }
    Ok(out)
}

/// Drops the `model:` key the expansion keeps for the reader of `check --expand` (serde's
/// schema has no such key).
pub fn strip_model_keys(file: &mut Value) {
    if let Some(list) = file.get_mut("devices").and_then(Value::as_sequence_mut) {
        for d in list {
            if let Some(m) = d.as_mapping_mut() {
                m.remove("model");
            }
        }
    }
}

/// Lays `over` onto `base`: mappings merge key by key, anything else replaces.
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Mapping(b), Value::Mapping(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(old) if old.is_mapping() && v.is_mapping() => merge(old, v),
                    _ => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// Fills `${name}` in every string of `v`: a string that is only `${name}` takes the value
/// itself (a number stays a number), one inside text its text.
fn substitute(v: &mut Value, params: &BTreeMap<String, Value>) -> Result<(), String> {
    match v {
        Value::String(s) => {
            if let Some(name) = whole(s) {
                let value = params
                    .get(name)
                    .ok_or_else(|| format!("`${{{name}}}` is not one of its parameters"))?;
                *v = value.clone();
                return Ok(());
            }
            if s.contains("${") {
                *s = fill(s, params)?;
            }
            Ok(())
        }
        Value::Sequence(items) => items.iter_mut().try_for_each(|i| substitute(i, params)),
        Value::Mapping(m) => m.values_mut().try_for_each(|i| substitute(i, params)),
        Value::Tagged(t) => substitute(&mut t.value, params),
        _ => Ok(()),
    }
}

/// `name` when `s` is exactly `${name}`.
fn whole(s: &str) -> Option<&str> {
    let name = s.strip_prefix("${")?.strip_suffix('}')?;
    (!name.contains(['{', '}', '$'])).then_some(name)
}

/// `s` with each `${name}` replaced by the parameter's text.
fn fill(s: &str, params: &BTreeMap<String, Value>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("`{s}`: `${{` without its `}}`"))?;
        let name = &after[..end];
        let value = params
            .get(name)
            .ok_or_else(|| format!("`${{{name}}}` is not one of its parameters"))?;
        out.push_str(&text(value).ok_or_else(|| {
            format!("parameter `{name}` is used inside text (`{s}`) but is not text or a number")
        })?);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// A scalar's text.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The dotted path (as `Locations` writes them: `modbus.every`, `poll[0].every`) of every
/// string in `v` that uses a parameter, with that parameter's name.
fn param_paths(v: &Value, path: &str, out: &mut Vec<(String, String)>) {
    match v {
        Value::String(_) => {
            let mut names = Vec::new();
            used(v, &mut names);
            out.extend(names.into_iter().map(|n| (path.to_owned(), n)));
        }
        Value::Sequence(items) => {
            for (i, item) in items.iter().enumerate() {
                param_paths(item, &format!("{path}[{i}]"), out);
            }
        }
        Value::Mapping(m) => {
            for (k, item) in m {
                if let Some(k) = k.as_str() {
                    let p = if path.is_empty() {
                        k.to_owned()
                    } else {
                        format!("{path}.{k}")
                    };
                    param_paths(item, &p, out);
                }
            }
        }
        Value::Tagged(t) => param_paths(&t.value, path, out),
        _ => {}
    }
}

/// The parameters a model uses in `device:` and `rules:` without declaring them.
pub fn undeclared(model: &Model) -> Vec<String> {
    let mut found = Vec::new();
    let mut walk = |v: &Value| used(v, &mut found);
    walk(&Value::Mapping(model.device.clone()));
    walk(&Value::Mapping(model.rules.clone()));
    walk(&Value::Mapping(model.commands.clone()));
    found.retain(|p| !model.parameters.contains_key(p));
    found.sort();
    found.dedup();
    found
}

/// Every `${name}` in `v`'s strings.
fn used(v: &Value, found: &mut Vec<String>) {
    match v {
        Value::String(s) => {
            let mut rest = s.as_str();
            while let Some(start) = rest.find("${") {
                let after = &rest[start + 2..];
                let Some(end) = after.find('}') else { break };
                found.push(after[..end].to_owned());
                rest = &after[end + 1..];
            }
        }
        Value::Sequence(items) => items.iter().for_each(|i| used(i, found)),
        Value::Mapping(m) => m.values().for_each(|i| used(i, found)),
        Value::Tagged(t) => used(&t.value, found),
        _ => {}
    }
}

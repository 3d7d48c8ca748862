//! The built-in models and the expansion, through `config::parse` as users meet them.

use super::*;
use crate::config::parse;

/// Every built-in model reads, carries a document and test vectors, and every vector gives
/// exactly its messages.
#[test]
fn every_built_in_model_passes_its_test_vectors() {
    let (lib, errors) = Library::builtin();
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    let mut failures = Vec::new();
    for loaded in lib.iter() {
        let m = &loaded.model;
        if m.documents.is_empty() {
            failures.push(format!("{}: cites no document", m.model));
        }
        if m.tests.len() < 2 {
            failures.push(format!("{}: fewer than 2 test vectors", m.model));
        }
        for o in vectors::run(loaded, &lib) {
            if let Some(why) = o.failure {
                failures.push(format!("{} — {}:\n{why}", m.model, o.about));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The list compiled into the binary is the folder, and each file is named after its model.
#[test]
fn the_built_in_list_is_the_models_folder() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("models");
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".yaml"))
        .collect();
    files.sort();
    let listed: Vec<String> = builtin::FILES.iter().map(|(f, _)| f.to_string()).collect();
    assert_eq!(listed, files, "regenerate src/models/builtin.rs");
    let (lib, _) = Library::builtin();
    for l in lib.iter() {
        let Origin::BuiltIn(file) = l.origin else {
            panic!()
        };
        assert_eq!(file, format!("{}.yaml", l.model.model));
    }
}

/// `DEVICE_KEYS` is every key of `schema::Device` (serde lists them when one is unknown).
#[test]
fn the_device_keys_are_the_schema_s() {
    let err = serde_yaml::from_str::<crate::config::schema::Device>("{name: a, nonsense: 1}")
        .unwrap_err()
        .to_string();
    let mut listed: Vec<&str> = err
        .split("expected one of ")
        .nth(1)
        .unwrap()
        .split(", ")
        .map(|k| k.trim_matches(|c: char| c == '`' || !c.is_ascii_graphic()))
        .map(|k| k.split('`').next().unwrap_or(k))
        .collect();
    listed.sort();
    let mut ours = expand::DEVICE_KEYS.to_vec();
    ours.sort();
    assert_eq!(listed, ours);
}

const MODEL: &str = r#"
model: acme-meter
manufacturer: Acme
name: Meter 1
family: modbus meter
documents: [{title: Acme Meter 1 register map}]
parameters:
  unit: {default: 1, about: its address}
  every: {default: 10s}
  topic: {default: "power/{device}"}
device:
  baud: 9600
  modbus:
    unit: ${unit}
    every: ${every}
    timeout: 300ms
    points:
      - {name: voltage, input: 0, scale: 0.1, unit: V}
      - {name: relay, coil: 0}
  rules: [state]
rules:
  state:
    points: true
    publish:
      - topic: ${topic}/voltage
        payload: "{voltage}"
        homeassistant: {device_class: voltage, state_class: measurement, unit_of_measurement: V}
commands:
  relay:
    subscribe: "${topic}/relay/set"
    match: '^(ON|OFF)$'
    point: relay
tests:
  - about: 230.4 V
    registers: {input: {0: 2304}}
    expect: [{topic: power/test/voltage, payload: "230.4"}]
  - about: a unit elsewhere
    parameters: {unit: 7, topic: "x/{device}"}
    registers: {input: {0: [2300]}}
    expect: [{topic: x/test/voltage, payload: "230"}]
"#;

/// A config with the user's model directory holding `MODEL`.
fn with_model(config: &str) -> Result<crate::config::Config, crate::config::ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("models")).unwrap();
    std::fs::write(dir.path().join("models/acme.yaml"), MODEL).unwrap();
    let file = dir.path().join("config.yaml");
    parse(config, &file)
}

#[test]
fn a_device_is_one_line_with_parameters_and_overrides() {
    let c = with_model(
        "devices:\n  - {name: house, port: /dev/null, model: acme-meter, unit: 3, modbus: {timeout: 1s}}\n",
    )
    .unwrap();
    let d = &c.devices[0];
    let unit = d.modbus.as_ref().unwrap();
    assert_eq!(unit.unit, 3);
    assert_eq!(d.serial.baud, 9600);
    assert_eq!(
        d.polls[0].timeout,
        std::time::Duration::from_secs(1),
        "merged"
    );
    assert_eq!(unit.points.len(), 2, "the model's points are kept");
    assert_eq!(
        d.spec.entry.model.as_ref().map(|m| m.manufacturer.as_str()),
        Some("Acme")
    );
    assert_eq!(d.spec.entry.rules, vec!["house/state".to_string()]);
}

#[test]
fn the_model_s_vectors_run_from_a_user_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("acme.yaml");
    std::fs::write(&path, MODEL).unwrap();
    let (mut lib, _) = Library::builtin();
    lib.add_file(&path).unwrap();
    let outcomes = vectors::run(lib.get("acme-meter").unwrap(), &lib);
    assert_eq!(outcomes.len(), 2);
    assert!(outcomes.iter().all(|o| o.failure.is_none()), "{outcomes:?}");
    // A wrong expectation fails, saying what came.
    std::fs::write(
        &path,
        MODEL.replace("payload: \"230.4\"", "payload: \"230.5\""),
    )
    .unwrap();
    lib.add_file(&path).unwrap();
    let outcomes = vectors::run(lib.get("acme-meter").unwrap(), &lib);
    let why = outcomes[0].failure.as_deref().unwrap();
    assert!(why.contains("got power/test/voltage 230.4"), "{why}");
}

#[test]
fn errors_point_at_the_device_and_say_what_to_write() {
    let cases: &[(&str, usize, &str)] = &[
        (
            "devices:\n  - name: house\n    port: /dev/null\n    model: acme-meterr\n",
            4,
            "did you mean `acme-meter`",
        ),
        (
            "devices:\n  - name: house\n    port: /dev/null\n    model: acme-meter\n    unitt: 2\n",
            4,
            "its parameters: unit, every, topic",
        ),
        (
            "devices:\n  - name: house\n    port: /dev/null\n    model: acme-meter\n    unit: 300\n",
            2,
            "devices[0]: invalid value: integer `300`",
        ),
    ];
    for (config, line, text) in cases {
        let e = with_model(config).unwrap_err();
        let shown = e.to_string();
        assert!(shown.contains(text), "{config}\n{shown}");
        assert!(
            e.diagnostics.iter().any(|d| d
                .position
                .is_some_and(|p| p.line >= 2 && p.line <= *line + 1)),
            "{config}\n{shown}"
        );
    }
}

#[test]
fn a_model_rule_named_like_one_of_the_file_is_an_error() {
    let e = with_model(
        "devices:\n  - {name: house, port: /dev/null, model: acme-meter}\nrules:\n  house/state: {match: x}\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("rename your rule"), "{e}");
}

#[test]
fn a_user_file_replaces_a_built_in_with_a_warning() {
    let (lib, _) = Library::builtin();
    let Some(builtin) = lib.iter().next() else {
        return;
    };
    let name = builtin.model.model.clone();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("models")).unwrap();
    std::fs::write(
        dir.path().join("models/mine.yaml"),
        MODEL.replace("model: acme-meter", &format!("model: {name}")),
    )
    .unwrap();
    let c = parse(
        &format!("devices:\n  - {{name: house, port: /dev/null, model: {name}}}\n"),
        &dir.path().join("config.yaml"),
    )
    .unwrap();
    assert!(c
        .warnings
        .iter()
        .any(|w| w.message.contains("replaces the built-in")));
    assert_eq!(
        c.devices[0]
            .spec
            .entry
            .model
            .as_ref()
            .map(|m| m.manufacturer.as_str()),
        Some("Acme")
    );
}

#[test]
fn an_undeclared_parameter_is_an_error_in_the_model_file() {
    let e = parse_model_text(&MODEL.replace("${topic}/voltage", "${prefix}/voltage"));
    assert!(e.contains("`${prefix}` is used but not declared"), "{e}");
}

fn parse_model_text(text: &str) -> String {
    super::parse(text, "acme.yaml").unwrap_err()
}

/// docs/supported-models.md holds the table `models list --markdown` prints.
#[test]
fn the_table_of_supported_models_is_current() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/supported-models.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let (lib, _) = Library::builtin();
    let table = crate::cli::models::table(&lib);
    let start = doc.find("<!-- models table: generated -->\n").unwrap() + 33;
    let end = doc.find("<!-- end of generated table -->").unwrap();
    assert_eq!(
        &doc[start..end],
        table,
        "regenerate: serial2mqtt models list --markdown"
    );
    // Every model the text names as tested end to end exists.
    for word in doc[..start].split('`').skip(1).step_by(2) {
        if word.contains('-') && !word.contains(' ') && !word.starts_with("serial2mqtt") {
            assert!(
                lib.get(word).is_some(),
                "docs name `{word}`, which is no model"
            );
        }
    }
}

/// The worked example of docs/models.md is a model that passes its vectors, as the doc shows.
#[test]
fn the_documented_example_model_passes_its_vectors() {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/models.md");
    let doc = std::fs::read_to_string(&path).unwrap();
    let start = doc.find("models/acme-th10.yaml`:\n\n```yaml\n").unwrap() + 32;
    let end = start + doc[start..].find("```").unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("acme-th10.yaml");
    std::fs::write(&file, &doc[start..end]).unwrap();
    let (mut lib, _) = Library::builtin();
    lib.add_file(&file).unwrap();
    let outcomes = vectors::run(lib.get("acme-th10").unwrap(), &lib);
    assert_eq!(outcomes.len(), 2);
    assert!(outcomes.iter().all(|o| o.failure.is_none()), "{outcomes:?}");
    assert!(doc.contains("2 passed, 0 failed"));
}

/// A model's writable points are commands that stay off until the device names them.
#[test]
fn a_model_s_commands_are_on_only_when_the_device_names_them() {
    let off =
        with_model("devices:\n  - {name: house, port: /dev/null, model: acme-meter}\n").unwrap();
    assert!(off.devices[0].commands.is_empty());
    let on = with_model(
        "devices:\n  - {name: house, port: /dev/null, model: acme-meter, topic: \"p/{device}\", commands: [relay]}\n",
    )
    .unwrap();
    let c = &on.devices[0].commands;
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(
        on.devices[0].spec.entry.commands,
        vec!["house/relay".to_string()]
    );
    assert_eq!(c[0].filter, "p/house/relay/set");
}

/// Every plausible range names something `scan` reads: a Modbus model's point, another
/// model's published quantity (the last level of a topic); a signature names its register.
#[test]
fn scan_hints_name_what_the_scan_reads() {
    let (lib, _) = Library::builtin();
    let mut wrong = Vec::new();
    for l in lib.iter() {
        let m = &l.model;
        let Some(scan) = &m.scan else { continue };
        let names: Vec<String> = if m.family.modbus() {
            m.device
                .get("modbus")
                .and_then(|b| b.get("points"))
                .and_then(|p| p.as_sequence())
                .into_iter()
                .flatten()
                .filter_map(|p| p.get("name")?.as_str().map(str::to_owned))
                .collect()
        } else {
            m.rules
                .values()
                .filter_map(|r| r.get("publish")?.as_sequence())
                .flatten()
                .filter_map(|p| p.get("topic")?.as_str())
                .filter_map(|t| t.rsplit('/').next().map(str::to_owned))
                .collect()
        };
        for key in scan.plausible.keys() {
            if !names.contains(key) {
                wrong.push(format!(
                    "{}: plausible `{key}` is not one of {names:?}",
                    m.model
                ));
            }
        }
        if let Some(sig) = &scan.signature {
            if sig.holding.is_none() && sig.input.is_none() || sig.values.is_empty() {
                wrong.push(format!(
                    "{}: a signature needs a register and values",
                    m.model
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

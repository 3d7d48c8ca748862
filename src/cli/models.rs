//! `serial2mqtt models`: the device models a config can use — a list (or the README's table),
//! one model's file, and the test vectors of models or of a model file being written.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use crate::models::{self, vectors, Library, Loaded, Origin};

/// The built-ins and the models beside `config` (errors printed; `None` then).
fn library(config: &Path) -> Option<Library> {
    match Library::with_dir(&models::user_dir(config)) {
        Ok(lib) => {
            for (file, name) in &lib.replaced {
                eprintln!(
                    "warning: {} replaces the built-in model `{name}`",
                    file.display()
                );
            }
            Some(lib)
        }
        Err(errors) => {
            for e in errors {
                eprintln!("error: {e}");
            }
            None
        }
    }
}

/// Lists the models, as a plain table or as the Markdown table of docs/supported-models.md.
pub fn list(config: &Path, markdown: bool) -> ExitCode {
    let Some(lib) = library(config) else {
        return ExitCode::FAILURE;
    };
    if markdown {
        print!("{}", table(&lib));
        return ExitCode::SUCCESS;
    }
    let width = lib.iter().map(|l| l.model.model.len()).max().unwrap_or(0);
    for l in lib.iter() {
        let m = &l.model;
        let mine = match &l.origin {
            Origin::BuiltIn(_) => String::new(),
            Origin::File(p) => format!("  ({})", p.display()),
        };
        println!(
            "{:width$}  {:15}  {} {}{mine}",
            m.model,
            m.family.name(),
            m.manufacturer,
            m.name
        );
    }
    ExitCode::SUCCESS
}

/// The Markdown table of models: name, protocol, what is published, how it is tested.
pub fn table(lib: &Library) -> String {
    let mut out = String::from(
        "| model | device | protocol | line | publishes | tested by |\n|---|---|---|---|---|---|\n",
    );
    for l in lib.iter() {
        let m = &l.model;
        let line = line(m);
        let vectors = m.tests.len();
        out += &format!(
            "| `{}` | {} {} | {} | {} | {} | {} vectors |\n",
            m.model,
            m.manufacturer,
            m.name,
            m.family.name(),
            line,
            published(l).join(", "),
            vectors
        );
    }
    out
}

/// The factory line settings, as `9600 8N1`.
fn line(m: &models::Model) -> String {
    let get = |k: &str| m.device.get(k);
    let baud = get("baud").and_then(|v| v.as_u64()).unwrap_or(9600);
    let bits = get("data_bits").and_then(|v| v.as_u64()).unwrap_or(8);
    let parity = match get("parity").and_then(|v| v.as_str()) {
        Some("even") => "E",
        Some("odd") => "O",
        _ => "N",
    };
    let stop = get("stop_bits").and_then(|v| v.as_u64()).unwrap_or(1);
    format!("{baud} {bits}{parity}{stop}")
}

/// The last level of each topic the model publishes (`voltage`, `energy_import`).
fn published(l: &Loaded) -> Vec<String> {
    let mut out = Vec::new();
    for rule in l.model.rules.values() {
        let Some(list) = rule.get("publish").and_then(|p| p.as_sequence()) else {
            continue;
        };
        for p in list {
            if let Some(topic) = p.get("topic").and_then(|t| t.as_str()) {
                let last = topic.rsplit('/').next().unwrap_or(topic).to_owned();
                if !out.contains(&last) {
                    out.push(last);
                }
            }
        }
    }
    out
}

/// Prints one model's file (with where it comes from).
pub fn show(config: &Path, name: &str) -> ExitCode {
    let Some(lib) = library(config) else {
        return ExitCode::FAILURE;
    };
    match lib.get(name) {
        Some(l) => {
            eprintln!("# {}", l.origin);
            print!("{}", l.text);
            ExitCode::SUCCESS
        }
        None => {
            match lib.nearest(name) {
                Some(near) => eprintln!("there is no model `{name}`: did you mean `{near}`?"),
                None => eprintln!("there is no model `{name}` (`serial2mqtt models list`)"),
            }
            ExitCode::FAILURE
        }
    }
}

/// Runs the test vectors of the models named (or of model files given by path), or of all;
/// exit 1 when any fails.
pub fn test(config: &Path, which: &[String]) -> ExitCode {
    let Some(mut lib) = library(config) else {
        return ExitCode::FAILURE;
    };
    let mut names = Vec::new();
    for w in which {
        let path = PathBuf::from(w);
        if w.ends_with(".yaml") || w.ends_with(".yml") || path.is_file() {
            if let Err(e) = lib.add_file(&path) {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
            match models::parse(&std::fs::read_to_string(&path).unwrap_or_default(), w) {
                Ok(m) => names.push(m.model),
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::FAILURE;
                }
            }
        } else if lib.get(w).is_some() {
            names.push(w.clone());
        } else {
            eprintln!("there is no model `{w}` and no file of that name");
            return ExitCode::FAILURE;
        }
    }
    if names.is_empty() {
        names = lib.iter().map(|l| l.model.model.clone()).collect();
    }
    let (mut passed, mut failed) = (0, 0);
    for name in &names {
        let Some(l) = lib.get(name) else { continue };
        if l.model.tests.is_empty() {
            println!("{name}: no test vectors");
            failed += 1;
            continue;
        }
        for o in vectors::run(l, &lib) {
            match o.failure {
                None => {
                    passed += 1;
                    println!("ok    {name}: {}", o.about);
                }
                Some(why) => {
                    failed += 1;
                    println!("FAIL  {name}: {}\n{why}", o.about);
                }
            }
        }
    }
    println!("{passed} passed, {failed} failed");
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

//! The source tree keeps its shape: no import circle among the files of src/ (a file that uses
//! another, directly or through others, is never used back by it; a part of a folder using the
//! folder's own mod.rs is not counted). Circles are what made config, rules and Home Assistant
//! impossible to change one at a time; this keeps them out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Module path (`["config", "check"]`) of every .rs file under src/, tests and the binary aside.
fn modules(root: &Path) -> BTreeMap<Vec<String>, PathBuf> {
    let mut out = BTreeMap::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).expect("read src") {
            let path = entry.expect("entry").path();
            if path.is_dir() {
                dirs.push(path);
                continue;
            }
            let rel = path.strip_prefix(root).expect("under src");
            let name = rel.to_string_lossy();
            if !name.ends_with(".rs") || name.ends_with("tests.rs") || name == "main.rs" {
                continue;
            }
            let mut parts: Vec<String> = name
                .trim_end_matches(".rs")
                .split('/')
                .map(str::to_owned)
                .collect();
            if parts.last().is_some_and(|p| p == "mod" || p == "lib") {
                parts.pop();
            }
            out.insert(parts, path);
        }
    }
    out
}

/// The longest module path that names a file, for a path used in code (`config::check::x`).
fn resolve(files: &BTreeMap<Vec<String>, PathBuf>, mut path: Vec<String>) -> Option<Vec<String>> {
    while !path.is_empty() {
        if files.contains_key(&path) {
            return Some(path);
        }
        path.pop();
    }
    None
}

/// Which files each file uses: `crate::a::b` paths (also inside `use crate::a::{b, c}`) and
/// `super::` paths, in code outside its test module and comments.
fn uses(files: &BTreeMap<Vec<String>, PathBuf>) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let mut graph = BTreeMap::new();
    for (module, path) in files {
        let text = std::fs::read_to_string(path).expect("read file");
        let code: String = text
            .split("#[cfg(test)]\nmod tests")
            .next()
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim_start().starts_with("//"))
            .collect::<Vec<_>>()
            .join("\n");
        let mut edges = BTreeSet::new();
        let mut anchors = vec![
            ("crate::".to_owned(), Vec::new()),
            // `super` of `a::b` is `a`, whether b is a file or a folder's mod.rs.
            (
                "super::".to_owned(),
                module[..module.len().saturating_sub(1)].to_vec(),
            ),
        ];
        // A path through a child module (`model::Config` in config/mod.rs, as its `pub use`
        // re-exports do): users of the parent then depend on the child too.
        for child in files
            .keys()
            .filter(|k| k.len() == module.len() + 1 && k.starts_with(module))
        {
            let name = child.last().cloned().unwrap_or_default();
            anchors.push((format!("{name}::"), child.clone()));
        }
        for (anchor, base) in &anchors {
            for (at, _) in code.match_indices(anchor.as_str()) {
                if at > 0 && (code[..at].ends_with(ident) || code[..at].ends_with("::")) {
                    continue;
                }
                let rest = &code[at + anchor.len()..];
                let mut path = base.clone();
                let mut tail = rest;
                loop {
                    let end = tail.find(|c: char| !ident(c)).unwrap_or(tail.len());
                    if end == 0 {
                        break;
                    }
                    path.push(tail[..end].to_owned());
                    tail = &tail[end..];
                    match tail.strip_prefix("::") {
                        Some(t) => tail = t,
                        None => break,
                    }
                }
                // `crate::a::{b, c}`: each name in the group.
                let mut targets = vec![path.clone()];
                if let Some(group) = tail.strip_prefix('{') {
                    let group = &group[..group.find('}').unwrap_or(group.len())];
                    for name in group.split(',') {
                        let name = name.trim().split([':', ' ']).next().unwrap_or("");
                        if !name.is_empty() {
                            let mut p = path.clone();
                            p.push(name.to_owned());
                            targets.push(p);
                        }
                    }
                }
                for t in targets {
                    // A file using its own folder's mod.rs (the shared types a parent defines
                    // for its parts: `super::Downlink`) is how a folder is built, not a circle.
                    if let Some(file) = resolve(files, t) {
                        if file != *module && !module.starts_with(&file) {
                            edges.insert(file);
                        }
                    }
                }
            }
        }
        graph.insert(module.clone(), edges);
    }
    graph
}

/// A circle through `start`, if there is one: the files along it.
fn circle(
    graph: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
    start: &Vec<String>,
) -> Option<Vec<Vec<String>>> {
    let mut stack = vec![(start.clone(), vec![start.clone()])];
    let mut seen = BTreeSet::new();
    while let Some((at, trail)) = stack.pop() {
        for next in graph.get(&at).into_iter().flatten() {
            if next == start {
                return Some(trail);
            }
            if seen.insert(next.clone()) {
                let mut t = trail.clone();
                t.push(next.clone());
                stack.push((next.clone(), t));
            }
        }
    }
    None
}

#[test]
fn no_file_of_src_uses_itself_through_others() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let files = modules(&root);
    assert!(
        files.len() > 40,
        "found {} files under {}",
        files.len(),
        root.display()
    );
    let graph = uses(&files);
    // The scanner finds real edges (or it would pass on anything).
    assert!(graph[&vec!["gateway".to_owned()]].contains(&vec!["broker".to_owned()]));
    assert!(graph[&vec![
        "config".to_owned(),
        "check".to_owned(),
        "devices".to_owned()
    ]]
        .contains(&vec![
            "config".to_owned(),
            "check".to_owned(),
            "rules".to_owned()
        ]));
    let name = |m: &Vec<String>| {
        if m.is_empty() {
            "lib".to_owned()
        } else {
            m.join("/")
        }
    };
    let circles: Vec<String> = files
        .keys()
        .filter_map(|m| circle(&graph, m))
        .map(|c| c.iter().map(name).collect::<Vec<_>>().join(" → "))
        .collect();
    assert!(
        circles.is_empty(),
        "import circles:\n{}",
        circles.join("\n")
    );
}

//! The findings as a `devices:` snippet to paste into a config: one line per device, the
//! model's name and what differs from its factory settings, with how sure the scan is as a
//! comment. The snippet is parsed as a config before it is shown.

use std::path::Path;

use super::{Finding, Line};
use crate::models::Library;

/// The snippet for `findings` on `port`; an error when it does not parse (a defect of the scan
/// or of a model, never shown as if usable).
pub fn write(port: &Path, findings: &[Finding], library: &Library) -> Result<String, String> {
    let mut out = String::from("devices:\n");
    let mut names: Vec<String> = Vec::new();
    for f in findings {
        let Some(best) = f.ranked.first() else {
            continue;
        };
        let Some(loaded) = library.get(&best.model) else {
            continue;
        };
        let mut name = best.model.replace('-', "_");
        if let Some(u) = f.unit {
            name = format!("{name}_{u}");
        }
        while names.contains(&name) {
            name.push('_');
        }
        names.push(name.clone());
        let mut line = format!(
            "  - {{name: {name}, port: {}, model: {}",
            port.display(),
            best.model
        );
        if let Some(u) = f.unit {
            if loaded.model.parameters.contains_key("unit") {
                line += &format!(", unit: {u}");
            }
        }
        let factory = library
            .device(
                &best.model,
                &name,
                &port.display().to_string(),
                &Default::default(),
            )
            .map(|d| Line::of(&d))?;
        if factory.baud != f.line.baud {
            line += &format!(", baud: {}", f.line.baud);
        }
        if factory.parity != f.line.parity {
            let p = match f.line.parity {
                'E' => "even",
                'O' => "odd",
                _ => "none",
            };
            line += &format!(", parity: {p}");
        }
        line += "}";
        let mut why = format!("{}: {}", f.confidence.word(), best.evidence);
        if !best.values.is_empty() {
            why += &format!(" ({})", best.values.join(", "));
        }
        if let Some(id) = &f.identification {
            why += &format!("; identifies as \"{id}\"");
        }
        let others: Vec<&str> = f
            .ranked
            .iter()
            .skip(1)
            .filter(|c| (c.score.0, c.score.1) == (best.score.0, best.score.1))
            .map(|c| c.model.as_str())
            .collect();
        if !others.is_empty() {
            why += &format!("; fits as well: {} (check the label)", others.join(", "));
        }
        out += &format!("  # {why}\n{line}\n");
    }
    let config = format!("gateway: {{id: scan}}\n{out}");
    crate::config::parse_with(&config, Path::new("scan.yaml"), library)
        .map_err(|e| format!("the snippet does not parse (a defect):\n{e}\n{out}"))?;
    Ok(out)
}

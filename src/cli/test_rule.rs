//! `serial2mqtt test-rule`: the messages one frame would produce on a device, through the very
//! frame handler the device task uses ([`crate::frames::trial`], which the dashboard's rule
//! tester runs too).

use super::load_or_report;
use crate::frames::trial::try_frame;
use crate::rules::Problem;
use std::path::PathBuf;
use std::process::ExitCode;

/// Applies the rules of `device` to `frame` (text, or hex with `is_hex`).
pub fn main(path: PathBuf, device: &str, is_hex: bool, frame: &str) -> ExitCode {
    let Some(config) = load_or_report(&path) else {
        return ExitCode::FAILURE;
    };
    let Some(dev) = config.devices.iter().find(|d| d.name == device) else {
        let names: Vec<&str> = config.devices.iter().map(|d| d.name.as_str()).collect();
        eprintln!(
            "no device named `{device}` in {}; devices: {}",
            path.display(),
            names.join(", ")
        );
        return ExitCode::FAILURE;
    };
    let bytes = if is_hex {
        match hex::decode(frame.replace([' ', ':'], "")) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("--hex: `{frame}` is not hex: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        frame.as_bytes().to_vec()
    };
    let trial = try_frame(dev, &config.gateway.id, &bytes);
    match &trial.checksum {
        Some((name, Ok(v))) => println!("(checksum {name}: ok, {v})"),
        Some((name, Err(failure))) => {
            eprintln!(
                "the frame fails device `{device}`'s checksum {name}: {failure}; on the line it \
                 is dropped and counted as bad_checksum, never published"
            );
            return ExitCode::FAILURE;
        }
        None => {}
    }
    for problem in &trial.problems {
        match problem {
            Problem::Topic(why) => eprintln!("not published: {why}"),
            Problem::Value(why) => eprintln!(
                "a value cannot be computed from this frame: {why}; on the line the rule's \
                 messages are left out and counted as bad_value"
            ),
        }
    }
    if trial.dropped {
        println!("(dropped by a `drop: true` rule: nothing published)");
    }
    for m in &trial.messages {
        let flags = match (m.qos, m.retain) {
            (q, true) => format!("qos={q} retain"),
            (q, false) => format!("qos={q}"),
        };
        println!(
            "{} {} [{flags}]",
            m.topic,
            String::from_utf8_lossy(&m.payload)
        );
    }
    if trial.bad_value() {
        ExitCode::FAILURE
    } else if trial.matched {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "no rule of device `{device}` matched this frame ({})",
            trial.counts
        );
        if let Some(c) = &trial.closest {
            eprintln!("closest: rule `{}`: {}", c.rule, c.why);
        }
        ExitCode::FAILURE
    }
}

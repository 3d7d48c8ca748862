//! `serial2mqtt test-rule`: the messages one frame would produce on a device, through the very
//! frame handler the device task uses.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::Ordering;

use bytes::Bytes;

use super::load_or_report;
use crate::frames::FrameHandler;
use crate::rules::Problem;
use crate::stats::DeviceStats;

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
            Ok(b) => Bytes::from(b),
            Err(e) => {
                eprintln!("--hex: `{frame}` is not hex: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        Bytes::copy_from_slice(frame.as_bytes())
    };
    if let Some(checksum) = &dev.checksum {
        match checksum.verify(&bytes) {
            Ok(v) => println!("(checksum {}: ok, 0x{v:X})", checksum.spec().name()),
            Err(failure) => {
                eprintln!(
                    "the frame fails device `{device}`'s checksum {}: {failure}; on the line it \
                     is dropped and counted as bad_checksum, never published",
                    checksum.spec().name()
                );
                return ExitCode::FAILURE;
            }
        }
    }
    let stats = DeviceStats::default();
    let mut handler = FrameHandler::new(dev, &config.gateway.id, &stats);
    let messages: Vec<_> = handler.handle(&bytes).collect();
    let matched = stats.unmatched.load(Ordering::Relaxed) == 0
        && stats.invalid_utf8.load(Ordering::Relaxed) == 0;
    let mut failed = false;
    for problem in handler.problems() {
        match problem {
            Problem::Topic(why) => eprintln!("not published: {why}"),
            Problem::Value(why) => {
                failed = true;
                eprintln!(
                    "a value cannot be computed from this frame: {why}; on the line the rule's \
                     messages are left out and counted as bad_value"
                );
            }
        }
    }
    if stats.dropped.load(Ordering::Relaxed) > 0 {
        println!("(dropped by a `drop: true` rule: nothing published)");
    }
    for m in &messages {
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
    if failed {
        ExitCode::FAILURE
    } else if matched {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "no rule of device `{device}` matched this frame ({})",
            stats.summary()
        );
        ExitCode::FAILURE
    }
}

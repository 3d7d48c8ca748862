//! The config loader on arbitrary text: never panics, and every error points inside the file.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = serial2mqtt::config::parse(text, Path::new("fuzz.yaml")) {
        // YAML breaks lines at \n, \r\n and a lone \r (so do the editors that show them).
        let lines = text.replace("\r\n", "\n").replace('\r', "\n").lines().count().max(1);
        for d in &e.diagnostics {
            if let Some(p) = &d.position {
                assert!(p.line >= 1 && p.line <= lines + 1, "line {} of {lines}: {}", p.line, d.message);
            }
            assert!(!d.message.is_empty());
        }
    }
});

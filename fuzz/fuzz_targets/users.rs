//! Users-file lines on arbitrary bytes: a stored secret (plain text or a `$7$`/`$6$` hash)
//! never panics the parser or the check, setting a line keeps every other user's line, and a
//! password hashed here always verifies (with few rounds, to keep the fuzzer fast).
#![no_main]

use std::num::NonZeroU32;

use libfuzzer_sys::fuzz_target;
use serial2mqtt::broker::passwords::{hash, set_line, Secret};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let (stored, password) = text.split_once('\n').unwrap_or((text, ""));
    if let Ok(secret) = Secret::parse(stored) {
        let _ = secret.verify(password);
    }
    if !password.is_empty() && !password.contains('\n') {
        let h = hash(password, NonZeroU32::MIN).expect("random salt");
        let s = Secret::parse(&h).expect("our own hash parses");
        assert!(s.verify(password), "our own hash verifies");
        let file = set_line(text, "fuzz", &h);
        assert_eq!(file.lines().filter(|l| l.starts_with("fuzz:")).count(), 1, "{file:?}");
        // Lines compare without a trailing CR (the users file reader ignores it; a last line
        // ending in a bare CR comes back ending in CR LF).
        let bare = |l: &str| l.trim_end_matches('\r').to_owned();
        for line in text.lines().filter(|l| !l.starts_with("fuzz:")) {
            assert!(file.lines().any(|l| bare(l) == bare(line)), "{line:?} lost: {file:?}");
        }
    }
});

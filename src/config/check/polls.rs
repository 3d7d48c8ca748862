//! A device's `poll:` requests: one of `write`/`write_hex`, intervals and timeouts that can
//! work, unique names; and its `turnaround` (default 3.5 character times at its line speed).

use std::time::Duration;

use super::Problems;
use crate::config::model::{Poll, SerialSettings};
use crate::config::schema;

/// The device's polls, validated, and the silence kept after each of its transactions.
pub(super) fn check(
    d: &schema::Device,
    serial: Option<&SerialSettings>,
    path: &str,
    p: &mut Problems,
) -> (Vec<Poll>, Duration) {
    let turnaround = d.turnaround.unwrap_or_else(|| {
        // Modbus RTU's inter-frame silence; a fair default for any half-duplex bus.
        serial.map_or(Duration::ZERO, |s| s.wire_time(35) / 10)
    });
    let mut polls = Vec::with_capacity(d.poll.len());
    for (i, raw) in d.poll.iter().enumerate() {
        let at = format!("{path}.poll[{i}]");
        let name = match &raw.name {
            Some(n) => n.clone(),
            None if d.poll.len() == 1 => "poll".to_owned(),
            None => format!("poll{}", i + 1),
        };
        if polls.iter().any(|q: &Poll| q.name == name) {
            p.error(
                &format!("{at}.name"),
                format!("poll name `{name}` is used twice on device `{}`", d.name),
                Some("give each poll its own `name:` ({request} in rules tells them apart)".into()),
            );
        }
        let bytes = request(raw, &at, p);
        if bytes.as_ref().is_some_and(|b| b.is_empty()) {
            p.error(
                &at,
                "the request is empty: nothing would ask the device",
                Some("write the bytes the device answers to".into()),
            );
        }
        if raw.every.is_zero() {
            p.error(
                &format!("{at}.every"),
                "a poll every 0s would never leave the line",
                Some("write an interval such as every: 10s".into()),
            );
        }
        if raw.timeout.is_zero() || raw.timeout > Duration::from_secs(60) {
            p.error(
                &format!("{at}.timeout"),
                format!(
                    "a timeout of {} cannot tell an answer from silence",
                    humantime::format_duration(raw.timeout)
                ),
                Some(
                    "write the device's longest answer time, e.g. timeout: 500ms (at most 60s)"
                        .into(),
                ),
            );
        }
        if raw.retries > 10 {
            p.error(
                &format!("{at}.retries"),
                format!("{} retries would hold the line for one device", raw.retries),
                Some(
                    "write at most 10 (a missed poll is tried again on its next interval anyway)"
                        .into(),
                ),
            );
        }
        if let Some(bytes) = bytes {
            polls.push(Poll {
                name,
                bytes,
                every: raw.every,
                timeout: raw.timeout,
                retries: raw.retries,
                flush: raw.flush,
            });
        }
    }
    if d.offline_after == 0 {
        p.error(
            &format!("{path}.offline_after"),
            "offline_after: 0 would announce the device offline before it was asked",
            Some(
                "write the unanswered polls in a row that mean offline, e.g. offline_after: 3"
                    .into(),
            ),
        );
    }
    if d.offline_poll.is_zero() {
        p.error(
            &format!("{path}.offline_poll"),
            "offline_poll: 0s would ask a dead device without pause",
            Some("write how often an offline device is still asked, e.g. offline_poll: 10s".into()),
        );
    }
    (polls, turnaround)
}

/// The bytes a poll sends, from `write` (text) or `write_hex`; None (with the error) when
/// neither or both are given, or the hex is not hex.
fn request(raw: &schema::Poll, at: &str, p: &mut Problems) -> Option<bytes::Bytes> {
    match (&raw.write, &raw.write_hex) {
        (Some(text), None) => Some(bytes::Bytes::from(text.clone().into_bytes())),
        (None, Some(h)) => match crate::serial::framing::hex_text(h) {
            Some(b) => Some(bytes::Bytes::from(b)),
            None => {
                p.error(
                        &format!("{at}.write_hex"),
                        format!("`{h}` is not hex bytes"),
                        Some(
                            "write the request as pairs of hex digits, e.g. write_hex: \"FF 01 86 00 00 00 00 00 79\""
                                .into(),
                        ),
                    );
                None
            }
        },
        (Some(_), Some(_)) => {
            p.error(
                at,
                "a poll sets both `write` and `write_hex`",
                Some("keep `write` for text, or `write_hex` for binary bytes".into()),
            );
            None
        }
        (None, None) => {
            p.error(
                at,
                "a poll needs the request to send",
                Some(
                    "add e.g. write_hex: \"FF 01 86 00 00 00 00 00 79\" or write: \"READ\\r\\n\""
                        .into(),
                ),
            );
            None
        }
    }
}

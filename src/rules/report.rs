//! Report by exception: a `publish:` entry with `deadband`, `heartbeat` or `min_interval`
//! publishes a reading only when it changed enough, at least every heartbeat, and never more
//! often than the minimum interval, so a sensor polled every second does not send the same
//! reading to the SD card and the uplink 3,600 times an hour.
//!
//! A new reading is compared with the last one *published* on its topic (not the last one
//! seen), so slow drift is reported once it adds up to the deadband, and a change that came
//! inside `min_interval` is published by the first frame after it. Numbers are compared
//! numerically (a text payload that reads as a number, or each number of a JSON payload);
//! anything else changes when it differs. The state is one entry per topic per device, at most
//! [`MAX_TOPICS`]; past that (topics made from frame contents) it starts afresh, which only
//! publishes more.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// Topics remembered per device before the state starts afresh.
pub const MAX_TOPICS: usize = 4096;

/// How much a number must change to be published again.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Deadband {
    /// By more than this much (`deadband: 0.5`; `0`: any change).
    Absolute(f64),
    /// By more than this percentage of the last published value (`deadband: 2%`).
    Percent(f64),
}

/// One output's reporting policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Publish only on a change beyond this (set whenever report by exception is on).
    pub deadband: Deadband,
    /// Republish an unchanged reading at least this often.
    pub heartbeat: Option<Duration>,
    /// Never publish on the topic more often than this.
    pub min_interval: Option<Duration>,
}

/// A published reading, as it is compared.
#[derive(Debug, Clone, PartialEq)]
pub enum Reading {
    /// A payload that reads as a number.
    Number(f64),
    /// A JSON payload (its numbers compared by the deadband, the rest exactly).
    Json(serde_json::Value),
    /// Anything else, compared byte for byte.
    Bytes(bytes::Bytes),
}

impl Reading {
    /// A text payload: a number when it reads as one.
    pub fn text(payload: &bytes::Bytes) -> Self {
        match std::str::from_utf8(payload)
            .ok()
            .and_then(|s| s.trim().parse::<f64>().ok())
            .filter(|f| f.is_finite())
        {
            Some(f) => Reading::Number(f),
            None => Reading::Bytes(payload.clone()),
        }
    }
}

/// What each topic last published, for one device.
#[derive(Debug, Default)]
pub struct Reports {
    last: HashMap<String, (Instant, Reading)>,
}

impl Reports {
    /// Whether `reading` on `topic` is published now under `report`; remembers it if so.
    pub fn admit(&mut self, report: &Report, topic: &str, reading: Reading, now: Instant) -> bool {
        let Some((at, last)) = self.last.get(topic) else {
            if self.last.len() >= MAX_TOPICS {
                self.last.clear();
            }
            self.last.insert(topic.to_owned(), (now, reading));
            return true;
        };
        let elapsed = now.saturating_duration_since(*at);
        if report.min_interval.is_some_and(|min| elapsed < min) {
            return false;
        }
        let due = report.heartbeat.is_some_and(|h| elapsed >= h);
        if !due && !changed(last, &reading, report.deadband) {
            return false;
        }
        self.last.insert(topic.to_owned(), (now, reading));
        true
    }
}

/// Whether `new` differs from `old` by more than the deadband.
fn changed(old: &Reading, new: &Reading, deadband: Deadband) -> bool {
    match (old, new) {
        (Reading::Number(a), Reading::Number(b)) => beyond(*a, *b, deadband),
        (Reading::Json(a), Reading::Json(b)) => json_changed(a, b, deadband),
        (a, b) => a != b,
    }
}

fn beyond(old: f64, new: f64, deadband: Deadband) -> bool {
    let delta = (new - old).abs();
    match deadband {
        Deadband::Absolute(d) => delta > d,
        Deadband::Percent(p) => delta > p / 100.0 * old.abs(),
    }
}

fn json_changed(a: &serde_json::Value, b: &serde_json::Value, deadband: Deadband) -> bool {
    use serde_json::Value as J;
    match (a, b) {
        (J::Number(x), J::Number(y)) => match (x.as_f64(), y.as_f64()) {
            (Some(x), Some(y)) => beyond(x, y, deadband),
            _ => x != y,
        },
        (J::Object(x), J::Object(y)) => {
            x.len() != y.len()
                || x.iter()
                    .any(|(k, v)| y.get(k).is_none_or(|w| json_changed(v, w, deadband)))
        }
        (J::Array(x), J::Array(y)) => {
            x.len() != y.len() || x.iter().zip(y).any(|(v, w)| json_changed(v, w, deadband))
        }
        (x, y) => x != y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(deadband: Deadband, heartbeat: Option<u64>, min: Option<u64>) -> Report {
        Report {
            deadband,
            heartbeat: heartbeat.map(Duration::from_secs),
            min_interval: min.map(Duration::from_secs),
        }
    }

    /// Feeds (second, value) pairs; returns the seconds at which a message went out.
    fn run(report: &Report, readings: &[(u64, Reading)]) -> Vec<u64> {
        let start = Instant::now();
        let mut reports = Reports::default();
        readings
            .iter()
            .filter(|(t, r)| reports.admit(report, "t", r.clone(), start + Duration::from_secs(*t)))
            .map(|(t, _)| *t)
            .collect()
    }

    fn numbers(values: &[f64]) -> Vec<(u64, Reading)> {
        values
            .iter()
            .enumerate()
            .map(|(i, v)| (i as u64, Reading::Number(*v)))
            .collect()
    }

    #[test]
    fn a_deadband_compares_with_the_last_published_value_so_drift_is_reported() {
        let p = policy(Deadband::Absolute(5.0), None, None);
        // 400, then drift by 2 a second: published when it has moved by more than 5.
        let sent = run(
            &p,
            &numbers(&[400.0, 402.0, 404.0, 406.0, 408.0, 410.0, 412.0, 411.0]),
        );
        assert_eq!(sent, vec![0, 3, 6]);
        let p = policy(Deadband::Percent(2.0), None, None);
        let sent = run(&p, &numbers(&[100.0, 101.0, 102.5, 103.0, 100.0]));
        assert_eq!(sent, vec![0, 2, 4]);
        let p = policy(Deadband::Absolute(0.0), None, None);
        assert_eq!(run(&p, &numbers(&[1.0, 1.0, 1.0, 2.0, 2.0])), vec![0, 3]);
    }

    #[test]
    fn a_heartbeat_republishes_an_unchanged_reading_and_min_interval_holds_changes_back() {
        let p = policy(Deadband::Absolute(0.0), Some(10), None);
        let steady: Vec<_> = (0..=25).map(|t| (t, Reading::Number(7.0))).collect();
        assert_eq!(run(&p, &steady), vec![0, 10, 20]);
        let p = policy(Deadband::Absolute(0.0), None, Some(5));
        let changing: Vec<_> = (0..12).map(|t| (t, Reading::Number(t as f64))).collect();
        assert_eq!(run(&p, &changing), vec![0, 5, 10]);
        // A change held back is published by the first frame after the interval, even when
        // the value has stopped changing by then.
        let readings = vec![
            (0, Reading::Number(1.0)),
            (1, Reading::Number(2.0)),
            (2, Reading::Number(2.0)),
            (6, Reading::Number(2.0)),
            (7, Reading::Number(2.0)),
        ];
        assert_eq!(run(&p, &readings), vec![0, 6]);
    }

    #[test]
    fn json_payloads_compare_each_number_by_the_deadband_and_the_rest_exactly() {
        let p = policy(Deadband::Absolute(0.5), None, None);
        let j = |v: serde_json::Value| Reading::Json(v);
        let readings = vec![
            (0, j(serde_json::json!({"t": 21.0, "h": 40, "state": "ok"}))),
            (1, j(serde_json::json!({"t": 21.3, "h": 40, "state": "ok"}))),
            (2, j(serde_json::json!({"t": 21.3, "h": 41, "state": "ok"}))),
            (
                3,
                j(serde_json::json!({"t": 21.3, "h": 41, "state": "alarm"})),
            ),
            (4, j(serde_json::json!({"t": 21.3, "h": 41}))),
        ];
        assert_eq!(run(&p, &readings), vec![0, 2, 3, 4]);
        let text = |s: &'static str| Reading::text(&bytes::Bytes::from_static(s.as_bytes()));
        let readings = vec![
            (0, text("ON")),
            (1, text("ON")),
            (2, text("OFF")),
            (3, text(" 5 ")),
        ];
        assert_eq!(run(&p, &readings), vec![0, 2, 3]);
    }

    #[test]
    fn the_state_is_bounded() {
        let p = policy(Deadband::Absolute(0.0), None, None);
        let mut reports = Reports::default();
        let now = Instant::now();
        for i in 0..MAX_TOPICS * 3 {
            assert!(reports.admit(&p, &format!("t/{i}"), Reading::Number(1.0), now));
            assert!(reports.last.len() <= MAX_TOPICS);
        }
    }
}

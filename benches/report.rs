//! Report by exception on a realistic trace: what `deadband` + `heartbeat` save on a day of an
//! office's air-quality sensor polled every second, and what they cost per frame.
//!
//! The trace (deterministic, 86,400 frames `CO2=.. T=.. PM=..`): CO2 420 ppm at night, rising
//! to ~1,100 ppm while the office is occupied (9:00-17:00) with a ventilation dip at noon, in
//! the 1 ppm steps and ±4 ppm wobble of an NDIR sensor that refreshes every 5 s; temperature
//! 19-23.5 °C in 0.1 °C steps with ±0.1 °C noise; PM2.5 around 8 µg/m³ with the ±15 % noise of
//! a laser particle counter and a cooking spike at 12:30. Each frame is ruled in process by the
//! same rule engine the gateway runs, once with plain outputs and once with report keys.
//!
//! Run: `cargo bench --bench report`.

use std::time::{Duration, Instant, UNIX_EPOCH};

use serial2mqtt::config::schema;
use serial2mqtt::rules::report::Reports;
use serial2mqtt::rules::template::Builtins;
use serial2mqtt::rules::{Rule, RuleSet};

const PLAIN: &str = r#"
match: '^CO2=(?P<co2>\d+) T=(?P<t>[\d.]+) PM=(?P<pm>[\d.]+)$'
publish:
  - {topic: "office/{device}/co2", payload: "{co2}"}
  - {topic: "office/{device}/temperature", payload: "{t}"}
  - {topic: "office/{device}/pm25", payload: "{pm}"}
"#;

const BY_EXCEPTION: &str = r#"
match: '^CO2=(?P<co2>\d+) T=(?P<t>[\d.]+) PM=(?P<pm>[\d.]+)$'
publish:
  - {topic: "office/{device}/co2", payload: "{co2}", deadband: 20, heartbeat: 5m}
  - {topic: "office/{device}/temperature", payload: "{t}", deadband: 0.3, heartbeat: 5m}
  - {topic: "office/{device}/pm25", payload: "{pm}", deadband: "20%", heartbeat: 5m, min_interval: 10s}
"#;

/// xorshift64: the same trace every run.
struct Rng(u64);
impl Rng {
    fn unit(&mut self) -> f64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % 1_000_000) as f64 / 1_000_000.0
    }
    fn noise(&mut self, amplitude: f64) -> f64 {
        (self.unit() * 2.0 - 1.0) * amplitude
    }
}

/// The frame at second `s` of the day.
fn trace() -> Vec<String> {
    let mut rng = Rng(0x5EED_CAFE);
    let mut frames = Vec::with_capacity(86_400);
    let mut co2_shown = 420.0f64;
    for s in 0..86_400u32 {
        let h = f64::from(s) / 3600.0;
        let occupied = (9.0..17.0).contains(&h);
        let co2_true = if occupied {
            let ramp = ((h - 9.0) / 2.0).min(1.0);
            let noon = if (12.0..13.0).contains(&h) { 0.5 } else { 1.0 };
            420.0 + 680.0 * ramp * noon
        } else {
            420.0 + 300.0 * (-(h - 17.0).max(0.0) * 1.5).exp()
        };
        if s % 5 == 0 {
            co2_shown = co2_true + rng.noise(4.0);
        }
        let t =
            19.0 + 4.5 * ((h - 6.0) / 12.0 * std::f64::consts::PI).sin().max(0.0) + rng.noise(0.1);
        let spike = if (12.5..12.75).contains(&h) {
            40.0
        } else {
            0.0
        };
        let pm = ((8.0 + spike) * (1.0 + rng.noise(0.15))).max(0.0);
        frames.push(format!("CO2={:.0} T={t:.1} PM={pm:.1}", co2_shown));
    }
    frames
}

fn rules(yaml: &str) -> RuleSet {
    let raw: schema::Rule = match serde_yaml::from_str(yaml) {
        Ok(r) => r,
        Err(e) => panic!("bench rule: {e}"),
    };
    match Rule::compile("office", &raw) {
        Ok(r) => RuleSet::new(vec![std::sync::Arc::new(r)]),
        Err(e) => panic!("bench rule: {e:?}"),
    }
}

/// Messages and topic+payload bytes for the whole trace, and the time per frame.
fn run(set: &RuleSet, frames: &[String]) -> (usize, usize, Duration) {
    run_counting(set, frames, &mut std::collections::BTreeMap::new())
}

/// [`run`], counting the messages per topic in `per_topic`.
fn run_counting(
    set: &RuleSet,
    frames: &[String],
    per_topic: &mut std::collections::BTreeMap<String, usize>,
) -> (usize, usize, Duration) {
    let mut reports = Reports::default();
    let (mut messages, mut bytes) = (0, 0);
    let mut out = Vec::new();
    let mut problems = Vec::new();
    let start = Instant::now();
    for (s, frame) in frames.iter().enumerate() {
        // The trace's clock: one frame a second, from the bench's start.
        let env = Builtins {
            gateway: "gw",
            device: "air1",
            frame: frame.as_bytes(),
            now: UNIX_EPOCH + Duration::from_secs(s as u64),
            request: "",
        };
        out.clear();
        set.apply_at(&env, &mut out, &mut problems, &mut reports, start_of(s));
        messages += out.len();
        for m in &out {
            if let Some(n) = per_topic.get_mut(&m.topic) {
                *n += 1;
            } else if per_topic.len() < 16 {
                per_topic.insert(m.topic.clone(), 1);
            }
        }
        bytes += out
            .iter()
            .map(|m| m.topic.len() + m.payload.len())
            .sum::<usize>();
    }
    (messages, bytes, start.elapsed() / frames.len() as u32)
}

/// The monotonic instant of trace second `s` (report timing needs a clock that the bench can
/// run faster than real time).
fn start_of(s: usize) -> Instant {
    use std::sync::OnceLock;
    static ORIGIN: OnceLock<Instant> = OnceLock::new();
    *ORIGIN.get_or_init(Instant::now) + Duration::from_secs(s as u64)
}

fn main() {
    let frames = trace();
    let plain = rules(PLAIN);
    let by_exception = rules(BY_EXCEPTION);
    let runs = std::env::var("BENCH_RUNS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(5usize);
    let mut results = Vec::new();
    for _ in 0..runs {
        let a = run(&plain, &frames);
        let b = run(&by_exception, &frames);
        results.push((a, b));
    }
    results.sort_by_key(|(a, _)| a.2);
    let ((pm, pb, pt), _) = results[runs / 2];
    results.sort_by_key(|(_, b)| b.2);
    let (_, (em, eb, et)) = results[runs / 2];
    println!(
        "report by exception, 1 day of one sensor polled every second ({} frames, 3 topics)",
        frames.len()
    );
    println!(
        "{:<28} {:>10} {:>14} {:>12}",
        "", "messages", "bytes", "ns/frame"
    );
    println!(
        "{:<28} {:>10} {:>14} {:>12}",
        "every frame",
        pm,
        pb,
        pt.as_nanos()
    );
    println!(
        "{:<28} {:>10} {:>14} {:>12}",
        "deadband + heartbeat 5m",
        em,
        eb,
        et.as_nanos()
    );
    println!(
        "saved: {:.1} % of messages, {:.1} % of bytes ({} KiB a day); cost {:+} ns/frame",
        100.0 * (1.0 - em as f64 / pm as f64),
        100.0 * (1.0 - eb as f64 / pb as f64),
        (pb - eb) / 1024,
        et.as_nanos() as i64 - pt.as_nanos() as i64
    );
    let mut per_topic = std::collections::BTreeMap::new();
    run_counting(&by_exception, &frames, &mut per_topic);
    for (topic, n) in per_topic {
        println!("  {topic}: {n} messages");
    }
}

//! The rule engine, specified by YAML rules and the messages they produce.

use super::*;
use crate::config::schema;
use std::time::UNIX_EPOCH;

fn rule(name: &str, yaml: &str) -> Arc<Rule> {
    let raw: schema::Rule = serde_yaml::from_str(yaml).expect("rule yaml");
    Arc::new(Rule::compile(name, &raw).expect("rule compiles"))
}

fn compile_errors(yaml: &str) -> Vec<CompileError> {
    let raw: schema::Rule = serde_yaml::from_str(yaml).expect("rule yaml");
    Rule::compile("r", &raw).expect_err("rule must not compile")
}

fn apply(set: &RuleSet, frame: &[u8]) -> (Verdict, Vec<(String, String, u8, bool)>) {
    let env = Builtins {
        gateway: "gw",
        device: "dev",
        frame,
        now: UNIX_EPOCH,
        request: "",
    };
    let mut out = Vec::new();
    let mut problems = Vec::new();
    let v = set.apply(
        &env,
        &mut out,
        &mut problems,
        &mut report::Reports::default(),
    );
    let msgs = out
        .into_iter()
        .map(|m| {
            (
                m.topic,
                String::from_utf8_lossy(&m.payload).into_owned(),
                m.qos,
                m.retain,
            )
        })
        .collect();
    (v, msgs)
}

const CLIMATE: &str = r#"
match: '^T=(?P<temp>-?\d+(?:\.\d+)?);H=(?P<hum>\d+)$'
publish:
  - {topic: "sensors/{device}/temperature", payload: "{temp}", qos: 1, retain: true}
  - {topic: "sensors/{device}/humidity", payload: "{hum}"}
"#;

#[test]
fn regex_rule_yields_one_message_per_publish_entry() {
    let set = RuleSet::new(vec![rule("climate", CLIMATE)]);
    let (v, msgs) = apply(&set, b"T=21.5;H=40");
    assert_eq!(v, Verdict::Matched);
    assert_eq!(
        msgs,
        vec![
            ("sensors/dev/temperature".into(), "21.5".into(), 1, true),
            ("sensors/dev/humidity".into(), "40".into(), 0, false),
        ]
    );
}

/// Known, unwanted frames (NMEA `$GPGSV`, a banner) used to count as unmatched and be logged
/// every 10 s forever: a `drop: true` rule takes them, publishes nothing, counts them as dropped.
#[test]
fn a_drop_rule_matches_publishes_nothing_and_is_counted_as_dropped() {
    let set = RuleSet::new(vec![
        rule("gsv", "match: '^\\$GPGSV'\ndrop: true"),
        rule("climate", CLIMATE),
    ]);
    assert_eq!(apply(&set, b"$GPGSV,3,1,11"), (Verdict::Dropped, vec![]));
    assert_eq!(apply(&set, b"T=21.5;H=40").0, Verdict::Matched);
    assert_eq!(apply(&set, b"$GPXXX").0, Verdict::Unmatched);
}

/// A value from the frame (`"id":"x/y"`) used in a topic used to add topic levels; one with
/// `+`, `#` or NUL made an invalid topic. The message is not published and the reason is told.
#[test]
fn a_value_that_would_change_the_topics_shape_is_refused() {
    let set = RuleSet::new(vec![rule(
        "w",
        "json: true\npublish: [{topic: 'sensors/{id}/state', payload: '{t}'}]",
    )]);
    let env_frame = br#"{"id":"ws1","t":1}"#;
    assert_eq!(
        apply(&set, env_frame).1,
        vec![("sensors/ws1/state".into(), "1".into(), 0, false)]
    );
    for (bad, what) in [
        (r#"{"id":"x/y","t":1}"#, "a `/`"),
        (r#"{"id":"x+","t":1}"#, "wildcard"),
        (r##"{"id":"#","t":1}"##, "wildcard"),
        (r#"{"id":"a\u0000b","t":1}"#, "NUL"),
    ] {
        let env = Builtins {
            gateway: "gw",
            device: "dev",
            frame: bad.as_bytes(),
            now: UNIX_EPOCH,
            request: "",
        };
        let (mut out, mut problems) = (Vec::new(), Vec::new());
        set.apply(
            &env,
            &mut out,
            &mut problems,
            &mut report::Reports::default(),
        );
        assert!(out.is_empty(), "{bad}: {out:?}");
        assert!(
            problems.len() == 1
                && problems[0].text().contains("{id}")
                && problems[0].text().contains(what),
            "{bad}: {problems:?}"
        );
    }
}

/// `types: {id: string}` keeps an id that looks numeric as text; other captures are numbers
/// whatever their leading zeros; a text payload keeps the digits the device sent.
#[test]
fn types_make_a_capture_text_and_text_payloads_keep_the_devices_digits() {
    let set = RuleSet::new(vec![rule(
        "p1",
        "match: '^(?P<id>\\d+):(?P<kwh>[\\d.]+)$'\ntypes: {id: string}\npublish:\n  - {topic: j, payload: {id: '{id}', kwh: '{kwh}'}}\n  - {topic: t, payload: '{kwh}'}",
    )]);
    let (_, msgs) = apply(&set, b"0042:001234.500");
    assert_eq!(msgs[0].1, r#"{"id":"0042","kwh":1234.500}"#);
    assert_eq!(
        msgs[1].1, "001234.500",
        "a text payload is what the device sent"
    );
    let e = compile_errors("match: '(?P<a>.)'\ntypes: {b: string}\npublish: [{topic: t}]");
    assert!(
        e[0].path.contains("types.b") && e[0].message.contains("{b}"),
        "{e:?}"
    );
}

#[test]
fn non_matching_frame_is_unmatched() {
    let set = RuleSet::new(vec![rule("climate", CLIMATE)]);
    assert_eq!(apply(&set, b"T=hot;H=40"), (Verdict::Unmatched, vec![]));
}

#[test]
fn invalid_utf8_is_reported_as_such_for_text_rules() {
    let set = RuleSet::new(vec![rule("climate", CLIMATE)]);
    assert_eq!(apply(&set, b"T=2\xff;H=40").0, Verdict::InvalidUtf8);
}

#[test]
fn first_matching_rule_wins_unless_it_says_continue() {
    let any = "publish: [{topic: 'raw/{device}'}]";
    let set = RuleSet::new(vec![rule("climate", CLIMATE), rule("raw", any)]);
    let (_, msgs) = apply(&set, b"T=1;H=2");
    assert_eq!(msgs.len(), 2, "raw must not run after climate matched");

    let cont = format!("{CLIMATE}\ncontinue: true\n");
    let set = RuleSet::new(vec![rule("climate", &cont), rule("raw", any)]);
    let (_, msgs) = apply(&set, b"T=1;H=2");
    assert_eq!(msgs.len(), 3);
    assert_eq!(msgs[2], ("raw/dev".into(), "T=1;H=2".into(), 0, false));

    // A frame the first rule does not match falls through to the next.
    let (v, msgs) = apply(&set, b"hello");
    assert_eq!(v, Verdict::Matched);
    assert_eq!(msgs, vec![("raw/dev".into(), "hello".into(), 0, false)]);
}

#[test]
fn json_rule_uses_fields_with_their_types_and_nested_paths() {
    let r = rule(
        "w",
        r#"
json: true
publish:
  - topic: "sensors/{device}/{id}/state"
    payload: {temperature: "{temperature}", humidity: "{humidity}", where: "{loc.room}", label: "{id}-{humidity}"}
"#,
    );
    let set = RuleSet::new(vec![r]);
    let (v, msgs) = apply(
        &set,
        br#"{"id":"ws1","temperature":12.5,"humidity":81,"loc":{"room":"attic"}}"#,
    );
    assert_eq!(v, Verdict::Matched);
    assert_eq!(msgs[0].0, "sensors/dev/ws1/state");
    assert_eq!(
        msgs[0].1,
        r#"{"temperature":12.5,"humidity":81,"where":"attic","label":"ws1-81"}"#
    );
}

#[test]
fn json_frame_missing_a_used_field_does_not_match_that_rule() {
    let temp = rule(
        "t",
        "json: true\npublish: [{topic: 't/{id}', payload: '{temperature}'}]",
    );
    let pm = rule(
        "p",
        "json: true\npublish: [{topic: 'pm/{id}', payload: '{pm25}'}]",
    );
    let set = RuleSet::new(vec![temp, pm]);
    let (_, msgs) = apply(&set, br#"{"id":"a","pm25":7}"#);
    assert_eq!(msgs, vec![("pm/a".into(), "7".into(), 0, false)]);
    assert_eq!(apply(&set, br#"{"id":"a"}"#).0, Verdict::Unmatched);
    assert_eq!(
        apply(&set, b"[1,2]").0,
        Verdict::Unmatched,
        "arrays are not objects"
    );
    assert_eq!(apply(&set, b"not json").0, Verdict::Unmatched);
}

#[test]
fn binary_rule_reads_scaled_fields() {
    let r = rule(
        "power",
        r#"
fields:
  - {name: volts, offset: 0, type: u16le, scale: 0.01}
  - {name: amps,  offset: 2, type: i16le, scale: 0.001}
publish:
  - {topic: "power/{device}", payload: {v: "{volts}", a: "{amps}"}}
  - {topic: "power/{device}/raw", payload: "{frame_hex}"}
"#,
    );
    let set = RuleSet::new(vec![r]);
    let mut frame = 23049u16.to_le_bytes().to_vec();
    frame.extend_from_slice(&(-1250i16).to_le_bytes());
    let (v, msgs) = apply(&set, &frame);
    assert_eq!(v, Verdict::Matched);
    assert_eq!(msgs[0].1, r#"{"v":230.49,"a":-1.25}"#);
    assert_eq!(msgs[1].1, "095a1efb");
    // Too short for the fields: not matched, never a panic.
    assert_eq!(apply(&set, &frame[..3]).0, Verdict::Unmatched);
}

#[test]
fn rendered_topic_with_wildcard_is_skipped_and_reported() {
    let r = rule(
        "r",
        "match: '^(?P<room>.*)$'\npublish: [{topic: 'rooms/{room}'}, {topic: 'all'}]",
    );
    let set = RuleSet::new(vec![r]);
    let env = Builtins {
        gateway: "gw",
        device: "dev",
        frame: b"a+",
        now: UNIX_EPOCH,
        request: "",
    };
    let (mut out, mut problems) = (Vec::new(), Vec::new());
    assert_eq!(
        set.apply(
            &env,
            &mut out,
            &mut problems,
            &mut report::Reports::default()
        ),
        Verdict::Matched
    );
    assert_eq!(out.len(), 1, "the valid message is still published");
    assert_eq!(out[0].topic, "all");
    assert!(problems[0].text().contains("wildcard"), "{problems:?}");
}

#[test]
fn placeholder_that_the_regex_does_not_capture_is_a_compile_error_with_suggestion() {
    let errs =
        compile_errors("match: '^(?P<temp>\\d+)$'\npublish: [{topic: 't', payload: '{tmp}'}]");
    assert_eq!(errs[0].path, "publish[0].payload");
    assert!(errs[0].message.contains("{tmp}"), "{errs:?}");
    assert!(
        errs[0]
            .help
            .as_deref()
            .unwrap()
            .contains("did you mean {temp}"),
        "{errs:?}"
    );
}

#[test]
fn bad_regex_names_the_rule() {
    let errs = compile_errors("match: '^(?P<temp>\\d+$'\npublish: [{topic: 't'}]");
    assert_eq!(errs[0].path, "match");
    assert!(errs[0].message.contains("rule `r`"), "{errs:?}");
    assert!(errs[0].message.contains("does not compile"), "{errs:?}");
}

#[test]
fn other_rule_errors() {
    let e = compile_errors("match: 'x'\njson: true\npublish: [{topic: 't'}]");
    assert!(e[0].message.contains("more than one"), "{e:?}");
    let e = compile_errors("publish: [{topic: 'a/+/b'}]");
    assert!(e[0].message.contains("wildcard"), "{e:?}");
    let e = compile_errors("publish: [{topic: 't', qos: 3}]");
    assert_eq!(e[0].path, "publish[0].qos");
    let e = compile_errors("fields: [{name: v, offset: 0, type: u16el}]\npublish: [{topic: 't'}]");
    assert!(
        e[0].help
            .as_deref()
            .unwrap()
            .contains("did you mean `u16le`"),
        "{e:?}"
    );
    let e = compile_errors("match: '(?P<device>.*)'\npublish: [{topic: 't'}]");
    assert!(e[0].message.contains("built-in"), "{e:?}");
    let e = compile_errors("publish: []");
    assert!(e[0].message.contains("publishes nothing"), "{e:?}");
    assert!(
        e[0].help.as_deref().unwrap_or("").contains("drop: true"),
        "{e:?}"
    );
    let e = compile_errors("drop: true\npublish: [{topic: 't'}]");
    assert!(
        e[0].message.contains("a drop rule publishes nothing"),
        "{e:?}"
    );
}

#[test]
fn non_ascii_placeholder_names_keep_the_text_after_them() {
    let r = rule(
        "t",
        "json: true\npublish: [{topic: 'x/{température}/y/{id}', payload: '{température} °C'}]",
    );
    let set = RuleSet::new(vec![r]);
    let (_, msgs) = apply(&set, r#"{"température": 21, "id": "a"}"#.as_bytes());
    assert_eq!(msgs, vec![("x/21/y/a".into(), "21 °C".into(), 0, false)]);
}

#[test]
fn scaled_negative_zero_is_published_as_zero() {
    let r = rule(
        "z",
        "fields: [{name: v, offset: 0, type: i16le, scale: 0.001, decimals: 1}]\npublish: [{topic: t, payload: '{v}'}, {topic: j, payload: {v: '{v}'}}]",
    );
    let set = RuleSet::new(vec![r]);
    let (_, msgs) = apply(&set, &(-1i16).to_le_bytes());
    assert_eq!(msgs[0].1, "0");
    assert_eq!(msgs[1].1, r#"{"v":0.0}"#);
}

#[test]
fn integers_beyond_64_bits_stay_text_in_json_payloads() {
    let r = rule(
        "id",
        "match: '^(?P<id>\\d+)$'\npublish: [{topic: t, payload: {id: '{id}'}}]",
    );
    let set = RuleSet::new(vec![r]);
    let (_, msgs) = apply(&set, b"12345678901234567890123");
    assert_eq!(msgs[0].1, r#"{"id":"12345678901234567890123"}"#);
    let (_, msgs) = apply(&set, b"42");
    assert_eq!(msgs[0].1, r#"{"id":42}"#);
}

#[test]
fn huge_binary_offsets_are_a_compile_error() {
    let e = compile_errors(&format!(
        "fields: [{{name: v, offset: {}, type: u32le}}]\npublish: [{{topic: t}}]",
        usize::MAX - 1
    ));
    assert!(e[0].message.contains("out of range"), "{e:?}");
}

/// NMEA GGA to degrees, altitude and fix: computed values are placeholders like captures,
/// typed in JSON, and may use the values before them.
const GGA: &str = r#"
match: '^\$GPGGA,[^,]*,(?P<lat>[\d.]+),(?P<ns>[NS]),(?P<lon>[\d.]+),(?P<ew>[EW]),(?P<fix>\d),(?P<sats>\d+),[^,]*,(?P<alt>-?[\d.]+),M'
values:
  latitude: nmea_degrees(lat, ns)
  longitude: nmea_degrees(lon, ew)
  alt_ft: round(alt * 3.28084, 1)
  fixed: fix > 0
  quality: if(fix == 1, "gps", if(fix == 2, "dgps", "other"))
publish:
  - topic: "gps/{device}"
    payload: {lat: "{latitude}", lon: "{longitude}", alt_m: "{alt}", alt_ft: "{alt_ft}", fix: "{fixed}", quality: "{quality}"}
"#;

#[test]
fn computed_values_turn_nmea_positions_into_degrees() {
    let set = RuleSet::new(vec![rule("gga", GGA)]);
    let (v, msgs) = apply(
        &set,
        b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47",
    );
    assert_eq!(v, Verdict::Matched);
    assert_eq!(
        msgs[0].1,
        r#"{"lat":48.1173,"lon":11.5166667,"alt_m":545.4,"alt_ft":1789.4,"fix":true,"quality":"gps"}"#
    );
}

#[test]
fn a_value_that_cannot_be_computed_is_a_counted_problem_not_a_wrong_message() {
    let set = RuleSet::new(vec![rule(
        "r",
        r#"
match: '^V=(?P<raw>\w+)$'
values: {volts: raw / 1000}
publish: [{topic: "v", payload: "{volts}"}]
"#,
    )]);
    assert_eq!(apply(&set, b"V=4200").1[0].1, "4.2");
    let env = Builtins {
        gateway: "gw",
        device: "dev",
        frame: b"V=abc",
        now: UNIX_EPOCH,
        request: "",
    };
    let (mut out, mut problems) = (Vec::new(), Vec::new());
    assert_eq!(
        set.apply(
            &env,
            &mut out,
            &mut problems,
            &mut report::Reports::default()
        ),
        Verdict::Matched
    );
    assert!(out.is_empty());
    assert!(
        matches!(&problems[..], [Problem::Value(t)] if t.contains("rule `r`: `volts` = `raw / 1000`")),
        "{problems:?}"
    );
}

#[test]
fn json_and_binary_rules_compute_too_and_a_missing_json_field_does_not_match() {
    let set = RuleSet::new(vec![rule(
        "j",
        r#"
json: true
values: {f: t * 1.8 + 32}
publish: [{topic: "f", payload: "{f}"}]
"#,
    )]);
    assert_eq!(apply(&set, br#"{"t": 25}"#).1[0].1, "77");
    assert_eq!(apply(&set, br#"{"x": 25}"#).0, Verdict::Unmatched);
    let set = RuleSet::new(vec![rule(
        "b",
        r#"
fields:
  - {name: hi, offset: 0, type: u16be}
  - {name: lo, offset: 2, type: u16be}
  - {name: status, offset: 4, type: u8}
values:
  amps: word32(hi, lo) / 1000
  alarm: bit(status, 2)
publish: [{topic: "m", payload: {a: "{amps}", alarm: "{alarm}"}}]
"#,
    )]);
    assert_eq!(
        apply(&set, &[0x00, 0x01, 0x11, 0x70, 0x04]).1[0].1,
        r#"{"a":70,"alarm":1}"#
    );
}

#[test]
fn values_are_checked_when_the_config_loads() {
    let e = compile_errors(
        r#"
match: '^(?P<a>\d+)$'
values: {b: a + c, a: 1}
publish: [{topic: "t", payload: "{b}"}]
"#,
    );
    assert_eq!(e[0].path, "values.b");
    assert!(e[0].message.contains("placeholder {c}"), "{e:?}");
    assert_eq!(e[1].path, "values.a");
    assert!(e[1].message.contains("name of a named capture"), "{e:?}");
    let e = compile_errors(
        r#"
match: '^(?P<a>\d+)$'
values: {b: c * 2, c: a}
publish: [{topic: "t", payload: "{b}"}]
"#,
    );
    assert!(
        e[0].message.contains("placeholder {c}"),
        "a value uses only those before it: {e:?}"
    );
    let e = compile_errors(
        r#"
match: '^(?P<a>\d+)$'
values: {b: nmea(a)}
publish: [{topic: "t", payload: "{b}"}]
"#,
    );
    assert!(e[0].message.contains("calls `nmea`"), "{e:?}");
}

#[test]
fn report_by_exception_leaves_out_unchanged_readings_per_topic() {
    let set = RuleSet::new(vec![rule(
        "co2",
        r#"
match: '^(?P<id>\w+) CO2=(?P<ppm>\d+) T=(?P<t>[\d.]+)$'
publish:
  - {topic: "co2/{id}", payload: "{ppm}", deadband: 20, heartbeat: 1h}
  - {topic: "t/{id}", payload: {t: "{t}"}, deadband: "2%"}
  - {topic: "raw/{id}", payload: "{frame}"}
"#,
    )]);
    let mut reports = report::Reports::default();
    let mut run = |frame: &str| {
        let env = Builtins {
            gateway: "gw",
            device: "dev",
            frame: frame.as_bytes(),
            now: UNIX_EPOCH,
            request: "",
        };
        let (mut out, mut problems) = (Vec::new(), Vec::new());
        set.apply(&env, &mut out, &mut problems, &mut reports);
        out.into_iter().map(|m| m.topic).collect::<Vec<_>>()
    };
    assert_eq!(run("a CO2=400 T=20.0"), ["co2/a", "t/a", "raw/a"]);
    assert_eq!(run("a CO2=410 T=20.2"), ["raw/a"], "within both deadbands");
    assert_eq!(
        run("b CO2=410 T=20.2"),
        ["co2/b", "t/b", "raw/b"],
        "per topic"
    );
    assert_eq!(run("a CO2=421 T=20.2"), ["co2/a", "raw/a"]);
    assert_eq!(run("a CO2=421 T=20.5"), ["t/a", "raw/a"]);
}

#[test]
fn report_keys_are_checked_when_the_config_loads() {
    for (publish, path, needle) in [
        (
            r#"{topic: t, deadband: -1}"#,
            "publish[0].deadband",
            "deadband `-1`",
        ),
        (
            r#"{topic: t, deadband: "two%"}"#,
            "publish[0].deadband",
            "2%",
        ),
        (
            r#"{topic: t, heartbeat: 0s}"#,
            "publish[0].heartbeat",
            "heartbeat of 0",
        ),
        (
            r#"{topic: t, heartbeat: 1m, min_interval: 5m}"#,
            "publish[0].min_interval",
            "not shorter than heartbeat",
        ),
    ] {
        let e = compile_errors(&format!("match: x\npublish: [{publish}]"));
        assert_eq!(e[0].path, path, "{e:?}");
        let text = format!("{} {}", e[0].message, e[0].help.clone().unwrap_or_default());
        assert!(text.contains(needle), "{publish}: {text}");
    }
}

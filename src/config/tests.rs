//! Config loading, specified by files and the exact errors users see.

use super::*;

fn load(text: &str) -> Result<Config, ConfigError> {
    parse(text, Path::new("gw.yaml"))
}

fn error_text(text: &str) -> String {
    load(text).expect_err("config must be rejected").to_string()
}

const GOOD: &str = r#"
gateway:
  id: greenhouse-pi
broker:
  listen: 127.0.0.1:1884
devices:
  - name: greenhouse
    port: /dev/ttyUSB-test
    baud: 115200
    framing: lines
    rules: [climate]
rules:
  climate:
    match: '^T=(?P<temp>[\d.]+)$'
    publish:
      - topic: sensors/{device}/temperature
        payload: "{temp}"
"#;

/// `check` used to say OK to ports that cannot work: each is now named for what it is.
#[test]
fn ports_that_cannot_be_serial_ports_are_named_for_what_they_are() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("notes.txt");
    std::fs::write(&file, "x").unwrap();
    let lp = dir.path().join("loop");
    std::os::unix::fs::symlink(&lp, &lp).unwrap();
    for (port, what) in [
        (
            dir.path().display().to_string(),
            "is a directory, not a serial port",
        ),
        (
            file.display().to_string(),
            "is a regular file, not a serial port",
        ),
        (
            "/dev/null".into(),
            "is a memory device like /dev/null or /dev/zero",
        ),
        (
            "/dev/zero".into(),
            "is a memory device like /dev/null or /dev/zero",
        ),
        (lp.display().to_string(), "is a symlink loop"),
        ("/dev/ttyUSB-test".into(), "does not exist now"),
    ] {
        let c = load(&GOOD.replace("/dev/ttyUSB-test", &port)).unwrap();
        let w: Vec<&str> = c.warnings.iter().map(|w| w.message.as_str()).collect();
        assert!(w.iter().any(|m| m.contains(what)), "{port}: {w:?}");
    }
}

/// `delimiter: "\xAB"` is the character U+00AB, two bytes C2 AB: a device sending the byte AB
/// never ends a frame. `check` says so and offers the hex form.
#[test]
fn a_delimiter_escape_above_7f_gets_a_warning_offering_delimiter_hex() {
    let c = load(&GOOD.replace("framing: lines", r#"framing: {delimiter: "\xAB"}"#)).unwrap();
    let w = c
        .warnings
        .iter()
        .map(|w| format!("{} {:?}", w.message, w.help))
        .collect::<String>();
    assert!(
        w.contains("U+00AB, which is 2 bytes on the wire (C2AB), not the byte AB"),
        "{w}"
    );
    assert!(w.contains(r#"delimiter_hex: \"AB\""#), "{w}");
    let c = load(&GOOD.replace("framing: lines", r#"framing: {delimiter_hex: "AB"}"#)).unwrap();
    assert!(
        c.warnings.iter().all(|w| !w.message.contains("delimiter")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn two_unpolled_devices_on_one_port_and_fields_past_a_fixed_frame_are_errors() {
    let two = GOOD.replace(
        "rules:\n  climate:",
        "  - {name: second, port: /dev/ttyUSB-test, rules: [climate]}\nrules:\n  climate:",
    );
    let e = error_text(&two);
    assert!(
        e.contains("devices[1].framing: devices ")
            && e.contains("read /dev/ttyUSB-test as several protocols (none is polled), but two of them are cut by a delimiter (lines and lines)"),
        "{e}"
    );
    let past = "devices:\n  - {name: sds, port: /dev/ttyUSB-test, framing: {fixed: 10}, rules: [pm]}\nrules:\n  pm:\n    fields: [{name: pm, offset: 9, type: u16le}]\n    publish: [{topic: t, payload: '{pm}'}]\n";
    let e = error_text(past);
    assert!(
        e.contains("rule `pm` reads bytes up to 11, past the end of this device's 10-byte frames"),
        "{e}"
    );
}

#[test]
fn type_errors_say_what_to_write() {
    let cases = [
        (
            "  listen: 127.0.0.1:1884",
            "  listen: localhost:1884",
            "write an IP address and a port, e.g. 127.0.0.1:1883",
        ),
        (
            "  id: greenhouse-pi",
            "  id: greenhouse-pi\n  stats_interval: 30",
            "write a duration with a unit, e.g. 30s",
        ),
        (
            "        payload: \"{temp}\"",
            "        payload: \"{temp}\"\n        retain: yes",
            "write true or false",
        ),
    ];
    for (from, to, hint) in cases {
        let e = error_text(&GOOD.replace(from, to));
        assert!(e.contains(hint), "{to}: {e}");
    }
    let e = error_text(&format!(
        "{GOOD}uplink: {{url: mqtt://h}}\nqueue: {{max_bytes: -1}}\n"
    ));
    assert!(e.contains("expected a size") && e.contains("512MiB"), "{e}");
    // A regex that does not compile is the one error, not followed by its placeholders'.
    let e = error_text(&GOOD.replace(
        "match: '^T=(?P<temp>[\\d.]+)$'",
        "match: '^T=(?P<temp>[\\d.+)$'",
    ));
    assert!(e.contains("the regex does not compile"), "{e}");
    assert!(!e.contains("placeholder"), "{e}");
}

#[test]
fn a_good_file_loads_with_defaults_filled_in() {
    let c = load(GOOD).unwrap();
    assert_eq!(c.gateway.id, "greenhouse-pi");
    assert_eq!(c.broker.max_connections, 64);
    let d = &c.devices[0];
    assert_eq!(d.max_frame, 1024);
    assert_eq!(
        d.state_topic,
        "serial2mqtt/greenhouse-pi/devices/greenhouse/state"
    );
    assert!(d.unmatched_topic.is_none());
    // The port does not exist here: a warning, not an error.
    assert!(
        c.warnings
            .iter()
            .any(|w| w.message.contains("does not exist")),
        "{:?}",
        c.warnings
    );
}

/// An empty file (truncated by an editor, a failed copy) used to mean "no devices": on a
/// reload every device stopped. It is an error, as is a file of comments only.
#[test]
fn an_empty_or_comment_only_file_is_an_error_not_no_devices() {
    for text in ["", "\n\n", "# nothing yet\n"] {
        let e = error_text(text);
        assert!(e.contains("the file is empty"), "{text:?}: {e}");
        assert!(e.contains("config/serial2mqtt.yaml"), "{e}");
    }
    let c = load("devices: []\n").unwrap();
    assert!(c.devices.is_empty());
    assert_eq!(c.broker.listen.port(), 1883);
    assert!(!c.gateway.id.is_empty(), "defaults to the host name");
}

/// A second rule (or device, command, section) of the same name used to replace the first
/// silently; its frames became "no rule matched".
#[test]
fn a_key_written_twice_is_an_error_at_the_second_naming_the_first() {
    let text = "devices: []\nrules:\n  climate:\n    match: 'a'\n    publish: []\n  climate:\n    match: 'b'\n    publish: []\n";
    let e = error_text(text);
    assert!(
        e.contains(":6:3: error: `rules.climate` is written twice (first at line 3)"),
        "{e}"
    );
    let e = error_text("devices: []\nbroker: {}\nlog: {}\nbroker: {listen: '127.0.0.1:1'}\n");
    assert!(
        e.contains(":4:1: error: `broker` is written twice (first at line 2)"),
        "{e}"
    );
}

/// YAML merge keys (`<<: *defaults`) used to be an "unknown field `<<`" error: two meters on
/// one adapter share their line settings and register map, and a key written beside the
/// merge wins over the merged one, as YAML says.
#[test]
fn merge_keys_share_settings_between_devices() {
    let text = r#"
x-line: &line {port: /dev/ttyUSB-test, baud: 9600, parity: even, offline_after: 2}
x-map: &map
  every: 5s
  points: [{name: volts, input: 0, scale: 0.1}, {name: amps, input: 1, scale: 0.01}]
devices:
  - <<: *line
    name: one
    modbus: {<<: *map, unit: 1}
    rules: [meter]
  - <<: *line
    name: two
    port: /dev/ttyUSB-test2
    baud: 19200
    modbus: {<<: *map, unit: 2, every: 1s}
    rules: [meter]
rules:
  meter:
    points: true
    publish: [{topic: "power/{device}", payload: {v: "{volts}", a: "{amps}"}}]
"#;
    let c = load(text).unwrap();
    assert_eq!(c.devices.len(), 2);
    assert_eq!(
        (c.devices[0].serial.baud, c.devices[1].serial.baud),
        (9600, 19200),
        "a key beside the merge wins"
    );
    assert_eq!(c.devices[1].modbus.as_ref().unwrap().unit, 2);
    // Anchors may also sit on a first device that the others merge.
    let text = r#"
devices:
  - &one
    name: one
    port: /dev/ttyUSB-test
    baud: 9600
    parity: even
    modbus: &map
      unit: 1
      every: 5s
      points: [{name: volts, input: 0, scale: 0.1}, {name: amps, input: 1, scale: 0.01}]
    rules: [meter]
  - <<: *one
    name: two
    port: /dev/ttyUSB-test2
    baud: 19200
    modbus: {<<: *map, unit: 2, every: 1s}
rules:
  meter:
    points: true
    publish: [{topic: "power/{device}", payload: {v: "{volts}", a: "{amps}"}}]
"#;
    let c = load(text).unwrap();
    let [one, two] = &c.devices[..] else {
        panic!("two devices: {:?}", c.devices.len())
    };
    assert_eq!((one.serial.baud, two.serial.baud), (9600, 19200));
    assert_eq!(two.name, "two");
    let (u1, u2) = (one.modbus.as_ref().unwrap(), two.modbus.as_ref().unwrap());
    assert_eq!((u1.unit, u2.unit), (1, 2));
    assert_eq!(u2.points.len(), 2);
    assert_eq!(two.polls[0].every, std::time::Duration::from_secs(1));
    // A mistake inside a merged mapping is still an error naming the key.
    let e = error_text(&text.replace("every: 1s", "evry: 1s"));
    assert!(
        e.contains("gw.yaml:17:") && e.contains("unknown field `evry`"),
        "{e}"
    );
}

#[test]
fn unknown_key_points_at_the_line_and_suggests_the_right_key() {
    let text = GOOD.replace("    baud: 115200", "    bauds: 115200");
    let e = error_text(&text);
    assert!(
        e.starts_with("gw.yaml:9:5: error: devices[0]: unknown field `bauds`"),
        "{e}"
    );
    assert!(e.contains("help: did you mean `baud`?"), "{e}");
}

#[test]
fn unknown_framing_suggests_the_valid_ones() {
    let e = error_text(&GOOD.replace("framing: lines", "framing: line"));
    assert!(e.contains("gw.yaml:10:"), "{e}");
    assert!(e.contains("did you mean `lines`"), "{e}");
}

#[test]
fn yaml_syntax_error_has_a_position() {
    let e = error_text("devices:\n  - name: a\n   port: x\n");
    assert!(e.starts_with("gw.yaml:3:"), "{e}");
}

#[test]
fn undefined_rule_is_an_error_at_its_line_with_a_suggestion() {
    let e = error_text(&GOOD.replace("rules: [climate]", "rules: [climat]"));
    assert!(e.starts_with("gw.yaml:11:"), "{e}");
    assert!(e.contains("rule `climat`, which is not defined"), "{e}");
    assert!(e.contains("did you mean `climate`?"), "{e}");
}

#[test]
fn bad_regex_points_at_the_match_line() {
    let e = error_text(&GOOD.replace(r"(?P<temp>[\d.]+)$", r"(?P<temp>[\d.]+$"));
    assert!(e.starts_with("gw.yaml:14:"), "{e}");
    assert!(
        e.contains("rule `climate`: the regex does not compile"),
        "{e}"
    );
}

#[test]
fn template_naming_a_missing_capture_is_a_check_error() {
    let e = error_text(&GOOD.replace(r#"payload: "{temp}""#, r#"payload: "{temperature}""#));
    assert!(e.starts_with("gw.yaml:17:"), "{e}");
    assert!(e.contains("{temperature}"), "{e}");
    assert!(e.contains("did you mean {temp}"), "{e}");
}

#[test]
fn every_error_is_reported_not_just_the_first() {
    let text = GOOD.replace("baud: 115200", "baud: 0").replace(
        "rules: [climate]",
        "rules: [climate, nope]\n    data_bits: 9",
    );
    let e = load(&text).unwrap_err();
    assert_eq!(e.diagnostics.len(), 3, "{e}");
}

#[test]
fn device_problems() {
    let e = error_text(&GOOD.replace("    port: /dev/ttyUSB-test\n", ""));
    assert!(e.contains("has no `port`"), "{e}");
    let two = format!("{GOOD}\n").replace(
        "devices:\n",
        "devices:\n  - {name: greenhouse, port: /dev/x, rules: [climate]}\n",
    );
    assert!(error_text(&two).contains("used twice"));
    let e = error_text(&GOOD.replace("framing: lines", "framing: {delimiter: \"\"}"));
    assert!(e.contains("framing"), "{e}");
    let e = error_text(&GOOD.replace("name: greenhouse", "name: green/house"));
    assert!(e.contains("green/house"), "{e}");
}

#[test]
fn unused_rules_are_warnings() {
    let text = format!("{GOOD}  spare:\n    publish: [{{topic: x}}]\n");
    let c = load(&text).unwrap();
    assert!(c
        .warnings
        .iter()
        .any(|w| w.message.contains("rule `spare` is not used")));
}

#[test]
fn commands_are_compiled_per_device_and_mistakes_point_at_their_line() {
    let with = |device_commands: &str, commands: &str| {
        GOOD.replace(
            "    rules: [climate]\n",
            &format!("    rules: [climate]\n    commands: {device_commands}\n"),
        ) + "commands:\n"
            + commands
    };
    let switch = "  switch:\n    subscribe: 'cmd/{gateway}/{device}/set'\n    write: 'R1={payload}'\n    reply_topic: 'cmd/{gateway}/{device}/result'\n";
    let c = load(&with("[switch]", switch)).unwrap();
    let cmd = &c.devices[0].commands[0];
    assert_eq!(cmd.filter, "cmd/greenhouse-pi/greenhouse/set");
    assert_eq!(
        cmd.reply_topic.as_deref(),
        Some("cmd/greenhouse-pi/greenhouse/result")
    );

    let e = error_text(&with("[swich]", switch));
    assert!(
        e.contains("gw.yaml:12:16:")
            && e.contains("uses command `swich`, which is not defined")
            && e.contains("did you mean `switch`?"),
        "{e}"
    );

    let e = error_text(&with(
        "[switch]",
        "  switch:\n    subscribe: 'cmd/#'\n    write: x\n    reply_topic: 'cmd/{device}/result'\n",
    ));
    assert!(
        e.contains("replies on `cmd/greenhouse/result` would be taken as commands by `switch`"),
        "{e}"
    );

    let e = error_text(&with(
        "[switch]",
        "  switch:\n    subscribe: s\n    write: '{temp}'\n",
    ));
    assert!(
        e.contains("gw.yaml:22:5:") && e.contains("placeholder {temp} names nothing"),
        "{e}"
    );

    let c = load(&with("[]", switch)).unwrap();
    assert!(c
        .warnings
        .iter()
        .any(|w| w.message.contains("command `switch` is not used")));

    // Commands of one device with no common first level: a warning naming them.
    let other = "  other:
    subscribe: 'relays/{device}'
    write: x
";
    let c = load(&with("[switch, other]", &format!("{switch}{other}"))).unwrap();
    assert!(
        c.warnings
            .iter()
            .any(|w| w.message.contains("share no first topic level")
                && w.message.contains("relays/greenhouse")),
        "{:?}",
        c.warnings
    );
    let near = "  other:
    subscribe: 'cmd/{gateway}/{device}/other'
    write: x
";
    let c = load(&with("[switch, other]", &format!("{switch}{near}"))).unwrap();
    assert!(c.warnings.iter().all(|w| !w.message.contains("share no")));
}

#[test]
fn home_assistant_mistakes_are_explained() {
    let with = |ha: &str| {
        GOOD.replace(
            "        payload: \"{temp}\"\n",
            &format!("        payload: \"{{temp}}\"\n        homeassistant: {ha}\n"),
        )
    };
    let c = load(&with("{device_class: temperature}")).unwrap();
    assert_eq!(c.devices[0].rules.entities("g", "d").count(), 1);
    let e = error_text(&with("{component: switch}"));
    assert!(
        e.contains("component `switch` is not possible here")
            && e.contains("sensor, binary_sensor"),
        "{e}"
    );
    let e = error_text(&with("{state_topic: x}"));
    assert!(e.contains("`state_topic` is set by serial2mqtt"), "{e}");
    let e = error_text(&with("{object_id: 'a b'}"));
    assert!(e.contains("object_id `a b` may only have"), "{e}");
    let per_frame = with("{device_class: temperature}")
        .replace("sensors/{device}/temperature", "sensors/{device}/{temp}");
    let e = error_text(&per_frame);
    assert!(
        e.contains("Home Assistant needs one state topic per device"),
        "{e}"
    );
}

#[test]
fn state_topic_only_allows_gateway_and_device() {
    let with = |extra: &str| {
        GOOD.replace(
            "  id: greenhouse-pi",
            &format!("  id: greenhouse-pi\n{extra}"),
        )
    };
    let c = load(&with("  state_topic: 'st/{gateway}/{device}'")).unwrap();
    assert_eq!(c.devices[0].state_topic, "st/greenhouse-pi/greenhouse");
    // A per-frame built-in has no meaning for a state topic.
    let e = error_text(&with("  state_topic: 'st/{gateway}/{frame_hex}'"));
    assert!(e.contains("{frame_hex} is not available here"), "{e}");
    assert!(error_text(&with("  state_topic: ''")).contains("the topic is empty"));
    let text = GOOD.replace(
        "  id: greenhouse-pi",
        "  id: greenhouse-pi\n  unmatched_topic: 'x/{temp}'",
    );
    let e = error_text(&text);
    assert!(e.contains("only {gateway} and {device}"), "{e}");
}

#[test]
fn missing_file_says_what_to_do() {
    let e = super::load(Path::new("/nonexistent/serial2mqtt.yaml"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot read the config file"), "{e}");
    assert!(e.contains("--config"), "{e}");
}

/// A network listener without logins is named for what it is: anyone can connect; with
/// commands, a broker running so refuses them unless allowed; a loopback listener or logins
/// say nothing. `check` only warns: the file keeps its commands, and the gateway turns them
/// off from the broker in force (`commands_in_force`), at start and on reload.
#[test]
fn an_open_network_listener_is_a_warning_and_turns_commands_off() {
    use crate::config::check::{commands_in_force, refuses_commands};
    let open = GOOD.replace("listen: 127.0.0.1:1884", "listen: 0.0.0.0:1884");
    let c = load(&open).unwrap();
    assert!(
        c.warnings
            .iter()
            .any(|w| w.message.contains("anyone on the network can connect")),
        "{:?}",
        c.warnings
    );
    assert!(!load(GOOD)
        .unwrap()
        .warnings
        .iter()
        .any(|w| w.message.contains("without logins")));
    let commanded = open.replace(
        "    rules: [climate]",
        "    rules: [climate]\n    commands: [vent]",
    )
        + "commands:\n  vent: {subscribe: \"cmd/{device}/vent\", write: \"V={payload}\\n\"}\n";
    let mut c = load(&commanded).unwrap();
    assert_eq!(
        c.devices[0].commands.len(),
        1,
        "check leaves the file as written"
    );
    assert!(refuses_commands(&c.broker));
    let broker = c.broker.clone();
    assert_eq!(commands_in_force(&broker, &mut c.devices), ["greenhouse"]);
    assert!(c.devices[0].commands.is_empty(), "commands off");
    assert!(c
        .warnings
        .iter()
        .any(|w| w.message.contains("so the commands of greenhouse are off")));
    let allowed = commanded.replace(
        "listen: 0.0.0.0:1884",
        "listen: 0.0.0.0:1884\n  allow_anonymous_commands: true",
    );
    let mut c = load(&allowed).unwrap();
    assert!(!refuses_commands(&c.broker));
    let broker = c.broker.clone();
    assert!(commands_in_force(&broker, &mut c.devices).is_empty());
    assert_eq!(c.devices[0].commands.len(), 1);
    assert!(c.warnings.iter().any(|w| w
        .message
        .contains("anyone on the network can write to greenhouse")));
}

/// Issue 31: a command that writes `{payload}` with no `match:` lets whoever may publish on
/// its topic choose the text the device gets; `check` names it and shows a `match:` to add.
#[test]
fn a_command_taking_any_payload_is_a_warning_with_a_match_to_add() {
    let commanded = |command: &str| {
        GOOD.replace(
            "    rules: [climate]",
            "    rules: [climate]\n    commands: [fan]",
        ) + "commands:\n  fan: "
            + command
            + "\n"
    };
    let c = load(&commanded(
        "{subscribe: \"cmd/{device}/fan\", write: \"FAN={payload}\\n\"}",
    ))
    .unwrap();
    let w = c
        .warnings
        .iter()
        .find(|w| w.message.contains("command `fan` writes any payload"))
        .unwrap_or_else(|| panic!("{:?}", c.warnings));
    let shown = w.render(Path::new("gw.yaml"), "warning");
    assert!(shown.contains("commands.fan.write"), "{shown}");
    assert!(shown.contains("match: '^(?P<value>"), "{shown}");
    let c = load(&commanded(
        "{subscribe: \"cmd/{device}/fan\", write_hex: \"01 {payload_hex}\"}",
    ))
    .unwrap();
    assert!(
        c.warnings
            .iter()
            .any(|w| w.message.contains("command `fan` writes any bytes")),
        "{:?}",
        c.warnings
    );
    let c = load(&commanded(
        "{subscribe: \"cmd/{device}/fan\", match: '^(?P<speed>[0-3])$', write: \"FAN={speed}\\n\"}",
    ))
    .unwrap();
    assert!(
        !c.warnings.iter().any(|w| w.message.contains("writes any")),
        "{:?}",
        c.warnings
    );
}

#[test]
fn shipped_configs_pass_check() {
    for f in [
        "config/demo.yaml",
        "config/serial2mqtt.yaml",
        "config/installed.yaml",
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(f);
        if let Err(e) = super::load(&path) {
            panic!("{f} must pass check:\n{e}");
        }
    }
}

#[test]
fn fixed_frames_must_fit_max_frame() {
    let e = error_text(&GOOD.replace("framing: lines", "framing: {fixed: 4096}"));
    assert!(e.contains("larger than max_frame (1024)"), "{e}");
    assert!(e.contains("raise max_frame to at least 4096"), "{e}");
}

#[test]
fn connect_timeout_must_let_clients_connect() {
    let e = error_text(&GOOD.replace(
        "  listen: 127.0.0.1:1884",
        "  listen: 127.0.0.1:1884\n  connect_timeout: 0s",
    ));
    assert!(e.contains("between 1s and 65s"), "{e}");
}

#[test]
fn duplicate_names_are_reported_even_when_the_first_device_has_errors() {
    let text = GOOD.replace(
        "devices:\n",
        "devices:\n  - {name: greenhouse, port: /dev/x, data_bits: 9, rules: [climate]}\n",
    );
    let e = error_text(&text);
    assert!(e.contains("9 data bits"), "{e}");
    assert!(e.contains("used twice"), "{e}");
}

#[test]
fn an_uplink_is_validated_and_rendered() {
    let text = format!("{GOOD}uplink:\n  url: [mqtt://a.example:1884, mqtts://b.example]\n  topic_prefix: 'sites/{{gateway}}/'\n  subscribe: ['cmd/{{gateway}}/#']\n");
    let c = load(&text).unwrap();
    let u = c.uplink.unwrap();
    assert_eq!(u.endpoints.len(), 2);
    assert_eq!(u.endpoints[1].to_string(), "mqtts://b.example:8883");
    assert_eq!(u.client_id, "greenhouse-pi");
    assert_eq!(u.topic_prefix, "sites/greenhouse-pi/");
    assert_eq!(u.subscribe, vec!["cmd/greenhouse-pi/#"]);
    assert_eq!(u.status_topic, "serial2mqtt/greenhouse-pi/status");
    assert_eq!(u.forward, vec!["#"]);
    assert!(c.queue.dir.ends_with("queue"));
}

#[test]
fn uplink_mistakes_are_explained() {
    let e = error_text(&format!("{GOOD}uplink:\n  url: http://x\n"));
    assert!(
        e.contains("scheme `http` is not mqtt://, mqtts://, ws:// or wss://"),
        "{e}"
    );
    let e = error_text(&format!(
        "{GOOD}uplink:\n  url: mqtt://x\n  tls: {{ca_file: /nonexistent.pem}}\n"
    ));
    assert!(
        e.contains("TLS files are set but no url is mqtts://"),
        "{e}"
    );
    assert!(e.contains("cannot read /nonexistent.pem"), "{e}");
    let e = error_text(&format!(
        "{GOOD}uplink:\n  url: mqtt://x\n  username: u\n  password_file: /nonexistent.secret\n"
    ));
    assert!(
        e.contains("uplink.password_file: cannot read /nonexistent.secret"),
        "{e}"
    );
    let e = error_text(&format!(
        "{GOOD}uplink:\n  url: mqtt://x\n  forward: ['a/#/b']\n"
    ));
    assert!(e.contains("must be a whole level and the last one"), "{e}");
    let e = error_text(&format!(
        "{GOOD}uplink:\n  url: mqtt://x\nqueue: {{max_bytes: 1MiB, segment_bytes: 1MiB}}\n"
    ));
    assert!(e.contains("at least twice segment_bytes"), "{e}");
    let e = error_text(&format!("{GOOD}uplink:\n  urls: mqtt://x\n"));
    assert!(e.contains("did you mean `url`"), "{e}");
}

#[test]
fn the_password_is_read_from_its_file_never_shown_and_a_readable_file_is_a_warning() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("uplink.secret");
    std::fs::write(&secret, "hunter2\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let text = format!(
        "{GOOD}uplink:\n  url: mqtt://x\n  username: gw\n  password_file: {}\n",
        secret.display()
    );
    let c = load(&text).unwrap();
    let u = c.uplink.as_ref().unwrap();
    assert_eq!(u.password.as_ref().unwrap().expose(), "hunter2");
    assert!(!format!("{c:?}").contains("hunter2"));
    assert!(
        c.warnings
            .iter()
            .any(|w| w.message.contains("readable by every user")),
        "{:?}",
        c.warnings
    );
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert!(!load(&text)
        .unwrap()
        .warnings
        .iter()
        .any(|w| w.message.contains("readable")));
}

/// Every validation error `check` can report, with the message a user sees: each case edits
/// the good file and names the text the error must contain (path, problem, and fix).
#[test]
fn every_validation_error_has_its_message() {
    let cases: &[(&str, &str, &[&str])] = &[
        // Network transports (issue 35): a URL that cannot be used says what to write.
        (
            "port: /dev/ttyUSB-test",
            "port: udp://192.168.1.50:4001",
            &["devices[0].port", "`udp://` is not a transport serial2mqtt knows", "tcp://HOST:PORT", "rfc2217://HOST:PORT"],
        ),
        (
            "port: /dev/ttyUSB-test",
            "port: tcp://192.168.1.50",
            &["devices[0].port", "`tcp://192.168.1.50` has no port number", "e.g. tcp://192.168.1.50:4001"],
        ),
        (
            "port: /dev/ttyUSB-test",
            "port: rfc2217://serial server:2217",
            &["devices[0].port", "is not a URL", "rfc2217://HOST:PORT"],
        ),
        (
            "port: /dev/ttyUSB-test",
            "port: tcp:192.168.1.50:4001",
            &["devices[0].port", "lacks the `//` after `tcp:`"],
        ),
        (
            "port: /dev/ttyUSB-test",
            "port: modbus-tcp://192.168.1.50:502",
            &["devices[0].port", "does not speak Modbus (its framing is `lines`)", "a `modbus:` map", "tcp://HOST:PORT"],
        ),
        // Device models (issue 34): the device's line, what it meant, what there is.
        (
            "    rules: [climate]",
            "    rules: [climate]\n  - {name: house, port: /dev/ttyUSB-m, model: eastron-sdm63}",
            &["devices[1].model: there is no model `eastron-sdm63`", "did you mean `eastron-sdm630`", "models list"],
        ),
        (
            "    rules: [climate]",
            "    rules: [climate]\n  - {name: house, port: /dev/ttyUSB-m, model: eastron-sdm630, adress: 3}",
            &["model `eastron-sdm630`: `adress` is neither one of its parameters nor a device key", "its parameters: unit, every, topic", "models show eastron-sdm630"],
        ),
        (
            "    rules: [climate]",
            "    rules: [climate]\n  - {name: house, port: /dev/ttyUSB-m, model: [eastron-sdm630]}",
            &["`model` must be a model's name", "model: eastron-sdm630"],
        ),
        (
            "    rules: [climate]",
            "    rules: [climate]\n  - {name: house, port: /dev/ttyUSB-m, model: eastron-sdm630, modbus: {timeout: 0s}}",
            &["devices[1].modbus", "longer than 0"],
        ),
        // Session 5 (issue 18): each new message, with its fix.
        (
            "rules:\n  climate:",
            "rules:\n  climate:\n    match: x\n    publish: [{topic: t}]\n  climate:",
            &[
                "`rules.climate` is written twice (first at line",
                "another name",
            ],
        ),
        (
            "    rules: [climate]",
            "    rules: [climate]\n  - {name: two, port: /dev/ttyUSB-test, rules: [climate]}",
            &["devices[1].framing: devices", "two of them are cut by a delimiter", "one may be `lines`"],
        ),
        (
            "    rules: [climate]",
            "    rules: [climate]\n  - {name: two, port: /dev/ttyUSB-test, framing: slip, rules: [climate]}",
            &["devices[1].framing: devices", "`slip` framing cannot share a port", "start bytes"],
        ),
        (
            "    rules: [climate]",
            "    rules: [climate]\n    poll: [{name: q, write: \"?\", every: 1s}]\n  - {name: two, port: /dev/ttyUSB-test, rules: [climate]}",
            &["devices[1]: device `two` shares", "add `poll:` requests", "none is polled"],
        ),
        (
            "    match: '^T=(?P<temp>[\\d.]+)$'",
            "    match: '^T=(?P<temp>[\\d.]+)$'\n    starts_hex: 'B5 62'",
            &["rules.climate.starts_hex", "picks binary frames", "`fields:`"],
        ),
        (
            "    match: '^T=(?P<temp>[\\d.]+)$'",
            "    starts_hex: 'B5 6'\n    fields: [{name: temp, offset: 6, type: u8}]",
            &["rules.climate.starts_hex", "is not hex bytes", "pairs of hex digits"],
        ),
        (
            "    framing: lines",
            "    framing: {fixed: 2, start_hex: AA, end_hex: ABCD}",
            &["do not fit in a 2-byte frame"],
        ),
        (
            "    framing: lines",
            "    framing: {gap: 0}",
            &["a gap of 0 never ends a frame", "{gap: 3.5}"],
        ),
        (
            "    framing: lines",
            "    framing: {delimiter_hex: XY}",
            &["delimiter_hex: `XY` is not hex bytes", "\"AA\""],
        ),
        (
            "        payload: \"{temp}\"",
            "        payload: \"{temp}\"\n        retain: yes",
            &["expected a boolean", "write true or false"],
        ),
        (
            "  listen: 127.0.0.1:1884",
            "  listen: 127.0.0.1:1884\n  allow_anonymous_commands: yes",
            &["expected a boolean", "write true or false"],
        ),
        (
            "    rules: [climate]",
            "    rules: [climate]\n    commands: [c]\ncommands:\n  c: {subscribe: x, write: y, allow_control: yes}",
            &["expected a boolean", "write true or false"],
        ),
        (
            "    rules: [climate]",
            "    rules: [climate]\n    commands: [c]\ncommands:\n  c: {subscribe: x, write_hex: '00', allow_control: true}",
            &["commands.c.allow_control", "only for `write`", "remove allow_control"],
        ),
        (
            "  id: greenhouse-pi",
            "  id: greenhouse-pi\n  stats_interval: 30",
            &["gateway.stats_interval", "a duration with a unit, e.g. 30s"],
        ),
        (
            "  listen: 127.0.0.1:1884",
            "  listen: localhost:1884",
            &["broker.listen", "e.g. 127.0.0.1:1883"],
        ),
        (
            "    match: '^T=(?P<temp>[\\d.]+)$'",
            "    match: '^T=(?P<temp>[\\d.]+)$'\n    drop: true",
            &["a drop rule publishes nothing", "remove `publish:`"],
        ),
        (
            "    match: '^T=(?P<temp>[\\d.]+)$'",
            "    match: '^T=(?P<temp>[\\d.]+)$'\n    types: {tmp: string}",
            &["rules.climate.types.tmp", "placeholder {tmp}"],
        ),
        (
            "id: greenhouse-pi",
            "id: \"green/house\"",
            &["gateway.id", "green/house"],
        ),
        (
            "  id: greenhouse-pi",
            "  id: greenhouse-pi\n  state_topic: \"s/{temp}\"",
            &["gateway.state_topic"],
        ),
        (
            "  id: greenhouse-pi",
            "  id: greenhouse-pi\n  unmatched_topic: \"u/#\"",
            &["gateway.unmatched_topic"],
        ),
        (
            "  listen: 127.0.0.1:1884",
            "  listen: 127.0.0.1:1884\n  max_connections: 0",
            &["broker.max_connections", "at least 1"],
        ),
        (
            "  listen: 127.0.0.1:1884",
            "  listen: 127.0.0.1:1884\n  max_connections_per_peer: 0",
            &["broker.max_connections_per_peer", "at least 1", "loopback clients are exempt"],
        ),
        (
            "  listen: 127.0.0.1:1884",
            "  listen: 127.0.0.1:1884\n  max_topics: 0",
            &["broker.max_topics", "at least 1", "max_topics: 50000"],
        ),
        (
            "  listen: 127.0.0.1:1884",
            "  listen: 127.0.0.1:1884\n  max_filters: 0",
            &["broker.max_filters", "at least 1", "max_filters: 64"],
        ),
        (
            "  listen: 127.0.0.1:1884",
            "  listen: 127.0.0.1:1884\n  max_retained_bytes: lots",
            &["broker.max_retained_bytes"],
        ),
        (
            "  listen: 127.0.0.1:1884",
            "  listen: 127.0.0.1:1884\n  max_sessions: -1",
            &["broker.max_sessions"],
        ),
        (
            "  listen: 127.0.0.1:1884",
            "  listen: 127.0.0.1:1884\n  max_retaind: 5",
            &["max_retaind", "max_retained"],
        ),
        (
            "  listen: 127.0.0.1:1884",
            "  listen: 127.0.0.1:1884\n  nice: 20",
            &["broker.nice", "between 0 and 19", "nice: 10"],
        ),
        (
            "  listen: 127.0.0.1:1884",
            "  listen: 127.0.0.1:1884\n  max_inflight: 70000",
            &["broker.max_inflight", "between 1 and 65535"],
        ),
        (
            "  listen: 127.0.0.1:1884",
            "  listen: 127.0.0.1:1884\n  window: 1KiB",
            &["broker.window", "4KiB and 1GiB"],
        ),
        (
            "  listen: 127.0.0.1:1884",
            "  listen: 127.0.0.1:1884\n  users_file: /nonexistent/users",
            &["broker.users_file", "cannot read", "serial2mqtt passwd /nonexistent/users USER"],
        ),
        (
            "  listen: 127.0.0.1:1884",
            "  listen: 127.0.0.1:1884\n  acl_file: /nonexistent/acl",
            &["broker.acl_file", "cannot read /nonexistent/acl", "user homeassistant"],
        ),
        (
            "  listen: 127.0.0.1:1884",
            "  listen: 127.0.0.1:1884\n  tls: {cert_file: /nonexistent/c, key_file: /nonexistent/k, require_client_cert: true}",
            &["broker.tls.require_client_cert", "requires client_ca_file"],
        ),
        (
            "devices:",
            "log: {level: \"info,[\"}\ndevices:",
            &["log.level", "not a log filter"],
        ),
        (
            "  - name: greenhouse",
            "  - name: \"green/house\"",
            &["devices[0].name", "green/house"],
        ),
        (
            "    port: /dev/ttyUSB-test",
            "    port: /dev/ttyUSB-test\n    simulate: {profile: climate}",
            &["sets both `port` and `simulate`"],
        ),
        (
            "    port: /dev/ttyUSB-test\n",
            "",
            &["has no `port`", "/dev/serial/by-id"],
        ),
        (
            "    baud: 115200",
            "    baud: 115200\n    data_bits: 9",
            &["data_bits", "9 data bits are not possible"],
        ),
        (
            "    baud: 115200",
            "    baud: 115200\n    stop_bits: 3",
            &["stop_bits", "3 stop bits are not possible"],
        ),
        ("    baud: 115200", "    baud: 0", &["baud must be above 0"]),
        (
            "    framing: lines",
            "    framing: {delimiter: \"\"}",
            &["devices[0].framing"],
        ),
        (
            "    framing: lines",
            "    framing: lines\n    max_frame: 0",
            &["max_frame", "out of range"],
        ),
        (
            "devices:",
            "uplink: {url: []}\ndevices:",
            &["uplink.url", "no upstream broker given"],
        ),
        (
            "devices:",
            "uplink: {url: \"mqtt://h\", tls: {ca_file: /x}}\ndevices:",
            &["uplink.tls", "no url is mqtts://"],
        ),
        (
            "devices:",
            "uplink: {url: \"mqtts://h\", tls: {cert_file: /x}}\ndevices:",
            &["uplink.tls", "both cert_file and key_file"],
        ),
        (
            "devices:",
            "uplink: {url: \"mqtts://h\", tls: {ca_file: /nonexistent/ca.pem}}\ndevices:",
            &["uplink.tls.ca_file", "cannot read"],
        ),
        (
            "devices:",
            "uplink: {url: \"mqtt://h\", password_file: /nonexistent/pw}\ndevices:",
            &["uplink.password_file", "cannot read", "chmod 600"],
        ),
        (
            "devices:",
            "uplink: {url: \"mqtt://h\", status_topic: \"s/+\"}\ndevices:",
            &["uplink.status_topic"],
        ),
        (
            "devices:",
            "uplink: {url: \"mqtt://h\", topic_prefix: \"a/#/\"}\ndevices:",
            &["uplink.topic_prefix", "wildcard"],
        ),
        (
            "devices:",
            "uplink: {url: \"mqtt://h\", forward: [\"a/#/b\"]}\ndevices:",
            &["uplink.forward[0]"],
        ),
        (
            "devices:",
            "uplink: {url: \"mqtt://h\", subscribe: [\"\"]}\ndevices:",
            &["uplink.subscribe[0]"],
        ),
        (
            "devices:",
            "uplink: {url: \"mqtt://h\", inflight: 0}\ndevices:",
            &["uplink.inflight", "at least 1"],
        ),
        (
            "devices:",
            "uplink: {url: \"mqtt://h\", max_packet: 10}\ndevices:",
            &["uplink.max_packet", "1KiB and 256MiB"],
        ),
        (
            "devices:",
            "uplink: {url: \"mqtt://h\", max_rate: 0}\ndevices:",
            &["uplink.max_rate", "remove it"],
        ),
        (
            "devices:",
            "uplink: {url: \"mqtt://h\", keep_alive: 1s}\ndevices:",
            &["uplink.keep_alive", "keep_alive: 30s"],
        ),
        (
            "devices:",
            "uplink: {url: \"mqtt://h\", connect_timeout: 1ms}\ndevices:",
            &["uplink.connect_timeout", "connect_timeout: 10s"],
        ),
        (
            "devices:",
            "uplink: {url: \"mqtt://h\", reconnect_spread: 1h}\ndevices:",
            &["uplink.reconnect_spread", "reconnect_spread: 500ms"],
        ),
        (
            "devices:",
            "uplink: {url: \"mqtt://h\", profile: aws}\ndevices:",
            &["uplink.profile", "aws_iot"],
        ),
        (
            "devices:",
            "web: {listen: 127.0.0.1}\ndevices:",
            &["web.listen", "an IP address and a port"],
        ),
        (
            "devices:",
            "web: {listen: \"0.0.0.0:8080\"}\ndevices:",
            &["web.listen", "web.token_file", "127.0.0.1:8080"],
        ),
        (
            "devices:",
            "web: {listen: \"0.0.0.0:8080\", token_file: /nonexistent/t}\ndevices:",
            &["web.token_file", "/nonexistent/t", "/dev/urandom"],
        ),
        (
            "devices:",
            "web: {listen: \"127.0.0.1:8080\", tls: {cert_file: /nonexistent/c, key_file: /nonexistent/k}}\ndevices:",
            &["web.tls", "/nonexistent/c"],
        ),
        (
            "devices:",
            "web: {listen: \"127.0.0.1:8080\", token: x}\ndevices:",
            &["web", "token_file"],
        ),
        (
            "devices:",
            "web: {listen: \"127.0.0.1:8080\", max_connections: 0}\ndevices:",
            &["web.max_connections", "at least 1", "max_connections: 64"],
        ),
        (
            "devices:",
            "web: {listen: \"127.0.0.1:8080\", max_connections_per_peer: 0}\ndevices:",
            &["web.max_connections_per_peer", "max_connections_per_peer: 16"],
        ),
        (
            "devices:",
            "web: {listen: \"127.0.0.1:8080\", header_timeout: 0s}\ndevices:",
            &["web.header_timeout", "between 1s and 10m", "header_timeout: 10s"],
        ),
        (
            "devices:",
            "web: {listen: \"127.0.0.1:8080\", idle_timeout: 100years}\ndevices:",
            &["web.idle_timeout", "idle_timeout: 1m"],
        ),
        (
            "devices:",
            "metrics: {listen: \"0.0.0.0:9898\", token_file: /nonexistent/m}\ndevices:",
            &["metrics.token_file", "/nonexistent/m", "/dev/urandom"],
        ),
        (
            "    port: /dev/ttyUSB-test",
            "    simulate: {profile: climate, noise: -1}",
            &["simulate.noise", "from 0 (a clean line) to 1"],
        ),
        (
            "  listen: 127.0.0.1:1884",
            "  listen: 127.0.0.1:1884\n  tls: {cert_file: /nonexistent/c, key_file: /nonexistent/k, client_ca_file: /nonexistent/ca}",
            &["broker.tls.client_ca_file", "/nonexistent/ca"],
        ),
        (
            "devices:",
            "uplink: {url: \"ftp://h\"}\ndevices:",
            &["uplink.url"],
        ),
        (
            "devices:",
            "uplink: {url: \"mqtt://h\", protocol: 6}\ndevices:",
            &[
                "uplink.protocol",
                "MQTT version 6 is not supported",
                "protocol: 5",
            ],
        ),
        (
            "devices:",
            "uplink: {url: \"mqtt://h\", message_expiry: 1h}\ndevices:",
            &["uplink.message_expiry", "needs MQTT 5", "add protocol: 5"],
        ),
        (
            "devices:",
            "uplink: {url: \"mqtt://h\", protocol: 5, message_expiry: 10ms}\ndevices:",
            &["uplink.message_expiry", "between 1s"],
        ),
        (
            "devices:",
            "uplink: {url: \"mqtt://h\"}\nqueue: {segment_bytes: 1KiB}\ndevices:",
            &["queue.segment_bytes"],
        ),
        (
            "devices:",
            "uplink: {url: \"mqtt://h\"}\nqueue: {max_bytes: 1MiB, segment_bytes: 1MiB}\ndevices:",
            &["queue.max_bytes"],
        ),
        (
            "devices:",
            "uplink: {url: \"mqtt://h\"}\nqueue: {flush_interval: 1m}\ndevices:",
            &["queue.flush_interval"],
        ),
        (
            "    framing: lines",
            "    framing: lines\n    checksum: crc16/modbis",
            &["unknown checksum `crc16/modbis`", "did you mean `crc16/modbus`?"],
        ),
        (
            "    framing: lines",
            "    framing: lines\n    checksum: {type: sum8, marker: \"*\", at: 2}",
            &["with `marker` the check value follows the marker"],
        ),
        (
            "    framing: lines",
            "    framing: lines\n    checksum: {type: sum8, colour: 1}",
            &["unknown field `colour`"],
        ),
        (
            "    framing: lines",
            "    framing: lines\n    checksum: ubk",
            &["unknown checksum `ubk`", "did you mean `ubx`?", "fletcher8, fletcher16"],
        ),
        (
            "    framing: lines",
            "    framing: lines\n    checksum: {type: fletcher16, order: middle}",
            &["devices[0].checksum.order", "unknown variant `middle`", "big, little"],
        ),
        (
            "    framing: lines",
            "    framing: lines\n    poll: [{every: 1s}]",
            &["devices[0].poll[0]", "a poll needs the request to send", "write_hex:"],
        ),
        (
            "    framing: lines",
            "    framing: lines\n    poll: [{write: x, write_hex: \"01\", every: 1s}]",
            &["sets both `write` and `write_hex`"],
        ),
        (
            "    framing: lines",
            "    framing: lines\n    poll: [{write_hex: \"0G\", every: 1s}]",
            &["devices[0].poll[0].write_hex", "is not hex bytes"],
        ),
        (
            "    framing: lines",
            "    framing: lines\n    poll: [{write: x, every: 0s}]",
            &["devices[0].poll[0].every", "every: 10s"],
        ),
        (
            "    framing: lines",
            "    framing: lines\n    poll: [{write: x, every: 1s, timeout: 0s}]",
            &["devices[0].poll[0].timeout", "timeout: 500ms"],
        ),
        (
            "    framing: lines",
            "    framing: lines\n    poll: [{write: x, every: 1s, retries: 50}]",
            &["devices[0].poll[0].retries", "at most 10"],
        ),
        (
            "    framing: lines",
            "    framing: lines\n    poll: [{name: a, write: x, every: 1s}, {name: a, write: y, every: 1s}]",
            &["devices[0].poll[1].name", "used twice"],
        ),
        (
            "    framing: lines",
            "    framing: lines\n    poll: [{write: x}]",
            &["devices[0].poll[0]", "missing field `every`"],
        ),
        (
            "    framing: lines",
            "    framing: lines\n    offline_after: 0",
            &["devices[0].offline_after", "offline_after: 3"],
        ),
        (
            "    framing: lines",
            "    framing: lines\n    offline_poll: 0s",
            &["devices[0].offline_poll", "offline_poll: 10s"],
        ),
        (
            "    framing: lines",
            "    framing: lines\n    turnaround: soon",
            &["devices[0]"],
        ),
        (
            "    rules: [climate]",
            "    rules: [climate]\n    poll: [{write: x, every: 1s}]\n  - {name: two, port: /dev/ttyUSB-test, baud: 9600, poll: [{write: y, every: 1s}], rules: [climate]}",
            &["devices[1].baud", "share /dev/ttyUSB-test but not its line settings"],
        ),
        (
            "    framing: lines",
            "    framing: {telegram: {start: \"/\"}}",
            &["devices[0].framing", "missing field `end`"],
        ),
        (
            "    framing: lines",
            "    framing: {telegram: {start: \"/\", end: \"\"}}",
            &["a telegram needs the text that starts and the text that ends it"],
        ),
        (
            "    framing: lines",
            "    framing: {length: {start_hex: \"AA BB\", at: 1, width: 1}}",
            &["the length field at byte 1 overlaps start_hex", "at: 2 or more"],
        ),
        (
            "    framing: lines",
            "    framing: {length: {start_hex: \"AA\", at: 1, width: 3}}",
            &["length width 3 is not supported"],
        ),
        (
            "rules:\n  climate:",
            "rules:\n  climate:\n    values: {f: tmp * 1.8}",
            &["rules.climate.values.f", "placeholder {tmp}", "did you mean {temp}?"],
        ),
        (
            "rules:\n  climate:",
            "rules:\n  climate:\n    values: {f: \"temp *\"}",
            &["rules.climate.values.f", "is not an expression", "nmea_degrees(lat, ns)"],
        ),
        (
            "rules:\n  climate:",
            "rules:\n  climate:\n    values: {temp: temp * 2}",
            &["value `temp` has the name of a named capture", "temp_value"],
        ),
        (
            "    framing: lines",
            "    framing: lines\n    modbus: {unit: 0, points: [{name: v, input: 0}]}",
            &["devices[0].modbus.unit", "1 to 247"],
        ),
        (
            "    framing: lines",
            "    framing: lines\n    modbus: {unit: 1, points: [{name: v, register: 20001}]}",
            &["devices[0].modbus.points[0].register", "Modicon", "`input: 6` for 30007"],
        ),
        (
            "    framing: lines",
            "    framing: lines\n    modbus: {unit: 1, points: [{name: v, input: 0, type: u16, order: cdab}]}",
            &["devices[0].modbus.points[0].order", "32- and 64-bit"],
        ),
        (
            "    framing: lines",
            "    framing: lines\n    modbus: {unit: 1, points: [{name: v, input: 0}, {name: v, input: 1}]}",
            &["devices[0].modbus.points[1].name", "used twice"],
        ),
        (
            "    framing: lines",
            "    framing: lines\n    modbus: {unit: 1, points: [{name: v, input: 0, every: 0s}]}",
            &["devices[0].modbus.points[0].every", "read every 0s", "every: 1h"],
        ),
        (
            "    framing: lines",
            "    framing: lines\n    modbus: {unit: 1, points: [{name: v, coil: 0, length: 80}]}",
            &["devices[0].modbus.points[0].length", "80 coils cannot be one value", "length: 64"],
        ),
        (
            "    framing: lines",
            "    framing: {fixed: 8}\n    modbus: {unit: 1, points: [{name: v, input: 0}]}",
            &["devices[0].framing", "remove `framing:`"],
        ),
        (
            "    framing: lines",
            "    framing: lines\n    modbus: {unit: 1, points: [{name: v, input: 0}]}",
            &["rule `climate` reads frames", "points: true"],
        ),
        (
            "        payload: \"{temp}\"",
            "        payload: \"{temp}\"\n        deadband: \"lots\"",
            &["rules.climate.publish[0].deadband", "deadband: 2%"],
        ),
        (
            "        payload: \"{temp}\"",
            "        payload: \"{temp}\"\n        heartbeat: 1m\n        min_interval: 2m",
            &["rules.climate.publish[0].min_interval", "not shorter than heartbeat"],
        ),
        (
            "    rules: [climate]",
            "    rules: [climate]\n    commands: [set]\ncommands:\n  set: {subscribe: a/b, point: v}",
            &["devices[0].commands[0]", "writes Modbus point `v`", "has no `modbus:`"],
        ),
    ];
    let mut failures = Vec::new();
    for (from, to, want) in cases {
        assert!(
            GOOD.contains(from),
            "case edits `{from}`, which is not in the file"
        );
        let text = GOOD.replacen(from, to, 1);
        let e = match load(&text) {
            Ok(_) => {
                failures.push(format!("`{to}` was accepted"));
                continue;
            }
            Err(e) => e.to_string(),
        };
        for w in want.iter().chain(&["gw.yaml:"]) {
            if !e.contains(w) {
                failures.push(format!("`{to}`: the error should mention `{w}`:\n{e}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn a_reload_diff_names_exactly_what_changed() {
    let old = load(GOOD).unwrap();
    let same = load(&format!("# edited, nothing else\n{GOOD}")).unwrap();
    assert!(ConfigDiff::between(&old, &same).is_empty());

    // A rule the device uses: the device changed, nothing else.
    let rule = load(&GOOD.replace("payload: \"{temp}\"", "payload: \"t={temp}\"")).unwrap();
    let d = ConfigDiff::between(&old, &rule);
    assert_eq!(d.changed, ["greenhouse"]);
    assert!(
        d.added.is_empty() && d.removed.is_empty() && d.restart.is_empty(),
        "{d:?}"
    );

    // A device added and a section that needs a restart.
    let more = GOOD.replace(
        "rules:\n  climate:",
        "  - name: shed\n    port: /dev/ttyUSB-shed\n    rules: [climate]\nrules:\n  climate:",
    ) + "queue: {flush_interval: 20ms}\n";
    let d = ConfigDiff::between(&old, &load(&more).unwrap());
    assert_eq!(d.added, ["shed"]);
    assert!(d.changed.is_empty(), "{d:?}");
    assert_eq!(d.restart, ["queue"]);

    // The device removed again; the gateway id renders into every device's topics.
    let d = ConfigDiff::between(&load(&more).unwrap(), &old);
    assert_eq!(d.removed, ["shed"]);
    let renamed = load(&GOOD.replace("id: greenhouse-pi", "id: shed-pi")).unwrap();
    let d = ConfigDiff::between(&old, &renamed);
    assert_eq!(d.changed, ["greenhouse"]);
    assert_eq!(d.restart, ["gateway"]);
    let ha = load(&format!("{GOOD}homeassistant: {{discovery_prefix: ha}}\n")).unwrap();
    assert_eq!(ConfigDiff::between(&old, &ha).restart, ["homeassistant"]);
}

/// Polls that cannot fit the line's time when devices time out get a warning that says how
/// much is missing; polls that fit get none.
#[test]
fn check_warns_when_a_ports_polls_cannot_keep_their_intervals() {
    let polled = |every: &str| {
        GOOD.replace(
            "    rules: [climate]",
            &format!(
                "    rules: [climate]\n    poll: [{{write: \"#01R\\r\", every: {every}, timeout: 400ms, retries: 1}}]\n  - {{name: two, port: /dev/ttyUSB-test, baud: 115200, poll: [{{write: \"#02R\\r\", every: {every}, timeout: 400ms}}], rules: [climate]}}"
            ),
        )
    };
    let c = load(&polled("1s")).unwrap();
    let w: Vec<&str> = c.warnings.iter().map(|w| w.message.as_str()).collect();
    let w = w
        .iter()
        .find(|m| m.contains("cannot keep their intervals"))
        .unwrap_or_else(|| panic!("{w:?}"));
    // (0.4 s x 2 + 0.4 s) of every second, plus request bytes and turnarounds: about 120 %.
    assert!(w.contains("need 12"), "{w}");
    let c = load(&polled("2s")).unwrap();
    assert!(
        c.warnings
            .iter()
            .all(|w| !w.message.contains("cannot keep their intervals")),
        "{:?}",
        c.warnings
    );
}

/// A Modbus device's polls come from its register map: the timing warning names the key
/// (`modbus.every`), not `poll`, which the file does not have, at the line the user wrote it:
/// in the example, a model-based device, the `every:` parameter that fills the model's.
#[test]
fn a_modbus_maps_timing_warning_points_at_its_every() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/examples/sdm120.yaml");
    let text = std::fs::read_to_string(path).unwrap();
    let every = text
        .lines()
        .position(|l| l.trim_start().starts_with("every:"))
        .expect("the example has an every: line");
    let fast = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("every:") {
                l.split("every:").next().unwrap_or("").to_owned() + "every: 50ms"
            } else {
                l.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    let c = load(&fast).unwrap();
    let w = c
        .warnings
        .iter()
        .find(|w| w.message.contains("cannot keep their intervals"))
        .unwrap_or_else(|| panic!("{:?}", c.warnings));
    assert!(
        w.message.starts_with("devices[0].modbus.every:"),
        "{}",
        w.message
    );
    assert_eq!(w.position.as_ref().map(|p| p.line), Some(every + 1));
}

#[test]
fn broker_profiles_check_every_forwarded_topic_and_cap_the_limits() {
    // AWS IoT: 7 slashes at most, after the prefix; the error names the rule and the topic.
    let e = error_text(&format!(
        "{GOOD}uplink:\n  url: mqtts://a.iot.example.com\n  profile: aws_iot\n  topic_prefix: 'a/b/c/d/e/{{gateway}}/'\n"
    ));
    assert!(e.contains("rules.climate"), "{e}");
    assert!(
        e.contains("device greenhouse: topic `a/b/c/d/e/greenhouse-pi/sensors/greenhouse/temperature` has 8 slashes, aws_iot allows 7"),
        "{e}"
    );
    // Within the limits: rate and window capped, with a warning for an explicit excess.
    let c = load(&format!(
        "{GOOD}uplink:\n  url: mqtts://a.iot.example.com\n  profile: aws_iot\n  inflight: 500\n"
    ))
    .unwrap();
    let u = c.uplink.as_ref().unwrap();
    assert_eq!((u.inflight, u.max_rate), (100, Some(100)));
    assert!(c
        .warnings
        .iter()
        .any(|w| w.message.contains("aws_iot accepts 100 unacknowledged")));
    // EMQX Serverless: 10 levels.
    let e = error_text(&format!(
        "{GOOD}uplink:\n  url: mqtts://x.emqxsl.com\n  profile: emqx_serverless\n  topic_prefix: '1/2/3/4/5/6/7/8/'\n"
    ));
    assert!(e.contains("11 levels, emqx_serverless allows 10"), "{e}");
    // Azure IoT Hub needs its connection string, speaks 3.1.1 only.
    let e = error_text(&format!("{GOOD}uplink:\n  profile: azure_iot_hub\n"));
    assert!(e.contains("needs the device's connection string"), "{e}");
    let e = error_text(&format!(
        "{GOOD}uplink:\n  url: mqtt://h\n  connection_string_file: /x\n"
    ));
    assert!(
        e.contains("a connection string is for profile: azure_iot_hub"),
        "{e}"
    );
    let dir = tempfile::tempdir().unwrap();
    let cs = dir.path().join("cs");
    std::fs::write(
        &cs,
        "HostName=hub.azure-devices.net;DeviceId=dev1;SharedAccessKey=c2VjcmV0\n",
    )
    .unwrap();
    let azure = format!(
        "{GOOD}uplink:\n  profile: azure_iot_hub\n  connection_string_file: {}\n",
        cs.display()
    );
    let c = load(&azure).unwrap();
    let u = c.uplink.as_ref().unwrap();
    assert_eq!(
        u.endpoints[0].to_string(),
        "mqtts://hub.azure-devices.net:8883"
    );
    assert_eq!(u.client_id, "dev1");
    assert_eq!(
        u.username.as_deref(),
        Some("hub.azure-devices.net/dev1/?api-version=2021-04-12")
    );
    assert_eq!(
        u.status_topic,
        "devices/dev1/messages/events/topic=serial2mqtt%2Fgreenhouse-pi%2Fstatus"
    );
    let e = error_text(&format!("{azure}  token_ttl: 0s\n"));
    assert!(
        e.contains("uplink.token_ttl") && e.contains("token_ttl: 1h"),
        "{e}"
    );
    let e = error_text(&format!("{azure}  protocol: 5\n"));
    assert!(e.contains("azure_iot_hub speaks MQTT 3.1.1 only"), "{e}");
    let e = error_text(&format!("{azure}  subscribe: ['cmd/#']\n"));
    assert!(e.contains("devices/dev1/messages/devicebound/#"), "{e}");
}

#[test]
fn the_dashboard_off_loopback_needs_a_long_token_that_is_never_shown() {
    use std::os::unix::fs::PermissionsExt;
    // Loopback: no token needed.
    let c = load(&format!("{GOOD}web:\n  listen: 127.0.0.1:8080\n")).unwrap();
    let web = c.web.as_ref().unwrap();
    assert_eq!(web.token, None);
    // Any other address without a token: an error saying how to make one.
    let e = error_text(&format!("{GOOD}web:\n  listen: 0.0.0.0:8080\n"));
    assert!(e.contains("anyone on the network"), "{e}");
    assert!(e.contains("web.token_file"), "{e}");
    assert!(e.contains("gw.yaml:"), "the line is named: {e}");
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("web-token");
    std::fs::write(&file, "short\n").unwrap();
    let with_file = format!(
        "{GOOD}web:\n  listen: 0.0.0.0:8080\n  token_file: {}\n",
        file.display()
    );
    let e = error_text(&with_file);
    assert!(e.contains("has 5 characters; at least 16"), "{e}");
    assert!(!e.contains("short"), "the token itself is never shown: {e}");
    std::fs::write(&file, "a-token-long-enough-to-guess-never\n# comment\n").unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let c = load(&with_file).unwrap();
    assert_eq!(
        c.web.as_ref().unwrap().token.as_deref(),
        Some("a-token-long-enough-to-guess-never")
    );
    assert!(!format!("{c:?}").contains("guess-never"), "not in Debug");
    assert!(c
        .warnings
        .iter()
        .any(|w| w.message.contains("readable by every user")));
    let e = error_text(&format!(
        "{GOOD}web:\n  listen: 0.0.0.0:8080\n  token_file: {}/missing\n",
        dir.path().display()
    ));
    assert!(
        e.contains("cannot read") && e.contains("/dev/urandom"),
        "{e}"
    );
    // One port, one listener.
    let e = error_text(&format!("{GOOD}web:\n  listen: 127.0.0.1:1884\n"));
    assert!(e.contains("broker.listen's address too"), "{e}");
    let e = error_text(&format!(
        "{GOOD}web:\n  listen: 127.0.0.1:8080\n  tokenfile: x\n"
    ));
    assert!(e.contains("did you mean `token_file`"), "{e}");
}

#[test]
fn the_dashboards_caps_and_timeouts_default_to_a_pis_and_a_useless_per_peer_cap_is_a_warning() {
    let c = load(&format!("{GOOD}web:\n  listen: 127.0.0.1:8080\n")).unwrap();
    let limits = c.web.as_ref().unwrap().limits;
    assert_eq!(limits, crate::http::Limits::WEB);
    assert_eq!(
        (limits.max_connections, limits.max_connections_per_peer),
        (64, 16)
    );
    assert_eq!(limits.header_timeout, std::time::Duration::from_secs(10));
    assert_eq!(limits.idle_timeout, std::time::Duration::from_secs(60));
    let c = load(&format!(
        "{GOOD}web:\n  listen: 127.0.0.1:8080\n  max_connections: 20\n  \
         max_connections_per_peer: 30\n  header_timeout: 2s\n  idle_timeout: 5m\n"
    ))
    .unwrap();
    let limits = c.web.as_ref().unwrap().limits;
    assert_eq!(limits.header_timeout, std::time::Duration::from_secs(2));
    assert_eq!(limits.idle_timeout, std::time::Duration::from_secs(300));
    let w = c
        .warnings
        .iter()
        .find(|w| w.message.contains("one address may take every place"))
        .expect("a warning");
    assert!(
        w.help
            .as_deref()
            .unwrap_or("")
            .contains("max_connections_per_peer: 5"),
        "{w:?}"
    );
}

#[test]
fn a_short_or_repetitive_token_is_a_warning_that_says_how_to_make_a_strong_one() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("web-token");
    let config = format!(
        "{GOOD}web:\n  listen: 0.0.0.0:8080\n  token_file: {}\n",
        file.display()
    );
    let warned = |token: &str| -> Vec<String> {
        std::fs::write(&file, format!("{token}\n")).unwrap();
        let c = load(&config).unwrap();
        assert_eq!(c.web.unwrap().token.as_deref(), Some(token));
        c.warnings
            .iter()
            .filter(|w| w.message.starts_with("web.token_file") && !w.message.contains("readable"))
            .map(|w| format!("{} / {}", w.message, w.help.as_deref().unwrap_or("")))
            .collect()
    };
    // Issue 31's token: 18 characters, long enough to pass, short enough to be guessed.
    let w = warned("greenhouse-pi-2024");
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].contains("has 18 characters")
            && w[0].contains("32 random ones")
            && w[0].contains("head -c 24 /dev/urandom | base64 > ")
            && !w[0].contains("greenhouse-pi-2024"),
        "{w:?}"
    );
    let w = warned(&"ab".repeat(20));
    assert!(
        w.len() == 1 && w[0].contains("made of 2 different characters"),
        "{w:?}"
    );
    assert_eq!(
        warned("b3JxOGZ1c2VkLXRva2VuLWZvci10ZXN0cw=="),
        Vec::<String>::new()
    );
    // Below 16 stays an error.
    std::fs::write(&file, "short-token\n").unwrap();
    assert!(error_text(&config).contains("at least 16"));
}

#[test]
fn metrics_off_loopback_without_a_token_is_a_warning_and_with_one_it_is_read() {
    let c = load(&format!("{GOOD}metrics:\n  listen: 127.0.0.1:9898\n")).unwrap();
    assert!(
        !c.warnings.iter().any(|w| w.message.starts_with("metrics")),
        "{:?}",
        c.warnings
    );
    assert_eq!(c.metrics.unwrap().token, None);
    let c = load(&format!("{GOOD}metrics:\n  listen: 0.0.0.0:9898\n")).unwrap();
    let w = c
        .warnings
        .iter()
        .find(|w| w.message.starts_with("metrics.listen"))
        .expect("a warning, not an error");
    assert!(w.message.contains("answers anyone on the network"), "{w:?}");
    let help = w.help.as_deref().unwrap_or("");
    assert!(
        help.contains("metrics.token_file")
            && help.contains("credentials_file")
            && help.contains("127.0.0.1:9898"),
        "{help}"
    );
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("metrics-token");
    std::fs::write(&file, "prometheus-token-0123456789-abcdefghij\n").unwrap();
    let c = load(&format!(
        "{GOOD}metrics:\n  listen: 0.0.0.0:9898\n  token_file: {}\n",
        file.display()
    ))
    .unwrap();
    let m = c.metrics.as_ref().unwrap();
    assert_eq!(
        m.token.as_deref(),
        Some("prometheus-token-0123456789-abcdefghij")
    );
    assert!(!format!("{c:?}").contains("abcdefghij"), "not in Debug");
    assert!(!c
        .warnings
        .iter()
        .any(|w| w.message.starts_with("metrics.listen")));
    // On the dashboard's listener the dashboard's token guards /metrics: a token of its own
    // is not used, and check says so.
    let token = dir.path().join("web-token");
    std::fs::write(&token, "dashboard-token-0123456789-abcdefghijk\n").unwrap();
    let c = load(&format!(
        "{GOOD}web:\n  listen: 0.0.0.0:8080\n  token_file: {}\nmetrics:\n  listen: 0.0.0.0:8080\n  token_file: {}\n",
        token.display(),
        file.display()
    ))
    .unwrap();
    assert_eq!(c.metrics.unwrap().token, None);
    assert!(c
        .warnings
        .iter()
        .any(|w| w.message.starts_with("metrics.token_file")
            && w.message.contains("behind web.token_file")));
}

#[test]
fn a_simulated_line_noise_outside_0_to_1_is_an_error() {
    let sim = GOOD.replace(
        "port: /dev/ttyUSB-test",
        "simulate: {profile: climate, noise: 1.5}",
    );
    let e = error_text(&sim);
    assert!(e.contains("noise 1.5 is not a share of frames"), "{e}");
}

/// A reserved unit address (the "any sensor" 254 some sensors answer) is taken alone on a
/// line, and refused on a shared one, where every such device would answer it.
#[test]
fn a_reserved_unit_address_is_refused_on_a_shared_line_only() {
    let unit = |u: u16| {
        format!("  - {{name: s{u}, port: /dev/ttyUSB7, modbus: {{unit: {u}, points: [{{name: v, input: 3}}]}}, rules: [r]}}\n")
    };
    let rules = "rules:\n  r:\n    points: true\n    publish: [{topic: \"t/{device}\", payload: \"{v}\"}]\n";
    load(&format!("devices:\n{}{rules}", unit(254))).unwrap();
    let e = load(&format!("devices:\n{}{}{rules}", unit(254), unit(3))).unwrap_err();
    let shown = e.to_string();
    assert!(
        shown.contains("unit 254 of `s254` is a reserved address"),
        "{shown}"
    );
    assert!(
        shown.contains("devices[0].modbus.unit") || e.diagnostics[0].position.is_some(),
        "{shown}"
    );
}

/// `modbus_server:`: every mistake is named at its line with what to write instead.
#[test]
fn modbus_server_mistakes_point_at_their_line() {
    let meter = GOOD.replace(
        "    framing: lines\n    rules: [climate]\n",
        "    rules: [climate]\n  - name: meter\n    port: /dev/ttyUSB-meter\n    modbus: {unit: 3, points: [{name: v, input: 0}]}\n    rules: [m]\n",
    ) + "  m: {points: true, publish: [{topic: m, payload: \"{v}\"}]}\n";
    let server = |body: &str| format!("{meter}modbus_server:\n{body}");
    let c = load(&server("  units:\n    - {device: meter, cache: 2s}\n")).unwrap();
    let s = c.modbus_server.unwrap();
    assert_eq!(
        (
            s.listen.to_string(),
            s.share,
            s.units[0].unit,
            s.units[0].write.len()
        ),
        ("127.0.0.1:1502".into(), 0.5, 3, 0),
        "loopback, half the line, the device's own unit, nothing writable"
    );
    for (body, line, want) in [
        ("  units:\n    - {device: metre}\n", 24, "there is no device `metre`"),
        ("  units:\n    - {device: metre}\n", 24, "did you mean `meter`"),
        ("  units:\n    - {device: greenhouse}\n", 24, "is not a Modbus unit"),
        ("  units:\n    - {device: meter}\n    - {device: meter}\n", 25, "listed twice"),
        ("  units:\n    - {device: meter, unit: 0}\n", 24, "unit 0 is the broadcast address"),
        ("  units:\n    - {device: meter, cache: 0s}\n", 24, "a zero age caches nothing"),
        ("  units:\n    - {device: meter, write: [{clients: any}]}\n", 24, "must say which addresses"),
        ("  units:\n    - device: meter\n      write: [{clients: [192.168.1.300], coils: [1]}]\n", 25, "`192.168.1.300` is not an address or a network"),
        ("  units:\n    - device: meter\n      read: [{clients: [], input: [1]}]\n", 25, "an empty list grants nobody"),
        ("  units:\n    - device: meter\n      write:\n        - clients: any\n          holding: [\"20-10\"]\n", 27, "`20-10` ends before it starts"),
        ("  units:\n    - device: meter\n      write:\n        - clients: any\n          holding: [\"0x1G\"]\n", 27, "`0x1G` is not an address of 0-65535"),
        ("  share: 150%\n  units:\n    - {device: meter}\n", 23, "between 0% and 100%"),
        ("  max_queued: 0\n  units:\n    - {device: meter}\n", 23, "must be at least 1"),
        ("  listen: 127.0.0.1:1884\n  units:\n    - {device: meter}\n", 23, "is broker.listen's address too"),
        ("  units: []\n", 23, "no units: clients could reach nothing"),
        ("  units:\n    - {device: meter, units: 3}\n", 24, "unknown field `units`"),
    ] {
        let e = error_text(&server(body));
        assert!(e.contains(want), "{body}\n{e}");
        assert!(e.contains(&format!("gw.yaml:{line}:")), "line {line} for {body}\n{e}");
    }
    // Writes granted to anyone on a network listener: a warning.
    let c = load(&server("  listen: 0.0.0.0:1502\n  units:\n    - {device: meter, write: [{clients: any, coils: [1]}]}\n")).unwrap();
    assert!(
        c.warnings
            .iter()
            .any(|w| w.message.contains("may write to a unit")),
        "{:?}",
        c.warnings
    );
}

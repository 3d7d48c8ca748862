//! The command line as a user meets it: `check`, `test-rule`, `--version`.

mod common;

use std::process::Output;

use common::{serial2mqtt_command, write_temp};

fn s2m(args: &[&str]) -> Output {
    serial2mqtt_command()
        .args(args)
        .output()
        .expect("run serial2mqtt")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

const CONFIG: &str = r#"gateway:
  id: gw1
devices:
  - name: greenhouse
    simulate: {profile: climate}
    rules: [climate]
  - name: meter
    simulate: {profile: power}
    framing: cobs
    rules: [power]
rules:
  climate:
    match: '^T=(?P<temp>-?\d+(?:\.\d+)?);H=(?P<hum>\d+)$'
    publish:
      - {topic: "sensors/{device}/temperature", payload: "{temp}", qos: 1, retain: true}
      - {topic: "sensors/{device}/humidity", payload: "{hum}"}
  power:
    fields:
      - {name: volts, offset: 0, type: u16le, scale: 0.01}
    publish:
      - {topic: "power/{gateway}/{device}", payload: {v: "{volts}"}}
"#;

#[test]
fn version_and_help() {
    let o = s2m(&["--version"]);
    assert!(o.status.success());
    assert_eq!(
        text(&o).trim(),
        format!("serial2mqtt {}", env!("CARGO_PKG_VERSION"))
    );
    let h = text(&s2m(&["--help"]));
    for cmd in ["run", "check", "test-rule"] {
        assert!(h.contains(cmd), "{h}");
    }
}

#[test]
fn check_accepts_a_good_file_positionally_or_with_config() {
    let dir = tempfile::tempdir().unwrap();
    let f = write_temp(dir.path(), "c.yaml", CONFIG);
    for args in [
        vec!["check", f.to_str().unwrap()],
        vec!["check", "--config", f.to_str().unwrap()],
    ] {
        let o = s2m(&args);
        assert!(o.status.success(), "{}", text(&o));
        assert!(
            text(&o).contains("OK (gateway `gw1`, 2 device(s)"),
            "{}",
            text(&o)
        );
    }
}

#[test]
fn check_summarises_commands_discovery_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let f = write_temp(
        dir.path(),
        "c.yaml",
        "gateway: {id: gw9}\nmetrics: {listen: '127.0.0.1:9898'}\ndevices:\n  - {name: relay, port: /dev/null, commands: [sw], rules: [t]}\nrules:\n  t:\n    publish: [{topic: 's/{device}/t', homeassistant: {device_class: temperature}}]\ncommands:\n  sw: {subscribe: 'c/{device}', write: '{payload}', homeassistant: {component: switch}}\n",
    );
    let o = s2m(&["check", f.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    assert!(
        text(&o).contains(
            "no uplink, 1 command(s), 3 Home Assistant entities, metrics on http://127.0.0.1:9898/metrics)"
        ),
        "{}",
        text(&o)
    );
}

/// `check` keeps a network listener's refused commands in the file (the gateway turns them off
/// from the broker in force); its summary still says what a start would run: none of them.
#[test]
fn check_says_the_commands_of_an_open_network_listener_are_off() {
    let dir = tempfile::tempdir().unwrap();
    let f = write_temp(
        dir.path(),
        "c.yaml",
        "gateway: {id: gw9}\nbroker: {listen: '0.0.0.0:1883'}\ndevices:\n  - {name: relay, port: /dev/null, commands: [sw]}\ncommands:\n  sw: {subscribe: 'c/{device}', match: '^(?P<s>ON|OFF)$', write: 'R={s}', homeassistant: {component: switch}}\n",
    );
    let o = s2m(&["check", f.to_str().unwrap()]);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(
        t.contains("no uplink)"),
        "no command counted, no entity: {t}"
    );
    assert!(
        t.contains("commands of relay off (a network listener without logins)"),
        "{t}"
    );
}

#[test]
fn check_rejects_a_typo_with_file_line_column_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let f = write_temp(
        dir.path(),
        "c.yaml",
        &CONFIG.replace("    rules: [climate]", "    rule: [climate]"),
    );
    let o = s2m(&["check", f.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let t = text(&o);
    assert!(
        t.contains(&format!(
            "{}:6:5: error: devices[0]: unknown field `rule`",
            f.display()
        )),
        "{t}"
    );
    assert!(t.contains("help: did you mean `rules`?"), "{t}");
}

#[test]
fn check_reports_a_missing_file() {
    let o = s2m(&["check", "/nonexistent/x.yaml"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("cannot read the config file"),
        "{}",
        text(&o)
    );
}

#[test]
fn test_rule_prints_the_messages_a_frame_yields() {
    let dir = tempfile::tempdir().unwrap();
    let f = write_temp(dir.path(), "c.yaml", CONFIG);
    let o = s2m(&[
        "test-rule",
        "--config",
        f.to_str().unwrap(),
        "--device",
        "greenhouse",
        "T=21.5;H=40",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "sensors/greenhouse/temperature 21.5 [qos=1 retain]\nsensors/greenhouse/humidity 40 [qos=0]\n"
    );
}

#[test]
fn test_rule_takes_binary_frames_as_hex() {
    let dir = tempfile::tempdir().unwrap();
    let f = write_temp(dir.path(), "c.yaml", CONFIG);
    let o = s2m(&[
        "test-rule",
        "-c",
        f.to_str().unwrap(),
        "-d",
        "meter",
        "--hex",
        "0a5a",
    ]);
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "power/gw1/meter {\"v\":230.5} [qos=0]\n"
    );
}

#[test]
fn test_rule_says_when_nothing_matches_and_names_unknown_devices() {
    let dir = tempfile::tempdir().unwrap();
    let f = write_temp(dir.path(), "c.yaml", CONFIG);
    let o = s2m(&[
        "test-rule",
        "-c",
        f.to_str().unwrap(),
        "-d",
        "greenhouse",
        "T=hot",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("no rule of device `greenhouse` matched"),
        "{}",
        text(&o)
    );
    // ... and which rule came closest, and where it parted from the frame.
    assert!(
        text(&o)
            .contains("closest: rule `climate`: matches `T=` (2 bytes), then not `h` at byte 3"),
        "{}",
        text(&o)
    );
    let o = s2m(&["test-rule", "-c", f.to_str().unwrap(), "-d", "cellar", "x"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("no device named `cellar`"),
        "{}",
        text(&o)
    );
    assert!(text(&o).contains("greenhouse, meter"), "{}", text(&o));
}

#[tokio::test]
async fn ports_lists_serial_hardware_with_the_line_for_the_config_and_not_ptys() {
    // A pseudo-terminal exists during the listing: it is not serial hardware and is not listed.
    let (_master, slave) = tokio_serial::SerialStream::pair().expect("pty pair");
    let pty = tokio_serial::SerialPort::name(&slave).expect("pty name");
    let out = s2m(&["ports"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(!t.contains(&pty), "{pty} listed:\n{t}");
    let listed: Vec<&str> = t.lines().filter(|l| l.starts_with("/dev/")).collect();
    if listed.is_empty() {
        assert!(t.starts_with("No serial ports found"), "{t}");
    }
    // Every port listed is followed by the `port:` line to paste into the config.
    for l in listed {
        let dev = l.split_whitespace().next().unwrap();
        assert!(std::path::Path::new(dev).exists(), "{dev}");
        assert!(t.contains(&format!("{l}\n    port: /dev/")), "{t}");
    }
}

/// `check` used to say OK to a file whose second rule of the same name silently replaced the
/// first, and to an empty file.
#[test]
fn check_rejects_a_duplicate_rule_and_an_empty_file() {
    let dup = CONFIG.replace(
        "  power:\n",
        "  climate:\n    match: '^x$'\n    publish: [{topic: t, payload: x}]\n  power:\n",
    );
    let dir = tempfile::tempdir().unwrap();
    let path = write_temp(dir.path(), "dup.yaml", &dup);
    let o = s2m(&["check", path.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    let t = text(&o);
    assert!(
        t.contains("`rules.climate` is written twice (first at line 12)"),
        "{t}"
    );
    assert!(t.contains("dup.yaml:17:3: error"), "{t}");
    let empty = write_temp(dir.path(), "empty.yaml", "");
    let o = s2m(&["check", empty.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("the file is empty"), "{}", text(&o));
}

/// `check` used to say OK to /dev/null as a port and to two devices on one port (two line
/// protocols on one port cannot be told apart).
#[test]
fn check_names_a_port_that_cannot_work_and_refuses_two_devices_on_one_port() {
    let dir = tempfile::tempdir().unwrap();
    let null = write_temp(
        dir.path(),
        "null.yaml",
        "devices:\n  - {name: a, port: /dev/null}\n",
    );
    let o = s2m(&["check", null.to_str().unwrap()]);
    assert!(o.status.success(), "a warning, not an error: {}", text(&o));
    assert!(
        text(&o).contains(
            "/dev/null is a memory device like /dev/null or /dev/zero, not a serial port"
        ),
        "{}",
        text(&o)
    );
    let two = write_temp(
        dir.path(),
        "two.yaml",
        "devices:\n  - {name: a, port: /dev/ttyUSB7}\n  - {name: b, port: /dev/ttyUSB7}\n",
    );
    let o = s2m(&["check", two.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("two.yaml:3:")
            && text(&o).contains(
                "devices a, b read /dev/ttyUSB7 as several protocols (none is polled), but two of them are cut by a delimiter"
            ),
        "{}",
        text(&o)
    );
}

/// UBX's two check bytes read as they are on the wire, CK_A first, when a frame passes and when
/// it fails: `0x0F38` for CK_A 0x0F, CK_B 0x38 (not `0xF38`).
#[test]
fn test_rule_shows_both_ubx_check_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = r#"gateway: {id: gw1}
devices:
  - name: gps
    simulate: {profile: climate}
    framing: {length: {start_hex: "B5 62", at: 4, width: 2, endian: little, trailer: 2}}
    checksum: ubx
    rules: [ack]
rules:
  ack:
    fields:
      - {name: class, offset: 6, type: u8}
    publish:
      - {topic: "gps/{device}/ack", payload: "{class}"}
"#;
    let f = write_temp(dir.path(), "c.yaml", cfg);
    let run = |hex: &str| {
        s2m(&[
            "test-rule",
            "-c",
            f.to_str().unwrap(),
            "-d",
            "gps",
            "--hex",
            hex,
        ])
    };
    // UBX-ACK-ACK of CFG-MSG (06 01), from the u-blox protocol description.
    let o = run("B5 62 05 01 02 00 06 01 0F 38");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "(checksum ubx: ok, 0x0F38)\ngps/gps/ack 6 [qos=0]\n"
    );
    // CK_B one off: CK_A alone (sum8) would have passed it.
    let o = run("B5 62 05 01 02 00 06 01 0F 37");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("fails device `gps`'s checksum ubx: expected 0x0F38, received 0x0F37"),
        "{}",
        text(&o)
    );
}

#[test]
fn test_rule_shows_the_checksum_a_frame_passes_or_fails() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = r#"gateway: {id: gw1}
devices:
  - name: gps
    simulate: {profile: climate}
    checksum: nmea
    rules: [gga]
rules:
  gga:
    match: '^\$GPGGA,(?P<time>\d+),'
    publish:
      - {topic: "gps/{device}/time", payload: "{time}"}
"#;
    let f = write_temp(dir.path(), "c.yaml", cfg);
    let run = |frame: &str| s2m(&["test-rule", "-c", f.to_str().unwrap(), "-d", "gps", frame]);
    let o = run("$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47");
    assert!(o.status.success(), "{}", text(&o));
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "(checksum nmea: ok, 0x47)\ngps/gps/time 123519 [qos=0]\n"
    );
    // One digit wrong on the line: the frame fails, and test-rule says by how much.
    let o = run("$GPGGA,123519,4807.039,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47");
    assert_eq!(o.status.code(), Some(1));
    assert!(
        text(&o).contains("fails device `gps`'s checksum nmea: expected 0x46, received 0x47"),
        "{}",
        text(&o)
    );
    assert!(
        String::from_utf8_lossy(&o.stdout).is_empty(),
        "{}",
        text(&o)
    );
    // A typo in the checksum name is a config error with a suggestion.
    let typo = write_temp(dir.path(), "t.yaml", &cfg.replace("nmea", "nmae"));
    let o = s2m(&["check", typo.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("did you mean `nmea`?"), "{}", text(&o));
    assert!(text(&o).contains(":5:"), "{}", text(&o));
}

/// `check` names the dashboard and who may open it.
#[test]
fn check_says_where_the_dashboard_is_and_who_may_open_it() {
    let demo = concat!(env!("CARGO_MANIFEST_DIR"), "/config/demo.yaml");
    let o = s2m(&["check", demo]);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(
        text(&o).contains("dashboard on http://127.0.0.1:8080/ (this host only)"),
        "{}",
        text(&o)
    );
}

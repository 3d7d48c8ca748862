//! Home Assistant discovery, end to end: the real binary on a pty, a client on the embedded
//! broker standing in for Home Assistant. The configs are checked against the keys Home
//! Assistant documents for MQTT discovery (sensor, switch, binary_sensor, device, availability).

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::*;
use rumqttc::QoS;
use serde_json::Value;

const T: Duration = Duration::from_secs(10);

/// Keys Home Assistant's MQTT integration documents for the entities we announce.
const ENTITY_KEYS: &[&str] = &[
    "availability",
    "availability_mode",
    "command_topic",
    "device",
    "device_class",
    "entity_category",
    "icon",
    "name",
    "object_id",
    "origin",
    "payload_off",
    "payload_on",
    "state_class",
    "state_topic",
    "unique_id",
    "unit_of_measurement",
    "value_template",
    "suggested_display_precision",
    "expire_after",
    "optimistic",
    "qos",
    "retain",
];
/// Keys of `device`.
const DEVICE_KEYS: &[&str] = &[
    "identifiers",
    "name",
    "manufacturer",
    "model",
    "model_id",
    "sw_version",
    "hw_version",
    "via_device",
    "suggested_area",
    "configuration_url",
    "connections",
    "serial_number",
];
/// Keys of each `availability` entry.
const AVAILABILITY_KEYS: &[&str] = &[
    "topic",
    "payload_available",
    "payload_not_available",
    "value_template",
];
/// Keys of `origin`.
const ORIGIN_KEYS: &[&str] = &["name", "sw_version", "support_url"];

fn config(pty: &std::path::Path, humidity_announced: bool) -> String {
    let humidity_ha = if humidity_announced {
        "\n        homeassistant: {device_class: humidity, unit_of_measurement: '%', state_class: measurement}"
    } else {
        ""
    };
    format!(
        r#"
gateway: {{id: testgw, state_dir: "{{dir}}/state"}}
broker: {{listen: "127.0.0.1:{{port}}"}}
devices:
  - name: greenhouse
    port: {port}
    rules: [climate]
    commands: [fan]
rules:
  climate:
    match: '^T=(?P<temp>-?\d+(?:\.\d+)?);H=(?P<hum>\d+)$'
    publish:
      - topic: sensors/{{device}}/temperature
        payload: "{{temp}}"
        retain: true
        homeassistant: {{device_class: temperature, unit_of_measurement: "°C", state_class: measurement, name: Temperature}}
      - topic: sensors/{{device}}/humidity
        payload: "{{hum}}"{humidity_ha}
commands:
  fan:
    subscribe: "cmd/{{gateway}}/{{device}}/fan"
    match: '^(?P<s>ON|OFF)$'
    write: "FAN={{s}}\n"
    homeassistant: {{component: switch, object_id: fan, name: Fan, payload_on: "ON", payload_off: "OFF"}}
"#,
        port = pty.display()
    )
}

/// The retained discovery configs a fresh subscriber gets, by topic (empty payloads left out).
/// Waits until the gateway runs (it announces before): a subscriber that came earlier would get
/// the configs live, without the retain flag.
async fn retained_configs(gw: &Gateway) -> BTreeMap<String, Value> {
    gw.wait_log("gateway running", T).await;
    let mut sub = Subscriber::connect(gw.port, &["homeassistant/#"], QoS::AtLeastOnce).await;
    let mut out = BTreeMap::new();
    while let Ok(m) = tokio::time::timeout(Duration::from_millis(500), sub.next(T)).await {
        if m.retain && !m.payload.is_empty() {
            out.insert(
                m.topic.clone(),
                serde_json::from_str(&m.payload).expect("config is JSON"),
            );
        }
    }
    out
}

fn assert_keys(what: &str, v: &Value, allowed: &[&str]) {
    for k in v
        .as_object()
        .unwrap_or_else(|| panic!("{what} is not an object: {v}"))
        .keys()
    {
        assert!(
            allowed.contains(&k.as_str()),
            "{what}: `{k}` is not a documented key: {v}"
        );
    }
}

#[tokio::test]
async fn sensors_and_switches_appear_in_home_assistant_by_themselves() {
    let mut pty = Pty::new();
    let gw = start_gateway(&config(&pty.path, true));
    let configs = retained_configs(&gw).await;
    let topics: Vec<&str> = configs.keys().map(String::as_str).collect();
    assert_eq!(
        topics,
        [
            "homeassistant/binary_sensor/testgw_gateway/config",
            "homeassistant/sensor/testgw_greenhouse_humidity/config",
            "homeassistant/sensor/testgw_greenhouse_temperature/config",
            "homeassistant/switch/testgw_greenhouse_fan/config",
        ]
    );
    for (topic, c) in &configs {
        assert_keys(topic, c, ENTITY_KEYS);
        assert_keys(&format!("{topic} device"), &c["device"], DEVICE_KEYS);
        assert_keys(&format!("{topic} origin"), &c["origin"], ORIGIN_KEYS);
        for a in c["availability"].as_array().into_iter().flatten() {
            assert_keys(&format!("{topic} availability"), a, AVAILABILITY_KEYS);
        }
    }

    let t = &configs["homeassistant/sensor/testgw_greenhouse_temperature/config"];
    assert_eq!(t["state_topic"], "sensors/greenhouse/temperature");
    assert_eq!(t["unique_id"], "testgw_greenhouse_temperature");
    assert_eq!(t["device_class"], "temperature");
    assert_eq!(t["unit_of_measurement"], "°C");
    assert_eq!(t["state_class"], "measurement");
    assert_eq!(t["name"], "Temperature");
    // Without `name`, the object id says what it is.
    assert_eq!(
        configs["homeassistant/sensor/testgw_greenhouse_humidity/config"]["name"],
        "Humidity"
    );
    assert_eq!(
        t["device"]["identifiers"][0],
        "serial2mqtt_testgw_greenhouse"
    );
    assert_eq!(t["device"]["name"], "greenhouse");
    assert_eq!(t["device"]["via_device"], "serial2mqtt_testgw");
    assert_eq!(t["availability_mode"], "all");
    let availability: Vec<&str> = t["availability"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a["topic"].as_str().unwrap())
        .collect();
    assert_eq!(
        availability,
        [
            "serial2mqtt/testgw/devices/greenhouse/state",
            "serial2mqtt/testgw/status"
        ]
    );

    let fan = &configs["homeassistant/switch/testgw_greenhouse_fan/config"];
    assert_eq!(fan["command_topic"], "cmd/testgw/greenhouse/fan");
    assert_eq!(
        (fan["payload_on"].as_str(), fan["payload_off"].as_str()),
        (Some("ON"), Some("OFF"))
    );
    // The gateway is a device of its own (what via_device points at), with its connectivity.
    let g = &configs["homeassistant/binary_sensor/testgw_gateway/config"];
    assert_eq!(g["device"]["identifiers"][0], "serial2mqtt_testgw");
    assert_eq!(g["state_topic"], "serial2mqtt/testgw/status");

    // What the configs point at is live: availability topics say online, the state topic has
    // the reading, and the command topic switches the fan.
    let mut sub = Subscriber::connect(
        gw.port,
        &[
            "serial2mqtt/testgw/status",
            "serial2mqtt/testgw/devices/greenhouse/state",
            "sensors/#",
        ],
        QoS::AtLeastOnce,
    )
    .await;
    assert_eq!(
        sub.next_on("serial2mqtt/testgw/status", T).await.payload,
        "online"
    );
    assert_eq!(
        sub.next_on("serial2mqtt/testgw/devices/greenhouse/state", T)
            .await
            .payload,
        "online"
    );
    pty.write(b"T=21.5;H=40\n").await;
    assert_eq!(
        sub.next_on("sensors/greenhouse/temperature", T)
            .await
            .payload,
        "21.5"
    );
    let mut publisher = Subscriber::connect(gw.port, &[], QoS::AtLeastOnce).await;
    publisher
        .client
        .publish("cmd/testgw/greenhouse/fan", QoS::AtLeastOnce, false, "ON")
        .await
        .unwrap();
    let mut buf = [0u8; 7];
    use tokio::io::AsyncReadExt;
    tokio::time::timeout(T, pty.master.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"FAN=ON\n");
    let _ = &mut publisher;
}

#[tokio::test]
async fn home_assistant_coming_online_gets_every_config_again() {
    let pty = Pty::new();
    let gw = start_gateway(&config(&pty.path, true));
    let mut sub =
        Subscriber::connect(gw.port, &["homeassistant/+/+/config"], QoS::AtLeastOnce).await;
    // The retained ones first.
    for _ in 0..4 {
        assert!(sub.next(T).await.retain);
    }
    sub.assert_quiet(Duration::from_millis(300)).await;
    // Home Assistant's birth message.
    sub.client
        .publish("homeassistant/status", QoS::AtLeastOnce, false, "online")
        .await
        .unwrap();
    let mut again = Vec::new();
    for _ in 0..4 {
        again.push(sub.next(T).await.topic);
    }
    again.sort();
    assert_eq!(again.len(), 4);
    assert!(again.iter().all(|t| t.ends_with("/config")), "{again:?}");
    assert_eq!(retained_configs(&gw).await.len(), 4);
    gw.wait_log("Home Assistant is online", T).await;
}

#[tokio::test]
async fn an_entity_removed_from_the_config_is_deleted_on_reload() {
    let pty = Pty::new();
    let gw = start_gateway(&config(&pty.path, true));
    assert!(retained_configs(&gw)
        .await
        .contains_key("homeassistant/sensor/testgw_greenhouse_humidity/config"));

    let without = config(&pty.path, false)
        .replace("{port}", &gw.port.to_string())
        .replace("{dir}", &gw.dir.path().display().to_string());
    std::fs::write(gw.config_path(), without).unwrap();
    let mut sub = Subscriber::connect(
        gw.port,
        &["homeassistant/sensor/testgw_greenhouse_humidity/config"],
        QoS::AtLeastOnce,
    )
    .await;
    assert!(sub.next(T).await.retain);
    gw.signal("HUP");
    gw.wait_log("config reloaded", T).await;
    // An empty retained config: Home Assistant deletes the entity; the broker drops the retained one.
    let clear = sub.next(T).await;
    assert_eq!(clear.payload, "");
    let left = retained_configs(&gw).await;
    assert!(
        !left.contains_key("homeassistant/sensor/testgw_greenhouse_humidity/config"),
        "{left:?}"
    );
    assert!(left.contains_key("homeassistant/sensor/testgw_greenhouse_temperature/config"));
}

#[tokio::test]
async fn stopping_the_gateway_makes_its_entities_unavailable() {
    let pty = Pty::new();
    let mut gw = start_gateway(&config(&pty.path, true));
    let mut sub =
        Subscriber::connect(gw.port, &["serial2mqtt/testgw/status"], QoS::AtLeastOnce).await;
    assert_eq!(sub.next(T).await.payload, "online");
    gw.signal("TERM");
    assert_eq!(sub.next(T).await.payload, "offline");
    let _ = gw.terminate();
}

/// A meter that is one line of config (`model: eastron-sdm120`) appears in Home Assistant as
/// that product, each reading with the class, state class and unit its energy dashboard needs.
#[tokio::test]
async fn a_model_based_meter_appears_with_its_classes_and_units() {
    let pty = Pty::new();
    let gw = start_gateway(&format!(
        "gateway: {{id: testgw, state_dir: \"{{dir}}/state\"}}\nbroker: {{listen: \"127.0.0.1:{{port}}\"}}\n\
         devices:\n  - {{name: house, port: {}, model: eastron-sdm120, unit: 2}}\n",
        pty.path.display()
    ));
    let configs = retained_configs(&gw).await;
    let get = |object: &str| {
        configs
            .get(&format!(
                "homeassistant/sensor/testgw_house_{object}/config"
            ))
            .unwrap_or_else(|| panic!("no {object} in {:?}", configs.keys().collect::<Vec<_>>()))
    };
    for (topic, c) in &configs {
        assert_keys(topic, c, ENTITY_KEYS);
        assert_keys(&format!("{topic} device"), &c["device"], DEVICE_KEYS);
    }
    let energy = get("energy_import");
    assert_eq!(energy["state_topic"], "power/house/energy_import");
    assert_eq!(energy["device_class"], "energy");
    assert_eq!(energy["state_class"], "total_increasing");
    assert_eq!(energy["unit_of_measurement"], "kWh");
    let power = get("power");
    assert_eq!(
        (
            &power["device_class"],
            &power["state_class"],
            &power["unit_of_measurement"]
        ),
        (
            &Value::from("power"),
            &Value::from("measurement"),
            &Value::from("W")
        )
    );
    assert_eq!(get("voltage")["unit_of_measurement"], "V");
    let device = &energy["device"];
    assert_eq!(device["manufacturer"], "Eastron");
    assert_eq!(device["model"], "SDM120-Modbus");
    assert_eq!(device["model_id"], "eastron-sdm120");
    assert_eq!(device["name"], "house");
    drop(pty);
}

//! The rule engine with templates on arbitrary frames: regex, JSON, binary fields and
//! catch-all rules with typed JSON payloads never panic, and every message has a publishable
//! topic.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use serial2mqtt::config::{self, Config};
use serial2mqtt::message::topic_problem;
use serial2mqtt::frames::FrameHandler;
use serial2mqtt::stats::DeviceStats;

const CONFIG: &str = r#"
gateway: {id: fuzzgw}
devices:
  - {name: dev, port: /dev/null, rules: [climate, json, bin, anything]}
rules:
  climate:
    match: '^T=(?P<temp>-?\d+(?:\.\d+)?);H=(?P<hum>\d+)(?:;ID=(?P<id>\w+))?$'
    continue: true
    publish:
      - {topic: "sensors/{device}/{id}/temperature", payload: "{temp}", qos: 1, retain: true}
      - {topic: "sensors/{device}/humidity", payload: {h: "{hum}", t: "{temp}", at: "{now}"}}
  json:
    json: true
    continue: true
    publish:
      - {topic: "sensors/{device}/{room.name}/state", payload: {v: "{value}", raw: "{frame}", n: ["{now_ms}", "{room.floor}"]}}
  bin:
    fields:
      - {name: a, offset: 0, type: u16le, scale: 0.01}
      - {name: b, offset: 2, type: i32be, add: -40, decimals: 2}
      - {name: c, offset: 6, type: f64le}
    continue: true
    publish:
      - {topic: "power/{device}", payload: {a: "{a}", b: "{b}", c: "{c}", hex: "{frame_hex}"}}
  anything:
    publish:
      - {topic: "raw/{gateway}/{device}", payload: "{frame}"}
"#;

fn config() -> &'static Config {
    static C: OnceLock<Config> = OnceLock::new();
    C.get_or_init(|| config::parse(CONFIG, Path::new("fuzz.yaml")).expect("fuzz config"))
}

fuzz_target!(|data: &[u8]| {
    let config = config();
    let device = &config.devices[0];
    let stats = DeviceStats::default();
    let mut handler = FrameHandler::new(device, &config.gateway.id, &stats);
    let frame = Bytes::copy_from_slice(data);
    for m in handler.handle(&frame) {
        assert!(topic_problem(&m.topic).is_none(), "unpublishable topic {:?}", m.topic);
        assert!(m.qos <= 2);
    }
});

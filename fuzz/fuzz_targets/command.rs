//! Commands (MQTT → serial) on arbitrary payloads from hostile clients: rendering never panics,
//! bytes wrapped in a device's framing decode back, with that framing's decoder, to exactly
//! the bytes the unwrapped command writes, and a text command without `allow_control` never
//! lets the payload carry a control character or the device's frame markers.
#![no_main]

use std::path::Path;
use std::sync::OnceLock;

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use serial2mqtt::config::{self, Config};
use serial2mqtt::serial::framing::{Decoded, FrameDecoder, Framing};
use tokio_util::codec::Decoder;

const CONFIG: &str = r#"
gateway: {id: fuzzgw}
devices:
  - {name: lines, port: /dev/fuzz-lines, framing: lines, commands: [raw, framed, hex, state, safe]}
  - {name: delim, port: /dev/fuzz-delim, framing: {delimiter: "\r\n"}, commands: [raw, framed, hex, state, safe]}
  - {name: cobs, port: /dev/fuzz-cobs, framing: cobs, commands: [raw, framed, hex, state, safe]}
  - {name: slip, port: /dev/fuzz-slip, framing: slip, commands: [raw, framed, hex, state, safe]}
  - {name: len, port: /dev/fuzz-len, framing: {length_prefix: {width: 1}}, max_frame: 255, commands: [raw, framed, hex, state, safe]}
  - {name: fixed, port: /dev/fuzz-fixed, framing: {fixed: 4}, commands: [raw, framed, hex, state, safe]}
commands:
  raw: {subscribe: "c/{device}/raw", write: "{payload}", allow_control: true}
  framed: {subscribe: "c/{device}/framed", write: "{payload}", encode: true, allow_control: true}
  safe: {subscribe: "c/{device}/safe", write: "S={payload}\n"}
  hex: {subscribe: "c/{device}/hex", write_hex: "0a {payload} {payload_hex}", encode: true}
  state:
    subscribe: "c/{device}/state"
    match: '^(?P<relay>[0-9]{1,2})=(?P<state>ON|OFF)$'
    write: "R{relay}={state} at {now_ms}\r\n"
    reply_topic: "c/{device}/result"
"#;

fn config() -> &'static Config {
    static C: OnceLock<Config> = OnceLock::new();
    C.get_or_init(|| config::parse(CONFIG, Path::new("fuzz.yaml")).expect("fuzz config"))
}

/// Every frame the decoder finds in `bytes` (drops included as `None`).
fn decode_all(framing: &Framing, max: usize, bytes: &[u8]) -> Vec<Option<Vec<u8>>> {
    let mut d = FrameDecoder::new(framing, max);
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Ok(Some(item)) = d.decode(&mut buf) {
        out.push(match item {
            Decoded::Frame(f) => Some(f.to_vec()),
            Decoded::Dropped(_) | Decoded::Resync(_) => None,
            Decoded::GapStarted => continue,
        });
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, payload)) = data.split_first() else {
        return;
    };
    let config = config();
    let device = &config.devices[usize::from(which) % config.devices.len()];
    let render = |i: usize| {
        device.commands[i]
            .command
            .render(&config.gateway.id, &device.name, &device.framing, payload)
    };
    let raw = render(0);
    let framed = render(1);
    let _ = render(2);
    let _ = render(3);
    if let Ok(bytes) = render(4) {
        // `S=` + the payload + `\n`: nothing of the payload may end the command early.
        let body = &bytes[2..bytes.len() - 1];
        assert!(
            !body.iter().any(|&b| b < 0x20 || b == 0x7f),
            "a control byte got through: {bytes:?}"
        );
        for (marker, what) in device.framing.markers() {
            assert!(
                !body.windows(marker.len()).any(|w| w == marker),
                "the {what} of {} got through: {bytes:?}",
                device.name
            );
        }
    }
    let raw = raw.expect("a command with allow_control and no match or hex always renders");
    if let Ok(bytes) = framed {
        let frames = decode_all(&device.framing, device.max_frame, &bytes);
        let lines_strip_cr = matches!(device.framing, Framing::Lines) && raw.last() == Some(&b'\r');
        if !lines_strip_cr && raw.len() <= device.max_frame && !raw.is_empty() {
            assert_eq!(frames, vec![Some(raw.clone())], "{} framing of {raw:?}", device.name);
        }
    }
});

//! A model's test vectors: inputs (a frame, the bytes on the line, or the registers a Modbus
//! unit holds) and the exact messages they must give. Each runs through what a device runs: the
//! model expanded into a config by [`crate::config::parse`], then the device's own framing,
//! checksum, Modbus decoding and rules ([`crate::frames::FrameHandler`]); nothing but the
//! serial line is left out.

use std::collections::BTreeMap;

use bytes::Bytes;
use serde_yaml::Value;

use super::{Expected, Library, Loaded, Registers, Vector, Words, DEVICE};
use crate::config::Device;
use crate::frames::FrameHandler;
use crate::message::Message;
use crate::modbus::Table;
use crate::serial::framing::FrameDecoder;
use crate::stats::DeviceStats;

/// How one vector went.
#[derive(Debug)]
pub struct Outcome {
    /// The vector's `about`.
    pub about: String,
    /// What differed, when it failed.
    pub failure: Option<String>,
}

/// Runs every vector of `loaded` (expanded with `library`, which must hold it).
pub fn run(loaded: &Loaded, library: &Library) -> Vec<Outcome> {
    loaded
        .model
        .tests
        .iter()
        .map(|v| Outcome {
            about: v.about.clone(),
            failure: one(loaded, library, v).err(),
        })
        .collect()
}

fn one(loaded: &Loaded, library: &Library, v: &Vector) -> Result<(), String> {
    let device = library.device(
        &loaded.model.model,
        DEVICE,
        "/dev/serial2mqtt-test-vector",
        &v.parameters,
    )?;
    let got = messages(&device, v)?;
    compare(&got, &v.expect)
}

/// The messages `device` gives for the vector's input.
fn messages(device: &Device, v: &Vector) -> Result<Vec<Message>, String> {
    let inputs = [
        v.frame.is_some(),
        v.frame_hex.is_some(),
        v.stream.is_some(),
        v.stream_hex.is_some(),
        v.registers.is_some(),
    ];
    if inputs.iter().filter(|x| **x).count() != 1 {
        return Err(
            "a vector gives exactly one of frame, frame_hex, stream, stream_hex, registers".into(),
        );
    }
    let stats = DeviceStats::default();
    let mut handler = FrameHandler::new(device, "gw", &stats);
    let mut out = Vec::new();
    if let Some(regs) = &v.registers {
        let unit = device
            .modbus
            .clone()
            .ok_or("`registers:` is for Modbus models; this device has no `modbus:`")?;
        for request in &unit.requests {
            let answer = respond(unit.unit, request.table, request.start, request.count, regs);
            match handler.answer(&Bytes::from(answer), &request.name) {
                Some(messages) => out.extend(messages),
                None => return Err(format!("the answer to {} was not taken", request.name)),
            }
        }
        return Ok(out);
    }
    let frames: Vec<Bytes> = if let Some(f) = &v.frame {
        vec![Bytes::from(f.clone().into_bytes())]
    } else if let Some(h) = &v.frame_hex {
        vec![Bytes::from(hex_bytes(h)?)]
    } else {
        let bytes = match (&v.stream, &v.stream_hex) {
            (Some(s), _) => s.clone().into_bytes(),
            (_, Some(h)) => hex_bytes(h)?,
            _ => Vec::new(),
        };
        FrameDecoder::frames_in(&device.framing, device.max_frame, &bytes)
    };
    for frame in frames {
        let check = device.checksum.as_ref().map(|c| c.verify(&frame));
        if matches!(check, Some(Err(_))) {
            continue;
        }
        out.extend(handler.handle(&frame));
    }
    Ok(out)
}

/// Bytes from hex digits, spaces allowed between them.
fn hex_bytes(h: &str) -> Result<Vec<u8>, String> {
    let digits: String = h.chars().filter(|c| !c.is_whitespace()).collect();
    hex::decode(&digits).map_err(|e| format!("`{h}` is not hex: {e}"))
}

/// The RTU answer a unit holding `regs` gives to a read of `count` entries of `table` from
/// `start`.
pub fn respond(unit: u8, table: Table, start: u16, count: u16, regs: &Registers) -> Vec<u8> {
    let (function, map) = match table {
        Table::Coils => (1u8, &regs.coils),
        Table::Discretes => (2, &regs.discretes),
        Table::Holding => (3, &regs.holding),
        Table::Input => (4, &regs.input),
    };
    let flat = flatten(map);
    let at = |a: u16| flat.get(&a).copied().unwrap_or(0);
    let mut data = Vec::new();
    if table.bits() {
        data.resize(usize::from(count).div_ceil(8), 0u8);
        for i in 0..count {
            if at(start.wrapping_add(i)) != 0 {
                data[usize::from(i / 8)] |= 1 << (i % 8);
            }
        }
    } else {
        for i in 0..count {
            data.extend_from_slice(&at(start.wrapping_add(i)).to_be_bytes());
        }
    }
    let mut pdu = vec![function, data.len() as u8];
    pdu.extend_from_slice(&data);
    crate::modbus::mbap::rtu(unit, &pdu)
}

/// One entry per address.
fn flatten(map: &BTreeMap<u16, Words>) -> BTreeMap<u16, u16> {
    let mut flat = BTreeMap::new();
    for (&a, w) in map {
        match w {
            Words::One(v) => {
                flat.insert(a, *v);
            }
            Words::Many(vs) => {
                for (i, v) in vs.iter().enumerate() {
                    flat.insert(a.wrapping_add(i as u16), *v);
                }
            }
        }
    }
    flat
}

/// Whether `got` are exactly the `expected` messages, in order; what differs when not.
fn compare(got: &[Message], expected: &[Expected]) -> Result<(), String> {
    let show = |m: &Message| format!("{} {}", m.topic, String::from_utf8_lossy(&m.payload));
    let mut diffs = Vec::new();
    for i in 0..got.len().max(expected.len()) {
        match (got.get(i), expected.get(i)) {
            (Some(g), Some(e)) => {
                if g.topic != e.topic || !payload_matches(&g.payload, &e.payload) {
                    diffs.push(format!(
                        "  message {}: got {}, expected {} {}",
                        i + 1,
                        show(g),
                        e.topic,
                        expected_text(&e.payload)
                    ));
                } else if e.retain.is_some_and(|r| r != g.retain) {
                    diffs.push(format!(
                        "  message {}: {} retain is {}, expected {}",
                        i + 1,
                        g.topic,
                        g.retain,
                        !g.retain
                    ));
                }
            }
            (Some(g), None) => diffs.push(format!(
                "  message {}: got {}, expected none",
                i + 1,
                show(g)
            )),
            (None, Some(e)) => diffs.push(format!(
                "  message {}: none, expected {} {}",
                i + 1,
                e.topic,
                expected_text(&e.payload)
            )),
            (None, None) => {}
        }
    }
    if diffs.is_empty() {
        Ok(())
    } else {
        Err(diffs.join("\n"))
    }
}

fn expected_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => serde_json::to_string(other).unwrap_or_default(),
    }
}

/// Text payloads compare exactly; structured ones as JSON, numbers by value.
fn payload_matches(got: &[u8], expected: &Value) -> bool {
    match expected {
        Value::String(s) => got == s.as_bytes(),
        Value::Number(n) => std::str::from_utf8(got)
            .ok()
            .and_then(|g| g.parse::<f64>().ok())
            .is_some_and(|g| n.as_f64() == Some(g)),
        Value::Bool(b) => got == b.to_string().as_bytes(),
        _ => {
            let Ok(got) = serde_json::from_slice::<serde_json::Value>(got) else {
                return false;
            };
            let Ok(want) = serde_json::to_value(expected) else {
                return false;
            };
            json_equal(&got, &want)
        }
    }
}

fn json_equal(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value as J;
    match (a, b) {
        (J::Number(x), J::Number(y)) => x.as_f64() == y.as_f64(),
        (J::Array(x), J::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| json_equal(p, q))
        }
        (J::Object(x), J::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => a == b,
    }
}

//! Asking: each polled model's own read request at its line settings, then Modbus units of a
//! bounded address range (a one-register read finds a unit, an exception answer counts), their
//! Read Device Identification, and each Modbus model's map read with the values checked
//! against the model's plausible ranges. Nothing but read requests is ever sent.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_serial::{SerialPort as _, SerialStream};

use super::{Candidate, Finding, Line, Loaded, Progress};
use crate::config::Device;
use crate::modbus::decode::{self, Failure};
use crate::modbus::plan::read_request;
use crate::modbus::Table;
use crate::models::Library;
use crate::serial::framing::{FrameDecoder, Framing};

/// Writes `request` and collects what comes back within `timeout` (after the last byte, a
/// quiet gap of a few characters ends the answer early).
async fn exchange(
    port: &mut SerialStream,
    line: Line,
    request: &[u8],
    timeout: Duration,
) -> std::io::Result<Vec<u8>> {
    port.clear(tokio_serial::ClearBuffer::Input)
        .map_err(std::io::Error::other)?;
    port.write_all(request).await?;
    let deadline = tokio::time::Instant::now() + line.wire(request.len()) + timeout;
    let gap = line.wire(8).max(Duration::from_millis(20));
    let mut got = Vec::new();
    let mut buf = [0u8; 512];
    loop {
        let until = if got.is_empty() {
            deadline
        } else {
            (tokio::time::Instant::now() + gap).min(deadline)
        };
        match tokio::time::timeout_at(until, port.read(&mut buf)).await {
            Ok(Ok(0)) | Err(_) => return Ok(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Ok(Err(e)) => return Err(e),
        }
    }
}

/// Each polled model's first request at each of its line settings; a proven answer is a
/// finding.
pub async fn polled(
    port: &mut SerialStream,
    polled: &[(&Loaded, Device)],
    progress: &mut dyn Progress,
) -> std::io::Result<Vec<Finding>> {
    let tries: Vec<(usize, Line)> = polled
        .iter()
        .enumerate()
        .flat_map(|(i, (l, d))| {
            super::lines_of(l, Line::of(d))
                .into_iter()
                .map(move |x| (i, x))
        })
        .collect();
    progress.phase(
        "asking devices that answer their own read request",
        tries.len() as u64,
    );
    let mut found = Vec::new();
    for (i, line) in tries {
        let (l, d) = &polled[i];
        let Some(poll) = d.polls.first() else {
            continue;
        };
        line.apply(port).map_err(std::io::Error::other)?;
        let answer = exchange(port, line, &poll.bytes, poll.timeout).await?;
        progress.step(&format!("{} at {line}", l.model.model));
        let seen = super::listen::recognise(std::slice::from_ref(&polled[i]), &answer);
        if seen.is_empty() {
            continue;
        }
        let candidate = Candidate {
            model: l.model.model.clone(),
            score: (2, u32::from(Line::of(d) == line), 1),
            evidence: format!(
                "answered its read request ({}) with a proven frame",
                hex::encode_upper(&poll.bytes)
            ),
            values: Vec::new(),
        };
        found.push(Finding {
            line,
            unit: None,
            ranked: vec![candidate],
            confidence: super::Confidence::Likely,
            identification: None,
        });
        break;
    }
    Ok(found)
}

/// The Modbus line settings to try: `bauds` (or every Modbus model's), with the parities the
/// models use, the settings most models leave the factory with first.
pub fn modbus_lines(modbus: &[(&Loaded, Device)], bauds: Option<&[u32]>) -> Vec<Line> {
    let mut count: Vec<(Line, u32, u32)> = Vec::new();
    for (l, d) in modbus {
        let factory = Line::of(d);
        for line in super::lines_of(l, factory) {
            let f = u32::from(line == factory);
            match count.iter_mut().find(|(x, _, _)| *x == line) {
                Some((_, fc, n)) => {
                    *fc += f;
                    *n += 1;
                }
                None => count.push((line, f, 1)),
            }
        }
    }
    if let Some(b) = bauds {
        count.retain(|(l, _, _)| b.contains(&l.baud));
        for &baud in b {
            if !count.iter().any(|(l, _, _)| l.baud == baud) {
                count.push((Line { baud, parity: 'N' }, 0, 0));
            }
        }
    }
    count.sort_by(|a, b| (b.1, b.2).cmp(&(a.1, a.2)).then(a.0.cmp(&b.0)));
    count.into_iter().map(|(l, _, _)| l).collect()
}

/// How long a unit gets to answer a short read at `line`.
pub fn presence_timeout(line: Line) -> Duration {
    Duration::from_millis(120) + line.wire(16)
}

/// Asks every unit of `units` at each setting until one setting has units (a bus has one);
/// each unit found is identified.
pub async fn modbus(
    port: &mut SerialStream,
    library: &Library,
    modbus: &[(&Loaded, Device)],
    lines: &[Line],
    units: std::ops::RangeInclusive<u8>,
    progress: &mut dyn Progress,
) -> std::io::Result<Vec<Finding>> {
    let n = units.clone().count() as u64;
    progress.phase("asking Modbus units", lines.len() as u64 * n);
    for &line in lines {
        line.apply(port).map_err(std::io::Error::other)?;
        let mut present = Vec::new();
        for unit in units.clone() {
            progress.step(&format!("unit {unit} at {line}"));
            if here(port, line, unit).await? {
                progress.note(&format!("unit {unit} answers at {line}"));
                present.push(unit);
            }
        }
        if present.is_empty() {
            continue;
        }
        let mut found = Vec::new();
        for unit in present {
            let identification = identify(port, line, unit).await?;
            let mut candidates = Vec::new();
            for (l, factory) in modbus {
                let at_factory = Line::of(factory) == line;
                if let Some(mut c) = try_model(port, library, l, line, unit, at_factory).await? {
                    if identification.as_deref().is_some_and(|id| names(id, l)) {
                        c.score.0 += super::SIGNATURE;
                        c.evidence += ", and the unit identifies itself as it";
                    }
                    candidates.push(c);
                }
            }
            if let Some((ranked, confidence)) = super::rank(candidates) {
                found.push(Finding {
                    line,
                    unit: Some(unit),
                    ranked,
                    confidence,
                    identification,
                });
            } else {
                progress.note(&format!(
                    "unit {unit} at {line} answers, but no model's map reads plausibly from it"
                ));
            }
        }
        return Ok(found);
    }
    Ok(Vec::new())
}

/// Whether `unit` answers a one-register read (input register 0, else holding register 0),
/// even with an exception.
async fn here(port: &mut SerialStream, line: Line, unit: u8) -> std::io::Result<bool> {
    for table in [Table::Input, Table::Holding] {
        let request = read_request(unit, table, 0, 1);
        let answer = exchange(port, line, &request, presence_timeout(line)).await?;
        for frame in rtu_frames(unit, &answer) {
            match decode::data(unit, table, 0, 1, &frame) {
                Ok(_) | Err(Failure::Exception(_)) => return Ok(true),
                Err(Failure::Broken) => {}
            }
        }
    }
    Ok(false)
}

/// The RTU frames from `unit` in `bytes`.
fn rtu_frames(unit: u8, bytes: &[u8]) -> Vec<Bytes> {
    FrameDecoder::frames_in(&Framing::ModbusRtu(Some(unit)), 300, bytes)
}

/// Whether a unit's identification ("vendor product version") names model `l`: its maker and
/// its product's first word (`Eastron` and `SDM630` for "Eastron SDM630-Modbus"), in any case.
pub fn names(identification: &str, l: &Loaded) -> bool {
    let id = identification.to_lowercase();
    let maker = l.model.manufacturer.to_lowercase();
    let product = l
        .model
        .name
        .split(|c: char| c.is_whitespace() || c == '-' || c == '/')
        .next()
        .unwrap_or_default()
        .to_lowercase();
    !maker.is_empty() && !product.is_empty() && id.contains(&maker) && id.contains(&product)
}

/// Read Device Identification (function 43/14, basic objects): "vendor product version", when
/// the unit supports it.
async fn identify(
    port: &mut SerialStream,
    line: Line,
    unit: u8,
) -> std::io::Result<Option<String>> {
    let request = crate::modbus::mbap::rtu(unit, &[0x2B, 0x0E, 0x01, 0x00]);
    let answer = exchange(port, line, &request, presence_timeout(line) + line.wire(64)).await?;
    Ok(parse_identification(unit, &answer))
}

/// The objects of a Read Device Identification answer, joined by spaces.
pub fn parse_identification(unit: u8, frame: &[u8]) -> Option<String> {
    if frame.len() < 10 || frame[0] != unit || frame[1] != 0x2B || frame[2] != 0x0E {
        return None;
    }
    crate::modbus::mbap::from_rtu(frame)?;
    let count = usize::from(*frame.get(7)?);
    let mut at = 8;
    let mut parts = Vec::new();
    for _ in 0..count {
        let len = usize::from(*frame.get(at + 1)?);
        let value = frame.get(at + 2..at + 2 + len)?;
        parts.push(String::from_utf8_lossy(value).trim().to_owned());
        at += 2 + len;
    }
    (!parts.is_empty()).then(|| parts.join(" "))
}

/// Reads model `l`'s map from `unit`: a candidate when every request is answered and no value
/// is outside the model's plausible ranges.
async fn try_model(
    port: &mut SerialStream,
    library: &Library,
    l: &Loaded,
    line: Line,
    unit: u8,
    factory: bool,
) -> std::io::Result<Option<Candidate>> {
    let mut keys = serde_yaml::Mapping::new();
    if l.model.parameters.contains_key("unit") {
        keys.insert("unit".into(), u64::from(unit).into());
    }
    let Ok(d) = library.device(&l.model.model, "scan", "/dev/serial2mqtt-scan", &keys) else {
        return Ok(None);
    };
    let Some(map) = d.modbus.clone() else {
        return Ok(None);
    };
    if map.unit != unit {
        return Ok(None);
    }
    let timeout = d
        .polls
        .first()
        .map_or(Duration::from_millis(500), |p| p.timeout);
    let (mut inside, mut read) = (0u32, 0u32);
    let mut values = Vec::new();
    for request in &map.requests {
        let bytes = read_request(unit, request.table, request.start, request.count);
        let answer = exchange(port, line, &bytes, timeout).await?;
        let Some(frame) = rtu_frames(unit, &answer).into_iter().next() else {
            return Ok(None);
        };
        let Ok(got) = decode::decode(unit, request, &map.points, &frame) else {
            return Ok(None);
        };
        for (i, v) in got {
            let Some(p) = map.points.get(i) else { continue };
            read += 1;
            let Some(x) = number(&v) else { continue };
            match super::plausible(l, &p.name, x) {
                Some(false) => return Ok(None),
                Some(true) => {
                    inside += 1;
                    values.push(format!(
                        "{}={}{}",
                        p.name,
                        (x * 1000.0).round() / 1000.0,
                        p.unit
                            .as_deref()
                            .map(|u| format!(" {u}"))
                            .unwrap_or_default()
                    ));
                }
                None => {}
            }
        }
    }
    let mut signed = String::new();
    if let Some(sig) = l.model.scan.as_ref().and_then(|s| s.signature.as_ref()) {
        match signature(port, line, unit, sig, timeout).await? {
            Some(v) if sig.values.contains(&v) => {
                inside += super::SIGNATURE;
                signed = format!(", its model code reads {v:#06x} ({})", sig.about);
            }
            // The register holds another model's code.
            Some(_) => return Ok(None),
            None => {}
        }
    }
    Ok(Some(Candidate {
        model: l.model.model.clone(),
        score: (inside, u32::from(factory), read),
        evidence: format!(
            "its map read in {} request(s), {read} value(s), {} inside its plausible ranges{}{signed}",
            map.requests.len(),
            inside % super::SIGNATURE,
            if factory { ", at its factory settings" } else { "" }
        ),
        values,
    }))
}

/// The value of a model's signature register, when the unit answers its read (an exception or
/// silence: `None`, no evidence either way).
async fn signature(
    port: &mut SerialStream,
    line: Line,
    unit: u8,
    sig: &crate::models::Signature,
    timeout: Duration,
) -> std::io::Result<Option<u16>> {
    let (table, address) = match (sig.holding, sig.input) {
        (Some(a), _) => (Table::Holding, a),
        (None, Some(a)) => (Table::Input, a),
        (None, None) => return Ok(None),
    };
    let answer = exchange(port, line, &read_request(unit, table, address, 1), timeout).await?;
    for frame in rtu_frames(unit, &answer) {
        if let Ok(data) = decode::data(unit, table, address, 1, &frame) {
            return Ok(data.get(..2).map(|w| u16::from_be_bytes([w[0], w[1]])));
        }
    }
    Ok(None)
}

/// A decoded point's value as a number.
fn number(v: &crate::rules::template::Value<'_>) -> Option<f64> {
    use crate::rules::template::{Num, Value};
    match v {
        Value::Num(Num::F(f)) => Some(*f),
        Value::Num(Num::U(u)) => Some(*u as f64),
        Value::Num(Num::I(i)) => Some(*i as f64),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{names, parse_identification};

    /// A Read Device Identification answer as the protocol lays it out (unit 7, basic objects:
    /// vendor, product code, revision), with its CRC.
    #[test]
    fn a_device_identification_answer_reads_as_its_objects() {
        let mut frame = vec![7, 0x2B, 0x0E, 0x01, 0x01, 0x00, 0x00, 0x03];
        for (id, text) in [(0u8, "Eastron"), (1, "SDM630"), (2, "2.03")] {
            frame.push(id);
            frame.push(text.len() as u8);
            frame.extend_from_slice(text.as_bytes());
        }
        let frame = crate::modbus::mbap::rtu(frame[0], &frame[1..]);
        assert_eq!(
            parse_identification(7, &frame).as_deref(),
            Some("Eastron SDM630 2.03")
        );
        // Another unit's, a broken CRC, an exception answer: nothing.
        assert_eq!(parse_identification(8, &frame), None);
        let mut broken = frame.clone();
        broken[9] ^= 1;
        assert_eq!(parse_identification(7, &broken), None);
        assert_eq!(parse_identification(7, &[7, 0xAB, 0x01, 0x00, 0x00]), None);
    }

    /// An identification names a model by its maker and its product's first word.
    #[test]
    fn an_identification_names_the_model_of_its_maker_and_product() {
        let (lib, _) = crate::models::Library::builtin();
        let sdm630 = lib.get("eastron-sdm630").unwrap();
        let sdm120 = lib.get("eastron-sdm120").unwrap();
        assert!(names("Eastron SDM630 2.03", sdm630));
        assert!(names("EASTRON LTD sdm630-modbus v2", sdm630));
        assert!(!names("Eastron SDM630 2.03", sdm120));
        assert!(!names("Acme SDM630", sdm630));
    }
}

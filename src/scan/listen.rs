//! Listening for devices that talk by themselves: at each line speed, the bytes that come are
//! cut by every push model's framing, and a model is seen when its frames pass its checksum
//! (or, for one without, its rules) and its values are plausible.

use std::time::{Duration, Instant};

use tokio::io::AsyncReadExt;
use tokio_serial::SerialStream;

use super::{Candidate, Finding, Line, Loaded, Progress};
use crate::config::Device;
use crate::frames::trial::try_frame;
use crate::serial::framing::FrameDecoder;

/// Bytes that, arriving with no model's frame in them, mean the wrong line speed.
const GARBAGE: usize = 4096;

/// Frames of one model that prove it.
const ENOUGH: u32 = 2;

/// The line speeds to listen at: `bauds` (or the usual ones), each with the parities the push
/// models that name it use.
pub fn lines(push: &[(&Loaded, Device)], bauds: Option<&[u32]>) -> Vec<Line> {
    let mut out: Vec<Line> = Vec::new();
    let mut add = |l: Line| {
        if !out.contains(&l) {
            out.push(l);
        }
    };
    let models: Vec<Line> = push
        .iter()
        .flat_map(|(l, d)| super::lines_of(l, Line::of(d)))
        .collect();
    let wanted: Vec<u32> = match bauds {
        Some(b) => b.to_vec(),
        None => {
            let mut b = super::USUAL_BAUDS.to_vec();
            for m in &models {
                if !b.contains(&m.baud) {
                    b.push(m.baud);
                }
            }
            b
        }
    };
    for baud in wanted {
        add(Line { baud, parity: 'N' });
        for m in models.iter().filter(|m| m.baud == baud) {
            add(*m);
        }
    }
    out
}

/// Listens at each of `lines` in turn; stops at the first where models are seen. Nothing at
/// all in the first `listen` means nothing talks (the rest is skipped).
pub async fn run(
    port: &mut SerialStream,
    push: &[(&Loaded, Device)],
    lines: &[Line],
    listen: Duration,
    progress: &mut dyn Progress,
) -> std::io::Result<Vec<Finding>> {
    progress.phase(
        "listening for devices that talk by themselves",
        lines.len() as u64,
    );
    for (i, line) in lines.iter().enumerate() {
        line.apply(port).map_err(std::io::Error::other)?;
        let (bytes, seen) = at_line(port, push, listen).await?;
        progress.step(&format!("{line}: {} bytes", bytes));
        if !seen.is_empty() {
            let found = findings(*line, push, seen);
            return Ok(found);
        }
        if i == 0 && bytes == 0 {
            progress.note(&format!(
                "nothing talked within {} at {line}: no device sends by itself",
                humantime::format_duration(listen)
            ));
            return Ok(Vec::new());
        }
    }
    Ok(Vec::new())
}

/// What one push model made of the bytes at one line speed.
pub(super) struct Seen {
    index: usize,
    frames: u32,
    plausible: u32,
    implausible: u32,
    values: Vec<String>,
}

/// Reads at the current settings until a model is proven, the bytes are plainly garbage, or
/// `listen` passes; returns the bytes read and what each model saw.
async fn at_line(
    port: &mut SerialStream,
    push: &[(&Loaded, Device)],
    listen: Duration,
) -> std::io::Result<(usize, Vec<Seen>)> {
    let start = Instant::now();
    let mut all = Vec::new();
    let mut buf = [0u8; 1024];
    let mut checked = Instant::now();
    loop {
        let left = listen.saturating_sub(start.elapsed());
        if left.is_zero() {
            break;
        }
        match tokio::time::timeout(left.min(Duration::from_millis(200)), port.read(&mut buf)).await
        {
            Ok(Ok(0)) => break,
            Ok(Ok(n)) => all.extend_from_slice(&buf[..n]),
            Ok(Err(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => {}
        }
        // Every model cuts the whole buffer again: at most every 200 ms, not after each read
        // of a fast line.
        if checked.elapsed() < Duration::from_millis(200) {
            continue;
        }
        checked = Instant::now();
        let seen = recognise(push, &all);
        if seen.iter().any(|s| s.frames >= ENOUGH) {
            return Ok((all.len(), seen));
        }
        if all.len() > GARBAGE && seen.is_empty() {
            break;
        }
    }
    let seen = recognise(push, &all);
    Ok((all.len(), seen))
}

/// Every push model's verdict on `bytes`: the models with at least one proven frame.
pub(super) fn recognise(push: &[(&Loaded, Device)], bytes: &[u8]) -> Vec<Seen> {
    let mut out = Vec::new();
    for (index, (l, d)) in push.iter().enumerate() {
        let mut s = Seen {
            index,
            frames: 0,
            plausible: 0,
            implausible: 0,
            values: Vec::new(),
        };
        for frame in FrameDecoder::frames_in(&d.framing, d.max_frame, bytes) {
            let t = try_frame(d, "scan", &frame);
            let checked = matches!(t.checksum, Some((_, Ok(_))));
            let ruled = t.matched && !t.dropped && !t.messages.is_empty();
            if !(ruled && (checked || d.checksum.is_none())) {
                continue;
            }
            s.frames += 1;
            for m in &t.messages {
                let name = m.topic.rsplit('/').next().unwrap_or_default();
                let text = String::from_utf8_lossy(&m.payload);
                if let Ok(v) = text.trim().parse::<f64>() {
                    match super::plausible(l, name, v) {
                        Some(true) => s.plausible += 1,
                        Some(false) => s.implausible += 1,
                        None => {}
                    }
                    if s.values.len() < 4 && !s.values.iter().any(|x| x.starts_with(name)) {
                        s.values.push(format!("{name}={text}"));
                    }
                }
            }
        }
        if s.frames > 0 && s.implausible == 0 {
            out.push(s);
        }
    }
    out
}

/// The models seen at `line` as findings: each protocol its own device (a receiver's NMEA and
/// UBX), models of one protocol ranked in one finding.
fn findings(line: Line, push: &[(&Loaded, Device)], seen: Vec<Seen>) -> Vec<Finding> {
    // Models whose frames are cut by the same framing are alternatives for one device.
    let mut groups: Vec<(String, Vec<Candidate>)> = Vec::new();
    for s in seen {
        let (l, d) = &push[s.index];
        let key = format!("{:?}", d.framing);
        let factory = u32::from(Line::of(d) == line);
        let c = Candidate {
            model: l.model.model.clone(),
            score: (
                s.plausible.min(1) + u32::from(s.frames >= ENOUGH),
                factory,
                s.frames,
            ),
            evidence: format!(
                "{} frame(s) passed its {}{}",
                s.frames,
                d.checksum.as_ref().map_or_else(
                    || "rules".to_owned(),
                    |c| format!("{} check", c.spec().name())
                ),
                if s.plausible > 0 {
                    format!(", {} value(s) in its plausible ranges", s.plausible)
                } else {
                    String::new()
                }
            ),
            values: s.values,
        };
        match groups.iter_mut().find(|(k, _)| *k == key) {
            Some((_, list)) => list.push(c),
            None => groups.push((key, vec![c])),
        }
    }
    groups
        .into_iter()
        .filter_map(|(_, list)| {
            let (ranked, confidence) = super::rank(list)?;
            Some(Finding {
                line,
                unit: None,
                ranked,
                confidence,
                identification: None,
            })
        })
        .collect()
}

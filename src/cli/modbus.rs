//! `serial2mqtt modbus read`: asks a Modbus RTU unit for registers (or coils) once and prints
//! them every way they can be read, 32- and 64-bit values in all four word orders side by
//! side, so the type and order for a register map can be settled before writing it.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::codec::FramedRead;

use crate::modbus::decode::data;
use crate::modbus::map::{modicon, Table};
use crate::modbus::plan::read_request;
use crate::rules::binary::FieldType;
use crate::serial::framing::{Decoded, FrameDecoder, Framing};

/// What to read and how to reach the unit.
pub struct Probe {
    /// The serial device, or a network transport's URL (`modbus-tcp://host:502`).
    pub port: PathBuf,
    /// Line speed.
    pub baud: u32,
    /// none, odd or even.
    pub parity: tokio_serial::Parity,
    /// 1 or 2.
    pub stop_bits: tokio_serial::StopBits,
    /// The unit id.
    pub unit: u8,
    /// The table and 0-based address, or None with `register` (Modicon, 1-based).
    pub place: Option<(Table, u16)>,
    /// A 1-based Modicon register (30001...).
    pub register: Option<u32>,
    /// Registers (or bits) read.
    pub count: u16,
    /// Longest wait for the answer.
    pub timeout: Duration,
}

/// Runs the probe; exit 1 with the reason when the unit does not answer properly.
pub fn main(probe: Probe) -> ExitCode {
    let place = match (probe.place, probe.register) {
        (Some(p), None) => p,
        (None, Some(r)) => match modicon(r) {
            Some(p) => p,
            None => {
                eprintln!(
                    "--register {r} is not in the Modicon notation: 30001-39999 input, 40001-49999 \
                     holding, 10001-19999 discrete, 1-9999 coils"
                );
                return ExitCode::FAILURE;
            }
        },
        _ => {
            eprintln!(
                "say what to read: one of --input, --holding, --coil, --discrete (0-based \
                 address) or --register (1-based Modicon, e.g. 30001)"
            );
            return ExitCode::FAILURE;
        }
    };
    let max = if place.0.bits() { 2000 } else { 125 };
    if probe.count == 0 || probe.count > max {
        eprintln!(
            "--count {} is outside 1..={max} for {}",
            probe.count,
            place.0.name()
        );
        return ExitCode::FAILURE;
    }
    let Some(runtime) = super::runtime() else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(ask(&probe, place)) {
        Ok((frame, took)) => match data(probe.unit, place.0, place.1, probe.count, &frame) {
            Ok(d) => {
                print!("{}", render(&probe, place, d, took));
                ExitCode::SUCCESS
            }
            Err(why) => {
                eprintln!(
                    "unit {} answered {}: {why}",
                    probe.unit,
                    hex::encode_upper(&frame)
                );
                ExitCode::FAILURE
            }
        },
        Err(why) => {
            eprintln!("{why}");
            ExitCode::FAILURE
        }
    }
}

/// Sends the read request and waits for one Modbus RTU frame from the unit.
async fn ask(probe: &Probe, (table, address): (Table, u16)) -> Result<(Vec<u8>, Duration), String> {
    let line = crate::config::SerialSettings {
        baud: probe.baud,
        data_bits: tokio_serial::DataBits::Eight,
        parity: probe.parity,
        stop_bits: probe.stop_bits,
        flow_control: tokio_serial::FlowControl::None,
    };
    let port = crate::serial::link::open(&probe.port, &line).await?;
    let request = read_request(probe.unit, table, address, probe.count);
    let mut frames = FramedRead::new(
        port,
        FrameDecoder::new(&Framing::ModbusRtu(Some(probe.unit)), 300),
    );
    let port = frames.get_mut();
    // The flush ends the request: a Modbus TCP link sends it then.
    async {
        port.write_all(&request).await?;
        port.flush().await
    }
    .await
    .map_err(|e| format!("cannot write to {}: {e}", probe.port.display()))?;
    let sent = Instant::now();
    let deadline = tokio::time::Instant::now() + probe.timeout;
    loop {
        match tokio::time::timeout_at(deadline, frames.next()).await {
            Ok(Some(Ok(Decoded::Frame(f)))) => return Ok((f.to_vec(), sent.elapsed())),
            Ok(Some(Ok(_))) => continue,
            Ok(Some(Err(e))) => return Err(format!("read error: {e}")),
            Ok(None) => return Err(format!("{} closed", probe.port.display())),
            Err(_) => {
                return Err(format!(
                    "no answer from unit {} within {} (request {}): check the unit id, the baud \
                     rate and parity, and the A/B wires",
                    probe.unit,
                    humantime::format_duration(probe.timeout),
                    hex::encode_upper(&request)
                ))
            }
        }
    }
}

/// The answer every way it reads.
fn render(probe: &Probe, (table, address): (Table, u16), data: &[u8], took: Duration) -> String {
    let mut out = format!(
        "unit {}, {} {}..={} ({} entries), answered in {} ms\n",
        probe.unit,
        table.name(),
        address,
        u32::from(address) + u32::from(probe.count) - 1,
        probe.count,
        took.as_millis()
    );
    if table.bits() {
        for i in 0..usize::from(probe.count) {
            let bit = (data.get(i / 8).copied().unwrap_or(0) >> (i % 8)) & 1;
            out += &format!("  {:>5}  {bit}\n", usize::from(address) + i);
        }
        return out;
    }
    out += "  address   hex      u16     i16\n";
    for (i, w) in data.chunks_exact(2).enumerate() {
        let v = u16::from_be_bytes([w[0], w[1]]);
        out += &format!(
            "  {:>7}   0x{v:04X}  {v:>6}  {:>6}\n",
            usize::from(address) + i,
            v as i16
        );
    }
    for (width, types) in [(4usize, ["u32", "i32", "f32"]), (8, ["u64", "i64", "f64"])] {
        if data.len() < width {
            continue;
        }
        out += &format!("  {}-bit values from address {address}:\n", width * 8);
        for order in ["abcd", "cdab", "badc", "dcba"] {
            let shown: Vec<String> = types
                .iter()
                .filter_map(|t| {
                    let ty = FieldType::parse(&format!("{t}{order}"))?;
                    Some(format!("{t}={}", shown(ty.read(data)?)))
                })
                .collect();
            out += &format!("    order: {order}  {}\n", shown.join("  "));
        }
    }
    out
}

/// A number as a person compares them: floats far from 1 in scientific notation.
fn shown(n: crate::rules::template::Num) -> String {
    match n {
        crate::rules::template::Num::F(f)
            if f != 0.0 && (f.abs() >= 1e15 || f.abs() < 1e-6 || !f.is_finite()) =>
        {
            format!("{f:.4e}")
        }
        other => other.to_string(),
    }
}

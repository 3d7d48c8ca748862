//! A read request's answer turned into its points' values: the response checked by rmodbus
//! (unit, function, CRC, byte count; an exception decoded by name), then each point read at
//! its offset with the binary fields' types and orders.

use std::borrow::Cow;

use rmodbus::client::ModbusRequest;
use rmodbus::consts::ModbusFunction;
use rmodbus::{ErrorKind, ModbusProto};

use super::map::{Kind, Point, Table};
use super::plan::Request;
use crate::rules::binary::{BinField, FieldType};
use crate::rules::template::{Num, Value};

/// Why an answer carries no values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// The unit answered with a Modbus exception (its name, e.g. "illegal data address").
    Exception(&'static str),
    /// Not an answer to this request (another unit or function, a short or broken frame).
    Broken,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Exception(name) => write!(f, "exception: {name}"),
            Failure::Broken => f.write_str("not an answer to the request"),
        }
    }
}

/// A Modbus exception's name as the specification gives it.
fn exception(kind: ErrorKind) -> Failure {
    Failure::Exception(match kind {
        ErrorKind::IllegalFunction => "illegal function (01)",
        ErrorKind::IllegalDataAddress => "illegal data address (02)",
        ErrorKind::IllegalDataValue => "illegal data value (03)",
        ErrorKind::SlaveDeviceFailure => "server device failure (04)",
        ErrorKind::Acknowledge => "acknowledge (05)",
        ErrorKind::SlaveDeviceBusy => "server device busy (06)",
        ErrorKind::NegativeAcknowledge => "negative acknowledge (07)",
        ErrorKind::MemoryParityError => "memory parity error (08)",
        ErrorKind::GatewayPathUnavailable => "gateway path unavailable (0A)",
        ErrorKind::GatewayTargetFailed => "gateway target device failed to respond (0B)",
        _ => return Failure::Broken,
    })
}

/// The data bytes of an answer to reading `count` entries of `table` from `start` (checked:
/// unit, function, CRC, byte count; an exception by name).
pub fn data(
    unit: u8,
    table: Table,
    start: u16,
    count: u16,
    frame: &[u8],
) -> Result<&[u8], Failure> {
    let function = match table {
        Table::Coils => ModbusFunction::GetCoils,
        Table::Discretes => ModbusFunction::GetDiscretes,
        Table::Holding => ModbusFunction::GetHoldings,
        Table::Input => ModbusFunction::GetInputs,
    };
    let req = ModbusRequest {
        tr_id: 1,
        unit_id: unit,
        func: function,
        reg: start,
        count,
        proto: ModbusProto::Rtu,
    };
    match req.parse_ok(frame) {
        Ok(()) => {}
        Err(ErrorKind::FrameBroken | ErrorKind::FrameCRCError) => return Err(Failure::Broken),
        Err(kind) => return Err(exception(kind)),
    }
    let needed = if table.bits() {
        usize::from(count).div_ceil(8)
    } else {
        usize::from(count) * 2
    };
    // Checked by rmodbus: address, function, byte count, data, CRC. The data must cover the
    // request.
    let data = frame
        .get(3..frame.len().saturating_sub(2))
        .unwrap_or_default();
    match (frame.get(2), data.get(..needed)) {
        (Some(&n), Some(data)) if usize::from(n) >= needed => Ok(data),
        _ => Err(Failure::Broken),
    }
}

/// The values of `request`'s points from `frame` (a whole RTU response, CRC included), as
/// (point index, value) pairs.
pub fn decode(
    unit: u8,
    request: &Request,
    points: &[Point],
    frame: &[u8],
) -> Result<Vec<(usize, Value<'static>)>, Failure> {
    let data = data(unit, request.table, request.start, request.count, frame)?;
    let mut values = Vec::with_capacity(request.points.len());
    for &i in &request.points {
        let Some(p) = points.get(i) else { continue };
        let at = usize::from(p.address - request.start);
        if let Some(v) = value(p, data, at) {
            values.push((i, v));
        }
    }
    Ok(values)
}

/// Bit `at` of a coils or discretes answer (packed eight to a byte, least significant first).
fn bit(data: &[u8], at: usize) -> Option<u64> {
    Some(u64::from((data.get(at / 8)? >> (at % 8)) & 1))
}

/// One point's value from the response's data, `at` registers (or bits) in.
fn value(p: &Point, data: &[u8], at: usize) -> Option<Value<'static>> {
    Some(match &p.kind {
        Kind::Bool => Value::Num(Num::U(bit(data, at)?)),
        Kind::Bits(n) => {
            let mut v = 0u64;
            for i in 0..usize::from(*n) {
                v |= bit(data, at + i)? << i;
            }
            Value::Num(Num::U(v))
        }
        Kind::Bit(bit) => {
            let word = FieldType::parse("u16be")?.read(data.get(at * 2..)?)?;
            let Num::U(w) = word else { return None };
            Value::Num(Num::U((w >> bit) & 1))
        }
        Kind::Number(ty) => Value::Num(
            BinField {
                name: String::new(),
                offset: at * 2,
                ty: *ty,
                scale: p.scale,
                add: p.add,
                decimals: p.decimals,
            }
            .read(data)?,
        ),
        Kind::Text(n) => {
            let bytes = data.get(at * 2..at * 2 + usize::from(*n) * 2)?;
            let text = String::from_utf8_lossy(bytes);
            Value::Str(Cow::Owned(text.trim_end_matches(['\0', ' ']).to_owned()))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::map::compile;
    use crate::modbus::plan::{plan, Limits};

    fn unit(yaml: &str) -> (Vec<Point>, Vec<Request>) {
        let raw: Vec<crate::config::schema::ModbusPoint> = serde_yaml::from_str(yaml).unwrap();
        let points: Vec<Point> = raw.iter().map(|p| compile(p).unwrap()).collect();
        let limits = Limits {
            max_gap: 10,
            max_registers: 125,
            max_bits: 2000,
        };
        let requests = plan(17, &points, limits);
        (points, requests)
    }

    fn rtu(body: &[u8]) -> Vec<u8> {
        let mut f = body.to_vec();
        let crc = crc::Crc::<u16>::new(&crc::CRC_16_MODBUS).checksum(body);
        f.extend_from_slice(&crc.to_le_bytes());
        f
    }

    fn text(v: &Value<'_>) -> String {
        let mut s = String::new();
        v.write_text(&mut s);
        s
    }

    #[test]
    fn every_type_and_order_reads_what_the_unit_stored() {
        let (points, requests) = unit(
            "[{name: v, holding: 0, type: f32},
              {name: amps, holding: 2, type: u32, order: cdab, scale: 0.001},
              {name: t, holding: 4, type: i16, scale: 0.1},
              {name: e, holding: 5, type: u64},
              {name: alarm, holding: 9, bit: 2},
              {name: model, holding: 10, type: string, length: 3}]",
        );
        assert_eq!(requests.len(), 1);
        let mut data = Vec::new();
        data.extend_from_slice(&230.5f32.to_be_bytes());
        data.extend_from_slice(&[0x11, 0x70, 0x00, 0x01]); // 70000 mA, low word first
        data.extend_from_slice(&(-125i16).to_be_bytes());
        data.extend_from_slice(&123_456_789_012u64.to_be_bytes());
        data.extend_from_slice(&0b0100u16.to_be_bytes());
        data.extend_from_slice(b"SDM1\0\0");
        let mut body = vec![17, 0x03, data.len() as u8];
        body.extend_from_slice(&data);
        let values = decode(17, &requests[0], &points, &rtu(&body)).unwrap();
        let shown: Vec<(String, String)> = values
            .iter()
            .map(|(i, v)| (points[*i].name.clone(), text(v)))
            .collect();
        let expect = [
            ("v", "230.5"),
            ("amps", "70"),
            ("t", "-12.5"),
            ("e", "123456789012"),
            ("alarm", "1"),
            ("model", "SDM1"),
        ];
        assert_eq!(
            shown,
            expect
                .iter()
                .map(|(a, b)| (a.to_string(), b.to_string()))
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn coils_are_bits_from_the_least_significant() {
        let (points, requests) =
            unit("[{name: a, coil: 0}, {name: b, coil: 1}, {name: c, coil: 9}]");
        let frame = rtu(&[17, 0x01, 2, 0b0000_0001, 0b0000_0010]);
        let values = decode(17, &requests[0], &points, &frame).unwrap();
        let bits: Vec<String> = values.iter().map(|(_, v)| text(v)).collect();
        assert_eq!(bits, ["1", "0", "1"]);
        // A run of ten coils from 0 is one number, coil 0 its least significant bit.
        let (points, requests) = unit("[{name: relays, coil: 0, length: 10}]");
        let frame = rtu(&[17, 0x01, 2, 0b0000_0101, 0b0000_0010]);
        let values = decode(17, &requests[0], &points, &frame).unwrap();
        assert_eq!(text(&values[0].1), "517");
    }

    #[test]
    fn exceptions_are_named_and_other_frames_refused() {
        let (points, requests) = unit("[{name: a, input: 0}]");
        let r = &requests[0];
        assert_eq!(
            decode(17, r, &points, &rtu(&[17, 0x84, 0x02])).err(),
            Some(Failure::Exception("illegal data address (02)"))
        );
        assert_eq!(
            decode(17, r, &points, &rtu(&[18, 0x04, 2, 0, 1])).err(),
            Some(Failure::Broken),
            "another unit"
        );
        let mut bad = rtu(&[17, 0x04, 2, 0, 1]);
        bad[3] ^= 1;
        assert_eq!(
            decode(17, r, &points, &bad).err(),
            Some(Failure::Broken),
            "CRC"
        );
        assert_eq!(
            decode(17, r, &points, &rtu(&[17, 0x04, 0])).err(),
            Some(Failure::Broken),
            "too short for the request"
        );
    }
}

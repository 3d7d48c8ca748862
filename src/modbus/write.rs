//! A command's MQTT payload written to a Modbus point: `ON`/`OFF` (or 1/0, true/false) to a
//! coil by function 5, a run of coils (`length: N`) by function 15 from a number (`5`, `0x05`,
//! `0b101`: the first coil its least significant bit) or a list (`ON,OFF,ON`: first coil
//! first), a number to a holding register by function 6 (one register) or 16 (32/64-bit
//! values in the point's order, strings), after undoing its scale and addend.

use rmodbus::client::ModbusRequest;
use rmodbus::ModbusProto;

use super::map::{Kind, Point, Table};
use super::Unit;

/// The write request for `payload` to point `name` of `unit`; Err says why it cannot be
/// written (answered on the command's reply topic).
pub fn request(unit: &Unit, name: &str, payload: &[u8]) -> Result<Vec<u8>, String> {
    let point = unit
        .points
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| format!("unit {} has no point `{name}`", unit.unit))?;
    let text = std::str::from_utf8(payload)
        .map_err(|_| "the payload is not UTF-8 text".to_owned())?
        .trim();
    let mut req = ModbusRequest::new(unit.unit, ModbusProto::Rtu);
    let mut out = Vec::with_capacity(16);
    let built = match (point.table, &point.kind) {
        (Table::Coils, Kind::Bits(n)) => {
            let bits = coils(text, *n)
                .ok_or_else(|| format!("`{text}` is not {n} coils (point `{name}`): write a number below 2^{n} (5, 0x05, 0b101) or {n} ON/OFF separated by commas"))?;
            req.generate_set_coils_bulk(point.address, &bits, &mut out)
        }
        (Table::Coils, _) => {
            let on =
                on_off(text).ok_or_else(|| format!("`{text}` is not ON or OFF (coil `{name}`)"))?;
            req.generate_set_coil(point.address, u8::from(on), &mut out)
        }
        (Table::Holding, Kind::Number(ty)) => {
            let registers = registers(point, ty, text)?;
            if registers.len() == 1 {
                req.generate_set_holding(point.address, registers[0], &mut out)
            } else {
                req.generate_set_holdings_bulk(point.address, &registers, &mut out)
            }
        }
        (Table::Holding, Kind::Text(n)) => {
            let mut bytes = text.as_bytes().to_vec();
            if bytes.len() > usize::from(*n) * 2 {
                return Err(format!(
                    "`{text}` is longer than point `{name}`'s {} characters",
                    n * 2
                ));
            }
            bytes.resize(usize::from(*n) * 2, 0);
            let registers: Vec<u16> = bytes
                .chunks_exact(2)
                .map(|c| u16::from_be_bytes([c[0], c[1]]))
                .collect();
            req.generate_set_holdings_bulk(point.address, &registers, &mut out)
        }
        (Table::Holding, _) => {
            return Err(format!(
                "point `{name}` is one bit of a register: write the whole register"
            ))
        }
        (t, _) => return Err(format!("point `{name}` is a {} (read-only)", t.name())),
    };
    built.map_err(|e| format!("cannot build the request: {e}"))?;
    Ok(out)
}

/// A coil's state as a payload says it: ON/OFF, 1/0, true/false (any case).
fn on_off(text: &str) -> Option<bool> {
    match text.to_ascii_lowercase().as_str() {
        "on" | "1" | "true" => Some(true),
        "off" | "0" | "false" => Some(false),
        _ => None,
    }
}

/// `n` coils (0 or 1, first address first) from a number whose bit i is coil i (decimal, 0x
/// or 0b) or from a list of `n` states separated by commas or spaces.
fn coils(text: &str, n: u16) -> Option<Vec<u8>> {
    let parts: Vec<&str> = text.split([',', ' ']).filter(|p| !p.is_empty()).collect();
    if parts.len() > 1 {
        if parts.len() != usize::from(n) {
            return None;
        }
        return parts.iter().map(|p| on_off(p).map(u8::from)).collect();
    }
    let lower = text.to_ascii_lowercase();
    let value = if let Some(hex) = lower.strip_prefix("0x") {
        u64::from_str_radix(hex, 16).ok()?
    } else if let Some(bin) = lower.strip_prefix("0b") {
        u64::from_str_radix(bin, 2).ok()?
    } else {
        lower.parse::<u64>().ok()?
    };
    if n < 64 && value >> n != 0 {
        return None;
    }
    Some((0..n).map(|i| ((value >> i) & 1) as u8).collect())
}

/// The registers of `text` as point `p`'s type: the raw value is `(value - add) / scale`,
/// rounded to a whole number for integer types.
fn registers(
    p: &Point,
    ty: &crate::rules::binary::FieldType,
    text: &str,
) -> Result<Vec<u16>, String> {
    let value: f64 = text
        .parse()
        .map_err(|_| format!("`{text}` is not a number (point `{}`)", p.name))?;
    let mut raw = (value - p.add.unwrap_or(0.0)) / p.scale.unwrap_or(1.0);
    if !ty.is_float() {
        // An integer type: the nearest step of the scale.
        raw = raw.round();
    }
    let bytes = ty.write(raw).ok_or_else(|| {
        format!(
            "{value} does not fit point `{}` (raw {raw} out of its type's range)",
            p.name
        )
    })?;
    Ok(bytes
        .chunks_exact(2)
        .map(|c| u16::from_be_bytes([c[0], c[1]]))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::map::compile;

    fn unit(yaml: &str) -> Unit {
        let raw: Vec<crate::config::schema::ModbusPoint> = serde_yaml::from_str(yaml).unwrap();
        Unit {
            unit: 1,
            points: raw.iter().map(|p| compile(p).unwrap()).collect(),
            requests: Vec::new(),
            groups: 1,
        }
    }

    #[test]
    fn payloads_become_the_write_requests_modbus_defines() {
        let u = unit(
            "[{name: relay, coil: 3}, {name: setpoint, holding: 16, type: i16, scale: 0.1},
              {name: limit, holding: 20, type: f32, order: cdab}, {name: tag, holding: 30, type: string, length: 2},
              {name: volts, input: 0}, {name: flag, holding: 40, bit: 1},
              {name: relays, coil: 8, length: 10}]",
        );
        // 01 05 0003 FF00 CRC: coil 3 on.
        assert_eq!(
            &request(&u, "relay", b"ON").unwrap()[..6],
            &[1, 5, 0, 3, 0xFF, 0]
        );
        assert_eq!(
            &request(&u, "relay", b"off").unwrap()[..6],
            &[1, 5, 0, 3, 0, 0]
        );
        // 23.5 with scale 0.1 is 235: 01 06 0010 00EB.
        assert_eq!(
            &request(&u, "setpoint", b"23.5").unwrap()[..6],
            &[1, 6, 0, 16, 0, 235]
        );
        // f32 low word first: 01 10 0014 0002 04 <CD AB>.
        let b = 230.5f32.to_be_bytes();
        let req = request(&u, "limit", b"230.5").unwrap();
        assert_eq!(&req[..7], &[1, 0x10, 0, 20, 0, 2, 4]);
        assert_eq!(&req[7..11], &[b[2], b[3], b[0], b[1]]);
        assert_eq!(&request(&u, "tag", b"AB").unwrap()[7..11], b"AB\0\0");
        // Ten coils from 8, the first the least significant bit: 01 0F 0008 000A 02 <05 02>.
        let all = [1, 0x0F, 0, 8, 0, 10, 2, 0b0000_0101, 0b10];
        assert_eq!(&request(&u, "relays", b"0x205").unwrap()[..9], &all);
        assert_eq!(&request(&u, "relays", b"517").unwrap()[..9], &all);
        assert_eq!(
            &request(&u, "relays", b"ON,OFF,on,0,0,0,0,0,0,true").unwrap()[..9],
            &all
        );
        for (point, payload, needle) in [
            ("relay", "maybe", "not ON or OFF"),
            ("setpoint", "x", "not a number"),
            ("setpoint", "5000", "does not fit"),
            ("volts", "1", "read-only"),
            ("flag", "1", "whole register"),
            ("tag", "ABCDE", "longer than"),
            ("relays", "1024", "not 10 coils"),
            ("relays", "ON,OFF", "not 10 coils"),
            ("relays", "0xZZ", "not 10 coils"),
            ("nope", "1", "no point"),
        ] {
            let e = request(&u, point, payload.as_bytes()).unwrap_err();
            assert!(e.contains(needle), "{point} {payload}: {e}");
        }
    }
}

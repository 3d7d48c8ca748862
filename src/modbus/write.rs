//! A command's MQTT payload written to a Modbus point: `ON`/`OFF` (or 1/0, true/false) to a
//! coil by function 5, a number to a holding register by function 6 (one register) or 16
//! (32/64-bit values in the point's order, strings), after undoing its scale and addend.

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
        (Table::Coils, _) => {
            let on = match text.to_ascii_lowercase().as_str() {
                "on" | "1" | "true" => true,
                "off" | "0" | "false" => false,
                _ => return Err(format!("`{text}` is not ON or OFF (coil `{name}`)")),
            };
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
        }
    }

    #[test]
    fn payloads_become_the_write_requests_modbus_defines() {
        let u = unit(
            "[{name: relay, coil: 3}, {name: setpoint, holding: 16, type: i16, scale: 0.1},
              {name: limit, holding: 20, type: f32, order: cdab}, {name: tag, holding: 30, type: string, length: 2},
              {name: volts, input: 0}, {name: flag, holding: 40, bit: 1}]",
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
        for (point, payload, needle) in [
            ("relay", "maybe", "not ON or OFF"),
            ("setpoint", "x", "not a number"),
            ("setpoint", "5000", "does not fit"),
            ("volts", "1", "read-only"),
            ("flag", "1", "whole register"),
            ("tag", "ABCDE", "longer than"),
            ("nope", "1", "no point"),
        ] {
            let e = request(&u, point, payload.as_bytes()).unwrap_err();
            assert!(e.contains(needle), "{point} {payload}: {e}");
        }
    }
}

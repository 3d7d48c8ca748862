//! A unit's points as written (`coil: 0`, `input: 0x0006`, `register: 30007`, `type: f32`,
//! `order: cdab`) compiled into where they live and how their bytes read.
//!
//! Addresses: `coil`, `discrete`, `input` and `holding` take the 0-based protocol address (the
//! number on the wire, often printed as hex: 0x0006); `register` takes the 1-based Modicon
//! notation (30007 is input register 6, 40001 holding register 0, 10001 discrete input 0,
//! 1 coil 0; six digits for addresses above 9999: 300001).

use std::time::Duration;

use crate::config::schema::ModbusPoint;
use crate::rules::binary::{decimals_of, FieldType};

/// The four Modbus tables, by the function that reads them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Table {
    /// Coils, read by function 1, written by 5 and 15.
    Coils = 1,
    /// Discrete inputs, function 2.
    Discretes = 2,
    /// Holding registers, read by function 3, written by 6 and 16.
    Holding = 3,
    /// Input registers, function 4.
    Input = 4,
}

impl Table {
    /// The table's name, for logs and the request plan.
    pub fn name(self) -> &'static str {
        match self {
            Table::Coils => "coils",
            Table::Discretes => "discrete",
            Table::Holding => "holding",
            Table::Input => "input",
        }
    }

    /// Whether its entries are single bits (coils, discretes) rather than 16-bit registers.
    pub fn bits(self) -> bool {
        matches!(self, Table::Coils | Table::Discretes)
    }
}

/// How a point's registers (or bit) read.
#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    /// A coil or discrete input: 0 or 1.
    Bool,
    /// A run of this many coils or discrete inputs read as one unsigned number, the first
    /// address the least significant bit (how Modbus packs them): a relay board's channels.
    Bits(u16),
    /// One bit of a 16-bit register.
    Bit(u8),
    /// A number of 1, 2 or 4 registers.
    Number(FieldType),
    /// Text of this many registers, two characters each (NULs and spaces at the end dropped).
    Text(u16),
}

/// One compiled point.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    /// Its placeholder name.
    pub name: String,
    /// Where it lives.
    pub table: Table,
    /// 0-based protocol address of its first register (or bit).
    pub address: u16,
    /// How it reads.
    pub kind: Kind,
    /// Multiplier.
    pub scale: Option<f64>,
    /// Addend.
    pub add: Option<f64>,
    /// Decimals kept after scaling.
    pub decimals: u8,
    /// Engineering unit, for the plan `check` prints.
    pub unit: Option<String>,
    /// Its read group: the index of its interval among the unit's, fastest first (0 when the
    /// whole map is read at the unit's `every`). Set by [`group`].
    pub group: usize,
}

impl Point {
    /// Registers (or bits) it occupies.
    pub fn width(&self) -> u16 {
        match &self.kind {
            Kind::Bool | Kind::Bit(_) => 1,
            Kind::Bits(n) => *n,
            Kind::Number(t) => (t.size() / 2) as u16,
            Kind::Text(n) => *n,
        }
    }

    /// One past its last register (or bit); u32 so a point at 65535 cannot overflow.
    pub fn end(&self) -> u32 {
        u32::from(self.address) + u32::from(self.width())
    }
}

/// Why a point cannot be compiled: the key at fault and what to write instead.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PointError {
    /// The key under the point (`type`, `register`, ...), "" for the point itself.
    pub key: &'static str,
    /// What is wrong.
    pub message: String,
    /// What to write instead.
    pub help: String,
}

fn error(key: &'static str, message: String, help: impl Into<String>) -> PointError {
    PointError {
        key,
        message,
        help: help.into(),
    }
}

/// The 1-based Modicon notation as a table and a 0-based address.
pub fn modicon(register: u32) -> Option<(Table, u16)> {
    let (table, offset) = match register {
        1..=9_999 => (Table::Coils, register),
        10_001..=19_999 => (Table::Discretes, register - 10_000),
        30_001..=39_999 => (Table::Input, register - 30_000),
        40_001..=49_999 => (Table::Holding, register - 40_000),
        100_001..=165_536 => (Table::Discretes, register - 100_000),
        300_001..=365_536 => (Table::Input, register - 300_000),
        400_001..=465_536 => (Table::Holding, register - 400_000),
        _ => return None,
    };
    u16::try_from(offset - 1).ok().map(|a| (table, a))
}

/// Compiles one point as written.
pub fn compile(raw: &ModbusPoint) -> Result<Point, PointError> {
    let given = [
        raw.coil.map(|a| (Table::Coils, a)),
        raw.discrete.map(|a| (Table::Discretes, a)),
        raw.input.map(|a| (Table::Input, a)),
        raw.holding.map(|a| (Table::Holding, a)),
    ];
    let mut places: Vec<(Table, u16)> = given.into_iter().flatten().collect();
    if let Some(r) = raw.register {
        match modicon(r) {
            Some(place) => places.push(place),
            None => {
                return Err(error(
                    "register",
                    format!("register {r} is not in the Modicon notation"),
                    "write 1-9999 (coils), 10001-19999 (discrete inputs), 30001-39999 (input \
                     registers) or 40001-49999 (holding registers), 1-based; or the 0-based \
                     protocol address with its table: `input: 6` for 30007",
                ))
            }
        }
    }
    let (table, address) =
        match places.as_slice() {
            [one] => *one,
            [] => return Err(error(
                "",
                format!("point `{}` says nowhere to read it", raw.name),
                "give its table and 0-based address (`holding: 0x0010`, `input: 6`, `coil: 0`, \
                 `discrete: 3`) or its 1-based Modicon register (`register: 40017`)",
            )),
            _ => {
                return Err(error(
                    "",
                    format!("point `{}` names more than one place to read it", raw.name),
                    "keep one of coil, discrete, input, holding and register",
                ))
            }
        };
    let kind = kind(raw, table)?;
    let decimals = raw.decimals.unwrap_or_else(|| match (raw.scale, raw.add) {
        (None, None) => 12,
        (s, a) => decimals_of(s.unwrap_or(1.0)).max(decimals_of(a.unwrap_or(0.0))),
    });
    let point = Point {
        name: raw.name.clone(),
        table,
        address,
        kind,
        scale: raw.scale,
        add: raw.add,
        decimals,
        unit: raw.unit.clone(),
        group: 0,
    };
    if point.end() > 65_536 {
        return Err(error(
            "",
            format!(
                "point `{}` runs past the last address (65535): {} registers from {}",
                raw.name,
                point.width(),
                address
            ),
            "check the address and the type",
        ));
    }
    Ok(point)
}

/// Sorts the points into read groups by their interval (`every`, else the unit's), fastest
/// first; returns each group's interval.
pub fn group(
    points: &mut [Point],
    intervals: &[Option<Duration>],
    unit_every: Duration,
) -> Vec<Duration> {
    let every = |i: usize| intervals.get(i).copied().flatten().unwrap_or(unit_every);
    let mut groups: Vec<Duration> = (0..points.len()).map(every).collect();
    groups.sort();
    groups.dedup();
    for (i, p) in points.iter_mut().enumerate() {
        p.group = groups.iter().position(|&g| g == every(i)).unwrap_or(0);
    }
    groups
}

/// The point's type, order, length and bit, checked against its table.
fn kind(raw: &ModbusPoint, table: Table) -> Result<Kind, PointError> {
    let ty = raw.type_.as_deref();
    if table.bits() {
        return match (ty, &raw.order, raw.length, raw.bit) {
            (None | Some("bool"), None, None | Some(1), None) => Ok(Kind::Bool),
            (None | Some("bits"), None, Some(n @ 2..=64), None) => Ok(Kind::Bits(n)),
            (None | Some("bits"), None, Some(n), None) => Err(error(
                "length",
                format!(
                    "point `{}`: {n} {} cannot be one value",
                    raw.name,
                    if table == Table::Coils { "coils" } else { "discrete inputs" }
                ),
                "write `length: 2` to `length: 64` (one number, the first address its least \
                 significant bit), or one point per bit",
            )),
            _ => Err(error(
                "type",
                format!(
                    "point `{}` is a {} (one bit, or `length: N` bits): it has no type, order or bit",
                    raw.name,
                    table.name()
                ),
                "remove those keys, or read a register (input, holding) instead",
            )),
        };
    }
    if let Some(bit) = raw.bit {
        if bit > 15 || !matches!(ty, None | Some("u16")) || raw.order.is_some() {
            return Err(error(
                "bit",
                format!("point `{}`: bit {bit} of a 16-bit register", raw.name),
                "write bit: 0 (least significant) to 15, with no type or type: u16",
            ));
        }
        return Ok(Kind::Bit(bit));
    }
    match ty.unwrap_or("u16") {
        "string" => match raw.length {
            Some(n @ 1..=125) if raw.order.is_none() => Ok(Kind::Text(n)),
            _ => Err(error(
                "length",
                format!(
                    "point `{}`: a string needs its length in registers",
                    raw.name
                ),
                "write e.g. `type: string, length: 8` (16 characters, 1 to 125 registers)",
            )),
        },
        "bool" => Err(error(
            "type",
            format!(
                "point `{}`: bool is the type of coils and discrete inputs",
                raw.name
            ),
            "read a coil or discrete input, or one bit of a register with `bit: N`",
        )),
        t => {
            let bits = t.trim_start_matches(['u', 'i', 'f']);
            let order = match (raw.order.as_deref(), bits) {
                (None, _) => "be",
                (Some(o), "32" | "64") if matches!(o, "abcd" | "cdab" | "badc" | "dcba") => o,
                (Some(o), _) => {
                    return Err(error(
                        "order",
                        format!("point `{}`: order `{o}` for type `{t}`", raw.name),
                        "orders are for 32- and 64-bit types: abcd (default), cdab (low word \
                         first), badc, dcba",
                    ))
                }
            };
            match FieldType::parse(&format!("{t}{order}")) {
                Some(ft) if ft.size() >= 2 && raw.length.is_none() => Ok(Kind::Number(ft)),
                _ => Err(error(
                    "type",
                    format!("point `{}`: unknown type `{t}`", raw.name),
                    "types: u16 i16 u32 i32 u64 i64 f32 f64 string (registers), bool (coils, \
                     discrete inputs)",
                )),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(yaml: &str) -> Result<Point, PointError> {
        let raw: ModbusPoint = serde_yaml::from_str(yaml).expect("point yaml");
        compile(&raw)
    }

    #[test]
    fn both_spellings_of_an_address_name_the_same_register() {
        let a = point("{name: v, register: 30007, type: f32}").unwrap();
        let b = point("{name: v, input: 0x0006, type: f32}").unwrap();
        assert_eq!((a.table, a.address), (Table::Input, 6));
        assert_eq!(a, b);
        assert_eq!(modicon(40001), Some((Table::Holding, 0)));
        assert_eq!(modicon(1), Some((Table::Coils, 0)));
        assert_eq!(modicon(10001), Some((Table::Discretes, 0)));
        assert_eq!(modicon(465_536), Some((Table::Holding, 65_535)));
        assert_eq!(modicon(20_001), None);
        assert_eq!(modicon(30_000), None);
    }

    #[test]
    fn types_orders_and_widths() {
        let p = point("{name: a, holding: 0, type: u32, order: cdab, scale: 0.001}").unwrap();
        assert_eq!((p.width(), p.decimals), (2, 3));
        assert_eq!(p.kind, Kind::Number(FieldType::parse("u32cdab").unwrap()));
        assert_eq!(point("{name: a, input: 0}").unwrap().width(), 1);
        assert_eq!(point("{name: a, input: 0, type: f64}").unwrap().width(), 4);
        assert_eq!(
            point("{name: s, holding: 0, type: string, length: 8}")
                .unwrap()
                .kind,
            Kind::Text(8)
        );
        assert_eq!(
            point("{name: b, holding: 0, bit: 3}").unwrap().kind,
            Kind::Bit(3)
        );
        assert_eq!(point("{name: c, coil: 0}").unwrap().kind, Kind::Bool);
    }

    #[test]
    fn mistakes_name_the_key_and_the_fix() {
        for (yaml, key, needle) in [
            ("{name: x}", "", "says nowhere"),
            ("{name: x, input: 1, holding: 1}", "", "more than one place"),
            ("{name: x, register: 20001}", "register", "Modicon"),
            ("{name: x, coil: 1, type: u16}", "type", "one bit"),
            (
                "{name: x, input: 1, type: u16, order: cdab}",
                "order",
                "32- and 64-bit",
            ),
            ("{name: x, input: 1, type: u12}", "type", "unknown type"),
            (
                "{name: x, input: 1, type: string}",
                "length",
                "length in registers",
            ),
            ("{name: x, input: 1, bit: 16}", "bit", "bit: 0"),
            (
                "{name: x, input: 65535, type: u32}",
                "",
                "past the last address",
            ),
        ] {
            let e = point(yaml).unwrap_err();
            assert_eq!(e.key, key, "{yaml}: {e:?}");
            assert!(
                format!("{} {}", e.message, e.help).contains(needle),
                "{yaml}: {e:?}"
            );
        }
    }
}

//! Points coalesced into as few read requests as the protocol allows: per table, sorted by
//! address, a point joins the current request when the registers between them are no more
//! than `max_gap` and the request stays within `max_registers` (125 by the protocol) or
//! `max_bits` (2000). Each request is built once, with its CRC.

use rmodbus::client::ModbusRequest;
use rmodbus::ModbusProto;

use super::map::{Point, Table};

/// How requests may be joined.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Unread registers (or bits) allowed between two points of one request.
    pub max_gap: u16,
    /// Registers per request.
    pub max_registers: u16,
    /// Bits per request.
    pub max_bits: u16,
}

/// One read request of the plan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// Its name: the poll's, and `{request}` in rules (`holding 0+10`).
    pub name: String,
    /// The table it reads.
    pub table: Table,
    /// First address read.
    pub start: u16,
    /// Registers (or bits) read.
    pub count: u16,
    /// The points it carries (indices into the unit's points).
    pub points: Vec<usize>,
    /// The read group of its points (they share their interval).
    pub group: usize,
    /// The request on the wire: unit, function, start, count, CRC.
    pub bytes: Vec<u8>,
}

/// The wire request reading `count` entries of `table` from `start` at `unit`.
pub fn read_request(unit: u8, table: Table, start: u16, count: u16) -> Vec<u8> {
    let mut req = ModbusRequest::new(unit, ModbusProto::Rtu);
    let mut bytes = Vec::with_capacity(8);
    // Fails only for counts the plan never makes (0, or above the protocol's limits).
    let _ = match table {
        Table::Coils => req.generate_get_coils(start, count, &mut bytes),
        Table::Discretes => req.generate_get_discretes(start, count, &mut bytes),
        Table::Holding => req.generate_get_holdings(start, count, &mut bytes),
        Table::Input => req.generate_get_inputs(start, count, &mut bytes),
    };
    bytes
}

/// The plan for `points` of `unit`: requests by read group, then in table and address order
/// (points of different groups never share a request).
pub fn plan(unit: u8, points: &[Point], limits: Limits) -> Vec<Request> {
    let mut order: Vec<usize> = (0..points.len()).collect();
    order.sort_by_key(|&i| {
        let p = &points[i];
        (p.group, p.table, p.address, p.end())
    });
    let mut requests: Vec<Request> = Vec::new();
    for i in order {
        let p = &points[i];
        let max = if p.table.bits() {
            limits.max_bits.clamp(1, 2000)
        } else {
            limits.max_registers.clamp(1, 125)
        };
        if let Some(r) = requests.last_mut() {
            let end = u32::from(r.start) + u32::from(r.count);
            let joins = r.group == p.group
                && r.table == p.table
                && u32::from(p.address) <= end + u32::from(limits.max_gap)
                && p.end().max(end) - u32::from(r.start) <= u32::from(max);
            if joins {
                r.count = (p.end().max(end) - u32::from(r.start)) as u16;
                r.points.push(i);
                continue;
            }
        }
        requests.push(Request {
            name: String::new(),
            table: p.table,
            start: p.address,
            count: p.width(),
            points: vec![i],
            group: p.group,
            bytes: Vec::new(),
        });
    }
    for r in &mut requests {
        r.name = format!("{} {}+{}", r.table.name(), r.start, r.count);
        r.bytes = read_request(unit, r.table, r.start, r.count);
    }
    requests
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::modbus::map::compile;

    fn points(yaml: &str) -> Vec<Point> {
        let raw: Vec<crate::config::schema::ModbusPoint> = serde_yaml::from_str(yaml).unwrap();
        raw.iter().map(|p| compile(p).unwrap()).collect()
    }

    const LIMITS: Limits = Limits {
        max_gap: 10,
        max_registers: 125,
        max_bits: 2000,
    };

    #[test]
    fn adjacent_and_near_points_share_a_request() {
        // SDM120-like: voltage 0, current 6, power 12 (f32 each), frequency 70, energy 342.
        let p = points(
            "[{name: v, input: 0, type: f32}, {name: a, input: 6, type: f32},
              {name: w, input: 12, type: f32}, {name: hz, input: 70, type: f32},
              {name: kwh, input: 342, type: f32}, {name: relay, coil: 0}, {name: id, holding: 20}]",
        );
        let plan = plan(1, &p, LIMITS);
        let shape: Vec<(&str, u16, u16, Vec<usize>)> = plan
            .iter()
            .map(|r| (r.table.name(), r.start, r.count, r.points.clone()))
            .collect();
        assert_eq!(
            shape,
            vec![
                ("coils", 0, 1, vec![5]),
                ("holding", 20, 1, vec![6]),
                ("input", 0, 14, vec![0, 1, 2]),
                ("input", 70, 2, vec![3]),
                ("input", 342, 2, vec![4]),
            ]
        );
        assert_eq!(plan[2].name, "input 0+14");
        // The request as Modbus puts it on the wire: 01 04 0000 000E CRC.
        assert_eq!(hex::encode(&plan[2].bytes), "01040000000e71ce");
    }

    #[test]
    fn a_request_never_exceeds_the_protocols_limits() {
        let many: Vec<String> = (0..300)
            .map(|i| format!("{{name: r{i}, holding: {i}}}"))
            .collect();
        let p = points(&format!("[{}]", many.join(",")));
        let plan = plan(7, &p, LIMITS);
        assert_eq!(
            plan.iter().map(|r| r.count).collect::<Vec<_>>(),
            vec![125, 125, 50]
        );
        let tight = Limits {
            max_gap: 0,
            ..LIMITS
        };
        let p = points("[{name: a, input: 0}, {name: b, input: 2}]");
        assert_eq!(
            super::plan(1, &p, tight).len(),
            2,
            "a gap of 1 with max_gap 0"
        );
        let p = points("[{name: a, input: 0}, {name: b, input: 0, type: u32}]");
        let plan = super::plan(1, &p, tight);
        assert_eq!(
            (plan.len(), plan[0].count),
            (1, 2),
            "overlapping points share"
        );
    }
}

//! Modbus answers on arbitrary bytes: the decoder never panics for any request of a map with
//! every kind of point, refuses what is not an answer to its request, and an answer built for
//! the request (the fuzz bytes as its data) always decodes, with one value per point.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serial2mqtt::config::schema::ModbusPoint;
use serial2mqtt::modbus::decode::decode;
use serial2mqtt::modbus::map::{compile, Point};
use serial2mqtt::modbus::plan::{plan, Limits, Request};

const MAP: &str = "[{name: a, holding: 0, type: f32}, {name: b, holding: 2, type: u32, order: cdab},
  {name: c, holding: 4, type: i16, scale: 0.1}, {name: d, holding: 5, bit: 15},
  {name: e, holding: 6, type: string, length: 3}, {name: f, holding: 9, type: f64, order: badc},
  {name: g, coil: 0}, {name: h, coil: 17}, {name: i, discrete: 3}, {name: j, input: 100, type: i64},
  {name: k, coil: 20, length: 12}, {name: l, discrete: 40, length: 64}]";

fn unit() -> &'static (Vec<Point>, Vec<Request>) {
    static UNIT: OnceLock<(Vec<Point>, Vec<Request>)> = OnceLock::new();
    UNIT.get_or_init(|| {
        let raw: Vec<ModbusPoint> = serde_yaml::from_str(MAP).expect("map");
        let points: Vec<Point> = raw.iter().map(|p| compile(p).expect("point")).collect();
        let limits = Limits { max_gap: 10, max_registers: 125, max_bits: 2000 };
        let requests = plan(7, &points, limits);
        (points, requests)
    })
}

fn crc(frame: &mut Vec<u8>) {
    let c = crc::Crc::<u16>::new(&crc::CRC_16_MODBUS).checksum(frame);
    frame.extend_from_slice(&c.to_le_bytes());
}

fuzz_target!(|data: &[u8]| {
    let (points, requests) = unit();
    let Some((&pick, rest)) = data.split_first() else {
        return;
    };
    let request = &requests[usize::from(pick) % requests.len()];
    // Arbitrary bytes as a whole frame: never a panic.
    let _ = decode(7, request, points, rest);
    // Arbitrary bytes as the data of a well-formed answer to this request.
    let needed = if request.table.bits() {
        usize::from(request.count).div_ceil(8)
    } else {
        usize::from(request.count) * 2
    };
    if rest.len() >= needed && needed <= 250 {
        let mut frame = vec![7, request.table as u8, needed as u8];
        frame.extend_from_slice(&rest[..needed]);
        crc(&mut frame);
        let values = decode(7, request, points, &frame).expect("a well-formed answer decodes");
        assert_eq!(values.len(), request.points.len(), "one value per point");
    }
});

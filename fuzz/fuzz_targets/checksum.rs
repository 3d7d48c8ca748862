//! Frame checksums on arbitrary frames: no preset or placement panics on any frame (short,
//! empty, markers anywhere, negative positions past the start), and a frame that carries the
//! value its algorithm computes always passes while one with a changed covered byte fails
//! (CRC-16/MODBUS, and UBX's 8-bit Fletcher, whose CK_A alone sees any one flipped bit).
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use serial2mqtt::frames::checksum::{Checksum, ChecksumSpec};

const SPECS: &[&str] = &[
    "nmea",
    "dsmr",
    "modbus",
    "mhz19",
    "sds011",
    "ubx",
    "sum8",
    "xor8",
    "neg8",
    "crc8/maxim-dow",
    "crc16/xmodem",
    "crc32",
    "fletcher8",
    "fletcher16",
    "{type: fletcher16, order: little, format: hex, from: -7, at: -4}",
    "{type: crc16/arc, from: -5, at: 1}",
    "{type: sum8, from: 3, to: 1}",
    "{type: xor8, marker: '!', include_marker: true, format: hex}",
    "{type: crc16/kermit, order: little, format: hex, at: -4}",
];

fuzz_target!(|data: &[u8]| {
    let Some((&selector, frame)) = data.split_first() else {
        return;
    };
    static SPECS_BUILT: OnceLock<Vec<Checksum>> = OnceLock::new();
    let specs = SPECS_BUILT.get_or_init(|| {
        SPECS
            .iter()
            .map(|s| serde_yaml::from_str::<ChecksumSpec>(s).expect("spec").compile())
            .collect()
    });
    for c in specs {
        let _ = c.verify(frame);
    }
    // Append the CRC-16/MODBUS of the frame (low byte first): it must verify, and any one
    // covered byte changed must not.
    let modbus = &specs[2];
    let crc = crc::Crc::<u16>::new(&crc::CRC_16_MODBUS).checksum(frame);
    let mut whole = frame.to_vec();
    whole.extend_from_slice(&crc.to_le_bytes());
    assert_eq!(modbus.verify(&whole), Ok(u32::from(crc)));
    if !frame.is_empty() {
        let i = usize::from(selector) % frame.len();
        whole[i] ^= 0x01;
        assert!(modbus.verify(&whole).is_err(), "a flipped bit passed CRC-16");
    }
    // The frame as a UBX frame's class through payload, behind B5 62 and before the CK_A,
    // CK_B the protocol description computes: it must verify, and not with one bit flipped.
    let ubx = &specs[5];
    let mut framed = vec![0xB5, 0x62];
    framed.extend_from_slice(frame);
    let (mut ck_a, mut ck_b) = (0u8, 0u8);
    for &b in frame {
        ck_a = ck_a.wrapping_add(b);
        ck_b = ck_b.wrapping_add(ck_a);
    }
    framed.extend_from_slice(&[ck_a, ck_b]);
    assert_eq!(
        ubx.verify(&framed),
        Ok((u32::from(ck_a) << 8) | u32::from(ck_b))
    );
    if !frame.is_empty() {
        let i = 2 + usize::from(selector) % frame.len();
        framed[i] ^= 1 << (selector % 8);
        assert!(ubx.verify(&framed).is_err(), "a flipped bit passed UBX's Fletcher");
    }
});

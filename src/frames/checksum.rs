//! Checksums that a frame carries, checked before any rule sees it: a frame that fails is never
//! published (counted as `bad_checksum`, logged with the expected and the received value).
//!
//! YAML (`checksum:` of a device or of a poll): a sensor's name (`nmea`, `dsmr`, `modbus`,
//! `mhz19`, `sds011`, `ubx`), an algorithm with the default layout (`sum8`, `crc16/modbus`,
//! `fletcher16`: the check value is the frame's last bytes and covers everything before it), or
//! a map that places it: `{type: sum8, from: 2, at: -2}`. Positions count from 0; negative ones
//! count from the end. A binary value wider than a byte is read most significant byte first
//! unless the map says `order: little` (Modbus RTU's CRC is low byte first: the `modbus` preset
//! says so).
//! The CRCs come from the `crc` crate's catalogue (the reveng names: `crc16/arc`,
//! `crc16/xmodem`, `crc8/maxim-dow`, ...), never from hand-written tables; the 8-bit sums are
//! one line each and need no crate. The Fletcher checksums are written here too: the `crc`
//! crate has none, and each is a two-line loop.
//!
//! Two-byte Fletcher values read as the bytes are on the wire by default: `fletcher8` (u-blox
//! UBX's CK_A, CK_B) is `CK_A << 8 | CK_B`, so a log's `expected 0x0F38` is CK_A 0x0F then
//! CK_B 0x38; `fletcher16` is `sum2 << 8 | sum1`, as the classic Fletcher-16 is written.

use std::fmt;
use std::sync::Arc;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::Deserialize;

/// The sensor presets, for messages and docs.
pub const PRESETS: &[&str] = &["nmea", "dsmr", "modbus", "mhz19", "sds011", "ubx"];

/// The arithmetic of a check value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// The low byte of the sum of the covered bytes.
    Sum8,
    /// The sum of the covered bytes mod 65536, two bytes (Plantower PMS frames).
    Sum16,
    /// XOR of the covered bytes (NMEA 0183).
    Xor8,
    /// The two's complement of the 8-bit sum: covered bytes plus check value sum to 0 (MH-Z19).
    Neg8,
    /// An 8-bit CRC of the catalogue.
    Crc8(&'static crc::Algorithm<u8>),
    /// A 16-bit CRC of the catalogue.
    Crc16(&'static crc::Algorithm<u16>),
    /// A 32-bit CRC of the catalogue.
    Crc32(&'static crc::Algorithm<u32>),
    /// u-blox UBX's 8-bit Fletcher: CK_A sums the bytes, CK_B sums the running CK_A, both mod
    /// 256; the value is `CK_A << 8 | CK_B` (CK_A first on the wire). Unlike `sum8` (CK_A
    /// alone) it sees two errors that cancel in the sum, and bytes swapped.
    Fletcher8,
    /// The classic Fletcher-16: two sums mod 255, the value `sum2 << 8 | sum1`.
    Fletcher16,
}

/// Catalogue names (as reveng spells them, lower case, without `-`) and common aliases.
const CATALOGUE: &[(&str, Algorithm)] = &[
    ("sum8", Algorithm::Sum8),
    ("sum16", Algorithm::Sum16),
    ("xor8", Algorithm::Xor8),
    ("neg8", Algorithm::Neg8),
    ("twos_complement8", Algorithm::Neg8),
    ("crc8/smbus", Algorithm::Crc8(&crc::CRC_8_SMBUS)),
    ("crc8", Algorithm::Crc8(&crc::CRC_8_SMBUS)),
    ("crc8/maximdow", Algorithm::Crc8(&crc::CRC_8_MAXIM_DOW)),
    ("crc8/maxim", Algorithm::Crc8(&crc::CRC_8_MAXIM_DOW)),
    ("crc8/dallas", Algorithm::Crc8(&crc::CRC_8_MAXIM_DOW)),
    ("crc8/autosar", Algorithm::Crc8(&crc::CRC_8_AUTOSAR)),
    ("crc8/saej1850", Algorithm::Crc8(&crc::CRC_8_SAE_J1850)),
    ("crc8/nrsc5", Algorithm::Crc8(&crc::CRC_8_NRSC_5)),
    ("crc16/modbus", Algorithm::Crc16(&crc::CRC_16_MODBUS)),
    ("crc16/arc", Algorithm::Crc16(&crc::CRC_16_ARC)),
    ("crc16/ibm", Algorithm::Crc16(&crc::CRC_16_ARC)),
    ("crc16/xmodem", Algorithm::Crc16(&crc::CRC_16_XMODEM)),
    ("crc16/zmodem", Algorithm::Crc16(&crc::CRC_16_XMODEM)),
    ("crc16/kermit", Algorithm::Crc16(&crc::CRC_16_KERMIT)),
    ("crc16/ccitt", Algorithm::Crc16(&crc::CRC_16_KERMIT)),
    ("crc16/ccitttrue", Algorithm::Crc16(&crc::CRC_16_KERMIT)),
    ("crc16/ibm3740", Algorithm::Crc16(&crc::CRC_16_IBM_3740)),
    ("crc16/ccittfalse", Algorithm::Crc16(&crc::CRC_16_IBM_3740)),
    ("crc16/ibmsdlc", Algorithm::Crc16(&crc::CRC_16_IBM_SDLC)),
    ("crc16/x25", Algorithm::Crc16(&crc::CRC_16_IBM_SDLC)),
    ("crc16/maximdow", Algorithm::Crc16(&crc::CRC_16_MAXIM_DOW)),
    ("crc16/usb", Algorithm::Crc16(&crc::CRC_16_USB)),
    ("crc16/dnp", Algorithm::Crc16(&crc::CRC_16_DNP)),
    ("crc16/en13757", Algorithm::Crc16(&crc::CRC_16_EN_13757)),
    ("crc16/genibus", Algorithm::Crc16(&crc::CRC_16_GENIBUS)),
    ("crc32/isohdlc", Algorithm::Crc32(&crc::CRC_32_ISO_HDLC)),
    ("crc32", Algorithm::Crc32(&crc::CRC_32_ISO_HDLC)),
    ("crc32/iscsi", Algorithm::Crc32(&crc::CRC_32_ISCSI)),
    ("crc32c", Algorithm::Crc32(&crc::CRC_32_ISCSI)),
    ("crc32/bzip2", Algorithm::Crc32(&crc::CRC_32_BZIP2)),
    ("crc32/mpeg2", Algorithm::Crc32(&crc::CRC_32_MPEG_2)),
    ("fletcher8", Algorithm::Fletcher8),
    ("fletcher16", Algorithm::Fletcher16),
];

impl Algorithm {
    /// Looks a name up: `crc16/modbus`, `CRC-16/MODBUS` and `crc_16_modbus` are one name.
    pub fn by_name(name: &str) -> Option<Algorithm> {
        let key = normalize(name);
        CATALOGUE
            .iter()
            .find(|(n, _)| normalize(n) == key)
            .map(|(_, a)| *a)
    }

    /// Its catalogue name (`crc16/modbus`), for logs.
    pub fn name(self) -> &'static str {
        CATALOGUE
            .iter()
            .find(|(_, a)| *a == self)
            .map_or("checksum", |(n, _)| *n)
    }

    /// Bytes of the check value.
    pub fn width(self) -> usize {
        match self {
            Algorithm::Sum8 | Algorithm::Xor8 | Algorithm::Neg8 | Algorithm::Crc8(_) => 1,
            Algorithm::Crc16(_)
            | Algorithm::Sum16
            | Algorithm::Fletcher8
            | Algorithm::Fletcher16 => 2,
            Algorithm::Crc32(_) => 4,
        }
    }
}

/// `CRC-16/MODBUS` → `crc16modbus`: case, `-`, `_`, `/` and spaces do not matter.
fn normalize(name: &str) -> String {
    name.chars()
        .filter(|c| !matches!(c, '-' | '_' | ' ' | '/'))
        .flat_map(char::to_lowercase)
        .collect()
}

/// How the check value is written in the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Raw bytes.
    #[default]
    Binary,
    /// ASCII hex digits, two per byte, either case (NMEA `*47`, DSMR `!6A3F`).
    Hex,
}

/// Byte order of a binary check value wider than one byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Order {
    /// Most significant byte first.
    #[default]
    Big,
    /// Least significant byte first (Modbus RTU's CRC).
    Little,
}

/// Where the check value sits and what it covers, as written in YAML: the value of `checksum:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChecksumSpec {
    /// What the user wrote (a preset or algorithm name), for messages; empty for a map.
    pub label: String,
    /// The arithmetic.
    pub algorithm: Algorithm,
    /// First covered byte (negative: from the end).
    pub from: i64,
    /// End of the covered bytes, exclusive (default: where the check value starts).
    pub to: Option<i64>,
    /// Where the check value starts (default: the frame's last bytes).
    pub at: Option<i64>,
    /// The check value follows the last occurrence of this byte (NMEA `*`, DSMR `!`).
    pub marker: Option<u8>,
    /// Whether the covered bytes include the marker (DSMR: yes; NMEA: no).
    pub include_marker: bool,
    /// Byte order of a binary value.
    pub order: Order,
    /// Binary bytes or hex digits.
    pub format: Format,
    /// Bytes one of which the frame must start with (NMEA: `$` or `!`); empty: any.
    pub lead: &'static [u8],
}

impl ChecksumSpec {
    /// The default layout of an algorithm: the value at the end, covering everything before.
    fn plain(label: &str, algorithm: Algorithm) -> Self {
        Self {
            label: label.to_owned(),
            algorithm,
            from: 0,
            to: None,
            at: None,
            marker: None,
            include_marker: false,
            order: Order::Big,
            format: Format::Binary,
            lead: b"",
        }
    }

    /// A sensor preset or an algorithm name.
    pub fn named(name: &str) -> Option<Self> {
        let spec = match normalize(name).as_str() {
            // `$GPGGA,...*47`: XOR of the bytes between `$` (or `!`) and `*`, as two hex digits.
            // Only a sentence is checked: bytes before its `$` (or `!`) are not one, even when
            // they happen to XOR to its check value.
            "nmea" => Self {
                from: 1,
                marker: Some(b'*'),
                format: Format::Hex,
                lead: b"$!",
                ..Self::plain(name, Algorithm::Xor8)
            },
            // DSMR P1: CRC-16/ARC from `/` through `!`, as four hex digits after the `!`.
            "dsmr" => Self {
                marker: Some(b'!'),
                include_marker: true,
                format: Format::Hex,
                ..Self::plain(name, Algorithm::Crc16(&crc::CRC_16_ARC))
            },
            // Modbus RTU: CRC-16/MODBUS of everything before it, low byte first.
            "modbus" => Self {
                order: Order::Little,
                ..Self::plain(name, Algorithm::Crc16(&crc::CRC_16_MODBUS))
            },
            // `FF 86 .. .. .. .. .. .. CS`: CS makes bytes 1..=7 plus CS sum to 0.
            "mhz19" => Self {
                from: 1,
                ..Self::plain(name, Algorithm::Neg8)
            },
            // `AA C0 D1 D2 D3 D4 D5 D6 CS AB`: CS is the 8-bit sum of D1..D6.
            "sds011" => Self {
                from: 2,
                at: Some(-2),
                ..Self::plain(name, Algorithm::Sum8)
            },
            // u-blox UBX: `B5 62 class id len_lo len_hi payload CK_A CK_B`; the 8-bit Fletcher
            // over class through payload (after the sync bytes), CK_A then CK_B.
            "ubx" => Self {
                from: 2,
                ..Self::plain(name, Algorithm::Fletcher8)
            },
            _ => Self::plain(name, Algorithm::by_name(name)?),
        };
        Some(spec)
    }

    /// Builds the checker (a CRC's lookup table is made here, once per config).
    pub fn compile(&self) -> Checksum {
        let engine = match self.algorithm {
            Algorithm::Crc8(a) => Engine::Crc8(Arc::new(crc::Crc::<u8>::new(a))),
            Algorithm::Crc16(a) => Engine::Crc16(Arc::new(crc::Crc::<u16>::new(a))),
            Algorithm::Crc32(a) => Engine::Crc32(Arc::new(crc::Crc::<u32>::new(a))),
            Algorithm::Sum8 => Engine::Sum8,
            Algorithm::Sum16 => Engine::Sum16,
            Algorithm::Xor8 => Engine::Xor8,
            Algorithm::Neg8 => Engine::Neg8,
            Algorithm::Fletcher8 => Engine::Fletcher8,
            Algorithm::Fletcher16 => Engine::Fletcher16,
        };
        Checksum {
            spec: self.clone(),
            engine,
        }
    }

    /// A short name for logs and `test-rule`: the preset or algorithm the user wrote.
    pub fn name(&self) -> String {
        if self.label.is_empty() {
            self.algorithm.name().to_owned()
        } else {
            self.label.clone()
        }
    }
}

/// A compiled checksum: the spec and its engine.
#[derive(Clone)]
pub struct Checksum {
    spec: ChecksumSpec,
    engine: Engine,
}

impl fmt::Debug for Checksum {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Checksum").field(&self.spec).finish()
    }
}

/// The arithmetic, with a CRC's table built.
#[derive(Clone)]
enum Engine {
    Sum8,
    Sum16,
    Xor8,
    Neg8,
    Crc8(Arc<crc::Crc<u8>>),
    Crc16(Arc<crc::Crc<u16>>),
    Crc32(Arc<crc::Crc<u32>>),
    Fletcher8,
    Fletcher16,
}

/// u-blox UBX's checksum (the 8-bit Fletcher of its protocol description): `CK_A << 8 | CK_B`.
fn fletcher8(bytes: &[u8]) -> u32 {
    let (a, b) = bytes.iter().fold((0u8, 0u8), |(a, b), x| {
        let a = a.wrapping_add(*x);
        (a, b.wrapping_add(a))
    });
    (u32::from(a) << 8) | u32::from(b)
}

/// The classic Fletcher-16: `sum2 << 8 | sum1`, both sums mod 255.
fn fletcher16(bytes: &[u8]) -> u32 {
    let (a, b) = bytes.iter().fold((0u32, 0u32), |(a, b), x| {
        let a = (a + u32::from(*x)) % 255;
        (a, (b + a) % 255)
    });
    (b << 8) | a
}

/// Why a frame failed its check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// The values differ.
    Mismatch {
        /// Computed over the covered bytes.
        expected: u32,
        /// Read from the frame.
        received: u32,
        /// Bytes of the value (for printing).
        width: usize,
    },
    /// The frame has no place for the value (too short, no marker, not hex digits).
    Missing(&'static str),
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Mismatch {
                expected,
                received,
                width,
            } => {
                let w = width * 2;
                write!(f, "expected 0x{expected:0w$X}, received 0x{received:0w$X}")
            }
            Failure::Missing(why) => f.write_str(why),
        }
    }
}

impl Checksum {
    /// The spec it was built from.
    pub fn spec(&self) -> &ChecksumSpec {
        &self.spec
    }

    /// Where a binary check value that ends `frame` starts (None: the value is hex text, sits
    /// elsewhere, or the frame is too short). Text rules see the frame without it: raw check
    /// bytes are no text (VE.Direct's closing byte is 0x80-0xFF in half of its blocks).
    pub fn binary_trailer(&self, frame: &[u8]) -> Option<usize> {
        let s = &self.spec;
        if s.format != Format::Binary || s.marker.is_some() {
            return None;
        }
        let (n, len) = (frame.len() as i64, s.algorithm.width() as i64);
        let at = self.value_at(n, len);
        (at >= 0 && at + len == n).then_some(at as usize)
    }

    /// Where the check value of `len` bytes starts in a frame of `n` bytes, for a value placed
    /// by position (`at`, default the last bytes; negative counts from the end).
    fn value_at(&self, n: i64, len: i64) -> i64 {
        match self.spec.at {
            Some(i) if i < 0 => n + i,
            Some(i) => i,
            None => n - len,
        }
    }

    /// A check value as `test-rule` and the dashboard show it: two hex digits a byte, as the
    /// mismatch message writes them (UBX's `0x0F38` is CK_A 0x0F then CK_B 0x38, never `0xF38`).
    pub fn show(&self, value: u32) -> String {
        let w = self.spec.algorithm.width() * 2;
        format!("0x{value:0w$X}")
    }

    /// Checks a frame; Ok carries the check value for `test-rule`.
    pub fn verify(&self, frame: &[u8]) -> Result<u32, Failure> {
        let s = &self.spec;
        if !s.lead.is_empty() && !frame.first().is_some_and(|b| s.lead.contains(b)) {
            return Err(Failure::Missing(
                "the frame does not start as its protocol's do",
            ));
        }
        let width = s.algorithm.width();
        let len = match s.format {
            Format::Binary => width,
            Format::Hex => width * 2,
        };
        let n = frame.len() as i64;
        let resolve = |i: i64| if i < 0 { n + i } else { i };
        let (from, to, at) = match s.marker {
            Some(m) => {
                let Some(pos) = memchr::memrchr(m, frame) else {
                    return Err(Failure::Missing("the frame has no checksum marker"));
                };
                let pos = pos as i64;
                let end = if s.include_marker { pos + 1 } else { pos };
                (resolve(s.from), end, pos + 1)
            }
            None => {
                let at = self.value_at(n, len as i64);
                (resolve(s.from), s.to.map_or(at, resolve), at)
            }
        };
        if from < 0 || from > to || to > n || at < 0 || at + len as i64 > n {
            return Err(Failure::Missing("the frame is too short for its checksum"));
        }
        let covered = &frame[from as usize..to as usize];
        let field = &frame[at as usize..at as usize + len];
        let received = match s.format {
            Format::Binary => {
                let mut v = 0u32;
                for i in 0..width {
                    let b = match s.order {
                        Order::Big => field[i],
                        Order::Little => field[width - 1 - i],
                    };
                    v = (v << 8) | u32::from(b);
                }
                v
            }
            Format::Hex => std::str::from_utf8(field)
                .ok()
                .filter(|t| t.bytes().all(|b| b.is_ascii_hexdigit()))
                .and_then(|t| u32::from_str_radix(t, 16).ok())
                .ok_or(Failure::Missing("the checksum is not hex digits"))?,
        };
        let expected = match &self.engine {
            Engine::Sum8 => u32::from(covered.iter().fold(0u8, |a, b| a.wrapping_add(*b))),
            Engine::Sum16 => u32::from(
                covered
                    .iter()
                    .fold(0u16, |a, b| a.wrapping_add(u16::from(*b))),
            ),
            Engine::Xor8 => u32::from(covered.iter().fold(0u8, |a, b| a ^ b)),
            Engine::Neg8 => {
                u32::from(0u8.wrapping_sub(covered.iter().fold(0u8, |a, b| a.wrapping_add(*b))))
            }
            Engine::Crc8(c) => u32::from(c.checksum(covered)),
            Engine::Crc16(c) => u32::from(c.checksum(covered)),
            Engine::Crc32(c) => c.checksum(covered),
            Engine::Fletcher8 => fletcher8(covered),
            Engine::Fletcher16 => fletcher16(covered),
        };
        if expected == received {
            Ok(received)
        } else {
            Err(Failure::Mismatch {
                expected,
                received,
                width,
            })
        }
    }
}

/// The map form of `checksum:`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Custom {
    #[serde(rename = "type")]
    type_: String,
    #[serde(default)]
    from: i64,
    to: Option<i64>,
    at: Option<i64>,
    marker: Option<String>,
    #[serde(default)]
    include_marker: bool,
    order: Option<Order>,
    #[serde(default)]
    format: Format,
}

fn unknown_name(name: &str) -> String {
    let names: Vec<&str> = PRESETS
        .iter()
        .copied()
        .chain(CATALOGUE.iter().map(|(n, _)| *n))
        .collect();
    let near = crate::config::diagnostics::suggest(name, names.iter().copied())
        .map(|s| format!("did you mean `{s}`? "))
        .unwrap_or_default();
    format!(
        "unknown checksum `{name}`: {near}write a sensor ({}), an \
         algorithm (sum8, sum16, xor8, neg8, fletcher8, fletcher16, crc8/smbus, crc8/maxim-dow, \
         crc16/modbus, crc16/arc, crc16/xmodem, crc16/kermit, crc16/ibm-3740, crc32, ...), or \
         a map such as `{{type: sum8, from: 2, at: -2}}`",
        PRESETS.join(", ")
    )
}

impl<'de> Deserialize<'de> for ChecksumSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(SpecVisitor)
    }
}

/// Visitor behind `ChecksumSpec`'s Deserialize: a name or a map.
struct SpecVisitor;

impl<'de> Visitor<'de> for SpecVisitor {
    type Value = ChecksumSpec;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a checksum: `nmea`, `crc16/modbus`, or `{type: sum8, from: 2, at: -2}`")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<ChecksumSpec, E> {
        ChecksumSpec::named(v).ok_or_else(|| E::custom(unknown_name(v)))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<ChecksumSpec, A::Error> {
        let c = Custom::deserialize(de::value::MapAccessDeserializer::new(map))?;
        let Some(algorithm) = Algorithm::by_name(&c.type_) else {
            return Err(de::Error::custom(unknown_name(&c.type_)));
        };
        let marker = match c.marker.as_deref() {
            None => None,
            Some(m) if m.len() == 1 => m.bytes().next(),
            Some(m) => {
                return Err(de::Error::custom(format_args!(
                    "marker `{m}` must be one character, e.g. `marker: \"*\"`"
                )))
            }
        };
        if marker.is_some() && (c.at.is_some() || c.to.is_some()) {
            return Err(de::Error::custom(
                "with `marker` the check value follows the marker: leave out `at` and `to`",
            ));
        }
        Ok(ChecksumSpec {
            label: String::new(),
            algorithm,
            from: c.from,
            to: c.to,
            at: c.at,
            marker,
            include_marker: c.include_marker,
            lead: b"",
            order: c.order.unwrap_or(Order::Big),
            format: c.format,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(spec: &str, frame: &[u8]) -> Result<u32, Failure> {
        let spec: ChecksumSpec = serde_yaml::from_str(spec).unwrap();
        spec.compile().verify(frame)
    }

    #[test]
    fn nmea_sentences_from_a_receiver() {
        let good = b"$GPGGA,123519,4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47";
        assert_eq!(check("nmea", good), Ok(0x47));
        assert_eq!(
            check(
                "nmea",
                b"$GPRMC,123519,A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W*6a"
            ),
            Ok(0x6A)
        );
        let bad = b"$GPGGA,123519,4807.039,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,*47";
        assert_eq!(
            check("nmea", bad),
            Err(Failure::Mismatch {
                expected: 0x46,
                received: 0x47,
                width: 1
            })
        );
        assert!(matches!(
            check("nmea", b"$GPGGA,123519"),
            Err(Failure::Missing(_))
        ));
        assert!(matches!(
            check("nmea", b"$GPGGA,123519*4"),
            Err(Failure::Missing(_))
        ));
        assert!(matches!(
            check("nmea", b"$GPGGA,123519*ZZ"),
            Err(Failure::Missing(_))
        ));
        // Junk before a sentence whose bytes XOR to nothing (07 07) leaves the XOR from byte 1
        // unchanged: only the missing `$` tells it from a sentence.
        let mut led = b"Z\x07\x07".to_vec();
        led.extend_from_slice(&good[1..]);
        assert!(
            matches!(check("nmea", &led), Err(Failure::Missing(_))),
            "{led:?}"
        );
    }

    #[test]
    fn sum16_is_the_whole_sum_in_two_bytes() {
        // A Plantower PMS5003 frame: 42 4D, length 28, 13 data words, the sum of every byte
        // before the check, high byte first.
        let frame = hex::decode("424d001c0005000c000f0005000c000f04b0015e003c000800020001970002dc")
            .unwrap();
        assert_eq!(check("sum16", &frame), Ok(0x02dc));
        // The high byte matters: a sum off by 256 (what sum8 would not see) fails.
        let mut off = frame.clone();
        off[30] = 0x01;
        assert!(matches!(
            check("sum16", &off),
            Err(Failure::Mismatch {
                expected: 0x02dc,
                received: 0x01dc,
                width: 2
            })
        ));
    }

    #[test]
    fn mhz19_and_sds011_answers() {
        // MH-Z19 read command and an answer of 1280 ppm (the datasheet's examples).
        assert_eq!(
            check("mhz19", &hex::decode("ff0186000000000079").unwrap()),
            Ok(0x79)
        );
        assert_eq!(
            check("mhz19", &hex::decode("ff8605000000000075").unwrap()),
            Ok(0x75)
        );
        assert!(check("mhz19", &hex::decode("ff8605010000000075").unwrap()).is_err());
        // SDS011: PM2.5 = 0x00D4, PM10 = 0x01F4, id A1 60: sum of D1..D6 = 0x8A... computed.
        let mut f = hex::decode("aac0d400f401a16000ab").unwrap();
        f[8] = f[2..8].iter().fold(0u8, |a, b| a.wrapping_add(*b));
        assert!(check("sds011", &f).is_ok());
        f[3] ^= 0x10;
        assert!(check("sds011", &f).is_err());
    }

    #[test]
    fn modbus_crc_is_low_byte_first() {
        // Read holding registers 0..2 of unit 1: 01 03 00 00 00 02, CRC C4 0B on the wire.
        assert_eq!(
            check("modbus", &hex::decode("010300000002c40b").unwrap()),
            Ok(0x0BC4)
        );
        assert!(check("modbus", &hex::decode("010300000002c40c").unwrap()).is_err());
        assert_eq!(
            check("crc16/modbus", &hex::decode("0103000000020bc4").unwrap()),
            Ok(0x0BC4)
        );
    }

    #[test]
    fn dsmr_crc_covers_slash_through_bang() {
        let body = "/ISK5\\2M550T-1012\r\n\r\n1-0:1.8.1(000123.456*kWh)\r\n!";
        let crc = crc::Crc::<u16>::new(&crc::CRC_16_ARC).checksum(body.as_bytes());
        let telegram = format!("{body}{crc:04X}");
        assert_eq!(check("dsmr", telegram.as_bytes()), Ok(u32::from(crc)));
        let lower = format!("{body}{crc:04x}");
        assert!(check("dsmr", lower.as_bytes()).is_ok());
        let flipped = telegram.replace("123.456", "123.457");
        assert!(check("dsmr", flipped.as_bytes()).is_err());
    }

    /// A UBX frame: sync, class, id, the payload's length (little endian), payload, and the
    /// check bytes computed as the u-blox protocol description says (not by `fletcher8`).
    fn ubx(class: u8, id: u8, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0xB5, 0x62, class, id];
        f.extend_from_slice(&(payload.len() as u16).to_le_bytes());
        f.extend_from_slice(payload);
        let (mut ck_a, mut ck_b) = (0u8, 0u8);
        for &b in &f[2..] {
            ck_a = ck_a.wrapping_add(b);
            ck_b = ck_b.wrapping_add(ck_a);
        }
        f.extend_from_slice(&[ck_a, ck_b]);
        f
    }

    #[test]
    fn ubx_ack_from_the_protocol_description() {
        // UBX-ACK-ACK of CFG-MSG (06 01): CK_A = 05+01+02+00+06+01 = 0x0F, CK_B = 5+6+8+8+14+15
        // = 56 = 0x38.
        let ack = hex::decode("b562050102000601 0f38".replace(' ', "")).unwrap();
        assert_eq!(ack, ubx(0x05, 0x01, &[0x06, 0x01]));
        assert_eq!(check("ubx", &ack), Ok(0x0F38));
        // The same check, placed by hand.
        assert_eq!(
            check("{type: fletcher8, from: 2, at: -2}", &ack),
            Ok(0x0F38)
        );
        // Swapped check bytes, and CK_A alone (what `sum8` saw), are refused.
        let mut swapped = ack.clone();
        swapped.swap(8, 9);
        assert_eq!(
            check("ubx", &swapped),
            Err(Failure::Mismatch {
                expected: 0x0F38,
                received: 0x380F,
                width: 2
            })
        );
        assert!(check("ubx", &ack[..9]).is_err());
        assert!(matches!(check("ubx", &ack[..3]), Err(Failure::Missing(_))));
    }

    /// A NAV-PVT frame (class 01, id 07, 92 bytes of payload) with latitude `lat` (1e-7 degrees,
    /// i4 at payload offset 28).
    fn nav_pvt(lat: i32) -> Vec<u8> {
        let mut payload: Vec<u8> = (0..92u8).map(|i| i.wrapping_mul(29)).collect();
        payload[28..32].copy_from_slice(&lat.to_le_bytes());
        ubx(0x01, 0x07, &payload)
    }

    #[test]
    fn ubx_nav_pvt_with_compensating_errors_is_refused() {
        let good = nav_pvt(481_173_000);
        assert_eq!(good.len(), 100);
        assert!(check("ubx", &good).is_ok());
        // One byte of the latitude one up, the next one down: the sum (CK_A) stays, and the
        // latitude moves by -0xFF00 * 1e-7 degrees (about 730 m north to south). `sum8` at the
        // same place (CK_A alone) passed it; the Fletcher's CK_B does not.
        let mut bad = good.clone();
        bad[6 + 29] = bad[6 + 29].wrapping_add(1);
        bad[6 + 30] = bad[6 + 30].wrapping_sub(1);
        let lat = |f: &[u8]| i32::from_le_bytes([f[34], f[35], f[36], f[37]]);
        assert_eq!(lat(&bad) - lat(&good), -0xFF00);
        assert!(check("{type: sum8, from: 2, at: -2}", &bad).is_ok());
        let Err(Failure::Mismatch {
            expected, received, ..
        }) = check("ubx", &bad)
        else {
            panic!("a wrong CK_B passed");
        };
        assert_eq!(expected >> 8, received >> 8, "CK_A is the same");
        assert_ne!(expected & 0xFF, received & 0xFF, "CK_B differs");
        assert_eq!(
            check("ubx", &bad).unwrap_err().to_string(),
            format!("expected 0x{expected:04X}, received 0x{received:04X}")
        );
    }

    #[test]
    fn fletcher16_known_values() {
        // The classic vectors: "abcde" → 0xC8F0, "abcdef" → 0x2057, "abcdefgh" → 0x0627.
        for (text, value) in [
            ("abcde", 0xC8F0u16),
            ("abcdef", 0x2057),
            ("abcdefgh", 0x0627),
        ] {
            let mut frame = text.as_bytes().to_vec();
            frame.extend_from_slice(&value.to_be_bytes());
            assert_eq!(check("fletcher16", &frame), Ok(u32::from(value)), "{text}");
            assert_eq!(check("Fletcher-16", &frame), Ok(u32::from(value)), "{text}");
            // Low byte first when the map says so.
            let n = frame.len();
            frame.swap(n - 2, n - 1);
            assert!(check("fletcher16", &frame).is_err());
            assert_eq!(
                check("{type: fletcher16, order: little}", &frame),
                Ok(u32::from(value))
            );
        }
        // As four hex digits.
        assert_eq!(
            check("{type: fletcher16, format: hex}", b"abcdeC8F0"),
            Ok(0xC8F0)
        );
    }

    #[test]
    fn sixteen_bit_values_in_either_byte_order() {
        // CRC-16/MODBUS is low byte first on the wire, CRC-16/XMODEM high byte first: both
        // are expressible, and a bad `order` names the key.
        assert_eq!(
            check(
                "{type: crc16/modbus, order: little}",
                &hex::decode("010300000002c40b").unwrap()
            ),
            Ok(0x0BC4)
        );
        assert_eq!(
            check("{type: crc16/xmodem, order: big}", b"123456789\x31\xC3"),
            Ok(0x31C3)
        );
        assert_eq!(check("crc16/xmodem", b"123456789\x31\xC3"), Ok(0x31C3));
        let err = serde_yaml::from_str::<ChecksumSpec>("{type: crc16/modbus, order: middle}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("middle") && err.contains("little"), "{err}");
    }

    #[test]
    fn names_and_maps() {
        assert!(ChecksumSpec::named("CRC-16/XMODEM").is_some());
        assert!(ChecksumSpec::named("crc_16_ccitt_false").is_some());
        let err = serde_yaml::from_str::<ChecksumSpec>("crc16/modbis").unwrap_err();
        assert!(
            err.to_string().contains("did you mean `crc16/modbus`"),
            "{err}"
        );
        assert_eq!(
            check(
                "{type: xor8, from: 1, at: 3, to: 3}",
                &[0xAA, 1, 2, 3, 0xBB]
            ),
            Ok(3)
        );
        assert_eq!(
            check("{type: crc16/xmodem, order: little}", b"123456789\xC3\x31"),
            Ok(0x31C3)
        );
        assert!(serde_yaml::from_str::<ChecksumSpec>("{type: sum8, marker: '*', at: 2}").is_err());
        assert!(serde_yaml::from_str::<ChecksumSpec>("{type: sum8, colour: 2}").is_err());
    }

    #[test]
    fn no_input_panics() {
        let all: Vec<Checksum> = PRESETS
            .iter()
            .chain(
                [
                    "{type: crc32, from: -3, at: 1}",
                    "{type: sum8, from: 5, to: 2}",
                    "fletcher8",
                    "fletcher16",
                    "{type: fletcher16, from: -1, at: 0, format: hex}",
                ]
                .iter(),
            )
            .map(|s| serde_yaml::from_str::<ChecksumSpec>(s).unwrap().compile())
            .collect();
        for len in 0..12 {
            let frame: Vec<u8> = (0..len).map(|i| (i * 37) as u8).collect();
            for c in &all {
                let _ = c.verify(&frame);
                let _ = c.verify(b"*!");
            }
        }
    }
}

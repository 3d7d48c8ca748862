//! Binary fields: numbers read from fixed offsets of a binary frame, then scaled.
//!
//! 32- and 64-bit values come in the four orders meters store them in, named as Modbus
//! documentation names them by the bytes A (most significant) to D: `abcd` (big-endian),
//! `dcba` (little-endian), `cdab` (16-bit words low word first, each word big-endian: the
//! "word swapped" order of many meters) and `badc` (words in order, bytes swapped in each).

use super::template::Num;

/// How a field's bytes encode a number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FieldType {
    kind: Kind,
    size: usize,
    order: Order,
}

/// The order of a value's bytes in the frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Order {
    /// `be`, `abcd`: most significant byte first.
    Big,
    /// `le`, `dcba`: least significant byte first.
    Little,
    /// `cdab`: 16-bit words least significant first, each word big-endian.
    WordsSwapped,
    /// `badc`: 16-bit words most significant first, each word little-endian.
    BytesSwapped,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Unsigned,
    Signed,
    Float,
}

/// Every `type:` a field may have.
pub const TYPE_NAMES: [&str; 46] = [
    "u8", "i8", "u16le", "u16be", "i16le", "i16be", "u32le", "u32be", "i32le", "i32be", "u64le",
    "u64be", "i64le", "i64be", "f32le", "f32be", "f64le", "f64be", "u16", "i16", "u32", "i32",
    "u32abcd", "u32dcba", "u32cdab", "u32badc", "i32abcd", "i32dcba", "i32cdab", "i32badc",
    "f32abcd", "f32dcba", "f32cdab", "f32badc", "u64abcd", "u64dcba", "u64cdab", "u64badc",
    "i64abcd", "i64dcba", "i64cdab", "i64badc", "f64abcd", "f64dcba", "f64cdab", "f64badc",
];

impl FieldType {
    /// Parses `u16le`, `i32be`, `f32le`, `u8`…; a bare `u16` means big-endian (network order).
    pub fn parse(name: &str) -> Option<Self> {
        let (kind, rest) = match name.as_bytes().first()? {
            b'u' => (Kind::Unsigned, &name[1..]),
            b'i' => (Kind::Signed, &name[1..]),
            b'f' => (Kind::Float, &name[1..]),
            _ => return None,
        };
        let suffixes = [
            ("le", Order::Little),
            ("be", Order::Big),
            ("abcd", Order::Big),
            ("dcba", Order::Little),
            ("cdab", Order::WordsSwapped),
            ("badc", Order::BytesSwapped),
        ];
        let (bits, order) = suffixes
            .iter()
            .find_map(|(sfx, order)| rest.strip_suffix(sfx).map(|b| (b, *order)))
            .unwrap_or((rest, Order::Big));
        let named = bits.len() != rest.len() && !rest.ends_with("le") && !rest.ends_with("be");
        if named && !matches!(bits, "32" | "64") {
            return None; // word orders are for values of two or more 16-bit words
        }
        let size = match (kind, bits) {
            (Kind::Float, "32") => 4,
            (Kind::Float, "64") => 8,
            (Kind::Float, _) => return None,
            (_, "8") if rest == "8" => 1,
            (_, "16") => 2,
            (_, "32") => 4,
            (_, "64") => 8,
            _ => return None,
        };
        Some(Self { kind, size, order })
    }

    /// Whether it is a floating-point type (f32, f64).
    pub fn is_float(&self) -> bool {
        self.kind == Kind::Float
    }

    /// Bytes the field occupies.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The bytes of `value` in this type and order (a whole number in range for integer
    /// types); None when it does not fit. The inverse of [`Self::read`].
    pub fn write(&self, value: f64) -> Option<Vec<u8>> {
        if !value.is_finite() {
            return None;
        }
        let be: Vec<u8> = match (self.kind, self.size) {
            (Kind::Float, 4) => (value as f32).to_be_bytes().to_vec(),
            (Kind::Float, _) => value.to_be_bytes().to_vec(),
            (Kind::Unsigned, n) => {
                let bits = 8 * n as u32;
                let max = if bits == 64 {
                    u64::MAX as f64
                } else {
                    ((1u64 << bits) - 1) as f64
                };
                if value.fract() != 0.0 || value < 0.0 || value > max {
                    return None;
                }
                (value as u64).to_be_bytes()[8 - n..].to_vec()
            }
            (Kind::Signed, n) => {
                let bits = 8 * n as u32;
                let (min, max) = if bits == 64 {
                    (i64::MIN as f64, i64::MAX as f64)
                } else {
                    (
                        -((1i64 << (bits - 1)) as f64),
                        ((1i64 << (bits - 1)) - 1) as f64,
                    )
                };
                if value.fract() != 0.0 || value < min || value > max {
                    return None;
                }
                (value as i64).to_be_bytes()[8 - n..].to_vec()
            }
        };
        // Every order's transform is its own inverse.
        let mut out = vec![0u8; self.size];
        match self.order {
            Order::Big => out.copy_from_slice(&be),
            Order::Little => {
                out.copy_from_slice(&be);
                out.reverse();
            }
            Order::WordsSwapped => {
                for (dst, src) in out.chunks_exact_mut(2).zip(be.chunks_exact(2).rev()) {
                    dst.copy_from_slice(src);
                }
            }
            Order::BytesSwapped => {
                for (dst, src) in out.chunks_exact_mut(2).zip(be.chunks_exact(2)) {
                    dst[0] = src[1];
                    dst[1] = src[0];
                }
            }
        }
        Some(out)
    }

    /// Reads the value at the start of `bytes` (which holds at least `size()` bytes).
    pub fn read(&self, bytes: &[u8]) -> Option<Num> {
        let raw = bytes.get(..self.size)?;
        // Into big-endian order first, then one fold.
        let mut be = [0u8; 8];
        let be = &mut be[..self.size];
        match self.order {
            Order::Big => be.copy_from_slice(raw),
            Order::Little => {
                be.copy_from_slice(raw);
                be.reverse();
            }
            Order::WordsSwapped => {
                for (dst, src) in be.chunks_exact_mut(2).zip(raw.chunks_exact(2).rev()) {
                    dst.copy_from_slice(src);
                }
            }
            Order::BytesSwapped => {
                for (dst, src) in be.chunks_exact_mut(2).zip(raw.chunks_exact(2)) {
                    dst[0] = src[1];
                    dst[1] = src[0];
                }
            }
        }
        let u = be.iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
        Some(match self.kind {
            Kind::Unsigned => Num::U(u),
            Kind::Signed => {
                let shift = 64 - 8 * self.size as u32;
                Num::I(((u << shift) as i64) >> shift)
            }
            // Through f32's shortest text so 21.3f32 reads 21.3, not 21.299999237060547.
            Kind::Float if self.size == 4 => {
                let f = f32::from_bits(u as u32);
                Num::F(f.to_string().parse().unwrap_or(f as f64))
            }
            Kind::Float => Num::F(f64::from_bits(u)),
        })
    }
}

/// A compiled binary field.
#[derive(Debug, Clone)]
pub struct BinField {
    /// Placeholder name.
    pub name: String,
    /// Byte offset.
    pub offset: usize,
    /// Encoding.
    pub ty: FieldType,
    /// Multiplier, if any.
    pub scale: Option<f64>,
    /// Addend, if any.
    pub add: Option<f64>,
    /// Decimals kept after scaling.
    pub decimals: u8,
}

/// Decimals needed to show `x` exactly as written (0.01 → 2, 0.5 → 1, 10 → 0).
pub fn decimals_of(x: f64) -> u8 {
    let s = format!("{x}");
    let d = s.split_once('.').map_or(0, |(_, frac)| frac.len());
    d.min(12) as u8
}

impl BinField {
    /// Bytes the frame needs for this field; `None` for an offset too large to be real.
    pub fn end(&self) -> Option<usize> {
        self.offset.checked_add(self.ty.size())
    }

    /// Reads and scales the field; `None` when the frame is too short.
    pub fn read(&self, frame: &[u8]) -> Option<Num> {
        let raw = self.ty.read(frame.get(self.offset..)?)?;
        if self.scale.is_none() && self.add.is_none() {
            if let Num::F(f) = raw {
                return Some(Num::F(round(f, self.decimals)));
            }
            return Some(raw);
        }
        let x = match raw {
            Num::I(v) => v as f64,
            Num::U(v) => v as f64,
            Num::F(v) => v,
        };
        let y = x * self.scale.unwrap_or(1.0) + self.add.unwrap_or(0.0);
        Some(Num::F(round(y, self.decimals)))
    }
}

fn round(x: f64, decimals: u8) -> f64 {
    if decimals >= 12 || !x.is_finite() {
        return x;
    }
    let p = 10f64.powi(decimals as i32);
    // `+ 0.0` turns -0.0 into 0.0, so a reading of "-0" is never published.
    (x * p).round() / p + 0.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(ty: &str, offset: usize, scale: Option<f64>) -> BinField {
        BinField {
            name: "x".into(),
            offset,
            ty: FieldType::parse(ty).unwrap(),
            scale,
            add: None,
            decimals: scale.map_or(12, decimals_of),
        }
    }

    #[test]
    fn parses_every_documented_type() {
        for name in TYPE_NAMES {
            assert!(FieldType::parse(name).is_some(), "{name}");
        }
        for bad in ["u12", "f16le", "x8", "", "u8le2", "i"] {
            assert!(FieldType::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn reads_integers_in_both_byte_orders() {
        let frame = [0x66, 0x08, 0x18, 0xfc, 0xff, 0xff, 0xff, 0xfe];
        assert_eq!(field("u16le", 0, None).read(&frame), Some(Num::U(2150)));
        assert_eq!(field("u16be", 0, None).read(&frame), Some(Num::U(0x6608)));
        assert_eq!(field("i16le", 2, None).read(&frame), Some(Num::I(-1000)));
        assert_eq!(field("i32be", 4, None).read(&frame), Some(Num::I(-2)));
        assert_eq!(field("u8", 7, None).read(&frame), Some(Num::U(0xfe)));
        assert_eq!(field("i8", 7, None).read(&frame), Some(Num::I(-2)));
    }

    /// 70.0 A as a meter measured it, in the four orders (read as big-endian, the word-swapped
    /// form is 292552.705 A).
    #[test]
    fn reads_32_and_64_bit_values_in_every_word_order() {
        let milliamps = 70_000u32; // 0x00011170: A=00 B=01 C=11 D=70
        let abcd = milliamps.to_be_bytes();
        let cdab = [abcd[2], abcd[3], abcd[0], abcd[1]];
        let badc = [abcd[1], abcd[0], abcd[3], abcd[2]];
        let dcba = milliamps.to_le_bytes();
        for (ty, bytes) in [
            ("u32abcd", abcd),
            ("u32be", abcd),
            ("u32cdab", cdab),
            ("u32badc", badc),
            ("u32dcba", dcba),
            ("u32le", dcba),
        ] {
            assert_eq!(
                field(ty, 0, Some(0.001)).read(&bytes),
                Some(Num::F(70.0)),
                "{ty}"
            );
        }
        assert_eq!(
            field("u32be", 0, Some(0.001)).read(&cdab),
            Some(Num::F(292552.705)),
            "the wrong order reads nonsense"
        );
        let v = (-123_456_789_012i64).to_be_bytes();
        let words_reversed: Vec<u8> = v.chunks(2).rev().flatten().copied().collect();
        assert_eq!(
            field("i64cdab", 0, None).read(&words_reversed),
            Some(Num::I(-123_456_789_012))
        );
        let f = 230.5f32.to_be_bytes();
        assert_eq!(
            field("f32cdab", 0, None).read(&[f[2], f[3], f[0], f[1]]),
            Some(Num::F(230.5))
        );
        for bad in ["u16cdab", "u8abcd", "i16badc"] {
            assert!(FieldType::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn write_is_the_inverse_of_read_in_every_order() {
        for name in TYPE_NAMES {
            let ty = FieldType::parse(name).unwrap();
            for v in [0.0, 1.0, 100.0, 65_535.0, -2.0, 230.5] {
                let Some(bytes) = ty.write(v) else {
                    assert!(
                        (v < 0.0 && name.starts_with('u'))
                            || (v.fract() != 0.0 && !name.starts_with('f'))
                            || (ty.size() == 1 && v > 127.0)
                            || (ty.size() == 2 && name.starts_with('i') && v > 32_767.0),
                        "{name} {v}"
                    );
                    continue;
                };
                let back = match ty.read(&bytes).unwrap() {
                    Num::I(i) => i as f64,
                    Num::U(u) => u as f64,
                    Num::F(f) => f,
                };
                assert_eq!(back, v, "{name}");
            }
        }
        assert_eq!(
            FieldType::parse("u32cdab").unwrap().write(70_000.0),
            Some(vec![0x11, 0x70, 0, 1])
        );
        assert_eq!(FieldType::parse("u16be").unwrap().write(65_536.0), None);
        assert_eq!(FieldType::parse("i16be").unwrap().write(-32_769.0), None);
    }

    #[test]
    fn scale_rounds_to_the_scales_decimals() {
        let frame = 2150u16.to_le_bytes();
        assert_eq!(
            field("u16le", 0, Some(0.01)).read(&frame),
            Some(Num::F(21.5))
        );
        let frame = (-1234i16).to_le_bytes();
        assert_eq!(
            field("i16le", 0, Some(0.001)).read(&frame),
            Some(Num::F(-1.234))
        );
    }

    #[test]
    fn floats_and_short_frames() {
        let frame = 21.25f32.to_le_bytes();
        assert_eq!(field("f32le", 0, None).read(&frame), Some(Num::F(21.25)));
        assert_eq!(field("u16le", 3, None).read(&frame), None);
        assert_eq!(field("u32le", 10, None).read(&frame), None);
    }
}

//! The YAML forms of a framing (`lines`, `{fixed: 12, start_hex: "AA"}`, `{gap: 3.5}`, ...),
//! read by hand so that a mistake names the form that was meant.

use serde::de::{self, Deserializer, MapAccess, Visitor};

use super::*;

/// Variant names, for serde's "expected one of" messages.
pub(super) const FRAMING_NAMES: &[&str] = &[
    "lines",
    "delimiter",
    "delimiter_hex",
    "cobs",
    "slip",
    "length_prefix",
    "fixed",
    "gap",
    "telegram",
    "length",
    "modbus_rtu",
];

/// Accepts exactly a bare name (`lines`) or a single-key map (`{fixed: 12}`).
///
/// Hand-written because serde_norway (like serde_yaml 0.9) reads derived externally tagged enums
/// only from YAML tags (`!fixed 12`), not from single-key maps.
impl<'de> serde::Deserialize<'de> for Framing {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(FramingVisitor)
    }
}

/// Visitor behind `Framing`'s Deserialize.
struct FramingVisitor;

impl<'de> Visitor<'de> for FramingVisitor {
    type Value = Framing;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(
            "a framing: `lines`, `cobs`, `slip`, `{delimiter: \"\\r\\n\"}`, \
             `{length_prefix: {width: 2}}`, `{fixed: 12}`, `{gap: 3.5}`, \
             `{telegram: {start: \"/\", end: \"!\", trailer: 4}}` or \
             `{length: {start_hex: \"AA\", at: 1, width: 1}}`",
        )
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Framing, E> {
        match v {
            "lines" => Ok(Framing::Lines),
            "cobs" => Ok(Framing::Cobs),
            "slip" => Ok(Framing::Slip),
            "modbus_rtu" => Ok(Framing::ModbusRtu(None)),
            "delimiter" => Err(E::custom(
                "`delimiter` needs the bytes that end a frame: write `{delimiter: \"\\r\\n\"}`",
            )),
            "length_prefix" => Err(E::custom(
                "`length_prefix` needs its header size: write `{length_prefix: {width: 2}}`",
            )),
            "fixed" => Err(E::custom(
                "`fixed` needs the frame size in bytes: write `{fixed: 12}`",
            )),
            other => Err(E::unknown_variant(other, FRAMING_NAMES)),
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Framing, A::Error> {
        let mut framing: Option<Framing> = None;
        let (mut start, mut end) = (None, None);
        while let Some(key) = map.next_key::<String>()? {
            let kind = match key.as_str() {
                "start_hex" => {
                    start = Some(hex_bytes(&map.next_value::<String>()?, "start_hex")?);
                    continue;
                }
                "end_hex" => {
                    end = Some(hex_bytes(&map.next_value::<String>()?, "end_hex")?);
                    continue;
                }
                "delimiter" => Framing::Delimiter(map.next_value::<String>()?.into_bytes()),
                "delimiter_hex" => {
                    Framing::Delimiter(hex_bytes(&map.next_value::<String>()?, "delimiter_hex")?)
                }
                "length_prefix" => Framing::LengthPrefix(map.next_value()?),
                "fixed" => Framing::Fixed(Fixed::size(map.next_value()?)),
                "gap" => Framing::Gap(map.next_value::<GapValue>()?.0),
                "telegram" => {
                    let t: TelegramYaml = map.next_value()?;
                    Framing::Telegram(Telegram {
                        start: t.start.into_bytes(),
                        end: t.end.into_bytes(),
                        trailer: t.trailer,
                    })
                }
                "length" => {
                    let l: LengthYaml = map.next_value()?;
                    Framing::Length(LengthField {
                        start: hex_bytes(&l.start_hex, "start_hex")?,
                        at: l.at,
                        width: l.width,
                        endian: l.endian,
                        trailer: l.trailer,
                        end: match &l.end_hex {
                            Some(h) => hex_bytes(h, "end_hex")?,
                            None => Vec::new(),
                        },
                    })
                }
                "modbus_rtu" => Framing::ModbusRtu(Some(map.next_value::<u8>()?)),
                "lines" | "cobs" | "slip" => {
                    return Err(de::Error::custom(format_args!(
                        "`{key}` takes no value: write just `{key}`"
                    )));
                }
                other => return Err(de::Error::unknown_variant(other, FRAMING_NAMES)),
            };
            if framing.is_some() {
                return Err(de::Error::custom(
                    "a framing map names one framing: write e.g. `{fixed: 12}` (with \
                     `start_hex`/`end_hex` beside `fixed` only)",
                ));
            }
            framing = Some(kind);
        }
        match (framing, start, end) {
            (None, None, None) => Err(de::Error::custom(
                "the framing map is empty: write e.g. `lines` or `{fixed: 12}`",
            )),
            (Some(Framing::Fixed(mut f)), start, end) => {
                f.start = start.unwrap_or_default();
                f.end = end.unwrap_or_default();
                Ok(Framing::Fixed(f))
            }
            (Some(f), None, None) => Ok(f),
            _ => Err(de::Error::custom(
                "`start_hex` and `end_hex` go with `fixed`: write e.g. \
                 `{fixed: 10, start_hex: \"AA\", end_hex: \"AB\"}`",
            )),
        }
    }
}

/// `{telegram: {start: "/", end: "!", trailer: 4}}`: text, so YAML escapes (`"\x02"`) work.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct TelegramYaml {
    start: String,
    end: String,
    #[serde(default)]
    trailer: usize,
}

/// `{length: {start_hex: "B5 62", at: 4, width: 2, endian: little, trailer: 2, end_hex: ..}}`.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct LengthYaml {
    start_hex: String,
    at: usize,
    width: u8,
    #[serde(default)]
    endian: Endian,
    #[serde(default)]
    trailer: i64,
    #[serde(default)]
    end_hex: Option<String>,
}

/// Hex bytes as users write them (`"AA"`, `"aa c0"`, `"0xAA"`), for `start_hex`/`end_hex`.
fn hex_bytes<E: de::Error>(text: &str, key: &str) -> Result<Vec<u8>, E> {
    match hex_text(text) {
        Some(b) if !b.is_empty() => Ok(b),
        _ => Err(E::custom(format_args!(
            "{key}: `{text}` is not hex bytes: write them as pairs of hex digits, e.g. \
             {key}: \"AA\" or \"AA C0\""
        ))),
    }
}

/// `gap:` as a number of character times (`3.5`) or a duration (`20ms`).
struct GapValue(Gap);

impl<'de> serde::Deserialize<'de> for GapValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = GapValue;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("character times (e.g. `3.5`) or a duration (e.g. `20ms`)")
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<GapValue, E> {
                if !(0.0..=1000.0).contains(&v) {
                    return Err(E::custom(
                        "gap: write character times between 0 and 1000, e.g. `{gap: 3.5}`",
                    ));
                }
                Ok(GapValue(Gap::CharTenths((v * 10.0).round() as u32)))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<GapValue, E> {
                self.visit_f64(v as f64)
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<GapValue, E> {
                self.visit_f64(v as f64)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<GapValue, E> {
                humantime::parse_duration(v)
                    .map(|d| GapValue(Gap::Time(d)))
                    .map_err(|_| {
                        E::custom(format_args!(
                            "gap: `{v}` is neither character times nor a duration: write e.g. \
                             `{{gap: 3.5}}` or `{{gap: 20ms}}`"
                        ))
                    })
            }
        }
        deserializer.deserialize_any(V)
    }
}

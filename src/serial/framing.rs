//! Frame decoders for the bytes read from a serial port.
//!
//! A serial port delivers an unstructured byte stream in arbitrary pieces; this module cuts it into
//! sensor frames according to a device's configured [`Framing`]. [`FrameDecoder`] is a
//! [`tokio_util::codec::Decoder`], so it plugs into `FramedRead`.
//!
//! Guarantees:
//! - **Errors are items.** In tokio-util 0.7 a decoder error ends the `FramedRead` stream, so a
//!   recoverable problem (an overlong or a corrupt frame) is reported as [`Decoded::Dropped`] and
//!   decoding goes on with the next frame. The decoder never returns `Err`.
//! - **Bounded memory.** Between calls the decoder holds at most about `max_frame` bytes plus a
//!   delimiter or length prefix (COBS: plus its 1-in-254 overhead); an overlong frame is discarded
//!   as it streams in, never buffered whole.
//! - **No panics on any input**, and split reads (a frame arriving byte by byte, a delimiter torn
//!   between two reads) yield the same items as a single read.
//! - Empty payloads carry no data and are skipped silently; a partial frame at EOF is dropped.
//!
//! The splitting is hand-written on purpose: framing is this project's core craft and its hot path
//! (memchr/memmem searches that resume where they stopped, zero-copy frames via `split_to`). Only
//! the COBS byte transform comes from the `cobs` crate.

use std::fmt;
use std::io;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use memchr::memmem;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use tokio_util::codec::Decoder;

/// SLIP frame end (RFC 1055).
const SLIP_END: u8 = 0xC0;
/// SLIP escape (RFC 1055).
const SLIP_ESC: u8 = 0xDB;
/// Escaped END after ESC.
const SLIP_ESC_END: u8 = 0xDC;
/// Escaped ESC after ESC.
const SLIP_ESC_ESC: u8 = 0xDD;
/// Most we pre-allocate for one awaited frame, so a huge configured size cannot allocate upfront.
const RESERVE_CAP: usize = 64 * 1024;

/// How bytes on the wire are cut into frames (YAML: `framing:` of a device).
///
/// YAML forms: `lines`, `cobs`, `slip`, `{delimiter: "\r\n"}`,
/// `{length_prefix: {width: 2, endian: little}}`, `{fixed: 12}`,
/// `{fixed: 10, start_hex: "AA", end_hex: "AB"}`, `{gap: 3.5}` / `{gap: 20ms}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Framing {
    /// Frames end at `\n`; one trailing `\r` is stripped.
    Lines,
    /// Frames end at this byte sequence (the string's UTF-8 bytes; must be non-empty).
    Delimiter(Vec<u8>),
    /// COBS-encoded frames terminated by `0x00`.
    Cobs,
    /// RFC 1055 SLIP: END=0xC0, ESC=0xDB, ESC_END=0xDC, ESC_ESC=0xDD.
    Slip,
    /// Each frame is preceded by its payload length.
    LengthPrefix(LengthPrefix),
    /// Every frame is exactly `size` bytes, optionally starting and/or ending with given bytes
    /// (which let the decoder find the next frame again after a lost or extra byte).
    Fixed(Fixed),
    /// A frame ends when the line has been silent this long (Modbus RTU's 3.5 character times,
    /// and many binary sensors): recovers from any lost byte at the next pause.
    Gap(Gap),
}

/// A `fixed` framing: the size, and the bytes every frame must start and end with.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fixed {
    /// Bytes per frame, start and end bytes included.
    pub size: usize,
    /// Bytes every frame starts with (empty: any).
    pub start: Vec<u8>,
    /// Bytes every frame ends with (empty: any).
    pub end: Vec<u8>,
}

impl Fixed {
    /// A fixed framing of `size` bytes with no start or end bytes.
    pub fn size(size: usize) -> Self {
        Self {
            size,
            ..Self::default()
        }
    }
}

/// How long the silence that ends a `gap` frame lasts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gap {
    /// In character times at the port's settings, in tenths (`{gap: 3.5}` is 35).
    CharTenths(u32),
    /// A fixed time (`{gap: 20ms}`), for USB adapters that deliver bytes in bursts.
    Time(std::time::Duration),
}

impl Gap {
    /// The silence for a port sending `bits_per_char` bits per character at `baud`.
    pub fn duration(self, baud: u32, bits_per_char: u32) -> std::time::Duration {
        match self {
            Gap::Time(d) => d,
            Gap::CharTenths(t) => std::time::Duration::from_nanos(
                u64::from(t) * u64::from(bits_per_char) * 100_000_000 / u64::from(baud.max(1)),
            ),
        }
    }
}

/// The length header of [`Framing::LengthPrefix`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LengthPrefix {
    /// Header size in bytes: 1, 2 or 4.
    pub width: u8,
    /// Byte order of the header (default big).
    #[serde(default)]
    pub endian: Endian,
}

/// Byte order of a length header.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endian {
    /// Most significant byte first (network order).
    #[default]
    Big,
    /// Least significant byte first.
    Little,
}

impl Framing {
    /// Checks values serde cannot (empty delimiter, width not 1/2/4, fixed 0); Err is a sentence telling the user what to write instead.
    pub fn validate(&self) -> Result<(), String> {
        match self {
            Framing::Delimiter(d) if d.is_empty() => Err(
                "the delimiter is empty: write the bytes that end a frame, e.g. \
                 `{delimiter: \"\\r\\n\"}`, or use `lines` for newline-terminated text"
                    .to_string(),
            ),
            Framing::LengthPrefix(p) if !matches!(p.width, 1 | 2 | 4) => Err(format!(
                "length_prefix width {} is not supported: write 1, 2 or 4 (bytes of the length \
                 header), e.g. `{{length_prefix: {{width: 2}}}}`",
                p.width
            )),
            Framing::Fixed(f) if f.size == 0 => Err(
                "a fixed frame size of 0 bytes cannot carry data: write the frame length in \
                 bytes, e.g. `{fixed: 12}`"
                    .to_string(),
            ),
            Framing::Fixed(f) if f.start.len() + f.end.len() > f.size => Err(format!(
                "start_hex and end_hex ({} bytes together) do not fit in a {}-byte frame: \
                 `fixed` counts them in the frame size, e.g. `{{fixed: 10, start_hex: \"AA\", \
                 end_hex: \"AB\"}}` for AA, 8 bytes, AB",
                f.start.len() + f.end.len(),
                f.size
            )),
            Framing::Gap(Gap::CharTenths(0))
            | Framing::Gap(Gap::Time(std::time::Duration::ZERO)) => Err(
                "a gap of 0 never ends a frame: write e.g. `{gap: 3.5}` (character times, \
                     Modbus RTU's) or `{gap: 20ms}`"
                    .to_string(),
            ),
            _ => Ok(()),
        }
    }

    /// Short name for logs: "lines", "delimiter", "cobs", "slip", "length_prefix", "fixed".
    pub fn name(&self) -> &'static str {
        match self {
            Framing::Lines => "lines",
            Framing::Delimiter(_) => "delimiter",
            Framing::Cobs => "cobs",
            Framing::Slip => "slip",
            Framing::LengthPrefix(_) => "length_prefix",
            Framing::Fixed(_) => "fixed",
            Framing::Gap(_) => "gap",
        }
    }

    /// How a frame is found again after a lost or extra byte, for the docs and `check`.
    pub fn recovers(&self) -> bool {
        match self {
            Framing::Fixed(f) => !f.start.is_empty() || !f.end.is_empty(),
            _ => true,
        }
    }
}

/// Variant names, for serde's "expected one of" messages.
const FRAMING_NAMES: &[&str] = &[
    "lines",
    "delimiter",
    "delimiter_hex",
    "cobs",
    "slip",
    "length_prefix",
    "fixed",
    "gap",
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
             `{length_prefix: {width: 2}}` or `{fixed: 12}`",
        )
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Framing, E> {
        match v {
            "lines" => Ok(Framing::Lines),
            "cobs" => Ok(Framing::Cobs),
            "slip" => Ok(Framing::Slip),
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

/// Hex bytes as users write them (`"AA"`, `"aa c0"`, `"0xAA"`), for `start_hex`/`end_hex`.
fn hex_bytes<E: de::Error>(text: &str, key: &str) -> Result<Vec<u8>, E> {
    let digits: String = text
        .split_whitespace()
        .map(|w| w.trim_start_matches("0x").trim_start_matches("0X"))
        .collect();
    match hex::decode(&digits) {
        Ok(b) if !b.is_empty() => Ok(b),
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

/// One decoder item: a frame, or a counted reason why bytes were dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A complete payload, without delimiter, prefix or encoding.
    Frame(Bytes),
    /// A frame was discarded; decoding continues with the next one.
    Dropped(DropReason),
    /// This many bytes were skipped to find the next frame (`fixed` with start/end bytes whose
    /// frame did not carry them: a lost or extra byte on the line).
    Resync(usize),
    /// A `gap` frame began: the caller now watches for the silence that ends it
    /// ([`FrameDecoder::gap_deadline`], [`FrameDecoder::silence`]). Carries no data.
    GapStarted,
}

/// Why a frame was dropped, so the caller can count drops per cause.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DropReason {
    /// The payload exceeded `max_frame`.
    TooLong,
    /// The frame's encoding was invalid (COBS decode failure, bad SLIP escape).
    Corrupt,
    /// The port went away in the middle of the frame (unplugged mid-frame).
    Incomplete,
}

impl DropReason {
    /// Stable label for metrics and logs: "too_long", "corrupt" or "incomplete".
    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::TooLong => "too_long",
            DropReason::Corrupt => "corrupt",
            DropReason::Incomplete => "incomplete",
        }
    }
}

/// The decoder for one framing with a maximum frame size (payload bytes, without delimiter/prefix).
///
/// Built from a framing that fails [`Framing::validate`], it drops all input instead of panicking.
#[derive(Debug)]
pub struct FrameDecoder {
    max_frame: usize,
    kind: Kind,
}

/// Per-framing state.
#[derive(Debug)]
enum Kind {
    Delimited(Delimited),
    Slip(Slip),
    LengthPrefix(Prefixed),
    Fixed(Fixed),
    Gap(GapState),
    /// The framing failed validation: every byte is discarded.
    Invalid,
}

/// A `gap` frame in progress: when its last bytes arrived, and whether it is overlong.
#[derive(Debug, Default)]
struct GapState {
    /// Bytes in the buffer at the last decode call, and when that count last changed.
    seen: usize,
    last_byte: Option<std::time::Instant>,
    discarding: bool,
}

impl FrameDecoder {
    /// Creates the decoder for `framing`, dropping frames whose payload exceeds `max_frame` bytes.
    pub fn new(framing: &Framing, max_frame: usize) -> Self {
        let kind = if framing.validate().is_err() {
            Kind::Invalid
        } else {
            match framing {
                Framing::Lines => Kind::Delimited(Delimited::new(
                    b"\n",
                    max_frame.saturating_add(1),
                    Post::StripCr,
                )),
                Framing::Delimiter(d) => {
                    Kind::Delimited(Delimited::new(d.as_slice(), max_frame, Post::Plain))
                }
                // COBS adds at most one byte per 254 plus one; the decoded size is checked again.
                Framing::Cobs => Kind::Delimited(Delimited::new(
                    &[0],
                    max_frame.saturating_add(max_frame / 254).saturating_add(1),
                    Post::Cobs,
                )),
                Framing::Slip => Kind::Slip(Slip::default()),
                Framing::LengthPrefix(p) => Kind::LengthPrefix(Prefixed {
                    width: usize::from(p.width),
                    little: p.endian == Endian::Little,
                    skip: 0,
                }),
                Framing::Fixed(f) => Kind::Fixed(f.clone()),
                Framing::Gap(_) => Kind::Gap(GapState::default()),
            }
        };
        FrameDecoder { max_frame, kind }
    }

    /// Forgets any partial frame (after EOF), so the decoder can be reused.
    fn reset(&mut self) {
        match &mut self.kind {
            Kind::Delimited(d) => {
                d.scanned = 0;
                d.discarding = false;
            }
            Kind::Slip(s) => *s = Slip::default(),
            Kind::LengthPrefix(p) => p.skip = 0,
            Kind::Gap(g) => *g = GapState::default(),
            Kind::Fixed(_) | Kind::Invalid => {}
        }
    }

    /// For `gap` framing: when the frame in progress ends unless more bytes arrive (its last
    /// byte's time plus `gap`); `None` when nothing is in progress or for other framings.
    pub fn gap_deadline(&self, gap: std::time::Duration) -> Option<std::time::Instant> {
        match &self.kind {
            Kind::Gap(g) if g.seen > 0 => g.last_byte.map(|t| t + gap),
            _ => None,
        }
    }

    /// For `gap` framing, after the line was silent for the gap: whether the bytes buffered
    /// are a whole frame (`false` when they are the end of an overlong one, already counted:
    /// the caller discards them). The next bytes start a new frame.
    pub fn silence(&mut self) -> bool {
        let Kind::Gap(g) = &mut self.kind else {
            return false;
        };
        let whole = !g.discarding;
        *g = GapState::default();
        whole
    }

    /// Whether part of a frame is waiting for the rest: in `buf`, or held by the decoder. An
    /// overlong frame being skipped does not count (it was counted as too long already).
    pub fn has_partial(&self, buf: &BytesMut) -> bool {
        match &self.kind {
            Kind::Delimited(d) => !d.discarding && !buf.is_empty(),
            Kind::Slip(s) => !s.discarding && (!s.out.is_empty() || !buf.is_empty()),
            Kind::LengthPrefix(p) => p.skip == 0 && !buf.is_empty(),
            Kind::Fixed(_) => !buf.is_empty(),
            Kind::Gap(g) => !g.discarding && !buf.is_empty(),
            Kind::Invalid => false,
        }
    }

    /// Bytes held outside the caller's buffer (SLIP's unescaped partial frame).
    #[cfg(test)]
    fn held(&self) -> usize {
        match &self.kind {
            Kind::Slip(s) => s.out.len(),
            _ => 0,
        }
    }
}

impl Decoder for FrameDecoder {
    type Item = Decoded;
    type Error = io::Error;

    /// Yields the next frame or drop; never Err, so one bad frame cannot end the stream.
    fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Option<Decoded>> {
        let max = self.max_frame;
        Ok(match &mut self.kind {
            Kind::Delimited(d) => d.next(buf, max),
            Kind::Slip(s) => s.next(buf, max),
            Kind::LengthPrefix(p) => p.next(buf, max),
            Kind::Fixed(f) => next_fixed(buf, f),
            Kind::Gap(g) => g.next(buf, max),
            Kind::Invalid => {
                buf.clear();
                None
            }
        })
    }

    /// Yields the complete frames still buffered, then drops a trailing partial frame (port
    /// gone), reporting it as [`DropReason::Incomplete`].
    fn decode_eof(&mut self, buf: &mut BytesMut) -> io::Result<Option<Decoded>> {
        if let Some(item) = self.decode(buf)? {
            return Ok(Some(item));
        }
        let partial = self.has_partial(buf);
        buf.clear();
        self.reset();
        Ok(partial.then_some(Decoded::Dropped(DropReason::Incomplete)))
    }
}

/// Reserves room for an awaited frame, capped so a huge size cannot allocate upfront.
fn reserve_upto(buf: &mut BytesMut, additional: usize) {
    buf.reserve(additional.min(RESERVE_CAP));
}

/// What to do with the raw bytes between two delimiters.
#[derive(Debug, Clone, Copy)]
enum Post {
    /// Strip one trailing `\r` (lines).
    StripCr,
    /// Use as-is (delimiter).
    Plain,
    /// COBS-decode in place.
    Cobs,
}

/// The delimiter to search for: memchr for one byte, memmem otherwise.
#[derive(Debug)]
enum Needle {
    Byte(u8),
    Seq(Box<memmem::Finder<'static>>),
}

impl Needle {
    fn new(delimiter: &[u8]) -> Self {
        match delimiter {
            [b] => Needle::Byte(*b),
            _ => Needle::Seq(Box::new(memmem::Finder::new(delimiter).into_owned())),
        }
    }

    fn len(&self) -> usize {
        match self {
            Needle::Byte(_) => 1,
            Needle::Seq(f) => f.needle().len(),
        }
    }

    fn find(&self, haystack: &[u8]) -> Option<usize> {
        match self {
            Needle::Byte(b) => memchr::memchr(*b, haystack),
            Needle::Seq(f) => f.find(haystack),
        }
    }
}

/// Splitter for delimiter-terminated framings (lines, delimiter, COBS).
#[derive(Debug)]
struct Delimited {
    needle: Needle,
    /// Most raw bytes a frame may have before its delimiter.
    limit: usize,
    /// No delimiter starts before this offset of the buffer: the next search resumes here.
    scanned: usize,
    /// An overlong frame was reported; bytes are dropped up to and including the next delimiter.
    discarding: bool,
    post: Post,
}

impl Delimited {
    fn new(delimiter: &[u8], limit: usize, post: Post) -> Self {
        Delimited {
            needle: Needle::new(delimiter),
            limit,
            scanned: 0,
            discarding: false,
            post,
        }
    }

    fn next(&mut self, buf: &mut BytesMut, max: usize) -> Option<Decoded> {
        loop {
            let raw = match self.cut(buf) {
                Cut::NeedMore => return None,
                Cut::TooLong => return Some(Decoded::Dropped(DropReason::TooLong)),
                Cut::Raw(raw) => raw,
            };
            if let Some(item) = finish(self.post, raw, max) {
                return Some(item);
            }
        }
    }

    /// Takes the next raw frame (delimiter consumed) off `buf`, remembering how far it searched.
    fn cut(&mut self, buf: &mut BytesMut) -> Cut {
        let tail = self.needle.len().saturating_sub(1);
        loop {
            let from = self.scanned.min(buf.len());
            match self.needle.find(&buf[from..]) {
                Some(at) => {
                    let end = from + at;
                    self.scanned = 0;
                    if self.discarding {
                        buf.advance(end + self.needle.len());
                        self.discarding = false;
                        continue;
                    }
                    let raw = buf.split_to(end);
                    buf.advance(self.needle.len());
                    return if raw.len() > self.limit {
                        Cut::TooLong
                    } else {
                        Cut::Raw(raw)
                    };
                }
                None => {
                    // Only the last `tail` bytes can still be the start of a delimiter.
                    let settled = buf.len().saturating_sub(tail);
                    if self.discarding {
                        buf.advance(settled);
                        self.scanned = 0;
                        return Cut::NeedMore;
                    }
                    if settled > self.limit {
                        buf.advance(settled);
                        self.scanned = 0;
                        self.discarding = true;
                        return Cut::TooLong;
                    }
                    self.scanned = settled;
                    return Cut::NeedMore;
                }
            }
        }
    }
}

/// Outcome of one [`Delimited::cut`].
enum Cut {
    Raw(BytesMut),
    TooLong,
    NeedMore,
}

/// Turns raw bytes between delimiters into an item; None for an empty payload.
fn finish(post: Post, mut raw: BytesMut, max: usize) -> Option<Decoded> {
    match post {
        Post::StripCr => {
            if raw.last() == Some(&b'\r') {
                raw.truncate(raw.len() - 1);
            }
        }
        Post::Plain => {}
        Post::Cobs => {
            if raw.is_empty() {
                return None;
            }
            // `raw` holds no 0x00, so this is the crate's whole-frame decode, done in place.
            match cobs::decode_in_place(&mut raw[..]) {
                Ok(n) => raw.truncate(n),
                Err(_) => return Some(Decoded::Dropped(DropReason::Corrupt)),
            }
        }
    }
    if raw.is_empty() {
        None
    } else if raw.len() > max {
        Some(Decoded::Dropped(DropReason::TooLong))
    } else {
        Some(Decoded::Frame(raw.freeze()))
    }
}

/// Streaming SLIP unescaper: input is consumed as it arrives, so only the payload is held.
#[derive(Debug, Default)]
struct Slip {
    /// Unescaped payload of the current frame so far.
    out: BytesMut,
    /// The previous byte was ESC.
    escaped: bool,
    /// The current frame was reported dropped; skip to the next END.
    discarding: bool,
}

impl Slip {
    fn next(&mut self, buf: &mut BytesMut, max: usize) -> Option<Decoded> {
        loop {
            if buf.is_empty() {
                return None;
            }
            if self.discarding {
                match memchr::memchr(SLIP_END, buf) {
                    Some(at) => {
                        buf.advance(at + 1);
                        self.discarding = false;
                        continue;
                    }
                    None => {
                        buf.clear();
                        return None;
                    }
                }
            }
            if self.escaped {
                self.escaped = false;
                let byte = buf[0];
                buf.advance(1);
                let plain = match byte {
                    SLIP_ESC_END => SLIP_END,
                    SLIP_ESC_ESC => SLIP_ESC,
                    other => {
                        self.out.clear();
                        // An END right after ESC still ends the frame; anything else starts a skip.
                        self.discarding = other != SLIP_END;
                        return Some(Decoded::Dropped(DropReason::Corrupt));
                    }
                };
                if self.out.len() >= max {
                    return Some(self.drop_too_long());
                }
                self.out.put_u8(plain);
                continue;
            }
            let run = memchr::memchr2(SLIP_END, SLIP_ESC, buf).unwrap_or(buf.len());
            if run > max.saturating_sub(self.out.len()) {
                buf.advance(run);
                return Some(self.drop_too_long());
            }
            self.out.extend_from_slice(&buf[..run]);
            let Some(&special) = buf.get(run) else {
                buf.clear();
                return None;
            };
            buf.advance(run + 1);
            if special == SLIP_ESC {
                self.escaped = true;
            } else if !self.out.is_empty() {
                return Some(Decoded::Frame(self.out.split().freeze()));
            }
        }
    }

    fn drop_too_long(&mut self) -> Decoded {
        self.out.clear();
        self.discarding = true;
        Decoded::Dropped(DropReason::TooLong)
    }
}

/// Length-prefixed frames.
#[derive(Debug)]
struct Prefixed {
    /// Header bytes: 1, 2 or 4.
    width: usize,
    little: bool,
    /// Bytes of an overlong frame still to be skipped without buffering.
    skip: usize,
}

impl Prefixed {
    fn next(&mut self, buf: &mut BytesMut, max: usize) -> Option<Decoded> {
        loop {
            if self.skip > 0 {
                let n = self.skip.min(buf.len());
                buf.advance(n);
                self.skip -= n;
                if self.skip > 0 {
                    return None;
                }
            }
            let len = read_len(buf.get(..self.width)?, self.little);
            if len > max {
                buf.advance(self.width);
                self.skip = len;
                return Some(Decoded::Dropped(DropReason::TooLong));
            }
            if len == 0 {
                buf.advance(self.width);
                continue;
            }
            let total = self.width.saturating_add(len);
            if buf.len() < total {
                reserve_upto(buf, total - buf.len());
                return None;
            }
            buf.advance(self.width);
            return Some(Decoded::Frame(buf.split_to(len).freeze()));
        }
    }
}

/// Reads an unsigned length header of any width up to 8 bytes.
fn read_len(header: &[u8], little: bool) -> usize {
    let fold = |acc: u64, b: &u8| (acc << 8) | u64::from(*b);
    let value = if little {
        header.iter().rev().fold(0, fold)
    } else {
        header.iter().fold(0, fold)
    };
    usize::try_from(value).unwrap_or(usize::MAX)
}

/// Fixed-size frames (`size` is at least 1, start + end fit in it). With start bytes, bytes
/// before the next start are skipped; a frame whose end bytes do not match is not a frame: the
/// search goes on one byte further. Skipped bytes are reported as one [`Decoded::Resync`] per
/// stretch, before the frame that follows it.
fn next_fixed(buf: &mut BytesMut, f: &Fixed) -> Option<Decoded> {
    let mut skipped = 0;
    loop {
        if !f.start.is_empty() {
            match memmem::find(buf, &f.start) {
                Some(at) => {
                    buf.advance(at);
                    skipped += at;
                }
                None => {
                    // Keep what could be the beginning of a start split across reads.
                    let keep = (f.start.len() - 1).min(buf.len());
                    let drop = buf.len() - keep;
                    buf.advance(drop);
                    skipped += drop;
                    break;
                }
            }
        }
        if buf.len() < f.size {
            break;
        }
        if !f.end.is_empty() && buf[f.size - f.end.len()..f.size] != f.end[..] {
            buf.advance(1);
            skipped += 1;
            continue;
        }
        if skipped > 0 {
            // The frame stays in the buffer: the next call returns it.
            return Some(Decoded::Resync(skipped));
        }
        return Some(Decoded::Frame(buf.split_to(f.size).freeze()));
    }
    if skipped > 0 {
        return Some(Decoded::Resync(skipped));
    }
    reserve_upto(buf, f.size - buf.len().min(f.size));
    None
}

impl GapState {
    /// Notes when bytes arrived; a frame ends only at [`FrameDecoder::silence`]. A frame past
    /// `max` is counted once and its bytes discarded until the silence that ends it.
    fn next(&mut self, buf: &mut BytesMut, max: usize) -> Option<Decoded> {
        if buf.len() != self.seen || (self.discarding && !buf.is_empty()) {
            self.last_byte = Some(std::time::Instant::now());
        }
        if self.discarding {
            self.seen = usize::from(!buf.is_empty());
            buf.clear();
            return None;
        }
        if buf.len() > max {
            buf.clear();
            self.discarding = true;
            self.seen = 1;
            return Some(Decoded::Dropped(DropReason::TooLong));
        }
        let started = self.seen == 0 && !buf.is_empty();
        self.seen = buf.len();
        started.then_some(Decoded::GapStarted)
    }
}

/// Encodes one payload as it would appear on the wire in this framing (used by the built-in simulator and tests).
///
/// Nothing is appended for a framing that fails [`Framing::validate`] or a payload longer than a
/// length prefix can express. The payload must not contain the delimiter (lines: `\n`, nor end in
/// `\r`), and for `fixed` must have the configured size: that is the caller's job.
pub fn encode_frame(framing: &Framing, payload: &[u8], out: &mut Vec<u8>) {
    if framing.validate().is_err() {
        return;
    }
    match framing {
        Framing::Lines => {
            out.extend_from_slice(payload);
            out.push(b'\n');
        }
        Framing::Delimiter(d) => {
            out.extend_from_slice(payload);
            out.extend_from_slice(d.as_slice());
        }
        Framing::Cobs => {
            let start = out.len();
            out.resize(start + cobs::max_encoding_length(payload.len()), 0);
            // Sized by max_encoding_length, so try_encode cannot run out of room.
            let written = cobs::try_encode(payload, &mut out[start..]).unwrap_or(0);
            out.truncate(start + written);
            out.push(0);
        }
        Framing::Slip => {
            out.push(SLIP_END);
            for &b in payload {
                match b {
                    SLIP_END => out.extend_from_slice(&[SLIP_ESC, SLIP_ESC_END]),
                    SLIP_ESC => out.extend_from_slice(&[SLIP_ESC, SLIP_ESC_ESC]),
                    _ => out.push(b),
                }
            }
            out.push(SLIP_END);
        }
        Framing::LengthPrefix(p) => {
            let width = usize::from(p.width);
            let Ok(len) = u32::try_from(payload.len()) else {
                return;
            };
            if width < 4 && len >> (8 * width) != 0 {
                return;
            }
            match p.endian {
                Endian::Big => out.extend_from_slice(&len.to_be_bytes()[4 - width..]),
                Endian::Little => out.extend_from_slice(&len.to_le_bytes()[..width]),
            }
            out.extend_from_slice(payload);
        }
        Framing::Fixed(_) | Framing::Gap(_) => out.extend_from_slice(payload),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: usize = 8;

    fn frame(payload: &[u8]) -> Decoded {
        Decoded::Frame(Bytes::copy_from_slice(payload))
    }

    const TOO_LONG: Decoded = Decoded::Dropped(DropReason::TooLong);
    const INCOMPLETE: Decoded = Decoded::Dropped(DropReason::Incomplete);
    const CORRUPT: Decoded = Decoded::Dropped(DropReason::Corrupt);

    fn fixed(n: usize) -> Framing {
        Framing::Fixed(Fixed::size(n))
    }

    fn delimiter(d: &str) -> Framing {
        Framing::Delimiter(d.as_bytes().to_vec())
    }

    fn length_prefix(width: u8, endian: Endian) -> Framing {
        Framing::LengthPrefix(LengthPrefix { width, endian })
    }

    /// One of every framing, in the shapes the tests exercise.
    fn all_framings() -> Vec<Framing> {
        vec![
            Framing::Lines,
            delimiter("\r\n"),
            delimiter("\x02"),
            delimiter("<END>"),
            Framing::Cobs,
            Framing::Slip,
            length_prefix(1, Endian::Big),
            length_prefix(2, Endian::Little),
            length_prefix(4, Endian::Big),
            fixed(5),
        ]
    }

    /// Feeds `input` in chunks of `chunk` bytes to a fresh decoder and buffer, then signals EOF.
    fn feed_chunked(framing: &Framing, max: usize, input: &[u8], chunk: usize) -> Vec<Decoded> {
        let mut dec = FrameDecoder::new(framing, max);
        let mut buf = BytesMut::new();
        let mut items = Vec::new();
        for piece in input.chunks(chunk.max(1)) {
            buf.extend_from_slice(piece);
            while let Some(item) = dec.decode(&mut buf).unwrap() {
                items.push(item);
            }
        }
        while let Some(item) = dec.decode_eof(&mut buf).unwrap() {
            items.push(item);
        }
        assert!(buf.is_empty(), "EOF leaves nothing buffered");
        items
    }

    /// Feeds `input` in one read.
    fn feed(framing: &Framing, max: usize, input: &[u8]) -> Vec<Decoded> {
        feed_chunked(framing, max, input, input.len())
    }

    /// Adjacent resync reports merged: how skipped bytes are reported depends on how they
    /// arrive (each read reports what it skipped), their total does not.
    fn merged(items: Vec<Decoded>) -> Vec<Decoded> {
        let mut out: Vec<Decoded> = Vec::new();
        for item in items {
            match (out.last_mut(), &item) {
                (Some(Decoded::Resync(a)), Decoded::Resync(b)) => *a += b,
                _ => out.push(item),
            }
        }
        out
    }

    /// Asserts every chunk size 1..=len gives the same items as one read; returns those items.
    fn split_invariant(framing: &Framing, max: usize, input: &[u8]) -> Vec<Decoded> {
        let whole = merged(feed(framing, max, input));
        for chunk in 1..=input.len() {
            assert_eq!(
                merged(feed_chunked(framing, max, input, chunk)),
                whole,
                "{framing:?}, chunk size {chunk}"
            );
        }
        whole
    }

    fn encode_all(framing: &Framing, payloads: &[&[u8]]) -> Vec<u8> {
        let mut out = Vec::new();
        for p in payloads {
            encode_frame(framing, p, &mut out);
        }
        out
    }

    /// Deterministic xorshift64 PRNG, so garbage tests are reproducible without a rand crate.
    struct XorShift(u64);

    impl XorShift {
        fn next(&mut self) -> u64 {
            let mut x = self.0;
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            self.0 = x;
            x
        }

        fn below(&mut self, n: usize) -> usize {
            (self.next() % n as u64) as usize
        }

        /// Uniform bytes, or (edgy) bytes drawn from the framings' special values.
        fn garbage(&mut self, len: usize, edgy: bool) -> Vec<u8> {
            const SPECIAL: &[u8] = &[
                0x00, 0x01, 0x02, 0x03, 0x04, 0xFE, 0xFF, 0xC0, 0xDB, 0xDC, 0xDD, b'\r', b'\n',
                b'<', b'E', b'N', b'D', b'>', b'a',
            ];
            (0..len)
                .map(|_| {
                    if edgy {
                        SPECIAL[self.below(SPECIAL.len())]
                    } else {
                        (self.next() >> 24) as u8
                    }
                })
                .collect()
        }
    }

    // ---- configuration ----

    #[derive(Debug, serde::Deserialize)]
    struct Device {
        framing: Framing,
    }

    /// `serde_yaml` is serde_norway, under the name the project's Cargo.toml gives it.
    fn parse(yaml: &str) -> Result<Framing, String> {
        serde_yaml::from_str::<Device>(yaml)
            .map(|d| d.framing)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn yaml_accepts_every_documented_form() {
        assert_eq!(parse("framing: lines"), Ok(Framing::Lines));
        assert_eq!(parse("framing: cobs"), Ok(Framing::Cobs));
        assert_eq!(parse("framing: slip"), Ok(Framing::Slip));
        assert_eq!(
            parse(r#"framing: {delimiter: "\r\n"}"#),
            Ok(delimiter("\r\n"))
        );
        assert_eq!(
            parse(r#"framing: {delimiter: "\x02"}"#),
            Ok(delimiter("\u{2}"))
        );
        assert_eq!(
            parse("framing: {length_prefix: {width: 2, endian: little}}"),
            Ok(length_prefix(2, Endian::Little))
        );
        assert_eq!(
            parse("framing: {length_prefix: {width: 4}}"),
            Ok(length_prefix(4, Endian::Big)),
            "endian defaults to big"
        );
        assert_eq!(parse("framing: {fixed: 12}"), Ok(fixed(12)));
        assert_eq!(
            parse("framing:\n  length_prefix:\n    width: 1\n    endian: big\n"),
            Ok(length_prefix(1, Endian::Big)),
            "block style works too"
        );
    }

    #[test]
    fn yaml_delimiter_hex_is_raw_bytes() {
        assert_eq!(
            parse(r#"framing: {delimiter_hex: "AB"}"#),
            Ok(Framing::Delimiter(vec![0xAB]))
        );
        // The YAML escape is a character: two bytes in UTF-8.
        assert_eq!(
            parse(r#"framing: {delimiter: "\xAB"}"#),
            Ok(Framing::Delimiter(vec![0xC2, 0xAB]))
        );
        assert!(parse(r#"framing: {delimiter_hex: "A"}"#)
            .unwrap_err()
            .contains("not hex bytes"));
    }

    #[test]
    fn yaml_fixed_with_start_and_end_bytes_and_gap_forms() {
        assert_eq!(
            parse(r#"framing: {fixed: 10, start_hex: "AA C0", end_hex: "0xAB"}"#),
            Ok(Framing::Fixed(Fixed {
                size: 10,
                start: vec![0xAA, 0xC0],
                end: vec![0xAB]
            }))
        );
        assert_eq!(
            parse("framing: {gap: 3.5}"),
            Ok(Framing::Gap(Gap::CharTenths(35)))
        );
        assert_eq!(
            parse("framing: {gap: 20ms}"),
            Ok(Framing::Gap(Gap::Time(std::time::Duration::from_millis(
                20
            ))))
        );
        let e = Framing::Fixed(Fixed {
            size: 2,
            start: vec![1, 2],
            end: vec![3],
        })
        .validate()
        .unwrap_err();
        assert!(e.contains("do not fit in a 2-byte frame"), "{e}");
        assert!(Framing::Gap(Gap::CharTenths(0)).validate().is_err());
        // 3.5 characters of 11 bits at 9600 baud.
        let d = Gap::CharTenths(35).duration(9600, 11);
        assert_eq!(d.as_micros(), 4010);
    }

    /// An SDS011-like frame: AA C0, six data bytes, a checksum byte, AB.
    fn sds(pm25: u16) -> Vec<u8> {
        let mut f = vec![0xAA, 0xC0];
        f.extend_from_slice(&pm25.to_le_bytes());
        f.extend_from_slice(&[0x10, 0x00, 0x01, 0x02, 0x00, 0xAB]);
        f
    }

    fn sds_framing() -> Framing {
        Framing::Fixed(Fixed {
            size: 10,
            start: vec![0xAA, 0xC0],
            end: vec![0xAB],
        })
    }

    #[test]
    fn fixed_frames_with_start_and_end_bytes_find_the_next_frame_after_a_lost_byte() {
        let mut input = sds(111);
        input.extend(sds(222));
        input.remove(13); // one byte of the second frame lost on the line
        input.extend(sds(333));
        input.extend(sds(444));
        let items = split_invariant(&sds_framing(), 64, &input);
        let frames: Vec<&Decoded> = items
            .iter()
            .filter(|d| matches!(d, Decoded::Frame(_)))
            .collect();
        assert_eq!(
            frames,
            vec![&frame(&sds(111)), &frame(&sds(333)), &frame(&sds(444))],
            "{items:?}"
        );
        let skipped: usize = items
            .iter()
            .map(|d| match d {
                Decoded::Resync(n) => *n,
                _ => 0,
            })
            .sum();
        assert_eq!(skipped, 9, "the damaged frame's bytes are counted");
    }

    #[test]
    fn a_short_reply_or_an_extra_byte_costs_one_frame_not_every_later_one() {
        // A 5-byte exception reply between two full frames, then an extra byte.
        let mut input = sds(1);
        input.extend_from_slice(&[0xAA, 0xC0, 0x83, 0x02, 0xAB]);
        input.extend(sds(2));
        input.push(0x55);
        input.extend(sds(3));
        let items = split_invariant(&sds_framing(), 64, &input);
        let frames: Vec<Decoded> = items
            .iter()
            .filter(|d| matches!(d, Decoded::Frame(_)))
            .cloned()
            .collect();
        assert_eq!(frames, vec![frame(&sds(1)), frame(&sds(2)), frame(&sds(3))]);
        // Without start/end bytes, the same stream is misaligned from the short reply on.
        let plain = feed(&fixed(10), 64, &input);
        assert_eq!(plain[0], frame(&sds(1)));
        assert_ne!(plain[1], frame(&sds(2)));
    }

    #[test]
    fn end_bytes_alone_slide_to_the_next_frame() {
        let f = Framing::Fixed(Fixed {
            size: 4,
            start: vec![],
            end: vec![0xAB],
        });
        let items = split_invariant(&f, 64, b"\x01\x02\xAB\x09\x01\x02\x03\xAB\x05\x06\x07\xAB");
        assert_eq!(
            items,
            vec![
                Decoded::Resync(4),
                frame(b"\x01\x02\x03\xAB"),
                frame(b"\x05\x06\x07\xAB"),
            ]
        );
    }

    #[test]
    fn gap_frames_end_at_silence_and_an_overlong_one_is_counted_once() {
        let g = Framing::Gap(Gap::CharTenths(35));
        let mut dec = FrameDecoder::new(&g, 4);
        let mut buf = BytesMut::new();
        let gap = std::time::Duration::from_millis(5);
        assert_eq!(dec.gap_deadline(gap), None);
        buf.extend_from_slice(b"\x01\x03");
        assert_eq!(dec.decode(&mut buf).unwrap(), Some(Decoded::GapStarted));
        assert!(dec.gap_deadline(gap).is_some());
        buf.extend_from_slice(b"\x02");
        assert_eq!(dec.decode(&mut buf).unwrap(), None);
        assert!(dec.silence(), "a whole frame");
        assert_eq!(&buf[..], b"\x01\x03\x02");
        buf.clear();
        assert_eq!(dec.gap_deadline(gap), None);
        // Overlong: counted once, then discarded until the silence ends it.
        buf.extend_from_slice(b"\x01\x02\x03\x04\x05");
        assert_eq!(dec.decode(&mut buf).unwrap(), Some(TOO_LONG));
        buf.extend_from_slice(b"\x06\x07");
        assert_eq!(dec.decode(&mut buf).unwrap(), None);
        assert!(dec.gap_deadline(gap).is_some());
        assert!(
            !dec.silence(),
            "the end of an overlong frame is not a frame"
        );
        buf.clear();
        buf.extend_from_slice(b"\x09");
        assert_eq!(dec.decode(&mut buf).unwrap(), Some(Decoded::GapStarted));
        assert!(dec.silence());
    }

    #[test]
    fn yaml_rejects_other_forms_with_a_hint() {
        let cases: &[(&str, &str)] = &[
            ("framing: lnes", "unknown variant `lnes`"),
            ("framing: fixed", "{fixed: 12}"),
            ("framing: delimiter", "{delimiter:"),
            ("framing: length_prefix", "{length_prefix: {width: 2}}"),
            ("framing: {}", "empty"),
            ("framing: {lines: }", "write just `lines`"),
            ("framing: {fixed: 12, cobs: }", "write just `cobs`"),
            ("framing: {fixed: 12, delimiter: x}", "names one framing"),
            ("framing: {fixed: 12, start_hex: ZZ}", "not hex bytes"),
            ("framing: {lines: , start_hex: AA}", "write just `lines`"),
            ("framing: {delimiter: x, end_hex: AA}", "go with `fixed`"),
            (
                "framing: {gap: soon}",
                "neither character times nor a duration",
            ),
            ("framing: {gap: -1}", "between 0 and 1000"),
            ("framing: {fixd: 12}", "unknown variant `fixd`"),
            ("framing: {fixed: -1}", "expected usize"),
            (
                "framing: {length_prefix: {width: 2, endain: little}}",
                "unknown field `endain`",
            ),
            (
                "framing: {length_prefix: {width: 2, endian: middle}}",
                "unknown variant `middle`",
            ),
            ("framing: 12", "expected a framing"),
            ("framing: [lines]", "expected a framing"),
            ("framing: !fixed 12", "expected a framing"),
        ];
        for (yaml, hint) in cases {
            let err = parse(yaml).expect_err(yaml);
            assert!(err.contains(hint), "{yaml}: {err:?} lacks {hint:?}");
        }
    }

    #[test]
    fn validate_catches_what_serde_cannot() {
        for f in all_framings() {
            assert_eq!(f.validate(), Ok(()), "{f:?}");
        }
        let empty = delimiter("").validate().unwrap_err();
        assert!(empty.contains("{delimiter: \"\\r\\n\"}"), "{empty}");
        let width = length_prefix(3, Endian::Big).validate().unwrap_err();
        assert!(width.contains("1, 2 or 4"), "{width}");
        assert!(length_prefix(0, Endian::Big).validate().is_err());
        assert!(length_prefix(8, Endian::Little).validate().is_err());
        let fixed = fixed(0).validate().unwrap_err();
        assert!(fixed.contains("{fixed: 12}"), "{fixed}");
    }

    #[test]
    fn names_and_reasons_are_stable_labels() {
        let names: Vec<_> = [
            Framing::Lines,
            delimiter(","),
            Framing::Cobs,
            Framing::Slip,
            length_prefix(1, Endian::Big),
            fixed(1),
            Framing::Gap(Gap::CharTenths(35)),
        ]
        .iter()
        .map(Framing::name)
        .collect();
        let keys: Vec<&str> = FRAMING_NAMES
            .iter()
            .copied()
            .filter(|n| *n != "delimiter_hex") // another spelling of `delimiter`
            .collect();
        assert_eq!(names, keys);
        assert_eq!(DropReason::TooLong.as_str(), "too_long");
        assert_eq!(DropReason::Corrupt.as_str(), "corrupt");
        assert_eq!(DropReason::Incomplete.as_str(), "incomplete");
    }

    // ---- lines ----

    #[test]
    fn lines_split_strip_cr_and_skip_empty() {
        let items = split_invariant(
            &Framing::Lines,
            MAX,
            b"\n\r\nabc\r\n\r\n\n\r\n\rdef\nx\r\r\n12345678\r\nlast",
        );
        assert_eq!(
            items,
            vec![
                frame(b"abc"),
                frame(b"\rdef"),
                frame(b"x\r"),
                frame(b"12345678"),
                INCOMPLETE,
            ],
            "trailing partial line dropped at EOF, counted"
        );
    }

    #[test]
    fn lines_overlong_is_one_drop_then_recovers() {
        let items = split_invariant(
            &Framing::Lines,
            MAX,
            b"123456789\nok\n123456789\r\nabcdefghijklmnopqrstuvwxyz\r\nfine\r\n",
        );
        assert_eq!(
            items,
            vec![TOO_LONG, frame(b"ok"), TOO_LONG, TOO_LONG, frame(b"fine")]
        );
    }

    // ---- delimiter ----

    #[test]
    fn delimiter_splits_and_skips_empty() {
        let f = delimiter("\r\n");
        let items = split_invariant(&f, MAX, b"\r\n\r\na\rb\r\n\r\n\nc\r\nrest\r");
        assert_eq!(items, vec![frame(b"a\rb"), frame(b"\nc"), INCOMPLETE]);
        let items = split_invariant(&delimiter("\x02"), MAX, b"\x02\x02one\x02two\x02");
        assert_eq!(items, vec![frame(b"one"), frame(b"two")]);
        let items = split_invariant(&delimiter("<END>"), MAX, b"a<EN<END><END>b<E<END>");
        assert_eq!(items, vec![frame(b"a<EN"), frame(b"b<E")]);
    }

    #[test]
    fn delimiter_split_between_two_reads() {
        let mut dec = FrameDecoder::new(&delimiter("\r\n"), MAX);
        let mut buf = BytesMut::from(&b"abc\r"[..]);
        assert_eq!(dec.decode(&mut buf).unwrap(), None);
        buf.extend_from_slice(b"\n");
        assert_eq!(dec.decode(&mut buf).unwrap(), Some(frame(b"abc")));
        assert!(buf.is_empty());
    }

    #[test]
    fn delimiter_overlong_discards_with_bounded_memory() {
        let f = delimiter("\r\n");
        let mut dec = FrameDecoder::new(&f, MAX);
        let mut buf = BytesMut::new();
        let mut items = Vec::new();
        // 10 000 bytes of one frame, ending with the delimiter torn between two reads.
        for _ in 0..1000 {
            buf.extend_from_slice(b"0123456789");
            while let Some(item) = dec.decode(&mut buf).unwrap() {
                items.push(item);
            }
            assert!(buf.len() < MAX + 2, "buffered {}", buf.len());
        }
        for piece in [&b"xx\r"[..], b"\nok\r", b"\n"] {
            buf.extend_from_slice(piece);
            while let Some(item) = dec.decode(&mut buf).unwrap() {
                items.push(item);
            }
            assert!(buf.len() < MAX + 2);
        }
        assert_eq!(items, vec![TOO_LONG, frame(b"ok")]);
        // Exactly max_frame fits; one more does not.
        let items = split_invariant(&f, MAX, b"12345678\r\n123456789\r\nok\r\n");
        assert_eq!(items, vec![frame(b"12345678"), TOO_LONG, frame(b"ok")]);
    }

    #[test]
    fn trickle_resumes_the_scan_instead_of_rescanning() {
        let mut dec = FrameDecoder::new(&delimiter("<END>"), 1 << 20);
        let mut buf = BytesMut::new();
        for (i, &b) in b"some payload bytes<EN".iter().enumerate() {
            buf.put_u8(b);
            assert_eq!(dec.decode(&mut buf).unwrap(), None);
            let Kind::Delimited(d) = &dec.kind else {
                unreachable!()
            };
            assert_eq!(d.scanned, (i + 1).saturating_sub(4));
        }
        buf.extend_from_slice(b"D>");
        assert_eq!(
            dec.decode(&mut buf).unwrap(),
            Some(frame(b"some payload bytes"))
        );
    }

    #[test]
    fn frames_are_zero_copy_views_of_the_read_buffer() {
        let cases: Vec<(Framing, Vec<u8>, usize)> = vec![
            (Framing::Lines, b"abc\r\ndef\n".to_vec(), 0),
            (delimiter("\r\n"), b"abc\r\ndef\r\n".to_vec(), 0),
            (
                Framing::Cobs,
                encode_all(&Framing::Cobs, &[b"a\0b", b"c"]),
                0,
            ),
            (
                length_prefix(2, Endian::Big),
                encode_all(&length_prefix(2, Endian::Big), &[b"abc", b"d"]),
                2,
            ),
            (fixed(3), b"abcdef".to_vec(), 0),
        ];
        for (f, bytes, offset) in cases {
            let mut dec = FrameDecoder::new(&f, MAX);
            let mut buf = BytesMut::from(&bytes[..]);
            let base = buf.as_ptr() as usize;
            let Some(Decoded::Frame(first)) = dec.decode(&mut buf).unwrap() else {
                panic!("{f:?}: no frame");
            };
            assert_eq!(first.as_ptr() as usize, base + offset, "{f:?}");
        }
    }

    // ---- COBS ----

    #[test]
    fn cobs_decodes_skips_empty_and_flags_corrupt() {
        let mut input = vec![0, 0];
        input.extend_from_slice(&[0x02, 0x11, 0x02, 0x22, 0x00]); // 11 00 22
        input.extend_from_slice(&[0x01, 0x00]); // empty payload
        input.extend_from_slice(&[0x05, 0x01, 0x02, 0x00]); // code runs past the end
        input.extend_from_slice(&[0x03, 0x41, 0x42, 0x00]); // AB
        input.extend_from_slice(&[0x04, 0x41]); // partial at EOF
        let items = split_invariant(&Framing::Cobs, MAX, &input);
        assert_eq!(
            items,
            vec![frame(b"\x11\x00\x22"), CORRUPT, frame(b"AB"), INCOMPLETE]
        );
    }

    #[test]
    fn cobs_overlong_by_encoded_or_decoded_size() {
        let mut input = encode_all(&Framing::Cobs, &[b"123456789", b"ok"]);
        // Nine zeros encode to ten 0x01 bytes (within the raw limit) but decode past max_frame.
        encode_frame(&Framing::Cobs, &[0; 9], &mut input);
        input.extend_from_slice(&[0x55; 300]);
        input.push(0);
        encode_frame(&Framing::Cobs, &[0; 8], &mut input);
        let items = split_invariant(&Framing::Cobs, MAX, &input);
        assert_eq!(
            items,
            vec![TOO_LONG, frame(b"ok"), TOO_LONG, TOO_LONG, frame(&[0; 8])]
        );
    }

    #[test]
    fn cobs_in_place_decode_matches_the_crates_decode() {
        // Valid encodings, some with one byte changed or cut short: both must agree on all.
        let mut rng = XorShift(0x5eed);
        let mut decoded = 0;
        for _ in 0..5000 {
            let (len, edgy) = (1 + rng.below(600), rng.below(2) == 0);
            let payload = rng.garbage(len, edgy);
            let mut src = cobs::encode_vec(&payload);
            match rng.below(3) {
                0 => {
                    let at = rng.below(src.len());
                    src[at] = 1 + rng.below(255) as u8;
                }
                1 => src.truncate(1 + rng.below(src.len())),
                _ => {}
            }
            let mut dest = vec![0; src.len()];
            let whole = cobs::decode(&src, &mut dest).map(|n| dest[..n].to_vec());
            let mut in_place = src.clone();
            let inplace = cobs::decode_in_place(&mut in_place).map(|n| in_place[..n].to_vec());
            decoded += usize::from(whole.is_ok());
            assert_eq!(whole.ok(), inplace.ok(), "{src:?}");
        }
        assert!(decoded > 2000, "only {decoded} valid frames exercised");
    }

    // ---- SLIP ----

    #[test]
    fn slip_unescapes_and_skips_flush_ends() {
        let input = [
            SLIP_END,
            SLIP_END,
            b'a',
            SLIP_ESC,
            SLIP_ESC_END,
            b'b',
            SLIP_ESC,
            SLIP_ESC_ESC,
            SLIP_END,
            SLIP_END,
            SLIP_END,
            b'c',
            SLIP_END,
            b'd', // partial at EOF
        ];
        let items = split_invariant(&Framing::Slip, MAX, &input);
        assert_eq!(
            items,
            vec![
                frame(&[b'a', SLIP_END, b'b', SLIP_ESC]),
                frame(b"c"),
                INCOMPLETE
            ]
        );
    }

    #[test]
    fn slip_invalid_escape_is_corrupt() {
        let input = [
            b'a', SLIP_ESC, b'x', b'b', SLIP_END, // bad escape: skip to END
            b'c', SLIP_END, // fine
            b'd', SLIP_ESC, SLIP_END, // ESC END: corrupt, and END ends it
            b'e', SLIP_END, // fine
            SLIP_ESC, SLIP_ESC, SLIP_END, b'f', SLIP_END,
        ];
        let items = split_invariant(&Framing::Slip, MAX, &input);
        assert_eq!(
            items,
            vec![
                CORRUPT,
                frame(b"c"),
                CORRUPT,
                frame(b"e"),
                CORRUPT,
                frame(b"f")
            ]
        );
    }

    #[test]
    fn slip_overlong_counts_unescaped_bytes() {
        let mut input = encode_all(&Framing::Slip, &[&[SLIP_END; 8], &[SLIP_ESC; 9], b"ok"]);
        input.extend_from_slice(&[b'z'; 5000]);
        input.extend_from_slice(&encode_all(&Framing::Slip, &[b"12345678"]));
        let items = split_invariant(&Framing::Slip, MAX, &input);
        assert_eq!(
            items,
            vec![
                frame(&[SLIP_END; 8]),
                TOO_LONG,
                frame(b"ok"),
                TOO_LONG,
                frame(b"12345678")
            ]
        );
    }

    // ---- length prefix ----

    #[test]
    fn length_prefix_reads_every_width_and_endian() {
        let cases: &[(u8, Endian, &[u8])] = &[
            (1, Endian::Big, b"\x03abc\x00\x01d"),
            (1, Endian::Little, b"\x03abc\x00\x01d"),
            (2, Endian::Big, b"\x00\x03abc\x00\x00\x00\x01d"),
            (2, Endian::Little, b"\x03\x00abc\x00\x00\x01\x00d"),
            (
                4,
                Endian::Big,
                b"\x00\x00\x00\x03abc\x00\x00\x00\x00\x00\x00\x00\x01d",
            ),
            (
                4,
                Endian::Little,
                b"\x03\x00\x00\x00abc\x00\x00\x00\x00\x01\x00\x00\x00d",
            ),
        ];
        for (width, endian, input) in cases {
            let mut input = input.to_vec();
            input.push(*width); // a header fragment, dropped at EOF
            let f = length_prefix(*width, *endian);
            assert_eq!(
                split_invariant(&f, MAX, &input),
                vec![frame(b"abc"), frame(b"d"), INCOMPLETE],
                "{f:?}"
            );
        }
    }

    #[test]
    fn length_prefix_overlong_is_skipped_without_buffering() {
        let f = length_prefix(2, Endian::Big);
        let mut dec = FrameDecoder::new(&f, MAX);
        let mut buf = BytesMut::from(&[0x03, 0xE8][..]); // 1000 bytes follow
        assert_eq!(dec.decode(&mut buf).unwrap(), Some(TOO_LONG));
        for _ in 0..99 {
            buf.extend_from_slice(&[0xAA; 10]);
            assert_eq!(dec.decode(&mut buf).unwrap(), None);
            assert!(buf.is_empty(), "skipped bytes are not buffered");
        }
        buf.extend_from_slice(&[0xAA; 10]);
        buf.extend_from_slice(b"\x00\x02ok");
        assert_eq!(dec.decode(&mut buf).unwrap(), Some(frame(b"ok")));

        let mut input = vec![0x00, 0x09];
        input.extend_from_slice(b"123456789\x00\x0812345678");
        assert_eq!(
            split_invariant(&f, MAX, &input),
            vec![TOO_LONG, frame(b"12345678")]
        );
    }

    // ---- fixed ----

    #[test]
    fn fixed_cuts_exact_sizes_regardless_of_max_frame() {
        let items = split_invariant(&fixed(3), 1, b"abcdefgh");
        assert_eq!(items, vec![frame(b"abc"), frame(b"def"), INCOMPLETE]);
    }

    // ---- EOF, invalid configurations, round trips ----

    #[test]
    fn eof_drops_partial_frame_and_resets() {
        let mut dec = FrameDecoder::new(&Framing::Lines, MAX);
        let mut buf = BytesMut::from(&b"abc\ndef"[..]);
        assert_eq!(dec.decode_eof(&mut buf).unwrap(), Some(frame(b"abc")));
        assert_eq!(dec.decode_eof(&mut buf).unwrap(), Some(INCOMPLETE));
        assert_eq!(dec.decode_eof(&mut buf).unwrap(), None);
        assert!(buf.is_empty());

        // State carried across reads (discard, escape, skip) does not leak past EOF.
        // An overlong frame being skipped was counted as too long already: not incomplete.
        type Case = (Framing, Vec<u8>, Vec<u8>, Option<Decoded>);
        let cases: Vec<Case> = vec![
            (Framing::Lines, vec![b'x'; 50], b"ok\n".to_vec(), None),
            (
                Framing::Slip,
                vec![b'a', SLIP_ESC],
                b"ok\xC0".to_vec(),
                Some(INCOMPLETE),
            ),
            (
                length_prefix(1, Endian::Big),
                vec![200, 1, 2],
                b"\x02ok".to_vec(),
                None,
            ),
        ];
        for (f, before, after, at_eof) in cases {
            let mut dec = FrameDecoder::new(&f, MAX);
            let mut buf = BytesMut::from(&before[..]);
            while dec.decode(&mut buf).unwrap().is_some() {}
            assert_eq!(dec.decode_eof(&mut buf).unwrap(), at_eof, "{f:?}");
            assert_eq!(dec.decode_eof(&mut buf).unwrap(), None);
            buf.extend_from_slice(&after);
            assert_eq!(dec.decode(&mut buf).unwrap(), Some(frame(b"ok")), "{f:?}");
        }
    }

    #[test]
    fn invalid_framings_drop_input_without_panicking() {
        for f in [delimiter(""), fixed(0), length_prefix(3, Endian::Big)] {
            let mut dec = FrameDecoder::new(&f, MAX);
            let mut buf = BytesMut::from(&b"abc\n\0\xC0"[..]);
            assert_eq!(dec.decode(&mut buf).unwrap(), None);
            assert!(buf.is_empty());
            let mut out = Vec::new();
            encode_frame(&f, b"abc", &mut out);
            assert!(out.is_empty(), "{f:?}");
        }
    }

    #[test]
    fn max_frame_zero_drops_everything_without_panicking() {
        for f in all_framings() {
            let input = encode_all(&f, &[b"abcde", b"12345"]);
            let items = split_invariant(&f, 0, &input);
            let expected = if f == fixed(5) {
                vec![frame(b"abcde"), frame(b"12345")]
            } else {
                vec![TOO_LONG, TOO_LONG]
            };
            assert_eq!(items, expected, "{f:?}");
        }
    }

    #[test]
    fn encode_writes_the_documented_wire_format() {
        let enc = |f: &Framing, p: &[u8]| encode_all(f, &[p]);
        assert_eq!(enc(&Framing::Lines, b"ab"), b"ab\n");
        assert_eq!(enc(&delimiter("\r\n"), b"ab"), b"ab\r\n");
        assert_eq!(
            enc(&Framing::Cobs, b"\x11\x00\x22"),
            b"\x02\x11\x02\x22\x00"
        );
        assert_eq!(
            enc(&Framing::Slip, &[1, SLIP_END, SLIP_ESC]),
            [
                SLIP_END,
                1,
                SLIP_ESC,
                SLIP_ESC_END,
                SLIP_ESC,
                SLIP_ESC_ESC,
                SLIP_END
            ]
        );
        assert_eq!(enc(&length_prefix(2, Endian::Little), b"ab"), b"\x02\x00ab");
        assert_eq!(enc(&length_prefix(4, Endian::Big), b"ab"), b"\0\0\0\x02ab");
        assert_eq!(enc(&fixed(2), b"ab"), b"ab");
        // Too long for a one-byte header: nothing is written.
        assert!(enc(&length_prefix(1, Endian::Big), &[0; 256]).is_empty());
        assert_eq!(enc(&length_prefix(1, Endian::Big), &[7; 255]).len(), 256);
    }

    /// Feeds `input` cut at the given points (any chunking a serial driver may produce).
    fn feed_cut(framing: &Framing, max: usize, input: &[u8], cuts: &[usize]) -> Vec<Decoded> {
        let mut dec = FrameDecoder::new(framing, max);
        let mut buf = BytesMut::new();
        let mut items = Vec::new();
        let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
        points.push(0);
        points.push(input.len());
        points.sort_unstable();
        for w in points.windows(2) {
            buf.extend_from_slice(&input[w[0]..w[1]]);
            while let Some(item) = dec.decode(&mut buf).unwrap() {
                items.push(item);
            }
        }
        while let Some(item) = dec.decode_eof(&mut buf).unwrap() {
            items.push(item);
        }
        items
    }

    proptest::proptest! {
        /// Every framer decodes exactly what its encoder wrote, whatever the payloads and
        /// however the byte stream is cut into reads.
        #[test]
        fn every_framer_decodes_what_its_encoder_wrote_under_any_chunking(
            which in 0usize..9,
            payloads in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 1..300), 1..8),
            cuts in proptest::collection::vec(proptest::num::usize::ANY, 0..12),
        ) {
            let f = [
                Framing::Lines,
                delimiter("\r\n"),
                delimiter("<END>"),
                Framing::Cobs,
                Framing::Slip,
                length_prefix(1, Endian::Big),
                length_prefix(2, Endian::Little),
                length_prefix(4, Endian::Big),
                fixed(7),
            ][which].clone();
            // Make each payload one the framing can carry.
            let payloads: Vec<Vec<u8>> = payloads
                .into_iter()
                .map(|mut p| {
                    match &f {
                        Framing::Lines => {
                            p.retain(|&b| b != b'\n');
                            while p.last() == Some(&b'\r') {
                                p.pop();
                            }
                        }
                        Framing::Delimiter(d) => {
                            while let Some(i) = memmem::find(&p, d.as_slice()) {
                                p.remove(i);
                            }
                        }
                        Framing::LengthPrefix(lp) if lp.width == 1 => p.truncate(255),
                        Framing::Fixed(f) => p.resize(f.size, 0x5a),
                        _ => {}
                    }
                    p
                })
                .filter(|p| !p.is_empty())
                .collect();
            let refs: Vec<&[u8]> = payloads.iter().map(|p| &p[..]).collect();
            let input = encode_all(&f, &refs);
            let items = feed_cut(&f, 4096, &input, &cuts);
            let want: Vec<Decoded> = payloads.iter().map(|p| frame(p)).collect();
            proptest::prop_assert_eq!(items, want, "{:?}", f);
        }
    }

    #[test]
    fn encode_then_decode_round_trips() {
        let all: Vec<u8> = (0..=255).collect();
        let mut payloads: Vec<Vec<u8>> = vec![
            b"a".to_vec(),
            b"hello, world".to_vec(),
            vec![0],
            vec![0, 0, 0],
            vec![SLIP_END],
            vec![SLIP_ESC],
            vec![
                SLIP_ESC,
                SLIP_ESC_END,
                SLIP_END,
                SLIP_ESC_ESC,
                0,
                b'\r',
                b'x',
            ],
            all.clone(),
            all.iter().rev().copied().collect(),
        ];
        for len in [253, 254, 255, 256, 507, 508, 509, 1000] {
            payloads.push(vec![0x11; len]);
            payloads.push((0..len).map(|i| (i % 7) as u8).collect());
        }
        for f in all_framings() {
            let fits = |p: &Vec<u8>| match &f {
                Framing::Lines => !p.contains(&b'\n') && p.last() != Some(&b'\r'),
                Framing::Delimiter(d) => memmem::find(p, d.as_slice()).is_none(),
                Framing::LengthPrefix(lp) if lp.width == 1 => p.len() <= 255,
                _ => true,
            };
            let chosen: Vec<&Vec<u8>> = payloads.iter().filter(|p| fits(p)).collect();
            assert!(chosen.len() >= 5, "{f:?}");
            for p in chosen {
                let f = match f {
                    Framing::Fixed(_) => fixed(p.len()),
                    ref other => other.clone(),
                };
                let input = encode_all(&f, &[p, p]);
                let items = feed(&f, 4096, &input);
                assert_eq!(items, vec![frame(p), frame(p)], "{f:?} {p:?}");
            }
        }
    }

    #[test]
    fn empty_payloads_produce_no_items() {
        for f in all_framings() {
            if matches!(f, Framing::Fixed(_)) {
                continue;
            }
            let input = encode_all(&f, &[b"", b"x", b""]);
            assert_eq!(split_invariant(&f, MAX, &input), vec![frame(b"x")], "{f:?}");
        }
    }

    #[test]
    fn mixed_streams_decode_identically_in_every_chunking() {
        for f in all_framings() {
            let mut input = Vec::new();
            if let Framing::Fixed(Fixed { size: n, .. }) = f {
                input.extend((0..n * 7).map(|i| i as u8));
            } else {
                for p in [&b"one"[..], b"", b"12345678", b"x", b"123456789012", b"two"] {
                    encode_frame(&f, p, &mut input);
                }
            }
            input.extend_from_slice(&input.clone()[..3]); // partial frame at EOF
            let items = split_invariant(&f, MAX, &input);
            assert!(!items.is_empty(), "{f:?}");
        }
    }

    // ---- garbage ----

    /// A delimiter that ends whatever frame the garbage left open, for resync checks.
    fn resync(f: &Framing) -> Option<Vec<u8>> {
        match f {
            Framing::Lines => Some(b"\n".to_vec()),
            Framing::Delimiter(d) => Some(d.as_slice().to_vec()),
            Framing::Cobs => Some(vec![0]),
            Framing::Slip => Some(vec![SLIP_END]),
            Framing::LengthPrefix(_) | Framing::Fixed(_) | Framing::Gap(_) => None,
        }
    }

    #[test]
    fn garbage_before_start_and_end_bytes_or_a_gap_is_bounded_and_resyncs() {
        for seed in 1..=6u64 {
            let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let garbage = rng.garbage(20_000, seed % 2 == 0);
            for f in [sds_framing(), Framing::Gap(Gap::CharTenths(35))] {
                let mut dec = FrameDecoder::new(&f, 100);
                let mut buf = BytesMut::new();
                for piece in garbage.chunks(1 + (seed as usize * 7) % 60) {
                    buf.extend_from_slice(piece);
                    while dec.decode(&mut buf).unwrap().is_some() {}
                    assert!(buf.len() <= 101, "{f:?} seed {seed}: holds {}", buf.len());
                }
                if matches!(f, Framing::Gap(_)) {
                    dec.silence();
                    buf.clear();
                }
                buf.extend_from_slice(&sds(4242));
                let mut items = Vec::new();
                while let Some(item) = dec.decode(&mut buf).unwrap() {
                    items.push(item);
                }
                if matches!(f, Framing::Gap(_)) {
                    assert!(dec.silence());
                    items.push(Decoded::Frame(buf.split().freeze()));
                }
                assert_eq!(items.last(), Some(&frame(&sds(4242))), "{f:?} seed {seed}");
            }
        }
    }

    #[test]
    fn garbage_never_panics_stays_bounded_and_resyncs() {
        const GMAX: usize = 100;
        for f in all_framings() {
            for seed in 1..=6u64 {
                let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
                let garbage = rng.garbage(20_000, seed % 2 == 0);
                let mut dec = FrameDecoder::new(&f, GMAX);
                let mut buf = BytesMut::new();
                let mut rest = &garbage[..];
                while !rest.is_empty() {
                    let (piece, tail) = rest.split_at((1 + rng.below(64)).min(rest.len()));
                    rest = tail;
                    buf.extend_from_slice(piece);
                    while dec.decode(&mut buf).unwrap().is_some() {}
                    let held = buf.len() + dec.held();
                    assert!(held <= GMAX + 8, "{f:?} seed {seed}: holds {held}");
                }
                let Some(mut clean) = resync(&f) else {
                    continue;
                };
                encode_frame(&f, b"valid frame", &mut clean);
                buf.extend_from_slice(&clean);
                let mut last = None;
                while let Some(item) = dec.decode(&mut buf).unwrap() {
                    last = Some(item);
                }
                assert_eq!(last, Some(frame(b"valid frame")), "{f:?} seed {seed}");
                assert!(buf.is_empty() && dec.held() == 0);
            }
        }
    }

    #[test]
    fn garbage_decodes_identically_in_every_chunking() {
        let mut rng = XorShift(42);
        for f in all_framings() {
            for edgy in [false, true] {
                let garbage = rng.garbage(300, edgy);
                split_invariant(&f, 16, &garbage);
            }
        }
    }
}

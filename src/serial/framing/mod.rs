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
//! the COBS byte transform comes from the `cobs` crate. `spec` reads the YAML forms; `cut`
//! holds the splitting state of the framings cut by a delimiter, a prefix, a size or silence;
//! `told` that of the frames that tell where they end (telegrams, length fields, Modbus RTU).

use std::fmt;
use std::io;

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;

mod cut;
mod mux;
mod spec;
#[cfg(test)]
mod tests;
mod told;

pub use mux::{can_share, start_marker, Mux, Protocol, Verify};

use cut::{next_fixed, Delimited, Post, Prefixed, Slip};
use told::{LengthState, TelegramState};

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
/// `{fixed: 10, start_hex: "AA", end_hex: "AB"}`, `{gap: 3.5}` / `{gap: 20ms}`,
/// `{telegram: {start: "/", end: "!", trailer: 4}}`,
/// `{length: {start_hex: "B5 62", at: 4, width: 2, endian: little, trailer: 2}}`.
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
    /// A frame runs from start bytes to end bytes plus a fixed-size trailer: multi-line text
    /// telegrams (DSMR P1: from `/` to `!` and four CRC hex digits). Recovers at the next start.
    Telegram(Telegram),
    /// Binary frames that carry their own length: start bytes, a length field at a fixed offset,
    /// the counted bytes and a trailer (a checksum). Recovers at the next start bytes.
    Length(LengthField),
    /// Modbus RTU responses, cut by their function code (a read: address, function, byte count,
    /// data, CRC; a write's echo: 8 bytes; an exception: 5), from the given unit address if
    /// set. A byte that cannot begin a response is skipped as resync.
    ModbusRtu(Option<u8>),
}

/// A `telegram` framing: what begins and ends a frame, and the bytes that follow the end.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Telegram {
    /// Bytes every frame starts with (non-empty).
    pub start: Vec<u8>,
    /// Bytes that end a frame's body (non-empty).
    pub end: Vec<u8>,
    /// Bytes after `end` that still belong to the frame (DSMR: the 4 CRC hex digits).
    pub trailer: usize,
}

/// A `length` framing: where the length field sits and what it counts.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct LengthField {
    /// Bytes every frame starts with (non-empty: they let the decoder find the next frame).
    pub start: Vec<u8>,
    /// Offset of the length field from the frame's first byte.
    pub at: usize,
    /// Length field size in bytes: 1, 2 or 4.
    pub width: u8,
    /// Byte order of the length field.
    pub endian: Endian,
    /// Bytes the frame has after the ones the field counts (a 2-byte checksum: 2). Negative when
    /// the field also counts bytes before it (a field counting the whole frame: `-(at + width)`).
    pub trailer: i64,
    /// Bytes every frame ends with (empty: any); a frame that does not is skipped as resync.
    pub end: Vec<u8>,
}

impl LengthField {
    /// The whole frame's size when the length field reads `value`; None when it is impossible
    /// (shorter than the header, or not representable).
    fn frame_size(&self, value: usize) -> Option<usize> {
        let header = self.at.checked_add(usize::from(self.width))?;
        let total = i64::try_from(header.checked_add(value)?).ok()? + self.trailer;
        let total = usize::try_from(total).ok()?;
        (total >= header && total >= self.start.len() + self.end.len()).then_some(total)
    }
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
            Framing::Telegram(t) if t.start.is_empty() || t.end.is_empty() => Err(
                "a telegram needs the text that starts and the text that ends it: write e.g. \
                 `{telegram: {start: \"/\", end: \"!\", trailer: 4}}` (DSMR P1)"
                    .to_string(),
            ),
            Framing::Length(l) if l.start.is_empty() => Err(
                "a length framing needs start_hex, the bytes every frame begins with (they let \
                 the decoder find the next frame after a lost byte): write e.g. `{length: \
                 {start_hex: \"B5 62\", at: 4, width: 2, endian: little, trailer: 2}}`, or \
                 `{length_prefix: {width: 2}}` for frames that are only a length and a payload"
                    .to_string(),
            ),
            Framing::Length(l) if !matches!(l.width, 1 | 2 | 4) => Err(format!(
                "length width {} is not supported: write 1, 2 or 4 (bytes of the length field)",
                l.width
            )),
            Framing::Length(l) if l.at < l.start.len() => Err(format!(
                "the length field at byte {} overlaps start_hex ({} bytes): `at` counts from \
                 the frame's first byte, start bytes included (write at: {} or more)",
                l.at,
                l.start.len(),
                l.start.len()
            )),
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
            Framing::Telegram(_) => "telegram",
            Framing::Length(_) => "length",
            Framing::ModbusRtu(_) => "modbus_rtu",
        }
    }

    /// The byte sequences that begin or end a frame in this framing (a delimiter, start and
    /// end bytes), with what they are called: a value a client places into a command's text
    /// must not carry them, or the device would read the rest as another frame.
    pub fn markers(&self) -> Vec<(&[u8], &'static str)> {
        let mut out: Vec<(&[u8], &'static str)> = Vec::new();
        match self {
            Framing::Lines => out.push((b"\n", "line end")),
            Framing::Delimiter(d) => out.push((d, "frame delimiter")),
            Framing::Cobs => out.push((&[0], "frame delimiter")),
            Framing::Slip => out.push((&[SLIP_END], "frame end")),
            Framing::Fixed(f) => {
                out.push((&f.start, "frame start"));
                out.push((&f.end, "frame end"));
            }
            Framing::Telegram(t) => {
                out.push((&t.start, "frame start"));
                out.push((&t.end, "frame end"));
            }
            Framing::Length(l) => {
                out.push((&l.start, "frame start"));
                out.push((&l.end, "frame end"));
            }
            Framing::LengthPrefix(_) | Framing::Gap(_) | Framing::ModbusRtu(_) => {}
        }
        out.retain(|(m, _)| !m.is_empty());
        out
    }

    /// How a frame is found again after a lost or extra byte, for the docs and `check`.
    pub fn recovers(&self) -> bool {
        match self {
            Framing::Fixed(f) => !f.start.is_empty() || !f.end.is_empty(),
            // A lost byte makes a payload byte the next header, and so on.
            Framing::LengthPrefix(_) => false,
            _ => true,
        }
    }
}

/// Bytes written as hex the way datasheets print them (`"AA"`, `"aa c0"`, `"0xAA 0x01"`):
/// None when they are not pairs of hex digits. For `start_hex`/`end_hex` and polls' `write_hex`.
pub fn hex_text(text: &str) -> Option<Vec<u8>> {
    let digits: String = text
        .split_whitespace()
        .map(|w| w.trim_start_matches("0x").trim_start_matches("0X"))
        .collect();
    hex::decode(digits).ok()
}

/// One decoder item: a frame, or a counted reason why bytes were dropped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A complete payload, without delimiter, prefix or encoding.
    Frame(Bytes),
    /// A frame was discarded; decoding continues with the next one.
    Dropped(DropReason),
    /// This many bytes were skipped to find the next frame (`fixed` or `length` frames without
    /// their start/end bytes, a telegram cut short by the next one's start: a lost or extra
    /// byte on the line).
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
    /// Boxed: two memmem finders are large beside the other states.
    Telegram(Box<TelegramState>),
    Length(LengthState),
    ModbusRtu(Option<u8>),
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
    /// Every whole frame `framing` cuts from `bytes` (what a device would read had they come
    /// on its line at once), for checks outside a line: test vectors, `scan`.
    pub fn frames_in(framing: &Framing, max_frame: usize, bytes: &[u8]) -> Vec<Bytes> {
        use tokio_util::codec::Decoder as _;
        let mut decoder = Self::new(framing, max_frame);
        let mut buf = BytesMut::from(bytes);
        let mut out = Vec::new();
        while let Ok(Some(item)) = decoder.decode(&mut buf) {
            if let Decoded::Frame(f) = item {
                out.push(f);
            }
        }
        while let Ok(Some(item)) = decoder.decode_eof(&mut buf) {
            if let Decoded::Frame(f) = item {
                out.push(f);
            }
        }
        out
    }

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
                Framing::Telegram(t) => Kind::Telegram(Box::new(TelegramState::new(t.clone()))),
                Framing::Length(l) => Kind::Length(LengthState {
                    field: l.clone(),
                    discarding: false,
                }),
                Framing::ModbusRtu(unit) => Kind::ModbusRtu(*unit),
            }
        };
        FrameDecoder { max_frame, kind }
    }

    /// Forgets any partial frame (after EOF, or when stale input is flushed before a
    /// request), so the decoder can be reused.
    pub fn reset(&mut self) {
        match &mut self.kind {
            Kind::Delimited(d) => {
                d.scanned = 0;
                d.discarding = false;
            }
            Kind::Slip(s) => *s = Slip::default(),
            Kind::LengthPrefix(p) => p.skip = 0,
            Kind::Gap(g) => *g = GapState::default(),
            Kind::Telegram(t) => t.reset(),
            Kind::Length(l) => l.discarding = false,
            Kind::Fixed(_) | Kind::ModbusRtu(_) | Kind::Invalid => {}
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
            Kind::Telegram(t) => t.in_frame(buf),
            Kind::Length(l) => !l.discarding && buf.starts_with(&l.field.start),
            Kind::ModbusRtu(_) => !buf.is_empty(),
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
            Kind::Telegram(t) => t.next(buf, max),
            Kind::Length(l) => l.next(buf, max),
            Kind::ModbusRtu(unit) => told::next_modbus(buf, *unit, max),
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
        Framing::Fixed(_)
        | Framing::Gap(_)
        | Framing::Telegram(_)
        | Framing::Length(_)
        | Framing::ModbusRtu(_) => out.extend_from_slice(payload),
    }
}

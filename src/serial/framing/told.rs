//! The framings whose frames say where they end: telegrams (start and end text plus a
//! trailer), frames with a length field, and Modbus RTU responses (their function code gives
//! the length). Each skips what cannot begin a frame and reports it as resync.

use bytes::{Buf, BytesMut};
use memchr::memmem;

use super::cut::read_len;
use super::*;

/// Skips to the next `start` in `buf`: Some(bytes skipped) when one was found (the buffer now
/// begins with it), None when none is there yet (the last `start.len() - 1` bytes are kept, as
/// they could begin a start torn across reads; the rest is skipped and added to `skipped`).
fn seek_start(buf: &mut BytesMut, start: &[u8], skipped: &mut usize) -> bool {
    match memmem::find(buf, start) {
        Some(at) => {
            buf.advance(at);
            *skipped += at;
            true
        }
        None => {
            let drop = buf.len() - (start.len() - 1).min(buf.len());
            buf.advance(drop);
            *skipped += drop;
            false
        }
    }
}

/// A `telegram` in progress: how far the search for its end (or for the next start, which
/// means this one was cut short) has got.
#[derive(Debug)]
pub(super) struct TelegramState {
    spec: Telegram,
    start: memmem::Finder<'static>,
    end: memmem::Finder<'static>,
    /// Neither the end nor another start begins before this offset of the frame in `buf`.
    scanned: usize,
    /// An overlong telegram was counted; its bytes are skipped silently up to the next start.
    discarding: bool,
}

impl TelegramState {
    pub(super) fn new(spec: Telegram) -> Self {
        TelegramState {
            start: memmem::Finder::new(&spec.start).into_owned(),
            end: memmem::Finder::new(&spec.end).into_owned(),
            spec,
            scanned: 0,
            discarding: false,
        }
    }

    pub(super) fn reset(&mut self) {
        self.scanned = 0;
        self.discarding = false;
    }

    pub(super) fn in_frame(&self, buf: &BytesMut) -> bool {
        !self.discarding && buf.starts_with(&self.spec.start)
    }

    /// Telegrams from start to end plus trailer. Line breaks between telegrams are not
    /// counted; other bytes before a start, and a telegram cut short by the next start, are
    /// reported as one [`Decoded::Resync`] before the telegram that follows.
    pub(super) fn next(&mut self, buf: &mut BytesMut, max: usize) -> Option<Decoded> {
        let mut skipped = 0;
        loop {
            if !buf.starts_with(&self.spec.start) {
                let (cut, found) = match self.start.find(buf) {
                    Some(at) => (at, true),
                    None => (
                        buf.len() - (self.spec.start.len() - 1).min(buf.len()),
                        false,
                    ),
                };
                if !self.discarding {
                    skipped += noise(&buf[..cut]);
                }
                buf.advance(cut);
                self.scanned = 0;
                if !found {
                    return (skipped > 0).then_some(Decoded::Resync(skipped));
                }
            }
            self.discarding = false;
            let body = self.spec.start.len();
            let from = self.scanned.max(body).min(buf.len());
            let end = self.end.find(&buf[from..]).map(|at| from + at);
            let restart = self.start.find(&buf[from..]).map(|at| from + at);
            match (end, restart) {
                (_, Some(again)) if end.is_none_or(|e| again < e) => {
                    // A new telegram began before this one ended: this one lost its end.
                    skipped += again;
                    buf.advance(again);
                    self.scanned = 0;
                    continue;
                }
                (Some(e), _) => {
                    let total = e + self.spec.end.len() + self.spec.trailer;
                    if total > max {
                        return Some(self.too_long(buf));
                    }
                    if buf.len() < total {
                        self.scanned = e;
                        return (skipped > 0).then_some(Decoded::Resync(skipped));
                    }
                    if skipped > 0 {
                        self.scanned = e;
                        return Some(Decoded::Resync(skipped));
                    }
                    self.scanned = 0;
                    return Some(Decoded::Frame(buf.split_to(total).freeze()));
                }
                (None, _) => {
                    if buf.len() > max {
                        return Some(self.too_long(buf));
                    }
                    let tail = self.spec.end.len().max(self.spec.start.len()) - 1;
                    self.scanned = buf.len().saturating_sub(tail);
                    return (skipped > 0).then_some(Decoded::Resync(skipped));
                }
            }
        }
    }

    /// Counts an overlong telegram and skips its bytes up to the next start.
    fn too_long(&mut self, buf: &mut BytesMut) -> Decoded {
        buf.advance(self.spec.start.len());
        self.discarding = true;
        self.scanned = 0;
        Decoded::Dropped(DropReason::TooLong)
    }
}

/// Bytes between telegrams that are not line breaks or spaces: what a resync reports.
pub(super) fn noise(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .filter(|b| !matches!(b, b'\r' | b'\n' | b' ' | b'\t'))
        .count()
}

/// `length` frames: start bytes, a length field, counted bytes, a trailer.
#[derive(Debug)]
pub(super) struct LengthState {
    pub(super) field: LengthField,
    /// An overlong frame was counted: bytes up to the next start are skipped silently.
    pub(super) discarding: bool,
}

impl LengthState {
    /// A candidate whose length is impossible or whose end bytes do not match is not a frame:
    /// the search goes on one byte further, as for `fixed`. A length beyond `max` is counted
    /// once as too long. Skipped bytes come as one [`Decoded::Resync`] before the next frame.
    pub(super) fn next(&mut self, buf: &mut BytesMut, max: usize) -> Option<Decoded> {
        let f = &self.field;
        let header = f.at + usize::from(f.width);
        let mut skipped = 0;
        loop {
            let before = skipped;
            let found = seek_start(buf, &f.start, &mut skipped);
            if self.discarding {
                skipped = before;
            }
            if !found {
                break;
            }
            self.discarding = false;
            let Some(field) = buf.get(f.at..header) else {
                break;
            };
            let Some(total) = f.frame_size(read_len(field, f.endian == Endian::Little)) else {
                buf.advance(1);
                skipped += 1;
                continue;
            };
            if total > max {
                if skipped > 0 {
                    // Report what was skipped first; the next call counts this frame.
                    return Some(Decoded::Resync(skipped));
                }
                buf.advance(1);
                self.discarding = true;
                return Some(Decoded::Dropped(DropReason::TooLong));
            }
            if buf.len() < total {
                reserve_upto(buf, total - buf.len());
                break;
            }
            if !f.end.is_empty() && buf[total - f.end.len()..total] != f.end[..] {
                buf.advance(1);
                skipped += 1;
                continue;
            }
            if skipped > 0 {
                return Some(Decoded::Resync(skipped));
            }
            return Some(Decoded::Frame(buf.split_to(total).freeze()));
        }
        (skipped > 0).then_some(Decoded::Resync(skipped))
    }
}

/// The size of the Modbus RTU response that begins `buf` (address, function, ...), None while
/// too few bytes are there to tell, Some(0) when its function is none a master asked for.
fn modbus_size(buf: &[u8]) -> Option<usize> {
    let function = *buf.get(1)?;
    Some(match function {
        // Exception: address, function | 0x80, code, CRC.
        0x81..=0x84 | 0x85 | 0x86 | 0x8F | 0x90 => 5,
        // Reads: address, function, byte count, data, CRC.
        0x01..=0x04 => 3 + usize::from(*buf.get(2)?) + 2,
        // Writes echo address, function, address, value or count, CRC.
        0x05 | 0x06 | 0x0F | 0x10 => 8,
        _ => 0,
    })
}

/// Modbus RTU responses (from `unit` only, when set). A byte that cannot begin one (another
/// address, a function no master asks for, a read longer than `max`) is skipped and reported
/// as [`Decoded::Resync`]; the response's CRC is the device checksum's to check.
pub(super) fn next_modbus(buf: &mut BytesMut, unit: Option<u8>, max: usize) -> Option<Decoded> {
    let mut skipped = 0;
    while let Some(&address) = buf.first() {
        let size = if unit.is_some_and(|u| u != address) {
            Some(0)
        } else {
            modbus_size(buf)
        };
        match size {
            None => break,
            Some(n) if n == 0 || n > max.max(5) => {
                buf.advance(1);
                skipped += 1;
            }
            Some(n) if buf.len() < n => {
                reserve_upto(buf, n - buf.len());
                break;
            }
            Some(n) => {
                if skipped > 0 {
                    return Some(Decoded::Resync(skipped));
                }
                return Some(Decoded::Frame(buf.split_to(n).freeze()));
            }
        }
    }
    (skipped > 0).then_some(Decoded::Resync(skipped))
}

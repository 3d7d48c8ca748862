//! Each framing's splitting: delimiters found with memchr/memmem resuming where they stopped,
//! SLIP unescaping, length prefixes, fixed frames with their start/end bytes, and gap frames'
//! silence bookkeeping. Frames leave as zero-copy `split_to` views of the read buffer.

use bytes::{Buf, BufMut, BytesMut};
use memchr::memmem;

use super::*;

/// What to do with the raw bytes between two delimiters.
#[derive(Debug, Clone, Copy)]
pub(super) enum Post {
    /// Strip one trailing `\r` (lines).
    StripCr,
    /// Use as-is (delimiter).
    Plain,
    /// COBS-decode in place.
    Cobs,
}

/// The delimiter to search for: memchr for one byte, memmem otherwise.
#[derive(Debug)]
pub(super) enum Needle {
    Byte(u8),
    Seq(Box<memmem::Finder<'static>>),
}

impl Needle {
    pub(super) fn new(delimiter: &[u8]) -> Self {
        match delimiter {
            [b] => Needle::Byte(*b),
            _ => Needle::Seq(Box::new(memmem::Finder::new(delimiter).into_owned())),
        }
    }

    pub(super) fn len(&self) -> usize {
        match self {
            Needle::Byte(_) => 1,
            Needle::Seq(f) => f.needle().len(),
        }
    }

    pub(super) fn find(&self, haystack: &[u8]) -> Option<usize> {
        match self {
            Needle::Byte(b) => memchr::memchr(*b, haystack),
            Needle::Seq(f) => f.find(haystack),
        }
    }
}

/// Splitter for delimiter-terminated framings (lines, delimiter, COBS).
#[derive(Debug)]
pub(super) struct Delimited {
    pub(super) needle: Needle,
    /// Most raw bytes a frame may have before its delimiter.
    pub(super) limit: usize,
    /// No delimiter starts before this offset of the buffer: the next search resumes here.
    pub(super) scanned: usize,
    /// An overlong frame was reported; bytes are dropped up to and including the next delimiter.
    pub(super) discarding: bool,
    pub(super) post: Post,
}

impl Delimited {
    pub(super) fn new(delimiter: &[u8], limit: usize, post: Post) -> Self {
        Delimited {
            needle: Needle::new(delimiter),
            limit,
            scanned: 0,
            discarding: false,
            post,
        }
    }

    pub(super) fn next(&mut self, buf: &mut BytesMut, max: usize) -> Option<Decoded> {
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
    pub(super) fn cut(&mut self, buf: &mut BytesMut) -> Cut {
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
pub(super) enum Cut {
    Raw(BytesMut),
    TooLong,
    NeedMore,
}

/// Turns raw bytes between delimiters into an item; None for an empty payload.
pub(super) fn finish(post: Post, mut raw: BytesMut, max: usize) -> Option<Decoded> {
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
pub(super) struct Slip {
    /// Unescaped payload of the current frame so far.
    pub(super) out: BytesMut,
    /// The previous byte was ESC.
    pub(super) escaped: bool,
    /// The current frame was reported dropped; skip to the next END.
    pub(super) discarding: bool,
}

impl Slip {
    pub(super) fn next(&mut self, buf: &mut BytesMut, max: usize) -> Option<Decoded> {
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

    pub(super) fn drop_too_long(&mut self) -> Decoded {
        self.out.clear();
        self.discarding = true;
        Decoded::Dropped(DropReason::TooLong)
    }
}

/// Length-prefixed frames.
#[derive(Debug)]
pub(super) struct Prefixed {
    /// Header bytes: 1, 2 or 4.
    pub(super) width: usize,
    pub(super) little: bool,
    /// Bytes of an overlong frame still to be skipped without buffering.
    pub(super) skip: usize,
}

impl Prefixed {
    pub(super) fn next(&mut self, buf: &mut BytesMut, max: usize) -> Option<Decoded> {
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
pub(super) fn read_len(header: &[u8], little: bool) -> usize {
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
pub(super) fn next_fixed(buf: &mut BytesMut, f: &Fixed) -> Option<Decoded> {
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
    pub(super) fn next(&mut self, buf: &mut BytesMut, max: usize) -> Option<Decoded> {
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

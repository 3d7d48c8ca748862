//! Several protocols on one port: a u-blox receiver's NMEA sentences between its UBX frames, a
//! Victron charge controller's HEX messages between its text blocks. Each frame is cut by the
//! framing that recognises it and handed to its own device's rules; one protocol's traffic is
//! never the other's damage.
//!
//! How the bytes are shared out:
//! - Every protocol but one starts its frames with start bytes (`telegram`, `length`, `fixed`
//!   with `start_hex`). At most one is cut by a delimiter (`lines`, `delimiter`, `cobs`): it
//!   takes the bytes no start claims (the *fallback*).
//! - The earliest start in the buffer is tried: its framing cuts a frame on a copy of the bytes,
//!   and the frame is taken only if it passes its device's checksum. Bytes before it go to the
//!   fallback (or, with none, are counted as resync bytes of the port's first device).
//! - A frame that fails (a bad checksum, too long; a length that cannot be, an end that does
//!   not come before the next start: its bytes count as resync bytes of its device) is
//!   reported once to its device, and the search goes on **one byte after its start**: a lost byte cannot make one protocol swallow the other's
//!   frames, only hold them until the broken frame is proven broken (at most `max_frame` bytes).
//!   The bytes of a frame reported broken are not reported again: a frame of the other
//!   protocol found among them is taken when it passes its checksum, and anything else in them
//!   is dropped silently.
//!
//! Hand-written because it is framing, the project's core craft; it reuses the single-protocol
//! decoders unchanged, so each framing's rules stay in one place.

use std::collections::VecDeque;
use std::io;

use bytes::{Buf, Bytes, BytesMut};
use memchr::memmem;
use tokio_util::codec::Decoder;

use super::told::noise;
use super::{Decoded, DropReason, FrameDecoder, Framing};

/// Checks a frame the way its device does (its `checksum:`): true when it passes.
pub type Verify = Box<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// One protocol on a shared port: how its frames are cut, how long they may be, how they are
/// checked (None: every frame its framing cuts is taken).
pub struct Protocol {
    /// The device's framing.
    pub framing: Framing,
    /// The device's `max_frame`.
    pub max_frame: usize,
    /// The device's checksum.
    pub verify: Option<Verify>,
}

/// The bytes that begin every frame of `framing`, for the framings that have them.
pub fn start_marker(framing: &Framing) -> Option<&[u8]> {
    match framing {
        Framing::Telegram(t) => Some(&t.start),
        Framing::Length(l) => Some(&l.start),
        Framing::Fixed(f) if !f.start.is_empty() => Some(&f.start),
        _ => None,
    }
}

/// Whether several framings can share one port, and if not, a sentence saying what to write
/// instead (for `check`).
pub fn can_share(framings: &[&Framing]) -> Result<(), String> {
    let mut fallback = None;
    let mut starts: Vec<&[u8]> = Vec::new();
    for framing in framings {
        if let Some(start) = start_marker(framing) {
            if starts.contains(&start) {
                return Err(format!(
                    "two of them start their frames with the same bytes ({}): the gateway could \
                     not tell whose a frame is; read them as one device with rules for both kinds \
                     of frame",
                    hex::encode(start)
                ));
            }
            starts.push(start);
            continue;
        }
        match framing {
            Framing::Lines | Framing::Delimiter(_) | Framing::Cobs => {
                if let Some(other) = fallback.replace(framing.name()) {
                    return Err(format!(
                        "two of them are cut by a delimiter ({other} and {}): only one protocol \
                         on a port may be; give the others their start bytes (`telegram`, \
                         `length`, or `fixed` with `start_hex`)",
                        framing.name()
                    ));
                }
            }
            _ => {
                return Err(format!(
                    "`{}` framing cannot share a port with another protocol: on a shared port \
                     frames are told apart by their start bytes (`telegram`, `length`, `fixed` \
                     with `start_hex`), and one protocol may be cut by a delimiter (`lines`, \
                     `delimiter`, `cobs`)",
                    framing.name()
                ));
            }
        }
    }
    Ok(())
}

/// A protocol whose frames begin with start bytes.
struct Marked {
    member: usize,
    start: memmem::Finder<'static>,
    decoder: FrameDecoder,
    verify: Option<Verify>,
    /// The most bytes a trial looks at: enough for the longest frame and to tell that one is
    /// too long, and the same however the bytes arrived (so a split read cannot change what
    /// a broken frame is reported as).
    limit: usize,
}

/// The protocol cut by a delimiter: it reads from its own buffer the bytes no start claimed.
struct Fallback {
    member: usize,
    decoder: FrameDecoder,
    verify: Option<Verify>,
    buf: BytesMut,
    /// Whether its frames are the bytes as they came (not COBS-decoded): a frame can be cut
    /// where a broken frame's bytes ended.
    raw: bool,
    /// Bytes given to it so far.
    fed: u64,
    /// A frame of another protocol failed since its last good frame: its next frames may hold
    /// that frame's bytes, and are taken only when they prove themselves.
    tainted: bool,
    /// Where (in bytes fed) the last broken frame's bytes ended.
    cut_at: u64,
}

impl Fallback {
    /// Whether a frame cut while tainted is taken (whole, or from where a broken frame's
    /// bytes ended): Some(frame to hand on), None to drop it silently.
    fn accept(&mut self, frame: Bytes, begins: u64) -> Option<Bytes> {
        if !self.tainted {
            return Some(frame);
        }
        let passes = |f: &[u8]| self.verify.as_ref().map(|v| v(f));
        let inside = self
            .cut_at
            .checked_sub(begins)
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| self.raw && n > 0 && n < frame.len());
        if passes(&frame) == Some(true) {
            self.tainted = false;
            return Some(frame);
        }
        let suffix = inside.map(|n| frame.slice(n..));
        match passes(suffix.as_deref().unwrap_or_default()) {
            Some(true) if suffix.is_some() => {
                self.tainted = false;
                suffix
            }
            Some(_) => None,
            // Nothing to prove it: the part after the broken frame's bytes, once.
            None => {
                self.tainted = false;
                match suffix {
                    Some(s) => Some(s),
                    None if self.cut_at <= begins => Some(frame),
                    None => None,
                }
            }
        }
    }
}

/// What trying one start gave.
enum Trial {
    /// A frame that passed its check, beginning at the start.
    Frame(Bytes),
    /// More bytes are needed to tell.
    Partial,
    /// No frame begins here: what to report, and how many bytes it covers.
    Failed(Decoded, usize),
}

/// The decoder of a port with several protocols; items name the protocol (its index in the
/// list given to [`Mux::new`]).
pub struct Mux {
    marked: Vec<Marked>,
    fallback: Option<Fallback>,
    out: VecDeque<(usize, Decoded)>,
    /// Bytes at the front of the buffer that belong to a frame already reported as broken.
    suspect: usize,
    /// Bytes no protocol claimed, not yet reported, and whose they are counted as: the
    /// protocol whose start they began with, else the port's first.
    stray: usize,
    stray_to: usize,
    /// The copy of the buffer a trial cuts from (kept to reuse its allocation).
    scratch: BytesMut,
}

impl Mux {
    /// The decoder for `protocols`; Err (a sentence for the user) when they cannot share a port.
    pub fn new(protocols: Vec<Protocol>) -> Result<Self, String> {
        can_share(&protocols.iter().map(|p| &p.framing).collect::<Vec<_>>())?;
        let mut marked = Vec::new();
        let mut fallback = None;
        for (member, p) in protocols.into_iter().enumerate() {
            let decoder = FrameDecoder::new(&p.framing, p.max_frame);
            let size = match &p.framing {
                Framing::Fixed(f) => f.size,
                _ => 0,
            };
            match start_marker(&p.framing) {
                Some(start) => marked.push(Marked {
                    member,
                    start: memmem::Finder::new(start).into_owned(),
                    decoder,
                    verify: p.verify,
                    limit: p.max_frame.max(size).saturating_add(1),
                }),
                None => {
                    fallback = Some(Fallback {
                        member,
                        decoder,
                        verify: p.verify,
                        buf: BytesMut::new(),
                        raw: !matches!(p.framing, Framing::Cobs),
                        fed: 0,
                        tainted: false,
                        cut_at: 0,
                    })
                }
            }
        }
        Ok(Mux {
            marked,
            fallback,
            out: VecDeque::new(),
            suspect: 0,
            stray: 0,
            stray_to: 0,
            scratch: BytesMut::new(),
        })
    }

    /// Whether part of a frame is waiting for the rest (the port went away in the middle of
    /// it), and whose: a start at the front of `buf`, or the fallback's unfinished frame.
    pub fn has_partial(&self, buf: &BytesMut) -> Option<usize> {
        if self.suspect < buf.len() {
            let rest = &buf[self.suspect..];
            if let Some(m) = self
                .marked
                .iter()
                .find(|m| rest.starts_with(m.start.needle()))
            {
                return Some(m.member);
            }
        }
        let f = self.fallback.as_ref()?;
        f.decoder.has_partial(&f.buf).then_some(f.member)
    }

    /// Forgets every partial frame (the port was reopened).
    pub fn reset(&mut self) {
        self.out.clear();
        self.suspect = 0;
        self.stray = 0;
        self.stray_to = 0;
        if let Some(f) = &mut self.fallback {
            f.buf.clear();
            f.decoder.reset();
            f.tainted = false;
        }
    }

    /// Where the earliest start in `buf` is.
    fn earliest(&self, buf: &[u8]) -> Option<usize> {
        self.marked.iter().filter_map(|m| m.start.find(buf)).min()
    }

    /// How many bytes at the end of `buf` could be the beginning of a start torn across reads.
    fn torn(&self, buf: &[u8]) -> usize {
        self.marked
            .iter()
            .flat_map(|m| {
                let start = m.start.needle();
                (1..start.len()).filter(move |&n| buf.ends_with(&start[..n]))
            })
            .max()
            .unwrap_or(0)
    }

    /// Cuts protocol `k`'s frame from the front of `buf` (which begins with its start) on a copy.
    fn trial(&mut self, k: usize, buf: &BytesMut) -> Trial {
        let m = &mut self.marked[k];
        m.decoder.reset();
        self.scratch.clear();
        self.scratch
            .extend_from_slice(&buf[..buf.len().min(m.limit)]);
        match m.decoder.decode(&mut self.scratch) {
            Ok(Some(Decoded::Frame(f))) => {
                if m.verify.as_ref().is_none_or(|v| v(&f)) {
                    Trial::Frame(f)
                } else {
                    let span = f.len();
                    Trial::Failed(Decoded::Frame(f), span)
                }
            }
            Ok(None) => Trial::Partial,
            // A resync (its end or its length did not fit) or too long: only its start is known bad.
            Ok(Some(item)) => Trial::Failed(item, 1),
            Err(_) => Trial::Failed(Decoded::Resync(1), 1),
        }
    }

    /// One step through `buf`; false when nothing more can be done until more bytes come.
    fn step(&mut self, buf: &mut BytesMut) -> bool {
        let Some(at) = self.earliest(buf) else {
            let n = buf.len() - self.torn(buf);
            if n == 0 {
                return false;
            }
            self.pass(buf.split_to(n));
            return true;
        };
        if at > 0 {
            self.pass(buf.split_to(at));
            return true;
        }
        let mut partial = false;
        let mut failed = None;
        for k in 0..self.marked.len() {
            if !buf.starts_with(self.marked[k].start.needle()) {
                continue;
            }
            match self.trial(k, buf) {
                Trial::Frame(f) => {
                    buf.advance(f.len());
                    self.past_suspect(f.len());
                    self.emit(self.marked[k].member, Decoded::Frame(f));
                    self.stray_to = 0;
                    return true;
                }
                Trial::Partial => partial = true,
                Trial::Failed(item, span) => {
                    failed.get_or_insert((k, item, span));
                }
            }
        }
        if partial {
            return false;
        }
        if let Some((k, item, span)) = failed {
            let member = self.marked[k].member;
            if self.suspect == 0 {
                match item {
                    // The bytes it skipped are counted as they are passed over, below.
                    Decoded::Resync(_) => {
                        self.flush_stray();
                        self.stray_to = member;
                    }
                    item => {
                        self.emit(member, item);
                        self.suspect = span;
                    }
                }
            }
            if let Some(f) = &mut self.fallback {
                f.tainted = true;
                f.cut_at = f.cut_at.max(f.fed + self.suspect as u64);
            }
        }
        self.pass(buf.split_to(1));
        true
    }

    /// A frame of `n` bytes was taken: the part of it within a broken frame's bytes is used up.
    fn past_suspect(&mut self, n: usize) {
        self.suspect = self.suspect.saturating_sub(n);
    }

    /// Bytes no start claimed: the fallback's (those of a broken frame are not reported again).
    fn pass(&mut self, mut chunk: BytesMut) {
        while !chunk.is_empty() {
            let suspect = self.suspect > 0;
            let n = if suspect {
                self.suspect.min(chunk.len())
            } else {
                chunk.len()
            };
            let part = chunk.split_to(n);
            self.feed(&part, suspect);
            if suspect {
                self.past_suspect(n);
            }
        }
    }

    /// Gives bytes to the fallback; while a broken frame's bytes may be among its frames, they
    /// are taken only when they prove themselves, and nothing else is reported.
    fn feed(&mut self, bytes: &[u8], suspect: bool) {
        let Some(f) = &mut self.fallback else {
            if !suspect {
                self.stray += noise(bytes);
            }
            return;
        };
        f.buf.extend_from_slice(bytes);
        f.fed += bytes.len() as u64;
        let mut items = Vec::new();
        loop {
            let begins = f.fed - f.buf.len() as u64;
            let Ok(Some(item)) = f.decoder.decode(&mut f.buf) else {
                break;
            };
            match item {
                Decoded::Frame(frame) => {
                    if let Some(frame) = f.accept(frame, begins) {
                        items.push(Decoded::Frame(frame));
                    }
                }
                other if !f.tainted => items.push(other),
                _ => {}
            }
        }
        let member = f.member;
        for item in items {
            self.emit(member, item);
        }
    }

    /// Queues an item, after the stray bytes seen before it.
    fn emit(&mut self, member: usize, item: Decoded) {
        self.flush_stray();
        self.out.push_back((member, item));
    }

    fn flush_stray(&mut self) {
        if self.stray > 0 {
            let n = std::mem::take(&mut self.stray);
            self.out.push_back((self.stray_to, Decoded::Resync(n)));
        }
    }
}

impl Decoder for Mux {
    type Item = (usize, Decoded);
    type Error = io::Error;

    /// The next frame or counted drop of any protocol; never Err.
    fn decode(&mut self, buf: &mut BytesMut) -> io::Result<Option<(usize, Decoded)>> {
        loop {
            if let Some(item) = self.out.pop_front() {
                return Ok(Some(item));
            }
            if !self.step(buf) {
                self.flush_stray();
                return Ok(self.out.pop_front());
            }
        }
    }

    /// The frames still buffered, then a partial frame reported as incomplete.
    fn decode_eof(&mut self, buf: &mut BytesMut) -> io::Result<Option<(usize, Decoded)>> {
        if let Some(item) = self.decode(buf)? {
            return Ok(Some(item));
        }
        let partial = self.has_partial(buf);
        buf.clear();
        self.reset();
        Ok(partial.map(|m| (m, Decoded::Dropped(DropReason::Incomplete))))
    }
}

#[cfg(test)]
#[path = "mux_tests.rs"]
mod tests;

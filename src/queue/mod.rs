//! The store-and-forward queue: an append-only, segmented, checksummed log on disk, and the one
//! place where durability is decided.
//!
//! Layout under `<state_dir>/queue/`: segment files named by their first sequence number
//! (see [`segment`]), each a magic followed by [`record`]s, and the ack cursor file `acked`
//! (two slots written in turn, see [`cursor`]).
//!
//! # What is where
//! A message accepted by `append` gets its sequence number at once and is readable (sent
//! upstream) at once, from memory. It is written to disk only if it is still unacknowledged at
//! its **flush deadline**, `flush_interval` after it was accepted: when the oldest message
//! waiting in memory reaches its deadline, every message waiting is written and committed
//! (`fdatasync`) together, one group commit. A message acknowledged before its deadline never
//! touches the disk; with the uplink up and acking within `flush_interval` (the usual case)
//! the queue writes nothing but a sequence reservation now and then. `flush_interval: 0` writes
//! and commits before `append` returns, as before.
//!
//! At any moment the disk holds: every message accepted more than `flush_interval` ago and not
//! acknowledged by then (until the cursor says it was, and its segment goes); the ack cursor,
//! written only while it lags behind a record on disk (at most every [`CURSOR_EVERY`]); and
//! the ceiling of the sequence numbers reserved for use ([`cursor::RESERVED`]).
//!
//! # Sequence numbers
//! Numbers are reserved durably [`SEQ_BLOCK`] at a time, before any of them is handed out (one
//! small write per block). A restart continues at the reserved ceiling, above every number that
//! was handed out before, whether it was written, sent and acknowledged from memory, or sent
//! and lost in the cut: no number is ever given to two different messages. So an upstream
//! consumer sees numbers grow by one per message while the gateway runs, and one jump per
//! restart, of at most [`SEQ_BLOCK`]; a jump that coincides with the gateway's restart (its
//! status topic going `offline`/`online`, or its first message after a gap of more than
//! `flush_interval`) is numbers that were never used, or messages lost in the last
//! `flush_interval` before a crash; a gap while it runs is a real loss, counted in the stats
//! (`dropped`: queue full, disk full, corruption).
//!
//! # Crash model
//! A power cut: every write not fsynced is lost, and (in the strict model) so is every
//! creation, rename and unlink whose directory was not fsynced. kill -9 is now the same case for
//! the messages still in memory. Against that model the queue guarantees:
//! - **lost**: at most the messages accepted in the last `flush_interval` before the cut that
//!   were not acknowledged upstream (none with `flush_interval: 0` once `append` returned).
//!   They may have been sent; their numbers are never reused.
//! - **duplicated**: records acknowledged upstream after the last cursor write (at most
//!   [`CURSOR_EVERY`]), sent again after the restart with the same sequence numbers and data.
//! - **never**: reordered, sent as garbage (checksums), renumbered, or a sequence number given
//!   to other data than the one it was sent with.
//!
//! Proven through the real binary on a test filesystem that drops un-synced writes
//! (`tests/powercut.rs`), not only by kill -9, with the uplink down, draining a backlog, and
//! up and acknowledging as messages arrive.
//!
//! # Invariants
//! 1. Sequence numbers grow by one per accepted message while the queue is open and jump to
//!    the reserved ceiling at each open (above every stored record, the ack cursor and every
//!    segment file's name, set aside or not, for a queue without a reservation file). On disk,
//!    numbers above the ack cursor are contiguous but for those jumps and for records dropped
//!    (queue full, corruption); records acknowledged before they were written leave gaps only
//!    below it. Never reordering.
//! 2. Only the last segment is written to; a segment is synced before the next one is started,
//!    and a new segment is durable with its magic before its directory entry is synced (so a
//!    cut never leaves an entry for a header that was lost). A segment file is created with
//!    `create_new`: an existing file is never started over. A segment is named by its first
//!    record's number or a lower one. The queue directory is made durable in its parent when created.
//! 3. A group commit writes every message waiting in memory and makes it durable
//!    (`sync_data`); those written before it are not lost by a cut. A failed `fsync` is never
//!    retried as if nothing happened (the kernel may have marked the pages clean): the records
//!    since the last commit are read back and written to a new segment, and the suspect file
//!    is cut back to what was durable.
//! 4. A number is durably reserved before it is handed out, so whatever upstream has seen, a
//!    restart never hands its number to other data. Opening syncs the last segment first (a
//!    kill -9 leaves un-synced data behind).
//! 5. On open, the last segment is scanned and a torn tail (a record cut short or failing its
//!    checksum, with no valid record after it) is truncated away. A record that fails its
//!    checksum is never returned: reading resumes at the next valid record of its segment (found
//!    by checksum and sequence number), the records in between are counted as lost, and the
//!    damaged segment is kept as `*.seg.corrupt` for inspection once it is no longer needed
//!    (the newest [`KEEP_CORRUPT`] such files are kept).
//! 6. Total segment bytes stay within `max_bytes` (plus at most one record): when a write would
//!    exceed it, whole oldest segments are deleted, and their unacknowledged records counted as
//!    dropped. The same happens when the disk is full.
//! 7. A segment whose records are all acknowledged is deleted once that acknowledgement is
//!    durable (at `sync`), never the one being written: after a crash, everything above the
//!    persisted cursor is still on disk.
//! 8. Memory does not grow with the backlog: records on disk are read from the files, one
//!    buffer at a time; at most [`TAIL_BYTES`] wait in memory (more are written at once).
//! 9. A group commit that filled most of a page is padded to the page boundary (see
//!    [`segment`]) when the padding is at most a quarter of what the commit wrote, so the next
//!    commit does not rewrite that page: at most 25% more disk space for about half the bytes
//!    written at 1,000 messages/s.
//!
//! All I/O here is blocking: the queue runs on a thread of its own, off the async workers.

mod active;
pub mod cursor;
pub mod record;
pub mod segment;
pub mod thread;

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use tracing::info;

use crate::message::Message;
pub use record::Record;
use segment::{SegmentReader, MAGIC};

/// Longest time between two writes of the ack cursor (see [`Queue::sync`]).
pub const CURSOR_EVERY: std::time::Duration = std::time::Duration::from_secs(1);
/// Sequence numbers reserved durably at a time: one small write per this many messages, and
/// the most a restart skips.
pub const SEQ_BLOCK: u64 = 1 << 20;
/// Most bytes of records waiting in memory for their flush deadline, counted with what each
/// costs beside its encoded bytes ([`TAIL_OVERHEAD`]): past it they are written at once (a
/// burst cannot grow memory without bound).
pub const TAIL_BYTES: usize = 2 << 20;
/// What a record waiting in memory costs beside its encoded bytes (its entry, its topic's
/// allocation), for [`TAIL_BYTES`].
pub const TAIL_OVERHEAD: usize = 128;
/// The unit the SD card is written in: what the wear counter counts (see [`Stats::written`]).
pub const PAGE_BYTES: u64 = 4096;
/// Damaged segments kept as `*.seg.corrupt` (older ones are deleted, so a failing card cannot
/// fill the disk with them).
pub const KEEP_CORRUPT: usize = 2;

/// Limits of the queue.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Most bytes of segment files on disk.
    pub max_bytes: u64,
    /// A new segment is started when the current one would grow past this.
    pub segment_bytes: u64,
    /// Sync before `append` returns (flush interval 0) instead of on `sync`.
    pub sync_every_append: bool,
}

/// The store-and-forward queue, ready to open by its thread (the config's `queue:` section).
#[derive(Debug, Clone, PartialEq)]
pub struct QueueSettings {
    /// `<state_dir>/queue`.
    pub dir: PathBuf,
    /// Disk cap.
    pub max_bytes: u64,
    /// Segment size.
    pub segment_bytes: u64,
    /// Group commit interval; zero syncs every append.
    pub flush_interval: Duration,
}

/// What opening the queue found and repaired.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// Bytes cut from the end of the last segment (a write torn by a crash).
    pub torn_bytes: u64,
    /// Segments set aside as `*.corrupt` (unreadable magic).
    pub set_aside: Vec<PathBuf>,
    /// Damaged stretches found in the last segment with valid records after them (kept; their
    /// records are skipped and counted when read).
    pub damaged: u64,
    /// Entries named like segments that are not regular files: ignored (remove them).
    pub strays: Vec<PathBuf>,
    /// The ack cursor file was damaged; delivery restarts at the oldest record.
    pub cursor_corrupt: bool,
    /// The file of reserved sequence numbers was damaged: numbering jumped by 2^40.
    pub seq_corrupt: bool,
    /// Unacknowledged records waiting (approximate when records were dropped).
    pub depth: u64,
}

/// Counters of what the queue had to give up, since it was opened.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Drops {
    /// Unacknowledged records deleted to stay within `max_bytes`.
    pub full: u64,
    /// Records that could not be stored because the disk was full and nothing older could go.
    pub disk_full: u64,
    /// Records lost to corruption found while reading (damaged records, or a segment's
    /// unreadable rest).
    pub corrupt_segments: u64,
    /// Records too large to ever fit within `max_bytes`.
    pub too_large: u64,
}

/// A snapshot of the queue's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Unacknowledged records (approximate after drops).
    pub depth: u64,
    /// Bytes of segment files.
    pub bytes: u64,
    /// Segment files.
    pub segments: usize,
    /// Highest acknowledged sequence number.
    pub acked: u64,
    /// Sequence number the next append gets.
    pub next_seq: u64,
    /// What was dropped.
    pub drops: Drops,
    /// Bytes the queue has had written to its disk since it was opened, counted in whole
    /// pages ([`PAGE_BYTES`]) as the card writes them: records, padding, segment headers, the
    /// ack cursor and sequence reservations (not the filesystem's own journal).
    pub written: u64,
    /// Records accepted and not yet on disk (sent at once; written only if still
    /// unacknowledged at their flush deadline).
    pub in_memory: usize,
}

/// A record accepted but not written yet: when it was accepted (its flush deadline runs from
/// then).
struct Pending {
    rec: Record,
    at: std::time::Instant,
    /// What it costs in memory, counted against [`TAIL_BYTES`].
    len: usize,
}

struct Segment {
    first: u64,
    /// Its last record's number, when known (written by this run, or scanned at open).
    last: Option<u64>,
    path: PathBuf,
    bytes: u64,
    /// Corruption was found in it: set it aside instead of deleting it.
    damaged: bool,
}

/// Where reading continues, kept between reads so a caught-up reader does not rescan.
struct ReadPos {
    segment_first: u64,
    reader: SegmentReader,
    /// The next record this reader returns has a sequence number of at least this.
    from: u64,
}

/// The on-disk queue.
pub struct Queue {
    dir: PathBuf,
    opts: Options,
    segments: VecDeque<Segment>,
    active: active::Active,
    next_seq: u64,
    /// Sequence number after the last record written to disk: records below it are read from
    /// the segments, the ones above from `tail` (or were acknowledged before they had to be
    /// written).
    durable_next: u64,
    /// Records accepted and not written, oldest first; unacknowledged (acknowledged ones leave
    /// at once).
    tail: VecDeque<Pending>,
    tail_bytes: usize,
    /// Numbers below this may have been handed out: a restart starts at or above it.
    reserved: u64,
    seqs: cursor::CursorFile,
    /// The highest sequence number ever written to a segment (the cursor is worth writing
    /// only while it lags behind one).
    disk_max: u64,
    /// Records written since the last commit (to count any a failed fsync loses).
    uncommitted: u64,
    written: u64,
    acked: u64,
    persisted_ack: u64,
    cursor: cursor::CursorFile,
    ack_stored_at: Option<std::time::Instant>,
    dirty: bool,
    /// Bytes of the active segment at the last commit.
    committed: u64,
    dir_dirty: bool,
    total_bytes: u64,
    drops: Drops,
    read: Option<ReadPos>,
    /// Times a read had to open a segment and read it from its start (tests: no rescans).
    opened: u64,
    buf: Vec<u8>,
}

/// Opens an existing segment to write at the end of its data (positioned writes: see
/// [`active`]).
fn open_for_writing(path: &Path) -> io::Result<active::Active> {
    let file = OpenOptions::new().write(true).open(path)?;
    let len = file.metadata()?.len();
    Ok(active::Active::new(file, len))
}

/// Creates segment `first`, durable with its magic before the caller syncs the directory (so a
/// power cut can never leave a directory entry for a file whose header was lost). Never reopens
/// an existing file: a name already taken is an error naming it, not a segment "made anew".
fn create_segment(dir: &Path, first: u64) -> io::Result<(Segment, active::Active)> {
    let path = dir.join(segment::file_name(first));
    let mut f = match OpenOptions::new().create_new(true).write(true).open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            return Err(io::Error::new(
                e.kind(),
                format!(
                    "queue segment {} already exists: refusing to start it over (move it out of the queue directory if it does not belong there)",
                    path.display()
                ),
            ))
        }
        Err(e) => return Err(e),
    };
    if let Err(e) = f.write_all(MAGIC).and_then(|()| f.sync_all()) {
        // No half-made segment left behind (a full disk): it would be set aside at start.
        drop(f);
        let _ = fs::remove_file(&path);
        return Err(e);
    }
    Ok((
        Segment {
            first,
            last: None,
            path,
            bytes: MAGIC.len() as u64,
            damaged: false,
        },
        active::Active::new(f, MAGIC.len() as u64),
    ))
}

/// Creates `dir` and any missing parents, each made durable in its parent directory (a power cut
/// must not take the queue directory away with everything in it), and syncs `dir`'s parent
/// even when it existed: an earlier start may have created it without syncing.
pub fn create_dir_durable(dir: &Path) -> io::Result<()> {
    let mut missing = Vec::new();
    let mut at = dir;
    while !at.is_dir() {
        missing.push(at);
        match at.parent() {
            Some(p) if !p.as_os_str().is_empty() => at = p,
            _ => break,
        }
    }
    for d in missing.into_iter().rev() {
        match fs::create_dir(d) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => return Err(e),
            _ => {}
        }
        if let Some(parent) = d.parent().filter(|p| !p.as_os_str().is_empty()) {
            cursor::sync_dir(parent)?;
        }
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        cursor::sync_dir(parent)?;
    }
    Ok(())
}

fn is_disk_full(e: &io::Error) -> bool {
    e.raw_os_error() == Some(28) // ENOSPC
}

mod open;
mod read;
mod write;

impl Queue {
    /// Unacknowledged records (approximate after drops).
    ///
    /// Numbers on disk are contiguous above the cursor (records acknowledged before they were
    /// written are all below it) except where a restart jumped past the numbers it had
    /// reserved: a segment's range ends at its last record when that is known, else at the next
    /// segment's first, counting no more records than its size could hold.
    pub fn depth(&self) -> u64 {
        let mut on_disk = 0;
        for (i, seg) in self.segments.iter().enumerate() {
            let next = self
                .segments
                .get(i + 1)
                .map_or(self.durable_next, |n| n.first);
            let from = seg.first.max(self.acked + 1);
            on_disk += match seg.last {
                Some(last) => (last + 1).min(next).saturating_sub(from),
                None => {
                    let room =
                        seg.bytes.saturating_sub(MAGIC.len() as u64) / record::MIN_LEN as u64;
                    next.saturating_sub(from).min(room)
                }
            };
        }
        on_disk + self.tail.len() as u64
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> Stats {
        Stats {
            depth: self.depth(),
            bytes: self.total_bytes,
            segments: self.segments.len(),
            acked: self.acked,
            next_seq: self.next_seq,
            drops: self.drops,
            written: self.written,
            in_memory: self.tail.len(),
        }
    }

    /// Records that `seq` and everything before it were acknowledged upstream: the ones still
    /// in memory are never written; for the ones on disk the cursor is persisted, and segments
    /// that hold nothing else deleted, at the next `sync`.
    pub fn ack(&mut self, seq: u64) {
        let seq = seq.min(self.next_seq.saturating_sub(1));
        self.acked = self.acked.max(seq);
        while self.tail.front().is_some_and(|p| p.rec.seq <= self.acked) {
            if let Some(p) = self.tail.pop_front() {
                self.tail_bytes -= p.len;
            }
        }
    }

    /// What was dropped so far (without the rest of [`Self::stats`]: its depth walks the
    /// segments, and this is read after every command).
    pub fn drops(&self) -> Drops {
        self.drops
    }

    /// Highest acknowledged sequence number.
    pub fn acked(&self) -> u64 {
        self.acked
    }
}

fn remove_file(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Renames a damaged segment to `*.corrupt` so it is kept for inspection but never read.
fn set_aside(path: &Path) -> io::Result<PathBuf> {
    let aside = path.with_extension("seg.corrupt");
    fs::rename(path, &aside)?;
    info!(path = %aside.display(), "damaged queue segment set aside");
    Ok(aside)
}

/// Deletes all but the newest [`KEEP_CORRUPT`] set-aside segments.
fn prune_corrupt(dir: &Path) -> io::Result<()> {
    let mut aside: Vec<PathBuf> = fs::read_dir(dir)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.to_string_lossy().ends_with(".seg.corrupt"))
        .collect();
    aside.sort();
    let excess = aside.len().saturating_sub(KEEP_CORRUPT);
    for old in &aside[..excess] {
        remove_file(old)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;

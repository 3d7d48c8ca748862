//! The store-and-forward queue: an append-only, segmented, checksummed log on disk, and the one
//! place where durability is decided.
//!
//! Layout under `<state_dir>/queue/`: segment files named by their first sequence number
//! (see [`segment`]), each a magic followed by [`record`]s, and the ack cursor file `acked`
//! (two slots written in turn, see [`cursor`]).
//!
//! # Crash model
//! A power cut: every write not fsynced is lost, and (in the strict model) so is every
//! creation, rename and unlink whose directory was not fsynced. kill -9 is the lesser case (the
//! page cache survives). Against that model the queue guarantees:
//! - **lost**: at most the records appended since the last group commit (`flush_interval`;
//!   none with `flush_interval: 0` once `append` returned). They were never sent upstream.
//! - **duplicated**: records acknowledged upstream after the last cursor write (at most
//!   [`CURSOR_EVERY`]), sent again after the restart with the same sequence numbers and data.
//! - **never**: reordered, sent as garbage (checksums), renumbered, or a sequence number given
//!   to other data than the one it was sent with.
//!
//! Proven through the real binary on a test filesystem that drops un-synced writes
//! (`tests/powercut.rs`), not only by kill -9.
//!
//! # Invariants
//! 1. Sequence numbers start at 1 and grow by one per appended message, across segments and
//!    restarts (`next_seq` after a restart is above every stored record, the ack cursor and
//!    every segment file's name, set aside or not). Gaps exist only where records were dropped
//!    (queue full, corruption), never reordering.
//! 2. Only the last segment is written to; a segment is synced before the next one is started,
//!    and a new segment is durable with its magic before its directory entry is synced (so a
//!    cut never leaves an entry for a header that was lost). A segment file is created with
//!    `create_new`: an existing file is never started over. The queue directory is made durable
//!    in its parent when created.
//! 3. `sync` makes every appended record durable (`sync_data`) and persists the ack cursor
//!    atomically. Records appended since the last `sync` may be lost by a crash or power cut;
//!    records synced before it are not. With `sync_every_append`, `append` syncs before returning.
//!    A failed `fsync` is never retried as if nothing happened (the kernel may have marked the
//!    pages clean): the records since the last commit are read back and written to a new
//!    segment, and the suspect file is cut back to what was durable.
//! 4. A record is readable (sent upstream) only once it is durable: what the upstream has seen
//!    survives any crash, so after a restart numbering continues above every number ever sent.
//!    Opening syncs the last segment first (a kill -9 leaves un-synced data behind). Acks can
//!    therefore never run ahead of what is durable.
//! 5. On open, the last segment is scanned and a torn tail (a record cut short or failing its
//!    checksum, with no valid record after it) is truncated away. A record that fails its
//!    checksum is never returned: reading resumes at the next valid record of its segment (found
//!    by checksum and sequence number), the records in between are counted as lost, and the
//!    damaged segment is kept as `*.seg.corrupt` for inspection once it is no longer needed
//!    (the newest [`KEEP_CORRUPT`] such files are kept).
//! 6. Total segment bytes stay within `max_bytes` (plus at most one record): when an append would
//!    exceed it, whole oldest segments are deleted, and their unacknowledged records counted as
//!    dropped. The same happens when the disk is full.
//! 7. A segment whose records are all acknowledged is deleted once that acknowledgement is
//!    durable (at `sync`), never the one being written: after a crash, everything above the
//!    persisted cursor is still on disk.
//! 8. Memory does not grow with the backlog: records are read from the files, one buffer at a time.
//! 9. A group commit that filled most of a page is padded to the page boundary (see
//!    [`segment`]) when the padding is at most a quarter of what the commit wrote, so the next
//!    commit does not rewrite that page: at most 25% more disk space for about half the bytes
//!    written at 1,000 messages/s.
//!
//! All I/O here is blocking: the queue runs on a thread of its own, off the async workers.

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
}

struct Segment {
    first: u64,
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
    active: File,
    next_seq: u64,
    /// Sequence number after the last durable record: only records below it are read (sent
    /// upstream), so nothing a power cut can take away was ever seen upstream, and a number is
    /// never given to other data after a crash.
    durable_next: u64,
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
    buf: Vec<u8>,
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().append(true).open(path)
}

/// Creates segment `first`, durable with its magic before the caller syncs the directory (so a
/// power cut can never leave a directory entry for a file whose header was lost). Never reopens
/// an existing file: a name already taken is an error naming it, not a segment "made anew".
fn create_segment(dir: &Path, first: u64) -> io::Result<(Segment, File)> {
    let path = dir.join(segment::file_name(first));
    let mut f = match OpenOptions::new().create_new(true).append(true).open(&path) {
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
            path,
            bytes: MAGIC.len() as u64,
            damaged: false,
        },
        f,
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
    pub fn depth(&self) -> u64 {
        let oldest = self.segments.front().map_or(self.next_seq, |s| s.first);
        self.next_seq.saturating_sub(oldest.max(self.acked + 1))
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
        }
    }

    /// Records that `seq` and everything before it were acknowledged upstream. Persisted, and
    /// segments that hold nothing else deleted, at the next `sync`.
    pub fn ack(&mut self, seq: u64) {
        let seq = seq.min(self.durable_next.saturating_sub(1));
        self.acked = self.acked.max(seq);
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

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

use tracing::{error, info, warn};

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

impl Queue {
    /// Opens (or creates) the queue in `dir`, repairing what a crash left behind.
    ///
    /// Everything recovery decides comes from what is durably on disk: the last segment is
    /// scanned whole and made durable before any of it is read (a kill -9 leaves un-synced data
    /// in the page cache that a later power cut would still take), and the next sequence number
    /// is above every record, the ack cursor, and the name of every segment file, set aside or
    /// not (a segment named `N` means numbers below `N` were given out).
    pub fn open(dir: &Path, opts: Options) -> io::Result<(Self, Recovery)> {
        create_dir_durable(dir)?;
        let mut recovery = Recovery::default();
        let (cursor_file, loaded) = cursor::CursorFile::open(dir)?;
        let acked = match loaded {
            cursor::Loaded::Missing => 0,
            cursor::Loaded::Acked(s) => s,
            cursor::Loaded::Corrupt => {
                recovery.cursor_corrupt = true;
                0
            }
        };

        let mut numbered_from = segment::set_aside_firsts(dir)?
            .into_iter()
            .max()
            .unwrap_or(1);
        for (first, path) in segment::strays(dir)? {
            // Not ours to read or move: reported, and its name is never given to a segment.
            numbered_from = numbered_from.max(first.saturating_add(1));
            recovery.strays.push(path);
        }
        let mut listed = segment::list(dir)?;
        // The newest segment was being written at the crash. One with nothing valid in it (its
        // header never reached the disk) is set aside, and the one before it is the last.
        let mut last: Option<(Segment, Option<u64>)> = None;
        while let Some((first, path)) = listed.pop() {
            numbered_from = numbered_from.max(first);
            let scan = segment::scan(&path, first)?;
            if scan.valid_len == 0 {
                recovery.set_aside.push(set_aside(&path)?);
                continue;
            }
            if scan.valid_len < scan.file_len {
                recovery.torn_bytes = scan.file_len - scan.valid_len;
                let f = OpenOptions::new().write(true).open(&path)?;
                f.set_len(scan.valid_len)?;
                f.sync_all()?;
            } else {
                File::open(&path)?.sync_all()?;
            }
            recovery.damaged = scan.damaged;
            let last_seq = scan.last_seq.or(Some(first.saturating_sub(1)));
            let seg = Segment {
                first,
                path,
                bytes: scan.valid_len,
                damaged: scan.damaged > 0,
            };
            last = Some((seg, last_seq));
            break;
        }
        // The older ones were synced before the next was started (invariant 2): trusted by
        // size, their records are checked when read (start-up stays fast).
        let mut segments = VecDeque::new();
        for (first, path) in listed {
            if SegmentReader::open(&path)?.is_none() {
                recovery.set_aside.push(set_aside(&path)?);
                continue;
            }
            let bytes = fs::metadata(&path)?.len();
            segments.push_back(Segment {
                first,
                path,
                bytes,
                damaged: false,
            });
        }
        let last_seq = last.as_ref().and_then(|(_, l)| *l);
        if let Some((seg, _)) = last {
            segments.push_back(seg);
        }

        if !recovery.set_aside.is_empty() {
            prune_corrupt(dir)?;
        }
        let stored_next = last_seq.map_or(1, |s| s + 1);
        let next_seq = stored_next.max(acked + 1).max(numbered_from);
        // Append to the last segment only if it continues exactly where the log ends.
        let active = match segments.back() {
            Some(s) if last_seq.map(|l| l + 1) == Some(next_seq) => open_append(&s.path)?,
            _ => {
                let (seg, f) = create_segment(dir, next_seq)?;
                segments.push_back(seg);
                f
            }
        };
        cursor::sync_dir(dir)?;
        let total_bytes = segments.iter().map(|s| s.bytes).sum();
        let committed = segments.back().map_or(0, |s| s.bytes);
        let mut q = Self {
            dir: dir.to_owned(),
            opts,
            segments,
            active,
            next_seq,
            durable_next: next_seq,
            acked,
            persisted_ack: acked,
            cursor: cursor_file,
            ack_stored_at: None,
            dirty: false,
            committed,
            dir_dirty: false,
            total_bytes,
            drops: Drops::default(),
            read: None,
            buf: Vec::with_capacity(64 * 1024),
        };
        q.delete_acked()?;
        recovery.depth = q.depth();
        Ok((q, recovery))
    }

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

    /// Appends messages in order; returns the sequence number of each one stored (`None` for a
    /// message that had to be dropped: too large for `max_bytes`, or the disk is full).
    pub fn append(&mut self, messages: &[Message]) -> io::Result<Vec<Option<u64>>> {
        let mut out = Vec::with_capacity(messages.len());
        for m in messages {
            out.push(self.append_one(m)?);
        }
        if self.opts.sync_every_append {
            self.sync()?;
        }
        Ok(out)
    }

    fn append_one(&mut self, m: &Message) -> io::Result<Option<u64>> {
        let len = record::encoded_len(m) as u64;
        if len + MAGIC.len() as u64 > self.opts.max_bytes {
            self.drops.too_large += 1;
            return Ok(None);
        }
        let active_bytes = self.segments.back().map_or(0, |s| s.bytes);
        if active_bytes > MAGIC.len() as u64 && active_bytes + len > self.opts.segment_bytes {
            match self.roll() {
                Ok(()) => {}
                Err(e) if is_disk_full(&e) => {
                    // Only the segment being written is left and no new one fits.
                    self.drops.disk_full += 1;
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
        // Make room first: the cap holds even while this record is written.
        while self.total_bytes + len > self.opts.max_bytes && self.segments.len() > 1 {
            self.drop_oldest(false)?;
        }
        self.buf.clear();
        record::encode(self.next_seq, m, &mut self.buf);
        loop {
            match self.active.write_all(&self.buf) {
                Ok(()) => break,
                Err(e) if is_disk_full(&e) => {
                    // Undo a partial write, then free the oldest segment and try again.
                    let good = self.segments.back().map_or(0, |s| s.bytes);
                    self.active.set_len(good)?;
                    if self.segments.len() > 1 {
                        self.drop_oldest(true)?;
                        continue;
                    }
                    self.drops.disk_full += 1;
                    return Ok(None);
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(s) = self.segments.back_mut() {
            s.bytes += len;
        }
        self.total_bytes += len;
        self.dirty = true;
        let seq = self.next_seq;
        self.next_seq += 1;
        Ok(Some(seq))
    }

    fn roll(&mut self) -> io::Result<()> {
        self.commit()?;
        let (seg, f) = loop {
            match create_segment(&self.dir, self.next_seq) {
                Ok(made) => break made,
                // The disk is full: the oldest segment makes room, as for an append.
                Err(e) if is_disk_full(&e) && self.segments.len() > 1 => self.drop_oldest(true)?,
                Err(e) => return Err(e),
            }
        };
        self.total_bytes += seg.bytes;
        self.committed = seg.bytes;
        self.segments.push_back(seg);
        self.active = f;
        cursor::sync_dir(&self.dir)?;
        Ok(())
    }

    /// Deletes the oldest segment, counting its unacknowledged records as dropped.
    fn drop_oldest(&mut self, disk_full: bool) -> io::Result<()> {
        let Some(old) = self.segments.pop_front() else {
            return Ok(());
        };
        let next_first = self.segments.front().map_or(self.next_seq, |s| s.first);
        let lost = next_first.saturating_sub(old.first.max(self.acked + 1));
        if disk_full {
            self.drops.disk_full += lost;
        } else {
            self.drops.full += lost;
        }
        if lost > 0 {
            warn!(
                records = lost,
                "store-and-forward queue full: dropped the oldest {lost} unsent messages ({})",
                if disk_full {
                    "disk full"
                } else {
                    "queue.max_bytes reached"
                }
            );
        }
        self.forget(&old, !disk_full)
    }

    /// Deletes a segment already taken out of the list (or sets a damaged one aside, when
    /// `keep_damaged` and the disk is not what needs the room).
    fn forget(&mut self, old: &Segment, keep_damaged: bool) -> io::Result<()> {
        self.total_bytes -= old.bytes;
        if old.damaged && keep_damaged {
            set_aside(&old.path)?;
            prune_corrupt(&self.dir)?;
        } else {
            remove_file(&old.path)?;
        }
        self.dir_dirty = true;
        if self
            .read
            .as_ref()
            .is_some_and(|r| r.segment_first == old.first)
        {
            self.read = None;
        }
        Ok(())
    }

    /// Whether `sync` has anything to do.
    pub fn needs_sync(&self) -> bool {
        self.dirty || self.dir_dirty || self.acked != self.persisted_ack
    }

    /// When `sync` should run next: `group_commit` after the last one for appended data, or
    /// when the cursor falls due for acknowledgements only; `None` when nothing waits.
    pub fn sync_due_in(
        &self,
        group_commit: std::time::Duration,
        since_last: std::time::Duration,
    ) -> Option<std::time::Duration> {
        if self.dirty || self.dir_dirty {
            return Some(group_commit.saturating_sub(since_last));
        }
        if self.acked != self.persisted_ack {
            let age = self.ack_stored_at.map_or(CURSOR_EVERY, |t| t.elapsed());
            return Some(CURSOR_EVERY.saturating_sub(age));
        }
        None
    }

    /// Makes everything appended durable and persists the ack cursor (group commit). The
    /// cursor is written at most every [`CURSOR_EVERY`]: each write is a page on the SD card,
    /// and a cursor that lags only means duplicates after a crash, never loss.
    pub fn sync(&mut self) -> io::Result<()> {
        self.sync_with(false)
    }

    /// `sync`, writing the cursor now whatever its age (at shutdown).
    pub fn sync_all(&mut self) -> io::Result<()> {
        self.sync_with(true)
    }

    fn sync_with(&mut self, force_cursor: bool) -> io::Result<()> {
        if self.dirty {
            self.pad_commit()?;
            self.commit()?;
        }
        let cursor_due = force_cursor
            || self
                .ack_stored_at
                .is_none_or(|t| t.elapsed() >= CURSOR_EVERY);
        if self.acked != self.persisted_ack && cursor_due {
            self.ack_stored_at = Some(std::time::Instant::now());
            self.cursor.store(self.acked)?;
            self.persisted_ack = self.acked;
            // Only now: a crash before this point replays from the old cursor, and must find
            // those records still on disk.
            self.delete_acked()?;
        }
        if self.dir_dirty {
            cursor::sync_dir(&self.dir)?;
            self.dir_dirty = false;
        }
        Ok(())
    }

    /// Makes the active segment durable up to its end; what it holds becomes readable.
    ///
    /// A failed `fsync` is not retried as if nothing happened: the kernel may already have
    /// marked the pages clean, so a second `fsync` would "succeed" without writing them
    /// (Rebello et al., ATC'20). The records written since the last commit are read back
    /// (checksummed, so only intact ones) and written again into a new segment, and the
    /// suspect file is cut back to what was durable.
    fn commit(&mut self) -> io::Result<()> {
        if let Err(e) = self.active.sync_data() {
            error!(
                segment = %self.segments.back().map_or_else(String::new, |s| s.path.display().to_string()),
                "store-and-forward queue: fsync failed ({e}); rewriting the records since the last commit into a new segment"
            );
            self.rewrite_uncommitted()?;
        }
        self.dirty = false;
        self.committed = self.segments.back().map_or(0, |s| s.bytes);
        self.durable_next = self.next_seq;
        Ok(())
    }

    /// After a failed fsync of the active segment: moves its records past `committed` into a
    /// new segment, synced, and cuts the suspect file back to `committed`. Records that no
    /// longer read back intact are counted as lost to corruption (their numbers are skipped,
    /// never reused: nothing past `durable_next` was ever read).
    fn rewrite_uncommitted(&mut self) -> io::Result<()> {
        let Some(active) = self.segments.back() else {
            return Ok(());
        };
        let (path, first, bytes) = (active.path.clone(), active.first, active.bytes);
        let mut pending = Vec::new();
        if let Some(mut reader) = SegmentReader::open_at(&path, self.committed)? {
            while let Ok(Some(rec)) = reader.next_record()? {
                if rec.seq >= self.durable_next {
                    pending.push(rec);
                }
            }
        }
        let lost = (self.next_seq - self.durable_next).saturating_sub(pending.len() as u64);
        if lost > 0 {
            self.drops.corrupt_segments += lost;
            warn!(records = lost, "store-and-forward queue: {lost} messages did not read back intact after the failed fsync and are lost");
        }
        // The suspect file keeps only what was durable; when that is nothing but its magic,
        // it goes (its name is the new segment's).
        if first >= self.durable_next {
            self.segments.pop_back();
            self.total_bytes -= bytes;
            remove_file(&path)?;
            cursor::sync_dir(&self.dir)?;
        } else {
            self.active.set_len(self.committed)?;
            self.active.sync_all()?;
            if let Some(s) = self.segments.back_mut() {
                s.bytes = self.committed;
            }
            self.total_bytes -= bytes - self.committed;
        }
        let (mut seg, mut f) = create_segment(&self.dir, self.durable_next)?;
        self.buf.clear();
        for rec in &pending {
            record::encode(rec.seq, &rec.message, &mut self.buf);
        }
        f.write_all(&self.buf)?;
        f.sync_data()?;
        seg.bytes += self.buf.len() as u64;
        self.total_bytes += seg.bytes;
        self.segments.push_back(seg);
        self.active = f;
        cursor::sync_dir(&self.dir)?;
        self.read = None;
        Ok(())
    }

    /// Pads the active segment to the next page boundary when that costs at most a quarter of
    /// what this commit wrote (invariant 9). Best effort: no room for it is no error.
    fn pad_commit(&mut self) -> io::Result<()> {
        let Some(active) = self.segments.back_mut() else {
            return Ok(());
        };
        let end = segment::padding_end(active.bytes);
        let pad = end - active.bytes;
        let wrote = active.bytes.saturating_sub(self.committed);
        if pad >= segment::PAGE
            || pad * 4 > wrote
            || self.total_bytes + pad > self.opts.max_bytes
            || end > self.opts.segment_bytes
        {
            return Ok(());
        }
        let zeros = [0u8; segment::PAGE as usize];
        match self.active.write_all(&zeros[..pad as usize]) {
            Ok(()) => {
                active.bytes = end;
                self.total_bytes += pad;
                Ok(())
            }
            Err(e) if is_disk_full(&e) => self.active.set_len(active.bytes),
            Err(e) => Err(e),
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

    fn delete_acked(&mut self) -> io::Result<()> {
        while self.segments.len() > 1 {
            let next_first = self.segments[1].first;
            if next_first > self.acked + 1 {
                break;
            }
            if let Some(old) = self.segments.pop_front() {
                self.forget(&old, true)?;
            }
        }
        Ok(())
    }

    /// Reads up to `max_records` records (and about `max_bytes` of topic + payload) with
    /// `seq >= from`, in order, skipping gaps. Empty when nothing newer is stored.
    pub fn read(
        &mut self,
        from: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> io::Result<Vec<Record>> {
        let mut out = Vec::new();
        let mut bytes = 0usize;
        let mut from = from.max(1);
        while out.len() < max_records && bytes < max_bytes && from < self.durable_next {
            let Some(idx) = self.segment_index(from) else {
                break;
            };
            let first = self.segments[idx].first;
            let following = self
                .segments
                .get(idx + 1)
                .map_or(self.next_seq, |s| s.first);
            from = from.max(first);
            let mut pos = match self.read.take() {
                Some(p) if p.segment_first == first && p.from <= from => p,
                _ => match SegmentReader::open(&self.segments[idx].path)? {
                    Some(reader) => ReadPos {
                        segment_first: first,
                        reader,
                        from: first,
                    },
                    None => {
                        self.segments[idx].damaged = true;
                        let lost = following.saturating_sub(from);
                        self.lost_to_corruption(first, 0, lost, record::Invalid::BadBody, false);
                        from = following;
                        continue;
                    }
                },
            };
            if idx + 1 == self.segments.len() && pos.reader.offset() >= self.committed {
                // The rest of the segment being written is not durable yet.
                self.read = Some(pos);
                break;
            }
            match pos.reader.next_record()? {
                Ok(Some(rec)) if rec.seq >= following => {
                    // Intact but out of place (a segment file copied or renamed by hand): its
                    // number belongs to a later segment. Never let it break the order.
                    self.segments[idx].damaged = true;
                    let lost = following.saturating_sub(from);
                    self.lost_to_corruption(
                        first,
                        pos.reader.offset(),
                        lost,
                        record::Invalid::BadBody,
                        false,
                    );
                    from = following;
                }
                Ok(Some(rec)) => {
                    pos.from = rec.seq + 1;
                    if rec.seq >= from {
                        from = rec.seq + 1;
                        bytes += rec.message.payload.len() + rec.message.topic.len();
                        out.push(rec);
                    }
                    self.read = Some(pos);
                }
                Ok(None) if idx + 1 < self.segments.len() => from = from.max(following),
                Ok(None) => {
                    // Caught up with the segment being written: keep the position.
                    self.read = Some(pos);
                    break;
                }
                Err(why) => {
                    let at = pos.reader.offset();
                    self.segments[idx].damaged = true;
                    if let Some(seq) = pos.reader.resync(pos.from..following)? {
                        self.lost_to_corruption(first, at, seq.saturating_sub(from), why, true);
                        pos.from = seq;
                        from = from.max(seq);
                        self.read = Some(pos);
                        continue;
                    }
                    self.lost_to_corruption(first, at, following.saturating_sub(from), why, false);
                    if idx + 1 == self.segments.len() {
                        // Never append behind garbage that nothing valid follows.
                        self.roll()?;
                    }
                    from = following;
                }
            }
        }
        Ok(out)
    }

    /// The segment that holds `from`, or the oldest one when `from` was dropped.
    fn segment_index(&self, from: u64) -> Option<usize> {
        if self.segments.is_empty() {
            return None;
        }
        Some(
            self.segments
                .iter()
                .rposition(|s| s.first <= from)
                .unwrap_or(0),
        )
    }

    fn lost_to_corruption(
        &mut self,
        segment_first: u64,
        offset: u64,
        records: u64,
        why: record::Invalid,
        resumed: bool,
    ) {
        self.drops.corrupt_segments += records;
        let then = if resumed {
            "resuming at the next valid record"
        } else {
            "nothing valid follows in this segment"
        };
        warn!(
            segment = %segment::file_name(segment_first),
            offset,
            records,
            "store-and-forward queue: corrupt data ({why:?}), {records} messages lost; {then}"
        );
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

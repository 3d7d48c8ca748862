//! Writing: appends into the active segment, rolls to a new one, drops the oldest for room,
//! and the group commit that makes records durable (and sendable), with the repair of a failed
//! fsync.

use std::io;

use tracing::{error, warn};

use super::*;

impl Queue {
    /// Accepts messages in order; returns the sequence number of each one taken (`None` for a
    /// message that can never be stored: larger than `max_bytes`). They are readable (sent
    /// upstream) at once and written to disk only if still unacknowledged at their flush
    /// deadline (see [`Self::sync`]), or at once with `sync_every_append`, or when more than
    /// [`TAIL_BYTES`] wait.
    pub fn append(&mut self, messages: &[Message]) -> io::Result<Vec<Option<u64>>> {
        let mut out = Vec::with_capacity(messages.len());
        let at = std::time::Instant::now();
        for m in messages {
            let len = record::encoded_len(m);
            if len as u64 + MAGIC.len() as u64 > self.opts.max_bytes {
                self.drops.too_large += 1;
                out.push(None);
                continue;
            }
            self.reserve()?;
            let seq = self.next_seq;
            self.next_seq += 1;
            self.tail.push_back(Pending {
                rec: Record {
                    seq,
                    message: m.clone(),
                },
                at,
                len: len + TAIL_OVERHEAD,
            });
            self.tail_bytes += len + TAIL_OVERHEAD;
            out.push(Some(seq));
        }
        if self.opts.sync_every_append || self.tail_bytes > TAIL_BYTES {
            self.write_tail()?;
        }
        Ok(out)
    }

    /// Makes sure the next sequence number was reserved durably before it is handed out: a
    /// restart never hands out a number that was, even one sent and never written.
    pub(super) fn reserve(&mut self) -> io::Result<()> {
        if self.next_seq < self.reserved {
            return Ok(());
        }
        let upto = self.next_seq.saturating_add(SEQ_BLOCK);
        self.seqs.store(upto)?;
        self.written += PAGE_BYTES;
        self.reserved = upto;
        Ok(())
    }

    /// Writes every record waiting in memory (all unacknowledged) and commits them (a group
    /// commit). Those that cannot be stored (disk full, an I/O error) are lost, as an append
    /// was before.
    pub(super) fn write_tail(&mut self) -> io::Result<()> {
        let waiting = std::mem::take(&mut self.tail);
        self.tail_bytes = 0;
        for p in &waiting {
            self.store(&p.rec)?;
        }
        if self.dirty {
            self.pad_commit()?;
            self.commit()?;
        }
        Ok(())
    }

    /// Writes one record at the end of the active segment (rolling, and dropping the oldest
    /// segments for room, first); false when it could not be stored (the disk is full).
    pub(super) fn store(&mut self, rec: &Record) -> io::Result<bool> {
        let m = &rec.message;
        let len = record::encoded_len(m) as u64;
        let active_bytes = self.segments.back().map_or(0, |s| s.bytes);
        if active_bytes > MAGIC.len() as u64 && active_bytes + len > self.opts.segment_bytes {
            match self.roll(rec.seq) {
                Ok(()) => {}
                Err(e) if is_disk_full(&e) => {
                    // Only the segment being written is left and no new one fits.
                    self.drops.disk_full += 1;
                    return Ok(false);
                }
                Err(e) => return Err(e),
            }
        }
        // Make room first: the cap holds even while this record is written.
        while self.total_bytes + len > self.opts.max_bytes && self.segments.len() > 1 {
            self.drop_oldest(false)?;
        }
        self.buf.clear();
        record::encode(rec.seq, m, &mut self.buf);
        loop {
            let at = self.segments.back().map_or(0, |s| s.bytes);
            match self.active.write_at(&self.buf, at, self.opts.segment_bytes) {
                Ok(()) => break,
                Err(e) if is_disk_full(&e) => {
                    // Undo a partial write, then free the oldest segment and try again.
                    self.active.cut(at)?;
                    if self.segments.len() > 1 {
                        self.drop_oldest(true)?;
                        continue;
                    }
                    self.drops.disk_full += 1;
                    return Ok(false);
                }
                Err(e) => return Err(e),
            }
        }
        if let Some(s) = self.segments.back_mut() {
            s.bytes += len;
            s.last = Some(rec.seq);
        }
        self.total_bytes += len;
        self.dirty = true;
        self.uncommitted += 1;
        self.disk_max = self.disk_max.max(rec.seq);
        Ok(true)
    }

    /// Starts a new segment whose first record is `first`, after committing the active one.
    pub(super) fn roll(&mut self, first: u64) -> io::Result<()> {
        self.commit()?;
        let end = self.segments.back().map_or(0, |s| s.bytes);
        self.active.finish(end);
        let (seg, f) = loop {
            match create_segment(&self.dir, first) {
                Ok(made) => break made,
                // The disk is full: the oldest segment makes room, as for an append.
                Err(e) if is_disk_full(&e) && self.segments.len() > 1 => self.drop_oldest(true)?,
                Err(e) => return Err(e),
            }
        };
        self.total_bytes += seg.bytes;
        self.written += PAGE_BYTES;
        self.committed = seg.bytes;
        let finished = self.segments.back().map(|s| s.first);
        self.segments.push_back(seg);
        self.active = f;
        // A reader that caught up with the finished segment read ahead of its data: space
        // allocated ahead, zeros, into which records were written since. Only the segment being
        // written is refreshed at each read, so its read-ahead is dropped now; read as padding,
        // those records would be skipped, and the segment taken as read to its end.
        if let Some(pos) = self
            .read
            .as_mut()
            .filter(|p| Some(p.segment_first) == finished)
        {
            if pos.reader.refresh().is_err() {
                // Read again from the segment's start (records before `from` are skipped).
                self.read = None;
            }
        }
        cursor::sync_dir(&self.dir)?;
        Ok(())
    }

    /// Deletes the oldest segment, counting its unacknowledged records as dropped.
    pub(super) fn drop_oldest(&mut self, disk_full: bool) -> io::Result<()> {
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
    pub(super) fn forget(&mut self, old: &Segment, keep_damaged: bool) -> io::Result<()> {
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
        !self.tail.is_empty() || self.dirty || self.dir_dirty || self.cursor_lags()
    }

    /// Whether the persisted cursor is behind an acknowledged record that is on disk (only
    /// then is writing it worth a page: records acknowledged from memory were never written).
    fn cursor_lags(&self) -> bool {
        self.acked > self.persisted_ack && self.persisted_ack < self.disk_max
    }

    /// When `sync` should run next: at the flush deadline of the oldest record waiting in
    /// memory (`group_commit` after it was accepted), or when the cursor falls due for
    /// acknowledgements of records on disk; `None` when nothing waits.
    pub fn sync_due_in(&self, group_commit: std::time::Duration) -> Option<std::time::Duration> {
        let now = std::time::Instant::now();
        let data = self
            .tail
            .front()
            .map(|p| (p.at + group_commit).saturating_duration_since(now));
        let data = if self.dirty || self.dir_dirty {
            Some(std::time::Duration::ZERO)
        } else {
            data
        };
        let cursor = self.cursor_lags().then(|| {
            let age = self.ack_stored_at.map_or(CURSOR_EVERY, |t| t.elapsed());
            CURSOR_EVERY.saturating_sub(age)
        });
        match (data, cursor) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Does what is due (group commit): writes the records waiting in memory once the oldest
    /// reached its flush deadline (`group_commit` after it was accepted), and persists the ack
    /// cursor when it lags behind records on disk. The cursor is written at most every
    /// [`CURSOR_EVERY`]: each write is a page on the SD card, and a cursor that lags only means
    /// duplicates after a crash, never loss.
    pub fn sync(&mut self, group_commit: std::time::Duration) -> io::Result<()> {
        let due = self
            .tail
            .front()
            .is_some_and(|p| p.at.elapsed() >= group_commit);
        self.sync_with(due, false)
    }

    /// Writes everything waiting and the cursor now whatever their age, and gives back the
    /// space allocated ahead (at shutdown).
    pub fn sync_all(&mut self) -> io::Result<()> {
        self.sync_with(true, true)?;
        let end = self.segments.back().map_or(0, |s| s.bytes);
        self.active.finish(end);
        Ok(())
    }

    pub(super) fn sync_with(&mut self, write: bool, force_cursor: bool) -> io::Result<()> {
        if write {
            self.write_tail()?;
        }
        if self.dirty {
            self.pad_commit()?;
            self.commit()?;
        }
        let cursor_due = force_cursor
            || self
                .ack_stored_at
                .is_none_or(|t| t.elapsed() >= CURSOR_EVERY);
        let worth = self.cursor_lags() || (force_cursor && self.acked > self.persisted_ack);
        if worth && cursor_due {
            self.ack_stored_at = Some(std::time::Instant::now());
            self.cursor.store(self.acked)?;
            self.written += PAGE_BYTES;
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
    pub(super) fn commit(&mut self) -> io::Result<()> {
        if let Err(e) = self.active.sync_data() {
            error!(
                segment = %self.segments.back().map_or_else(String::new, |s| s.path.display().to_string()),
                "store-and-forward queue: fsync failed ({e}); rewriting the records since the last commit into a new segment"
            );
            self.rewrite_uncommitted()?;
        }
        let end = self.segments.back().map_or(0, |s| s.bytes);
        self.written += pages(self.committed, end);
        self.dirty = false;
        self.uncommitted = 0;
        self.committed = end;
        self.durable_next = self.durable_next.max(self.disk_max + 1);
        Ok(())
    }

    /// After a failed fsync of the active segment: moves its records past `committed` into a
    /// new segment, synced, and cuts the suspect file back to `committed`. Records that no
    /// longer read back intact are counted as lost to corruption (their numbers are skipped,
    /// never reused: they were reserved).
    pub(super) fn rewrite_uncommitted(&mut self) -> io::Result<()> {
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
        let lost = self.uncommitted.saturating_sub(pending.len() as u64);
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
            self.active.cut(self.committed)?;
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
        f.write_at(&self.buf, seg.bytes, self.opts.segment_bytes)?;
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
    pub(super) fn pad_commit(&mut self) -> io::Result<()> {
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
        // Space allocated ahead is zeros already: the padding costs no write.
        if self.active.zeros_up_to(end) {
            active.bytes = end;
            self.total_bytes += pad;
            return Ok(());
        }
        let zeros = [0u8; segment::PAGE as usize];
        match self.active.write_at(
            &zeros[..pad as usize],
            active.bytes,
            self.opts.segment_bytes,
        ) {
            Ok(()) => {
                active.bytes = end;
                self.total_bytes += pad;
                Ok(())
            }
            Err(e) if is_disk_full(&e) => self.active.cut(active.bytes),
            Err(e) => Err(e),
        }
    }

    pub(super) fn delete_acked(&mut self) -> io::Result<()> {
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
}

/// The pages a write from byte `from` to byte `to` of a file touches, in bytes.
fn pages(from: u64, to: u64) -> u64 {
    if to <= from {
        return 0;
    }
    (to.div_ceil(PAGE_BYTES) - from / PAGE_BYTES) * PAGE_BYTES
}

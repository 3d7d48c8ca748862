//! Writing: appends into the active segment, rolls to a new one, drops the oldest for room,
//! and the group commit that makes records durable (and sendable), with the repair of a failed
//! fsync.

use std::io::{self, Write};

use tracing::{error, warn};

use super::*;

impl Queue {
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

    pub(super) fn append_one(&mut self, m: &Message) -> io::Result<Option<u64>> {
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

    pub(super) fn roll(&mut self) -> io::Result<()> {
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

    pub(super) fn sync_with(&mut self, force_cursor: bool) -> io::Result<()> {
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
    pub(super) fn commit(&mut self) -> io::Result<()> {
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

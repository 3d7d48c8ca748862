//! Reading for the uplink: records from a sequence number on, from the segments and then from
//! the records not written yet, with damaged stretches counted as lost instead of sent.

use std::io;

use tracing::warn;

use super::*;

impl Queue {
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
        // Read-ahead of the active segment is dropped once per call (see `refresh`).
        let mut fresh = false;
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
            // A closed segment whose last record is behind `from` (a reader waiting in the
            // gap a restart leaves between two blocks of numbers) is not read through again.
            if idx + 1 < self.segments.len() && self.segments[idx].last.is_some_and(|l| l < from) {
                from = following;
                continue;
            }
            self.opened += u64::from(
                !matches!(&self.read, Some(p) if p.segment_first == first && p.from <= from),
            );
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
            if idx + 1 == self.segments.len() {
                if pos.reader.offset() >= self.committed {
                    // Caught up with what is written of the active segment.
                    self.read = Some(pos);
                    break;
                }
                if !fresh {
                    pos.reader.refresh()?;
                    fresh = true;
                }
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
                Ok(None) if idx + 1 < self.segments.len() => {
                    // Read to its end: its last record is known from now on. The writer's (or
                    // the opening scan's) record of it stands when there is one: a reader's view
                    // can be stale, and a wrong `last` would make later reads skip records.
                    if pos.from > first
                        && !self.segments[idx].damaged
                        && self.segments[idx].last.is_none()
                    {
                        self.segments[idx].last = Some(pos.from - 1);
                    }
                    from = from.max(following);
                }
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
                        self.roll(self.tail.front().map_or(self.next_seq, |p| p.rec.seq))?;
                    }
                    from = following;
                }
            }
        }
        // Then the records not written yet (sent at once, from memory).
        let start = self.tail.partition_point(|p| p.rec.seq < from);
        for p in self.tail.range(start..) {
            if out.len() >= max_records || bytes >= max_bytes {
                break;
            }
            bytes += p.rec.message.payload.len() + p.rec.message.topic.len();
            out.push(p.rec.clone());
        }
        Ok(out)
    }

    /// The segment that holds `from`, or the oldest one when `from` was dropped.
    pub(super) fn segment_index(&self, from: u64) -> Option<usize> {
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

    pub(super) fn lost_to_corruption(
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

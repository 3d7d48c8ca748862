//! Opening the queue: recovery from what is durably on disk (see the crash model in
//! [`super`]): the newest segment scanned backwards for its last intact record, torn or empty
//! tails and unreadable segments set aside, the next sequence number above everything ever
//! given out.

use std::io;
use std::path::Path;

use super::*;

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
                last: scan.last_seq,
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
                last: None,
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
        let durable_next = stored_next.max(acked + 1).max(numbered_from);
        // Numbers handed out before a cut may have been sent without being written: a restart
        // starts above every number that was reserved for use.
        let (seqs, reserved) =
            cursor::CursorFile::open_named(dir, cursor::RESERVED, "reserved sequence numbers")?;
        let reserved = match reserved {
            cursor::Loaded::Acked(r) => r,
            cursor::Loaded::Missing => 0,
            // Both slots damaged: how far numbers were handed out is unknown (acknowledged ones
            // never reach the disk), so a jump no gateway can use up (2^40: 35 years at 1,000
            // messages a second) keeps them unique.
            cursor::Loaded::Corrupt => {
                recovery.seq_corrupt = true;
                durable_next.saturating_add(1 << 40)
            }
        };
        let next_seq = durable_next.max(reserved);
        // Append to the last segment only if it continues exactly where the log ends.
        let active = match segments.back() {
            Some(s) if last_seq.map(|l| l + 1) == Some(next_seq) => open_for_writing(&s.path)?,
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
            durable_next,
            tail: VecDeque::new(),
            tail_bytes: 0,
            reserved: next_seq,
            seqs,
            disk_max: last_seq.unwrap_or(0),
            uncommitted: 0,
            written: 0,
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
            opened: 0,
            buf: Vec::with_capacity(64 * 1024),
        };
        q.delete_acked()?;
        q.reserve()?;
        recovery.depth = q.depth();
        Ok((q, recovery))
    }
}

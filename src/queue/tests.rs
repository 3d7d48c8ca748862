//! The queue's invariants, through real files in a temporary directory.

use super::*;
use bytes::Bytes;
use proptest::prelude::*;

fn msg(i: u64) -> Message {
    Message {
        topic: format!("sensors/dev{}/t", i % 3),
        payload: Bytes::from(format!("reading {i}")),
        qos: 1,
        retain: i % 2 == 0,
    }
}

fn opts(max_bytes: u64, segment_bytes: u64) -> Options {
    Options {
        max_bytes,
        segment_bytes,
        sync_every_append: false,
    }
}

fn open(dir: &Path, o: Options) -> (Queue, Recovery) {
    Queue::open(dir, o).expect("open queue")
}

fn seqs(recs: &[Record]) -> Vec<u64> {
    recs.iter().map(|r| r.seq).collect()
}

fn append_n(q: &mut Queue, range: std::ops::Range<u64>) {
    let msgs: Vec<Message> = range.map(msg).collect();
    for s in q.append(&msgs).unwrap() {
        assert!(s.is_some());
    }
    // Written and committed (as at their flush deadline, unacknowledged).
    q.sync(std::time::Duration::ZERO).unwrap();
}

/// Removes the file of reserved numbers, as a queue written by an older version has none:
/// numbering then continues above what the disk holds.
fn forget_reservations(dir: &Path) {
    fs::remove_file(dir.join(cursor::RESERVED)).unwrap();
}

#[test]
fn appended_messages_read_back_in_order_with_consecutive_seqs() {
    let dir = tempfile::tempdir().unwrap();
    let (mut q, rec) = open(dir.path(), opts(1 << 20, 1 << 16));
    assert_eq!(rec, Recovery::default());
    let got = q.append(&[msg(0), msg(1), msg(2)]).unwrap();
    assert_eq!(got, vec![Some(1), Some(2), Some(3)]);
    // Readable at once (sent upstream), before anything is written.
    let (_, path) = segment::list(dir.path()).unwrap().pop().unwrap();
    assert_eq!(fs::metadata(&path).unwrap().len(), MAGIC.len() as u64);
    assert_eq!(seqs(&q.read(1, 100, 1 << 20).unwrap()), vec![1, 2, 3]);
    q.sync(std::time::Duration::ZERO).unwrap();
    assert!(fs::metadata(&path).unwrap().len() > MAGIC.len() as u64);
    let recs = q.read(1, 100, 1 << 20).unwrap();
    assert_eq!(seqs(&recs), vec![1, 2, 3]);
    assert_eq!(recs[1].message, msg(1));
    // Reading from the middle, and past the end.
    assert_eq!(seqs(&q.read(2, 1, 1 << 20).unwrap()), vec![2]);
    assert!(q.read(4, 10, 1 << 20).unwrap().is_empty());
    // A caught-up reader sees what is appended next.
    append_n(&mut q, 3..5);
    assert_eq!(seqs(&q.read(4, 10, 1 << 20).unwrap()), vec![4, 5]);
}

#[test]
fn reopening_continues_the_sequence_and_the_ack_cursor() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut q, _) = open(dir.path(), opts(1 << 20, 1 << 12));
        append_n(&mut q, 0..100);
        q.ack(40);
        q.sync_all().unwrap();
    }
    let (mut q, rec) = open(dir.path(), opts(1 << 20, 1 << 12));
    assert_eq!(rec.depth, 60);
    assert_eq!(q.acked(), 40);
    assert_eq!(q.read(41, 1000, 1 << 30).unwrap().len(), 60);
    // Numbering continues above the block reserved before (numbers 101..=SEQ_BLOCK may have
    // been sent without being written: they are never handed out again).
    assert_eq!(q.append(&[msg(100)]).unwrap(), vec![Some(SEQ_BLOCK + 1)]);
}

/// Records acknowledged before their flush deadline never reach the disk; the others do,
/// together, once the oldest is due; a reopen without them (a cut) never reuses their numbers.
#[test]
fn only_what_is_unacknowledged_at_its_deadline_is_written() {
    let dir = tempfile::tempdir().unwrap();
    let (mut q, _) = open(dir.path(), opts(1 << 20, 1 << 16));
    let (_, path) = segment::list(dir.path()).unwrap().pop().unwrap();
    let second = std::time::Duration::from_secs(1);
    q.append(&(0..50).map(msg).collect::<Vec<_>>()).unwrap();
    assert_eq!(q.stats().in_memory, 50);
    q.ack(50);
    assert_eq!(q.stats().in_memory, 0);
    assert_eq!(q.sync_due_in(second), None, "nothing waits");
    q.sync(std::time::Duration::ZERO).unwrap();
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        MAGIC.len() as u64,
        "never written"
    );
    // Unacknowledged: due one flush interval after it was accepted, not before.
    q.append(&[msg(50), msg(51)]).unwrap();
    let due = q.sync_due_in(second).unwrap();
    assert!(due > std::time::Duration::from_millis(900), "{due:?}");
    q.sync(second).unwrap();
    assert_eq!(
        fs::metadata(&path).unwrap().len(),
        MAGIC.len() as u64,
        "not due yet"
    );
    q.ack(51);
    q.sync(std::time::Duration::ZERO).unwrap();
    let on_disk = segment::scan(&path, 1).unwrap();
    assert_eq!((on_disk.records, on_disk.last_seq), (1, Some(52)));
    // A cut now: 53 is handed out and sent, never written.
    assert_eq!(q.append(&[msg(52)]).unwrap(), vec![Some(53)]);
    assert_eq!(seqs(&q.read(52, 10, 1 << 20).unwrap()), vec![52, 53]);
    drop(q);
    let (mut q, rec) = open(dir.path(), opts(1 << 20, 1 << 16));
    assert_eq!(rec.depth, 1);
    assert_eq!(seqs(&q.read(1, 10, 1 << 20).unwrap()), vec![52]);
    let next = q.append(&[msg(53)]).unwrap()[0].unwrap();
    assert!(
        next > 53,
        "53 went upstream before the cut: never reused ({next})"
    );
    assert!(q.stats().written > 0);
}

#[test]
fn segments_roll_by_size_and_acked_ones_are_deleted() {
    let dir = tempfile::tempdir().unwrap();
    let (mut q, _) = open(dir.path(), opts(1 << 20, 1024));
    append_n(&mut q, 0..200);
    let before = q.stats().segments;
    assert!(before > 5, "{before}");
    for s in &q.segments {
        assert!(s.bytes <= 1024, "segment {} has {} bytes", s.first, s.bytes);
    }
    q.ack(150);
    assert_eq!(
        q.stats().segments,
        before,
        "nothing deleted before the ack is durable"
    );
    q.sync_all().unwrap();
    let after = q.stats().segments;
    assert!(after < before);
    let files = segment::list(dir.path()).unwrap();
    assert_eq!(files.len(), after);
    // Everything unacked is still there.
    assert_eq!(
        seqs(&q.read(151, 1000, 1 << 30).unwrap()),
        (151..=200).collect::<Vec<_>>()
    );
    // Acking everything keeps only the segment being written.
    q.ack(200);
    q.sync_all().unwrap();
    assert_eq!(q.stats().segments, 1);
    assert_eq!(q.depth(), 0);
}

#[test]
fn a_torn_last_record_is_truncated_on_open_and_never_read() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut q, _) = open(dir.path(), opts(1 << 20, 1 << 20));
        append_n(&mut q, 0..10);
        q.sync_all().unwrap();
    }
    let (_, path) = segment::list(dir.path()).unwrap().pop().unwrap();
    let len = fs::metadata(&path).unwrap().len();
    // Cut the last record in half, as a power cut during its write would.
    OpenOptions::new()
        .write(true)
        .open(&path)
        .unwrap()
        .set_len(len - 7)
        .unwrap();
    let (mut q, rec) = open(dir.path(), opts(1 << 20, 1 << 20));
    assert!(rec.torn_bytes > 0);
    assert_eq!(
        seqs(&q.read(1, 100, 1 << 30).unwrap()),
        (1..=9).collect::<Vec<_>>()
    );
    // The next message never takes the torn one's number, and reads back intact.
    assert_eq!(q.append(&[msg(99)]).unwrap(), vec![Some(SEQ_BLOCK + 1)]);
    q.sync(std::time::Duration::ZERO).unwrap();
    let recs = q.read(10, 10, 1 << 30).unwrap();
    assert_eq!(seqs(&recs), vec![SEQ_BLOCK + 1]);
    assert_eq!(recs[0].message, msg(99));
}

#[test]
fn garbage_after_the_last_record_is_truncated() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut q, _) = open(dir.path(), opts(1 << 20, 1 << 20));
        append_n(&mut q, 0..5);
        q.sync_all().unwrap();
    }
    let (_, path) = segment::list(dir.path()).unwrap().pop().unwrap();
    let mut f = OpenOptions::new().append(true).open(&path).unwrap();
    f.write_all(&[0xAB; 100]).unwrap();
    let (mut q, rec) = open(dir.path(), opts(1 << 20, 1 << 20));
    assert_eq!(rec.torn_bytes, 100);
    assert_eq!(seqs(&q.read(1, 100, 1 << 30).unwrap()), vec![1, 2, 3, 4, 5]);
}

/// Reads everything from 1 on, checking that no garbage comes back: sequence numbers strictly
/// increase and every record is the message that was appended with its number.
fn read_all_intact(q: &mut Queue) -> Vec<u64> {
    let recs = q.read(1, usize::MAX, 1 << 30).unwrap();
    let got = seqs(&recs);
    assert!(got.windows(2).all(|w| w[0] < w[1]), "in order: {got:?}");
    for r in &recs {
        assert_eq!(r.message, msg(r.seq - 1), "record {} intact", r.seq);
    }
    got
}

fn corrupt_set_aside(dir: &Path) -> usize {
    fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy().ends_with(".seg.corrupt")
        })
        .count()
}

#[test]
fn a_bit_flip_in_an_older_segment_loses_that_record_only_and_the_segment_is_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut q, _) = open(dir.path(), opts(1 << 20, 1024));
        append_n(&mut q, 0..100);
        q.sync_all().unwrap();
    }
    let files = segment::list(dir.path()).unwrap();
    assert!(files.len() >= 3);
    let (first, path) = &files[0];
    let mut bytes = fs::read(path).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0x40;
    fs::write(path, &bytes).unwrap();

    let (mut q, _) = open(dir.path(), opts(1 << 20, 1024));
    let got = read_all_intact(&mut q);
    assert!(got.contains(first));
    assert_eq!(*got.last().unwrap(), 100);
    // Exactly the damaged record is missing: reading resumed at the next one.
    assert_eq!(got.len(), 99);
    assert_eq!(q.stats().drops.corrupt_segments, 1);
    // Once acknowledged, the damaged segment is kept aside rather than deleted.
    q.ack(100);
    q.sync_all().unwrap();
    assert_eq!(corrupt_set_aside(dir.path()), 1);
    assert!(!path.exists());
}

#[test]
fn damage_in_the_middle_of_the_last_segment_is_not_mistaken_for_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut q, _) = open(dir.path(), opts(1 << 20, 1 << 20));
        append_n(&mut q, 0..50);
        q.sync_all().unwrap();
    }
    let (_, path) = segment::list(dir.path()).unwrap().pop().unwrap();
    let mut bytes = fs::read(&path).unwrap();
    let len = bytes.len();
    // Zero a stretch in the middle, as a failing card may.
    bytes[len / 3..len / 3 + 90].fill(0);
    fs::write(&path, &bytes).unwrap();

    let (mut q, rec) = open(dir.path(), opts(1 << 20, 1 << 20));
    assert_eq!(rec.torn_bytes, 0, "records after the damage are kept");
    assert_eq!(rec.damaged, 1);
    let got = read_all_intact(&mut q);
    assert_eq!(*got.last().unwrap(), 50);
    let lost = 50 - got.len() as u64;
    assert!((2..=4).contains(&lost), "lost {lost}");
    assert_eq!(q.stats().drops.corrupt_segments, lost);
    // Appending continues the sequence above the damaged segment's last record.
    let seq = q.append(&[msg(50)]).unwrap()[0].unwrap();
    assert!(seq > 50);
    q.sync(std::time::Duration::ZERO).unwrap();
    assert_eq!(seqs(&q.read(51, 10, 1 << 30).unwrap()), vec![seq]);
}

#[test]
fn an_intact_record_in_the_wrong_segment_never_breaks_the_order() {
    // Found by the queue_recovery fuzz target: records copied from a later segment into an
    // older one are intact (checksums match) but out of place.
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut q, _) = open(dir.path(), opts(1 << 20, 512));
        append_n(&mut q, 0..40);
        q.sync_all().unwrap();
    }
    let files = segment::list(dir.path()).unwrap();
    assert_eq!(files.len(), 4, "segments from 1, 12, 23, 34");
    // The second segment was dropped (a gap), the last one's records were copied to the end of
    // the first, and the last one is gone: they lie beyond the end of the log, in a segment
    // that reading still uses for the numbers of the gap.
    let last = fs::read(&files[3].1).unwrap();
    let mut first = fs::read(&files[0].1).unwrap();
    first.extend_from_slice(&last[MAGIC.len()..]);
    fs::write(&files[0].1, first).unwrap();
    fs::remove_file(&files[1].1).unwrap();
    fs::remove_file(&files[3].1).unwrap();
    forget_reservations(dir.path());

    let (mut q, _) = open(dir.path(), opts(1 << 20, 512));
    let got = read_all_intact(&mut q);
    let want: Vec<u64> = (1..12).chain(23..34).collect();
    assert_eq!(
        got, want,
        "the third segment is read, nothing beyond the end"
    );
    let seq = q.append(&[msg(33)]).unwrap()[0].unwrap();
    q.sync(std::time::Duration::ZERO).unwrap();
    assert_eq!(seq, 34);
    assert_eq!(seqs(&q.read(34, 10, 1 << 20).unwrap()), vec![34]);
}

#[test]
fn only_the_newest_damaged_segments_are_kept() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut q, _) = open(dir.path(), opts(1 << 20, 512));
        append_n(&mut q, 0..60);
        q.sync_all().unwrap();
    }
    let files = segment::list(dir.path()).unwrap();
    assert!(files.len() > KEEP_CORRUPT + 2);
    for (_, path) in &files[..KEEP_CORRUPT + 2] {
        let mut bytes = fs::read(path).unwrap();
        bytes[0] = b'X';
        fs::write(path, &bytes).unwrap();
    }
    let (_, rec) = open(dir.path(), opts(1 << 20, 512));
    assert_eq!(rec.set_aside.len(), KEEP_CORRUPT + 2);
    assert_eq!(corrupt_set_aside(dir.path()), KEEP_CORRUPT);
}

#[test]
fn a_commit_that_filled_most_of_a_page_is_padded_and_reads_on_across_the_padding() {
    let dir = tempfile::tempdir().unwrap();
    let (mut q, _) = open(dir.path(), opts(1 << 30, 1 << 20));
    let (_, path) = segment::list(dir.path()).unwrap().pop().unwrap();
    // About 3.6 KiB in one commit: padded to the page boundary (the data's end: the file
    // itself is allocated ahead).
    append_n(&mut q, 0..85);
    q.sync(std::time::Duration::ZERO).unwrap();
    assert_eq!(q.segments.back().unwrap().bytes % segment::PAGE, 0);
    assert!(fs::metadata(&path).unwrap().len() >= q.segments.back().unwrap().bytes);
    // One small record: padding it would waste most of a page, so it is not padded.
    append_n(&mut q, 85..86);
    q.sync(std::time::Duration::ZERO).unwrap();
    let written = q.segments.back().unwrap().bytes;
    assert_ne!(written % segment::PAGE, 0);
    append_n(&mut q, 86..300);
    q.sync(std::time::Duration::ZERO).unwrap();
    assert_eq!(read_all_intact(&mut q), (1..=300).collect::<Vec<_>>());
    // The same after a restart (without reservations: it appends after the padding).
    drop(q);
    forget_reservations(dir.path());
    let (mut q, rec) = open(dir.path(), opts(1 << 30, 1 << 20));
    assert_eq!((rec.torn_bytes, rec.damaged), (0, 0));
    append_n(&mut q, 300..310);
    assert_eq!(read_all_intact(&mut q), (1..=310).collect::<Vec<_>>());
}

#[test]
fn padding_cut_short_by_a_crash_is_a_torn_tail() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut q, _) = open(dir.path(), opts(1 << 30, 1 << 20));
        append_n(&mut q, 0..85);
        q.sync(std::time::Duration::ZERO).unwrap();
    }
    let (_, path) = segment::list(dir.path()).unwrap().pop().unwrap();
    let len = fs::metadata(&path).unwrap().len();
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.set_len(len - 100).unwrap();
    let (mut q, rec) = open(dir.path(), opts(1 << 30, 1 << 20));
    assert!(rec.torn_bytes > 0);
    assert_eq!(read_all_intact(&mut q), (1..=85).collect::<Vec<_>>());
}

#[test]
fn when_full_the_oldest_segments_go_and_are_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (mut q, _) = open(dir.path(), opts(8 * 1024, 1024));
    append_n(&mut q, 0..1000);
    let st = q.stats();
    assert!(st.bytes <= 8 * 1024, "{st:?}");
    let recs = q.read(1, 10_000, 1 << 30).unwrap();
    let got = seqs(&recs);
    // The newest are kept, in order, contiguous up to the last.
    assert_eq!(*got.last().unwrap(), 1000);
    assert!(got.windows(2).all(|w| w[1] == w[0] + 1));
    assert_eq!(st.drops.full, 1000 - got.len() as u64);
    // Files hold their data once the space allocated ahead is given back (at shutdown).
    q.sync_all().unwrap();
    let st = q.stats();
    let on_disk: u64 = segment::list(dir.path())
        .unwrap()
        .iter()
        .map(|(_, p)| fs::metadata(p).unwrap().len())
        .sum();
    assert_eq!(on_disk, st.bytes);
}

#[test]
fn a_message_larger_than_the_queue_is_refused_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (mut q, _) = open(dir.path(), opts(4096, 1024));
    let big = Message {
        topic: "t".into(),
        payload: Bytes::from(vec![0u8; 5000]),
        qos: 1,
        retain: false,
    };
    assert_eq!(q.append(&[big, msg(1)]).unwrap(), vec![None, Some(1)]);
    assert_eq!(q.stats().drops.too_large, 1);
}

#[test]
fn a_damaged_cursor_replays_from_the_oldest_record() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut q, _) = open(dir.path(), opts(1 << 20, 1 << 20));
        append_n(&mut q, 0..10);
        q.ack(5);
        q.sync_all().unwrap();
    }
    fs::write(dir.path().join("acked"), b"garbage").unwrap();
    let (mut q, rec) = open(dir.path(), opts(1 << 20, 1 << 20));
    assert!(rec.cursor_corrupt);
    assert_eq!(q.acked(), 0);
    assert_eq!(q.read(1, 100, 1 << 30).unwrap().len(), 10);
}

#[test]
fn a_segment_with_a_bad_magic_is_set_aside() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut q, _) = open(dir.path(), opts(1 << 20, 512));
        append_n(&mut q, 0..40);
        q.sync_all().unwrap();
    }
    let files = segment::list(dir.path()).unwrap();
    let (_, path) = &files[0];
    let mut bytes = fs::read(path).unwrap();
    bytes[0] = b'X';
    fs::write(path, &bytes).unwrap();
    let (mut q, rec) = open(dir.path(), opts(1 << 20, 512));
    assert_eq!(rec.set_aside.len(), 1);
    assert!(rec.set_aside[0].to_string_lossy().ends_with(".seg.corrupt"));
    let got = seqs(&q.read(1, 100, 1 << 30).unwrap());
    assert_eq!(*got.last().unwrap(), 40);
    assert!(got[0] > 1);
}

#[test]
fn memory_does_not_hold_the_backlog() {
    // Reading in small batches keeps at most a batch in memory, whatever the backlog.
    let dir = tempfile::tempdir().unwrap();
    let (mut q, _) = open(dir.path(), opts(1 << 30, 1 << 20));
    append_n(&mut q, 0..20_000);
    let mut from = 1;
    let mut n = 0;
    loop {
        let batch = q.read(from, 64, 1 << 20).unwrap();
        if batch.is_empty() {
            break;
        }
        assert!(batch.len() <= 64);
        n += batch.len();
        from = batch.last().unwrap().seq + 1;
    }
    assert_eq!(n, 20_000);
    assert!(q.buf.capacity() <= 64 * 1024);
}

#[derive(Debug, Clone)]
enum Op {
    Append(u8),
    Ack(u8),
    Read(u8),
    Sync,
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u8..20).prop_map(Op::Append),
        2 => any::<u8>().prop_map(Op::Ack),
        2 => (1u8..30).prop_map(Op::Read),
        1 => Just(Op::Sync),
        1 => Just(Op::Reopen),
    ]
}

/// Damage a failing card or a crash can do to a segment file.
#[derive(Debug, Clone)]
enum Damage {
    Truncate(u16),
    Zero(u16, u8),
    Flip(u16, u8),
    Garbage(u16, Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        any::<u16>().prop_map(Damage::Truncate),
        (any::<u16>(), any::<u8>()).prop_map(|(a, n)| Damage::Zero(a, n)),
        (any::<u16>(), 0u8..8).prop_map(|(a, b)| Damage::Flip(a, b)),
        (any::<u16>(), proptest::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(a, g)| Damage::Garbage(a, g)),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever happens to the segment files before a start, the queue opens, never returns a
    /// damaged or misplaced record, counts what it lost, and keeps accepting messages.
    #[test]
    fn damaged_segments_never_yield_garbage(hits in proptest::collection::vec((0usize..4, damage()), 1..6)) {
        let dir = tempfile::tempdir().unwrap();
        {
            let (mut q, _) = open(dir.path(), opts(1 << 20, 2048));
            for chunk in 0..8u64 {
                append_n(&mut q, chunk * 25..chunk * 25 + 25);
                q.sync(std::time::Duration::ZERO).unwrap();
            }
        }
        let files = segment::list(dir.path()).unwrap();
        for (which, d) in &hits {
            let (_, path) = &files[which % files.len()];
            let mut bytes = fs::read(path).unwrap();
            let at = |a: &u16| *a as usize % bytes.len().max(1);
            match d {
                Damage::Truncate(a) => { let n = at(a); bytes.truncate(n); }
                Damage::Zero(a, n) => { let s = at(a); let e = (s + *n as usize).min(bytes.len()); bytes[s..e].fill(0); }
                Damage::Flip(a, b) => { let s = at(a); if s < bytes.len() { bytes[s] ^= 1 << b; } }
                Damage::Garbage(a, g) => { let s = at(a); for (i, x) in g.iter().enumerate() { if let Some(y) = bytes.get_mut(s + i) { *y = *x; } } }
            }
            fs::write(path, &bytes).unwrap();
        }
        let (mut q, _) = open(dir.path(), opts(1 << 20, 2048));
        let got = read_all_intact(&mut q);
        prop_assert!(got.iter().all(|&s| (1..=200).contains(&s)));
        let seq = q.append(&[msg(999)]).unwrap()[0].unwrap();
        q.sync(std::time::Duration::ZERO).unwrap();
        prop_assert!(got.last().is_none_or(|&l| seq > l));
        let back = q.read(seq, 1, 1 << 20).unwrap();
        prop_assert_eq!(&back[0].message, &msg(999));
    }

    /// The queue matches a model: every appended message is read back at once, once per
    /// delivery attempt, in order, from the ack cursor; a reopen without a sync (a crash) loses
    /// only what was never written, the cursor is the last synced one (at-least-once), and
    /// sequence numbers never repeat, not even those of records lost that way.
    #[test]
    fn queue_matches_a_model(ops in proptest::collection::vec(op(), 1..60)) {
        let dir = tempfile::tempdir().unwrap();
        let o = opts(1 << 30, 700);
        let (mut q, _) = open(dir.path(), o);
        let mut model: std::collections::BTreeMap<u64, Message> = Default::default();
        let mut acked = 0u64;
        let mut persisted = 0u64;
        let mut cursor = 1u64; // the uplink's read position
        let mut counter = 0u64;
        let mut written = 0u64; // every record up to this one is on disk (or acknowledged)
        let mut last_seq = 0u64;
        for op in ops {
            match op {
                Op::Append(n) => {
                    let msgs: Vec<Message> = (0..n).map(|_| { counter += 1; msg(counter) }).collect();
                    let seqs = q.append(&msgs).unwrap();
                    for (m, s) in msgs.into_iter().zip(seqs) {
                        let s = s.unwrap();
                        prop_assert!(s > last_seq, "{} after {}", s, last_seq);
                        last_seq = s;
                        model.insert(s, m);
                    }
                }
                Op::Ack(k) => {
                    let upto = (acked + u64::from(k) % 8).min(cursor - 1);
                    q.ack(upto);
                    acked = acked.max(upto);
                    prop_assert_eq!(q.acked(), acked);
                }
                Op::Read(n) => {
                    let recs = q.read(cursor, n as usize, 1 << 30).unwrap();
                    for r in &recs {
                        let (&seq, m) = model.range(cursor..).next().expect("a record the model has");
                        prop_assert_eq!(r.seq, seq);
                        prop_assert_eq!(&r.message, m);
                        cursor = seq + 1;
                    }
                    if (n as u64) > recs.len() as u64 {
                        prop_assert!(model.range(cursor..).next().is_none(), "a short read means caught up");
                    }
                }
                Op::Sync => {
                    q.sync_all().unwrap();
                    persisted = acked;
                    written = last_seq;
                }
                Op::Reopen => {
                    drop(q);
                    let (q2, _) = open(dir.path(), o);
                    q = q2;
                    acked = persisted;
                    // What was only in memory is gone (it was sent, and its numbers are not
                    // handed out again).
                    model.retain(|&s, _| s <= written);
                    prop_assert_eq!(q.acked(), acked);
                    cursor = acked + 1; // replay from the cursor after a restart
                }
            }
            // Exact, but for segments from before a restart whose last record is not known:
            // they count no more than their size can hold.
            let waiting = model.range(acked + 1..).count() as u64;
            let slack: u64 = q.segments.iter().filter(|s| s.last.is_none()).map(|s| (s.bytes - MAGIC.len() as u64) / record::MIN_LEN as u64).sum();
            prop_assert!((waiting..=waiting + slack).contains(&q.depth()), "depth {} for {} waiting", q.depth(), waiting);
        }
    }
}

#[test]
fn the_cursor_is_written_at_most_once_a_second_but_always_at_the_end() {
    let dir = tempfile::tempdir().unwrap();
    let (mut q, _) = open(dir.path(), opts(1 << 20, 1 << 16));
    append_n(&mut q, 0..10);
    q.ack(3);
    q.sync(std::time::Duration::ZERO).unwrap();
    assert_eq!(
        cursor::CursorFile::open(dir.path()).unwrap().1,
        cursor::Loaded::Acked(3)
    );
    q.ack(6);
    q.sync(std::time::Duration::ZERO).unwrap();
    assert_eq!(
        cursor::CursorFile::open(dir.path()).unwrap().1,
        cursor::Loaded::Acked(3),
        "not yet due"
    );
    let due = q.sync_due_in(std::time::Duration::from_millis(100));
    assert!(due.is_some_and(|d| d <= CURSOR_EVERY), "{due:?}");
    q.sync_all().unwrap();
    assert_eq!(
        cursor::CursorFile::open(dir.path()).unwrap().1,
        cursor::Loaded::Acked(6)
    );
    assert_eq!(q.sync_due_in(std::time::Duration::from_millis(100)), None);
}

/// A power cut in the moment after a segment roll: the new segment's directory entry survived
/// but not its header (the file is empty). Found on a filesystem that drops un-synced writes:
/// the empty segment was set aside, numbering restarted at the ack cursor + 1, the previous
/// segment was reopened "as new" and deleted as acknowledged: the whole backlog gone.
#[test]
fn an_empty_segment_left_by_a_cut_after_a_roll_costs_nothing() {
    for acked in [0, 7] {
        let dir = tempfile::tempdir().unwrap();
        let next = {
            let (mut q, _) = open(dir.path(), opts(1 << 20, 1024));
            append_n(&mut q, 0..60);
            q.ack(acked);
            q.sync_all().unwrap();
            q.stats().next_seq
        };
        let segments = segment::list(dir.path()).unwrap();
        assert!(segments.len() >= 3, "{segments:?}");
        fs::write(dir.path().join(segment::file_name(next)), b"").unwrap();
        // What the disk holds decides numbering here, as for a queue without reservations.
        forget_reservations(dir.path());

        let (mut q, rec) = open(dir.path(), opts(1 << 20, 1024));
        assert_eq!(rec.set_aside.len(), 1, "the empty segment is set aside");
        assert_eq!(rec.depth, 60 - acked);
        let unacked = |q: &mut Queue| {
            let mut got = read_all_intact(q);
            got.retain(|s| *s > acked);
            got
        };
        assert_eq!(unacked(&mut q), (acked + 1..=60).collect::<Vec<_>>());
        let seq = q.append(&[msg(60)]).unwrap()[0].unwrap();
        assert_eq!(seq, 61, "numbering goes on where the durable log ends");
        q.sync(std::time::Duration::ZERO).unwrap();
        assert_eq!(seqs(&q.read(61, 10, 1 << 20).unwrap()), vec![61]);
        drop(q);
        // And again after a restart: nothing was deleted as "acknowledged".
        forget_reservations(dir.path());
        let (mut q, _) = open(dir.path(), opts(1 << 20, 1024));
        assert_eq!(unacked(&mut q), (acked + 1..=61).collect::<Vec<_>>());
    }
}

#[test]
fn numbering_never_goes_back_below_a_segment_name() {
    // Only an empty segment named 500 is left (everything before it was acknowledged and
    // deleted, the cursor lost): numbers below 500 were given out, so new records start at 500.
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(segment::file_name(500)), b"").unwrap();
    let (mut q, rec) = open(dir.path(), opts(1 << 20, 1024));
    assert_eq!(rec.set_aside.len(), 1);
    assert_eq!(q.append(&[msg(1)]).unwrap(), vec![Some(500)]);
    q.sync_all().unwrap();
    drop(q);
    // A set-aside segment's name counts too, after a further restart.
    forget_reservations(dir.path());
    let (mut q, _) = open(dir.path(), opts(1 << 20, 1024));
    assert_eq!(q.append(&[msg(2)]).unwrap(), vec![Some(501)]);
}

#[test]
fn an_existing_segment_is_never_started_over() {
    let dir = tempfile::tempdir().unwrap();
    fs::write(dir.path().join(segment::file_name(3)), b"keep me").unwrap();
    let e = create_segment(dir.path(), 3).map(|_| ()).unwrap_err();
    assert_eq!(e.kind(), io::ErrorKind::AlreadyExists);
    assert!(e.to_string().contains("00000000000000000003.seg"), "{e}");
    assert_eq!(
        fs::read(dir.path().join(segment::file_name(3))).unwrap(),
        b"keep me"
    );
}

#[test]
fn the_queue_directory_and_its_parents_are_created() {
    let dir = tempfile::tempdir().unwrap();
    let deep = dir.path().join("a/b/queue");
    let (mut q, _) = open(&deep, opts(1 << 20, 1024));
    append_n(&mut q, 0..3);
    assert!(deep.join("acked").is_file());
}

/// A directory (or anything not a regular file) named like a segment made every start fail
/// (`Is a directory`, no path): under systemd a restart loop. It is ignored and reported, and
/// its name is never given to a new segment.
#[test]
fn an_entry_named_like_a_segment_that_is_not_a_file_is_ignored_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut q, _) = open(dir.path(), opts(1 << 20, 1024));
        append_n(&mut q, 0..5);
        q.sync_all().unwrap();
    }
    let stray = dir.path().join(segment::file_name(6));
    fs::create_dir(&stray).unwrap();
    fs::create_dir(dir.path().join(segment::file_name(1).replace(".seg", ".x"))).unwrap();
    forget_reservations(dir.path());
    let (mut q, rec) = open(dir.path(), opts(1 << 20, 1024));
    assert_eq!(rec.strays, vec![stray.clone()]);
    assert_eq!(read_all_intact(&mut q), (1..=5).collect::<Vec<_>>());
    let seq = q.append(&[msg(5)]).unwrap()[0].unwrap();
    assert_eq!(seq, 7, "the stray's number is skipped, never reused");
    q.sync(std::time::Duration::ZERO).unwrap();
    assert_eq!(seqs(&q.read(6, 10, 1 << 20).unwrap()), vec![7]);
    assert!(stray.is_dir(), "not ours: left where it is");
}

#[test]
fn a_cursor_that_is_not_a_file_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir(dir.path().join("acked")).unwrap();
    let e = Queue::open(dir.path(), opts(1 << 20, 1024))
        .map(|_| ())
        .unwrap_err();
    let text = e.to_string();
    assert!(text.contains("acked is not a regular file"), "{text}");
    assert!(
        text.contains("move it out of the queue directory"),
        "{text}"
    );
}

/// Both slots of the reservation file damaged (a failing card): how far numbers went is
/// unknown, so numbering jumps further than any gateway can count, and says so.
#[test]
fn a_damaged_reservation_jumps_beyond_any_number_handed_out() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut q, _) = open(dir.path(), opts(1 << 20, 1 << 16));
        append_n(&mut q, 0..5);
        q.sync_all().unwrap();
    }
    fs::write(dir.path().join(cursor::RESERVED), vec![0xEE; 8192]).unwrap();
    let (mut q, rec) = open(dir.path(), opts(1 << 20, 1 << 16));
    assert!(rec.seq_corrupt);
    assert_eq!(read_all_intact(&mut q), (1..=5).collect::<Vec<_>>());
    let seq = q.append(&[msg(5)]).unwrap()[0].unwrap();
    assert_eq!(seq, 6 + (1 << 40));
    // The new ceiling is durable: the next restart continues above it.
    drop(q);
    let (mut q, rec) = open(dir.path(), opts(1 << 20, 1 << 16));
    assert!(!rec.seq_corrupt);
    assert!(q.append(&[msg(6)]).unwrap()[0].unwrap() > seq);
}

/// After a restart the uplink waits for records past the last one replayed: in the gap
/// between the old numbers and the new block. Its read, tried again after every append, must
/// not read the old segments through each time (it once held the queue thread for seconds,
/// and the serial ports behind it).
#[test]
fn a_reader_waiting_in_the_gap_after_a_restart_does_not_reread_old_segments() {
    let dir = tempfile::tempdir().unwrap();
    {
        let (mut q, _) = open(dir.path(), opts(1 << 24, 1 << 16));
        append_n(&mut q, 0..5000);
        q.sync_all().unwrap();
    }
    // A start that got nothing before it was killed.
    drop(open(dir.path(), opts(1 << 24, 1 << 16)));
    let (mut q, _) = open(dir.path(), opts(1 << 24, 1 << 16));
    let mut from = 1;
    loop {
        let got = q.read(from, 1000, 1 << 30).unwrap();
        let Some(last) = got.last() else { break };
        from = last.seq + 1;
    }
    assert_eq!(from, 5001, "the replay reads every record");
    q.ack(5000);
    let opened = q.opened;
    for _ in 0..10 {
        assert!(q.read(from, 1000, 1 << 30).unwrap().is_empty());
    }
    assert_eq!(q.opened, opened, "the old segments are not read again");
    let seq = q.append(&[msg(1)]).unwrap()[0].unwrap();
    assert_eq!(seqs(&q.read(from, 1000, 1 << 30).unwrap()), vec![seq]);
}

/// A reader that caught up with the segment being written holds what it read ahead of the
/// data: space allocated ahead, zeros. Once that segment is finished and the next one started,
/// the records written into those zeros in between must still be read, not taken for padding
/// (they were skipped, silently, and the segment marked as read to its end).
#[test]
fn a_reader_caught_up_with_a_segment_that_is_then_finished_reads_the_rest_of_it() {
    let dir = tempfile::tempdir().unwrap();
    let (mut q, _) = open(dir.path(), opts(1 << 24, 1 << 16));
    append_n(&mut q, 0..10);
    assert_eq!(
        seqs(&q.read(1, 100, 1 << 30).unwrap()),
        (1..=10).collect::<Vec<_>>()
    );
    // More than a segment holds, in one commit: the first segment is filled and finished.
    append_n(&mut q, 10..3000);
    assert!(q.stats().segments > 1);
    let mut from = 11;
    let mut got = Vec::new();
    loop {
        let recs = q.read(from, 100, 1 << 30).unwrap();
        let Some(last) = recs.last() else { break };
        from = last.seq + 1;
        got.extend(seqs(&recs));
    }
    let missing: Vec<u64> = (11..=3000).filter(|s| !got.contains(s)).collect();
    assert_eq!(
        (missing.len(), missing.first(), missing.last()),
        (0, None, None),
        "records never read (how many, first, last)"
    );
    assert!(
        got.windows(2).all(|w| w[1] == w[0] + 1),
        "in order, once each"
    );
    assert_eq!(q.drops(), Drops::default());
}

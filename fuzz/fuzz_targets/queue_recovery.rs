//! Queue recovery from arbitrary segment bytes: opening never fails on content (only on I/O),
//! reading never returns a record that was not written whole and checksummed, and the queue
//! keeps accepting and returning messages.
#![no_main]

use bytes::Bytes;
use libfuzzer_sys::fuzz_target;
use serial2mqtt::message::Message;
use serial2mqtt::queue::{segment, Options, Queue};

fuzz_target!(|data: &[u8]| {
    let Some((&split, rest)) = data.split_first() else {
        return;
    };
    let dir = tempfile::tempdir().expect("tempdir");
    let opts = Options {
        max_bytes: 1 << 20,
        segment_bytes: 64 * 1024,
        sync_every_append: false,
    };
    // Up to two segment files: the fuzzer's bytes after the magic (or raw, magic and all).
    let cut = (usize::from(split) * rest.len() / 256).min(rest.len());
    for (i, part) in [&rest[..cut], &rest[cut..]].into_iter().enumerate() {
        let mut bytes = Vec::new();
        if split % 2 == 0 {
            bytes.extend_from_slice(segment::MAGIC);
        }
        bytes.extend_from_slice(part);
        std::fs::write(dir.path().join(segment::file_name(1 + i as u64 * 50)), bytes).expect("write");
    }
    let (mut q, _) = Queue::open(dir.path(), opts).expect("open must cope with any content");
    let mut last = 0;
    loop {
        let recs = q.read(last + 1, 64, 1 << 20).expect("read");
        if recs.is_empty() {
            break;
        }
        for r in &recs {
            assert!(r.seq > last, "order");
            assert!(r.message.qos <= 2);
            last = r.seq;
        }
    }
    let m = Message {
        topic: "t/x".into(),
        payload: Bytes::from_static(b"after"),
        qos: 1,
        retain: false,
    };
    let seq = q.append(std::slice::from_ref(&m)).expect("append")[0].expect("stored");
    assert!(seq > last);
    q.sync(std::time::Duration::ZERO).expect("sync"); // written (it was readable at once too)
    let back = q.read(seq, 1, 1 << 20).expect("read");
    assert_eq!(back[0].message, m);
});

//! The framings, specified by examples: every framing's frames, split reads, garbage,
//! resync, gap timing, and the YAML forms.

use bytes::BufMut;
use memchr::memmem;

use super::spec::FRAMING_NAMES;
use super::*;

const MAX: usize = 8;

fn frame(payload: &[u8]) -> Decoded {
    Decoded::Frame(Bytes::copy_from_slice(payload))
}

const TOO_LONG: Decoded = Decoded::Dropped(DropReason::TooLong);
const INCOMPLETE: Decoded = Decoded::Dropped(DropReason::Incomplete);
const CORRUPT: Decoded = Decoded::Dropped(DropReason::Corrupt);

fn fixed(n: usize) -> Framing {
    Framing::Fixed(Fixed::size(n))
}

fn delimiter(d: &str) -> Framing {
    Framing::Delimiter(d.as_bytes().to_vec())
}

fn length_prefix(width: u8, endian: Endian) -> Framing {
    Framing::LengthPrefix(LengthPrefix { width, endian })
}

/// One of every framing, in the shapes the tests exercise.
fn all_framings() -> Vec<Framing> {
    vec![
        Framing::Lines,
        delimiter("\r\n"),
        delimiter("\x02"),
        delimiter("<END>"),
        Framing::Cobs,
        Framing::Slip,
        length_prefix(1, Endian::Big),
        length_prefix(2, Endian::Little),
        length_prefix(4, Endian::Big),
        fixed(5),
    ]
}

/// Every framing, with the ones whose frames the caller builds (no encoder of their own).
fn framings_for_garbage() -> Vec<Framing> {
    let mut all = all_framings();
    all.extend([ubx_framing(), dsmr_framing(), Framing::ModbusRtu(Some(1))]);
    all
}

/// Feeds `input` in chunks of `chunk` bytes to a fresh decoder and buffer, then signals EOF.
fn feed_chunked(framing: &Framing, max: usize, input: &[u8], chunk: usize) -> Vec<Decoded> {
    let mut dec = FrameDecoder::new(framing, max);
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        while let Some(item) = dec.decode(&mut buf).unwrap() {
            items.push(item);
        }
    }
    while let Some(item) = dec.decode_eof(&mut buf).unwrap() {
        items.push(item);
    }
    assert!(buf.is_empty(), "EOF leaves nothing buffered");
    items
}

/// Feeds `input` in one read.
fn feed(framing: &Framing, max: usize, input: &[u8]) -> Vec<Decoded> {
    feed_chunked(framing, max, input, input.len())
}

/// Adjacent resync reports merged: how skipped bytes are reported depends on how they
/// arrive (each read reports what it skipped), their total does not.
fn merged(items: Vec<Decoded>) -> Vec<Decoded> {
    let mut out: Vec<Decoded> = Vec::new();
    for item in items {
        match (out.last_mut(), &item) {
            (Some(Decoded::Resync(a)), Decoded::Resync(b)) => *a += b,
            _ => out.push(item),
        }
    }
    out
}

/// Asserts every chunk size 1..=len gives the same items as one read; returns those items.
fn split_invariant(framing: &Framing, max: usize, input: &[u8]) -> Vec<Decoded> {
    let whole = merged(feed(framing, max, input));
    for chunk in 1..=input.len() {
        assert_eq!(
            merged(feed_chunked(framing, max, input, chunk)),
            whole,
            "{framing:?}, chunk size {chunk}"
        );
    }
    whole
}

fn encode_all(framing: &Framing, payloads: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    for p in payloads {
        encode_frame(framing, p, &mut out);
    }
    out
}

/// Deterministic xorshift64 PRNG, so garbage tests are reproducible without a rand crate.
struct XorShift(u64);

impl XorShift {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// Uniform bytes, or (edgy) bytes drawn from the framings' special values.
    fn garbage(&mut self, len: usize, edgy: bool) -> Vec<u8> {
        const SPECIAL: &[u8] = &[
            0x00, 0x01, 0x02, 0x03, 0x04, 0xFE, 0xFF, 0xC0, 0xDB, 0xDC, 0xDD, b'\r', b'\n', b'<',
            b'E', b'N', b'D', b'>', b'a',
        ];
        (0..len)
            .map(|_| {
                if edgy {
                    SPECIAL[self.below(SPECIAL.len())]
                } else {
                    (self.next() >> 24) as u8
                }
            })
            .collect()
    }
}

// ---- configuration ----

#[derive(Debug, serde::Deserialize)]
struct Device {
    framing: Framing,
}

/// `serde_yaml` is serde_norway, under the name the project's Cargo.toml gives it.
fn parse(yaml: &str) -> Result<Framing, String> {
    serde_yaml::from_str::<Device>(yaml)
        .map(|d| d.framing)
        .map_err(|e| e.to_string())
}

#[test]
fn yaml_accepts_every_documented_form() {
    assert_eq!(parse("framing: lines"), Ok(Framing::Lines));
    assert_eq!(parse("framing: cobs"), Ok(Framing::Cobs));
    assert_eq!(parse("framing: slip"), Ok(Framing::Slip));
    assert_eq!(
        parse(r#"framing: {delimiter: "\r\n"}"#),
        Ok(delimiter("\r\n"))
    );
    assert_eq!(
        parse(r#"framing: {delimiter: "\x02"}"#),
        Ok(delimiter("\u{2}"))
    );
    assert_eq!(
        parse("framing: {length_prefix: {width: 2, endian: little}}"),
        Ok(length_prefix(2, Endian::Little))
    );
    assert_eq!(
        parse("framing: {length_prefix: {width: 4}}"),
        Ok(length_prefix(4, Endian::Big)),
        "endian defaults to big"
    );
    assert_eq!(parse("framing: {fixed: 12}"), Ok(fixed(12)));
    assert_eq!(
        parse("framing:\n  length_prefix:\n    width: 1\n    endian: big\n"),
        Ok(length_prefix(1, Endian::Big)),
        "block style works too"
    );
}

#[test]
fn yaml_delimiter_hex_is_raw_bytes() {
    assert_eq!(
        parse(r#"framing: {delimiter_hex: "AB"}"#),
        Ok(Framing::Delimiter(vec![0xAB]))
    );
    // The YAML escape is a character: two bytes in UTF-8.
    assert_eq!(
        parse(r#"framing: {delimiter: "\xAB"}"#),
        Ok(Framing::Delimiter(vec![0xC2, 0xAB]))
    );
    assert!(parse(r#"framing: {delimiter_hex: "A"}"#)
        .unwrap_err()
        .contains("not hex bytes"));
}

#[test]
fn yaml_fixed_with_start_and_end_bytes_and_gap_forms() {
    assert_eq!(
        parse(r#"framing: {fixed: 10, start_hex: "AA C0", end_hex: "0xAB"}"#),
        Ok(Framing::Fixed(Fixed {
            size: 10,
            start: vec![0xAA, 0xC0],
            end: vec![0xAB]
        }))
    );
    assert_eq!(
        parse("framing: {gap: 3.5}"),
        Ok(Framing::Gap(Gap::CharTenths(35)))
    );
    assert_eq!(
        parse("framing: {gap: 20ms}"),
        Ok(Framing::Gap(Gap::Time(std::time::Duration::from_millis(
            20
        ))))
    );
    let e = Framing::Fixed(Fixed {
        size: 2,
        start: vec![1, 2],
        end: vec![3],
    })
    .validate()
    .unwrap_err();
    assert!(e.contains("do not fit in a 2-byte frame"), "{e}");
    assert!(Framing::Gap(Gap::CharTenths(0)).validate().is_err());
    // 3.5 characters of 11 bits at 9600 baud.
    let d = Gap::CharTenths(35).duration(9600, 11);
    assert_eq!(d.as_micros(), 4010);
}

/// An SDS011-like frame: AA C0, six data bytes, a checksum byte, AB.
fn sds(pm25: u16) -> Vec<u8> {
    let mut f = vec![0xAA, 0xC0];
    f.extend_from_slice(&pm25.to_le_bytes());
    f.extend_from_slice(&[0x10, 0x00, 0x01, 0x02, 0x00, 0xAB]);
    f
}

fn sds_framing() -> Framing {
    Framing::Fixed(Fixed {
        size: 10,
        start: vec![0xAA, 0xC0],
        end: vec![0xAB],
    })
}

#[test]
fn fixed_frames_with_start_and_end_bytes_find_the_next_frame_after_a_lost_byte() {
    let mut input = sds(111);
    input.extend(sds(222));
    input.remove(13); // one byte of the second frame lost on the line
    input.extend(sds(333));
    input.extend(sds(444));
    let items = split_invariant(&sds_framing(), 64, &input);
    let frames: Vec<&Decoded> = items
        .iter()
        .filter(|d| matches!(d, Decoded::Frame(_)))
        .collect();
    assert_eq!(
        frames,
        vec![&frame(&sds(111)), &frame(&sds(333)), &frame(&sds(444))],
        "{items:?}"
    );
    let skipped: usize = items
        .iter()
        .map(|d| match d {
            Decoded::Resync(n) => *n,
            _ => 0,
        })
        .sum();
    assert_eq!(skipped, 9, "the damaged frame's bytes are counted");
}

#[test]
fn a_short_reply_or_an_extra_byte_costs_one_frame_not_every_later_one() {
    // A 5-byte exception reply between two full frames, then an extra byte.
    let mut input = sds(1);
    input.extend_from_slice(&[0xAA, 0xC0, 0x83, 0x02, 0xAB]);
    input.extend(sds(2));
    input.push(0x55);
    input.extend(sds(3));
    let items = split_invariant(&sds_framing(), 64, &input);
    let frames: Vec<Decoded> = items
        .iter()
        .filter(|d| matches!(d, Decoded::Frame(_)))
        .cloned()
        .collect();
    assert_eq!(frames, vec![frame(&sds(1)), frame(&sds(2)), frame(&sds(3))]);
    // Without start/end bytes, the same stream is misaligned from the short reply on.
    let plain = feed(&fixed(10), 64, &input);
    assert_eq!(plain[0], frame(&sds(1)));
    assert_ne!(plain[1], frame(&sds(2)));
}

#[test]
fn end_bytes_alone_slide_to_the_next_frame() {
    let f = Framing::Fixed(Fixed {
        size: 4,
        start: vec![],
        end: vec![0xAB],
    });
    let items = split_invariant(&f, 64, b"\x01\x02\xAB\x09\x01\x02\x03\xAB\x05\x06\x07\xAB");
    assert_eq!(
        items,
        vec![
            Decoded::Resync(4),
            frame(b"\x01\x02\x03\xAB"),
            frame(b"\x05\x06\x07\xAB"),
        ]
    );
}

#[test]
fn gap_frames_end_at_silence_and_an_overlong_one_is_counted_once() {
    let g = Framing::Gap(Gap::CharTenths(35));
    let mut dec = FrameDecoder::new(&g, 4);
    let mut buf = BytesMut::new();
    let gap = std::time::Duration::from_millis(5);
    assert_eq!(dec.gap_deadline(gap), None);
    buf.extend_from_slice(b"\x01\x03");
    assert_eq!(dec.decode(&mut buf).unwrap(), Some(Decoded::GapStarted));
    assert!(dec.gap_deadline(gap).is_some());
    buf.extend_from_slice(b"\x02");
    assert_eq!(dec.decode(&mut buf).unwrap(), None);
    assert!(dec.silence(), "a whole frame");
    assert_eq!(&buf[..], b"\x01\x03\x02");
    buf.clear();
    assert_eq!(dec.gap_deadline(gap), None);
    // Overlong: counted once, then discarded until the silence ends it.
    buf.extend_from_slice(b"\x01\x02\x03\x04\x05");
    assert_eq!(dec.decode(&mut buf).unwrap(), Some(TOO_LONG));
    buf.extend_from_slice(b"\x06\x07");
    assert_eq!(dec.decode(&mut buf).unwrap(), None);
    assert!(dec.gap_deadline(gap).is_some());
    assert!(
        !dec.silence(),
        "the end of an overlong frame is not a frame"
    );
    buf.clear();
    buf.extend_from_slice(b"\x09");
    assert_eq!(dec.decode(&mut buf).unwrap(), Some(Decoded::GapStarted));
    assert!(dec.silence());
}

#[test]
fn yaml_rejects_other_forms_with_a_hint() {
    let cases: &[(&str, &str)] = &[
        ("framing: lnes", "unknown variant `lnes`"),
        ("framing: fixed", "{fixed: 12}"),
        ("framing: delimiter", "{delimiter:"),
        ("framing: length_prefix", "{length_prefix: {width: 2}}"),
        ("framing: {}", "empty"),
        ("framing: {lines: }", "write just `lines`"),
        ("framing: {fixed: 12, cobs: }", "write just `cobs`"),
        ("framing: {fixed: 12, delimiter: x}", "names one framing"),
        ("framing: {fixed: 12, start_hex: ZZ}", "not hex bytes"),
        ("framing: {lines: , start_hex: AA}", "write just `lines`"),
        ("framing: {delimiter: x, end_hex: AA}", "go with `fixed`"),
        (
            "framing: {gap: soon}",
            "neither character times nor a duration",
        ),
        ("framing: {gap: -1}", "between 0 and 1000"),
        ("framing: {fixd: 12}", "unknown variant `fixd`"),
        ("framing: {fixed: -1}", "expected usize"),
        (
            "framing: {length_prefix: {width: 2, endain: little}}",
            "unknown field `endain`",
        ),
        (
            "framing: {length_prefix: {width: 2, endian: middle}}",
            "unknown variant `middle`",
        ),
        ("framing: 12", "expected a framing"),
        ("framing: [lines]", "expected a framing"),
        ("framing: !fixed 12", "expected a framing"),
    ];
    for (yaml, hint) in cases {
        let err = parse(yaml).expect_err(yaml);
        assert!(err.contains(hint), "{yaml}: {err:?} lacks {hint:?}");
    }
}

#[test]
fn validate_catches_what_serde_cannot() {
    for f in all_framings() {
        assert_eq!(f.validate(), Ok(()), "{f:?}");
    }
    let empty = delimiter("").validate().unwrap_err();
    assert!(empty.contains("{delimiter: \"\\r\\n\"}"), "{empty}");
    let width = length_prefix(3, Endian::Big).validate().unwrap_err();
    assert!(width.contains("1, 2 or 4"), "{width}");
    assert!(length_prefix(0, Endian::Big).validate().is_err());
    assert!(length_prefix(8, Endian::Little).validate().is_err());
    let fixed = fixed(0).validate().unwrap_err();
    assert!(fixed.contains("{fixed: 12}"), "{fixed}");
}

#[test]
fn names_and_reasons_are_stable_labels() {
    let names: Vec<_> = [
        Framing::Lines,
        delimiter(","),
        Framing::Cobs,
        Framing::Slip,
        length_prefix(1, Endian::Big),
        fixed(1),
        Framing::Gap(Gap::CharTenths(35)),
        dsmr_framing(),
        ubx_framing(),
        Framing::ModbusRtu(None),
    ]
    .iter()
    .map(Framing::name)
    .collect();
    let keys: Vec<&str> = FRAMING_NAMES
        .iter()
        .copied()
        .filter(|n| *n != "delimiter_hex") // another spelling of `delimiter`
        .collect();
    assert_eq!(names, keys);
    assert_eq!(DropReason::TooLong.as_str(), "too_long");
    assert_eq!(DropReason::Corrupt.as_str(), "corrupt");
    assert_eq!(DropReason::Incomplete.as_str(), "incomplete");
}

// ---- lines ----

#[test]
fn lines_split_strip_cr_and_skip_empty() {
    let items = split_invariant(
        &Framing::Lines,
        MAX,
        b"\n\r\nabc\r\n\r\n\n\r\n\rdef\nx\r\r\n12345678\r\nlast",
    );
    assert_eq!(
        items,
        vec![
            frame(b"abc"),
            frame(b"\rdef"),
            frame(b"x\r"),
            frame(b"12345678"),
            INCOMPLETE,
        ],
        "trailing partial line dropped at EOF, counted"
    );
}

#[test]
fn lines_overlong_is_one_drop_then_recovers() {
    let items = split_invariant(
        &Framing::Lines,
        MAX,
        b"123456789\nok\n123456789\r\nabcdefghijklmnopqrstuvwxyz\r\nfine\r\n",
    );
    assert_eq!(
        items,
        vec![TOO_LONG, frame(b"ok"), TOO_LONG, TOO_LONG, frame(b"fine")]
    );
}

// ---- delimiter ----

#[test]
fn delimiter_splits_and_skips_empty() {
    let f = delimiter("\r\n");
    let items = split_invariant(&f, MAX, b"\r\n\r\na\rb\r\n\r\n\nc\r\nrest\r");
    assert_eq!(items, vec![frame(b"a\rb"), frame(b"\nc"), INCOMPLETE]);
    let items = split_invariant(&delimiter("\x02"), MAX, b"\x02\x02one\x02two\x02");
    assert_eq!(items, vec![frame(b"one"), frame(b"two")]);
    let items = split_invariant(&delimiter("<END>"), MAX, b"a<EN<END><END>b<E<END>");
    assert_eq!(items, vec![frame(b"a<EN"), frame(b"b<E")]);
}

#[test]
fn delimiter_split_between_two_reads() {
    let mut dec = FrameDecoder::new(&delimiter("\r\n"), MAX);
    let mut buf = BytesMut::from(&b"abc\r"[..]);
    assert_eq!(dec.decode(&mut buf).unwrap(), None);
    buf.extend_from_slice(b"\n");
    assert_eq!(dec.decode(&mut buf).unwrap(), Some(frame(b"abc")));
    assert!(buf.is_empty());
}

#[test]
fn delimiter_overlong_discards_with_bounded_memory() {
    let f = delimiter("\r\n");
    let mut dec = FrameDecoder::new(&f, MAX);
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    // 10 000 bytes of one frame, ending with the delimiter torn between two reads.
    for _ in 0..1000 {
        buf.extend_from_slice(b"0123456789");
        while let Some(item) = dec.decode(&mut buf).unwrap() {
            items.push(item);
        }
        assert!(buf.len() < MAX + 2, "buffered {}", buf.len());
    }
    for piece in [&b"xx\r"[..], b"\nok\r", b"\n"] {
        buf.extend_from_slice(piece);
        while let Some(item) = dec.decode(&mut buf).unwrap() {
            items.push(item);
        }
        assert!(buf.len() < MAX + 2);
    }
    assert_eq!(items, vec![TOO_LONG, frame(b"ok")]);
    // Exactly max_frame fits; one more does not.
    let items = split_invariant(&f, MAX, b"12345678\r\n123456789\r\nok\r\n");
    assert_eq!(items, vec![frame(b"12345678"), TOO_LONG, frame(b"ok")]);
}

#[test]
fn trickle_resumes_the_scan_instead_of_rescanning() {
    let mut dec = FrameDecoder::new(&delimiter("<END>"), 1 << 20);
    let mut buf = BytesMut::new();
    for (i, &b) in b"some payload bytes<EN".iter().enumerate() {
        buf.put_u8(b);
        assert_eq!(dec.decode(&mut buf).unwrap(), None);
        let Kind::Delimited(d) = &dec.kind else {
            unreachable!()
        };
        assert_eq!(d.scanned, (i + 1).saturating_sub(4));
    }
    buf.extend_from_slice(b"D>");
    assert_eq!(
        dec.decode(&mut buf).unwrap(),
        Some(frame(b"some payload bytes"))
    );
}

#[test]
fn frames_are_zero_copy_views_of_the_read_buffer() {
    let cases: Vec<(Framing, Vec<u8>, usize)> = vec![
        (Framing::Lines, b"abc\r\ndef\n".to_vec(), 0),
        (delimiter("\r\n"), b"abc\r\ndef\r\n".to_vec(), 0),
        (
            Framing::Cobs,
            encode_all(&Framing::Cobs, &[b"a\0b", b"c"]),
            0,
        ),
        (
            length_prefix(2, Endian::Big),
            encode_all(&length_prefix(2, Endian::Big), &[b"abc", b"d"]),
            2,
        ),
        (fixed(3), b"abcdef".to_vec(), 0),
    ];
    for (f, bytes, offset) in cases {
        let mut dec = FrameDecoder::new(&f, MAX);
        let mut buf = BytesMut::from(&bytes[..]);
        let base = buf.as_ptr() as usize;
        let Some(Decoded::Frame(first)) = dec.decode(&mut buf).unwrap() else {
            panic!("{f:?}: no frame");
        };
        assert_eq!(first.as_ptr() as usize, base + offset, "{f:?}");
    }
}

// ---- COBS ----

#[test]
fn cobs_decodes_skips_empty_and_flags_corrupt() {
    let mut input = vec![0, 0];
    input.extend_from_slice(&[0x02, 0x11, 0x02, 0x22, 0x00]); // 11 00 22
    input.extend_from_slice(&[0x01, 0x00]); // empty payload
    input.extend_from_slice(&[0x05, 0x01, 0x02, 0x00]); // code runs past the end
    input.extend_from_slice(&[0x03, 0x41, 0x42, 0x00]); // AB
    input.extend_from_slice(&[0x04, 0x41]); // partial at EOF
    let items = split_invariant(&Framing::Cobs, MAX, &input);
    assert_eq!(
        items,
        vec![frame(b"\x11\x00\x22"), CORRUPT, frame(b"AB"), INCOMPLETE]
    );
}

#[test]
fn cobs_overlong_by_encoded_or_decoded_size() {
    let mut input = encode_all(&Framing::Cobs, &[b"123456789", b"ok"]);
    // Nine zeros encode to ten 0x01 bytes (within the raw limit) but decode past max_frame.
    encode_frame(&Framing::Cobs, &[0; 9], &mut input);
    input.extend_from_slice(&[0x55; 300]);
    input.push(0);
    encode_frame(&Framing::Cobs, &[0; 8], &mut input);
    let items = split_invariant(&Framing::Cobs, MAX, &input);
    assert_eq!(
        items,
        vec![TOO_LONG, frame(b"ok"), TOO_LONG, TOO_LONG, frame(&[0; 8])]
    );
}

#[test]
fn cobs_in_place_decode_matches_the_crates_decode() {
    // Valid encodings, some with one byte changed or cut short: both must agree on all.
    let mut rng = XorShift(0x5eed);
    let mut decoded = 0;
    for _ in 0..5000 {
        let (len, edgy) = (1 + rng.below(600), rng.below(2) == 0);
        let payload = rng.garbage(len, edgy);
        let mut src = cobs::encode_vec(&payload);
        match rng.below(3) {
            0 => {
                let at = rng.below(src.len());
                src[at] = 1 + rng.below(255) as u8;
            }
            1 => src.truncate(1 + rng.below(src.len())),
            _ => {}
        }
        let mut dest = vec![0; src.len()];
        let whole = cobs::decode(&src, &mut dest).map(|n| dest[..n].to_vec());
        let mut in_place = src.clone();
        let inplace = cobs::decode_in_place(&mut in_place).map(|n| in_place[..n].to_vec());
        decoded += usize::from(whole.is_ok());
        assert_eq!(whole.ok(), inplace.ok(), "{src:?}");
    }
    assert!(decoded > 2000, "only {decoded} valid frames exercised");
}

// ---- SLIP ----

#[test]
fn slip_unescapes_and_skips_flush_ends() {
    let input = [
        SLIP_END,
        SLIP_END,
        b'a',
        SLIP_ESC,
        SLIP_ESC_END,
        b'b',
        SLIP_ESC,
        SLIP_ESC_ESC,
        SLIP_END,
        SLIP_END,
        SLIP_END,
        b'c',
        SLIP_END,
        b'd', // partial at EOF
    ];
    let items = split_invariant(&Framing::Slip, MAX, &input);
    assert_eq!(
        items,
        vec![
            frame(&[b'a', SLIP_END, b'b', SLIP_ESC]),
            frame(b"c"),
            INCOMPLETE
        ]
    );
}

#[test]
fn slip_invalid_escape_is_corrupt() {
    let input = [
        b'a', SLIP_ESC, b'x', b'b', SLIP_END, // bad escape: skip to END
        b'c', SLIP_END, // fine
        b'd', SLIP_ESC, SLIP_END, // ESC END: corrupt, and END ends it
        b'e', SLIP_END, // fine
        SLIP_ESC, SLIP_ESC, SLIP_END, b'f', SLIP_END,
    ];
    let items = split_invariant(&Framing::Slip, MAX, &input);
    assert_eq!(
        items,
        vec![
            CORRUPT,
            frame(b"c"),
            CORRUPT,
            frame(b"e"),
            CORRUPT,
            frame(b"f")
        ]
    );
}

#[test]
fn slip_overlong_counts_unescaped_bytes() {
    let mut input = encode_all(&Framing::Slip, &[&[SLIP_END; 8], &[SLIP_ESC; 9], b"ok"]);
    input.extend_from_slice(&[b'z'; 5000]);
    input.extend_from_slice(&encode_all(&Framing::Slip, &[b"12345678"]));
    let items = split_invariant(&Framing::Slip, MAX, &input);
    assert_eq!(
        items,
        vec![
            frame(&[SLIP_END; 8]),
            TOO_LONG,
            frame(b"ok"),
            TOO_LONG,
            frame(b"12345678")
        ]
    );
}

// ---- length prefix ----

#[test]
fn length_prefix_reads_every_width_and_endian() {
    let cases: &[(u8, Endian, &[u8])] = &[
        (1, Endian::Big, b"\x03abc\x00\x01d"),
        (1, Endian::Little, b"\x03abc\x00\x01d"),
        (2, Endian::Big, b"\x00\x03abc\x00\x00\x00\x01d"),
        (2, Endian::Little, b"\x03\x00abc\x00\x00\x01\x00d"),
        (
            4,
            Endian::Big,
            b"\x00\x00\x00\x03abc\x00\x00\x00\x00\x00\x00\x00\x01d",
        ),
        (
            4,
            Endian::Little,
            b"\x03\x00\x00\x00abc\x00\x00\x00\x00\x01\x00\x00\x00d",
        ),
    ];
    for (width, endian, input) in cases {
        let mut input = input.to_vec();
        input.push(*width); // a header fragment, dropped at EOF
        let f = length_prefix(*width, *endian);
        assert_eq!(
            split_invariant(&f, MAX, &input),
            vec![frame(b"abc"), frame(b"d"), INCOMPLETE],
            "{f:?}"
        );
    }
}

#[test]
fn length_prefix_overlong_is_skipped_without_buffering() {
    let f = length_prefix(2, Endian::Big);
    let mut dec = FrameDecoder::new(&f, MAX);
    let mut buf = BytesMut::from(&[0x03, 0xE8][..]); // 1000 bytes follow
    assert_eq!(dec.decode(&mut buf).unwrap(), Some(TOO_LONG));
    for _ in 0..99 {
        buf.extend_from_slice(&[0xAA; 10]);
        assert_eq!(dec.decode(&mut buf).unwrap(), None);
        assert!(buf.is_empty(), "skipped bytes are not buffered");
    }
    buf.extend_from_slice(&[0xAA; 10]);
    buf.extend_from_slice(b"\x00\x02ok");
    assert_eq!(dec.decode(&mut buf).unwrap(), Some(frame(b"ok")));

    let mut input = vec![0x00, 0x09];
    input.extend_from_slice(b"123456789\x00\x0812345678");
    assert_eq!(
        split_invariant(&f, MAX, &input),
        vec![TOO_LONG, frame(b"12345678")]
    );
}

// ---- fixed ----

#[test]
fn fixed_cuts_exact_sizes_regardless_of_max_frame() {
    let items = split_invariant(&fixed(3), 1, b"abcdefgh");
    assert_eq!(items, vec![frame(b"abc"), frame(b"def"), INCOMPLETE]);
}

// ---- EOF, invalid configurations, round trips ----

#[test]
fn eof_drops_partial_frame_and_resets() {
    let mut dec = FrameDecoder::new(&Framing::Lines, MAX);
    let mut buf = BytesMut::from(&b"abc\ndef"[..]);
    assert_eq!(dec.decode_eof(&mut buf).unwrap(), Some(frame(b"abc")));
    assert_eq!(dec.decode_eof(&mut buf).unwrap(), Some(INCOMPLETE));
    assert_eq!(dec.decode_eof(&mut buf).unwrap(), None);
    assert!(buf.is_empty());

    // State carried across reads (discard, escape, skip) does not leak past EOF.
    // An overlong frame being skipped was counted as too long already: not incomplete.
    type Case = (Framing, Vec<u8>, Vec<u8>, Option<Decoded>);
    let cases: Vec<Case> = vec![
        (Framing::Lines, vec![b'x'; 50], b"ok\n".to_vec(), None),
        (
            Framing::Slip,
            vec![b'a', SLIP_ESC],
            b"ok\xC0".to_vec(),
            Some(INCOMPLETE),
        ),
        (
            length_prefix(1, Endian::Big),
            vec![200, 1, 2],
            b"\x02ok".to_vec(),
            None,
        ),
    ];
    for (f, before, after, at_eof) in cases {
        let mut dec = FrameDecoder::new(&f, MAX);
        let mut buf = BytesMut::from(&before[..]);
        while dec.decode(&mut buf).unwrap().is_some() {}
        assert_eq!(dec.decode_eof(&mut buf).unwrap(), at_eof, "{f:?}");
        assert_eq!(dec.decode_eof(&mut buf).unwrap(), None);
        buf.extend_from_slice(&after);
        assert_eq!(dec.decode(&mut buf).unwrap(), Some(frame(b"ok")), "{f:?}");
    }
}

#[test]
fn invalid_framings_drop_input_without_panicking() {
    for f in [delimiter(""), fixed(0), length_prefix(3, Endian::Big)] {
        let mut dec = FrameDecoder::new(&f, MAX);
        let mut buf = BytesMut::from(&b"abc\n\0\xC0"[..]);
        assert_eq!(dec.decode(&mut buf).unwrap(), None);
        assert!(buf.is_empty());
        let mut out = Vec::new();
        encode_frame(&f, b"abc", &mut out);
        assert!(out.is_empty(), "{f:?}");
    }
}

#[test]
fn max_frame_zero_drops_everything_without_panicking() {
    for f in all_framings() {
        let input = encode_all(&f, &[b"abcde", b"12345"]);
        let items = split_invariant(&f, 0, &input);
        let expected = if f == fixed(5) {
            vec![frame(b"abcde"), frame(b"12345")]
        } else {
            vec![TOO_LONG, TOO_LONG]
        };
        assert_eq!(items, expected, "{f:?}");
    }
}

#[test]
fn encode_writes_the_documented_wire_format() {
    let enc = |f: &Framing, p: &[u8]| encode_all(f, &[p]);
    assert_eq!(enc(&Framing::Lines, b"ab"), b"ab\n");
    assert_eq!(enc(&delimiter("\r\n"), b"ab"), b"ab\r\n");
    assert_eq!(
        enc(&Framing::Cobs, b"\x11\x00\x22"),
        b"\x02\x11\x02\x22\x00"
    );
    assert_eq!(
        enc(&Framing::Slip, &[1, SLIP_END, SLIP_ESC]),
        [
            SLIP_END,
            1,
            SLIP_ESC,
            SLIP_ESC_END,
            SLIP_ESC,
            SLIP_ESC_ESC,
            SLIP_END
        ]
    );
    assert_eq!(enc(&length_prefix(2, Endian::Little), b"ab"), b"\x02\x00ab");
    assert_eq!(enc(&length_prefix(4, Endian::Big), b"ab"), b"\0\0\0\x02ab");
    assert_eq!(enc(&fixed(2), b"ab"), b"ab");
    // Too long for a one-byte header: nothing is written.
    assert!(enc(&length_prefix(1, Endian::Big), &[0; 256]).is_empty());
    assert_eq!(enc(&length_prefix(1, Endian::Big), &[7; 255]).len(), 256);
}

/// Feeds `input` cut at the given points (any chunking a serial driver may produce).
fn feed_cut(framing: &Framing, max: usize, input: &[u8], cuts: &[usize]) -> Vec<Decoded> {
    let mut dec = FrameDecoder::new(framing, max);
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (input.len() + 1)).collect();
    points.push(0);
    points.push(input.len());
    points.sort_unstable();
    for w in points.windows(2) {
        buf.extend_from_slice(&input[w[0]..w[1]]);
        while let Some(item) = dec.decode(&mut buf).unwrap() {
            items.push(item);
        }
    }
    while let Some(item) = dec.decode_eof(&mut buf).unwrap() {
        items.push(item);
    }
    items
}

proptest::proptest! {
    /// Every framer decodes exactly what its encoder wrote, whatever the payloads and
    /// however the byte stream is cut into reads.
    #[test]
    fn every_framer_decodes_what_its_encoder_wrote_under_any_chunking(
        which in 0usize..9,
        payloads in proptest::collection::vec(proptest::collection::vec(proptest::num::u8::ANY, 1..300), 1..8),
        cuts in proptest::collection::vec(proptest::num::usize::ANY, 0..12),
    ) {
        let f = [
            Framing::Lines,
            delimiter("\r\n"),
            delimiter("<END>"),
            Framing::Cobs,
            Framing::Slip,
            length_prefix(1, Endian::Big),
            length_prefix(2, Endian::Little),
            length_prefix(4, Endian::Big),
            fixed(7),
        ][which].clone();
        // Make each payload one the framing can carry.
        let payloads: Vec<Vec<u8>> = payloads
            .into_iter()
            .map(|mut p| {
                match &f {
                    Framing::Lines => {
                        p.retain(|&b| b != b'\n');
                        while p.last() == Some(&b'\r') {
                            p.pop();
                        }
                    }
                    Framing::Delimiter(d) => {
                        while let Some(i) = memmem::find(&p, d.as_slice()) {
                            p.remove(i);
                        }
                    }
                    Framing::LengthPrefix(lp) if lp.width == 1 => p.truncate(255),
                    Framing::Fixed(f) => p.resize(f.size, 0x5a),
                    _ => {}
                }
                p
            })
            .filter(|p| !p.is_empty())
            .collect();
        let refs: Vec<&[u8]> = payloads.iter().map(|p| &p[..]).collect();
        let input = encode_all(&f, &refs);
        let items = feed_cut(&f, 4096, &input, &cuts);
        let want: Vec<Decoded> = payloads.iter().map(|p| frame(p)).collect();
        proptest::prop_assert_eq!(items, want, "{:?}", f);
    }
}

#[test]
fn encode_then_decode_round_trips() {
    let all: Vec<u8> = (0..=255).collect();
    let mut payloads: Vec<Vec<u8>> = vec![
        b"a".to_vec(),
        b"hello, world".to_vec(),
        vec![0],
        vec![0, 0, 0],
        vec![SLIP_END],
        vec![SLIP_ESC],
        vec![
            SLIP_ESC,
            SLIP_ESC_END,
            SLIP_END,
            SLIP_ESC_ESC,
            0,
            b'\r',
            b'x',
        ],
        all.clone(),
        all.iter().rev().copied().collect(),
    ];
    for len in [253, 254, 255, 256, 507, 508, 509, 1000] {
        payloads.push(vec![0x11; len]);
        payloads.push((0..len).map(|i| (i % 7) as u8).collect());
    }
    for f in all_framings() {
        let fits = |p: &Vec<u8>| match &f {
            Framing::Lines => !p.contains(&b'\n') && p.last() != Some(&b'\r'),
            Framing::Delimiter(d) => memmem::find(p, d.as_slice()).is_none(),
            Framing::LengthPrefix(lp) if lp.width == 1 => p.len() <= 255,
            _ => true,
        };
        let chosen: Vec<&Vec<u8>> = payloads.iter().filter(|p| fits(p)).collect();
        assert!(chosen.len() >= 5, "{f:?}");
        for p in chosen {
            let f = match f {
                Framing::Fixed(_) => fixed(p.len()),
                ref other => other.clone(),
            };
            let input = encode_all(&f, &[p, p]);
            let items = feed(&f, 4096, &input);
            assert_eq!(items, vec![frame(p), frame(p)], "{f:?} {p:?}");
        }
    }
}

#[test]
fn empty_payloads_produce_no_items() {
    for f in all_framings() {
        if matches!(f, Framing::Fixed(_)) {
            continue;
        }
        let input = encode_all(&f, &[b"", b"x", b""]);
        assert_eq!(split_invariant(&f, MAX, &input), vec![frame(b"x")], "{f:?}");
    }
}

#[test]
fn mixed_streams_decode_identically_in_every_chunking() {
    for f in all_framings() {
        let mut input = Vec::new();
        if let Framing::Fixed(Fixed { size: n, .. }) = f {
            input.extend((0..n * 7).map(|i| i as u8));
        } else {
            for p in [&b"one"[..], b"", b"12345678", b"x", b"123456789012", b"two"] {
                encode_frame(&f, p, &mut input);
            }
        }
        input.extend_from_slice(&input.clone()[..3]); // partial frame at EOF
        let items = split_invariant(&f, MAX, &input);
        assert!(!items.is_empty(), "{f:?}");
    }
}

// ---- garbage ----

/// A delimiter that ends whatever frame the garbage left open, for resync checks.
fn resync(f: &Framing) -> Option<Vec<u8>> {
    match f {
        Framing::Lines => Some(b"\n".to_vec()),
        Framing::Delimiter(d) => Some(d.as_slice().to_vec()),
        Framing::Cobs => Some(vec![0]),
        Framing::Slip => Some(vec![SLIP_END]),
        Framing::LengthPrefix(_)
        | Framing::Fixed(_)
        | Framing::Gap(_)
        | Framing::Telegram(_)
        | Framing::Length(_)
        | Framing::ModbusRtu(_) => None,
    }
}

#[test]
fn garbage_before_start_and_end_bytes_or_a_gap_is_bounded_and_resyncs() {
    for seed in 1..=6u64 {
        let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let garbage = rng.garbage(20_000, seed % 2 == 0);
        for f in [
            sds_framing(),
            Framing::Gap(Gap::CharTenths(35)),
            ubx_framing(),
            dsmr_framing(),
        ] {
            let mut dec = FrameDecoder::new(&f, 100);
            let mut buf = BytesMut::new();
            for piece in garbage.chunks(1 + (seed as usize * 7) % 60) {
                buf.extend_from_slice(piece);
                while dec.decode(&mut buf).unwrap().is_some() {}
                assert!(buf.len() <= 101, "{f:?} seed {seed}: holds {}", buf.len());
            }
            if matches!(f, Framing::Gap(_)) {
                dec.silence();
                buf.clear();
            }
            let valid = match &f {
                Framing::Length(_) => ubx(&[1, 2, 3]),
                Framing::Telegram(_) => telegram("1-0:1.8.1(000123.456*kWh)"),
                _ => sds(4242),
            };
            buf.extend_from_slice(&valid);
            let mut items = Vec::new();
            while let Some(item) = dec.decode(&mut buf).unwrap() {
                items.push(item);
            }
            if matches!(f, Framing::Gap(_)) {
                assert!(dec.silence());
                items.push(Decoded::Frame(buf.split().freeze()));
            }
            assert_eq!(items.last(), Some(&frame(&valid)), "{f:?} seed {seed}");
        }
    }
}

#[test]
fn garbage_never_panics_stays_bounded_and_resyncs() {
    const GMAX: usize = 100;
    for f in framings_for_garbage() {
        for seed in 1..=6u64 {
            let mut rng = XorShift(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            let garbage = rng.garbage(20_000, seed % 2 == 0);
            let mut dec = FrameDecoder::new(&f, GMAX);
            let mut buf = BytesMut::new();
            let mut rest = &garbage[..];
            while !rest.is_empty() {
                let (piece, tail) = rest.split_at((1 + rng.below(64)).min(rest.len()));
                rest = tail;
                buf.extend_from_slice(piece);
                while dec.decode(&mut buf).unwrap().is_some() {}
                let held = buf.len() + dec.held();
                assert!(held <= GMAX + 8, "{f:?} seed {seed}: holds {held}");
            }
            let Some(mut clean) = resync(&f) else {
                continue;
            };
            encode_frame(&f, b"valid frame", &mut clean);
            buf.extend_from_slice(&clean);
            let mut last = None;
            while let Some(item) = dec.decode(&mut buf).unwrap() {
                last = Some(item);
            }
            assert_eq!(last, Some(frame(b"valid frame")), "{f:?} seed {seed}");
            assert!(buf.is_empty() && dec.held() == 0);
        }
    }
}

#[test]
fn garbage_decodes_identically_in_every_chunking() {
    let mut rng = XorShift(42);
    for f in framings_for_garbage() {
        for edgy in [false, true] {
            let garbage = rng.garbage(300, edgy);
            split_invariant(&f, 16, &garbage);
        }
    }
}

// ---- telegram and length ----

fn dsmr_framing() -> Framing {
    Framing::Telegram(Telegram {
        start: b"/".to_vec(),
        end: b"!".to_vec(),
        trailer: 4,
    })
}

/// A DSMR-like telegram: header, a blank line, `body`, `!` and four hex digits (not a real
/// CRC: framing does not check it), then the line break meters send after it.
fn telegram(body: &str) -> Vec<u8> {
    format!("/ISK5\\2M550T-1012\r\n\r\n{body}\r\n!1A2B").into_bytes()
}

/// u-blox UBX: B5 62, class, id, a 2-byte little-endian payload length, payload, 2 check bytes.
pub(super) fn ubx_framing() -> Framing {
    Framing::Length(LengthField {
        start: vec![0xB5, 0x62],
        at: 4,
        width: 2,
        endian: Endian::Little,
        trailer: 2,
        end: Vec::new(),
    })
}

fn ubx(payload: &[u8]) -> Vec<u8> {
    let mut f = vec![0xB5, 0x62, 0x01, 0x07];
    f.extend_from_slice(&(payload.len() as u16).to_le_bytes());
    f.extend_from_slice(payload);
    f.extend_from_slice(&[0xCA, 0xFE]);
    f
}

fn frames_of(items: &[Decoded]) -> Vec<Decoded> {
    items
        .iter()
        .filter(|d| matches!(d, Decoded::Frame(_)))
        .cloned()
        .collect()
}

fn resynced(items: &[Decoded]) -> usize {
    items
        .iter()
        .map(|d| match d {
            Decoded::Resync(n) => *n,
            _ => 0,
        })
        .sum()
}

#[test]
fn telegrams_are_whole_from_start_to_end_and_trailer_and_line_breaks_between_are_not_noise() {
    let a = telegram("1-0:1.8.1(000123.456*kWh)\r\n1-0:2.8.1(000000.001*kWh)");
    let b = telegram("1-0:1.8.1(000123.457*kWh)");
    let mut input = a.clone();
    input.extend_from_slice(b"\r\n");
    input.extend_from_slice(&b);
    input.extend_from_slice(b"\r\n");
    let items = split_invariant(&dsmr_framing(), 1024, &input);
    assert_eq!(items, vec![frame(&a), frame(&b)]);
}

#[test]
fn a_telegram_that_lost_its_end_costs_itself_only() {
    let good = telegram("1-0:1.8.1(000001.000*kWh)");
    let mut input = b"garbage".to_vec();
    input.extend_from_slice(b"/ISK5\\2M550T-1012\r\n\r\n1-0:1.8.1(0000"); // cut short
    input.extend_from_slice(&good);
    input.extend_from_slice(b"\r\n");
    input.extend_from_slice(&good);
    let items = split_invariant(&dsmr_framing(), 1024, &input);
    assert_eq!(frames_of(&items), vec![frame(&good), frame(&good)]);
    assert_eq!(resynced(&items), 7 + 35, "{items:?}");
}

#[test]
fn an_overlong_telegram_is_counted_once_and_the_next_one_is_whole() {
    let long = telegram(&"1-0:1.8.1(000001.000*kWh)\r\n".repeat(10));
    let good = telegram("x");
    let mut input = long.clone();
    input.extend_from_slice(&good);
    let items = split_invariant(&dsmr_framing(), 100, &input);
    assert_eq!(items, vec![TOO_LONG, frame(&good)]);
    // Without its end, too: counted when it passes max_frame, not held beyond it.
    let mut dec = FrameDecoder::new(&dsmr_framing(), 100);
    let mut buf = BytesMut::from(&long[..long.len() - 5]);
    assert_eq!(dec.decode(&mut buf).unwrap(), Some(TOO_LONG));
    assert_eq!(dec.decode(&mut buf).unwrap(), None);
    assert!(buf.len() < 100);
}

#[test]
fn length_frames_follow_their_field_and_slide_past_a_damaged_one() {
    let (a, b, c) = (ubx(&[1, 2, 3]), ubx(&[]), ubx(&[9; 20]));
    let mut input = vec![0x00, 0xB5]; // noise, and a start byte without its second half
    input.extend_from_slice(&a);
    let mut damaged = ubx(&[7; 6]);
    damaged.truncate(8); // lost the rest: the next frame's start is read as its payload
    input.extend_from_slice(&damaged);
    input.extend_from_slice(&b);
    input.extend_from_slice(&c);
    input.extend_from_slice(&c);
    let items = split_invariant(&ubx_framing(), 64, &input);
    let frames = frames_of(&items);
    assert_eq!(frames[0], frame(&a));
    assert_eq!(frames.last(), Some(&frame(&c)), "{items:?}");
    assert!(resynced(&items) >= 2, "{items:?}");
}

#[test]
fn length_frames_with_end_bytes_skip_a_frame_whose_end_is_wrong() {
    let f = Framing::Length(LengthField {
        start: vec![0x68],
        at: 1,
        width: 1,
        endian: Endian::Big,
        trailer: 2,
        end: vec![0x16],
    });
    // M-Bus-like: 68 L data.. CS 16, L counting the data bytes.
    let good = [0x68, 0x02, 0xAA, 0xBB, 0x65, 0x16];
    let mut input = vec![0x68, 0x02, 0xAA, 0xBB, 0x65, 0x17]; // wrong end byte
    input.extend_from_slice(&good);
    let items = split_invariant(&f, 64, &input);
    assert_eq!(items, vec![Decoded::Resync(6), frame(&good)]);
}

#[test]
fn a_length_beyond_max_frame_is_counted_and_decoding_goes_on() {
    let big = ubx(&[0; 100]);
    let small = ubx(&[5]);
    let mut input = big.clone();
    input.extend_from_slice(&small);
    let items = split_invariant(&ubx_framing(), 64, &input);
    assert_eq!(items, vec![TOO_LONG, frame(&small)]);
}

#[test]
fn yaml_telegram_and_length_forms() {
    assert_eq!(
        parse(r#"framing: {telegram: {start: "/", end: "!", trailer: 4}}"#),
        Ok(dsmr_framing())
    );
    assert_eq!(
        parse(
            r#"framing: {length: {start_hex: "B5 62", at: 4, width: 2, endian: little, trailer: 2}}"#
        ),
        Ok(ubx_framing())
    );
    let e = parse(r#"framing: {telegram: {start: "/", stop: "!"}}"#).unwrap_err();
    assert!(e.contains("unknown field `stop`"), "{e}");
    let e = parse(r#"framing: {length: {start_hex: "zz", at: 1, width: 1}}"#).unwrap_err();
    assert!(e.contains("start_hex: `zz` is not hex bytes"), "{e}");
    let overlap = Framing::Length(LengthField {
        at: 1,
        width: 1,
        ..match ubx_framing() {
            Framing::Length(l) => l,
            _ => unreachable!(),
        }
    });
    let e = overlap.validate().unwrap_err();
    assert!(e.contains("overlaps start_hex"), "{e}");
    let e = Framing::Telegram(Telegram::default())
        .validate()
        .unwrap_err();
    assert!(e.contains("text that starts and the text that ends"), "{e}");
    assert!(dsmr_framing().recovers() && ubx_framing().recovers());
}

// ---- modbus_rtu ----

fn rtu(body: &[u8]) -> Vec<u8> {
    let mut f = body.to_vec();
    let crc = crc::Crc::<u16>::new(&crc::CRC_16_MODBUS).checksum(body);
    f.extend_from_slice(&crc.to_le_bytes());
    f
}

#[test]
fn modbus_responses_are_cut_by_their_function() {
    let read = rtu(&[0x11, 0x03, 0x04, 0x00, 0x0A, 0x01, 0x02]);
    let exception = rtu(&[0x11, 0x83, 0x02]);
    let write = rtu(&[0x11, 0x06, 0x00, 0x01, 0x00, 0x03]);
    let coils = rtu(&[0x11, 0x01, 0x01, 0b101]);
    let mut input = Vec::new();
    for f in [&read, &exception, &write, &coils] {
        input.extend_from_slice(f);
    }
    let items = split_invariant(&Framing::ModbusRtu(Some(0x11)), 256, &input);
    assert_eq!(
        items,
        vec![
            frame(&read),
            frame(&exception),
            frame(&write),
            frame(&coils)
        ]
    );
}

#[test]
fn modbus_skips_other_units_and_noise_to_the_next_response() {
    let mine = rtu(&[0x02, 0x04, 0x02, 0x12, 0x34]);
    let theirs = rtu(&[0x01, 0x04, 0x02, 0x56, 0x78]);
    let mut input = vec![0x00];
    input.extend_from_slice(&theirs);
    input.extend_from_slice(&mine);
    let items = split_invariant(&Framing::ModbusRtu(Some(2)), 256, &input);
    assert_eq!(frames_of(&items), vec![frame(&mine)]);
    assert!(resynced(&items) >= 1 + theirs.len() - 2, "{items:?}");
    assert_eq!(parse("framing: modbus_rtu"), Ok(Framing::ModbusRtu(None)));
    assert_eq!(
        parse("framing: {modbus_rtu: 17}"),
        Ok(Framing::ModbusRtu(Some(17)))
    );
}

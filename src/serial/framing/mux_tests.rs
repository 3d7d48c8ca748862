//! Several protocols on one port, by examples: NMEA beside UBX, VE.Direct text beside HEX;
//! clean streams, every split, bit errors and lost bytes in either protocol.

use super::*;
use crate::frames::checksum::ChecksumSpec;
use crate::serial::framing::Telegram;

const NMEA: usize = 0;
const UBX: usize = 1;

fn verify(name: &str) -> Option<Verify> {
    let c = ChecksumSpec::named(name)?.compile();
    Some(Box::new(move |f: &[u8]| c.verify(f).is_ok()))
}

/// A u-blox receiver's port: NMEA sentences (member 0) and UBX frames (member 1).
fn gps() -> Mux {
    let ubx = super::super::tests::ubx_framing();
    let protocols = vec![
        Protocol {
            framing: Framing::Lines,
            max_frame: 128,
            verify: verify("nmea"),
        },
        Protocol {
            framing: ubx,
            max_frame: 256,
            verify: verify("ubx"),
        },
    ];
    Mux::new(protocols).unwrap_or_else(|e| panic!("{e}"))
}

fn nmea(body: &str) -> Vec<u8> {
    let sum = body.bytes().fold(0u8, |a, b| a ^ b);
    format!("${body}*{sum:02X}\r\n").into_bytes()
}

fn ubx(seed: u8, len: usize) -> Vec<u8> {
    let mut f = vec![0xB5, 0x62, 0x01, 0x07];
    f.extend_from_slice(&(len as u16).to_le_bytes());
    // Payload bytes of every value, '\n' and 0xB5 0x62 among them.
    f.extend((0..len).map(|i| seed.wrapping_add((i as u8).wrapping_mul(37))));
    let (mut a, mut b) = (0u8, 0u8);
    for &x in &f[2..] {
        a = a.wrapping_add(x);
        b = b.wrapping_add(a);
    }
    f.extend_from_slice(&[a, b]);
    f
}

/// Everything `mux` yields for `input` read in pieces of `chunk` bytes.
fn run(mut mux: Mux, input: &[u8], chunk: usize) -> Vec<(usize, Decoded)> {
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        while let Ok(Some(item)) = mux.decode(&mut buf) {
            out.push(item);
        }
    }
    out
}

fn frames(items: &[(usize, Decoded)], member: usize) -> Vec<Vec<u8>> {
    items
        .iter()
        .filter_map(|(m, d)| match d {
            Decoded::Frame(f) if *m == member => Some(f.to_vec()),
            _ => None,
        })
        .collect()
}

/// A second of a receiver's output: sentences and two UBX frames between them.
fn second(n: u8) -> (Vec<u8>, Vec<Vec<u8>>, Vec<Vec<u8>>) {
    let sentences = [
        nmea(&format!(
            "GPGGA,1235{n:02},4807.038,N,01131.000,E,1,08,0.9,545.4,M,46.9,M,,"
        )),
        nmea("GPGSA,A,3,04,05,,09,12,,,24,,,,,2.5,1.3,2.1"),
        nmea(&format!(
            "GPRMC,1235{n:02},A,4807.038,N,01131.000,E,022.4,084.4,230394,003.1,W"
        )),
    ];
    let pvt = [ubx(n, 92), ubx(n.wrapping_add(100), 16)];
    let mut wire = Vec::new();
    wire.extend_from_slice(&sentences[0]);
    wire.extend_from_slice(&pvt[0]);
    wire.extend_from_slice(&sentences[1]);
    wire.extend_from_slice(&sentences[2]);
    wire.extend_from_slice(&pvt[1]);
    let lines = sentences
        .iter()
        .map(|s| s[..s.len() - 2].to_vec())
        .collect();
    (wire, lines, pvt.to_vec())
}

#[test]
fn nmea_and_ubx_from_one_port_are_each_cut_by_their_own_framing_at_any_split() {
    let (mut wire, mut lines, mut pvt) = (Vec::new(), Vec::new(), Vec::new());
    for n in 0..4 {
        let (w, l, p) = second(n);
        wire.extend(w);
        lines.extend(l);
        pvt.extend(p);
    }
    for chunk in [1, 2, 3, 7, 64, 5000] {
        let items = run(gps(), &wire, chunk);
        assert_eq!(frames(&items, NMEA), lines, "chunk {chunk}");
        assert_eq!(frames(&items, UBX), pvt, "chunk {chunk}");
        // Nothing counted as damage: the other protocol's frames are no resync.
        assert_eq!(
            items.len(),
            lines.len() + pvt.len(),
            "chunk {chunk}: {items:?}"
        );
    }
}

#[test]
fn a_ubx_frame_with_a_wrong_ck_b_is_reported_once_and_the_sentences_around_it_are_kept() {
    let (mut wire, lines, pvt) = second(1);
    let at = lines[0].len() + 2 + pvt[0].len() - 1; // CK_B of the first frame
    wire[at] ^= 0x01;
    for chunk in [1, 5, 5000] {
        let items = run(gps(), &wire, chunk);
        assert_eq!(frames(&items, NMEA), lines, "chunk {chunk}");
        // The damaged frame reaches its device once (to be counted as a bad checksum).
        let mut damaged = pvt[0].clone();
        damaged[pvt[0].len() - 1] ^= 0x01;
        assert_eq!(
            frames(&items, UBX),
            vec![damaged, pvt[1].clone()],
            "chunk {chunk}"
        );
        assert_eq!(items.len(), 5, "{items:?}");
    }
}

#[test]
fn a_byte_lost_in_a_ubx_frame_costs_at_most_the_sentence_it_ran_into() {
    let (mut wire, lines, pvt) = second(2);
    wire.remove(lines[0].len() + 2 + 40);
    let items = run(gps(), &wire, 3);
    let got = frames(&items, NMEA);
    // The frame now ends one byte into the next sentence: that one is lost, the rest kept.
    assert_eq!(got, vec![lines[0].clone(), lines[2].clone()], "{items:?}");
    assert_eq!(frames(&items, UBX).last(), Some(&pvt[1]));
    // Reported once, as its own device's failure: no damage on the NMEA side.
    let ubx_failed: Vec<_> = items.iter().filter(|(m, _)| *m == UBX).collect();
    assert_eq!(ubx_failed.len(), 2, "{items:?}");
    assert!(
        items
            .iter()
            .all(|(m, d)| *m == UBX || matches!(d, Decoded::Frame(_))),
        "{items:?}"
    );
}

#[test]
fn a_corrupt_ubx_length_holds_the_sentences_only_until_the_frame_is_proven_broken() {
    let (mut wire, lines, pvt) = second(3);
    // The first frame's length grows from 92 to 92 + 256 = 348 > max_frame 256: too long at once.
    let len_hi = lines[0].len() + 2 + 5;
    wire[len_hi] = 0x01;
    // Then a frame whose length grows by 100 (within max_frame): it swallows what follows
    // until 100 more bytes came, and fails its check.
    let mut tail = nmea("GPTXT,01,01,02,ANTENNA OK");
    let mut grown = ubx(9, 16);
    grown[4] = 116;
    tail.extend_from_slice(&grown[..grown.len() - 2]);
    let after: Vec<Vec<u8>> = (0..4)
        .map(|i| nmea(&format!("GPGSV,4,{i},16,23,38,230,44")))
        .collect();
    for s in &after {
        tail.extend_from_slice(s);
    }
    tail.extend_from_slice(&pvt[1]);
    wire.extend_from_slice(&tail);
    let items = run(gps(), &wire, 4);
    // Each broken frame costs the one sentence its bytes ran into, no more: the rest come
    // through, none reported as damage.
    let mut want = vec![lines[0].clone(), lines[2].clone()];
    want.push(b"$GPTXT,01,01,02,ANTENNA OK*36".to_vec());
    for s in &after[1..] {
        want.push(s[..s.len() - 2].to_vec());
    }
    assert_eq!(frames(&items, NMEA), want, "{items:?}");
    assert!(
        items
            .iter()
            .all(|(m, d)| *m == UBX || matches!(d, Decoded::Frame(_))),
        "{items:?}"
    );
    assert_eq!(frames(&items, UBX).last(), Some(&pvt[1]), "{items:?}");
    assert!(
        items.contains(&(UBX, Decoded::Dropped(DropReason::TooLong))),
        "{items:?}"
    );
}

/// A Victron port: text blocks (member 0) and HEX messages (member 1).
fn victron() -> Mux {
    let text = Framing::Telegram(Telegram {
        start: b"\r\nPID\t".to_vec(),
        end: b"\r\nChecksum\t".to_vec(),
        trailer: 1,
    });
    let hex = Framing::Telegram(Telegram {
        start: b":".to_vec(),
        end: b"\n".to_vec(),
        trailer: 0,
    });
    Mux::new(vec![
        Protocol {
            framing: text,
            max_frame: 512,
            verify: verify("neg8"),
        },
        Protocol {
            framing: hex,
            max_frame: 64,
            verify: None,
        },
    ])
    .unwrap_or_else(|e| panic!("{e}"))
}

/// A text block whose closing byte is `check` (a serial number's last character is chosen to
/// get it; `ma` is the battery current).
fn block_closing_with(check: u8, ma: u32) -> Vec<u8> {
    let head = format!("\r\nPID\t0xA053\r\nV\t12800\r\nI\t{ma}\r\nSER#\tHQ");
    let tail = b"\r\nCS\t3\r\nChecksum\t";
    let sum = head
        .bytes()
        .chain(tail.iter().copied())
        .fold(0u8, |a, x| a.wrapping_add(x));
    let c = 0u8.wrapping_sub(sum).wrapping_sub(check);
    let mut b = head.into_bytes();
    // The serial's last character takes the sum to `check`: two when one would not be text.
    if c.is_ascii_alphanumeric() {
        b.push(c);
    } else {
        let half = c.wrapping_sub(b'0');
        let (x, y) = if half.is_ascii_alphanumeric() {
            (b'0', half)
        } else {
            (c.wrapping_sub(b'z'), b'z')
        };
        b.extend_from_slice(&[x, y]);
    }
    b.extend_from_slice(tail);
    b.push(check);
    let sum = b.iter().fold(0u8, |a, x| a.wrapping_add(*x));
    assert_eq!(sum, 0, "{b:?}");
    b
}

#[test]
fn victron_text_blocks_and_hex_messages_share_a_port_whatever_the_closing_byte() {
    let hex = b":A0102000543\n".to_vec();
    let mut wire = Vec::new();
    let mut blocks = Vec::new();
    // Closing bytes that look like the other protocol or a line end, and no text at all.
    for check in [b':', b'\n', b'\r', 0x80, 0xFF, b'A'] {
        let b = block_closing_with(check, u32::from(check));
        wire.extend_from_slice(&b);
        wire.extend_from_slice(&hex);
        blocks.push(b);
    }
    for chunk in [1, 2, 9, 4096] {
        let items = run(victron(), &wire, chunk);
        assert_eq!(frames(&items, 0), blocks, "chunk {chunk}");
        assert_eq!(frames(&items, 1), vec![hex.clone(); 6], "chunk {chunk}");
        assert_eq!(items.len(), 12, "chunk {chunk}: {items:?}");
    }
}

#[test]
fn a_damaged_block_is_reported_once_and_the_hex_messages_after_it_are_kept() {
    let hex = b":A0102000543\n".to_vec();
    let good = block_closing_with(0x9C, 100);
    let mut bad = block_closing_with(b':', 200);
    bad[14] ^= 0x01; // a digit of V: the sum no longer holds
    let mut wire = bad.clone();
    wire.extend_from_slice(&hex);
    wire.extend_from_slice(&good);
    let items = run(victron(), &wire, 5);
    assert_eq!(
        frames(&items, 0),
        vec![bad.clone(), good.clone()],
        "{items:?}"
    );
    assert_eq!(frames(&items, 1), vec![hex.clone()], "{items:?}");
    assert_eq!(items.len(), 3, "{items:?}");
}

#[test]
fn a_block_that_lost_its_end_holds_the_hex_messages_until_the_next_block_and_keeps_them() {
    let hex = b":A0102000543\n".to_vec();
    let mut cut = block_closing_with(0x10, 300);
    let end = memchr::memmem::find(&cut, b"\r\nChecksum").unwrap_or(0);
    cut.truncate(end); // a reset mid-block
    let good = block_closing_with(0xF0, 400);
    let mut wire = cut;
    wire.extend_from_slice(&hex);
    wire.extend_from_slice(&hex);
    wire.extend_from_slice(&good);
    let items = run(victron(), &wire, 7);
    assert_eq!(
        frames(&items, 1),
        vec![hex.clone(), hex.clone()],
        "{items:?}"
    );
    assert_eq!(frames(&items, 0), vec![good], "{items:?}");
}

#[test]
fn frames_that_cannot_be_told_apart_are_refused_with_what_to_write() {
    let lines = Framing::Lines;
    let e = can_share(&[&lines, &Framing::Delimiter(b"|".to_vec())]).unwrap_err();
    assert!(e.contains("two of them are cut by a delimiter"), "{e}");
    let e = can_share(&[&lines, &Framing::Slip]).unwrap_err();
    assert!(e.contains("`slip` framing cannot share a port"), "{e}");
    let t = Framing::Telegram(Telegram {
        start: b"/".to_vec(),
        end: b"!".to_vec(),
        trailer: 4,
    });
    let e = can_share(&[&t, &t]).unwrap_err();
    assert!(e.contains("same bytes (2f)"), "{e}");
}

/// Items with runs of resync counts added up (a split read may report them in pieces).
fn merged(items: Vec<(usize, Decoded)>) -> Vec<(usize, Decoded)> {
    let mut out: Vec<(usize, Decoded)> = Vec::new();
    for (m, d) in items {
        if let (Some((pm, Decoded::Resync(n))), Decoded::Resync(k)) = (out.last_mut(), &d) {
            if *pm == m {
                *n += k;
                continue;
            }
        }
        out.push((m, d));
    }
    out
}

proptest::proptest! {
    /// Any bytes, any split: the same items as one read, nothing held beyond the frame bounds.
    #[test]
    fn any_bytes_give_the_same_items_whatever_the_split(
        parts in proptest::collection::vec(0u8..6, 0..40),
        seed in proptest::num::u8::ANY,
        chunk in 1usize..40,
    ) {
        let mut wire = Vec::new();
        for (i, p) in parts.iter().enumerate() {
            let n = seed.wrapping_add(i as u8);
            match p {
                0 => wire.extend(nmea("GPGSA,A,3,04,05,,09")),
                1 => wire.extend(ubx(n, usize::from(n % 40))),
                2 => wire.push(n),
                3 => wire.extend_from_slice(&[0xB5, 0x62]),
                4 => { let mut f = ubx(n, 8); f[7] ^= 0x40; wire.extend(f) }
                _ => wire.extend_from_slice(b"\r\n"),
            }
        }
        let whole = merged(run(gps(), &wire, wire.len().max(1)));
        let split = merged(run(gps(), &wire, chunk));
        proptest::prop_assert_eq!(whole, split);
    }
}

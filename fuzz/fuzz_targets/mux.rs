//! Several protocols on one port (NMEA beside UBX, or two telegram protocols) on arbitrary
//! bytes cut into arbitrary chunks: never panics, never yields a frame longer than its
//! `max_frame`, holds a bounded amount of input, gives the same items whatever the split, and
//! after any garbage both protocols' good frames are read again.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use serial2mqtt::frames::checksum::ChecksumSpec;
use serial2mqtt::serial::framing::{
    Decoded, Endian, Framing, LengthField, Mux, Protocol, Telegram, Verify,
};
use tokio_util::codec::Decoder;

const MAX: usize = 64;

fn verify(name: &str) -> Option<Verify> {
    let c = ChecksumSpec::named(name)?.compile();
    Some(Box::new(move |f: &[u8]| c.verify(f).is_ok()))
}

/// The port, and a clean round of each protocol's frames.
fn port(selector: u8) -> (Mux, Vec<u8>, [Vec<u8>; 2]) {
    let (protocols, frames) = if selector % 2 == 0 {
        let ubx = Framing::Length(LengthField {
            start: vec![0xB5, 0x62],
            at: 4,
            width: 2,
            endian: Endian::Little,
            trailer: 2,
            end: Vec::new(),
        });
        let line = b"$GPGSA,A,3,04*18".to_vec();
        // CK_A, CK_B over 01 07 03 00 01 02 03.
        let frame = vec![0xB5, 0x62, 1, 7, 3, 0, 1, 2, 3, 0x11, 0x4A];
        (
            vec![
                Protocol { framing: Framing::Lines, max_frame: MAX, verify: verify("nmea") },
                Protocol { framing: ubx, max_frame: MAX, verify: verify("ubx") },
            ],
            [line, frame],
        )
    } else {
        let block = Framing::Telegram(Telegram {
            start: b"\r\nPID\t".to_vec(),
            end: b"\r\nChecksum\t".to_vec(),
            trailer: 1,
        });
        let hex = Framing::Telegram(Telegram { start: b":".to_vec(), end: b"\n".to_vec(), trailer: 0 });
        let mut text = b"\r\nPID\t0xA053\r\nV\t12800\r\nChecksum\t".to_vec();
        let sum = text.iter().fold(0u8, |a, b| a.wrapping_add(*b));
        text.push(0u8.wrapping_sub(sum));
        (
            vec![
                Protocol { framing: block, max_frame: MAX, verify: verify("neg8") },
                Protocol { framing: hex, max_frame: 16, verify: None },
            ],
            [text, b":A0102000543\n".to_vec()],
        )
    };
    let mut round = frames[0].clone();
    if selector % 2 == 0 {
        round.extend_from_slice(b"\r\n");
    }
    round.extend_from_slice(&frames[1]);
    let mux = Mux::new(protocols).expect("these protocols share a port");
    (mux, round, frames)
}

/// Every item `mux` yields for `input` in pieces of `chunk`, resync counts added up.
fn run(mux: &mut Mux, buf: &mut BytesMut, input: &[u8], chunk: usize) -> Vec<(usize, Decoded)> {
    let mut out: Vec<(usize, Decoded)> = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        while let Some((m, d)) = mux.decode(buf).expect("decode never errs") {
            if let Decoded::Frame(f) = &d {
                assert!(f.len() <= MAX + 2, "frame of {} bytes", f.len());
            }
            match (out.last_mut(), &d) {
                (Some((pm, Decoded::Resync(n))), Decoded::Resync(k)) if *pm == m => *n += k,
                _ => out.push((m, d)),
            }
        }
        assert!(buf.len() <= 4 * MAX + 256, "holds {} bytes", buf.len());
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let [selector, chunk, rest @ ..] = data else {
        return;
    };
    let (mut whole, round, frames) = port(*selector);
    let mut buf = BytesMut::new();
    let all = run(&mut whole, &mut buf, rest, rest.len());
    let (mut split, _, _) = port(*selector);
    let mut sbuf = BytesMut::new();
    let pieces = run(&mut split, &mut sbuf, rest, usize::from(*chunk));
    assert_eq!(all, pieces, "the split changed what was read");
    // After any garbage and a line end, good rounds of both protocols are read again (a false
    // start in the garbage holds them for at most MAX bytes).
    let mut tail = b"\r\n".to_vec();
    for _ in 0..12 {
        tail.extend_from_slice(&round);
    }
    let items = run(&mut whole, &mut buf, &tail, tail.len());
    for (m, want) in frames.iter().enumerate() {
        let last = items.iter().rev().find_map(|(who, d)| match d {
            Decoded::Frame(f) if *who == m => Some(f.to_vec()),
            _ => None,
        });
        assert_eq!(last.as_deref(), Some(&want[..]), "protocol {m} not read again: {items:?}");
    }
});

//! Every framer on arbitrary bytes, cut into arbitrary chunks: never panics, never yields a
//! frame longer than `max_frame`, never holds more than a bounded amount of input, and a frame
//! the encoder wrote after the garbage still decodes intact.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use serial2mqtt::serial::framing::{
    encode_frame, Decoded, Endian, Fixed, FrameDecoder, Framing, Gap, LengthField, LengthPrefix,
    Telegram,
};
use tokio_util::codec::Decoder;

fn framing(selector: u8) -> Framing {
    match selector % 14 {
        0 => Framing::Lines,
        1 => Framing::Delimiter(b"\r\n".to_vec()),
        2 => Framing::Delimiter(b"|".to_vec()),
        3 => Framing::Cobs,
        4 => Framing::Slip,
        5 => Framing::LengthPrefix(LengthPrefix { width: 1, endian: Endian::Big }),
        6 => Framing::LengthPrefix(LengthPrefix { width: 2, endian: Endian::Little }),
        7 => Framing::LengthPrefix(LengthPrefix { width: 4, endian: Endian::Big }),
        8 => Framing::Fixed(Fixed::size(7)),
        9 => Framing::Fixed(Fixed { size: 10, start: vec![0xAA, 0xC0], end: vec![0xAB] }),
        10 => Framing::Gap(Gap::CharTenths(35)),
        12 => Framing::ModbusRtu(Some(1)),
        11 => Framing::Telegram(Telegram { start: b"/".to_vec(), end: b"!".to_vec(), trailer: 4 }),
        _ => Framing::Length(LengthField {
            start: vec![0xB5, 0x62],
            at: 4,
            width: 2,
            endian: Endian::Little,
            trailer: 2,
            end: Vec::new(),
        }),
    }
}

fuzz_target!(|data: &[u8]| {
    let [selector, chunk, rest @ ..] = data else {
        return;
    };
    let framing = framing(*selector);
    let max_frame = 64;
    let mut decoder = FrameDecoder::new(&framing, max_frame);
    let mut buf = BytesMut::new();
    let chunk = usize::from(*chunk).max(1);
    let check = |decoder: &mut FrameDecoder, buf: &mut BytesMut| {
        while let Some(item) = decoder.decode(buf).expect("decode never errs") {
            if let Decoded::Frame(f) = item {
                assert!(f.len() <= max_frame, "{framing:?}: frame of {} bytes", f.len());
            }
        }
        // What the decoder keeps is bounded by the frame size, not by the input.
        assert!(buf.len() <= 4 * max_frame + 16, "{framing:?} holds {} bytes", buf.len());
    };
    for piece in rest.chunks(chunk) {
        buf.extend_from_slice(piece);
        check(&mut decoder, &mut buf);
    }
    // After any garbage, a fixed frame with start and end bytes is found again (a false start
    // in the garbage costs at most a few frames: five in a row must give the real one).
    if let Framing::Fixed(f) = &framing {
        if !f.start.is_empty() {
            let good = [0xAA, 0xC0, 1, 2, 3, 4, 5, 6, 7, 0xAB];
            for _ in 0..5 {
                buf.extend_from_slice(&good);
            }
            let mut frames = Vec::new();
            while let Some(item) = decoder.decode(&mut buf).expect("decode never errs") {
                if let Decoded::Frame(f) = item {
                    frames.push(f);
                }
            }
            assert_eq!(frames.last().map(|f| &f[..]), Some(&good[..]), "resync after garbage");
        }
    }
    // After any garbage, telegrams and length frames are found again at their start bytes (a
    // false start in the garbage can swallow at most max_frame bytes of the good ones).
    let good: Option<&[u8]> = match &framing {
        Framing::Telegram(_) => Some(b"/ISK5\\2M550T\r\n1-0:1.8.1(1.0*kWh)\r\n!A0B1"),
        Framing::Length(_) => Some(&[0xB5, 0x62, 1, 7, 3, 0, 1, 2, 3, 0xCA, 0xFE]),
        _ => None,
    };
    if let Some(good) = good {
        for _ in 0..10 {
            buf.extend_from_slice(good);
        }
        let mut frames = Vec::new();
        while let Some(item) = decoder.decode(&mut buf).expect("decode never errs") {
            if let Decoded::Frame(f) = item {
                frames.push(f);
            }
        }
        assert_eq!(frames.last().map(|f| &f[..]), Some(good), "{framing:?}: resync after garbage");
    }
    // A gap frame ends at silence: after it, the next bytes are a new frame.
    if matches!(framing, Framing::Gap(_)) {
        decoder.silence();
        buf.clear();
        buf.extend_from_slice(b"ok-42");
        assert_eq!(decoder.decode(&mut buf).expect("decode never errs"), Some(Decoded::GapStarted));
        assert!(decoder.silence());
        assert_eq!(&buf[..], b"ok-42");
    }
    // After any garbage, a frame that follows a clean boundary is read intact. A fixed or
    // length-prefixed stream has no boundary to find in garbage, so only delimited ones.
    if matches!(framing, Framing::Lines | Framing::Delimiter(_) | Framing::Cobs | Framing::Slip) {
        let mut tail = Vec::new();
        encode_frame(&framing, b"", &mut tail); // a delimiter: ends whatever garbage began
        encode_frame(&framing, b"ok-42", &mut tail);
        buf.extend_from_slice(&tail);
        let mut frames = Vec::new();
        while let Some(item) = decoder.decode(&mut buf).expect("decode never errs") {
            if let Decoded::Frame(f) = item {
                frames.push(f);
            }
        }
        assert_eq!(
            frames.last().map(|f| &f[..]),
            Some(&b"ok-42"[..]),
            "{framing:?}: the clean frame after garbage"
        );
    }
});

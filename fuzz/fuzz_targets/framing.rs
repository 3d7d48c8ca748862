//! Every framer on arbitrary bytes, cut into arbitrary chunks: never panics, never yields a
//! frame longer than `max_frame`, never holds more than a bounded amount of input, and a frame
//! the encoder wrote after the garbage still decodes intact.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use serial2mqtt::serial::framing::{
    encode_frame, Decoded, Endian, FrameDecoder, Framing, LengthPrefix,
};
use tokio_util::codec::Decoder;

fn framing(selector: u8) -> Framing {
    match selector % 9 {
        0 => Framing::Lines,
        1 => Framing::Delimiter("\r\n".into()),
        2 => Framing::Delimiter("|".into()),
        3 => Framing::Cobs,
        4 => Framing::Slip,
        5 => Framing::LengthPrefix(LengthPrefix { width: 1, endian: Endian::Big }),
        6 => Framing::LengthPrefix(LengthPrefix { width: 2, endian: Endian::Little }),
        7 => Framing::LengthPrefix(LengthPrefix { width: 4, endian: Endian::Big }),
        _ => Framing::Fixed(7),
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
    let mut check = |decoder: &mut FrameDecoder, buf: &mut BytesMut| {
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

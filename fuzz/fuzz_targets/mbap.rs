//! The Modbus TCP server's parser on arbitrary bytes from the network, cut into arbitrary
//! chunks: never panics; a frame is never longer than a PDU can be; the same frames come out
//! whatever the split, up to the first frame that cannot be cut (which closes the connection);
//! a request it accepts stays within 0-65535 and its count limits, goes to the line as an RTU
//! frame that reads back to the same PDU, and its grants can be checked.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use serial2mqtt::config::model::Access;
use serial2mqtt::modbus::mbap;
use serial2mqtt::server::{access, connection::Codec, request};
use tokio_util::codec::Decoder;

/// The frames of `data` fed in chunks of the sizes `cuts` gives, and whether it broke.
fn frames(data: &[u8], cuts: &[u8]) -> (Vec<(mbap::Header, Vec<u8>)>, bool) {
    let mut codec = Codec;
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    let mut at = 0;
    let mut cut = cuts.iter().cycle();
    while at < data.len() {
        let n = usize::from(cut.next().copied().unwrap_or(255)).max(1);
        let end = (at + n).min(data.len());
        buf.extend_from_slice(&data[at..end]);
        at = end;
        loop {
            match codec.decode(&mut buf) {
                Ok(Some((h, pdu))) => {
                    assert!(pdu.len() == h.pdu_len && (1..=mbap::MAX_PDU).contains(&pdu.len()));
                    out.push((h, pdu.to_vec()));
                }
                Ok(None) => break,
                Err(_) => return (out, true),
            }
        }
        // What waits is at most one frame in progress.
        assert!(buf.len() < mbap::HEADER + mbap::MAX_PDU + n);
    }
    (out, false)
}

fuzz_target!(|input: (Vec<u8>, Vec<u8>)| {
    let (data, cuts) = input;
    let (whole, broke) = frames(&data, &[255]);
    let (split, broke_split) = frames(&data, if cuts.is_empty() { &[1] } else { &cuts });
    assert_eq!(whole, split);
    assert_eq!(broke, broke_split);
    let grant = Access {
        clients: vec![],
        tables: Some([vec![0..=15], vec![], vec![100..=199], vec![0..=65535]]),
    };
    for (h, pdu) in whole {
        let reply = mbap::frame(h.transaction, h.unit, &pdu);
        assert_eq!(reply.len(), mbap::HEADER + pdu.len());
        match request::parse(&pdu) {
            Ok(op) => {
                assert!(op.count >= 1 && u32::from(op.start) + u32::from(op.count) <= 0x1_0000);
                let rtu = mbap::rtu(h.unit, &pdu);
                assert_eq!(mbap::from_rtu(&rtu), Some((h.unit, &pdu[..])));
                let _ = access::allows(std::slice::from_ref(&grant), "10.0.0.1".parse().unwrap(), &op);
            }
            Err(code) => assert!([1, 2, 3].contains(&code)),
        }
    }
});

//! MQTT 3.1.1 packets as the gatekeeper sees them: whole packets cut from a byte stream by their
//! fixed header, and the few fields it reads in place (a PUBLISH's topic, QoS, retain flag and
//! packet id; an acknowledgement's packet id) so that everything else passes as bytes.

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes;
use rumqttc::mqttbytes::v4::Packet;
use tokio::io::{AsyncRead, AsyncReadExt};

/// MQTT control packet types (the fixed header's high nibble).
pub(super) mod kind {
    pub const CONNECT: u8 = 1;
    pub const PUBLISH: u8 = 3;
    pub const PUBACK: u8 = 4;
    pub const PUBREC: u8 = 5;
    pub const PUBREL: u8 = 6;
    pub const PUBCOMP: u8 = 7;
    pub const SUBSCRIBE: u8 = 8;
    pub const SUBACK: u8 = 9;
    pub const DISCONNECT: u8 = 14;
}

/// The packet type of a whole packet.
pub(super) fn kind_of(packet: &[u8]) -> u8 {
    packet.first().map_or(0, |b| b >> 4)
}

/// Reads one whole packet (rumqttd's answers to a will's connection).
pub(super) async fn read_packet<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Packet, String> {
    loop {
        match Packet::read(buf, max) {
            Ok(p) => return Ok(p),
            Err(mqttbytes::Error::InsufficientBytes(_)) => {}
            Err(e) => return Err(format!("bad packet: {e}")),
        }
        if stream.read_buf(buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("the connection closed".into());
        }
    }
}

/// Reads until `buf` starts with a whole packet; returns its length.
pub(super) async fn read_frame<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    max: usize,
) -> Result<usize, String> {
    loop {
        if let Some(len) = frame(buf, max)? {
            return Ok(len);
        }
        if stream.read_buf(buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("closed before CONNECT".into());
        }
    }
}

/// The length of the whole packet at the start of `buf`, if it is all there.
pub(super) fn frame(buf: &BytesMut, max: usize) -> Result<Option<usize>, String> {
    match mqttbytes::check(buf.iter(), max) {
        Ok(h) => Ok(Some(h.frame_length())),
        Err(mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
        Err(e) => Err(format!("bad packet: {e}")),
    }
}

/// The protocol level a CONNECT asks for (4 is MQTT 3.1.1, 5 is MQTT 5, 3 is MQTT 3.1), read
/// before the packet is parsed: rumqttc's v4 parser takes a v5 CONNECT's properties for its
/// payload.
pub(super) fn protocol_level(packet: &[u8]) -> Option<u8> {
    let at = body_start(packet)?;
    let name_len = u16::from_be_bytes([*packet.get(at)?, *packet.get(at + 1)?]) as usize;
    packet.get(at + 2 + name_len).copied()
}

/// Where the variable header starts: after the type byte and 1-4 bytes of remaining length.
fn body_start(packet: &[u8]) -> Option<usize> {
    let mut at = 1;
    while packet.get(at)? & 0x80 != 0 {
        at += 1;
    }
    Some(at + 1)
}

/// A PUBLISH's fields, read in place (the packet is passed on as bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct PublishParts<'a> {
    pub qos: u8,
    pub retain: bool,
    pub topic: &'a str,
    /// 0 at QoS 0.
    pub pkid: u16,
    /// Payload bytes.
    pub payload_len: usize,
}

/// A PUBLISH's QoS bits, retain flag, topic, packet id and payload length.
pub(super) fn publish_parts(packet: &[u8]) -> Option<PublishParts<'_>> {
    let qos = (packet.first()? >> 1) & 3;
    let at = body_start(packet)?;
    let len = u16::from_be_bytes([*packet.get(at)?, *packet.get(at + 1)?]) as usize;
    let topic = std::str::from_utf8(packet.get(at + 2..at + 2 + len)?).ok()?;
    let mut end = at + 2 + len;
    let pkid = if qos > 0 {
        let id = u16::from_be_bytes([*packet.get(end)?, *packet.get(end + 1)?]);
        end += 2;
        id
    } else {
        0
    };
    Some(PublishParts {
        qos,
        retain: packet[0] & 1 == 1,
        topic,
        pkid,
        payload_len: packet.len().checked_sub(end)?,
    })
}

/// The packet id of a 4-byte acknowledgement (PUBACK, PUBREC, PUBREL, PUBCOMP; SUBACK's first
/// two bytes after the header).
pub(super) fn ack_pkid(packet: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*packet.get(2)?, *packet.get(3)?]))
}

/// A packet as bytes.
pub(super) fn encode(packet: Packet) -> Bytes {
    let mut out = BytesMut::new();
    let _ = packet.write(&mut out, usize::MAX);
    out.freeze()
}

/// A four-byte acknowledgement of `kind` for `pkid` (PUBREL carries the flags 0b0010).
pub(super) fn ack(kind: u8, pkid: u16) -> [u8; 4] {
    let flags = if kind == self::kind::PUBREL { 2 } else { 0 };
    let [hi, lo] = pkid.to_be_bytes();
    [(kind << 4) | flags, 2, hi, lo]
}

/// The common name of a DER certificate's subject.
pub(super) fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::mqttbytes::v4::{Connect, Publish};
    use rumqttc::mqttbytes::QoS;

    #[test]
    fn publish_parts_reads_topic_qos_retain_pkid_and_payload_in_place() {
        for (qos, pkid, retain) in [
            (QoS::AtMostOnce, 0, false),
            (QoS::AtLeastOnce, 7, true),
            (QoS::ExactlyOnce, 513, false),
        ] {
            let mut p = Publish::new("cmd/gw/relay/set", qos, vec![b'x'; 300]);
            p.pkid = pkid;
            p.retain = retain;
            let bytes = encode(Packet::Publish(p));
            let parts = publish_parts(&bytes).unwrap();
            assert_eq!(
                parts,
                PublishParts {
                    qos: qos as u8,
                    retain,
                    topic: "cmd/gw/relay/set",
                    pkid,
                    payload_len: 300
                }
            );
        }
        assert_eq!(publish_parts(&[0x30, 5, 0, 9, b'a']), None, "short topic");
        let mut buf = BytesMut::from(&b"\x30\x05\x00"[..]);
        assert_eq!(frame(&buf, 100), Ok(None));
        buf.extend_from_slice(b"\x01a\x00\x00");
        assert_eq!(frame(&buf, 100), Ok(Some(7)));
    }

    #[test]
    fn the_protocol_level_is_read_before_parsing() {
        let v4 = encode(Packet::Connect(Connect::new("c")));
        assert_eq!(protocol_level(&v4), Some(4));
        // An MQTT 5 CONNECT: name, level 5, flags, keep-alive, properties (0), client id "c".
        let v5 = [
            0x10, 14, 0, 4, b'M', b'Q', b'T', b'T', 5, 2, 0, 60, 0, 0, 1, b'c',
        ];
        assert_eq!(protocol_level(&v5), Some(5));
        assert_eq!(ack(kind::PUBREL, 258), [0x62, 2, 1, 2]);
        assert_eq!(ack(kind::PUBACK, 1), [0x40, 2, 0, 1]);
    }

    proptest::proptest! {
        /// Whatever bytes a client sends, the in-place readers never panic, and a whole packet
        /// cut by `frame` is exactly as long as its fixed header says.
        #[test]
        fn the_readers_never_panic_on_any_bytes(
            bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
        ) {
            let buf = BytesMut::from(&bytes[..]);
            if let Ok(Some(len)) = frame(&buf, 1 << 16) {
                proptest::prop_assert!(len <= bytes.len());
                let packet = &bytes[..len];
                let _ = publish_parts(packet);
                let _ = protocol_level(packet);
                let _ = ack_pkid(packet);
            }
            let _ = publish_parts(&bytes);
            let _ = protocol_level(&bytes);
        }

        /// Any PUBLISH rumqttc writes is read back in place: topic, QoS, retain, packet id and
        /// payload length.
        #[test]
        fn a_publish_is_read_back_in_place(
            topic in "[a-z/+#$]{1,40}",
            qos in 0u8..3,
            retain in proptest::bool::ANY,
            pkid in 1u16..,
            payload in proptest::collection::vec(proptest::num::u8::ANY, 0..300),
        ) {
            let q = match qos { 0 => QoS::AtMostOnce, 1 => QoS::AtLeastOnce, _ => QoS::ExactlyOnce };
            let mut p = Publish::new(topic.clone(), q, payload.clone());
            p.retain = retain;
            p.pkid = if qos == 0 { 0 } else { pkid };
            let bytes = encode(Packet::Publish(p));
            let buf = BytesMut::from(&bytes[..]);
            proptest::prop_assert_eq!(frame(&buf, usize::MAX >> 4), Ok(Some(bytes.len())));
            let parts = publish_parts(&bytes).expect("a publish");
            proptest::prop_assert_eq!(parts.topic, topic.as_str());
            proptest::prop_assert_eq!((parts.qos, parts.retain), (qos, retain));
            proptest::prop_assert_eq!(parts.pkid, if qos == 0 { 0 } else { pkid });
            proptest::prop_assert_eq!(parts.payload_len, payload.len());
        }
    }
}

//! The on-disk record: one message with its sequence number, checksummed.
//!
//! ```text
//! [len: u32 LE][crc32c: u32 LE][seq: u64 LE][topic_len: u16 LE][topic][qos: u8][retain: u8][payload]
//! ```
//! `len` counts the body (everything after `seq`); the CRC covers `seq` and the body, so a torn
//! or bit-flipped record is detected, and a record read back at the wrong place (wrong `seq`) is
//! too.

use bytes::Bytes;

use crate::message::Message;

/// Bytes before the body: len, crc, seq.
pub const HEADER: usize = 16;
/// Fixed body bytes besides topic and payload: topic_len, qos, retain.
const BODY_FIXED: usize = 4;
/// The smallest record on disk (empty topic and payload).
pub const MIN_LEN: usize = HEADER + BODY_FIXED;

/// A message as stored in the queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Position in the queue; consecutive across the whole log.
    pub seq: u64,
    /// The message.
    pub message: Message,
}

/// Why bytes are not a valid record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Invalid {
    /// Fewer bytes than the header or the body it announces: a torn write.
    Truncated,
    /// The announced length is impossible.
    BadLength,
    /// The checksum does not match: corruption.
    BadChecksum,
    /// The body's own lengths are inconsistent.
    BadBody,
}

/// Size of the record for `message` on disk.
pub fn encoded_len(message: &Message) -> usize {
    HEADER + BODY_FIXED + message.topic.len() + message.payload.len()
}

/// Appends the record to `out`. The topic must be at most 65535 bytes (MQTT's own limit).
pub fn encode(seq: u64, message: &Message, out: &mut Vec<u8>) {
    let topic = message.topic.as_bytes();
    let topic_len = topic.len().min(u16::MAX as usize);
    let body_len = BODY_FIXED + topic_len + message.payload.len();
    let start = out.len();
    out.extend_from_slice(&(body_len as u32).to_le_bytes());
    out.extend_from_slice(&[0; 4]); // crc, filled below
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(&(topic_len as u16).to_le_bytes());
    out.extend_from_slice(&topic[..topic_len]);
    out.push(message.qos);
    out.push(u8::from(message.retain));
    out.extend_from_slice(&message.payload);
    let crc = crc32c::crc32c(&out[start + 8..]);
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The body length a header announces, if `buf` holds a header.
pub fn announced_len(buf: &[u8]) -> Option<usize> {
    let len = u32::from_le_bytes(buf.get(..4)?.try_into().ok()?);
    Some(len as usize)
}

/// Decodes the record at the start of `buf`, returning it and its size. `max_body` bounds the
/// announced length, so garbage cannot ask for gigabytes.
pub fn decode(buf: &[u8], max_body: usize) -> Result<(Record, usize), Invalid> {
    let len = announced_len(buf).ok_or(Invalid::Truncated)?;
    if !(BODY_FIXED..=max_body).contains(&len) {
        return Err(Invalid::BadLength);
    }
    let total = HEADER + len;
    let rec = buf.get(..total).ok_or(Invalid::Truncated)?;
    let crc = u32::from_le_bytes([rec[4], rec[5], rec[6], rec[7]]);
    if crc32c::crc32c(&rec[8..]) != crc {
        return Err(Invalid::BadChecksum);
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&rec[8..16]);
    let body = &rec[HEADER..];
    let topic_len = u16::from_le_bytes([body[0], body[1]]) as usize;
    let rest = body.get(2 + topic_len..).ok_or(Invalid::BadBody)?;
    let topic = std::str::from_utf8(&body[2..2 + topic_len]).map_err(|_| Invalid::BadBody)?;
    let (&qos, rest) = rest.split_first().ok_or(Invalid::BadBody)?;
    let (&retain, payload) = rest.split_first().ok_or(Invalid::BadBody)?;
    if qos > 2 || retain > 1 {
        return Err(Invalid::BadBody);
    }
    Ok((
        Record {
            seq: u64::from_le_bytes(seq),
            message: Message {
                topic: topic.to_owned(),
                payload: Bytes::copy_from_slice(payload),
                qos,
                retain: retain == 1,
            },
        },
        total,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(topic: &str, payload: &[u8]) -> Message {
        Message {
            topic: topic.into(),
            payload: Bytes::copy_from_slice(payload),
            qos: 1,
            retain: true,
        }
    }

    #[test]
    fn round_trips_and_reports_its_size() {
        let m = msg("sensors/a/temperature", b"21.5");
        let mut buf = Vec::new();
        encode(7, &m, &mut buf);
        assert_eq!(buf.len(), encoded_len(&m));
        let (r, n) = decode(&buf, 1 << 20).unwrap();
        assert_eq!((r.seq, r.message, n), (7, m, buf.len()));
    }

    #[test]
    fn every_truncation_and_every_bit_flip_is_detected() {
        let mut buf = Vec::new();
        encode(42, &msg("t/x", b"payload bytes"), &mut buf);
        for cut in 0..buf.len() {
            assert!(decode(&buf[..cut], 1 << 20).is_err(), "cut at {cut}");
        }
        for byte in 0..buf.len() {
            for bit in 0..8 {
                let mut b = buf.clone();
                b[byte] ^= 1 << bit;
                assert!(decode(&b, 1 << 20).is_err(), "flip {byte}:{bit}");
            }
        }
    }

    #[test]
    fn absurd_lengths_are_rejected_without_reading_them() {
        let mut buf = vec![0xff; 16];
        buf.extend_from_slice(&[0; 8]);
        assert_eq!(decode(&buf, 1 << 20).unwrap_err(), Invalid::BadLength);
        assert_eq!(decode(&[0; 20], 1 << 20).unwrap_err(), Invalid::BadLength);
    }
}

//! Modbus TCP's framing: the 7-byte MBAP header (transaction id, protocol 0, length, unit) in
//! front of a PDU, and the conversions between it and an RTU frame (unit, PDU, CRC-16). The
//! Modbus TCP server and the Modbus TCP transport both cut and build frames here; nothing here
//! does I/O. Written by hand: it is seven bytes, and its checks (protocol, length bounds) are
//! the first thing a network peer's bytes meet, so they must say exactly what was wrong.

/// Bytes of the MBAP header, the unit id included.
pub const HEADER: usize = 7;
/// The longest PDU the protocol allows (function code and data).
pub const MAX_PDU: usize = 253;

/// A parsed MBAP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Echoed back in the answer, so a client can match answers to requests.
    pub transaction: u16,
    /// The unit addressed (the serial unit behind a gateway).
    pub unit: u8,
    /// Bytes of PDU that follow the header.
    pub pdu_len: usize,
}

/// Why a header cannot start a frame: the connection can no longer be cut into frames.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum HeaderError {
    /// The protocol id is not 0 (Modbus).
    #[error("protocol id {0} is not Modbus (0)")]
    Protocol(u16),
    /// The length field leaves no function code or promises more than a PDU can hold.
    #[error("length field {0} is outside 2..=254 (unit id and a PDU of 1..=253 bytes)")]
    Length(u16),
}

/// Reads a header from its 7 bytes.
pub fn header(b: &[u8; HEADER]) -> Result<Header, HeaderError> {
    let transaction = u16::from_be_bytes([b[0], b[1]]);
    let protocol = u16::from_be_bytes([b[2], b[3]]);
    let length = u16::from_be_bytes([b[4], b[5]]);
    if protocol != 0 {
        return Err(HeaderError::Protocol(protocol));
    }
    if !(2..=(MAX_PDU as u16 + 1)).contains(&length) {
        return Err(HeaderError::Length(length));
    }
    Ok(Header {
        transaction,
        unit: b[6],
        pdu_len: usize::from(length) - 1,
    })
}

/// A whole Modbus TCP frame: header and PDU.
pub fn frame(transaction: u16, unit: u8, pdu: &[u8]) -> Vec<u8> {
    let len = u16::try_from(pdu.len().min(MAX_PDU) + 1).unwrap_or(u16::MAX);
    let mut out = Vec::with_capacity(HEADER + pdu.len());
    out.extend_from_slice(&transaction.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&len.to_be_bytes());
    out.push(unit);
    out.extend_from_slice(&pdu[..pdu.len().min(MAX_PDU)]);
    out
}

/// An exception answer's PDU: the function code with its high bit set, and the code.
pub fn exception(function: u8, code: u8) -> [u8; 2] {
    [function | 0x80, code]
}

/// The RTU frame for a PDU: unit, PDU, CRC-16/MODBUS (low byte first).
pub fn rtu(unit: u8, pdu: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(pdu.len() + 3);
    out.push(unit);
    out.extend_from_slice(pdu);
    let crc = crc::Crc::<u16>::new(&crc::CRC_16_MODBUS).checksum(&out);
    out.extend_from_slice(&crc.to_le_bytes());
    out
}

/// An RTU frame's unit and PDU, when its CRC is right (None: too short or a bad CRC).
pub fn from_rtu(frame: &[u8]) -> Option<(u8, &[u8])> {
    if frame.len() < 4 {
        return None;
    }
    let (body, crc) = frame.split_at(frame.len() - 2);
    let want = crc::Crc::<u16>::new(&crc::CRC_16_MODBUS).checksum(body);
    (want.to_le_bytes() == crc).then(|| (body[0], &body[1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_header_is_checked_and_frames_convert_both_ways() {
        // Read holding 0x0000 x2 from unit 1, transaction 0x1234.
        let f = frame(0x1234, 1, &[0x03, 0x00, 0x00, 0x00, 0x02]);
        assert_eq!(f, [0x12, 0x34, 0, 0, 0, 6, 1, 3, 0, 0, 0, 2]);
        let h = header(f[..HEADER].try_into().unwrap()).unwrap();
        assert_eq!((h.transaction, h.unit, h.pdu_len), (0x1234, 1, 5));
        assert_eq!(
            header(&[0, 1, 0, 1, 0, 6, 1]),
            Err(HeaderError::Protocol(1))
        );
        assert_eq!(header(&[0, 1, 0, 0, 0, 1, 1]), Err(HeaderError::Length(1)));
        assert_eq!(
            header(&[0, 1, 0, 0, 1, 0, 1]),
            Err(HeaderError::Length(256))
        );
        // The RTU form of the same request, as the spec's example CRC gives it.
        let r = rtu(1, &[0x03, 0x00, 0x00, 0x00, 0x02]);
        assert_eq!(r, [1, 3, 0, 0, 0, 2, 0xC4, 0x0B]);
        assert_eq!(from_rtu(&r), Some((1, &[3u8, 0, 0, 0, 2][..])));
        let mut bad = r.clone();
        bad[7] ^= 1;
        assert_eq!(from_rtu(&bad), None);
        assert_eq!(exception(3, 0x0B), [0x83, 0x0B]);
    }
}

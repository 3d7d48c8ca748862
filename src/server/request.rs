//! A client's request PDU, read strictly: the function, the table and the addresses it
//! touches, or the exception code the client gets. Only what the gateway can forward safely is
//! accepted: reads (functions 1-4) and writes (5, 6, 15, 16) whose counts, byte counts and
//! lengths agree and whose addresses stay within 0-65535. Written by hand rather than with
//! rmodbus's server parser, which lets through a write-multiple whose byte count disagrees with
//! its count, a count of 0 and a range past 65535: such a request must not reach the line,
//! where a device could take it in any way.

use crate::modbus::Table;

/// What a request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Op {
    /// Reads (1-4) or writes (5, 6, 15, 16).
    pub write: bool,
    /// The table it touches.
    pub table: Table,
    /// The first address.
    pub start: u16,
    /// Addresses touched (registers or bits), at least 1.
    pub count: u16,
}

/// Exception 1: the function is not served (or not allowed).
pub const ILLEGAL_FUNCTION: u8 = 0x01;
/// Exception 2: an address outside what may be reached.
pub const ILLEGAL_ADDRESS: u8 = 0x02;
/// Exception 3: a count, byte count or value the function does not allow.
pub const ILLEGAL_VALUE: u8 = 0x03;
/// Exception 6: busy (too many requests waiting, or the line was not free in time).
pub const BUSY: u8 = 0x06;
/// Exception 0x0A: no such unit behind this gateway.
pub const PATH_UNAVAILABLE: u8 = 0x0A;
/// Exception 0x0B: the unit did not answer.
pub const NO_ANSWER: u8 = 0x0B;

/// Reads a PDU (function code and data); Err is the exception code to answer with.
pub fn parse(pdu: &[u8]) -> Result<Op, u8> {
    let Some((&function, data)) = pdu.split_first() else {
        return Err(ILLEGAL_FUNCTION);
    };
    let word = |i: usize| data.get(i..i + 2).map(|b| u16::from_be_bytes([b[0], b[1]]));
    let (table, write, limit) = match function {
        1 => (Table::Coils, false, 2000),
        2 => (Table::Discretes, false, 2000),
        3 => (Table::Holding, false, 125),
        4 => (Table::Input, false, 125),
        5 => (Table::Coils, true, 1),
        6 => (Table::Holding, true, 1),
        15 => (Table::Coils, true, 1968),
        16 => (Table::Holding, true, 123),
        _ => return Err(ILLEGAL_FUNCTION),
    };
    let (Some(start), Some(second)) = (word(0), word(2)) else {
        return Err(ILLEGAL_VALUE);
    };
    let count = match function {
        1..=4 => {
            if data.len() != 4 {
                return Err(ILLEGAL_VALUE);
            }
            second
        }
        5 | 6 => {
            if data.len() != 4 || (function == 5 && second != 0x0000 && second != 0xFF00) {
                return Err(ILLEGAL_VALUE);
            }
            1
        }
        _ => {
            let bytes = usize::from(*data.get(4).ok_or(ILLEGAL_VALUE)?);
            let want = if table.bits() {
                usize::from(second).div_ceil(8)
            } else {
                usize::from(second) * 2
            };
            if bytes != want || data.len() != 5 + bytes {
                return Err(ILLEGAL_VALUE);
            }
            second
        }
    };
    if count == 0 || count > limit {
        return Err(ILLEGAL_VALUE);
    }
    if u32::from(start) + u32::from(count) > 0x1_0000 {
        return Err(ILLEGAL_ADDRESS);
    }
    Ok(Op {
        write,
        table,
        start,
        count,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_read_strictly() {
        let op = |write, table, start, count| {
            Ok(Op {
                write,
                table,
                start,
                count,
            })
        };
        assert_eq!(parse(&[3, 0, 10, 0, 2]), op(false, Table::Holding, 10, 2));
        assert_eq!(
            parse(&[1, 0, 0, 0x07, 0xD0]),
            op(false, Table::Coils, 0, 2000)
        );
        assert_eq!(parse(&[5, 0, 2, 0xFF, 0]), op(true, Table::Coils, 2, 1));
        assert_eq!(
            parse(&[6, 0, 1, 0x12, 0x34]),
            op(true, Table::Holding, 1, 1)
        );
        assert_eq!(
            parse(&[16, 0, 1, 0, 2, 4, 0, 1, 0, 2]),
            op(true, Table::Holding, 1, 2)
        );
        assert_eq!(
            parse(&[15, 0, 0, 0, 10, 2, 0xFF, 0x03]),
            op(true, Table::Coils, 0, 10)
        );
        // Refused, with the code a client understands.
        assert_eq!(parse(&[]), Err(ILLEGAL_FUNCTION));
        assert_eq!(
            parse(&[8, 0, 0, 0, 0]),
            Err(ILLEGAL_FUNCTION),
            "diagnostics"
        );
        assert_eq!(
            parse(&[0x2B, 0x0E, 1, 0]),
            Err(ILLEGAL_FUNCTION),
            "device id"
        );
        assert_eq!(parse(&[3, 0, 0, 0, 0]), Err(ILLEGAL_VALUE), "count 0");
        assert_eq!(
            parse(&[3, 0, 0, 0, 126]),
            Err(ILLEGAL_VALUE),
            "126 registers"
        );
        assert_eq!(parse(&[3, 0, 0, 0]), Err(ILLEGAL_VALUE), "short");
        assert_eq!(parse(&[3, 0, 0, 0, 1, 9]), Err(ILLEGAL_VALUE), "long");
        assert_eq!(
            parse(&[3, 0xFF, 0xFF, 0, 2]),
            Err(ILLEGAL_ADDRESS),
            "past 65535"
        );
        assert_eq!(
            parse(&[5, 0, 2, 0x12, 0x34]),
            Err(ILLEGAL_VALUE),
            "coil value"
        );
        assert_eq!(
            parse(&[16, 0, 1, 0, 2, 2, 0, 1]),
            Err(ILLEGAL_VALUE),
            "byte count"
        );
        assert_eq!(
            parse(&[16, 0, 1, 0, 1, 2, 0]),
            Err(ILLEGAL_VALUE),
            "data short"
        );
        assert_eq!(
            parse(&[15, 0, 0, 0, 9, 1, 0xFF]),
            Err(ILLEGAL_VALUE),
            "9 bits in 1 byte"
        );
    }
}

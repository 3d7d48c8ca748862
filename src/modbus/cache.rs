//! The latest registers each Modbus unit answered the gateway's own polls with, so the Modbus
//! TCP server can answer a client's read without spending bus time when the reading is young
//! enough. The bus fills it (one block per read request of the unit's plan, replaced by each
//! answer, so it is bounded by the plan); the server reads it. No I/O.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::Table;

/// One read request's answer.
#[derive(Debug)]
struct Block {
    table: Table,
    start: u16,
    count: u16,
    /// The answer's data: registers big-endian, or bits packed low bit first.
    data: Vec<u8>,
    at: Instant,
}

/// The blocks of every unit on one port, by its place on the port.
#[derive(Debug, Default)]
pub struct RegisterCache {
    members: Mutex<Vec<Vec<Block>>>,
}

impl RegisterCache {
    /// Records the answer `data` to a read of `count` entries of `table` from `start` by
    /// device `member`, received `at`.
    pub fn store(
        &self,
        member: usize,
        table: Table,
        start: u16,
        count: u16,
        data: &[u8],
        at: Instant,
    ) {
        let Ok(mut members) = self.members.lock() else {
            return;
        };
        if members.len() <= member {
            members.resize_with(member + 1, Vec::new);
        }
        let blocks = &mut members[member];
        let block = Block {
            table,
            start,
            count,
            data: data.to_vec(),
            at,
        };
        match blocks
            .iter_mut()
            .find(|b| (b.table, b.start, b.count) == (table, start, count))
        {
            Some(b) => *b = block,
            None => blocks.push(block),
        }
    }

    /// The answer data for a read of `count` entries of `table` from `start`, when one block
    /// younger than `max_age` covers it all.
    pub fn read(
        &self,
        member: usize,
        table: Table,
        start: u16,
        count: u16,
        max_age: Duration,
        now: Instant,
    ) -> Option<Vec<u8>> {
        let members = self.members.lock().ok()?;
        let (first, end) = (u32::from(start), u32::from(start) + u32::from(count));
        let b = members.get(member)?.iter().find(|b| {
            b.table == table
                && u32::from(b.start) <= first
                && end <= u32::from(b.start) + u32::from(b.count)
                && now.saturating_duration_since(b.at) < max_age
        })?;
        let offset = usize::from(start - b.start);
        let count = usize::from(count);
        if !table.bits() {
            return b
                .data
                .get(offset * 2..(offset + count) * 2)
                .map(<[u8]>::to_vec);
        }
        let mut out = vec![0u8; count.div_ceil(8)];
        for i in 0..count {
            let j = offset + i;
            if b.data.get(j / 8)? >> (j % 8) & 1 == 1 {
                out[i / 8] |= 1 << (i % 8);
            }
        }
        Some(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_inside_a_young_block_is_answered_and_others_are_not() {
        let c = RegisterCache::default();
        let t0 = Instant::now();
        c.store(1, Table::Holding, 10, 3, &[0, 1, 0, 2, 0, 3], t0);
        c.store(1, Table::Coils, 0, 10, &[0b1010_1100, 0b10], t0);
        let age = Duration::from_secs(1);
        assert_eq!(
            c.read(1, Table::Holding, 11, 2, age, t0),
            Some(vec![0, 2, 0, 3])
        );
        assert_eq!(
            c.read(1, Table::Holding, 12, 2, age, t0),
            None,
            "past its end"
        );
        assert_eq!(
            c.read(1, Table::Input, 10, 1, age, t0),
            None,
            "another table"
        );
        assert_eq!(
            c.read(0, Table::Holding, 10, 1, age, t0),
            None,
            "another unit"
        );
        assert_eq!(
            c.read(1, Table::Holding, 10, 1, age, t0 + age),
            None,
            "too old"
        );
        // Bits 2..=9 of 0b10_1010_1100: 1,1,0,1,0,1,0,1 → packed low bit first.
        assert_eq!(
            c.read(1, Table::Coils, 2, 8, age, t0),
            Some(vec![0b1010_1011])
        );
        // A new answer replaces the block.
        c.store(1, Table::Holding, 10, 3, &[0, 9, 0, 9, 0, 9], t0);
        assert_eq!(c.read(1, Table::Holding, 10, 1, age, t0), Some(vec![0, 9]));
    }
}

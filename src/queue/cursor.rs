//! The ack cursor: the highest sequence number the upstream broker acknowledged.
//!
//! One small file with two slots, 4 KiB apart, written in turn (in place, `sync_data`): each
//! write carries a generation number and a checksum, and reading takes the valid slot with the
//! highest generation. A crash in the middle of a write therefore leaves the other slot, the
//! previous value, intact; and unlike write-a-temporary-then-rename, a write touches one page
//! and no directory (SD cards wear by bytes written).

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::Path;

const NAME: &str = "acked";
/// The file of the sequence numbers reserved ahead of use (see [`super`]'s crash model).
pub const RESERVED: &str = "seq";
const MAGIC: &[u8; 4] = b"S2MA";
const SLOT: u64 = 4096;
const SLOT_LEN: usize = 24;

/// What reading the cursor found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    /// No cursor yet: nothing was ever acknowledged.
    Missing,
    /// A valid cursor.
    Acked(u64),
    /// The file exists but neither slot is valid: start over from the oldest record
    /// (duplicates, not loss).
    Corrupt,
}

fn encode(generation: u64, seq: u64) -> [u8; SLOT_LEN] {
    let mut b = [0u8; SLOT_LEN];
    b[..4].copy_from_slice(MAGIC);
    b[4..12].copy_from_slice(&generation.to_le_bytes());
    b[12..20].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32c::crc32c(&b[..20]);
    b[20..].copy_from_slice(&crc.to_le_bytes());
    b
}

/// `(generation, seq)` of a valid slot.
fn decode(b: &[u8]) -> Option<(u64, u64)> {
    let b: &[u8; SLOT_LEN] = b.get(..SLOT_LEN)?.try_into().ok()?;
    let crc = u32::from_le_bytes([b[20], b[21], b[22], b[23]]);
    if &b[..4] != MAGIC || crc32c::crc32c(&b[..20]) != crc {
        return None;
    }
    let word = |r: std::ops::Range<usize>| {
        let mut w = [0u8; 8];
        w.copy_from_slice(&b[r]);
        u64::from_le_bytes(w)
    };
    Some((word(4..12), word(12..20)))
}

/// The cursor file, kept open for cheap in-place writes.
pub struct CursorFile {
    file: File,
    generation: u64,
}

impl CursorFile {
    /// Opens (creating if needed) the cursor in `dir` and reads it.
    pub fn open(dir: &Path) -> io::Result<(Self, Loaded)> {
        Self::open_named(dir, NAME, "ack cursor")
    }

    /// Opens (creating if needed) a file of the same two-slot form named `name` in `dir`,
    /// `what` it holds saying why the name is taken.
    pub fn open_named(dir: &Path, name: &str, what: &str) -> io::Result<(Self, Loaded)> {
        let path = dir.join(name);
        let existed = match std::fs::symlink_metadata(&path) {
            Ok(m) if m.is_file() => true,
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidInput,
                    format!(
                        "{} is not a regular file: move it out of the queue directory (the gateway keeps its {what} under that name)",
                        path.display()
                    ),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", path.display()))),
        };
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        if !existed {
            file.set_len(2 * SLOT)?;
            file.sync_all()?;
            sync_dir(dir)?;
            return Ok((
                Self {
                    file,
                    generation: 0,
                },
                Loaded::Missing,
            ));
        }
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        let slots = [
            bytes.get(..SLOT_LEN),
            bytes.get(SLOT as usize..SLOT as usize + SLOT_LEN),
        ];
        let best = slots
            .iter()
            .filter_map(|s| s.and_then(decode))
            .max_by_key(|(g, _)| *g);
        let loaded = match best {
            Some((_, seq)) => Loaded::Acked(seq),
            None if bytes.iter().all(|b| *b == 0) => Loaded::Missing,
            None => Loaded::Corrupt,
        };
        let generation = best.map_or(0, |(g, _)| g);
        if bytes.len() < 2 * SLOT as usize {
            file.set_len(2 * SLOT)?;
        }
        Ok((Self { file, generation }, loaded))
    }

    /// Persists `seq`, durably, in the slot not holding the current value.
    pub fn store(&mut self, seq: u64) -> io::Result<()> {
        self.generation += 1;
        let slot = (self.generation % 2) * SLOT;
        self.file.seek(SeekFrom::Start(slot))?;
        self.file.write_all(&encode(self.generation, seq))?;
        self.file.sync_data()
    }
}

/// Makes a directory's entries (created, renamed, removed files) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(dir: &Path) -> Loaded {
        CursorFile::open(dir).unwrap().1
    }

    #[test]
    fn stores_and_loads_the_latest_value() {
        let dir = tempfile::tempdir().unwrap();
        let (mut c, first) = CursorFile::open(dir.path()).unwrap();
        assert_eq!(first, Loaded::Missing);
        assert_eq!(load(dir.path()), Loaded::Missing);
        for seq in [5, 9, 12345] {
            c.store(seq).unwrap();
            assert_eq!(load(dir.path()), Loaded::Acked(seq));
        }
        // Reopened, it goes on alternating from the right generation.
        let (mut c, _) = CursorFile::open(dir.path()).unwrap();
        c.store(20_000).unwrap();
        assert_eq!(load(dir.path()), Loaded::Acked(20_000));
    }

    #[test]
    fn a_torn_write_leaves_the_previous_value() {
        let dir = tempfile::tempdir().unwrap();
        let (mut c, _) = CursorFile::open(dir.path()).unwrap();
        c.store(100).unwrap();
        c.store(200).unwrap(); // generation 2: slot 0
        let path = dir.path().join(NAME);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[14] ^= 0x01; // damage the newest slot's sequence number
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(load(dir.path()), Loaded::Acked(100));
    }

    #[test]
    fn damage_everywhere_is_reported_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let (mut c, _) = CursorFile::open(dir.path()).unwrap();
        c.store(99).unwrap();
        std::fs::write(dir.path().join(NAME), b"garbage").unwrap();
        assert_eq!(load(dir.path()), Loaded::Corrupt);
    }
}

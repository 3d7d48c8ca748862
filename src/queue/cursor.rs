//! The ack cursor: the highest sequence number the upstream broker acknowledged, persisted
//! atomically (write a temporary file, sync it, rename it over the old one, sync the directory),
//! so a crash leaves either the old or the new value, never a torn one.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::Path;

const NAME: &str = "acked";
const TMP: &str = "acked.tmp";
const MAGIC: &[u8; 4] = b"S2MA";

/// What reading the cursor found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Loaded {
    /// No cursor yet: nothing was ever acknowledged.
    Missing,
    /// A valid cursor.
    Acked(u64),
    /// The file exists but is damaged: start over from the oldest record (duplicates, not loss).
    Corrupt,
}

fn encode(seq: u64) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[..4].copy_from_slice(MAGIC);
    b[4..12].copy_from_slice(&seq.to_le_bytes());
    let crc = crc32c::crc32c(&b[..12]);
    b[12..].copy_from_slice(&crc.to_le_bytes());
    b
}

/// Reads the cursor in `dir`.
pub fn load(dir: &Path) -> io::Result<Loaded> {
    let bytes = match fs::read(dir.join(NAME)) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Loaded::Missing),
        Err(e) => return Err(e),
    };
    let Ok(b) = <[u8; 16]>::try_from(bytes.as_slice()) else {
        return Ok(Loaded::Corrupt);
    };
    let crc = u32::from_le_bytes([b[12], b[13], b[14], b[15]]);
    if &b[..4] != MAGIC || crc32c::crc32c(&b[..12]) != crc {
        return Ok(Loaded::Corrupt);
    }
    let mut seq = [0u8; 8];
    seq.copy_from_slice(&b[4..12]);
    Ok(Loaded::Acked(u64::from_le_bytes(seq)))
}

/// Persists `seq` as the cursor in `dir`, atomically and durably.
pub fn store(dir: &Path, seq: u64) -> io::Result<()> {
    let tmp = dir.join(TMP);
    let mut f = File::create(&tmp)?;
    f.write_all(&encode(seq))?;
    f.sync_data()?;
    drop(f);
    fs::rename(&tmp, dir.join(NAME))?;
    sync_dir(dir)
}

/// Makes a directory's entries (created, renamed, removed files) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()).unwrap(), Loaded::Missing);
        store(dir.path(), 12345).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Loaded::Acked(12345));
        store(dir.path(), 12346).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Loaded::Acked(12346));
        assert!(!dir.path().join(TMP).exists());
    }

    #[test]
    fn damage_is_reported_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        store(dir.path(), 99).unwrap();
        let path = dir.path().join(NAME);
        let mut b = fs::read(&path).unwrap();
        b[6] ^= 0x10;
        fs::write(&path, &b).unwrap();
        assert_eq!(load(dir.path()).unwrap(), Loaded::Corrupt);
        fs::write(&path, b"short").unwrap();
        assert_eq!(load(dir.path()).unwrap(), Loaded::Corrupt);
    }
}

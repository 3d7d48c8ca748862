//! The segment being written: records go at the end of its data by positioned writes, into
//! space allocated ahead in steps of [`STEP`], so that a group commit changes no file metadata
//! (no new size, no new block): `fdatasync` then writes the data page and no journal commit.
//! Where allocating ahead is not supported (some FUSE and network filesystems), writes extend
//! the file as plain appends did.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Bytes allocated ahead at a time: one metadata change per this many bytes of records.
pub const STEP: u64 = 1 << 20;

/// The active segment's file and how far it is allocated.
pub struct Active {
    file: File,
    /// The file's size: bytes allocated (zeros on disk past the data).
    allocated: u64,
    /// Allocating ahead works here.
    ahead: bool,
}

impl Active {
    /// `file` holds `len` bytes (data, or data and space allocated ahead).
    pub fn new(file: File, len: u64) -> Self {
        Self {
            file,
            allocated: len,
            ahead: true,
        }
    }

    /// Writes `buf` at `at`, first allocating ahead up to `limit` (the segment's size) when
    /// the write would pass what is allocated.
    pub fn write_at(&mut self, buf: &[u8], at: u64, limit: u64) -> io::Result<()> {
        let end = at + buf.len() as u64;
        if self.ahead && end > self.allocated {
            let want = end.div_ceil(STEP).saturating_mul(STEP).min(limit.max(end));
            match rustix::fs::fallocate(
                &self.file,
                rustix::fs::FallocateFlags::empty(),
                self.allocated,
                want - self.allocated,
            ) {
                Ok(()) => self.allocated = want,
                // No room for a whole step: the write itself says whether the bytes fit.
                Err(rustix::io::Errno::NOSPC) => {}
                Err(_) => self.ahead = false,
            }
        }
        self.file.write_all_at(buf, at)?;
        self.allocated = self.allocated.max(end);
        Ok(())
    }

    /// Whether the bytes up to `end` are allocated and never written (they read as zeros).
    pub fn zeros_up_to(&self, end: u64) -> bool {
        self.ahead && end <= self.allocated
    }

    /// Cuts the file to `len` bytes (after a failed write, or a failed fsync).
    pub fn cut(&mut self, len: u64) -> io::Result<()> {
        self.file.set_len(len)?;
        self.allocated = len;
        Ok(())
    }

    /// Gives back the space allocated past `len` when the segment is finished (best effort:
    /// zeros past the data read as padding).
    pub fn finish(&mut self, len: u64) {
        if self.allocated > len && self.file.set_len(len).is_ok() {
            self.allocated = len;
        }
    }

    /// `fdatasync`.
    pub fn sync_data(&self) -> io::Result<()> {
        self.file.sync_data()
    }

    /// `fsync`.
    pub fn sync_all(&self) -> io::Result<()> {
        self.file.sync_all()
    }
}

//! Segment files: size-capped pieces of the log, named by the sequence number of their first
//! record (`00000000000000000001.seg`), starting with an 8-byte magic.

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::path::{Path, PathBuf};

use super::record::{self, Invalid, Record, HEADER};

/// First bytes of every segment file (format version 1).
pub const MAGIC: &[u8; 8] = b"S2MQSEG1";
/// Largest record body accepted when reading: MQTT's largest packet plus room for the topic.
pub const MAX_BODY: usize = 256 * 1024 * 1024 + 64 * 1024;

/// The file name of the segment whose first record is `first`.
pub fn file_name(first: u64) -> String {
    format!("{first:020}.seg")
}

/// The first sequence number encoded in a segment file name.
pub fn parse_name(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The segment files in `dir`, oldest first.
pub fn list(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if let Some(first) = parse_name(&path) {
            out.push((first, path));
        }
    }
    out.sort_by_key(|(first, _)| *first);
    Ok(out)
}

/// What a scan of one segment found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Scan {
    /// Bytes up to the end of the last valid record (at least the magic).
    pub valid_len: u64,
    /// Valid records.
    pub records: u64,
    /// Sequence number of the last valid record.
    pub last_seq: Option<u64>,
    /// Why the scan stopped before the end of the file, if it did.
    pub stopped: Option<Invalid>,
    /// The file's length.
    pub file_len: u64,
}

/// Reads records one by one from a segment file.
pub struct SegmentReader {
    reader: BufReader<File>,
    offset: u64,
    body: Vec<u8>,
}

impl SegmentReader {
    /// Opens `path` and checks its magic; `Ok(None)` when the magic is wrong or missing.
    pub fn open(path: &Path) -> io::Result<Option<Self>> {
        let mut reader = BufReader::with_capacity(64 * 1024, File::open(path)?);
        let mut magic = [0u8; 8];
        match reader.read_exact(&mut magic) {
            Ok(()) if &magic == MAGIC => {}
            Ok(()) => return Ok(None),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e),
        }
        Ok(Some(Self {
            reader,
            offset: MAGIC.len() as u64,
            body: Vec::new(),
        }))
    }

    /// Byte offset of the next record.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// The next record: `Ok(None)` at a clean end of file, `Err(Invalid)` for a torn or corrupt one.
    pub fn next_record(&mut self) -> io::Result<Result<Option<Record>, Invalid>> {
        self.body.clear();
        self.body.resize(HEADER, 0);
        let got = read_full(&mut self.reader, &mut self.body)?;
        if got == 0 {
            return Ok(Ok(None));
        }
        if got < HEADER {
            return Ok(Err(Invalid::Truncated));
        }
        let Some(len) = record::announced_len(&self.body) else {
            return Ok(Err(Invalid::Truncated));
        };
        if len > MAX_BODY {
            return Ok(Err(Invalid::BadLength));
        }
        self.body.resize(HEADER + len, 0);
        let got = read_full(&mut self.reader, &mut self.body[HEADER..])?;
        if got < len {
            return Ok(Err(Invalid::Truncated));
        }
        match record::decode(&self.body, MAX_BODY) {
            Ok((rec, size)) => {
                self.offset += size as u64;
                Ok(Ok(Some(rec)))
            }
            Err(e) => Ok(Err(e)),
        }
    }
}

/// Reads until `buf` is full or end of file; returns the bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

/// Scans a whole segment, checking every record and that sequence numbers run on from `first`.
pub fn scan(path: &Path, first: u64) -> io::Result<Scan> {
    let file_len = std::fs::metadata(path)?.len();
    let Some(mut reader) = SegmentReader::open(path)? else {
        return Ok(Scan {
            valid_len: 0,
            records: 0,
            last_seq: None,
            stopped: Some(Invalid::BadBody),
            file_len,
        });
    };
    let mut scan = Scan {
        valid_len: reader.offset(),
        records: 0,
        last_seq: None,
        stopped: None,
        file_len,
    };
    loop {
        let before = reader.offset();
        match reader.next_record()? {
            Ok(None) => break,
            Ok(Some(rec)) => {
                let expected = scan.last_seq.map_or(first, |s| s + 1);
                if rec.seq != expected {
                    scan.valid_len = before;
                    scan.stopped = Some(Invalid::BadBody);
                    break;
                }
                scan.records += 1;
                scan.last_seq = Some(rec.seq);
                scan.valid_len = reader.offset();
            }
            Err(why) => {
                scan.valid_len = before;
                scan.stopped = Some(why);
                break;
            }
        }
    }
    Ok(scan)
}

//! Segment files: size-capped pieces of the log, named by the sequence number of their first
//! record (`00000000000000000001.seg`), starting with an 8-byte magic.
//!
//! Between records a segment may hold *padding*: zero bytes from a record boundary up to the next
//! [`PAGE`] boundary, announced by a zero length (never a valid record's). A group commit pads
//! when that costs little space, so that the next commit starts on a fresh page and the storage
//! does not rewrite the same half-filled page at every commit (SD cards wear by bytes written).

use std::fs::File;
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::record::{self, Invalid, Record, HEADER};

/// First bytes of every segment file (format version 1).
pub const MAGIC: &[u8; 8] = b"S2MQSEG1";
/// Largest record body accepted when reading: MQTT's largest packet plus room for the topic.
pub const MAX_BODY: usize = 256 * 1024 * 1024 + 64 * 1024;
/// The storage page that padding aligns the next commit to.
pub const PAGE: u64 = 4096;
/// Bytes that announce padding (a zero record length); less room than this is never padded.
pub const PAD_MARK: u64 = 4;

/// Where padding that starts at `offset` ends: the first page boundary after the mark.
pub fn padding_end(offset: u64) -> u64 {
    (offset + PAD_MARK).div_ceil(PAGE) * PAGE
}

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

/// The segment files in `dir`, oldest first (regular files only: see [`strays`]).
pub fn list(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    Ok(named(dir)?.0)
}

/// Entries named like segments that are not regular files (a directory, a symlink, a device):
/// never read, never replaced; their names still count for numbering.
pub fn strays(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    Ok(named(dir)?.1)
}

/// Segment names with their paths, oldest first.
type Named = Vec<(u64, PathBuf)>;

/// Entries named like segments, oldest first: (regular files, everything else).
fn named(dir: &Path) -> io::Result<(Named, Named)> {
    let (mut files, mut others) = (Vec::new(), Vec::new());
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let path = entry.path();
        if let Some(first) = parse_name(&path) {
            if entry.file_type()?.is_file() {
                files.push((first, path));
            } else {
                others.push((first, path));
            }
        }
    }
    files.sort_by_key(|(first, _)| *first);
    others.sort_by_key(|(first, _)| *first);
    Ok((files, others))
}

/// The first sequence numbers of the segments set aside as `*.seg.corrupt` in `dir`: numbers
/// below them were given out, so numbering never goes back below them.
pub fn set_aside_firsts(dir: &Path) -> io::Result<Vec<u64>> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if let Some(first) = path
            .to_str()
            .and_then(|p| p.strip_suffix(".corrupt"))
            .and_then(|p| parse_name(Path::new(p)))
        {
            out.push(first);
        }
    }
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
    /// Damaged stretches that valid records follow (skipped, not truncated).
    pub damaged: u64,
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

    /// Opens `path` to read the records from byte `offset` on (a record boundary past the
    /// magic); `Ok(None)` when the magic is wrong or missing.
    pub fn open_at(path: &Path, offset: u64) -> io::Result<Option<Self>> {
        let Some(mut r) = Self::open(path)? else {
            return Ok(None);
        };
        if offset > r.offset {
            r.reader.seek(SeekFrom::Start(offset))?;
            r.offset = offset;
        }
        Ok(Some(r))
    }

    /// Byte offset of the next record.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// Forgets what was read ahead: the segment being written may have grown into space that
    /// was read as zeros (allocated ahead) since.
    pub fn refresh(&mut self) -> io::Result<()> {
        self.reader.seek(SeekFrom::Start(self.offset))?;
        Ok(())
    }

    /// The next record: `Ok(None)` at a clean end of file, `Err(Invalid)` for a torn or corrupt
    /// one (the offset then stays at its start). Padding is skipped.
    pub fn next_record(&mut self) -> io::Result<Result<Option<Record>, Invalid>> {
        loop {
            self.body.clear();
            self.body.resize(PAD_MARK as usize, 0);
            let got = read_full(&mut self.reader, &mut self.body)?;
            if got == 0 {
                return Ok(Ok(None));
            }
            if got < PAD_MARK as usize {
                return self.rewind(Invalid::Truncated);
            }
            let Some(len) = record::announced_len(&self.body) else {
                return self.rewind(Invalid::Truncated);
            };
            if len == 0 {
                let end = padding_end(self.offset);
                self.body.resize((end - self.offset) as usize, 0);
                let want = self.body.len() - PAD_MARK as usize;
                let got = read_full(&mut self.reader, &mut self.body[PAD_MARK as usize..])?;
                if got < want {
                    return self.rewind(Invalid::Truncated);
                }
                if self.body.iter().any(|&b| b != 0) {
                    return self.rewind(Invalid::BadBody);
                }
                self.offset = end;
                continue;
            }
            if len > MAX_BODY {
                return self.rewind(Invalid::BadLength);
            }
            self.body.resize(HEADER + len, 0);
            let got = read_full(&mut self.reader, &mut self.body[PAD_MARK as usize..])?;
            if got < HEADER + len - PAD_MARK as usize {
                return self.rewind(Invalid::Truncated);
            }
            return match record::decode(&self.body, MAX_BODY) {
                Ok((rec, size)) => {
                    self.offset += size as u64;
                    Ok(Ok(Some(rec)))
                }
                Err(e) => self.rewind(e),
            };
        }
    }

    /// Puts the file position back at the start of the invalid record and reports it.
    fn rewind(&mut self, why: Invalid) -> io::Result<Result<Option<Record>, Invalid>> {
        self.reader.seek(SeekFrom::Start(self.offset))?;
        Ok(Err(why))
    }

    /// After an invalid record, finds the next valid one: the first offset past the current
    /// one where a record with a matching checksum and a sequence number in `seqs` starts.
    /// Reading continues there; `None` (and the position unchanged) when there is none.
    ///
    /// Cheap on garbage: a candidate's checksum is computed only when its length fits in the
    /// file and its sequence number is in range, which random bytes almost never are.
    pub fn resync(&mut self, seqs: Range<u64>) -> io::Result<Option<u64>> {
        let file = self.reader.get_ref();
        let file_len = file.metadata()?.len();
        let mut window = vec![0u8; 64 * 1024];
        let mut candidate = Vec::new();
        let mut pos = self.offset + 1;
        while pos + HEADER as u64 <= file_len {
            let n = read_full_at(file, &mut window, pos)?;
            if n < HEADER {
                break;
            }
            for i in 0..=n - HEADER {
                let h = &window[i..i + HEADER];
                let len = u32::from_le_bytes([h[0], h[1], h[2], h[3]]) as u64;
                let mut seq = [0u8; 8];
                seq.copy_from_slice(&h[8..16]);
                let seq = u64::from_le_bytes(seq);
                let at = pos + i as u64;
                if len < 4
                    || len > MAX_BODY as u64
                    || at + HEADER as u64 + len > file_len
                    || !seqs.contains(&seq)
                {
                    continue;
                }
                candidate.resize(HEADER + len as usize, 0);
                if read_full_at(file, &mut candidate, at)? < candidate.len() {
                    continue;
                }
                if record::decode(&candidate, MAX_BODY).is_ok() {
                    self.reader.seek(SeekFrom::Start(at))?;
                    self.offset = at;
                    return Ok(Some(seq));
                }
            }
            pos += (n - HEADER + 1) as u64;
        }
        Ok(None)
    }
}

/// Reads at `offset` until `buf` is full or end of file; returns the bytes read.
fn read_full_at(file: &File, buf: &mut [u8], offset: u64) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match file.read_at(&mut buf[n..], offset + n as u64) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
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

/// Scans a whole segment, checking every record and that sequence numbers grow from `first`.
/// A damaged stretch that valid records follow is skipped (and counted); one that nothing valid
/// follows is a torn tail, and `valid_len` ends before it.
pub fn scan(path: &Path, first: u64) -> io::Result<Scan> {
    let file_len = std::fs::metadata(path)?.len();
    let Some(mut reader) = SegmentReader::open(path)? else {
        return Ok(Scan {
            valid_len: 0,
            records: 0,
            last_seq: None,
            stopped: Some(Invalid::BadBody),
            damaged: 0,
            file_len,
        });
    };
    let mut scan = Scan {
        valid_len: reader.offset(),
        records: 0,
        last_seq: None,
        stopped: None,
        damaged: 0,
        file_len,
    };
    loop {
        let next = scan.last_seq.map_or(first, |s| s + 1);
        let why = match reader.next_record()? {
            Ok(None) => {
                scan.valid_len = reader.offset();
                break;
            }
            Ok(Some(rec)) if rec.seq >= next => {
                scan.records += 1;
                scan.last_seq = Some(rec.seq);
                scan.valid_len = reader.offset();
                continue;
            }
            Ok(Some(_)) => Invalid::BadBody,
            Err(why) => why,
        };
        // At most one record per smallest record size can follow the damage.
        let room = (file_len - reader.offset()) / record::MIN_LEN as u64 + 1;
        if reader.resync(next..next + room)?.is_some() {
            scan.damaged += 1;
            continue;
        }
        scan.valid_len = reader.offset();
        scan.stopped = Some(why);
        break;
    }
    Ok(scan)
}

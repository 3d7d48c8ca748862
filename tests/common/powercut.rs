//! A filesystem for tests that loses every write that was not fsynced: a power cut on demand.
//!
//! Why: on a real disk a crash-safety test proves little. The page cache survives a SIGKILL, so
//! a program that never calls `fsync` passes every "kill it and restart" test. This module uses
//! LazyFS's technique instead: a FUSE filesystem, served from a background thread of the test
//! process, keeps every file and directory in memory twice, as processes see it (*current*) and
//! as it would be found after a power failure (*durable*). The real binary keeps its state on
//! the mount; the test kills it, calls [`PowerCutFs::cut`], and restarts it on what a disk would
//! really have kept. `fuser` mounts it through the mount syscall directly (root, no libfuse).
//!
//! The model, exactly:
//! - **Files.** Reads, writes and truncations (`setattr` size) change the current content
//!   (bytes and length) at once. `fsync`/`fdatasync` of any descriptor of the file makes its
//!   current content durable. Byte ranges written or truncated since the last sync are tracked
//!   (for torn syncs). File metadata (mode, owner, times) is not modelled: it is always kept.
//! - **Directories, relaxed mode** (the default): create, mknod, mkdir, rename, unlink and rmdir
//!   are durable at once; only file data waits for `fsync`. A file created and never synced
//!   survives a cut with length 0.
//! - **Directories, strict mode** ([`Options::strict`]): every directory's entries (name →
//!   inode) have a current and a durable version, and `fsync` of the directory (`fsyncdir`)
//!   makes all its current entries durable. So a created and fsynced file whose directory was
//!   never synced is gone after a cut; a rename or unlink not followed by a sync of the directory
//!   is undone (across directories each side counts alone: syncing only the target leaves the
//!   file under both names, syncing only the source loses it); a new subdirectory exists after
//!   a cut only once its parent was synced.
//! - **Liar mode** ([`Options::liar`], with either): `fsync` and `fsyncdir` succeed and make
//!   nothing durable, like a disk that ignores flushes. A durability test that still passes in
//!   liar mode is not testing durability.
//! - **Cut** ([`PowerCutFs::cut`]): every process using the mount has been killed and reaped.
//!   The FUSE session is unmounted, every inode goes back to its durable state, inodes no longer
//!   reachable from the root through durable entries are dropped (a directory reachable through
//!   two durable entries keeps the first in name order), and the same path is mounted again,
//!   which also drops every kernel cache.
//! - **A cut inside a chosen sync** ([`PowerCutFs::arm`]): the trigger sees every `fsync` and
//!   `fsyncdir` request before it takes effect. When it answers [`When::Before`] the sync takes no
//!   effect, [`When::After`] it takes full effect, [`When::Torn`] only part of it: of the file's
//!   dirty 4 KiB pages, the first half in file order (at least one, never all when there are 2+);
//!   of a single dirty page, the first half of the bytes written to it; of a strict directory's
//!   pending entry changes, the first half in name order. A torn sync never applies a shrink, and
//!   with a single dirty byte or a single pending entry it applies nothing. Then, still holding
//!   the state lock (so that what is durable at the kill is exactly what the model says), the
//!   handler SIGKILLs the victim, marks the filesystem *fired* and replies EIO; from then on every
//!   request but release/forget fails with EIO until the cut, so the dying process changes
//!   nothing. Liar mode wins over the trigger: nothing becomes durable. [`When::Fail`] is no
//!   cut: the sync replies EIO and its pending data is forgotten (neither durable nor dirty, as
//!   Linux marks pages clean after a writeback error), so a retried sync writes nothing.
//!
//! The kernel must not hide the model: entries and attributes have a TTL of 0 and files are opened
//! with `FOPEN_DIRECT_IO`, so every read and write reaches the handler (writes arrive with their
//! offset; for `O_APPEND` the kernel takes it from the size it knows, which is kept exact).
//! `flock(2)` and POSIX locks are left to the kernel (no lock capability is requested), which
//! handles them locally on the mount. Inode numbers are never reused within a [`PowerCutFs`].
//! The trigger runs inside the FUSE handler with the state lock held: it must not touch the mount.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::panic::AssertUnwindSafe;
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime};

use fuser::consts::FOPEN_DIRECT_IO;
use fuser::{
    FileAttr, FileType, Filesystem, MountOption, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory,
    ReplyEmpty, ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, Session, SessionUnmounter,
    TimeOrNow,
};
use libc::c_int;

const ROOT: u64 = fuser::FUSE_ROOT_ID;
const PAGE: u64 = 4096;
const TTL: Duration = Duration::ZERO;
/// Files are kept in memory: refuse to grow one past this (EFBIG).
const MAX_FILE: u64 = 1 << 32;
const NAME_MAX: usize = 255;

/// How the filesystem treats directory changes and syncs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Options {
    /// Directory entries are durable only after an `fsync` of their directory.
    pub strict: bool,
    /// `fsync`/`fsyncdir` succeed but make nothing durable.
    pub liar: bool,
}

/// Which kind of sync request the trigger is looking at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OpKind {
    /// `fsync` or `fdatasync` of a file.
    Fsync,
    /// `fsync` of a directory.
    FsyncDir,
}

/// A sync request, as shown to the trigger before it takes effect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Op {
    /// File or directory sync.
    pub kind: OpKind,
    /// Path relative to the mount root ("" is the root itself).
    pub path: PathBuf,
    /// `fdatasync` rather than `fsync`.
    pub datasync: bool,
    /// 0-based count of fsync+fsyncdir requests since this mount (reset by a cut).
    pub index: u64,
    /// The requesting thread's id (the process id for a single-threaded caller).
    pub pid: u32,
}

/// Where, relative to the chosen sync, the power is cut.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum When {
    /// The sync takes no effect.
    Before,
    /// The sync takes full effect.
    After,
    /// The sync takes partial effect (see the module doc).
    Torn,
    /// No power cut: the sync fails with EIO and, as Linux does after a writeback error, the
    /// data it should have written is forgotten (marked clean, not durable), so a retried sync
    /// "succeeds" without writing it (Rebello et al., ATC'20). The victim is not killed.
    Fail,
}

/// The trigger given to [`PowerCutFs::arm`]: `Some` cuts the power inside this sync.
pub type Trigger = Box<dyn FnMut(&Op) -> Option<When> + Send>;

/// A mutating operation, as the filesystem received it (paths relative to the mount root).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LoggedOp {
    /// A regular file was created (create or mknod).
    Create { path: PathBuf },
    /// A directory was created.
    Mkdir { path: PathBuf },
    /// Bytes were written at an offset.
    Write {
        path: PathBuf,
        offset: u64,
        len: u64,
    },
    /// The size was set (truncate, ftruncate, open with O_TRUNC).
    SetSize { path: PathBuf, size: u64 },
    /// A name was moved (possibly replacing the target).
    Rename { from: PathBuf, to: PathBuf },
    /// A file was unlinked.
    Unlink { path: PathBuf },
    /// A directory was removed.
    Rmdir { path: PathBuf },
    /// A file was synced (`datasync` for fdatasync).
    Fsync { path: PathBuf, datasync: bool },
    /// A directory was synced.
    FsyncDir { path: PathBuf },
}

/// Sorted, disjoint, non-adjacent byte ranges `[start, end)`.
#[derive(Default, Clone, Debug)]
struct Ranges(Vec<(u64, u64)>);

impl Ranges {
    fn insert(&mut self, start: u64, end: u64) {
        if start >= end {
            return;
        }
        let (mut s, mut e) = (start, end);
        let mut out = Vec::with_capacity(self.0.len() + 1);
        let mut placed = false;
        for &(a, b) in &self.0 {
            if b < s {
                out.push((a, b));
            } else if a > e {
                if !placed {
                    out.push((s, e));
                    placed = true;
                }
                out.push((a, b));
            } else {
                s = s.min(a);
                e = e.max(b);
            }
        }
        if !placed {
            out.push((s, e));
        }
        self.0 = out;
    }
}

enum Node {
    File {
        cur: Vec<u8>,
        dur: Vec<u8>,
        /// Where `cur` may differ from `dur` (writes, truncations, extensions since the last sync).
        dirty: Ranges,
    },
    Dir {
        cur: BTreeMap<OsString, u64>,
        dur: BTreeMap<OsString, u64>,
    },
}

struct Inode {
    node: Node,
    perm: u16,
    uid: u32,
    gid: u32,
    atime: SystemTime,
    mtime: SystemTime,
    ctime: SystemTime,
    /// Where it was last linked (current tree): for paths and "..".
    parent: u64,
    name: OsString,
    /// Current entries naming it (files).
    nlink: u32,
    /// Open file descriptions (kernel handles).
    open: u32,
}

impl Inode {
    fn new(node: Node, perm: u16, uid: u32, gid: u32, parent: u64, name: OsString) -> Self {
        let now = SystemTime::now();
        Inode {
            node,
            perm,
            uid,
            gid,
            atime: now,
            mtime: now,
            ctime: now,
            parent,
            name,
            nlink: 1,
            open: 0,
        }
    }

    fn kind(&self) -> FileType {
        match self.node {
            Node::File { .. } => FileType::RegularFile,
            Node::Dir { .. } => FileType::Directory,
        }
    }
}

struct Handle {
    ino: u64,
    /// A directory's listing, taken at opendir and at each readdir from offset 0.
    listing: Vec<(u64, FileType, OsString)>,
}

struct Armed {
    victim: u32,
    trigger: Trigger,
}

struct State {
    opts: Options,
    inodes: HashMap<u64, Inode>,
    next_ino: u64,
    handles: HashMap<u64, Handle>,
    next_fh: u64,
    /// Bumped by every cut: a handler of an older mount answers EIO to everything.
    generation: u64,
    fired: bool,
    armed: Option<Armed>,
    sync_index: u64,
    ops: Vec<LoggedOp>,
    cuts: u64,
}

struct Shared {
    state: Mutex<State>,
    fired: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

type Res<T> = Result<T, c_int>;

fn check_name(name: &OsStr) -> Res<()> {
    if name.len() > NAME_MAX {
        Err(libc::ENAMETOOLONG)
    } else {
        Ok(())
    }
}

fn time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

impl State {
    fn new(opts: Options) -> Self {
        let mut root = Inode::new(
            Node::Dir {
                cur: BTreeMap::new(),
                dur: BTreeMap::new(),
            },
            0o755,
            // SAFETY: getuid/getgid cannot fail.
            unsafe { libc::getuid() },
            unsafe { libc::getgid() },
            ROOT,
            OsString::new(),
        );
        root.nlink = 2;
        State {
            opts,
            inodes: HashMap::from([(ROOT, root)]),
            next_ino: ROOT + 1,
            handles: HashMap::new(),
            next_fh: 1,
            generation: 0,
            fired: false,
            armed: None,
            sync_index: 0,
            ops: Vec::new(),
            cuts: 0,
        }
    }

    fn node(&self, ino: u64) -> Res<&Inode> {
        self.inodes.get(&ino).ok_or(libc::ENOENT)
    }

    fn node_mut(&mut self, ino: u64) -> Res<&mut Inode> {
        self.inodes.get_mut(&ino).ok_or(libc::ENOENT)
    }

    fn entries(&self, dir: u64) -> Res<&BTreeMap<OsString, u64>> {
        match &self.node(dir)?.node {
            Node::Dir { cur, .. } => Ok(cur),
            Node::File { .. } => Err(libc::ENOTDIR),
        }
    }

    fn child(&self, dir: u64, name: &OsStr) -> Res<u64> {
        self.entries(dir)?.get(name).copied().ok_or(libc::ENOENT)
    }

    fn is_dir(&self, ino: u64) -> bool {
        matches!(
            self.inodes.get(&ino).map(|n| &n.node),
            Some(Node::Dir { .. })
        )
    }

    fn attr(&self, ino: u64) -> Res<FileAttr> {
        let n = self.node(ino)?;
        let (size, nlink) = match &n.node {
            Node::File { cur, .. } => (cur.len() as u64, n.nlink),
            Node::Dir { cur, .. } => {
                let subdirs = cur.values().filter(|&&c| self.is_dir(c)).count() as u32;
                (0, 2 + subdirs)
            }
        };
        Ok(FileAttr {
            ino,
            size,
            blocks: size.div_ceil(512),
            atime: n.atime,
            mtime: n.mtime,
            ctime: n.ctime,
            crtime: n.ctime,
            kind: n.kind(),
            perm: n.perm,
            nlink,
            uid: n.uid,
            gid: n.gid,
            rdev: 0,
            blksize: PAGE as u32,
            flags: 0,
        })
    }

    /// The path it was last linked at, relative to the root.
    fn path_of(&self, ino: u64) -> PathBuf {
        let mut names = Vec::new();
        let mut at = ino;
        while at != ROOT && names.len() < 4096 {
            let Some(n) = self.inodes.get(&at) else { break };
            names.push(n.name.clone());
            at = n.parent;
        }
        names.iter().rev().collect()
    }

    fn child_path(&self, dir: u64, name: &OsStr) -> PathBuf {
        self.path_of(dir).join(name)
    }

    /// Sets (or with `None` removes) a current entry; in relaxed mode the durable one too.
    fn set_entry(&mut self, dir: u64, name: &OsStr, ino: Option<u64>) -> Res<Option<u64>> {
        let strict = self.opts.strict;
        let d = self.node_mut(dir)?;
        let Node::Dir { cur, dur } = &mut d.node else {
            return Err(libc::ENOTDIR);
        };
        let old = match ino {
            Some(i) => cur.insert(name.to_owned(), i),
            None => cur.remove(name),
        };
        if !strict {
            match ino {
                Some(i) => dur.insert(name.to_owned(), i),
                None => dur.remove(name),
            };
        }
        let now = SystemTime::now();
        d.mtime = now;
        d.ctime = now;
        Ok(old)
    }

    fn new_node(
        &mut self,
        parent: u64,
        name: &OsStr,
        node: Node,
        perm: u16,
        req: &Request<'_>,
    ) -> Res<u64> {
        check_name(name)?;
        if self.entries(parent)?.contains_key(name) {
            return Err(libc::EEXIST);
        }
        let ino = self.next_ino;
        self.next_ino += 1;
        let inode = Inode::new(node, perm, req.uid(), req.gid(), parent, name.to_owned());
        self.inodes.insert(ino, inode);
        self.set_entry(parent, name, Some(ino))?;
        Ok(ino)
    }

    fn create_file(
        &mut self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        req: &Request<'_>,
    ) -> Res<u64> {
        let kind = mode & libc::S_IFMT;
        if kind != 0 && kind != libc::S_IFREG {
            return Err(libc::EPERM);
        }
        let node = Node::File {
            cur: Vec::new(),
            dur: Vec::new(),
            dirty: Ranges::default(),
        };
        let ino = self.new_node(parent, name, node, (mode & !umask & 0o7777) as u16, req)?;
        self.ops.push(LoggedOp::Create {
            path: self.path_of(ino),
        });
        Ok(ino)
    }

    fn mkdir(
        &mut self,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        req: &Request<'_>,
    ) -> Res<u64> {
        let node = Node::Dir {
            cur: BTreeMap::new(),
            dur: BTreeMap::new(),
        };
        let ino = self.new_node(parent, name, node, (mode & !umask & 0o7777) as u16, req)?;
        self.ops.push(LoggedOp::Mkdir {
            path: self.path_of(ino),
        });
        Ok(ino)
    }

    fn open(&mut self, ino: u64, dir: bool) -> Res<u64> {
        let is_dir = self.is_dir(ino);
        match (self.node(ino).is_ok(), dir, is_dir) {
            (false, _, _) => return Err(libc::ENOENT),
            (true, true, false) => return Err(libc::ENOTDIR),
            (true, false, true) => return Err(libc::EISDIR),
            _ => {}
        }
        let listing = if dir { self.listing(ino)? } else { Vec::new() };
        self.node_mut(ino)?.open += 1;
        let fh = self.next_fh;
        self.next_fh += 1;
        self.handles.insert(fh, Handle { ino, listing });
        Ok(fh)
    }

    fn release(&mut self, fh: u64) {
        if let Some(h) = self.handles.remove(&fh) {
            if let Some(n) = self.inodes.get_mut(&h.ino) {
                n.open = n.open.saturating_sub(1);
            }
            self.gc(h.ino);
        }
    }

    fn listing(&self, dir: u64) -> Res<Vec<(u64, FileType, OsString)>> {
        let d = self.node(dir)?;
        let parent = if dir == ROOT { ROOT } else { d.parent };
        let mut out = vec![
            (dir, FileType::Directory, OsString::from(".")),
            (parent, FileType::Directory, OsString::from("..")),
        ];
        for (name, &ino) in self.entries(dir)? {
            let kind = self
                .node(ino)
                .map(Inode::kind)
                .unwrap_or(FileType::RegularFile);
            out.push((ino, kind, name.clone()));
        }
        Ok(out)
    }

    fn file_mut(&mut self, ino: u64) -> Res<(&mut Vec<u8>, &mut Ranges)> {
        match &mut self.node_mut(ino)?.node {
            Node::File { cur, dirty, .. } => Ok((cur, dirty)),
            Node::Dir { .. } => Err(libc::EISDIR),
        }
    }

    fn set_size(&mut self, ino: u64, size: u64) -> Res<()> {
        if size > MAX_FILE {
            return Err(libc::EFBIG);
        }
        let (cur, dirty) = self.file_mut(ino)?;
        let old = cur.len() as u64;
        cur.resize(size as usize, 0);
        dirty.insert(old.min(size), old.max(size));
        self.ops.push(LoggedOp::SetSize {
            path: self.path_of(ino),
            size,
        });
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn setattr(
        &mut self,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
    ) -> Res<FileAttr> {
        self.node(ino)?;
        if let Some(size) = size {
            self.set_size(ino, size)?;
        }
        let n = self.node_mut(ino)?;
        let now = SystemTime::now();
        if let Some(mode) = mode {
            n.perm = (mode & 0o7777) as u16;
        }
        if let Some(uid) = uid {
            n.uid = uid;
        }
        if let Some(gid) = gid {
            n.gid = gid;
        }
        if let Some(t) = atime {
            n.atime = time(t);
        }
        if let Some(t) = mtime {
            n.mtime = time(t);
        } else if size.is_some() {
            n.mtime = now;
        }
        n.ctime = now;
        self.attr(ino)
    }

    fn read(&mut self, ino: u64, offset: i64, size: u32) -> Res<Vec<u8>> {
        let off = u64::try_from(offset).map_err(|_| libc::EINVAL)?;
        let n = self.node_mut(ino)?;
        n.atime = SystemTime::now();
        match &n.node {
            Node::File { cur, .. } => {
                let len = cur.len() as u64;
                let start = off.min(len) as usize;
                let end = off.saturating_add(u64::from(size)).min(len) as usize;
                Ok(cur[start..end].to_vec())
            }
            Node::Dir { .. } => Err(libc::EISDIR),
        }
    }

    fn write(&mut self, ino: u64, offset: i64, data: &[u8]) -> Res<u32> {
        let off = u64::try_from(offset).map_err(|_| libc::EINVAL)?;
        let len = data.len() as u64;
        let end = off.checked_add(len).ok_or(libc::EFBIG)?;
        if end > MAX_FILE {
            return Err(libc::EFBIG);
        }
        let (cur, dirty) = self.file_mut(ino)?;
        let old = cur.len() as u64;
        if (cur.len() as u64) < end {
            cur.resize(end as usize, 0);
        }
        cur[off as usize..end as usize].copy_from_slice(data);
        // The zero-filled gap past the old end is new content too.
        dirty.insert(old.min(off), end);
        let n = self.node_mut(ino)?;
        let now = SystemTime::now();
        n.mtime = now;
        n.ctime = now;
        self.ops.push(LoggedOp::Write {
            path: self.path_of(ino),
            offset: off,
            len,
        });
        u32::try_from(data.len()).map_err(|_| libc::EINVAL)
    }

    fn unlink(&mut self, parent: u64, name: &OsStr) -> Res<()> {
        let ino = self.child(parent, name)?;
        if self.is_dir(ino) {
            return Err(libc::EISDIR);
        }
        let path = self.child_path(parent, name);
        self.set_entry(parent, name, None)?;
        self.unlinked(ino);
        self.ops.push(LoggedOp::Unlink { path });
        Ok(())
    }

    fn rmdir(&mut self, parent: u64, name: &OsStr) -> Res<()> {
        let ino = self.child(parent, name)?;
        if !self.is_dir(ino) {
            return Err(libc::ENOTDIR);
        }
        if !self.entries(ino)?.is_empty() {
            return Err(libc::ENOTEMPTY);
        }
        let path = self.child_path(parent, name);
        self.set_entry(parent, name, None)?;
        self.unlinked(ino);
        self.ops.push(LoggedOp::Rmdir { path });
        Ok(())
    }

    /// One current entry naming `ino` is gone.
    fn unlinked(&mut self, ino: u64) {
        if let Some(n) = self.inodes.get_mut(&ino) {
            n.nlink = n.nlink.saturating_sub(1);
            n.ctime = SystemTime::now();
        }
        self.gc(ino);
    }

    fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
    ) -> Res<()> {
        if flags & !libc::RENAME_NOREPLACE != 0 {
            return Err(libc::EINVAL);
        }
        check_name(newname)?;
        let src = self.child(parent, name)?;
        self.entries(newparent)?;
        if parent == newparent && name == newname {
            return Ok(());
        }
        let src_dir = self.is_dir(src);
        if src_dir {
            // Not into itself or below it.
            let mut at = newparent;
            for _ in 0..4096 {
                if at == src {
                    return Err(libc::EINVAL);
                }
                if at == ROOT {
                    break;
                }
                at = self.node(at)?.parent;
            }
        }
        let target = self.entries(newparent)?.get(newname).copied();
        if let Some(dst) = target {
            if dst == src {
                return Ok(());
            }
            if flags & libc::RENAME_NOREPLACE != 0 {
                return Err(libc::EEXIST);
            }
            match (src_dir, self.is_dir(dst)) {
                (true, false) => return Err(libc::ENOTDIR),
                (false, true) => return Err(libc::EISDIR),
                (true, true) if !self.entries(dst)?.is_empty() => return Err(libc::ENOTEMPTY),
                _ => {}
            }
        }
        let from = self.child_path(parent, name);
        let to = self.child_path(newparent, newname);
        self.set_entry(parent, name, None)?;
        self.set_entry(newparent, newname, Some(src))?;
        let n = self.node_mut(src)?;
        n.parent = newparent;
        n.name = newname.to_owned();
        n.ctime = SystemTime::now();
        if let Some(dst) = target {
            self.unlinked(dst);
        }
        self.ops.push(LoggedOp::Rename { from, to });
        Ok(())
    }

    /// Drops an inode nothing refers to any more (no current or durable entry, no open handle),
    /// and then whatever only it referred to.
    fn gc(&mut self, ino: u64) {
        let mut work = vec![ino];
        while let Some(ino) = work.pop() {
            if ino == ROOT || self.inodes.get(&ino).is_none_or(|n| n.open > 0) {
                continue;
            }
            let referenced = self.inodes.values().any(|n| match &n.node {
                Node::Dir { cur, dur } => cur.values().chain(dur.values()).any(|&c| c == ino),
                Node::File { .. } => false,
            });
            if referenced {
                continue;
            }
            if let Some(Inode {
                node: Node::Dir { cur, dur },
                ..
            }) = self.inodes.remove(&ino)
            {
                work.extend(cur.values().chain(dur.values()));
            }
        }
    }

    /// Makes the current state of `ino` durable, wholly or (torn) in part.
    fn commit(&mut self, ino: u64, torn: bool) {
        let Some(n) = self.inodes.get_mut(&ino) else {
            return;
        };
        match &mut n.node {
            Node::File { cur, dur, dirty } => {
                let len = cur.len() as u64;
                let ranges: Vec<(u64, u64)> = dirty
                    .0
                    .iter()
                    .map(|&(s, e)| (s, e.min(len)))
                    .filter(|&(s, e)| s < e)
                    .collect();
                if !torn {
                    dur.resize(cur.len(), 0);
                    for (s, e) in ranges {
                        dur[s as usize..e as usize].copy_from_slice(&cur[s as usize..e as usize]);
                    }
                    dirty.0.clear();
                    return;
                }
                let mut pages: Vec<u64> = ranges
                    .iter()
                    .flat_map(|&(s, e)| (s / PAGE)..e.div_ceil(PAGE))
                    .collect();
                pages.dedup();
                let apply: Vec<(u64, u64)> = if pages.len() >= 2 {
                    let limit = pages[pages.len() / 2] * PAGE;
                    ranges
                        .iter()
                        .map(|&(s, e)| (s, e.min(limit)))
                        .filter(|&(s, e)| s < e)
                        .collect()
                } else {
                    let mut left = ranges.iter().map(|&(s, e)| e - s).sum::<u64>() / 2;
                    let mut out = Vec::new();
                    for &(s, e) in &ranges {
                        let take = (e - s).min(left);
                        if take > 0 {
                            out.push((s, s + take));
                        }
                        left -= take;
                    }
                    out
                };
                for (s, e) in apply {
                    if (dur.len() as u64) < e {
                        dur.resize(e as usize, 0);
                    }
                    dur[s as usize..e as usize].copy_from_slice(&cur[s as usize..e as usize]);
                }
            }
            Node::Dir { cur, dur } => {
                if !torn {
                    // What the durable entries named before may now be garbage.
                    let before: Vec<u64> = dur.values().copied().collect();
                    dur.clone_from(cur);
                    for ino in before {
                        self.gc(ino);
                    }
                    return;
                }
                let mut changed: Vec<OsString> = cur
                    .iter()
                    .filter(|(k, v)| dur.get(*k) != Some(v))
                    .map(|(k, _)| k.clone())
                    .chain(dur.keys().filter(|k| !cur.contains_key(*k)).cloned())
                    .collect();
                changed.sort();
                let half = changed.len() / 2;
                for name in &changed[..half] {
                    match cur.get(name) {
                        Some(&i) => dur.insert(name.clone(), i),
                        None => dur.remove(name),
                    };
                }
            }
        }
    }

    fn sync(&mut self, ino: u64, datasync: bool, pid: u32, fired: &Condvar) -> Res<()> {
        let n = self.node(ino)?;
        let kind = match n.node {
            Node::File { .. } => OpKind::Fsync,
            Node::Dir { .. } => OpKind::FsyncDir,
        };
        let path = self.path_of(ino);
        self.ops.push(match kind {
            OpKind::Fsync => LoggedOp::Fsync {
                path: path.clone(),
                datasync,
            },
            OpKind::FsyncDir => LoggedOp::FsyncDir { path: path.clone() },
        });
        let index = self.sync_index;
        self.sync_index += 1;
        let mut cut = None;
        if let Some(armed) = self.armed.as_mut() {
            let op = Op {
                kind,
                path,
                datasync,
                index,
                pid,
            };
            let trigger = &mut armed.trigger;
            match std::panic::catch_unwind(AssertUnwindSafe(|| trigger(&op))) {
                Ok(Some(when)) => cut = Some((when, armed.victim)),
                Ok(None) => {}
                Err(_) => {
                    eprintln!("powercutfs: the trigger panicked on {op:?}; treated as no cut")
                }
            }
        }
        let liar = self.opts.liar;
        let Some((when, victim)) = cut else {
            if !liar {
                self.commit(ino, false);
            }
            return Ok(());
        };
        if when == When::Fail {
            if let Some(Node::File { dirty, .. }) = self.inodes.get_mut(&ino).map(|n| &mut n.node) {
                dirty.0.clear();
            }
            self.armed = None;
            return Err(libc::EIO);
        }
        if !liar {
            match when {
                When::Before | When::Fail => {}
                When::After => self.commit(ino, false),
                When::Torn => self.commit(ino, true),
            }
        }
        // `arm` checked that the pid is a positive i32 other than ours.
        // SAFETY: kill has no memory-safety preconditions.
        unsafe { libc::kill(victim as libc::pid_t, libc::SIGKILL) };
        self.fired = true;
        self.armed = None;
        fired.notify_all();
        Err(libc::EIO)
    }

    /// The power cut: everything back to its durable state, unreachable inodes dropped.
    fn revert(&mut self) {
        self.generation += 1;
        self.fired = false;
        self.armed = None;
        self.sync_index = 0;
        self.cuts += 1;
        self.handles.clear();
        for n in self.inodes.values_mut() {
            n.open = 0;
            n.nlink = 0;
            match &mut n.node {
                Node::File { cur, dur, dirty } => {
                    cur.clone_from(dur);
                    dirty.0.clear();
                }
                Node::Dir { cur, dur } => cur.clone_from(dur),
            }
        }
        // Walk the durable tree from the root: parents, names and link counts anew.
        let mut seen = std::collections::HashSet::from([ROOT]);
        let mut queue = std::collections::VecDeque::from([ROOT]);
        while let Some(dir) = queue.pop_front() {
            let entries: Vec<(OsString, u64)> = match self.inodes.get(&dir).map(|n| &n.node) {
                Some(Node::Dir { cur, .. }) => cur.iter().map(|(k, &v)| (k.clone(), v)).collect(),
                _ => continue,
            };
            for (name, ino) in entries {
                let child_is_dir = self.is_dir(ino);
                let Some(child) = self.inodes.get_mut(&ino) else {
                    // Cannot happen (gc keeps what durable entries name); drop the entry.
                    self.remove_entry_both(dir, &name);
                    continue;
                };
                if seen.insert(ino) {
                    child.parent = dir;
                    child.name = name;
                    child.nlink = 1;
                    if child_is_dir {
                        queue.push_back(ino);
                    }
                } else if child_is_dir {
                    // A directory under two names: keep the first.
                    self.remove_entry_both(dir, &name);
                } else {
                    child.nlink += 1;
                }
            }
        }
        self.inodes.retain(|ino, _| seen.contains(ino));
    }

    fn remove_entry_both(&mut self, dir: u64, name: &OsStr) {
        if let Some(Inode {
            node: Node::Dir { cur, dur },
            ..
        }) = self.inodes.get_mut(&dir)
        {
            cur.remove(name);
            dur.remove(name);
        }
    }

    /// Resolves a relative path through durable entries.
    fn durable_lookup(&self, rel: &Path) -> Option<u64> {
        let mut at = ROOT;
        for c in rel.components() {
            match c {
                Component::CurDir => {}
                Component::Normal(name) => match &self.inodes.get(&at)?.node {
                    Node::Dir { dur, .. } => at = *dur.get(name)?,
                    Node::File { .. } => return None,
                },
                _ => return None,
            }
        }
        Some(at)
    }
}

/// The FUSE handler of one mount (one generation).
struct Handler {
    shared: Arc<Shared>,
    generation: u64,
}

impl Handler {
    /// The state, unless this mount was cut or the power cut has fired (EIO).
    fn live(&self) -> Res<MutexGuard<'_, State>> {
        let st = self.shared.lock();
        if st.generation != self.generation || st.fired {
            Err(libc::EIO)
        } else {
            Ok(st)
        }
    }
}

impl Filesystem for Handler {
    fn lookup(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEntry) {
        match self.live().and_then(|st| st.attr(st.child(parent, name)?)) {
            Ok(attr) => reply.entry(&TTL, &attr, 0),
            Err(e) => reply.error(e),
        }
    }

    fn getattr(&mut self, _req: &Request<'_>, ino: u64, _fh: Option<u64>, reply: ReplyAttr) {
        match self.live().and_then(|st| st.attr(ino)) {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn setattr(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        _fh: Option<u64>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<u32>,
        reply: ReplyAttr,
    ) {
        match self
            .live()
            .and_then(|mut st| st.setattr(ino, mode, uid, gid, size, atime, mtime))
        {
            Ok(attr) => reply.attr(&TTL, &attr),
            Err(e) => reply.error(e),
        }
    }

    fn mknod(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let r = self.live().and_then(|mut st| {
            let ino = st.create_file(parent, name, mode, umask, req)?;
            st.attr(ino)
        });
        match r {
            Ok(attr) => reply.entry(&TTL, &attr, 0),
            Err(e) => reply.error(e),
        }
    }

    fn mkdir(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let r = self.live().and_then(|mut st| {
            let ino = st.mkdir(parent, name, mode, umask, req)?;
            st.attr(ino)
        });
        match r {
            Ok(attr) => reply.entry(&TTL, &attr, 0),
            Err(e) => reply.error(e),
        }
    }

    fn unlink(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        match self.live().and_then(|mut st| st.unlink(parent, name)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rmdir(&mut self, _req: &Request<'_>, parent: u64, name: &OsStr, reply: ReplyEmpty) {
        match self.live().and_then(|mut st| st.rmdir(parent, name)) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn rename(
        &mut self,
        _req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        newparent: u64,
        newname: &OsStr,
        flags: u32,
        reply: ReplyEmpty,
    ) {
        match self
            .live()
            .and_then(|mut st| st.rename(parent, name, newparent, newname, flags))
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn open(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        match self.live().and_then(|mut st| st.open(ino, false)) {
            Ok(fh) => reply.opened(fh, FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }

    fn read(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        size: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyData,
    ) {
        match self.live().and_then(|mut st| st.read(ino, offset, size)) {
            Ok(data) => reply.data(&data),
            Err(e) => reply.error(e),
        }
    }

    fn write(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        data: &[u8],
        _write_flags: u32,
        _flags: i32,
        _lock_owner: Option<u64>,
        reply: ReplyWrite,
    ) {
        match self.live().and_then(|mut st| st.write(ino, offset, data)) {
            Ok(n) => reply.written(n),
            Err(e) => reply.error(e),
        }
    }

    fn flush(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        _lock_owner: u64,
        reply: ReplyEmpty,
    ) {
        match self.live().and_then(|st| st.node(ino).map(|_| ())) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn release(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        _lock_owner: Option<u64>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        // Works while fired too: the dying process's files must close.
        let mut st = self.shared.lock();
        if st.generation == self.generation {
            st.release(fh);
        }
        reply.ok();
    }

    /// Mode 0 only (allocate, extending the size), as the queue allocates segments ahead: the
    /// new space reads as zeros, and the new size is durable with the next fsync of the file,
    /// as on ext4.
    #[allow(clippy::too_many_arguments)]
    fn fallocate(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        _fh: u64,
        offset: i64,
        length: i64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        let r = self.live().and_then(|mut st| {
            if mode != 0 {
                return Err(libc::EOPNOTSUPP);
            }
            let end = offset.checked_add(length).ok_or(libc::EFBIG)?;
            let end = u64::try_from(end).map_err(|_| libc::EINVAL)?;
            if end > MAX_FILE {
                return Err(libc::EFBIG);
            }
            let (cur, _) = st.file_mut(ino)?;
            if end > cur.len() as u64 {
                st.set_size(ino, end)?;
            }
            Ok(())
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn fsync(&mut self, req: &Request<'_>, ino: u64, _fh: u64, datasync: bool, reply: ReplyEmpty) {
        let shared = Arc::clone(&self.shared);
        match self
            .live()
            .and_then(|mut st| st.sync(ino, datasync, req.pid(), &shared.fired))
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn opendir(&mut self, _req: &Request<'_>, ino: u64, _flags: i32, reply: ReplyOpen) {
        match self.live().and_then(|mut st| st.open(ino, true)) {
            Ok(fh) => reply.opened(fh, 0),
            Err(e) => reply.error(e),
        }
    }

    fn readdir(
        &mut self,
        _req: &Request<'_>,
        ino: u64,
        fh: u64,
        offset: i64,
        mut reply: ReplyDirectory,
    ) {
        let r = self.live().and_then(|mut st| {
            if offset == 0 {
                // A rewind (or the first read) sees the directory as it is now.
                let listing = st.listing(ino)?;
                st.handles.get_mut(&fh).ok_or(libc::EBADF)?.listing = listing;
            }
            let h = st.handles.get(&fh).ok_or(libc::EBADF)?;
            let skip = usize::try_from(offset).map_err(|_| libc::EINVAL)?;
            for (i, (ino, kind, name)) in h.listing.iter().enumerate().skip(skip) {
                if reply.add(*ino, (i + 1) as i64, *kind, name) {
                    break;
                }
            }
            Ok(())
        });
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn releasedir(
        &mut self,
        _req: &Request<'_>,
        _ino: u64,
        fh: u64,
        _flags: i32,
        reply: ReplyEmpty,
    ) {
        let mut st = self.shared.lock();
        if st.generation == self.generation {
            st.release(fh);
        }
        reply.ok();
    }

    fn fsyncdir(
        &mut self,
        req: &Request<'_>,
        ino: u64,
        _fh: u64,
        datasync: bool,
        reply: ReplyEmpty,
    ) {
        let shared = Arc::clone(&self.shared);
        match self
            .live()
            .and_then(|mut st| st.sync(ino, datasync, req.pid(), &shared.fired))
        {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn statfs(&mut self, _req: &Request<'_>, _ino: u64, reply: ReplyStatfs) {
        match self.live() {
            Ok(st) => {
                let used: u64 = st
                    .inodes
                    .values()
                    .map(|n| match &n.node {
                        Node::File { cur, .. } => (cur.len() as u64).div_ceil(PAGE),
                        Node::Dir { .. } => 1,
                    })
                    .sum();
                let blocks = 1 << 22; // 16 GiB of 4 KiB blocks
                let files = 1 << 20;
                let free = blocks - used.min(blocks);
                let ffree = files - (st.inodes.len() as u64).min(files);
                reply.statfs(
                    blocks,
                    free,
                    free,
                    files,
                    ffree,
                    PAGE as u32,
                    NAME_MAX as u32,
                    PAGE as u32,
                );
            }
            Err(e) => reply.error(e),
        }
    }

    fn access(&mut self, _req: &Request<'_>, ino: u64, _mask: i32, reply: ReplyEmpty) {
        match self.live().and_then(|st| st.node(ino).map(|_| ())) {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    fn create(
        &mut self,
        req: &Request<'_>,
        parent: u64,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let r = self.live().and_then(|mut st| {
            let ino = st.create_file(parent, name, mode, umask, req)?;
            let fh = st.open(ino, false)?;
            Ok((st.attr(ino)?, fh))
        });
        match r {
            Ok((attr, fh)) => reply.created(&TTL, &attr, 0, fh, FOPEN_DIRECT_IO),
            Err(e) => reply.error(e),
        }
    }
}

struct Running {
    unmounter: SessionUnmounter,
    thread: JoinHandle<io::Result<()>>,
}

/// A mounted power-cut filesystem; dropping it unmounts.
pub struct PowerCutFs {
    shared: Arc<Shared>,
    mountpoint: PathBuf,
    running: Option<Running>,
}

fn c_path(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// A FUSE mount whose server is gone ("Transport endpoint is not connected") is lazily unmounted.
fn clear_stale(mountpoint: &Path) -> io::Result<()> {
    if let Err(e) = std::fs::metadata(mountpoint) {
        if e.raw_os_error() == Some(libc::ENOTCONN) {
            let c = c_path(mountpoint)?;
            // SAFETY: `c` is a valid NUL-terminated path.
            if unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) } != 0 {
                return Err(io::Error::last_os_error());
            }
        }
    }
    Ok(())
}

impl PowerCutFs {
    /// Mounts an empty filesystem at `mountpoint` (an existing directory).
    pub fn mount(mountpoint: &Path, opts: Options) -> io::Result<PowerCutFs> {
        clear_stale(mountpoint)?;
        let mountpoint = mountpoint.canonicalize()?;
        if !mountpoint.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a directory", mountpoint.display()),
            ));
        }
        let shared = Arc::new(Shared {
            state: Mutex::new(State::new(opts)),
            fired: Condvar::new(),
        });
        let mut fs = PowerCutFs {
            shared,
            mountpoint,
            running: None,
        };
        fs.start()?;
        Ok(fs)
    }

    fn start(&mut self) -> io::Result<()> {
        let generation = self.shared.lock().generation;
        let handler = Handler {
            shared: Arc::clone(&self.shared),
            generation,
        };
        let options = [
            MountOption::FSName("powercutfs".into()),
            MountOption::AllowOther,
        ];
        let mut session = Session::new(handler, &self.mountpoint, &options)?;
        let unmounter = session.unmount_callable();
        let thread = thread::Builder::new()
            .name("powercutfs".into())
            .spawn(move || session.run())?;
        self.running = Some(Running { unmounter, thread });
        // The first request waits for the session's INIT: once it answers, the mount is live.
        match std::fs::metadata(&self.mountpoint) {
            Ok(md) if md.ino() == ROOT => Ok(()),
            Ok(md) => {
                self.unmount();
                Err(io::Error::other(format!(
                    "{} is not the new mount (root inode {})",
                    self.mountpoint.display(),
                    md.ino()
                )))
            }
            Err(e) => {
                self.unmount();
                Err(e)
            }
        }
    }

    fn unmount(&mut self) {
        let Some(mut run) = self.running.take() else {
            return;
        };
        let mut clean = false;
        if let Ok(c) = c_path(&self.mountpoint) {
            // Busy for a moment after the last user died (asynchronous releases, a fork of another
            // test's thread holding copies of descriptors): retry, then detach.
            let deadline = Instant::now() + Duration::from_secs(2);
            loop {
                // SAFETY: `c` is a valid NUL-terminated path.
                if unsafe { libc::umount2(c.as_ptr(), 0) } == 0 {
                    clean = true;
                    break;
                }
                match io::Error::last_os_error().raw_os_error() {
                    Some(libc::EBUSY) if Instant::now() < deadline => {
                        thread::sleep(Duration::from_millis(5));
                    }
                    Some(libc::EINVAL) => {
                        clean = true; // not mounted any more
                        break;
                    }
                    _ => {
                        eprintln!(
                            "powercutfs: {} still busy; detaching it (its users now get EIO)",
                            self.mountpoint.display()
                        );
                        // SAFETY: as above.
                        unsafe { libc::umount2(c.as_ptr(), libc::MNT_DETACH) };
                        break;
                    }
                }
            }
        }
        // Drops fuser's handle of the mount (a no-op once it is unmounted).
        let _ = run.unmounter.unmount();
        if clean {
            let deadline = Instant::now() + Duration::from_secs(2);
            while !run.thread.is_finished() && Instant::now() < deadline {
                thread::sleep(Duration::from_millis(1));
            }
            if run.thread.is_finished() {
                let _ = run.thread.join();
            }
        }
        // Otherwise the thread serves EIO to the detached mount's last users, then ends.
    }

    /// The mount point (canonical).
    pub fn path(&self) -> &Path {
        &self.mountpoint
    }

    /// The options it was mounted with.
    pub fn options(&self) -> Options {
        self.shared.lock().opts
    }

    /// Cuts the power: unmount, revert everything to its durable state, mount again at the same
    /// path. Every process using the mount must have been killed and reaped first (a mount still
    /// busy after 2 s is detached: its remaining users get EIO). Panics if the remount fails.
    pub fn cut(&mut self) {
        self.shared.lock().revert();
        self.unmount();
        if let Err(e) = self.start() {
            panic!(
                "powercutfs: mounting {} again after a cut failed: {e}",
                self.mountpoint.display()
            );
        }
    }

    /// How many cuts there have been.
    pub fn cuts(&self) -> u64 {
        self.shared.lock().cuts
    }

    /// Arms a cut inside a sync: `trigger` sees each fsync/fsyncdir request; the first `Some`
    /// decides what takes effect, then `victim_pid` is SIGKILLed and the filesystem freezes (EIO).
    pub fn arm(&self, victim_pid: u32, trigger: Trigger) {
        let ok = libc::pid_t::try_from(victim_pid).is_ok_and(|p| p > 0)
            && victim_pid != std::process::id();
        assert!(ok, "powercutfs: {victim_pid} cannot be the victim");
        self.shared.lock().armed = Some(Armed {
            victim: victim_pid,
            trigger,
        });
    }

    /// Removes an armed trigger that has not fired.
    pub fn disarm(&self) {
        self.shared.lock().armed = None;
    }

    /// Whether an armed trigger has fired (until the next cut).
    pub fn fired(&self) -> bool {
        self.shared.lock().fired
    }

    /// Waits up to `timeout` for the armed trigger to fire; returns whether it did.
    pub fn wait_fired(&self, timeout: Duration) -> bool {
        let st = self.shared.lock();
        let (st, _) = self
            .shared
            .fired
            .wait_timeout_while(st, timeout, |st| !st.fired)
            .unwrap_or_else(PoisonError::into_inner);
        st.fired
    }

    /// The mutating operations received so far, in order.
    pub fn ops(&self) -> Vec<LoggedOp> {
        self.shared.lock().ops.clone()
    }

    /// Forgets the logged operations.
    pub fn clear_ops(&self) {
        self.shared.lock().ops.clear();
    }

    /// What a cut now would leave in the file at `rel` (relative to the mount root).
    pub fn read_durable(&self, rel: impl AsRef<Path>) -> Option<Vec<u8>> {
        let st = self.shared.lock();
        let ino = st.durable_lookup(rel.as_ref())?;
        match &st.inodes.get(&ino)?.node {
            Node::File { dur, .. } => Some(dur.clone()),
            Node::Dir { .. } => None,
        }
    }

    /// What a cut now would leave in the directory at `rel`: its entry names, sorted.
    pub fn list_durable(&self, rel: impl AsRef<Path>) -> Option<Vec<String>> {
        let st = self.shared.lock();
        let ino = st.durable_lookup(rel.as_ref())?;
        match &st.inodes.get(&ino)?.node {
            Node::Dir { dur, .. } => Some(
                dur.keys()
                    .map(|k| k.to_string_lossy().into_owned())
                    .collect(),
            ),
            Node::File { .. } => None,
        }
    }
}

impl Drop for PowerCutFs {
    fn drop(&mut self) {
        // Whoever still uses a mount that has to be detached gets EIO from now on.
        self.shared.lock().generation += 1;
        self.unmount();
    }
}

/// Whether FUSE can be mounted here; in CI (`CI=true`) it must be, so a failure panics.
pub fn available() -> bool {
    static PROBE: OnceLock<Result<(), String>> = OnceLock::new();
    let probe = PROBE.get_or_init(|| {
        if !Path::new("/dev/fuse").exists() {
            return Err("/dev/fuse does not exist".into());
        }
        let dir = tempfile::tempdir().map_err(|e| format!("tempdir: {e}"))?;
        let fs = PowerCutFs::mount(dir.path(), Options::default())
            .map_err(|e| format!("mounting FUSE failed: {e}"))?;
        drop(fs);
        Ok(())
    });
    match probe {
        Ok(()) => true,
        Err(why) => {
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("FUSE is required in CI for the power-cut tests: {why}");
            }
            eprintln!("SKIPPED: FUSE is not usable here ({why}); CI=true makes this a failure");
            false
        }
    }
}

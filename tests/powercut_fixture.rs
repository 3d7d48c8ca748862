//! The power-cut filesystem (tests/common/powercut.rs) tested on its own, before any test of the
//! gateway relies on it: real processes (this test thread, and python3 children for the armed
//! cuts) do the I/O through the kernel, and what survives each cut must match the model.

mod common;

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::MetadataExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::powercut::{self, LoggedOp, Op, OpKind, Options, PowerCutFs, When};

/// A mounted fixture in a temporary directory (the mount is dropped first).
struct Mnt {
    fs: PowerCutFs,
    _dir: tempfile::TempDir,
}

impl Mnt {
    fn new(opts: Options) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let fs = PowerCutFs::mount(dir.path(), opts).expect("mount the power-cut fs");
        Mnt { fs, _dir: dir }
    }

    fn p(&self, rel: &str) -> PathBuf {
        self.fs.path().join(rel)
    }

    fn read(&self, rel: &str) -> Option<Vec<u8>> {
        match fs::read(self.p(rel)) {
            Ok(b) => Some(b),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => panic!("read {rel}: {e}"),
        }
    }

    fn names(&self, rel: &str) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(self.p(rel))
            .expect("read_dir")
            .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    fn sync_dir(&self, rel: &str) {
        File::open(self.p(rel))
            .and_then(|d| d.sync_all())
            .expect("fsync a directory");
    }

    /// Cuts, checking first that what the model says will survive is what does.
    fn cut_checked(&mut self, files: &[&str]) {
        let expected: Vec<Option<Vec<u8>>> =
            files.iter().map(|f| self.fs.read_durable(f)).collect();
        self.fs.cut();
        for (f, want) in files.iter().zip(expected) {
            assert_eq!(
                self.read(f),
                want,
                "{f} after the cut, against read_durable"
            );
        }
    }
}

fn write_file(path: &Path, bytes: &[u8], sync: bool) {
    let mut f = File::create(path).expect("create");
    f.write_all(bytes).expect("write");
    if sync {
        f.sync_all().expect("fsync");
    }
}

fn append(path: &Path, bytes: &[u8], sync: bool) {
    let mut f = OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open for append");
    f.write_all(bytes).expect("append");
    if sync {
        f.sync_data().expect("fdatasync");
    }
}

/// A python3 child that waits for a line on stdin, then runs `body` (argv[1] is `arg`).
fn python(body: &str, arg: &Path) -> Child {
    let script = format!(
        "import os, sys\npath = sys.argv[1]\nsys.stdin.readline()\n{body}\nprint('finished')\n"
    );
    Command::new("python3")
        .args(["-c", &script])
        .arg(arg)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn python3")
}

fn go(child: &mut Child) {
    let stdin = child.stdin.as_mut().expect("stdin");
    stdin
        .write_all(b"go\n")
        .and_then(|()| stdin.flush())
        .expect("tell the child to go");
}

/// Arms a cut at the `n`th (0-based) sync of `path` by `kind`, lets the child run, and checks it
/// died of SIGKILL inside that sync.
fn cut_inside(m: &mut Mnt, mut child: Child, kind: OpKind, path: &str, n: u32, when: When) {
    let target = PathBuf::from(path);
    let mut seen = 0;
    m.fs.arm(
        child.id(),
        Box::new(move |op: &Op| {
            if op.kind != kind || op.path != target {
                return None;
            }
            seen += 1;
            (seen == n + 1).then_some(when)
        }),
    );
    go(&mut child);
    assert!(
        m.fs.wait_fired(Duration::from_secs(20)),
        "the trigger never fired"
    );
    let out = child.wait_with_output().expect("reap the child");
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGKILL),
        "child status {:?}",
        out.status
    );
    assert!(out.stdout.is_empty(), "the child must not have finished");
    assert!(m.fs.fired());
}

const BLOCK: usize = 3 * 4096;

/// Eight appends of 3 pages, each fsynced; the cut is inside the fourth fsync.
fn appends_cut_at_fourth(when: When) -> (Vec<u8>, Mnt) {
    let mut m = Mnt::new(Options::default());
    let child = python(
        "fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)\n\
         for i in range(8):\n    os.write(fd, bytes([65 + i]) * (3 * 4096))\n    os.fsync(fd)",
        &m.p("f.bin"),
    );
    cut_inside(&mut m, child, OpKind::Fsync, "f.bin", 3, when);
    let durable =
        m.fs.read_durable("f.bin")
            .expect("f.bin is durable (relaxed create)");
    m.fs.cut();
    let after = m.read("f.bin").expect("f.bin after the cut");
    assert_eq!(after, durable, "read_durable said what the cut would leave");
    (after, m)
}

fn blocks(n: usize) -> Vec<u8> {
    (0..n).flat_map(|i| vec![b'A' + i as u8; BLOCK]).collect()
}

#[test]
fn unsynced_writes_are_lost_and_synced_ones_kept() {
    if !powercut::available() {
        return;
    }
    let mut m = Mnt::new(Options::default());
    write_file(&m.p("synced"), b"hello", true);
    append(&m.p("synced"), b" world", false);
    write_file(&m.p("unsynced"), b"gone", false);
    assert_eq!(
        m.read("synced").as_deref(),
        Some(&b"hello world"[..]),
        "current state"
    );
    assert_eq!(m.fs.read_durable("synced").as_deref(), Some(&b"hello"[..]));
    m.cut_checked(&["synced", "unsynced"]);
    assert_eq!(m.read("synced").as_deref(), Some(&b"hello"[..]));
    assert_eq!(
        fs::metadata(m.p("synced")).expect("stat").len(),
        5,
        "cut back to the synced length"
    );
    assert_eq!(
        m.read("unsynced").as_deref(),
        Some(&b""[..]),
        "created (relaxed) but no data"
    );

    // A second sync after an append keeps both; a truncation not synced is undone.
    append(&m.p("synced"), b" again", true);
    let f = OpenOptions::new()
        .write(true)
        .open(m.p("synced"))
        .expect("open");
    f.set_len(2).expect("truncate");
    drop(f);
    assert_eq!(m.read("synced").as_deref(), Some(&b"he"[..]));
    m.cut_checked(&["synced"]);
    assert_eq!(m.read("synced").as_deref(), Some(&b"hello again"[..]));
    let f = OpenOptions::new()
        .write(true)
        .open(m.p("synced"))
        .expect("open");
    f.set_len(2)
        .and_then(|()| f.sync_data())
        .expect("truncate and sync");
    drop(f);
    m.fs.cut();
    assert_eq!(m.read("synced").as_deref(), Some(&b"he"[..]));
    assert_eq!(m.fs.cuts(), 3);
}

#[test]
fn positional_writes_and_holes_follow_the_model() {
    if !powercut::available() {
        return;
    }
    use std::os::unix::fs::FileExt;
    let mut m = Mnt::new(Options::default());
    let f = File::create(m.p("slots")).expect("create");
    f.set_len(8192)
        .and_then(|()| f.sync_all())
        .expect("size and sync");
    f.write_all_at(b"one", 0)
        .and_then(|()| f.sync_data())
        .expect("slot 0");
    f.write_all_at(b"two", 4096).expect("slot 1, not synced");
    f.write_all_at(b"far", 20000)
        .expect("past the end, not synced");
    drop(f);
    m.cut_checked(&["slots"]);
    let b = m.read("slots").expect("slots");
    assert_eq!(b.len(), 8192);
    assert_eq!(&b[..3], b"one");
    assert!(b[3..].iter().all(|&x| x == 0), "slot 1 was never synced");
}

#[test]
fn relaxed_directories_are_durable_at_once() {
    if !powercut::available() {
        return;
    }
    let mut m = Mnt::new(Options::default());
    fs::create_dir(m.p("d")).expect("mkdir");
    write_file(&m.p("d/new"), b"data", false);
    write_file(&m.p("d/old"), b"x", true);
    fs::rename(m.p("d/old"), m.p("d/moved")).expect("rename");
    write_file(&m.p("d/victim"), b"y", true);
    fs::remove_file(m.p("d/victim")).expect("unlink");
    m.fs.cut();
    assert_eq!(m.names("d"), ["moved", "new"]);
    assert_eq!(
        m.read("d/new").as_deref(),
        Some(&b""[..]),
        "exists, length 0"
    );
    assert_eq!(m.read("d/moved").as_deref(), Some(&b"x"[..]));
}

#[test]
fn strict_creation_needs_the_directory_synced() {
    if !powercut::available() {
        return;
    }
    let mut m = Mnt::new(Options {
        strict: true,
        liar: false,
    });
    write_file(&m.p("a"), b"file synced, directory not", true);
    assert_eq!(m.fs.list_durable("").expect("root"), Vec::<String>::new());
    m.fs.cut();
    assert_eq!(
        m.read("a"),
        None,
        "a created+fsynced file without a directory sync is gone"
    );

    write_file(&m.p("b"), b"both synced", true);
    m.sync_dir("");
    assert_eq!(m.fs.list_durable("").expect("root"), ["b"]);
    m.fs.cut();
    assert_eq!(m.read("b").as_deref(), Some(&b"both synced"[..]));
    // The entry alone is not the data: a file whose directory was synced but not its data.
    write_file(&m.p("c"), b"data never synced", false);
    m.sync_dir("");
    m.fs.cut();
    assert_eq!(m.read("c").as_deref(), Some(&b""[..]));
}

#[test]
fn strict_rename_and_unlink_need_the_directory_synced() {
    if !powercut::available() {
        return;
    }
    let mut m = Mnt::new(Options {
        strict: true,
        liar: false,
    });
    write_file(&m.p("f"), b"v1", true);
    m.sync_dir("");
    // Atomic replace without the directory sync: undone.
    write_file(&m.p("f.tmp"), b"v2", true);
    fs::rename(m.p("f.tmp"), m.p("f")).expect("rename over");
    assert_eq!(m.read("f").as_deref(), Some(&b"v2"[..]));
    m.fs.cut();
    assert_eq!(m.names(""), ["f"]);
    assert_eq!(
        m.read("f").as_deref(),
        Some(&b"v1"[..]),
        "the rename was undone"
    );
    // With it: kept.
    write_file(&m.p("f.tmp"), b"v2", true);
    fs::rename(m.p("f.tmp"), m.p("f")).expect("rename over");
    m.sync_dir("");
    m.fs.cut();
    assert_eq!(m.names(""), ["f"]);
    assert_eq!(m.read("f").as_deref(), Some(&b"v2"[..]));

    fs::remove_file(m.p("f")).expect("unlink");
    assert_eq!(m.read("f"), None);
    m.fs.cut();
    assert_eq!(
        m.read("f").as_deref(),
        Some(&b"v2"[..]),
        "the unlink was undone"
    );
    fs::remove_file(m.p("f")).expect("unlink");
    m.sync_dir("");
    m.fs.cut();
    assert_eq!(m.read("f"), None, "unlink + directory sync is kept");

    // Across directories both sides count.
    fs::create_dir(m.p("x")).expect("mkdir x");
    fs::create_dir(m.p("y")).expect("mkdir y");
    write_file(&m.p("x/f"), b"moving", true);
    m.sync_dir("x");
    m.sync_dir("y");
    m.sync_dir("");
    fs::rename(m.p("x/f"), m.p("y/f")).expect("rename across");
    m.fs.cut();
    assert_eq!(
        (m.names("x"), m.names("y")),
        (vec!["f".to_string()], vec![])
    );
    fs::rename(m.p("x/f"), m.p("y/f")).expect("rename across");
    m.sync_dir("x");
    m.sync_dir("y");
    m.fs.cut();
    assert_eq!(
        (m.names("x"), m.names("y")),
        (vec![], vec!["f".to_string()])
    );
    assert_eq!(m.read("y/f").as_deref(), Some(&b"moving"[..]));
}

#[test]
fn strict_mkdir_needs_the_parent_synced() {
    if !powercut::available() {
        return;
    }
    let mut m = Mnt::new(Options {
        strict: true,
        liar: false,
    });
    fs::create_dir(m.p("sub")).expect("mkdir");
    write_file(&m.p("sub/f"), b"inside", true);
    m.sync_dir("sub");
    assert_eq!(
        m.fs.list_durable("sub"),
        None,
        "sub is not reachable through durable entries"
    );
    m.fs.cut();
    assert!(!m.p("sub").exists(), "the parent was never synced");

    fs::create_dir(m.p("sub")).expect("mkdir again");
    write_file(&m.p("sub/f"), b"inside", true);
    m.sync_dir("sub");
    m.sync_dir("");
    m.fs.cut();
    assert_eq!(m.names("sub"), ["f"]);
    assert_eq!(m.read("sub/f").as_deref(), Some(&b"inside"[..]));
}

#[test]
fn a_lying_disk_keeps_nothing() {
    if !powercut::available() {
        return;
    }
    let mut m = Mnt::new(Options {
        strict: false,
        liar: true,
    });
    write_file(&m.p("f"), b"synced to a liar", true);
    m.fs.cut();
    assert_eq!(
        m.read("f").as_deref(),
        Some(&b""[..]),
        "the fsync was a lie"
    );

    let mut m = Mnt::new(Options {
        strict: true,
        liar: true,
    });
    write_file(&m.p("f"), b"synced to a liar", true);
    m.sync_dir("");
    m.fs.cut();
    assert_eq!(m.read("f"), None, "the directory sync was a lie too");
}

#[test]
fn cut_before_the_chosen_fsync_keeps_the_earlier_ones_only() {
    if !powercut::available() {
        return;
    }
    let (after, _m) = appends_cut_at_fourth(When::Before);
    assert_eq!(after, blocks(3));
}

#[test]
fn cut_after_the_chosen_fsync_keeps_all_of_it() {
    if !powercut::available() {
        return;
    }
    let (after, _m) = appends_cut_at_fourth(When::After);
    assert_eq!(after, blocks(4));
}

#[test]
fn torn_fsync_keeps_part_of_its_pages() {
    if !powercut::available() {
        return;
    }
    let (after, _m) = appends_cut_at_fourth(When::Torn);
    assert!(
        after.len() > 3 * BLOCK && after.len() < 4 * BLOCK,
        "torn: {} bytes",
        after.len()
    );
    assert_eq!(
        after.len(),
        3 * BLOCK + 4096,
        "the first of the three dirty pages"
    );
    assert_eq!(after[..], blocks(4)[..after.len()]);
}

#[test]
fn torn_fsync_of_one_page_keeps_a_prefix_of_its_bytes() {
    if !powercut::available() {
        return;
    }
    let mut m = Mnt::new(Options::default());
    let child = python(
        "fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)\n\
         os.write(fd, b'a' * 1000)\nos.fdatasync(fd)\n\
         os.write(fd, b'b' * 1000)\nos.fdatasync(fd)",
        &m.p("small"),
    );
    cut_inside(&mut m, child, OpKind::Fsync, "small", 1, When::Torn);
    m.cut_checked(&["small"]);
    let b = m.read("small").expect("small");
    assert_eq!(b.len(), 1500);
    assert!(b[..1000].iter().all(|&x| x == b'a') && b[1000..].iter().all(|&x| x == b'b'));
}

#[test]
fn torn_directory_sync_keeps_some_entries() {
    if !powercut::available() {
        return;
    }
    let mut m = Mnt::new(Options {
        strict: true,
        liar: false,
    });
    fs::create_dir(m.p("d")).expect("mkdir");
    m.sync_dir("");
    let child = python(
        "for n in 'abcd':\n    os.close(os.open(os.path.join(path, n), os.O_WRONLY | os.O_CREAT, 0o644))\n\
         fd = os.open(path, os.O_RDONLY)\nos.fsync(fd)",
        &m.p("d"),
    );
    cut_inside(&mut m, child, OpKind::FsyncDir, "d", 0, When::Torn);
    assert_eq!(m.fs.list_durable("d").expect("d"), ["a", "b"]);
    m.fs.cut();
    assert_eq!(m.names("d"), ["a", "b"]);
}

#[test]
fn a_fired_cut_freezes_the_filesystem_until_the_cut() {
    if !powercut::available() {
        return;
    }
    let mut m = Mnt::new(Options::default());
    write_file(&m.p("f"), b"before", true);
    let child = python(
        "fd = os.open(path, os.O_WRONLY | os.O_APPEND)\nos.write(fd, b'x')\nos.fsync(fd)",
        &m.p("f"),
    );
    cut_inside(&mut m, child, OpKind::Fsync, "f", 0, When::Before);
    let err = fs::read(m.p("f")).expect_err("frozen");
    assert_eq!(err.raw_os_error(), Some(libc::EIO));
    m.fs.cut();
    assert!(!m.fs.fired());
    assert_eq!(m.read("f").as_deref(), Some(&b"before"[..]));
}

#[test]
fn the_mount_works_normally_after_a_cut() {
    if !powercut::available() {
        return;
    }
    let mut m = Mnt::new(Options::default());
    write_file(&m.p("f"), b"one", true);
    let ino_before = fs::metadata(m.p("f")).expect("stat").ino();
    m.fs.cut();
    write_file(&m.p("g"), b"two", true);
    append(&m.p("f"), b"+", true);
    let mut s = String::new();
    File::open(m.p("f"))
        .and_then(|mut f| f.read_to_string(&mut s))
        .expect("read");
    assert_eq!(s, "one+");
    fs::create_dir_all(m.p("a/b/c")).expect("mkdir -p");
    write_file(&m.p("a/b/c/deep"), b"deep", true);
    m.fs.cut();
    assert_eq!(m.read("f").as_deref(), Some(&b"one+"[..]));
    assert_eq!(m.read("g").as_deref(), Some(&b"two"[..]));
    assert_eq!(m.read("a/b/c/deep").as_deref(), Some(&b"deep"[..]));
    assert_eq!(m.names(""), ["a", "f", "g"]);
    assert_eq!(
        fs::metadata(m.p("f")).expect("stat").ino(),
        ino_before,
        "the same inode survives"
    );
    // Inode numbers are not reused.
    fs::remove_file(m.p("g")).expect("unlink");
    write_file(&m.p("h"), b"", false);
    let mut inos: Vec<u64> = ["f", "h", "a", "a/b"]
        .iter()
        .map(|f| fs::metadata(m.p(f)).expect("stat").ino())
        .collect();
    inos.sort();
    inos.dedup();
    assert_eq!(inos.len(), 4);
}

#[test]
fn rename_noreplace_and_replace() {
    if !powercut::available() {
        return;
    }
    let m = Mnt::new(Options::default());
    write_file(&m.p("a"), b"A", true);
    write_file(&m.p("b"), b"B", true);
    let c = |s: &str| {
        std::ffi::CString::new(m.p(s).into_os_string().into_encoded_bytes()).expect("cstring")
    };
    let (a, b) = (c("a"), c("b"));
    // SAFETY: valid NUL-terminated paths.
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    assert_eq!(rc, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EEXIST)
    );
    fs::rename(m.p("a"), m.p("b")).expect("replace");
    assert_eq!(m.names(""), ["b"]);
    assert_eq!(m.read("b").as_deref(), Some(&b"A"[..]));
}

#[test]
fn the_op_log_shows_what_the_kernel_sent() {
    if !powercut::available() {
        return;
    }
    let m = Mnt::new(Options::default());
    write_file(&m.p("f"), b"12345", false);
    append(&m.p("f"), b"678", true);
    write_file(&m.p("f"), b"x", false); // O_TRUNC of an existing file
    fs::rename(m.p("f"), m.p("g")).expect("rename");
    fs::remove_file(m.p("g")).expect("unlink");
    m.sync_dir("");
    let p = PathBuf::from;
    let ops = m.fs.ops();
    assert_eq!(
        ops,
        [
            LoggedOp::Create { path: p("f") },
            LoggedOp::Write {
                path: p("f"),
                offset: 0,
                len: 5
            },
            LoggedOp::Write {
                path: p("f"),
                offset: 5,
                len: 3
            },
            LoggedOp::Fsync {
                path: p("f"),
                datasync: true
            },
            LoggedOp::SetSize {
                path: p("f"),
                size: 0
            },
            LoggedOp::Write {
                path: p("f"),
                offset: 0,
                len: 1
            },
            LoggedOp::Rename {
                from: p("f"),
                to: p("g")
            },
            LoggedOp::Unlink { path: p("g") },
            LoggedOp::FsyncDir { path: p("") },
        ],
        "{ops:#?}"
    );
    m.fs.clear_ops();
    assert!(m.fs.ops().is_empty());
}

#[test]
fn flock_works_on_the_mount() {
    if !powercut::available() {
        return;
    }
    let m = Mnt::new(Options::default());
    write_file(&m.p("lock"), b"", true);
    let a = File::open(m.p("lock")).expect("open a");
    let b = File::open(m.p("lock")).expect("open b");
    // SAFETY: flock on descriptors we own.
    let flock = |f: &File, op| unsafe { libc::flock(f.as_raw_fd(), op) };
    assert_eq!(flock(&a, libc::LOCK_EX | libc::LOCK_NB), 0);
    assert_eq!(flock(&b, libc::LOCK_EX | libc::LOCK_NB), -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EWOULDBLOCK)
    );
    // Another process is refused too.
    let out = Command::new("python3")
        .args(["-c", "import fcntl, sys\nf = open(sys.argv[1])\ntry:\n    fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n    print('locked')\nexcept BlockingIOError:\n    print('busy')"])
        .arg(m.p("lock"))
        .output()
        .expect("python3");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "busy");
    assert_eq!(flock(&a, libc::LOCK_UN), 0);
    assert_eq!(flock(&b, libc::LOCK_EX | libc::LOCK_NB), 0);
}

/// Space allocated ahead (`fallocate`, mode 0, as the queue's segments are) reads as zeros and
/// grows the file; like a size change, it is durable only with an fsync of the file, and data
/// written into it and fsynced survives a cut with the size it needs.
#[test]
fn allocated_space_reads_as_zeros_and_is_durable_with_an_fsync() {
    if !powercut::available() {
        return;
    }
    let mut m = Mnt::new(Options::default());
    write_file(&m.p("seg"), b"head", true);
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.p("seg"))
        .expect("open");
    rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 4, 8192).expect("fallocate");
    assert_eq!(fs::metadata(m.p("seg")).expect("stat").len(), 8196);
    assert_eq!(&m.read("seg").expect("read")[..8], b"head\0\0\0\0");
    // Not synced: a cut takes the allocation back.
    m.cut_checked(&["seg"]);
    assert_eq!(m.read("seg").as_deref(), Some(&b"head"[..]));
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(m.p("seg"))
        .expect("open");
    rustix::fs::fallocate(&f, rustix::fs::FallocateFlags::empty(), 4, 8192).expect("fallocate");
    std::os::unix::fs::FileExt::write_all_at(&f, b"rec", 4).expect("write");
    f.sync_data().expect("fdatasync");
    drop(f);
    m.cut_checked(&["seg"]);
    let back = m.read("seg").expect("read");
    assert_eq!(back.len(), 8196);
    assert_eq!(&back[..7], b"headrec");
    assert!(back[7..].iter().all(|&b| b == 0));
}

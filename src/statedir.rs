//! The gateway's claim on its `gateway.state_dir`: one process at a time.
//!
//! Two gateways on one queue would each number, send and delete the other's records (readings
//! lost without a word), so the second refuses to start, naming the directory and the process
//! holding it. The claim is an advisory `flock` on `<state_dir>/lock`, held for the life of the
//! process and released by the kernel when it exits, however it exits (kill -9 included): a
//! stale lock file never blocks a restart. The file holds the holder's PID, for the message.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};

use rustix::fs::{flock, FlockOperation};

/// Name of the lock file in the state_dir.
pub const LOCK_FILE: &str = "lock";

/// A held claim; dropping it (or exiting) releases it.
#[derive(Debug)]
pub struct StateLock {
    _file: File,
    /// The lock file.
    pub path: PathBuf,
}

/// Why the state_dir could not be claimed.
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// Another process holds it.
    #[error("gateway.state_dir {dir} is in use by another serial2mqtt ({holder}): two gateways on one state_dir lose each other's queued messages. Stop the other one first (`systemctl stop serial2mqtt` if it is the service), or give this one a state_dir of its own")]
    Held {
        /// The state_dir.
        dir: PathBuf,
        /// "PID n", or "its PID is unknown".
        holder: String,
    },
    /// The lock file could not be created or locked.
    #[error("cannot lock {path}: {source} (check gateway.state_dir: it must be writable by the service user)")]
    Io {
        /// The lock file.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

/// Claims `dir` for this process: created if missing (durably) when `create`, else claimed
/// only if it exists (`Ok(None)` otherwise: a gateway without an uplink stores nothing there
/// and should not create it).
pub fn lock(dir: &Path, create: bool) -> Result<Option<StateLock>, LockError> {
    let path = dir.join(LOCK_FILE);
    let io_err = |source| LockError::Io {
        path: path.clone(),
        source,
    };
    if dir.exists() && !dir.is_dir() {
        return Err(LockError::Io {
            path: dir.to_owned(),
            source: io::Error::new(
                io::ErrorKind::InvalidInput,
                "gateway.state_dir is not a directory",
            ),
        });
    }
    if !create && !dir.is_dir() {
        return Ok(None);
    }
    if create {
        crate::queue::create_dir_durable(dir).map_err(io_err)?;
    }
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(io_err)?;
    match flock(&file, FlockOperation::NonBlockingLockExclusive) {
        Ok(()) => {}
        Err(e) if e == rustix::io::Errno::WOULDBLOCK => {
            let mut text = String::new();
            let _ = file.read_to_string(&mut text);
            let holder = match text.trim().parse::<u32>() {
                Ok(pid) => format!("PID {pid}"),
                Err(_) => "its PID is unknown".to_string(),
            };
            return Err(LockError::Held {
                dir: dir.to_owned(),
                holder,
            });
        }
        Err(e) => return Err(io_err(e.into())),
    }
    // The PID is for the message above only: nothing depends on it surviving a power cut.
    file.set_len(0)
        .and_then(|()| file.rewind())
        .and_then(|()| writeln!(file, "{}", std::process::id()))
        .map_err(io_err)?;
    Ok(Some(StateLock { _file: file, path }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_claim_fails_naming_the_holder_and_a_released_one_is_free_again() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        assert!(
            lock(&state, false).unwrap().is_none(),
            "not created without an uplink"
        );
        assert!(!state.exists());
        let first = lock(&state, true).unwrap();
        let e = lock(&state, false).unwrap_err().to_string();
        assert!(e.contains(&format!("PID {}", std::process::id())), "{e}");
        assert!(e.contains(&state.display().to_string()), "{e}");
        drop(first);
        assert!(lock(&state, false).unwrap().is_some());
    }
}

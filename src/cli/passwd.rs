//! `serial2mqtt passwd FILE USER`: sets a local broker login in `broker.users_file`, as a salted
//! PBKDF2-SHA512 hash in mosquitto_passwd's format (so the file also works for mosquitto).
//!
//! The password is asked twice on a terminal, without echo; from a pipe it is the first line
//! of stdin (`echo "$PW" | serial2mqtt passwd ...`, for scripts). The file is replaced
//! atomically (a temporary file beside it, synced, renamed), keeping its mode, or created
//! 0640. `--delete` removes the user's line. A running gateway reads the change on reload.

use std::io::{BufRead as _, IsTerminal as _, Write as _};
use std::num::NonZeroU32;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::ExitCode;

use crate::broker::passwords;

/// What `passwd` was asked to do.
pub struct Request<'a> {
    /// The users file.
    pub file: &'a Path,
    /// The login.
    pub user: &'a str,
    /// Remove the user instead of setting a password.
    pub delete: bool,
    /// PBKDF2 rounds.
    pub iterations: u32,
}

/// Runs `serial2mqtt passwd`.
pub fn main(req: &Request<'_>) -> ExitCode {
    match run(req) {
        Ok(done) => {
            println!("{done}");
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("serial2mqtt passwd: {why}");
            ExitCode::FAILURE
        }
    }
}

fn run(req: &Request<'_>) -> Result<String, String> {
    let user = req.user;
    if user.is_empty() || user.contains([':', '\n', '\r']) || user.starts_with('#') {
        return Err(format!(
            "`{user}` cannot be a user name (no `:`, line breaks or leading `#`)"
        ));
    }
    let text = match std::fs::read_to_string(req.file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !req.delete => String::new(),
        Err(e) => return Err(format!("cannot read {}: {e}", req.file.display())),
    };
    let exists = text
        .lines()
        .any(|l| l.split_once(':').is_some_and(|(u, _)| u == user));
    let new_text = if req.delete {
        if !exists {
            return Err(format!("{} has no user `{user}`", req.file.display()));
        }
        text.lines()
            .filter(|l| l.split_once(':').is_none_or(|(u, _)| u != user))
            .map(|l| format!("{l}\n"))
            .collect()
    } else {
        let password = read_password()?;
        let iterations = NonZeroU32::new(req.iterations)
            .ok_or("--iterations must be at least 1 (the default is best)")?;
        let secret = passwords::hash(&password, iterations)?;
        passwords::set_line(&text, user, &secret)
    };
    replace(req.file, &new_text)?;
    Ok(match (req.delete, exists) {
        (true, _) => format!("removed `{user}` from {}", req.file.display()),
        (false, true) => format!("changed the password of `{user}` in {}", req.file.display()),
        (false, false) => format!("added `{user}` to {}", req.file.display()),
    })
}

/// The new password: asked twice on a terminal, else the first line of stdin.
fn read_password() -> Result<String, String> {
    let password = if std::io::stdin().is_terminal() {
        let first = rpassword::prompt_password("Password: ")
            .map_err(|e| format!("cannot read the password: {e}"))?;
        let again = rpassword::prompt_password("Again: ")
            .map_err(|e| format!("cannot read the password: {e}"))?;
        if first != again {
            return Err("the two passwords differ; nothing changed".into());
        }
        first
    } else {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .map_err(|e| format!("cannot read the password from stdin: {e}"))?;
        line.trim_end_matches(['\n', '\r']).to_owned()
    };
    if password.is_empty() {
        return Err("an empty password; nothing changed".into());
    }
    Ok(password)
}

/// Writes `text` as `file`'s new content: all or nothing, synced, with the old mode and
/// owner (new files 0640: the gateway's group reads it, nobody else).
fn replace(file: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::{MetadataExt as _, OpenOptionsExt as _};
    let dir = match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let old = std::fs::metadata(file).ok();
    let mode = old
        .as_ref()
        .map_or(0o640, |m| m.permissions().mode() & 0o7777);
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.passwd-{}", std::process::id()));
    let fail = |e: std::io::Error| format!("cannot write {}: {e}", file.display());
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        // The mode asked for is cut by the umask: set it as it was.
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        if let Some(m) = &old {
            // Root editing a root:serial2mqtt file keeps its group (the gateway reads it).
            let _ = std::os::unix::fs::fchown(&f, Some(m.uid()), Some(m.gid()));
        }
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, file)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(fail(e));
    }
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

//! Local broker logins as the users file stores them, checked at CONNECT.
//!
//! A line is `user:secret`. The secret is a hash in mosquitto_passwd's formats, so a mosquitto
//! password file works as it is: `$7$ITERATIONS$SALT$HASH` (PBKDF2-HMAC-SHA512, base64 salt and
//! 64-byte hash: mosquitto 2.0 and `serial2mqtt passwd`) or `$6$SALT$HASH` (one salted SHA-512,
//! mosquitto 1.x). Anything else is a plain-text password, still accepted with a warning
//! naming its line. Comparisons are constant-time; PBKDF2 comes from ring (already linked for
//! TLS), the encodings from base64. Nothing here ever logs or displays a secret.

use std::num::NonZeroU32;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ring::{digest, pbkdf2};
use subtle::ConstantTimeEq as _;

/// PBKDF2 rounds of the hashes `serial2mqtt passwd` writes: ~35 ms per login on the project's
/// 2-core x86 development machine (OpenSSL's PBKDF2 as the yardstick, a build running beside
/// it), several times that on a Pi Zero; mosquitto_passwd's 101 rounds cost a brute force
/// almost nothing.
pub const ITERATIONS: u32 = 20_000;
const SALT_LEN: usize = 12;
const HASH_LEN: usize = 64;

/// One user's stored secret.
#[derive(Clone, PartialEq, Eq)]
pub enum Secret {
    /// A plain-text password (deprecated: readable by whoever reads the file).
    Plain(String),
    /// PBKDF2-HMAC-SHA512 (`$7$`).
    Pbkdf2 {
        /// Rounds.
        iterations: NonZeroU32,
        /// Salt.
        salt: Vec<u8>,
        /// Derived key.
        hash: Vec<u8>,
    },
    /// One SHA-512 of password then salt (`$6$`, mosquitto 1.x).
    Sha512 {
        /// Salt.
        salt: Vec<u8>,
        /// Digest.
        hash: Vec<u8>,
    },
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Secret::Plain(_) => "Secret::Plain(hidden)",
            Secret::Pbkdf2 { .. } => "Secret::Pbkdf2(hidden)",
            Secret::Sha512 { .. } => "Secret::Sha512(hidden)",
        })
    }
}

impl Secret {
    /// Reads the part of a users-file line after `user:`. Err says what is wrong with a hash
    /// (never what it holds).
    pub fn parse(stored: &str) -> Result<Self, String> {
        let Some(rest) = stored.strip_prefix('$') else {
            return Ok(Secret::Plain(stored.to_owned()));
        };
        let parts: Vec<&str> = rest.split('$').collect();
        let b64 = |what: &str, s: &str| {
            STANDARD
                .decode(s)
                .map_err(|_| format!("its {what} is not base64"))
        };
        match parts.as_slice() {
            ["7", iterations, salt, hash] => {
                let iterations = iterations
                    .parse::<u32>()
                    .ok()
                    .and_then(NonZeroU32::new)
                    .ok_or("its iteration count is not a positive number")?;
                let (salt, hash) = (b64("salt", salt)?, b64("hash", hash)?);
                if hash.len() != HASH_LEN {
                    return Err(format!("its hash is {} bytes, not {HASH_LEN}", hash.len()));
                }
                Ok(Secret::Pbkdf2 {
                    iterations,
                    salt,
                    hash,
                })
            }
            ["6", salt, hash] => {
                let (salt, hash) = (b64("salt", salt)?, b64("hash", hash)?);
                if hash.len() != HASH_LEN {
                    return Err(format!("its hash is {} bytes, not {HASH_LEN}", hash.len()));
                }
                Ok(Secret::Sha512 { salt, hash })
            }
            [kind, ..] => Err(format!(
                "`${kind}$` is not a known hash (serial2mqtt passwd and mosquitto_passwd write $7$)"
            )),
            [] => Err("an empty hash".into()),
        }
    }

    /// Whether `password` is this secret's, in constant time for equal lengths.
    pub fn verify(&self, password: &str) -> bool {
        match self {
            Secret::Plain(p) => p.as_bytes().ct_eq(password.as_bytes()).into(),
            Secret::Pbkdf2 {
                iterations,
                salt,
                hash,
            } => pbkdf2::verify(
                pbkdf2::PBKDF2_HMAC_SHA512,
                *iterations,
                salt,
                password.as_bytes(),
                hash,
            )
            .is_ok(),
            Secret::Sha512 { salt, hash } => {
                let mut ctx = digest::Context::new(&digest::SHA512);
                ctx.update(password.as_bytes());
                ctx.update(salt);
                ctx.finish().as_ref().ct_eq(hash).into()
            }
        }
    }

    /// The plain-text password, if that is how it is stored (for `status` logging in).
    pub fn plain(&self) -> Option<&str> {
        match self {
            Secret::Plain(p) => Some(p),
            _ => None,
        }
    }
}

/// A new `$7$` hash of `password` with a random salt.
pub fn hash(password: &str, iterations: NonZeroU32) -> Result<String, String> {
    let mut salt = [0u8; SALT_LEN];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut salt)
        .map_err(|_| "the system's random number generator failed".to_owned())?;
    let mut out = [0u8; HASH_LEN];
    pbkdf2::derive(
        pbkdf2::PBKDF2_HMAC_SHA512,
        iterations,
        &salt,
        password.as_bytes(),
        &mut out,
    );
    Ok(format!(
        "$7${iterations}${}${}",
        STANDARD.encode(salt),
        STANDARD.encode(out)
    ))
}

/// `text` (a users file) with `user`'s line set to `secret` (replaced where it was, appended
/// otherwise); comments and other lines kept as they are.
pub fn set_line(text: &str, user: &str, secret: &str) -> String {
    let mut out = String::with_capacity(text.len() + user.len() + secret.len() + 2);
    let mut done = false;
    for line in text.lines() {
        let is_user = line
            .split_once(':')
            .is_some_and(|(u, _)| u == user && !line.trim_start().starts_with('#'));
        if is_user && !done {
            out.push_str(&format!("{user}:{secret}\n"));
            done = true;
        } else if !is_user {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !done {
        out.push_str(&format!("{user}:{secret}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hash_written_here_verifies_and_a_wrong_password_does_not() {
        let stored = hash("s3cret pass", NonZeroU32::new(1000).unwrap()).unwrap();
        assert!(stored.starts_with("$7$1000$"), "{stored}");
        let s = Secret::parse(&stored).unwrap();
        assert!(s.verify("s3cret pass"));
        assert!(!s.verify("s3cret pasS"));
        assert!(!s.verify(""));
        assert_ne!(
            stored,
            hash("s3cret pass", NonZeroU32::new(1000).unwrap()).unwrap(),
            "salted"
        );
        assert!(!format!("{s:?}").contains("$7$"), "Debug hides it");
    }

    /// RFC 6070-style check of the PBKDF2-HMAC-SHA512 parameters: the published test vector
    /// for P = "password", S = "salt", c = 1, dkLen = 64.
    #[test]
    fn pbkdf2_sha512_matches_the_published_vector() {
        let hash = hex::decode(
            "867f70cf1ade02cff3752599a3a53dc4af34c7a669815ae5d513554e1c8cf252\
             c02d470a285a0501bad999bfe943c08f050235d7d68b1da55e63f73b60a57fce",
        )
        .unwrap();
        let stored = format!(
            "$7$1${}${}",
            STANDARD.encode(b"salt"),
            STANDARD.encode(&hash)
        );
        let s = Secret::parse(&stored).unwrap();
        assert!(s.verify("password"));
        assert!(!s.verify("Password"));
    }

    #[test]
    fn plain_and_sha512_lines_verify_and_broken_hashes_say_why() {
        assert!(Secret::parse("a-long-password")
            .unwrap()
            .verify("a-long-password"));
        assert!(Secret::parse("a-long-password").unwrap().plain().is_some());
        let salt = b"0123456789ab";
        let mut ctx = digest::Context::new(&digest::SHA512);
        ctx.update(b"pw");
        ctx.update(salt);
        let stored = format!(
            "$6${}${}",
            STANDARD.encode(salt),
            STANDARD.encode(ctx.finish().as_ref())
        );
        assert!(Secret::parse(&stored).unwrap().verify("pw"));
        for (bad, why) in [
            ("$7$0$AAAA$AAAA", "iteration"),
            ("$7$101$!!$AAAA", "salt is not base64"),
            ("$7$101$AAAA$AAAA", "not 64"),
            ("$2b$10$abc", "not a known hash"),
        ] {
            let e = Secret::parse(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn set_line_replaces_the_users_line_or_appends_it() {
        let text = "# logins\nha:$7$1$a$b\ndash:old\n";
        assert_eq!(
            set_line(text, "dash", "new"),
            "# logins\nha:$7$1$a$b\ndash:new\n"
        );
        assert_eq!(
            set_line(text, "bob", "x"),
            "# logins\nha:$7$1$a$b\ndash:old\nbob:x\n"
        );
        assert_eq!(set_line("", "bob", "x"), "bob:x\n");
    }
}

//! The logins and access rules in force, swapped on reload (`systemctl reload`), as mosquitto
//! re-reads its password and acl files on SIGHUP: the next login is checked against the new
//! users file, and every later packet of a connected client against the new rules.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use super::acl::Acl;
use crate::config::schema;

/// The current logins and rules, with a generation number that changes with them (a relayed
/// client compares it per packet and takes its new rights when it moved).
#[derive(Debug, Default)]
pub struct Access {
    now: RwLock<Snapshot>,
    generation: AtomicU64,
}

/// Logins and rules at one moment.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Logins (None: no users file).
    pub users: Option<Arc<schema::Users>>,
    /// Access rules (None: whoever may connect may read and write everything).
    pub acl: Option<Arc<Acl>>,
}

impl Snapshot {
    fn of(settings: &schema::Broker) -> Snapshot {
        Snapshot {
            users: settings.users.clone().map(Arc::new),
            acl: settings.acl.clone().map(Arc::new),
        }
    }
}

impl Access {
    /// The logins and rules of `settings`.
    pub fn new(settings: &schema::Broker) -> Arc<Access> {
        Arc::new(Access {
            now: RwLock::new(Snapshot::of(settings)),
            generation: AtomicU64::new(0),
        })
    }

    /// What is in force now.
    pub fn snapshot(&self) -> Snapshot {
        match self.now.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Changes whenever [`Access::replace`] ran.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Puts the logins and rules of `settings` in force.
    pub fn replace(&self, settings: &schema::Broker) {
        let new = Snapshot::of(settings);
        match self.now.write() {
            Ok(mut s) => *s = new,
            Err(poisoned) => *poisoned.into_inner() = new,
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
    }
}

/// What the running broker can change on reload: its logins and access rules (the gatekeeper
/// checks every login and packet against what is in force).
#[derive(Debug, Clone)]
pub struct AccessControl {
    access: Arc<Access>,
}

impl AccessControl {
    pub(super) fn new(access: Arc<Access>) -> Self {
        Self { access }
    }

    /// Puts the reloaded logins and rules of `new` in force.
    pub fn reload(&self, new: &schema::Broker) {
        self.access.replace(new);
    }
}

/// Checks a login against the users on the blocking pool (PBKDF2 takes milliseconds, too long
/// for a connection's task). An unknown user name costs what a known one costs, so timing does
/// not tell which names exist: the password is verified against a real user's hash (the first
/// name in order), whose algorithm and rounds are the file's, and refused whatever the result.
/// A fixed decoy would not do: a mosquitto_passwd file's 101 rounds verify in 0.3 ms, ours in
/// 12 ms.
pub async fn check_login(users: Arc<schema::Users>, user: String, password: String) -> bool {
    tokio::task::spawn_blocking(move || match users.0.get(&user) {
        Some(secret) => secret.verify(&password),
        None => {
            let decoy = users.0.iter().min_by(|a, b| a.0.cmp(b.0)).map(|(_, s)| s);
            if let Some(secret) = decoy {
                std::hint::black_box(secret.verify(&password));
            }
            false
        }
    })
    .await
    .unwrap_or(false)
}

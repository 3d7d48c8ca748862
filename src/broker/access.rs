//! The logins and access rules in force, swapped on reload (`systemctl reload`), as mosquitto
//! re-reads its password and acl files on SIGHUP: the next login is checked against the new
//! users file, and every later packet of a connected client against the new rules.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use std::num::NonZeroU32;

use super::acl::Acl;
use super::passwords::{self, Secret, ITERATIONS};
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

/// What the running broker can change on reload: with the gatekeeper, logins and rules; with
/// rumqttd listening directly, the logins of a broker that started with logins.
#[derive(Debug, Clone)]
pub struct AccessControl {
    access: Arc<Access>,
    gated: bool,
    logins_at_start: bool,
}

impl AccessControl {
    pub(super) fn new(access: Arc<Access>, gated: bool, logins_at_start: bool) -> Self {
        Self {
            access,
            gated,
            logins_at_start,
        }
    }

    /// Puts the reloaded logins and rules of `new` in force; an error says what needs a
    /// restart instead (nothing changed then).
    pub fn reload(&self, new: &schema::Broker) -> Result<(), String> {
        if !self.gated {
            if new.acl.is_some() {
                return Err("access rules (acl_file) on a broker started without them".into());
            }
            if new.users.is_some() != self.logins_at_start {
                return Err(if self.logins_at_start {
                    "turning logins (users_file) off".into()
                } else {
                    "logins (users_file) on a broker started without them".into()
                });
            }
        }
        self.access.replace(new);
        Ok(())
    }
}

/// Checks a login against the users on the blocking pool (PBKDF2 takes milliseconds, too long
/// for a connection's task); an unknown user costs a verification too, so timing does not
/// tell which names exist.
pub async fn check_login(users: Arc<schema::Users>, user: String, password: String) -> bool {
    tokio::task::spawn_blocking(move || match users.0.get(&user) {
        Some(secret) => secret.verify(&password),
        None => {
            decoy().verify(&password);
            false
        }
    })
    .await
    .unwrap_or(false)
}

/// A hash to verify against for unknown user names (same cost as a real one).
fn decoy() -> &'static Secret {
    static DECOY: std::sync::OnceLock<Secret> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        let iterations = NonZeroU32::new(ITERATIONS).unwrap_or(NonZeroU32::MIN);
        passwords::hash("decoy", iterations)
            .ok()
            .and_then(|h| Secret::parse(&h).ok())
            .unwrap_or(Secret::Plain(String::new()))
    })
}

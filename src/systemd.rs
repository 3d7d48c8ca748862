//! Life under systemd: readiness, status, reload and watchdog notifications (`sd_notify`), and
//! logging to the journal when systemd gave us our stderr, human-readable stderr otherwise.
//!
//! Everything here is a no-op outside systemd (no `NOTIFY_SOCKET`, no `JOURNAL_STREAM`), so the
//! daemon behaves the same when run by hand.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use sd_notify::NotifyState;
use systemd_journal_logger::JournalLog;
use tracing::field::{Field, Visit};
use tracing::{warn, Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer, SubscriberExt};
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::EnvFilter;

use crate::recent::Recent;

/// The name the journal files our lines under (`journalctl -t serial2mqtt`).
pub const SYSLOG_IDENTIFIER: &str = "serial2mqtt";

/// The log filter: `RUST_LOG` if set, else `log.level` with the dependencies' routine noise off.
pub fn log_filter(level: &str) -> String {
    match std::env::var("RUST_LOG") {
        Ok(f) if !f.is_empty() => f,
        // rumqttd logs every client connect and disconnect, some at ERROR: silent unless asked
        // for (`log.level: "info,rumqttd=warn"`). A listen failure is reported by us. rumqttc
        // reports what our uplink reports better (with the cause and the retry): warnings only.
        _ => {
            let mut f = level.to_owned();
            if !level.contains("rumqttd") {
                f.push_str(",rumqttd=off");
            }
            if !level.contains("rumqttc") {
                f.push_str(",rumqttc=warn");
            }
            f
        }
    }
}

/// Installs the global logger: the journal when stderr is systemd's journal stream, stderr
/// otherwise (ANSI colours only on a terminal); and, with a dashboard, its ring of the last
/// lines. `log` records (rumqttc's) pass through the same filter.
pub fn init_logging(level: &str, recent: Option<Arc<Recent>>) {
    let filter = EnvFilter::new(log_filter(level));
    let ring = recent.map(|recent| RecentLayer { recent });
    if systemd_journal_logger::connected_to_journal() {
        match JournalLog::new() {
            Ok(journal) => {
                let journal = journal.with_syslog_identifier(SYSLOG_IDENTIFIER.to_owned());
                tracing_subscriber::registry()
                    .with(filter)
                    .with(JournalLayer { journal })
                    .with(ring)
                    .init();
                return;
            }
            Err(e) => eprintln!("serial2mqtt: cannot log to the journal ({e}); logging to stderr"),
        }
    }
    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
        )
        .with(ring)
        .init();
}

/// Keeps each log line in the dashboard's ring, with its level and device.
struct RecentLayer {
    recent: Arc<Recent>,
}

impl<S: Subscriber> Layer<S> for RecentLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut text = fields.message;
        let mut device = None;
        for (k, v) in fields.pairs {
            if k == "device" && device.is_none() {
                device = Some(v);
            } else {
                let _ = write!(text, " {k}={v}");
            }
        }
        self.recent
            .log(event.metadata().level().as_str(), device, text);
    }
}

/// Sends tracing events to the journal: the message plus `key=value` text in `MESSAGE` (what
/// `journalctl` shows), each field also as a journal field of its own (`DEVICE=greenhouse`), and
/// the level as `PRIORITY`.
struct JournalLayer {
    journal: JournalLog,
}

#[derive(Default)]
struct Fields {
    message: String,
    pairs: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        self.put(field, value.to_owned());
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        self.put(field, format!("{value:?}"));
    }
}

impl Fields {
    fn put(&mut self, field: &Field, value: String) {
        match field.name() {
            "message" => self.message = value,
            // Records bridged from `log` carry these; the journal record has them already.
            name if name.starts_with("log.") => {}
            name => self.pairs.push((name.to_owned(), value)),
        }
    }
}

/// The fields of one event as `log` key-values, for the journal logger.
struct Pairs<'a>(&'a [(String, String)]);

impl log::kv::Source for Pairs<'_> {
    fn visit<'kvs>(
        &'kvs self,
        visitor: &mut dyn log::kv::VisitSource<'kvs>,
    ) -> Result<(), log::kv::Error> {
        for (k, v) in self.0 {
            visitor.visit_pair(log::kv::Key::from_str(k), log::kv::Value::from(v.as_str()))?;
        }
        Ok(())
    }
}

impl<S: Subscriber> Layer<S> for JournalLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut fields = Fields::default();
        event.record(&mut fields);
        let mut text = fields.message;
        for (k, v) in &fields.pairs {
            let _ = write!(text, " {k}={v}");
        }
        let meta = event.metadata();
        let level = match *meta.level() {
            Level::ERROR => log::Level::Error,
            Level::WARN => log::Level::Warn,
            Level::INFO => log::Level::Info,
            Level::DEBUG => log::Level::Debug,
            Level::TRACE => log::Level::Trace,
        };
        let pairs = Pairs(&fields.pairs);
        // Nowhere to report a failed send to: the journal is where reports go.
        let _ = self.journal.journal_send(
            &log::Record::builder()
                .args(format_args!("{text}"))
                .level(level)
                .target(meta.target())
                .module_path(meta.module_path())
                .file(meta.file())
                .line(meta.line())
                .key_values(&pairs)
                .build(),
        );
    }
}

/// Notifications to the service manager; each a no-op when systemd did not ask for them.
#[derive(Debug, Clone, Copy)]
pub struct Systemd {
    watchdog: Option<Duration>,
}

impl Systemd {
    /// Reads what the service manager asked for from the environment.
    pub fn from_env() -> Self {
        Self {
            watchdog: sd_notify::watchdog_enabled(),
        }
    }

    /// How often to ping the watchdog: half its timeout, as systemd recommends.
    pub fn watchdog_every(&self) -> Option<Duration> {
        self.watchdog.map(|d| d / 2)
    }

    fn send(&self, states: &[NotifyState]) {
        if let Err(e) = sd_notify::notify(states) {
            warn!("cannot notify systemd: {e}");
        }
    }

    /// Startup is complete: the local broker listens and the queue is open.
    pub fn ready(&self, status: &str) {
        self.send(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// A one-line status for `systemctl status`.
    pub fn status(&self, status: &str) {
        self.send(&[NotifyState::Status(status)]);
    }

    /// The main loop is alive.
    pub fn watchdog(&self) {
        self.send(&[NotifyState::Watchdog]);
    }

    /// A reload (SIGHUP) began; [`Systemd::ready`] ends it.
    pub fn reloading(&self) {
        match NotifyState::monotonic_usec_now() {
            Ok(now) => self.send(&[NotifyState::Reloading, now]),
            Err(_) => self.send(&[NotifyState::Reloading]),
        }
    }

    /// Shutdown began.
    pub fn stopping(&self) {
        self.send(&[NotifyState::Stopping, NotifyState::Status("stopping")]);
    }
}

//! `gateway:` and `log:`: the gateway's identity, its own topics, the log filter.

use super::{builtin_only_template, name_problem, Problems};
use crate::config::model::Gateway;
use crate::config::schema;
use crate::rules::template::Template;

/// The checked `gateway:` section, and the templates of the topics it gives each device.
pub(super) struct GatewayParts {
    /// Identity, state directory, stats period.
    pub gateway: Gateway,
    /// `gateway.state_topic`, when it is valid.
    pub state_topic: Option<Template>,
    /// `gateway.unmatched_topic`, when set and valid.
    pub unmatched_topic: Option<Template>,
}

/// Checks `gateway:` (the id defaults to the host name).
pub(super) fn check(raw: schema::Gateway, p: &mut Problems) -> GatewayParts {
    let id = match raw.id {
        Some(id) => id,
        None => gethostname::gethostname().to_string_lossy().into_owned(),
    };
    if let Some(why) = name_problem(&id) {
        p.error(
            "gateway.id",
            format!("gateway id `{id}` {why}"),
            Some("use letters, digits, - and _, e.g. `greenhouse-pi`".into()),
        );
    }
    let state_topic = builtin_only_template(&raw.state_topic)
        .map_err(|e| p.error("gateway.state_topic", e.message, e.help))
        .ok();
    let unmatched_topic = raw.unmatched_topic.as_deref().and_then(|t| {
        builtin_only_template(t)
            .map_err(|e| p.error("gateway.unmatched_topic", e.message, e.help))
            .ok()
    });

    GatewayParts {
        gateway: Gateway {
            id,
            state_dir: raw.state_dir,
            stats_interval: raw.stats_interval,
        },
        state_topic,
        unmatched_topic,
    }
}

/// Checks `log.level` as a tracing filter.
pub(super) fn log_level(raw: &schema::Log, p: &mut Problems) {
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&raw.level) {
        p.error(
            "log.level",
            format!("`{}` is not a log filter: {e}", raw.level),
            Some("write error, warn, info, debug or trace".into()),
        );
    }
}

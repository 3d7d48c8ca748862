//! rumqttd's configuration, built from the `broker:` section.

use std::collections::HashMap;

use rumqttd::{
    Config as RumqttdConfig, ConnectionSettings, RouterConfig, ServerSettings, TlsConfig,
};

use std::sync::Arc;

use super::access::Access;
use crate::broker::passwords::{self, Secret};
use crate::config::schema;

/// rumqttd keeps each subscription filter's recent messages in a log of this many segments;
/// `broker.window` is split across them, and the oldest segment is dropped as a whole.
const SEGMENTS: usize = 4;

/// rumqttd's login check for our users: a hash is verified on the blocking pool (PBKDF2 takes
/// milliseconds, too long for the connection's task); an unknown user costs a verification too,
/// so timing does not tell which names exist.
fn authenticator(access: Arc<Access>) -> rumqttd::AuthHandler {
    Arc::new(move |_client_id, user, password| {
        // The users of now: a reload may have replaced them.
        let users = access.snapshot().users;
        Box::pin(async move {
            let Some(users) = users else {
                return false;
            };
            tokio::task::spawn_blocking(move || match users.0.get(&user) {
                Some(secret) => secret.verify(&password),
                None => {
                    decoy().verify(&password);
                    false
                }
            })
            .await
            .unwrap_or(false)
        })
    })
}

/// A hash to verify against for unknown user names (same cost as a real one).
pub(super) fn decoy() -> &'static Secret {
    static DECOY: std::sync::OnceLock<Secret> = std::sync::OnceLock::new();
    DECOY.get_or_init(|| {
        let iterations =
            std::num::NonZeroU32::new(passwords::ITERATIONS).unwrap_or(std::num::NonZeroU32::MIN);
        passwords::hash("decoy", iterations)
            .ok()
            .and_then(|h| Secret::parse(&h).ok())
            .unwrap_or(Secret::Plain(String::new()))
    })
}

/// The rumqttd configuration built from ours. With `gate` (its loopback address and the secret
/// the gatekeeper logs in with), rumqttd listens there, without TLS, for the gatekeeper only.
pub fn rumqttd_config(
    settings: &schema::Broker,
    access: Arc<Access>,
    gate: Option<(std::net::SocketAddr, String)>,
) -> RumqttdConfig {
    let connections = ConnectionSettings {
        connection_timeout_ms: settings.connect_timeout.as_millis().min(u16::MAX as u128) as u16,
        max_payload_size: settings.max_payload.as_u64() as usize,
        max_inflight_count: settings.max_inflight,
        auth: None,
        external_auth: match &gate {
            Some((_, secret)) => Some(super::gate::inner_auth(secret.clone())),
            None => settings.users.is_some().then(|| authenticator(access)),
        },
        dynamic_filters: false,
    };
    let server = ServerSettings {
        name: "local".to_owned(),
        listen: gate.as_ref().map(|(a, _)| *a).unwrap_or(settings.listen),
        tls: settings
            .tls
            .as_ref()
            .filter(|_| gate.is_none())
            .map(|t| TlsConfig::Rustls {
                capath: None,
                certpath: t.cert_file.to_string_lossy().into_owned(),
                keypath: t.key_file.to_string_lossy().into_owned(),
            }),
        next_connection_delay_ms: 1,
        connections,
    };
    let router = RouterConfig {
        // One more than the users' clients for the gateway's own link.
        max_connections: settings.max_connections + 1,
        max_outgoing_packet_count: 200,
        // rumqttd counts topic + payload bytes only (about 530 bytes of memory per small
        // message in practice), and memory grows with segment size (rumqtt issue #1001).
        // A message larger than a segment still fits: a segment may overflow by its last message.
        max_segment_size: (settings.window.as_u64() as usize / SEGMENTS).max(1024),
        max_segment_count: SEGMENTS,
        custom_segment: None,
        initialized_filters: None,
        shared_subscriptions_strategy: Default::default(),
    };
    RumqttdConfig {
        id: 0,
        router,
        v4: Some(HashMap::from([("local".to_owned(), server)])),
        ..Default::default()
    }
}

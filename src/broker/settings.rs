//! rumqttd's configuration, built from the `broker:` section.

use std::collections::HashMap;
use std::sync::Arc;

use rumqttd::{Config as RumqttdConfig, ConnectionSettings, RouterConfig, ServerSettings};

use crate::config::schema;

/// rumqttd keeps each subscription filter's recent messages in a log of this many segments;
/// `broker.window` is split across them, and the oldest segment is dropped as a whole.
const SEGMENTS: usize = 4;

/// rumqttd's login check on the gatekeeper's loopback listener: only this process knows the
/// secret.
fn inner_auth(secret: String) -> rumqttd::AuthHandler {
    use subtle::ConstantTimeEq as _;
    let secret = Arc::new(secret);
    Arc::new(move |_client_id, user, password| {
        let secret = Arc::clone(&secret);
        Box::pin(async move {
            user == super::gate::INNER_USER
                && bool::from(password.as_bytes().ct_eq(secret.as_bytes()))
        })
    })
}

/// The rumqttd configuration built from ours: rumqttd listens on `inner`, a loopback address,
/// without TLS, for the gatekeeper only (it logs in with `secret`).
pub fn rumqttd_config(
    settings: &schema::Broker,
    inner: std::net::SocketAddr,
    secret: String,
) -> RumqttdConfig {
    let connections = ConnectionSettings {
        connection_timeout_ms: settings.connect_timeout.as_millis().min(u16::MAX as u128) as u16,
        max_payload_size: settings.max_payload.as_u64() as usize,
        max_inflight_count: settings.max_inflight,
        auth: None,
        external_auth: Some(inner_auth(secret)),
        dynamic_filters: false,
    };
    let server = ServerSettings {
        name: "local".to_owned(),
        listen: inner,
        // TLS is the gatekeeper's: rumqttd only ever listens in plain TCP.
        tls: None,
        next_connection_delay_ms: 1,
        connections,
    };
    let router = RouterConfig {
        // The users' clients (the gatekeeper admits no more), the gateway's own link, and the
        // short connections that publish wills.
        max_connections: settings.max_connections + 1 + super::gate::WILLS_AT_ONCE,
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

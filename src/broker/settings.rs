//! rumqttd's configuration, built from the `broker:` section.

use std::collections::HashMap;

use rumqttd::{
    Config as RumqttdConfig, ConnectionSettings, RouterConfig, ServerSettings, TlsConfig,
};

use crate::config::schema;

/// rumqttd keeps each subscription filter's recent messages in a log of this many segments;
/// `broker.window` is split across them, and the oldest segment is dropped as a whole.
const SEGMENTS: usize = 4;

/// The rumqttd configuration built from ours.
pub fn rumqttd_config(settings: &schema::Broker) -> RumqttdConfig {
    let connections = ConnectionSettings {
        connection_timeout_ms: settings.connect_timeout.as_millis().min(u16::MAX as u128) as u16,
        max_payload_size: settings.max_payload.as_u64() as usize,
        max_inflight_count: settings.max_inflight,
        auth: settings.users.as_ref().map(|u| u.0.clone()),
        external_auth: None,
        dynamic_filters: false,
    };
    let server = ServerSettings {
        name: "local".to_owned(),
        listen: settings.listen,
        tls: settings.tls.as_ref().map(|t| TlsConfig::Rustls {
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

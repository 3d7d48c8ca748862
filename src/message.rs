//! The unit that flows from the rules to the broker (and, later, the uplink queue).

use bytes::Bytes;

/// One MQTT message produced by a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Topic, already rendered and validated (no wildcards).
    pub topic: String,
    /// Payload bytes.
    pub payload: Bytes,
    /// 0, 1 or 2.
    pub qos: u8,
    /// Retained on the broker.
    pub retain: bool,
}

/// Why a rendered topic cannot be published, or `None` when it can.
pub fn topic_problem(topic: &str) -> Option<&'static str> {
    if topic.is_empty() {
        Some("the topic is empty")
    } else if topic.contains(['+', '#']) {
        Some("the topic contains an MQTT wildcard (+ or #)")
    } else if topic.contains('\0') {
        Some("the topic contains a NUL character")
    } else if topic.len() > 65_535 {
        Some("the topic is longer than 65535 bytes")
    } else {
        None
    }
}

/// Where producers (devices) hand their messages; bounded, so a slow consumer slows the
/// producers instead of dropping messages.
pub type Outbox = tokio::sync::mpsc::Sender<Message>;

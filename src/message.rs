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

/// Why a subscription filter is not valid MQTT, or `None` when it is.
pub fn filter_problem(filter: &str) -> Option<&'static str> {
    if filter.is_empty() {
        return Some("the filter is empty");
    }
    if filter.contains('\0') {
        return Some("the filter contains a NUL character");
    }
    let levels: Vec<&str> = filter.split('/').collect();
    for (i, level) in levels.iter().enumerate() {
        if level.contains('#') && (*level != "#" || i + 1 != levels.len()) {
            return Some("`#` must be a whole level and the last one (sensors/#)");
        }
        if level.contains('+') && *level != "+" {
            return Some("`+` must be a whole level (sensors/+/temperature)");
        }
    }
    None
}

/// A set of MQTT filters (the uplink's `forward`): which local topics a message may be on to go
/// upstream. One type for the outlet (the gateway's own messages) and the bridge (local
/// clients'), so both decide alike; cheap to clone.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filters(std::sync::Arc<[String]>);

impl Filters {
    /// The filters, as written.
    pub fn new(filters: &[String]) -> Self {
        Self(filters.into())
    }

    /// Whether `topic` matches any of them.
    pub fn matches(&self, topic: &str) -> bool {
        self.0.iter().any(|f| topic_matches(f, topic))
    }
}

/// Whether `topic` matches the MQTT filter `filter` (`+` one level, `#` the rest); topics
/// starting with `$` match only filters that name them.
pub fn topic_matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && !filter.starts_with('$') {
        return false;
    }
    let mut t = topic.split('/');
    for f in filter.split('/') {
        match (f, t.next()) {
            ("#", _) => return true,
            ("+", Some(_)) => {}
            (f, Some(level)) if f == level => {}
            _ => return false,
        }
    }
    t.next().is_none()
}

/// Where producers (devices) hand their messages; bounded, so a slow consumer slows the
/// producers instead of dropping messages.
pub type Outbox = tokio::sync::mpsc::Sender<Message>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_match_like_mqtt_says() {
        assert!(topic_matches("sensors/#", "sensors/a/t"));
        assert!(topic_matches("sensors/#", "sensors"));
        assert!(topic_matches("#", "a/b"));
        assert!(topic_matches("sensors/+/t", "sensors/a/t"));
        assert!(!topic_matches("sensors/+/t", "sensors/a/b/t"));
        assert!(!topic_matches("sensors/+", "sensors"));
        assert!(!topic_matches("a/b", "a/b/c"));
        assert!(!topic_matches("#", "$SYS/x"));
        assert!(topic_matches("$SYS/#", "$SYS/x"));
    }

    #[test]
    fn invalid_filters_are_explained() {
        for good in ["#", "a/#", "+/b", "a/+/c", "a"] {
            assert_eq!(filter_problem(good), None, "{good}");
        }
        for bad in ["", "a/#/b", "a#", "a/b+", "+a/b"] {
            assert!(filter_problem(bad).is_some(), "{bad}");
        }
    }
}

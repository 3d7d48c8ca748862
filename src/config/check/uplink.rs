//! `uplink:`: the upstream brokers, credentials, TLS files, topics and limits.

use std::time::Duration;

use super::{warn_if_world_readable, Problems};
use crate::config::model::{Endpoint, Secret, UplinkSettings};
use crate::config::schema;
use crate::message::{filter_problem, topic_problem};

fn gateway_template(text: &str, gateway: &str) -> Result<String, String> {
    let rendered = text.replace("{gateway}", gateway);
    if rendered.contains(['{', '}']) {
        return Err(format!("`{text}`: only {{gateway}} can be used here"));
    }
    Ok(rendered)
}

/// Checks `uplink:`; problems go to `p`, and nothing is returned when there was one.
pub(super) fn check(
    raw: schema::Uplink,
    gateway: &str,
    p: &mut Problems,
) -> Option<UplinkSettings> {
    let before = p.errors.len();
    let azure = super::profile::azure_device(&raw, p);
    let endpoints = match (&raw.url, &azure) {
        (None, Some(device)) => vec![Endpoint {
            tls: true,
            host: device.host.clone(),
            port: 8883,
            websocket: None,
        }],
        _ => endpoints(&raw, p),
    };
    tls(&raw, &endpoints, p);
    let password = password(&raw, p);
    let topics = topics(&raw, gateway, p)?;
    let (protocol, max_packet) = limits(&raw, p);
    if p.errors.len() > before {
        return None;
    }
    let mut settings = UplinkSettings {
        protocol,
        message_expiry: raw.message_expiry,
        gateway: gateway.to_owned(),
        endpoints,
        client_id: topics.client_id,
        username: raw.username.clone(),
        password,
        tls: raw.tls.clone(),
        keep_alive: raw.keep_alive,
        connect_timeout: raw.connect_timeout,
        reconnect_spread: raw.reconnect_spread,
        forward: raw.forward.clone(),
        topic_prefix: topics.topic_prefix,
        subscribe: topics.subscribe,
        status_topic: topics.status_topic,
        inflight: raw.inflight,
        max_packet,
        max_rate: raw.max_rate,
        limits: raw.profile.limits(),
        azure,
    };
    super::profile::apply(&raw, &mut settings, p);
    (p.errors.len() == before).then_some(settings)
}

/// `url`: one broker or a failover list, each `mqtt://`, `mqtts://`, `ws://` or `wss://`.
fn endpoints(raw: &schema::Uplink, p: &mut Problems) -> Vec<Endpoint> {
    let mut endpoints = Vec::new();
    let mut ok = true;
    let urls = raw.url.as_ref().map(|u| u.to_vec()).unwrap_or_default();
    for (i, u) in urls.iter().enumerate() {
        let path = match raw.url {
            Some(schema::OneOrMany::Many(_)) => format!("uplink.url[{i}]"),
            _ => "uplink.url".to_owned(),
        };
        match parse_endpoint(u) {
            Ok(e) => endpoints.push(e),
            Err(why) => {
                p.error(
                    &path,
                    why,
                    Some(
                        "write e.g. mqtts://iot.example.com:8883, mqtt://192.168.1.10:1883 or wss://iot.example.com/mqtt"
                            .into(),
                    ),
                );
                ok = false;
            }
        }
    }
    if endpoints.is_empty() && ok {
        p.error(
            "uplink.url",
            "no upstream broker given",
            Some("write e.g. url: mqtt://broker.local:1883".into()),
        );
    }
    endpoints
}

/// `tls:`: only with `mqtts://`, a client certificate with its key, files that can be read.
fn tls(raw: &schema::Uplink, endpoints: &[Endpoint], p: &mut Problems) {
    let Some(tls) = &raw.tls else { return };
    if !endpoints.iter().any(|e| e.tls) && !endpoints.is_empty() {
        p.error(
            "uplink.tls",
            "TLS files are set but no url is mqtts:// or wss://",
            Some("use mqtts:// (or wss://) urls, or remove `tls:`".into()),
        );
    }
    if tls.cert_file.is_some() != tls.key_file.is_some() {
        p.error(
            "uplink.tls",
            "a client certificate needs both cert_file and key_file",
            None,
        );
    }
    for (key, file) in [
        ("ca_file", &tls.ca_file),
        ("cert_file", &tls.cert_file),
        ("key_file", &tls.key_file),
    ] {
        if let Some(f) = file {
            if let Err(e) = std::fs::metadata(f) {
                p.error(
                    &format!("uplink.tls.{key}"),
                    format!("cannot read {}: {e}", f.display()),
                    None,
                );
            }
        }
    }
}

/// `password_file`: read now (its first line), and only with a username.
fn password(raw: &schema::Uplink, p: &mut Problems) -> Option<Secret> {
    let password = match &raw.password_file {
        None => None,
        Some(f) => match std::fs::read_to_string(f) {
            Ok(text) => {
                warn_if_world_readable("uplink.password_file", f, p);
                Some(Secret(text.lines().next().unwrap_or_default().to_owned()))
            }
            Err(e) => {
                p.error(
                    "uplink.password_file",
                    format!("cannot read {}: {e}", f.display()),
                    Some("create it with the password on its first line (chmod 600)".into()),
                );
                None
            }
        },
    };
    if password.is_some() && raw.username.is_none() {
        p.error(
            "uplink.password_file",
            "a password without a username",
            Some("add `username:`".into()),
        );
    }
    password
}

/// The uplink's names and topics with `{gateway}` rendered.
struct Topics {
    client_id: String,
    topic_prefix: String,
    status_topic: String,
    subscribe: Vec<String>,
}

/// `client_id`, `topic_prefix`, `status_topic`, `forward` and `subscribe`; `None` when a
/// template could not be rendered (reported).
fn topics(raw: &schema::Uplink, gateway: &str, p: &mut Problems) -> Option<Topics> {
    let mut render = |key: &str, text: &str| match gateway_template(text, gateway) {
        Ok(s) => Some(s),
        Err(why) => {
            p.error(key, why, None);
            None
        }
    };
    let client_id = render("uplink.client_id", &raw.client_id);
    let topic_prefix = raw
        .topic_prefix
        .as_deref()
        .map(|t| render("uplink.topic_prefix", t));
    let status_topic = render("uplink.status_topic", &raw.status_topic);
    let subscribe: Vec<Option<String>> = raw
        .subscribe
        .iter()
        .enumerate()
        .map(|(i, f)| render(&format!("uplink.subscribe[{i}]"), f))
        .collect();
    let (Some(client_id), Some(status_topic)) = (client_id, status_topic) else {
        return None;
    };
    if client_id.is_empty()
        || client_id.len() > 23
            && client_id
                .chars()
                .any(|c| !c.is_ascii_alphanumeric() && c != '-')
    {
        // Allowed by most brokers; only warn for ids that strict 3.1.1 brokers may refuse.
        p.warn("uplink.client_id", format!("client id `{client_id}` may be refused by strict MQTT 3.1.1 brokers (1-23 letters and digits)"), None);
    }
    if let Some(why) = topic_problem(&status_topic) {
        p.error("uplink.status_topic", why, None);
    }
    let topic_prefix = match topic_prefix {
        None => String::new(),
        Some(None) => return None,
        Some(Some(t)) => {
            if t.contains(['+', '#']) {
                p.error(
                    "uplink.topic_prefix",
                    "the prefix contains a wildcard",
                    None,
                );
            }
            t
        }
    };
    for (i, f) in raw.forward.iter().enumerate() {
        if let Some(why) = filter_problem(f) {
            p.error(
                &format!("uplink.forward[{i}]"),
                format!("`{f}`: {why}"),
                None,
            );
        }
    }
    let mut subs = Vec::new();
    for (i, f) in subscribe.into_iter().enumerate() {
        let f = f?;
        if let Some(why) = filter_problem(&f) {
            p.error(
                &format!("uplink.subscribe[{i}]"),
                format!("`{f}`: {why}"),
                None,
            );
        }
        subs.push(f);
    }
    Some(Topics {
        client_id,
        topic_prefix,
        status_topic,
        subscribe: subs,
    })
}

/// Inflight, packet size, rate, keep-alive, timeouts, protocol and expiry: in range and
/// consistent. Returns the protocol (3 or 5) and the packet size.
fn limits(raw: &schema::Uplink, p: &mut Problems) -> (u8, usize) {
    if raw.inflight == 0 {
        p.error(
            "uplink.inflight",
            "must be at least 1",
            Some("write e.g. inflight: 100".into()),
        );
    }
    let max_packet = raw.max_packet.as_u64();
    if !(1024..=256 * 1024 * 1024).contains(&max_packet) {
        p.error("uplink.max_packet", "must be between 1KiB and 256MiB", None);
    }
    if raw.max_rate == Some(0) {
        p.error(
            "uplink.max_rate",
            "0 messages per second would never send anything",
            Some("remove it for no pacing".into()),
        );
    }
    if raw.keep_alive < Duration::from_secs(5) || raw.keep_alive > Duration::from_secs(65535) {
        p.error(
            "uplink.keep_alive",
            "must be between 5s and 18h",
            Some("write e.g. keep_alive: 30s".into()),
        );
    }
    if raw.connect_timeout < Duration::from_millis(100)
        || raw.connect_timeout > Duration::from_secs(600)
    {
        p.error(
            "uplink.connect_timeout",
            "must be between 100ms and 10m",
            Some("write e.g. connect_timeout: 10s".into()),
        );
    }
    if raw.reconnect_spread > Duration::from_secs(600) {
        p.error(
            "uplink.reconnect_spread",
            "must be at most 10m",
            Some("write e.g. reconnect_spread: 500ms (a fleet of N gateways then reconnects at about N / 0.75 per second)".into()),
        );
    }
    let protocol = match raw.protocol {
        3 | 4 => 3,
        5 => 5,
        n => {
            p.error(
                "uplink.protocol",
                format!("MQTT version {n} is not supported"),
                Some("write protocol: 3 (MQTT 3.1.1, the default) or protocol: 5".into()),
            );
            3
        }
    };
    if let Some(expiry) = raw.message_expiry {
        if protocol != 5 {
            p.error(
                "uplink.message_expiry",
                "message expiry needs MQTT 5",
                Some("add protocol: 5, or remove message_expiry".into()),
            );
        } else if expiry < Duration::from_secs(1) || expiry.as_secs() > u64::from(u32::MAX) {
            p.error(
                "uplink.message_expiry",
                "must be between 1s and 136 years",
                Some("write e.g. message_expiry: 1d".into()),
            );
        }
    }
    (protocol, max_packet as usize)
}

fn parse_endpoint(text: &str) -> Result<Endpoint, String> {
    let url = url::Url::parse(text).map_err(|e| format!("`{text}` is not a URL: {e}"))?;
    let (tls, websocket) = match url.scheme() {
        "mqtt" | "tcp" => (false, false),
        "mqtts" | "ssl" => (true, false),
        "ws" => (false, true),
        "wss" => (true, true),
        other => {
            return Err(format!(
                "`{text}`: scheme `{other}` is not mqtt://, mqtts://, ws:// or wss://"
            ))
        }
    };
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("`{text}` has no host"))?
        .trim_matches(['[', ']'])
        .to_owned();
    let path = url.path();
    let websocket = if websocket {
        // The path brokers serve MQTT over WebSockets on, when the URL names none.
        let path = if path.is_empty() || path == "/" {
            "/mqtt"
        } else {
            path
        };
        let query = url.query().map(|q| format!("?{q}")).unwrap_or_default();
        Some(format!("{path}{query}"))
    } else {
        if !path.is_empty() && path != "/" {
            return Err(format!(
                "`{text}`: an mqtt:// URL has no path (ws:// and wss:// URLs have one)"
            ));
        }
        None
    };
    let port = url.port().unwrap_or(match (tls, websocket.is_some()) {
        (false, false) => 1883,
        (true, false) => 8883,
        (false, true) => 80,
        (true, true) => 443,
    });
    Ok(Endpoint {
        tls,
        host,
        port,
        websocket,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_parse_with_default_ports() {
        assert_eq!(
            parse_endpoint("mqtt://broker.local").unwrap(),
            Endpoint {
                tls: false,
                host: "broker.local".into(),
                port: 1883,
                websocket: None,
            }
        );
        assert_eq!(
            parse_endpoint("mqtts://iot.example.com").unwrap().port,
            8883
        );
        assert_eq!(parse_endpoint("mqtt://[::1]:1884").unwrap().host, "::1");
        assert!(parse_endpoint("http://x")
            .unwrap_err()
            .contains("scheme `http`"));
        assert!(parse_endpoint("broker:1883").is_err());
        assert!(parse_endpoint("mqtt://x/y").is_err());
        let ws = parse_endpoint("wss://iot.example.com").unwrap();
        assert_eq!(
            (ws.tls, ws.port, ws.websocket.as_deref()),
            (true, 443, Some("/mqtt"))
        );
        assert_eq!(ws.to_string(), "wss://iot.example.com:443/mqtt");
        let ws = parse_endpoint("ws://[::1]:8080/$iothub/websocket?x=1").unwrap();
        assert_eq!((ws.tls, ws.port), (false, 8080));
        assert_eq!(ws.to_string(), "ws://[::1]:8080/$iothub/websocket?x=1");
    }

    #[test]
    fn secrets_never_print() {
        assert_eq!(format!("{:?}", Secret("hunter2".into())), "Secret(***)");
    }
}

//! `uplink.profile`: a cloud broker's dialect and limits applied to the uplink's settings
//! (rates and windows capped, MQTT 5 and retain where the broker has them, Azure IoT Hub's
//! identity from its connection string), and every rule's forwarded topic checked against
//! them, so a topic the broker would refuse is an error at `check`, naming the rule.

use super::{read_secret, Problems};
use crate::config::model::{Device, UplinkSettings};
use crate::config::schema;
use crate::message::Filters;
use crate::uplink::profile::{AzureDevice, Profile};

/// Reads `connection_string_file` for `profile: azure_iot_hub` (and refuses it elsewhere).
pub(super) fn azure_device(raw: &schema::Uplink, p: &mut Problems) -> Option<AzureDevice> {
    let key = "uplink.connection_string_file";
    match (raw.profile, &raw.connection_string_file) {
        (Profile::AzureIotHub, Some(file)) => {
            let create = "put the device's connection string (HostName=...;DeviceId=...;SharedAccessKey=...) in it, chmod 600";
            let text = read_secret(key, file, create.into(), p)?;
            let day = std::time::Duration::from_secs(86_400);
            if raw.token_ttl < std::time::Duration::from_secs(60) || raw.token_ttl > 30 * day {
                p.error(
                    "uplink.token_ttl",
                    "must be between 1m and 30d (each token renews the connection before it expires)",
                    Some("write e.g. token_ttl: 1h".into()),
                );
                return None;
            }
            match AzureDevice::parse(&text, raw.token_ttl) {
                Ok(d) => Some(d),
                Err(why) => {
                    p.error(
                        key,
                        format!("{}: {why}", file.display()),
                        Some("copy the device's primary connection string from the Azure portal (IoT Hub → Devices → the device)".into()),
                    );
                    None
                }
            }
        }
        (Profile::AzureIotHub, None) => {
            p.error(
                "uplink.profile",
                "azure_iot_hub needs the device's connection string",
                Some(
                    "add connection_string_file: /etc/serial2mqtt/azure.connection (chmod 600)"
                        .into(),
                ),
            );
            None
        }
        (_, Some(_)) => {
            p.error(
                key,
                "a connection string is for profile: azure_iot_hub",
                Some("add profile: azure_iot_hub, or remove connection_string_file".into()),
            );
            None
        }
        (_, None) => None,
    }
}

/// Applies the profile's limits to `u` (warning where a setting is capped) and refuses what
/// the broker cannot do.
pub(super) fn apply(raw: &schema::Uplink, u: &mut UplinkSettings, p: &mut Problems) {
    let l = u.limits.clone();
    let name = l.name;
    if u.protocol == 5 && !l.mqtt5 {
        p.error(
            "uplink.protocol",
            format!("{name} speaks MQTT 3.1.1 only"),
            Some("remove protocol: 5".into()),
        );
    }
    if let Some(cap) = l.max_inflight {
        if u.inflight > cap {
            p.warn(
                "uplink.inflight",
                format!(
                    "{name} accepts {cap} unacknowledged messages; {} is capped to {cap}",
                    u.inflight
                ),
                Some(format!("write inflight: {cap} or less")),
            );
            u.inflight = cap;
        }
    }
    if let Some(cap) = l.max_rate {
        match u.max_rate {
            Some(r) if r > cap => {
                p.warn(
                    "uplink.max_rate",
                    format!("{name} accepts {cap} publishes per second per connection; {r} is capped to {cap}"),
                    Some(format!("write max_rate: {cap} or less")),
                );
                u.max_rate = Some(cap);
            }
            Some(_) => {}
            None => u.max_rate = Some(cap),
        }
    }
    if let Some(max) = l.max_client_id {
        if u.client_id.len() > max {
            p.error(
                "uplink.client_id",
                format!(
                    "`{}` is {} bytes, {name} allows {max}",
                    u.client_id,
                    u.client_id.len()
                ),
                Some("write a shorter client_id".into()),
            );
        }
    }
    if let Some(device) = u.azure.clone() {
        if raw.username.is_some() || raw.password_file.is_some() {
            p.error(
                "uplink.username",
                "with azure_iot_hub the user name and the SAS token come from the connection string",
                Some("remove username and password_file".into()),
            );
        }
        if raw.client_id != "{gateway}" && u.client_id != device.device {
            p.error(
                "uplink.client_id",
                format!("IoT Hub's client id is the device id `{}`", device.device),
                Some("remove client_id".into()),
            );
        }
        if raw.topic_prefix.is_some() {
            p.warn(
                "uplink.topic_prefix",
                "with azure_iot_hub every message goes to devices/{device}/messages/events/ and the prefixed topic is its `topic` property",
                None,
            );
        }
        let c2d = device.devicebound();
        for f in &u.subscribe {
            if *f != c2d {
                p.error(
                    "uplink.subscribe",
                    format!("IoT Hub sends cloud-to-device messages on `{c2d}` only, not `{f}`"),
                    Some(format!("write subscribe: [\"{c2d}\"]")),
                );
            }
        }
        if u.endpoints.iter().any(|e| !e.tls) {
            p.error(
                "uplink.url",
                "IoT Hub takes TLS connections only",
                Some(format!(
                    "write url: mqtts://{}:8883 (or wss://{}/$iothub/websocket)",
                    device.host, device.host
                )),
            );
        }
        u.client_id = device.device.clone();
        u.username = Some(device.username());
        u.status_topic = device.events_topic(&u.status_topic);
    } else if let Some(why) = l.topic_problem(&u.status_topic, u.status_topic.len()) {
        p.error(
            "uplink.status_topic",
            why,
            Some("write a shorter status_topic".into()),
        );
    }
}

/// Every topic a rule of a device publishes that goes upstream, as the broker will see it
/// (after `topic_prefix`), against the profile's topic limits. A placeholder's value never
/// holds a `/`, so the levels are exact; lengths are checked on the fixed part here and on
/// each message when it is sent.
pub(super) fn topics(u: &UplinkSettings, devices: &[Device], gateway: &str, p: &mut Problems) {
    let l = &u.limits;
    let forward = Filters::new(&u.forward);
    let mut retained = Vec::new();
    for d in devices {
        for (rule, topic, retain) in d.rules.topics(gateway, &d.name) {
            if !forward.matches(&topic) {
                continue;
            }
            let full = format!("{}{topic}", u.topic_prefix);
            let fixed = fixed_len(&full);
            if let Some(why) = l.topic_problem(&full, fixed) {
                p.error(
                    &format!("rules.{rule}"),
                    format!("device {}: {why} (uplink.profile: {})", d.name, l.name),
                    Some("shorten the rule's topic or uplink.topic_prefix".into()),
                );
            }
            if retain && !l.retain && !retained.contains(&rule) {
                retained.push(rule);
            }
        }
    }
    if !retained.is_empty() {
        p.warn(
            "uplink.profile",
            format!(
                "{} keeps no retained messages: the retain flag of rule(s) {} is dropped upstream (it stays on the local broker)",
                l.name,
                retained.join(", ")
            ),
            None,
        );
    }
}

/// A topic's length without its placeholders (`{name}` and `{…}`).
fn fixed_len(topic: &str) -> usize {
    let mut len = 0;
    let mut depth = 0;
    for c in topic.chars() {
        match c {
            '{' => depth += 1,
            '}' if depth > 0 => depth -= 1,
            c if depth == 0 => len += c.len_utf8(),
            _ => {}
        }
    }
    len
}

//! Cloud brokers' dialects and limits (`uplink.profile`), so a gateway forwards what the broker
//! accepts instead of being disconnected for it: rates and inflight windows capped, retain
//! dropped where the broker has none, topics checked (by `check` for every rule, and here for
//! every message: one the broker would refuse is skipped and counted, not resent forever), and
//! for Azure IoT Hub its topic form, user name and SAS token.
//!
//! The limits and their sources:
//! - AWS IoT Core (<https://docs.aws.amazon.com/general/latest/gr/iot-core.html>, "Message
//!   broker and protocol limits and quotas"): QoS 0 and 1 only; topics of at most 256 bytes and
//!   7 slashes; 100 publishes per second and 512 KiB per second per connection; payloads of
//!   at most 128 KiB; 100 unacknowledged QoS 1 messages; one CONNECT per second per client id;
//!   client ids of at most 128 bytes.
//! - Azure IoT Hub (<https://learn.microsoft.com/azure/iot/iot-mqtt-connect-to-iot-hub>):
//!   MQTT 3.1.1 on 8883, or over WebSockets on 443 (`/$iothub/websocket`); the client id is the
//!   device id, the user name `{hub}/{device}/?api-version=2021-04-12`, the password a SAS
//!   token; telemetry only on `devices/{device}/messages/events/` (with a property bag: the
//!   gateway puts the message's own topic in a `topic` property); cloud-to-device messages on
//!   `devices/{device}/messages/devicebound/#`; no retained messages; messages of at most 256 KiB
//!   (<https://learn.microsoft.com/azure/iot-hub/iot-hub-devguide-quotas-throttling>).
//! - EMQX Cloud Serverless (<https://docs.emqx.com/en/cloud/latest/create/serverless.html>):
//!   10 publishes per second per client; topics of at most 10 levels; TLS only; payloads of at
//!   most 1 MiB.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use serde::Deserialize;

/// `uplink.profile`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Profile {
    /// Any MQTT broker: no limits beyond the uplink's own settings.
    #[default]
    Generic,
    /// AWS IoT Core.
    AwsIot,
    /// Azure IoT Hub (needs `uplink.connection_string_file`).
    AzureIotHub,
    /// EMQX Cloud Serverless.
    EmqxServerless,
}

/// What a profile's broker accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// The profile's name in the config.
    pub name: &'static str,
    /// Publishes per second per connection.
    pub max_rate: Option<u32>,
    /// Payload bytes per second per connection.
    pub max_bytes_rate: Option<u32>,
    /// Unacknowledged QoS 1 messages.
    pub max_inflight: Option<u16>,
    /// Largest payload.
    pub max_payload: Option<usize>,
    /// Longest topic, in bytes.
    pub max_topic_bytes: Option<usize>,
    /// Most `/` in a topic.
    pub max_topic_slashes: Option<usize>,
    /// Most levels in a topic.
    pub max_topic_levels: Option<usize>,
    /// Whether the broker keeps retained messages.
    pub retain: bool,
    /// Whether the broker speaks MQTT 5.
    pub mqtt5: bool,
    /// Shortest time between two CONNECTs of one client id.
    pub min_connect_interval: Duration,
    /// Longest client id, in bytes.
    pub max_client_id: Option<usize>,
}

impl Profile {
    /// The profile's limits.
    pub fn limits(self) -> Limits {
        let none = Limits {
            name: "generic",
            max_rate: None,
            max_bytes_rate: None,
            max_inflight: None,
            max_payload: None,
            max_topic_bytes: None,
            max_topic_slashes: None,
            max_topic_levels: None,
            retain: true,
            mqtt5: true,
            min_connect_interval: Duration::ZERO,
            max_client_id: None,
        };
        match self {
            Profile::Generic => none,
            Profile::AwsIot => Limits {
                name: "aws_iot",
                max_rate: Some(100),
                max_bytes_rate: Some(512 * 1024),
                max_inflight: Some(100),
                max_payload: Some(128 * 1024),
                max_topic_bytes: Some(256),
                max_topic_slashes: Some(7),
                min_connect_interval: Duration::from_secs(1),
                max_client_id: Some(128),
                ..none
            },
            Profile::AzureIotHub => Limits {
                name: "azure_iot_hub",
                max_payload: Some(256 * 1024),
                retain: false,
                mqtt5: false,
                max_client_id: Some(128),
                ..none
            },
            Profile::EmqxServerless => Limits {
                name: "emqx_serverless",
                max_rate: Some(10),
                max_payload: Some(1024 * 1024),
                max_topic_levels: Some(10),
                ..none
            },
        }
    }
}

impl Limits {
    /// Why the broker would refuse a message on `topic` (the whole upstream topic) with a
    /// payload of `payload` bytes, if it would.
    pub fn refuses(&self, topic: &str, payload: usize) -> Option<String> {
        if let Some(max) = self.max_payload {
            if payload > max {
                return Some(format!(
                    "its payload ({payload} bytes) is over {}'s {max}",
                    self.name
                ));
            }
        }
        self.topic_problem(topic, topic.len())
    }

    /// Why a topic of `bytes` bytes shaped like `topic` breaks the limits, if it does.
    pub fn topic_problem(&self, topic: &str, bytes: usize) -> Option<String> {
        // The generic profile has no topic limits: nothing to count per message.
        if self.max_topic_bytes.is_none()
            && self.max_topic_slashes.is_none()
            && self.max_topic_levels.is_none()
        {
            return None;
        }
        if let Some(max) = self.max_topic_bytes {
            if bytes > max {
                return Some(format!(
                    "topic `{topic}` is {bytes} bytes, {} allows {max}",
                    self.name
                ));
            }
        }
        let slashes = topic.matches('/').count();
        if let Some(max) = self.max_topic_slashes {
            if slashes > max {
                return Some(format!(
                    "topic `{topic}` has {slashes} slashes, {} allows {max}",
                    self.name
                ));
            }
        }
        if let Some(max) = self.max_topic_levels {
            if slashes + 1 > max {
                return Some(format!(
                    "topic `{topic}` has {} levels, {} allows {max}",
                    slashes + 1,
                    self.name
                ));
            }
        }
        None
    }
}

/// An Azure IoT Hub device identity, from its connection string
/// (`HostName=...;DeviceId=...;SharedAccessKey=...`).
#[derive(Clone, PartialEq, Eq)]
pub struct AzureDevice {
    /// The hub's host name.
    pub host: String,
    /// The device id (also the MQTT client id).
    pub device: String,
    /// The device's symmetric key (decoded).
    key: Vec<u8>,
    /// How long each SAS token is valid.
    pub token_ttl: Duration,
}

impl std::fmt::Debug for AzureDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AzureDevice({}/{}, key hidden)", self.host, self.device)
    }
}

/// The api-version IoT Hub's MQTT user name names.
const API_VERSION: &str = "2021-04-12";

impl AzureDevice {
    /// Parses a device connection string; the error names the missing or bad part (never the
    /// key).
    pub fn parse(text: &str, token_ttl: Duration) -> Result<AzureDevice, String> {
        let mut host = None;
        let mut device = None;
        let mut key = None;
        for part in text.trim().split(';').filter(|p| !p.is_empty()) {
            // The part may be a key: it is never shown.
            let Some((k, v)) = part.split_once('=') else {
                return Err("a part without `=` (the form is HostName=...;DeviceId=...;SharedAccessKey=...)".into());
            };
            match k {
                "HostName" => host = Some(v.to_owned()),
                "DeviceId" => device = Some(v.to_owned()),
                "SharedAccessKey" => key = Some(v.to_owned()),
                // GatewayHostName, ModuleId, x509: not used here.
                _ => {}
            }
        }
        let host = host.ok_or("no HostName=")?;
        let device = device.ok_or("no DeviceId=")?;
        let key = key.ok_or(
            "no SharedAccessKey= (X.509 devices: use uplink.tls client certificates instead)",
        )?;
        let key = STANDARD
            .decode(key.as_bytes())
            .map_err(|_| "SharedAccessKey is not base64".to_owned())?;
        Ok(AzureDevice {
            host,
            device,
            key,
            token_ttl,
        })
    }

    /// The MQTT user name IoT Hub expects.
    pub fn username(&self) -> String {
        format!("{}/{}/?api-version={API_VERSION}", self.host, self.device)
    }

    /// The telemetry topic for a message whose own topic is `topic`: IoT Hub's one topic, with
    /// the original topic as the `topic` property.
    pub fn events_topic(&self, topic: &str) -> String {
        format!(
            "devices/{}/messages/events/topic={}",
            self.device,
            url_encode(topic)
        )
    }

    /// The filter for cloud-to-device messages.
    pub fn devicebound(&self) -> String {
        format!("devices/{}/messages/devicebound/#", self.device)
    }

    /// A SAS token valid until `expiry` (seconds since the epoch), as IoT Hub documents it:
    /// `sr` the URL-encoded resource `{hub}/devices/{device}`, `sig` the base64 HMAC-SHA256
    /// (keyed with the decoded device key) of `sr` + "\n" + `se`, URL-encoded.
    pub fn sas_token(&self, expiry: u64) -> String {
        let resource = url_encode(&format!("{}/devices/{}", self.host, self.device));
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &self.key);
        let signed = ring::hmac::sign(&key, format!("{resource}\n{expiry}").as_bytes());
        let sig = url_encode(&STANDARD.encode(signed.as_ref()));
        format!("SharedAccessSignature sr={resource}&sig={sig}&se={expiry}")
    }

    /// A token valid for `token_ttl` from now.
    pub fn fresh_token(&self) -> String {
        let se = (SystemTime::now() + self.token_ttl)
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        self.sas_token(se)
    }
}

/// What stays as it is in a URL-encoded token part: RFC 3986's unreserved characters (as
/// Python's `quote_plus`, which IoT Hub's docs use, leaves them).
const UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// Percent-encodes everything but the unreserved characters.
fn url_encode(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, UNRESERVED).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn aws_limits_name_what_breaks() {
        let l = Profile::AwsIot.limits();
        assert_eq!(l.refuses("a/b/c/d/e/f/g/h", 10), None);
        let why = l.refuses("a/b/c/d/e/f/g/h/i", 10).unwrap();
        assert!(why.contains("8 slashes, aws_iot allows 7"), "{why}");
        let long = "x".repeat(257);
        assert!(l.refuses(&long, 1).unwrap().contains("257 bytes"));
        assert!(l.refuses("t", 128 * 1024 + 1).unwrap().contains("payload"));
        let e = Profile::EmqxServerless.limits();
        assert!(e
            .refuses("1/2/3/4/5/6/7/8/9/10/11", 1)
            .unwrap()
            .contains("11 levels"));
        assert_eq!(Profile::Generic.limits().refuses(&long, 1 << 30), None);
    }

    /// The vector was computed with the algorithm as Microsoft's docs give it in Python
    /// (`generate_sas_token`: urllib.parse.quote_plus of the resource, hmac.HMAC(b64decode(key),
    /// resource + "\n" + expiry, sha256), b64encode, quote_plus), independently of this code.
    #[test]
    fn sas_token_matches_the_documented_algorithm() {
        let d = AzureDevice::parse(
            "HostName=myhub.azure-devices.net;DeviceId=dev-1;SharedAccessKey=c2VjcmV0LWtleS1mb3ItdGVzdHM=",
            Duration::from_secs(3600),
        )
        .unwrap();
        assert_eq!(
            d.username(),
            "myhub.azure-devices.net/dev-1/?api-version=2021-04-12"
        );
        assert_eq!(d.sas_token(1_700_000_000), SAS_VECTOR);
        assert!(!format!("{d:?}").contains("c2Vj"), "the key never prints");
        assert_eq!(
            d.events_topic("sites/gw/sensors/t"),
            "devices/dev-1/messages/events/topic=sites%2Fgw%2Fsensors%2Ft"
        );
    }

    const SAS_VECTOR: &str = "SharedAccessSignature sr=myhub.azure-devices.net%2Fdevices%2Fdev-1&sig=H1jwZNBpkdJIM1IYwWPVUV5WxCKCa6KCa7u8inwhLCQ%3D&se=1700000000";

    #[test]
    fn connection_string_errors_never_show_the_key() {
        let e = AzureDevice::parse("HostName=h;DeviceId=d", Duration::from_secs(60)).unwrap_err();
        assert!(e.contains("SharedAccessKey"), "{e}");
        let e = AzureDevice::parse(
            "HostName=h;DeviceId=d;SharedAccessKey=!!notbase64",
            Duration::from_secs(60),
        )
        .unwrap_err();
        assert!(!e.contains("notbase64"), "{e}");
    }
}

//! The two MQTT clients the uplink can speak through, behind one small interface: rumqttc's
//! 3.1.1 client (`uplink.protocol: 3`, the default) and its MQTT 5 client (`protocol: 5`).
//!
//! The session loop in `mod.rs` needs the same few things from both: publish without waiting,
//! learn each publish's packet id when it is written, see PUBACKs (and, in MQTT 5, a broker
//! refusing a message by reason code), receive subscribed messages, and one-line errors. The
//! MQTT 5 publishes carry user properties that no peer offers: `gateway` (the gateway id) and
//! `seq` (the queue's sequence number, consecutive per gateway), so an upstream consumer can
//! drop the duplicates an at-least-once replay produces and detect gaps; plus an optional
//! message expiry.

use std::time::Duration;

use bytes::Bytes;
use rumqttc::v5::mqttbytes::v5 as p5;
use rumqttc::v5::mqttbytes::QoS as QoS5;
use rumqttc::{Outgoing, QoS};

use crate::config::{Endpoint, UplinkSettings};
use crate::message::Message;
use crate::tls;

/// What happened on the connection, in protocol-neutral terms.
pub enum Ev {
    /// The broker accepted the connection.
    ConnAck,
    /// A publish was written with this packet id.
    Published(u16),
    /// The broker acknowledged the publish with this packet id (and the ones before it);
    /// `refused` is an MQTT 5 failure reason (the broker did not take the message).
    Acked { pkid: u16, refused: Option<String> },
    /// A message on one of `uplink.subscribe`.
    Message(Message),
    /// The broker refused a subscription.
    SubscribeRefused,
    /// Anything else.
    Other,
}

/// A client of either protocol.
pub enum Client {
    V4(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// Its event loop (boxed: the two differ in size, and there is one per session).
pub enum Events {
    V4(Box<rumqttc::EventLoop>),
    V5(Box<rumqttc::v5::EventLoop>),
}

/// Which record a publish carries (for the MQTT 5 user properties).
pub struct Tag<'a> {
    /// The gateway id.
    pub gateway: &'a str,
    /// The queue's sequence number.
    pub seq: u64,
}

/// Makes a client for `endpoint`, not yet connected (the first poll connects).
pub fn new(
    s: &UplinkSettings,
    endpoint: &Endpoint,
    capacity: usize,
) -> Result<(Client, Events), String> {
    let rustls = || tls::client_config(s.tls.as_ref()).map(rumqttc::TlsConfiguration::Rustls);
    let transport = match (endpoint.tls, endpoint.websocket.is_some()) {
        (false, false) => None,
        (true, false) => Some(rumqttc::Transport::tls_with_config(rustls()?)),
        (false, true) => Some(rumqttc::Transport::Ws),
        (true, true) => Some(rumqttc::Transport::wss_with_config(rustls()?)),
    };
    // Over WebSockets rumqttc takes the whole URL as the broker address (and the port from it).
    let host = match &endpoint.websocket {
        Some(_) => endpoint.to_string(),
        None => endpoint.host.clone(),
    };
    // Azure IoT Hub: a fresh SAS token for each connection.
    let password = || match &s.azure {
        Some(device) => device.fresh_token(),
        None => s
            .password
            .as_ref()
            .map(|p| p.expose().to_owned())
            .unwrap_or_default(),
    };
    if s.protocol == 5 {
        let mut o = rumqttc::v5::MqttOptions::new(s.client_id.clone(), host, endpoint.port);
        o.set_keep_alive(s.keep_alive);
        // A fresh session each time: the queue, not the broker, holds what is not yet acked.
        o.set_clean_start(true);
        o.set_max_packet_size(Some(s.max_packet as u32));
        o.set_outgoing_inflight_upper_limit(s.inflight);
        o.set_request_channel_capacity(capacity);
        o.set_last_will(p5::LastWill::new(
            &s.status_topic,
            "offline",
            QoS5::AtLeastOnce,
            s.limits.retain,
            None,
        ));
        if let Some(user) = &s.username {
            o.set_credentials(user.clone(), password());
        }
        if let Some(t) = transport {
            o.set_transport(t);
        }
        let (c, e) = rumqttc::v5::AsyncClient::new(o, capacity);
        Ok((Client::V5(c), Events::V5(Box::new(e))))
    } else {
        let mut o = rumqttc::MqttOptions::new(s.client_id.clone(), host, endpoint.port);
        o.set_keep_alive(s.keep_alive);
        o.set_clean_session(true);
        o.set_max_packet_size(s.max_packet, s.max_packet);
        o.set_inflight(s.inflight);
        o.set_request_channel_capacity(capacity);
        o.set_last_will(rumqttc::LastWill::new(
            &s.status_topic,
            "offline",
            QoS::AtLeastOnce,
            s.limits.retain,
        ));
        if let Some(user) = &s.username {
            o.set_credentials(user.clone(), password());
        }
        if let Some(t) = transport {
            o.set_transport(t);
        }
        let (c, e) = rumqttc::AsyncClient::new(o, capacity);
        Ok((Client::V4(c), Events::V4(Box::new(e))))
    }
}

impl Client {
    /// Queues a QoS 1 publish; `tag` (a queue record's identity) becomes MQTT 5 user properties.
    pub fn publish(
        &self,
        topic: String,
        retain: bool,
        payload: Bytes,
        tag: Option<Tag<'_>>,
        expiry: Option<Duration>,
    ) -> Result<(), String> {
        match self {
            Client::V4(c) => c
                .try_publish(topic, QoS::AtLeastOnce, retain, payload)
                .map_err(|e| e.to_string()),
            Client::V5(c) => {
                let mut props = p5::PublishProperties {
                    message_expiry_interval: expiry
                        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX)),
                    ..Default::default()
                };
                if let Some(t) = tag {
                    props.user_properties = vec![
                        ("gateway".into(), t.gateway.to_owned()),
                        ("seq".into(), t.seq.to_string()),
                    ];
                }
                c.try_publish_with_properties(topic, QoS5::AtLeastOnce, retain, payload, props)
                    .map_err(|e| e.to_string())
            }
        }
    }

    /// Queues a QoS 1 subscription.
    pub fn subscribe(&self, filter: &str) -> Result<(), String> {
        match self {
            Client::V4(c) => c
                .try_subscribe(filter, QoS::AtLeastOnce)
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .try_subscribe(filter, QoS5::AtLeastOnce)
                .map_err(|e| e.to_string()),
        }
    }

    /// Asks for a clean disconnect.
    pub fn disconnect(&self) {
        let _ = match self {
            Client::V4(c) => c.try_disconnect().map_err(|e| e.to_string()),
            Client::V5(c) => c.try_disconnect().map_err(|e| e.to_string()),
        };
    }
}

impl Events {
    /// The next event, or the connection's end as one line a user can act on.
    pub async fn poll(&mut self) -> Result<Ev, String> {
        match self {
            Events::V4(e) => {
                use rumqttc::{Event, Packet};
                Ok(match e.poll().await.map_err(|e| describe_v4(&e))? {
                    Event::Incoming(Packet::ConnAck(_)) => Ev::ConnAck,
                    Event::Outgoing(Outgoing::Publish(pkid)) => Ev::Published(pkid),
                    Event::Incoming(Packet::PubAck(ack)) => Ev::Acked {
                        pkid: ack.pkid,
                        refused: None,
                    },
                    Event::Incoming(Packet::Publish(p)) => Ev::Message(Message {
                        topic: p.topic,
                        payload: p.payload,
                        qos: 0,
                        retain: p.retain,
                    }),
                    Event::Incoming(Packet::SubAck(ack))
                        if ack
                            .return_codes
                            .iter()
                            .any(|c| matches!(c, rumqttc::SubscribeReasonCode::Failure)) =>
                    {
                        Ev::SubscribeRefused
                    }
                    _ => Ev::Other,
                })
            }
            Events::V5(e) => {
                use p5::Packet;
                use rumqttc::v5::Event;
                Ok(match e.poll().await.map_err(|e| describe_v5(&e))? {
                    Event::Incoming(Packet::ConnAck(_)) => Ev::ConnAck,
                    Event::Outgoing(Outgoing::Publish(pkid)) => Ev::Published(pkid),
                    Event::Incoming(Packet::PubAck(ack)) => Ev::Acked {
                        pkid: ack.pkid,
                        refused: match ack.reason {
                            p5::PubAckReason::Success | p5::PubAckReason::NoMatchingSubscribers => {
                                None
                            }
                            other => Some(format!("{other:?}")),
                        },
                    },
                    Event::Incoming(Packet::Publish(p)) => Ev::Message(Message {
                        topic: String::from_utf8_lossy(&p.topic).into_owned(),
                        payload: p.payload,
                        qos: 0,
                        retain: p.retain,
                    }),
                    Event::Incoming(Packet::SubAck(ack))
                        if ack
                            .return_codes
                            .iter()
                            .any(|c| !matches!(c, p5::SubscribeReasonCode::Success(_))) =>
                    {
                        Ev::SubscribeRefused
                    }
                    _ => Ev::Other,
                })
            }
        }
    }
}

/// One line a user can act on, for a 3.1.1 connection error.
pub fn describe_v4(e: &rumqttc::ConnectionError) -> String {
    use rumqttc::ConnectionError as E;
    match e {
        E::ConnectionRefused(code) => refused(&format!("{code:?}")),
        E::Tls(t) => tls_failed(t),
        E::Io(io) => network(io),
        E::NetworkTimeout => "network timeout".into(),
        other => other.to_string(),
    }
}

/// One line a user can act on, for an MQTT 5 connection error.
pub fn describe_v5(e: &rumqttc::v5::ConnectionError) -> String {
    use rumqttc::v5::ConnectionError as E;
    match e {
        E::ConnectionRefused(code) => refused(&format!("{code:?}")),
        E::Tls(t) => tls_failed(t),
        E::Io(io) => network(io),
        E::Timeout(_) => "network timeout".into(),
        other => other.to_string(),
    }
}

fn refused(code: &str) -> String {
    format!("the broker refused the connection ({code}): check uplink.username, uplink.password_file and uplink.client_id")
}

fn tls_failed(t: &impl std::fmt::Display) -> String {
    format!(
        "TLS failed: {t} (check the broker's certificate, uplink.tls.ca_file and the host name)"
    )
}

fn network(io: &std::io::Error) -> String {
    if io.to_string().contains("failed to lookup address") {
        format!("cannot resolve the broker's host name ({io}): check uplink.url and the DNS")
    } else {
        format!("network error: {io}")
    }
}

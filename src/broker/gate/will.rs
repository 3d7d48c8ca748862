//! Publishing a departed client's will, on a short connection of its own to rumqttd.
//!
//! Why its own connection: the client's relayed connection may already be closed (rumqttd ends
//! it when the client's keep-alive lapses), and a packet id on it could collide with one the
//! client still had in flight. A clean session with a fresh client id leaves nothing behind in
//! rumqttd; the will goes out at its own QoS and retain flag, and the exchange is completed
//! before the DISCONNECT.

use std::net::SocketAddr;
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{Connect, LastWill, Login, Packet, PubRel, Publish};
use rumqttc::mqttbytes::QoS;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::packet::{encode, read_packet};
use super::INNER_USER;

/// Publishes `will` to rumqttd on `inner`, logging in with `secret`, within `timeout`.
pub(super) async fn publish(
    inner: SocketAddr,
    secret: &str,
    will: LastWill,
    timeout: Duration,
) -> Result<(), String> {
    tokio::time::timeout(timeout, exchange(inner, secret, will))
        .await
        .map_err(|_| "rumqttd did not take it in time".to_owned())?
}

async fn exchange(inner: SocketAddr, secret: &str, will: LastWill) -> Result<(), String> {
    let mut tcp = TcpStream::connect(inner)
        .await
        .map_err(|e| format!("cannot reach the embedded broker: {e}"))?;
    let mut connect = Connect::new(format!("serial2mqtt-will-{:016x}", fastrand::u64(..)));
    connect.keep_alive = 10;
    connect.clean_session = true;
    connect.login = Some(Login::new(INNER_USER, secret));
    let mut buf = BytesMut::new();
    send(&mut tcp, Packet::Connect(connect)).await?;
    match read_packet(&mut tcp, &mut buf, usize::MAX >> 4).await? {
        Packet::ConnAck(a) if a.code == rumqttc::mqttbytes::v4::ConnectReturnCode::Success => {}
        other => return Err(format!("rumqttd answered {other:?}")),
    }
    let mut publish = Publish::from_bytes(will.topic, will.qos, will.message);
    publish.retain = will.retain;
    publish.pkid = if will.qos == QoS::AtMostOnce { 0 } else { 1 };
    let qos = will.qos;
    send(&mut tcp, Packet::Publish(publish)).await?;
    if qos == QoS::ExactlyOnce {
        loop {
            if let Packet::PubRec(_) = read_packet(&mut tcp, &mut buf, usize::MAX >> 4).await? {
                break;
            }
        }
        send(&mut tcp, Packet::PubRel(PubRel::new(1))).await?;
    }
    if qos != QoS::AtMostOnce {
        loop {
            match read_packet(&mut tcp, &mut buf, usize::MAX >> 4).await? {
                Packet::PubAck(_) | Packet::PubComp(_) => break,
                _ => {}
            }
        }
    }
    send(&mut tcp, Packet::Disconnect).await?;
    let _ = tcp.shutdown().await;
    Ok(())
}

async fn send(tcp: &mut TcpStream, packet: Packet) -> Result<(), String> {
    tcp.write_all(&encode(packet))
        .await
        .map_err(|e| e.to_string())
}

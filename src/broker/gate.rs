//! The gatekeeper: the local clients' listener when access rules (`broker.acl_file`) or TLS
//! (`broker.tls`, with or without client certificates) are configured, in front of rumqttd.
//!
//! rumqttd 0.20 checks a login at CONNECT and nothing after: it has no hook on PUBLISH or
//! SUBSCRIBE, does not tell its auth handler the peer or its certificate, and its own
//! client-certificate path takes the Organization as a tenant, not the CN as a user. So when
//! those are needed, this listener takes the connections: it terminates TLS (the CN of a
//! verified client certificate is the user), checks the login itself, and relays each client
//! to rumqttd's listener on a loopback port that only this process can log in to (a random
//! per-process secret). On the relay, packets are framed by their fixed header and passed as
//! bytes; only these are looked at:
//! - client → broker PUBLISH: a topic the client may not write is dropped (and acknowledged
//!   here for QoS 1 and 2, as mosquitto does, so the client's session goes on);
//! - client → broker SUBSCRIBE: a filter that can match nothing readable is refused (0x80 in
//!   the SUBACK; the others go to rumqttd and their codes are merged back in order);
//! - broker → client PUBLISH: a message the client may not read is not delivered (and
//!   acknowledged to rumqttd here, so its inflight window does not fill);
//! - the PUBRELs of the QoS 2 exchanges answered here, answered here.
//!
//! Without either setting, local clients connect to rumqttd directly.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes;
use rumqttc::mqttbytes::v4::{
    ConnAck, ConnectReturnCode, Login, Packet, PubAck, PubComp, PubRec, SubAck, Subscribe,
    SubscribeReasonCode,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::access::Access;
use super::acl::Rights;
use crate::config::schema;
use crate::pacing::{RateLimit, LOG_EVERY};

/// The user name this process logs in to rumqttd's loopback listener with.
pub(super) const INNER_USER: &str = "serial2mqtt-gate";
/// Acknowledgements made here that may wait for a client (or rumqttd) to read them: a well
/// behaved peer has far fewer in flight; one that never reads is disconnected.
const INJECTED: usize = 1024;

/// Whether local clients go through the gatekeeper: with access rules, and with TLS (the
/// gatekeeper terminates it, with rustls 0.23 as the uplink does, so rumqttd is built without
/// TLS and its older rustls is not in the binary).
pub fn needed(settings: &schema::Broker) -> bool {
    settings.acl.is_some() || settings.tls.is_some()
}

/// What the gatekeeper needs to accept and relay clients.
pub struct Gate {
    /// rumqttd's loopback listener.
    pub inner: SocketAddr,
    /// The password for [`INNER_USER`] there.
    pub secret: String,
    /// Logins (none: clients are anonymous unless they show a certificate) and access rules
    /// (none: a client may do anything), swapped on reload.
    pub access: Arc<Access>,
    /// TLS files (re-read per connection, as rumqttd does).
    pub tls: Option<TlsFiles>,
    /// Time a new connection has for its TLS handshake and CONNECT.
    pub connect_timeout: Duration,
    /// Largest packet a client may send.
    pub max_packet: usize,
    /// Refused logins, for a rate-limited log line.
    refused: Mutex<RateLimit>,
}

/// The listener's certificate and, for client certificates, the CA that signs them.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
    required: bool,
}

impl Gate {
    /// The gatekeeper for `settings`, relaying to rumqttd on `inner` with `secret`.
    pub fn new(
        settings: &schema::Broker,
        access: Arc<Access>,
        inner: SocketAddr,
        secret: String,
    ) -> Gate {
        Gate {
            inner,
            secret,
            access,
            tls: settings.tls.as_ref().map(|t| TlsFiles {
                cert: t.cert_file.clone(),
                key: t.key_file.clone(),
                client_ca: t.client_ca_file.clone(),
                required: t.require_client_cert,
            }),
            connect_timeout: settings.connect_timeout,
            max_packet: settings.max_payload.as_u64() as usize,
            refused: Mutex::new(RateLimit::new(LOG_EVERY)),
        }
    }

    /// Serves clients on `listener` until the process ends.
    pub async fn run(self: Arc<Self>, listener: TcpListener) {
        loop {
            let (tcp, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    // Out of file descriptors, mostly: wait instead of spinning.
                    warn!("local broker: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let gate = Arc::clone(&self);
            tokio::spawn(async move {
                if let Err(why) = gate.serve(tcp, peer).await {
                    debug!(%peer, "local client disconnected: {why}");
                }
            });
        }
    }

    async fn serve(&self, tcp: TcpStream, peer: SocketAddr) -> Result<(), String> {
        let _ = tcp.set_nodelay(true);
        let Some(files) = &self.tls else {
            return self.session(tcp, peer, None).await;
        };
        let config = crate::tls::server_config(
            &files.cert,
            &files.key,
            files.client_ca.as_deref(),
            files.required,
        )
        .map_err(|e| {
            warn!("local broker TLS: {e}");
            e
        })?;
        let acceptor = rumqttc::tokio_rustls::TlsAcceptor::from(config);
        let stream = match tokio::time::timeout(self.connect_timeout, acceptor.accept(tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                self.refuse(peer, &format!("TLS handshake failed: {e}"));
                return Err(e.to_string());
            }
            Err(_) => return Err("no TLS handshake in time".into()),
        };
        let cn = stream
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|chain| chain.first())
            .map(|cert| common_name(cert.as_ref()));
        match cn {
            Some(Some(cn)) => self.session(stream, peer, Some(cn)).await,
            Some(None) => {
                self.refuse(peer, "its client certificate has no common name (CN)");
                Err("certificate without CN".into())
            }
            None => self.session(stream, peer, None).await,
        }
    }

    /// One client: CONNECT read and checked here, then relayed to rumqttd.
    async fn session<S>(
        &self,
        mut client: S,
        peer: SocketAddr,
        cn: Option<String>,
    ) -> Result<(), String>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let mut buf = BytesMut::with_capacity(4096);
        let first = tokio::time::timeout(
            self.connect_timeout,
            read_packet(&mut client, &mut buf, self.max_packet),
        )
        .await
        .map_err(|_| "no CONNECT in time".to_owned())??;
        let Packet::Connect(mut connect) = first else {
            return Err("the first packet is not CONNECT".into());
        };
        let access = self.access.snapshot();
        let user = match (cn, &access.users) {
            (Some(cn), _) => Some(cn),
            (None, Some(users)) => {
                let login = connect.login.take();
                let ok = match &login {
                    Some(l) => {
                        super::access::check_login(
                            Arc::clone(users),
                            l.username.clone(),
                            l.password.clone(),
                        )
                        .await
                    }
                    None => false,
                };
                if !ok {
                    let who = login.map(|l| format!("user `{}`", l.username));
                    let who = who.as_deref().unwrap_or("no login");
                    self.refuse(peer, &format!("{who}: wrong user name or password"));
                    reply(&mut client, ConnectReturnCode::BadUserNamePassword).await;
                    return Err("bad login".into());
                }
                login.map(|l| l.username)
            }
            // No users file: a login names nobody (anyone could claim any name).
            (None, None) => None,
        };
        let rights = access
            .acl
            .as_ref()
            .map(|acl| acl.rights(user.as_deref(), &connect.client_id));
        if let (Some(rights), Some(will)) = (&rights, &connect.last_will) {
            if !rights.may_write(&will.topic) {
                self.refuse(
                    peer,
                    &format!(
                        "{}: may not write its will topic `{}` (broker.acl_file)",
                        name(&user),
                        will.topic
                    ),
                );
                reply(&mut client, ConnectReturnCode::NotAuthorized).await;
                return Err("will topic not allowed".into());
            }
        }
        connect.login = Some(Login::new(INNER_USER, self.secret.clone()));
        let connect_id = connect.client_id.clone();
        let mut broker = TcpStream::connect(self.inner)
            .await
            .map_err(|e| format!("cannot reach the embedded broker: {e}"))?;
        let _ = broker.set_nodelay(true);
        let mut out = BytesMut::new();
        Packet::Connect(connect)
            .write(&mut out, usize::MAX)
            .map_err(|e| e.to_string())?;
        broker.write_all(&out).await.map_err(|e| e.to_string())?;
        debug!(%peer, user = name(&user), "local client relayed");
        Relay {
            access: Arc::clone(&self.access),
            generation: self.access.generation(),
            rights,
            client_id: connect_id,
            max: self.max_packet,
            peer,
            user,
            pending: Mutex::new(HashMap::new()),
            denied: Mutex::new(RateLimit::new(LOG_EVERY)),
        }
        // What the client sent right after its CONNECT (pipelined, in the same segment) goes
        // through the same checks as the rest.
        .run(client, broker, buf)
        .await
    }

    fn refuse(&self, peer: SocketAddr, why: &str) {
        let n = self.refused.lock().ok().and_then(|mut r| r.hit());
        if let Some(n) = n {
            warn!("local client from {peer} refused: {why}{}", more(n));
        }
    }
}

/// The end of a rate-limited line: how many were not logged since the last one.
fn more(n: u64) -> String {
    if n > 0 {
        format!(" ({n} more since the last line)")
    } else {
        String::new()
    }
}

fn name(user: &Option<String>) -> &str {
    user.as_deref().unwrap_or("anonymous")
}

/// A fresh random secret (hex) for the loopback login.
pub fn new_secret() -> Result<String, String> {
    let mut bytes = [0u8; 24];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| "no random numbers from the system".to_owned())?;
    Ok(hex::encode(bytes))
}

async fn reply<S: AsyncWrite + Unpin>(client: &mut S, code: ConnectReturnCode) {
    let mut out = BytesMut::new();
    if ConnAck::new(code, false).write(&mut out).is_ok() {
        let _ = client.write_all(&out).await;
        let _ = client.shutdown().await;
    }
}

/// The common name of a DER certificate's subject.
fn common_name(der: &[u8]) -> Option<String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
    let cn = cert.subject().iter_common_name().next()?;
    cn.as_str().ok().map(str::to_owned)
}

/// Reads one whole packet.
async fn read_packet<S: AsyncRead + Unpin>(
    stream: &mut S,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Packet, String> {
    loop {
        match Packet::read(buf, max) {
            Ok(p) => return Ok(p),
            Err(mqttbytes::Error::InsufficientBytes(_)) => {}
            Err(e) => return Err(format!("bad packet: {e}")),
        }
        if stream.read_buf(buf).await.map_err(|e| e.to_string())? == 0 {
            return Err("closed before CONNECT".into());
        }
    }
}

/// The length of the whole packet at the start of `buf`, if it is all there.
fn frame(buf: &BytesMut, max: usize) -> Result<Option<usize>, String> {
    match mqttbytes::check(buf.iter(), max) {
        Ok(h) => Ok(Some(h.frame_length())),
        Err(mqttbytes::Error::InsufficientBytes(_)) => Ok(None),
        Err(e) => Err(format!("bad packet: {e}")),
    }
}

/// A PUBLISH's QoS bits, topic and packet id, read in place (the packet is passed on as bytes).
fn publish_parts(packet: &[u8]) -> Option<(u8, &str, u16)> {
    let qos = (packet[0] >> 1) & 3;
    // Fixed header: one byte, then 1-4 bytes of remaining length.
    let mut at = 1;
    while packet.get(at)? & 0x80 != 0 {
        at += 1;
    }
    at += 1;
    let len = u16::from_be_bytes([*packet.get(at)?, *packet.get(at + 1)?]) as usize;
    let topic = std::str::from_utf8(packet.get(at + 2..at + 2 + len)?).ok()?;
    let pkid = if qos > 0 {
        let p = at + 2 + len;
        u16::from_be_bytes([*packet.get(p)?, *packet.get(p + 1)?])
    } else {
        0
    };
    Some((qos, topic, pkid))
}

/// The packet id of a 4-byte acknowledgement (PUBREL, SUBACK's first two bytes after the header).
fn ack_pkid(packet: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*packet.get(2)?, *packet.get(3)?]))
}

fn encode(packet: Packet) -> Bytes {
    let mut out = BytesMut::new();
    let _ = packet.write(&mut out, usize::MAX);
    out.freeze()
}

/// One relayed client.
struct Relay {
    access: Arc<Access>,
    /// The generation of `access` that `rights` were made from.
    generation: u64,
    /// What the client may do (None: everything; no access rules).
    rights: Option<Rights>,
    client_id: String,
    max: usize,
    peer: SocketAddr,
    user: Option<String>,
    /// SUBSCRIBEs with refused filters, by packet id: which of the client's filters went to
    /// rumqttd, in order, so its SUBACK can be completed.
    pending: Mutex<HashMap<u16, Vec<bool>>>,
    denied: Mutex<RateLimit>,
}

/// A pump's view of the client's rights, renewed when the rules are reloaded.
struct Current {
    generation: u64,
    rights: Option<Rights>,
}

impl Relay {
    fn denied(&self, what: &str) {
        let n = self.denied.lock().ok().and_then(|mut r| r.hit());
        if let Some(n) = n {
            info!(
                "local client {} ({}): {what} denied by broker.acl_file{}",
                self.peer,
                name(&self.user),
                more(n)
            );
        }
    }

    /// Relays until either side closes; `early` is what the client sent right after its
    /// CONNECT (checked like everything else).
    async fn run<S>(self, client: S, broker: TcpStream, early: BytesMut) -> Result<(), String>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let (client_rx, client_tx) = tokio::io::split(client);
        let (broker_rx, broker_tx) = broker.into_split();
        let (to_client, to_client_rx) = mpsc::channel(INJECTED);
        let (to_broker, to_broker_rx) = mpsc::channel(INJECTED);
        let up = self.pump(
            client_rx,
            broker_tx,
            to_broker_rx,
            to_client,
            Direction::Up,
            early,
        );
        let down = self.pump(
            broker_rx,
            client_tx,
            to_client_rx,
            to_broker,
            Direction::Down,
            BytesMut::new(),
        );
        tokio::select! {
            r = up => r,
            r = down => r,
        }
    }

    /// Moves packets from `from` to `to`, with the packets made for `to` elsewhere (`made`),
    /// sending the answers it makes itself back through `back`.
    #[allow(clippy::too_many_arguments)]
    async fn pump<R, W>(
        &self,
        mut from: R,
        mut to: W,
        mut made: mpsc::Receiver<Bytes>,
        back: mpsc::Sender<Bytes>,
        dir: Direction,
        mut inb: BytesMut,
    ) -> Result<(), String>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        inb.reserve(8192);
        let mut out = BytesMut::with_capacity(8192);
        let mut current = Current {
            generation: self.generation,
            rights: self.rights.clone(),
        };
        // QoS 2 exchanges answered here, whose PUBREL is answered here too.
        let mut answered: HashSet<u16> = HashSet::new();
        // The client's packets are limited by broker.max_payload; rumqttd's are not ours to
        // limit (a retained message may be as large as any client sent).
        let max = match dir {
            Direction::Up => self.max,
            Direction::Down => usize::MAX >> 4,
        };
        loop {
            // Whole packets first: what came with the CONNECT, then what each read brought.
            let generation = self.access.generation();
            if generation != current.generation {
                current = Current {
                    generation,
                    rights: self
                        .access
                        .snapshot()
                        .acl
                        .map(|acl| acl.rights(self.user.as_deref(), &self.client_id)),
                };
            }
            while let Some(len) = frame(&inb, max)? {
                let packet = inb.split_to(len);
                self.handle(packet, &current.rights, &mut out, &back, &mut answered, dir)?;
            }
            if !out.is_empty() {
                to.write_all(&out).await.map_err(|e| e.to_string())?;
                out.clear();
            }
            tokio::select! {
                read = from.read_buf(&mut inb) => {
                    if read.map_err(|e| e.to_string())? == 0 {
                        let _ = to.shutdown().await;
                        return Ok(());
                    }
                }
                Some(packet) = made.recv() => {
                    to.write_all(&packet).await.map_err(|e| e.to_string())?;
                }
            }
        }
    }

    /// One packet: into `out` (on its way), or answered through `back`.
    #[allow(clippy::too_many_arguments)]
    fn handle(
        &self,
        packet: BytesMut,
        rights: &Option<Rights>,
        out: &mut BytesMut,
        back: &mpsc::Sender<Bytes>,
        answered: &mut HashSet<u16>,
        dir: Direction,
    ) -> Result<(), String> {
        let answer = |p: Packet| {
            back.try_send(encode(p))
                .map_err(|_| "the peer does not read its acknowledgements".to_owned())
        };
        match (packet[0] >> 4, dir) {
            (3, _) => {
                let (qos, topic, pkid) =
                    publish_parts(&packet).ok_or_else(|| "bad PUBLISH".to_owned())?;
                let allowed = match (rights, dir) {
                    (None, _) => true,
                    (Some(r), Direction::Up) => r.may_write(topic),
                    (Some(r), Direction::Down) => r.may_read(topic),
                };
                if allowed {
                    out.extend_from_slice(&packet);
                    return Ok(());
                }
                if dir == Direction::Up {
                    self.denied(&format!("publish to `{topic}`"));
                }
                match qos {
                    1 => answer(Packet::PubAck(PubAck::new(pkid)))?,
                    2 => {
                        answered.insert(pkid);
                        answer(Packet::PubRec(PubRec::new(pkid)))?;
                    }
                    _ => {}
                }
            }
            // PUBREL
            (6, _) => {
                let pkid = ack_pkid(&packet).ok_or_else(|| "bad PUBREL".to_owned())?;
                if answered.remove(&pkid) {
                    answer(Packet::PubComp(PubComp::new(pkid)))?;
                } else {
                    out.extend_from_slice(&packet);
                }
            }
            (8, Direction::Up) => {
                let mut bytes = packet;
                let Ok(Packet::Subscribe(sub)) = Packet::read(&mut bytes, self.max) else {
                    return Err("bad SUBSCRIBE".into());
                };
                let granted: Vec<bool> = sub
                    .filters
                    .iter()
                    .map(|f| rights.as_ref().is_none_or(|r| r.may_subscribe(&f.path)))
                    .collect();
                for (f, ok) in sub.filters.iter().zip(&granted) {
                    if !ok {
                        self.denied(&format!("subscription to `{}`", f.path));
                    }
                }
                if granted.iter().all(|g| *g) {
                    let _ = Packet::Subscribe(sub).write(out, usize::MAX);
                } else if !granted.iter().any(|g| *g) {
                    let codes = vec![SubscribeReasonCode::Failure; granted.len()];
                    answer(Packet::SubAck(SubAck::new(sub.pkid, codes)))?;
                } else {
                    let mut allowed = Subscribe {
                        pkid: sub.pkid,
                        filters: Vec::new(),
                    };
                    for (f, ok) in sub.filters.into_iter().zip(&granted) {
                        if *ok {
                            allowed.filters.push(f);
                        }
                    }
                    if let Ok(mut p) = self.pending.lock() {
                        p.insert(allowed.pkid, granted);
                    }
                    let _ = Packet::Subscribe(allowed).write(out, usize::MAX);
                }
            }
            (9, Direction::Down) => {
                let pkid = ack_pkid(&packet).ok_or_else(|| "bad SUBACK".to_owned())?;
                let flags = self.pending.lock().ok().and_then(|mut p| p.remove(&pkid));
                let Some(flags) = flags else {
                    out.extend_from_slice(&packet);
                    return Ok(());
                };
                let mut bytes = packet;
                let Ok(Packet::SubAck(ack)) = Packet::read(&mut bytes, usize::MAX >> 4) else {
                    return Err("bad SUBACK".into());
                };
                let mut theirs = ack.return_codes.into_iter();
                let codes = flags
                    .iter()
                    .map(|ok| {
                        if *ok {
                            theirs.next().unwrap_or(SubscribeReasonCode::Failure)
                        } else {
                            SubscribeReasonCode::Failure
                        }
                    })
                    .collect();
                let _ = Packet::SubAck(SubAck::new(pkid, codes)).write(out, usize::MAX);
            }
            _ => out.extend_from_slice(&packet),
        }
        Ok(())
    }
}

/// Which way a packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Client to broker.
    Up,
    /// Broker to client.
    Down,
}

#[cfg(test)]
mod tests {
    use super::*;
    use rumqttc::mqttbytes::v4::Publish;
    use rumqttc::mqttbytes::QoS;

    #[test]
    fn publish_parts_reads_topic_qos_and_pkid_in_place() {
        for (qos, pkid) in [
            (QoS::AtMostOnce, 0),
            (QoS::AtLeastOnce, 7),
            (QoS::ExactlyOnce, 513),
        ] {
            let mut p = Publish::new("cmd/gw/relay/set", qos, vec![b'x'; 300]);
            p.pkid = pkid;
            let bytes = encode(Packet::Publish(p));
            let (q, topic, id) = publish_parts(&bytes).unwrap();
            assert_eq!((q, topic, id), (qos as u8, "cmd/gw/relay/set", pkid));
        }
        assert_eq!(publish_parts(&[0x30, 5, 0, 9, b'a']), None, "short topic");
        let mut buf = BytesMut::from(&b"\x30\x05\x00"[..]);
        assert_eq!(frame(&buf, 100), Ok(None));
        buf.extend_from_slice(b"\x01a\x00\x00");
        assert_eq!(frame(&buf, 100), Ok(Some(7)));
    }
}

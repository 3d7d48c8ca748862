//! The gatekeeper: the local clients' listener, in front of rumqttd, always.
//!
//! rumqttd 0.20 checks a login at CONNECT and nothing after: it has no hook on PUBLISH or
//! SUBSCRIBE, does not tell its auth handler the peer or its certificate, takes the
//! Organization of a client certificate as a tenant, has no cap per peer address, keeps
//! retained messages, topics and sessions without a bound, and checks a will only at CONNECT.
//! So this listener takes the connections: it admits them within the caps of `listener`
//! (in total and per address; CONNACK "server unavailable" when full), terminates TLS (the CN
//! of a verified client certificate is the user), checks the login itself, and relays each
//! client to rumqttd's listener on a loopback port that only this process can log in to (a
//! random per-process secret). The relay (`relay`) passes packets as bytes, checked against
//! the access rules and the `tables`' bounds. A client's will is kept here, not given to
//! rumqttd, and published (`will`) when the client goes without DISCONNECT, if the access rules
//! in force *then* let it write there (as mosquitto does).
//!
//! Where we differ from mosquitto 2.0, and why: a CONNECT for MQTT 5 is answered CONNACK 0x84
//! (unsupported protocol version) where mosquitto would serve it, since rumqttd's MQTT 5 is
//! partial; a retained message past `broker.max_retained` is delivered live but not kept,
//! where mosquitto has no bound.

mod packet;
mod relay;
pub mod tables;
mod will;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use rumqttc::mqttbytes::v4::{ConnAck, ConnectReturnCode, LastWill, Login, Packet};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};
use tracing::{debug, warn};

use super::access::Access;
use crate::config::schema;
use crate::listener::{self, more, Admission, Caps};
use crate::pacing::{RateLimit, LOG_EVERY};
use packet::{protocol_level, read_frame};
use relay::Relay;
use tables::{Bounds, Tables};

/// The user name this process logs in to rumqttd's loopback listener with.
pub(super) const INNER_USER: &str = "serial2mqtt-gate";
/// Acknowledgements made here that may wait for a client (or rumqttd) to read them: a well
/// behaved peer has far fewer in flight; one that never reads is disconnected.
const INJECTED: usize = 1024;
/// Refused connections that may linger at once while their CONNACK is read (more are closed
/// at once): a flood of refused connections cannot hold descriptors.
const LINGERING: usize = 64;
/// How long a refused connection may linger.
const LINGER: Duration = Duration::from_millis(500);
/// Wills published at once, each on a short connection of its own to rumqttd.
pub(super) const WILLS_AT_ONCE: usize = 16;
/// Descriptors one relayed client holds in this process: its socket, and both ends of the
/// loopback connection to rumqttd.
pub const FDS_PER_CLIENT: u64 = 3;

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
    /// Connections held, in total and per address.
    pub admission: Arc<Admission>,
    /// Retained messages, names and sessions, bounded.
    pub tables: Arc<Tables>,
    lingering: Arc<Semaphore>,
    wills: Arc<Semaphore>,
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
    /// The gatekeeper for `settings`, relaying to rumqttd on `inner` with `secret`, taking at
    /// most `caps` connections.
    pub fn new(
        settings: &schema::Broker,
        access: Arc<Access>,
        inner: SocketAddr,
        secret: String,
        caps: Caps,
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
            admission: Admission::new("local broker", caps),
            tables: Arc::new(Tables::new(Bounds {
                retained: settings.max_retained,
                retained_bytes: settings.max_retained_bytes.as_u64() as usize,
                names: settings.max_topics,
                filters: settings.max_filters,
                sessions: settings.max_sessions,
            })),
            lingering: Arc::new(Semaphore::new(LINGERING)),
            wills: Arc::new(Semaphore::new(WILLS_AT_ONCE)),
            refused: Mutex::new(RateLimit::new(LOG_EVERY)),
        }
    }

    /// Serves clients on `listener` until the process ends.
    pub async fn run(self: Arc<Self>, listener: TcpListener) {
        let mut log = RateLimit::new(LOG_EVERY);
        loop {
            let (tcp, peer) = listener::accept(&listener, "local broker", &mut log).await;
            let gate = Arc::clone(&self);
            match self.admission.admit(peer.ip()) {
                Ok(ticket) => {
                    tokio::spawn(async move {
                        if let Err(why) = gate.serve(tcp, peer).await {
                            debug!(%peer, "local client disconnected: {why}");
                        }
                        drop(ticket);
                    });
                }
                Err(_) => gate.turn_away(tcp),
            }
        }
    }

    /// Answers a connection there is no room for with CONNACK "server unavailable" (without
    /// reading its CONNECT), and gives the client a moment to read it before closing, unless
    /// too many refused ones linger already.
    fn turn_away(self: Arc<Self>, mut tcp: TcpStream) {
        const UNAVAILABLE: [u8; 4] = [0x20, 2, 0, ConnectReturnCode::ServiceUnavailable as u8];
        let _ = tcp.try_write(&UNAVAILABLE);
        let Ok(permit) = Arc::clone(&self.lingering).try_acquire_owned() else {
            return;
        };
        tokio::spawn(async move {
            let _ = tcp.shutdown().await;
            // Reading what the client sent (its CONNECT) before closing avoids a reset that
            // could discard the CONNACK on its side.
            let mut sink = [0u8; 1024];
            let _ = tokio::time::timeout(LINGER, async {
                while matches!(tcp.read(&mut sink).await, Ok(n) if n > 0) {}
            })
            .await;
            drop(permit);
        });
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
            .map(|cert| packet::common_name(cert.as_ref()));
        match cn {
            Some(Some(cn)) => self.session(stream, peer, Some(cn)).await,
            Some(None) => {
                self.refuse(peer, "its client certificate has no common name (CN)");
                Err("certificate without CN".into())
            }
            None => self.session(stream, peer, None).await,
        }
    }

    /// One client: CONNECT read and checked here, then relayed to rumqttd; its will published
    /// here if it goes without DISCONNECT.
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
        let len = tokio::time::timeout(
            self.connect_timeout,
            read_frame(&mut client, &mut buf, self.max_packet),
        )
        .await
        .map_err(|_| "no CONNECT in time".to_owned())??;
        if packet::kind_of(&buf) != packet::kind::CONNECT {
            return Err("the first packet is not CONNECT".into());
        }
        match protocol_level(&buf[..len]) {
            Some(4) => {}
            Some(5) => {
                // MQTT 5's CONNACK: reason 0x84, no properties (MQTT 5 §3.2.2.2).
                let _ = client.write_all(&[0x20, 3, 0, 0x84, 0]).await;
                let _ = client.shutdown().await;
                self.refuse(peer, "MQTT 5 is not served (connect with MQTT 3.1.1)");
                return Err("MQTT 5 CONNECT".into());
            }
            other => {
                reply(&mut client, ConnectReturnCode::RefusedProtocolVersion).await;
                let level = other.map_or_else(|| "?".to_owned(), |l| l.to_string());
                self.refuse(peer, &format!("protocol level {level} is not MQTT 3.1.1"));
                return Err("unsupported protocol level".into());
            }
        }
        let Ok(Packet::Connect(mut connect)) = Packet::read(&mut buf, self.max_packet) else {
            return Err("bad CONNECT".into());
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
        if connect.clean_session {
            self.tables.forget_session(&connect.client_id);
        } else if !self.tables.session(&connect.client_id) {
            reply(&mut client, ConnectReturnCode::ServiceUnavailable).await;
            return Err("no room for another persistent session".into());
        }
        // The will stays here (see the module doc).
        let will = connect.last_will.take();
        connect.login = Some(Login::new(INNER_USER, self.secret.clone()));
        let client_id = connect.client_id.clone();
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
        let relay = Relay {
            access: Arc::clone(&self.access),
            generation: self.access.generation(),
            rights,
            client_id,
            max: self.max_packet,
            peer,
            user,
            tables: Arc::clone(&self.tables),
            pending: Mutex::new(Default::default()),
            owed: Mutex::new(Default::default()),
            owed_ready: Notify::new(),
            disconnected: AtomicBool::new(false),
            denied: Mutex::new(RateLimit::new(LOG_EVERY)),
        };
        // What the client sent right after its CONNECT (pipelined, in the same segment) goes
        // through the same checks as the rest.
        let ended = relay.run(client, broker, buf).await;
        if let Some(will) = will {
            if !relay
                .disconnected
                .load(std::sync::atomic::Ordering::Acquire)
            {
                self.publish_will(&relay, will);
            }
        }
        ended
    }

    /// Publishes `will` for a client that went without DISCONNECT, if the rules in force now
    /// let it write there (in the background, on a connection of its own).
    fn publish_will(&self, relay: &Relay, will: LastWill) {
        let rights = self
            .access
            .snapshot()
            .acl
            .map(|acl| acl.rights(relay.user.as_deref(), &relay.client_id));
        if rights.is_some_and(|r| !r.may_write(&will.topic)) {
            self.refuse(
                relay.peer,
                &format!(
                    "{}: its will on `{}` is not published: the access rules in force no                      longer let it write there",
                    name(&relay.user),
                    will.topic
                ),
            );
            return;
        }
        let will = match self
            .tables
            .publish(&will.topic, will.retain, will.message.len())
        {
            tables::Verdict::Refused => return,
            tables::Verdict::NotRetained => LastWill {
                retain: false,
                ..will
            },
            tables::Verdict::Pass => will,
        };
        let Ok(permit) = Arc::clone(&self.wills).try_acquire_owned() else {
            self.refuse(relay.peer, "too many wills at once: this one is dropped");
            return;
        };
        let (inner, secret, timeout) = (self.inner, self.secret.clone(), self.connect_timeout);
        tokio::spawn(async move {
            if let Err(e) = will::publish(inner, &secret, will, timeout).await {
                warn!("local broker: a client's will was not published: {e}");
            }
            drop(permit);
        });
    }

    fn refuse(&self, peer: SocketAddr, why: &str) {
        let n = self.refused.lock().ok().and_then(|mut r| r.hit());
        if let Some(n) = n {
            warn!("local client from {peer} refused: {why}{}", more(n));
        }
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

//! One relayed client: two pumps (client → rumqttd, rumqttd → client) that pass whole packets
//! as bytes and look only at PUBLISH, SUBSCRIBE/SUBACK, the acknowledgements and DISCONNECT.
//!
//! Invariants:
//! 1. A message the client may not read is not delivered, and rumqttd still gets its
//!    acknowledgement **in the order it sent its deliveries**: rumqttd takes the PUBACKs and
//!    PUBRECs of one client in order, and the PUBCOMPs in the order of the PUBRECs, and drops a
//!    client whose acknowledgement is out of order. So an acknowledgement made here waits in
//!    [`Owed`] behind the client's own for earlier deliveries, and goes out right after them.
//! 2. A PUBLISH the client may not write is dropped and acknowledged to the client (as
//!    mosquitto does, so its session goes on); its QoS 2 PUBREL is answered here too.
//! 3. Whatever rumqttd is told about a client passed the access rules and the [`Tables`]'
//!    bounds as they are *now*: the rights are renewed when a reload changes them.
//! 4. A second CONNECT closes the connection (MQTT 3.1.1 §3.1.0-2).

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use bytes::{Bytes, BytesMut};
use rumqttc::mqttbytes::v4::{
    Packet, PubAck, PubComp, PubRec, SubAck, Subscribe, SubscribeReasonCode,
};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, Notify};
use tracing::info;

use super::packet::{ack, ack_pkid, encode, frame, kind, kind_of, publish_parts};
use super::tables::{Tables, Verdict};
use super::{name, INJECTED};
use crate::broker::access::Access;
use crate::broker::acl::Rights;
use crate::listener::more;
use crate::pacing::RateLimit;

/// One relayed client.
pub(super) struct Relay {
    pub access: Arc<Access>,
    /// The generation of `access` that `rights` were made from.
    pub generation: u64,
    /// What the client may do (None: everything; no access rules).
    pub rights: Option<Rights>,
    pub client_id: String,
    pub max: usize,
    pub peer: SocketAddr,
    pub user: Option<String>,
    pub tables: Arc<Tables>,
    /// SUBSCRIBEs with refused filters, by packet id: which of the client's filters went to
    /// rumqttd, in order, so its SUBACK can be completed.
    pub pending: Mutex<HashMap<u16, Vec<bool>>>,
    /// Acknowledgements owed to rumqttd, in its order.
    pub owed: Mutex<Owed>,
    /// Wakes the client → rumqttd pump when [`Owed::ready`] has something.
    pub owed_ready: Notify,
    /// The client said DISCONNECT: its will is not published.
    pub disconnected: AtomicBool,
    pub denied: Mutex<RateLimit>,
}

/// rumqttd's QoS 1 and 2 deliveries to this client whose acknowledgement is still owed, in the
/// order rumqttd expects them (invariant 1).
#[derive(Debug, Default)]
pub(super) struct Owed {
    /// PUBACK or PUBREC per delivery: `Some(kind)` when it is ours to send (a denied
    /// delivery), `None` when the client's.
    acks: VecDeque<(u16, Option<u8>)>,
    /// PUBCOMP per PUBREL: true when ours.
    comps: VecDeque<(u16, bool)>,
    /// Ours, due now, in order.
    ready: Vec<[u8; 4]>,
}

impl Owed {
    /// Moves ours from the fronts of the queues to `ready`.
    fn release(&mut self) {
        while let Some(&(pkid, Some(k))) = self.acks.front() {
            self.ready.push(ack(k, pkid));
            self.acks.pop_front();
        }
        while let Some(&(pkid, true)) = self.comps.front() {
            self.ready.push(ack(kind::PUBCOMP, pkid));
            self.comps.pop_front();
        }
    }

    /// The client acknowledged `pkid` with `k` (PUBACK, PUBREC or PUBCOMP): true when that
    /// was the one owed first (ours behind it are released).
    fn client_acked(&mut self, k: u8, pkid: u16) -> bool {
        let first = if k == kind::PUBCOMP {
            matches!(self.comps.front(), Some(&(p, false)) if p == pkid)
                && self.comps.pop_front().is_some()
        } else {
            matches!(self.acks.front(), Some(&(p, None)) if p == pkid)
                && self.acks.pop_front().is_some()
        };
        self.release();
        first
    }
}

/// A pump's view of the client's rights, renewed when the rules are reloaded.
struct Current {
    generation: u64,
    rights: Option<Rights>,
}

/// Which way a packet goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Direction {
    /// Client to broker.
    Up,
    /// Broker to client.
    Down,
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
    pub async fn run<S>(&self, client: S, broker: TcpStream, early: BytesMut) -> Result<(), String>
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
            if dir == Direction::Up {
                self.take_ready(&mut out);
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
                // Acknowledgements of denied deliveries that became due (Up only: the Down
                // pump never waits on this).
                () = self.owed_ready.notified(), if dir == Direction::Up => {}
            }
        }
    }

    /// Our acknowledgements that are due, into `out` (to rumqttd).
    fn take_ready(&self, out: &mut BytesMut) {
        if let Ok(mut owed) = self.owed.lock() {
            for a in owed.ready.drain(..) {
                out.extend_from_slice(&a);
            }
        }
    }

    /// Books what rumqttd sends: a QoS 1/2 delivery (`denied` or not) or a PUBREL (`ours` or
    /// not); wakes the other pump when one of ours became due.
    fn owe(&self, entry: Owe) {
        let Ok(mut owed) = self.owed.lock() else {
            return;
        };
        match entry {
            Owe::Ack(pkid, k) => owed.acks.push_back((pkid, k)),
            Owe::Comp(pkid, ours) => owed.comps.push_back((pkid, ours)),
        }
        owed.release();
        if !owed.ready.is_empty() {
            self.owed_ready.notify_one();
        }
    }

    /// One packet: into `out` (on its way), or answered through `back`.
    fn handle(
        &self,
        mut packet: BytesMut,
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
        match (kind_of(&packet), dir) {
            (kind::PUBLISH, _) => {
                let parts = publish_parts(&packet).ok_or_else(|| "bad PUBLISH".to_owned())?;
                let (qos, pkid) = (parts.qos, parts.pkid);
                let mut allowed = match (rights, dir) {
                    (None, _) => true,
                    (Some(r), Direction::Up) => r.may_write(parts.topic),
                    (Some(r), Direction::Down) => r.may_read(parts.topic),
                };
                let mut strip_retain = false;
                if dir == Direction::Up {
                    if !allowed {
                        self.denied(&format!("publish to `{}`", parts.topic));
                    } else {
                        match self
                            .tables
                            .publish(parts.topic, parts.retain, parts.payload_len)
                        {
                            Verdict::Pass => {}
                            Verdict::NotRetained => strip_retain = true,
                            Verdict::Refused => allowed = false,
                        }
                    }
                }
                if allowed {
                    if strip_retain {
                        packet[0] &= !1;
                    }
                    if dir == Direction::Down && qos > 0 {
                        self.owe(Owe::Ack(pkid, None));
                    }
                    out.extend_from_slice(&packet);
                    return Ok(());
                }
                match (qos, dir) {
                    (0, _) => {}
                    (_, Direction::Down) => {
                        // Acknowledged to rumqttd in its order (invariant 1).
                        if qos == 2 {
                            answered.insert(pkid);
                        }
                        let k = if qos == 1 { kind::PUBACK } else { kind::PUBREC };
                        self.owe(Owe::Ack(pkid, Some(k)));
                    }
                    (1, Direction::Up) => answer(Packet::PubAck(PubAck::new(pkid)))?,
                    (_, Direction::Up) => {
                        answered.insert(pkid);
                        answer(Packet::PubRec(PubRec::new(pkid)))?;
                    }
                }
            }
            (kind::PUBREL, _) => {
                let pkid = ack_pkid(&packet).ok_or_else(|| "bad PUBREL".to_owned())?;
                let ours = answered.remove(&pkid);
                match dir {
                    Direction::Down => {
                        self.owe(Owe::Comp(pkid, ours));
                        if !ours {
                            out.extend_from_slice(&packet);
                        }
                    }
                    Direction::Up if ours => answer(Packet::PubComp(PubComp::new(pkid)))?,
                    Direction::Up => out.extend_from_slice(&packet),
                }
            }
            (k @ (kind::PUBACK | kind::PUBREC | kind::PUBCOMP), Direction::Up) => {
                let pkid = ack_pkid(&packet).ok_or_else(|| "bad acknowledgement".to_owned())?;
                // Ours released by this one go right after it, in rumqttd's order.
                let (before, after) = self
                    .owed
                    .lock()
                    .map(|mut o| {
                        let before = std::mem::take(&mut o.ready);
                        o.client_acked(k, pkid);
                        (before, std::mem::take(&mut o.ready))
                    })
                    .unwrap_or_default();
                for a in before {
                    out.extend_from_slice(&a);
                }
                out.extend_from_slice(&packet);
                for a in after {
                    out.extend_from_slice(&a);
                }
            }
            (kind::SUBSCRIBE, Direction::Up) => self.subscribe(packet, rights, out, answer)?,
            (kind::SUBACK, Direction::Down) => self.suback(packet, out)?,
            (kind::CONNECT, Direction::Up) => {
                return Err(
                    "a second CONNECT on one connection (closed, as MQTT 3.1.1 says)".into(),
                )
            }
            (kind::DISCONNECT, Direction::Up) => {
                self.disconnected.store(true, Ordering::Release);
                out.extend_from_slice(&packet);
            }
            _ => out.extend_from_slice(&packet),
        }
        Ok(())
    }

    /// A SUBSCRIBE: filters that can match nothing readable, or that the table of names has
    /// no room for, are refused (0x80); the rest go to rumqttd.
    fn subscribe(
        &self,
        packet: BytesMut,
        rights: &Option<Rights>,
        out: &mut BytesMut,
        answer: impl Fn(Packet) -> Result<(), String>,
    ) -> Result<(), String> {
        let mut bytes = packet;
        let Ok(Packet::Subscribe(sub)) = Packet::read(&mut bytes, self.max) else {
            return Err("bad SUBSCRIBE".into());
        };
        let granted: Vec<bool> = sub
            .filters
            .iter()
            .map(|f| {
                let may = rights.as_ref().is_none_or(|r| r.may_subscribe(&f.path));
                if !may {
                    self.denied(&format!("subscription to `{}`", f.path));
                }
                may && self.tables.subscribe(&f.path)
            })
            .collect();
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
        Ok(())
    }

    /// rumqttd's SUBACK, completed with the refused filters' codes when some were refused.
    fn suback(&self, packet: BytesMut, out: &mut BytesMut) -> Result<(), String> {
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
        Ok(())
    }
}

/// What rumqttd is owed for one of its packets.
enum Owe {
    /// A QoS 1/2 delivery: the acknowledgement is ours (`Some(kind)`) or the client's.
    Ack(u16, Option<u8>),
    /// A PUBREL: the PUBCOMP is ours (true) or the client's.
    Comp(u16, bool),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_acknowledgements_wait_behind_the_clients_earlier_ones() {
        let mut o = Owed::default();
        o.acks.push_back((1, None));
        o.acks.push_back((2, Some(kind::PUBACK)));
        o.acks.push_back((3, Some(kind::PUBREC)));
        o.acks.push_back((4, None));
        o.release();
        assert!(o.ready.is_empty(), "2 and 3 wait for the client's ack of 1");
        assert!(o.client_acked(kind::PUBACK, 1));
        assert_eq!(
            o.ready,
            vec![ack(kind::PUBACK, 2), ack(kind::PUBREC, 3)],
            "released right after the client's, in order"
        );
        o.ready.clear();
        assert!(!o.client_acked(kind::PUBACK, 9), "not the one owed first");
        o.comps.push_back((3, true));
        o.release();
        assert_eq!(o.ready, vec![ack(kind::PUBCOMP, 3)]);
    }

    proptest::proptest! {
        /// Whatever mix of allowed and denied QoS 1 and 2 deliveries rumqttd sends, with the
        /// client acknowledging its own in order at any moment, rumqttd receives the PUBACKs
        /// and PUBRECs in the order of its deliveries and the PUBCOMPs in the order of its
        /// PUBRELs, each once.
        #[test]
        fn rumqttd_gets_every_acknowledgement_in_its_order(
            steps in proptest::collection::vec((0u8..4, proptest::bool::ANY), 1..60),
        ) {
            let mut o = Owed::default();
            // What rumqttd sent and expects back, in order; what it received.
            let (mut delivered, mut released) = (Vec::new(), Vec::new());
            let mut to_broker: Vec<[u8; 4]> = Vec::new();
            let mut clients = std::collections::VecDeque::new();
            let mut client_recs = std::collections::VecDeque::new();
            let mut pkid = 0u16;
            for (step, denied) in steps {
                match step {
                    // rumqttd delivers a QoS 1 or 2 message.
                    0 | 1 => {
                        pkid += 1;
                        let k = if step == 0 { kind::PUBACK } else { kind::PUBREC };
                        delivered.push(ack(k, pkid));
                        o.acks.push_back((pkid, denied.then_some(k)));
                        if !denied {
                            clients.push_back((k, pkid));
                        }
                    }
                    // The client acknowledges its oldest delivery.
                    2 => {
                        if let Some((k, id)) = clients.pop_front() {
                            to_broker.append(&mut o.ready);
                            proptest::prop_assert!(o.client_acked(k, id));
                            to_broker.push(ack(k, id));
                            if k == kind::PUBREC {
                                client_recs.push_back(id);
                            }
                        }
                    }
                    // The client completes its oldest QoS 2 exchange.
                    _ => {
                        if let Some(id) = client_recs.pop_front() {
                            to_broker.append(&mut o.ready);
                            proptest::prop_assert!(o.client_acked(kind::PUBCOMP, id));
                            to_broker.push(ack(kind::PUBCOMP, id));
                        }
                    }
                }
                o.release();
                // rumqttd answers each PUBREC it received with a PUBREL, in order: ours are
                // completed here, the client's wait for the client.
                to_broker.append(&mut o.ready);
                for a in &to_broker {
                    if a[0] >> 4 == kind::PUBREC && !released.contains(a) {
                        released.push(*a);
                        let id = u16::from_be_bytes([a[2], a[3]]);
                        let ours = !client_recs.contains(&id);
                        o.comps.push_back((id, ours));
                        o.release();
                    }
                }
            }
            while let Some((k, id)) = clients.pop_front() {
                to_broker.append(&mut o.ready);
                o.client_acked(k, id);
                to_broker.push(ack(k, id));
            }
            to_broker.append(&mut o.ready);
            let acks: Vec<[u8; 4]> = to_broker
                .iter()
                .filter(|a| matches!(a[0] >> 4, kind::PUBACK | kind::PUBREC))
                .copied()
                .collect();
            proptest::prop_assert_eq!(acks, delivered);
            let comps: Vec<u16> = to_broker
                .iter()
                .filter(|a| a[0] >> 4 == kind::PUBCOMP)
                .map(|a| u16::from_be_bytes([a[2], a[3]]))
                .collect();
            let order: Vec<u16> = released
                .iter()
                .map(|a| u16::from_be_bytes([a[2], a[3]]))
                .take(comps.len())
                .collect();
            proptest::prop_assert_eq!(comps, order);
        }
    }
}

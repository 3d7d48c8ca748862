//! One client's connection: MBAP frames cut from its bytes, each request answered at once
//! (an exception, or a cached read) or sent to its unit's bus, answers written back as they
//! come (Modbus TCP lets a client pipeline requests; the transaction id pairs them up).

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::time::Instant;

use bytes::{Buf, Bytes, BytesMut};
use futures_util::stream::FuturesUnordered;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio_util::codec::{Decoder, FramedRead};
use tokio_util::sync::CancellationToken;

use super::request::{self, Op};
use super::{Counters, Refusal, Shared, FRAME_TIMEOUT, WRITE_TIMEOUT};
use crate::modbus::mbap::{self, Header};
use crate::serial::exchange::{Exchange, Outcome};

/// An answer on its way back from a bus.
type Waiting<'a> = Pin<Box<dyn Future<Output = Vec<u8>> + Send + 'a>>;

/// Cuts MBAP frames: a header, then the PDU its length announces.
#[derive(Debug, Default)]
pub struct Codec;

impl Decoder for Codec {
    type Item = (Header, Bytes);
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> std::io::Result<Option<(Header, Bytes)>> {
        let Some(head) = buf.get(..mbap::HEADER) else {
            return Ok(None);
        };
        let mut bytes = [0u8; mbap::HEADER];
        bytes.copy_from_slice(head);
        let header = mbap::header(&bytes)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
        if buf.len() < mbap::HEADER + header.pdu_len {
            buf.reserve(mbap::HEADER + header.pdu_len - buf.len());
            return Ok(None);
        }
        buf.advance(mbap::HEADER);
        Ok(Some((header, buf.split_to(header.pdu_len).freeze())))
    }
}

/// Serves one connection until it closes, breaks a rule, or the server stops.
pub async fn serve(
    stream: TcpStream,
    peer: SocketAddr,
    id: u64,
    shared: &Shared,
    stop: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let (read, mut write) = stream.into_split();
    let mut frames = FramedRead::with_capacity(read, Codec, 512);
    let mut waiting: FuturesUnordered<Waiting<'_>> = FuturesUnordered::new();
    let idle = shared.settings.idle_timeout;
    loop {
        // A frame begun must be finished soon; between frames a client may be idle longer.
        let quiet = if frames.read_buffer().is_empty() {
            idle
        } else {
            FRAME_TIMEOUT
        };
        let answer = tokio::select! {
            _ = stop.cancelled() => break,
            Some(answer) = waiting.next(), if !waiting.is_empty() => answer,
            next = tokio::time::timeout(quiet, frames.next()) => match next {
                Err(_) if !waiting.is_empty() => continue,
                Err(_) => {
                    let what = if quiet == idle { "sent nothing" } else { "did not finish its frame" };
                    shared.refused(Refusal::Closed, peer, format_args!("closed a connection that {what} for {quiet:?}"));
                    break;
                }
                Ok(None) => break,
                Ok(Some(Err(e))) => {
                    if e.kind() == std::io::ErrorKind::InvalidData {
                        shared.refused(Refusal::Closed, peer, format_args!("closed a connection whose frames cannot be cut: {e}"));
                    }
                    break;
                }
                Ok(Some(Ok((header, pdu)))) => match handle(shared, peer, id, header, &pdu, waiting.len()) {
                    Handled::Now(answer) => answer,
                    Handled::Later(w) => {
                        waiting.push(w);
                        continue;
                    }
                },
            },
        };
        match tokio::time::timeout(WRITE_TIMEOUT, write.write_all(&answer)).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => break,
            Err(_) => {
                shared.refused(Refusal::Closed, peer, format_args!("closed a connection that did not take its answers within {WRITE_TIMEOUT:?}"));
                break;
            }
        }
    }
}

/// What became of a request.
enum Handled<'a> {
    /// The answer to write now.
    Now(Vec<u8>),
    /// Sent to its bus; the answer comes later.
    Later(Waiting<'a>),
}

/// Answers a request at once, or sends it to its unit's bus.
fn handle<'a>(
    shared: &'a Shared,
    peer: SocketAddr,
    client: u64,
    header: Header,
    pdu: &[u8],
    in_flight: usize,
) -> Handled<'a> {
    let function = pdu.first().copied().unwrap_or(0);
    let refuse = |kind: Refusal, code: u8, why: std::fmt::Arguments<'_>| {
        shared.refused(kind, peer, why);
        Handled::Now(mbap::frame(
            header.transaction,
            header.unit,
            &mbap::exception(function, code),
        ))
    };
    let Some(unit) = shared.settings.units.iter().find(|u| u.unit == header.unit) else {
        return refuse(
            Refusal::UnknownUnit,
            request::PATH_UNAVAILABLE,
            format_args!("unit {} is not served here (exception 0x0A)", header.unit),
        );
    };
    let op = match request::parse(pdu) {
        Ok(op) => op,
        Err(code) => {
            return refuse(
                Refusal::Malformed,
                code,
                format_args!(
                    "unit {}: request {} refused with exception {code}",
                    header.unit,
                    hex::encode(&pdu[..pdu.len().min(16)])
                ),
            );
        }
    };
    let (grants, code) = if op.write {
        (&unit.write, request::ILLEGAL_FUNCTION)
    } else {
        (&unit.read, request::ILLEGAL_ADDRESS)
    };
    if !super::access::allows(grants, peer.ip(), &op) {
        let verb = if op.write { "write" } else { "read" };
        return refuse(
            Refusal::Denied,
            code,
            format_args!(
                "unit {} ({}): {verb} of {} {}+{} not granted to {} (exception {code})",
                unit.unit,
                unit.device,
                op.table.name(),
                op.start,
                op.count,
                peer.ip()
            ),
        );
    }
    let Some(target) = shared.registry.get(&unit.device) else {
        return refuse(
            Refusal::Unanswered,
            request::NO_ANSWER,
            format_args!("unit {} ({}) is not running", unit.unit, unit.device),
        );
    };
    if let (false, Some(age)) = (op.write, unit.cache) {
        if let Some(data) = target.cache.read(
            target.member,
            op.table,
            op.start,
            op.count,
            age,
            Instant::now(),
        ) {
            Counters::bump(&shared.counters.cached);
            let mut answer = vec![function, u8::try_from(data.len()).unwrap_or(0)];
            answer.extend_from_slice(&data);
            return Handled::Now(mbap::frame(header.transaction, header.unit, &answer));
        }
    }
    if in_flight >= shared.settings.max_queued {
        return refuse(
            Refusal::Busy,
            request::BUSY,
            format_args!(
                "{} requests of this client wait already (max_queued; exception 6)",
                in_flight
            ),
        );
    }
    let (tx, rx) = oneshot::channel();
    let exchange = Exchange {
        member: target.member,
        client,
        request: mbap::rtu(target.unit, pdu),
        expires: Instant::now() + shared.settings.max_wait,
        answer: tx,
    };
    if target.inbox.try_send(exchange).is_err() {
        return refuse(
            Refusal::Busy,
            request::BUSY,
            format_args!(
                "unit {} ({}): the bus has too many requests waiting (exception 6)",
                unit.unit, unit.device
            ),
        );
    }
    let (device_unit, device) = (target.unit, unit.device.clone());
    Handled::Later(Box::pin(async move {
        let outcome = rx.await.unwrap_or(Outcome::Closed);
        answer(
            shared,
            peer,
            header,
            op,
            function,
            device_unit,
            &device,
            outcome,
        )
    }))
}

/// The frame that answers a request sent to the bus.
#[allow(clippy::too_many_arguments)]
fn answer(
    shared: &Shared,
    peer: SocketAddr,
    header: Header,
    op: Op,
    function: u8,
    device_unit: u8,
    device: &str,
    outcome: Outcome,
) -> Vec<u8> {
    let exception = |code| {
        mbap::frame(
            header.transaction,
            header.unit,
            &mbap::exception(function, code),
        )
    };
    match outcome {
        Outcome::Answer(frame) => {
            match mbap::from_rtu(&frame) {
                Some((u, pdu))
                    if u == device_unit && pdu.first().map(|f| f & 0x7F) == Some(function) =>
                {
                    Counters::bump(&shared.counters.forwarded);
                    mbap::frame(header.transaction, header.unit, pdu)
                }
                _ => {
                    shared.refused(Refusal::Unanswered, peer, format_args!("unit {} ({device}): the answer to {} {}+{} was not one (exception 0x0B)", header.unit, op.table.name(), op.start, op.count));
                    exception(request::NO_ANSWER)
                }
            }
        }
        Outcome::Expired => {
            shared.refused(
                Refusal::Busy,
                peer,
                format_args!(
                    "unit {} ({device}): the line was not free within max_wait (exception 6)",
                    header.unit
                ),
            );
            exception(request::BUSY)
        }
        Outcome::NoAnswer | Outcome::Offline | Outcome::Closed => {
            shared.refused(
                Refusal::Unanswered,
                peer,
                format_args!(
                    "unit {} ({device}) did not answer ({outcome:?}; exception 0x0B)",
                    header.unit
                ),
            );
            exception(request::NO_ANSWER)
        }
    }
}

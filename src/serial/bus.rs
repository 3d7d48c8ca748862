//! An open port's traffic: frames read and ruled, commands and polls written, one transaction
//! on the line at a time.
//!
//! A transaction is a request (a poll, or a command) and the wait for its answer. The line is
//! free when there is none and the last one's `turnaround` has passed; then a waiting command
//! goes first, else the poll the [`Schedule`] says is due. A request is never written while an
//! answer may still arrive, so on a shared RS-485 line requests and answers cannot collide.
//!
//! The answer is the next frame the addressed device's framing cuts after the request (bytes
//! waiting before it are flushed when the poll says `flush`). It is ruled with `{request}` set
//! to the poll's name; a frame that fails the device's checksum is no answer (the poll is sent
//! again while it has retries). No frame within the timeout counts as a timeout; after all
//! retries, as a miss, and `offline_after` misses in a row announce the device offline. On a
//! port with one device, frames nobody asked for are ruled as usual (a device that also talks
//! by itself); on a shared line they are counted as `unsolicited` and dropped, since they
//! cannot be told apart from a late answer to an earlier request.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;
use tokio_serial::SerialPort as _;
use tokio_util::codec::{Decoder, FramedRead};
use tracing::{debug, warn};

use super::framing::{Decoded, DropReason, FrameDecoder, Framing};
use super::port::{Announced, PortTask, Stop, WRITE_TIMEOUT};
use super::schedule::{Availability, Schedule};
use crate::downlink::Request;
use crate::frames::FrameHandler;
use crate::message::Message;
use crate::pacing::{RateLimit, LOG_EVERY};
use crate::stats::DeviceStats;

/// The decoders of a port's devices; bytes go to the one whose device was asked last.
struct Line {
    decoders: Vec<FrameDecoder>,
    active: usize,
}

impl Decoder for Line {
    type Item = Decoded;
    type Error = std::io::Error;

    fn decode(&mut self, buf: &mut BytesMut) -> std::io::Result<Option<Decoded>> {
        self.decoders[self.active].decode(buf)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> std::io::Result<Option<Decoded>> {
        self.decoders[self.active].decode_eof(buf)
    }
}

/// What a transaction asked.
#[derive(Debug, Clone, Copy)]
enum Asked {
    /// Poll `.0` of the device.
    Poll(usize),
    /// Command `.0` of the device (its answer, if any, is ruled; silence is no fault).
    Command(usize),
}

/// The transaction on the line.
#[derive(Debug)]
struct Pending {
    member: usize,
    asked: Asked,
    /// Retries used.
    attempt: u32,
    /// When its answer is overdue.
    deadline: Instant,
}

/// Serves one open port until it goes away or the task stops.
pub(super) async fn serve(
    task: &PortTask,
    port: tokio_serial::SerialStream,
    requests: &mut mpsc::Receiver<Request>,
    announced: &mut Announced,
) -> Stop {
    let devices = &task.devices;
    let line = Line {
        decoders: devices
            .iter()
            .map(|d| FrameDecoder::new(&d.framing, d.max_frame))
            .collect(),
        active: 0,
    };
    let mut frames = FramedRead::with_capacity(port, line, 8 * 1024);
    let mut handlers: Vec<FrameHandler> = devices
        .iter()
        .zip(&task.stats)
        .map(|(d, s)| FrameHandler::new(d, &task.gateway, s))
        .collect();
    let refs: Vec<&crate::config::Device> = devices.iter().collect();
    let mut schedule = Schedule::new(&refs, Instant::now());
    let gaps: Vec<Option<Duration>> = devices.iter().map(gap).collect();
    let shared = devices.len() > 1;
    let mut waiting: VecDeque<Request> = VecDeque::new();
    let mut pending: Option<Pending> = None;
    let mut quiet_until = Instant::now();
    let mut limits = Limits::default();
    loop {
        let now = Instant::now();
        // The line is free: a command first, else the poll that is due.
        if pending.is_none() && now >= quiet_until {
            if let Some(request) = waiting.pop_front() {
                match command(task, frames.get_mut(), &request, &mut limits).await {
                    Err(why) => return Stop::Gone(why),
                    Ok(None) => {}
                    Ok(Some(written)) => {
                        let d = &devices[request.member];
                        switch(&mut frames, request.member, false);
                        let wait = answer_window(d);
                        let end = Instant::now() + d.serial.wire_time(written);
                        if wait.is_zero() {
                            quiet_until = end + d.turnaround;
                        } else {
                            pending = Some(Pending {
                                member: request.member,
                                asked: Asked::Command(request.command),
                                attempt: 0,
                                deadline: end + wait,
                            });
                        }
                    }
                }
                continue;
            }
            if let Ok((m, p)) = schedule.next(now) {
                schedule.started(m, p, now);
                let d = &devices[m];
                switch(&mut frames, m, d.polls[p].flush);
                match send(task, frames.get_mut(), m, p).await {
                    Ok(deadline) => {
                        pending = Some(Pending {
                            member: m,
                            asked: Asked::Poll(p),
                            attempt: 0,
                            deadline,
                        })
                    }
                    Err(why) => return Stop::Gone(why),
                }
                continue;
            }
        }
        let wake = match &pending {
            Some(t) => Some(t.deadline),
            // A command waits only for the turnaround.
            None if !waiting.is_empty() => Some(quiet_until),
            None => match schedule.next(now) {
                Ok(_) => Some(quiet_until),
                Err(due) => due.map(|d| d.max(quiet_until)),
            },
        };
        // `gap` framing: the frame in progress ends when the line stays silent this long.
        let gap_len = gaps[frames.decoder().active];
        let silence = gap_len
            .and_then(|g| frames.decoder().decoders[frames.decoder().active].gap_deadline(g));
        let item = tokio::select! {
            _ = task.shutdown.cancelled() => return Stop::Shutdown,
            Some(request) = requests.recv() => {
                waiting.push_back(request);
                continue;
            }
            item = frames.next() => item,
            _ = tokio::time::sleep_until(wake.unwrap_or(now).into()), if wake.is_some() => {
                if let Some(t) = pending.take_if(|t| Instant::now() >= t.deadline) {
                    let d = &devices[t.member];
                    quiet_until = Instant::now() + d.turnaround;
                    if let Asked::Poll(p) = t.asked {
                        let m = t.member;
                        DeviceStats::bump(&task.stats[m].timeouts);
                        match retry(task, &mut frames, t, p, true, &mut schedule, announced).await {
                            Ok(Some(next)) => pending = Some(next),
                            Ok(None) => {
                                if given_up(task, &mut handlers[m], m, p).await.is_err() {
                                    return Stop::Shutdown;
                                }
                            }
                            Err(why) => return Stop::Gone(why),
                        }
                    }
                }
                continue;
            }
            _ = tokio::time::sleep_until(silence.unwrap_or(now).into()), if silence.is_some() => {
                match gap_frame(&mut frames, gap_len) {
                    Some(frame) => Some(Ok(Decoded::Frame(frame))),
                    None => continue,
                }
            }
        };
        let active = frames.decoder().active;
        match item {
            Some(Ok(Decoded::Frame(frame))) => {
                let Some(t) = pending.take() else {
                    if shared {
                        unsolicited(task, active, &frame, &mut limits);
                    } else if let Some(messages) = handlers[active].answer(&frame, "") {
                        let messages: Vec<Message> = messages.collect();
                        if !messages.is_empty() && task.outlet.send(messages).await.is_err() {
                            return Stop::Shutdown;
                        }
                    }
                    continue;
                };
                let d = &devices[t.member];
                let name = match t.asked {
                    Asked::Poll(p) => d.polls[p].name.as_str(),
                    Asked::Command(c) => d.commands[c].command.name.as_str(),
                };
                quiet_until = Instant::now() + d.turnaround;
                let Some(messages) = handlers[t.member].answer(&frame, name) else {
                    // A bad checksum: no answer. A poll is asked again while it has retries.
                    if let Asked::Poll(p) = t.asked {
                        let m = t.member;
                        match retry(task, &mut frames, t, p, false, &mut schedule, announced).await
                        {
                            Ok(Some(next)) => pending = Some(next),
                            Ok(None) => {
                                if given_up(task, &mut handlers[m], m, p).await.is_err() {
                                    return Stop::Shutdown;
                                }
                            }
                            Err(why) => return Stop::Gone(why),
                        }
                    }
                    continue;
                };
                let messages: Vec<Message> = messages.collect();
                if !messages.is_empty() && task.outlet.send(messages).await.is_err() {
                    return Stop::Shutdown;
                }
                if let Asked::Poll(_) = t.asked {
                    let first = !task.stats[t.member]
                        .online
                        .load(std::sync::atomic::Ordering::Relaxed);
                    if schedule.answered(t.member, first) == Availability::Online {
                        task.set_online(t.member, true, announced).await;
                    }
                }
            }
            Some(Ok(Decoded::Dropped(reason))) => handlers[active].dropped(reason),
            Some(Ok(Decoded::Resync(bytes))) => handlers[active].resync(bytes),
            // The loop now watches for the silence that ends this frame.
            Some(Ok(Decoded::GapStarted)) => {}
            Some(Err(e)) => {
                // The bytes of a frame in progress are lost with the port: say so.
                if frames.decoder().decoders[active].has_partial(frames.read_buffer()) {
                    handlers[active].dropped(DropReason::Incomplete);
                }
                return Stop::Gone(format!("read error: {e}"));
            }
            None => return Stop::Gone("the port closed (read returned 0 bytes)".into()),
        }
    }
}

/// After a poll went unanswered (`timed_out`) or was answered with a bad checksum: sends it
/// again while it has retries (returning the new transaction), else records a miss.
async fn retry(
    task: &PortTask,
    frames: &mut FramedRead<tokio_serial::SerialStream, Line>,
    t: Pending,
    p: usize,
    timed_out: bool,
    schedule: &mut Schedule,
    announced: &mut Announced,
) -> Result<Option<Pending>, String> {
    let d = &task.devices[t.member];
    let poll = &d.polls[p];
    if t.attempt < poll.retries {
        tokio::time::sleep(d.turnaround).await;
        switch(frames, t.member, poll.flush);
        let deadline = send(task, frames.get_mut(), t.member, p).await?;
        return Ok(Some(Pending {
            attempt: t.attempt + 1,
            deadline,
            ..t
        }));
    }
    if timed_out {
        debug!(device = %d.name, poll = %poll.name, "no answer within {:?}", poll.timeout);
        if schedule.missed(t.member, Instant::now()) == Availability::Offline {
            warn!(device = %d.name, poll = %poll.name, "device offline: {} polls in a row unanswered (timeout {}); asking it every {} until it answers", d.offline_after, humantime::format_duration(poll.timeout), humantime::format_duration(d.offline_poll));
            task.set_online(t.member, false, announced).await;
        }
    }
    Ok(None)
}

/// Poll `p` of device `m` went unanswered after its retries: a Modbus device's read cycle
/// goes on without that request's points, and may be complete now. Err: the gateway stops.
async fn given_up(
    task: &PortTask,
    handler: &mut FrameHandler<'_>,
    m: usize,
    p: usize,
) -> Result<(), ()> {
    let messages: Vec<Message> = handler.unanswered(&task.devices[m].polls[p].name).collect();
    if !messages.is_empty() && task.outlet.send(messages).await.is_err() {
        return Err(());
    }
    Ok(())
}

/// Points the line's bytes at device `m`'s decoder. Bytes waiting for the previous device, or
/// any waiting at all when `flush` is set, are discarded first (stale or late answers).
fn switch(frames: &mut FramedRead<tokio_serial::SerialStream, Line>, m: usize, flush: bool) {
    if flush || frames.decoder().active != m {
        // Best effort: a port that cannot flush still has the read buffer cleared.
        let _ = frames.get_ref().clear(tokio_serial::ClearBuffer::Input);
        frames.read_buffer_mut().clear();
        frames.decoder_mut().decoders[m].reset();
    }
    frames.decoder_mut().active = m;
}

/// Writes poll `p` of device `m`; returns when its answer is overdue.
async fn send(
    task: &PortTask,
    port: &mut tokio_serial::SerialStream,
    m: usize,
    p: usize,
) -> Result<Instant, String> {
    let d = &task.devices[m];
    let poll = &d.polls[p];
    write(port, &poll.bytes)
        .await
        .map_err(|e| format!("write error: {e}"))?;
    DeviceStats::bump(&task.stats[m].polls);
    Ok(Instant::now() + d.serial.wire_time(poll.bytes.len()) + poll.timeout)
}

/// Writes all bytes and waits until the port took them, within [`WRITE_TIMEOUT`].
async fn write(port: &mut tokio_serial::SerialStream, bytes: &[u8]) -> std::io::Result<()> {
    match tokio::time::timeout(WRITE_TIMEOUT, async {
        port.write_all(bytes).await?;
        port.flush().await
    })
    .await
    {
        Ok(r) => r,
        Err(_) => Err(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            format!(
                "the port did not take the bytes within {}s (flow control holding it?)",
                WRITE_TIMEOUT.as_secs()
            ),
        )),
    }
}

/// How long a command waits for an answer: as long as the device's slowest poll does (a
/// device that is never polled is not waited for).
fn answer_window(d: &crate::config::Device) -> Duration {
    d.polls.iter().map(|p| p.timeout).max().unwrap_or_default()
}

/// Writes one command and answers on its reply topic: Ok(Some(bytes written)), Ok(None) when
/// it was not written (refused, timed out), Err when the port is gone.
async fn command(
    task: &PortTask,
    port: &mut tokio_serial::SerialStream,
    request: &Request,
    limits: &mut Limits,
) -> Result<Option<usize>, String> {
    let Some((device, command)) = task.command(request) else {
        return Ok(None); // routed by an older config: nothing to do
    };
    let stats = &task.stats[request.member];
    let name = &device.name;
    let rendered = match (command.command.point(), &device.modbus) {
        (Some(point), Some(unit)) => crate::modbus::write::request(unit, point, &request.payload),
        _ => command
            .command
            .render(&task.gateway, name, &device.framing, &request.payload),
    };
    let bytes = match rendered {
        Ok(bytes) => bytes,
        Err(why) => {
            DeviceStats::bump(&stats.commands_rejected);
            if let Some(n) = limits.commands.hit() {
                warn!(device = %name, command = %command.command.name, suppressed = n, "command rejected: {why}");
            }
            task.reply(command, format!("error: {why}")).await;
            return Ok(None);
        }
    };
    match write(port, &bytes).await {
        Ok(()) => {
            DeviceStats::bump(&stats.commands_written);
            debug!(device = %name, command = %command.command.name, bytes = bytes.len(), "command written");
            task.reply(command, "ok".into()).await;
            Ok(Some(bytes.len()))
        }
        Err(e) if e.kind() == std::io::ErrorKind::TimedOut => {
            DeviceStats::bump(&stats.commands_failed);
            if let Some(n) = limits.commands.hit() {
                warn!(device = %name, command = %command.command.name, suppressed = n, "command not written: {e}");
            }
            task.reply(command, format!("error: {e}")).await;
            Ok(None)
        }
        Err(e) => {
            DeviceStats::bump(&stats.commands_failed);
            task.reply(command, format!("error: write failed: {e}"))
                .await;
            Err(format!("write error: {e}"))
        }
    }
}

/// Counts and logs (rate-limited) a frame on a shared line that no request asked for.
fn unsolicited(task: &PortTask, m: usize, frame: &Bytes, limits: &mut Limits) {
    DeviceStats::bump(&task.stats[m].unsolicited);
    if let Some(n) = limits.unsolicited.hit() {
        warn!(device = %task.devices[m].name, suppressed = n, frame_hex = %hex::encode(&frame[..frame.len().min(64)]), "frame no request asked for dropped (a late answer? raise the poll's timeout or the turnaround)");
    }
}

/// `gap` framing, once the line was silent for the gap: the buffered frame, if it is whole.
fn gap_frame(
    frames: &mut FramedRead<tokio_serial::SerialStream, Line>,
    gap: Option<Duration>,
) -> Option<Bytes> {
    let active = frames.decoder().active;
    // Bytes may have come in since the deadline was taken: then wait on.
    let due = gap.and_then(|g| frames.decoder().decoders[active].gap_deadline(g));
    if due.is_some_and(|t| t > Instant::now()) {
        return None;
    }
    // Bytes already waiting on the port (this task was not scheduled in time) belong to the
    // frame: no silence yet.
    if frames.get_ref().bytes_to_read().is_ok_and(|n| n > 0) {
        return None;
    }
    let whole = frames.decoder_mut().decoders[active].silence();
    let buf = frames.read_buffer_mut();
    if !whole || buf.is_empty() {
        buf.clear();
        return None;
    }
    Some(buf.split().freeze())
}

/// The silence that ends a frame, for `gap` framing.
fn gap(d: &crate::config::Device) -> Option<Duration> {
    let Framing::Gap(gap) = &d.framing else {
        return None;
    };
    Some(gap.duration(d.serial.baud, d.serial.bits_per_char()))
}

/// Log rate limits of the port's traffic.
struct Limits {
    commands: RateLimit,
    unsolicited: RateLimit,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            commands: RateLimit::new(LOG_EVERY),
            unsolicited: RateLimit::new(LOG_EVERY),
        }
    }
}

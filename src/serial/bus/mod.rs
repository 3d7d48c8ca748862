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
//!
//! Programs that share the line (the Modbus TCP server) send [`Exchange`]s: when the line is
//! free and no command waits, the [`Share`] decides between the clients' next request (taken in
//! [`Turns`]) and the poll that is due. An exchange is written as given, its answer (the next
//! frame the device's framing cuts, checksum checked) is handed back and not ruled, and it is
//! never retried: the client decides that. One that waited past its expiry, or is for a device
//! that is offline, is answered at once without line time. The answers to the gateway's own
//! Modbus reads fill the [`RegisterCache`](crate::modbus::cache::RegisterCache).
//!
//! [`line`] cuts the bytes, [`command`] writes commands, [`share`] serves the exchanges.

mod command;
mod line;
mod share;

use self::command::{answer_window, command};
use self::line::Line;

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio_util::codec::FramedRead;
use tracing::{debug, warn};

use super::exchange::{Exchange, Outcome};
use super::framing::{Decoded, DropReason, Framing};
use super::link::Link;
use super::port::{Announced, Inbox, PortTask, Stop, WRITE_TIMEOUT};
use super::schedule::{Availability, Schedule, Share, Turns};
use crate::downlink::Request;
use crate::frames::FrameHandler;
use crate::message::Message;
use crate::pacing::{RateLimit, LOG_EVERY};
use crate::stats::DeviceStats;

/// What a transaction asked.
#[derive(Debug, Clone, Copy)]
enum Asked {
    /// Poll `.0` of the device.
    Poll(usize),
    /// Command `.0` of the device (its answer, if any, is ruled; silence is no fault).
    Command(usize),
    /// A sharing program's request (the exchange is `Bus::on_line`).
    Exchange,
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
    /// When it was written (the line's time it takes, for the [`Share`]).
    started: Instant,
    /// Whether a client and a poll both waited when it was chosen (only then does its time
    /// count for the [`Share`]).
    contended: bool,
}

/// What woke the port's loop.
enum Event {
    Shutdown,
    Request(Request),
    Exchange(Exchange),
    Item(Option<std::io::Result<(usize, Decoded)>>),
    /// A deadline passed: an answer is overdue, or the line is free again.
    Wake,
    /// The line was silent for a `gap` framing's gap.
    Silence,
}

type Frames = FramedRead<Box<dyn Link>, Line>;

/// One open port's state between events: the line, the devices' handlers and schedule, the
/// commands waiting and the transaction in progress.
struct Bus<'t, 'a> {
    task: &'t PortTask,
    announced: &'a mut Announced,
    frames: Frames,
    handlers: Vec<FrameHandler<'t>>,
    schedule: Schedule,
    gaps: Vec<Option<Duration>>,
    /// More than one device on the port: frames nobody asked for are not ruled.
    shared: bool,
    waiting: VecDeque<Request>,
    pending: Option<Pending>,
    /// The previous transaction's turnaround: no request before this.
    quiet_until: Instant,
    limits: Limits,
    /// Sharing programs' requests waiting for the line.
    clients: Turns<Exchange>,
    /// The exchange on the line, if the transaction is one.
    on_line: Option<Exchange>,
    /// The line's time between clients and polls.
    share: Share,
}

/// Serves one open port until it goes away or the task stops.
pub(super) async fn serve(
    task: &PortTask,
    port: Box<dyn Link>,
    inbox: &mut Inbox,
    announced: &mut Announced,
) -> Stop {
    let mut bus = Bus::new(task, port, announced);
    loop {
        let now = Instant::now();
        match bus.begin(now).await {
            Err(stop) => return stop,
            Ok(true) => continue,
            Ok(false) => {}
        }
        let wake = bus.wake(now);
        let silence = bus.silence();
        let event = tokio::select! {
            _ = task.shutdown.cancelled() => Event::Shutdown,
            Some(request) = inbox.requests.recv() => Event::Request(request),
            Some(exchange) = inbox.exchanges.recv() => Event::Exchange(exchange),
            item = bus.frames.next() => Event::Item(item),
            _ = tokio::time::sleep_until(wake.unwrap_or(now).into()), if wake.is_some() => Event::Wake,
            _ = tokio::time::sleep_until(silence.unwrap_or(now).into()), if silence.is_some() => Event::Silence,
        };
        let done = match event {
            Event::Shutdown => Err(Stop::Shutdown),
            Event::Request(request) => {
                bus.waiting.push_back(request);
                Ok(())
            }
            Event::Exchange(exchange) => {
                bus.take(exchange);
                Ok(())
            }
            Event::Wake => bus.overdue().await,
            Event::Silence => match bus.gap_frame() {
                Some((m, frame)) => bus.item(Some(Ok((m, Decoded::Frame(frame))))).await,
                None => Ok(()),
            },
            Event::Item(item) => bus.item(item).await,
        };
        if let Err(stop) = done {
            return stop;
        }
    }
}

impl<'t, 'a> Bus<'t, 'a> {
    fn new(task: &'t PortTask, port: Box<dyn Link>, announced: &'a mut Announced) -> Self {
        let devices = &task.devices;
        let line = Line::new(devices);
        let asked = matches!(line, Line::Asked { .. });
        let refs: Vec<&crate::config::Device> = devices.iter().collect();
        Self {
            task,
            announced,
            frames: FramedRead::with_capacity(port, line, 8 * 1024),
            handlers: devices
                .iter()
                .zip(&task.stats)
                .enumerate()
                .map(|(i, (d, s))| {
                    let tap = task
                        .recent
                        .get(i)
                        .cloned()
                        .and_then(crate::recent::Tap::new);
                    FrameHandler::new(d, &task.gateway, s).with_tap(tap)
                })
                .collect(),
            schedule: Schedule::new(&refs, Instant::now()),
            gaps: devices.iter().map(gap).collect(),
            shared: asked && devices.len() > 1,
            waiting: VecDeque::new(),
            pending: None,
            quiet_until: Instant::now(),
            limits: Limits::default(),
            clients: Turns::default(),
            on_line: None,
            share: Share::new(task.share),
        }
    }

    /// When the line is free, writes a waiting command first, else the poll that is due.
    /// Ok(true) when something was written (or a command refused): look again at once.
    async fn begin(&mut self, now: Instant) -> Result<bool, Stop> {
        if self.pending.is_some() || now < self.quiet_until {
            return Ok(false);
        }
        let devices = &self.task.devices;
        if let Some(request) = self.waiting.pop_front() {
            let written = command(self.task, self.frames.get_mut(), &request, &mut self.limits)
                .await
                .map_err(Stop::Gone)?;
            if let Some(written) = written {
                let d = &devices[request.member];
                switch(&mut self.frames, request.member, false);
                let wait = answer_window(d);
                let end = Instant::now() + d.serial.wire_time(written);
                if wait.is_zero() {
                    self.quiet_until = end + d.turnaround;
                } else {
                    self.pending = Some(Pending {
                        member: request.member,
                        asked: Asked::Command(request.command),
                        attempt: 0,
                        deadline: end + wait,
                        started: now,
                        contended: false,
                    });
                }
            }
            return Ok(true);
        }
        self.turn_away(now);
        let due = self.schedule.next(now);
        // Only time taken while both sides wanted the line counts for the share: a side that
        // had the line to itself (a client with nothing to ask, polls timing out on a dead
        // unit) banks no credit against the other.
        let contended = !self.clients.is_empty() && due.is_ok();
        if !self.clients.is_empty() && (due.is_err() || self.share.clients_first()) {
            return self.exchange(now, contended).await.map(|()| true);
        }
        let Ok((m, p)) = due else {
            return Ok(false);
        };
        self.schedule.started(m, p, now);
        switch(&mut self.frames, m, devices[m].polls[p].flush);
        let deadline = send(self.task, self.frames.get_mut(), m, p)
            .await
            .map_err(Stop::Gone)?;
        self.pending = Some(Pending {
            member: m,
            asked: Asked::Poll(p),
            attempt: 0,
            deadline,
            started: now,
            contended,
        });
        Ok(true)
    }

    /// When the loop must look again without any bytes coming in: the transaction's deadline,
    /// or the end of the turnaround when a request waits or a poll is due.
    fn wake(&self, now: Instant) -> Option<Instant> {
        match &self.pending {
            Some(t) => Some(t.deadline),
            // A command waits only for the turnaround.
            None if !self.waiting.is_empty() || !self.clients.is_empty() => Some(self.quiet_until),
            None => match self.schedule.next(now) {
                Ok(_) => Some(self.quiet_until),
                Err(due) => due.map(|d| d.max(self.quiet_until)),
            },
        }
    }

    /// `gap` framing: when the frame in progress ends if the line stays silent.
    fn silence(&self) -> Option<Instant> {
        let Line::Asked { decoders, active } = self.frames.decoder() else {
            return None;
        };
        decoders[*active].gap_deadline(self.gaps[*active]?)
    }

    /// A deadline passed: an overdue answer is a timeout (the poll is retried or missed).
    async fn overdue(&mut self) -> Result<(), Stop> {
        let Some(t) = self.pending.take_if(|t| Instant::now() >= t.deadline) else {
            return Ok(());
        };
        self.quiet_until = Instant::now() + self.task.devices[t.member].turnaround;
        self.account(&t);
        if let (Asked::Exchange, Some(e)) = (t.asked, self.on_line.take()) {
            let _ = e.answer.send(Outcome::NoAnswer);
        }
        if let Asked::Poll(p) = t.asked {
            DeviceStats::bump(&self.task.stats[t.member].timeouts);
            let poll = &self.task.devices[t.member].polls[p];
            self.handlers[t.member].timed_out(&poll.name, poll.timeout, t.attempt);
            self.failed(t, p, true).await?;
        }
        Ok(())
    }

    /// What the line's decoder gave: a frame (an answer, or unsolicited), or a reason to count.
    async fn item(&mut self, item: Option<std::io::Result<(usize, Decoded)>>) -> Result<(), Stop> {
        match item {
            Some(Ok((m, Decoded::Frame(frame)))) => return self.frame(m, &frame).await,
            Some(Ok((m, Decoded::Dropped(reason)))) => self.handlers[m].dropped(reason),
            Some(Ok((m, Decoded::Resync(bytes)))) => self.handlers[m].resync(bytes),
            // The loop now watches for the silence that ends this frame.
            Some(Ok((_, Decoded::GapStarted))) => {}
            Some(Err(e)) => {
                // The bytes of a frame in progress are lost with the port: say so.
                if let Some(m) = self.frames.decoder().partial(self.frames.read_buffer()) {
                    self.handlers[m].dropped(DropReason::Incomplete);
                }
                return Err(Stop::Gone(format!("read error: {e}")));
            }
            None => return Err(Stop::Gone("the port closed (read returned 0 bytes)".into())),
        }
        Ok(())
    }

    /// A whole frame for device `active`: the answer to the transaction, if there is one.
    async fn frame(&mut self, active: usize, frame: &Bytes) -> Result<(), Stop> {
        let Some(t) = self.pending.take() else {
            if self.shared {
                unsolicited(self.task, active, frame, &mut self.limits);
                self.handlers[active].unsolicited(frame);
                return Ok(());
            }
            let messages = match self.handlers[active].answer(frame, "") {
                Some(messages) => messages.collect(),
                None => Vec::new(),
            };
            return self.publish(messages).await;
        };
        let d = &self.task.devices[t.member];
        self.quiet_until = Instant::now() + d.turnaround;
        self.account(&t);
        let name = match t.asked {
            Asked::Poll(p) => d.polls[p].name.as_str(),
            Asked::Command(c) => d.commands[c].command.name.as_str(),
            Asked::Exchange => {
                self.answered(d, frame);
                return Ok(());
            }
        };
        if let Asked::Poll(p) = t.asked {
            self.cache(t.member, p, frame);
        }
        let Some(messages) = self.handlers[t.member].answer(frame, name) else {
            // A bad checksum: no answer. A poll is asked again while it has retries.
            if let Asked::Poll(p) = t.asked {
                self.failed(t, p, false).await?;
            }
            return Ok(());
        };
        let messages: Vec<Message> = messages.collect();
        self.publish(messages).await?;
        if let Asked::Poll(_) = t.asked {
            let first = !self.task.stats[t.member].online.load(Ordering::Relaxed);
            if self.schedule.answered(t.member, first) == Availability::Online {
                self.task.set_online(t.member, true, self.announced).await;
            }
        }
        Ok(())
    }

    /// Poll `p` went unanswered (`timed_out`) or was answered with a bad checksum: it is sent
    /// again while it has retries, else it is a miss (`offline_after` misses in a row make the
    /// device offline) and a Modbus read cycle goes on without that request's points.
    async fn failed(&mut self, t: Pending, p: usize, timed_out: bool) -> Result<(), Stop> {
        let (task, m) = (self.task, t.member);
        let d = &task.devices[m];
        let poll = &d.polls[p];
        if t.attempt < poll.retries {
            tokio::time::sleep(d.turnaround).await;
            switch(&mut self.frames, m, poll.flush);
            let deadline = send(task, self.frames.get_mut(), m, p)
                .await
                .map_err(Stop::Gone)?;
            self.pending = Some(Pending {
                attempt: t.attempt + 1,
                deadline,
                started: Instant::now(),
                ..t
            });
            return Ok(());
        }
        if timed_out {
            debug!(device = %d.name, poll = %poll.name, "no answer within {:?}", poll.timeout);
            if self.schedule.missed(m, Instant::now()) == Availability::Offline {
                warn!(device = %d.name, poll = %poll.name, "device offline: {} polls in a row unanswered (timeout {}); asking it every {} until it answers", d.offline_after, humantime::format_duration(poll.timeout), humantime::format_duration(d.offline_poll));
                task.set_online(m, false, self.announced).await;
            }
        }
        let messages: Vec<Message> = self.handlers[m].unanswered(&poll.name).collect();
        self.publish(messages).await
    }

    /// Hands a frame's or a cycle's messages on; Err when the gateway stops.
    async fn publish(&self, messages: Vec<Message>) -> Result<(), Stop> {
        if !messages.is_empty() && self.task.outlet.send(messages).await.is_err() {
            return Err(Stop::Shutdown);
        }
        Ok(())
    }

    /// `gap` framing, once the line was silent for the gap: the buffered frame, if it is whole.
    fn gap_frame(&mut self) -> Option<(usize, Bytes)> {
        let frames = &mut self.frames;
        let Line::Asked { decoders, active } = frames.decoder() else {
            return None;
        };
        let active = *active;
        // Bytes may have come in since the deadline was taken: then wait on.
        let due = self.gaps[active].and_then(|g| decoders[active].gap_deadline(g));
        if due.is_some_and(|t| t > Instant::now()) {
            return None;
        }
        // Bytes already waiting on the port (this task was not scheduled in time) belong to
        // the frame: no silence yet.
        if frames.get_ref().waiting() > 0 {
            return None;
        }
        let Line::Asked { decoders, .. } = frames.decoder_mut() else {
            return None;
        };
        let whole = decoders[active].silence();
        let buf = frames.read_buffer_mut();
        if !whole || buf.is_empty() {
            buf.clear();
            return None;
        }
        Some((active, buf.split().freeze()))
    }
}

/// Points the line's bytes at device `m`'s decoder. Bytes waiting for the previous device, or
/// any waiting at all when `flush` is set, are discarded first (stale or late answers).
/// A mixed line reads every protocol at once: nothing to point or flush.
fn switch(frames: &mut Frames, m: usize, flush: bool) {
    let Line::Asked { active, .. } = frames.decoder() else {
        return;
    };
    if flush || *active != m {
        frames.get_mut().discard_input();
        frames.read_buffer_mut().clear();
    }
    if let Line::Asked { decoders, active } = frames.decoder_mut() {
        if flush || *active != m {
            decoders[m].reset();
        }
        *active = m;
    }
}

/// Writes poll `p` of device `m`; returns when its answer is overdue.
async fn send(
    task: &PortTask,
    port: &mut Box<dyn Link>,
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
async fn write(port: &mut Box<dyn Link>, bytes: &[u8]) -> std::io::Result<()> {
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

/// Counts and logs (rate-limited) a frame on a shared line that no request asked for.
fn unsolicited(task: &PortTask, m: usize, frame: &Bytes, limits: &mut Limits) {
    DeviceStats::bump(&task.stats[m].unsolicited);
    if let Some(n) = limits.unsolicited.hit() {
        warn!(device = %task.devices[m].name, suppressed = n, frame_hex = %hex::encode(&frame[..frame.len().min(64)]), "frame no request asked for dropped (a late answer? raise the poll's timeout or the turnaround)");
    }
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

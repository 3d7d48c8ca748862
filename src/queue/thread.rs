//! The queue's own thread: every file operation happens here, off the async workers, in the
//! order commands arrive. Appended records are readable at once; those still unacknowledged
//! when the oldest of them is `flush_interval` old are written and committed together (at once
//! when it is zero).

use std::io;
use std::thread;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tracing::{error, info, warn};

use super::QueueSettings;
use super::{Options, Queue, Record, Recovery, Stats};
use crate::message::Message;
use crate::pacing::RateLimit;

/// Commands waiting for the queue thread; a full channel slows the producers down.
const CAPACITY: usize = 4096;
/// Most topic + payload bytes returned by one read.
const READ_BYTES: usize = 1 << 20;

enum Cmd {
    Append(Vec<Message>),
    Read {
        from: u64,
        max: usize,
        reply: oneshot::Sender<Vec<Record>>,
    },
    Ack(u64),
    Stats(oneshot::Sender<Stats>),
    Stop(oneshot::Sender<()>),
}

/// The queue is gone (its thread stopped after an I/O error or at shutdown).
#[derive(Debug, thiserror::Error)]
#[error("the store-and-forward queue is closed")]
pub struct Closed;

/// A handle to the queue thread; cheap to clone.
#[derive(Clone)]
pub struct QueueHandle {
    tx: flume::Sender<Cmd>,
}

impl QueueHandle {
    /// Hands messages to the queue, in order; waits while the queue is busy (backpressure).
    pub async fn append(&self, messages: Vec<Message>) -> Result<(), Closed> {
        self.tx
            .send_async(Cmd::Append(messages))
            .await
            .map_err(|_| Closed)
    }

    /// The same from a thread that may block.
    pub fn append_blocking(&self, messages: Vec<Message>) -> Result<(), Closed> {
        self.tx.send(Cmd::Append(messages)).map_err(|_| Closed)
    }

    /// Up to `max` records with `seq >= from`; waits until there is at least one.
    pub fn read(
        &self,
        from: u64,
        max: usize,
    ) -> impl std::future::Future<Output = Result<Vec<Record>, Closed>> + Send + 'static {
        let tx = self.tx.clone();
        async move {
            let (reply, rx) = oneshot::channel();
            tx.send_async(Cmd::Read { from, max, reply })
                .await
                .map_err(|_| Closed)?;
            rx.await.map_err(|_| Closed)
        }
    }

    /// Marks everything up to `seq` as delivered.
    pub async fn ack(&self, seq: u64) -> Result<(), Closed> {
        self.tx.send_async(Cmd::Ack(seq)).await.map_err(|_| Closed)
    }

    /// The queue's counters (after every command sent before this one).
    pub async fn stats(&self) -> Result<Stats, Closed> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send_async(Cmd::Stats(reply))
            .await
            .map_err(|_| Closed)?;
        rx.await.map_err(|_| Closed)
    }

    /// Makes everything durable and stops the thread.
    pub async fn stop(&self) {
        let (reply, rx) = oneshot::channel();
        if self.tx.send_async(Cmd::Stop(reply)).await.is_ok() {
            let _ = rx.await;
        }
    }
}

/// Opens the queue (blocking: call off the async workers) and starts its thread.
pub fn start(settings: &QueueSettings) -> io::Result<(QueueHandle, Recovery)> {
    let opts = Options {
        max_bytes: settings.max_bytes,
        segment_bytes: settings.segment_bytes,
        sync_every_append: settings.flush_interval.is_zero(),
    };
    let (queue, recovery) = Queue::open(&settings.dir, opts)?;
    let (tx, rx) = flume::bounded(CAPACITY);
    let interval = settings.flush_interval;
    thread::Builder::new()
        .name("queue".into())
        .spawn(move || run(queue, rx, interval))?;
    Ok((QueueHandle { tx }, recovery))
}

fn run(mut q: Queue, rx: flume::Receiver<Cmd>, interval: Duration) {
    let mut parked: Option<(u64, usize, oneshot::Sender<Vec<Record>>)> = None;
    let mut losses = Losses::new(q.drops());
    loop {
        let wait = q.sync_due_in(interval).unwrap_or(Duration::from_secs(3600));
        let wait = losses.due_in().map_or(wait, |d| d.min(wait));
        match rx.recv_timeout(wait) {
            Ok(Cmd::Append(messages)) => {
                if let Err(e) = q.append(&messages) {
                    losses.write_failed(&e);
                }
            }
            Ok(Cmd::Read { from, max, reply }) => answer(&mut q, from, max, reply, &mut parked),
            Ok(Cmd::Ack(seq)) => q.ack(seq),
            Ok(Cmd::Stats(reply)) => {
                let _ = reply.send(q.stats());
            }
            Ok(Cmd::Stop(reply)) => {
                if let Err(e) = q.sync_all() {
                    error!("store-and-forward queue: sync failed: {e}");
                }
                losses.update(q.drops());
                losses.disk_full.flush(Instant::now());
                info!(depth = q.depth(), "store-and-forward queue closed");
                let _ = reply.send(());
                return;
            }
            Err(flume::RecvTimeoutError::Timeout) => {}
            Err(flume::RecvTimeoutError::Disconnected) => {
                let _ = q.sync_all();
                return;
            }
        }
        if q.sync_due_in(interval) == Some(Duration::ZERO) {
            if let Err(e) = q.sync(interval) {
                losses.write_failed(&e);
            }
        }
        losses.update(q.drops());
        // Records are readable as soon as they are accepted. A waiting read is tried after every
        // command, not only appends: cheap (a closed segment read to its end is skipped, the
        // active one keeps its position), and it never depends on which command made records
        // readable.
        if let Some((from, max, reply)) = parked.take() {
            answer(&mut q, from, max, reply, &mut parked);
        }
    }
}

/// What the queue had to give up, told to the journal: messages too large to store, a full
/// disk's running total, write errors (each rate-limited).
struct Losses {
    seen: super::Drops,
    disk_full: DiskFull,
    limit: RateLimit,
}

impl Losses {
    fn new(seen: super::Drops) -> Self {
        Self {
            seen,
            disk_full: DiskFull::default(),
            limit: RateLimit::new(Duration::from_secs(10)),
        }
    }

    /// After a command or a commit: logs what was dropped since the last look.
    fn update(&mut self, now: super::Drops) {
        let too_large = now.too_large - self.seen.too_large;
        if too_large > 0 && self.limit.hit().is_some() {
            warn!(
                dropped = too_large,
                "store-and-forward queue: messages larger than queue.max_bytes not stored"
            );
        }
        // Checked before reading the clock: this runs per command.
        let lost = now.disk_full - self.seen.disk_full;
        if lost > 0 || self.disk_full.last_loss.is_some() {
            self.disk_full.count(lost);
        }
        if self.disk_full.pending() {
            self.disk_full.tick(Instant::now());
        }
        self.seen = now;
    }

    /// A write or a commit failed: the messages waiting to be written are lost.
    fn write_failed(&mut self, e: &io::Error) {
        if let Some(n) = self.limit.hit() {
            error!(suppressed = n, "store-and-forward queue: write failed, the messages waiting to be written are lost: {e}");
        }
    }

    /// How long until a full disk's running total is due in the journal.
    fn due_in(&self) -> Option<Duration> {
        if !self.disk_full.pending() {
            return None;
        }
        self.disk_full.due_in(Instant::now())
    }
}

/// Replies with what is there, or parks the request until an append.
fn answer(
    q: &mut Queue,
    from: u64,
    max: usize,
    reply: oneshot::Sender<Vec<Record>>,
    parked: &mut Option<(u64, usize, oneshot::Sender<Vec<Record>>)>,
) {
    if reply.is_closed() {
        return;
    }
    match q.read(from, max.max(1), READ_BYTES) {
        Ok(records) if records.is_empty() => *parked = Some((from, max, reply)),
        Ok(records) => {
            let _ = reply.send(records);
        }
        Err(e) => {
            error!("store-and-forward queue: read failed: {e}");
            *parked = Some((from, max, reply));
        }
    }
}

/// How long without a loss to a full disk before storing counts as working again.
const DISK_FULL_OVER: Duration = Duration::from_secs(5);

/// How often the running total of a stretch on a full disk is logged.
const DISK_FULL_LOG_EVERY: Duration = Duration::from_secs(10);

/// A stretch of time while the disk is full: a running total, logged at most every 10 s and at
/// least once after the last loss (so the journal's last figure is the stats' figure even when
/// no further message comes), and one line when storing works again, with how many messages
/// were lost in between.
#[derive(Default)]
struct DiskFull {
    /// Messages lost since the stretch began (not stored, or the oldest deleted for room).
    lost: u64,
    /// The total the last line gave.
    logged: u64,
    last_loss: Option<Instant>,
    last_line: Option<Instant>,
}

impl DiskFull {
    /// After an append that lost `n` messages to the full disk (`0`: none).
    fn count(&mut self, n: u64) {
        let now = Instant::now();
        if n == 0 {
            if self.last_loss.is_some_and(|t| now - t >= DISK_FULL_OVER) {
                self.flush(now);
                info!(
                    lost = self.lost,
                    "store-and-forward queue: storing works again; {} messages were lost to the full disk in between",
                    self.lost
                );
                *self = Self::default();
            }
            return;
        }
        self.lost += n;
        self.last_loss = Some(now);
        self.tick(now);
    }

    /// Whether a total is not logged yet (checked before reading the clock: the loop runs per
    /// append).
    fn pending(&self) -> bool {
        self.lost > self.logged
    }

    /// Logs the running total if it moved and the last line is old enough.
    fn tick(&mut self, now: Instant) {
        if self.lost > self.logged
            && self
                .last_line
                .is_none_or(|t| now - t >= DISK_FULL_LOG_EVERY)
        {
            self.flush(now);
        }
    }

    /// Logs the running total now, if it moved.
    fn flush(&mut self, now: Instant) {
        if self.lost == self.logged {
            return;
        }
        warn!(
            lost = self.lost,
            "store-and-forward queue: the disk is full: {} messages lost so far (not stored, or the oldest deleted to make room); free space in gateway.state_dir",
            self.lost
        );
        self.logged = self.lost;
        self.last_line = Some(now);
    }

    /// How long until a total not yet logged may be (None: nothing waits).
    fn due_in(&self, now: Instant) -> Option<Duration> {
        (self.lost > self.logged).then(|| {
            self.last_line.map_or(Duration::ZERO, |t| {
                (t + DISK_FULL_LOG_EVERY).saturating_duration_since(now)
            })
        })
    }
}

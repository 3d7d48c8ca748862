//! Power cuts through the real binary: the gateway keeps its state_dir on a filesystem that
//! loses every write not fsynced (tests/common/powercut.rs), frames arrive on a pty at a steady
//! rate, the power is cut (at a random moment, or inside a chosen fsync: the segment roll's, the
//! ack cursor's, a group commit's), and a second gateway on what survived must deliver
//! everything accepted before the last flush interval, in order, with no sequence number ever
//! carrying two different readings (MQTT 5 `seq`).
//!
//! `cargo test --test powercut` runs a short set of cut points (CI); the sweep over hundreds is
//! `cargo test --release --test powercut -- --ignored --nocapture` (figures in BENCHMARKS.md).

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::powercut::{self, Op, OpKind, Options, PowerCutFs, When};
use common::proxy::Proxy;
use common::upstream::Mosquitto;
use common::{free_port, start_gateway, Gateway, Pty};

/// Frames per second written to the pty.
const RATE: u64 = 400;
/// Extra time, beyond the flush interval, between a frame's write to the pty and its append to
/// the queue (pty, framing, rules, queue channel); frames written within flush + this before the
/// cut may be lost.
const MARGIN: Duration = Duration::from_millis(150);
/// Padding in each frame, so that 64 KiB segments roll every second or so.
const PAD: usize = 160;
const TOPIC: &str = "sites/gw1/sensors/d/seq";

/// Where the power is cut.
#[derive(Clone, Copy, Debug)]
enum Cut {
    /// After this long of frames (uplink down).
    At(Duration),
    /// Inside the fsync that makes the `n`-th new segment durable with its header. Segments
    /// are counted from when the gateway is up: the first is the one it opened, n ≥ 2 are rolls.
    RollFile(u32, When),
    /// Inside the directory fsync that follows the `n`-th new segment.
    RollDir(u32, When),
    /// Inside the first group commit into the `n`-th new segment.
    RollCommit(u32, When),
    /// Inside the `n`-th write of the ack cursor (uplink up, a backlog draining).
    Cursor(u32, When),
    /// After this long of a paced drain (uplink up).
    Draining(Duration),
    /// After this long with the uplink up from the start, every message sent at once and
    /// acknowledged within the flush interval (never written: only the sequence reservation
    /// keeps its number from being reused after the restart).
    Acking(Duration),
    /// The `n`-th fsync of a segment fails (EIO, its data forgotten, as Linux does after a
    /// writeback error); the power is cut this long after the start.
    FailedSync(u32, Duration),
}

#[derive(Clone, Copy, Debug)]
struct Variant {
    cut: Cut,
    strict: bool,
    liar: bool,
    /// `queue.flush_interval` in ms (0: sync every message).
    flush_ms: u64,
    mqtt5: bool,
}

impl Variant {
    fn new(cut: Cut) -> Self {
        Self {
            cut,
            strict: true,
            liar: false,
            flush_ms: 100,
            mqtt5: true,
        }
    }
    fn draining(&self) -> bool {
        matches!(self.cut, Cut::Cursor(..) | Cut::Draining(..))
    }
    fn acking(&self) -> bool {
        matches!(self.cut, Cut::Acking(..))
    }
}

/// What a run found.
#[derive(Debug, Default)]
struct Outcome {
    /// Frames written before the cut (minus the allowed window) that never arrived upstream.
    lost: Vec<u64>,
    /// Frames in the allowed window that never arrived.
    lost_in_window: u64,
    /// Arrivals of a frame already seen.
    duplicates: u64,
    /// A frame that arrived for the first time after a higher one.
    out_of_order: Option<(u64, u64)>,
    /// `seq` values that came with two different frames.
    reused: Vec<(u64, u64, u64)>,
    /// The power-cut filesystem's trigger fired (for the armed cuts).
    fired: bool,
    /// The gateway logged a failed fsync before the cut.
    failed_sync_logged: bool,
}

impl Outcome {
    fn assert_ok(&self, v: &Variant) {
        match v.cut {
            Cut::At(_) | Cut::Draining(_) | Cut::Acking(_) => {}
            Cut::FailedSync(..) => assert!(
                self.failed_sync_logged,
                "{v:?}: the failed fsync was not noticed"
            ),
            _ => assert!(self.fired, "{v:?}: the cut point was never reached"),
        }
        assert!(
            self.lost.is_empty(),
            "{v:?}: {} accepted frames lost: {:?}",
            self.lost.len(),
            &self.lost[..self.lost.len().min(20)]
        );
        assert_eq!(self.out_of_order, None, "{v:?}: out of order");
        assert!(
            self.reused.is_empty(),
            "{v:?}: seq reused for other data (seq, frame before, frame after): {:?}",
            &self.reused[..self.reused.len().min(10)]
        );
    }
}

/// Every reading that arrived upstream: (frame, MQTT 5 `seq` property), in arrival order.
type Arrivals = Arc<Mutex<Vec<(u64, Option<u64>)>>>;

/// An upstream consumer over MQTT 5 that records (frame, seq) of every reading.
struct Consumer {
    got: Arrivals,
}

impl Consumer {
    async fn start(port: u16) -> Self {
        use rumqttc::v5::mqttbytes::v5::Packet as P5;
        use rumqttc::v5::mqttbytes::QoS as Q5;
        let id = format!("consumer-{}-{}", std::process::id(), free_port());
        let (client, mut events) = rumqttc::v5::AsyncClient::new(
            rumqttc::v5::MqttOptions::new(id, "127.0.0.1", port),
            1000,
        );
        client.subscribe("sites/#", Q5::AtLeastOnce).await.unwrap();
        let got = Arc::new(Mutex::new(Vec::new()));
        let got2 = Arc::clone(&got);
        let (tx, mut subacked) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            let _client = client;
            loop {
                match events.poll().await {
                    Ok(rumqttc::v5::Event::Incoming(P5::Publish(p))) => {
                        if p.topic != TOPIC.as_bytes() {
                            continue;
                        }
                        let text = String::from_utf8_lossy(&p.payload);
                        let Some(frame) = text.split(':').next().and_then(|n| n.parse().ok())
                        else {
                            continue;
                        };
                        let seq = p.properties.and_then(|props| {
                            props
                                .user_properties
                                .iter()
                                .find(|(k, _)| k == "seq")
                                .and_then(|(_, v)| v.parse().ok())
                        });
                        got2.lock().unwrap().push((frame, seq));
                    }
                    Ok(rumqttc::v5::Event::Incoming(P5::SubAck(_))) => {
                        let _ = tx.send(());
                    }
                    Ok(_) => {}
                    Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
                }
            }
        });
        tokio::time::timeout(Duration::from_secs(10), subacked.recv())
            .await
            .expect("SUBACK from the upstream broker");
        Self { got }
    }

    fn frames(&self) -> BTreeSet<u64> {
        self.got.lock().unwrap().iter().map(|(f, _)| *f).collect()
    }

    /// Waits until every frame in `want` arrived, or nothing more arrived for 5 s, or the
    /// timeout.
    async fn wait_for(&self, want: &BTreeSet<u64>, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let (mut count, mut progress) = (0, Instant::now());
        while Instant::now() < deadline {
            if want.is_subset(&self.frames()) {
                return;
            }
            let now = self.got.lock().unwrap().len();
            if now != count {
                (count, progress) = (now, Instant::now());
            } else if progress.elapsed() > Duration::from_secs(5) {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn config(pty: &Path, upstream: u16, state: &Path, v: &Variant) -> String {
    let protocol = if v.mqtt5 { "\n  protocol: 5" } else { "" };
    let pace = if v.draining() {
        "\n  max_rate: 300"
    } else {
        ""
    };
    format!(
        r#"
gateway: {{id: gw1, state_dir: "{state}"}}
broker: {{listen: "127.0.0.1:{{port}}"}}
uplink:
  url: mqtt://127.0.0.1:{upstream}
  forward: ["sensors/#"]
  topic_prefix: "sites/{{gateway}}/"
  keep_alive: 5s{protocol}{pace}
queue: {{flush_interval: {flush}ms, segment_bytes: 64KiB, max_bytes: 64MiB}}
devices:
  - {{name: d, port: {port}, rules: [seq]}}
rules:
  seq:
    match: '^seq=(?P<n>\d+);(?P<pad>\w*)$'
    publish: [{{topic: "sensors/{{device}}/seq", payload: "{{n}}:{{pad}}", qos: 1}}]
"#,
        state = state.display(),
        port = pty.display(),
        flush = v.flush_ms,
    )
}

/// Writes frames `from..` at [`RATE`] until `stop` (or the filesystem fired); returns the write
/// time of each.
async fn write_until(
    pty: &mut Pty,
    from: u64,
    stop: impl Fn(u64, Duration) -> bool,
) -> Vec<(u64, Instant)> {
    let pad = "x".repeat(PAD);
    let start = Instant::now();
    let mut written = Vec::new();
    let mut n = from;
    loop {
        let elapsed = start.elapsed();
        if stop(n, elapsed) {
            return written;
        }
        pty.write(format!("seq={n};{pad}\n").as_bytes()).await;
        written.push((n, Instant::now()));
        n += 1;
        let next = start + Duration::from_micros((n - from) * 1_000_000 / RATE);
        tokio::time::sleep_until(next.into()).await;
    }
}

/// A trigger that cuts inside the chosen sync of the chosen kind.
fn trigger(cut: Cut) -> Option<powercut::Trigger> {
    let mut new_segments: u32 = 0;
    let mut seen: BTreeSet<PathBuf> = BTreeSet::new();
    let mut awaiting_dir = false;
    let mut awaiting_commit: Option<PathBuf> = None;
    let mut cursor_writes: u32 = 0;
    let is_seg = |p: &Path| p.extension().is_some_and(|x| x == "seg");
    let t: powercut::Trigger = match cut {
        Cut::At(_) | Cut::Draining(_) | Cut::Acking(_) => return None,
        Cut::RollFile(k, when) => Box::new(move |op: &Op| {
            if op.kind == OpKind::Fsync && is_seg(&op.path) && seen.insert(op.path.clone()) {
                new_segments += 1;
                return (new_segments == k).then_some(when);
            }
            None
        }),
        Cut::RollDir(k, when) => Box::new(move |op: &Op| {
            if op.kind == OpKind::Fsync && is_seg(&op.path) && seen.insert(op.path.clone()) {
                new_segments += 1;
                awaiting_dir = new_segments == k;
                return None;
            }
            if awaiting_dir && op.kind == OpKind::FsyncDir && op.path.ends_with("queue") {
                return Some(when);
            }
            None
        }),
        Cut::RollCommit(k, when) => Box::new(move |op: &Op| {
            if op.kind != OpKind::Fsync || !is_seg(&op.path) {
                return None;
            }
            if seen.insert(op.path.clone()) {
                new_segments += 1;
                if new_segments == k {
                    awaiting_commit = Some(op.path.clone());
                }
                return None;
            }
            (awaiting_commit.as_ref() == Some(&op.path)).then_some(when)
        }),
        Cut::FailedSync(k, _) => {
            let mut syncs = 0;
            Box::new(move |op: &Op| {
                if op.kind == OpKind::Fsync && is_seg(&op.path) {
                    syncs += 1;
                    return (syncs == k).then_some(When::Fail);
                }
                None
            })
        }
        Cut::Cursor(k, when) => Box::new(move |op: &Op| {
            if op.kind == OpKind::Fsync && op.path.ends_with("acked") {
                cursor_writes += 1;
                return (cursor_writes == k).then_some(when);
            }
            None
        }),
    };
    Some(t)
}

/// One power cut and recovery; what it found.
async fn run(v: Variant) -> Outcome {
    let tmp = tempfile::tempdir().unwrap();
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).unwrap();
    let mut fs = PowerCutFs::mount(
        &mnt,
        Options {
            strict: v.strict,
            liar: v.liar,
        },
    )
    .expect("mount the power-cut filesystem");
    let state = mnt.join("state");
    // The upstream broker and its consumer are up from the start, so the consumer sees every
    // message the broker ever accepts; the uplink reaches it through a proxy that is down until
    // the uplink is to come up.
    let broker = Mosquitto::start().expect("mosquitto");
    let consumer = Consumer::start(broker.port).await;
    let proxy = Proxy::start(broker.port).await;
    proxy.down();
    let mut pty = Pty::new();
    let yaml = config(&pty.path, proxy.port, &state, &v);

    // Phase 1: frames arrive, the uplink is down (or draining a backlog), the power is cut.
    let mut gw = start_gateway(&yaml);
    gw.wait_log("store-and-forward queue open", Duration::from_secs(10))
        .await;
    let armed = trigger(v.cut);
    let has_trigger = armed.is_some();
    if let Some(t) = armed {
        fs.arm(gw.child.id(), t);
    }
    let fired = AtomicBool::new(false);
    let fs_ref = &fs;
    let stop_on_fire = |limit: Duration| {
        let fired = &fired;
        move |_n: u64, elapsed: Duration| {
            if has_trigger && fs_ref.fired() {
                fired.store(true, Ordering::Relaxed);
                return true;
            }
            elapsed >= limit
        }
    };
    let mut written = Vec::new();
    if v.draining() {
        // A backlog first, then the upstream comes up and the paced drain runs.
        written.extend(write_until(&mut pty, 1, |_, e| e >= Duration::from_millis(1500)).await);
        proxy.up().await;
        let limit = match v.cut {
            Cut::Draining(d) => d,
            _ => Duration::from_secs(8),
        };
        let next = written.last().map_or(1, |(n, _)| n + 1);
        written.extend(write_until(&mut pty, next, stop_on_fire(limit)).await);
    } else if v.acking() {
        proxy.up().await;
        let limit = match v.cut {
            Cut::Acking(d) => d,
            _ => Duration::from_secs(8),
        };
        written.extend(write_until(&mut pty, 1, stop_on_fire(limit)).await);
    } else {
        let limit = match v.cut {
            Cut::At(d) | Cut::FailedSync(_, d) => d,
            _ => Duration::from_secs(8),
        };
        written.extend(write_until(&mut pty, 1, stop_on_fire(limit)).await);
    }
    if has_trigger {
        fs.wait_fired(Duration::from_millis(200));
    }
    let fired = fs.fired() || fired.load(Ordering::Relaxed);
    let cut_at = Instant::now();
    let phase1_log = gw.logs();
    let _ = gw.child.kill();
    let _ = gw.child.wait();
    drop(gw);
    fs.cut();

    // Phase 2: the power is back; the upstream is up; a new gateway on what survived.
    if !v.draining() && !v.acking() {
        proxy.up().await;
    }
    let gw2 = start_gateway(&yaml);
    let next = written.last().map_or(1, |(n, _)| n + 1);
    let after = write_until(&mut pty, next, |_, e| e >= Duration::from_millis(300)).await;
    let window = Duration::from_millis(v.flush_ms) + MARGIN;
    let must: BTreeSet<u64> = written
        .iter()
        .filter(|(_, t)| *t + window <= cut_at)
        .map(|(n, _)| *n)
        .chain(after.iter().map(|(n, _)| *n))
        .collect();
    consumer.wait_for(&must, Duration::from_secs(30)).await;
    // Let duplicates and stragglers arrive.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut outcome = judge(&consumer, &written, &must, fired, &gw2);
    outcome.failed_sync_logged = phase1_log.contains("fsync failed");
    drop(gw2);
    drop(fs);
    outcome
}

fn judge(
    consumer: &Consumer,
    written: &[(u64, Instant)],
    must: &BTreeSet<u64>,
    fired: bool,
    gw: &Gateway,
) -> Outcome {
    let got = consumer.got.lock().unwrap().clone();
    let frames: BTreeSet<u64> = got.iter().map(|(f, _)| *f).collect();
    let mut o = Outcome {
        fired,
        ..Outcome::default()
    };
    o.lost = must.difference(&frames).copied().collect();
    o.lost_in_window = written
        .iter()
        .filter(|(n, _)| !must.contains(n) && !frames.contains(n))
        .count() as u64;
    let mut seen = BTreeSet::new();
    let mut last_new = 0;
    let mut by_seq: BTreeMap<u64, u64> = BTreeMap::new();
    for &(frame, seq) in &got {
        if !seen.insert(frame) {
            o.duplicates += 1;
        } else {
            if frame < last_new && o.out_of_order.is_none() {
                o.out_of_order = Some((last_new, frame));
            }
            last_new = last_new.max(frame);
        }
        if let Some(seq) = seq {
            match by_seq.get(&seq) {
                Some(&before) if before != frame => o.reused.push((seq, before, frame)),
                Some(_) => {}
                None => {
                    by_seq.insert(seq, frame);
                }
            }
        }
    }
    if !o.lost.is_empty() {
        eprintln!("gateway log after the cut:\n{}", gw.logs());
    }
    o
}

fn ready() -> bool {
    powercut::available() && common::have_tool("mosquitto")
}

/// The short set CI runs on every commit: each kind of cut point once or twice.
fn ci_variants() -> Vec<Variant> {
    let mut v = Vec::new();
    for when in [When::Before, When::After, When::Torn] {
        v.push(Variant::new(Cut::RollFile(2, when)));
        v.push(Variant::new(Cut::RollCommit(2, when)));
    }
    for when in [When::Before, When::After] {
        v.push(Variant::new(Cut::RollDir(2, when)));
    }
    v.push(Variant::new(Cut::Cursor(2, When::Torn)));
    v.push(Variant::new(Cut::Draining(Duration::from_millis(2500))));
    v.push(Variant::new(Cut::Acking(Duration::from_millis(1900))));
    v.push(Variant::new(Cut::At(Duration::from_millis(1700))));
    v.push(Variant {
        strict: false,
        ..Variant::new(Cut::At(Duration::from_millis(2300)))
    });
    v.push(Variant {
        flush_ms: 0,
        ..Variant::new(Cut::At(Duration::from_millis(1300)))
    });
    v.push(Variant::new(Cut::FailedSync(
        3,
        Duration::from_millis(2500),
    )));
    v.push(Variant {
        mqtt5: false,
        ..Variant::new(Cut::RollCommit(3, When::Before))
    });
    v
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_power_cut_at_any_of_these_points_loses_only_the_last_flush_interval() {
    if !ready() {
        return;
    }
    // POWERCUT_ONLY=<text> runs only the variants whose Debug form contains it.
    let only = std::env::var("POWERCUT_ONLY").unwrap_or_default();
    for v in ci_variants() {
        if !format!("{v:?}").contains(&only) {
            continue;
        }
        let o = run(v).await;
        eprintln!("{v:?}: {o:?}");
        o.assert_ok(&v);
    }
}

/// The fixture is what makes the test above meaningful: on a disk that ignores fsync, the same
/// checks find the loss.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_disk_that_ignores_fsync_the_same_checks_find_the_loss() {
    if !ready() {
        return;
    }
    let v = Variant {
        liar: true,
        ..Variant::new(Cut::At(Duration::from_millis(1500)))
    };
    let o = run(v).await;
    assert!(
        o.lost.len() > 100,
        "a lying disk must lose the backlog, and the checks must see it: {o:?}"
    );
}

/// The long sweep: hundreds of cut points across the variants; prints a table per variant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a long sweep (about half an hour); figures go in BENCHMARKS.md"]
async fn sweep_of_power_cuts() {
    if !ready() {
        return;
    }
    let per: u64 = std::env::var("POWERCUT_SWEEP_PER")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(12);
    let mut rows: BTreeMap<String, (u64, u64, u64, u64, u64)> = BTreeMap::new();
    let mut failures = Vec::new();
    let mut rng = fastrand::Rng::with_seed(20261201);
    let whens = [When::Before, When::After, When::Torn];
    for i in 0..per {
        let when = whens[(i % 3) as usize];
        let k = 2 + (i % 4) as u32;
        let at = Duration::from_millis(rng.u64(600..4000));
        let mut vs = vec![
            ("random, strict, 100ms", Variant::new(Cut::At(at))),
            (
                "random, relaxed, 100ms",
                Variant {
                    strict: false,
                    ..Variant::new(Cut::At(at))
                },
            ),
            (
                "random, strict, flush 0",
                Variant {
                    flush_ms: 0,
                    ..Variant::new(Cut::At(at))
                },
            ),
            ("roll: new file fsync", Variant::new(Cut::RollFile(k, when))),
            ("roll: first commit", Variant::new(Cut::RollCommit(k, when))),
            ("cursor write", Variant::new(Cut::Cursor(k, when))),
            ("random, draining", Variant::new(Cut::Draining(at))),
            (
                "random, uplink up and acking",
                Variant::new(Cut::Acking(at)),
            ),
        ];
        if when != When::Torn {
            vs.push(("roll: dir fsync", Variant::new(Cut::RollDir(k, when))));
        }
        for (name, v) in vs {
            let o = run(v).await;
            let r = rows.entry(name.to_string()).or_default();
            r.0 += 1;
            r.1 += o.lost.len() as u64;
            r.2 += o.lost_in_window;
            r.3 += o.duplicates;
            r.4 += o.reused.len() as u64;
            let failed = !o.lost.is_empty() || o.out_of_order.is_some() || !o.reused.is_empty();
            if failed {
                failures.push(format!("{v:?}: {o:?}"));
            }
            eprintln!(
                "{name}: {v:?} -> lost {} in-window {} dup {} reused {}",
                o.lost.len(),
                o.lost_in_window,
                o.duplicates,
                o.reused.len()
            );
        }
    }
    println!("\n| variant | cuts | lost (accepted before the window) | lost in the last flush window | duplicates | seq reused |");
    println!("|---|---|---|---|---|---|");
    for (name, (n, lost, win, dup, reused)) in &rows {
        println!("| {name} | {n} | {lost} | {win} | {dup} | {reused} |");
    }
    assert!(failures.is_empty(), "{failures:#?}");
}

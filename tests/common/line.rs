//! A faulty serial line between two pty pairs: what the simulated device writes reaches the
//! gateway with bytes dropped, flipped and inserted at given rates (a noisy RS-485 line, a USB
//! hiccup); what the gateway writes reaches the device intact.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Pty;

/// Faults per byte, in parts per million.
#[derive(Debug, Clone, Copy)]
pub struct Faults {
    pub drop_ppm: u32,
    pub flip_ppm: u32,
    pub insert_ppm: u32,
    /// Seeds the fault pattern: the same seed faults the same bytes of the same stream.
    pub seed: u64,
}

/// How many faults the line made, for the test's report.
#[derive(Debug, Default)]
pub struct Injected {
    pub dropped: AtomicU64,
    pub flipped: AtomicU64,
    pub inserted: AtomicU64,
}

/// The line: `device` is the pty the simulator writes to (its master) and reads from; the
/// gateway opens `gateway_path`.
pub struct FaultyLine {
    pub device: Pty,
    pub gateway_path: std::path::PathBuf,
    pub injected: Arc<Injected>,
    _relay: tokio::task::JoinHandle<()>,
}

impl FaultyLine {
    /// Two pty pairs and a relay between them, faulting the device → gateway direction.
    pub async fn new(faults: Faults) -> Self {
        let device = Pty::new();
        let Pty {
            master: gateway_master,
            path: gateway_path,
        } = Pty::new();
        let injected = Arc::new(Injected::default());
        let counts = injected.clone();
        // The relay holds the device pair's far end, opened by path like a serial port.
        let far = tokio_serial::SerialStream::open(&tokio_serial::new(
            device.path.to_string_lossy(),
            9600,
        ))
        .expect("open the device pty's far end");
        let (mut from_device, mut to_device) = tokio::io::split(far);
        let (mut from_gateway, mut to_gateway) = tokio::io::split(gateway_master);
        let relay = tokio::spawn(async move {
            let back = tokio::spawn(async move {
                let mut buf = [0u8; 512];
                while let Ok(n @ 1..) = from_gateway.read(&mut buf).await {
                    if to_device.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                }
            });
            let mut rng = faults.seed | 1;
            let mut next = move || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                (rng % 1_000_000) as u32
            };
            let mut buf = [0u8; 512];
            while let Ok(n @ 1..) = from_device.read(&mut buf).await {
                let mut out = Vec::with_capacity(n + 8);
                for &b in &buf[..n] {
                    if next() < faults.insert_ppm {
                        out.push((next() & 0xFF) as u8);
                        counts.inserted.fetch_add(1, Ordering::Relaxed);
                    }
                    if next() < faults.drop_ppm {
                        counts.dropped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    if next() < faults.flip_ppm {
                        out.push(b ^ (1 << (next() % 8)));
                        counts.flipped.fetch_add(1, Ordering::Relaxed);
                        continue;
                    }
                    out.push(b);
                }
                if to_gateway.write_all(&out).await.is_err() {
                    break;
                }
            }
            back.abort();
        });
        Self {
            device,
            gateway_path,
            injected,
            _relay: relay,
        }
    }
}

/// Two pty pairs joined back to back: a serial cable between a program that opens
/// `device_path` (a simulator such as pymodbus) and the gateway, which opens `gateway_path`.
/// What the device sends has `corrupt(n)` applied to its n-th chunk (a test's line fault).
pub struct Cable {
    pub gateway_path: std::path::PathBuf,
    pub device_path: std::path::PathBuf,
    /// Bytes the gateway has sent to the device so far.
    pub sent: Arc<AtomicU64>,
    /// Every chunk that crossed, in order: when, whether the gateway sent it, the bytes.
    pub traffic: Traffic,
    _relay: tokio::task::JoinHandle<()>,
}

impl Cable {
    /// A clean cable.
    pub fn new() -> Self {
        Self::with_faults(|_, _| {})
    }

    /// A cable whose device → gateway direction passes each chunk read through `fault`
    /// (chunk number, bytes), which may change the bytes.
    pub fn with_faults(fault: impl Fn(u64, &mut Vec<u8>) + Send + 'static) -> Self {
        Self::build(fault, None)
    }

    /// A cable to a device that speaks at `baud` and `parity` ('N', 'E', 'O') only: while the
    /// gateway's end of the line is set otherwise, what crosses it either way arrives as
    /// garbage (as on a real line at the wrong speed).
    pub fn gated(baud: u32, parity: char) -> Self {
        Self::build(|_, _| {}, Some((baud, parity)))
    }

    fn build(
        fault: impl Fn(u64, &mut Vec<u8>) + Send + 'static,
        gate: Option<(u32, char)>,
    ) -> Self {
        let Pty {
            master: gw_master,
            path: gateway_path,
        } = Pty::new();
        let Pty {
            master: dev_master,
            path: device_path,
        } = Pty::new();
        let gw_fd = std::os::fd::AsRawFd::as_raw_fd(&gw_master);
        let (mut from_gw, mut to_gw) = tokio::io::split(gw_master);
        let (mut from_dev, mut to_dev) = tokio::io::split(dev_master);
        let sent = Arc::new(AtomicU64::new(0));
        let counted = sent.clone();
        let traffic = Traffic::default();
        let (up_log, down_log) = (traffic.clone(), traffic.clone());
        let relay = tokio::spawn(async move {
            let up = tokio::spawn(async move {
                let mut buf = [0u8; 512];
                loop {
                    match from_gw.read(&mut buf).await {
                        Ok(n @ 1..) => {
                            counted.fetch_add(n as u64, Ordering::Relaxed);
                            let mut bytes = buf[..n].to_vec();
                            up_log.push(true, &bytes);
                            if !line_matches(gw_fd, gate) {
                                garble(&mut bytes);
                            }
                            if to_dev.write_all(&bytes).await.is_err() {
                                return;
                            }
                        }
                        // Nobody on that end (yet, or for a while): wait.
                        Err(e) if e.raw_os_error() == Some(libc::EIO) => {
                            tokio::time::sleep(std::time::Duration::from_millis(5)).await
                        }
                        _ => return,
                    }
                }
            });
            // Dropping this task (the cable unplugged) stops the other direction too.
            let _up = AbortOnDrop(up);
            let mut buf = [0u8; 512];
            let mut chunk = 0;
            loop {
                match from_dev.read(&mut buf).await {
                    Ok(n @ 1..) => {
                        let mut bytes = buf[..n].to_vec();
                        down_log.push(false, &bytes);
                        fault(chunk, &mut bytes);
                        chunk += 1;
                        if !line_matches(gw_fd, gate) {
                            garble(&mut bytes);
                        }
                        if to_gw.write_all(&bytes).await.is_err() {
                            break;
                        }
                    }
                    Err(e) if e.raw_os_error() == Some(libc::EIO) => {
                        tokio::time::sleep(std::time::Duration::from_millis(5)).await
                    }
                    _ => break,
                }
            }
        });
        Self {
            gateway_path,
            device_path,
            sent,
            traffic,
            _relay: relay,
        }
    }
}

/// Unplugging a cable closes both its ptys' masters: the gateway's end reads EIO, as when a
/// USB adapter is pulled.
impl Drop for Cable {
    fn drop(&mut self) {
        self._relay.abort();
    }
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The chunks that crossed a [`Cable`], in order.
#[derive(Clone, Default)]
pub struct Traffic(Arc<std::sync::Mutex<Vec<Chunk>>>);

/// When a chunk crossed, whether the gateway sent it, and its bytes.
type Chunk = (std::time::Instant, bool, Vec<u8>);

impl Traffic {
    fn push(&self, from_gateway: bool, bytes: &[u8]) {
        if let Ok(mut t) = self.0.lock() {
            t.push((std::time::Instant::now(), from_gateway, bytes.to_vec()));
        }
    }

    /// The turns so far: consecutive chunks one way joined, as (from the gateway, bytes).
    pub fn turns(&self) -> Vec<(bool, Vec<u8>)> {
        self.timed_turns()
            .into_iter()
            .map(|(_, up, b)| (up, b))
            .collect()
    }

    /// The turns so far with when each began.
    pub fn timed_turns(&self) -> Vec<Chunk> {
        let mut turns: Vec<Chunk> = Vec::new();
        for (at, up, bytes) in self.0.lock().unwrap().iter() {
            match turns.last_mut() {
                Some((_, dir, b)) if dir == up => b.extend_from_slice(bytes),
                _ => turns.push((*at, *up, bytes.clone())),
            }
        }
        turns
    }
}

/// Whether the gateway's end of the line (the pty's settings, shared by both its ends) is set
/// to `gate`'s speed and parity (always, without a gate).
fn line_matches(fd: std::os::fd::RawFd, gate: Option<(u32, char)>) -> bool {
    let Some(gate) = gate else {
        return true;
    };
    settings(fd) == Some(gate)
}

/// The serial line at `path` opened to read its settings, without becoming its controlling
/// terminal and without waiting for a carrier.
fn open_line(path: &std::path::Path) -> Option<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NOCTTY | libc::O_NONBLOCK)
        .open(path)
        .ok()
}

/// The speed and parity ('N', 'E', 'O') the serial line at `path` (a pty's slave) is set to
/// now, as whoever holds it set them; opened without becoming its controlling terminal.
pub fn line_of(path: &std::path::Path) -> Option<(u32, char)> {
    let f = open_line(path)?;
    settings(std::os::fd::AsRawFd::as_raw_fd(&f))
}

/// Whether the serial line at `path` is set to two stop bits (a pty keeps CSTOPB, though it
/// forces 8 data bits and no parity whatever is asked: Linux's pty_set_termios).
pub fn two_stop_bits(path: &std::path::Path) -> Option<bool> {
    let f = open_line(path)?;
    // SAFETY: as in `settings`.
    let mut t: libc::termios2 = unsafe { std::mem::zeroed() };
    if unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&f), libc::TCGETS2, &mut t) } != 0 {
        return None;
    }
    Some(t.c_cflag & libc::CSTOPB != 0)
}

/// The speed and parity of the terminal `fd`.
fn settings(fd: std::os::fd::RawFd) -> Option<(u32, char)> {
    // serialport sets any speed through termios2 (BOTHER with the speed in c_ospeed), so the
    // speed is read the same way. SAFETY: `fd` is a terminal its caller holds open for the
    // call; TCGETS2 only fills the zeroed struct.
    let mut t: libc::termios2 = unsafe { std::mem::zeroed() };
    if unsafe { libc::ioctl(fd, libc::TCGETS2, &mut t) } != 0 {
        return None;
    }
    let speed = if t.c_cflag & libc::CBAUD == libc::BOTHER {
        t.c_ospeed
    } else {
        match t.c_cflag & libc::CBAUD {
            libc::B1200 => 1200,
            libc::B2400 => 2400,
            libc::B4800 => 4800,
            libc::B9600 => 9600,
            libc::B19200 => 19200,
            libc::B38400 => 38400,
            libc::B57600 => 57600,
            libc::B115200 => 115200,
            _ => 0,
        }
    };
    let set = match (t.c_cflag & libc::PARENB != 0, t.c_cflag & libc::PARODD != 0) {
        (false, _) => 'N',
        (true, false) => 'E',
        (true, true) => 'O',
    };
    Some((speed, set))
}

/// What bytes sent at one speed look like read at another.
fn garble(bytes: &mut [u8]) {
    for b in bytes {
        *b = b.rotate_left(3) ^ 0x5A;
    }
}

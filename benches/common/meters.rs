//! Modbus-style meters on one pty that keep the wire's timing at a given baud rate: a request
//! occupies the line for its 8 characters before the addressed meter answers, and the answer
//! goes out one character at a time (10 bits each). Shared by the bus and share benches.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::Pty;

/// Bytes of a read request.
pub const REQUEST: usize = 8;

/// The time one character takes on the line.
pub fn char_time(baud: u32) -> Duration {
    Duration::from_secs_f64(10.0 / f64::from(baud))
}

/// CRC-16/MODBUS, low byte first.
pub fn modbus_crc(frame: &[u8]) -> [u8; 2] {
    crc::Crc::<u16>::new(&crc::CRC_16_MODBUS)
        .checksum(frame)
        .to_le_bytes()
}

/// Microseconds from the end of each answer on the simulated line to the next request, as
/// the simulator sees them: the reader's turnaround plus its reaction time.
pub type Gaps = Arc<std::sync::Mutex<Vec<u64>>>;

/// Every request the meters saw: when it arrived, its unit and function.
pub type Seen = Arc<std::sync::Mutex<Vec<(tokio::time::Instant, u8, u8)>>>;

/// The meters: each read request (function 3 or 4, `count` registers) is answered after its
/// wire time with `count` registers (the first 0x0901, the rest 0), paced per character at
/// `baud`. Counts answers; records the gaps and the requests seen.
pub fn simulate(
    pty: Pty,
    answered: Arc<AtomicU64>,
    baud: u32,
    gaps: Gaps,
    seen: Seen,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let _keep = pty.path;
        let mut master = pty.master;
        let mut req = [0u8; REQUEST];
        let ct = char_time(baud);
        let mut answer_end: Option<tokio::time::Instant> = None;
        loop {
            match master.read_exact(&mut req).await {
                Ok(_) => {}
                // No reader on the other end yet (once it was there, EIO means it left).
                Err(e)
                    if e.raw_os_error() == Some(libc::EIO)
                        && answered.load(Ordering::Relaxed) == 0 =>
                {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
                Err(_) => return,
            }
            // The request's bytes on the wire; the reader wrote them at once.
            let arrived = tokio::time::Instant::now();
            if let Ok(mut s) = seen.lock() {
                s.push((arrived, req[0], req[1]));
            }
            if let Some(end) = answer_end.take() {
                let gap = arrived.saturating_duration_since(end);
                if let Ok(mut g) = gaps.lock() {
                    g.push(gap.as_micros() as u64);
                }
            }
            let count = usize::from(u16::from_be_bytes([req[4], req[5]])).min(125);
            let mut answer = vec![req[0], req[1], (count * 2) as u8];
            answer.extend_from_slice(&[0x09, 0x01]);
            answer.resize(3 + count * 2, 0);
            let crc = modbus_crc(&answer);
            answer.extend_from_slice(&crc);
            let start = arrived + ct * REQUEST as u32;
            for (i, b) in answer.iter().enumerate() {
                wire_time(start + ct * i as u32).await;
                if master.write_all(&[*b]).await.is_err() {
                    return;
                }
            }
            // The last character is on the line for one more character time.
            answer_end = Some(tokio::time::Instant::now() + ct);
            answered.fetch_add(1, Ordering::Relaxed);
        }
    })
}

/// Waits until `at` to within tens of microseconds, as a line's characters arrive: tokio's
/// timer rounds up to whole milliseconds, two characters at 19200 baud.
pub async fn wire_time(at: tokio::time::Instant) {
    let rest = at.saturating_duration_since(tokio::time::Instant::now());
    // The coarse timer may be 2 ms late (tokio's tick, then epoll's millisecond).
    if rest > Duration::from_millis(3) {
        tokio::time::sleep_until(at - Duration::from_millis(3)).await;
    }
    let rest = at.saturating_duration_since(tokio::time::Instant::now());
    if !rest.is_zero() {
        let _ = tokio::task::spawn_blocking(move || std::thread::sleep(rest)).await;
    }
}

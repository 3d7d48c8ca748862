//! A built-in simulated sensor: writes realistic frames into one end of a pseudo-terminal pair,
//! while the device task reads the other end by path, exactly as it reads a real USB adapter.
//!
//! This is what lets the demo config run on a machine with no hardware, and it exercises the
//! whole real path (open by name, termios, framing, rules, broker).

use std::io;
use std::path::PathBuf;
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio_serial::SerialPort;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::framing::{encode_frame, Framing};
use crate::config::schema::{SimProfile, Simulate};

/// A small deterministic random walk, so readings look alive without a `rand` dependency chain.
struct Walk {
    rng: fastrand::Rng,
    value: f64,
    min: f64,
    max: f64,
    step: f64,
}

impl Walk {
    fn new(rng: &mut fastrand::Rng, start: f64, min: f64, max: f64, step: f64) -> Self {
        Self {
            rng: rng.fork(),
            value: start,
            min,
            max,
            step,
        }
    }
    fn next(&mut self) -> f64 {
        let delta = (self.rng.f64() * 2.0 - 1.0) * self.step;
        self.value = (self.value + delta).clamp(self.min, self.max);
        self.value
    }
}

/// Produces the payloads of one profile.
pub struct Sensor {
    profile: SimProfile,
    a: Walk,
    b: Walk,
    c: Walk,
}

impl Sensor {
    /// A sensor of `profile`, seeded for repeatable output.
    pub fn new(profile: SimProfile, seed: u64) -> Self {
        let mut rng = fastrand::Rng::with_seed(seed);
        let (a, b, c) = match profile {
            SimProfile::Climate => (
                Walk::new(&mut rng, 21.5, 15.0, 30.0, 0.2),
                Walk::new(&mut rng, 45.0, 30.0, 80.0, 1.0),
                Walk::new(&mut rng, 0.0, 0.0, 0.0, 0.0),
            ),
            SimProfile::WeatherJson => (
                Walk::new(&mut rng, 12.0, -10.0, 35.0, 0.3),
                Walk::new(&mut rng, 70.0, 20.0, 100.0, 2.0),
                Walk::new(&mut rng, 3.0, 0.0, 25.0, 0.8),
            ),
            SimProfile::Power => (
                Walk::new(&mut rng, 230.0, 215.0, 245.0, 0.5),
                Walk::new(&mut rng, 1.2, -2.0, 16.0, 0.2),
                Walk::new(&mut rng, 0.0, 0.0, 0.0, 0.0),
            ),
        };
        Self { profile, a, b, c }
    }

    /// The next frame's payload (without framing).
    pub fn next_payload(&mut self) -> Vec<u8> {
        match self.profile {
            SimProfile::Climate => {
                format!("T={:.1};H={:.0}", self.a.next(), self.b.next()).into_bytes()
            }
            SimProfile::WeatherJson => format!(
                r#"{{"id":"ws1","temperature":{:.1},"humidity":{:.0},"wind_kmh":{:.1}}}"#,
                self.a.next(),
                self.b.next(),
                self.c.next()
            )
            .into_bytes(),
            SimProfile::Power => {
                let centivolts = (self.a.next() * 100.0).round() as u16;
                let milliamps = (self.b.next() * 1000.0).round() as i16;
                let mut p = Vec::with_capacity(4);
                p.extend_from_slice(&centivolts.to_le_bytes());
                p.extend_from_slice(&milliamps.to_le_bytes());
                p
            }
        }
    }
}

/// Creates a pty pair and starts writing `sim`'s frames into it; returns the path the device
/// should open. The writer stops on shutdown.
pub fn start(
    device: &str,
    sim: &Simulate,
    framing: &Framing,
    shutdown: CancellationToken,
) -> io::Result<PathBuf> {
    let (mut master, slave) = tokio_serial::SerialStream::pair().map_err(io::Error::from)?;
    let path = slave
        .name()
        .map(PathBuf::from)
        .ok_or_else(|| io::Error::other("the pseudo-terminal has no name"))?;
    let mut sensor = Sensor::new(sim.profile, device.bytes().map(u64::from).sum());
    let interval = sim.interval.max(Duration::from_millis(1));
    let sim_noise = sim.noise;
    let framing = framing.clone();
    let device = device.to_owned();
    tokio::spawn(async move {
        // Holding the slave end open keeps the pty alive while the device task reopens it.
        let _slave = slave;
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut buf = Vec::new();
        let mut noise = fastrand::Rng::with_seed(7);
        let share = sim_noise;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tick.tick() => {}
            }
            buf.clear();
            let mut payload = sensor.next_payload();
            if share > 0.0 && noise.f64() < share && !payload.is_empty() {
                // One byte hit by line noise: what a real sensor's cable does now and then.
                let i = noise.usize(..payload.len());
                payload[i] ^= 1 << noise.u8(0..8);
            }
            encode_frame(&framing, &payload, &mut buf);
            if let Err(e) = master.write_all(&buf).await {
                warn!(device = %device, "simulator write failed: {e}");
            }
        }
    });
    Ok(path)
}

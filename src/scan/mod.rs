//! `serial2mqtt scan PORT`: what is on a port, as a ready `devices:` snippet.
//!
//! Three steps, each reading only: [`listen`] for devices that talk by themselves (their frames
//! recognised by each push model's own framing and checksum, at the usual line speeds), then
//! [`probe`] the devices that answer a model's read request (polled models), and the Modbus
//! units of a bounded address range (read requests only: presence, Read Device
//! Identification, then each Modbus model's own map with its plausible value ranges). Every
//! finding ranks the models that fit with the evidence for each; [`snippet`] writes the
//! devices, checked by the same parser a config goes through before it is shown.

pub mod listen;
pub mod probe;
pub mod snippet;

use std::ops::RangeInclusive;
use std::path::PathBuf;
use std::time::Duration;

use tokio_serial::{DataBits, Parity, SerialPort, SerialStream, StopBits};

use crate::config::Device;
use crate::models::{Library, Loaded};

/// What to scan and how far.
#[derive(Debug, Clone)]
pub struct Options {
    /// The serial device.
    pub port: PathBuf,
    /// Modbus unit addresses asked.
    pub units: RangeInclusive<u8>,
    /// Line speeds tried (None: the usual ones and every model's).
    pub bauds: Option<Vec<u32>>,
    /// Longest wait for a talking device at one line speed.
    pub listen: Duration,
}

/// Line settings of one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Line {
    /// Bits per second.
    pub baud: u32,
    /// 'N', 'E' or 'O'.
    pub parity: char,
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} 8{}1", self.baud, self.parity)
    }
}

impl Line {
    /// The settings of a device as configured.
    pub fn of(d: &Device) -> Self {
        Self {
            baud: d.serial.baud,
            parity: match d.serial.parity {
                Parity::Even => 'E',
                Parity::Odd => 'O',
                Parity::None => 'N',
            },
        }
    }

    /// Sets the open port to these settings and drops what it holds.
    pub fn apply(&self, port: &mut SerialStream) -> tokio_serial::Result<()> {
        port.set_baud_rate(self.baud)?;
        port.set_data_bits(DataBits::Eight)?;
        port.set_parity(match self.parity {
            'E' => Parity::Even,
            'O' => Parity::Odd,
            _ => Parity::None,
        })?;
        port.set_stop_bits(StopBits::One)?;
        port.clear(tokio_serial::ClearBuffer::All)
    }

    /// Time for `bytes` on the wire (10 or 11 bits each).
    pub fn wire(&self, bytes: usize) -> Duration {
        let bits = if self.parity == 'N' { 10 } else { 11 };
        Duration::from_micros(bytes as u64 * bits * 1_000_000 / u64::from(self.baud.max(1)))
    }
}

/// How sure a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Confidence {
    /// Answers or frames fit, but nothing proves the model.
    Possible,
    /// Checked frames, or plausible values of the model's map.
    Likely,
    /// Several checked frames with plausible values, or several plausible values and the only
    /// model that fits.
    Certain,
}

impl Confidence {
    /// As printed.
    pub fn word(self) -> &'static str {
        match self {
            Self::Possible => "possible",
            Self::Likely => "likely",
            Self::Certain => "certain",
        }
    }
}

/// A model that fits what was seen, with the evidence.
#[derive(Debug, Clone)]
pub struct Candidate {
    /// The model's name.
    pub model: String,
    /// Ranks candidates: higher is better.
    pub score: (u32, u32, u32),
    /// What was seen, for the reader.
    pub evidence: String,
    /// The values seen, as `name=value unit` (the snippet's comment).
    pub values: Vec<String>,
}

/// Something found on the port.
#[derive(Debug, Clone)]
pub struct Finding {
    /// The line settings it was found at.
    pub line: Line,
    /// Its Modbus address, for a unit.
    pub unit: Option<u8>,
    /// The models that fit, best first (never empty).
    pub ranked: Vec<Candidate>,
    /// How sure the first is.
    pub confidence: Confidence,
    /// What Read Device Identification said, when the unit answered it.
    pub identification: Option<String>,
}

/// Reports progress (stderr, or a bar on a terminal).
pub trait Progress {
    /// A step begins, of `steps` parts.
    fn phase(&mut self, what: &str, steps: u64);
    /// One part done.
    fn step(&mut self, detail: &str);
    /// A line that stays.
    fn note(&mut self, line: &str);
}

/// The models of each kind, built as devices with their defaults.
pub struct Kinds<'a> {
    /// Talk by themselves (no polls, not Modbus).
    pub push: Vec<(&'a Loaded, Device)>,
    /// Answer their own read request.
    pub polled: Vec<(&'a Loaded, Device)>,
    /// Modbus units (the device at the model's defaults: its factory line settings).
    pub modbus: Vec<(&'a Loaded, Device)>,
}

/// Sorts the library's models by how they are found.
pub fn kinds(library: &Library) -> Kinds<'_> {
    let mut k = Kinds {
        push: Vec::new(),
        polled: Vec::new(),
        modbus: Vec::new(),
    };
    for l in library.iter() {
        let Ok(d) = library.device(
            &l.model.model,
            "scan",
            "/dev/serial2mqtt-scan",
            &serde_yaml::Mapping::new(),
        ) else {
            continue;
        };
        if l.model.family.modbus() {
            k.modbus.push((l, d));
        } else if d.polls.is_empty() {
            k.push.push((l, d));
        } else {
            k.polled.push((l, d));
        }
    }
    k
}

/// The line settings a model may be found at: its factory setting, then each speed of its
/// scan list at the factory parity, then the factory speed at the other parities of the list
/// (a device whose speed and parity were both changed needs `--bauds`).
pub fn lines_of(l: &Loaded, factory: Line) -> Vec<Line> {
    let scan = l.model.scan.as_ref();
    let bauds: Vec<u32> = scan.map(|s| s.bauds.clone()).unwrap_or_default();
    let parities: Vec<char> = scan
        .map(|s| {
            s.parity
                .iter()
                .map(|p| match p {
                    crate::config::schema::Parity::Even => 'E',
                    crate::config::schema::Parity::Odd => 'O',
                    crate::config::schema::Parity::None => 'N',
                })
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    let mut out = vec![factory];
    let mut add = |l: Line| {
        if !out.contains(&l) {
            out.push(l);
        }
    };
    for &baud in &bauds {
        add(Line {
            baud,
            parity: factory.parity,
        });
    }
    for &parity in &parities {
        add(Line {
            baud: factory.baud,
            parity,
        });
    }
    out
}

/// The usual line speeds of serial sensors, tried for talking devices besides the models' own.
pub const USUAL_BAUDS: &[u32] = &[9600, 115200, 19200, 38400, 57600, 4800, 2400, 1200];

/// A value checked against the model's plausible range, if it has one for `name`: Some(true)
/// inside, Some(false) outside.
pub fn plausible(l: &Loaded, name: &str, value: f64) -> Option<bool> {
    let [lo, hi] = *l.model.scan.as_ref()?.plausible.get(name)?;
    Some(value.is_finite() && value >= lo && value <= hi)
}

/// What a model's signature register reading its code adds to its first score: more than any
/// count of plausible values.
pub const SIGNATURE: u32 = 1000;

/// Orders candidates best first; the confidence the best one earns.
pub fn rank(mut c: Vec<Candidate>) -> Option<(Vec<Candidate>, Confidence)> {
    c.sort_by(|a, b| b.score.cmp(&a.score).then_with(|| a.model.cmp(&b.model)));
    let best = c.first()?;
    // Reading more points of a larger map is no proof against a smaller one that fits as well.
    let alone = c
        .get(1)
        .is_none_or(|s| (s.score.0, s.score.1) < (best.score.0, best.score.1));
    let confidence = match best.score.0 {
        n if n >= SIGNATURE => Confidence::Certain,
        n if n >= 2 && alone => Confidence::Certain,
        n if n >= 1 => Confidence::Likely,
        _ => Confidence::Possible,
    };
    Some((c, confidence))
}

/// What a scan will try, and how long it takes at most.
pub struct Plan<'a> {
    /// The models by kind.
    pub kinds: Kinds<'a>,
    /// Line settings listened at.
    pub listen: Vec<Line>,
    /// Modbus line settings asked at.
    pub modbus: Vec<Line>,
}

impl<'a> Plan<'a> {
    /// The plan for `opts` with `library`'s models.
    pub fn new(opts: &Options, library: &'a Library) -> Self {
        let kinds = kinds(library);
        let listen = listen::lines(&kinds.push, opts.bauds.as_deref());
        let modbus = probe::modbus_lines(&kinds.modbus, opts.bauds.as_deref());
        Self {
            kinds,
            listen,
            modbus,
        }
    }

    /// The longest the scan takes when nothing talks and nothing answers (the common case:
    /// one listen, every poll and every unit unanswered), and when a device talks at a speed
    /// that must be searched for.
    pub fn bounds(&self, opts: &Options) -> (Duration, Duration) {
        let polled: Duration = self
            .kinds
            .polled
            .iter()
            .map(|(l, d)| {
                let tries = lines_of(l, Line::of(d)).len() as u32;
                d.polls.first().map_or(Duration::ZERO, |p| p.timeout) * tries
            })
            .sum();
        let units = opts.units.clone().count() as u32;
        let modbus: Duration = self
            .modbus
            .iter()
            .map(|&l| (probe::presence_timeout(l) + l.wire(8) * 2) * 2 * units)
            .sum();
        let silent = opts.listen + polled + modbus;
        let talking = opts.listen * self.listen.len() as u32;
        (silent, talking)
    }
}

/// Runs the scan on an open port: listening, then (when nothing talks) asking.
pub async fn run(
    port: &mut SerialStream,
    opts: &Options,
    library: &Library,
    plan: &Plan<'_>,
    progress: &mut dyn Progress,
) -> std::io::Result<Vec<Finding>> {
    let found = listen::run(port, &plan.kinds.push, &plan.listen, opts.listen, progress).await?;
    if !found.is_empty() {
        return Ok(found);
    }
    let found = probe::polled(port, &plan.kinds.polled, progress).await?;
    if !found.is_empty() {
        return Ok(found);
    }
    probe::modbus(
        port,
        library,
        &plan.kinds.modbus,
        &plan.modbus,
        opts.units.clone(),
        progress,
    )
    .await
}

//! `serial2mqtt scan PORT`: finds what is on a port and prints a ready `devices:` snippet on
//! stdout; what it tries, how long it may take, its progress and its reasons go to stderr.
//! Exit 0 when something was found, 1 when nothing, 2 when it could not scan.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use tokio_serial::SerialPortBuilderExt as _;

use crate::models::{self, Library};
use crate::scan::{self, Options, Progress};

/// The command's arguments.
pub struct Args {
    /// What to scan.
    pub options: Options,
    /// The gateway's config: its models/ directory, and whether the running gateway holds
    /// the port.
    pub config: PathBuf,
    /// Scan a port the running gateway uses.
    pub share: bool,
}

/// Parses `--units`: `5`, or `1-247`.
pub fn units(text: &str) -> Result<std::ops::RangeInclusive<u8>, String> {
    let parse = |s: &str| {
        s.trim()
            .parse::<u8>()
            .ok()
            .filter(|u| *u >= 1)
            .ok_or_else(|| format!("`{s}` is not a unit address (1 to 255)"))
    };
    match text.split_once('-') {
        Some((a, b)) => {
            let (a, b) = (parse(a)?, parse(b)?);
            if a > b {
                return Err(format!("{a}-{b}: the first address must be the lower"));
            }
            Ok(a..=b)
        }
        None => parse(text).map(|u| u..=u),
    }
}

/// Runs the scan.
pub fn main(args: Args) -> ExitCode {
    let Args {
        options,
        config,
        share,
    } = args;
    if !share {
        if let Some(why) = held_by_gateway(&options.port, &config) {
            eprintln!("{why}");
            return ExitCode::from(2);
        }
    }
    let library = match Library::with_dir(&models::user_dir(&config)) {
        Ok(l) => l,
        Err(errors) => {
            for e in errors {
                eprintln!("error: {e}");
            }
            return ExitCode::from(2);
        }
    };
    let plan = scan::Plan::new(&options, &library);
    let (silent, talking) = plan.bounds(&options);
    eprintln!(
        "scanning {}: listening up to {} at {} line setting(s) for a device that talks, then \
         asking {} polled model(s) and Modbus units {}-{} at {} line setting(s) (read requests only)",
        options.port.display(),
        humantime::format_duration(options.listen),
        plan.listen.len(),
        plan.kinds.polled.len(),
        options.units.start(),
        options.units.end(),
        plan.modbus.len(),
    );
    eprintln!(
        "this takes at most {} on a quiet line ({} if a device talks at a speed to be found); \
         more with each unit that answers",
        secs(silent),
        secs(talking)
    );
    let Some(runtime) = super::runtime() else {
        return ExitCode::from(2);
    };
    let started = std::time::Instant::now();
    let found = runtime.block_on(async {
        let first = plan.listen.first().map_or(9600, |l| l.baud);
        let mut port = tokio_serial::new(options.port.to_string_lossy(), first)
            .timeout(Duration::from_millis(100))
            .open_native_async()
            .map_err(|e| opening(&options.port, &e))?;
        let mut progress = Shown::new();
        let found = scan::run(&mut port, &options, &library, &plan, &mut progress)
            .await
            .map_err(|e| format!("{}: {e}", options.port.display()))?;
        progress.done();
        Ok::<_, String>(found)
    });
    let found = match found {
        Ok(f) => f,
        Err(why) => {
            eprintln!("{why}");
            return ExitCode::from(2);
        }
    };
    eprintln!("scan took {}", secs(started.elapsed()));
    if found.is_empty() {
        eprintln!(
            "nothing found on {}. A device that sends less often than every {} needs a longer \
             --listen; a Modbus unit outside {}-{} needs --units 1-247; check the wiring (A/B \
             swapped?) and that the device is powered",
            options.port.display(),
            humantime::format_duration(options.listen),
            options.units.start(),
            options.units.end()
        );
        return ExitCode::FAILURE;
    }
    for f in &found {
        let best = &f.ranked[0];
        let at = f.unit.map(|u| format!("unit {u} ")).unwrap_or_default();
        eprintln!(
            "found {at}at {}: {} ({}) — {}",
            f.line,
            best.model,
            f.confidence.word(),
            best.evidence
        );
        for other in f.ranked.iter().skip(1) {
            eprintln!("  also fits: {} — {}", other.model, other.evidence);
        }
    }
    match scan::snippet::write(&options.port, &found, &library) {
        Ok(s) => {
            print!("{s}");
            ExitCode::SUCCESS
        }
        Err(why) => {
            eprintln!("{why}");
            ExitCode::from(2)
        }
    }
}

fn secs(d: Duration) -> String {
    format!("{:.0} s", d.as_secs_f64().ceil())
}

/// Why the port cannot be opened, in words.
fn opening(port: &Path, e: &tokio_serial::Error) -> String {
    let busy = e.description.contains("busy")
        || e.description.contains("Busy")
        || e.description.contains("exclusive");
    if busy {
        format!(
            "{} is in use by another program (the running gateway?): stop it, or scan another port",
            port.display()
        )
    } else {
        format!("cannot open {}: {e}", port.display())
    }
}

/// When the gateway of `config` has a device on `port` and runs (its state_dir is locked, or
/// the port is held open): why the scan refuses.
fn held_by_gateway(port: &Path, config: &Path) -> Option<String> {
    let c = crate::config::load(config).ok()?;
    let wanted = std::fs::canonicalize(port).unwrap_or_else(|_| port.to_owned());
    if !c
        .devices
        .iter()
        .any(|d| d.source.key().is_some_and(|k| k == wanted))
    {
        return None;
    }
    let running = match crate::statedir::lock(&c.gateway.state_dir, false) {
        Err(crate::statedir::LockError::Held { holder, .. }) => Some(holder),
        _ => tokio_serial::new(port.to_string_lossy(), 9600)
            .open()
            .is_err()
            .then(|| "it holds the port open".to_owned()),
    }?;
    Some(format!(
        "{} is a port of the running gateway ({running}; {}): a scan would put its requests \
         between the gateway's. Stop the gateway first, or pass --share to scan anyway",
        port.display(),
        config.display()
    ))
}

/// Progress on stderr: a bar on a terminal, else a line per phase and per note.
struct Shown {
    bar: Option<ProgressBar>,
}

impl Shown {
    fn new() -> Self {
        Self { bar: None }
    }

    fn done(&mut self) {
        if let Some(b) = self.bar.take() {
            b.finish_and_clear();
        }
    }
}

impl Progress for Shown {
    fn phase(&mut self, what: &str, steps: u64) {
        self.done();
        if std::io::IsTerminal::is_terminal(&std::io::stderr()) {
            let bar = ProgressBar::new(steps);
            if let Ok(style) = ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg}")
            {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(what.to_owned());
            self.bar = Some(bar);
        } else {
            eprintln!("{what} ({steps} step(s))");
        }
    }

    fn step(&mut self, detail: &str) {
        if let Some(b) = &self.bar {
            b.set_message(detail.to_owned());
            b.inc(1);
        }
    }

    fn note(&mut self, line: &str) {
        match &self.bar {
            Some(b) => b.println(line),
            None => eprintln!("{line}"),
        }
    }
}

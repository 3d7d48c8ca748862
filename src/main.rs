//! The `serial2mqtt` command line: run the daemon, check a config, try a rule on a frame.

use std::path::PathBuf;
use std::process::ExitCode;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use serial2mqtt::config::{self, Config, DEFAULT_PATH};
use serial2mqtt::gateway;
use serial2mqtt::serial::device::FrameHandler;
use serial2mqtt::stats::DeviceStats;
use serial2mqtt::systemd;

/// Reads sensor frames from serial ports and publishes them as MQTT messages by YAML rules.
#[derive(Parser)]
#[command(version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (the daemon).
    Run {
        /// Config file.
        #[arg(short, long, default_value = DEFAULT_PATH)]
        config: PathBuf,
    },
    /// Validate a config file: exit 0, or 1 with every error and what to write instead.
    Check {
        /// Config file (or use --config).
        file: Option<PathBuf>,
        /// Config file.
        #[arg(short, long, conflicts_with = "file")]
        config: Option<PathBuf>,
    },
    /// List the serial ports of this machine with USB ids and the stable path for the config.
    Ports,
    /// Show what the running gateway reports: devices, queue, uplink.
    Status {
        /// Config file of the running gateway.
        #[arg(short, long, default_value = DEFAULT_PATH)]
        config: PathBuf,
        /// TLS listener: CA certificates to trust (default: broker.tls.cert_file).
        #[arg(long)]
        ca_file: Option<PathBuf>,
        /// TLS listener: host name in its certificate (default: the listen address).
        #[arg(long)]
        host: Option<String>,
    },
    /// Print the messages one frame would produce on a device.
    TestRule {
        /// Config file.
        #[arg(short, long, default_value = DEFAULT_PATH)]
        config: PathBuf,
        /// Device whose rules to apply.
        #[arg(short, long)]
        device: String,
        /// The frame is hex (binary frames), e.g. 66081800.
        #[arg(long)]
        hex: bool,
        /// The frame, without its delimiter.
        frame: String,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => run(config),
        Command::Check { file, config } => {
            check(file.or(config).unwrap_or_else(|| DEFAULT_PATH.into()))
        }
        Command::Ports => match serial2mqtt::serial::ports::list() {
            Ok(ports) => {
                print!("{}", serial2mqtt::serial::ports::render(&ports));
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("serial2mqtt: {e}");
                ExitCode::FAILURE
            }
        },
        Command::TestRule {
            config,
            device,
            hex,
            frame,
        } => test_rule(config, &device, hex, &frame),
        Command::Status {
            config,
            ca_file,
            host,
        } => status(config, &serial2mqtt::status::TlsTarget { ca_file, host }),
    }
}

fn status(path: PathBuf, tls: &serial2mqtt::status::TlsTarget) -> ExitCode {
    // Warnings (a port missing now) are `check`'s business, not a status reader's.
    let config = match config::load(&path) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("serial2mqtt: cannot start a runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(serial2mqtt::status::fetch(&config, tls)) {
        Ok(summary) => {
            print!(
                "{}",
                serial2mqtt::status::render(&config.gateway.id, &summary)
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("serial2mqtt: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load_or_report(path: &std::path::Path) -> Option<Config> {
    match config::load(path) {
        Ok(c) => {
            for w in &c.warnings {
                eprintln!("{}", w.render(&c.source, "warning"));
            }
            Some(c)
        }
        Err(e) => {
            eprintln!("{e}");
            None
        }
    }
}

fn check(path: PathBuf) -> ExitCode {
    match load_or_report(&path) {
        Some(c) => {
            let uplink = match &c.uplink {
                Some(u) => format!(
                    ", uplink to {} through the queue in {}",
                    u.endpoints
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(" then "),
                    c.queue.dir.display()
                ),
                None => ", no uplink".to_owned(),
            };
            let mut extras = String::new();
            let commands: usize = c.devices.iter().map(|d| d.commands.len()).sum();
            if commands > 0 {
                extras += &format!(", {commands} command(s)");
            }
            let entities = serial2mqtt::homeassistant::Discovery {
                prefix: &c.homeassistant.discovery_prefix,
                gateway: &c.gateway.id,
            }
            .configs(&c.devices)
            .len();
            if entities > 0 {
                extras += &format!(", {entities} Home Assistant entities");
            }
            if let Some(m) = c.metrics {
                extras += &format!(", metrics on http://{m}/metrics");
            }
            println!(
                "{}: OK (gateway `{}`, {} device(s), broker on {}{uplink}{extras})",
                path.display(),
                c.gateway.id,
                c.devices.len(),
                c.broker.listen
            );
            ExitCode::SUCCESS
        }
        None => ExitCode::FAILURE,
    }
}

fn test_rule(path: PathBuf, device: &str, is_hex: bool, frame: &str) -> ExitCode {
    let Some(config) = load_or_report(&path) else {
        return ExitCode::FAILURE;
    };
    let Some(dev) = config.devices.iter().find(|d| d.name == device) else {
        let names: Vec<&str> = config.devices.iter().map(|d| d.name.as_str()).collect();
        eprintln!(
            "no device named `{device}` in {}; devices: {}",
            path.display(),
            names.join(", ")
        );
        return ExitCode::FAILURE;
    };
    let bytes = if is_hex {
        match hex::decode(frame.replace([' ', ':'], "")) {
            Ok(b) => Bytes::from(b),
            Err(e) => {
                eprintln!("--hex: `{frame}` is not hex: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        Bytes::copy_from_slice(frame.as_bytes())
    };
    let stats = DeviceStats::default();
    let mut handler = FrameHandler::new(dev, &config.gateway.id, &stats);
    let messages: Vec<_> = handler.handle(&bytes).collect();
    let matched = stats.unmatched.load(std::sync::atomic::Ordering::Relaxed) == 0
        && stats
            .invalid_utf8
            .load(std::sync::atomic::Ordering::Relaxed)
            == 0;
    if stats.dropped.load(std::sync::atomic::Ordering::Relaxed) > 0 {
        println!("(dropped by a `drop: true` rule: nothing published)");
    }
    for m in &messages {
        let flags = match (m.qos, m.retain) {
            (q, true) => format!("qos={q} retain"),
            (q, false) => format!("qos={q}"),
        };
        println!(
            "{} {} [{flags}]",
            m.topic,
            String::from_utf8_lossy(&m.payload)
        );
    }
    if matched {
        ExitCode::SUCCESS
    } else {
        eprintln!(
            "no rule of device `{device}` matched this frame ({})",
            stats.summary()
        );
        ExitCode::FAILURE
    }
}

fn run(path: PathBuf) -> ExitCode {
    let Some(config) = load_or_report(&path) else {
        return ExitCode::FAILURE;
    };
    systemd::init_logging(&config.log_level);
    let systemd = systemd::Systemd::from_env();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("serial2mqtt")
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            error!("cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    let result = runtime.block_on(async {
        let signals = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            signals.cancel();
        });
        let (reload_tx, reloads) = tokio::sync::mpsc::channel(1);
        tokio::spawn(watch_reloads(path.clone(), reload_tx, systemd));
        info!(config = %path.display(), version = env!("CARGO_PKG_VERSION"), "serial2mqtt starting");
        gateway::run(config, shutdown, reloads, systemd).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}

/// On every SIGHUP, reads and validates the config file again and hands it to the gateway; a
/// config with errors is reported (file, line, what to write instead) and the running one kept.
async fn watch_reloads(
    path: PathBuf,
    gateway: tokio::sync::mpsc::Sender<Config>,
    systemd: systemd::Systemd,
) {
    use tokio::signal::unix::{signal, SignalKind};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            warn!("cannot watch SIGHUP, reloading is unavailable: {e}");
            return;
        }
    };
    while hup.recv().await.is_some() {
        info!(config = %path.display(), "SIGHUP received: reloading the config");
        systemd.reloading();
        let p = path.clone();
        let loaded = tokio::task::spawn_blocking(move || config::load(&p)).await;
        match loaded {
            Ok(Ok(new)) => {
                for w in &new.warnings {
                    warn!("{}", w.render(&new.source, "warning"));
                }
                if gateway.send(new).await.is_err() {
                    return;
                }
            }
            Ok(Err(e)) => {
                error!("reload rejected, the running config stays in effect:\n{e}");
                systemd.ready(
                    "reload rejected: config error (see the journal); running the previous config",
                );
            }
            Err(e) => error!("reload failed: {e}"),
        }
    }
}

/// Resolves on SIGINT or SIGTERM: the one way the daemon is asked to stop.
async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = match signal(SignalKind::terminate()) {
        Ok(s) => s,
        Err(e) => {
            warn!("cannot watch SIGTERM: {e}");
            let _ = tokio::signal::ctrl_c().await;
            return;
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => info!("SIGINT received"),
        _ = term.recv() => info!("SIGTERM received"),
    }
}

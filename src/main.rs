//! The `serial2mqtt` command line: run the daemon, check a config, try a rule on a frame.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use bytes::Bytes;
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use serial2mqtt::config::{self, Config, DEFAULT_PATH};
use serial2mqtt::gateway;
use serial2mqtt::serial::device::FrameHandler;
use serial2mqtt::stats::DeviceStats;

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
        Command::TestRule {
            config,
            device,
            hex,
            frame,
        } => test_rule(config, &device, hex, &frame),
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
            println!(
                "{}: OK (gateway `{}`, {} device(s), broker on {}{uplink})",
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

fn init_logging(level: &str) {
    let filter = match std::env::var("RUST_LOG") {
        Ok(f) if !f.is_empty() => f,
        // rumqttd logs every client connect and disconnect, some at ERROR: silent unless asked
        // for (`log.level: "info,rumqttd=warn"`). A listen failure is reported by us.
        _ if level.contains("rumqttd") => level.to_owned(),
        _ => format!("{level},rumqttd=off"),
    };
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}

fn run(path: PathBuf) -> ExitCode {
    let Some(config) = load_or_report(&path) else {
        return ExitCode::FAILURE;
    };
    init_logging(&config.log_level);
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
        let signals = Arc::new(shutdown.clone());
        tokio::spawn(async move {
            wait_for_signal().await;
            signals.cancel();
        });
        info!(config = %path.display(), version = env!("CARGO_PKG_VERSION"), "serial2mqtt starting");
        gateway::run(config, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
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

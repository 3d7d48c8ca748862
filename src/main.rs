//! The `serial2mqtt` command line: parses the arguments and runs the subcommand (each one is a
//! file of [`serial2mqtt::cli`]).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use serial2mqtt::cli;
use serial2mqtt::config::DEFAULT_PATH;

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
        Command::Run { config } => cli::run::main(config),
        Command::Check { file, config } => {
            cli::check::main(file.or(config).unwrap_or_else(|| DEFAULT_PATH.into()))
        }
        Command::Ports => cli::ports::main(),
        Command::TestRule {
            config,
            device,
            hex,
            frame,
        } => cli::test_rule::main(config, &device, hex, &frame),
        Command::Status {
            config,
            ca_file,
            host,
        } => cli::status::main(config, &cli::status::TlsTarget { ca_file, host }),
    }
}

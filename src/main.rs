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
        /// Print the file as the gateway reads it: every device that names a model in full.
        #[arg(long)]
        expand: bool,
    },
    /// The device models a config can use (`model:` on a device): built in, and your own in
    /// models/ beside the config file.
    Models {
        /// Config file whose models/ directory is read too.
        #[arg(short, long, default_value = DEFAULT_PATH, global = true)]
        config: PathBuf,
        #[command(subcommand)]
        action: ModelsAction,
    },
    /// Find what is on a serial port and print a ready `devices:` snippet (read requests only;
    /// the time it may take is said first). Exit 0 when something was found, 1 when nothing.
    Scan {
        /// The serial device.
        port: PathBuf,
        /// Modbus unit addresses to ask: one (`5`) or a range (`1-247`).
        #[arg(long, default_value = "1-10", value_parser = serial2mqtt::cli::scan::units)]
        units: std::ops::RangeInclusive<u8>,
        /// Line speeds to try, comma separated (default: the usual ones and every model's).
        #[arg(long, value_delimiter = ',')]
        bauds: Option<Vec<u32>>,
        /// Longest wait for a device that talks by itself, at each line speed.
        #[arg(long, default_value = "11s", value_parser = humantime::parse_duration)]
        listen: std::time::Duration,
        /// Config file (its models/ directory is read; a port of its running gateway is refused).
        #[arg(short, long, default_value = DEFAULT_PATH)]
        config: PathBuf,
        /// Scan a port the running gateway uses.
        #[arg(long)]
        share: bool,
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
        /// Log in as this user, the password in SERIAL2MQTT_PASSWORD (default: the users
        /// file's first plain-text login, if any).
        #[arg(long)]
        user: Option<String>,
    },
    /// Set a local broker login in the users file (a salted hash; prompts for the password,
    /// or reads it from stdin).
    Passwd {
        /// The users file (broker.users_file).
        file: PathBuf,
        /// The user name.
        user: String,
        /// Remove the user instead.
        #[arg(short = 'D', long)]
        delete: bool,
        /// PBKDF2 rounds (more is slower to log in and to brute-force).
        #[arg(long, default_value_t = serial2mqtt::broker::passwords::ITERATIONS)]
        iterations: u32,
    },
    /// Talk to a Modbus RTU unit directly (explore a device before writing its map).
    Modbus {
        #[command(subcommand)]
        action: ModbusAction,
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

#[derive(Subcommand)]
enum ModelsAction {
    /// List the models.
    List {
        /// As the Markdown table of docs/supported-models.md.
        #[arg(long)]
        markdown: bool,
    },
    /// Print a model's file: its parameters, map, rules and test vectors.
    Show {
        /// The model's name.
        name: String,
    },
    /// Run the test vectors of models (by name) or of model files (by path); all when none is
    /// given. Exit 1 when any fails.
    Test {
        /// Model names or model files.
        models: Vec<String>,
    },
}

#[derive(Subcommand)]
enum ModbusAction {
    /// Read registers (or coils) once and print them every way they read: u16/i16 per
    /// register, 32- and 64-bit values in all four word orders.
    Read {
        /// The serial device (the RS-485 adapter), or a URL as in the config
        /// (modbus-tcp://HOST:502, tcp://HOST:PORT, rfc2217://HOST:PORT).
        #[arg(long)]
        port: PathBuf,
        /// Line speed.
        #[arg(long, default_value_t = 9600)]
        baud: u32,
        /// none, odd or even.
        #[arg(long, default_value = "none")]
        parity: String,
        /// 1 or 2.
        #[arg(long, default_value_t = 1)]
        stop_bits: u8,
        /// The unit (slave) id.
        #[arg(long)]
        unit: u8,
        /// Input register (function 4), 0-based address.
        #[arg(long, group = "place")]
        input: Option<u16>,
        /// Holding register (function 3), 0-based address.
        #[arg(long, group = "place")]
        holding: Option<u16>,
        /// Coil (function 1), 0-based address.
        #[arg(long, group = "place")]
        coil: Option<u16>,
        /// Discrete input (function 2), 0-based address.
        #[arg(long, group = "place")]
        discrete: Option<u16>,
        /// A 1-based Modicon register as datasheets print it (30001 = input 0).
        #[arg(long, group = "place")]
        register: Option<u32>,
        /// Registers (or bits) to read.
        #[arg(long, default_value_t = 2)]
        count: u16,
        /// Longest wait for the answer (e.g. 500ms).
        #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => cli::run::main(config),
        Command::Check {
            file,
            config,
            expand,
        } => {
            let path = file.or(config).unwrap_or_else(|| DEFAULT_PATH.into());
            if expand {
                cli::check::expand(&path)
            } else {
                cli::check::main(path)
            }
        }
        Command::Models { config, action } => match action {
            ModelsAction::List { markdown } => cli::models::list(&config, markdown),
            ModelsAction::Show { name } => cli::models::show(&config, &name),
            ModelsAction::Test { models } => cli::models::test(&config, &models),
        },
        Command::Ports => cli::ports::main(),
        Command::Scan {
            port,
            units,
            bauds,
            listen,
            config,
            share,
        } => cli::scan::main(cli::scan::Args {
            options: serial2mqtt::scan::Options {
                port,
                units,
                bauds,
                listen,
            },
            config,
            share,
        }),
        Command::Passwd {
            file,
            user,
            delete,
            iterations,
        } => cli::passwd::main(&cli::passwd::Request {
            file: &file,
            user: &user,
            delete,
            iterations,
        }),
        Command::Modbus {
            action:
                ModbusAction::Read {
                    port,
                    baud,
                    parity,
                    stop_bits,
                    unit,
                    input,
                    holding,
                    coil,
                    discrete,
                    register,
                    count,
                    timeout,
                },
        } => {
            use serial2mqtt::modbus::Table;
            let parity = match parity.as_str() {
                "none" => tokio_serial::Parity::None,
                "odd" => tokio_serial::Parity::Odd,
                "even" => tokio_serial::Parity::Even,
                other => {
                    eprintln!("--parity {other}: write none, odd or even");
                    return ExitCode::FAILURE;
                }
            };
            let stop_bits = if stop_bits == 2 {
                tokio_serial::StopBits::Two
            } else {
                tokio_serial::StopBits::One
            };
            let place = [
                input.map(|a| (Table::Input, a)),
                holding.map(|a| (Table::Holding, a)),
                coil.map(|a| (Table::Coils, a)),
                discrete.map(|a| (Table::Discretes, a)),
            ]
            .into_iter()
            .flatten()
            .next();
            cli::modbus::main(cli::modbus::Probe {
                port,
                baud,
                parity,
                stop_bits,
                unit,
                place,
                register,
                count,
                timeout,
            })
        }
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
            user,
        } => cli::status::main(
            config,
            &cli::status::TlsTarget {
                ca_file,
                host,
                user,
            },
        ),
    }
}

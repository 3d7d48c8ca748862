//! The subcommands of the `serial2mqtt` command line, one file each ([`run`], [`check`],
//! [`test_rule`], [`status`], [`ports`], [`modbus`], [`models`], [`scan`], [`passwd`]); `main.rs` only parses the
//! arguments and dispatches.
//! Each returns the process's exit code and prints its own errors: a person reads them.

pub mod check;
pub mod modbus;
pub mod models;
pub mod passwd;
pub mod ports;
pub mod run;
pub mod scan;
pub mod status;
pub mod test_rule;

use crate::config::{self, Config};

/// A runtime for a command's network or serial work (one thread: a command does one thing at
/// a time); `None`, with the reason printed, when the system cannot give one.
pub fn runtime() -> Option<tokio::runtime::Runtime> {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("serial2mqtt: cannot start a runtime: {e}");
            None
        }
    }
}

/// Loads the config, printing its warnings; its errors are printed and `None` returned.
pub fn load_or_report(path: &std::path::Path) -> Option<Config> {
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

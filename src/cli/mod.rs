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

//! `serial2mqtt ports`: the serial ports of this machine with USB ids and the stable path to
//! put in the config.

use std::process::ExitCode;

/// Lists the ports.
pub fn main() -> ExitCode {
    match crate::serial::ports::list() {
        Ok(ports) => {
            print!("{}", crate::serial::ports::render(&ports));
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("serial2mqtt: {e}");
            ExitCode::FAILURE
        }
    }
}

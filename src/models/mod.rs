//! Device models at work: their test vectors run through the code a device runs ([`vectors`]).
//! The models themselves (the file format, the library of built-ins and the user's files, the
//! expansion into the full form) are config: `crate::config::models`, re-exported here.

pub mod vectors;

pub use crate::config::models::*;

#[cfg(test)]
mod tests;

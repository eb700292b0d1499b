//! Command bodies, one file per command: `cli` parses and dispatches, these do the work.

pub mod review;
pub mod setup;
pub mod token;

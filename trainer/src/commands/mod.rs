//! The CLI's subcommands, one module each: its clap `Args` and its `run`.

pub mod eval;
pub mod fit;
pub mod predict;
pub mod quantize;
pub mod report;
pub mod summary;

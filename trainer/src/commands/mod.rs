//! The CLI's subcommands, one module each: its clap `Args` and its `run`.

pub mod eval;
pub mod fit;

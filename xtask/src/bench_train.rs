//! `cargo xtask bench-train` (being written).

use anyhow::{bail, Result};

/// Options of `cargo xtask bench-train`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `cargo xtask bench-train`.
///
/// # Errors
/// Not implemented yet.
pub fn run(_args: &Args) -> Result<()> {
    bail!("cargo xtask bench-train is not implemented yet")
}

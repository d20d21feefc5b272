//! `cargo xtask bench-mcu` (being written).

use anyhow::{bail, Result};

/// Options of `cargo xtask bench-mcu`.
#[derive(clap::Args)]
pub struct Args {}

/// Runs `cargo xtask bench-mcu`.
///
/// # Errors
/// Not implemented yet.
pub fn run(_args: &Args) -> Result<()> {
    bail!("cargo xtask bench-mcu is not implemented yet")
}

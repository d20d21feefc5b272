//! `trainer predict` (being written).

use anyhow::{bail, Result};
use clap::Args;

/// Options of `trainer predict`.
#[derive(Args)]
pub struct PredictArgs {}

/// Runs `trainer predict`.
///
/// # Errors
/// Not implemented yet.
pub fn run(_args: &PredictArgs) -> Result<()> {
    bail!("trainer predict is not implemented yet")
}

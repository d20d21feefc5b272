//! `trainer quantize` (being written).

use anyhow::{bail, Result};
use clap::Args;

/// Options of `trainer quantize`.
#[derive(Args)]
pub struct QuantizeArgs {}

/// Runs `trainer quantize`.
///
/// # Errors
/// Not implemented yet.
pub fn run(_args: &QuantizeArgs) -> Result<()> {
    bail!("trainer quantize is not implemented yet")
}

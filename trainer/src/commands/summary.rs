//! `trainer summary` (being written).

use anyhow::{bail, Result};
use clap::Args;

/// Options of `trainer summary`.
#[derive(Args)]
pub struct SummaryArgs {}

/// Runs `trainer summary`.
///
/// # Errors
/// Not implemented yet.
pub fn run(_args: &SummaryArgs) -> Result<()> {
    bail!("trainer summary is not implemented yet")
}

//! `trainer report` (being written).

use anyhow::{bail, Result};
use clap::Args;

/// Options of `trainer report`.
#[derive(Args)]
pub struct ReportArgs {}

/// Runs `trainer report`.
///
/// # Errors
/// Not implemented yet.
pub fn run(_args: &ReportArgs) -> Result<()> {
    bail!("trainer report is not implemented yet")
}

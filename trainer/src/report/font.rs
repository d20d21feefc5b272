//! The one font of the report, built into the binary: DejaVu Sans (subset; see
//! `trainer/assets/README.md` for its origin and licence), registered with plotters as
//! `sans-serif` so charts need no system font.

use anyhow::{anyhow, Result};
use plotters::style::{register_font, FontStyle};
use std::sync::OnceLock;

/// DejaVu Sans, Latin-1 subset.
static DEJAVU_SANS: &[u8] = include_bytes!("../../assets/DejaVuSans-subset.ttf");

/// The family every text of the report is drawn in.
pub const FAMILY: &str = "sans-serif";

/// Registers the built-in font with plotters (once per process).
///
/// # Errors
/// If the embedded font does not parse (a broken build).
pub fn register() -> Result<()> {
    static REGISTERED: OnceLock<bool> = OnceLock::new();
    let ok = *REGISTERED.get_or_init(|| {
        register_font(FAMILY, FontStyle::Normal, DEJAVU_SANS).is_ok()
            && register_font(FAMILY, FontStyle::Bold, DEJAVU_SANS).is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err(anyhow!(
            "the font built into trainer (assets/DejaVuSans-subset.ttf) does not parse"
        ))
    }
}

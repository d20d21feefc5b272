//! The labelled inputs, embedded by `build/main.rs` from `FIRMWARE_DIGITS`: by
//! default MNIST test digits, but any input set of the model's input shape.
//!
//! Records of `[label: u8][h×w×c values: u8]` (README.md, "Digits file");
//! `build/main.rs` has checked the length and the labels against the model.

use crate::net::INPUT;

/// Bytes in one record: the label, then the values.
const RECORD_BYTES: usize = 1 + INPUT;

static DIGITS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/digits.bin"));

/// One labelled input.
pub struct Digit {
    /// The true class.
    pub label: u8,
    /// The 8-bit values, row-major, channels last.
    pub pixels: &'static [u8; INPUT],
}

/// Every embedded input, in file order.
pub fn all() -> impl Iterator<Item = Digit> {
    DIGITS.chunks_exact(RECORD_BYTES).filter_map(|record| {
        let (&label, pixels) = record.split_first()?;
        Some(Digit {
            label,
            pixels: pixels.try_into().ok()?,
        })
    })
}

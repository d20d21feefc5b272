//! The test images, embedded by `build/main.rs` from `FIRMWARE_DIGITS`.
//!
//! Records of `[label: u8][28×28 pixels: u8]` (README.md, "Digits file");
//! `build/main.rs` has checked the length and the labels.

/// Image side in pixels.
const SIDE: usize = 28;

/// Bytes in one record: the label, then the pixels.
const RECORD_BYTES: usize = 1 + SIDE * SIDE;

static DIGITS: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/digits.bin"));

/// One labelled image.
pub struct Digit {
    /// The true class, `0..=9`.
    pub label: u8,
    /// Row-major pixels.
    pub pixels: &'static [[u8; SIDE]; SIDE],
}

/// Every embedded digit, in file order.
pub fn all() -> impl Iterator<Item = Digit> {
    DIGITS.chunks_exact(RECORD_BYTES).map(|record| {
        let (rows, _) = record[1..].as_chunks::<SIDE>();
        Digit {
            label: record[0],
            pixels: rows
                .try_into()
                .expect("a record holds exactly SIDE rows after its label"),
        }
    })
}

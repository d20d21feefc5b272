//! Pictures 1 and 2: one test digit convolved with hand-made kernels, as the tutorial shows
//! before any training — ten random filters, then the edge-detection kernel.

use super::canvas::{text, Canvas, Picture};
use super::conv::{convolve_same_symm, Kernel, EDGE_KERNEL, RANDOM_FILTERS};
use super::Grid;
use anyhow::Result;
use plotters::style::text_anchor::HPos;

/// File name of picture 1.
pub const RANDOM_FILTERS_FILE: &str = "1-random-filters.png";
/// File name of picture 2.
pub const EDGE_FILE: &str = "2-edge-detection.png";
/// Size of picture 1, pixels.
pub const RANDOM_FILTERS_SIZE: (u32, u32) = (920, 340);
/// Size of picture 2, pixels.
pub const EDGE_SIZE: (u32, u32) = (520, 300);

/// Enlargement of the digit (28 px → 224 px).
const DIGIT_SCALE: u32 = 8;
/// Enlargement of each convolved digit in the 2×5 grid (28 px → 112 px).
const GRID_SCALE: u32 = 4;

/// Picture 1: `digit` (test image `index`, labelled `label`) and its convolution with each
/// of `filters`, in a 2×5 grid. Rasters: the digit, then the ten convolutions in order.
///
/// # Errors
/// A drawing failure.
pub fn random_filters(
    digit: &Grid,
    index: usize,
    label: u8,
    filters: &[Kernel; RANDOM_FILTERS],
) -> Result<Picture> {
    let (width, height) = RANDOM_FILTERS_SIZE;
    let mut canvas = Canvas::new(width, height);
    let (digit_x, digit_y) = (24, 80);
    let (grid_x, grid_y, pitch_x, pitch_y) = (290u32, 40u32, 126u32, 154u32);
    canvas.plot(|area| {
        let centre = (digit_x + 14 * DIGIT_SCALE) as i32;
        text(
            area,
            &format!("test digit #{index}"),
            (centre, 24),
            18,
            HPos::Center,
        )?;
        text(
            area,
            &format!("label {label}"),
            (centre, 48),
            16,
            HPos::Center,
        )?;
        for k in 0..RANDOM_FILTERS as u32 {
            let (x, y) = (grid_x + (k % 5) * pitch_x, grid_y + (k / 5) * pitch_y);
            let centre = (x + 14 * GRID_SCALE) as i32;
            text(
                area,
                &format!("filter {}", k + 1),
                (centre, y as i32 - 24),
                15,
                HPos::Center,
            )?;
        }
        Ok(())
    })?;
    canvas.blit(digit_x, digit_y, DIGIT_SCALE, digit.clone())?;
    for (k, filter) in (0u32..).zip(filters) {
        let (x, y) = (grid_x + (k % 5) * pitch_x, grid_y + (k / 5) * pitch_y);
        canvas.blit(x, y, GRID_SCALE, convolve_same_symm(digit, filter))?;
    }
    canvas.finish(
        RANDOM_FILTERS_FILE,
        format!(
            "Test digit #{index} (label {label}) convolved with 10 random 3×3 filters, entries uniform \
             in [−1, 0) (true convolution, same size, symmetric boundary)."
        ),
    )
}

/// Picture 2: `digit` beside its convolution with [`EDGE_KERNEL`]. Rasters: the digit, then
/// the convolution.
///
/// # Errors
/// A drawing failure.
pub fn edge_detection(digit: &Grid, index: usize, label: u8) -> Result<Picture> {
    let (width, height) = EDGE_SIZE;
    let mut canvas = Canvas::new(width, height);
    let (left, right, top) = (24u32, 272u32, 64u32);
    canvas.plot(|area| {
        let (l, r) = (
            (left + 14 * DIGIT_SCALE) as i32,
            (right + 14 * DIGIT_SCALE) as i32,
        );
        text(
            area,
            &format!("test digit #{index}"),
            (l, 10),
            18,
            HPos::Center,
        )?;
        text(area, &format!("label {label}"), (l, 34), 16, HPos::Center)?;
        text(area, "edge-detection kernel", (r, 10), 18, HPos::Center)?;
        text(
            area,
            "[[0, 1, 0], [1, −4, 1], [0, 1, 0]]",
            (r, 34),
            16,
            HPos::Center,
        )?;
        Ok(())
    })?;
    canvas.blit(left, top, DIGIT_SCALE, digit.clone())?;
    canvas.blit(
        right,
        top,
        DIGIT_SCALE,
        convolve_same_symm(digit, &EDGE_KERNEL),
    )?;
    canvas.finish(
        EDGE_FILE,
        format!(
            "Test digit #{index} beside its convolution with the edge-detection kernel \
             [[0, 1, 0], [1, −4, 1], [0, 1, 0]]: strokes light up along their borders."
        ),
    )
}

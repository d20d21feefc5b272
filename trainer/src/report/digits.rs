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
pub const RANDOM_FILTERS_SIZE: (u32, u32) = (1040, 400);
/// Size of picture 2, pixels.
pub const EDGE_SIZE: (u32, u32) = (520, 300);

/// Enlargement of the digit (28 px → 224 px).
const DIGIT_SCALE: u32 = 8;
/// Enlargement of each convolved digit in the 2×5 grid (28 px → 112 px).
const GRID_SCALE: u32 = 4;
/// Enlargement of each random filter drawn above its convolution (3 px → 30 px).
const FILTER_SCALE: u32 = 10;
/// The scale the random filters are drawn on: their entries are uniform in [−1, 0).
pub const FILTER_RANGE: (f64, f64) = (-1.0, 0.0);

/// A colour bar: `steps` values from `low` to `high`, as a grid `steps` long and `thickness`
/// wide — vertical (highest at the top) or horizontal (lowest at the left).
pub fn colour_bar((low, high): (f64, f64), steps: usize, thickness: usize, vertical: bool) -> Grid {
    let step = |i: usize| low + (high - low) * i as f64 / (steps - 1).max(1) as f64;
    if vertical {
        Grid {
            rows: steps,
            cols: thickness,
            values: (0..steps)
                .flat_map(|i| std::iter::repeat_n(step(steps - 1 - i), thickness))
                .collect(),
        }
    } else {
        Grid {
            rows: thickness,
            cols: steps,
            values: (0..thickness).flat_map(|_| (0..steps).map(step)).collect(),
        }
    }
}

/// A value on a colour bar's scale: one decimal, a true minus sign.
fn tick(v: f64) -> String {
    format!("{v:.1}").replace('-', "−")
}

/// Picture 1: `digit` (test image `index`, labelled `label`) and its convolution with each
/// of `filters`, in a 2×5 grid, every convolution on one gray scale shown by a colour bar;
/// above each convolution its filter, on the filters' scale [`FILTER_RANGE`] (a second colour
/// bar, under the digit). Rasters: the digit, the ten convolutions, the ten filters in order,
/// the convolutions' colour bar, the filters' colour bar.
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
    let (digit_x, digit_y) = (24, 88);
    let (grid_x, grid_y, pitch_x, pitch_y) = (290u32, 64u32, 126u32, 170u32);
    let cell = |k: u32| (grid_x + (k % 5) * pitch_x, grid_y + (k / 5) * pitch_y);
    let convolutions: Vec<Grid> = filters
        .iter()
        .map(|filter| convolve_same_symm(digit, filter))
        .collect();
    // One scale for all ten: the lowest and highest value of any of them.
    let range = convolutions
        .iter()
        .map(Grid::range)
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), (l, h)| {
            (lo.min(l), hi.max(h))
        });
    let bar_steps = (pitch_y + 28 * GRID_SCALE) / 2;
    let (bar_x, bar_y) = (grid_x + 5 * pitch_x + 4, grid_y);
    let bar_bottom = (bar_y + 2 * bar_steps) as i32;
    let (filter_bar_x, filter_bar_y) = (digit_x, digit_y + 28 * DIGIT_SCALE + 30);
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
            let (x, y) = cell(k);
            text(
                area,
                &format!("filter {}", k + 1),
                ((x + FILTER_SCALE * 3 + 10) as i32, y as i32 - 30),
                15,
                HPos::Left,
            )?;
        }
        let right = (bar_x + 16 + 6) as i32;
        text(
            area,
            &tick(range.1),
            (right, bar_y as i32 - 6),
            13,
            HPos::Left,
        )?;
        let middle = (range.0 + range.1) / 2.0;
        let mid_y = (bar_y as i32 + bar_bottom) / 2 - 6;
        text(area, &tick(middle), (right, mid_y), 13, HPos::Left)?;
        text(
            area,
            &tick(range.0),
            (right, bar_bottom - 8),
            13,
            HPos::Left,
        )?;
        let under = (filter_bar_y + 8 + 4) as i32;
        text(area, "−1", (filter_bar_x as i32, under), 13, HPos::Left)?;
        text(area, "filter entries", (centre, under), 13, HPos::Center)?;
        text(
            area,
            "0",
            ((filter_bar_x + 28 * DIGIT_SCALE) as i32, under),
            13,
            HPos::Right,
        )?;
        Ok(())
    })?;
    canvas.blit(digit_x, digit_y, DIGIT_SCALE, digit.clone())?;
    for (k, convolution) in (0u32..).zip(convolutions) {
        let (x, y) = cell(k);
        canvas.blit_in(x, y, GRID_SCALE, convolution, range)?;
    }
    for (k, filter) in (0u32..).zip(filters) {
        let (x, y) = cell(k);
        let grid = Grid {
            rows: 3,
            cols: 3,
            values: filter.iter().flatten().map(|&v| f64::from(v)).collect(),
        };
        canvas.blit_in(
            x,
            y - 3 * FILTER_SCALE - 8,
            FILTER_SCALE,
            grid,
            FILTER_RANGE,
        )?;
    }
    canvas.blit_in(
        bar_x,
        bar_y,
        2,
        colour_bar(range, bar_steps as usize, 8, true),
        range,
    )?;
    canvas.blit_in(
        filter_bar_x,
        filter_bar_y,
        2,
        colour_bar(FILTER_RANGE, (14 * DIGIT_SCALE) as usize, 4, false),
        FILTER_RANGE,
    )?;
    canvas.finish(
        RANDOM_FILTERS_FILE,
        format!(
            "Test digit #{index} (label {label}) convolved with 10 random 3×3 filters (each drawn \
             above its result), entries uniform in [−1, 0) (true convolution, same size, \
             symmetric boundary); all ten results on one gray scale, {} (black) to {} (white).",
            tick(range.0),
            tick(range.1)
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

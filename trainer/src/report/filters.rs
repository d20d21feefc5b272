//! Pictures 6 and 7: what the convolution layer learnt — its 32 filters, and the 32 feature
//! maps they make of one digit in the int8 network.

use super::canvas::{text, Canvas, Picture};
use super::Grid;
use crate::eval::classify;
use crate::network::{FloatModel, CONV_SIDE, FILTERS, KERNEL};
use anyhow::{ensure, Result};
use infer_core::{TutorialNet, TutorialScratch};
use plotters::style::text_anchor::HPos;

/// File name of picture 6.
pub const FILTERS_FILE: &str = "6-learnt-filters.png";
/// File name of picture 7.
pub const FEATURE_MAPS_FILE: &str = "7-feature-maps.png";
/// Size of picture 6, pixels.
pub const FILTERS_SIZE: (u32, u32) = (520, 560);
/// Size of picture 7, pixels.
pub const FEATURE_MAPS_SIZE: (u32, u32) = (740, 460);

/// The trained float kernels: filter `f` is `conv_weights[f, ky, kx, 0]`.
pub fn float_filters(model: &FloatModel) -> Vec<Grid> {
    (0..FILTERS)
        .map(|f| Grid {
            rows: KERNEL,
            cols: KERNEL,
            values: (0..KERNEL * KERNEL)
                .map(|i| f64::from(model.conv_weights[[f, i / KERNEL, i % KERNEL, 0]]))
                .collect(),
        })
        .collect()
}

/// The int8 kernels of `net`, dequantized: `weight · scale[f]` (symmetric, zero point 0).
///
/// # Errors
/// If the weights or scales are not the tutorial's 32 filters of 3×3×1.
pub fn int8_filters(net: &TutorialNet<'_>) -> Result<Vec<Grid>> {
    let params = &net.model().conv.params;
    let taps = KERNEL * KERNEL;
    ensure!(
        params.weights.len() == FILTERS * taps && params.weight_scales.len() == FILTERS * 4,
        "the model's conv layer is not 32 filters of 3×3×1"
    );
    Ok(params
        .weights
        .chunks_exact(taps)
        .zip(params.weight_scales.chunks_exact(4))
        .map(|(w, s)| {
            let scale = f64::from(f32::from_le_bytes([s[0], s[1], s[2], s[3]]));
            Grid {
                rows: KERNEL,
                cols: KERNEL,
                values: w.iter().map(|&q| f64::from(q as i8) * scale).collect(),
            }
        })
        .collect())
}

/// The 32 feature maps (26×26, conv + ReLU) of `pixels` in infer-core's int8 network,
/// dequantized with the conv layer's output scale and zero point.
pub fn feature_maps(net: &TutorialNet<'_>, pixels: &[u8]) -> Vec<Grid> {
    let mut scratch = Box::new(TutorialScratch::new());
    classify(net, pixels, &mut scratch);
    let out = net.model().conv.params.output;
    (0..FILTERS)
        .map(|f| Grid {
            rows: CONV_SIDE,
            cols: CONV_SIDE,
            values: scratch
                .conv
                .iter()
                .flatten()
                .map(|px| f64::from(out.scale) * f64::from(i32::from(px[f]) - out.zero_point))
                .collect(),
        })
        .collect()
}

/// Picture 6: the 32 filters in a 6×6 grid, `source` saying where they come from. Rasters:
/// the filters in order.
///
/// # Errors
/// A drawing failure.
pub fn learnt_filters(filters: &[Grid], source: &str) -> Result<Picture> {
    let mut canvas = Canvas::new(FILTERS_SIZE.0, FILTERS_SIZE.1);
    let (x0, y0, pitch_x, pitch_y, scale) = (25u32, 62u32, 82u32, 86u32, 20u32);
    canvas.plot(|area| {
        let centre = (FILTERS_SIZE.0 / 2) as i32;
        let title = format!("the {} learnt 3×3 filters ({source})", filters.len());
        text(area, &title, (centre, 10), 18, HPos::Center)?;
        for k in 0..filters.len() as u32 {
            let (x, y) = (x0 + (k % 6) * pitch_x, y0 + (k / 6) * pitch_y);
            text(
                area,
                &format!("{}", k + 1),
                ((x + 30) as i32, y as i32 - 21),
                13,
                HPos::Center,
            )?;
        }
        Ok(())
    })?;
    for (k, filter) in (0u32..).zip(filters) {
        let (x, y) = (x0 + (k % 6) * pitch_x, y0 + (k / 6) * pitch_y);
        canvas.blit(x, y, scale, filter.clone())?;
    }
    canvas.finish(
        FILTERS_FILE,
        format!(
            "The {} learnt 3×3 filters of the convolution layer ({source}), each from its lowest \
             weight (black) to its highest (white).",
            filters.len()
        ),
    )
}

/// Picture 7: the feature maps of test digit `index` (labelled `label`), 8 to a row.
/// Rasters: the maps in filter order.
///
/// # Errors
/// A drawing failure.
pub fn feature_maps_picture(maps: &[Grid], index: usize, label: u8) -> Result<Picture> {
    let mut canvas = Canvas::new(FEATURE_MAPS_SIZE.0, FEATURE_MAPS_SIZE.1);
    let (x0, y0, pitch_x, pitch_y, scale) = (16u32, 62u32, 90u32, 100u32, 3u32);
    canvas.plot(|area| {
        let centre = (FEATURE_MAPS_SIZE.0 / 2) as i32;
        let title =
            format!("feature maps of test digit #{index} (label {label}): conv + ReLU, int8");
        text(area, &title, (centre, 10), 18, HPos::Center)?;
        for k in 0..maps.len() as u32 {
            let (x, y) = (x0 + (k % 8) * pitch_x, y0 + (k / 8) * pitch_y);
            text(
                area,
                &format!("{}", k + 1),
                ((x + 39) as i32, y as i32 - 21),
                13,
                HPos::Center,
            )?;
        }
        Ok(())
    })?;
    for (k, map) in (0u32..).zip(maps) {
        let (x, y) = (x0 + (k % 8) * pitch_x, y0 + (k / 8) * pitch_y);
        canvas.blit(x, y, scale, map.clone())?;
    }
    canvas.finish(
        FEATURE_MAPS_FILE,
        format!(
            "The {} feature maps (26×26, after ReLU) of test digit #{index}, computed by \
             infer-core's int8 kernels, each from its smallest value (black) to its largest (white).",
            maps.len()
        ),
    )
}

//! Pictures 6 and 7: what the convolution layer learnt — its 32 filters, and the 32 feature
//! maps they make of one digit in the int8 network.

use super::canvas::{text, Canvas, Picture};
use super::Grid;
use crate::arch::layers::Layer;
use crate::arch::Model;
use anyhow::{bail, ensure, Context, Result};
use infer_core::kernels::conv::conv2d_i8;
use infer_core::kernels::ChannelRequant;
use infer_core::stack::format::{input_offset, ConvOp};
use infer_core::stack::{Op, StackFile};
use plotters::style::text_anchor::HPos;

/// File name of picture 6.
pub const FILTERS_FILE: &str = "6-learnt-filters.png";
/// File name of picture 7.
pub const FEATURE_MAPS_FILE: &str = "7-feature-maps.png";
/// How far above its panel a panel's number starts, pixels: close to its own panel, well
/// clear of the row above.
const NUMBER_ABOVE: i32 = 14;
/// Size of picture 6, pixels.
pub const FILTERS_SIZE: (u32, u32) = (520, 620);
/// Size of picture 7, pixels.
pub const FEATURE_MAPS_SIZE: (u32, u32) = (740, 490);

/// The first operation of `file`, a convolution of a one-channel image: the layer pictures
/// 6 and 7 show.
///
/// # Errors
/// If the network does not start with such a convolution.
pub fn first_conv<'a>(file: &StackFile<'a>) -> Result<ConvOp<'a>> {
    match file.ops.get(0) {
        Some(Op::Conv2d(c)) if c.in_c == 1 => Ok(c),
        _ => bail!(
            "the report draws networks whose first layer is a convolution of a one-channel image"
        ),
    }
}

/// The trained float kernels of `model`'s first convolution, `side × side` each: filter
/// `f` is `kernel[ky, kx, 0, f]` (HWIO).
///
/// # Errors
/// If the model's first convolution is not `filters` kernels of `side × side × 1`.
pub fn float_filters(model: &Model, filters: usize, side: usize) -> Result<Vec<Grid>> {
    let conv = model
        .layers
        .iter()
        .find_map(|l| match l {
            Layer::Conv(c) => Some(c),
            _ => None,
        })
        .context("the float model has no convolution")?;
    let taps = side * side;
    ensure!(
        conv.bias.value.len() == filters && conv.kernel.value.len() == filters * taps,
        "the float model's first convolution is not {filters} filters of {side}×{side}×1 as the int8 model's"
    );
    Ok((0..filters)
        .map(|f| Grid {
            rows: side,
            cols: side,
            values: (0..taps)
                .map(|t| f64::from(conv.kernel.value[t * filters + f]))
                .collect(),
        })
        .collect())
}

/// The int8 kernels of `conv`, dequantized: `weight · scale[f]` (symmetric, zero point 0).
///
/// # Errors
/// If the weights or scales are not `conv`'s filters.
pub fn int8_filters(conv: &ConvOp<'_>) -> Result<Vec<Grid>> {
    let params = &conv.params;
    let side = usize::from(conv.kernel);
    let filters = usize::from(conv.filters);
    let taps = side * side * usize::from(conv.in_c);
    ensure!(
        params.weights.len() == filters * taps && params.weight_scales.len() == filters * 4,
        "the model's first convolution does not hold {filters} filters of {side}×{side}"
    );
    Ok(params
        .weights
        .chunks_exact(taps)
        .zip(params.weight_scales.chunks_exact(4))
        .map(|(w, s)| {
            let scale = f64::from(f32::from_le_bytes([s[0], s[1], s[2], s[3]]));
            Grid {
                rows: side,
                cols: side,
                values: w.iter().map(|&q| f64::from(q as i8) * scale).collect(),
            }
        })
        .collect())
}

/// The feature maps of `pixels` (one input image, raw) after `file`'s first convolution (with
/// its ReLU), computed by infer-core's int8 convolution and dequantized with the layer's
/// output scale and zero point.
///
/// # Errors
/// If the network does not start with a convolution or `pixels` is not one input image.
pub fn feature_maps(file: &StackFile<'_>, pixels: &[u8]) -> Result<Vec<Grid>> {
    let conv = first_conv(file)?;
    let g = conv.geometry();
    ensure!(
        pixels.len() == g.in_h * g.in_w * g.in_c,
        "{} pixels given, the model takes {}×{}×{}",
        pixels.len(),
        g.in_h,
        g.in_w,
        g.in_c
    );
    let input: Vec<i8> = pixels
        .iter()
        .map(|&p| file.input.quant.quantize_pixel(p))
        .collect();
    let (out_h, out_w, filters) = Op::Conv2d(conv).out_shape();
    let mut maps = vec![0i8; out_h * out_w * filters];
    conv2d_i8(
        &g,
        &input,
        input_offset(file, 0),
        conv.params.weights,
        &ChannelRequant::from_params(&conv.params, conv.relu),
        &mut maps,
    );
    let out = conv.params.output;
    Ok((0..filters)
        .map(|f| Grid {
            rows: out_h,
            cols: out_w,
            values: maps
                .iter()
                .skip(f)
                .step_by(filters)
                .map(|&q| f64::from(out.scale) * f64::from(i32::from(q) - out.zero_point))
                .collect(),
        })
        .collect())
}

/// Picture 6: the 32 filters in a 6×6 grid, `source` saying where they come from. Rasters:
/// the filters in order.
///
/// # Errors
/// A drawing failure.
pub fn learnt_filters(filters: &[Grid], source: &str) -> Result<Picture> {
    let mut canvas = Canvas::new(FILTERS_SIZE.0, FILTERS_SIZE.1);
    let (x0, y0, pitch_x, pitch_y, scale) = (25u32, 62u32, 82u32, 96u32, 20u32);
    canvas.plot(|area| {
        let centre = (FILTERS_SIZE.0 / 2) as i32;
        let title = format!("the {} learnt 3×3 filters ({source})", filters.len());
        text(area, &title, (centre, 10), 18, HPos::Center)?;
        for k in 0..filters.len() as u32 {
            let (x, y) = (x0 + (k % 6) * pitch_x, y0 + (k / 6) * pitch_y);
            text(
                area,
                &format!("{}", k + 1),
                ((x + 30) as i32, y as i32 - NUMBER_ABOVE),
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
    let (x0, y0, pitch_x, pitch_y, scale) = (16u32, 62u32, 90u32, 112u32, 3u32);
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
                ((x + 39) as i32, y as i32 - NUMBER_ABOVE),
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

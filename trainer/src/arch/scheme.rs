//! The TFLite int8 scheme every model.bin is quantized in:
//!
//! * weights: symmetric int8 per output channel (`scale = max|w| / 127`, zero point 0);
//! * activations: asymmetric int8 ([`activation_quant`]), ranges measured on calibration
//!   (training) images;
//! * biases: int32 in units of `input_scale · weight_scale`;
//! * requantization: Q31 multiplier + power-of-two shift ([`quantize_multiplier`]), applied
//!   by infer-core with TFLite's rounding;
//! * an add (a residual block's): TFLite's int8 ADD parameters ([`add_op`]).
//!
//! Also the float-versus-int8 [`Scores`] that `fit` and `quantize` report.

use crate::eval::Int8Evaluation;
use anyhow::{ensure, Context, Result};
use infer_core::format::{ChannelParams, QuantParams};
use infer_core::stack::format::AddOp;

/// Input quantization fixed by the format: pixel `p` (real `p / 255`) becomes `p − 128`.
pub const INPUT_QUANT: QuantParams = QuantParams {
    scale: 1.0 / 255.0,
    zero_point: -128,
};

/// Splits a positive real multiplier into a Q31 multiplier and a shift, as TFLite's
/// `QuantizeMultiplier`: `m ≈ multiplier · 2^(shift − 31)`, multiplier in `[2^30, 2^31)`.
///
/// Returns `(0, 0)` for `m == 0` and for multipliers too small to represent.
pub fn quantize_multiplier(m: f64) -> Result<(i32, i32)> {
    ensure!(
        m.is_finite() && m >= 0.0,
        "requantization multiplier {m} is not a finite non-negative number"
    );
    if m == 0.0 {
        return Ok((0, 0));
    }
    // frexp: m = q · 2^shift with q in [0.5, 1).
    let mut shift = m.log2().floor() as i32 + 1;
    let mut q = m / 2f64.powi(shift);
    while q >= 1.0 {
        q /= 2.0;
        shift += 1;
    }
    while q < 0.5 {
        q *= 2.0;
        shift -= 1;
    }
    let mut q_fixed = (q * (1i64 << 31) as f64).round() as i64;
    if q_fixed == 1i64 << 31 {
        q_fixed /= 2;
        shift += 1;
    }
    if shift < -31 {
        return Ok((0, 0));
    }
    ensure!(
        shift <= 30,
        "requantization multiplier {m} is too large (shift {shift} > 30)"
    );
    Ok((q_fixed as i32, shift))
}

/// Asymmetric int8 quantization of the real range `[min, max]` (widened to include 0).
pub fn activation_quant(min: f32, max: f32) -> QuantParams {
    let min = min.min(0.0);
    let max = max.max(0.0);
    let scale = if max > min {
        (max - min) / 255.0
    } else {
        1.0 / 255.0
    };
    let zero_point = (-128.0 - min / scale).round().clamp(-128.0, 127.0) as i32;
    QuantParams { scale, zero_point }
}

/// The left shift of TensorFlow Lite's int8 ADD.
pub const ADD_LEFT_SHIFT: i32 = 20;

/// TensorFlow Lite's int8 ADD of an `h × w × c` map (the previous output, of scale
/// `scales.0`) and tensor `other` (of scale `scales.1`) into `output`, clamped to
/// `min..=max`, as model.bin's add operation holds it: its multipliers and shifts as
/// TensorFlow Lite Micro's `AddPrepare` computes them (in `f64`): each input scaled by
/// `a / (2 · max(a, b))`, `b / (2 · max(a, b))`, the sum by `2 · max(a, b) / (2^20 · out)`,
/// each split by `QuantizeMultiplierSmallerThanOneExp` ([`quantize_multiplier`], whose shifts
/// are then ≤ 0).
///
/// # Errors
/// A dimension or `other` over the format's 16 bits, or a scale that gives a multiplier
/// of 1 or more.
pub fn add_op(
    (h, w, c): (usize, usize, usize),
    other: usize,
    (a, b): (f32, f32),
    output: QuantParams,
    (min, max): (i8, i8),
) -> Result<AddOp> {
    let out = output.scale;
    let twice_max = 2.0 * f64::from(a.max(b));
    let reals = [
        f64::from(a) / twice_max,
        f64::from(b) / twice_max,
        twice_max / (f64::from(1u32 << ADD_LEFT_SHIFT) * f64::from(out)),
    ];
    let mut params = [(0, 0); 3];
    for (p, real) in params.iter_mut().zip(reals) {
        let (m, s) = quantize_multiplier(real)?;
        ensure!(
            s <= 0,
            "an ADD multiplier of {real} (input scales {a} and {b}, output scale {out}) is not \
             below 1"
        );
        *p = (m, i8::try_from(s).context("a shift beyond i8")?);
    }
    let short = |n: usize| u16::try_from(n).context("a dimension over 65,535");
    Ok(AddOp {
        h: short(h)?,
        w: short(w)?,
        channels: short(c)?,
        other: short(other)?,
        left_shift: ADD_LEFT_SHIFT as u8,
        multiplier: params[0].0,
        shift: params[0].1,
        other_multiplier: params[1].0,
        other_shift: params[1].1,
        output_multiplier: params[2].0,
        output_shift: params[2].1,
        output,
        min,
        max,
    })
}

/// One quantized layer's per-channel arrays, owned (serialized borrowed).
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedChannels {
    /// int8 weights as bytes, `[channel][...]`.
    pub weights: Vec<u8>,
    /// Per-channel weight scales.
    pub weight_scales: Vec<f32>,
    /// Per-channel int32 biases.
    pub bias: Vec<i32>,
    /// Per-channel Q31 multipliers.
    pub multiplier: Vec<i32>,
    /// Per-channel shifts.
    pub shift: Vec<i8>,
    /// Output quantization.
    pub output: QuantParams,
    weight_scale_bytes: Vec<u8>,
    bias_bytes: Vec<u8>,
    multiplier_bytes: Vec<u8>,
    shift_bytes: Vec<u8>,
}

impl QuantizedChannels {
    /// Quantizes float weights given as one row per output channel (`bias.len()` rows, each
    /// `weights.len() / bias.len()` long: OHWI for a conv, `[units][inputs]` for a dense
    /// layer) whose input has scale `input_scale`, for an output quantized as `output`.
    ///
    /// # Errors
    /// No channel, rows of unequal length, a bias beyond int32 or a requantization multiplier
    /// beyond the Q31 range.
    pub fn new(
        weights: &[f32],
        bias: &[f32],
        input_scale: f32,
        output: QuantParams,
    ) -> Result<Self> {
        let channels = bias.len();
        ensure!(
            channels > 0 && !weights.is_empty() && weights.len() % channels == 0,
            "{} weights do not split into {channels} output channels",
            weights.len()
        );
        let per = weights.len() / channels;
        let mut q = Self {
            weights: Vec::with_capacity(weights.len()),
            weight_scales: Vec::with_capacity(channels),
            bias: Vec::with_capacity(channels),
            multiplier: Vec::with_capacity(channels),
            shift: Vec::with_capacity(channels),
            output,
            weight_scale_bytes: Vec::new(),
            bias_bytes: Vec::new(),
            multiplier_bytes: Vec::new(),
            shift_bytes: Vec::new(),
        };
        for (row, &b) in weights.chunks_exact(per).zip(bias) {
            let max = row.iter().fold(0.0f32, |m, w| m.max(w.abs()));
            let scale = if max > 0.0 { max / 127.0 } else { 1.0 };
            q.weights.extend(
                row.iter()
                    .map(|&w| ((w / scale).round().clamp(-127.0, 127.0) as i8) as u8),
            );
            let bias_scale = f64::from(input_scale) * f64::from(scale);
            let qb = (f64::from(b) / bias_scale).round();
            ensure!(
                qb.abs() < f64::from(i32::MAX),
                "bias {b} does not fit int32 at scale {bias_scale}"
            );
            let (m, s) = quantize_multiplier(bias_scale / f64::from(output.scale))?;
            q.weight_scales.push(scale);
            q.bias.push(qb as i32);
            q.multiplier.push(m);
            q.shift.push(s as i8);
        }
        Ok(q.with_bytes())
    }

    /// Channels already quantized (an imported TensorFlow Lite model's), kept as they are:
    /// `weights` as their bytes, one scale, bias, multiplier and shift per output channel.
    pub fn from_int8(
        weights: Vec<u8>,
        weight_scales: Vec<f32>,
        bias: Vec<i32>,
        multiplier: Vec<i32>,
        shift: Vec<i8>,
        output: QuantParams,
    ) -> Self {
        Self {
            weights,
            weight_scales,
            bias,
            multiplier,
            shift,
            output,
            weight_scale_bytes: Vec::new(),
            bias_bytes: Vec::new(),
            multiplier_bytes: Vec::new(),
            shift_bytes: Vec::new(),
        }
        .with_bytes()
    }

    /// Fills the little-endian byte arrays [`QuantizedChannels::params`] borrows.
    fn with_bytes(mut self) -> Self {
        self.weight_scale_bytes = self
            .weight_scales
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        self.bias_bytes = self.bias.iter().flat_map(|s| s.to_le_bytes()).collect();
        self.multiplier_bytes = self
            .multiplier
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        self.shift_bytes = self.shift.iter().map(|&s| s as u8).collect();
        self
    }

    /// The wire-format view of these arrays (borrowed).
    pub fn params(&self) -> ChannelParams<'_> {
        ChannelParams {
            weights: &self.weights,
            weight_scales: &self.weight_scale_bytes,
            bias: &self.bias_bytes,
            multiplier: &self.multiplier_bytes,
            shift: &self.shift_bytes,
            output: self.output,
        }
    }
}

/// Float and int8 predictions of the same test set, and what `fit` and `quantize` report from
/// them.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// Float (eval mode) prediction of every test image.
    pub float_predictions: Vec<u8>,
    /// Float test accuracy, in `0..=1`.
    pub float_accuracy: f64,
    /// The int8 model's accuracy and predictions, computed by infer-core.
    pub int8: Int8Evaluation,
}

impl Scores {
    /// Scores the float `logits` (`labels.len()` rows of `classes`) against `labels`, next to
    /// the int8 evaluation of the same images.
    ///
    /// # Errors
    /// If the logits, labels and int8 predictions do not describe the same images.
    pub fn new(
        logits: &[f32],
        classes: usize,
        labels: &[u8],
        int8: Int8Evaluation,
    ) -> Result<Self> {
        ensure!(
            classes > 0
                && logits.len() == labels.len() * classes
                && int8.predictions.len() == labels.len(),
            "{} float logits, {} int8 predictions and {} labels do not match",
            logits.len(),
            int8.predictions.len(),
            labels.len()
        );
        let float_predictions: Vec<u8> = logits
            .chunks_exact(classes)
            .map(|row| first_max(row) as u8)
            .collect();
        let correct = float_predictions
            .iter()
            .zip(labels)
            .filter(|(p, l)| p == l)
            .count();
        Ok(Self {
            float_accuracy: correct as f64 / labels.len().max(1) as f64,
            float_predictions,
            int8,
        })
    }

    /// Fraction of test images on which the int8 and the float model predict the same class.
    pub fn agreement(&self) -> f64 {
        let same = self
            .float_predictions
            .iter()
            .zip(&self.int8.predictions)
            .filter(|(a, b)| a == b)
            .count();
        same as f64 / self.float_predictions.len().max(1) as f64
    }
}

/// Index of the first maximum of `values`, as infer-core breaks ties (0 if empty).
pub fn first_max(values: &[f32]) -> usize {
    (0..values.len()).fold(0, |b, j| if values[j] > values[b] { j } else { b })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn multiplier_round_trips() {
        for &m in &[0.5, 0.25, 0.75, 1e-3, 3.3e-5, 0.999_999_999_9, 1.5, 7.0] {
            let (q, s) = quantize_multiplier(m).unwrap();
            assert!((1 << 30..=i32::MAX).contains(&q), "{m}: {q}");
            let back = f64::from(q) * 2f64.powi(s - 31);
            assert!((back - m).abs() <= m * 1e-9, "{m}: {back}");
        }
        assert_eq!(quantize_multiplier(0.5).unwrap(), (1 << 30, 0));
        assert_eq!(quantize_multiplier(0.0).unwrap(), (0, 0));
        assert_eq!(quantize_multiplier(1e-30).unwrap(), (0, 0));
        assert!(quantize_multiplier(-1.0).is_err());
    }

    #[test]
    fn activation_range_includes_zero() {
        let q = activation_quant(0.0, 2.55);
        assert_eq!(q.zero_point, -128);
        assert!((q.scale - 0.01).abs() < 1e-7);
        let q = activation_quant(-1.28, 1.27); // scale 0.01, real 0 at q = 0
        assert_eq!(q.zero_point, 0);
        let q = activation_quant(-1.0, 1.0); // zero point −0.5 rounds away from zero, as TFLite
        assert_eq!(q.zero_point, -1);
        let q = activation_quant(1.0, 2.0); // widened to [0, 2]
        assert_eq!(q.zero_point, -128);
    }
}

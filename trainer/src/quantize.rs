//! Post-training int8 quantization in the TFLite scheme.
//!
//! * weights: symmetric int8 per output channel (`scale = max|w| / 127`, zero point 0);
//! * activations: asymmetric int8, range calibrated (min/max) on training images;
//! * biases: int32 in units of `input_scale · weight_scale`;
//! * requantization: Q31 multiplier + power-of-two shift ([`quantize_multiplier`]), applied
//!   by infer-core with TFLite's rounding.

use crate::network::{
    Activations, FloatModel, CLASSES, CONV_SIDE, FILTERS, FLAT, INPUT_SIDE, KERNEL, POOL_SIDE,
};
use anyhow::{ensure, Context, Result};
use infer_core::format::{
    ChannelParams, Conv2dLayer, DenseLayer, InputSpec, MaxPoolLayer, ModelFile, QuantParams,
    FORMAT_VERSION, MAGIC,
};

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
    /// Quantizes `channels` rows of float weights (each `weights.len() / channels` long).
    fn new(weights: &[f32], bias: &[f32], input_scale: f32, output: QuantParams) -> Result<Self> {
        let channels = bias.len();
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
        q.weight_scale_bytes = q
            .weight_scales
            .iter()
            .flat_map(|s| s.to_le_bytes())
            .collect();
        q.bias_bytes = q.bias.iter().flat_map(|s| s.to_le_bytes()).collect();
        q.multiplier_bytes = q.multiplier.iter().flat_map(|s| s.to_le_bytes()).collect();
        q.shift_bytes = q.shift.iter().map(|&s| s as u8).collect();
        Ok(q)
    }

    fn params(&self) -> ChannelParams<'_> {
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

/// The tutorial model in int8, ready to encode as model.bin.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedModel {
    /// Conv2D + ReLU.
    pub conv: QuantizedChannels,
    /// Dense (logits).
    pub dense: QuantizedChannels,
}

impl QuantizedModel {
    /// Quantizes `model`, calibrating activation ranges on `calibration_images`
    /// (`n × 784` raw pixels).
    ///
    /// # Errors
    /// If there are no calibration images or a parameter cannot be represented.
    pub fn from_float(model: &FloatModel, calibration_images: &[u8]) -> Result<Self> {
        let pixels = INPUT_SIDE * INPUT_SIDE;
        ensure!(
            !calibration_images.is_empty() && calibration_images.len() % pixels == 0,
            "calibration needs at least one 28×28 image"
        );
        let (mut conv_max, mut logit_min, mut logit_max) =
            (0.0f32, f32::INFINITY, f32::NEG_INFINITY);
        for chunk in calibration_images.chunks(pixels * 256) {
            let Activations {
                conv_relu, logits, ..
            } = model.forward(chunk);
            conv_max = conv_relu.iter().fold(conv_max, |m, &v| m.max(v));
            for &v in &logits {
                logit_min = logit_min.min(v);
                logit_max = logit_max.max(v);
            }
        }
        let conv_out = activation_quant(0.0, conv_max);
        let logits = activation_quant(logit_min, logit_max);
        let conv_w = model.conv_weights.as_standard_layout();
        let conv = QuantizedChannels::new(
            conv_w.as_slice().context("conv weights not contiguous")?,
            model
                .conv_bias
                .as_slice()
                .context("conv bias not contiguous")?,
            INPUT_QUANT.scale,
            conv_out,
        )
        .context("quantizing the conv layer")?;
        let dense_w = model.dense_weights.as_standard_layout();
        let dense = QuantizedChannels::new(
            dense_w.as_slice().context("dense weights not contiguous")?,
            model
                .dense_bias
                .as_slice()
                .context("dense bias not contiguous")?,
            conv_out.scale,
            logits,
        )
        .context("quantizing the dense layer")?;
        Ok(Self { conv, dense })
    }

    /// The wire-format view of this model (borrows the arrays).
    pub fn model_file(&self) -> ModelFile<'_> {
        ModelFile {
            magic: MAGIC,
            version: FORMAT_VERSION,
            input: InputSpec {
                height: INPUT_SIDE as u16,
                width: INPUT_SIDE as u16,
                channels: 1,
                quant: INPUT_QUANT,
            },
            conv: Conv2dLayer {
                filters: FILTERS as u16,
                kernel_h: KERNEL as u16,
                kernel_w: KERNEL as u16,
                in_channels: 1,
                relu: true,
                params: self.conv.params(),
            },
            pool: MaxPoolLayer {
                size: (CONV_SIDE / POOL_SIDE) as u16,
            },
            dense: DenseLayer {
                units: CLASSES as u16,
                inputs: FLAT as u32,
                params: self.dense.params(),
            },
        }
    }

    /// Encodes as model.bin bytes (postcard + CRC-32).
    ///
    /// # Errors
    /// Only if encoding fails, which would be a bug.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let mut buf = vec![0u8; self.conv.weights.len() + self.dense.weights.len() + 4096];
        let len = self
            .model_file()
            .encode(&mut buf)
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .len();
        buf.truncate(len);
        Ok(buf)
    }
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

    #[test]
    fn quantized_model_round_trips_through_infer_core() {
        let model = FloatModel::glorot_uniform(3);
        let images: Vec<u8> = (0..4 * 784).map(|i| (i * 37 % 256) as u8).collect();
        let q = QuantizedModel::from_float(&model, &images).unwrap();
        let bytes = q.to_bytes().unwrap();
        let net = infer_core::TutorialNet::from_bytes(&bytes).unwrap();
        assert_eq!(net.model().conv.params.weights, q.conv.weights.as_slice());
        assert_eq!(q.conv.weights.len(), 32 * 9);
        assert_eq!(q.dense.weights.len(), 10 * 5408);
    }
}

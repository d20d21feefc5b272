//! Int8 export of any spec'd stack as model.bin format 3 (`infer_core::stack`), in the
//! TFLite scheme ([`super::scheme`]), following the spec's int8 [`Plan`]:
//!
//! * batch norm is folded into the conv, depthwise conv or dense layer before it ([`fold`]):
//!   `w' = w·γ/√(var+ε)` per output channel, `b' = (b − mean)·γ/√(var+ε) + β`;
//! * weights are symmetric int8 per output channel, stored OHWI (conv), `[ky][kx][out_c]`
//!   (depthwise conv) or `[units][inputs]` (dense); biases int32 in units of
//!   `input_scale · weight_scale`; Q31 multiplier and shift per channel
//!   ([`QuantizedChannels`]);
//! * each conv/depthwise/dense output range is calibrated on the float model's eval-mode
//!   activations over the calibration images ([`StackCalibration`]): `[0, max]` after a ReLU,
//!   `[0, min(max, 6)]` after a ReLU6 (so that the int8 clamp at 127 is the 6 or above it,
//!   and a ReLU6 runs exactly as a ReLU), `[min, max]` otherwise; a depthwise conv's clamp
//!   is the whole int8 range (its ReLU is the zero point −128); max and average pooling keep
//!   their input's quantization, a branch its tensor's;
//! * a residual block's add is TFLite's int8 ADD ([`add_op`]) of its operands' scales into
//!   its output range, calibrated as a conv's (its clamp too is the whole int8 range);
//! * the logits (the last dense layer) are not calibrated and not clipped to int8: they keep
//!   the int32 accumulators, requantized to wide i32 logits of one common scale, zero point 0
//!   ([`logits_channels`]), so that their argmax and softmax follow the float model's.

use super::layers::Layer;
use super::model::Model;
pub use super::scheme::{
    activation_quant, add_op, first_max, quantize_multiplier, QuantizedChannels, Scores,
    INPUT_QUANT,
};
use super::spec::Activation;
use crate::data::Dataset;
use crate::eval::{evaluate_stack, load_stack};
use anyhow::{bail, ensure, Context, Result};
use infer_core::format::{InputSpec, QuantParams};
use infer_core::stack::format::{AddOp, Op, MAX_OPS};
use infer_core::stack::{StackFile, STACK_FORMAT_VERSION};
use model_spec::plan::{wire_fields, OpShape, Plan, PlanOp};
use rayon::prelude::*;

/// Images per eval-mode forward pass during calibration (bounds the activations' memory);
/// batches run in parallel on the current rayon pool.
const CALIBRATION_BATCH: usize = 8;

/// The real range of one operation's output over the calibration images.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Range {
    /// Smallest value.
    pub min: f32,
    /// Largest value.
    pub max: f32,
}

/// Activation statistics of a generic float model over calibration images, one [`Range`] per
/// operation of its [`Plan`].
#[derive(Debug, Clone, PartialEq)]
pub struct StackCalibration {
    /// Number of images measured.
    pub images: usize,
    /// Per plan operation, the range of its float output: after the folded batch norm if
    /// there is one, after the fused ReLU if there is one. (The last, the logits', is
    /// measured but not used: the logits are wide.)
    pub ranges: Vec<Range>,
}

impl StackCalibration {
    /// Runs `model` (eval mode) over `images` (raw pixels, whole input images, at least one)
    /// and records the output range of every operation of `plan`.
    ///
    /// # Errors
    /// No whole image, a plan that is not `model`'s, or non-finite activations.
    pub fn measure(model: &Model, plan: &Plan, images: &[u8]) -> Result<Self> {
        let item = model.spec.input.len();
        ensure!(
            !images.is_empty() && images.len() % item == 0,
            "calibration needs at least one whole {:?} image ({} bytes given)",
            model.spec.input.dims(),
            images.len()
        );
        // The spec layer whose output is operation j's output.
        let mut op_at_layer = vec![None; model.layers.len()];
        for (j, op) in plan.ops.iter().enumerate() {
            let layer = op.batchnorm.unwrap_or(op.layer);
            ensure!(layer < model.layers.len(), "the plan is not this model's");
            op_at_layer[layer] = Some(j);
        }
        let empty = Range {
            min: f32::INFINITY,
            max: f32::NEG_INFINITY,
        };
        // Each batch's ranges, merged below: minima and maxima, so the order of the batches
        // does not matter.
        let prepared = model.prepare_eval();
        let batches: Vec<(Vec<Range>, bool)> = images
            .par_chunks(CALIBRATION_BATCH * item)
            .map(|batch| {
                let mut ranges = vec![empty; plan.ops.len()];
                let mut finite = true;
                let x = model.input_batch(batch)?;
                let x = model.forward_eval(x, &prepared, false, |layer, x| {
                    if let Some(j) = op_at_layer[layer] {
                        finite &= widen(&mut ranges[j], &x.data);
                    }
                });
                finite &= x.data.iter().all(|v| v.is_finite());
                Ok((ranges, finite))
            })
            .collect::<Result<_>>()?;
        let mut ranges = vec![empty; plan.ops.len()];
        let mut finite = true;
        for (batch_ranges, batch_finite) in batches {
            for (range, b) in ranges.iter_mut().zip(batch_ranges) {
                range.min = range.min.min(b.min);
                range.max = range.max.max(b.max);
            }
            finite &= batch_finite;
        }
        ensure!(
            finite,
            "the float model produces non-finite activations; it cannot be quantized"
        );
        Ok(Self {
            images: images.len() / item,
            ranges,
        })
    }
}

/// Widens `range` to the finite values of `values` and tells whether they all are finite; in
/// lanes of 8, which the compiler vectorises.
fn widen(range: &mut Range, values: &[f32]) -> bool {
    let (mut lo, mut hi, mut finite) = ([range.min; 8], [range.max; 8], [true; 8]);
    let lanes = values.chunks_exact(8);
    let rest = lanes.remainder();
    for lane in lanes {
        for i in 0..8 {
            let v = lane[i];
            lo[i] = if v < lo[i] { v } else { lo[i] };
            hi[i] = if v > hi[i] { v } else { hi[i] };
            finite[i] &= v.abs() < f32::INFINITY;
        }
    }
    for &v in rest {
        lo[0] = if v < lo[0] { v } else { lo[0] };
        hi[0] = if v > hi[0] { v } else { hi[0] };
        finite[0] &= v.abs() < f32::INFINITY;
    }
    range.min = lo.iter().copied().fold(range.min, f32::min);
    range.max = hi.iter().copied().fold(range.max, f32::max);
    finite.iter().all(|&f| f)
}

/// A conv, depthwise conv or dense layer with its batch norm folded in: float weights one
/// row per output channel (OHWI `[filters][ky][kx][in_c]` for a conv, `[out_c][ky][kx]` for
/// a depthwise conv, `[units][inputs]` for a dense layer) and one bias per output channel.
#[derive(Debug, Clone, PartialEq)]
pub struct Folded {
    /// Weights, row-major `[channel][…]`.
    pub weights: Vec<f32>,
    /// Biases.
    pub bias: Vec<f32>,
}

/// The float weights of conv/depthwise/dense operation `op` of `model`'s plan, with the
/// batch norm folded in if the plan folds one, transposed from Keras' layouts (HWIO,
/// `[ky][kx][out_c]`, `[input][unit]`) to one row per output channel.
///
/// # Errors
/// If `op` does not point at a conv/dense layer (and, with a batch norm, a batch-norm layer)
/// of `model` with consistent sizes.
pub fn fold(model: &Model, op: &PlanOp) -> Result<Folded> {
    let (kernel, bias) = match model.layers.get(op.layer) {
        Some(Layer::Conv(c)) => (&c.kernel.value, &c.bias.value),
        Some(Layer::Depthwise(d)) => (&d.kernel.value, &d.bias.value),
        Some(Layer::Dense(d)) => (&d.kernel.value, &d.bias.value),
        _ => bail!(
            "layer {} is not a conv2d, depthwise_conv2d or dense layer",
            op.layer
        ),
    };
    let outs = bias.len();
    ensure!(
        outs > 0 && kernel.len() % outs == 0,
        "layer {}: {} kernel values for {outs} output channels",
        op.layer,
        kernel.len()
    );
    let rows = kernel.len() / outs;
    // Per output channel: y' = y·scale + offset.
    let (scale, offset): (Vec<f32>, Vec<f32>) = match op.batchnorm {
        // Multiplying by 1 is exact: without batch norm the weights are only transposed.
        None => (vec![1.0; outs], bias.clone()),
        Some(index) => {
            let Some(Layer::BatchNorm(bn)) = model.layers.get(index) else {
                bail!("layer {index} is not a batch norm");
            };
            ensure!(
                bn.gamma.value.len() == outs,
                "batch norm {index} has {} channels, layer {} {outs}",
                bn.gamma.value.len(),
                op.layer
            );
            (0..outs)
                .map(|c| {
                    let inv = 1.0 / (bn.moving_var[c] + super::layers::BN_EPSILON).sqrt();
                    let s = inv * bn.gamma.value[c];
                    (s, (bias[c] - bn.moving_mean[c]) * s + bn.beta.value[c])
                })
                .unzip()
        }
    };
    let mut weights = vec![0.0; kernel.len()];
    for (r, row) in kernel.chunks_exact(outs).enumerate() {
        for (o, (&w, &s)) in row.iter().zip(&scale).enumerate() {
            weights[o * rows + r] = w * s;
        }
    }
    Ok(Folded {
        weights,
        bias: offset,
    })
}

/// How far above the largest accumulator scale the logits' common scale is set: every
/// per-class ratio `input_scale · weight_scale[c] / output_scale` is then below 1 by more
/// than the Q31 multiplier's rounding, so its shift is ≤ 0 and no accumulator can overflow
/// when requantized.
pub const LOGITS_SCALE_MARGIN: f64 = 1.0 + 1.0 / 65_536.0;

/// The logits layer (`folded`, reading values of scale `input_scale`) in int8 weights with
/// wide outputs: one output scale for every class, just above the largest accumulator scale
/// `input_scale · weight_scale[c]` ([`LOGITS_SCALE_MARGIN`]), zero point 0. The wide logits
/// are then the int32 accumulators scaled by ratios in `(0, 1)`: their resolution is the
/// accumulators', and nothing is clipped.
///
/// # Errors
/// As [`QuantizedChannels::new`]; a ratio that would need a left shift (never, by
/// construction: checked all the same, since infer-core refuses it).
pub fn logits_channels(folded: &Folded, input_scale: f32) -> Result<QuantizedChannels> {
    // The weight scales do not depend on the output quantization: a first pass finds them.
    let probe = QuantParams {
        scale: 1.0,
        zero_point: 0,
    };
    let first = QuantizedChannels::new(&folded.weights, &folded.bias, input_scale, probe)?;
    let largest = first
        .weight_scales
        .iter()
        .map(|&w| f64::from(input_scale) * f64::from(w))
        .fold(0.0f64, f64::max);
    let scale = (largest * LOGITS_SCALE_MARGIN) as f32;
    ensure!(
        scale.is_finite() && scale > 0.0,
        "the logits' accumulator scale {largest} has no f32 output scale"
    );
    let output = QuantParams {
        scale,
        zero_point: 0,
    };
    let channels = QuantizedChannels::new(&folded.weights, &folded.bias, input_scale, output)?;
    ensure!(
        channels.shift.iter().all(|&s| s <= 0),
        "a logits requantization ratio reached 1 (shifts {:?})",
        channels.shift
    );
    Ok(channels)
}

/// One int8 operation, owning its arrays.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedOp {
    /// Shapes.
    pub kind: OpShape,
    /// Weights and requantization of a conv/depthwise/dense operation (`None` for pooling);
    /// a depthwise conv's weights in the wire's `[ky][kx][out_c]`.
    pub channels: Option<QuantizedChannels>,
    /// An add's TFLite int8 ADD parameters (`None` for the other operations).
    pub add: Option<AddOp>,
}

/// A generic model in int8, ready to encode as a format-3 model.bin.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantizedStack {
    /// Input `(height, width, channels)`.
    pub input: (usize, usize, usize),
    /// The operations of the plan, in order.
    pub ops: Vec<QuantizedOp>,
}

impl QuantizedStack {
    /// Quantizes `model` along `plan` (its [`Plan::of`]) with the ranges of `calibration`.
    ///
    /// # Errors
    /// A plan that is not `model`'s, or a parameter that cannot be represented (a bias
    /// beyond int32, a requantization multiplier beyond the Q31 range).
    pub fn from_calibration(
        model: &Model,
        plan: &Plan,
        calibration: &StackCalibration,
    ) -> Result<Self> {
        ensure!(
            calibration.ranges.len() == plan.ops.len(),
            "the calibration has {} ranges for {} operations",
            calibration.ranges.len(),
            plan.ops.len()
        );
        let last = plan.ops.len().saturating_sub(1);
        // The quantization of each tensor: 0 the input, `j + 1` operation j's output.
        let mut quants = vec![INPUT_QUANT];
        let mut ops = Vec::with_capacity(plan.ops.len());
        for (j, (op, range)) in plan.ops.iter().zip(&calibration.ranges).enumerate() {
            let input_quant = quants[j];
            // A conv's, depthwise conv's, hidden dense layer's or add's output range.
            let output = match Plan::activation(&model.spec, op) {
                Activation::Relu => activation_quant(0.0, range.max),
                Activation::Relu6 => activation_quant(0.0, range.max.min(6.0)),
                _ => activation_quant(range.min, range.max),
            };
            let quantizing = || format!("quantizing operation {j} ({})", op.kind);
            let (channels, add, out) = match op.kind {
                OpShape::MaxPool2d { .. } | OpShape::AvgPool2d { .. } => (None, None, input_quant),
                OpShape::Branch { from, .. } => {
                    let quant = quants.get(from).copied();
                    (None, None, quant.context("a branch to a later tensor")?)
                }
                OpShape::Add {
                    h,
                    w,
                    channels,
                    other,
                    min,
                    max,
                } => {
                    let b = quants.get(other).context("an add of a later tensor")?;
                    let add = add_op(
                        (h, w, channels),
                        other,
                        (input_quant.scale, b.scale),
                        output,
                        (min, max),
                    )
                    .with_context(quantizing)?;
                    (None, Some(add), output)
                }
                OpShape::Conv2d { .. }
                | OpShape::Dense { .. }
                | OpShape::DepthwiseConv2d { .. } => {
                    let folded = fold(model, op)?;
                    if j == last {
                        let channels =
                            logits_channels(&folded, input_quant.scale).with_context(quantizing)?;
                        let out = channels.output;
                        (Some(channels), None, out)
                    } else {
                        let mut channels = QuantizedChannels::new(
                            &folded.weights,
                            &folded.bias,
                            input_quant.scale,
                            output,
                        )
                        .with_context(quantizing)?;
                        if let OpShape::DepthwiseConv2d { geometry, .. } = op.kind {
                            // `[out_c][tap]` to the wire's `[tap][out_c]`.
                            let (outs, taps) =
                                (geometry.out_c(), channels.weights.len() / geometry.out_c());
                            let rows = channels.weights.clone();
                            for (o, row) in rows.chunks_exact(taps).enumerate() {
                                for (t, &w) in row.iter().enumerate() {
                                    channels.weights[t * outs + o] = w;
                                }
                            }
                        }
                        (Some(channels), None, output)
                    }
                }
            };
            quants.push(out);
            ops.push(QuantizedOp {
                kind: op.kind,
                channels,
                add,
            });
        }
        Ok(Self {
            input: plan.input,
            ops,
        })
    }

    /// The wire-format input and operations (borrowing the arrays), for
    /// [`StackFile::new`].
    ///
    /// # Errors
    /// More than [`MAX_OPS`] operations or a dimension beyond the format's integer widths.
    pub fn wire(&self) -> Result<(InputSpec, Vec<Op<'_>>)> {
        let (h, w, c) = self.input;
        let input = InputSpec {
            height: narrow(h)?,
            width: narrow(w)?,
            channels: narrow(c)?,
            quant: INPUT_QUANT,
        };
        check_op_count(self.ops.len())?;
        let mut ops = Vec::with_capacity(self.ops.len());
        for (j, op) in self.ops.iter().enumerate() {
            if let Some(add) = op.add {
                ops.push(Op::Add(add));
                continue;
            }
            let params = op.channels.as_ref().map(QuantizedChannels::params);
            let wire = Op::from_shape(op.kind, params)
                .map_err(|e| anyhow::anyhow!("operation {j} ({}): {e}", op.kind))?;
            ops.push(wire);
        }
        Ok((input, ops))
    }

    /// Encodes as format-3 model.bin bytes and checks them with infer-core's decoder, so a
    /// file infer-core would refuse is never written.
    ///
    /// # Errors
    /// As [`QuantizedStack::wire`], or infer-core's reason for refusing the bytes.
    pub fn to_bytes(&self) -> Result<Vec<u8>> {
        let (input, ops) = self.wire()?;
        encode_checked(input, &ops)
    }

    /// The output quantization of operation `j` (a pool's is its input's, a branch's its
    /// tensor's).
    pub fn output_quant(&self, j: usize) -> QuantParams {
        // Tensor t: 0 the input, `k + 1` operation k's output.
        let mut t = j + 1;
        while let Some(op) = t.checked_sub(1).and_then(|k| self.ops.get(k)) {
            if let Some(c) = &op.channels {
                return c.output;
            }
            if let Some(a) = &op.add {
                return a.output;
            }
            t = match op.kind {
                OpShape::Branch { from, .. } if from < t => from,
                _ => t - 1,
            };
        }
        INPUT_QUANT
    }
}

/// Encodes `input` and `ops` as format-3 model.bin bytes and checks them with infer-core's
/// decoder, so a file infer-core would refuse is never written.
///
/// # Errors
/// infer-core's reason for refusing the bytes.
pub fn encode_checked(input: InputSpec, ops: &[Op<'_>]) -> Result<Vec<u8>> {
    let arrays: usize = ops
        .iter()
        .filter_map(Op::params)
        .map(|p| p.weights.len() + p.weight_scales.len() + p.bias.len() + p.multiplier.len())
        .sum();
    let mut buf = vec![0u8; 2 * arrays + 64 * ops.len() + 64];
    let len = StackFile::new(input, ops)
        .encode(&mut buf)
        .map_err(|e| anyhow::anyhow!("encoding model.bin: {e}"))?
        .len();
    buf.truncate(len);
    load_stack(&buf).context("infer-core refuses the model")?;
    Ok(buf)
}

/// Refuses more operations than model.bin holds.
fn check_op_count(ops: usize) -> Result<()> {
    ensure!(
        ops <= MAX_OPS,
        "the int8 plan has {ops} operations (conv2d, depthwise_conv2d, maxpool2d, avgpool2d \
         and dense layers, a residual block's add and its shortcut's branch; batch norm, \
         dropout and flatten are free); model.bin format {STACK_FORMAT_VERSION} holds at most \
         {MAX_OPS}: remove {} of them",
        ops - MAX_OPS
    );
    Ok(())
}

/// Everything `trainer fit` needs of `spec` before the first epoch, so that no training ends
/// without its model.bin: its int8 plan (every batch norm foldable), at most [`MAX_OPS`]
/// operations, every dimension within the format's fields, and one output per digit class.
/// Returns the plan.
///
/// # Errors
/// The first of these that fails, naming the layer or the number.
pub fn check_exportable(spec: &super::Spec) -> Result<Plan> {
    let plan = Plan::of(spec)?;
    check_op_count(plan.ops.len())?;
    let (h, w, c) = plan.input;
    for v in [h, w, c] {
        narrow(v).context("the input shape")?;
    }
    for op in &plan.ops {
        for (i, v) in wire_fields(&op.kind).into_iter().enumerate() {
            let at = || format!("layer {} ({})", op.layer, op.kind);
            if i == 0 && matches!(op.kind, OpShape::Dense { .. }) {
                u32::try_from(v).map_err(|_| {
                    anyhow::anyhow!("{}: {v} inputs do not fit model.bin's 32-bit field", at())
                })?;
            } else {
                narrow(v).with_context(at)?;
            }
        }
    }
    let classes = spec.classes();
    ensure!(
        classes == crate::data::CLASSES,
        "the last layer has {classes} outputs but the data has {} classes (the digits 0-9): give \
         the last dense layer units = {}",
        crate::data::CLASSES,
        crate::data::CLASSES
    );
    Ok(plan)
}

/// A shape for the format's `u16` fields.
fn narrow(v: usize) -> Result<u16> {
    u16::try_from(v).map_err(|_| {
        anyhow::anyhow!(
            "dimension {v} does not fit model.bin's 16-bit fields (at most {})",
            u16::MAX
        )
    })
}

/// A generic float model quantized to format 3 and both scored on a test set.
#[derive(Debug, Clone, PartialEq)]
pub struct StackScored {
    /// The format-3 model.bin bytes.
    pub bytes: Vec<u8>,
    /// The activation statistics the int8 ranges were chosen from.
    pub calibration: StackCalibration,
    /// Float and int8 accuracies and predictions.
    pub scores: Scores,
}

/// Quantizes `model` calibrated on `calibration_images` (raw pixels of whole input images),
/// encodes it as a format-3 model.bin, and scores the float model and the int8 model
/// (infer-core's fast kernels) on `test`.
///
/// # Errors
/// A batch norm the plan cannot fold, no calibration image, a test set that does not fit the
/// model, or a parameter that cannot be represented.
pub fn quantize_and_score(
    model: &Model,
    calibration_images: &[u8],
    test: &Dataset,
) -> Result<StackScored> {
    let plan = Plan::of(&model.spec)?;
    let calibration = StackCalibration::measure(model, &plan, calibration_images)
        .context("calibrating the activation ranges")?;
    let bytes = QuantizedStack::from_calibration(model, &plan, &calibration)
        .context("quantizing the model")?
        .to_bytes()?;
    let int8 = evaluate_stack(&load_stack(&bytes)?, test)?;
    let logits = model.logits(&test.images)?;
    let scores = Scores::new(&logits, model.spec.classes(), &test.labels, int8)?;
    Ok(StackScored {
        bytes,
        calibration,
        scores,
    })
}

#[cfg(test)]
mod tests {
    use super::super::layers::{Mode, Tensor};
    use super::super::spec::Spec;
    use super::*;
    use crate::eval::StackBuffers;
    use infer_core::stack::Kernels;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// conv (same, stride 2, no activation) + batch norm → pool → dense (none) + batch norm →
    /// dense (logits).
    const FOLDABLE: &str = "input = [7, 7, 2]
[[layer]]
type = \"conv2d\"
filters = 4
kernel = 3
stride = 2
padding = \"same\"
[[layer]]
type = \"batchnorm\"
[[layer]]
type = \"maxpool2d\"
pool = 2
[[layer]]
type = \"flatten\"
[[layer]]
type = \"dense\"
units = 5
[[layer]]
type = \"batchnorm\"
[[layer]]
type = \"dropout\"
rate = 0.5
[[layer]]
type = \"dense\"
units = 3
activation = \"softmax\"
";

    /// A model of `spec` with random weights, biases and batch-norm statistics.
    fn random_model(spec: &Spec, seed: u64) -> Model {
        let mut model = Model::glorot_uniform(spec, seed);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
        for layer in &mut model.layers {
            match layer {
                Layer::Conv(c) => c
                    .bias
                    .value
                    .iter_mut()
                    .for_each(|b| *b = rng.gen_range(-0.5..0.5)),
                Layer::Dense(d) => d
                    .bias
                    .value
                    .iter_mut()
                    .for_each(|b| *b = rng.gen_range(-0.5..0.5)),
                Layer::Depthwise(d) => d
                    .bias
                    .value
                    .iter_mut()
                    .for_each(|b| *b = rng.gen_range(-0.5..0.5)),
                Layer::BatchNorm(b) => {
                    for c in 0..b.gamma.value.len() {
                        b.gamma.value[c] = rng.gen_range(0.3..2.0);
                        b.beta.value[c] = rng.gen_range(-1.0..1.0);
                        b.moving_mean[c] = rng.gen_range(-1.0..1.0);
                        b.moving_var[c] = rng.gen_range(0.05..3.0);
                    }
                }
                _ => {}
            }
        }
        model
    }

    fn random_tensor(rng: &mut ChaCha8Rng, n: usize, (h, w, c): (usize, usize, usize)) -> Tensor {
        Tensor {
            n,
            h,
            w,
            c,
            data: (0..n * h * w * c)
                .map(|_| rng.gen_range(-2.0..2.0))
                .collect(),
        }
    }

    #[test]
    fn folding_batch_norm_gives_the_conv_then_batch_norm_output() {
        for text in [FOLDABLE, DEPTHWISE] {
            fold_matches_batch_norm(text);
        }
    }

    /// [`fold`] of each operation of `text`'s plan that folds a batch norm (two of them)
    /// gives the layer then the batch norm.
    fn fold_matches_batch_norm(text: &str) {
        let spec = Spec::parse(text).unwrap();
        let model = random_model(&spec, 3);
        let plan = Plan::of(&spec).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let mut checked = 0;
        for op in plan.ops.iter().filter(|op| op.batchnorm.is_some()) {
            let input = spec.input_of(op.layer);
            let x = random_tensor(&mut rng, 5, input.hwc());
            // conv/dense → batch norm, as the float model runs them.
            let layers = model.layers.clone();
            let bn = op.batchnorm.unwrap();
            let conv_out = layers[op.layer].forward(x.clone(), Mode::Eval);
            let expected = layers[bn].forward(conv_out, Mode::Eval);
            // One layer with the folded weights, transposed back to Keras' layout.
            let folded = fold(&model, op).unwrap();
            let mut single = Layer::new(&spec.layers[op.layer], op.layer, input);
            let outs = folded.bias.len();
            let rows = folded.weights.len() / outs;
            let (kernel, bias) = match &mut single {
                Layer::Conv(c) => (&mut c.kernel.value, &mut c.bias.value),
                Layer::Depthwise(d) => (&mut d.kernel.value, &mut d.bias.value),
                Layer::Dense(d) => (&mut d.kernel.value, &mut d.bias.value),
                _ => unreachable!(),
            };
            for o in 0..outs {
                for r in 0..rows {
                    kernel[r * outs + o] = folded.weights[o * rows + r];
                }
            }
            bias.clone_from(&folded.bias);
            let mut got = single.forward(x, Mode::Eval);
            // The batch norm's activation, which the folded layer takes at export.
            let act = Plan::activation(&spec, op);
            super::super::sliding::activate(&mut got.data, act.clamps(), act == Activation::Relu6);
            assert_eq!(
                (got.n, got.h, got.w, got.c),
                (expected.n, expected.h, expected.w, expected.c)
            );
            for (a, b) in got.data.iter().zip(&expected.data) {
                assert!((a - b).abs() <= 1e-5 * (1.0 + b.abs()), "{a} vs {b}");
            }
            checked += 1;
        }
        assert_eq!(checked, 2, "both batch norms of {text}");
    }

    #[test]
    fn without_batch_norm_folding_is_a_transpose() {
        let spec = Spec::tutorial();
        let model = random_model(&spec, 5);
        let plan = Plan::of(&spec).unwrap();
        let Layer::Conv(conv) = &model.layers[0] else {
            panic!("layer 0 is the conv")
        };
        let folded = fold(&model, &plan.ops[0]).unwrap();
        assert_eq!(folded.bias, conv.bias.value);
        // OHWI [f][tap] from HWIO [tap][f].
        for f in 0..32 {
            for t in 0..9 {
                assert_eq!(folded.weights[f * 9 + t], conv.kernel.value[t * 32 + f]);
            }
        }
        assert!(fold(&model, &plan.ops[1]).is_err(), "a pool has no weights");
    }

    #[test]
    fn calibration_records_each_operations_output_range() {
        let spec = Spec::parse(FOLDABLE).unwrap();
        let model = random_model(&spec, 11);
        let plan = Plan::of(&spec).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let images: Vec<u8> = (0..300 * 98).map(|_| rng.gen()).collect();
        let c = StackCalibration::measure(&model, &plan, &images).unwrap();
        assert_eq!(c.images, 300);
        // Run the layers by hand and look at each operation's output.
        let mut x = model.input_batch(&images).unwrap();
        let mut layers = model.layers.clone();
        let mut outputs = Vec::new();
        for layer in &mut layers {
            x = layer.forward(x, Mode::Eval);
            outputs.push(x.data.clone());
        }
        for (op, range) in plan.ops.iter().zip(&c.ranges) {
            let out = &outputs[op.batchnorm.unwrap_or(op.layer)];
            let min = out.iter().copied().fold(f32::INFINITY, f32::min);
            let max = out.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            assert_eq!((range.min, range.max), (min, max), "{}", op.kind);
        }
        assert!(StackCalibration::measure(&model, &plan, &images[..97]).is_err());
        assert!(StackCalibration::measure(&model, &plan, &[]).is_err());
    }

    #[test]
    fn the_export_decodes_and_its_int8_logits_track_the_float_model() {
        let spec = Spec::parse(FOLDABLE).unwrap();
        let model = random_model(&spec, 21);
        let plan = Plan::of(&spec).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let images: Vec<u8> = (0..200 * 98).map(|_| rng.gen()).collect();
        let calibration = StackCalibration::measure(&model, &plan, &images).unwrap();
        let q = QuantizedStack::from_calibration(&model, &plan, &calibration).unwrap();
        let bytes = q.to_bytes().unwrap();
        let file = StackFile::decode(&bytes).unwrap();
        let kinds: Vec<_> = file.ops.iter().map(|op| op.type_name()).collect();
        assert_eq!(kinds, ["conv2d", "maxpool2d", "dense", "dense"]);
        for (wire, op) in file.ops.iter().zip(&q.ops) {
            assert_eq!(wire.out_len(), op.kind.out_len());
            assert_eq!(wire.in_len(), op.kind.in_len());
        }
        // Pooling keeps its input's quantization.
        assert_eq!(q.output_quant(1), q.output_quant(0));
        // Every int8 weight dequantizes to its folded float weight within half a step.
        for (op, qop) in plan.ops.iter().zip(&q.ops) {
            let Some(ch) = &qop.channels else { continue };
            let folded = fold(&model, op).unwrap();
            let per = folded.weights.len() / folded.bias.len();
            for (i, (&w, &qw)) in folded.weights.iter().zip(&ch.weights).enumerate() {
                let scale = ch.weight_scales[i / per];
                assert!((f32::from(qw as i8) * scale - w).abs() <= scale * 0.5 + 1e-7);
            }
        }
        // The logits are wide: zero point 0, one scale just above every class's accumulator
        // scale, all shifts ≤ 0.
        let logits_q = q.ops[3].channels.as_ref().unwrap();
        assert_eq!(logits_q.output.zero_point, 0);
        assert!(logits_q.shift.iter().all(|&s| s <= 0));
        let input_scale = q.output_quant(2).scale;
        for &w in &logits_q.weight_scales {
            let ratio = f64::from(input_scale) * f64::from(w) / f64::from(logits_q.output.scale);
            assert!(ratio < 1.0 && ratio > 0.0, "{ratio}");
        }
        let largest = logits_q
            .weight_scales
            .iter()
            .map(|&w| f64::from(input_scale) * f64::from(w))
            .fold(0.0, f64::max);
        assert!(f64::from(logits_q.output.scale) / largest < 1.001);
        assert_logits_track(&model, &q, &bytes, &images, 0.05);
    }

    /// Dequantized wide logits of the int8 model (`q`, encoded as `bytes`) are within
    /// `tolerance` of the float model's logit range of its float logits on `images`, with
    /// both the reference and the fast kernels.
    fn assert_logits_track(
        model: &Model,
        q: &QuantizedStack,
        bytes: &[u8],
        images: &[u8],
        tolerance: f32,
    ) {
        let file = StackFile::decode(bytes).unwrap();
        let (item, classes) = (model.spec.input.len(), model.spec.classes());
        let float = model.logits(images).unwrap();
        let out = q.output_quant(q.ops.len() - 1);
        let lo = float.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = float.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut buffers = StackBuffers::new(&file);
        let mut worst = 0.0f32;
        for (px, f) in images.chunks(item).zip(float.chunks(classes)) {
            let logits = buffers
                .logits(&file, px, Kernels::Reference)
                .unwrap()
                .to_vec();
            let fast = buffers.logits(&file, px, Kernels::Fast).unwrap();
            assert_eq!(logits, fast, "the fast kernels give the reference's logits");
            for (&wide, &fl) in logits.iter().zip(f) {
                let real = out.scale * wide as f32;
                worst = worst.max((real - fl).abs());
            }
        }
        assert!(
            worst < tolerance * (hi - lo).max(1e-3),
            "worst {worst} in [{lo}, {hi}]"
        );
    }

    /// A random model of a spec, exported.
    struct Exported {
        spec: Spec,
        model: Model,
        plan: Plan,
        calibration: StackCalibration,
        q: QuantizedStack,
        bytes: Vec<u8>,
        images: Vec<u8>,
    }

    /// A random model of `text` (weights from `seed`) calibrated on 200 random images (from
    /// `image_seed`) and exported; its file holds exactly the spec's plan, clamps included.
    fn exported(text: &str, seed: u64, image_seed: u64) -> Exported {
        let spec = Spec::parse(text).unwrap();
        let model = random_model(&spec, seed);
        let plan = Plan::of(&spec).unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(image_seed);
        let images: Vec<u8> = (0..200 * spec.input.len()).map(|_| rng.gen()).collect();
        let calibration = StackCalibration::measure(&model, &plan, &images).unwrap();
        let q = QuantizedStack::from_calibration(&model, &plan, &calibration).unwrap();
        let bytes = q.to_bytes().unwrap();
        let file = StackFile::decode(&bytes).unwrap();
        let shapes: Vec<_> = file.ops.iter().map(|op| op.shape()).collect();
        assert_eq!(shapes, plan.shapes());
        Exported {
            spec,
            model,
            plan,
            calibration,
            q,
            bytes,
            images,
        }
    }

    /// conv (ReLU6) → depthwise conv (multiplier 2, stride 2, same) + batch norm (ReLU6) →
    /// pointwise conv + batch norm (ReLU) → depthwise conv (valid, ReLU) → overlapping
    /// average pool → dense (logits).
    const DEPTHWISE: &str = "input = [9, 9, 1]
[[layer]]
type = \"conv2d\"
filters = 3
kernel = 3
padding = \"same\"
activation = \"relu6\"
[[layer]]
type = \"depthwise_conv2d\"
kernel = 3
stride = 2
padding = \"same\"
depth_multiplier = 2
[[layer]]
type = \"batchnorm\"
activation = \"relu6\"
[[layer]]
type = \"conv2d\"
filters = 4
kernel = 1
[[layer]]
type = \"batchnorm\"
activation = \"relu\"
[[layer]]
type = \"depthwise_conv2d\"
kernel = 2
activation = \"relu\"
[[layer]]
type = \"avgpool2d\"
pool = 3
stride = 2
padding = \"same\"
[[layer]]
type = \"flatten\"
[[layer]]
type = \"dense\"
units = 3
activation = \"softmax\"
";

    #[test]
    fn depthwise_convs_average_pools_and_relu6_export_as_planned_and_track_the_float_model() {
        let Exported {
            spec,
            model,
            plan,
            q,
            bytes,
            images,
            ..
        } = exported(DEPTHWISE, 23, 4);
        // After a ReLU or ReLU6 the output range starts at 0 (zero point −128); a ReLU6's
        // range ends at 6 at most.
        for (j, op) in plan.ops.iter().enumerate().take(4) {
            let out = q.output_quant(j);
            assert_eq!(out.zero_point, -128, "{}", op.kind);
            if Plan::activation(&spec, op) == Activation::Relu6 {
                assert!(out.scale * 255.0 <= 6.0 * (1.0 + 1e-6), "{}", op.kind);
            }
        }
        // Average pooling keeps its input's quantization.
        assert_eq!(q.output_quant(4), q.output_quant(3));
        // The depthwise weights are `[tap][out_c]` on the wire: each dequantizes to its
        // folded float weight (`[out_c][tap]`) within half a step.
        let folded = fold(&model, &plan.ops[1]).unwrap();
        let ch = q.ops[1].channels.as_ref().unwrap();
        let (outs, taps) = (6, 9);
        for o in 0..outs {
            for t in 0..taps {
                let (w, scale) = (folded.weights[o * taps + t], ch.weight_scales[o]);
                let qw = f32::from(ch.weights[t * outs + o] as i8);
                assert!((qw * scale - w).abs() <= scale * 0.5 + 1e-7, "{o} {t}");
            }
        }
        assert_logits_track(&model, &q, &bytes, &images, 0.05);
    }

    /// conv → residual (identity shortcut; conv, batch norm, ReLU6 after the add) →
    /// residual (strided conv + batch norm on the main path; a strided 1×1 conv + batch norm
    /// on the shortcut; ReLU after the add) → dense (logits).
    const RESIDUAL: &str = "input = [8, 8, 1]
[[layer]]
type = \"conv2d\"
filters = 3
kernel = 3
padding = \"same\"
activation = \"relu\"
[[layer]]
type = \"residual\"
activation = \"relu6\"
[[layer.main]]
type = \"conv2d\"
filters = 3
kernel = 3
padding = \"same\"
[[layer.main]]
type = \"batchnorm\"
[[layer]]
type = \"residual\"
activation = \"relu\"
[[layer.main]]
type = \"conv2d\"
filters = 5
kernel = 3
stride = 2
padding = \"same\"
[[layer.main]]
type = \"batchnorm\"
[[layer.shortcut]]
type = \"conv2d\"
filters = 5
kernel = 1
stride = 2
[[layer.shortcut]]
type = \"batchnorm\"
[[layer]]
type = \"flatten\"
[[layer]]
type = \"dense\"
units = 3
activation = \"softmax\"
";

    #[test]
    fn residual_blocks_export_as_branches_and_tflite_adds_and_track_the_float_model() {
        let Exported {
            spec,
            model,
            plan,
            calibration,
            q,
            bytes,
            images,
        } = exported(RESIDUAL, 25, 6);
        let file = StackFile::decode(&bytes).unwrap();
        let kinds: Vec<_> = plan.shapes().iter().map(OpShape::type_name).collect();
        assert_eq!(
            kinds,
            ["conv2d", "conv2d", "add", "conv2d", "branch", "conv2d", "add", "dense"]
        );
        // Tensor t's quantization: 0 the input, `j + 1` operation j's output.
        let tensor = |t: usize| t.checked_sub(1).map_or(INPUT_QUANT, |j| q.output_quant(j));
        // A branch's output is its tensor's: the block's input.
        assert_eq!(q.output_quant(4), tensor(3));
        for (j, op) in plan.ops.iter().enumerate() {
            let OpShape::Add {
                h,
                w,
                channels,
                other,
                min,
                max,
            } = op.kind
            else {
                assert!(q.ops[j].add.is_none());
                continue;
            };
            // TFLite's ADD parameters for the operands' scales, into the calibrated range
            // of the add's (activated) output.
            let range = calibration.ranges[j];
            let output = match Plan::activation(&spec, op) {
                Activation::Relu => activation_quant(0.0, range.max),
                Activation::Relu6 => activation_quant(0.0, range.max.min(6.0)),
                _ => unreachable!("both adds have an activation"),
            };
            assert_eq!(output.zero_point, -128);
            let scales = (tensor(j).scale, tensor(other).scale);
            let expected = add_op((h, w, channels), other, scales, output, (min, max)).unwrap();
            assert_eq!(q.ops[j].add, Some(expected));
            assert_eq!(file.ops.get(j), Some(Op::Add(expected)));
            assert_eq!(q.output_quant(j), output);
        }
        assert_logits_track(&model, &q, &bytes, &images, 0.05);
    }

    #[test]
    fn a_batch_norm_after_a_relu_is_refused_by_name() {
        let spec = Spec::parse(&FOLDABLE.replace(
            "padding = \"same\"\n",
            "padding = \"same\"\nactivation = \"relu\"\n",
        ))
        .unwrap();
        let model = random_model(&spec, 1);
        let test = Dataset {
            images: vec![0; 98],
            labels: vec![0],
            rows: 7,
            cols: 7,
        };
        let err = quantize_and_score(&model, &[0; 98], &test).unwrap_err();
        assert!(err.to_string().contains("layer 1 (batchnorm)"), "{err}");
    }
}

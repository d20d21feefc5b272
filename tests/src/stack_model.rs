//! Format-2 models (any conv / max-pool / dense stack) with random weights for a spec's int8
//! plan, and the host's logits for them: inputs for the bit-exactness and build-failure tests
//! of the spec'd firmware that do not need a trained model.
//!
//! The parameters are random but in the ranges a quantized model has (Q31 multipliers in
//! `[2^30, 2^31)`, biases that cannot overflow the accumulator), with each layer's shift chosen
//! for its fan-in so that activations spread over the int8 range instead of saturating:
//! every kernel path and the requantization are exercised, and the logits depend on the image.

use anyhow::{anyhow, ensure, Result};
use infer_core::format::{ChannelParams, InputSpec, QuantParams};
use infer_core::stack::format::Op;
use infer_core::stack::{Kernels, StackFile};
use model_spec::plan::{OpShape, Plan};
use trainer::eval::StackBuffers;

/// SplitMix64: a small deterministic generator, so a seed names a model.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `lo..=hi`.
    fn range(&mut self, lo: i64, hi: i64) -> i64 {
        lo + (self.next() % (hi - lo + 1) as u64) as i64
    }
}

/// The arrays of one conv or dense operation.
struct Params {
    weights: Vec<u8>,
    scales: Vec<u8>,
    bias: Vec<u8>,
    multiplier: Vec<u8>,
    shift: Vec<u8>,
    output: QuantParams,
}

impl Params {
    /// `weights` int8 weights for `channels` outputs of `fan_in` inputs each.
    fn random(rng: &mut Rng, weights: usize, channels: usize, fan_in: usize, relu: bool) -> Self {
        // |Σ (x − zp)·w| grows like √fan_in; this shift keeps the activations of the
        // MNIST digits spread over the int8 range, neither near 0 nor saturated (tried on
        // the two-block network of tests/tests/stack_firmware.rs and tutorial-full).
        let shift = -(5 + (usize::BITS - fan_in.leading_zeros()).div_ceil(2) as i64);
        Self {
            weights: (0..weights)
                .map(|_| rng.range(-127, 127) as i8 as u8)
                .collect(),
            scales: (0..channels).flat_map(|_| 0.01f32.to_le_bytes()).collect(),
            bias: (0..channels)
                .flat_map(|_| (rng.range(-2000, 2000) as i32).to_le_bytes())
                .collect(),
            multiplier: (0..channels)
                .flat_map(|_| (rng.range(1 << 30, (1 << 31) - 1) as i32).to_le_bytes())
                .collect(),
            shift: (0..channels)
                .map(|_| (shift + rng.range(-1, 1)).max(-31) as i8 as u8)
                .collect(),
            output: QuantParams {
                scale: 0.05,
                zero_point: if relu {
                    rng.range(-128, -90) as i32
                } else {
                    rng.range(-20, 20) as i32
                },
            },
        }
    }

    fn view(&self) -> ChannelParams<'_> {
        ChannelParams {
            weights: &self.weights,
            weight_scales: &self.scales,
            bias: &self.bias,
            multiplier: &self.multiplier,
            shift: &self.shift,
            output: self.output,
        }
    }
}

/// A format-3 model.bin of `plan` with random parameters drawn from `seed`, its input
/// quantized as the trainer's (scale 1/255, zero point −128).
///
/// # Errors
/// A plan format 3 cannot hold (a dimension over `u16`, more than 32 operations).
pub fn random_model(plan: &Plan, seed: u64) -> Result<Vec<u8>> {
    let trainer = QuantParams {
        scale: 1.0 / 255.0,
        zero_point: -128,
    };
    random_model_with_input(plan, seed, trainer)
}

/// [`random_model`] with the input quantization `input_quant`.
///
/// # Errors
/// As [`random_model`].
pub fn random_model_with_input(
    plan: &Plan,
    seed: u64,
    input_quant: QuantParams,
) -> Result<Vec<u8>> {
    let mut rng = Rng(seed);
    let mut params: Vec<Option<Params>> = plan
        .ops
        .iter()
        .map(|op| match op.kind {
            OpShape::Conv2d { relu, .. } => Some(Params::random(
                &mut rng,
                op.kind.weights(),
                op.kind.channels(),
                op.kind.taps(),
                relu,
            )),
            OpShape::Dense { inputs, relu, .. } => Some(Params::random(
                &mut rng,
                op.kind.weights(),
                op.kind.channels(),
                inputs,
                relu,
            )),
            OpShape::DepthwiseConv2d { .. } => Some(Params::random(
                &mut rng,
                op.kind.weights(),
                op.kind.channels(),
                op.kind.weights() / op.kind.channels().max(1),
                false,
            )),
            OpShape::MaxPool2d { .. }
            | OpShape::AvgPool2d { .. }
            | OpShape::Add { .. }
            | OpShape::Branch { .. } => None,
        })
        .collect();
    // The logits are wide, of zero point 0 (the shifts are already ≤ 0).
    if let Some(Some(logits)) = params.last_mut() {
        logits.output.zero_point = 0;
    }
    let short = |n: usize| u16::try_from(n).map_err(|_| anyhow!("{n} does not fit format 3's u16"));
    let input = InputSpec {
        height: short(plan.input.0)?,
        width: short(plan.input.1)?,
        channels: short(plan.input.2)?,
        quant: input_quant,
    };
    let ops = plan
        .ops
        .iter()
        .zip(&params)
        .map(|(op, params)| Op::from_shape(op.kind, params.as_ref().map(Params::view)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow!("random model: {e}"))?;
    let file = StackFile::new(input, &ops);
    file.validate().map_err(|e| anyhow!("random model: {e}"))?;
    let bound = plan.weights() + 16 * plan.channels() + 64 * (plan.ops.len() + 1);
    let mut buf = vec![0u8; bound];
    let bytes = file
        .encode(&mut buf)
        .map_err(|e| anyhow!("encoding the random model: {e}"))?;
    Ok(bytes.to_vec())
}

/// The wide logits infer-core's reference kernels compute on the host for `model` (format 3)
/// and each image of `images` (8-bit pixels, the model's input size each), quantized with the
/// model's input parameters as the firmware does.
///
/// # Errors
/// A model that does not decode, or images of another size.
pub fn host_logits(model: &[u8], images: &[u8]) -> Result<Vec<Vec<i32>>> {
    let file = StackFile::decode(model).map_err(|e| anyhow!("{e}"))?;
    let size = usize::from(file.input.height)
        * usize::from(file.input.width)
        * usize::from(file.input.channels);
    ensure!(
        size > 0 && images.len() % size == 0,
        "{} bytes of images are not whole {size}-value inputs",
        images.len()
    );
    let mut buffers = StackBuffers::new(&file);
    images
        .chunks_exact(size)
        .map(|pixels| {
            let logits = buffers.logits(&file, pixels, Kernels::Reference);
            logits.map(<[i32]>::to_vec)
        })
        .collect()
}

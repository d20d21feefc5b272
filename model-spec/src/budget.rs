//! What the int8 form of a [`Spec`] costs on a microcontroller: flash for its format-3
//! model.bin, RAM for an inference through the fused stages, against a small table of boards.
//!
//! Computed from the spec's int8 [`Plan`], the operations a format-3 model.bin stores
//! (`docs/model-format.md`): the weights, per-channel parameters and RAM are exact; the rest of
//! the file is exact but for the varints of the output zero points (see [`Budget::header`]).

pub use crate::boards::{board, Board, BOARDS};
use crate::plan::{wire_fields, OpShape, Plan};
use crate::spec::Spec;
use anyhow::Result;
use infer_core::stack::Pixels;

/// Bytes per output channel of a conv/dense layer in model.bin: f32 weight scale, i32 bias,
/// i32 multiplier, i8 shift (`infer_core::format::ChannelParams`).
pub const CHANNEL_BYTES: usize = 13;
/// Bytes of an output zero point in the file at most: a zigzag varint, two bytes unless the
/// zero point lies in −64..=63.
pub const ZERO_POINT_MAX_BYTES: usize = 2;

/// Flash and RAM of the int8 model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Budget {
    /// int8 weights (batch norm folded into the preceding layer).
    pub weights: usize,
    /// Per-channel scales, biases, multipliers and shifts.
    pub channel_params: usize,
    /// The rest of model.bin: magic, version, shapes, quantization parameters, length
    /// prefixes and CRC-32. Exact except each conv/dense output zero point, counted at its
    /// longest ([`ZERO_POINT_MAX_BYTES`]): a real file is smaller by one byte per output zero
    /// point in −64..=63.
    pub header: usize,
    /// Flash total: the size of model.bin (at most; see [`Budget::header`]).
    pub flash: usize,
    /// The int8 input image, held by the caller for the whole inference.
    pub input: usize,
    /// The activation arena ([`Plan::arena`]): the outputs of the fused stages
    /// ([`Plan::stages`]) but the last, those live at once side by side.
    pub activations: usize,
    /// The stages' patch buffer (packed patch and working memory, [`Plan::patch_words`] u32
    /// words), in bytes.
    pub patch: usize,
    /// Scratch a fused kernel keeps on its stack ([`Plan::stack_bytes`]).
    pub kernel_stack: usize,
    /// The wide (i32) logits, one per class, 4 bytes each (as many as f32 probabilities
    /// computed from them).
    pub scratch: usize,
    /// RAM total for an inference through the stages: input + activations + patch + kernel
    /// scratch + logits (data only, not the stack frames).
    pub ram: usize,
}

impl Budget {
    /// The budget of `spec` in a build computing `pixels` conv pixels at once.
    ///
    /// # Errors
    /// If the spec has no int8 plan ([`Plan::of`]: a batch norm that cannot be folded).
    pub fn of(spec: &Spec, pixels: Pixels) -> Result<Self> {
        Ok(Self::of_plan(&Plan::of(spec)?, pixels))
    }

    /// The budget of the int8 operations `plan` in a build computing `pixels` conv pixels
    /// at once.
    pub fn of_plan(plan: &Plan, pixels: Pixels) -> Self {
        let weights = plan.weights();
        let channel_params = plan.channels() * CHANNEL_BYTES;
        let header = header_bytes(plan);
        let input = plan.input_len();
        let activations = plan.arena();
        let patch = plan.patch_words(pixels) * 4;
        let kernel_stack = plan.stack_bytes();
        let scratch = plan.classes() * 4;
        Self {
            weights,
            channel_params,
            header,
            flash: weights + channel_params + header,
            input,
            activations,
            patch,
            kernel_stack,
            scratch,
            ram: input + activations + patch + kernel_stack + scratch,
        }
    }
}

/// Bytes of a postcard varint (LEB128) of `v`.
fn varint(v: usize) -> usize {
    let mut bytes = 1;
    let mut rest = v >> 7;
    while rest > 0 {
        bytes += 1;
        rest >>= 7;
    }
    bytes
}

/// Everything in a format-3 model.bin of `plan` but the weight and per-channel arrays, in the
/// order the fields are written (`infer_core::stack::format`); output zero points at their
/// longest.
fn header_bytes(plan: &Plan) -> usize {
    // An f32 scale and an i32 zero point.
    let quant = 4 + ZERO_POINT_MAX_BYTES;
    // Length prefixes of the five arrays, then the output quantization.
    let channel_params = |weights: usize, channels: usize| {
        varint(weights) + 3 * varint(4 * channels) + varint(channels) + quant
    };
    let (h, w, c) = plan.input;
    // magic, fixed-width version, input shape and quantization, operation count … CRC-32.
    let mut bytes = 4 + 2 + varint(h) + varint(w) + varint(c) + quant + varint(plan.ops.len()) + 4;
    for op in &plan.ops {
        // The operation's enum tag, its shape fields, then for conv the padding tag and the
        // ReLU flag (one byte each), for dense the ReLU flag, for a depthwise conv or an
        // average pool the padding tag and the clamp's two i8 (up to 2 bytes each), and
        // their arrays.
        let fields: usize = wire_fields(&op.kind).into_iter().map(varint).sum();
        let flags = match op.kind {
            OpShape::Conv2d { .. } => 2,
            OpShape::MaxPool2d { .. } => 0,
            OpShape::Dense { .. } => 1,
            OpShape::DepthwiseConv2d { .. } | OpShape::AvgPool2d { .. } => 5,
            // Left shift, three multipliers and shifts, the output quantization, the clamp.
            OpShape::Add { .. } => 1 + 3 * (5 + 1) + quant + 2,
            OpShape::Branch { .. } => 0,
        };
        let arrays = match op.kind.channels() {
            0 => 0,
            channels => channel_params(op.kind.weights(), channels),
        };
        bytes += 1 + fields + flags + arrays;
    }
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tutorial_matches_format_v1s_arrays_and_its_layer_buffers() {
        let b = Budget::of(&Spec::tutorial(), Pixels::Four).unwrap();
        assert_eq!(b.weights, 32 * 9 + 10 * 5408);
        assert_eq!(b.channel_params, 42 * 13);
        // One fused stage (conv + pool + dense on the one-channel 3×3 fast path): no
        // buffers, no patch, the fast path's 1,192 bytes of scratch (36 per filter, 4 per
        // unit), the input and 40 bytes of wide logits.
        assert_eq!(b.activations, 0);
        assert_eq!(b.patch, 0);
        assert_eq!(b.kernel_stack, 1_192);
        assert_eq!(b.ram, 784 + 1_192 + 40);
        // 10 envelope (magic, version, CRC) + 9 input + 1 op count; conv: tag + 6 shapes +
        // padding + relu = 9, prefixes 2 + 3·2 + 1, quantization 6; pool: 5; dense: tag +
        // inputs (2) + units + relu = 5, prefixes 3 + 3·1 + 1, quantization 6.
        assert_eq!(b.header, 10 + 9 + 1 + (9 + 9 + 6) + 5 + (5 + 7 + 6));
        let full_spec = Spec::load("tutorial-full").unwrap();
        let full = Budget::of(&full_spec, Pixels::Four).unwrap();
        assert_eq!(full.weights, 1_199_882 - 32 - 64 - 128 - 10);
        assert_eq!(full.channel_params, (32 + 64 + 128 + 10) * 13);
        // Stages: conv 1 → A (a ring of 4 rows, conv 2 running with it); conv 2 + pool +
        // dense (streamed) → B; dense → the logits: the two side by side in the arena.
        assert_eq!(full.activations, 4 * 26 * 32 + 128);
        // Each conv's working memory ends with one offset term per filter; the first's
        // (one channel, no pool) then with its background quad's values, a word per filter.
        assert_eq!(
            full.patch,
            ((4 * 5 + 4 * 32 + 32 + 32) + (4 * 144 + 64 + 128 + 64)) * 4
        );
        assert_eq!(full.ram, 784 + full.activations + full.patch + 40);
        // The small-RAM build: one pixel's patch and values, no offset terms.
        let small = Budget::of(&full_spec, Pixels::One).unwrap();
        assert_eq!(small.patch, ((5 + 32) + (144 + 64 + 128)) * 4);
        assert_eq!(small.ram, full.ram - full.patch + small.patch);
        assert!(full.flash < board("mps2-an386").unwrap().flash);
        assert!(full.flash > board("microbit").unwrap().flash);
    }

    #[test]
    fn varints_grow_every_seven_bits() {
        assert_eq!(varint(0), 1);
        assert_eq!(varint(127), 1);
        assert_eq!(varint(128), 2);
        assert_eq!(varint(16_383), 2);
        assert_eq!(varint(16_384), 3);
    }

    #[test]
    fn a_batch_norm_after_a_relu_has_no_budget() {
        let text = Spec::tutorial().to_text().replace(
            "[[layer]]\ntype = \"maxpool2d\"",
            "[[layer]]\ntype = \"batchnorm\"\n\n[[layer]]\ntype = \"maxpool2d\"",
        );
        let spec = Spec::parse(&text).unwrap();
        assert!(Budget::of(&spec, Pixels::Four).is_err(), "{text}");
    }
}

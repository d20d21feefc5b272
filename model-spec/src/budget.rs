//! What the int8 form of a [`Spec`] costs on a microcontroller: flash for the weights, RAM for
//! a layer-by-layer inference, against a small table of boards.
//!
//! These are estimates from the spec alone: the model.bin format for generic stacks (format v2)
//! is not written yet, so its header is estimated, not measured.

use crate::spec::{LayerSpec, Spec};

/// A board `--board` knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Board {
    /// Name as QEMU's `-machine` knows it (`microbit` included).
    pub name: &'static str,
    /// The CPU.
    pub core: &'static str,
    /// Flash (or the code memory QEMU maps) in bytes.
    pub flash: usize,
    /// RAM in bytes.
    pub ram: usize,
}

const MIB: usize = 1024 * 1024;

/// The boards, as QEMU 7.2 models them (`docs/system/arm/mps2.rst`, `microbit.rst`); the MPS2
/// figures are the 4 MiB code SSRAM and 4 MiB data SSRAM.
pub const BOARDS: [Board; 4] = [
    Board {
        name: "mps2-an385",
        core: "Cortex-M3",
        flash: 4 * MIB,
        ram: 4 * MIB,
    },
    Board {
        name: "mps2-an386",
        core: "Cortex-M4F",
        flash: 4 * MIB,
        ram: 4 * MIB,
    },
    Board {
        name: "mps2-an500",
        core: "Cortex-M7",
        flash: 4 * MIB,
        ram: 4 * MIB,
    },
    Board {
        name: "microbit",
        core: "Cortex-M0 (nRF51822)",
        flash: 256 * 1024,
        ram: 16 * 1024,
    },
];

/// The board called `name`.
pub fn board(name: &str) -> Option<Board> {
    BOARDS.iter().copied().find(|b| b.name == name)
}

/// Bytes per output channel of a conv/dense layer in model.bin: f32 weight scale, i32 bias,
/// i32 multiplier, i8 shift (as format v1).
pub const CHANNEL_BYTES: usize = 13;
/// Estimated fixed header (magic, version, CRC, input quantization).
pub const HEADER_BYTES: usize = 32;
/// Estimated header per conv/dense layer (kind, shapes, zero points, length prefixes).
pub const LAYER_HEADER_BYTES: usize = 24;

/// Flash and RAM of the int8 model.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Budget {
    /// int8 weights (batch norm folded into the preceding layer).
    pub weights: usize,
    /// Per-channel scales, biases, multipliers and shifts.
    pub channel_params: usize,
    /// Header estimate.
    pub header: usize,
    /// Flash total.
    pub flash: usize,
    /// The int8 input image, held by the caller for the whole inference.
    pub input: usize,
    /// Largest pair of consecutive int8 layer outputs (the two buffers a layer-by-layer
    /// inference ping-pongs between; the first layer reads the input instead).
    pub activations: usize,
    /// f32 class probabilities computed from the int8 logits.
    pub scratch: usize,
    /// RAM total for a layer-by-layer inference: input + activations + scratch (data only, not
    /// the stack frames).
    pub ram: usize,
}

impl Budget {
    /// The budget of `spec`.
    pub fn of(spec: &Spec) -> Self {
        let mut weights = 0;
        let mut channel_params = 0;
        let mut header = HEADER_BYTES;
        let mut activations = 0;
        let mut previous = 0;
        for (i, layer) in spec.layers.iter().enumerate() {
            let out = spec.shapes[i].len();
            match layer {
                LayerSpec::Conv2d { filters, .. } => {
                    weights += spec.params_of(i).0 - filters;
                    channel_params += filters * CHANNEL_BYTES;
                    header += LAYER_HEADER_BYTES;
                }
                LayerSpec::Dense { units, .. } => {
                    weights += spec.params_of(i).0 - units;
                    channel_params += units * CHANNEL_BYTES;
                    header += LAYER_HEADER_BYTES;
                }
                // Pooling computes into a new buffer; dropout, flatten and folded batch norm
                // cost nothing at inference.
                LayerSpec::MaxPool2d { .. } => {}
                LayerSpec::Dropout { .. } | LayerSpec::Flatten | LayerSpec::BatchNorm => continue,
            }
            activations = activations.max(previous + out);
            previous = out;
        }
        let scratch = spec.classes() * 4;
        let flash = weights + channel_params + header;
        Self {
            weights,
            channel_params,
            header,
            flash,
            input: spec.input.len(),
            activations,
            scratch,
            ram: spec.input.len() + activations + scratch,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tutorial_matches_format_v1s_weights_and_its_layer_buffers() {
        let b = Budget::of(&Spec::tutorial());
        assert_eq!(b.weights, 32 * 9 + 10 * 5408);
        assert_eq!(b.channel_params, 42 * 13);
        // conv out + pool out, as infer-core's TutorialScratch; with the input it is the
        // 27,824 bytes `summary` reports for `infer_layers`, plus 40 for the probabilities.
        assert_eq!(b.activations, 26 * 26 * 32 + 13 * 13 * 32);
        assert_eq!(b.ram, 27_824 + 40);
        let full = Budget::of(&Spec::load("tutorial-full").unwrap());
        assert_eq!(full.weights, 1_199_882 - 32 - 64 - 128 - 10);
        assert_eq!(full.activations, 26 * 26 * 32 + 24 * 24 * 64);
        assert!(full.flash < board("mps2-an386").unwrap().flash);
        assert!(full.flash > board("microbit").unwrap().flash);
    }
}

//! The Keras tutorial's network: [`TutorialNet`] (model.bin format 1) with the
//! fused streaming kernels, and its instructions per layer.
//!
//! The profile runs the streaming inference stage by stage, with the SysTick
//! counter read between stages: `TutorialNet::infer` never materialises a
//! layer's output, so its layers cannot be timed from outside.
//! [`Profile::add`] runs the same stages
//! ([`infer_core::TutorialNet::stream`]) with a counter read after each one:
//! for every pooled position the conv + ReLU + max pool stage, then the dense
//! stage. Consecutive reads share their endpoints, so every instruction falls
//! in exactly one interval; each interval also holds one counter read, whose
//! cost ([`TickCounter::overhead_insns`]) is subtracted.

use cortex_m_semihosting::hprintln;
use infer_core::kernels::fused::NATIVE_PAIRED;
use infer_core::{pixels_to_input, Error, TutorialNet, TutorialStreamScratch};

use crate::cycles::{self, TickCounter};
use crate::model;

/// The network.
pub type Network = TutorialNet<'static>;

/// The network's input.
pub type Input = [[[i8; 1]; 28]; 28];

/// The working memory the digit loop keeps: none, the streaming inference
/// keeps its own 1.2 KB on the stack (so `infer_stack_bytes` is all the RAM it
/// needs).
pub struct Scratch;

impl Scratch {
    /// Nothing.
    pub const fn new() -> Self {
        Self
    }
}

/// Loads the embedded model (`build/main.rs` has checked it loads), out of
/// line so that the decoding's stack is free again before the inference runs.
///
/// # Errors
/// As [`TutorialNet::from_bytes`].
#[inline(never)]
pub fn load() -> Result<Network, Error> {
    TutorialNet::from_bytes(model::MODEL)
}

/// An all-zero input, to fill with [`fill_input`].
pub const ZERO_INPUT: Input = [[[0; 1]; 28]; 28];

/// Writes the network's input for 8-bit pixels.
pub fn fill_input(input: &mut Input, pixels: &[[u8; 28]; 28]) {
    *input = pixels_to_input(pixels);
}

/// One inference, kept out of line so that its stack use can be measured and
/// its code found in the ELF (`cargo xtask bench-mcu` sizes this function and
/// everything it calls).
#[inline(never)]
pub fn infer_digit(net: &Network, input: &Input, _scratch: &mut Scratch) -> [i8; 10] {
    net.infer(input).logits
}

/// Prints nothing: the tutorial's network is the default (a spec'd network
/// prints a `network:` line here).
pub fn print_network() {}

/// Prints the `memory:` line (the loading's stack is not part of it).
pub fn print_memory(infer_stack_bytes: usize, _load_stack_bytes: usize, static_ram_bytes: usize) {
    hprintln!(
        "memory: infer_stack_bytes={} static_ram_bytes={}",
        infer_stack_bytes,
        static_ram_bytes
    );
}

/// Ticks per stage, summed over the profiled inferences.
#[derive(Default)]
pub struct Profile {
    /// Deriving the per-filter parameters and starting the accumulators.
    prepare: u64,
    /// Conv + ReLU + 2×2 max pool (fused), every position.
    conv_relu_pool: u64,
    /// Dense accumulation, every position.
    dense: u64,
    /// Requantizing the dense accumulators into the logits.
    output: u64,
    /// `Output::class` (argmax).
    argmax: u64,
    /// Counter-read intervals per stage of one inference: positions.
    positions: u64,
    /// Inferences profiled.
    runs: u64,
}

/// Mean instructions per stage, counter reads subtracted.
struct LayerInsns {
    /// See [`Profile`].
    prepare: u64,
    /// See [`Profile`].
    conv_relu_pool: u64,
    /// See [`Profile`].
    dense: u64,
    /// See [`Profile`].
    output: u64,
    /// See [`Profile`].
    argmax: u64,
}

impl Profile {
    /// Profiles one inference on `input`; returns its class.
    #[inline(never)]
    pub fn add(
        &mut self,
        counter: &TickCounter,
        net: &Network,
        input: &Input,
        _scratch: &mut Scratch,
    ) -> usize {
        let mut scratch = TutorialStreamScratch::new();
        let mut logits = [0i8; 10];
        let start = counter.now();
        let Some(mut stream) = net.stream::<NATIVE_PAIRED>(input, &mut scratch) else {
            return usize::MAX;
        };
        let mut last = counter.now();
        self.prepare += last - start;
        let (rows, cols) = stream.pooled_shape();
        for row in 0..rows {
            for col in 0..cols {
                stream.conv_pool(row, col);
                let conv_end = counter.now();
                stream.dense(row, col);
                let dense_end = counter.now();
                self.conv_relu_pool += conv_end - last;
                self.dense += dense_end - conv_end;
                last = dense_end;
            }
        }
        stream.finish(&mut logits);
        let finished = counter.now();
        let class = net.output(logits).class();
        let end = counter.now();
        self.output += finished - last;
        self.argmax += end - finished;
        self.positions = (rows * cols) as u64;
        self.runs += 1;
        class
    }

    /// Prints the `layers:` line: the mean instructions per stage.
    pub fn print(&self, counter: &TickCounter) {
        let layers = self.mean(counter);
        hprintln!(
            "layers: prepare={} conv_relu_pool={} dense={} output={} argmax={}",
            layers.prepare,
            layers.conv_relu_pool,
            layers.dense,
            layers.output,
            layers.argmax
        );
    }

    /// Mean instructions per stage and inference.
    fn mean(&self, counter: &TickCounter) -> LayerInsns {
        let runs = self.runs.max(1);
        let overhead = counter.overhead_insns();
        let per_run = |ticks: u64, reads: u64| {
            (cycles::ticks_to_insns(ticks) / runs).saturating_sub(reads * overhead)
        };
        LayerInsns {
            prepare: per_run(self.prepare, 1),
            conv_relu_pool: per_run(self.conv_relu_pool, self.positions),
            dense: per_run(self.dense, self.positions),
            output: per_run(self.output, 1),
            argmax: per_run(self.argmax, 1),
        }
    }
}

//! Instructions per layer: the streaming inference run stage by stage, with
//! the SysTick counter read between stages.
//!
//! `TutorialNet::infer` never materialises a layer's output, so its layers
//! cannot be timed from outside. [`Profile::add`] runs the same stages
//! ([`infer_core::TutorialNet::stream`]) with a counter read after each one:
//! for every pooled position the conv + ReLU + max pool stage, then the dense
//! stage. Consecutive reads share their endpoints, so every instruction falls
//! in exactly one interval; each interval also holds one counter read, whose
//! cost ([`TickCounter::overhead_insns`]) is subtracted.

use infer_core::kernels::fused::NATIVE_PAIRED;
use infer_core::{TutorialNet, TutorialStreamScratch};

use crate::cycles::{self, TickCounter};

/// The input of one inference.
type Input = [[[i8; 1]; 28]; 28];

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
pub struct LayerInsns {
    /// See [`Profile`].
    pub prepare: u64,
    /// See [`Profile`].
    pub conv_relu_pool: u64,
    /// See [`Profile`].
    pub dense: u64,
    /// See [`Profile`].
    pub output: u64,
    /// See [`Profile`].
    pub argmax: u64,
}

impl Profile {
    /// Profiles one inference on `input`; returns its class.
    #[inline(never)]
    pub fn add(&mut self, counter: &TickCounter, net: &TutorialNet<'_>, input: &Input) -> usize {
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

    /// Mean instructions per stage and inference.
    pub fn mean(&self, counter: &TickCounter) -> LayerInsns {
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

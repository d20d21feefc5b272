//! The stage plan of a format-2 stack: the one place where its operation list is rewritten
//! into what the fast engine runs. [`plan`] groups consecutive operations into stages,
//! wherever the pattern occurs:
//!
//! * **conv → max pool**: one stage writes the pooled map, never the conv map. With a
//!   monotonic requantization (every multiplier ≥ 0, no left shift; then requantization, the
//!   zero-point addition and the ReLU clamp are all non-decreasing, so
//!   `max(f(a), f(b)) = f(max(a, b))`) it keeps the max of each window's int32 accumulators
//!   and requantizes once; otherwise it requantizes every window, then takes the max.
//! * **conv / pool (→ pool) → dense**: the dense layer accumulates each position's values as
//!   they are produced; no flattened buffer exists. Positions whose values are all at the
//!   dense layer's input zero point add nothing and are skipped.
//! * **background patches**: a conv window whose input patch is all at the input zero point
//!   (padding included) sums to 0; its filters' dot products are skipped.
//! * **the first layer's one-channel 3×3 conv → 2×2 pool → last dense**: the fused kernel
//!   [`crate::kernels::fused::Stream3x3`] ([`Kernel::Stream3x3`]) in the typed layers.
//! * **conv / pool / dense → add**, where the add's other operand dies at the add (and is
//!   neither the model's input nor what the stage reads): the stage adds each value it
//!   computes to the other operand's at that index and writes the sum over it
//!   ([`Stage::add`], [`add_in_place`]); the stage's own output is never held.
//! * **a depthwise conv, an average pool, an add or a branch** (the last two only in
//!   imported models) is otherwise a stage of its own ([`Stage::alone`]), computed by its
//!   kernel ([`run_alone`], [`run_add`]; a branch computes nothing).
//! * **buffers**: each stage's output goes to the lowest-numbered buffer whose tensor is
//!   dead (read by no later stage) and which the stage does not read, an add in place to
//!   its other operand's ([`assign_buffers`]): a chain ping-pongs between buffers 0 and 1,
//!   and a tensor that an add or a branch reads later keeps its buffer until then (at most
//!   [`MAX_BUFFERS`] tensors live at once). Every tensor then has an offset in one arena,
//!   where those live at the same time do not overlap ([`BufferPlan::arena`]). No stage
//!   fuses past a tensor that a later add or branch reads, nor chains through a ring.
//!
//! The plan is made from [`OpShape`]s only, so the firmware's build script (through
//! `model_spec`) and the RAM accounting see the same stages as [`super::run()`] and the typed
//! layers. [`run_general`] computes any stage (any geometry and quantization), bit for bit
//! as the unfused reference kernels do (tested on random geometries and quantizations).

use super::dense::{dense_direct, dense_with_sums, dense_words, finish_block};
use super::facts::{self, holds, part, Facts, KnownFacts};
use super::format::{input_offset, Op, StackFile, MAX_OPS};
use super::prepared::prepared_dense;
pub use super::shape::OpShape;
use crate::kernels::add::{AddParams, AddTables, ADD_SCRATCH_WORDS};
use crate::kernels::conv::{
    gather_groups, gather_pair_patch, gather_patch, gather_pixel_patch, gather_quad_3x3,
    gather_quad_i8, pack_run, ConvGeometry, Padding, PatchSlot,
};
use crate::kernels::depthwise::in_place_fits;
use crate::kernels::dot::{
    dot_i8_offset, dot_packed, dot_packed2, dot_packed4, four_filters, PatchWords,
};
use crate::kernels::dsp::{
    copy_bytes, dense_quads_widened, dense_rows, gather_3x3_run, int8_of_words,
    quad_filters_requant_rows, quad_filters_rows, widened_fit, DenseRows, QuadConv,
};
use crate::kernels::fused::{fast_requant, StreamLayers};
use crate::kernels::mve::{
    copy_words, dense_rows_i8, offset_terms, put_3x3_run_i8, quad_filters_i8, DenseRowsI8,
    QuadConvI8, TERMS_ALONE,
};
use crate::kernels::pairs::{pair_filters, PairConv, PAIRED};
use crate::kernels::words::{dot4_words, word_weights_len, WORD_WEIGHTS};
use crate::kernels::{all_zero, narrow, put_sum, ChannelRequant, MapRows};
use crate::probe::Probe;
use core::ops::Range;

/// How a stage is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kernel {
    /// [`run_general`]: any stage.
    General,
    /// One-channel 3×3 stride-1 valid conv → 2×2 max pool, then nothing (the pooled map is
    /// kept) or the network's last dense layer: [`crate::kernels::fused::Stream3x3`] in the
    /// typed layers (whose shapes are const generics); [`super::run()`] computes it with
    /// [`run_general`].
    Stream3x3,
}

/// Consecutive operations computed as one: `first` and then, in this order, a conv (if
/// `conv`), a max pool (if `pool`) and a dense layer (if `dense`); at least one of them. Or
/// a depthwise conv or an average pool alone (`alone`), by its own kernel ([`run_alone`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stage {
    /// Index of the stage's first operation.
    pub first: usize,
    /// Starts with a convolution.
    pub conv: bool,
    /// Has a max pool (after the conv if any).
    pub pool: bool,
    /// Ends with a dense layer (streamed if the stage has a conv or pool).
    pub dense: bool,
    /// A depthwise conv, an average pool, an add or a branch: the stage's only operation.
    pub alone: bool,
    /// Ends with an add (after its conv, pool or dense layer) computed in place: each
    /// output value is added to the value of the add's other operand at its index, which
    /// that tensor's storage then holds ([`add_in_place`]).
    pub add: bool,
    /// How it is computed.
    pub kernel: Kernel,
    /// Rows of the ring buffer through which it reads the previous stage's output, the two
    /// run as one ([`run_chain`]); 0: it reads the whole map.
    pub ring_in: usize,
    /// Rows of the ring buffer it writes its output into, for the next stage's
    /// [`Stage::ring_in`]; 0: it writes the whole map.
    pub ring_out: usize,
    /// Writes its output over its input, which dies there ([`overwrites_input`]): the
    /// two tensors share one storage.
    pub over_input: bool,
}

/// The stages of a stack, first to last.
pub type Stages = heapless::Vec<Stage, MAX_OPS>;

impl Stage {
    /// Operations in the stage.
    pub const fn ops(&self) -> usize {
        self.conv as usize
            + self.pool as usize
            + self.dense as usize
            + self.alone as usize
            + self.add as usize
    }

    /// Index of the stage's last operation.
    pub const fn last(&self) -> usize {
        (self.first + self.ops()).saturating_sub(1)
    }

    /// Index of its dense layer, if it has one (the last operation but an add).
    const fn dense_index(&self) -> usize {
        self.last().saturating_sub(self.add as usize)
    }

    /// Values the stage writes (its last operation's; with [`Stage::ring_out`], the rows of
    /// its ring).
    pub fn out_len(&self, shapes: &[OpShape]) -> usize {
        let Some(last) = shapes.get(self.last()) else {
            return 0;
        };
        if self.ring_out == 0 {
            return last.out_len();
        }
        let (h, w, c) = last.out_hwc();
        self.ring_out.min(h) * w * c
    }

    /// The stage before it, whose output it reads through a ring ([`Stage::ring_in`]).
    fn producer(&self, shapes: &[OpShape]) -> Option<Stage> {
        if self.ring_in == 0 {
            return None;
        }
        plan(shapes)
            .iter()
            .find(|s| s.first + s.ops() == self.first)
            .copied()
    }

    /// `(taps, channels)` of what the stage computes per position before its dense layer
    /// (taps 0 without a conv).
    fn taps_channels(&self, shapes: &[OpShape]) -> (usize, usize) {
        let first = shapes.get(self.first);
        let taps = if self.conv {
            first.map_or(0, OpShape::taps)
        } else {
            0
        };
        let channels = match (self.conv || self.pool, first) {
            (true, Some(s)) => s.out_hwc().2,
            _ => 0,
        };
        (taps, channels)
    }

    /// Words of the `patch` buffer the stage's kernel takes (the packed patch and the
    /// working memory of [`run_general`] computing `pixels` conv pixels at once; 0 for
    /// [`Kernel::Stream3x3`], whose working memory is on its stack, [`Stage::stack_bytes`]).
    pub fn patch_words(&self, shapes: &[OpShape], pixels: Pixels) -> usize {
        let chained = self
            .producer(shapes)
            .map_or(0, |p| p.patch_words(shapes, pixels));
        if self.kernel == Kernel::Stream3x3 {
            return chained;
        }
        self.own_words(shapes, pixels) + chained
    }

    /// Words of the `patch` buffer [`run_general`] takes for the stage computing `pixels`
    /// conv pixels at once, whatever its [`Kernel`] ([`super::run()`] computes every stage
    /// with it).
    pub fn general_words(&self, shapes: &[OpShape], pixels: Pixels) -> usize {
        let chained = self
            .producer(shapes)
            .map_or(0, |p| p.general_words(shapes, pixels));
        self.own_words(shapes, pixels) + chained
    }

    /// [`Stage::general_words`] of the stage alone (not the one it runs with): with an add
    /// in place, its tables after the rest ([`ADD_SCRATCH_WORDS`]).
    fn own_words(&self, shapes: &[OpShape], pixels: Pixels) -> usize {
        let tables = if self.add { ADD_SCRATCH_WORDS } else { 0 };
        self.compute_words(shapes, pixels) + tables + self.over_input_words(shapes)
    }

    /// Words of a conv over its own input ([`Stage::over_input`]) for the chunk of input
    /// it copies ([`run_pointwise_in_place`]); 0 for other stages.
    pub fn over_input_words(&self, shapes: &[OpShape]) -> usize {
        match shapes.get(self.first) {
            Some(&OpShape::Conv2d { geometry: g, .. }) if self.over_input => {
                pointwise_chunk_words(g.in_h, g.in_w, g.in_c)
            }
            _ => 0,
        }
    }

    /// [`Stage::own_words`] but an add's tables.
    fn compute_words(&self, shapes: &[OpShape], pixels: Pixels) -> usize {
        if self.alone {
            return shapes.get(self.first).map_or(0, OpShape::alone_words);
        }
        if !self.conv && !self.pool {
            let dense = shapes.get(self.first);
            let (inputs, units) = dense.map_or((0, 0), |d| (d.in_len(), d.units()));
            return dense_words(inputs, units, pixels);
        }
        let (taps, channels) = self.taps_channels(shapes);
        let one_channel = matches!(
            shapes.get(self.first),
            Some(OpShape::Conv2d { geometry, .. }) if self.conv && geometry.in_c == 1
        );
        let (inputs, units) = match shapes.get(self.dense_index()) {
            Some(dense) if self.dense => (dense.in_len(), dense.units()),
            _ => (0, 0),
        };
        let pool = match shapes.get(self.first + usize::from(self.conv)) {
            Some(&OpShape::MaxPool2d { pool, .. }) if self.pool => pool,
            _ => 1,
        };
        general_words((taps, one_channel), channels, (inputs, units), pool, pixels)
    }

    /// Bytes of working memory the stage's kernel keeps on its stack: the
    /// [`crate::kernels::fused::StreamScratch`] of [`Kernel::Stream3x3`].
    pub fn stack_bytes(&self, shapes: &[OpShape]) -> usize {
        if self.kernel != Kernel::Stream3x3 {
            // A stage run with the one before it keeps that one's scratch while it runs.
            return self.producer(shapes).map_or(0, |p| p.stack_bytes(shapes));
        }
        let (_, filters) = self.taps_channels(shapes);
        let units = shapes.get(self.dense_index()).map_or(0, OpShape::units);
        stream3x3_bytes(filters, units)
    }
}

/// Bytes of [`crate::kernels::fused::StreamScratch`] for `filters` and `units`.
pub const fn stream3x3_bytes(filters: usize, units: usize) -> usize {
    36 * filters + 4 * units
}

/// Words of `patch` that [`run_general`] needs for a stage with a conv of `taps` values per
/// patch (0 without a conv), a max pool of window side `pool` (1 without one), `channels`
/// values per position before the dense layer, and a dense layer of `inputs` inputs and
/// `units` outputs (0 without one), computing `pixels` conv pixels at once: the packed
/// patch (the conv's patch of `pixels` pixels, or the position's values for the dense
/// layer), one word per channel of each position computed at once (with four pixels, four
/// positions for a conv without a pool), one per unit, with four pixels and a conv one per
/// filter (its offset term for an int8 patch, [`offset_terms`]), and the dense layer's
/// whole input where the stage holds it ([`held_words`]).
pub const fn general_words(
    (taps, one_channel): (usize, bool),
    channels: usize,
    (inputs, units): (usize, usize),
    pool: usize,
    pixels: Pixels,
) -> usize {
    if channels == 0 {
        // A dense layer alone needs nothing.
        return 0;
    }
    let conv = pixels.count() * PatchWords::words(taps);
    let values = if units > 0 {
        PatchWords::words(channels)
    } else {
        0
    };
    let patch = if conv > values { conv } else { values };
    patch
        + positions_at_once(taps, pool, pixels) * channels
        + units
        + term_words(taps, channels, pixels)
        + held_words(inputs, units, pixels)
        + background_words(one_channel, channels, pool, pixels)
}

/// Largest dense input (int8 values) a stage computing four pixels at once holds whole
/// rather than streams ([`held_words`]).
const HELD_INPUTS: usize = 1024;

/// Fewest units of a dense layer whose input a stage streams whatever its size.
const STREAMED_UNITS: usize = 16;

/// Words in which a stage computing `pixels` conv pixels at once keeps its dense layer's
/// whole input (`inputs` int8 values, `units` outputs), to compute the layer once over it
/// at the end (as a dense layer alone) rather than position by position as the values
/// come: 0 where it streams them. The build's trade between RAM and instructions again: a
/// streamed layer takes each position's values as they come, a call and the values'
/// packing per position, which a layer of few units does not amortize. Two-blocks' 800 →
/// 10 layer (25 positions of 32 values) on the Cortex-M4F: streamed 1.96 instructions per
/// multiply-accumulate, held 0.93 for 800 bytes more. A small-RAM build
/// ([`Pixels::One`]) streams every layer; the default one holds inputs of at most
/// `HELD_INPUTS` (1,024) values for layers of fewer than `STREAMED_UNITS` (16) units.
/// (The unit tests hold the input of every other layer, by its sizes' parity, so that
/// their random stacks take both ways.)
pub const fn held_words(inputs: usize, units: usize, pixels: Pixels) -> usize {
    let small = if cfg!(test) {
        (inputs + units) % 2 == 0
    } else {
        units < STREAMED_UNITS && inputs <= HELD_INPUTS
    };
    if matches!(pixels, Pixels::Four) && units > 0 && small {
        inputs.div_ceil(4)
    } else {
        0
    }
}

/// Words of a stage's background values ([`StageRun::background`]) in its working memory:
/// four positions' bytes, a word per channel, where its conv's quads may find a background
/// (a conv of one input channel, four pixels at once, no pool).
const fn background_words(
    one_channel: bool,
    channels: usize,
    pool: usize,
    pixels: Pixels,
) -> usize {
    if one_channel && pool <= 1 && matches!(pixels, Pixels::Four) {
        channels
    } else {
        0
    }
}

/// Words of a conv's offset terms ([`offset_terms`]) in its working memory: one per filter
/// where its quads may go through int8 patches (four pixels at once,
/// [`int8_quads_possible`] on some core).
const fn term_words(taps: usize, channels: usize, pixels: Pixels) -> usize {
    if matches!(pixels, Pixels::Four) && int8_patch_fits(taps) {
        channels
    } else {
        0
    }
}

/// Conv pixels computed at once through a quad patch ([`quad_filters`]).
const QUAD: usize = 4;

/// The trade between RAM and instructions that a build picks: how many conv pixels the
/// engine computes at once where a core's kernels can take several (a quad patch on DSP and
/// MVE cores, a pair patch on the Cortex-M3). Four need about four times the patch memory
/// of one (and, on those cores, far fewer instructions); on the Cortex-M0 both compute one
/// pixel at a time. The working memory a stage is given decides: with [`general_words`] of
/// four pixels it computes four, with less one. The typed layers and the firmware take
/// [`Pixels::BUILT`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pixels {
    /// Four pixels at once: fewer instructions.
    Four,
    /// One pixel at a time: less RAM.
    One,
}

impl Pixels {
    /// This build's choice: [`Pixels::One`] with infer-core's feature `small-ram` or where
    /// the kernels take one pixel at a time anyway (the Cortex-M0, the host outside the
    /// unit tests), else [`Pixels::Four`].
    pub const BUILT: Self = if cfg!(feature = "small-ram") || !(QUAD_PIXELS || PAIR_PIXELS) {
        Self::One
    } else {
        Self::Four
    };

    /// The number of pixels.
    pub const fn count(self) -> usize {
        match self {
            Self::Four => QUAD,
            Self::One => 1,
        }
    }

    /// The name the build option and reports use: `fast` (four) or `small-ram` (one).
    pub const fn name(self) -> &'static str {
        match self {
            Self::Four => "fast",
            Self::One => "small-ram",
        }
    }
}

/// Whether conv pixels go four at a time through a quad patch ([`quad_filters`], which
/// needs a monotonic requantization): on DSP cores. Where
/// `SMLAD` is emulated the one-pixel loop is faster (the Cortex-M3 ran two-blocks in
/// 2,702,734 instructions with two pixels at a time, 2,211,781 one at a time). The unit
/// tests take the quads. The buffers are sized for quads on every core.
const QUAD_PIXELS: bool = cfg!(any(infer_core_dsp, test));

/// Whether a quad of conv pixels (the first at output position `pos`) goes through an
/// int8 patch ([`quad_filters_i8`]: the input values as they are, the offset folded into
/// the sums) rather than a widened one: on MVE cores, whose `VMLADAVA.S8` multiplies 16
/// int8 pairs at once (a patch of under 16 taps in one predicated block: the Cortex-M55 ran
/// tutorial-full's 9-tap first conv 52,000 instructions faster than through a widened
/// patch). The unit tests take both ways, alternating
/// between quads. `facts` may know [`facts::INT8_PATCH`].
fn int8_quads(g: &ConvGeometry, pos: usize, facts: Facts) -> bool {
    int8_quads_possible(g, facts) && (cfg!(infer_core_mve) || pos / QUAD % 2 == 1)
}

/// Whether any quad of a conv may go through an int8 patch ([`int8_quads`]): on MVE cores
/// (and in the unit tests), where the patch buffer, sized for a packed quad patch, holds
/// the int8 one ([`int8_patch_fits`]; `facts` may know it, [`facts::INT8_PATCH`]).
fn int8_quads_possible(g: &ConvGeometry, facts: Facts) -> bool {
    cfg!(any(infer_core_mve, test)) && holds(facts, facts::INT8_PATCH, || int8_patch_fits(g.taps()))
}

/// Whether a quad patch of `taps` packed words ([`PatchWords`], as the buffers are sized)
/// holds an int8 quad patch ([`QuadConvI8::patch_bytes`]): from 6 taps on.
const fn int8_patch_fits(taps: usize) -> bool {
    taps > 0 && QuadConvI8::patch_bytes(taps) <= 4 * QUAD * PatchWords::words(taps)
}

/// Whether a quad of conv pixels requantizes its sums itself (a ReLU's requantization up to
/// 127, or the whole int8 range's)
/// ([`quad_filters_requant_rows`]): on DSP cores without MVE (whose requantization takes four
/// channels at a time), and in the unit tests.
const REQUANT_QUADS: bool = cfg!(any(all(infer_core_dsp, not(infer_core_mve)), test));

/// Whether conv pixels go up to four at a time through a pair patch ([`pair_filters`], which
/// needs a monotonic requantization): on cores with `SMLAL` but no DSP extension (the
/// Cortex-M3 ran two-blocks in 2,067,094 instructions one pixel at a time, 1,019,394
/// through pair patches; tutorial-full in 45,601,968 and 21,028,580). The unit tests take
/// the pairs for every third block of four positions, the quads for the others.
const PAIR_PIXELS: bool = cfg!(any(
    all(infer_core_long_multiply, not(infer_core_dsp)),
    test
));

/// Output positions a stage computes at once: with four pixels at once, four for a conv
/// without a pool (its pixels go four at a time through [`quad_filters`]), else one.
const fn positions_at_once(taps: usize, pool: usize, pixels: Pixels) -> usize {
    if taps > 0 && pool <= 1 {
        pixels.count()
    } else {
        1
    }
}

/// Whether the stage of operations `first..` (conv, pool, and with `dense` the last
/// operation, a dense layer) matches [`Kernel::Stream3x3`].
fn stream3x3_fits(shapes: &[OpShape], first: usize, dense: bool) -> bool {
    let (Some(OpShape::Conv2d { geometry: g, .. }), Some(&OpShape::MaxPool2d { pool: 2, .. })) =
        (shapes.get(first), shapes.get(first + 1))
    else {
        return false;
    };
    (!dense || first + 3 == shapes.len())
        && g.in_c == 1
        && g.k_h == 3
        && g.k_w == 3
        && g.stride == 1
        && g.padding == Padding::Valid
}

/// Groups `shapes` into stages: each conv takes the max pool after it, and a conv, pool or
/// conv + pool takes the dense layer after it (see the module documentation).
pub fn plan(shapes: &[OpShape]) -> Stages {
    let mut stages = Stages::new();
    let mut i = 0;
    while i < shapes.len() {
        let first = i;
        // Operation `i` joins the stage if it is of the kind, and (after the first) the
        // tensor it reads, the one before's output, is read by no add or branch.
        let is = |i: usize, f: fn(&OpShape) -> bool| {
            shapes.get(i).is_some_and(f) && (i == first || !named_later(shapes, i))
        };
        let conv = is(i, |s| matches!(s, OpShape::Conv2d { .. }));
        i += usize::from(conv);
        let pool = is(i, |s| matches!(s, OpShape::MaxPool2d { .. }));
        i += usize::from(pool);
        let dense = is(i, |s| matches!(s, OpShape::Dense { .. }));
        i += usize::from(dense);
        // Anything else (a depthwise conv, an average pool) is a stage of its own.
        let alone = i == first;
        i += usize::from(alone);
        let kernel = if conv && pool && stream3x3_fits(shapes, first, dense) {
            Kernel::Stream3x3
        } else {
            Kernel::General
        };
        // An add after a conv, pool or dense stage, computed in place.
        let add = !alone && kernel == Kernel::General && add_in_place(shapes, first, i);
        i += usize::from(add);
        let mut stage = Stage {
            first,
            conv,
            pool,
            dense,
            alone,
            add,
            kernel,
            ring_in: 0,
            ring_out: 0,
            over_input: false,
        };
        // The second stage, if it starts with a conv or a pool, reads the first's output
        // through a ring of the rows one of its output rows needs, when the first writes a
        // map (no dense layer) and the ring is smaller. (The first reads the network's
        // input, so the second's output buffer is free while both run.)
        let stages_before = stages.len();
        if let (Some(before), Some(head)) = (stages.last_mut(), shapes.get(first)) {
            let pool_size = match shapes.get(first + 1) {
                Some(&OpShape::MaxPool2d { pool: p, .. }) if conv && pool => p,
                _ => 1,
            };
            let rows = ring_rows(head, pool_size);
            let general = kernel == Kernel::General;
            let chains = general
                && stages_before == 1
                && !before.dense
                && !before.alone
                && !before.add
                && !add
                && !named_later(shapes, first);
            if chains && !alone && rows > 0 && rows < head.in_hwc().0 {
                before.ring_out = rows;
                stage.ring_in = rows;
            }
        }
        stage.over_input = overwrites_input(shapes, &stage);
        // At most one stage per operation, and `MAX_OPS` is the capacity.
        let _ = stages.push(stage);
    }
    // A 1 × 1 conv over its input copies a chunk of it into its working memory: worth it
    // only where its input and output would be the largest pair of maps held at once
    // (visual wake words, whose largest pair is a conv's that doubles its channels, took
    // 1,284 B more RAM with its other 1 × 1 convs over their inputs).
    let pair = |s: &Stage| {
        let input = match shapes.get(s.first).filter(|_| s.first > 0) {
            // Read through a ring: its rows.
            Some(head) if s.ring_in > 0 => {
                let (h, w, c) = head.in_hwc();
                s.ring_in.min(h) * w * c
            }
            Some(head) => head.in_len(),
            None => 0,
        };
        input + s.out_len(shapes)
    };
    let others = stages.iter().filter(|s| !s.over_input).map(pair).max();
    for s in stages.iter_mut() {
        if s.over_input && s.conv && others.is_some_and(|o| pair(s) <= o) {
            s.over_input = false;
        }
    }
    stages
}

/// Whether `stage` writes its output over the map it reads (the output of the operation
/// before it, read by nothing else, neither the model's input nor a tensor a branch
/// names, read whole), as large as its output: a depthwise conv alone that [`in_place_fits`] (each channel group
/// copies its inputs before it writes its outputs), or a conv alone of a 1 × 1 kernel and
/// stride 1 with no more filters than input channels (each output position lies at or
/// before its input position; [`run_pointwise_in_place`] copies a chunk of positions at a
/// time).
pub fn overwrites_input(shapes: &[OpShape], stage: &Stage) -> bool {
    let first = stage.first;
    let kind = match shapes.get(first) {
        Some(OpShape::DepthwiseConv2d { geometry, .. }) => stage.alone && in_place_fits(geometry),
        Some(OpShape::Conv2d { geometry: g, .. }) => {
            stage.conv
                && stage.ops() == 1
                && stage.kernel == Kernel::General
                && g.k_h == 1
                && g.k_w == 1
                && g.stride == 1
                && g.filters <= g.in_c
        }
        _ => false,
    };
    let read_before = first
        .checked_sub(1)
        .and_then(|k| shapes.get(k))
        .is_some_and(|s| !matches!(s, OpShape::Branch { .. }));
    // Only where the output is as large as the input: a storage keeps its largest size
    // for as long as it lives, so a smaller output over its input would hold the input's
    // bytes until the output dies (on ds-cnn, a strided depthwise conv in place took
    // 1,568 B more arena than beside its input).
    let same_size = shapes.get(first).is_some_and(|s| s.in_len() == s.out_len());
    kind && read_before
        && same_size
        && stage.ring_in == 0
        && stage.ring_out == 0
        && !named_later(shapes, first)
}

/// Whether an add or a branch reads tensor `t` (0 the input, `k + 1` the output of
/// operation `k`).
fn named_later(shapes: &[OpShape], t: usize) -> bool {
    shapes.iter().any(|s| s.reads() == Some(t))
}

/// The tensor whose storage tensor `t` is: `t`, or for a branch's output the tensor it
/// names (followed through branches).
fn storage_of(shapes: &[OpShape], mut t: usize) -> usize {
    while let Some(&OpShape::Branch { from, .. }) = t.checked_sub(1).and_then(|k| shapes.get(k)) {
        if from >= t {
            break;
        }
        t = from;
    }
    t
}

/// Whether operation `add`, if an add, can be computed in place by the stage of operations
/// `first..add` before it (a conv, pool or dense stage): the stage's output (the add's
/// previous operand) is read by nothing else, and the add's other operand is no input
/// of the model's, is not what the stage reads, and dies at the add (no later operation
/// reads it). Then `out[i]` depends only on `other[i]`, and the stage writes each sum
/// over the value it adds: the other operand's storage becomes the add's output, and the
/// stage's own output is never held.
pub fn add_in_place(shapes: &[OpShape], first: usize, add: usize) -> bool {
    let Some(&OpShape::Add { other, .. }) = shapes.get(add) else {
        return false;
    };
    let storage = storage_of(shapes, other);
    let read_later = shapes
        .iter()
        .skip(add + 1)
        .any(|s| s.reads().is_some_and(|t| storage_of(shapes, t) == storage));
    add > first
        && add + 1 < shapes.len()
        && !named_later(shapes, add)
        && storage != 0
        && storage != storage_of(shapes, first)
        && !read_later
}

/// Tensors a plan may keep live at once ([`assign_buffers`]): two for a chain, a third
/// for a tensor a later add or branch reads.
pub const MAX_BUFFERS: usize = 3;

/// No buffer: a stage that writes the logits, or a branch (its tensor stays where it is);
/// the model's input, which is the caller's.
pub const NO_BUFFER: u8 = u8::MAX;

/// What [`assign_buffers`] needs of a stage (or of an operation, for the op-by-op
/// reference): its operations and what it reads besides the previous output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unit {
    /// Its first operation.
    pub first: usize,
    /// Its last operation.
    pub last: usize,
    /// The tensor an add's other operand is (`None` otherwise).
    pub other: Option<usize>,
    /// The tensor a branch names (`None` otherwise): the unit computes nothing.
    pub branch: Option<usize>,
    /// It ends with an add computed in place ([`Stage::add`]): its output takes the
    /// storage of its other operand, which dies there.
    pub in_place: bool,
    /// It writes its output over the tensor it reads ([`Stage::over_input`]), which dies
    /// there: the two share a storage.
    pub over_input: bool,
    /// Values it writes.
    pub out_len: usize,
}

impl Unit {
    /// Operation `index` of shape `shape` as a unit of its own.
    pub fn of_op(index: usize, shape: &OpShape) -> Self {
        Self::of(index, index, shape, shape.out_len())
    }

    /// Stage `stage` of `shapes` as a unit.
    pub fn of_stage(stage: &Stage, shapes: &[OpShape]) -> Self {
        let (first, last, out_len) = (stage.first, stage.last(), stage.out_len(shapes));
        let head = if stage.add {
            shapes.get(last)
        } else {
            shapes.get(first)
        };
        match head {
            Some(shape) => Self {
                in_place: stage.add,
                over_input: stage.over_input,
                ..Self::of(first, last, shape, out_len)
            },
            None => Self {
                first,
                last,
                other: None,
                branch: None,
                in_place: false,
                over_input: false,
                out_len,
            },
        }
    }

    fn of(first: usize, last: usize, shape: &OpShape, out_len: usize) -> Self {
        let (other, branch) = match *shape {
            OpShape::Add { other, .. } => (Some(other), None),
            OpShape::Branch { from, .. } => (None, Some(from)),
            _ => (None, None),
        };
        Self {
            first,
            last,
            other,
            branch,
            in_place: false,
            over_input: false,
            out_len,
        }
    }
}

/// Where the units' outputs are kept ([`assign_buffers`]): each tensor at an offset of one
/// arena of [`BufferPlan::arena`] bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferPlan {
    /// The buffer each unit writes ([`NO_BUFFER`]: a branch, or the last unit, which writes
    /// the logits): tensors live at once are in different buffers, at most
    /// [`MAX_BUFFERS`].
    pub out: [u8; MAX_OPS],
    /// The buffer each tensor is in (0 the model's input, [`NO_BUFFER`]; `k + 1` the output
    /// of operation `k`), as the units read them.
    pub tensor: [u8; MAX_OPS + 1],
    /// Bytes of each buffer: the largest output written to it (0: unused).
    pub sizes: [usize; MAX_BUFFERS],
    /// The offset in the arena of each tensor, as [`BufferPlan::tensor`] (0 where none).
    pub at: [u32; MAX_OPS + 1],
    /// Bytes of the arena: the tensors live at once never overlap in it (a tensor written
    /// in place is its other operand's storage).
    pub arena: usize,
}

impl BufferPlan {
    /// The buffer of tensor `t` ([`NO_BUFFER`] for the input or out of range).
    pub fn of_tensor(&self, t: usize) -> u8 {
        self.tensor.get(t).copied().unwrap_or(NO_BUFFER)
    }

    /// Buffers used.
    pub fn count(&self) -> usize {
        self.sizes.iter().filter(|&&n| n > 0).count()
    }

    /// Where tensor `t` of `len` values is in the arena (`None`: the model's input).
    pub fn region(&self, t: usize, len: usize) -> Option<Range<usize>> {
        if self.of_tensor(t) == NO_BUFFER {
            return None;
        }
        let at = self.at.get(t).map_or(0, |&a| a as usize);
        Some(at..at + len)
    }
}

/// Assigns every unit's output (stages, or operations one by one) to a buffer: the
/// lowest-numbered one whose tensor no unit from this one on reads (an add in place: its
/// other operand's); the last unit writes the logits, a branch nothing. Greedy in the
/// order the tensors appear, which keeps as few buffers as tensors are ever live at once
/// (interval colouring); a chain ping-pongs between buffers 0 and 1 (unit `j` writes
/// buffer `j % 2`). Then places each stored tensor in one arena (`place`). `None` if
/// more than [`MAX_BUFFERS`] would be needed, for more than [`MAX_OPS`] units, a
/// reference to a later tensor (which the decoder refuses), or an add in place over the
/// model's input or the tensor its unit reads.
pub fn assign_buffers<I: Iterator<Item = Unit> + Clone>(units: I) -> Option<BufferPlan> {
    plan_buffers::<true, I>(units)
}

/// Whether the units' live tensors fit [`MAX_BUFFERS`] buffers ([`assign_buffers`] but
/// not `None`), without placing them in the arena: what the decoder checks, in less stack.
pub fn buffers_fit<I: Iterator<Item = Unit> + Clone>(units: I) -> bool {
    plan_buffers::<false, I>(units).is_some()
}

/// [`assign_buffers`], the arena placed only with `ARENA` (without, what only the arena
/// needs is dead code).
fn plan_buffers<const ARENA: bool, I: Iterator<Item = Unit> + Clone>(
    units: I,
) -> Option<BufferPlan> {
    const NONE: u8 = u8::MAX;
    // Each tensor's storage (a branch's output is the tensor it names, an add in place's
    // its other operand's), the first and last unit that use each storage, and its size.
    let mut storage = [0u8; MAX_OPS + 1];
    let mut first_use = [NONE; MAX_OPS + 1];
    let mut last_use = [0u8; MAX_OPS + 1];
    let mut bytes = [0usize; MAX_OPS + 1];
    let count = units.clone().count();
    if count > MAX_OPS {
        return None;
    }
    for (j, u) in units.clone().enumerate() {
        let (read, out) = (*storage.get(u.first)?, u.last.checked_add(1)?);
        match u.branch {
            Some(from) if from <= u.first => *storage.get_mut(out)? = *storage.get(from)?,
            Some(_) => return None,
            None => {
                *last_use.get_mut(usize::from(read))? = j as u8;
                let own = match (u.in_place, u.other) {
                    (true, Some(other)) if other <= u.first => {
                        let s = *storage.get(other)?;
                        if s == 0 || s == read {
                            return None;
                        }
                        s
                    }
                    (true, _) => return None,
                    // Over the tensor it reads, which dies here (not the model's input).
                    (false, _) if u.over_input => {
                        if read == 0 {
                            return None;
                        }
                        read
                    }
                    (false, _) => out as u8,
                };
                *storage.get_mut(out)? = own;
                *last_use.get_mut(usize::from(own))? = j as u8;
                if ARENA && j + 1 < count {
                    let first = first_use.get_mut(usize::from(own))?;
                    if *first == NONE {
                        *first = j as u8;
                    }
                    let size = bytes.get_mut(usize::from(own))?;
                    *size = (*size).max(u.out_len);
                }
            }
        }
        if let Some(other) = u.other {
            if other > u.first {
                return None;
            }
            let other = *storage.get(other)?;
            *last_use.get_mut(usize::from(other))? = j as u8;
        }
    }
    // Each unit's buffer, each tensor's, each buffer's size.
    let mut outs = [NO_BUFFER; MAX_OPS];
    let mut tensors = [NO_BUFFER; MAX_OPS + 1];
    let mut sizes = [0; MAX_BUFFERS];
    // The storage tensor each buffer holds.
    let mut holder = [NONE; MAX_BUFFERS];
    for (j, u) in units.enumerate() {
        let out = u.last.checked_add(1)?;
        if let Some(from) = u.branch {
            *tensors.get_mut(out)? = *tensors.get(from)?;
            continue;
        }
        if j + 1 == count {
            break;
        }
        let free = match u.other.filter(|_| u.in_place) {
            // Its other operand's buffer, which it overwrites.
            Some(other) => usize::from(*tensors.get(other)?),
            // The buffer of what it reads, which it overwrites.
            None if u.over_input => usize::from(*tensors.get(u.first)?),
            None => {
                let dead = |t: u8| {
                    t == NONE
                        || last_use
                            .get(usize::from(t))
                            .is_none_or(|&l| usize::from(l) < j)
                };
                let free = holder.iter().position(|&t| dead(t))?;
                *holder.get_mut(free)? = out as u8;
                free
            }
        };
        *outs.get_mut(j)? = free as u8;
        *tensors.get_mut(out)? = free as u8;
        let size = sizes.get_mut(free)?;
        *size = (*size).max(u.out_len);
    }
    // Built only now, so that a caller that only asks whether it exists keeps none.
    let mut plan = BufferPlan {
        out: outs,
        tensor: tensors,
        sizes,
        at: [0; MAX_OPS + 1],
        arena: 0,
    };
    if !ARENA {
        return Some(plan);
    }
    plan.arena = place(&first_use, &last_use, &bytes, &mut plan.at)?;
    for t in 0..plan.tensor.len() {
        let s = usize::from(*storage.get(t)?);
        *plan.at.get_mut(t)? = *plan.at.get(s)?;
    }
    Some(plan)
}

/// Places each storage tensor `s` (used by units `first[s]..=last[s]`, [`NO_BUFFER`]
/// first: none; `bytes[s]` long) in one arena, writing its offset to `at[s]`:
/// the largest first (the earliest written of equal ones), each at the lowest offset where
/// it overlaps no tensor placed before that is live at the same time (TensorFlow Lite
/// Micro's greedy planner). Returns the arena's size.
#[inline(never)]
fn place(
    first: &[u8; MAX_OPS + 1],
    last: &[u8; MAX_OPS + 1],
    bytes: &[usize; MAX_OPS + 1],
    at: &mut [u32; MAX_OPS + 1],
) -> Option<usize> {
    let mut placed = [false; MAX_OPS + 1];
    let mut arena = 0;
    loop {
        // The largest tensor not placed yet (the earliest written of equal ones).
        let mut next = None;
        for s in 0..bytes.len() {
            let (Some(&b), Some(&f), Some(&p)) = (bytes.get(s), first.get(s), placed.get(s)) else {
                return None;
            };
            let before = |n: usize| {
                let (nb, nf) = (bytes.get(n).copied().unwrap_or(0), first.get(n).copied());
                let earlier = nf.is_some_and(|nf| f < nf);
                b > nb || (b == nb && earlier)
            };
            if f != NO_BUFFER && !p && next.is_none_or(before) {
                next = Some(s);
            }
        }
        let Some(s) = next else {
            return Some(arena);
        };
        let (f, l, len) = (*first.get(s)?, *last.get(s)?, *bytes.get(s)?);
        // Those placed that are live with it.
        let live = |o: usize| {
            placed.get(o).copied().unwrap_or(false)
                && first.get(o).is_some_and(|&fo| fo <= l)
                && last.get(o).is_some_and(|&lo| f <= lo)
        };
        let range = |o: usize| {
            let a = at.get(o).map_or(0, |&a| a as usize);
            a..a + bytes.get(o).copied().unwrap_or(0)
        };
        // The lowest offset, 0 or the end of a live tensor, free for `len` bytes.
        let mut best = None;
        for candidate in
            core::iter::once(0).chain((0..bytes.len()).filter(|&o| live(o)).map(|o| range(o).end))
        {
            let fits = (0..bytes.len()).filter(|&o| live(o)).all(|o| {
                let r = range(o);
                candidate + len <= r.start || r.end <= candidate
            });
            if fits && best.is_none_or(|b| candidate < b) {
                best = Some(candidate);
            }
        }
        let offset = best?;
        *at.get_mut(s)? = u32::try_from(offset).ok()?;
        *placed.get_mut(s)? = true;
        arena = arena.max(offset + len);
    }
}

/// Region `write` of `arena` to write, and regions `reads` to read (`None`: an empty
/// slice, as for a region that overlaps `write` or lies outside the arena): how a plan's
/// stage gets its tensors ([`BufferPlan::region`]). Never panics.
pub fn regions<'a, const N: usize>(
    arena: &'a mut [i8],
    write: Range<usize>,
    reads: [Option<Range<usize>>; N],
) -> (&'a mut [i8], [&'a [i8]; N]) {
    let start = write.start;
    let end = write.end.max(start);
    let Some((before, rest)) = arena.split_at_mut_checked(start) else {
        return (&mut [], [&[]; N]);
    };
    let Some((out, after)) = rest.split_at_mut_checked(end - start) else {
        return (&mut [], [&[]; N]);
    };
    let (before, after): (&'a [i8], &'a [i8]) = (before, after);
    let read = reads.map(|r| match r {
        Some(r) if r.end <= start => before.get(r).unwrap_or_default(),
        Some(r) if r.start >= end => after
            .get(r.start - end..r.end.saturating_sub(end))
            .unwrap_or_default(),
        _ => &[],
    });
    (out, read)
}

/// Two disjoint regions of `arena` to write (`a` before or after `b`; overlapping or
/// outside the arena: empty slices). Never panics.
pub fn regions_mut(arena: &mut [i8], a: Range<usize>, b: Range<usize>) -> (&mut [i8], &mut [i8]) {
    if a.is_empty() {
        return (&mut [], arena.get_mut(b).unwrap_or_default());
    }
    if b.is_empty() {
        return (arena.get_mut(a).unwrap_or_default(), &mut []);
    }
    let swap = b.start < a.start;
    let (lo, hi) = if swap { (b, a) } else { (a, b) };
    if lo.end > hi.start {
        return (&mut [], &mut []);
    }
    let Some((head, tail)) = arena.split_at_mut_checked(hi.start) else {
        return (&mut [], &mut []);
    };
    let lo_slice = head.get_mut(lo).unwrap_or_default();
    let hi_slice = tail.get_mut(..hi.end - hi.start).unwrap_or_default();
    if swap {
        (hi_slice, lo_slice)
    } else {
        (lo_slice, hi_slice)
    }
}

/// The buffers of `stages` of `shapes` ([`assign_buffers`]); `None` as there.
pub fn stage_buffers(stages: &[Stage], shapes: &[OpShape]) -> Option<BufferPlan> {
    assign_buffers(stages.iter().map(|s| Unit::of_stage(s, shapes)))
}

/// The [`OpShape`] of every operation of a decoded model.
pub fn shapes_of(file: &StackFile<'_>) -> heapless::Vec<OpShape, MAX_OPS> {
    let mut shapes = heapless::Vec::new();
    for op in &file.ops {
        // The file holds at most `MAX_OPS` operations.
        let _ = shapes.push(op.shape());
    }
    shapes
}

/// The stages of a decoded model.
pub fn plan_file(file: &StackFile<'_>) -> Stages {
    plan(&shapes_of(file))
}

/// Computes operation `index` of `file`, a depthwise conv or an average pool (a stage
/// [`Stage::alone`]), from `input` to `output`, with `words` ([`OpShape::alone_words`]) as
/// scratch: with its fast kernel, or with `reference` its naive reference. Other
/// operations, short slices or scratch compute nothing.
pub fn run_alone(
    file: &StackFile<'_>,
    index: usize,
    reference: bool,
    input: &[i8],
    words: &mut [u32],
    output: &mut [i8],
) {
    use crate::kernels::average_pool::{average_pool, average_pool_reference};
    use crate::kernels::depthwise::{depthwise_i8, depthwise_i8_reference};
    match file.ops.get(index) {
        Some(Op::DepthwiseConv2d(d)) => {
            let g = d.geometry();
            let requant = ChannelRequant::from_params_clamped(&d.params, d.min, d.max);
            let offset = input_offset(file, index);
            if reference {
                depthwise_i8_reference(&g, input, offset, d.params.weights, &requant, output);
            } else {
                depthwise_i8::<false>(&g, input, offset, d.params.weights, &requant, words, output);
            }
        }
        Some(Op::AvgPool2d(p)) => {
            let g = p.geometry();
            if reference {
                average_pool_reference(&g, input, p.min, p.max, output);
            } else {
                average_pool(&g, input, p.min, p.max, words, output);
            }
        }
        _ => {}
    }
}

/// Computes operation `index` of `file`, a depthwise conv stage that [`overwrites_input`],
/// over its input in `map`, with `words` ([`OpShape::alone_words`]) as scratch
/// ([`crate::kernels::depthwise::depthwise_i8_in_place`]). Other operations compute
/// nothing.
pub fn run_alone_in_place(file: &StackFile<'_>, index: usize, map: &mut [i8], words: &mut [u32]) {
    use crate::kernels::depthwise::depthwise_i8_in_place;
    if let Some(Op::DepthwiseConv2d(d)) = file.ops.get(index) {
        let requant = ChannelRequant::from_params_clamped(&d.params, d.min, d.max);
        let offset = input_offset(file, index);
        depthwise_i8_in_place::<false>(
            &d.geometry(),
            map,
            offset,
            d.params.weights,
            &requant,
            words,
        );
    }
}

/// Whether operation `index` of `file` is a depthwise conv whose every channel goes through
/// the four-channel kernels ([`crate::kernels::depthwise::covered_by_quads`]): what its
/// typed layer may be compiled for.
pub fn depthwise_covered(file: &StackFile<'_>, index: usize) -> bool {
    let Some(Op::DepthwiseConv2d(d)) = file.ops.get(index) else {
        return false;
    };
    let requant = ChannelRequant::from_params_clamped(&d.params, d.min, d.max);
    let offset = input_offset(file, index);
    crate::kernels::depthwise::covered_by_quads(&d.geometry(), offset, d.params.weights, &requant)
}

/// The requantization of add operation `index` of `file` (`None` for another operation):
/// the previous output's and its other tensor's offsets (their zero points), multipliers
/// and shifts, the sum's, and the clamp.
pub fn add_params(file: &StackFile<'_>, index: usize) -> Option<AddParams> {
    let Some(Op::Add(a)) = file.ops.get(index) else {
        return None;
    };
    Some(AddParams {
        offsets: [
            input_offset(file, index),
            file.tensor_offset(usize::from(a.other)),
        ],
        multipliers: [a.multiplier, a.other_multiplier],
        shifts: [i32::from(a.shift), i32::from(a.other_shift)],
        left_shift: u32::from(a.left_shift),
        output_multiplier: a.output_multiplier,
        output_shift: i32::from(a.output_shift),
        output_zero_point: a.output.zero_point,
        min: a.min,
        max: a.max,
    })
}

/// Computes add operation `index` of `file` from `previous` (the previous output) and
/// `other` (its other tensor) to `output`, with `words` ([`OpShape::alone_words`]) as
/// scratch: with its fast kernel, or with `reference` its naive reference. Other
/// operations compute nothing; short slices compute less.
pub fn run_add(
    file: &StackFile<'_>,
    index: usize,
    reference: bool,
    (previous, other): (&[i8], &[i8]),
    words: &mut [u32],
    output: &mut [i8],
) {
    use crate::kernels::add::{add, add_reference};
    if let Some(p) = add_params(file, index) {
        if reference {
            add_reference(&p, previous, other, output);
        } else {
            add(&p, previous, other, words, output);
        }
    }
}

/// The conv of a stage, with its parameters.
#[derive(Debug, Clone, Copy)]
pub struct ConvPart<'a> {
    /// Its geometry.
    pub geometry: ConvGeometry,
    /// `filters × k_h × k_w × in_c` int8 weights.
    pub weights: &'a [u8],
    /// The same weights widened for the DSP cores' four-pixel kernel
    /// ([`crate::kernels::dsp::widen_filter`]), if the model was given them
    /// ([`StackFile::prepare`]), else empty.
    pub wide: &'a [u32],
    /// Its requantization (with the ReLU if it has one).
    pub requant: ChannelRequant<'a>,
    /// Minus its input's zero point.
    pub input_offset: i32,
}

/// The dense layer of a stage, with its parameters.
#[derive(Debug, Clone, Copy)]
pub struct DensePart<'a> {
    /// Inputs (the flattened `rows × columns × channels` of what the stage produces).
    pub inputs: usize,
    /// Outputs.
    pub units: usize,
    /// `units × inputs` int8 weights.
    pub weights: &'a [u8],
    /// The same weights widened for the DSP cores' dense kernel over a vector
    /// ([`crate::kernels::dsp::dense_wide_words_of`]), if the model was given them
    /// ([`StackFile::prepare`]), else empty.
    pub wide: &'a [u32],
    /// Each unit's offset term, `input_offset · Σ w`
    /// ([`crate::kernels::mve::row_offset_terms`]), if the model was given them
    /// ([`StackFile::prepare`]: alone on Helium cores, [`TERMS_ALONE`]; after the widened
    /// rows on DSP cores), else empty: the sums of the ways that take the int8 values as
    /// they are start from them.
    pub offset_terms: &'a [u32],
    /// Its requantization (with the ReLU if it has one).
    pub requant: ChannelRequant<'a>,
    /// Minus its input's zero point.
    pub input_offset: i32,
    /// Every unit's requantization is monotonic (multiplier ≥ 0, no left shift), so that
    /// its sums may be requantized a block at a time (`requantize_positions`);
    /// found when the layer is loaded.
    pub monotonic: bool,
}

impl DensePart<'_> {
    /// Whether the layer has its offset terms alone ([`TERMS_ALONE`]: Helium cores' way,
    /// [`crate::kernels::mve::dense_rows_i8`] from the int8 values as they are).
    pub(crate) fn terms_alone(&self) -> bool {
        // (A Helium build prepares no rows: only the unit tests give a layer both.)
        let no_rows = cfg!(infer_core_mve) || self.wide.is_empty();
        TERMS_ALONE && no_rows && !self.offset_terms.is_empty()
    }

    /// With its offset terms alone, starts the sums `acc` of units `first..` from them and
    /// returns 0, the offset its steps then take; else leaves `acc` alone and returns the
    /// input offset.
    pub(crate) fn start_sums(&self, first: usize, acc: &mut [u32]) -> i32 {
        let terms = self.offset_terms.get(first..).unwrap_or_default();
        if !self.terms_alone() || terms.is_empty() {
            return self.input_offset;
        }
        copy_words(acc, terms);
        0
    }
}

/// A stage with its parameters: what [`run_general`] computes.
#[derive(Debug, Clone, Copy)]
pub struct Parts<'a> {
    /// The index of the stage's first operation in the model: what it tells its probe
    /// ([`KnownFacts::Probe`]); 0 where nothing is probed.
    pub first: usize,
    /// The stage's input `(rows, columns, channels)`.
    pub input: (usize, usize, usize),
    /// Its conv, if any.
    pub conv: Option<ConvPart<'a>>,
    /// Its max pool's window side (0: no pool).
    pub pool: usize,
    /// Its dense layer, if any.
    pub dense: Option<DensePart<'a>>,
    /// The add it ends with, computed in place in its output ([`Stage::add`]), if any.
    pub add: Option<AddParams>,
}

impl Parts<'_> {
    /// The index of its dense layer (or of what would follow its conv and pool).
    fn dense_op(&self) -> usize {
        self.first + usize::from(self.conv.is_some()) + usize::from(self.pool != 0)
    }

    /// The index of its add (or of what would follow its other parts).
    fn add_op(&self) -> usize {
        self.dense_op() + usize::from(self.dense.is_some())
    }
}

impl<'a> Parts<'a> {
    /// The parameters of `stage` of `file` (`None` if the operations are not the stage's).
    pub fn of(file: &StackFile<'a>, stage: &Stage) -> Option<Self> {
        let mut at = stage.first;
        let input = file.ops.get(at)?.shape().in_hwc();
        let mut parts = Parts {
            first: stage.first,
            input,
            conv: None,
            pool: 0,
            dense: None,
            add: None,
        };
        if stage.conv {
            let op = file.ops.get(at)?;
            let (c, geometry) = op.conv()?;
            parts.conv = Some(ConvPart {
                geometry,
                weights: c.params.weights,
                wide: file.prepared(at),
                requant: ChannelRequant::from_params(&c.params, c.relu),
                input_offset: input_offset(file, at),
            });
            at += 1;
        }
        if stage.pool {
            let Op::MaxPool2d(p) = file.ops.get(at)? else {
                return None;
            };
            parts.pool = p.pool.into();
            at += 1;
        }
        if stage.dense {
            let Op::Dense(d) = file.ops.get(at)? else {
                return None;
            };
            parts.dense = Some(dense_part(file, at, &d));
            at += 1;
        }
        if stage.add {
            parts.add = Some(add_params(file, at)?);
        }
        Some(parts)
    }
}

/// Every fact ([`super::facts`]) of the stage `parts` computed `pixels` conv pixels at once,
/// writing the logits if `logits`: what a firmware's build script compiles the stage's typed
/// layer with (`model_spec::codegen`), and what that layer checks when the model loads.
pub fn facts_of(parts: &Parts<'_>, pixels: Pixels, logits: bool) -> Facts {
    use facts::*;
    let conv = parts.conv.as_ref();
    let g = conv.map(|cp| &cp.geometry);
    let channels = g.map_or(parts.input.2, |g| g.filters);
    let units = parts.dense.as_ref().map(|d| d.units);
    of_list(&[
        (CONV, conv.is_some()),
        (POOL, parts.pool != 0),
        (POOL2, parts.pool == 2),
        (DENSE, units.is_some()),
        (ADD, parts.add.is_some()),
        (LOGITS, logits),
        (FOUR, pixels == Pixels::Four),
        (ONE_CHANNEL, g.is_some_and(|g| g.in_c == 1)),
        (POINTWISE, g.is_some_and(|g| g.k_h == 1 && g.k_w == 1)),
        (KERNEL_3X3, g.is_some_and(|g| g.k_h == 3 && g.k_w == 3)),
        (PREPARED_CONV, conv.is_some_and(widened)),
        (
            PREPARED_DENSE,
            parts.dense.as_ref().is_some_and(|d| {
                // Streamed after a conv or pool, widened rows for whole sixteens of values
                // a position (`dense_position`).
                let streamed = conv.is_some() || parts.pool != 0;
                d.terms_alone() || !d.wide.is_empty() && (!streamed || channels % 16 == 0)
            }),
        ),
        (
            MONOTONIC,
            conv.is_some_and(|cp| monotonic(&cp.requant, channels)),
        ),
        (RELU, conv.is_some_and(|cp| cp.requant.relu_floor())),
        (
            DENSE_MONOTONIC,
            parts.dense.as_ref().is_some_and(|d| d.monotonic),
        ),
        (
            DENSE_RELU,
            parts.dense.as_ref().is_some_and(|d| d.requant.relu_floor()),
        ),
        (INT8_PATCH, g.is_some_and(|g| int8_patch_fits(g.taps()))),
        (INSIDE, g.is_some_and(windows_inside)),
        (
            FAST_POOL,
            conv.is_some_and(|cp| {
                let layers = StreamLayers {
                    input_offset: cp.input_offset,
                    conv_weights: cp.weights,
                    conv: cp.requant,
                    dense_input_offset: parts
                        .dense
                        .as_ref()
                        .map_or(-cp.requant.output_offset, |d| d.input_offset),
                    dense_weights: &[],
                    dense: cp.requant,
                };
                fast_requant(&layers, channels)
            }),
        ),
        (EVEN_UNITS, units.is_some_and(|u| u % 2 == 0)),
        (QUAD_UNITS, units.is_some_and(|u| u % 4 == 0)),
        (
            ADD_TABLED,
            parts.add.as_ref().is_some_and(AddParams::tabled),
        ),
        (GROUPS, g.is_some_and(|g| g.in_c % 4 == 0)),
        (OCTETS, channels % 8 == 0),
    ])
}

/// The [`DensePart`] of dense operation `index` of `file`.
#[inline(always)]
pub(crate) fn dense_part<'a>(
    file: &StackFile<'a>,
    index: usize,
    d: &super::format::DenseOp<'a>,
) -> DensePart<'a> {
    let requant = ChannelRequant::from_params(&d.params, d.relu);
    let (inputs, units) = (d.inputs as usize, usize::from(d.units));
    let (wide, offset_terms) = prepared_dense(file.prepared(index), inputs, units);
    DensePart {
        inputs,
        units,
        weights: d.params.weights,
        wide,
        offset_terms,
        requant,
        input_offset: input_offset(file, index),
        monotonic: monotonic(&requant, d.units.into()),
    }
}

/// Whether conv `cp` has its weights widened for every filter ([`widened_fit`]).
fn widened(cp: &ConvPart<'_>) -> bool {
    let (taps, filters) = (cp.geometry.taps(), cp.geometry.filters);
    if WORD_WEIGHTS {
        // Every filter from the words: whole quads of them.
        return filters % 4 == 0 && taps > 0 && cp.wide.len() == word_weights_len(taps, filters);
    }
    widened_fit(cp.wide.len(), filters, taps)
}

/// Whether every window of conv `g` lies inside its input: no padding.
fn windows_inside(g: &ConvGeometry) -> bool {
    let (out_h, out_w) = (g.out_h(), g.out_w());
    g.pad_top() == 0
        && g.pad_left() == 0
        && out_h > 0
        && out_w > 0
        && (out_h - 1) * g.stride + g.k_h <= g.in_h
        && (out_w - 1) * g.stride + g.k_w <= g.in_w
}

/// Whether every channel's requantization is monotonic (multiplier ≥ 0, no left shift), so
/// that requantizing the max of accumulators equals the max of their requantizations.
fn monotonic(rq: &ChannelRequant<'_>, channels: usize) -> bool {
    (0..channels).all(|f| rq.channel(f).is_some_and(|(_, m, s)| m >= 0 && s <= 0))
}

/// Computes one stage: `input` (the stage's input values) to `output` (its last
/// operation's), with `words` ([`general_words`] of the stage, and with an add the
/// [`ADD_SCRATCH_WORDS`] of its tables after them) as patch and working memory. With an
/// add ([`Parts::add`]) `output` holds its other operand, and each value is added to the
/// one it replaces. Bit for bit the unfused reference kernels' result. Short slices
/// compute less, never panic.
pub fn run_general<K: KnownFacts>(
    parts: &Parts<'_>,
    input: &[i8],
    words: &mut [u32],
    output: &mut [i8],
) {
    run_stage::<K>(parts, input, words, Out::Values(MapRows::whole_mut(output)));
}

/// [`run_general`] for the network's last stage, whose dense layer gives the logits:
/// `logits` gets them wide ([`crate::kernels::dense::finish_logits`]). A stage without a dense layer writes
/// nothing.
pub fn run_general_logits<K: KnownFacts>(
    parts: &Parts<'_>,
    input: &[i8],
    words: &mut [u32],
    logits: &mut [i32],
) {
    run_stage::<K>(parts, input, words, Out::Logits(logits));
}

/// Where a stage's outputs go.
pub enum Out<'o> {
    /// int8 values for the next stage: its input map, whole or in a ring buffer.
    Values(MapRows<'o, &'o mut [i8]>),
    /// The network's wide logits.
    Logits(&'o mut [i32]),
}

/// `words` of a stage split into its working memory and, with an add, the add's tables
/// ([`ADD_SCRATCH_WORDS`] at the end).
fn add_tables<'w, K: KnownFacts>(
    parts: &Parts<'_>,
    words: &'w mut [u32],
) -> (&'w mut [u32], Option<AddTables<'w>>) {
    match part(K::FACTS, facts::ADD, parts.add.as_ref()) {
        Some(p) => {
            let split = words.len().saturating_sub(ADD_SCRATCH_WORDS);
            let (words, tables) = words.split_at_mut(split);
            (words, Some(AddTables::new(p, tables)))
        }
        None => (words, None),
    }
}

/// [`run_general`] and [`run_general_logits`].
fn run_stage<K: KnownFacts>(
    parts: &Parts<'_>,
    input: &[i8],
    words: &mut [u32],
    mut output: Out<'_>,
) {
    K::Probe::enter(parts.first);
    let (words, add) = add_tables::<K>(parts, words);
    let conv = holds(K::FACTS, facts::CONV, || parts.conv.is_some());
    if !conv && !holds(K::FACTS, facts::POOL, || parts.pool != 0) {
        if let Some(d) = part(K::FACTS, facts::DENSE, parts.dense.as_ref()) {
            dense_direct::<K>(d, input, words, output, add.as_ref());
        }
        return;
    }
    // (Used where it lies: moved out of the `Option`, the stage took a `memcpy`.)
    let mut stage = StageRun::<K>::new(parts, words, add);
    let Some(run) = stage.as_mut() else {
        return;
    };
    let input = MapRows::whole(input);
    run.rows(input, 0..run.out_h, &mut output);
    run.finish(output);
}

/// A stage being computed, position row by position row: its parts, its working memory
/// (the patch, the values of the positions computed at once, and the streamed dense
/// layer's accumulators, kept from one call of [`StageRun::rows`] to the next).
struct StageRun<'p, 'a, 'w, K> {
    parts: &'p Parts<'a>,
    patch: &'w mut [u32],
    values: &'w mut [u32],
    acc: &'w mut [u32],
    /// The conv's offset terms, where its quads may go through int8 patches.
    terms: &'w mut [u32],
    /// The dense layer's whole input, where the stage holds it ([`held_words`]; else
    /// empty: the layer takes each position's values as they come).
    held: &'w mut [u32],
    /// Four positions of a background quad's values, once one is requantized
    /// (`background_kept`), for every later one ([`background_words`]; else empty).
    background: &'w mut [u32],
    /// Whether `background` holds them.
    background_kept: bool,
    /// The pool window's side (1 without a pool).
    p: usize,
    /// Output positions per row, and rows.
    out_w: usize,
    out_h: usize,
    /// Values per position.
    channels: usize,
    /// Conv pixels computed at once.
    pixels: Pixels,
    /// Positions computed at once.
    at_once: usize,
    /// The conv's requantization is monotonic (or there is no conv).
    monotonic: bool,
    /// The add computed in place in the output, if any.
    add: Option<AddTables<'w>>,
    /// What is known of the stage at compile time.
    facts: core::marker::PhantomData<K>,
}

impl<'p, 'a, 'w, K: KnownFacts> StageRun<'p, 'a, 'w, K> {
    /// The run of a stage with a conv or a pool, its working memory taken from `words`
    /// ([`general_words`] of the stage); `None` if `words` is too short or the stage
    /// computes nothing.
    fn new(parts: &'p Parts<'a>, words: &'w mut [u32], add: Option<AddTables<'w>>) -> Option<Self> {
        let (h, w, c) = parts.input;
        let (grid_h, grid_w, channels) = match &parts.conv {
            Some(cp) => (
                cp.geometry.out_h(),
                cp.geometry.out_w(),
                cp.geometry.filters,
            ),
            None => (h, w, c),
        };
        let p = parts.pool.max(1);
        let (out_h, out_w) = (grid_h / p, grid_w / p);
        let taps = parts.conv.as_ref().map_or(0, |cp| cp.geometry.taps());
        let one_channel = parts.conv.as_ref().is_some_and(|cp| cp.geometry.in_c == 1);
        let units = parts.dense.as_ref().map_or(0, |d| d.units);
        if channels == 0 || out_w == 0 {
            return None;
        }
        let inputs = out_h * out_w * channels;
        let values_words = if units > 0 {
            PatchWords::words(channels)
        } else {
            0
        };
        // The working memory decides how many pixels go at once.
        let pixels = if holds(K::FACTS, facts::FOUR, || {
            let taps = (taps, one_channel);
            words.len() >= general_words(taps, channels, (inputs, units), p, Pixels::Four)
        }) {
            Pixels::Four
        } else {
            Pixels::One
        };
        let at_once = if QUAD_PIXELS || PAIR_PIXELS {
            positions_at_once(taps, p, pixels)
        } else {
            1
        };
        let conv_words = if taps > 0 {
            pixels.count() * PatchWords::words(taps)
        } else {
            0
        };
        let (patch, work) = words.split_at_mut_checked(conv_words.max(values_words))?;
        let (values, acc) = work.split_at_mut_checked(at_once * channels)?;
        let (acc, terms) = acc.split_at_mut_checked(units)?;
        let (terms, held) = terms.split_at_mut_checked(term_words(taps, channels, pixels))?;
        let (held, background) = held.split_at_mut_checked(held_words(inputs, units, pixels))?;
        let background =
            background.get_mut(..background_words(one_channel, channels, p, pixels))?;
        acc.fill(0);
        // With offset terms alone, the dense layer's sums start from them.
        if let (true, Some(d)) = (TERMS_ALONE, &parts.dense) {
            d.start_sums(0, acc);
        }
        if let Some(cp) = parts
            .conv
            .as_ref()
            .filter(|cp| pixels == Pixels::Four && int8_quads_possible(&cp.geometry, K::FACTS))
        {
            offset_terms(cp.weights, taps, cp.input_offset, terms);
        }
        let monotonic = part(K::FACTS, facts::CONV, parts.conv.as_ref()).is_none_or(|cp| {
            holds(K::FACTS, facts::MONOTONIC, || {
                monotonic(&cp.requant, channels)
            })
        });
        Some(Self {
            parts,
            patch,
            values,
            acc,
            terms,
            held,
            background,
            background_kept: false,
            p,
            out_w,
            out_h,
            channels,
            pixels,
            at_once,
            monotonic,
            add,
            facts: core::marker::PhantomData,
        })
    }

    /// Computes output rows `rows` from `input`: into `output`'s rows, or into the dense
    /// accumulators.
    fn rows(&mut self, input: MapRows<'_, &[i8]>, rows: Range<usize>, output: &mut Out<'_>) {
        let (_, w, c) = self.parts.input;
        let (out_w, channels) = (self.out_w, self.channels);
        let n_in = self.out_h * out_w * channels;
        let last = rows.end.min(self.out_h);
        // A conv's positions computed at once run on into the next row of `rows` (whose
        // input rows are all held: every caller of several rows gives the whole input),
        // so that rows narrower than four positions, or not a multiple of four, fill
        // quads too; not into a ring's next row, which may wrap around (past the row's
        // end, a position's column goes on counting, and its place follows the row's).
        let f = K::FACTS;
        let conv = holds(f, facts::CONV, || self.parts.conv.is_some());
        let spans = conv
            && match output {
                Out::Values(out) if !holds(f, facts::LOGITS, || false) => out.is_whole(),
                _ => true,
            };
        for row in rows.start..last {
            let end = if spans { last } else { row + 1 } * out_w;
            let mut pos = row * out_w;
            // The position's row and column, stepped (no division: a library call on the
            // Cortex-M0).
            let mut place_at = (row, 0);
            while pos < end {
                let n = self.at_once.min(end - pos);
                let at = (pos, n, out_w, place_at);
                let dense = part(f, facts::DENSE, self.parts.dense.as_ref());
                let add = part(f, facts::ADD, self.add.as_ref());
                // The positions' place in the output map (they follow each other there: in
                // one row, or in a whole map), if the stage writes one.
                let place = match &mut *output {
                    Out::Values(out)
                        if dense.is_none()
                            && !holds(f, facts::DENSE, || false)
                            && !holds(f, facts::LOGITS, || false) =>
                    {
                        let col = pos - row * out_w;
                        let slot = (out.slot(row) * out_w + col) * channels;
                        let Some(out) = out.data.get_mut(slot..slot + n * channels) else {
                            return;
                        };
                        Some(out)
                    }
                    _ => None,
                };
                // Without an add, the values go straight there (or where the stage holds
                // its dense layer's input); else into the first bytes of `values`.
                let (place, direct) = match (place, add) {
                    (Some(place), None) => (None, Some(place)),
                    (place, _) => (place, None),
                };
                let holding = !self.held.is_empty();
                let held_at = pos * channels..(pos + n) * channels;
                let mut direct = match int8_of_words(self.held).get_mut(held_at) {
                    Some(held) if holding && dense.is_some() => Some(held),
                    _ => direct,
                };
                K::Probe::enter(self.parts.first);
                if conv {
                    let Some(cp) = &self.parts.conv else {
                        return;
                    };
                    let sums = conv_positions::<K>(
                        cp,
                        input,
                        at,
                        (self.p, self.pixels),
                        self.monotonic,
                        (self.patch, self.terms),
                        (self.values, direct.as_deref_mut()),
                    );
                    // (Only a conv of one channel finds a background: no code for others.)
                    let background = sums == Sums::Background
                        && holds(f, facts::ONE_CHANNEL, || cp.geometry.in_c == 1);
                    if background && self.background_kept {
                        // A background quad's values are the first one's.
                        put_background(self.background, self.values, n * channels, direct);
                    } else if sums != Sums::Requantized {
                        let how = (n, self.monotonic, background);
                        let kept = &mut *self.background;
                        self.background_kept =
                            requantize_conv::<K>(cp, self.values, how, direct, kept);
                    }
                } else {
                    let at = (row, pos - row * out_w);
                    let bytes = match direct {
                        Some(direct) => direct,
                        None => int8_of_words(self.values),
                    };
                    pool_position(input, (w, c), at, self.p, bytes);
                }
                let Some(bytes) = int8_of_words(self.values).get(..n * channels) else {
                    return;
                };
                match (dense, place, add) {
                    // (Held: the values are in place.)
                    (Some(_), _, _) if holding => {}
                    (Some(d), _, _) => {
                        K::Probe::enter(self.parts.dense_op());
                        for (k, values) in bytes.chunks_exact(channels.max(1)).enumerate() {
                            let start = (pos + k) * channels;
                            dense_position::<K>(d, values, n_in, start, self.patch, self.acc);
                        }
                    }
                    (None, Some(place), Some(add)) => {
                        K::Probe::enter(self.parts.add_op());
                        if holds(f, facts::ADD_TABLED, || false) {
                            add.add_into::<true>(bytes, place);
                        } else {
                            add.add_into::<false>(bytes, place);
                        }
                    }
                    _ => {}
                }
                pos += n;
                place_at = step_position(place_at, n, out_w);
            }
            if spans {
                break;
            }
        }
    }

    /// Writes the dense layer's outputs (nothing without one): from the streamed layer's
    /// sums, or computed now over the input the stage held, with the conv's working memory.
    fn finish(&mut self, output: Out<'_>) {
        if let Some(d) = part(K::FACTS, facts::DENSE, self.parts.dense.as_ref()) {
            K::Probe::enter(self.parts.dense_op());
            if self.held.is_empty() {
                finish_block::<K>(d, 0, self.acc, &mut { output }, self.add.as_ref());
            } else {
                // The sums in the stage's words for them, not on the stack.
                let input = int8_of_words(self.held);
                let words = (&mut *self.patch, &mut *self.acc);
                dense_with_sums::<K>(d, input, words, false, output, self.add.as_ref());
            }
        }
    }
}

/// Computes output rows `rows` of a stage without a dense layer (a conv, a pool, or both)
/// from `input` into `output`, whole or a ring of rows: a producer's share of
/// [`run_chain`], with `words` ([`general_words`] of the stage) as its working memory.
pub fn run_general_rows<K: KnownFacts>(
    parts: &Parts<'_>,
    input: &[i8],
    words: &mut [u32],
    output: MapRows<'_, &mut [i8]>,
    rows: Range<usize>,
) {
    if part(K::FACTS, facts::DENSE, parts.dense.as_ref()).is_some() {
        return;
    }
    K::Probe::enter(parts.first);
    if let Some(run) = StageRun::<K>::new(parts, words, None).as_mut() {
        run.rows(MapRows::whole(input), rows, &mut Out::Values(output));
    }
}

/// Positions per chunk of an `h × w` map that [`run_pointwise_in_place`] computes at a time:
/// whole quads of positions, at least a row: the fewest that divide the map's positions
/// (14 × 14: 28), else the fewest (keyword spotting's 25 × 5: 8, then a last chunk of 5);
/// the whole map if smaller. (Chunks of a row, whose last quad the four-pixel kernels fill
/// with repeats, took keyword spotting 3,881,534 → 4,995,918 instructions on the M4F.)
pub const fn pointwise_chunk(h: usize, w: usize) -> usize {
    let n = h * w;
    let first = w.div_ceil(4) * 4;
    let mut k = first;
    while k > 0 && k <= n {
        if n % k == 0 {
            return k;
        }
        k += 4;
    }
    if first < n {
        first
    } else {
        n
    }
}

/// Words of the chunk of input positions [`run_pointwise_in_place`] copies, for an
/// `h × w × c` input.
pub const fn pointwise_chunk_words(h: usize, w: usize, c: usize) -> usize {
    (pointwise_chunk(h, w) * c).div_ceil(4)
}

/// Computes a stage of a 1 × 1 conv of stride 1 (its only operation, no more filters than
/// input channels: [`overwrites_input`]) over its own input: `map` holds the input and
/// gets the output from its start. Chunk by chunk of [`pointwise_chunk`] positions, in
/// order: the chunk's inputs are copied into the last [`pointwise_chunk_words`] of `words`
/// (the rest is the stage's own, [`general_words`]), then its outputs written where its
/// inputs began, at or before them (no later chunk's input is touched). Bit for bit
/// [`run_general`] from a separate input. Other stages compute nothing.
pub fn run_pointwise_in_place<K: KnownFacts>(parts: &Parts<'_>, map: &mut [i8], words: &mut [u32]) {
    let Some(cp) = &parts.conv else {
        return;
    };
    let g = cp.geometry;
    let (h, w, c) = parts.input;
    if g.k_h != 1 || g.k_w != 1 || g.stride != 1 || g.filters > c || parts.pool != 0 {
        return;
    }
    let (n, k) = (h * w, pointwise_chunk(h, w));
    let Some(chunks) = n.checked_div(k) else {
        return;
    };
    let split = words.len().saturating_sub(pointwise_chunk_words(h, w, c));
    let (words, copy) = words.split_at_mut(split);
    let Some(copy) = int8_of_words(copy).get_mut(..k * c) else {
        return;
    };
    K::Probe::enter(parts.first);
    // The map as `chunks` rows of `k` positions, then one row of the rest: a 1 × 1 conv
    // computes each position alone.
    let mut first = 0;
    for (rows, len) in [(chunks, k), (1, n - chunks * k)] {
        if rows == 0 || len == 0 {
            continue;
        }
        let mut geometry = g;
        (geometry.in_h, geometry.in_w) = (rows, len);
        let chunked = Parts {
            input: (rows, len, c),
            conv: Some(ConvPart { geometry, ..*cp }),
            ..*parts
        };
        // (Used where it lies: moved out of the `Option`, the stage took a `memcpy`.)
        let mut stage = StageRun::<K>::new(&chunked, &mut *words, None);
        let Some(run) = stage.as_mut() else {
            return;
        };
        for r in 0..rows {
            let at = first + r * len;
            let Some(copy) = copy.get_mut(..len * c) else {
                return;
            };
            copy_bytes(copy, map.get(at * c..).unwrap_or_default());
            let Some(out) = map.get_mut(at * g.filters..(at + len) * g.filters) else {
                return;
            };
            let input = MapRows::ring(&*copy, 1);
            run.rows(input, r..r + 1, &mut Out::Values(MapRows::ring(out, 1)));
        }
        first += rows * len;
    }
}

/// Runs two stages as one, the second (`consumer`, which starts with a conv or a pool)
/// reading the first's output through `ring`, a ring buffer of the producer's last
/// `ring_rows` output rows (at least the rows one consumer output row needs: the plan's
/// [`Stage::ring_in`]): for each consumer output row in order, `producer(rows, ring)`
/// first writes the producer rows it needs and does not have yet (row `r` at row
/// `r % ring_rows` of `ring`, as [`run_general_rows`] writes them), then the consumer
/// computes the row into `output` (its rows, or its streamed dense layer's accumulators,
/// finished into values or the logits at the end). `words` is the consumer's working
/// memory ([`general_words`]). Bit for bit the two stages one after the other.
pub fn run_chain<K: KnownFacts>(
    producer: &mut dyn FnMut(Range<usize>, &mut [i8]),
    consumer: &Parts<'_>,
    ring: &mut [i8],
    ring_rows: usize,
    words: &mut [u32],
    mut output: Out<'_>,
) {
    K::Probe::enter(consumer.first);
    // (Used where it lies: moved out of the `Option`, the stage took a `memcpy`.)
    let mut stage = StageRun::<K>::new(consumer, words, None);
    let Some(run) = stage.as_mut() else {
        return;
    };
    let (in_h, _, _) = consumer.input;
    let mut made = 0;
    for row in 0..run.out_h {
        let need = input_rows_needed(consumer, row).min(in_h);
        if need > made {
            producer(made..need, ring);
            made = need;
        }
        run.rows(MapRows::ring(&*ring, ring_rows), row..row + 1, &mut output);
    }
    run.finish(output);
}

/// Input rows `0..n` that output row `row` of a stage starting with a conv or a pool
/// needs: `n`.
fn input_rows_needed(parts: &Parts<'_>, row: usize) -> usize {
    let p = parts.pool.max(1);
    let last = (row + 1) * p - 1;
    match &parts.conv {
        Some(cp) => {
            let g = &cp.geometry;
            (last * g.stride + g.k_h).saturating_sub(g.pad_top())
        }
        None => last + 1,
    }
}

/// Rows of the ring through which a stage starting with `first` (a conv or a pool) and,
/// with `pooled`, a max pool of window `pool` after a conv reads its input: the rows one
/// output row needs.
fn ring_rows(first: &OpShape, pool: usize) -> usize {
    match first {
        OpShape::Conv2d { geometry: g, .. } => (pool.max(1) - 1) * g.stride + g.k_h,
        OpShape::MaxPool2d { pool, .. } => *pool,
        _ => 0,
    }
}

/// The row and column `n` positions on from `(row, col)` in a grid `out_w` wide, for a few
/// positions (`n` up to about four): stepped row by row, without a division (on the
/// Cortex-M0 a library call of some 45 instructions).
#[inline(always)]
fn step_position((mut row, col): (usize, usize), n: usize, out_w: usize) -> (usize, usize) {
    let mut col = col + n;
    while col >= out_w && out_w > 0 {
        col -= out_w;
        row += 1;
    }
    (row, col)
}

/// The conv (and pool) sums of `n` consecutive output positions from `pos` of a grid
/// `out_w` wide into `values` (one `i32` per filter and position, as `u32` bits), for
/// [`requantize_conv`]: with a pool (`p > 1`, `n` = 1) the max over the window's `p²` conv
/// pixels, else one pixel per position (with a pool and a left shift, the maximum of the
/// pixels' requantized values instead). With [`Pixels::Four`] the pixels go four at a time
/// through a quad or pair patch where they can ([`QUAD_PIXELS`], [`PAIR_PIXELS`]), else one
/// at a time. Four positions of a ReLU's requantization up to 127, or of one without a
/// fused activation, through a quad patch on a DSP core without MVE ([`REQUANT_QUADS`]) are requantized at once instead, into `out` or
/// narrowed in place in `values` as [`requantize_conv`] would write them.
#[inline(never)]
fn conv_positions<K: KnownFacts>(
    cp: &ConvPart<'_>,
    input: MapRows<'_, &[i8]>,
    (pos, n, out_w, (py, px)): (usize, usize, usize, (usize, usize)),
    (p, pixels): (usize, Pixels),
    monotonic: bool,
    (patch, terms): (&mut [u32], &[u32]),
    (values, mut out): (&mut [u32], Option<&mut [i8]>),
) -> Sums {
    let (f, g) = (K::FACTS, &cp.geometry);
    let (taps, channels) = (g.taps(), g.filters);
    // What the facts fix: the pool window, the pixels, the requantization and the kernel.
    let p = if holds(f, facts::POOL2, || false) {
        2
    } else if holds(f, facts::POOL, || true) {
        p.max(1)
    } else {
        1
    };
    let four = holds(f, facts::FOUR, || pixels == Pixels::Four);
    let monotonic = holds(f, facts::MONOTONIC, || monotonic);
    let one_channel = holds(f, facts::ONE_CHANNEL, || g.in_c == 1);
    let pointwise = holds(f, facts::POINTWISE, || g.k_h == 1 && g.k_w == 1);
    let inside = holds(f, facts::INSIDE, || false);
    // The positions' values; a quad may write up to four positions' (`values` has room
    // for them where quads run), of which the first `n` are used.
    let used = n * channels;
    if out_w == 0 || channels == 0 || values.len() < used {
        return Sums::Each;
    }
    // Conv pixel `i` and the position (0..n) its values go to: with a pool, one window's
    // pixels for one position (`n` = 1).
    let window = p > 1;
    let out_w = out_w.max(1);
    let pixel = |i: usize| {
        if window {
            ((py * p + i / p, px * p + i % p), 0)
        } else {
            // Stepped where a division is a library call; else divided.
            let at = if cfg!(all(target_arch = "arm", not(infer_core_long_multiply))) {
                step_position((py, px), i, out_w)
            } else {
                ((pos + i) / out_w, (pos + i) % out_w)
            };
            (at, i)
        }
    };
    let count = if window { p * p } else { n };
    // Each position's values hold its sums, requantized at the end, where the
    // requantization is monotonic (a pool window's maximum taken before it) or each
    // position is one pixel (no pool); else (a window with a left shift) each pixel's
    // requantized values, their maximum taken as they come.
    let sums = monotonic || n > 1;
    let several = four && sums;
    let pairs = PAIR_PIXELS && several && (!cfg!(test) || pos / QUAD % 3 == 2);
    let quads = QUAD_PIXELS && several && !pairs;
    // The running maxima start at the least value, unless pair or quad patches store every
    // value (not a pool window's; a last pixel alone, which a quad repeats into its own
    // position, starts its own below).
    if !(pairs || quads) || window {
        values
            .iter_mut()
            .take(used)
            .for_each(|v| *v = i32::MIN as u32);
    }
    let kernel_row = g.k_w * g.in_c;
    // A 1 × 1 kernel's quads gather each pixel's channels as one run, a one-channel 3 × 3
    // kernel's (below) its nine values straight into their words.
    let three = one_channel && holds(f, facts::KERNEL_3X3, || g.k_h == 3 && g.k_w == 3);
    let gather = if pointwise {
        gather_pixel_patch
    } else if inside {
        gather_patch::<true>
    } else {
        gather_patch::<false>
    };
    // Whether every position's sums are 0 (a background quad covering them all): the first
    // position's sums, set to 0, are then the only ones requantized.
    let mut background = false;
    // Whether a quad of four positions may requantize its sums itself, if its
    // requantization is a ReLU's up to 127 or the whole int8 range's (which the kernel
    // tests).
    let requantizes = REQUANT_QUADS && quads && !window && n == QUAD && monotonic;
    let mut i = 0;
    while i < count {
        if pairs {
            // Up to four pixels through a pair patch.
            let pixels = (count - i).min(QUAD);
            let Some(patch) = patch.get_mut(..2 * taps) else {
                return Sums::Each;
            };
            for k in 0..pixels {
                let at = pixel(i + k).0;
                if inside {
                    gather_pair_patch::<true>(g, kernel_row, input, cp.input_offset, at, patch, k);
                } else {
                    gather_pair_patch::<false>(g, kernel_row, input, cp.input_offset, at, patch, k);
                }
            }
            // Their positions: all one (a pool window) or consecutive.
            let (first, stride) = (pixel(i).1, if window { 0 } else { channels });
            let Some(values) = values.get_mut(first * channels..) else {
                return Sums::Each;
            };
            let conv = PairConv {
                patch,
                weights: cp.weights,
                taps,
                filters: channels,
                pixels,
                stride,
                // As for the quads: common in an image, rare in a deeper map.
                background: one_channel,
            };
            pair_filters(&conv, values);
            i += pixels;
        } else if quads {
            let Some(patch) = patch.get_mut(..QUAD * PatchWords::words(taps)) else {
                return Sums::Each;
            };
            // The four pixels and their positions: all one (a pool window) or consecutive.
            // Past the last pixel, a quad repeats it: into the same position (a window's
            // maximum, or a last pixel alone) or into positions past those used.
            let pixel = |k: usize| pixel((i + k).min(count - 1));
            let (first, stride) = (pixel(0).1, (pixel(1).1 - pixel(0).1) * channels);
            if stride == 0 && !window {
                values
                    .iter_mut()
                    .skip(first * channels)
                    .take(channels)
                    .for_each(|v| *v = i32::MIN as u32);
            }
            if int8_quads(g, pos + i, f) {
                let Some(values) = values.get_mut(first * channels..) else {
                    return Sums::Each;
                };
                let Some(bytes) = int8_of_words(patch).get_mut(..QuadConvI8::patch_bytes(taps))
                else {
                    return Sums::Each;
                };
                let zero_point = cp.input_offset.wrapping_neg() as i8;
                // A one-channel 3 × 3 kernel's quad at once, and whether it is background
                // (else looked for below).
                let quad_3x3 = match bytes.first_chunk_mut() {
                    Some(quad) if three => {
                        let at = core::array::from_fn(|k| pixel(k).0);
                        let put = |rows: [&[i8]; 3], s, run| {
                            put_3x3_run_i8(rows, s, zero_point, run, quad)
                        };
                        if inside {
                            gather_quad_3x3::<true>(g, input, cp.input_offset, at, put)
                        } else {
                            gather_quad_3x3::<false>(g, input, cp.input_offset, at, put)
                        }
                    }
                    _ => None,
                };
                if one_channel && quad_3x3.is_none() {
                    // Every byte written, so that a background patch is all zero points.
                    bytes.fill(zero_point);
                }
                if quad_3x3.is_none() {
                    let at = core::array::from_fn(|k| pixel(k).0);
                    if inside {
                        gather_quad_i8::<true>(g, kernel_row, input, zero_point, at, bytes);
                    } else {
                        gather_quad_i8::<false>(g, kernel_row, input, zero_point, at, bytes);
                    }
                }
                let background_patch = match quad_3x3 {
                    Some(nonzero) => !nonzero,
                    None => one_channel && bytes.iter().all(|&b| b == zero_point),
                };
                if background_patch {
                    background = background_quad(values, (stride, window), channels);
                } else {
                    let conv = QuadConvI8 {
                        patch: bytes,
                        weights: cp.weights,
                        taps,
                        filters: channels,
                        offset_terms: terms,
                        stride,
                    };
                    quad_filters_i8(&conv, values);
                }
                i += QUAD;
                continue;
            }
            // A one-channel 3 × 3 kernel's quad at once, and whether it is background (else
            // looked for below).
            let quad_3x3 = match patch.first_chunk_mut() {
                Some(quad) if three => {
                    let at = core::array::from_fn(|k| pixel(k).0);
                    let offset = cp.input_offset;
                    let put = |rows: [&[i8]; 3], s, run| gather_3x3_run(rows, s, offset, run, quad);
                    if inside {
                        gather_quad_3x3::<true>(g, input, offset, at, put)
                    } else {
                        gather_quad_3x3::<false>(g, input, offset, at, put)
                    }
                }
                _ => None,
            };
            // A conv (not 1 × 1: one run per pixel) of whole groups of channels: each run of
            // the four pixels along one row
            // at once (a quad may end one row and begin the next, or repeat its last pixel).
            // (Known to be, its stage links no other way of gathering: resnet-tiny some
            // 1,700 B of code on the Cortex-M4.)
            let whole_groups = holds(f, facts::GROUPS, || g.in_c % 4 == 0);
            let groups = !window && !one_channel && !pointwise && whole_groups;
            let mut k = 0;
            while groups && k < QUAD {
                let at = pixel(k).0;
                let mut run = 1;
                while k + run < QUAD && pixel(k + run).0 == (at.0, at.1 + run) {
                    run += 1;
                }
                let slot = PatchSlot {
                    pixel: k,
                    pixels: QUAD,
                };
                gather_groups(g, input, cp.input_offset, at, patch, (slot, run));
                k += run;
            }
            // A one-channel 3 × 3 kernel with padding is always `gather_quad_3x3`'s: it
            // declines only an input zero point outside int8, which no model that loads
            // has (`format::check_output_quant`), so that its stage links no walk (some
            // 3,500 B of ds-cnn's code on the M4F). (Rolled: unrolled, the four calls and
            // pixel positions took some 200 B.)
            let gathered = groups || quad_3x3.is_some() || three && !inside;
            for k in 0..if gathered {
                0
            } else {
                core::hint::black_box(QUAD)
            } {
                let slot = PatchSlot {
                    pixel: k,
                    pixels: QUAD,
                };
                gather(
                    g,
                    kernel_row,
                    input,
                    cp.input_offset,
                    pixel(k).0,
                    patch,
                    slot,
                );
            }
            let Some(values) = values.get_mut(first * channels..) else {
                return Sums::Each;
            };
            // A background patch (every sum 0) is common in an image (one channel) and rare
            // in a deeper map, where looking for it costs more than it saves.
            let background_patch = match quad_3x3 {
                Some(nonzero) => !nonzero,
                None => one_channel && all_zero(patch),
            };
            if background_patch {
                background = background_quad(values, (stride, window), channels);
            } else {
                let conv = QuadConv {
                    patch,
                    weights: cp.weights,
                    taps,
                    filters: channels,
                    stride,
                    wide: cp.wide,
                };
                let wide = holds(f, facts::PREPARED_CONV, || widened(cp));
                if requantizes {
                    let bytes = match out.as_deref_mut() {
                        Some(out) => out,
                        None => int8_of_words(values),
                    };
                    // A stage whose facts fix a ReLU floor links no whole-range assembly.
                    let relu = holds(f, facts::RELU, || cp.requant.relu_floor());
                    let rq = &cp.requant;
                    let done = match (wide, relu) {
                        (true, true) => quad_filters_requant_rows::<true, false>(&conv, rq, bytes),
                        (true, false) => quad_filters_requant_rows::<true, true>(&conv, rq, bytes),
                        (false, true) => {
                            quad_filters_requant_rows::<false, false>(&conv, rq, bytes)
                        }
                        (false, false) => {
                            quad_filters_requant_rows::<false, true>(&conv, rq, bytes)
                        }
                    };
                    if done {
                        return Sums::Requantized;
                    }
                }
                if wide {
                    quad_filters_rows::<true>(&conv, values);
                } else {
                    quad_filters_rows::<false>(&conv, values);
                }
            }
            i += QUAD;
        } else {
            let (at, slot) = pixel(i);
            let Some(values) = values.get_mut(slot * channels..(slot + 1) * channels) else {
                return Sums::Each;
            };
            // Words for every filter where the build prepared them (the Cortex-M0's).
            let prepared = WORD_WEIGHTS && holds(f, facts::PREPARED_CONV, || widened(cp));
            one_pixel(cp, input, at, (sums, inside, prepared), patch, values);
            i += 1;
        }
    }
    if background {
        Sums::Background
    } else {
        Sums::Each
    }
}

/// What [`conv_positions`] leaves [`requantize_conv`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sums {
    /// Each position's sums.
    Each,
    /// Every position's sums 0 (a background quad), of which only the first position's are
    /// written.
    Background,
    /// None: the positions' int8 values are written.
    Requantized,
}

/// Requantizes the `n` positions [`conv_positions`] computed (`background`: its result)
/// into `out`, or narrowed in place in `values` ([`ChannelRequant::requantize_positions`]);
/// a background quad's values also into `kept` ([`keep_background`]: true if they are).
#[inline(never)]
fn requantize_conv<K: KnownFacts>(
    cp: &ConvPart<'_>,
    values: &mut [u32],
    (n, monotonic, background): (usize, bool, bool),
    mut out: Option<&mut [i8]>,
    kept: &mut [u32],
) -> bool {
    let f = K::FACTS;
    let channels = cp.geometry.filters;
    let monotonic = holds(f, facts::MONOTONIC, || monotonic);
    // A background quad set only the first position's sums.
    let (values, positions) = if background {
        (values.get_mut(..channels).unwrap_or_default(), n)
    } else {
        (values.get_mut(..n * channels).unwrap_or_default(), 1)
    };
    if monotonic {
        // The max accumulators with their bias, requantized.
        let relu = holds(f, facts::RELU, || cp.requant.relu_floor());
        cp.requant
            .requantize_positions(values, channels, relu, out.as_deref_mut());
    } else if n > 1 {
        // One pixel's sums per position, with a left shift somewhere: the general way.
        cp.requant
            .requantize_each(values, channels, out.as_deref_mut());
    } else {
        // The maxima of requantized values (or one pixel's, requantized as it came).
        let n = values.len();
        narrow(values, n, out.as_deref_mut());
    }
    let bytes = match out {
        Some(out) => out,
        None => int8_of_words(values),
    };
    if positions > 1 {
        // A background quad's values: the first position's, for each (its `n` ≤ 4
        // positions' bytes fit the first position's words).
        if let Some((first, rest)) = bytes.split_at_mut_checked(channels) {
            let len = ((positions - 1) * channels).min(rest.len());
            if let Some(rest) = rest.get_mut(..len) {
                repeat_position(rest, first);
            }
        }
    }
    background && keep_background(bytes, kept)
}

/// Keeps a background quad's values (`bytes`, its positions' and at least the first's)
/// in `kept` ([`StageRun::background`]) as four positions' (the first position's
/// repeated): true if they fit.
#[inline(always)]
fn keep_background(bytes: &[i8], kept: &mut [u32]) -> bool {
    let kept = int8_of_words(kept);
    let channels = kept.len() / QUAD;
    match bytes.get(..channels) {
        Some(first) if channels > 0 => {
            repeat_position(kept, first);
            true
        }
        _ => false,
    }
}

/// Copies one position's values (`first`, at least one) into each whole position of `to`.
#[inline(always)]
fn repeat_position(to: &mut [i8], first: &[i8]) {
    for position in to.chunks_exact_mut(first.len().max(1)) {
        copy_bytes(position, first);
    }
}

/// Puts a background quad's `len` bytes (its positions' values) from those kept (`kept`,
/// [`keep_background`]) into `out`, or into `values`' bytes without it, as
/// [`requantize_conv`] puts them.
#[inline(never)]
fn put_background(kept: &mut [u32], values: &mut [u32], len: usize, out: Option<&mut [i8]>) {
    let bytes = match out {
        Some(out) => out,
        None => int8_of_words(values),
    };
    if let (Some(to), Some(from)) = (bytes.get_mut(..len), int8_of_words(kept).get(..len)) {
        copy_bytes(to, from);
    }
}

/// Puts a background quad's sums (four pixels whose sums are all 0) into `values` as the
/// quad kernels put theirs ([`put_sum`]): pixel `k`'s `channels` values from `k · stride`
/// on, folded into a pool window's running maxima (`window`, `stride` 0). Without a window,
/// the quad covers every position of its call (at most four): only the first position's
/// sums are set, and the result says so (true).
#[inline(always)]
fn background_quad(values: &mut [u32], (stride, window): (usize, bool), channels: usize) -> bool {
    if !window {
        values.iter_mut().take(channels).for_each(|v| *v = 0);
        return true;
    }
    background_window(values, stride, channels);
    false
}

/// [`background_quad`] for a pool window: each sum folded into the window's running maxima.
#[inline(never)]
fn background_window(values: &mut [u32], stride: usize, channels: usize) {
    // An opaque trip count keeps the loop rolled: unrolled, it took some 500 B of flash for
    // a path a digit takes a few dozen times.
    for k in 0..core::hint::black_box(QUAD) {
        for c in 0..channels {
            put_sum(values, k * stride + c, stride, 0);
        }
    }
}

/// Folds one conv pixel's accumulators into `values` (one per filter): its patch, then
/// the filters four at a time where `SMLAD` is emulated, two at a time, one; or, with
/// `prepared` (the Cortex-M0's weights widened to words for every filter, `widened`), all
/// four at a time from the words ([`dot4_words`]).
#[inline(never)]
fn one_pixel(
    cp: &ConvPart<'_>,
    input: MapRows<'_, &[i8]>,
    at: (usize, usize),
    (monotonic, inside, prepared): (bool, bool, bool),
    patch: &mut [u32],
    values: &mut [u32],
) {
    let g = &cp.geometry;
    let taps = g.taps();
    let rq = &cp.requant;
    let Some(patch) = patch.get_mut(..PatchWords::words(taps)) else {
        return;
    };
    if taps == 0 {
        return;
    }
    let kernel_row = g.k_w * g.in_c;
    let slot = PatchSlot::SINGLE;
    if inside {
        gather_patch::<true>(g, kernel_row, input, cp.input_offset, at, patch, slot);
    } else {
        gather_patch::<false>(g, kernel_row, input, cp.input_offset, at, patch, slot);
    }
    // Stops at the first word that is not zero: most patches past the first layer's.
    let background = !patch.iter().any(|&w| w != 0);
    if prepared {
        // On the Cortex-M0, every filter's weights widened to words (`kernels::words`,
        // whole quads of filters: `widened`), four filters at a time.
        for (qi, quad) in values.chunks_exact_mut(4).enumerate() {
            let a = if background {
                [0; 4]
            } else {
                dot4_words(
                    patch,
                    cp.wide.get(4 * taps * qi..).unwrap_or_default(),
                    taps,
                )
            };
            for (k, (best, a)) in quad.iter_mut().zip(a).enumerate() {
                window(rq, 4 * qi + k, a, monotonic, best);
            }
        }
        return;
    }
    let mut weights = cp.weights.chunks_exact(taps);
    // Filters four at a time sharing each patch load (where `four_filters` says), then
    // two, then one.
    let split = if four_filters(taps) {
        values.len() / 4 * 4
    } else {
        0
    };
    let (quads, rest) = values.split_at_mut(split);
    for (qi, quad) in quads.chunks_exact_mut(4).enumerate() {
        let (Some(w0), Some(w1), Some(w2), Some(w3)) = (
            weights.next(),
            weights.next(),
            weights.next(),
            weights.next(),
        ) else {
            return;
        };
        let a = if background {
            [0; 4]
        } else {
            dot_packed4(patch, [w0, w1, w2, w3])
        };
        for (k, (best, a)) in quad.iter_mut().zip(a).enumerate() {
            window(rq, 4 * qi + k, a, monotonic, best);
        }
    }
    let done = split;
    let mut pairs = rest.chunks_exact_mut(2);
    for (pi, pair) in (&mut pairs).enumerate() {
        let (Some(w0), Some(w1)) = (weights.next(), weights.next()) else {
            return;
        };
        let (a0, a1) = if background {
            (0, 0)
        } else {
            dot_packed2(patch, w0, w1)
        };
        window(rq, done + 2 * pi, a0, monotonic, &mut pair[0]);
        window(rq, done + 2 * pi + 1, a1, monotonic, &mut pair[1]);
    }
    if let [last] = pairs.into_remainder() {
        let Some(w) = weights.next() else {
            return;
        };
        let a = if background { 0 } else { dot_packed(patch, w) };
        window(rq, g.filters.saturating_sub(1), a, monotonic, last);
    }
}

/// Folds filter `f`'s window accumulator `a` (without bias) into its running max `best`:
/// of the accumulators themselves if `monotonic` (the stage adds the bias once, after the
/// max: exact while the sums fit an `i32`), else of the requantized values.
#[inline(always)]
fn window(rq: &ChannelRequant<'_>, f: usize, a: i32, monotonic: bool, best: &mut u32) {
    let v = if monotonic {
        a
    } else {
        let Some(v) = requantized(rq, f, a) else {
            return;
        };
        v
    };
    *best = (*best as i32).max(v) as u32;
}

/// Filter `f`'s requantization of accumulator `a` (without bias), `None` past the
/// filters. (Not inlined: a requantization inlined into each of [`one_pixel`]'s dozen
/// uses of [`window`] took some 3 KB of code on the Cortex-M0, for the rare model whose
/// requantization is not monotonic.)
#[inline(never)]
fn requantized(rq: &ChannelRequant<'_>, f: usize, a: i32) -> Option<i32> {
    let (bias, m, s) = rq.channel(f)?;
    Some(i32::from(rq.apply(a.wrapping_add(bias), m, s)))
}

/// The max pool of position `(py, px)` of an `_ × w × c` input into the first `c` bytes of
/// `values`.
#[inline(never)]
fn pool_position(
    input: MapRows<'_, &[i8]>,
    (w, c): (usize, usize),
    (py, px): (usize, usize),
    p: usize,
    values: &mut [i8],
) {
    let Some(values) = values.get_mut(..c) else {
        return;
    };
    values.fill(i8::MIN);
    for dy in 0..p {
        for dx in 0..p {
            let start = (input.slot(py * p + dy) * w + px * p + dx) * c;
            let Some(px_values) = input.data.get(start..start + c) else {
                return;
            };
            for (v, &x) in values.iter_mut().zip(px_values) {
                *v = (*v).max(x);
            }
        }
    }
}

/// Whether a streamed dense layer's step at position `position` takes the int8 values as
/// they are ([`dense_rows_i8`], the offset folded into the sums) rather than a widened
/// patch: on MVE cores, whose `VMLADAVA.S8` multiplies 16 int8 pairs at once, for two units
/// or more. The unit tests take both ways, alternating between positions.
fn int8_dense(units: usize, position: usize) -> bool {
    units >= 2 && (cfg!(infer_core_mve) || (cfg!(test) && position % 2 == 1))
}

/// Whether a streamed dense layer's unit pairs go through [`dense_rows`] (whole octets of
/// values): on DSP cores, on the Cortex-M3 (its portable twin, in less flash than the pairs
/// of dot products: two-blocks' inference code 9,718 -> 8,374 B for 0.6 % more
/// instructions, tutorial-full's 13,734 -> 12,176 B for 3.2 % more), and in the unit tests.
const DENSE_ROWS: bool = cfg!(any(infer_core_dsp, infer_core_long_multiply, test));

/// Adds the values of one position (`values`, inputs `at..at + values.len()` of the dense
/// layer, whose rows are `n_in` long) into the dense accumulators `acc`, unless every value
/// is at the layer's input zero point.
#[inline(never)]
fn dense_position<K: KnownFacts>(
    d: &DensePart<'_>,
    values: &[i8],
    n_in: usize,
    at: usize,
    patch: &mut [u32],
    acc: &mut [u32],
) {
    let f = K::FACTS;
    // Whole octets, where known, as the compiler sees them: no code for a tail of taps.
    let ch = if holds(f, facts::OCTETS, || false) {
        values.len() / 8 * 8
    } else {
        values.len()
    };
    let even = holds(f, facts::EVEN_UNITS, || d.units % 2 == 0);
    let Some(patch) = patch.get_mut(..PatchWords::words(ch)) else {
        return;
    };
    // With offset terms alone (already in `acc`), the values as they are with offset 0,
    // every position; else unless every one is at the zero point.
    let sums = d.terms_alone();
    if sums || int8_dense(d.units, at / ch.max(1)) {
        let offset = if sums { 0 } else { d.input_offset };
        let zero_point = d.input_offset.wrapping_neg();
        if !sums && values.iter().all(|&v| i32::from(v) == zero_point) {
            return;
        }
        let rows = DenseRowsI8 {
            values,
            weights: d.weights.get(at..).unwrap_or_default(),
            channels: ch,
            stride: n_in,
            offset,
        };
        dense_rows_i8(&rows, acc);
        if let (false, Some(last)) = (even, acc.last_mut()) {
            let row = d.weights.get((d.units - 1) * n_in + at..);
            let row = row.and_then(|r| r.get(..ch)).unwrap_or_default();
            let values = rows.values.get(..ch).unwrap_or_default();
            *last = last.wrapping_add(dot_i8_offset(values, offset, row) as u32);
        }
        return;
    }
    pack_run(patch, values.get(..ch).unwrap_or_default(), d.input_offset);
    if all_zero(patch) {
        return;
    }
    let row = |u: usize| {
        d.weights
            .get(u * n_in + at..)
            .and_then(|r| r.get(..ch))
            .unwrap_or(&[])
    };
    let mut done = 0;
    // Whole quads of units from the rows the build widened beside the model (DSP cores: the
    // Cortex-M3's prepared rows are paired, another layout, and Helium cores' are offset terms,
    // taken above), where it has them (the model checked them, `StackFile::prepare`, for
    // whole sixteens of values a position): each quad's words of the position's inputs.
    let widened_rows = !PAIRED && !cfg!(infer_core_mve);
    if widened_rows
        && holds(f, facts::PREPARED_DENSE, || {
            !d.wide.is_empty() && ch % 16 == 0
        })
    {
        let wide = d.wide.get(2 * at..).unwrap_or_default();
        dense_quads_widened(patch, wide, (ch, 2 * n_in), acc);
        done = d.units / 4 * 4;
        // (Where the units are known whole quads, nothing below is linked: tutorial-full's
        // dense_3 linked `dense_rows` and the pairs' loop, some 300 B on the Cortex-M4.)
        if holds(f, facts::QUAD_UNITS, || done == d.units) {
            return;
        }
    }
    if DENSE_ROWS && holds(f, facts::OCTETS, || ch % 8 == 0) && d.units - done >= 2 {
        let rows = DenseRows {
            patch,
            weights: d.weights.get(done * n_in + at..).unwrap_or_default(),
            channels: ch,
            stride: n_in,
        };
        dense_rows(&rows, acc.get_mut(done..).unwrap_or_default());
        if even {
            return;
        }
        done = d.units / 2 * 2;
    } else if DENSE_ROWS
        && holds(f, facts::OCTETS, || false)
        && holds(f, facts::EVEN_UNITS, || false)
    {
        // Known whole octets and an even number of units, under two: none.
        return;
    }
    let acc = acc.get_mut(done..).unwrap_or_default();
    let mut pairs = acc.chunks_exact_mut(2);
    for (i, pair) in (&mut pairs).enumerate() {
        let i = i + done / 2;
        let (s0, s1) = dot_packed2(patch, row(2 * i), row(2 * i + 1));
        pair[0] = pair[0].wrapping_add(s0 as u32);
        pair[1] = pair[1].wrapping_add(s1 as u32);
    }
    if let ([last], false) = (pairs.into_remainder(), even) {
        *last = last.wrapping_add(dot_packed(patch, row(d.units.saturating_sub(1))) as u32);
    }
}

#[cfg(test)]
mod tests {
    use super::super::format::tests::{input, OwnedParams};
    use super::super::format::{AvgPoolOp, DenseOp, DepthwiseOp, PoolOp};
    use super::super::run::tests::reference_and_fast;
    use super::super::run::BufferSizes;
    use super::*;
    use crate::kernels::average_pool::AvgPoolGeometry;
    use crate::kernels::depthwise::DepthwiseGeometry;
    use crate::kernels::window::Window;
    use crate::kernels::TestRng;
    use crate::stack::facts::Unknown;
    use std::collections::BTreeSet;
    use std::vec;
    use std::vec::Vec;

    /// Random parameters; with `wild`, some channels get a negative multiplier or a left
    /// shift (the requantization is then not monotonic and the stages must requantize
    /// every window).
    fn params(rng: &mut TestRng, weights: usize, channels: usize, wild: bool) -> OwnedParams {
        let mut p = OwnedParams::random(rng, weights, channels);
        if wild {
            p.make_wild(rng, 3);
        }
        p
    }

    /// An operation to be, with the index of its parameters.
    enum Planned {
        Conv(ConvGeometry, bool, usize),
        Pool(PoolOp),
        Dense(usize, usize, bool, usize),
        Depthwise(DepthwiseOp<'static>, usize),
        AvgPool(AvgPoolOp),
    }

    /// A random stack over a random input, and its parameters.
    fn random_stack(
        rng: &mut TestRng,
        wild: bool,
    ) -> ((u16, u16, u16), Vec<Planned>, Vec<OwnedParams>) {
        let (h0, w0, c0) = (
            4 + rng.below(9) as usize,
            4 + rng.below(9) as usize,
            1 + rng.below(3) as usize,
        );
        let (mut h, mut w, mut c) = (h0, w0, c0);
        let mut ops = Vec::new();
        let mut owned = Vec::new();
        let blocks = 1 + rng.below(3);
        for _ in 0..blocks {
            if rng.below(4) != 0 {
                let k = 1 + rng.below(3) as usize;
                // Sometimes a kernel that is not square (an `Op::Conv2dRect`).
                let k_w = if rng.below(4) == 0 {
                    1 + rng.below(4) as usize
                } else {
                    k
                };
                let g = ConvGeometry {
                    in_h: h,
                    in_w: w,
                    in_c: c,
                    k_h: k,
                    k_w,
                    // Sometimes 16 filters: the next conv's patch is then whole blocks of
                    // 16 taps, the quad kernel's block loop; sometimes as many as the input
                    // has channels: a 1 × 1 conv then runs over its input.
                    filters: match rng.below(6) {
                        0 => 16,
                        1 => c,
                        _ => 1 + rng.below(9) as usize,
                    },
                    stride: 1 + rng.below(2) as usize,
                    padding: if rng.below(2) == 0 {
                        Padding::Valid
                    } else {
                        Padding::Same
                    },
                };
                if g.out_h() == 0 || g.out_w() == 0 {
                    continue;
                }
                owned.push(params(rng, g.filters * g.taps(), g.filters, wild));
                ops.push(Planned::Conv(g, rng.below(3) != 0, owned.len() - 1));
                (h, w, c) = (g.out_h(), g.out_w(), g.filters);
            }
            // Sometimes a depthwise conv or an average pool, each a stage of its own.
            match rng.below(6) {
                0 | 1 => {
                    let window = Window::random(rng);
                    let (min, max) = random_clamp(rng);
                    let multiplier = 1 + rng.below(2) as usize;
                    let g = DepthwiseGeometry {
                        in_h: h,
                        in_w: w,
                        in_c: c,
                        multiplier,
                        window,
                    };
                    if g.out_h() > 0 && g.out_w() > 0 {
                        owned.push(params(rng, g.weights(), g.out_c(), wild));
                        let op = Op::from_shape(
                            OpShape::DepthwiseConv2d {
                                geometry: g,
                                min,
                                max,
                            },
                            Some(EMPTY_PARAMS),
                        );
                        if let Ok(Op::DepthwiseConv2d(d)) = op {
                            ops.push(Planned::Depthwise(d, owned.len() - 1));
                            (h, w, c) = (g.out_h(), g.out_w(), g.out_c());
                        }
                    }
                }
                2 => {
                    let (min, max) = random_clamp(rng);
                    let g = AvgPoolGeometry {
                        in_h: h,
                        in_w: w,
                        channels: c,
                        window: Window::random(rng),
                    };
                    if g.out_h() > 0 && g.out_w() > 0 {
                        let op = Op::from_shape(
                            OpShape::AvgPool2d {
                                geometry: g,
                                min,
                                max,
                            },
                            None,
                        );
                        if let Ok(Op::AvgPool2d(p)) = op {
                            ops.push(Planned::AvgPool(p));
                            (h, w) = (g.out_h(), g.out_w());
                        }
                    }
                }
                _ => {}
            }
            if rng.below(3) != 0 {
                let pool = 1 + rng.below(3) as usize;
                if pool <= h && pool <= w {
                    ops.push(Planned::Pool(PoolOp {
                        in_h: h as u16,
                        in_w: w as u16,
                        channels: c as u16,
                        pool: pool as u16,
                    }));
                    (h, w) = (h / pool, w / pool);
                }
            }
        }
        let mut inputs = h * w * c;
        if rng.below(3) == 0 {
            let units = 1 + rng.below(12) as usize;
            owned.push(params(rng, units * inputs, units, wild));
            ops.push(Planned::Dense(inputs, units, true, owned.len() - 1));
            inputs = units;
        }
        // The logits layer: no ReLU, output zero point 0, shifts ≤ 0 (as the decoder
        // requires of a model's last layer).
        let units = 1 + rng.below(10) as usize;
        owned.push(OwnedParams::logits(rng, units * inputs, units));
        ops.push(Planned::Dense(inputs, units, false, owned.len() - 1));
        ((h0 as u16, w0 as u16, c0 as u16), ops, owned)
    }

    /// Parameters to build an operation with, replaced by its own.
    const EMPTY_PARAMS: crate::format::ChannelParams<'static> = crate::format::ChannelParams {
        weights: &[],
        weight_scales: &[],
        bias: &[],
        multiplier: &[],
        shift: &[],
        output: crate::format::QuantParams {
            scale: 1.0,
            zero_point: 0,
        },
    };

    /// A random activation clamp: none, from a zero point, or a narrow range.
    fn random_clamp(rng: &mut TestRng) -> (i8, i8) {
        match rng.below(3) {
            0 => (-128, 127),
            1 => (rng.i8(), 127),
            _ => {
                let lo = rng.i8();
                (lo, lo.saturating_add(rng.below(100) as i8))
            }
        }
    }

    fn ops<'p>(planned: &[Planned], owned: &'p [OwnedParams]) -> Vec<Op<'p>> {
        let mut ops = Vec::new();
        for p in planned {
            let op = match *p {
                Planned::Conv(g, relu, i) => {
                    Op::from_shape(OpShape::Conv2d { geometry: g, relu }, Some(owned[i].view()))
                        .unwrap()
                }
                Planned::Depthwise(d, i) => Op::DepthwiseConv2d(DepthwiseOp {
                    params: owned[i].view(),
                    ..d
                }),
                Planned::AvgPool(p) => Op::AvgPool2d(p),
                Planned::Pool(p) => Op::MaxPool2d(p),
                Planned::Dense(inputs, units, relu, i) => Op::Dense(DenseOp {
                    inputs: inputs as u32,
                    units: units as u16,
                    relu,
                    params: owned[i].view(),
                }),
            };
            ops.push(op);
        }
        ops
    }

    /// A random image, often with background (the input zero point `zero_point`) patches
    /// or all background.
    pub(super) fn image(rng: &mut TestRng, len: usize, zero_point: i32) -> Vec<i8> {
        let background = rng.below(4);
        (0..len)
            .map(|_| {
                if background == 3 || rng.below(4) < background {
                    zero_point as i8
                } else {
                    rng.i8()
                }
            })
            .collect()
    }

    /// Runs the stage `parts` on `x` knowing the facts of `K` and knowing none, and checks
    /// that both give the same bits: its values over `other` (the add's other operand or
    /// anything), or with `logits` its logits; without a dense layer also row by row.
    fn same_as_unknown<K: KnownFacts>(
        parts: &Parts<'_>,
        x: &[i8],
        words: usize,
        other: &[i8],
        logits: bool,
    ) {
        let run = |known: bool| -> (Vec<i8>, Vec<i32>) {
            let mut patch = vec![0u32; words];
            let (mut values, mut wide) = (other.to_vec(), vec![0i32; 16]);
            match (known, logits) {
                (true, true) => run_general_logits::<K>(parts, x, &mut patch, &mut wide),
                (false, true) => run_general_logits::<Unknown>(parts, x, &mut patch, &mut wide),
                (true, false) => run_general::<K>(parts, x, &mut patch, &mut values),
                (false, false) => run_general::<Unknown>(parts, x, &mut patch, &mut values),
            }
            (values, wide)
        };
        assert_eq!(run(true), run(false), "facts {:#x}: {parts:?}", K::FACTS);
        if parts.dense.is_some() || parts.add.is_some() {
            return;
        }
        // Row by row, in two calls, as a chain's producer writes them.
        let mut rows = other.to_vec();
        let out_h = match &parts.conv {
            Some(cp) => cp.geometry.out_h(),
            None => parts.input.0,
        } / parts.pool.max(1);
        let mut patch = vec![0u32; words];
        for part in [0..out_h / 2, out_h / 2..out_h] {
            let output = MapRows::whole_mut(&mut rows);
            run_general_rows::<K>(parts, x, &mut patch, output, part);
        }
        assert_eq!(rows, run(false).0, "rows, facts {:#x}", K::FACTS);
    }

    /// The engine's instances for these sets of facts, each with its facts.
    macro_rules! known_sets {
        ($($facts:expr),* $(,)?) => {
            [$((
                $facts,
                same_as_unknown::<Known<{ $facts }>>
                    as fn(&Parts<'_>, &[i8], usize, &[i8], bool),
            )),*]
        };
    }

    #[test]
    fn stages_compute_the_same_bits_whatever_facts_they_know() {
        use super::facts::*;
        // Each fact alone, known to hold and known not to (but an add: the random stacks
        // have none; the graph tests take adds in place), then sets as whole stages know
        // them.
        let sets = known_sets![
            known(NONE, CONV, true),
            known(NONE, CONV, false),
            known(NONE, POOL, true),
            known(NONE, POOL, false),
            known(NONE, POOL2, true),
            known(NONE, POOL2, false),
            known(NONE, DENSE, true),
            known(NONE, DENSE, false),
            known(NONE, ADD, false),
            known(NONE, LOGITS, true),
            known(NONE, LOGITS, false),
            known(NONE, FOUR, true),
            known(NONE, FOUR, false),
            known(NONE, ONE_CHANNEL, true),
            known(NONE, ONE_CHANNEL, false),
            known(NONE, POINTWISE, true),
            known(NONE, POINTWISE, false),
            known(NONE, PREPARED_CONV, false),
            known(NONE, PREPARED_DENSE, false),
            known(NONE, MONOTONIC, true),
            known(NONE, MONOTONIC, false),
            known(NONE, RELU, true),
            known(NONE, RELU, false),
            known(NONE, EVEN_UNITS, true),
            known(NONE, EVEN_UNITS, false),
            known(NONE, QUAD_UNITS, true),
            known(NONE, QUAD_UNITS, false),
            known(NONE, GROUPS, true),
            known(NONE, GROUPS, false),
            known(NONE, OCTETS, true),
            known(NONE, OCTETS, false),
            known(NONE, INT8_PATCH, true),
            known(NONE, INT8_PATCH, false),
            known(NONE, INSIDE, true),
            known(NONE, INSIDE, false),
            known(NONE, DENSE_MONOTONIC, true),
            known(NONE, DENSE_MONOTONIC, false),
            known(NONE, DENSE_RELU, true),
            known(NONE, DENSE_RELU, false),
            // A conv, its 2×2 pool: values, and into a dense layer's logits.
            of_list(&[
                (CONV, true),
                (POOL, true),
                (POOL2, true),
                (FOUR, true),
                (MONOTONIC, true),
                (RELU, true),
                (DENSE, false),
                (ADD, false),
                (LOGITS, false)
            ]),
            of_list(&[
                (CONV, true),
                (POOL, true),
                (POOL2, true),
                (FOUR, true),
                (MONOTONIC, true),
                (DENSE, true),
                (ADD, false),
                (LOGITS, true),
                (EVEN_UNITS, true),
                (OCTETS, true)
            ]),
            // A conv into a hidden dense layer's values (ReLU).
            of_list(&[
                (CONV, true),
                (DENSE, true),
                (ADD, false),
                (LOGITS, false),
                (DENSE_MONOTONIC, true),
                (DENSE_RELU, true)
            ]),
            // A conv without a pool in whole quads of positions, four or one pixels.
            of_list(&[
                (CONV, true),
                (POOL, false),
                (POOL2, false),
                (FOUR, true),
                (MONOTONIC, true),
                (DENSE, false),
                (ADD, false),
                (LOGITS, false)
            ]),
            of_list(&[
                (CONV, true),
                (POOL, false),
                (POOL2, false),
                (FOUR, false),
                (MONOTONIC, true),
                (RELU, true),
                (DENSE, false),
                (ADD, false)
            ]),
            // A pool alone, a dense layer alone.
            of_list(&[
                (CONV, false),
                (POOL, true),
                (DENSE, false),
                (ADD, false),
                (LOGITS, false)
            ]),
            of_list(&[
                (CONV, false),
                (POOL, false),
                (DENSE, true),
                (ADD, false),
                (EVEN_UNITS, true)
            ]),
            of_list(&[
                (CONV, false),
                (POOL, false),
                (DENSE, true),
                (ADD, false),
                (LOGITS, false),
                (DENSE_MONOTONIC, true),
                (DENSE_RELU, true)
            ]),
        ];
        let mut ran = vec![0usize; sets.len()];
        let mut rng = TestRng(0xFAC75);
        let cases = if cfg!(miri) { 6 } else { 800 };
        for case in 0..cases {
            let wild = case % 3 == 2;
            let (hwc, planned, owned) = random_stack(&mut rng, wild);
            let ops = ops(&planned, &owned);
            let file = StackFile::new(input(hwc.0, hwc.1, hwc.2), &ops);
            let pixels = if case % 4 == 3 {
                Pixels::One
            } else {
                Pixels::Four
            };
            for stage in plan_file(&file).iter().filter(|s| !s.alone) {
                let Some(parts) = Parts::of(&file, stage) else {
                    continue;
                };
                let taps = parts.conv.map_or(0, |c| c.geometry.taps());
                let (channels, out_len) = match &parts.conv {
                    Some(c) => (c.geometry.filters, c.geometry.out_h() * c.geometry.out_w()),
                    None => (parts.input.2, parts.input.0 * parts.input.1),
                };
                let units = parts.dense.map_or(0, |d| d.units);
                let dense = parts.dense.map_or((0, 0), |d| (d.inputs, d.units));
                let one_channel = parts.conv.is_some_and(|c| c.geometry.in_c == 1);
                let taps = (taps, one_channel);
                let words = general_words(taps, channels, dense, parts.pool.max(1), pixels);
                let (h, w, c) = parts.input;
                let x = image(&mut rng, h * w * c, -input_offset(&file, stage.first));
                let other = image(&mut rng, out_len * channels, 0);
                let logits = units > 0 && units <= 16 && case % 2 == 0;
                let found = facts_of(&parts, pixels, logits);
                for ((facts, check), ran) in sets.iter().zip(&mut ran) {
                    if agree(found, *facts) {
                        check(&parts, &x, words, &other, logits);
                        *ran += 1;
                    }
                }
            }
        }
        if !cfg!(miri) {
            for ((facts, _), ran) in sets.iter().zip(&ran) {
                assert!(*ran > 0, "no random stage had the facts {facts:#x}");
            }
        }
    }

    /// A 1 × 1 conv over its own input equals the reference on maps whose positions are
    /// not whole chunks of [`pointwise_chunk`] (a last, shorter chunk) and on whole chunks,
    /// with one and four pixels at a time.
    #[test]
    fn a_pointwise_conv_over_its_input_matches_the_reference_on_every_chunking() {
        let mut rng = TestRng(0xC4A2);
        for (case, &(h, w)) in [(5, 5), (4, 3), (25, 5), (7, 7), (4, 6), (14, 14)]
            .iter()
            .enumerate()
        {
            let c = 4 * (1 + case % 2);
            let first = ConvGeometry {
                in_h: h,
                in_w: w,
                in_c: 1,
                k_h: 3,
                k_w: 3,
                filters: c,
                stride: 1,
                padding: Padding::Same,
            };
            // (A second 3 × 3 conv: the first two stages run as one through a ring, and the
            // third reads a whole map.)
            let second = ConvGeometry { in_c: c, ..first };
            let pointwise = ConvGeometry {
                in_c: c,
                k_h: 1,
                k_w: 1,
                filters: c,
                padding: Padding::Valid,
                ..first
            };
            // (And a conv after it, which the logits layer streams from.)
            let last = ConvGeometry {
                in_c: pointwise.filters,
                filters: 2,
                ..first
            };
            let owned = [
                params(&mut rng, first.filters * first.taps(), c, false),
                params(&mut rng, c * second.taps(), c, false),
                params(&mut rng, pointwise.filters * c, pointwise.filters, false),
                params(&mut rng, 2 * last.taps(), 2, false),
                OwnedParams::logits(&mut rng, 3 * h * w * 2, 3),
            ];
            let planned = [
                Planned::Conv(first, true, 0),
                Planned::Conv(second, true, 1),
                Planned::Conv(pointwise, true, 2),
                Planned::Conv(last, true, 3),
                Planned::Dense(h * w * 2, 3, false, 4),
            ];
            let ops = ops(&planned, &owned);
            let file = StackFile::new(input(h as u16, w as u16, 1), &ops);
            let stages = plan_file(&file);
            assert!(stages.iter().any(|s| s.over_input && s.conv), "{h}×{w}");
            for pixels in [Pixels::One, Pixels::Four] {
                let sizes = BufferSizes::of(&file, pixels);
                for _ in 0..4 {
                    let x = image(&mut rng, h * w, file.input.quant.zero_point);
                    let [reference, fast] = reference_and_fast(&file, &x, &sizes);
                    assert_eq!(fast, reference, "{h}×{w}, {c} channels, {pixels:?}");
                }
            }
        }
    }

    #[test]
    fn stages_match_the_unfused_reference_on_random_stacks_and_quantizations() {
        let mut rng = TestRng(0x57A6E5);
        let cases = if cfg!(miri) { 6 } else { 600 };
        let mut seen = BTreeSet::new();
        // Monotonic conv stages (four pixels at a time) by (whole blocks of 16 taps, pooled).
        let mut quads = BTreeSet::new();
        // Second stages reading the first through a ring, by (conv, dense).
        let mut chains = BTreeSet::new();
        // The imported models' operations: convs whose kernel is not square, depthwise
        // convs and average pools (stages of their own).
        let mut imported = BTreeSet::new();
        // Stages over their own input, by alone (a depthwise conv, else a 1 × 1 conv).
        let mut over = BTreeSet::new();
        for case in 0..cases {
            let wild = case % 3 == 2;
            let (hwc, planned, owned) = random_stack(&mut rng, wild);
            let ops = ops(&planned, &owned);
            let mut input = input(hwc.0, hwc.1, hwc.2);
            if wild {
                // The input carries its own quantization.
                input.quant.zero_point = rng.below(256) as i32 - 128;
            }
            let file = StackFile::new(input, &ops);
            // Every fifth case with the small-RAM working memory: one pixel at a time.
            let pixels = if case % 5 == 4 {
                Pixels::One
            } else {
                Pixels::Four
            };
            let sizes = BufferSizes::of(&file, pixels);
            let stages = plan_file(&file);
            assert_eq!(stages.iter().map(Stage::ops).sum::<usize>(), file.ops.len());
            for op in &file.ops {
                if matches!(op, Op::Conv2dRect(..)) {
                    imported.insert("conv2d_rect");
                }
            }
            for s in &stages {
                if s.alone {
                    let name = file.ops.get(s.first).map_or("", |op| op.type_name());
                    imported.insert(name);
                    assert_eq!(s.ops(), 1);
                }
                let monotonic = Parts::of(&file, s)
                    .and_then(|p| p.conv)
                    .map(|c| monotonic(&c.requant, c.geometry.filters));
                seen.insert((s.conv, s.pool, s.dense, monotonic));
                if s.over_input {
                    over.insert(s.alone);
                }
                if s.ring_in > 0 {
                    chains.insert((s.conv, s.dense));
                }
                if let (Some(true), Some(p)) = (monotonic, Parts::of(&file, s)) {
                    let taps = p.conv.map_or(0, |c| c.geometry.taps());
                    quads.insert((taps % 16 == 0, s.pool));
                }
            }
            for _ in 0..4 {
                let x = image(
                    &mut rng,
                    usize::from(hwc.0) * usize::from(hwc.1) * usize::from(hwc.2),
                    file.input.quant.zero_point,
                );
                let [reference, fast] = reference_and_fast(&file, &x, &sizes);
                assert_eq!(fast, reference, "case {case}: {:?}", file.ops);
            }
        }
        if !cfg!(miri) {
            // Every kind of stage, with monotonic and other requantizations, was tested.
            for kind in [
                (true, false, false),
                (true, true, false),
                (true, true, true),
                (true, false, true),
            ] {
                for m in [true, false] {
                    assert!(
                        seen.contains(&(kind.0, kind.1, kind.2, Some(m))),
                        "{kind:?} {m}"
                    );
                }
            }
            assert!(seen.contains(&(false, true, false, None)));
            assert!(seen.contains(&(false, true, true, None)));
            assert!(seen.contains(&(false, false, true, None)));
            assert!(quads.contains(&(true, true)) && quads.contains(&(true, false)));
            for chain in [(true, true), (true, false), (false, false), (false, true)] {
                assert!(chains.contains(&chain), "{chain:?}");
            }
            let all = ["avgpool2d", "conv2d_rect", "depthwise_conv2d"];
            assert_eq!(imported.into_iter().collect::<Vec<_>>(), all);
            assert_eq!(over.into_iter().collect::<Vec<_>>(), [false, true]);
        }
    }

    #[test]
    fn the_plan_fuses_wherever_the_pattern_occurs() {
        let g = |in_h, in_c, filters| OpShape::Conv2d {
            geometry: ConvGeometry {
                in_h,
                in_w: in_h,
                in_c,
                k_h: 3,
                k_w: 3,
                filters,
                stride: 1,
                padding: Padding::Valid,
            },
            relu: true,
        };
        let pool = |in_h, channels| OpShape::MaxPool2d {
            in_h,
            in_w: in_h,
            channels,
            pool: 2,
        };
        // The tutorial: one stage, the 3×3 fast path, no buffers.
        let tutorial = [
            g(28, 1, 32),
            pool(26, 32),
            OpShape::Dense {
                inputs: 5408,
                units: 10,
                relu: false,
            },
        ];
        let stages = plan(&tutorial);
        assert_eq!(stages.len(), 1);
        assert_eq!(stages[0].kernel, Kernel::Stream3x3);
        assert_eq!(stages[0].stack_bytes(&tutorial), 1_192);
        assert_eq!(stages[0].patch_words(&tutorial, Pixels::Four), 0);
        // two-blocks: conv+pool (the 3×3 fast path, its pooled map kept), then
        // conv+pool+dense (general: 16 input channels).
        let two = [
            g(28, 1, 16),
            pool(26, 16),
            g(13, 16, 32),
            pool(11, 32),
            OpShape::Dense {
                inputs: 800,
                units: 10,
                relu: false,
            },
        ];
        let stages = plan(&two);
        let kinds: Vec<_> = stages
            .iter()
            .map(|s| (s.first, s.ops(), s.kernel))
            .collect();
        assert_eq!(kinds, [(0, 2, Kernel::Stream3x3), (2, 3, Kernel::General)]);
        assert_eq!(stages[0].stack_bytes(&two), 36 * 16);
        // The second reads the first's 13 × 13 × 16 map through a ring of the 4 rows one
        // of its pooled rows needs, and keeps the first's scratch while both run.
        assert_eq!((stages[0].ring_out, stages[1].ring_in), (4, 4));
        assert_eq!(stages[0].out_len(&two), 4 * 13 * 16);
        assert_eq!(stages[1].stack_bytes(&two), 36 * 16);
        // tutorial-full: conv, conv+pool+dense, dense.
        let full = [
            g(28, 1, 32),
            g(26, 32, 64),
            pool(24, 64),
            OpShape::Dense {
                inputs: 9216,
                units: 128,
                relu: false,
            },
            OpShape::Dense {
                inputs: 128,
                units: 10,
                relu: false,
            },
        ];
        let stages = plan(&full);
        let kinds: Vec<_> = stages.iter().map(|s| (s.first, s.ops())).collect();
        assert_eq!(kinds, [(0, 1), (1, 3), (4, 1)]);
        // The first conv's 26 × 26 × 32 map through a ring of 4 rows; the third stage reads
        // a whole buffer.
        let rings: Vec<_> = stages.iter().map(|s| (s.ring_in, s.ring_out)).collect();
        assert_eq!(rings, [(0, 4), (4, 0), (0, 0)]);
        assert_eq!(stages[0].out_len(&full), 4 * 26 * 32);
    }
}

#[cfg(test)]
mod graph_tests {
    use super::super::format::tests::{input, OwnedParams};
    use super::super::format::{AddOp, BranchOp, ConvOp, DenseOp, PoolOp};
    use super::super::run::tests::reference_and_fast;
    use super::super::run::{run, BufferSizes, Kernels};
    use super::*;
    use crate::format::QuantParams;
    use crate::kernels::TestRng;
    use crate::stack::facts::Unknown;
    use std::vec;
    use std::vec::Vec;

    #[test]
    fn a_chain_ping_pongs_between_two_buffers() {
        let units = (0..7).map(|j| Unit {
            first: j,
            last: j,
            other: None,
            branch: None,
            in_place: false,
            over_input: false,
            out_len: 10 + j,
        });
        let plan = assign_buffers(units).unwrap();
        assert_eq!(plan.out[..7], [0, 1, 0, 1, 0, 1, NO_BUFFER]);
        // The last unit writes the logits: the largest outputs before it.
        assert_eq!(plan.sizes, [14, 15, 0]);
        assert_eq!(plan.count(), 2);
        // In the arena, each output beside the one it reads: the largest pair.
        assert_eq!(plan.arena, 14 + 15);
        for t in 1..6 {
            let (a, b) = (
                plan.region(t, 9 + t).unwrap(),
                plan.region(t + 1, 10 + t).unwrap(),
            );
            assert!(a.end <= b.start || b.end <= a.start, "{t}: {a:?} {b:?}");
        }
    }

    /// A ResNet block's shapes: conv → conv → conv → add of the first conv's output (→ a
    /// dense layer for the logits). The add is computed in place by the third conv's stage
    /// in the first conv's tensor: two maps live at once, not three.
    #[test]
    fn a_residual_block_fused_in_place_keeps_two_buffers() {
        let conv = |filters| OpShape::Conv2d {
            geometry: ConvGeometry {
                in_h: 8,
                in_w: 8,
                in_c: 4,
                k_h: 3,
                k_w: 3,
                filters,
                stride: 1,
                padding: Padding::Same,
            },
            relu: true,
        };
        let add = |other| OpShape::Add {
            h: 8,
            w: 8,
            channels: 4,
            other,
            min: -128,
            max: 127,
        };
        let dense = OpShape::Dense {
            inputs: 256,
            units: 10,
            relu: false,
        };
        let block = [conv(4), conv(4), conv(4), add(1), dense];
        let stages = plan(&block);
        let kinds: Vec<_> = stages.iter().map(|s| (s.first, s.ops(), s.add)).collect();
        assert_eq!(
            kinds,
            [(0, 1, false), (1, 1, false), (2, 2, true), (4, 1, false)]
        );
        let buffers = stage_buffers(&stages, &block).unwrap();
        assert_eq!(buffers.count(), 2);
        assert_eq!(buffers.arena, 2 * 256);
        // The sum is where the first conv's output was.
        assert_eq!(buffers.region(4, 256), buffers.region(1, 256));
        // Unfused (operation by operation): three.
        let ops = block.iter().enumerate().map(|(i, s)| Unit::of_op(i, s));
        let unfused = assign_buffers(ops).unwrap();
        assert_eq!((unfused.count(), unfused.arena), (3, 3 * 256));
        // An add whose other operand is read later (a branch to it), or is the tensor the
        // stage reads, or the model's input, is not computed in place.
        let branch = |from| OpShape::Branch {
            h: 8,
            w: 8,
            channels: 4,
            from,
        };
        let later = [conv(4), conv(4), add(1), branch(1), conv(4), dense];
        assert!(plan(&later).iter().all(|s| !s.add));
        let own = [conv(4), conv(4), add(1), dense];
        assert!(plan(&own).iter().all(|s| !s.add));
        let own = [conv(4), branch(1), conv(4), add(1), dense];
        assert!(plan(&own).iter().all(|s| !s.add));
        let input = [conv(4), add(0), dense];
        assert!(plan(&input).iter().all(|s| !s.add));
    }

    fn add_op(rng: &mut TestRng, (h, w, c): (u16, u16, u16), other: u16) -> AddOp {
        let m = |rng: &mut TestRng| (1i32 << 30) + rng.below(1 << 30) as i32;
        AddOp {
            h,
            w,
            channels: c,
            other,
            left_shift: 20,
            multiplier: m(rng),
            shift: -(rng.below(2) as i8),
            other_multiplier: m(rng),
            other_shift: -(rng.below(2) as i8),
            output_multiplier: m(rng),
            output_shift: -18 - rng.below(3) as i8,
            output: QuantParams {
                scale: 0.1,
                zero_point: rng.below(200) as i32 - 100,
            },
            min: -128 + rng.below(100) as i8,
            max: 127,
        }
    }

    fn branch<'p>((h, w, channels): (u16, u16, u16), from: u16) -> Op<'p> {
        Op::Branch(BranchOp {
            h,
            w,
            channels,
            from,
        })
    }

    fn conv<'p>(p: &'p OwnedParams, (h, w, c): (u16, u16, u16), f: u16, k: u16, s: u16) -> Op<'p> {
        Op::Conv2d(ConvOp {
            in_h: h,
            in_w: w,
            in_c: c,
            filters: f,
            kernel: k,
            stride: s,
            padding: Padding::Same,
            relu: false,
            params: p.view(),
        })
    }

    /// A small residual graph: conv → max pool 1 → conv → add of the first conv's output →
    /// branch back to it → 1×1 stride-2 conv → dense. The pool is not fused into the first
    /// conv's stage (the add reads that conv's output); three buffers; the fast stages give
    /// the reference's bits.
    #[test]
    fn a_residual_graph_keeps_its_tensors_and_matches_the_reference() {
        let mut rng = TestRng(0x5e5);
        for case in 0..30 {
            let c0 = OwnedParams::random(&mut rng, 4 * 9 * 2, 4);
            let c2 = OwnedParams::random(&mut rng, 4 * 9 * 4, 4);
            let c5 = OwnedParams::random(&mut rng, 3 * 4, 3);
            let dense = OwnedParams::logits(&mut rng, 27 * 3, 3);
            let ops = [
                conv(&c0, (6, 6, 2), 4, 3, 1),
                Op::MaxPool2d(PoolOp {
                    in_h: 6,
                    in_w: 6,
                    channels: 4,
                    pool: 1,
                }),
                conv(&c2, (6, 6, 4), 4, 3, 1),
                Op::Add(add_op(&mut rng, (6, 6, 4), 1)),
                branch((6, 6, 4), 1),
                conv(&c5, (6, 6, 4), 3, 1, 2),
                Op::Dense(DenseOp {
                    inputs: 27,
                    units: 3,
                    relu: false,
                    params: dense.view(),
                }),
            ];
            let file = StackFile::new(input(6, 6, 2), &ops);
            file.validate().unwrap();
            let stages = plan_file(&file);
            let firsts: Vec<usize> = stages.iter().map(|s| s.first).collect();
            // The 1×1 conv takes the dense layer (its output is no tensor anything names).
            assert_eq!(firsts, [0, 1, 2, 3, 4, 5]);
            let sizes = BufferSizes::of(&file, Pixels::Four);
            assert_eq!(sizes.arena, 3 * 144);
            let mut arena = vec![0i8; sizes.arena];
            let mut patch = vec![0u32; sizes.patch_words];
            let x: Vec<i8> = (0..72).map(|_| rng.i8()).collect();
            let mut logits = [[0i32; 3]; 2];
            for (kernels, out) in [Kernels::Reference, Kernels::Fast].iter().zip(&mut logits) {
                run(&file, &x, *kernels, &mut arena, &mut patch, out).unwrap();
            }
            assert_eq!(logits[0], logits[1], "case {case}");
            // Too small an arena: an error, not a panic.
            let mut out = [0; 3];
            let short = &mut arena[..3 * 144 - 10];
            let short = run(&file, &x, Kernels::Fast, short, &mut patch, &mut out);
            assert!(matches!(short, Err(crate::Error::BufferTooSmall { .. })));
        }
    }

    /// A one-channel conv without a pool over images often of background (the input's
    /// zero point), whose background quads after the first take the values the stage kept
    /// ([`StageRun::background`]): into the map a conv reads next, or into the values a
    /// dense layer takes; both pixel counts, the reference's bits.
    #[test]
    fn background_quads_after_the_first_match_the_reference() {
        let mut rng = TestRng(0xb6_0d);
        for case in 0..90 {
            let (h, w) = (4 + rng.below(12) as u16, 4 + rng.below(12) as u16);
            let f = 1 + rng.below(12) as u16;
            let c0 = OwnedParams::random(&mut rng, usize::from(f) * 9, f.into());
            let c1 = OwnedParams::random(&mut rng, 4 * 9 * usize::from(f), 4);
            let mut first = conv(&c0, (h, w, 1), f, 3, 1 + rng.below(2) as u16);
            if let Op::Conv2d(c) = &mut first {
                c.relu = case % 2 == 0;
                if case % 4 == 1 {
                    c.padding = Padding::Valid;
                }
            }
            let (oh, ow, oc) = first.out_shape();
            let next = conv(&c1, (oh as u16, ow as u16, oc as u16), 4, 3, 1);
            // The first conv's map read by a conv, or its values by a dense layer.
            let chained = case % 3 != 0;
            let inputs = if chained { oh * ow * 4 } else { oh * ow * oc };
            let d = OwnedParams::logits(&mut rng, inputs * 3, 3);
            let dense = Op::Dense(DenseOp {
                inputs: inputs as u32,
                units: 3,
                relu: false,
                params: d.view(),
            });
            let ops = if chained {
                vec![first, next, dense]
            } else {
                vec![first, dense]
            };
            let file = StackFile::new(input(h, w, 1), &ops);
            file.validate().unwrap();
            let x = super::tests::image(&mut rng, usize::from(h) * usize::from(w), -128);
            for pixels in [Pixels::Four, Pixels::One] {
                let [reference, fast] =
                    reference_and_fast(&file, &x, &BufferSizes::of(&file, pixels));
                assert_eq!(fast, reference, "case {case} {pixels:?}");
            }
        }
    }

    /// Adds computed in place after a conv (a ResNet block, and a downsampling one whose
    /// shortcut is a 1×1 stride-2 conv after a branch) give the unfused reference's bits,
    /// in less memory.
    #[test]
    fn adds_in_place_match_the_unfused_reference() {
        let mut rng = TestRng(0xadd5);
        for case in 0..40 {
            let c0 = OwnedParams::random(&mut rng, 4 * 9 * 2, 4);
            let c: Vec<OwnedParams> = (0..3)
                .map(|_| OwnedParams::random(&mut rng, 4 * 9 * 4, 4))
                .collect();
            let c5 = OwnedParams::random(&mut rng, 4 * 9 * 4, 4);
            let c7 = OwnedParams::random(&mut rng, 4 * 4, 4);
            let d = [OwnedParams::random(&mut rng, 8 * 36, 8)];
            let logits = OwnedParams::logits(&mut rng, 8 * 3, 3);
            fn dense(p: &OwnedParams, inputs: u32, units: u16, relu: bool) -> Op<'_> {
                Op::Dense(DenseOp {
                    inputs,
                    units,
                    relu,
                    params: p.view(),
                })
            }
            let ops = [
                conv(&c0, (6, 6, 2), 4, 3, 1),
                conv(&c[0], (6, 6, 4), 4, 3, 1),
                conv(&c[1], (6, 6, 4), 4, 3, 1),
                Op::Add(add_op(&mut rng, (6, 6, 4), 1)),
                conv(&c[2], (6, 6, 4), 4, 3, 2),
                conv(&c5, (3, 3, 4), 4, 3, 1),
                branch((6, 6, 4), 4),
                conv(&c7, (6, 6, 4), 4, 1, 2),
                Op::Add(add_op(&mut rng, (3, 3, 4), 6)),
                dense(&d[0], 36, 8, case % 2 == 0),
                dense(&logits, 8, 3, false),
            ];
            let file = StackFile::new(input(6, 6, 2), &ops);
            file.validate().unwrap();
            let stages = plan_file(&file);
            let fused: Vec<(usize, usize)> = stages
                .iter()
                .filter(|s| s.add)
                .map(|s| (s.first, s.ops()))
                .collect();
            assert_eq!(fused, [(2, 2), (7, 2)]);
            let shapes = shapes_of(&file);
            let plan = stage_buffers(&stages, &shapes).unwrap();
            // Two 6×6×4 maps at most, where the operations one by one keep three.
            assert_eq!(plan.arena, 2 * 144);
            assert_eq!(op_buffers_arena(&shapes), 3 * 144);
            let x: Vec<i8> = (0..72).map(|_| rng.i8()).collect();
            let mut want = vec![0i32; 3];
            for pixels in [Pixels::Four, Pixels::One] {
                let sizes = BufferSizes::of(&file, pixels);
                let mut patch = vec![0u32; sizes.patch_words];
                let mut arena = vec![0i8; sizes.arena];
                let mut logits = [[0i32; 3]; 2];
                for (kernels, out) in [Kernels::Reference, Kernels::Fast].iter().zip(&mut logits) {
                    arena.fill(rng.i8());
                    run(&file, &x, *kernels, &mut arena, &mut patch, out).unwrap();
                }
                assert_eq!(logits[0], logits[1], "case {case} {pixels:?}");
                if pixels == Pixels::Four {
                    want = logits[0].to_vec();
                }
                assert_eq!(logits[1].to_vec(), want);
            }
        }
    }

    /// A dense layer with an add in place (which no model.bin holds yet: the decoder's adds
    /// read maps) through `run_general`, with and without the add's tables and the packed
    /// input (the words of either build): the dense layer's outputs, then the add, bit for
    /// bit.
    #[test]
    fn a_dense_layer_adds_in_place_as_the_reference_does() {
        use crate::kernels::add::add_reference;
        use crate::kernels::dense::dense_i8;
        let mut rng = TestRng(0xde5e);
        for case in 0..300 {
            let (n, units) = (1 + rng.below(70) as usize, 1 + rng.below(40) as usize);
            let mut p = OwnedParams::random(&mut rng, n * units, units);
            if case % 3 == 0 {
                p.make_wild(&mut rng, 3);
            }
            let requant = ChannelRequant::from_params(&p.view(), case % 2 == 0);
            let input_offset = rng.below(256) as i32 - 128;
            let m = |rng: &mut TestRng| (1i32 << 30) + rng.below(1 << 30) as i32;
            let add = AddParams {
                offsets: [rng.below(256) as i32 - 128, rng.below(256) as i32 - 128],
                multipliers: [m(&mut rng), m(&mut rng)],
                shifts: [-(rng.below(3) as i32), -(rng.below(3) as i32)],
                left_shift: 20,
                output_multiplier: m(&mut rng),
                output_shift: -18 - rng.below(3) as i32,
                output_zero_point: rng.below(256) as i32 - 128,
                min: rng.i8().min(0),
                max: 127,
            };
            let parts = Parts {
                first: 0,
                input: (1, 1, n),
                conv: None,
                pool: 0,
                dense: Some(DensePart {
                    inputs: n,
                    units,
                    weights: &p.weights,
                    wide: &[],
                    offset_terms: &[],
                    requant,
                    input_offset,
                    monotonic: monotonic(&requant, units),
                }),
                add: Some(add),
            };
            let x: Vec<i8> = (0..n).map(|_| rng.i8()).collect();
            let other: Vec<i8> = (0..units).map(|_| rng.i8()).collect();
            let mut values = vec![0i8; units];
            dense_i8(&x, input_offset, &p.weights, &requant, &mut values);
            let mut want = vec![0i8; units];
            add_reference(&add, &values, &other, &mut want);
            let [four, one] = [Pixels::Four, Pixels::One].map(|p| dense_words(n, units, p));
            for words in [four + ADD_SCRATCH_WORDS, one + ADD_SCRATCH_WORDS] {
                let mut out = other.clone();
                run_general::<Unknown>(&parts, &x, &mut vec![0u32; words], &mut out);
                assert_eq!(out, want, "case {case}, {words} words");
            }
            // Too few words for the sums: less is computed, without a panic.
            run_general::<Unknown>(&parts, &x, &mut [0u32; 3], &mut other.clone());
        }
    }

    /// The arena of the operations one by one.
    fn op_buffers_arena(shapes: &[OpShape]) -> usize {
        let units = shapes.iter().enumerate().map(|(i, s)| Unit::of_op(i, s));
        assign_buffers(units).unwrap().arena
    }

    #[test]
    fn a_graph_needing_four_buffers_or_naming_a_later_tensor_is_refused() {
        let mut rng = TestRng(9);
        let p: Vec<OwnedParams> = (0..2)
            .map(|_| OwnedParams::random(&mut rng, 4 * 9 * 4, 4))
            .collect();
        let p0 = OwnedParams::random(&mut rng, 4 * 9 * 2, 4);
        let dense = OwnedParams::logits(&mut rng, 144 * 2, 2);
        let dense = Op::Dense(DenseOp {
            inputs: 144,
            units: 2,
            relu: false,
            params: dense.view(),
        });
        // Tensors 1 and 2 live when the third conv writes tensor 3, all three read or live
        // when the first add writes: four buffers.
        let mut ops = vec![
            conv(&p0, (6, 6, 2), 4, 3, 1),
            conv(&p[0], (6, 6, 4), 4, 3, 1),
            conv(&p[1], (6, 6, 4), 4, 3, 1),
            Op::Add(add_op(&mut rng, (6, 6, 4), 2)),
            Op::Add(add_op(&mut rng, (6, 6, 4), 1)),
            dense,
        ];
        let refused = StackFile::new(input(6, 6, 2), &ops).validate();
        assert_eq!(
            refused,
            Err(crate::Error::Malformed {
                what: "a graph whose live tensors need more than 3 buffers"
            })
        );
        // Without the third conv and the first add: three.
        ops.drain(2..4);
        StackFile::new(input(6, 6, 2), &ops).validate().unwrap();
        if let Op::Add(a) = &mut ops[2] {
            a.other = 3;
        }
        let refused = StackFile::new(input(6, 6, 2), &ops).validate();
        assert!(
            matches!(refused, Err(crate::Error::Malformed { what }) if what.contains("not computed before"))
        );
    }
}

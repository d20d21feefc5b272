//! Fused, streaming int8 Conv2D 3×3 over one channel + ReLU → MaxPool 2×2 → Dense: the
//! kernel of the stack engine's first-layer stage (`stack::stages`'s `Kernel::Stream3x3`,
//! run by the typed layers `stack::layers::ConvPoolDense3x3` and `ConvPool3x3`).
//!
//! The unfused kernels ([`super::conv`], [`super::pool`], [`super::dense`]) materialise the
//! conv output and the pooled tensor. [`Stream3x3`] never does: it walks the pooled
//! positions one at a time, computes that position's conv windows for every filter, pools
//! them, and accumulates each pooled value straight into the dense layer's accumulators.
//! The working memory is one accumulator per dense unit plus a few values per filter.
//!
//! It is bit-exact with the unfused TFLite computation (tested against it exactly). With
//! the quantization every trained model has (a ReLU at the conv's zero point, right shifts)
//! it takes the max of the four int32 accumulators of a pooling window first and
//! requantizes once. That is exact because requantization with a non-negative multiplier
//! and no left shift, the zero-point addition and the ReLU clamp are all monotonic
//! non-decreasing, and `max(f(a), f(b)) = f(max(a, b))` for such an `f`. (A left shift can
//! overflow and wrap, which is not monotonic.) With any other quantization it requantizes
//! every window, as the unfused kernels do.
//!
//! Accumulators wrap like the unfused kernels' (two's complement), so any summation order
//! gives the same `i32`.

use super::dsp;
use super::ChannelRequant;
use crate::probe::Probe;

/// The parameters of the fused layers, read in place from model bytes.
#[derive(Debug, Clone, Copy)]
pub struct StreamLayers<'a> {
    /// Added to every input value (minus the input zero point).
    pub input_offset: i32,
    /// Conv weights, `filters × k_h × k_w × in_c` int8 bytes (OHWI).
    pub conv_weights: &'a [u8],
    /// Conv requantization; its `activation_min` is the fused ReLU.
    pub conv: ChannelRequant<'a>,
    /// Added to every pooled value before the dense layer (minus the conv zero point).
    pub dense_input_offset: i32,
    /// Dense weights, `units × dense_inputs` int8 bytes, inputs in (row, column, channel) order.
    pub dense_weights: &'a [u8],
    /// Dense requantization.
    pub dense: ChannelRequant<'a>,
}

/// Requantizes the dense accumulators, which start at 0, into int8 `outputs`, adding each
/// unit's bias last (the sum wraps like the unfused kernel's, so the order is free).
fn finish_dense(dense: &ChannelRequant<'_>, acc: &[i32], outputs: &mut [i8]) {
    for (u, (out, &a)) in outputs.iter_mut().zip(acc).enumerate() {
        *out = super::dense::dense_unit(dense, u, a);
    }
}

/// [`ChannelRequant::apply`], as one function that its rare callers share (code size).
#[inline(never)]
fn requantize_outlined(rq: &ChannelRequant<'_>, acc: i32, multiplier: i32, shift: i32) -> i8 {
    rq.apply(acc, multiplier, shift)
}

/// Whether the fast path pairs its products ([`dsp::smlad`]) on this target: on cores with
/// the DSP extension (Cortex-M4, M7).
pub const NATIVE_PAIRED: bool = cfg!(infer_core_dsp);

/// One filter of the 3×3 fast path, derived from the model once per inference.
/// `repr(C)`: [`dsp::windows`]'s assembly reads its fields by offset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct Filter3x3 {
    /// The 9 weights (row-major), sign-extended and paired for [`dsp::smlad`], and in the
    /// one free half the right shift of the requantization (minus its shift, within
    /// `0..=31`; 0 for a left shift, which the pool-first requantization never sees):
    /// `[(w00, w02), (w10, w12), (w20, w22), (w01, w11), (w21, right shift)]`.
    pub pairs: [u32; 5],
    /// `bias + input_offset · Σ w`: the accumulator's start when the inputs are used
    /// without their offset.
    pub bias: i32,
    /// Requantization multiplier.
    pub multiplier: i32,
}

impl Filter3x3 {
    /// All zero: a placeholder until the stream fills it in.
    pub const ZERO: Self = Self {
        pairs: [0; 5],
        bias: 0,
        multiplier: 0,
    };

    /// The requantization's right shift (see [`Filter3x3::pairs`]).
    pub const fn right_shift(&self) -> u32 {
        self.pairs[4] >> 16
    }
}

/// Working memory of [`Stream3x3`] for `F` filters and `N` dense units: 28·F + 8·F +
/// 4·N bytes.
#[derive(Debug, Clone)]
pub struct StreamScratch<const F: usize, const N: usize> {
    /// Per-filter parameters, derived from the model at the start of an inference.
    pub filters: [Filter3x3; F],
    /// The current position's pooled values (minus the conv zero point) that differ from
    /// the background ones, as differences from them, as entries: one word
    /// `(difference, filter)` each (scalar), or three words each (paired): the differences
    /// of 4 filters as two packed pairs, and the byte offset of their weights.
    pub entries: [u32; F],
    /// The pooled values (minus the conv zero point) of a position whose input is all
    /// background: one per filter (scalar), or per group of 4 filters the two packed
    /// pairs of its entry (paired; the first `F / 2` words).
    pub background: [u32; F],
    /// The dense accumulators.
    pub acc: [i32; N],
}

impl<const F: usize, const N: usize> StreamScratch<F, N> {
    /// Bytes of RAM this scratch occupies.
    pub const BYTES: usize = core::mem::size_of::<Self>();

    /// Zeroed buffers.
    pub const fn new() -> Self {
        Self {
            filters: [Filter3x3::ZERO; F],
            entries: [0; F],
            background: [0; F],
            acc: [0; N],
        }
    }
}

impl<const F: usize, const N: usize> Default for StreamScratch<F, N> {
    fn default() -> Self {
        Self::new()
    }
}

/// How a pooling window's accumulators become its pooled value, decided per inference.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Requant {
    /// ReLU at the conv's zero point, every multiplier ≥ 0 and shift ≤ 0: requantize the
    /// max, [`pooled_value`].
    Fast {
        /// `127 − zero point`: the largest pooled value.
        cap: u32,
    },
    /// Anything else: requantize every window, then take the max ([`pooled_value_exact`]).
    Exact,
}

impl Requant {
    /// [`Requant::Fast`] if the conv has a ReLU at its int8 zero point, the dense layer
    /// takes minus that zero point, and (`right_shifts_only`) every multiplier is ≥ 0 and
    /// every shift ≤ 0.
    fn choose(layers: &StreamLayers<'_>, right_shifts_only: bool) -> Self {
        let rq = &layers.conv;
        let zp = rq.output_offset;
        let relu_at_zero = rq.activation_min == zp
            && rq.activation_max == 127
            && (-128..=127).contains(&zp)
            && layers.dense_input_offset == -zp;
        if relu_at_zero && right_shifts_only {
            Requant::Fast {
                cap: (127 - zp) as u32,
            }
        } else {
            Requant::Exact
        }
    }

    /// `self`, known to be [`Requant::Fast`] where `FAST` says so (the typed layers check
    /// it when the model loads, [`fast_requant`]), so that the exact way's code goes unused.
    #[inline(always)]
    fn known<const FAST: bool>(self) -> Self {
        match self {
            Requant::Exact if FAST => Requant::Fast { cap: 0 },
            requant => requant,
        }
    }

    /// The pooled value (minus the conv zero point) of filter `f`'s four window
    /// accumulators `a`; `conv` and `dense_input_offset` as in [`StreamLayers`].
    #[inline(always)]
    fn pooled(
        self,
        conv: &ChannelRequant<'_>,
        dense_input_offset: i32,
        (fi, f): (usize, &Filter3x3),
        a: [i32; 4],
    ) -> i32 {
        match self {
            Requant::Fast { cap } => pooled_value(f, a, cap),
            Requant::Exact => pooled_value_exact(conv, fi, a) + dense_input_offset,
        }
    }
}

/// The fast path: one input channel, 3×3 kernel, 2×2 pool, `F` filters, `N` dense units;
/// `PAIRED` selects the paired ([`dsp::smlad`]) inner loops over the plain ones
/// ([`NATIVE_PAIRED`] is the right choice for the target); `FAST` compiles in only the
/// requantization of a ReLU at the conv's zero point with right shifts ([`fast_requant`]
/// of the layers must hold). It holds one inference's
/// state: [`Stream3x3::run`] is the whole inference, and its stages are public so that a
/// profiler can time them one by one. The typed layers `stack::layers::ConvPoolDense3x3`
/// and `ConvPool3x3` run it.
///
/// Like every kernel it never panics: weights shorter than the shapes imply stop the
/// computation early. Besides taking the max before requantizing when that is exact (see
/// the module documentation), it skips work that cannot change the result:
///
/// * The dense accumulators start where an input that is all background (every pixel at
///   the input zero point, black in MNIST) would leave them ([`background_start`],
///   computed once when the layer is made), and each position adds only the difference
///   its pooled values make. A 4×4 input patch that is all background gives each filter's
///   four windows its bias, so its position costs nothing but the check.
/// * Pooled values equal to the background's (0 for most filters: the ReLU makes every
///   negative response the conv zero point) add nothing to the dense layer: only the
///   others are kept, as a list of entries, and multiplied.
pub struct Stream3x3<'a, 'w, const F: usize, const N: usize, const PAIRED: bool, const FAST: bool> {
    scratch: &'w mut StreamScratch<F, N>,
    input: &'w [i8],
    in_w: usize,
    pooled_h: usize,
    pooled_w: usize,
    dense_weights: &'a [u8],
    dense: ChannelRequant<'a>,
    /// The conv's requantization, for [`Requant::Exact`].
    conv: ChannelRequant<'a>,
    /// Added to a requantized conv output to give a pooled value.
    dense_input_offset: i32,
    requant: Requant,
    /// Words of entries at the current position.
    len: usize,
    /// The input word of an all-background patch row, if the zero point is an int8.
    background_row: Option<u32>,
}

impl<'a, 'w, const F: usize, const N: usize, const PAIRED: bool, const FAST: bool>
    Stream3x3<'a, 'w, F, N, PAIRED, FAST>
{
    /// Prepares an inference on `input` (`in_h × in_w`, one channel): derives the
    /// per-filter parameters and the background values and starts the dense accumulators
    /// at `start`, which must be [`background_start`] of the same layers and shape.
    ///
    /// Precondition (which a model's validation, `StackFile::decode`, guarantees): the
    /// conv's output zero point,
    /// whose negation is `layers.dense_input_offset`, is an int8, so that pooled values fit
    /// 16 bits; and with `PAIRED`, `F` is a multiple of 4. Otherwise the results are wrong
    /// (but nothing panics).
    #[inline(never)]
    pub fn new(
        layers: &StreamLayers<'a>,
        in_h: usize,
        in_w: usize,
        input: &'w [i8],
        scratch: &'w mut StreamScratch<F, N>,
        start: &[i32; N],
    ) -> Self {
        let right_shifts_only = prepare_filters(layers, &mut scratch.filters);
        scratch.acc = *start;
        let requant = Requant::choose(layers, right_shifts_only).known::<FAST>();
        background_pairs::<F, N, PAIRED, FAST>(layers, requant, scratch);
        Self {
            scratch,
            input,
            in_w,
            pooled_h: (in_h + 1).saturating_sub(3) / 2,
            pooled_w: (in_w + 1).saturating_sub(3) / 2,
            dense_weights: layers.dense_weights,
            dense: layers.dense,
            conv: layers.conv,
            dense_input_offset: layers.dense_input_offset,
            requant,
            len: 0,
            background_row: i8::try_from(-layers.input_offset)
                .ok()
                .map(|b| u32::from_le_bytes([b as u8; 4])),
        }
    }

    /// Rows and columns of pooled positions: the stages take each `(row, col)` once, in
    /// any order.
    pub fn pooled_shape(&self) -> (usize, usize) {
        (self.pooled_h, self.pooled_w)
    }

    /// Stage 1 at pooled position (`row`, `col`): the four conv windows of every filter,
    /// pooled and requantized (with ReLU), minus the conv zero point; those that differ
    /// from the background's become the position's entries (none if the input patch is
    /// all background).
    ///
    /// Each stage is a function of its own (not inlined), so that only one stage's frame is
    /// on the stack at a time and the code exists once.
    #[inline(never)]
    pub fn conv_pool(&mut self, row: usize, col: usize) {
        self.len = 0;
        let Some(rows) = self.rows(row, col) else {
            return;
        };
        if self
            .background_row
            .is_some_and(|b| rows.iter().all(|&r| r == b))
        {
            // The background's values: nothing differs.
        } else if PAIRED {
            self.conv_pool_paired(&rows);
        } else {
            self.conv_pool_scalar(&rows);
        }
    }

    /// Stage 2 at pooled position (`row`, `col`), after stage 1 there: adds the
    /// position's entries, times their dense weights, into every dense accumulator, two
    /// units at a time.
    #[inline(never)]
    pub fn dense(&mut self, row: usize, col: usize) {
        let pos = row * self.pooled_w + col;
        let s = &mut *self.scratch;
        let entries = match s.entries.get(..self.len) {
            Some(e) if !e.is_empty() => e,
            _ => return,
        };
        let n_in = self.pooled_h * self.pooled_w * F;
        // Each unit's weights at this position.
        let zero = [0; F];
        let mut columns = [&zero; N];
        for (u, column) in columns.iter_mut().enumerate() {
            let start = u * n_in + pos * F;
            match self
                .dense_weights
                .get(start..)
                .and_then(|w| w.first_chunk::<F>())
            {
                Some(w) => *column = w,
                None => return,
            }
        }
        // Four units at a time over the entries, their sums in registers; then two; a lone
        // last unit runs as a pair with itself (only the first sum kept).
        let mut quads = s.acc.chunks_exact_mut(4);
        let mut column_quads = columns.chunks_exact(4);
        for (a, c) in (&mut quads).zip(&mut column_quads) {
            let start = [a[0], a[1], a[2], a[3]];
            let sums = if PAIRED {
                entries.chunks_exact(3).fold(start, |a, e| {
                    let [a0, a1] = paired_entry(e, c[0], c[1], [a[0], a[1]]);
                    let [a2, a3] = paired_entry(e, c[2], c[3], [a[2], a[3]]);
                    [a0, a1, a2, a3]
                })
            } else {
                entries.iter().fold(start, |a, &e| {
                    let [a0, a1] = scalar_entry(e, c[0], c[1], [a[0], a[1]]);
                    let [a2, a3] = scalar_entry(e, c[2], c[3], [a[2], a[3]]);
                    [a0, a1, a2, a3]
                })
            };
            a.copy_from_slice(&sums);
        }
        let sums = |c0, c1, acc| {
            if PAIRED {
                let e = entries.chunks_exact(3);
                e.fold(acc, |a, e| paired_entry(e, c0, c1, a))
            } else {
                entries.iter().fold(acc, |a, &e| scalar_entry(e, c0, c1, a))
            }
        };
        let mut pairs = quads.into_remainder().chunks_exact_mut(2);
        let mut column_pairs = column_quads.remainder().chunks_exact(2);
        for (a, c) in (&mut pairs).zip(&mut column_pairs) {
            let [a0, a1] = sums(c[0], c[1], [a[0], a[1]]);
            a[0] = a0;
            a[1] = a1;
        }
        if let ([a], [c]) = (pairs.into_remainder(), column_pairs.remainder()) {
            *a = sums(c, c, [*a, 0])[0];
        }
    }

    /// Stage 1 at pooled position (`row`, `col`) for a conv + pool whose pooled map is
    /// kept (no dense layer after it): the position's pooled values, one per filter, into
    /// `out`, the conv's zero point (minus the `dense_input_offset` of the
    /// [`StreamLayers`] this stream was made from) added back.
    #[inline(never)]
    pub fn conv_pool_into(&mut self, row: usize, col: usize, out: &mut [i8; F]) {
        self.conv_pool(row, col);
        let zero_point = -self.dense_input_offset;
        let s = &*self.scratch;
        for (fi, o) in out.iter_mut().enumerate() {
            *o = (background_of::<F, PAIRED>(&s.background, fi) + zero_point) as i8;
        }
        let mut add = |filter: usize, difference: i32| {
            if let Some(o) = out.get_mut(filter) {
                *o = (i32::from(*o) + difference) as i8;
            }
        };
        let entries = s.entries.get(..self.len).unwrap_or(&[]);
        if PAIRED {
            for e in entries.chunks_exact(3) {
                let g = e[2] as usize;
                add(g, dsp::lo(e[0]));
                add(g + 2, dsp::hi(e[0]));
                add(g + 1, dsp::lo(e[1]));
                add(g + 3, dsp::hi(e[1]));
            }
        } else {
            for &e in entries {
                add(dsp::hi(e) as usize, dsp::lo(e));
            }
        }
    }

    /// Stage 3: requantizes the dense accumulators into the dense layer's int8 `outputs`.
    #[inline(never)]
    pub fn finish(&self, outputs: &mut [i8; N]) {
        finish_dense(&self.dense, &self.scratch.acc, outputs);
    }

    /// Stage 3 when the dense layer is the network's last: its wide `logits`
    /// ([`super::dense::finish_logits`]).
    #[inline(never)]
    pub fn finish_logits(&self, logits: &mut [i32; N]) {
        *logits = self.scratch.acc;
        super::dense::finish_logits(&self.dense, logits);
    }

    /// Runs the whole inference: both stages at every position, then [`Self::finish`];
    /// tells `P` when it goes from the conv (operation `first`, its pool with it) to the
    /// dense layer (`first + 2`) and back.
    #[inline(always)]
    pub fn run<P: Probe>(mut self, outputs: &mut [i8; N], first: usize) {
        self.stream::<P>(first);
        self.finish(outputs);
    }

    /// [`Self::run`] for the network's last dense layer: then [`Self::finish_logits`].
    #[inline(always)]
    pub fn run_logits<P: Probe>(mut self, logits: &mut [i32; N], first: usize) {
        self.stream::<P>(first);
        self.finish_logits(logits);
    }

    /// Both stages at every position.
    #[inline(always)]
    fn stream<P: Probe>(&mut self, first: usize) {
        for row in 0..self.pooled_h {
            for col in 0..self.pooled_w {
                P::enter(first);
                self.conv_pool(row, col);
                P::enter(first + 2);
                self.dense(row, col);
            }
        }
    }

    /// The 4×4 input patch under pooled position (`row`, `col`): one little-endian word
    /// per row.
    #[inline(always)]
    fn rows(&self, row: usize, col: usize) -> Option<[u32; 4]> {
        let mut rows = [0u32; 4];
        for (r, word) in rows.iter_mut().enumerate() {
            let start = (2 * row + r) * self.in_w + 2 * col;
            let b = self.input.get(start..)?.first_chunk::<4>()?;
            *word = u32::from_le_bytes(b.map(|x| x as u8));
        }
        Some(rows)
    }

    /// The pooled value of filter `f`'s four window accumulators `a`, minus the conv zero
    /// point.
    #[inline(always)]
    fn pooled_value(&self, fi: usize, f: &Filter3x3, a: [i32; 4]) -> i32 {
        self.requant
            .known::<FAST>()
            .pooled(&self.conv, self.dense_input_offset, (fi, f), a)
    }

    /// Stage 1 with one multiply-accumulate per product.
    #[inline(always)]
    fn conv_pool_scalar(&mut self, rows: &[u32; 4]) {
        let x = rows.map(|w| w.to_le_bytes().map(|b| i32::from(b as i8)));
        let mut v = [0u32; F];
        // Indexing (rather than zipping) compiles to the faster loop on the Cortex-M3.
        #[allow(clippy::needless_range_loop)]
        for fi in 0..F {
            let f = &self.scratch.filters[fi];
            let [p0, p1, p2, mid01, mid2] = f.pairs;
            // The weights, row by row, back from the pairs.
            let w = [
                [dsp::lo(p0), dsp::lo(mid01), dsp::hi(p0)],
                [dsp::lo(p1), dsp::hi(mid01), dsp::hi(p1)],
                [dsp::lo(p2), dsp::lo(mid2), dsp::hi(p2)],
            ];
            let mut a = [f.bias; 4];
            for ky in 0..3 {
                for kx in 0..3 {
                    let w = w[ky][kx];
                    a[0] = a[0].wrapping_add(x[ky][kx] * w);
                    a[1] = a[1].wrapping_add(x[ky][kx + 1] * w);
                    a[2] = a[2].wrapping_add(x[ky + 1][kx] * w);
                    a[3] = a[3].wrapping_add(x[ky + 1][kx + 1] * w);
                }
            }
            v[fi] = self.pooled_value(fi, f, a) as u32;
        }
        let s = &mut *self.scratch;
        self.len = push_all::<F, PAIRED>(&v, u32::MAX, &s.background, &mut s.entries);
    }

    /// Stage 1 with two multiply-accumulates per instruction ([`dsp::smlad`]), four
    /// filters at a time ([`dsp::windows`]).
    ///
    /// Row `r` of the patch, `[x0 x1 x2 x3]`, is split into `E = (x0, x2)` and
    /// `O = (x1, x3)`. The left window's row sum `x0·w0 + x1·w1 + x2·w2` is
    /// `E·(w0, w2) + x1·w1`, the right window's `x1·w0 + x2·w1 + x3·w2` is
    /// `O·(w0, w2) + x2·w1`. The middle-column terms of consecutive rows are paired too, so
    /// a window costs five instructions for its nine products.
    #[inline(always)]
    fn conv_pool_paired(&mut self, rows: &[u32; 4]) {
        let e = rows.map(dsp::sxtb16);
        let o = rows.map(dsp::sxtb16_ror8);
        // Middle column, two rows per word: left windows use x1 (low half of O), right
        // windows x2 (high half of E). mid_l[r] = (x1 of row r, x1 of row r + 1).
        let mid_l = [dsp::pkhbt(o[0], o[1]), dsp::pkhbt(o[1], o[2])];
        let mid_r = [dsp::pkhtb(e[1], e[0]), dsp::pkhtb(e[2], e[1])];
        let mut po = dsp::PatchOut {
            patch: [
                e[0], o[0], e[1], o[1], e[2], o[2], e[3], o[3], mid_l[0], mid_r[0], mid_l[1],
                mid_r[1],
            ],
            out: [0u32; F],
        };
        let cap = match self.requant.known::<FAST>() {
            Requant::Fast { cap } => {
                dsp::windows(&mut po, &self.scratch.filters);
                cap
            }
            Requant::Exact => {
                exact_all(
                    &self.conv,
                    self.dense_input_offset,
                    &mut po,
                    &self.scratch.filters,
                );
                u32::MAX
            }
        };
        let s = &mut *self.scratch;
        self.len = push_all::<F, PAIRED>(&po.out, cap, &s.background, &mut s.entries);
    }
}

/// [`Stream3x3`]'s paired stage for [`Requant::Exact`] (rare, so compact): every
/// filter's pooled value (as `i32` bits) into `po.out`.
#[inline(never)]
#[cold]
fn exact_all<const F: usize>(
    conv: &ChannelRequant<'_>,
    dense_input_offset: i32,
    po: &mut dsp::PatchOut<F>,
    filters: &[Filter3x3; F],
) {
    for (fi, (out, f)) in po.out.iter_mut().zip(filters).enumerate() {
        let sums = dsp::window_sums(&po.patch, f);
        *out = (pooled_value_exact(conv, fi, sums) + dense_input_offset) as u32;
    }
}

/// Fills `scratch.background` from `scratch.filters` (see [`StreamScratch::background`]).
/// A loop of its own (rolled), so that it costs little flash.
#[inline(never)]
fn background_pairs<const F: usize, const N: usize, const PAIRED: bool, const FAST: bool>(
    layers: &StreamLayers<'_>,
    requant: Requant,
    scratch: &mut StreamScratch<F, N>,
) {
    let requant = requant.known::<FAST>();
    let n = core::hint::black_box(F).min(F);
    for (fi, f) in scratch.filters.iter().enumerate().take(n) {
        let b = background_value(layers, requant, fi, f);
        let (index, half) = if PAIRED {
            // Group `fi / 4`'s pairs are (v0, v2), (v1, v3).
            (fi / 4 * 2 + fi % 2, fi % 4 / 2)
        } else {
            (fi, 0)
        };
        if let Some(word) = scratch.background.get_mut(index) {
            let shift = 16 * half as u32;
            let mask = if PAIRED { 0xFFFF << shift } else { u32::MAX };
            *word = (*word & !mask) | (((b as u32) << shift) & mask);
        }
    }
}

/// Filter `fi`'s background value: in [`StreamScratch::background`]'s layout.
fn background_of<const F: usize, const PAIRED: bool>(background: &[u32; F], fi: usize) -> i32 {
    if PAIRED {
        let word = background.get(fi / 4 * 2 + fi % 2).copied().unwrap_or(0);
        if fi % 4 < 2 {
            dsp::lo(word)
        } else {
            dsp::hi(word)
        }
    } else {
        background.get(fi).map_or(0, |&b| b as i32)
    }
}

/// Filter `fi`'s pooled value (minus the conv zero point) at a position whose input is all
/// background: each of its four windows is its bias.
fn background_value(layers: &StreamLayers<'_>, requant: Requant, fi: usize, f: &Filter3x3) -> i32 {
    let bias = layers.conv.channel(fi).map_or(0, |c| c.0);
    requant.pooled(&layers.conv, layers.dense_input_offset, (fi, f), [bias; 4])
}

/// How every inference of `layers` (a conv of `filters` filters) requantizes its windows.
fn requant_of(layers: &StreamLayers<'_>, filters: usize) -> Requant {
    let mut right_shifts_only = true;
    for fi in 0..filters {
        right_shifts_only &= layers
            .conv
            .channel(fi)
            .is_none_or(|(_, m, s)| m >= 0 && s <= 0);
    }
    Requant::choose(layers, right_shifts_only)
}

/// Whether every inference of `layers` (a conv of `filters` filters) requantizes the
/// fast way: a ReLU at the conv's int8 zero point, which the dense layer takes, and
/// right shifts only. A [`Stream3x3`] compiled with `FAST` needs it.
pub fn fast_requant(layers: &StreamLayers<'_>, filters: usize) -> bool {
    requant_of(layers, filters) != Requant::Exact
}

/// Writes into `acc` the dense accumulators (without bias) of an `in_h × in_w` input that
/// is all background, where [`Stream3x3::new`] starts them: computed once, when the layer
/// is made (`stack::layers::ConvPoolDense3x3`), so that an inference spends nothing on the
/// background. `F` filters, `N` dense units, as the stream's.
#[inline(never)]
pub fn background_start<const F: usize, const N: usize>(
    layers: &StreamLayers<'_>,
    in_h: usize,
    in_w: usize,
    acc: &mut [i32; N],
) {
    // Opaque trip counts keep the loops rolled (flash, and a small frame).
    let filters = core::hint::black_box(F);
    let requant = requant_of(layers, filters);
    let n_in = (in_h + 1).saturating_sub(3) / 2 * ((in_w + 1).saturating_sub(3) / 2) * F;
    *acc = [0; N];
    for fi in 0..filters {
        let Some((f, _)) = filter3x3(layers, fi) else {
            break;
        };
        let b = background_value(layers, requant, fi, &f);
        for (u, a) in acc.iter_mut().enumerate() {
            let Some(row) = layers.dense_weights.get(u * n_in..(u + 1) * n_in) else {
                break;
            };
            for &w in row.iter().skip(fi).step_by(filters.max(1)) {
                *a = a.wrapping_add(b.wrapping_mul(i32::from(w as i8)));
            }
        }
    }
}

/// Writes the entries of the pooled values `v` (as `i32` bits, each first capped at
/// `cap` as a `u32`), as differences from `background`, into `list`; returns their
/// length in words. One function for every caller, so that its loop exists once.
#[inline(never)]
fn push_all<const F: usize, const PAIRED: bool>(
    v: &[u32; F],
    cap: u32,
    background: &[u32; F],
    list: &mut [u32; F],
) -> usize {
    // An opaque trip count keeps the loop rolled: unrolled it costs more flash than the
    // conv stage itself, to save a few instructions per position.
    let n = core::hint::black_box(F).min(F);
    let v = &v[..n];
    let mut len = 0;
    if PAIRED {
        for (g, (v, b)) in v
            .chunks_exact(4)
            .zip(background.chunks_exact(2))
            .enumerate()
        {
            let c = |i: usize| v[i].min(cap);
            let even = dsp::ssub16(dsp::pkhbt(c(0), c(2)), b[0]);
            let odd = dsp::ssub16(dsp::pkhbt(c(1), c(3)), b[1]);
            push_group(list, &mut len, g, even, odd);
        }
    } else {
        for (fi, (&v, &b)) in v.iter().zip(background).enumerate() {
            push(
                list,
                &mut len,
                fi,
                (v.min(cap) as i32).wrapping_sub(b as i32),
            );
        }
    }
    len
}

/// Fills `filters` from the conv layer (as far as its weights and parameters go); true if
/// every multiplier is ≥ 0 and every shift ≤ 0, so that [`Requant::Fast`] is exact.
fn prepare_filters(layers: &StreamLayers<'_>, filters: &mut [Filter3x3]) -> bool {
    let mut right_shifts_only = true;
    for (fi, slot) in filters.iter_mut().enumerate() {
        let Some((f, right)) = filter3x3(layers, fi) else {
            break;
        };
        *slot = f;
        right_shifts_only &= right;
    }
    right_shifts_only
}

/// Filter `fi` of the conv as the fast path holds it, and whether its multiplier is ≥ 0
/// and its shift ≤ 0; `None` past the conv's weights or parameters.
fn filter3x3(layers: &StreamLayers<'_>, fi: usize) -> Option<(Filter3x3, bool)> {
    let w = layers.conv_weights.get(9 * fi..9 * fi + 9)?;
    let (bias, multiplier, shift) = layers.conv.channel(fi)?;
    let mut x = [0i32; 9];
    let mut sum = 0i32;
    for (x, &w) in x.iter_mut().zip(w) {
        *x = i32::from(w as i8);
        sum = sum.wrapping_add(*x);
    }
    let f = Filter3x3 {
        pairs: [
            dsp::pack(x[0], x[2]),
            dsp::pack(x[3], x[5]),
            dsp::pack(x[6], x[8]),
            dsp::pack(x[1], x[4]),
            dsp::pack(x[7], (-shift).clamp(0, 31)),
        ],
        bias: bias.wrapping_add(layers.input_offset.wrapping_mul(sum)),
        multiplier,
    };
    Some((f, multiplier >= 0 && shift <= 0))
}

/// The pooled value of one filter's four window accumulators, minus the conv zero point:
/// TFLite's requantization of their max, with the ReLU at the zero point.
///
/// A max `m ≤ 0` requantizes to at most 0 (a non-negative multiplier keeps the sign), so
/// the ReLU makes it 0. For `m > 0`, `SaturatingRoundingDoublingHighMul(m, M)` is
/// `(m·M + 2^30) >> 31` (its sign cases and its saturation cannot occur), and
/// `RoundingDivideByPOT(x, r)` of an `x ≥ 0` is `(x + 2^(r−1)) >> r` (`x` for `r = 0`;
/// no overflow as `x < 2^31`). The result is capped at `cap = 127 − zero point`.
#[inline(always)]
fn pooled_value(f: &Filter3x3, a: [i32; 4], cap: u32) -> i32 {
    let m = a[0].max(a[1]).max(a[2].max(a[3]));
    if m <= 0 {
        return 0;
    }
    // Both factors are non-negative: an unsigned 32×32 → 64-bit multiply.
    let product = crate::requant::wide_product(m as u32, f.multiplier as u32);
    let x = ((product + (1 << 30)) >> 31) as u32;
    let r = f.right_shift() & 31;
    let half = (1u32 << r) >> 1;
    ((x + half) >> r).min(cap) as i32
}

/// The requantized max of filter `fi`'s four window accumulators for any parameters:
/// requantize each, then take the max (the unfused kernels' order).
#[inline(never)]
#[cold]
fn pooled_value_exact(rq: &ChannelRequant<'_>, fi: usize, a: [i32; 4]) -> i32 {
    let Some((_, multiplier, shift)) = rq.channel(fi) else {
        return i32::from(i8::MIN);
    };
    let mut best = i8::MIN;
    for a in a {
        best = best.max(requantize_outlined(rq, a, multiplier, shift));
    }
    i32::from(best)
}

/// Appends the entry `(v, filter)` to a scalar list unless `v` is 0 (branch-free: the
/// slot is written either way and reused if not kept).
#[inline(always)]
fn push(list: &mut [u32], len: &mut usize, filter: usize, v: i32) {
    if let Some(slot) = list.get_mut(*len) {
        *slot = dsp::pack(v, filter as i32);
        *len += usize::from(v != 0);
    }
}

/// Appends group `g`'s four values to a paired list, as two packed pairs `even =
/// (v0, v2)`, `odd = (v1, v3)` (the order [`dsp::sxtb16`] and [`dsp::sxtb16_ror8`] unpack
/// 4 weight bytes in) and the group's weight offset `4·g`, unless all four are 0.
#[inline(always)]
fn push_group(list: &mut [u32], len: &mut usize, g: usize, even: u32, odd: u32) {
    if let Some(slot) = list.get_mut(*len..*len + 3) {
        slot[0] = even;
        slot[1] = odd;
        slot[2] = 4 * g as u32;
        *len += 3 * usize::from(even | odd != 0);
    }
}

/// `k` if it is at most `max`: `k & max` when `mask` (`max + 1` a power of two, or `max`
/// a multiple of 4 below one, as the callers' `F − 1` and `F − 4`), else `k.min(max)`.
#[inline(always)]
fn bound(k: usize, max: usize, mask: bool) -> usize {
    if mask {
        k & max
    } else {
        k.min(max)
    }
}

/// Dense stage for two units, `c0` and `c1` their weights at the position, of a scalar
/// entry (a filter's pooled value): their sums `acc` with it.
#[inline(always)]
fn scalar_entry<const F: usize>(e: u32, c0: &[u8; F], c1: &[u8; F], acc: [i32; 2]) -> [i32; 2] {
    // Always `k < F`; bounding it again lets the compiler see that the loads are in
    // bounds (a mask when it can).
    let k = bound((e >> 16) as usize, F.saturating_sub(1), F.is_power_of_two());
    let v = dsp::lo(e);
    let [a0, a1] = acc;
    match (c0.get(k), c1.get(k)) {
        (Some(&w0), Some(&w1)) => [
            a0.wrapping_add(v * i32::from(w0 as i8)),
            a1.wrapping_add(v * i32::from(w1 as i8)),
        ],
        _ => acc,
    }
}

/// Dense stage for two units, `c0` and `c1` their weights at the position, of a paired
/// entry (`e`: three words, four filters' pooled values and their first filter), whose four
/// weight bytes one load fetches and [`dsp::sxtb16`] unpacks: their sums `acc` with it.
#[inline(always)]
fn paired_entry<const F: usize>(e: &[u32], c0: &[u8; F], c1: &[u8; F], acc: [i32; 2]) -> [i32; 2] {
    // Always `4·g ≤ F − 4` (the entries are this module's); bounding it again lets
    // the compiler see that the loads are in bounds (a mask when it can).
    let &[e0, e1, first] = e else {
        return acc;
    };
    let k = bound(first as usize, F.saturating_sub(4), F.is_power_of_two());
    let (Some(w0), Some(w1)) = (
        c0.get(k..).and_then(|w| w.first_chunk::<4>()),
        c1.get(k..).and_then(|w| w.first_chunk::<4>()),
    ) else {
        return acc;
    };
    let (w0, w1) = (u32::from_le_bytes(*w0), u32::from_le_bytes(*w1));
    let [a0, a1] = acc;
    let a0 = dsp::smlad(dsp::sxtb16(w0), e0, a0);
    let a1 = dsp::smlad(dsp::sxtb16(w1), e0, a1);
    [
        dsp::smlad(dsp::sxtb16_ror8(w0), e1, a0),
        dsp::smlad(dsp::sxtb16_ror8(w1), e1, a1),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{conv, dense, pool, TestRng};
    use std::{boxed::Box, vec, vec::Vec};

    /// Filters and units of the small fast-path cases.
    const SHAPES: [(usize, usize); 12] = [
        (1, 1),
        (1, 3),
        (2, 2),
        (3, 1),
        (4, 3),
        (4, 4),
        (4, 7),
        (5, 2),
        (7, 5),
        (8, 1),
        (8, 6),
        (12, 3),
    ];

    /// Shape of a case: an `in_h × in_w` one-channel input, a 3×3 valid conv with
    /// `filters` outputs, a 2×2 max pool and a dense layer with `units` outputs.
    #[derive(Debug, Clone, Copy)]
    struct Geometry {
        in_h: usize,
        in_w: usize,
        filters: usize,
        units: usize,
    }

    impl Geometry {
        /// Dense inputs: the flattened pooled map.
        fn dense_inputs(&self) -> usize {
            (self.in_h - 2) / 2 * ((self.in_w - 2) / 2) * self.filters
        }
    }

    /// Random layers of one shape, owned.
    struct Case {
        g: Geometry,
        input: Vec<i8>,
        /// The input's zero point (minus the conv's input offset).
        input_zp: i32,
        conv_w: Vec<u8>,
        conv_bias: Vec<u8>,
        conv_mult: Vec<u8>,
        conv_shift: Vec<u8>,
        conv_zp: i32,
        relu: bool,
        dense_w: Vec<u8>,
        dense_bias: Vec<u8>,
        dense_mult: Vec<u8>,
        dense_shift: Vec<u8>,
        dense_zp: i32,
    }

    fn le(v: &[i32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    /// Random valid quantization: multipliers in [2^30, 2^31) (sometimes 0), shifts in
    /// −31..=30 with a bias towards the realistic −12..=0, any zero points and weights.
    fn random_case(rng: &mut TestRng, g: Geometry) -> Case {
        let bytes = |rng: &mut TestRng, n: usize| (0..n).map(|_| rng.i8() as u8).collect();
        let mult = |rng: &mut TestRng, n: usize| {
            let m: Vec<i32> = (0..n)
                .map(|_| match rng.below(20) {
                    0 => 0,
                    _ => (1 << 30) + rng.below(1 << 30) as i32,
                })
                .collect();
            le(&m)
        };
        let shift = |rng: &mut TestRng, n: usize| {
            (0..n)
                .map(|_| match rng.below(6) {
                    0 => (rng.below(62) as i32 - 31) as i8 as u8,
                    _ => (-(rng.below(13) as i32)) as i8 as u8,
                })
                .collect()
        };
        let bias = |rng: &mut TestRng, n: usize, span: u64| {
            let b: Vec<i32> = (0..n)
                .map(|_| match rng.below(30) {
                    0 => rng.next_u64() as i32,
                    _ => rng.below(2 * span + 1) as i32 - span as i32,
                })
                .collect();
            le(&b)
        };
        let n_in = g.dense_inputs();
        Case {
            input: (0..g.in_h * g.in_w).map(|_| rng.i8()).collect(),
            // The trainer's −128 half the time, any int8 otherwise.
            input_zp: match rng.below(2) {
                0 => -128,
                _ => rng.below(256) as i32 - 128,
            },
            conv_w: bytes(rng, g.filters * 9),
            conv_bias: bias(rng, g.filters, 40_000),
            conv_mult: mult(rng, g.filters),
            conv_shift: shift(rng, g.filters),
            conv_zp: rng.below(256) as i32 - 128,
            relu: rng.below(4) != 0,
            dense_w: bytes(rng, g.units * n_in),
            dense_bias: bias(rng, g.units, 400_000),
            dense_mult: mult(rng, g.units),
            dense_shift: shift(rng, g.units),
            dense_zp: rng.below(256) as i32 - 128,
            g,
        }
    }

    impl Case {
        fn layers(&self) -> StreamLayers<'_> {
            StreamLayers {
                input_offset: -self.input_zp,
                conv_weights: &self.conv_w,
                conv: ChannelRequant {
                    bias: &self.conv_bias,
                    multiplier: &self.conv_mult,
                    shift: &self.conv_shift,
                    output_offset: self.conv_zp,
                    activation_min: if self.relu { self.conv_zp } else { -128 },
                    activation_max: 127,
                },
                dense_input_offset: -self.conv_zp,
                dense_weights: &self.dense_w,
                dense: ChannelRequant {
                    bias: &self.dense_bias,
                    multiplier: &self.dense_mult,
                    shift: &self.dense_shift,
                    output_offset: self.dense_zp,
                    activation_min: -128,
                    activation_max: 127,
                },
            }
        }

        /// The unfused kernels: conv → pool → dense, through full tensors.
        fn reference(&self) -> Vec<i8> {
            let g = &self.g;
            let l = self.layers();
            let cg = conv::ConvGeometry {
                in_h: g.in_h,
                in_w: g.in_w,
                in_c: 1,
                k_h: 3,
                k_w: 3,
                filters: g.filters,
                stride: 1,
                padding: conv::Padding::Valid,
            };
            let mut conv_out = vec![0i8; cg.out_h() * cg.out_w() * g.filters];
            conv::conv2d_i8(
                &cg,
                &self.input,
                l.input_offset,
                &self.conv_w,
                &l.conv,
                &mut conv_out,
            );
            let pg = pool::PoolGeometry {
                in_h: cg.out_h(),
                in_w: cg.out_w(),
                channels: g.filters,
                size: 2,
            };
            let mut pooled = vec![0i8; g.dense_inputs()];
            pool::max_pool(&pg, &conv_out, &mut pooled);
            let mut out = vec![0i8; g.units];
            dense::dense_i8(
                &pooled,
                l.dense_input_offset,
                &self.dense_w,
                &l.dense,
                &mut out,
            );
            out
        }

        /// The 3×3 fast path with `F` filters and `N` units (which must be the case's),
        /// paired or not.
        fn fast_with<const F: usize, const N: usize, const PAIRED: bool>(&self) -> Vec<i8> {
            assert_eq!((self.g.filters, self.g.units), (F, N));
            let mut scratch = Box::new(StreamScratch::<F, N>::new());
            let mut out = [0i8; N];
            let layers = self.layers();
            let mut start = [0; N];
            background_start::<F, N>(&layers, self.g.in_h, self.g.in_w, &mut start);
            let s = Stream3x3::<F, N, PAIRED, false>::new(
                &layers,
                self.g.in_h,
                self.g.in_w,
                &self.input,
                &mut scratch,
                &start,
            );
            assert_eq!(s.requant == Requant::Exact, !self.fast_requant());
            s.run::<crate::probe::NoProbe>(&mut out, 0);
            out.to_vec()
        }

        /// Every fast path (paired only for a multiple of 4 filters), for the shapes the
        /// tests use ([`SHAPES`] and the tutorial's).
        fn fast(&self) -> Vec<Vec<i8>> {
            macro_rules! dispatch {
                ($(($f:literal, $n:literal)),*) => {
                    match (self.g.filters, self.g.units) {
                        $(($f, $n) => {
                            let mut out = vec![self.fast_with::<$f, $n, false>()];
                            if $f % 4 == 0 {
                                out.push(self.fast_with::<$f, $n, true>());
                            }
                            out
                        })*
                        other => panic!("no fast path instantiated for {other:?}"),
                    }
                };
            }
            dispatch!(
                (1, 1),
                (1, 3),
                (2, 2),
                (3, 1),
                (4, 3),
                (4, 4),
                (4, 7),
                (5, 2),
                (7, 5),
                (8, 1),
                (8, 6),
                (12, 3),
                (32, 10)
            )
        }

        /// Whether the pool's max may be requantized once.
        fn fast_requant(&self) -> bool {
            let l = self.layers();
            // Without a ReLU the clamp at −128 is one at the zero point −128.
            (self.relu || self.conv_zp == -128)
                && (0..self.g.filters).all(|f| {
                    let (_, m, s) = l.conv.channel(f).unwrap();
                    m >= 0 && s <= 0
                })
        }
    }

    #[test]
    fn fast_paths_match_unfused_kernels_with_random_quantization() {
        let mut rng = TestRng(0xFA57_0001);
        let mut taken = 0;
        // Fewer cases under miri, which interprets every instruction.
        let cases = if cfg!(miri) { 30 } else { 600 };
        for case in 0..cases {
            // Tutorial-sized cases now and then; small ones (more of them) otherwise.
            let (in_h, in_w, (filters, units)) = if case % 25 == 0 && !cfg!(miri) {
                (28, 28, (32, 10))
            } else {
                (
                    4 + rng.below(8) as usize,
                    4 + rng.below(8) as usize,
                    SHAPES[rng.below(SHAPES.len() as u64) as usize],
                )
            };
            let g = Geometry {
                in_h,
                in_w,
                filters,
                units,
            };
            let mut c = random_case(&mut rng, g);
            if case % 2 == 0 {
                // What training produces: a ReLU and right shifts (any multiplier ≥ 0).
                c.relu = true;
                c.conv_shift = (0..filters)
                    .map(|_| (-(rng.below(32) as i8)) as u8)
                    .collect();
            }
            if case % 3 == 0 {
                // Background patches (every value at the input zero point) take their own
                // path.
                for (i, x) in c.input.iter_mut().enumerate() {
                    if (i / 5) % 3 != 0 {
                        *x = c.input_zp as i8;
                    }
                }
            }
            let expected = c.reference();
            for (kernel, out) in c.fast().iter().enumerate() {
                assert_eq!(out, &expected, "kernel {kernel}, case {case}: {g:?}");
            }
            taken += usize::from(c.fast_requant());
        }
        // Both branches of the kernel must be exercised: the pool-first requantization in
        // half the cases or more, the per-window one in the rest.
        assert!(
            (cases / 2..cases).contains(&taken),
            "the pool-first requantization took {taken} of {cases} cases"
        );
    }

    #[test]
    fn fast_path_requantizes_every_window_when_it_must() {
        let g = Geometry {
            in_h: 6,
            in_w: 6,
            filters: 4,
            units: 3,
        };
        let mut rng = TestRng(77);
        for round in 0..300 {
            let mut c = random_case(&mut rng, g);
            c.relu = true;
            c.conv_shift = vec![0xFF; 4];
            c.conv_mult = le(&[1 << 30; 4]);
            c.conv_bias = le(&[0; 4]);
            match round % 3 {
                // A left shift that overflows: requantization wraps, not monotonic.
                0 => c.conv_shift[1] = 20,
                // A negative multiplier (the loader refuses it) reverses the order.
                1 => c.conv_mult = le(&[1 << 30, -(1 << 30), 1 << 30, 1 << 30]),
                // No ReLU: negative pooled values count.
                _ => (c.relu, c.conv_zp) = (false, 3),
            }
            c.input = (0..36)
                .map(|_| if rng.below(2) == 0 { -128 } else { 127 })
                .collect();
            assert!(!c.fast_requant());
            let expected = c.reference();
            for out in c.fast() {
                assert_eq!(out, expected, "round {round}");
            }
        }
    }

    #[test]
    fn pooled_value_is_tflite_requantization_of_the_max() {
        use crate::requant::requantize;
        let mut rng = TestRng(0x2E1F);
        for shift in -31..=0 {
            for &zp in &[-128, -5, 0, 100, 127] {
                let cap = (127 - zp) as u32;
                for mult in [
                    0,
                    1,
                    1 << 30,
                    (1 << 30) + 1,
                    i32::MAX,
                    rng.below(1 << 31) as i32,
                ] {
                    let f = Filter3x3 {
                        pairs: [0, 0, 0, 0, dsp::pack(0, -shift)],
                        multiplier: mult,
                        ..Filter3x3::ZERO
                    };
                    let check = |m: i32| {
                        let want = i32::from(requantize(m, mult, shift, zp, zp, 127)) - zp;
                        let window = [m.saturating_sub(7), i32::MIN, m, m];
                        assert_eq!(
                            pooled_value(&f, window, cap),
                            want,
                            "m={m} mult={mult} shift={shift} zp={zp}"
                        );
                    };
                    (-3..if cfg!(miri) { 30 } else { 3000 }).for_each(check);
                    for _ in 0..if cfg!(miri) { 5 } else { 200 } {
                        check(rng.next_u64() as i32);
                    }
                    [i32::MAX, i32::MIN, 1 << 20, (1 << 20) + 1]
                        .into_iter()
                        .for_each(check);
                }
            }
        }
    }
}

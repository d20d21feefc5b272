//! Generic float layers over NHWC `f32` batches, each with a forward pass (eval or training)
//! and a backward pass that accumulates its parameter gradients.
//!
//! Conv and dense layers split the batch into fixed chunks of [`CHUNK`] images that run in
//! parallel on the current rayon pool; partial gradients are summed in chunk order, so the result
//! does not depend on the thread count. The forward passes are GEMMs (convolution through
//! im2col, one image at a time, read in place from the image where it can); the backward passes
//! visit only the non-zero output gradients (see [`super::kernels`]). A ReLU keeps one bit per
//! output for its backward pass, and the large activation and gradient buffers are recycled
//! from one pass to the next.

use super::kernels::{
    gather_rows, gemm_bias, gemm_cols, gemm_pool4, mask_and_sum_rows, mask_by_bits, nonzero_bits,
    pooled_grads, positive_bits, simd_fn, Cols, Lists, Packed, Pooled, PooledShape, Rows,
};
use super::residual::Add;
use super::sliding::{activate, AvgPool, Depthwise, Slide};
use super::spec::{conv_out, Activation, LayerSpec, Shape};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::borrow::Cow;
use std::cell::RefCell;
use std::sync::{Mutex, PoisonError};

/// Images per parallel task of a convolution.
pub const CHUNK: usize = 16;
/// Images per parallel task of a dense layer: more than a conv's, as each task sums its own
/// kernel-sized gradient.
pub const DENSE_CHUNK: usize = 64;
/// Keras' batch-normalisation momentum of the moving statistics.
pub const BN_MOMENTUM: f32 = 0.99;
/// Keras' batch-normalisation epsilon.
pub const BN_EPSILON: f32 = 1e-3;

/// A batch of `n` tensors of shape `(h, w, c)`, NHWC row-major (a vector is `(1, 1, len)`).
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    /// Batch size.
    pub n: usize,
    /// Rows.
    pub h: usize,
    /// Columns.
    pub w: usize,
    /// Channels.
    pub c: usize,
    /// `n·h·w·c` values.
    pub data: Vec<f32>,
}

impl Tensor {
    /// Zeros.
    pub fn zeros(n: usize, h: usize, w: usize, c: usize) -> Self {
        Self {
            n,
            h,
            w,
            c,
            data: vec![0.0; n * h * w * c],
        }
    }

    /// Values per item.
    pub fn item_len(&self) -> usize {
        self.h * self.w * self.c
    }
}

/// How a forward pass runs.
#[derive(Clone, Copy, Debug)]
pub enum Mode {
    /// Inference: dropout is the identity, batch norm uses its moving statistics, nothing is kept.
    Eval,
    /// Training: keeps what the backward pass needs; `key` seeds this step's dropout masks.
    Train {
        /// Seed of the dropout masks of this step (the layer index is mixed in).
        key: u64,
    },
}

/// What one layer keeps from a training forward pass for its backward pass. A training step
/// holds one per layer for each part of the batch it runs at once (see
/// [`super::fit::forward_backward`]), so the layers themselves stay read-only while parts run in
/// parallel; the buffers are reused from one step to the next.
#[derive(Debug, Default)]
pub struct Trace {
    /// Conv / depthwise conv / dense: the input.
    pub(super) input: Option<Tensor>,
    /// Conv / depthwise conv / dense with ReLU: which outputs were positive (with ReLU6:
    /// and below 6; see [`clip_bits`]).
    pub(super) active: Option<Vec<u64>>,
    /// Pool: the input's shape and where each output's maximum was.
    argmax: Option<(Tensor, Vec<u32>)>,
    /// Dropout: the mask (0 or the inverted-dropout scale).
    mask: Option<Vec<f32>>,
    /// Batch norm: x̂ and 1/σ of the batch.
    norm: Option<(Vec<f32>, Vec<f32>)>,
    /// Batch norm: the batch's mean and (biased) variance, for the moving statistics.
    stats: Option<(Vec<f64>, Vec<f64>)>,
}

/// A layer's weights rearranged for its kernels, made once per training step
/// ([`Layer::prepare`]) and shared by the parts of the batch: without it, every call packs
/// (forward) and transposes (backward) its kernel again.
#[derive(Debug, Default)]
pub struct Prepared {
    /// The kernel packed for [`gemm_bias`].
    packed: Option<Packed>,
    /// The kernel transposed, `(outs, rows)`, for the input gradient.
    transposed: Option<Vec<f32>>,
}

/// One layer with its parameters and their gradients.
#[derive(Clone, Debug)]
pub enum Layer {
    /// See [`Conv`].
    Conv(Conv),
    /// See [`Depthwise`].
    Depthwise(Depthwise),
    /// See [`Pool`].
    Pool(Pool),
    /// See [`AvgPool`].
    AvgPool(AvgPool),
    /// Flattening (a no-op on NHWC data).
    Flatten,
    /// See [`Dense`].
    Dense(Dense),
    /// See [`Dropout`].
    Dropout(Dropout),
    /// See [`BatchNorm`].
    BatchNorm(BatchNorm),
    /// A residual block's shortcut with layers of its own starts here: the next layer reads
    /// tensor `from` (0 the input, `i + 1` layer `i`'s output), the block's input.
    /// On its own, the identity: the model runs it with that tensor
    /// ([`super::residual::Saved`], [`super::residual::Pending`]).
    Branch {
        /// The tensor the next layer reads.
        from: usize,
    },
    /// A residual block's add; on its own, the identity: the model runs it with the tensor
    /// it adds ([`super::residual::Saved`], [`super::residual::Pending`]).
    Add(Add),
}

/// A trainable tensor: values, gradient, and whether L1/L2 apply (kernels only).
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// Values.
    pub value: Vec<f32>,
    /// Gradient of the loss, summed over the last backward pass.
    pub grad: Vec<f32>,
    /// A kernel (regularised) rather than a bias, γ or β.
    pub kernel: bool,
}

impl Param {
    pub(super) fn new(value: Vec<f32>, kernel: bool) -> Self {
        let grad = vec![0.0; value.len()];
        Self {
            value,
            grad,
            kernel,
        }
    }
}

/// Geometry of a convolution.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ConvGeom {
    /// Input rows, columns, channels.
    pub ih: usize,
    /// Input columns.
    pub iw: usize,
    /// Input channels.
    pub ic: usize,
    /// Output rows.
    pub oh: usize,
    /// Output columns.
    pub ow: usize,
    /// Filters.
    pub filters: usize,
    /// Kernel side.
    pub k: usize,
    /// Stride.
    pub stride: usize,
    /// Zero rows above.
    pub pad_top: usize,
    /// Zero columns on the left.
    pub pad_left: usize,
}

impl ConvGeom {
    /// Values in one im2col row: `k·k·ic`.
    pub fn taps(&self) -> usize {
        self.k * self.k * self.ic
    }

    /// Writes the whole im2col matrix of one image, value `(p, t)` (output position `p`, column
    /// `t = (ky·k + kx)·ic + ci`) at `out[p·row_stride + t·col_stride]`, zero where the window
    /// hangs over the padding: row-major with `(taps, 1)`, transposed with `(1, rows)`. Walks
    /// the input row by row (no per-row copies, which cost a call each when rows are short).
    fn im2col_into(&self, image: &[f32], out: &mut [f32], row_stride: usize, col_stride: usize) {
        let (k, ic) = (self.k, self.ic);
        for oy in 0..self.oh {
            for ky in 0..k {
                let iy = (oy * self.stride + ky).wrapping_sub(self.pad_top);
                for kx in 0..k {
                    // Output columns whose input column `ox·stride + kx − pad_left` exists.
                    let (s, pad) = (self.stride, self.pad_left);
                    let lo = pad.saturating_sub(kx).div_ceil(s).min(self.ow);
                    let hi = (self.iw + pad)
                        .saturating_sub(kx)
                        .div_ceil(s)
                        .clamp(lo, self.ow);
                    let (lo, hi) = if iy < self.ih { (lo, hi) } else { (0, 0) };
                    for ci in 0..ic {
                        let t = (ky * k + kx) * ic + ci;
                        let base = oy * self.ow * row_stride + t * col_stride;
                        for ox in (0..lo).chain(hi..self.ow) {
                            out[base + ox * row_stride] = 0.0;
                        }
                        if lo == hi {
                            continue;
                        }
                        let src = &image[(iy * self.iw + lo * s + kx - pad) * ic + ci..];
                        let dst = &mut out[base + lo * row_stride..];
                        if row_stride == 1 && s * ic == 1 {
                            dst[..hi - lo].copy_from_slice(&src[..hi - lo]);
                        } else {
                            let dst = dst.iter_mut().step_by(row_stride);
                            for (d, v) in dst.zip(src.iter().step_by(s * ic)).take(hi - lo) {
                                *d = *v;
                            }
                        }
                    }
                }
            }
        }
    }

    /// [`ConvGeom::im2col_into`] row-major for a one-channel input and a `K`×`K` kernel (a
    /// first convolution): rows whose window lies inside the image are `K` fixed-size copies.
    fn im2col_one_channel<const K: usize>(&self, image: &[f32], out: &mut [f32]) {
        debug_assert!(self.ic == 1 && self.k == K);
        let (row_len, s) = (self.ow * K * K, self.stride);
        // Output rows whose windows all lie inside the image (no padding on the left or right).
        let whole_rows = self.pad_left == 0 && self.ow > 0 && (self.ow - 1) * s + K <= self.iw;
        for (oy, out) in out.chunks_exact_mut(row_len.max(1)).enumerate() {
            let iy = (oy * s).wrapping_sub(self.pad_top);
            if whole_rows && iy < self.ih && iy + K <= self.ih {
                // Window row `ky` of every position: sliding windows of input row `iy + ky`.
                for ky in 0..K {
                    let input = &image[(iy + ky) * self.iw..][..self.iw];
                    for (row, window) in
                        out.chunks_exact_mut(K * K).zip(input.windows(K).step_by(s))
                    {
                        let dst: &mut [f32; K] =
                            (&mut row[ky * K..][..K]).try_into().expect("a window row");
                        *dst = window.try_into().expect("a window row");
                    }
                }
            } else {
                for (ox, row) in out.chunks_exact_mut(K * K).enumerate() {
                    self.im2col_row(image, oy * self.ow + ox, row);
                }
            }
        }
    }

    /// Writes row `p` (output position `oy·ow + ox`) of the im2col matrix of one image: column
    /// `(ky·k + kx)·ic + ci`, zero where the window hangs over the padding.
    fn im2col_row(&self, image: &[f32], p: usize, row: &mut [f32]) {
        let (oy, ox) = (p / self.ow, p % self.ow);
        let run = self.k * self.ic;
        let ix0 = (ox * self.stride).wrapping_sub(self.pad_left);
        let whole_run = ix0 < self.iw && ix0 + self.k <= self.iw;
        for (ky, dst) in row.chunks_exact_mut(run).enumerate() {
            let iy = (oy * self.stride + ky).wrapping_sub(self.pad_top);
            if iy >= self.ih {
                dst.fill(0.0);
            } else if whole_run {
                dst.copy_from_slice(&image[(iy * self.iw + ix0) * self.ic..][..run]);
            } else {
                for (kx, dst) in dst.chunks_exact_mut(self.ic).enumerate() {
                    let ix = ix0.wrapping_add(kx);
                    if ix < self.iw {
                        dst.copy_from_slice(&image[(iy * self.iw + ix) * self.ic..][..self.ic]);
                    } else {
                        dst.fill(0.0);
                    }
                }
            }
        }
    }

    /// The whole im2col matrix of one image, row-major (`oh·ow` rows of [`ConvGeom::taps`]), in
    /// `buffer`.
    fn im2col(&self, image: &[f32], buffer: &mut Vec<f32>) {
        buffer.resize(self.oh * self.ow * self.taps(), 0.0);
        match (self.ic, self.k) {
            (1, 2) => self.im2col_one_channel::<2>(image, buffer),
            (1, 3) => self.im2col_one_channel::<3>(image, buffer),
            (1, 5) => self.im2col_one_channel::<5>(image, buffer),
            _ => self.im2col_into(image, buffer, self.taps(), 1),
        }
    }

    /// Where the kernels read each im2col row (see [`Rows`]): in place from the image when its
    /// window lies inside it (row `ky` of the window is one run of `k·ic` input values), else
    /// from a copy after the image. Runs shorter than [`MIN_RUN`] are all copied.
    fn plan(&self) -> ConvPlan {
        let (taps, run, positions) = (self.taps(), self.k * self.ic, self.oh * self.ow);
        if run < MIN_RUN {
            return ConvPlan {
                placed: (0..positions).map(|p| (p * taps, 0)).collect(),
                copied: (0..positions).collect(),
                segments: 1,
                seg_len: taps,
                after_image: false,
            };
        }
        let item_in = self.ih * self.iw * self.ic;
        let mut placed = Vec::with_capacity(positions);
        let mut copied = Vec::new();
        for oy in 0..self.oh {
            for ox in 0..self.ow {
                let iy = (oy * self.stride).wrapping_sub(self.pad_top);
                let ix = (ox * self.stride).wrapping_sub(self.pad_left);
                let inside = iy < self.ih
                    && iy + self.k <= self.ih
                    && ix < self.iw
                    && ix + self.k <= self.iw;
                if inside {
                    placed.push(((iy * self.iw + ix) * self.ic, self.iw * self.ic));
                } else {
                    placed.push((item_in + copied.len() * taps, run));
                    copied.push(oy * self.ow + ox);
                }
            }
        }
        ConvPlan {
            placed,
            copied,
            segments: self.k,
            seg_len: run,
            after_image: true,
        }
    }

    /// The im2col rows of `image` under `plan`, copying into `buffer` what is not read in place.
    fn rows<'a>(&self, plan: &'a ConvPlan, image: &'a [f32], buffer: &'a mut Vec<f32>) -> Rows<'a> {
        if plan.copied.is_empty() {
            return Rows::placed(image, &plan.placed, plan.segments, plan.seg_len);
        }
        let taps = self.taps();
        if !plan.after_image {
            // Every row copied, in order.
            self.im2col(image, buffer);
            let buffer: &'a [f32] = buffer;
            return Rows::placed(buffer, &plan.placed, plan.segments, plan.seg_len);
        }
        let base = image.len();
        buffer.resize(base + plan.copied.len() * taps, 0.0);
        buffer[..base].copy_from_slice(&image[..base]);
        for (row, &p) in buffer[base..].chunks_exact_mut(taps).zip(&plan.copied) {
            self.im2col_row(image, p, row);
        }
        let buffer: &'a [f32] = buffer;
        Rows::placed(buffer, &plan.placed, plan.segments, plan.seg_len)
    }

    /// Adds the rows of an im2col-shaped gradient for which `live(row)` back onto one image's
    /// gradient.
    fn col2im(&self, cols: &[f32], image: &mut [f32], live: impl Fn(usize) -> bool) {
        let taps = self.taps();
        for oy in 0..self.oh {
            for ox in 0..self.ow {
                if !live(oy * self.ow + ox) {
                    continue;
                }
                let row = &cols[(oy * self.ow + ox) * taps..][..taps];
                for ky in 0..self.k {
                    let iy = (oy * self.stride + ky).wrapping_sub(self.pad_top);
                    if iy >= self.ih {
                        continue;
                    }
                    for kx in 0..self.k {
                        let ix = (ox * self.stride + kx).wrapping_sub(self.pad_left);
                        if ix >= self.iw {
                            continue;
                        }
                        let src = &row[(ky * self.k + kx) * self.ic..][..self.ic];
                        let dst = &mut image[(iy * self.iw + ix) * self.ic..][..self.ic];
                        for (d, s) in dst.iter_mut().zip(src) {
                            *d += s;
                        }
                    }
                }
            }
        }
    }
}

/// Shortest run of input values (`k·ic`) that the kernels read in place; shorter ones (a first
/// convolution on one channel) make slow segments, so their im2col rows are copied.
const MIN_RUN: usize = 32;

/// How a convolution's im2col rows are laid out for the kernels ([`ConvGeom::plan`]).
struct ConvPlan {
    /// `(start, stride)` of every row (see [`Rows`]).
    placed: Vec<(usize, usize)>,
    /// The output positions whose rows are copied, in order.
    copied: Vec<usize>,
    /// Segments per row.
    segments: usize,
    /// Values per segment.
    seg_len: usize,
    /// The copies follow a copy of the image (some rows are read in place).
    after_image: bool,
}

/// The window side of the max pools that run with the convolution before them
/// ([`Layer::pooled_conv`]).
const FUSED_POOL: usize = 2;

impl ConvPlan {
    /// This plan with its rows taken window by window of a 2×2 max pool (`ph × pw` windows of
    /// an output `ow` positions wide), each window's four positions in its order: the rows
    /// [`gemm_pool4`] reads. Positions outside every window are left out.
    fn in_windows(self, ow: usize, ph: usize, pw: usize) -> Self {
        let mut placed = Vec::with_capacity(4 * ph * pw);
        for wy in 0..ph {
            for wx in 0..pw {
                for (dy, dx) in [(0, 0), (0, 1), (1, 0), (1, 1)] {
                    placed.push(self.placed[(2 * wy + dy) * ow + 2 * wx + dx]);
                }
            }
        }
        Self { placed, ..self }
    }
}

/// 2-D convolution. Kernel `[ky, kx, ci, f]` (Keras HWIO) viewed as a `(k·k·ic, filters)` matrix.
#[derive(Clone, Debug)]
pub struct Conv {
    /// Geometry.
    pub geom: ConvGeom,
    /// ReLU after the bias.
    pub relu: bool,
    /// With `relu`, a ReLU6: the output also clipped at 6.
    pub relu6: bool,
    /// Kernel, HWIO.
    pub kernel: Param,
    /// Bias per filter.
    pub bias: Param,
}

/// Per-thread scratch of the conv and dense passes, kept between calls.
#[derive(Default)]
struct Scratch {
    /// One image's im2col matrix.
    cols: Vec<f32>,
    /// One image's im2col-shaped input gradient.
    dcols: Vec<f32>,
    /// Which output gradients to visit (see [`keep_bits`]).
    keep: Vec<u64>,
    /// The visited output gradients by row (output position or image).
    rows: Lists,
    /// The same by column (filter or unit).
    columns: Lists,
    /// `dense` packed for the GEMM.
    packed: Packed,
    /// One image's im2col matrix transposed.
    cols_t: Vec<f32>,
    /// One image's kernel gradient, HWIO.
    dw: Vec<f32>,
    /// A max-pool's argmax buffer, between a backward pass and the next forward pass.
    argmax: Vec<u32>,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::default());
}

/// Runs `f` with this thread's [`Scratch`].
fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    SCRATCH.with(|s| f(&mut s.borrow_mut()))
}

/// Buffers of dropped activations and gradients, handed out again by [`reused`]: a fresh
/// allocation of this size costs a page fault and a cleared page every 4 KiB.
static SPARE: Mutex<Vec<Vec<f32>>> = Mutex::new(Vec::new());
/// Smaller vectors are not kept (cheap to allocate).
const SPARE_MIN: usize = 1 << 14;
/// Buffers kept at most.
const SPARE_COUNT: usize = 16;

/// A vector of `len` values whose contents are unspecified (old values of a recycled buffer, or
/// zeros): only for outputs that are written in full.
fn reused(len: usize) -> Vec<f32> {
    if len >= SPARE_MIN {
        let mut spare = SPARE.lock().unwrap_or_else(PoisonError::into_inner);
        let best = (0..spare.len())
            .filter(|&i| spare[i].capacity() >= len)
            .min_by_key(|&i| (spare[i].len() < len, spare[i].capacity()));
        if let Some(i) = best {
            let mut v = spare.swap_remove(i);
            drop(spare);
            v.truncate(len);
            v.resize(len, 0.0);
            return v;
        }
    }
    vec![0.0; len]
}

/// Keeps `v` for a later [`reused`].
fn recycle(v: Vec<f32>) {
    if v.capacity() >= SPARE_MIN {
        let mut spare = SPARE.lock().unwrap_or_else(PoisonError::into_inner);
        spare.push(v);
        if spare.len() > SPARE_COUNT {
            if let Some(i) = (0..spare.len()).min_by_key(|&i| spare[i].capacity()) {
                spare.swap_remove(i);
            }
        }
    }
}

/// Which values of `y` are positive, item by item (`item` values each): bit `i % 64` of word
/// `i / 64` of the item's `item.div_ceil(64)` words. All a ReLU's backward pass needs of its
/// output.
fn active_bits(y: &[f32], item: usize) -> Vec<u64> {
    let words = item.div_ceil(64);
    let mut bits = vec![0u64; y.len().div_ceil(item.max(1)) * words];
    bits.par_chunks_mut(words.max(1))
        .zip(y.par_chunks(item.max(1)))
        .for_each(|(bits, y)| positive_bits(y, bits));
    bits
}

/// [`active_bits`] for a ReLU (`relu6` false) or a ReLU6: the values in `(0, 6)`.
pub(super) fn clip_bits(y: &[f32], item: usize, relu6: bool) -> Vec<u64> {
    let mut bits = active_bits(y, item);
    if relu6 {
        let words = item.div_ceil(64);
        bits.par_chunks_mut(words.max(1))
            .zip(y.par_chunks(item.max(1)))
            .for_each(|(bits, y)| {
                for (i, &v) in y.iter().enumerate() {
                    if v >= 6.0 {
                        bits[i / 64] &= !(1 << (i % 64));
                    }
                }
            });
    }
    bits
}

/// Marks in `keep` the non-zero values of the output gradient `dy` of one item that also
/// passed the ReLU (`active`: that item's words of [`active_bits`]).
fn keep_bits(dy: &[f32], active: Option<&[u64]>, keep: &mut Vec<u64>) {
    keep.resize(dy.len().div_ceil(64), 0);
    nonzero_bits(dy, keep);
    if let Some(active) = active {
        for (k, a) in keep.iter_mut().zip(active) {
            *k &= a;
        }
    }
}

/// Rows (or columns) per tile of a transposition: a tile of both matrices stays in L1.
const TILE: usize = 32;

/// The row-major `(rows, cols)` matrix `m` transposed (in a [`reused`] buffer), tiles of
/// output rows in parallel.
fn transpose(m: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = reused(m.len());
    t.par_chunks_mut((TILE * rows).max(1))
        .enumerate()
        .for_each(|(tile, t)| {
            let c0 = tile * TILE;
            for r0 in (0..rows).step_by(TILE) {
                for (dc, t) in t.chunks_exact_mut(rows).enumerate() {
                    for r in r0..(r0 + TILE).min(rows) {
                        t[r] = m[r * cols + c0 + dc];
                    }
                }
            }
        });
    t
}

/// The end of a conv or dense backward pass: recycles the transposed weights, the output
/// gradient and the kept input, and returns `dx` shaped as the input if it was asked for.
fn finish_backward(dy: Tensor, x: Tensor, dx: Vec<f32>, need_dx: bool) -> Option<Tensor> {
    recycle(dy.data);
    let (n, h, w, c) = (x.n, x.h, x.w, x.c);
    recycle(x.data);
    need_dx.then_some(Tensor {
        n,
        h,
        w,
        c,
        data: dx,
    })
}

/// Adds per-chunk gradients `(dWᵀ, db)` in chunk order to the transposed kernel gradient
/// `grads[0]` and the bias gradient `grads[1]`; with `seeded`, the only part already is them
/// (see [`seed`]).
fn add_parts(parts: Vec<(Vec<f32>, Vec<f32>)>, seeded: bool, grads: &mut [Vec<f32>]) {
    let [kernel, bias] = grads else {
        panic!("a kernel and a bias gradient");
    };
    for (pw, pb) in parts {
        if seeded {
            (*kernel, *bias) = (pw, pb);
            return;
        }
        kernel
            .par_chunks_mut(1 << 14)
            .zip(pw.par_chunks(1 << 14))
            .for_each(|(s, p)| add(s, p));
        add(bias, &pb);
        recycle(pw);
    }
}

/// When a backward pass has a single chunk, its kernel and bias gradients `grads[0..2]`
/// themselves, taken out to be accumulated into directly (no zeroed copy of a kernel-sized
/// buffer per call); `None` otherwise.
fn seed(single: bool, grads: &mut [Vec<f32>]) -> Mutex<Option<(Vec<f32>, Vec<f32>)>> {
    Mutex::new(single.then(|| (std::mem::take(&mut grads[0]), std::mem::take(&mut grads[1]))))
}

/// The seed if there is one, else zeroed `(dWᵀ, db)` of `kernel` and `outs` values.
fn part_grads(
    seed: &Mutex<Option<(Vec<f32>, Vec<f32>)>>,
    kernel: usize,
    outs: usize,
) -> (Vec<f32>, Vec<f32>) {
    let seeded = seed.lock().unwrap_or_else(PoisonError::into_inner).take();
    seeded.unwrap_or_else(|| {
        let mut dwt = reused(kernel);
        dwt.fill(0.0);
        (dwt, vec![0.0; outs])
    })
}

fn add(sum: &mut [f32], part: &[f32]) {
    for (s, p) in sum.iter_mut().zip(part) {
        *s += p;
    }
}

/// The `(rows, cols)` kernel packed for [`gemm_bias`]: `prep`'s packing if it has one, else
/// packed now.
fn packed_kernel<'a>(
    prep: Option<&'a Prepared>,
    kernel: &[f32],
    rows: usize,
    cols: usize,
) -> Cow<'a, Packed> {
    match prep.and_then(|p| p.packed.as_ref()) {
        Some(w) => Cow::Borrowed(w),
        None => Cow::Owned(Packed::new(kernel, rows, cols)),
    }
}

/// `len` chunks of `chunk` values of `data`, or `count` empty slices if `data` is empty.
fn chunks_or_empty(data: &mut [f32], chunk: usize, count: usize) -> Vec<&mut [f32]> {
    let mut chunks: Vec<&mut [f32]> = data.chunks_mut(chunk.max(1)).collect();
    chunks.resize_with(count, Default::default);
    chunks
}

impl Conv {
    /// Zero-initialised parameters for `geom`.
    pub fn new(geom: ConvGeom, relu: bool) -> Self {
        Self {
            kernel: Param::new(vec![0.0; geom.taps() * geom.filters], true),
            bias: Param::new(vec![0.0; geom.filters], false),
            geom,
            relu,
            relu6: false,
        }
    }

    /// Whether the kernel gradient is one GEMM over all output positions rather than a visit of
    /// the non-zero output gradients: when im2col rows are short (a first convolution on one
    /// channel), visiting an entry costs more than the few multiplications it saves.
    fn dense_dw(g: &ConvGeom) -> bool {
        g.taps() < MIN_RUN
    }

    /// Per image: im2col, then one GEMM with the kernel.
    fn forward(&self, x: Tensor, trace: Option<&mut Trace>, prep: Option<&Prepared>) -> Tensor {
        let g = self.geom;
        let (taps, positions) = (g.taps(), g.oh * g.ow);
        let (item_in, item_out) = (x.item_len(), positions * g.filters);
        let bias = &self.bias.value;
        let mut data = reused(x.n * item_out);
        let w = packed_kernel(prep, &self.kernel.value, taps, g.filters);
        let plan = g.plan();
        data.par_chunks_mut((CHUNK * item_out).max(1))
            .zip(x.data.par_chunks((CHUNK * item_in).max(1)))
            .for_each(|(y, x)| {
                with_scratch(|s| {
                    for (img, out) in x.chunks_exact(item_in).zip(y.chunks_exact_mut(item_out)) {
                        let rows = g.rows(&plan, img, &mut s.cols);
                        gemm_bias(&rows, &w, bias, self.relu, out);
                        if self.relu6 {
                            activate(out, true, true);
                        }
                    }
                });
            });
        let y = Tensor {
            n: x.n,
            h: g.oh,
            w: g.ow,
            c: g.filters,
            data,
        };
        match trace {
            Some(trace) => {
                trace.input = Some(x);
                trace.active = self.relu.then(|| clip_bits(&y.data, item_out, self.relu6));
            }
            None => recycle(x.data),
        }
        y
    }

    /// Per image: the non-zero output gradients by filter give `dWᵀ += Σ g·im2col row`, and by
    /// output position `dx row = Σ g·Wᵀ row`, added back onto the image by col2im. With short
    /// im2col rows ([`Conv::dense_dw`]) the kernel gradient is instead one GEMM per chunk of
    /// images: `dW = im2colᵀ · dz` over all their output positions.
    fn backward(
        &self,
        mut dy: Tensor,
        need_dx: bool,
        trace: &mut Trace,
        grads: &mut [Vec<f32>],
        prep: Option<&Prepared>,
    ) -> Option<Tensor> {
        let x = trace
            .input
            .take()
            .expect("conv backward after a training forward");
        let active = trace.active.take();
        let active = active.as_deref();
        let g = self.geom;
        let (taps, positions, filters) = (g.taps(), g.oh * g.ow, g.filters);
        let (item_in, item_out) = (x.item_len(), positions * filters);
        let owned;
        let wt = match (need_dx, prep.and_then(|p| p.transposed.as_deref())) {
            (false, _) => None,
            (true, Some(wt)) => Some(wt),
            (true, None) => {
                owned = transpose(&self.kernel.value, taps, filters);
                Some(owned.as_slice())
            }
        };
        let plan = g.plan();
        let dense_dw = Self::dense_dw(&g);
        let mut dx = reused(if need_dx { x.data.len() } else { 0 });
        let chunk_in = (CHUNK * item_in).max(1);
        let dx_chunks = chunks_or_empty(&mut dx, chunk_in, x.data.len().div_ceil(chunk_in));
        let single = x.data.len().div_ceil(chunk_in) == 1;
        let seed = seed(single, grads);
        let words = item_out.div_ceil(64);
        let parts: Vec<(Vec<f32>, Vec<f32>)> = x
            .data
            .par_chunks(chunk_in)
            .zip(dy.data.par_chunks_mut((CHUNK * item_out).max(1)))
            .zip(dx_chunks)
            .enumerate()
            .map(|(chunk, ((x, dy), dx))| {
                dx.fill(0.0);
                with_scratch(|s| {
                    let Scratch {
                        cols,
                        dcols,
                        keep,
                        rows,
                        columns,
                        packed,
                        cols_t,
                        dw,
                        ..
                    } = s;
                    let no_bias = vec![0.0; filters];
                    let (mut dwt, mut db) = part_grads(&seed, filters * taps, filters);
                    dcols.resize(positions * taps, 0.0);
                    let images = x.len() / item_in.max(1);
                    if dense_dw && images > 0 {
                        // dz: the output gradient where the ReLU passed it, and db its sum
                        // over the positions, image by image.
                        for (i, dy) in dy.chunks_exact_mut(item_out).enumerate() {
                            let bits = active.map(|a| &a[(chunk * CHUNK + i) * words..][..words]);
                            mask_and_sum_rows(dy, bits, filters, &mut db);
                        }
                        // dW = im2colᵀ · dz over every output position of the chunk.
                        let all = images * positions;
                        cols_t.resize(taps * all, 0.0);
                        for (i, img) in x.chunks_exact(item_in).enumerate() {
                            g.im2col_into(img, &mut cols_t[i * positions..], 1, all);
                        }
                        dw.resize(taps * filters, 0.0);
                        let a = Rows::matrix(cols_t, all);
                        if let Some(b) = Cols::row_major(dy, all, filters) {
                            gemm_cols(&a, &b, &no_bias, false, dw);
                        } else {
                            packed.refill(dy, all, filters);
                            gemm_bias(&a, packed, &no_bias, false, dw);
                        }
                        for (t, dw) in dw.chunks_exact(filters).enumerate() {
                            for (f, &v) in dw.iter().enumerate() {
                                dwt[f * taps + t] += v;
                            }
                        }
                        if wt.is_none() {
                            return (dwt, db);
                        }
                    }
                    for (i, (img, dy)) in x
                        .chunks_exact(item_in)
                        .zip(dy.chunks_exact(item_out))
                        .enumerate()
                    {
                        let image = chunk * CHUNK + i;
                        let active = active.map(|a| &a[image * words..][..words]);
                        keep_bits(dy, active, keep);
                        rows.fill_rows(dy, keep, positions, filters);
                        if rows.is_empty() {
                            continue;
                        }
                        if !dense_dw {
                            columns.fill_columns(rows, filters);
                            for (f, db) in db.iter_mut().enumerate() {
                                for &(_, v) in columns.of(f) {
                                    *db += v;
                                }
                            }
                            gather_rows(&g.rows(&plan, img, cols), columns, &mut dwt);
                        }
                        if let Some(wt) = &wt {
                            for (p, row) in dcols.chunks_exact_mut(taps).enumerate() {
                                if !rows.of(p).is_empty() {
                                    row.fill(0.0);
                                }
                            }
                            gather_rows(&Rows::matrix(wt, taps), rows, dcols);
                            g.col2im(dcols, &mut dx[i * item_in..][..item_in], |p| {
                                !rows.of(p).is_empty()
                            });
                        }
                    }
                    (dwt, db)
                })
            })
            .collect();
        add_parts(parts, single, grads);
        finish_backward(dy, x, dx, need_dx)
    }
}

impl Conv {
    /// This convolution (with its ReLU) and a 2×2 max pool of stride 2 after it (see
    /// [`Layer::pooled_conv`]), as one pass: the GEMM's rows are taken window by window and
    /// each register tile of a window's four positions is pooled at once ([`gemm_pool4`]), so
    /// the convolution's output is never written. The same values as [`Layer::forward`] of the
    /// two layers in turn. A training pass (with `trace`) keeps the input, which pooled outputs
    /// are positive, and where each pooled output's maximum is in its window, for
    /// [`Conv::backward_pooled`].
    pub fn forward_pooled(
        &self,
        x: Tensor,
        trace: Option<&mut Trace>,
        prep: Option<&Prepared>,
    ) -> Tensor {
        let g = self.geom;
        let (taps, filters) = (g.taps(), g.filters);
        let (ph, pw) = (g.oh / FUSED_POOL, g.ow / FUSED_POOL);
        let (item_in, item_out) = (x.item_len(), ph * pw * filters);
        let bias = &self.bias.value;
        let w = packed_kernel(prep, &self.kernel.value, taps, filters);
        let plan = g.plan().in_windows(g.ow, ph, pw);
        let mut data = reused(x.n * item_out);
        let mut arg = with_scratch(|s| std::mem::take(&mut s.argmax));
        arg.resize(data.len(), 0);
        data.par_chunks_mut((CHUNK * item_out).max(1))
            .zip(arg.par_chunks_mut((CHUNK * item_out).max(1)))
            .zip(x.data.par_chunks((CHUNK * item_in).max(1)))
            .for_each(|((y, arg), x)| {
                with_scratch(|s| {
                    let images = x.chunks_exact(item_in.max(1));
                    let outs = y.chunks_exact_mut(item_out.max(1));
                    for ((img, y), arg) in
                        images.zip(outs).zip(arg.chunks_exact_mut(item_out.max(1)))
                    {
                        let rows = g.rows(&plan, img, &mut s.cols);
                        gemm_pool4(&rows, &w, bias, self.relu, y, arg);
                    }
                });
            });
        let y = Tensor {
            n: x.n,
            h: ph,
            w: pw,
            c: filters,
            data,
        };
        match trace {
            Some(trace) => {
                let conv_out = Tensor {
                    n: x.n,
                    h: g.oh,
                    w: g.ow,
                    c: filters,
                    data: Vec::new(),
                };
                trace.argmax = Some((conv_out, arg));
                trace.active = self.relu.then(|| active_bits(&y.data, item_out));
                trace.input = Some(x);
            }
            None => {
                with_scratch(|s| s.argmax = arg);
                recycle(x.data);
            }
        }
        y
    }

    /// The backward pass of [`Conv::forward_pooled`] from the gradient `dy` of the pooled
    /// output: each pooled gradient goes to where its window's maximum was, if that value was
    /// positive (the ReLU). Without the input gradient (a first convolution), the gradients
    /// are summed straight from `dy` ([`pooled_grads`]: the same sums as [`Layer::backward`] of
    /// the two layers); with it, the convolution's output gradient is written out and goes
    /// through [`Layer::backward`] of the convolution.
    ///
    /// # Panics
    /// Without a preceding [`Conv::forward_pooled`] in training on `trace`, or if `grads` does
    /// not match the parameters.
    pub fn backward_pooled(
        &self,
        mut dy: Tensor,
        need_dx: bool,
        trace: &mut Trace,
        grads: &mut [Vec<f32>],
        prep: Option<&Prepared>,
    ) -> Option<Tensor> {
        let (conv_out, arg) = trace
            .argmax
            .take()
            .expect("pooled conv backward after a pooled training forward");
        let (g, pool) = (self.geom, FUSED_POOL);
        let (taps, filters) = (g.taps(), g.filters);
        let item_out = dy.item_len();
        if let Some(active) = trace.active.take() {
            let words = item_out.div_ceil(64);
            dy.data
                .par_chunks_mut(item_out.max(1))
                .zip(active.par_chunks(words.max(1)))
                .for_each(|(dy, bits)| mask_by_bits(dy, bits));
        }
        if !Self::dense_dw(&g) || need_dx {
            let conv_item = conv_out.item_len();
            let mut dz = Tensor {
                data: reused(conv_out.n * conv_item),
                ..conv_out
            };
            let (pw, ow) = (dy.w, g.ow);
            dz.data
                .par_chunks_mut(conv_item.max(1))
                .zip(dy.data.par_chunks(item_out.max(1)))
                .zip(arg.par_chunks(item_out.max(1)))
                .for_each(|((dz, dy), arg)| {
                    dz.fill(0.0);
                    let windows = dy.chunks_exact(filters).zip(arg.chunks_exact(filters));
                    for (w, (dy, arg)) in windows.enumerate() {
                        let (wy, wx) = (w / pw, w % pw);
                        for (f, (&v, &a)) in dy.iter().zip(arg).enumerate() {
                            let (r, c) = (a as usize / pool, a as usize % pool);
                            dz[((wy * pool + r) * ow + wx * pool + c) * filters + f] = v;
                        }
                    }
                });
            with_scratch(|s| s.argmax = arg);
            recycle(dy.data);
            return self.backward(dz, need_dx, trace, grads, prep);
        }
        let x = trace
            .input
            .take()
            .expect("pooled conv backward after a pooled training forward");
        let item_in = x.item_len();
        let chunk_in = (CHUNK * item_in).max(1);
        let single = x.data.len().div_ceil(chunk_in) == 1;
        let seed = seed(single, grads);
        let shape = PooledShape {
            ow: g.ow,
            filters,
            pool,
            ph: dy.h,
            pw: dy.w,
        };
        let parts: Vec<(Vec<f32>, Vec<f32>)> = x
            .data
            .par_chunks(chunk_in)
            .zip(dy.data.par_chunks((CHUNK * item_out).max(1)))
            .zip(arg.par_chunks((CHUNK * item_out).max(1)))
            .map(|((x, dy), arg)| {
                with_scratch(|s| {
                    let (mut dwt, mut db) = part_grads(&seed, filters * taps, filters);
                    // dW, (taps, filters), summed over the chunk's images from zero (as the
                    // GEMM of `Layer::backward`), then added to the kernel gradient.
                    s.dw.clear();
                    s.dw.resize(taps * filters, 0.0);
                    let images = x.chunks_exact(item_in.max(1));
                    for ((img, dy), arg) in images
                        .zip(dy.chunks_exact(item_out.max(1)))
                        .zip(arg.chunks_exact(item_out.max(1)))
                    {
                        g.im2col(img, &mut s.cols);
                        let pooled = Pooled { dy, arg, shape };
                        pooled_grads(&s.cols, pooled, &mut s.dw, &mut db);
                    }
                    for (t, dw) in s.dw.chunks_exact(filters).enumerate() {
                        for (f, &v) in dw.iter().enumerate() {
                            dwt[f * taps + t] += v;
                        }
                    }
                    (dwt, db)
                })
            })
            .collect();
        add_parts(parts, single, grads);
        with_scratch(|s| s.argmax = arg);
        recycle(dy.data);
        recycle(x.data);
        None
    }
}

/// Fully connected layer. Kernel `(inputs, units)` (Keras layout), row-major.
#[derive(Clone, Debug)]
pub struct Dense {
    /// Inputs.
    pub inputs: usize,
    /// ReLU after the bias.
    pub relu: bool,
    /// With `relu`, a ReLU6: the output also clipped at 6.
    pub relu6: bool,
    /// Kernel `(inputs, units)`.
    pub kernel: Param,
    /// Bias per unit.
    pub bias: Param,
}

impl Dense {
    /// Zero-initialised parameters.
    pub fn new(inputs: usize, units: usize, relu: bool) -> Self {
        Self {
            inputs,
            relu,
            relu6: false,
            kernel: Param::new(vec![0.0; inputs * units], true),
            bias: Param::new(vec![0.0; units], false),
        }
    }

    fn forward(&self, x: Tensor, trace: Option<&mut Trace>, prep: Option<&Prepared>) -> Tensor {
        let units = self.bias.value.len();
        let inputs = self.inputs;
        let w = packed_kernel(prep, &self.kernel.value, inputs, units);
        let bias = &self.bias.value;
        let mut data = reused(x.n * units);
        data.par_chunks_mut((DENSE_CHUNK * units).max(1))
            .zip(x.data.par_chunks((DENSE_CHUNK * inputs).max(1)))
            .for_each(|(y, x)| {
                gemm_bias(&Rows::matrix(x, inputs), &w, bias, self.relu, y);
                if self.relu6 {
                    activate(y, true, true);
                }
            });
        let y = Tensor {
            n: x.n,
            h: 1,
            w: 1,
            c: units,
            data,
        };
        match trace {
            Some(trace) => {
                trace.input = Some(x);
                trace.active = self
                    .relu
                    .then(|| clip_bits(&y.data, DENSE_CHUNK * units, self.relu6));
            }
            None => recycle(x.data),
        }
        y
    }

    /// The non-zero output gradients by unit give `dWᵀ += Σ g·x row`, and by image
    /// `dx row = Σ g·Wᵀ row`.
    fn backward(
        &self,
        dy: Tensor,
        need_dx: bool,
        trace: &mut Trace,
        grads: &mut [Vec<f32>],
        prep: Option<&Prepared>,
    ) -> Option<Tensor> {
        let x = trace
            .input
            .take()
            .expect("dense backward after a training forward");
        let active = trace.active.take();
        let active = active.as_deref();
        let (inputs, units) = (self.inputs, self.bias.value.len());
        let owned;
        let wt = match (need_dx, prep.and_then(|p| p.transposed.as_deref())) {
            (false, _) => None,
            (true, Some(wt)) => Some(wt),
            (true, None) => {
                owned = transpose(&self.kernel.value, inputs, units);
                Some(owned.as_slice())
            }
        };
        let mut dx = reused(if need_dx { x.data.len() } else { 0 });
        let chunk_in = (DENSE_CHUNK * inputs).max(1);
        let dx_chunks = chunks_or_empty(&mut dx, chunk_in, x.data.len().div_ceil(chunk_in));
        let single = x.data.len().div_ceil(chunk_in) == 1;
        let seed = seed(single, grads);
        let parts: Vec<(Vec<f32>, Vec<f32>)> = x
            .data
            .par_chunks(chunk_in)
            .zip(dy.data.par_chunks((DENSE_CHUNK * units).max(1)))
            .zip(dx_chunks)
            .enumerate()
            .map(|(chunk, ((x, dy), dx))| {
                dx.fill(0.0);
                with_scratch(|s| {
                    let (mut dwt, mut db) = part_grads(&seed, units * inputs, units);
                    let rows = x.len() / inputs.max(1);
                    let words = (DENSE_CHUNK * units).div_ceil(64);
                    let active = active.map(|a| &a[chunk * words..][..words]);
                    keep_bits(dy, active, &mut s.keep);
                    s.rows.fill_rows(dy, &s.keep, rows, units);
                    s.columns.fill_columns(&s.rows, units);
                    for (u, db) in db.iter_mut().enumerate() {
                        for &(_, v) in s.columns.of(u) {
                            *db += v;
                        }
                    }
                    gather_rows(&Rows::matrix(x, inputs), &s.columns, &mut dwt);
                    if let Some(wt) = &wt {
                        gather_rows(&Rows::matrix(wt, inputs), &s.rows, dx);
                    }
                    (dwt, db)
                })
            })
            .collect();
        add_parts(parts, single, grads);
        finish_backward(dy, x, dx, need_dx)
    }
}

/// Channels a max-pool window handles at once.
const POOL_LANES: usize = 8;

/// Max pooling over `pool × pool` windows with stride `pool`.
#[derive(Clone, Debug)]
pub struct Pool {
    /// Window side.
    pub pool: usize,
}

impl Pool {
    /// Each output takes the first largest value of its window (channel by channel, in
    /// vectors across the channels).
    fn forward(&self, x: Tensor, trace: Option<&mut Trace>) -> Tensor {
        let p = self.pool;
        let (oh, ow, c) = (x.h / p, x.w / p, x.c);
        let item_in = x.item_len();
        let item_out = oh * ow * c;
        let mut y = Tensor {
            n: x.n,
            h: oh,
            w: ow,
            c,
            data: reused(x.n * item_out),
        };
        let mut arg = with_scratch(|s| std::mem::take(&mut s.argmax));
        arg.resize(y.data.len(), 0);
        y.data
            .par_chunks_mut(item_out.max(1))
            .zip(arg.par_chunks_mut(item_out.max(1)))
            .zip(x.data.par_chunks(item_in.max(1)))
            .for_each(|((y, arg), img)| {
                pool_image(
                    img,
                    PoolShape {
                        iw: x.w,
                        c,
                        p,
                        oh,
                        ow,
                    },
                    y,
                    arg,
                );
            });
        match trace {
            Some(trace) => {
                let shape = Tensor {
                    data: Vec::new(),
                    ..x
                };
                trace.argmax = Some((shape, arg));
            }
            None => with_scratch(|s| s.argmax = arg),
        }
        recycle(x.data);
        y
    }

    fn backward(&self, dy: Tensor, trace: &mut Trace) -> Tensor {
        let (shape, arg) = trace
            .argmax
            .take()
            .expect("pool backward after a training forward");
        let item_in = shape.item_len();
        let item_out = dy.item_len();
        let pool = PoolShape {
            iw: shape.w,
            c: shape.c,
            p: self.pool,
            oh: shape.h / self.pool,
            ow: shape.w / self.pool,
        };
        let mut dx = Tensor {
            data: reused(shape.n * item_in),
            ..shape
        };
        dx.data
            .par_chunks_mut(item_in.max(1))
            .zip(dy.data.par_chunks(item_out.max(1)))
            .zip(arg.par_chunks(item_out.max(1)))
            .for_each(|((dx, dy), arg)| unpool_image(dy, arg, pool, dx));
        with_scratch(|s| s.argmax = arg);
        recycle(dy.data);
        dx
    }
}

simd_fn! {
/// Max-pools one image `img` into `y` over the windows of `shape`, `arg` getting the index in
/// `img` of each output's first largest value (channel by channel, in vectors across the
/// channels).
fn pool_image(img: &[f32], shape: PoolShape, y: &mut [f32], arg: &mut [u32]) {
    // The usual windows and channel counts with fixed sizes: their loops unroll and a pixel's
    // channels stay in registers.
    match (shape.p, shape.c) {
        (2, 16) => pool_pixels::<2, 16>(img, shape, y, arg),
        (2, 32) => pool_pixels::<2, 32>(img, shape, y, arg),
        (2, 64) => pool_pixels::<2, 64>(img, shape, y, arg),
        (2, _) => pool_windows::<2>(img, shape, y, arg),
        _ => pool_windows::<0>(img, shape, y, arg),
    }
}
}

/// One image of a max pool: input columns `iw`, channels `c`, window side `p`, output `oh × ow`.
#[derive(Clone, Copy, Debug)]
struct PoolShape {
    iw: usize,
    c: usize,
    p: usize,
    oh: usize,
    ow: usize,
}

/// [`pool_image`]'s work for `P × P` windows of `C` channels: the same comparisons in the same
/// order as [`pool_windows`], all channels of an output at once.
#[inline(always)]
fn pool_pixels<const P: usize, const C: usize>(
    img: &[f32],
    shape: PoolShape,
    y: &mut [f32],
    arg: &mut [u32],
) {
    let PoolShape { iw, oh, ow, .. } = shape;
    for oy in 0..oh {
        for ox in 0..ow {
            let mut b = [f32::NEG_INFINITY; C];
            let mut a = [0u32; C];
            for dy in 0..P {
                for dx in 0..P {
                    let i = ((oy * P + dy) * iw + ox * P + dx) * C;
                    let v: &[f32; C] = img[i..i + C].try_into().expect("a pixel");
                    for l in 0..C {
                        let keep = u32::from(v[l] > b[l]).wrapping_neg();
                        b[l] = f32::from_bits((v[l].to_bits() & keep) | (b[l].to_bits() & !keep));
                        a[l] = ((i + l) as u32 & keep) | (a[l] & !keep);
                    }
                }
            }
            let o = (oy * ow + ox) * C;
            y[o..o + C].copy_from_slice(&b);
            arg[o..o + C].copy_from_slice(&a);
        }
    }
}

/// [`pool_image`]'s work, for windows of `P × P` if `P > 0`, else of `p × p`.
#[inline(always)]
fn pool_windows<const P: usize>(img: &[f32], shape: PoolShape, y: &mut [f32], arg: &mut [u32]) {
    let PoolShape { iw, c, oh, ow, .. } = shape;
    let p = if P > 0 { P } else { shape.p };
    for oy in 0..oh {
        for ox in 0..ow {
            let o = (oy * ow + ox) * c;
            let (best, at) = (&mut y[o..o + c], &mut arg[o..o + c]);
            let lanes = c / POOL_LANES * POOL_LANES;
            for ch in (0..lanes).step_by(POOL_LANES) {
                // Eight channels at a time in registers.
                let mut b = [f32::NEG_INFINITY; POOL_LANES];
                let mut a = [0u32; POOL_LANES];
                for dy in 0..p {
                    for dx in 0..p {
                        let i = ((oy * p + dy) * iw + ox * p + dx) * c + ch;
                        let v: &[f32; POOL_LANES] =
                            img[i..i + POOL_LANES].try_into().expect("lanes");
                        for l in 0..POOL_LANES {
                            let keep = u32::from(v[l] > b[l]).wrapping_neg();
                            b[l] =
                                f32::from_bits((v[l].to_bits() & keep) | (b[l].to_bits() & !keep));
                            a[l] = ((i + l) as u32 & keep) | (a[l] & !keep);
                        }
                    }
                }
                best[ch..ch + POOL_LANES].copy_from_slice(&b);
                at[ch..ch + POOL_LANES].copy_from_slice(&a);
            }
            let (best, at) = (&mut best[lanes..], &mut at[lanes..]);
            best.fill(f32::NEG_INFINITY);
            at.fill(0);
            for dy in 0..p {
                for dx in 0..p {
                    let i = ((oy * p + dy) * iw + ox * p + dx) * c + lanes;
                    let window = img[i..i + c - lanes].iter().zip(i as u32..);
                    for ((b, a), (&v, index)) in best.iter_mut().zip(at.iter_mut()).zip(window) {
                        // `if v > b { b = v; a = index }` as bit selects, which
                        // the compiler vectorises (a branch per value it did not).
                        let keep = u32::from(v > *b).wrapping_neg();
                        *b = f32::from_bits((v.to_bits() & keep) | (b.to_bits() & !keep));
                        *a = (index & keep) | (*a & !keep);
                    }
                }
            }
        }
    }
}

simd_fn! {
/// The gradient `dx` of one image of a max pool of `shape` (every value written): each
/// output's gradient of `dy` at its window's argmax `arg` (an index into `dx`), zeros elsewhere
/// (every input value is in at most one window). (The fixed-size paths drop the gradient of a
/// window whose argmax is not in it, which only a window of −∞ or NaN values has.)
fn unpool_image(dy: &[f32], arg: &[u32], shape: PoolShape, dx: &mut [f32]) {
    match (shape.p, shape.c) {
        (2, 16) => unpool_pixels::<2, 16>(dy, arg, shape, dx),
        (2, 32) => unpool_pixels::<2, 32>(dy, arg, shape, dx),
        (2, 64) => unpool_pixels::<2, 64>(dy, arg, shape, dx),
        _ => {
            dx.fill(0.0);
            for (&g, &a) in dy.iter().zip(arg) {
                dx[a as usize] = g;
            }
        }
    }
}
}

/// [`unpool_image`] for `P × P` windows of `C` channels: one pass writing each window's values
/// (the gradient where the argmax is, else zero) and zeros in the rows and columns no window
/// covers, rather than zeroing everything and then scattering.
#[inline(always)]
fn unpool_pixels<const P: usize, const C: usize>(
    dy: &[f32],
    arg: &[u32],
    shape: PoolShape,
    dx: &mut [f32],
) {
    let PoolShape { iw, oh, ow, .. } = shape;
    let row = iw * C;
    for (iy, dx) in dx.chunks_exact_mut(row.max(1)).enumerate() {
        let oy = iy / P;
        if oy >= oh {
            dx.fill(0.0);
            continue;
        }
        for ox in 0..ow {
            let o = (oy * ow + ox) * C;
            let g: &[f32; C] = dy[o..o + C].try_into().expect("a pixel");
            let at: &[u32; C] = arg[o..o + C].try_into().expect("a pixel");
            for kx in 0..P {
                let i = (ox * P + kx) * C;
                let out: &mut [f32; C] = (&mut dx[i..i + C]).try_into().expect("a pixel");
                let first = (iy * row + i) as u32;
                for l in 0..C {
                    let hit = u32::from(at[l] == first + l as u32).wrapping_neg();
                    out[l] = f32::from_bits(g[l].to_bits() & hit);
                }
            }
        }
        dx[ow * P * C..].fill(0.0);
    }
}

/// Inverted dropout.
#[derive(Clone, Debug)]
pub struct Dropout {
    /// Fraction dropped.
    pub rate: f32,
    /// This layer's index, mixed into the mask seed.
    pub index: usize,
}

/// Values per parallel task of the dropout masks.
const MASK_BLOCK: usize = 1 << 14;

/// How a dropout mask with keep probability `keep` is drawn: `(b, t)`, `b` random bits per value
/// (1, 2, 4, 8 or 16: the fewest that give `keep` exactly as `t / 2^b`, else 16 with `keep`
/// rounded to a multiple of 2⁻¹⁶); a value is kept when its `b` bits, read as a number, are
/// below `t`. So the usual rates (0.5, 0.25, …) cost one or two bits per value.
pub fn mask_draw(keep: f32) -> (u32, u32) {
    for bits in [1u32, 2, 4, 8, 16] {
        let scaled = f64::from(keep) * f64::from(1u32 << bits);
        if scaled.fract() == 0.0 {
            return (bits, scaled as u32);
        }
    }
    (16, (f64::from(keep) * 65536.0).round() as u32)
}

simd_fn! {
/// Draws block `mask` of a dropout mask (values `at..at + mask.len()` of the whole mask, `bits`
/// bits per value, see [`mask_draw`]) and multiplies `x` by it.
fn drop_block(
    rng: &mut ChaCha8Rng,
    at: usize,
    bits: u32,
    threshold: u32,
    scale: f32,
    mask: &mut [f32],
    x: &mut [f32],
) {
    match bits {
        1 => draw_mask::<1>(rng, at, threshold, scale, mask),
        2 => draw_mask::<2>(rng, at, threshold, scale, mask),
        4 => draw_mask::<4>(rng, at, threshold, scale, mask),
        8 => draw_mask::<8>(rng, at, threshold, scale, mask),
        _ => draw_mask::<16>(rng, at, threshold, scale, mask),
    }
    scale_by(x, mask);
}
}

simd_fn! {
/// `x[i] *= m[i]`.
fn scale_by(x: &mut [f32], m: &[f32]) {
    for (v, m) in x.iter_mut().zip(m) {
        *v *= m;
    }
}
}

/// Fills `mask` (values `at..at + mask.len()` of the whole mask) with `scale` where the value's
/// `BITS` bits of `rng`'s stream are below `threshold`, else 0 (see [`mask_draw`]).
#[inline(always)]
fn draw_mask<const BITS: u32>(
    rng: &mut ChaCha8Rng,
    at: usize,
    threshold: u32,
    scale: f32,
    mask: &mut [f32],
) {
    let per = (32 / BITS) as usize;
    let field = |word: u32, i: usize| (word >> (i as u32 * BITS)) & (u32::MAX >> (32 - BITS));
    // `scale` or 0 as a bit select, which the compiler vectorises.
    let value = |f: u32| f32::from_bits(scale.to_bits() & u32::from(f < threshold).wrapping_neg());
    rng.set_word_pos((at / per) as u128);
    let (mut out, mut sub) = (0, at % per);
    let mut words = [0u32; 64];
    while out < mask.len() {
        let count = (sub + mask.len() - out).div_ceil(per).min(words.len());
        let words = &mut words[..count];
        rng.fill(words);
        for &word in words.iter() {
            let take = (per - sub).min(mask.len() - out);
            if take == per {
                for (i, m) in mask[out..out + per].iter_mut().enumerate() {
                    *m = value(field(word, i));
                }
            } else {
                for (i, m) in mask[out..out + take].iter_mut().enumerate() {
                    *m = value(field(word, sub + i));
                }
            }
            out += take;
            sub = 0;
        }
    }
}

impl Dropout {
    /// Value `i` of the batch's mask is decided by bits `i·b..(i + 1)·b` of the ChaCha8 stream
    /// `index` of `key` (word by word, low bits first), `b` as [`mask_draw`] picks for the keep
    /// probability; this part of the batch starts at image `first`. Blocks of the mask are
    /// drawn in parallel, each from its own position in the stream, so the mask does not depend
    /// on how the batch is split.
    fn forward(
        &self,
        mut x: Tensor,
        mode: Mode,
        first: usize,
        trace: Option<&mut Trace>,
    ) -> Tensor {
        let Mode::Train { key } = mode else {
            return x;
        };
        if self.rate == 0.0 {
            if let Some(trace) = trace {
                trace.mask = Some(vec![1.0; x.data.len()]);
            }
            return x;
        }
        let offset = first * x.item_len();
        let mut rng = ChaCha8Rng::seed_from_u64(key);
        rng.set_stream(self.index as u64);
        let keep = 1.0 - self.rate;
        let scale = self.scale();
        let (bits, threshold) = mask_draw(keep);
        let mut mask = reused(x.data.len());
        mask.par_chunks_mut(MASK_BLOCK)
            .zip(x.data.par_chunks_mut(MASK_BLOCK))
            .enumerate()
            .for_each(|(block, (mask, x))| {
                let mut rng = rng.clone();
                let at = offset + block * MASK_BLOCK;
                drop_block(&mut rng, at, bits, threshold, scale, mask, x);
            });
        match trace {
            Some(trace) => trace.mask = Some(mask),
            None => recycle(mask),
        }
        x
    }

    /// What a kept value is multiplied by: `1/(1 − rate)`, as Keras (TensorFlow's dropout).
    fn scale(&self) -> f32 {
        1.0 / (1.0 - self.rate)
    }

    /// Training forward pass with a given mask: images `first..first + x.n` of a batch whose
    /// values `keep` says to keep (NHWC, `true` keeps; scaled by `1/(1 − rate)` as a drawn mask
    /// is).
    ///
    /// # Panics
    /// If `keep` holds fewer than `(first + x.n)` images' values.
    pub fn forward_kept(
        &self,
        mut x: Tensor,
        keep: &[bool],
        first: usize,
        trace: &mut Trace,
    ) -> Tensor {
        let scale = self.scale();
        let keep = &keep[first * x.item_len()..][..x.data.len()];
        let mut mask = reused(x.data.len());
        for (m, &k) in mask.iter_mut().zip(keep) {
            *m = if k { scale } else { 0.0 };
        }
        scale_by(&mut x.data, &mask);
        trace.mask = Some(mask);
        x
    }

    fn backward(&self, mut dy: Tensor, trace: &mut Trace) -> Tensor {
        let mask = trace
            .mask
            .take()
            .expect("dropout backward after a training forward");
        scale_by(&mut dy.data, &mask);
        recycle(mask);
        dy
    }
}

/// Batch normalisation over the last axis.
#[derive(Clone, Debug)]
pub struct BatchNorm {
    /// Scale γ.
    pub gamma: Param,
    /// Offset β.
    pub beta: Param,
    /// Moving mean (not trained by gradient).
    pub moving_mean: Vec<f32>,
    /// Moving variance (not trained by gradient).
    pub moving_var: Vec<f32>,
    /// ReLU after the normalisation (`activation = "relu"` or `"relu6"` in the spec).
    pub relu: bool,
    /// With `relu`, a ReLU6: the output also clipped at 6.
    pub relu6: bool,
}

impl BatchNorm {
    /// γ = 1, β = 0, moving mean 0, moving variance 1 (Keras' initialisers); a ReLU after
    /// the normalisation if `relu`.
    pub fn new(channels: usize, relu: bool) -> Self {
        Self {
            gamma: Param::new(vec![1.0; channels], false),
            beta: Param::new(vec![0.0; channels], false),
            moving_mean: vec![0.0; channels],
            moving_var: vec![1.0; channels],
            relu,
            relu6: false,
        }
    }

    /// In training, normalises with the batch's statistics and keeps them in `trace` for
    /// [`BatchNorm::update_moving`].
    fn forward(&self, mut x: Tensor, mode: Mode, trace: Option<&mut Trace>) -> Tensor {
        let c = x.c;
        if let Mode::Eval = mode {
            for row in x.data.chunks_mut(c) {
                for (ch, v) in row.iter_mut().enumerate() {
                    let inv = 1.0 / (self.moving_var[ch] + BN_EPSILON).sqrt();
                    *v = (*v - self.moving_mean[ch]) * inv * self.gamma.value[ch]
                        + self.beta.value[ch];
                    if self.relu {
                        *v = v.max(0.0);
                    }
                    if self.relu6 {
                        *v = v.min(6.0);
                    }
                }
            }
            return x;
        }
        let m = (x.data.len() / c) as f64;
        let mut mean = vec![0.0f64; c];
        for row in x.data.chunks(c) {
            for (s, v) in mean.iter_mut().zip(row) {
                *s += f64::from(*v);
            }
        }
        mean.iter_mut().for_each(|s| *s /= m);
        let mut var = vec![0.0f64; c];
        for row in x.data.chunks(c) {
            for ((s, v), mu) in var.iter_mut().zip(row).zip(&mean) {
                let d = f64::from(*v) - mu;
                *s += d * d;
            }
        }
        var.iter_mut().for_each(|s| *s /= m);
        let inv_std: Vec<f32> = var
            .iter()
            .map(|v| (1.0 / (v + f64::from(BN_EPSILON)).sqrt()) as f32)
            .collect();
        let mut xhat = x.data.clone();
        for (row, out) in xhat.chunks_mut(c).zip(x.data.chunks_mut(c)) {
            for ch in 0..c {
                row[ch] = ((f64::from(row[ch]) - mean[ch]) as f32) * inv_std[ch];
                out[ch] = row[ch] * self.gamma.value[ch] + self.beta.value[ch];
                if self.relu {
                    out[ch] = out[ch].max(0.0);
                }
                if self.relu6 {
                    out[ch] = out[ch].min(6.0);
                }
            }
        }
        if let Some(trace) = trace {
            trace.norm = Some((xhat, inv_std));
            trace.stats = Some((mean, var));
        }
        x
    }

    /// Moves the moving statistics towards those of the batch of the last training forward
    /// pass (Keras' momentum).
    fn update_moving(&mut self, trace: &Trace) {
        let Some((mean, var)) = &trace.stats else {
            return;
        };
        for ch in 0..self.moving_mean.len() {
            self.moving_mean[ch] =
                self.moving_mean[ch] * BN_MOMENTUM + mean[ch] as f32 * (1.0 - BN_MOMENTUM);
            self.moving_var[ch] =
                self.moving_var[ch] * BN_MOMENTUM + var[ch] as f32 * (1.0 - BN_MOMENTUM);
        }
    }

    fn backward(&self, mut dy: Tensor, trace: &mut Trace, grads: &mut [Vec<f32>]) -> Tensor {
        let [gamma_grad, beta_grad] = grads else {
            panic!("a γ and a β gradient");
        };
        let (xhat, inv_std) = trace
            .norm
            .take()
            .expect("batch norm backward after a training forward");
        let c = dy.c;
        if self.relu {
            // The ReLU's gradient: zero where the normalised output was not positive (and
            // for a ReLU6, where it was 6 or more).
            let top = if self.relu6 { 6.0 } else { f32::INFINITY };
            for (d, xh) in dy.data.chunks_mut(c).zip(xhat.chunks(c)) {
                for ch in 0..c {
                    let out = xh[ch] * self.gamma.value[ch] + self.beta.value[ch];
                    if out <= 0.0 || out >= top {
                        d[ch] = 0.0;
                    }
                }
            }
        }
        let m = (dy.data.len() / c) as f32;
        let mut sum_dy = vec![0.0f32; c];
        let mut sum_dy_xhat = vec![0.0f32; c];
        for (d, xh) in dy.data.chunks(c).zip(xhat.chunks(c)) {
            for ch in 0..c {
                sum_dy[ch] += d[ch];
                sum_dy_xhat[ch] += d[ch] * xh[ch];
            }
        }
        add(beta_grad, &sum_dy);
        add(gamma_grad, &sum_dy_xhat);
        for (d, xh) in dy.data.chunks_mut(c).zip(xhat.chunks(c)) {
            for ch in 0..c {
                let k = self.gamma.value[ch] * inv_std[ch] / m;
                d[ch] = k * (m * d[ch] - sum_dy[ch] - xh[ch] * sum_dy_xhat[ch]);
            }
        }
        dy
    }
}

impl Layer {
    /// A zero-initialised layer for `spec` at position `index`, fed `input`.
    pub fn new(spec: &LayerSpec, index: usize, input: Shape) -> Self {
        let (ih, iw, ic) = input.hwc();
        match *spec {
            LayerSpec::Conv2d {
                filters,
                kernel,
                stride,
                padding,
                activation,
            } => {
                let (oh, pad_top) = conv_out(ih, kernel, stride, padding);
                let (ow, pad_left) = conv_out(iw, kernel, stride, padding);
                Self::Conv(Conv {
                    relu6: activation == Activation::Relu6,
                    ..Conv::new(
                        ConvGeom {
                            ih,
                            iw,
                            ic,
                            oh,
                            ow,
                            filters,
                            k: kernel,
                            stride,
                            pad_top,
                            pad_left,
                        },
                        activation.clamps(),
                    )
                })
            }
            LayerSpec::DepthwiseConv2d {
                kernel,
                stride,
                padding,
                multiplier,
                activation,
            } => Self::Depthwise(Depthwise::new(
                Slide::new(ih, iw, kernel, stride, padding),
                ic,
                multiplier,
                activation.clamps(),
                activation == Activation::Relu6,
            )),
            LayerSpec::AvgPool2d {
                pool,
                stride,
                padding,
            } => Self::AvgPool(AvgPool {
                slide: Slide::new(ih, iw, pool, stride, padding),
            }),
            LayerSpec::MaxPool2d { pool } => Self::Pool(Pool { pool }),
            LayerSpec::Flatten => Self::Flatten,
            LayerSpec::Dense { units, activation } => Self::Dense(Dense {
                relu6: activation == Activation::Relu6,
                ..Dense::new(input.len(), units, activation.clamps())
            }),
            LayerSpec::Dropout { rate } => Self::Dropout(Dropout { rate, index }),
            LayerSpec::BatchNorm { activation } => Self::BatchNorm(BatchNorm {
                relu6: activation == Activation::Relu6,
                ..BatchNorm::new(ic, activation.clamps())
            }),
            LayerSpec::Branch { from } => Self::Branch { from },
            LayerSpec::Add { other, activation } => Self::Add(Add {
                other,
                relu: activation.clamps(),
                relu6: activation == Activation::Relu6,
            }),
        }
    }

    /// Forward pass, keeping nothing (in [`Mode::Train`]: dropout on the batch of `x` as
    /// [`Layer::forward_train`] with `first = 0`, batch norm on the statistics of `x`).
    pub fn forward(&self, x: Tensor, mode: Mode) -> Tensor {
        self.run_forward(x, mode, 0, None, None)
    }

    /// This layer's weights rearranged for a training step's [`Layer::forward_train`] and
    /// [`Layer::backward`] (valid until the weights change).
    pub fn prepare(&self) -> Prepared {
        self.prepare_with(true)
    }

    /// [`Layer::prepare`] for eval-mode passes only ([`Layer::forward_prepared`]): the packed
    /// kernel, no transpose.
    pub fn prepare_eval(&self) -> Prepared {
        self.prepare_with(false)
    }

    /// The packed kernel, and with `transposed` its transpose too.
    fn prepare_with(&self, transposed: bool) -> Prepared {
        let (kernel, rows, outs) = match self {
            Self::Conv(l) => (&l.kernel.value, l.geom.taps(), l.geom.filters),
            Self::Dense(l) => (&l.kernel.value, l.inputs, l.bias.value.len()),
            _ => return Prepared::default(),
        };
        Prepared {
            packed: Some(Packed::new(kernel, rows, outs)),
            transposed: transposed.then(|| transpose(kernel, rows, outs)),
        }
    }

    /// Eval-mode forward pass with the weights `prep` made by [`Layer::prepare_eval`] (or
    /// [`Layer::prepare`]) of the current weights: the same result as [`Layer::forward`],
    /// without packing the kernel again.
    pub fn forward_prepared(&self, x: Tensor, prep: &Prepared) -> Tensor {
        self.run_forward(x, Mode::Eval, 0, None, Some(prep))
    }

    /// Training forward pass of images `first..first + x.n` of a batch (dropout masks are
    /// drawn for the whole batch, see [`Dropout`]), keeping in `trace` what
    /// [`Layer::backward`] needs.
    pub fn forward_train(
        &self,
        x: Tensor,
        key: u64,
        first: usize,
        trace: &mut Trace,
        prep: &Prepared,
    ) -> Tensor {
        self.run_forward(x, Mode::Train { key }, first, Some(trace), Some(prep))
    }

    fn run_forward(
        &self,
        x: Tensor,
        mode: Mode,
        first: usize,
        trace: Option<&mut Trace>,
        prep: Option<&Prepared>,
    ) -> Tensor {
        match self {
            Self::Conv(l) => l.forward(x, trace, prep),
            Self::Depthwise(l) => l.forward(x, trace),
            Self::Pool(l) => l.forward(x, trace),
            Self::AvgPool(l) => l.forward(x),
            Self::Flatten => Tensor {
                h: 1,
                w: 1,
                c: x.item_len(),
                ..x
            },
            Self::Dense(l) => l.forward(x, trace, prep),
            Self::Dropout(l) => l.forward(x, mode, first, trace),
            Self::BatchNorm(l) => l.forward(x, mode, trace),
            Self::Branch { .. } | Self::Add(_) => x,
        }
    }

    /// The convolution if this layer is a convolution with short im2col rows (fewer than 32
    /// taps: a first convolution) and `next` a 2×2 max pool: the two then run as one step
    /// ([`Conv::forward_pooled`], [`Conv::backward_pooled`]). Longer rows run apart: their GEMM
    /// is faster in tiles of six rows than of a window's four.
    pub fn pooled_conv(&self, next: Option<&Layer>) -> Option<&Conv> {
        match (self, next) {
            (Self::Conv(conv), Some(Self::Pool(pool)))
                if pool.pool == FUSED_POOL && Conv::dense_dw(&conv.geom) && !conv.relu6 =>
            {
                Some(conv)
            }
            _ => None,
        }
    }

    /// Whether a training forward pass needs the whole batch at once (batch norm's
    /// statistics): the other layers treat every image on its own.
    pub fn needs_whole_batch(&self) -> bool {
        matches!(self, Self::BatchNorm(_))
    }

    /// After a training forward pass over a whole batch: batch norm's moving statistics move
    /// towards those of the batch kept in `trace`; other layers have none.
    pub fn update_moving_statistics(&mut self, trace: &Trace) {
        if let Self::BatchNorm(l) = self {
            l.update_moving(trace);
        }
    }

    /// Backward pass of the training forward that filled `trace`: adds to `grads` (one per
    /// parameter, in the order of [`Layer::params`]) and returns the input gradient if
    /// `need_dx` (layers without parameters always return it). `prep`, if given, is
    /// [`Layer::prepare`] of the current weights.
    ///
    /// # Panics
    /// Without a preceding [`Layer::forward_train`] on `trace`, or if `grads` does not match
    /// the parameters.
    pub fn backward(
        &self,
        dy: Tensor,
        need_dx: bool,
        input: Shape,
        trace: &mut Trace,
        grads: &mut [Vec<f32>],
        prep: Option<&Prepared>,
    ) -> Option<Tensor> {
        match self {
            Self::Conv(l) => l.backward(dy, need_dx, trace, grads, prep),
            Self::Dense(l) => l.backward(dy, need_dx, trace, grads, prep),
            Self::Depthwise(l) => l.backward(dy, need_dx, trace, grads),
            Self::Pool(l) => Some(l.backward(dy, trace)),
            Self::AvgPool(l) => Some(l.backward(dy, input.hwc())),
            Self::Flatten => {
                let (h, w, c) = input.hwc();
                Some(Tensor { h, w, c, ..dy })
            }
            Self::Dropout(l) => Some(l.backward(dy, trace)),
            Self::BatchNorm(l) => Some(l.backward(dy, trace, grads)),
            Self::Branch { .. } | Self::Add(_) => Some(dy),
        }
    }

    /// Zeroed gradients for [`Layer::backward`]: one per parameter, in the order of
    /// [`Layer::params`], conv and dense kernels transposed (`(filters, k·k·ic)`,
    /// `(units, inputs)`; a depthwise kernel as it is).
    pub fn new_grads(&self) -> Vec<Vec<f32>> {
        self.params()
            .iter()
            .map(|p| vec![0.0; p.value.len()])
            .collect()
    }

    /// Sets the parameters' `grad` to `grads` as [`Layer::backward`] fills them (kernels
    /// transposed back to the parameters' layout).
    pub fn set_grads(&mut self, grads: &[Vec<f32>]) {
        let (kernel, bias) = match self {
            Self::Conv(l) => (&mut l.kernel, &mut l.bias),
            Self::Dense(l) => (&mut l.kernel, &mut l.bias),
            Self::BatchNorm(l) => {
                l.gamma.grad.copy_from_slice(&grads[0]);
                l.beta.grad.copy_from_slice(&grads[1]);
                return;
            }
            Self::Depthwise(l) => {
                l.kernel.grad.copy_from_slice(&grads[0]);
                l.bias.grad.copy_from_slice(&grads[1]);
                return;
            }
            _ => return,
        };
        let outs = bias.value.len();
        let rows = kernel.value.len().checked_div(outs).unwrap_or(0);
        let dwt = &grads[0];
        kernel
            .grad
            .par_chunks_mut((TILE * outs).max(1))
            .enumerate()
            .for_each(|(tile, grad)| {
                let r0 = tile * TILE;
                let tile_rows = grad.len() / outs;
                for o in 0..outs {
                    let src = &dwt[o * rows + r0..][..tile_rows];
                    for (grad, &d) in grad.chunks_exact_mut(outs).zip(src) {
                        grad[o] = d;
                    }
                }
            });
        bias.grad.copy_from_slice(&grads[1]);
    }

    /// The trainable tensors, in a fixed order.
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        match self {
            Self::Conv(l) => vec![&mut l.kernel, &mut l.bias],
            Self::Depthwise(l) => vec![&mut l.kernel, &mut l.bias],
            Self::Dense(l) => vec![&mut l.kernel, &mut l.bias],
            Self::BatchNorm(l) => vec![&mut l.gamma, &mut l.beta],
            _ => Vec::new(),
        }
    }

    /// The trainable tensors, in the order of [`Layer::params_mut`].
    pub fn params(&self) -> Vec<&Param> {
        match self {
            Self::Conv(l) => vec![&l.kernel, &l.bias],
            Self::Depthwise(l) => vec![&l.kernel, &l.bias],
            Self::Dense(l) => vec![&l.kernel, &l.bias],
            Self::BatchNorm(l) => vec![&l.gamma, &l.beta],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pooling_with_fixed_sizes_matches_the_general_windows_ties_included() {
        let mut rng = ChaCha8Rng::seed_from_u64(11);
        for c in [16, 32, 64] {
            let (ih, iw) = (7, 7);
            let (oh, ow) = (ih / 2, iw / 2);
            // Few distinct values, so windows often hold ties (the first largest wins).
            let img: Vec<f32> = (0..ih * iw * c)
                .map(|_| f32::from(rng.gen_range(-2i8..3)))
                .collect();
            let (mut y1, mut a1) = (vec![0.0; oh * ow * c], vec![0; oh * ow * c]);
            let (mut y2, mut a2) = (vec![1.0; oh * ow * c], vec![1; oh * ow * c]);
            let shape = PoolShape {
                iw,
                c,
                p: 2,
                oh,
                ow,
            };
            pool_image(&img, shape, &mut y1, &mut a1);
            pool_windows::<0>(&img, shape, &mut y2, &mut a2);
            assert_eq!((&y1, &a1), (&y2, &a2), "{c} channels");
            // Back: the fixed-size pass equals zeros plus a scatter, border included.
            let dy: Vec<f32> = (0..oh * ow * c).map(|_| rng.gen_range(-1.0..1.0)).collect();
            let mut dx = vec![f32::NAN; ih * iw * c];
            unpool_image(&dy, &a1, shape, &mut dx);
            let mut scattered = vec![0.0; ih * iw * c];
            for (&g, &a) in dy.iter().zip(&a1) {
                scattered[a as usize] = g;
            }
            assert_eq!(dx, scattered, "{c} channels");
            for (o, (&v, &a)) in y1.iter().zip(&a1).enumerate() {
                let (pos, ch) = (o / c, o % c);
                let (oy, ox) = (pos / ow, pos % ow);
                let window = [(0, 0), (0, 1), (1, 0), (1, 1)]
                    .map(|(dy, dx)| ((2 * oy + dy) * iw + 2 * ox + dx) * c + ch);
                let best = window.iter().map(|&i| img[i]).fold(f32::MIN, f32::max);
                let first = window.into_iter().find(|&i| img[i] == best).unwrap();
                assert_eq!((v, a as usize), (best, first), "{c} channels, output {o}");
            }
        }
    }
}

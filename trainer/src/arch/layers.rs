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

use super::kernels::{gather_rows, gemm_bias, nonzero_bits, positive_bits, Lists, Packed, Rows};
use super::spec::{conv_out, Activation, LayerSpec, Shape};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
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

/// One layer with its parameters, gradients and training cache.
#[derive(Clone, Debug)]
pub enum Layer {
    /// See [`Conv`].
    Conv(Conv),
    /// See [`Pool`].
    Pool(Pool),
    /// Flattening (a no-op on NHWC data).
    Flatten,
    /// See [`Dense`].
    Dense(Dense),
    /// See [`Dropout`].
    Dropout(Dropout),
    /// See [`BatchNorm`].
    BatchNorm(BatchNorm),
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
    fn new(value: Vec<f32>, kernel: bool) -> Self {
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
        let base = if plan.after_image { image.len() } else { 0 };
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

/// 2-D convolution. Kernel `[ky, kx, ci, f]` (Keras HWIO) viewed as a `(k·k·ic, filters)` matrix.
#[derive(Clone, Debug)]
pub struct Conv {
    /// Geometry.
    pub geom: ConvGeom,
    /// ReLU after the bias.
    pub relu: bool,
    /// Kernel, HWIO.
    pub kernel: Param,
    /// Bias per filter.
    pub bias: Param,
    input: Option<Tensor>,
    /// With ReLU: which outputs were positive (see [`positive_bits`]).
    active: Option<Vec<u64>>,
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
    /// One image's output gradient, zero where not visited (for [`Conv::dense_dw`]).
    dense: Vec<f32>,
    /// `dense` packed for the GEMM.
    packed: Packed,
    /// One image's im2col matrix transposed.
    cols_t: Vec<f32>,
    /// One image's kernel gradient, HWIO.
    dw: Vec<f32>,
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
const SPARE_COUNT: usize = 12;

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
fn finish_backward(
    wt: Option<Vec<f32>>,
    dy: Tensor,
    x: Tensor,
    dx: Vec<f32>,
    need_dx: bool,
) -> Option<Tensor> {
    if let Some(wt) = wt {
        recycle(wt);
    }
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

/// Sums per-chunk gradients `(dWᵀ, db)` in chunk order and adds them to the kernel (stored
/// `(row_len, outs)`) and bias gradients.
fn add_parts(
    parts: Vec<(Vec<f32>, Vec<f32>)>,
    row_len: usize,
    kernel: &mut Param,
    bias: &mut Param,
) {
    let mut parts = parts.into_iter();
    let Some((mut dwt, mut db)) = parts.next() else {
        return;
    };
    for (pw, pb) in parts {
        dwt.par_chunks_mut(1 << 14)
            .zip(pw.par_chunks(1 << 14))
            .for_each(|(s, p)| add(s, p));
        add(&mut db, &pb);
        recycle(pw);
    }
    let outs = db.len();
    kernel
        .grad
        .par_chunks_mut((TILE * outs).max(1))
        .enumerate()
        .for_each(|(tile, grad)| {
            let r0 = tile * TILE;
            let rows = grad.len() / outs;
            for o in 0..outs {
                let src = &dwt[o * row_len + r0..][..rows];
                for (grad, &d) in grad.chunks_exact_mut(outs).zip(src) {
                    grad[o] += d;
                }
            }
        });
    add(&mut bias.grad, &db);
    recycle(dwt);
}

fn add(sum: &mut [f32], part: &[f32]) {
    for (s, p) in sum.iter_mut().zip(part) {
        *s += p;
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
            input: None,
            active: None,
        }
    }

    /// Whether the kernel gradient is one GEMM over all output positions rather than a visit of
    /// the non-zero output gradients: when im2col rows are short (a first convolution on one
    /// channel), visiting an entry costs more than the few multiplications it saves.
    fn dense_dw(g: &ConvGeom) -> bool {
        g.taps() < MIN_RUN
    }

    /// Per image: im2col, then one GEMM with the kernel.
    fn forward(&mut self, x: Tensor, mode: Mode) -> Tensor {
        let g = self.geom;
        let (taps, positions) = (g.taps(), g.oh * g.ow);
        let (item_in, item_out) = (x.item_len(), positions * g.filters);
        let bias = &self.bias.value;
        let mut data = reused(x.n * item_out);
        let w = Packed::new(&self.kernel.value, taps, g.filters);
        let plan = g.plan();
        data.par_chunks_mut((CHUNK * item_out).max(1))
            .zip(x.data.par_chunks((CHUNK * item_in).max(1)))
            .for_each(|(y, x)| {
                with_scratch(|s| {
                    for (img, out) in x.chunks_exact(item_in).zip(y.chunks_exact_mut(item_out)) {
                        let rows = g.rows(&plan, img, &mut s.cols);
                        gemm_bias(&rows, &w, bias, self.relu, out);
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
        match mode {
            Mode::Train { .. } => {
                self.input = Some(x);
                self.active = self.relu.then(|| active_bits(&y.data, item_out));
            }
            Mode::Eval => recycle(x.data),
        }
        y
    }

    /// Per image: the non-zero output gradients by filter give `dWᵀ += Σ g·im2col row`, and by
    /// output position `dx row = Σ g·Wᵀ row`, added back onto the image by col2im.
    fn backward(&mut self, dy: Tensor, need_dx: bool) -> Option<Tensor> {
        let x = self
            .input
            .take()
            .expect("conv backward after a training forward");
        let active = self.active.take();
        let active = active.as_deref();
        let g = self.geom;
        let (taps, positions, filters) = (g.taps(), g.oh * g.ow, g.filters);
        let (item_in, item_out) = (x.item_len(), positions * filters);
        let wt = need_dx.then(|| transpose(&self.kernel.value, taps, filters));
        let plan = g.plan();
        let dense_dw = Self::dense_dw(&g);
        let mut dx = reused(if need_dx { x.data.len() } else { 0 });
        let chunk_in = (CHUNK * item_in).max(1);
        let dx_chunks = chunks_or_empty(&mut dx, chunk_in, x.data.len().div_ceil(chunk_in));
        let parts: Vec<(Vec<f32>, Vec<f32>)> = x
            .data
            .par_chunks(chunk_in)
            .zip(dy.data.par_chunks((CHUNK * item_out).max(1)))
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
                        dense,
                        packed,
                        cols_t,
                        dw,
                    } = s;
                    let no_bias = vec![0.0; filters];
                    let mut dwt = vec![0.0; filters * taps];
                    let mut db = vec![0.0; filters];
                    dcols.resize(positions * taps, 0.0);
                    for (i, (img, dy)) in x
                        .chunks_exact(item_in)
                        .zip(dy.chunks_exact(item_out))
                        .enumerate()
                    {
                        let words = item_out.div_ceil(64);
                        let image = chunk * CHUNK + i;
                        let active = active.map(|a| &a[image * words..][..words]);
                        keep_bits(dy, active, keep);
                        rows.fill_rows(dy, keep, positions, filters);
                        if rows.is_empty() {
                            continue;
                        }
                        if dense_dw {
                            // dW = im2colᵀ · dz over every output position.
                            dense.clear();
                            dense.resize(item_out, 0.0);
                            for (p, dense) in dense.chunks_exact_mut(filters).enumerate() {
                                for &(f, v) in rows.of(p) {
                                    dense[f as usize] = v;
                                    db[f as usize] += v;
                                }
                            }
                            packed.refill(dense, positions, filters);
                            g.rows(&plan, img, cols).transpose_into(cols_t);
                            dw.resize(taps * filters, 0.0);
                            gemm_bias(
                                &Rows::matrix(cols_t, positions),
                                packed,
                                &no_bias,
                                false,
                                dw,
                            );
                            for (t, dw) in dw.chunks_exact(filters).enumerate() {
                                for (f, &v) in dw.iter().enumerate() {
                                    dwt[f * taps + t] += v;
                                }
                            }
                        } else {
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
        add_parts(parts, taps, &mut self.kernel, &mut self.bias);
        finish_backward(wt, dy, x, dx, need_dx)
    }
}

/// Fully connected layer. Kernel `(inputs, units)` (Keras layout), row-major.
#[derive(Clone, Debug)]
pub struct Dense {
    /// Inputs.
    pub inputs: usize,
    /// ReLU after the bias.
    pub relu: bool,
    /// Kernel `(inputs, units)`.
    pub kernel: Param,
    /// Bias per unit.
    pub bias: Param,
    input: Option<Tensor>,
    /// With ReLU: which outputs were positive (see [`positive_bits`]).
    active: Option<Vec<u64>>,
}

impl Dense {
    /// Zero-initialised parameters.
    pub fn new(inputs: usize, units: usize, relu: bool) -> Self {
        Self {
            inputs,
            relu,
            kernel: Param::new(vec![0.0; inputs * units], true),
            bias: Param::new(vec![0.0; units], false),
            input: None,
            active: None,
        }
    }

    fn forward(&mut self, x: Tensor, mode: Mode) -> Tensor {
        let units = self.bias.value.len();
        let inputs = self.inputs;
        let w = Packed::new(&self.kernel.value, inputs, units);
        let bias = &self.bias.value;
        let mut data = reused(x.n * units);
        data.par_chunks_mut((DENSE_CHUNK * units).max(1))
            .zip(x.data.par_chunks((DENSE_CHUNK * inputs).max(1)))
            .for_each(|(y, x)| {
                gemm_bias(&Rows::matrix(x, inputs), &w, bias, self.relu, y);
            });
        let y = Tensor {
            n: x.n,
            h: 1,
            w: 1,
            c: units,
            data,
        };
        match mode {
            Mode::Train { .. } => {
                self.input = Some(x);
                self.active = self.relu.then(|| active_bits(&y.data, DENSE_CHUNK * units));
            }
            Mode::Eval => recycle(x.data),
        }
        y
    }

    /// The non-zero output gradients by unit give `dWᵀ += Σ g·x row`, and by image
    /// `dx row = Σ g·Wᵀ row`.
    fn backward(&mut self, dy: Tensor, need_dx: bool) -> Option<Tensor> {
        let x = self
            .input
            .take()
            .expect("dense backward after a training forward");
        let active = self.active.take();
        let active = active.as_deref();
        let (inputs, units) = (self.inputs, self.bias.value.len());
        let wt = need_dx.then(|| transpose(&self.kernel.value, inputs, units));
        let mut dx = reused(if need_dx { x.data.len() } else { 0 });
        let chunk_in = (DENSE_CHUNK * inputs).max(1);
        let dx_chunks = chunks_or_empty(&mut dx, chunk_in, x.data.len().div_ceil(chunk_in));
        let parts: Vec<(Vec<f32>, Vec<f32>)> = x
            .data
            .par_chunks(chunk_in)
            .zip(dy.data.par_chunks((DENSE_CHUNK * units).max(1)))
            .zip(dx_chunks)
            .enumerate()
            .map(|(chunk, ((x, dy), dx))| {
                dx.fill(0.0);
                with_scratch(|s| {
                    let mut dwt = reused(units * inputs);
                    dwt.fill(0.0);
                    let mut db = vec![0.0; units];
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
        add_parts(parts, inputs, &mut self.kernel, &mut self.bias);
        finish_backward(wt, dy, x, dx, need_dx)
    }
}

/// Max pooling over `pool × pool` windows with stride `pool`.
#[derive(Clone, Debug)]
pub struct Pool {
    /// Window side.
    pub pool: usize,
    argmax: Option<(Tensor, Vec<u32>)>,
    /// The argmax buffer of the last backward pass, reused by the next forward pass.
    spare: Vec<u32>,
}

impl Pool {
    /// Each output takes the first largest value of its window (channel by channel, in
    /// vectors across the channels).
    fn forward(&mut self, x: Tensor, mode: Mode) -> Tensor {
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
        let mut arg = std::mem::take(&mut self.spare);
        arg.resize(y.data.len(), 0);
        y.data
            .par_chunks_mut(item_out.max(1))
            .zip(arg.par_chunks_mut(item_out.max(1)))
            .zip(x.data.par_chunks(item_in.max(1)))
            .for_each(|((y, arg), img)| {
                for oy in 0..oh {
                    for ox in 0..ow {
                        let o = (oy * ow + ox) * c;
                        let (best, at) = (&mut y[o..o + c], &mut arg[o..o + c]);
                        best.fill(f32::NEG_INFINITY);
                        at.fill(0);
                        for dy in 0..p {
                            for dx in 0..p {
                                let i = ((oy * p + dy) * x.w + ox * p + dx) * c;
                                let window = img[i..i + c].iter().zip(i as u32..);
                                for ((b, a), (&v, index)) in
                                    best.iter_mut().zip(at.iter_mut()).zip(window)
                                {
                                    // `if v > b { b = v; a = index }` as bit selects, which
                                    // the compiler vectorises (a branch per value it did not).
                                    let keep = u32::from(v > *b).wrapping_neg();
                                    *b = f32::from_bits(
                                        (v.to_bits() & keep) | (b.to_bits() & !keep),
                                    );
                                    *a = (index & keep) | (*a & !keep);
                                }
                            }
                        }
                    }
                }
            });
        match mode {
            Mode::Train { .. } => {
                let shape = Tensor {
                    data: Vec::new(),
                    ..x
                };
                self.argmax = Some((shape, arg));
                recycle(x.data);
            }
            Mode::Eval => {
                self.spare = arg;
                recycle(x.data);
            }
        }
        y
    }

    fn backward(&mut self, dy: Tensor) -> Tensor {
        let (shape, arg) = self
            .argmax
            .take()
            .expect("pool backward after a training forward");
        let item_in = shape.item_len();
        let item_out = dy.item_len();
        let mut dx = Tensor {
            data: reused(shape.n * item_in),
            ..shape
        };
        dx.data
            .par_chunks_mut(item_in.max(1))
            .zip(dy.data.par_chunks(item_out.max(1)))
            .zip(arg.par_chunks(item_out.max(1)))
            .for_each(|((dx, dy), arg)| {
                // Every input value is in at most one window: write each window whole (the
                // gradient at its argmax, zeros elsewhere), then zero what no window covers.
                let (p, w, c) = (self.pool, shape.w, shape.c);
                let (oh, ow) = (shape.h / p, shape.w / p);
                for oy in 0..oh {
                    for ox in 0..ow {
                        let o = (oy * ow + ox) * c;
                        let (g, at) = (&dy[o..o + c], &arg[o..o + c]);
                        for wy in 0..p {
                            for wx in 0..p {
                                let i = ((oy * p + wy) * w + ox * p + wx) * c;
                                let index = i as u32..;
                                for ((d, (&g, &a)), index) in
                                    dx[i..i + c].iter_mut().zip(g.iter().zip(at)).zip(index)
                                {
                                    let hit = u32::from(a == index).wrapping_neg();
                                    *d = f32::from_bits(g.to_bits() & hit);
                                }
                            }
                        }
                    }
                    dx[(oy * p * w + ow * p) * c..((oy + 1) * p * w) * c]
                        .chunks_mut(w * c)
                        .for_each(|row| row[..(w - ow * p) * c].fill(0.0));
                }
                dx[oh * p * w * c..].fill(0.0);
            });
        self.spare = arg;
        recycle(dy.data);
        dx
    }
}

/// Inverted dropout.
#[derive(Clone, Debug)]
pub struct Dropout {
    /// Fraction dropped.
    pub rate: f32,
    /// This layer's index, mixed into the mask seed.
    pub index: usize,
    mask: Option<Vec<f32>>,
}

/// Values per parallel task of the dropout masks (whole ChaCha blocks of 16 words).
const MASK_BLOCK: usize = 1 << 14;

impl Dropout {
    /// Value `i` of the mask is decided by word `i` of the ChaCha8 stream `index` of `key` (as
    /// `rng.gen::<f32>() < 1 - rate`); blocks of the mask are drawn in parallel, each from its
    /// own position in the stream.
    fn forward(&mut self, mut x: Tensor, mode: Mode) -> Tensor {
        let Mode::Train { key } = mode else {
            return x;
        };
        if self.rate == 0.0 {
            self.mask = Some(vec![1.0; x.data.len()]);
            return x;
        }
        let mut rng = ChaCha8Rng::seed_from_u64(key);
        rng.set_stream(self.index as u64);
        let keep = 1.0 - self.rate;
        let scale = 1.0 / keep;
        let mut mask = reused(x.data.len());
        mask.par_chunks_mut(MASK_BLOCK)
            .zip(x.data.par_chunks_mut(MASK_BLOCK))
            .enumerate()
            .for_each(|(block, (mask, x))| {
                let mut rng = rng.clone();
                rng.set_word_pos((block * MASK_BLOCK) as u128);
                let mut words = [0u32; 256];
                for (mask, x) in mask.chunks_mut(256).zip(x.chunks_mut(256)) {
                    let words = &mut words[..mask.len()];
                    rng.fill(words);
                    for (m, &w) in mask.iter_mut().zip(words.iter()) {
                        // What `rng.gen::<f32>()` makes of the same word (rand's `Standard`);
                        // `scale` or 0 as a bit select, which the compiler vectorises.
                        let u = ((w >> 8) as i32) as f32 * (1.0 / (1u32 << 24) as f32);
                        let kept = u32::from(u < keep).wrapping_neg();
                        *m = f32::from_bits(scale.to_bits() & kept);
                    }
                    for (v, m) in x.iter_mut().zip(mask.iter()) {
                        *v *= m;
                    }
                }
            });
        self.mask = Some(mask);
        x
    }

    fn backward(&mut self, mut dy: Tensor) -> Tensor {
        let mask = self
            .mask
            .take()
            .expect("dropout backward after a training forward");
        for (d, m) in dy.data.iter_mut().zip(&mask) {
            *d *= m;
        }
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
    /// ReLU after the normalisation (`activation = "relu"` in the spec).
    pub relu: bool,
    cache: Option<(Vec<f32>, Vec<f32>)>,
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
            cache: None,
        }
    }

    fn forward(&mut self, mut x: Tensor, mode: Mode) -> Tensor {
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
        for ch in 0..c {
            self.moving_mean[ch] =
                self.moving_mean[ch] * BN_MOMENTUM + mean[ch] as f32 * (1.0 - BN_MOMENTUM);
            self.moving_var[ch] =
                self.moving_var[ch] * BN_MOMENTUM + var[ch] as f32 * (1.0 - BN_MOMENTUM);
        }
        let mut xhat = x.data.clone();
        for (row, out) in xhat.chunks_mut(c).zip(x.data.chunks_mut(c)) {
            for ch in 0..c {
                row[ch] = ((f64::from(row[ch]) - mean[ch]) as f32) * inv_std[ch];
                out[ch] = row[ch] * self.gamma.value[ch] + self.beta.value[ch];
                if self.relu {
                    out[ch] = out[ch].max(0.0);
                }
            }
        }
        self.cache = Some((xhat, inv_std));
        x
    }

    fn backward(&mut self, mut dy: Tensor) -> Tensor {
        let (xhat, inv_std) = self
            .cache
            .take()
            .expect("batch norm backward after a training forward");
        let c = dy.c;
        if self.relu {
            // The ReLU's gradient: zero where the normalised output was not positive.
            for (d, xh) in dy.data.chunks_mut(c).zip(xhat.chunks(c)) {
                for ch in 0..c {
                    if xh[ch] * self.gamma.value[ch] + self.beta.value[ch] <= 0.0 {
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
        add(&mut self.beta.grad, &sum_dy);
        add(&mut self.gamma.grad, &sum_dy_xhat);
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
                Self::Conv(Conv::new(
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
                    activation == Activation::Relu,
                ))
            }
            LayerSpec::MaxPool2d { pool } => Self::Pool(Pool {
                pool,
                argmax: None,
                spare: Vec::new(),
            }),
            LayerSpec::Flatten => Self::Flatten,
            LayerSpec::Dense { units, activation } => Self::Dense(Dense::new(
                input.len(),
                units,
                activation == Activation::Relu,
            )),
            LayerSpec::Dropout { rate } => Self::Dropout(Dropout {
                rate,
                index,
                mask: None,
            }),
            LayerSpec::BatchNorm { activation } => {
                Self::BatchNorm(BatchNorm::new(ic, activation == Activation::Relu))
            }
        }
    }

    /// Forward pass; in [`Mode::Train`] keeps what [`Layer::backward`] needs.
    pub fn forward(&mut self, x: Tensor, mode: Mode) -> Tensor {
        match self {
            Self::Conv(l) => l.forward(x, mode),
            Self::Pool(l) => l.forward(x, mode),
            Self::Flatten => Tensor {
                h: 1,
                w: 1,
                c: x.item_len(),
                ..x
            },
            Self::Dense(l) => l.forward(x, mode),
            Self::Dropout(l) => l.forward(x, mode),
            Self::BatchNorm(l) => l.forward(x, mode),
        }
    }

    /// Backward pass of the last training forward: adds to the parameter gradients and
    /// returns the input gradient if `need_dx` (layers without parameters always return it).
    ///
    /// # Panics
    /// Without a preceding [`Mode::Train`] forward.
    pub fn backward(&mut self, dy: Tensor, need_dx: bool, input: Shape) -> Option<Tensor> {
        match self {
            Self::Conv(l) => l.backward(dy, need_dx),
            Self::Dense(l) => l.backward(dy, need_dx),
            Self::Pool(l) => Some(l.backward(dy)),
            Self::Flatten => {
                let (h, w, c) = input.hwc();
                Some(Tensor { h, w, c, ..dy })
            }
            Self::Dropout(l) => Some(l.backward(dy)),
            Self::BatchNorm(l) => Some(l.backward(dy)),
        }
    }

    /// The trainable tensors, in a fixed order.
    pub fn params_mut(&mut self) -> Vec<&mut Param> {
        match self {
            Self::Conv(l) => vec![&mut l.kernel, &mut l.bias],
            Self::Dense(l) => vec![&mut l.kernel, &mut l.bias],
            Self::BatchNorm(l) => vec![&mut l.gamma, &mut l.beta],
            _ => Vec::new(),
        }
    }

    /// The trainable tensors, in the order of [`Layer::params_mut`].
    pub fn params(&self) -> Vec<&Param> {
        match self {
            Self::Conv(l) => vec![&l.kernel, &l.bias],
            Self::Dense(l) => vec![&l.kernel, &l.bias],
            Self::BatchNorm(l) => vec![&l.gamma, &l.beta],
            _ => Vec::new(),
        }
    }
}

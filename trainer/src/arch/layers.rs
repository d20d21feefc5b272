//! Generic float layers over NHWC `f32` batches, each with a forward pass (eval or training)
//! and a backward pass that accumulates its parameter gradients.
//!
//! Conv and dense layers split the batch into fixed chunks of [`CHUNK`] images that run in
//! parallel on the current rayon pool; partial gradients are summed in chunk order, so the result
//! does not depend on the thread count. Convolution is im2col + GEMM (ndarray `dot`).

use super::spec::{conv_out, Activation, LayerSpec, Shape};
use ndarray::{ArrayView2, Axis};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// Images per parallel task of a convolution.
pub const CHUNK: usize = 16;
/// Images per parallel task of a dense layer: more than a conv's, so that the packing of the
/// (large) kernel is shared by more rows.
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

    /// Writes the im2col matrix of one image: row `oy·ow + ox`, column `(ky·k + kx)·ic + ci`.
    fn im2col(&self, image: &[f32], out: &mut [f32]) {
        let taps = self.taps();
        for oy in 0..self.oh {
            for ox in 0..self.ow {
                let row = &mut out[(oy * self.ow + ox) * taps..][..taps];
                for ky in 0..self.k {
                    let iy = (oy * self.stride + ky).wrapping_sub(self.pad_top);
                    for kx in 0..self.k {
                        let ix = (ox * self.stride + kx).wrapping_sub(self.pad_left);
                        let dst = &mut row[(ky * self.k + kx) * self.ic..][..self.ic];
                        if iy < self.ih && ix < self.iw {
                            dst.copy_from_slice(&image[(iy * self.iw + ix) * self.ic..][..self.ic]);
                        } else {
                            dst.fill(0.0);
                        }
                    }
                }
            }
        }
    }

    /// Adds an im2col-shaped gradient back onto one image's gradient.
    fn col2im(&self, cols: &[f32], image: &mut [f32]) {
        let taps = self.taps();
        for oy in 0..self.oh {
            for ox in 0..self.ow {
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
    output: Option<Tensor>,
}

/// A GEMM-based affine map shared by conv (rows = output positions) and dense (rows = images):
/// `y = x·W + b`, then ReLU if asked. `rows_per_item` rows of `x` make one batch item.
#[allow(clippy::too_many_arguments)]
fn affine_forward(
    chunk: usize,
    x_items: &[f32],
    n: usize,
    row_len: usize,
    rows_per_item: usize,
    weights: &[f32],
    bias: &[f32],
    relu: bool,
    im2col: Option<&ConvGeom>,
    item_in: usize,
) -> Vec<f32> {
    let outs = bias.len();
    let w = ArrayView2::from_shape((row_len, outs), weights).expect("weight shape");
    let mut y = vec![0.0f32; n * rows_per_item * outs];
    y.par_chunks_mut(chunk * rows_per_item * outs)
        .zip(x_items.par_chunks(chunk * item_in))
        .for_each(|(y, x)| {
            let items = x.len() / item_in;
            let rows = items * rows_per_item;
            let mut cols = Vec::new();
            let xs: &[f32] = match im2col {
                Some(g) => {
                    cols = take_buffer(rows * row_len);
                    for (img, out) in x
                        .chunks(item_in)
                        .zip(cols.chunks_mut(rows_per_item * row_len))
                    {
                        g.im2col(img, out);
                    }
                    &cols
                }
                None => x,
            };
            let xm = ArrayView2::from_shape((rows, row_len), xs).expect("input shape");
            let product = xm.dot(&w);
            give_buffer(cols);
            for (dst, src) in y
                .chunks_mut(outs)
                .zip(product.as_slice().expect("standard layout").chunks(outs))
            {
                for ((d, s), b) in dst.iter_mut().zip(src).zip(bias) {
                    let v = s + b;
                    *d = if relu { v.max(0.0) } else { v };
                }
            }
        });
    y
}

/// Backward of [`affine_forward`]: `dz` is the gradient after the activation mask was applied.
/// Returns (dW, db, dx if asked).
#[allow(clippy::too_many_arguments)]
fn affine_backward(
    chunk: usize,
    x_items: &[f32],
    dz: &[f32],
    row_len: usize,
    rows_per_item: usize,
    weights: &[f32],
    outs: usize,
    im2col: Option<&ConvGeom>,
    item_in: usize,
    need_dx: bool,
) -> (Vec<f32>, Vec<f32>, Option<Vec<f32>>) {
    let w = ArrayView2::from_shape((row_len, outs), weights).expect("weight shape");
    let parts: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = x_items
        .par_chunks(chunk * item_in)
        .zip(dz.par_chunks(chunk * rows_per_item * outs))
        .map(|(x, dz)| {
            let items = x.len() / item_in;
            let rows = items * rows_per_item;
            let mut cols = Vec::new();
            let xs: &[f32] = match im2col {
                Some(g) => {
                    cols = take_buffer(rows * row_len);
                    for (img, out) in x
                        .chunks(item_in)
                        .zip(cols.chunks_mut(rows_per_item * row_len))
                    {
                        g.im2col(img, out);
                    }
                    &cols
                }
                None => x,
            };
            let xm = ArrayView2::from_shape((rows, row_len), xs).expect("input shape");
            let dzm = ArrayView2::from_shape((rows, outs), dz).expect("gradient shape");
            let dw = xm.t().dot(&dzm).into_raw_vec_and_offset().0;
            let db = dzm.sum_axis(Axis(0)).into_raw_vec_and_offset().0;
            give_buffer(cols);
            let dx = if need_dx {
                let dcols = dzm.dot(&w.t());
                let dcols = dcols.as_standard_layout();
                let dcols = dcols.as_slice().expect("standard layout");
                match im2col {
                    Some(g) => {
                        let mut dx = vec![0.0; x.len()];
                        for (cols, img) in dcols
                            .chunks(rows_per_item * row_len)
                            .zip(dx.chunks_mut(item_in))
                        {
                            g.col2im(cols, img);
                        }
                        dx
                    }
                    None => dcols.to_vec(),
                }
            } else {
                Vec::new()
            };
            (dw, db, dx)
        })
        .collect();
    let mut dw = vec![0.0; row_len * outs];
    let mut db = vec![0.0; outs];
    let mut dx = Vec::with_capacity(if need_dx { x_items.len() } else { 0 });
    for (pw, pb, px) in parts {
        add(&mut dw, &pw);
        add(&mut db, &pb);
        dx.extend_from_slice(&px);
    }
    (dw, db, need_dx.then_some(dx))
}

thread_local! {
    /// Each worker's im2col matrix, kept between calls: allocating 10 MB per chunk made the
    /// kernel clear fresh pages every time.
    static BUFFER: std::cell::RefCell<Vec<f32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// This thread's spare buffer resized to `len` (contents unspecified: im2col overwrites all).
fn take_buffer(len: usize) -> Vec<f32> {
    let mut buf = BUFFER.with(|b| std::mem::take(&mut *b.borrow_mut()));
    buf.resize(len, 0.0);
    buf
}

/// Keeps `buf` for this thread's next [`take_buffer`].
fn give_buffer(buf: Vec<f32>) {
    if buf.capacity() > 0 {
        BUFFER.with(|b| *b.borrow_mut() = buf);
    }
}

fn add(sum: &mut [f32], part: &[f32]) {
    for (s, p) in sum.iter_mut().zip(part) {
        *s += p;
    }
}

/// Zeroes `dy` where the (ReLU) output was not positive.
fn relu_mask(dy: &mut [f32], out: &[f32]) {
    for (d, o) in dy.iter_mut().zip(out) {
        if *o <= 0.0 {
            *d = 0.0;
        }
    }
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
            output: None,
        }
    }

    fn forward(&mut self, x: Tensor, mode: Mode) -> Tensor {
        let g = self.geom;
        let data = affine_forward(
            CHUNK,
            &x.data,
            x.n,
            g.taps(),
            g.oh * g.ow,
            &self.kernel.value,
            &self.bias.value,
            self.relu,
            Some(&g),
            x.item_len(),
        );
        let y = Tensor {
            n: x.n,
            h: g.oh,
            w: g.ow,
            c: g.filters,
            data,
        };
        if let Mode::Train { .. } = mode {
            self.input = Some(x);
            if self.relu {
                self.output = Some(y.clone());
            }
        }
        y
    }

    fn backward(&mut self, mut dy: Tensor, need_dx: bool) -> Option<Tensor> {
        let x = self
            .input
            .take()
            .expect("conv backward after a training forward");
        if let Some(out) = self.output.take() {
            relu_mask(&mut dy.data, &out.data);
        }
        let g = self.geom;
        let (dw, db, dx) = affine_backward(
            CHUNK,
            &x.data,
            &dy.data,
            g.taps(),
            g.oh * g.ow,
            &self.kernel.value,
            g.filters,
            Some(&g),
            x.item_len(),
            need_dx,
        );
        add(&mut self.kernel.grad, &dw);
        add(&mut self.bias.grad, &db);
        dx.map(|data| Tensor { data, ..x })
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
    output: Option<Tensor>,
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
            output: None,
        }
    }

    fn forward(&mut self, x: Tensor, mode: Mode) -> Tensor {
        let units = self.bias.value.len();
        let data = affine_forward(
            DENSE_CHUNK,
            &x.data,
            x.n,
            self.inputs,
            1,
            &self.kernel.value,
            &self.bias.value,
            self.relu,
            None,
            self.inputs,
        );
        let y = Tensor {
            n: x.n,
            h: 1,
            w: 1,
            c: units,
            data,
        };
        if let Mode::Train { .. } = mode {
            self.input = Some(x);
            if self.relu {
                self.output = Some(y.clone());
            }
        }
        y
    }

    fn backward(&mut self, mut dy: Tensor, need_dx: bool) -> Option<Tensor> {
        let x = self
            .input
            .take()
            .expect("dense backward after a training forward");
        if let Some(out) = self.output.take() {
            relu_mask(&mut dy.data, &out.data);
        }
        let (dw, db, dx) = affine_backward(
            DENSE_CHUNK,
            &x.data,
            &dy.data,
            self.inputs,
            1,
            &self.kernel.value,
            self.bias.value.len(),
            None,
            self.inputs,
            need_dx,
        );
        add(&mut self.kernel.grad, &dw);
        add(&mut self.bias.grad, &db);
        dx.map(|data| Tensor { data, ..x })
    }
}

/// Max pooling over `pool × pool` windows with stride `pool`.
#[derive(Clone, Debug)]
pub struct Pool {
    /// Window side.
    pub pool: usize,
    argmax: Option<(Tensor, Vec<u32>)>,
}

impl Pool {
    fn forward(&mut self, x: Tensor, mode: Mode) -> Tensor {
        let p = self.pool;
        let (oh, ow, c) = (x.h / p, x.w / p, x.c);
        let mut y = Tensor::zeros(x.n, oh, ow, c);
        let mut arg = vec![0u32; y.data.len()];
        let item_in = x.item_len();
        let item_out = oh * ow * c;
        y.data
            .par_chunks_mut(item_out.max(1))
            .zip(arg.par_chunks_mut(item_out.max(1)))
            .zip(x.data.par_chunks(item_in.max(1)))
            .for_each(|((y, arg), img)| {
                for oy in 0..oh {
                    for ox in 0..ow {
                        for ch in 0..c {
                            let mut best = f32::NEG_INFINITY;
                            let mut at = 0;
                            for dy in 0..p {
                                for dx in 0..p {
                                    let i = ((oy * p + dy) * x.w + ox * p + dx) * c + ch;
                                    if img[i] > best {
                                        best = img[i];
                                        at = i;
                                    }
                                }
                            }
                            let o = (oy * ow + ox) * c + ch;
                            y[o] = best;
                            arg[o] = at as u32;
                        }
                    }
                }
            });
        if let Mode::Train { .. } = mode {
            let shape = Tensor {
                data: Vec::new(),
                ..x
            };
            self.argmax = Some((shape, arg));
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
        let mut dx = Tensor::zeros(shape.n, shape.h, shape.w, shape.c);
        dx.data
            .par_chunks_mut(item_in.max(1))
            .zip(dy.data.par_chunks(item_out.max(1)))
            .zip(arg.par_chunks(item_out.max(1)))
            .for_each(|((dx, dy), arg)| {
                for (g, &a) in dy.iter().zip(arg) {
                    dx[a as usize] += g;
                }
            });
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

impl Dropout {
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
        let mask: Vec<f32> = (0..x.data.len())
            .map(|_| if rng.gen::<f32>() < keep { scale } else { 0.0 })
            .collect();
        for (v, m) in x.data.iter_mut().zip(&mask) {
            *v *= m;
        }
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
    cache: Option<(Vec<f32>, Vec<f32>)>,
}

impl BatchNorm {
    /// γ = 1, β = 0, moving mean 0, moving variance 1 (Keras' initialisers).
    pub fn new(channels: usize) -> Self {
        Self {
            gamma: Param::new(vec![1.0; channels], false),
            beta: Param::new(vec![0.0; channels], false),
            moving_mean: vec![0.0; channels],
            moving_var: vec![1.0; channels],
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
            LayerSpec::MaxPool2d { pool } => Self::Pool(Pool { pool, argmax: None }),
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
            LayerSpec::BatchNorm => Self::BatchNorm(BatchNorm::new(ic)),
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

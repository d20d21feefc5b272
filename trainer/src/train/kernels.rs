//! Fused, allocation-free forward and backward passes over a chunk of at most [`CHUNK`] images.
//!
//! The conv layer is an im2col GEMM whose patch rows are ordered `(image, sub, py, px)`, where
//! `sub = dy·2 + dx` is the position inside the 2×2 pool window. Each image's conv output is then
//! four contiguous `[169, 32]` blocks, one per window position, so ReLU + max-pool is an
//! elementwise max of four blocks, and the bias is added once after the max
//! (`max(z + b) = max(z) + b`). The winning block index is kept for the backward pass, which
//! only needs the kernel and bias gradients: the conv is the first layer.
//!
//! All matrix products go through ndarray's `general_mat_mul` (matrixmultiply, which picks
//! AVX2/FMA at run time). Every reduction runs in a fixed order, so results do not depend on
//! which thread ran a chunk.

use std::ops::Range;

use ndarray::linalg::general_mat_mul;
use ndarray::{ArrayView2, ArrayViewMut2};
use rand::RngCore;

use crate::data::Dataset;
use crate::network::{
    pixel, CLASSES, CONV_POSITIONS, FILTERS, FLAT, INPUT_SIDE, KERNEL, PIXELS, POOL_POSITIONS,
    POOL_SIDE, TAPS,
};

/// Images per chunk: the unit of parallel work and of scratch memory (≈ 1 MB per chunk).
pub(super) const CHUNK: usize = 8;

/// Range of the conv kernel `[FILTERS, TAPS]` in the flat parameter vector.
pub(super) const CONV_W: Range<usize> = 0..FILTERS * TAPS;
/// Range of the conv bias `[FILTERS]`.
pub(super) const CONV_B: Range<usize> = CONV_W.end..CONV_W.end + FILTERS;
/// Range of the dense kernel `[CLASSES, FLAT]`.
pub(super) const DENSE_W: Range<usize> = CONV_B.end..CONV_B.end + CLASSES * FLAT;
/// Range of the dense bias `[CLASSES]`.
pub(super) const DENSE_B: Range<usize> = DENSE_W.end..DENSE_W.end + CLASSES;
/// Length of the flat parameter (and gradient) vector.
pub(super) const PARAMS: usize = DENSE_B.end;

const _: () = assert!(PARAMS == 54_410);

/// Dropout rates of the two dropout layers (after the pool, after the flatten).
const DROPOUT_RATES: [f32; 2] = [0.25, 0.5];
/// Inverted-dropout scale of a feature that survives both dropout layers.
const KEEP_SCALE: f32 = (1.0 / (1.0 - DROPOUT_RATES[0])) * (1.0 / (1.0 - DROPOUT_RATES[1]));

/// The model's weights, viewed in the flat parameter vector.
pub(super) struct Weights<'a> {
    conv: ArrayView2<'a, f32>,
    conv_bias: &'a [f32],
    dense: ArrayView2<'a, f32>,
    dense_bias: &'a [f32],
}

impl<'a> Weights<'a> {
    /// Views `params` (laid out as [`CONV_W`], [`CONV_B`], [`DENSE_W`], [`DENSE_B`]).
    pub(super) fn new(params: &'a [f32]) -> Self {
        Self {
            conv: ArrayView2::from_shape((FILTERS, TAPS), &params[CONV_W])
                .expect("conv kernel range"),
            conv_bias: &params[CONV_B],
            dense: ArrayView2::from_shape((CLASSES, FLAT), &params[DENSE_W])
                .expect("dense kernel range"),
            dense_bias: &params[DENSE_B],
        }
    }
}

/// Loss and accuracy counts of a chunk.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(super) struct Tally {
    /// Sum of the per-image cross-entropies.
    pub(super) loss: f64,
    /// Images whose arg-max logit is the label.
    pub(super) correct: usize,
}

impl std::ops::AddAssign for Tally {
    fn add_assign(&mut self, other: Self) {
        self.loss += other.loss;
        self.correct += other.correct;
    }
}

/// Per-thread buffers for one chunk; allocated once per fit (or evaluation).
pub(super) struct Scratch {
    /// im2col patches, `[n·676, 9]`, rows ordered `(image, sub, py, px)`.
    patches: Vec<f32>,
    /// Conv output without bias `[n·676, 32]`; reused for the conv output gradient.
    conv: Vec<f32>,
    /// `relu(max_pool(conv) + bias)`, `[n, 5408]`.
    pooled: Vec<f32>,
    /// Window position (`0..4`) of each pooled maximum.
    argmax: Vec<u8>,
    /// Combined dropout factor of each feature: 0 or [`KEEP_SCALE`].
    keep: Vec<f32>,
    /// Dense input with dropout applied, `[n, 5408]`; reused for its gradient.
    hidden: Vec<f32>,
    /// Logits `[n, 10]`; reused for their gradient.
    logits: Vec<f32>,
    /// Labels of the current chunk's images.
    labels: [u8; CHUNK],
    /// Images in the current chunk.
    len: usize,
    /// Whether the current forward pass applied dropout.
    dropout: bool,
}

impl Scratch {
    /// Buffers for up to [`CHUNK`] images.
    pub(super) fn new() -> Self {
        Self {
            patches: vec![0.0; CHUNK * CONV_POSITIONS * TAPS],
            conv: vec![0.0; CHUNK * CONV_POSITIONS * FILTERS],
            pooled: vec![0.0; CHUNK * FLAT],
            argmax: vec![0; CHUNK * FLAT],
            keep: vec![0.0; CHUNK * FLAT],
            hidden: vec![0.0; CHUNK * FLAT],
            logits: vec![0.0; CHUNK * CLASSES],
            labels: [0; CHUNK],
            len: 0,
            dropout: false,
        }
    }

    /// Forward pass of `data`'s images `indices` (at most [`CHUNK`]; 28×28 checked by the
    /// caller). With `dropout`, draws both dropout masks from `rng` (training mode).
    pub(super) fn forward(
        &mut self,
        weights: &Weights<'_>,
        data: &Dataset,
        indices: &[usize],
        dropout: Option<&mut dyn RngCore>,
    ) {
        let n = indices.len();
        assert!(n <= CHUNK, "a chunk holds at most {CHUNK} images");
        self.len = n;
        for (label, &index) in self.labels.iter_mut().zip(indices) {
            *label = data.labels[index];
        }
        for (&index, patches) in indices
            .iter()
            .zip(self.patches.chunks_exact_mut(CONV_POSITIONS * TAPS))
        {
            im2col_pool_order(&data.images[index * PIXELS..][..PIXELS], patches);
        }
        let rows = n * CONV_POSITIONS;
        let patches =
            ArrayView2::from_shape((rows, TAPS), &self.patches[..rows * TAPS]).expect("patch rows");
        let mut conv = ArrayViewMut2::from_shape((rows, FILTERS), &mut self.conv[..rows * FILTERS])
            .expect("conv rows");
        general_mat_mul(1.0, &patches, &weights.conv.t(), 0.0, &mut conv);
        for ((conv, pooled), argmax) in self
            .conv
            .chunks_exact(CONV_POSITIONS * FILTERS)
            .zip(self.pooled.chunks_exact_mut(FLAT))
            .zip(self.argmax.chunks_exact_mut(FLAT))
            .take(n)
        {
            max_pool_relu(conv, weights.conv_bias, pooled, argmax);
        }
        self.dropout = dropout.is_some();
        if let Some(rng) = dropout {
            fill_dropout_masks(&mut self.keep[..n * FLAT], rng);
            self.apply_dropout();
        }
        let input = dense_input(self.dropout, &self.hidden, &self.pooled, n);
        let mut logits = ArrayViewMut2::from_shape((n, CLASSES), &mut self.logits[..n * CLASSES])
            .expect("logits");
        general_mat_mul(1.0, &input, &weights.dense.t(), 0.0, &mut logits);
        for row in self.logits[..n * CLASSES].chunks_exact_mut(CLASSES) {
            for (z, b) in row.iter_mut().zip(weights.dense_bias) {
                *z += b;
            }
        }
    }

    /// `hidden = pooled · keep` for the images of the current chunk.
    fn apply_dropout(&mut self) {
        let n = self.len * FLAT;
        for ((h, p), k) in self.hidden[..n]
            .iter_mut()
            .zip(&self.pooled[..n])
            .zip(&self.keep[..n])
        {
            *h = p * k;
        }
    }

    /// Cross-entropy and accuracy of the last forward pass.
    pub(super) fn tally(&self) -> Tally {
        let mut tally = Tally::default();
        for (z, &label) in self.logits[..self.len * CLASSES]
            .chunks_exact(CLASSES)
            .zip(&self.labels)
        {
            let (loss, correct) = cross_entropy(z, usize::from(label));
            tally.loss += f64::from(loss);
            tally.correct += usize::from(correct);
        }
        tally
    }

    /// Back-propagates the mean cross-entropy over a batch of `batch_len` images (of which this
    /// chunk is a part) through the last forward pass, and **adds** the chunk's share of the
    /// gradient to `grads` (flat parameter layout). Returns the chunk's loss and accuracy.
    pub(super) fn backward(
        &mut self,
        weights: &Weights<'_>,
        batch_len: usize,
        grads: &mut [f32],
    ) -> Tally {
        let n = self.len;
        let tally = self.tally();
        // d(mean loss)/d(logits) = (softmax − one-hot) / batch_len.
        let scale = 1.0 / batch_len as f32;
        for (z, &label) in self.logits[..n * CLASSES]
            .chunks_exact_mut(CLASSES)
            .zip(&self.labels)
        {
            crate::network::softmax_in_place(z);
            z[usize::from(label)] -= 1.0;
            for v in z.iter_mut() {
                *v *= scale;
            }
        }
        let (conv_w, rest) = grads.split_at_mut(CONV_B.start);
        let (conv_b, rest) = rest.split_at_mut(FILTERS);
        let (dense_w, dense_b) = rest.split_at_mut(CLASSES * FLAT);

        let dlogits =
            ArrayView2::from_shape((n, CLASSES), &self.logits[..n * CLASSES]).expect("logits");
        for row in dlogits.rows() {
            for (g, d) in dense_b.iter_mut().zip(row) {
                *g += d;
            }
        }
        let mut dense_w =
            ArrayViewMut2::from_shape((CLASSES, FLAT), dense_w).expect("dense kernel gradient");
        let input = dense_input(self.dropout, &self.hidden, &self.pooled, n);
        general_mat_mul(1.0, &dlogits.t(), &input, 1.0, &mut dense_w);

        // Gradient of the dense input, then through dropout and ReLU: hidden becomes the
        // gradient of the pooled maxima.
        let mut dhidden =
            ArrayViewMut2::from_shape((n, FLAT), &mut self.hidden[..n * FLAT]).expect("hidden");
        general_mat_mul(1.0, &dlogits, &weights.dense, 0.0, &mut dhidden);
        if !self.dropout {
            self.keep[..n * FLAT].fill(1.0);
        }
        for ((g, &p), &k) in self.hidden[..n * FLAT]
            .iter_mut()
            .zip(&self.pooled[..n * FLAT])
            .zip(&self.keep[..n * FLAT])
        {
            *g = if p > 0.0 { *g * k } else { 0.0 };
        }
        for g in self.hidden[..n * FLAT].chunks_exact(FILTERS) {
            for (b, v) in conv_b.iter_mut().zip(g) {
                *b += v;
            }
        }
        // Route each pooled gradient to the window position that won the max.
        for ((dconv, g), argmax) in self
            .conv
            .chunks_exact_mut(CONV_POSITIONS * FILTERS)
            .zip(self.hidden.chunks_exact(FLAT))
            .zip(self.argmax.chunks_exact(FLAT))
            .take(n)
        {
            for (sub, block) in dconv.chunks_exact_mut(FLAT).enumerate() {
                for ((d, &g), &a) in block.iter_mut().zip(g).zip(argmax) {
                    *d = if usize::from(a) == sub { g } else { 0.0 };
                }
            }
        }
        let rows = n * CONV_POSITIONS;
        let dconv = ArrayView2::from_shape((rows, FILTERS), &self.conv[..rows * FILTERS])
            .expect("conv rows");
        let patches =
            ArrayView2::from_shape((rows, TAPS), &self.patches[..rows * TAPS]).expect("patch rows");
        let mut conv_w =
            ArrayViewMut2::from_shape((FILTERS, TAPS), conv_w).expect("conv kernel gradient");
        general_mat_mul(1.0, &dconv.t(), &patches, 1.0, &mut conv_w);
        tally
    }
}

/// The dense layer's input `[n, 5408]`: the pooled features, or `hidden` (pooled after
/// dropout) when dropout is on.
fn dense_input<'a>(
    dropout: bool,
    hidden: &'a [f32],
    pooled: &'a [f32],
    n: usize,
) -> ArrayView2<'a, f32> {
    let source = if dropout { hidden } else { pooled };
    ArrayView2::from_shape((n, FLAT), &source[..n * FLAT]).expect("dense input")
}

/// Cross-entropy of softmax(`logits`) against `label`, and whether the first arg-max is `label`.
fn cross_entropy(logits: &[f32], label: usize) -> (f32, bool) {
    let (best, max) =
        logits
            .iter()
            .copied()
            .enumerate()
            .fold((0, f32::NEG_INFINITY), |(bi, bm), (i, z)| {
                if z > bm {
                    (i, z)
                } else {
                    (bi, bm)
                }
            });
    let log_sum: f32 = logits.iter().map(|z| (z - max).exp()).sum::<f32>().ln();
    (log_sum - (logits[label] - max), best == label)
}

/// im2col of one image in pool order: row `sub·169 + py·13 + px` holds the 3×3 patch under conv
/// output pixel `(2·py + sub / 2, 2·px + sub % 2)`, pixels scaled to `0..=1`.
fn im2col_pool_order(image: &[u8], patches: &mut [f32]) {
    for (sub, block) in patches.chunks_exact_mut(POOL_POSITIONS * TAPS).enumerate() {
        let (dy, dx) = (sub / 2, sub % 2);
        for (pos, row) in block.chunks_exact_mut(TAPS).enumerate() {
            let y = 2 * (pos / POOL_SIDE) + dy;
            let x = 2 * (pos % POOL_SIDE) + dx;
            for ky in 0..KERNEL {
                let src = &image[(y + ky) * INPUT_SIDE + x..][..KERNEL];
                for (dst, &v) in row[ky * KERNEL..][..KERNEL].iter_mut().zip(src) {
                    *dst = pixel(v);
                }
            }
        }
    }
}

/// Max over the four window blocks of one image's conv output, plus bias, then ReLU.
fn max_pool_relu(conv: &[f32], bias: &[f32], pooled: &mut [f32], argmax: &mut [u8]) {
    let (b0, rest) = conv.split_at(FLAT);
    let (b1, rest) = rest.split_at(FLAT);
    let (b2, b3) = rest.split_at(FLAT);
    let windows = b0
        .chunks_exact(FILTERS)
        .zip(b1.chunks_exact(FILTERS))
        .zip(b2.chunks_exact(FILTERS));
    let outs = b3
        .chunks_exact(FILTERS)
        .zip(pooled.chunks_exact_mut(FILTERS))
        .zip(argmax.chunks_exact_mut(FILTERS));
    for (((z0, z1), z2), ((z3, out), arg)) in windows.zip(outs) {
        for c in 0..FILTERS {
            let (mut m, mut a) = (z0[c], 0u8);
            if z1[c] > m {
                (m, a) = (z1[c], 1);
            }
            if z2[c] > m {
                (m, a) = (z2[c], 2);
            }
            if z3[c] > m {
                (m, a) = (z3[c], 3);
            }
            let v = m + bias[c];
            out[c] = if v > 0.0 { v } else { 0.0 };
            arg[c] = a;
        }
    }
}

/// Draws the two inverted-dropout masks at once: a feature survives the 0.25 dropout when
/// either of two random bits is set (p = 3/4) and the 0.5 dropout when a third is (p = 1/2).
fn fill_dropout_masks(keep: &mut [f32], rng: &mut dyn RngCore) {
    for group in keep.chunks_mut(64) {
        let (a, b, c) = (rng.next_u64(), rng.next_u64(), rng.next_u64());
        let bits = (a | b) & c;
        for (j, k) in group.iter_mut().enumerate() {
            *k = if bits >> j & 1 == 1 { KEEP_SCALE } else { 0.0 };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::FloatModel;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Images in the gradient-check batch (fewer than a chunk, to exercise partial chunks).
    const N: usize = 3;

    /// Glorot weights with non-zero biases (so every bias gradient is exercised), random
    /// images and labels.
    fn setup(seed: u64) -> (Vec<f32>, Dataset) {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut model = FloatModel::glorot_uniform(seed);
        model.conv_bias.mapv_inplace(|_| rng.gen_range(-0.05..0.05));
        model.dense_bias.mapv_inplace(|_| rng.gen_range(-0.2..0.2));
        let data = Dataset {
            images: (0..N * PIXELS).map(|_| rng.gen()).collect(),
            labels: (0..N).map(|_| rng.gen_range(0..10)).collect(),
            rows: 28,
            cols: 28,
        };
        (super::super::flatten(&model), data)
    }

    /// Naive f64 conv → ReLU → max-pool of one image, flattened NHWC.
    fn reference_features(params: &[f64], image: &[u8]) -> Vec<f64> {
        let (w, b) = (&params[CONV_W], &params[CONV_B]);
        let conv = |y: usize, x: usize, f: usize| {
            let mut s = b[f];
            for ky in 0..KERNEL {
                for kx in 0..KERNEL {
                    s += w[f * TAPS + ky * KERNEL + kx]
                        * f64::from(image[(y + ky) * INPUT_SIDE + x + kx])
                        / 255.0;
                }
            }
            s.max(0.0)
        };
        let mut flat = vec![0.0; FLAT];
        for py in 0..POOL_SIDE {
            for px in 0..POOL_SIDE {
                for f in 0..FILTERS {
                    let window = [(0, 0), (0, 1), (1, 0), (1, 1)]
                        .map(|(dy, dx)| conv(2 * py + dy, 2 * px + dx, f));
                    flat[(py * POOL_SIDE + px) * FILTERS + f] =
                        window.into_iter().fold(f64::NEG_INFINITY, f64::max);
                }
            }
        }
        flat
    }

    /// Mean cross-entropy of the dense head on precomputed features, dropout factors `keep`.
    fn reference_head(
        params: &[f64],
        features: &[Vec<f64>],
        keep: Option<&[f32]>,
        labels: &[u8],
    ) -> f64 {
        let (w, b) = (&params[DENSE_W], &params[DENSE_B]);
        let mut total = 0.0;
        for (i, (x, &label)) in features.iter().zip(labels).enumerate() {
            let z: Vec<f64> = (0..CLASSES)
                .map(|j| {
                    let dot: f64 = (0..FLAT)
                        .map(|k| {
                            w[j * FLAT + k]
                                * x[k]
                                * keep.map_or(1.0, |m| f64::from(m[i * FLAT + k]))
                        })
                        .sum();
                    b[j] + dot
                })
                .collect();
            let max = z.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let log_sum = z.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            total += log_sum - (z[usize::from(label)] - max);
        }
        total / features.len() as f64
    }

    fn reference_loss(params: &[f64], data: &Dataset, keep: Option<&[f32]>) -> f64 {
        let features: Vec<Vec<f64>> = data
            .images
            .chunks_exact(PIXELS)
            .map(|im| reference_features(params, im))
            .collect();
        reference_head(params, &features, keep, &data.labels)
    }

    /// Analytic gradient of the mean loss from the fused kernels, and the dropout factors used.
    fn analytic(
        params: &[f32],
        data: &Dataset,
        dropout_seed: Option<u64>,
    ) -> (Vec<f32>, Option<Vec<f32>>, Tally) {
        let weights = Weights::new(params);
        let mut scratch = Scratch::new();
        let indices: Vec<usize> = (0..data.len()).collect();
        let mut rng = dropout_seed.map(ChaCha8Rng::seed_from_u64);
        scratch.forward(
            &weights,
            data,
            &indices,
            rng.as_mut().map(|r| r as &mut dyn RngCore),
        );
        let keep = dropout_seed.map(|_| scratch.keep[..data.len() * FLAT].to_vec());
        let mut grads = vec![0.0; PARAMS];
        let tally = scratch.backward(&weights, data.len(), &mut grads);
        (grads, keep, tally)
    }

    /// Two-sided check `|a − n| ≤ 1e-3·max(|a|, |n|) + 1e-6` of analytic against central
    /// differences (h = 1e-6 in f64) for the parameters `which`. Returns how many of them have a
    /// gradient above 1e-4, so callers can make sure the check was not vacuous.
    fn check(
        params: &[f32],
        data: &Dataset,
        keep: Option<&[f32]>,
        grads: &[f32],
        which: &[usize],
    ) -> usize {
        let base: Vec<f64> = params.iter().map(|&p| f64::from(p)).collect();
        let features: Vec<Vec<f64>> = data
            .images
            .chunks_exact(PIXELS)
            .map(|im| reference_features(&base, im))
            .collect();
        let h = 1e-6;
        let mut significant = 0;
        for &i in which {
            let mut p = base.clone();
            let mut loss_at = |delta: f64| {
                p[i] = base[i] + delta;
                if i < DENSE_W.start {
                    reference_loss(&p, data, keep)
                } else {
                    reference_head(&p, &features, keep, &data.labels)
                }
            };
            let numeric = (loss_at(h) - loss_at(-h)) / (2.0 * h);
            let a = f64::from(grads[i]);
            let tolerance = 1e-3 * a.abs().max(numeric.abs()) + 1e-6;
            assert!(
                (a - numeric).abs() <= tolerance,
                "parameter {i}: analytic {a:e}, numeric {numeric:e}"
            );
            significant += usize::from(numeric.abs() > 1e-4);
        }
        significant
    }

    /// Every conv weight and bias, every dense bias, and 400 random dense weights.
    fn checked_parameters(seed: u64, conv_stride: usize) -> Vec<usize> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut which: Vec<usize> = (0..CONV_B.end)
            .step_by(conv_stride)
            .chain(DENSE_B)
            .collect();
        which.extend((0..400).map(|_| rng.gen_range(DENSE_W)));
        which
    }

    #[test]
    fn gradients_match_finite_differences_without_dropout() {
        let (params, data) = setup(21);
        let (grads, _, tally) = analytic(&params, &data, None);
        let which = checked_parameters(1, 1);
        let significant = check(&params, &data, None, &grads, &which);
        assert!(
            significant > which.len() / 2,
            "only {significant} of {} gradients are non-trivial",
            which.len()
        );
        let loss = reference_loss(
            &params.iter().map(|&p| f64::from(p)).collect::<Vec<_>>(),
            &data,
            None,
        );
        assert!(
            (tally.loss / N as f64 - loss).abs() < 1e-5 * loss,
            "{} vs {loss}",
            tally.loss
        );
    }

    #[test]
    fn gradients_match_finite_differences_with_dropout() {
        let (params, data) = setup(22);
        let (grads, keep, _) = analytic(&params, &data, Some(5));
        let which = checked_parameters(2, 5);
        let significant = check(&params, &data, keep.as_deref(), &grads, &which);
        assert!(
            significant > which.len() / 3,
            "only {significant} of {} gradients are non-trivial",
            which.len()
        );
    }

    #[test]
    fn backward_accumulates_and_scales_by_batch_length() {
        let (params, data) = setup(23);
        let (once, _, _) = analytic(&params, &data, None);
        let weights = Weights::new(&params);
        let mut scratch = Scratch::new();
        let mut twice = vec![0.0; PARAMS];
        for _ in 0..2 {
            scratch.forward(&weights, &data, &[0, 1, 2], None);
            scratch.backward(&weights, 2 * N, &mut twice);
        }
        for (a, b) in once.iter().zip(&twice) {
            assert!((a - b).abs() <= 1e-5 * a.abs() + 1e-8, "{a} vs {b}");
        }
    }

    #[test]
    fn fused_forward_matches_the_reference_forward() {
        let (params, mut data) = setup(24);
        data.images.extend_from_within(..);
        data.labels.extend_from_within(..);
        let model = super::super::unflatten(&params);
        let reference = model.forward(&data.images);
        let mut scratch = Scratch::new();
        scratch.forward(&Weights::new(&params), &data, &[5, 0, 4, 1, 3, 2], None);
        for (slot, image) in [5, 0, 4, 1, 3, 2].into_iter().enumerate() {
            let pooled = reference.pooled.index_axis(ndarray::Axis(0), image);
            for (a, b) in scratch.pooled[slot * FLAT..][..FLAT]
                .iter()
                .zip(pooled.iter())
            {
                assert!((a - b).abs() <= 1e-6, "{a} vs {b}");
            }
            for (a, b) in scratch.logits[slot * CLASSES..][..CLASSES]
                .iter()
                .zip(reference.logits.row(image))
            {
                assert!((a - b).abs() <= 1e-5, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn dropout_masks_keep_three_eighths_at_scale_eight_thirds() {
        let mut keep = vec![0.0; CHUNK * FLAT];
        fill_dropout_masks(&mut keep, &mut ChaCha8Rng::seed_from_u64(9));
        assert!(keep.iter().all(|&k| k == 0.0 || k == KEEP_SCALE));
        assert!((KEEP_SCALE - 8.0 / 3.0).abs() < 1e-6);
        let kept = keep.iter().filter(|&&k| k > 0.0).count() as f64 / keep.len() as f64;
        // 43,264 Bernoulli(3/8) draws: σ ≈ 0.0023, so ±0.01 is more than 4σ.
        assert!((kept - 0.375).abs() < 0.01, "kept {kept}");
    }

    #[test]
    fn cross_entropy_is_stable_and_breaks_ties_to_the_first_class() {
        let (loss, correct) =
            cross_entropy(&[1000.0, 0.0, 1000.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0], 0);
        assert!((loss - std::f32::consts::LN_2).abs() < 1e-6 && correct);
        let (loss, correct) = cross_entropy(&[0.0; CLASSES], 3);
        assert!((loss - 10f32.ln()).abs() < 1e-6 && !correct);
    }
}

//! The float model of the Keras MNIST tutorial CNN and its eval-mode forward pass.
//!
//! ```text
//! input 28×28×1 (pixels / 255)
//!   → Conv2D 32 × 3×3, valid, + bias, ReLU    26×26×32
//!   → MaxPool 2×2, stride 2                   13×13×32
//!   → Dropout 0.25 → Flatten → Dropout 0.5    5408 (NHWC order: (y·13 + x)·32 + c)
//!   → Dense 10 + softmax
//! ```
//!
//! Dropout is the identity here (eval mode); training lives in [`crate::train`].
//! Tensors use the TFLite layouts the int8 exporter expects: conv kernels OHWI,
//! dense kernels `[out, in]`, activations NHWC.

use ndarray::linalg::general_mat_mul;
use ndarray::{Array1, Array2, Array4, ArrayView1, ArrayViewMut2, Axis, CowArray, Ix2};
use rand::distributions::{Distribution, Uniform};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// Side of the square input image, in pixels.
pub const INPUT_SIDE: usize = 28;
/// Number of convolution filters (output channels of the conv layer).
pub const FILTERS: usize = 32;
/// Side of the square convolution kernel.
pub const KERNEL: usize = 3;
/// Side of the conv output (`INPUT_SIDE - KERNEL + 1`, "valid" padding).
pub const CONV_SIDE: usize = 26;
/// Side of the max-pool output (`CONV_SIDE / 2`).
pub const POOL_SIDE: usize = 13;
/// Number of output classes.
pub const CLASSES: usize = 10;
/// Length of the flattened pooled features (`POOL_SIDE² · FILTERS`).
pub const FLAT: usize = 5408;

const _: () = assert!(CONV_SIDE == INPUT_SIDE - KERNEL + 1);
const _: () = assert!(POOL_SIDE * 2 == CONV_SIDE);
const _: () = assert!(FLAT == POOL_SIDE * POOL_SIDE * FILTERS);

/// Pixels in one input image.
pub(crate) const PIXELS: usize = INPUT_SIDE * INPUT_SIDE;
/// Weights in one conv filter (`KERNEL² · 1` input channel).
pub(crate) const TAPS: usize = KERNEL * KERNEL;
/// Conv output positions per image.
pub(crate) const CONV_POSITIONS: usize = CONV_SIDE * CONV_SIDE;
/// Pooled positions per image.
pub(crate) const POOL_POSITIONS: usize = POOL_SIDE * POOL_SIDE;

/// `PIXEL_SCALE[v] = v / 255` exactly as Keras computes it in f32 (a true division).
const PIXEL_SCALE: [f32; 256] = {
    let mut table = [0.0; 256];
    let mut v = 0;
    while v < 256 {
        table[v] = v as f32 / 255.0;
        v += 1;
    }
    table
};

/// Scales a raw pixel to `0.0..=1.0` (`v / 255`).
#[inline]
pub(crate) fn pixel(v: u8) -> f32 {
    PIXEL_SCALE[usize::from(v)]
}

/// The float weights of the tutorial CNN (54,410 parameters).
#[derive(Clone, Debug, PartialEq)]
pub struct FloatModel {
    /// Conv kernels `[FILTERS, KERNEL, KERNEL, 1]` = `[filter, ky, kx, in_channel]` (OHWI, TFLite order).
    pub conv_weights: Array4<f32>,
    /// Conv biases `[FILTERS]`.
    pub conv_bias: Array1<f32>,
    /// Dense kernel `[CLASSES, FLAT]` = `[class, (y·13 + x)·32 + c]`.
    pub dense_weights: Array2<f32>,
    /// Dense biases `[CLASSES]`.
    pub dense_bias: Array1<f32>,
}

/// Every intermediate tensor of an eval-mode forward pass, for calibration and inspection.
#[derive(Clone, Debug, PartialEq)]
pub struct Activations {
    /// Conv output after bias and ReLU, `[n, 26, 26, 32]` (NHWC).
    pub conv_relu: Array4<f32>,
    /// Max-pool output, `[n, 13, 13, 32]` (NHWC); flattened row-major it is the dense input.
    pub pooled: Array4<f32>,
    /// Dense output before softmax, `[n, 10]`.
    pub logits: Array2<f32>,
}

impl FloatModel {
    /// Keras' default initialisation: Glorot-uniform kernels (conv fan-in 9, fan-out 288;
    /// dense fan-in 5408, fan-out 10) and zero biases, drawn from a ChaCha8 RNG seeded with `seed`.
    pub fn glorot_uniform(seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut glorot = |shape_len: usize, fan_in: usize, fan_out: usize| -> Vec<f32> {
            let limit = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
            let uniform = Uniform::new_inclusive(-limit, limit);
            (0..shape_len).map(|_| uniform.sample(&mut rng)).collect()
        };
        let conv = glorot(FILTERS * TAPS, TAPS, TAPS * FILTERS);
        let dense = glorot(CLASSES * FLAT, FLAT, CLASSES);
        Self {
            conv_weights: Array4::from_shape_vec((FILTERS, KERNEL, KERNEL, 1), conv)
                .expect("conv kernel length matches its shape"),
            conv_bias: Array1::zeros(FILTERS),
            dense_weights: Array2::from_shape_vec((CLASSES, FLAT), dense)
                .expect("dense kernel length matches its shape"),
            dense_bias: Array1::zeros(CLASSES),
        }
    }

    /// Number of trainable parameters (54,410 for the tutorial shapes).
    pub fn parameter_count(&self) -> usize {
        self.conv_weights.len()
            + self.conv_bias.len()
            + self.dense_weights.len()
            + self.dense_bias.len()
    }

    /// Eval-mode forward pass (dropout is the identity) keeping every intermediate tensor.
    ///
    /// `images` holds `n` raw 28×28 images back to back (`n · 784` bytes); pixels are divided by
    /// 255 inside. Runs on the current rayon pool. The result holds `n · 86.5 KB` of conv
    /// activations: use [`FloatModel::predict_proba`] or [`crate::train::evaluate`] for large sets.
    ///
    /// # Panics
    /// If `images.len()` is not a multiple of 784, or if a field does not have its documented shape.
    pub fn forward(&self, images: &[u8]) -> Activations {
        let n = image_count(images);
        let weights = self.kernels();
        let mut conv_relu = Array4::zeros((n, CONV_SIDE, CONV_SIDE, FILTERS));
        let mut pooled = Array4::zeros((n, POOL_SIDE, POOL_SIDE, FILTERS));
        let mut logits = Array2::zeros((n, CLASSES));
        as_slice_mut(conv_relu.as_slice_mut())
            .par_chunks_mut(CONV_POSITIONS * FILTERS)
            .zip(as_slice_mut(pooled.as_slice_mut()).par_chunks_mut(FLAT))
            .zip(as_slice_mut(logits.as_slice_mut()).par_chunks_mut(CLASSES))
            .zip(images.par_chunks(PIXELS))
            .for_each_init(
                || Array2::zeros((CONV_POSITIONS, TAPS)),
                |patches, (((conv, pool), logit), image)| {
                    weights.forward_image(image, patches, conv, pool, logit);
                },
            );
        Activations {
            conv_relu,
            pooled,
            logits,
        }
    }

    /// Eval-mode class probabilities (softmax of the logits), `[n, 10]`.
    ///
    /// Same input contract as [`FloatModel::forward`], without keeping the conv activations.
    ///
    /// # Panics
    /// If `images.len()` is not a multiple of 784, or if a field does not have its documented shape.
    pub fn predict_proba(&self, images: &[u8]) -> Array2<f32> {
        let n = image_count(images);
        let weights = self.kernels();
        let mut proba = Array2::zeros((n, CLASSES));
        as_slice_mut(proba.as_slice_mut())
            .par_chunks_mut(CLASSES)
            .zip(images.par_chunks(PIXELS))
            .for_each_init(
                || {
                    (
                        Array2::zeros((CONV_POSITIONS, TAPS)),
                        vec![0.0; CONV_POSITIONS * FILTERS],
                        vec![0.0; FLAT],
                    )
                },
                |(patches, conv, pool), (out, image)| {
                    weights.forward_image(image, patches, conv, pool, out);
                    softmax_in_place(out);
                },
            );
        proba
    }

    /// Eval-mode logits `[n, 10]` and the largest conv activation (after ReLU) over all the
    /// images: what int8 calibration measures, without keeping 86.5 KB of conv activations per
    /// image as [`FloatModel::forward`] does.
    ///
    /// Same input contract as [`FloatModel::forward`]; an empty input gives `([0, 10], 0.0)`.
    ///
    /// # Panics
    /// If `images.len()` is not a multiple of 784, or if a field does not have its documented shape.
    pub fn logits_and_conv_max(&self, images: &[u8]) -> (Array2<f32>, f32) {
        let n = image_count(images);
        let weights = self.kernels();
        let mut logits = Array2::zeros((n, CLASSES));
        // Every conv output position lies in exactly one 2×2 pool window (26 = 2·13), so the
        // largest pooled value is the largest conv activation.
        let conv_max = as_slice_mut(logits.as_slice_mut())
            .par_chunks_mut(CLASSES)
            .zip(images.par_chunks(PIXELS))
            .map_init(
                || {
                    (
                        Array2::zeros((CONV_POSITIONS, TAPS)),
                        vec![0.0; CONV_POSITIONS * FILTERS],
                        vec![0.0; FLAT],
                    )
                },
                |(patches, conv, pool), (out, image)| {
                    weights.forward_image(image, patches, conv, pool, out);
                    pool.iter().copied().fold(0.0f32, f32::max)
                },
            )
            .reduce(|| 0.0, f32::max);
        (logits, conv_max)
    }

    /// Views of the weights as the matrices the kernels multiply by.
    fn kernels(&self) -> Kernels<'_> {
        let conv = self
            .conv_weights
            .to_shape((FILTERS, TAPS))
            .expect("conv_weights has shape [32, 3, 3, 1]");
        assert_eq!(self.conv_bias.len(), FILTERS, "conv_bias has shape [32]");
        assert_eq!(
            self.dense_weights.dim(),
            (CLASSES, FLAT),
            "dense_weights has shape [10, 5408]"
        );
        assert_eq!(self.dense_bias.len(), CLASSES, "dense_bias has shape [10]");
        Kernels {
            conv,
            conv_bias: self.conv_bias.view(),
            dense: self.dense_weights.as_standard_layout(),
            dense_bias: self.dense_bias.view(),
        }
    }
}

/// Number of whole images in `images`.
fn image_count(images: &[u8]) -> usize {
    assert!(
        images.len() % PIXELS == 0,
        "images must be n × 784 bytes of 28×28 images, got {} bytes",
        images.len()
    );
    images.len() / PIXELS
}

/// The slice of a freshly allocated (hence standard-layout) array.
fn as_slice_mut(slice: Option<&mut [f32]>) -> &mut [f32] {
    slice.expect("freshly allocated arrays are contiguous")
}

/// Borrowed weights, conv kernel reshaped to `[FILTERS, TAPS]`.
struct Kernels<'a> {
    conv: CowArray<'a, f32, Ix2>,
    conv_bias: ArrayView1<'a, f32>,
    dense: CowArray<'a, f32, Ix2>,
    dense_bias: ArrayView1<'a, f32>,
}

impl Kernels<'_> {
    /// Straightforward per-image forward pass: im2col in raster order, one GEMM, bias + ReLU,
    /// then 2×2 max-pool and the dense layer. This is the reference the fused training kernels
    /// are tested against.
    fn forward_image(
        &self,
        image: &[u8],
        patches: &mut Array2<f32>,
        conv: &mut [f32],
        pooled: &mut [f32],
        logits: &mut [f32],
    ) {
        for y in 0..CONV_SIDE {
            for x in 0..CONV_SIDE {
                let mut row = patches.row_mut(y * CONV_SIDE + x);
                for ky in 0..KERNEL {
                    for kx in 0..KERNEL {
                        row[ky * KERNEL + kx] = pixel(image[(y + ky) * INPUT_SIDE + x + kx]);
                    }
                }
            }
        }
        let mut conv_view = ArrayViewMut2::from_shape((CONV_POSITIONS, FILTERS), &mut *conv)
            .expect("conv buffer holds 26·26·32 values");
        general_mat_mul(1.0, &*patches, &self.conv.t(), 0.0, &mut conv_view);
        for mut row in conv_view.axis_iter_mut(Axis(0)) {
            for (v, b) in row.iter_mut().zip(self.conv_bias) {
                *v = (*v + b).max(0.0);
            }
        }
        for py in 0..POOL_SIDE {
            for px in 0..POOL_SIDE {
                let out = &mut pooled[(py * POOL_SIDE + px) * FILTERS..][..FILTERS];
                let at = |dy: usize, dx: usize| {
                    let pos = (2 * py + dy) * CONV_SIDE + 2 * px + dx;
                    &conv[pos * FILTERS..][..FILTERS]
                };
                let (a, b, c, d) = (at(0, 0), at(0, 1), at(1, 0), at(1, 1));
                for f in 0..FILTERS {
                    out[f] = a[f].max(b[f]).max(c[f]).max(d[f]);
                }
            }
        }
        let dense = self
            .dense
            .as_slice()
            .expect("dense kernel is in standard layout");
        for ((logit, row), bias) in logits
            .iter_mut()
            .zip(dense.chunks_exact(FLAT))
            .zip(self.dense_bias)
        {
            *logit = bias + dot(row, pooled);
        }
    }
}

/// Dot product with eight independent accumulators (vectorizes without fast-math).
fn dot(w: &[f32], x: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (w_main, w_tail) = w.split_at(w.len() / 8 * 8);
    let (x_main, x_tail) = x.split_at(w_main.len());
    for (wc, xc) in w_main.chunks_exact(8).zip(x_main.chunks_exact(8)) {
        for i in 0..8 {
            acc[i] += wc[i] * xc[i];
        }
    }
    let tail: f32 = w_tail.iter().zip(x_tail).map(|(a, b)| a * b).sum();
    acc.iter().sum::<f32>() + tail
}

/// Replaces logits by their softmax (max-subtracted, so it never overflows).
pub(crate) fn softmax_in_place(values: &mut [f32]) {
    let max = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for v in values.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in values.iter_mut() {
        *v /= sum;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Naive f64 forward pass of one image, straight from the layer definitions.
    fn naive_logits(model: &FloatModel, image: &[u8]) -> Vec<f64> {
        let x = |y: usize, x: usize| f64::from(image[y * INPUT_SIDE + x]) / 255.0;
        let mut conv = vec![0.0f64; CONV_SIDE * CONV_SIDE * FILTERS];
        for y in 0..CONV_SIDE {
            for xx in 0..CONV_SIDE {
                for f in 0..FILTERS {
                    let mut s = f64::from(model.conv_bias[f]);
                    for ky in 0..KERNEL {
                        for kx in 0..KERNEL {
                            s += f64::from(model.conv_weights[[f, ky, kx, 0]]) * x(y + ky, xx + kx);
                        }
                    }
                    conv[(y * CONV_SIDE + xx) * FILTERS + f] = s.max(0.0);
                }
            }
        }
        let mut flat = vec![0.0f64; FLAT];
        for py in 0..POOL_SIDE {
            for px in 0..POOL_SIDE {
                for f in 0..FILTERS {
                    let mut m = f64::NEG_INFINITY;
                    for dy in 0..2 {
                        for dx in 0..2 {
                            m = m
                                .max(conv[((2 * py + dy) * CONV_SIDE + 2 * px + dx) * FILTERS + f]);
                        }
                    }
                    flat[(py * POOL_SIDE + px) * FILTERS + f] = m;
                }
            }
        }
        (0..CLASSES)
            .map(|j| {
                let w = model.dense_weights.row(j);
                f64::from(model.dense_bias[j])
                    + w.iter()
                        .zip(&flat)
                        .map(|(a, b)| f64::from(*a) * b)
                        .sum::<f64>()
            })
            .collect()
    }

    fn random_images(n: usize, seed: u64) -> Vec<u8> {
        use rand::Rng;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..n * PIXELS).map(|_| rng.gen()).collect()
    }

    fn model_with_biases(seed: u64) -> FloatModel {
        use rand::Rng;
        let mut model = FloatModel::glorot_uniform(seed);
        let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0xb1a5);
        model.conv_bias.mapv_inplace(|_| rng.gen_range(-0.1..0.1));
        model.dense_bias.mapv_inplace(|_| rng.gen_range(-0.1..0.1));
        model
    }

    #[test]
    fn parameter_count_matches_keras_summary() {
        assert_eq!(FloatModel::glorot_uniform(1).parameter_count(), 54_410);
    }

    #[test]
    fn glorot_limits_and_zero_biases() {
        let model = FloatModel::glorot_uniform(7);
        let conv_limit = (6.0f32 / 297.0).sqrt();
        let dense_limit = (6.0f32 / 5418.0).sqrt();
        assert!(model.conv_weights.iter().all(|w| w.abs() <= conv_limit));
        assert!(model.dense_weights.iter().all(|w| w.abs() <= dense_limit));
        // Uniform on [-l, l] has a standard deviation of l/√3; 54k samples pin it to ~1 %.
        let n = model.dense_weights.len() as f32;
        let std = (model.dense_weights.iter().map(|w| w * w).sum::<f32>() / n).sqrt();
        assert!(
            (std / (dense_limit / 3f32.sqrt()) - 1.0).abs() < 0.02,
            "std {std}"
        );
        assert!(model
            .conv_bias
            .iter()
            .chain(&model.dense_bias)
            .all(|&b| b == 0.0));
        assert_eq!(model, FloatModel::glorot_uniform(7));
        assert_ne!(model, FloatModel::glorot_uniform(8));
    }

    #[test]
    fn forward_matches_naive_f64_reference() {
        let model = model_with_biases(3);
        let images = random_images(3, 11);
        let acts = model.forward(&images);
        assert_eq!(acts.conv_relu.dim(), (3, 26, 26, 32));
        assert_eq!(acts.pooled.dim(), (3, 13, 13, 32));
        for i in 0..3 {
            let expected = naive_logits(&model, &images[i * PIXELS..][..PIXELS]);
            for (j, e) in expected.iter().enumerate() {
                let got = f64::from(acts.logits[[i, j]]);
                assert!(
                    (got - e).abs() <= 1e-5 * (1.0 + e.abs()),
                    "logit {i},{j}: {got} vs {e}"
                );
            }
        }
        // pooled really is the max of its 2×2 window of conv_relu
        let (py, px, f) = (5, 7, 3);
        let window = (0..4).map(|k| acts.conv_relu[[1, 2 * py + k / 2, 2 * px + k % 2, f]]);
        assert_eq!(
            acts.pooled[[1, py, px, f]],
            window.fold(f32::NEG_INFINITY, f32::max)
        );
    }

    #[test]
    fn predict_proba_is_softmax_of_forward_logits() {
        let model = model_with_biases(4);
        let images = random_images(5, 12);
        let proba = model.predict_proba(&images);
        let logits = model.forward(&images).logits;
        for (p, z) in proba.outer_iter().zip(logits.outer_iter()) {
            let mut expected = z.to_vec();
            softmax_in_place(&mut expected);
            assert!((p.sum() - 1.0).abs() < 1e-5);
            for (a, b) in p.iter().zip(&expected) {
                assert!((a - b).abs() < 1e-6);
            }
        }
        assert_eq!(model.predict_proba(&[]).dim(), (0, CLASSES));
    }

    #[test]
    fn logits_and_conv_max_match_forward() {
        let model = model_with_biases(6);
        let images = random_images(7, 14);
        let acts = model.forward(&images);
        let (logits, conv_max) = model.logits_and_conv_max(&images);
        assert_eq!(logits, acts.logits);
        assert_eq!(conv_max, acts.conv_relu.iter().copied().fold(0.0, f32::max));
        assert!(conv_max > 0.0);
        let (empty, zero) = model.logits_and_conv_max(&[]);
        assert_eq!((empty.dim(), zero), ((0, CLASSES), 0.0));
    }

    #[test]
    fn accepts_non_standard_layouts() {
        let model = model_with_biases(5);
        let mut transposed = model.clone();
        let t = model.dense_weights.t().as_standard_layout().into_owned();
        transposed.dense_weights = t.reversed_axes();
        let c = model
            .conv_weights
            .view()
            .permuted_axes([3, 2, 1, 0])
            .as_standard_layout()
            .into_owned();
        transposed.conv_weights = c.permuted_axes([3, 2, 1, 0]);
        assert!(!transposed.dense_weights.is_standard_layout());
        assert!(!transposed.conv_weights.is_standard_layout());
        assert_eq!(transposed, model);
        let images = random_images(2, 13);
        let a = model.forward(&images).logits;
        let b = transposed.forward(&images).logits;
        assert!(a.iter().zip(&b).all(|(x, y)| (x - y).abs() < 1e-5));
    }
}

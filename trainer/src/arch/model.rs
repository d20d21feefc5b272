//! A float model of any [`Spec`]: its layers with their weights, Keras' initialisation, the
//! eval-mode forward pass, and softmax cross-entropy.

use super::layers::{Conv, Layer, Mode, Param, Prepared, Tensor};
use super::residual::Saved;
use super::spec::Spec;
use anyhow::{ensure, Result};
use rand::distributions::{Distribution, Uniform};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;

/// Images per task of an eval-mode pass (bounds the memory of the activations).
const EVAL_CHUNK: usize = 8;

/// A generic float model.
#[derive(Clone, Debug)]
pub struct Model {
    /// The architecture.
    pub spec: Spec,
    /// One per spec layer.
    pub layers: Vec<Layer>,
}

impl Model {
    /// Keras' default initialisation: Glorot-uniform kernels (fan-in `k²·c_in` or inputs,
    /// fan-out `k²·filters` or units), zero biases, γ = 1, β = 0, drawn layer by layer from a
    /// ChaCha8 RNG seeded with `seed`.
    pub fn glorot_uniform(spec: &Spec, seed: u64) -> Self {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut layers = Vec::with_capacity(spec.layers.len());
        for (index, layer_spec) in spec.layers.iter().enumerate() {
            let mut layer = Layer::new(layer_spec, index, spec.input_of(index));
            let (fan_in, fan_out) = match &layer {
                Layer::Conv(c) => (c.geom.taps(), c.geom.k * c.geom.k * c.geom.filters),
                // Keras' fans of a `(k, k, ic, multiplier)` kernel.
                Layer::Depthwise(d) => {
                    let taps = d.slide.k * d.slide.k;
                    (taps * d.ic, taps * d.multiplier)
                }
                Layer::Dense(d) => (d.inputs, d.bias.value.len()),
                _ => (0, 0),
            };
            if let Some(kernel) = layer.params_mut().into_iter().find(|p| p.kernel) {
                let limit = (6.0 / (fan_in + fan_out) as f64).sqrt() as f32;
                let uniform = Uniform::new_inclusive(-limit, limit);
                kernel
                    .value
                    .iter_mut()
                    .for_each(|w| *w = uniform.sample(&mut rng));
            }
            layers.push(layer);
        }
        Self {
            spec: spec.clone(),
            layers,
        }
    }

    /// Trainable parameters.
    pub fn trainable_count(&self) -> usize {
        self.layers
            .iter()
            .flat_map(Layer::params)
            .map(|p| p.value.len())
            .sum()
    }

    /// All parameters, Keras' "Total params" (batch norm's moving statistics included).
    pub fn parameter_count(&self) -> usize {
        self.spec.total_params()
    }

    /// The raw images (`n · h·w·c` bytes) as a float batch scaled to `0..=1`.
    ///
    /// # Errors
    /// If the byte count is not a multiple of the input size.
    pub fn input_batch(&self, images: &[u8]) -> Result<Tensor> {
        let (h, w, c) = self.spec.input.hwc();
        let item = h * w * c;
        ensure!(
            images.len() % item == 0,
            "{} bytes are not whole {h}×{w}×{c} images",
            images.len()
        );
        Ok(Tensor {
            n: images.len() / item,
            h,
            w,
            c,
            data: images.iter().map(|&v| f32::from(v) / 255.0).collect(),
        })
    }

    /// Runs the layers on `x`, keeping nothing (logits out: the final softmax is left to the
    /// loss).
    pub fn forward(&self, x: Tensor, mode: Mode) -> Tensor {
        let mut saved = Saved::new(&self.spec);
        self.layers.iter().enumerate().fold(x, |x, (index, layer)| {
            saved
                .step(index, layer, x, None)
                .unwrap_or_else(|x| layer.forward(x, mode))
        })
    }

    /// The convolution of layers `index` and `index + 1` if they run as one step
    /// ([`Layer::pooled_conv`]): not when a residual block reads the convolution's output.
    pub fn pooled_at(&self, index: usize) -> Option<&Conv> {
        let conv = self.layers.get(index)?;
        conv.pooled_conv(self.layers.get(index + 1))
            .filter(|_| !self.spec.reads_again(index + 1))
    }

    /// Eval-mode pass of `x` with `prepared` ([`Model::prepare_eval`]), calling `each(i, y)`
    /// with the output `y` of every layer `i` — of every second one of a convolution and its
    /// max pool run as one step ([`Model::pooled_at`]) when `fuse`.
    pub fn forward_eval(
        &self,
        mut x: Tensor,
        prepared: &[Prepared],
        fuse: bool,
        mut each: impl FnMut(usize, &Tensor),
    ) -> Tensor {
        let mut saved = Saved::new(&self.spec);
        let mut index = 0;
        while let Some(layer) = self.layers.get(index) {
            let prep = &prepared[index];
            match self.pooled_at(index).filter(|_| fuse) {
                Some(conv) => {
                    saved.keep(index, &x);
                    x = conv.forward_pooled(x, None, Some(prep));
                    index += 1;
                }
                None => {
                    x = saved
                        .step(index, layer, x, None)
                        .unwrap_or_else(|x| layer.forward_prepared(x, prep));
                }
            }
            each(index, &x);
            index += 1;
        }
        x
    }

    /// [`Layer::prepare_eval`] of every layer, for [`Layer::forward_prepared`].
    pub fn prepare_eval(&self) -> Vec<Prepared> {
        self.layers.iter().map(Layer::prepare_eval).collect()
    }

    /// Eval-mode logits `(n, classes)` of raw images, row-major; chunks of 8 images run in
    /// parallel on the current rayon pool.
    ///
    /// # Errors
    /// If the byte count is not a multiple of the input size.
    pub fn logits(&self, images: &[u8]) -> Result<Vec<f32>> {
        let item = self.spec.input.len();
        ensure!(
            item > 0 && images.len() % item == 0,
            "{} bytes are not whole images of {item} bytes",
            images.len()
        );
        let prepared = self.prepare_eval();
        let chunks: Vec<Vec<f32>> = images
            .par_chunks(EVAL_CHUNK * item)
            .map(|chunk| {
                let x = self.input_batch(chunk)?;
                Ok(self.forward_eval(x, &prepared, true, |_, _| {}).data)
            })
            .collect::<Result<_>>()?;
        Ok(chunks.concat())
    }

    /// Mean cross-entropy and accuracy of eval-mode predictions on `images` / `labels`.
    ///
    /// # Errors
    /// As [`Model::logits`].
    pub fn evaluate(&self, images: &[u8], labels: &[u8]) -> Result<(f32, f32)> {
        let logits = self.logits(images)?;
        let (loss, correct) = cross_entropy(&logits, labels, self.spec.classes(), None);
        Ok((loss, correct as f32 / labels.len().max(1) as f32))
    }

    /// `λ₂·Σw² + λ₁·Σ|w|` over the kernels (Keras' regularisation loss).
    pub fn regularisation(&self, l2: f32, l1: f32) -> f32 {
        if l2 == 0.0 && l1 == 0.0 {
            return 0.0;
        }
        let mut sum = 0.0f64;
        for p in self
            .layers
            .iter()
            .flat_map(Layer::params)
            .filter(|p| p.kernel)
        {
            for &w in &p.value {
                sum += f64::from(l2) * f64::from(w * w) + f64::from(l1) * f64::from(w.abs());
            }
        }
        sum as f32
    }

    /// Every stored float in a fixed order: per layer its trainable tensors, then batch norm's
    /// moving mean and variance.
    pub fn values(&self) -> Vec<&[f32]> {
        let mut out: Vec<&[f32]> = Vec::new();
        for layer in &self.layers {
            out.extend(
                layer
                    .params()
                    .into_iter()
                    .map(|p: &Param| p.value.as_slice()),
            );
            if let Layer::BatchNorm(b) = layer {
                out.push(&b.moving_mean);
                out.push(&b.moving_var);
            }
        }
        out
    }

    /// Mutable [`Model::values`], same order.
    pub fn values_mut(&mut self) -> Vec<&mut Vec<f32>> {
        let mut out: Vec<&mut Vec<f32>> = Vec::new();
        for layer in &mut self.layers {
            match layer {
                Layer::Conv(c) => out.extend([&mut c.kernel.value, &mut c.bias.value]),
                Layer::Depthwise(d) => out.extend([&mut d.kernel.value, &mut d.bias.value]),
                Layer::Dense(d) => out.extend([&mut d.kernel.value, &mut d.bias.value]),
                Layer::BatchNorm(b) => out.extend([
                    &mut b.gamma.value,
                    &mut b.beta.value,
                    &mut b.moving_mean,
                    &mut b.moving_var,
                ]),
                _ => {}
            }
        }
        out
    }
}

/// Mean softmax cross-entropy of `logits` `(n, classes)` against `labels` and the number of
/// correct argmax predictions. With `grad`, also writes `∂loss/∂logits = (p − onehot)/n`.
pub fn cross_entropy(
    logits: &[f32],
    labels: &[u8],
    classes: usize,
    grad: Option<&mut [f32]>,
) -> (f32, usize) {
    let n = labels.len().max(1);
    let (loss, correct) = cross_entropy_sum(logits, labels, classes, n, grad);
    ((loss / n as f64) as f32, correct)
}

/// Summed softmax cross-entropy of `logits` `(labels.len(), classes)` and the number of correct
/// argmax predictions. With `grad`, also writes `(p − onehot)/n`: the gradient of the mean loss
/// over a batch of `n` images of which these are a part.
pub fn cross_entropy_sum(
    logits: &[f32],
    labels: &[u8],
    classes: usize,
    n: usize,
    mut grad: Option<&mut [f32]>,
) -> (f64, usize) {
    let mut loss = 0.0f64;
    let mut correct = 0;
    for (i, (row, &label)) in logits.chunks(classes).zip(labels).enumerate() {
        let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let sum: f32 = row.iter().map(|v| (v - max).exp()).sum();
        let label = usize::from(label);
        loss += f64::from(sum.ln() - (row[label] - max));
        let best = row
            .iter()
            .enumerate()
            .fold(0, |b, (j, v)| if *v > row[b] { j } else { b });
        correct += usize::from(best == label);
        if let Some(g) = grad.as_deref_mut() {
            for (j, (g, v)) in g[i * classes..][..classes].iter_mut().zip(row).enumerate() {
                let p = (v - max).exp() / sum;
                *g = (p - f32::from(u8::from(j == label))) / n as f32;
            }
        }
    }
    (loss, correct)
}

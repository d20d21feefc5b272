//! Mini-batch training of a generic [`Model`]: softmax cross-entropy, Adam (Keras 3 defaults
//! and update rule), optional L2/L1 on the kernels, reshuffling every epoch, validation after
//! each epoch, and early stopping on validation loss that restores the best epoch's weights.
//!
//! Deterministic: the same data, spec and config give bit-identical weights whatever the thread
//! count (fixed chunking inside the layers, dropout masks keyed by seed, step and layer).

use super::layers::{Layer, Prepared, Tensor, Trace};
use super::model::{cross_entropy_sum, Model};
use super::observer::{EpochMetrics, FitObserver, Interrupted};
use super::residual::{Pending, Saved};
use super::spec::Spec;
use crate::data::Dataset;
use anyhow::{ensure, Context, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rayon::prelude::*;
use std::time::Instant;

/// Keras' Adam β₁.
const BETA_1: f32 = 0.9;
/// Keras' Adam β₂.
const BETA_2: f32 = 0.999;
/// `1 − β₁` as Keras has it: computed in double precision (Python floats), then rounded to
/// f32 (0.1, where `1.0f32 − 0.9f32` is 0.100000024).
const ONE_MINUS_BETA_1: f32 = (1.0 - 0.9f64) as f32;
/// `1 − β₂` as Keras has it (0.001, where `1.0f32 − 0.999f32` is 0.0009999871: 1.3·10⁻⁵ less).
const ONE_MINUS_BETA_2: f32 = (1.0 - 0.999f64) as f32;
/// Keras' Adam ε (added to `√v`).
const EPSILON: f32 = 1e-7;
/// Parameters per parallel task of the Adam step.
const ADAM_BLOCK: usize = 16_384;
/// ChaCha stream of the epoch shuffles.
const SHUFFLE_STREAM: u64 = 1;
/// Images per chunk of a training step: a chunk goes through every layer, forward and back,
/// before the next one, so its activations stay in cache.
const STEP_CHUNK: usize = 8;
/// Models with more parameters than this take chunks of twice [`STEP_CHUNK`] images (each chunk
/// streams the weights through the cache, which then costs more than the larger activations)
/// and half as many parts (each part zeroes and sums a copy of the gradients).
const LARGE_MODEL: usize = 1 << 18;
/// Most parts a batch is split into: parts run in parallel, each with its own gradients.
const MAX_PARTS: usize = 8;

/// Hyper-parameters of [`fit`].
#[derive(Clone, Debug)]
pub struct ArchFitConfig {
    /// Passes over the training set (at most, with early stopping).
    pub epochs: usize,
    /// Images per gradient step; the last, partial batch of an epoch is used too.
    pub batch_size: usize,
    /// Adam learning rate.
    pub learning_rate: f32,
    /// Seeds initialisation, shuffling and dropout.
    pub seed: u64,
    /// Worker threads; 0 uses every core. Does not change the result.
    pub threads: usize,
    /// Train on only the first `n` training images.
    pub train_limit: Option<usize>,
    /// L2 factor: the loss gains `l2·Σw²` over every kernel.
    pub l2: f32,
    /// L1 factor: the loss gains `l1·Σ|w|` over every kernel.
    pub l1: f32,
    /// Stop once validation loss has not improved for this many epochs, then restore the
    /// weights of the best epoch. `None` trains every epoch and keeps the last weights.
    pub patience: Option<usize>,
}

impl Default for ArchFitConfig {
    /// The tutorial's settings: 6 epochs of batch 128 at learning rate 0.001, seed 1, no
    /// regularisation, no early stopping.
    fn default() -> Self {
        Self {
            epochs: 6,
            batch_size: 128,
            learning_rate: 0.001,
            seed: 1,
            threads: 0,
            train_limit: None,
            l2: 0.0,
            l1: 0.0,
            patience: None,
        }
    }
}

/// What [`fit`] returns.
#[derive(Clone, Debug)]
pub struct ArchFit {
    /// The trained model (the best epoch's, with early stopping).
    pub model: Model,
    /// Metrics of every epoch run.
    pub epochs: Vec<EpochMetrics>,
    /// The epoch (from 1) whose weights `model` holds.
    pub best_epoch: usize,
    /// Whether early stopping ended the fit before the last epoch.
    pub stopped_early: bool,
}

/// Keras 3's Adam over a model's trainable tensors: its moments and step count.
///
/// Step `t` updates `m += (g − m)·(1 − β₁)`, `v += (g² − v)·(1 − β₂)` and
/// `w −= lr_t·m / (√v + ε)` with `lr_t = lr·√(1 − β₂ᵗ) / (1 − β₁ᵗ)`: ε is added to `√v`, and `v`
/// is not bias-corrected on its own (Keras' `Adam.update_step`).
#[derive(Clone, Debug)]
pub struct Adam {
    lr: f32,
    steps: u32,
    moments: Vec<(Vec<f32>, Vec<f32>)>,
}

impl Adam {
    /// Zero moments for every trainable tensor of `model` ([`Layer::params`]), learning rate
    /// `lr`.
    pub fn new(lr: f32, model: &Model) -> Self {
        let moments = model
            .layers
            .iter()
            .flat_map(Layer::params)
            .map(|p| (vec![0.0; p.value.len()], vec![0.0; p.value.len()]))
            .collect();
        Self {
            lr,
            steps: 0,
            moments,
        }
    }

    /// One step on every trainable tensor of `model` (the one given to [`Adam::new`]) from the
    /// gradients its last [`forward_backward`] left, adding the L2/L1 gradient
    /// `2·l2·w + l1·sign(w)` to kernels (`sign(0) = 0`, as TensorFlow's).
    pub fn step(&mut self, model: &mut Model, l2: f32, l1: f32) {
        self.steps += 1;
        // In f32, as Keras computes it.
        let t = self.steps as f32;
        let lr_t = self.lr * (1.0 - BETA_2.powf(t)).sqrt() / (1.0 - BETA_1.powf(t));
        let params = model.layers.iter_mut().flat_map(Layer::params_mut);
        for (p, (m, v)) in params.zip(&mut self.moments) {
            let regularise = p.kernel && (l2 != 0.0 || l1 != 0.0);
            // Element-wise, so splitting into blocks does not change the result.
            p.value
                .par_chunks_mut(ADAM_BLOCK)
                .zip(p.grad.par_chunks(ADAM_BLOCK))
                .zip(m.par_chunks_mut(ADAM_BLOCK))
                .zip(v.par_chunks_mut(ADAM_BLOCK))
                .for_each(|(((w, g), m), v)| {
                    for (((w, g), m), v) in w.iter_mut().zip(g).zip(m).zip(v) {
                        let mut g = *g;
                        if regularise {
                            g += 2.0 * l2 * *w + l1 * sign(*w);
                        }
                        *m += (g - *m) * ONE_MINUS_BETA_1;
                        *v += (g * g - *v) * ONE_MINUS_BETA_2;
                        *w -= lr_t * *m / (v.sqrt() + EPSILON);
                    }
                });
        }
    }
}

/// What [`EarlyStopping::epoch_end`] says of an epoch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The best epoch so far: keep its weights (they are the ones restored at the end).
    Best,
    /// Not the best, but patience is not exhausted: train on.
    Continue,
    /// Patience is exhausted: stop, and restore the best epoch's weights.
    Stop,
}

/// Keras' `EarlyStopping(monitor="val_loss", patience=p, min_delta=0,
/// restore_best_weights=True)`, as [`fit`] applies it after every epoch.
///
/// An epoch is the best so far when its validation loss (with the regularisation, as Keras
/// reports `val_loss`) is strictly below every earlier epoch's (the first epoch always is; a
/// tie is not an improvement); training stops after `p` epochs in a row without one (`p = 0`
/// acts as 1: Keras stops at the first epoch that does not improve); the weights restored at
/// the end, stopped or not, are those of the best epoch.
#[derive(Clone, Debug)]
pub struct EarlyStopping {
    patience: usize,
    /// The best loss so far and its epoch.
    best: Option<(f32, usize)>,
}

impl EarlyStopping {
    /// Stops after `patience` epochs without improvement.
    pub fn new(patience: usize) -> Self {
        Self {
            patience,
            best: None,
        }
    }

    /// Judges epoch `epoch` (from 1) by its validation loss.
    pub fn epoch_end(&mut self, epoch: usize, val_loss: f32) -> Verdict {
        match self.best {
            Some((best, at)) if val_loss >= best || val_loss.is_nan() => {
                if epoch - at >= self.patience.max(1) {
                    Verdict::Stop
                } else {
                    Verdict::Continue
                }
            }
            _ => {
                self.best = Some((val_loss, epoch));
                Verdict::Best
            }
        }
    }
}

/// The sign of `w` as TensorFlow's gradient of `|w|` has it: 0 at ±0 (where `f32::signum`
/// gives ±1), so L1 leaves a weight of exactly 0 where the data leave it.
fn sign(w: f32) -> f32 {
    if w == 0.0 {
        0.0
    } else {
        w.signum()
    }
}

/// Where the dropout masks of a training step come from.
#[derive(Clone, Copy, Debug)]
pub enum Masks<'a> {
    /// Drawn from this key, as [`fit`] does (see [`Dropout`](super::layers::Dropout)).
    Drawn(u64),
    /// Given: for each layer of the model, in order, which values of the whole batch it keeps
    /// (NHWC, image after image, `true` keeps: the value is scaled by `1/(1 − rate)`); empty for
    /// the layers other than dropout. For reproducing another framework's masks.
    Given(&'a [Vec<bool>]),
}

/// One part of a batch in a training step: a trace per layer and its own gradients (as
/// [`Layer::backward`] fills them).
struct Part {
    traces: Vec<Trace>,
    grads: Vec<Vec<Vec<f32>>>,
}

impl Part {
    fn new(model: &Model) -> Self {
        Self {
            traces: model.layers.iter().map(|_| Trace::default()).collect(),
            grads: model.layers.iter().map(Layer::new_grads).collect(),
        }
    }

    /// Forward and backward over `images` (images `first..` of a batch of `n`), chunk by
    /// chunk; returns the summed loss and the correct predictions.
    #[allow(clippy::too_many_arguments)]
    fn run(
        &mut self,
        model: &Model,
        prepared: &[Prepared],
        images: &[u8],
        labels: &[u8],
        first: usize,
        chunk: usize,
        n: usize,
        masks: Masks<'_>,
    ) -> Result<(f64, usize)> {
        self.grads.iter_mut().flatten().for_each(|g| g.fill(0.0));
        let item = model.spec.input.len();
        let classes = model.spec.classes();
        let (mut loss, mut correct) = (0.0, 0);
        for (c, (images, labels)) in images
            .chunks(chunk * item)
            .zip(labels.chunks(chunk))
            .enumerate()
        {
            let mut x = model.input_batch(images)?;
            let mut saved = Saved::new(&model.spec);
            let mut index = 0;
            while let Some(layer) = model.layers.get(index) {
                let (trace, prep) = (&mut self.traces[index], &prepared[index]);
                match model.pooled_at(index) {
                    Some(conv) => {
                        saved.keep(index, &x);
                        x = conv.forward_pooled(x, Some(trace), Some(prep));
                        index += 2;
                    }
                    None => {
                        let at = first + c * chunk;
                        x = match saved.step(index, layer, x, Some(trace)) {
                            Ok(y) => y,
                            Err(x) => match (layer, masks) {
                                (Layer::Dropout(dropout), Masks::Given(keep)) => {
                                    dropout.forward_kept(x, &keep[index], at, trace)
                                }
                                (_, Masks::Drawn(key)) => {
                                    layer.forward_train(x, key, at, trace, prep)
                                }
                                (_, Masks::Given(_)) => layer.forward_train(x, 0, at, trace, prep),
                            },
                        };
                        index += 1;
                    }
                }
            }
            let mut grad = vec![0.0; x.data.len()];
            let (l, ok) = cross_entropy_sum(&x.data, labels, classes, n, Some(&mut grad));
            loss += l;
            correct += ok;
            let mut dy = Tensor { data: grad, ..x };
            let mut pending = Pending::new(&model.spec);
            let mut end = model.layers.len();
            while end > 0 {
                // A max pool fused into the convolution before it goes back with it.
                let layer = &model.layers[end - 1];
                let pooled = end.checked_sub(2).and_then(|i| model.pooled_at(i));
                let index = end - 1 - usize::from(pooled.is_some());
                let (trace, grads) = (&mut self.traces[index], &mut self.grads[index]);
                let prep = Some(&prepared[index]);
                let dx = match pooled {
                    Some(conv) => conv.backward_pooled(dy, index > 0, trace, grads, prep),
                    None => {
                        let input = model.spec.input_of(index);
                        match pending.backward(layer, dy, input, trace) {
                            Ok(dx) => Some(dx),
                            Err(dy) => layer.backward(dy, index > 0, input, trace, grads, prep),
                        }
                    }
                };
                match dx {
                    // With what residual blocks left for this tensor.
                    Some(dx) => dy = pending.collect(index, dx),
                    None => break,
                }
                end = index;
            }
        }
        Ok((loss, correct))
    }
}

/// What a training step keeps between steps: the parts of a batch.
#[derive(Default)]
pub struct Workspace {
    parts: Vec<Part>,
}

/// One training forward + backward on a batch of raw images: returns (mean loss without
/// regularisation, correct predictions) and leaves the gradients in the layers' parameters.
///
/// The batch is split into at most 8 parts of whole chunks of 8 images (4 parts of 16-image
/// chunks for a model of more than 2¹⁸ parameters; one part holding the whole
/// batch if a layer needs it, see [`Layer::needs_whole_batch`]); the parts run in parallel on
/// the current rayon pool and their gradients are summed in part order, so the result does
/// not depend on the thread count. Dropout masks are drawn for the whole batch from a key, or
/// given (see [`Masks`]).
///
/// # Errors
/// If `images` is not `labels.len()` images of the model's input, or given masks are not one
/// per layer with one flag per value of the batch for each dropout layer.
pub fn forward_backward(
    model: &mut Model,
    workspace: &mut Workspace,
    images: &[u8],
    labels: &[u8],
    masks: Masks<'_>,
) -> Result<(f32, usize)> {
    let n = labels.len();
    let item = model.spec.input.len();
    ensure!(
        images.len() == n * item,
        "{} bytes are not {n} images of {item} bytes",
        images.len()
    );
    if let Masks::Given(keep) = masks {
        ensure!(
            keep.len() == model.layers.len(),
            "{} dropout masks given for {} layers",
            keep.len(),
            model.layers.len()
        );
        for (index, (layer, keep)) in model.layers.iter().zip(keep).enumerate() {
            let values = match layer {
                Layer::Dropout(_) => n * model.spec.input_of(index).len(),
                _ => 0,
            };
            ensure!(
                keep.len() == values,
                "layer {index}'s given mask has {} values, not {values}",
                keep.len()
            );
        }
    }
    if n == 0 {
        return Ok((0.0, 0));
    }
    let whole = model.layers.iter().any(Layer::needs_whole_batch);
    let (chunk, part_len) = if whole {
        (n, n)
    } else {
        let (step, parts) = if model.trainable_count() > LARGE_MODEL {
            (2 * STEP_CHUNK, MAX_PARTS / 2)
        } else {
            (STEP_CHUNK, MAX_PARTS)
        };
        let chunks = n.div_ceil(step);
        (step, chunks.div_ceil(parts) * step)
    };
    let count = n.div_ceil(part_len);
    while workspace.parts.len() < count {
        workspace.parts.push(Part::new(model));
    }
    let parts = &mut workspace.parts[..count];
    let shared: &Model = model;
    let prepared: Vec<Prepared> = shared.layers.par_iter().map(Layer::prepare).collect();
    let results: Vec<Result<(f64, usize)>> = parts
        .par_iter_mut()
        .zip(images.par_chunks(part_len * item))
        .zip(labels.par_chunks(part_len))
        .enumerate()
        .map(|(p, ((part, images), labels))| {
            part.run(
                shared,
                &prepared,
                images,
                labels,
                p * part_len,
                chunk,
                n,
                masks,
            )
        })
        .collect();
    let (mut loss, mut correct) = (0.0f64, 0);
    for result in results {
        let (l, ok) = result?;
        loss += l;
        correct += ok;
    }
    let (first, rest) = parts.split_at_mut(1);
    let first = &mut first[0];
    for (index, layer) in model.layers.iter_mut().enumerate() {
        layer.update_moving_statistics(&first.traces[index]);
        for (j, sum) in first.grads[index].iter_mut().enumerate() {
            // Element-wise in part order, so splitting into blocks does not change the result.
            sum.par_chunks_mut(ADAM_BLOCK)
                .enumerate()
                .for_each(|(b, sum)| {
                    for part in rest.iter() {
                        let other = &part.grads[index][j][b * ADAM_BLOCK..][..sum.len()];
                        for (s, o) in sum.iter_mut().zip(other) {
                            *s += o;
                        }
                    }
                });
        }
        layer.set_grads(&first.grads[index]);
    }
    Ok(((loss / n as f64) as f32, correct))
}

/// An estimate of the memory [`fit`] takes for `spec` with batches of `batch_size` images, in
/// bytes: its float parameters four times (values, gradients and Adam's two moments) and the
/// float input and outputs of every layer for one batch. Checked before training, so that an
/// architecture too large for the machine is refused in words instead of aborting on a failed
/// allocation.
pub fn training_bytes(spec: &Spec, batch_size: usize) -> u128 {
    let params = spec.total_params() as u128;
    let activations: u128 = std::iter::once(&spec.input)
        .chain(&spec.shapes)
        .map(|shape| shape.len() as u128)
        .sum();
    4 * (4 * params + activations * batch_size as u128)
}

/// What [`validate`] measures.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Validation {
    /// Keras' `val_loss`, which [`EarlyStopping`] judges: the mean cross-entropy in inference
    /// mode plus the regularisation `l2·Σw² + l1·Σ|w|` of the kernels.
    pub loss: f32,
    /// The mean cross-entropy alone.
    pub data_loss: f32,
    /// The fraction of images whose largest logit is their label's.
    pub accuracy: f32,
}

/// `model` on a validation set as [`fit`] measures it after every epoch: inference mode (no
/// dropout, batch norm's moving statistics).
///
/// # Errors
/// As [`Model::evaluate`].
pub fn validate(model: &Model, set: &Dataset, l2: f32, l1: f32) -> Result<Validation> {
    let (data_loss, accuracy) = model.evaluate(&set.images, &set.labels)?;
    Ok(Validation {
        loss: data_loss + model.regularisation(l2, l1),
        data_loss,
        accuracy,
    })
}

/// A training loss above this many times the loss of a uniform guess (`ln classes`) means the
/// fit has diverged: a model that bad is no longer learning.
const DIVERGED: f64 = 100.0;

/// Refuses a loss that is not finite, or (`mean` over an epoch) far above a uniform guess's:
/// the fit has diverged, almost always from too large a learning rate.
fn check_converging(
    loss: f64,
    mean: bool,
    epoch: usize,
    config: &ArchFitConfig,
    classes: usize,
) -> Result<()> {
    let guess = (classes.max(2) as f64).ln();
    let diverged = !loss.is_finite() || (mean && loss > DIVERGED * guess);
    ensure!(
        !diverged,
        "training diverged in epoch {epoch}: the loss is {loss:.4e}{} (a uniform guess scores {guess:.2}); \
         try a smaller learning rate than --lr {} (the default is 0.001)",
        if loss.is_finite() { "" } else { ", not a number" },
        config.learning_rate
    );
    Ok(())
}

/// Trains a freshly initialised model of `spec` on `train`, validating on `validation` after
/// every epoch.
///
/// # Errors
/// An unusable configuration, empty or mis-shaped data, a label outside the classes, a thread
/// pool that cannot start, a diverging fit (a loss that is not finite, or over an epoch a
/// hundred times a uniform guess's), or [`Interrupted`] if the observer asked to stop.
pub fn fit(
    spec: &Spec,
    train: &Dataset,
    validation: &Dataset,
    config: &ArchFitConfig,
    observer: &mut (dyn FitObserver + Send),
) -> Result<ArchFit> {
    ensure!(config.epochs > 0, "epochs must be at least 1");
    ensure!(config.batch_size > 0, "batch size must be at least 1");
    ensure!(
        config.learning_rate.is_finite() && config.learning_rate > 0.0,
        "learning_rate (--lr) must be a positive number, got {}",
        config.learning_rate
    );
    ensure!(
        config.l2 >= 0.0 && config.l1 >= 0.0 && config.l2.is_finite() && config.l1.is_finite(),
        "--l2 and --l1 must be finite and non-negative"
    );
    let item = spec.input.len();
    for (name, set) in [("training", train), ("validation", validation)] {
        ensure!(!set.is_empty(), "the {name} set is empty");
        ensure!(
            set.pixels_per_image() == item && set.images.len() == set.len() * item,
            "the {name} set's images are {}×{}, the spec's input is {}",
            set.rows,
            set.cols,
            spec.input
        );
        ensure!(
            set.labels.iter().all(|&l| usize::from(l) < spec.classes()),
            "the {name} set has a label outside the spec's {} classes",
            spec.classes()
        );
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(config.threads)
        .build()
        .context("cannot start the training threads")?;
    pool.install(|| fit_on_pool(spec, train, validation, config, observer))
}

fn fit_on_pool(
    spec: &Spec,
    train: &Dataset,
    validation: &Dataset,
    config: &ArchFitConfig,
    observer: &mut (dyn FitObserver + Send),
) -> Result<ArchFit> {
    let item = spec.input.len();
    let n = config.train_limit.unwrap_or(usize::MAX).min(train.len());
    let mut model = Model::glorot_uniform(spec, config.seed);
    let mut adam = Adam::new(config.learning_rate, &model);
    let mut workspace = Workspace::default();
    let mut shuffle = ChaCha8Rng::seed_from_u64(config.seed);
    shuffle.set_stream(SHUFFLE_STREAM);
    let mut order: Vec<usize> = (0..n).collect();
    let batches = n.div_ceil(config.batch_size);
    let mut history = Vec::new();
    let mut stopping = config.patience.map(EarlyStopping::new);
    let mut best: Option<(usize, Model)> = None;
    let mut step: u64 = 0;
    let mut stopped_early = false;
    for epoch in 1..=config.epochs {
        let start = Instant::now();
        order.shuffle(&mut shuffle);
        let (mut loss_sum, mut correct, mut seen) = (0.0f64, 0usize, 0usize);
        // The loss without regularisation, for the divergence check.
        let mut data_loss = 0.0f64;
        for (b, indices) in order.chunks(config.batch_size).enumerate() {
            let mut images = Vec::with_capacity(indices.len() * item);
            let mut labels = Vec::with_capacity(indices.len());
            for &i in indices {
                images.extend_from_slice(&train.images[i * item..][..item]);
                labels.push(train.labels[i]);
            }
            let key = config.seed ^ (step + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
            let reg = model.regularisation(config.l2, config.l1);
            let masks = Masks::Drawn(key);
            let (loss, ok) = forward_backward(&mut model, &mut workspace, &images, &labels, masks)?;
            check_converging(f64::from(loss), false, epoch, config, spec.classes())?;
            data_loss += f64::from(loss) * indices.len() as f64;
            adam.step(&mut model, config.l2, config.l1);
            step += 1;
            loss_sum += f64::from(loss + reg) * indices.len() as f64;
            correct += ok;
            seen += indices.len();
            observer.batch_done(
                epoch,
                b + 1,
                batches,
                (loss_sum / seen as f64) as f32,
                correct as f32 / seen as f32,
            );
            if observer.should_stop() {
                return Err(Interrupted { epoch }.into());
            }
        }
        check_converging(data_loss / seen as f64, true, epoch, config, spec.classes())?;
        let val = validate(&model, validation, config.l2, config.l1)?;
        // The weights after the epoch's last step, which the training loss has not seen yet.
        check_converging(
            f64::from(val.data_loss),
            true,
            epoch,
            config,
            spec.classes(),
        )?;
        let val_loss = val.loss;
        let metrics = EpochMetrics {
            loss: (loss_sum / seen as f64) as f32,
            acc: correct as f32 / seen as f32,
            val_loss,
            val_acc: val.accuracy,
            seconds: start.elapsed().as_secs_f64(),
        };
        observer.epoch_done(epoch, config.epochs, &metrics);
        history.push(metrics);
        if let Some(stopping) = &mut stopping {
            match stopping.epoch_end(epoch, val_loss) {
                Verdict::Best => best = Some((epoch, model.clone())),
                Verdict::Continue => {}
                Verdict::Stop => {
                    stopped_early = epoch < config.epochs;
                    break;
                }
            }
        }
    }
    let last = history.len();
    let (model, best_epoch) = match best {
        Some((epoch, model)) => (model, epoch),
        None => (model, last),
    };
    Ok(ArchFit {
        model,
        epochs: history,
        best_epoch,
        stopped_early,
    })
}

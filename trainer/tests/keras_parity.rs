//! Parity with real Keras (issue 14): the trainer's own training step and Adam, run on the
//! golden cases that `tools/keras-golden/golden.py` recorded from TensorFlow 2.21 / Keras 3.15
//! (`cargo xtask keras-golden` regenerates them; no Python is needed here).
//!
//! Each case starts from the same weights, trains on the same 256 MNIST images in the same
//! order (two batches of 128, in turn) with the same dropout masks (and, for `strided-l1l2` and
//! `dense-l1-zeros`, the same L1/L2 factors), and compares the loss of every step, the
//! gradients of step 1, every weight (batch norm's moving statistics included) and the
//! validation loss (Keras' `evaluate`, against `fit::validate`) after the steps the case keeps.
//! The initial weights and the masks come from the portable SplitMix64 stream the script uses
//! (`uniforms` below), checked against the script's checksums first.
//!
//! Errors are relative per tensor, at the scale of its layer (see [`compare`]).
//!
//! Early stopping is checked against Keras' own `EarlyStopping` callback on fixed sequences of
//! validation losses (`tests/keras-golden/early-stopping.json`).

use serde_json::Value;
use std::path::{Path, PathBuf};
use trainer::arch::fit::{forward_backward, validate, Workspace};
use trainer::arch::layers::Layer;
use trainer::arch::{Adam, EarlyStopping, Masks, Model, Spec, Verdict};

/// Step 1's loss and gradients.
const TOLERANCE_STEP1: f64 = 1e-5;
/// Every later step's loss.
const TOLERANCE_LOSS: f64 = 1e-3;

/// How close the weights must be after each kept step of a case: `(step, tolerance)`.
///
/// Step 1 of two-blocks is allowed 10⁻⁴: Adam's first step is `lr·g/(|g| + ε/√(1 − β₂))`, so for
/// a gradient element within a few times `ε/√(1 − β₂)` ≈ 3·10⁻⁶ of zero its rounding error
/// (about 10⁻⁷ of a sum over a batch of convolution windows, in either framework's order) goes
/// into the step at up to a quarter of its relative size: an element of two-blocks' second
/// convolution at 9.5·10⁻⁶ moves 0.7 % differently, 5·10⁻⁵ of its layer's weights. Keras
/// itself, with TensorFlow's oneDNN kernels on instead of off (another summation order),
/// differs from its own golden run by 1.9·10⁻⁵ there.
///
/// Two-blocks after 50 steps is allowed 2·10⁻²: its batch norm and ReLUs amplify rounding
/// differences, and Keras with oneDNN on differs from itself by 6.7·10⁻³ there (4.8·10⁻³ on
/// the first convolution) — the comparison at step 10 is the sharp one. Strided-l1l2 after 30
/// steps: Keras against itself 1.8·10⁻³, allowed 5·10⁻³.
///
/// Pool-norm (batch norm after a pool, no bias to cancel) stays within 7.5·10⁻⁵ to step 30;
/// dense-l1-zeros (no batch norm, no convolution) within 10⁻⁶.
///
/// Step 1's gradients of the batch-norm cases are held to 10⁻⁵ of Keras' float64 gradients,
/// and to 10⁻⁵ plus Keras' own float32 error of its float32 ones: there the trainer is the more
/// accurate (two-blocks 1.5·10⁻⁶ from float64, Keras' float32 6.5·10⁻⁶; strided-l1l2 2.0·10⁻⁶
/// against 1.4·10⁻⁵).
fn weight_tolerances(case: &str) -> &'static [(usize, f64)] {
    match case {
        "tutorial" => &[(1, 1e-5), (50, 1e-3)],
        "two-blocks" => &[(1, 1e-4), (10, 1e-3), (50, 2e-2)],
        "dense-l1-zeros" => &[(1, 1e-5), (10, 1e-4), (30, 1e-3)],
        "pool-norm" => &[(1, 1e-4), (10, 1e-3), (30, 1e-3)],
        _ => &[(1, 1e-4), (10, 1e-3), (30, 5e-3)],
    }
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;
const KIND_INIT: u64 = 1;
const KIND_DROPOUT: u64 = 2;

/// SplitMix64's finaliser.
fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// `mix(seed)`, then `mix(key ^ word)` for each word (the script's `stream_key`).
fn stream_key(seed: u64, words: &[u64]) -> u64 {
    words.iter().fold(mix(seed), |key, &w| mix(key ^ w))
}

/// `n` uniforms in `[0, 1)`: `(mix(key + (i + 1)·GOLDEN) >> 40) / 2²⁴` (the script's `uniforms`).
fn uniforms(key: u64, n: usize) -> impl Iterator<Item = f32> {
    (1..=n as u64).map(move |i| {
        let z = mix(key.wrapping_add(i.wrapping_mul(GOLDEN)));
        ((z >> 40) as f64 / f64::from(1u32 << 24)) as f32
    })
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the trainer crate sits in the workspace")
        .to_path_buf()
}

fn read_f32(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    bytes
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

fn max_abs(values: &[f32]) -> f64 {
    values
        .iter()
        .map(|v| f64::from(v.abs()))
        .fold(0.0, f64::max)
}

/// Compares `ours` with the golden tensors in `flat` (all of `tensors`, or their trainable
/// ones for gradients): each tensor's error is `max |ours − keras|` over the largest Keras
/// magnitude among its layer's tensors, so that a bias starting at zero is measured at the
/// scale of its layer. Panics above `tolerance`, naming the tensor; returns the largest error.
///
/// The bias of a convolution that feeds a batch norm has a gradient of zero up to rounding
/// (the normalisation subtracts the batch mean); Adam scales that rounding noise to steps of
/// the learning rate, so both frameworks move that bias, and with it the batch norm's moving
/// mean from step 2 on, by noise alone. That bias is checked to have a near-zero gradient here
/// (below 10⁻³ of the largest gradient of its layer, on both sides) and left out of the weight
/// comparisons, and so is the moving mean after `step` 1.
fn compare(
    what: &str,
    step: usize,
    ours: &[&[f32]],
    flat: &[f32],
    tensors: &[Tensor],
    tolerances: &[f64],
) -> f64 {
    let keras = split(what, flat, tensors);
    let gradients = what.starts_with("gradient");
    let mut worst = 0.0f64;
    for (i, t) in tensors.iter().enumerate() {
        let scale = layer_scale(&keras, tensors, i, step);
        if t.noise.at(step) {
            if gradients {
                let (a, b) = (max_abs(ours[i]) / scale, max_abs(keras[i]) / scale);
                eprintln!(
                    "  {what} {:<32} rounding noise: ours {a:.1e}, Keras {b:.1e} of the layer's",
                    t.name
                );
                assert!(a < 1e-3 && b < 1e-3, "{what}: {} is not near zero", t.name);
            } else {
                eprintln!(
                    "  {what} {:<32} moved by rounding noise, not compared",
                    t.name
                );
            }
            continue;
        }
        let (ours, keras) = (ours[i], keras[i]);
        let worst_at = (0..keras.len())
            .max_by(|&i, &j| {
                (ours[i] - keras[i])
                    .abs()
                    .total_cmp(&(ours[j] - keras[j]).abs())
            })
            .unwrap_or(0);
        let diff = f64::from((ours[worst_at] - keras[worst_at]).abs());
        let err = if diff == 0.0 { 0.0 } else { diff / scale };
        let tolerance = tolerances[i];
        eprintln!(
            "  {what} {:<32} relative error {err:.2e} (tolerance {tolerance:.1e}; worst at {worst_at}: {:e} against {:e})",
            t.name, ours[worst_at], keras[worst_at]
        );
        assert!(
            err <= tolerance,
            "{what}: {} differs from Keras by {err:.3e} (relative), above {tolerance:e}",
            t.name
        );
        worst = worst.max(err);
    }
    worst
}

/// `flat` cut into the tensors.
fn split<'a>(what: &str, flat: &'a [f32], tensors: &[Tensor]) -> Vec<&'a [f32]> {
    let mut out = Vec::new();
    let mut at = 0;
    for t in tensors {
        out.push(&flat[at..at + t.len]);
        at += t.len;
    }
    assert_eq!(at, flat.len(), "{what}: golden file size");
    out
}

/// The largest magnitude among the tensors of tensor `i`'s layer (those not moved by noise).
fn layer_scale(values: &[&[f32]], tensors: &[Tensor], i: usize, step: usize) -> f64 {
    tensors
        .iter()
        .zip(values)
        .filter(|(u, _)| u.layer == tensors[i].layer && !u.noise.at(step))
        .map(|(_, v)| max_abs(v))
        .fold(0.0, f64::max)
}

/// Batch norm's moving statistics after step 1, as updates: `ours − initial` against
/// `keras − initial`, over the largest Keras update. At the scale of the statistics themselves
/// (about 1) an update of 1 % of `0.01·(batch statistic − moving)` would pass unseen.
///
/// With Keras' float64 statistics (`float64`: the non-trainable tensors, in order), ours must
/// be within 10⁻⁵ of those, and within 10⁻⁵ plus Keras' own float32 error of Keras' float32
/// ones (as the gradients).
fn compare_moving_updates(
    initial: &[Vec<f32>],
    ours: &[&[f32]],
    flat: &[f32],
    tensors: &[Tensor],
    float64: Option<&[f32]>,
) {
    let (mut at, mut at64) = (0, 0);
    for ((t, initial), ours) in tensors.iter().zip(initial).zip(ours) {
        let keras = &flat[at..at + t.len];
        at += t.len;
        let exact = match (t.trainable, float64) {
            (true, _) => continue,
            (false, Some(f)) => {
                at64 += t.len;
                Some(&f[at64 - t.len..at64])
            }
            (false, None) => None,
        };
        if !t.name.contains("/moving_") {
            continue;
        }
        let update =
            |v: &[f32]| -> Vec<f32> { v.iter().zip(initial).map(|(v, i)| v - i).collect() };
        let error = |a: &[f32], b: &[f32]| -> f64 {
            let diff = a
                .iter()
                .zip(b)
                .map(|(a, b)| f64::from((a - b).abs()))
                .fold(0.0, f64::max);
            diff / max_abs(b).max(f64::MIN_POSITIVE)
        };
        let (ours, keras) = (update(ours), update(keras));
        let check = |reference: &[f32], against: &str, tolerance: f64| {
            let err = error(&ours, reference);
            eprintln!(
                "  step-1 update of {:<32} against {against}: relative error {err:.2e} (tolerance {tolerance:.1e})",
                t.name
            );
            assert!(
                err <= tolerance,
                "the step-1 update of {} differs from {against}'s by {err:.3e} (relative), above {tolerance:e}",
                t.name
            );
        };
        let mut tolerance = TOLERANCE_STEP1;
        if let Some(exact) = exact {
            let exact = update(exact);
            check(&exact, "Keras float64", TOLERANCE_STEP1);
            tolerance += error(&keras, &exact);
        }
        check(&keras, "Keras", tolerance);
    }
    if let Some(f) = float64 {
        assert_eq!(at64, f.len(), "float64 moving statistics: golden file size");
    }
}

#[derive(Clone)]
struct Tensor {
    name: String,
    len: usize,
    trainable: bool,
    init_sum: f64,
    /// Spec layer index.
    layer: usize,
    /// Moved by rounding noise alone (see [`compare`]).
    noise: Noise,
}

/// When a tensor is moved by rounding noise alone (see [`compare`]).
#[derive(Clone, Copy, PartialEq)]
enum Noise {
    Never,
    /// The bias of a convolution that feeds a batch norm.
    Always,
    /// The batch norm's moving mean: after the step-1 update it holds that bias.
    AfterStep1,
}

impl Noise {
    fn at(self, step: usize) -> bool {
        self == Noise::Always || (self == Noise::AfterStep1 && step > 1)
    }
}

/// Runs one golden case, panicking at the first comparison above its tolerance.
fn run_case(case: &str) {
    let dir = root().join("tests/keras-golden");
    let golden: Value = serde_json::from_str(
        &std::fs::read_to_string(dir.join(case).join("golden.json")).expect("golden.json"),
    )
    .expect("golden.json is JSON");
    let spec_path = root().join(golden["spec"].as_str().expect("spec"));
    let spec = Spec::load(spec_path.to_str().expect("UTF-8 path")).expect("spec");
    let seed = golden["seed"].as_u64().expect("seed");
    let batch = golden["batch_size"].as_u64().expect("batch_size") as usize;
    let steps = golden["steps"].as_u64().expect("steps") as usize;
    let lr = golden["learning_rate"].as_f64().expect("learning_rate") as f32;
    let l2 = golden["l2"].as_f64().expect("l2") as f32;
    let l1 = golden["l1"].as_f64().expect("l1") as f32;
    let zero_every = golden["zero_kernel_every"].as_u64().map(|k| k as usize);
    let moving_variance = golden["moving_variance"].as_f64().map(|v| v as f32);
    let losses: Vec<f64> = golden["losses"]
        .as_array()
        .expect("losses")
        .iter()
        .map(|v| v.as_f64().expect("a loss"))
        .collect();
    let mut tensors: Vec<Tensor> = golden["tensors"]
        .as_array()
        .expect("tensors")
        .iter()
        .map(|t| Tensor {
            name: t["name"].as_str().expect("name").to_string(),
            len: t["shape"]
                .as_array()
                .expect("shape")
                .iter()
                .map(|d| d.as_u64().expect("dim") as usize)
                .product(),
            trainable: t["trainable"].as_bool().expect("trainable"),
            init_sum: t["init_sum"].as_f64().expect("init_sum"),
            layer: 0,
            noise: Noise::Never,
        })
        .collect();
    let data = trainer::data::read_pair(
        &dir.join("train-images-idx3-ubyte.gz"),
        &dir.join("train-labels-idx1-ubyte.gz"),
    )
    .expect("golden images");
    let item = spec.input.len();

    // The script's initial weights: Glorot-uniform kernels from the portable stream.
    let mut model = Model::glorot_uniform(&spec, 0);
    for (index, layer) in model.layers.iter_mut().enumerate() {
        let (fan_in, fan_out) = match layer {
            Layer::BatchNorm(norm) => {
                if let Some(v) = moving_variance {
                    norm.moving_var.fill(v);
                }
                continue;
            }
            Layer::Conv(c) => (c.geom.taps(), c.geom.k * c.geom.k * c.geom.filters),
            Layer::Dense(d) => (d.inputs, d.bias.value.len()),
            _ => continue,
        };
        let limit = (6.0 / (fan_in + fan_out) as f64).sqrt();
        let key = stream_key(seed, &[KIND_INIT, index as u64]);
        let kernel = layer
            .params_mut()
            .into_iter()
            .find(|p| p.kernel)
            .expect("a kernel");
        let len = kernel.value.len();
        for (i, (w, u)) in kernel.value.iter_mut().zip(uniforms(key, len)).enumerate() {
            *w = ((2.0 * f64::from(u) - 1.0) * limit) as f32;
            if zero_every.is_some_and(|k| i % k == 0) {
                *w = 0.0;
            }
        }
    }
    // "layer <index> <type>/<variable>", as the script names them.
    let feeds_norm = |i: usize| {
        matches!(model.layers.get(i), Some(Layer::Conv(_)))
            && matches!(model.layers.get(i + 1), Some(Layer::BatchNorm(_)))
    };
    for t in &mut tensors {
        let (head, variable) = t.name.split_once('/').expect("layer/variable");
        t.layer = head
            .split(' ')
            .nth(1)
            .and_then(|i| i.parse().ok())
            .expect("a layer index");
        t.noise = if variable == "bias" && feeds_norm(t.layer) {
            Noise::Always
        } else if variable == "moving_mean" && t.layer > 0 && feeds_norm(t.layer - 1) {
            Noise::AfterStep1
        } else {
            Noise::Never
        };
    }
    let values = model.values();
    assert_eq!(values.len(), tensors.len(), "tensor count");
    let initial: Vec<Vec<f32>> = values.iter().map(|v| v.to_vec()).collect();
    for (v, t) in values.iter().zip(&tensors) {
        let sum: f64 = v.iter().map(|&x| f64::from(x)).sum();
        assert!(
            (sum - t.init_sum).abs() <= 1e-9 * (1.0 + t.init_sum.abs()),
            "{}: initial weights sum to {sum}, the script's to {}",
            t.name,
            t.init_sum
        );
    }
    let trainable: Vec<Tensor> = tensors.iter().filter(|t| t.trainable).cloned().collect();

    let file = |name: &Value| read_f32(&dir.join(case).join(name.as_str().expect("a file name")));
    let checkpoints: Vec<(usize, Vec<f32>)> = golden["weights"]
        .as_array()
        .expect("weights")
        .iter()
        .map(|w| (w["step"].as_u64().expect("step") as usize, file(&w["file"])))
        .collect();
    let evaluation_losses: Vec<(usize, f64)> = golden["evaluation_losses"]
        .as_array()
        .expect("evaluation_losses")
        .iter()
        .map(|e| {
            let step = e["step"].as_u64().expect("step") as usize;
            (step, e["loss"].as_f64().expect("loss"))
        })
        .collect();
    let tolerances = weight_tolerances(case);
    assert_eq!(
        evaluation_losses.iter().map(|e| e.0).collect::<Vec<_>>(),
        tolerances.iter().map(|t| t.0).collect::<Vec<_>>(),
        "the golden run evaluates after the steps the test compares"
    );
    assert_eq!(
        checkpoints.iter().map(|c| c.0).collect::<Vec<_>>(),
        tolerances.iter().map(|t| t.0).collect::<Vec<_>>(),
        "the golden run keeps the weights of the steps the test compares"
    );
    let mut adam = Adam::new(lr, &model);
    let mut workspace = Workspace::default();
    let batches = data.len() / batch;
    let mut worst_loss = 0.0f64;
    assert_eq!(losses.len(), steps, "one loss per step");
    for (step, &keras_loss) in losses.iter().enumerate() {
        let b = step % batches;
        let images = &data.images[b * batch * item..][..batch * item];
        let labels = &data.labels[b * batch..][..batch];
        let masks: Vec<Vec<bool>> = model
            .layers
            .iter()
            .enumerate()
            .map(|(index, layer)| match layer {
                Layer::Dropout(d) => {
                    let key = stream_key(seed, &[KIND_DROPOUT, index as u64, step as u64]);
                    let n = batch * spec.input_of(index).len();
                    uniforms(key, n).map(|u| u >= d.rate).collect()
                }
                _ => Vec::new(),
            })
            .collect();
        if step == 0 {
            for kept in golden["dropout_kept_step1"].as_array().expect("kept") {
                let layer = kept["layer"].as_u64().expect("layer") as usize;
                let ours = masks[layer].iter().filter(|&&k| k).count() as u64;
                assert_eq!(
                    ours,
                    kept["kept"].as_u64().expect("kept"),
                    "layer {layer}'s mask"
                );
            }
        }
        // Keras' loss holds the regularisation of the weights the step starts from.
        let regularisation = model.regularisation(l2, l1);
        let (loss, _) = forward_backward(
            &mut model,
            &mut workspace,
            images,
            labels,
            Masks::Given(&masks),
        )
        .expect("a training step");
        let loss = loss + regularisation;
        let err = (f64::from(loss) - keras_loss).abs() / keras_loss.abs();
        let tolerance = if step == 0 {
            TOLERANCE_STEP1
        } else {
            TOLERANCE_LOSS
        };
        eprintln!(
            "{case} step {}: loss {loss:.7} keras {:.7} relative error {err:.2e}",
            step + 1,
            keras_loss
        );
        assert!(
            err <= tolerance,
            "{case} step {}: loss {loss} against Keras' {}, relative error {err:.3e} above {tolerance:e}",
            step + 1,
            keras_loss
        );
        worst_loss = worst_loss.max(err);
        if step == 0 {
            let grads: Vec<&[f32]> = model
                .layers
                .iter()
                .flat_map(Layer::params)
                .map(|p| p.grad.as_slice())
                .collect();
            let keras = file(&golden["gradients_step1"]);
            let mut tolerances = vec![TOLERANCE_STEP1; trainable.len()];
            if !golden["gradients_step1_float64"].is_null() {
                // Where Keras computed the gradients in float64 too, ours must be within 10⁻⁵
                // of those, and within 10⁻⁵ plus Keras' own float32 error of Keras' float32.
                let exact = file(&golden["gradients_step1_float64"]);
                let e = compare(
                    "gradient (Keras float64)",
                    1,
                    &grads,
                    &exact,
                    &trainable,
                    &tolerances,
                );
                eprintln!(
                    "{case}: gradients at step 1 against float64: largest relative error {e:.2e}"
                );
                let (exact, keras) = (
                    split("float64", &exact, &trainable),
                    split("float32", &keras, &trainable),
                );
                for (i, tolerance) in tolerances.iter_mut().enumerate() {
                    let own = keras[i]
                        .iter()
                        .zip(exact[i])
                        .map(|(a, b)| f64::from((a - b).abs()))
                        .fold(0.0, f64::max);
                    *tolerance += own / layer_scale(&keras, &trainable, i, 1);
                }
            }
            let e = compare("gradient", 1, &grads, &keras, &trainable, &tolerances);
            eprintln!("{case}: gradients at step 1: largest relative error {e:.2e}");
        }
        adam.step(&mut model, l2, l1);
        if step == 0 {
            let keras = &checkpoints[0].1;
            let float64 = (!golden["moving_step1_float64"].is_null())
                .then(|| file(&golden["moving_step1_float64"]));
            compare_moving_updates(
                &initial,
                &model.values(),
                keras,
                &tensors,
                float64.as_deref(),
            );
        }
        let kept = checkpoints.iter().zip(tolerances);
        for ((_, keras), &(at, tolerance)) in kept.filter(|(c, _)| c.0 == step + 1) {
            let what = format!("weights after step {at}");
            let tolerances = vec![tolerance; tensors.len()];
            let e = compare(&what, at, &model.values(), keras, &tensors, &tolerances);
            eprintln!("{case}: {what}: largest relative error {e:.2e} (tolerance {tolerance:e})");
            // Keras' `val_loss` on the golden images against `fit`'s validation loss (what early
            // stopping judges), within the weights' tolerance.
            let keras = evaluation_losses
                .iter()
                .find(|e| e.0 == at)
                .map_or(f64::NAN, |e| e.1);
            let loss = validate(&model, &data, l2, l1).expect("a validation").loss;
            let err = (f64::from(loss) - keras).abs() / keras.abs();
            eprintln!(
                "{case}: evaluation loss after step {at}: {loss:.7} keras {keras:.7} relative error {err:.2e} (tolerance {tolerance:e})"
            );
            assert!(
                err <= tolerance,
                "{case}: the evaluation loss after step {at} is {loss} against Keras' {keras}, relative error {err:.3e} above {tolerance:e}"
            );
        }
    }
    eprintln!("{case}: losses: largest relative error {worst_loss:.2e}");
}

#[test]
fn tutorial_trains_as_keras_does_step_by_step() {
    run_case("tutorial");
}

#[test]
fn two_blocks_trains_as_keras_does_step_by_step() {
    run_case("two-blocks");
}

#[test]
fn strided_same_padded_with_l1_l2_trains_as_keras_does_step_by_step() {
    run_case("strided-l1l2");
}

#[test]
fn dense_with_zero_weights_and_l1_trains_as_keras_does_step_by_step() {
    run_case("dense-l1-zeros");
}

/// Early stopping against Keras' own `EarlyStopping(monitor="val_loss", patience=p,
/// restore_best_weights=True)`, which the golden script drove with fixed sequences of
/// validation losses as `model.fit` does: the same epochs run and the same epoch restored
/// (`fit` keeps the weights of the last [`Verdict::Best`] epoch and stops at [`Verdict::Stop`]).
#[test]
fn early_stopping_stops_and_restores_as_keras_does() {
    let path = root().join("tests/keras-golden/early-stopping.json");
    let golden: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("the file"))
        .expect("early-stopping.json is JSON");
    let cases = golden["cases"].as_array().expect("cases");
    assert!(cases.len() >= 10, "{} sequences", cases.len());
    for case in cases {
        let patience = case["patience"].as_u64().expect("patience") as usize;
        let losses: Vec<f32> = case["val_loss"]
            .as_array()
            .expect("val_loss")
            .iter()
            .map(|v| v.as_f64().expect("a loss") as f32)
            .collect();
        let mut stopping = EarlyStopping::new(patience);
        let (mut run, mut restored) = (0, 0);
        for (i, &loss) in losses.iter().enumerate() {
            let epoch = i + 1;
            run = epoch;
            match stopping.epoch_end(epoch, loss) {
                Verdict::Best => restored = epoch,
                Verdict::Continue => {}
                Verdict::Stop => break,
            }
        }
        let keras = (
            case["epochs_run"].as_u64().expect("epochs_run") as usize,
            case["restored_epoch"].as_u64().expect("restored_epoch") as usize,
        );
        eprintln!("patience {patience}, {losses:?}: ours {run} epochs, restores {restored}; Keras {keras:?}");
        assert_eq!(
            (run, restored),
            keras,
            "patience {patience}, validation losses {losses:?}: (epochs run, epoch restored)"
        );
    }
}

#[test]
fn batch_norm_after_a_pool_validates_as_keras_does() {
    run_case("pool-norm");
}

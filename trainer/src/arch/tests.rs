//! Gradient checks of every generic layer (central differences), a tiny fit, determinism and
//! checkpoint round trips.

use super::layers::{Layer, Mode, Prepared, Tensor, Trace};
use super::model::{cross_entropy, Model};
use super::observer::SilentObserver;
use super::spec::{Activation, LayerSpec, Padding, Shape, Spec, TUTORIAL};
use super::{checkpoint, fit, ArchFitConfig};
use crate::data::Dataset;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn random(len: usize, rng: &mut ChaCha8Rng) -> Vec<f32> {
    (0..len).map(|_| rng.gen_range(-1.0f32..1.0)).collect()
}

/// `Σ y·r` of a training forward (fixed dropout key), in f64.
fn loss(layer: &Layer, x: &Tensor, r: &[f32]) -> f64 {
    let y = layer.clone().forward(x.clone(), Mode::Train { key: 7 });
    y.data
        .iter()
        .zip(r)
        .map(|(a, b)| f64::from(*a) * f64::from(*b))
        .sum()
}

/// Checks the input gradient and every parameter gradient of `spec` on a random batch of
/// `n` inputs of `input` shape against central differences.
fn gradient_check(spec: LayerSpec, input: Shape, n: usize, seed: u64) {
    gradient_check_scaled(spec, input, n, seed, 1.0);
}

/// [`gradient_check`] with the inputs, biases, γ and β `scale` times larger: for a ReLU6,
/// large enough that some outputs are clipped at 6 and others not (checked).
fn gradient_check_scaled(spec: LayerSpec, input: Shape, n: usize, seed: u64, scale: f32) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut layer = Layer::new(&spec, 1, input);
    for p in layer.params_mut() {
        let values = random(p.value.len(), &mut rng);
        p.value = values
            .iter()
            .map(|v| {
                if p.kernel {
                    v * 0.5
                } else {
                    scale * (1.0 + 0.3 * v)
                }
            })
            .collect();
    }
    let (h, w, c) = input.hwc();
    let x = Tensor {
        n,
        h,
        w,
        c,
        data: random(n * h * w * c, &mut rng)
            .into_iter()
            .map(|v| v * scale)
            .collect(),
    };
    let y = layer.clone().forward(x.clone(), Mode::Train { key: 7 });
    if spec.activation() == Activation::Relu6 {
        let clipped = y.data.iter().filter(|&&v| v == 6.0).count();
        let between = y.data.iter().filter(|&&v| v > 0.0 && v < 6.0).count();
        let zero = y.data.iter().filter(|&&v| v == 0.0).count();
        assert!(
            clipped > 0 && between > 0 && zero > 0 && clipped + between + zero == y.data.len(),
            "{spec:?}: {clipped} outputs at 6, {between} inside, {zero} at 0 of {}",
            y.data.len()
        );
    }
    let r = random(y.data.len(), &mut rng);
    let mut trace = Trace::default();
    let out = layer.forward_train(x.clone(), 7, 0, &mut trace, &layer.prepare());
    assert_eq!(
        out, y,
        "a training forward that keeps a trace computes the same"
    );
    let mut grads = layer.new_grads();
    let dx = layer
        .backward(
            Tensor {
                data: r.clone(),
                ..out
            },
            true,
            input,
            &mut trace,
            &mut grads,
            None,
        )
        .expect("an input gradient");
    let mut trained = layer.clone();
    trained.set_grads(&grads);
    // Small enough that a nudge rarely moves a ReLU or pooling input across its kink
    // (one-channel convolutions have small outputs), large enough for f32 forward passes.
    let eps = 1e-3f32;
    let close = |analytic: f32, numeric: f64, what: &str| {
        let diff = (f64::from(analytic) - numeric).abs();
        assert!(
            diff <= 2e-3 + 2e-3 * numeric.abs(),
            "{spec:?} {what}: analytic {analytic} vs numeric {numeric}"
        );
    };
    for i in (0..x.data.len()).step_by((x.data.len() / 25).max(1)) {
        let (mut plus, mut minus) = (x.clone(), x.clone());
        plus.data[i] += eps;
        minus.data[i] -= eps;
        let numeric = (loss(&layer, &plus, &r) - loss(&layer, &minus, &r)) / f64::from(2.0 * eps);
        close(dx.data[i], numeric, &format!("dx[{i}]"));
    }
    let grads: Vec<Vec<f32>> = trained.params().iter().map(|p| p.grad.clone()).collect();
    for (t, grad) in grads.iter().enumerate() {
        for i in (0..grad.len()).step_by((grad.len() / 25).max(1)) {
            let nudge = |delta: f32| {
                let mut l = layer.clone();
                l.params_mut()[t].value[i] += delta;
                loss(&l, &x, &r)
            };
            let numeric = (nudge(eps) - nudge(-eps)) / f64::from(2.0 * eps);
            close(grad[i], numeric, &format!("param {t}[{i}]"));
        }
    }
}

fn spatial(h: usize, w: usize, c: usize) -> Shape {
    Shape::Spatial { h, w, c }
}

#[test]
fn conv_gradients_match_central_differences() {
    let conv = |kernel, stride, padding, activation| LayerSpec::Conv2d {
        filters: 3,
        kernel,
        stride,
        padding,
        activation,
    };
    gradient_check(
        conv(3, 1, Padding::Valid, Activation::Relu),
        spatial(6, 5, 2),
        3,
        1,
    );
    gradient_check(
        conv(3, 2, Padding::Same, Activation::None),
        spatial(7, 7, 2),
        2,
        2,
    );
    gradient_check(
        conv(4, 1, Padding::Same, Activation::None),
        spatial(5, 6, 1),
        2,
        3,
    );
    gradient_check(
        conv(2, 2, Padding::Valid, Activation::Relu),
        spatial(5, 5, 3),
        2,
        4,
    );
    // Runs of k·ic ≥ 32 input values are read in place from the image; windows over the
    // padding are copied.
    gradient_check(
        conv(2, 1, Padding::Valid, Activation::Relu),
        spatial(4, 5, 16),
        2,
        13,
    );
    gradient_check(
        conv(3, 2, Padding::Same, Activation::Relu),
        spatial(7, 6, 11),
        2,
        14,
    );
    gradient_check(
        conv(3, 1, Padding::Same, Activation::None),
        spatial(5, 5, 12),
        1,
        15,
    );
    // One input channel and a 2×2, 3×3 or 5×5 kernel: im2col by fixed-size window rows
    // (windows over the padding row by row).
    gradient_check(
        conv(3, 1, Padding::Valid, Activation::Relu),
        spatial(6, 7, 1),
        3,
        18,
    );
    gradient_check(
        conv(3, 2, Padding::Same, Activation::Relu),
        spatial(7, 6, 1),
        2,
        19,
    );
    gradient_check(
        conv(5, 1, Padding::Same, Activation::None),
        spatial(6, 6, 1),
        2,
        20,
    );
    gradient_check(
        conv(2, 1, Padding::Same, Activation::Relu),
        spatial(5, 4, 1),
        2,
        21,
    );
    // Strided windows inside the image: whole output rows of sliding windows.
    gradient_check(
        conv(3, 2, Padding::Valid, Activation::Relu),
        spatial(9, 8, 1),
        2,
        22,
    );
}

#[test]
fn dense_pool_dropout_and_flatten_gradients_match_central_differences() {
    let dense = |activation| LayerSpec::Dense {
        units: 4,
        activation,
    };
    gradient_check(dense(Activation::Relu), Shape::Flat(7), 3, 5);
    gradient_check(dense(Activation::None), Shape::Flat(5), 20, 6);
    gradient_check(LayerSpec::MaxPool2d { pool: 2 }, spatial(5, 4, 3), 2, 7);
    gradient_check(LayerSpec::MaxPool2d { pool: 3 }, spatial(6, 6, 1), 2, 8);
    gradient_check(LayerSpec::MaxPool2d { pool: 2 }, spatial(4, 5, 2), 2, 16);
    gradient_check(LayerSpec::MaxPool2d { pool: 2 }, spatial(3, 3, 2), 2, 17);
    // 2×2 windows of 32 channels: the fixed-size path.
    gradient_check(LayerSpec::MaxPool2d { pool: 2 }, spatial(4, 5, 32), 2, 23);
    gradient_check(LayerSpec::Dropout { rate: 0.5 }, spatial(3, 3, 2), 2, 9);
    gradient_check(LayerSpec::Flatten, spatial(2, 3, 2), 2, 10);
}

#[test]
fn depthwise_conv_gradients_match_central_differences() {
    let dw = |kernel, stride, padding, multiplier, activation| LayerSpec::DepthwiseConv2d {
        kernel,
        stride,
        padding,
        multiplier,
        activation,
    };
    gradient_check(
        dw(3, 1, Padding::Same, 1, Activation::Relu),
        spatial(5, 6, 3),
        3,
        31,
    );
    gradient_check(
        dw(3, 2, Padding::Same, 2, Activation::None),
        spatial(7, 6, 2),
        2,
        32,
    );
    gradient_check(
        dw(2, 1, Padding::Valid, 3, Activation::None),
        spatial(4, 5, 2),
        2,
        33,
    );
    gradient_check(
        dw(3, 2, Padding::Valid, 1, Activation::Relu),
        spatial(7, 7, 4),
        2,
        34,
    );
    gradient_check_scaled(
        dw(3, 1, Padding::Same, 2, Activation::Relu6),
        spatial(5, 5, 2),
        2,
        35,
        4.0,
    );
}

#[test]
fn average_pool_gradients_match_central_differences() {
    let avg = |pool, stride, padding| LayerSpec::AvgPool2d {
        pool,
        stride,
        padding,
    };
    gradient_check(avg(2, 2, Padding::Valid), spatial(5, 4, 3), 2, 41);
    // Overlapping windows, same padding (the padded positions not counted).
    gradient_check(avg(3, 2, Padding::Same), spatial(6, 5, 2), 2, 42);
    gradient_check(avg(3, 1, Padding::Same), spatial(4, 4, 1), 2, 43);
    // Global: one window over the whole map.
    gradient_check(avg(7, 7, Padding::Valid), spatial(7, 7, 4), 3, 44);
}

#[test]
fn average_pool_with_same_padding_averages_only_the_values_inside() {
    let layer = Layer::new(
        &LayerSpec::AvgPool2d {
            pool: 3,
            stride: 1,
            padding: Padding::Same,
        },
        0,
        spatial(2, 2, 1),
    );
    let x = Tensor {
        n: 1,
        h: 2,
        w: 2,
        c: 1,
        data: vec![1.0, 2.0, 3.0, 6.0],
    };
    // Every 3×3 window centred on a pixel of a 2×2 map holds all four values.
    let y = layer.forward(x, Mode::Eval);
    assert_eq!((y.h, y.w, y.data), (2, 2, vec![3.0; 4]));
}

#[test]
fn relu6_gradients_match_central_differences_where_outputs_clip_at_six() {
    gradient_check_scaled(
        LayerSpec::Conv2d {
            filters: 3,
            kernel: 3,
            stride: 1,
            padding: Padding::Same,
            activation: Activation::Relu6,
        },
        spatial(5, 5, 2),
        2,
        51,
        4.0,
    );
    gradient_check_scaled(
        LayerSpec::Dense {
            units: 6,
            activation: Activation::Relu6,
        },
        Shape::Flat(20),
        5,
        52,
        4.0,
    );
    gradient_check_scaled(
        LayerSpec::BatchNorm {
            activation: Activation::Relu6,
        },
        spatial(3, 2, 3),
        4,
        53,
        4.0,
    );
}

#[test]
fn batch_norm_gradients_match_central_differences() {
    let bn = |activation| LayerSpec::BatchNorm { activation };
    gradient_check(bn(Activation::None), spatial(3, 2, 3), 4, 11);
    gradient_check(bn(Activation::None), Shape::Flat(5), 6, 12);
    gradient_check(bn(Activation::Relu), spatial(3, 2, 3), 4, 13);
    gradient_check(bn(Activation::Relu), Shape::Flat(5), 6, 14);
}

#[test]
fn batch_norm_normalises_in_training_and_tracks_moving_statistics_like_keras() {
    let mut layer = Layer::new(
        &LayerSpec::BatchNorm {
            activation: Activation::None,
        },
        0,
        Shape::Flat(1),
    );
    let x = Tensor {
        n: 4,
        h: 1,
        w: 1,
        c: 1,
        data: vec![1.0, 2.0, 3.0, 6.0],
    };
    let mut trace = Trace::default();
    let y = layer.forward_train(x.clone(), 0, 0, &mut trace, &Prepared::default());
    layer.update_moving_statistics(&trace);
    // mean 3, biased variance 3.5
    let expected: Vec<f32> = [-2.0f32, -1.0, 0.0, 3.0]
        .iter()
        .map(|d| d / (3.5f32 + 1e-3).sqrt())
        .collect();
    for (a, b) in y.data.iter().zip(&expected) {
        assert!((a - b).abs() < 1e-6, "{a} vs {b}");
    }
    let Layer::BatchNorm(bn) = &layer else {
        unreachable!()
    };
    assert!((bn.moving_mean[0] - 0.03).abs() < 1e-6);
    assert!((bn.moving_var[0] - (0.99 + 0.035)).abs() < 1e-6);
    let eval = layer.forward(x, Mode::Eval);
    assert!((eval.data[0] - (1.0 - 0.03) / (1.025f32 + 1e-3).sqrt()).abs() < 1e-6);
}

#[test]
fn dropout_is_inverted_and_the_identity_in_eval() {
    let layer = Layer::new(&LayerSpec::Dropout { rate: 0.25 }, 3, Shape::Flat(40_000));
    let x = Tensor {
        n: 1,
        h: 1,
        w: 1,
        c: 40_000,
        data: vec![1.0; 40_000],
    };
    let y = layer.forward(x.clone(), Mode::Train { key: 5 });
    let kept = y.data.iter().filter(|v| **v != 0.0).count();
    assert!((29_400..30_600).contains(&kept), "{kept}");
    assert!(y
        .data
        .iter()
        .all(|v| *v == 0.0 || (*v - 1.0 / 0.75).abs() < 1e-6));
    assert_eq!(layer.forward(x.clone(), Mode::Eval), x);
}

#[test]
fn dropout_masks_follow_one_chacha_stream_whatever_the_blocks() {
    let len = 40_000;
    let layer = Layer::new(&LayerSpec::Dropout { rate: 0.3 }, 2, Shape::Flat(len));
    let x = Tensor {
        n: 1,
        h: 1,
        w: 1,
        c: len,
        data: vec![1.0; len],
    };
    let y = layer.forward(x.clone(), Mode::Train { key: 11 });
    // 0.7 is not a multiple of 2⁻⁸: 16 bits per value, kept below round(0.7·2¹⁶).
    assert_eq!(super::layers::mask_draw(0.7), (16, 45_875));
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    rng.set_stream(2);
    let mut words = vec![0u32; len / 2];
    rng.fill(&mut words[..]);
    for (i, v) in y.data.iter().enumerate() {
        let bits = (words[i / 2] >> (16 * (i % 2))) & 0xffff;
        let expected = if bits < 45_875 { 1.0 / 0.7 } else { 0.0 };
        assert_eq!(*v, expected, "value {i}");
    }
    // The same mask, drawn as a batch of 40 images in parts starting at images 0, 7 and 23.
    let item = len / 40;
    let mut parts = Vec::new();
    for (first, last) in [(0, 7), (7, 23), (23, 40)] {
        let part = Tensor {
            n: last - first,
            h: 1,
            w: 1,
            c: item,
            data: vec![1.0; (last - first) * item],
        };
        let mut trace = Trace::default();
        let out = layer.forward_train(part, 11, first, &mut trace, &Prepared::default());
        parts.extend(out.data);
    }
    assert_eq!(parts, y.data);
}

#[test]
fn dropout_masks_of_dyadic_rates_use_few_bits_and_keep_the_rate() {
    for (rate, bits) in [(0.5f32, 1), (0.25, 2), (0.125, 4), (0.375, 4)] {
        let (b, t) = super::layers::mask_draw(1.0 - rate);
        assert_eq!(b, bits, "rate {rate}");
        assert_eq!(f64::from(t) / f64::from(1u32 << b), f64::from(1.0 - rate));
        let len = 64_000;
        let layer = Layer::new(&LayerSpec::Dropout { rate }, 1, Shape::Flat(len));
        let x = Tensor {
            n: 1,
            h: 1,
            w: 1,
            c: len,
            data: vec![1.0; len],
        };
        let kept = layer
            .forward(x, Mode::Train { key: 3 })
            .data
            .iter()
            .filter(|v| **v != 0.0)
            .count() as f64
            / len as f64;
        // σ ≤ 0.002 for 64,000 draws: 0.01 is more than 4σ.
        assert!(
            (kept - f64::from(1.0 - rate)).abs() < 0.01,
            "rate {rate}: kept {kept}"
        );
    }
}

#[test]
fn cross_entropy_gradient_matches_central_differences() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let logits = random(3 * 4, &mut rng);
    let labels = [2u8, 0, 3];
    let mut grad = vec![0.0; 12];
    cross_entropy(&logits, &labels, 4, Some(&mut grad));
    for i in 0..12 {
        let at = |d: f32| {
            let mut l = logits.clone();
            l[i] += d;
            f64::from(cross_entropy(&l, &labels, 4, None).0)
        };
        let numeric = (at(1e-2) - at(-1e-2)) / 2e-2;
        assert!((f64::from(grad[i]) - numeric).abs() < 1e-3, "{i}");
    }
}

fn quadrants(n: usize, seed: u64) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for _ in 0..n {
        let label: u8 = rng.gen_range(0..4);
        let (top, left) = (
            1 + 7 * usize::from(label / 2),
            1 + 7 * usize::from(label % 2),
        );
        for y in 0..14 {
            for x in 0..14 {
                let inside = (top..top + 4).contains(&y) && (left..left + 4).contains(&x);
                images.push(if inside {
                    rng.gen_range(150..=255)
                } else {
                    rng.gen_range(0..80)
                });
            }
        }
        labels.push(label);
    }
    Dataset {
        images,
        labels,
        rows: 14,
        cols: 14,
    }
}

const SMALL: &str = "input = [14, 14, 1]
[[layer]]
type = \"conv2d\"
filters = 4
kernel = 3
stride = 2
padding = \"same\"
[[layer]]
type = \"batchnorm\"
[[layer]]
type = \"conv2d\"
filters = 4
kernel = 3
activation = \"relu\"
[[layer]]
type = \"maxpool2d\"
[[layer]]
type = \"dropout\"
rate = 0.2
[[layer]]
type = \"flatten\"
[[layer]]
type = \"dense\"
units = 8
activation = \"relu\"
[[layer]]
type = \"dense\"
units = 4
activation = \"softmax\"
";

#[test]
fn a_tiny_fit_learns_is_deterministic_and_round_trips_through_a_checkpoint() {
    let spec = Spec::parse(SMALL).unwrap();
    let (train, test) = (quadrants(400, 1), quadrants(100, 2));
    let config = ArchFitConfig {
        epochs: 4,
        batch_size: 32,
        learning_rate: 0.01,
        threads: 2,
        l2: 1e-4,
        ..ArchFitConfig::default()
    };
    let before = Model::glorot_uniform(&spec, config.seed)
        .evaluate(&test.images, &test.labels)
        .unwrap();
    let a = fit(&spec, &train, &test, &config, &mut SilentObserver).unwrap();
    let (loss, acc) = a.model.evaluate(&test.images, &test.labels).unwrap();
    assert!(loss < 0.5 * before.0, "loss {} → {loss}", before.0);
    assert!(acc >= 0.9, "accuracy {acc}");
    let one = ArchFitConfig {
        threads: 1,
        ..config.clone()
    };
    let b = fit(&spec, &train, &test, &one, &mut SilentObserver).unwrap();
    assert_eq!(
        a.model.values(),
        b.model.values(),
        "the thread count changed the weights"
    );

    let bytes = checkpoint::to_bytes(&a.model).unwrap();
    let back = checkpoint::from_bytes(&bytes).unwrap();
    assert_eq!(back.spec, spec);
    assert_eq!(back.values(), a.model.values());
    let mut damaged = bytes.clone();
    damaged[20] ^= 1;
    let e = format!("{:#}", checkpoint::from_bytes(&damaged).unwrap_err());
    assert!(e.contains("CRC"), "{e}");
}

#[test]
fn early_stopping_restores_the_best_epoch() {
    let spec = Spec::parse(SMALL).unwrap();
    let (train, test) = (quadrants(64, 3), quadrants(40, 4));
    // At this learning rate validation loss falls with a bump at epoch 12 (patience goes on
    // past it), then goes up after epoch 17: the fit stops at epoch 19 and restores epoch 17.
    let config = ArchFitConfig {
        epochs: 30,
        batch_size: 16,
        learning_rate: 0.05,
        threads: 1,
        patience: Some(2),
        ..ArchFitConfig::default()
    };
    let run = fit(&spec, &train, &test, &config, &mut SilentObserver).unwrap();
    let losses: Vec<f32> = run.epochs.iter().map(|e| e.val_loss).collect();
    assert!(run.stopped_early, "{losses:?}");
    assert_eq!((losses.len(), run.best_epoch), (19, 17), "{losses:?}");
    assert!(
        losses[11] > losses[10] && losses[12] < losses[10],
        "{losses:?}"
    );
    let best = losses
        .iter()
        .enumerate()
        .fold(0, |b, (i, l)| if *l < losses[b] { i } else { b });
    assert_eq!(run.best_epoch, best + 1, "{losses:?}");
    // The restored weights are the best epoch's, not the last one's: the same loss, bit for bit.
    let (loss, _) = run.model.evaluate(&test.images, &test.labels).unwrap();
    assert_eq!(loss, losses[best], "{losses:?}");
    assert_ne!(loss, losses[losses.len() - 1]);
}

/// [`SMALL`] without its batch norm: a training step runs it in parts of 8-image chunks.
fn small_in_parts() -> Spec {
    Spec::parse(&SMALL.replace("[[layer]]\ntype = \"batchnorm\"\n", "")).unwrap()
}

/// One [`fit::forward_backward`] over all of `data`, dropout masks drawn from key 9.
fn step_with_key_9(model: &mut Model, data: &Dataset) -> (f32, usize) {
    let mut workspace = fit::Workspace::default();
    let masks = fit::Masks::Drawn(9);
    fit::forward_backward(model, &mut workspace, &data.images, &data.labels, masks).unwrap()
}

#[test]
fn a_step_in_parts_gives_the_gradients_and_loss_of_the_whole_batch() {
    let spec = small_in_parts();
    assert!(!spec
        .layers
        .iter()
        .any(|l| matches!(l, LayerSpec::BatchNorm { .. })));
    // 50 images: seven parts of one 8-image chunk, the last of 2 images.
    let data = quadrants(50, 5);
    let mut model = Model::glorot_uniform(&spec, 3);
    let (loss, correct) = step_with_key_9(&mut model, &data);

    // The whole batch as one chunk, by hand.
    let whole = Model::glorot_uniform(&spec, 3);
    let mut traces: Vec<Trace> = whole.layers.iter().map(|_| Trace::default()).collect();
    let mut x = whole.input_batch(&data.images).unwrap();
    for (layer, trace) in whole.layers.iter().zip(&mut traces) {
        x = layer.forward_train(x, 9, 0, trace, &layer.prepare());
    }
    let mut grad = vec![0.0; x.data.len()];
    let (whole_loss, whole_correct) =
        cross_entropy(&x.data, &data.labels, spec.classes(), Some(&mut grad));
    let mut dy = Tensor { data: grad, ..x };
    let mut expected = Vec::new();
    for index in (0..whole.layers.len()).rev() {
        let layer = &whole.layers[index];
        let mut grads = layer.new_grads();
        let input = spec.input_of(index);
        let dx = layer.backward(dy, index > 0, input, &mut traces[index], &mut grads, None);
        let mut with = layer.clone();
        with.set_grads(&grads);
        expected.push(
            with.params()
                .iter()
                .map(|p| p.grad.clone())
                .collect::<Vec<_>>(),
        );
        match dx {
            Some(dx) => dy = dx,
            None => break,
        }
    }
    expected.reverse();
    assert_eq!(correct, whole_correct);
    assert!(
        (loss - whole_loss).abs() <= 1e-6 * whole_loss,
        "{loss} vs {whole_loss}"
    );
    let mut compared = 0;
    for (layer, expected) in model.layers.iter().zip(&expected) {
        for (p, e) in layer.params().iter().zip(expected) {
            let scale = e.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            assert!(scale > 0.0, "a zero gradient compares nothing");
            for (a, b) in p.grad.iter().zip(e) {
                assert!((a - b).abs() <= 1e-5 * scale, "{a} vs {b}");
                compared += 1;
            }
        }
    }
    assert_eq!(compared, model.trainable_count());
}

#[test]
fn a_fit_in_parts_is_deterministic_whatever_the_thread_count() {
    let spec = small_in_parts();
    let (train, test) = (quadrants(200, 6), quadrants(40, 7));
    let config = ArchFitConfig {
        epochs: 2,
        batch_size: 40,
        learning_rate: 0.01,
        threads: 2,
        ..ArchFitConfig::default()
    };
    let a = fit(&spec, &train, &test, &config, &mut SilentObserver).unwrap();
    let again = fit(&spec, &train, &test, &config, &mut SilentObserver).unwrap();
    let one = ArchFitConfig {
        threads: 1,
        ..config.clone()
    };
    let b = fit(&spec, &train, &test, &one, &mut SilentObserver).unwrap();
    assert_eq!(a.model.values(), again.model.values());
    assert_eq!(
        a.model.values(),
        b.model.values(),
        "the thread count changed the weights"
    );
    assert_eq!(a.epochs[1].loss.to_bits(), b.epochs[1].loss.to_bits());
    let other = ArchFitConfig { seed: 2, ..config };
    let c = fit(&spec, &train, &test, &other, &mut SilentObserver).unwrap();
    assert_ne!(a.model.values(), c.model.values());
}

/// A convolution and the max pool after it, run as one step ([`Conv::forward_pooled`],
/// [`Conv::backward_pooled`]), give the bits of the two layers run apart: outputs in eval and
/// training, and kernel, bias and input gradients. Covers the direct gradient path (short im2col
/// rows, no input gradient) with 32 filters (eight at a time in registers) and with 12 (a
/// partial group), odd output sizes, no ReLU, and the path through the convolution's own
/// backward pass (input gradient asked for). Other pools than 2×2, and convolutions of 32 taps
/// or more, run apart.
#[test]
fn a_pooled_convolution_gives_the_bits_of_its_convolution_and_pool_apart() {
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let cases = [
        // (h, w, c, filters, kernel, padding, pool, relu)
        (12, 12, 1, 32, 3, Padding::Valid, 2, true),
        (11, 9, 1, 12, 3, Padding::Valid, 2, true),
        (9, 10, 3, 8, 3, Padding::Same, 2, false),
        (9, 10, 3, 8, 3, Padding::Same, 3, true),
        (8, 8, 1, 16, 2, Padding::Valid, 2, true),
        (7, 8, 4, 8, 3, Padding::Same, 2, true),
    ];
    for (h, w, c, filters, kernel, padding, pool, relu) in cases {
        let activation = if relu {
            Activation::Relu
        } else {
            Activation::None
        };
        let input = Shape::Spatial { h, w, c };
        let mut conv = Layer::new(
            &LayerSpec::Conv2d {
                filters,
                kernel,
                stride: 1,
                padding,
                activation,
            },
            0,
            input,
        );
        for p in conv.params_mut() {
            p.value = random(p.value.len(), &mut rng);
        }
        let conv_out = match &conv {
            Layer::Conv(l) => Shape::Spatial {
                h: l.geom.oh,
                w: l.geom.ow,
                c: filters,
            },
            _ => unreachable!("a convolution"),
        };
        let pool_layer = Layer::new(&LayerSpec::MaxPool2d { pool }, 1, conv_out);
        // Only a 2×2 pool after a convolution with fewer than 32 taps runs with it.
        let fuses = pool == 2 && kernel * kernel * c < 32;
        let Some(fused) = conv.pooled_conv(Some(&pool_layer)) else {
            assert!(!fuses, "{h}×{w}×{c}, pool {pool} runs apart");
            continue;
        };
        assert!(fuses, "{h}×{w}×{c}, pool {pool} runs fused");
        let n = 5;
        // Inputs with exact zeros, as images have.
        let data: Vec<f32> = (0..n * h * w * c)
            .map(|_| rng.gen_range(-1.0f32..1.0).max(0.0))
            .collect();
        let x = Tensor { n, h, w, c, data };
        let what = format!("{h}×{w}×{c}, {filters} filters, pool {pool}");
        let prep = conv.prepare();
        let apart = pool_layer.forward(conv.forward(x.clone(), Mode::Eval), Mode::Eval);
        let together = fused.forward_pooled(x.clone(), None, Some(&prep));
        assert_eq!(together, apart, "eval output, {what}");
        for need_dx in [false, true] {
            let (mut conv_trace, mut pool_trace) = (Trace::default(), Trace::default());
            let y = conv.forward_train(x.clone(), 1, 0, &mut conv_trace, &prep);
            let y = pool_layer.forward_train(y, 1, 0, &mut pool_trace, &Prepared::default());
            let mut trace = Trace::default();
            let fused_y = fused.forward_pooled(x.clone(), Some(&mut trace), Some(&prep));
            assert_eq!(fused_y, y, "training output, {what}");
            // A sparse output gradient, as after dropout.
            let dy: Vec<f32> = (0..y.data.len())
                .map(|_| {
                    if rng.gen_bool(0.5) {
                        0.0
                    } else {
                        rng.gen_range(-1.0f32..1.0)
                    }
                })
                .collect();
            let dy = Tensor { data: dy, ..y };
            let mut grads = conv.new_grads();
            let dz = pool_layer
                .backward(dy.clone(), true, conv_out, &mut pool_trace, &mut [], None)
                .expect("a pool's input gradient");
            let dx = conv.backward(dz, need_dx, input, &mut conv_trace, &mut grads, Some(&prep));
            let mut fused_grads = conv.new_grads();
            let fused_dx =
                fused.backward_pooled(dy, need_dx, &mut trace, &mut fused_grads, Some(&prep));
            assert_eq!(fused_dx, dx, "input gradient, {what}, need_dx {need_dx}");
            assert_eq!(fused_grads, grads, "gradients, {what}, need_dx {need_dx}");
            assert!(
                fused_grads[0].iter().any(|&g| g != 0.0),
                "a zero kernel gradient compares nothing"
            );
        }
    }
}

#[test]
fn a_training_step_with_a_pooled_convolution_gives_the_bits_of_the_layers_apart() {
    // The tutorial's layers on small images (a first convolution of 32 filters): conv + max
    // pool fused in `forward_backward`, layer by layer here. One 8-image chunk.
    let spec = Spec::parse(&TUTORIAL.replace("[28, 28, 1]", "[14, 14, 1]")).unwrap();
    assert_eq!(spec.input.hwc(), (14, 14, 1));
    let data = quadrants(8, 5);
    let mut model = Model::glorot_uniform(&spec, 3);
    step_with_key_9(&mut model, &data);
    let whole = Model::glorot_uniform(&spec, 3);
    let mut traces: Vec<Trace> = whole.layers.iter().map(|_| Trace::default()).collect();
    let mut x = whole.input_batch(&data.images).unwrap();
    let prepared: Vec<Prepared> = whole.layers.iter().map(Layer::prepare).collect();
    for ((layer, trace), prep) in whole.layers.iter().zip(&mut traces).zip(&prepared) {
        x = layer.forward_train(x, 9, 0, trace, prep);
    }
    let mut grad = vec![0.0; x.data.len()];
    cross_entropy(&x.data, &data.labels, spec.classes(), Some(&mut grad));
    let mut dy = Tensor { data: grad, ..x };
    for index in (0..whole.layers.len()).rev() {
        let layer = &whole.layers[index];
        let mut grads = layer.new_grads();
        let input = spec.input_of(index);
        let prep = Some(&prepared[index]);
        let dx = layer.backward(dy, index > 0, input, &mut traces[index], &mut grads, prep);
        let mut with = layer.clone();
        with.set_grads(&grads);
        for (p, e) in model.layers[index].params().iter().zip(with.params()) {
            assert_eq!(p.grad, e.grad, "layer {index}");
        }
        match dx {
            Some(dx) => dy = dx,
            None => break,
        }
    }
}

#[test]
fn given_dropout_masks_scale_what_they_keep_and_must_fit_the_batch() {
    // The tutorial's layers on small images: dropout at layers 2 and 4.
    let spec = Spec::parse(&TUTORIAL.replace("[28, 28, 1]", "[14, 14, 1]")).unwrap();
    let data = quadrants(8, 4);
    let sizes: Vec<usize> = (0..spec.layers.len())
        .map(|i| match spec.layers[i] {
            LayerSpec::Dropout { .. } => 8 * spec.input_of(i).len(),
            _ => 0,
        })
        .collect();
    let step = |keep: &[Vec<bool>]| {
        let mut model = Model::glorot_uniform(&spec, 5);
        let mut workspace = fit::Workspace::default();
        let masks = fit::Masks::Given(keep);
        fit::forward_backward(
            &mut model,
            &mut workspace,
            &data.images,
            &data.labels,
            masks,
        )
        .map(|(loss, _)| (loss, model))
    };
    // Keeping everything is no dropout at all but for the 1/(1 − rate) scaling: the same loss
    // as the eval-mode forward pass of a model whose dense kernel is scaled by 1/0.75 · 1/0.5.
    let all: Vec<Vec<bool>> = sizes.iter().map(|&n| vec![true; n]).collect();
    let (loss, _) = step(&all).unwrap();
    let mut scaled = Model::glorot_uniform(&spec, 5);
    for layer in &mut scaled.layers {
        if let Layer::Dense(d) = layer {
            d.kernel.value.iter_mut().for_each(|w| *w *= 2.0 / 0.75);
        }
    }
    let (expected, _) = scaled.evaluate(&data.images, &data.labels).unwrap();
    assert!((loss - expected).abs() < 1e-5, "{loss} against {expected}");
    // Dropping everything leaves the dense layer its bias alone: a uniform guess.
    let none: Vec<Vec<bool>> = sizes.iter().map(|&n| vec![false; n]).collect();
    let (loss, _) = step(&none).unwrap();
    assert!((loss - 10f32.ln()).abs() < 1e-6, "{loss}");
    // One flag short, or a mask for a layer that is not a dropout, is refused.
    let mut short = all.clone();
    short[2].pop();
    assert!(step(&short).unwrap_err().to_string().contains("layer 2"));
    let mut extra = all.clone();
    extra[0].push(true);
    assert!(step(&extra).unwrap_err().to_string().contains("layer 0"));
    assert!(step(&all[..3]).is_err());
}

/// conv → residual (identity shortcut, ReLU after the add) → residual (strided, batch norm in
/// the main path, a strided 1×1 conv + batch norm on the shortcut, `activation`) → dense.
fn residual_spec(activation: &str) -> Spec {
    Spec::parse(&format!(
        "input = [6, 6, 2]
[[layer]]
type = \"conv2d\"
filters = 3
kernel = 3
padding = \"same\"
activation = \"relu\"
[[layer]]
type = \"residual\"
activation = \"relu\"
[[layer.main]]
type = \"conv2d\"
filters = 3
kernel = 3
padding = \"same\"
activation = \"relu\"
[[layer.main]]
type = \"conv2d\"
filters = 3
kernel = 3
padding = \"same\"
[[layer]]
type = \"residual\"
activation = \"{activation}\"
[[layer.main]]
type = \"conv2d\"
filters = 4
kernel = 3
stride = 2
padding = \"same\"
[[layer.main]]
type = \"batchnorm\"
activation = \"relu\"
[[layer.main]]
type = \"depthwise_conv2d\"
kernel = 3
padding = \"same\"
[[layer.shortcut]]
type = \"conv2d\"
filters = 4
kernel = 1
stride = 2
[[layer.shortcut]]
type = \"batchnorm\"
[[layer]]
type = \"flatten\"
[[layer]]
type = \"dense\"
units = 3
activation = \"softmax\"
"
    ))
    .unwrap()
}

/// The gradient of the mean cross-entropy with respect to every parameter of a model with
/// residual blocks, as a training step computes it, against central differences of the
/// training forward pass: the gradient of each add reaches both its paths and the layers
/// before the block.
#[test]
fn residual_block_gradients_match_central_differences() {
    for (activation, seed) in [("none", 31), ("relu", 33), ("relu6", 32)] {
        let mut spec = residual_spec(activation);
        spec.name = format!("block 2 with {activation}");
        check_model_gradients(&spec, seed);
    }
    // A block on the input whose main path is a first convolution and its 2×2 max pool,
    // which train as one step.
    let pooled = Spec::parse(
        "name = \"a pooled block\"\ninput = [6, 6, 2]
[[layer]]
type = \"residual\"
[[layer.main]]
type = \"conv2d\"
filters = 4
kernel = 3
padding = \"same\"
activation = \"relu\"
[[layer.main]]
type = \"maxpool2d\"
[[layer.shortcut]]
type = \"conv2d\"
filters = 4
kernel = 1
stride = 2
[[layer]]
type = \"flatten\"
[[layer]]
type = \"dense\"
units = 3
activation = \"softmax\"
",
    )
    .unwrap();
    let model = Model::glorot_uniform(&pooled, 1);
    assert!(
        model.pooled_at(0).is_some(),
        "the conv and its pool run as one step"
    );
    check_model_gradients(&pooled, 34);
}

/// Checks every parameter gradient of a training step of `spec` (Glorot weights from
/// `seed`, biases and β moved off 0) against differences of the mean cross-entropy of a
/// training forward pass: central differences, or where a nudge moves a ReLU input across
/// its kink on one side, the one-sided difference on the other side.
fn check_model_gradients(spec: &Spec, seed: u64) {
    let mut model = Model::glorot_uniform(spec, seed);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    for p in model.layers.iter_mut().flat_map(Layer::params_mut) {
        if !p.kernel {
            p.value
                .iter_mut()
                .for_each(|v| *v += rng.gen_range(-0.3..0.3));
        }
    }
    let (n, item, classes) = (5, spec.input.len(), spec.classes());
    let images: Vec<u8> = (0..n * item).map(|_| rng.gen()).collect();
    let labels: Vec<u8> = (0..n).map(|_| rng.gen_range(0..classes as u8)).collect();
    let loss = |m: &Model| {
        let x = m.input_batch(&images).unwrap();
        let logits = m.forward(x, Mode::Train { key: 1 });
        f64::from(cross_entropy(&logits.data, &labels, classes, None).0)
    };
    let mut workspace = fit::Workspace::default();
    let masks = fit::Masks::Drawn(1);
    let (step_loss, _) =
        fit::forward_backward(&mut model, &mut workspace, &images, &labels, masks).unwrap();
    let base = loss(&model);
    assert!(
        (f64::from(step_loss) - base).abs() < 1e-5,
        "{step_loss} vs {base}"
    );
    let scale = f64::from(
        model
            .layers
            .iter()
            .flat_map(Layer::params)
            .flat_map(|p| &p.grad)
            .fold(0.0f32, |m, g| m.max(g.abs())),
    );
    let mut checked = 0;
    for (l, layer) in model.layers.iter().enumerate() {
        for (t, p) in layer.params().iter().enumerate() {
            let reached = p.grad.iter().fold(0.0f32, |m, g| m.max(g.abs()));
            assert!(
                !p.kernel || f64::from(reached) > 1e-3 * scale,
                "layer {l} ({}): no gradient reached its kernel",
                spec.layers[l].type_name()
            );
            for i in (0..p.value.len()).step_by((p.value.len() / 8).max(1)) {
                let nudge = |delta: f32| {
                    let mut m = model.clone();
                    m.layers[l].params_mut()[t].value[i] += delta;
                    loss(&m)
                };
                let analytic = f64::from(p.grad[i]);
                let close = |numeric: f64| {
                    (analytic - numeric).abs() <= 2e-3 * scale + 2e-2 * numeric.abs()
                };
                let (eps, small) = (1e-3f32, 1e-4f32);
                let central = (nudge(eps) - nudge(-eps)) / f64::from(2.0 * eps);
                let right = (nudge(small) - base) / f64::from(small);
                let left = (base - nudge(-small)) / f64::from(small);
                assert!(
                    close(central) || close(right) || close(left),
                    "{}: layer {l} ({}) param {t}[{i}]: analytic {analytic} vs numeric {central} \
                     (one-sided {left}, {right})",
                    spec.name,
                    spec.layers[l].type_name()
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 30, "{checked} values checked");
}

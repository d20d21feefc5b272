//! The f32 path of a generic stack, two ways: the trainer's float layers (im2col + GEMM, used
//! for training and calibration) against infer-core's plain f32 kernels (`conv2d_f32` with
//! stride and same padding, `max_pool`, `dense_f32`), on a spec that uses every option.

use infer_core::kernels::float::{conv2d_f32, dense_f32};
use infer_core::kernels::pool::{max_pool, PoolGeometry};
use model_spec::plan::{OpShape, Plan};
use trainer::arch::layers::Layer;
use trainer::arch::{Model, Spec};

const SPEC: &str = r#"
input = [11, 9, 2]
[[layer]]
type = "conv2d"
filters = 5
kernel = 3
stride = 2
padding = "same"
activation = "relu"
[[layer]]
type = "conv2d"
filters = 4
kernel = 2
activation = "none"
[[layer]]
type = "maxpool2d"
pool = 2
[[layer]]
type = "flatten"
[[layer]]
type = "dropout"
rate = 0.5
[[layer]]
type = "dense"
units = 6
activation = "relu"
[[layer]]
type = "dense"
units = 3
activation = "softmax"
"#;

/// Keras HWIO `[ky][kx][ci][f]` → infer-core OHWI `[f][ky][kx][ci]`.
fn ohwi(hwio: &[f32], taps: usize, filters: usize) -> Vec<f32> {
    (0..filters * taps)
        .map(|i| hwio[(i % taps) * filters + i / taps])
        .collect()
}

#[test]
fn trainer_layers_and_infer_core_f32_kernels_agree() {
    let spec = Spec::parse(SPEC).unwrap();
    let plan = Plan::of(&spec).unwrap();
    let mut model = Model::glorot_uniform(&spec, 9);
    // Non-zero biases, so that a dropped bias would show.
    for (i, layer) in model.layers.iter_mut().enumerate() {
        for p in layer.params_mut().into_iter().filter(|p| !p.kernel) {
            p.value
                .iter_mut()
                .enumerate()
                .for_each(|(j, v)| *v = ((i * 7 + j) % 5) as f32 * 0.05 - 0.1);
        }
    }
    let images: Vec<u8> = (0..4 * 11 * 9 * 2).map(|i| (i * 37 % 256) as u8).collect();
    let logits = model.logits(&images).unwrap();
    for (n, image) in images.chunks(11 * 9 * 2).enumerate() {
        let mut x: Vec<f32> = image.iter().map(|&p| f32::from(p) / 255.0).collect();
        for op in &plan.ops {
            let mut y = vec![0.0f32; op.kind.out_len()];
            match (op.kind, &model.layers[op.layer]) {
                (OpShape::Conv2d { geometry: g, relu }, Layer::Conv(c)) => {
                    let w = ohwi(&c.kernel.value, g.taps(), g.filters);
                    conv2d_f32(&g, &x, &w, &c.bias.value, relu, &mut y);
                }
                (
                    OpShape::MaxPool2d {
                        in_h,
                        in_w,
                        channels,
                        pool,
                    },
                    Layer::Pool(_),
                ) => max_pool(
                    &PoolGeometry {
                        in_h,
                        in_w,
                        channels,
                        size: pool,
                    },
                    &x,
                    &mut y,
                ),
                (
                    OpShape::Dense {
                        inputs,
                        units,
                        relu,
                    },
                    Layer::Dense(d),
                ) => {
                    let w = ohwi(&d.kernel.value, inputs, units);
                    dense_f32(&x, &w, &d.bias.value, &mut y);
                    if relu {
                        y.iter_mut().for_each(|v| *v = v.max(0.0));
                    }
                }
                (kind, _) => panic!("plan and model disagree at {kind}"),
            }
            x = y;
        }
        for (got, want) in x.iter().zip(&logits[n * 3..n * 3 + 3]) {
            assert!((got - want).abs() <= 1e-5, "image {n}: {got} vs {want}");
        }
    }
}

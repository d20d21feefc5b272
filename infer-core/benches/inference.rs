//! Single-image latency on the host, one thread: `cargo bench -p infer-core`.
//!
//! The tutorial's network on the committed model (`firmware-example/assets/model.bin`)
//! and the first test digit of `data/mnist` (a digit drawn from the model's own weights
//! if the data is missing, so that the benchmark always runs):
//!
//! - `int8/infer`: [`TutorialNet::infer`], the streaming kernel (wide loops on the host);
//! - `int8/infer_layers`: the unfused layer-by-layer reference;
//! - `f32/infer`: [`TutorialFloatNet::infer`] with the model's weights dequantized.

use criterion::{criterion_main, Criterion};
use infer_core::{
    pixels_to_input, FloatWeights, TutorialFloatNet, TutorialFloatScratch, TutorialNet,
    TutorialScratch,
};
use std::hint::black_box;
use std::path::Path;

/// The committed model's bytes.
fn model() -> Vec<u8> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware-example/assets/model.bin");
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The first MNIST test image, or a fallback pattern if the data has not been fetched.
fn digit() -> [[u8; 28]; 28] {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../data/mnist/t10k-images-idx3-ubyte");
    let mut pixels = [[0u8; 28]; 28];
    match std::fs::read(&path) {
        Ok(bytes) if bytes.len() >= 16 + 784 => {
            for (row, src) in pixels.iter_mut().zip(bytes[16..16 + 784].chunks_exact(28)) {
                row.copy_from_slice(src);
            }
        }
        _ => {
            eprintln!("{} not found: benchmarking a drawn 7", path.display());
            for (i, row) in pixels.iter_mut().enumerate().skip(6).take(16) {
                row[20 - i / 2] = 255;
                if i == 6 {
                    row[8..21].fill(255);
                }
            }
        }
    }
    pixels
}

/// f32 weights from the int8 model: `w · scale` per output channel, `bias · s_in · s_w`.
fn float_weights(net: &TutorialNet<'_>) -> [Vec<f32>; 4] {
    let m = net.model();
    let f32s = |b: &[u8]| -> Vec<f32> {
        b.chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let i32s = |b: &[u8]| -> Vec<i32> {
        b.chunks_exact(4)
            .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    };
    let dequant = |w: &[u8], scales: &[f32]| -> Vec<f32> {
        let per = w.len() / scales.len();
        w.iter()
            .enumerate()
            .map(|(i, &w)| f32::from(w as i8) * scales[i / per])
            .collect()
    };
    let (cs, ds) = (
        f32s(m.conv.params.weight_scales),
        f32s(m.dense.params.weight_scales),
    );
    let conv_in = m.input.quant.scale;
    let dense_in = m.conv.params.output.scale;
    let bias = |b: &[u8], s: &[f32], s_in: f32| -> Vec<f32> {
        i32s(b)
            .iter()
            .zip(s)
            .map(|(&b, &s)| b as f32 * s * s_in)
            .collect()
    };
    [
        dequant(m.conv.params.weights, &cs),
        bias(m.conv.params.bias, &cs, conv_in),
        dequant(m.dense.params.weights, &ds),
        bias(m.dense.params.bias, &ds, dense_in),
    ]
}

fn bench(c: &mut Criterion) {
    let bytes = model();
    let net = TutorialNet::from_bytes(&bytes).expect("the committed model loads");
    let pixels = digit();
    let input = pixels_to_input(&pixels);
    let mut scratch = Box::new(TutorialScratch::new());
    assert_eq!(net.infer(&input), net.infer_layers(&input, &mut scratch));

    let mut int8 = c.benchmark_group("int8");
    int8.bench_function("infer", |b| b.iter(|| net.infer(black_box(&input))));
    int8.bench_function("infer_layers", |b| {
        b.iter(|| net.infer_layers(black_box(&input), &mut scratch))
    });
    int8.finish();

    let [cw, cb, dw, db] = float_weights(&net);
    let float = TutorialFloatNet::new(FloatWeights {
        conv_weights: &cw,
        conv_bias: &cb,
        dense_weights: &dw,
        dense_bias: &db,
    })
    .expect("shapes agree");
    let x = pixels.map(|row| row.map(|p| [f32::from(p) / 255.0]));
    let mut fscratch = Box::new(TutorialFloatScratch::new());
    c.benchmark_group("f32").bench_function("infer", |b| {
        b.iter(|| float.infer(black_box(&x), &mut fscratch))
    });
}

// The macros define undocumented items.
#[allow(missing_docs)]
mod harness {
    criterion::criterion_group!(benches, super::bench);
}
criterion_main!(harness::benches);

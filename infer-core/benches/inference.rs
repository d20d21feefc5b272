//! Single-image latency on the host, one thread: `cargo bench -p infer-core`.
//!
//! The tutorial's network on the committed model (`firmware-example/assets/model.bin`)
//! and the first test digit of `data/mnist` (a digit drawn instead if the data is missing,
//! so that the benchmark always runs):
//!
//! - `int8/stage`: the typed fused stage the firmware runs
//!   ([`ConvPoolDense3x3`], the one-channel 3×3 streaming kernel);
//! - `int8/run_fast`: [`stack::run`] with [`Kernels::Fast`], the stage plan with shapes
//!   known at run time;
//! - `int8/run_reference`: [`stack::run`] with the unfused reference kernels.

use criterion::{criterion_main, Criterion};
use infer_core::stack::layers::{ConvPoolDense3x3, Layer, Logits};
use infer_core::stack::{self, BufferSizes, Kernels, Pixels, StackFile};
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

/// The tutorial's network as the one fused stage its plan has.
type Tutorial<'a> = ConvPoolDense3x3<'a, 28, 28, 32, 10, true, false>;

fn bench(c: &mut Criterion) {
    let bytes = model();
    let file = StackFile::decode(&bytes).expect("the committed model loads");
    let net = Tutorial::from_file(&file, 0).expect("the committed model is the tutorial's");
    let pixels = digit();
    let input: [i8; 784] = std::array::from_fn(|i| (pixels.as_flattened()[i] ^ 0x80) as i8);
    let sizes = BufferSizes::of(&file, Pixels::BUILT);
    let mut arena = vec![0i8; sizes.arena];
    let mut patch = vec![0u32; sizes.patch_words];
    let mut logits = [0i32; 10];
    net.run_logits(&input, &mut [], &mut logits);
    let mut out = [0i32; 10];
    for kernels in [Kernels::Fast, Kernels::Reference] {
        let run = stack::run(&file, &input, kernels, &mut arena, &mut patch, &mut out);
        assert_eq!(run.expect("buffers of BufferSizes"), logits, "{kernels:?}");
    }

    let mut int8 = c.benchmark_group("int8");
    int8.bench_function("stage", |bench| {
        bench.iter(|| net.run_logits(black_box(&input), &mut [], &mut logits))
    });
    for (name, kernels) in [
        ("run_fast", Kernels::Fast),
        ("run_reference", Kernels::Reference),
    ] {
        int8.bench_function(name, |bench| {
            bench.iter(|| {
                let run = stack::run(
                    &file,
                    black_box(&input),
                    kernels,
                    &mut arena,
                    &mut patch,
                    &mut out,
                );
                black_box(run.ok().map(|l| l[0]));
            })
        });
    }
    int8.finish();
}

// The macros define undocumented items.
#[allow(missing_docs)]
mod harness {
    criterion::criterion_group!(benches, super::bench);
}
criterion_main!(harness::benches);

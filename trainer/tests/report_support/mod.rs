//! Helpers shared by the `trainer report` tests: a small synthetic test set, a quickly made
//! model, naive references and a PNG reader.

#![allow(dead_code)]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use trainer::arch::quantize::{QuantizedStack, StackCalibration};
use trainer::arch::{Model, Spec};
use trainer::data::Dataset;

/// Every picture: file name and size in pixels, as the contract fixes them.
pub const PICTURES: [(&str, u32, u32); 9] = [
    ("1-random-filters.png", 1040, 400),
    ("2-edge-detection.png", 520, 300),
    ("3-probabilities.png", 720, 300),
    ("4-misclassified.png", 720, 300),
    ("5-confidence-histogram.png", 640, 400),
    ("6-learnt-filters.png", 520, 620),
    ("7-feature-maps.png", 740, 490),
    ("8-confusion-matrix.png", 560, 560),
    ("9-training-curves.png", 900, 380),
];

/// `n` 28×28 "digits": a bright bar whose place and angle follow the label, plus noise.
pub fn synthetic_digits(n: usize, seed: u64) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut images = vec![0u8; n * 784];
    let mut labels = Vec::with_capacity(n);
    for (i, image) in images.chunks_exact_mut(784).enumerate() {
        let label = (i % 10) as u8;
        labels.push(label);
        let slope = f64::from(label) / 4.5 - 1.0;
        for y in 4..24usize {
            let x = (14.0 + slope * (y as f64 - 14.0)).round() as usize;
            for dx in 0..3 {
                if let Some(p) = image.get_mut(y * 28 + x + dx) {
                    *p = 255 - rng.gen_range(0..60);
                }
            }
        }
        for p in image.iter_mut() {
            if *p == 0 && rng.gen_bool(0.05) {
                *p = rng.gen_range(0..120);
            }
        }
    }
    Dataset {
        images,
        labels,
        rows: 28,
        cols: 28,
    }
}

/// A Glorot-initialised (untrained) tutorial model and its int8 quantization (model.bin
/// format 3), calibrated on `data`.
pub fn quick_model(data: &Dataset) -> (Model, Vec<u8>) {
    let spec = Spec::load("tutorial").unwrap();
    let float = Model::glorot_uniform(&spec, 1);
    let plan = model_spec::Plan::of(&spec).unwrap();
    let calibration = StackCalibration::measure(&float, &plan, &data.images).unwrap();
    let bytes = QuantizedStack::from_calibration(&float, &plan, &calibration)
        .unwrap()
        .to_bytes()
        .unwrap();
    (float, bytes)
}

/// Writes `test` as both halves of an IDX data directory.
pub fn write_idx(dir: &Path, test: &Dataset) {
    use trainer::data::{encode_idx_images, encode_idx_labels};
    std::fs::create_dir_all(dir).unwrap();
    let images = encode_idx_images(28, 28, &test.images).unwrap();
    let labels = encode_idx_labels(&test.labels).unwrap();
    for (name, bytes) in [
        (trainer::data::TRAIN_IMAGES, &images),
        (trainer::data::TEST_IMAGES, &images),
        (trainer::data::TRAIN_LABELS, &labels),
        (trainer::data::TEST_LABELS, &labels),
    ] {
        std::fs::write(dir.join(name), bytes).unwrap();
    }
}

/// Decodes an 8-bit RGB PNG: width, height, pixels.
pub fn read_png(bytes: &[u8]) -> (u32, u32, Vec<u8>) {
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    let mut reader = decoder.read_info().expect("a PNG header");
    let mut buf = vec![0; reader.output_buffer_size().expect("a sane size")];
    let info = reader.next_frame(&mut buf).expect("PNG image data");
    assert_eq!(info.color_type, png::ColorType::Rgb);
    assert_eq!(info.bit_depth, png::BitDepth::Eight);
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

/// scipy's `convolve2d(x, k, mode='same', boundary='symm')`, written the other way round
/// from the kit: pad the image by mirroring (edge pixel repeated), flip the kernel, slide it.
pub fn naive_convolve(x: &[f64], rows: usize, cols: usize, k: &[[f32; 3]; 3]) -> Vec<f64> {
    let (pr, pc) = (rows + 2, cols + 2);
    let mut padded = vec![0.0; pr * pc];
    for r in 0..pr {
        for c in 0..pc {
            let sr = match r {
                0 => 0,
                r if r == pr - 1 => rows - 1,
                r => r - 1,
            };
            let sc = match c {
                0 => 0,
                c if c == pc - 1 => cols - 1,
                c => c - 1,
            };
            padded[r * pc + c] = x[sr * cols + sc];
        }
    }
    let mut flipped = [[0.0f64; 3]; 3];
    for (u, row) in flipped.iter_mut().enumerate() {
        for (v, f) in row.iter_mut().enumerate() {
            *f = f64::from(k[2 - u][2 - v]);
        }
    }
    let mut out = vec![0.0; rows * cols];
    for i in 0..rows {
        for j in 0..cols {
            let mut s = 0.0;
            for (u, row) in flipped.iter().enumerate() {
                for (v, &f) in row.iter().enumerate() {
                    s += f * padded[(i + u) * pc + j + v];
                }
            }
            out[i * cols + j] = s;
        }
    }
    out
}

/// matplotlib's `imshow(cmap='gray')` stretch: min → 0, max → 255, rounded.
pub fn naive_gray(values: &[f64]) -> Vec<u8> {
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    naive_gray_in(values, min, max)
}

/// `imshow(cmap='gray', vmin=min, vmax=max)`: min and below → 0, max and above → 255.
pub fn naive_gray_in(values: &[f64], min: f64, max: f64) -> Vec<u8> {
    values
        .iter()
        .map(|&v| {
            if max > min {
                ((v - min) / (max - min) * 255.0).round().clamp(0.0, 255.0) as u8
            } else {
                0
            }
        })
        .collect()
}

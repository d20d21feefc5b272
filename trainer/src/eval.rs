//! Evaluation of an int8 model.bin with infer-core, the same code the firmware runs.
//!
//! Every model.bin is format 3: any conv / pool / dense stack ([`StackFile`], run by
//! [`infer_core::stack::run()`], wide i32 logits). Formats 1 (the tutorial-only network) and 2
//! (a stack with int8 logits) are retired: [`format_version`] names them with the command
//! that writes a current file.

use crate::data::Dataset;
use anyhow::{bail, ensure, Result};
use infer_core::format::MAGIC;
use infer_core::kernels::activation::{argmax, softmax_wide};
use infer_core::stack::layers::{ConvPoolDense3x3, Layer, Logits};
use infer_core::stack::Pixels;
use infer_core::stack::{self, BufferSizes, Kernels, StackFile, STACK_FORMAT_VERSION};
use rayon::prelude::*;

/// Per-image results of an int8 evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Evaluation {
    /// Fraction of images classified correctly, in `0..=1`.
    pub accuracy: f64,
    /// Predicted class of every image, in dataset order.
    pub predictions: Vec<u8>,
}

/// The format version of model.bin `bytes`: the little-endian `u16` after the magic, which
/// must be the one this trainer reads ([`STACK_FORMAT_VERSION`]).
///
/// # Errors
/// If the bytes do not start with the magic `I8CN` and a version, or the version is not 3;
/// a retired version (1, the tutorial-only format; 2, int8 logits) is named with the command
/// that writes a current file.
pub fn format_version(bytes: &[u8]) -> Result<u16> {
    if bytes.len() < 6 || bytes[..4] != MAGIC {
        // infer-core names the problem (truncated, or a foreign file) and the fix.
        let refused = load_stack(bytes).err();
        return Err(refused.unwrap_or_else(|| anyhow::anyhow!("not a model.bin")));
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version < STACK_FORMAT_VERSION {
        // infer-core's message names the version and the command that writes a current one.
        let refused = StackFile::decode(bytes).err().map_or_else(
            || format!("model.bin format version {version} is retired"),
            |e| e.to_string(),
        );
        bail!("{refused}");
    }
    ensure!(
        version == STACK_FORMAT_VERSION,
        "model.bin format version {version} is unknown: this trainer reads {STACK_FORMAT_VERSION}; re-export the model with the matching trainer"
    );
    Ok(version)
}

/// Loads format-3 model bytes, checked by [`StackFile::decode`].
///
/// # Errors
/// The infer-core [`infer_core::Error`] as text.
pub fn load_stack(bytes: &[u8]) -> Result<StackFile<'_>> {
    StackFile::decode(bytes).map_err(|e| anyhow::anyhow!("{e}"))
}

/// A model.bin (format 3), loaded and checked.
#[derive(Debug)]
pub struct Int8Model<'a>(Box<StackFile<'a>>);

impl<'a> Int8Model<'a> {
    /// Loads `bytes`, checking their [`format_version`] first.
    ///
    /// # Errors
    /// A retired or unknown version, or a file the decoder refuses.
    pub fn load(bytes: &'a [u8]) -> Result<Self> {
        format_version(bytes)?;
        Ok(Self(Box::new(load_stack(bytes)?)))
    }

    /// The decoded file.
    pub fn file(&self) -> &StackFile<'a> {
        &self.0
    }

    /// Input `(height, width, channels)`.
    pub fn input_shape(&self) -> (usize, usize, usize) {
        let input = &self.0.input;
        (
            usize::from(input.height),
            usize::from(input.width),
            usize::from(input.channels),
        )
    }

    /// The wide logits of one image (`pixels`, row-major, the model's input size) and their
    /// quantization `(scale, zero_point)` (zero point 0).
    ///
    /// # Errors
    /// If `pixels` is not one input image.
    pub fn logits(&self, pixels: &[u8]) -> Result<(Vec<i32>, f32, i32)> {
        let (h, w, c) = self.input_shape();
        ensure!(
            pixels.len() == h * w * c,
            "{} pixels given, the model takes {h}×{w}×{c}",
            pixels.len()
        );
        let file = &self.0;
        let mut buffers = StackBuffers::new(file);
        let logits = buffers.logits(file, pixels, Kernels::Fast)?.to_vec();
        let output = stack_output_quant(file)?;
        Ok((logits, output.scale, output.zero_point))
    }

    /// The predicted class and the class probabilities (softmax of the dequantized logits)
    /// of one image.
    ///
    /// # Errors
    /// As [`Int8Model::logits`].
    pub fn classify(&self, pixels: &[u8]) -> Result<(usize, Vec<f32>)> {
        let (logits, scale, _) = self.logits(pixels)?;
        Ok((argmax(&logits), probabilities(&logits, scale)))
    }
}

/// Softmax of a format-3 model's wide logits (scale `scale`, zero point 0).
pub fn probabilities(logits: &[i32], scale: f32) -> Vec<f32> {
    let mut out = vec![0.0; logits.len()];
    softmax_wide(logits, scale, &mut out);
    out
}

/// The output quantization of a format-3 model's logits (its last operation's).
pub fn stack_output_quant(file: &StackFile<'_>) -> Result<infer_core::format::QuantParams> {
    match file.ops.last().as_ref().and_then(stack::Op::params) {
        Some(p) => Ok(p.output),
        None => bail!("the model has no logits layer"),
    }
}

/// Working memory of [`stack::run()`] for one format-3 model: the int8 input, the
/// arena of the activations, the packed patch and the wide logits.
#[derive(Debug, Clone)]
pub struct StackBuffers {
    /// The quantization of the input (the model's).
    input_quant: infer_core::format::QuantParams,
    input: Vec<i8>,
    arena: Vec<i8>,
    patch: Vec<u32>,
    logits: Vec<i32>,
}

impl StackBuffers {
    /// Buffers of the sizes `file` needs ([`BufferSizes::of`], for this build's
    /// [`Pixels::BUILT`]).
    pub fn new(file: &StackFile<'_>) -> Self {
        let sizes = BufferSizes::of(file, Pixels::BUILT);
        let input = usize::from(file.input.height)
            * usize::from(file.input.width)
            * usize::from(file.input.channels);
        Self {
            input_quant: file.input.quant,
            input: vec![0; input],
            arena: vec![0; sizes.arena],
            patch: vec![0; sizes.patch_words],
            logits: vec![0; file.classes()],
        }
    }

    /// Runs `file` on one image of raw `pixels` (quantized as the model's input,
    /// [`QuantParams::quantize_pixel`](infer_core::format::QuantParams::quantize_pixel)) with
    /// `kernels` and returns the wide logits.
    ///
    /// # Errors
    /// If `pixels` is not one input image of `file`, or the buffers were made for another
    /// file.
    pub fn logits(
        &mut self,
        file: &StackFile<'_>,
        pixels: &[u8],
        kernels: Kernels,
    ) -> Result<&[i32]> {
        ensure!(
            pixels.len() == self.input.len(),
            "{} pixels given, the model takes {}",
            pixels.len(),
            self.input.len()
        );
        self.input_quant = file.input.quant;
        self.set_input(pixels);
        stack::run(
            file,
            &self.input,
            kernels,
            &mut self.arena,
            &mut self.patch,
            &mut self.logits,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// Runs `file` on one int8 `input` (already quantized as the model's input) with
    /// `kernels` and returns the wide logits.
    ///
    /// # Errors
    /// If `input` is not one input of `file`, or the buffers were made for another file.
    pub fn logits_of_int8(
        &mut self,
        file: &StackFile<'_>,
        input: &[i8],
        kernels: Kernels,
    ) -> Result<&[i32]> {
        stack::run(
            file,
            input,
            kernels,
            &mut self.arena,
            &mut self.patch,
            &mut self.logits,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))
    }

    /// [`StackBuffers::logits`] of the tutorial's network through its fused stage.
    ///
    /// # Errors
    /// If `pixels` is not one 28×28 image.
    fn tutorial_logits(&mut self, stage: &TutorialStage<'_>, pixels: &[u8]) -> Result<&[i32]> {
        ensure!(
            pixels.len() == TutorialStage::IN && self.input.len() == TutorialStage::IN,
            "{} pixels given, the model takes {}",
            pixels.len(),
            TutorialStage::IN
        );
        self.set_input(pixels);
        self.logits.resize(TutorialStage::OUT, 0);
        stage.run_logits(&self.input, &mut [], &mut self.logits);
        Ok(&self.logits)
    }

    /// Writes raw `pixels` into the input buffer, quantized as the model's input
    /// ([`QuantParams::quantize_pixel`](infer_core::format::QuantParams::quantize_pixel)).
    fn set_input(&mut self, pixels: &[u8]) {
        for (q, &p) in self.input.iter_mut().zip(pixels) {
            *q = self.input_quant.quantize_pixel(p);
        }
    }
}

/// Classifies every image of `data` with the int8 network in `model_bytes` (format 3).
///
/// # Errors
/// If the model does not load or the images are not of its input size.
pub fn evaluate_int8(model_bytes: &[u8], data: &Dataset) -> Result<Int8Evaluation> {
    format_version(model_bytes)?;
    evaluate_stack(&load_stack(model_bytes)?, data)
}

/// Classifies every image of `data` with the format-3 model `file`, running
/// [`stack::run()`] with the fast kernels (the firmware's) on the current rayon pool.
///
/// # Errors
/// If the images are not of the model's input size or there are none.
pub fn evaluate_stack(file: &StackFile<'_>, data: &Dataset) -> Result<Int8Evaluation> {
    let (h, w, c) = (
        usize::from(file.input.height),
        usize::from(file.input.width),
        usize::from(file.input.channels),
    );
    ensure!(
        (data.rows, data.cols, 1) == (h, w, c),
        "the model takes {h}×{w}×{c} images, the dataset has {}×{}×1",
        data.rows,
        data.cols
    );
    ensure!(!data.is_empty(), "the dataset has no images");
    let pixels = h * w * c;
    // The tutorial's network runs as one fused stage (several times faster on the host).
    let tutorial = TutorialStage::from_file(file, 0).ok();
    let chunks: Vec<Vec<u8>> = data
        .images
        .par_chunks(pixels * 16)
        .map(|chunk| {
            let mut buffers = StackBuffers::new(file);
            chunk
                .chunks_exact(pixels)
                .map(|px| {
                    let logits = match &tutorial {
                        Some(stage) => buffers.tutorial_logits(stage, px)?,
                        None => buffers.logits(file, px, Kernels::Fast)?,
                    };
                    Ok(argmax(logits) as u8)
                })
                .collect::<Result<Vec<u8>>>()
        })
        .collect::<Result<_>>()?;
    Ok(scored(chunks.concat(), data))
}

/// The tutorial's network (28×28×1 → 3×3 conv of 32 filters + ReLU → 2×2 max pool → dense
/// logits of 10 classes) as infer-core's fused one-channel stage, which gives the same logits
/// bit for bit as [`stack::run()`] (infer-core tests it against the reference kernels).
type TutorialStage<'a> = ConvPoolDense3x3<'a, 28, 28, 32, 10, true, false>;

/// Accuracy of `predictions` against `data`'s labels.
fn scored(predictions: Vec<u8>, data: &Dataset) -> Int8Evaluation {
    let correct = predictions
        .iter()
        .zip(&data.labels)
        .filter(|(p, l)| p == l)
        .count();
    Int8Evaluation {
        accuracy: correct as f64 / data.len() as f64,
        predictions,
    }
}

/// How an int8 model's class probabilities follow its float model's over a test set: the
/// figures of issue 11's point 5, printed by `trainer eval --float FILE`.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct FloatAgreement {
    /// Images compared.
    pub images: usize,
    /// Share of images whose int8 argmax is the float argmax, in `0..=1`.
    pub argmax_agreement: f64,
    /// Mean over images and classes of `|p_int8 − p_float|`.
    pub mean_abs_probability_error: f64,
    /// Largest `|p_int8 − p_float|` of any image and class.
    pub max_abs_probability_error: f64,
    /// Images whose lowest int8 probability (the floor) is shared by two classes whose float
    /// probabilities differ: what clipped int8 logits produce.
    pub images_with_false_floor_ties: usize,
    /// Images with any two classes of exactly equal int8 probability whose float
    /// probabilities differ (also coincidences of two equal wide logits).
    pub images_with_false_ties: usize,
    /// The first such image (its index in the test set).
    pub first_false_tie: Option<usize>,
    /// The largest int8 probability of any image (a ceiling below the float one's shows
    /// clipped logits).
    pub max_int8_probability: f64,
    /// The largest float probability of any image.
    pub max_float_probability: f64,
}

/// Softmax of float logits, in f64.
fn softmax_f64(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let exp: Vec<f64> = logits
        .iter()
        .map(|&l| (f64::from(l) - f64::from(max)).exp())
        .collect();
    let sum: f64 = exp.iter().sum();
    exp.iter().map(|e| e / sum).collect()
}

/// Compares `model`'s class probabilities on every image of `data` with the float model's,
/// given as its logits (`data.len()` rows of the model's classes).
///
/// # Errors
/// Images that are not the model's input, or logits of another shape.
pub fn compare_with_float(
    model: &Int8Model<'_>,
    float_logits: &[f32],
    data: &Dataset,
) -> Result<FloatAgreement> {
    let (h, w, c) = model.input_shape();
    let pixels = h * w * c;
    ensure!(
        !data.is_empty() && data.images.len() == data.len() * pixels,
        "the model takes {h}×{w}×{c} images, the dataset has {}×{}×1",
        data.rows,
        data.cols
    );
    ensure!(
        float_logits.len() % data.len() == 0,
        "{} float logits for {} images",
        float_logits.len(),
        data.len()
    );
    let classes = float_logits.len() / data.len();
    // Per image: (argmax agrees, Σ|Δp|, max |Δp|, false tie, max int8 p, false floor tie,
    // max float p).
    let rows: Vec<(bool, f64, f64, bool, f64, bool, f64)> = data
        .images
        .par_chunks(pixels)
        .zip(float_logits.par_chunks(classes))
        .map(|(px, float)| {
            let (class, int8) = model.classify(px)?;
            ensure!(
                int8.len() == classes,
                "{} int8 classes, {classes} float",
                int8.len()
            );
            let p_float = softmax_f64(float);
            let agrees = class == argmax(float);
            let (mut sum, mut max) = (0.0f64, 0.0f64);
            for (&q, &f) in int8.iter().zip(&p_float) {
                let d = (f64::from(q) - f).abs();
                sum += d;
                max = max.max(d);
            }
            let false_tie_where = |at: &dyn Fn(f32) -> bool| {
                (0..classes).any(|i| {
                    (i + 1..classes)
                        .any(|j| int8[i] == int8[j] && at(int8[i]) && p_float[i] != p_float[j])
                })
            };
            let floor = int8.iter().copied().fold(f32::INFINITY, f32::min);
            let false_tie = false_tie_where(&|_| true);
            let false_floor_tie = false_tie_where(&|p| p == floor);
            let top = int8.iter().copied().fold(0.0f32, f32::max);
            let float_top = p_float.iter().copied().fold(0.0f64, f64::max);
            Ok((
                agrees,
                sum,
                max,
                false_tie,
                f64::from(top),
                false_floor_tie,
                float_top,
            ))
        })
        .collect::<Result<_>>()?;
    let n = rows.len();
    Ok(FloatAgreement {
        images: n,
        argmax_agreement: rows.iter().filter(|r| r.0).count() as f64 / n as f64,
        mean_abs_probability_error: rows.iter().map(|r| r.1).sum::<f64>() / (n * classes) as f64,
        max_abs_probability_error: rows.iter().map(|r| r.2).fold(0.0, f64::max),
        images_with_false_floor_ties: rows.iter().filter(|r| r.5).count(),
        images_with_false_ties: rows.iter().filter(|r| r.3).count(),
        first_false_tie: rows.iter().position(|r| r.3),
        max_int8_probability: rows.iter().map(|r| r.4).fold(0.0, f64::max),
        max_float_probability: rows.iter().map(|r| r.6).fold(0.0, f64::max),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::quantize::quantize_and_score;
    use crate::arch::{Model, Spec};
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// Random 28×28 images: half noise, half a bright blob on a black background (the
    /// background positions are the fused stage's shortcut).
    fn images(count: usize, rng: &mut ChaCha8Rng) -> Vec<u8> {
        let mut pixels = vec![0u8; count * 784];
        for (i, image) in pixels.chunks_exact_mut(784).enumerate() {
            if i % 2 == 0 {
                rng.fill(image);
            } else {
                let (y0, x0) = (rng.gen_range(0..20), rng.gen_range(0..20));
                for y in y0..y0 + 8 {
                    for x in x0..x0 + 8 {
                        image[y * 28 + x] = rng.gen();
                    }
                }
            }
        }
        pixels
    }

    #[test]
    fn the_tutorials_fused_stage_gives_the_reference_logits() {
        let spec = Spec::load("tutorial").unwrap();
        let mut rng = ChaCha8Rng::seed_from_u64(7);
        for seed in 1..=3 {
            let model = Model::glorot_uniform(&spec, seed);
            let test = Dataset {
                images: images(40, &mut rng),
                labels: (0..40).map(|i| i % 10).collect(),
                rows: 28,
                cols: 28,
            };
            let bytes = quantize_and_score(&model, &images(50, &mut rng), &test)
                .unwrap()
                .bytes;
            let file = load_stack(&bytes).unwrap();
            let stage = TutorialStage::from_file(&file, 0).expect("the tutorial's shape");
            let mut buffers = StackBuffers::new(&file);
            let mut predictions = Vec::new();
            for px in test.images.chunks_exact(784) {
                let reference = buffers
                    .logits(&file, px, Kernels::Reference)
                    .unwrap()
                    .to_vec();
                assert_eq!(buffers.tutorial_logits(&stage, px).unwrap(), reference);
                predictions.push(argmax(&reference) as u8);
            }
            assert_eq!(
                evaluate_stack(&file, &test).unwrap().predictions,
                predictions
            );
        }
    }
}

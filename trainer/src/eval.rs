//! Evaluation of an int8 model.bin with infer-core, the same code the firmware runs.
//!
//! Two formats exist, told apart by the version in bytes 4..6 ([`format_version`]): format 1
//! is the tutorial network ([`TutorialNet`]), format 2 any conv / pool / dense stack
//! ([`StackFile`], run by [`infer_core::stack::run()`]).

use crate::data::Dataset;
use anyhow::{bail, ensure, Result};
use infer_core::format::{FORMAT_VERSION, MAGIC};
use infer_core::kernels::activation::{argmax, softmax_i8};
use infer_core::stack::{self, BufferSizes, Kernels, StackFile, STACK_FORMAT_VERSION};
use infer_core::{pixels_to_input, TutorialNet, TutorialScratch};
use rayon::prelude::*;

/// Per-image results of an int8 evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Evaluation {
    /// Fraction of images classified correctly, in `0..=1`.
    pub accuracy: f64,
    /// Predicted class of every image, in dataset order.
    pub predictions: Vec<u8>,
}

/// The format version of model.bin `bytes`: the little-endian `u16` after the magic.
///
/// # Errors
/// If the bytes do not start with the magic `I8CN` and a version, or the version is neither
/// 1 (tutorial) nor 2 (layer stack).
pub fn format_version(bytes: &[u8]) -> Result<u16> {
    if bytes.len() < 6 || bytes[..4] != MAGIC {
        // infer-core names the problem (truncated, or a foreign file) and the fix.
        let refused = load_net(bytes).err();
        return Err(refused.unwrap_or_else(|| anyhow::anyhow!("not a model.bin")));
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    ensure!(
        version == FORMAT_VERSION || version == STACK_FORMAT_VERSION,
        "model.bin format version {version} is unknown: this trainer reads {FORMAT_VERSION} (the tutorial network) and {STACK_FORMAT_VERSION} (any layer stack); re-export the model with the matching trainer"
    );
    Ok(version)
}

/// Loads model bytes as the tutorial network, naming the problem if they do not fit.
///
/// # Errors
/// The infer-core [`infer_core::Error`] as text, with the fix.
pub fn load_net(bytes: &[u8]) -> Result<TutorialNet<'_>> {
    TutorialNet::from_bytes(bytes).map_err(|e| anyhow::anyhow!("{e}"))
}

/// Loads format-2 model bytes, checked by [`StackFile::decode`].
///
/// # Errors
/// The infer-core [`infer_core::Error`] as text.
pub fn load_stack(bytes: &[u8]) -> Result<StackFile<'_>> {
    StackFile::decode(bytes).map_err(|e| anyhow::anyhow!("{e}"))
}

/// A model.bin of either format, loaded and checked (boxed: both views are large, a
/// [`StackFile`] holds up to 16 operations inline).
#[derive(Debug)]
pub enum Int8Model<'a> {
    /// Format 1.
    Tutorial(Box<TutorialNet<'a>>),
    /// Format 2.
    Stack(Box<StackFile<'a>>),
}

impl<'a> Int8Model<'a> {
    /// Loads `bytes` by their [`format_version`].
    ///
    /// # Errors
    /// An unknown version, or a file the format's decoder refuses.
    pub fn load(bytes: &'a [u8]) -> Result<Self> {
        Ok(match format_version(bytes)? {
            FORMAT_VERSION => Self::Tutorial(Box::new(load_net(bytes)?)),
            _ => Self::Stack(Box::new(load_stack(bytes)?)),
        })
    }

    /// Input `(height, width, channels)`.
    pub fn input_shape(&self) -> (usize, usize, usize) {
        let input = match self {
            Self::Tutorial(net) => &net.model().input,
            Self::Stack(file) => &file.input,
        };
        (
            usize::from(input.height),
            usize::from(input.width),
            usize::from(input.channels),
        )
    }

    /// The int8 logits of one image (`pixels`, row-major, the model's input size) and their
    /// quantization `(scale, zero_point)`.
    ///
    /// # Errors
    /// If `pixels` is not one input image.
    pub fn logits(&self, pixels: &[u8]) -> Result<(Vec<i8>, f32, i32)> {
        let (h, w, c) = self.input_shape();
        ensure!(
            pixels.len() == h * w * c,
            "{} pixels given, the model takes {h}×{w}×{c}",
            pixels.len()
        );
        match self {
            Self::Tutorial(net) => {
                let mut scratch = Box::new(TutorialScratch::new());
                let out = classify(net, pixels, &mut scratch);
                Ok((out.logits.to_vec(), out.scale, out.zero_point))
            }
            Self::Stack(file) => {
                let mut buffers = StackBuffers::new(file);
                let logits = buffers.logits(file, pixels, Kernels::Fast)?.to_vec();
                let output = stack_output_quant(file)?;
                Ok((logits, output.scale, output.zero_point))
            }
        }
    }

    /// The predicted class and the class probabilities (softmax of the dequantized int8
    /// logits) of one image.
    ///
    /// # Errors
    /// As [`Int8Model::logits`].
    pub fn classify(&self, pixels: &[u8]) -> Result<(usize, Vec<f32>)> {
        let (logits, scale, zero_point) = self.logits(pixels)?;
        let mut probabilities = vec![0.0; logits.len()];
        softmax_i8(&logits, scale, zero_point, &mut probabilities);
        Ok((argmax(&logits), probabilities))
    }
}

/// The output quantization of a format-2 model's logits (its last operation's).
fn stack_output_quant(file: &StackFile<'_>) -> Result<infer_core::format::QuantParams> {
    match file.ops.last().as_ref().and_then(stack::Op::params) {
        Some(p) => Ok(p.output),
        None => bail!("the model has no logits layer"),
    }
}

/// Classifies image `pixels` (28×28, row-major) with `net`.
pub fn classify(
    net: &TutorialNet<'_>,
    pixels: &[u8],
    scratch: &mut TutorialScratch,
) -> infer_core::Output<10> {
    let mut image = [[0u8; 28]; 28];
    for (row, src) in image.iter_mut().zip(pixels.chunks_exact(28)) {
        row.copy_from_slice(src);
    }
    net.infer_layers(&pixels_to_input(&image), scratch)
}

/// Working memory of [`stack::run()`] for one format-2 model: the int8 input, the two
/// ping-pong buffers and the packed patch.
#[derive(Debug, Clone)]
pub struct StackBuffers {
    input: Vec<i8>,
    a: Vec<i8>,
    b: Vec<i8>,
    patch: Vec<u32>,
}

impl StackBuffers {
    /// Buffers of the sizes `file` needs ([`BufferSizes::of`]).
    pub fn new(file: &StackFile<'_>) -> Self {
        let sizes = BufferSizes::of(file);
        let input = usize::from(file.input.height)
            * usize::from(file.input.width)
            * usize::from(file.input.channels);
        Self {
            input: vec![0; input],
            a: vec![0; sizes.a],
            b: vec![0; sizes.b],
            patch: vec![0; sizes.patch_words],
        }
    }

    /// Runs `file` on one image of raw `pixels` (`q = p − 128`) with `kernels` and returns the
    /// int8 logits.
    ///
    /// # Errors
    /// If `pixels` is not one input image of `file`, or the buffers were made for another
    /// file.
    pub fn logits(
        &mut self,
        file: &StackFile<'_>,
        pixels: &[u8],
        kernels: Kernels,
    ) -> Result<&[i8]> {
        ensure!(
            pixels.len() == self.input.len(),
            "{} pixels given, the model takes {}",
            pixels.len(),
            self.input.len()
        );
        for (q, &p) in self.input.iter_mut().zip(pixels) {
            *q = (p ^ 0x80) as i8;
        }
        stack::run(
            file,
            &self.input,
            kernels,
            &mut self.a,
            &mut self.b,
            &mut self.patch,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))
    }
}

/// Classifies every image of `data` with the int8 network in `model_bytes`, of either format.
///
/// # Errors
/// If the model does not load or the images are not of its input size.
pub fn evaluate_int8(model_bytes: &[u8], data: &Dataset) -> Result<Int8Evaluation> {
    if format_version(model_bytes)? == STACK_FORMAT_VERSION {
        return evaluate_stack(&load_stack(model_bytes)?, data);
    }
    let net = load_net(model_bytes)?;
    ensure!(
        data.rows == 28 && data.cols == 28,
        "the model takes 28×28 images, the dataset has {}×{}",
        data.rows,
        data.cols
    );
    ensure!(!data.is_empty(), "the dataset has no images");
    let predictions: Vec<u8> = data
        .images
        .par_chunks(784 * 64)
        .flat_map_iter(|chunk| {
            // The streaming `infer` (bit-exact with `infer_layers`, ~6× faster on the host).
            chunk
                .chunks_exact(784)
                .map(|px| {
                    let mut image = [[0u8; 28]; 28];
                    for (row, src) in image.iter_mut().zip(px.chunks_exact(28)) {
                        row.copy_from_slice(src);
                    }
                    net.infer(&pixels_to_input(&image)).class() as u8
                })
                .collect::<Vec<_>>()
        })
        .collect();
    Ok(scored(predictions, data))
}

/// Classifies every image of `data` with the format-2 model `file`, running
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
    let chunks: Vec<Vec<u8>> = data
        .images
        .par_chunks(pixels * 16)
        .map(|chunk| {
            let mut buffers = StackBuffers::new(file);
            chunk
                .chunks_exact(pixels)
                .map(|px| Ok(argmax(buffers.logits(file, px, Kernels::Fast)?) as u8))
                .collect::<Result<Vec<u8>>>()
        })
        .collect::<Result<_>>()?;
    Ok(scored(chunks.concat(), data))
}

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

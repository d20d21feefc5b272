//! Evaluation of an int8 model.bin with infer-core, the same code the firmware runs.

use crate::data::Dataset;
use anyhow::{ensure, Result};
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

/// Loads model bytes as the tutorial network, naming the problem if they do not fit.
///
/// # Errors
/// The infer-core [`infer_core::Error`] as text, with the fix.
pub fn load_net(bytes: &[u8]) -> Result<TutorialNet<'_>> {
    TutorialNet::from_bytes(bytes).map_err(|e| anyhow::anyhow!("{e}"))
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

/// Classifies every image of `data` with the int8 network in `model_bytes`.
///
/// # Errors
/// If the model does not load or the images are not 28×28.
pub fn evaluate_int8(model_bytes: &[u8], data: &Dataset) -> Result<Int8Evaluation> {
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
    let correct = predictions
        .iter()
        .zip(&data.labels)
        .filter(|(p, l)| p == l)
        .count();
    Ok(Int8Evaluation {
        accuracy: correct as f64 / data.len() as f64,
        predictions,
    })
}

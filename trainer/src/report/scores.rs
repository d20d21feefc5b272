//! The int8 model's verdict on every test digit: its class and its ten probabilities.

use crate::data::Dataset;
use crate::eval::{probabilities, stack_output_quant, StackBuffers};
use anyhow::{ensure, Result};
use infer_core::kernels::activation::argmax;
use infer_core::stack::{Kernels, StackFile};
use rayon::prelude::*;

/// Class and probabilities of every test digit, in dataset order.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// Argmax of the int8 network's wide logits.
    pub predictions: Vec<u8>,
    /// Softmax of the dequantized logits.
    pub probabilities: Vec<[f32; 10]>,
}

impl Scores {
    /// Runs `file` (infer-core's int8 engine, the firmware's kernels) on every image of
    /// `test`, which must be of the model's input size.
    ///
    /// # Errors
    /// If the model does not have ten classes or the images are not its input.
    pub fn of(file: &StackFile<'_>, test: &Dataset) -> Result<Self> {
        ensure!(
            file.classes() == 10,
            "the report draws ten classes, the model has {}",
            file.classes()
        );
        let scale = stack_output_quant(file)?.scale;
        let pixels = test.pixels_per_image();
        let results = test
            .images
            .par_chunks(pixels * 64)
            .map(|chunk| {
                let mut buffers = StackBuffers::new(file);
                chunk
                    .chunks_exact(pixels)
                    .map(|px| {
                        let logits = buffers.logits(file, px, Kernels::Fast)?;
                        let mut p = [0.0; 10];
                        p.copy_from_slice(&probabilities(logits, scale));
                        Ok((argmax(logits) as u8, p))
                    })
                    .collect::<Result<Vec<_>>>()
            })
            .collect::<Result<Vec<_>>>()?;
        let (predictions, probabilities) = results.into_iter().flatten().unzip();
        Ok(Self {
            predictions,
            probabilities,
        })
    }

    /// The highest probability of each digit.
    pub fn confidence(&self) -> Vec<f32> {
        self.probabilities
            .iter()
            .map(|p| p.iter().copied().fold(0.0, f32::max))
            .collect()
    }
}

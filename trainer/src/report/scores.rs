//! The int8 model's verdict on every test digit: its class and its ten probabilities.

use crate::data::Dataset;
use crate::eval::classify;
use infer_core::{TutorialNet, TutorialScratch};
use rayon::prelude::*;

/// Class and probabilities of every test digit, in dataset order.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// Argmax of the int8 logits.
    pub predictions: Vec<u8>,
    /// Softmax of the dequantized int8 logits.
    pub probabilities: Vec<[f32; 10]>,
}

impl Scores {
    /// Runs `net` (infer-core, int8) on every image of `test`, which must be 28×28.
    pub fn of(net: &TutorialNet<'_>, test: &Dataset) -> Self {
        let (predictions, probabilities) = test
            .images
            .par_chunks(784 * 64)
            .flat_map_iter(|chunk| {
                let mut scratch = Box::new(TutorialScratch::new());
                chunk
                    .chunks_exact(784)
                    .map(|px| {
                        let out = classify(net, px, &mut scratch);
                        (out.class() as u8, out.probabilities())
                    })
                    .collect::<Vec<_>>()
            })
            .unzip();
        Self {
            predictions,
            probabilities,
        }
    }

    /// The highest probability of each digit.
    pub fn confidence(&self) -> Vec<f32> {
        self.probabilities
            .iter()
            .map(|p| p.iter().copied().fold(0.0, f32::max))
            .collect()
    }
}

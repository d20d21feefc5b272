//! The labelled inputs a firmware run classifies, laid out as its digits file holds them
//! (`FIRMWARE_DIGITS`: records of `[label: u8][h×w×c values: u8]`, each value `v` standing for
//! `v / 255`; `firmware-example/README.md`, "Digits file").
//!
//! A model of 28×28×1 images takes the MNIST test digits of `--data`; a model of any other
//! input shape (an imported one: the MLPerf Tiny models, `trainer import`) takes deterministic
//! pseudo-random values, every byte equally likely, label 0: enough to count instructions
//! and to check every output against the host's, though the labels mean nothing.

use anyhow::{ensure, Context, Result};
use infer_core::stack::StackFile;
use std::path::Path;
use trainer::data;

/// The inputs of a run.
pub struct Inputs {
    /// Values per input (the model's h × w × c).
    values: usize,
    /// The records, one after the other.
    records: Vec<u8>,
    /// Whether the labels are true classes (MNIST digits) rather than placeholders.
    pub labelled: bool,
}

impl Inputs {
    /// The first `count` inputs for `file`: test digits of the MNIST IDX files in `data` if
    /// the model takes 28×28×1 images, else pseudo-random ones of its shape.
    ///
    /// # Errors
    /// Unreadable MNIST files, or fewer than `count` test digits.
    pub fn for_model(file: &StackFile<'_>, data: &Path, count: usize) -> Result<Self> {
        let shape = (
            usize::from(file.input.height),
            usize::from(file.input.width),
            usize::from(file.input.channels),
        );
        let values = shape.0 * shape.1 * shape.2;
        if shape != (28, 28, 1) {
            let mut state = 0x2545_F491_4F6C_DD1D_u64;
            let mut records = Vec::with_capacity(count * (1 + values));
            for _ in 0..count {
                records.push(0);
                records.extend((0..values).map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    (state >> 32) as u8
                }));
            }
            return Ok(Self {
                values,
                records,
                labelled: false,
            });
        }
        let dataset = data::load_test(data)
            .with_context(|| format!("cannot load the test set from {}", data.display()))?;
        ensure!(
            count <= dataset.len(),
            "--count {count} is more than the {} test images of {}",
            dataset.len(),
            data.display()
        );
        Ok(Self {
            values,
            records: data::digit_records(&dataset, count)?,
            labelled: true,
        })
    }

    /// Bytes of one record: the label and the values.
    pub fn record_len(&self) -> usize {
        1 + self.values
    }

    /// The records of inputs `start..start + count` (fewer past the end).
    pub fn records(&self, start: usize, count: usize) -> &[u8] {
        let len = self.record_len();
        let end = ((start + count) * len).min(self.records.len());
        self.records.get(start * len..end).unwrap_or_default()
    }

    /// Each input's values, in order.
    pub fn values(&self) -> impl Iterator<Item = &[u8]> {
        self.records
            .chunks_exact(self.record_len())
            .map(|record| &record[1..])
    }

    /// Inputs one firmware image holds on `board`: as many records as its `max_digits` MNIST
    /// records take.
    pub fn per_image(&self, board: &model_spec::boards::Board) -> usize {
        (board.max_digits * data::DIGIT_RECORD_LEN / self.record_len()).max(1)
    }
}

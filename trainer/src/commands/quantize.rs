//! `trainer quantize`: re-quantize a float checkpoint (`fit --save-float`) into a model.bin,
//! without retraining. Also the calibration and reporting steps `trainer fit` shares.
//!
//! The checkpoint holds the spec and the float weights; the model.bin written (format 3) is
//! byte for byte the one `fit` wrote from the same weights and calibration images.

use crate::arch;
use crate::arch::quantize::Scores;
use crate::atomic::Outputs;
use crate::data::{self, Dataset};
use anyhow::{Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};

/// Options of `trainer quantize`.
#[derive(Args)]
pub struct QuantizeArgs {
    /// The float checkpoint, written by `trainer fit --save-float FILE`.
    #[arg(long = "float", value_name = "FILE")]
    pub float: PathBuf,
    /// Where to write the int8 model (its directory must exist; written atomically, together
    /// with the other outputs, at the end).
    #[arg(long, default_value = "model.bin")]
    pub out: PathBuf,
    /// Directory with the IDX files: calibration on the training half, scores on the test half.
    #[arg(long, default_value = "data/mnist")]
    pub data: PathBuf,
    /// Calibrate the int8 activation ranges on the first N training images [default: all].
    #[arg(long, value_name = "N", value_parser = super::args::at_least_one::<u32>, allow_negative_numbers = true)]
    pub calibration_images: Option<u32>,
}

/// Runs `trainer quantize`.
///
/// # Errors
/// A missing or corrupt checkpoint, bad data, or an unwritable output, each named.
pub fn run(args: &QuantizeArgs) -> Result<()> {
    let mut outputs = Outputs::new();
    outputs.plan("--out", &args.out)?;
    outputs.refuse_input("--float", &args.float)?;
    refuse_data_files(&outputs, &args.data)?;
    let model = super::eval::load_float(&args.float)?;
    let split = data::load(&args.data)?;
    let calibration = calibration_images(
        &split.train,
        args.calibration_images,
        split.train.len(),
        &args.data,
    );
    let scored = arch::quantize::quantize_and_score(&model, calibration, &split.test)
        .with_context(|| format!("quantizing {}", args.float.display()))?;
    print_scores(scored.calibration.images, &scored.scores);
    print_drop(&scored.scores);
    outputs.stage(&args.out, &scored.bytes)?;
    outputs.commit()?;
    println!(
        "Wrote {} ({} bytes)",
        args.out.display(),
        scored.bytes.len()
    );
    Ok(())
}

/// Refuses an output planned onto one of the IDX files of the data directory `data` (raw or
/// gzipped).
///
/// # Errors
/// If one of them is a planned output.
pub(crate) fn refuse_data_files(outputs: &Outputs, data: &Path) -> Result<()> {
    for file in [
        data::TRAIN_IMAGES,
        data::TRAIN_LABELS,
        data::TEST_IMAGES,
        data::TEST_LABELS,
    ] {
        for file in [file.to_owned(), format!("{file}.gz")] {
            outputs.refuse_input("--data", &data.join(file))?;
        }
    }
    Ok(())
}

/// The calibration images: the first `requested` (default `default`) images of `train`, at
/// most all of them; asking for more than there are is said on stderr (`data` names them).
pub(crate) fn calibration_images<'a>(
    train: &'a Dataset,
    requested: Option<u32>,
    default: usize,
    data: &Path,
) -> &'a [u8] {
    let count = requested.map_or(default, |n| n as usize);
    if count > train.len() {
        eprintln!(
            "note: --calibration-images {count} is more than the {} training images of {}: \
             calibrating on all {}",
            train.len(),
            data.display(),
            train.len()
        );
    }
    let count = count.min(train.len());
    &train.images[..count * train.pixels_per_image()]
}

/// Prints the float and int8 test accuracies and their agreement, as `fit` and `quantize` do.
pub(crate) fn print_scores(calibration_images: usize, scores: &Scores) {
    let images = scores.float_predictions.len();
    println!("Calibrated on {calibration_images} training images");
    println!(
        "Test accuracy (float): {:.2}%",
        100.0 * scores.float_accuracy
    );
    println!(
        "Test accuracy (int8, infer-core): {:.2}%",
        100.0 * scores.int8.accuracy
    );
    let same = (scores.agreement() * images as f64).round() as usize;
    println!(
        "int8 and float predictions agree on {:.2}% of test images ({same} of {images})",
        100.0 * scores.agreement()
    );
}

/// Prints the int8 accuracy minus the float accuracy, in percentage points (the generic
/// path's extra line).
pub(crate) fn print_drop(scores: &Scores) {
    println!(
        "int8 − float accuracy: {:+.2} points",
        100.0 * (scores.int8.accuracy - scores.float_accuracy)
    );
}

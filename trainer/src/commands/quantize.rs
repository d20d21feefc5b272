//! `trainer quantize`: re-quantize a float checkpoint (`fit --save-float`) into a model.bin,
//! without retraining. Also the calibration and reporting steps `trainer fit` shares.

use crate::data::{self, Dataset};
use crate::quantize::{self, Scored};
use crate::{atomic, checkpoint};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};

/// Options of `trainer quantize`.
#[derive(Args)]
pub struct QuantizeArgs {
    /// The float checkpoint, written by `trainer fit --save-float FILE`.
    #[arg(long = "float", value_name = "FILE")]
    pub float: PathBuf,
    /// Where to write the int8 model (written atomically).
    #[arg(long, default_value = "model.bin")]
    pub out: PathBuf,
    /// Directory with the IDX files: calibration on the training half, scores on the test half.
    #[arg(long, default_value = "data/mnist")]
    pub data: PathBuf,
    /// Calibrate the int8 activation ranges on the first N training images [default: all].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub calibration_images: Option<u32>,
}

/// Runs `trainer quantize`.
///
/// # Errors
/// A missing or corrupt checkpoint, bad data, or an unwritable output, each named.
pub fn run(args: &QuantizeArgs) -> Result<()> {
    check_output(&args.out)?;
    let model = checkpoint::load(&args.float)?;
    let split = data::load(&args.data)?;
    let calibration = calibration_images(&split.train, args.calibration_images, split.train.len());
    let scored = quantize::quantize_and_score(&model, calibration, &split.test)
        .with_context(|| format!("quantizing {}", args.float.display()))?;
    print_scores(&scored);
    atomic::write_atomic(&args.out, &scored.bytes)?;
    println!(
        "Wrote {} ({} bytes)",
        args.out.display(),
        scored.bytes.len()
    );
    Ok(())
}

/// Refuses an output path that exists but is not a regular file (a directory, `/dev/null`, a
/// FIFO): the atomic write would rename a new file over it.
///
/// # Errors
/// If `path` exists and is not a regular file.
pub(crate) fn check_output(path: &Path) -> Result<()> {
    match std::fs::metadata(path) {
        Ok(meta) if !meta.is_file() => bail!(
            "{} exists and is not a regular file; give --out a file path",
            path.display()
        ),
        _ => Ok(()),
    }
}

/// The calibration images: the first `requested` (default `default`) images of `train`, at
/// most all of them.
pub(crate) fn calibration_images(train: &Dataset, requested: Option<u32>, default: usize) -> &[u8] {
    let count = requested.map_or(default, |n| n as usize).min(train.len());
    &train.images[..count * train.pixels_per_image()]
}

/// Prints the float and int8 test accuracies and their agreement, as `fit` and `quantize` do.
pub(crate) fn print_scores(scored: &Scored) {
    let images = scored.float_predictions.len();
    println!(
        "Calibrated on {} training images",
        scored.calibration.images
    );
    println!(
        "Test accuracy (float): {:.2}%",
        100.0 * scored.float_accuracy
    );
    println!(
        "Test accuracy (int8, infer-core): {:.2}%",
        100.0 * scored.int8.accuracy
    );
    let same = (scored.agreement() * images as f64).round() as usize;
    println!(
        "int8 and float predictions agree on {:.2}% of test images ({same} of {images})",
        100.0 * scored.agreement()
    );
}

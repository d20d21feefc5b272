//! `trainer quantize`: re-quantize a float checkpoint (`fit --save-float`) into a model.bin,
//! without retraining. Also the calibration and reporting steps `trainer fit` shares.
//!
//! The checkpoint's magic says which path wrote it: `F32C` (the tutorial's fast path) gives
//! a format-1 model.bin, `F32G` (`fit --arch …`, any spec; the spec travels in the file) a
//! format-3 one — in both cases the bytes `fit` wrote from the same weights and calibration
//! images.

use crate::data::{self, Dataset};
use crate::quantize::{self, Scores};
use crate::{arch, atomic, checkpoint};
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};

/// Options of `trainer quantize`.
#[derive(Args)]
pub struct QuantizeArgs {
    /// The float checkpoint, written by `trainer fit --save-float FILE` (tutorial or
    /// `--arch`).
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
    let bytes =
        std::fs::read(&args.float).with_context(|| format!("reading {}", args.float.display()))?;
    let loading = || format!("loading {}", args.float.display());
    let generic = bytes.starts_with(&arch::checkpoint::MAGIC);
    let model = if generic {
        Float::Generic(arch::checkpoint::from_bytes(&bytes).with_context(loading)?)
    } else {
        Float::Tutorial(checkpoint::from_bytes(&bytes).with_context(loading)?)
    };
    let split = data::load(&args.data)?;
    let calibration = calibration_images(&split.train, args.calibration_images, split.train.len());
    let quantizing = || format!("quantizing {}", args.float.display());
    let bytes = match model {
        Float::Generic(model) => {
            let scored = arch::quantize::quantize_and_score(&model, calibration, &split.test)
                .with_context(quantizing)?;
            print_scores(scored.calibration.images, &scored.scores);
            print_drop(&scored.scores);
            scored.bytes
        }
        Float::Tutorial(model) => {
            let scored = quantize::quantize_and_score(&model, calibration, &split.test)
                .with_context(quantizing)?;
            print_scores(scored.calibration.images, &scored.scores);
            scored.bytes
        }
    };
    atomic::write_atomic(&args.out, &bytes)?;
    println!("Wrote {} ({} bytes)", args.out.display(), bytes.len());
    Ok(())
}

/// A float checkpoint of either kind.
enum Float {
    /// `F32C`: the tutorial's fast path.
    Tutorial(crate::network::FloatModel),
    /// `F32G`: any spec.
    Generic(arch::Model),
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

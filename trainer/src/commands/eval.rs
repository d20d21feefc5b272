//! `trainer eval`: score a model.bin (format 3) on the test set with infer-core; with
//! `--float FILE`, also how its class probabilities follow the float model's.

use crate::{arch, data, eval};
use anyhow::{Context, Result};
use clap::Args;
use std::path::{Path, PathBuf};

/// Options of `trainer eval`.
#[derive(Args)]
pub struct EvalArgs {
    /// The int8 model to evaluate (model.bin format 3).
    #[arg(long, default_value = "model.bin")]
    pub model: PathBuf,
    /// Directory with the IDX files; the test half is used.
    #[arg(long, default_value = "data/mnist")]
    pub data: PathBuf,
    /// Print one JSON object: accuracy and every prediction (and, with `--float`, the
    /// comparison with the float model).
    #[arg(long)]
    pub json: bool,
    /// The float checkpoint the model was quantized from (`trainer fit --save-float FILE`):
    /// also report the int8 vs float argmax agreement and the class-probability errors
    /// `|p_int8 − p_float|` (mean and max over images and classes), and images where two
    /// classes share an int8 probability that their float probabilities do not.
    #[arg(long, value_name = "FILE")]
    pub float: Option<PathBuf>,
}

/// The float model in a checkpoint (`trainer fit --save-float FILE`).
///
/// # Errors
/// An unreadable or invalid checkpoint; one of the retired tutorial-only path (`F32C`) is
/// named with the command that writes a current one.
pub(crate) fn load_float(path: &Path) -> Result<arch::Model> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    arch::checkpoint::from_bytes(&bytes).with_context(|| format!("loading {}", path.display()))
}

/// Runs `trainer eval`.
///
/// # Errors
/// A missing or invalid model, or bad data.
pub fn run(args: &EvalArgs) -> Result<()> {
    let bytes = std::fs::read(&args.model).with_context(|| {
        format!(
            "reading {} (create it with `trainer fit --out {}`)",
            args.model.display(),
            args.model.display()
        )
    })?;
    let model = eval::Int8Model::load(&bytes)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let test = data::load_test(&args.data)?;
    let result = eval::evaluate_int8(&bytes, &test)
        .with_context(|| format!("evaluating {}", args.model.display()))?;
    let versus_float = match &args.float {
        Some(path) => {
            let float = load_float(path)?;
            let logits = float
                .logits(&test.images)
                .with_context(|| format!("running {} on the test set", path.display()))?;
            Some(eval::compare_with_float(&model, &logits, &test)?)
        }
        None => None,
    };
    if args.json {
        let json = serde_json::json!({
            "accuracy": result.accuracy,
            "images": test.len(),
            "predictions": result.predictions,
            "versus_float": versus_float,
        });
        println!("{json}");
    } else {
        let correct = (result.accuracy * test.len() as f64).round() as usize;
        println!(
            "int8 accuracy: {:.2}% ({correct} of {} test images)",
            100.0 * result.accuracy,
            test.len()
        );
        if let Some(v) = versus_float {
            println!(
                "int8 and float argmax agree on {:.2}% of test images",
                100.0 * v.argmax_agreement
            );
            println!(
                "class probabilities: mean |p_int8 − p_float| {:.5}, max {:.4}",
                v.mean_abs_probability_error, v.max_abs_probability_error
            );
            println!(
                "images whose lowest int8 probability two classes share, their float ones differing: {}",
                v.images_with_false_floor_ties
            );
            println!(
                "images with any two classes of equal int8 but different float probability: {}{}",
                v.images_with_false_ties,
                v.first_false_tie
                    .map_or(String::new(), |i| format!(" (the first: test image {i})"))
            );
            println!(
                "largest probability: int8 {:.6}, float {:.6}",
                v.max_int8_probability, v.max_float_probability
            );
        }
    }
    Ok(())
}

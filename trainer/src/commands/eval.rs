//! `trainer eval`: score a model.bin (format 1 or 2) on the test set with infer-core.

use crate::{data, eval};
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

/// Options of `trainer eval`.
#[derive(Args)]
pub struct EvalArgs {
    /// The int8 model to evaluate (model.bin format 1 or 2).
    #[arg(long, default_value = "model.bin")]
    pub model: PathBuf,
    /// Directory with the IDX files; the test half is used.
    #[arg(long, default_value = "data/mnist")]
    pub data: PathBuf,
    /// Print one JSON object: accuracy and every prediction.
    #[arg(long)]
    pub json: bool,
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
    // Either format: 1 (the tutorial network) or 2 (any layer stack), by the version field.
    eval::Int8Model::load(&bytes).with_context(|| format!("loading {}", args.model.display()))?;
    let test = data::load_test(&args.data)?;
    let result = eval::evaluate_int8(&bytes, &test)
        .with_context(|| format!("evaluating {}", args.model.display()))?;
    if args.json {
        let json = serde_json::json!({
            "accuracy": result.accuracy,
            "images": test.len(),
            "predictions": result.predictions,
        });
        println!("{json}");
    } else {
        let correct = (result.accuracy * test.len() as f64).round() as usize;
        println!(
            "int8 accuracy: {:.2}% ({correct} of {} test images)",
            100.0 * result.accuracy,
            test.len()
        );
    }
    Ok(())
}

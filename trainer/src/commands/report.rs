//! `trainer report`: draw the tutorial's pictures of a model into a directory of PNGs and
//! an `index.html` (see [`crate::report`]).

use crate::{data, report};
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;

/// Options of `trainer report`.
#[derive(Args)]
pub struct ReportArgs {
    /// The int8 model to draw (from `trainer fit`).
    #[arg(long, default_value = "model.bin")]
    pub model: PathBuf,
    /// Its float checkpoint (`fit --save-float`): the learnt filters are drawn from it
    /// instead of the dequantized int8 weights.
    #[arg(long)]
    pub float: Option<PathBuf>,
    /// Training metrics (`fit --metrics`) for the training curves.
    #[arg(long)]
    pub metrics: Option<PathBuf>,
    /// Directory with the IDX files; the test half is used.
    #[arg(long, default_value = "data/mnist")]
    pub data: PathBuf,
    /// Seed of the random choices (digits shown, random filters).
    #[arg(long, default_value_t = 1, value_parser = super::args::whole_number::<u64>, allow_negative_numbers = true)]
    pub seed: u64,
    /// Directory to write the PNGs, report.json and index.html into (created if missing; its
    /// parent must exist).
    #[arg(long)]
    pub out: PathBuf,
}

/// Runs `trainer report`.
///
/// # Errors
/// A missing or invalid model, checkpoint, metrics file or data set, or an unwritable
/// output directory, each named.
pub fn run(args: &ReportArgs) -> Result<()> {
    let start = Instant::now();
    crate::atomic::check_output_dir("--out", &args.out)?;
    let model = std::fs::read(&args.model).with_context(|| {
        format!(
            "reading {} (create it with `trainer fit --out {}`)",
            args.model.display(),
            args.model.display()
        )
    })?;
    crate::eval::format_version(&model)
        .and_then(|_| crate::eval::load_stack(&model))
        .with_context(|| format!("loading {}", args.model.display()))?;
    let float = args
        .float
        .as_deref()
        .map(super::eval::load_float)
        .transpose()?;
    let epochs = match &args.metrics {
        Some(path) => {
            let json = std::fs::read_to_string(path)
                .with_context(|| format!("reading the metrics {}", path.display()))?;
            Some(
                report::curves::parse_metrics(&json)
                    .with_context(|| format!("reading the metrics {}", path.display()))?,
            )
        }
        None => None,
    };
    let test = data::load_test(&args.data)?;
    let inputs = report::Inputs {
        model: &model,
        float: float.as_ref(),
        epochs: epochs.as_deref(),
        test: &test,
        seed: args.seed,
    };
    let drawn = report::build(&inputs)
        .with_context(|| format!("drawing the report of {}", args.model.display()))?;
    let about = format!(
        "Model {}{}, {} test digits from {} (int8 accuracy {:.2}%), seed {}.",
        args.model.display(),
        args.float
            .as_ref()
            .map(|p| format!(" with float weights {}", p.display()))
            .unwrap_or_default(),
        test.len(),
        args.data.display(),
        100.0 * drawn.summary.int8_accuracy,
        args.seed
    );
    let mut inputs = vec![("--model", args.model.as_path())];
    inputs.extend(args.float.as_deref().map(|p| ("--float", p)));
    inputs.extend(args.metrics.as_deref().map(|p| ("--metrics", p)));
    report::write(&drawn, &args.out, &about, &inputs)?;
    println!(
        "Wrote {} pictures, report.json and index.html to {} in {:.2}s",
        drawn.pictures.len(),
        args.out.display(),
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

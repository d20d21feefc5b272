//! `trainer fit`: train, quantize, evaluate, write model.bin (and metrics).

use crate::train::{ConsoleObserver, EpochMetrics, FitConfig};
use crate::{atomic, data, eval, quantize, train};
use anyhow::{Context, Result};
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;

/// Options of `trainer fit`.
#[derive(Args)]
pub struct FitArgs {
    /// Where to write the int8 model (written atomically).
    #[arg(long, default_value = "model.bin")]
    pub out: PathBuf,
    /// Directory with the four IDX files (raw or .gz).
    #[arg(long, default_value = "data/mnist")]
    pub data: PathBuf,
    /// Passes over the training set.
    #[arg(long, default_value_t = 6, value_parser = clap::value_parser!(u32).range(1..))]
    pub epochs: u32,
    /// Images per gradient step.
    #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..))]
    pub batch_size: u32,
    /// Adam learning rate.
    #[arg(long, default_value_t = 0.001)]
    pub lr: f32,
    /// Seed for initialisation, shuffling and dropout.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Worker threads (0 = all cores).
    #[arg(long, default_value_t = 0)]
    pub threads: usize,
    /// Train on the first N training images only.
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Training images used to calibrate the activation ranges.
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..))]
    pub calibration_images: u32,
    /// Also keep the float weights in this file (see `trainer quantize --float`).
    #[arg(long)]
    pub save_float: Option<PathBuf>,
    /// Also write the training metrics as JSON to this file.
    #[arg(long)]
    pub metrics: Option<PathBuf>,
}

/// What `fit --metrics` writes.
#[derive(Serialize)]
struct Metrics<'a> {
    params: usize,
    test_accuracy_f32: f64,
    test_accuracy_int8: f64,
    int8_float_agreement: f64,
    train_images: usize,
    test_images: usize,
    seed: u64,
    batch_size: usize,
    model_bytes: usize,
    epochs: &'a [EpochMetrics],
}

/// Runs `trainer fit`.
///
/// # Errors
/// Bad data, a failed fit or an unwritable output, each named.
pub fn run(args: &FitArgs) -> Result<()> {
    let split = data::load(&args.data)?;
    let config = FitConfig {
        epochs: args.epochs as usize,
        batch_size: args.batch_size as usize,
        learning_rate: args.lr,
        seed: args.seed,
        threads: args.threads,
        train_limit: args.train_limit,
    };
    let mut observer = ConsoleObserver::new(config.epochs);
    let (model, epochs) = train::fit(&split.train, &split.test, &config, &mut observer)?;

    let calibration_len = (args.calibration_images as usize).min(split.train.len()) * 784;
    let quantized =
        quantize::QuantizedModel::from_float(&model, &split.train.images[..calibration_len])
            .context("quantizing the trained model")?;
    let bytes = quantized.to_bytes()?;
    let int8 = eval::evaluate_int8(&bytes, &split.test)?;
    let (_, float_accuracy) = train::evaluate(&model, &split.test);
    let float_predictions = predict_float(&model, &split.test);
    let agreement = float_predictions
        .iter()
        .zip(&int8.predictions)
        .filter(|(a, b)| a == b)
        .count() as f64
        / split.test.len() as f64;

    println!(
        "Test accuracy (float): {:.2}%",
        100.0 * f64::from(float_accuracy)
    );
    println!(
        "Test accuracy (int8, infer-core): {:.2}%",
        100.0 * int8.accuracy
    );
    println!(
        "int8 and float predictions agree on {:.2}% of test images",
        100.0 * agreement
    );
    atomic::write_atomic(&args.out, &bytes)?;
    println!("Wrote {} ({} bytes)", args.out.display(), bytes.len());
    if let Some(path) = &args.save_float {
        crate::checkpoint::save(&model, path)?;
        println!("Wrote {}", path.display());
    }
    if let Some(path) = &args.metrics {
        let metrics = Metrics {
            params: model.parameter_count(),
            test_accuracy_f32: f64::from(float_accuracy),
            test_accuracy_int8: int8.accuracy,
            int8_float_agreement: agreement,
            train_images: config
                .train_limit
                .unwrap_or(usize::MAX)
                .min(split.train.len()),
            test_images: split.test.len(),
            seed: args.seed,
            batch_size: config.batch_size,
            model_bytes: bytes.len(),
            epochs: &epochs,
        };
        let json = serde_json::to_vec_pretty(&metrics)?;
        atomic::write_atomic(path, &json)?;
        println!("Wrote {}", path.display());
    }
    Ok(())
}

fn predict_float(model: &crate::network::FloatModel, data: &data::Dataset) -> Vec<u8> {
    let mut out = Vec::with_capacity(data.len());
    for chunk in data.images.chunks(784 * 256) {
        let proba = model.predict_proba(chunk);
        out.extend(
            proba.rows().into_iter().map(|r| {
                infer_core::kernels::activation::argmax(r.as_slice().unwrap_or(&[])) as u8
            }),
        );
    }
    out
}

//! `trainer fit --arch …` through the generic layers (`crate::arch`): trains, quantizes to a
//! format-3 model.bin (`crate::arch::quantize`), scores float and int8 on the test set, and
//! writes model.bin, the float checkpoint and the metrics.
//!
//! A spec whose batch norm cannot be folded (it follows a ReLU) still trains: the float
//! checkpoint and metrics are written, model.bin is not, and the reason is printed before
//! training starts and again at the end.

use super::{
    not_written, peak_rss_bytes, stop_on_signals, threads_pool, FitArgs, StoppableObserver,
};
use crate::arch::observer::{ConsoleObserver, EpochMetrics, Interrupted};
use crate::arch::{checkpoint, fit, ArchFitConfig, Spec};
use crate::commands::quantize::{calibration_images, check_output, print_drop, print_scores};
use crate::{arch, atomic, data};
use anyhow::{bail, Result};
use model_spec::Plan;
use serde::Serialize;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// What `fit --arch … --metrics` writes.
#[derive(Serialize)]
struct Metrics<'a> {
    arch: &'a str,
    params: usize,
    test_accuracy_f32: f64,
    /// Whether model.bin (format 3) was written.
    int8_exported: bool,
    /// Why not, when it was not.
    #[serde(skip_serializing_if = "Option::is_none")]
    int8_unavailable: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    test_accuracy_int8: Option<f64>,
    /// `test_accuracy_int8 − test_accuracy_f32` (negative: int8 is worse).
    #[serde(skip_serializing_if = "Option::is_none")]
    int8_minus_f32_accuracy: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    int8_float_agreement: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    calibration_images: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    model_bytes: Option<usize>,
    train_images: usize,
    test_images: usize,
    seed: u64,
    batch_size: usize,
    threads: usize,
    l2: f32,
    l1: f32,
    early_stopping_patience: Option<u32>,
    /// The epoch (from 1) whose weights were kept.
    best_epoch: usize,
    stopped_early: bool,
    fit_seconds: f64,
    peak_rss_bytes: Option<u64>,
    epochs: &'a [EpochMetrics],
}

/// Runs `trainer fit` for `spec` on the generic path.
///
/// # Errors
/// Bad data, a failed fit or quantization, an interruption or an unwritable output, each
/// named.
pub(super) fn run(args: &FitArgs, spec: &Spec) -> Result<()> {
    let unexportable = Plan::of(spec).err().map(|e| e.to_string());
    let writes_model = unexportable.is_none();
    let outputs = writes_model.then_some(&args.out);
    for path in outputs
        .iter()
        .copied()
        .chain(&args.save_float)
        .chain(&args.metrics)
    {
        check_output(path)?;
    }
    let nothing_written = || {
        if writes_model {
            not_written(args)
        } else {
            generic_not_written(args)
        }
    };
    let stop = stop_on_signals()?;
    let split = data::load(&args.data)?;
    let config = ArchFitConfig {
        epochs: args.epochs as usize,
        batch_size: args.batch_size as usize,
        learning_rate: args.lr,
        seed: args.seed,
        threads: args.threads,
        train_limit: args.train_limit,
        l2: args.l2,
        l1: args.l1,
        patience: args.early_stopping_patience.map(|p| p as usize),
    };
    let name = args.arch.as_deref().unwrap_or("tutorial");
    // Plain `trainer fit` keeps the tutorial's Keras-style log; `--arch` names what it trains.
    let named = args.arch.is_some();
    if named {
        println!(
            "Architecture {name}: {} layers, {} parameters",
            spec.layers.len(),
            super::super::summary::group(spec.total_params())
        );
    }
    let no_export = |reason: &str| {
        println!(
            "No int8 model will be written ({} left as it was): {reason}",
            args.out.display()
        );
    };
    if let Some(reason) = &unexportable {
        no_export(reason);
    }
    let mut observer = StoppableObserver {
        console: ConsoleObserver::new(config.epochs),
        stop: &stop,
    };
    let start = Instant::now();
    let run = match fit(spec, &split.train, &split.test, &config, &mut observer) {
        Err(e) if e.is::<Interrupted>() => bail!("{e}; {}", nothing_written()),
        result => result?,
    };
    let fit_seconds = start.elapsed().as_secs_f64();
    if run.stopped_early || config.patience.is_some() {
        println!(
            "Early stopping: kept epoch {} of {} run{}",
            run.best_epoch,
            run.epochs.len(),
            if run.stopped_early {
                " (stopped early)"
            } else {
                ""
            }
        );
    }
    let train_images = config
        .train_limit
        .unwrap_or(usize::MAX)
        .min(split.train.len());
    let scored = if writes_model {
        let calibration = calibration_images(&split.train, args.calibration_images, train_images);
        let scored = threads_pool(args.threads)?
            .install(|| arch::quantize::quantize_and_score(&run.model, calibration, &split.test))?;
        print_scores(scored.calibration.images, &scored.scores);
        if named {
            print_drop(&scored.scores);
        }
        Some(scored)
    } else {
        None
    };
    let float_accuracy = match &scored {
        Some(s) => s.scores.float_accuracy,
        None => {
            let (_, accuracy) = threads_pool(args.threads)?
                .install(|| run.model.evaluate(&split.test.images, &split.test.labels))?;
            println!(
                "Test accuracy (float): {:.2}% on {} images",
                f64::from(accuracy) * 100.0,
                split.test.len()
            );
            f64::from(accuracy)
        }
    };
    if stop.load(Ordering::SeqCst) {
        bail!(
            "training interrupted after the last epoch; {}",
            nothing_written()
        );
    }
    match (&scored, &unexportable) {
        (Some(scored), _) => {
            atomic::write_atomic(&args.out, &scored.bytes)?;
            println!(
                "Wrote {} ({} bytes{})",
                args.out.display(),
                scored.bytes.len(),
                if named { ", model.bin format 3" } else { "" }
            );
        }
        (None, Some(reason)) => no_export(reason),
        (None, None) => {}
    }
    if let Some(path) = &args.save_float {
        checkpoint::save(&run.model, path)?;
        println!("Wrote {}", path.display());
    }
    if let Some(path) = &args.metrics {
        let scores = scored.as_ref().map(|s| &s.scores);
        let metrics = Metrics {
            arch: name,
            params: run.model.parameter_count(),
            test_accuracy_f32: float_accuracy,
            int8_exported: scored.is_some(),
            int8_unavailable: unexportable.clone(),
            test_accuracy_int8: scores.map(|s| s.int8.accuracy),
            int8_minus_f32_accuracy: scores.map(|s| s.int8.accuracy - s.float_accuracy),
            int8_float_agreement: scores.map(|s| s.agreement()),
            calibration_images: scored.as_ref().map(|s| s.calibration.images),
            model_bytes: scored.as_ref().map(|s| s.bytes.len()),
            train_images,
            test_images: split.test.len(),
            seed: args.seed,
            batch_size: config.batch_size,
            threads: args.threads,
            l2: args.l2,
            l1: args.l1,
            early_stopping_patience: args.early_stopping_patience,
            best_epoch: run.best_epoch,
            stopped_early: run.stopped_early,
            fit_seconds,
            peak_rss_bytes: peak_rss_bytes(),
            epochs: &run.epochs,
        };
        atomic::write_atomic(path, &serde_json::to_vec_pretty(&metrics)?)?;
        println!("Wrote {}", path.display());
    }
    Ok(())
}

/// The note that nothing was written, naming the files this path would have written when it
/// writes no model.bin.
fn generic_not_written(args: &FitArgs) -> String {
    if args.save_float.is_none() && args.metrics.is_none() {
        return "nothing written".to_owned();
    }
    let all = not_written(args);
    // `not_written` names --out first, which this path does not write.
    all.replacen(&format!("{}, ", args.out.display()), "", 1)
}

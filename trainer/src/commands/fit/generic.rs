//! `trainer fit --arch …` through the generic layers (`crate::arch`): trains, quantizes to a
//! format-3 model.bin (`crate::arch::quantize`), scores float and int8 on the test set, and
//! writes model.bin, the float checkpoint and the metrics.
//!
//! Everything is checked before the first epoch: every output location (see
//! [`crate::atomic::Outputs`]), that the spec exports to model.bin
//! ([`arch::quantize::check_exportable`]) and that it fits `--max-memory`. The outputs are
//! committed together at the end, so a fit that fails or is interrupted writes nothing.

use super::{
    not_written, peak_rss_bytes, stop_on_signals, threads_pool, FitArgs, StoppableObserver,
};
use crate::arch::observer::{ConsoleObserver, EpochMetrics, Interrupted};
use crate::arch::{checkpoint, fit, ArchFitConfig, Spec};
use crate::atomic::Outputs;
use crate::commands::args::show_bytes;
use crate::commands::quantize::{calibration_images, print_drop, print_scores, refuse_data_files};
use crate::commands::StoppedBySignal;
use crate::{arch, data};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// What `fit --arch … --metrics` writes.
#[derive(Serialize)]
struct Metrics<'a> {
    arch: &'a str,
    params: usize,
    test_accuracy_f32: f64,
    /// Always true: a fit that writes no model.bin fails (kept for readers of older files).
    int8_exported: bool,
    test_accuracy_int8: f64,
    /// `test_accuracy_int8 − test_accuracy_f32` (negative: int8 is worse).
    int8_minus_f32_accuracy: f64,
    int8_float_agreement: f64,
    calibration_images: usize,
    model_bytes: usize,
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
/// An unusable output location, a spec that cannot be exported or is too large, bad data, a
/// failed or diverging fit, a failed quantization, or an interruption, each named; nothing is
/// written then.
pub(super) fn run(args: &FitArgs, spec: &Spec) -> Result<()> {
    let name = args.arch.as_deref().unwrap_or("tutorial");
    let mut outputs = Outputs::new();
    outputs.plan("--out", &args.out)?;
    if let Some(path) = &args.save_float {
        outputs.plan("--save-float", path)?;
    }
    if let Some(path) = &args.metrics {
        outputs.plan("--metrics", path)?;
    }
    if Path::new(name).is_file() {
        outputs.refuse_input("--arch", Path::new(name))?;
    }
    refuse_data_files(&outputs, &args.data)?;
    arch::quantize::check_exportable(spec)
        .with_context(|| format!("{name} cannot be trained into a model.bin"))?;
    let needed = arch::fit::training_bytes(spec, args.batch_size as usize);
    if needed > u128::from(args.max_memory) {
        bail!(
            "{name} needs about {} to train ({} parameters, with their gradients and Adam \
             moments, and the activations of a batch of {}), more than --max-memory {}; \
             make the architecture smaller, lower --batch-size, or raise --max-memory",
            show_bytes(needed),
            super::super::summary::group(spec.total_params()),
            args.batch_size,
            show_bytes(u128::from(args.max_memory))
        );
    }
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
    if let Some(limit) = args.train_limit.filter(|&n| n > split.train.len()) {
        eprintln!(
            "note: --train-limit {limit} is more than the {} training images of {}: training on all {}",
            split.train.len(),
            args.data.display(),
            split.train.len()
        );
    }
    // Plain `trainer fit` keeps the tutorial's Keras-style log; `--arch` names what it trains.
    let named = args.arch.is_some();
    if named {
        println!(
            "Architecture {name}: {} layers, {} parameters",
            spec.layers.len(),
            super::super::summary::group(spec.total_params())
        );
    }
    let mut observer = StoppableObserver {
        console: ConsoleObserver::new(config.epochs),
        stop: &stop.raised,
    };
    let start = Instant::now();
    let run = match fit(spec, &split.train, &split.test, &config, &mut observer) {
        Err(e) if e.is::<Interrupted>() => {
            return Err(StoppedBySignal {
                signal: stop.signal(),
                message: format!("{e}; {}", not_written(args)),
            }
            .into())
        }
        Err(e) => bail!("{e:#}; {}", not_written(args)),
        Ok(run) => run,
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
    let calibration = calibration_images(
        &split.train,
        args.calibration_images,
        train_images,
        &args.data,
    );
    let scored = threads_pool(args.threads)?
        .install(|| arch::quantize::quantize_and_score(&run.model, calibration, &split.test))
        .map_err(|e| anyhow::anyhow!("{e:#}; {}", not_written(args)))?;
    print_scores(scored.calibration.images, &scored.scores);
    if named {
        print_drop(&scored.scores);
    }
    if stop.raised.load(Ordering::SeqCst) {
        return Err(StoppedBySignal {
            signal: stop.signal(),
            message: format!(
                "training interrupted after the last epoch; {}",
                not_written(args)
            ),
        }
        .into());
    }
    outputs.stage(&args.out, &scored.bytes)?;
    if let Some(path) = &args.save_float {
        outputs.stage(path, &checkpoint::to_bytes(&run.model)?)?;
    }
    if let Some(path) = &args.metrics {
        let scores = &scored.scores;
        let metrics = Metrics {
            arch: name,
            params: run.model.parameter_count(),
            test_accuracy_f32: scores.float_accuracy,
            int8_exported: true,
            test_accuracy_int8: scores.int8.accuracy,
            int8_minus_f32_accuracy: scores.int8.accuracy - scores.float_accuracy,
            int8_float_agreement: scores.agreement(),
            calibration_images: scored.calibration.images,
            model_bytes: scored.bytes.len(),
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
        outputs.stage(path, &serde_json::to_vec_pretty(&metrics)?)?;
    }
    outputs.commit()?;
    println!(
        "Wrote {} ({} bytes{})",
        args.out.display(),
        scored.bytes.len(),
        if named { ", model.bin format 3" } else { "" }
    );
    for path in args.save_float.iter().chain(&args.metrics) {
        println!("Wrote {}", path.display());
    }
    Ok(())
}

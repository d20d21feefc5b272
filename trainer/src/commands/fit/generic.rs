//! `trainer fit --arch …` through the generic layers (`crate::arch`): trains, evaluates in
//! f32, writes the float checkpoint and the metrics. No model.bin: int8 export of generic
//! stacks needs model format v2.

use super::{not_written, peak_rss_bytes, stop_on_signals, FitArgs, StoppableObserver};
use crate::arch::{checkpoint, fit, ArchFitConfig, Spec};
use crate::commands::quantize::check_output;
use crate::train::{ConsoleObserver, EpochMetrics, Interrupted};
use crate::{atomic, data};
use anyhow::{bail, Result};
use serde::Serialize;
use std::sync::atomic::Ordering;
use std::time::Instant;

/// What `fit --arch … --metrics` writes.
#[derive(Serialize)]
struct Metrics<'a> {
    arch: &'a str,
    params: usize,
    test_accuracy_f32: f64,
    /// Always false for now: int8 export of generic stacks comes with model format v2.
    int8_exported: bool,
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
/// Bad data, a failed fit, an interruption or an unwritable output, each named.
pub(super) fn run(args: &FitArgs, spec: &Spec) -> Result<()> {
    for path in args.save_float.iter().chain(&args.metrics) {
        check_output(path)?;
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
    let name = args.arch.as_deref().unwrap_or("tutorial");
    println!(
        "Architecture {name}: {} layers, {} parameters",
        spec.layers.len(),
        super::super::summary::group(spec.total_params())
    );
    let mut observer = StoppableObserver {
        console: ConsoleObserver::new(config.epochs),
        stop: &stop,
    };
    let start = Instant::now();
    let run = match fit(spec, &split.train, &split.test, &config, &mut observer) {
        Err(e) if e.is::<Interrupted>() => bail!("{e}; {}", generic_not_written(args)),
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
    let (_, accuracy) = run.model.evaluate(&split.test.images, &split.test.labels)?;
    println!(
        "Test accuracy (f32): {:.2} % on {} images",
        f64::from(accuracy) * 100.0,
        split.test.len()
    );
    if stop.load(Ordering::SeqCst) {
        bail!(
            "training interrupted after the last epoch; {}",
            generic_not_written(args)
        );
    }
    println!(
        "No int8 model written ({} left as it was): int8 export of this architecture comes with model format v2",
        args.out.display()
    );
    if let Some(path) = &args.save_float {
        checkpoint::save(&run.model, path)?;
        println!("Wrote {}", path.display());
    }
    if let Some(path) = &args.metrics {
        let metrics = Metrics {
            arch: name,
            params: run.model.parameter_count(),
            test_accuracy_f32: f64::from(accuracy),
            int8_exported: false,
            train_images: config
                .train_limit
                .unwrap_or(usize::MAX)
                .min(split.train.len()),
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

/// The note that nothing was written, naming the files this path would have written.
fn generic_not_written(args: &FitArgs) -> String {
    if args.save_float.is_none() && args.metrics.is_none() {
        return "nothing written".to_owned();
    }
    let all = not_written(args);
    // `not_written` names --out first, which this path never writes.
    all.replacen(&format!("{}, ", args.out.display()), "", 1)
}

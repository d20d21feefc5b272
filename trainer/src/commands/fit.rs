//! `trainer fit`: train, quantize, evaluate, write model.bin (and metrics).

use super::quantize::{calibration_images, check_output, print_scores};
use crate::arch::Spec;
use crate::train::{ConsoleObserver, EpochMetrics, FitConfig, FitObserver};
use crate::{atomic, data, quantize, train};
use anyhow::{bail, Context, Result};
use clap::Args;
use serde::Serialize;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

mod generic;

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
    /// Calibrate the int8 activation ranges on the first N training images [default: all the
    /// images trained on].
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub calibration_images: Option<u32>,
    /// Also keep the float weights in this file (see `trainer quantize --float`).
    #[arg(long)]
    pub save_float: Option<PathBuf>,
    /// Also write the training metrics as JSON to this file.
    #[arg(long)]
    pub metrics: Option<PathBuf>,
    /// Train this architecture through the generic layers: a preset (`tutorial`,
    /// `tutorial-full`) or a spec file (see docs/architecture-spec.md); writes a model.bin in
    /// format 3 (any conv / pool / dense stack). Without it, the tutorial's own path (format 1).
    #[arg(long)]
    pub arch: Option<String>,
    /// L2 regularisation: adds l2·Σw² over every kernel to the loss (generic path).
    #[arg(long, default_value_t = 0.0)]
    pub l2: f32,
    /// L1 regularisation: adds l1·Σ|w| over every kernel to the loss (generic path).
    #[arg(long, default_value_t = 0.0)]
    pub l1: f32,
    /// Stop when validation loss has not improved for N epochs and keep the best epoch's
    /// weights (generic path).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..))]
    pub early_stopping_patience: Option<u32>,
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
    calibration_images: usize,
    seed: u64,
    batch_size: usize,
    threads: usize,
    model_bytes: usize,
    /// Wall time of the training loop (all epochs, validation included).
    fit_seconds: f64,
    /// Peak resident memory of the process so far (Linux `VmHWM`; null elsewhere).
    peak_rss_bytes: Option<u64>,
    epochs: &'a [EpochMetrics],
}

/// Runs `trainer fit`.
///
/// SIGINT (Ctrl-C) and SIGTERM stop the fit after the current batch; nothing is written, so
/// the previous output files stay as they were. A second signal ends the process at once.
///
/// # Errors
/// Bad data, a failed fit, an interruption or an unwritable output, each named.
pub fn run(args: &FitArgs) -> Result<()> {
    let generic_options =
        args.l2 != 0.0 || args.l1 != 0.0 || args.early_stopping_patience.is_some();
    match &args.arch {
        Some(arch) => return generic::run(args, &Spec::load(arch)?),
        None if generic_options => bail!(
            "--l2, --l1 and --early-stopping-patience train through the generic layers: add --arch tutorial (or another architecture)"
        ),
        None => {}
    }
    for path in std::iter::once(&args.out)
        .chain(&args.save_float)
        .chain(&args.metrics)
    {
        check_output(path)?;
    }
    let stop = stop_on_signals()?;
    let split = data::load(&args.data)?;
    let config = FitConfig {
        epochs: args.epochs as usize,
        batch_size: args.batch_size as usize,
        learning_rate: args.lr,
        seed: args.seed,
        threads: args.threads,
        train_limit: args.train_limit,
    };
    let mut observer = StoppableObserver {
        console: ConsoleObserver::new(config.epochs),
        stop: &stop,
    };
    let start = Instant::now();
    let (model, epochs) = match train::fit(&split.train, &split.test, &config, &mut observer) {
        Err(e) if e.is::<train::Interrupted>() => bail!("{e}; {}", not_written(args)),
        result => result?,
    };
    let fit_seconds = start.elapsed().as_secs_f64();
    let train_images = config
        .train_limit
        .unwrap_or(usize::MAX)
        .min(split.train.len());

    let calibration = calibration_images(&split.train, args.calibration_images, train_images);
    let scored = threads_pool(args.threads)?
        .install(|| quantize::quantize_and_score(&model, calibration, &split.test))?;
    print_scores(scored.calibration.images, &scored.scores);
    if stop.load(Ordering::SeqCst) {
        bail!(
            "training interrupted after the last epoch; {}",
            not_written(args)
        );
    }
    atomic::write_atomic(&args.out, &scored.bytes)?;
    println!(
        "Wrote {} ({} bytes)",
        args.out.display(),
        scored.bytes.len()
    );
    if let Some(path) = &args.save_float {
        crate::checkpoint::save(&model, path)?;
        println!("Wrote {}", path.display());
    }
    if let Some(path) = &args.metrics {
        let metrics = Metrics {
            params: model.parameter_count(),
            test_accuracy_f32: scored.scores.float_accuracy,
            test_accuracy_int8: scored.scores.int8.accuracy,
            int8_float_agreement: scored.scores.agreement(),
            train_images,
            test_images: split.test.len(),
            calibration_images: scored.calibration.images,
            seed: args.seed,
            batch_size: config.batch_size,
            threads: args.threads,
            model_bytes: scored.bytes.len(),
            fit_seconds,
            peak_rss_bytes: peak_rss_bytes(),
            epochs: &epochs,
        };
        let json = serde_json::to_vec_pretty(&metrics)?;
        atomic::write_atomic(path, &json)?;
        println!("Wrote {}", path.display());
    }
    Ok(())
}

/// The note that nothing was written, naming the files.
fn not_written(args: &FitArgs) -> String {
    let mut files = vec![args.out.display().to_string()];
    files.extend(args.save_float.iter().map(|p| p.display().to_string()));
    files.extend(args.metrics.iter().map(|p| p.display().to_string()));
    format!(
        "nothing written: {} left as {} were",
        files.join(", "),
        if files.len() == 1 { "it" } else { "they" }
    )
}

/// Peak resident set size of this process (`VmHWM` of `/proc/self/status`), where the
/// system tells it (Linux).
fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let kib = status
        .lines()
        .find_map(|line| line.strip_prefix("VmHWM:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse::<u64>()
        .ok()?;
    Some(kib * 1024)
}

/// A rayon pool of `threads` workers (0 = all cores) for the post-training passes, so
/// `--threads` bounds the whole command.
fn threads_pool(threads: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .context("cannot start the evaluation threads")
}

/// A flag raised by SIGINT or SIGTERM. While it is down a signal only raises it; once it is up
/// a second signal ends the process (exit status 128 + signal), as the user expects from a
/// second Ctrl-C.
fn stop_on_signals() -> Result<Arc<AtomicBool>> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let flag = Arc::new(AtomicBool::new(false));
    for signal in [SIGINT, SIGTERM] {
        // Registered first, so it sees the flag as it was before this signal raised it.
        signal_hook::flag::register_conditional_shutdown(signal, 128 + signal, Arc::clone(&flag))
            .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&flag)))
            .with_context(|| format!("cannot install the handler of signal {signal}"))?;
    }
    Ok(flag)
}

/// The console observer, stopping the fit once `stop` is raised.
struct StoppableObserver<'a> {
    console: ConsoleObserver,
    stop: &'a AtomicBool,
}

impl FitObserver for StoppableObserver<'_> {
    fn batch_done(&mut self, epoch: usize, done: usize, total: usize, loss: f32, acc: f32) {
        self.console.batch_done(epoch, done, total, loss, acc);
    }

    fn epoch_done(&mut self, epoch: usize, epochs: usize, metrics: &EpochMetrics) {
        self.console.epoch_done(epoch, epochs, metrics);
    }

    fn should_stop(&mut self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

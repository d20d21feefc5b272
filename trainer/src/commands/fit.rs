//! `trainer fit`: train, quantize, evaluate, write model.bin (and metrics).

use super::args;
use crate::arch::observer::{ConsoleObserver, EpochMetrics, FitObserver};
use crate::arch::Spec;
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

mod generic;

/// `--max-memory` unless given: an architecture needing more to train is refused.
pub const DEFAULT_MAX_MEMORY: &str = "8G";

/// Options of `trainer fit`.
#[derive(Args)]
pub struct FitArgs {
    /// Where to write the int8 model (its directory must exist; written atomically, together
    /// with the other outputs, at the end).
    #[arg(long, default_value = "model.bin")]
    pub out: PathBuf,
    /// Directory with the four IDX files (raw or .gz).
    #[arg(long, default_value = "data/mnist")]
    pub data: PathBuf,
    /// Passes over the training set.
    #[arg(long, default_value_t = 6, value_parser = args::at_least_one::<u32>, allow_negative_numbers = true)]
    pub epochs: u32,
    /// Images per gradient step.
    #[arg(long, default_value_t = 128, value_parser = args::at_least_one::<u32>, allow_negative_numbers = true)]
    pub batch_size: u32,
    /// Adam learning rate.
    #[arg(long, default_value_t = 0.001, value_parser = args::positive_number, allow_negative_numbers = true)]
    pub lr: f32,
    /// Seed for initialisation, shuffling and dropout.
    #[arg(long, default_value_t = 1, value_parser = args::whole_number::<u64>, allow_negative_numbers = true)]
    pub seed: u64,
    /// Worker threads (0 = all cores).
    #[arg(long, default_value_t = 0, value_parser = args::whole_number::<usize>, allow_negative_numbers = true)]
    pub threads: usize,
    /// Train on the first N training images only (all of them if there are fewer; the
    /// output says so).
    #[arg(long, value_name = "N", value_parser = args::at_least_one::<usize>, allow_negative_numbers = true)]
    pub train_limit: Option<usize>,
    /// Calibrate the int8 activation ranges on the first N training images [default: all the
    /// images trained on].
    #[arg(long, value_name = "N", value_parser = args::at_least_one::<u32>, allow_negative_numbers = true)]
    pub calibration_images: Option<u32>,
    /// Also keep the float weights in this file (see `trainer quantize --float`).
    #[arg(long)]
    pub save_float: Option<PathBuf>,
    /// Also write the training metrics as JSON to this file.
    #[arg(long)]
    pub metrics: Option<PathBuf>,
    /// The architecture to train: a preset (`tutorial`, `tutorial-full`) or a spec file (see
    /// docs/architecture-spec.md) [default: tutorial]. Every architecture is written as a
    /// model.bin in format 3.
    #[arg(long)]
    pub arch: Option<String>,
    /// L2 regularisation: adds l2·Σw² over every kernel to the loss.
    #[arg(long, default_value_t = 0.0, value_parser = args::non_negative_number, allow_negative_numbers = true)]
    pub l2: f32,
    /// L1 regularisation: adds l1·Σ|w| over every kernel to the loss.
    #[arg(long, default_value_t = 0.0, value_parser = args::non_negative_number, allow_negative_numbers = true)]
    pub l1: f32,
    /// Stop when validation loss has not improved for N epochs and keep the best epoch's
    /// weights.
    #[arg(long, value_name = "N", value_parser = args::at_least_one::<u32>, allow_negative_numbers = true)]
    pub early_stopping_patience: Option<u32>,
    /// Refuse, before training, an architecture whose float parameters (with their gradients
    /// and Adam moments) and one batch of activations need more memory than this (`512M`,
    /// `8G`, …).
    #[arg(long, value_name = "SIZE", default_value = DEFAULT_MAX_MEMORY, value_parser = args::byte_size)]
    pub max_memory: u64,
}

/// Runs `trainer fit`.
///
/// SIGINT (Ctrl-C) and SIGTERM stop the fit after the current batch; nothing is written, so
/// the previous output files stay as they were, and the error is a [`super::StoppedBySignal`]
/// (exit status 130 or 143). A second signal ends the process at once.
///
/// # Errors
/// Bad data, a failed fit, an interruption or an unwritable output, each named.
pub fn run(args: &FitArgs) -> Result<()> {
    let arch = args.arch.as_deref().unwrap_or("tutorial");
    generic::run(args, &Spec::load(arch)?)
}

/// The note that nothing was written, naming the files.
fn not_written(args: &FitArgs) -> String {
    let mut files = vec![args.out.display().to_string()];
    files.extend(args.save_float.iter().map(|p| p.display().to_string()));
    files.extend(args.metrics.iter().map(|p| p.display().to_string()));
    format!(
        "nothing written: {} left as {}",
        files.join(", "),
        if files.len() == 1 {
            "it was"
        } else {
            "they were"
        }
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

/// What [`stop_on_signals`] watches: `raised` once SIGINT or SIGTERM arrived, and which.
struct StopSignals {
    raised: Arc<AtomicBool>,
    signal: Arc<AtomicUsize>,
}

impl StopSignals {
    /// The number of the signal that arrived (SIGINT if none did).
    fn signal(&self) -> i32 {
        match self.signal.load(Ordering::SeqCst) {
            0 => signal_hook::consts::SIGINT,
            n => i32::try_from(n).unwrap_or(signal_hook::consts::SIGINT),
        }
    }
}

/// A flag raised by SIGINT or SIGTERM. While it is down a signal only raises it; once it is up
/// a second signal ends the process (exit status 128 + signal), as the user expects from a
/// second Ctrl-C.
fn stop_on_signals() -> Result<StopSignals> {
    use signal_hook::consts::{SIGINT, SIGTERM};
    let stop = StopSignals {
        raised: Arc::new(AtomicBool::new(false)),
        signal: Arc::new(AtomicUsize::new(0)),
    };
    for signal in [SIGINT, SIGTERM] {
        // Registered first, so it sees the flag as it was before this signal raised it.
        signal_hook::flag::register_conditional_shutdown(
            signal,
            128 + signal,
            Arc::clone(&stop.raised),
        )
        .and_then(|_| {
            signal_hook::flag::register_usize(
                signal,
                Arc::clone(&stop.signal),
                signal.unsigned_abs() as usize,
            )
        })
        .and_then(|_| signal_hook::flag::register(signal, Arc::clone(&stop.raised)))
        .with_context(|| format!("cannot install the handler of signal {signal}"))?;
    }
    Ok(stop)
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

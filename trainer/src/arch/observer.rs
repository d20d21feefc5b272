//! Progress of a fit ([`super::fit()`]): the Keras-style epoch metrics, the observer that
//! receives them, and its console and silent implementations.

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

/// What Keras prints after an epoch.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EpochMetrics {
    /// Mean training cross-entropy over the epoch's images, with dropout on, as the weights moved.
    pub loss: f32,
    /// Training accuracy over the epoch, same caveats as `loss`.
    pub acc: f32,
    /// Cross-entropy on the validation set after the epoch.
    pub val_loss: f32,
    /// Accuracy on the validation set after the epoch.
    pub val_acc: f32,
    /// Wall time of the epoch, validation included.
    pub seconds: f64,
}

/// Receives progress from [`super::fit()`]. Epochs are numbered from 1.
pub trait FitObserver {
    /// Batch `done` of `total` of `epoch` is done; `loss` and `acc` are the epoch's running means.
    fn batch_done(&mut self, epoch: usize, done: usize, total: usize, loss: f32, acc: f32);
    /// Epoch `epoch` of `epochs` is done, validation included.
    fn epoch_done(&mut self, epoch: usize, epochs: usize, metrics: &EpochMetrics);
    /// Asked after every batch: `true` stops the fit, which then fails with [`Interrupted`].
    /// The default never stops.
    fn should_stop(&mut self) -> bool {
        false
    }
}

/// The error of a fit stopped by its observer ([`FitObserver::should_stop`]), e.g. on Ctrl-C.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Interrupted {
    /// The epoch during which the fit stopped (from 1).
    pub epoch: usize,
}

impl std::fmt::Display for Interrupted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "training interrupted during epoch {}", self.epoch)
    }
}

impl std::error::Error for Interrupted {}

/// Keras-like console output: a progress bar per epoch on stderr (hidden when stderr is not a
/// terminal) and one summary line per epoch on stdout:
///
/// ```text
/// Epoch 1/6 - 1.23s - loss: 0.4321 - acc: 0.8765 - val_loss: 0.2345 - val_acc: 0.9321
/// ```
#[derive(Debug, Default)]
pub struct ConsoleObserver {
    /// Total epochs for the bar's "Epoch i/n" prefix; 0 when unknown.
    epochs: usize,
    /// The current epoch and its bar.
    bar: Option<(usize, ProgressBar)>,
}

impl ConsoleObserver {
    /// An observer for a fit of `epochs` epochs (only used to label the progress bar).
    pub fn new(epochs: usize) -> Self {
        Self { epochs, bar: None }
    }

    fn bar(&mut self, epoch: usize, total: usize) -> &ProgressBar {
        if self.bar.as_ref().is_none_or(|(e, _)| *e != epoch) {
            if let Some((_, old)) = self.bar.take() {
                old.finish_and_clear();
            }
            let bar =
                ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
            if let Ok(style) =
                ProgressStyle::with_template("{prefix} {pos:>4}/{len} [{bar:30}] {elapsed} - {msg}")
            {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix(match self.epochs {
                0 => format!("Epoch {epoch}"),
                n => format!("Epoch {epoch}/{n}"),
            });
            self.bar = Some((epoch, bar));
        }
        &self.bar.as_ref().expect("bar was just set").1
    }
}

impl FitObserver for ConsoleObserver {
    fn batch_done(&mut self, epoch: usize, done: usize, total: usize, loss: f32, acc: f32) {
        let bar = self.bar(epoch, total);
        bar.set_position(done as u64);
        bar.set_message(format!("loss: {loss:.4} - acc: {acc:.4}"));
    }

    fn epoch_done(&mut self, epoch: usize, epochs: usize, m: &EpochMetrics) {
        if let Some((_, bar)) = self.bar.take() {
            bar.finish_and_clear();
        }
        println!("{}", summary_line(epoch, epochs, m));
    }
}

/// The Keras-style summary of one epoch.
fn summary_line(epoch: usize, epochs: usize, m: &EpochMetrics) -> String {
    format!(
        "Epoch {epoch}/{epochs} - {:.2}s - loss: {:.4} - acc: {:.4} - val_loss: {:.4} - val_acc: {:.4}",
        m.seconds, m.loss, m.acc, m.val_loss, m.val_acc
    )
}

/// Reports nothing.
#[derive(Clone, Copy, Debug, Default)]
pub struct SilentObserver;

impl FitObserver for SilentObserver {
    fn batch_done(&mut self, _epoch: usize, _done: usize, _total: usize, _loss: f32, _acc: f32) {}

    fn epoch_done(&mut self, _epoch: usize, _epochs: usize, _metrics: &EpochMetrics) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_line_is_keras_style() {
        let m = EpochMetrics {
            loss: 0.43214,
            acc: 0.87649,
            val_loss: 0.2345,
            val_acc: 0.9321,
            seconds: 1.234,
        };
        assert_eq!(
            summary_line(1, 6, &m),
            "Epoch 1/6 - 1.23s - loss: 0.4321 - acc: 0.8765 - val_loss: 0.2345 - val_acc: 0.9321"
        );
    }

    #[test]
    fn console_observer_survives_a_whole_fit_protocol() {
        let mut observer = ConsoleObserver::new(2);
        let m = EpochMetrics {
            loss: 1.0,
            acc: 0.5,
            val_loss: 1.0,
            val_acc: 0.5,
            seconds: 0.1,
        };
        for epoch in 1..=2 {
            for done in 1..=3 {
                observer.batch_done(epoch, done, 3, 1.0, 0.5);
            }
            observer.epoch_done(epoch, 2, &m);
        }
        assert!(observer.bar.is_none());
    }
}

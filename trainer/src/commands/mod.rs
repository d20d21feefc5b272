//! The CLI's subcommands, one module each: its clap `Args` and its `run`.

pub mod args;
pub mod eval;
pub mod fit;
pub mod import;
pub mod infer;
pub mod predict;
pub mod quantize;
pub mod report;
pub mod summary;

/// The error of a command stopped by a signal (Ctrl-C, SIGTERM) before it wrote anything:
/// `trainer` then exits with status 128 + the signal's number (130, 143), as the shell
/// reports for a process the signal ended.
#[derive(Debug)]
pub struct StoppedBySignal {
    /// The signal's number.
    pub signal: i32,
    /// What was interrupted and what was left as it was.
    pub message: String,
}

impl std::fmt::Display for StoppedBySignal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for StoppedBySignal {}

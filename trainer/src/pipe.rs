//! A closed output pipe (`trainer summary | head -2`) ends the process quietly, as it ends
//! `cat`: Rust ignores SIGPIPE, so a write to a pipe whose reader has gone fails and
//! `println!` panics; [`exit_quietly_when_closed`] makes SIGPIPE end the process instead, with
//! status [`BROKEN_PIPE_STATUS`] and no message. Used by `trainer` and `xtask`.

use signal_hook::consts::SIGPIPE;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Exit status after a write to a closed pipe: 128 + SIGPIPE = 141, what a shell reports for
/// `cat` in the same place.
pub const BROKEN_PIPE_STATUS: i32 = 128 + SIGPIPE;

/// From now on a write to a closed stdout or stderr pipe ends the process at once with
/// [`BROKEN_PIPE_STATUS`], printing nothing. Files are committed only at the end of a
/// command ([`crate::atomic::Outputs`]), so this never leaves half an output.
///
/// # Errors
/// If the signal handler cannot be installed.
pub fn exit_quietly_when_closed() -> std::io::Result<()> {
    signal_hook::flag::register_conditional_shutdown(
        SIGPIPE,
        BROKEN_PIPE_STATUS,
        Arc::new(AtomicBool::new(true)),
    )
    .map(drop)
}

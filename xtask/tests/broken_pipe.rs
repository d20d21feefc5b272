//! `cargo xtask … | head`: a closed output pipe ends xtask quietly with status 141
//! (128 + SIGPIPE, what a shell reports for `cat`), not with a panic (status 101), as it
//! ends `trainer` (trainer/tests/trust_at_the_edges.rs).

use std::process::{Command, Stdio};

/// The write end of a pipe whose reader has already gone: the stdin of a `true` that has
/// exited.
fn closed_pipe() -> Stdio {
    let mut reader = Command::new("true").stdin(Stdio::piped()).spawn().unwrap();
    let write_end = reader.stdin.take().unwrap();
    reader.wait().unwrap();
    Stdio::from(write_end)
}

#[test]
fn a_closed_pipe_ends_xtask_quietly() {
    // A missing model is refused at once, "error: …" on stderr: here a closed pipe as well as
    // stdout (without the handler, eprintln! panics: status 101).
    let status = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["qemu", "--model", "/no-such-dir/model.bin"])
        .stdout(closed_pipe())
        .stderr(closed_pipe())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(141), "{status}");
}

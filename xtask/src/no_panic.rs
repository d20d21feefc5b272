//! `cargo xtask no-panic`: proves at link time that loading a model and running an
//! inference cannot reach a panic, on every Cortex-M target (crate `tests/no-panic`).
//!
//! That crate's `#[panic_handler]` calls a function defined nowhere, so its release
//! build (LTO, like the firmware) links only if no panic is reachable. The check is
//! itself checked: with the feature `prove-check-works`, which adds one reachable
//! panic, the link must fail, naming the missing function.

use crate::{prereq, workspace_root};
use anyhow::{bail, ensure, Context, Result};
use std::process::Command;

/// The symbol the panic handler of `tests/no-panic` refers to.
const MISSING_SYMBOL: &str = "infer_core_can_panic";

fn build(target: &str, prove: bool) -> Result<std::process::Output> {
    let dir = workspace_root().join("tests/no-panic");
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(&dir)
        .args(["build", "--release", "--target", target, "--target-dir"])
        .arg(dir.join("target"))
        // The host build's settings must not leak into the cross build.
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_BUILD_TARGET");
    if prove {
        cmd.args(["--features", "prove-check-works"]);
    }
    cmd.output()
        .context("cannot run cargo to build tests/no-panic")
}

/// Builds `tests/no-panic` for every target (must link), then with a planted panic
/// (must not).
///
/// # Errors
/// A target where a panic is reachable (with the linker's message), or a check that
/// could not fail.
pub fn run() -> Result<()> {
    let targets = prereq::targets();
    for &target in &targets {
        eprintln!("==> no-panic link check: infer-core loading + inference on {target}");
        let out = build(target, false)?;
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            if stderr.contains(MISSING_SYMBOL) {
                bail!(
                    "a panic is reachable from StackFile::decode / the typed layers / stack::run \
                     on {target}: the link needs the panic handler.\n{stderr}\n\
                     To find it: build tests/no-panic with \
                     RUSTFLAGS=\"-C link-arg=--defsym={MISSING_SYMBOL}=0\" and \
                     CARGO_PROFILE_RELEASE_DEBUG=true, then look for the calls to \
                     core::panicking in `llvm-objdump -d` and their source lines with \
                     `llvm-addr2line -i`"
                );
            }
            bail!("building tests/no-panic for {target} failed:\n{stderr}");
        }
    }
    let target = targets[0];
    eprintln!("==> no-panic link check must fail with a planted panic ({target})");
    let out = build(target, true)?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    ensure!(
        !out.status.success() && stderr.contains(MISSING_SYMBOL),
        "the no-panic check cannot fail: a reachable panic (feature prove-check-works) \
         still linked, or failed for another reason:\n{stderr}"
    );
    Ok(())
}

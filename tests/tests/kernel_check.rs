//! infer-core's assembly kernels on the Cortex-M55 under QEMU (`tests/kernel-check`: its own
//! workspace, target and runner): every Helium (MVE) and DSP kernel against its portable
//! twin, bit for bit, on random sizes and values. The host tests can only run the twins;
//! this runs the assembly.

use anyhow::{ensure, Context, Result};
use e2e_tests::workspace_root;
use std::process::Command;

#[test]
fn the_m55_assembly_kernels_equal_their_portable_twins_in_qemu() -> Result<()> {
    let dir = workspace_root().join("tests/kernel-check");
    // `cargo run --release` in the crate; its runner is QEMU's mps3-an547. The host test's
    // own settings stay out; `timeout` ends QEMU too if it hangs.
    let out = Command::new("timeout")
        .arg("600")
        .arg(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["run", "--release", "--quiet"])
        .current_dir(&dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_MAKEFLAGS")
        .output()
        .context("starting cargo in tests/kernel-check")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    ensure!(
        out.status.success(),
        "tests/kernel-check failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        stdout.contains("kernel-check: 300 cases, every result equal to the portable twin's"),
        "unexpected output:\n{stdout}"
    );
    Ok(())
}

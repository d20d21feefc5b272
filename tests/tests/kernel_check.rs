//! infer-core's assembly kernels under QEMU (`tests/kernel-check`: its own workspace, target
//! and runners): every Helium (MVE) and DSP kernel against its portable twin, bit for bit,
//! on random sizes and values, on the Cortex-M55 and (the DSP kernels alone) on the
//! Cortex-M4F, the pair-patch loop on the Cortex-M3 and the word-weight loop on the
//! Cortex-M0. The host tests can only run the twins; this runs the assembly.

use anyhow::{ensure, Result};
use e2e_tests::{run_own_crate, workspace_root};

/// Runs the check for `target` (`None`: the crate's default, the Cortex-M55).
fn kernel_check(target: Option<&str>) -> Result<()> {
    let stdout = run_own_crate(&workspace_root().join("tests/kernel-check"), target)?;
    ensure!(
        stdout.contains("kernel-check: 300 cases, every result equal to the portable twin's"),
        "unexpected output:\n{stdout}"
    );
    Ok(())
}

#[test]
fn the_m55_assembly_kernels_equal_their_portable_twins_in_qemu() -> Result<()> {
    kernel_check(None)
}

#[test]
fn the_m4f_assembly_kernels_equal_their_portable_twins_in_qemu() -> Result<()> {
    kernel_check(Some("thumbv7em-none-eabihf"))
}

#[test]
fn the_m3_assembly_kernels_equal_their_portable_twins_in_qemu() -> Result<()> {
    kernel_check(Some("thumbv7m-none-eabi"))
}

#[test]
fn the_m0_assembly_kernels_equal_their_portable_twins_in_qemu() -> Result<()> {
    kernel_check(Some("thumbv6m-none-eabi"))
}

//! infer-core's assembly kernels on the Cortex-M55 under QEMU (`tests/kernel-check`: its own
//! workspace, target and runner): every Helium (MVE) and DSP kernel against its portable
//! twin, bit for bit, on random sizes and values. The host tests can only run the twins;
//! this runs the assembly.

use anyhow::{ensure, Result};
use e2e_tests::{run_own_crate, workspace_root};

#[test]
fn the_m55_assembly_kernels_equal_their_portable_twins_in_qemu() -> Result<()> {
    // `cargo run --release` in the crate; its runner is QEMU's mps3-an547.
    let stdout = run_own_crate(&workspace_root().join("tests/kernel-check"))?;
    ensure!(
        stdout.contains("kernel-check: 300 cases, every result equal to the portable twin's"),
        "unexpected output:\n{stdout}"
    );
    Ok(())
}

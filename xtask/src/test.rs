//! `cargo xtask test`: every check, cheapest first, the same on a laptop and in CI.

use crate::{cargo, has_mnist, prereq, run_step, workspace_root};
use anyhow::Result;

/// Options of `cargo xtask test`.
#[derive(clap::Args)]
pub struct TestArgs {
    /// Skip `cargo fmt --check` and clippy (only the tests).
    #[arg(long)]
    pub no_lint: bool,
    /// Skip the 20-second smoke run of each fuzz target (nightly + cargo-fuzz, installed
    /// if missing; the fuzz bodies still run on stable in `cargo test`).
    #[arg(long)]
    pub no_fuzz: bool,
}

/// Installs prerequisites, fetches data, then runs fmt, clippy, docs and all tests.
///
/// # Errors
/// The first step that fails, by name.
pub fn run(args: &TestArgs) -> Result<()> {
    prereq::ensure_targets()?;
    prereq::ensure_qemu()?;
    let data = workspace_root().join("data/mnist");
    if !has_mnist(&data) {
        crate::fetch_mnist::run(&data)?;
    }
    let firmware = workspace_root().join("firmware-example");
    if !args.no_lint {
        run_step(
            "cargo fmt --check",
            cargo().args(["fmt", "--all", "--", "--check"]),
        )?;
        run_step(
            "cargo fmt --check (firmware-example)",
            cargo()
                .current_dir(&firmware)
                .args(["fmt", "--", "--check"]),
        )?;
        for dir in [
            "tests/no-panic",
            "tests/own-firmware",
            "tests/kernel-check",
            "fuzz",
        ] {
            run_step(
                &format!("cargo fmt --check ({dir})"),
                cargo()
                    .current_dir(workspace_root().join(dir))
                    .args(["fmt", "--", "--check"]),
            )?;
        }
        run_step(
            "cargo clippy --workspace --all-targets -- -D warnings",
            cargo().args([
                "clippy",
                "--workspace",
                "--all-targets",
                "--release",
                "--",
                "-D",
                "warnings",
            ]),
        )?;
        run_step(
            "cargo clippy (firmware-example) -- -D warnings",
            cargo()
                .current_dir(&firmware)
                .args(["clippy", "--release", "--", "-D", "warnings"]),
        )?;
        // The generated network of a spec'd build is code too: lint it, with the committed
        // two-block model (built for the micro:bit, the tightest board).
        run_step(
            "cargo clippy (firmware-example, FIRMWARE_SPEC=models/two-blocks.toml, microbit) -- -D warnings",
            cargo()
                .current_dir(&firmware)
                .args([
                    "clippy",
                    "--release",
                    "--target",
                    "thumbv6m-none-eabi",
                    "--",
                    "-D",
                    "warnings",
                ])
                .env("FIRMWARE_SPEC", "../models/two-blocks.toml")
                .env("FIRMWARE_MODEL", "assets/two-blocks.bin"),
        )?;
        // The firmware of its own that `tests/tests/own_firmware.rs` runs: its generated
        // network included.
        run_step(
            "cargo clippy (tests/own-firmware) -- -D warnings",
            cargo()
                .current_dir(workspace_root().join("tests/own-firmware"))
                .args(["clippy", "--release", "--", "-D", "warnings"]),
        )?;
        // The kernel checks that `tests/tests/kernel_check.rs` runs: the Cortex-M55's (the
        // crate's default target), the Cortex-M4F's and the Cortex-M3's.
        run_step(
            "cargo clippy (tests/kernel-check) -- -D warnings",
            cargo()
                .current_dir(workspace_root().join("tests/kernel-check"))
                .args(["clippy", "--release", "--", "-D", "warnings"]),
        )?;
        for target in ["thumbv7em-none-eabihf", "thumbv7m-none-eabi"] {
            run_step(
                &format!("cargo clippy (tests/kernel-check, {target}) -- -D warnings"),
                cargo()
                    .current_dir(workspace_root().join("tests/kernel-check"))
                    .args(["clippy", "--release", "--target", target])
                    .args(["--", "-D", "warnings"]),
            )?;
        }
        run_step(
            "cargo doc --workspace (warnings are errors)",
            cargo()
                .args(["doc", "--no-deps", "--workspace"])
                .env("RUSTDOCFLAGS", "-D warnings"),
        )?;
    }
    run_step(
        "cargo build -p infer-core --target thumbv6m-none-eabi (no_std, no allocator)",
        cargo().args([
            "build",
            "--release",
            "-p",
            "infer-core",
            "--target",
            "thumbv6m-none-eabi",
        ]),
    )?;
    crate::no_panic::run()?;
    run_step(
        "cargo test --workspace --release",
        cargo().args(["test", "--workspace", "--release", "--no-fail-fast"]),
    )?;
    if !args.no_fuzz {
        crate::fuzz::run(&crate::fuzz::FuzzArgs {
            seconds: 20,
            target: None,
        })?;
    }
    eprintln!("==> all checks passed");
    Ok(())
}

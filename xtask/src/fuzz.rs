//! `cargo xtask fuzz`: runs the cargo-fuzz targets in `fuzz/` (nightly, libFuzzer) for a
//! fixed time each and reports how many inputs ran; any crash fails.
//!
//! Installs what it needs when missing: the nightly toolchain (rustup) and cargo-fuzz
//! (`cargo install cargo-fuzz --version 0.13.2 --locked`, from crates.io). The corpus grows in
//! `fuzz/corpus/<target>/` (not committed), starting from `fuzz/seeds/<target>/` and, for
//! the model loader (`stack_loader`), the real model (of which libFuzzer reads the first
//! `-max_len` bytes).

use crate::workspace_root;
use anyhow::{bail, ensure, Context, Result};
use std::process::{Command, Stdio};

/// The cargo-fuzz release installed when none is.
const CARGO_FUZZ: &str = "0.13.2";

/// The fuzz targets, as named in `fuzz/Cargo.toml`.
pub const TARGETS: &[&str] = &["stack_loader", "idx_reader"];

/// The one-line help of `cargo xtask fuzz`, naming every target.
pub fn about() -> String {
    format!(
        "Run the cargo-fuzz targets ({}: model loader, IDX reader) for a while each (nightly)",
        TARGETS.join(", ")
    )
}

/// Options of `cargo xtask fuzz`.
#[derive(clap::Args)]
pub struct FuzzArgs {
    /// Seconds per target.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Only this target (default: all).
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(TARGETS))]
    pub target: Option<String>,
}

/// `cargo` of the nightly toolchain, with the outer cargo's toolchain settings removed
/// (`cargo xtask` runs under stable, and cargo-fuzz must build with nightly).
fn nightly_cargo() -> Command {
    let mut cmd = Command::new("cargo");
    cmd.arg("+nightly")
        .current_dir(workspace_root())
        .env_remove("CARGO")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("RUSTDOC")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET");
    cmd
}

fn quiet_success(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs the nightly toolchain and cargo-fuzz if missing.
fn ensure_tools() -> Result<()> {
    if !quiet_success(nightly_cargo().arg("--version")) {
        crate::run_step(
            "rustup toolchain install nightly --profile minimal",
            Command::new("rustup").args([
                "toolchain",
                "install",
                "nightly",
                "--profile",
                "minimal",
            ]),
        )?;
    }
    if !quiet_success(nightly_cargo().args(["fuzz", "--version"])) {
        crate::run_step(
            &format!("cargo install cargo-fuzz --version {CARGO_FUZZ} --locked"),
            Command::new("cargo")
                .args(["install", "cargo-fuzz", "--version", CARGO_FUZZ, "--locked"])
                .env_remove("CARGO_TARGET_DIR"),
        )?;
    }
    Ok(())
}

/// Runs one target for `seconds`; returns the number of inputs executed.
fn run_target(target: &str, seconds: u64) -> Result<u64> {
    let root = workspace_root();
    let corpus = root.join("fuzz/corpus").join(target);
    std::fs::create_dir_all(&corpus)
        .with_context(|| format!("cannot create {}", corpus.display()))?;
    if target == "stack_loader" {
        let real = root.join("firmware-example/assets/model.bin");
        std::fs::copy(&real, corpus.join("real-model.bin"))
            .with_context(|| format!("cannot copy {}", real.display()))?;
    }
    eprintln!("==> cargo +nightly fuzz run {target} (-max_total_time={seconds})");
    let out = nightly_cargo()
        .args(["fuzz", "run", target])
        .arg(&corpus)
        .arg(root.join("fuzz/seeds").join(target))
        .args([
            "--",
            &format!("-max_total_time={seconds}"),
            // Small inputs run fast: the seed model loads and infers in microseconds; the
            // real model is explored through its first 2 KB here, and exhaustively for
            // corruption by tests/tests/model_corruption.rs.
            "-max_len=2048",
            "-timeout=10",
            "-print_final_stats=1",
        ])
        .stderr(Stdio::piped())
        .output()
        .context("cannot run cargo fuzz")?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        let tail: Vec<&str> = stderr.lines().rev().take(60).collect();
        let tail: Vec<&str> = tail.into_iter().rev().collect();
        bail!(
            "fuzz target {target} failed ({}); the crashing input is in fuzz/artifacts/{target}/\n{}",
            out.status,
            tail.join("\n")
        );
    }
    let execs = stderr
        .lines()
        .find_map(|l| l.strip_prefix("stat::number_of_executed_units:"))
        .and_then(|n| n.trim().parse().ok())
        .with_context(|| format!("no execution count in the output of {target}:\n{stderr}"))?;
    ensure!(execs > 0, "fuzz target {target} ran no input");
    Ok(execs)
}

/// Runs every target (or the one asked for) for `args.seconds` each.
///
/// # Errors
/// A crash (the input is saved under `fuzz/artifacts/`), or tools that cannot be installed.
pub fn run(args: &FuzzArgs) -> Result<()> {
    ensure_tools()?;
    let targets: Vec<&str> = match &args.target {
        Some(t) => vec![t.as_str()],
        None => TARGETS.to_vec(),
    };
    let mut summary = Vec::new();
    for target in targets {
        let execs = run_target(target, args.seconds)?;
        summary.push(format!(
            "{target}: {execs} inputs in {} s, no crash",
            args.seconds
        ));
    }
    for line in summary {
        eprintln!("fuzz: {line}");
    }
    Ok(())
}

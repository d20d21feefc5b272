//! Helpers shared by the end-to-end tests: where things are, how to run the trainer
//! binary and the firmware under QEMU, and how to read the firmware's output.

pub mod fuzz;
pub mod stack_model;

use anyhow::{bail, ensure, Context, Result};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The repository root.
pub fn workspace_root() -> PathBuf {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    here.parent().unwrap_or(here).to_path_buf()
}

/// The MNIST data directory the tests use (`data/mnist`, made by `cargo xtask fetch-mnist`).
///
/// # Errors
/// If it does not exist, saying how to make it.
pub fn data_dir() -> Result<PathBuf> {
    let dir = workspace_root().join("data/mnist");
    ensure!(
        dir.join("t10k-images-idx3-ubyte").exists() || dir.join("t10k-images-idx3-ubyte.gz").exists(),
        "{} has no MNIST data: run `cargo xtask fetch-mnist` (or `cargo xtask test`, which fetches it)",
        dir.display()
    );
    Ok(dir)
}

/// The `trainer` binary built by this `cargo test` run (same profile), or `$TRAINER_BIN`.
///
/// # Errors
/// If it has not been built.
pub fn trainer_bin() -> Result<PathBuf> {
    if let Some(path) = std::env::var_os("TRAINER_BIN") {
        return Ok(PathBuf::from(path));
    }
    // Test executables live in target/<profile>/deps; binaries one level up.
    let exe = std::env::current_exe().context("locating the test executable")?;
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .context("test executable has no profile dir")?;
    let bin = profile_dir.join(format!("trainer{}", std::env::consts::EXE_SUFFIX));
    ensure!(
        bin.exists(),
        "{} is missing: run the tests with `cargo test --workspace` (which builds it) or set TRAINER_BIN",
        bin.display()
    );
    Ok(bin)
}

/// Runs the trainer with `args`; fails with its stderr if it exits non-zero.
///
/// # Errors
/// If it cannot start or fails.
pub fn run_trainer(args: &[&str]) -> Result<Output> {
    let out = Command::new(trainer_bin()?)
        .args(args)
        .current_dir(workspace_root())
        .output()
        .context("starting trainer")?;
    if !out.status.success() {
        bail!(
            "trainer {} failed ({}):\n{}\n{}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(out)
}

pub use xtask::report::{parse as parse_firmware_output, DigitLine, FirmwareReport, Summary};

/// Builds the firmware around `model` and `digits` and runs it under QEMU
/// (`cargo run --release` in `firmware-example/`, whose runner is QEMU with a timeout).
///
/// # Errors
/// If the build or QEMU fails (non-zero exit), with the output.
pub fn run_firmware(model: &Path, digits: &Path) -> Result<String> {
    let dir = workspace_root().join("firmware-example");
    let out = own_build(Command::new(cargo_program()), &dir)
        .args(["run", "--release", "--quiet"])
        .env("FIRMWARE_MODEL", model)
        .env("FIRMWARE_DIGITS", digits)
        .env_remove("FIRMWARE_SPEC")
        .output()
        .context("starting cargo for the firmware")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "firmware run failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

/// `command` (cargo, or a wrapper of it) in `dir`, a crate with its own target and target
/// dir (the firmware, or a crate of its own), with the host build's settings kept out.
fn own_build(mut command: Command, dir: &Path) -> Command {
    command
        .current_dir(dir)
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_MAKEFLAGS");
    command
}

/// The cargo that runs the tests.
fn cargo_program() -> std::ffi::OsString {
    std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into())
}

/// Runs `cargo run --release --quiet` in `dir`, a firmware crate of its own (its own
/// workspace, `.cargo/config.toml` with the target and the QEMU runner), as its user would
/// (for `target` if given, else the crate's default target): the host test's own cargo
/// settings stay out, and `timeout` ends QEMU too if it hangs. Returns the standard output.
///
/// # Errors
/// If cargo cannot start, or the build or the run fails (non-zero exit), with the output.
pub fn run_own_crate(dir: &Path, target: Option<&str>) -> Result<String> {
    let mut timeout = Command::new("timeout");
    timeout.arg("600").arg(cargo_program());
    let out = own_build(timeout, dir)
        .args(["run", "--release", "--quiet"])
        .args(target.map(|t| ["--target", t]).into_iter().flatten())
        .output()
        .with_context(|| format!("starting cargo in {}", dir.display()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    ensure!(
        out.status.success(),
        "{} failed ({}):\n{stdout}\n{}",
        dir.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

pub use model_spec::boards::{Board, BOARDS};

/// The board called `name` (one of [`BOARDS`]).
///
/// # Panics
/// If there is no such board: a test's own mistake.
pub fn board(name: &str) -> &'static Board {
    BOARDS
        .iter()
        .find(|b| b.name == name)
        .unwrap_or_else(|| panic!("no board {name} among e2e_tests::BOARDS"))
}

/// Builds the firmware for `board` around `model` and `digits` (extra build
/// environment in `env`, e.g. `FIRMWARE_SPEC`; cargo features `features`, e.g.
/// `small-ram`) and runs it under QEMU; returns whether it exited 0 and its stdout.
///
/// Builds for one target share an ELF path, so concurrent callers are serialized until
/// their ELF is copied away.
///
/// # Errors
/// If the build fails or QEMU cannot start.
pub fn run_firmware_on(
    board: &Board,
    model: &Path,
    digits: &Path,
    (env, features): (&[(&str, &str)], &[&str]),
) -> Result<(bool, String)> {
    let elf = tempfile::NamedTempFile::new().context("temporary ELF")?;
    let build = build_firmware_on(board, model, digits, (env, features), Some(elf.path()))?;
    ensure!(
        build.status.success(),
        "firmware build for {} failed ({}):\n{}",
        board.name,
        build.status,
        String::from_utf8_lossy(&build.stderr)
    );
    let out = Command::new("timeout")
        .args([
            "600",
            "qemu-system-arm",
            "-cpu",
            board.cpu,
            "-machine",
            board.name,
        ])
        .args([
            "-nographic",
            "-semihosting-config",
            "enable=on,target=native",
        ])
        .args(["-icount", "shift=0", "-kernel"])
        .arg(elf.path())
        .stdin(std::process::Stdio::null())
        .output()
        .context("starting qemu-system-arm")?;
    Ok((
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    ))
}

/// Builds the firmware for `board` around `model` and `digits` (extra build environment
/// in `env`, cargo features `features`) and, if it succeeds and `elf` is given, copies the
/// ELF there. Returns cargo's
/// output whether the build succeeded or not (a refused model fails the build, with the
/// reason on stderr).
///
/// Builds for one target share an ELF path and `cargo` serializes builds of one target
/// directory anyway, so concurrent callers are serialized until their ELF is copied away.
///
/// # Errors
/// If cargo cannot start or the ELF cannot be copied.
pub fn build_firmware_on(
    board: &Board,
    model: &Path,
    digits: &Path,
    (env, features): (&[(&str, &str)], &[&str]),
    elf: Option<&Path>,
) -> Result<Output> {
    static BUILD: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let dir = workspace_root().join("firmware-example");
    let _guard = BUILD.lock().unwrap_or_else(|e| e.into_inner());
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.args(["build", "--release", "--quiet", "--target", board.target])
        .current_dir(&dir)
        .env("FIRMWARE_BOARD", board.name)
        .env("FIRMWARE_MODEL", model)
        .env("FIRMWARE_DIGITS", digits)
        .env_remove("FIRMWARE_SPEC")
        .env_remove("FIRMWARE_INSNS_PER_TICK")
        .env_remove("CARGO_TARGET_DIR")
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .env_remove("CARGO_MAKEFLAGS");
    for (key, value) in env {
        cmd.env(key, value);
    }
    for feature in features {
        cmd.args(["--features", feature]);
    }
    let out = cmd.output().context("starting cargo for the firmware")?;
    if let (true, Some(elf)) = (out.status.success(), elf) {
        let built = dir
            .join("target")
            .join(board.target)
            .join("release/firmware-example");
        std::fs::copy(&built, elf).with_context(|| format!("copying {}", built.display()))?;
    }
    Ok(out)
}

/// The number after `key` (e.g. `"load_stack_bytes="`) in the firmware's output.
pub fn report_number(stdout: &str, key: &str) -> Result<u64> {
    let at = stdout
        .find(key)
        .with_context(|| format!("no {key} in:\n{stdout}"))?;
    let digits: String = stdout[at + key.len()..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits
        .parse()
        .with_context(|| format!("{key} is not followed by a number"))
}

/// Checks that the build's RAM estimate (`ram_estimate_bytes`) covers what a firmware run
/// of a network of `ops` operations on `board` printed: the deepest stack while it
/// classified, and while it loaded the model (from `main`, whose own frame and the reset
/// handler's take under 512 bytes), the latter within `model_spec::codegen`'s `LOAD_STACK`
/// and the typed network (`STACK_PER_OP` per operation).
pub fn check_ram_estimate(board: &str, stdout: &str, ops: usize) -> Result<()> {
    use model_spec::codegen::{LOAD_STACK, STACK_PER_OP};
    let estimate = report_number(stdout, "ram_estimate_bytes=")?;
    let statics = report_number(stdout, "static_ram_bytes=")?;
    let load = report_number(stdout, "load_stack_bytes=")?;
    let peak = report_number(stdout, "stack_peak_bytes=")?;
    // Loading holds one decoded operation at a time (issue 11, point 7) and the typed
    // network it builds.
    ensure!(
        load + 512 <= (LOAD_STACK + STACK_PER_OP * ops) as u64,
        "{board}: loading the model took {load} bytes of stack"
    );
    ensure!(
        peak + statics <= estimate && load + 512 + statics <= estimate,
        "{board}: measured more RAM than the build estimated:\n{stdout}"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_firmware_contract_lines() {
        let text = "boot\ndigit 0 label=7 pred=7\ndigit 1 label=2 pred=3\nsummary: correct=1 total=2 insns_per_inference=123 stack_peak_bytes=456\n";
        let r = parse_firmware_output(text).unwrap();
        assert_eq!(
            r.digits,
            vec![
                DigitLine {
                    index: 0,
                    label: 7,
                    pred: 7
                },
                DigitLine {
                    index: 1,
                    label: 2,
                    pred: 3
                }
            ]
        );
        assert_eq!(
            r.summary,
            Summary {
                correct: 1,
                total: 2,
                insns_per_inference: 123,
                stack_peak_bytes: 456
            }
        );
        assert!(parse_firmware_output("digit 0 label=7 pred=7\n").is_err());
        assert!(parse_firmware_output(
            "summary: correct=x total=1 insns_per_inference=1 stack_peak_bytes=1"
        )
        .is_err());
    }
}

//! `cargo xtask qemu`: builds `firmware-example/` around a model and the first
//! test digits, runs it under QEMU and checks that it reported a summary.
//!
//! The digits file handed to the firmware (`FIRMWARE_DIGITS`) is specified in
//! `firmware-example/README.md`, "Digits file"; see [`write_digits_file`].

use crate::workspace_root;
use anyhow::{bail, ensure, Context, Result};
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};
use trainer::data::{self, Dataset};

/// The line the firmware prints last, before exiting successfully.
const SUMMARY_PREFIX: &str = "summary:";

/// An emulated board: how to build for it and how QEMU runs it.
#[derive(Debug, PartialEq, Eq)]
pub struct Board {
    /// The `--board` name.
    pub name: &'static str,
    /// Rust target triple of the firmware.
    pub target: &'static str,
    /// QEMU `-cpu`.
    pub cpu: &'static str,
    /// QEMU `-machine`.
    pub machine: &'static str,
    /// Instructions per SysTick tick under `-icount shift=0`; passed to the
    /// firmware as `FIRMWARE_INSNS_PER_TICK`. MPS2 clocks SysTick at 25 MHz
    /// and icount charges 1 ns per instruction: 40.
    pub insns_per_tick: u32,
}

/// The boards `--board` accepts.
pub const BOARDS: &[Board] = &[Board {
    name: "mps2-an386",
    target: "thumbv7em-none-eabihf",
    cpu: "cortex-m4",
    machine: "mps2-an386",
    insns_per_tick: 40,
}];

/// Arguments of `cargo xtask qemu`.
#[derive(Debug, clap::Args)]
pub struct QemuArgs {
    /// The model file to embed (as written by the trainer).
    #[arg(long)]
    pub model: PathBuf,
    /// Directory with the MNIST IDX files (see `cargo xtask fetch-mnist`).
    #[arg(long, default_value = "data/mnist")]
    pub data: PathBuf,
    /// Board to emulate.
    #[arg(long, default_value = "mps2-an386", value_parser = parse_board)]
    pub board: &'static Board,
    /// How many test images, from the first, to embed and classify.
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: u64,
    /// Seconds QEMU may run before it is killed and the task fails.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
}

impl QemuArgs {
    /// The defaults for `model` on `data`: first 100 digits, mps2-an386.
    pub fn for_model(model: PathBuf, data: PathBuf) -> Self {
        Self {
            model,
            data,
            board: &BOARDS[0],
            count: 100,
            timeout_secs: 600,
        }
    }
}

fn parse_board(name: &str) -> Result<&'static Board, String> {
    BOARDS
        .iter()
        .find(|board| board.name == name)
        .ok_or_else(|| {
            let known: Vec<_> = BOARDS.iter().map(|board| board.name).collect();
            format!("unknown board `{name}`; known boards: {}", known.join(", "))
        })
}

/// Builds the firmware for `args.board` around `args.model` and the first
/// `args.count` test digits of `args.data`, runs it in QEMU with its output
/// streamed to stdout, and checks the run.
///
/// # Errors
///
/// Unreadable model or dataset, a failed firmware build, QEMU missing, failing,
/// timing out, or exiting without a `summary:` line for `count` digits.
pub fn run(args: &QemuArgs) -> Result<()> {
    let board = args.board;
    let count = usize::try_from(args.count).context("--count does not fit in memory")?;
    let model = fs::canonicalize(&args.model)
        .with_context(|| format!("cannot find the model {}", args.model.display()))?;

    let dataset = data::load_test(&args.data)
        .with_context(|| format!("cannot load the test set from {}", args.data.display()))?;
    let out_dir = workspace_root().join("target").join("xtask");
    fs::create_dir_all(&out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    let digits = out_dir.join(format!("digits-{count}.bin"));
    write_digits_file(&dataset, count, &digits)?;

    let elf = build_firmware(board, &model, &digits)?;
    let summary = run_qemu(board, &elf, Duration::from_secs(args.timeout_secs))?;
    let expected_total = format!(" total={count} ");
    ensure!(
        summary.contains(&expected_total),
        "the firmware classified a different number of digits than the {count} embedded: {summary}"
    );
    Ok(())
}

/// Writes the first `count` images of `dataset` to `path` as the firmware's digits file
/// (format: [`trainer::data::digit_records`]).
///
/// # Errors
///
/// Images that are not 28×28, `count` of zero or larger than the dataset, or a failed write.
pub fn write_digits_file(dataset: &Dataset, count: usize, path: &Path) -> Result<()> {
    let bytes = data::digit_records(dataset, count)?;
    fs::write(path, &bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// Builds the firmware in release mode and returns the ELF's path.
fn build_firmware(board: &Board, model: &Path, digits: &Path) -> Result<PathBuf> {
    let firmware_dir = workspace_root().join("firmware-example");
    let target_dir = firmware_dir.join("target");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&firmware_dir)
        .args([
            "build",
            "--release",
            "--target",
            board.target,
            "--target-dir",
        ])
        .arg(&target_dir)
        .env("FIRMWARE_MODEL", model)
        .env("FIRMWARE_DIGITS", digits)
        .env("FIRMWARE_INSNS_PER_TICK", board.insns_per_tick.to_string())
        .status()
        .context("cannot run cargo to build the firmware")?;
    ensure!(status.success(), "building the firmware failed ({status})");
    Ok(target_dir
        .join(board.target)
        .join("release")
        .join("firmware-example"))
}

/// Which output of QEMU a line came from.
#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

/// Runs `elf` under QEMU, echoing its output, and returns the summary line.
fn run_qemu(board: &Board, elf: &Path, timeout: Duration) -> Result<String> {
    let mut child = Command::new("qemu-system-arm")
        .args(["-cpu", board.cpu, "-machine", board.machine, "-nographic"])
        .args(["-semihosting-config", "enable=on,target=native"])
        .args(["-icount", "shift=0", "-kernel"])
        .arg(elf)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start qemu-system-arm (is QEMU installed?)")?;
    let lines = forward_lines(&mut child);

    let deadline = Instant::now() + timeout;
    let mut summary = None;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok((Stream::Stdout, line)) => {
                println!("{line}");
                if line.starts_with(SUMMARY_PREFIX) {
                    summary = Some(line);
                }
            }
            Ok((Stream::Stderr, line)) => eprintln!("{line}"),
            Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {
                // Best effort: the bail below is the error that matters.
                let _ = child.kill();
                let _ = child.wait();
                bail!(
                    "QEMU did not finish within {} s and was killed",
                    timeout.as_secs()
                );
            }
        }
    }
    let status = wait_until(&mut child, deadline)?;
    ensure!(
        status.success(),
        "QEMU exited with {status}: the firmware failed"
    );
    summary.with_context(|| format!("QEMU exited without a `{SUMMARY_PREFIX}` line"))
}

/// Reads the child's stdout and stderr on two threads, line by line, into one
/// channel that disconnects when both are closed.
fn forward_lines(child: &mut Child) -> Receiver<(Stream, String)> {
    let (sender, receiver) = mpsc::channel();
    if let Some(stdout) = child.stdout.take() {
        spawn_reader(stdout, Stream::Stdout, sender.clone());
    }
    if let Some(stderr) = child.stderr.take() {
        spawn_reader(stderr, Stream::Stderr, sender);
    }
    receiver
}

fn spawn_reader(
    stream: impl Read + Send + 'static,
    kind: Stream,
    sender: Sender<(Stream, String)>,
) {
    thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { break };
            if sender.send((kind, line)).is_err() {
                break;
            }
        }
    });
}

/// Waits for the child to exit, killing it at `deadline`.
fn wait_until(child: &mut Child, deadline: Instant) -> Result<ExitStatus> {
    loop {
        if let Some(status) = child.try_wait().context("cannot wait for QEMU")? {
            return Ok(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("QEMU closed its output but did not exit in time and was killed");
        }
        thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn board_names_resolve() {
        assert_eq!(
            parse_board("mps2-an386").map(|b| b.target),
            Ok("thumbv7em-none-eabihf")
        );
        assert!(parse_board("nope").is_err_and(|e| e.contains("mps2-an386")));
    }
}

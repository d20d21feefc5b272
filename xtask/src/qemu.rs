//! `cargo xtask qemu`: builds `firmware-example/` for a board around a model and
//! test digits, runs it under QEMU, and checks every digit's int8 logits (and so
//! its prediction) against infer-core on the host.
//!
//! The firmware's build turns the model into its network from the model itself
//! (`model_spec::codegen`); its logits are checked against infer-core's
//! reference kernels ([`infer_core::stack::run`]). `--spec` is optional: the
//! build then also checks the model against the spec (`FIRMWARE_SPEC`).
//!
//! The digits file handed to the firmware (`FIRMWARE_DIGITS`) is specified in
//! `firmware-example/README.md`, "Digits file" ([`trainer::data::digit_records`]). A board
//! whose flash cannot hold all `--count` digits next to the model (the micro:bit's
//! 256 KiB) runs them in batches, one firmware build per batch.

use crate::inputs::Inputs;
use crate::{from_root, workspace_root};
use anyhow::{bail, ensure, Context, Result};
use infer_core::stack::{Kernels, StackFile};
use std::fs;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::thread;
use std::time::{Duration, Instant};
use trainer::eval::StackBuffers;
use xtask::report::{self, FirmwareReport, Memory};

/// The line the firmware prints last, before exiting successfully.
const SUMMARY_PREFIX: &str = "summary:";

pub use model_spec::boards::{Board, BOARDS};

/// Arguments of `cargo xtask qemu`.
#[derive(Debug, clap::Args)]
pub struct QemuArgs {
    /// The model file to embed (as written by the trainer; relative paths, as every path
    /// here, from the repository root).
    #[arg(long, value_parser = from_root)]
    pub model: PathBuf,
    // The spec the model was trained from ([`spec_help`], which names every preset): the
    // firmware's build checks the model has exactly its operations (`FIRMWARE_SPEC`); the
    // network always comes from the model itself.
    #[arg(long, help = spec_help())]
    pub spec: Option<String>,
    /// Directory with the MNIST IDX files (see `cargo xtask fetch-mnist`).
    #[arg(long, default_value = "data/mnist", value_parser = from_root)]
    pub data: PathBuf,
    /// Board to emulate: mps2-an386 (Cortex-M4F), mps2-an385 (M3), mps2-an500 (M7),
    /// microbit (M0), mps3-an547 (M55).
    #[arg(long, default_value = "mps2-an386", value_parser = parse_board)]
    pub board: &'static Board,
    /// How many test images, from the first, to classify (all 2,004: `--count 2004`).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
    pub count: u64,
    /// Seconds each QEMU run may take before it is killed and the task fails.
    #[arg(long, default_value_t = 600)]
    pub timeout_secs: u64,
    /// Build the small-RAM engine (the firmware's feature `small-ram`): one conv pixel at a
    /// time instead of four, about a quarter of the patch memory for more instructions.
    #[arg(long)]
    pub small_ram: bool,
}

/// What a firmware is built from besides its digits.
#[derive(Debug, Clone, Copy)]
pub struct FirmwareBuild<'a> {
    /// The board.
    pub board: &'a Board,
    /// The model file.
    pub model: &'a Path,
    /// The spec the build checks the model against, if any.
    pub spec: Option<&'a Spec>,
    /// The small-RAM build (the firmware's feature `small-ram`).
    pub small_ram: bool,
}

impl QemuArgs {
    /// The defaults for `model` on `data`: first 100 digits, mps2-an386.
    pub fn for_model(model: PathBuf, data: PathBuf) -> Self {
        Self {
            model,
            spec: None,
            data,
            board: &BOARDS[0],
            count: 100,
            timeout_secs: 600,
            small_ram: false,
        }
    }
}

/// The board named `name`.
///
/// # Errors
/// An unknown name, with the known ones.
pub fn parse_board(name: &str) -> Result<&'static Board, String> {
    model_spec::boards::board(name).ok_or_else(|| {
        format!(
            "unknown board `{name}`; known boards: {}",
            model_spec::boards::names()
        )
    })
}

/// Builds the firmware for `args.board` around `args.model` and the first
/// `args.count` test digits of `args.data` (in batches if the board's flash is
/// too small), runs it in QEMU with its output streamed to stdout, and checks
/// that every prediction equals infer-core's on the host.
///
/// # Errors
///
/// Unreadable model or dataset, a failed firmware build, QEMU missing, failing or
/// timing out, a malformed report, or a prediction that differs from the host's.
pub fn run(args: &QemuArgs) -> Result<()> {
    let board = args.board;
    let count = usize::try_from(args.count).context("--count does not fit in memory")?;
    let model = fs::canonicalize(&args.model)
        .with_context(|| format!("cannot find the model {}", args.model.display()))?;
    let model_bytes =
        fs::read(&model).with_context(|| format!("cannot read {}", model.display()))?;
    let file = decode(&model_bytes)?;
    let inputs = Inputs::for_model(&file, &args.data, count)?;
    let spec = args.spec.as_deref().map(Spec::resolve).transpose()?;
    let host = stack_host_logits(&file, &inputs)?;

    let timeout = Duration::from_secs(args.timeout_secs);
    let mut correct = 0;
    let mut insns = 0u128;
    let per_image = inputs.per_image(board);
    for start in (0..count).step_by(per_image) {
        let batch = (count - start).min(per_image);
        if batch < count {
            eprintln!(
                "==> {}: digits {start}..{} of {count}",
                board.name,
                start + batch
            );
        }
        let build = FirmwareBuild {
            board,
            model: &model,
            spec: spec.as_ref(),
            small_ram: args.small_ram,
        };
        let run = run_batch(&build, &inputs, start, batch, timeout)?;
        check_against_host(&run, &host, start)?;
        correct += run.report.summary.correct;
        insns += u128::from(run.report.summary.insns_per_inference) * batch as u128;
    }
    let mean = insns / count as u128;
    let line = if inputs.labelled {
        summary_line(board, count, correct, mean)
    } else {
        format!(
            "qemu {}: {count} pseudo-random inputs, every output equal to the host's; \
             insns_per_inference={mean}",
            board.name
        )
    };
    println!("{line}");
    Ok(())
}

/// The line `run` ends with for MNIST digits: the board, the digits, and the check against
/// the host.
pub fn summary_line(board: &Board, count: usize, correct: usize, mean_insns: u128) -> String {
    format!(
        "qemu {}: {count} digits, every digit's logits equal to the host's; \
         correct={correct} ({:.2} %), insns_per_inference={mean_insns}",
        board.name,
        100.0 * correct as f64 / count as f64
    )
}

/// `model` decoded.
///
/// # Errors
/// A model that does not decode, with the decoder's reason.
pub fn decode(model: &[u8]) -> Result<StackFile<'_>> {
    StackFile::decode(model)
        .map_err(|e| anyhow::anyhow!("the model is not a usable model.bin: {e}"))
}

/// A `--spec` as the firmware's build takes it (`FIRMWARE_SPEC`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec(String);

impl Spec {
    /// A preset name as it is, a file as its absolute path (relative to the repository
    /// root; the firmware's build runs in `firmware-example/`).
    ///
    /// # Errors
    /// Neither a preset nor an existing file.
    pub fn resolve(spec: &str) -> Result<Self> {
        if trainer::arch::spec::PRESETS
            .iter()
            .any(|(name, _)| *name == spec)
        {
            return Ok(Self(spec.to_owned()));
        }
        let file = workspace_root().join(spec);
        let path = fs::canonicalize(&file).with_context(|| {
            format!(
                "--spec {spec} is neither a preset ({}) nor an existing spec file ({} not found)",
                preset_names(),
                file.display()
            )
        })?;
        Ok(Self(path.display().to_string()))
    }
}

/// The preset names, comma-separated: `tutorial, tutorial-full`.
pub fn preset_names() -> String {
    trainer::arch::spec::PRESETS
        .map(|(name, _)| name)
        .join(", ")
}

/// Help of a `--spec` argument, naming every preset.
pub fn spec_help() -> String {
    format!(
        "Optional: the spec the model was trained from, a `models/*.toml` file or a preset ({}). \
         The firmware's build checks the model has exactly its operations",
        preset_names()
    )
}

/// Writes inputs `start..start + count` of `inputs` to a file, builds the firmware `build`
/// around them, and runs it.
///
/// # Errors
/// As [`run`].
pub fn run_batch(
    build: &FirmwareBuild<'_>,
    inputs: &Inputs,
    start: usize,
    count: usize,
    timeout: Duration,
) -> Result<FirmwareRun> {
    let out_dir = workspace_root().join("target").join("xtask");
    fs::create_dir_all(&out_dir).with_context(|| format!("cannot create {}", out_dir.display()))?;
    let digits = out_dir.join(format!("digits-{start}-{count}.bin"));
    fs::write(&digits, inputs.records(start, count))
        .with_context(|| format!("cannot write {}", digits.display()))?;
    let elf = build_firmware(build, &digits)?;
    let output = run_qemu(build.board, &elf, timeout)?;
    let run = FirmwareRun::parse(&output, elf)?;
    ensure!(
        run.report.summary.total == count && run.report.digits.len() == count,
        "the firmware classified {} digits ({} lines), not the {count} embedded",
        run.report.summary.total,
        run.report.digits.len()
    );
    Ok(run)
}

/// The wide logits of infer-core's reference kernels on the host
/// ([`infer_core::stack::run`]) for `file` and every input of `inputs` (made for it).
///
/// # Errors
/// An inference that fails.
pub fn stack_host_logits(file: &StackFile<'_>, inputs: &Inputs) -> Result<Vec<Vec<i32>>> {
    let mut buffers = StackBuffers::new(file);
    inputs
        .values()
        .map(|pixels| {
            let logits = buffers.logits(file, pixels, Kernels::Reference);
            logits.map(<[i32]>::to_vec).context("host inference")
        })
        .collect()
}

/// Fails on the first digit whose prediction or logits differ from the host's
/// (`host[start..]`).
pub fn check_against_host(run: &FirmwareRun, host: &[Vec<i32>], start: usize) -> Result<()> {
    ensure!(
        run.report.logits.len() == run.report.digits.len(),
        "{} digit lines but {} logits lines",
        run.report.digits.len(),
        run.report.logits.len()
    );
    for (i, (d, logits)) in run.report.digits.iter().zip(&run.report.logits).enumerate() {
        ensure!(d.index == i, "digit line {i} has index {}", d.index);
        let want = host
            .get(start + i)
            .with_context(|| format!("no host result for digit {}", start + i))?;
        ensure!(
            logits == want,
            "digit {}: the firmware's logits {logits:?} differ from infer-core's on the host {want:?}",
            start + i
        );
        let host_class = want
            .iter()
            .enumerate()
            .fold(0, |best, (k, &l)| if l > want[best] { k } else { best });
        ensure!(
            usize::from(d.pred) == host_class,
            "digit {}: the firmware predicts {}, the host {host_class}",
            start + i,
            d.pred
        );
    }
    Ok(())
}

/// Builds the firmware `build` around `digits` in release mode and returns the ELF's path.
fn build_firmware(build: &FirmwareBuild<'_>, digits: &Path) -> Result<PathBuf> {
    let FirmwareBuild {
        board,
        model,
        spec,
        small_ram,
    } = *build;
    let firmware_dir = workspace_root().join("firmware-example");
    let target_dir = firmware_dir.join("target");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut command = Command::new(cargo);
    match spec {
        Some(Spec(spec)) => command.env("FIRMWARE_SPEC", spec),
        None => command.env_remove("FIRMWARE_SPEC"),
    };
    let mut child = command
        .current_dir(&firmware_dir)
        .args([
            "build",
            "--release",
            "--target",
            board.target,
            "--target-dir",
        ])
        .arg(&target_dir)
        .args(if small_ram {
            &["--features", "small-ram"][..]
        } else {
            &[]
        })
        .env("FIRMWARE_BOARD", board.name)
        .env("FIRMWARE_MODEL", model)
        .env("FIRMWARE_DIGITS", digits)
        // The firmware has its own target and flags; keep a host build's out.
        .env_remove("CARGO_BUILD_TARGET")
        .env_remove("RUSTFLAGS")
        .env_remove("CARGO_ENCODED_RUSTFLAGS")
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot run cargo to build the firmware")?;
    // cargo's progress goes through as it comes; from a failed build script on, its output
    // is held back, so the script's own message can be shown alone.
    let mut log = String::new();
    let mut holding = false;
    if let Some(stderr) = child.stderr.take() {
        for line in BufReader::new(stderr).lines() {
            let line = line.context("reading cargo's output")?;
            holding |= line.starts_with("error: failed to run custom build command");
            if !holding {
                eprintln!("{line}");
            }
            log.push_str(&line);
            log.push('\n');
        }
    }
    let status = child.wait().context("waiting for cargo")?;
    if !status.success() {
        let saved = workspace_root().join("target/xtask/firmware-build.log");
        let kept = fs::write(&saved, &log).is_ok();
        let whole = if kept {
            format!("cargo's whole output: {}", saved.display())
        } else {
            "cargo's output could not be saved".to_string()
        };
        match build_script_errors(&log).as_slice() {
            [] => {
                if holding {
                    eprint!("{log}");
                }
                bail!("building the firmware failed ({status})")
            }
            messages => bail!(
                "building the firmware failed: {}\n({whole})",
                messages.join("\n")
            ),
        }
    }
    Ok(target_dir
        .join(board.target)
        .join("release")
        .join("firmware-example"))
}

/// The messages a failed build script printed as `error: …` (cargo shows its stderr,
/// indented, after a `--- stderr` line), without the `error: ` prefix.
pub fn build_script_errors(cargo_log: &str) -> Vec<String> {
    let mut messages = Vec::new();
    let mut in_stderr = false;
    for line in cargo_log.lines() {
        if line.trim() == "--- stderr" {
            in_stderr = true;
            continue;
        }
        if in_stderr && !line.starts_with("  ") && !line.is_empty() {
            in_stderr = false;
        }
        if let Some(message) = line.trim().strip_prefix("error: ").filter(|_| in_stderr) {
            messages.push(message.to_string());
        }
    }
    messages
}

/// Everything one firmware run reported: its [`FirmwareReport`], with the lines a run of
/// this firmware always prints required.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareRun {
    /// The ELF that ran.
    pub elf: PathBuf,
    /// `calibration:` line: (loop instructions, measured instructions).
    pub calibration: (u64, u64),
    /// `memory:` line.
    pub memory: Memory,
    /// Everything printed.
    pub report: FirmwareReport,
}

impl FirmwareRun {
    /// Parses the firmware's output ([`xtask::report::parse`]).
    ///
    /// # Errors
    /// A malformed line, or no `calibration:`, `layers:`, `memory:` or `summary:` line.
    pub fn parse(text: &str, elf: PathBuf) -> Result<Self> {
        let report = report::parse(text)?;
        ensure!(
            !report.layers.is_empty(),
            "the firmware printed no `layers:` line"
        );
        Ok(Self {
            elf,
            calibration: report
                .calibration
                .context("the firmware printed no `calibration:` line")?,
            memory: report
                .memory
                .context("the firmware printed no `memory:` line")?,
            report,
        })
    }
}

/// Which output of QEMU a line came from.
#[derive(Clone, Copy)]
enum Stream {
    Stdout,
    Stderr,
}

/// Runs `elf` under QEMU, echoing its output, and returns its stdout.
fn run_qemu(board: &Board, elf: &Path, timeout: Duration) -> Result<String> {
    let mut child = Command::new("qemu-system-arm")
        .args(["-cpu", board.cpu, "-machine", board.name, "-nographic"])
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
    let mut stdout = String::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok((Stream::Stdout, line)) => {
                println!("{line}");
                stdout.push_str(&line);
                stdout.push('\n');
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
    ensure!(
        stdout.lines().any(|l| l.starts_with(SUMMARY_PREFIX)),
        "QEMU exited without a `{SUMMARY_PREFIX}` line"
    );
    Ok(stdout)
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
        assert_eq!(
            parse_board("microbit").map(|b| b.target),
            Ok("thumbv6m-none-eabi")
        );
        assert!(parse_board("nope").is_err_and(|e| e.contains("mps2-an386")));
        assert_eq!(BOARDS[0].name, "mps2-an386", "the default board");
    }

    #[test]
    fn a_build_scripts_error_is_found_in_cargos_dump() {
        let log = r"   Compiling cortex-m-rt v0.7.7
error: failed to run custom build command for `firmware-example v0.1.0 (/w/firmware-example)`

Caused by:
  process didn't exit successfully: `/w/build-script-main` (exit status: 1)
  --- stdout
  cargo:rerun-if-env-changed=FIRMWARE_BOARD
  cargo:rustc-link-arg-bins=-Tlink.x

  --- stderr
  error: model.bin operation 1 is maxpool2d 2×2 but tutorial-full declares conv2d 3×3
warning: build failed, waiting for other jobs to finish...
error: could not compile `x`
";
        assert_eq!(
            build_script_errors(log),
            ["model.bin operation 1 is maxpool2d 2×2 but tutorial-full declares conv2d 3×3"]
        );
        assert!(build_script_errors("error: could not compile `x`\n").is_empty());
    }

    #[test]
    fn the_readmes_demo_sample_is_what_the_demo_prints() {
        let readme = include_str!("../../README.md");
        let after = readme
            .split("`cargo xtask demo` ends with")
            .nth(1)
            .expect("the README shows the end of the demo's output");
        let block = after
            .split("```text\n")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .expect("a text block");
        // The firmware's lines, in the format the parser reads. The README shows the tail of
        // the output: the calibration line came earlier, and the digits shown are numbered
        // as the first ones here.
        let mut firmware = String::from("calibration: loop_insns=1 measured_insns=1\n");
        let (mut digits, mut logits) = (0, 0);
        for line in block.lines() {
            let mut words: Vec<String> = line.split(' ').map(str::to_string).collect();
            let counter = match words[0].as_str() {
                "digit" => Some(&mut digits),
                "logits" => Some(&mut logits),
                _ => None,
            };
            if let Some(counter) = counter {
                words[1] = counter.to_string();
                *counter += 1;
            }
            firmware.push_str(&words.join(" "));
            firmware.push('\n');
        }
        let run = report::parse(&firmware).unwrap();
        assert!(!run.digits.is_empty() && run.digits.len() == run.logits.len());
        assert_eq!(run.logits[0].len(), 10);
        // The last line is the demo's own, for the default board.
        let last = block.lines().last().unwrap();
        let s = run.summary;
        assert_eq!(
            last,
            summary_line(
                &BOARDS[0],
                s.total,
                s.correct,
                u128::from(s.insns_per_inference)
            )
        );
    }

    #[test]
    fn parses_every_report_line() {
        let text = "board: microbit insns_per_tick=125/2\n\
            calibration: loop_insns=2000000 measured_insns=1999999\n\
            digit 0 label=7 pred=7\n\
            logits 0 -3 1 2 3 4 5 6 70 8 9\n\
            digit 1 label=2 pred=3\n\
            logits 1 0 0 0 5 0 0 0 0 0 0\n\
            layers: prepare=10 conv_relu_pool=20 dense=30\n\
            memory: infer_stack_bytes=1800 static_ram_bytes=16 scratch_bytes=900\n\
            summary: correct=1 total=2 insns_per_inference=60 stack_peak_bytes=4000\n";
        let run = FirmwareRun::parse(text, PathBuf::from("elf")).unwrap();
        assert_eq!(run.calibration, (2_000_000, 1_999_999));
        assert_eq!(run.report.digits.len(), 2);
        assert_eq!(run.report.digits[1].pred, 3);
        assert_eq!(run.report.logits[0], [-3, 1, 2, 3, 4, 5, 6, 70, 8, 9]);
        assert!(check_against_host(&run, &[vec![0; 10], vec![0; 10]], 0).is_err());
        assert!(check_against_host(&run, &run.report.logits.clone(), 0).is_ok());
        assert_eq!(run.report.layer("dense"), Some(30));
        assert_eq!(run.report.layer("nope"), None);
        assert_eq!(
            (
                run.memory.infer_stack_bytes,
                run.memory.static_ram_bytes,
                run.memory.scratch_bytes
            ),
            (1800, 16, 900)
        );
        assert_eq!(run.report.summary.insns_per_inference, 60);
        let without_memory = text.replace("memory:", "mem:");
        assert!(FirmwareRun::parse(&without_memory, PathBuf::new()).is_err());
    }
}

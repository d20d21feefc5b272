//! The firmware of a format-2 model.bin: a network declared only in a spec goes to QEMU with
//! no code edits — its network generated from the model (`model_spec::codegen`), with or
//! without the spec (`FIRMWARE_SPEC`) — and computes for every digit exactly the int8 logits
//! infer-core's reference kernels compute on the host; a model.bin that does not match the
//! spec, or that does not fit the board, fails the *build*, naming the operation and both
//! shapes, or the numbers.
//!
//! Most models here are random-weight format-3 models made for the spec's plan
//! (`e2e_tests::stack_model`): bit-exactness does not need trained weights. The trained path,
//! `trainer fit --arch models/two-blocks.toml` → model.bin → firmware on the M4F and the
//! micro:bit, is `a_spec_fitted_by_the_cli_runs_in_qemu_as_the_trainer_evaluates_it` (and
//! likewise for `models/ds-cnn.toml` and `models/resnet-tiny.toml`, on the M4F).

use anyhow::{Context, Result};
use e2e_tests::stack_model::{host_logits, random_model, random_model_with_input};
use e2e_tests::{
    board, build_firmware_on, check_ram_estimate, data_dir, parse_firmware_output, run_firmware_on,
    run_trainer, workspace_root, Board, BOARDS,
};
use infer_core::format::QuantParams;
use infer_core::stack::stages::Kernel;
use model_spec::plan::Plan;
use model_spec::spec::Spec;
use std::path::{Path, PathBuf};

/// Bytes of one digits record: the label, then 28×28 pixels.
const RECORD: usize = 1 + 28 * 28;

/// Two conv + pool blocks (same then valid padding) and a hidden dense layer: a network
/// declared only here, not in the repository.
const TWO_BLOCKS: &str = r#"
name = "two-blocks-test"
input = [28, 28, 1]

[[layer]]
type = "conv2d"
filters = 8
kernel = 3
padding = "same"
activation = "relu"

[[layer]]
type = "maxpool2d"
pool = 2

[[layer]]
type = "conv2d"
filters = 16
kernel = 3
activation = "relu"

[[layer]]
type = "maxpool2d"
pool = 2

[[layer]]
type = "flatten"

[[layer]]
type = "dense"
units = 32
activation = "relu"

[[layer]]
type = "dense"
units = 10
activation = "softmax"
"#;

/// The int8 plan of `spec`, a spec file or a preset.
fn plan_of(spec: &Path) -> Result<Plan> {
    let spec = spec.to_str().context("a UTF-8 path")?;
    Plan::of(&Spec::load(spec)?)
}

/// A spec file, a random model for it, the first `digits` committed digits and the host's
/// logits for them, in a temporary directory.
struct Case {
    dir: tempfile::TempDir,
    spec: PathBuf,
    plan: Plan,
    model: PathBuf,
    digits: PathBuf,
    labels: Vec<u8>,
    host: Vec<Vec<i32>>,
}

impl Case {
    /// A random model for `spec` (a spec's text, or `None` for the `tutorial-full` preset).
    fn random(spec: Option<&str>, seed: u64, digits: usize) -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let spec = match spec {
            Some(text) => {
                let path = dir.path().join("spec.toml");
                std::fs::write(&path, text)?;
                path
            }
            None => PathBuf::from("tutorial-full"),
        };
        let plan = plan_of(&spec)?;
        let model = dir.path().join("model.bin");
        std::fs::write(&model, random_model(&plan, seed)?)?;
        Self::new(dir, spec, model, digits)
    }

    /// The case of `model` for `spec` (a file or a preset), its directory `dir`, on the
    /// first `digits` committed digits.
    fn new(dir: tempfile::TempDir, spec: PathBuf, model: PathBuf, digits: usize) -> Result<Self> {
        let records = std::fs::read(workspace_root().join("firmware-example/assets/digits.bin"))?;
        let records = records
            .get(..digits * RECORD)
            .context("fewer committed digits than asked for")?;
        Self::with_records(dir, spec, model, records)
    }

    /// The case of `model` for `spec` on the labelled inputs `records` (`[label][values]`
    /// for the plan's input shape).
    fn with_records(
        dir: tempfile::TempDir,
        spec: PathBuf,
        model: PathBuf,
        records: &[u8],
    ) -> Result<Self> {
        let plan = plan_of(&spec)?;
        let record = 1 + plan.input.0 * plan.input.1 * plan.input.2;
        let digits_path = dir.path().join("digits.bin");
        std::fs::write(&digits_path, records)?;
        let labels = records.chunks_exact(record).map(|r| r[0]).collect();
        let pixels: Vec<u8> = records
            .chunks_exact(record)
            .flat_map(|r| r[1..].iter().copied())
            .collect();
        let host = host_logits(&std::fs::read(&model)?, &pixels)?;
        Ok(Self {
            dir,
            spec,
            plan,
            model,
            digits: digits_path,
            labels,
            host,
        })
    }

    fn spec_env(&self) -> String {
        self.spec.display().to_string()
    }

    /// Builds and runs the firmware on `board` and checks every digit's logits against the
    /// host's; returns the report.
    fn run_on(&self, board: &Board) -> Result<e2e_tests::FirmwareReport> {
        self.run_with(board, &[])
    }

    /// [`Case::run_on`] with the firmware's cargo features `features`.
    fn run_with(&self, board: &Board, features: &[&str]) -> Result<e2e_tests::FirmwareReport> {
        let spec = self.spec_env();
        let (ok, stdout) = run_firmware_on(
            board,
            &self.model,
            &self.digits,
            (&[("FIRMWARE_SPEC", &spec)], features),
        )?;
        assert!(ok, "{}: the firmware failed:\n{stdout}", board.name);
        let report = parse_firmware_output(&stdout)?;
        let n = self.host.len();
        assert!(
            stdout.contains(&format!(
                "network: spec={spec} ops={} classes={}",
                self.plan.ops.len(),
                self.plan.classes()
            )),
            "{stdout}"
        );
        assert_eq!(report.digits.len(), n, "{}", board.name);
        assert_eq!(report.logits.len(), n, "{}", board.name);
        for (i, (line, logits)) in report.digits.iter().zip(&report.logits).enumerate() {
            assert_eq!(line.index, i);
            assert_eq!(line.label, self.labels[i]);
            assert_eq!(
                logits, &self.host[i],
                "{}: digit {i}: firmware logits vs the host's reference",
                board.name
            );
            let class = (0..logits.len()).fold(0, |best, k| {
                if self.host[i][k] > self.host[i][best] {
                    k
                } else {
                    best
                }
            });
            assert_eq!(usize::from(line.pred), class, "{}: digit {i}", board.name);
        }
        assert_eq!(report.summary.total, n);
        check_ram_estimate(board.name, &stdout, self.plan.ops.len())?;
        // One entry per layer of the plan (`<type>_<index>`, a conv's fused pool with it),
        // then the argmax; the layers add up to the whole inference within 2 % (the
        // probe's counter reads are subtracted, tick rounding not).
        let names: Vec<String> = self
            .plan
            .layer_names()
            .into_iter()
            .map(|(_, name)| name)
            .chain(["argmax".to_string()])
            .collect();
        let reported: Vec<&String> = report.layers.iter().map(|(name, _)| name).collect();
        assert_eq!(reported, names.iter().collect::<Vec<_>>(), "{stdout}");
        let staged: u64 = report
            .layers
            .iter()
            .filter(|(name, _)| name != "argmax")
            .map(|(_, v)| v)
            .sum();
        let total = report.summary.insns_per_inference;
        assert!(
            staged.abs_diff(total) * 50 <= total,
            "{}: layers {staged} vs inference {total}: {:?}",
            board.name,
            report.layers
        );
        Ok(report)
    }

    /// Builds for `board` with the spec and `model`; returns whether it succeeded and cargo's
    /// stderr.
    fn build_with(&self, board: &Board, model: &Path) -> Result<(bool, String)> {
        let spec = self.spec_env();
        let out = build_firmware_on(
            board,
            model,
            &self.digits,
            (&[("FIRMWARE_SPEC", &spec)], &[]),
            None,
        )?;
        Ok((
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        ))
    }
}

#[test]
fn a_spec_declared_network_runs_bit_exact_on_every_board() -> Result<()> {
    let case = Case::random(Some(TWO_BLOCKS), 1, 100)?;
    // The random model must not be degenerate: the logits depend on the image.
    let distinct: std::collections::BTreeSet<_> = case.host.iter().collect();
    assert!(
        distinct.len() >= 50,
        "only {} distinct logit vectors",
        distinct.len()
    );
    for board in &BOARDS {
        let report = case.run_on(board)?;
        assert!(report.summary.stack_peak_bytes > 0);
    }
    Ok(())
}

#[test]
fn the_tutorial_as_a_spec_runs_on_the_fused_3x3_stage_on_every_board() -> Result<()> {
    // conv 3×3 ×32 + ReLU → pool 2 → dense 10: one stage of the plan, the fused one-channel
    // kernel (`Stream3x3`: paired on the M4F/M7, plain on the M3/M0), no buffers.
    let text = std::fs::read_to_string(workspace_root().join("models/tutorial.toml"))?;
    let case = Case::random(Some(&text), 3, 40)?;
    let stages = case.plan.stages();
    assert_eq!(stages.len(), 1);
    assert_eq!(stages[0].kernel, Kernel::Stream3x3);
    assert_eq!(case.plan.arena(), 0);
    let distinct: std::collections::BTreeSet<_> = case.host.iter().collect();
    assert!(distinct.len() >= 20, "{:?}", case.host);
    for board in &BOARDS {
        let report = case.run_on(board)?;
        // The inference's whole working memory is on its stack: the fused kernel's 1,192
        // bytes of scratch and its frames.
        let stack = report.memory.context("no memory line")?.infer_stack_bytes;
        assert!(
            stack <= 1_900,
            "{}: {stack} bytes of inference stack",
            board.name
        );
    }
    Ok(())
}

#[test]
fn unusual_stacks_run_bit_exact_too() -> Result<()> {
    // Stride 2 with same padding, a batch norm folded into a conv without activation,
    // 3 classes; and a lone dense layer (no buffers, no patch).
    let strided = r#"
input = [28, 28, 1]
[[layer]]
type = "conv2d"
filters = 6
kernel = 5
stride = 2
padding = "same"
[[layer]]
type = "batchnorm"
[[layer]]
type = "conv2d"
filters = 4
kernel = 3
stride = 2
activation = "relu"
[[layer]]
type = "flatten"
[[layer]]
type = "dense"
units = 12
activation = "relu"
[[layer]]
type = "dense"
units = 3
activation = "softmax"
"#;
    let lone = "input = [28, 28, 1]\n[[layer]]\ntype = \"flatten\"\n[[layer]]\ntype = \"dense\"\nunits = 10\nactivation = \"softmax\"\n";
    for (spec, seed) in [(strided, 6), (lone, 7)] {
        let case = Case::random(Some(spec), seed, 20)?;
        let distinct: std::collections::BTreeSet<_> = case.host.iter().collect();
        assert!(distinct.len() >= 10, "{:?}", case.host);
        case.run_on(board("mps2-an385"))?;
    }
    Ok(())
}

#[test]
fn the_full_tutorial_model_runs_bit_exact_on_the_m7_the_m4f_and_the_m55() -> Result<()> {
    // ~1.2 MB of weights and ~20 M instructions per digit: a few digits keep it at seconds.
    let case = Case::random(None, 2, 4)?;
    let distinct: std::collections::BTreeSet<_> = case.host.iter().collect();
    assert!(distinct.len() >= 3, "{:?}", case.host);
    // The M55's program runs from its SRAM, the ITCM at 0 holding only the reset vector.
    for name in ["mps2-an500", "mps2-an386", "mps3-an547"] {
        let report = case.run_on(board(name))?;
        assert!(
            report.summary.insns_per_inference > 1_000_000,
            "{name}: {:?}",
            report.summary
        );
    }
    Ok(())
}

#[test]
fn any_input_shape_and_input_quantization_run_bit_exact() -> Result<()> {
    // A 32×32×3 input (as CIFAR's) whose quantization is not the trainer's: every
    // conversion of the input values goes by the model's own parameters.
    let spec = r#"
input = [32, 32, 3]
[[layer]]
type = "conv2d"
filters = 8
kernel = 3
activation = "relu"
[[layer]]
type = "maxpool2d"
pool = 2
[[layer]]
type = "conv2d"
filters = 8
kernel = 3
activation = "relu"
[[layer]]
type = "maxpool2d"
pool = 2
[[layer]]
type = "flatten"
[[layer]]
type = "dense"
units = 5
activation = "softmax"
"#;
    let dir = tempfile::tempdir()?;
    let spec_path = dir.path().join("spec.toml");
    std::fs::write(&spec_path, spec)?;
    let plan = plan_of(&spec_path)?;
    let quant = QuantParams {
        scale: 1.0 / 100.0,
        zero_point: -20,
    };
    let model = dir.path().join("model.bin");
    std::fs::write(&model, random_model_with_input(&plan, 11, quant)?)?;
    // Labelled random inputs; some values above 2.27 = (127 + 20) / 100 · 255 / 255
    // saturate at 127, and the conversion is not `v − 128`.
    let mut state = 0x1234_5678_u32;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state
    };
    let records: Vec<u8> = (0..12)
        .flat_map(|_| {
            let label = (next() % 5) as u8;
            let values: Vec<u8> = (0..32 * 32 * 3).map(|_| next() as u8).collect();
            std::iter::once(label).chain(values)
        })
        .collect();
    let case = Case::with_records(dir, spec_path, model, &records)?;
    let distinct: std::collections::BTreeSet<_> = case.host.iter().collect();
    assert!(distinct.len() >= 10, "{:?}", case.host);
    for name in ["mps2-an386", "microbit"] {
        case.run_on(board(name))?;
    }
    Ok(())
}

#[test]
fn the_small_ram_and_narrow_weight_builds_compute_the_same_logits_for_less_memory() -> Result<()> {
    // The M4F's default build runs four conv pixels at once through its assembly quads, from
    // weights widened into flash; the small-RAM build one at a time, its patch buffer a
    // quarter; the narrow-weights build from the int8 weights alone: the same logits
    // (checked against the host's in `run_with`), fewer bytes, more instructions.
    let case = Case::random(Some(TWO_BLOCKS), 6, 12)?;
    let board = board("mps2-an386");
    let fast = case.run_with(board, &[])?;
    let small = case.run_with(board, &["small-ram"])?;
    let scratch = |r: &e2e_tests::FirmwareReport| r.memory.as_ref().map(|m| m.scratch_bytes);
    let (fast_bytes, small_bytes) = (scratch(&fast).unwrap(), scratch(&small).unwrap());
    assert!(small_bytes < fast_bytes, "{small_bytes} vs {fast_bytes}");
    assert!(small.summary.insns_per_inference > fast.summary.insns_per_inference);
    let narrow = case.run_with(board, &["narrow-weights"])?;
    assert!(
        narrow.summary.insns_per_inference > fast.summary.insns_per_inference,
        "narrow {} vs widened {}",
        narrow.summary.insns_per_inference,
        fast.summary.insns_per_inference
    );
    Ok(())
}

#[test]
fn a_format_2_model_runs_without_a_spec_its_network_taken_from_the_model() -> Result<()> {
    // No FIRMWARE_SPEC: the build generates the network from the model.bin alone.
    let case = Case::random(Some(TWO_BLOCKS), 8, 20)?;
    let board = board("mps2-an385");
    let (ok, stdout) = run_firmware_on(board, &case.model, &case.digits, (&[], &[]))?;
    assert!(ok, "the firmware failed:\n{stdout}");
    assert!(
        stdout.contains(&format!(
            "network: spec=none ops={} classes={}",
            case.plan.ops.len(),
            case.plan.classes()
        )),
        "{stdout}"
    );
    let report = parse_firmware_output(&stdout)?;
    assert_eq!(
        report.logits, case.host,
        "firmware logits vs the host's reference"
    );
    assert_eq!(report.summary.total, case.host.len());
    Ok(())
}

#[test]
fn a_model_of_other_shapes_fails_the_build_naming_the_operation_and_both_shapes() -> Result<()> {
    let case = Case::random(Some(TWO_BLOCKS), 3, 1)?;
    // The same stack with 12 filters instead of 16 in the second convolution.
    let other_spec = TWO_BLOCKS.replace("filters = 16", "filters = 12");
    let other_plan = Plan::of(&Spec::parse(&other_spec)?)?;
    let other = case.dir.path().join("other.bin");
    std::fs::write(&other, random_model(&other_plan, 3)?)?;
    let board = board("mps2-an386");
    let (ok, stderr) = case.build_with(board, &other)?;
    assert!(
        !ok,
        "the build accepted a model of another network:\n{stderr}"
    );
    let expected = format!(
        "{} operation 2 is {} but {} declares {}",
        other.display(),
        other_plan.ops[2].kind,
        case.spec.display(),
        case.plan.ops[2].kind
    );
    assert!(
        expected.contains("→ 12×12×12 but") && expected.ends_with("→ 12×12×16"),
        "{expected}"
    );
    assert!(
        stderr.contains(&expected),
        "expected {expected:?} in:\n{stderr}"
    );

    // A model of the retired format 1 (the matching model's bytes marked version 1, CRC fixed
    // up) is refused by its version, naming the command that writes a current model.
    let mut retired = std::fs::read(&case.model)?;
    retired[4..6].copy_from_slice(&1u16.to_le_bytes());
    let body = retired.len() - infer_core::format::CRC_LEN;
    let crc = infer_core::format::crc32(&retired[..body]);
    retired[body..].copy_from_slice(&crc.to_le_bytes());
    let retired_path = case.dir.path().join("retired.bin");
    std::fs::write(&retired_path, retired)?;
    let (ok, stderr) = case.build_with(board, &retired_path)?;
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains("is not a format-3 model")
            && stderr.contains("format version 1, which is retired")
            && stderr.contains("`trainer fit --out model.bin`"),
        "{stderr}"
    );

    // And the matching model builds (the failures above are about the model, not the setup).
    let (ok, stderr) = case.build_with(board, &case.model)?;
    assert!(ok, "{stderr}");
    Ok(())
}

#[test]
fn a_model_too_big_for_the_board_fails_the_build_with_the_numbers() -> Result<()> {
    let case = Case::random(None, 4, 1)?;
    let model_bytes = std::fs::metadata(&case.model)?.len();
    let (ok, stderr) = case.build_with(board("microbit"), &case.model)?;
    assert!(!ok, "tutorial-full built for the micro:bit:\n{stderr}");
    // Flash: the model (over 1 MB; with the conv weights the build prepares for the M0's
    // kernels, more) against the micro:bit's 256 KiB.
    let flash = stderr
        .split("flash: the ")
        .nth(1)
        .and_then(|rest| rest.split("-byte model").next())
        .and_then(|n| n.parse::<u64>().ok());
    assert!(
        flash.is_some_and(|n| n >= model_bytes) && stderr.contains("has 262144"),
        "{stderr}"
    );
    // RAM fits its 16 KiB: the arena holds a ring of 4 of the first conv's 26 rows of 26×32
    // bytes and the 128 of the dense layer the second conv and the pool stream into (the
    // whole first map, 21,632 bytes, did not fit).
    assert_eq!(case.plan.arena(), 4 * 26 * 32 + 128);
    assert!(!stderr.contains("has 16384"), "{stderr}");
    Ok(())
}

#[test]
fn a_spec_fitted_by_the_cli_runs_in_qemu_as_the_trainer_evaluates_it() -> Result<()> {
    // The repository's micro:bit-sized network, trained briefly by the real CLI: spec file →
    // `trainer fit --arch` → model.bin → firmware, with no code written for this network.
    // Trained, if briefly: far above the 10 % of chance on the committed digits.
    fit_and_run(
        "models/two-blocks.toml",
        &["--epochs", "1"],
        &["mps2-an386", "microbit"],
        40,
    )
}

#[test]
fn a_ds_cnn_fitted_by_the_cli_runs_in_qemu_as_the_trainer_evaluates_it() -> Result<()> {
    // Depthwise convs, an average pool and ReLU6 (`models/ds-cnn.toml`), trained by the
    // trainer and run by the firmware built against the spec; on the micro:bit's 16 KiB
    // of RAM too, which it fits with its depthwise and pointwise convs over their inputs.
    fit_and_run(
        "models/ds-cnn.toml",
        &["--epochs", "3", "--lr", "0.003"],
        &["mps2-an386", "microbit"],
        40,
    )
}

#[test]
fn a_resnet_fitted_by_the_cli_runs_in_qemu_as_the_trainer_evaluates_it() -> Result<()> {
    // Two residual blocks (`models/resnet-tiny.toml`): the adds and the branch to a block's
    // input run on the board as the trainer's int8 evaluation computes them; on the
    // micro:bit too (its convs from weights widened to words).
    fit_and_run(
        "models/resnet-tiny.toml",
        &["--epochs", "2", "--lr", "0.003"],
        &["mps2-an386", "microbit"],
        40,
    )
}

/// Fits the spec file `spec` (from the repository root) with the CLI on 2,000 training
/// images with `options`, builds the firmware with the model and `FIRMWARE_SPEC` for each of
/// `boards` and checks on the first 100 committed digits that every logit is the host's,
/// every prediction `trainer eval`'s, and that at least `correct` are right.
fn fit_and_run(spec: &str, options: &[&str], boards: &[&str], correct: usize) -> Result<()> {
    let spec = workspace_root().join(spec);
    let dir = tempfile::tempdir()?;
    let model = dir.path().join("model.bin");
    let data = data_dir()?;
    let path = |p: &Path| p.to_str().map(str::to_owned).context("a UTF-8 path");
    let (spec_arg, data_arg, model_arg) = (path(&spec)?, path(&data)?, path(&model)?);
    let mut args = vec![
        "fit",
        "--arch",
        &spec_arg,
        "--train-limit",
        "2000",
        "--seed",
        "5",
        "--data",
        &data_arg,
        "--out",
        &model_arg,
    ];
    args.extend_from_slice(options);
    run_trainer(&args)?;
    let eval = run_trainer(&["eval", "--model", &model_arg, "--data", &data_arg, "--json"])?;
    let eval: serde_json::Value = serde_json::from_slice(&eval.stdout)?;
    let predictions: Vec<u8> = serde_json::from_value(eval["predictions"].clone())?;

    let case = Case::new(dir, spec, model, 100)?;
    for &name in boards {
        let report = case.run_on(board(name))?;
        for (i, line) in report.digits.iter().enumerate() {
            assert_eq!(
                line.pred,
                u16::from(predictions[i]),
                "{name}: digit {i}: the firmware and `trainer eval` disagree"
            );
        }
        assert!(
            report.summary.correct >= correct,
            "{name}: {:?}",
            report.summary
        );
    }
    Ok(())
}

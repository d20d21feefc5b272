//! `cargo xtask bench-mcu`: the firmware on every board under QEMU, one table.
//!
//! For each board it builds the firmware around the model and the first test
//! digits, runs it (`xtask qemu`'s machinery), checks every digit's int8 logits
//! against infer-core on the host and the SysTick calibration, and reads:
//!
//! - instructions per inference and per layer, from the firmware's `summary:`
//!   and `layers:` lines (SysTick under `-icount shift=0`: instructions, not
//!   cycles);
//! - RAM: the stack one inference uses (its working memory included: it uses no
//!   statics), the whole run's stack peak (printing included), and the static
//!   RAM of the whole firmware;
//! - inference code: the bytes of the firmware's `infer_digit` and of every
//!   function it calls, from the ELF ([`elf`]);
//! - weight bytes: the model's int8 weights (and the whole model.bin), which
//!   stay in flash.
//!
//! The model runs as its own network (generated from the model, checked against
//! `--spec` if given); the layer columns are its layers (a conv and the max pool fused into
//! it as one), each with its instructions per multiply-accumulate. For the networks
//! CMSIS-NN was measured on (the tutorial, `models/two-blocks.toml`, tutorial-full, and the
//! MLPerf Tiny models imported from `tests/fixtures/mlperf-tiny/`) the table gives its
//! figures beside ours.

mod elf;

use crate::inputs::Inputs;
use crate::qemu::{self, Board, FirmwareBuild, FirmwareRun, Spec, BOARDS};
use crate::workspace_root;
use anyhow::{ensure, Context, Result};
use model_spec::plan::Plan;
use std::fmt::Write as _;
use std::fs;
use std::path::PathBuf;
use std::time::Duration;

/// Options of `cargo xtask bench-mcu`.
#[derive(clap::Args)]
pub struct Args {
    /// The model to run (default: the firmware's own; relative paths, as every path here,
    /// from the repository root).
    #[arg(long, default_value = "firmware-example/assets/model.bin", value_parser = crate::from_root)]
    pub model: PathBuf,
    // The spec `--model` was trained from, checked against it at build time (as `cargo
    // xtask qemu --spec`).
    #[arg(long, help = qemu::spec_help())]
    pub spec: Option<String>,
    /// Directory with the MNIST IDX files.
    #[arg(long, default_value = "data/mnist", value_parser = crate::from_root)]
    pub data: PathBuf,
    /// Test digits per board (at most 200: the micro:bit's flash).
    #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..=200))]
    pub count: u64,
    /// Only these boards (comma-separated; default all).
    #[arg(long, value_delimiter = ',', value_parser = qemu::parse_board)]
    pub boards: Vec<&'static Board>,
    /// Also list the functions counted as inference code.
    #[arg(long)]
    pub verbose: bool,
    /// Build the small-RAM engine (the firmware's feature `small-ram`): one conv pixel at a
    /// time instead of four, about a quarter of the patch memory for more instructions.
    #[arg(long)]
    pub small_ram: bool,
}

/// Instructions per inference of CMSIS-NN 7.0 on the same int8 models and boards (QEMU
/// 7.2, `-icount shift=0`; the tutorial under TFLite Micro as measured for issue 5, the
/// others with `arm_convolve_wrapper_s8`, `arm_max_pool_s8` and
/// `arm_fully_connected_per_channel_s8` as issue 13 gives them; ds-cnn and resnet-tiny, trained
/// with seed 1 as the README says, at CMSIS-NN 99f736a6 built with arm-none-eabi-gcc 12.2
/// `-Ofast` in a harness of ours, their convs, depthwise convs, average pool and adds through
/// the wrappers' kernels and the int32 logits through `arm_nn_mat_mult_nt_t_s8_s32`, every
/// logit equal to the host's): `(network, board, instructions)`.
const CMSIS_NN: &[(&str, &str, u64)] = &[
    ("tutorial", "mps2-an386", 2_022_388),
    ("tutorial", "mps2-an385", 2_129_272),
    ("tutorial", "mps2-an500", 2_032_808),
    ("two-blocks", "mps2-an386", 2_387_334),
    ("two-blocks", "mps2-an385", 2_926_072),
    ("two-blocks", "mps2-an500", 2_399_615),
    ("two-blocks", "microbit", 6_719_681),
    ("two-blocks", "mps3-an547", 593_157),
    ("tutorial-full", "mps2-an386", 23_954_404),
    ("tutorial-full", "mps2-an500", 23_954_404),
    ("tutorial-full", "mps2-an385", 35_310_313),
    ("tutorial-full", "mps3-an547", 3_676_074),
    ("ds-cnn", "mps2-an386", 1_975_150),
    ("ds-cnn", "mps2-an385", 2_399_975),
    ("ds-cnn", "microbit", 6_683_265),
    ("ds-cnn", "mps3-an547", 551_165),
    ("resnet-tiny", "mps2-an386", 1_668_797),
    ("resnet-tiny", "mps2-an385", 2_111_238),
    ("resnet-tiny", "microbit", 4_705_856),
    ("resnet-tiny", "mps3-an547", 411_339),
    ("MLPerf Tiny keyword spotting", "mps2-an386", 7_843_137),
    ("MLPerf Tiny keyword spotting", "mps2-an385", 10_543_089),
    ("MLPerf Tiny keyword spotting", "mps3-an547", 1_783_086),
    ("MLPerf Tiny visual wake words", "mps2-an386", 24_712_985),
    ("MLPerf Tiny visual wake words", "mps2-an385", 32_075_849),
    ("MLPerf Tiny visual wake words", "mps3-an547", 6_425_772),
    ("MLPerf Tiny image classification", "mps2-an386", 29_870_665),
    ("MLPerf Tiny image classification", "mps2-an385", 41_754_485),
    ("MLPerf Tiny image classification", "mps3-an547", 4_807_325),
    ("MLPerf Tiny anomaly detection", "mps2-an386", 579_915),
    ("MLPerf Tiny anomaly detection", "mps2-an385", 953_511),
    ("MLPerf Tiny anomaly detection", "mps3-an547", 147_611),
];

/// The RAM to compare with for the networks of [`CMSIS_NN`]: CMSIS-NN's inference RAM (its
/// layer-by-layer buffers and scratch) as issue 13 gives it, and for the MLPerf Tiny models
/// TFLite Micro's arena (from its own allocation report, issue 15).
const CMSIS_NN_RAM: &[(&str, &str, u64)] = &[
    ("two-blocks", "CMSIS-NN's", 15_020),
    ("tutorial-full", "CMSIS-NN's", 60_284),
    ("ds-cnn", "CMSIS-NN's on the M4F", 13_540),
    ("resnet-tiny", "CMSIS-NN's on the M4F", 6_036),
    (
        "MLPerf Tiny keyword spotting",
        "TFLite Micro's arena",
        24_272,
    ),
    (
        "MLPerf Tiny visual wake words",
        "TFLite Micro's arena",
        103_680,
    ),
    (
        "MLPerf Tiny anomaly detection",
        "TFLite Micro's arena",
        3_984,
    ),
];

/// The MLPerf Tiny reference models (`tests/fixtures/mlperf-tiny/`, imported with `trainer
/// import`) among [`CMSIS_NN`]'s networks, known by their input `(rows, columns, channels)`
/// and multiply-accumulates per inference (CMSIS-NN called as TFLite Micro calls it, QEMU
/// 7.2 instructions, as issue 15 gives them).
const MLPERF_TINY: &[(&str, (usize, usize, usize), u64)] = &[
    ("MLPerf Tiny keyword spotting", (49, 10, 1), 2_656_768),
    ("MLPerf Tiny visual wake words", (96, 96, 3), 7_489_664),
    ("MLPerf Tiny image classification", (32, 32, 3), 12_501_632),
    ("MLPerf Tiny anomaly detection", (1, 1, 640), 264_192),
];

/// The networks of [`CMSIS_NN`]: name and spec (a preset or a spec file).
const KNOWN_NETWORKS: &[(&str, &str)] = &[
    ("tutorial", "tutorial"),
    ("two-blocks", "models/two-blocks.toml"),
    ("tutorial-full", "tutorial-full"),
    ("ds-cnn", "models/ds-cnn.toml"),
    ("resnet-tiny", "models/resnet-tiny.toml"),
];

/// One board's row.
struct Row {
    board: &'static Board,
    run: FirmwareRun,
    code_bytes: u64,
    code_functions: Vec<(String, u32)>,
}

/// Runs `cargo xtask bench-mcu`.
///
/// # Errors
/// A board whose build, run, calibration or predictions fail, or an ELF that
/// cannot be read.
pub fn run(args: &Args) -> Result<()> {
    let root = workspace_root();
    let model = fs::canonicalize(root.join(&args.model))
        .with_context(|| format!("cannot find the model {}", args.model.display()))?;
    let model_bytes = fs::read(&model)?;
    let spec = args.spec.as_deref().map(Spec::resolve).transpose()?;
    let count = usize::try_from(args.count)?;
    let file = qemu::decode(&model_bytes).with_context(|| model.display().to_string())?;
    let inputs = Inputs::for_model(&file, &root.join(&args.data), count)?;
    let weights = file
        .ops
        .iter()
        .filter_map(|op| op.params().map(|p| p.weights.len()))
        .sum();
    let host = qemu::stack_host_logits(&file, &inputs)?;
    let network =
        model_spec::codegen::Network::from_bytes(&model.display().to_string(), &model_bytes)
            .map_err(anyhow::Error::msg)?;
    let known = known_network(&network.plan)?;
    let macs = macs(&network.plan);
    let boards: Vec<&'static Board> = if args.boards.is_empty() {
        BOARDS.iter().collect()
    } else {
        args.boards.clone()
    };

    let mut rows = Vec::new();
    for board in boards {
        eprintln!("==> {}", board.name);
        let build = FirmwareBuild {
            board,
            model: &model,
            spec: spec.as_ref(),
            small_ram: args.small_ram,
        };
        let run = qemu::run_batch(&build, &inputs, 0, count, Duration::from_secs(600))?;
        qemu::check_against_host(&run, &host, 0).with_context(|| format!("on {}", board.name))?;
        let (loop_insns, measured) = run.calibration;
        ensure!(
            loop_insns.abs_diff(measured) * 1000 <= loop_insns,
            "{}: SysTick calibration off: {measured} measured for {loop_insns}",
            board.name
        );
        let elf_bytes =
            fs::read(&run.elf).with_context(|| format!("cannot read {}", run.elf.display()))?;
        let elf = elf::Elf::parse(&elf_bytes)?;
        let root_fn = elf
            .find("infer_digit")
            .context("no `infer_digit` function in the firmware ELF")?;
        let functions = elf.closure(root_fn)?;
        rows.push(Row {
            board,
            code_bytes: functions.iter().map(|f| u64::from(f.size)).sum(),
            code_functions: functions.iter().map(|f| (f.name.clone(), f.size)).collect(),
            run,
        });
    }
    print!(
        "{}",
        table(
            &rows,
            known,
            (macs, &layer_macs(&network.plan)),
            (count, inputs.labelled),
            weights,
            model_bytes.len(),
            args.small_ram
        )
    );
    if args.verbose {
        for row in &rows {
            println!("\n{} inference code:", row.board.name);
            for (name, size) in &row.code_functions {
                println!("  {size:6}  {name}");
            }
        }
    }
    Ok(())
}

/// Which of [`KNOWN_NETWORKS`] `plan` is (the same input and operations, whatever the
/// weights), or which of [`MLPERF_TINY`] (the same input and multiply-accumulates), if any.
fn known_network(plan: &Plan) -> Result<Option<&'static str>> {
    let kinds = |plan: &Plan| plan.ops.iter().map(|op| op.kind).collect::<Vec<_>>();
    for &(name, spec) in KNOWN_NETWORKS {
        let spec = model_spec::spec::Spec::load(&workspace_root().join(spec).display().to_string())
            .or_else(|_| model_spec::spec::Spec::load(spec))?;
        let known = Plan::of(&spec)?;
        if plan.input == known.input && kinds(plan) == kinds(&known) {
            return Ok(Some(name));
        }
    }
    Ok(MLPERF_TINY
        .iter()
        .find(|&&(_, input, count)| plan.input == input && macs(plan) == count)
        .map(|&(name, _, _)| name))
}

/// Multiply-accumulates of one inference ([`op_macs`] of every operation).
fn macs(plan: &Plan) -> u64 {
    plan.ops.iter().map(|op| op_macs(op.kind)).sum()
}

/// Multiply-accumulates of each layer of the `layers:` line ([`Plan::layer_names`]), by name.
fn layer_macs(plan: &Plan) -> Vec<(String, u64)> {
    plan.layer_names()
        .into_iter()
        .map(|(ops, name)| {
            let layer = plan.ops.get(ops).unwrap_or_default();
            (name, layer.iter().map(|op| op_macs(op.kind)).sum())
        })
        .collect()
}

/// Multiply-accumulates of one operation: a conv's outputs times its taps, a depthwise
/// conv's times its kernel's, a dense layer's outputs times its inputs, none elsewhere.
fn op_macs(k: model_spec::plan::OpShape) -> u64 {
    let per_output = match k {
        model_spec::plan::OpShape::Conv2d { .. } => k.taps(),
        model_spec::plan::OpShape::DepthwiseConv2d { geometry: g, .. } => {
            g.window.k_h * g.window.k_w
        }
        model_spec::plan::OpShape::Dense { inputs, .. } => inputs,
        model_spec::plan::OpShape::MaxPool2d { .. }
        | model_spec::plan::OpShape::AvgPool2d { .. }
        | model_spec::plan::OpShape::Add { .. }
        | model_spec::plan::OpShape::Branch { .. } => 0,
    };
    (k.out_len() * per_output) as u64
}

/// The results as a Markdown table; the layer columns are the first row's `layers:` names
/// (the layers of the network's plan), each value with its instructions per
/// multiply-accumulate where the layer has any (`layer_macs`).
fn table(
    rows: &[Row],
    known: Option<&str>,
    (macs, layer_macs): (u64, &[(String, u64)]),
    (count, labelled): (usize, bool),
    weights: usize,
    model_bytes: usize,
    small_ram: bool,
) -> String {
    let mut out = String::new();
    let layers: Vec<&str> = rows.first().map_or(Vec::new(), |row| {
        row.run
            .report
            .layers
            .iter()
            .map(|(name, _)| name.as_str())
            .collect()
    });
    let _ = writeln!(
        out,
        "\nFirmware under QEMU 7.2, -icount shift=0 (instructions, not cycles), mean over \
         {count} {} ({}, {macs} multiply-accumulates per inference); every output equal to \
         the host's. {} Inference RAM: the network's buffers \
         and patch and the stack of one inference (its kernels' scratch included), the input \
         aside{}.\n",
        if labelled {
            "test digits, the first"
        } else {
            "pseudo-random inputs (labels meaningless)"
        },
        known.unwrap_or("a network CMSIS-NN was not measured on"),
        if small_ram {
            "The small-RAM build (--small-ram): one conv pixel at a time."
        } else {
            "The default build: four conv pixels at once where the core's kernels can."
        },
        known
            .and_then(|k| CMSIS_NN_RAM.iter().find(|(n, _, _)| *n == k))
            .map_or(String::new(), |(_, whose, ram)| format!(
                "; {whose}: {ram} B"
            ))
    );
    let _ = write!(
        out,
        "| board | core | insns/inference | insns/MAC | CMSIS-NN | vs CMSIS-NN |"
    );
    for layer in &layers {
        let _ = write!(out, " {layer} |");
    }
    let _ = writeln!(
        out,
        " inference RAM B | infer stack B | run stack peak B | static RAM B | \
         inference code B | weight B (model.bin) | correct |"
    );
    let _ = write!(out, "| --- | --- | ---: | ---: | ---: | ---: |");
    for _ in &layers {
        let _ = write!(out, " ---: |");
    }
    let _ = writeln!(out, " ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for row in rows {
        let r = &row.run;
        let insns = r.report.summary.insns_per_inference;
        let cmsis = CMSIS_NN
            .iter()
            .find(|(n, b, _)| Some(*n) == known && *b == row.board.name)
            .map(|&(_, _, c)| c);
        let (cmsis, vs) = cmsis.map_or(("n/a".to_string(), "n/a".to_string()), |c| {
            (c.to_string(), format!("{:.3}×", insns as f64 / c as f64))
        });
        let _ = write!(
            out,
            "| {} | {} | {} | {:.2} | {} | {} |",
            row.board.name,
            row.board.cpu,
            insns,
            insns as f64 / macs.max(1) as f64,
            cmsis,
            vs
        );
        for layer in &layers {
            let macs = layer_macs
                .iter()
                .find(|(name, _)| name == layer)
                .map_or(0, |&(_, m)| m);
            let value = match r.report.layer(layer) {
                None => "?".to_string(),
                Some(v) if macs > 0 => format!("{v} ({:.2}/MAC)", v as f64 / macs as f64),
                Some(v) => v.to_string(),
            };
            let _ = write!(out, " {value} |");
        }
        let _ = writeln!(
            out,
            " {} | {} | {} | {} | {} | {} ({}) | {} |",
            r.memory.scratch_bytes + r.memory.infer_stack_bytes,
            r.memory.infer_stack_bytes,
            r.report.summary.stack_peak_bytes,
            r.memory.static_ram_bytes,
            row.code_bytes,
            weights,
            model_bytes,
            if labelled {
                format!("{}/{}", r.report.summary.correct, r.report.summary.total)
            } else {
                "–".to_string()
            },
        );
    }
    out
}

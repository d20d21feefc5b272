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
//! `--spec` if given); the layer columns are the stages of its plan. The comparison
//! with CMSIS-NN is for the tutorial's network (the committed model's).

mod elf;

use crate::qemu::{self, Board, FirmwareRun, Spec, BOARDS};
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
}

/// Instructions per inference of CMSIS-NN 7.0 under TFLite Micro on the same
/// model and boards, as measured for issue 5 (QEMU 7.2, `-icount shift=0`).
const CMSIS_NN: &[(&str, u64)] = &[
    ("mps2-an386", 2_022_388),
    ("mps2-an385", 2_129_272),
    ("mps2-an500", 2_032_808),
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
    let dataset = trainer::data::load_test(&root.join(&args.data))?;
    let count = usize::try_from(args.count)?;
    let file = infer_core::stack::StackFile::decode(&model_bytes)
        .map_err(|e| anyhow::anyhow!("{} is not a usable model.bin: {e}", model.display()))?;
    let weights = file
        .ops
        .iter()
        .filter_map(|op| op.params().map(|p| p.weights.len()))
        .sum();
    let host = qemu::stack_host_logits(&model_bytes, &dataset, count)?;
    let tutorial = is_tutorial(&model.display().to_string(), &model_bytes)?;
    let boards: Vec<&'static Board> = if args.boards.is_empty() {
        BOARDS.iter().collect()
    } else {
        args.boards.clone()
    };

    let mut rows = Vec::new();
    for board in boards {
        eprintln!("==> {}", board.name);
        let run = qemu::run_batch(
            board,
            &model,
            spec.as_ref(),
            &dataset,
            0,
            count,
            Duration::from_secs(600),
        )?;
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
        table(&rows, tutorial, count, weights, model_bytes.len())
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

/// Whether `bytes` (the model called `name`) is the tutorial's network: the operations of
/// the `tutorial` preset's plan, whatever its weights.
fn is_tutorial(name: &str, bytes: &[u8]) -> Result<bool> {
    let network =
        model_spec::codegen::Network::from_bytes(name, bytes).map_err(anyhow::Error::msg)?;
    let tutorial = Plan::of(&model_spec::spec::Spec::tutorial())?;
    let kinds = |plan: &Plan| plan.ops.iter().map(|op| op.kind).collect::<Vec<_>>();
    Ok(network.plan.input == tutorial.input && kinds(&network.plan) == kinds(&tutorial))
}

/// The results as a Markdown table; the stage columns are the first row's `layers:` names
/// (the stages of the network's plan).
fn table(rows: &[Row], tutorial: bool, count: usize, weights: usize, model_bytes: usize) -> String {
    let mut out = String::new();
    let stages: Vec<&str> = rows.first().map_or(Vec::new(), |row| {
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
         the first {count} test digits; every digit's logits equal to the host's.\n"
    );
    let _ = write!(out, "| board | core | insns/inference | vs CMSIS-NN |");
    for stage in &stages {
        let _ = write!(out, " {stage} |");
    }
    let _ = writeln!(
        out,
        " infer RAM (stack) B | run stack peak B | static RAM B | inference code B | \
         weight B (model.bin) | correct |"
    );
    let _ = write!(out, "| --- | --- | ---: | ---: |");
    for _ in &stages {
        let _ = write!(out, " ---: |");
    }
    let _ = writeln!(out, " ---: | ---: | ---: | ---: | ---: | ---: |");
    for row in rows {
        let r = &row.run;
        let insns = r.report.summary.insns_per_inference;
        // CMSIS-NN was measured on the tutorial's network only.
        let vs = CMSIS_NN
            .iter()
            .find(|(b, _)| tutorial && *b == row.board.name)
            .map_or("n/a".to_string(), |(_, c)| {
                format!("{:.3}×", insns as f64 / *c as f64)
            });
        let _ = write!(
            out,
            "| {} | {} | {} | {} |",
            row.board.name, row.board.cpu, insns, vs
        );
        for stage in &stages {
            let value = r
                .report
                .layer(stage)
                .map_or("?".to_string(), |v| v.to_string());
            let _ = write!(out, " {value} |");
        }
        let _ = writeln!(
            out,
            " {} | {} | {} | {} | {} ({}) | {}/{} |",
            r.memory.infer_stack_bytes,
            r.report.summary.stack_peak_bytes,
            r.memory.static_ram_bytes,
            row.code_bytes,
            weights,
            model_bytes,
            r.report.summary.correct,
            r.report.summary.total,
        );
    }
    out
}

//! `trainer summary`: the Keras `model.summary()` table of the tutorial CNN (or of any spec
//! with `--arch`), then what its int8 form costs on a microcontroller: flash for model.bin,
//! RAM for one inference. `--model` reads an actual model.bin (format 3).

use super::args;
use crate::arch::budget::{self, Board, Budget};
use crate::arch::Spec;
use crate::eval;
use anyhow::{Context, Result};
use clap::Args;
use infer_core::format::ChannelParams;
use infer_core::stack::Pixels;
use infer_core::stack::{BufferSizes, StackFile};
use model_spec::boards;
use std::path::{Path, PathBuf};

/// Options of `trainer summary`.
#[derive(Args)]
pub struct SummaryArgs {
    /// Describe this model.bin (format 3) from its own operations, with its actual size
    /// [default: the architecture, estimated from its spec].
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Print one JSON object instead of the tables.
    #[arg(long)]
    pub json: bool,
    /// Summarise this architecture: a preset (`tutorial`, `tutorial-full`) or a spec file
    /// (docs/architecture-spec.md) [default: tutorial]; flash and RAM are estimated from the
    /// spec.
    #[arg(long)]
    pub arch: Option<String>,
    /// Check the int8 model's flash and RAM against this board (mps2-an385, mps2-an386,
    /// mps2-an500, microbit, mps3-an547).
    #[arg(long)]
    pub board: Option<String>,
}

/// Where the bytes of a model.bin go.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Flash {
    /// Whole file.
    pub total: usize,
    /// int8 weights.
    pub weights: usize,
    /// Per-channel weight scales, int32 biases, multipliers and shifts.
    pub channel_params: usize,
    /// Magic, version, shapes, quantization parameters, length prefixes and CRC-32.
    pub header: usize,
}

impl Flash {
    /// Splits the size of `bytes`, a model.bin (format 3).
    ///
    /// # Errors
    /// If the bytes are not a model.bin that infer-core accepts.
    pub fn of(bytes: &[u8]) -> Result<Self> {
        let file = eval::load_stack(bytes)?;
        Ok(Self::split(
            bytes.len(),
            file.ops.iter().filter_map(|op| op.params().copied()),
        ))
    }

    /// The split of a file of `total` bytes holding the arrays of `params`.
    fn split<'a>(total: usize, params: impl IntoIterator<Item = ChannelParams<'a>>) -> Self {
        let (mut weights, mut channel_params) = (0, 0);
        for p in params {
            weights += p.weights.len();
            channel_params +=
                p.weight_scales.len() + p.bias.len() + p.multiplier.len() + p.shift.len();
        }
        Self {
            total,
            weights,
            channel_params,
            header: total - weights - channel_params,
        }
    }
}

/// Runs `trainer summary`.
///
/// # Errors
/// With `--model`, a missing or invalid model file; with `--arch`, a spec `trainer fit` would
/// refuse; with `--board`, a model that does not fit the board (after printing the summary).
pub fn run(args: &SummaryArgs) -> Result<()> {
    let board = args
        .board
        .as_deref()
        .map(|name| {
            budget::board(name)
                .copied()
                .with_context(|| format!("unknown board {name} (known: {})", boards::names()))
        })
        .transpose()?;
    if args.arch.is_some() {
        anyhow::ensure!(
            args.model.is_none(),
            "--model describes the model.bin it reads; it does not go with --arch"
        );
    }
    if let Some(path) = &args.model {
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        return run_stack(path, &bytes, board, args.json);
    }
    let name = args.arch.as_deref().unwrap_or("tutorial");
    run_arch(name, &Spec::load(name)?, board, args.json)
}

/// The Keras table of `spec` (`--arch name`), its int8 budget and, with `board`, whether it
/// fits.
///
/// # Errors
/// After printing, if `fit` would refuse the spec (the problem of
/// [`crate::arch::quantize::check_exportable`]) or the model does not fit `board`.
fn run_arch(name: &str, spec: &Spec, board: Option<Board>, json: bool) -> Result<()> {
    let budget = Budget::of(spec, default_pixels(board));
    let small = Budget::of(spec, Pixels::One).ok();
    let problem = crate::arch::quantize::check_exportable(spec).err();
    let (rows, non_trainable) = rows(spec);
    let fits = |b: &Budget, board: Board| b.flash <= board.flash && b.ram <= board.ram;
    if json {
        let estimate = budget.as_ref().ok().filter(|_| problem.is_none());
        let unavailable = problem.as_ref().map(|e| format!("{e:#}"));
        let json = serde_json::json!({
            "arch": spec.name,
            "layers": rows,
            "total_params": spec.total_params(),
            "non_trainable_params": non_trainable,
            "int8_estimate": estimate,
            "int8_estimate_small_ram": small.as_ref().filter(|_| estimate.is_some()),
            "int8_unavailable": unavailable,
            "board": board.map(|b| serde_json::json!({
                "name": b.name,
                "flash_bytes": b.flash,
                "ram_bytes": b.ram,
                "fits": estimate.map(|e| fits(e, b)),
            })),
        });
        println!("{json}");
    } else {
        print!("{}", table(&rows, non_trainable));
        print_training_memory(spec);
        println!();
    }
    let budget = match (budget, problem) {
        (Ok(budget), None) => budget,
        (_, Some(e)) | (Err(e), None) => {
            if !json {
                println!("int8 on a microcontroller: no int8 export for this spec: {e:#}");
                if let Some(board) = board {
                    println!(
                        "Board {}: cannot be checked without an int8 model",
                        board.name
                    );
                }
            }
            return Err(e.context(format!(
                "{name} cannot be trained into a model.bin (trainer fit refuses it)"
            )));
        }
    };
    if !json {
        println!("int8 on a microcontroller (model.bin format 3 of the spec's int8 plan: batch norm folded, dropout and flatten free)");
        println!(
            " Flash  {} bytes = {} int8 weights + {} per-channel scales, biases, multipliers, shifts + {} header and CRC (at most: output zero points counted at 2 bytes)",
            group(budget.flash),
            group(budget.weights),
            group(budget.channel_params),
            group(budget.header)
        );
        print_ram(
            budget.ram,
            budget.input,
            budget.activations,
            (budget.patch, budget.kernel_stack),
            budget.scratch,
        );
    }
    let small_ram = small.map_or(budget.ram, |s| s.ram);
    if !json {
        print_small_ram(budget.ram, small_ram);
    }
    match board {
        Some(board) => {
            if !json {
                println!();
                print_board(budget.flash, budget.ram, board);
            }
            check_fits(budget.flash, (budget.ram, small_ram), board)
        }
        None => Ok(()),
    }
}

/// The memory `trainer fit` needs for `spec` in batches of the default size, and whether its
/// default `--max-memory` refuses it.
fn print_training_memory(spec: &Spec) {
    let batch = crate::arch::ArchFitConfig::default().batch_size;
    let needed = crate::arch::fit::training_bytes(spec, batch);
    let limit = args::byte_size(super::fit::DEFAULT_MAX_MEMORY).map_or(u128::MAX, u128::from);
    println!(
        " Training memory (trainer fit, batches of {batch}): about {}{}",
        args::show_bytes(needed),
        if needed > limit {
            format!(
                ", more than fit's default --max-memory {}: fit refuses it unless given more",
                super::fit::DEFAULT_MAX_MEMORY
            )
        } else {
            String::new()
        }
    );
}

/// Conv pixels the engine computes at once in a default build for `board` (four without
/// one: the cores whose kernels take several).
fn default_pixels(board: Option<Board>) -> Pixels {
    board.map_or(Pixels::Four, |b| b.default_pixels())
}

/// The RAM line of the small-RAM build (one conv pixel at a time), if it needs less than
/// the default build's `ram` bytes.
fn print_small_ram(ram: usize, small_ram: usize) {
    if small_ram < ram {
        println!(
            " RAM    of the small-RAM build (--small-ram: one conv pixel at a time, more instructions; cargo xtask bench-mcu --small-ram measures them): {} bytes, {} fewer",
            group(small_ram),
            group(ram - small_ram)
        );
    }
}

/// Fails, naming what is too large, if `flash` bytes and `ram` bytes (the default build's,
/// the small-RAM build's) do not fit `board`: scripts can test `summary --board` by its
/// exit status.
fn check_fits(flash: usize, (ram, small_ram): (usize, usize), board: Board) -> Result<()> {
    let mut over = Vec::new();
    if flash > board.flash {
        over.push(format!(
            "flash {} bytes > {}",
            group(flash),
            group(board.flash)
        ));
    }
    if ram > board.ram {
        let small = if small_ram <= board.ram {
            format!(
                " (the small-RAM build needs {} and fits: --small-ram, the firmware's feature small-ram)",
                group(small_ram)
            )
        } else {
            String::new()
        };
        over.push(format!(
            "RAM {} bytes > {}{small}",
            group(ram),
            group(board.ram)
        ));
    }
    anyhow::ensure!(
        over.is_empty(),
        "the model does not fit on {}: {}",
        board.name,
        over.join(", ")
    );
    Ok(())
}

/// The Keras table rows of `spec` and its non-trainable parameter count.
pub fn rows(spec: &Spec) -> (Vec<Row>, usize) {
    let names = spec.keras_names();
    let rows = spec
        .layers
        .iter()
        .enumerate()
        .map(|(i, l)| {
            let (trainable, fixed) = spec.params_of(i);
            Row {
                label: format!("{} ({})", names[i], l.keras_class()),
                output: spec.shapes[i].dims(),
                params: trainable + fixed,
            }
        })
        .collect();
    let non_trainable = (0..spec.layers.len()).map(|i| spec.params_of(i).1).sum();
    (rows, non_trainable)
}

/// The RAM line of a layer-by-layer format-3 inference.
fn print_ram(
    total: usize,
    input: usize,
    arena: usize,
    (patch, kernel_stack): (usize, usize),
    scratch: usize,
) {
    println!(
        " RAM    per inference through the fused stages: {} bytes = {} int8 input + {} activation arena + {} conv patch and stage working memory + {} fused-kernel scratch + {} class probabilities; weights stay in flash",
        group(total),
        group(input),
        group(arena),
        group(patch),
        group(kernel_stack),
        group(scratch)
    );
}

/// RAM of an inference of a format-3 model through its fused stages
/// (`infer_core::stack::stages`), as the firmware lays it out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct StackRam {
    /// Total: input + the buffers + patch + kernel scratch + probabilities.
    pub total: usize,
    /// The int8 input image.
    pub input: usize,
    /// The activation arena (the stages' outputs, those live at once side by side).
    pub arena: usize,
    /// The stages' patch buffer (packed patch and working memory).
    pub patch: usize,
    /// Scratch a fused kernel keeps on its stack.
    pub kernel_stack: usize,
    /// f32 class probabilities.
    pub probabilities: usize,
}

impl StackRam {
    /// The RAM `file` needs computing `pixels` conv pixels at once, from infer-core's
    /// [`BufferSizes::engine`].
    pub fn of(file: &StackFile<'_>, pixels: Pixels) -> Self {
        let sizes = BufferSizes::engine(file, pixels);
        let input = usize::from(file.input.height)
            * usize::from(file.input.width)
            * usize::from(file.input.channels);
        let patch = sizes.patch_words * 4;
        let probabilities = file.classes() * 4;
        Self {
            total: input + sizes.arena + patch + sizes.stack_bytes + probabilities,
            input,
            arena: sizes.arena,
            patch,
            kernel_stack: sizes.stack_bytes,
            probabilities,
        }
    }
}

/// The operations, flash and RAM of a format-3 model.bin and, with `board`, whether it fits.
fn run_stack(path: &Path, bytes: &[u8], board: Option<Board>, json: bool) -> Result<()> {
    let loading = || format!("loading {}", path.display());
    eval::format_version(bytes).with_context(loading)?;
    let file = eval::load_stack(bytes).with_context(loading)?;
    let flash = Flash::of(bytes).with_context(loading)?;
    let ram = StackRam::of(&file, default_pixels(board));
    let small = StackRam::of(&file, Pixels::One);
    let ops: Vec<String> = file.ops.iter().map(|op| op.shape().to_string()).collect();
    if json {
        let json = serde_json::json!({
            "format": infer_core::stack::STACK_FORMAT_VERSION,
            "ops": ops,
            "flash_bytes": flash,
            "flash_source": path.display().to_string(),
            "ram_bytes": ram,
            "ram_bytes_small_ram": small,
            "board": board.map(|b| serde_json::json!({
                "name": b.name,
                "flash_bytes": b.flash,
                "ram_bytes": b.ram,
                "fits": flash.total <= b.flash && ram.total <= b.ram,
            })),
        });
        println!("{json}");
        return board.map_or(Ok(()), |b| {
            check_fits(flash.total, (ram.total, small.total), b)
        });
    }
    println!(
        "{}: model.bin format 3, {} int8 operations",
        path.display(),
        ops.len()
    );
    for (i, op) in ops.iter().enumerate() {
        println!(" {i:>2}  {op}");
    }
    println!();
    println!("int8 on a microcontroller (infer-core)");
    println!(
        " Flash  {} bytes = {} int8 weights + {} per-channel scales, biases, multipliers, shifts + {} header and CRC",
        group(flash.total),
        group(flash.weights),
        group(flash.channel_params),
        group(flash.header)
    );
    print_ram(
        ram.total,
        ram.input,
        ram.arena,
        (ram.patch, ram.kernel_stack),
        ram.probabilities,
    );
    print_small_ram(ram.total, small.total);
    match board {
        Some(board) => {
            println!();
            print_board(flash.total, ram.total, board);
            check_fits(flash.total, (ram.total, small.total), board)
        }
        None => Ok(()),
    }
}

/// Whether `flash` and `ram` bytes fit `board`, said plainly.
fn print_board(flash: usize, ram: usize, board: Board) {
    let line = |what: &str, need: usize, have: usize| {
        let verdict = if need <= have {
            format!("fits ({:.1} % used)", need as f64 * 100.0 / have as f64)
        } else {
            format!("DOES NOT FIT: {} bytes too many", group(need - have))
        };
        println!(
            " {what:<5}  needs {} of {} bytes: {verdict}",
            group(need),
            group(have)
        );
    };
    println!("Board {} ({})", board.name, board.core);
    line("Flash", flash, board.flash);
    line("RAM", ram, board.ram);
    if flash > board.flash || ram > board.ram {
        println!(" This model does not fit on {}.", board.name);
    } else {
        println!(
            " This model fits on {} (RAM excludes the stack and the firmware's own data).",
            board.name
        );
    }
}

/// Column widths of the Keras 3 table, inside the borders.
const WIDTHS: [usize; 3] = [33, 24, 15];

/// One row of [`table`]: `name (Class)`, output shape, parameters.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Row {
    /// `conv2d_1 (Conv2D)`.
    pub label: String,
    /// Output shape without the batch dimension.
    pub output: Vec<usize>,
    /// Parameters (trainable and not).
    pub params: usize,
}

/// The Keras 3 table of any rows, `non_trainable` of whose parameters are not trained.
pub fn table(layers: &[Row], non_trainable: usize) -> String {
    let rule = |left: &str, fill: &str, mid: &str, right: &str| {
        let cells: Vec<String> = WIDTHS.iter().map(|&w| fill.repeat(w)).collect();
        format!("{left}{}{right}\n", cells.join(mid))
    };
    let row = |edge: &str, cells: [String; 3]| {
        format!(
            "{edge} {:<w0$}{edge} {:<w1$}{edge} {:>w2$} {edge}\n",
            cells[0],
            cells[1],
            cells[2],
            w0 = WIDTHS[0] - 1,
            w1 = WIDTHS[1] - 1,
            w2 = WIDTHS[2] - 2,
        )
    };
    let mut out = String::from("Model: \"sequential\"\n");
    out += &rule("┏", "━", "┳", "┓");
    out += &row(
        "┃",
        [
            "Layer (type)".into(),
            "Output Shape".into(),
            "Param #".into(),
        ],
    );
    out += &rule("┡", "━", "╇", "┩");
    for (i, layer) in layers.iter().enumerate() {
        if i > 0 {
            out += &rule("├", "─", "┼", "┤");
        }
        let shape: Vec<String> = layer.output.iter().map(usize::to_string).collect();
        out += &row(
            "│",
            [
                layer.label.clone(),
                format!("(None, {})", shape.join(", ")),
                group(layer.params),
            ],
        );
    }
    out += &rule("└", "─", "┴", "┘");
    let total: usize = layers.iter().map(|l| l.params).sum();
    let trainable = total - non_trainable.min(total);
    out += &format!(" Total params: {} ({})\n", group(total), kib(total * 4));
    out += &format!(
        " Trainable params: {} ({})\n",
        group(trainable),
        kib(trainable * 4)
    );
    out += &format!(
        " Non-trainable params: {} ({})\n",
        group(total - trainable),
        kib((total - trainable) * 4)
    );
    out
}

/// `54410` → `54,410`.
pub fn group(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Bytes as Keras prints them (`217640` → `212.54 KB`, `4799528` → `4.58 MB`; binary units).
fn kib(bytes: usize) -> String {
    if bytes < 1024 {
        format!("{bytes}.00 B")
    } else if bytes >= 1024 * 1024 {
        format!("{:.2} MB", bytes as f64 / (1024.0 * 1024.0))
    } else {
        format!("{:.2} KB", bytes as f64 / 1024.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::quantize::{QuantizedStack, StackCalibration};

    #[test]
    fn the_table_is_keras_3s() {
        let expected = "\
Model: \"sequential\"
┏━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━━━━━━━━━━┳━━━━━━━━━━━━━━━┓
┃ Layer (type)                    ┃ Output Shape           ┃       Param # ┃
┡━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━━━━━━━━━━╇━━━━━━━━━━━━━━━┩
│ conv2d (Conv2D)                 │ (None, 26, 26, 32)     │           320 │
├─────────────────────────────────┼────────────────────────┼───────────────┤
│ max_pooling2d (MaxPooling2D)    │ (None, 13, 13, 32)     │             0 │
├─────────────────────────────────┼────────────────────────┼───────────────┤
│ dropout (Dropout)               │ (None, 13, 13, 32)     │             0 │
├─────────────────────────────────┼────────────────────────┼───────────────┤
│ flatten (Flatten)               │ (None, 5408)           │             0 │
├─────────────────────────────────┼────────────────────────┼───────────────┤
│ dropout_1 (Dropout)             │ (None, 5408)           │             0 │
├─────────────────────────────────┼────────────────────────┼───────────────┤
│ dense (Dense)                   │ (None, 10)             │        54,090 │
└─────────────────────────────────┴────────────────────────┴───────────────┘
 Total params: 54,410 (212.54 KB)
 Trainable params: 54,410 (212.54 KB)
 Non-trainable params: 0 (0.00 B)
";
        let (rows, non_trainable) = rows(&Spec::load("tutorial").unwrap());
        assert_eq!(table(&rows, non_trainable), expected);
    }

    #[test]
    fn parameters_agree_with_the_model() {
        let spec = Spec::load("tutorial").unwrap();
        let (rows, _) = rows(&spec);
        let total: usize = rows.iter().map(|r| r.params).sum();
        assert_eq!(
            total,
            crate::arch::Model::glorot_uniform(&spec, 1).parameter_count()
        );
    }

    #[test]
    fn flash_is_split_into_weights_channel_params_and_header() {
        let spec = Spec::load("tutorial").unwrap();
        let model = crate::arch::Model::glorot_uniform(&spec, 2);
        let images: Vec<u8> = (0..3 * 784).map(|i| (i * 7 % 256) as u8).collect();
        let plan = model_spec::Plan::of(&spec).unwrap();
        let calibration = StackCalibration::measure(&model, &plan, &images).unwrap();
        let bytes = QuantizedStack::from_calibration(&model, &plan, &calibration)
            .unwrap()
            .to_bytes()
            .unwrap();
        let flash = Flash::of(&bytes).unwrap();
        assert_eq!(flash.weights, 32 * 9 + 10 * 5408);
        // per channel: f32 scale, i32 bias, i32 multiplier, i8 shift
        assert_eq!(flash.channel_params, (32 + 10) * 13);
        assert_eq!(
            flash.total,
            flash.weights + flash.channel_params + flash.header
        );
        assert!(flash.header < 200, "{flash:?}");
    }

    #[test]
    fn batch_norms_moving_statistics_are_counted_as_non_trainable() {
        let rows = vec![
            Row {
                label: "dense (Dense)".into(),
                output: vec![10],
                params: 7850,
            },
            Row {
                label: "batch_normalization (BatchNormalization)".into(),
                output: vec![10],
                params: 40,
            },
        ];
        let text = table(&rows, 20);
        assert!(text.contains(" Total params: 7,890 (30.82 KB)"), "{text}");
        assert!(
            text.contains(" Trainable params: 7,870 (30.74 KB)"),
            "{text}"
        );
        assert!(
            text.contains(" Non-trainable params: 20 (80.00 B)"),
            "{text}"
        );
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(54_410), "54,410");
        assert_eq!(group(1_234_567), "1,234,567");
        assert_eq!(kib(217_640), "212.54 KB");
        assert_eq!(kib(4_799_528), "4.58 MB");
    }
}

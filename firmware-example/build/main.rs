//! Build script: picks the board's memory map, puts it on the linker's search
//! path as `memory.x`, and embeds the model and the test digits, checking both so
//! that a bad file fails the build rather than the board. It generates the
//! network's Rust code from the model with the library's helper ([`network`],
//! `model_spec::codegen`), checked against `FIRMWARE_SPEC` if set.
//!
//! Inputs (paths relative to this crate unless absolute; see README.md):
//! - `FIRMWARE_BOARD`: one of [`BOARDS`]; default: the board of the target
//!   (`thumbv6m` → `microbit`, `thumbv7m` → `mps2-an385`, `thumbv7em` →
//!   `mps2-an386`). The firmware gets its name and SysTick rate from here.
//! - `FIRMWARE_INSNS_PER_TICK` (`N` or `N/D`): overrides the board's SysTick
//!   rate, to check that the calibration catches a wrong one.
//! - `FIRMWARE_MODEL`, default `assets/model.bin` (the tutorial's network): a
//!   format-3 model, whose network — types, buffers and weight layout —
//!   [`network`] generates from the model's own operations into
//!   `$OUT_DIR/network.rs`, for any input shape; model and network must fit the
//!   board's flash and RAM. A model of a retired format
//!   (format 1) fails the build, naming its version and the command that writes
//!   a current one.
//! - `FIRMWARE_SPEC`: optional, a spec file (`models/*.toml`,
//!   docs/architecture-spec.md) or a preset name (`tutorial`, `tutorial-full`).
//!   The model's every operation must then match the spec's (type, shapes,
//!   ReLU); the build fails naming both otherwise.
//! - `FIRMWARE_DIGITS`, default `assets/digits.bin` (MNIST test digits): the
//!   labelled inputs, records of `[label: u8][h×w×c values: u8]` for the
//!   model's input shape, each value `v` standing for `v / 255` (README.md,
//!   "Digits file").
//! - the crate's feature `small-ram` (infer-core's): the engine computes one
//!   conv pixel at a time, and the network's patch buffer is sized for that (as
//!   on the Cortex-M0 in every build, `Board::default_pixels`).
//! - the crate's feature `narrow-weights`: on a board whose kernels take prepared
//!   weights (`Board::preparation`: widened on the M4F and M7, dense units paired
//!   on the M3, dense offset terms on the M55, conv weights as words on the M0), none
//!   are generated; the layers run
//!   from the model's int8 weights alone (less flash, more instructions).

use model_spec::codegen as network;

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process;

use model_spec::boards::{Board, BOARDS};

/// Flash the program itself needs besides the model and the digits, with room
/// to spare (the vector table, code and constants take about 20 KB).
const CODE_ALLOWANCE: usize = 32 * 1024;

fn main() {
    let crate_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let target = env::var("TARGET").expect("cargo sets TARGET");

    let board = board(&target);
    let (num, den) = insns_per_tick(board);
    println!("cargo:rustc-env=FIRMWARE_BOARD_NAME={}", board.name);
    println!("cargo:rustc-env=FIRMWARE_INSNS_PER_TICK_NUM={num}");
    println!("cargo:rustc-env=FIRMWARE_INSNS_PER_TICK_DEN={den}");

    // cortex-m-rt's link.x includes memory.x from the linker search path. The
    // linker script is passed from here rather than from .cargo/config.toml's
    // `rustflags`, which a RUSTFLAGS environment variable would replace.
    let memory = crate_dir.join("memory").join(board.memory);
    copy(&memory, &out_dir.join("memory.x"));
    println!("cargo:rustc-link-search={}", out_dir.display());
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    println!("cargo:rerun-if-changed={}", memory.display());

    let model_path = asset_path(&crate_dir, "FIRMWARE_MODEL", "assets/model.bin");
    let model = read(&model_path, "FIRMWARE_MODEL");
    // Shown in messages as given (`FIRMWARE_MODEL=…`), not as resolved.
    let model_name = env::var("FIRMWARE_MODEL").unwrap_or_else(|_| "assets/model.bin".into());

    println!("cargo:rerun-if-env-changed=FIRMWARE_SPEC");
    let spec = env::var("FIRMWARE_SPEC").ok();
    let (network, flash_bytes) =
        stack_network(&crate_dir, board, spec.as_deref(), &model_name, &model);
    write(&out_dir.join("network.rs"), network.as_bytes());
    write(&out_dir.join("model.bin"), &model);

    let digits_path = asset_path(&crate_dir, "FIRMWARE_DIGITS", "assets/digits.bin");
    let digits = read(&digits_path, "FIRMWARE_DIGITS");
    let record = check_digits(&digits_path, &digits, &model);
    check_flash(board, flash_bytes, &digits_path, digits.len(), record);
    write(&out_dir.join("digits.bin"), &digits);
}

/// The network of `model` (called `model_name`), checked against
/// `FIRMWARE_SPEC=spec` if given and against the board's memory; reports flash
/// and RAM and returns the network's generated code; stops the build on any
/// problem.
fn stack_network(
    crate_dir: &Path,
    board: &Board,
    spec: Option<&str>,
    model_name: &str,
    model: &[u8],
) -> (String, usize) {
    let mut network = network::Network::from_bytes(model_name, model).unwrap_or_else(|e| fail(&e));
    network.pixels = if env::var_os("CARGO_FEATURE_SMALL_RAM").is_some() {
        infer_core::stack::Pixels::One
    } else {
        board.default_pixels()
    };
    let narrow = env::var_os("CARGO_FEATURE_NARROW_WEIGHTS").is_some();
    // The M0's words serve its one pixel at a time; the other preparations, four.
    let four = network.pixels == infer_core::stack::Pixels::Four;
    if let (Some(preparation), false) = (board.preparation(), narrow) {
        if four || preparation == infer_core::stack::prepared::Preparation::Words {
            network
                .prepare_weights(model, preparation)
                .unwrap_or_else(|e| fail(&e));
        }
    }
    if let Some(spec) = spec {
        let declared = network::Declared::load(crate_dir, spec).unwrap_or_else(|e| fail(&e));
        if let Some(path) = &declared.path {
            println!("cargo:rerun-if-changed={}", path.display());
        }
        network
            .check_spec(&declared, model)
            .unwrap_or_else(|e| fail(&e));
    }
    let name = spec.unwrap_or(model_name);
    let ram = network.ram();
    // The model and its prepared weights, both in flash.
    let flash_bytes = model.len() + network.prepared_bytes();
    check_memory(board, model_name, flash_bytes, name, &ram);
    // The build's report: cargo shows it (as a warning) on every build that
    // runs this script; the firmware prints the measured figures.
    println!(
        "cargo:warning={name} on {}: model {} of {} bytes of flash{}; RAM {} of {} bytes ({})",
        board.name,
        model.len(),
        board.flash,
        match network.prepared_bytes() {
            0 => String::new(),
            n => format!(" (+{n} of weights prepared for the core's kernels)"),
        },
        ram.total(),
        board.ram,
        ram.explain()
    );
    (network.generate(), flash_bytes)
}

/// Stops the build, with the numbers, if the model and the program do not fit
/// the board's flash or the network (named `name`) does not fit its RAM.
fn check_memory(
    board: &Board,
    model_name: &str,
    model_bytes: usize,
    name: &str,
    ram: &network::Ram,
) {
    let mut problems = Vec::new();
    let flash_need = model_bytes + CODE_ALLOWANCE;
    if flash_need > board.flash {
        problems.push(format!(
            "flash: the {model_bytes}-byte model {model_name} (its prepared weights \
             included) and {CODE_ALLOWANCE} bytes for \
             the program need {flash_need} bytes, but {} has {} ({} KiB)",
            board.name,
            board.flash,
            board.flash / 1024
        ));
    }
    if ram.total() > board.ram {
        problems.push(format!(
            "RAM: the network of {name} needs {} bytes ({}), but {} has {} ({} KiB)",
            ram.total(),
            ram.explain(),
            board.name,
            board.ram,
            board.ram / 1024
        ));
    }
    if !problems.is_empty() {
        fail(&format!(
            "the model does not fit {} ({}):\n  {}",
            board.name,
            board.core,
            problems.join("\n  ")
        ));
    }
}

/// The board named by `FIRMWARE_BOARD`, or the default board of `target`;
/// stops the build if the name is unknown or the board runs another core.
fn board(target: &str) -> &'static Board {
    println!("cargo:rerun-if-env-changed=FIRMWARE_BOARD");
    // The architecture decides (`thumbv7em-none-eabi` runs where `…-eabihf` does).
    let arch = |triple: &str| triple.split('-').next().unwrap_or_default().to_string();
    let board = match env::var("FIRMWARE_BOARD") {
        Ok(name) => model_spec::boards::board(&name).unwrap_or_else(|| {
            fail(&format!(
                "FIRMWARE_BOARD={name} is not a known board; known: {}",
                model_spec::boards::names()
            ))
        }),
        Err(_) => BOARDS
            .iter()
            .find(|b| arch(b.target) == arch(target))
            .unwrap_or_else(|| {
                let targets: Vec<_> = BOARDS.iter().map(|b| b.target).collect();
                fail(&format!(
                    "no board runs target {target}; build for one of {} (boards: {})",
                    targets.join(", "),
                    model_spec::boards::names()
                ))
            }),
    };
    if arch(board.target) != arch(target) {
        fail(&format!(
            "board {} runs {} firmware, but the target is {target}",
            board.name, board.target
        ));
    }
    board
}

/// The board's instructions per SysTick tick, or `FIRMWARE_INSNS_PER_TICK`
/// (`N` or `N/D`) to try another rate: the calibration at start fails the run
/// if it is wrong.
fn insns_per_tick(board: &Board) -> (u32, u32) {
    println!("cargo:rerun-if-env-changed=FIRMWARE_INSNS_PER_TICK");
    let Ok(text) = env::var("FIRMWARE_INSNS_PER_TICK") else {
        return board.insns_per_tick;
    };
    let (num, den) = text.split_once('/').unwrap_or((&text, "1"));
    match (num.trim().parse(), den.trim().parse()) {
        (Ok(n), Ok(d)) if n > 0 && d > 0 => (n, d),
        _ => fail(&format!(
            "FIRMWARE_INSNS_PER_TICK={text} is not N or N/D with positive integers"
        )),
    }
}

/// Stops the build with a readable message if the model and the digits
/// cannot fit in the board's flash next to the program.
fn check_flash(
    board: &Board,
    model_bytes: usize,
    digits_path: &Path,
    digits_bytes: usize,
    record: usize,
) {
    let room = board.flash.saturating_sub(CODE_ALLOWANCE + model_bytes);
    if digits_bytes > room {
        fail(&format!(
            "{}: {} digits ({digits_bytes} bytes) do not fit in {}'s {} KiB of flash \
             next to the {model_bytes}-byte model and the program; at most {} do. \
             `cargo xtask qemu --board {} --count N` runs larger sets in batches.",
            digits_path.display(),
            digits_bytes / record,
            board.name,
            board.flash / 1024,
            room / record,
            board.name,
        ));
    }
}

/// The path named by environment variable `var`, or `default`, resolved
/// against the crate directory; registers both for rebuilds.
fn asset_path(crate_dir: &Path, var: &str, default: &str) -> PathBuf {
    println!("cargo:rerun-if-env-changed={var}");
    let path = env::var_os(var).map_or_else(|| PathBuf::from(default), PathBuf::from);
    let path = crate_dir.join(path);
    println!("cargo:rerun-if-changed={}", path.display());
    path
}

/// Checks the labelled inputs against the model (`model`, already decoded once
/// by [`stack_network`]): records of `[label: u8][h×w×c values: u8]` for the
/// model's input shape (a label the model has no class for is just never
/// predicted). Returns the record size.
fn check_digits(path: &Path, bytes: &[u8], model: &[u8]) -> usize {
    let file = infer_core::stack::StackFile::decode(model)
        .unwrap_or_else(|e| fail(&format!("the model does not decode: {e}")));
    let (h, w, c) = (file.input.height, file.input.width, file.input.channels);
    let record = 1 + usize::from(h) * usize::from(w) * usize::from(c);
    if bytes.is_empty() || !bytes.len().is_multiple_of(record) {
        fail(&format!(
            "{} holds {} bytes, which is not a non-zero multiple of {record} \
             (records of [label: u8][{h}×{w}×{c} values: u8], the model's input)",
            path.display(),
            bytes.len()
        ));
    }
    record
}

fn read(path: &Path, var: &str) -> Vec<u8> {
    fs::read(path).unwrap_or_else(|error| {
        fail(&format!(
            "cannot read {} ({error}); set {var} to another file or create it",
            path.display()
        ))
    })
}

fn copy(from: &Path, to: &Path) {
    if let Err(error) = fs::copy(from, to) {
        fail(&format!(
            "cannot copy {} to {}: {error}",
            from.display(),
            to.display()
        ));
    }
}

fn write(path: &Path, bytes: &[u8]) {
    if let Err(error) = fs::write(path, bytes) {
        fail(&format!("cannot write {}: {error}", path.display()));
    }
}

/// Stops the build with `message`; cargo shows a failed build script's stderr.
fn fail(message: &str) -> ! {
    eprintln!("error: {message}");
    process::exit(1)
}

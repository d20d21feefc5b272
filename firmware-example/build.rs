//! Build script: puts `memory.x` on the linker's search path and embeds the
//! model and the test digits, checking both so that a bad file fails the build
//! rather than the board.
//!
//! Inputs (paths relative to this crate unless absolute; see README.md):
//! - `FIRMWARE_MODEL`, default `assets/model.bin`: must load with
//!   `infer_core::TutorialNet::from_bytes`.
//! - `FIRMWARE_DIGITS`, default `assets/digits.bin`: the digits file, records
//!   of `[label: u8][28×28 pixels: u8]` (README.md, "Digits file").

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process;

/// Bytes in one digits record: one label byte and 28×28 pixels.
const DIGIT_RECORD_BYTES: usize = 1 + 28 * 28;

fn main() {
    let crate_dir =
        PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR"));
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));

    // cortex-m-rt's link.x includes memory.x from the linker search path. The
    // linker script is passed from here rather than from .cargo/config.toml's
    // `rustflags`, which a RUSTFLAGS environment variable would replace.
    copy(&crate_dir.join("memory.x"), &out_dir.join("memory.x"));
    println!("cargo:rustc-link-search={}", out_dir.display());
    println!("cargo:rustc-link-arg-bins=-Tlink.x");
    println!("cargo:rerun-if-changed=memory.x");

    let model_path = asset_path(&crate_dir, "FIRMWARE_MODEL", "assets/model.bin");
    let model = read(&model_path, "FIRMWARE_MODEL");
    check_model(&model_path, &model);
    write(&out_dir.join("model.bin"), &model);

    let digits_path = asset_path(&crate_dir, "FIRMWARE_DIGITS", "assets/digits.bin");
    let digits = read(&digits_path, "FIRMWARE_DIGITS");
    check_digits(&digits_path, &digits);
    write(&out_dir.join("digits.bin"), &digits);
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

fn check_model(path: &Path, bytes: &[u8]) {
    if let Err(error) = infer_core::TutorialNet::from_bytes(bytes) {
        fail(&format!(
            "{} is not a usable TutorialNet model: {error}",
            path.display()
        ));
    }
}

fn check_digits(path: &Path, bytes: &[u8]) {
    if bytes.is_empty() || !bytes.len().is_multiple_of(DIGIT_RECORD_BYTES) {
        fail(&format!(
            "{} holds {} bytes, which is not a non-zero multiple of {DIGIT_RECORD_BYTES} \
             (records of [label: u8][28×28 pixels: u8])",
            path.display(),
            bytes.len()
        ));
    }
    for (index, record) in bytes.chunks_exact(DIGIT_RECORD_BYTES).enumerate() {
        if record[0] > 9 {
            fail(&format!(
                "{}: record {index} has label {}, expected 0..=9",
                path.display(),
                record[0]
            ));
        }
    }
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

//! The real `trainer` binary on malformed datasets and bad arguments: each case exits
//! non-zero with a message naming the file and the problem — no panic, no backtrace
//! (`RUST_BACKTRACE=1` is set, so a panic would print one) — and writes nothing.
//!
//! The IDX parsers' own unit tests (`src/data.rs`) cover the byte-level cases in detail;
//! these check that every one of them reaches the user intact through the CLI.

use flate2::{write::GzEncoder, Compression};
use std::io::Write;
use std::path::{Path, PathBuf};
use trainer::data::{
    encode_idx_images, encode_idx_labels, TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS,
};

mod cli_support;
use cli_support::{assert_clean_failure, trainer};

fn images(count: usize, side: usize) -> Vec<u8> {
    let pixels: Vec<u8> = (0..count * side * side).map(|i| (i % 253) as u8).collect();
    encode_idx_images(side, side, &pixels).expect("encode images")
}

fn labels(count: usize) -> Vec<u8> {
    let labels: Vec<u8> = (0..count).map(|i| (i % 10) as u8).collect();
    encode_idx_labels(&labels).expect("encode labels")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(bytes).expect("gzip");
    encoder.finish().expect("gzip")
}

/// A valid 28×28 dataset (6 training, 4 test images) in a fresh directory, with
/// `model.bin` already there holding `PREVIOUS`.
struct Case {
    dir: tempfile::TempDir,
}

const PREVIOUS: &[u8] = b"yesterday's model";

impl Case {
    fn new() -> Self {
        let case = Case {
            dir: tempfile::tempdir().expect("temporary directory"),
        };
        case.write(TRAIN_IMAGES, &images(6, 28));
        case.write(TRAIN_LABELS, &labels(6));
        case.write(TEST_IMAGES, &images(4, 28));
        case.write(TEST_LABELS, &labels(4));
        std::fs::write(case.model(), PREVIOUS).expect("write model.bin");
        case
    }

    fn data(&self) -> &Path {
        self.dir.path()
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn model(&self) -> PathBuf {
        self.path("model.bin")
    }

    fn write(&self, name: &str, bytes: &[u8]) {
        std::fs::write(self.path(name), bytes).expect("write");
    }

    /// Replaces the raw file `name` with `name.gz` holding `bytes`.
    fn write_gz(&self, name: &str, bytes: &[u8]) {
        std::fs::remove_file(self.path(name)).expect("remove the raw file");
        self.write(&format!("{name}.gz"), bytes);
    }

    /// `trainer fit` and `trainer eval` on this directory: both must fail with `expected`
    /// in stderr, and the previous model.bin must be intact.
    fn assert_refused(&self, expected: &[&str]) {
        let (data, model) = (self.data().to_str().unwrap(), self.model());
        let model = model.to_str().unwrap();
        let metrics = self.path("metrics.json");
        let out = trainer(&[
            "fit",
            "--data",
            data,
            "--epochs",
            "1",
            "--out",
            model,
            "--metrics",
            metrics.to_str().unwrap(),
        ]);
        assert_clean_failure(&out, expected);
        assert_eq!(std::fs::read(model).expect("model.bin"), PREVIOUS);
        assert!(!metrics.exists());
        // eval reads only the test half.
        if expected.iter().any(|e| e.starts_with("t10k")) {
            let real = e2e_model();
            let out = trainer(&["eval", "--model", real.to_str().unwrap(), "--data", data]);
            assert_clean_failure(&out, expected);
        }
    }
}

/// A valid model.bin (format 3) of the tutorial network, untrained, for `eval`: written
/// once per test process.
fn e2e_model() -> PathBuf {
    use trainer::arch::quantize::{QuantizedStack, StackCalibration};
    static MODEL: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    MODEL
        .get_or_init(|| {
            let spec = trainer::arch::Spec::load("tutorial").unwrap();
            let model = trainer::arch::Model::glorot_uniform(&spec, 1);
            let plan = model_spec::Plan::of(&spec).unwrap();
            let images: Vec<u8> = (0..4 * 784).map(|i| (i * 7 % 256) as u8).collect();
            let calibration = StackCalibration::measure(&model, &plan, &images).unwrap();
            let bytes = QuantizedStack::from_calibration(&model, &plan, &calibration)
                .unwrap()
                .to_bytes()
                .unwrap();
            let path = Path::new(env!("CARGO_TARGET_TMPDIR"))
                .join(format!("hostile_input_model_{}.bin", std::process::id()));
            std::fs::write(&path, bytes).unwrap();
            path
        })
        .clone()
}

#[test]
fn the_valid_case_is_accepted() {
    // Otherwise every refusal below could be for a reason of its own.
    let case = Case::new();
    let out = trainer(&[
        "eval",
        "--model",
        e2e_model().to_str().unwrap(),
        "--data",
        case.data().to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn wrong_magic() {
    let case = Case::new();
    // The labels file where the images should be.
    case.write(TRAIN_IMAGES, &labels(6));
    case.assert_refused(&[TRAIN_IMAGES, "wrong magic", "swapped"]);
    let case = Case::new();
    case.write(TEST_LABELS, b"<!DOCTYPE html><html>404 Not Found</html>");
    case.assert_refused(&[TEST_LABELS, "wrong magic", "not IDX"]);
}

#[test]
fn count_does_not_match_the_file_length() {
    let case = Case::new();
    let mut short = images(6, 28);
    short.truncate(short.len() - 100);
    case.write(TRAIN_IMAGES, &short);
    case.assert_refused(&[TRAIN_IMAGES, "data length mismatch", "4704", "only 4604"]);
    let case = Case::new();
    let mut long = labels(4);
    long.push(3);
    case.write(TEST_LABELS, &long);
    case.assert_refused(&[TEST_LABELS, "data length mismatch", "4 bytes", "5 or more"]);
    let case = Case::new();
    case.write(TEST_IMAGES, &images(4, 28)[..10]);
    case.assert_refused(&[TEST_IMAGES, "header truncated", "only 10 bytes"]);
    let case = Case::new();
    case.write(TRAIN_LABELS, b"");
    case.assert_refused(&[TRAIN_LABELS, "header truncated", "only 0 bytes"]);
}

#[test]
fn images_and_labels_of_different_counts() {
    let case = Case::new();
    case.write(TRAIN_LABELS, &labels(5));
    case.assert_refused(&[
        "count mismatch",
        TRAIN_IMAGES,
        "6 images",
        TRAIN_LABELS,
        "5 labels",
    ]);
}

#[test]
fn label_above_nine() {
    let case = Case::new();
    let mut bad = labels(4);
    bad[8 + 3] = 10;
    case.write(TEST_LABELS, &bad);
    case.assert_refused(&[TEST_LABELS, "label 3 is 10", "above 9"]);
}

#[test]
fn truncated_gz() {
    let case = Case::new();
    let gz = gzip(&images(6, 28));
    case.write_gz(TRAIN_IMAGES, &gz[..gz.len() / 2]);
    case.assert_refused(&["train-images-idx3-ubyte.gz", "gzip", "truncated or corrupt"]);
}

#[test]
fn corrupt_gz() {
    let case = Case::new();
    let mut gz = gzip(&images(4, 28));
    let middle = gz.len() / 2;
    for b in &mut gz[middle..middle + 16] {
        *b ^= 0xa5;
    }
    case.write_gz(TEST_IMAGES, &gz);
    case.assert_refused(&["t10k-images-idx3-ubyte.gz", "gzip", "truncated or corrupt"]);
    // Only the CRC-32 of the gzip trailer wrong: the data inflates, the check catches it.
    let case = Case::new();
    let mut gz = gzip(&labels(6));
    let at = gz.len() - 8;
    gz[at] ^= 1;
    case.write_gz(TRAIN_LABELS, &gz);
    case.assert_refused(&["train-labels-idx1-ubyte.gz", "gzip"]);
}

#[test]
fn a_directory_without_the_files() {
    let case = Case::new();
    std::fs::remove_file(case.path(TEST_IMAGES)).expect("remove");
    case.assert_refused(&[
        "neither t10k-images-idx3-ubyte nor t10k-images-idx3-ubyte.gz",
        "cargo xtask fetch-mnist",
    ]);
    let empty = tempfile::tempdir().expect("temporary directory");
    let out = trainer(&[
        "eval",
        "--model",
        e2e_model().to_str().unwrap(),
        "--data",
        empty.path().to_str().unwrap(),
    ]);
    assert_clean_failure(&out, &["neither", "fetch-mnist"]);
}

#[test]
fn data_that_is_not_a_directory() {
    let case = Case::new();
    let file = case.path(TRAIN_IMAGES);
    let out = trainer(&[
        "eval",
        "--model",
        e2e_model().to_str().unwrap(),
        "--data",
        file.to_str().unwrap(),
    ]);
    assert_clean_failure(&out, &[TRAIN_IMAGES, "not a dataset directory"]);
    let missing = case.path("no-such-dir");
    let out = trainer(&[
        "eval",
        "--model",
        e2e_model().to_str().unwrap(),
        "--data",
        missing.to_str().unwrap(),
    ]);
    assert_clean_failure(&out, &["no-such-dir", "does not exist", "fetch-mnist"]);
}

#[test]
fn images_of_another_size() {
    // Valid IDX, but 14×14: the model takes 28×28.
    let case = Case::new();
    case.write(TRAIN_IMAGES, &images(6, 14));
    case.write(TEST_IMAGES, &images(4, 14));
    case.assert_refused(&["28×28", "14×14"]);
}

#[test]
fn bad_numbers_are_refused_by_flag() {
    for (flag, value) in [
        ("--epochs", "-1"),
        ("--epochs", "1.5"),
        ("--epochs", "99999999999"),
        ("--batch-size", "0"),
        ("--lr", "fast"),
        ("--seed", "-5"),
        ("--threads", "x"),
        ("--train-limit", "many"),
        ("--calibration-images", "0"),
    ] {
        let out = trainer(&["fit", &format!("{flag}={value}")]);
        assert_clean_failure(&out, &[flag, value]);
    }
}

#[test]
fn a_learning_rate_that_is_not_a_positive_number_is_refused() {
    let case = Case::new();
    for lr in ["NaN", "inf", "0", "-0.001"] {
        let out = trainer(&[
            "fit",
            "--data",
            case.data().to_str().unwrap(),
            "--epochs",
            "1",
            &format!("--lr={lr}"),
            "--out",
            case.model().to_str().unwrap(),
        ]);
        // In the user's words: the flag and what it takes, not the internal name.
        assert_clean_failure(&out, &["--lr", lr, "a positive number such as 0.001"]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("learning_rate"), "{stderr}");
        assert_eq!(std::fs::read(case.model()).expect("model.bin"), PREVIOUS);
    }
}

#[test]
fn unknown_flags_and_missing_values_for_every_subcommand() {
    for sub in ["fit", "eval", "summary", "predict", "quantize", "report"] {
        assert_clean_failure(&trainer(&[sub, "--frobnicate"]), &["--frobnicate"]);
    }
    assert_clean_failure(&trainer(&["fit", "--out"]), &["--out", "value"]);
    assert_clean_failure(&trainer(&["eval", "--model"]), &["--model", "value"]);
    // No subcommand at all: the usage, not a crash.
    assert_clean_failure(&trainer(&[]), &["Usage"]);
}

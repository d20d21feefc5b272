//! Helpers shared by the trainer CLI tests: a small synthetic IDX data set and a runner.

#![allow(dead_code)]

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::Path;
use std::process::{Command, Output};
use trainer::data::{encode_idx_images, encode_idx_labels, Dataset};

/// `n` learnable 28×28 "digits": class `c` is a bright 6×6 square at one of ten places, on
/// dim noise.
pub fn synthetic(n: usize, seed: u64) -> Dataset {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut images = Vec::with_capacity(n * 784);
    let mut labels = Vec::with_capacity(n);
    for _ in 0..n {
        let label: u8 = rng.gen_range(0..10);
        let (top, left) = (
            2 + 12 * usize::from(label / 5),
            1 + 5 * usize::from(label % 5),
        );
        for y in 0..28 {
            for x in 0..28 {
                let inside = (top..top + 6).contains(&y) && (left..left + 6).contains(&x);
                images.push(if inside {
                    rng.gen_range(160..=255)
                } else {
                    rng.gen_range(0..60)
                });
            }
        }
        labels.push(label);
    }
    Dataset {
        images,
        labels,
        rows: 28,
        cols: 28,
    }
}

/// Writes `train` and `test` as the four standard IDX files in `dir`.
pub fn write_idx(dir: &Path, train: &Dataset, test: &Dataset) {
    std::fs::create_dir_all(dir).unwrap();
    for (prefix, set) in [("train", train), ("t10k", test)] {
        std::fs::write(
            dir.join(format!("{prefix}-images-idx3-ubyte")),
            encode_idx_images(28, 28, &set.images).unwrap(),
        )
        .unwrap();
        std::fs::write(
            dir.join(format!("{prefix}-labels-idx1-ubyte")),
            encode_idx_labels(&set.labels).unwrap(),
        )
        .unwrap();
    }
}

/// A data directory under `root` with `train` and `test` synthetic images.
pub fn data_dir(root: &Path, train: usize, test: usize) -> std::path::PathBuf {
    let dir = root.join("data");
    write_idx(&dir, &synthetic(train, 1), &synthetic(test, 2));
    dir
}

/// The trainer binary of this build.
pub fn trainer_command() -> Command {
    Command::new(env!("CARGO_BIN_EXE_trainer"))
}

/// Runs the trainer with `args` and fails the test, with its output, if it fails.
pub fn trainer_ok(args: &[&str]) -> Output {
    let out = trainer_command().args(args).output().unwrap();
    assert!(
        out.status.success(),
        "trainer {args:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `path` as a `&str` (test paths are UTF-8).
pub fn s(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// The names in `dir`, sorted.
pub fn names(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// Runs the trainer with `args`, backtraces enabled so that any panic would show.
pub fn trainer(args: &[&str]) -> Output {
    trainer_command()
        .args(args)
        .env("RUST_BACKTRACE", "1")
        .output()
        .expect("run trainer")
}

/// Fails unless `out` is a clean failure whose stderr contains every one of `expected`.
pub fn assert_clean_failure(out: &Output, expected: &[&str]) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "should fail: {stderr}");
    assert!(
        !stderr.contains("panicked") && !stderr.contains("backtrace"),
        "{stderr}"
    );
    for word in expected {
        assert!(stderr.contains(word), "stderr lacks {word:?}: {stderr}");
    }
}

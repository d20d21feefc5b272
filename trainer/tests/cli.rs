//! The trainer CLI's failure modes: a clear message naming the problem, a non-zero exit,
//! never a panic or a backtrace.

mod cli_support;
use cli_support::{assert_clean_failure, trainer};

#[test]
fn missing_data_directory_says_how_to_fetch_it() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nowhere");
    let out = trainer(&[
        "fit",
        "--data",
        missing.to_str().unwrap(),
        "--out",
        dir.path().join("m.bin").to_str().unwrap(),
    ]);
    assert_clean_failure(&out, &["nowhere", "cargo xtask fetch-mnist"]);
    assert!(!dir.path().join("m.bin").exists());
}

#[test]
fn bad_arguments_are_refused_by_name() {
    assert_clean_failure(&trainer(&["fit", "--epochs", "0"]), &["--epochs"]);
    assert_clean_failure(
        &trainer(&["fit", "--batch-size", "many"]),
        &["--batch-size"],
    );
    assert_clean_failure(&trainer(&["frobnicate"]), &["frobnicate"]);
}

#[test]
fn corrupt_or_foreign_model_is_refused_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.bin");
    std::fs::write(&model, b"GIF89a not a model at all").unwrap();
    let out = trainer(&[
        "eval",
        "--model",
        model.to_str().unwrap(),
        "--data",
        dir.path().to_str().unwrap(),
    ]);
    // The data directory is checked first or the model is: either way a clean message.
    assert_clean_failure(&out, &["model.bin", "not a model.bin"]);
    let out = trainer(&[
        "eval",
        "--model",
        dir.path().join("absent.bin").to_str().unwrap(),
    ]);
    assert_clean_failure(&out, &["absent.bin", "trainer fit"]);
}

//! End to end: `trainer fit` → model.bin → infer-core's engine on the host → firmware in
//! QEMU.
//!
//! One short fit is shared by all tests of this file.

use anyhow::{Context, Result};
use e2e_tests::stack_model::host_logits;
use e2e_tests::{data_dir, parse_firmware_output, run_firmware, run_trainer, workspace_root};
use infer_core::kernels::activation::argmax;
use serde_json::Value;
use std::path::PathBuf;
use std::sync::OnceLock;
use trainer::{data, eval};

struct Fitted {
    _dir: tempfile::TempDir,
    /// What `trainer fit --arch tutorial` wrote (format 3).
    model: PathBuf,
    metrics: Value,
}

/// Fits one epoch (a short fit) with the real CLI and keeps the outputs.
fn fitted() -> &'static Fitted {
    static FITTED: OnceLock<Fitted> = OnceLock::new();
    FITTED.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temporary directory");
        let model = dir.path().join("model.bin");
        let metrics = dir.path().join("metrics.json");
        let data = data_dir().expect("MNIST data");
        run_trainer(&[
            "fit",
            "--arch",
            "tutorial",
            "--epochs",
            "1",
            "--seed",
            "7",
            "--data",
            data.to_str().expect("utf-8 path"),
            "--out",
            model.to_str().expect("utf-8 path"),
            "--metrics",
            metrics.to_str().expect("utf-8 path"),
        ])
        .expect("trainer fit");
        let metrics = serde_json::from_slice(&std::fs::read(&metrics).expect("metrics written"))
            .expect("metrics JSON");
        Fitted {
            _dir: dir,
            model,
            metrics,
        }
    })
}

#[test]
fn fit_writes_a_model_and_keras_style_metrics() -> Result<()> {
    let f = fitted();
    let m = &f.metrics;
    assert_eq!(m["params"], 54_410);
    let epochs = m["epochs"].as_array().context("epochs list")?;
    assert_eq!(epochs.len(), 1);
    for key in ["loss", "acc", "val_loss", "val_acc", "seconds"] {
        assert!(
            epochs[0][key].as_f64().is_some(),
            "epoch metric {key} missing: {m}"
        );
    }
    let f32_acc = m["test_accuracy_f32"]
        .as_f64()
        .context("test_accuracy_f32")?;
    let int8_acc = m["test_accuracy_int8"]
        .as_f64()
        .context("test_accuracy_int8")?;
    // One epoch on 7,996 images reaches ~87%; chance is 10%.
    assert!((0.80..=1.0).contains(&f32_acc), "float accuracy {f32_acc}");
    assert!(
        (f32_acc - int8_acc).abs() <= 0.02,
        "int8 {int8_acc} vs float {f32_acc}"
    );
    let bytes = std::fs::read(&f.model)?;
    assert_eq!(m["model_bytes"].as_u64(), Some(bytes.len() as u64));
    Ok(())
}

#[test]
fn host_infer_core_reproduces_the_reported_int8_accuracy() -> Result<()> {
    let f = fitted();
    let test = data::load_test(&data_dir()?)?;

    // infer-core's engine directly, image by image: the reference kernels, operation by
    // operation, on the current-format model.
    let logits = host_logits(&std::fs::read(&f.model)?, &test.images)?;
    let predictions: Vec<u8> = logits.iter().map(|l| argmax(l) as u8).collect();
    let correct = predictions
        .iter()
        .zip(&test.labels)
        .filter(|(p, l)| p == l)
        .count();
    let accuracy = correct as f64 / test.len() as f64;
    assert_eq!(
        Some(accuracy),
        f.metrics["test_accuracy_int8"].as_f64(),
        "fit reported another int8 accuracy"
    );

    // And the CLI's `eval --json` agrees image by image.
    let out = run_trainer(&[
        "eval",
        "--model",
        f.model.to_str().context("path")?,
        "--data",
        data_dir()?.to_str().context("path")?,
        "--json",
    ])?;
    let json: Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(json["accuracy"].as_f64(), Some(accuracy));
    let cli: Vec<u8> = serde_json::from_value(json["predictions"].clone())?;
    assert_eq!(cli, predictions);
    Ok(())
}

#[test]
fn firmware_in_qemu_predicts_exactly_what_the_host_predicts() -> Result<()> {
    let f = fitted();
    let bytes = std::fs::read(&f.model)?;
    let test = data::load_test(&data_dir()?)?;
    let host = eval::evaluate_int8(&bytes, &test)?;

    let digits = f.model.with_file_name("digits.bin");
    std::fs::write(&digits, data::digit_records(&test, 100)?)?;
    let stdout = run_firmware(&f.model, &digits)?;
    let report = parse_firmware_output(&stdout)?;

    assert_eq!(report.digits.len(), 100, "{stdout}");
    for (i, line) in report.digits.iter().enumerate() {
        assert_eq!(line.index, i);
        assert_eq!(line.label, test.labels[i], "label of digit {i}");
        assert_eq!(
            line.pred,
            u16::from(host.predictions[i]),
            "digit {i}: firmware {} vs host {}",
            line.pred,
            host.predictions[i]
        );
    }
    let correct = report
        .digits
        .iter()
        .filter(|d| u16::from(d.label) == d.pred)
        .count();
    assert_eq!(report.summary.correct, correct);
    assert_eq!(report.summary.total, 100);
    assert!(
        report.summary.insns_per_inference > 10_000,
        "{:?}",
        report.summary
    );
    assert!(report.summary.stack_peak_bytes > 0, "{:?}", report.summary);
    Ok(())
}

/// `cargo xtask demo`'s fit (the tutorial, seed 1, the default 6 epochs) writes the committed
/// model byte for byte: what the README shows of the demo (its sample output, checked in
/// `boards.rs` on the committed model) is what the demo prints.
#[test]
fn the_demos_fit_writes_the_committed_model() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let model = dir.path().join("model.bin");
    let data = data_dir()?;
    run_trainer(&[
        "fit",
        "--arch",
        "tutorial",
        "--seed",
        "1",
        "--data",
        data.to_str().expect("utf-8 path"),
        "--out",
        model.to_str().expect("utf-8 path"),
    ])?;
    let committed = workspace_root().join("firmware-example/assets/model.bin");
    assert!(
        std::fs::read(&model)? == std::fs::read(&committed)?,
        "trainer fit --arch tutorial --seed 1 no longer writes {}: refit it (and update the \
         README's figures)",
        committed.display()
    );
    Ok(())
}

//! Imported TensorFlow Lite models on the boards: the MLPerf Tiny reference models, imported
//! by `trainer import` and built into the firmware from the model alone (no spec), compute
//! on every board exactly the wide logits infer-core's reference kernels compute on the host
//! (which `tflite_import.rs` holds to TensorFlow Lite Micro's outputs).

use anyhow::{ensure, Context, Result};
use e2e_tests::stack_model::host_logits;
use e2e_tests::{
    board, check_ram_estimate, parse_firmware_output, run_firmware_on, workspace_root,
};
use trainer::tflite::import;

/// Imports `tests/fixtures/mlperf-tiny/{name}`, runs `count` pseudo-random inputs (`seed`)
/// on each of `boards` and compares every input's logits with the host's.
fn check_on_boards(name: &str, count: usize, seed: u32, boards: &[&str]) -> Result<()> {
    let path = workspace_root()
        .join("tests/fixtures/mlperf-tiny")
        .join(name);
    let imported = import(&std::fs::read(&path)?).with_context(|| path.display().to_string())?;
    let dir = tempfile::tempdir()?;
    let model = dir.path().join("model.bin");
    std::fs::write(&model, &imported.bytes)?;
    let file = infer_core::stack::StackFile::decode(&imported.bytes)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let size = usize::from(file.input.height)
        * usize::from(file.input.width)
        * usize::from(file.input.channels);
    // Inputs of every 8-bit value (xorshift); each record is a label (0) and the values.
    let mut state = seed;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state as u8
    };
    let pixels: Vec<u8> = (0..count * size).map(|_| next()).collect();
    let records: Vec<u8> = pixels
        .chunks_exact(size)
        .flat_map(|values| std::iter::once(0).chain(values.iter().copied()))
        .collect();
    let digits = dir.path().join("digits.bin");
    std::fs::write(&digits, records)?;
    let host = host_logits(&imported.bytes, &pixels)?;
    let distinct: std::collections::BTreeSet<_> = host.iter().collect();
    ensure!(distinct.len() == count, "{name}: inputs with equal logits");
    for &name in boards {
        let (ok, stdout) = run_firmware_on(board(name), &model, &digits, (&[], &[]))?;
        ensure!(ok, "{name}: the firmware failed:\n{stdout}");
        let report = parse_firmware_output(&stdout)?;
        ensure!(
            stdout.contains(&format!(
                "network: spec=none ops={} classes={}",
                file.ops.len(),
                file.classes()
            )),
            "{stdout}"
        );
        ensure!(report.logits.len() == count, "{name}: {stdout}");
        check_ram_estimate(name, &stdout, file.ops.len())?;
        for (i, (firmware, host)) in report.logits.iter().zip(&host).enumerate() {
            ensure!(
                firmware == host,
                "{name}: input {i}: firmware {firmware:?}, host {host:?}"
            );
        }
    }
    Ok(())
}

#[test]
fn keyword_spotting_runs_on_every_core_as_on_the_host() -> Result<()> {
    // Depthwise convs, a 10×4 conv, an average pool: on the DSP, plain and Helium paths.
    check_on_boards(
        "kws_ref_model.tflite",
        6,
        0x2545_f491,
        &["mps2-an386", "mps2-an385", "mps3-an547"],
    )
}

#[test]
fn visual_wake_words_runs_on_the_m4f_and_the_m55_as_on_the_host() -> Result<()> {
    // Thirteen depthwise convs, stride 2 with same padding, a 96×96×3 input.
    check_on_boards(
        "vww_96_int8.tflite",
        2,
        0x9e37_79b9,
        &["mps2-an386", "mps3-an547"],
    )
}

#[test]
fn image_classification_runs_on_every_core_as_on_the_host() -> Result<()> {
    // ResNet-8: a graph (three residual ADDs, two branches to a block's input), three
    // buffers, a 32×32×3 input.
    check_on_boards(
        "pretrainedResnet_quant.tflite",
        3,
        0x2545_f491,
        &["mps2-an386", "mps2-an385", "mps3-an547"],
    )
}

#[test]
fn anomaly_detection_runs_on_every_core_as_on_the_host() -> Result<()> {
    // Ten dense layers, 640 outputs; on the M4F from rows widened at build time, on the M3
    // from units paired at build time.
    check_on_boards(
        "ad01_int8.tflite",
        4,
        0x1234_5678,
        &["mps2-an386", "mps2-an385", "mps3-an547"],
    )
}

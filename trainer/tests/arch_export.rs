//! `trainer fit --arch <spec>` writes model.bin format 2, and the figures it reports are
//! infer-core's: a small spec with batch norm is fitted through the CLI, and this test
//! recomputes its int8 accuracy with `infer_core::stack::run` (fast and reference kernels,
//! same logits), its float accuracy and agreement from the float checkpoint, its flash and RAM
//! from the budget; then `eval`, `summary`, `predict` and `quantize` read the same file.

mod cli_support;

use cli_support::{assert_clean_failure, data_dir, s, trainer, trainer_ok};
use infer_core::stack::{BufferSizes, Kernels, Pixels, StackFile, STACK_FORMAT_VERSION};
use model_spec::budget::Budget;
use model_spec::{Plan, Spec};
use trainer::arch::quantize::first_max;
use trainer::eval::StackBuffers;

/// Two conv + pool blocks: a same-padded conv folded with its batch norm, then a strided
/// same-padded conv with ReLU.
const SMALL: &str = "name = \"small\"
input = [28, 28, 1]

[[layer]]
type = \"conv2d\"
filters = 6
kernel = 3
padding = \"same\"

[[layer]]
type = \"batchnorm\"

[[layer]]
type = \"maxpool2d\"
pool = 2

[[layer]]
type = \"conv2d\"
filters = 8
kernel = 3
stride = 2
padding = \"same\"
activation = \"relu\"

[[layer]]
type = \"maxpool2d\"
pool = 2

[[layer]]
type = \"flatten\"

[[layer]]
type = \"dropout\"
rate = 0.25

[[layer]]
type = \"dense\"
units = 10
activation = \"softmax\"
";

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).unwrap()
}

/// What [`fit_briefly`] wrote.
struct Fitted {
    data: std::path::PathBuf,
    out: std::path::PathBuf,
    checkpoint: std::path::PathBuf,
    metrics: std::path::PathBuf,
}

/// Fits the spec file `spec` with the CLI on the first 200 of 260 synthetic training digits
/// (120 test digits, all under `root`) in batches of 16 on 2 threads, with `options`; keeps
/// the model, the float checkpoint and the metrics.
fn fit_briefly(
    root: &std::path::Path,
    spec: &str,
    options: &[&str],
) -> (std::process::Output, Fitted) {
    let data = data_dir(root, 260, 120);
    let (out, checkpoint, metrics) = (
        root.join("model.bin"),
        root.join("float.f32"),
        root.join("metrics.json"),
    );
    let mut args = vec![
        "fit",
        "--data",
        s(&data),
        "--arch",
        spec,
        "--out",
        s(&out),
        "--save-float",
        s(&checkpoint),
        "--metrics",
        s(&metrics),
        "--train-limit",
        "200",
        "--batch-size",
        "16",
        "--threads",
        "2",
    ];
    args.extend_from_slice(options);
    let fit = trainer_ok(&args);
    (
        fit,
        Fitted {
            data,
            out,
            checkpoint,
            metrics,
        },
    )
}

#[test]
fn a_fitted_spec_is_a_format_3_model_whose_reported_scores_infer_core_reproduces() {
    let dir = tempfile::tempdir().unwrap();
    let spec_path = dir.path().join("small.toml");
    std::fs::write(&spec_path, SMALL).unwrap();
    let (
        fit,
        Fitted {
            data,
            out,
            checkpoint,
            metrics,
        },
    ) = fit_briefly(dir.path(), s(&spec_path), &["--epochs", "8"]);
    let text = String::from_utf8_lossy(&fit.stdout).into_owned();
    let bytes = std::fs::read(&out).unwrap();
    assert!(
        text.contains(&format!("({} bytes, model.bin format 3)", bytes.len())),
        "{text}"
    );
    assert_eq!(
        u16::from_le_bytes([bytes[4], bytes[5]]),
        STACK_FORMAT_VERSION
    );
    let file = StackFile::decode(&bytes).unwrap();

    // The file holds the spec's int8 plan.
    let spec = Spec::parse(SMALL).unwrap();
    let plan = Plan::of(&spec).unwrap();
    assert_eq!(file.ops.len(), plan.ops.len());
    for (op, planned) in file.ops.iter().zip(&plan.ops) {
        assert_eq!(op.type_name(), planned.kind.type_name());
        assert_eq!(
            (op.in_len(), op.out_len()),
            (planned.kind.in_len(), planned.kind.out_len())
        );
    }

    // int8 accuracy: every test image through infer-core, fast and reference kernels.
    let test = trainer::data::load_test(&data).unwrap();
    // Separate buffers: nothing of one path's run can show through in the other's.
    let (mut fast_buffers, mut reference_buffers) =
        (StackBuffers::new(&file), StackBuffers::new(&file));
    let mut int8 = Vec::new();
    for px in test.images.chunks_exact(784) {
        let fast = fast_buffers.logits(&file, px, Kernels::Fast).unwrap();
        let reference = reference_buffers
            .logits(&file, px, Kernels::Reference)
            .unwrap();
        assert_eq!(fast, reference);
        let first = (0..fast.len()).fold(0, |m, j| if fast[j] > fast[m] { j } else { m });
        int8.push(first as u8);
    }
    let correct = int8
        .iter()
        .zip(&test.labels)
        .filter(|(p, l)| p == l)
        .count();
    let m = json(&std::fs::read(&metrics).unwrap());
    assert_eq!(m["int8_exported"], true);
    let fraction = |key: &str, count: usize| {
        // The same count of images; serde_json's f64 parsing may differ in the last bit.
        let value = m[key].as_f64().unwrap();
        let exact = count as f64 / test.len() as f64;
        assert!(
            (value - exact).abs() < 1e-12,
            "{key}: {value} vs {count} of {}",
            test.len()
        );
    };
    fraction("test_accuracy_int8", correct);
    // Float accuracy and agreement from the float checkpoint.
    let model = trainer::arch::checkpoint::load(&checkpoint).unwrap();
    let logits = model.logits(&test.images).unwrap();
    let float: Vec<u8> = logits.chunks(10).map(|row| first_max(row) as u8).collect();
    let float_correct = float
        .iter()
        .zip(&test.labels)
        .filter(|(p, l)| p == l)
        .count();
    let same = float.iter().zip(&int8).filter(|(f, i)| f == i).count();
    fraction("test_accuracy_f32", float_correct);
    fraction("int8_float_agreement", same);
    let drop = m["int8_minus_f32_accuracy"].as_f64().unwrap();
    let expected = (correct as f64 - float_correct as f64) / test.len() as f64;
    assert!((drop - expected).abs() < 1e-12, "{drop} vs {expected}");
    assert_eq!(m["model_bytes"], bytes.len());
    assert_eq!(m["calibration_images"], 200);
    // The synthetic digits are learnt, and int8 mostly agrees with float (same padding and
    // stride 2 mean the same in both).
    assert!(
        float_correct * 2 > test.len(),
        "float {float_correct} of {}",
        test.len()
    );
    assert!(
        same * 10 >= test.len() * 9,
        "int8 agrees on {same} of {}",
        test.len()
    );

    // The budget: RAM is infer-core's; flash is the file, but for each output zero point in
    // −64..=63, which the budget counts at two bytes and the file holds in one.
    let budget = Budget::of(&spec, Pixels::Four).unwrap();
    let short_zero_points = file
        .ops
        .iter()
        .filter_map(|op| op.params().copied())
        .filter(|p| (-64..=63).contains(&p.output.zero_point))
        .count();
    assert_eq!(budget.flash, bytes.len() + short_zero_points);
    let engine = BufferSizes::engine(&file, Pixels::Four);
    assert_eq!(budget.activations, engine.arena);
    assert_eq!(budget.patch, engine.patch_words * 4);
    assert_eq!(budget.kernel_stack, engine.stack_bytes);
    let small = Budget::of(&spec, Pixels::One).unwrap();
    let small_engine = BufferSizes::engine(&file, Pixels::One);
    assert_eq!(small.patch, small_engine.patch_words * 4);
    assert!(small.patch < budget.patch, "one pixel's patch is smaller");
    let summary = json(&trainer_ok(&["summary", "--model", s(&out), "--json"]).stdout);
    assert_eq!(summary["format"], 3);
    assert_eq!(summary["flash_bytes"]["total"], bytes.len());
    assert_eq!(summary["flash_bytes"]["weights"], budget.weights);
    assert_eq!(
        summary["flash_bytes"]["channel_params"],
        budget.channel_params
    );
    assert_eq!(summary["ram_bytes"]["total"], budget.ram);
    assert_eq!(summary["ram_bytes_small_ram"]["total"], small.ram);
    assert_eq!(summary["ops"].as_array().unwrap().len(), plan.ops.len());
    assert_eq!(summary["ops"][0], plan.ops[0].kind.to_string());

    // eval, predict and quantize read format 3.
    let eval =
        json(&trainer_ok(&["eval", "--model", s(&out), "--data", s(&data), "--json"]).stdout);
    assert_eq!(eval["accuracy"], m["test_accuracy_int8"]);
    assert_eq!(eval["predictions"], serde_json::json!(int8));
    let predict = json(
        &trainer_ok(&[
            "predict",
            "--model",
            s(&out),
            "--data",
            s(&data),
            "--index",
            "5",
            "--json",
        ])
        .stdout,
    );
    assert_eq!(predict["class"], int8[5]);

    // Beside the float model: predict shows both probabilities, eval measures how close.
    let both = json(
        &trainer_ok(&[
            "predict",
            "--model",
            s(&out),
            "--float",
            s(&checkpoint),
            "--data",
            s(&data),
            "--index",
            "5",
            "--json",
        ])
        .stdout,
    );
    let float_row = &logits[5 * 10..6 * 10];
    let max = float_row.iter().copied().fold(f32::MIN, f32::max);
    let sum: f64 = float_row.iter().map(|&l| f64::from(l - max).exp()).sum();
    for (k, &l) in float_row.iter().enumerate() {
        let want = f64::from(l - max).exp() / sum;
        let got = both["float_probabilities"][k].as_f64().unwrap();
        assert!((got - want).abs() < 1e-5, "class {k}: {got} vs {want}");
        let int8_p = both["probabilities"][k].as_f64().unwrap();
        assert!(
            (int8_p - want).abs() < 0.2,
            "class {k}: int8 {int8_p} vs {want}"
        );
    }
    let compared = json(
        &trainer_ok(&[
            "eval",
            "--model",
            s(&out),
            "--float",
            s(&checkpoint),
            "--data",
            s(&data),
            "--json",
        ])
        .stdout,
    );
    let v = &compared["versus_float"];
    let agreement = v["argmax_agreement"].as_f64().unwrap();
    assert!(
        (agreement - same as f64 / test.len() as f64).abs() < 1e-12,
        "{agreement} vs {same}"
    );
    let (mean, max) = (
        v["mean_abs_probability_error"].as_f64().unwrap(),
        v["max_abs_probability_error"].as_f64().unwrap(),
    );
    assert!(mean > 0.0 && mean <= max && max < 1.0, "{v}");
    assert_eq!(v["images"], test.len());
    let report = String::from_utf8_lossy(
        &trainer_ok(&[
            "eval",
            "--model",
            s(&out),
            "--float",
            s(&checkpoint),
            "--data",
            s(&data),
        ])
        .stdout,
    )
    .into_owned();
    assert!(
        report.contains("int8 and float argmax agree on"),
        "{report}"
    );
    assert!(report.contains("mean |p_int8 − p_float|"), "{report}");
    let quantize = quantizes_to(dir.path(), &checkpoint, &data, &bytes);
    let requantized = String::from_utf8_lossy(&quantize.stdout);
    let scores = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.starts_with("Test accuracy") || l.starts_with("int8"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(scores(&requantized), scores(&text));
    assert_eq!(scores(&text).len(), 4, "{text}");
}

#[test]
fn an_unknown_model_version_is_refused_naming_the_one_read() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.bin");
    let mut bytes = b"I8CN".to_vec();
    bytes.extend_from_slice(&4u16.to_le_bytes());
    bytes.extend_from_slice(&[0; 32]);
    std::fs::write(&model, &bytes).unwrap();
    for sub in ["eval", "summary", "predict"] {
        let mut args = vec![sub, "--model", s(&model)];
        if sub == "predict" {
            args.extend(["--index", "0"]);
        }
        assert_clean_failure(&trainer(&args), &["format version 4 is unknown", "reads 3"]);
    }
}

#[test]
fn a_retired_layer_stack_version_is_refused_with_the_command_that_writes_a_current_one() {
    // A format-1 (the tutorial-only format) or format-2 (int8 logits) file, valid but for
    // its version: the envelope is checked.
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("model.bin");
    for version in [1u16, 2] {
        let mut bytes = b"I8CN".to_vec();
        bytes.extend_from_slice(&version.to_le_bytes());
        bytes.extend_from_slice(&[0; 32]);
        let crc = infer_core::format::crc32(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        std::fs::write(&model, &bytes).unwrap();
        for sub in ["eval", "summary", "predict"] {
            let mut args = vec![sub, "--model", s(&model)];
            if sub == "predict" {
                args.extend(["--index", "0"]);
            }
            let named = format!("format version {version}");
            let mut needles = vec![named.as_str(), "reads version 3", "trainer fit"];
            if version == 1 {
                needles.push("`trainer fit --out model.bin`");
            }
            assert_clean_failure(&trainer(&args), &needles);
        }
    }
}

#[test]
fn the_ds_cnn_spec_fits_and_exports_exactly_its_plan_which_infer_core_runs_as_scored() {
    // Depthwise convs, an average pool and ReLU6 (`models/ds-cnn.toml`), fitted briefly.
    let spec_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/ds-cnn.toml");
    fits_and_exports_its_plan_as_scored(spec_path, &["--epochs", "6", "--lr", "0.003"]);
}

#[test]
fn the_resnet_spec_fits_and_exports_its_blocks_as_adds_which_infer_core_runs_as_scored() {
    // Two residual blocks, one with a strided 1×1 conv shortcut (`models/resnet-tiny.toml`).
    let spec_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../models/resnet-tiny.toml");
    let (dir, fitted) =
        fits_and_exports_its_plan_as_scored(spec_path, &["--epochs", "6", "--lr", "0.003"]);
    let bytes = std::fs::read(&fitted.out).unwrap();
    let file = StackFile::decode(&bytes).unwrap();
    let kinds: Vec<_> = file.ops.iter().map(|op| op.type_name()).collect();
    assert_eq!(
        kinds,
        [
            "conv2d",
            "conv2d",
            "conv2d",
            "add",
            "conv2d",
            "conv2d",
            "branch",
            "conv2d",
            "add",
            "avgpool2d",
            "dense"
        ]
    );
    // The float checkpoint re-quantizes to the same bytes.
    quantizes_to(dir.path(), &fitted.checkpoint, &fitted.data, &bytes);
}

/// Checks that `trainer quantize` of the float `checkpoint`, calibrated on the 200 training
/// images [`fit_briefly`] trains on in `data`, writes `bytes` (into `dir`); its output.
fn quantizes_to(
    dir: &std::path::Path,
    checkpoint: &std::path::Path,
    data: &std::path::Path,
    bytes: &[u8],
) -> std::process::Output {
    let again = dir.join("again.bin");
    let quantize = trainer_ok(&[
        "quantize",
        "--float",
        s(checkpoint),
        "--data",
        s(data),
        "--calibration-images",
        "200",
        "--out",
        s(&again),
    ]);
    assert_eq!(
        std::fs::read(&again).unwrap(),
        bytes,
        "quantize differs from fit"
    );
    quantize
}

/// Fits the spec file `spec_path` briefly ([`fit_briefly`] with `options`) and checks that
/// its model.bin holds exactly the spec's plan, shapes and clamps included (what the
/// firmware's build checks with FIRMWARE_SPEC), whose int8 logits infer-core computes alike
/// with both kernels and whose accuracies and agreement are the ones `fit` reported; that
/// it learnt, and that int8 mostly agrees with float.
fn fits_and_exports_its_plan_as_scored(
    spec_path: &str,
    options: &[&str],
) -> (tempfile::TempDir, Fitted) {
    let dir = tempfile::tempdir().unwrap();
    let (_, fitted) = fit_briefly(dir.path(), spec_path, options);
    let Fitted {
        data,
        out,
        checkpoint,
        metrics,
    } = &fitted;
    let bytes = std::fs::read(out).unwrap();
    let file = StackFile::decode(&bytes).unwrap();
    let spec = Spec::load(spec_path).unwrap();
    let plan = Plan::of(&spec).unwrap();
    let shapes: Vec<_> = file.ops.iter().map(|op| op.shape()).collect();
    assert_eq!(shapes, plan.shapes());
    let test = trainer::data::load_test(data).unwrap();
    let mut buffers = StackBuffers::new(&file);
    let mut int8 = Vec::new();
    for px in test.images.chunks_exact(784) {
        let reference = buffers
            .logits(&file, px, Kernels::Reference)
            .unwrap()
            .to_vec();
        let fast = buffers.logits(&file, px, Kernels::Fast).unwrap();
        assert_eq!(fast, reference);
        let first = (0..fast.len()).fold(0, |m, j| if fast[j] > fast[m] { j } else { m });
        int8.push(first as u8);
    }
    let model = trainer::arch::checkpoint::load(checkpoint).unwrap();
    let logits = model.logits(&test.images).unwrap();
    let float: Vec<u8> = logits.chunks(10).map(|row| first_max(row) as u8).collect();
    let count = |p: &[u8]| p.iter().zip(&test.labels).filter(|(p, l)| p == l).count();
    let (correct, float_correct) = (count(&int8), count(&float));
    let same = float.iter().zip(&int8).filter(|(f, i)| f == i).count();
    let m = json(&std::fs::read(metrics).unwrap());
    let n = test.len() as f64;
    // The reported scores are these (serde_json's f64 parsing may differ in the last bit).
    for (key, count) in [
        ("test_accuracy_int8", correct),
        ("test_accuracy_f32", float_correct),
        ("int8_float_agreement", same),
    ] {
        let value = m[key].as_f64().unwrap();
        assert!(
            (value - count as f64 / n).abs() < 1e-12,
            "{key}: {value} vs {count}"
        );
    }
    // Learnt (chance is 10 %; 120 of 120 measured), and int8 mostly agrees with float.
    assert!(
        float_correct * 2 > test.len(),
        "float {float_correct} of {n}"
    );
    assert!(same * 10 >= test.len() * 9, "int8 agrees on {same} of {n}");
    (dir, fitted)
}

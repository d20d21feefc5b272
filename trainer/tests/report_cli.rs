//! `trainer report` end to end: the real CLI on a small synthetic test set and a quickly
//! made model writes nine valid PNGs of the expected sizes, `report.json` and an
//! `index.html` showing all nine; a failed run leaves the previous report whole.

mod report_support;

use report_support::{quick_model, read_png, synthetic_digits, write_idx, PICTURES};
use std::path::Path;
use std::process::{Command, Output};

fn trainer(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_trainer"))
        .args(args)
        .output()
        .expect("run trainer")
}

fn path(p: &Path) -> &str {
    p.to_str().unwrap()
}

const METRICS: &str = r#"{"params":54410,"epochs":[
  {"loss":1.09,"acc":0.70,"val_loss":0.45,"val_acc":0.88,"seconds":0.6},
  {"loss":0.42,"acc":0.88,"val_loss":0.34,"val_acc":0.91,"seconds":0.7},
  {"loss":0.34,"acc":0.90,"val_loss":0.31,"val_acc":0.91,"seconds":0.7}]}"#;

fn check_report(out: &Path) -> serde_json::Value {
    for (file, w, h) in PICTURES {
        let bytes = std::fs::read(out.join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
        let (width, height, _) = read_png(&bytes);
        assert_eq!((width, height), (w, h), "{file}");
    }
    let html = std::fs::read_to_string(out.join("index.html")).unwrap();
    let mut from = 0;
    for (file, w, h) in PICTURES {
        let img = format!("<img src=\"{file}\" width=\"{w}\" height=\"{h}\"");
        let at = html[from..]
            .find(&img)
            .unwrap_or_else(|| panic!("index.html lacks {img} in order"));
        from += at + img.len();
    }
    let captions: Vec<&str> = html
        .split("<figcaption>")
        .skip(1)
        .map(|s| s.split("</figcaption>").next().unwrap())
        .collect();
    assert_eq!(captions.len(), 9);
    for c in &captions {
        assert!(c.len() > 20 && !c.contains('\n'), "caption {c:?}");
    }
    let text = std::fs::read_to_string(out.join("report.json")).unwrap();
    // Numbers as computed: no digits beyond an f32's nine (no `0.15000000000000002`).
    for number in text
        .split(|c: char| !(c.is_ascii_digit() || c == '.' || c == 'e' || c == '-'))
        .filter(|s| s.contains('.'))
    {
        let mantissa = number.split('e').next().unwrap();
        let digits = mantissa
            .trim_start_matches('-')
            .replace('.', "")
            .trim_start_matches('0')
            .len();
        assert!(digits <= 9, "report.json prints {number}");
    }
    let json: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(json["histogram"]["edges"][3], 0.15);
    let mut shown = vec![&json["random_digit"]];
    if !json["misclassified"].is_null() {
        shown.push(&json["misclassified"]);
    }
    for seen in shown {
        let p: Vec<f64> = seen["probabilities"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_f64().unwrap())
            .collect();
        assert_eq!(p.len(), 10);
        let sum: f64 = p.iter().sum();
        assert!(
            (sum - 1.0).abs() < 1e-5,
            "plotted probabilities sum to {sum}"
        );
    }
    json
}

#[test]
fn one_command_writes_nine_pictures_and_the_page() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let test = synthetic_digits(50, 8);
    write_idx(&data, &test);
    let (float, bytes) = quick_model(&test);
    let model = dir.path().join("model.bin");
    std::fs::write(&model, &bytes).unwrap();
    let checkpoint = dir.path().join("model.f32");
    trainer::arch::checkpoint::save(&float, &checkpoint).unwrap();
    let metrics = dir.path().join("metrics.json");
    std::fs::write(&metrics, METRICS).unwrap();

    let out = dir.path().join("report");
    let run = |out: &Path, seed: &str, extra: &[&str]| {
        let mut args = vec![
            "report",
            "--model",
            path(&model),
            "--data",
            path(&data),
            "--seed",
            seed,
            "--out",
            path(out),
        ];
        args.extend_from_slice(extra);
        let result = trainer(&args);
        let stderr = String::from_utf8_lossy(&result.stderr);
        assert!(result.status.success(), "{stderr}");
        String::from_utf8_lossy(&result.stdout).into_owned()
    };
    let full = ["--float", path(&checkpoint), "--metrics", path(&metrics)];
    let stdout = run(&out, "7", &full);
    assert!(stdout.contains("Wrote 9 pictures"), "{stdout}");
    let json = check_report(&out);
    assert_eq!(json["filters_from"], "float weights");
    assert_eq!(json["test_images"], 50);

    // Same seed, same bytes; another seed, other choices.
    let again = dir.path().join("again");
    run(&again, "7", &full);
    for (file, _, _) in PICTURES {
        assert_eq!(
            std::fs::read(out.join(file)).unwrap(),
            std::fs::read(again.join(file)).unwrap(),
            "{file}"
        );
    }
    let other = dir.path().join("other");
    run(&other, "8", &full);
    let other_json = check_report(&other);
    assert_ne!(json["random_filters"], other_json["random_filters"]);

    // Model alone: int8 filters, a note instead of curves; still nine pictures.
    let bare = dir.path().join("bare");
    run(&bare, "7", &[]);
    let bare_json = check_report(&bare);
    assert_eq!(bare_json["filters_from"], "int8 weights, dequantized");
}

#[test]
fn a_failed_report_leaves_the_previous_one_whole() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let test = synthetic_digits(20, 2);
    write_idx(&data, &test);
    let (_, bytes) = quick_model(&test);
    let model = dir.path().join("model.bin");
    std::fs::write(&model, &bytes).unwrap();
    let out = dir.path().join("report");
    let ok = trainer(&[
        "report",
        "--model",
        path(&model),
        "--data",
        path(&data),
        "--out",
        path(&out),
    ]);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let before: Vec<Vec<u8>> = PICTURES
        .iter()
        .map(|(f, _, _)| std::fs::read(out.join(f)).unwrap())
        .collect();

    let bad_metrics = dir.path().join("metrics.json");
    std::fs::write(&bad_metrics, r#"{"accuracy": 0.9}"#).unwrap();
    let corrupt = dir.path().join("corrupt.bin");
    std::fs::write(&corrupt, b"not a model").unwrap();
    // The retired tutorial-only files: a format-1 model.bin, an `F32C` checkpoint.
    let format_1 = dir.path().join("format-1.bin");
    let mut v1 = b"I8CN".to_vec();
    v1.extend_from_slice(&1u16.to_le_bytes());
    v1.extend_from_slice(&[0; 32]);
    let crc = infer_core::format::crc32(&v1);
    v1.extend_from_slice(&crc.to_le_bytes());
    std::fs::write(&format_1, &v1).unwrap();
    let f32c = dir.path().join("old.f32");
    std::fs::write(&f32c, b"F32C\x01\x00rest of an old checkpoint").unwrap();
    for (args, expected) in [
        (vec!["--model", path(&corrupt)], "corrupt.bin"),
        (
            vec!["--model", path(&model), "--metrics", path(&bad_metrics)],
            "metrics.json",
        ),
        (
            vec!["--model", path(&model), "--float", path(&corrupt)],
            "corrupt.bin",
        ),
        (
            vec!["--model", path(&format_1)],
            "format version 1, which is retired",
        ),
        (
            vec!["--model", path(&model), "--float", path(&f32c)],
            "retired tutorial-only path (magic F32C)",
        ),
    ] {
        let mut all = vec![
            "report",
            "--data",
            path(&data),
            "--seed",
            "3",
            "--out",
            path(&out),
        ];
        all.extend(args);
        let failed = trainer(&all);
        let stderr = String::from_utf8_lossy(&failed.stderr);
        assert!(!failed.status.success());
        assert!(
            stderr.contains(expected) && !stderr.contains("panicked"),
            "{stderr}"
        );
    }
    for ((file, _, _), old) in PICTURES.iter().zip(&before) {
        assert_eq!(&std::fs::read(out.join(file)).unwrap(), old, "{file}");
    }
    let names: Vec<String> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with(".tmp-")), "{names:?}");
}

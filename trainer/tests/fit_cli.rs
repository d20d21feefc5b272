//! `trainer fit` and `trainer quantize` from the outside: same seed → same bytes, a
//! re-quantized checkpoint equals the fit's own model, and a fit killed or interrupted midway
//! leaves the previous model.bin untouched.

mod cli_support;

use cli_support::{data_dir, names, s, trainer_command, trainer_ok};
use std::io::{BufRead, BufReader};
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

#[test]
fn same_seed_and_data_give_byte_identical_models_whatever_the_thread_count() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(dir.path(), 300, 60);
    let fit = |name: &str, seed: &str, threads: &str| {
        let out = dir.path().join(name);
        trainer_ok(&[
            "fit",
            "--data",
            s(&data),
            "--out",
            s(&out),
            "--epochs",
            "2",
            "--batch-size",
            "32",
            "--seed",
            seed,
            "--threads",
            threads,
        ]);
        std::fs::read(out).unwrap()
    };
    let a = fit("a.bin", "7", "2");
    let b = fit("b.bin", "7", "2");
    let c = fit("c.bin", "7", "1");
    let d = fit("d.bin", "8", "2");
    assert_eq!(a, b, "two fits with the same seed differ");
    assert_eq!(a, c, "the thread count changed the model");
    assert_ne!(a, d, "another seed gave the same model");
    trainer::eval::load_stack(&a).unwrap();
}

#[test]
fn quantize_reproduces_the_fits_model_from_its_float_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(dir.path(), 300, 60);
    let (model, float, again) = (
        dir.path().join("model.bin"),
        dir.path().join("model.f32"),
        dir.path().join("again.bin"),
    );
    let fit = trainer_ok(&[
        "fit",
        "--data",
        s(&data),
        "--out",
        s(&model),
        "--save-float",
        s(&float),
        "--epochs",
        "2",
        "--batch-size",
        "32",
    ]);
    let quantize = trainer_ok(&[
        "quantize",
        "--float",
        s(&float),
        "--data",
        s(&data),
        "--out",
        s(&again),
    ]);
    assert_eq!(
        std::fs::read(&model).unwrap(),
        std::fs::read(&again).unwrap()
    );
    // Both report the same scores, in the same words.
    let scores = |out: &std::process::Output| -> Vec<String> {
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("Test accuracy") || l.contains("agree on"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(
        scores(&fit).len(),
        3,
        "{}",
        String::from_utf8_lossy(&fit.stdout)
    );
    assert_eq!(scores(&fit), scores(&quantize));
    // Fewer calibration images give another model, still valid.
    let fewer = dir.path().join("fewer.bin");
    trainer_ok(&[
        "quantize",
        "--float",
        s(&float),
        "--data",
        s(&data),
        "--out",
        s(&fewer),
        "--calibration-images",
        "5",
    ]);
    trainer::eval::load_stack(&std::fs::read(&fewer).unwrap()).unwrap();
    // A model.bin is not a checkpoint.
    let out = trainer_command()
        .args([
            "quantize",
            "--float",
            s(&model),
            "--data",
            s(&data),
            "--out",
            s(&fewer),
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a float checkpoint"));
}

/// Starts a long fit writing to `out` and returns once its first epoch is done.
fn start_long_fit(
    data: &std::path::Path,
    out: &std::path::Path,
) -> (Child, BufReader<std::process::ChildStdout>) {
    let metrics = out.with_extension("json");
    let float = out.with_extension("f32");
    let mut child = trainer_command()
        .args([
            "fit",
            "--data",
            s(data),
            "--out",
            s(out),
            "--metrics",
            s(&metrics),
            "--save-float",
            s(&float),
            "--epochs",
            "100000",
            "--batch-size",
            "32",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("Epoch 1/") {
        line.clear();
        assert!(
            stdout.read_line(&mut line).unwrap() > 0,
            "the fit ended before its first epoch"
        );
    }
    (child, stdout)
}

/// Waits at most a minute for `child`.
fn wait(child: &mut Child) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the fit did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_fit_killed_or_interrupted_midway_leaves_the_previous_model_intact() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(dir.path(), 600, 60);
    let work = dir.path().join("out");
    std::fs::create_dir(&work).unwrap();
    let model = work.join("model.bin");
    trainer_ok(&[
        "fit",
        "--data",
        s(&data),
        "--out",
        s(&model),
        "--epochs",
        "1",
        "--train-limit",
        "100",
    ]);
    let previous = std::fs::read(&model).unwrap();
    let before = names(&work);

    for signal in ["KILL", "INT", "TERM"] {
        let (mut child, _stdout) = start_long_fit(&data, &model);
        let killed = std::process::Command::new("kill")
            .args(["-s", signal, &child.id().to_string()])
            .status()
            .unwrap();
        assert!(killed.success(), "kill -s {signal} failed");
        let status = wait(&mut child);
        assert!(!status.success(), "SIG{signal}: the fit claims success");
        let mut stderr = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
        if signal != "KILL" {
            // Handled: a clean message and the shell's status for the signal (128 + its
            // number), not death by the signal.
            let expected = if signal == "INT" { 130 } else { 143 };
            assert_eq!(status.code(), Some(expected), "SIG{signal}: {stderr}");
            assert!(
                stderr.contains("training interrupted") && stderr.contains("nothing written"),
                "SIG{signal}: {stderr}"
            );
            assert!(!stderr.contains("panicked"), "{stderr}");
        }
        assert_eq!(
            std::fs::read(&model).unwrap(),
            previous,
            "SIG{signal} changed model.bin"
        );
        trainer::eval::load_stack(&previous).unwrap();
        // No temporary file, metrics or checkpoint was left behind.
        assert_eq!(names(&work), before, "SIG{signal}");
    }
}

#[test]
fn outputs_that_are_not_regular_files_are_refused_before_training() {
    let dir = tempfile::tempdir().unwrap();
    let data = data_dir(dir.path(), 50, 10);
    let sub = dir.path().join("a-directory");
    std::fs::create_dir(&sub).unwrap();
    for flag in ["--out", "--metrics", "--save-float"] {
        let out = trainer_command()
            .args(["fit", "--data", s(&data), "--epochs", "1", flag, s(&sub)])
            .current_dir(dir.path())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag}");
        assert!(stderr.contains("not a regular file"), "{flag}: {stderr}");
        assert!(
            !String::from_utf8_lossy(&out.stdout).contains("Epoch"),
            "{flag}"
        );
    }
    let out = trainer_command()
        .args(["quantize", "--float", "x.f32", "--out", s(&sub)])
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a regular file"));
}

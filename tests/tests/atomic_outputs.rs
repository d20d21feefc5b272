//! `trainer quantize` and `trainer report` killed at any moment leave every file they
//! write either as it was before or complete, never half-written.
//!
//! Each command first runs to the end once (giving the new content of each output and
//! its duration); then, with the outputs reset to old content, it is started again and
//! killed (SIGKILL: no clean-up runs) after delays spread over that duration, and every
//! output must be byte for byte its old or its new content. (`trainer fit` has its own
//! kill test in trainer/tests/.)
//!
//! This catches an output truncated or removed early and written late; a plain
//! `fs::write` of the final bytes is open for microseconds only, which random kills
//! rarely hit: that case is `trainer::atomic::write_atomic`'s own unit tests' business.

use anyhow::{ensure, Context, Result};
use e2e_tests::{data_dir, run_trainer, trainer_bin};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const OLD: &[u8] = b"the previous output, which must survive";

/// Kills per command; the delays go from 0 to the full run's duration.
const KILLS: u32 = 8;

/// The files under `dir` and their content.
fn snapshot(dir: &Path) -> Result<BTreeMap<PathBuf, Vec<u8>>> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_file() {
            files.insert(path.clone(), std::fs::read(&path)?);
        }
    }
    Ok(files)
}

/// Runs `args` to completion, then `KILLS` times killed midway; `outputs` are the files
/// it writes. Returns how many killed runs had replaced at least one output: fewer than
/// all shows that kills landed before the end.
fn kill_at_every_moment(args: &[&str], outputs: &[PathBuf]) -> Result<u32> {
    let reset = || -> Result<()> {
        for path in outputs {
            std::fs::write(path, OLD)?;
        }
        Ok(())
    };
    reset()?;
    let start = Instant::now();
    run_trainer(args)?;
    let full = start.elapsed();
    let new: Vec<Vec<u8>> = outputs
        .iter()
        .map(std::fs::read)
        .collect::<std::io::Result<_>>()?;
    let mut replaced_runs = 0;
    for kill in 0..KILLS {
        reset()?;
        let delay = full.mul_f64(f64::from(kill) / f64::from(KILLS));
        let mut child = Command::new(trainer_bin()?)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting trainer")?;
        std::thread::sleep(delay);
        let _ = child.kill(); // it may have finished already
        child.wait()?;
        let mut replaced = false;
        for (path, new) in outputs.iter().zip(&new) {
            let now =
                std::fs::read(path).with_context(|| format!("{} vanished", path.display()))?;
            ensure!(
                now == OLD || now == *new,
                "{} is neither the old nor the new content after a kill at {delay:?} \
                 ({} bytes)",
                path.display(),
                now.len()
            );
            replaced |= now == *new;
        }
        replaced_runs += u32::from(replaced);
    }
    Ok(replaced_runs)
}

/// Fits a small model with its float checkpoint into `dir`.
fn small_fit(dir: &Path) -> Result<(PathBuf, PathBuf)> {
    let (model, float) = (dir.join("fit.bin"), dir.join("fit.f32"));
    let data = data_dir()?;
    run_trainer(&[
        "fit",
        "--epochs",
        "1",
        "--train-limit",
        "1000",
        "--data",
        data.to_str().context("utf-8")?,
        "--out",
        model.to_str().context("utf-8")?,
        "--save-float",
        float.to_str().context("utf-8")?,
    ])?;
    Ok((model, float))
}

#[test]
fn quantize_and_report_killed_midway_leave_old_or_new_files() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (model, float) = small_fit(dir.path())?;
    let data = data_dir()?;
    let data = data.to_str().context("utf-8")?;

    let out = dir.path().join("quantized.bin");
    let replaced = kill_at_every_moment(
        &[
            "quantize",
            "--float",
            float.to_str().context("utf-8")?,
            "--data",
            data,
            "--calibration-images",
            "200",
            "--out",
            out.to_str().context("utf-8")?,
        ],
        std::slice::from_ref(&out),
    )?;
    eprintln!("quantize: {replaced} of {KILLS} killed runs had written model.bin");
    ensure!(replaced < KILLS, "no kill landed before quantize finished");

    // The report's outputs: run it once to learn their names, then pre-fill them.
    let report = dir.path().join("report");
    let report_args = [
        "report",
        "--model",
        model.to_str().context("utf-8")?,
        "--float",
        float.to_str().context("utf-8")?,
        "--data",
        data,
        "--out",
        report.to_str().context("utf-8")?,
    ];
    run_trainer(&report_args)?;
    let outputs: Vec<PathBuf> = snapshot(&report)?.into_keys().collect();
    ensure!(outputs.len() >= 3, "report wrote {outputs:?}");
    let replaced = kill_at_every_moment(&report_args, &outputs)?;
    eprintln!("report: {replaced} of {KILLS} killed runs had written an output");
    ensure!(replaced < KILLS, "no kill landed before report finished");
    Ok(())
}

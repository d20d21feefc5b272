//! `cargo xtask bench-train`: build the trainer in release, run `trainer fit`, and print the
//! wall seconds of each epoch, of the whole fit and the peak RSS. A benchmark, not a test:
//! it asserts nothing, and figures depend on the machine and on what else runs on it.

use crate::{cargo, has_mnist, workspace_root};
use anyhow::{bail, ensure, Context, Result};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

/// Options of `cargo xtask bench-train`.
#[derive(clap::Args)]
pub struct Args {
    /// Directory with the IDX files (e.g. /usr/share/datasets/fashion-mnist; relative paths
    /// from the repository root).
    #[arg(long, default_value = "data/mnist", value_parser = crate::from_root)]
    pub data: PathBuf,
    /// Worker threads (0 = all cores).
    #[arg(long, default_value_t = 2)]
    pub threads: usize,
    /// Epochs per fit.
    #[arg(long, default_value_t = 6)]
    pub epochs: u32,
    /// Seed of the fit.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Train on the first N training images only.
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Fits to run; the medians are reported too.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..))]
    pub runs: u32,
    /// Train this architecture (`trainer fit --arch`): a preset (`tutorial`, `tutorial-full`)
    /// or a spec file, relative to the workspace root or absolute. Without it, plain
    /// `trainer fit` (the tutorial).
    #[arg(long)]
    pub arch: Option<String>,
}

/// What one fit measured.
struct Run {
    wall: f64,
    epochs: Vec<f64>,
    peak_rss: Option<u64>,
}

/// Runs `cargo xtask bench-train`.
///
/// # Errors
/// A failed build, missing data, or a failed fit.
pub fn run(args: &Args) -> Result<()> {
    let data = workspace_root().join(&args.data);
    ensure!(
        has_mnist(&data),
        "{} does not hold the four IDX files; run `cargo xtask fetch-mnist` or pass --data DIR",
        data.display()
    );
    let trainer = build_trainer()?;
    let scratch = tempfile::tempdir().context("creating a scratch directory")?;
    let mut runs = Vec::new();
    for index in 1..=args.runs {
        let run = fit(&trainer, &data, args, scratch.path())
            .with_context(|| format!("fit {index} of {}", args.runs))?;
        let epochs: Vec<String> = run.epochs.iter().map(|s| format!("{s:.2}")).collect();
        println!(
            "run {index}: whole fit {:.2} s wall; epochs (s): {}; median epoch {:.2} s; peak RSS {}",
            run.wall,
            epochs.join(" "),
            median(&run.epochs),
            mib(run.peak_rss)
        );
        runs.push(run);
    }
    let walls: Vec<f64> = runs.iter().map(|r| r.wall).collect();
    let epochs: Vec<f64> = runs.iter().flat_map(|r| r.epochs.iter().copied()).collect();
    let peak = runs.iter().filter_map(|r| r.peak_rss).max();
    println!(
        "bench-train: {}, {} epochs on {}, threads {}: whole fit {:.2} s (median of {}), median epoch {:.2} s, peak RSS {}",
        args.arch.as_deref().unwrap_or("tutorial"),
        args.epochs,
        args.data.display(),
        args.threads,
        median(&walls),
        runs.len(),
        median(&epochs),
        mib(peak)
    );
    Ok(())
}

/// `cargo build --release -p trainer`; returns the binary's path.
fn build_trainer() -> Result<PathBuf> {
    eprintln!("==> cargo build --release -p trainer");
    let mut child = cargo()
        .args([
            "build",
            "--release",
            "-p",
            "trainer",
            "--bin",
            "trainer",
            "--message-format=json-render-diagnostics",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .context("cannot start cargo")?;
    let stdout = child.stdout.take().context("cargo's stdout")?;
    let mut binary = None;
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line.context("reading cargo's output")?;
        let Ok(message) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        if message["reason"] == "compiler-artifact" && message["target"]["name"] == "trainer" {
            if let Some(path) = message["executable"].as_str() {
                binary = Some(PathBuf::from(path));
            }
        }
    }
    let status = child.wait().context("waiting for cargo")?;
    ensure!(
        status.success(),
        "`cargo build --release -p trainer` failed ({status})"
    );
    binary.context("cargo built no trainer executable")
}

/// One `trainer fit` in `scratch`, timed from start to exit.
fn fit(trainer: &Path, data: &Path, args: &Args, scratch: &Path) -> Result<Run> {
    let metrics = scratch.join("metrics.json");
    let mut cmd = Command::new(trainer);
    cmd.arg("fit")
        .arg("--data")
        .arg(data)
        .arg("--out")
        .arg(scratch.join("model.bin"))
        .arg("--metrics")
        .arg(&metrics)
        .args(["--epochs", &args.epochs.to_string()])
        .args(["--threads", &args.threads.to_string()])
        .args(["--seed", &args.seed.to_string()]);
    if let Some(limit) = args.train_limit {
        cmd.args(["--train-limit", &limit.to_string()]);
    }
    if let Some(arch) = &args.arch {
        // A spec file named relative to the workspace (the fit runs from the caller's directory).
        let file = workspace_root().join(arch);
        cmd.arg("--arch");
        if file.is_file() {
            cmd.arg(file);
        } else {
            cmd.arg(arch);
        }
    }
    let start = Instant::now();
    let status = cmd.status().context("cannot start trainer fit")?;
    let wall = start.elapsed().as_secs_f64();
    if !status.success() {
        bail!("trainer fit failed ({status})");
    }
    let json: serde_json::Value = serde_json::from_slice(
        &std::fs::read(&metrics).with_context(|| format!("reading {}", metrics.display()))?,
    )
    .context("the metrics are not JSON")?;
    let epochs = json["epochs"]
        .as_array()
        .context("the metrics have no epochs")?
        .iter()
        .filter_map(|e| e["seconds"].as_f64())
        .collect();
    Ok(Run {
        wall,
        epochs,
        peak_rss: json["peak_rss_bytes"].as_u64(),
    })
}

/// The median (mean of the middle two for an even count); NaN for none.
fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Bytes in MiB, or "unknown".
fn mib(bytes: Option<u64>) -> String {
    bytes.map_or("unknown (no /proc)".to_owned(), |b| {
        format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 2.0, 3.0]), 2.5);
        assert!(median(&[]).is_nan());
        assert_eq!(mib(Some(3 * 1024 * 1024 / 2)), "1.5 MiB");
    }
}

//! `cargo xtask demo`: the main job end to end.

use crate::{cargo, has_mnist, prereq, qemu, run_step, workspace_root};
use anyhow::Result;
use std::path::PathBuf;

/// Options of `cargo xtask demo`.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Where the trained int8 model goes.
    #[arg(long, default_value = "model.bin")]
    pub out: PathBuf,
    /// Training epochs (the tutorial's 6 by default).
    #[arg(long, default_value_t = 6)]
    pub epochs: u32,
    /// Training seed.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Fetches MNIST if missing, fits and quantizes, evaluates on the host, runs the firmware.
///
/// # Errors
/// The first step that fails, by name.
pub fn run(args: &DemoArgs) -> Result<()> {
    let root = workspace_root();
    let data = root.join("data/mnist");
    if !has_mnist(&data) {
        crate::fetch_mnist::run(&data)?;
    }
    let out = root.join(&args.out);
    let out_str = out.to_string_lossy().into_owned();
    let epochs = args.epochs.to_string();
    let seed = args.seed.to_string();
    // The tutorial through the one engine: the `tutorial` spec, model.bin format 3.
    run_step(
        "trainer fit --arch tutorial",
        &mut trainer(&[
            "fit", "--arch", "tutorial", "--out", &out_str, "--epochs", &epochs, "--seed", &seed,
        ]),
    )?;
    run_step("trainer eval", &mut trainer(&["eval", "--model", &out_str]))?;
    prereq::ensure_qemu()?;
    prereq::ensure_targets()?;
    eprintln!("==> firmware on the Cortex-M4F (QEMU mps2-an386)");
    qemu::run(&qemu::QemuArgs::for_model(out, data))
}

/// `cargo run --release -p trainer -- <args>`.
fn trainer(args: &[&str]) -> std::process::Command {
    let mut cmd = cargo();
    cmd.args(["run", "--release", "--quiet", "-p", "trainer", "--"])
        .args(args);
    cmd
}

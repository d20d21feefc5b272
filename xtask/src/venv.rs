//! The Python of the reference scripts (`tools/keras-golden`, `tools/tflite-golden`): one
//! virtual environment, `target/python-venv`, with exactly the packages of
//! `tools/python-requirements.txt` (never the user's Python: `python3 -m venv`, then the
//! venv's own pip with `--no-deps`, `PYTHONNOUSERSITE=1`). It is kept, and rebuilt only
//! when the requirements change.

use crate::{run_step, workspace_root};
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::Command;

/// The venv's `python`, after creating the venv with the pinned packages if it is missing
/// or was made from other requirements.
///
/// # Errors
/// No `python3`, or a failed install (the pinned wheels need a Python they are built for:
/// 3.11 was used).
pub fn python() -> Result<PathBuf> {
    let root = workspace_root();
    let requirements = root.join("tools/python-requirements.txt");
    let venv = root.join("target/python-venv");
    let wanted = std::fs::read_to_string(&requirements)
        .with_context(|| format!("reading {}", requirements.display()))?;
    let stamp = venv.join("installed-requirements.txt");
    let python = venv.join("bin/python");
    if python.exists() && std::fs::read_to_string(&stamp).ok().as_deref() == Some(&wanted) {
        return Ok(python);
    }
    if let Some(parent) = venv.parent() {
        std::fs::create_dir_all(parent)
            .with_context(|| format!("creating {}", parent.display()))?;
    }
    run_step(
        "python3 -m venv --clear target/python-venv",
        Command::new("python3")
            .args(["-m", "venv", "--clear"])
            .arg(&venv)
            .env("PYTHONNOUSERSITE", "1"),
    )?;
    run_step(
        "pip install -r tools/python-requirements.txt (into the venv)",
        command(&python)
            .args(["-m", "pip", "install", "--quiet", "--no-deps", "-r"])
            .arg(&requirements),
    )?;
    std::fs::write(&stamp, wanted).with_context(|| format!("writing {}", stamp.display()))?;
    Ok(python)
}

/// A command running the venv's `python`, isolated from the user's site packages, in the
/// repository root.
pub fn command(python: &std::path::Path) -> Command {
    let mut cmd = Command::new(python);
    cmd.env("PYTHONNOUSERSITE", "1")
        .env("PIP_REQUIRE_VIRTUALENV", "1")
        .env_remove("PYTHONPATH")
        .current_dir(workspace_root());
    cmd
}

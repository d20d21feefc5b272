//! What a fresh machine lacks for the tests: rustup targets and qemu-system-arm.

use anyhow::{bail, Result};
use std::process::{Command, Stdio};

/// Cross targets the firmware is built for.
pub const TARGETS: &[&str] = &[
    "thumbv7em-none-eabihf",
    "thumbv7m-none-eabi",
    "thumbv6m-none-eabi",
];

fn succeeds(cmd: &mut Command) -> bool {
    cmd.stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Installs the missing rustup targets.
///
/// # Errors
/// If rustup is missing or refuses, with the command to run by hand.
pub fn ensure_targets() -> Result<()> {
    let installed = Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output();
    let installed = match installed {
        Ok(out) if out.status.success() => String::from_utf8_lossy(&out.stdout).into_owned(),
        _ => bail!(
            "rustup is not available; install the targets by hand: rustup target add {}",
            TARGETS.join(" ")
        ),
    };
    let missing: Vec<&str> = TARGETS
        .iter()
        .copied()
        .filter(|t| !installed.lines().any(|l| l.trim() == *t))
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    crate::run_step(
        &format!("rustup target add {}", missing.join(" ")),
        Command::new("rustup")
            .arg("target")
            .arg("add")
            .args(&missing),
    )
}

/// Installs qemu-system-arm with apt-get when missing (as root), or says exactly how.
///
/// # Errors
/// If it is missing and cannot be installed here.
pub fn ensure_qemu() -> Result<()> {
    if succeeds(Command::new("qemu-system-arm").arg("--version")) {
        return Ok(());
    }
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if is_root && succeeds(Command::new("apt-get").arg("--version")) {
        crate::run_step(
            "apt-get update",
            Command::new("apt-get").args(["update", "-qq"]),
        )?;
        crate::run_step(
            "apt-get install -y qemu-system-arm",
            Command::new("apt-get")
                .args(["install", "-y", "-qq", "qemu-system-arm"])
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
        if succeeds(Command::new("qemu-system-arm").arg("--version")) {
            return Ok(());
        }
    }
    bail!(
        "qemu-system-arm is not installed. Install it, then run again:\n  Debian/Ubuntu: sudo apt-get install -y qemu-system-arm\n  Fedora: sudo dnf install qemu-system-arm\n  macOS: brew install qemu"
    )
}

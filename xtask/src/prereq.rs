//! What a fresh machine lacks for the tests: rustup targets and qemu-system-arm.

use anyhow::{bail, Context, Result};
use std::process::{Command, Stdio};

/// Cross targets the firmware is built for: every board's (`model_spec::boards`), once
/// each, the default board's first.
pub fn targets() -> Vec<&'static str> {
    let mut targets: Vec<&str> = Vec::new();
    for board in &model_spec::boards::BOARDS {
        if !targets.contains(&board.target) {
            targets.push(board.target);
        }
    }
    targets
}

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
            targets().join(" ")
        ),
    };
    let missing: Vec<&str> = targets()
        .into_iter()
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

/// apt-get's arguments that install QEMU: nothing recommended, and never a removal (apt
/// stops instead of removing a package, e.g. a newer `qemu-utils` than the archive's).
pub const APT_INSTALL: [&str; 4] = [
    "install",
    "--no-install-recommends",
    "--no-remove",
    "qemu-system-arm",
];

/// The packages an `apt-get -s` (simulate) run would remove: its `Remv <package> …` lines.
pub fn apt_removals(simulation: &str) -> Vec<String> {
    simulation
        .lines()
        .filter_map(|line| line.strip_prefix("Remv "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Installs qemu-system-arm with apt-get when missing (as root), or says exactly how.
///
/// apt-get first simulates the install (`-s`, without `--no-remove`, to list what it would
/// remove); if it would remove any installed package, or cannot install, nothing is done and
/// the error gives the command to run by hand. Otherwise it installs with [`APT_INSTALL`].
///
/// # Errors
/// If it is missing and cannot be installed here, or installing would remove a package.
pub fn ensure_qemu() -> Result<()> {
    if succeeds(Command::new("qemu-system-arm").arg("--version")) {
        return Ok(());
    }
    let by_hand = format!("sudo apt-get {}", APT_INSTALL.join(" "));
    let is_root = Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| o.stdout.starts_with(b"0\n"));
    if is_root && succeeds(Command::new("apt-get").arg("--version")) {
        crate::run_step(
            "apt-get update",
            Command::new("apt-get").args(["update", "-qq"]),
        )?;
        let simulated = Command::new("apt-get")
            .args([
                "-s",
                "install",
                "--no-install-recommends",
                "qemu-system-arm",
            ])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
            .context("cannot run apt-get -s (simulate)")?;
        let removals = apt_removals(&String::from_utf8_lossy(&simulated.stdout));
        if !removals.is_empty() {
            bail!(
                "qemu-system-arm is not installed, and installing it with apt would remove {} \
                 (apt-get -s install --no-install-recommends qemu-system-arm): nothing was \
                 changed. Decide, then install it yourself, e.g.:\n  {by_hand}",
                removals.join(", ")
            );
        }
        if !simulated.status.success() {
            bail!(
                "qemu-system-arm is not installed, and apt cannot install it (simulated: {}):\n{}\n\
                 nothing was changed; install it yourself, e.g.:\n  {by_hand}",
                simulated.status,
                String::from_utf8_lossy(&simulated.stderr).trim()
            );
        }
        crate::run_step(
            &format!("apt-get {}", APT_INSTALL.join(" ")),
            Command::new("apt-get")
                .args(["-y", "-qq"])
                .args(APT_INSTALL)
                .env("DEBIAN_FRONTEND", "noninteractive"),
        )?;
        if succeeds(Command::new("qemu-system-arm").arg("--version")) {
            return Ok(());
        }
    }
    bail!(
        "qemu-system-arm is not installed. Install it, then run again:\n  Debian/Ubuntu: {by_hand}\n  Fedora: sudo dnf install qemu-system-arm\n  macOS: brew install qemu"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn removals_are_read_from_an_apt_simulation() {
        let simulation = "NOTE: This is only a simulation!\n\
            Reading package lists...\n\
            Remv qemu-utils [1:9.1.0+ds-1]\n\
            Inst qemu-system-common (1:8.2.2+ds-0ubuntu1)\n\
            Remv qemu-block-extra [1:9.1.0+ds-1]\n\
            Conf qemu-system-arm (1:8.2.2+ds-0ubuntu1)\n";
        assert_eq!(apt_removals(simulation), ["qemu-utils", "qemu-block-extra"]);
        assert!(apt_removals("Inst qemu-system-arm (1:8.2)\nConf qemu-system-arm\n").is_empty());
    }
}

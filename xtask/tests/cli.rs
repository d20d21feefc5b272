//! `cargo xtask` from the outside: where it looks for paths, what a failed firmware build
//! shows, and how it installs QEMU (with stand-ins for apt-get, id and rustup).

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}

fn xtask(cwd: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .current_dir(cwd)
        .output()
        .expect("run xtask")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn paths_and_the_default_data_resolve_from_the_repository_root() {
    let root = root();
    assert!(
        root.join("data/mnist").is_dir(),
        "run `cargo xtask fetch-mnist` first"
    );
    // From models/: the model path and the default data directory are the root's. The
    // count is too large, so it stops after loading both, before any build.
    let out = xtask(
        &root.join("models"),
        &[
            "qemu",
            "--model",
            "firmware-example/assets/model.bin",
            "--count",
            "100000",
        ],
    );
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("--count 100000 is more than the"), "{text}");
    // From anywhere else: a missing file is named by the path looked at.
    let elsewhere = tempfile::tempdir().unwrap();
    let out = xtask(elsewhere.path(), &["qemu", "--model", "nowhere.bin"]);
    let text = stderr(&out);
    assert!(
        text.contains(&root.join("nowhere.bin").display().to_string()),
        "{text}"
    );
    let out = xtask(
        elsewhere.path(),
        &[
            "qemu",
            "--model",
            "nowhere.bin",
            "--spec",
            "models/none.toml",
        ],
    );
    assert!(
        stderr(&out).contains(&root.join("nowhere.bin").display().to_string()),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_failed_firmware_build_shows_the_build_scripts_message_alone() {
    let root = root();
    // The tutorial's model checked against the full tutorial's spec: the build script refuses.
    let out = xtask(
        &root.join("models"),
        &[
            "qemu",
            "--model",
            "firmware-example/assets/model.bin",
            "--spec",
            "tutorial-full",
            "--count",
            "1",
        ],
    );
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let error = text
        .lines()
        .find(|l| l.starts_with("error: "))
        .unwrap_or_else(|| panic!("no error line: {text}"));
    assert!(
        error.starts_with("error: building the firmware failed: ")
            && error.contains("operation 1 is maxpool2d")
            && error.contains("tutorial-full declares conv2d"),
        "{text}"
    );
    // cargo's build-script dump is kept in a file, not shown.
    for dump in [
        "--- stdout",
        "cargo:rerun-if",
        "Caused by",
        "custom build command",
    ] {
        assert!(!text.contains(dump), "shows {dump:?}: {text}");
    }
    assert!(text.contains("firmware-build.log"), "{text}");
}

/// A directory of stand-ins: `id` (root), `rustup` (every target installed) and an
/// `apt-get` that logs its arguments and, simulating, would remove `removes` (if any).
fn fake_tools(dir: &Path, removes: Option<&str>) -> PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let log = dir.join("apt.log");
    let removal = removes
        .map(|p| format!("echo 'Remv {p} [1:9.1.0+ds-1]'"))
        .unwrap_or_else(|| ":".to_string());
    let scripts = [
        ("id", "#!/bin/sh\necho 0\n".to_string()),
        (
            "rustup",
            "#!/bin/sh\necho thumbv7em-none-eabihf\necho thumbv7m-none-eabi\necho thumbv6m-none-eabi\n"
                .to_string(),
        ),
        (
            "apt-get",
            format!(
                "#!/bin/sh\necho \"$*\" >> '{}'\ncase \"$1\" in\n  -s) echo 'NOTE: This is only a simulation!'; {removal}; echo 'Inst qemu-system-arm (1:8.2.2)' ;;\nesac\nexit 0\n",
                log.display()
            ),
        ),
    ];
    for (name, body) in scripts {
        let path = bin.join(name);
        std::fs::write(&path, body).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

fn xtask_test_with(bin: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["test", "--no-lint", "--no-fuzz"])
        .env("PATH", bin)
        .current_dir(root())
        .output()
        .expect("run xtask")
}

#[test]
fn qemu_is_installed_without_recommends_and_never_at_the_cost_of_a_package() {
    // apt would remove a newer qemu-utils: nothing is installed, the command is printed.
    let dir = tempfile::tempdir().unwrap();
    let bin = fake_tools(dir.path(), Some("qemu-utils"));
    let out = xtask_test_with(&bin);
    let text = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(text.contains("would remove qemu-utils"), "{text}");
    assert!(text.contains("nothing was changed"), "{text}");
    assert!(
        text.contains("sudo apt-get install --no-install-recommends --no-remove qemu-system-arm"),
        "{text}"
    );
    let log = std::fs::read_to_string(dir.path().join("apt.log")).unwrap();
    let installs: Vec<&str> = log.lines().filter(|l| l.contains("install")).collect();
    assert_eq!(
        installs,
        ["-s install --no-install-recommends qemu-system-arm"],
        "{log}"
    );

    // Nothing to remove: installed with --no-install-recommends --no-remove.
    let dir = tempfile::tempdir().unwrap();
    let bin = fake_tools(dir.path(), None);
    let out = xtask_test_with(&bin);
    let log = std::fs::read_to_string(dir.path().join("apt.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l == "-y -qq install --no-install-recommends --no-remove qemu-system-arm"),
        "{log}"
    );
    // (The stand-in installs nothing, so QEMU is still missing and that is the error.)
    assert!(
        stderr(&out).contains("qemu-system-arm is not installed"),
        "{}",
        stderr(&out)
    );
}

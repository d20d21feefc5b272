//! The command blocks of the Markdown docs cannot drift from the programs: every
//! `cargo xtask …` and `cargo run … -p trainer -- …` line in a ```sh block names a real
//! subcommand, passes only flags its `--help` lists and every flag it requires, and the
//! files those commands write in the repository root are ignored by git.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask sits in the workspace")
        .to_path_buf()
}

/// The Markdown files whose commands are checked: those in the root and in `docs/`, and every
/// directory's `README.md` one level down (build outputs aside).
fn docs() -> Vec<String> {
    let root = root();
    let mut found = Vec::new();
    let markdown_in = |dir: &str, found: &mut Vec<String>| {
        for entry in std::fs::read_dir(root.join(dir)).unwrap().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".md") {
                found.push(if dir.is_empty() {
                    name
                } else {
                    format!("{dir}/{name}")
                });
            }
        }
    };
    markdown_in("", &mut found);
    markdown_in("docs", &mut found);
    for entry in std::fs::read_dir(&root).unwrap().flatten() {
        let dir = entry.file_name().to_string_lossy().into_owned();
        if entry.path().join("README.md").is_file() && dir != "target" {
            found.push(format!("{dir}/README.md"));
        }
    }
    found.sort();
    assert!(found.iter().any(|f| f == "README.md"), "{found:?}");
    found
}

/// The trainer binary of the same build as this test's xtask (`cargo test --workspace`
/// builds both).
fn trainer_bin() -> PathBuf {
    let xtask = Path::new(env!("CARGO_BIN_EXE_xtask"));
    let bin = xtask.with_file_name(format!("trainer{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: run `cargo test --workspace --release` (which builds it) or \
         `cargo build --release -p trainer` first",
        bin.display()
    );
    bin
}

/// One documented command: which program, its subcommand and the rest of its words.
#[derive(Debug)]
struct Documented {
    /// Where: `file:line`.
    at: String,
    /// `trainer` or `xtask`.
    program: &'static str,
    /// The words after the program: subcommand first.
    words: Vec<String>,
}

/// Every trainer / xtask command in the ```sh blocks of `file`.
fn documented(file: &str) -> Vec<Documented> {
    let text = std::fs::read_to_string(root().join(file)).unwrap();
    let mut in_sh = false;
    let mut found = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let trimmed = line.trim();
        if trimmed.starts_with("```") {
            in_sh = !in_sh && matches!(trimmed, "```sh" | "```bash" | "```shell");
            continue;
        }
        if !in_sh {
            continue;
        }
        // Drop a trailing comment; split chained commands.
        let code = trimmed.split(" # ").next().unwrap_or("");
        for command in code.split("&&") {
            let words: Vec<String> = command
                .split_whitespace()
                .map(|w| w.trim_matches(|c| c == '[' || c == ']').to_string())
                .collect();
            let (program, rest) = if let Some(i) = words.iter().position(|w| w == "xtask") {
                if i == 0 || words[i - 1] != "cargo" {
                    continue;
                }
                ("xtask", &words[i + 1..])
            } else if let Some(i) = words.iter().position(|w| w == "--") {
                if !words[..i]
                    .windows(2)
                    .any(|p| p[0] == "-p" && p[1] == "trainer")
                {
                    continue;
                }
                ("trainer", &words[i + 1..])
            } else {
                continue;
            };
            found.push(Documented {
                at: format!("{file}:{}", n + 1),
                program,
                words: rest.to_vec(),
            });
        }
    }
    found
}

/// `program subcommand --help`.
fn help(program: &str, subcommand: &str) -> String {
    let bin = match program {
        "xtask" => PathBuf::from(env!("CARGO_BIN_EXE_xtask")),
        _ => trainer_bin(),
    };
    let out = Command::new(bin)
        .args([subcommand, "--help"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{program} {subcommand} --help: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// The long flags `help` lists, and those its usage line requires.
fn flags(help: &str) -> (Vec<String>, Vec<String>) {
    let listed = help
        .split(|c: char| c.is_whitespace() || c == ',' || c == '=' || c == '[' || c == '<')
        .filter(|w| w.starts_with("--") && w.len() > 2)
        .map(|w| {
            w.trim_end_matches(|c: char| !c.is_alphanumeric())
                .to_string()
        })
        .collect();
    let usage = help.lines().find(|l| l.starts_with("Usage:")).unwrap_or("");
    // Required ones are outside brackets.
    let mut depth = 0i32;
    let mut outside = String::new();
    for c in usage.chars() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            c if depth == 0 => outside.push(c),
            _ => {}
        }
    }
    let required = outside
        .split_whitespace()
        .filter(|w| w.starts_with("--"))
        .map(str::to_string)
        .collect();
    (listed, required)
}

#[test]
fn documented_commands_use_real_subcommands_and_flags() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in &docs() {
        for command in documented(file) {
            let Some(subcommand) = command.words.first() else {
                problems.push(format!(
                    "{}: {} without a subcommand",
                    command.at, command.program
                ));
                continue;
            };
            let help = help(command.program, subcommand);
            let (listed, required) = flags(&help);
            let given: Vec<String> = command
                .words
                .iter()
                .filter(|w| w.starts_with("--"))
                .map(|w| w.split('=').next().unwrap_or(w).to_string())
                .collect();
            for flag in &given {
                if flag != "--help" && !listed.contains(flag) {
                    problems.push(format!(
                        "{}: `{} {subcommand}` has no {flag}",
                        command.at, command.program
                    ));
                }
            }
            for flag in &required {
                if !given.contains(flag) {
                    problems.push(format!(
                        "{}: `{} {subcommand}` requires {flag}",
                        command.at, command.program
                    ));
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} documented commands found");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every `Flags:` paragraph of `file`: where, the command it describes (the last one before
/// it) and the flags it names.
fn flag_paragraphs(file: &str) -> Vec<(String, &'static str, String, Vec<String>)> {
    let text = std::fs::read_to_string(root().join(file)).unwrap();
    let commands = documented(file);
    let lines: Vec<&str> = text.lines().collect();
    let mut found = Vec::new();
    for (n, line) in lines.iter().enumerate() {
        if !line.starts_with("Flags:") {
            continue;
        }
        let paragraph: String = lines[n..]
            .iter()
            .take_while(|l| !l.trim().is_empty())
            .copied()
            .collect::<Vec<_>>()
            .join(" ");
        let before = commands.iter().rev().find(|c| {
            let line: usize = c.at.rsplit(':').next().unwrap().parse().unwrap();
            line <= n
        });
        let Some(command) = before else { continue };
        let named = paragraph
            .split('`')
            .skip(1)
            .step_by(2)
            .filter_map(|code| code.split_whitespace().next())
            .filter(|w| w.starts_with("--"))
            .map(str::to_string)
            .collect();
        found.push((
            format!("{file}:{}", n + 1),
            command.program,
            command.words[0].clone(),
            named,
        ));
    }
    found
}

#[test]
fn flags_paragraphs_name_real_flags_and_every_required_one() {
    let mut problems = Vec::new();
    let mut checked = 0;
    for file in &docs() {
        for (at, program, subcommand, named) in flag_paragraphs(file) {
            let (listed, required) = flags(&help(program, &subcommand));
            for flag in &named {
                if !listed.contains(flag) {
                    problems.push(format!("{at}: `{program} {subcommand}` has no {flag}"));
                }
            }
            for flag in &required {
                if !named.contains(flag) {
                    problems.push(format!(
                        "{at}: the flags of `{program} {subcommand}` leave out the required {flag}"
                    ));
                }
            }
            checked += 1;
        }
    }
    assert!(checked >= 2, "only {checked} Flags: paragraphs found");
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn every_preset_and_fuzz_target_is_named_in_the_help() {
    let presets: Vec<&str> = model_spec::spec::PRESETS.iter().map(|p| p.0).collect();
    for (program, subcommand, flag) in [
        ("trainer", "fit", "--arch"),
        ("trainer", "summary", "--arch"),
        ("xtask", "qemu", "--spec"),
        ("xtask", "bench-mcu", "--spec"),
        ("xtask", "bench-train", "--arch"),
    ] {
        let help = help(program, subcommand);
        // The flag's paragraph: from its line to the next flag's.
        let start = help
            .find(&format!("      {flag} "))
            .unwrap_or_else(|| panic!("{program} {subcommand} --help lacks {flag}"));
        let rest = &help[start + flag.len() + 6..];
        let paragraph = &rest[..rest.find("\n  -").unwrap_or(rest.len())];
        for preset in &presets {
            assert!(
                paragraph.contains(&format!("`{preset}`"))
                    || paragraph.contains(&format!("{preset},"))
                    || paragraph.contains(&format!("{preset})")),
                "{program} {subcommand} {flag} does not name the preset {preset}:\n{paragraph}"
            );
        }
    }
    // The fuzz targets, as fuzz/Cargo.toml declares them.
    let manifest = std::fs::read_to_string(root().join("fuzz/Cargo.toml")).unwrap();
    let targets: Vec<&str> = manifest
        .split("[[bin]]")
        .skip(1)
        .filter_map(|section| {
            let line = section
                .lines()
                .find(|l| l.trim_start().starts_with("name"))?;
            line.split('"').nth(1)
        })
        .collect();
    assert!(targets.len() >= 2, "{targets:?}");
    let top = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .arg("--help")
        .output()
        .unwrap();
    let top = String::from_utf8(top.stdout).unwrap();
    let fuzz = help("xtask", "fuzz");
    for target in targets {
        assert!(
            top.contains(target),
            "cargo xtask --help lacks the fuzz target {target}:\n{top}"
        );
        assert!(
            fuzz.contains(target),
            "cargo xtask fuzz --help lacks {target}:\n{fuzz}"
        );
    }
}

#[test]
fn files_the_documented_commands_write_in_the_root_are_ignored() {
    let root = root();
    let inside = Command::new("git")
        .args(["rev-parse", "--is-inside-work-tree"])
        .current_dir(&root)
        .output();
    if !inside.is_ok_and(|o| o.status.success()) {
        eprintln!("not a git work tree: nothing to check");
        return;
    }
    let mut written = vec![(
        "README.md (cargo xtask demo)".to_string(),
        "model.bin".to_string(),
    )];
    for file in &docs() {
        for command in documented(file) {
            // Only commands run from the root (not after a `cd`).
            for pair in command.words.windows(2) {
                if matches!(pair[0].as_str(), "--out" | "--save-float" | "--metrics")
                    && !pair[1].starts_with('/')
                    && !pair[1].contains('<')
                {
                    written.push((command.at.clone(), pair[1].clone()));
                }
            }
        }
    }
    assert!(written.len() >= 10, "{written:?}");
    let mut tracked_or_visible = Vec::new();
    for (at, path) in &written {
        let ignored = Command::new("git")
            .args(["check-ignore", "-q", "--no-index", path])
            .current_dir(&root)
            .status()
            .unwrap();
        if !ignored.success() {
            tracked_or_visible.push(format!("{at}: {path} would be left untracked"));
        }
    }
    assert!(
        tracked_or_visible.is_empty(),
        "{}",
        tracked_or_visible.join("\n")
    );
}

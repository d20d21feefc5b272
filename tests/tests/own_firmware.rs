//! A firmware crate of its own, built the way a user outside this repository would
//! (`tests/own-firmware`: its own workspace, `.cargo/config.toml` with the target and the
//! QEMU runner, `memory.x`, and a `build.rs` of a few lines around
//! `model_spec::codegen::build`), run with `cargo run` under QEMU: for every input it
//! prints exactly the logits infer-core's reference kernels compute on the host.

use anyhow::{Context, Result};
use e2e_tests::stack_model::host_logits;
use e2e_tests::{run_own_crate, workspace_root};

/// Bytes of one digits record: the label, then 28×28 pixels.
const RECORD: usize = 1 + 28 * 28;

/// Inputs the firmware classifies (`COUNT` in tests/own-firmware/src/main.rs).
const COUNT: usize = 8;

/// One `input <i> class=<c> logits <l0> … <lN>` line.
#[derive(Debug, PartialEq)]
struct Line {
    index: usize,
    class: usize,
    logits: Vec<i64>,
}

fn parse(stdout: &str) -> Result<(Vec<Line>, usize)> {
    let mut lines = Vec::new();
    let mut done = None;
    for text in stdout.lines() {
        let tokens: Vec<&str> = text.split_whitespace().collect();
        match tokens.as_slice() {
            ["input", index, class, "logits", logits @ ..] => lines.push(Line {
                index: index.parse()?,
                class: class
                    .strip_prefix("class=")
                    .with_context(|| format!("bad line {text:?}"))?
                    .parse()?,
                logits: logits.iter().map(|l| l.parse()).collect::<Result<_, _>>()?,
            }),
            ["done", count] => {
                done = Some(
                    count
                        .strip_prefix("inputs=")
                        .with_context(|| format!("bad line {text:?}"))?
                        .parse()?,
                );
            }
            _ => {}
        }
    }
    Ok((lines, done.context("no `done` line")?))
}

#[test]
fn a_firmware_of_its_own_runs_the_model_through_the_library_helper() -> Result<()> {
    // `cargo run --release` in the crate, as its user would; its runner is QEMU.
    let stdout = run_own_crate(&workspace_root().join("tests/own-firmware"), None)?;
    let (lines, done) = parse(&stdout)?;
    assert_eq!(done, COUNT, "{stdout}");
    assert_eq!(lines.len(), COUNT, "{stdout}");

    // The same model (its build.rs names it) and inputs on the host.
    let root = workspace_root();
    let model = std::fs::read(root.join("firmware-example/assets/two-blocks.bin"))?;
    let digits = std::fs::read(root.join("firmware-example/assets/digits.bin"))?;
    let records = digits
        .get(..COUNT * RECORD)
        .context("fewer committed digits than the firmware classifies")?;
    let pixels: Vec<u8> = records
        .chunks_exact(RECORD)
        .flat_map(|r| r[1..].iter().copied())
        .collect();
    let host = host_logits(&model, &pixels)?;
    for (i, (line, want)) in lines.iter().zip(&host).enumerate() {
        let want: Vec<i64> = want.iter().map(|&l| i64::from(l)).collect();
        let class = (0..want.len()).fold(0, |best, k| if want[k] > want[best] { k } else { best });
        assert_eq!(
            *line,
            Line {
                index: i,
                class,
                logits: want
            },
            "input {i}: the firmware vs infer-core on the host"
        );
    }
    // A trained model on real digits: not one class for everything.
    let classes: std::collections::BTreeSet<usize> = lines.iter().map(|l| l.class).collect();
    assert!(classes.len() >= 4, "{stdout}");
    Ok(())
}

#[test]
fn the_parser_reads_the_firmware_lines_and_refuses_a_run_without_its_end() {
    let text = "input 0 class=1 logits -3 7\ninput 1 class=0 logits 5 -128\ndone inputs=2\n";
    let (lines, done) = parse(text).unwrap();
    assert_eq!(done, 2);
    assert_eq!(
        lines[1],
        Line {
            index: 1,
            class: 0,
            logits: vec![5, -128]
        }
    );
    assert!(parse("input 0 class=1 logits -3 7\n").is_err());
    assert!(parse("input 0 class=x logits -3 7\ndone inputs=1\n").is_err());
}

//! The firmware on every board — Cortex-M4F, M3, M7 (QEMU MPS2), M0 (micro:bit) and M55
//! (MPS3 AN547) — computes for each of the first 100 test digits exactly the int8 logits that
//! infer-core's unfused reference computes on the host, with a SysTick calibration that
//! holds; and a wrong SysTick rate fails the run.
//!
//! All 2,004 test digits on one board: `cargo xtask qemu --board <board> --count 2004
//! --model firmware-example/assets/model.bin` (batches of 200 on the micro:bit).

use anyhow::Result;
use e2e_tests::stack_model::host_logits;
use e2e_tests::{data_dir, parse_firmware_output, run_firmware_on, workspace_root, BOARDS};
use std::path::PathBuf;
use trainer::data;

/// Digits per board: what fits every board's flash and keeps the test at seconds.
const DIGITS: usize = 100;

/// The committed model (the tutorial's network, format 3) and a digits file of the first
/// [`DIGITS`] test images, with the host's logits for them from the unfused reference
/// kernels (`stack::run` with `Kernels::Reference`).
fn setup() -> Result<(PathBuf, tempfile::TempDir, PathBuf, Vec<Vec<i32>>)> {
    let model = workspace_root().join("firmware-example/assets/model.bin");
    let test = data::load_test(&data_dir()?)?;
    let host = host_logits(&std::fs::read(&model)?, &test.images[..DIGITS * 784])?;
    let dir = tempfile::tempdir()?;
    let digits = dir.path().join("digits.bin");
    std::fs::write(&digits, data::digit_records(&test, DIGITS)?)?;
    Ok((model, dir, digits, host))
}

#[test]
fn every_board_computes_exactly_the_host_reference_logits() -> Result<()> {
    let (model, _dir, digits, host) = setup()?;
    for board in &BOARDS {
        let (ok, stdout) = run_firmware_on(board, &model, &digits, (&[], &[]))?;
        assert!(ok, "{}: the firmware failed:\n{stdout}", board.name);
        let report = parse_firmware_output(&stdout)?;
        assert!(
            stdout.starts_with(&format!("board: {} ", board.name)),
            "{stdout}"
        );
        assert_eq!(report.digits.len(), DIGITS, "{}", board.name);
        assert_eq!(report.logits.len(), DIGITS, "{}", board.name);
        for (i, (line, logits)) in report.digits.iter().zip(&report.logits).enumerate() {
            assert_eq!(line.index, i);
            assert_eq!(
                logits, &host[i],
                "{}: digit {i}: firmware logits vs the host's reference",
                board.name
            );
            let class = (0..10).fold(
                0,
                |best, k| if host[i][k] > host[i][best] { k } else { best },
            );
            assert_eq!(usize::from(line.pred), class, "{}: digit {i}", board.name);
        }
        assert_eq!(report.summary.total, DIGITS);

        // The counted loop: 2·10^6 instructions, measured to within 0.1 %.
        let (loop_insns, measured) = report.calibration.expect("calibration line");
        assert_eq!(loop_insns, 2_000_000);
        assert!(
            loop_insns.abs_diff(measured) <= loop_insns / 1000,
            "{}: calibration {measured} for {loop_insns}",
            board.name
        );

        // The layer-by-layer profile accounts for the whole inference: its layers (less
        // the argmax, which `insns_per_inference` leaves out) add up to the total within
        // 2 % (the probe's counter reads are subtracted, tick rounding is not).
        let staged: u64 = report
            .layers
            .iter()
            .filter(|(name, _)| name != "argmax")
            .map(|(_, v)| v)
            .sum();
        let total = report.summary.insns_per_inference;
        assert!(
            staged.abs_diff(total) * 50 <= total,
            "{}: layers {staged} vs inference {total}: {:?}",
            board.name,
            report.layers
        );
        assert!(report.memory.is_some_and(|m| m.infer_stack_bytes > 0));
        if board.name == "mps2-an386" {
            readme_demo_sample_is_in(&stdout);
        }
    }
    Ok(())
}

/// The README's sample of `cargo xtask demo`'s last lines (its model is byte-identical to
/// the committed one, the board the M4F) is what the firmware prints, line for line (the
/// last line is xtask's own, checked in `xtask/src/qemu.rs`).
fn readme_demo_sample_is_in(stdout: &str) {
    let readme = std::fs::read_to_string(workspace_root().join("README.md")).unwrap();
    let block = readme
        .split("`cargo xtask demo` ends with")
        .nth(1)
        .and_then(|after| after.split("```text\n").nth(1))
        .and_then(|b| b.split("```").next())
        .expect("the README shows the end of the demo's output");
    let firmware: Vec<&str> = block.lines().filter(|l| !l.starts_with("qemu ")).collect();
    assert!(firmware.len() >= 3, "{block}");
    for line in firmware {
        assert!(
            stdout.lines().any(|l| l == line),
            "README.md's demo sample shows {line:?}, which the firmware does not print:\n{}",
            stdout
                .lines()
                .filter(|l| !l.starts_with("digit ") && !l.starts_with("logits "))
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

#[test]
fn a_wrong_systick_rate_fails_the_calibration() -> Result<()> {
    let (model, _dir, digits, _) = setup()?;
    // The micro:bit clocks SysTick at 16 MHz (62.5 instructions per tick); the MPS2
    // boards' 40 would undercount every inference by 36 %.
    let board = BOARDS
        .iter()
        .find(|b| b.name == "microbit")
        .expect("microbit");
    let (ok, stdout) = run_firmware_on(
        board,
        &model,
        &digits,
        (&[("FIRMWARE_INSNS_PER_TICK", "40")], &[]),
    )?;
    assert!(!ok, "the firmware accepted a wrong SysTick rate:\n{stdout}");
    // 2·10^6 instructions are 32,000 ticks at 62.5 per tick, counted as 40 instructions
    // each: 1,280,000, to within the one tick the counter's phase may add or take.
    let measured = stdout
        .lines()
        .find_map(|l| l.strip_prefix("calibration: loop_insns=2000000 measured_insns="))
        .and_then(|n| n.parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no calibration line:\n{stdout}"));
    assert!(measured.abs_diff(1_280_000) <= 40, "{stdout}");
    assert!(!stdout.contains("summary:"), "{stdout}");
    Ok(())
}

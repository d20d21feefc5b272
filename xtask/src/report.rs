//! The firmware's report, as `firmware-example/src/main.rs` prints it over semihosting,
//! parsed once for `cargo xtask qemu`/`bench-mcu` and the end-to-end tests:
//!
//! ```text
//! board: <name> insns_per_tick=<n>/<d>
//! calibration: loop_insns=<n> measured_insns=<n>
//! network: …
//! digit <i> label=<l> pred=<p>
//! logits <i> <l0> … <lN>
//! layers: <layer>=<n> … argmax=<n>
//! memory: infer_stack_bytes=<n> static_ram_bytes=<n> scratch_bytes=<n> load_stack_bytes=<n>
//! summary: correct=<n> total=<n> insns_per_inference=<n> stack_peak_bytes=<n>
//! ```

use anyhow::{ensure, Context, Result};

/// One `digit <i> label=<l> pred=<p>` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DigitLine {
    /// Index within the run.
    pub index: usize,
    /// True class.
    pub label: u8,
    /// Predicted class (the index of the largest output; an imported model may have
    /// hundreds).
    pub pred: u16,
}

/// The `summary:` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    /// Correct predictions.
    pub correct: usize,
    /// Inputs classified.
    pub total: usize,
    /// Mean instructions of one inference (SysTick under `-icount shift=0`).
    pub insns_per_inference: u64,
    /// Deepest stack of the whole run, printing included (painting).
    pub stack_peak_bytes: u64,
}

/// The `memory:` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Memory {
    /// Stack of one inference.
    pub infer_stack_bytes: u64,
    /// Statics.
    pub static_ram_bytes: u64,
    /// The network's working memory (activation arena and patch), kept in the digit
    /// loop's frame.
    pub scratch_bytes: u64,
}

/// What one firmware run printed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareReport {
    /// Per-input lines, in order.
    pub digits: Vec<DigitLine>,
    /// `logits <i> <l0> … <lN>` lines, in order (the wide i32 logits).
    pub logits: Vec<Vec<i32>>,
    /// The `calibration:` line, (loop instructions, measured instructions), if printed.
    pub calibration: Option<(u64, u64)>,
    /// The `layers:` line, `(name, instructions)` in order (empty if not printed).
    pub layers: Vec<(String, u64)>,
    /// The `memory:` line, if printed.
    pub memory: Option<Memory>,
    /// The summary.
    pub summary: Summary,
}

impl FirmwareReport {
    /// Instructions of layer `name` from the `layers:` line.
    pub fn layer(&self, name: &str) -> Option<u64> {
        self.layers.iter().find(|(n, _)| n == name).map(|(_, v)| *v)
    }
}

/// The value of `key=<n>` among `tokens`.
fn field<T: std::str::FromStr>(tokens: &[&str], key: &str, line: &str) -> Result<T> {
    tokens
        .iter()
        .find_map(|t| t.strip_prefix(key)?.strip_prefix('='))
        .and_then(|v| v.parse().ok())
        .with_context(|| format!("expected `{key}=<n>` in firmware line {line:?}"))
}

/// Parses the firmware's output: any of the lines above, exactly one `summary:`.
///
/// # Errors
/// A malformed line, logits out of order, a missing or repeated summary.
pub fn parse(text: &str) -> Result<FirmwareReport> {
    let mut digits = Vec::new();
    let mut logits = Vec::new();
    let (mut calibration, mut layers, mut memory, mut summary) = (None, Vec::new(), None, None);
    for line in text.lines() {
        let tokens: Vec<&str> = line.split_whitespace().collect();
        match tokens.first().copied() {
            Some("digit") => {
                let index = tokens
                    .get(1)
                    .and_then(|v| v.parse().ok())
                    .with_context(|| format!("bad line {line:?}"))?;
                digits.push(DigitLine {
                    index,
                    label: field(&tokens, "label", line)?,
                    pred: field(&tokens, "pred", line)?,
                });
            }
            Some("logits") => {
                let values: Vec<i32> = tokens
                    .get(2..)
                    .unwrap_or_default()
                    .iter()
                    .map(|v| v.parse())
                    .collect::<Result<_, _>>()
                    .with_context(|| format!("bad logits line {line:?}"))?;
                ensure!(!values.is_empty(), "bad logits line {line:?}");
                ensure!(
                    tokens.get(1) == Some(&logits.len().to_string().as_str()),
                    "logits line out of order: {line:?}"
                );
                logits.push(values);
            }
            Some("calibration:") => {
                calibration = Some((
                    field(&tokens, "loop_insns", line)?,
                    field(&tokens, "measured_insns", line)?,
                ));
            }
            Some("layers:") => {
                for t in &tokens[1..] {
                    let (name, value) = t
                        .split_once('=')
                        .with_context(|| format!("bad layers line {line:?}"))?;
                    let value = value
                        .parse()
                        .with_context(|| format!("bad layers line {line:?}"))?;
                    layers.push((name.to_string(), value));
                }
            }
            Some("memory:") => {
                memory = Some(Memory {
                    infer_stack_bytes: field(&tokens, "infer_stack_bytes", line)?,
                    static_ram_bytes: field(&tokens, "static_ram_bytes", line)?,
                    scratch_bytes: field(&tokens, "scratch_bytes", line)?,
                });
            }
            Some("summary:") => {
                ensure!(summary.is_none(), "more than one summary line");
                summary = Some(Summary {
                    correct: field(&tokens, "correct", line)?,
                    total: field(&tokens, "total", line)?,
                    insns_per_inference: field(&tokens, "insns_per_inference", line)?,
                    stack_peak_bytes: field(&tokens, "stack_peak_bytes", line)?,
                });
            }
            _ => {}
        }
    }
    Ok(FirmwareReport {
        digits,
        logits,
        calibration,
        layers,
        memory,
        summary: summary.context("the firmware printed no `summary:` line")?,
    })
}

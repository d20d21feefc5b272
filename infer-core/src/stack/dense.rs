//! A dense layer over a materialised vector (a dense after a dense, or on the model's
//! input): the stage [`super::stages::run_general`] computes when a stage has no conv and
//! no pool.
//!
//! CMSIS-NN's `arm_fully_connected_s8` computes such a layer unit by unit from the int8
//! input; so did this engine, at four instructions per multiply-accumulate and some
//! hundred per unit on the Cortex-M4F (the offset's share `offset · Σ w` summed again for
//! every unit, one call and one requantization per unit). Here the input is prepared once
//! for every unit (widened with its offset added, as the core's kernels take it: packed
//! for `SMLAD`, or kept as int8 for Helium's `VMLADAVA.S8`), several units share each load
//! of it, and the units' sums are requantized a block at a time
//! ([`ChannelRequant::requantize_positions`]).

use super::stages::{DensePart, Out, Pixels};
use crate::kernels::dense::{dense_unit, finish_logits};
use crate::kernels::dot::{dot_i8_offset, dot_packed, PatchWords};
use crate::kernels::dsp::{dense_rows, pack_groups, DenseRows};
use crate::kernels::mve::{dense_rows_i8, DenseRowsI8};
use crate::kernels::ChannelRequant;

/// Units whose sums are computed, then requantized, together (on the stack: 32 words).
const BLOCK: usize = 32;

/// Words of working memory a dense layer of `inputs` inputs alone takes, computing
/// `pixels` conv pixels at once (the build's trade between RAM and instructions): with
/// four, its input packed ([`PatchWords::words`], sized on every core: the DSP cores
/// take it, the Helium cores the int8 input as it is); with one, nothing (the units one by
/// one, [`dot_i8_offset`]).
pub const fn dense_words(inputs: usize, pixels: Pixels) -> usize {
    match pixels {
        Pixels::Four => PatchWords::words(inputs),
        Pixels::One => 0,
    }
}

/// How a block of units is computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    /// From the packed input, pairs of units through [`dense_rows`].
    Packed,
    /// From the int8 input as it is, pairs of units through [`dense_rows_i8`].
    Int8,
    /// Unit by unit, [`dot_i8_offset`].
    Units,
}

/// The way for `inputs` inputs with `words` words of working memory: on MVE cores the
/// int8 input; on DSP cores (and in the unit tests) the packed one where it fits and is
/// whole octets; else unit by unit. The unit tests take the int8 way for every other
/// block.
fn way(inputs: usize, words: usize, block: usize) -> Way {
    let packed = cfg!(any(infer_core_dsp, test))
        && !cfg!(infer_core_mve)
        && inputs % 8 == 0
        && words >= dense_words(inputs, Pixels::Four);
    if cfg!(infer_core_mve) || (cfg!(test) && (block % 2 == 1 || !packed)) {
        Way::Int8
    } else if packed {
        Way::Packed
    } else {
        Way::Units
    }
}

/// Computes dense layer `d` over `input` into `output`, with `words` ([`dense_words`]) as
/// working memory; bit for bit [`crate::kernels::dense::dense_i8`] (and, for the logits,
/// [`crate::kernels::dense::dense_i8_logits`]). Short slices compute less, never panic.
pub(crate) fn dense_direct(d: &DensePart<'_>, input: &[i8], words: &mut [u32], mut out: Out<'_>) {
    let n = d.inputs;
    let Some(input) = input.get(..n) else {
        return;
    };
    if n == 0 {
        return;
    }
    let patch = words.get_mut(..dense_words(n, Pixels::Four));
    let patch: &[u32] = match patch {
        Some(patch) if way(n, patch.len(), 0) == Way::Packed || cfg!(test) => {
            pack_groups(input, d.input_offset, patch, 2, n / 4);
            patch
        }
        _ => &[],
    };
    let mut sums = [0u32; BLOCK];
    let mut first = 0;
    while first < d.units {
        let count = (d.units - first).min(BLOCK);
        let Some(acc) = sums.get_mut(..count) else {
            return;
        };
        acc.fill(0);
        let weights = d.weights.get(first * n..).unwrap_or_default();
        let row = |u: usize| {
            weights
                .get(u * n..)
                .and_then(|r| r.get(..n))
                .unwrap_or_default()
        };
        let mut done = 0;
        match way(n, patch.len(), first / BLOCK) {
            Way::Packed if count >= 2 => {
                let rows = DenseRows {
                    patch,
                    weights,
                    channels: n,
                    stride: n,
                };
                dense_rows(&rows, acc);
                done = count / 2 * 2;
                if let Some(last) = acc.get_mut(done) {
                    *last = dot_packed(patch, row(done)) as u32;
                    done += 1;
                }
            }
            Way::Int8 if count >= 2 => {
                let rows = DenseRowsI8 {
                    values: input,
                    weights,
                    channels: n,
                    stride: n,
                    offset: d.input_offset,
                };
                dense_rows_i8(&rows, acc);
                done = count / 2 * 2;
            }
            _ => {}
        }
        for (u, a) in acc.iter_mut().enumerate().skip(done) {
            *a = dot_i8_offset(input, d.input_offset, row(u)) as u32;
        }
        finish_block(d, first, acc, &mut out);
        first += count;
    }
}

/// Writes units `first..first + acc.len()` of dense layer `d` from their sums without bias
/// `acc` (overwritten): int8 values a block at a time where the requantization allows
/// ([`ChannelRequant::requantize_positions`]: no ReLU, or a monotonic one), else unit by
/// unit; or wide logits.
fn finish_block(d: &DensePart<'_>, first: usize, acc: &mut [u32], out: &mut Out<'_>) {
    let rq = skip_channels(&d.requant, first);
    match out {
        Out::Values(output) => {
            let Some(output) = output.data.get_mut(first..) else {
                return;
            };
            let relu = rq.activation_min >= rq.output_offset;
            if relu && !d.monotonic {
                for (u, (o, &a)) in output.iter_mut().zip(acc.iter()).enumerate() {
                    *o = dense_unit(&d.requant, first + u, a as i32);
                }
                return;
            }
            rq.requantize_positions(acc, acc.len());
            for (o, &a) in output.iter_mut().zip(acc.iter()) {
                *o = a as i32 as i8;
            }
        }
        Out::Logits(logits) => {
            let Some(logits) = logits.get_mut(first..) else {
                return;
            };
            let n = acc.len().min(logits.len());
            let (Some(logits), Some(acc)) = (logits.get_mut(..n), acc.get(..n)) else {
                return;
            };
            for (l, &a) in logits.iter_mut().zip(acc) {
                *l = a as i32;
            }
            finish_logits(&rq, logits);
        }
    }
}

/// The requantization of channels `first..` of `rq`.
fn skip_channels<'a>(rq: &ChannelRequant<'a>, first: usize) -> ChannelRequant<'a> {
    ChannelRequant {
        bias: rq.bias.get(4 * first..).unwrap_or_default(),
        multiplier: rq.multiplier.get(4 * first..).unwrap_or_default(),
        shift: rq.shift.get(first..).unwrap_or_default(),
        ..*rq
    }
}

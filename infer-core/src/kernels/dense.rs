//! int8 fully connected layer with per-output-channel weights: [`dense_i8`] is the naive
//! reference, and [`dense_unit`] the requantization the fused stages
//! (`crate::stack::stages`, which accumulate with [`super::dot::dot_i8_offset`]) finish
//! each output with.
//!
//! A network's last layer, which gives the logits, is not clipped to int8: [`dense_i8_logits`]
//! (reference) keeps its int32 accumulators and finishes them, as the stages do, with
//! [`finish_logits`] into wide (i32) logits of one common scale, zero point 0.

use super::dsp::word;
use super::ChannelRequant;
use crate::requant::{multiply_by_quantized_multiplier, scale_right};

/// One wide logit from its accumulator (bias included). Out of line: the loops that call it
/// stay small instead of being unrolled and vectorised around the 64-bit product (a 10-class
/// finish took 1,920 bytes of Cortex-M4 code inlined, for a step that runs once per inference).
#[inline(never)]
fn wide_logit(acc: i32, multiplier: i32, shift: i32, zero_point: i32) -> i32 {
    multiply_by_quantized_multiplier(acc, multiplier, shift).saturating_add(zero_point)
}

/// The logits layer, reference: `out[u]` is the wide logit of `bias[u] + Σ_i (in[i] +
/// input_offset) · w[u][i]` ([`finish_logits`]).
///
/// `weights` is `units × input.len()` int8 bytes, row by row; `output` has `units` values.
pub fn dense_i8_logits(
    input: &[i8],
    input_offset: i32,
    weights: &[u8],
    requant: &ChannelRequant<'_>,
    output: &mut [i32],
) {
    if input.is_empty() {
        return;
    }
    for (u, (out, w_row)) in output
        .iter_mut()
        .zip(weights.chunks_exact(input.len()))
        .enumerate()
    {
        if requant.channel(u).is_none() {
            break;
        }
        let mut acc = 0;
        for (&x, &w) in input.iter().zip(w_row) {
            acc += (i32::from(x) + input_offset) * i32::from(w as i8);
        }
        *out = acc;
    }
    finish_logits(requant, output);
}

/// Output `unit` of a dense layer (not the network's last) from its accumulator `acc`
/// without bias; −128 if the layer has no parameters for it.
#[inline(never)]
pub fn dense_unit(requant: &ChannelRequant<'_>, unit: usize, acc: i32) -> i8 {
    match requant.channel(unit) {
        Some((bias, mult, shift)) => requant.apply(acc.wrapping_add(bias), mult, shift),
        None => i8::MIN,
    }
}

/// Finishes the logits of the network's last dense layer from its accumulators without
/// bias, in place: `logits[u] = round((acc[u] + bias[u]) · multiplier[u] · 2^(shift[u] − 31))`
/// plus the output zero point (0 in a valid model), not clamped. The one place every engine
/// — the stages, [`super::fused::Stream3x3`], [`dense_i8_logits`] — turns the last layer's
/// accumulators into logits.
///
/// Every class has its own multiplier (its weight scale differs) and all share the output
/// scale, so the logits compare and dequantize as the float model's. A model's decoder
/// accepts only shifts ≤ 0 here (every per-class ratio below 1), so the result is never
/// larger in magnitude than the accumulator and cannot overflow. Classes past the
/// requantization arrays are left as they are.
#[inline(never)]
pub fn finish_logits(requant: &ChannelRequant<'_>, logits: &mut [i32]) {
    for (value, params) in logits.iter_mut().zip(channel_params(requant)) {
        *value = logit(requant, *value, params);
    }
}

/// [`finish_logits`] of the sums without bias `acc` (as `u32` bits), written into `logits`
/// (as many as both have, and the requantization arrays).
#[inline(never)]
pub fn logits_of(requant: &ChannelRequant<'_>, acc: &[u32], logits: &mut [i32]) {
    // The channels' arrays cut to the logits' count first: one loop bound, no per-channel
    // checks (some fifteen instructions a logit fewer than zipping the arrays' chunks).
    let rq = requant;
    let n = logits.len().min(acc.len()).min(rq.shift.len());
    let n = n.min(rq.bias.len() / 4).min(rq.multiplier.len() / 4);
    let (Some(logits), Some(acc), Some(shift)) =
        (logits.get_mut(..n), acc.get(..n), rq.shift.get(..n))
    else {
        return;
    };
    let (Some(bias), Some(multiplier)) = (rq.bias.get(..4 * n), rq.multiplier.get(..4 * n)) else {
        return;
    };
    let params = bias
        .chunks_exact(4)
        .zip(multiplier.chunks_exact(4))
        .zip(shift);
    for ((value, &a), ((bias, mult), &shift)) in logits.iter_mut().zip(acc).zip(params) {
        let (Some(bias), Some(mult)) = (bias.first_chunk(), mult.first_chunk()) else {
            return;
        };
        let params = (word(bias) as i32, word(mult) as i32, i32::from(shift as i8));
        *value = logit(requant, a as i32, params);
    }
}

/// Each channel's `(bias, multiplier, shift)`, as far as the arrays go.
#[inline(always)]
fn channel_params<'r>(
    requant: &'r ChannelRequant<'_>,
) -> impl Iterator<Item = (i32, i32, i32)> + 'r {
    requant
        .bias
        .chunks_exact(4)
        .zip(requant.multiplier.chunks_exact(4))
        .zip(requant.shift)
        .map_while(|((bias, mult), &shift)| {
            let (bias, mult) = (bias.first_chunk()?, mult.first_chunk()?);
            Some((word(bias) as i32, word(mult) as i32, i32::from(shift as i8)))
        })
}

/// A logit from its accumulator without bias `acc` and its channel's `(bias, multiplier,
/// shift)`, as [`finish_logits`] finishes each.
#[inline(always)]
fn logit(requant: &ChannelRequant<'_>, acc: i32, (bias, mult, shift): (i32, i32, i32)) -> i32 {
    let acc = acc.wrapping_add(bias);
    if mult >= 0 && shift <= 0 {
        // The same value, in some twenty instructions rather than seventy.
        scale_right(acc, mult, shift).saturating_add(requant.output_offset)
    } else {
        wide_logit(acc, mult, shift, requant.output_offset)
    }
}

/// `out[u] = clamp(requant(bias[u] + Σ_i (in[i] + input_offset) · w[u][i]) + zero point)`.
///
/// `weights` is `units × input.len()` int8 bytes, row by row; `output` has `units` values.
pub fn dense_i8(
    input: &[i8],
    input_offset: i32,
    weights: &[u8],
    requant: &ChannelRequant<'_>,
    output: &mut [i8],
) {
    if input.is_empty() {
        return;
    }
    for (u, (out, w_row)) in output
        .iter_mut()
        .zip(weights.chunks_exact(input.len()))
        .enumerate()
    {
        let Some((bias, mult, shift)) = requant.channel(u) else {
            return;
        };
        let mut acc = bias;
        for (&x, &w) in input.iter().zip(w_row) {
            acc += (i32::from(x) + input_offset) * i32::from(w as i8);
        }
        *out = requant.apply(acc, mult, shift);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::TestRng;
    use crate::requant::requantize;
    use std::{vec, vec::Vec};

    #[test]
    fn matches_naive_reference_exactly() {
        let mut rng = TestRng(99);
        for _ in 0..50 {
            let n_in = 1 + rng.below(300) as usize;
            let units = 1 + rng.below(12) as usize;
            let input: Vec<i8> = (0..n_in).map(|_| rng.i8()).collect();
            let w: Vec<i8> = (0..n_in * units).map(|_| rng.i8()).collect();
            let bias: Vec<i32> = (0..units)
                .map(|_| rng.below(200_001) as i32 - 100_000)
                .collect();
            let mult: Vec<i32> = (0..units)
                .map(|_| (1 << 30) + rng.below(1 << 30) as i32)
                .collect();
            let shift: Vec<i32> = (0..units).map(|_| -(rng.below(16) as i32)).collect();
            let offset = rng.below(256) as i32 - 127;
            let zp = rng.below(256) as i32 - 128;
            let expected: Vec<i8> = (0..units)
                .map(|u| {
                    let mut acc = bias[u];
                    for i in 0..n_in {
                        acc += (input[i] as i32 + offset) * w[u * n_in + i] as i32;
                    }
                    requantize(acc, mult[u], shift[u], zp, -128, 127)
                })
                .collect();
            let bias_b: Vec<u8> = bias.iter().flat_map(|b| b.to_le_bytes()).collect();
            let mult_b: Vec<u8> = mult.iter().flat_map(|b| b.to_le_bytes()).collect();
            let shift_b: Vec<u8> = shift.iter().map(|&s| s as i8 as u8).collect();
            let w_b: Vec<u8> = w.iter().map(|&v| v as u8).collect();
            let rq = ChannelRequant {
                bias: &bias_b,
                multiplier: &mult_b,
                shift: &shift_b,
                output_offset: zp,
                activation_min: -128,
                activation_max: 127,
            };
            let mut out = vec![0i8; units];
            dense_i8(&input, offset, &w_b, &rq, &mut out);
            assert_eq!(out, expected);
        }
    }

    #[test]
    fn logits_keep_the_accumulators_exactly_scaled_and_unclipped() {
        let mut rng = TestRng(0x1061);
        let mut beyond_int8 = 0;
        for _ in 0..if cfg!(miri) { 5 } else { 50 } {
            let n_in = 1 + rng.below(300) as usize;
            let units = 2 + rng.below(12) as usize;
            let input: Vec<i8> = (0..n_in).map(|_| rng.i8()).collect();
            let w: Vec<i8> = (0..n_in * units).map(|_| rng.i8()).collect();
            let bias: Vec<i32> = (0..units)
                .map(|_| rng.below(200_001) as i32 - 100_000)
                .collect();
            // Ratios in (0, 1): shifts 0 and below, as a model's logits layer has.
            let mult: Vec<i32> = (0..units)
                .map(|_| (1 << 30) + rng.below(1 << 30) as i32)
                .collect();
            let shift: Vec<i32> = (0..units).map(|_| -(rng.below(4) as i32)).collect();
            let offset = rng.below(256) as i32 - 127;
            // Naive: exact accumulator, then the real ratio m·2^(s−31), rounded half away
            // from zero (TFLite's rounding differs from it by at most one step).
            let expected: Vec<i32> = (0..units)
                .map(|u| {
                    let mut acc = i64::from(bias[u]);
                    for i in 0..n_in {
                        acc += i64::from(input[i] as i32 + offset) * i64::from(w[u * n_in + i]);
                    }
                    let acc = i32::try_from(acc).unwrap();
                    multiply_by_quantized_multiplier(acc, mult[u], shift[u])
                })
                .collect();
            let bias_b: Vec<u8> = bias.iter().flat_map(|b| b.to_le_bytes()).collect();
            let mult_b: Vec<u8> = mult.iter().flat_map(|b| b.to_le_bytes()).collect();
            let shift_b: Vec<u8> = shift.iter().map(|&s| s as i8 as u8).collect();
            let w_b: Vec<u8> = w.iter().map(|&v| v as u8).collect();
            let rq = ChannelRequant {
                bias: &bias_b,
                multiplier: &mult_b,
                shift: &shift_b,
                output_offset: 0,
                activation_min: -128,
                activation_max: 127,
            };
            let mut out = vec![0i32; units];
            dense_i8_logits(&input, offset, &w_b, &rq, &mut out);
            assert_eq!(out, expected);
            // Within one step of the real value, and not clipped to int8.
            for u in 0..units {
                let mut acc = f64::from(bias[u]);
                for i in 0..n_in {
                    acc += f64::from(input[i] as i32 + offset) * f64::from(w[u * n_in + i]);
                }
                let real = acc * f64::from(mult[u]) * 2f64.powi(shift[u] - 31);
                assert!(
                    (f64::from(out[u]) - real).abs() <= 1.0,
                    "{} vs {real}",
                    out[u]
                );
                beyond_int8 += usize::from(!(-128..=127).contains(&out[u]));
            }
        }
        assert!(beyond_int8 > 0, "the test never leaves the int8 range");
    }

    #[test]
    fn wide_requantization_cannot_overflow_with_shifts_at_most_zero() {
        let mult: Vec<u8> = (i32::MAX).to_le_bytes().to_vec();
        let zero = [0u8; 4];
        for (acc, shift) in [
            (i32::MAX, 0i8),
            (i32::MIN, 0),
            (i32::MIN + 1, -31),
            (-7, -1),
        ] {
            let shift_b = [shift as u8];
            let rq = ChannelRequant {
                bias: &zero,
                multiplier: &mult,
                shift: &shift_b,
                output_offset: 0,
                activation_min: -128,
                activation_max: 127,
            };
            let mut v = [acc];
            finish_logits(&rq, &mut v);
            let real = f64::from(acc) * f64::from(i32::MAX) * 2f64.powi(i32::from(shift) - 31);
            assert!(
                (f64::from(v[0]) - real).abs() <= 1.0,
                "{acc} {shift}: {}",
                v[0]
            );
        }
    }
}

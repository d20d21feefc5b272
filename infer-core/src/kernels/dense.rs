//! int8 fully connected layer with per-output-channel weights: [`dense_i8`] is the reference,
//! [`dense_i8_fast`] the same result four inputs at a time ([`super::dot::dot_i8_offset`]).

use super::dot::dot_i8_offset;
use super::ChannelRequant;

/// Output `unit` of a dense layer (not the network's last) from its accumulator `acc`
/// without bias; −128 if the layer has no parameters for it.
#[inline(never)]
pub fn dense_unit(requant: &ChannelRequant<'_>, unit: usize, acc: i32) -> i8 {
    match requant.channel(unit) {
        Some((bias, mult, shift)) => requant.apply(acc.wrapping_add(bias), mult, shift),
        None => i8::MIN,
    }
}

/// Logit `unit` of the network's last dense layer from its accumulator `acc` without bias:
/// the one place every engine (the stages, [`super::fused::Stream3x3`]) turns the last
/// layer's accumulators into logits. −128 if the layer has no parameters for it.
#[inline(never)]
pub fn finish_logit(requant: &ChannelRequant<'_>, unit: usize, acc: i32) -> i8 {
    match requant.channel(unit) {
        Some((bias, mult, shift)) => requant.apply(acc.wrapping_add(bias), mult, shift),
        None => i8::MIN,
    }
}

/// [`finish_logit`] of every unit: `logits[u]` from `acc[u]`.
pub fn finish_logits(requant: &ChannelRequant<'_>, acc: &[i32], logits: &mut [i8]) {
    for (u, (out, &a)) in logits.iter_mut().zip(acc).enumerate() {
        *out = finish_logit(requant, u, a);
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

/// The same as [`dense_i8`], bit for bit, with packed multiply-accumulates (two per `SMLAD`
/// on DSP cores).
pub fn dense_i8_fast(
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
        let acc = bias.wrapping_add(dot_i8_offset(input, input_offset, w_row));
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
            let mut fast = vec![0i8; units];
            dense_i8_fast(&input, offset, &w_b, &rq, &mut fast);
            assert_eq!(fast, expected, "fast path");
        }
    }
}

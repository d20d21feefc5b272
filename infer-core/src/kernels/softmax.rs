//! TFLite's int8 softmax, exactly as its reference kernel (`reference_ops::Softmax`, int8
//! in and out, which TensorFlow Lite Micro runs) computes it: gemmlowp fixed point, the
//! input differences from the row's maximum scaled to Q5.26, `exp` by gemmlowp's
//! `exp_on_negative_values`, their sum in Q12.19, its reciprocal by Newton–Raphson, and
//! each output `exp · reciprocal` rounded to int8 of scale 1/256 and zero point −128.
//!
//! The parameters ([`SoftmaxParams`]) are worked out from the input scale and `beta` as
//! TFLite's `PreprocessSoftmaxScaling` and `CalculateInputRadius` do, in `f64`, by the
//! importer (`trainer`); this module only runs them.

use crate::requant::{rounding_divide_by_pot, saturating_rounding_doubling_high_mul as mul};

/// What [`softmax_i8`] needs: `beta · input scale · 2^26` as a Q31 multiplier and a left
/// shift (TFLite's `QuantizeMultiplierGreaterThanOne`), and the smallest input difference
/// from the row's maximum that still counts (smaller ones give exactly −128).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SoftmaxParams {
    /// Q31 multiplier of the input differences.
    pub multiplier: i32,
    /// Left shift applied before it (≥ 0).
    pub left_shift: i32,
    /// Minus the input radius: differences below it are left out.
    pub diff_min: i32,
}

/// Integer bits of the scaled input differences (Q5.26).
const DIFF_INTEGER_BITS: i32 = 5;
/// Integer bits of the sum of exponentials (Q12.19).
const ACCUMULATION_INTEGER_BITS: i32 = 12;

/// gemmlowp's `SaturatingRoundingMultiplyByPOT<exponent>` for `exponent` > 0.
fn saturating_shift_left(x: i32, exponent: i32) -> i32 {
    let threshold = (1i32 << (31 - exponent)) - 1;
    if x > threshold {
        i32::MAX
    } else if x < -threshold {
        i32::MIN
    } else {
        x << exponent
    }
}

/// gemmlowp's `exp_on_interval_between_negative_one_quarter_and_0_excl` (Q0.31).
fn exp_on_interval_between_negative_one_quarter_and_0_excl(a: i32) -> i32 {
    const CONSTANT_TERM: i32 = 1_895_147_668;
    const ONE_THIRD: i32 = 715_827_883;
    let x = a.wrapping_add(1 << 28);
    let x2 = mul(x, x);
    let x3 = mul(x2, x);
    let x4 = mul(x2, x2);
    let x4_over_4 = rounding_divide_by_pot(x4, 2);
    let sum = rounding_divide_by_pot(
        mul(x4_over_4.wrapping_add(x3), ONE_THIRD).wrapping_add(x2),
        1,
    );
    CONSTANT_TERM.wrapping_add(mul(CONSTANT_TERM, x.wrapping_add(sum)))
}

/// gemmlowp's `exp_on_negative_values` of `a` in Q5.26 (`a` ≤ 0), in Q0.31.
fn exp_on_negative_values(a: i32) -> i32 {
    const FRACTIONAL_BITS: i32 = 31 - DIFF_INTEGER_BITS;
    const ONE_QUARTER: i32 = 1 << (FRACTIONAL_BITS - 2);
    let mask = ONE_QUARTER - 1;
    let a_mod_quarter_minus_one_quarter = (a & mask).wrapping_sub(ONE_QUARTER);
    let mut result = exp_on_interval_between_negative_one_quarter_and_0_excl(
        saturating_shift_left(a_mod_quarter_minus_one_quarter, DIFF_INTEGER_BITS),
    );
    let remainder = a_mod_quarter_minus_one_quarter.wrapping_sub(a);
    // exp(−2^k) for k = −2 ..= 4, in Q0.31, applied for each bit of the remainder.
    const BARREL: [(i32, i32); 7] = [
        (-2, 1_672_461_947),
        (-1, 1_302_514_674),
        (0, 790_015_084),
        (1, 290_630_308),
        (2, 39_332_535),
        (3, 720_401),
        (4, 242),
    ];
    for (exponent, multiplier) in BARREL {
        if remainder & (1 << (FRACTIONAL_BITS + exponent)) != 0 {
            result = mul(result, multiplier);
        }
    }
    if a == 0 {
        i32::MAX
    } else {
        result
    }
}

/// gemmlowp's `one_over_one_plus_x_for_x_in_0_1` (Q0.31 in and out).
fn one_over_one_plus_x_for_x_in_0_1(a: i32) -> i32 {
    // RoundingHalfSum(a, One).
    let sum = i64::from(a) + i64::from(i32::MAX);
    let half_denominator = ((sum + if sum >= 0 { 1 } else { -1 }) / 2) as i32;
    // Q2.29 constants 48/17 and −32/17; Newton–Raphson in Q2.29.
    const C48_OVER_17: i32 = 1_515_870_810;
    const NEG_C32_OVER_17: i32 = -1_010_580_540;
    const ONE_Q2: i32 = 1 << 29;
    let mut x = C48_OVER_17.wrapping_add(mul(half_denominator, NEG_C32_OVER_17));
    for _ in 0..3 {
        let half_denominator_times_x = mul(half_denominator, x);
        let one_minus = ONE_Q2.wrapping_sub(half_denominator_times_x);
        x = x.wrapping_add(saturating_shift_left(mul(x, one_minus), 2));
    }
    saturating_shift_left(x, 1)
}

/// The input differences from the row's maximum, scaled to Q5.26, or `None` if below
/// [`SoftmaxParams::diff_min`].
#[inline(always)]
fn scaled_diff(p: &SoftmaxParams, x: i8, max: i8) -> Option<i32> {
    let diff = i32::from(x) - i32::from(max);
    (diff >= p.diff_min).then(|| {
        mul(
            diff.wrapping_shl(p.left_shift.clamp(0, 31) as u32),
            p.multiplier,
        )
    })
}

/// The int8 softmax of `input` into `output` (as many values as the shorter has),
/// quantized with scale 1/256 and zero point −128, bit for bit as TFLite's reference
/// kernel.
pub fn softmax_i8(p: &SoftmaxParams, input: &[i8], output: &mut [i8]) {
    let Some(&max) = input.iter().max() else {
        return;
    };
    let mut sum_of_exps: i32 = 0;
    for &x in input {
        if let Some(d) = scaled_diff(p, x, max) {
            let e = exp_on_negative_values(d);
            sum_of_exps =
                sum_of_exps.wrapping_add(rounding_divide_by_pot(e, ACCUMULATION_INTEGER_BITS));
        }
    }
    // GetReciprocal: the sum in [1, 2) as Q0.31 minus one, and the bits above 1.
    let headroom_plus_one = (sum_of_exps as u32).leading_zeros() as i32;
    let num_bits_over_unit = ACCUMULATION_INTEGER_BITS - headroom_plus_one;
    let shifted_sum_minus_one = ((sum_of_exps as u32)
        .wrapping_shl(headroom_plus_one as u32)
        .wrapping_sub(1 << 31)) as i32;
    let shifted_scale = one_over_one_plus_x_for_x_in_0_1(shifted_sum_minus_one);
    for (o, &x) in output.iter_mut().zip(input) {
        *o = match scaled_diff(p, x, max) {
            Some(d) => {
                let e = exp_on_negative_values(d);
                let unsat =
                    rounding_divide_by_pot(mul(shifted_scale, e), num_bits_over_unit + 31 - 8);
                (unsat - 128).clamp(-128, 127) as i8
            }
            None => -128,
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_of_zero_is_one_and_exp_is_within_a_millionth() {
        assert_eq!(exp_on_negative_values(0), i32::MAX);
        // exp(−k/16) for k up to 200 (exp(−12.5)), in Q0.31, from Q5.26 inputs: within
        // 10⁻⁶ of f64's, and never increasing.
        let mut last = i32::MAX;
        for k in 1..200 {
            let e = exp_on_negative_values(-k * (1 << 22));
            let want = (-(k as f64) / 16.0).exp() * 2f64.powi(31);
            assert!((f64::from(e) - want).abs() < 2147.0, "{k}: {e} vs {want}");
            assert!(e <= last, "{k}");
            last = e;
        }
        // 1 / (1 + x) for x in [0, 1), in Q0.31.
        for k in 0..64 {
            let x = k << 25;
            let r = one_over_one_plus_x_for_x_in_0_1(x);
            let want = 2f64.powi(31) / (1.0 + f64::from(x) / 2f64.powi(31));
            assert!((f64::from(r) - want).abs() < 2147.0, "{k}: {r} vs {want}");
        }
    }

    #[test]
    fn equal_inputs_share_the_probability_and_a_dominant_one_takes_it() {
        // beta · scale = 1/16: multiplier 2^30, left shift 23 (2^30 · 2^23 / 2^31 = 2^22 =
        // 2^26 / 16).
        let p = SoftmaxParams {
            multiplier: 1 << 30,
            left_shift: 23,
            diff_min: -1000,
        };
        let mut out = [0i8; 4];
        softmax_i8(&p, &[5, 5, 5, 5], &mut out);
        // 1/4 = 64/256 → 64 − 128.
        assert_eq!(out, [-64; 4]);
        softmax_i8(&p, &[127, -128, -128, -128], &mut out);
        assert_eq!(out, [127, -128, -128, -128]);
    }
}

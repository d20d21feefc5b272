//! Fixed-point requantization, bit-exact with TFLite's `MultiplyByQuantizedMultiplier`
//! (gemmlowp's `SaturatingRoundingDoublingHighMul` followed by `RoundingDivideByPOT`)
//! and CMSIS-NN's `arm_nn_requantize`.
//!
//! A real multiplier `m` in (0, 1) is stored as a Q31 `multiplier` in `[2^30, 2^31)` and a
//! power-of-two `shift` so that `m ≈ multiplier · 2^(shift − 31)`.

/// `x · m` in 64 bits, for `x` and `m` at most 2^31 (magnitudes of `i32`s): one long
/// multiply where the core has one (`UMULL`); on the Cortex-M0, which has none and where LLVM
/// calls `__aeabi_lmul` (some 40 instructions a call, 10 % of ds-cnn's instructions there),
/// [`wide_product_by_halves`].
#[inline(always)]
pub fn wide_product(x: u32, m: u32) -> u64 {
    if cfg!(any(infer_core_long_multiply, not(target_arch = "arm"))) {
        u64::from(x) * u64::from(m)
    } else {
        wide_product_by_halves(x, m)
    }
}

/// [`wide_product`] from four 16 × 16-bit products (`MULS`), for `x` and `m` at most 2^31:
/// `x = a·2^16 + b`, `m = c·2^16 + d`, `x·m = a·c·2^32 + (a·d + b·c)·2^16 + b·d`, where
/// `a, c ≤ 2^15`, so `a·d + b·c < 2^32` and no partial sum overflows.
#[inline(always)]
pub fn wide_product_by_halves(x: u32, m: u32) -> u64 {
    let (a, b) = (x >> 16, x & 0xFFFF);
    let (c, d) = (m >> 16, m & 0xFFFF);
    let mid = a.wrapping_mul(d).wrapping_add(b.wrapping_mul(c));
    let (low, carry) = (mid << 16).overflowing_add(b.wrapping_mul(d));
    let high = a
        .wrapping_mul(c)
        .wrapping_add(mid >> 16)
        .wrapping_add(u32::from(carry));
    (u64::from(high) << 32) | u64::from(low)
}

/// `round(a · b / 2^31)` with TFLite's rounding, saturating the single overflow case
/// `i32::MIN · i32::MIN`.
#[inline(always)]
pub fn saturating_rounding_doubling_high_mul(a: i32, b: i32) -> i32 {
    if a == i32::MIN && b == i32::MIN {
        return i32::MAX;
    }
    let ab = i64::from(a) * i64::from(b);
    let nudge: i64 = if ab >= 0 { 1 << 30 } else { 1 - (1 << 30) };
    // Truncating division, as in C; cannot overflow i32 outside the case handled above.
    ((ab + nudge) / (1i64 << 31)) as i32
}

/// `x / 2^exponent` rounded to nearest, ties away from zero (gemmlowp `RoundingDivideByPOT`).
/// `exponent` is clamped to `0..=31`.
#[inline(always)]
pub fn rounding_divide_by_pot(x: i32, exponent: i32) -> i32 {
    let exponent = exponent.clamp(0, 31) as u32;
    let mask = ((1i64 << exponent) - 1) as i32;
    let remainder = x & mask;
    let threshold = (mask >> 1) + i32::from(x < 0);
    (x >> exponent) + i32::from(remainder > threshold)
}

/// `x · multiplier · 2^(shift − 31)`, rounded as TFLite does.
///
/// `shift` > 0 shifts left before the multiplication, `shift` ≤ 0 rounds right after it.
#[inline(always)]
pub fn multiply_by_quantized_multiplier(x: i32, multiplier: i32, shift: i32) -> i32 {
    let left = shift.clamp(0, 31) as u32;
    let right = (-shift).clamp(0, 31);
    rounding_divide_by_pot(
        saturating_rounding_doubling_high_mul(x.wrapping_shl(left), multiplier),
        right,
    )
}

/// Requantizes an int32 accumulator to int8: scale, add the output zero point, clamp. With
/// a multiplier ≥ 0 and no left shift (the common case) the accumulator is scaled by
/// `scale_right`, the same value by a shorter way (ResNet-8's convs without a ReLU, before
/// its adds, took 4 % fewer instructions in all on the Cortex-M4F than through
/// [`multiply_by_quantized_multiplier`]).
#[inline(always)]
pub fn requantize(
    acc: i32,
    multiplier: i32,
    shift: i32,
    output_zero_point: i32,
    min: i32,
    max: i32,
) -> i8 {
    let scaled = scale(acc, multiplier, shift);
    // `max(min).min(max)`, not `clamp(min, max)`: the same for `min <= max`, and no panic
    // path (`clamp` asserts `min <= max`, which the optimiser cannot always prove).
    scaled.saturating_add(output_zero_point).max(min).min(max) as i8
}

/// [`multiply_by_quantized_multiplier`]'s value: with a multiplier ≥ 0 and no left shift
/// (the common case) by `scale_right`, else by the general way.
#[inline(always)]
pub fn scale(x: i32, multiplier: i32, shift: i32) -> i32 {
    if multiplier >= 0 && shift <= 0 {
        scale_right(x, multiplier, shift)
    } else {
        multiply_by_quantized_multiplier(x, multiplier, shift)
    }
}

/// [`multiply_by_quantized_multiplier`] of an accumulator `acc` > 0 with `multiplier` ≥ 0
/// and `shift` ≤ 0: the same value (the product is then non-negative, so the doubling high
/// multiply is `(acc · multiplier + 2^30) >> 31` and the rounding division adds half and
/// shifts), in unsigned arithmetic without the saturation and sign cases. Other arguments
/// give unspecified values, never a panic.
#[inline(always)]
pub(crate) fn scale_positive(acc: i32, multiplier: i32, shift: i32) -> i32 {
    let x = ((wide_product(acc as u32, multiplier as u32) + (1 << 30)) >> 31) as u32;
    let r = (-shift).clamp(0, 31) as u32;
    ((x.wrapping_add((1u32 << r) >> 1)) >> r) as i32
}

/// [`multiply_by_quantized_multiplier`] of any accumulator `acc` with `multiplier` ≥ 0
/// and `shift` ≤ 0: the same value, from the magnitude in unsigned arithmetic. The
/// doubling high multiply of a negative product `−|acc|·m` is `−((|acc|·m + 2^30 − 1) >> 31)`
/// (its nudge is `1 − 2^30` and C's division truncates), and the rounding division of a
/// value ≤ 0 is minus that of its magnitude (ties away from zero), so both signs take
/// [`scale_positive`]'s steps with a nudge one smaller for the negative. Other arguments
/// give unspecified values, never a panic.
#[inline(always)]
pub(crate) fn scale_right(acc: i32, multiplier: i32, shift: i32) -> i32 {
    let negative = acc < 0;
    let product = wide_product(acc.unsigned_abs(), multiplier as u32);
    let high = ((product + (1 << 30) - u64::from(negative)) >> 31) as u32;
    let r = (-shift).clamp(0, 31) as u32;
    let scaled = (high.wrapping_add((1u32 << r) >> 1) >> r) as i32;
    if negative {
        scaled.wrapping_neg()
    } else {
        scaled
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The gemmlowp formulas, transcribed literally with i128 arithmetic.
    fn reference(x: i32, multiplier: i32, shift: i32) -> i32 {
        let left = if shift > 0 { shift } else { 0 };
        let right = if shift > 0 { 0 } else { -shift };
        let a = (i128::from(x) << left) as i32; // C: x * (1 << left), two's complement
        let b = multiplier;
        let high = if a == i32::MIN && b == i32::MIN {
            i32::MAX
        } else {
            let ab = i128::from(a) * i128::from(b);
            let nudge = if ab >= 0 {
                1i128 << 30
            } else {
                1 - (1i128 << 30)
            };
            let q = (ab + nudge) / (1i128 << 31);
            q as i32
        };
        let mask = (1i128 << right) - 1;
        let remainder = i128::from(high) & mask;
        let threshold = (mask >> 1) + i128::from(high < 0);
        ((i128::from(high) >> right) + i128::from(remainder > threshold)) as i32
    }

    /// The product by halves equals the long multiply, on edge and random magnitudes.
    #[test]
    fn the_product_by_halves_is_the_long_product() {
        let mut rng = crate::kernels::TestRng(0xB1A5);
        let edges = [
            0,
            1,
            0xFFFF,
            0x1_0000,
            0x7FFF_FFFF,
            0x8000_0000,
            0x4000_0000,
        ];
        for &x in &edges {
            for &m in &edges {
                assert_eq!(wide_product_by_halves(x, m), u64::from(x) * u64::from(m));
            }
        }
        for _ in 0..100_000 {
            let x = (rng.next_u64() as u32) >> rng.below(32);
            let m = (rng.next_u64() as u32) >> (1 + rng.below(31));
            let x = x.min(1 << 31);
            assert_eq!(
                wide_product_by_halves(x, m),
                u64::from(x) * u64::from(m),
                "{x} {m}"
            );
        }
    }

    #[test]
    fn hand_computed_cases() {
        let half = 1 << 30; // 0.5 in Q31
        assert_eq!(multiply_by_quantized_multiplier(3, half, 0), 2); // 1.5 -> 2
        assert_eq!(multiply_by_quantized_multiplier(-3, half, 0), -1); // -1.5 -> -1 (gemmlowp nudge)
        assert_eq!(multiply_by_quantized_multiplier(100, half, -1), 25);
        assert_eq!(multiply_by_quantized_multiplier(-100, half, -2), -13); // -12.5 -> -13
        assert_eq!(multiply_by_quantized_multiplier(7, half, 1), 7);
        assert_eq!(rounding_divide_by_pot(5, 1), 3);
        assert_eq!(rounding_divide_by_pot(-5, 1), -3);
        assert_eq!(rounding_divide_by_pot(4, 1), 2);
        assert_eq!(
            saturating_rounding_doubling_high_mul(i32::MIN, i32::MIN),
            i32::MAX
        );
    }

    #[test]
    fn matches_reference_on_pseudo_random_inputs() {
        let mut state = 0x1234_5678_9abc_def0u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        // Miri interprets some 10,000 times slower: a sample there.
        for _ in 0..if cfg!(miri) { 2_000 } else { 200_000 } {
            let r = next();
            let x = (r as i32) >> (r >> 59); // spread magnitudes
            let multiplier = (1 << 30) + ((next() as u32) >> 2) as i32; // [2^30, 2^31)
            let shift = (next() % 40) as i32 - 31; // [-31, 8]
            let shift = if shift > 0 && x.unsigned_abs() > (1 << 20) {
                0
            } else {
                shift
            };
            assert_eq!(
                multiply_by_quantized_multiplier(x, multiplier, shift),
                reference(x, multiplier, shift),
                "x={x} m={multiplier} s={shift}"
            );
        }
    }

    #[test]
    fn the_positive_and_right_scalings_equal_the_general_requantization() {
        let mut rng = crate::kernels::TestRng(0x9E37_79B9_7F4A_7C15);
        let mut next = || rng.next_u64();
        for i in 0..if cfg!(miri) { 2_000 } else { 200_000 } {
            let r = next();
            let acc = (((r as u32) >> 1) >> (r >> 59)).max(1) as i32;
            let multiplier = if i % 5 == 0 {
                (next() as u32 >> 1) as i32
            } else {
                (1 << 30) + ((next() as u32) >> 2) as i32
            };
            let shift = -((next() % 33) as i32);
            let zp = (next() % 256) as i32 - 128;
            let min = if i % 2 == 0 { -128 } else { zp };
            let general = multiply_by_quantized_multiplier(acc, multiplier, shift)
                .saturating_add(zp)
                .max(min)
                .min(127) as i8;
            assert_eq!(
                requantize(acc, multiplier, shift, zp, min, 127),
                general,
                "acc={acc} m={multiplier} s={shift}"
            );
            assert_eq!(
                scale_positive(acc, multiplier, shift),
                multiply_by_quantized_multiplier(acc, multiplier, shift),
                "acc={acc} m={multiplier} s={shift}"
            );
            // Both signs, the extremes too.
            for acc in [
                acc,
                -acc,
                i32::MIN + (acc & 7),
                i32::MAX - (acc & 7),
                acc & 3,
            ] {
                assert_eq!(
                    scale_right(acc, multiplier, shift),
                    multiply_by_quantized_multiplier(acc, multiplier, shift),
                    "acc={acc} m={multiplier} s={shift}"
                );
            }
        }
    }

    #[test]
    fn the_right_scaling_rounds_ties_as_tflite() {
        // Multipliers of few bits: products and shifted values land exactly on halves.
        for multiplier in [0, 1 << 30, 3 << 29, (1 << 30) + 1, i32::MAX] {
            for acc in (-600..=600).chain([i32::MIN, i32::MIN + 1, i32::MAX]) {
                for shift in -9..=0 {
                    assert_eq!(
                        scale_right(acc, multiplier, shift),
                        reference(acc, multiplier, shift),
                        "acc={acc} m={multiplier} s={shift}"
                    );
                }
            }
        }
    }

    #[test]
    fn requantize_clamps_to_activation_range() {
        assert_eq!(requantize(1_000_000, 1 << 30, 0, -128, -128, 127), 127);
        assert_eq!(requantize(-1_000_000, 1 << 30, 0, -128, -128, 127), -128);
        assert_eq!(requantize(10, 1 << 30, 0, 0, -128, 127), 5);
    }
}

//! int8 elementwise addition (TFLite's ADD of two tensors of one shape), exactly as
//! TensorFlow Lite Micro's reference kernel computes it (`reference_integer_ops::Add`):
//!
//! ```text
//! a' = MultiplyByQuantizedMultiplierSmallerThanOneExp((a − a_zp) · 2^left_shift, m_a, s_a)
//! b' = MultiplyByQuantizedMultiplierSmallerThanOneExp((b − b_zp) · 2^left_shift, m_b, s_b)
//! y  = clamp(MultiplyByQuantizedMultiplierSmallerThanOneExp(a' + b', m_y, s_y) + y_zp, min, max)
//! ```
//!
//! (`left_shift` 20, every shift ≤ 0: then `MultiplyByQuantizedMultiplierSmallerThanOneExp`
//! is [`multiply_by_quantized_multiplier`]). [`add_reference`] is that, value by value;
//! [`add`] is the fast path, tested against it bit for bit on random data: an input takes
//! only 256 values, so each input's scaled values are tabulated once per call (512 words of
//! scratch) and every output costs two table loads, an addition and one requantization
//! instead of three.

use crate::requant::{multiply_by_quantized_multiplier, requantize, scale};

/// Words of scratch [`add`] takes for its tables: 256 per input.
pub const ADD_SCRATCH_WORDS: usize = 512;

/// The requantization of an addition (TFLite's `ArithmeticParams` for int8 ADD).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AddParams {
    /// Minus each input's zero point.
    pub offsets: [i32; 2],
    /// Each input's Q31 multiplier (≥ 0).
    pub multipliers: [i32; 2],
    /// Each input's shift (≤ 0: a right shift).
    pub shifts: [i32; 2],
    /// The left shift both inputs take first (TFLite's 20).
    pub left_shift: u32,
    /// The sum's Q31 multiplier (≥ 0).
    pub output_multiplier: i32,
    /// The sum's shift (≤ 0).
    pub output_shift: i32,
    /// The output's zero point.
    pub output_zero_point: i32,
    /// Lowest output value (the fused activation's).
    pub min: i8,
    /// Highest output value.
    pub max: i8,
}

impl AddParams {
    /// Input `k`'s (0 or 1) value `x` scaled to the common fixed-point scale, by
    /// `requant::scale` (`scale_right` for the usual multipliers ≥ 0 and shifts ≤ 0: the
    /// tables took some 76 instructions a value on the Cortex-M4F through the general
    /// way), or with `REFERENCE` literally by [`multiply_by_quantized_multiplier`].
    #[inline(always)]
    fn scaled<const REFERENCE: bool>(&self, k: usize, x: i8) -> i32 {
        let (offset, multiplier, shift) = (self.offsets[k], self.multipliers[k], self.shifts[k]);
        let shifted = offset
            .wrapping_add(i32::from(x))
            .wrapping_shl(self.left_shift);
        if REFERENCE {
            multiply_by_quantized_multiplier(shifted, multiplier, shift)
        } else {
            scale(shifted, multiplier, shift)
        }
    }

    /// Whether input `k`'s scaled values can be stepped ([`AddParams::tabulate`]): the usual
    /// parameters, a multiplier ≥ 0, a shift ≤ 0, a left shift up to 22 and the offset of an
    /// int8 zero point. (Others are computed value by value, without tables.)
    fn steppable(&self, k: usize) -> bool {
        self.multipliers[k] >= 0
            && self.shifts[k] <= 0
            && self.left_shift <= 22
            && (-128..=128).contains(&self.offsets[k])
    }

    /// Whether an add of these parameters, its tables made ([`AddTables::new`]), takes the
    /// assembly of [`AddTables::add_into`] on every core that has one: both inputs
    /// steppable, an output requantization by a right shift and a zero point in int8.
    pub fn tabled(&self) -> bool {
        self.steppable(0)
            && self.steppable(1)
            && (-31..=-1).contains(&self.output_shift)
            && (-128..=127).contains(&self.output_zero_point)
    }

    /// Input `k`'s scaled values into `table`, indexed by the value's byte (0..=127, then
    /// −128..=−1), for parameters that are [`AddParams::steppable`] (others give unspecified
    /// values, never a panic): the product `(x + offset) · 2^left
    /// · m` grows by `m · 2^left` from one value to the next, the doubling high multiply is
    /// `(product + 2^30) >> 31` (no saturation: the product is below 2^61) and the rounding
    /// division, ties away from zero, `(h − [h < 0] + 2^(e−1)) >> e` (some 12 instructions a
    /// value on the Cortex-M4F, 47 through [`crate::requant::scale`]).
    fn tabulate(&self, k: usize, table: &mut [u32]) {
        let (offset, multiplier, shift) = (self.offsets[k], self.multipliers[k], self.shifts[k]);
        let e = (-shift).min(31) as u32;
        let nudge = (1i32 << e) >> 1;
        let step = i64::from(multiplier) << self.left_shift;
        let (positive, negative) = table.split_at_mut(table.len().min(128));
        for (first, entries) in [(0, positive), (-128, negative)] {
            let mut product = i64::from(offset + first) * step + (1 << 30);
            for entry in entries.iter_mut().take(128) {
                let h = (product >> 31) as i32;
                let rounded = if e == 0 {
                    h
                } else {
                    (h + (h >> 31) + nudge) >> e
                };
                *entry = rounded as u32;
                product += step;
            }
        }
    }

    /// The output of the sum of two scaled values.
    #[inline(always)]
    fn output(&self, sum: i32) -> i8 {
        requantize(
            sum,
            self.output_multiplier,
            self.output_shift,
            self.output_zero_point,
            i32::from(self.min),
            i32::from(self.max),
        )
    }
}

/// The naive reference: `output[i]` from `a[i]` and `b[i]`, as TFLite Micro's reference
/// kernel computes it. Short slices compute less, never panic.
pub fn add_reference(p: &AddParams, a: &[i8], b: &[i8], output: &mut [i8]) {
    for ((y, &x0), &x1) in output.iter_mut().zip(a).zip(b) {
        let sum = p
            .scaled::<true>(0, x0)
            .wrapping_add(p.scaled::<true>(1, x1));
        *y = p.output(sum);
    }
}

/// An addition ready to run value by value: each input's scaled values tabulated in
/// words of working memory where there are [`ADD_SCRATCH_WORDS`], else computed as
/// [`add_reference`] does. What [`add`] and a stage computing an add in place
/// (`stack::stages`) take.
#[derive(Debug)]
pub struct AddTables<'w> {
    params: AddParams,
    /// Input 0's and input 1's scaled values, indexed by the value's byte.
    tables: Option<(&'w [u32], &'w [u32])>,
}

impl<'w> AddTables<'w> {
    /// The tables of `p` in `words` (its first [`ADD_SCRATCH_WORDS`]; with fewer, or for
    /// parameters that are not `AddParams::steppable`, none).
    pub fn new(p: &AddParams, words: &'w mut [u32]) -> Self {
        let tables = words
            .get_mut(..ADD_SCRATCH_WORDS)
            .filter(|_| p.steppable(0) && p.steppable(1))
            .map(|w| w.split_at_mut(ADD_SCRATCH_WORDS / 2))
            .map(|(ta, tb)| {
                p.tabulate(0, ta);
                p.tabulate(1, tb);
                (&*ta, &*tb)
            });
        Self { params: *p, tables }
    }

    /// Adds each value of `values` (input 0) to the one of `other` (input 1) at its place,
    /// in place: [`AddTables::one`] of each pair, over the shorter of the two.
    ///
    /// With the tables and a right-shift output requantization, a loop of assembly: on an
    /// MVE core four values in fourteen instructions (the values and the other operand's
    /// bytes loaded as table indices, two gather loads from the tables, the requantization
    /// as [`super::mve::requantize_right`] computes it, the clamp, a narrowing store); on
    /// the Cortex-M3 and DSP cores one value in 32 (`dsp::add_into`);
    /// elsewhere [`AddTables::add_into_portable`].
    ///
    /// With `TABLED` (a caller that knows the parameters [`AddParams::tabled`] and their
    /// tables made), the cores with that assembly link nothing else: where it cannot run,
    /// nothing is computed. (The portable loop beside it took some 870 B of code on the
    /// Cortex-M4.)
    #[inline(always)]
    pub fn add_into<const TABLED: bool>(&self, values: &[i8], other: &mut [i8]) {
        #[cfg(infer_core_long_multiply)]
        if let Some((ta, tb)) = self.tables {
            #[cfg(infer_core_mve)]
            let done = super::mve::add_into(ta, tb, &self.params, values, other);
            #[cfg(not(infer_core_mve))]
            let done = super::dsp::add_into(ta, tb, &self.params, values, other);
            if done {
                return;
            }
        }
        if TABLED && cfg!(infer_core_long_multiply) {
            return;
        }
        self.add_into_portable(values, other);
    }

    /// [`AddTables::add_into`] value by value (the reference its assembly is tested
    /// against, and the code elsewhere).
    pub fn add_into_portable(&self, values: &[i8], other: &mut [i8]) {
        for (o, &v) in other.iter_mut().zip(values) {
            *o = self.one(v, *o);
        }
    }

    /// The sum of `x0` (input 0) and `x1` (input 1): [`add_reference`]'s value.
    #[inline(always)]
    pub fn one(&self, x0: i8, x1: i8) -> i8 {
        let p = &self.params;
        // (The values computed written once: in each of the two ways there was, they took
        // some 200 B of code on the Cortex-M4.)
        let looked_up = self.tables.and_then(|(ta, tb)| {
            let s0 = ta.get(usize::from(x0 as u8))?;
            Some((*s0 as i32).wrapping_add(*tb.get(usize::from(x1 as u8))? as i32))
        });
        let scaled = looked_up.unwrap_or_else(|| {
            p.scaled::<false>(0, x0)
                .wrapping_add(p.scaled::<false>(1, x1))
        });
        p.output(scaled)
    }
}

/// [`add_reference`]'s results, each input's scaled values tabulated in `words` (at least
/// [`ADD_SCRATCH_WORDS`]; with fewer, it computes as the reference does). Short slices
/// compute less, never panic.
pub fn add(p: &AddParams, a: &[i8], b: &[i8], words: &mut [u32], output: &mut [i8]) {
    let tables = AddTables::new(p, words);
    for ((y, &x0), &x1) in output.iter_mut().zip(a).zip(b) {
        *y = tables.one(x0, x1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::TestRng;
    use std::vec;
    use std::vec::Vec;

    fn random_params(rng: &mut TestRng) -> AddParams {
        let multiplier = |rng: &mut TestRng| (1i32 << 30) + rng.below(1 << 30) as i32;
        let min = rng.i8();
        AddParams {
            offsets: [128 - rng.below(256) as i32, 128 - rng.below(256) as i32],
            multipliers: [multiplier(rng), multiplier(rng)],
            shifts: [-(rng.below(4) as i32), -(rng.below(4) as i32)],
            left_shift: 20,
            output_multiplier: multiplier(rng),
            output_shift: -(rng.below(12) as i32) - 10,
            output_zero_point: rng.below(256) as i32 - 128,
            min,
            max: min.saturating_add(rng.below(256) as i8 & 0x7f),
        }
    }

    #[test]
    fn fast_path_matches_the_reference_on_random_data() {
        let mut rng = TestRng(0xadd);
        for case in 0..200 {
            let mut p = random_params(&mut rng);
            // Now and then a left shift: no tables (not steppable), the same values.
            if case % 10 == 9 {
                p.shifts[case % 2] = 1;
            }
            let n = rng.below(300) as usize;
            let a: Vec<i8> = (0..n).map(|_| rng.i8()).collect();
            let b: Vec<i8> = (0..n).map(|_| rng.i8()).collect();
            let mut want = vec![0i8; n];
            add_reference(&p, &a, &b, &mut want);
            let mut got = vec![0i8; n];
            let mut words = vec![0u32; ADD_SCRATCH_WORDS];
            add(&p, &a, &b, &mut words, &mut got);
            assert_eq!(got, want, "case {case}: {p:?}");
            // Too little scratch: the reference's way, the same values.
            let mut short = vec![0i8; n];
            add(&p, &a, &b, &mut words[..10], &mut short);
            assert_eq!(short, want, "case {case}");
        }
        // Every pair of values, extreme parameters.
        let all: Vec<i8> = (-128..=127).collect();
        let a: Vec<i8> = all.iter().flat_map(|&x| vec![x; 256]).collect();
        let b: Vec<i8> = all.repeat(256);
        for p in (0..20).map(|_| random_params(&mut rng)) {
            let (mut want, mut got) = (vec![0i8; a.len()], vec![0i8; a.len()]);
            add_reference(&p, &a, &b, &mut want);
            add(&p, &a, &b, &mut [0u32; ADD_SCRATCH_WORDS], &mut got);
            assert_eq!(got, want, "{p:?}");
        }
    }

    /// Known values: equal scales, zero points 0, sum scale twice the input's: `y ≈ (a + b) / 2`.
    #[test]
    fn a_sum_rounds_as_tflite_does() {
        // TFLite's parameters for input scales 1, output scale 2, left shift 20: input
        // multipliers 0.5 (2^30, shift 0), output 2 / (2^20 · 2) = 2^−20 (2^30, shift −19).
        let p = AddParams {
            offsets: [0, 0],
            multipliers: [1 << 30, 1 << 30],
            shifts: [0, 0],
            left_shift: 20,
            output_multiplier: 1 << 30,
            output_shift: -19,
            output_zero_point: 0,
            min: -128,
            max: 127,
        };
        let mut out = [0i8; 5];
        add_reference(&p, &[1, 3, -3, 127, -128], &[2, 4, -4, 127, -128], &mut out);
        // (a + b) / 2 rounded half away from zero (a' = a · 2^19 exactly).
        assert_eq!(out, [2, 4, -4, 127, -128]);
        let mut relu = p;
        relu.min = 0;
        add_reference(&relu, &[-5], &[1], &mut out[..1]);
        assert_eq!(out[0], 0);
    }
}

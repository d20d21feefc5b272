//! int8 dot products for the generic conv and dense kernels, written with the packed
//! instructions of [`super::dsp`] (two multiply-accumulates per `SMLAD` on DSP cores, portable
//! Rust elsewhere).
//!
//! A patch is packed once per output pixel and reused by every filter: group `g` of four taps
//! `x0 x1 x2 x3` (offset already added, so each fits in 16 bits) becomes the two words
//! `(x0, x2)` and `(x1, x3)`, the order in which `SXTB16` and `SXTB16 ROR #8` unpack four int8
//! weights from one word. The `taps % 4` last taps follow as one word each.
//!
//! A *quad patch* holds the patches of four output pixels, interleaved so that one load
//! (`LDM` of four words) brings a group of two of them ([`super::dsp::quad_filters`]):
//! group `g` is words `8g..8g + 8`, each pixel's two words in turn; the `taps % 4` last
//! taps follow as four words each, one value per pixel. It takes `4 ·`
//! [`PatchWords::words`] words.

use super::dsp::{self, pack, smlad, sxtb16, sxtb16_ror8};
use super::mve;
#[cfg(test)]
use super::pairs::dot4_wide;

/// Whether a conv pixel of `taps` taps computes its filters four at a time, each patch load
/// shared by the four ([`dot_packed4`]), rather than two at a time ([`dot_packed2`]): where
/// `SMLAD` is emulated, and on MVE cores from [`MVE_MIN_TAPS`] taps on; not on DSP cores
/// otherwise, where four accumulators, patch words and weight pointers do not fit the
/// registers.
pub const fn four_filters(taps: usize) -> bool {
    (cfg!(infer_core_mve) && taps >= MVE_MIN_TAPS) || !cfg!(infer_core_dsp)
}

/// Taps from which a pixel's dot products run in the MVE loops of [`mve`]: below, the call
/// and the loop set-up cost more than the inline `SMLAD` loops.
pub const MVE_MIN_TAPS: usize = 32;

/// Sizes of a packed patch.
#[derive(Debug, Clone, Copy)]
pub struct PatchWords;

impl PatchWords {
    /// Words needed for `taps` values: two per full group of four, one per remaining tap.
    pub const fn words(taps: usize) -> usize {
        taps / 4 * 2 + taps % 4
    }
}

/// Packs `taps` values, `value(tap)` each (in `-32768..=32767`), into `patch` as described in
/// the module docs. Words past `patch` are dropped.
#[inline(always)]
pub fn pack_patch(patch: &mut [u32], taps: usize, mut value: impl FnMut(usize) -> i32) {
    let groups = taps / 4;
    let (grouped, tail) = patch.split_at_mut((groups * 2).min(patch.len()));
    for (g, words) in grouped.chunks_exact_mut(2).enumerate() {
        let t = g * 4;
        words[0] = pack(value(t), value(t + 2));
        words[1] = pack(value(t + 1), value(t + 3));
    }
    for (i, word) in tail.iter_mut().take(taps % 4).enumerate() {
        *word = value(groups * 4 + i) as u32;
    }
}

/// `Σ x[t] · w[t]` over a patch packed by [`pack_patch`] and `taps` int8 weights (as bytes).
/// Stops at the shorter of the two.
#[inline(always)]
pub fn dot_packed(patch: &[u32], weights: &[u8]) -> i32 {
    let groups = weights.len() / 4;
    let (grouped, tail) = patch.split_at(patch.len().min(groups * 2));
    let mut acc = 0i32;
    for (words, w) in grouped.chunks_exact(2).zip(weights.chunks_exact(4)) {
        let w = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        acc = smlad(sxtb16(w), words[0], acc);
        acc = smlad(sxtb16_ror8(w), words[1], acc);
    }
    for (&x, &w) in tail.iter().zip(weights.get(groups * 4..).unwrap_or(&[])) {
        acc = acc.wrapping_add((x as i32).wrapping_mul(i32::from(w as i8)));
    }
    acc
}

/// [`dot_packed`] of one patch with two filters at once, sharing the patch loads: on an MVE
/// core every group of four taps in [`mve::dot2_groups`] (seven instructions per 16
/// multiply-accumulates) from [`MVE_MIN_TAPS`] taps on; on a DSP core eight taps at a time
/// in [`dsp::dot2_octets`] (24 instructions per 16 multiply-accumulates); then the rest.
#[inline(always)]
pub fn dot_packed2(patch: &[u32], w0: &[u8], w1: &[u8]) -> (i32, i32) {
    let groups = w0.len().min(w1.len()) / 4;
    let (grouped, tail) = patch.split_at(patch.len().min(groups * 2));
    let (mut acc0, mut acc1) = (0i32, 0i32);
    let (mut rest, mut rest0, mut rest1) = (grouped, w0, w1);
    if cfg!(infer_core_mve) && 2 * grouped.len() >= MVE_MIN_TAPS {
        [acc0, acc1] = mve::dot2_groups(grouped, w0, w1, grouped.len() / 2, [0, 0]);
        rest = &[];
    } else if cfg!(any(infer_core_dsp, test)) && grouped.len() >= 16 {
        // The assembly pays a call; it wins from four octets on, on DSP cores (elsewhere
        // the inline loop below is faster: the Cortex-M3 ran the tutorial-full model 25 %
        // slower through the out-of-line portable loop). The unit tests take it too, to
        // test the split.
        let octets = grouped.len() / 4;
        [acc0, acc1] = dsp::dot2_octets(grouped, w0, w1, octets, [0, 0]);
        let done = 8 * octets;
        rest = grouped.get(done / 2..).unwrap_or_default();
        rest0 = w0.get(done..).unwrap_or_default();
        rest1 = w1.get(done..).unwrap_or_default();
    }
    for ((words, a), b) in rest
        .chunks_exact(2)
        .zip(rest0.chunks_exact(4))
        .zip(rest1.chunks_exact(4))
    {
        let (p0, p1) = (words[0], words[1]);
        let a = u32::from_le_bytes([a[0], a[1], a[2], a[3]]);
        let b = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        acc0 = smlad(sxtb16(a), p0, acc0);
        acc1 = smlad(sxtb16(b), p0, acc1);
        acc0 = smlad(sxtb16_ror8(a), p1, acc0);
        acc1 = smlad(sxtb16_ror8(b), p1, acc1);
    }
    let rest0 = w0.get(groups * 4..).unwrap_or(&[]);
    let rest1 = w1.get(groups * 4..).unwrap_or(&[]);
    for ((&x, &a), &b) in tail.iter().zip(rest0).zip(rest1) {
        acc0 = acc0.wrapping_add((x as i32).wrapping_mul(i32::from(a as i8)));
        acc1 = acc1.wrapping_add((x as i32).wrapping_mul(i32::from(b as i8)));
    }
    (acc0, acc1)
}

/// [`dot_packed`] of one patch with four filters at once, each patch word loaded once for
/// all four ([`mve::dot4_groups`]: on a DSP core 22 instructions per 16 multiply-accumulates,
/// against 24 for two [`dot_packed2`]; on an MVE core eleven per 32).
#[inline(always)]
pub fn dot_packed4(patch: &[u32], w: [&[u8]; 4]) -> [i32; 4] {
    let [w0, w1, w2, w3] = w;
    let groups = w0.len().min(w1.len()).min(w2.len()).min(w3.len()) / 4;
    let (grouped, tail) = patch.split_at(patch.len().min(groups * 2));
    let mut acc = mve::dot4_groups(grouped, w, grouped.len() / 2, [0; 4]);
    for (acc, w) in acc.iter_mut().zip([w0, w1, w2, w3]) {
        let rest = w.get(groups * 4..).unwrap_or(&[]);
        for (&x, &w) in tail.iter().zip(rest) {
            *acc = acc.wrapping_add((x as i32).wrapping_mul(i32::from(w as i8)));
        }
    }
    acc
}

/// `Σ (x[i] + offset) · w[i]` over int8 inputs and int8 weights (bytes), both unpacked four
/// at a time; the offset's share is `offset · Σ w`. Stops at the shorter of the two.
#[inline(always)]
pub fn dot_i8_offset(input: &[i8], offset: i32, weights: &[u8]) -> i32 {
    let mut acc = 0i32;
    let mut weight_sum = 0i32;
    let ones = pack(1, 1);
    let mut xs = input.chunks_exact(4);
    let mut ws = weights.chunks_exact(4);
    for (x, w) in (&mut xs).zip(&mut ws) {
        let x = u32::from_le_bytes([x[0] as u8, x[1] as u8, x[2] as u8, x[3] as u8]);
        let w = u32::from_le_bytes([w[0], w[1], w[2], w[3]]);
        let (w02, w13) = (sxtb16(w), sxtb16_ror8(w));
        acc = smlad(sxtb16(x), w02, acc);
        acc = smlad(sxtb16_ror8(x), w13, acc);
        weight_sum = smlad(w02, ones, weight_sum);
        weight_sum = smlad(w13, ones, weight_sum);
    }
    for (&x, &w) in xs.remainder().iter().zip(ws.remainder()) {
        let w = i32::from(w as i8);
        acc = acc.wrapping_add(i32::from(x).wrapping_mul(w));
        weight_sum = weight_sum.wrapping_add(w);
    }
    acc.wrapping_add(offset.wrapping_mul(weight_sum))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::TestRng;
    use std::vec::Vec;

    #[test]
    fn packed_and_offset_dots_equal_the_naive_sums() {
        let mut rng = TestRng(0xD07);
        for taps in 0..70 {
            let x: Vec<i8> = (0..taps).map(|_| rng.i8()).collect();
            let w: Vec<u8> = (0..taps).map(|_| rng.i8() as u8).collect();
            let offset = rng.below(256) as i32 - 127;
            let want: i32 = x
                .iter()
                .zip(&w)
                .map(|(&x, &w)| (i32::from(x) + offset) * i32::from(w as i8))
                .sum();
            let mut patch = std::vec![0u32; PatchWords::words(taps)];
            pack_patch(&mut patch, taps, |t| i32::from(x[t]) + offset);
            assert_eq!(dot_packed(&patch, &w), want, "packed, {taps} taps");
            let w2: Vec<u8> = w.iter().rev().copied().collect();
            let want2: i32 = x
                .iter()
                .zip(&w2)
                .map(|(&x, &w)| (i32::from(x) + offset) * i32::from(w as i8))
                .sum();
            assert_eq!(
                dot_packed2(&patch, &w, &w2),
                (want, want2),
                "paired, {taps} taps"
            );
            assert_eq!(dot_i8_offset(&x, offset, &w), want, "offset, {taps} taps");
            let w3: Vec<u8> = w.iter().map(|&v| v.wrapping_mul(3)).collect();
            let w4: Vec<u8> = w.iter().map(|&v| v ^ 0x5A).collect();
            let want4 = [
                want,
                want2,
                dot_packed(&patch, &w3),
                dot_packed(&patch, &w4),
            ];
            let rows = [&w[..], &w2, &w3, &w4];
            assert_eq!(
                dot_packed4(&patch, rows),
                want4,
                "four filters, {taps} taps"
            );
            let xs: Vec<i16> = x.iter().map(|&v| (i32::from(v) + offset) as i16).collect();
            assert_eq!(dot4_wide(&xs, rows), want4, "widened values, {taps} taps");
        }
        // Extremes: every product at its largest magnitude.
        let x = [-128i8; 37];
        let w = [0x80u8; 37];
        let mut patch = [0u32; 19];
        pack_patch(&mut patch, 37, |_| -255);
        assert_eq!(dot_packed(&patch, &w), 37 * 255 * 128);
        assert_eq!(dot_i8_offset(&x, -127, &w), 37 * 255 * 128);
    }
}

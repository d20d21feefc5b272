//! int8 average pooling (TFLite's AVERAGE_POOL_2D): any window, separate row and column
//! strides, valid or same padding, the output keeping the input's quantization.
//!
//! As TFLite's `reference_integer_ops::AveragePool` computes it: the window's values inside
//! the input are summed as they are (zero point included) and divided by their count
//! (padding is not counted), rounded half away from zero, then clamped to the fused
//! activation's bounds. [`average_pool_reference`] is that, loop for loop;
//! [`average_pool`] is the fast path, tested against it bit for bit on random geometries:
//! it sums all the channels of a position at once in a scratch row.

use super::window::Window;
use core::num::NonZeroUsize;

/// Shape of an average pooling over an NHWC input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AvgPoolGeometry {
    /// Input rows.
    pub in_h: usize,
    /// Input columns.
    pub in_w: usize,
    /// Channels.
    pub channels: usize,
    /// The window's size, strides and padding.
    pub window: Window,
}

impl AvgPoolGeometry {
    /// Output rows.
    pub const fn out_h(&self) -> usize {
        self.window.out_h(self.in_h)
    }
    /// Output columns.
    pub const fn out_w(&self) -> usize {
        self.window.out_w(self.in_w)
    }
}

/// `sum / count` rounded half away from zero, as TFLite's integer average pool rounds,
/// clamped to `min..=max`; `min` for a window without values (`count` 0, which TFLite's
/// padding never gives).
#[inline(always)]
fn rounded_mean(sum: i32, count: i32, min: i8, max: i8) -> i8 {
    let half = count / 2;
    let biased = if sum > 0 {
        sum.wrapping_add(half)
    } else {
        sum.wrapping_sub(half)
    };
    match biased.checked_div(count) {
        Some(mean) => mean.clamp(i32::from(min), i32::from(max).max(i32::from(min))) as i8,
        None => min,
    }
}

/// The naive reference: each output value is the rounded mean of its window's values
/// inside the input, clamped to `min..=max`. `input` is `in_h × in_w × channels`, `output`
/// `out_h × out_w × channels`. A window with no value inside the input (impossible with
/// TFLite's padding) gives `min`. Short slices compute less, never panic.
pub fn average_pool_reference(
    g: &AvgPoolGeometry,
    input: &[i8],
    min: i8,
    max: i8,
    output: &mut [i8],
) {
    let c = g.channels;
    for oy in 0..g.out_h() {
        for ox in 0..g.out_w() {
            for ch in 0..c {
                let (mut sum, mut count) = (0i32, 0i32);
                for ky in 0..g.window.k_h {
                    for kx in 0..g.window.k_w {
                        let Some((iy, ix)) = g.window.tap((oy, ox), (ky, kx), (g.in_h, g.in_w))
                        else {
                            continue;
                        };
                        let Some(&v) = input.get((iy * g.in_w + ix) * c + ch) else {
                            return;
                        };
                        sum += i32::from(v);
                        count += 1;
                    }
                }
                let Some(out) = output.get_mut((oy * g.out_w() + ox) * c + ch) else {
                    return;
                };
                *out = rounded_mean(sum, count, min, max);
            }
        }
    }
}

/// Words of scratch [`average_pool`] takes: one sum per channel.
pub const fn average_pool_scratch_words(g: &AvgPoolGeometry) -> usize {
    g.channels
}

/// The fast path, bit for bit [`average_pool_reference`]: per output position, the sums of
/// all its channels in `sums` (at least [`average_pool_scratch_words`] words), adding the
/// window's input pixels inside the input one pixel at a time. Short slices compute less,
/// never panic.
pub fn average_pool(
    g: &AvgPoolGeometry,
    input: &[i8],
    min: i8,
    max: i8,
    sums: &mut [u32],
    output: &mut [i8],
) {
    let c = g.channels;
    let Some(sums) = sums.get_mut(..c) else {
        return;
    };
    // Non-zero: no division by zero or empty chunks the optimiser must keep a panic for.
    let (Some(out_w), Some(pixel_len)) = (NonZeroUsize::new(g.out_w()), NonZeroUsize::new(c))
    else {
        return;
    };
    for (pixel, out) in output
        .chunks_exact_mut(pixel_len.get())
        .take(g.out_h() * out_w.get())
        .enumerate()
    {
        let (oy, ox) = (pixel / out_w, pixel % out_w);
        sums.fill(0);
        let mut count = 0i32;
        for (_, pixel) in g.window.inside((oy, ox), (g.in_h, g.in_w)) {
            let Some(px) = input.get(pixel * c..pixel * c + c) else {
                return;
            };
            for (s, &v) in sums.iter_mut().zip(px) {
                *s = s.wrapping_add(i32::from(v) as u32);
            }
            count += 1;
        }
        for (o, &s) in out.iter_mut().zip(sums.iter()) {
            *o = rounded_mean(s as i32, count, min, max);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::TestRng;
    use std::{vec, vec::Vec};

    #[test]
    fn fast_path_matches_the_reference_on_random_geometries() {
        let mut rng = TestRng(0xA7E9);
        let cases = if cfg!(miri) { 10 } else { 800 };
        let mut partial = false;
        for _ in 0..cases {
            let g = AvgPoolGeometry {
                in_h: 1 + rng.below(9) as usize,
                in_w: 1 + rng.below(9) as usize,
                channels: 1 + rng.below(6) as usize,
                window: Window::random(&mut rng),
            };
            if g.out_h() == 0 || g.out_w() == 0 {
                continue;
            }
            let w = g.window;
            partial |= w.padding == crate::kernels::conv::Padding::Same && (w.k_h > 1 || w.k_w > 1);
            let input: Vec<i8> = (0..g.in_h * g.in_w * g.channels)
                .map(|_| rng.i8())
                .collect();
            let (min, max) = match rng.below(3) {
                0 => (-128, 127),
                _ => {
                    let lo = rng.i8();
                    (lo, lo.saturating_add(rng.below(128) as i8))
                }
            };
            let len = g.out_h() * g.out_w() * g.channels;
            let mut want = vec![0i8; len];
            average_pool_reference(&g, &input, min, max, &mut want);
            let mut got = vec![0i8; len];
            let mut sums = vec![0u32; average_pool_scratch_words(&g)];
            average_pool(&g, &input, min, max, &mut sums, &mut got);
            assert_eq!(got, want, "{g:?}");
        }
        assert!(partial);
    }

    #[test]
    fn means_round_half_away_from_zero_and_padding_is_not_counted() {
        // A 2×2 window, SAME padding over a 1×3 input: the windows hold 2, 2 and 1 values.
        let g = AvgPoolGeometry {
            in_h: 1,
            in_w: 3,
            channels: 1,
            window: Window {
                k_h: 2,
                k_w: 2,
                stride_h: 1,
                stride_w: 1,
                padding: crate::kernels::conv::Padding::Same,
            },
        };
        let mut out = [0i8; 3];
        average_pool_reference(&g, &[3, -4, -7], -128, 127, &mut out);
        // (3 − 4) / 2 = −0.5 → −1; (−4 − 7) / 2 = −5.5 → −6; −7.
        assert_eq!(out, [-1, -6, -7]);
        average_pool(&g, &[3, 4, 7], -128, 5, &mut [0; 1], &mut out);
        // 3.5 → 4; 5.5 → 6, clamped to 5; 7 clamped to 5.
        assert_eq!(out, [4, 5, 5]);
    }
}

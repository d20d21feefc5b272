//! int8 depthwise convolution (TFLite's DEPTHWISE_CONV_2D): each input channel `c` is
//! convolved with its own `multiplier` filters, giving output channels
//! `c · multiplier .. (c + 1) · multiplier`; any kernel, separate row and column strides,
//! valid or same padding, per-channel weights, fused activation clamp.
//!
//! [`depthwise_i8_reference`] is the naive reference (TFLite's
//! `reference_integer_ops::DepthwiseConvPerChannel`, loop for loop); [`depthwise_i8`] is
//! the fast path, tested against it bit for bit on random geometries: per output pixel it
//! accumulates every output channel at once in a scratch row of `i32`, visiting only the
//! kernel taps inside the input.

use super::window::Window;
use super::ChannelRequant;
use core::num::NonZeroUsize;

/// Shape of a depthwise convolution over an NHWC input; weights `[ky][kx][out_c]` (TFLite's
/// `[1, k_h, k_w, out_c]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DepthwiseGeometry {
    /// Input rows.
    pub in_h: usize,
    /// Input columns.
    pub in_w: usize,
    /// Input channels.
    pub in_c: usize,
    /// Output channels per input channel.
    pub multiplier: usize,
    /// The kernel's size, strides and padding.
    pub window: Window,
}

impl DepthwiseGeometry {
    /// Output channels: `in_c · multiplier`.
    pub const fn out_c(&self) -> usize {
        self.in_c * self.multiplier
    }
    /// Output rows.
    pub const fn out_h(&self) -> usize {
        self.window.out_h(self.in_h)
    }
    /// Output columns.
    pub const fn out_w(&self) -> usize {
        self.window.out_w(self.in_w)
    }
    /// int8 weights: `k_h · k_w · out_c`.
    pub const fn weights(&self) -> usize {
        self.window.k_h * self.window.k_w * self.out_c()
    }
}

/// The naive reference: for every output value, the sum over the kernel taps inside the
/// input of `(in + input_offset) · w`, plus the bias, requantized and clamped by `requant`
/// (whose activation bounds are the fused activation's). `input` is `in_h × in_w × in_c`,
/// `weights` `k_h × k_w × out_c` int8 bytes, `output` `out_h × out_w × out_c`. Short
/// slices compute less, never panic.
pub fn depthwise_i8_reference(
    g: &DepthwiseGeometry,
    input: &[i8],
    input_offset: i32,
    weights: &[u8],
    requant: &ChannelRequant<'_>,
    output: &mut [i8],
) {
    let (out_c, win) = (g.out_c(), &g.window);
    for oy in 0..g.out_h() {
        for ox in 0..g.out_w() {
            for ic in 0..g.in_c {
                for m in 0..g.multiplier {
                    let oc = ic * g.multiplier + m;
                    let Some((bias, mult, shift)) = requant.channel(oc) else {
                        return;
                    };
                    let mut acc: i32 = 0;
                    for ky in 0..win.k_h {
                        for kx in 0..win.k_w {
                            let Some((iy, ix)) = win.tap((oy, ox), (ky, kx), (g.in_h, g.in_w))
                            else {
                                continue;
                            };
                            let at = (iy * g.in_w + ix) * g.in_c + ic;
                            let (Some(&x), Some(&w)) =
                                (input.get(at), weights.get((ky * win.k_w + kx) * out_c + oc))
                            else {
                                return;
                            };
                            acc = acc.wrapping_add(
                                (i32::from(x) + input_offset).wrapping_mul(i32::from(w as i8)),
                            );
                        }
                    }
                    let Some(out) = output.get_mut((oy * g.out_w() + ox) * out_c + oc) else {
                        return;
                    };
                    *out = requant.apply(acc.wrapping_add(bias), mult, shift);
                }
            }
        }
    }
}

/// Words of scratch [`depthwise_i8`] takes: one accumulator per output channel.
pub const fn depthwise_scratch_words(g: &DepthwiseGeometry) -> usize {
    g.out_c()
}

/// The fast path, bit for bit [`depthwise_i8_reference`]: per output pixel, the
/// accumulators of all its channels in `acc` (at least [`depthwise_scratch_words`] words),
/// each kernel tap inside the input adding one input pixel times one weight row. Short
/// slices compute less, never panic.
pub fn depthwise_i8(
    g: &DepthwiseGeometry,
    input: &[i8],
    input_offset: i32,
    weights: &[u8],
    requant: &ChannelRequant<'_>,
    acc: &mut [u32],
    output: &mut [i8],
) {
    let out_c = g.out_c();
    let Some(acc) = acc.get_mut(..out_c) else {
        return;
    };
    // Non-zero: no division by zero or empty chunks the optimiser must keep a panic for.
    let (Some(out_w), Some(mult), Some(pixel_len)) = (
        NonZeroUsize::new(g.out_w()),
        NonZeroUsize::new(g.multiplier),
        NonZeroUsize::new(out_c),
    ) else {
        return;
    };
    let mult = mult.get();
    for (pixel, out) in output
        .chunks_exact_mut(pixel_len.get())
        .take(g.out_h() * out_w.get())
        .enumerate()
    {
        let (oy, ox) = (pixel / out_w, pixel % out_w);
        acc.fill(0);
        for (tap, pixel) in g.window.inside((oy, ox), (g.in_h, g.in_w)) {
            let (at, tap) = (pixel * g.in_c, tap * out_c);
            let (Some(px), Some(w)) = (input.get(at..at + g.in_c), weights.get(tap..tap + out_c))
            else {
                return;
            };
            for ((&x, w), a) in px
                .iter()
                .zip(w.chunks_exact(mult))
                .zip(acc.chunks_exact_mut(mult))
            {
                let x = i32::from(x) + input_offset;
                for (a, &w) in a.iter_mut().zip(w) {
                    *a = a.wrapping_add(x.wrapping_mul(i32::from(w as i8)) as u32);
                }
            }
        }
        for (oc, (o, &a)) in out.iter_mut().zip(acc.iter()).enumerate() {
            let Some((bias, m, s)) = requant.channel(oc) else {
                return;
            };
            *o = requant.apply((a as i32).wrapping_add(bias), m, s);
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kernels::TestRng;
    use std::{vec, vec::Vec};

    /// Random per-channel requantization arrays for `channels` channels, and a clamp.
    pub(crate) struct Requant {
        pub bias: Vec<u8>,
        pub multiplier: Vec<u8>,
        pub shift: Vec<u8>,
        pub zero_point: i32,
        pub min: i32,
        pub max: i32,
    }

    impl Requant {
        pub(crate) fn random(rng: &mut TestRng, channels: usize) -> Self {
            let zero_point = rng.below(256) as i32 - 128;
            let (min, max) = match rng.below(3) {
                0 => (-128, 127),
                1 => (zero_point, 127),
                _ => (zero_point, (zero_point + rng.below(100) as i32).min(127)),
            };
            Self {
                bias: (0..channels)
                    .flat_map(|_| (rng.below(20001) as i32 - 10000).to_le_bytes())
                    .collect(),
                multiplier: (0..channels)
                    .flat_map(|_| ((1i32 << 30) + rng.below(1 << 30) as i32).to_le_bytes())
                    .collect(),
                shift: (0..channels)
                    .map(|_| (rng.below(12) as i8 - 10) as u8)
                    .collect(),
                zero_point,
                min,
                max,
            }
        }

        pub(crate) fn view(&self) -> ChannelRequant<'_> {
            ChannelRequant {
                bias: &self.bias,
                multiplier: &self.multiplier,
                shift: &self.shift,
                output_offset: self.zero_point,
                activation_min: self.min,
                activation_max: self.max,
            }
        }
    }

    #[test]
    fn fast_path_matches_the_reference_on_random_geometries() {
        let mut rng = TestRng(0xD3E9);
        let cases = if cfg!(miri) { 10 } else { 800 };
        let mut seen = [false; 4];
        for _ in 0..cases {
            let g = DepthwiseGeometry {
                in_h: 1 + rng.below(9) as usize,
                in_w: 1 + rng.below(9) as usize,
                in_c: 1 + rng.below(6) as usize,
                multiplier: 1 + rng.below(3) as usize,
                window: Window::random(&mut rng),
            };
            if g.out_h() == 0 || g.out_w() == 0 {
                continue;
            }
            let same = g.window.padding == crate::kernels::conv::Padding::Same;
            seen[usize::from(g.multiplier > 1) + 2 * usize::from(same)] = true;
            let input: Vec<i8> = (0..g.in_h * g.in_w * g.in_c).map(|_| rng.i8()).collect();
            let weights: Vec<u8> = (0..g.weights()).map(|_| rng.i8() as u8).collect();
            let rq = Requant::random(&mut rng, g.out_c());
            let offset = rng.below(256) as i32 - 127;
            let len = g.out_h() * g.out_w() * g.out_c();
            let mut want = vec![0i8; len];
            depthwise_i8_reference(&g, &input, offset, &weights, &rq.view(), &mut want);
            let mut got = vec![0i8; len];
            let mut acc = vec![0u32; depthwise_scratch_words(&g)];
            depthwise_i8(&g, &input, offset, &weights, &rq.view(), &mut acc, &mut got);
            assert_eq!(got, want, "{g:?}");
        }
        assert!(seen.iter().all(|&s| s), "{seen:?}");
    }

    #[test]
    fn a_one_tap_depthwise_is_a_per_channel_scale() {
        // 1×1 kernel, multiplier 2: output channel 2c + m is input channel c times w[2c + m].
        let g = DepthwiseGeometry {
            in_h: 1,
            in_w: 2,
            in_c: 2,
            multiplier: 2,
            window: Window {
                k_h: 1,
                k_w: 1,
                stride_h: 1,
                stride_w: 1,
                padding: crate::kernels::conv::Padding::Valid,
            },
        };
        let weights = [1u8, 2, 3, 0xff];
        // Multiplier 2^30, shift 0: half the accumulator; zero point 0, no clamp.
        let rq = ChannelRequant {
            bias: &[0; 16],
            multiplier: &(1i32 << 30).to_le_bytes().repeat(4),
            shift: &[0; 4],
            output_offset: 0,
            activation_min: -128,
            activation_max: 127,
        };
        let mut out = [0i8; 8];
        depthwise_i8(
            &g,
            &[10, 20, -10, 4],
            0,
            &weights,
            &rq,
            &mut [0; 4],
            &mut out,
        );
        assert_eq!(out, [5, 10, 30, -10, -5, -10, 6, -2]);
    }
}

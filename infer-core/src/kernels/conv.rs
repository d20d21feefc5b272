//! int8 Conv2D, stride 1, valid padding, per-channel weights, fused activation clamp.

use super::ChannelRequant;

/// Shape of a valid, stride-1 convolution over an NHWC input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeometry {
    /// Input rows.
    pub in_h: usize,
    /// Input columns.
    pub in_w: usize,
    /// Input channels.
    pub in_c: usize,
    /// Kernel rows.
    pub k_h: usize,
    /// Kernel columns.
    pub k_w: usize,
    /// Output channels.
    pub filters: usize,
}

impl ConvGeometry {
    /// Output rows (`in_h − k_h + 1`), 0 if the kernel is larger than the input.
    pub const fn out_h(&self) -> usize {
        (self.in_h + 1).saturating_sub(self.k_h)
    }
    /// Output columns.
    pub const fn out_w(&self) -> usize {
        (self.in_w + 1).saturating_sub(self.k_w)
    }
}

/// int8 convolution as TFLite computes it:
/// `out[y][x][f] = clamp(requant(bias[f] + Σ (in + input_offset) · w[f]) + zero point)`.
///
/// `input` is `in_h × in_w × in_c` int8, `weights` is `filters × k_h × k_w × in_c` int8 bytes,
/// `output` is `out_h × out_w × filters`. `input_offset` is minus the input zero point.
pub fn conv2d_i8(
    g: &ConvGeometry,
    input: &[i8],
    input_offset: i32,
    weights: &[u8],
    requant: &ChannelRequant<'_>,
    output: &mut [i8],
) {
    let (out_w, f, c) = (g.out_w(), g.filters, g.in_c);
    let row_len = g.k_w * c;
    let per_filter = g.k_h * row_len;
    if out_w == 0 || f == 0 || row_len == 0 || g.out_h() == 0 {
        return;
    }
    for (oy, out_row) in output
        .chunks_exact_mut(out_w * f)
        .take(g.out_h())
        .enumerate()
    {
        for (ox, out_px) in out_row.chunks_exact_mut(f).enumerate() {
            for (fi, (out, w_f)) in out_px
                .iter_mut()
                .zip(weights.chunks_exact(per_filter))
                .enumerate()
            {
                let Some((bias, mult, shift)) = requant.channel(fi) else {
                    return;
                };
                let mut acc = bias;
                for (ky, w_row) in w_f.chunks_exact(row_len).enumerate() {
                    let start = ((oy + ky) * g.in_w + ox) * c;
                    let in_row = input.get(start..start + row_len).unwrap_or(&[]);
                    for (&x, &w) in in_row.iter().zip(w_row) {
                        acc += (i32::from(x) + input_offset) * i32::from(w as i8);
                    }
                }
                *out = requant.apply(acc, mult, shift);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::TestRng;
    use crate::requant::requantize;
    use std::{vec, vec::Vec};

    /// Naive 6-loop reference with explicit indices.
    #[allow(clippy::too_many_arguments)]
    fn reference(
        g: &ConvGeometry,
        input: &[i8],
        input_offset: i32,
        weights: &[i8],
        bias: &[i32],
        mult: &[i32],
        shift: &[i32],
        out_zp: i32,
        min: i32,
    ) -> Vec<i8> {
        let mut out = vec![0i8; g.out_h() * g.out_w() * g.filters];
        for y in 0..g.out_h() {
            for x in 0..g.out_w() {
                for f in 0..g.filters {
                    let mut acc = bias[f];
                    for ky in 0..g.k_h {
                        for kx in 0..g.k_w {
                            for c in 0..g.in_c {
                                let i = input[((y + ky) * g.in_w + x + kx) * g.in_c + c] as i32;
                                let w =
                                    weights[((f * g.k_h + ky) * g.k_w + kx) * g.in_c + c] as i32;
                                acc += (i + input_offset) * w;
                            }
                        }
                    }
                    out[(y * g.out_w() + x) * g.filters + f] =
                        requantize(acc, mult[f], shift[f], out_zp, min, 127);
                }
            }
        }
        out
    }

    #[test]
    fn matches_naive_reference_exactly() {
        let mut rng = TestRng(0xC0FFEE);
        for case in 0..60 {
            let g = ConvGeometry {
                in_h: 3 + rng.below(8) as usize,
                in_w: 3 + rng.below(8) as usize,
                in_c: 1 + rng.below(4) as usize,
                k_h: 1 + rng.below(3) as usize,
                k_w: 1 + rng.below(3) as usize,
                filters: 1 + rng.below(9) as usize,
            };
            let input: Vec<i8> = (0..g.in_h * g.in_w * g.in_c).map(|_| rng.i8()).collect();
            let weights: Vec<i8> = (0..g.filters * g.k_h * g.k_w * g.in_c)
                .map(|_| rng.i8())
                .collect();
            let bias: Vec<i32> = (0..g.filters)
                .map(|_| rng.below(20_001) as i32 - 10_000)
                .collect();
            let mult: Vec<i32> = (0..g.filters)
                .map(|_| (1 << 30) + (rng.below(1 << 30) as i32))
                .collect();
            let shift: Vec<i32> = (0..g.filters).map(|_| -(rng.below(12) as i32)).collect();
            let input_offset = rng.below(256) as i32 - 127;
            let out_zp = rng.below(256) as i32 - 128;
            let min = if case % 2 == 0 { -128 } else { out_zp };
            let expected = reference(
                &g,
                &input,
                input_offset,
                &weights,
                &bias,
                &mult,
                &shift,
                out_zp,
                min,
            );

            let bias_b: Vec<u8> = bias.iter().flat_map(|b| b.to_le_bytes()).collect();
            let mult_b: Vec<u8> = mult.iter().flat_map(|b| b.to_le_bytes()).collect();
            let shift_b: Vec<u8> = shift.iter().map(|&s| s as i8 as u8).collect();
            let w_b: Vec<u8> = weights.iter().map(|&w| w as u8).collect();
            let rq = ChannelRequant {
                bias: &bias_b,
                multiplier: &mult_b,
                shift: &shift_b,
                output_offset: out_zp,
                activation_min: min,
                activation_max: 127,
            };
            let mut out = vec![0i8; expected.len()];
            conv2d_i8(&g, &input, input_offset, &w_b, &rq, &mut out);
            assert_eq!(out, expected, "case {case}: {g:?}");
        }
    }

    #[test]
    fn short_slices_do_not_panic() {
        let g = ConvGeometry {
            in_h: 5,
            in_w: 5,
            in_c: 2,
            k_h: 3,
            k_w: 3,
            filters: 4,
        };
        let rq = ChannelRequant {
            bias: &[0; 8],
            multiplier: &[0; 8],
            shift: &[0; 2],
            output_offset: 0,
            activation_min: -128,
            activation_max: 127,
        };
        let mut out = [0i8; 36];
        conv2d_i8(&g, &[1; 7], 0, &[1; 5], &rq, &mut out);
        conv2d_i8(&g, &[1; 50], 0, &[1; 72], &rq, &mut out[..3]);
    }
}

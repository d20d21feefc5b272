//! f32 kernels, the float counterparts of the int8 ones (same layouts).

#[cfg(test)]
use super::conv;
use super::conv::ConvGeometry;

/// f32 convolution (any stride and padding of [`ConvGeometry`]) with bias and optional ReLU.
/// Layouts as in [`super::conv::conv2d_i8`]; padded taps are zeros.
pub fn conv2d_f32(
    g: &ConvGeometry,
    input: &[f32],
    weights: &[f32],
    bias: &[f32],
    relu: bool,
    output: &mut [f32],
) {
    let (out_w, f, c) = (g.out_w(), g.filters, g.in_c);
    let per_filter = g.taps();
    if out_w == 0 || f == 0 || per_filter == 0 || g.out_h() == 0 {
        return;
    }
    let (pad_top, pad_left) = (g.pad_top(), g.pad_left());
    for (oy, out_row) in output
        .chunks_exact_mut(out_w * f)
        .take(g.out_h())
        .enumerate()
    {
        for (ox, out_px) in out_row.chunks_exact_mut(f).enumerate() {
            for ((out, w_f), &b) in out_px
                .iter_mut()
                .zip(weights.chunks_exact(per_filter))
                .zip(bias)
            {
                let mut acc = b;
                for (ky, w_row) in w_f.chunks_exact(g.k_w * c).enumerate() {
                    let Some(iy) = (oy * g.stride + ky)
                        .checked_sub(pad_top)
                        .filter(|&y| y < g.in_h)
                    else {
                        continue;
                    };
                    for (kx, w_px) in w_row.chunks_exact(c).enumerate() {
                        let Some(ix) = (ox * g.stride + kx)
                            .checked_sub(pad_left)
                            .filter(|&x| x < g.in_w)
                        else {
                            continue;
                        };
                        let start = (iy * g.in_w + ix) * c;
                        let in_px = input.get(start..start + c).unwrap_or(&[]);
                        for (&x, &w) in in_px.iter().zip(w_px) {
                            acc += x * w;
                        }
                    }
                }
                *out = if relu { acc.max(0.0) } else { acc };
            }
        }
    }
}

/// f32 dense layer: `out[u] = bias[u] + Σ_i in[i] · w[u][i]`.
pub fn dense_f32(input: &[f32], weights: &[f32], bias: &[f32], output: &mut [f32]) {
    if input.is_empty() {
        return;
    }
    for ((out, w_row), &b) in output
        .iter_mut()
        .zip(weights.chunks_exact(input.len()))
        .zip(bias)
    {
        *out = b + input.iter().zip(w_row).map(|(x, w)| x * w).sum::<f32>();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::TestRng;
    use std::{vec, vec::Vec};

    #[test]
    fn conv_matches_naive_reference() {
        let mut rng = TestRng(5);
        for _ in 0..80 {
            let g = ConvGeometry {
                in_h: 3 + rng.below(6) as usize,
                in_w: 3 + rng.below(6) as usize,
                in_c: 1 + rng.below(3) as usize,
                k_h: 1 + rng.below(3) as usize,
                k_w: 1 + rng.below(3) as usize,
                filters: 1 + rng.below(5) as usize,
                stride: 1 + rng.below(2) as usize,
                padding: if rng.below(2) == 0 {
                    conv::Padding::Valid
                } else {
                    conv::Padding::Same
                },
            };
            let input: Vec<f32> = (0..g.in_h * g.in_w * g.in_c).map(|_| rng.f32()).collect();
            let w: Vec<f32> = (0..g.filters * g.k_h * g.k_w * g.in_c)
                .map(|_| rng.f32())
                .collect();
            let b: Vec<f32> = (0..g.filters).map(|_| rng.f32()).collect();
            let mut out = vec![0.0; g.out_h() * g.out_w() * g.filters];
            conv2d_f32(&g, &input, &w, &b, true, &mut out);
            for y in 0..g.out_h() {
                for x in 0..g.out_w() {
                    for f in 0..g.filters {
                        let mut acc = b[f] as f64;
                        for ky in 0..g.k_h {
                            for kx in 0..g.k_w {
                                let iy = (y * g.stride + ky) as isize - g.pad_top() as isize;
                                let ix = (x * g.stride + kx) as isize - g.pad_left() as isize;
                                if iy < 0
                                    || ix < 0
                                    || iy >= g.in_h as isize
                                    || ix >= g.in_w as isize
                                {
                                    continue;
                                }
                                let (iy, ix) = (iy as usize, ix as usize);
                                for c in 0..g.in_c {
                                    acc += input[(iy * g.in_w + ix) * g.in_c + c] as f64
                                        * w[((f * g.k_h + ky) * g.k_w + kx) * g.in_c + c] as f64;
                                }
                            }
                        }
                        let want = acc.max(0.0);
                        let got = out[(y * g.out_w() + x) * g.filters + f] as f64;
                        assert!((got - want).abs() <= 1e-5, "{got} vs {want}");
                    }
                }
            }
        }
    }

    #[test]
    fn dense_matches_naive_reference() {
        let mut rng = TestRng(11);
        let input: Vec<f32> = (0..50).map(|_| rng.f32()).collect();
        let w: Vec<f32> = (0..150).map(|_| rng.f32()).collect();
        let b = [0.5f32, -0.25, 0.0];
        let mut out = [0.0f32; 3];
        dense_f32(&input, &w, &b, &mut out);
        for u in 0..3 {
            let want: f64 = b[u] as f64
                + (0..50)
                    .map(|i| input[i] as f64 * w[u * 50 + i] as f64)
                    .sum::<f64>();
            assert!((out[u] as f64 - want).abs() <= 1e-5);
        }
    }
}

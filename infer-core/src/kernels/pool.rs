//! Max pooling, `size × size` windows with stride `size` (floor: a partial edge is dropped).

/// Shape of a max pooling over an NHWC input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolGeometry {
    /// Input rows.
    pub in_h: usize,
    /// Input columns.
    pub in_w: usize,
    /// Channels.
    pub channels: usize,
    /// Window side and stride.
    pub size: usize,
}

impl PoolGeometry {
    /// Output rows (`in_h / size`).
    pub const fn out_h(&self) -> usize {
        match self.in_h.checked_div(self.size) {
            Some(n) => n,
            None => 0,
        }
    }
    /// Output columns (`in_w / size`).
    pub const fn out_w(&self) -> usize {
        match self.in_w.checked_div(self.size) {
            Some(n) => n,
            None => 0,
        }
    }
}

/// Max pooling for any ordered element type (int8 keeps its quantization unchanged).
pub fn max_pool<T: Copy + PartialOrd>(g: &PoolGeometry, input: &[T], output: &mut [T]) {
    let c = g.channels;
    let Some(out_row_len) = g.out_w().checked_mul(c).filter(|&n| n != 0) else {
        return;
    };
    if c == 0 || g.out_h() == 0 {
        return;
    }
    for (oy, out_row) in output
        .chunks_exact_mut(out_row_len)
        .take(g.out_h())
        .enumerate()
    {
        for (ox, out_px) in out_row.chunks_exact_mut(c).enumerate() {
            for (ch, out) in out_px.iter_mut().enumerate() {
                let mut best: Option<T> = None;
                for dy in 0..g.size {
                    for dx in 0..g.size {
                        let at = ((oy * g.size + dy) * g.in_w + ox * g.size + dx) * c + ch;
                        if let Some(&v) = input.get(at) {
                            if best.is_none_or(|b| v > b) {
                                best = Some(v);
                            }
                        }
                    }
                }
                if let Some(b) = best {
                    *out = b;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::TestRng;
    use std::{vec, vec::Vec};

    #[test]
    fn matches_naive_reference_exactly() {
        let mut rng = TestRng(7);
        for _ in 0..50 {
            let g = PoolGeometry {
                in_h: 1 + rng.below(9) as usize,
                in_w: 1 + rng.below(9) as usize,
                channels: 1 + rng.below(5) as usize,
                size: 1 + rng.below(3) as usize,
            };
            let input: Vec<i8> = (0..g.in_h * g.in_w * g.channels)
                .map(|_| rng.i8())
                .collect();
            let mut expected = vec![0i8; g.out_h() * g.out_w() * g.channels];
            for y in 0..g.out_h() {
                for x in 0..g.out_w() {
                    for c in 0..g.channels {
                        let mut m = i8::MIN;
                        for dy in 0..g.size {
                            for dx in 0..g.size {
                                m = m.max(
                                    input[((y * g.size + dy) * g.in_w + x * g.size + dx)
                                        * g.channels
                                        + c],
                                );
                            }
                        }
                        expected[(y * g.out_w() + x) * g.channels + c] = m;
                    }
                }
            }
            let mut out = vec![0i8; expected.len()];
            max_pool(&g, &input, &mut out);
            assert_eq!(out, expected, "{g:?}");
        }
    }
}

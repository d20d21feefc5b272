//! [`Window`]: a sliding window over the rows and columns of an NHWC map — its size, its
//! row and column strides and its padding — shared by the depthwise convolution
//! ([`super::depthwise`]) and the average pooling ([`super::average_pool`]).

use super::conv::{out_dim, pad_before, Padding};
use core::fmt;
use core::ops::Range;

/// A sliding window: `k_h × k_w`, moving `stride_h` rows and `stride_w` columns at a time,
/// valid or same padding (TensorFlow's, as [`super::conv`] computes it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// Rows.
    pub k_h: usize,
    /// Columns.
    pub k_w: usize,
    /// Vertical step.
    pub stride_h: usize,
    /// Horizontal step.
    pub stride_w: usize,
    /// Valid or same.
    pub padding: Padding,
}

impl Window {
    /// Output rows over `in_h` input rows.
    pub const fn out_h(&self, in_h: usize) -> usize {
        out_dim(in_h, self.k_h, self.stride_h, self.padding)
    }
    /// Output columns over `in_w` input columns.
    pub const fn out_w(&self, in_w: usize) -> usize {
        out_dim(in_w, self.k_w, self.stride_w, self.padding)
    }
    /// Padding rows above `in_h` input rows.
    pub const fn pad_top(&self, in_h: usize) -> usize {
        pad_before(in_h, self.k_h, self.stride_h, self.padding)
    }
    /// Padding columns left of `in_w` input columns.
    pub const fn pad_left(&self, in_w: usize) -> usize {
        pad_before(in_w, self.k_w, self.stride_w, self.padding)
    }
    /// The window rows of output row `oy` that fall inside the `in_h` input rows, and the
    /// input row of window row 0 (maybe negative): window row `ky` reads input row
    /// `origin + ky`.
    fn rows(&self, oy: usize, in_h: usize) -> (Range<usize>, isize) {
        inside(oy * self.stride_h, self.pad_top(in_h), self.k_h, in_h)
    }
    /// [`Window::rows`] for the columns of output column `ox` over `in_w` input columns.
    fn cols(&self, ox: usize, in_w: usize) -> (Range<usize>, isize) {
        inside(ox * self.stride_w, self.pad_left(in_w), self.k_w, in_w)
    }
    /// The window positions of output `(oy, ox)` inside an `in_h × in_w` map, row by row:
    /// each as `(ky · k_w + kx, iy · in_w + ix)`, its index in the window and the index of
    /// the input pixel it reads.
    pub(crate) fn inside(
        &self,
        (oy, ox): (usize, usize),
        (in_h, in_w): (usize, usize),
    ) -> impl Iterator<Item = (usize, usize)> {
        let (rows, row0) = self.rows(oy, in_h);
        let (cols, col0) = self.cols(ox, in_w);
        let k_w = self.k_w;
        rows.flat_map(move |ky| {
            let iy = (row0 + ky as isize) as usize;
            cols.clone()
                .map(move |kx| (ky * k_w + kx, iy * in_w + (col0 + kx as isize) as usize))
        })
    }
    /// The input `(row, column)` that window position `(ky, kx)` of output `(oy, ox)` reads
    /// in an `in_h × in_w` map, or `None` for padding: the naive references' way.
    pub(crate) fn tap(
        &self,
        (oy, ox): (usize, usize),
        (ky, kx): (usize, usize),
        (in_h, in_w): (usize, usize),
    ) -> Option<(usize, usize)> {
        let y = (oy * self.stride_h + ky).checked_sub(self.pad_top(in_h))?;
        let x = (ox * self.stride_w + kx).checked_sub(self.pad_left(in_w))?;
        (y < in_h && x < in_w).then_some((y, x))
    }
}

impl fmt::Display for Window {
    /// E.g. `3×3 stride 1×1 same`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let padding = match self.padding {
            Padding::Valid => "valid",
            Padding::Same => "same",
        };
        write!(
            f,
            "{}×{} stride {}×{} {padding}",
            self.k_h, self.k_w, self.stride_h, self.stride_w
        )
    }
}

/// The window positions `k` (of `0..kernel`) whose input index `start + k − pad` lies in
/// `0..len`, and `start − pad`.
fn inside(start: usize, pad: usize, kernel: usize, len: usize) -> (Range<usize>, isize) {
    let origin = start as isize - pad as isize;
    (taps_inside(origin, kernel, len), origin)
}

/// The window positions `k` of `0..kernel` whose input `origin + k` lies in `0..len`.
#[inline(always)]
pub(crate) fn taps_inside(origin: isize, kernel: usize, len: usize) -> Range<usize> {
    // `max` and `min`, not `clamp`, which asserts its bounds are ordered (a panic path).
    let first = (-origin).max(0).min(kernel as isize) as usize;
    let end = (len as isize - origin).max(0).min(kernel as isize) as usize;
    first..end.max(first)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::kernels::TestRng;
    use std::vec::Vec;

    impl Window {
        /// A random window of up to 5 × 5, strides up to 3, either padding.
        pub(crate) fn random(rng: &mut TestRng) -> Self {
            Self {
                k_h: 1 + rng.below(5) as usize,
                k_w: 1 + rng.below(5) as usize,
                stride_h: 1 + rng.below(3) as usize,
                stride_w: 1 + rng.below(3) as usize,
                padding: if rng.below(2) == 0 {
                    Padding::Valid
                } else {
                    Padding::Same
                },
            }
        }
    }

    #[test]
    fn the_positions_inside_are_the_taps_that_are_not_padding() {
        let mut rng = TestRng(0x9d1);
        for _ in 0..500 {
            let w = Window::random(&mut rng);
            let (in_h, in_w) = (1 + rng.below(9) as usize, 1 + rng.below(9) as usize);
            for oy in 0..w.out_h(in_h) {
                for ox in 0..w.out_w(in_w) {
                    let mut want = Vec::new();
                    for ky in 0..w.k_h {
                        for kx in 0..w.k_w {
                            if let Some((iy, ix)) = w.tap((oy, ox), (ky, kx), (in_h, in_w)) {
                                want.push((ky * w.k_w + kx, iy * in_w + ix));
                            }
                        }
                    }
                    let got: Vec<_> = w.inside((oy, ox), (in_h, in_w)).collect();
                    assert_eq!(got, want, "{w:?}");
                }
            }
        }
    }
}

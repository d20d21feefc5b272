//! The float kernels behind the generic layers, each single-threaded (the layers split the
//! batch) and with a fixed summation order, so results do not depend on the thread count:
//!
//! - [`gemm_bias`]: `C = A·B + bias` (then ReLU if asked) with `B` packed once per call of a
//!   layer ([`Packed`]): the forward passes of conv and dense.
//! - [`gather_rows`]: for each target `t`, `out[t] += Σ g·A[s]` over a sparse list of
//!   `(s, g)` ([`Lists`]): the backward passes, which only visit the non-zero output gradients
//!   (after a ReLU, a max-pool or a dropout most of them are zero).
//!
//! `A` is a [`Rows`]: a plain row-major matrix, or the im2col matrix of a convolution read in
//! place from the image (each row is `k` runs of `k·channels` values of the input).
//!
//! Both are plain safe Rust written so that the compiler vectorises them (fixed-size register
//! tiles). On x86-64 a copy compiled for AVX2 + FMA is chosen at run time when the CPU has them;
//! that is the only `unsafe` here.

/// Rows of the GEMM register tile.
const MR: usize = 6;
/// Columns of the GEMM register tile (two 8-lane vectors).
const NR: usize = 16;

/// `a·b + c`, fused when the kernel copy is compiled for FMA (one rounding instead of two).
#[inline(always)]
fn madd<const FMA: bool>(a: f32, b: f32, c: f32) -> f32 {
    if FMA {
        a.mul_add(b, c)
    } else {
        a * b + c
    }
}

/// Whether this CPU runs the AVX2 + FMA copies.
pub(super) fn has_fma() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Defines `fn name(args) body` compiled twice, for AVX2 + FMA (chosen at run time when the
/// CPU has them, x86-64) and for the baseline: for the element-wise passes of the layers
/// (pooling, dropout), whose loops then use 8-lane vectors. Both copies give the same bits:
/// Rust never fuses a separate multiply and add into an FMA, nor reorders a sum.
macro_rules! simd_fn {
    ($(#[$meta:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $body:block) => {
        $(#[$meta])*
        #[allow(clippy::too_many_arguments)]
        $vis fn $name($($arg: $ty),*) {
            #[inline(always)]
            #[allow(clippy::too_many_arguments)]
            fn body($($arg: $ty),*) $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            #[allow(clippy::too_many_arguments)]
            unsafe fn avx2($($arg: $ty),*) {
                body($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            if $crate::arch::kernels::has_fma() {
                // SAFETY: the CPU has AVX2 and FMA (checked just above), all `avx2` requires.
                return unsafe { avx2($($arg),*) };
            }
            body($($arg),*)
        }
    };
}
pub(super) use simd_fn;

/// The rows of a matrix `A`, each made of `segments` runs of `seg_len` values that lie anywhere
/// in `data`: row `r`'s segment `s` is `data[start + s·stride..][..seg_len]` with
/// `(start, stride) = placed[r]`. A plain row-major matrix is one segment per row.
#[derive(Clone, Copy, Debug)]
pub struct Rows<'a> {
    data: &'a [f32],
    placed: Option<&'a [(usize, usize)]>,
    rows: usize,
    segments: usize,
    seg_len: usize,
}

impl<'a> Rows<'a> {
    /// The row-major matrix `data` with `cols` columns (one segment per row).
    ///
    /// # Panics
    /// If `data` is not whole rows.
    pub fn matrix(data: &'a [f32], cols: usize) -> Self {
        let rows = data.len().checked_div(cols).unwrap_or(0);
        assert_eq!(rows * cols, data.len(), "matrix shape");
        Self {
            data,
            placed: None,
            rows,
            segments: 1,
            seg_len: cols,
        }
    }

    /// Rows placed in `data` by `placed` (see [`Rows`]).
    ///
    /// # Panics
    /// If a segment lies outside `data`.
    pub fn placed(
        data: &'a [f32],
        placed: &'a [(usize, usize)],
        segments: usize,
        seg_len: usize,
    ) -> Self {
        for &(start, stride) in placed {
            if segments > 0 && seg_len > 0 {
                assert!(
                    start + (segments - 1) * stride + seg_len <= data.len(),
                    "a row outside the data"
                );
            }
        }
        Self {
            data,
            placed: Some(placed),
            rows: placed.len(),
            segments,
            seg_len,
        }
    }

    /// Rows.
    pub fn len(&self) -> usize {
        self.rows
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// Values per row.
    pub fn cols(&self) -> usize {
        self.segments * self.seg_len
    }

    /// Rows `range` of this matrix.
    ///
    /// # Panics
    /// If `range` is not within the rows.
    pub fn sub(&self, range: std::ops::Range<usize>) -> Self {
        assert!(
            range.start <= range.end && range.end <= self.rows,
            "rows out of range"
        );
        let (data, placed) = match self.placed {
            None => {
                let cols = self.cols();
                (&self.data[range.start * cols..range.end * cols], None)
            }
            Some(placed) => (self.data, Some(&placed[range.clone()])),
        };
        Self {
            data,
            placed,
            rows: range.len(),
            segments: self.segments,
            seg_len: self.seg_len,
        }
    }

    /// Writes the `(cols, rows)` transpose of the matrix into `out`.
    pub fn transpose_into(&self, out: &mut Vec<f32>) {
        let rows = self.rows;
        out.resize(self.cols() * rows, 0.0);
        for r in 0..rows {
            for seg in 0..self.segments {
                for (i, &v) in self.segment(r, seg).iter().enumerate() {
                    out[(seg * self.seg_len + i) * rows + r] = v;
                }
            }
        }
    }

    /// Segment `seg` of row `row` (`seg_len` values).
    #[inline(always)]
    fn segment(&self, row: usize, seg: usize) -> &'a [f32] {
        let start = match self.placed {
            None => (row * self.segments + seg) * self.seg_len,
            Some(placed) => {
                let (start, stride) = placed[row];
                start + seg * stride
            }
        };
        &self.data[start..start + self.seg_len]
    }
}

/// A `(k, n)` row-major matrix rearranged into panels of 16 columns (`16·k` values each,
/// row by row), the last panel zero-padded: what the GEMM tile reads contiguously.
#[derive(Clone, Debug, Default)]
pub struct Packed {
    k: usize,
    n: usize,
    data: Vec<f32>,
}

impl Packed {
    /// Packs the row-major `(k, n)` matrix `b`.
    ///
    /// # Panics
    /// If `b` does not hold `k·n` values.
    pub fn new(b: &[f32], k: usize, n: usize) -> Self {
        let mut packed = Self::default();
        packed.refill(b, k, n);
        packed
    }

    /// Packs the row-major `(k, n)` matrix `b` in place of this one, reusing its memory.
    ///
    /// # Panics
    /// If `b` does not hold `k·n` values.
    pub fn refill(&mut self, b: &[f32], k: usize, n: usize) {
        assert_eq!(b.len(), k * n, "matrix shape");
        (self.k, self.n) = (k, n);
        // Every value is written below (a partial panel's padding as zeros).
        self.data.resize(n.div_ceil(NR) * k * NR, 0.0);
        if self.data.is_empty() {
            return;
        }
        for (p, panel) in self.data.chunks_exact_mut(k * NR).enumerate() {
            let j0 = p * NR;
            let width = NR.min(n - j0);
            for (row, dst) in b.chunks_exact(n).zip(panel.chunks_exact_mut(NR)) {
                if width == NR {
                    // A fixed-size copy: a call to memcpy per 16 values costs more than it.
                    let dst: &mut [f32; NR] = dst.try_into().expect("a panel row");
                    let src: &[f32; NR] = row[j0..j0 + NR].try_into().expect("a panel row");
                    *dst = *src;
                } else {
                    dst[..width].copy_from_slice(&row[j0..j0 + width]);
                    dst[width..].fill(0.0);
                }
            }
        }
    }
}

/// The `B` of a GEMM as the tile reads it: panel `p` (columns `16p..16p + 16`) starts at
/// `p·panel_step` of `data`, its rows `row_stride` apart.
#[derive(Clone, Copy, Debug)]
pub struct Cols<'a> {
    data: &'a [f32],
    k: usize,
    n: usize,
    panel_step: usize,
    row_stride: usize,
}

impl<'a> Cols<'a> {
    /// The row-major `(k, n)` matrix `b` read in place, if `n` is a multiple of 16 (whole
    /// panels): no packing needed.
    pub fn row_major(b: &'a [f32], k: usize, n: usize) -> Option<Self> {
        (n % NR == 0 && b.len() == k * n).then_some(Self {
            data: b,
            k,
            n,
            panel_step: NR,
            row_stride: n,
        })
    }
}

impl Packed {
    /// This packing as the GEMM reads it.
    pub fn cols(&self) -> Cols<'_> {
        Cols {
            data: &self.data,
            k: self.k,
            n: self.n,
            panel_step: self.k * NR,
            row_stride: NR,
        }
    }
}

/// `c = a·b + bias` (`(rows, n)` row-major), then `max(0, ·)` if `relu`.
///
/// # Panics
/// If the shapes do not match.
pub fn gemm_bias(a: &Rows, b: &Packed, bias: &[f32], relu: bool, c: &mut [f32]) {
    gemm_cols(a, &b.cols(), bias, relu, c);
}

/// [`gemm_bias`] with `b` as [`Cols`].
///
/// # Panics
/// If the shapes do not match.
pub fn gemm_cols(a: &Rows, b: &Cols, bias: &[f32], relu: bool, c: &mut [f32]) {
    assert!(
        a.cols() == b.k && bias.len() == b.n && c.len() == a.len() * b.n,
        "gemm shapes"
    );
    if b.k > 0 && b.n > 0 {
        let last = (b.n.div_ceil(NR) - 1) * b.panel_step + (b.k - 1) * b.row_stride + NR;
        assert!(last <= b.data.len(), "gemm B shape");
    }
    if a.is_empty() || b.n == 0 {
        return;
    }
    run_gemm(a, b, bias, relu, Epilogue::Store(c));
}

/// What a GEMM does with its register tiles.
enum Epilogue<'a> {
    /// Writes them to `c` (`(rows, n)` row-major).
    Store(&'a mut [f32]),
    /// Keeps the first largest of each four rows and which row it was (see [`gemm_pool4`]).
    Pool4(&'a mut [f32], &'a mut [u32]),
}

/// The GEMM of checked shapes, in the copy for this CPU.
fn run_gemm(a: &Rows, b: &Cols, bias: &[f32], relu: bool, out: Epilogue) {
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above), all `gemm_fma` requires.
        unsafe { gemm_fma(a, b, bias, relu, out) };
        return;
    }
    gemm_impl::<false>(a, b, bias, relu, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gemm_fma(a: &Rows, b: &Cols, bias: &[f32], relu: bool, out: Epilogue) {
    gemm_impl::<true>(a, b, bias, relu, out);
}

#[inline(always)]
fn gemm_impl<const FMA: bool>(a: &Rows, b: &Cols, bias: &[f32], relu: bool, out: Epilogue) {
    // Rows of 9 values (a 3×3 convolution on one channel) with a fixed size: the tile's loop
    // unrolls.
    if a.segments == 1 && a.seg_len == 9 {
        gemm_rows::<FMA, 9>(a, b, bias, relu, out);
    } else {
        gemm_rows::<FMA, 0>(a, b, bias, relu, out);
    }
}

/// [`gemm_impl`] with segments of `K` values (any number if `K` is 0).
#[inline(always)]
fn gemm_rows<const FMA: bool, const K: usize>(
    a: &Rows,
    b: &Cols,
    bias: &[f32],
    relu: bool,
    out: Epilogue,
) {
    let c = match out {
        Epilogue::Store(c) => c,
        Epilogue::Pool4(y, arg) => return pool_rows::<FMA, K>(a, b, bias, relu, (y, arg)),
    };
    let (m, k, n) = (a.len(), b.k, b.n);
    if k == 0 {
        for row in c.chunks_exact_mut(n) {
            for (o, &bv) in row.iter_mut().zip(bias) {
                *o = if relu { bv.max(0.0) } else { bv };
            }
        }
        return;
    }
    // Panel outer, rows inner: one panel (k·NR values) stays in L1 while `a` streams by.
    for p in 0..n.div_ceil(NR) {
        let panel = &b.data[p * b.panel_step..][..(k - 1) * b.row_stride + NR];
        let j0 = p * NR;
        let width = NR.min(n - j0);
        let bias = &bias[j0..j0 + width];
        let mut i0 = 0;
        while i0 < m {
            // Whole tiles of 6 rows, then the rest in tiles of 4, 2 and 1 rows (each value is
            // the same sum in the same order whatever its tile).
            let rows = match m - i0 {
                r if r >= MR => {
                    tile_out::<FMA, MR, K>(a, i0, panel, b.row_stride, bias, relu, c, n, j0)
                }
                r if r >= 4 => {
                    tile_out::<FMA, 4, K>(a, i0, panel, b.row_stride, bias, relu, c, n, j0)
                }
                r if r >= 2 => {
                    tile_out::<FMA, 2, K>(a, i0, panel, b.row_stride, bias, relu, c, n, j0)
                }
                _ => tile_out::<FMA, 1, K>(a, i0, panel, b.row_stride, bias, relu, c, n, j0),
            };
            i0 += rows;
        }
    }
}

/// Rows `i0..i0 + R` of columns `j0..j0 + bias.len()` of `c` (`n` columns): one register tile
/// plus bias, then ReLU if asked. Returns `R`.
#[inline(always)]
#[allow(clippy::too_many_arguments)]
fn tile_out<const FMA: bool, const R: usize, const K: usize>(
    a: &Rows,
    i0: usize,
    panel: &[f32],
    stride: usize,
    bias: &[f32],
    relu: bool,
    c: &mut [f32],
    n: usize,
    j0: usize,
) -> usize {
    let acc = tile::<FMA, R, K>(a, i0, panel, stride);
    if let Ok(bias) = <&[f32; NR]>::try_from(bias) {
        // A full panel, with fixed sizes: the tile goes from registers to `c`.
        for (r, acc) in acc.iter().enumerate() {
            let out: &mut [f32; NR] = (&mut c[(i0 + r) * n + j0..][..NR])
                .try_into()
                .expect("a full row");
            for ((o, &v), &bv) in out.iter_mut().zip(acc).zip(bias) {
                let v = v + bv;
                *o = if relu { v.max(0.0) } else { v };
            }
        }
        return R;
    }
    for (r, acc) in acc.iter().enumerate() {
        let out = &mut c[(i0 + r) * n + j0..][..bias.len()];
        for ((o, &v), &bv) in out.iter_mut().zip(acc).zip(bias) {
            let v = v + bv;
            *o = if relu { v.max(0.0) } else { v };
        }
    }
    R
}

/// The `R × NR` register tile of rows `i0..i0 + R` (at most [`MR`], all within `a`):
/// `Σ_p a[r][p] · panel[p][j]`, segment by segment (segments of `K` values, any if `K` is 0).
#[inline(always)]
fn tile<const FMA: bool, const R: usize, const K: usize>(
    a: &Rows,
    i0: usize,
    panel: &[f32],
    stride: usize,
) -> [[f32; NR]; R] {
    let mut acc = [[0.0f32; NR]; R];
    let len = if K > 0 { K } else { a.seg_len };
    for seg in 0..a.segments {
        // A plain loop: `array::from_fn` is not always inlined, and a call per tile shows.
        let mut rows: [&[f32]; R] = [&[]; R];
        for (r, row) in rows.iter_mut().enumerate() {
            *row = &a.segment(i0 + r, seg)[..len];
        }
        for p in 0..len {
            let at = (seg * len + p) * stride;
            let b: &[f32; NR] = panel[at..at + NR].try_into().expect("a panel row");
            for (acc, row) in acc.iter_mut().zip(&rows) {
                let a = row[p];
                for (c, &bv) in acc.iter_mut().zip(b) {
                    *c = madd::<FMA>(a, bv, *c);
                }
            }
        }
    }
    acc
}

/// [`gemm_bias`] (then ReLU if `relu`) over the rows of `a` in groups of four, the positions of
/// a 2×2 max-pool window in its order (top left, top right, bottom left, bottom right), keeping
/// of each group and column only the first largest value, in `y` (`(rows / 4, n)` row-major),
/// and in `arg` which of the four rows it was (0 to 3). The values of `gemm_bias` then a max
/// pool, without writing the GEMM's output.
///
/// # Panics
/// If the shapes do not match.
pub fn gemm_pool4(a: &Rows, b: &Packed, bias: &[f32], relu: bool, y: &mut [f32], arg: &mut [u32]) {
    let b = b.cols();
    assert!(
        a.cols() == b.k
            && bias.len() == b.n
            && a.len() % 4 == 0
            && y.len() == a.len() / 4 * b.n
            && arg.len() == y.len(),
        "gemm pool shapes"
    );
    if a.is_empty() || b.n == 0 {
        return;
    }
    run_gemm(a, &b, bias, relu, Epilogue::Pool4(y, arg));
}

/// [`gemm_rows`] keeping of each four rows the first largest and its row (`out`, see
/// [`gemm_pool4`]).
#[inline(always)]
fn pool_rows<const FMA: bool, const K: usize>(
    a: &Rows,
    b: &Cols,
    bias: &[f32],
    relu: bool,
    out: (&mut [f32], &mut [u32]),
) {
    let ((y, arg), n) = (out, b.n);
    for p in 0..n.div_ceil(NR) {
        let j0 = p * NR;
        let width = NR.min(n - j0);
        let mut padded = [0.0f32; NR];
        padded[..width].copy_from_slice(&bias[j0..j0 + width]);
        for (w, (y, arg)) in y
            .chunks_exact_mut(n)
            .zip(arg.chunks_exact_mut(n))
            .enumerate()
        {
            let acc = match b.k {
                0 => [[0.0f32; NR]; 4],
                k => {
                    let panel = &b.data[p * b.panel_step..][..(k - 1) * b.row_stride + NR];
                    tile::<FMA, 4, K>(a, 4 * w, panel, b.row_stride)
                }
            };
            let mut best = [f32::NEG_INFINITY; NR];
            let mut at = [0u32; NR];
            for (r, acc) in acc.iter().enumerate() {
                for j in 0..NR {
                    let v = acc[j] + padded[j];
                    let v = if relu { v.max(0.0) } else { v };
                    // `if v > best { best = v; at = r }` as bit selects (vectorised).
                    let keep = u32::from(v > best[j]).wrapping_neg();
                    best[j] = f32::from_bits((v.to_bits() & keep) | (best[j].to_bits() & !keep));
                    at[j] = (r as u32 & keep) | (at[j] & !keep);
                }
            }
            if width == NR {
                // Fixed-size copies: a call to memcpy per 16 values costs more than them.
                let y: &mut [f32; NR] = (&mut y[j0..j0 + NR]).try_into().expect("a panel");
                let arg: &mut [u32; NR] = (&mut arg[j0..j0 + NR]).try_into().expect("a panel");
                (*y, *arg) = (best, at);
            } else {
                y[j0..j0 + width].copy_from_slice(&best[..width]);
                arg[j0..j0 + width].copy_from_slice(&at[..width]);
            }
        }
    }
}

/// Bit `i % 64` of `out[i / 64]` is set where `values[i] != 0`; `out` holds
/// `values.len().div_ceil(64)` words.
pub fn nonzero_bits(values: &[f32], out: &mut [u64]) {
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above), all `bits_avx2` requires.
        unsafe { bits_avx2::<false>(values, out) };
        return;
    }
    bits_where::<false>(values, out);
}

/// Bit `i % 64` of `out[i / 64]` is set where `values[i] > 0`; `out` holds
/// `values.len().div_ceil(64)` words.
pub fn positive_bits(values: &[f32], out: &mut [u64]) {
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above), all `bits_avx2` requires.
        unsafe { bits_avx2::<true>(values, out) };
        return;
    }
    bits_where::<true>(values, out);
}

/// Zeroes `values[i]` where bit `i % 64` of `bits[i / 64]` is clear.
///
/// # Panics
/// If `bits` holds fewer than `values.len().div_ceil(64)` words.
pub fn mask_by_bits(values: &mut [f32], bits: &[u64]) {
    assert!(bits.len() >= values.len().div_ceil(64), "mask shape");
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above), all `mask_avx2` requires.
        unsafe { mask_avx2(values, bits) };
        return;
    }
    mask_impl(values, bits);
}

simd_fn! {
/// For each row of `filters` values of `dy` in order: zeroes the values whose bit is clear in
/// `bits` (as [`mask_by_bits`], if given), then adds the row to `sum` (`filters` values), each
/// sum in row order. One pass, the sum in registers for 32 or 64 filters.
///
/// # Panics
/// If `sum` does not hold `filters` values or `bits` is too short.
pub fn mask_and_sum_rows(dy: &mut [f32], bits: Option<&[u64]>, filters: usize, sum: &mut [f32]) {
    assert_eq!(sum.len(), filters, "sum shape");
    match (filters, bits) {
        (32, Some(bits)) => mask_sum_fixed::<32>(dy, bits, sum),
        (64, Some(bits)) => mask_sum_fixed::<64>(dy, bits, sum),
        _ => {
            if let Some(bits) = bits {
                mask_by_bits(dy, bits);
            }
            for row in dy.chunks_exact(filters.max(1)) {
                for (s, v) in sum.iter_mut().zip(row) {
                    *s += v;
                }
            }
        }
    }
}
}

/// [`mask_and_sum_rows`] for `F` filters, a multiple of 32: each row is whole 32-bit halves of
/// the words of `bits`.
#[inline(always)]
fn mask_sum_fixed<const F: usize>(dy: &mut [f32], bits: &[u64], sum: &mut [f32]) {
    let sum: &mut [f32; F] = sum.try_into().expect("F sums");
    let mut acc = *sum;
    for (r, row) in dy.chunks_exact_mut(F).enumerate() {
        for (j, (values, acc)) in row
            .chunks_exact_mut(32)
            .zip(acc.chunks_exact_mut(32))
            .enumerate()
        {
            let at = r * F + 32 * j;
            let half = (bits[at / 64] >> (at % 64)) as u32;
            for (l, (v, a)) in values.iter_mut().zip(acc).enumerate() {
                let keep = ((half >> l) & 1).wrapping_neg();
                *v = f32::from_bits(v.to_bits() & keep);
                *a += *v;
            }
        }
    }
    *sum = acc;
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn mask_avx2(values: &mut [f32], bits: &[u64]) {
    mask_impl(values, bits);
}

#[inline(always)]
fn mask_impl(values: &mut [f32], bits: &[u64]) {
    for (values, &word) in values.chunks_mut(64).zip(bits) {
        // Two 32-bit halves, so the shifts vectorise.
        for (values, half) in values
            .chunks_mut(32)
            .zip([word as u32, (word >> 32) as u32])
        {
            for (j, v) in values.iter_mut().enumerate() {
                let keep = ((half >> j) & 1).wrapping_neg();
                *v = f32::from_bits(v.to_bits() & keep);
            }
        }
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn bits_avx2<const POSITIVE: bool>(values: &[f32], out: &mut [u64]) {
    bits_where::<POSITIVE>(values, out);
}

/// Bit `i` of a word is `values[i] > 0` (`POSITIVE`) or `values[i] != 0`.
#[inline(always)]
fn bits_where<const POSITIVE: bool>(values: &[f32], out: &mut [u64]) {
    let word = |values: &[f32]| {
        values.iter().enumerate().fold(0u64, |w, (i, &v)| {
            let set = if POSITIVE { v > 0.0 } else { v != 0.0 };
            w | (u64::from(set) << i)
        })
    };
    let full = values.len() / 64;
    for (w, values) in out.iter_mut().zip(values.chunks_exact(64)) {
        let values: &[f32; 64] = values.try_into().expect("chunks of 64");
        *w = word(values);
    }
    if values.len() % 64 != 0 {
        out[full] = word(&values[full * 64..]);
    }
}

/// Selected values of a matrix as one list per target (a row or a column), each entry
/// `(source index, value)` in the matrix's order. Reused between calls: refilling it does not
/// allocate once it is large enough.
#[derive(Clone, Debug, Default)]
pub struct Lists {
    /// `(start, end)` of each target's entries in `entries`.
    bounds: Vec<(usize, usize)>,
    /// The entries, target by target.
    entries: Vec<(u32, f32)>,
}

impl Lists {
    /// One list per row of the row-major `(rows, cols)` matrix `values` (source = column): the
    /// values whose bit is set in `keep` (bit `i % 64` of word `i / 64` for flat index `i`).
    /// Visits set bits only, so its cost follows the number of entries, not of values.
    ///
    /// # Panics
    /// If `keep` or `values` is shorter than the matrix.
    pub fn fill_rows(&mut self, values: &[f32], keep: &[u64], rows: usize, cols: usize) {
        self.bounds.clear();
        self.entries.clear();
        for r in 0..rows {
            let start = self.entries.len();
            let (lo, hi) = (r * cols, (r + 1) * cols);
            let mut base = lo / 64 * 64;
            while base < hi {
                let mut bits = keep[base / 64];
                if base < lo {
                    bits &= !0 << (lo - base);
                }
                if hi - base < 64 {
                    bits &= (1 << (hi - base)) - 1;
                }
                while bits != 0 {
                    let i = base + bits.trailing_zeros() as usize;
                    self.entries.push(((i - lo) as u32, values[i]));
                    bits &= bits - 1;
                }
                base += 64;
            }
            self.bounds.push((start, self.entries.len()));
        }
    }

    /// The column lists of the matrix whose row lists are `rows` (source = row, in row order).
    pub fn fill_columns(&mut self, rows: &Lists, cols: usize) {
        self.bounds.clear();
        let mut next = vec![0usize; cols];
        for &(c, _) in &rows.entries {
            next[c as usize] += 1;
        }
        let mut start = 0;
        for n in &mut next {
            self.bounds.push((start, start + *n));
            (*n, start) = (start, start + *n);
        }
        self.entries.clear();
        self.entries.resize(start, (0, 0.0));
        for r in 0..rows.targets() {
            for &(c, v) in rows.of(r) {
                let slot = &mut next[c as usize];
                self.entries[*slot] = (r as u32, v);
                *slot += 1;
            }
        }
    }

    /// Targets.
    pub fn targets(&self) -> usize {
        self.bounds.len()
    }

    /// Whether there are no entries at all.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The entries of target `t`.
    pub fn of(&self, t: usize) -> &[(u32, f32)] {
        let (start, end) = self.bounds[t];
        &self.entries[start..end]
    }
}

/// For every target `t` of `lists`: `out[t·cols..][..cols] += Σ g · src[s]` over its entries
/// `(s, g)`, in list order. Works in blocks of a segment so that a block of every source row
/// stays in cache across the targets.
///
/// # Panics
/// If `out` does not hold `targets·cols` values or a source row is out of `src`.
pub fn gather_rows(src: &Rows, lists: &Lists, out: &mut [f32]) {
    assert_eq!(
        out.len(),
        lists.targets() * src.cols(),
        "gather output shape"
    );
    if src.cols() == 0 || lists.is_empty() {
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above), all `gather_fma` requires.
        unsafe { gather_fma(src, lists, out) };
        return;
    }
    gather_impl::<false>(src, lists, out);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gather_fma(src: &Rows, lists: &Lists, out: &mut [f32]) {
    gather_impl::<true>(src, lists, out);
}

#[inline(always)]
fn gather_impl<const FMA: bool>(src: &Rows, lists: &Lists, out: &mut [f32]) {
    for seg in 0..src.segments {
        let mut off = 0;
        while off < src.seg_len {
            let left = src.seg_len - off;
            off += if left >= 96 {
                gather_block::<FMA, 96>(src, seg, off, lists, out)
            } else if left >= 32 {
                gather_block::<FMA, 32>(src, seg, off, lists, out)
            } else if left >= 8 {
                gather_block::<FMA, 8>(src, seg, off, lists, out)
            } else {
                gather_block::<FMA, 1>(src, seg, off, lists, out)
            };
        }
    }
}

/// Values `off..off + W` of segment `seg` of every target; returns `W`.
#[inline(always)]
fn gather_block<const FMA: bool, const W: usize>(
    src: &Rows,
    seg: usize,
    off: usize,
    lists: &Lists,
    out: &mut [f32],
) -> usize {
    let at = seg * src.seg_len + off;
    for (t, dst) in out.chunks_exact_mut(src.cols()).enumerate() {
        let entries = lists.of(t);
        if entries.is_empty() {
            continue;
        }
        let mut acc = [0.0f32; W];
        for &(s, g) in entries {
            let row = &src.segment(s as usize, seg)[off..off + W];
            for (a, &x) in acc.iter_mut().zip(row) {
                *a = madd::<FMA>(g, x, *a);
            }
        }
        for (d, a) in dst[at..at + W].iter_mut().zip(&acc) {
            *d += a;
        }
    }
    W
}

/// The pooled output gradient of one image of a convolution followed by a max pool, and where
/// each pooled output's maximum was (see [`pooled_grads`]).
#[derive(Clone, Copy, Debug)]
pub struct Pooled<'a> {
    /// The gradient, `ph·pw·filters`.
    pub dy: &'a [f32],
    /// Each pooled output's position in its window, `row·pool + column`.
    pub arg: &'a [u32],
    /// The geometry.
    pub shape: PooledShape,
}

/// One image of a convolution followed by a max pool (windows `pool × pool`, stride `pool`), as
/// [`pooled_grads`] reads it.
#[derive(Clone, Copy, Debug)]
pub struct PooledShape {
    /// Output columns of the convolution.
    pub ow: usize,
    /// Filters.
    pub filters: usize,
    /// Window side.
    pub pool: usize,
    /// Rows of windows.
    pub ph: usize,
    /// Columns of windows.
    pub pw: usize,
}

/// The kernel and bias gradients of one image of a convolution followed by a max pool, from
/// the pooled output gradient `dy` (`ph·pw·filters`) and the argmax `arg` of each pooled output
/// (its position in its window, `row·pool + column`): `dw[t][f] += Σ_p cols[p][t]·dz[p][f]` and `db[f] += Σ_p dz[p][f]` over
/// the positions `p` of the convolution's output in order, `dz` being the gradient of the
/// convolution's output (`dy` where the argmax is, else zero). `cols` is the image's im2col
/// matrix (`oh·ow` rows of `taps`), `dw` `(taps, filters)` row-major.
///
/// The same sums in the same order as a GEMM `colsᵀ·dz` (fused multiply-adds as in
/// [`gemm_bias`]) and a row-by-row sum of `dz`, without writing `dz` out: its values are
/// made in registers, eight filters at a time (the zeros add nothing to a sum that starts from
/// zero).
///
/// # Panics
/// If the slices do not match `shape`.
pub fn pooled_grads(cols: &[f32], pooled: Pooled, dw: &mut [f32], db: &mut [f32]) {
    let Pooled { dy, arg, shape: s } = pooled;
    let taps = dw.len().checked_div(s.filters).unwrap_or(0);
    let last_row = (s.ph * s.pool).saturating_sub(1) * s.ow;
    assert!(
        dw.len() == taps * s.filters
            && db.len() == s.filters
            && dy.len() == s.ph * s.pw * s.filters
            && arg.len() == dy.len()
            && cols.len() >= (last_row + s.pw * s.pool) * taps
            && s.pw * s.pool <= s.ow,
        "pooled gradient shapes"
    );
    #[cfg(target_arch = "x86_64")]
    if has_fma() {
        // SAFETY: the CPU has AVX2 and FMA (checked just above), all `pooled_fma` requires.
        unsafe { pooled_fma(cols, pooled, dw, db) };
        return;
    }
    pooled_impl::<false>(cols, pooled, dw, db);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn pooled_fma(cols: &[f32], pooled: Pooled, dw: &mut [f32], db: &mut [f32]) {
    pooled_impl::<true>(cols, pooled, dw, db);
}

/// Filters per group of [`pooled_grads`] (one 8-lane vector).
const LANES: usize = 8;

#[inline(always)]
fn pooled_impl<const FMA: bool>(cols: &[f32], pooled: Pooled, dw: &mut [f32], db: &mut [f32]) {
    let shape = pooled.shape;
    let taps = dw.len() / shape.filters.max(1);
    let mut f0 = 0;
    while f0 < shape.filters {
        let left = shape.filters - f0;
        f0 += match (taps, left >= LANES) {
            (9, true) => pooled_group::<FMA, 9, LANES>(cols, pooled, f0, dw, db),
            (_, true) => pooled_group::<FMA, 0, LANES>(cols, pooled, f0, dw, db),
            (_, false) => pooled_group::<FMA, 0, 1>(cols, pooled, f0, dw, db),
        };
    }
}

/// [`pooled_grads`] for filters `f0..f0 + W` and `T` taps (or any number if `T` is 0, the
/// sums then in memory rather than registers); returns `W`.
#[inline(always)]
fn pooled_group<const FMA: bool, const T: usize, const W: usize>(
    cols: &[f32],
    pooled: Pooled,
    f0: usize,
    dw: &mut [f32],
    db: &mut [f32],
) -> usize {
    let Pooled { dy, arg, shape } = pooled;
    let PooledShape {
        ow,
        filters,
        pool,
        ph,
        pw,
    } = shape;
    let taps = if T > 0 { T } else { dw.len() / filters };
    let mut acc = [[0.0f32; W]; T];
    for (t, acc) in acc.iter_mut().enumerate() {
        acc.copy_from_slice(&dw[t * filters + f0..][..W]);
    }
    let mut sum: [f32; W] = db[f0..f0 + W].try_into().expect("a group");
    for oy in 0..ph * pool {
        let (band, row) = (oy / pool, oy % pool);
        for wx in 0..pw {
            let j = (band * pw + wx) * filters + f0;
            let g: &[f32; W] = dy[j..j + W].try_into().expect("a group");
            let at: &[u32; W] = arg[j..j + W].try_into().expect("a group");
            for dx in 0..pool {
                let ox = wx * pool + dx;
                // This position's index in its window.
                let here = (row * pool + dx) as u32;
                let mut dz = [0.0f32; W];
                for ((d, &g), &at) in dz.iter_mut().zip(g).zip(at) {
                    let hit = u32::from(at == here).wrapping_neg();
                    *d = f32::from_bits(g.to_bits() & hit);
                }
                let p = oy * ow + ox;
                let col = &cols[p * taps..][..taps];
                if T > 0 {
                    for (acc, &x) in acc.iter_mut().zip(col) {
                        for (a, &d) in acc.iter_mut().zip(&dz) {
                            *a = madd::<FMA>(x, d, *a);
                        }
                    }
                } else {
                    for (t, &x) in col.iter().enumerate() {
                        for (a, &d) in dw[t * filters + f0..][..W].iter_mut().zip(&dz) {
                            *a = madd::<FMA>(x, d, *a);
                        }
                    }
                }
                for (s, &d) in sum.iter_mut().zip(&dz) {
                    *s += d;
                }
            }
        }
    }
    for (t, acc) in acc.iter().enumerate() {
        dw[t * filters + f0..][..W].copy_from_slice(acc);
    }
    db[f0..f0 + W].copy_from_slice(&sum);
    W
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    fn random(len: usize, zeros: f64, rng: &mut ChaCha8Rng) -> Vec<f32> {
        (0..len)
            .map(|_| {
                if rng.gen_bool(zeros) {
                    0.0
                } else {
                    rng.gen_range(-1.0f32..1.0)
                }
            })
            .collect()
    }

    /// Within the error bound of an f32 dot product of `terms` terms of magnitude ≤ 1.
    fn close(a: f32, b: f64, terms: usize) -> bool {
        (f64::from(a) - b).abs() <= 1e-6 * (terms as f64 + 1.0)
    }

    #[test]
    fn gemm_matches_a_naive_product_on_odd_shapes() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        for (m, k, n) in [
            (1, 1, 1),
            (5, 3, 7),
            (6, 9, 16),
            (13, 288, 64),
            (7, 40, 33),
            (12, 17, 10),
        ] {
            for relu in [false, true] {
                let a = random(m * k, 0.2, &mut rng);
                let b = random(k * n, 0.0, &mut rng);
                let bias = random(n, 0.0, &mut rng);
                let mut c = vec![f32::NAN; m * n];
                gemm_bias(
                    &Rows::matrix(&a, k),
                    &Packed::new(&b, k, n),
                    &bias,
                    relu,
                    &mut c,
                );
                for i in 0..m {
                    for j in 0..n {
                        let mut s = f64::from(bias[j]);
                        for p in 0..k {
                            s += f64::from(a[i * k + p]) * f64::from(b[p * n + j]);
                        }
                        if relu {
                            s = s.max(0.0);
                        }
                        assert!(close(c[i * n + j], s, k), "{m}×{k}×{n} [{i}][{j}]");
                    }
                }
            }
        }
    }

    #[test]
    fn placed_rows_give_the_same_results_as_the_materialised_matrix() {
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        let data = random(300, 0.3, &mut rng);
        let (segments, seg_len) = (3, 37);
        let placed: Vec<(usize, usize)> = (0..11)
            .map(|_| (rng.gen_range(0..50), rng.gen_range(0..60)))
            .collect();
        let rows = Rows::placed(&data, &placed, segments, seg_len);
        let mut dense = Vec::new();
        for &(start, stride) in &placed {
            for s in 0..segments {
                dense.extend_from_slice(&data[start + s * stride..][..seg_len]);
            }
        }
        let dense = Rows::matrix(&dense, segments * seg_len);
        let (k, n) = (segments * seg_len, 21);
        let b = Packed::new(&random(k * n, 0.0, &mut rng), k, n);
        let bias = random(n, 0.0, &mut rng);
        let (mut c1, mut c2) = (vec![0.0; 11 * n], vec![0.0; 11 * n]);
        gemm_bias(&rows, &b, &bias, false, &mut c1);
        gemm_bias(&dense, &b, &bias, false, &mut c2);
        assert_eq!(c1, c2);
        let mut transposed = Vec::new();
        rows.transpose_into(&mut transposed);
        let dense_values: Vec<f32> = (0..11)
            .flat_map(|r| (0..k).map(move |c| (r, c)))
            .map(|(r, c)| transposed[c * 11 + r])
            .collect();
        assert_eq!(Rows::matrix(&dense_values, k).len(), 11);
        let (mut c3, mut c4) = (vec![0.0; 11 * n], vec![0.0; 11 * n]);
        gemm_bias(&Rows::matrix(&dense_values, k), &b, &bias, false, &mut c3);
        gemm_bias(&dense, &b, &bias, false, &mut c4);
        assert_eq!(c3, c4);
        let grads = random(11 * 4, 0.5, &mut rng);
        let mut keep = vec![0u64; 1];
        nonzero_bits(&grads, &mut keep);
        let (mut by_row, mut by_column) = (Lists::default(), Lists::default());
        by_row.fill_rows(&grads, &keep, 11, 4);
        by_column.fill_columns(&by_row, 4);
        let (mut o1, mut o2) = (vec![0.5; 4 * k], vec![0.5; 4 * k]);
        gather_rows(&rows, &by_column, &mut o1);
        gather_rows(&dense, &by_column, &mut o2);
        assert_eq!(o1, o2);
        assert_ne!(o1, vec![0.5; 4 * k]);
    }

    #[test]
    fn gemm_pool4_equals_the_gemm_then_the_first_largest_of_each_four_rows() {
        let mut rng = ChaCha8Rng::seed_from_u64(10);
        for (windows, k, n, relu) in [(5, 9, 32, true), (3, 7, 21, false), (2, 40, 16, true)] {
            // Few distinct values, so that rows often tie (the first one wins).
            let mut few = |len: usize| -> Vec<f32> {
                (0..len)
                    .map(|_| f32::from(rng.gen_range(-2i8..3)))
                    .collect()
            };
            let (a, b, bias) = (few(4 * windows * k), few(k * n), few(n));
            let (a, b) = (Rows::matrix(&a, k), Packed::new(&b, k, n));
            let mut c = vec![0.0; 4 * windows * n];
            gemm_bias(&a, &b, &bias, relu, &mut c);
            let (mut y, mut arg) = (vec![f32::NAN; windows * n], vec![9; windows * n]);
            gemm_pool4(&a, &b, &bias, relu, &mut y, &mut arg);
            for w in 0..windows {
                for j in 0..n {
                    let values: Vec<f32> = (0..4).map(|r| c[(4 * w + r) * n + j]).collect();
                    let best = values.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                    let first = values.iter().position(|&v| v == best).unwrap();
                    let at = w * n + j;
                    assert_eq!((y[at], arg[at] as usize), (best, first), "{w} {j}");
                }
            }
        }
    }

    #[test]
    fn a_refilled_packing_equals_a_fresh_one() {
        let mut rng = ChaCha8Rng::seed_from_u64(6);
        let mut packed = Packed::new(&random(9 * 40, 0.0, &mut rng), 9, 40);
        let b = random(5 * 21, 0.0, &mut rng);
        packed.refill(&b, 5, 21);
        let a = random(7 * 5, 0.0, &mut rng);
        let bias = random(21, 0.0, &mut rng);
        let (mut c1, mut c2) = (vec![0.0; 7 * 21], vec![0.0; 7 * 21]);
        gemm_bias(&Rows::matrix(&a, 5), &packed, &bias, true, &mut c1);
        gemm_bias(
            &Rows::matrix(&a, 5),
            &Packed::new(&b, 5, 21),
            &bias,
            true,
            &mut c2,
        );
        assert_eq!(c1, c2);
    }

    #[test]
    fn gemm_reads_a_row_major_b_in_place_as_it_reads_a_packed_one() {
        let mut rng = ChaCha8Rng::seed_from_u64(8);
        for (m, k, n) in [(9, 700, 32), (5, 3, 16), (13, 1, 48)] {
            let a = random(m * k, 0.3, &mut rng);
            let b = random(k * n, 0.5, &mut rng);
            let bias = random(n, 0.0, &mut rng);
            let (mut c1, mut c2) = (vec![0.0; m * n], vec![0.0; m * n]);
            let a = Rows::matrix(&a, k);
            let cols = Cols::row_major(&b, k, n).expect("whole panels");
            gemm_cols(&a, &cols, &bias, true, &mut c1);
            gemm_bias(&a, &Packed::new(&b, k, n), &bias, true, &mut c2);
            assert_eq!(c1, c2, "{m}×{k}×{n}");
        }
        assert!(Cols::row_major(&[0.0; 30], 3, 10).is_none());
    }

    #[test]
    fn mask_by_bits_zeroes_the_values_whose_bit_is_clear() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        for len in [0, 1, 31, 32, 64, 100, 300] {
            let values = random(len, 0.0, &mut rng);
            let bits: Vec<u64> = (0..len.div_ceil(64)).map(|_| rng.gen()).collect();
            let mut masked = values.clone();
            mask_by_bits(&mut masked, &bits);
            for (i, (m, v)) in masked.iter().zip(&values).enumerate() {
                let set = (bits[i / 64] >> (i % 64)) & 1 == 1;
                assert_eq!(*m, if set { *v } else { 0.0 }, "{len} [{i}]");
            }
        }
    }

    #[test]
    fn mask_and_sum_rows_equals_a_mask_then_sums_in_row_order() {
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        for (rows, filters) in [(13, 32), (7, 64), (9, 10), (5, 16)] {
            let dy = random(rows * filters, 0.2, &mut rng);
            let bits: Vec<u64> = (0..(rows * filters).div_ceil(64))
                .map(|_| rng.gen())
                .collect();
            let start = random(filters, 0.0, &mut rng);
            for bits in [Some(&bits[..]), None] {
                let (mut fused, mut sum) = (dy.clone(), start.clone());
                mask_and_sum_rows(&mut fused, bits, filters, &mut sum);
                let (mut masked, mut expected) = (dy.clone(), start.clone());
                if let Some(bits) = bits {
                    mask_by_bits(&mut masked, bits);
                }
                for row in masked.chunks_exact(filters) {
                    for (e, v) in expected.iter_mut().zip(row) {
                        *e += v;
                    }
                }
                assert_eq!((fused, sum), (masked, expected), "{rows}×{filters}");
            }
        }
    }

    #[test]
    fn nonzero_bits_mark_the_non_zero_values() {
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        for len in [0, 1, 7, 64, 65, 200] {
            let values = random(len, 0.5, &mut rng);
            let mut bits = vec![!0u64; len.div_ceil(64)];
            nonzero_bits(&values, &mut bits);
            for (i, v) in values.iter().enumerate() {
                assert_eq!(
                    (bits[i / 64] >> (i % 64)) & 1 == 1,
                    *v != 0.0,
                    "{len} [{i}]"
                );
            }
            if len % 64 != 0 {
                assert_eq!(bits[len / 64] >> (len % 64), 0, "bits past the end");
            }
        }
    }

    #[test]
    fn gather_matches_a_naive_sum_by_rows_and_by_columns() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let (mut by_row, mut by_column) = (Lists::default(), Lists::default());
        for (rows, cols, len) in [
            (9, 5, 7),
            (1, 1, 1),
            (30, 64, 288),
            (4, 3, 137),
            (6, 2, 0),
            (3, 130, 9),
        ] {
            let values = random(rows * cols, 0.6, &mut rng);
            // Keep every value but those of a pseudo-random pattern (as a ReLU mask would).
            let mut keep = vec![0u64; (rows * cols).div_ceil(64)];
            nonzero_bits(&values, &mut keep);
            let kept = |i: usize| i % 7 != 3;
            for (w, word) in keep.iter_mut().enumerate() {
                for b in 0..64 {
                    if !kept(w * 64 + b) {
                        *word &= !(1 << b);
                    }
                }
            }
            by_row.fill_rows(&values, &keep, rows, cols);
            by_column.fill_columns(&by_row, cols);
            for (lists, by_column, targets, sources) in
                [(&by_row, false, rows, cols), (&by_column, true, cols, rows)]
            {
                assert_eq!(lists.targets(), targets);
                let src = random(sources * len, 0.0, &mut rng);
                let start = random(targets * len, 0.0, &mut rng);
                let mut out = start.clone();
                gather_rows(&Rows::matrix(&src, len), lists, &mut out);
                for t in 0..targets {
                    for x in 0..len {
                        let mut s = f64::from(start[t * len + x]);
                        for q in 0..sources {
                            let i = if by_column {
                                q * cols + t
                            } else {
                                t * cols + q
                            };
                            if kept(i) {
                                s += f64::from(values[i]) * f64::from(src[q * len + x]);
                            }
                        }
                        assert!(close(out[t * len + x], s, sources), "[{t}][{x}]");
                    }
                }
            }
        }
    }
}

//! Two conv pixels per multiply-accumulate on cores without the DSP extension but with a
//! 32 × 32 → 64-bit multiply-accumulate (`SMLAL`: the Cortex-M3).
//!
//! A *pair word* holds the patch values `a` and `b` (offset added, so in `-255..=255`) of the
//! same tap of two pixels as the one number `a + b · 2^23` ([`pair_word`]). Multiplied by a
//! weight `w` and summed over taps in 64 bits, the words give `Σ a·w + 2^23 · Σ b·w`: both
//! pixels' sums, one `SMLAL` per tap and pair. They come apart exactly ([`split`]) while
//! `|Σ a·w| < 2^22`, i.e. over at most [`CHUNK_TAPS`] taps (`128 · 255 · 128 < 2^22`), so
//! the taps are summed in chunks of that many, each split and added to the pixels' `i32`
//! sums (which wrap as the other kernels' do).
//!
//! A *pair patch* holds the patches of up to four pixels: tap `t`'s pair words are words
//! `2t` (pixels 0 and 1) and `2t + 1` (pixels 2 and 3), `2 · taps` words in all (no more
//! than a quad patch of [`super::dot`]). [`pair_filters`] runs over all the filters, each
//! over the taps: per two taps one load of four pair words (`LDM`), two weight loads and
//! four `SMLAL`s, eight multiply-accumulates in seven instructions.
//!
//! A dense layer over a vector has no second pixel to pair; it pairs units instead: from
//! rows whose units the build paired ([`dense_pair_words_of`], `crate::stack::prepared`) one
//! `SMLAL` multiplies a value by two units' weights ([`dense_quads_paired`]); from the int8
//! rows alone the Cortex-M3 takes four units at a time from the values widened once
//! ([`dot4_wide`]: per value one halfword load, per unit one byte load and one `MLA`).
//!
//! Like [`super::dsp`], this module holds inline assembly and so allows `unsafe` code: on a
//! core with `SMLAL` and without the DSP extension (`cfg(infer_core_long_multiply)` without
//! `cfg(infer_core_dsp)`, set by `build.rs`), [`pair_filters`] is one block of assembly
//! over all the filters (LLVM's own loop unrolls and spills: the Cortex-M3 ran two-blocks
//! in 1,727,854 instructions through it, 1,076,357 through a first assembly loop per
//! filter). Everywhere else, including the host where the tests run, it is its portable
//! twin [`pair_filters_portable`], which the assembly must equal bit for bit
//! (`tests/kernel-check` runs both on the Cortex-M3 under QEMU).

#![allow(unsafe_code)]

use super::put_sum;

/// Bits from a pair word's first value to its second.
pub const PAIR_SHIFT: u32 = 23;

/// Taps summed in 64 bits before the sums are split ([`split`]): at most
/// `2^22 / (255 · 128)`.
pub const CHUNK_TAPS: usize = 128;

/// The pair word of values `a` and `b` (each in `-255..=255`): `a + b · 2^23`.
#[inline(always)]
pub const fn pair_word(a: i32, b: i32) -> u32 {
    a.wrapping_add(b.wrapping_shl(PAIR_SHIFT)) as u32
}

/// The two sums `(Σ a·w, Σ b·w)` of a 64-bit sum of pair words times weights, each sum of
/// magnitude below `2^22`.
#[inline(always)]
pub const fn split(sum: i64) -> (i32, i32) {
    let a = (sum as i32).wrapping_shl(32 - PAIR_SHIFT) >> (32 - PAIR_SHIFT);
    let b = (sum.wrapping_add(1 << (PAIR_SHIFT - 1)) >> PAIR_SHIFT) as i32;
    (a, b)
}

/// What [`pair_filters`] computes: the pair patch of `pixels` pixels (1 to 4) of `taps`
/// taps, `filters` filters' int8 rows of `taps` bytes one after the other in `weights`,
/// and `stride`, the distance in values between the pixels' results (0: they fold into
/// one, a pool window).
#[derive(Debug, Clone, Copy)]
pub struct PairConv<'a> {
    /// The pair patch.
    pub patch: &'a [u32],
    /// The filters' rows.
    pub weights: &'a [u8],
    /// Taps per patch.
    pub taps: usize,
    /// Filters.
    pub filters: usize,
    /// Pixels in the patch, 1 to 4.
    pub pixels: usize,
    /// Values from one pixel's results to the next pixel's.
    pub stride: usize,
    /// Whether to look for a background patch (all zeros, every sum 0) first: worth it in
    /// an image, where it is common, not in a deeper map.
    pub background: bool,
}

impl PairConv<'_> {
    /// Whether the patch is a background to skip ([`PairConv::background`] and all zeros).
    fn is_background(&self) -> bool {
        let patch = self.patch.get(..2 * self.taps).unwrap_or_default();
        self.background && super::all_zero(patch)
    }

    /// Whether the sizes fit the slices and `values`: [`pair_filters`]' precondition.
    fn fits(&self, values: &[u32]) -> bool {
        let Self {
            patch,
            weights,
            taps,
            filters,
            pixels,
            stride,
            ..
        } = *self;
        taps > 0
            && filters > 0
            && (1..=4).contains(&pixels)
            && patch.len() >= 2 * taps
            && weights.len() / taps >= filters
            && values.len() > (pixels - 1) * stride + filters - 1
    }
}

/// The pixels' convolutions ([`PairConv`]): for filter `f` and pixel `p < pixels`, the sum
/// `Σ x_p · w_f` (as `i32`) stored at `values[p · stride + f]`, or, with stride 0 (a pool
/// window), folded into the running max `values[f]` (the patch's other pixels are computed
/// from whatever their words hold, and dropped). With [`PairConv::background`], a patch of
/// zeros sums to 0 without the products. Computes nothing if a size does not fit.
///
/// With `SMLAL` and without the DSP extension (the Cortex-M3) one block of assembly runs
/// over all the filters (a background patch excepted): per filter, eight taps (32
/// multiply-accumulates of pixels) in 30 instructions — per two taps one `LDM` of four pair
/// words, two weight loads, four `SMLAL`s — then two taps at a time and a last one, and
/// about 35 instructions around them (the split, the four stores, the loop; more per
/// further chunk of [`CHUNK_TAPS`] taps and for a pool window); elsewhere
/// [`pair_filters_portable`].
#[inline(never)]
pub fn pair_filters(conv: &PairConv<'_>, values: &mut [u32]) {
    #[cfg(all(infer_core_long_multiply, not(infer_core_dsp)))]
    {
        if !conv.fits(values) {
            return;
        }
        if conv.is_background() {
            background_sums(conv, values);
        } else {
            pair_filters_asm(conv, values);
        }
    }
    #[cfg(not(all(infer_core_long_multiply, not(infer_core_dsp))))]
    pair_filters_portable(conv, values);
}

/// [`pair_filters`] in plain integer arithmetic, one filter at a time through
/// [`filter_sums`] (the reference the assembly is tested against, and the code elsewhere).
pub fn pair_filters_portable(conv: &PairConv<'_>, values: &mut [u32]) {
    if !conv.fits(values) {
        return;
    }
    if conv.is_background() {
        background_sums(conv, values);
        return;
    }
    let patch = conv.patch.get(..2 * conv.taps).unwrap_or_default();
    let rows = conv.weights.chunks_exact(conv.taps).take(conv.filters);
    for (f, w) in rows.enumerate() {
        for (p, sum) in filter_sums(patch, w)
            .into_iter()
            .take(conv.pixels)
            .enumerate()
        {
            put_sum(values, p * conv.stride + f, conv.stride, sum);
        }
    }
}

/// [`pair_filters`] of a background patch (every sum 0), without a multiply.
fn background_sums(conv: &PairConv<'_>, values: &mut [u32]) {
    for f in 0..conv.filters {
        for p in 0..conv.pixels {
            put_sum(values, p * conv.stride + f, conv.stride, 0);
        }
    }
}

/// Two taps of [`pair_filters`]' loops: two taps of both pair words (`LDM` into r2–r5), each
/// tap's weight into lr, four `SMLAL`s into the pairs' 64-bit sums r0:r1 and r8:r9.
#[cfg(all(infer_core_long_multiply, not(infer_core_dsp)))]
macro_rules! two_taps {
    () => {
        concat!(
            "ldm r10!, {{r2, r3, r4, r5}}\n",
            "ldrsb lr, [r11], #1\n",
            "smlal r0, r1, r2, lr\n",
            "smlal r8, r9, r3, lr\n",
            "ldrsb lr, [r11], #1\n",
            "smlal r0, r1, r4, lr\n",
            "smlal r8, r9, r5, lr\n",
        )
    };
}

/// The 64-bit pair sum `$lo:$hi` [`split`] into the sums `$a` (its first value's) and `$b`
/// (`$lo` and `$hi` are overwritten).
#[cfg(all(infer_core_long_multiply, not(infer_core_dsp)))]
macro_rules! split_pair {
    ($lo:literal, $hi:literal, $a:literal, $b:literal) => {
        concat!(
            "sbfx ",
            $a,
            ", ",
            $lo,
            ", #0, #23\n",
            "adds ",
            $lo,
            ", ",
            $lo,
            ", #0x400000\n",
            "adc ",
            $hi,
            ", ",
            $hi,
            ", #0\n",
            "lsr ",
            $lo,
            ", ",
            $lo,
            ", #23\n",
            "orr ",
            $b,
            ", ",
            $lo,
            ", ",
            $hi,
            ", lsl #9\n",
        )
    };
}

/// One chunk of one filter in [`pair_filters`]' assembly: the r12 (≥ 1) taps from the pair
/// words at r10 and the weights at r11 (both stepping on) into the 64-bit sums r0:r1 and
/// r8:r9 — eight taps at a time, two, a last one — then [`split`] into the four pixels'
/// sums r2–r5 (lr is scratch).
#[cfg(all(infer_core_long_multiply, not(infer_core_dsp)))]
macro_rules! chunk_sums {
    () => {
        concat!(
            "movs r0, #0\n",
            "movs r1, #0\n",
            "mov.w r8, #0\n",
            "mov.w r9, #0\n",
            "subs r12, r12, #8\n",
            "blo 52f\n",
            "51:\n",
            two_taps!(),
            two_taps!(),
            two_taps!(),
            two_taps!(),
            "subs r12, r12, #8\n",
            "bhs 51b\n",
            // r12 = taps left − 8: two at a time while at least two are left.
            "52:\n",
            "adds r12, r12, #6\n",
            "bmi 54f\n",
            "53:\n",
            two_taps!(),
            "subs r12, r12, #2\n",
            "bpl 53b\n",
            // r12 = taps left − 2: the last one, if any.
            "54:\n",
            "adds r12, r12, #1\n",
            "bne 55f\n",
            "ldrd r2, r3, [r10], #8\n",
            "ldrsb lr, [r11], #1\n",
            "smlal r0, r1, r2, lr\n",
            "smlal r8, r9, r3, lr\n",
            "55:\n",
            split_pair!("r0", "r1", "r2", "r3"),
            split_pair!("r8", "r9", "r4", "r5"),
        )
    };
}

/// [`pair_filters`]' assembly, for sizes that fit and a patch that is not a skipped
/// background.
#[cfg(all(infer_core_long_multiply, not(infer_core_dsp)))]
fn pair_filters_asm(conv: &PairConv<'_>, values: &mut [u32]) {
    let PairConv {
        patch,
        weights,
        taps,
        filters,
        pixels,
        stride,
        ..
    } = *conv;
    let first = taps.min(CHUNK_TAPS);
    // Bytes from a filter's value of pixel 0 to pixel p's; a pixel past `pixels` takes
    // pixel 0's place, which the block stores last.
    let offset = |p: usize| if p < pixels { 4 * p * stride } else { 0 };
    // A pool window's pixel count (its sums folded into the running max), else 0.
    let fold = if stride == 0 { pixels } else { 0 };
    let start = values.as_mut_ptr();
    // Registers: the 64-bit sums r0:r1 and r8:r9, the pair words r2–r5 (then the four
    // sums), the weight lr, the pair words' pointer r10, the weights' r11 (filter after
    // filter), the taps left r12. On the stack: the taps left after this chunk [sp], the
    // values' pointer (filter f's value of pixel 0) [sp, #4], the other pixels' offsets
    // [sp, #8..20], the values' end [sp, #20], the patch [sp, #24], the first chunk's taps
    // [sp, #28], the taps after it [sp, #32], `fold` [sp, #36], the four sums of the
    // chunks so far [sp, #40..56].
    // SAFETY: per filter (`filters` ≥ 1 of them, the loop ending when the values' pointer
    // reaches `start + filters`), r10 reads the patch's first 2 · taps words (at least
    // that long, checked by the caller, `fits`; word-aligned, as LDM and LDRD need) and
    // r11 the filter's `taps` bytes of `weights` (rows one after the other, `filters`
    // rows within it, checked); each loop tests its count before running. The stores
    // go to `values[p · stride + f]` for p < pixels (p ≥ pixels store to p = 0 first)
    // or, folding, `values[f]`, all within `values` (checked: longer than
    // `(pixels − 1) · stride + filters − 1`; word-aligned). The block writes only the 56
    // bytes it reserves below the stack pointer (a multiple of 8, so the stack stays
    // aligned) and gives them back; every register it writes is declared.
    unsafe {
        core::arch::asm!(
            "sub sp, #56",
            "str r0, [sp, #4]",
            "strd r1, r2, [sp, #8]",
            "strd r3, r4, [sp, #16]",
            "strd r5, r8, [sp, #24]",
            "strd r9, r12, [sp, #32]",
            // Filter after filter: the first chunk.
            "1:",
            "ldr r10, [sp, #24]",
            "ldr r12, [sp, #28]",
            chunk_sums!(),
            "ldr r0, [sp, #32]",
            "cbnz r0, 20f",
            // The filter's four sums r2–r5: stored, or folded.
            "3:",
            "ldr r0, [sp, #36]",
            "cbnz r0, 10f",
            "ldr r10, [sp, #4]",
            "ldrd r0, r1, [sp, #8]",
            "ldr r8, [sp, #16]",
            "str r5, [r10, r8]",
            "str r4, [r10, r1]",
            "str r3, [r10, r0]",
            "str r2, [r10], #4",
            "4:",
            "str r10, [sp, #4]",
            "ldr r0, [sp, #20]",
            "cmp r10, r0",
            "bne 1b",
            "b 9f",
            "20:",
            "b 21f",
            // Folded: a pixel past the window's (r0 of them) takes pixel 0's sum.
            "10:",
            "ldr r10, [sp, #4]",
            "cmp r0, #2",
            "it lo",
            "movlo r3, r2",
            "cmp r0, #3",
            "it lo",
            "movlo r4, r2",
            "cmp r0, #4",
            "it lo",
            "movlo r5, r2",
            "ldr r1, [r10]",
            "cmp r1, r2",
            "it lt",
            "movlt r1, r2",
            "cmp r1, r3",
            "it lt",
            "movlt r1, r3",
            "cmp r1, r4",
            "it lt",
            "movlt r1, r4",
            "cmp r1, r5",
            "it lt",
            "movlt r1, r5",
            "str r1, [r10], #4",
            "b 4b",
            // Further chunks (r0 taps left): the sums so far on the stack.
            "21:",
            "mov r12, r0",
            "strd r2, r3, [sp, #40]",
            "strd r4, r5, [sp, #48]",
            "22:",
            // This chunk: r12 = min(taps left, 128); the taps left after it to [sp].
            "subs r2, r12, #128",
            "it ls",
            "movls r2, #0",
            "str r2, [sp]",
            "it hi",
            "movhi r12, #128",
            chunk_sums!(),
            "ldrd r0, r1, [sp, #40]",
            "add r2, r0",
            "add r3, r1",
            "ldrd r0, r1, [sp, #48]",
            "add r4, r0",
            "add r5, r1",
            "ldr r12, [sp]",
            "cmp r12, #0",
            "beq 3b",
            "strd r2, r3, [sp, #40]",
            "strd r4, r5, [sp, #48]",
            "b 22b",
            "9:",
            "add sp, #56",
            inout("r0") start => _,
            inout("r1") offset(1) => _,
            inout("r2") offset(2) => _,
            inout("r3") offset(3) => _,
            inout("r4") start.wrapping_add(filters) => _,
            inout("r5") patch.as_ptr() => _,
            inout("r8") first => _,
            inout("r9") taps - first => _,
            out("r10") _,
            inout("r11") weights.as_ptr() => _,
            inout("r12") fold => _,
            out("lr") _,
        );
    }
}

/// The four pixels' sums of a pair patch (`2 · w.len()` words) with one filter's int8
/// weights `w` (bytes), wrapping: for each chunk of [`CHUNK_TAPS`] taps, the two 64-bit
/// sums of the pair words (as `i32`, any bits) times the weights, [`split`] and added.
/// `[0; 4]` if `patch` is shorter than `2 · w.len()` words.
pub fn filter_sums(patch: &[u32], w: &[u8]) -> [i32; 4] {
    if patch.len() / 2 < w.len() {
        return [0; 4];
    }
    let mut sums = [0i32; 4];
    for (words, w) in patch.chunks(2 * CHUNK_TAPS).zip(w.chunks(CHUNK_TAPS)) {
        let mut wide = [0i64; 2];
        for (pair, &w) in words.chunks_exact(2).zip(w) {
            let w = i64::from(w as i8);
            for (wide, &x) in wide.iter_mut().zip(pair) {
                *wide = wide.wrapping_add(i64::from(x as i32).wrapping_mul(w));
            }
        }
        let ((s0, s1), (s2, s3)) = (split(wide[0]), split(wide[1]));
        for (sum, s) in sums.iter_mut().zip([s0, s1, s2, s3]) {
            *sum = sum.wrapping_add(s);
        }
    }
    sums
}

/// One value of [`dot4_wide`]'s loop: the value (r8 steps on by the half), then per unit
/// its weight (rows r10, r11, r12, lr, each stepping on by the byte) and one `MLA` into
/// r0–r3.
#[cfg(all(infer_core_long_multiply, not(infer_core_dsp)))]
macro_rules! wide_value {
    () => {
        concat!(
            "ldrsh r4, [r8], #2\n",
            "ldrsb r5, [r10], #1\n",
            "mla r0, r4, r5, r0\n",
            "ldrsb r5, [r11], #1\n",
            "mla r1, r4, r5, r1\n",
            "ldrsb r5, [r12], #1\n",
            "mla r2, r4, r5, r2\n",
            "ldrsb r5, [lr], #1\n",
            "mla r3, r4, r5, r3\n",
        )
    };
}

/// Four values of [`dense_quads_wide`]' loop (`wide_value!` four times).
#[cfg(all(infer_core_long_multiply, not(infer_core_dsp)))]
macro_rules! wide_four {
    () => {
        concat!(wide_value!(), wide_value!(), wide_value!(), wide_value!())
    };
}

/// `Σ x[i] · w[i]` of widened values `xs` (int8 values with their offset added, as `i16`)
/// with four int8 weight rows (bytes) at once, each value loaded once for the four, over
/// the length of the shortest, wrapping.
///
/// On a core with `SMLAL` and without the DSP extension (the Cortex-M3) one loop of
/// assembly for the whole fours of values: per value one halfword load, per unit one
/// signed byte load and one `MLA` (nine instructions per four multiply-accumulates), two
/// per four values for the loop end; the last values in Rust. Elsewhere
/// [`dot4_wide_portable`].
#[inline(never)]
pub fn dot4_wide(xs: &[i16], rows: [&[u8]; 4]) -> [i32; 4] {
    #[cfg(all(infer_core_long_multiply, not(infer_core_dsp)))]
    {
        let n = rows.iter().fold(xs.len(), |n, r| n.min(r.len()));
        let body = n / 4 * 4;
        if body > 0 {
            let (mut a0, mut a1, mut a2, mut a3) = (0i32, 0i32, 0i32, 0i32);
            // SAFETY: the loop runs body / 4 ≥ 1 times; r8 reads the first `body` halves of
            // `xs` (within it: body ≤ xs.len(); 2-aligned as an `i16` slice is, which LDRSH
            // needs) and r10, r11, r12, lr the first `body` bytes of the four rows (each at
            // least `body` long). It writes only the registers it declares; no stack.
            unsafe {
                core::arch::asm!(
                    "2:",
                    wide_value!(),
                    wide_value!(),
                    wide_value!(),
                    wide_value!(),
                    "cmp r8, r9",
                    "bne 2b",
                    inout("r0") a0,
                    inout("r1") a1,
                    inout("r2") a2,
                    inout("r3") a3,
                    out("r4") _,
                    out("r5") _,
                    inout("r8") xs.as_ptr() => _,
                    in("r9") xs.as_ptr().wrapping_add(body),
                    inout("r10") rows[0].as_ptr() => _,
                    inout("r11") rows[1].as_ptr() => _,
                    inout("r12") rows[2].as_ptr() => _,
                    inout("lr") rows[3].as_ptr() => _,
                    options(nostack, readonly),
                );
            }
            let tail = dot4_wide_portable(
                xs.get(body..).unwrap_or_default(),
                rows.map(|r| r.get(body..).unwrap_or_default()),
            );
            return [
                a0.wrapping_add(tail[0]),
                a1.wrapping_add(tail[1]),
                a2.wrapping_add(tail[2]),
                a3.wrapping_add(tail[3]),
            ];
        }
    }
    dot4_wide_portable(xs, rows)
}

/// Whether the sizes fit [`dense_quads_wide`]: whole sixteens of values (at least one), whole
/// quads of units (at least one) within `weights`, rows `stride` ≥ the values apart.
fn quads_wide_fit(xs: &[i16], weights: &[u8], stride: usize, acc: &[u32]) -> bool {
    let (n, units) = (xs.len(), acc.len() / 4 * 4);
    n >= 16 && n % 16 == 0 && stride >= n && units > 0 && weights.len() >= (units - 1) * stride + n
}

/// A dense layer's units four at a time from widened values `xs` (as [`dot4_wide`]): adds
/// each unit's dot product of `xs` with its row (row `u` is `weights[u · stride..]`) into
/// `acc` (one per unit; units past the last whole quad are left alone), wrapping. Computes
/// nothing if a size does not fit (values not whole sixteens, fewer than four units, short
/// slices).
///
/// On the Cortex-M3 one block of assembly: [`dot4_wide`]'s loop sixteen values at a time
/// (146 instructions per 64 multiply-accumulates) for every quad of units, 16 instructions
/// per quad around it; elsewhere [`dense_quads_wide_portable`].
#[inline(never)]
pub fn dense_quads_wide(xs: &[i16], weights: &[u8], stride: usize, acc: &mut [u32]) {
    if !quads_wide_fit(xs, weights, stride, acc) {
        return;
    }
    #[cfg(all(infer_core_long_multiply, not(infer_core_dsp)))]
    {
        let n = xs.len();
        let w = weights.as_ptr();
        // Registers: the four units' sums r0–r3, the value r4, the weight r5, the value
        // pointer r8 and its end r9, the four rows r10, r11, r12, lr. On the stack (pushed
        // from r0–r3): the values' start [sp], the accumulator pointer [sp, #4], quads left
        // [sp, #8], the step from where a row's pointer ends to the next quad's [sp, #12].
        // SAFETY: per quad, r8 reads the `n` halves of `xs` (2-aligned, as LDRSH needs),
        // r10, r11, r12 and lr read `n` bytes of rows 4i to 4i + 3 (the last row ends
        // within `weights`, checked above), [sp, #4] walks `acc` four words per quad
        // (checked above, word-aligned as LDM/STM need); the inner loop runs n / 16 ≥ 1
        // times. The block pops the four words it pushes; every register it writes is
        // declared.
        unsafe {
            core::arch::asm!(
                "push {{r0, r1, r2, r3}}",
                "3:",
                "ldr r8, [sp]",
                "ldr r4, [sp, #4]",
                "ldm r4, {{r0, r1, r2, r3}}",
                "2:",
                wide_four!(),
                wide_four!(),
                wide_four!(),
                wide_four!(),
                "cmp r8, r9",
                "bne 2b",
                "ldr r4, [sp, #4]",
                "stm r4!, {{r0, r1, r2, r3}}",
                "str r4, [sp, #4]",
                "ldr r4, [sp, #12]",
                "add r10, r4",
                "add r11, r4",
                "add r12, r4",
                "add lr, r4",
                "ldr r4, [sp, #8]",
                "subs r4, #1",
                "str r4, [sp, #8]",
                "bne 3b",
                "add sp, #16",
                inout("r0") xs.as_ptr() => _,
                inout("r1") acc.as_mut_ptr() => _,
                inout("r2") acc.len() / 4 => _,
                inout("r3") 4 * stride - n => _,
                out("r4") _,
                out("r5") _,
                out("r8") _,
                in("r9") xs.as_ptr().wrapping_add(n),
                inout("r10") w => _,
                inout("r11") w.wrapping_add(stride) => _,
                inout("r12") w.wrapping_add(2 * stride) => _,
                inout("lr") w.wrapping_add(3 * stride) => _,
            );
        }
    }
    #[cfg(not(all(infer_core_long_multiply, not(infer_core_dsp))))]
    dense_quads_wide_portable(xs, weights, stride, acc);
}

/// [`dense_quads_wide`] in plain integer arithmetic (the reference the assembly is tested
/// against, and the code elsewhere).
pub fn dense_quads_wide_portable(xs: &[i16], weights: &[u8], stride: usize, acc: &mut [u32]) {
    if !quads_wide_fit(xs, weights, stride, acc) {
        return;
    }
    for (q, quad) in acc.chunks_exact_mut(4).enumerate() {
        let rows = [0, 1, 2, 3].map(|u| weights.get((4 * q + u) * stride..).unwrap_or_default());
        for (a, sum) in quad.iter_mut().zip(dot4_wide_portable(xs, rows)) {
            *a = a.wrapping_add(sum as u32);
        }
    }
}

/// [`dot4_wide`] in plain integer arithmetic (the reference the assembly is tested
/// against, and the code elsewhere).
pub fn dot4_wide_portable(xs: &[i16], rows: [&[u8]; 4]) -> [i32; 4] {
    let [r0, r1, r2, r3] = rows;
    let (mut a0, mut a1, mut a2, mut a3) = (0i32, 0i32, 0i32, 0i32);
    for ((((&x, &w0), &w1), &w2), &w3) in xs.iter().zip(r0).zip(r1).zip(r2).zip(r3) {
        let x = i32::from(x);
        a0 = a0.wrapping_add(x.wrapping_mul(i32::from(w0 as i8)));
        a1 = a1.wrapping_add(x.wrapping_mul(i32::from(w1 as i8)));
        a2 = a2.wrapping_add(x.wrapping_mul(i32::from(w2 as i8)));
        a3 = a3.wrapping_add(x.wrapping_mul(i32::from(w3 as i8)));
    }
    [a0, a1, a2, a3]
}

/// Whether this build's prepared dense weights (`crate::stack::prepared`) are paired
/// rows ([`dense_pair_words_of`]): on the Cortex-M3 (`SMLAL` without the DSP extension),
/// where [`dense_quads_paired`] takes them; a DSP core's are widened rows.
pub const PAIRED: bool = cfg!(all(infer_core_long_multiply, not(infer_core_dsp)));

/// Words of a dense layer's rows paired for [`dense_quads_paired`]: its whole quads of
/// units (`units / 4 · 4` rows of `inputs`), one pair word per two units and input.
pub const fn dense_pair_words(inputs: usize, units: usize) -> usize {
    units / 4 * 2 * inputs
}

/// A dense layer's `units` rows of `inputs` int8 weights (`weights`) as
/// [`dense_quads_paired`] loads them: per quad of units, per input `i`, the pair words
/// ([`pair_word`]) of units 0 and 1's weights `i` and of units 2 and 3's.
/// [`dense_pair_words`] words; the units after the last whole quad are not paired.
/// (`crate::stack::prepared::is_dense_prepared` checks a model's against them.)
pub fn dense_pair_words_of(
    weights: &[u8],
    inputs: usize,
    units: usize,
) -> impl Iterator<Item = u32> + '_ {
    let w = move |u: usize, i: usize| {
        i32::from(weights.get(u * inputs + i).copied().unwrap_or(0) as i8)
    };
    (0..units / 4).flat_map(move |q| {
        (0..inputs).flat_map(move |i| {
            let u = 4 * q;
            [
                pair_word(w(u, i), w(u + 1, i)),
                pair_word(w(u + 2, i), w(u + 3, i)),
            ]
        })
    })
}

/// Whether the sizes fit [`dense_quads_paired`]: whole fours of values (at least one), at
/// least one quad of units in `acc` and its paired rows.
fn quads_paired_fit(xs: &[i16], words: &[u32], acc: &[u32]) -> bool {
    let (n, quads) = (xs.len(), acc.len() / 4);
    n >= 4 && n % 4 == 0 && quads > 0 && words.len() / quads >= 2 * n
}

/// One value of [`dense_quads_paired`]' loop: the value into r4, its two pair words
/// (`LDM` into r5, r8), two `SMLAL`s into the pairs' 64-bit sums r0:r1 and r2:r3.
#[cfg(all(infer_core_long_multiply, not(infer_core_dsp)))]
macro_rules! paired_value {
    () => {
        concat!(
            "ldrsh r4, [r9], #2\n",
            "ldm r11!, {{r5, r8}}\n",
            "smlal r0, r1, r4, r5\n",
            "smlal r2, r3, r4, r8\n",
        )
    };
}

/// A dense layer's units four at a time from widened values `xs` (int8 values with their
/// offset added, as `i16`) and paired rows `words` ([`dense_pair_words_of`], from the first
/// quad of `acc`'s units on): adds each unit's dot product into `acc` (units past the last
/// whole quad are left alone), wrapping. Each pair word times a value gives two units'
/// products in one `SMLAL`, as [`pair_filters`] gives two pixels'; the taps are summed in
/// chunks of [`CHUNK_TAPS`] and [`split`]. Computes nothing if a size does not fit (values
/// not whole fours, fewer than four units, short slices).
///
/// On the Cortex-M3 one block of assembly: per value one halfword load, one `LDM` of two
/// pair words and two `SMLAL`s (four multiply-accumulates in four instructions, plus two per
/// four values for the loop end), and about 40 instructions per chunk and quad around
/// them, against 2.25 instructions per multiply-accumulate from the int8 rows
/// ([`dense_quads_wide`]); elsewhere [`dense_quads_paired_portable`].
#[inline(never)]
pub fn dense_quads_paired(xs: &[i16], words: &[u32], acc: &mut [u32]) {
    if !quads_paired_fit(xs, words, acc) {
        return;
    }
    #[cfg(all(infer_core_long_multiply, not(infer_core_dsp)))]
    {
        // Registers: the pairs' 64-bit sums r0:r1 (units 0, 1) and r2:r3 (units 2, 3); the
        // value r4; the pair words r5, r8; the value pointer r9 and the chunk's end r10;
        // the words' pointer r11; the accumulator pointer r12; lr scratch. On the stack
        // (pushed from r0–r3): the values' start [sp] and end [sp, #4], quads left
        // [sp, #8].
        // SAFETY: per quad and chunk, r9 reads at most 128 halves of `xs` up to r10, which
        // is at most the values' end (2-aligned, as LDRSH needs; every chunk a whole four
        // of values, as the length is), so per quad exactly the `xs.len()` values; r11
        // reads two words per value, 2 · xs.len() per quad (quads · 2 · xs.len() checked
        // above; a `u32` slice is word-aligned, as LDM needs); r12 reads and writes the
        // quad's four words of `acc` (checked above, word-aligned as LDM/STM need) and
        // moves on by four. The block pops the four words it pushes; every register it
        // writes is declared.
        unsafe {
            core::arch::asm!(
                "push {{r0, r1, r2, r3}}",
                "3:",
                "ldr r9, [sp]",
                "4:",
                // This chunk: up to 128 values, to the end at most.
                "add r10, r9, #256",
                "ldr lr, [sp, #4]",
                "cmp r10, lr",
                "it hi",
                "movhi r10, lr",
                "movs r0, #0",
                "movs r1, #0",
                "movs r2, #0",
                "movs r3, #0",
                "2:",
                paired_value!(),
                paired_value!(),
                paired_value!(),
                paired_value!(),
                "cmp r9, r10",
                "bne 2b",
                // The chunk's four sums into the quad's.
                split_pair!("r0", "r1", "r4", "lr"),
                "ldm r12, {{r5, r8}}",
                "add r5, r4",
                "add r8, lr",
                "stm r12!, {{r5, r8}}",
                split_pair!("r2", "r3", "r4", "lr"),
                "ldm r12, {{r5, r8}}",
                "add r5, r4",
                "add r8, lr",
                "stm r12!, {{r5, r8}}",
                "ldr lr, [sp, #4]",
                "cmp r9, lr",
                "itt ne",
                "subne r12, #16",
                "bne 4b",
                "ldr lr, [sp, #8]",
                "subs lr, #1",
                "str lr, [sp, #8]",
                "bne 3b",
                "add sp, #16",
                inout("r0") xs.as_ptr() => _,
                inout("r1") xs.as_ptr().wrapping_add(xs.len()) => _,
                inout("r2") acc.len() / 4 => _,
                out("r3") _,
                out("r4") _,
                out("r5") _,
                out("r8") _,
                out("r9") _,
                out("r10") _,
                inout("r11") words.as_ptr() => _,
                inout("r12") acc.as_mut_ptr() => _,
                out("lr") _,
            );
        }
    }
    #[cfg(not(all(infer_core_long_multiply, not(infer_core_dsp))))]
    dense_quads_paired_portable(xs, words, acc);
}

/// [`dense_quads_paired`] in plain integer arithmetic, chunk by chunk as the assembly sums
/// (the reference the assembly is tested against, and the code elsewhere).
pub fn dense_quads_paired_portable(xs: &[i16], words: &[u32], acc: &mut [u32]) {
    if !quads_paired_fit(xs, words, acc) {
        return;
    }
    let n = xs.len();
    for (quad, words) in acc.chunks_exact_mut(4).zip(words.chunks_exact(2 * n)) {
        let chunks = xs.chunks(CHUNK_TAPS).zip(words.chunks(2 * CHUNK_TAPS));
        for (xs, words) in chunks {
            let mut wide = [0i64; 2];
            for (&x, pair) in xs.iter().zip(words.chunks_exact(2)) {
                for (sum, &word) in wide.iter_mut().zip(pair) {
                    let product = i64::from(x).wrapping_mul(i64::from(word as i32));
                    *sum = sum.wrapping_add(product);
                }
            }
            let [(s0, s1), (s2, s3)] = wide.map(split);
            for (a, s) in quad.iter_mut().zip([s0, s1, s2, s3]) {
                *a = a.wrapping_add(s as u32);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::TestRng;
    use std::vec::Vec;

    #[test]
    fn pair_words_split_back_into_their_sums_at_the_extremes() {
        for (a, b) in [(255, 255), (-255, -255), (255, -255), (-255, 255), (0, 1)] {
            for w in [127i64, -128] {
                let sum =
                    (0..CHUNK_TAPS).fold(0i64, |s, _| s + i64::from(pair_word(a, b) as i32) * w);
                let n = CHUNK_TAPS as i32;
                assert_eq!(
                    split(sum),
                    (n * a * w as i32, n * b * w as i32),
                    "{a} {b} {w}"
                );
            }
        }
    }

    /// The kernel against the sums of products written out, on random tap counts (across
    /// chunk boundaries), values at their extremes, random or all 0 (background), pixel
    /// counts, strides and starting maxima; too short a slice changes nothing.
    #[test]
    fn pair_filters_store_or_fold_the_sums_of_products() {
        let mut rng = TestRng(0x9A125);
        for case in 0..400 {
            let taps = 1 + rng.below(300) as usize;
            let filters = 1 + rng.below(6) as usize;
            let pixels = 1 + rng.below(4) as usize;
            let stride = if rng.below(3) == 0 {
                0
            } else {
                filters + rng.below(3) as usize
            };
            let (extreme, background) = (case % 4 == 0, case % 8 == 1);
            let x: Vec<[i32; 4]> = (0..taps)
                .map(|_| {
                    [0; 4].map(|_| match (extreme, background) {
                        (true, _) => [255, -255][rng.below(2) as usize],
                        (_, true) => 0,
                        _ => rng.below(511) as i32 - 255,
                    })
                })
                .collect();
            let weights: Vec<u8> = (0..taps * filters)
                .map(|_| match extreme {
                    true => [0x7F, 0x80][rng.below(2) as usize],
                    false => rng.next_u64() as u8,
                })
                .collect();
            let mut patch = std::vec![0u32; 2 * taps];
            for (t, x) in x.iter().enumerate() {
                patch[2 * t] = pair_word(x[0], x[1]);
                patch[2 * t + 1] = pair_word(x[2], x[3]);
            }
            let len = (pixels - 1) * stride + filters;
            let start: Vec<u32> = (0..len)
                .map(|_| rng.next_u64() as u32 >> rng.below(32))
                .collect();
            let mut want = start.clone();
            for f in 0..filters {
                // `p` picks a pixel in every tap's values and its place in `want`.
                #[allow(clippy::needless_range_loop)]
                for p in 0..pixels {
                    let sum = (0..taps).fold(0i32, |s, t| {
                        s.wrapping_add(x[t][p] * i32::from(weights[f * taps + t] as i8))
                    });
                    put_sum(&mut want, p * stride + f, stride, sum);
                }
            }
            let conv = PairConv {
                patch: &patch,
                weights: &weights,
                taps,
                filters,
                pixels,
                stride,
                background: rng.below(2) == 0,
            };
            let mut values = start.clone();
            pair_filters(&conv, &mut values);
            assert_eq!(values, want, "case {case}: {taps} taps, {pixels} pixels");
            let short = [
                PairConv {
                    patch: &patch[..2 * taps - 1],
                    ..conv
                },
                PairConv {
                    weights: &weights[..taps * filters - 1],
                    ..conv
                },
                PairConv { pixels: 5, ..conv },
                PairConv { pixels: 0, ..conv },
            ];
            for conv in short {
                let mut values = start.clone();
                pair_filters(&conv, &mut values);
                assert_eq!(values, start, "case {case}");
            }
            let mut values = start[..len - 1].to_vec();
            pair_filters(&conv, &mut values);
            assert_eq!(values, start[..len - 1], "case {case}");
        }
    }

    #[test]
    fn dense_quads_paired_add_the_sums_of_products() {
        use crate::stack::prepared::{is_dense_prepared, Preparation::Paired};
        let mut rng = TestRng(0x9A1D);
        for case in 0..90 {
            // Across chunk ends (128 values), with extreme values and weights.
            let n = match case % 6 {
                0 => 4,
                1 => 128,
                2 => 132,
                3 => 640,
                _ => 4 * (1 + rng.below(70) as usize),
            };
            let units = 1 + rng.below(14) as usize;
            let extreme = case % 5 == 0;
            let xs: Vec<i16> = (0..n)
                .map(|_| match extreme {
                    true => [255, -255][rng.below(2) as usize],
                    false => rng.below(511) as i16 - 255,
                })
                .collect();
            let w: Vec<u8> = (0..units * n)
                .map(|_| match extreme {
                    true => [0x80, 0x7f][rng.below(2) as usize],
                    false => rng.next_u64() as u8,
                })
                .collect();
            let words: Vec<u32> = dense_pair_words_of(&w, n, units).collect();
            assert_eq!(words.len(), dense_pair_words(n, units));
            assert_eq!(
                is_dense_prepared((&w, n, units, 0), &words, Paired),
                units >= 4,
                "case {case}"
            );
            let start: Vec<u32> = (0..units).map(|_| rng.next_u64() as u32).collect();
            let mut want = start.clone();
            for (u, a) in want.iter_mut().take(units / 4 * 4).enumerate() {
                let sum = (0..n).fold(0i32, |s, i| {
                    s.wrapping_add(i32::from(xs[i]) * i32::from(w[u * n + i] as i8))
                });
                *a = a.wrapping_add(sum as u32);
            }
            let mut got = start.clone();
            dense_quads_paired(&xs, &words, &mut got);
            assert_eq!(got, want, "case {case}");
            let mut got = start.clone();
            dense_quads_paired_portable(&xs, &words, &mut got);
            assert_eq!(got, want, "portable, case {case}");
            // Short words, or values not whole fours: nothing computed.
            if units >= 4 {
                let mut got = start.clone();
                dense_quads_paired(&xs, &words[..words.len() - 1], &mut got);
                assert_eq!(got, start, "short words, case {case}");
                let mut got = start.clone();
                dense_quads_paired(&xs[..n - 1], &words, &mut got);
                assert_eq!(got, start, "odd values, case {case}");
                let mut changed = words.clone();
                changed[rng.below(words.len() as u64) as usize] ^= 1;
                assert!(
                    !is_dense_prepared((&w, n, units, 0), &changed, Paired),
                    "case {case}"
                );
            }
        }
    }

    #[test]
    fn dense_quads_wide_add_the_sums_of_products() {
        let mut rng = TestRng(0x91DE);
        for case in 0..80 {
            let n = 8 * (case % 9) + if case % 5 == 4 { 4 } else { 0 };
            let stride = n + rng.below(9) as usize;
            let units = 1 + rng.below(14) as usize;
            let xs: Vec<i16> = (0..n).map(|_| rng.below(511) as i16 - 255).collect();
            let w: std::vec::Vec<u8> = (0..units * stride).map(|_| rng.next_u64() as u8).collect();
            let start: std::vec::Vec<u32> = (0..units).map(|_| rng.next_u64() as u32).collect();
            let mut want = start.clone();
            if n >= 16 && n % 16 == 0 {
                for (u, a) in want.iter_mut().take(units / 4 * 4).enumerate() {
                    let sum: i32 = (0..n)
                        .map(|i| i32::from(xs[i]) * i32::from(w[u * stride + i] as i8))
                        .sum();
                    *a = a.wrapping_add(sum as u32);
                }
            }
            let mut got = start.clone();
            dense_quads_wide(&xs, &w, stride, &mut got);
            assert_eq!(got, want, "case {case}");
            let mut got = start.clone();
            dense_quads_wide_portable(&xs, &w, stride, &mut got);
            assert_eq!(got, want, "portable, case {case}");
        }
    }
}

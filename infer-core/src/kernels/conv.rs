//! int8 Conv2D: stride 1 or 2, valid or same padding, per-channel weights, fused activation
//! clamp. [`conv2d_i8`] is the reference; the fast path is the stage engine
//! ([`crate::stack::stages`]), which gathers each output pixel's patch with `gather_patch`
//! (packed for two multiply-accumulates per instruction on DSP cores) and is tested against
//! the reference bit for bit.

#[cfg(doc)]
use super::dot::pack_patch;
#[cfg(doc)]
use super::dsp::gather_3x3_run;
use super::dsp::{copy_bytes, int8_of_words, pack, pack_groups, pack_pixel_groups};
use super::mve::TapRuns;
use super::pairs::pair_word;
use super::window::taps_inside;
use super::{ChannelRequant, MapRows};
use core::num::NonZeroUsize;

/// Padding of a convolution, as TensorFlow defines it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Padding {
    /// No padding: `out = ⌊(in − kernel) / stride⌋ + 1`.
    Valid,
    /// Zero padding so that `out = ⌈in / stride⌉`; the smaller half of the padding goes
    /// before (top / left).
    Same,
}

/// Output length of a convolution along one axis (0 if the kernel does not fit a valid one).
pub const fn out_dim(input: usize, kernel: usize, stride: usize, padding: Padding) -> usize {
    if stride == 0 || kernel == 0 {
        return 0;
    }
    match padding {
        Padding::Valid => {
            if kernel > input {
                0
            } else {
                by_stride(input - kernel, stride, false) + 1
            }
        }
        Padding::Same => by_stride(input, stride, true),
    }
}

/// `n / stride` (`stride` > 0), rounded up with `up`. Strides 1 and 2 without a division
/// where the core has no divide instruction (the Cortex-M0 calls a library routine of some
/// 70 instructions: resnet-tiny's geometry, computed again for each pixel, took some 370,000
/// instructions an inference of them there).
#[inline(always)]
const fn by_stride(n: usize, stride: usize, up: bool) -> usize {
    if cfg!(all(target_arch = "arm", not(infer_core_long_multiply))) {
        match stride {
            1 => return n,
            2 => return (n + up as usize) / 2,
            _ => {}
        }
    }
    if up {
        n.div_ceil(stride)
    } else {
        n / stride
    }
}

/// Padding before the first input row / column along one axis.
pub const fn pad_before(input: usize, kernel: usize, stride: usize, padding: Padding) -> usize {
    match padding {
        Padding::Valid => 0,
        Padding::Same => {
            let out = out_dim(input, kernel, stride, padding);
            if out == 0 {
                return 0;
            }
            ((out - 1) * stride + kernel).saturating_sub(input) / 2
        }
    }
}

/// Shape of a convolution over an NHWC input.
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
    /// Step in both directions.
    pub stride: usize,
    /// Valid or same.
    pub padding: Padding,
}

impl ConvGeometry {
    /// Output rows.
    pub const fn out_h(&self) -> usize {
        out_dim(self.in_h, self.k_h, self.stride, self.padding)
    }
    /// Output columns.
    pub const fn out_w(&self) -> usize {
        out_dim(self.in_w, self.k_w, self.stride, self.padding)
    }
    /// Zero rows above the input.
    pub const fn pad_top(&self) -> usize {
        pad_before(self.in_h, self.k_h, self.stride, self.padding)
    }
    /// Zero columns left of the input.
    pub const fn pad_left(&self) -> usize {
        pad_before(self.in_w, self.k_w, self.stride, self.padding)
    }
    /// Values in one patch: `k_h · k_w · in_c`.
    pub const fn taps(&self) -> usize {
        self.k_h * self.k_w * self.in_c
    }
    /// The input row of kernel row `ky` at output row `oy`, if it is not padding.
    #[inline(always)]
    fn in_row(&self, oy: usize, ky: usize) -> Option<usize> {
        (oy * self.stride + ky)
            .checked_sub(self.pad_top())
            .filter(|&y| y < self.in_h)
    }
    /// The input column of kernel column `kx` at output column `ox`, if it is not padding.
    #[inline(always)]
    fn in_col(&self, ox: usize, kx: usize) -> Option<usize> {
        (ox * self.stride + kx)
            .checked_sub(self.pad_left())
            .filter(|&x| x < self.in_w)
    }
}

/// int8 convolution as TFLite computes it:
/// `out[y][x][f] = clamp(requant(bias[f] + Σ (in + input_offset) · w[f]) + zero point)`.
/// Padding stands for real 0, the input zero point, so padded taps add nothing.
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
    let Some(sizes) = ChunkSizes::of(g) else {
        return;
    };
    for (oy, out_row) in output
        .chunks_exact_mut(sizes.out_row)
        .take(g.out_h())
        .enumerate()
    {
        for (ox, out_px) in out_row.chunks_exact_mut(sizes.pixel).enumerate() {
            for (fi, (out, w_f)) in out_px
                .iter_mut()
                .zip(weights.chunks_exact(sizes.taps))
                .enumerate()
            {
                let Some((bias, mult, shift)) = requant.channel(fi) else {
                    return;
                };
                let mut acc = bias;
                for (ky, w_row) in w_f.chunks_exact(sizes.kernel_row).enumerate() {
                    let Some(iy) = g.in_row(oy, ky) else { continue };
                    for (kx, w_px) in w_row.chunks_exact(sizes.channels).enumerate() {
                        let Some(ix) = g.in_col(ox, kx) else { continue };
                        let start = (iy * g.in_w + ix) * g.in_c;
                        let in_px = input.get(start..start + g.in_c).unwrap_or(&[]);
                        for (&x, &w) in in_px.iter().zip(w_px) {
                            acc += (i32::from(x) + input_offset) * i32::from(w as i8);
                        }
                    }
                }
                *out = requant.apply(acc, mult, shift);
            }
        }
    }
}

/// The non-zero chunk lengths the kernels iterate by (`None` if any is zero or overflows:
/// there is nothing to compute then). `NonZeroUsize` tells the optimiser so, which removes
/// the zero-chunk panics of `chunks_exact`.
struct ChunkSizes {
    /// `out_w · filters`.
    out_row: usize,
    /// `filters`.
    pixel: usize,
    /// `k_h · k_w · in_c`.
    taps: usize,
    /// `k_w · in_c`.
    kernel_row: usize,
    /// `in_c`.
    channels: usize,
}

impl ChunkSizes {
    #[inline(always)]
    fn of(g: &ConvGeometry) -> Option<Self> {
        let nonzero = |n: Option<usize>| n.and_then(NonZeroUsize::new);
        let kernel_row = nonzero(g.k_w.checked_mul(g.in_c))?;
        let taps = nonzero(kernel_row.get().checked_mul(g.k_h))?;
        Some(Self {
            out_row: nonzero(g.out_w().checked_mul(g.filters))?.get(),
            pixel: nonzero(Some(g.filters))?.get(),
            taps: taps.get(),
            kernel_row: kernel_row.get(),
            channels: nonzero(Some(g.in_c))?.get(),
        })
    }
}

/// Which patch [`gather_patch`] writes: pixel `pixel` of a patch of `pixels` interleaved
/// pixels ([`PatchSlot::SINGLE`]: a packed patch of its own; `pixels` 4: a quad patch, the
/// layouts of [`super::dot`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PatchSlot {
    /// The pixel, `0..pixels`.
    pub pixel: usize,
    /// Pixels in the patch.
    pub pixels: usize,
}

impl PatchSlot {
    /// A patch of one pixel.
    pub const SINGLE: Self = Self {
        pixel: 0,
        pixels: 1,
    };
}

/// Writes values one by one into a packed patch or one pixel's share of a quad patch: four
/// at a time as two words, the `taps % 4` last ones one word each by
/// [`PatchWriter::finish`]. Values past the end of the patch are dropped.
struct PatchWriter<'p> {
    patch: &'p mut [u32],
    /// The next group's first word.
    at: usize,
    /// Words from one group's first word to the next's.
    step: usize,
    /// The first tail value's word.
    tail: usize,
    /// Words from one tail value to the next.
    tail_step: usize,
    quad: [i32; 4],
    filled: usize,
}

impl<'p> PatchWriter<'p> {
    #[inline(always)]
    fn new(patch: &'p mut [u32], taps: usize, slot: PatchSlot) -> Self {
        let PatchSlot { pixel, pixels } = slot;
        Self {
            patch,
            at: 2 * pixel,
            step: 2 * pixels,
            tail: taps / 4 * 2 * pixels + pixel,
            tail_step: pixels,
            quad: [0; 4],
            filled: 0,
        }
    }

    #[inline(always)]
    fn push(&mut self, value: i32) {
        if let Some(slot) = self.quad.get_mut(self.filled) {
            *slot = value;
        }
        self.filled += 1;
        if self.filled == 4 {
            let q = self.quad;
            if let Some([w0, w1]) = self.patch.get_mut(self.at..self.at + 2) {
                *w0 = pack(q[0], q[2]);
                *w1 = pack(q[1], q[3]);
            }
            self.at += self.step;
            self.filled = 0;
        }
    }

    /// Pushes `run` with `offset` added to each value: four at a time
    /// ([`super::dsp::pack_groups`]) while the writer is at a group's start.
    #[inline(always)]
    fn push_run(&mut self, run: &[i8], offset: i32) {
        let mut rest = run;
        if self.filled == 0 {
            let quads = run.chunks_exact(4);
            let tail = quads.remainder();
            let (step, count) = (self.step, quads.len());
            let groups = self.patch.get_mut(self.at..).unwrap_or_default();
            pack_groups(run, offset, groups, step, count);
            self.at += step * count;
            rest = tail;
        }
        for &x in rest {
            self.push(i32::from(x) + offset);
        }
    }

    /// Pushes `count` zeros: whole groups at once while the writer is at a group's start.
    #[inline(always)]
    fn zeros(&mut self, count: usize) {
        let mut rest = count;
        if self.filled == 0 {
            for _ in 0..count / 4 {
                if let Some([w0, w1]) = self.patch.get_mut(self.at..self.at + 2) {
                    *w0 = 0;
                    *w1 = 0;
                }
                self.at += self.step;
            }
            rest = count % 4;
        }
        for _ in 0..rest {
            self.push(0);
        }
    }

    #[inline(always)]
    fn finish(self) {
        for (i, &v) in self.quad.iter().take(self.filled).enumerate() {
            if let Some(w) = self.patch.get_mut(self.tail + i * self.tail_step) {
                *w = v as u32;
            }
        }
    }
}

/// Packs `run` with `offset` added to each value into `patch` as [`pack_patch`] packs it:
/// whole groups of four through [`pack_groups`], the rest one word each.
#[inline(always)]
pub(crate) fn pack_run(patch: &mut [u32], run: &[i8], offset: i32) {
    let groups = run.len() / 4;
    pack_groups(run, offset, patch, 2, groups);
    let tail = run.get(4 * groups..).unwrap_or_default();
    let words = patch.iter_mut().skip(2 * groups);
    for (word, &x) in words.zip(tail) {
        *word = (i32::from(x) + offset) as u32;
    }
}

/// Gathers the patch of output pixel `(oy, ox)` of `input` (whole or a ring of its rows)
/// into `patch`, as `slot` says (offset
/// added, packed as [`pack_patch`] packs; padding as 0); `kernel_row` is `k_w · in_c`.
/// `INSIDE`: every window of the conv lies inside its input (see [`patch_runs`]).
#[inline(never)]
pub(crate) fn gather_patch<const INSIDE: bool>(
    g: &ConvGeometry,
    kernel_row: usize,
    input: MapRows<'_, &[i8]>,
    input_offset: i32,
    (oy, ox): (usize, usize),
    patch: &mut [u32],
    slot: PatchSlot,
) {
    // A window inside the input: each kernel row one run (the walk below took some 300
    // instructions more a window); every window of a conv `INSIDE`.
    let (x0, y0) = (ox * g.stride, oy * g.stride);
    let (pad_top, pad_left) = if INSIDE {
        (0, 0)
    } else {
        (g.pad_top(), g.pad_left())
    };
    let inside = INSIDE
        || x0 >= pad_left
            && x0 - pad_left + g.k_w <= g.in_w
            && y0 >= pad_top
            && y0 - pad_top + g.k_h <= g.in_h;
    let run = |ky: usize| {
        let start = (input.slot(y0 - pad_top + ky) * g.in_w + x0 - pad_left) * g.in_c;
        input
            .data
            .get(start..start + kernel_row)
            .unwrap_or_default()
    };
    if inside && kernel_row % 4 == 0 {
        // Whole groups: each row packed at once.
        let (groups, step) = (kernel_row / 4, 2 * slot.pixels);
        for ky in 0..g.k_h {
            let words = patch.get_mut((2 * slot.pixel + ky * step * groups)..);
            pack_groups(
                run(ky),
                input_offset,
                words.unwrap_or_default(),
                step,
                groups,
            );
        }
        return;
    }
    if !INSIDE && g.in_c % 4 == 0 {
        // Whole groups per pixel, the window over the border: each kernel row's pixels
        // inside the input packed at once, the padding's groups 0 (the walk below took
        // some 900 instructions a window of 3 × 3 × 8 on the Cortex-M4F).
        gather_groups(g, input, input_offset, (oy, ox), patch, (slot, 1));
        return;
    }
    gather_walk::<INSIDE>(g, kernel_row, input, input_offset, (oy, ox), patch, slot);
}

/// [`gather_patch`] value by value: the walk of [`patch_runs`] through a [`PatchWriter`],
/// for any geometry (what the others are tested against).
#[inline(always)]
fn gather_walk<const INSIDE: bool>(
    g: &ConvGeometry,
    kernel_row: usize,
    input: MapRows<'_, &[i8]>,
    input_offset: i32,
    (oy, ox): (usize, usize),
    patch: &mut [u32],
    slot: PatchSlot,
) {
    let mut writer = PatchWriter::new(patch, g.taps(), slot);
    patch_runs::<INSIDE>(g, kernel_row, input, (oy, ox), |run, n| match run {
        Some(run) => writer.push_run(run, input_offset),
        None => writer.zeros(n),
    });
    writer.finish();
}

/// [`gather_patch`] for a conv whose pixels are whole groups of four channels, of `count`
/// output pixels of row `oy` from column `ox` on (`ox + k` into slot `slot.pixel + k`):
/// per kernel row, the pixels whose windows lie inside the input's columns packed at once
/// ([`pack_pixel_groups`]), each other pixel's columns inside the input packed
/// ([`pack_groups`]) and the groups of its columns left and right of the input 0, a row
/// above or below the input 0 for every pixel. (Through [`gather_patch`] one pixel at a
/// time, the four pixels of a quad of a 3 × 3 × 8 kernel took some 1,000 instructions on
/// the Cortex-M4F, 2,500 over the border; with every pixel of a quad over the border packed
/// alone, about 1,800.)
#[inline(never)]
pub(crate) fn gather_groups(
    g: &ConvGeometry,
    input: MapRows<'_, &[i8]>,
    input_offset: i32,
    (oy, ox): (usize, usize),
    patch: &mut [u32],
    (slot, count): (PatchSlot, usize),
) {
    let pixel_groups = g.in_c / 4;
    let (groups, step) = (g.k_w * pixel_groups, 2 * slot.pixels);
    let (pad_top, pad_left) = (g.pad_top(), g.pad_left());
    let (s, row_len) = (g.stride, g.in_w * g.in_c);
    let (x0, y0) = (ox * s, oy * s);
    // Pixels `first..end` have their windows inside the input's columns; those before
    // begin left of it, those after end right of it.
    let mut first = 0;
    while first < count && x0 + first * s < pad_left {
        first += 1;
    }
    let mut end = first;
    while end < count && x0 + end * s + g.k_w <= g.in_w + pad_left {
        end += 1;
    }
    for ky in 0..g.k_h {
        let words_first = 2 * slot.pixel + ky * step * groups;
        let y = (y0 + ky).checked_sub(pad_top).filter(|&y| y < g.in_h);
        let row = y.and_then(|y| input.data.get(input.slot(y) * row_len..)?.get(..row_len));
        let Some(row) = row else {
            // A row of padding: every pixel's groups 0.
            for k in 0..count {
                let words = patch.get_mut(words_first + 2 * k..).unwrap_or_default();
                zero_groups(words, step, 0..groups);
            }
            continue;
        };
        if first < end {
            let run = row.get((x0 + first * s - pad_left) * g.in_c..);
            let words = patch.get_mut(words_first + 2 * first..);
            if let (Some(run), Some(words)) = (run, words) {
                let pixels = (end - first, s * g.in_c);
                pack_pixel_groups(run, input_offset, words, (step, groups), pixels);
            }
        }
        for k in (0..first).chain(end..count) {
            // Its columns left of, inside and up to the right of the input, in groups.
            let x = x0 + k * s;
            let left = pad_left.saturating_sub(x).min(g.k_w);
            let right = (g.in_w + pad_left).saturating_sub(x).clamp(left, g.k_w);
            let column = (x + left).saturating_sub(pad_left);
            let (left, right) = (left * pixel_groups, right * pixel_groups);
            let words = patch.get_mut(words_first + 2 * k..).unwrap_or_default();
            zero_groups(words, step, 0..left);
            let run = row.get(column * g.in_c..).unwrap_or_default();
            if let Some(inside) = words.get_mut(left * step..) {
                pack_groups(run, input_offset, inside, step, right - left);
            }
            zero_groups(words, step, right..groups);
        }
    }
}

/// Sets groups `range` of a packed patch's groups `step` words apart (two words each) to 0.
#[inline(always)]
fn zero_groups(words: &mut [u32], step: usize, range: core::ops::Range<usize>) {
    for k in range {
        if let Some(pair) = words.get_mut(k * step..k * step + 2) {
            pair.fill(0);
        }
    }
}

/// [`gather_patch`] for the four pixels `at` of a quad patch (pixel `k` into slot `k`) of
/// a one-channel 3 × 3 kernel (an image's first conv): each run of pixels along one row at
/// once, `put(rows, stride, (first pixel, count))` putting its windows into the patch
/// (a packed one's [`gather_3x3_run`], an int8 one's [`super::mve::put_3x3_run_i8`],
/// whose result is nonzero if a value put is), from the input's rows where its windows lie
/// inside a whole input, else from a copy of them with the padding as the input's zero
/// point (`-input_offset`, which the offset takes to 0, as padding is). Each row given
/// holds one byte past the run's windows. Returns whether any value put is nonzero (with
/// its offset: a background quad's are all 0); `None` for another kernel, a zero point
/// outside int8, or (`INSIDE`, as for [`gather_patch`]) a ring of the input's rows: the
/// caller gathers the quad through [`gather_patch`]. (Through [`gather_patch`] one value at
/// a time, a window took some 340 instructions on the Cortex-M4F; one window at a time,
/// with the border found for each, about 240.)
#[inline(never)]
pub(crate) fn gather_quad_3x3<const INSIDE: bool>(
    g: &ConvGeometry,
    input: MapRows<'_, &[i8]>,
    input_offset: i32,
    at: [(usize, usize); 4],
    mut put: impl FnMut([&[i8]; 3], usize, (usize, usize)) -> u32,
) -> Option<bool> {
    if g.in_c != 1 || g.k_h != 3 || g.k_w != 3 {
        return None;
    }
    let zero_point = i8::try_from(input_offset.checked_neg()?).ok()?;
    let (pad_top, pad_left) = if INSIDE {
        (0, 0)
    } else {
        (g.pad_top(), g.pad_left())
    };
    let s = g.stride;
    // Runs of up to four windows (of one for a stride over 2: a padded run's rows must fit
    // `PaddedRows`).
    let most = if s <= 2 { 4 } else { 1 };
    let mut any = 0;
    let mut k = 0;
    // Made only for a run over the border (made at every call, its zeroing took a
    // `memclr` call a quad: resnet-tiny's first conv some 1,500 instructions a digit).
    let mut padded;
    while let Some(&(oy, ox)) = at.get(k) {
        let mut run = 1;
        while run < most && at.get(k + run) == Some(&(oy, ox + run)) {
            run += 1;
        }
        // The bytes of each row the run's word loads read: its windows', and one more.
        let span = (run - 1) * s + 4;
        let (y, x) = (oy * s, ox * s);
        // (Every window of a conv `INSIDE` lies inside: no test.)
        let rows = match (y.checked_sub(pad_top), x.checked_sub(pad_left)) {
            (Some(y), Some(x)) if INSIDE || y + 3 <= g.in_h && x + span - 1 <= g.in_w => {
                window_rows(input, (y, x), g.in_w, span)
            }
            _ => None,
        };
        let rows = match rows {
            Some(rows) => rows,
            // (Not linked where every window lies inside the input.)
            None if INSIDE => return None,
            None => {
                padded = PaddedRows([u32::from_ne_bytes([zero_point as u8; 4]); PADDED_WORDS]);
                padded.fill(g, input, (y, x), span)
            }
        };
        any |= put(rows, s, (k, run));
        k += run;
    }
    Some(any != 0)
}

/// The three rows of a run of one-channel 3 × 3 windows inside a whole input (not a ring of
/// its rows: an image's first conv reads it whole), from input row `y` and column `x` on,
/// `span` bytes each (which may run on into the next row).
#[inline(always)]
fn window_rows<'a>(
    input: MapRows<'_, &'a [i8]>,
    (y, x): (usize, usize),
    w: usize,
    span: usize,
) -> Option<[&'a [i8]; 3]> {
    if !input.is_whole() {
        return None;
    }
    let start = y * w + x;
    let rows = input.data.get(start..start + 2 * w + span)?;
    Some([rows, rows.get(w..)?, rows.get(2 * w..)?])
}

/// Bytes of each row of [`PaddedRows`].
const PADDED_SPAN: usize = 12;

/// Words of [`PaddedRows`]: three rows of [`PADDED_SPAN`] bytes.
const PADDED_WORDS: usize = 3 * PADDED_SPAN / 4;

/// A run of one-channel 3 × 3 windows over the input's border, its three rows copied with
/// their padding as the input's zero point: words, so that filling them takes word stores,
/// not a `memset` (nor, returned by value, a `memcpy`: some 900 bytes of flash on the
/// Cortex-M4 between them).
struct PaddedRows([u32; PADDED_WORDS]);

impl PaddedRows {
    /// Fills the rows (made of the input's zero point) with those of the padded map from row
    /// `y` and column `x` on, `span` (at most [`PADDED_SPAN`]) bytes each, and returns them.
    #[inline(never)]
    fn fill(
        &mut self,
        g: &ConvGeometry,
        input: MapRows<'_, &[i8]>,
        (y, x): (usize, usize),
        span: usize,
    ) -> [&[i8]; 3] {
        let (pad_top, pad_left, w) = (g.pad_top(), g.pad_left(), g.in_w);
        // Columns `first..end` of the input, at `to` on in each copy.
        let to = pad_left.saturating_sub(x);
        let first = x.saturating_sub(pad_left);
        let end = (x + span).saturating_sub(pad_left).min(w);
        let bytes = int8_of_words(&mut self.0);
        for (ky, copy) in bytes.chunks_exact_mut(PADDED_SPAN).enumerate() {
            let Some(y) = (y + ky).checked_sub(pad_top).filter(|&y| y < g.in_h) else {
                continue;
            };
            let start = input.slot(y) * w;
            let values = input.data.get(start + first..start + end.max(first));
            if let (Some(values), Some(copy)) = (values, copy.get_mut(to..)) {
                copy_bytes(copy, values);
            }
        }
        let (bytes, rest) = bytes.split_at(PADDED_SPAN.min(bytes.len()));
        let (second, third) = rest.split_at(PADDED_SPAN.min(rest.len()));
        [bytes, second, third]
    }
}

/// [`gather_patch`] for a 1 × 1 kernel (`g.k_h` and `g.k_w` 1; others gather nothing),
/// whose patch is its pixel's channels (never padding): one run, without the walk of
/// [`patch_runs`]. (`_kernel_row`: the same arguments as [`gather_patch`].)
#[inline(never)]
pub(crate) fn gather_pixel_patch(
    g: &ConvGeometry,
    _kernel_row: usize,
    input: MapRows<'_, &[i8]>,
    input_offset: i32,
    (oy, ox): (usize, usize),
    patch: &mut [u32],
    slot: PatchSlot,
) {
    if g.k_h != 1 || g.k_w != 1 {
        return;
    }
    let mut writer = PatchWriter::new(patch, g.in_c, slot);
    let (iy, ix) = (oy * g.stride, ox * g.stride);
    let start = (input.slot(iy) * g.in_w + ix) * g.in_c;
    match input
        .data
        .get(start..start + g.in_c)
        .filter(|_| ix < g.in_w)
    {
        Some(run) => writer.push_run(run, input_offset),
        None => writer.zeros(g.in_c),
    }
    writer.finish();
}

/// Gathers the patch of output pixel `(oy, ox)` of `input` (whole or a ring of its rows)
/// into pixel `pixel` (0 to 3) of a pair patch ([`super::pairs`]): value `t` (offset
/// added; padding as 0) into word `2t + pixel / 2`, as the pair word's first value (the
/// word is set) for an even pixel, as its second (added) for an odd one, so the even pixel
/// of a pair must be gathered first; `kernel_row` is `k_w · in_c`. Values past `patch`
/// are dropped. `INSIDE` as for [`gather_patch`].
#[inline(never)]
pub(crate) fn gather_pair_patch<const INSIDE: bool>(
    g: &ConvGeometry,
    kernel_row: usize,
    input: MapRows<'_, &[i8]>,
    input_offset: i32,
    (oy, ox): (usize, usize),
    patch: &mut [u32],
    pixel: usize,
) {
    let (mut at, second) = (pixel / 2, pixel % 2 == 1);
    patch_runs::<INSIDE>(g, kernel_row, input, (oy, ox), |run, n| {
        let words = patch
            .get_mut(at..)
            .unwrap_or_default()
            .iter_mut()
            .step_by(2);
        match (run, second) {
            (Some(run), true) => {
                for (word, &x) in words.zip(run) {
                    *word = word.wrapping_add(pair_word(0, i32::from(x) + input_offset));
                }
            }
            (Some(run), false) => {
                for (word, &x) in words.zip(run) {
                    *word = pair_word(i32::from(x) + input_offset, 0);
                }
            }
            // Padding adds 0 to an odd pixel's words.
            (None, true) => {}
            (None, false) => words.take(n).for_each(|word| *word = 0),
        }
        at += 2 * n;
    });
}

/// Gathers the int8 patches of output pixels `at` of `input` (whole or a ring of its rows)
/// into an int8 quad patch (`patch`, laid out as [`super::mve::QuadConvI8`] reads it): the
/// input values as they are, padding as the input zero point (`zero_point`, which the
/// offset turns into 0); `kernel_row` is `k_w · in_c`. A window whose taps reach past
/// `patch` is not written. `INSIDE`: every window of the conv lies inside its input (no
/// padding), as for [`gather_patch`].
///
/// The windows inside the input go in at once ([`super::mve::put_quad_i8`]: all their
/// kernel rows from a whole input, one kernel row at a time from a ring); the others, over
/// the border, through [`gather_border_i8`]. (Walked tap run by tap run, the padding found
/// for each, a window of 3 × 3 × 8 took some 250 instructions on the Cortex-M55 inside the
/// input and 600 over its border.)
#[inline(never)]
pub(crate) fn gather_quad_i8<const INSIDE: bool>(
    g: &ConvGeometry,
    kernel_row: usize,
    input: MapRows<'_, &[i8]>,
    zero_point: i8,
    at: [(usize, usize); 4],
    patch: &mut [i8],
) {
    let pads = if INSIDE {
        (0, 0)
    } else {
        (g.pad_top(), g.pad_left())
    };
    let (c, row) = (g.in_c, g.in_w * g.in_c);
    // The last first row and column of a window inside the input (none: no window is).
    let last = g.in_h.checked_sub(g.k_h).zip(g.in_w.checked_sub(g.k_w));
    let (last_y, last_x) = last.unwrap_or((0, 0));
    // Each window's first row and column (`None`: over the border, gathered alone).
    let mut first = [None; 4];
    for (k, (oy, ox)) in at.into_iter().enumerate() {
        // (Wrapping: a window above or left of the input starts past the last.)
        let y = (oy * g.stride).wrapping_sub(pads.0);
        let x = (ox * g.stride).wrapping_sub(pads.1);
        if last.is_some() && y <= last_y && x <= last_x {
            first[k] = Some((y, x));
        } else if !INSIDE {
            gather_border_i8(g, (kernel_row, pads), input, zero_point, (oy, ox), patch, k);
        }
    }
    // The others at once: from a whole input all their kernel rows, from a ring one row at
    // a time, each window from where its row starts (`usize::MAX`: none).
    let (rows, steps) = if input.is_whole() {
        (g.k_h, 1)
    } else {
        (1, g.k_h)
    };
    let mut runs = TapRuns::window(rows, kernel_row, row);
    for ky in 0..steps {
        let mut offsets = [usize::MAX; 4];
        // (Not unrolled: four copies of a ring's row slot, a division each, made the code
        // larger and no faster.)
        for k in 0..core::hint::black_box(4) {
            if let (Some(o), Some(Some((y, x)))) = (offsets.get_mut(k), first.get(k)) {
                *o = input.slot(y + ky) * row + x * c;
            }
        }
        super::mve::put_quad_i8(input.data, offsets, &runs, patch);
        runs.tap += kernel_row;
    }
}

/// [`gather_quad_i8`]'s window of output pixel `(oy, ox)` over the input's border, into
/// pixel `pixel`: the zero point into all its taps ([`super::mve::fill_taps_i8`]), then
/// each kernel row's columns inside the input as one run ([`super::mve::put_rows_i8`]; all
/// rows in one call from a whole input). `pads`: the padding before the input's rows and
/// columns.
#[inline(never)]
fn gather_border_i8(
    g: &ConvGeometry,
    (kernel_row, pads): (usize, (usize, usize)),
    input: MapRows<'_, &[i8]>,
    zero_point: i8,
    (oy, ox): (usize, usize),
    patch: &mut [i8],
    pixel: usize,
) {
    super::mve::fill_taps_i8(zero_point, g.k_h * kernel_row, pixel, patch);
    let y0 = (oy * g.stride) as isize - pads.0 as isize;
    let x0 = (ox * g.stride) as isize - pads.1 as isize;
    let rows = taps_inside(y0, g.k_h, g.in_h);
    let cols = taps_inside(x0, g.k_w, g.in_w);
    // (`Range::len` would keep an assertion's panic path.)
    let (n_rows, n_cols) = (rows.end - rows.start, cols.end - cols.start);
    // The first inside row's and column's input position (both ≥ 0).
    let (iy, ix) = (
        (y0 + rows.start as isize) as usize,
        (x0 + cols.start as isize) as usize,
    );
    let row = g.in_w * g.in_c;
    let mut runs = TapRuns {
        rows: n_rows,
        len: n_cols * g.in_c,
        stride: row,
        tap: rows.start * kernel_row + cols.start * g.in_c,
        tap_step: kernel_row,
    };
    if input.is_whole() {
        let src = input.data.get(iy * row + ix * g.in_c..).unwrap_or_default();
        super::mve::put_rows_i8(src, &runs, pixel, patch);
        return;
    }
    runs.rows = 1;
    for y in iy..iy + n_rows {
        let start = input.slot(y) * row + ix * g.in_c;
        let src = input.data.get(start..).unwrap_or_default();
        super::mve::put_rows_i8(src, &runs, pixel, patch);
        runs.tap += kernel_row;
    }
}

/// Walks the patch of output pixel `(oy, ox)` of `input` (whole or a ring of its rows) in
/// tap order as runs: `put(Some(run), n)` for `n` input values, `put(None, n)` for `n` taps
/// of padding (or of input rows past `input`); `kernel_row` is `k_w · in_c`. Where the
/// kernel's columns lie inside the input, each kernel row is one run. With `INSIDE` (the
/// caller knows that every window of the conv lies inside its input: no padding) each
/// kernel row is one run of input values, never padding (a row past `input`'s data gives
/// a short run).
#[inline(always)]
fn patch_runs<const INSIDE: bool>(
    g: &ConvGeometry,
    kernel_row: usize,
    input: MapRows<'_, &[i8]>,
    (oy, ox): (usize, usize),
    mut put: impl FnMut(Option<&[i8]>, usize),
) {
    if INSIDE {
        let x0 = ox * g.stride;
        for ky in 0..g.k_h {
            let start = (input.slot(oy * g.stride + ky) * g.in_w + x0) * g.in_c;
            let run = input.data.get(start..start + kernel_row);
            put(Some(run.unwrap_or_default()), kernel_row);
        }
        return;
    }
    let c = g.in_c;
    let (pad_top, pad_left) = (g.pad_top(), g.pad_left());
    let x0 = ox * g.stride;
    let inside = x0 >= pad_left && x0 - pad_left + g.k_w <= g.in_w;
    for ky in 0..g.k_h {
        let Some(iy) = (oy * g.stride + ky)
            .checked_sub(pad_top)
            .filter(|&y| y < g.in_h)
        else {
            put(None, kernel_row);
            continue;
        };
        let row_start = input.slot(iy) * g.in_w;
        if inside {
            let start = (row_start + x0 - pad_left) * c;
            put(input.data.get(start..start + kernel_row), kernel_row);
            continue;
        }
        for kx in 0..g.k_w {
            let ix = (x0 + kx).checked_sub(pad_left).filter(|&x| x < g.in_w);
            let start = ix.map(|ix| (row_start + ix) * c);
            put(start.and_then(|s| input.data.get(s..s + c)), c);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::dsp::{gather_3x3_run, QUAD_3X3_WORDS};
    use crate::kernels::mve::{put_3x3_run_i8, QUAD_I8_BYTES};
    use crate::kernels::TestRng;
    use crate::requant::requantize;
    use std::{vec, vec::Vec};

    /// Pixel `pixel`'s share of an int8 quad patch tap by tap: the input value of each
    /// tap of output pixel `(oy, ox)`'s window, or the zero point for padding.
    fn int8_window_reference(
        g: &ConvGeometry,
        input: MapRows<'_, &[i8]>,
        zero_point: i8,
        (oy, ox): (usize, usize),
        patch: &mut [i8],
        pixel: usize,
    ) {
        for ky in 0..g.k_h {
            for kx in 0..g.k_w {
                for c in 0..g.in_c {
                    let t = (ky * g.k_w + kx) * g.in_c + c;
                    let iy = (oy * g.stride + ky) as isize - g.pad_top() as isize;
                    let ix = (ox * g.stride + kx) as isize - g.pad_left() as isize;
                    let outside =
                        iy < 0 || ix < 0 || iy >= g.in_h as isize || ix >= g.in_w as isize;
                    patch[64 * (t / 16) + 16 * pixel + t % 16] = if outside {
                        zero_point
                    } else {
                        let row = input.slot(iy as usize);
                        input.data[(row * g.in_w + ix as usize) * g.in_c + c]
                    };
                }
            }
        }
    }

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
                            let iy = (y * g.stride + ky) as isize - g.pad_top() as isize;
                            let ix = (x * g.stride + kx) as isize - g.pad_left() as isize;
                            if iy < 0 || ix < 0 || iy >= g.in_h as isize || ix >= g.in_w as isize {
                                continue;
                            }
                            let (iy, ix) = (iy as usize, ix as usize);
                            for c in 0..g.in_c {
                                let i = input[(iy * g.in_w + ix) * g.in_c + c] as i32;
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
        // Interpreted, a case takes seconds: miri runs a few.
        let cases = if cfg!(miri) { 12 } else { 200 };
        for case in 0..cases {
            let g = ConvGeometry {
                in_h: 3 + rng.below(8) as usize,
                in_w: 3 + rng.below(8) as usize,
                in_c: 1 + rng.below(4) as usize,
                k_h: 1 + rng.below(3) as usize,
                k_w: 1 + rng.below(3) as usize,
                filters: 1 + rng.below(9) as usize,
                stride: 1 + rng.below(2) as usize,
                padding: if rng.below(2) == 0 {
                    Padding::Valid
                } else {
                    Padding::Same
                },
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

    /// Quad patches gathered the fast ways — a one-channel 3 × 3 kernel's nine values
    /// straight into their words, a window over the border of pixels of whole groups of
    /// four channels group by group — and the walk's way otherwise, equal to the walk's.
    #[test]
    fn quad_patches_are_gathered_as_the_general_walk_gathers_them() {
        let mut rng = TestRng(0x3A3);
        for case in 0..600 {
            // One-channel 3 × 3 kernels, whole groups of channels (any kernel up to 3 × 3),
            // sometimes others (the walk).
            let (in_c, k) = match case % 5 {
                4 => (2, 2),
                1 | 3 => (4 * (1 + rng.below(2) as usize), 1 + rng.below(3) as usize),
                _ => (1, 3),
            };
            let g = ConvGeometry {
                in_h: 2 + rng.below(8) as usize,
                in_w: 2 + rng.below(8) as usize,
                in_c,
                k_h: k,
                k_w: if case % 5 == 3 {
                    1 + rng.below(3) as usize
                } else {
                    k
                },
                filters: 1,
                stride: 1 + rng.below(2) as usize,
                padding: if rng.below(2) == 0 {
                    Padding::Valid
                } else {
                    Padding::Same
                },
            };
            let (out_h, out_w) = (g.out_h(), g.out_w());
            if out_h == 0 || out_w == 0 {
                continue;
            }
            // Sometimes all background (every value the zero point of offset 128).
            let background = case % 11 == 0;
            let map: Vec<i8> = (0..g.in_h * g.in_w * in_c)
                .map(|_| if background { -128 } else { rng.i8() })
                .collect();
            // The whole map, or a ring of its last rows that holds every row a window
            // of output row `oy` needs.
            let oy = rng.below(out_h as u64) as usize;
            let held = if case % 2 == 0 {
                usize::MAX
            } else {
                3 + rng.below(2) as usize
            };
            let mut ring = vec![0i8; held.min(g.in_h) * g.in_w * in_c];
            let input = if held == usize::MAX {
                MapRows::whole(&map[..])
            } else {
                let first = (oy * g.stride).saturating_sub(g.pad_top());
                for y in first..(first + held).min(g.in_h) {
                    let slot = y % held;
                    if let Some(row) =
                        ring.get_mut(slot * g.in_w * in_c..(slot + 1) * g.in_w * in_c)
                    {
                        row.copy_from_slice(&map[y * g.in_w * in_c..(y + 1) * g.in_w * in_c]);
                    }
                }
                MapRows::ring(&ring[..], held)
            };
            // Four pixels of row `oy`, in any order, repeated or not; of the whole map,
            // sometimes of the next row too (a pool window's).
            // Half the time a run from a column on (the last pixel repeated past the row's
            // end, as a quad repeats it).
            let start = rng.below(out_w as u64) as usize;
            let ox: [usize; 4] = core::array::from_fn(|k| {
                if case / 5 % 2 == 0 {
                    (start + k).min(out_w - 1)
                } else {
                    rng.below(out_w as u64) as usize
                }
            });
            let next = (oy + 1).min(out_h - 1);
            let two_rows = held == usize::MAX && case % 3 == 0;
            let ats: [(usize, usize); 4] =
                core::array::from_fn(|k| (if two_rows && k >= 2 { next } else { oy }, ox[k]));
            // Sometimes the offset of an image's zero point (padding as background).
            let offset = if background || case % 7 == 0 {
                128
            } else {
                rng.below(256) as i32 - 128
            };
            let words = 4 * super::super::dot::PatchWords::words(g.taps());
            let mut fast = vec![1u32; words.max(QUAD_3X3_WORDS)];
            let quad = fast.first_chunk_mut::<QUAD_3X3_WORDS>().unwrap();
            let put = |rows: [&[i8]; 3], s, run| gather_3x3_run(rows, s, offset, run, quad);
            match gather_quad_3x3::<false>(&g, input, offset, ats, put) {
                Some(any) => {
                    let nonzero = fast[..words].iter().any(|&w| w != 0);
                    assert_eq!(any, nonzero, "case {case}: {g:?} at {ats:?}");
                }
                None => {
                    assert!(in_c != 1 || k != 3 || !(-127..=128).contains(&offset));
                    for (pixel, &at) in ats.iter().enumerate() {
                        let slot = PatchSlot { pixel, pixels: 4 };
                        gather_patch::<false>(&g, g.k_w * in_c, input, offset, at, &mut fast, slot);
                    }
                }
            }
            let mut walked = vec![1u32; words];
            for (pixel, &at) in ats.iter().enumerate() {
                let slot = PatchSlot { pixel, pixels: 4 };
                gather_walk::<false>(&g, g.k_w * in_c, input, offset, at, &mut walked, slot);
            }
            assert_eq!(
                fast[..walked.len()],
                walked[..],
                "case {case}: {g:?} at {ats:?}"
            );
            // The int8 quad patch of a one-channel 3 × 3 kernel the same way, its taps
            // equal to the int8 walk's.
            if let (1, 3, Ok(zero_point)) = (in_c, k, i8::try_from(-offset)) {
                let mut fast = [1i8; QUAD_I8_BYTES];
                let put =
                    |rows: [&[i8]; 3], s, run| put_3x3_run_i8(rows, s, zero_point, run, &mut fast);
                let any = gather_quad_3x3::<false>(&g, input, offset, ats, put);
                let mut walked = [1i8; QUAD_I8_BYTES];
                for (pixel, &at) in ats.iter().enumerate() {
                    int8_window_reference(&g, input, zero_point, at, &mut walked, pixel);
                }
                for p in 0..4 {
                    let taps = 16 * p..16 * p + 9;
                    assert_eq!(fast[taps.clone()], walked[taps], "case {case}: {g:?}");
                }
                let background = walked
                    .chunks(16)
                    .all(|taps| taps[..9].iter().all(|&v| v == zero_point));
                assert_eq!(any, Some(!background), "case {case}: {g:?} at {ats:?}");
            }
            // Every pixel's int8 patch, its rows inside the input as runs (and over the
            // border its padding filled first), tap for tap the reference's.
            let zero_point = (-offset).clamp(-128, 127) as i8;
            let bytes = super::super::mve::QuadConvI8::patch_bytes(g.taps());
            let (mut fast, mut walked) = (vec![1i8; bytes], vec![1i8; bytes]);
            gather_quad_i8::<false>(&g, g.k_w * in_c, input, zero_point, ats, &mut fast);
            for (pixel, &at) in ats.iter().enumerate() {
                int8_window_reference(&g, input, zero_point, at, &mut walked, pixel);
            }
            assert_eq!(fast, walked, "case {case}: {g:?} at {ats:?}");
            // Without padding, the same knowing every window inside.
            if g.padding == Padding::Valid {
                fast.fill(1);
                gather_quad_i8::<true>(&g, g.k_w * in_c, input, zero_point, ats, &mut fast);
                assert_eq!(fast, walked, "case {case}: {g:?} at {ats:?}");
            }
            // Whole groups: four pixels of the row from a column on, at once.
            if in_c % 4 == 0 {
                let ox = rng.below(out_w as u64) as usize;
                let count = (out_w - ox).min(4);
                let mut quad = vec![1u32; words];
                let slot = PatchSlot {
                    pixel: 4 - count,
                    pixels: 4,
                };
                gather_groups(&g, input, offset, (oy, ox), &mut quad, (slot, count));
                let mut walked = vec![1u32; words];
                for k in 0..count {
                    let slot = PatchSlot {
                        pixel: 4 - count + k,
                        pixels: 4,
                    };
                    let at = (oy, ox + k);
                    gather_walk::<false>(&g, g.k_w * in_c, input, offset, at, &mut walked, slot);
                }
                assert_eq!(quad, walked, "case {case}: {g:?} at {oy}, {ox}");
            }
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
            stride: 1,
            padding: Padding::Same,
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

//! int8 depthwise convolution (TFLite's DEPTHWISE_CONV_2D): each input channel `c` is
//! convolved with its own `multiplier` filters, giving output channels
//! `c · multiplier .. (c + 1) · multiplier`; any kernel, separate row and column strides,
//! valid or same padding, per-channel weights, fused activation clamp.
//!
//! [`depthwise_i8_reference`] is the naive reference (TFLite's
//! `reference_integer_ops::DepthwiseConvPerChannel`, loop for loop); [`depthwise_i8`] is
//! the fast path, tested against it bit for bit on random geometries.
//!
//! The fast path of a multiplier-1 conv with at most [`MAX_TAPS`] taps (MobileNet's and
//! DS-CNN's 3×3) goes channel group by channel group: four channels at a time (then one by
//! one). A group of four whose requantization allows it (no fused activation, multipliers
//! ≥ 0, right shifts, sums below 2^30) goes through [`dsp::dw_quads`]: on a small map
//! (at most [`MAX_PADDED_WORDS`] padded pixels, where the copy costs less than the border
//! blocks it spares) from a copy of its inputs inside a border of zero points, the whole
//! map one block; otherwise, over a map of more than nine output pixels, its output pixels
//! in blocks whose windows have the same taps inside the input (the interior, each border
//! row and column, each corner), every block one call. Each pixel's sums start from the
//! bias with the input offset's share of its inside taps folded in (`bias + offset · Σ w`),
//! its outside taps given zero weights, and are requantized in the same loop. Other groups keep
//! their weights on the stack and compute every output pixel in registers: pixels whose
//! window lies inside the input start from the folded bias and multiply the int8 inputs as
//! they are; border pixels start from the bare bias and add the offset to each input they
//! visit. Other convs accumulate all channels of one output pixel in a scratch row of
//! `i32`, visiting only the kernel taps inside the input.

use super::window::{taps_inside, Window};
use super::ChannelRequant;
use super::{dsp, mve};
use core::num::NonZeroUsize;
use core::ops::Range;

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

/// Words of scratch [`depthwise_i8`] takes: one accumulator per output channel, or a
/// channel group's zero-padded input ([`padded_words`]) if that is more.
pub const fn depthwise_scratch_words(g: &DepthwiseGeometry) -> usize {
    let padded = padded_words(g);
    if padded > g.out_c() {
        padded
    } else {
        g.out_c()
    }
}

/// Most words of a channel group's zero-padded input (4 KiB): maps up to about 32 × 32,
/// whose border pixels are a large share of their pixels. Larger maps go in blocks of
/// pixels whose windows have the same taps inside the input.
pub const MAX_PADDED_WORDS: usize = 1024;

/// Rows and columns of the zero-padded input of a channel group: the input rows and columns
/// the output's windows cover, padding included.
const fn padded_dims(g: &DepthwiseGeometry) -> (usize, usize) {
    let (win, out_h, out_w) = (&g.window, g.out_h(), g.out_w());
    if out_h == 0 || out_w == 0 {
        return (0, 0);
    }
    (
        (out_h - 1) * win.stride_h + win.k_h,
        (out_w - 1) * win.stride_w + win.k_w,
    )
}

/// Words of a channel group's zero-padded input (one word per pixel: four channels' int8
/// values) if the conv's groups of four may go through it (a multiplier of 1, at most
/// [`MAX_TAPS`] taps, at most [`MAX_PADDED_WORDS`] words), else 0.
pub const fn padded_words(g: &DepthwiseGeometry) -> usize {
    let (h, w) = padded_dims(g);
    let words = h * w;
    if g.multiplier == 1 && g.window.k_h * g.window.k_w <= MAX_TAPS && words <= MAX_PADDED_WORDS {
        words
    } else {
        0
    }
}

/// The fast path, bit for bit [`depthwise_i8_reference`]: by channel groups where it can
/// (the module's documentation says when), else per output pixel, the accumulators of all
/// its channels in `acc` (at least [`depthwise_scratch_words`] words), each kernel tap
/// inside the input adding one input pixel times one weight row. Short slices compute
/// less, never panic.
///
/// `COVERED`: compiled for a conv whose every channel goes through the four-channel
/// kernels ([`covered_by_quads`]), without the other ways (some 7 KiB of Cortex-M4 code):
/// a conv that is not computes less. The typed layer checks it when the model loads.
pub fn depthwise_i8<const COVERED: bool>(
    g: &DepthwiseGeometry,
    input: &[i8],
    input_offset: i32,
    weights: &[u8],
    requant: &ChannelRequant<'_>,
    acc: &mut [u32],
    output: &mut [i8],
) {
    let conv = Operands {
        g,
        input,
        input_offset,
        weights,
        requant,
    };
    let done = conv.by_groups(acc, output, true, COVERED);
    if !done && !COVERED {
        conv.by_pixels(acc, output);
    }
}

/// Whether a depthwise conv of shape `g` can run over its own input
/// ([`depthwise_i8_in_place`]): a multiplier of 1 and at most [`MAX_TAPS`] taps over a map
/// whose channel group's zero-padded copy fits [`MAX_PADDED_WORDS`] ([`padded_words`]), whole
/// groups of four channels, and no more output pixels than input pixels.
pub const fn in_place_fits(g: &DepthwiseGeometry) -> bool {
    padded_words(g) > 0 && g.in_c > 0 && g.in_c % 4 == 0 && g.out_h() * g.out_w() <= g.in_h * g.in_w
}

/// [`depthwise_i8`] over its own input, for a conv that [`in_place_fits`]: `map` holds the
/// input (`in_h × in_w × in_c`) and receives the output (`out_h × out_w × out_c` from its
/// start), bit for bit [`depthwise_i8_reference`]'s. Each group of four channels is first
/// copied into its zero-padded copy in `scratch` ([`depthwise_scratch_words`]), then
/// computed from it, writing only its own channels of the output pixels: output pixel `p`
/// lies where input pixel `p` was, whose group's channels the copy already holds, and no
/// other group's. Groups the four-channel kernels do not take are computed from the copy in
/// plain arithmetic. Other convs, short slices or scratch compute nothing.
///
/// `COVERED` as for [`depthwise_i8`]: compiled for a conv whose every channel goes through
/// the four-channel kernels, without the plain arithmetic.
pub fn depthwise_i8_in_place<const COVERED: bool>(
    g: &DepthwiseGeometry,
    map: &mut [i8],
    input_offset: i32,
    weights: &[u8],
    requant: &ChannelRequant<'_>,
    scratch: &mut [u32],
) {
    if !in_place_fits(g) {
        return;
    }
    let conv = Operands {
        g,
        input: &[],
        input_offset,
        weights,
        requant,
    };
    let _ = conv.in_place::<COVERED>(scratch, map);
}

/// Whether [`depthwise_i8`], with [`depthwise_scratch_words`] of scratch, computes every
/// channel of the conv through its four-channel kernels ([`dsp::dw_quads`], and on Helium
/// cores `mve::dw_group`): a multiplier of 1, at most [`MAX_TAPS`] kernel taps, whole quads
/// of channels, the whole int8 clamp, every group's requantization and sums within the
/// kernels' reach, and its output pixels from a zero-padded copy or in blocks (more than
/// nine). What a build may compile it for (`COVERED`).
pub fn covered_by_quads(
    g: &DepthwiseGeometry,
    input_offset: i32,
    weights: &[u8],
    requant: &ChannelRequant<'_>,
) -> bool {
    let conv = Operands {
        g,
        input: &[],
        input_offset,
        weights,
        requant,
    };
    let Some(plan) = conv.plan() else {
        return false;
    };
    // As `by_groups` decides: a padded copy (`Operands::padded`), else blocks.
    let zero_point = input_offset
        .checked_neg()
        .and_then(|z| i8::try_from(z).ok());
    let padded = conv.copy_pays() && zero_point.is_some();
    g.in_c % 4 == 0
        && rq_clamp_is_int8(requant)
        && (padded || g.out_h() * g.out_w() > 9)
        && (0..g.in_c / 4).all(|q| {
            let group = &mut mve::DwGroup::default();
            Operands::group_params(&plan, 4 * q, group).is_some()
        })
}

/// The operands of one depthwise conv, for its ways of computing.
#[derive(Clone, Copy)]
struct Operands<'a, 'p> {
    g: &'a DepthwiseGeometry,
    input: &'a [i8],
    input_offset: i32,
    weights: &'a [u8],
    requant: &'a ChannelRequant<'p>,
}

/// Most kernel taps (3 × 3) of the channel-group path, whose weights it holds on the stack.
pub const MAX_TAPS: usize = 9;

/// How a group of `L` channels multiplies-accumulates.
trait Lanes<const L: usize> {
    /// A tap's `L` weights, prepared.
    type Tap: Copy;
    /// A tap of zero weights.
    const ZERO: Self::Tap;
    /// The taps of a window inside the input, prepared.
    type Window: Default;
    /// The tap of weights `w`.
    fn tap(w: [i8; L]) -> Self::Tap;
    /// Adds to `window` a tap reading input `offset` (relative to the window's first)
    /// with weights `w`.
    fn push(window: &mut Self::Window, offset: usize, w: [i8; L]);
    /// `acc[l] + Σ x[l]·w[l]` over the taps of `window` at `base` of `input`; `None` if
    /// it does not fit.
    fn window(window: &Self::Window, input: &[i8], base: usize, acc: [i32; L]) -> Option<[i32; L]>;
    /// `acc[l] += (x[l] + offset) · w[l]` for each lane `l`.
    fn mac(acc: &mut [i32; L], x: &[i8; L], w: &Self::Tap, offset: i32);
}

/// One multiply-accumulate per lane: any core, any group size.
struct Bytes;

/// The taps of a window for [`Bytes`]: input offsets and weights.
struct BytesWindow<const L: usize> {
    taps: [(usize, [i32; L]); MAX_TAPS],
    count: usize,
}

impl<const L: usize> Default for BytesWindow<L> {
    fn default() -> Self {
        Self {
            taps: [(0, [0; L]); MAX_TAPS],
            count: 0,
        }
    }
}

impl<const L: usize> Lanes<L> for Bytes {
    type Tap = [i32; L];
    const ZERO: [i32; L] = [0; L];
    type Window = BytesWindow<L>;
    #[inline(always)]
    fn tap(w: [i8; L]) -> [i32; L] {
        w.map(i32::from)
    }
    fn push(window: &mut BytesWindow<L>, offset: usize, w: [i8; L]) {
        if let Some(slot) = window.taps.get_mut(window.count) {
            *slot = (offset, w.map(i32::from));
            window.count += 1;
        }
    }
    #[inline(always)]
    fn window(
        window: &BytesWindow<L>,
        input: &[i8],
        base: usize,
        mut acc: [i32; L],
    ) -> Option<[i32; L]> {
        for (o, w) in window.taps.iter().take(window.count) {
            let at = base + o;
            let x: &[i8; L] = input.get(at..at + L)?.first_chunk()?;
            for ((a, &x), &w) in acc.iter_mut().zip(x).zip(w) {
                *a = a.wrapping_add(i32::from(x).wrapping_mul(w));
            }
        }
        Some(acc)
    }
    #[inline(always)]
    fn mac(acc: &mut [i32; L], x: &[i8; L], w: &[i32; L], offset: i32) {
        for ((a, &x), &w) in acc.iter_mut().zip(x).zip(w) {
            *a = a.wrapping_add((i32::from(x) + offset).wrapping_mul(w));
        }
    }
}

/// What every channel group of [`Operands::by_groups`] shares.
struct Plan<'a, 'p> {
    conv: Operands<'a, 'p>,
    /// Kernel taps.
    taps: usize,
    /// Input index of each tap relative to the window's first.
    offsets: [usize; MAX_TAPS],
    /// Output rows and columns whose window lies inside the input.
    rows: Range<usize>,
    cols: Range<usize>,
}

/// The outputs `o` of `0..out` whose window `o · stride − pad .. + kernel` lies inside
/// `0..len` (a run: none, or from the first to the last such).
#[inline(never)]
fn interior(out: usize, stride: usize, pad: usize, kernel: usize, len: usize) -> Range<usize> {
    // `o · stride ≥ pad` and `o · stride ≤ len + pad − kernel`: from ⌈pad / stride⌉ to
    // ⌊(len + pad − kernel) / stride⌋ (a stride of 0 would leave every output or none).
    let Some(stride) = NonZeroUsize::new(stride) else {
        let all = pad == 0 && kernel <= len;
        return if all { 0..out } else { out..out };
    };
    let first = pad.div_ceil(stride.get());
    let Some(room) = (len + pad).checked_sub(kernel) else {
        return out..out;
    };
    let end = (room / stride.get() + 1).min(out);
    if first >= end {
        return out..out;
    }
    first..end
}

/// The runs of outputs `o` of `0..out` whose windows (`o · stride − pad .. + kernel`
/// over `0..len`) have the same positions inside the input, each with those positions
/// ([`taps_inside`]).
fn segments(
    out: usize,
    stride: usize,
    pad: usize,
    kernel: usize,
    len: usize,
) -> impl Iterator<Item = (Range<usize>, Range<usize>)> {
    let taps = move |o: usize| taps_inside((o * stride) as isize - pad as isize, kernel, len);
    // The interior is one run, taken at once (not output by output).
    let middle = interior(out, stride, pad, kernel, len);
    let mut o = 0;
    core::iter::from_fn(move || {
        if o >= out {
            return None;
        }
        if o == middle.start && middle.start < middle.end {
            o = middle.end;
            return Some((middle.clone(), 0..kernel));
        }
        let (start, inside) = (o, taps(o));
        o += 1;
        while o < out && taps(o) == inside {
            o += 1;
        }
        Some((start..o, inside))
    })
}

/// Whether a requantization clamps to the whole int8 range (no fused activation), as
/// [`dsp::dw_quads`] does.
fn rq_clamp_is_int8(rq: &ChannelRequant<'_>) -> bool {
    rq.activation_min == -128 && rq.activation_max == 127
}

/// Whether [`mve::dw_group`] takes a window: 3 × 3.
fn vector_window(win: &Window) -> bool {
    win.k_h == 3 && win.k_w == 3
}

/// Whether the group of channels from `c0` of a conv with window `win` goes through
/// [`mve::dw_group`] (from its zero-padded copy, or its interior pixels) rather than
/// [`dsp::dw_quads`] alone: a 3 × 3 window on MVE cores (every other group in the unit
/// tests).
fn vector_channels(win: &Window, c0: usize) -> bool {
    vector_window(win) && (cfg!(infer_core_mve) || (cfg!(test) && c0 / 4 % 2 == 1))
}

/// Where [`Operands::quad`] reads a channel group's inputs: the conv's input, or the
/// group's zero-padded copy (one word per pixel, no padding around it).
struct Source {
    /// Rows and columns.
    h: usize,
    w: usize,
    /// Bytes from one pixel to the next.
    step: usize,
    /// The group's first byte in a pixel.
    first: usize,
    /// Padding rows above and columns left of the map.
    pad_top: usize,
    pad_left: usize,
}

impl Operands<'_, '_> {
    /// The zero-padded copy of a channel group's inputs ([`padded_words`] of `scratch`),
    /// every word the input zero point's four bytes (the padding adds nothing to a sum),
    /// for [`Operands::quad`] to copy the group's inputs into: `None` if the conv has none,
    /// `scratch` is short or the zero point is not an int8.
    fn padded<'s>(&self, scratch: &'s mut [u32]) -> Option<&'s mut [u32]> {
        let words = padded_words(self.g);
        let zero_point = i8::try_from(self.input_offset.checked_neg()?).ok()?;
        let copy = scratch.get_mut(..words).filter(|_| words > 0)?;
        copy.fill(u32::from_ne_bytes([zero_point as u8; 4]));
        Some(copy)
    }

    /// Whether copying a group's inputs into a zero-padded map (some 6 instructions a pixel
    /// on the M4F) costs less than the blocks of border pixels it spares (some 700 each):
    /// on small maps, not on large ones nor where a stride of 2 leaves few borders.
    #[inline(always)]
    fn copy_pays(&self) -> bool {
        let (g, win) = (self.g, &self.g.window);
        if padded_words(g) == 0 {
            return false;
        }
        if cfg!(infer_core_mve) && vector_window(win) {
            // The vector kernel takes the whole copy at a fraction of the blocks' cost.
            return true;
        }
        let (pad_top, pad_left) = (win.pad_top(g.in_h), win.pad_left(g.in_w));
        let rows = segments(g.out_h(), win.stride_h, pad_top, win.k_h, g.in_h).count();
        let cols = segments(g.out_w(), win.stride_w, pad_left, win.k_w, g.in_w).count();
        6 * g.in_h * g.in_w < 700 * (rows * cols).saturating_sub(1)
    }

    /// Copies channels `c0 .. c0 + 4` of each pixel `(y, x)` of `input` (the conv's input,
    /// or the map a conv in place overwrites) into word `(y + pad_top) · cols + x + pad_left`
    /// of `padded` (a map `cols` wide, its border left as it is); pixels that fall outside
    /// it are not copied.
    fn copy_group(&self, input: &[i8], c0: usize, padded: &mut [u32], cols: usize) {
        let g = self.g;
        let (pad_top, pad_left) = (g.window.pad_top(g.in_h), g.window.pad_left(g.in_w));
        let Some(row_len) = NonZeroUsize::new(g.in_w * g.in_c) else {
            return;
        };
        // At least four channels (no zero-chunk panic path), `c0 + 4` of them.
        let channels = g.in_c;
        if channels < 4 || c0 > channels - 4 {
            return;
        }
        let width = cols.saturating_sub(pad_left).min(g.in_w);
        for (y, row) in input.chunks_exact(row_len.get()).enumerate() {
            let at = (y + pad_top) * cols + pad_left;
            let Some(words) = padded.get_mut(at..at + width) else {
                return;
            };
            for (word, pixel) in words.iter_mut().zip(row.chunks_exact(channels)) {
                if let Some(values) = pixel.get(c0..c0 + 4).and_then(|v| v.first_chunk()) {
                    *word = dsp::word_i8(values);
                }
            }
        }
    }

    /// The plan of the channel-group paths: `None` for a multiplier other than 1 or more
    /// than [`MAX_TAPS`] kernel taps.
    #[inline(always)]
    fn plan(&self) -> Option<Plan<'_, '_>> {
        let g = self.g;
        let win = &g.window;
        let taps = win.k_h * win.k_w;
        if g.multiplier != 1 || taps > MAX_TAPS {
            return None;
        }
        let mut offsets = [0; MAX_TAPS];
        let mut slots = offsets.iter_mut();
        for ky in 0..win.k_h {
            for (kx, o) in (0..win.k_w).zip(&mut slots) {
                *o = (ky * g.in_w + kx) * g.in_c;
            }
        }
        Some(Plan {
            conv: *self,
            taps,
            offsets,
            rows: interior(
                g.out_h(),
                win.stride_h,
                win.pad_top(g.in_h),
                win.k_h,
                g.in_h,
            ),
            cols: interior(
                g.out_w(),
                win.stride_w,
                win.pad_left(g.in_w),
                win.k_w,
                g.in_w,
            ),
        })
    }

    /// [`depthwise_i8`] channel group by channel group (four channels, then one), for a
    /// multiplier of 1 and at most [`MAX_TAPS`] kernel taps: groups of four through
    /// [`Operands::quad`] if `quads` and it takes them (from their zero-padded copy in
    /// `scratch` where it fits, [`padded_words`]), else the bytes way; false (nothing
    /// computed) for other convs.
    #[inline(always)]
    fn by_groups(
        &self,
        scratch: &mut [u32],
        output: &mut [i8],
        quads: bool,
        covered: bool,
    ) -> bool {
        let Some(plan) = self.plan() else {
            return false;
        };
        let g = self.g;
        let use_quads = quads && rq_clamp_is_int8(self.requant);
        let mut padded = if use_quads && self.copy_pays() {
            self.padded(scratch)
        } else {
            None
        };
        // Without a padded copy, maps of nine output pixels or fewer are all border blocks
        // of a pixel or two, whose set-up costs more than the pixel: those go the bytes way.
        let blocks = use_quads && g.out_h() * g.out_w() > 9;
        let quads = g.in_c / 4 * 4;
        for c0 in (0..quads).step_by(4) {
            // The vector kernel takes a padded copy, or else the interior block.
            let vector = vector_channels(&g.window, c0);
            if let Some(copy) = padded.as_deref_mut() {
                self.copy_group(self.input, c0, copy, padded_dims(g).1);
            }
            let done = match padded.as_deref_mut() {
                Some(copy) => Self::from_copy(&plan, c0, copy, output),
                None if blocks && vector => Self::quad(&plan, c0, None, false, output)
                    .and_then(|()| Self::vector(&plan, c0, None, output)),
                None if blocks => Self::quad(&plan, c0, None, true, output),
                None => None,
            };
            if done.is_none() && !covered {
                Self::channel_group::<4, Bytes>(&plan, c0, output);
            }
        }
        if !covered {
            for c0 in quads..g.in_c {
                Self::channel_group::<1, Bytes>(&plan, c0, output);
            }
        }
        true
    }

    /// Output channels `c0 .. c0 + 4` from the group's zero-padded copy (already taken,
    /// [`Operands::copy_group`]): through [`Operands::vector`] where it takes the window,
    /// else [`Operands::quad`]; `None` (nothing computed) if the group's parameters do not
    /// fit them.
    #[inline(always)]
    fn from_copy(p: &Plan<'_, '_>, c0: usize, copy: &mut [u32], output: &mut [i8]) -> Option<()> {
        if vector_channels(&p.conv.g.window, c0) {
            Self::vector(p, c0, Some(copy), output)
        } else {
            Self::quad(p, c0, Some(copy), true, output)
        }
    }

    /// [`depthwise_i8_in_place`]'s groups: each copied out of `map`, then computed into it.
    fn in_place<const COVERED: bool>(&self, scratch: &mut [u32], map: &mut [i8]) -> Option<()> {
        let plan = self.plan()?;
        let copy = self.padded(scratch)?;
        let g = self.g;
        let cols = padded_dims(g).1;
        let quads = rq_clamp_is_int8(self.requant);
        for c0 in (0..g.in_c).step_by(4) {
            self.copy_group(map, c0, copy, cols);
            let done = if quads {
                Self::from_copy(&plan, c0, copy, map)
            } else {
                None
            };
            if done.is_none() && !COVERED {
                self.padded_group(c0, copy, cols, map)?;
            }
        }
        Some(())
    }

    /// Output channels `c0 .. c0 + 4` of every output pixel from the group's zero-padded
    /// copy (`cols` words wide; its padding adds 0), tap by tap in plain arithmetic: any
    /// requantization. `None` (the rest not computed) if a slice is short.
    fn padded_group(&self, c0: usize, copy: &[u32], cols: usize, output: &mut [i8]) -> Option<()> {
        let (g, win, rq) = (self.g, &self.g.window, self.requant);
        for oy in 0..g.out_h() {
            for ox in 0..g.out_w() {
                for l in 0..4 {
                    let c = c0 + l;
                    let (bias, mult, shift) = rq.channel(c)?;
                    let mut acc: i32 = 0;
                    for ky in 0..win.k_h {
                        for kx in 0..win.k_w {
                            let at = (oy * win.stride_h + ky) * cols + ox * win.stride_w + kx;
                            let x = copy.get(at)?.to_ne_bytes()[l] as i8;
                            let w = *self.weights.get((ky * win.k_w + kx) * g.in_c + c)? as i8;
                            let x = i32::from(x) + self.input_offset;
                            acc = acc.wrapping_add(x.wrapping_mul(i32::from(w)));
                        }
                    }
                    let out = output.get_mut((oy * g.out_w() + ox) * g.in_c + c)?;
                    *out = rq.apply(acc.wrapping_add(bias), mult, shift);
                }
            }
        }
        Some(())
    }

    /// Puts into `group` the parameters of the group of channels `c0 .. c0 + 4` that its
    /// four-channel kernels take (each channel's weights, its bare bias, whose input
    /// offset's share of the taps inside the kernels fold in, and its requantization; the
    /// geometry as it was): `None` if its requantization or sums do not fit them (a
    /// multiplier < 0, a shift outside `-31..=-1`, sums that may reach 2^30) or a slice is
    /// short. (Written in place: returned, the group's parameters were moved through a
    /// `memcpy`, keyword spotting's depthwise convs 2 % slower out of line.)
    #[inline(always)]
    fn group_params(p: &Plan<'_, '_>, c0: usize, group: &mut mve::DwGroup) -> Option<()> {
        let (g, offset, rq) = (p.conv.g, p.conv.input_offset, p.conv.requant);
        // |sum| ≤ |bias| + |offset · Σ w| + 128 · Σ |w| ≤ |bias| + (|offset| + 128) · 128 ·
        // taps: below 2^30 (the DSP kernel's doubled sums fit).
        let worst = (i64::from(offset.unsigned_abs()) + 128) * 128 * p.taps as i64;
        for t in 0..p.taps.min(MAX_TAPS) {
            let at = t * g.in_c + c0;
            let bytes: &[u8; 4] = p.conv.weights.get(at..at + 4)?.first_chunk()?;
            for (w, &b) in group.weights.iter_mut().zip(bytes) {
                w[t] = b as i8;
            }
        }
        for l in 0..4 {
            let (bias, multiplier, shift) = rq.channel(c0 + l)?;
            if multiplier < 0
                || !(-31..=-1).contains(&shift)
                || i64::from(bias.unsigned_abs()) + worst >= 1 << 30
            {
                return None;
            }
            group.bias[l] = bias;
            group.multiplier[l] = multiplier;
            group.shift[l] = -shift;
            group.zero_point[l] = rq.output_offset;
        }
        Some(())
    }

    /// Where the group of channels from `c0` is read: the conv's input, or (`padded`) its
    /// zero-padded copy of `words` words.
    fn source(&self, c0: usize, padded: Option<usize>) -> Source {
        let (g, win) = (self.g, &self.g.window);
        match padded {
            Some(words) => Source {
                h: words / padded_dims(g).1.max(1),
                w: padded_dims(g).1,
                step: 4,
                first: 0,
                pad_top: 0,
                pad_left: 0,
            },
            None => Source {
                h: g.in_h,
                w: g.in_w,
                step: g.in_c,
                first: c0,
                pad_top: win.pad_top(g.in_h),
                pad_left: win.pad_left(g.in_w),
            },
        }
    }

    /// Output channels `c0 .. c0 + 4` of every output pixel (or, without `interior`, of
    /// the border pixels only) through [`dsp::dw_quads`], one block of pixels per kind of
    /// window (the taps inside the input the same): `None` (nothing computed) if the
    /// group's parameters do not fit it ([`Operands::group_params`]).
    ///
    /// Every block starts from the bias with the input offset's share of the taps inside
    /// folded in, `bias + offset · Σ w`, and its taps outside the input get zero weights
    /// (and read the first inside tap's word). With `padded` ([`Operands::padded`]) the
    /// group's inputs are first copied into it, inside its border of zero points: every
    /// window lies inside, and the map is one block.
    fn quad(
        p: &Plan<'_, '_>,
        c0: usize,
        padded: Option<&mut [u32]>,
        interior: bool,
        output: &mut [i8],
    ) -> Option<()> {
        let (g, offset) = (p.conv.g, p.conv.input_offset);
        let win = &g.window;
        // (Each a division or two: found once.)
        let (out_h, out_w) = (g.out_h(), g.out_w());
        let mut params = mve::DwGroup::default();
        Self::group_params(p, c0, &mut params)?;
        let bias = params.bias;
        // Each tap's four weights (read where used: an array of them, filled for the nine
        // taps unrolled, took some 300 B of code).
        let weights = |t: usize| -> [i32; 4] {
            core::array::from_fn(|l| params.weights[l].get(t).map_or(0, |&x| i32::from(x)))
        };
        let mut q = dsp::DwQuad {
            requant: core::array::from_fn(|l| dsp::DwRequant {
                multiplier: params.multiplier[l],
                half: 1 << (params.shift[l] - 1),
                shift: params.shift[l],
                zero_point: params.zero_point[l],
            }),
            ..dsp::DwQuad::default()
        };
        let src = p.conv.source(c0, padded.as_ref().map(|copy| copy.len()));
        // Each tap's offset and doubled packed weights (the taps past the kernel's: zero
        // weights reading the first tap's word).
        let mut full = [[0u32; dsp::DW_TAP_WORDS]; dsp::DW_TAPS];
        // (And each channel's sum of them.)
        let mut total = [0i32; 4];
        let mut taps = full.iter_mut().enumerate();
        for ky in 0..win.k_h {
            for (kx, (t, f)) in (0..win.k_w).zip(&mut taps) {
                let o = (ky * src.w + kx) * src.step;
                let w = weights(t);
                for (s, w) in total.iter_mut().zip(w) {
                    *s += w;
                }
                *f = dsp::dw_tap(i32::try_from(o).ok()?, w.map(|w| 2 * w));
            }
        }
        let step = |n: usize| i32::try_from(n).ok();
        q.in_step = step(win.stride_w * src.step)?;
        q.in_row = step(win.stride_h * src.w * src.step)?;
        q.out_step = step(g.in_c)?;
        q.out_row = step(out_w * g.in_c)?;
        let input: &[i8] = match padded {
            Some(copy) => dsp::int8_of_words(copy),
            None => p.conv.input,
        };
        let (pad_top, pad_left) = (src.pad_top, src.pad_left);
        for (oys, ky) in segments(out_h, win.stride_h, pad_top, win.k_h, src.h) {
            for (oxs, kx) in segments(out_w, win.stride_w, pad_left, win.k_w, src.w) {
                let inside = ky.len() == win.k_h && kx.len() == win.k_w;
                if inside && !interior {
                    continue;
                }
                // Taps outside read the first inside tap's word (any readable word).
                let first = full[(ky.start * win.k_w + kx.start).min(dsp::DW_TAPS - 1)][0];
                let outside = dsp::dw_tap(first as i32, [0; 4]);
                // Each tap inside the input its weights (and their sum in the bias), each
                // outside zero weights.
                let mut sums = [0i32; 4];
                let mut t = 0;
                if inside {
                    // Every tap inside (the interior, or a padded copy): copied at once, by
                    // `copy_bytes` (an assignment took a `memcpy`, some 900 bytes of flash
                    // on the Cortex-M4; tap by tap, visual wake words took 62,000
                    // instructions more there).
                    let taps = dsp::int8_of_words(q.taps.as_flattened_mut());
                    dsp::copy_bytes(taps, dsp::int8_of_words(full.as_flattened_mut()));
                    (sums, t) = (total, win.k_h * win.k_w);
                }
                for y in (0..win.k_h).skip(t) {
                    let row = ky.contains(&y);
                    for x in 0..win.k_w {
                        if let (Some(tap), Some(f)) = (q.taps.get_mut(t), full.get(t)) {
                            *tap = if row && kx.contains(&x) {
                                for (s, w) in sums.iter_mut().zip(weights(t)) {
                                    *s += w;
                                }
                                *f
                            } else {
                                outside
                            };
                        }
                        t += 1;
                    }
                }
                for tap in q.taps.iter_mut().skip(p.taps) {
                    *tap = outside;
                }
                for ((q, &b), &s) in q.bias.iter_mut().zip(&bias).zip(&sums) {
                    *q = b.wrapping_add(offset.wrapping_mul(s)).wrapping_mul(2);
                }
                q.rows = u32::try_from(oys.len()).ok()?;
                q.cols = u32::try_from(oxs.len()).ok()?;
                let y0 = (oys.start * win.stride_h) as isize - pad_top as isize;
                let x0 = (oxs.start * win.stride_w) as isize - pad_left as isize;
                let origin = (y0 * src.w as isize + x0) * src.step as isize + src.first as isize;
                let out_at = (oys.start * out_w + oxs.start) * g.in_c + c0;
                dsp::dw_quads(&q, input, origin, output, out_at);
            }
        }
        Some(())
    }

    /// Output channels `c0 .. c0 + 4` of a 3 × 3 conv through [`mve::dw_group`]: with
    /// `padded` ([`Operands::padded`]) every output pixel from the group's copy, one block;
    /// else the pixels whose window lies inside the input (the border ones are
    /// [`Operands::quad`]'s). `None` (nothing computed) if the group's parameters do not
    /// fit ([`Operands::group_params`]). The lanes run along the rows, or down the columns
    /// where that leaves fewer lanes empty (KWS's maps are 5 wide and 25 high).
    fn vector(
        p: &Plan<'_, '_>,
        c0: usize,
        padded: Option<&mut [u32]>,
        output: &mut [i8],
    ) -> Option<()> {
        let g = p.conv.g;
        let win = &g.window;
        let mut group = mve::DwGroup::default();
        Self::group_params(p, c0, &mut group)?;
        // Every tap inside: the input offset's share of all of them in the bias.
        for (b, w) in group.bias.iter_mut().zip(&group.weights) {
            let total = w.iter().map(|&w| i32::from(w)).sum::<i32>();
            *b = b.wrapping_add(p.conv.input_offset.wrapping_mul(total));
        }
        let src = p.conv.source(c0, padded.as_ref().map(|copy| copy.len()));
        let (input, (rows, cols)): (&[i8], _) = match padded {
            Some(copy) => (dsp::int8_of_words(copy), (0..g.out_h(), 0..g.out_w())),
            None => (p.conv.input, (p.rows.clone(), p.cols.clone())),
        };
        if rows.is_empty() || cols.is_empty() {
            return Some(());
        }
        let y0 = rows.start * win.stride_h - src.pad_top;
        let x0 = cols.start * win.stride_w - src.pad_left;
        let origin = (y0 * src.w + x0) * src.step + src.first;
        let out_at = (rows.start * g.out_w() + cols.start) * g.in_c + c0;
        let row = src.w * src.step;
        // (`Range::len` would keep an assertion's panic path.)
        let (n, m) = (rows.end - rows.start, cols.end - cols.start);
        let along = (
            (win.stride_w * src.step, g.in_c, m),
            (win.stride_h * row, g.out_w() * g.in_c, n),
        );
        let (lanes, rows) = if n * m.div_ceil(4) <= m * n.div_ceil(4) {
            along
        } else {
            (along.1, along.0)
        };
        (group.row, group.col) = (row, src.step);
        (group.in_step, group.out_step, group.cols) = lanes;
        (group.in_row, group.out_row, group.rows) = rows;
        mve::dw_group(&group, input, origin, output, out_at);
        Some(())
    }

    /// Output channels `c0 .. c0 + L` of every output pixel: `None` (the rest not computed) if
    /// a slice is short.
    #[inline(never)]
    fn channel_group<const L: usize, W: Lanes<L>>(
        p: &Plan<'_, '_>,
        c0: usize,
        output: &mut [i8],
    ) -> Option<()> {
        let Operands {
            g,
            input,
            input_offset: offset,
            weights,
            requant: rq,
        } = p.conv;
        let win = &g.window;
        let channels = g.in_c;
        let mut taps = [W::ZERO; MAX_TAPS];
        let mut window = W::Window::default();
        let mut sums = [0i32; L];
        for (t, (tap, &o)) in taps.iter_mut().zip(&p.offsets).take(p.taps).enumerate() {
            let at = t * channels + c0;
            let w: [u8; L] = *weights.get(at..at + L)?.first_chunk()?;
            let w = w.map(|w| w as i8);
            for (s, &w) in sums.iter_mut().zip(&w) {
                *s = s.wrapping_add(i32::from(w));
            }
            *tap = W::tap(w);
            W::push(&mut window, o, w);
        }
        let (mut bias, mut mult, mut shift) = ([0; L], [0; L], [0; L]);
        for l in 0..L {
            (bias[l], mult[l], shift[l]) = rq.channel(c0 + l)?;
        }
        let mut folded = bias;
        for (f, &s) in folded.iter_mut().zip(&sums) {
            *f = f.wrapping_add(offset.wrapping_mul(s));
        }
        // A monotonic requantization (multiplier ≥ 0, no left shift) clamped at or above the
        // zero point (a ReLU) takes any sum ≤ 0 to the floor.
        let relu = rq.activation_min >= rq.output_offset && rq.activation_min <= rq.activation_max;
        let floor: [bool; L] = core::array::from_fn(|l| relu && mult[l] >= 0 && shift[l] <= 0);
        let (pad_top, pad_left) = (win.pad_top(g.in_h), win.pad_left(g.in_w));
        let out_w = g.out_w();
        for oy in 0..g.out_h() {
            let inner_row = p.rows.contains(&oy);
            // Input row of the window's first row, for interior rows.
            let iy = (oy * win.stride_h).wrapping_sub(pad_top);
            let y0 = (oy * win.stride_h) as isize - pad_top as isize;
            for ox in 0..out_w {
                let acc = if inner_row && p.cols.contains(&ox) {
                    let ix = (ox * win.stride_w).wrapping_sub(pad_left);
                    W::window(&window, input, (iy * g.in_w + ix) * channels + c0, folded)?
                } else {
                    // Only the taps inside the input, their inputs plus the offset.
                    let mut acc = bias;
                    let x0 = (ox * win.stride_w) as isize - pad_left as isize;
                    let cols = taps_inside(x0, win.k_w, g.in_w);
                    for ky in taps_inside(y0, win.k_h, g.in_h) {
                        let row = (y0 + ky as isize) as usize * g.in_w;
                        for kx in cols.clone() {
                            let at = (row + (x0 + kx as isize) as usize) * channels + c0;
                            let x = input.get(at..at + L)?.first_chunk()?;
                            W::mac(&mut acc, x, taps.get(ky * win.k_w + kx)?, offset);
                        }
                    }
                    acc
                };
                let at = (oy * out_w + ox) * channels + c0;
                let out: &mut [i8; L] = output.get_mut(at..at + L)?.first_chunk_mut()?;
                for l in 0..L {
                    out[l] = if !floor[l] {
                        rq.apply(acc[l], mult[l], shift[l])
                    } else if acc[l] <= 0 {
                        rq.activation_min as i8
                    } else {
                        // `apply`'s way for a positive sum, its conditions known to hold.
                        crate::requant::scale_positive(acc[l], mult[l], shift[l])
                            .saturating_add(rq.output_offset)
                            .max(rq.activation_min)
                            .min(rq.activation_max) as i8
                    };
                }
            }
        }
        Some(())
    }

    /// [`depthwise_i8`] pixel by pixel: all channels of an output pixel accumulated in `acc`.
    fn by_pixels(&self, acc: &mut [u32], output: &mut [i8]) {
        let Operands {
            g,
            input,
            input_offset,
            weights,
            requant,
        } = *self;
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
                let (Some(px), Some(w)) =
                    (input.get(at..at + g.in_c), weights.get(tap..tap + out_c))
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

    /// A random input and random weights for `g`; `None` if it has no output.
    fn random_tensors(rng: &mut TestRng, g: &DepthwiseGeometry) -> Option<(Vec<i8>, Vec<u8>)> {
        if g.out_h() == 0 || g.out_w() == 0 {
            return None;
        }
        let input = (0..g.in_h * g.in_w * g.in_c).map(|_| rng.i8()).collect();
        let weights = (0..g.weights()).map(|_| rng.i8() as u8).collect();
        Some((input, weights))
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
            let Some((input, weights)) = random_tensors(&mut rng, &g) else {
                continue;
            };
            let same = g.window.padding == crate::kernels::conv::Padding::Same;
            seen[usize::from(g.multiplier > 1) + 2 * usize::from(same)] = true;
            let rq = Requant::random(&mut rng, g.out_c());
            let offset = rng.below(256) as i32 - 127;
            let len = g.out_h() * g.out_w() * g.out_c();
            let mut want = vec![0i8; len];
            depthwise_i8_reference(&g, &input, offset, &weights, &rq.view(), &mut want);
            let mut got = vec![0i8; len];
            let mut acc = vec![0u32; depthwise_scratch_words(&g)];
            depthwise_i8::<false>(&g, &input, offset, &weights, &rq.view(), &mut acc, &mut got);
            assert_eq!(got, want, "{g:?}");
            let view = rq.view();
            let conv = Operands::of(&g, &input, offset, &weights, &view);
            got.fill(0);
            conv.by_pixels(&mut acc, &mut got);
            assert_eq!(got, want, "by pixels {g:?}");
            let groups = g.multiplier == 1 && g.window.k_h * g.window.k_w <= MAX_TAPS;
            assert_eq!(conv.by_groups_match(&want), groups, "{g:?}");
        }
        assert!(seen.iter().all(|&s| s), "{seen:?}");
    }

    /// A depthwise conv run over its own input equals the reference, on random geometries
    /// that fit ([`in_place_fits`]) and random requantizations: those of the four-channel
    /// kernels and those they refuse (a left shift, a clamp short of int8), computed from
    /// the padded copy.
    #[test]
    fn in_place_matches_the_reference() {
        let mut rng = TestRng(0x1A9C);
        let cases = if cfg!(miri) { 10 } else { 600 };
        let (mut kernels, mut plain) = (0, 0);
        for _ in 0..cases {
            let g = DepthwiseGeometry {
                in_h: 1 + rng.below(12) as usize,
                in_w: 1 + rng.below(12) as usize,
                in_c: 4 * (1 + rng.below(3) as usize),
                multiplier: 1,
                window: Window::random(&mut rng),
            };
            if !in_place_fits(&g) {
                continue;
            }
            let Some((input, weights)) = random_tensors(&mut rng, &g) else {
                continue;
            };
            let rq = Requant::random(&mut rng, g.out_c());
            let view = rq.view();
            let offset = rng.below(256) as i32 - 127;
            let len = g.out_h() * g.out_w() * g.out_c();
            let mut want = vec![0i8; len];
            depthwise_i8_reference(&g, &input, offset, &weights, &view, &mut want);
            let mut map = input.clone();
            let mut scratch = vec![0u32; depthwise_scratch_words(&g)];
            depthwise_i8_in_place::<false>(&g, &mut map, offset, &weights, &view, &mut scratch);
            assert_eq!(map[..len], want[..], "{g:?}");
            let conv = Operands::of(&g, &[], offset, &weights, &view);
            let plan = conv.plan().expect("a multiplier of 1");
            let group = &mut mve::DwGroup::default();
            if rq_clamp_is_int8(&view) && Operands::group_params(&plan, 0, group).is_some() {
                kernels += 1;
            } else {
                plain += 1;
            }
        }
        assert!(kernels > 50 && plain > 50, "{kernels} {plain}");
    }

    impl<'a, 'p> Operands<'a, 'p> {
        fn of(
            g: &'a DepthwiseGeometry,
            input: &'a [i8],
            input_offset: i32,
            weights: &'a [u8],
            requant: &'a ChannelRequant<'p>,
        ) -> Self {
            Self {
                g,
                input,
                input_offset,
                weights,
                requant,
            }
        }

        /// Whether the conv goes by channel groups; if so, asserts every way of four lanes
        /// (bytes alone, the four-channel blocks where they fit, and those from the padded
        /// copy where the scratch holds it) computes `want`.
        fn by_groups_match(&self, want: &[i8]) -> bool {
            let mut got = vec![0i8; want.len()];
            let mut scratch = vec![0u32; depthwise_scratch_words(self.g)];
            if !self.by_groups(&mut scratch, &mut got, false, false) {
                return false;
            }
            assert_eq!(
                got, want,
                "bytes, offset {} {:?}",
                self.input_offset, self.g
            );
            for (way, scratch) in [("blocks", &mut [][..]), ("padded", &mut scratch[..])] {
                got.fill(0);
                assert!(self.by_groups(scratch, &mut got, true, false));
                assert_eq!(
                    got, want,
                    "quads ({way}), offset {} {:?}",
                    self.input_offset, self.g
                );
            }
            true
        }
    }

    #[test]
    fn channel_groups_match_the_reference_on_mobilenet_shapes() {
        // 3×3, multiplier 1, strides 1 and 2, same and valid padding, channel counts with
        // and without a remainder past the groups of four: interior and border pixels.
        let mut rng = TestRng(0x5eed);
        for case in 0..300 {
            let stride = 1 + case % 2;
            let g = DepthwiseGeometry {
                in_h: 1 + rng.below(12) as usize,
                in_w: 1 + rng.below(12) as usize,
                in_c: 1 + rng.below(19) as usize,
                multiplier: 1,
                window: Window {
                    k_h: 1 + rng.below(3) as usize,
                    k_w: 1 + rng.below(3) as usize,
                    stride_h: stride,
                    stride_w: stride,
                    padding: if case % 4 < 2 {
                        crate::kernels::conv::Padding::Same
                    } else {
                        crate::kernels::conv::Padding::Valid
                    },
                },
            };
            let Some((input, weights)) = random_tensors(&mut rng, &g) else {
                continue;
            };
            let rq = Requant::random(&mut rng, g.out_c());
            // Now and then an offset far outside the int8 range.
            let offset = if case % 25 == 0 {
                40_000
            } else {
                rng.below(256) as i32 - 127
            };
            let len = g.out_h() * g.out_w() * g.out_c();
            let mut want = vec![0i8; len];
            depthwise_i8_reference(&g, &input, offset, &weights, &rq.view(), &mut want);
            let view = rq.view();
            assert!(Operands::of(&g, &input, offset, &weights, &view).by_groups_match(&want));
        }
    }

    #[test]
    fn channel_quads_take_every_group_of_an_int8_clamp_and_match_the_reference() {
        // Right shifts, multipliers ≥ 0, no fused activation: every group of four goes
        // through `dsp::dw_quads`, whatever the kernel (up to 3 × 3 and 1 × 9), strides,
        // padding and map; its results are the reference's.
        let mut rng = TestRng(0x0D5F);
        let mut covered_maps = 0;
        for case in 0..400 {
            let (k_h, k_w) = if case % 10 == 9 {
                (1, 9)
            } else {
                (1 + rng.below(3) as usize, 1 + rng.below(3) as usize)
            };
            let g = DepthwiseGeometry {
                in_h: 1 + rng.below(10) as usize,
                in_w: 1 + rng.below(10) as usize,
                in_c: 4 * (1 + rng.below(4) as usize),
                multiplier: 1,
                window: Window {
                    k_h,
                    k_w,
                    stride_h: 1 + rng.below(2) as usize,
                    stride_w: 1 + rng.below(2) as usize,
                    padding: if case % 3 == 0 {
                        crate::kernels::conv::Padding::Valid
                    } else {
                        crate::kernels::conv::Padding::Same
                    },
                },
            };
            let Some((input, weights)) = random_tensors(&mut rng, &g) else {
                continue;
            };
            let mut rq = Requant::random(&mut rng, g.out_c());
            for s in &mut rq.shift {
                *s = (-1 - rng.below(12) as i8) as u8;
            }
            (rq.min, rq.max) = (-128, 127);
            let offset = rng.below(256) as i32 - 127;
            let len = g.out_h() * g.out_w() * g.out_c();
            let mut want = vec![0i8; len];
            depthwise_i8_reference(&g, &input, offset, &weights, &rq.view(), &mut want);
            let view = rq.view();
            let conv = Operands::of(&g, &input, offset, &weights, &view);
            let plan = conv.plan().unwrap();
            let mut got = vec![0i8; len];
            for c0 in (0..g.in_c).step_by(4) {
                assert!(
                    Operands::quad(&plan, c0, None, true, &mut got).is_some(),
                    "{g:?}"
                );
            }
            assert_eq!(got, want, "blocks {g:?}");
            // The same from the zero-padded copy (every map here has one).
            let mut scratch = vec![0u32; depthwise_scratch_words(&g)];
            let copy = conv.padded(&mut scratch).unwrap();
            got.fill(0);
            for c0 in (0..g.in_c).step_by(4) {
                conv.copy_group(&input, c0, copy, padded_dims(&g).1);
                assert!(Operands::quad(&plan, c0, Some(&mut *copy), true, &mut got).is_some());
            }
            assert_eq!(got, want, "padded {g:?}");
            // Covered (`depthwise_i8` takes the padded copy or the blocks) where the copy
            // pays or the map has more than nine output pixels; compiled for it, the same.
            let covered = covered_by_quads(&g, offset, &weights, &view);
            assert_eq!(covered, conv.copy_pays() || len / g.in_c > 9, "{g:?}");
            if covered {
                covered_maps += 1;
                got.fill(0);
                depthwise_i8::<true>(&g, &input, offset, &weights, &view, &mut scratch, &mut got);
                assert_eq!(got, want, "covered {g:?}");
            }
            // A clamp narrower than int8 (a fused activation): not covered.
            let mut narrow = rq.view();
            narrow.activation_min = -127;
            assert!(!covered_by_quads(&g, offset, &weights, &narrow));
        }
        assert!(covered_maps > 100, "{covered_maps}");
    }

    /// The interior and the runs of outputs with the same taps inside, against the
    /// windows written out, on every small geometry.
    #[test]
    fn interiors_and_segments_match_the_windows_written_out() {
        for (out, stride, pad, kernel, len) in (0..12).flat_map(|out| {
            (0..4).flat_map(move |stride| {
                (0..4).flat_map(move |pad| {
                    (1..5).flat_map(move |kernel| {
                        (0..12).map(move |len| (out, stride, pad, kernel, len))
                    })
                })
            })
        }) {
            let origin = |o: usize| (o * stride) as isize - pad as isize;
            let inside = |o: usize| origin(o) >= 0 && origin(o) + kernel as isize <= len as isize;
            let first = (0..out).find(|&o| inside(o)).unwrap_or(out);
            let want = first..(first..out).find(|&o| !inside(o)).unwrap_or(out);
            let case = (out, stride, pad, kernel, len);
            assert_eq!(interior(out, stride, pad, kernel, len), want, "{case:?}");
            if stride == 0 {
                continue;
            }
            // Every output once, in order, each run's outputs with the run's taps.
            let mut next = 0;
            for (run, taps) in segments(out, stride, pad, kernel, len) {
                assert_eq!(run.start, next, "{case:?}");
                assert!(run.end > run.start, "{case:?}");
                for o in run.clone() {
                    assert_eq!(taps_inside(origin(o), kernel, len), taps, "{case:?}");
                }
                next = run.end;
            }
            assert_eq!(next, out, "{case:?}");
        }
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
        depthwise_i8::<false>(
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

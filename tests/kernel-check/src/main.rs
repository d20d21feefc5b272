//! infer-core's assembly kernels against their portable twins, bit for bit, under QEMU (the
//! host tests can only run the twins): on the Cortex-M55 the Helium (MVE) loops of
//! `kernels::mve` and the DSP blocks of `kernels::dsp` (which dispatch to the MVE ones
//! there), on the Cortex-M4F (`--target thumbv7em-none-eabihf`) the DSP blocks alone, on
//! the Cortex-M3 (`--target thumbv7m-none-eabi`) the pair blocks of `kernels::pairs`, on
//! the Cortex-M0 (`--target thumbv6m-none-eabi`) the word-weight loop of `kernels::words`;
//! on random sizes and random values (any bits where the kernel takes any).
//!
//! Prints `kernel-check: <n> cases, every result equal to the portable twin's` and exits 0;
//! on the first difference, prints the kernel and the case and exits 1.

#![no_std]
#![no_main]

use core::panic::PanicInfo;

use cortex_m_rt::entry;
use cortex_m_semihosting::debug::{self, ExitStatus, EXIT_FAILURE, EXIT_SUCCESS};
use cortex_m_semihosting::hprintln;
use infer_core::kernels::add::{AddParams, AddTables, ADD_SCRATCH_WORDS};
use infer_core::kernels::conv::Padding;
use infer_core::kernels::depthwise::{
    covered_by_quads, depthwise_i8, depthwise_i8_reference, depthwise_scratch_words,
    DepthwiseGeometry,
};
use infer_core::kernels::dot::PatchWords;
use infer_core::kernels::window::Window;
use infer_core::kernels::{dense, dsp, mve, pairs, words, ChannelRequant};

/// Random cases per kernel.
const CASES: usize = 300;

/// xorshift64: the same cases on every run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn fill_words(&mut self, words: &mut [u32]) {
        words.iter_mut().for_each(|w| *w = self.next() as u32);
    }
    fn fill_bytes(&mut self, bytes: &mut [u8]) {
        bytes.iter_mut().for_each(|b| *b = self.next() as u8);
    }
}

/// Fails the run if `got` differs from `want`.
fn check<T: PartialEq + core::fmt::Debug>(kernel: &str, case: usize, got: T, want: T) {
    if got != want {
        hprintln!(
            "kernel-check: {} case {}: {:?} != {:?}",
            kernel,
            case,
            got,
            want
        );
        exit(EXIT_FAILURE);
    }
}

/// The first `n` int8 values narrowed into `words` (value `i` at byte `i` of their
/// memory), the rest 0.
fn narrowed(words: &[u32; 64], n: usize) -> [i8; 64] {
    let mut bytes = [0i8; 64];
    for (i, b) in bytes.iter_mut().enumerate().take(n) {
        *b = words[i / 4].to_ne_bytes()[i % 4] as i8;
    }
    bytes
}

/// A requantizing kernel (`asm`) and its portable twin (`twin`), each narrowing the first `n`
/// of the same `sums` in place: their values checked equal. The twin's values, which the
/// kernel's into-bytes form must give too.
fn check_narrowed(
    kernel: &str,
    case: usize,
    (sums, n): ([u32; 64], usize),
    asm: impl FnOnce(&mut [u32]),
    twin: impl FnOnce(&mut [u32]),
) -> [i8; 64] {
    let (mut got, mut want) = (sums, sums);
    asm(&mut got[..n]);
    twin(&mut want[..n]);
    let want = narrowed(&want, n);
    check(kernel, case, narrowed(&got, n), want);
    want
}

#[entry]
fn main() -> ! {
    // The Cortex-M0's 16 KiB hold the word-weight check alone (the others' buffers take
    // more, and its core has none of their assembly).
    let checked = if words::WORD_WEIGHTS {
        check_word_weights()
    } else {
        check_all()
    };
    hprintln!(
        "kernel-check: {} cases, every result equal to the portable twin's",
        checked
    );
    exit(EXIT_SUCCESS)
}

/// One pixel's four filters from weights widened to words (the Cortex-M0's assembly),
/// `CASES` times: any count of taps, from random patch words and weight words. The cases
/// checked.
#[inline(never)]
fn check_word_weights() -> usize {
    let mut rng = Rng(0x574F_5244);
    let (mut patch, mut words) = ([0u32; 2 * 80], [0u32; 4 * 80]);
    for case in 0..CASES {
        rng.fill_words(&mut patch);
        rng.fill_words(&mut words);
        let taps = 1 + rng.below(80);
        let got = words::dot4_words(&patch, &words[..4 * taps], taps);
        let want = words::dot4_words_portable(&patch, &words[..4 * taps], taps);
        check("dot4_words", case, got, want);
    }
    CASES
}

/// Every other kernel against its twin, `CASES` times. The cases checked.
#[inline(never)]
fn check_all() -> usize {
    let mut rng = Rng(0x4D56_4531);
    let mut patch = [0u32; 4 * 2 * 160];
    let mut weights = [0u8; 12 * 160];
    // The depthwise cases draw from their own generator, so the others' cases stay put.
    let mut dw_rng = Rng(0x4457_3333);
    let mut checked = 0;
    for case in 0..CASES {
        rng.fill_words(&mut patch);
        rng.fill_bytes(&mut weights);
        let acc4 = [0; 4].map(|_| rng.next() as i32);

        // One pixel, four and two filters: any number of groups of four taps.
        let groups = rng.below(41);
        let rows = [0, 1, 2, 3].map(|f| &weights[f * 160..f * 160 + 4 * groups]);
        let got = mve::dot4_groups(&patch, rows, groups, acc4);
        check(
            "dot4_groups",
            case,
            got,
            mve::dot4_groups_portable(&patch, rows, groups, acc4),
        );
        let acc2 = [acc4[0], acc4[1]];
        let got = mve::dot2_groups(&patch, rows[0], rows[1], groups, acc2);
        let want = mve::dot2_groups_portable(&patch, rows[0], rows[1], groups, acc2);
        check("dot2_groups", case, got, want);
        let octets = 1 + rng.below(20);
        let (w0, w1) = (&weights[..8 * octets], &weights[160..160 + 8 * octets]);
        let got = dsp::dot2_octets(&patch, w0, w1, octets, acc2);
        let want = dsp::dot2_octets_portable(&patch, w0, w1, octets, acc2);
        check("dot2_octets", case, got, want);

        // Packing groups of int8 values: a packed patch (step 2) and a quad patch's pixel
        // (step 8), written over random words.
        let mut run = [0u8; 160];
        rng.fill_bytes(&mut run);
        let run = run.map(|b| b as i8);
        let offset = rng.below(257) as i32 - 128;
        let groups = rng.below(41);
        for step in [2, 8] {
            let mut got = [0u32; 8 * 40 + 2];
            rng.fill_words(&mut got);
            let mut want = got;
            dsp::pack_groups(&run, offset, &mut got, step, groups);
            dsp::pack_groups_portable(&run, offset, &mut want, step, groups);
            check("pack_groups", case, got, want);
        }
        // Up to four pixels' runs at once, any pixel step (even overlapping runs), groups
        // and step; some reaching past the run or the patch (nothing written).
        let (count, pixel_step) = (rng.below(5), rng.below(48));
        let (step, groups) = ([2, 8, 24][rng.below(3)], rng.below(14));
        let mut got = [0u32; 8 * 40 + 2];
        rng.fill_words(&mut got);
        let mut want = got;
        let pixels = (count, pixel_step);
        dsp::pack_pixel_groups(&run, offset, &mut got, (step, groups), pixels);
        dsp::pack_pixel_groups_portable(&run, offset, &mut want, (step, groups), pixels);
        check("pack_pixel_groups", case, got, want);

        // One-channel 3 × 3 windows of a run into a quad patch, over random words: rows of
        // any length (those too short for a window's word loads end the run), strides 1
        // to 3, any first pixel and count (past the quad: not written).
        let len = rng.below(14);
        let rows = [0, 1, 2].map(|r| &run[r * 16..r * 16 + len]);
        let step = 1 + rng.below(3);
        let (first, count) = (rng.below(4), 1 + rng.below(4));
        let mut got = [0u32; dsp::QUAD_3X3_WORDS];
        rng.fill_words(&mut got);
        let mut want = got;
        let any = dsp::gather_3x3_run(rows, step, offset, (first, count), &mut got);
        let any_want = dsp::gather_3x3_run_portable(rows, step, offset, (first, count), &mut want);
        check("gather_3x3_run", case, (got, any), (want, any_want));

        // Four pixels' quad patch, all filters, into running maxima (stride 0: a pool
        // window; else consecutive positions).
        // Any count of taps (whole blocks of sixteen, groups of four, single taps).
        let taps = 1 + rng.below(160);
        let filters = 1 + rng.below(12);
        let stride = [0, filters, filters + rng.below(4)][rng.below(3)];
        let conv = quad_conv(&patch, &weights, (taps, filters, stride), &[]);
        let mut got = [0u32; 64];
        rng.fill_words(&mut got);
        let mut want = got;
        dsp::quad_filters(&conv, &mut got);
        dsp::quad_filters_portable(&conv, &mut want);
        check("quad_filters", case, got, want);

        // The same with the filters' rows widened (an `LDM` per group of four weights).
        // At most 12 filters of 159 taps (39 groups and 3 single taps: 81 words).
        let mut wide = [0u32; 12 * 81];
        dsp::widen_filter(conv.weights, taps, filters, &mut wide);
        let conv = dsp::QuadConv {
            wide: &wide[..filters * dsp::wide_words(taps)],
            ..conv
        };
        let mut got = [0u32; 64];
        rng.fill_words(&mut got);
        let mut want = got;
        dsp::quad_filters(&conv, &mut got);
        dsp::quad_filters_portable(&conv, &mut want);
        check("quad_filters_wide", case, got, want);

        let quad = (taps, filters, stride);

        // A streamed dense layer's step from int8 values: any units, any channels; offset
        // 0 (the units four at a time, then a pair) half the time.
        let channels = 1 + rng.below(160);
        let units = 2 + rng.below(10);
        let stride = channels + rng.below(8);
        let offset = rng.below(256) as i32 - 127;
        let rows = mve::DenseRowsI8 {
            values: &dsp::int8_of_words(&mut patch)[..channels],
            weights: &weights[..(units - 1) * stride + channels],
            channels,
            stride,
            offset: [0, offset][rng.below(2)],
        };
        let mut got = [0u32; 16];
        rng.fill_words(&mut got);
        let mut want = got;
        mve::dense_rows_i8(&rows, &mut got[..units]);
        mve::dense_rows_i8_portable(&rows, &mut want[..units]);
        check("dense_rows_i8", case, got, want);

        // Runs of a window into one pixel's share of an int8 quad patch: any rows, any
        // length, any source stride (even shorter than a run) and tap step, from any tap,
        // any pixel (past the patch, the source or the quad: nothing written).
        let runs = mve::TapRuns {
            rows: rng.below(5),
            len: rng.below(40),
            stride: rng.below(50),
            tap: rng.below(50),
            tap_step: rng.below(60),
        };
        let pixel = rng.below(5);
        let mut bytes = [0u8; 64 * 9 + 16];
        rng.fill_bytes(&mut bytes);
        let mut got = bytes.map(|b| b as i8);
        let mut want = got;
        let src = &run[..rng.below(run.len() + 1)];
        mve::put_rows_i8(src, &runs, pixel, &mut got);
        mve::put_rows_i8_portable(src, &runs, pixel, &mut want);
        check("put_rows_i8", case, got, want);

        // Up to four windows into their pixels' shares at once: any rows, length and
        // stride, each window anywhere in the source (sometimes reaching past it: nothing
        // written), some pixels without one.
        let (rows, len, stride) = (rng.below(5), rng.below(40), rng.below(50));
        // Now and then runs that are not a window's (both refuse them).
        let mut runs = mve::TapRuns::window(rows, len, stride);
        runs.tap = [0, 0, 0, 0, 0, 0, 17, 1][rng.below(8)];
        runs.tap_step += usize::from(rng.below(16) == 0);
        let offsets: [usize; 4] = core::array::from_fn(|_| match rng.below(4) {
            0 => usize::MAX,
            _ => rng.below(run.len()),
        });
        let mut want = got;
        mve::put_quad_i8(&run, offsets, &runs, &mut got);
        mve::put_quad_i8_portable(&run, offsets, &runs, &mut want);
        check("put_quad_i8", case, got, want);

        // One-channel 3 × 3 windows of a row into an int8 quad patch: rows holding the word
        // loads' byte past the windows or not (from the first window without it, none
        // written), any step, first pixel and count (past the quad: not written), any zero
        // point.
        let mut bytes = [0u32; 24];
        rng.fill_words(&mut bytes);
        let bytes = dsp::int8_of_words(&mut bytes);
        let step = 1 + rng.below(3);
        let len = 3 + rng.below(12);
        let rows = [0, 1, 2].map(|r| &bytes[r * 32..][..len + rng.below(2)]);
        let (first, count) = (rng.below(5), rng.below(6));
        let zero_point = [bytes[0], rng.below(256) as i8][rng.below(2)];
        let mut got_words = [0u32; 16];
        rng.fill_words(&mut got_words);
        let mut want_words = got_words;
        let got_patch = dsp::int8_of_words(&mut got_words)
            .first_chunk_mut()
            .unwrap();
        let any = mve::put_3x3_run_i8(rows, step, zero_point, (first, count), got_patch);
        let want_patch = dsp::int8_of_words(&mut want_words)
            .first_chunk_mut()
            .unwrap();
        let any_want =
            mve::put_3x3_run_i8_portable(rows, step, zero_point, (first, count), want_patch);
        check(
            "put_3x3_run_i8",
            case,
            (got_words, any),
            (want_words, any_want),
        );

        // A window's padding: the zero point into taps 0.. of one pixel's share, any count
        // (past the patch: nothing written), any pixel.
        let (taps, pixel, fill) = (rng.below(160), rng.below(5), rng.below(256) as i8);
        let mut want = got;
        mve::fill_taps_i8(fill, taps, pixel, &mut got);
        mve::fill_taps_i8_portable(fill, taps, pixel, &mut want);
        check("fill_taps_i8", case, got, want);

        // Words (a dense layer's offset terms) into sums, any count, either slice the
        // shorter: the first words of the shorter copied, the rest as they were.
        let mut src = [0u32; 40];
        rng.fill_words(&mut src);
        let mut got = [0u32; 40];
        rng.fill_words(&mut got);
        let mut want = got;
        let (n_dst, n_src) = (rng.below(41), rng.below(41));
        mve::copy_words(&mut got[..n_dst], &src[..n_src]);
        let n = n_dst.min(n_src);
        want[..n].copy_from_slice(&src[..n]);
        check("copy_words", case, got, want);

        // Four pixels' int8 quad patch (the bytes of random words), all filters, any taps
        // (the last block partial most of the time; under 16, no whole block), any offset.
        let taps = 1 + rng.below(160);
        // Its own stride: 0 (a pool window) or at least `filters`, as the kernel's contract
        // says (a smaller one makes pixels overwrite each other's results in kernel order).
        let stride = [0, filters, filters + rng.below(4)][rng.below(3)];
        // Offset terms well inside an i32, as a valid model's are (the pool window's max
        // is taken before its term is added).
        let terms = [0u32; 12].map(|_| ((rng.next() as i32) >> 8) as u32);
        let conv = mve::QuadConvI8 {
            patch: &dsp::int8_of_words(&mut patch)[..mve::QuadConvI8::patch_bytes(taps)],
            weights: &weights[..filters * taps],
            taps,
            filters,
            offset_terms: &terms[..filters],
            stride,
        };
        let mut got = [0u32; 64];
        rng.fill_words(&mut got);
        let mut want = got;
        mve::quad_filters_i8(&conv, &mut got);
        mve::quad_filters_i8_portable(&conv, &mut want);
        check("quad_filters_i8", case, got, want);

        // Requantizing positions with a ReLU: random sums, biases, multipliers ≥ 0, shifts
        // in -31..=0, zero points.
        let channels = 1 + rng.below(16);
        let positions = 1 + rng.below(4);
        let mut params = [0u8; 9 * 16];
        rng.fill_bytes(&mut params);
        let (bias, rest) = params.split_at_mut(4 * 16);
        let (multiplier, shift) = rest.split_at_mut(4 * 16);
        for m in multiplier.chunks_exact_mut(4) {
            m[3] &= 0x7F;
        }
        // Biases of every magnitude too.
        for b in bias.chunks_exact_mut(4) {
            b.copy_from_slice(&((rng.next() as i32) >> rng.below(32)).to_le_bytes());
        }
        for s in shift.iter_mut() {
            *s = (-(rng.below(32) as i8)) as u8;
        }
        // Every fourth case a first channel without a shift (the quads' own path for it),
        // its multiplier and bias small, so that its values do not all saturate.
        if case % 4 == 0 {
            shift[0] = 0;
            multiplier[..4].copy_from_slice(&(1i32 << 10).to_le_bytes());
            bias[..4].fill(0);
        }
        let zero_point = rng.below(256) as i32 - 128;
        let rq = ChannelRequant {
            bias,
            multiplier,
            shift,
            output_offset: zero_point,
            activation_min: zero_point,
            activation_max: 127,
        };
        // Sums of every magnitude, so that most land inside the clamp.
        let mut got = [0u32; 64];
        for v in got.iter_mut() {
            *v = ((rng.next() as i32) >> rng.below(32)) as u32;
        }
        let sums = got;
        let n = positions * channels;
        let want = check_narrowed(
            "requantize_relu",
            case,
            (sums, n),
            |got| dsp::requantize_relu(&rq, got, channels, None),
            |want| dsp::requantize_relu_portable(&rq, want, channels, None),
        );
        // The same into bytes of their own.
        let (mut got, mut bytes) = (sums, [0i8; 64]);
        dsp::requantize_relu(&rq, &mut got[..n], channels, Some(&mut bytes[..n]));
        check("requantize_relu into bytes", case, bytes, want);
        // A ceiling below 127 (a ReLU6's, say): the general way, the same values.
        let capped = ChannelRequant {
            activation_max: zero_point.max(rng.below(127) as i32),
            ..rq
        };
        check_narrowed(
            "requantize_relu capped",
            case,
            (sums, n),
            |got| dsp::requantize_relu(&capped, got, channels, None),
            |want| dsp::requantize_relu_portable(&capped, want, channels, None),
        );

        // Four pixels' convolutions with the same ReLU's requantization into bytes, and with
        // none (the whole int8 range), from the int8 rows and from the widened ones.
        let (taps, filters, stride) = quad;
        let wide = &wide[..filters * dsp::wide_words(taps)];
        let conv = quad_conv(&patch, &weights, (taps, filters, stride), wide);
        let whole_rq = ChannelRequant {
            activation_min: -128,
            activation_max: 127,
            ..rq
        };
        for (conv, rq) in [
            (dsp::QuadConv { wide: &[], ..conv }, rq),
            (conv, rq),
            (dsp::QuadConv { wide: &[], ..conv }, whole_rq),
            (conv, whole_rq),
        ] {
            let mut got = [0u8; 64];
            rng.fill_bytes(&mut got);
            let mut got = got.map(|b| b as i8);
            let mut want = got;
            let computed = dsp::quad_filters_requant(&conv, &rq, &mut got);
            check("quad_filters_requant computed", case, computed, true);
            dsp::quad_filters_requant_portable(&conv, &rq, &mut want);
            check("quad_filters_requant", case, got, want);
        }

        // The same sums and parameters without a fused activation (the whole int8 clamp),
        // sums of either sign and the extremes too, every one requantized exactly.
        let whole = ChannelRequant {
            activation_min: -128,
            activation_max: 127,
            ..rq
        };
        let mut extremes = sums;
        extremes[0] = i32::MIN as u32;
        extremes[n - 1] = i32::MAX as u32;
        let want = check_narrowed(
            "requantize_int8",
            case,
            (extremes, n),
            |got| dsp::requantize_int8(&whole, got, channels, None),
            |want| mve::requantize_right_portable(&whole, want, channels, None),
        );
        let (mut got, mut bytes) = (extremes, [0i8; 64]);
        dsp::requantize_int8(&whole, &mut got[..n], channels, Some(&mut bytes[..n]));
        check("requantize_int8 into bytes", case, bytes, want);

        // The same sums and parameters as a logits layer's (zero point 0): wide logits.
        let logits_rq = ChannelRequant {
            output_offset: 0,
            ..whole
        };
        let (mut got, mut want) = ([0i32; 64], [0i32; 64]);
        dsp::logits_right(&logits_rq, &extremes[..n], &mut got[..n]);
        dense::logits_of(&logits_rq, &extremes[..n], &mut want[..n]);
        check("logits_right", case, got, want);

        // The same sums and parameters, a ReLU or any clamp inside int8 (either way round)
        // or none, every sum requantized exactly.
        let bounds = [rng.below(256) as i32 - 128, rng.below(256) as i32 - 128];
        let rq = ChannelRequant {
            activation_min: [zero_point, bounds[0], -128][case % 3],
            activation_max: [127, bounds[1], 127][case % 3],
            ..rq
        };
        let want = check_narrowed(
            "requantize_right",
            case,
            (sums, n),
            |got| mve::requantize_right(&rq, got, channels, rq.relu_floor(), None),
            |want| mve::requantize_right_portable(&rq, want, channels, None),
        );
        let (mut got, mut bytes) = (sums, [0i8; 64]);
        let into = Some(&mut bytes[..n]);
        mve::requantize_right(&rq, &mut got[..n], channels, rq.relu_floor(), into);
        check("requantize_right into bytes", case, bytes, want);

        // A streamed dense layer's step, pairs of units over whole octets of values; a
        // dense layer's quads of units over whole 32s. Any stride.
        type Rows = fn(&dsp::DenseRows<'_>, &mut [u32]);
        let kernels: [(&str, usize, usize, Rows, Rows); 2] = [
            (
                "dense_rows",
                8,
                2,
                dsp::dense_rows,
                dsp::dense_rows_portable,
            ),
            (
                "dense_quads",
                16,
                4,
                dsp::dense_quads,
                dsp::dense_quads_portable,
            ),
        ];
        for (name, values, least, kernel, portable) in kernels {
            let channels = values * (1 + rng.below(96 / values));
            let units = least + rng.below(17 - least);
            let stride = channels + rng.below(16);
            let rows = dsp::DenseRows {
                patch: &patch[..channels / 2],
                weights: &weights[..(units - 1) * stride + channels],
                channels,
                stride,
            };
            let mut got = [0u32; 16];
            rng.fill_words(&mut got);
            let mut want = got;
            kernel(&rows, &mut got[..units]);
            portable(&rows, &mut want[..units]);
            check(name, case, got, want);
        }

        // A dense layer's quads of units from widened rows (random words, as any rows'),
        // over whole sixteens of values.
        let inputs = 16 * (1 + rng.below(6));
        let units = 4 + rng.below(13);
        let mut wide = [0u32; 16 * 48];
        rng.fill_words(&mut wide);
        let wide = &wide[..dsp::dense_wide_words(inputs, units)];
        let mut got = [0u32; 16];
        rng.fill_words(&mut got);
        let mut want = got;
        let sizes = (inputs, 2 * inputs);
        dsp::dense_quads_widened(&patch[..inputs / 2], wide, sizes, &mut got[..units]);
        dsp::dense_quads_widened_portable(&patch[..inputs / 2], wide, sizes, &mut want[..units]);
        check("dense_quads_widened", case, got, want);
        // The same rows, sixteen inputs of them from a multiple of sixteen on (a streamed
        // layer's position): each quad's words from there, 2 · inputs apart.
        let at = 16 * rng.below(inputs / 16);
        let mut got = [0u32; 16];
        rng.fill_words(&mut got);
        let mut want = got;
        let (position, sizes) = (&patch[at / 2..at / 2 + 8], (16, 2 * inputs));
        dsp::dense_quads_widened(position, &wide[2 * at..], sizes, &mut got[..units]);
        let rows = &wide[2 * at..];
        dsp::dense_quads_widened_portable(position, rows, sizes, &mut want[..units]);
        check("dense_quads_widened at a position", case, got, want);

        // The same rows over int8 values with offset terms (random words, as any
        // layer's; quads, then a pair), the values word-aligned three times in four, else
        // not (then neither computes anything).
        let start = if rng.below(4) == 0 {
            1 + rng.below(3)
        } else {
            0
        };
        let mut value_words = [0u32; 26];
        rng.fill_words(&mut value_words);
        let values = &dsp::int8_of_words(&mut value_words)[start..start + inputs];
        let mut terms = [0u32; 16];
        rng.fill_words(&mut terms);
        let mut got = [0u32; 16];
        rng.fill_words(&mut got);
        let mut want = got;
        let rows = (wide, &terms[..units]);
        let ran = dsp::dense_widened_i8(values, rows, inputs, &mut got[..units]);
        let ran_portable = dsp::dense_widened_i8_portable(values, rows, inputs, &mut want[..units]);
        check("dense_widened_i8", case, got, want);
        check(
            "dense_widened_i8 computed",
            case,
            (ran, ran_portable),
            (start == 0, start == 0),
        );

        // Four units from widened values: any count of values, any bits in them, rows at
        // any alignment.
        let values = rng.below(300);
        let start = rng.below(4);
        let halves = [0u32; 160].map(|_| rng.next() as u32);
        let mut xs = [0i16; 320];
        for (pair, word) in xs.chunks_exact_mut(2).zip(halves) {
            pair[0] = word as i16;
            pair[1] = (word >> 16) as i16;
        }
        let rows = [0, 1, 2, 3].map(|u| &weights[start + u * 300..start + u * 300 + values]);
        let got = pairs::dot4_wide(&xs[..values], rows);
        check(
            "dot4_wide",
            case,
            got,
            pairs::dot4_wide_portable(&xs[..values], rows),
        );

        // Quads of units from widened values: whole sixteens of values, any stride.
        let n = 16 * (1 + rng.below(9));
        let units = 4 + rng.below(9);
        let stride = n + rng.below(8);
        let rows = &weights[..(units - 1) * stride + n];
        let mut got = [0u32; 12];
        rng.fill_words(&mut got);
        let mut want = got;
        pairs::dense_quads_wide(&xs[..n], rows, stride, &mut got[..units]);
        pairs::dense_quads_wide_portable(&xs[..n], rows, stride, &mut want[..units]);
        check("dense_quads_wide", case, got, want);

        // Quads of units from paired rows: whole fours of values (chunks of 128), any bits
        // in the values and the pair words (the patch's words, as any rows').
        let n = 4 * (1 + rng.below(53));
        let units = 4 + rng.below(9);
        let words = &patch[..units / 4 * 2 * n];
        let mut got = [0u32; 12];
        rng.fill_words(&mut got);
        let mut want = got;
        pairs::dense_quads_paired(&xs[..n], words, &mut got[..units]);
        pairs::dense_quads_paired_portable(&xs[..n], words, &mut want[..units]);
        check("dense_quads_paired", case, got, want);

        // A pair patch of up to four pixels, all filters, stored or folded into running
        // maxima (stride 0: a pool window): any number of taps (chunks of 128; eight, two
        // and one at a time), any bits in the pair words (all zeros, a background, now
        // and then), a patch starting at any pair of words.
        let filters = 1 + rng.below(12);
        let taps = 1 + rng.below(300.min(weights.len() / filters));
        let start = 2 * rng.below(40);
        let pixels = 1 + rng.below(4);
        let stride = [0, filters, filters + rng.below(4)][rng.below(3)];
        let zeros = [0u32; 2 * 300];
        let words = match case % 8 {
            0 => &zeros[..2 * taps],
            _ => &patch[start..start + 2 * taps],
        };
        let conv = pairs::PairConv {
            patch: words,
            weights: &weights[..filters * taps],
            taps,
            filters,
            pixels,
            stride,
            background: rng.below(2) == 0,
        };
        let mut got = [0u32; 64];
        rng.fill_words(&mut got);
        let mut want = got;
        pairs::pair_filters(&conv, &mut got);
        pairs::pair_filters_portable(&conv, &mut want);
        check("pair_filters", case, got, want);

        // Blocks of four channels' depthwise pixels: up to 3 × 4 pixels, nine taps at any
        // offsets (some negative from the origin), any weights of 16 bits, biases,
        // multipliers and zero points, shifts 0 to 39 (`ASR` by 32 or more gives the
        // sign); the block inside the slices most of the time (the DSP assembly on the
        // M4F and M55, the MLA one on the M3).
        let mut input = [0i8; 600];
        input.iter_mut().for_each(|x| *x = dw_rng.next() as i8);
        let mut q = dsp::DwQuad {
            in_step: 4 * dw_rng.below(12) as i32,
            out_step: dw_rng.below(12) as i32,
            in_row: dw_rng.below(200) as i32,
            out_row: dw_rng.below(60) as i32,
            cols: 1 + dw_rng.below(4) as u32,
            rows: 1 + dw_rng.below(3) as u32,
            ..dsp::DwQuad::default()
        };
        for t in &mut q.taps {
            let w = [0; 4].map(|_| i32::from(dw_rng.next() as i16));
            *t = dsp::dw_tap(dw_rng.below(100) as i32 - 40, w);
        }
        for (b, r) in q.bias.iter_mut().zip(&mut q.requant) {
            *b = (dw_rng.next() as i32) >> dw_rng.below(32);
            let shift = dw_rng.below(40) as i32;
            *r = dsp::DwRequant {
                multiplier: (dw_rng.next() as u32 >> 1) as i32,
                half: (1 << (shift & 31)) >> 1,
                shift,
                zero_point: dw_rng.below(256) as i32 - 128,
            };
        }
        let origin = 40 + dw_rng.below(80) as isize;
        let out_at = dw_rng.below(40);
        let mut got = [0i8; 256];
        got.iter_mut().for_each(|x| *x = dw_rng.next() as i8);
        let mut want = got;
        dsp::dw_quads(&q, &input, origin, &mut got, out_at);
        dsp::dw_quads_portable(&q, &input, origin, &mut want, out_at);
        check("dw_quads", case, got, want);

        // Four channels' block of 3 × 3 depthwise pixels (the MVE assembly on the M55): up
        // to 3 × 9 pixels (lanes past a row's last four predicated off), any steps,
        // weights, biases, multipliers and zero points, shifts 1 to 31; now and then a
        // block that does not fit `input`.
        let mut group = mve::DwGroup {
            row: 4 * (1 + dw_rng.below(10)),
            col: 1 + dw_rng.below(12),
            in_step: 4 * dw_rng.below(4),
            in_row: dw_rng.below(120),
            out_step: dw_rng.below(8),
            out_row: dw_rng.below(40),
            cols: 1 + dw_rng.below(9),
            rows: 1 + dw_rng.below(3),
            ..mve::DwGroup::default()
        };
        for l in 0..4 {
            group.weights[l] = [0; 9].map(|_| dw_rng.next() as i8);
            group.bias[l] = (dw_rng.next() as i32) >> dw_rng.below(32);
            group.multiplier[l] = dw_rng.next() as i32;
            group.shift[l] = 1 + dw_rng.below(31) as i32;
            group.zero_point[l] = dw_rng.below(256) as i32 - 128;
        }
        let origin = if case % 10 == 9 {
            590
        } else {
            dw_rng.below(44)
        };
        let out_at = dw_rng.below(20);
        let mut got = [0i8; 256];
        got.iter_mut().for_each(|x| *x = dw_rng.next() as i8);
        let mut want = got;
        mve::dw_group(&group, &input, origin, &mut got, out_at);
        mve::dw_group_portable(&group, &input, origin, &mut want, out_at);
        check("dw_group", case, got, want);

        // An add computed in place from its tables (the assembly of each core: Helium's on
        // the M55, `dsp::add_into` on the M3 and M4): up to 37
        // values of any int8, any input scales (or, every third case, scales of one bit,
        // whose outputs round ties), an output multiplier and right shift, zero point and
        // clamp (either way round).
        let bound = |rng: &mut Rng| (rng.below(256) as i32 - 128) as i8;
        let mut p = AddParams {
            offsets: [0; 2].map(|_| dw_rng.below(256) as i32 - 128),
            multipliers: [0; 2].map(|_| (dw_rng.next() as u32 >> 1) as i32),
            shifts: [0; 2].map(|_| -(dw_rng.below(12) as i32)),
            left_shift: 20,
            output_multiplier: (dw_rng.next() as u32 >> 1) as i32,
            output_shift: -(dw_rng.below(32) as i32),
            output_zero_point: dw_rng.below(256) as i32 - 128,
            min: if case % 2 == 0 {
                -128
            } else {
                bound(&mut dw_rng)
            },
            max: if case % 4 != 3 {
                127
            } else {
                bound(&mut dw_rng)
            },
        };
        // A ReLU's clamp (the floor the zero point, the ceiling 127), each clamp of
        // `dsp::add_into`'s three loops in turn.
        if case % 4 == 1 {
            p.min = p.output_zero_point as i8;
        }
        if case % 3 == 0 {
            // Multipliers of one bit (0.5), so that the output's rounding meets ties.
            p.multipliers = [1 << 30; 2];
            p.shifts = [0; 2];
            (p.output_multiplier, p.output_shift) = (1 << 30, -19 - dw_rng.below(2) as i32);
        }
        let mut words = [0u32; ADD_SCRATCH_WORDS];
        let tables = AddTables::new(&p, &mut words);
        let n = dw_rng.below(38);
        let values: [i8; 37] = core::array::from_fn(|_| dw_rng.next() as i8);
        let mut got = [0i8; 37];
        got.iter_mut().for_each(|x| *x = dw_rng.next() as i8);
        let mut want = got;
        let before = got;
        tables.add_into::<false>(&values[..n], &mut got);
        tables.add_into_portable(&values[..n], &mut want);
        check("add_into", case, got, want);
        // Knowing the parameters tabled: the same where they are (and on a core without
        // the assembly, the portable loop).
        if p.tabled() {
            let mut tabled = before;
            tables.add_into::<true>(&values[..n], &mut tabled);
            check("add_into tabled", case, tabled, want);
        }

        // A copy of up to 40 bytes between any alignments, into a slice shorter or longer.
        let run: [i8; 44] = core::array::from_fn(|_| dw_rng.next() as i8);
        let (from, to) = (dw_rng.below(4), dw_rng.below(4));
        let (n, m) = (dw_rng.below(41), dw_rng.below(41));
        let mut got = [0i8; 44];
        got.iter_mut().for_each(|x| *x = dw_rng.next() as i8);
        let mut want = got;
        dsp::copy_bytes(&mut got[to..to + m], &run[from..from + n]);
        let k = n.min(m);
        want[to..to + k].copy_from_slice(&run[from..from + k]);
        check("copy_bytes", case, got, want);

        // A whole depthwise conv (multiplier 1, up to 3 × 3, strides 1 and 2, same
        // padding: interior and border pixels) against its naive reference.
        let g = DepthwiseGeometry {
            in_h: 1 + dw_rng.below(8),
            in_w: 1 + dw_rng.below(8),
            in_c: 1 + dw_rng.below(9),
            multiplier: 1,
            window: Window {
                k_h: 1 + dw_rng.below(3),
                k_w: 1 + dw_rng.below(3),
                stride_h: 1 + case % 2,
                stride_w: 1 + case % 2,
                padding: Padding::Same,
            },
        };
        let (bias, multiplier, shift) = (&weights[..36], &weights[36..72], &weights[72..81]);
        let mut multipliers = [0u8; 36];
        for (m, b) in multipliers
            .chunks_exact_mut(4)
            .zip(multiplier.chunks_exact(4))
        {
            let m32 = (1u32 << 30) | (u32::from_le_bytes([b[0], b[1], b[2], b[3]]) >> 2);
            m.copy_from_slice(&m32.to_le_bytes());
        }
        // With an int8 clamp (every third case) right shifts and biases below 2^20, so that
        // the groups of four take `dsp::dw_quads`; else shifts of 1 to -10, any biases.
        let quads = case % 3 == 0;
        let mut shifts = [0u8; 9];
        for (s, &b) in shifts.iter_mut().zip(shift) {
            *s = (-((b % 12) as i8) + if quads { -1 } else { 1 }) as u8;
        }
        let mut biases = [0u8; 36];
        for (b, random) in biases.chunks_exact_mut(4).zip(bias.chunks_exact(4)) {
            let random = i32::from_le_bytes([random[0], random[1], random[2], random[3]]);
            let value = if quads { random >> 12 } else { random };
            b.copy_from_slice(&value.to_le_bytes());
        }
        let zero_point = dw_rng.below(256) as i32 - 128;
        let rq = ChannelRequant {
            bias: &biases,
            multiplier: &multipliers,
            shift: &shifts,
            output_offset: zero_point,
            activation_min: if quads { -128 } else { zero_point },
            activation_max: 127,
        };
        let offset = dw_rng.below(256) as i32 - 127;
        let n = g.out_h() * g.out_w() * g.out_c();
        let (mut got, mut want) = ([0i8; 576], [0i8; 576]);
        let (input, w) = (
            &input[..g.in_h * g.in_w * g.in_c],
            &weights[100..100 + g.weights()],
        );
        // Every other pair of cases without room for the zero-padded copy: the groups of
        // four go in blocks of pixels then, else all from the copy (up to 10 × 10 words).
        let mut scratch = [0u32; 100];
        let words = if case / 2 % 2 == 0 {
            g.out_c()
        } else {
            depthwise_scratch_words(&g)
        };
        let scratch = &mut scratch[..words];
        // Compiled for channels that all go the four-channel way where they do (with the
        // scratch a typed layer gives it).
        if words == depthwise_scratch_words(&g) && covered_by_quads(&g, offset, w, &rq) {
            depthwise_i8::<true>(&g, input, offset, w, &rq, scratch, &mut got[..n]);
        } else {
            depthwise_i8::<false>(&g, input, offset, w, &rq, scratch, &mut got[..n]);
        }
        depthwise_i8_reference(&g, input, offset, w, &rq, &mut want[..n]);
        check("depthwise_i8", case, got, want);
        checked += 1;
    }
    checked
}

/// The quad conv of the first `taps` taps of four pixels in `patch` and the first `filters`
/// rows of `weights`, with the widened rows `wide` (or none).
fn quad_conv<'a>(
    patch: &'a [u32],
    weights: &'a [u8],
    (taps, filters, stride): (usize, usize, usize),
    wide: &'a [u32],
) -> dsp::QuadConv<'a> {
    dsp::QuadConv {
        patch: &patch[..4 * PatchWords::words(taps)],
        weights: &weights[..filters * taps],
        taps,
        filters,
        stride,
        wide,
    }
}

/// Ends the run: QEMU exits with `status`.
fn exit(status: ExitStatus) -> ! {
    debug::exit(status);
    // Only reached without a semihosting host.
    loop {
        core::hint::spin_loop();
    }
}

#[panic_handler]
fn panic(info: &PanicInfo) -> ! {
    hprintln!("kernel-check: panic: {}", info);
    exit(EXIT_FAILURE)
}

//! A dense layer over a materialised vector (a dense after a dense, or on the model's
//! input): the stage [`super::stages::run_general`] computes when a stage has no conv and
//! no pool.
//!
//! CMSIS-NN's `arm_fully_connected_s8` computes such a layer unit by unit from the int8
//! input; so did this engine, at four instructions per multiply-accumulate and some
//! hundred per unit on the Cortex-M4F (the offset's share `offset · Σ w` summed again for
//! every unit, one call and one requantization per unit). Here the input is prepared once
//! for every unit (widened with its offset added, as the core's kernels take it, packed for
//! `SMLAD`; or kept as int8, the sums starting from the offset terms the build prepared:
//! for Helium's `VMLADAVA.S8`, and on DSP cores whose build widened the rows, widened in
//! registers, [`dense_widened_i8`]), several units share each load of it, and the units'
//! sums are requantized a block at a time ([`ChannelRequant::requantize_positions`]).

use super::facts::{self, holds, part, KnownFacts};
use super::stages::{DensePart, Out, Pixels};
use crate::kernels::add::AddTables;
use crate::kernels::dense::dense_unit;
use crate::kernels::dot::{dot_i8_offset, dot_packed, PatchWords};
use crate::kernels::dsp::{
    dense_quads, dense_quads_widened, dense_rows, dense_wide_words, dense_widened_i8,
    halves_of_words, int8_of_words, logits_right, pack_groups, DenseRows,
};
use crate::kernels::mve::{dense_rows_i8, DenseRowsI8};
use crate::kernels::pairs::{
    dense_pair_words, dense_quads_paired, dense_quads_wide, dot4_wide, PAIRED,
};
use crate::kernels::ChannelRequant;

/// Units whose sums are computed, then requantized, together (at most: a stage's words for them,
/// [`dense_words`]).
const BLOCK: usize = 32;

/// Words of working memory a dense layer of `inputs` inputs and `units` units alone takes,
/// computing `pixels` conv pixels at once (the build's trade between RAM and instructions):
/// a word for each unit's sum (32 at most, a block of units at a time; on the stack they
/// would be cleared at every call), then with four, its input packed
/// ([`PatchWords::words`], sized on every core: the DSP cores take it, the Helium cores the
/// int8 input as it is); with one, no more (the units one by one, [`dot_i8_offset`]).
pub const fn dense_words(inputs: usize, units: usize, pixels: Pixels) -> usize {
    let sums = if units < BLOCK { units } else { BLOCK };
    match pixels {
        Pixels::Four => sums + PatchWords::words(inputs),
        Pixels::One => sums,
    }
}

/// Units from which a DSP core packs a dense layer's input once (where its working memory
/// holds it) rather than widening it in registers for every quad of units: a group of four
/// values costs some 9 instructions to pack, then 11 a quad ([`dense_quads_widened`]), or
/// 13 a quad widened each time ([`dense_widened_i8`]; MLPerf Tiny's anomaly detection, of
/// 128-unit layers, took 6.6 % more instructions so).
const WIDENED_UNITS: usize = 24;

/// How a layer's units are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Way {
    /// From the int8 input and the rows the build widened, quads of units and a last pair
    /// through [`dense_widened_i8`] (no working memory).
    Widened,
    /// From the packed input: quads of units through [`dense_quads`] (whole 32s of
    /// inputs), pairs through [`dense_rows`].
    Packed,
    /// From the input widened to `i16` with its offset added, quads of units through
    /// [`dot4_wide`].
    Wide,
    /// From the int8 input as it is, pairs of units through [`dense_rows_i8`].
    Int8,
    /// Unit by unit, [`dot_i8_offset`].
    Units,
}

/// The way for a layer of `inputs` inputs and `units` units with `words` words of working
/// memory: on MVE cores the int8 input; on DSP cores the rows the build widened (`widened`:
/// the model has them), else where it fits the packed input (whole octets of inputs); on
/// the Cortex-M3 the widened input where it fits; else unit by unit. The unit tests take
/// each way in turn, by the layer's sizes. `facts` may know whether the working memory
/// fits ([`facts::FOUR`]) and the inputs are whole octets ([`facts::OCTETS`]).
#[inline(always)]
fn way(inputs: usize, units: usize, words: usize, facts: facts::Facts, widened: bool) -> Way {
    let fits = holds(facts, facts::FOUR, || words >= PatchWords::words(inputs));
    let packs = fits && holds(facts, facts::OCTETS, || inputs % 8 == 0);
    if cfg!(test) {
        if widened && (inputs / 16 + units) % 3 != 0 {
            return Way::Widened;
        }
        return match (inputs + units) % 4 {
            0 if packs => Way::Packed,
            1 if fits => Way::Wide,
            2 => Way::Units,
            _ => Way::Int8,
        };
    }
    if cfg!(infer_core_mve) {
        Way::Int8
    } else if cfg!(infer_core_dsp) && widened && (!packs || units < WIDENED_UNITS) {
        Way::Widened
    } else if cfg!(infer_core_dsp) && packs {
        Way::Packed
    } else if cfg!(all(infer_core_long_multiply, not(infer_core_dsp))) && fits {
        Way::Wide
    } else {
        Way::Units
    }
}

/// Computes dense layer `d`, its stage's only operation, over `input` into `output`, with
/// `words` ([`dense_words`]) as working memory: the units' sums, then the packed input; bit
/// for bit [`crate::kernels::dense::dense_i8`] (and, for the logits,
/// [`crate::kernels::dense::dense_i8_logits`]). Short slices compute less, never panic.
/// `K`: what the stage knows at compile time ([`super::facts`]). (A stage that held the
/// layer's input gives its conv's words, [`super::stages::held_words`], and its own for the
/// sums to [`dense_with_sums`].)
#[inline(always)]
pub(crate) fn dense_direct<K: KnownFacts>(
    d: &DensePart<'_>,
    input: &[i8],
    words: &mut [u32],
    out: Out<'_>,
    add: Option<&AddTables<'_>>,
) {
    let (sums, patch) = words.split_at_mut(d.units.min(BLOCK).min(words.len()));
    dense_with_sums::<K>(d, input, (patch, sums), true, out, add);
}

/// [`dense_direct`] with `sums` for the units' sums, a block of `sums.len()` units at a
/// time (all of them, if it has a word for each; else whole quads; none without four
/// words).
pub(crate) fn dense_with_sums<K: KnownFacts>(
    d: &DensePart<'_>,
    input: &[i8],
    (words, sums): (&mut [u32], &mut [u32]),
    alone: bool,
    mut out: Out<'_>,
    add: Option<&AddTables<'_>>,
) {
    let block = if sums.len() >= d.units {
        d.units
    } else {
        sums.len() / 4 * 4
    };
    let n = d.inputs;
    let Some(input) = input.get(..n) else {
        return;
    };
    if n == 0 {
        return;
    }
    let f = K::FACTS;
    // The rows the build widened, whole (the model checked them, `StackFile::prepare`).
    // (Where the stage knows it has them, the other ways' quads go unlinked: rows that do
    // not fit leave every unit to the units' loop below.)
    let widened_rows = (d.wide.len() == dense_wide_words(n, d.units) && n % 16 == 0)
        .then_some(d.wide)
        .filter(|_| !PAIRED && !cfg!(infer_core_mve));
    let widened = holds(f, facts::PREPARED_DENSE, || widened_rows.is_some());
    let facts = if alone { f } else { f & !facts::FOUR };
    let way = way(n, d.units, words.len(), facts, widened && !PAIRED);
    let even = holds(f, facts::EVEN_UNITS, || d.units % 2 == 0);
    let patch = words.get_mut(..PatchWords::words(n)).unwrap_or_default();
    let (patch, xs): (&[u32], &[i16]) = match way {
        Way::Packed => {
            pack_groups(input, d.input_offset, patch, 2, n / 4);
            (patch, &[])
        }
        Way::Wide => {
            let xs = halves_of_words(patch);
            for (x, &v) in xs.iter_mut().zip(input) {
                *x = (i32::from(v) + d.input_offset) as i16;
            }
            (&[], xs.get(..n).unwrap_or_default())
        }
        _ => (&[], &[]),
    };
    let mut first = 0;
    while first < d.units && block > 0 {
        let count = (d.units - first).min(block);
        let Some(acc) = sums.get_mut(..count) else {
            return;
        };
        // (The widened way writes its units' sums, the units' loop all the others.)
        if way != Way::Widened {
            acc.fill(0);
        }
        let weights = d.weights.get(first * n..).unwrap_or_default();
        let row = |u: usize| {
            weights
                .get(u * n..)
                .and_then(|r| r.get(..n))
                .unwrap_or_default()
        };
        let mut done = 0;
        match way {
            Way::Widened => {
                // The block's quads (its first unit is a multiple of 4: the quads are the
                // layer's) and the layer's last pair, if in the block; all from the units'
                // loop if the input is not word-aligned.
                let quads_at = first / 4 * dense_wide_words(n, 4);
                let terms = d.offset_terms.get(first..).unwrap_or_default();
                if let Some(wide) = widened_rows.and_then(|w| w.get(quads_at..)) {
                    if dense_widened_i8(input, (wide, terms), n, acc) {
                        done = count / 2 * 2;
                    }
                }
            }
            Way::Packed if count >= 2 => {
                let rows = DenseRows {
                    patch,
                    weights,
                    channels: n,
                    stride: n,
                };
                // The block's whole quads from the widened rows if the model has them (its
                // first unit is a multiple of 4: the quads are the layer's), else from
                // whole 32s of inputs. (Where the stage knows it has them, the int8 quads
                // go unlinked: rows that do not fit leave every unit to the pairs below.)
                let quads_at = first / 4 * dense_wide_words(n, 4);
                match widened_rows.and_then(|w| w.get(quads_at..)) {
                    Some(wide) => {
                        dense_quads_widened(patch, wide, (n, 2 * n), acc);
                        done = count / 4 * 4;
                    }
                    None if !widened && n % 32 == 0 => {
                        dense_quads(&rows, acc);
                        done = count / 4 * 4;
                    }
                    None => {}
                }
                let rows = DenseRows {
                    weights: weights.get(done * n..).unwrap_or_default(),
                    ..rows
                };
                dense_rows(&rows, acc.get_mut(done..).unwrap_or_default());
                done = count / 2 * 2;
                if let (false, Some(last)) = (even, acc.get_mut(done)) {
                    *last = dot_packed(patch, row(done)) as u32;
                    done += 1;
                }
            }
            Way::Wide => {
                // Whole quads in one call (from the paired rows if the model has them,
                // else from whole sixteens of values), the rest four rows at a time (the
                // last row repeated where a quad is short).
                let paired = d
                    .wide
                    .get(first / 4 * dense_pair_words(n, 4)..)
                    .filter(|_| PAIRED && d.wide.len() == dense_pair_words(n, d.units));
                match part(f, facts::PREPARED_DENSE, paired) {
                    Some(words) => {
                        dense_quads_paired(xs, words, acc);
                        done = count / 4 * 4;
                    }
                    None if !holds(f, facts::PREPARED_DENSE, || false) && n % 16 == 0 => {
                        dense_quads_wide(xs, weights, n, acc);
                        done = count / 4 * 4;
                    }
                    None => {}
                }
                let last = count - 1;
                for (q, quad) in acc
                    .get_mut(done..)
                    .unwrap_or_default()
                    .chunks_mut(4)
                    .enumerate()
                {
                    let u = done + 4 * q;
                    let rows = [u, u + 1, u + 2, u + 3].map(|u| row(u.min(last)));
                    for (a, sum) in quad.iter_mut().zip(dot4_wide(xs, rows)) {
                        *a = sum as u32;
                    }
                }
                done = count;
            }
            Way::Int8 if count >= 2 => {
                let rows = DenseRowsI8 {
                    values: input,
                    weights,
                    channels: n,
                    stride: n,
                    offset: d.start_sums(first, acc),
                };
                dense_rows_i8(&rows, acc);
                done = count / 2 * 2;
            }
            _ => {}
        }
        // (None left where the wide way took them all, or the packed, int8 or widened way
        // an even number of units.)
        let rest_done = match way {
            Way::Wide => true,
            Way::Packed | Way::Int8 => even,
            Way::Widened => even && done == count,
            Way::Units => false,
        };
        if !rest_done {
            for (u, a) in acc.iter_mut().enumerate().skip(done) {
                *a = dot_i8_offset(input, d.input_offset, row(u)) as u32;
            }
        }
        finish_block::<K>(d, first, acc, &mut out, add);
        first += count;
    }
}

/// Writes units `first..first + acc.len()` of dense layer `d` from their sums without bias
/// `acc` (overwritten): int8 values a block at a time where the requantization allows
/// ([`ChannelRequant::requantize_positions`], for a monotonic one), else unit by
/// unit; or wide logits. With `add`, each value is added in place to the one it replaces.
/// The one way a dense layer's outputs are finished, whether its stage computed it alone
/// ([`dense_direct`]) or streamed it (out of line: once per set of facts).
#[inline(never)]
pub(crate) fn finish_block<K: KnownFacts>(
    d: &DensePart<'_>,
    first: usize,
    acc: &mut [u32],
    out: &mut Out<'_>,
    add: Option<&AddTables<'_>>,
) {
    let (f, rq) = (K::FACTS, skip_channels(&d.requant, first));
    let add = part(f, facts::ADD, add);
    match out {
        Out::Values(output) if !holds(f, facts::LOGITS, || false) => {
            let Some(output) = output.data.get_mut(first..) else {
                return;
            };
            if !holds(f, facts::DENSE_MONOTONIC, || d.monotonic) {
                for (u, (o, &a)) in output.iter_mut().zip(acc.iter()).enumerate() {
                    *o = added(add, dense_unit(&d.requant, first + u, a as i32), *o);
                }
                return;
            }
            let relu = holds(f, facts::DENSE_RELU, || rq.relu_floor());
            let n = acc.len();
            let Some(add) = add else {
                rq.requantize_positions(acc, n, relu, Some(output));
                return;
            };
            rq.requantize_positions(acc, n, relu, None);
            for (o, &a) in output.iter_mut().zip(int8_of_words(acc).iter().take(n)) {
                *o = add.one(a, *o);
            }
        }
        Out::Logits(logits) if holds(f, facts::LOGITS, || true) => {
            let Some(logits) = logits.get_mut(first..) else {
                return;
            };
            // From the sums (a copy, then the logits finished in place, would call
            // `memcpy`); the requantization is a logits layer's, which loading checked.
            logits_right(&rq, acc, logits);
        }
        _ => {}
    }
}

/// `value` (a stage's output) added in place to `other` (the value it replaces) with
/// `add`; without one, `value`.
#[inline(always)]
fn added(add: Option<&AddTables<'_>>, value: i8, other: i8) -> i8 {
    match add {
        Some(t) => t.one(value, other),
        None => value,
    }
}

/// The requantization of channels `first..` of `rq`.
fn skip_channels<'a>(rq: &ChannelRequant<'a>, first: usize) -> ChannelRequant<'a> {
    ChannelRequant {
        bias: rq.bias.get(4 * first..).unwrap_or_default(),
        multiplier: rq.multiplier.get(4 * first..).unwrap_or_default(),
        shift: rq.shift.get(first..).unwrap_or_default(),
        ..*rq
    }
}

#[cfg(test)]
mod tests {
    use super::super::format::tests::{input, OwnedParams};
    use super::super::format::{input_offset, DenseOp, Op, StackFile};
    use super::super::prepared::PreparedWeights;
    use super::super::run::tests::reference_and_fast;
    use super::super::run::BufferSizes;
    use super::*;
    use crate::kernels::dsp::dense_wide_words_of;
    use crate::kernels::mve::row_offset_terms;
    use crate::kernels::TestRng;
    use std::collections::BTreeSet;
    use std::vec::Vec;

    /// Random inputs: whole octets most of the time (the packed way), else any count.
    fn inputs(rng: &mut TestRng) -> usize {
        match rng.below(4) {
            0 => 1 + rng.below(40) as usize,
            1 => 4 * (1 + rng.below(40) as usize),
            _ => 8 * (1 + rng.below(90) as usize),
        }
    }

    /// A conv (with a pool or without) streamed into a dense layer whose rows the build
    /// widened: each position's values take their share of every quad's words
    /// (`dense_quads_widened` with the layer's stride between quads), the units after the
    /// whole quads their int8 rows; bit for bit the reference.
    #[test]
    fn a_streamed_dense_layer_takes_its_widened_rows_position_by_position() {
        use super::super::format::{ConvOp, PoolOp};
        use crate::kernels::conv::Padding;
        let mut rng = TestRng(0x5EA3);
        let mut pooled = 0;
        for case in 0..40 {
            let filters = 16 * (1 + rng.below(2) as usize);
            let units = 4 + rng.below(7) as usize;
            let pool = 1 + rng.below(2) as usize;
            let side = 4 / pool;
            let inputs = side * side * filters;
            let conv = OwnedParams::random(&mut rng, filters * 9 * 2, filters);
            let dense = OwnedParams::logits(&mut rng, units * inputs, units);
            let mut ops = std::vec![Op::Conv2d(ConvOp {
                in_h: 6,
                in_w: 6,
                in_c: 2,
                filters: filters as u16,
                kernel: 3,
                stride: 1,
                padding: Padding::Valid,
                relu: true,
                params: conv.view(),
            })];
            if pool == 2 {
                pooled += 1;
                ops.push(Op::MaxPool2d(PoolOp {
                    in_h: 4,
                    in_w: 4,
                    channels: filters as u16,
                    pool: 2,
                }));
            }
            let op = ops.len();
            ops.push(Op::Dense(DenseOp {
                inputs: inputs as u32,
                units: units as u16,
                relu: false,
                params: dense.view(),
            }));
            let file = StackFile::new(input(6, 6, 2), &ops);
            let offset = input_offset(&file, op);
            let words: Vec<u32> =
                dense_wide_words_of(&dense.weights, inputs, units, offset).collect();
            let prepared = [PreparedWeights { op, words: &words }];
            let mut widened = file;
            widened.prepare(&prepared);
            assert_eq!(widened.prepared(op), &words[..], "case {case}");
            let sizes = BufferSizes::of(&file, Pixels::Four);
            for _ in 0..3 {
                let x: Vec<i8> = (0..72).map(|_| rng.i8()).collect();
                let [reference, fast] = reference_and_fast(&widened, &x, &sizes);
                assert_eq!(
                    fast, reference,
                    "case {case}: {filters} filters, {units} units"
                );
            }
        }
        assert!(pooled > 5 && pooled < 35, "{pooled}");
    }

    #[test]
    fn dense_stacks_match_the_reference_on_random_sizes_and_quantizations() {
        let mut rng = TestRng(0xDE45E);
        let cases = if cfg!(miri) { 4 } else { 300 };
        // (inputs a whole number of octets, whole blocks, an odd last unit, ReLU layer
        // monotonic) of the layers run with the packed working memory.
        let mut seen = BTreeSet::new();
        let mut ways = Vec::new();
        let mut widened_layers = 0;
        for case in 0..cases {
            let pixels = if case % 4 == 3 {
                Pixels::One
            } else {
                Pixels::Four
            };
            let layers = 1 + rng.below(3) as usize;
            let n0 = inputs(&mut rng);
            let mut n = n0;
            let mut owned = Vec::new();
            let mut shapes = Vec::new();
            for layer in 0..layers {
                let last = layer + 1 == layers;
                let units = match rng.below(3) {
                    0 => 1 + rng.below(8) as usize,
                    1 => 1 + rng.below(100) as usize,
                    _ => inputs(&mut rng),
                };
                let mut p = if last {
                    OwnedParams::logits(&mut rng, units * n, units)
                } else {
                    OwnedParams::random(&mut rng, units * n, units)
                };
                // Biases and shifts that spread the outputs over the int8 range; every
                // third case some channels with a left shift or a negative multiplier.
                for b in p.bias.chunks_exact_mut(4) {
                    let bias = rng.below(400_001) as i32 - 200_000;
                    b.copy_from_slice(&bias.to_le_bytes());
                }
                for s in p.shift.iter_mut() {
                    *s = (-(rng.below(12) as i8) - 2) as u8;
                }
                let wild = !last && case % 3 == 2;
                if wild {
                    p.make_wild(&mut rng, 8);
                }
                let relu = !last && rng.below(4) != 0;
                seen.insert((
                    n % 8 == 0,
                    units % BLOCK == 0,
                    units % 2 == 1,
                    relu && !wild,
                ));
                ways.push(way(
                    n,
                    units,
                    dense_words(n, units, pixels),
                    facts::NONE,
                    false,
                ));
                owned.push(p);
                shapes.push((n, units, relu));
                n = units;
            }
            let ops: Vec<Op<'_>> = shapes
                .iter()
                .zip(&owned)
                .map(|(&(inputs, units, relu), p)| {
                    Op::Dense(DenseOp {
                        inputs: inputs as u32,
                        units: units as u16,
                        relu,
                        params: p.view(),
                    })
                })
                .collect();
            let mut spec = input(1, 1, n0 as u16);
            spec.quant.zero_point = rng.below(256) as i32 - 128;
            let file = StackFile::new(spec, &ops);
            let sizes = BufferSizes::of(&file, pixels);
            // The same model with its layers' rows widened where the DSP kernel takes them.
            let widened: Vec<(usize, Vec<u32>)> = shapes
                .iter()
                .zip(&owned)
                .enumerate()
                .filter(|(_, (&(inputs, units, _), _))| inputs % 16 == 0 && units >= 4)
                .map(|(op, (&(inputs, units, _), p))| {
                    let offset = input_offset(&file, op);
                    (
                        op,
                        dense_wide_words_of(&p.weights, inputs, units, offset).collect(),
                    )
                })
                .collect();
            let prepared: Vec<PreparedWeights<'_>> = widened
                .iter()
                .map(|(op, words)| PreparedWeights { op: *op, words })
                .collect();
            let mut prepared_file = file;
            prepared_file.prepare(&prepared);
            for (op, words) in &widened {
                assert_eq!(prepared_file.prepared(*op), &words[..], "case {case}");
            }
            widened_layers += widened.len();
            for (op, _) in &widened {
                let (inputs, units, _) = shapes[*op];
                ways.push(way(inputs, units, 0, facts::NONE, true));
            }
            // And with every layer's offset terms alone, as a Helium build prepares them.
            let sums: Vec<Vec<u32>> = shapes
                .iter()
                .zip(&owned)
                .enumerate()
                .map(|(op, (&(inputs, _, _), p))| {
                    row_offset_terms(&p.weights, inputs, input_offset(&file, op)).collect()
                })
                .collect();
            let prepared: Vec<PreparedWeights<'_>> = sums
                .iter()
                .enumerate()
                .map(|(op, words)| PreparedWeights { op, words })
                .collect();
            let mut sums_file = file;
            sums_file.prepare(&prepared);
            for (op, words) in sums.iter().enumerate() {
                assert_eq!(sums_file.prepared(op), &words[..], "case {case}");
            }
            for _ in 0..3 {
                let x: Vec<i8> = (0..n0).map(|_| rng.i8()).collect();
                let [reference, fast] = reference_and_fast(&file, &x, &sizes);
                assert_eq!(fast, reference, "case {case}: {shapes:?}");
                let [_, widened] = reference_and_fast(&prepared_file, &x, &sizes);
                assert_eq!(widened, reference, "widened, case {case}: {shapes:?}");
                let [_, summed] = reference_and_fast(&sums_file, &x, &sizes);
                assert_eq!(summed, reference, "offset terms, case {case}: {shapes:?}");
            }
        }
        assert!(
            widened_layers * 10 >= cases,
            "{widened_layers} widened layers"
        );
        if !cfg!(miri) {
            for octets in [true, false] {
                for odd in [true, false] {
                    assert!(seen.contains(&(octets, false, odd, true)), "{octets} {odd}");
                    assert!(
                        seen.contains(&(octets, false, odd, false)),
                        "{octets} {odd}"
                    );
                }
            }
            assert!(seen.iter().any(|s| s.1));
            for w in [Way::Widened, Way::Packed, Way::Wide, Way::Int8, Way::Units] {
                assert!(ways.contains(&w), "{w:?}");
            }
        }
    }
}

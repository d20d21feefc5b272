//! Weights prepared ahead of time for a core's kernels, beside the model's int8 ones.
//!
//! A DSP core's four-pixel conv kernel ([`crate::kernels::dsp::quad_filters`]) unpacks each
//! group of four int8 weights into two words of 16-bit halves (a load and two `SXTB16`) for
//! every four output pixels, and its dense kernel over a vector
//! ([`crate::kernels::dsp::dense_quads`]) for every use. The Cortex-M3, without `SMLAD`,
//! multiplies one weight at a time, but with `SMLAL` it can take two units' weights of a
//! dense layer in one pair word ([`crate::kernels::pairs::dense_quads_paired`]). The
//! Cortex-M0, with neither, multiplies a conv's weights as words
//! ([`crate::kernels::words`]). A firmware's build script can prepare the weights once, as
//! the target's kernels take them ([`Preparation`]: [`crate::kernels::dsp::widen_filter`]
//! and [`crate::kernels::dsp::dense_wide_words_of`] on a DSP core,
//! [`crate::kernels::pairs::dense_pair_words_of`] on the M3,
//! [`crate::kernels::words::word_weights_of`] on the M0), keep them in flash beside the
//! model (twice the layer's weight bytes; four times on the M0) and hand them to
//! [`StackFile::prepare`]: the kernels then load them with `LDM`s. A dense layer's offset term, `offset · Σ w` per unit
//! ([`crate::kernels::mve::row_offset_terms`]), is prepared too, so that its sums start
//! from it and its steps take the int8 values as they are: after the widened rows on a DSP
//! core ([`crate::kernels::dsp::dense_widened_i8`]), alone on a Helium core, which
//! multiplies the int8 weights as they are (the terms would take one `VADDVA` per sixteen
//! weights, at every position of a streamed layer). The file checks them against its own weights when it
//! is given them, so that prepared rows of another model (or for another core) are never
//! used: such an operation runs from its int8 weights, with the same results.

use super::format::{input_offset, Op, StackFile, MAX_OPS};
use crate::kernels::dsp::{dense_wide_words, dense_wide_words_of, is_widened};
use crate::kernels::mve::{row_offset_terms, TERMS_ALONE};
use crate::kernels::pairs::{dense_pair_words, dense_pair_words_of, PAIRED};
use crate::kernels::words::{is_word_weights, WORD_WEIGHTS};

/// The prepared weights of one conv or dense operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreparedWeights<'a> {
    /// The operation's index in the model.
    pub op: usize,
    /// Its filters' rows, prepared ([`Preparation`]).
    pub words: &'a [u32],
}

/// A bit per operation of `file` whose entry in `prepared` (its first, which is the one
/// used) holds exactly its conv or dense weights prepared as this build's kernels take them
/// (dense rows paired on the Cortex-M3, [`PAIRED`]; conv weights as words on the M0,
/// [`WORD_WEIGHTS`]; else widened; and on Helium cores, [`TERMS_ALONE`], a dense layer's
/// offset terms).
#[inline(never)]
pub(crate) fn matching(file: &StackFile<'_>, prepared: &[PreparedWeights<'_>]) -> u32 {
    let mut mask = 0;
    for (k, p) in prepared.iter().enumerate() {
        if p.op >= MAX_OPS || prepared.iter().take(k).any(|q| q.op == p.op) {
            continue;
        }
        let matches = match file.ops.get(p.op) {
            Some(Op::Dense(d)) => {
                let (inputs, units) = (d.inputs as usize, usize::from(d.units));
                // Offset terms alone are one word per unit, fewer than any widened or
                // paired rows.
                let build = if TERMS_ALONE && p.words.len() == units {
                    Preparation::OffsetTerms
                } else if PAIRED {
                    Preparation::Paired
                } else {
                    Preparation::Widened
                };
                let offset = input_offset(file, p.op);
                let layer = (d.params.weights, inputs, units, offset);
                is_dense_prepared(layer, p.words, build)
            }
            Some(op) => op.conv().is_some_and(|(c, g)| {
                let (weights, taps) = (c.params.weights, g.taps());
                if WORD_WEIGHTS {
                    is_word_weights(weights, taps, g.filters, p.words)
                } else {
                    is_widened(weights, taps, g.filters, p.words)
                }
            }),
            None => false,
        };
        if matches {
            mask |= 1 << p.op;
        }
    }
    mask
}

/// How a target's kernels take prepared weights, if they take any: what its firmware's
/// build script prepares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Preparation {
    /// A DSP core without Helium (Cortex-M4, M7, `thumbv7em-*`): every conv through the
    /// four-pixel kernel and every dense layer over a vector, widened to 16-bit halves
    /// (a dense layer's followed by its offset terms).
    Widened,
    /// The Cortex-M3 (`thumbv7m-*`): every dense layer over a vector, its units paired.
    Paired,
    /// A Helium core (Cortex-M55, M85: `thumbv8m.main-*`): every dense layer's offset
    /// terms alone ([`crate::kernels::mve::row_offset_terms`], one word per unit), so
    /// that its sums start from them and its steps multiply the int8 values as they are,
    /// four units at a time ([`crate::kernels::mve::dense_rows_i8`]). (A `thumbv8m.main`
    /// core without Helium, such as the Cortex-M33, ignores them.)
    OffsetTerms,
    /// The Cortex-M0 (`thumbv6m-*`, no long multiply): every conv's whole quads of filters
    /// widened to a word per weight ([`crate::kernels::words::word_weights_of`]).
    Words,
}

impl Preparation {
    /// The preparation a build for the target triple `target` takes: on Helium cores the
    /// offset terms alone (they multiply the int8 weights as they are); on the M0 its convs'
    /// weights as words; none for other targets.
    ///
    /// ```
    /// use infer_core::stack::prepared::Preparation;
    /// assert_eq!(Preparation::for_target("thumbv7em-none-eabihf"), Some(Preparation::Widened));
    /// assert_eq!(Preparation::for_target("thumbv7m-none-eabi"), Some(Preparation::Paired));
    /// assert_eq!(
    ///     Preparation::for_target("thumbv8m.main-none-eabihf"),
    ///     Some(Preparation::OffsetTerms)
    /// );
    /// assert_eq!(Preparation::for_target("thumbv6m-none-eabi"), Some(Preparation::Words));
    /// assert_eq!(Preparation::for_target("x86_64-unknown-linux-gnu"), None);
    /// ```
    pub fn for_target(target: &str) -> Option<Self> {
        if target.starts_with("thumbv7em") {
            Some(Self::Widened)
        } else if target.starts_with("thumbv7m") {
            Some(Self::Paired)
        } else if target.starts_with("thumbv8m.main") {
            Some(Self::OffsetTerms)
        } else if target.starts_with("thumbv6m") {
            Some(Self::Words)
        } else {
            None
        }
    }
}

/// Whether `words` holds exactly the prepared weights of a dense layer `(weights, inputs,
/// units, offset)` (`units` rows of `inputs` int8 weights, its input offset) as
/// `preparation` says (widened, [`crate::kernels::dsp::dense_wide_words_of`]; paired,
/// [`crate::kernels::pairs::dense_pair_words_of`], its whole quads of units; offset terms,
/// [`crate::kernels::mve::row_offset_terms`], one word per unit): what a model's prepared
/// weights must be to be used.
pub fn is_dense_prepared(
    (weights, inputs, units, offset): (&[u8], usize, usize, i32),
    words: &[u32],
    preparation: Preparation,
) -> bool {
    let count = match preparation {
        // The M0 prepares no dense layer.
        Preparation::Words => return false,
        Preparation::Widened => dense_wide_words(inputs, units) + units,
        Preparation::Paired => dense_pair_words(inputs, units),
        Preparation::OffsetTerms => units,
    };
    let whole = match preparation {
        Preparation::OffsetTerms => inputs > 0,
        _ => inputs % 4 == 0 && units >= 4,
    };
    let fits = whole && weights.len() / inputs.max(1) >= units && words.len() == count;
    let words = words.iter().copied();
    fits && match preparation {
        Preparation::Widened => dense_wide_words_of(weights, inputs, units, offset).eq(words),
        Preparation::Paired => dense_pair_words_of(weights, inputs, units).eq(words),
        Preparation::OffsetTerms => row_offset_terms(weights, inputs, offset)
            .take(units)
            .eq(words),
        Preparation::Words => false,
    }
}

/// A dense layer's prepared weights (`prepared`, as [`StackFile::prepare`] found them
/// matching, or empty) split into its prepared rows (widened or paired) and its offset
/// terms, for a layer of `inputs` inputs and `units` units.
pub(crate) fn prepared_dense(prepared: &[u32], inputs: usize, units: usize) -> (&[u32], &[u32]) {
    if TERMS_ALONE && prepared.len() == units {
        return (&[], prepared);
    }
    let rows = dense_wide_words(inputs, units);
    match prepared.split_at_checked(rows) {
        Some(split) if !PAIRED && prepared.len() == rows + units => split,
        _ => (prepared, &[]),
    }
}

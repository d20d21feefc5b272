//! Weights prepared ahead of time for a core's kernels, beside the model's int8 ones.
//!
//! A DSP core's four-pixel conv kernel ([`crate::kernels::dsp::quad_filters`]) unpacks each
//! group of four int8 weights into two words of 16-bit halves (a load and two `SXTB16`) for
//! every four output pixels, and its dense kernel over a vector
//! ([`crate::kernels::dsp::dense_quads`]) for every use. A firmware's build script can do
//! that once instead ([`crate::kernels::dsp::widen_filter`],
//! [`crate::kernels::dsp::dense_wide_words_of`]), keep the widened rows in flash beside the
//! model (twice the layer's weight bytes) and hand them to [`StackFile::prepare`]: the
//! kernels then load a group's weights with one `LDM`
//! ([`crate::kernels::dsp::dense_quads_widened`] for the dense layers). The file checks them against its own weights
//! when it is given them, so that prepared rows of another model are never used: such an
//! operation runs from its int8 weights, with the same results.

use super::format::{Op, StackFile, MAX_OPS};
use crate::kernels::dsp::{is_dense_widened, is_widened};

/// The widened weights of one conv or dense operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreparedWeights<'a> {
    /// The operation's index in the model.
    pub op: usize,
    /// Its filters' rows, widened.
    pub words: &'a [u32],
}

/// A bit per operation of `file` whose entry in `prepared` (its first, which is the one
/// used) holds exactly its conv or dense weights widened.
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
                is_dense_widened(d.params.weights, inputs, units, p.words)
            }
            Some(op) => op
                .conv()
                .is_some_and(|(c, g)| is_widened(c.params.weights, g.taps(), g.filters, p.words)),
            None => false,
        };
        if matches {
            mask |= 1 << p.op;
        }
    }
    mask
}

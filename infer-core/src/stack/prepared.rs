//! Weights prepared ahead of time for a core's kernels, beside the model's int8 ones.
//!
//! A DSP core's four-pixel conv kernel ([`crate::kernels::dsp::quad_filters`]) unpacks each
//! group of four int8 weights into two words of 16-bit halves (a load and two `SXTB16`) for
//! every four output pixels. A firmware's build script can do that once instead
//! ([`crate::kernels::dsp::widen_filter`]), keep the widened rows in flash beside the model
//! (twice the conv's weight bytes) and hand them to [`StackFile::prepare`]: the kernel
//! then loads a group's weights with one `LDM`. The file checks them against its own weights
//! when it is given them, so that prepared rows of another model are never used: such an
//! operation runs from its int8 weights, with the same results.

use super::format::{StackFile, MAX_OPS};
use crate::kernels::dsp::is_widened;

/// The widened weights of one conv operation ([`crate::kernels::dsp::widen_filter`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PreparedWeights<'a> {
    /// The operation's index in the model.
    pub op: usize,
    /// Its filters' rows, widened.
    pub words: &'a [u32],
}

/// A bit per operation of `file` whose entry in `prepared` (its first, which is the one
/// used) holds exactly its conv weights widened.
#[inline(never)]
pub(crate) fn matching(file: &StackFile<'_>, prepared: &[PreparedWeights<'_>]) -> u32 {
    let mut mask = 0;
    for (k, p) in prepared.iter().enumerate() {
        if p.op >= MAX_OPS || prepared.iter().take(k).any(|q| q.op == p.op) {
            continue;
        }
        let Some(op) = file.ops.get(p.op) else {
            continue;
        };
        let Some((c, g)) = op.conv() else {
            continue;
        };
        if is_widened(c.params.weights, g.taps(), g.filters, p.words) {
            mask |= 1 << p.op;
        }
    }
    mask
}

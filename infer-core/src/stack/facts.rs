//! What the code of a stage may take as fixed when it is compiled: the stage's kind (a
//! conv, a pool, a dense layer, an add), and properties of its shapes and quantization.
//!
//! The one engine ([`super::stages::run_general`] and its kin) is generic over a set of
//! [`Facts`]. The host's [`super::run()`] knows none of them ([`NONE`]) and asks every
//! question of the stage's parts at run time; a firmware's build script finds them in the
//! model ([`super::stages::facts_of`]) and compiles each general stage for them
//! ([`super::layers::Specialized`], which checks them when the model loads), so that the
//! compiler leaves out every branch the stage never takes and the firmware links only the
//! code its network runs. A fact given must hold; where one does not, the stage computes
//! less, never panics.
//!
//! ```
//! use infer_core::stack::facts::{holds, known, Facts, CONV, NONE, POOL};
//! const F: Facts = known(known(NONE, CONV, true), POOL, false);
//! assert!(holds(F, CONV, || false)); // known: the run-time answer is never asked
//! assert!(!holds(F, POOL, || true));
//! assert!(holds(NONE, POOL, || true)); // unknown: asked at run time
//! ```

use crate::probe::{NoProbe, Probe};
use core::marker::PhantomData;

/// A set of facts: bit `f` (one of the constants below) says fact `f` is known, bit
/// `f << 32` that it holds.
pub type Facts = u64;

/// How far a fact's bit is from the bit that says it holds.
const HOLDS: u32 = 32;

/// Nothing known: every question is answered at run time.
pub const NONE: Facts = 0;
/// The stage starts with a conv.
pub const CONV: Facts = 1 << 0;
/// It has a max pool.
pub const POOL: Facts = 1 << 1;
/// Its max pool's window is 2 × 2.
pub const POOL2: Facts = 1 << 2;
/// It ends with a dense layer.
pub const DENSE: Facts = 1 << 3;
/// It ends with an add computed in place.
pub const ADD: Facts = 1 << 4;
/// Its output is the network's logits (not int8 values).
pub const LOGITS: Facts = 1 << 5;
/// It computes four conv pixels at once ([`super::Pixels::Four`]).
pub const FOUR: Facts = 1 << 6;
/// Its conv reads one channel.
pub const ONE_CHANNEL: Facts = 1 << 7;
/// Its conv's kernel is 1 × 1.
pub const POINTWISE: Facts = 1 << 8;
/// Its conv has weights prepared for the core's kernels beside the model
/// ([`super::prepared`]).
pub const PREPARED_CONV: Facts = 1 << 9;
/// Its conv's requantization is monotonic (every multiplier ≥ 0, no left shift).
pub const MONOTONIC: Facts = 1 << 10;
/// Its conv's floor is at or above its output zero point (a ReLU's).
pub const RELU: Facts = 1 << 11;
/// Its dense layer has an even number of units.
pub const EVEN_UNITS: Facts = 1 << 12;
/// The values per position its dense layer reads are a multiple of eight.
pub const OCTETS: Facts = 1 << 13;
/// Its conv's quad patch buffer holds an int8 quad patch (from 6 taps on), which Helium
/// cores take.
pub const INT8_PATCH: Facts = 1 << 14;
/// Every window of its conv lies inside its input (no padding).
pub const INSIDE: Facts = 1 << 15;
/// Its dense layer has weights (or, on Helium cores, offset terms) prepared for the core's
/// kernels beside the model ([`super::prepared`]).
pub const PREPARED_DENSE: Facts = 1 << 16;
/// Its conv's pool windows requantize the fast way
/// ([`crate::kernels::fused::fast_requant`]): what the one-channel 3×3 kernel is compiled
/// for (`FAST` of [`super::layers::ConvPool3x3`] and [`super::layers::ConvPoolDense3x3`]).
pub const FAST_POOL: Facts = 1 << 17;
/// Its dense layer's requantization is monotonic (as [`MONOTONIC`] for its conv).
pub const DENSE_MONOTONIC: Facts = 1 << 18;
/// Its dense layer's floor is at or above its output zero point (as [`RELU`] for its conv).
pub const DENSE_RELU: Facts = 1 << 19;
/// Its conv's kernel is 3 × 3.
pub const KERNEL_3X3: Facts = 1 << 20;
/// Its dense layer's units are a multiple of four.
pub const QUAD_UNITS: Facts = 1 << 21;
/// Its add's parameters are ones its tables' assembly takes
/// ([`crate::kernels::add::AddParams::tabled`]).
pub const ADD_TABLED: Facts = 1 << 22;
/// Its conv's input channels are whole groups of four.
pub const GROUPS: Facts = 1 << 23;

/// Every fact with its name, for messages and generated code.
pub const ALL: [(&str, Facts); 24] = [
    ("CONV", CONV),
    ("POOL", POOL),
    ("POOL2", POOL2),
    ("DENSE", DENSE),
    ("ADD", ADD),
    ("LOGITS", LOGITS),
    ("FOUR", FOUR),
    ("ONE_CHANNEL", ONE_CHANNEL),
    ("POINTWISE", POINTWISE),
    ("PREPARED_CONV", PREPARED_CONV),
    ("MONOTONIC", MONOTONIC),
    ("RELU", RELU),
    ("EVEN_UNITS", EVEN_UNITS),
    ("OCTETS", OCTETS),
    ("INT8_PATCH", INT8_PATCH),
    ("INSIDE", INSIDE),
    ("PREPARED_DENSE", PREPARED_DENSE),
    ("FAST_POOL", FAST_POOL),
    ("DENSE_MONOTONIC", DENSE_MONOTONIC),
    ("DENSE_RELU", DENSE_RELU),
    ("KERNEL_3X3", KERNEL_3X3),
    ("QUAD_UNITS", QUAD_UNITS),
    ("ADD_TABLED", ADD_TABLED),
    ("GROUPS", GROUPS),
];

/// `facts` with `fact` known to hold (`holds`) or not.
pub const fn known(facts: Facts, fact: Facts, holds: bool) -> Facts {
    let value = if holds { fact << HOLDS } else { 0 };
    (facts & !(fact << HOLDS)) | fact | value
}

/// The facts `list` says are known, each holding or not.
pub const fn of_list(list: &[(Facts, bool)]) -> Facts {
    let mut facts = NONE;
    let mut i = 0;
    while i < list.len() {
        facts = known(facts, list[i].0, list[i].1);
        i += 1;
    }
    facts
}

/// Whether `fact` holds: as `facts` know it, else `at_run_time()`.
#[inline(always)]
pub fn holds(facts: Facts, fact: Facts, at_run_time: impl FnOnce() -> bool) -> bool {
    if facts & fact != 0 {
        facts & (fact << HOLDS) != 0
    } else {
        at_run_time()
    }
}

/// `part` where `fact` (that it exists) may hold; `None` where `facts` know it does not.
#[inline(always)]
pub fn part<T>(facts: Facts, fact: Facts, part: Option<T>) -> Option<T> {
    if facts & fact != 0 && facts & (fact << HOLDS) == 0 {
        None
    } else {
        part
    }
}

/// A set of facts as a type, which the engine's functions are generic over: one
/// instance of each function per set of facts a network's stages have, however many
/// stages share it. With them comes the [`Probe`] the stage tells which operation it
/// computes ([`NoProbe`] but where a firmware times its operations).
pub trait KnownFacts {
    /// The facts.
    const FACTS: Facts;
    /// Where the stage says which of its operations it computes.
    type Probe: Probe;
}

/// The facts `F` as a type, with the probe `P`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Known<const F: Facts, P = NoProbe>(PhantomData<P>);

impl<const F: Facts, P: Probe> KnownFacts for Known<F, P> {
    const FACTS: Facts = F;
    type Probe = P;
}

/// Nothing known ([`NONE`]), as a type: what the host's engine and hand-written typed
/// layers run with.
pub type Unknown = Known<NONE>;

/// The facts of `facts` that are known to hold, as bits (for messages).
pub const fn holding(facts: Facts) -> u32 {
    (facts >> HOLDS) as u32
}

/// Whether `found` (every fact of a stage, as [`super::stages::facts_of`] finds them)
/// agrees with `compiled` on every fact `compiled` knows.
pub const fn agree(found: Facts, compiled: Facts) -> bool {
    let known = compiled & 0xffff_ffff;
    (found ^ compiled) & (known << HOLDS) == 0
}

//! Where the engine says which operation it computes, so that a firmware can time the
//! operations of a fused stage one by one (their instructions interleave: a conv's
//! positions, then the dense layer that takes them, then the next positions).
//!
//! A network's typed stages take a [`Probe`] as a type (`stack::layers::Specialized`,
//! `stack::layers::ConvPoolDense3x3`, the generated `Network`); the default, [`NoProbe`],
//! compiles to nothing, so an inference that is not profiled runs the same code as one
//! built without probes.
//!
//! ```
//! use infer_core::probe::{NoProbe, Probe};
//! use core::sync::atomic::{AtomicUsize, Ordering};
//!
//! /// Counts the switches from one operation to another.
//! struct Switches;
//! static CURRENT: AtomicUsize = AtomicUsize::new(usize::MAX);
//! static COUNT: AtomicUsize = AtomicUsize::new(0);
//! impl Probe for Switches {
//!     fn enter(op: usize) {
//!         if CURRENT.swap(op, Ordering::Relaxed) != op {
//!             COUNT.fetch_add(1, Ordering::Relaxed);
//!         }
//!     }
//! }
//! Switches::enter(0);
//! Switches::enter(2);
//! Switches::enter(2);
//! NoProbe::enter(5);
//! assert_eq!(COUNT.load(Ordering::Relaxed), 2);
//! ```

/// Told, as an inference runs, which operation its instructions belong to from now on.
pub trait Probe {
    /// From now on the engine computes operation `op` of the network (its index in the
    /// model); a conv and the max pool fused into it are the conv's. A network's generated
    /// code calls it with the number of operations when the inference is over.
    fn enter(op: usize);
}

/// No probe: [`Probe::enter`] does nothing and compiles to nothing.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NoProbe;

impl Probe for NoProbe {
    #[inline(always)]
    fn enter(_op: usize) {}
}

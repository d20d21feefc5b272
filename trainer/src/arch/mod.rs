//! Any conv / pool / dense stack, declared once in a spec file (`models/*.toml`, format in
//! `docs/architecture-spec.md`): parsing and shape inference ([`spec`]), generic float layers
//! ([`layers`]) and model ([`model`]), training ([`mod@fit`]), float checkpoints ([`checkpoint`]),
//! and the microcontroller budget ([`budget`]).
//! Int8 export as model.bin format 3: [`quantize`].
//!
//! The tutorial's own fast path (`crate::network`, `crate::train`) is separate and unchanged;
//! the `tutorial` preset here describes the same network and is cross-checked against it.

pub mod budget;
pub mod checkpoint;
pub mod fit;
pub mod kernels;
pub mod layers;
pub mod model;
pub mod quantize;
pub mod spec;

pub use fit::{fit, ArchFit, ArchFitConfig};
pub use model::Model;
pub use spec::Spec;

#[cfg(test)]
mod tests;

//! Any conv / pool / dense stack, declared once in a spec file (`models/*.toml`, format in
//! `docs/architecture-spec.md`): parsing and shape inference ([`spec`]), generic float layers
//! ([`layers`], residual blocks in [`residual`]) and model ([`model`]), training ([`mod@fit`]), float checkpoints ([`checkpoint`]),
//! and the microcontroller budget ([`budget`]).
//! Int8 export as model.bin format 3: [`quantize`], in the TFLite scheme of [`scheme`].
//! The tutorial is the `tutorial` preset: plain `trainer fit` trains it here.

pub mod budget;
pub mod checkpoint;
pub mod fit;
pub mod kernels;
pub mod layers;
pub mod model;
pub mod observer;
pub mod quantize;
pub mod residual;
pub mod scheme;
pub mod sliding;
pub mod spec;

pub use fit::{fit, Adam, ArchFit, ArchFitConfig, EarlyStopping, Masks, Verdict};
pub use model::Model;
pub use spec::Spec;

#[cfg(test)]
mod tests;

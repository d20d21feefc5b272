//! One declaration of a network, read by both sides: the trainer trains what a spec file
//! (`models/*.toml`, format in `docs/architecture-spec.md`) declares, and the firmware's
//! `build.rs` takes its compile-time shapes, buffer sizes and weight layout from the same file.
//!
//! - [`spec`]: parsing and shape inference;
//! - [`plan`]: the int8 execution plan (dropout and flatten gone, batch norm folded), which
//!   fixes the layers of a format-3 model.bin and the firmware's buffers;
//! - [`boards`]: the boards, one table for the trainer, the firmware build and the harnesses;
//! - [`budget`]: what that plan costs in flash and RAM, against those boards;
//! - [`codegen`]: for a firmware's `build.rs`, the typed network of a model.bin (checked
//!   against a spec, if given), every shape a const generic.

pub mod boards;
pub mod budget;
pub mod codegen;
pub mod plan;
pub mod spec;

pub use plan::Plan;
pub use spec::Spec;

//! The architecture spec, shared with the firmware build: see [`model_spec::spec`].

pub use model_spec::spec::*;

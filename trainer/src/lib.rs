//! Host-side trainer for the tutorial CNN: data loading, float training with
//! ndarray, post-training int8 quantization and evaluation through infer-core.

pub mod arch;
pub mod atomic;
pub mod checkpoint;
pub mod commands;
pub mod data;
pub mod eval;
pub mod network;
pub mod quantize;
pub mod report;
pub mod train;

//! Host-side trainer: data loading, float training of any conv / pool / dense stack (the
//! tutorial CNN by default) with ndarray, post-training int8 quantization to model.bin
//! format 3 and evaluation through infer-core.

pub mod arch;
pub mod atomic;
pub mod commands;
pub mod data;
pub mod eval;
pub mod npy;
pub mod pipe;
pub mod report;
pub mod tflite;

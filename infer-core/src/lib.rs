//! # infer-core
//!
//! `no_std`, allocation-free int8 inference (TFLite quantization scheme, bit-exact with
//! CMSIS-NN) for conv / max-pool / dense stacks such as the Keras MNIST tutorial's CNN, and
//! the depthwise convs, average pools and int8 softmax of imported TensorFlow Lite models
//! (bit-exact with TensorFlow Lite Micro).
//!
//! * [`stack`]: the one engine: model.bin (format 3: any conv / pool / dense stack with exact
//!   wide logits, read in place), the stage plan that fuses conv → pool → dense wherever the pattern occurs, typed
//!   layers with every shape a const generic (a firmware's network is generated from its
//!   model by `model_spec::codegen`), and [`stack::run()`] for shapes known only at run time.
//! * [`format`]: the envelope every model.bin shares (magic, version, postcard body, CRC-32).
//! * [`kernels`]: slice-based kernels, each tested against a naive reference (the depthwise
//!   conv and average pool of [`kernels::depthwise`] and [`kernels::average_pool`] with
//!   theirs), the fused one-channel 3×3 stage ([`kernels::fused`]) tested against them, and
//!   TFLite's int8 softmax ([`kernels::softmax`]).
//! * [`requant`]: TFLite / CMSIS-NN fixed-point requantization, bit-exact.
//!
//! ```
//! use infer_core::kernels::activation::argmax;
//! use infer_core::stack::layers::{ConvPoolDense3x3, Layer, Logits};
//! use infer_core::stack::StackFile;
//! use infer_core::Error;
//!
//! /// The tutorial's network — conv 3×3 ×32 + ReLU → max pool 2 → dense 10 — as the one
//! /// fused stage the engine plans for it.
//! type Tutorial<'a> = ConvPoolDense3x3<'a, 28, 28, 32, 10, true, false>;
//!
//! fn classify(model_bytes: &[u8], pixels: &[u8; 784]) -> Result<usize, Error> {
//!     let file = StackFile::decode(model_bytes)?; // checks magic, version, CRC, every operation
//!     let net = Tutorial::from_file(&file, 0)?; // checks the model's shapes against these
//!     let input = pixels.map(|p| (p ^ 0x80) as i8); // the input quantization: p − 128
//!     let mut logits = [0i32; 10]; // wide: int32 accumulators on one common scale
//!     // Streaming: no activation buffers, ~1.2 KB of working memory on the stack.
//!     net.run_logits(&input, &mut [], &mut logits);
//!     Ok(argmax(&logits))
//! }
//! assert!(classify(b"garbage", &[0; 784]).is_err());
//! ```
#![no_std]
// No unsafe code, except the inline assembly of `kernels::dsp`, `kernels::mve` and
// `kernels::pairs`, which allow it for themselves.
#![deny(unsafe_code)]

#[cfg(test)]
extern crate std;

pub mod error;
pub mod format;
pub mod kernels;
pub mod probe;
pub mod requant;
pub mod stack;

pub use error::Error;

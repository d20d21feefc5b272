//! # infer-core
//!
//! `no_std`, allocation-free inference for the Keras MNIST tutorial's CNN (and networks
//! of the same shape), in int8 following the TFLite quantization scheme, and in f32.
//!
//! * [`format`]: the model.bin wire format (postcard + CRC-32), read in place.
//! * [`net`]: the typed front end: shapes as const generics, buffers sized at compile time.
//! * [`kernels`]: slice-based kernels, each tested against a naive reference, and the fused
//!   streaming kernels ([`kernels::fused`]) tested against them.
//! * [`stack`]: any conv / pool / dense stack declared in a spec file (model.bin format 3).
//! * [`requant`]: TFLite / CMSIS-NN fixed-point requantization, bit-exact.
//!
//! ```
//! use infer_core::{pixels_to_input, Error, TutorialNet, TutorialScratch};
//!
//! fn classify(model_bytes: &[u8], pixels: &[[u8; 28]; 28]) -> Result<usize, Error> {
//!     let net = TutorialNet::from_bytes(model_bytes)?; // checks magic, version, CRC, shapes
//!     let input = pixels_to_input(pixels);
//!     let output = net.infer(&input); // streaming: ~1.2 KB of working memory on the stack
//!
//!     // The same result layer by layer, keeping the 26×26×32 conv output and the
//!     // 13×13×32 pooled output (21,632 + 5,408 bytes) for inspection.
//!     let mut scratch = TutorialScratch::new();
//!     assert_eq!(net.infer_layers(&input, &mut scratch), output);
//!     Ok(output.class())
//! }
//! assert!(classify(b"garbage", &[[0; 28]; 28]).is_err());
//! # Ok::<(), Error>(())
//! ```
#![no_std]
// No unsafe code, except the inline assembly of `kernels::dsp`, which allows it for itself.
#![deny(unsafe_code)]

#[cfg(test)]
extern crate std;

pub mod error;
pub mod format;
pub mod kernels;
pub mod net;
pub mod requant;
pub mod stack;

pub use error::Error;
pub use format::ModelFile;
pub use net::{
    pixels_to_input, FloatNet, FloatScratch, FloatWeights, Net, Output, Scratch, StreamScratch,
    TutorialFloatNet, TutorialFloatScratch, TutorialNet, TutorialScratch, TutorialStreamScratch,
};

//! # infer-core
//!
//! `no_std`, allocation-free inference for the Keras MNIST tutorial's CNN (and networks
//! of the same shape), in int8 following the TFLite quantization scheme, and in f32.
//!
//! * [`format`]: the model.bin wire format (postcard + CRC-32), read in place.
//! * [`net`]: the typed front end: shapes as const generics, buffers sized at compile time.
//! * [`kernels`]: slice-based kernels, each tested against a naive reference.
//! * [`requant`]: TFLite / CMSIS-NN fixed-point requantization, bit-exact.
//!
//! ```
//! use infer_core::{pixels_to_input, Error, TutorialNet, TutorialScratch};
//!
//! fn classify(model_bytes: &[u8], pixels: &[[u8; 28]; 28]) -> Result<usize, Error> {
//!     let net = TutorialNet::from_bytes(model_bytes)?; // checks magic, version, CRC, shapes
//!     let mut scratch = TutorialScratch::new(); // 21,632 + 5,408 bytes, known at compile time
//!     let output = net.infer(&pixels_to_input(pixels), &mut scratch);
//!     Ok(output.class())
//! }
//! assert!(classify(b"garbage", &[[0; 28]; 28]).is_err());
//! # Ok::<(), Error>(())
//! ```
#![no_std]
#![forbid(unsafe_code)]

#[cfg(test)]
extern crate std;

pub mod error;
pub mod format;
pub mod kernels;
pub mod net;
pub mod requant;

pub use error::Error;
pub use format::ModelFile;
pub use net::{
    pixels_to_input, FloatNet, FloatScratch, FloatWeights, Net, Output, Scratch, TutorialFloatNet,
    TutorialFloatScratch, TutorialNet, TutorialScratch,
};

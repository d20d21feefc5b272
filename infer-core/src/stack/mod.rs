//! Any conv / max-pool / dense stack, as a spec file declares it (`models/*.toml`):
//!
//! * [`format`]: model.bin format 3, the int8 operations of the stack;
//! * [`layers`]: typed layers, shapes as const generics, from which a firmware's build
//!   script assembles its network (see `firmware-example/build/network.rs`);
//! * [`mod@run`]: the same inference with shapes known only at run time (host tools, tests).
//!
//! ```
//! use infer_core::stack::{layers::{Conv2d, Dense, Layer, MaxPool2d}, StackFile};
//! // A network's layers; their shapes must chain, which the compiler checks:
//! type Op0<'a> = Conv2d<'a, 28, 28, 1, 3, 32, 1, false, true>;
//! type Op1 = MaxPool2d<26, 26, 32, 2>;
//! type Op2<'a> = Dense<'a, 5408, 10, false>;
//! const _: () = assert!(Op0::OUT == <Op1 as Layer>::IN && <Op1 as Layer>::OUT == Op2::IN);
//! assert!(StackFile::decode(b"not a model").is_err());
//! ```

pub mod format;
pub mod layers;
pub mod run;

#[cfg(test)]
mod tests;

pub use format::{Op, StackFile, STACK_FORMAT_VERSION};
pub use run::{run, BufferSizes, Kernels};

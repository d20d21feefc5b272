//! The crate's single error type.

use core::fmt;

/// Everything that can go wrong in infer-core: loading a model and encoding one.
///
/// Inference itself cannot fail: once a model has loaded into a typed network,
/// its shapes are proven to match the compiled buffers.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Error {
    /// The bytes end before the model does.
    Truncated {
        /// Bytes given.
        len: usize,
        /// Bytes needed at least.
        needed: usize,
    },
    /// The bytes do not start with the model magic: not a model.bin.
    BadMagic {
        /// The first four bytes found.
        found: [u8; 4],
    },
    /// The model was written in a format version this build does not read: a newer one, or
    /// a retired one (format 1, the tutorial-only format), whose message names the command
    /// that writes a current model.
    UnsupportedVersion {
        /// Version stored in the file.
        found: u16,
        /// The only version this build reads.
        supported: u16,
    },
    /// The CRC-32 stored at the end does not match the bytes: corrupted in transit or in flash.
    ChecksumMismatch {
        /// CRC stored in the file.
        stored: u32,
        /// CRC computed over the bytes.
        computed: u32,
    },
    /// The checksum is right but the content cannot be decoded (written by a broken encoder).
    Malformed {
        /// What could not be decoded.
        what: &'static str,
    },
    /// An array in the model has the wrong length for the shapes the model itself declares.
    InconsistentLength {
        /// The field.
        field: &'static str,
        /// Bytes the declared shapes imply.
        expected: usize,
        /// Bytes present.
        found: usize,
    },
    /// The model's shapes differ from the shapes this firmware was compiled for.
    ShapeMismatch {
        /// Which layer.
        layer: &'static str,
        /// The layer's shape in the model file.
        found: [u32; 4],
        /// The layer's shape compiled into this build.
        compiled: [u32; 4],
    },
    /// An operation of a format-3 (layer stack) model differs from the one compiled into this
    /// build.
    OpMismatch {
        /// Index of the operation (0 = first), or the operation count for `what = "operations"`.
        op: u16,
        /// The differing property, e.g. `"conv2d filters"`.
        what: &'static str,
        /// Its value in the file.
        found: u32,
        /// Its value compiled into this build.
        compiled: u32,
    },
    /// An operation of a format-3 model is of another type than the one compiled in.
    OpTypeMismatch {
        /// Index of the operation.
        op: u16,
        /// The type in the file (`conv2d`, `maxpool2d`, `dense`).
        found: &'static str,
        /// The type compiled into this build.
        compiled: &'static str,
    },
    /// A quantization parameter is out of the range the kernels support.
    InvalidQuantization {
        /// The parameter.
        field: &'static str,
    },
    /// The output buffer is too small for the encoded model.
    BufferTooSmall {
        /// Bytes available.
        available: usize,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Error::Truncated { len, needed } => write!(
                f,
                "model is truncated: {len} bytes, at least {needed} needed; copy the whole model.bin again"
            ),
            Error::BadMagic { found } => write!(
                f,
                "not a model.bin: starts with {found:02x?}, expected {:02x?} (\"I8CN\"); write it with `trainer fit --out model.bin`",
                crate::format::MAGIC
            ),
            Error::UnsupportedVersion { found, supported }
                if supported == crate::stack::STACK_FORMAT_VERSION && (1..supported).contains(&found) =>
            {
                // A retired version (1: the tutorial-only format; 2: int8 logits).
                write!(
                    f,
                    "model.bin is format version {found}, which is retired: this build reads version {supported} (exact wide logits); write a current model with `trainer fit --out model.bin`, or `trainer quantize --float FILE --out model.bin` from a float checkpoint"
                )
            }
            Error::UnsupportedVersion { found, supported } => write!(
                f,
                "model.bin is format version {found}, this build reads version {supported}; re-export it with a matching trainer (`trainer quantize` or `trainer fit`)"
            ),
            Error::ChecksumMismatch { stored, computed } => write!(
                f,
                "model.bin is corrupt: CRC-32 stored {stored:#010x}, computed {computed:#010x}; copy or flash it again"
            ),
            Error::Malformed { what } => write!(
                f,
                "model.bin is malformed ({what}) although its checksum is right; re-export it with `trainer fit` or `trainer quantize`"
            ),
            Error::InconsistentLength { field, expected, found } => write!(
                f,
                "model.bin is inconsistent: {field} has {found} bytes, its declared shape needs {expected}; re-export it"
            ),
            Error::ShapeMismatch { layer, found, compiled } => write!(
                f,
                "model.bin does not fit this build: {layer} is {} in the file, {} compiled; rebuild the firmware for this model or train the compiled architecture",
                Dims(found),
                Dims(compiled)
            ),
            Error::OpMismatch {
                op,
                what: "operations",
                found,
                compiled,
            } => write!(
                f,
                "model.bin does not fit this build: it has {found} operations, {compiled} compiled (seen at {op}); rebuild the firmware from the model's spec or train the compiled spec"
            ),
            Error::OpMismatch {
                op,
                what: "stage facts",
                found,
                compiled,
            } => write!(
                f,
                "model.bin does not fit this build: the stage from operation {op} was compiled for other facts of its quantization or shapes (`infer_core::stack::facts` holding: {found:#x} in the file, {compiled:#x} compiled); rebuild the firmware with this model"
            ),
            Error::OpMismatch { op, what, found, compiled } => write!(
                f,
                "model.bin does not fit this build: operation {op}'s {what} is {found} in the file, {compiled} compiled; rebuild the firmware from the model's spec or train the compiled spec"
            ),
            Error::OpTypeMismatch { op, found, compiled } => write!(
                f,
                "model.bin does not fit this build: operation {op} is a {found} in the file, a {compiled} compiled; rebuild the firmware from the model's spec or train the compiled spec"
            ),
            Error::InvalidQuantization { field } => write!(
                f,
                "model.bin has an unsupported quantization parameter: {field}; re-quantize it with `trainer quantize`"
            ),
            Error::BufferTooSmall { available } => write!(
                f,
                "output buffer of {available} bytes is too small for the encoded model"
            ),
        }
    }
}

impl core::error::Error for Error {}

/// Formats a shape as `a×b×c×d`, dropping trailing zeros.
struct Dims([u32; 4]);

impl fmt::Display for Dims {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let len = self.0.iter().rposition(|&d| d != 0).map_or(1, |i| i + 1);
        for (i, d) in self.0.iter().take(len).enumerate() {
            if i > 0 {
                f.write_str("×")?;
            }
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{crc32, CRC_LEN, HEADER_LEN, MAGIC};
    use crate::stack::{StackFile, STACK_FORMAT_VERSION};
    use std::string::ToString;
    use std::vec::Vec;

    /// A file with a valid envelope (magic, `version`, CRC) around an arbitrary body.
    fn envelope(version: u16) -> Vec<u8> {
        let mut bytes = Vec::from(MAGIC);
        bytes.extend_from_slice(&version.to_le_bytes());
        bytes.extend_from_slice(&[1, 2, 3]);
        let crc = crc32(&bytes);
        bytes.extend_from_slice(&crc.to_le_bytes());
        assert_eq!(bytes.len(), HEADER_LEN + 3 + CRC_LEN);
        bytes
    }

    #[test]
    fn a_retired_format_is_refused_naming_its_version_and_the_command_that_writes_a_current_one() {
        let err = StackFile::decode(&envelope(1)).unwrap_err();
        assert_eq!(
            err,
            Error::UnsupportedVersion {
                found: 1,
                supported: STACK_FORMAT_VERSION
            }
        );
        let message = err.to_string();
        assert!(
            message.contains("format version 1, which is retired")
                && message.contains("`trainer fit --out model.bin`"),
            "{message}"
        );
        // A newer version is not called retired.
        let newer = StackFile::decode(&envelope(STACK_FORMAT_VERSION + 1))
            .unwrap_err()
            .to_string();
        assert!(
            newer.contains(&std::format!(
                "format version {}, this build reads version {STACK_FORMAT_VERSION}",
                STACK_FORMAT_VERSION + 1
            )) && !newer.contains("retired"),
            "{newer}"
        );
    }
}

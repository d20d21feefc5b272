//! Float checkpoints (`fit --save-float FILE`): the trained f32 weights, so evaluation,
//! re-quantization and the report need no retraining.
//!
//! Format: postcard of [`CheckpointFile`] followed by a little-endian CRC-32 of everything
//! before it, written atomically. Magic `F32C`, version 1.

use crate::network::{FloatModel, CLASSES, FILTERS, FLAT, KERNEL};
use anyhow::{bail, ensure, Context, Result};
use ndarray::{Array1, Array2, Array4};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// First bytes of a float checkpoint.
pub const MAGIC: [u8; 4] = *b"F32C";
/// The checkpoint version this build reads and writes.
pub const VERSION: u16 = 1;

/// The serialized form: shapes, then weights in the [`FloatModel`] layouts.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct CheckpointFile {
    /// Always [`MAGIC`].
    pub magic: [u8; 4],
    /// Always [`VERSION`].
    pub version: u16,
    /// `[filters, kernel, kernel, in_channels]`.
    pub conv_shape: [u32; 4],
    /// `[classes, inputs]`.
    pub dense_shape: [u32; 2],
    /// Conv kernels, OHWI.
    pub conv_weights: Vec<f32>,
    /// Conv biases.
    pub conv_bias: Vec<f32>,
    /// Dense kernel, `[class][input]`.
    pub dense_weights: Vec<f32>,
    /// Dense biases.
    pub dense_bias: Vec<f32>,
}

/// Encodes `model` as checkpoint bytes.
///
/// # Errors
/// Only if encoding fails (a bug).
pub fn to_bytes(model: &FloatModel) -> Result<Vec<u8>> {
    let file = CheckpointFile {
        magic: MAGIC,
        version: VERSION,
        conv_shape: [FILTERS as u32, KERNEL as u32, KERNEL as u32, 1],
        dense_shape: [CLASSES as u32, FLAT as u32],
        conv_weights: model.conv_weights.iter().copied().collect(),
        conv_bias: model.conv_bias.to_vec(),
        dense_weights: model.dense_weights.iter().copied().collect(),
        dense_bias: model.dense_bias.to_vec(),
    };
    let mut bytes = postcard::to_stdvec(&file).context("encoding the float checkpoint")?;
    let crc = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    Ok(bytes)
}

/// Decodes checkpoint bytes, checking magic, version, CRC and shapes.
///
/// # Errors
/// A message naming what is wrong and how to fix it.
pub fn from_bytes(bytes: &[u8]) -> Result<FloatModel> {
    ensure!(
        bytes.len() >= 10 && bytes[..4] == MAGIC,
        "not a float checkpoint (expected magic \"F32C\"); write one with `trainer fit --save-float FILE`"
    );
    let (body, crc) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let computed = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(body);
    ensure!(
        stored == computed,
        "the float checkpoint is corrupt (CRC-32 stored {stored:#010x}, computed {computed:#010x}); copy it again or re-run `trainer fit --save-float`"
    );
    let file: CheckpointFile =
        postcard::from_bytes(body).context("the float checkpoint cannot be decoded")?;
    if file.version != VERSION {
        bail!(
            "float checkpoint version {} found, this trainer reads version {VERSION}; re-run `trainer fit --save-float`",
            file.version
        );
    }
    let conv = [FILTERS as u32, KERNEL as u32, KERNEL as u32, 1];
    let dense = [CLASSES as u32, FLAT as u32];
    ensure!(
        file.conv_shape == conv && file.dense_shape == dense,
        "the float checkpoint holds conv {:?} and dense {:?}, this trainer's model is conv {conv:?} and dense {dense:?}",
        file.conv_shape,
        file.dense_shape
    );
    Ok(FloatModel {
        conv_weights: Array4::from_shape_vec((FILTERS, KERNEL, KERNEL, 1), file.conv_weights)
            .context("conv weights do not match their shape")?,
        conv_bias: Array1::from_vec(file.conv_bias),
        dense_weights: Array2::from_shape_vec((CLASSES, FLAT), file.dense_weights)
            .context("dense weights do not match their shape")?,
        dense_bias: Array1::from_vec(file.dense_bias),
    })
    .and_then(|m| {
        ensure!(
            m.conv_bias.len() == FILTERS && m.dense_bias.len() == CLASSES,
            "the float checkpoint's bias lengths do not match its shapes"
        );
        Ok(m)
    })
}

/// Writes `model` to `path` atomically.
///
/// # Errors
/// If the file cannot be written.
pub fn save(model: &FloatModel, path: &Path) -> Result<()> {
    crate::atomic::write_atomic(path, &to_bytes(model)?)
}

/// Reads a float checkpoint.
///
/// # Errors
/// If the file is missing, corrupt, or of other shapes; the message names the file.
pub fn load(path: &Path) -> Result<FloatModel> {
    let bytes = std::fs::read(path)
        .with_context(|| format!("reading the float checkpoint {}", path.display()))?;
    from_bytes(&bytes).with_context(|| format!("loading {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_exactly() {
        let m = FloatModel::glorot_uniform(5);
        let bytes = to_bytes(&m).unwrap();
        assert_eq!(from_bytes(&bytes).unwrap(), m);
    }

    #[test]
    fn truncation_and_corruption_are_errors() {
        let m = FloatModel::glorot_uniform(5);
        let bytes = to_bytes(&m).unwrap();
        for len in [0, 3, 9, 10, 100, bytes.len() / 2, bytes.len() - 1] {
            assert!(from_bytes(&bytes[..len]).is_err(), "len {len}");
        }
        let mut bad = bytes.clone();
        bad[1000] ^= 4;
        let msg = format!("{:#}", from_bytes(&bad).unwrap_err());
        assert!(msg.contains("corrupt"), "{msg}");
        assert!(from_bytes(b"I8CN\x01\x00 a model.bin").is_err());
    }
}

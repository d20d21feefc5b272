//! Float checkpoints of any stack, the tutorial included (`fit --save-float FILE`): the one
//! checkpoint format `quantize --float`, `report --float`, `eval --float` and `predict
//! --float` read.
//!
//! Format: postcard of [`GenericCheckpoint`] followed by a little-endian CRC-32 (ISO-HDLC) of
//! everything before it, written atomically. Magic `F32G`, version 1. The spec travels as its
//! canonical text ([`Spec::to_text`]), so the file says which network it holds. The retired
//! tutorial-only path's `F32C` checkpoints are refused, naming the command that writes a
//! current one.

use super::model::Model;
use super::spec::Spec;
use anyhow::{ensure, Context, Result};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// First bytes of a generic float checkpoint.
pub const MAGIC: [u8; 4] = *b"F32G";
/// The version this build reads and writes.
pub const VERSION: u16 = 1;

/// The serialized form.
#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
pub struct GenericCheckpoint {
    /// Always [`MAGIC`].
    pub magic: [u8; 4],
    /// Always [`VERSION`].
    pub version: u16,
    /// The spec's canonical text.
    pub spec: String,
    /// [`Model::values`], in order: per layer its kernel (conv HWIO, dense `(in, out)`) and bias,
    /// or batch norm's γ, β, moving mean, moving variance.
    pub tensors: Vec<Vec<f32>>,
}

fn crc32(bytes: &[u8]) -> u32 {
    crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC).checksum(bytes)
}

/// Encodes `model`.
///
/// # Errors
/// Only if encoding fails (a bug).
pub fn to_bytes(model: &Model) -> Result<Vec<u8>> {
    let file = GenericCheckpoint {
        magic: MAGIC,
        version: VERSION,
        spec: model.spec.to_text(),
        tensors: model.values().into_iter().map(<[f32]>::to_vec).collect(),
    };
    let mut bytes = postcard::to_stdvec(&file).context("encoding the float checkpoint")?;
    let crc = crc32(&bytes);
    bytes.extend_from_slice(&crc.to_le_bytes());
    Ok(bytes)
}

/// Decodes checkpoint bytes, checking magic, version, CRC, spec and tensor sizes.
///
/// # Errors
/// Whichever check fails, named.
pub fn from_bytes(bytes: &[u8]) -> Result<Model> {
    ensure!(
        !bytes.starts_with(b"F32C"),
        "a float checkpoint of the retired tutorial-only path (magic F32C), which this trainer no longer reads; write a current one with `trainer fit --save-float FILE`"
    );
    ensure!(
        bytes.len() > 4 && bytes.starts_with(&MAGIC),
        "not a float checkpoint (expected magic \"F32G\"); write one with `trainer fit --save-float FILE`"
    );
    let (body, tail) = bytes.split_at(bytes.len() - 4);
    let stored = u32::from_le_bytes(tail.try_into().context("CRC")?);
    ensure!(stored == crc32(body), "CRC mismatch: the file is damaged");
    let file: GenericCheckpoint =
        postcard::from_bytes(body).context("decoding the float checkpoint")?;
    ensure!(
        file.version == VERSION,
        "checkpoint version {} (this build reads {VERSION})",
        file.version
    );
    let spec = Spec::parse(&file.spec).context("the checkpoint's spec")?;
    let mut model = Model::glorot_uniform(&spec, 0);
    let mut slots = model.values_mut();
    ensure!(
        slots.len() == file.tensors.len(),
        "{} tensors, the spec needs {}",
        file.tensors.len(),
        slots.len()
    );
    for (i, (slot, tensor)) in slots.iter_mut().zip(file.tensors).enumerate() {
        ensure!(
            slot.len() == tensor.len(),
            "tensor {i} has {} values, the spec needs {}",
            tensor.len(),
            slot.len()
        );
        **slot = tensor;
    }
    Ok(model)
}

/// Writes `model` to `path` atomically.
///
/// # Errors
/// Encoding or writing fails.
pub fn save(model: &Model, path: &Path) -> Result<()> {
    crate::atomic::write_atomic(path, &to_bytes(model)?)
}

/// Reads a checkpoint from `path`.
///
/// # Errors
/// Unreadable or invalid file.
pub fn load(path: &Path) -> Result<Model> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    from_bytes(&bytes).with_context(|| format!("loading {}", path.display()))
}

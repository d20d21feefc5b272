//! The `model.bin` envelope every format version shares, and the types its bodies share:
//! a postcard-encoded body (the layer stack, [`crate::stack::StackFile`]) followed by a CRC-32.
//!
//! The full specification is in `docs/model-format.md`. In short:
//!
//! ```text
//! offset 0   magic      4 bytes  "I8CN"
//! offset 4   version    u16, little-endian (fixed width, so it can be read before decoding)
//! offset 6   body       postcard encoding of the rest of the model (varint integers,
//!                       f32 as 4 little-endian bytes, byte arrays as varint length + bytes)
//! end − 4    crc32      CRC-32/ISO-HDLC of every byte before it, little-endian
//! ```
//!
//! Weight arrays are byte slices that deserialize *borrowed*: a loaded model points into
//! the bytes it was read from (flash on a microcontroller) and copies nothing.

use crate::Error;
use serde::{Deserialize, Serialize};

/// First four bytes of every model.bin.
pub const MAGIC: [u8; 4] = *b"I8CN";
/// Bytes of magic + version at the start.
pub const HEADER_LEN: usize = 6;
/// Bytes of CRC at the end.
pub const CRC_LEN: usize = 4;

const CRC32: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);

/// CRC-32/ISO-HDLC (the zlib / PNG CRC) of `bytes`.
pub fn crc32(bytes: &[u8]) -> u32 {
    CRC32.checksum(bytes)
}

/// An affine quantization: `real = scale · (q − zero_point)`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub struct QuantParams {
    /// Real value of one quantization step.
    pub scale: f32,
    /// The quantized value that represents real 0.
    pub zero_point: i32,
}

impl QuantParams {
    /// The int8 value of the real `value / 255` for an 8-bit `value` (a pixel): TFLite's
    /// `round(value / 255 / scale) + zero_point` (half away from zero), clamped to int8.
    /// For the trainer's input quantization (scale 1/255, zero point −128) it is exactly
    /// `value − 128`.
    ///
    /// ```
    /// use infer_core::format::QuantParams;
    /// let trainer = QuantParams { scale: 1.0 / 255.0, zero_point: -128 };
    /// assert_eq!(trainer.quantize_pixel(0), -128);
    /// assert_eq!(trainer.quantize_pixel(255), 127);
    /// let coarse = QuantParams { scale: 1.0 / 64.0, zero_point: -64 };
    /// assert_eq!(coarse.quantize_pixel(0), -64);
    /// assert_eq!(coarse.quantize_pixel(128), -32); // round(32.13) − 64
    /// assert_eq!(coarse.quantize_pixel(255), 0);
    /// ```
    pub fn quantize_pixel(&self, value: u8) -> i8 {
        let steps = f64::from(value) / 255.0 / f64::from(self.scale);
        // `steps ≥ 0` for a valid (positive) scale: truncating `steps + 0.5` rounds half
        // away from zero; `as` saturates a NaN to 0 and an infinity to the i32 range.
        let q = ((steps + 0.5) as i64).saturating_add(i64::from(self.zero_point));
        q.clamp(-128, 127) as i8
    }
}

/// The network input: an image of `height × width × channels` int8 values.
///
/// Pixels `p` in `0..=255` stand for `p / 255`, quantized with the input's own
/// parameters ([`QuantParams::quantize_pixel`]); the trainer writes scale 1/255, zero
/// point −128, so that `q = p − 128` exactly.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub struct InputSpec {
    /// Rows.
    pub height: u16,
    /// Columns.
    pub width: u16,
    /// Channels (1 for grayscale).
    pub channels: u16,
    /// Input quantization: a finite scale > 0, an int8 zero point.
    pub quant: QuantParams,
}

/// Per-output-channel int8 parameters shared by convolution and dense layers.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub struct ChannelParams<'a> {
    /// int8 weights (stored as their two's complement bytes), layout given by the layer.
    #[serde(borrow)]
    pub weights: &'a [u8],
    /// Per-channel weight scale, f32 little-endian (symmetric: zero point 0).
    #[serde(borrow)]
    pub weight_scales: &'a [u8],
    /// Per-channel bias, i32 little-endian, in units of `input_scale · weight_scale`.
    #[serde(borrow)]
    pub bias: &'a [u8],
    /// Per-channel requantization multiplier (Q31, in `[2^30, 2^31)`), i32 little-endian.
    #[serde(borrow)]
    pub multiplier: &'a [u8],
    /// Per-channel requantization shift in `-31..=30`, one i8 each.
    #[serde(borrow)]
    pub shift: &'a [u8],
    /// Quantization of the layer's output.
    pub output: QuantParams,
}

/// Checks the envelope every model.bin shares — magic, fixed-width version, CRC-32 — and
/// returns the bytes the CRC covers (magic and version included: postcard decodes them too).
///
/// # Errors
/// [`Error::BadMagic`], [`Error::Truncated`], [`Error::UnsupportedVersion`] (the found version
/// and `version`) or [`Error::ChecksumMismatch`].
pub(crate) fn open_envelope(bytes: &[u8], version: u16) -> Result<&[u8], Error> {
    let needed = HEADER_LEN + CRC_LEN;
    let header = bytes.get(..HEADER_LEN);
    let magic = bytes.get(..4).unwrap_or(bytes);
    if magic != MAGIC.get(..magic.len()).unwrap_or(&[]) {
        let mut found = [0u8; 4];
        found.iter_mut().zip(magic).for_each(|(d, s)| *d = *s);
        return Err(Error::BadMagic { found });
    }
    let Some(header) = header else {
        return Err(Error::Truncated {
            len: bytes.len(),
            needed,
        });
    };
    let found = u16::from_le_bytes([header[4], header[5]]);
    if found != version {
        return Err(Error::UnsupportedVersion {
            found,
            supported: version,
        });
    }
    let Some(body_len) = bytes
        .len()
        .checked_sub(CRC_LEN)
        .filter(|&n| n >= HEADER_LEN)
    else {
        return Err(Error::Truncated {
            len: bytes.len(),
            needed,
        });
    };
    let (body, stored) = bytes.split_at(body_len);
    let stored = u32::from_le_bytes([stored[0], stored[1], stored[2], stored[3]]);
    let computed = crc32(body);
    if stored != computed {
        return Err(Error::ChecksumMismatch { stored, computed });
    }
    Ok(body)
}

/// Writes `model` postcard-encoded into `buf`, followed by the CRC-32 of those bytes.
///
/// # Errors
/// [`Error::BufferTooSmall`] if `buf` cannot hold it.
pub(crate) fn seal<'b, T: Serialize>(model: &T, buf: &'b mut [u8]) -> Result<&'b mut [u8], Error> {
    let available = buf.len();
    let body_len = postcard::to_slice(model, buf)
        .map_err(|_| Error::BufferTooSmall { available })?
        .len();
    let crc = crc32(
        buf.get(..body_len)
            .ok_or(Error::BufferTooSmall { available })?,
    );
    let total = body_len + CRC_LEN;
    let out = buf
        .get_mut(..total)
        .ok_or(Error::BufferTooSmall { available })?;
    out[body_len..].copy_from_slice(&crc.to_le_bytes());
    Ok(out)
}

/// Checks an output quantization: finite positive scale, int8 zero point.
pub(crate) fn check_output_quant(output: &QuantParams) -> Result<(), Error> {
    if !(output.scale > 0.0 && output.scale.is_finite()) {
        return Err(Error::InvalidQuantization {
            field: "output scale (must be finite and > 0)",
        });
    }
    // int8 zero points; the next layer's input offset is minus this one.
    if !(-128..=127).contains(&output.zero_point) {
        return Err(Error::InvalidQuantization {
            field: "output zero point (must be in -128..=127)",
        });
    }
    Ok(())
}

/// Checks the input quantization: finite positive scale, int8 zero point.
pub(crate) fn check_input_quant(quant: &QuantParams) -> Result<(), Error> {
    // A NaN scale fails too: the comparison is false.
    let valid =
        quant.scale > 0.0 && quant.scale.is_finite() && (-128..=127).contains(&quant.zero_point);
    if !valid {
        return Err(Error::InvalidQuantization {
            field: "input (scale must be finite and > 0, zero point in -128..=127)",
        });
    }
    Ok(())
}

/// Largest `|(x − x_zero_point) · w|` of one product: an int8 input minus an int8 zero
/// point is within ±255, an int8 weight within ±128.
const MAX_PRODUCT: i64 = 255 * 128;

pub(crate) fn check_channels(
    layer: &'static str,
    p: &ChannelParams<'_>,
    channels: usize,
    weights: usize,
    per_channel: usize,
) -> Result<(), Error> {
    // One check after the other (no table of them: loading's stack stays small).
    let conv = layer == "conv";
    let check = |field: &'static str, bytes: &[u8], expected: usize| {
        if bytes.len() == expected {
            Ok(())
        } else {
            Err(Error::InconsistentLength {
                field,
                expected,
                found: bytes.len(),
            })
        }
    };
    let name = |conv_name, dense_name| if conv { conv_name } else { dense_name };
    check(name("conv weights", "dense weights"), p.weights, weights)?;
    check(
        name("conv weight scales", "dense weight scales"),
        p.weight_scales,
        4 * channels,
    )?;
    check(name("conv bias", "dense bias"), p.bias, 4 * channels)?;
    check(
        name("conv multiplier", "dense multiplier"),
        p.multiplier,
        4 * channels,
    )?;
    check(name("conv shift", "dense shift"), p.shift, channels)?;
    for m in p.multiplier.chunks_exact(4) {
        let m = i32::from_le_bytes([m[0], m[1], m[2], m[3]]);
        if m < 0 {
            return Err(Error::InvalidQuantization {
                field: "multiplier (must be >= 0)",
            });
        }
    }
    for &s in p.shift {
        if !(-31..=30).contains(&(s as i8)) {
            return Err(Error::InvalidQuantization {
                field: "shift (must be in -31..=30)",
            });
        }
    }
    // The int32 accumulator `bias + Σ (x − x_zero_point) · w` must not overflow for any
    // input, so that every kernel, whatever its summation order, computes it exactly
    // (and none can panic on overflow in a debug build).
    let headroom = i64::try_from(per_channel)
        .ok()
        .and_then(|n| n.checked_mul(MAX_PRODUCT))
        .map_or(-1, |sum| i64::from(i32::MAX) - sum);
    for b in p.bias.chunks_exact(4) {
        let b = i32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        if i64::from(b).abs() > headroom {
            return Err(Error::InvalidQuantization {
                field: if layer == "conv" {
                    "conv bias (too large: the int32 accumulator could overflow)"
                } else {
                    "dense bias (too large: the int32 accumulator could overflow)"
                },
            });
        }
    }
    Ok(())
}

//! The `model.bin` wire format: postcard-encoded [`ModelFile`] followed by a CRC-32.
//!
//! The full specification is in `docs/model-format.md`. In short:
//!
//! ```text
//! offset 0   magic      4 bytes  "I8CN"
//! offset 4   version    u16, little-endian (fixed width, so it can be read before decoding)
//! offset 6   body       postcard encoding of the rest of ModelFile (varint integers,
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
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
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

/// The network input: an image of `height × width × channels` int8 values.
///
/// Pixels `p` in `0..=255` stand for `p / 255`; the input quantization is fixed at
/// scale 1/255, zero point −128, so `q = p − 128` exactly.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub struct InputSpec {
    /// Rows.
    pub height: u16,
    /// Columns.
    pub width: u16,
    /// Channels (1 for grayscale).
    pub channels: u16,
    /// Input quantization (must be scale 1/255, zero point −128).
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

/// Conv2D, stride 1, valid padding, optional fused ReLU. Weights are `[filters][kh][kw][in]`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub struct Conv2dLayer<'a> {
    /// Output channels.
    pub filters: u16,
    /// Kernel rows.
    pub kernel_h: u16,
    /// Kernel columns.
    pub kernel_w: u16,
    /// Input channels.
    pub in_channels: u16,
    /// Fused ReLU.
    pub relu: bool,
    /// Weights and requantization.
    #[serde(borrow)]
    pub params: ChannelParams<'a>,
}

/// Max pooling over `size × size` windows with stride `size`. Keeps its input's quantization.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub struct MaxPoolLayer {
    /// Window side and stride.
    pub size: u16,
}

/// Dense layer over the flattened (row, column, channel) input. Weights are `[units][inputs]`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub struct DenseLayer<'a> {
    /// Outputs.
    pub units: u16,
    /// Inputs (the flattened previous layer).
    pub inputs: u32,
    /// Weights and requantization.
    #[serde(borrow)]
    pub params: ChannelParams<'a>,
}

/// A whole model.bin (version 1: Conv2D+ReLU → MaxPool → Flatten → Dense → softmax).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub struct ModelFile<'a> {
    /// Always [`MAGIC`].
    pub magic: [u8; 4],
    /// Always [`FORMAT_VERSION`] for files this build writes.
    #[serde(with = "postcard::fixint::le")]
    pub version: u16,
    /// The input image.
    pub input: InputSpec,
    /// First layer.
    #[serde(borrow)]
    pub conv: Conv2dLayer<'a>,
    /// Second layer.
    pub pool: MaxPoolLayer,
    /// Classifier; softmax over its outputs gives the class probabilities.
    #[serde(borrow)]
    pub dense: DenseLayer<'a>,
}

impl<'a> ModelFile<'a> {
    /// Decodes and checks model bytes: magic, version, CRC, then every array length
    /// against the declared shapes, then the quantization parameters.
    ///
    /// # Errors
    /// The first problem found, as an [`Error`] that names it.
    ///
    /// ```
    /// use infer_core::{format::ModelFile, Error};
    /// assert!(matches!(ModelFile::decode(b"I8"), Err(Error::Truncated { .. })));
    /// assert!(matches!(ModelFile::decode(b"nope"), Err(Error::BadMagic { .. })));
    /// ```
    pub fn decode(bytes: &'a [u8]) -> Result<Self, Error> {
        let body = open_envelope(bytes, FORMAT_VERSION)?;
        let model: ModelFile<'a> = decode_body(body, "postcard body")?;
        model.validate()?;
        Ok(model)
    }

    /// Encodes into `buf` (body + CRC) and returns the bytes written.
    ///
    /// # Errors
    /// [`Error::BufferTooSmall`] if `buf` cannot hold the model.
    pub fn encode<'b>(&self, buf: &'b mut [u8]) -> Result<&'b mut [u8], Error> {
        seal(self, buf)
    }

    /// Checks that every array has the length its declared shape implies and that the
    /// quantization parameters are in the kernels' range.
    ///
    /// # Errors
    /// [`Error::InconsistentLength`], [`Error::InvalidQuantization`] or [`Error::Malformed`].
    pub fn validate(&self) -> Result<(), Error> {
        if self.magic != MAGIC {
            return Err(Error::BadMagic { found: self.magic });
        }
        if self.version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                found: self.version,
                supported: FORMAT_VERSION,
            });
        }
        let input = &self.input;
        check_input_quant(&input.quant)?;
        let conv = &self.conv;
        if conv.in_channels != input.channels {
            return Err(Error::Malformed {
                what: "conv input channels differ from the input's",
            });
        }
        if conv.kernel_h == 0
            || conv.kernel_w == 0
            || conv.kernel_h > input.height
            || conv.kernel_w > input.width
        {
            return Err(Error::Malformed {
                what: "conv kernel larger than its input",
            });
        }
        if conv.filters == 0 || self.dense.units == 0 {
            return Err(Error::Malformed {
                what: "a layer with no outputs",
            });
        }
        // Products of u16 fields overflow a 32-bit usize: a corrupt shape, not a panic.
        let too_large = Error::Malformed {
            what: "shapes too large to address",
        };
        let per_filter = usize::from(conv.kernel_h)
            .checked_mul(usize::from(conv.kernel_w))
            .and_then(|n| n.checked_mul(usize::from(conv.in_channels)))
            .ok_or(too_large)?;
        let conv_weights = per_filter
            .checked_mul(usize::from(conv.filters))
            .ok_or(too_large)?;
        check_channels(
            "conv",
            &conv.params,
            usize::from(conv.filters),
            conv_weights,
            per_filter,
        )?;
        let pool = self.pool.size;
        if pool == 0 {
            return Err(Error::Malformed {
                what: "pool size 0",
            });
        }
        let pooled_h = (input.height - conv.kernel_h + 1) / pool;
        let pooled_w = (input.width - conv.kernel_w + 1) / pool;
        let flat = usize::from(pooled_h)
            .checked_mul(usize::from(pooled_w))
            .and_then(|n| n.checked_mul(usize::from(conv.filters)))
            .ok_or(too_large)?;
        if self.dense.inputs as usize != flat {
            return Err(Error::InconsistentLength {
                field: "dense inputs",
                expected: flat,
                found: self.dense.inputs as usize,
            });
        }
        let dense_weights = usize::from(self.dense.units)
            .checked_mul(flat)
            .ok_or(too_large)?;
        check_channels(
            "dense",
            &self.dense.params,
            usize::from(self.dense.units),
            dense_weights,
            flat,
        )?;
        for output in [self.conv.params.output, self.dense.params.output] {
            check_output_quant(&output)?;
        }
        Ok(())
    }
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

/// Decodes a whole postcard body (no trailing bytes); `what` names a failure.
///
/// # Errors
/// [`Error::Malformed`].
pub(crate) fn decode_body<'a, T: Deserialize<'a>>(
    body: &'a [u8],
    what: &'static str,
) -> Result<T, Error> {
    let (model, rest) = postcard::take_from_bytes(body).map_err(|_| Error::Malformed { what })?;
    if !rest.is_empty() {
        return Err(Error::Malformed {
            what: "trailing bytes after the model",
        });
    }
    Ok(model)
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

/// Checks the fixed input quantization: scale 1/255, zero point −128.
pub(crate) fn check_input_quant(quant: &QuantParams) -> Result<(), Error> {
    // A NaN scale fails too: the comparison is false.
    let scale_ok = (quant.scale * 255.0 - 1.0).abs() <= 1e-6;
    if quant.zero_point != -128 || !scale_ok {
        return Err(Error::InvalidQuantization {
            field: "input (must be scale 1/255, zero point -128)",
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

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::vec::Vec;

    const ONE_I32: [u8; 4] = [0, 0, 0, 0x40]; // 2^30
    const SCALE: [u8; 4] = [0, 0, 0x80, 0x3f]; // 1.0f32

    /// Smallest valid model: 2×2 input, 1×1 conv with 1 filter, pool 2, dense 1→2.
    pub(crate) fn tiny() -> ModelFile<'static> {
        let params = |weights: &'static [u8], n: usize| ChannelParams {
            weights,
            weight_scales: &SCALE_X2[..4 * n],
            bias: &ZERO_X2[..4 * n],
            multiplier: &MULT_X2[..4 * n],
            shift: &SHIFT_X2[..n],
            output: QuantParams {
                scale: 0.5,
                zero_point: -1,
            },
        };
        ModelFile {
            magic: MAGIC,
            version: FORMAT_VERSION,
            input: InputSpec {
                height: 2,
                width: 2,
                channels: 1,
                quant: QuantParams {
                    scale: 1.0 / 255.0,
                    zero_point: -128,
                },
            },
            conv: Conv2dLayer {
                filters: 1,
                kernel_h: 1,
                kernel_w: 1,
                in_channels: 1,
                relu: true,
                params: params(&[3], 1),
            },
            pool: MaxPoolLayer { size: 2 },
            dense: DenseLayer {
                units: 2,
                inputs: 1,
                params: params(&[5, 0xfb], 2),
            },
        }
    }
    static SCALE_X2: [u8; 8] = [
        SCALE[0], SCALE[1], SCALE[2], SCALE[3], SCALE[0], SCALE[1], SCALE[2], SCALE[3],
    ];
    static ZERO_X2: [u8; 8] = [0; 8];
    static MULT_X2: [u8; 8] = [
        ONE_I32[0], ONE_I32[1], ONE_I32[2], ONE_I32[3], ONE_I32[0], ONE_I32[1], ONE_I32[2],
        ONE_I32[3],
    ];
    static SHIFT_X2: [u8; 2] = [0xff, 0xff];

    pub(crate) fn encoded(m: &ModelFile<'_>) -> Vec<u8> {
        let mut buf = [0u8; 256];
        m.encode(&mut buf).unwrap().to_vec()
    }

    #[test]
    fn encoding_is_pinned_byte_for_byte() {
        let bytes = encoded(&tiny());
        let body_hex: Vec<std::string::String> = bytes[..bytes.len() - 4]
            .iter()
            .map(|b| std::format!("{b:02x}"))
            .collect();
        assert_eq!(
            body_hex.concat(),
            concat!(
                "4938434e",
                "0100", // magic "I8CN", version 1 (fixint LE)
                "020201",
                "8180803bff01", // input 2×2×1, scale 1/255 (f32 LE), zp -128 (zigzag 255)
                "0101010101",   // conv: filters, kh, kw, in, relu
                "0103",
                "040000803f",
                "0400000000", // weights [3], scales [1.0], bias [0]
                "0400000040",
                "01ff",       // multiplier [2^30], shift [-1]
                "0000003f01", // output: scale 0.5, zp -1
                "02",         // pool 2
                "0201",       // dense: 2 units, 1 input
                "0205fb",
                "080000803f0000803f",
                "080000000000000000",
                "080000004000000040",
                "02ffff",
                "0000003f01",
            )
        );
        let crc = u32::from_le_bytes(bytes[bytes.len() - 4..].try_into().unwrap());
        assert_eq!(crc, crc32(&bytes[..bytes.len() - 4]));
    }

    #[test]
    fn decode_round_trips_and_borrows() {
        let bytes = encoded(&tiny());
        let m = ModelFile::decode(&bytes).unwrap();
        assert_eq!(m, tiny());
        // Zero-copy: the weights point into `bytes`.
        let range = bytes.as_ptr_range();
        assert!(range.contains(&m.dense.params.weights.as_ptr()));
    }

    #[test]
    fn every_truncation_and_bit_flip_is_refused() {
        let bytes = encoded(&tiny());
        for len in 0..bytes.len() {
            assert!(
                ModelFile::decode(&bytes[..len]).is_err(),
                "truncated to {len}"
            );
        }
        for bit in 0..bytes.len() * 8 {
            let mut b = bytes.clone();
            b[bit / 8] ^= 1 << (bit % 8);
            assert!(ModelFile::decode(&b).is_err(), "bit {bit} flipped");
        }
    }

    /// Parameters that would make a kernel overflow (a panic in a debug build, a wrong
    /// result in release) are refused when the model loads.
    #[test]
    fn hostile_quantization_is_refused() {
        let refused = |m: &ModelFile<'_>| {
            let mut buf = [0u8; 256];
            let bytes = m.encode(&mut buf).unwrap();
            match ModelFile::decode(bytes) {
                Err(Error::InvalidQuantization { field }) => field,
                other => panic!("{other:?}"),
            }
        };
        let mut m = tiny();
        m.input.quant.scale = f32::NAN;
        assert!(refused(&m).starts_with("input"));
        let mut m = tiny();
        m.conv.params.output.zero_point = i32::MIN;
        assert!(refused(&m).contains("zero point"));
        let mut m = tiny();
        m.dense.params.output.zero_point = 128;
        assert!(refused(&m).contains("zero point"));
        let mut m = tiny();
        m.dense.params.output.scale = f32::INFINITY;
        assert!(refused(&m).contains("scale"));
        // The conv has one product per output: headroom is i32::MAX − 255·128.
        let edge = i32::MAX - 255 * 128;
        let bias = [edge.to_le_bytes(), (-edge).to_le_bytes()].concat();
        let mut m = tiny();
        m.conv.params.bias = &bias[..4];
        m.dense.params.bias = &bias;
        assert_eq!(ModelFile::decode(&encoded(&m)), Ok(m));
        let over = (edge + 1).to_le_bytes();
        let mut m = tiny();
        m.conv.params.bias = &over;
        assert!(refused(&m).starts_with("conv bias"));
        let under = [[0; 4], (-edge - 1).to_le_bytes()].concat();
        let mut m = tiny();
        m.dense.params.bias = &under;
        assert!(refused(&m).starts_with("dense bias"));
    }

    #[test]
    fn errors_name_the_problem() {
        let bytes = encoded(&tiny());
        let mut other = bytes.clone();
        other[4] = 2;
        assert_eq!(
            ModelFile::decode(&other),
            Err(Error::UnsupportedVersion {
                found: 2,
                supported: FORMAT_VERSION
            })
        );
        let mut corrupt = bytes.clone();
        corrupt[20] ^= 0x10;
        assert!(matches!(
            ModelFile::decode(&corrupt),
            Err(Error::ChecksumMismatch { .. })
        ));
        assert!(matches!(
            ModelFile::decode(b"PK\x03\x04abcdefgh"),
            Err(Error::BadMagic { .. })
        ));
        assert!(matches!(
            ModelFile::decode(b"I8CN\x01"),
            Err(Error::Truncated { .. })
        ));
        let mut bad = tiny();
        bad.dense.params.shift = &SHIFT_X2[..1];
        let mut buf = [0u8; 256];
        let b = bad.encode(&mut buf).unwrap();
        assert!(matches!(
            ModelFile::decode(b),
            Err(Error::InconsistentLength {
                field: "dense shift",
                expected: 2,
                found: 1
            })
        ));
        let msg = std::format!(
            "{}",
            Error::UnsupportedVersion {
                found: 2,
                supported: 1
            }
        );
        assert!(
            msg.contains("version 2") && msg.contains("version 1"),
            "{msg}"
        );
    }
}

//! model.bin format 3 (the layer-stack format): any chain of conv / max-pool / dense
//! operations, and the depthwise convs, average pools and non-square conv kernels of
//! imported TensorFlow Lite models.
//!
//! The envelope is format 1's (`docs/model-format.md`): magic `"I8CN"`, a fixed-width
//! little-endian `u16` version — here [`STACK_FORMAT_VERSION`] — a postcard body and a CRC-32
//! of everything before it. The body is the input and the operations of a spec's int8 plan
//! (`model_spec::plan`): dropout and flatten are gone, batch norm is folded in, and the last
//! operation is the dense layer whose outputs are the logits. Every operation states its input
//! shape, so a file describes itself and can be checked against a compiled network operation
//! by operation. Weight arrays are borrowed from the bytes, as in format 1.
//!
//! The logits are wide: the last layer's int32 accumulators are requantized to i32 (not
//! clipped to int8) with one output scale for every class and zero point 0
//! ([`crate::kernels::dense::finish_logits`]); its shifts are all ≤ 0 (every per-class
//! ratio below 1), so no accumulator can overflow. Format 2 differed only there (int8
//! logits); its files are refused with the command that writes a current one.

use crate::format::{
    check_channels, check_input_quant, check_output_quant, open_envelope, seal, ChannelParams,
    InputSpec, HEADER_LEN, MAGIC,
};
use crate::kernels::average_pool::AvgPoolGeometry;
use crate::kernels::conv::ConvGeometry;
pub use crate::kernels::conv::Padding;
use crate::kernels::depthwise::DepthwiseGeometry;
use crate::kernels::window::Window;
use crate::stack::prepared::PreparedWeights;
use crate::stack::stages::{buffers_fit, Unit};
use crate::Error;
use serde::{Deserialize, Serialize};

/// The format version of layer-stack models.
pub const STACK_FORMAT_VERSION: u16 = 3;
/// [`MAGIC`] and [`STACK_FORMAT_VERSION`], the first two fields of every [`StackFile`].
pub const MAGIC_AND_VERSION: ([u8; 4], u16) = (MAGIC, STACK_FORMAT_VERSION);
/// Most operations a layer-stack model may hold.
pub const MAX_OPS: usize = 32;

/// Convolution with a square kernel; weights `[filters][ky][kx][in_c]`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub struct ConvOp<'a> {
    /// Input rows.
    pub in_h: u16,
    /// Input columns.
    pub in_w: u16,
    /// Input channels.
    pub in_c: u16,
    /// Output channels.
    pub filters: u16,
    /// Kernel side.
    pub kernel: u16,
    /// Step in both directions, 1 or 2.
    pub stride: u16,
    /// Valid or same.
    pub padding: Padding,
    /// Fused ReLU.
    pub relu: bool,
    /// Weights and requantization.
    #[serde(borrow)]
    pub params: ChannelParams<'a>,
}

impl ConvOp<'_> {
    /// The kernels' geometry.
    pub fn geometry(&self) -> ConvGeometry {
        ConvGeometry {
            in_h: usize::from(self.in_h),
            in_w: usize::from(self.in_w),
            in_c: usize::from(self.in_c),
            k_h: usize::from(self.kernel),
            k_w: usize::from(self.kernel),
            filters: usize::from(self.filters),
            stride: usize::from(self.stride),
            padding: self.padding,
        }
    }
}

/// Max pooling over non-overlapping `pool × pool` windows (remainder dropped); keeps its
/// input's quantization.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolOp {
    /// Input rows.
    pub in_h: u16,
    /// Input columns.
    pub in_w: u16,
    /// Channels.
    pub channels: u16,
    /// Window side and stride.
    pub pool: u16,
}

/// Fully connected layer over the flattened (row, column, channel) input; weights
/// `[units][inputs]`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub struct DenseOp<'a> {
    /// Inputs.
    pub inputs: u32,
    /// Outputs.
    pub units: u16,
    /// Fused ReLU.
    pub relu: bool,
    /// Weights and requantization.
    #[serde(borrow)]
    pub params: ChannelParams<'a>,
}

/// A sliding [`Window`] as the format stores it: each dimension a `u16`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowFields {
    /// Rows.
    pub rows: u16,
    /// Columns.
    pub cols: u16,
    /// Vertical step.
    pub stride_h: u16,
    /// Horizontal step.
    pub stride_w: u16,
    /// Valid or same.
    pub padding: Padding,
}

impl WindowFields {
    /// The kernels' window.
    pub fn window(&self) -> Window {
        Window {
            k_h: usize::from(self.rows),
            k_w: usize::from(self.cols),
            stride_h: usize::from(self.stride_h),
            stride_w: usize::from(self.stride_w),
            padding: self.padding,
        }
    }

    /// `w` as stored.
    ///
    /// # Errors
    /// [`Error::Malformed`] for a dimension over `u16`.
    pub fn of(w: &Window) -> Result<Self, Error> {
        let short = |n: usize| {
            u16::try_from(n).map_err(|_| Error::Malformed {
                what: "a window dimension over the format's u16",
            })
        };
        Ok(Self {
            rows: short(w.k_h)?,
            cols: short(w.k_w)?,
            stride_h: short(w.stride_h)?,
            stride_w: short(w.stride_w)?,
            padding: w.padding,
        })
    }
}

/// Depthwise convolution (TFLite's DEPTHWISE_CONV_2D): input channel `c` convolved with
/// its own `multiplier` filters gives output channels `c · multiplier ..`; weights
/// `[ky][kx][out_c]` (TFLite's layout), the activation a clamp to `min..=max`.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub struct DepthwiseOp<'a> {
    /// Input rows.
    pub in_h: u16,
    /// Input columns.
    pub in_w: u16,
    /// Input channels.
    pub in_c: u16,
    /// Output channels per input channel.
    pub multiplier: u16,
    /// The kernel's size, strides and padding.
    pub window: WindowFields,
    /// Lowest output value (the fused activation's, as TFLite computes it from the output
    /// quantization: −128 for none, the zero point for ReLU and ReLU6).
    pub min: i8,
    /// Highest output value (127, or the quantized 6 of a ReLU6).
    pub max: i8,
    /// Weights and requantization (one channel per output channel).
    #[serde(borrow)]
    pub params: ChannelParams<'a>,
}

impl DepthwiseOp<'_> {
    /// The kernels' geometry.
    pub fn geometry(&self) -> DepthwiseGeometry {
        DepthwiseGeometry {
            in_h: usize::from(self.in_h),
            in_w: usize::from(self.in_w),
            in_c: usize::from(self.in_c),
            multiplier: usize::from(self.multiplier),
            window: self.window.window(),
        }
    }
}

/// Average pooling (TFLite's AVERAGE_POOL_2D): any window and strides, valid or same
/// padding (padding not counted), the mean rounded half away from zero and clamped to
/// `min..=max`; keeps its input's quantization.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct AvgPoolOp {
    /// Input rows.
    pub in_h: u16,
    /// Input columns.
    pub in_w: u16,
    /// Channels.
    pub channels: u16,
    /// The window's size, strides and padding.
    pub window: WindowFields,
    /// Lowest output value (the fused activation's).
    pub min: i8,
    /// Highest output value.
    pub max: i8,
}

impl AvgPoolOp {
    /// The kernels' geometry.
    pub fn geometry(&self) -> AvgPoolGeometry {
        AvgPoolGeometry {
            in_h: usize::from(self.in_h),
            in_w: usize::from(self.in_w),
            channels: usize::from(self.channels),
            window: self.window.window(),
        }
    }
}

/// Elementwise addition (TFLite's int8 ADD) of the previous output and tensor `other`, of
/// the same shape, as TensorFlow Lite Micro's reference kernel computes it
/// ([`crate::kernels::add`]); the inputs' zero points are their tensors'.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub struct AddOp {
    /// Rows.
    pub h: u16,
    /// Columns.
    pub w: u16,
    /// Channels.
    pub channels: u16,
    /// The other operand: tensor 0 is the model's input, tensor `k + 1` the output of
    /// operation `k` (an earlier one, or the previous).
    pub other: u16,
    /// The left shift both operands take first (TFLite's 20; at most 22).
    pub left_shift: u8,
    /// The previous output's Q31 multiplier (≥ 0).
    pub multiplier: i32,
    /// Its shift (−31..=0).
    pub shift: i8,
    /// The other operand's Q31 multiplier (≥ 0).
    pub other_multiplier: i32,
    /// Its shift (−31..=0).
    pub other_shift: i8,
    /// The sum's Q31 multiplier (≥ 0).
    pub output_multiplier: i32,
    /// Its shift (−31..=0).
    pub output_shift: i8,
    /// The output's quantization.
    pub output: crate::format::QuantParams,
    /// Lowest output value (the fused activation's).
    pub min: i8,
    /// Highest output value.
    pub max: i8,
}

/// An earlier tensor again: the next operation reads tensor `from` instead of the previous
/// output (a branch of the graph; nothing is computed or copied).
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct BranchOp {
    /// Rows of the tensor.
    pub h: u16,
    /// Its columns.
    pub w: u16,
    /// Its channels.
    pub channels: u16,
    /// The tensor: 0 the model's input, `k + 1` the output of operation `k` (an earlier one
    /// than the previous).
    pub from: u16,
}

/// One operation. The variants after [`Op::Dense`] came later (the TensorFlow Lite import);
/// files without them are encoded as before.
#[derive(Serialize, Deserialize, Debug, Clone, Copy, PartialEq)]
pub enum Op<'a> {
    /// Convolution.
    Conv2d(#[serde(borrow)] ConvOp<'a>),
    /// Max pooling.
    MaxPool2d(PoolOp),
    /// Fully connected.
    Dense(#[serde(borrow)] DenseOp<'a>),
    /// Convolution with a kernel that is not square: the [`ConvOp`]'s `kernel` rows by the
    /// `u16` columns (a square kernel is always an [`Op::Conv2d`]).
    Conv2dRect(#[serde(borrow)] ConvOp<'a>, u16),
    /// Depthwise convolution.
    DepthwiseConv2d(#[serde(borrow)] DepthwiseOp<'a>),
    /// Average pooling.
    AvgPool2d(AvgPoolOp),
    /// Elementwise addition of the previous output and an earlier tensor.
    Add(AddOp),
    /// An earlier tensor, which the next operation reads.
    Branch(BranchOp),
}

impl<'a> Op<'a> {
    /// The type's name as spec files write it.
    pub fn type_name(&self) -> &'static str {
        self.shape().type_name()
    }

    /// The per-channel parameters of a conv, depthwise conv or dense operation.
    pub fn params(&self) -> Option<&ChannelParams<'a>> {
        match self {
            Op::Conv2d(c) | Op::Conv2dRect(c, _) => Some(&c.params),
            Op::DepthwiseConv2d(d) => Some(&d.params),
            Op::Dense(d) => Some(&d.params),
            Op::MaxPool2d(_) | Op::AvgPool2d(_) | Op::Add(_) | Op::Branch(_) => None,
        }
    }

    /// The zero point of the operation's output, if it sets one (a conv, depthwise conv,
    /// dense layer or add); the others keep their input's.
    pub fn out_zero_point(&self) -> Option<i32> {
        match self {
            Op::Add(a) => Some(a.output.zero_point),
            _ => self.params().map(|p| p.output.zero_point),
        }
    }

    /// A convolution's parameters and geometry (square or not).
    pub fn conv(&self) -> Option<(&ConvOp<'a>, ConvGeometry)> {
        match self {
            Op::Conv2d(c) => Some((c, c.geometry())),
            Op::Conv2dRect(c, k_w) => {
                let mut g = c.geometry();
                g.k_w = usize::from(*k_w);
                Some((c, g))
            }
            _ => None,
        }
    }

    /// Output `(h, w, c)`; a dense layer's is `(1, 1, units)`.
    pub fn out_shape(&self) -> (usize, usize, usize) {
        self.shape().out_hwc()
    }

    /// Values read.
    pub fn in_len(&self) -> usize {
        self.shape().in_len()
    }

    /// Values written.
    pub fn out_len(&self) -> usize {
        self.shape().out_len()
    }
}

/// The operations of a [`StackFile`], first to last.
///
/// A decoded file keeps its operations as the postcard bytes they were read from and decodes
/// one when asked for it ([`OpTable::get`], [`OpTable::iter`]), so that loading a model holds
/// one operation at a time instead of a table of them: decoding takes well under 1 KiB of
/// stack whatever the number of operations. [`StackFile::decode`] has decoded and checked
/// every operation once, so reading them again cannot fail. A table built for encoding
/// borrows a slice of operations instead ([`OpTable::from_slice`]).
#[derive(Clone, Copy)]
pub struct OpTable<'a> {
    repr: Repr<'a>,
}

#[derive(Clone, Copy)]
enum Repr<'a> {
    /// `len` postcard-encoded operations, back to back.
    Encoded { bytes: &'a [u8], len: u8 },
    /// Operations in memory.
    Slice(&'a [Op<'a>]),
}

impl<'a> OpTable<'a> {
    /// A table of `ops`, for building a model to encode or check.
    pub fn from_slice(ops: &'a [Op<'a>]) -> Self {
        Self {
            repr: Repr::Slice(ops),
        }
    }

    /// Number of operations.
    pub fn len(&self) -> usize {
        match self.repr {
            Repr::Encoded { len, .. } => usize::from(len),
            Repr::Slice(ops) => ops.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The operations, first to last, by value (each [`Op`] borrows its arrays from the
    /// model bytes).
    pub fn iter(&self) -> OpIter<'a> {
        OpIter {
            repr: match self.repr {
                Repr::Encoded { bytes, len } => IterRepr::Encoded {
                    rest: bytes,
                    left: len,
                },
                Repr::Slice(ops) => IterRepr::Slice(ops.iter()),
            },
        }
    }

    /// Operation `index`, or `None` past the end.
    pub fn get(&self, index: usize) -> Option<Op<'a>> {
        match self.repr {
            Repr::Slice(ops) => ops.get(index).copied(),
            Repr::Encoded { mut bytes, len } => {
                if index >= usize::from(len) {
                    return None;
                }
                // One call site: one decoded operation in this frame (loading's stack).
                for at in 0.. {
                    let (op, rest) = decode_op(bytes)?;
                    if at == index {
                        return Some(op);
                    }
                    bytes = rest;
                }
                None
            }
        }
    }

    /// The last operation.
    pub fn last(&self) -> Option<Op<'a>> {
        self.iter().last()
    }
}

impl<'a> IntoIterator for &OpTable<'a> {
    type Item = Op<'a>;
    type IntoIter = OpIter<'a>;

    fn into_iter(self) -> OpIter<'a> {
        self.iter()
    }
}

impl PartialEq for OpTable<'_> {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().eq(other.iter())
    }
}

impl core::fmt::Debug for OpTable<'_> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl Serialize for OpTable<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = serializer.serialize_seq(Some(self.len()))?;
        for op in self.iter() {
            seq.serialize_element(&op)?;
        }
        seq.end()
    }
}

/// Iterator over an [`OpTable`].
#[derive(Clone)]
pub struct OpIter<'a> {
    repr: IterRepr<'a>,
}

#[derive(Clone)]
enum IterRepr<'a> {
    Encoded { rest: &'a [u8], left: u8 },
    Slice(core::slice::Iter<'a, Op<'a>>),
}

impl<'a> OpIter<'a> {
    /// Encoded bytes after the operations read so far (empty for a slice).
    fn rest(&self) -> &'a [u8] {
        match self.repr {
            IterRepr::Encoded { rest, .. } => rest,
            IterRepr::Slice(_) => &[],
        }
    }
}

impl<'a> Iterator for OpIter<'a> {
    type Item = Op<'a>;

    fn next(&mut self) -> Option<Op<'a>> {
        match &mut self.repr {
            IterRepr::Slice(ops) => ops.next().copied(),
            IterRepr::Encoded { rest, left } => {
                if *left == 0 {
                    return None;
                }
                match decode_op(rest) {
                    Some((op, after)) => {
                        *rest = after;
                        *left -= 1;
                        Some(op)
                    }
                    // Only for bytes `StackFile::decode` has not checked.
                    None => {
                        *left = 0;
                        None
                    }
                }
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        match &self.repr {
            IterRepr::Slice(ops) => ops.size_hint(),
            IterRepr::Encoded { left, .. } => (0, Some(usize::from(*left))),
        }
    }
}

/// Decodes one operation from the front of `bytes`. Out of line, so that every caller —
/// the decoder's checks, each typed layer's `from_file` — shares one frame of the serde
/// machinery instead of inlining a copy of it into its own (loading's stack stays small).
#[inline(never)]
fn decode_op(bytes: &[u8]) -> Option<(Op<'_>, &[u8])> {
    postcard::take_from_bytes::<Op<'_>>(bytes).ok()
}

/// A whole format-3 model.bin: the input and the operations. The magic and the version
/// ([`MAGIC_AND_VERSION`]) are written by [`StackFile::encode`] and checked by
/// [`StackFile::decode`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StackFile<'a> {
    /// The input tensor and its quantization.
    pub input: InputSpec,
    /// The operations, first to last; the last is a dense layer giving the logits.
    pub ops: OpTable<'a>,
    /// Minus the zero point of the values each operation reads ([`input_offset`]; for a
    /// branch, of the tensor it names), worked out once when the file is made, so that
    /// loading a layer decodes no other operation.
    offsets: [i16; MAX_OPS],
    /// Weights prepared for the core's kernels ([`StackFile::prepare`]), and a bit per
    /// operation whose entry there matches its weights.
    prepared: (&'a [PreparedWeights<'a>], u32),
}

/// What [`StackFile::encode`] writes before the CRC.
#[derive(Serialize)]
struct Wire<'s, 'a> {
    magic: [u8; 4],
    #[serde(with = "postcard::fixint::le")]
    version: u16,
    input: &'s InputSpec,
    ops: &'s OpTable<'a>,
}

/// Where the shape walk is between operations.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Walk {
    Spatial(usize, usize, usize),
    Flat(usize),
}

impl<'a> StackFile<'a> {
    /// Decodes and checks format-3 bytes: envelope, then every operation's shape against the
    /// previous one's output, array lengths and quantization parameters.
    ///
    /// # Errors
    /// The first problem found, as an [`Error`] that names it.
    ///
    /// ```
    /// use infer_core::{stack::StackFile, Error};
    /// assert!(matches!(StackFile::decode(b"I8CN\x02\x00...."), Err(Error::UnsupportedVersion { found: 2, supported: 3 })));
    /// ```
    // Out of line: a caller's frame stays small while the operations are checked.
    #[inline(never)]
    pub fn decode(bytes: &'a [u8]) -> Result<Self, Error> {
        let body = open_envelope(bytes, STACK_FORMAT_VERSION)?;
        let malformed = Error::Malformed {
            what: "postcard body",
        };
        // The envelope has checked the magic and the version.
        let rest = body.get(HEADER_LEN..).ok_or(malformed)?;
        let (input, rest) = postcard::take_from_bytes::<InputSpec>(rest).map_err(|_| malformed)?;
        let (len, rest) = postcard::take_from_bytes::<u32>(rest).map_err(|_| malformed)?;
        let len = match u8::try_from(len) {
            Ok(len) if usize::from(len) <= MAX_OPS => len,
            _ => {
                return Err(Error::Malformed {
                    what: "more than 32 operations",
                })
            }
        };
        let file = StackFile::with_offsets(
            input,
            OpTable {
                repr: Repr::Encoded { bytes: rest, len },
            },
        );
        // Every operation decodes, and nothing follows the last.
        let mut ops = file.ops.iter();
        if ops.by_ref().count() != usize::from(len) {
            return Err(malformed);
        }
        if !ops.rest().is_empty() {
            return Err(Error::Malformed {
                what: "trailing bytes after the model",
            });
        }
        file.validate()?;
        Ok(file)
    }

    /// A model of `input` and `ops`, to check ([`StackFile::validate`]) and encode.
    pub fn new(input: InputSpec, ops: &'a [Op<'a>]) -> Self {
        Self::with_offsets(input, OpTable::from_slice(ops))
    }

    /// The file of `input` and `ops`, each operation's input offset worked out (zero points
    /// outside the `i16` range, which [`StackFile::validate`] refuses, are clamped).
    fn with_offsets(input: InputSpec, ops: OpTable<'a>) -> Self {
        let mut offsets = [0i16; MAX_OPS];
        // The zero point of tensor `k`, which operation `k` reads.
        let mut zero_point = input.quant.zero_point;
        for (k, op) in ops.iter().enumerate().take(MAX_OPS) {
            offsets[k] = zero_point.saturating_neg().clamp(-32768, 32767) as i16;
            zero_point = match op {
                // Tensor `from`'s, read by operation `from` (a later tensor, which
                // `validate` refuses, reads the input's).
                Op::Branch(b) => match offsets.get(usize::from(b.from)) {
                    Some(&offset) if usize::from(b.from) <= k => -i32::from(offset),
                    _ => input.quant.zero_point,
                },
                _ => op.out_zero_point().unwrap_or(zero_point),
            };
        }
        Self {
            input,
            ops,
            offsets,
            prepared: (&[], 0),
        }
    }

    /// The file with weights prepared ahead of time for the core's kernels (see
    /// [`super::prepared`]). Each entry is checked against its operation's weights here,
    /// once; an entry that does not match (prepared from another model) is ignored.
    pub fn prepare(&mut self, prepared: &'a [PreparedWeights<'a>]) {
        self.prepared = (prepared, super::prepared::matching(self, prepared));
    }

    /// Conv or dense operation `index`'s widened weights, if the file was given matching ones
    /// ([`StackFile::prepare`]), else empty.
    pub fn prepared(&self, index: usize) -> &'a [u32] {
        let (prepared, mask) = self.prepared;
        if index >= MAX_OPS || mask & (1 << index) == 0 {
            return &[];
        }
        prepared
            .iter()
            .find(|p| p.op == index)
            .map_or(&[], |p| p.words)
    }

    /// Encodes into `buf` (magic, version, body, CRC) and returns the bytes written.
    ///
    /// # Errors
    /// [`Error::BufferTooSmall`] if `buf` cannot hold the model.
    pub fn encode<'b>(&self, buf: &'b mut [u8]) -> Result<&'b mut [u8], Error> {
        let wire = Wire {
            magic: MAGIC,
            version: STACK_FORMAT_VERSION,
            input: &self.input,
            ops: &self.ops,
        };
        seal(&wire, buf)
    }

    /// Number of classes: the last operation's outputs.
    pub fn classes(&self) -> usize {
        self.ops.last().map_or(0, |op| op.out_len())
    }

    /// Checks the operation chain, array lengths and quantization parameters.
    ///
    /// # Errors
    /// [`Error::Malformed`], [`Error::InconsistentLength`] or [`Error::InvalidQuantization`].
    pub fn validate(&self) -> Result<(), Error> {
        if self.ops.len() > MAX_OPS {
            return Err(Error::Malformed {
                what: "more than 32 operations",
            });
        }
        check_input_quant(&self.input.quant)?;
        let input = &self.input;
        let mut walk = Walk::Spatial(
            usize::from(input.height),
            usize::from(input.width),
            usize::from(input.channels),
        );
        if input.height == 0 || input.width == 0 || input.channels == 0 {
            return Err(Error::Malformed {
                what: "an empty input",
            });
        }
        let last = self.ops.len().checked_sub(1).ok_or(Error::Malformed {
            what: "no operations",
        })?;
        // The tensor each add or branch names (`u8::MAX`: none), and which are branches.
        let mut named = [u8::MAX; MAX_OPS];
        let mut branches = 0u32;
        for (i, op) in self.ops.iter().enumerate() {
            let t = match op {
                Op::Add(a) => Some(a.other),
                Op::Branch(b) => {
                    branches |= 1u32.checked_shl(i as u32).unwrap_or(0);
                    Some(b.from)
                }
                _ => None,
            };
            let tensor = match t {
                Some(t) => {
                    if let Some(n) = named.get_mut(i) {
                        *n = u8::try_from(t).unwrap_or(u8::MAX - 1);
                    }
                    Some(self.tensor_walk(i, usize::from(t))?)
                }
                None => None,
            };
            walk = check_op(&op, walk, tensor)?;
            if i == last {
                check_logits_op(&op)?;
            }
        }
        // The tensors a later add or branch reads stay in buffers of their own until then.
        let units = (0..self.ops.len()).map(|i| {
            let t = named
                .get(i)
                .copied()
                .filter(|&t| t != u8::MAX)
                .map(usize::from);
            let branch = branches & 1u32.checked_shl(i as u32).unwrap_or(0) != 0;
            Unit {
                first: i,
                last: i,
                other: t.filter(|_| !branch),
                branch: t.filter(|_| branch),
                in_place: false,
                over_input: false,
                out_len: 1,
            }
        });
        if !buffers_fit(units) {
            return Err(Error::Malformed {
                what: "a graph whose live tensors need more than 3 buffers",
            });
        }
        Ok(())
    }

    /// The shape of tensor `t` (0 the input, `k + 1` the output of operation `k`) as
    /// operation `reader` may read it: an earlier tensor or the previous output. Out of
    /// line: only a graph's adds and branches pay for its decoding.
    #[inline(never)]
    fn tensor_walk(&self, reader: usize, t: usize) -> Result<Walk, Error> {
        if t > reader {
            return Err(Error::Malformed {
                what: "an add or branch naming a tensor that is not computed before it",
            });
        }
        let Some(k) = t.checked_sub(1) else {
            let i = &self.input;
            return Ok(Walk::Spatial(
                usize::from(i.height),
                usize::from(i.width),
                usize::from(i.channels),
            ));
        };
        Ok(match self.ops.get(k) {
            Some(Op::Dense(d)) => Walk::Flat(usize::from(d.units)),
            Some(op) => {
                let (h, w, c) = op.out_shape();
                Walk::Spatial(h, w, c)
            }
            None => return Err(Error::Malformed { what: "tensor" }),
        })
    }

    /// Minus the zero point of tensor `t` (0 the input, `k + 1` the output of operation
    /// `k`) for a tensor some operation reads: operation `t`'s input offset.
    pub fn tensor_offset(&self, t: usize) -> i32 {
        input_offset(self, t)
    }
}

/// Checks one operation against the shape before it (`walk`) and returns the shape after it.
/// Out of line, so that its temporaries and the decoding of the next operation never share
/// the stack (loading's stack stays small).
#[inline(never)]
fn check_op(op: &Op<'_>, walk: Walk, named: Option<Walk>) -> Result<Walk, Error> {
    let too_large = Error::Malformed {
        what: "shapes too large to address",
    };
    Ok(match *op {
        Op::Add(a) => {
            let shape = Walk::Spatial(a.h.into(), a.w.into(), a.channels.into());
            if walk != shape || named != Some(shape) {
                return Err(Error::Malformed {
                    what: "an add's operands differ in shape from it",
                });
            }
            if a.min > a.max || a.left_shift > 22 {
                return Err(Error::Malformed {
                    what: "an add with min above max, or a left shift over 22",
                });
            }
            let pairs = [
                (a.multiplier, a.shift),
                (a.other_multiplier, a.other_shift),
                (a.output_multiplier, a.output_shift),
            ];
            if pairs.iter().any(|&(m, s)| m < 0 || !(-31..=0).contains(&s)) {
                return Err(Error::InvalidQuantization {
                    field: "add multiplier (must be >= 0) or shift (must be -31..=0)",
                });
            }
            check_output_quant(&a.output)?;
            shape
        }
        Op::Branch(b) => {
            let shape = Walk::Spatial(b.h.into(), b.w.into(), b.channels.into());
            if named != Some(shape) || usize::from(b.h) * usize::from(b.w) == 0 {
                return Err(Error::Malformed {
                    what: "a branch whose shape is not its tensor's",
                });
            }
            shape
        }
        Op::Conv2d(c) | Op::Conv2dRect(c, _) => {
            let shape = (
                usize::from(c.in_h),
                usize::from(c.in_w),
                usize::from(c.in_c),
            );
            if walk != Walk::Spatial(shape.0, shape.1, shape.2) {
                return Err(Error::Malformed {
                    what: "a conv2d's input shape differs from the previous output",
                });
            }
            let Some((_, g)) = op.conv() else {
                return Err(Error::Malformed { what: "conv2d" });
            };
            if c.filters == 0 || !(1..=2).contains(&c.stride) || g.k_h == 0 || g.k_w == 0 {
                return Err(Error::Malformed {
                    what: "a conv2d with no filters, kernel 0 or a stride other than 1 or 2",
                });
            }
            if g.out_h() == 0 || g.out_w() == 0 {
                return Err(Error::Malformed {
                    what: "a conv2d kernel larger than its input",
                });
            }
            let taps = g.k_h.checked_mul(g.k_w).and_then(|n| n.checked_mul(g.in_c));
            let taps = taps.ok_or(too_large)?;
            let weights = taps.checked_mul(g.filters).ok_or(too_large)?;
            check_channels("conv", &c.params, g.filters, weights, taps)?;
            check_output_quant(&c.params.output)?;
            Walk::Spatial(g.out_h(), g.out_w(), g.filters)
        }
        Op::MaxPool2d(p) => {
            let shape = (
                usize::from(p.in_h),
                usize::from(p.in_w),
                usize::from(p.channels),
            );
            if walk != Walk::Spatial(shape.0, shape.1, shape.2) {
                return Err(Error::Malformed {
                    what: "a maxpool2d's input shape differs from the previous output",
                });
            }
            if p.pool == 0 || p.pool > p.in_h || p.pool > p.in_w {
                return Err(Error::Malformed {
                    what: "a maxpool2d window of 0 or larger than its input",
                });
            }
            let (h, w, c) = op.out_shape();
            Walk::Spatial(h, w, c)
        }
        Op::DepthwiseConv2d(d) => {
            let g = d.geometry();
            let w = g.window;
            if walk != Walk::Spatial(g.in_h, g.in_w, g.in_c) {
                return Err(Error::Malformed {
                    what: "a depthwise_conv2d's input shape differs from the previous output",
                });
            }
            if g.multiplier == 0 || w.stride_h == 0 || w.stride_w == 0 || d.min > d.max {
                return Err(Error::Malformed {
                    what: "a depthwise_conv2d with multiplier or stride 0, or min above max",
                });
            }
            if g.out_h() == 0 || g.out_w() == 0 {
                return Err(Error::Malformed {
                    what: "a depthwise_conv2d kernel of 0 or larger than its input",
                });
            }
            let taps = w.k_h.checked_mul(w.k_w).ok_or(too_large)?;
            let out_c = g.in_c.checked_mul(g.multiplier).ok_or(too_large)?;
            let weights = taps.checked_mul(out_c).ok_or(too_large)?;
            check_channels("conv", &d.params, out_c, weights, taps)?;
            check_output_quant(&d.params.output)?;
            Walk::Spatial(g.out_h(), g.out_w(), out_c)
        }
        Op::AvgPool2d(p) => {
            let g = p.geometry();
            let w = g.window;
            if walk != Walk::Spatial(g.in_h, g.in_w, g.channels) {
                return Err(Error::Malformed {
                    what: "an avgpool2d's input shape differs from the previous output",
                });
            }
            if w.stride_h == 0 || w.stride_w == 0 || p.min > p.max {
                return Err(Error::Malformed {
                    what: "an avgpool2d with stride 0, or min above max",
                });
            }
            if g.out_h() == 0 || g.out_w() == 0 {
                return Err(Error::Malformed {
                    what: "an avgpool2d window of 0 or larger than its input",
                });
            }
            Walk::Spatial(g.out_h(), g.out_w(), g.channels)
        }
        Op::Dense(d) => {
            let inputs = match walk {
                Walk::Spatial(h, w, c) => h
                    .checked_mul(w)
                    .and_then(|n| n.checked_mul(c))
                    .ok_or(too_large)?,
                Walk::Flat(n) => n,
            };
            if d.inputs as usize != inputs {
                return Err(Error::InconsistentLength {
                    field: "dense inputs",
                    expected: inputs,
                    found: d.inputs as usize,
                });
            }
            if d.units == 0 {
                return Err(Error::Malformed {
                    what: "a dense layer with no units",
                });
            }
            let units = usize::from(d.units);
            let weights = inputs.checked_mul(units).ok_or(too_large)?;
            check_channels("dense", &d.params, units, weights, inputs)?;
            check_output_quant(&d.params.output)?;
            Walk::Flat(units)
        }
    })
}

/// Checks that `op`, the last operation, gives the logits: a dense layer without ReLU, at
/// least 2 units, wide output quantization ([`check_logits_quant`]).
#[inline(never)]
fn check_logits_op(op: &Op<'_>) -> Result<(), Error> {
    match op {
        Op::Dense(d) if d.units >= 2 && !d.relu => check_logits_quant(&d.params),
        _ => Err(Error::Malformed {
            what: "the last operation must be a dense layer without ReLU giving at least 2 logits",
        }),
    }
}

/// Checks the wide logits' requantization: zero point 0 and every shift ≤ 0, so that
/// [`crate::kernels::dense::finish_logits`] never scales an accumulator up.
fn check_logits_quant(params: &ChannelParams<'_>) -> Result<(), Error> {
    if params.output.zero_point != 0 {
        return Err(Error::InvalidQuantization {
            field: "logits zero point (must be 0)",
        });
    }
    if params.shift.iter().any(|&s| s as i8 > 0) {
        return Err(Error::InvalidQuantization {
            field: "logits shift (must be <= 0: every class's scale ratio below 1)",
        });
    }
    Ok(())
}

/// Minus the zero point of the values operation `index` reads (tensor `index`): the
/// input's, or that of the conv/dense/add output it comes from (pooling keeps its input's
/// quantization, a branch its tensor's).
pub fn input_offset(file: &StackFile<'_>, index: usize) -> i32 {
    // A file holds at most `MAX_OPS` operations: every index read is in the table.
    file.offsets
        .get(index)
        .map_or(-file.input.quant.zero_point, |&offset| i32::from(offset))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::format::QuantParams;
    use std::vec::Vec;

    /// Owned arrays of one conv/dense operation, to build test models from.
    pub(crate) struct OwnedParams {
        pub weights: Vec<u8>,
        pub scales: Vec<u8>,
        pub bias: Vec<u8>,
        pub multiplier: Vec<u8>,
        pub shift: Vec<u8>,
        pub output: QuantParams,
    }

    impl OwnedParams {
        /// Random weights and biases, multipliers in range, small shifts.
        pub(crate) fn random(
            rng: &mut crate::kernels::TestRng,
            weights: usize,
            channels: usize,
        ) -> Self {
            Self {
                weights: (0..weights).map(|_| rng.i8() as u8).collect(),
                scales: (0..channels).flat_map(|_| 0.01f32.to_le_bytes()).collect(),
                bias: (0..channels)
                    .flat_map(|_| (rng.below(2001) as i32 - 1000).to_le_bytes())
                    .collect(),
                multiplier: (0..channels)
                    .flat_map(|_| ((1i32 << 30) + rng.below(1 << 30) as i32).to_le_bytes())
                    .collect(),
                shift: (0..channels)
                    .map(|_| (-(rng.below(10) as i8) - 4) as u8)
                    .collect(),
                output: QuantParams {
                    scale: 0.05,
                    zero_point: rng.below(200) as i32 - 100,
                },
            }
        }

        /// [`OwnedParams::random`] for a logits layer: output zero point 0 (the shifts are
        /// already ≤ 0).
        pub(crate) fn logits(
            rng: &mut crate::kernels::TestRng,
            weights: usize,
            channels: usize,
        ) -> Self {
            let mut p = Self::random(rng, weights, channels);
            p.output.zero_point = 0;
            p
        }

        /// Gives each channel, one in `one_in` (≥ 2) each, a negative multiplier or a
        /// left shift: a requantization that is not monotonic.
        pub(crate) fn make_wild(&mut self, rng: &mut crate::kernels::TestRng, one_in: u64) {
            for c in 0..self.shift.len() {
                match rng.below(one_in) {
                    0 => {
                        let m = -((1i32 << 30) + rng.below(1 << 30) as i32);
                        self.multiplier[4 * c..4 * c + 4].copy_from_slice(&m.to_le_bytes());
                    }
                    1 => self.shift[c] = (1 + rng.below(3)) as u8,
                    _ => {}
                }
            }
        }

        pub(crate) fn view(&self) -> ChannelParams<'_> {
            ChannelParams {
                weights: &self.weights,
                weight_scales: &self.scales,
                bias: &self.bias,
                multiplier: &self.multiplier,
                shift: &self.shift,
                output: self.output,
            }
        }
    }

    pub(crate) fn input(h: u16, w: u16, c: u16) -> InputSpec {
        InputSpec {
            height: h,
            width: w,
            channels: c,
            quant: QuantParams {
                scale: 1.0 / 255.0,
                zero_point: -128,
            },
        }
    }

    /// 6×6×2 → conv 3×3 same stride 2 (4 filters) → pool 1 → dense 3, borrowing `conv`'s and
    /// `dense`'s arrays.
    fn small<'p>(conv: &'p OwnedParams, dense: &'p OwnedParams) -> Vec<Op<'p>> {
        std::vec![
            Op::Conv2d(ConvOp {
                in_h: 6,
                in_w: 6,
                in_c: 2,
                filters: 4,
                kernel: 3,
                stride: 2,
                padding: Padding::Same,
                relu: true,
                params: conv.view(),
            }),
            Op::MaxPool2d(PoolOp {
                in_h: 3,
                in_w: 3,
                channels: 4,
                pool: 1,
            }),
            Op::Dense(DenseOp {
                inputs: 36,
                units: 3,
                relu: false,
                params: dense.view(),
            }),
        ]
    }

    #[test]
    fn a_model_round_trips_and_every_truncation_or_flip_is_refused() {
        let mut rng = crate::kernels::TestRng(42);
        let conv = OwnedParams::random(&mut rng, 4 * 9 * 2, 4);
        let dense = OwnedParams::logits(&mut rng, 36 * 3, 3);
        let ops = small(&conv, &dense);
        let file = StackFile::new(input(6, 6, 2), &ops);
        let mut buf = [0u8; 2048];
        let bytes = file.encode(&mut buf).unwrap().to_vec();
        let decoded = StackFile::decode(&bytes).unwrap();
        assert_eq!(decoded, file);
        // A decoded file (its operations still encoded) re-encodes to the same bytes.
        let mut again = [0u8; 2048];
        assert_eq!(decoded.encode(&mut again).unwrap(), &bytes[..]);
        assert_eq!(decoded.ops.get(1), Some(ops[1]));
        assert_eq!(decoded.ops.get(3), None);
        assert_eq!(file.classes(), 3);
        assert_eq!(input_offset(&file, 0), 128);
        assert_eq!(input_offset(&file, 2), -conv.output.zero_point);
        for len in 0..bytes.len() {
            assert!(
                StackFile::decode(&bytes[..len]).is_err(),
                "truncated to {len}"
            );
        }
        for bit in 0..bytes.len() * 8 {
            let mut flipped = bytes.clone();
            flipped[bit / 8] ^= 1 << (bit % 8);
            assert!(StackFile::decode(&flipped).is_err(), "bit {bit}");
        }
        // Older layer-stack files (format 2: int8 logits) are refused, naming the version and
        // the command that writes a current one.
        let mut old = bytes.clone();
        old[4] = 2;
        let body = old.len() - 4;
        let crc = crate::format::crc32(&old[..body]).to_le_bytes();
        old[body..].copy_from_slice(&crc);
        let refused = StackFile::decode(&old).unwrap_err();
        assert_eq!(
            refused,
            Error::UnsupportedVersion {
                found: 2,
                supported: 3
            }
        );
        let message = std::format!("{refused}");
        assert!(message.contains("format version 2"), "{message}");
        assert!(message.contains("trainer quantize --float"), "{message}");
    }

    #[test]
    fn broken_chains_are_refused_with_the_problem_named() {
        let mut rng = crate::kernels::TestRng(7);
        let conv = OwnedParams::random(&mut rng, 4 * 9 * 2, 4);
        let dense = OwnedParams::logits(&mut rng, 36 * 3, 3);
        let good = small(&conv, &dense);
        let check = |ops: &[Op<'_>]| StackFile::new(input(6, 6, 2), ops).validate();
        check(&good).unwrap();
        let mut bad = good.clone();
        if let Op::MaxPool2d(p) = &mut bad[1] {
            p.channels = 5;
        }
        assert!(matches!(check(&bad), Err(Error::Malformed { .. })));
        let mut bad = good.clone();
        if let Op::Dense(d) = &mut bad[2] {
            d.inputs = 35;
        }
        assert!(matches!(
            check(&bad),
            Err(Error::InconsistentLength {
                field: "dense inputs",
                ..
            })
        ));
        let mut bad = good.clone();
        if let Op::Conv2d(c) = &mut bad[0] {
            c.stride = 3;
        }
        assert!(check(&bad).is_err());
        let mut bad = good.clone();
        bad.pop();
        assert!(check(&bad).is_err(), "must end in dense");
        let mut bad = good.clone();
        if let Op::Dense(d) = &mut bad[2] {
            d.params.weights = &d.params.weights[1..];
        }
        assert!(matches!(check(&bad), Err(Error::InconsistentLength { .. })));
        let mut bad = good.clone();
        if let Op::Dense(d) = &mut bad[2] {
            d.params.output.zero_point = 1;
        }
        assert!(matches!(
            check(&bad),
            Err(Error::InvalidQuantization { .. })
        ));
        let positive = [1u8, 0, 0];
        let mut bad = good.clone();
        if let Op::Dense(d) = &mut bad[2] {
            d.params.shift = &positive;
        }
        assert!(
            matches!(check(&bad), Err(Error::InvalidQuantization { .. })),
            "a logits shift > 0 could overflow"
        );
        let many = std::vec![good[1]; MAX_OPS + 1];
        assert!(check(&many).is_err(), "more than 32 operations");
    }

    /// Parameters that would make a kernel overflow (a panic in a debug build, a wrong
    /// result in release) are refused when the model loads, and so are broken envelopes,
    /// each with its problem named.
    #[test]
    fn hostile_quantization_and_broken_envelopes_are_refused_by_name() {
        let mut rng = crate::kernels::TestRng(11);
        let conv = OwnedParams::random(&mut rng, 4 * 9 * 2, 4);
        let dense = OwnedParams::logits(&mut rng, 36 * 3, 3);
        let good = small(&conv, &dense);
        let refused = |input: InputSpec, ops: &[Op<'_>]| match StackFile::new(input, ops).validate()
        {
            Err(Error::InvalidQuantization { field }) => field,
            other => panic!("{other:?}"),
        };
        for (scale, zero_point) in [
            (f32::NAN, -128),
            (0.0, 0),
            (-1.0, 0),
            (0.1, 128),
            (0.1, -129),
        ] {
            let mut bad = input(6, 6, 2);
            bad.quant = QuantParams { scale, zero_point };
            assert!(
                refused(bad, &good).starts_with("input"),
                "{scale} {zero_point}"
            );
        }
        // The input carries its own quantization: any valid one is accepted.
        for (scale, zero_point) in [(1.0 / 64.0, -64), (0.5, 127), (3.0, -128)] {
            let mut own = input(6, 6, 2);
            own.quant = QuantParams { scale, zero_point };
            assert_eq!(StackFile::new(own, &good).validate(), Ok(()));
        }
        let mut bad = good.clone();
        if let Op::Conv2d(c) = &mut bad[0] {
            c.params.output.zero_point = i32::MIN;
        }
        assert!(refused(input(6, 6, 2), &bad).contains("zero point"));
        let mut bad = good.clone();
        if let Op::Dense(d) = &mut bad[2] {
            d.params.output.scale = f32::INFINITY;
        }
        assert!(refused(input(6, 6, 2), &bad).contains("scale"));
        // The conv sums 3·3·2 products per output: its headroom is i32::MAX − 18·255·128.
        let edge = i32::MAX - 18 * 255 * 128;
        let at_edge = [edge.to_le_bytes(), (-edge).to_le_bytes()].concat();
        let at_edge = at_edge.repeat(2);
        let mut ok = good.clone();
        if let Op::Conv2d(c) = &mut ok[0] {
            c.params.bias = &at_edge;
        }
        StackFile::new(input(6, 6, 2), &ok).validate().unwrap();
        let over = [(edge + 1).to_le_bytes(), [0; 4], [0; 4], [0; 4]].concat();
        let mut bad = good.clone();
        if let Op::Conv2d(c) = &mut bad[0] {
            c.params.bias = &over;
        }
        assert!(refused(input(6, 6, 2), &bad).starts_with("conv bias"));
        let negative = [(-1i32).to_le_bytes(), [0; 4], [0; 4], [0; 4]].concat();
        let mut bad = good.clone();
        if let Op::Conv2d(c) = &mut bad[0] {
            c.params.multiplier = &negative;
        }
        assert!(refused(input(6, 6, 2), &bad).starts_with("multiplier"));

        let file = StackFile::new(input(6, 6, 2), &good);
        let mut buf = [0u8; 2048];
        let bytes = file.encode(&mut buf).unwrap().to_vec();
        let mut corrupt = bytes.clone();
        corrupt[20] ^= 0x10;
        assert!(matches!(
            StackFile::decode(&corrupt),
            Err(Error::ChecksumMismatch { .. })
        ));
        assert!(matches!(
            StackFile::decode(b"PK\x03\x04abcdefgh"),
            Err(Error::BadMagic { .. })
        ));
        assert!(matches!(
            StackFile::decode(b"I8CN\x03"),
            Err(Error::Truncated { .. })
        ));
        let mut newer = bytes.clone();
        newer[4] = 4;
        let body = newer.len() - 4;
        let crc = crate::format::crc32(&newer[..body]).to_le_bytes();
        newer[body..].copy_from_slice(&crc);
        let message = std::format!("{}", StackFile::decode(&newer).unwrap_err());
        assert!(
            message.contains("version 4") && message.contains("version 3"),
            "{message}"
        );
    }
}

#[cfg(test)]
mod pinned {
    use super::tests::input;
    use super::*;
    use super::{AddOp, BranchOp};
    use crate::format::{crc32, QuantParams};
    use std::vec::Vec;

    /// The per-channel arrays of `n` channels: weight scale 1.0, bias 0, multiplier 2^30,
    /// shift −1; output scale 0.5 and zero point `zp`.
    struct Arrays {
        scales: Vec<u8>,
        bias: Vec<u8>,
        multiplier: Vec<u8>,
        shift: Vec<u8>,
        zp: i32,
    }

    impl Arrays {
        fn new(n: usize, zp: i32) -> Self {
            Self {
                scales: 1.0f32.to_le_bytes().repeat(n),
                bias: [0u8; 4].repeat(n),
                multiplier: (1i32 << 30).to_le_bytes().repeat(n),
                shift: std::vec![0xff; n],
                zp,
            }
        }

        fn params<'a>(&'a self, weights: &'a [u8]) -> ChannelParams<'a> {
            ChannelParams {
                weights,
                weight_scales: &self.scales,
                bias: &self.bias,
                multiplier: &self.multiplier,
                shift: &self.shift,
                output: QuantParams {
                    scale: 0.5,
                    zero_point: self.zp,
                },
            }
        }
    }

    /// The exact bytes of the operations only imported models have: a conv whose kernel
    /// is not square, a depthwise conv and an average pool (docs/model-format.md).
    #[test]
    fn imported_operations_are_pinned_byte_for_byte() {
        let (conv, depthwise, dense) = (Arrays::new(1, -1), Arrays::new(2, -2), Arrays::new(2, 0));
        let window = |rows, cols| WindowFields {
            rows,
            cols,
            stride_h: 1,
            stride_w: 1,
            padding: Padding::Valid,
        };
        let ops = [
            Op::Conv2dRect(
                ConvOp {
                    in_h: 2,
                    in_w: 2,
                    in_c: 1,
                    filters: 1,
                    kernel: 1,
                    stride: 1,
                    padding: Padding::Valid,
                    relu: false,
                    params: conv.params(&[3, 4]),
                },
                2,
            ),
            Op::DepthwiseConv2d(DepthwiseOp {
                in_h: 2,
                in_w: 1,
                in_c: 1,
                multiplier: 2,
                window: window(1, 1),
                min: -2,
                max: 10,
                params: depthwise.params(&[1, 0xff]),
            }),
            Op::AvgPool2d(AvgPoolOp {
                in_h: 2,
                in_w: 1,
                channels: 2,
                window: window(2, 1),
                min: -128,
                max: 127,
            }),
            Op::Dense(DenseOp {
                inputs: 2,
                units: 2,
                relu: false,
                params: dense.params(&[5, 0xfb, 1, 2]),
            }),
        ];
        let file = StackFile::new(input(2, 2, 1), &ops);
        file.validate().unwrap();
        let mut buf = [0u8; 512];
        let bytes = file.encode(&mut buf).unwrap().to_vec();
        assert_eq!(StackFile::decode(&bytes).unwrap(), file);
        let hex: Vec<std::string::String> = bytes.iter().map(|b| std::format!("{b:02x}")).collect();
        let hex = hex.concat();
        let ops_hex = concat!(
            "03",
            "020201010101",
            "0000", // conv2d_rect: in 2×2×1, 1 filter, 1 row, stride 1, valid, no ReLU
            "020304",
            "040000803f",
            "0400000000",
            "0400000040",
            "01ff",
            "0000003f01", // weights [3, 4], scale, bias, multiplier, shift; output zp −1
            "02",         // …and 2 columns
            "04",
            "02010102",
            "0101010100", // depthwise_conv2d: in 2×1×1, multiplier 2, window 1×1 stride 1×1 valid
            "fe0a",       // min −2, max 10 (an i8 is one byte)
            "0201ff",
            "080000803f0000803f",
            "080000000000000000",
            "080000004000000040",
            "02ffff",
            "0000003f03", // output zp −2
            "05",
            "020102",
            "0201010100", // avgpool2d: in 2×1×2, window 2×1 stride 1×1 valid
            "807f",       // min −128, max 127
        );
        assert!(hex.contains(ops_hex), "{hex}");
        // Their checks: each refused with its problem named.
        let malformed = |what: &str, change: &dyn Fn(&mut Op<'_>), at: usize| {
            let mut bad = ops;
            change(&mut bad[at]);
            match StackFile::new(input(2, 2, 1), &bad).validate() {
                Err(Error::Malformed { what: found }) => assert!(found.contains(what), "{found}"),
                other => panic!("{what}: {other:?}"),
            }
        };
        malformed(
            "min above max",
            &|op| {
                if let Op::DepthwiseConv2d(d) = op {
                    d.min = 11;
                }
            },
            1,
        );
        malformed(
            "avgpool2d's input",
            &|op| {
                if let Op::AvgPool2d(p) = op {
                    p.channels = 3;
                }
            },
            2,
        );
        malformed(
            "larger than its input",
            &|op| {
                if let Op::AvgPool2d(p) = op {
                    p.window.rows = 3;
                }
            },
            2,
        );
        malformed(
            "larger than its input",
            &|op| {
                if let Op::Conv2dRect(_, cols) = op {
                    *cols = 3;
                }
            },
            0,
        );
        let mut bad = ops;
        if let Op::DepthwiseConv2d(d) = &mut bad[1] {
            d.params.weights = &[1];
        }
        let found = StackFile::new(input(2, 2, 1), &bad).validate();
        assert!(matches!(found, Err(Error::InconsistentLength { .. })));
    }

    /// The exact bytes of an add and a branch (docs/model-format.md): `x + x`, then the
    /// input again for the logits layer.
    #[test]
    fn graph_operations_are_pinned_byte_for_byte() {
        let dense = Arrays::new(2, 0);
        let ops = [
            Op::Add(AddOp {
                h: 2,
                w: 1,
                channels: 1,
                other: 0,
                left_shift: 20,
                multiplier: 1 << 30,
                shift: 0,
                other_multiplier: 1 << 30,
                other_shift: -1,
                output_multiplier: 1 << 30,
                output_shift: -19,
                output: QuantParams {
                    scale: 0.5,
                    zero_point: -1,
                },
                min: -128,
                max: 127,
            }),
            Op::Branch(BranchOp {
                h: 2,
                w: 1,
                channels: 1,
                from: 0,
            }),
            Op::Dense(DenseOp {
                inputs: 2,
                units: 2,
                relu: false,
                params: dense.params(&[5, 0xfb, 1, 2]),
            }),
        ];
        let file = StackFile::new(input(2, 1, 1), &ops);
        file.validate().unwrap();
        let mut buf = [0u8; 256];
        let bytes = file.encode(&mut buf).unwrap().to_vec();
        assert_eq!(StackFile::decode(&bytes).unwrap(), file);
        let hex: Vec<std::string::String> = bytes.iter().map(|b| std::format!("{b:02x}")).collect();
        let hex = hex.concat();
        let ops_hex = concat!(
            "06",
            "02010100",     // add: 2×1×1, the other operand tensor 0 (the input)
            "14",           // left shift 20 (a u8)
            "808080800800", // multiplier 2^30 (zigzag varint), shift 0 (an i8)
            "8080808008ff", // the other's: 2^30, −1
            "8080808008ed", // the sum's: 2^30, −19
            "0000003f01",   // output scale 0.5, zero point −1
            "807f",         // min −128, max 127
            "07",
            "02010100", // branch: 2×1×1, tensor 0
            "02",       // dense…
        );
        assert!(hex.contains(ops_hex), "{hex}");
        // The add's offsets: the input's zero point (−128) for both operands.
        assert_eq!(input_offset(&file, 0), 128);
        assert_eq!(file.tensor_offset(0), 128);
        // The dense layer reads the input again, through the branch.
        assert_eq!(input_offset(&file, 2), 128);
    }

    /// The exact bytes of a small model (docs/model-format.md): any change to the encoding
    /// shows here.
    #[test]
    fn encoding_is_pinned_byte_for_byte() {
        let (conv, dense) = (Arrays::new(1, -1), Arrays::new(2, 0));
        let ops = [
            Op::Conv2d(ConvOp {
                in_h: 2,
                in_w: 2,
                in_c: 1,
                filters: 1,
                kernel: 1,
                stride: 1,
                padding: Padding::Valid,
                relu: true,
                params: conv.params(&[3]),
            }),
            Op::MaxPool2d(PoolOp {
                in_h: 2,
                in_w: 2,
                channels: 1,
                pool: 2,
            }),
            Op::Dense(DenseOp {
                inputs: 1,
                units: 2,
                relu: false,
                params: dense.params(&[5, 0xfb]),
            }),
        ];
        let file = StackFile::new(input(2, 2, 1), &ops);
        file.validate().unwrap();
        let mut buf = [0u8; 256];
        let bytes = file.encode(&mut buf).unwrap();
        let (body, crc) = bytes.split_at(bytes.len() - 4);
        let hex: Vec<std::string::String> = body.iter().map(|b| std::format!("{b:02x}")).collect();
        assert_eq!(
            hex.concat(),
            concat!(
                "4938434e",
                "0300", // magic "I8CN", version 3 (fixint LE)
                "020201",
                "8180803bff01", // input 2×2×1, scale 1/255 (f32 LE), zp −128 (zigzag 255)
                "03",           // three operations
                "00",
                "020201010101",
                "0001", // conv2d: in 2×2×1, 1 filter, kernel 1, stride 1, valid, ReLU
                "0103",
                "040000803f",
                "0400000000", // weights [3], scales [1.0], bias [0]
                "0400000040",
                "01ff",       // multiplier [2^30], shift [−1]
                "0000003f01", // output: scale 0.5, zp −1 (zigzag 1)
                "01",
                "02020102", // maxpool2d: in 2×2×1, pool 2
                "02",
                "010200", // dense: 1 input, 2 units, no ReLU
                "0205fb",
                "080000803f0000803f",
                "080000000000000000",
                "080000004000000040",
                "02ffff",
                "0000003f00", // the logits: scale 0.5, zp 0
            )
        );
        assert_eq!(u32::from_le_bytes(crc.try_into().unwrap()), crc32(body));
    }
}

//! Typed layers of a format-3 stack: each shape is a const generic, so a network declared
//! with them (the firmware's build script generates one from the spec file) has its buffer
//! sizes and layer-to-layer shape agreement fixed at compile time, and a model.bin is checked
//! against them operation by operation when it loads.
//!
//! Each layer borrows its weights from the model bytes and runs a slice kernel of
//! [`crate::kernels`] (the fast paths, tested bit for bit against the references).

use super::format::{input_offset, Op, Padding, StackFile};
use crate::kernels::conv::{conv2d_i8_packed, out_dim, ConvGeometry};
use crate::kernels::dense::{dense_i8_fast, dense_i8_logits_fast};
use crate::kernels::dot::PatchWords;
use crate::kernels::pool::{max_pool, PoolGeometry};
use crate::kernels::ChannelRequant;
use crate::Error;

/// One operation of a typed stack.
pub trait Layer<'a>: Sized {
    /// Values read.
    const IN: usize;
    /// Values written.
    const OUT: usize;
    /// Words of the packed patch buffer [`Layer::run`] needs.
    const PATCH_WORDS: usize;
    /// The type's name as spec files write it.
    const TYPE: &'static str;

    /// Checks operation `index` of `file` against this layer's shapes and borrows its weights.
    ///
    /// # Errors
    /// [`Error::OpTypeMismatch`] or [`Error::OpMismatch`] naming the operation, the property
    /// and both values.
    fn from_file(file: &StackFile<'a>, index: usize) -> Result<Self, Error>;

    /// Computes `output` (`OUT` values) from `input` (`IN` values). Slices of other lengths
    /// compute less, never panic; a network built from these layers sizes them at compile time.
    fn run(&self, input: &[i8], patch: &mut [u32], output: &mut [i8]);
}

/// Checks that `file` has exactly `count` operations.
///
/// # Errors
/// [`Error::OpMismatch`] with `what = "operations"`.
pub fn check_op_count(file: &StackFile<'_>, count: usize) -> Result<(), Error> {
    if file.ops.len() == count {
        return Ok(());
    }
    Err(Error::OpMismatch {
        op: file.ops.len().min(count) as u16,
        what: "operations",
        found: file.ops.len() as u32,
        compiled: count as u32,
    })
}

/// Compares one property of operation `op`.
fn expect(op: usize, what: &'static str, found: usize, compiled: usize) -> Result<(), Error> {
    if found == compiled {
        return Ok(());
    }
    Err(Error::OpMismatch {
        op: op as u16,
        what,
        found: found as u32,
        compiled: compiled as u32,
    })
}

#[inline(always)]
fn op_at<'a>(file: &StackFile<'a>, index: usize, compiled: &'static str) -> Result<Op<'a>, Error> {
    file.ops
        .get(index)
        .ok_or(Error::OpMismatch {
            op: index as u16,
            what: "operations",
            found: file.ops.len() as u32,
            compiled: index as u32 + 1,
        })
        .and_then(|op| {
            if op.type_name() == compiled {
                Ok(op)
            } else {
                Err(Error::OpTypeMismatch {
                    op: index as u16,
                    found: op.type_name(),
                    compiled,
                })
            }
        })
}

const fn padding(same: bool) -> Padding {
    if same {
        Padding::Same
    } else {
        Padding::Valid
    }
}

/// Convolution: `IH × IW × IC` input, `F` square `K × K` filters, stride `S`, same padding if
/// `SAME`, fused ReLU if `RELU`.
#[derive(Debug, Clone, Copy)]
pub struct Conv2d<
    'a,
    const IH: usize,
    const IW: usize,
    const IC: usize,
    const K: usize,
    const F: usize,
    const S: usize,
    const SAME: bool,
    const RELU: bool,
> {
    weights: &'a [u8],
    requant: ChannelRequant<'a>,
    input_offset: i32,
}

impl<
        'a,
        const IH: usize,
        const IW: usize,
        const IC: usize,
        const K: usize,
        const F: usize,
        const S: usize,
        const SAME: bool,
        const RELU: bool,
    > Conv2d<'a, IH, IW, IC, K, F, S, SAME, RELU>
{
    /// Output rows.
    pub const OH: usize = out_dim(IH, K, S, padding(SAME));
    /// Output columns.
    pub const OW: usize = out_dim(IW, K, S, padding(SAME));
    const SHAPE: () = {
        assert!(
            IH > 0 && IW > 0 && IC > 0 && F > 0,
            "every dimension must be positive"
        );
        assert!(S == 1 || S == 2, "stride must be 1 or 2");
        assert!(K >= 1, "kernel must be at least 1");
        assert!(
            Self::OH > 0 && Self::OW > 0,
            "a valid kernel must fit in the input"
        );
    };
    const GEOMETRY: ConvGeometry = ConvGeometry {
        in_h: IH,
        in_w: IW,
        in_c: IC,
        k_h: K,
        k_w: K,
        filters: F,
        stride: S,
        padding: padding(SAME),
    };
}

impl<
        'a,
        const IH: usize,
        const IW: usize,
        const IC: usize,
        const K: usize,
        const F: usize,
        const S: usize,
        const SAME: bool,
        const RELU: bool,
    > Layer<'a> for Conv2d<'a, IH, IW, IC, K, F, S, SAME, RELU>
{
    const IN: usize = IH * IW * IC;
    const OUT: usize = Self::OH * Self::OW * F;
    const PATCH_WORDS: usize = PatchWords::words(K * K * IC);
    const TYPE: &'static str = "conv2d";

    #[inline(never)]
    fn from_file(file: &StackFile<'a>, index: usize) -> Result<Self, Error> {
        let () = Self::SHAPE;
        let Op::Conv2d(c) = op_at(file, index, Self::TYPE)? else {
            return Err(Error::Malformed {
                what: "operation type",
            });
        };
        expect(index, "conv2d input rows", c.in_h.into(), IH)?;
        expect(index, "conv2d input columns", c.in_w.into(), IW)?;
        expect(index, "conv2d input channels", c.in_c.into(), IC)?;
        expect(index, "conv2d kernel", c.kernel.into(), K)?;
        expect(index, "conv2d filters", c.filters.into(), F)?;
        expect(index, "conv2d stride", c.stride.into(), S)?;
        expect(
            index,
            "conv2d padding (0 valid, 1 same)",
            usize::from(c.padding == Padding::Same),
            usize::from(SAME),
        )?;
        expect(
            index,
            "conv2d ReLU (0 no, 1 yes)",
            c.relu.into(),
            RELU.into(),
        )?;
        Ok(Self {
            weights: c.params.weights,
            requant: ChannelRequant::from_params(&c.params, RELU),
            input_offset: input_offset(file, index),
        })
    }

    fn run(&self, input: &[i8], patch: &mut [u32], output: &mut [i8]) {
        conv2d_i8_packed(
            &Self::GEOMETRY,
            input,
            self.input_offset,
            self.weights,
            &self.requant,
            patch,
            output,
        );
    }
}

/// Max pooling of an `IH × IW × C` input over `P × P` windows with stride `P`.
#[derive(Debug, Clone, Copy)]
pub struct MaxPool2d<const IH: usize, const IW: usize, const C: usize, const P: usize>;

impl<const IH: usize, const IW: usize, const C: usize, const P: usize> MaxPool2d<IH, IW, C, P> {
    const SHAPE: () = assert!(P >= 1 && P <= IH && P <= IW && C > 0, "the window must fit");
    const GEOMETRY: PoolGeometry = PoolGeometry {
        in_h: IH,
        in_w: IW,
        channels: C,
        size: P,
    };
}

impl<'a, const IH: usize, const IW: usize, const C: usize, const P: usize> Layer<'a>
    for MaxPool2d<IH, IW, C, P>
{
    const IN: usize = IH * IW * C;
    const OUT: usize = (IH / P) * (IW / P) * C;
    const PATCH_WORDS: usize = 0;
    const TYPE: &'static str = "maxpool2d";

    #[inline(never)]
    fn from_file(file: &StackFile<'a>, index: usize) -> Result<Self, Error> {
        let () = Self::SHAPE;
        let Op::MaxPool2d(p) = op_at(file, index, Self::TYPE)? else {
            return Err(Error::Malformed {
                what: "operation type",
            });
        };
        expect(index, "maxpool2d input rows", p.in_h.into(), IH)?;
        expect(index, "maxpool2d input columns", p.in_w.into(), IW)?;
        expect(index, "maxpool2d channels", p.channels.into(), C)?;
        expect(index, "maxpool2d window", p.pool.into(), P)?;
        Ok(Self)
    }

    fn run(&self, input: &[i8], _patch: &mut [u32], output: &mut [i8]) {
        max_pool(&Self::GEOMETRY, input, output);
    }
}

/// Fully connected: `I` inputs, `U` units, fused ReLU if `RELU`.
#[derive(Debug, Clone, Copy)]
pub struct Dense<'a, const I: usize, const U: usize, const RELU: bool> {
    weights: &'a [u8],
    requant: ChannelRequant<'a>,
    input_offset: i32,
}

impl<const I: usize, const U: usize, const RELU: bool> Dense<'_, I, U, RELU> {
    const SHAPE: () = assert!(I > 0 && U > 0, "every dimension must be positive");
}

impl<'a, const I: usize, const U: usize, const RELU: bool> Layer<'a> for Dense<'a, I, U, RELU> {
    const IN: usize = I;
    const OUT: usize = U;
    const PATCH_WORDS: usize = 0;
    const TYPE: &'static str = "dense";

    #[inline(never)]
    fn from_file(file: &StackFile<'a>, index: usize) -> Result<Self, Error> {
        let () = Self::SHAPE;
        let Op::Dense(d) = op_at(file, index, Self::TYPE)? else {
            return Err(Error::Malformed {
                what: "operation type",
            });
        };
        expect(index, "dense inputs", d.inputs as usize, I)?;
        expect(index, "dense units", d.units.into(), U)?;
        expect(
            index,
            "dense ReLU (0 no, 1 yes)",
            d.relu.into(),
            RELU.into(),
        )?;
        Ok(Self {
            weights: d.params.weights,
            requant: ChannelRequant::from_params(&d.params, RELU),
            input_offset: input_offset(file, index),
        })
    }

    fn run(&self, input: &[i8], _patch: &mut [u32], output: &mut [i8]) {
        dense_i8_fast(
            input.get(..I).unwrap_or(input),
            self.input_offset,
            self.weights,
            &self.requant,
            output,
        );
    }
}

impl<const I: usize, const U: usize> Dense<'_, I, U, false> {
    /// Runs this layer as the network's last, the logits layer: `output` gets the `U` wide
    /// logits (int32 accumulators requantized to one common scale, zero point 0, not clipped
    /// to int8: [`crate::kernels::dense::requantize_wide`]). Slices of other lengths compute
    /// less, never panic.
    pub fn run_logits(&self, input: &[i8], output: &mut [i32]) {
        dense_i8_logits_fast(
            input.get(..I).unwrap_or(input),
            self.input_offset,
            self.weights,
            &self.requant,
            output,
        );
    }
}

/// The larger of two sizes, for buffer sizes computed at compile time.
pub const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

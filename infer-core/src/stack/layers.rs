//! Typed layers of a format-3 stack: each shape is a const generic, so a network declared
//! with them (the firmware's build script generates one from the spec file) has its buffer
//! sizes and layer-to-layer shape agreement fixed at compile time, and a model.bin is checked
//! against them operation by operation when it loads.
//!
//! Each layer borrows its weights from the model bytes and runs a slice kernel of
//! [`crate::kernels`] (the fast paths, tested bit for bit against the references).

use super::dense::dense_words;
use super::facts::{self, Facts, Known, KnownFacts, Unknown};
use super::format::{input_offset, Op, Padding, StackFile};
use super::stages::{
    dense_part, depthwise_covered, facts_of, general_words, run_chain, run_general,
    run_general_logits, run_general_rows, run_pointwise_in_place, ConvPart, DensePart, Out, Parts,
    Pixels,
};
use crate::kernels::average_pool::{average_pool, AvgPoolGeometry};
use crate::kernels::conv::{out_dim, ConvGeometry};
use crate::kernels::depthwise::{
    depthwise_i8, depthwise_i8_in_place, depthwise_scratch_words, in_place_fits, DepthwiseGeometry,
};
use crate::kernels::fused::{
    background_start, fast_requant, Stream3x3, StreamLayers, StreamScratch, NATIVE_PAIRED,
};
use crate::kernels::pool::{max_pool, PoolGeometry};
use crate::kernels::window::Window;
use crate::kernels::{ChannelRequant, MapRows};
use crate::probe::{NoProbe, Probe};
use crate::Error;
use core::marker::PhantomData;
use core::ops::Range;

/// One operation of a typed stack.
pub trait Layer<'a>: Sized {
    /// Values read.
    const IN: usize;
    /// Values written.
    const OUT: usize;
    /// Words of the packed patch buffer [`Layer::run`] needs.
    const PATCH_WORDS: usize;
    /// The type's name as spec files write it (`+` between the operations of a stage).
    const TYPE: &'static str;
    /// Operations of the model it computes (more than 1 for the fused stages of
    /// [`super::stages`]).
    const OPS: usize = 1;

    /// Checks operation `index` (and the next [`Layer::OPS`]` − 1`) of `file` against this
    /// layer's shapes and borrows its weights.
    ///
    /// # Errors
    /// [`Error::OpTypeMismatch`] or [`Error::OpMismatch`] naming the operation, the property
    /// and both values.
    fn from_file(file: &StackFile<'a>, index: usize) -> Result<Self, Error>;

    /// Computes `output` (`OUT` values) from `input` (`IN` values). Slices of other lengths
    /// compute less, never panic; a network built from these layers sizes them at compile time.
    fn run(&self, input: &[i8], patch: &mut [u32], output: &mut [i8]);
}

/// A layer that can end a network: its (last) dense layer, without ReLU, gives the logits.
pub trait Logits<'a>: Layer<'a> {
    /// Computes the `OUT` wide logits (int32 accumulators requantized to one common scale,
    /// zero point 0, not clipped to int8: [`crate::kernels::dense::finish_logits`]) from
    /// `input` (`IN` values). Slices of other lengths compute less, never panic.
    fn run_logits(&self, input: &[i8], patch: &mut [u32], logits: &mut [i32]);
}

/// A layer that can compute its output over its input (the plan's
/// [`super::stages::Stage::over_input`]), in place of [`Layer::run`]: a network runs it
/// through [`InPlace`].
pub trait OverInput<'a>: Layer<'a> {
    /// Computes the `OUT` values from the start of `map` over the `IN` values it holds, with
    /// `patch` ([`Layer::PATCH_WORDS`] and the words [`InPlace`] adds). Slices of other
    /// lengths compute less, never panic.
    fn run_over(&self, map: &mut [i8], patch: &mut [u32]);
}

/// Layer `S` computed over its input ([`OverInput`]), with `WORDS` words of working memory
/// beyond its own (a pointwise conv's chunk of input,
/// [`super::stages::Stage::over_input_words`]).
#[derive(Debug, Clone, Copy)]
pub struct InPlace<S, const WORDS: usize>(S);

impl<'a, S: OverInput<'a>, const WORDS: usize> InPlace<S, WORDS> {
    /// Computes the output over the input in `map` ([`OverInput::run_over`]).
    #[inline(always)]
    pub fn run_in_place(&self, map: &mut [i8], patch: &mut [u32]) {
        self.0.run_over(map, patch);
    }
}

impl<'a, S: OverInput<'a>, const WORDS: usize> Layer<'a> for InPlace<S, WORDS> {
    const IN: usize = S::IN;
    const OUT: usize = S::OUT;
    const PATCH_WORDS: usize = S::PATCH_WORDS + WORDS;
    const TYPE: &'static str = S::TYPE;
    const OPS: usize = S::OPS;

    fn from_file(file: &StackFile<'a>, index: usize) -> Result<Self, Error> {
        S::from_file(file, index).map(Self)
    }

    /// `S`'s own, from a separate input.
    fn run(&self, input: &[i8], patch: &mut [u32], output: &mut [i8]) {
        self.0.run(input, patch, output);
    }
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

/// Convolution: `IH × IW × IC` input, `F` filters of `KH × KW` (a square kernel, `K × K`,
/// is the common case), stride `S`, same padding if `SAME`, fused ReLU if `RELU`.
#[derive(Debug, Clone, Copy)]
pub struct Conv2d<
    'a,
    const IH: usize,
    const IW: usize,
    const IC: usize,
    const KH: usize,
    const KW: usize,
    const F: usize,
    const S: usize,
    const SAME: bool,
    const RELU: bool,
> {
    weights: &'a [u8],
    wide: &'a [u32],
    requant: ChannelRequant<'a>,
    input_offset: i32,
}

/// Binds `$stream` to the one-channel 3×3 kernel (`Stream3x3::<$f, $u, PAIRED, $fast>`
/// made from `$args`) and evaluates `$body`: paired where the core multiplies pairs natively
/// and the filters are whole quads ([`NATIVE_PAIRED`]), else not — the one place that
/// chooses.
macro_rules! with_stream {
    (<$f:tt, $u:tt, $fast:tt>($($arg:expr),* $(,)?), |$stream:ident| $body:expr) => {
        if NATIVE_PAIRED && $f % 4 == 0 {
            #[allow(unused_mut)]
            let mut $stream = Stream3x3::<$f, $u, true, $fast>::new($($arg),*);
            $body
        } else {
            #[allow(unused_mut)]
            let mut $stream = Stream3x3::<$f, $u, false, $fast>::new($($arg),*);
            $body
        }
    };
}

impl<
        'a,
        const IH: usize,
        const IW: usize,
        const IC: usize,
        const KH: usize,
        const KW: usize,
        const F: usize,
        const S: usize,
        const SAME: bool,
        const RELU: bool,
    > Conv2d<'a, IH, IW, IC, KH, KW, F, S, SAME, RELU>
{
    /// Output rows.
    pub const OH: usize = out_dim(IH, KH, S, padding(SAME));
    /// Output columns.
    pub const OW: usize = out_dim(IW, KW, S, padding(SAME));
    const SHAPE: () = {
        assert!(
            IH > 0 && IW > 0 && IC > 0 && F > 0,
            "every dimension must be positive"
        );
        assert!(S == 1 || S == 2, "stride must be 1 or 2");
        assert!(KH >= 1 && KW >= 1, "kernel must be at least 1");
        assert!(
            Self::OH > 0 && Self::OW > 0,
            "a valid kernel must fit in the input"
        );
    };
    const GEOMETRY: ConvGeometry = ConvGeometry {
        in_h: IH,
        in_w: IW,
        in_c: IC,
        k_h: KH,
        k_w: KW,
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
        const KH: usize,
        const KW: usize,
        const F: usize,
        const S: usize,
        const SAME: bool,
        const RELU: bool,
    > Layer<'a> for Conv2d<'a, IH, IW, IC, KH, KW, F, S, SAME, RELU>
{
    const IN: usize = IH * IW * IC;
    const OUT: usize = Self::OH * Self::OW * F;
    const PATCH_WORDS: usize = general_words((KH * KW * IC, IC == 1), F, (0, 0), 1, Pixels::BUILT);
    const TYPE: &'static str = "conv2d";

    fn from_file(file: &StackFile<'a>, index: usize) -> Result<Self, Error> {
        let () = Self::SHAPE;
        let op = op_at(file, index, Self::TYPE)?;
        let Some((c, g)) = op.conv() else {
            return Err(Error::Malformed {
                what: "operation type",
            });
        };
        expect(index, "conv2d input rows", c.in_h.into(), IH)?;
        expect(index, "conv2d input columns", c.in_w.into(), IW)?;
        expect(index, "conv2d input channels", c.in_c.into(), IC)?;
        expect(index, "conv2d kernel rows", g.k_h, KH)?;
        expect(index, "conv2d kernel columns", g.k_w, KW)?;
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
            wide: file.prepared(index),
            requant: ChannelRequant::from_params(&c.params, RELU),
            input_offset: input_offset(file, index),
        })
    }

    fn run(&self, input: &[i8], patch: &mut [u32], output: &mut [i8]) {
        run_general::<Unknown>(&self.parts(), input, patch, output);
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

/// The window of `KH × KW`, strides `SH` and `SW`, same padding if `SAME`.
const fn window(kh: usize, kw: usize, sh: usize, sw: usize, same: bool) -> Window {
    Window {
        k_h: kh,
        k_w: kw,
        stride_h: sh,
        stride_w: sw,
        padding: padding(same),
    }
}

/// Checks a stored window against the compiled one.
fn expect_window(
    index: usize,
    what: [&'static str; 5],
    found: &Window,
    compiled: &Window,
) -> Result<(), Error> {
    expect(index, what[0], found.k_h, compiled.k_h)?;
    expect(index, what[1], found.k_w, compiled.k_w)?;
    expect(index, what[2], found.stride_h, compiled.stride_h)?;
    expect(index, what[3], found.stride_w, compiled.stride_w)?;
    expect(
        index,
        what[4],
        usize::from(found.padding == Padding::Same),
        usize::from(compiled.padding == Padding::Same),
    )
}

/// Depthwise convolution: `IH × IW × C` input, `M` output channels per input channel, a
/// `KH × KW` kernel with strides `SH` and `SW`, same padding if `SAME`; the fused activation
/// (its output range) comes from the model. With `COVERED`, compiled for a conv whose every
/// channel goes through the four-channel kernels
/// ([`crate::kernels::depthwise::covered_by_quads`], checked when the model loads), the other
/// ways left out.
#[derive(Debug, Clone, Copy)]
pub struct DepthwiseConv2d<
    'a,
    const IH: usize,
    const IW: usize,
    const C: usize,
    const M: usize,
    const KH: usize,
    const KW: usize,
    const SH: usize,
    const SW: usize,
    const SAME: bool,
    const COVERED: bool = false,
> {
    weights: &'a [u8],
    requant: ChannelRequant<'a>,
    input_offset: i32,
}

impl<
        'a,
        const IH: usize,
        const IW: usize,
        const C: usize,
        const M: usize,
        const KH: usize,
        const KW: usize,
        const SH: usize,
        const SW: usize,
        const SAME: bool,
        const COVERED: bool,
    > DepthwiseConv2d<'a, IH, IW, C, M, KH, KW, SH, SW, SAME, COVERED>
{
    const GEOMETRY: DepthwiseGeometry = DepthwiseGeometry {
        in_h: IH,
        in_w: IW,
        in_c: C,
        multiplier: M,
        window: window(KH, KW, SH, SW, SAME),
    };
    const SHAPE: () = assert!(
        C > 0
            && M > 0
            && SH > 0
            && SW > 0
            && Self::GEOMETRY.out_h() > 0
            && Self::GEOMETRY.out_w() > 0,
        "every dimension must be positive and a valid kernel must fit in the input"
    );
    const IN_PLACE: () = assert!(
        in_place_fits(&Self::GEOMETRY),
        "a depthwise conv over its input needs a multiplier of 1, whole groups of four channels and a padded copy that fits"
    );
}

impl<
        'a,
        const IH: usize,
        const IW: usize,
        const C: usize,
        const M: usize,
        const KH: usize,
        const KW: usize,
        const SH: usize,
        const SW: usize,
        const SAME: bool,
        const COVERED: bool,
    > Layer<'a> for DepthwiseConv2d<'a, IH, IW, C, M, KH, KW, SH, SW, SAME, COVERED>
{
    const IN: usize = IH * IW * C;
    const OUT: usize = Self::GEOMETRY.out_h() * Self::GEOMETRY.out_w() * C * M;
    const PATCH_WORDS: usize = depthwise_scratch_words(&Self::GEOMETRY);
    const TYPE: &'static str = "depthwise_conv2d";

    fn from_file(file: &StackFile<'a>, index: usize) -> Result<Self, Error> {
        let () = Self::SHAPE;
        let Op::DepthwiseConv2d(d) = op_at(file, index, Self::TYPE)? else {
            return Err(Error::Malformed {
                what: "operation type",
            });
        };
        let g = d.geometry();
        expect(index, "depthwise input rows", g.in_h, IH)?;
        expect(index, "depthwise input columns", g.in_w, IW)?;
        expect(index, "depthwise input channels", g.in_c, C)?;
        expect(index, "depthwise multiplier", g.multiplier, M)?;
        expect_window(
            index,
            [
                "depthwise kernel rows",
                "depthwise kernel columns",
                "depthwise row stride",
                "depthwise column stride",
                "depthwise padding (0 valid, 1 same)",
            ],
            &g.window,
            &Self::GEOMETRY.window,
        )?;
        if COVERED && !depthwise_covered(file, index) {
            return Err(Error::OpMismatch {
                op: index as u16,
                what: "depthwise channels through the four-channel kernels (0 no, 1 yes)",
                found: 0,
                compiled: 1,
            });
        }
        Ok(Self {
            weights: d.params.weights,
            requant: ChannelRequant::from_params_clamped(&d.params, d.min, d.max),
            input_offset: input_offset(file, index),
        })
    }

    fn run(&self, input: &[i8], patch: &mut [u32], output: &mut [i8]) {
        depthwise_i8::<COVERED>(
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

impl<
        'a,
        const IH: usize,
        const IW: usize,
        const C: usize,
        const M: usize,
        const KH: usize,
        const KW: usize,
        const SH: usize,
        const SW: usize,
        const SAME: bool,
        const COVERED: bool,
    > OverInput<'a> for DepthwiseConv2d<'a, IH, IW, C, M, KH, KW, SH, SW, SAME, COVERED>
{
    fn run_over(&self, map: &mut [i8], patch: &mut [u32]) {
        let () = Self::IN_PLACE;
        depthwise_i8_in_place::<COVERED>(
            &Self::GEOMETRY,
            map,
            self.input_offset,
            self.weights,
            &self.requant,
            patch,
        );
    }
}

/// Elementwise addition (TFLite's int8 ADD) of the previous output and tensor `OTHER` (0 the
/// model's input, `k + 1` the output of operation `k`), both `H × W × C`; its requantization
/// and clamp come from the model. It reads two tensors: a network calls [`Add::run_add`];
/// [`Layer::run`], which has one input, writes nothing.
#[derive(Debug, Clone, Copy)]
pub struct Add<const H: usize, const W: usize, const C: usize, const OTHER: usize> {
    params: crate::kernels::add::AddParams,
}

impl<const H: usize, const W: usize, const C: usize, const OTHER: usize> Add<H, W, C, OTHER> {
    const SHAPE: () = assert!(H * W * C > 0, "every dimension must be positive");

    /// Computes `output` from `previous` (the previous output) and `other` (tensor
    /// `OTHER`), `H × W × C` values each, with `patch` ([`Layer::PATCH_WORDS`]) holding its
    /// tables ([`crate::kernels::add::add`]). Slices of other lengths compute less, never
    /// panic.
    #[inline(always)]
    pub fn run_add(&self, previous: &[i8], other: &[i8], patch: &mut [u32], output: &mut [i8]) {
        crate::kernels::add::add(&self.params, previous, other, patch, output);
    }
}

impl<'a, const H: usize, const W: usize, const C: usize, const OTHER: usize> Layer<'a>
    for Add<H, W, C, OTHER>
{
    const IN: usize = H * W * C;
    const OUT: usize = H * W * C;
    const PATCH_WORDS: usize = crate::kernels::add::ADD_SCRATCH_WORDS;
    const TYPE: &'static str = "add";

    fn from_file(file: &StackFile<'a>, index: usize) -> Result<Self, Error> {
        let () = Self::SHAPE;
        let Op::Add(a) = op_at(file, index, Self::TYPE)? else {
            return Err(Error::Malformed {
                what: "operation type",
            });
        };
        expect(index, "add rows", a.h.into(), H)?;
        expect(index, "add columns", a.w.into(), W)?;
        expect(index, "add channels", a.channels.into(), C)?;
        expect(index, "add's other tensor", a.other.into(), OTHER)?;
        let params =
            super::stages::add_params(file, index).ok_or(Error::Malformed { what: "add" })?;
        Ok(Self { params })
    }

    /// Writes nothing: an add reads two tensors ([`Add::run_add`]).
    fn run(&self, _input: &[i8], _patch: &mut [u32], _output: &mut [i8]) {}
}

/// Tensor `FROM` (`H × W × C`; 0 the model's input, `k + 1` the output of operation `k`)
/// again, for the next operation to read: a branch of the graph. It computes nothing; a
/// network hands the next layer that tensor's buffer.
#[derive(Debug, Clone, Copy)]
pub struct Branch<const H: usize, const W: usize, const C: usize, const FROM: usize>;

impl<'a, const H: usize, const W: usize, const C: usize, const FROM: usize> Layer<'a>
    for Branch<H, W, C, FROM>
{
    const IN: usize = H * W * C;
    const OUT: usize = H * W * C;
    const PATCH_WORDS: usize = 0;
    const TYPE: &'static str = "branch";

    fn from_file(file: &StackFile<'a>, index: usize) -> Result<Self, Error> {
        let Op::Branch(b) = op_at(file, index, Self::TYPE)? else {
            return Err(Error::Malformed {
                what: "operation type",
            });
        };
        expect(index, "branch rows", b.h.into(), H)?;
        expect(index, "branch columns", b.w.into(), W)?;
        expect(index, "branch channels", b.channels.into(), C)?;
        expect(index, "branch tensor", b.from.into(), FROM)?;
        Ok(Self)
    }

    /// Computes nothing: its output is its tensor, in that tensor's buffer.
    fn run(&self, _input: &[i8], _patch: &mut [u32], _output: &mut [i8]) {}
}

/// Average pooling of an `IH × IW × C` input over `KH × KW` windows with strides `SH` and
/// `SW`, same padding if `SAME` (padding not counted); the output range comes from the model.
#[derive(Debug, Clone, Copy)]
pub struct AvgPool2d<
    const IH: usize,
    const IW: usize,
    const C: usize,
    const KH: usize,
    const KW: usize,
    const SH: usize,
    const SW: usize,
    const SAME: bool,
> {
    min: i8,
    max: i8,
}

impl<
        const IH: usize,
        const IW: usize,
        const C: usize,
        const KH: usize,
        const KW: usize,
        const SH: usize,
        const SW: usize,
        const SAME: bool,
    > AvgPool2d<IH, IW, C, KH, KW, SH, SW, SAME>
{
    const GEOMETRY: AvgPoolGeometry = AvgPoolGeometry {
        in_h: IH,
        in_w: IW,
        channels: C,
        window: window(KH, KW, SH, SW, SAME),
    };
    const SHAPE: () = assert!(
        C > 0 && SH > 0 && SW > 0 && Self::GEOMETRY.out_h() > 0 && Self::GEOMETRY.out_w() > 0,
        "every dimension must be positive and a valid window must fit in the input"
    );
}

impl<
        'a,
        const IH: usize,
        const IW: usize,
        const C: usize,
        const KH: usize,
        const KW: usize,
        const SH: usize,
        const SW: usize,
        const SAME: bool,
    > Layer<'a> for AvgPool2d<IH, IW, C, KH, KW, SH, SW, SAME>
{
    const IN: usize = IH * IW * C;
    const OUT: usize = Self::GEOMETRY.out_h() * Self::GEOMETRY.out_w() * C;
    const PATCH_WORDS: usize = C;
    const TYPE: &'static str = "avgpool2d";

    fn from_file(file: &StackFile<'a>, index: usize) -> Result<Self, Error> {
        let () = Self::SHAPE;
        let Op::AvgPool2d(p) = op_at(file, index, Self::TYPE)? else {
            return Err(Error::Malformed {
                what: "operation type",
            });
        };
        let g = p.geometry();
        expect(index, "avgpool2d input rows", g.in_h, IH)?;
        expect(index, "avgpool2d input columns", g.in_w, IW)?;
        expect(index, "avgpool2d channels", g.channels, C)?;
        expect_window(
            index,
            [
                "avgpool2d window rows",
                "avgpool2d window columns",
                "avgpool2d row stride",
                "avgpool2d column stride",
                "avgpool2d padding (0 valid, 1 same)",
            ],
            &g.window,
            &Self::GEOMETRY.window,
        )?;
        Ok(Self {
            min: p.min,
            max: p.max,
        })
    }

    fn run(&self, input: &[i8], patch: &mut [u32], output: &mut [i8]) {
        average_pool(&Self::GEOMETRY, input, self.min, self.max, patch, output);
    }
}

/// Fully connected: `I` inputs, `U` units, fused ReLU if `RELU`.
#[derive(Debug, Clone, Copy)]
pub struct Dense<'a, const I: usize, const U: usize, const RELU: bool> {
    part: DensePart<'a>,
}

impl<'a, const I: usize, const U: usize, const RELU: bool> Dense<'a, I, U, RELU> {
    const SHAPE: () = assert!(I > 0 && U > 0, "every dimension must be positive");

    /// Its [`DensePart`], field by field (its sizes the constants they are; and no copy of
    /// the whole struct, which would call `memcpy`).
    #[inline(always)]
    fn part(&self) -> DensePart<'a> {
        let p = &self.part;
        DensePart {
            inputs: I,
            units: U,
            weights: p.weights,
            wide: p.wide,
            offset_terms: p.offset_terms,
            requant: ChannelRequant {
                bias: p.requant.bias,
                multiplier: p.requant.multiplier,
                shift: p.requant.shift,
                output_offset: p.requant.output_offset,
                activation_min: p.requant.activation_min,
                activation_max: p.requant.activation_max,
            },
            input_offset: p.input_offset,
            monotonic: p.monotonic,
        }
    }
}

impl<'a, const I: usize, const U: usize, const RELU: bool> Layer<'a> for Dense<'a, I, U, RELU> {
    const IN: usize = I;
    const OUT: usize = U;
    const PATCH_WORDS: usize = dense_words(I, U, Pixels::BUILT);
    const TYPE: &'static str = "dense";

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
            part: dense_part(file, index, &d),
        })
    }

    fn run(&self, input: &[i8], patch: &mut [u32], output: &mut [i8]) {
        let parts = Parts {
            first: 0,
            input: (1, 1, I),
            conv: None,
            pool: 0,
            dense: Some(self.part()),
            add: None,
        };
        run_general::<Unknown>(&parts, input, patch, output);
    }
}

impl<'a, const I: usize, const U: usize> Logits<'a> for Dense<'a, I, U, false> {
    fn run_logits(&self, input: &[i8], patch: &mut [u32], logits: &mut [i32]) {
        let parts = Parts {
            first: 0,
            input: (1, 1, I),
            conv: None,
            pool: 0,
            dense: Some(self.part()),
            add: None,
        };
        run_general_logits::<Unknown>(&parts, input, patch, logits);
    }
}

/// A layer that produces values position by position, so that a fused stage can take it:
/// a conv, a max pool, or a conv with its max pool ([`ConvPool`]).
pub trait Producer<'a>: Layer<'a> {
    /// Values in one conv patch (0 without a conv).
    const TAPS: usize;
    /// Whether it has a conv of one input channel.
    const ONE_CHANNEL: bool;
    /// Values per output position.
    const CHANNELS: usize;
    /// Its max pool's window side (1 without a pool).
    const POOL: usize;
    /// The stage it computes, with its parameters.
    fn parts(&self) -> Parts<'a>;
}

impl<
        'a,
        const IH: usize,
        const IW: usize,
        const IC: usize,
        const KH: usize,
        const KW: usize,
        const F: usize,
        const S: usize,
        const SAME: bool,
        const RELU: bool,
    > Producer<'a> for Conv2d<'a, IH, IW, IC, KH, KW, F, S, SAME, RELU>
{
    const TAPS: usize = KH * KW * IC;
    const ONE_CHANNEL: bool = IC == 1;
    const CHANNELS: usize = F;
    const POOL: usize = 1;

    fn parts(&self) -> Parts<'a> {
        Parts {
            first: 0,
            input: (IH, IW, IC),
            conv: Some(ConvPart {
                geometry: Self::GEOMETRY,
                weights: self.weights,
                wide: self.wide,
                requant: self.requant,
                input_offset: self.input_offset,
            }),
            pool: 0,
            dense: None,
            add: None,
        }
    }
}

impl<'a, const IH: usize, const IW: usize, const C: usize, const P: usize> Producer<'a>
    for MaxPool2d<IH, IW, C, P>
{
    const TAPS: usize = 0;
    const ONE_CHANNEL: bool = false;
    const CHANNELS: usize = C;
    const POOL: usize = P;

    fn parts(&self) -> Parts<'a> {
        Parts {
            first: 0,
            input: (IH, IW, C),
            conv: None,
            pool: P,
            dense: None,
            add: None,
        }
    }
}

/// A conv and the max pool after it, fused (a stage of [`super::stages`]): the pooled map
/// is written, never the conv's. `C` is a [`Conv2d`], `P` a [`MaxPool2d`] over its output.
#[derive(Debug, Clone, Copy)]
pub struct ConvPool<C, P> {
    conv: C,
    pool: P,
}

impl<'a, C: Producer<'a>, P: Producer<'a>> Layer<'a> for ConvPool<C, P> {
    const IN: usize = C::IN;
    const OUT: usize = P::OUT;
    const PATCH_WORDS: usize = general_words(
        (C::TAPS, C::ONE_CHANNEL),
        C::CHANNELS,
        (0, 0),
        P::POOL,
        Pixels::BUILT,
    );
    const TYPE: &'static str = "conv2d+maxpool2d";
    const OPS: usize = 2;

    fn from_file(file: &StackFile<'a>, index: usize) -> Result<Self, Error> {
        let () = Self::SHAPE;
        let (conv, pool) = pair_from_file(file, index)?;
        Ok(Self { conv, pool })
    }

    fn run(&self, input: &[i8], patch: &mut [u32], output: &mut [i8]) {
        run_general::<Unknown>(&self.parts(), input, patch, output);
    }
}

impl<'a, C: Producer<'a>, P: Producer<'a>> ConvPool<C, P> {
    const SHAPE: () = assert!(
        C::OUT == P::IN && C::TAPS > 0 && P::TAPS == 0 && C::OPS == 1 && P::OPS == 1,
        "a conv, then a max pool over its output"
    );
}

impl<'a, C: Producer<'a>, P: Producer<'a>> Producer<'a> for ConvPool<C, P> {
    const TAPS: usize = C::TAPS;
    const ONE_CHANNEL: bool = C::ONE_CHANNEL;
    const CHANNELS: usize = C::CHANNELS;
    const POOL: usize = P::POOL;

    fn parts(&self) -> Parts<'a> {
        Parts {
            pool: self.pool.parts().pool,
            ..self.conv.parts()
        }
    }
}

/// A conv, max pool or [`ConvPool`] (`P`) and the dense layer of `I` inputs and `U` outputs
/// after it, fused (a stage of [`super::stages`]): the dense layer accumulates each
/// position's values as they are produced, skipping positions whose values are all zero.
#[derive(Debug, Clone, Copy)]
pub struct Streamed<'a, P, const I: usize, const U: usize, const RELU: bool> {
    producer: P,
    dense: Dense<'a, I, U, RELU>,
}

impl<'a, P: Producer<'a>, const I: usize, const U: usize, const RELU: bool> Layer<'a>
    for Streamed<'a, P, I, U, RELU>
{
    const IN: usize = P::IN;
    const OUT: usize = U;
    const PATCH_WORDS: usize = general_words(
        (P::TAPS, P::ONE_CHANNEL),
        P::CHANNELS,
        (I, U),
        P::POOL,
        Pixels::BUILT,
    );
    const TYPE: &'static str = "stage+dense";
    const OPS: usize = P::OPS + 1;

    fn from_file(file: &StackFile<'a>, index: usize) -> Result<Self, Error> {
        let () = <Self as Streamed3>::SHAPE;
        let (producer, dense) = pair_from_file(file, index)?;
        Ok(Self { producer, dense })
    }

    fn run(&self, input: &[i8], patch: &mut [u32], output: &mut [i8]) {
        let parts = Parts {
            dense: Some(self.dense.part()),
            ..self.producer.parts()
        };
        run_general::<Unknown>(&parts, input, patch, output);
    }
}

impl<'a, P: Producer<'a>, const I: usize, const U: usize> Logits<'a>
    for Streamed<'a, P, I, U, false>
{
    fn run_logits(&self, input: &[i8], patch: &mut [u32], logits: &mut [i32]) {
        let parts = Parts {
            dense: Some(self.dense.part()),
            ..self.producer.parts()
        };
        run_general_logits::<Unknown>(&parts, input, patch, logits);
    }
}

/// The compile-time shape check of [`Streamed`].
trait Streamed3 {
    const SHAPE: ();
}

impl<'a, P: Producer<'a>, const I: usize, const U: usize, const RELU: bool> Streamed3
    for Streamed<'a, P, I, U, RELU>
{
    const SHAPE: () = assert!(P::OUT == I, "the dense layer reads what the stage produces");
}

/// The first layer's fast path: a one-channel `IH × IW` input, a 3×3 stride-1 valid conv
/// of `F` filters (ReLU if `RELU`), a 2×2 max pool and the network's last dense layer of `U`
/// outputs (ReLU if `DRELU`), as [`Stream3x3`] computes them ([`super::stages::Kernel`]'s
/// `Stream3x3`): its working memory, a [`StreamScratch`], is on the stack. With `FAST`, only
/// the requantization of a ReLU at the conv's zero point with right shifts is compiled in
/// ([`fast_requant`], checked when the model loads; the firmware's build script sets it
/// where the model has it).
#[derive(Debug, Clone, Copy)]
pub struct ConvPoolDense3x3<
    'a,
    const IH: usize,
    const IW: usize,
    const F: usize,
    const U: usize,
    const RELU: bool,
    const DRELU: bool,
    const FAST: bool = false,
    P = NoProbe,
> {
    layers: StreamLayers<'a>,
    /// The dense accumulators of an all-background input ([`background_start`]).
    start: [i32; U],
    /// The index of its conv in the model (what it tells the probe `P`).
    first: usize,
    probe: PhantomData<P>,
}

impl<
        'a,
        const IH: usize,
        const IW: usize,
        const F: usize,
        const U: usize,
        const RELU: bool,
        const DRELU: bool,
        const FAST: bool,
        P,
    > ConvPoolDense3x3<'a, IH, IW, F, U, RELU, DRELU, FAST, P>
{
    /// Dense inputs: the pooled map.
    pub const INPUTS: usize = (IH - 2) / 2 * ((IW - 2) / 2) * F;
    /// Bytes of its working memory on the stack.
    pub const STACK_BYTES: usize = StreamScratch::<F, U>::BYTES;
    const SHAPE: () = assert!(
        IH >= 4 && IW >= 4 && F > 0 && U > 0,
        "the pooled map must not be empty"
    );
}

impl<
        'a,
        const IH: usize,
        const IW: usize,
        const F: usize,
        const U: usize,
        const RELU: bool,
        const DRELU: bool,
        const FAST: bool,
        P: Probe,
    > Layer<'a> for ConvPoolDense3x3<'a, IH, IW, F, U, RELU, DRELU, FAST, P>
{
    const IN: usize = IH * IW;
    const OUT: usize = U;
    const PATCH_WORDS: usize = 0;
    const TYPE: &'static str = "conv2d+maxpool2d+dense";
    const OPS: usize = 3;

    fn from_file(file: &StackFile<'a>, index: usize) -> Result<Self, Error> {
        let () = Self::SHAPE;
        let mut layers = ConvPool3x3::<'a, IH, IW, F, RELU>::from_file(file, index)?.layers;
        let Op::Dense(d) = op_at(file, index + 2, "dense")? else {
            return Err(Error::Malformed {
                what: "operation type",
            });
        };
        let dense = index + 2;
        expect(dense, "dense inputs", d.inputs as usize, Self::INPUTS)?;
        expect(dense, "dense units", d.units.into(), U)?;
        expect(
            dense,
            "dense ReLU (0 no, 1 yes)",
            d.relu.into(),
            DRELU.into(),
        )?;
        // Its outputs are the logits.
        expect(dense + 1, "operations", file.ops.len(), dense + 1)?;
        layers.dense_input_offset = input_offset(file, dense);
        layers.dense_weights = d.params.weights;
        layers.dense = ChannelRequant::from_params(&d.params, d.relu);
        check_fast::<FAST>(&layers, F, index)?;
        let mut stage = Self {
            layers,
            start: [0; U],
            first: index,
            probe: PhantomData,
        };
        background_start::<F, U>(&stage.layers, IH, IW, &mut stage.start);
        Ok(stage)
    }

    fn run(&self, input: &[i8], _patch: &mut [u32], output: &mut [i8]) {
        let Some(output) = output.first_chunk_mut::<U>() else {
            return;
        };
        let mut scratch = StreamScratch::<F, U>::new();
        let start = &self.start;
        with_stream!(<F, U, FAST>(&self.layers, IH, IW, input, &mut scratch, start), |stream| {
            stream.run::<P>(output, self.first)
        });
    }
}

impl<
        'a,
        const IH: usize,
        const IW: usize,
        const F: usize,
        const U: usize,
        const RELU: bool,
        const FAST: bool,
        P: Probe,
    > Logits<'a> for ConvPoolDense3x3<'a, IH, IW, F, U, RELU, false, FAST, P>
{
    fn run_logits(&self, input: &[i8], _patch: &mut [u32], logits: &mut [i32]) {
        let Some(logits) = logits.first_chunk_mut::<U>() else {
            return;
        };
        let mut scratch = StreamScratch::<F, U>::new();
        let start = &self.start;
        with_stream!(<F, U, FAST>(&self.layers, IH, IW, input, &mut scratch, start), |stream| {
            stream.run_logits::<P>(logits, self.first)
        });
    }
}

/// The first layer's fast path with its pooled map kept: a one-channel `IH × IW` input, a
/// 3×3 stride-1 valid conv of `F` filters (ReLU if `RELU`) and a 2×2 max pool, as
/// [`Stream3x3`] computes them ([`Stream3x3::conv_pool_into`]); its working memory, a
/// [`StreamScratch`], is on the stack. `FAST` as for [`ConvPoolDense3x3`].
#[derive(Debug, Clone, Copy)]
pub struct ConvPool3x3<
    'a,
    const IH: usize,
    const IW: usize,
    const F: usize,
    const RELU: bool,
    const FAST: bool = false,
    P = NoProbe,
> {
    layers: StreamLayers<'a>,
    /// The index of its conv in the model (what it tells the probe `P`).
    first: usize,
    probe: PhantomData<P>,
}

impl<
        'a,
        const IH: usize,
        const IW: usize,
        const F: usize,
        const RELU: bool,
        const FAST: bool,
        P,
    > ConvPool3x3<'a, IH, IW, F, RELU, FAST, P>
{
    /// Bytes of its working memory on the stack.
    pub const STACK_BYTES: usize = StreamScratch::<F, 0>::BYTES;
    const POOLED: (usize, usize) = ((IH - 2) / 2, (IW - 2) / 2);
    const SHAPE: () = assert!(
        IH >= 4 && IW >= 4 && F > 0,
        "the pooled map must not be empty"
    );
}

impl<
        'a,
        const IH: usize,
        const IW: usize,
        const F: usize,
        const RELU: bool,
        const FAST: bool,
        P: Probe,
    > Layer<'a> for ConvPool3x3<'a, IH, IW, F, RELU, FAST, P>
{
    const IN: usize = IH * IW;
    const OUT: usize = Self::POOLED.0 * Self::POOLED.1 * F;
    const PATCH_WORDS: usize = 0;
    const TYPE: &'static str = "conv2d+maxpool2d";
    const OPS: usize = 2;

    fn from_file(file: &StackFile<'a>, index: usize) -> Result<Self, Error> {
        let () = Self::SHAPE;
        let conv = Conv2d::<'a, IH, IW, 1, 3, 3, F, 1, false, RELU>::from_file(file, index)?;
        check_pool2(file, index + 1, IH - 2, IW - 2, F)?;
        let stage = Self {
            layers: StreamLayers {
                input_offset: conv.input_offset,
                conv_weights: conv.weights,
                conv: conv.requant,
                // The pooled values come back with the conv's zero point.
                dense_input_offset: -conv.requant.output_offset,
                dense_weights: &[],
                dense: conv.requant,
            },
            first: index,
            probe: PhantomData,
        };
        check_fast::<FAST>(&stage.layers, F, index)?;
        Ok(stage)
    }

    fn run(&self, input: &[i8], patch: &mut [u32], output: &mut [i8]) {
        let rows = Self::POOLED.0;
        self.with_rows(input, patch, rows, &mut |write| {
            write(0..rows, &mut *output)
        });
    }
}

impl<
        'a,
        const IH: usize,
        const IW: usize,
        const F: usize,
        const RELU: bool,
        const FAST: bool,
        P: Probe,
    > RowSource<'a> for ConvPool3x3<'a, IH, IW, F, RELU, FAST, P>
{
    fn with_rows(
        &self,
        input: &[i8],
        _patch: &mut [u32],
        held: usize,
        consume: &mut dyn FnMut(&mut RowWriter<'_>),
    ) {
        let mut scratch = StreamScratch::<F, 0>::new();
        with_stream!(<F, 0, FAST>(&self.layers, IH, IW, input, &mut scratch, &[]), |stream| {
            consume(&mut |rows, out| {
                P::enter(self.first);
                pooled_rows(&mut stream, MapRows::ring(out, held), rows);
            })
        });
    }
}

/// With `FAST`, checks that the one-channel 3×3 stage from operation `index`, `layers` (of
/// `filters` filters), requantizes the fast way ([`fast_requant`]).
///
/// # Errors
/// [`Error::OpMismatch`] (`what` = `"stage facts"`) where it does not.
fn check_fast<const FAST: bool>(
    layers: &StreamLayers<'_>,
    filters: usize,
    index: usize,
) -> Result<(), Error> {
    if FAST && !fast_requant(layers, filters) {
        return Err(Error::OpMismatch {
            op: index as u16,
            what: "stage facts",
            found: facts::holding(facts::known(facts::NONE, facts::FAST_POOL, false)),
            compiled: facts::holding(facts::known(facts::NONE, facts::FAST_POOL, true)),
        });
    }
    Ok(())
}

/// Writes rows `rows` of the pooled map of `stream` into `output`'s rows, position by
/// position.
#[inline(always)]
fn pooled_rows<const F: usize, const PAIRED: bool, const FAST: bool>(
    stream: &mut Stream3x3<'_, '_, F, 0, PAIRED, FAST>,
    output: MapRows<'_, &mut [i8]>,
    rows: Range<usize>,
) {
    let (pooled_rows, cols) = stream.pooled_shape();
    for row in rows.start..rows.end.min(pooled_rows) {
        let start = output.slot(row) * cols * F;
        let Some(out_row) = output.data.get_mut(start..start + cols * F) else {
            return;
        };
        for (col, out) in out_row.chunks_exact_mut(F).enumerate() {
            if let Some(out) = out.first_chunk_mut::<F>() {
                stream.conv_pool_into(row, col, out);
            }
        }
    }
}

/// Writes output rows `rows` of a stage into a buffer holding the map or the last rows of
/// it (row `r` at `r % held`, `held` given to [`RowSource::with_rows`]).
pub type RowWriter<'w> = dyn FnMut(Range<usize>, &mut [i8]) + 'w;

/// A stage that can write its output map a range of rows at a time, into the whole map or a
/// ring buffer of its rows: the first of two stages run as one ([`Chain`]).
pub trait RowSource<'a>: Layer<'a> {
    /// Sets up the stage's working memory for `input` (`IN` values) once, then calls
    /// `consume` with a [`RowWriter`] into buffers of `held` rows.
    fn with_rows(
        &self,
        input: &[i8],
        patch: &mut [u32],
        held: usize,
        consume: &mut dyn FnMut(&mut RowWriter<'_>),
    );
}

impl<'a, T: Producer<'a>> RowSource<'a> for T {
    fn with_rows(
        &self,
        input: &[i8],
        patch: &mut [u32],
        held: usize,
        consume: &mut dyn FnMut(&mut RowWriter<'_>),
    ) {
        let parts = self.parts();
        consume(&mut |rows, out| {
            run_general_rows::<Unknown>(&parts, input, patch, MapRows::ring(out, held), rows);
        });
    }
}

/// A stage computed by [`super::stages::run_general`] from its [`Parts`]: the second of
/// two stages run as one ([`Chain`]).
pub trait GeneralStage<'a>: Layer<'a> {
    /// What is known of the stage at compile time ([`Specialized`]).
    type Known: KnownFacts;

    /// The stage, with its parameters.
    fn stage_parts(&self) -> Parts<'a>;
}

impl<'a, T: Producer<'a>> GeneralStage<'a> for T {
    type Known = Unknown;

    fn stage_parts(&self) -> Parts<'a> {
        self.parts()
    }
}

impl<'a, P: Producer<'a>, const I: usize, const U: usize, const RELU: bool> GeneralStage<'a>
    for Streamed<'a, P, I, U, RELU>
{
    type Known = Unknown;

    fn stage_parts(&self) -> Parts<'a> {
        Parts {
            dense: Some(self.dense.part()),
            ..self.producer.parts()
        }
    }
}

impl<'a, const I: usize, const U: usize, const RELU: bool> GeneralStage<'a>
    for Dense<'a, I, U, RELU>
{
    type Known = Unknown;

    fn stage_parts(&self) -> Parts<'a> {
        Parts {
            first: 0,
            input: (1, 1, I),
            conv: None,
            pool: 0,
            dense: Some(self.part()),
            add: None,
        }
    }
}

/// A stage (`S`: a conv, a max pool, both, a dense layer or a streamed one) and the add
/// after it (`A`, an [`Add`] of the stage's output and tensor `OTHER`) computed in place
/// (the plan's [`super::stages::Stage::add`]): its output buffer holds tensor `OTHER`, and
/// each value the stage computes is added to the one it replaces, so the stage's own
/// output is never held. Its working memory is the stage's and the add's tables.
#[derive(Debug, Clone, Copy)]
pub struct AddInPlace<S, A> {
    stage: S,
    add: A,
}

impl<
        'a,
        S: GeneralStage<'a>,
        const H: usize,
        const W: usize,
        const C: usize,
        const OTHER: usize,
    > AddInPlace<S, Add<H, W, C, OTHER>>
{
    const SHAPE: () = assert!(S::OUT == H * W * C, "the add reads what the stage produces");
}

impl<
        'a,
        S: GeneralStage<'a>,
        const H: usize,
        const W: usize,
        const C: usize,
        const OTHER: usize,
    > Layer<'a> for AddInPlace<S, Add<H, W, C, OTHER>>
{
    const IN: usize = S::IN;
    const OUT: usize = H * W * C;
    const PATCH_WORDS: usize = S::PATCH_WORDS + crate::kernels::add::ADD_SCRATCH_WORDS;
    const TYPE: &'static str = "stage+add";
    const OPS: usize = S::OPS + 1;

    fn from_file(file: &StackFile<'a>, index: usize) -> Result<Self, Error> {
        let () = Self::SHAPE;
        let (stage, add) = pair_from_file(file, index)?;
        Ok(Self { stage, add })
    }

    /// Computes the sums into `output`, which holds tensor `OTHER` (`OUT` values) and gets
    /// the add's output.
    fn run(&self, input: &[i8], patch: &mut [u32], output: &mut [i8]) {
        run_general::<Unknown>(&self.stage_parts(), input, patch, output);
    }
}

impl<
        'a,
        S: GeneralStage<'a>,
        const H: usize,
        const W: usize,
        const C: usize,
        const OTHER: usize,
    > GeneralStage<'a> for AddInPlace<S, Add<H, W, C, OTHER>>
{
    type Known = Unknown;

    fn stage_parts(&self) -> Parts<'a> {
        Parts {
            add: Some(self.add.params),
            ..self.stage.stage_parts()
        }
    }
}

/// A stage `S` computed with the facts `F` known at compile time ([`super::facts`]): the
/// firmware's build script finds them in the model ([`facts_of`]) and wraps the stage in
/// this, so that only the code the stage runs is compiled in. The facts are checked
/// against the model when it loads. The stage tells the probe `P` which of its operations
/// it computes ([`crate::probe`]; by default none).
#[derive(Debug, Clone, Copy)]
pub struct Specialized<S, const F: Facts, P = NoProbe> {
    stage: S,
    /// The index of the stage's first operation.
    first: usize,
    probe: PhantomData<P>,
}

impl<S, const F: Facts, P> Specialized<S, F, P> {
    /// The stage's parts, its operations' indices with them.
    fn parts_at<'a>(&self, parts: Parts<'a>) -> Parts<'a> {
        Parts {
            first: self.first,
            ..parts
        }
    }
}

impl<'a, S: GeneralStage<'a>, const F: Facts, P: Probe> Layer<'a> for Specialized<S, F, P> {
    const IN: usize = S::IN;
    const OUT: usize = S::OUT;
    const PATCH_WORDS: usize = S::PATCH_WORDS;
    const TYPE: &'static str = S::TYPE;
    const OPS: usize = S::OPS;

    /// As `S`'s, then [`Error::OpMismatch`] (`what` = `"stage facts"`) where the stage
    /// of `file` has other facts than `F` says.
    fn from_file(file: &StackFile<'a>, index: usize) -> Result<Self, Error> {
        let stage = S::from_file(file, index)?;
        let logits = index + S::OPS == file.ops.len();
        let found = facts_of(&stage.stage_parts(), Pixels::BUILT, logits);
        if !facts::agree(found, F) {
            return Err(Error::OpMismatch {
                op: index as u16,
                what: "stage facts",
                found: facts::holding(found),
                compiled: facts::holding(F),
            });
        }
        Ok(Self {
            stage,
            first: index,
            probe: PhantomData,
        })
    }

    fn run(&self, input: &[i8], patch: &mut [u32], output: &mut [i8]) {
        run_general::<Known<F, P>>(&self.stage_parts(), input, patch, output);
    }
}

impl<'a, S: GeneralStage<'a>, const F: Facts, P: Probe> OverInput<'a> for Specialized<S, F, P> {
    /// A 1 × 1 conv's stage ([`run_pointwise_in_place`]; others compute nothing).
    fn run_over(&self, map: &mut [i8], patch: &mut [u32]) {
        run_pointwise_in_place::<Known<F, P>>(&self.stage_parts(), map, patch);
    }
}

impl<'a, S: GeneralStage<'a> + Logits<'a>, const F: Facts, P: Probe> Logits<'a>
    for Specialized<S, F, P>
{
    fn run_logits(&self, input: &[i8], patch: &mut [u32], logits: &mut [i32]) {
        run_general_logits::<Known<F, P>>(&self.stage_parts(), input, patch, logits);
    }
}

impl<'a, S: GeneralStage<'a>, const F: Facts, P: Probe> GeneralStage<'a> for Specialized<S, F, P> {
    type Known = Known<F, P>;

    fn stage_parts(&self) -> Parts<'a> {
        self.parts_at(self.stage.stage_parts())
    }
}

impl<'a, S: Producer<'a>, const F: Facts, P: Probe> RowSource<'a> for Specialized<S, F, P> {
    fn with_rows(
        &self,
        input: &[i8],
        patch: &mut [u32],
        held: usize,
        consume: &mut dyn FnMut(&mut RowWriter<'_>),
    ) {
        let parts = self.parts_at(self.stage.parts());
        consume(&mut |rows, out| {
            run_general_rows::<Known<F, P>>(&parts, input, patch, MapRows::ring(out, held), rows);
        });
    }
}

/// A network's first two stages run as one (the plan's [`super::stages::Stage::ring_in`]):
/// the first (`P`) writes its output rows into a ring buffer of `R` rows as the second
/// (`C`) needs them ([`super::stages::run_chain`]). Its working memory is both stages'
/// patch buffers; the ring takes the place of the first's output buffer.
#[derive(Debug, Clone, Copy)]
pub struct Chain<P, C, const R: usize> {
    first: P,
    second: C,
}

impl<'a, P: RowSource<'a>, C: GeneralStage<'a>, const R: usize> Chain<P, C, R> {
    /// Words of the patch buffer: the first stage's, then the second's.
    pub const PATCH_WORDS: usize = P::PATCH_WORDS + C::PATCH_WORDS;
    /// Bytes of the ring buffer: `R` rows of the first stage's output map of `rows` rows.
    pub const fn ring_bytes(rows: usize) -> usize {
        R * (P::OUT / rows)
    }

    /// Checks operation `index` and the next ones against both stages.
    ///
    /// # Errors
    /// As [`Layer::from_file`].
    pub fn from_file(file: &StackFile<'a>, index: usize) -> Result<Self, Error> {
        let (first, second) = pair_from_file(file, index)?;
        Ok(Self { first, second })
    }

    /// Computes the second stage's output (values or the logits) from the first's `input`,
    /// through `ring`.
    pub fn run(&self, input: &[i8], ring: &mut [i8], patch: &mut [u32], output: Out<'_>) {
        let (first_patch, patch) = patch.split_at_mut(P::PATCH_WORDS.min(patch.len()));
        let mut output = Some(output);
        self.first.with_rows(input, first_patch, R, &mut |make| {
            if let Some(output) = output.take() {
                run_chain::<C::Known>(make, &self.second.stage_parts(), ring, R, patch, output);
            }
        });
    }
}

/// The two layers of a fused stage: `A` from operation `index` of `file` on, `B` from the
/// operation after `A`'s.
fn pair_from_file<'a, A: Layer<'a>, B: Layer<'a>>(
    file: &StackFile<'a>,
    index: usize,
) -> Result<(A, B), Error> {
    let first = A::from_file(file, index)?;
    Ok((first, B::from_file(file, index + A::OPS)?))
}

/// Checks that operation `index` is a 2×2 max pool of an `in_h × in_w × channels` input.
fn check_pool2(
    file: &StackFile<'_>,
    index: usize,
    in_h: usize,
    in_w: usize,
    channels: usize,
) -> Result<(), Error> {
    let Op::MaxPool2d(p) = op_at(file, index, "maxpool2d")? else {
        return Err(Error::Malformed {
            what: "operation type",
        });
    };
    expect(index, "maxpool2d input rows", p.in_h.into(), in_h)?;
    expect(index, "maxpool2d input columns", p.in_w.into(), in_w)?;
    expect(index, "maxpool2d channels", p.channels.into(), channels)?;
    expect(index, "maxpool2d window", p.pool.into(), 2)
}

/// The larger of two sizes, for buffer sizes computed at compile time.
pub const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

//! Link-time proof that loading a model and running an inference cannot panic.
//!
//! This binary links what a firmware links — `StackFile::decode` and the typed layers of
//! `infer_core::stack::layers`, assembled as a firmware's generated code assembles them —
//! built like the firmware (release, LTO, one codegen unit). Its `#[panic_handler]` calls a function that is
//! declared but defined nowhere, so if any panic — an index out of bounds, a slice
//! out of range, an `unwrap`, a division by zero — is still reachable after
//! optimisation, the link fails with `undefined symbol: infer_core_can_panic`.
//!
//! It links the tutorial's network on its fused one-channel 3×3 stage (and that stage with
//! its pooled map kept), a typed network of the tutorial's full model layer by layer and as
//! its stages, the layers of imported models (a conv of a 10×4 kernel, depthwise convs of
//! strides 1 and 2, an average pool: MLPerf Tiny keyword spotting's and visual wake words'
//! shapes), and the run-time-shaped `stack::run`.
//!
//! The model and the pixels pass through [`black_box`]: the optimiser may not assume
//! anything about their content, so the proof holds for *any* bytes, the hostile
//! ones included, not just for the committed model. (Arithmetic overflow checks are
//! off in release builds, as in the firmware; the fuzz targets and miri, which run
//! with them on, cover overflow.)
//!
//! `cargo build --release` here must succeed; `cargo build --release --features
//! prove-check-works`, which adds one reachable panic, must fail. `cargo xtask test`
//! runs both, for every Cortex-M target.
#![no_std]
#![no_main]

use core::hint::black_box;
use core::panic::PanicInfo;
use cortex_m_rt::entry;
use infer_core::kernels::MapRows;
use infer_core::stack::facts::{self, of_list, Facts};
use infer_core::stack::layers::{
    check_op_count, max, Add, AddInPlace, AvgPool2d, Branch, Chain, Conv2d, ConvPool, ConvPool3x3,
    ConvPoolDense3x3, Dense, DepthwiseConv2d, Layer, Logits, MaxPool2d, Specialized, Streamed,
};
use infer_core::stack::stages::{regions, Out};
use infer_core::stack::Pixels;
use infer_core::stack::{run, Kernels, StackFile};
use infer_core::Error;

/// Any model: the committed one (the tutorial's network) stands in for bytes that arrived
/// over a serial line.
static MODEL: &[u8] = include_bytes!("../../../firmware-example/assets/model.bin");

extern "C" {
    /// Defined nowhere: referencing it from reachable code fails the link.
    fn infer_core_can_panic() -> !;
}

// The tutorial's full model, typed (28×28×1 → conv 32 → conv 64 → pool 2 → dense 128 → dense 10).
type Op0<'a> = Conv2d<'a, 28, 28, 1, 3, 3, 32, 1, false, true>;
type Op1<'a> = Conv2d<'a, 26, 26, 32, 3, 3, 64, 1, false, true>;
type Op2 = MaxPool2d<24, 24, 64, 2>;
type Op3<'a> = Dense<'a, 9216, 128, true>;
type Op4<'a> = Dense<'a, 128, 10, false>;
// Its stages (`stack::stages::plan`), as the firmware's build script generates them: the
// first two run as one through a ring of 4 of the first conv's 26 rows.
type Stage1<'a> = Streamed<'a, ConvPool<Op1<'a>, Op2>, 9216, 128, true>;
type Chain01<'a> = Chain<Op0<'a>, Stage1<'a>, 4>;
// two-blocks' first two stages as one: the fused one-channel stage with its pooled map kept,
// writing rows into a ring of 4, and conv + pool + dense giving the logits.
type TwoBlocks<'a> = Chain<
    ConvPool3x3<'a, 28, 28, 16, true>,
    Streamed<
        'a,
        ConvPool<Conv2d<'a, 13, 13, 16, 3, 3, 32, 1, false, true>, MaxPool2d<11, 11, 32, 2>>,
        800,
        10,
        false,
    >,
    4,
>;
// The same stages compiled for their facts, as the build script wraps them
// (`model_spec::codegen`): the first conv (one channel, 26 positions a row) writing its
// rows, the second with its pool and ReLU dense layer, two-blocks' second giving the logits.
const FOUR: bool = matches!(Pixels::BUILT, Pixels::Four);
const CONV0: Facts = of_list(&[
    (facts::CONV, true),
    (facts::POOL, false),
    (facts::POOL2, false),
    (facts::DENSE, false),
    (facts::ADD, false),
    (facts::LOGITS, false),
    (facts::FOUR, FOUR),
    (facts::ONE_CHANNEL, true),
    (facts::POINTWISE, false),
    (facts::MONOTONIC, true),
    (facts::RELU, true),
    (facts::INSIDE, true),
]);
const CONV_POOL_DENSE: Facts = of_list(&[
    (facts::CONV, true),
    (facts::POOL, true),
    (facts::POOL2, true),
    (facts::DENSE, true),
    (facts::ADD, false),
    (facts::FOUR, FOUR),
    (facts::ONE_CHANNEL, false),
    (facts::POINTWISE, false),
    (facts::MONOTONIC, true),
    (facts::RELU, true),
    (facts::EVEN_UNITS, true),
    (facts::OCTETS, true),
    (facts::INSIDE, true),
    (facts::INT8_PATCH, true),
    (facts::DENSE_MONOTONIC, true),
    (facts::DENSE_RELU, true),
]);
type KnownChain01<'a> = Chain<
    Specialized<Op0<'a>, CONV0>,
    Specialized<Stage1<'a>, { facts::known(CONV_POOL_DENSE, facts::LOGITS, false) }>,
    4,
>;
type KnownTwoBlocks<'a> = Chain<
    ConvPool3x3<'a, 28, 28, 16, true, true>,
    Specialized<
        Streamed<
            'a,
            ConvPool<Conv2d<'a, 13, 13, 16, 3, 3, 32, 1, false, true>, MaxPool2d<11, 11, 32, 2>>,
            800,
            10,
            false,
        >,
        { facts::known(CONV_POOL_DENSE, facts::LOGITS, true) },
    >,
    4,
>;
const A: usize = max(Op0::OUT, <Op2 as Layer>::OUT);
const B: usize = max(Op1::OUT, Op3::OUT);
const PATCH: usize = max(
    max(
        max(Op0::PATCH_WORDS, Op1::PATCH_WORDS),
        Chain01::PATCH_WORDS,
    ),
    max(TwoBlocks::PATCH_WORDS, KnownChain01::PATCH_WORDS),
);
// The tutorial's network on the fused one-channel 3×3 stage, and that stage with its pooled
// map kept.
type Tutorial<'a> = ConvPoolDense3x3<'a, 28, 28, 32, 10, true, false>;
// The same, compiled for the fast requantization only (as the build script compiles a
// model that has it).
type FastTutorial<'a> = ConvPoolDense3x3<'a, 28, 28, 32, 10, true, false, true>;
type FirstBlock<'a> = ConvPool3x3<'a, 28, 28, 32, true>;

/// Loads and runs the typed full model the way generated firmware code does.
fn stack_typed(
    bytes: &[u8],
    image: &[i8; 784],
    a: &mut [i8; A],
    b: &mut [i8; B],
) -> Result<[i32; 10], Error> {
    let file = StackFile::decode(bytes)?;
    check_op_count(&file, 5)?;
    let ops = (
        Op0::from_file(&file, 0)?,
        Op1::from_file(&file, 1)?,
        Op2::from_file(&file, 2)?,
        Op3::from_file(&file, 3)?,
        Op4::from_file(&file, 4)?,
    );
    let mut patch = [0u32; PATCH];
    let mut logits = [0i32; 10];
    ops.0.run(image, &mut patch, a);
    ops.1.run(a, &mut patch, b);
    ops.2.run(b, &mut patch, a);
    ops.3.run(a, &mut patch, b);
    ops.4.run_logits(b, &mut patch, &mut logits);
    let stages = (Chain01::from_file(&file, 0)?, Op4::from_file(&file, 4)?);
    let ring = &mut a[..Chain01::ring_bytes(26)];
    let out = Out::Values(MapRows::whole_mut(&mut b[..]));
    stages.0.run(image, ring, &mut patch, out);
    stages.1.run_logits(b, &mut patch, &mut logits);
    let ring = &mut a[..KnownChain01::ring_bytes(26)];
    let out = Out::Values(MapRows::whole_mut(&mut b[..]));
    KnownChain01::from_file(&file, 0)?.run(image, ring, &mut patch, out);
    Ok(logits)
}

/// The tutorial's network through the fused stages, and its first block alone.
fn stack_fused(bytes: &[u8], image: &[i8; 784], a: &mut [i8; A]) -> Result<[i32; 10], Error> {
    let file = StackFile::decode(bytes)?;
    check_op_count(&file, 3)?;
    let mut logits = [0i32; 10];
    Tutorial::from_file(&file, 0)?.run_logits(image, &mut [], &mut logits);
    FastTutorial::from_file(&file, 0)?.run_logits(image, &mut [], &mut logits);
    FirstBlock::from_file(&file, 0)?.run(image, &mut [], a);
    let mut patch = [0u32; PATCH];
    let ring = &mut a[..TwoBlocks::ring_bytes(13)];
    TwoBlocks::from_file(&file, 0)?.run(image, ring, &mut patch, Out::Logits(&mut logits));
    let ring = &mut a[..KnownTwoBlocks::ring_bytes(13)];
    let out = Out::Logits(&mut logits);
    KnownTwoBlocks::from_file(&file, 0)?.run(image, ring, &mut patch, out);
    Ok(logits)
}

// The imported models' layers (MLPerf Tiny keyword spotting's first blocks, a depthwise
// conv of stride 2 with same padding as visual wake words', and the pool and classifier).
type Kws0<'a> = Conv2d<'a, 49, 10, 1, 10, 4, 64, 2, true, true>;
type Kws1<'a> = DepthwiseConv2d<'a, 25, 5, 64, 1, 3, 3, 1, 1, true>;
/// The same conv compiled for channels that all go through the four-channel kernels.
type Kws1Covered<'a> = DepthwiseConv2d<'a, 25, 5, 64, 1, 3, 3, 1, 1, true, true>;
type Vww<'a> = DepthwiseConv2d<'a, 25, 5, 64, 2, 3, 3, 2, 2, true>;
type KwsPool = AvgPool2d<25, 5, 64, 25, 5, 25, 5, false>;
type KwsDense<'a> = Dense<'a, 64, 12, false>;
const IMPORTED: usize = max(
    max(Kws0::OUT, Kws1::OUT),
    max(<Vww as Layer>::OUT, <KwsPool as Layer>::OUT),
);
const IMPORTED_PATCH: usize = max(
    max(Kws0::PATCH_WORDS, Kws1::PATCH_WORDS),
    max(Vww::PATCH_WORDS, <KwsPool as Layer>::PATCH_WORDS),
);

/// Loads and runs the imported models' layers the way generated firmware code does.
fn stack_imported(bytes: &[u8], input: &[i8; 490]) -> Result<[i32; 12], Error> {
    let file = StackFile::decode(bytes)?;
    check_op_count(&file, 5)?;
    let ops = (
        Kws0::from_file(&file, 0)?,
        Kws1::from_file(&file, 1)?,
        Vww::from_file(&file, 2)?,
        KwsPool::from_file(&file, 3)?,
        KwsDense::from_file(&file, 4)?,
    );
    let (mut a, mut b) = ([0i8; IMPORTED], [0i8; IMPORTED]);
    let mut patch = [0u32; IMPORTED_PATCH];
    let mut logits = [0i32; 12];
    ops.0.run(input, &mut patch, &mut a);
    match Kws1Covered::from_file(&file, 1) {
        Ok(covered) => covered.run(&a, &mut patch, &mut b),
        Err(_) => ops.1.run(&a, &mut patch, &mut b),
    }
    ops.2.run(&b, &mut patch, &mut a);
    ops.3.run(&a, &mut patch, &mut b);
    ops.4.run_logits(&b, &mut patch, &mut logits);
    Ok(logits)
}

// A residual block as MLPerf Tiny ResNet-8's third: a 3×3 stride-2 conv, a branch back to
// the block's input, the 1×1 stride-2 conv of the skip path, the add, the pool, the classifier.
type ResConv<'a> = Conv2d<'a, 16, 16, 32, 3, 3, 64, 2, true, true>;
type ResBranch = Branch<16, 16, 32, 0>;
type ResSkip<'a> = Conv2d<'a, 16, 16, 32, 1, 1, 64, 2, true, false>;
type ResAdd = Add<8, 8, 64, 1>;
// The skip path's conv with the add after it, computed in place in the first conv's output.
type ResSkipAdd<'a> = AddInPlace<ResSkip<'a>, ResAdd>;
type ResPool = AvgPool2d<8, 8, 64, 8, 8, 8, 8, false>;
type ResDense<'a> = Dense<'a, 64, 10, false>;
const RES: usize = ResConv::OUT;
const RES_PATCH: usize = max(
    max(ResConv::PATCH_WORDS, ResSkip::PATCH_WORDS),
    max(
        max(<ResAdd as Layer>::PATCH_WORDS, ResSkipAdd::PATCH_WORDS),
        <ResPool as Layer>::PATCH_WORDS,
    ),
);

/// Loads and runs a residual block's layers the way generated firmware code does.
fn stack_graph(bytes: &[u8], input: &[i8; 16 * 16 * 32]) -> Result<[i32; 10], Error> {
    let file = StackFile::decode(bytes)?;
    check_op_count(&file, 6)?;
    let ops = (
        ResConv::from_file(&file, 0)?,
        ResBranch::from_file(&file, 1)?,
        ResSkip::from_file(&file, 2)?,
        ResAdd::from_file(&file, 3)?,
        ResPool::from_file(&file, 4)?,
        ResDense::from_file(&file, 5)?,
    );
    let (mut a, mut b, mut c) = ([0i8; RES], [0i8; RES], [0i8; RES]);
    let mut patch = [0u32; RES_PATCH];
    let mut logits = [0i32; 10];
    ops.0.run(input, &mut patch, &mut a);
    black_box(&ops.1);
    ops.2.run(input, &mut patch, &mut b);
    ops.3.run_add(&b, &a, &mut patch, &mut c);
    ops.4.run(&c, &mut patch, &mut a);
    ops.5.run_logits(&a[..64], &mut patch, &mut logits);
    // As the plan runs it: the add in place, the tensors in one arena (regions given at
    // run time here, so that any are proved).
    let fused = ResSkipAdd::from_file(&file, 2)?;
    let mut arena = [0i8; 2 * RES];
    let at = black_box(0..RES);
    let (dst, _) = regions(&mut arena, at.clone(), []);
    ops.0.run(input, &mut patch, dst);
    let (dst, _) = regions(&mut arena, at.clone(), []);
    fused.run(input, &mut patch, dst);
    let (dst, [src]) = regions(&mut arena, black_box(RES..2 * RES), [Some(at)]);
    ops.4.run(src, &mut patch, dst);
    Ok(logits)
}

#[panic_handler]
fn panic(_: &PanicInfo<'_>) -> ! {
    // SAFETY: never runs. The function does not exist, so a binary in which this
    // handler is reachable does not link.
    unsafe { infer_core_can_panic() }
}

#[entry]
fn main() -> ! {
    loop {
        let bytes: &[u8] = black_box(MODEL);
        let image: [i8; 784] = black_box([0; 784]);
        let (mut a, mut b) = ([0i8; A], [0i8; B]);
        black_box(stack_typed(bytes, &image, &mut a, &mut b).ok());
        let mut arena = [0i8; A + B];
        black_box(stack_fused(bytes, &image, &mut a).ok());
        black_box(stack_imported(bytes, &black_box([0; 490])).ok());
        black_box(stack_graph(bytes, &black_box([0; 16 * 16 * 32])).ok());
        if let Ok(file) = StackFile::decode(bytes) {
            let mut patch = [0u32; PATCH];
            let mut logits = [0i32; 10];
            let result = run(
                &file,
                black_box(&image),
                Kernels::Fast,
                &mut arena,
                &mut patch,
                &mut logits,
            );
            black_box(result.ok().map(|l| l.first().copied()));
            let result = run(
                &file,
                black_box(&image),
                Kernels::Reference,
                &mut arena,
                &mut patch,
                &mut logits,
            );
            black_box(result.ok().map(|l| l.first().copied()));
        }
        #[cfg(feature = "prove-check-works")]
        {
            // An index the optimiser cannot prove in bounds: a reachable panic.
            black_box(bytes[black_box(usize::MAX)]);
        }
    }
}

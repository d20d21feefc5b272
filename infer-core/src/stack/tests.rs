//! A typed network against [`super::run`] with both kernel sets, on random models; and a file
//! that does not match the typed network.

use super::facts::{self, of_list, Facts};
use super::format::tests::{input, OwnedParams};
use super::format::{ConvOp, DenseOp, Op, Padding, PoolOp, StackFile};
use super::layers::{
    check_op_count, max, Chain, Conv2d, ConvPool, ConvPool3x3, ConvPoolDense3x3, Dense, Layer,
    Logits, MaxPool2d, RowSource, Specialized, Streamed,
};
use super::run::{run, BufferSizes, Kernels};
use super::stages::{facts_of, held_words, plan_file, Kernel, Out, Parts, Pixels};
use crate::kernels::conv::conv2d_i8;
use crate::kernels::fused::{fast_requant, Stream3x3, StreamLayers, StreamScratch};
use crate::kernels::pool::{max_pool, PoolGeometry};
use crate::kernels::ChannelRequant;
use crate::kernels::MapRows;
use crate::kernels::TestRng;
use crate::probe::{NoProbe, Probe};
use crate::Error;
use std::vec;
use std::vec::Vec;

// 10×10×2 → conv 3×3 same s1 ReLU ×5 → conv 3×3 valid s2 ×6 → pool 2 → dense 24→7 ReLU → dense 7→4.
type Op0<'a> = Conv2d<'a, 10, 10, 2, 3, 3, 5, 1, true, true>;
type Op1<'a> = Conv2d<'a, 10, 10, 5, 3, 3, 6, 2, false, false>;
type Op2 = MaxPool2d<4, 4, 6, 2>;
type Op3<'a> = Dense<'a, 24, 7, true>;
type Op4<'a> = Dense<'a, 7, 4, false>;
const _: () = assert!(Op0::OUT == Op1::IN && Op1::OUT == <Op2 as Layer>::IN);
const _: () = assert!(<Op2 as Layer>::OUT == Op3::IN && Op3::OUT == Op4::IN);
const A: usize = max(Op0::OUT, <Op2 as Layer>::OUT);
const B: usize = max(Op1::OUT, Op3::OUT);
const PATCH: usize = max(Op0::PATCH_WORDS, Op1::PATCH_WORDS);
/// The op-by-op reference's arena: the conv map beside the next conv's (then the dense
/// layers' outputs where those were).
const ARENA: usize = A + B;

struct Typed<'a>(Op0<'a>, Op1<'a>, Op2, Op3<'a>, Op4<'a>);

impl<'a> Typed<'a> {
    fn from_file(file: &StackFile<'a>) -> Result<Self, Error> {
        check_op_count(file, 5)?;
        Ok(Self(
            Op0::from_file(file, 0)?,
            Op1::from_file(file, 1)?,
            Op2::from_file(file, 2)?,
            Op3::from_file(file, 3)?,
            Op4::from_file(file, 4)?,
        ))
    }

    fn infer(&self, image: &[i8; 200]) -> [i32; 4] {
        let (mut a, mut b, mut patch) = ([0i8; A], [0i8; B], [0u32; PATCH]);
        let mut logits = [0i32; 4];
        self.0.run(image, &mut patch, &mut a);
        self.1.run(&a, &mut patch, &mut b);
        self.2.run(&b, &mut patch, &mut a);
        self.3.run(&a, &mut patch, &mut b);
        self.4.run_logits(&b, &mut patch, &mut logits);
        logits
    }
}

// The same network as the stages of `stages::plan`: conv; conv + pool + dense; dense.
// Stages 0 and 1 run as one, stage 1 reading stage 0's 10-row map through a ring of the
// 5 rows one of its output rows needs (pool 2 × stride 2 − 2 + kernel 3).
type Stage0<'a> = Op0<'a>;
type Stage1<'a> = Streamed<'a, ConvPool<Op1<'a>, Op2>, 24, 7, true>;
type Stage2<'a> = Op4<'a>;
type Chain01<'a> = Chain<Stage0<'a>, Stage1<'a>, 5>;
const STAGE_A: usize = Chain01::ring_bytes(10);
const STAGE_B: usize = Stage1::OUT;
const STAGE_PATCH: usize = max(Chain01::PATCH_WORDS, Stage2::PATCH_WORDS);
const _: () = assert!(Stage0::OUT == Stage1::IN && Stage1::OUT == Stage2::IN);

struct Staged<'a>(Chain01<'a>, Stage2<'a>);

impl<'a> Staged<'a> {
    fn from_file(file: &StackFile<'a>) -> Result<Self, Error> {
        check_op_count(file, Stage0::OPS + Stage1::OPS + Stage2::OPS)?;
        Ok(Self(
            Chain01::from_file(file, 0)?,
            Stage2::from_file(file, 4)?,
        ))
    }

    fn infer(&self, image: &[i8; 200]) -> [i32; 4] {
        let (mut a, mut b) = ([0i8; STAGE_A], [0i8; STAGE_B]);
        let mut patch = [0u32; STAGE_PATCH];
        let mut logits = [0i32; 4];
        self.0.run(
            image,
            &mut a,
            &mut patch,
            Out::Values(MapRows::whole_mut(&mut b)),
        );
        self.1.run_logits(&b, &mut patch, &mut logits);
        logits
    }
}

fn model(rng: &mut TestRng) -> Vec<OwnedParams> {
    vec![
        OwnedParams::random(rng, 5 * 9 * 2, 5),
        OwnedParams::random(rng, 6 * 9 * 5, 6),
        OwnedParams::random(rng, 7 * 24, 7),
        OwnedParams::logits(rng, 4 * 7, 4),
    ]
}

fn ops(p: &[OwnedParams]) -> Vec<Op<'_>> {
    let mut ops = Vec::new();
    let conv = |in_hw: u16, in_c, filters, stride, padding, relu, params| {
        Op::Conv2d(ConvOp {
            in_h: in_hw,
            in_w: in_hw,
            in_c,
            filters,
            kernel: 3,
            stride,
            padding,
            relu,
            params,
        })
    };
    ops.push(conv(10, 2, 5, 1, Padding::Same, true, p[0].view()));
    ops.push(conv(10, 5, 6, 2, Padding::Valid, false, p[1].view()));
    ops.push(Op::MaxPool2d(PoolOp {
        in_h: 4,
        in_w: 4,
        channels: 6,
        pool: 2,
    }));
    ops.push(Op::Dense(DenseOp {
        inputs: 24,
        units: 7,
        relu: true,
        params: p[2].view(),
    }));
    ops.push(Op::Dense(DenseOp {
        inputs: 7,
        units: 4,
        relu: false,
        params: p[3].view(),
    }));
    ops
}

fn file<'p>(ops: &'p [Op<'p>]) -> StackFile<'p> {
    StackFile::new(input(10, 10, 2), ops)
}

// The same stages compiled for the facts their shapes fix ([`Specialized`]), as a build
// script wraps them; `WRONG` claims a one-channel input for stage 0.
const FOUR: bool = matches!(Pixels::BUILT, Pixels::Four);
const FACTS0: Facts = of_list(&[
    (facts::CONV, true),
    (facts::POOL, false),
    (facts::DENSE, false),
    (facts::ADD, false),
    (facts::LOGITS, false),
    (facts::FOUR, FOUR),
    (facts::ONE_CHANNEL, false),
    (facts::POINTWISE, false),
]);
const FACTS1: Facts = of_list(&[
    (facts::CONV, true),
    (facts::POOL, true),
    (facts::POOL2, true),
    (facts::DENSE, true),
    (facts::ADD, false),
    (facts::LOGITS, false),
    (facts::FOUR, FOUR),
    (facts::EVEN_UNITS, false),
    (facts::OCTETS, false),
]);
const FACTS2: Facts = of_list(&[
    (facts::CONV, false),
    (facts::POOL, false),
    (facts::DENSE, true),
    (facts::LOGITS, true),
    (facts::EVEN_UNITS, true),
]);
const WRONG: Facts = facts::known(FACTS0, facts::ONE_CHANNEL, true);
type KnownChain01<'a, const F0: Facts, P = NoProbe, const F1: Facts = FACTS1> =
    Chain<Specialized<Stage0<'a>, F0, P>, Specialized<Stage1<'a>, F1, P>, 5>;
type KnownStage2<'a, P = NoProbe> = Specialized<Stage2<'a>, FACTS2, P>;

struct KnownStaged<'a, const F0: Facts, P = NoProbe, const F1: Facts = FACTS1>(
    KnownChain01<'a, F0, P, F1>,
    KnownStage2<'a, P>,
);

impl<'a, const F0: Facts, P: Probe, const F1: Facts> KnownStaged<'a, F0, P, F1> {
    fn from_file(file: &StackFile<'a>) -> Result<Self, Error> {
        Ok(Self(
            KnownChain01::from_file(file, 0)?,
            KnownStage2::from_file(file, 4)?,
        ))
    }

    fn infer(&self, image: &[i8; 200]) -> [i32; 4] {
        let (mut a, mut b) = ([0i8; STAGE_A], [0i8; STAGE_B]);
        let patch = &mut [0u32; STAGE_PATCH];
        let mut logits = [0i32; 4];
        let out = Out::Values(MapRows::whole_mut(&mut b));
        self.0.run(image, &mut a, patch, out);
        self.1.run_logits(&b, patch, &mut logits);
        logits
    }
}

std::thread_local! {
    /// The operations [`Recorder`] was told, a run of the same one told once.
    static ENTERED: core::cell::RefCell<Vec<usize>> = const { core::cell::RefCell::new(Vec::new()) };
}

/// A probe that records the operations it is told.
struct Recorder;

impl Probe for Recorder {
    fn enter(op: usize) {
        ENTERED.with(|e| {
            let mut e = e.borrow_mut();
            if e.last() != Some(&op) {
                e.push(op);
            }
        });
    }
}

#[test]
fn a_probed_stack_tells_each_layer_as_it_goes_and_computes_the_same() {
    let mut rng = TestRng(0x9B0E);
    for _ in 0..8 {
        let params = model(&mut rng);
        let ops = ops(&params);
        let file = file(&ops);
        let plain = KnownStaged::<FACTS0>::from_file(&file).unwrap();
        let probed = KnownStaged::<FACTS0, Recorder>::from_file(&file).unwrap();
        let image: [i8; 200] = core::array::from_fn(|_| rng.i8());
        // The second stage streams its dense layer's input (24 values, 7 units), or holds
        // it ([`held_words`]; in the unit tests by the sizes' parity).
        let positions = if held_words(24, 7, Pixels::Four) > 0 {
            1
        } else {
            4
        };
        {
            ENTERED.with(|e| e.borrow_mut().clear());
            assert_eq!(probed.infer(&image), plain.infer(&image));
            let entered = ENTERED.with(|e| e.borrow().clone());
            // The chain sets up its second stage (operation 1), then goes back and forth
            // between the first conv (0), the second conv with its pool (1, never the
            // pool's own 2) and, streamed, the dense layer (3), which finishes; then the
            // last dense (4).
            assert_eq!(entered[..2], [1, 0]);
            assert_eq!(entered[entered.len() - 2..], [3, 4]);
            let mut seen: Vec<usize> = entered.clone();
            seen.sort_unstable();
            seen.dedup();
            assert_eq!(seen, [0, 1, 3, 4]);
            // Streamed, every position of the second stage (4 × 4 conv positions, pooled
            // 2 × 2: 2 × 2) goes from the conv to the dense layer; held, the last.
            let to_dense = entered.windows(2).filter(|w| w == &[1, 3]).count();
            assert_eq!(to_dense, positions, "{entered:?}");
        }
    }
}

#[test]
fn typed_fast_and_reference_inference_agree_bit_for_bit() {
    let mut rng = TestRng(0x57AC);
    let cases = if cfg!(miri) { 2 } else { 40 };
    let mut varied = 0;
    for case in 0..cases {
        let params = model(&mut rng);
        let ops = ops(&params);
        let file = file(&ops);
        file.validate().unwrap();
        // Encoded and decoded, the file is read one operation at a time: the same.
        let mut buf = vec![0u8; 4096];
        let bytes = file.encode(&mut buf).unwrap().to_vec();
        let decoded = StackFile::decode(&bytes).unwrap();
        assert_eq!(decoded, file);
        let sizes = BufferSizes::of(&file, Pixels::BUILT);
        // The op-by-op reference needs the most; the stages need less.
        assert_eq!(sizes.arena, ARENA);
        assert_eq!(sizes.patch_words, STAGE_PATCH);
        const { assert!(STAGE_A + STAGE_B < A + B) };
        let stages = plan_file(&file);
        assert_eq!(
            stages
                .iter()
                .map(|s| (s.first, s.ops()))
                .collect::<Vec<_>>(),
            [(0, 1), (1, 3), (4, 1)]
        );
        let typed = Typed::from_file(&decoded).unwrap();
        let staged = Staged::from_file(&decoded).unwrap();
        let known = KnownStaged::<FACTS0>::from_file(&decoded).unwrap();
        let mut distinct = std::collections::BTreeSet::new();
        for _ in 0..8 {
            let image: [i8; 200] = core::array::from_fn(|_| rng.i8());
            let (mut arena, mut patch) = (vec![0i8; ARENA], vec![0u32; STAGE_PATCH]);
            let mut logits = [0i32; 4];
            let reference = run(
                &file,
                &image,
                Kernels::Reference,
                &mut arena,
                &mut patch,
                &mut logits,
            )
            .unwrap()
            .to_vec();
            // Fresh buffers: nothing of the reference's run may show through.
            let mut arena = vec![0i8; arena.len()];
            let mut patch = vec![0u32; patch.len()];
            let mut logits = [0i32; 4];
            let fast = run(
                &file,
                &image,
                Kernels::Fast,
                &mut arena,
                &mut patch,
                &mut logits,
            )
            .unwrap()
            .to_vec();
            assert_eq!(fast, reference, "case {case}");
            assert_eq!(
                typed.infer(&image).to_vec(),
                reference,
                "typed, case {case}"
            );
            assert_eq!(
                staged.infer(&image).to_vec(),
                reference,
                "typed stages, case {case}"
            );
            assert_eq!(
                known.infer(&image).to_vec(),
                reference,
                "typed stages compiled for their facts, case {case}"
            );
            distinct.insert(reference);
        }
        varied += usize::from(distinct.len() > 1);
    }
    // The logits depend on the image (random parameters saturate now and then): the test
    // would notice a network that ignores its input.
    assert!(
        varied * 4 >= cases * 3,
        "only {varied} of {cases} models varied"
    );
}

#[test]
fn a_file_of_another_declaration_is_refused_naming_operation_and_property() {
    let mut rng = TestRng(3);
    let params = model(&mut rng);
    let mut other = ops(&params);
    if let Op::Conv2d(c) = &mut other[1] {
        c.relu = true;
    }
    assert!(matches!(
        Staged::from_file(&file(&other)),
        Err(Error::OpMismatch {
            op: 1,
            what: "conv2d ReLU (0 no, 1 yes)",
            ..
        })
    ));
    let err = Typed::from_file(&file(&other)).err().unwrap();
    assert_eq!(
        err,
        Error::OpMismatch {
            op: 1,
            what: "conv2d ReLU (0 no, 1 yes)",
            found: 1,
            compiled: 0
        }
    );
    // Stages compiled for other facts than the model's.
    let good = ops(&params);
    let good = file(&good);
    assert!(KnownStaged::<FACTS0>::from_file(&good).is_ok());
    let stage0 = Parts::of(&good, &plan_file(&good)[0]).unwrap();
    assert_eq!(
        KnownStaged::<WRONG>::from_file(&good).err(),
        Some(Error::OpMismatch {
            op: 0,
            what: "stage facts",
            found: facts::holding(facts_of(&stage0, Pixels::BUILT, false)),
            compiled: facts::holding(WRONG),
        })
    );
    let message = std::format!("{}", KnownStaged::<WRONG>::from_file(&good).err().unwrap());
    assert!(message.contains("compiled for other facts"), "{message}");
    assert!(
        message.ends_with("rebuild the firmware with this model"),
        "{message}"
    );
    let mut fewer = ops(&params);
    fewer.truncate(4);
    assert!(matches!(
        Typed::from_file(&file(&fewer)),
        Err(Error::OpMismatch {
            what: "operations",
            found: 4,
            compiled: 5,
            ..
        })
    ));
    let mut swapped = ops(&params);
    swapped.swap(1, 2);
    assert!(matches!(
        Typed::from_file(&file(&swapped)),
        Err(Error::OpTypeMismatch {
            op: 1,
            found: "maxpool2d",
            compiled: "conv2d"
        })
    ));
    // run refuses short buffers instead of panicking.
    let good = ops(&params);
    let good = file(&good);
    let (mut arena, mut patch) = (vec![0i8; ARENA - 1], vec![0u32; STAGE_PATCH]);
    let mut logits = [0i32; 4];
    let fast = Kernels::Fast;
    assert!(run(&good, &[0; 200], fast, &mut arena, &mut patch, &mut logits).is_err());
    let mut arena = vec![0i8; ARENA];
    assert!(run(&good, &[0; 199], fast, &mut arena, &mut patch, &mut logits).is_err());
    assert!(run(
        &good,
        &[0; 200],
        fast,
        &mut arena,
        &mut patch,
        &mut logits[..3]
    )
    .is_err());
    assert!(run(&good, &[0; 200], fast, &mut arena, &mut patch, &mut logits).is_ok());
}

/// Random stacks on inputs other than 28×28×1 (colour 32×32×3, a 49×10×1 spectrogram, a
/// 5×7×4 oddity): encoded, decoded, and run with both kernel sets, which agree bit for bit;
/// the input spec records the shape, and an input of the wrong size is refused.
#[test]
fn any_input_shape_round_trips_and_runs() {
    let mut rng = TestRng(0x32_32_03);
    for (h, w, c) in [(32u16, 32u16, 3u16), (49, 10, 1), (5, 7, 4)] {
        for case in 0..if cfg!(miri) { 1 } else { 4 } {
            let (hu, wu, cu) = (usize::from(h), usize::from(w), usize::from(c));
            let filters = 2 + rng.below(6) as u16;
            let stride = 1 + rng.below(2) as u16;
            let conv_p =
                OwnedParams::random(&mut rng, usize::from(filters) * 9 * cu, filters.into());
            let conv = ConvOp {
                in_h: h,
                in_w: w,
                in_c: c,
                filters,
                kernel: 3,
                stride,
                padding: Padding::Same,
                relu: true,
                params: conv_p.view(),
            };
            let (oh, ow, oc) = Op::Conv2d(conv).out_shape();
            let pool = PoolOp {
                in_h: oh as u16,
                in_w: ow as u16,
                channels: oc as u16,
                pool: 2,
            };
            let flat = Op::MaxPool2d(pool).out_len();
            let units = 2 + rng.below(9) as u16;
            let dense_p = OwnedParams::logits(&mut rng, flat * usize::from(units), units.into());
            let ops = [
                Op::Conv2d(conv),
                Op::MaxPool2d(pool),
                Op::Dense(DenseOp {
                    inputs: flat as u32,
                    units,
                    relu: false,
                    params: dense_p.view(),
                }),
            ];
            let file = StackFile::new(input(h, w, c), &ops);
            let mut buf = vec![0u8; 64 * 1024];
            let bytes = file.encode(&mut buf).unwrap().to_vec();
            let decoded = StackFile::decode(&bytes).unwrap();
            assert_eq!(decoded, file);
            assert_eq!(
                (
                    decoded.input.height,
                    decoded.input.width,
                    decoded.input.channels
                ),
                (h, w, c)
            );
            let sizes = BufferSizes::of(&decoded, Pixels::BUILT);
            let mut arena = vec![0i8; sizes.arena];
            let mut patch = vec![0u32; sizes.patch_words];
            let mut logits = vec![0i32; usize::from(units)];
            let image: Vec<i8> = (0..hu * wu * cu).map(|_| rng.i8()).collect();
            let mut outputs = Vec::new();
            for kernels in [Kernels::Reference, Kernels::Fast] {
                let out = run(
                    &decoded,
                    &image,
                    kernels,
                    &mut arena,
                    &mut patch,
                    &mut logits,
                )
                .unwrap()
                .to_vec();
                outputs.push(out);
            }
            assert_eq!(outputs[0], outputs[1], "{h}×{w}×{c} case {case}");
            assert_eq!(outputs[0].len(), usize::from(units));
            let short = &image[1..];
            let fast = Kernels::Fast;
            assert!(run(&decoded, short, fast, &mut arena, &mut patch, &mut logits).is_err());
        }
    }
}

/// A one-channel `10 × 12` input → conv 3×3 (`F` filters) → pool 2 → dense 3: the
/// [`ConvPoolDense3x3`] stage against the reference, with random quantizations (some not
/// monotonic: negative multipliers or left shifts).
fn stream3x3_case<const F: usize>(rng: &mut TestRng) {
    type Stage<'a, const F: usize> = ConvPoolDense3x3<'a, 10, 12, F, 3, true, false>;
    let inputs = 4 * 5 * F;
    let mut conv = OwnedParams::random(rng, 9 * F, F);
    let dense = OwnedParams::logits(rng, 3 * inputs, 3);
    if rng.below(3) == 0 {
        for c in 0..F {
            match rng.below(3) {
                0 => conv.shift[c] = 1,
                1 => conv.multiplier[4 * c..4 * c + 4]
                    .copy_from_slice(&(-(1i32 << 30)).to_le_bytes()),
                _ => {}
            }
        }
    }
    let ops = [
        Op::Conv2d(ConvOp {
            in_h: 10,
            in_w: 12,
            in_c: 1,
            filters: F as u16,
            kernel: 3,
            stride: 1,
            padding: Padding::Valid,
            relu: true,
            params: conv.view(),
        }),
        Op::MaxPool2d(PoolOp {
            in_h: 8,
            in_w: 10,
            channels: F as u16,
            pool: 2,
        }),
        Op::Dense(DenseOp {
            inputs: inputs as u32,
            units: 3,
            relu: false,
            params: dense.view(),
        }),
    ];
    let file = StackFile::new(input(10, 12, 1), &ops);
    let stages = plan_file(&file);
    assert_eq!(stages.len(), 1);
    assert_eq!(stages[0].kernel, Kernel::Stream3x3);
    let stage = Stage::<F>::from_file(&file, 0).unwrap();
    // Compiled for the fast requantization only: loaded where the model has it (and then
    // the same logits), refused where it does not.
    type Fast<'a, const F: usize> = ConvPoolDense3x3<'a, 10, 12, F, 3, true, false, true>;
    type FastMap<'a, const F: usize> = ConvPool3x3<'a, 10, 12, F, true, true>;
    let fast_stage = Fast::<F>::from_file(&file, 0);
    let fast_map = FastMap::<F>::from_file(&file, 0);
    let Some(Op::Conv2d(c)) = file.ops.get(0) else {
        unreachable!()
    };
    let layers = StreamLayers {
        input_offset: 128,
        conv_weights: c.params.weights,
        conv: ChannelRequant::from_params(&c.params, true),
        dense_input_offset: -c.params.output.zero_point,
        dense_weights: &[],
        dense: ChannelRequant::from_params(&c.params, true),
    };
    let is_fast = fast_requant(&layers, F);
    assert_eq!(fast_stage.is_ok(), is_fast);
    assert_eq!(fast_map.is_ok(), is_fast);
    if let Err(e) = fast_stage {
        assert!(matches!(
            e,
            Error::OpMismatch {
                op: 0,
                what: "stage facts",
                ..
            }
        ));
    }
    let sizes = BufferSizes::of(&file, Pixels::BUILT);
    for _ in 0..6 {
        let background = rng.below(3);
        let image: Vec<i8> = (0..120)
            .map(|_| {
                if rng.below(3) < background {
                    -128
                } else {
                    rng.i8()
                }
            })
            .collect();
        let mut arena = vec![0i8; sizes.arena];
        let mut patch = vec![0u32; sizes.patch_words];
        let mut logits = [0i32; 3];
        let reference = run(
            &file,
            &image,
            Kernels::Reference,
            &mut arena,
            &mut patch,
            &mut logits,
        )
        .unwrap()
        .to_vec();
        // Fresh buffers: nothing of the reference's run may show through.
        let mut arena = vec![0i8; arena.len()];
        let mut patch = vec![0u32; patch.len()];
        let mut logits = [0i32; 3];
        let fast = run(
            &file,
            &image,
            Kernels::Fast,
            &mut arena,
            &mut patch,
            &mut logits,
        )
        .unwrap()
        .to_vec();
        let mut logits = [0i32; 3];
        stage.run_logits(&image, &mut [], &mut logits);
        assert_eq!(fast, reference);
        assert_eq!(logits.to_vec(), reference, "F = {F}");
        // With a probe: the same logits, and each of the 4 × 5 pooled positions goes from
        // the conv (with its pool, operation 0) to the dense layer (2).
        type Probed<'a, const F: usize> =
            ConvPoolDense3x3<'a, 10, 12, F, 3, true, false, false, Recorder>;
        let probed = Probed::<F>::from_file(&file, 0).unwrap();
        ENTERED.with(|e| e.borrow_mut().clear());
        let mut logits = [0i32; 3];
        probed.run_logits(&image, &mut [], &mut logits);
        assert_eq!(logits.to_vec(), reference, "probed, F = {F}");
        let entered = ENTERED.with(|e| e.borrow().clone());
        assert_eq!(entered, [0, 2].repeat(20), "F = {F}");
        if let Ok(fast_stage) = &fast_stage {
            let mut logits = [0i32; 3];
            fast_stage.run_logits(&image, &mut [], &mut logits);
            assert_eq!(logits.to_vec(), reference, "fast, F = {F}");
        }
        // The conv + pool alone, its pooled map kept, against the unfused kernels; both
        // inner loops (paired as on DSP cores, and plain) where `F` allows.
        let mut conv_out = vec![0i8; 8 * 10 * F];
        conv2d_i8(
            &c.geometry(),
            &image,
            128,
            c.params.weights,
            &ChannelRequant::from_params(&c.params, true),
            &mut conv_out,
        );
        let mut pooled = vec![0i8; 4 * 5 * F];
        max_pool(
            &PoolGeometry {
                in_h: 8,
                in_w: 10,
                channels: F,
                size: 2,
            },
            &conv_out,
            &mut pooled,
        );
        let map = ConvPool3x3::<10, 12, F, true>::from_file(&file, 0).unwrap();
        let mut out = vec![0i8; 4 * 5 * F];
        map.run(&image, &mut [], &mut out);
        assert_eq!(out, pooled, "pooled map, F = {F}");
        // As a chain's first stage, it tells a probe its conv each time it writes rows
        // between the second stage's (here operation 9).
        let probed = ConvPool3x3::<10, 12, F, true, false, Recorder>::from_file(&file, 0).unwrap();
        let mut ring = vec![0i8; 2 * 5 * F];
        ENTERED.with(|e| e.borrow_mut().clear());
        probed.with_rows(&image, &mut [], 2, &mut |write| {
            for rows in [0..2, 2..4] {
                Recorder::enter(9);
                write(rows, &mut ring);
            }
        });
        assert_eq!(ENTERED.with(|e| e.borrow().clone()), [9, 0, 9, 0]);
        assert_eq!(ring, pooled[2 * 5 * F..], "F = {F}");
        if let Ok(fast_map) = &fast_map {
            let mut out = vec![0i8; 4 * 5 * F];
            fast_map.run(&image, &mut [], &mut out);
            assert_eq!(out, pooled, "fast pooled map, F = {F}");
        }
        if F % 4 == 0 {
            let mut scratch = StreamScratch::<F, 0>::new();
            let mut stream =
                Stream3x3::<F, 0, true, false>::new(&layers, 10, 12, &image, &mut scratch, &[]);
            let mut paired = vec![0i8; 4 * 5 * F];
            for (pos, out) in paired.chunks_exact_mut(F).enumerate() {
                stream.conv_pool_into(pos / 5, pos % 5, out.first_chunk_mut::<F>().unwrap());
            }
            assert_eq!(paired, pooled, "paired pooled map, F = {F}");
        }
    }
}

#[test]
fn the_one_channel_3x3_stage_matches_the_reference() {
    let mut rng = TestRng(0x3A3);
    let cases = if cfg!(miri) { 1 } else { 30 };
    for _ in 0..cases {
        stream3x3_case::<4>(&mut rng);
        stream3x3_case::<5>(&mut rng);
        stream3x3_case::<8>(&mut rng);
    }
}

/// Widens conv operation `index` of `file`'s weights (`kernels::dsp::widen_filter`).
fn widened(file: &StackFile<'_>, index: usize) -> Vec<u32> {
    use crate::kernels::dsp::{wide_words, widen_filter};
    let op = file.ops.get(index).unwrap();
    let (c, g) = op.conv().unwrap();
    let mut words = vec![0; g.filters * wide_words(g.taps())];
    assert!(widen_filter(
        c.params.weights,
        g.taps(),
        g.filters,
        &mut words
    ));
    words
}

#[test]
fn prepared_weights_are_used_when_they_match_and_ignored_otherwise() {
    use super::prepared::PreparedWeights;
    use crate::kernels::mve::row_offset_terms;
    let mut rng = TestRng(0x91DE);
    for case in 0..8 {
        let (params, others) = (model(&mut rng), model(&mut rng));
        let (ops, other_ops) = (ops(&params), ops(&others));
        let (file, other) = (file(&ops), file(&other_ops));
        let mut buf = vec![0u8; 4096];
        let bytes = file.encode(&mut buf).unwrap().to_vec();
        let (own, foreign) = ([widened(&file, 0), widened(&file, 1)], widened(&other, 1));
        let prepared = [
            PreparedWeights {
                op: 0,
                words: &own[0],
            },
            // Another model's rows for operation 1 come first: the first entry is the one
            // used, and it does not match.
            PreparedWeights {
                op: 1,
                words: &foreign,
            },
            PreparedWeights {
                op: 1,
                words: &own[1],
            },
            // Not a conv, and beyond the model.
            PreparedWeights {
                op: 3,
                words: &own[0],
            },
            PreparedWeights {
                op: 40,
                words: &own[0],
            },
        ];
        let decoded = StackFile::decode(&bytes).unwrap();
        let mut with = decoded;
        with.prepare(&prepared);
        assert_eq!(with.prepared(0), &own[0][..], "case {case}");
        for index in [1, 2, 3, 4, 40] {
            assert!(with.prepared(index).is_empty(), "case {case}, op {index}");
        }
        // With the streamed dense layer's offset terms (op 3, after conv 1 and its pool).
        let Some(Op::Dense(d)) = decoded.ops.get(3) else {
            panic!("op 3 is the streamed dense layer");
        };
        let offset = super::format::input_offset(&decoded, 3);
        let sums: Vec<u32> =
            row_offset_terms(d.params.weights, d.inputs as usize, offset).collect();
        let only_own = [
            PreparedWeights {
                op: 0,
                words: &own[0],
            },
            PreparedWeights {
                op: 1,
                words: &own[1],
            },
            PreparedWeights {
                op: 3,
                words: &sums,
            },
        ];
        let mut own_file = decoded;
        own_file.prepare(&only_own);
        assert_eq!(own_file.prepared(1), &own[1][..]);
        assert_eq!(own_file.prepared(3), &sums[..]);
        // Terms one off are not its own.
        let mut off = sums.clone();
        let at = case % off.len();
        off[at] ^= 1;
        let off = [PreparedWeights { op: 3, words: &off }];
        let mut off_file = decoded;
        off_file.prepare(&off);
        assert!(off_file.prepared(3).is_empty(), "case {case}");
        let image: [i8; 200] = core::array::from_fn(|_| rng.i8());
        let infer = |file: &StackFile<'_>, kernels| {
            let (mut arena, mut patch) = (vec![0i8; ARENA], vec![0u32; STAGE_PATCH]);
            let mut logits = [0i32; 4];
            run(file, &image, kernels, &mut arena, &mut patch, &mut logits)
                .unwrap()
                .to_vec()
        };
        let reference = infer(&decoded, Kernels::Reference);
        for file in [&with, &own_file] {
            assert_eq!(infer(file, Kernels::Fast), reference, "case {case}");
            let typed = Typed::from_file(file).unwrap();
            assert_eq!(
                typed.infer(&image).to_vec(),
                reference,
                "typed, case {case}"
            );
            let staged = Staged::from_file(file).unwrap();
            assert_eq!(
                staged.infer(&image).to_vec(),
                reference,
                "staged, case {case}"
            );
        }
    }
}

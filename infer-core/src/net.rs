//! The reader of the retired model.bin format 1 (the tutorial's network only), kept for the
//! trainer, which still writes and evaluates format 1 until it moves to the layer stack.
//! Firmware and every other tool run format-2 models through [`crate::stack`]; this module
//! goes when the trainer no longer needs it.

use crate::format::ModelFile;
pub use crate::kernels::fused::StreamScratch;
use crate::kernels::fused::{Stream3x3, StreamLayers, NATIVE_PAIRED};
use crate::kernels::{activation, conv, dense, pool, ChannelRequant};
use crate::Error;

/// Activation buffers of the unfused reference inference, [`Net::infer_layers`]: the conv
/// output and the pooled output, kept so that they can be inspected.
///
/// Its size is known at compile time ([`Scratch::BYTES`]); put it on the stack or in a
/// `static`. Nothing else is allocated. [`Net::infer`] does not need it.
#[derive(Debug, Clone)]
pub struct Scratch<
    const CH: usize,
    const CW: usize,
    const F: usize,
    const PH: usize,
    const PW: usize,
> {
    /// Conv + ReLU output, `CH × CW × F`.
    pub conv: [[[i8; F]; CW]; CH],
    /// Max-pooled output, `PH × PW × F`.
    pub pool: [[[i8; F]; PW]; PH],
}

impl<const CH: usize, const CW: usize, const F: usize, const PH: usize, const PW: usize>
    Scratch<CH, CW, F, PH, PW>
{
    /// Bytes of RAM this scratch occupies.
    pub const BYTES: usize = core::mem::size_of::<Self>();

    /// Zeroed buffers.
    pub const fn new() -> Self {
        Self {
            conv: [[[0; F]; CW]; CH],
            pool: [[[0; F]; PW]; PH],
        }
    }
}

impl<const CH: usize, const CW: usize, const F: usize, const PH: usize, const PW: usize> Default
    for Scratch<CH, CW, F, PH, PW>
{
    fn default() -> Self {
        Self::new()
    }
}

/// The int8 logits of one inference and their quantization.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Output<const N: usize> {
    /// Quantized logits.
    pub logits: [i8; N],
    /// Real value of one logit step.
    pub scale: f32,
    /// Logit value that stands for real 0.
    pub zero_point: i32,
}

impl<const N: usize> Output<N> {
    /// The predicted class: the largest logit, the first one on a tie.
    pub fn class(&self) -> usize {
        activation::argmax(&self.logits)
    }

    /// Class probabilities: softmax over the dequantized logits.
    pub fn probabilities(&self) -> [f32; N] {
        let mut p = [0.0; N];
        activation::softmax_i8(&self.logits, self.scale, self.zero_point, &mut p);
        p
    }
}

/// Converts 8-bit pixels (0 = black, 255 = white) to the network's int8 input (`p − 128`).
pub fn pixels_to_input<const H: usize, const W: usize>(pixels: &[[u8; W]; H]) -> [[[i8; 1]; W]; H] {
    let mut out = [[[0i8; 1]; W]; H];
    for (out_row, row) in out.iter_mut().zip(pixels) {
        for (o, &p) in out_row.iter_mut().zip(row) {
            o[0] = (p ^ 0x80) as i8;
        }
    }
    out
}

/// Conv2D(F filters, K×K, valid) + ReLU → MaxPool P×P → Flatten → Dense(N), in int8: a
/// format-1 model (retired; kept for the trainer).
///
/// `H×W×C` input, `CH×CW` conv output, `PH×PW` pooled output. The derived sizes are
/// parameters because stable Rust cannot compute array lengths from generics; they are
/// checked at compile time, so a wrong combination does not build.
///
/// ```
/// use infer_core::{TutorialNet, Error};
/// // Bytes that are not a model are refused with an error that names the problem.
/// let err = TutorialNet::from_bytes(b"not a model").unwrap_err();
/// assert!(matches!(err, Error::BadMagic { .. }));
/// # Ok::<(), Error>(())
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Net<
    'a,
    const H: usize,
    const W: usize,
    const C: usize,
    const K: usize,
    const F: usize,
    const CH: usize,
    const CW: usize,
    const P: usize,
    const PH: usize,
    const PW: usize,
    const N: usize,
> {
    model: ModelFile<'a>,
}

/// The Keras tutorial's network: 28×28×1 → Conv 32@3×3 + ReLU → MaxPool 2 → Dense 10.
pub type TutorialNet<'a> = Net<'a, 28, 28, 1, 3, 32, 26, 26, 2, 13, 13, 10>;
/// Activation buffers for [`TutorialNet::infer_layers`] (26×26×32 + 13×13×32 bytes).
pub type TutorialScratch = Scratch<26, 26, 32, 13, 13>;
/// Working memory of [`TutorialNet::infer`].
pub type TutorialStreamScratch = StreamScratch<32, 10>;

fn dims(a: usize, b: usize, c: usize, d: usize) -> [u32; 4] {
    [a as u32, b as u32, c as u32, d as u32]
}

impl<
        'a,
        const H: usize,
        const W: usize,
        const C: usize,
        const K: usize,
        const F: usize,
        const CH: usize,
        const CW: usize,
        const P: usize,
        const PH: usize,
        const PW: usize,
        const N: usize,
    > Net<'a, H, W, C, K, F, CH, CW, P, PH, PW, N>
{
    /// Compile-time shape contract; evaluated when a network type is used.
    const SHAPES_AGREE: () = {
        assert!(
            H > 0 && W > 0 && C > 0 && F > 0 && N > 0,
            "every dimension must be positive"
        );
        assert!(
            K >= 1 && K <= H && K <= W,
            "the kernel must fit in the input"
        );
        assert!(
            CH == H - K + 1 && CW == W - K + 1,
            "conv output must be (H-K+1)×(W-K+1)"
        );
        assert!(
            P >= 1 && PH == CH / P && PW == CW / P,
            "pool output must be the conv output / P"
        );
        assert!(
            PH > 0 && PW > 0,
            "the pool window must fit in the conv output"
        );
        assert!(N <= 64, "at most 64 classes");
    };

    /// Bytes of activation RAM one inference needs (the [`Scratch`]).
    pub const SCRATCH_BYTES: usize = Scratch::<CH, CW, F, PH, PW>::BYTES;

    /// Loads a model.bin in place (no copy) and checks it against this network's shapes.
    ///
    /// # Errors
    /// Any [`Error`] of [`ModelFile::decode`], or [`Error::ShapeMismatch`] naming the layer
    /// and both shapes.
    pub fn from_bytes(bytes: &'a [u8]) -> Result<Self, Error> {
        Self::from_model(ModelFile::decode(bytes)?)
    }

    /// Checks an already decoded model against this network's shapes.
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] naming the layer and both shapes, or a validation error.
    pub fn from_model(model: ModelFile<'a>) -> Result<Self, Error> {
        let () = Self::SHAPES_AGREE;
        model.validate()?;
        let i = &model.input;
        let found = dims(
            usize::from(i.height),
            usize::from(i.width),
            usize::from(i.channels),
            0,
        );
        if found != dims(H, W, C, 0) {
            return Err(Error::ShapeMismatch {
                layer: "input",
                found,
                compiled: dims(H, W, C, 0),
            });
        }
        let cv = &model.conv;
        let found = dims(
            usize::from(cv.kernel_h),
            usize::from(cv.kernel_w),
            usize::from(cv.in_channels),
            usize::from(cv.filters),
        );
        if found != dims(K, K, C, F) {
            return Err(Error::ShapeMismatch {
                layer: "conv",
                found,
                compiled: dims(K, K, C, F),
            });
        }
        let found = dims(usize::from(model.pool.size), 0, 0, 0);
        if found != dims(P, 0, 0, 0) {
            return Err(Error::ShapeMismatch {
                layer: "pool",
                found,
                compiled: dims(P, 0, 0, 0),
            });
        }
        let found = dims(
            model.dense.inputs as usize,
            usize::from(model.dense.units),
            0,
            0,
        );
        if found != dims(PH * PW * F, N, 0, 0) {
            return Err(Error::ShapeMismatch {
                layer: "dense",
                found,
                compiled: dims(PH * PW * F, N, 0, 0),
            });
        }
        Ok(Self { model })
    }

    /// The decoded model (shapes, quantization, weights in place).
    pub fn model(&self) -> &ModelFile<'a> {
        &self.model
    }

    /// Runs one int8 inference. Allocates nothing and cannot fail.
    ///
    /// A 3×3 kernel over one channel with a 2×2 pool (the tutorial) streams through
    /// [`Stream3x3`], the kernel of the stack engine's fused first stage, bit-exact with
    /// [`Net::infer_layers`]; any other shape runs [`Net::infer_layers`] with its
    /// [`Scratch`] on the stack.
    pub fn infer(&self, input: &[[[i8; C]; W]; H]) -> Output<N> {
        let mut logits = [0i8; N];
        if Self::FAST_PATH {
            let mut scratch = StreamScratch::<F, N>::new();
            let layers = self.layers();
            let input = input.as_flattened().as_flattened();
            if NATIVE_PAIRED && F % 4 == 0 {
                Stream3x3::<F, N, true>::new(&layers, H, W, input, &mut scratch).run(&mut logits);
            } else {
                Stream3x3::<F, N, false>::new(&layers, H, W, input, &mut scratch).run(&mut logits);
            }
            self.output(logits)
        } else {
            self.infer_layers(input, &mut Scratch::new())
        }
    }

    /// Whether [`Stream3x3`] computes this network: a 3×3 conv over one channel with a
    /// 2×2 pool.
    const FAST_PATH: bool = C == 1 && K == 3 && P == 2;

    /// Wraps int8 logits with the dense layer's output quantization.
    pub fn output(&self, logits: [i8; N]) -> Output<N> {
        let q = self.model.dense.params.output;
        Output {
            logits,
            scale: q.scale,
            zero_point: q.zero_point,
        }
    }

    /// The model's layers as the fused kernels take them.
    fn layers(&self) -> StreamLayers<'a> {
        let m = &self.model;
        StreamLayers {
            input_offset: -m.input.quant.zero_point,
            conv_weights: m.conv.params.weights,
            conv: ChannelRequant::from_params(&m.conv.params, m.conv.relu),
            dense_input_offset: -m.conv.params.output.zero_point,
            dense_weights: m.dense.params.weights,
            dense: ChannelRequant::from_params(&m.dense.params, false),
        }
    }

    /// Runs one int8 inference layer by layer with the unfused reference kernels, keeping
    /// the conv + ReLU output (`scratch.conv`) and the pooled output (`scratch.pool`).
    /// Same result as [`Net::infer`], which is tested against it; allocates nothing.
    pub fn infer_layers(
        &self,
        input: &[[[i8; C]; W]; H],
        scratch: &mut Scratch<CH, CW, F, PH, PW>,
    ) -> Output<N> {
        let m = &self.model;
        let g = conv::ConvGeometry {
            in_h: H,
            in_w: W,
            in_c: C,
            k_h: K,
            k_w: K,
            filters: F,
            stride: 1,
            padding: conv::Padding::Valid,
        };
        let conv_out = scratch.conv.as_flattened_mut().as_flattened_mut();
        conv::conv2d_i8(
            &g,
            input.as_flattened().as_flattened(),
            -m.input.quant.zero_point,
            m.conv.params.weights,
            &ChannelRequant::from_params(&m.conv.params, m.conv.relu),
            conv_out,
        );
        let pg = pool::PoolGeometry {
            in_h: CH,
            in_w: CW,
            channels: F,
            size: P,
        };
        pool::max_pool(
            &pg,
            scratch.conv.as_flattened().as_flattened(),
            scratch.pool.as_flattened_mut().as_flattened_mut(),
        );
        let mut logits = [0i8; N];
        let dp = &m.dense.params;
        dense::dense_i8(
            scratch.pool.as_flattened().as_flattened(),
            -m.conv.params.output.zero_point,
            dp.weights,
            &ChannelRequant::from_params(dp, false),
            &mut logits,
        );
        Output {
            logits,
            scale: dp.output.scale,
            zero_point: dp.output.zero_point,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::tests::{encoded, tiny};
    use std::format;

    /// The shapes of `format::tests::tiny()`: 2×2×1 input, 1×1 conv with 1 filter, pool 2, 2 classes.
    type TinyNet<'a> = Net<'a, 2, 2, 1, 1, 1, 2, 2, 2, 1, 1, 2>;
    type TinyScratch = Scratch<2, 2, 1, 1, 1>;

    #[test]
    fn infers_the_hand_computed_result() {
        let bytes = encoded(&tiny());
        let net = TinyNet::from_bytes(&bytes).unwrap();
        let input = pixels_to_input(&[[0u8, 255], [10, 20]]);
        let mut scratch = TinyScratch::new();
        let out = net.infer_layers(&input, &mut scratch);
        assert_eq!(net.infer(&input), out);
        // conv: acc = 3·p; ×0.25 (multiplier 2^30, shift −1); +zp −1; ReLU clamps at −1.
        assert_eq!(scratch.conv, [[[-1], [127]], [[7], [14]]]);
        assert_eq!(scratch.pool, [[[127]]]);
        // dense: (127 + 1)·(5, −5) ×0.25 − 1 → (159, −161) → clamped.
        assert_eq!(out.logits, [127, -128]);
        assert_eq!(out.class(), 0);
        let p = out.probabilities();
        assert!((p.iter().sum::<f32>() - 1.0).abs() < 1e-6);
    }

    /// A one-channel 3×3 conv with a 2×2 pool: `infer` streams through `Stream3x3` (paired
    /// with 4 filters where the target has the DSP extension), bit-exact with `infer_layers`.
    #[test]
    fn the_streamed_inference_equals_the_layer_by_layer_one() {
        use crate::format::{ChannelParams, Conv2dLayer, DenseLayer, InputSpec, MaxPoolLayer};
        use crate::format::{QuantParams, FORMAT_VERSION, MAGIC};
        use crate::kernels::TestRng;
        use std::vec::Vec;
        type Small<'a> = Net<'a, 7, 8, 1, 3, 4, 5, 6, 2, 2, 3, 3>;
        let mut rng = TestRng(0x57E4);
        let le = |v: Vec<i32>| -> Vec<u8> { v.iter().flat_map(|x| x.to_le_bytes()).collect() };
        let arrays = |rng: &mut TestRng, weights: usize, channels: usize| {
            (
                (0..weights).map(|_| rng.i8() as u8).collect::<Vec<u8>>(),
                le((0..channels).map(|_| 0x3c23_d70a).collect()), // 0.01f32
                le((0..channels)
                    .map(|_| rng.below(4001) as i32 - 2000)
                    .collect()),
                le((0..channels)
                    .map(|_| (1 << 30) + rng.below(1 << 30) as i32)
                    .collect()),
                (0..channels)
                    .map(|_| (-(rng.below(9) as i8)) as u8)
                    .collect::<Vec<u8>>(),
            )
        };
        type Arrays = (Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>, Vec<u8>);
        fn params(a: &Arrays, zero_point: i32) -> ChannelParams<'_> {
            ChannelParams {
                weights: &a.0,
                weight_scales: &a.1,
                bias: &a.2,
                multiplier: &a.3,
                shift: &a.4,
                output: QuantParams {
                    scale: 0.05,
                    zero_point,
                },
            }
        }
        let mut varied = 0;
        for case in 0..40 {
            let conv = arrays(&mut rng, 4 * 9, 4);
            let dense = arrays(&mut rng, 3 * 2 * 3 * 4, 3);
            let model = ModelFile {
                magic: MAGIC,
                version: FORMAT_VERSION,
                input: InputSpec {
                    height: 7,
                    width: 8,
                    channels: 1,
                    quant: QuantParams {
                        scale: 1.0 / 255.0,
                        zero_point: -128,
                    },
                },
                conv: Conv2dLayer {
                    filters: 4,
                    kernel_h: 3,
                    kernel_w: 3,
                    in_channels: 1,
                    relu: true,
                    params: params(&conv, rng.below(60) as i32 - 128),
                },
                pool: MaxPoolLayer { size: 2 },
                dense: DenseLayer {
                    units: 3,
                    inputs: 24,
                    params: params(&dense, rng.below(41) as i32 - 20),
                },
            };
            let mut buf = [0u8; 1024];
            let bytes = model.encode(&mut buf).unwrap().to_vec();
            let net = Small::from_bytes(&bytes).unwrap();
            let mut scratch = Scratch::new();
            let mut distinct = std::collections::BTreeSet::new();
            for _ in 0..20 {
                let mut pixels = [[0u8; 8]; 7];
                for p in pixels.as_flattened_mut() {
                    // Background (0) half the time, to take the kernel's shortcuts too.
                    *p = if rng.below(2) == 0 {
                        0
                    } else {
                        rng.below(256) as u8
                    };
                }
                let input = pixels_to_input(&pixels);
                let reference = net.infer_layers(&input, &mut scratch);
                assert_eq!(net.infer(&input), reference, "case {case}");
                distinct.insert(reference.logits);
            }
            varied += usize::from(distinct.len() > 1);
        }
        // The logits depend on the input in most cases (some saturate: random weights).
        assert!(varied >= 30, "only {varied} of 40 cases vary");
    }

    #[test]
    fn a_model_of_other_shapes_is_refused_naming_both() {
        let bytes = encoded(&tiny());
        let err = TutorialNet::from_bytes(&bytes).unwrap_err();
        assert_eq!(
            err,
            Error::ShapeMismatch {
                layer: "input",
                found: [2, 2, 1, 0],
                compiled: [28, 28, 1, 0]
            }
        );
        type TwoFilters<'a> = Net<'a, 2, 2, 1, 1, 2, 2, 2, 2, 1, 1, 2>;
        let err = TwoFilters::from_bytes(&bytes).unwrap_err();
        assert_eq!(
            err,
            Error::ShapeMismatch {
                layer: "conv",
                found: [1, 1, 1, 1],
                compiled: [1, 1, 1, 2]
            }
        );
        let msg = format!("{err}");
        assert!(
            msg.contains("1×1×1×1 in the file") && msg.contains("1×1×1×2 compiled"),
            "{msg}"
        );
    }
}

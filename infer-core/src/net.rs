//! Typed front end: a network whose shapes are const generics, checked against each other
//! at compile time and against a model.bin when it loads.

use crate::format::ModelFile;
pub use crate::kernels::fused::StreamScratch;
use crate::kernels::fused::{self, Stream3x3, StreamGeometry, StreamLayers, NATIVE_PAIRED};
use crate::kernels::{activation, conv, dense, float, pool, ChannelRequant};
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

/// Conv2D(F filters, K×K, valid) + ReLU → MaxPool P×P → Flatten → Dense(N), in int8.
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
/// Working memory of [`TutorialNet::infer`] and [`TutorialNet::stream`].
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
    /// Streams: conv, ReLU, pool and dense run position by position, so neither the conv
    /// output nor the pooled tensor ever exists. The result is bit-exact with
    /// [`Net::infer_layers`]. A 3×3 kernel over one channel with a 2×2 pool (the tutorial)
    /// takes a fast path: on Arm microcontrollers [`fused::Stream3x3`], whose working
    /// memory is a [`StreamScratch`] on the stack ([`StreamScratch::BYTES`], 1,192 bytes
    /// for the tutorial), elsewhere [`fused::conv_pool_dense_wide`], laid out for vector
    /// units. Any other shape takes the general [`fused::conv_pool_dense_i8`].
    #[inline(always)]
    pub fn infer(&self, input: &[[[i8; C]; W]; H]) -> Output<N> {
        let mut scratch = StreamScratch::<F, N>::new();
        let mut logits = [0i8; N];
        if Self::FAST_PATH && !cfg!(target_arch = "arm") {
            fused::conv_pool_dense_wide::<F, N>(
                &self.layers(),
                H,
                W,
                input.as_flattened().as_flattened(),
                &mut logits,
            );
        } else if Self::FAST_PATH && NATIVE_PAIRED && F % 4 == 0 {
            self.stream_unchecked::<true>(input, &mut scratch)
                .run(&mut logits);
        } else if Self::FAST_PATH {
            self.stream_unchecked::<false>(input, &mut scratch)
                .run(&mut logits);
        } else {
            fused::conv_pool_dense_i8(
                &Self::GEOMETRY,
                &self.layers(),
                input.as_flattened().as_flattened(),
                &mut scratch.acc,
                &mut logits,
            );
        }
        self.output(logits)
    }

    /// Whether [`fused::Stream3x3`] computes this network: a 3×3 conv over one channel
    /// with a 2×2 pool.
    const FAST_PATH: bool = C == 1 && K == 3 && P == 2;

    /// The fast path's stages for one inference on `input`, for callers that time or
    /// interleave them; `PAIRED` picks the inner loops ([`fused::NATIVE_PAIRED`] is what
    /// [`Net::infer`] uses). `None` unless the network is a 3×3 conv over one channel with
    /// a 2×2 pool (and, with `PAIRED`, a multiple of 4 filters). [`Stream3x3::run`] on the
    /// result is exactly [`Net::infer`]'s work; [`Net::output`] wraps the logits it writes.
    pub fn stream<'s, const PAIRED: bool>(
        &'s self,
        input: &'s [[[i8; C]; W]; H],
        scratch: &'s mut StreamScratch<F, N>,
    ) -> Option<Stream3x3<'a, 's, F, N, PAIRED>> {
        (Self::FAST_PATH && (!PAIRED || F % 4 == 0))
            .then(|| self.stream_unchecked::<PAIRED>(input, scratch))
    }

    /// [`Net::stream`] without the shape check.
    #[inline(always)]
    fn stream_unchecked<'s, const PAIRED: bool>(
        &'s self,
        input: &'s [[[i8; C]; W]; H],
        scratch: &'s mut StreamScratch<F, N>,
    ) -> Stream3x3<'a, 's, F, N, PAIRED> {
        Stream3x3::new(
            &self.layers(),
            H,
            W,
            input.as_flattened().as_flattened(),
            scratch,
        )
    }

    /// Wraps int8 logits with the dense layer's output quantization.
    pub fn output(&self, logits: [i8; N]) -> Output<N> {
        let q = self.model.dense.params.output;
        Output {
            logits,
            scale: q.scale,
            zero_point: q.zero_point,
        }
    }

    const GEOMETRY: StreamGeometry = StreamGeometry {
        in_h: H,
        in_w: W,
        in_c: C,
        k_h: K,
        k_w: K,
        filters: F,
        pool: P,
        units: N,
    };

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

/// f32 weights of a [`FloatNet`], in the same layouts as the int8 model.
#[derive(Debug, Clone, Copy)]
pub struct FloatWeights<'a> {
    /// `F × K × K × C`.
    pub conv_weights: &'a [f32],
    /// `F`.
    pub conv_bias: &'a [f32],
    /// `N × (PH·PW·F)`, inputs in (row, column, channel) order.
    pub dense_weights: &'a [f32],
    /// `N`.
    pub dense_bias: &'a [f32],
}

/// f32 activation buffers for a [`FloatNet`].
#[derive(Debug, Clone)]
pub struct FloatScratch<
    const CH: usize,
    const CW: usize,
    const F: usize,
    const PH: usize,
    const PW: usize,
> {
    /// Conv + ReLU output.
    pub conv: [[[f32; F]; CW]; CH],
    /// Pooled output.
    pub pool: [[[f32; F]; PW]; PH],
}

impl<const CH: usize, const CW: usize, const F: usize, const PH: usize, const PW: usize>
    FloatScratch<CH, CW, F, PH, PW>
{
    /// Zeroed buffers.
    pub const fn new() -> Self {
        Self {
            conv: [[[0.0; F]; CW]; CH],
            pool: [[[0.0; F]; PW]; PH],
        }
    }
}

impl<const CH: usize, const CW: usize, const F: usize, const PH: usize, const PW: usize> Default
    for FloatScratch<CH, CW, F, PH, PW>
{
    fn default() -> Self {
        Self::new()
    }
}

/// The f32 counterpart of [`Net`]: same architecture, float weights.
#[derive(Debug, Clone, Copy)]
pub struct FloatNet<
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
    weights: FloatWeights<'a>,
}

/// The tutorial's network in f32.
pub type TutorialFloatNet<'a> = FloatNet<'a, 28, 28, 1, 3, 32, 26, 26, 2, 13, 13, 10>;
/// f32 activation buffers for [`TutorialFloatNet`].
pub type TutorialFloatScratch = FloatScratch<26, 26, 32, 13, 13>;

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
    > FloatNet<'a, H, W, C, K, F, CH, CW, P, PH, PW, N>
{
    /// Wraps float weights after checking every length.
    ///
    /// # Errors
    /// [`Error::InconsistentLength`] naming the first array of the wrong length.
    pub fn new(weights: FloatWeights<'a>) -> Result<Self, Error> {
        let () = Net::<'a, H, W, C, K, F, CH, CW, P, PH, PW, N>::SHAPES_AGREE;
        let checks = [
            ("conv weights", weights.conv_weights.len(), F * K * K * C),
            ("conv bias", weights.conv_bias.len(), F),
            (
                "dense weights",
                weights.dense_weights.len(),
                N * PH * PW * F,
            ),
            ("dense bias", weights.dense_bias.len(), N),
        ];
        for (field, found, expected) in checks {
            if found != expected {
                return Err(Error::InconsistentLength {
                    field,
                    expected,
                    found,
                });
            }
        }
        Ok(Self { weights })
    }

    /// Runs one f32 inference on pixels scaled to `0..=1`; returns the logits.
    pub fn infer(
        &self,
        input: &[[[f32; C]; W]; H],
        scratch: &mut FloatScratch<CH, CW, F, PH, PW>,
    ) -> [f32; N] {
        let w = &self.weights;
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
        float::conv2d_f32(
            &g,
            input.as_flattened().as_flattened(),
            w.conv_weights,
            w.conv_bias,
            true,
            scratch.conv.as_flattened_mut().as_flattened_mut(),
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
        let mut logits = [0.0; N];
        float::dense_f32(
            scratch.pool.as_flattened().as_flattened(),
            w.dense_weights,
            w.dense_bias,
            &mut logits,
        );
        logits
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

    #[test]
    fn stream_scratch_size_is_as_documented() {
        // Net::infer's documentation states it.
        assert_eq!(TutorialStreamScratch::BYTES, 1_192);
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

    #[test]
    fn float_net_checks_lengths_and_computes() {
        let cw = [2.0f32];
        let cb = [0.5f32];
        let dw = [1.0f32, -1.0];
        let db = [0.0f32, 0.25];
        let w = FloatWeights {
            conv_weights: &cw,
            conv_bias: &cb,
            dense_weights: &dw,
            dense_bias: &db,
        };
        let net = FloatNet::<'_, 2, 2, 1, 1, 1, 2, 2, 2, 1, 1, 2>::new(w).unwrap();
        let mut s = FloatScratch::new();
        let logits = net.infer(&[[[0.0], [1.0]], [[0.25], [-3.0]]], &mut s);
        // conv+relu: [0.5, 2.5, 1.0, 0]; pool max 2.5; dense: (2.5, −2.25)
        assert_eq!(logits, [2.5, -2.25]);
        let short = FloatWeights {
            conv_bias: &[],
            ..w
        };
        assert!(matches!(
            FloatNet::<'_, 2, 2, 1, 1, 1, 2, 2, 2, 1, 1, 2>::new(short),
            Err(Error::InconsistentLength {
                field: "conv bias",
                ..
            })
        ));
    }
}

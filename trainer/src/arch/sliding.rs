//! The layers that slide a window over each channel on its own: depthwise convolution
//! ([`Depthwise`], Keras' `DepthwiseConv2D`) and average pooling ([`AvgPool`], Keras'
//! `AveragePooling2D`), over NHWC `f32` batches.
//!
//! Both are small next to the GEMMs of [`super::layers`]: plain loops over the window taps,
//! images in parallel chunks of [`CHUNK`] on the current rayon pool, partial gradients summed
//! in chunk order (so the result does not depend on the thread count).

use super::kernels::mask_by_bits;
use super::layers::{clip_bits, Param, Tensor, Trace, CHUNK};
use super::spec::{conv_out, Padding};
use rayon::prelude::*;

/// A square window sliding over an `ih × iw` map, as TensorFlow places it (same padding:
/// the extra row or column at the bottom or right).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Slide {
    /// Input rows.
    pub ih: usize,
    /// Input columns.
    pub iw: usize,
    /// Output rows.
    pub oh: usize,
    /// Output columns.
    pub ow: usize,
    /// Window side.
    pub k: usize,
    /// Step in both directions.
    pub stride: usize,
    /// Padding rows above.
    pub pad_top: usize,
    /// Padding columns on the left.
    pub pad_left: usize,
}

impl Slide {
    /// A `k × k` window moving `stride` over `ih × iw` with `padding`.
    pub fn new(ih: usize, iw: usize, k: usize, stride: usize, padding: Padding) -> Self {
        let (oh, pad_top) = conv_out(ih, k, stride, padding);
        let (ow, pad_left) = conv_out(iw, k, stride, padding);
        Self {
            ih,
            iw,
            oh,
            ow,
            k,
            stride,
            pad_top,
            pad_left,
        }
    }

    /// Calls `f(tap, pixel)` for the taps of output position `p` (`oy·ow + ox`) that fall
    /// inside the input: `tap = ky·k + kx`, `pixel = iy·iw + ix`.
    fn taps(&self, p: usize, mut f: impl FnMut(usize, usize)) {
        let (oy, ox) = (p / self.ow, p % self.ow);
        for ky in 0..self.k {
            let iy = (oy * self.stride + ky).wrapping_sub(self.pad_top);
            if iy >= self.ih {
                continue;
            }
            for kx in 0..self.k {
                let ix = (ox * self.stride + kx).wrapping_sub(self.pad_left);
                if ix < self.iw {
                    f(ky * self.k + kx, iy * self.iw + ix);
                }
            }
        }
    }

    /// Output positions.
    fn positions(&self) -> usize {
        self.oh * self.ow
    }
}

/// Depthwise convolution: input channel `ci` convolved with its own `multiplier` filters
/// gives output channels `ci·multiplier + j`. Kernel `[ky, kx, ci, j]` (Keras' layout, which
/// is TFLite's `[ky][kx][out_c]`), one bias per output channel, then a ReLU or ReLU6.
#[derive(Clone, Debug)]
pub struct Depthwise {
    /// The window.
    pub slide: Slide,
    /// Input channels.
    pub ic: usize,
    /// Output channels per input channel.
    pub multiplier: usize,
    /// ReLU after the bias.
    pub relu: bool,
    /// With `relu`, a ReLU6: the output also clipped at 6.
    pub relu6: bool,
    /// Kernel `[ky][kx][ic·multiplier]`.
    pub kernel: Param,
    /// Bias per output channel.
    pub bias: Param,
}

impl Depthwise {
    /// Zero-initialised parameters.
    pub fn new(slide: Slide, ic: usize, multiplier: usize, relu: bool, relu6: bool) -> Self {
        let oc = ic * multiplier;
        Self {
            slide,
            ic,
            multiplier,
            relu,
            relu6,
            kernel: Param::new(vec![0.0; slide.k * slide.k * oc], true),
            bias: Param::new(vec![0.0; oc], false),
        }
    }

    /// Output channels.
    pub fn out_c(&self) -> usize {
        self.ic * self.multiplier
    }

    /// Per image, per output position: the bias plus each tap's input pixel times its
    /// weight row, then the activation.
    pub(super) fn forward(&self, x: Tensor, trace: Option<&mut Trace>) -> Tensor {
        let (s, ic, m, oc) = (self.slide, self.ic, self.multiplier, self.out_c());
        let (item_in, item_out) = (x.item_len(), s.positions() * oc);
        let (w, bias) = (&self.kernel.value, &self.bias.value);
        let mut data = vec![0.0; x.n * item_out];
        data.par_chunks_mut(item_out.max(1))
            .zip(x.data.par_chunks(item_in.max(1)))
            .for_each(|(y, img)| {
                for (p, out) in y.chunks_exact_mut(oc).enumerate() {
                    out.copy_from_slice(bias);
                    s.taps(p, |t, px| {
                        let pixel = &img[px * ic..][..ic];
                        let row = &w[t * oc..][..oc];
                        for (o, (v, w)) in out.iter_mut().zip(row).enumerate() {
                            *v += pixel[o / m] * w;
                        }
                    });
                }
                activate(y, self.relu, self.relu6);
            });
        let y = Tensor {
            n: x.n,
            h: s.oh,
            w: s.ow,
            c: oc,
            data,
        };
        if let Some(trace) = trace {
            trace.active = self.relu.then(|| clip_bits(&y.data, item_out, self.relu6));
            trace.input = Some(x);
        }
        y
    }

    /// The output gradient where the activation passed it gives, per output position and
    /// tap, `dW[tap] += g·pixel`, `db += g` and `dx[pixel] += g·W[tap]`. Gradients in the
    /// parameters' layout.
    pub(super) fn backward(
        &self,
        mut dy: Tensor,
        need_dx: bool,
        trace: &mut Trace,
        grads: &mut [Vec<f32>],
    ) -> Option<Tensor> {
        let x = trace
            .input
            .take()
            .expect("depthwise backward after a training forward");
        let (s, ic, m, oc) = (self.slide, self.ic, self.multiplier, self.out_c());
        let (item_in, item_out) = (x.item_len(), s.positions() * oc);
        if let Some(active) = trace.active.take() {
            let words = item_out.div_ceil(64);
            dy.data
                .par_chunks_mut(item_out.max(1))
                .zip(active.par_chunks(words.max(1)))
                .for_each(|(dy, bits)| mask_by_bits(dy, bits));
        }
        let w = &self.kernel.value;
        let mut dx = vec![0.0; if need_dx { x.data.len() } else { 0 }];
        let mut dx_chunks: Vec<&mut [f32]> = dx.chunks_mut((CHUNK * item_in).max(1)).collect();
        dx_chunks.resize_with(
            x.data.len().div_ceil((CHUNK * item_in).max(1)),
            Default::default,
        );
        let parts: Vec<(Vec<f32>, Vec<f32>)> = x
            .data
            .par_chunks((CHUNK * item_in).max(1))
            .zip(dy.data.par_chunks((CHUNK * item_out).max(1)))
            .zip(dx_chunks)
            .map(|((x, dy), dx)| {
                let (mut dw, mut db) = (vec![0.0; w.len()], vec![0.0; oc]);
                for (i, (img, dy)) in x
                    .chunks_exact(item_in)
                    .zip(dy.chunks_exact(item_out))
                    .enumerate()
                {
                    for (p, g) in dy.chunks_exact(oc).enumerate() {
                        add(&mut db, g);
                        s.taps(p, |t, px| {
                            let pixel = &img[px * ic..][..ic];
                            let dw = &mut dw[t * oc..][..oc];
                            for (o, (d, g)) in dw.iter_mut().zip(g).enumerate() {
                                *d += g * pixel[o / m];
                            }
                            if need_dx {
                                let dpix = &mut dx[(i * item_in + px * ic)..][..ic];
                                for (o, (g, w)) in g.iter().zip(&w[t * oc..][..oc]).enumerate() {
                                    dpix[o / m] += g * w;
                                }
                            }
                        });
                    }
                }
                (dw, db)
            })
            .collect();
        for (dw, db) in parts {
            add(&mut grads[0], &dw);
            add(&mut grads[1], &db);
        }
        need_dx.then_some(Tensor { data: dx, ..x })
    }
}

/// Average pooling: each output the mean of its window's values inside the input (padding
/// not counted, as TensorFlow's).
#[derive(Clone, Debug)]
pub struct AvgPool {
    /// The window.
    pub slide: Slide,
}

impl AvgPool {
    /// The mean over each window, channel by channel.
    pub(super) fn forward(&self, x: Tensor) -> Tensor {
        let (s, c) = (self.slide, x.c);
        let (item_in, item_out) = (x.item_len(), s.positions() * c);
        let mut data = vec![0.0; x.n * item_out];
        data.par_chunks_mut(item_out.max(1))
            .zip(x.data.par_chunks(item_in.max(1)))
            .for_each(|(y, img)| {
                for (p, out) in y.chunks_exact_mut(c.max(1)).enumerate() {
                    let mut count = 0;
                    s.taps(p, |_, px| {
                        add(out, &img[px * c..][..c]);
                        count += 1;
                    });
                    let inv = 1.0 / count.max(1) as f32;
                    out.iter_mut().for_each(|v| *v *= inv);
                }
            });
        Tensor {
            n: x.n,
            h: s.oh,
            w: s.ow,
            c,
            data,
        }
    }

    /// Each output's gradient shared equally among its window's input values.
    pub(super) fn backward(&self, dy: Tensor, (h, w, c): (usize, usize, usize)) -> Tensor {
        let s = self.slide;
        let (item_in, item_out) = (h * w * c, dy.item_len());
        let mut dx = vec![0.0; dy.n * item_in];
        dx.par_chunks_mut(item_in.max(1))
            .zip(dy.data.par_chunks(item_out.max(1)))
            .for_each(|(dx, dy)| {
                for (p, g) in dy.chunks_exact(c.max(1)).enumerate() {
                    let mut count = 0;
                    s.taps(p, |_, _| count += 1);
                    let inv = 1.0 / count.max(1) as f32;
                    s.taps(p, |_, px| {
                        for (d, g) in dx[px * c..][..c].iter_mut().zip(g) {
                            *d += g * inv;
                        }
                    });
                }
            });
        Tensor {
            n: dy.n,
            h,
            w,
            c,
            data: dx,
        }
    }
}

/// ReLU (`relu`) or ReLU6 (`relu` and `relu6`) in place.
pub(super) fn activate(y: &mut [f32], relu: bool, relu6: bool) {
    if relu {
        let top = if relu6 { 6.0 } else { f32::INFINITY };
        y.iter_mut().for_each(|v| *v = v.clamp(0.0, top));
    }
}

fn add(sum: &mut [f32], part: &[f32]) {
    for (s, p) in sum.iter_mut().zip(part) {
        *s += p;
    }
}

//! [`OpShape`]: an operation's type and shapes without its parameters — what a spec
//! declares (`model_spec::plan`), what a model file holds ([`Op::shape`]) and what the
//! stage planner ([`super::stages::plan`]) works from. The two compare with `==` and print
//! alike, so that a mismatch names both sides in the same words.

use super::format::{AvgPoolOp, BranchOp, ConvOp, DenseOp, DepthwiseOp, Op, PoolOp, WindowFields};
use crate::format::ChannelParams;
use crate::kernels::add::ADD_SCRATCH_WORDS;
use crate::kernels::average_pool::AvgPoolGeometry;
use crate::kernels::conv::{ConvGeometry, Padding};
use crate::kernels::depthwise::{depthwise_scratch_words, DepthwiseGeometry};
use crate::Error;
use core::fmt;

/// An operation's type and shapes, without its parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpShape {
    /// Convolution, weights `[filters][ky][kx][in_c]`.
    Conv2d {
        /// Its shapes.
        geometry: ConvGeometry,
        /// Fused ReLU.
        relu: bool,
    },
    /// Max pooling of an `in_h × in_w × channels` input over non-overlapping `pool × pool`
    /// windows (remainder dropped).
    MaxPool2d {
        /// Input rows.
        in_h: usize,
        /// Input columns.
        in_w: usize,
        /// Channels.
        channels: usize,
        /// Window side and stride.
        pool: usize,
    },
    /// Fully connected, weights `[units][inputs]`.
    Dense {
        /// Inputs (the flattened previous output).
        inputs: usize,
        /// Outputs.
        units: usize,
        /// Fused ReLU.
        relu: bool,
    },
    /// Depthwise convolution, weights `[ky][kx][out_c]`.
    DepthwiseConv2d {
        /// Its shapes.
        geometry: DepthwiseGeometry,
        /// Lowest output value (the fused activation's).
        min: i8,
        /// Highest output value.
        max: i8,
    },
    /// Average pooling.
    AvgPool2d {
        /// Its shapes.
        geometry: AvgPoolGeometry,
        /// Lowest output value (the fused activation's).
        min: i8,
        /// Highest output value.
        max: i8,
    },
    /// Elementwise addition (TFLite's ADD) of the previous output and an earlier tensor
    /// of the same shape, only in imported models.
    Add {
        /// Rows.
        h: usize,
        /// Columns.
        w: usize,
        /// Channels.
        channels: usize,
        /// The other operand: tensor 0 is the model's input, tensor `k + 1` the output of
        /// operation `k`.
        other: usize,
        /// Lowest output value (the fused activation's).
        min: i8,
        /// Highest output value.
        max: i8,
    },
    /// An earlier tensor again: the next operation reads it instead of the previous
    /// output (a branch of a graph; computes nothing).
    Branch {
        /// Rows.
        h: usize,
        /// Columns.
        w: usize,
        /// Channels.
        channels: usize,
        /// The tensor: 0 the model's input, `k + 1` the output of operation `k`.
        from: usize,
    },
}

impl OpShape {
    /// Output `(rows, columns, channels)`; a dense layer's is `(1, 1, units)`.
    pub const fn out_hwc(&self) -> (usize, usize, usize) {
        match *self {
            OpShape::Conv2d { geometry: g, .. } => (g.out_h(), g.out_w(), g.filters),
            OpShape::MaxPool2d {
                in_h,
                in_w,
                channels,
                pool,
            } => match (in_h.checked_div(pool), in_w.checked_div(pool)) {
                (Some(h), Some(w)) => (h, w, channels),
                _ => (0, 0, channels),
            },
            OpShape::Dense { units, .. } => (1, 1, units),
            OpShape::DepthwiseConv2d { geometry: g, .. } => (g.out_h(), g.out_w(), g.out_c()),
            OpShape::AvgPool2d { geometry: g, .. } => (g.out_h(), g.out_w(), g.channels),
            OpShape::Add { h, w, channels, .. } | OpShape::Branch { h, w, channels, .. } => {
                (h, w, channels)
            }
        }
    }

    /// The earlier tensor an [`OpShape::Add`] or an [`OpShape::Branch`] reads (0 the
    /// model's input, `k + 1` the output of operation `k`).
    pub const fn reads(&self) -> Option<usize> {
        match *self {
            OpShape::Add { other, .. } => Some(other),
            OpShape::Branch { from, .. } => Some(from),
            _ => None,
        }
    }

    /// Input `(rows, columns, channels)`; a dense layer's is `(1, 1, inputs)`.
    pub const fn in_hwc(&self) -> (usize, usize, usize) {
        match *self {
            OpShape::Conv2d { geometry: g, .. } => (g.in_h, g.in_w, g.in_c),
            OpShape::MaxPool2d {
                in_h,
                in_w,
                channels,
                ..
            } => (in_h, in_w, channels),
            OpShape::Dense { inputs, .. } => (1, 1, inputs),
            OpShape::DepthwiseConv2d { geometry: g, .. } => (g.in_h, g.in_w, g.in_c),
            OpShape::AvgPool2d { geometry: g, .. } => (g.in_h, g.in_w, g.channels),
            OpShape::Add { h, w, channels, .. } | OpShape::Branch { h, w, channels, .. } => {
                (h, w, channels)
            }
        }
    }

    /// Values read.
    pub const fn in_len(&self) -> usize {
        let (h, w, c) = self.in_hwc();
        h * w * c
    }

    /// Values written.
    pub const fn out_len(&self) -> usize {
        let (h, w, c) = self.out_hwc();
        h * w * c
    }

    /// Values in one convolution patch (0 for other operations, depthwise included).
    pub const fn taps(&self) -> usize {
        match *self {
            OpShape::Conv2d { geometry: g, .. } => g.taps(),
            _ => 0,
        }
    }

    /// Outputs of a dense layer (0 for other operations).
    pub const fn units(&self) -> usize {
        match *self {
            OpShape::Dense { units, .. } => units,
            _ => 0,
        }
    }

    /// Output channels with their own bias and requantization (0 for pooling).
    pub const fn channels(&self) -> usize {
        match *self {
            OpShape::Conv2d { geometry: g, .. } => g.filters,
            OpShape::MaxPool2d { .. }
            | OpShape::AvgPool2d { .. }
            | OpShape::Add { .. }
            | OpShape::Branch { .. } => 0,
            OpShape::Dense { units, .. } => units,
            OpShape::DepthwiseConv2d { geometry: g, .. } => g.out_c(),
        }
    }

    /// int8 weights (bytes).
    pub const fn weights(&self) -> usize {
        match *self {
            OpShape::Conv2d { geometry: g, .. } => g.filters * g.taps(),
            OpShape::MaxPool2d { .. }
            | OpShape::AvgPool2d { .. }
            | OpShape::Add { .. }
            | OpShape::Branch { .. } => 0,
            OpShape::Dense { inputs, units, .. } => inputs * units,
            OpShape::DepthwiseConv2d { geometry: g, .. } => g.weights(),
        }
    }

    /// Whether a ReLU is fused in (never for pooling; a depthwise conv's activation is its
    /// clamp, `min` and `max`).
    pub const fn relu(&self) -> bool {
        match *self {
            OpShape::Conv2d { relu, .. } | OpShape::Dense { relu, .. } => relu,
            _ => false,
        }
    }

    /// The type's name as spec files write it (`conv2d`, `maxpool2d`, `dense`,
    /// `depthwise_conv2d`, `avgpool2d`; `add` and `branch`, which only imported models
    /// have).
    pub const fn type_name(&self) -> &'static str {
        match self {
            OpShape::Conv2d { .. } => "conv2d",
            OpShape::MaxPool2d { .. } => "maxpool2d",
            OpShape::Dense { .. } => "dense",
            OpShape::DepthwiseConv2d { .. } => "depthwise_conv2d",
            OpShape::AvgPool2d { .. } => "avgpool2d",
            OpShape::Add { .. } => "add",
            OpShape::Branch { .. } => "branch",
        }
    }

    /// Words of scratch the operation's kernel takes when it runs alone (a depthwise conv
    /// or an average pool: one accumulator per output channel; an add: its tables; 0 for
    /// the others, whose working memory the stage plan counts).
    pub const fn alone_words(&self) -> usize {
        match *self {
            OpShape::DepthwiseConv2d { geometry: g, .. } => depthwise_scratch_words(&g),
            OpShape::AvgPool2d { geometry: g, .. } => g.channels,
            OpShape::Add { .. } => ADD_SCRATCH_WORDS,
            _ => 0,
        }
    }
}

impl fmt::Display for OpShape {
    /// E.g. `conv2d 3×3 stride 1 valid relu, 28×28×1 → 26×26×32`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let act = |relu: bool| if relu { "relu" } else { "none" };
        let (out_h, out_w, out_c) = self.out_hwc();
        match *self {
            OpShape::Conv2d { geometry: g, relu } => {
                let pad = match g.padding {
                    Padding::Valid => "valid",
                    Padding::Same => "same",
                };
                write!(
                    f,
                    "conv2d {}×{} stride {} {pad} {}, {}×{}×{} → {out_h}×{out_w}×{out_c}",
                    g.k_h,
                    g.k_w,
                    g.stride,
                    act(relu),
                    g.in_h,
                    g.in_w,
                    g.in_c
                )
            }
            OpShape::MaxPool2d {
                in_h,
                in_w,
                channels,
                pool,
            } => write!(
                f,
                "maxpool2d {pool}×{pool}, {in_h}×{in_w}×{channels} → {out_h}×{out_w}×{out_c}"
            ),
            OpShape::Dense {
                inputs,
                units,
                relu,
            } => write!(f, "dense {}, {inputs} → {units}", act(relu)),
            OpShape::DepthwiseConv2d {
                geometry: g,
                min,
                max,
            } => write!(
                f,
                "depthwise_conv2d {} ×{} clamp {min}..={max}, {}×{}×{} → {out_h}×{out_w}×{out_c}",
                g.window, g.multiplier, g.in_h, g.in_w, g.in_c
            ),
            OpShape::AvgPool2d {
                geometry: g,
                min,
                max,
            } => write!(
                f,
                "avgpool2d {} clamp {min}..={max}, {}×{}×{} → {out_h}×{out_w}×{out_c}",
                g.window, g.in_h, g.in_w, g.channels
            ),
            OpShape::Add {
                other, min, max, ..
            } => write!(
                f,
                "add tensor {other} clamp {min}..={max}, {out_h}×{out_w}×{out_c} → {out_h}×{out_w}×{out_c}"
            ),
            OpShape::Branch { from, .. } => {
                write!(f, "branch to tensor {from}, {out_h}×{out_w}×{out_c}")
            }
        }
    }
}

impl<'a> Op<'a> {
    /// The operation's [`OpShape`].
    pub fn shape(&self) -> OpShape {
        match *self {
            Op::Conv2d(c) => OpShape::Conv2d {
                geometry: c.geometry(),
                relu: c.relu,
            },
            Op::Conv2dRect(c, k_w) => {
                let mut geometry = c.geometry();
                geometry.k_w = usize::from(k_w);
                OpShape::Conv2d {
                    geometry,
                    relu: c.relu,
                }
            }
            Op::DepthwiseConv2d(d) => OpShape::DepthwiseConv2d {
                geometry: d.geometry(),
                min: d.min,
                max: d.max,
            },
            Op::AvgPool2d(p) => OpShape::AvgPool2d {
                geometry: p.geometry(),
                min: p.min,
                max: p.max,
            },
            Op::MaxPool2d(p) => OpShape::MaxPool2d {
                in_h: p.in_h.into(),
                in_w: p.in_w.into(),
                channels: p.channels.into(),
                pool: p.pool.into(),
            },
            Op::Dense(d) => OpShape::Dense {
                inputs: d.inputs as usize,
                units: d.units.into(),
                relu: d.relu,
            },
            Op::Add(a) => OpShape::Add {
                h: a.h.into(),
                w: a.w.into(),
                channels: a.channels.into(),
                other: a.other.into(),
                min: a.min,
                max: a.max,
            },
            Op::Branch(b) => OpShape::Branch {
                h: b.h.into(),
                w: b.w.into(),
                channels: b.channels.into(),
                from: b.from.into(),
            },
        }
    }

    /// The operation of `shape` with `params` (a conv's or dense layer's; pooling has
    /// none), as a model file stores it.
    ///
    /// # Errors
    /// [`Error::Malformed`] for a dimension the format cannot hold (over `u16`; a dense
    /// layer's inputs over `u32`), or a conv, depthwise conv or dense layer without
    /// `params`, or an add (whose requantization is not a [`ChannelParams`]: build its
    /// [`Op::Add`] directly). A convolution whose kernel is not square is an
    /// [`Op::Conv2dRect`].
    pub fn from_shape(shape: OpShape, params: Option<ChannelParams<'a>>) -> Result<Self, Error> {
        let too_big = Error::Malformed {
            what: "a dimension over the format's u16 (inputs: u32)",
        };
        let short = |n: usize| u16::try_from(n).map_err(|_| too_big);
        let params = || {
            params.ok_or(Error::Malformed {
                what: "a conv or dense operation without weights",
            })
        };
        Ok(match shape {
            OpShape::Conv2d { geometry: g, relu } => {
                let conv = ConvOp {
                    in_h: short(g.in_h)?,
                    in_w: short(g.in_w)?,
                    in_c: short(g.in_c)?,
                    filters: short(g.filters)?,
                    kernel: short(g.k_h)?,
                    stride: short(g.stride)?,
                    padding: g.padding,
                    relu,
                    params: params()?,
                };
                if g.k_h == g.k_w {
                    Op::Conv2d(conv)
                } else {
                    Op::Conv2dRect(conv, short(g.k_w)?)
                }
            }
            OpShape::DepthwiseConv2d {
                geometry: g,
                min,
                max,
            } => Op::DepthwiseConv2d(DepthwiseOp {
                in_h: short(g.in_h)?,
                in_w: short(g.in_w)?,
                in_c: short(g.in_c)?,
                multiplier: short(g.multiplier)?,
                window: WindowFields::of(&g.window)?,
                min,
                max,
                params: params()?,
            }),
            OpShape::AvgPool2d {
                geometry: g,
                min,
                max,
            } => Op::AvgPool2d(AvgPoolOp {
                in_h: short(g.in_h)?,
                in_w: short(g.in_w)?,
                channels: short(g.channels)?,
                window: WindowFields::of(&g.window)?,
                min,
                max,
            }),
            OpShape::MaxPool2d {
                in_h,
                in_w,
                channels,
                pool,
            } => Op::MaxPool2d(PoolOp {
                in_h: short(in_h)?,
                in_w: short(in_w)?,
                channels: short(channels)?,
                pool: short(pool)?,
            }),
            OpShape::Dense {
                inputs,
                units,
                relu,
            } => Op::Dense(DenseOp {
                inputs: u32::try_from(inputs).map_err(|_| too_big)?,
                units: short(units)?,
                relu,
                params: params()?,
            }),
            OpShape::Branch {
                h,
                w,
                channels,
                from,
            } => Op::Branch(BranchOp {
                h: short(h)?,
                w: short(w)?,
                channels: short(channels)?,
                from: short(from)?,
            }),
            OpShape::Add { .. } => {
                return Err(Error::Malformed {
                    what: "an add from its shape alone (its requantization is not a ChannelParams)",
                })
            }
        })
    }
}

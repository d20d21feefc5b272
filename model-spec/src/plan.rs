//! The int8 execution plan of a [`Spec`]: the operations an int8 inference runs, in order.
//!
//! Dropout and flatten disappear (NHWC activations are already flat, row-major as Keras
//! flattens them), batch normalisation is folded into the conv or dense layer before it, and
//! the last dense layer's softmax becomes "the outputs are logits". What remains is a chain of
//! [`OpShape::Conv2d`], [`OpShape::DepthwiseConv2d`], [`OpShape::MaxPool2d`],
//! [`OpShape::AvgPool2d`] and [`OpShape::Dense`], and for each residual block an
//! [`OpShape::Add`] (after a [`OpShape::Branch`] back to the block's input and the shortcut's
//! operations, if the shortcut has layers); a format-3 model.bin stores exactly these
//! operations, and the firmware's build derives its types and buffers from them.
//!
//! Activations: a ReLU6 is planned as a ReLU (`relu: true`), its 6 being the top of the
//! int8 output range (the export calibrates the range to at most `[0, 6]`). A depthwise
//! conv's and an average pool's clamp is always the whole int8 range, `-128..=127`: after a
//! ReLU or ReLU6 the output's zero point is −128 (its range starts at 0), so the clamp to
//! int8 is the activation.
//!
//! Stages and buffers: infer-core's stage plan ([`Plan::stages`],
//! `infer_core::stack::stages::plan`) groups the operations into the fused stages the
//! engine runs. Stage `j` reads the input image (`j = 0`) or the output of the stage before
//! and writes its own beside it (the last writes the logits), so an arena of
//! [`Plan::arena`] bytes, one patch buffer of [`Plan::patch_words`] words (packed patch
//! and working memory) and [`Plan::stack_bytes`] of kernel scratch on the stack hold every
//! activation.

use crate::spec::{Activation, LayerSpec, Padding, Spec};
use anyhow::{bail, ensure, Result};
use infer_core::kernels::average_pool::AvgPoolGeometry;
use infer_core::kernels::conv::ConvGeometry;
use infer_core::kernels::depthwise::DepthwiseGeometry;
use infer_core::kernels::window::Window;
use infer_core::stack::stages::{self, Pixels, Stages};
pub use infer_core::stack::OpShape;
use std::ops::Range;

/// The operation's shape fields in the order model.bin (format 3) writes them: conv
/// `in_h, in_w, in_c, filters, kernel, stride` (and the kernel's columns last if it is not
/// square); pool `in_h, in_w, channels, pool`; dense `inputs, units`; depthwise conv
/// `in_h, in_w, in_c, multiplier, k_h, k_w, stride_h, stride_w`; average pool the same
/// without the multiplier; add `h, w, channels, other`; branch `h, w, channels, from`. Each
/// is a 16-bit field but a dense layer's `inputs` (32-bit).
pub fn wire_fields(shape: &OpShape) -> Vec<usize> {
    match *shape {
        OpShape::Conv2d { geometry: g, .. } if g.k_h != g.k_w => {
            vec![g.in_h, g.in_w, g.in_c, g.filters, g.k_h, g.stride, g.k_w]
        }
        OpShape::Conv2d { geometry: g, .. } => {
            vec![g.in_h, g.in_w, g.in_c, g.filters, g.k_h, g.stride]
        }
        OpShape::DepthwiseConv2d { geometry: g, .. } => {
            let w = g.window;
            vec![
                g.in_h,
                g.in_w,
                g.in_c,
                g.multiplier,
                w.k_h,
                w.k_w,
                w.stride_h,
                w.stride_w,
            ]
        }
        OpShape::AvgPool2d { geometry: g, .. } => {
            let w = g.window;
            vec![
                g.in_h, g.in_w, g.channels, w.k_h, w.k_w, w.stride_h, w.stride_w,
            ]
        }
        OpShape::MaxPool2d {
            in_h,
            in_w,
            channels,
            pool,
        } => vec![in_h, in_w, channels, pool],
        OpShape::Dense { inputs, units, .. } => vec![inputs, units],
        OpShape::Add {
            h,
            w,
            channels,
            other,
            ..
        } => vec![h, w, channels, other],
        OpShape::Branch {
            h,
            w,
            channels,
            from,
        } => vec![h, w, channels, from],
    }
}

/// An operation and where it comes from in the spec.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PlanOp {
    /// What it computes.
    pub kind: OpShape,
    /// Index of its layer (conv2d, depthwise_conv2d, maxpool2d, avgpool2d or dense) in
    /// [`Spec::layers`].
    pub layer: usize,
    /// Index of the batch-norm layer folded into it, if any.
    pub batchnorm: Option<usize>,
}

/// The int8 operations of a spec, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Input `(height, width, channels)`.
    pub input: (usize, usize, usize),
    /// The operations, first to last; the last is a dense layer whose outputs are the logits.
    pub ops: Vec<PlanOp>,
}

impl Plan {
    /// The plan of `spec`.
    ///
    /// # Errors
    /// A batch norm that cannot be folded: it must directly follow a conv2d, depthwise_conv2d
    /// or dense layer with `activation = "none"` (fold it into a ReLU layer and the ReLU
    /// would come first) whose output no residual block reads; residual blocks that would
    /// need more than the engine's activation buffers.
    pub fn of(spec: &Spec) -> Result<Self> {
        let mut ops: Vec<PlanOp> = Vec::new();
        // The operation tensor of each spec tensor (0 the input, `i + 1` layer `i`'s output;
        // for operations, `k + 1` is operation `k`'s output): a layer without an operation
        // of its own leaves its input's.
        let mut tensor = vec![0; spec.layers.len() + 1];
        for (index, layer) in spec.layers.iter().enumerate() {
            tensor[index + 1] = ops.len();
            let (h, w, c) = spec.input_of(index).hwc();
            let kind = match *layer {
                LayerSpec::Conv2d {
                    filters,
                    kernel,
                    stride,
                    padding,
                    activation,
                } => OpShape::Conv2d {
                    geometry: ConvGeometry {
                        in_h: h,
                        in_w: w,
                        in_c: c,
                        k_h: kernel,
                        k_w: kernel,
                        filters,
                        stride,
                        padding,
                    },
                    relu: activation.clamps(),
                },
                LayerSpec::DepthwiseConv2d {
                    kernel,
                    stride,
                    padding,
                    multiplier,
                    ..
                } => OpShape::DepthwiseConv2d {
                    geometry: DepthwiseGeometry {
                        in_h: h,
                        in_w: w,
                        in_c: c,
                        multiplier,
                        window: square(kernel, stride, padding),
                    },
                    min: i8::MIN,
                    max: i8::MAX,
                },
                LayerSpec::AvgPool2d {
                    pool,
                    stride,
                    padding,
                } => OpShape::AvgPool2d {
                    geometry: AvgPoolGeometry {
                        in_h: h,
                        in_w: w,
                        channels: c,
                        window: square(pool, stride, padding),
                    },
                    min: i8::MIN,
                    max: i8::MAX,
                },
                LayerSpec::MaxPool2d { pool } => OpShape::MaxPool2d {
                    in_h: h,
                    in_w: w,
                    channels: c,
                    pool,
                },
                LayerSpec::Dense { units, activation } => OpShape::Dense {
                    inputs: h * w * c,
                    units,
                    relu: activation.clamps(),
                },
                LayerSpec::Branch { from } => {
                    let (h, w, channels) = spec.input_of(from).hwc();
                    OpShape::Branch {
                        h,
                        w,
                        channels,
                        from: tensor[from],
                    }
                }
                LayerSpec::Add { other, .. } => OpShape::Add {
                    h,
                    w,
                    channels: c,
                    other: tensor[other],
                    // After a ReLU or ReLU6 the output's zero point is −128 (its range
                    // starts at 0): the clamp to int8 is the activation.
                    min: i8::MIN,
                    max: i8::MAX,
                },
                LayerSpec::BatchNorm { .. } if spec.reads_again(index) => bail!(
                    "layer {index} (batchnorm): int8 export folds batch norm into the layer just before it, but a residual block reads that layer's output as it is (the block's input); put the batch norm after a conv2d inside the block, or before the block"
                ),
                LayerSpec::BatchNorm { activation } => {
                    let previous = index
                        .checked_sub(1)
                        .and_then(|p| ops.last_mut().filter(|op| op.layer == p));
                    match previous {
                        Some(op) if op.batchnorm.is_none() => match &mut op.kind {
                            OpShape::Conv2d { relu, .. } | OpShape::Dense { relu, .. }
                                if !*relu =>
                            {
                                // Batch norm, then its activation: the folded layer's.
                                *relu = activation.clamps();
                                op.batchnorm = Some(index);
                                continue;
                            }
                            // Its clamp is the whole int8 range whatever the activation.
                            OpShape::DepthwiseConv2d { .. }
                                if spec.layers[op.layer].activation() == Activation::None =>
                            {
                                op.batchnorm = Some(index);
                                continue;
                            }
                            _ => {}
                        },
                        _ => {}
                    }
                    bail!(
                        "layer {index} (batchnorm): int8 export folds batch norm into the layer just before it, which must be a conv2d, depthwise_conv2d or dense with activation = \"none\" (a ReLU in between cannot be folded); for conv → batch norm → ReLU write the conv without activation and `activation = \"relu\"` on the batchnorm"
                    )
                }
                LayerSpec::Flatten | LayerSpec::Dropout { .. } => continue,
            };
            ops.push(PlanOp {
                kind,
                layer: index,
                batchnorm: None,
            });
            tensor[index + 1] = ops.len();
        }
        let plan = Self {
            input: spec.input.hwc(),
            ops,
        };
        let shapes = plan.shapes();
        ensure!(
            shapes.len() > infer_core::stack::format::MAX_OPS
                || stages::stage_buffers(&stages::plan(&shapes), &shapes).is_some(),
            "the residual blocks keep more tensors alive at once than the engine's {} activation buffers hold",
            stages::MAX_BUFFERS
        );
        Ok(plan)
    }

    /// The activation of operation `op` of this plan of `spec`: its batch norm's if it
    /// folds one, else its layer's (none for pooling).
    pub fn activation(spec: &Spec, op: &PlanOp) -> Activation {
        spec.layers[op.batchnorm.unwrap_or(op.layer)].activation()
    }

    /// Values in the input image.
    pub fn input_len(&self) -> usize {
        self.input.0 * self.input.1 * self.input.2
    }

    /// Number of classes (outputs of the last operation).
    pub fn classes(&self) -> usize {
        self.ops.last().map_or(0, |op| op.kind.out_len())
    }

    /// Each operation's [`OpShape`], as infer-core plans from.
    pub fn shapes(&self) -> Vec<OpShape> {
        self.ops.iter().map(|op| op.kind).collect()
    }

    /// The fused stages the engine runs (`infer_core::stack::stages::plan`).
    pub fn stages(&self) -> Stages {
        stages::plan(&self.shapes())
    }

    /// The layers the firmware profiles (its `layers:` line), each as its operations'
    /// indices and its name, `<type>_<index>`: every operation, but that a conv
    /// and the max pool fused into it are one layer (`conv2d_<i>+maxpool2d_<i+1>`: the
    /// pool is the conv's requantization's max), and so are a dense layer and the add
    /// computed in place after it (`dense_<i>+add_<i+1>`: its sums are added as they are
    /// finished).
    pub fn layer_names(&self) -> Vec<(Range<usize>, String)> {
        let name = |i: usize| format!("{}_{i}", self.ops[i].kind.type_name());
        let mut layers = Vec::new();
        for stage in &self.stages() {
            let mut i = stage.first;
            while i <= stage.last() {
                let joined = match self.ops[i].kind {
                    OpShape::Conv2d { .. } if stage.conv && stage.pool && i == stage.first => 2,
                    OpShape::Dense { .. } if stage.dense && stage.add => 2,
                    _ => 1,
                };
                let names: Vec<String> = (i..i + joined).map(name).collect();
                layers.push((i..i + joined, names.join("+")));
                i += joined;
            }
        }
        layers
    }

    /// Bytes of the activation arena (`stages::assign_buffers`): every stage's output but
    /// the last's (the wide i32 logits, which go to the caller's own array), at offsets
    /// where the tensors live at once never overlap (in a chain, each output beside the
    /// one it reads; an add computed in place takes its other operand's place).
    ///
    /// # Panics
    /// If the operations need more buffers (a model.bin whose decoder refused it; [`Plan::of`]
    /// refuses such a spec).
    pub fn arena(&self) -> usize {
        self.buffer_plan().arena
    }

    /// Where each stage's output goes (`stages::assign_buffers`).
    ///
    /// # Panics
    /// As [`Plan::arena`].
    pub fn buffer_plan(&self) -> stages::BufferPlan {
        let shapes = self.shapes();
        stages::stage_buffers(&stages::plan(&shapes), &shapes)
            .expect("a plan whose tensors fit the buffers (the decoder checks a model.bin's)")
    }

    /// Values in the largest convolution patch (`kernel² · in_c`).
    pub fn patch_len(&self) -> usize {
        self.ops.iter().map(|op| op.kind.taps()).max().unwrap_or(0)
    }

    /// u32 words of the patch buffer the stages take computing `pixels` conv pixels at once
    /// (the largest stage's packed patch and working memory:
    /// `infer_core::stack::stages::Stage::patch_words`).
    pub fn patch_words(&self, pixels: Pixels) -> usize {
        let shapes = self.shapes();
        let stages = stages::plan(&shapes);
        stages
            .iter()
            .map(|s| s.patch_words(&shapes, pixels))
            .max()
            .unwrap_or(0)
    }

    /// Bytes of kernel scratch the largest stage keeps on its stack (the one-channel 3×3
    /// fast path's: `infer_core::stack::stages::Stage::stack_bytes`).
    pub fn stack_bytes(&self) -> usize {
        let shapes = self.shapes();
        let stages = stages::plan(&shapes);
        stages
            .iter()
            .map(|s| s.stack_bytes(&shapes))
            .max()
            .unwrap_or(0)
    }

    /// int8 weights in bytes.
    pub fn weights(&self) -> usize {
        self.ops.iter().map(|op| op.kind.weights()).sum()
    }

    /// Output channels with per-channel parameters, over all operations.
    pub fn channels(&self) -> usize {
        self.ops.iter().map(|op| op.kind.channels()).sum()
    }
}

/// A square `side × side` window moving `stride` both ways.
fn square(side: usize, stride: usize, padding: Padding) -> Window {
    Window {
        k_h: side,
        k_w: side,
        stride_h: stride,
        stride_w: stride,
        padding,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_full_tutorial_model_plans_five_operations() {
        let plan = Plan::of(&Spec::load("tutorial-full").unwrap()).unwrap();
        let kinds: Vec<_> = plan.ops.iter().map(|op| op.kind.type_name()).collect();
        assert_eq!(kinds, ["conv2d", "conv2d", "maxpool2d", "dense", "dense"]);
        assert_eq!(
            plan.ops.iter().map(|op| op.layer).collect::<Vec<_>>(),
            [0, 1, 2, 5, 7]
        );
        assert_eq!(plan.ops[3].kind.in_len(), 12 * 12 * 64);
        // Stages: conv; conv + pool + dense 128 (streamed); dense 10. The first two run as
        // one, the second reading the first's 26 × 26 × 32 map through a ring of 4 rows.
        assert_eq!(plan.stages().len(), 3);
        // Profiled layer by layer: the pool is the second conv's.
        let layers: Vec<String> = plan.layer_names().into_iter().map(|(_, n)| n).collect();
        assert_eq!(
            layers,
            ["conv2d_0", "conv2d_1+maxpool2d_2", "dense_3", "dense_4"]
        );
        assert_eq!(plan.arena(), 4 * 26 * 32 + 128);
        assert_eq!(plan.patch_len(), 3 * 3 * 32);
        // Both convs' working memory: the first's quad patch (4 × 5 words for 9 taps), four
        // positions' 32 values, 32 offset terms (for int8 patches) and its background quad's
        // values (32 words: one channel, no pool); the second's quad patch (4 × 144 words),
        // its 64 pooled values, 128 accumulators and 64 offset terms.
        assert_eq!(
            plan.patch_words(Pixels::Four),
            (4 * 5 + 4 * 32 + 32 + 32) + (4 * (3 * 3 * 32 / 2) + 64 + 128 + 64)
        );
        // One pixel at a time: one patch each, one position's values, no offset terms.
        assert_eq!(
            plan.patch_words(Pixels::One),
            (5 + 32) + (3 * 3 * 32 / 2 + 64 + 128)
        );
        assert_eq!(plan.stack_bytes(), 0);
        assert_eq!(plan.weights() + plan.channels(), 1_199_882);
        assert_eq!(plan.classes(), 10);
        for pair in plan.ops.windows(2) {
            assert_eq!(pair[0].kind.out_len(), pair[1].kind.in_len());
        }
    }

    #[test]
    fn a_ds_cnn_plans_depthwise_convs_an_average_pool_and_relu6_as_relu() {
        let spec = Spec::parse(include_str!("../../models/ds-cnn.toml")).unwrap();
        let plan = Plan::of(&spec).unwrap();
        let kinds: Vec<_> = plan.ops.iter().map(|op| op.kind.type_name()).collect();
        assert_eq!(
            kinds,
            [
                "conv2d",
                "depthwise_conv2d",
                "conv2d",
                "depthwise_conv2d",
                "conv2d",
                "avgpool2d",
                "dense"
            ]
        );
        // ReLU6 is a ReLU (conv) or the whole int8 range (depthwise conv, average pool).
        for op in &plan.ops[..6] {
            match op.kind {
                OpShape::Conv2d { relu, .. } => assert!(relu),
                OpShape::DepthwiseConv2d { min, max, .. } | OpShape::AvgPool2d { min, max, .. } => {
                    assert_eq!((min, max), (-128, 127))
                }
                _ => panic!("{}", op.kind),
            }
        }
        let OpShape::DepthwiseConv2d { geometry: g, .. } = plan.ops[3].kind else {
            panic!("a depthwise conv")
        };
        assert_eq!(
            (g.in_h, g.out_h(), g.out_c(), g.window.stride_w),
            (14, 7, 32, 2)
        );
        assert_eq!(plan.ops[5].kind.out_len(), 3 * 3 * 64);
        assert_eq!(plan.weights() + plan.channels(), spec.total_params());
        for pair in plan.ops.windows(2) {
            assert_eq!(pair[0].kind.out_len(), pair[1].kind.in_len());
        }
    }

    #[test]
    fn residual_blocks_plan_adds_and_branches_on_operation_tensors() {
        let spec = Spec::parse(include_str!("../../models/resnet-tiny.toml")).unwrap();
        let plan = Plan::of(&spec).unwrap();
        let kinds: Vec<_> = plan.ops.iter().map(|op| op.kind.type_name()).collect();
        assert_eq!(
            kinds,
            [
                "conv2d",
                "conv2d",
                "conv2d",
                "add",
                "conv2d",
                "conv2d",
                "branch",
                "conv2d",
                "add",
                "avgpool2d",
                "dense"
            ]
        );
        // Flatten is gone: spec layer 11 is operation 10. The tensors an add or a branch
        // names are operation outputs (here the same numbers as the spec's).
        assert_eq!(plan.ops[10].layer, 11);
        assert!(matches!(
            plan.ops[3].kind,
            OpShape::Add {
                h: 14,
                w: 14,
                channels: 8,
                other: 1,
                min: -128,
                max: 127
            }
        ));
        assert!(matches!(
            plan.ops[6].kind,
            OpShape::Branch {
                h: 14,
                w: 14,
                channels: 8,
                from: 4
            }
        ));
        assert!(matches!(plan.ops[8].kind, OpShape::Add { other: 6, .. }));
        assert_eq!(Plan::activation(&spec, &plan.ops[8]), Activation::Relu);
        // The first block's add is computed in place by its second conv (over the block's
        // input), and the second block's shortcut fits beside its main path: two 14×14×8
        // maps of arena.
        assert_eq!(plan.arena(), 2 * 14 * 14 * 8);
        assert_eq!(plan.weights() + plan.channels(), spec.total_params());
    }

    #[test]
    fn residual_tensors_follow_folded_batch_norms_and_refuse_one_on_a_block_input() {
        let text = "input = [8, 8, 2]\n[[layer]]\ntype = \"conv2d\"\nfilters = 4\nkernel = 3\npadding = \"same\"\n\
                    [[layer]]\ntype = \"batchnorm\"\nactivation = \"relu\"\n[[layer]]\ntype = \"dropout\"\nrate = 0.1\n\
                    [[layer]]\ntype = \"residual\"\n\
                    [[layer.main]]\ntype = \"conv2d\"\nfilters = 4\nkernel = 3\npadding = \"same\"\n\
                    [[layer.main]]\ntype = \"batchnorm\"\n\
                    [[layer.shortcut]]\ntype = \"conv2d\"\nfilters = 4\nkernel = 1\n\
                    [[layer.shortcut]]\ntype = \"batchnorm\"\n\
                    [[layer]]\ntype = \"flatten\"\n[[layer]]\ntype = \"dense\"\nunits = 3\nactivation = \"softmax\"\n";
        let spec = Spec::parse(text).unwrap();
        let plan = Plan::of(&spec).unwrap();
        let shapes = plan.shapes();
        let kinds: Vec<_> = shapes.iter().map(OpShape::type_name).collect();
        assert_eq!(
            kinds,
            ["conv2d", "conv2d", "branch", "conv2d", "add", "dense"]
        );
        // The block's input is the first conv's output (batch norm folded, dropout gone).
        assert_eq!(shapes[2].reads(), Some(1));
        assert_eq!(shapes[4].reads(), Some(2));
        assert_eq!(plan.ops[1].batchnorm, Some(4));
        assert_eq!(plan.ops[3].batchnorm, Some(7));
        let on_input = text.replacen(
            "[[layer.main]]\ntype = \"conv2d\"",
            "[[layer.main]]\ntype = \"batchnorm\"\n[[layer.main]]\ntype = \"conv2d\"",
            1,
        );
        let on_input = on_input.replacen("[[layer]]\ntype = \"dropout\"\nrate = 0.1\n", "", 1);
        let err = Plan::of(&Spec::parse(&on_input).unwrap()).unwrap_err();
        assert!(
            err.to_string().contains("layer 2 (batchnorm)")
                && err
                    .to_string()
                    .contains("a residual block reads that layer's output"),
            "{err}"
        );
    }

    #[test]
    fn batch_norm_folds_into_a_depthwise_conv_without_activation() {
        let text = "input = [8, 8, 2]\n[[layer]]\ntype = \"depthwise_conv2d\"\nkernel = 3\ndepth_multiplier = 2\n\
                    [[layer]]\ntype = \"batchnorm\"\nactivation = \"relu6\"\n\
                    [[layer]]\ntype = \"flatten\"\n[[layer]]\ntype = \"dense\"\nunits = 3\nactivation = \"softmax\"\n";
        let spec = Spec::parse(text).unwrap();
        let plan = Plan::of(&spec).unwrap();
        assert_eq!(plan.ops.len(), 2);
        assert_eq!(plan.ops[0].batchnorm, Some(1));
        assert_eq!(Plan::activation(&spec, &plan.ops[0]), Activation::Relu6);
        let relu_first = text.replacen(
            "depth_multiplier = 2\n",
            "depth_multiplier = 2\nactivation = \"relu\"\n",
            1,
        );
        let err = Plan::of(&Spec::parse(&relu_first).unwrap()).unwrap_err();
        assert!(err.to_string().contains("layer 1 (batchnorm)"), "{err}");
        assert!(err.to_string().contains("depthwise_conv2d"), "{err}");
    }

    #[test]
    fn batch_norm_folds_only_into_a_layer_without_activation() {
        let folded = "input = [8, 8, 1]\n[[layer]]\ntype = \"conv2d\"\nfilters = 4\nkernel = 3\npadding = \"same\"\nstride = 2\n[[layer]]\ntype = \"batchnorm\"\n[[layer]]\ntype = \"flatten\"\n[[layer]]\ntype = \"dense\"\nunits = 3\nactivation = \"softmax\"\n";
        let plan = Plan::of(&Spec::parse(folded).unwrap()).unwrap();
        assert_eq!(plan.ops.len(), 2);
        assert_eq!(plan.ops[0].batchnorm, Some(1));
        assert_eq!(plan.ops[0].kind.out_len(), 4 * 4 * 4);
        assert!(!matches!(
            plan.ops[0].kind,
            OpShape::Conv2d { relu: true, .. }
        ));
        let bn_relu = folded.replace(
            "type = \"batchnorm\"\n",
            "type = \"batchnorm\"\nactivation = \"relu\"\n",
        );
        let plan = Plan::of(&Spec::parse(&bn_relu).unwrap()).unwrap();
        assert!(matches!(
            plan.ops[0].kind,
            OpShape::Conv2d { relu: true, .. }
        ));
        assert_eq!(plan.ops[0].batchnorm, Some(1));
        let relu_first = folded.replace("stride = 2\n", "stride = 2\nactivation = \"relu\"\n");
        let err = Plan::of(&Spec::parse(&relu_first).unwrap()).unwrap_err();
        assert!(err.to_string().contains("layer 1 (batchnorm)"), "{err}");
        let after_pool = folded.replace(
            "[[layer]]\ntype = \"batchnorm\"\n",
            "[[layer]]\ntype = \"maxpool2d\"\n[[layer]]\ntype = \"batchnorm\"\n",
        );
        assert!(Plan::of(&Spec::parse(&after_pool).unwrap()).is_err());
    }
}

//! A parsed TensorFlow Lite graph mapped onto what the engine runs today: [`lower`].
//!
//! The engine (model.bin format 3, `infer_core::stack`) runs a chain of CONV_2D (any
//! kernel, equal strides 1 or 2, SAME or VALID padding, fused ReLU or none, or a ReLU6
//! that clamps as a ReLU does in int8),
//! DEPTHWISE_CONV_2D (any kernel, depth multiplier and strides, SAME or VALID, fused
//! ReLU, ReLU6 or none), MAX_POOL_2D (square window equal to its stride), AVERAGE_POOL_2D
//! (any window and strides, SAME or VALID, fused activation) and FULLY_CONNECTED (fused
//! ReLU or none, ReLU6 as CONV_2D), int8 with per-channel or per-tensor weights, the last a FULLY_CONNECTED
//! without activation whose outputs are kept wide (int32, no zero point, no clamp). RESHAPE
//! is the flatten before a FULLY_CONNECTED; QUANTIZE at the input and DEQUANTIZE at the
//! output are the float edges of a model converted with float input or output; a SOFTMAX
//! after the last FULLY_CONNECTED is TensorFlow Lite's int8 softmax of its int8 outputs,
//! computed on the host from the engine's logits ([`Imported::int8_outputs`]), not by the
//! engine. Every other operator of [`super::graph::SUPPORTED`] is parsed but cannot run yet:
//! [`lower`] lists each with its index and what it needs, and nothing is encoded.
//!
//! The last layer's TensorFlow Lite output is int8: `clamp(L + zero_point, −128, 127)` of the
//! engine's wide logit `L` (the same requantization, before the zero point and the clamp),
//! then the SOFTMAX if the model has one: [`Imported::int8_outputs`].

use super::graph::{Activation, DataType, Graph, OpKind, Operator, Padding, Tensor};
use crate::arch::quantize::encode_checked;
use crate::arch::scheme::{add_op, quantize_multiplier, QuantizedChannels};
use anyhow::{bail, ensure, Context, Result};
use infer_core::format::{InputSpec, QuantParams};
use infer_core::kernels::average_pool::AvgPoolGeometry;
use infer_core::kernels::conv::{ConvGeometry, Padding as EnginePadding};
use infer_core::kernels::depthwise::DepthwiseGeometry;
use infer_core::kernels::softmax::{softmax_i8, SoftmaxParams};
use infer_core::kernels::window::Window;
use infer_core::stack::format::AddOp;
use infer_core::stack::format::MAX_OPS;
use infer_core::stack::shape::OpShape;
use infer_core::stack::Op;

/// One end of the imported model.
#[derive(Debug, Clone, PartialEq)]
pub struct Edge {
    /// The TensorFlow Lite tensor's shape (batch first).
    pub shape: Vec<usize>,
    /// Whether the model takes or gives float values there (a QUANTIZE at the input, a
    /// DEQUANTIZE at the output); the int8 values are quantized with [`Edge::quant`].
    pub float: bool,
    /// The int8 quantization at this end.
    pub quant: QuantParams,
}

/// A model mapped onto the engine.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    /// The model.bin bytes (format 3), checked by infer-core's decoder.
    pub bytes: Vec<u8>,
    /// The input: its int8 quantization is the model.bin's input quantization.
    pub input: Edge,
    /// The output: the model.bin gives wide logits of scale `output.quant.scale` (without
    /// a softmax; with one, [`Softmax::logits`]); [`Imported::int8_outputs`] adds the zero
    /// point and clamps, as TensorFlow Lite does, then computes the softmax if any.
    pub output: Edge,
    /// The SOFTMAX after the engine's logits, if the model ends with one.
    pub softmax: Option<Softmax>,
    /// What became of each operator, one line each, for the command's report.
    pub steps: Vec<String>,
}

/// A model's final SOFTMAX: TensorFlow Lite's int8 softmax of the last FULLY_CONNECTED's
/// int8 outputs, computed on the host after the engine
/// ([`infer_core::kernels::softmax::softmax_i8`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Softmax {
    /// The quantization of its input, the FULLY_CONNECTED's int8 output (the engine's
    /// logits are these values before the zero point and the clamp).
    pub logits: QuantParams,
    /// Its fixed-point parameters, as TensorFlow Lite Micro prepares them.
    pub params: SoftmaxParams,
}

impl Imported {
    /// TensorFlow Lite's int8 outputs from the engine's wide `logits` (one inference's, or
    /// several back to back): `clamp(L + zero_point, −128, 127)`, then the softmax of each
    /// inference's values if the model has one.
    pub fn int8_outputs(&self, logits: &[i32]) -> Vec<i8> {
        let zero_point = self
            .softmax
            .map_or(self.output.quant.zero_point, |s| s.logits.zero_point);
        let int8: Vec<i8> = logits
            .iter()
            .map(|&l| l.saturating_add(zero_point).clamp(-128, 127) as i8)
            .collect();
        match &self.softmax {
            None => int8,
            Some(s) => {
                let row = self.output.shape.iter().skip(1).product::<usize>().max(1);
                let mut out = vec![0; int8.len()];
                for (x, y) in int8.chunks(row).zip(out.chunks_mut(row)) {
                    softmax_i8(&s.params, x, y);
                }
                out
            }
        }
    }
}

/// What the engine runs for one operator.
enum Lowered {
    /// An engine operation.
    Op(OpShape, Option<Box<QuantizedChannels>>),
    /// An ADD: its requantization (the operands in the operator's order, `other` not yet
    /// known).
    Add(AddOp),
    /// Nothing: a flatten, or a float edge.
    Nothing,
    /// The final softmax, on the host.
    Softmax(Softmax),
}

/// Maps `graph` onto the engine and encodes the model.bin.
///
/// # Errors
/// Every operator the engine cannot run yet, one line each (`operator 3 DEPTHWISE_CONV_2D:
/// parsed, but the engine cannot run it yet (depthwise convolution)`), or the first problem
/// of the graph's shape (not a chain, several inputs, too many operations, parameters
/// infer-core refuses).
pub fn lower(graph: &Graph) -> Result<Imported> {
    ensure!(
        graph.inputs.len() == 1 && graph.outputs.len() == 1,
        "the graph has {} inputs and {} outputs; the engine runs one of each",
        graph.inputs.len(),
        graph.outputs.len()
    );
    let last_index = graph
        .operators
        .len()
        .checked_sub(1)
        .context("the graph has no operators")?;
    ensure!(
        graph.tensors.iter().any(|t| t.dtype == DataType::Int8),
        "a float model (no int8 tensor): the kit imports full-integer int8 models (convert \
         with a representative dataset and TFLITE_BUILTINS_INT8)"
    );
    // First every operator on its own, so that every one the engine lacks is named.
    let mut problems = Vec::new();
    let mut lowered = Vec::new();
    for op in &graph.operators {
        match lower_op(graph, op, last_index) {
            Ok(l) => lowered.push(l),
            Err(e) => problems.push(format!(
                "operator {} {}: parsed, but the engine cannot run it yet ({e:#})",
                op.index,
                op.kind.name()
            )),
        }
    }
    if !problems.is_empty() {
        bail!(
            "{} of the {} operators cannot run on the engine yet; nothing written:\n  {}",
            problems.len(),
            graph.operators.len(),
            problems.join("\n  ")
        );
    }
    // Then the graph, in the operators' order: each engine operation reads the previous
    // one's output; where an operator reads another tensor, a branch to it goes first.
    // Engine tensors: 0 the input, `k + 1` the output of engine operation `k`.
    let mut engine_tensor = std::collections::HashMap::from([(graph.inputs[0], 0usize)]);
    let mut current = graph.inputs[0];
    let mut steps = Vec::new();
    let mut ops: Vec<Lowering> = Vec::new();
    let mut softmax = None;
    for (op, lowered) in graph.operators.iter().zip(lowered) {
        let reads = op.inputs.first().copied().flatten();
        let engine_of = |t: Option<usize>| {
            t.and_then(|t| engine_tensor.get(&t).copied())
                .with_context(|| {
                    format!(
                        "operator {} {} reads tensor {}, which no operator before it computes",
                        op.index,
                        op.kind.name(),
                        t.map_or_else(|| "none".to_owned(), |t| t.to_string())
                    )
                })
        };
        let output = *op.outputs.first().context("an operator without outputs")?;
        let computed = ops.len();
        let what = match lowered {
            Lowered::Op(shape, channels) => {
                let from = engine_of(reads)?;
                branch_to(graph, &mut ops, reads, from, &mut steps)?;
                let text = describe(&shape, channels.as_deref());
                ops.push((op.index, shape, channels, None));
                text
            }
            Lowered::Add(mut add) => {
                let second = op.inputs.get(1).copied().flatten();
                let (e1, e2) = (engine_of(reads)?, engine_of(second)?);
                // The previous output is the first operand; the other is named.
                let (first, other) = if e2 == ops.len() && e1 != ops.len() {
                    (add.multiplier, add.other_multiplier) = (add.other_multiplier, add.multiplier);
                    (add.shift, add.other_shift) = (add.other_shift, add.shift);
                    ((second, e2), e1)
                } else {
                    ((reads, e1), e2)
                };
                branch_to(graph, &mut ops, first.0, first.1, &mut steps)?;
                add.other = u16::try_from(other).context("a tensor index over u16")?;
                let shape = Op::Add(add).shape();
                let text = format!("add of tensor {other}{}", clamp_text(add.min, add.max));
                ops.push((op.index, shape, None, Some(add)));
                text
            }
            Lowered::Softmax(s) => {
                ensure!(
                    reads == Some(current),
                    "operator {} SOFTMAX does not read the last operator's output",
                    op.index
                );
                softmax = Some(s);
                "int8 softmax of the logits (on the host, after the engine)".to_owned()
            }
            Lowered::Nothing => {
                // No engine operation: its output is the tensor it reads.
                let from = engine_of(reads)?;
                engine_tensor.insert(output, from);
                match op.kind {
                    OpKind::Reshape => "flatten (no engine operation)".to_owned(),
                    OpKind::Quantize => "the float input's quantization".to_owned(),
                    _ => "the float output's dequantization".to_owned(),
                }
            }
        };
        if ops.len() > computed {
            // An engine operation computed it.
            engine_tensor.insert(output, ops.len());
        }
        current = output;
        steps.push(format!("{:>3} {:<16} -> {what}", op.index, op.kind.name()));
    }
    ensure!(
        current == graph.outputs[0],
        "the last operator's output (tensor {current}) is not the graph's output (tensor {})",
        graph.outputs[0]
    );
    let input = edge(
        graph,
        graph.inputs[0],
        graph.operators.first(),
        OpKind::Quantize,
    )?;
    let output = edge(
        graph,
        graph.outputs[0],
        graph.operators.last(),
        OpKind::Dequantize,
    )?;
    ensure!(
        ops.len() <= MAX_OPS,
        "{} engine operations; model.bin holds at most {MAX_OPS}",
        ops.len()
    );
    let Some((last, OpShape::Dense { units, relu, .. }, Some(channels), _)) = ops.last_mut() else {
        bail!(
            "the last operator the engine runs must be a FULLY_CONNECTED without activation \
             (its outputs are the logits)"
        );
    };
    ensure!(
        !*relu && *units >= 2,
        "operator {last} FULLY_CONNECTED: the engine's last layer gives at least 2 logits \
         without activation"
    );
    if let Some(s) = channels.shift.iter().find(|&&s| s > 0) {
        bail!(
            "operator {last} FULLY_CONNECTED: its output scale is below input scale × weight \
             scale (shift {s} > 0); the engine's wide logits need every ratio below 1"
        );
    }
    if let Some(s) = &softmax {
        ensure!(
            s.logits == channels.output,
            "operator {last} FULLY_CONNECTED: the SOFTMAX does not read its output"
        );
    }
    // Wide logits: the requantization without the zero point and the clamp.
    channels.output.zero_point = 0;
    let bytes = encode(&input, &ops)?;
    Ok(Imported {
        bytes,
        input,
        output,
        softmax,
        steps,
    })
}

/// The input or output edge at `tensor`: the int8 side of a QUANTIZE / DEQUANTIZE `op`
/// (`edge_kind`) if there is one.
fn edge(graph: &Graph, tensor: usize, op: Option<&Operator>, edge_kind: OpKind) -> Result<Edge> {
    let outer = graph.tensor(tensor)?;
    let (float, int8) = match op {
        Some(op) if op.kind == edge_kind => {
            let inner = if edge_kind == OpKind::Quantize {
                op.outputs.first().copied()
            } else {
                op.inputs.first().copied().flatten()
            };
            (
                true,
                graph.tensor(inner.context("a QUANTIZE without tensors")?)?,
            )
        }
        _ => (false, outer),
    };
    Ok(Edge {
        shape: outer.shape.clone(),
        float,
        quant: activation_quant(int8, "the tensor")?,
    })
}

/// The per-tensor int8 quantization of an activation tensor `t` (`what` names it).
fn activation_quant(t: &Tensor, what: &str) -> Result<QuantParams> {
    ensure!(
        t.dtype == DataType::Int8,
        "{what} \"{}\" is {}; the engine computes in int8",
        t.name,
        t.dtype.name()
    );
    let (scale, zero_point) = t
        .quant
        .as_ref()
        .and_then(|q| q.per_tensor())
        .with_context(|| format!("{what} \"{}\" has no per-tensor quantization", t.name))?;
    ensure!(
        scale.is_finite() && scale > 0.0 && (-128..=127).contains(&zero_point),
        "{what} \"{}\" has scale {scale} and zero point {zero_point}",
        t.name
    );
    Ok(QuantParams {
        scale,
        zero_point: zero_point as i32,
    })
}

/// Tensor `i` of `op`'s inputs.
fn input_of<'g>(graph: &'g Graph, op: &Operator, i: usize) -> Result<Option<&'g Tensor>> {
    op.inputs
        .get(i)
        .copied()
        .flatten()
        .map(|t| graph.tensor(t))
        .transpose()
}

/// Tensor `i` of `op`'s inputs, which must be there.
fn required_input<'g>(graph: &'g Graph, op: &Operator, i: usize) -> Result<&'g Tensor> {
    input_of(graph, op, i)?.with_context(|| format!("input {i} is missing"))
}

/// The first output of `op`.
fn output_of<'g>(graph: &'g Graph, op: &Operator) -> Result<&'g Tensor> {
    graph.tensor(*op.outputs.first().context("it has no output")?)
}

/// The clamp of a fused `activation` on an output quantized with `q`, as TensorFlow Lite's
/// `CalculateActivationRangeQuantized` computes it: `zero_point + round(f / scale)` for
/// the bounds 0 and 6 (in `f32`), within −128..=127.
fn clamp_of(activation: Activation, q: QuantParams) -> (i8, i8) {
    let quantize = |f: f32| q.zero_point.saturating_add((f / q.scale).round() as i32);
    let (min, max) = match activation {
        Activation::None => (-128, 127),
        Activation::Relu => (quantize(0.0).max(-128), 127),
        Activation::Relu6 => (quantize(0.0).max(-128), quantize(6.0).min(127)),
    };
    (min.clamp(-128, 127) as i8, max.clamp(-128, 127) as i8)
}

/// What the engine runs for `op` (`last_index`: the graph's last operator's; QUANTIZE may
/// stand first, DEQUANTIZE last, SOFTMAX last or before a final DEQUANTIZE).
fn lower_op(graph: &Graph, op: &Operator, last_index: usize) -> Result<Lowered> {
    let (first, last) = (op.index == 0, op.index == last_index);
    match op.kind {
        OpKind::Conv2d(o) => {
            let (input, output) = (required_input(graph, op, 0)?, output_of(graph, op)?);
            let filter = required_input(graph, op, 1)?;
            let &[_, in_h, in_w, in_c] = input.shape.as_slice() else {
                bail!("its input is {}, not [1, h, w, c]", input.shape_text());
            };
            let &[filters, k_h, k_w, f_c] = filter.shape.as_slice() else {
                bail!("its filter is {}, not [o, h, w, i]", filter.shape_text());
            };
            ensure!(
                input.shape[0] == 1,
                "batch {} (the engine runs batch 1)",
                input.shape[0]
            );
            ensure!(
                f_c == in_c,
                "grouped convolution ({in_c} input channels, filter {f_c})"
            );
            ensure!(
                o.stride_h == o.stride_w && (1..=2).contains(&o.stride_h),
                "strides {}×{} (the engine's are equal, 1 or 2)",
                o.stride_h,
                o.stride_w
            );
            ensure!(
                o.dilation_h == 1 && o.dilation_w == 1,
                "dilation {}×{}",
                o.dilation_h,
                o.dilation_w
            );
            let relu = relu_of(o.activation, activation_quant(output, "its output")?)?;
            let geometry = ConvGeometry {
                in_h,
                in_w,
                in_c,
                k_h,
                k_w,
                filters,
                stride: o.stride_h,
                padding: match o.padding {
                    Padding::Same => EnginePadding::Same,
                    Padding::Valid => EnginePadding::Valid,
                },
            };
            ensure!(
                output.shape == [1, geometry.out_h(), geometry.out_w(), filters],
                "its output is {}, the engine's would be [1, {}, {}, {filters}]",
                output.shape_text(),
                geometry.out_h(),
                geometry.out_w()
            );
            let channels = channels(graph, op, filters, 0)?;
            Ok(Lowered::Op(
                OpShape::Conv2d { geometry, relu },
                Some(Box::new(channels)),
            ))
        }
        OpKind::MaxPool2d(o) => {
            let (input, output) = (required_input(graph, op, 0)?, output_of(graph, op)?);
            let &[1, in_h, in_w, channels] = input.shape.as_slice() else {
                bail!("its input is {}, not [1, h, w, c]", input.shape_text());
            };
            let pool = o.filter_h;
            ensure!(
                o.filter_w == pool && o.stride_h == pool && o.stride_w == pool,
                "a {}×{} window with strides {}×{} (the engine pools square windows as far \
                 apart as they are wide)",
                o.filter_h,
                o.filter_w,
                o.stride_h,
                o.stride_w
            );
            ensure!(
                o.padding == Padding::Valid || (in_h % pool == 0 && in_w % pool == 0),
                "SAME padding of a {in_h}×{in_w} input by {pool}×{pool} windows"
            );
            ensure!(
                o.activation == Activation::None,
                "a fused {}",
                o.activation.name()
            );
            ensure!(
                activation_quant(input, "its input")? == activation_quant(output, "its output")?,
                "its output's quantization differs from its input's"
            );
            let shape = OpShape::MaxPool2d {
                in_h,
                in_w,
                channels,
                pool,
            };
            let (h, w, c) = shape.out_hwc();
            ensure!(
                output.shape == [1, h, w, c],
                "its output is {}, not [1, {h}, {w}, {c}]",
                output.shape_text()
            );
            Ok(Lowered::Op(shape, None))
        }
        OpKind::FullyConnected { activation, .. } => {
            let (input, output) = (required_input(graph, op, 0)?, output_of(graph, op)?);
            let weights = required_input(graph, op, 1)?;
            let &[units, inputs] = weights.shape.as_slice() else {
                bail!(
                    "its weights are {}, not [units, inputs]",
                    weights.shape_text()
                );
            };
            ensure!(
                input.elements() == Some(inputs),
                "its input {} is not one row of {inputs} values (the engine runs batch 1)",
                input.shape_text()
            );
            ensure!(
                output.elements() == Some(units),
                "its output {} is not {units} values",
                output.shape_text()
            );
            let relu = relu_of(activation, activation_quant(output, "its output")?)?;
            let channels = channels(graph, op, units, 0)?;
            Ok(Lowered::Op(
                OpShape::Dense {
                    inputs,
                    units,
                    relu,
                },
                Some(Box::new(channels)),
            ))
        }
        OpKind::Reshape => {
            let (input, output) = (required_input(graph, op, 0)?, output_of(graph, op)?);
            ensure!(
                activation_quant(input, "its input")? == activation_quant(output, "its output")?,
                "its output's quantization differs from its input's"
            );
            let flat = matches!(output.shape.as_slice(), [1, _] | [_]);
            ensure!(
                flat && input.elements() == output.elements(),
                "a reshape of {} to {} (the engine runs a reshape only as the flatten before \
                 FULLY_CONNECTED)",
                input.shape_text(),
                output.shape_text()
            );
            Ok(Lowered::Nothing)
        }
        OpKind::Quantize => {
            let (input, output) = (required_input(graph, op, 0)?, output_of(graph, op)?);
            ensure!(
                first && input.dtype == DataType::Float32,
                "a QUANTIZE of {} inside the graph (the engine takes QUANTIZE only from the \
                 float input)",
                input.dtype.name()
            );
            activation_quant(output, "its output")?;
            Ok(Lowered::Nothing)
        }
        OpKind::Dequantize => {
            let (input, output) = (required_input(graph, op, 0)?, output_of(graph, op)?);
            ensure!(
                last && output.dtype == DataType::Float32,
                "a DEQUANTIZE inside the graph (the engine takes DEQUANTIZE only to the float \
                 output)"
            );
            activation_quant(input, "its input")?;
            Ok(Lowered::Nothing)
        }
        OpKind::DepthwiseConv2d { conv: o, .. } => {
            let (input, output) = (required_input(graph, op, 0)?, output_of(graph, op)?);
            let filter = required_input(graph, op, 1)?;
            let &[1, in_h, in_w, in_c] = input.shape.as_slice() else {
                bail!("its input is {}, not [1, h, w, c]", input.shape_text());
            };
            let &[1, k_h, k_w, out_c] = filter.shape.as_slice() else {
                bail!("its filter is {}, not [1, h, w, c]", filter.shape_text());
            };
            // TensorFlow Lite Micro takes the multiplier from the shapes, as here.
            ensure!(
                in_c > 0 && out_c % in_c == 0,
                "{out_c} output channels for {in_c} input channels"
            );
            ensure!(
                o.dilation_h == 1 && o.dilation_w == 1,
                "dilation {}×{}",
                o.dilation_h,
                o.dilation_w
            );
            let geometry = DepthwiseGeometry {
                in_h,
                in_w,
                in_c,
                multiplier: out_c / in_c,
                window: Window {
                    k_h,
                    k_w,
                    stride_h: o.stride_h,
                    stride_w: o.stride_w,
                    padding: engine_padding(o.padding),
                },
            };
            ensure!(
                output.shape == [1, geometry.out_h(), geometry.out_w(), out_c],
                "its output is {}, the engine's would be [1, {}, {}, {out_c}]",
                output.shape_text(),
                geometry.out_h(),
                geometry.out_w()
            );
            let (min, max) = clamp_of(o.activation, activation_quant(output, "its output")?);
            let channels = channels(graph, op, out_c, 3)?;
            Ok(Lowered::Op(
                OpShape::DepthwiseConv2d { geometry, min, max },
                Some(Box::new(channels)),
            ))
        }
        OpKind::AveragePool2d(o) => {
            let (input, output) = (required_input(graph, op, 0)?, output_of(graph, op)?);
            let &[1, in_h, in_w, channels] = input.shape.as_slice() else {
                bail!("its input is {}, not [1, h, w, c]", input.shape_text());
            };
            let out_q = activation_quant(output, "its output")?;
            ensure!(
                activation_quant(input, "its input")? == out_q,
                "its output's quantization differs from its input's"
            );
            let geometry = AvgPoolGeometry {
                in_h,
                in_w,
                channels,
                window: Window {
                    k_h: o.filter_h,
                    k_w: o.filter_w,
                    stride_h: o.stride_h,
                    stride_w: o.stride_w,
                    padding: engine_padding(o.padding),
                },
            };
            let (h, w) = (geometry.out_h(), geometry.out_w());
            ensure!(
                h > 0 && w > 0 && output.shape == [1, h, w, channels],
                "its output is {}, not [1, {h}, {w}, {channels}]",
                output.shape_text()
            );
            let (min, max) = clamp_of(o.activation, out_q);
            Ok(Lowered::Op(OpShape::AvgPool2d { geometry, min, max }, None))
        }
        OpKind::Softmax { beta } => {
            let (input, output) = (required_input(graph, op, 0)?, output_of(graph, op)?);
            let dequantized_next = graph
                .operators
                .get(op.index + 1)
                .is_some_and(|next| next.kind == OpKind::Dequantize && next.index == last_index);
            ensure!(
                last || dequantized_next,
                "a SOFTMAX inside the graph (the engine takes SOFTMAX only at the output)"
            );
            let logits = activation_quant(input, "its input")?;
            let out_q = activation_quant(output, "its output")?;
            // TensorFlow Lite Micro's int8 softmax requires this output quantization.
            ensure!(
                out_q.scale == 1.0 / 256.0 && out_q.zero_point == -128,
                "its output has scale {} and zero point {} (TensorFlow Lite's int8 softmax \
                 gives scale 1/256, zero point −128)",
                out_q.scale,
                out_q.zero_point
            );
            Ok(Lowered::Softmax(Softmax {
                logits,
                params: softmax_params(beta, logits.scale)?,
            }))
        }
        OpKind::Add { activation } => {
            let a = required_input(graph, op, 0)?;
            let b = required_input(graph, op, 1)?;
            let output = output_of(graph, op)?;
            let &[1, h, w, channels] = output.shape.as_slice() else {
                bail!("its output is {}, not [1, h, w, c]", output.shape_text());
            };
            ensure!(
                a.shape == output.shape && b.shape == output.shape,
                "operands {} and {} for an output {} (the engine adds tensors of one shape, \
                 no broadcasting)",
                a.shape_text(),
                b.shape_text(),
                output.shape_text()
            );
            let (qa, qb) = (
                activation_quant(a, "its first input")?,
                activation_quant(b, "its second input")?,
            );
            let out_q = activation_quant(output, "its output")?;
            let clamp = clamp_of(activation, out_q);
            Ok(Lowered::Add(add_op(
                (h, w, channels),
                0,
                (qa.scale, qb.scale),
                out_q,
                clamp,
            )?))
        }
    }
}

/// Pushes onto `ops` a branch to engine tensor `from` (TensorFlow Lite tensor `tensor`)
/// unless it is the previous operation's output, with a line in `steps`.
fn branch_to(
    graph: &Graph,
    ops: &mut Vec<Lowering>,
    tensor: Option<usize>,
    from: usize,
    steps: &mut Vec<String>,
) -> Result<()> {
    if from == ops.len() {
        return Ok(());
    }
    let t = graph.tensor(tensor.context("an operator without input")?)?;
    let &[1, h, w, channels] = t.shape.as_slice() else {
        bail!(
            "a branch to tensor \"{}\" of shape {} (the engine branches to [1, h, w, c] maps)",
            t.name,
            t.shape_text()
        );
    };
    let shape = OpShape::Branch {
        h,
        w,
        channels,
        from,
    };
    steps.push(format!(
        "    {:<16} -> branch to engine tensor {from} (\"{}\")",
        "", t.name
    ));
    ops.push((usize::MAX, shape, None, None));
    Ok(())
}

/// An engine operation being lowered: the operator's index (`usize::MAX` for a branch),
/// its shape, and a conv's or dense layer's channels or an add's requantization.
type Lowering = (
    usize,
    OpShape,
    Option<Box<QuantizedChannels>>,
    Option<AddOp>,
);

/// `, clamp min..=max` unless it clamps nothing.
fn clamp_text(min: i8, max: i8) -> String {
    match (min, max) {
        (-128, 127) => String::new(),
        (min, max) => format!(", clamp {min}..={max}"),
    }
}

/// The engine's padding.
fn engine_padding(padding: Padding) -> EnginePadding {
    match padding {
        Padding::Same => EnginePadding::Same,
        Padding::Valid => EnginePadding::Valid,
    }
}

/// The int8 softmax's parameters for `beta` and the input scale, as TensorFlow Lite
/// Micro's `CalculateSoftmaxParams` prepares them (`PreprocessSoftmaxScaling`, then
/// `CalculateInputRadius`, both in `f64`): the input differences scaled to Q5.26.
fn softmax_params(beta: f32, input_scale: f32) -> Result<SoftmaxParams> {
    const DIFF_INTEGER_BITS: i32 = 5;
    let real =
        (f64::from(beta) * f64::from(input_scale) * f64::from(1u32 << (31 - DIFF_INTEGER_BITS)))
            .min(f64::from(i32::MAX));
    let (multiplier, left_shift) = quantize_multiplier(real)?;
    ensure!(
        left_shift >= 0,
        "a softmax input scale of {input_scale} with beta {beta} is too small"
    );
    let radius = f64::from((1 << DIFF_INTEGER_BITS) - 1)
        * f64::from(1u32 << (31 - DIFF_INTEGER_BITS))
        / 2f64.powi(left_shift);
    Ok(SoftmaxParams {
        multiplier,
        left_shift,
        diff_min: -(radius.floor() as i32),
    })
}

/// Whether a conv or dense layer whose output is quantized with `out` has a fused ReLU:
/// none, ReLU, or a ReLU6 whose 6 quantizes to 127 or more (as when the converter
/// calibrated the output to 0..6), which then clamps exactly as a ReLU does. A ReLU6 that
/// clips inside the int8 range is refused: the engine's conv and dense clamp at 127 only.
fn relu_of(activation: Activation, out: QuantParams) -> Result<bool> {
    match activation {
        Activation::None => Ok(false),
        Activation::Relu => Ok(true),
        Activation::Relu6 => {
            let (_, max) = clamp_of(Activation::Relu6, out);
            ensure!(
                max == 127,
                "a fused RELU6 that clips inside the int8 range (6.0 quantizes to {max}; the \
                 engine's conv and dense clamp at 127 only)"
            );
            Ok(true)
        }
    }
}

/// The int8 weights, biases and requantization of a conv, depthwise conv or dense operator
/// `op` with `channels` output channels (per-channel weight scales along dimension `axis`:
/// 0, or 3 for a depthwise conv).
///
/// Each channel's multiplier is `f64(input scale) · f64(weight scale) / f64(output scale)`,
/// split by TFLite's `QuantizeMultiplier` ([`quantize_multiplier`]), as TensorFlow Lite
/// Micro's convolutions compute it (`PopulateConvolutionQuantizationParams`). Its
/// FULLY_CONNECTED with one weight scale gives the same results, measured with the pinned
/// `tflite-micro` package: all 64,000 outputs of the MLPerf anomaly-detection model's golden
/// file; the product taken in f32 first (`GetQuantizedConvolutionMultipler` in TFLM's
/// sources) changes 9 of its 10 layers' multipliers and outputs by 1 (the first at input 24).
fn channels(
    graph: &Graph,
    op: &Operator,
    channels: usize,
    axis: usize,
) -> Result<QuantizedChannels> {
    let input = required_input(graph, op, 0)?;
    let output = output_of(graph, op)?;
    let filter = required_input(graph, op, 1)?;
    let in_q = activation_quant(input, "its input")?;
    let out_q = activation_quant(output, "its output")?;
    let weights = constant(filter, DataType::Int8, "weights")?.to_vec();
    ensure!(
        Some(weights.len()) == filter.elements(),
        "its weights hold {} bytes for the shape {}",
        weights.len(),
        filter.shape_text()
    );
    let q = filter
        .quant
        .as_ref()
        .with_context(|| format!("its weights \"{}\" are not quantized", filter.name))?;
    ensure!(
        q.zero_points.iter().all(|&z| z == 0),
        "its weights have a zero point other than 0 (the engine's are symmetric)"
    );
    let scales: Vec<f32> = match q.scales.len() {
        1 => vec![q.scales[0]; channels],
        n if n == channels && q.axis == axis => q.scales.clone(),
        n => bail!(
            "its weights have {n} scales along dimension {} for {channels} output channels",
            q.axis
        ),
    };
    let bias = match input_of(graph, op, 2)? {
        None => vec![0; channels],
        Some(b) => {
            let data = constant(b, DataType::Int32, "bias")?;
            ensure!(
                data.len() == 4 * channels,
                "its bias holds {} bytes for {channels} channels",
                data.len()
            );
            data.chunks_exact(4)
                .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        }
    };
    let mut multipliers = Vec::with_capacity(channels);
    let mut shifts = Vec::with_capacity(channels);
    for &w in &scales {
        ensure!(
            w.is_finite() && w > 0.0,
            "a weight scale of {w} (must be finite and > 0)"
        );
        let real = f64::from(in_q.scale) * f64::from(w) / f64::from(out_q.scale);
        let (m, s) = quantize_multiplier(real)?;
        multipliers.push(m);
        shifts.push(i8::try_from(s).context("a shift beyond i8")?);
    }
    Ok(QuantizedChannels::from_int8(
        weights,
        scales,
        bias,
        multipliers,
        shifts,
        out_q,
    ))
}

/// The constant contents of `t`, the operator's `what`, which must be of type `dtype`.
fn constant<'t>(t: &'t Tensor, dtype: DataType, what: &str) -> Result<&'t [u8]> {
    ensure!(
        t.dtype == dtype,
        "its {what} is {} (the engine's is {})",
        t.dtype.name(),
        dtype.name()
    );
    t.data
        .as_deref()
        .with_context(|| format!("its {what} \"{}\" is not constant", t.name))
}

/// One line about an engine operation.
fn describe(shape: &OpShape, channels: Option<&QuantizedChannels>) -> String {
    let weights = channels.map_or("", |c| {
        if c.weight_scales.windows(2).all(|w| w[0] == w[1]) {
            "per-tensor weights"
        } else {
            "per-channel weights"
        }
    });
    let relu = |r: bool| if r { ", relu" } else { "" };
    let clamp = clamp_text;
    match *shape {
        OpShape::DepthwiseConv2d {
            geometry: g,
            min,
            max,
        } => format!(
            "depthwise_conv2d {} ×{}{}, {weights}",
            g.window,
            g.multiplier,
            clamp(min, max)
        ),
        OpShape::AvgPool2d {
            geometry: g,
            min,
            max,
        } => format!("avgpool2d {}{}", g.window, clamp(min, max)),
        OpShape::Conv2d {
            geometry: g,
            relu: r,
        } => format!(
            "conv2d {}×{} ×{}, stride {}, {}{}, {weights}",
            g.k_h,
            g.k_w,
            g.filters,
            g.stride,
            match g.padding {
                EnginePadding::Same => "same",
                EnginePadding::Valid => "valid",
            },
            relu(r)
        ),
        OpShape::MaxPool2d { pool, .. } => format!("maxpool2d {pool}×{pool}"),
        OpShape::Add {
            other, min, max, ..
        } => format!("add of tensor {other}{}", clamp(min, max)),
        OpShape::Branch { from, .. } => format!("branch to tensor {from}"),
        OpShape::Dense {
            inputs,
            units,
            relu: r,
        } => format!("dense {inputs} -> {units}{}, {weights}", relu(r)),
    }
}

/// Encodes the engine operations `ops` after `input` as model.bin bytes, checked by
/// infer-core's decoder.
fn encode(input: &Edge, ops: &[Lowering]) -> Result<Vec<u8>> {
    let short = |n: usize| u16::try_from(n).context("an input dimension over 65,535");
    let (h, w, c) = match input.shape.as_slice() {
        &[1, h, w, c] => (short(h)?, short(w)?, short(c)?),
        &[1, n] | &[n] => (1, 1, short(n)?),
        _ => bail!(
            "an input of shape {:?} (the engine takes [1, h, w, c] or [1, n])",
            input.shape
        ),
    };
    let spec = InputSpec {
        height: h,
        width: w,
        channels: c,
        quant: input.quant,
    };
    let mut wire = Vec::with_capacity(ops.len());
    for (index, shape, channels, add) in ops {
        if let Some(add) = add {
            wire.push(Op::Add(*add));
            continue;
        }
        let params = channels.as_deref().map(QuantizedChannels::params);
        wire.push(
            Op::from_shape(*shape, params).map_err(|e| anyhow::anyhow!("operator {index}: {e}"))?,
        );
    }
    encode_checked(spec, &wire)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tflite::graph::ConvOptions;

    /// The Keras tutorial fixture: CONV_2D, MAX_POOL_2D, RESHAPE, FULLY_CONNECTED.
    fn tutorial() -> Graph {
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../tests/fixtures/tflite/tutorial_int8.tflite"
        );
        Graph::parse(&std::fs::read(path).unwrap()).unwrap()
    }

    fn refusal(graph: &Graph) -> String {
        format!("{:#}", lower(graph).unwrap_err())
    }

    fn conv_options(graph: &mut Graph) -> &mut ConvOptions {
        match &mut graph.operators[0].kind {
            OpKind::Conv2d(o) => o,
            other => panic!("operator 0 is {}", other.name()),
        }
    }

    #[test]
    fn the_tutorial_maps_onto_three_engine_operations() {
        let imported = lower(&tutorial()).unwrap();
        let file = infer_core::stack::StackFile::decode(&imported.bytes).unwrap();
        let ops: Vec<&str> = file.ops.iter().map(|op| op.type_name()).collect();
        assert_eq!(ops, ["conv2d", "maxpool2d", "dense"]);
        assert_eq!(imported.steps.len(), 4);
        assert!(imported.steps[2].ends_with("flatten (no engine operation)"));
        assert_eq!(imported.int8_outputs(&[-200, 0, 100]), [-128, 43, 127]);
    }

    #[test]
    fn options_the_engine_lacks_are_named_with_the_operator() {
        // A RELU6 whose 6 is inside the output range would clip below 127: refused.
        let mut graph = tutorial();
        conv_options(&mut graph).activation = Activation::Relu6;
        // The conv's output, and the pool's and the flatten's, which keep its quantization.
        let quantize = |graph: &mut Graph, scale: f32| {
            for op in 0..3 {
                let t = graph.operators[op].outputs[0];
                graph.tensors[t].quant = Some(crate::tflite::graph::Quantization {
                    scales: vec![scale],
                    zero_points: vec![-128],
                    axis: 0,
                });
            }
        };
        quantize(&mut graph, 0.1);
        assert!(refusal(&graph).contains(
            "operator 0 CONV_2D: parsed, but the engine cannot run it yet (a fused RELU6 that \
             clips inside the int8 range (6.0 quantizes to -68"
        ));
        // Calibrated to 0..6, its 6 is 127: exactly a ReLU, the same model.bin.
        quantize(&mut graph, 6.0 / 255.0);
        let relu6 = lower(&graph).unwrap();
        conv_options(&mut graph).activation = Activation::Relu;
        assert_eq!(relu6.bytes, lower(&graph).unwrap().bytes);
        let mut graph = tutorial();
        conv_options(&mut graph).stride_w = 2;
        assert!(refusal(&graph).contains("(strides 1×2 (the engine's are equal, 1 or 2))"));
        let mut graph = tutorial();
        conv_options(&mut graph).dilation_h = 2;
        assert!(refusal(&graph).contains("(dilation 2×1)"));
        let mut graph = tutorial();
        if let OpKind::MaxPool2d(p) = &mut graph.operators[1].kind {
            p.stride_h = 1;
        }
        assert!(refusal(&graph).contains("operator 1 MAX_POOL_2D: parsed, but"));
    }

    #[test]
    fn a_graph_that_is_not_a_chain_or_ends_otherwise_is_refused() {
        // The dense layer reads the pool's output past the flatten: the same tensor.
        let mut graph = tutorial();
        let pooled = graph.operators[1].outputs[0];
        graph.operators[3].inputs[0] = Some(pooled);
        assert_eq!(
            lower(&graph).unwrap().bytes,
            lower(&tutorial()).unwrap().bytes
        );
        // A copy of that tensor, which no operator computes.
        let copy = graph.tensors.len();
        graph.tensors.push(graph.tensors[pooled].clone());
        graph.operators[3].inputs[0] = Some(copy);
        let err = refusal(&graph);
        assert!(
            err.starts_with(&format!(
                "operator 3 FULLY_CONNECTED reads tensor {copy}, which no operator before it \
                 computes"
            )),
            "{err}"
        );
        let mut graph = tutorial();
        graph.operators[3].kind = OpKind::FullyConnected {
            activation: Activation::Relu,
            keep_num_dims: false,
        };
        assert!(refusal(&graph).contains("gives at least 2 logits without activation"));
        let mut graph = tutorial();
        graph.operators.truncate(2);
        let err = refusal(&graph);
        assert!(err.contains("is not the graph's output"), "{err}");
    }
}

//! A `.tflite` model read into plain Rust values: [`Graph::parse`].
//!
//! Only the operators of [`SUPPORTED`] are read; any other operator, a fused activation other
//! than none / ReLU / ReLU6, several subgraphs, sparse or dynamically shaped tensors are
//! refused with an error naming what and where. Nothing is interpreted here (that is
//! [`super::lower`]): each operator keeps its tensors' indices and its builtin options.

use anyhow::{bail, ensure, Context, Result};
use tflite_schema::tflite as fb;

/// The operators a model may hold, as TensorFlow Lite names them.
pub const SUPPORTED: &[&str] = &[
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "MAX_POOL_2D",
    "AVERAGE_POOL_2D",
    "FULLY_CONNECTED",
    "RESHAPE",
    "SOFTMAX",
    "ADD",
    "QUANTIZE",
    "DEQUANTIZE",
];

/// A tensor's element type.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataType {
    /// `float32`.
    Float32,
    /// `int8`.
    Int8,
    /// `int32`.
    Int32,
    /// Any other type, by its TensorFlow Lite name (`UINT8`, `INT16`, …).
    Other(&'static str),
}

impl DataType {
    fn of(t: fb::TensorType) -> Self {
        match t {
            fb::TensorType::FLOAT32 => DataType::Float32,
            fb::TensorType::INT8 => DataType::Int8,
            fb::TensorType::INT32 => DataType::Int32,
            other => DataType::Other(other.variant_name().unwrap_or("an unknown type")),
        }
    }

    /// The TensorFlow Lite name.
    pub fn name(self) -> &'static str {
        match self {
            DataType::Float32 => "FLOAT32",
            DataType::Int8 => "INT8",
            DataType::Int32 => "INT32",
            DataType::Other(name) => name,
        }
    }
}

/// Affine quantization: `real = scale · (q − zero_point)`, one pair per tensor or one per
/// slice along `axis` (per channel).
#[derive(Debug, Clone, PartialEq)]
pub struct Quantization {
    /// One scale, or one per channel.
    pub scales: Vec<f32>,
    /// As many zero points as scales.
    pub zero_points: Vec<i64>,
    /// The dimension the channels run along (per-channel quantization).
    pub axis: usize,
}

impl Quantization {
    /// `(scale, zero point)` when the tensor has one of each.
    pub fn per_tensor(&self) -> Option<(f32, i64)> {
        match (self.scales.as_slice(), self.zero_points.as_slice()) {
            ([scale], [zero_point]) => Some((*scale, *zero_point)),
            _ => None,
        }
    }
}

/// One tensor of the graph.
#[derive(Debug, Clone, PartialEq)]
pub struct Tensor {
    /// Its name in the model.
    pub name: String,
    /// Dimensions (NHWC for images), each ≥ 0.
    pub shape: Vec<usize>,
    /// Element type.
    pub dtype: DataType,
    /// Quantization, if any.
    pub quant: Option<Quantization>,
    /// The constant contents (weights, biases, shapes), if the model stores any.
    pub data: Option<Vec<u8>>,
}

impl Tensor {
    /// Number of elements, `None` if it overflows.
    pub fn elements(&self) -> Option<usize> {
        self.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d))
    }

    /// The shape as TensorFlow Lite prints it: `[1, 28, 28, 1]`.
    pub fn shape_text(&self) -> String {
        let dims: Vec<String> = self.shape.iter().map(usize::to_string).collect();
        format!("[{}]", dims.join(", "))
    }
}

/// Padding of a convolution or pooling window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Padding {
    /// TensorFlow's `SAME`: `out = ⌈in / stride⌉`.
    Same,
    /// `VALID`: windows inside the input only.
    Valid,
}

/// A fused activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// None.
    None,
    /// `max(x, 0)`.
    Relu,
    /// `min(max(x, 0), 6)`.
    Relu6,
}

impl Activation {
    /// The TensorFlow Lite name.
    pub fn name(self) -> &'static str {
        match self {
            Activation::None => "NONE",
            Activation::Relu => "RELU",
            Activation::Relu6 => "RELU6",
        }
    }
}

/// Options of CONV_2D and DEPTHWISE_CONV_2D.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvOptions {
    /// Padding.
    pub padding: Padding,
    /// Vertical step.
    pub stride_h: usize,
    /// Horizontal step.
    pub stride_w: usize,
    /// Vertical dilation.
    pub dilation_h: usize,
    /// Horizontal dilation.
    pub dilation_w: usize,
    /// Fused activation.
    pub activation: Activation,
}

/// Options of MAX_POOL_2D and AVERAGE_POOL_2D.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolOptions {
    /// Padding.
    pub padding: Padding,
    /// Vertical step.
    pub stride_h: usize,
    /// Horizontal step.
    pub stride_w: usize,
    /// Window rows.
    pub filter_h: usize,
    /// Window columns.
    pub filter_w: usize,
    /// Fused activation.
    pub activation: Activation,
}

/// An operator and its builtin options.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum OpKind {
    /// CONV_2D: inputs (input, filter OHWI, bias?).
    Conv2d(ConvOptions),
    /// DEPTHWISE_CONV_2D: inputs (input, filter 1HW(C·multiplier), bias?).
    DepthwiseConv2d {
        /// Strides, dilations, padding, activation.
        conv: ConvOptions,
        /// Output channels per input channel.
        depth_multiplier: usize,
    },
    /// MAX_POOL_2D.
    MaxPool2d(PoolOptions),
    /// AVERAGE_POOL_2D.
    AveragePool2d(PoolOptions),
    /// FULLY_CONNECTED: inputs (input, weights `[units][inputs]`, bias?).
    FullyConnected {
        /// Fused activation.
        activation: Activation,
        /// Whether the output keeps the input's leading dimensions.
        keep_num_dims: bool,
    },
    /// RESHAPE (the new shape is the output tensor's).
    Reshape,
    /// SOFTMAX.
    Softmax {
        /// The logits' factor.
        beta: f32,
    },
    /// ADD of two tensors.
    Add {
        /// Fused activation.
        activation: Activation,
    },
    /// QUANTIZE (float to int8 at the input, or int8 to int8).
    Quantize,
    /// DEQUANTIZE (int8 to float at the output).
    Dequantize,
}

impl OpKind {
    /// The TensorFlow Lite name.
    pub fn name(&self) -> &'static str {
        match self {
            OpKind::Conv2d(_) => "CONV_2D",
            OpKind::DepthwiseConv2d { .. } => "DEPTHWISE_CONV_2D",
            OpKind::MaxPool2d(_) => "MAX_POOL_2D",
            OpKind::AveragePool2d(_) => "AVERAGE_POOL_2D",
            OpKind::FullyConnected { .. } => "FULLY_CONNECTED",
            OpKind::Reshape => "RESHAPE",
            OpKind::Softmax { .. } => "SOFTMAX",
            OpKind::Add { .. } => "ADD",
            OpKind::Quantize => "QUANTIZE",
            OpKind::Dequantize => "DEQUANTIZE",
        }
    }
}

/// One operator: what it computes and the indices of its tensors.
#[derive(Debug, Clone, PartialEq)]
pub struct Operator {
    /// Its index in the model's operator list (as error messages name it).
    pub index: usize,
    /// What it computes.
    pub kind: OpKind,
    /// Input tensors; `None` for an omitted optional input (a missing bias).
    pub inputs: Vec<Option<usize>>,
    /// Output tensors.
    pub outputs: Vec<usize>,
}

/// A whole single-subgraph model.
#[derive(Debug, Clone, PartialEq)]
pub struct Graph {
    /// The schema version the file declares (3 for current converters).
    pub version: u32,
    /// Every tensor, by index.
    pub tensors: Vec<Tensor>,
    /// The operators in execution order.
    pub operators: Vec<Operator>,
    /// The graph's input tensors.
    pub inputs: Vec<usize>,
    /// The graph's output tensors.
    pub outputs: Vec<usize>,
}

impl Graph {
    /// Reads a `.tflite` model.
    ///
    /// # Errors
    /// Bytes that are not a valid TensorFlow Lite flatbuffer (truncated, corrupt, another
    /// file), several subgraphs, an operator outside [`SUPPORTED`] (named, with its index),
    /// unsupported options, sparse or dynamically shaped tensors, or indices out of range.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        if bytes.len() < 8 || bytes.get(4..8) != Some(b"TFL3".as_slice()) {
            bail!(
                "not a TensorFlow Lite model (no \"TFL3\" identifier at byte 4; {} bytes)",
                bytes.len()
            );
        }
        let model = fb::root_as_model(bytes).map_err(|e| {
            // The verifier's message spans lines ("…\n\twhile verifying …\n\n"): one line.
            let reason = e
                .to_string()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ");
            anyhow::anyhow!("corrupt TensorFlow Lite flatbuffer: {reason}")
        })?;
        let subgraphs = model.subgraphs().map_or(0, |s| s.len());
        ensure!(
            subgraphs == 1,
            "the model has {subgraphs} subgraphs; the kit reads single-graph models only"
        );
        let graph = model
            .subgraphs()
            .and_then(|s| s.iter().next())
            .context("no subgraph")?;
        let buffers: Vec<fb::Buffer<'_>> = model
            .buffers()
            .map(|b| b.iter().collect())
            .unwrap_or_default();
        let tensors = graph
            .tensors()
            .map(|t| t.iter().collect::<Vec<_>>())
            .unwrap_or_default();
        let tensors = tensors
            .iter()
            .enumerate()
            .map(|(i, t)| read_tensor(t, &buffers, bytes).with_context(|| format!("tensor {i}")))
            .collect::<Result<Vec<_>>>()?;
        let count = tensors.len();
        let index = |i: i32, what: &str| -> Result<usize> {
            usize::try_from(i)
                .ok()
                .filter(|&i| i < count)
                .with_context(|| format!("{what} names tensor {i}, but the model has {count}"))
        };
        let codes: Vec<fb::BuiltinOperator> = model
            .operator_codes()
            .map(|c| c.iter().map(builtin_code).collect())
            .unwrap_or_default();
        let custom: Vec<Option<String>> = model
            .operator_codes()
            .map(|c| {
                c.iter()
                    .map(|c| c.custom_code().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let mut operators = Vec::new();
        for (i, op) in graph.operators().iter().flatten().enumerate() {
            let code_index = op.opcode_index() as usize;
            let code = *codes.get(code_index).with_context(|| {
                format!(
                    "operator {i} names operator code {code_index}, but the model has {}",
                    codes.len()
                )
            })?;
            let kind = read_kind(i, &op, code, custom.get(code_index).cloned().flatten())?;
            let inputs = op
                .inputs()
                .iter()
                .flatten()
                .map(|t| {
                    if t < 0 {
                        Ok(None)
                    } else {
                        index(t, &format!("operator {i} ({})", kind.name())).map(Some)
                    }
                })
                .collect::<Result<Vec<_>>>()?;
            let outputs = op
                .outputs()
                .iter()
                .flatten()
                .map(|t| index(t, &format!("operator {i} ({})", kind.name())))
                .collect::<Result<Vec<_>>>()?;
            operators.push(Operator {
                index: i,
                kind,
                inputs,
                outputs,
            });
        }
        let ends = |v: Option<tflite_schema::flatbuffers::Vector<'_, i32>>, what: &str| {
            v.iter()
                .flatten()
                .map(|t| index(t, what))
                .collect::<Result<Vec<_>>>()
        };
        Ok(Self {
            version: model.version(),
            inputs: ends(graph.inputs(), "the graph's inputs")?,
            outputs: ends(graph.outputs(), "the graph's outputs")?,
            tensors,
            operators,
        })
    }

    /// Tensor `index` (checked by [`Graph::parse`] for every index it stores).
    ///
    /// # Errors
    /// An index out of range.
    pub fn tensor(&self, index: usize) -> Result<&Tensor> {
        self.tensors
            .get(index)
            .with_context(|| format!("no tensor {index}"))
    }
}

/// The operator code of `code`: the larger of the deprecated 8-bit field and the 32-bit one,
/// as TensorFlow Lite reads it.
fn builtin_code(code: fb::OperatorCode<'_>) -> fb::BuiltinOperator {
    let old = i32::from(code.deprecated_builtin_code());
    fb::BuiltinOperator(old.max(code.builtin_code().0))
}

/// The operator `i` of code `code`, with its options.
fn read_kind(
    i: usize,
    op: &fb::Operator<'_>,
    code: fb::BuiltinOperator,
    custom: Option<String>,
) -> Result<OpKind> {
    let name = code.variant_name().unwrap_or("an unknown operator");
    let refuse = || -> anyhow::Error {
        let what = if code == fb::BuiltinOperator::CUSTOM {
            format!(
                "the custom operator \"{}\"",
                custom.as_deref().unwrap_or("unnamed")
            )
        } else if code.variant_name().is_some() {
            name.to_owned()
        } else {
            format!("operator code {}", code.0)
        };
        let hint = if code == fb::BuiltinOperator::SHAPE {
            " (a Keras Flatten with a dynamic batch size becomes SHAPE, STRIDED_SLICE, PACK and \
             RESHAPE: convert the model with a fixed batch, keras.Input(shape, batch_size=1))"
        } else {
            ""
        };
        anyhow::anyhow!(
            "operator {i} is {what}, which this kit cannot run (supported: {}){hint}",
            SUPPORTED.join(", ")
        )
    };
    let missing = || anyhow::anyhow!("operator {i} ({name}) has no options");
    let activation = |a: fb::ActivationFunctionType| -> Result<Activation> {
        Ok(match a {
            fb::ActivationFunctionType::NONE => Activation::None,
            fb::ActivationFunctionType::RELU => Activation::Relu,
            fb::ActivationFunctionType::RELU6 => Activation::Relu6,
            other => bail!(
                "operator {i} ({name}) has the fused activation {}, which this kit cannot run \
                 (supported: NONE, RELU, RELU6)",
                other.variant_name().unwrap_or("unknown")
            ),
        })
    };
    let padding = |p: fb::Padding| -> Result<Padding> {
        Ok(match p {
            fb::Padding::SAME => Padding::Same,
            fb::Padding::VALID => Padding::Valid,
            other => bail!("operator {i} ({name}) has an unknown padding {}", other.0),
        })
    };
    let positive = |v: i32, what: &str| -> Result<usize> {
        usize::try_from(v)
            .ok()
            .filter(|&v| v > 0)
            .with_context(|| format!("operator {i} ({name}) has {what} {v}"))
    };
    // CONV_2D's and DEPTHWISE_CONV_2D's options: padding, strides, dilations, activation.
    let conv = |p: fb::Padding,
                [stride_h, stride_w]: [i32; 2],
                [dilation_h, dilation_w]: [i32; 2],
                a: fb::ActivationFunctionType| {
        Ok::<_, anyhow::Error>(ConvOptions {
            padding: padding(p)?,
            stride_h: positive(stride_h, "stride")?,
            stride_w: positive(stride_w, "stride")?,
            dilation_h: positive(dilation_h, "dilation")?,
            dilation_w: positive(dilation_w, "dilation")?,
            activation: activation(a)?,
        })
    };
    Ok(match code {
        fb::BuiltinOperator::CONV_2D => {
            let o = op
                .builtin_options_as_conv_2_doptions()
                .ok_or_else(missing)?;
            OpKind::Conv2d(conv(
                o.padding(),
                [o.stride_h(), o.stride_w()],
                [o.dilation_h_factor(), o.dilation_w_factor()],
                o.fused_activation_function(),
            )?)
        }
        fb::BuiltinOperator::DEPTHWISE_CONV_2D => {
            let o = op
                .builtin_options_as_depthwise_conv_2_doptions()
                .ok_or_else(missing)?;
            OpKind::DepthwiseConv2d {
                conv: conv(
                    o.padding(),
                    [o.stride_h(), o.stride_w()],
                    [o.dilation_h_factor(), o.dilation_w_factor()],
                    o.fused_activation_function(),
                )?,
                // 0 in files written by converters that leave it to the shapes.
                depth_multiplier: usize::try_from(o.depth_multiplier()).unwrap_or(0),
            }
        }
        fb::BuiltinOperator::MAX_POOL_2D | fb::BuiltinOperator::AVERAGE_POOL_2D => {
            let o = op
                .builtin_options_as_pool_2_doptions()
                .ok_or_else(missing)?;
            let pool = PoolOptions {
                padding: padding(o.padding())?,
                stride_h: positive(o.stride_h(), "stride")?,
                stride_w: positive(o.stride_w(), "stride")?,
                filter_h: positive(o.filter_height(), "window height")?,
                filter_w: positive(o.filter_width(), "window width")?,
                activation: activation(o.fused_activation_function())?,
            };
            if code == fb::BuiltinOperator::MAX_POOL_2D {
                OpKind::MaxPool2d(pool)
            } else {
                OpKind::AveragePool2d(pool)
            }
        }
        fb::BuiltinOperator::FULLY_CONNECTED => {
            let o = op
                .builtin_options_as_fully_connected_options()
                .ok_or_else(missing)?;
            ensure!(
                o.weights_format() == fb::FullyConnectedOptionsWeightsFormat::DEFAULT,
                "operator {i} (FULLY_CONNECTED) has shuffled weights ({}), which this kit cannot \
                 run",
                o.weights_format().variant_name().unwrap_or("unknown")
            );
            OpKind::FullyConnected {
                activation: activation(o.fused_activation_function())?,
                keep_num_dims: o.keep_num_dims(),
            }
        }
        fb::BuiltinOperator::RESHAPE => OpKind::Reshape,
        fb::BuiltinOperator::SOFTMAX => OpKind::Softmax {
            beta: op
                .builtin_options_as_softmax_options()
                .map_or(1.0, |o| o.beta()),
        },
        fb::BuiltinOperator::ADD => OpKind::Add {
            activation: activation(
                op.builtin_options_as_add_options()
                    .map_or(fb::ActivationFunctionType::NONE, |o| {
                        o.fused_activation_function()
                    }),
            )?,
        },
        fb::BuiltinOperator::QUANTIZE => OpKind::Quantize,
        fb::BuiltinOperator::DEQUANTIZE => OpKind::Dequantize,
        _ => return Err(refuse()),
    })
}

/// Reads tensor `t`: shape, type, quantization and, if its buffer has any, its constant data
/// (inside the flatbuffer, or after it at the offset the buffer gives, for models over 2 GB).
fn read_tensor(t: &fb::Tensor<'_>, buffers: &[fb::Buffer<'_>], file: &[u8]) -> Result<Tensor> {
    ensure!(t.sparsity().is_none(), "sparse tensors are not supported");
    let shape = t
        .shape()
        .iter()
        .flatten()
        .map(|d| usize::try_from(d).map_err(|_| anyhow::anyhow!("has a dynamic dimension ({d})")))
        .collect::<Result<Vec<_>>>()?;
    // A shape signature's −1 (a converter's dynamic batch) is run at the shape's size.
    let quant = t.quantization().and_then(|q| {
        let scales: Vec<f32> = q.scale()?.iter().collect();
        let zero_points: Vec<i64> = q
            .zero_point()
            .map(|z| z.iter().collect())
            .unwrap_or_default();
        if scales.is_empty() {
            return None;
        }
        Some(Quantization {
            scales,
            zero_points,
            axis: usize::try_from(q.quantized_dimension()).unwrap_or(usize::MAX),
        })
    });
    if let Some(q) = &quant {
        ensure!(
            q.zero_points.len() == q.scales.len(),
            "has {} quantization scales but {} zero points",
            q.scales.len(),
            q.zero_points.len()
        );
    }
    let buffer = t.buffer() as usize;
    let data = match buffer {
        0 => None,
        b => {
            let buf = buffers.get(b).with_context(|| {
                format!("names buffer {b}, but the model has {}", buffers.len())
            })?;
            buffer_bytes(buf, file)?
        }
    };
    Ok(Tensor {
        name: t.name().unwrap_or("").to_owned(),
        shape,
        dtype: DataType::of(t.type_()),
        quant,
        data,
    })
}

/// The bytes of a buffer: inline data, or `size` bytes at `offset` of the file (offset > 1).
fn buffer_bytes(buf: &fb::Buffer<'_>, file: &[u8]) -> Result<Option<Vec<u8>>> {
    if buf.offset() > 1 {
        let start = usize::try_from(buf.offset()).ok();
        let len = usize::try_from(buf.size()).ok();
        let range = start.zip(len).and_then(|(s, n)| Some(s..s.checked_add(n)?));
        let bytes = range
            .and_then(|r| file.get(r))
            .context("a buffer lies outside the file")?;
        return Ok(Some(bytes.to_vec()));
    }
    Ok(buf
        .data()
        .map(|d| d.bytes().to_vec())
        .filter(|d| !d.is_empty()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tflite_schema::flatbuffers::FlatBufferBuilder;

    /// A one-operator model: tensor 0 (`dtype`, [1, 4]) → operator `code` (custom name
    /// `custom`, operator code index `opcode`) → tensor 1; `subgraphs` copies of the graph.
    fn model(
        code: fb::BuiltinOperator,
        custom: Option<&str>,
        dtype: fb::TensorType,
        opcode: u32,
        subgraphs: usize,
    ) -> Vec<u8> {
        let mut fbb = FlatBufferBuilder::new();
        let custom = custom.map(|c| fbb.create_string(c));
        let codes = [fb::OperatorCode::create(
            &mut fbb,
            &fb::OperatorCodeArgs {
                deprecated_builtin_code: i8::try_from(code.0).unwrap_or(127),
                builtin_code: code,
                custom_code: custom,
                version: 1,
            },
        )];
        let codes = fbb.create_vector(&codes);
        let mut graphs = Vec::new();
        for _ in 0..subgraphs {
            let tensors: Vec<_> = ["in", "out"]
                .iter()
                .map(|name| {
                    let shape = fbb.create_vector(&[1i32, 4]);
                    let name = fbb.create_string(name);
                    fb::Tensor::create(
                        &mut fbb,
                        &fb::TensorArgs {
                            shape: Some(shape),
                            type_: dtype,
                            name: Some(name),
                            ..Default::default()
                        },
                    )
                })
                .collect();
            let tensors = fbb.create_vector(&tensors);
            let (inputs, outputs) = (fbb.create_vector(&[0i32]), fbb.create_vector(&[1i32]));
            let op = fb::Operator::create(
                &mut fbb,
                &fb::OperatorArgs {
                    opcode_index: opcode,
                    inputs: Some(inputs),
                    outputs: Some(outputs),
                    ..Default::default()
                },
            );
            let ops = fbb.create_vector(&[op]);
            let (inputs, outputs) = (fbb.create_vector(&[0i32]), fbb.create_vector(&[1i32]));
            graphs.push(fb::SubGraph::create(
                &mut fbb,
                &fb::SubGraphArgs {
                    tensors: Some(tensors),
                    inputs: Some(inputs),
                    outputs: Some(outputs),
                    operators: Some(ops),
                    ..Default::default()
                },
            ));
        }
        let graphs = fbb.create_vector(&graphs);
        let empty = fb::Buffer::create(&mut fbb, &fb::BufferArgs::default());
        let buffers = fbb.create_vector(&[empty]);
        let root = fb::Model::create(
            &mut fbb,
            &fb::ModelArgs {
                version: 3,
                operator_codes: Some(codes),
                subgraphs: Some(graphs),
                buffers: Some(buffers),
                ..Default::default()
            },
        );
        fb::finish_model_buffer(&mut fbb, root);
        fbb.finished_data().to_vec()
    }

    fn error(bytes: &[u8]) -> String {
        format!("{:#}", Graph::parse(bytes).unwrap_err())
    }

    #[test]
    fn an_unsupported_operator_is_named_with_its_index() {
        let lstm = model(fb::BuiltinOperator::LSTM, None, fb::TensorType::INT8, 0, 1);
        assert_eq!(
            error(&lstm),
            "operator 0 is LSTM, which this kit cannot run (supported: CONV_2D, \
             DEPTHWISE_CONV_2D, MAX_POOL_2D, AVERAGE_POOL_2D, FULLY_CONNECTED, RESHAPE, SOFTMAX, \
             ADD, QUANTIZE, DEQUANTIZE)"
        );
        let custom = model(
            fb::BuiltinOperator::CUSTOM,
            Some("MyOp"),
            fb::TensorType::INT8,
            0,
            1,
        );
        assert!(error(&custom).starts_with("operator 0 is the custom operator \"MyOp\", which"));
        let shape = model(fb::BuiltinOperator::SHAPE, None, fb::TensorType::INT8, 0, 1);
        assert!(error(&shape).contains("batch_size=1"), "{}", error(&shape));
    }

    #[test]
    fn a_float_graph_and_bad_layouts_are_refused() {
        let float = model(
            fb::BuiltinOperator::RESHAPE,
            None,
            fb::TensorType::FLOAT32,
            0,
            1,
        );
        let graph = Graph::parse(&float).unwrap();
        assert_eq!(graph.operators[0].kind, OpKind::Reshape);
        assert_eq!(graph.tensors[0].dtype, DataType::Float32);
        let err = format!("{:#}", super::super::lower::lower(&graph).unwrap_err());
        assert!(err.starts_with("a float model (no int8 tensor)"), "{err}");
        let two = model(
            fb::BuiltinOperator::RESHAPE,
            None,
            fb::TensorType::INT8,
            0,
            2,
        );
        assert!(error(&two).contains("2 subgraphs"), "{}", error(&two));
        let bad_code = model(
            fb::BuiltinOperator::RESHAPE,
            None,
            fb::TensorType::INT8,
            5,
            1,
        );
        assert!(
            error(&bad_code).contains("operator 0 names operator code 5, but the model has 1"),
            "{}",
            error(&bad_code)
        );
    }
}

//! The architecture spec: a layer stack declared once in a small TOML subset, parsed into a
//! [`Spec`] with every layer's output shape inferred.
//!
//! The format is written down in `docs/architecture-spec.md`. It is deliberately tiny (comments,
//! `key = value` lines with integers, decimals, quoted strings or integer lists, and one
//! `[[layer]]` table per layer) so that a `no_std` build script can parse it too.

use anyhow::{bail, ensure, Context, Result};
use std::fmt;
use std::path::Path;

/// The tutorial's model, as `models/tutorial.toml` declares it.
pub const TUTORIAL: &str = include_str!("../../models/tutorial.toml");
/// The tutorial's "more accurate" model with the commented-out layers, as
/// `models/tutorial-full.toml` declares it.
pub const TUTORIAL_FULL: &str = include_str!("../../models/tutorial-full.toml");

/// The named presets `--arch` accepts besides a file path.
pub const PRESETS: [(&str, &str); 2] = [("tutorial", TUTORIAL), ("tutorial-full", TUTORIAL_FULL)];

/// Padding of a convolution, as Keras names it (`valid`, `same`): infer-core's.
pub use infer_core::kernels::conv::Padding;

/// An activation applied after a conv or dense layer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// Identity.
    None,
    /// `max(0, x)`.
    Relu,
    /// `min(max(0, x), 6)`. In int8 it is a ReLU whose output range is calibrated to at
    /// most `[0, 6]`, so that 6 quantizes to 127 or beyond and the int8 clamp is the 6.
    Relu6,
    /// Softmax over the classes; only on the last layer, where it pairs with cross-entropy.
    Softmax,
}

/// One layer of the stack.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LayerSpec {
    /// 2-D convolution with `filters` square `kernel × kernel` filters.
    Conv2d {
        /// Output channels.
        filters: usize,
        /// Side of the square kernel.
        kernel: usize,
        /// Step, 1 or 2, in both directions.
        stride: usize,
        /// Valid or same.
        padding: Padding,
        /// None, ReLU or ReLU6.
        activation: Activation,
    },
    /// Depthwise 2-D convolution: input channel `c` convolved with its own `multiplier`
    /// square `kernel × kernel` filters gives output channels `c·multiplier ..` (Keras'
    /// `DepthwiseConv2D`).
    DepthwiseConv2d {
        /// Side of the square kernel.
        kernel: usize,
        /// Step in both directions.
        stride: usize,
        /// Valid or same.
        padding: Padding,
        /// Output channels per input channel (Keras' `depth_multiplier`).
        multiplier: usize,
        /// None, ReLU or ReLU6.
        activation: Activation,
    },
    /// Average pooling over `pool × pool` windows moving `stride` (Keras'
    /// `AveragePooling2D`); with same padding the padded positions are not counted.
    AvgPool2d {
        /// Side of the window.
        pool: usize,
        /// Step in both directions (Keras' default: the pool).
        stride: usize,
        /// Valid or same.
        padding: Padding,
    },
    /// Max pooling over non-overlapping `pool × pool` windows (stride = pool, remainder dropped).
    MaxPool2d {
        /// Side of the window.
        pool: usize,
    },
    /// Row-major (NHWC) flattening to a vector.
    Flatten,
    /// Fully connected layer.
    Dense {
        /// Outputs.
        units: usize,
        /// None, ReLU, ReLU6, or softmax on the last layer.
        activation: Activation,
    },
    /// Inverted dropout: zeroes a `rate` fraction of the values while training.
    Dropout {
        /// Fraction dropped, in `[0, 1)`.
        rate: f32,
    },
    /// Batch normalisation over the last axis (Keras defaults: momentum 0.99, epsilon 1e-3),
    /// then its activation — Keras' `BatchNormalization()` followed by `Activation(...)`;
    /// folded into the preceding conv/dense layer at quantization, which then takes this
    /// activation.
    BatchNorm {
        /// None, ReLU or ReLU6, applied after the normalisation.
        activation: Activation,
    },
}

impl LayerSpec {
    /// The Keras class name (`Conv2D`, `MaxPooling2D`, …).
    pub fn keras_class(&self) -> &'static str {
        match self {
            Self::Conv2d { .. } => "Conv2D",
            Self::DepthwiseConv2d { .. } => "DepthwiseConv2D",
            Self::AvgPool2d { .. } => "AveragePooling2D",
            Self::MaxPool2d { .. } => "MaxPooling2D",
            Self::Flatten => "Flatten",
            Self::Dense { .. } => "Dense",
            Self::Dropout { .. } => "Dropout",
            Self::BatchNorm { .. } => "BatchNormalization",
        }
    }

    /// The Keras base name of layer instances (`conv2d`, `max_pooling2d`, …).
    pub fn keras_name(&self) -> &'static str {
        match self {
            Self::Conv2d { .. } => "conv2d",
            Self::DepthwiseConv2d { .. } => "depthwise_conv2d",
            Self::AvgPool2d { .. } => "average_pooling2d",
            Self::MaxPool2d { .. } => "max_pooling2d",
            Self::Flatten => "flatten",
            Self::Dense { .. } => "dense",
            Self::Dropout { .. } => "dropout",
            Self::BatchNorm { .. } => "batch_normalization",
        }
    }

    /// The activation after the layer (none for layers without one).
    pub fn activation(&self) -> Activation {
        match *self {
            Self::Conv2d { activation, .. }
            | Self::DepthwiseConv2d { activation, .. }
            | Self::Dense { activation, .. }
            | Self::BatchNorm { activation } => activation,
            _ => Activation::None,
        }
    }

    /// The spec file's `type` value.
    pub fn type_name(&self) -> &'static str {
        match self {
            Self::Conv2d { .. } => "conv2d",
            Self::DepthwiseConv2d { .. } => "depthwise_conv2d",
            Self::AvgPool2d { .. } => "avgpool2d",
            Self::MaxPool2d { .. } => "maxpool2d",
            Self::Flatten => "flatten",
            Self::Dense { .. } => "dense",
            Self::Dropout { .. } => "dropout",
            Self::BatchNorm { .. } => "batchnorm",
        }
    }
}

/// A tensor shape without the batch axis.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Shape {
    /// Height, width, channels (NHWC).
    Spatial {
        /// Rows.
        h: usize,
        /// Columns.
        w: usize,
        /// Channels.
        c: usize,
    },
    /// A vector of this length.
    Flat(usize),
}

impl Shape {
    /// Number of values.
    pub fn len(&self) -> usize {
        match *self {
            Self::Spatial { h, w, c } => h * w * c,
            Self::Flat(n) => n,
        }
    }

    /// Whether the shape holds no value.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// `(h, w, c)`, a vector being `(1, 1, n)`.
    pub fn hwc(&self) -> (usize, usize, usize) {
        match *self {
            Self::Spatial { h, w, c } => (h, w, c),
            Self::Flat(n) => (1, 1, n),
        }
    }

    /// The dimensions as Keras prints them.
    pub fn dims(&self) -> Vec<usize> {
        match *self {
            Self::Spatial { h, w, c } => vec![h, w, c],
            Self::Flat(n) => vec![n],
        }
    }
}

impl Activation {
    /// Whether it clamps at 0 (ReLU or ReLU6): int8 runs both as a ReLU.
    pub fn clamps(self) -> bool {
        matches!(self, Self::Relu | Self::Relu6)
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Spatial { h, w, c } => write!(f, "{h}×{w}×{c}"),
            Self::Flat(n) => write!(f, "{n}"),
        }
    }
}

/// Output side and leading padding of a conv along one axis.
pub fn conv_out(input: usize, kernel: usize, stride: usize, padding: Padding) -> (usize, usize) {
    match padding {
        Padding::Valid => ((input.saturating_sub(kernel)) / stride + 1, 0),
        Padding::Same => {
            let out = input.div_ceil(stride);
            let total = ((out - 1) * stride + kernel).saturating_sub(input);
            (out, total / 2)
        }
    }
}

/// A parsed, shape-checked architecture.
#[derive(Clone, Debug, PartialEq)]
pub struct Spec {
    /// Its name (`name = "…"`, optional).
    pub name: String,
    /// Input shape (MNIST: 28×28×1).
    pub input: Shape,
    /// The layers, first to last.
    pub layers: Vec<LayerSpec>,
    /// `shapes[i]` is the output shape of `layers[i]`.
    pub shapes: Vec<Shape>,
}

impl Spec {
    /// A preset by name (`tutorial`, `tutorial-full`) or else a spec file by path.
    ///
    /// # Errors
    /// An unreadable file or an invalid spec, with the file, line or layer named.
    pub fn load(name_or_path: &str) -> Result<Self> {
        if let Some((_, text)) = PRESETS.iter().find(|(name, _)| *name == name_or_path) {
            return Self::parse(text).with_context(|| format!("preset {name_or_path}"));
        }
        let path = Path::new(name_or_path);
        let text = std::fs::read_to_string(path).with_context(|| {
            format!(
                "--arch {name_or_path}: neither a preset ({}) nor a readable spec file",
                PRESETS.map(|p| p.0).join(", ")
            )
        })?;
        Self::parse(&text).with_context(|| format!("in {}", path.display()))
    }

    /// The tutorial preset.
    pub fn tutorial() -> Self {
        Self::parse(TUTORIAL).expect("the tutorial preset parses (tested)")
    }

    /// Parses spec text and infers every shape.
    ///
    /// # Errors
    /// A syntax error (with its line) or an impossible layer (with its index and type).
    pub fn parse(text: &str) -> Result<Self> {
        let doc = parse_document(text)?;
        let mut name = String::new();
        let mut input = None;
        for (line, key, value) in &doc.top {
            match key.as_str() {
                "name" => name = value.string(*line, key)?.to_owned(),
                "input" => {
                    let dims = value.list(*line, key)?;
                    ensure!(
                        dims.len() == 3 && dims.iter().all(|&d| d > 0),
                        "line {line}: input must be [height, width, channels], all positive"
                    );
                    input = Some(Shape::Spatial {
                        h: dims[0],
                        w: dims[1],
                        c: dims[2],
                    });
                }
                _ => bail!("line {line}: unknown top-level key `{key}` (expected name, input)"),
            }
        }
        let input = input.context("missing `input = [height, width, channels]`")?;
        ensure!(!doc.layers.is_empty(), "no [[layer]] tables");
        let mut layers = Vec::new();
        for (index, table) in doc.layers.iter().enumerate() {
            layers.push(
                parse_layer(table)
                    .with_context(|| format!("layer {index} (line {})", table.line))?,
            );
        }
        Self::new(name, input, layers)
    }

    /// Checks `layers` against `input` and infers the shapes.
    ///
    /// # Errors
    /// The first impossible layer, by index and type, with the shape it got.
    pub fn new(name: String, input: Shape, layers: Vec<LayerSpec>) -> Result<Self> {
        let mut shapes = Vec::with_capacity(layers.len());
        let mut shape = input;
        let last = layers.len().saturating_sub(1);
        for (index, layer) in layers.iter().enumerate() {
            shape = infer(layer, shape, index == last)
                .with_context(|| format!("layer {index} ({})", layer.type_name()))?;
            shapes.push(shape);
        }
        match layers.last() {
            Some(LayerSpec::Dense {
                activation: Activation::Softmax,
                units,
            }) if *units >= 2 => {}
            _ => bail!(
                "layer {last}: the last layer must be `dense` with `activation = \"softmax\"` and at least 2 units (the classes)"
            ),
        }
        Ok(Self {
            name,
            input,
            layers,
            shapes,
        })
    }

    /// Number of classes (units of the last layer).
    pub fn classes(&self) -> usize {
        self.shapes.last().map_or(0, Shape::len)
    }

    /// The input shape of layer `index`.
    pub fn input_of(&self, index: usize) -> Shape {
        if index == 0 {
            self.input
        } else {
            self.shapes[index - 1]
        }
    }

    /// Trainable and non-trainable parameters of layer `index`, Keras' way (batch norm has
    /// `2·C` of each: γ, β; moving mean, moving variance).
    pub fn params_of(&self, index: usize) -> (usize, usize) {
        let (_, _, c_in) = self.input_of(index).hwc();
        match self.layers[index] {
            LayerSpec::Conv2d {
                filters, kernel, ..
            } => (kernel * kernel * c_in * filters + filters, 0),
            LayerSpec::DepthwiseConv2d {
                kernel, multiplier, ..
            } => (kernel * kernel * c_in * multiplier + c_in * multiplier, 0),
            LayerSpec::Dense { units, .. } => (self.input_of(index).len() * units + units, 0),
            LayerSpec::BatchNorm { .. } => (2 * c_in, 2 * c_in),
            _ => (0, 0),
        }
    }

    /// All parameters (trainable + non-trainable), as Keras' "Total params".
    pub fn total_params(&self) -> usize {
        (0..self.layers.len())
            .map(|i| {
                let (t, n) = self.params_of(i);
                t + n
            })
            .sum()
    }

    /// The Keras instance names (`conv2d`, `conv2d_1`, `dense`, `dense_1`, …).
    pub fn keras_names(&self) -> Vec<String> {
        let mut seen: Vec<&str> = Vec::new();
        self.layers
            .iter()
            .map(|l| {
                let base = l.keras_name();
                let n = seen.iter().filter(|s| **s == base).count();
                seen.push(base);
                if n == 0 {
                    base.to_owned()
                } else {
                    format!("{base}_{n}")
                }
            })
            .collect()
    }

    /// The canonical spec text (every key written out), which [`Spec::parse`] reads back
    /// to an equal spec.
    pub fn to_text(&self) -> String {
        let (h, w, c) = self.input.hwc();
        let mut out = String::new();
        if !self.name.is_empty() {
            out += &format!("name = \"{}\"\n", self.name);
        }
        out += &format!("input = [{h}, {w}, {c}]\n");
        for layer in &self.layers {
            out += &format!("\n[[layer]]\ntype = \"{}\"\n", layer.type_name());
            match *layer {
                LayerSpec::Conv2d {
                    filters,
                    kernel,
                    stride,
                    padding,
                    activation,
                } => {
                    out += &format!(
                        "filters = {filters}\nkernel = {kernel}\nstride = {stride}\npadding = \"{}\"\nactivation = \"{}\"\n",
                        padding_name(padding),
                        activation_name(activation)
                    );
                }
                LayerSpec::DepthwiseConv2d {
                    kernel,
                    stride,
                    padding,
                    multiplier,
                    activation,
                } => {
                    out += &format!(
                        "kernel = {kernel}\nstride = {stride}\npadding = \"{}\"\ndepth_multiplier = {multiplier}\nactivation = \"{}\"\n",
                        padding_name(padding),
                        activation_name(activation)
                    );
                }
                LayerSpec::AvgPool2d {
                    pool,
                    stride,
                    padding,
                } => {
                    out += &format!(
                        "pool = {pool}\nstride = {stride}\npadding = \"{}\"\n",
                        padding_name(padding)
                    );
                }
                LayerSpec::MaxPool2d { pool } => out += &format!("pool = {pool}\n"),
                LayerSpec::Dense { units, activation } => {
                    out += &format!(
                        "units = {units}\nactivation = \"{}\"\n",
                        activation_name(activation)
                    );
                }
                LayerSpec::Dropout { rate } => out += &format!("rate = {rate:?}\n"),
                LayerSpec::BatchNorm { activation } => {
                    if activation != Activation::None {
                        out += &format!("activation = \"{}\"\n", activation_name(activation));
                    }
                }
                LayerSpec::Flatten => {}
            }
        }
        out
    }
}

fn padding_name(p: Padding) -> &'static str {
    match p {
        Padding::Valid => "valid",
        Padding::Same => "same",
    }
}

fn activation_name(a: Activation) -> &'static str {
    match a {
        Activation::None => "none",
        Activation::Relu => "relu",
        Activation::Relu6 => "relu6",
        Activation::Softmax => "softmax",
    }
}

/// The output rows and columns of a conv or depthwise conv `layer` with a `kernel × kernel`
/// window moving `stride` over `input`, and the input's channels.
fn sliding(
    layer: &LayerSpec,
    input: Shape,
    kernel: usize,
    stride: usize,
    padding: Padding,
    activation: Activation,
) -> Result<(usize, usize, usize)> {
    let Shape::Spatial { h, w, c } = input else {
        bail!(
            "{} needs an h×w×c input, got the vector {input}",
            layer.type_name()
        );
    };
    ensure!(kernel > 0, "kernel must be positive");
    ensure!(
        (1..=2).contains(&stride),
        "stride must be 1 or 2, got {stride}"
    );
    ensure!(
        activation != Activation::Softmax,
        "softmax is only for the last dense layer"
    );
    if padding == Padding::Valid {
        ensure!(
            kernel <= h && kernel <= w,
            "kernel {kernel}×{kernel} is larger than its {input} input (use padding = \"same\")"
        );
    }
    let (oh, _) = conv_out(h, kernel, stride, padding);
    let (ow, _) = conv_out(w, kernel, stride, padding);
    Ok((oh, ow, c))
}

/// The output shape of `layer` on `input`.
fn infer(layer: &LayerSpec, input: Shape, last: bool) -> Result<Shape> {
    match *layer {
        LayerSpec::Conv2d {
            filters,
            kernel,
            stride,
            padding,
            activation,
        } => {
            ensure!(filters > 0, "filters must be positive");
            let (h, w, _) = sliding(layer, input, kernel, stride, padding, activation)?;
            Ok(Shape::Spatial { h, w, c: filters })
        }
        LayerSpec::DepthwiseConv2d {
            kernel,
            stride,
            padding,
            multiplier,
            activation,
        } => {
            ensure!(
                multiplier > 0,
                "depth_multiplier must be positive (1: one filter per input channel)"
            );
            let (h, w, c) = sliding(layer, input, kernel, stride, padding, activation)?;
            Ok(Shape::Spatial {
                h,
                w,
                c: c * multiplier,
            })
        }
        LayerSpec::AvgPool2d {
            pool,
            stride,
            padding,
        } => {
            let Shape::Spatial { h, w, c } = input else {
                bail!("avgpool2d needs an h×w×c input, got the vector {input}");
            };
            ensure!(pool >= 1, "pool must be positive");
            ensure!(stride >= 1, "stride must be positive");
            if padding == Padding::Valid {
                ensure!(
                    pool <= h && pool <= w,
                    "pool {pool}×{pool} is larger than its {input} input (use padding = \"same\", or pool = {} to average all of it)",
                    h.min(w)
                );
            }
            let (oh, _) = conv_out(h, pool, stride, padding);
            let (ow, _) = conv_out(w, pool, stride, padding);
            Ok(Shape::Spatial { h: oh, w: ow, c })
        }
        LayerSpec::MaxPool2d { pool } => {
            let Shape::Spatial { h, w, c } = input else {
                bail!("maxpool2d needs an h×w×c input, got the vector {input}");
            };
            ensure!(pool >= 1, "pool must be positive");
            ensure!(
                pool <= h && pool <= w,
                "pool {pool}×{pool} is larger than its {input} input"
            );
            Ok(Shape::Spatial {
                h: h / pool,
                w: w / pool,
                c,
            })
        }
        LayerSpec::Flatten => Ok(Shape::Flat(input.len())),
        LayerSpec::Dense { units, activation } => {
            ensure!(
                matches!(input, Shape::Flat(_)),
                "dense needs a vector input, got {input}: add a `flatten` layer before it"
            );
            ensure!(units > 0, "units must be positive");
            ensure!(
                activation != Activation::Softmax || last,
                "softmax is only for the last dense layer"
            );
            Ok(Shape::Flat(units))
        }
        LayerSpec::Dropout { rate } => {
            ensure!(
                (0.0..1.0).contains(&rate),
                "rate must be in [0, 1), got {rate}"
            );
            Ok(input)
        }
        LayerSpec::BatchNorm { activation } => {
            ensure!(
                activation != Activation::Softmax,
                "batch norm takes activation \"none\", \"relu\" or \"relu6\""
            );
            Ok(input)
        }
    }
}

/// A value on the right of `=`.
#[derive(Clone, Debug, PartialEq)]
enum Value {
    Int(usize),
    Float(f64),
    Str(String),
    List(Vec<usize>),
}

impl Value {
    fn int(&self, line: usize, key: &str) -> Result<usize> {
        match self {
            Self::Int(v) => Ok(*v),
            _ => bail!("line {line}: `{key}` must be a non-negative integer"),
        }
    }

    fn float(&self, line: usize, key: &str) -> Result<f64> {
        match self {
            Self::Int(v) => Ok(*v as f64),
            Self::Float(v) => Ok(*v),
            _ => bail!("line {line}: `{key}` must be a number"),
        }
    }

    fn string(&self, line: usize, key: &str) -> Result<&str> {
        match self {
            Self::Str(s) => Ok(s),
            _ => bail!("line {line}: `{key}` must be a quoted string"),
        }
    }

    fn list(&self, line: usize, key: &str) -> Result<&[usize]> {
        match self {
            Self::List(v) => Ok(v),
            _ => bail!("line {line}: `{key}` must be a list like [28, 28, 1]"),
        }
    }
}

/// One `[[layer]]` table: its header line and its `(line, key, value)` entries.
struct Table {
    line: usize,
    entries: Vec<(usize, String, Value)>,
}

/// The top-level entries and the layer tables.
struct Document {
    top: Vec<(usize, String, Value)>,
    layers: Vec<Table>,
}

fn parse_document(text: &str) -> Result<Document> {
    let mut doc = Document {
        top: Vec::new(),
        layers: Vec::new(),
    };
    for (i, raw) in text.lines().enumerate() {
        let line = i + 1;
        let content = strip_comment(raw).trim();
        if content.is_empty() {
            continue;
        }
        if content.starts_with('[') && !content.contains('=') {
            ensure!(
                content == "[[layer]]",
                "line {line}: unknown table `{content}` (the only table is [[layer]])"
            );
            doc.layers.push(Table {
                line,
                entries: Vec::new(),
            });
            continue;
        }
        let (key, value) = content
            .split_once('=')
            .with_context(|| format!("line {line}: expected `key = value`, got `{content}`"))?;
        let key = key.trim();
        ensure!(
            !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "line {line}: bad key `{key}`"
        );
        let value = parse_value(value.trim()).with_context(|| format!("line {line}: `{key}`"))?;
        let entries = match doc.layers.last_mut() {
            Some(table) => &mut table.entries,
            None => &mut doc.top,
        };
        ensure!(
            entries.iter().all(|(_, k, _)| k != key),
            "line {line}: `{key}` given twice"
        );
        entries.push((line, key.to_owned(), value));
    }
    Ok(doc)
}

/// The line without a `#` comment (a `#` inside quotes is kept).
fn strip_comment(line: &str) -> &str {
    let mut quoted = false;
    for (i, c) in line.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted => return &line[..i],
            _ => {}
        }
    }
    line
}

fn parse_value(text: &str) -> Result<Value> {
    if let Some(inner) = text.strip_prefix('"') {
        let s = inner
            .strip_suffix('"')
            .context("unterminated string (strings are \"…\" on one line)")?;
        ensure!(!s.contains('"'), "a string may not contain a quote");
        return Ok(Value::Str(s.to_owned()));
    }
    if let Some(inner) = text.strip_prefix('[') {
        let inner = inner.strip_suffix(']').context("unterminated list")?;
        let items = inner
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse::<usize>()
                    .with_context(|| format!("list item `{s}` is not a non-negative integer"))
            })
            .collect::<Result<Vec<_>>>()?;
        return Ok(Value::List(items));
    }
    if let Ok(v) = text.parse::<usize>() {
        return Ok(Value::Int(v));
    }
    match text.parse::<f64>() {
        Ok(v) if v.is_finite() => Ok(Value::Float(v)),
        _ => bail!("`{text}` is not an integer, a number, a \"string\" or a [list]"),
    }
}

fn parse_layer(table: &Table) -> Result<LayerSpec> {
    let get = |key: &str| table.entries.iter().find(|(_, k, _)| k == key);
    let (line, _, kind) = get("type").context("missing `type = \"…\"`")?;
    let kind = kind.string(*line, "type")?;
    let allowed: &[&str] = match kind {
        "conv2d" => &["type", "filters", "kernel", "stride", "padding", "activation"],
        "depthwise_conv2d" => &[
            "type",
            "kernel",
            "stride",
            "padding",
            "depth_multiplier",
            "activation",
        ],
        "maxpool2d" => &["type", "pool"],
        "avgpool2d" => &["type", "pool", "stride", "padding"],
        "flatten" => &["type"],
        "batchnorm" => &["type", "activation"],
        "dense" => &["type", "units", "activation"],
        "dropout" => &["type", "rate"],
        _ => bail!(
            "line {line}: unknown type `{kind}` (expected conv2d, depthwise_conv2d, maxpool2d, avgpool2d, flatten, dense, dropout, batchnorm)"
        ),
    };
    for (line, key, _) in &table.entries {
        ensure!(
            allowed.contains(&key.as_str()),
            "line {line}: `{key}` is not a key of {kind} (it takes {})",
            allowed[1..].join(", ")
        );
    }
    let int = |key: &str, default: Option<usize>| -> Result<usize> {
        match get(key) {
            Some((line, _, v)) => v.int(*line, key),
            None => default.with_context(|| format!("{kind} needs `{key}`")),
        }
    };
    let activation = || -> Result<Activation> {
        match get("activation") {
            None => Ok(Activation::None),
            Some((line, k, v)) => match v.string(*line, k)? {
                "none" | "linear" => Ok(Activation::None),
                "relu" => Ok(Activation::Relu),
                "relu6" => Ok(Activation::Relu6),
                "softmax" => Ok(Activation::Softmax),
                other => bail!(
                    "line {line}: unknown activation `{other}` (expected none, relu, relu6, softmax)"
                ),
            },
        }
    };
    let padding = || -> Result<Padding> {
        match get("padding") {
            None => Ok(Padding::Valid),
            Some((line, k, v)) => match v.string(*line, k)? {
                "valid" => Ok(Padding::Valid),
                "same" => Ok(Padding::Same),
                other => bail!("line {line}: unknown padding `{other}` (expected valid, same)"),
            },
        }
    };
    Ok(match kind {
        "conv2d" => LayerSpec::Conv2d {
            filters: int("filters", None)?,
            kernel: int("kernel", None)?,
            stride: int("stride", Some(1))?,
            padding: padding()?,
            activation: activation()?,
        },
        "depthwise_conv2d" => LayerSpec::DepthwiseConv2d {
            kernel: int("kernel", None)?,
            stride: int("stride", Some(1))?,
            padding: padding()?,
            multiplier: int("depth_multiplier", Some(1))?,
            activation: activation()?,
        },
        "maxpool2d" => LayerSpec::MaxPool2d {
            pool: int("pool", Some(2))?,
        },
        "avgpool2d" => {
            let pool = int("pool", Some(2))?;
            LayerSpec::AvgPool2d {
                pool,
                stride: int("stride", Some(pool))?,
                padding: padding()?,
            }
        }
        "flatten" => LayerSpec::Flatten,
        "batchnorm" => LayerSpec::BatchNorm {
            activation: activation()?,
        },
        "dense" => LayerSpec::Dense {
            units: int("units", None)?,
            activation: activation()?,
        },
        _ => LayerSpec::Dropout {
            rate: match get("rate") {
                Some((line, k, v)) => v.float(*line, k)? as f32,
                None => bail!("dropout needs `rate`"),
            },
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> String {
        format!("{:#}", Spec::parse(text).unwrap_err())
    }

    #[test]
    fn presets_parse_with_keras_shapes_and_parameter_counts() {
        let t = Spec::tutorial();
        assert_eq!(t.total_params(), 54_410);
        assert_eq!(
            t.shapes[0],
            Shape::Spatial {
                h: 26,
                w: 26,
                c: 32
            }
        );
        assert_eq!(t.shapes[3], Shape::Flat(5408));
        let full = Spec::load("tutorial-full").unwrap();
        assert_eq!(full.total_params(), 1_199_882);
        assert_eq!(
            full.shapes[1],
            Shape::Spatial {
                h: 24,
                w: 24,
                c: 64
            }
        );
        assert_eq!(full.shapes[4], Shape::Flat(9216));
        assert_eq!(full.classes(), 10);
        assert_eq!(
            full.keras_names(),
            [
                "conv2d",
                "conv2d_1",
                "max_pooling2d",
                "dropout",
                "flatten",
                "dense",
                "dropout_1",
                "dense_1"
            ]
        );
    }

    #[test]
    fn canonical_text_reads_back_to_the_same_spec() {
        for (_, text) in PRESETS {
            let spec = Spec::parse(text).unwrap();
            assert_eq!(Spec::parse(&spec.to_text()).unwrap(), spec);
        }
    }

    #[test]
    fn same_padding_and_stride_two_follow_tensorflow() {
        assert_eq!(conv_out(28, 3, 1, Padding::Same), (28, 1));
        assert_eq!(conv_out(28, 3, 2, Padding::Same), (14, 0));
        assert_eq!(conv_out(27, 3, 2, Padding::Same), (14, 1));
        assert_eq!(conv_out(28, 4, 1, Padding::Same), (28, 1));
        assert_eq!(conv_out(28, 3, 2, Padding::Valid), (13, 0));
        let spec = Spec::parse(
            "input = [28, 28, 1]\n[[layer]]\ntype = \"conv2d\"\nfilters = 8\nkernel = 5\nstride = 2\npadding = \"same\"\n\
             [[layer]]\ntype = \"batchnorm\"\n[[layer]]\ntype = \"flatten\"\n[[layer]]\ntype = \"dense\"\nunits = 10\nactivation = \"softmax\"\n",
        )
        .unwrap();
        assert_eq!(spec.shapes[0], Shape::Spatial { h: 14, w: 14, c: 8 });
        assert_eq!(spec.params_of(1), (16, 16));
    }

    #[test]
    fn depthwise_average_pool_and_relu6_parse_with_keras_shapes() {
        let spec = Spec::parse(include_str!("../../models/ds-cnn.toml")).unwrap();
        let shapes: Vec<_> = spec.shapes.iter().map(Shape::dims).collect();
        assert_eq!(
            shapes,
            [
                vec![14, 14, 32],
                vec![14, 14, 32],
                vec![14, 14, 32],
                vec![7, 7, 32],
                vec![7, 7, 64],
                vec![3, 3, 64],
                vec![576],
                vec![10]
            ]
        );
        assert_eq!(spec.params_of(1), (3 * 3 * 32 + 32, 0));
        assert_eq!(spec.total_params(), 9_898);
        assert_eq!(spec.layers[1].activation(), Activation::Relu6);
        assert_eq!(
            spec.layers[5],
            LayerSpec::AvgPool2d {
                pool: 2,
                stride: 2,
                padding: Padding::Valid
            }
        );
        assert_eq!(spec.keras_names()[3], "depthwise_conv2d_1");
        assert_eq!(spec.layers[5].keras_class(), "AveragePooling2D");
        assert_eq!(Spec::parse(&spec.to_text()).unwrap(), spec);
        // A depth multiplier, stride 2, overlapping average pool windows with same padding.
        let text = "input = [9, 9, 2]\n[[layer]]\ntype = \"depthwise_conv2d\"\nkernel = 3\nstride = 2\ndepth_multiplier = 3\nactivation = \"relu6\"\n\
                    [[layer]]\ntype = \"avgpool2d\"\npool = 3\nstride = 2\npadding = \"same\"\n\
                    [[layer]]\ntype = \"flatten\"\n[[layer]]\ntype = \"dense\"\nunits = 3\nactivation = \"softmax\"\n";
        let spec = Spec::parse(text).unwrap();
        assert_eq!(spec.shapes[0], Shape::Spatial { h: 4, w: 4, c: 6 });
        assert_eq!(spec.shapes[1], Shape::Spatial { h: 2, w: 2, c: 6 });
        assert_eq!(spec.params_of(0), (3 * 3 * 2 * 3 + 6, 0));
        assert_eq!(Spec::parse(&spec.to_text()).unwrap(), spec);
    }

    #[test]
    fn errors_name_the_line_or_the_layer_and_the_problem() {
        let head = "input = [28, 28, 1]\n";
        let soft = "[[layer]]\ntype = \"flatten\"\n[[layer]]\ntype = \"dense\"\nunits = 10\nactivation = \"softmax\"\n";
        let e = err(&format!(
            "{head}[[layer]]\ntype = \"dense\"\nunits = 4\n{soft}"
        ));
        assert!(
            e.contains("layer 0 (dense)") && e.contains("add a `flatten`"),
            "{e}"
        );
        let e = err(&format!(
            "{head}[[layer]]\ntype = \"conv2d\"\nfilters = 4\nkernel = 30\n{soft}"
        ));
        assert!(
            e.contains("layer 0 (conv2d)") && e.contains("larger than its 28×28×1"),
            "{e}"
        );
        let e = err(&format!(
            "{head}[[layer]]\ntype = \"conv2d\"\nfilters = 4\nkernel = 3\nstride = 3\n{soft}"
        ));
        assert!(e.contains("stride must be 1 or 2"), "{e}");
        let e = err(&format!("{head}[[layer]]\ntype = \"conv3d\"\n"));
        assert!(
            e.contains("line 3") && e.contains("unknown type `conv3d`"),
            "{e}"
        );
        let e = err(&format!(
            "{head}[[layer]]\ntype = \"maxpool2d\"\nsize = 2\n{soft}"
        ));
        assert!(
            e.contains("line 4") && e.contains("`size` is not a key"),
            "{e}"
        );
        let e = err(&format!("{head}[[layer]]\ntype = \"flatten\"\n"));
        assert!(e.contains("last layer must be `dense`"), "{e}");
        let e = err("input = 28\n");
        assert!(e.contains("line 1") && e.contains("list"), "{e}");
        let e = err(&format!(
            "{head}[[layer]]\ntype = \"dropout\"\nrate = 1.5\n{soft}"
        ));
        assert!(e.contains("rate must be in [0, 1)"), "{e}");
        let e = err(&format!(
            "{head}{soft}[[layer]]\ntype = \"dense\"\nunits = 3\nactivation = \"softmax\"\n"
        ));
        assert!(
            e.contains("layer 1 (dense)") && e.contains("only for the last"),
            "{e}"
        );
        let e = err(&format!(
            "{head}[[layer]]\ntype = \"depthwise_conv2d\"\nkernel = 3\ndepth_multiplier = 0\n{soft}"
        ));
        assert!(
            e.contains("layer 0 (depthwise_conv2d)")
                && e.contains("depth_multiplier must be positive"),
            "{e}"
        );
        let e = err(&format!(
            "{head}[[layer]]\ntype = \"depthwise_conv2d\"\nkernel = 3\nfilters = 8\n{soft}"
        ));
        assert!(
            e.contains("line 5") && e.contains("`filters` is not a key of depthwise_conv2d"),
            "{e}"
        );
        let e = err(&format!(
            "{head}[[layer]]\ntype = \"avgpool2d\"\npool = 29\n{soft}"
        ));
        assert!(
            e.contains("layer 0 (avgpool2d)") && e.contains("pool = 28 to average all of it"),
            "{e}"
        );
        let e = err(&format!(
            "{head}[[layer]]\ntype = \"conv2d\"\nfilters = 4\nkernel = 3\nactivation = \"relu8\"\n{soft}"
        ));
        assert!(
            e.contains("line 6") && e.contains("expected none, relu, relu6, softmax"),
            "{e}"
        );
    }
}

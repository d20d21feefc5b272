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
    /// A residual block's shortcut with layers of its own (a `[[layer.shortcut]]` list): the
    /// layers after it read tensor `from`, the block's input, instead of the previous output
    /// (the main path's, which the block's [`LayerSpec::Add`] reads). Only a residual block
    /// has it (see [`Spec::blocks`]).
    Branch {
        /// The tensor: 0 the spec's input, `i + 1` the output of layer `i`.
        from: usize,
    },
    /// The end of a residual block (`type = "residual"`): the previous output plus tensor
    /// `other` (Keras' `Add()`), then the activation. Without a shortcut layer the previous
    /// output is the main path's and `other` the block's input; with one, the previous output
    /// is the shortcut's and `other` the main path's.
    Add {
        /// The other operand: 0 the spec's input, `i + 1` the output of layer `i`.
        other: usize,
        /// None, ReLU or ReLU6, applied after the sum.
        activation: Activation,
    },
}

/// The layer types a residual block's main path and shortcut may hold.
pub const BLOCK_TYPES: [&str; 6] = [
    "conv2d",
    "depthwise_conv2d",
    "maxpool2d",
    "avgpool2d",
    "batchnorm",
    "dropout",
];

/// A residual block of a [`Spec`], by layer indices: the main path is layers
/// `start..end_of_main`, the shortcut the identity or layers `branch + 1..add`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Block {
    /// Its first layer; tensor `start` (the output of layer `start − 1`, or the input) is the
    /// block's input.
    pub start: usize,
    /// Its [`LayerSpec::Branch`], if the shortcut has layers: the main path ends before it.
    pub branch: Option<usize>,
    /// Its [`LayerSpec::Add`].
    pub add: usize,
}

impl Block {
    /// The main path's layers.
    pub fn main(&self) -> std::ops::Range<usize> {
        self.start..self.branch.unwrap_or(self.add)
    }

    /// The shortcut's layers (empty: the identity).
    pub fn shortcut(&self) -> std::ops::Range<usize> {
        self.branch.map_or(self.add..self.add, |b| b + 1..self.add)
    }
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
            Self::Branch { .. } => "Shortcut",
            Self::Add { .. } => "Add",
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
            Self::Branch { .. } => "shortcut",
            Self::Add { .. } => "add",
        }
    }

    /// The activation after the layer (none for layers without one).
    pub fn activation(&self) -> Activation {
        match *self {
            Self::Conv2d { activation, .. }
            | Self::DepthwiseConv2d { activation, .. }
            | Self::Dense { activation, .. }
            | Self::Add { activation, .. }
            | Self::BatchNorm { activation } => activation,
            _ => Activation::None,
        }
    }

    /// The spec file's `type` value (a residual block's add: `residual`, the table that
    /// declares the block; its [`LayerSpec::Branch`]: `shortcut`).
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
            Self::Branch { .. } => "shortcut",
            Self::Add { .. } => "residual",
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
        // The layers in order, a residual block's flattened (main path, [branch, shortcut],
        // add), with the line of each one's table.
        let mut layers = Vec::new();
        let mut lines = Vec::new();
        for table in &doc.layers {
            let at = || format!("layer {} (line {})", layers.len(), table.line);
            if !table.is_residual() {
                ensure!(
                    table.main.is_empty() && table.shortcut.is_empty(),
                    "line {}: [[layer.{}]] belongs to a `type = \"residual\"` layer; the layer at line {} is not one",
                    table.main.first().or(table.shortcut.first()).map_or(0, |t| t.line),
                    if table.main.is_empty() { "shortcut" } else { "main" },
                    table.line
                );
                layers.push(parse_layer(table).with_context(at)?);
                lines.push(table.line);
                continue;
            }
            let activation = parse_residual(table).with_context(at)?;
            let start = layers.len();
            for (path, tables) in [("main", &table.main), ("shortcut", &table.shortcut)] {
                if path == "shortcut" && !tables.is_empty() {
                    layers.push(LayerSpec::Branch { from: start });
                    lines.push(table.line);
                }
                for inner in tables {
                    let layer = parse_layer(inner).with_context(|| {
                        format!(
                            "layer {} (line {}), in the {path} path of the residual block at line {}",
                            layers.len(),
                            inner.line,
                            table.line
                        )
                    })?;
                    layers.push(layer);
                    lines.push(inner.line);
                }
            }
            let other = match table.shortcut.is_empty() {
                true => start,
                false => start + table.main.len(),
            };
            layers.push(LayerSpec::Add { other, activation });
            lines.push(table.line);
        }
        Self::checked(name, input, layers, &lines)
    }

    /// Checks `layers` against `input` and infers the shapes.
    ///
    /// # Errors
    /// The first impossible layer, by index and type, with the shape it got.
    pub fn new(name: String, input: Shape, layers: Vec<LayerSpec>) -> Result<Self> {
        Self::checked(name, input, layers, &[])
    }

    /// [`Spec::new`], naming in its errors the line of each layer's table (`lines[i]` for
    /// layer `i`, where given).
    fn checked(
        name: String,
        input: Shape,
        layers: Vec<LayerSpec>,
        lines: &[usize],
    ) -> Result<Self> {
        let blocks = find_blocks(&layers)?;
        let mut shapes: Vec<Shape> = Vec::with_capacity(layers.len());
        let mut shape = input;
        let last = layers.len().saturating_sub(1);
        for (index, layer) in layers.iter().enumerate() {
            let tensor = |t: usize| if t == 0 { input } else { shapes[t - 1] };
            let at = || match lines.get(index) {
                Some(line) => format!("layer {index} ({}) at line {line}", layer.type_name()),
                None => format!("layer {index} ({})", layer.type_name()),
            };
            let block = blocks.iter().find(|b| (b.start..=b.add).contains(&index));
            shape = match *layer {
                LayerSpec::Branch { from } => tensor(from),
                LayerSpec::Add { other, activation } => {
                    let block = block.context("an add outside a residual block")?;
                    check_add(block, tensor(block.start), tensor(other), shape, activation)
                        .with_context(at)?
                }
                _ => {
                    if block.is_some() {
                        ensure!(
                            BLOCK_TYPES.contains(&layer.type_name()),
                            "{}: a residual block holds only {} layers",
                            at(),
                            BLOCK_TYPES.join(", ")
                        );
                    }
                    infer(layer, shape, index == last).with_context(at)?
                }
            };
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

    /// The residual blocks, first to last (checked by [`Spec::new`]).
    pub fn blocks(&self) -> Vec<Block> {
        find_blocks(&self.layers).unwrap_or_default()
    }

    /// Whether tensor `t` (0 the input, `i + 1` the output of layer `i`) is read again by a
    /// later layer than the next: it is a residual block's input or its main path's output.
    pub fn reads_again(&self, t: usize) -> bool {
        self.layers.iter().any(|l| match *l {
            LayerSpec::Branch { from } => from == t,
            LayerSpec::Add { other, .. } => other == t,
            _ => false,
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
        let blocks = self.blocks();
        for (index, layer) in self.layers.iter().enumerate() {
            let block = blocks.iter().find(|b| (b.start..=b.add).contains(&index));
            let table = match block {
                Some(b) if b.start == index => {
                    let activation = self.layers[b.add].activation();
                    out += "\n[[layer]]\ntype = \"residual\"\n";
                    if activation != Activation::None {
                        out += &format!("activation = \"{}\"\n", activation_name(activation));
                    }
                    "layer.main"
                }
                Some(b) if b.main().contains(&index) => "layer.main",
                Some(_) => "layer.shortcut",
                None => "layer",
            };
            if matches!(layer, LayerSpec::Branch { .. } | LayerSpec::Add { .. }) {
                continue;
            }
            out += &format!("\n[[{table}]]\ntype = \"{}\"\n", layer.type_name());
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
                LayerSpec::Flatten | LayerSpec::Branch { .. } | LayerSpec::Add { .. } => {}
            }
        }
        out
    }
}

/// The residual blocks of `layers`: each [`LayerSpec::Add`] closes one, whose input is
/// tensor `other` (identity shortcut) or, if layer `other` is a [`LayerSpec::Branch`], that
/// branch's tensor; a block holds no other block, and every branch belongs to one.
fn find_blocks(layers: &[LayerSpec]) -> Result<Vec<Block>> {
    let mut blocks: Vec<Block> = Vec::new();
    for (add, layer) in layers.iter().enumerate() {
        let LayerSpec::Add { other, .. } = *layer else {
            continue;
        };
        let (start, branch) = match layers.get(other) {
            Some(&LayerSpec::Branch { from }) if other < add => (from, Some(other)),
            _ => (other, None),
        };
        let block = Block { start, branch, add };
        ensure!(
            start < block.main().end && block.main().end <= add,
            "layer {add} (residual): its main path is empty (a residual block needs at least one layer in [[layer.main]])"
        );
        ensure!(
            blocks.last().is_none_or(|b| b.add < start),
            "layer {add} (residual): residual blocks may not overlap or nest"
        );
        let inside = |i: &usize| Some(*i) != branch;
        if let Some(i) = (start..add)
            .filter(inside)
            .find(|&i| matches!(layers[i], LayerSpec::Branch { .. } | LayerSpec::Add { .. }))
        {
            bail!(
                "layer {i} ({}): residual blocks may not nest",
                layers[i].type_name()
            );
        }
        blocks.push(block);
    }
    if let Some(i) = layers.iter().enumerate().position(|(i, l)| {
        matches!(l, LayerSpec::Branch { .. }) && !blocks.iter().any(|b| b.branch == Some(i))
    }) {
        bail!("layer {i} (shortcut): a branch outside a residual block");
    }
    Ok(blocks)
}

/// The output shape of a residual block's add: its main path's and its shortcut's must be
/// one shape (`input`: the block's input; `other`, `previous`: the add's operands).
fn check_add(
    block: &Block,
    input: Shape,
    other: Shape,
    previous: Shape,
    activation: Activation,
) -> Result<Shape> {
    ensure!(
        activation != Activation::Softmax,
        "a residual block takes activation \"none\", \"relu\" or \"relu6\""
    );
    let Shape::Spatial { h, w, .. } = input else {
        bail!("a residual block needs an h×w×c input, got the vector {input}");
    };
    let (main, shortcut) = match block.branch {
        Some(_) => (other, previous),
        None => (previous, other),
    };
    if main == shortcut {
        return Ok(main);
    }
    let Shape::Spatial {
        h: mh,
        w: mw,
        c: mc,
    } = main
    else {
        bail!("the main path gives the vector {main}, not an h×w×c map");
    };
    // The 1×1 conv shortcut that would give the main path's shape, if one does.
    let stride = (1..=2).find(|&s| h.div_ceil(s) == mh && w.div_ceil(s) == mw);
    let fix = match (block.branch, stride) {
        (None, Some(stride)) => format!(
            "give the block a shortcut that makes {input} into {main}: [[layer.shortcut]] with type = \"conv2d\", filters = {mc}, kernel = 1, stride = {stride}"
        ),
        (Some(_), Some(stride)) => format!(
            "make the shortcut's output {main} (a conv2d with filters = {mc}, kernel = 1, stride = {stride} does)"
        ),
        (_, None) => format!(
            "no 1×1 conv shortcut makes the block's {input} input into {main} (stride 1 or 2): \
             change the main path (padding = \"same\", a stride of at most 2 in all)"
        ),
    };
    bail!(
        "the main path gives {main} but the {} gives {shortcut}, and the add needs one shape: {fix}",
        if block.branch.is_some() {
            "shortcut"
        } else {
            "identity shortcut (the block's input)"
        }
    )
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
        // They read earlier tensors: `Spec::new` infers their shapes.
        LayerSpec::Branch { .. } | LayerSpec::Add { .. } => {
            bail!("a residual block's shortcut or add outside its block")
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

/// One `[[layer]]` table: its header line, its `(line, key, value)` entries and, for a
/// residual block, its `[[layer.main]]` and `[[layer.shortcut]]` tables.
struct Table {
    line: usize,
    entries: Vec<(usize, String, Value)>,
    main: Vec<Table>,
    shortcut: Vec<Table>,
}

impl Table {
    fn new(line: usize) -> Self {
        Self {
            line,
            entries: Vec::new(),
            main: Vec::new(),
            shortcut: Vec::new(),
        }
    }

    fn get(&self, key: &str) -> Option<&(usize, String, Value)> {
        self.entries.iter().find(|(_, k, _)| k == key)
    }

    /// Whether it says `type = "residual"`.
    fn is_residual(&self) -> bool {
        matches!(self.get("type"), Some((_, _, Value::Str(s))) if s == "residual")
    }
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
            match content {
                "[[layer]]" => doc.layers.push(Table::new(line)),
                "[[layer.main]]" | "[[layer.shortcut]]" => {
                    let layer = doc.layers.last_mut().with_context(|| {
                        format!("line {line}: {content} before any [[layer]] (it belongs to a `type = \"residual\"` layer)")
                    })?;
                    let path = match content {
                        "[[layer.main]]" => &mut layer.main,
                        _ => &mut layer.shortcut,
                    };
                    path.push(Table::new(line));
                }
                "[layer.main]" | "[layer.shortcut]" => bail!(
                    "line {line}: write [{content}] (an array of tables: one per layer of the path, in order)"
                ),
                _ => bail!(
                    "line {line}: unknown table `{content}` (the tables are [[layer]], and in a residual layer [[layer.main]] and [[layer.shortcut]])"
                ),
            }
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
        // The last table opened: a path's last layer if the last [[layer]] has paths.
        let entries = match doc.layers.last_mut() {
            Some(table) => {
                let path_line = |p: &[Table]| p.last().map_or(0, |t| t.line);
                let in_path = if path_line(&table.shortcut) > path_line(&table.main) {
                    table.shortcut.last_mut()
                } else {
                    table.main.last_mut()
                };
                match in_path {
                    Some(inner) => &mut inner.entries,
                    None => &mut table.entries,
                }
            }
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

/// The activation after a residual block's add (`type = "residual"`, `activation`).
fn parse_residual(table: &Table) -> Result<Activation> {
    for (line, key, _) in &table.entries {
        ensure!(
            key == "type" || key == "activation",
            "line {line}: `{key}` is not a key of residual (it takes activation; its layers go in [[layer.main]] and [[layer.shortcut]] tables)"
        );
    }
    ensure!(
        !table.main.is_empty(),
        "the residual block at line {} has no [[layer.main]] layers (its main path)",
        table.line
    );
    match parse_activation(table)? {
        Activation::Softmax => bail!(
            "line {}: a residual block's activation is none, relu or relu6",
            table.get("activation").map_or(table.line, |e| e.0)
        ),
        other => Ok(other),
    }
}

/// A table's `activation` (none if absent).
fn parse_activation(table: &Table) -> Result<Activation> {
    match table.get("activation") {
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
}

fn parse_layer(table: &Table) -> Result<LayerSpec> {
    let get = |key: &str| table.get(key);
    let (line, _, kind) = get("type").context("missing `type = \"…\"`")?;
    let kind = kind.string(*line, "type")?;
    let allowed: &[&str] = match kind {
        "residual" => bail!(
            "line {line}: a residual block inside another: blocks do not nest (close the first with a [[layer]] after it)"
        ),
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
            "line {line}: unknown type `{kind}` (expected conv2d, depthwise_conv2d, maxpool2d, avgpool2d, flatten, dense, dropout, batchnorm, residual)"
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
    let activation = || parse_activation(table);
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
    fn residual_blocks_flatten_into_main_path_branch_shortcut_and_add() {
        let spec = Spec::parse(include_str!("../../models/resnet-tiny.toml")).unwrap();
        let types: Vec<_> = spec.layers.iter().map(LayerSpec::type_name).collect();
        assert_eq!(
            types,
            [
                "conv2d",
                "conv2d",
                "conv2d",
                "residual",
                "conv2d",
                "conv2d",
                "shortcut",
                "conv2d",
                "residual",
                "avgpool2d",
                "flatten",
                "dense"
            ]
        );
        // Block 1 adds its main path's output to its input (tensor 1, layer 0's output);
        // block 2 branches back to its input (tensor 4), whose 1×1 conv output is added to
        // the main path's output (tensor 6).
        assert_eq!(
            spec.layers[3],
            LayerSpec::Add {
                other: 1,
                activation: Activation::Relu
            }
        );
        assert_eq!(spec.layers[6], LayerSpec::Branch { from: 4 });
        assert_eq!(
            spec.layers[8],
            LayerSpec::Add {
                other: 6,
                activation: Activation::Relu
            }
        );
        assert_eq!(
            spec.blocks(),
            [
                Block {
                    start: 1,
                    branch: None,
                    add: 3
                },
                Block {
                    start: 4,
                    branch: Some(6),
                    add: 8
                }
            ]
        );
        assert_eq!(spec.blocks()[1].main(), 4..6);
        assert_eq!(spec.blocks()[1].shortcut(), 7..8);
        assert!(spec.blocks()[0].shortcut().is_empty());
        let dims: Vec<_> = spec.shapes.iter().map(Shape::dims).collect();
        assert_eq!(dims[3], [14, 14, 8]);
        assert_eq!(dims[6], [14, 14, 8], "the branch gives the block's input");
        assert_eq!(dims[8], [7, 7, 16]);
        assert_eq!(spec.total_params(), 6_330);
        assert!(spec.reads_again(1) && spec.reads_again(4) && spec.reads_again(6));
        assert!(!spec.reads_again(2) && !spec.reads_again(0));
        assert_eq!(spec.keras_names()[8], "add_1");
        assert_eq!(spec.layers[6].keras_class(), "Shortcut");
        assert_eq!(Spec::parse(&spec.to_text()).unwrap(), spec);
        assert!(
            spec.to_text().contains("[[layer.shortcut]]"),
            "{}",
            spec.to_text()
        );
    }

    #[test]
    fn a_residual_spec_with_any_line_dropped_or_doubled_parses_or_is_refused_without_panicking() {
        let text = include_str!("../../models/resnet-tiny.toml");
        let lines: Vec<&str> = text.lines().collect();
        for i in 0..lines.len() {
            for doubled in [false, true] {
                let mut edited = lines.clone();
                if doubled {
                    edited.insert(i, lines[i]);
                } else {
                    edited.remove(i);
                }
                if let Ok(spec) = Spec::parse(&edited.join("\n")) {
                    crate::plan::Plan::of(&spec).ok();
                    assert_eq!(Spec::parse(&spec.to_text()).unwrap(), spec);
                }
            }
        }
    }

    #[test]
    fn residual_errors_name_the_block_the_problem_and_the_fix() {
        let head = "input = [8, 8, 4]\n";
        let tail = "[[layer]]\ntype = \"flatten\"\n[[layer]]\ntype = \"dense\"\nunits = 3\nactivation = \"softmax\"\n";
        let conv = |table: &str, filters: usize, stride: usize| {
            format!("[[layer.{table}]]\ntype = \"conv2d\"\nfilters = {filters}\nkernel = 3\nstride = {stride}\npadding = \"same\"\n")
        };
        let block = |body: String| {
            format!("{head}[[layer]]\ntype = \"residual\"\nactivation = \"relu\"\n{body}{tail}")
        };
        // Fine: the identity shortcut on an unchanged shape.
        Spec::parse(&block(conv("main", 4, 1))).unwrap();
        // The identity cannot follow a stride and more filters: the fix is a 1×1 conv.
        let e = err(&block(conv("main", 8, 2)));
        assert!(
            e.contains("layer 1 (residual) at line 2")
                && e.contains("the main path gives 4×4×8 but the identity shortcut (the block's input) gives 8×8×4")
                && e.contains("[[layer.shortcut]] with type = \"conv2d\", filters = 8, kernel = 1, stride = 2"),
            "{e}"
        );
        let fixed = format!(
            "{}[[layer.shortcut]]\ntype = \"conv2d\"\nfilters = 8\nkernel = 1\nstride = 2\n",
            conv("main", 8, 2)
        );
        Spec::parse(&block(fixed)).unwrap();
        // A shortcut of the wrong shape.
        let e = err(&block(format!(
            "{}{}",
            conv("main", 8, 2),
            conv("shortcut", 8, 1)
        )));
        assert!(
            e.contains("the main path gives 4×4×8 but the shortcut gives 8×8×8")
                && e.contains("filters = 8, kernel = 1, stride = 2"),
            "{e}"
        );
        // No 1×1 conv reaches a valid 3×3 conv's 6×6.
        let valid = "[[layer.main]]\ntype = \"conv2d\"\nfilters = 4\nkernel = 3\n".to_owned();
        let e = err(&block(valid));
        assert!(e.contains("no 1×1 conv shortcut makes"), "{e}");
        // Empty main path, nesting, layers a block cannot hold, misplaced paths.
        let e = err(&block(conv("shortcut", 4, 1)));
        assert!(e.contains("has no [[layer.main]] layers"), "{e}");
        let e = err(&block(format!(
            "{}[[layer.main]]\ntype = \"residual\"\n",
            conv("main", 4, 1)
        )));
        assert!(
            e.contains("line 11") && e.contains("blocks do not nest"),
            "{e}"
        );
        let e = err(&block("[[layer.main]]\ntype = \"flatten\"\n".to_owned()));
        assert!(
            e.contains("layer 0 (flatten) at line 5")
                && e.contains("a residual block holds only conv2d, depthwise_conv2d"),
            "{e}"
        );
        let e = err(&format!(
            "{head}[[layer]]\ntype = \"conv2d\"\nfilters = 4\nkernel = 1\n{}{tail}",
            conv("main", 4, 1)
        ));
        assert!(
            e.contains("line 6: [[layer.main]] belongs to a `type = \"residual\"` layer"),
            "{e}"
        );
        let e = err(&block("[layer.shortcut]\n".to_owned()));
        assert!(e.contains("write [[layer.shortcut]]"), "{e}");
        let e = err(&format!(
            "{head}[[layer]]\ntype = \"residual\"\nfilters = 3\n{}{tail}",
            conv("main", 4, 1)
        ));
        assert!(
            e.contains("line 4: `filters` is not a key of residual"),
            "{e}"
        );
        let e = err(&block(conv("main", 4, 1)).replace("\"relu\"", "\"softmax\""));
        assert!(e.contains("none, relu or relu6"), "{e}");
        // A block on a vector.
        let e = err(
            "input = [8, 8, 4]\n[[layer]]\ntype = \"flatten\"\n[[layer]]\ntype = \"residual\"\n[[layer.main]]\ntype = \"dropout\"\nrate = 0.1\n[[layer]]\ntype = \"dense\"\nunits = 3\nactivation = \"softmax\"\n"
        );
        assert!(e.contains("needs an h×w×c input"), "{e}");
        // Blocks built in code are checked too.
        let bad = Spec::new(
            String::new(),
            Shape::Spatial { h: 4, w: 4, c: 2 },
            vec![
                LayerSpec::Branch { from: 0 },
                LayerSpec::Flatten,
                LayerSpec::Dense {
                    units: 2,
                    activation: Activation::Softmax,
                },
            ],
        );
        assert!(format!("{:#}", bad.unwrap_err()).contains("a branch outside a residual block"));
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

//! `trainer infer`: run a model on the host on a batch of tensors from a `.npy` file and
//! write its outputs as `.npy` — the tool to compare the kit with other engines.
//!
//! The model is a model.bin (its outputs: the wide int32 logits) or a `.tflite`, imported in
//! memory as `trainer import` would (its outputs: TensorFlow Lite's, int8, or float32 for a
//! model with a float output). Inputs are int8, or float32 quantized with the model's input
//! parameters as TensorFlow Lite's QUANTIZE does (`round(x / scale) + zero_point`, clamped).

use crate::atomic::Outputs;
use crate::eval::StackBuffers;
use crate::npy::{Array, Elements};
use crate::tflite::{self, lower::Imported};
use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use infer_core::format::QuantParams;
use infer_core::stack::{Kernels, StackFile};
use std::path::PathBuf;

/// Options of `trainer infer`.
#[derive(Args)]
pub struct InferArgs {
    /// The model: a model.bin, or a `.tflite` (imported in memory, outputs as TFLite gives
    /// them).
    #[arg(long, value_name = "FILE")]
    pub model: PathBuf,
    /// The inputs: a `.npy` of int8 or float32, one model input per row (shape `[n, …]`
    /// whose rows hold the model's input size, or one input of exactly that size).
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// Where to write the outputs (`.npy`, one row per input; written atomically at the end).
    #[arg(long, value_name = "FILE")]
    pub output: PathBuf,
}

/// Runs `trainer infer`.
///
/// # Errors
/// An unreadable or invalid model or input, inputs whose size is not the model's, or an
/// unwritable output.
pub fn run(args: &InferArgs) -> Result<()> {
    let mut outputs = Outputs::new();
    outputs.plan("--output", &args.output)?;
    outputs.refuse_input("--model", &args.model)?;
    outputs.refuse_input("--input", &args.input)?;
    let bytes =
        std::fs::read(&args.model).with_context(|| format!("reading {}", args.model.display()))?;
    let imported = if bytes.get(4..8) == Some(b"TFL3".as_slice()) {
        Some(tflite::import(&bytes).with_context(|| args.model.display().to_string())?)
    } else {
        None
    };
    let model_bytes = imported.as_ref().map_or(bytes.as_slice(), |i| &i.bytes);
    let file = StackFile::decode(model_bytes)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("loading {}", args.model.display()))?;
    let input_bytes =
        std::fs::read(&args.input).with_context(|| format!("reading {}", args.input.display()))?;
    let input = Array::from_bytes(&input_bytes)
        .with_context(|| format!("reading {}", args.input.display()))?;
    let rows = quantized_rows(&input, &file)
        .with_context(|| format!("--input {}", args.input.display()))?;
    let classes = file.classes();
    let mut buffers = StackBuffers::new(&file);
    let in_len = input_len(&file);
    let mut wide = Vec::with_capacity(rows.len() / in_len.max(1) * classes);
    for row in rows.chunks_exact(in_len) {
        let out = buffers
            .logits_of_int8(&file, row, Kernels::Fast)
            .with_context(|| format!("running {}", args.model.display()))?;
        wide.extend_from_slice(out);
    }
    let n = wide.len() / classes.max(1);
    let array = outputs_of(imported.as_ref(), wide, n, classes);
    outputs.stage(&args.output, &array.to_bytes())?;
    outputs.commit()?;
    println!(
        "Ran {n} inputs through {}: wrote {} ({}, shape {:?})",
        args.model.display(),
        args.output.display(),
        array.elements.type_name(),
        array.shape
    );
    Ok(())
}

/// Values of one input of `file`.
fn input_len(file: &StackFile<'_>) -> usize {
    usize::from(file.input.height)
        * usize::from(file.input.width)
        * usize::from(file.input.channels)
}

/// The int8 rows of `input` for `file`: int8 as they are, float32 quantized with the
/// model's input parameters.
fn quantized_rows(input: &Array, file: &StackFile<'_>) -> Result<Vec<i8>> {
    let in_len = input_len(file);
    let per_row = match input.shape.as_slice() {
        [] => 1,
        [_, rest @ ..] => rest.iter().product(),
    };
    let total = input.elements.len();
    ensure!(
        total == in_len || (per_row == in_len && total > 0),
        "shape {:?}: the model takes {in_len} values per input ({}×{}×{}); give [n, …] rows \
         of that size",
        input.shape,
        file.input.height,
        file.input.width,
        file.input.channels
    );
    Ok(match &input.elements {
        Elements::I8(v) => v.clone(),
        Elements::F32(v) => v.iter().map(|&x| quantize(x, file.input.quant)).collect(),
        Elements::I32(_) => bail!("int32 inputs (give int8 or float32)"),
    })
}

/// TensorFlow Lite's QUANTIZE of one float: `round(x / scale) + zero_point`, clamped to int8.
fn quantize(x: f32, q: QuantParams) -> i8 {
    let scaled = (x / q.scale).round();
    // NaN maps to the zero point; ±∞ clamp.
    let scaled = if scaled.is_nan() {
        0.0
    } else {
        scaled.clamp(-1e9, 1e9)
    };
    (scaled as i32 + q.zero_point).clamp(-128, 127) as i8
}

/// The output array: the wide logits for a model.bin, TensorFlow Lite's int8 (or
/// dequantized float32) outputs for an imported `.tflite`.
fn outputs_of(imported: Option<&Imported>, wide: Vec<i32>, n: usize, classes: usize) -> Array {
    let Some(imported) = imported else {
        return Array {
            shape: vec![n, classes],
            elements: Elements::I32(wide),
        };
    };
    let mut shape = vec![n];
    shape.extend(imported.output.shape.iter().skip(1));
    if shape.iter().product::<usize>() != wide.len() {
        shape = vec![n, classes];
    }
    let int8 = imported.int8_outputs(&wide);
    let q = imported.output.quant;
    let elements = if imported.output.float {
        Elements::F32(
            int8.iter()
                .map(|&v| q.scale * (i32::from(v) - q.zero_point) as f32)
                .collect(),
        )
    } else {
        Elements::I8(int8)
    };
    Array { shape, elements }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantize_rounds_half_away_from_zero_and_clamps() {
        let q = QuantParams {
            scale: 0.5,
            zero_point: -10,
        };
        assert_eq!(quantize(0.25, q), -9);
        assert_eq!(quantize(-0.25, q), -11);
        assert_eq!(quantize(1e30, q), 127);
        assert_eq!(quantize(f32::NEG_INFINITY, q), -128);
        assert_eq!(quantize(f32::NAN, q), -10);
    }
}

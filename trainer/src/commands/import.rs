//! `trainer import`: a TensorFlow Lite int8 model (`.tflite`) as a model.bin the engine runs.
//!
//! The model is parsed and mapped (`crate::tflite`) before anything is written; a model with
//! an operator the kit cannot read, or one the engine cannot run yet, is refused with every
//! such operator named, and the output file is left as it was.

use crate::atomic::Outputs;
use crate::tflite::{self, lower::Edge};
use anyhow::{Context, Result};
use clap::Args;
use std::path::PathBuf;

/// Options of `trainer import`.
#[derive(Args)]
pub struct ImportArgs {
    /// The TensorFlow Lite model (full-integer int8, as TFLiteConverter writes it with
    /// TFLITE_BUILTINS_INT8).
    #[arg(value_name = "MODEL.tflite")]
    pub model: PathBuf,
    /// Where to write the model.bin (format 3; its directory must exist; written atomically
    /// at the end).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

/// Runs `trainer import`.
///
/// # Errors
/// An unreadable file, a model the kit cannot read or the engine cannot run (every
/// operator named), or an unwritable output.
pub fn run(args: &ImportArgs) -> Result<()> {
    let mut outputs = Outputs::new();
    outputs.plan("--out", &args.out)?;
    outputs.refuse_input("MODEL.tflite", &args.model)?;
    let bytes =
        std::fs::read(&args.model).with_context(|| format!("reading {}", args.model.display()))?;
    let imported = tflite::import(&bytes).with_context(|| args.model.display().to_string())?;
    println!("Imported {}:", args.model.display());
    for step in &imported.steps {
        println!("{step}");
    }
    println!("Input:  {}", edge_text(&imported.input));
    match &imported.softmax {
        None => println!(
            "Output: {} (model.bin gives the wide logits L, of this scale; TFLite's int8 \
             output is clamp(L + {}, -128, 127))",
            edge_text(&imported.output),
            imported.output.quant.zero_point
        ),
        Some(s) => println!(
            "Output: {} (model.bin gives the wide logits L, of scale {}; TFLite's int8 output \
             is the int8 softmax of clamp(L + {}, -128, 127), which `trainer infer` on the \
             .tflite computes)",
            edge_text(&imported.output),
            s.logits.scale,
            s.logits.zero_point
        ),
    }
    outputs.stage(&args.out, &imported.bytes)?;
    outputs.commit()?;
    println!(
        "Wrote {} ({} bytes)",
        args.out.display(),
        imported.bytes.len()
    );
    Ok(())
}

/// `int8 [1, 28, 28, 1], scale 0.0039215689, zero point -128` (`float … quantized with …`
/// for a float edge).
fn edge_text(edge: &Edge) -> String {
    let dims: Vec<String> = edge.shape.iter().map(usize::to_string).collect();
    format!(
        "{} [{}], {}scale {}, zero point {}",
        if edge.float { "float32" } else { "int8" },
        dims.join(", "),
        if edge.float { "int8 inside: " } else { "" },
        edge.quant.scale,
        edge.quant.zero_point
    )
}

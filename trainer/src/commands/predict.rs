//! `trainer predict`: classify one test image, or a picture of a digit of your own, with the
//! int8 model (infer-core); draw the digit and the ten class probabilities in the terminal.

pub mod art;
pub mod picture;

use crate::{data, eval};
use anyhow::{Context, Result};
use clap::{ArgGroup, Args};
use std::path::PathBuf;

/// Options of `trainer predict`.
#[derive(Args)]
#[command(group(ArgGroup::new("input").required(true).args(["index", "image"])))]
pub struct PredictArgs {
    /// The int8 model (model.bin format 3).
    #[arg(long, default_value = "model.bin")]
    pub model: PathBuf,
    /// Classify test image N (from 0) of `--data`.
    #[arg(long, value_name = "N", value_parser = super::args::whole_number::<usize>, allow_negative_numbers = true)]
    pub index: Option<usize>,
    /// Classify your own picture of a digit (PNG or JPEG, any size, grayscale or colour):
    /// uneven light levelled, the largest connected ink taken as the digit (specks ignored),
    /// prepared as MNIST digits are: white on black, 20-pixel box, centred by mass in 28×28.
    #[arg(long, value_name = "FILE")]
    pub image: Option<PathBuf>,
    /// Directory with the IDX files, for `--index` (the test half is used).
    #[arg(long, default_value = "data/mnist")]
    pub data: PathBuf,
    /// Draw with plain ASCII instead of Unicode blocks.
    #[arg(long)]
    pub ascii: bool,
    /// Print one JSON object instead: class, probabilities, label (with `--index`) and the
    /// 28×28 input (and, with `--float`, the float model's probabilities).
    #[arg(long)]
    pub json: bool,
    /// Also show the float model's class probabilities beside the int8 ones: the float
    /// checkpoint the model was quantized from (`trainer fit --save-float FILE`).
    #[arg(long, value_name = "FILE")]
    pub float: Option<PathBuf>,
}

/// Runs `trainer predict`.
///
/// # Errors
/// A missing or invalid model, a test index out of range, bad data, or a picture that cannot
/// be read or holds no digit.
pub fn run(args: &PredictArgs) -> Result<()> {
    let bytes = std::fs::read(&args.model).with_context(|| {
        format!(
            "reading {} (create it with `trainer fit --out {}`)",
            args.model.display(),
            args.model.display()
        )
    })?;
    let model = eval::Int8Model::load(&bytes)
        .with_context(|| format!("loading {}", args.model.display()))?;
    let (h, w, c) = model.input_shape();
    anyhow::ensure!(
        (h, w, c) == (28, 28, 1),
        "{} takes {h}×{w}×{c} inputs; predict classifies 28×28 grayscale digits",
        args.model.display()
    );
    let (pixels, label, title) = input(args)?;
    let flat: Vec<u8> = pixels.iter().flatten().copied().collect();
    let (class, probabilities) = model.classify(&flat)?;
    let float = match &args.float {
        Some(path) => {
            let float = super::eval::load_float(path)?;
            let logits = float
                .logits(&flat)
                .with_context(|| format!("running {}", path.display()))?;
            let mut p = vec![0.0f32; logits.len()];
            infer_core::kernels::activation::softmax(&logits, &mut p);
            Some((path, p))
        }
        None => None,
    };
    if args.json {
        let json = serde_json::json!({
            "class": class,
            "probabilities": probabilities,
            "float_probabilities": float.as_ref().map(|(_, p)| p),
            "label": label,
            "pixels": pixels,
        });
        println!("{json}");
        return Ok(());
    }
    println!("{title}");
    print!("{}", art::digit(&pixels, args.ascii));
    println!(
        "Class probabilities ({}, int8 on infer-core):",
        args.model.display()
    );
    print!(
        "{}",
        art::bars(&probabilities, class, label.map(usize::from), args.ascii)
    );
    if let Some((path, p)) = &float {
        println!("Float model ({}) beside the int8 model:", path.display());
        println!("  class      int8     float");
        for (k, (q, f)) in probabilities.iter().zip(p).enumerate() {
            println!("  {k:>5}  {:>7.3}%  {:>7.3}%", 100.0 * q, 100.0 * f);
        }
    }
    let verdict = match label {
        Some(l) if usize::from(l) == class => format!("; label {l}: correct"),
        Some(l) => format!("; label {l}: wrong"),
        None => String::new(),
    };
    println!(
        "Prediction: {class} ({:.2}%){verdict}",
        100.0 * probabilities[class]
    );
    Ok(())
}

/// The 28×28 input, its label if known, and a line saying where it comes from.
fn input(args: &PredictArgs) -> Result<([[u8; 28]; 28], Option<u8>, String)> {
    let mut pixels = [[0u8; 28]; 28];
    if let Some(path) = &args.image {
        let gray = picture::load(path)?;
        let prepared =
            picture::prepare(&gray).with_context(|| format!("preparing {}", path.display()))?;
        let title = format!(
            "{}: {}×{}, {}",
            path.display(),
            gray.width,
            gray.height,
            prepared.describe()
        );
        return Ok((prepared.pixels, None, title));
    }
    let index = args.index.unwrap_or(0);
    let test = data::load_test(&args.data)?;
    anyhow::ensure!(
        (test.rows, test.cols) == (28, 28),
        "{} holds {}×{} images; the model takes 28×28",
        args.data.display(),
        test.rows,
        test.cols
    );
    let image = test.image(index).with_context(|| {
        format!(
            "there is no test image {index}: {} has {} test images{}",
            args.data.display(),
            test.len(),
            match test.len() {
                0 => String::new(),
                n => format!(", numbered 0..={}", n - 1),
            }
        )
    })?;
    for (row, src) in pixels.iter_mut().zip(image.chunks_exact(28)) {
        row.copy_from_slice(src);
    }
    let label = test.labels[index];
    let title = format!(
        "Test image {index} of {} (label {label})",
        args.data.display()
    );
    Ok((pixels, Some(label), title))
}

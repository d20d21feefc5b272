//! `trainer report`: the tutorial's pictures, drawn from a model.bin (and optionally its
//! float checkpoint and training metrics) and the test set.
//!
//! [`build`] computes and draws everything in memory; [`write()`] puts the nine PNGs,
//! `report.json` (the numbers behind the pictures) and `index.html` in a directory, each
//! file atomically. Every random choice (the digits shown, the random filters) comes from
//! one ChaCha8 generator seeded with [`Inputs::seed`], so a report is reproducible.
//!
//! | # | file | module |
//! | --- | --- | --- |
//! | 1 | `1-random-filters.png` | [`digits`] |
//! | 2 | `2-edge-detection.png` | [`digits`] |
//! | 3 | `3-probabilities.png` | [`probabilities`] |
//! | 4 | `4-misclassified.png` | [`probabilities`] |
//! | 5 | `5-confidence-histogram.png` | [`probabilities`] |
//! | 6 | `6-learnt-filters.png` | [`filters`] |
//! | 7 | `7-feature-maps.png` | [`filters`] |
//! | 8 | `8-confusion-matrix.png` | [`confusion`] |
//! | 9 | `9-training-curves.png` | [`curves`] |

pub mod canvas;
pub mod confusion;
pub mod conv;
pub mod curves;
pub mod digits;
pub mod filters;
pub mod font;
pub mod grid;
pub mod page;
pub mod probabilities;
pub mod scores;

pub use canvas::{Label, Picture, Raster};
pub use grid::Grid;

use crate::arch::Model;
use crate::atomic::{create_output_dir, Outputs};
use crate::data::Dataset;
use crate::eval::{format_version, load_stack};
use anyhow::{ensure, Context, Result};
use conv::{Kernel, RANDOM_FILTERS};
use probabilities::{Classified, ConfidenceHistogram};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use serde::Serialize;
use std::path::Path;

/// What a report is drawn from.
pub struct Inputs<'a> {
    /// The int8 model (model.bin bytes, format 3).
    pub model: &'a [u8],
    /// The float weights of the same model, for the learnt filters (else the int8 ones,
    /// dequantized, are drawn).
    pub float: Option<&'a Model>,
    /// The training metrics, for the curves.
    pub epochs: Option<&'a [curves::Epoch]>,
    /// The test set: 28×28 images.
    pub test: &'a Dataset,
    /// Seed of every random choice.
    pub seed: u64,
}

/// The numbers behind the pictures, written as `report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// The seed the choices were made with.
    pub seed: u64,
    /// Test images scored.
    pub test_images: usize,
    /// Accuracy of the int8 model on them.
    pub int8_accuracy: f64,
    /// Index of the test digit of pictures 1, 2 and 7.
    pub digit: usize,
    /// The ten random filters of picture 1, `[filter][row][col]`.
    pub random_filters: [Kernel; RANDOM_FILTERS],
    /// The random digit of picture 3.
    pub random_digit: Classified,
    /// The misclassified digit of picture 4, if there is any.
    pub misclassified: Option<Classified>,
    /// Picture 5's histograms.
    pub histogram: ConfidenceHistogram,
    /// Picture 8's matrix, `[true][predicted]`.
    pub confusion: confusion::Confusion,
    /// Where picture 6's filters come from.
    pub filters_from: String,
    /// Every picture: file, caption, size.
    pub pictures: Vec<PictureInfo>,
}

/// A picture as listed in `report.json`.
#[derive(Debug, Clone, Serialize)]
pub struct PictureInfo {
    /// File name.
    pub file: String,
    /// Caption.
    pub caption: String,
    /// Width, pixels.
    pub width: u32,
    /// Height, pixels.
    pub height: u32,
}

/// A drawn report, not yet written.
#[derive(Debug, Clone)]
pub struct Report {
    /// The nine pictures, in order.
    pub pictures: Vec<Picture>,
    /// The numbers behind them.
    pub summary: Summary,
}

/// Scores the test set with the int8 model, makes the seeded choices and draws the nine
/// pictures.
///
/// # Errors
/// If the model does not load, the test set is empty or not 28×28, or drawing fails.
pub fn build(inputs: &Inputs<'_>) -> Result<Report> {
    font::register()?;
    format_version(inputs.model)?;
    let file = load_stack(inputs.model)?;
    let conv = filters::first_conv(&file)?;
    let test = inputs.test;
    ensure!(!test.is_empty(), "the test set has no images");
    ensure!(
        test.rows == 28 && test.cols == 28,
        "the model takes 28×28 images, the test set has {}×{}",
        test.rows,
        test.cols
    );
    ensure!(
        test.images.len() == test.len() * 784,
        "the test set has {} labels but {} bytes of pixels",
        test.len(),
        test.images.len()
    );
    let scores = scores::Scores::of(&file, test)?;
    let classified = |index: usize| Classified {
        index,
        label: test.labels[index],
        predicted: scores.predictions[index],
        probabilities: scores.probabilities[index],
    };
    let digit_grid = |index: usize| {
        let pixels = test.image(index).unwrap_or(&[]);
        Grid::from_pixels(pixels, test.rows, test.cols)
    };
    let wrong: Vec<usize> = (0..test.len())
        .filter(|&i| scores.predictions[i] != test.labels[i])
        .collect();

    let mut rng = ChaCha8Rng::seed_from_u64(inputs.seed);
    let digit = rng.gen_range(0..test.len());
    let random_filters = conv::random_filters(&mut rng);
    let random_digit = classified(rng.gen_range(0..test.len()));
    let misclassified = wrong.choose(&mut rng).map(|&i| classified(i));

    let confidence = scores.confidence();
    let wrong_confidence: Vec<f32> = wrong.iter().map(|&i| confidence[i]).collect();
    let histogram = ConfidenceHistogram::new(&confidence, &wrong_confidence);
    let matrix = confusion::confusion(&test.labels, &scores.predictions);
    let (filters, filters_from) = match inputs.float {
        Some(model) => (
            filters::float_filters(model, usize::from(conv.filters), usize::from(conv.kernel))?,
            "float weights".to_string(),
        ),
        None => (
            filters::int8_filters(&conv)?,
            "int8 weights, dequantized".to_string(),
        ),
    };
    let maps = filters::feature_maps(&file, test.image(digit).unwrap_or(&[]))?;

    let label = test.labels[digit];
    let wrong_grid = misclassified.as_ref().map(|c| digit_grid(c.index));
    let pictures = vec![
        digits::random_filters(&digit_grid(digit), digit, label, &random_filters)?,
        digits::edge_detection(&digit_grid(digit), digit, label)?,
        probabilities::random_digit(&digit_grid(random_digit.index), &random_digit)?,
        probabilities::wrong_digit(wrong_grid.as_ref().zip(misclassified.as_ref()))?,
        probabilities::confidence_histogram(&histogram)?,
        filters::learnt_filters(&filters, &filters_from)?,
        filters::feature_maps_picture(&maps, digit, label)?,
        confusion::confusion_picture(&matrix)?,
        curves::curves_picture(inputs.epochs)?,
    ];
    let summary = Summary {
        seed: inputs.seed,
        test_images: test.len(),
        int8_accuracy: significant((test.len() - wrong.len()) as f64 / test.len() as f64),
        digit,
        random_filters,
        random_digit,
        misclassified,
        histogram,
        confusion: matrix,
        filters_from,
        pictures: pictures
            .iter()
            .map(|p| PictureInfo {
                file: p.file.to_string(),
                caption: p.caption.clone(),
                width: p.width,
                height: p.height,
            })
            .collect(),
    };
    Ok(Report { pictures, summary })
}

/// Significant digits of the ratios in `report.json` (accuracy, densities): counts of at most
/// a few hundred thousand digits carry no more.
pub const SIGNIFICANT_DIGITS: usize = 6;

/// `v` rounded to [`SIGNIFICANT_DIGITS`] significant digits, so `report.json` prints what was
/// computed (`0.15`, `0.929641`) and not the last bits of binary arithmetic
/// (`0.15000000000000002`, `0.9296407185628742`).
pub fn significant(v: f64) -> f64 {
    if !v.is_finite() || v == 0.0 {
        return v;
    }
    format!("{v:.*e}", SIGNIFICANT_DIGITS - 1)
        .parse()
        .unwrap_or(v)
}

/// Writes `report` into `dir` (created if missing, not its parents): the PNGs,
/// `report.json`, then `index.html` with `about` as its first line. The files are committed
/// together ([`Outputs`]): a failed or killed run leaves every previous file whole.
/// `inputs` (flag, path) are the files the report was drawn from: none may be overwritten.
///
/// # Errors
/// If a file cannot be written, or would overwrite an input; the message names it.
pub fn write(report: &Report, dir: &Path, about: &str, inputs: &[(&str, &Path)]) -> Result<()> {
    create_output_dir(dir)?;
    let json = serde_json::to_string_pretty(&report.summary).context("encoding report.json")?;
    let html = page::index_html(about, &report.pictures);
    let files = report
        .pictures
        .iter()
        .map(|p| (p.file, p.png.as_slice()))
        .chain([
            ("report.json", json.as_bytes()),
            ("index.html", html.as_bytes()),
        ]);
    let mut outputs = Outputs::new();
    for (file, bytes) in files {
        let path = dir.join(file);
        outputs.plan("--out", &path)?;
        outputs.stage(&path, bytes)?;
    }
    for (flag, path) in inputs {
        outputs.refuse_input(flag, path)?;
    }
    outputs.commit()
}

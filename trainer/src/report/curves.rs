//! Picture 9: the training curves — loss and accuracy per epoch, training against
//! validation — read from the JSON that `trainer fit --metrics FILE` writes.

use super::canvas::{text, Area, Canvas, Picture};
use super::font::FAMILY;
use anyhow::{ensure, Context, Result};
use plotters::prelude::*;
use plotters::style::text_anchor::HPos;
use serde::Deserialize;

/// File name of picture 9.
pub const CURVES_FILE: &str = "9-training-curves.png";
/// Size of picture 9, pixels.
pub const CURVES_SIZE: (u32, u32) = (900, 380);

const TRAIN: RGBColor = RGBColor(31, 119, 180);
const VALIDATION: RGBColor = RGBColor(255, 127, 14);

/// One epoch of `fit --metrics` (other fields are ignored).
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
pub struct Epoch {
    /// Training loss.
    pub loss: f64,
    /// Training accuracy.
    pub acc: f64,
    /// Validation loss.
    pub val_loss: f64,
    /// Validation accuracy.
    pub val_acc: f64,
}

#[derive(Deserialize)]
struct MetricsFile {
    epochs: Vec<Epoch>,
}

/// Reads the epochs out of `fit --metrics` JSON.
///
/// # Errors
/// If it is not JSON with an `epochs` list of `loss`, `acc`, `val_loss`, `val_acc`, or the
/// list is empty or holds a value that is not finite.
pub fn parse_metrics(json: &str) -> Result<Vec<Epoch>> {
    let file: MetricsFile = serde_json::from_str(json)
        .context("not the JSON of `trainer fit --metrics` (an `epochs` list of loss, acc, val_loss, val_acc)")?;
    ensure!(!file.epochs.is_empty(), "the metrics hold no epoch");
    ensure!(
        file.epochs
            .iter()
            .all(|e| [e.loss, e.acc, e.val_loss, e.val_acc]
                .iter()
                .all(|v| v.is_finite())),
        "the metrics hold a value that is not finite (a diverged run?)"
    );
    Ok(file.epochs)
}

/// Picture 9: loss and accuracy against the epoch, training and validation; without
/// metrics, a note saying how to get them.
///
/// # Errors
/// A drawing failure.
pub fn curves_picture(epochs: Option<&[Epoch]>) -> Result<Picture> {
    let mut canvas = Canvas::new(CURVES_SIZE.0, CURVES_SIZE.1);
    let caption = match epochs {
        Some(epochs) => {
            canvas.plot(|area| {
                let halves = area.split_evenly((1, 2));
                let loss: Vec<(f64, f64)> = epochs
                    .iter()
                    .map(|e| e.loss)
                    .zip(epochs.iter().map(|e| e.val_loss))
                    .collect();
                let acc: Vec<(f64, f64)> = epochs
                    .iter()
                    .map(|e| e.acc)
                    .zip(epochs.iter().map(|e| e.val_acc))
                    .collect();
                chart(&halves[0], "loss (cross-entropy)", &loss)?;
                chart(&halves[1], "accuracy", &acc)
            })?;
            format!(
                "Training curves over {} epochs: loss and accuracy on the training set (dropout on, \
                 averaged during the epoch) and on the validation set (after the epoch).",
                epochs.len()
            )
        }
        None => {
            canvas.plot(|area| {
                let centre = (CURVES_SIZE.0 / 2) as i32;
                text(area, "No training metrics given.", (centre, 150), 20, HPos::Center)?;
                let how = "Train with `trainer fit --metrics metrics.json`, then pass --metrics metrics.json.";
                text(area, how, (centre, 184), 16, HPos::Center)
            })?;
            "Training curves: not drawn, no --metrics file was given (write one with \
             `trainer fit --metrics FILE`)."
                .to_string()
        }
    };
    canvas.finish(CURVES_FILE, caption)
}

/// One panel: `series[i] = (training, validation)` of epoch `i + 1`.
fn chart(area: &Area<'_>, title: &str, series: &[(f64, f64)]) -> Result<()> {
    let n = series.len() as f64;
    let (lo, hi) = series
        .iter()
        .flat_map(|&(a, b)| [a, b])
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
            (lo.min(v), hi.max(v))
        });
    let pad = ((hi - lo) * 0.08).max(1e-3);
    let mut chart = ChartBuilder::on(area)
        .caption(title, (FAMILY, 20))
        .margin(14)
        .x_label_area_size(44)
        .y_label_area_size(60)
        .build_cartesian_2d(0.7f64..n + 0.3, (lo - pad)..(hi + pad))?;
    chart
        .configure_mesh()
        .max_light_lines(0)
        .x_labels(series.len().min(12))
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_label_formatter(&|v| format!("{v:.2}"))
        .x_desc("epoch")
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 15))
        .draw()?;
    for (name, colour, pick) in [
        ("training", TRAIN, 0usize),
        ("validation", VALIDATION, 1usize),
    ] {
        let points: Vec<(f64, f64)> = (1..)
            .zip(series)
            .map(|(e, &(a, b))| (f64::from(e), if pick == 0 { a } else { b }))
            .collect();
        chart
            .draw_series(LineSeries::new(points.clone(), colour.stroke_width(2)))?
            .label(name)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 18, y)], colour.stroke_width(2))
            });
        chart.draw_series(
            points
                .into_iter()
                .map(|p| Circle::new(p, 4, colour.filled())),
        )?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::MiddleRight)
        .label_font((FAMILY, 14))
        .background_style(WHITE.mix(0.9))
        .border_style(BLACK.mix(0.4))
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fit_metrics_and_refuses_others() {
        let json = r#"{"params":54410,"epochs":[{"loss":1.0,"acc":0.7,"val_loss":0.5,"val_acc":0.8,"seconds":0.2}]}"#;
        let epochs = parse_metrics(json).unwrap();
        assert_eq!(
            epochs,
            [Epoch {
                loss: 1.0,
                acc: 0.7,
                val_loss: 0.5,
                val_acc: 0.8
            }]
        );
        assert!(parse_metrics(r#"{"epochs":[]}"#).is_err());
        assert!(parse_metrics(r#"{"accuracy":0.9}"#).is_err());
        assert!(parse_metrics("not json").is_err());
    }
}

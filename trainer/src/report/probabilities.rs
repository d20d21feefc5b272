//! Pictures 3, 4 and 5: how sure the int8 model is — the ten class probabilities of one
//! digit, of one misclassified digit, and the spread of the top probability over the test set.

use super::canvas::{coloured_text, text, Area, Canvas, Label, Picture};
use super::font::FAMILY;
use super::{significant, Grid};
use anyhow::Result;
use plotters::prelude::*;
use plotters::style::text_anchor::HPos;
use serde::Serialize;

/// File name of picture 3.
pub const RANDOM_DIGIT_FILE: &str = "3-probabilities.png";
/// File name of picture 4.
pub const WRONG_DIGIT_FILE: &str = "4-misclassified.png";
/// File name of picture 5.
pub const HISTOGRAM_FILE: &str = "5-confidence-histogram.png";
/// Size of pictures 3 and 4, pixels.
pub const PROBABILITIES_SIZE: (u32, u32) = (720, 300);
/// Size of picture 5, pixels.
pub const HISTOGRAM_SIZE: (u32, u32) = (640, 400);
/// Font size of the value written above each probability bar, pixels.
const VALUE_SIZE: u32 = 12;
/// Bins of the histogram over `[0, 1]`.
pub const HISTOGRAM_BINS: usize = 20;

/// Colour of a probability bar.
pub const BAR: RGBColor = RGBColor(70, 130, 180);
/// Colour of the true digit's bar.
pub const TRUE_BAR: RGBColor = RGBColor(44, 160, 44);
/// Colour of the wrongly classified digits in the histogram.
const WRONG: RGBColor = RGBColor(214, 39, 40);

/// One test digit as the int8 model sees it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Classified {
    /// Index in the test set.
    pub index: usize,
    /// The true digit.
    pub label: u8,
    /// The model's class (argmax of the int8 logits).
    pub predicted: u8,
    /// Softmax of the dequantized int8 logits: what the bars show.
    pub probabilities: [f32; 10],
}

/// Normalised histograms of the highest class probability.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ConfidenceHistogram {
    /// `HISTOGRAM_BINS + 1` bin edges from 0 to 1; the last bin includes 1.
    pub edges: Vec<f64>,
    /// Density over all test digits (integrates to 1), one per bin.
    pub all: Vec<f64>,
    /// Density over the wrongly classified digits (all zero if there are none).
    pub wrong: Vec<f64>,
    /// How many digits `all` counts.
    pub all_count: usize,
    /// How many digits `wrong` counts.
    pub wrong_count: usize,
}

impl ConfidenceHistogram {
    /// Bins the highest probabilities of all test digits and of the misclassified ones.
    pub fn new(all: &[f32], wrong: &[f32]) -> Self {
        let density = |values: &[f32]| {
            let mut counts = vec![0usize; HISTOGRAM_BINS];
            for &v in values {
                let bin = ((f64::from(v) * HISTOGRAM_BINS as f64) as usize).min(HISTOGRAM_BINS - 1);
                counts[bin] += 1;
            }
            // count / (total · width), width = 1 / bins, in one division.
            let total = values.len().max(1) as f64;
            counts
                .into_iter()
                .map(|c| significant((c * HISTOGRAM_BINS) as f64 / total))
                .collect::<Vec<_>>()
        };
        Self {
            edges: (0..=HISTOGRAM_BINS)
                .map(|i| i as f64 / HISTOGRAM_BINS as f64)
                .collect(),
            all: density(all),
            wrong: density(wrong),
            all_count: all.len(),
            wrong_count: wrong.len(),
        }
    }
}

/// Picture 3: a random test digit beside the bar chart of its class probabilities, titled
/// with the true digit. Rasters: the digit.
///
/// # Errors
/// A drawing failure.
pub fn random_digit(digit: &Grid, seen: &Classified) -> Result<Picture> {
    let mut canvas = Canvas::new(PROBABILITIES_SIZE.0, PROBABILITIES_SIZE.1);
    draw_digit_and_bars(&mut canvas, digit, seen)?;
    let verdict = if seen.label == seen.predicted {
        "right".to_string()
    } else {
        format!("wrong: it says {}", seen.predicted)
    };
    canvas.finish(
        RANDOM_DIGIT_FILE,
        format!(
            "A random test digit (#{}, label {}) and the int8 model's ten class probabilities \
             (green: the true digit); the model is {verdict}, with p = {:.3}.",
            seen.index,
            seen.label,
            seen.probabilities[usize::from(seen.predicted)]
        ),
    )
}

/// Picture 4: a random misclassified test digit beside its class probabilities, or a note
/// that there is none. Rasters: the digit, if any.
///
/// # Errors
/// A drawing failure.
pub fn wrong_digit(wrong: Option<(&Grid, &Classified)>) -> Result<Picture> {
    let mut canvas = Canvas::new(PROBABILITIES_SIZE.0, PROBABILITIES_SIZE.1);
    let caption = match wrong {
        Some((digit, seen)) => {
            draw_digit_and_bars(&mut canvas, digit, seen)?;
            format!(
                "A random misclassified test digit (#{}, label {}): the model said {} with p = {:.3}; \
                 the true digit (green) got p = {:.3}.",
                seen.index,
                seen.label,
                seen.predicted,
                seen.probabilities[usize::from(seen.predicted)],
                seen.probabilities[usize::from(seen.label)]
            )
        }
        None => {
            canvas.plot(|area| {
                let centre = (PROBABILITIES_SIZE.0 / 2) as i32;
                text(
                    area,
                    "The model classifies every test digit correctly:",
                    (centre, 120),
                    18,
                    HPos::Center,
                )?;
                text(
                    area,
                    "there is no mistake to show.",
                    (centre, 148),
                    18,
                    HPos::Center,
                )
            })?;
            "No misclassified test digit: every test digit is classified correctly.".to_string()
        }
    };
    canvas.finish(WRONG_DIGIT_FILE, caption)
}

fn draw_digit_and_bars(canvas: &mut Canvas, digit: &Grid, seen: &Classified) -> Result<()> {
    let (x, y, scale) = (24u32, 64u32, 8u32);
    let mut labels = Vec::new();
    canvas.plot(|area| {
        let centre = (x + 14 * scale) as i32;
        text(
            area,
            &format!("test digit #{}", seen.index),
            (centre, 10),
            18,
            HPos::Center,
        )?;
        let p = seen.probabilities[usize::from(seen.predicted)];
        let said = format!("predicted {} (p = {p:.2})", seen.predicted);
        text(area, &said, (centre, 34), 16, HPos::Center)?;
        let (_, chart) = area.split_horizontally(270);
        labels = bars(&chart, seen)?;
        for (label, class) in labels.iter().zip(0u8..) {
            let colour = if class == seen.label { TRUE_BAR } else { BLACK };
            coloured_text(
                area,
                &label.text,
                (label.x, label.y),
                label.size,
                HPos::Center,
                colour,
            )?;
        }
        Ok(())
    })?;
    canvas.note_labels(labels);
    canvas.blit(x, y, scale, digit.clone())
}

/// A probability as written above its bar: two decimals, `<0.01` for a smaller non-zero one.
pub fn bar_value(p: f32) -> String {
    if p > 0.0 && p < 0.005 {
        "<0.01".to_string()
    } else {
        format!("{p:.2}")
    }
}

/// Draws the chart of the ten probabilities; returns the value labels to write above the
/// bars (positions in the whole picture), class by class.
fn bars(area: &Area<'_>, seen: &Classified) -> Result<Vec<Label>> {
    let mut chart = ChartBuilder::on(area)
        .caption(format!("true digit: {}", seen.label), (FAMILY, 20))
        .margin(8)
        .margin_right(24)
        .x_label_area_size(40)
        .y_label_area_size(48)
        .build_cartesian_2d(-0.5f64..9.5f64, 0f64..1.12f64)?;
    chart
        .configure_mesh()
        .max_light_lines(0)
        .disable_x_mesh()
        .x_labels(10)
        .x_label_formatter(&|v| format!("{v:.0}"))
        .y_labels(6)
        .y_label_formatter(&|v| format!("{v:.1}"))
        .x_desc("class")
        .y_desc("probability")
        .label_style((FAMILY, 14))
        .axis_desc_style((FAMILY, 15))
        .draw()?;
    chart.draw_series(seen.probabilities.iter().enumerate().map(|(d, &p)| {
        let colour = if d == usize::from(seen.label) {
            TRUE_BAR
        } else {
            BAR
        };
        let x = d as f64;
        Rectangle::new([(x - 0.38, 0.0), (x + 0.38, f64::from(p))], colour.filled())
    }))?;
    // backend_coord gives positions in the whole picture.
    Ok(seen
        .probabilities
        .iter()
        .enumerate()
        .map(|(d, &p)| {
            let (x, top) = chart.backend_coord(&(d as f64, f64::from(p)));
            Label {
                text: bar_value(p),
                x,
                y: top - VALUE_SIZE as i32 - 3,
                size: VALUE_SIZE,
            }
        })
        .collect())
}

/// Picture 5: the normalised histograms of the highest class probability, misclassified
/// digits over all test digits.
///
/// # Errors
/// A drawing failure.
pub fn confidence_histogram(h: &ConfidenceHistogram) -> Result<Picture> {
    let mut canvas = Canvas::new(HISTOGRAM_SIZE.0, HISTOGRAM_SIZE.1);
    let top = h.all.iter().chain(&h.wrong).fold(0.0f64, |m, &v| m.max(v));
    canvas.plot(|area| {
        let mut chart = ChartBuilder::on(area)
            .caption("How sure is the model?", (FAMILY, 20))
            .margin(14)
            .x_label_area_size(44)
            .y_label_area_size(56)
            .build_cartesian_2d(0f64..1f64, 0f64..(top * 1.08).max(1.0))?;
        chart
            .configure_mesh()
            .max_light_lines(0)
            .disable_x_mesh()
            .x_labels(11)
            .x_label_formatter(&|v| format!("{v:.1}"))
            .x_desc("highest class probability")
            .y_desc("density")
            .label_style((FAMILY, 14))
            .axis_desc_style((FAMILY, 15))
            .draw()?;
        let bins = |density: &[f64], colour: RGBColor| {
            density
                .iter()
                .zip(h.edges.windows(2))
                .map(move |(&d, e)| {
                    Rectangle::new([(e[0], 0.0), (e[1], d)], colour.mix(0.5).filled())
                })
                .collect::<Vec<_>>()
        };
        chart
            .draw_series(bins(&h.all, BAR))?
            .label(format!("all test digits ({})", h.all_count))
            .legend(|(x, y)| Rectangle::new([(x, y - 6), (x + 14, y + 6)], BAR.mix(0.5).filled()));
        if h.wrong_count > 0 {
            chart
                .draw_series(bins(&h.wrong, WRONG))?
                .label(format!("misclassified ({})", h.wrong_count))
                .legend(|(x, y)| {
                    Rectangle::new([(x, y - 6), (x + 14, y + 6)], WRONG.mix(0.5).filled())
                });
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .label_font((FAMILY, 14))
            .background_style(WHITE.mix(0.9))
            .border_style(BLACK.mix(0.4))
            .draw()?;
        Ok(())
    })?;
    canvas.finish(
        HISTOGRAM_FILE,
        format!(
            "Highest class probability, normalised histograms: the {} misclassified digits \
             (red) over all {} test digits (blue).",
            h.wrong_count, h.all_count
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_densities_integrate_to_one() {
        let all = [0.1f32, 0.55, 0.97, 1.0, 1.0, 0.999];
        let h = ConfidenceHistogram::new(&all, &[0.55]);
        let width = 1.0 / HISTOGRAM_BINS as f64;
        // Densities are rounded to 6 significant digits.
        let area: f64 = h.all.iter().map(|d| d * width).sum();
        assert!((area - 1.0).abs() < 1e-5, "{area}");
        // 0.97, 1.0, 1.0 and 0.999 land in the last bin, 0.55 in bin 11.
        assert_eq!(h.all[HISTOGRAM_BINS - 1], 13.3333);
        assert!((h.wrong[11] * width - 1.0).abs() < 1e-12);
        assert_eq!(h.wrong.iter().filter(|&&d| d != 0.0).count(), 1);
        let empty = ConfidenceHistogram::new(&all, &[]);
        assert!(empty.wrong.iter().all(|&d| d == 0.0));
    }
}

//! Picture 8: the confusion matrix of the int8 model on the test set.

use super::canvas::{text, Canvas, Picture};
use anyhow::Result;
use plotters::prelude::*;
use plotters::style::text_anchor::HPos;

/// File name of picture 8.
pub const CONFUSION_FILE: &str = "8-confusion-matrix.png";
/// Size of picture 8, pixels.
pub const CONFUSION_SIZE: (u32, u32) = (560, 560);

/// `matrix[true][predicted]`: how many test digits of each class got each prediction.
pub type Confusion = [[usize; 10]; 10];

/// Counts `labels` against `predictions`.
pub fn confusion(labels: &[u8], predictions: &[u8]) -> Confusion {
    let mut m = [[0usize; 10]; 10];
    for (&l, &p) in labels.iter().zip(predictions) {
        if let Some(cell) = m
            .get_mut(usize::from(l))
            .and_then(|row| row.get_mut(usize::from(p)))
        {
            *cell += 1;
        }
    }
    m
}

/// Picture 8: `matrix` as a 10×10 table of counts, each cell shaded by its share of its row
/// (white 0 → dark blue 1).
///
/// # Errors
/// A drawing failure.
pub fn confusion_picture(matrix: &Confusion) -> Result<Picture> {
    let mut canvas = Canvas::new(CONFUSION_SIZE.0, CONFUSION_SIZE.1);
    let (x0, y0, cell) = (92i32, 84i32, 44i32);
    let total: usize = matrix.iter().flatten().sum();
    let correct: usize = (0..10).map(|d| matrix[d][d]).sum();
    canvas.plot(|area| {
        let centre = x0 + 5 * cell;
        let title = format!("confusion matrix, int8 model, {total} test digits");
        text(area, &title, (centre, 10), 18, HPos::Center)?;
        text(area, "predicted", (centre, 36), 16, HPos::Center)?;
        text(area, "true", (x0 - 40, 36), 16, HPos::Center)?;
        for d in 0..10i32 {
            let label = format!("{d}");
            text(
                area,
                &label,
                (x0 + d * cell + cell / 2, y0 - 24),
                15,
                HPos::Center,
            )?;
            text(
                area,
                &label,
                (x0 - 16, y0 + d * cell + cell / 2 - 9),
                15,
                HPos::Right,
            )?;
        }
        for (t, row) in (0i32..).zip(matrix) {
            let row_total = row.iter().sum::<usize>().max(1) as f64;
            for (p, &n) in (0i32..).zip(row) {
                let share = n as f64 / row_total;
                let shade = |white: u8, full: u8| {
                    (f64::from(white) + share * (f64::from(full) - f64::from(white))).round() as u8
                };
                let colour = RGBColor(shade(255, 8), shade(255, 48), shade(255, 107));
                let (x, y) = (x0 + p * cell, y0 + t * cell);
                area.draw(&Rectangle::new(
                    [(x, y), (x + cell, y + cell)],
                    colour.filled(),
                ))?;
                area.draw(&Rectangle::new(
                    [(x, y), (x + cell, y + cell)],
                    RGBColor(200, 200, 200),
                ))?;
                if n > 0 {
                    let ink = if share > 0.5 { WHITE } else { BLACK };
                    let style = TextStyle::from((super::font::FAMILY, 14).into_font())
                        .color(&ink)
                        .pos(plotters::style::text_anchor::Pos::new(
                            HPos::Center,
                            plotters::style::text_anchor::VPos::Top,
                        ));
                    area.draw_text(&n.to_string(), &style, (x + cell / 2, y + cell / 2 - 8))?;
                }
            }
        }
        let note = format!(
            "{correct} of {total} on the diagonal ({:.2}%)",
            100.0 * correct as f64 / total.max(1) as f64
        );
        text(area, &note, (centre, y0 + 10 * cell + 14), 15, HPos::Center)?;
        Ok(())
    })?;
    canvas.finish(
        CONFUSION_FILE,
        format!(
            "Confusion matrix of the int8 model on the {total} test digits: rows are the true \
             digits, columns the predictions, shaded by share of the row."
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_true_rows_against_predicted_columns() {
        let m = confusion(&[3, 3, 5, 9], &[3, 8, 5, 4]);
        assert_eq!(m[3][3], 1);
        assert_eq!(m[3][8], 1);
        assert_eq!(m[5][5], 1);
        assert_eq!(m[9][4], 1);
        assert_eq!(m.iter().flatten().sum::<usize>(), 4);
    }
}

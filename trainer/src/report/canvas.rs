//! [`Canvas`]: an RGB picture that plotters draws charts and text on, raster images
//! ([`Grid`]s) are copied into pixel for pixel, and that ends as a PNG [`Picture`].

use super::font::FAMILY;
use super::Grid;
use anyhow::{ensure, Context, Result};
use plotters::coord::Shift;
use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

/// The drawing area plotters draws on.
pub type Area<'a> = DrawingArea<BitMapBackend<'a>, Shift>;

/// Gray of the one-pixel frame around each raster image.
pub const FRAME: RGBColor = RGBColor(160, 160, 160);

/// A grid drawn as an image: where, how enlarged, and the values behind its pixels.
#[derive(Debug, Clone, PartialEq)]
pub struct Raster {
    /// Left edge in the picture, pixels.
    pub x: u32,
    /// Top edge in the picture, pixels.
    pub y: u32,
    /// Each value is a `scale × scale` square of gray ([`Grid::gray_levels_in`] `range`).
    pub scale: u32,
    /// The values drawn.
    pub grid: Grid,
    /// The value drawn black and the value drawn white: the grid's own range, or a scale
    /// shared with other rasters (and shown by a colour bar).
    pub range: (f64, f64),
}

/// A value written on a chart (a bar's probability): its text and where it is drawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Label {
    /// The text.
    pub text: String,
    /// Horizontal centre, pixels.
    pub x: i32,
    /// Top edge, pixels.
    pub y: i32,
    /// Font size (height), pixels.
    pub size: u32,
}

/// One finished picture of the report.
#[derive(Debug, Clone)]
pub struct Picture {
    /// File name in the output directory, e.g. `2-edge-detection.png`.
    pub file: &'static str,
    /// One-line caption for the page.
    pub caption: String,
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
    /// The PNG file (8-bit RGB).
    pub png: Vec<u8>,
    /// Every raster image in it, in drawing order.
    pub rasters: Vec<Raster>,
    /// Every value label written on a chart, in drawing order.
    pub labels: Vec<Label>,
}

/// An RGB picture being drawn.
pub struct Canvas {
    width: u32,
    height: u32,
    rgb: Vec<u8>,
    rasters: Vec<Raster>,
    labels: Vec<Label>,
}

impl Canvas {
    /// A white `width × height` canvas.
    pub fn new(width: u32, height: u32) -> Self {
        Self {
            width,
            height,
            rgb: vec![255; width as usize * height as usize * 3],
            rasters: Vec::new(),
            labels: Vec::new(),
        }
    }

    /// Lets plotters draw on the whole canvas.
    ///
    /// # Errors
    /// Whatever `draw` returns, or a plotters failure.
    pub fn plot(&mut self, draw: impl FnOnce(&Area<'_>) -> Result<()>) -> Result<()> {
        let area = BitMapBackend::with_buffer(&mut self.rgb, (self.width, self.height))
            .into_drawing_area();
        draw(&area)?;
        area.present().context("finishing a plotters drawing")?;
        Ok(())
    }

    /// Copies `grid` into the canvas at `(x, y)`, each value a `scale × scale` square of its
    /// gray level, framed by a one-pixel [`FRAME`] line just outside.
    ///
    /// # Errors
    /// If the image does not fit in the canvas (a layout bug).
    pub fn blit(&mut self, x: u32, y: u32, scale: u32, grid: Grid) -> Result<()> {
        let range = grid.range();
        self.blit_in(x, y, scale, grid, range)
    }

    /// As [`Canvas::blit`], on the gray scale `range` (`range.0` black, `range.1` white)
    /// instead of the grid's own.
    ///
    /// # Errors
    /// If the image does not fit in the canvas (a layout bug).
    pub fn blit_in(
        &mut self,
        x: u32,
        y: u32,
        scale: u32,
        grid: Grid,
        range: (f64, f64),
    ) -> Result<()> {
        let (w, h) = (grid.cols as u32 * scale, grid.rows as u32 * scale);
        ensure!(
            x >= 1 && y >= 1 && x + w < self.width && y + h < self.height,
            "a {w}×{h} image at ({x}, {y}) does not fit in a {}×{} picture",
            self.width,
            self.height
        );
        for yy in y - 1..=y + h {
            for xx in x - 1..=x + w {
                self.set(xx, yy, [FRAME.0, FRAME.1, FRAME.2]);
            }
        }
        for (i, g) in grid.gray_levels_in(range).into_iter().enumerate() {
            let (r, c) = ((i / grid.cols) as u32, (i % grid.cols) as u32);
            for yy in 0..scale {
                for xx in 0..scale {
                    self.set(x + c * scale + xx, y + r * scale + yy, [g, g, g]);
                }
            }
        }
        self.rasters.push(Raster {
            x,
            y,
            scale,
            grid,
            range,
        });
        Ok(())
    }

    /// Records value labels drawn on the canvas (by [`text`] in [`Canvas::plot`]).
    pub fn note_labels(&mut self, labels: impl IntoIterator<Item = Label>) {
        self.labels.extend(labels);
    }

    fn set(&mut self, x: u32, y: u32, rgb: [u8; 3]) {
        let i = (y as usize * self.width as usize + x as usize) * 3;
        if let Some(px) = self.rgb.get_mut(i..i + 3) {
            px.copy_from_slice(&rgb);
        }
    }

    /// Encodes the canvas as a PNG picture named `file`.
    ///
    /// # Errors
    /// Only if PNG encoding fails.
    pub fn finish(self, file: &'static str, caption: String) -> Result<Picture> {
        let mut png = Vec::new();
        {
            let mut encoder = png::Encoder::new(&mut png, self.width, self.height);
            encoder.set_color(png::ColorType::Rgb);
            encoder.set_depth(png::BitDepth::Eight);
            encoder.set_compression(png::Compression::High);
            let mut writer = encoder
                .write_header()
                .with_context(|| format!("encoding {file}"))?;
            writer
                .write_image_data(&self.rgb)
                .with_context(|| format!("encoding {file}"))?;
            writer
                .finish()
                .with_context(|| format!("encoding {file}"))?;
        }
        Ok(Picture {
            file,
            caption,
            width: self.width,
            height: self.height,
            png,
            rasters: self.rasters,
            labels: self.labels,
        })
    }
}

/// Draws `text` in the report's font, `size` pixels high, its top edge at `y` and placed
/// horizontally on `x` by `h` (left, center or right).
///
/// # Errors
/// A plotters failure.
pub fn text(area: &Area<'_>, text: &str, (x, y): (i32, i32), size: u32, h: HPos) -> Result<()> {
    coloured_text(area, text, (x, y), size, h, BLACK)
}

/// As [`text`], in `colour`.
///
/// # Errors
/// A plotters failure.
pub fn coloured_text(
    area: &Area<'_>,
    text: &str,
    (x, y): (i32, i32),
    size: u32,
    h: HPos,
    colour: RGBColor,
) -> Result<()> {
    let style = TextStyle::from((FAMILY, size).into_font())
        .color(&colour)
        .pos(Pos::new(h, VPos::Top));
    area.draw_text(text, &style, (x, y))?;
    Ok(())
}

//! [`Grid`]: a 2-D array of reals (an image, a convolution, a filter, a feature map) and the
//! gray levels it is drawn with.

/// A `rows × cols` array of reals, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct Grid {
    /// Height.
    pub rows: usize,
    /// Width.
    pub cols: usize,
    /// `rows · cols` values, row after row.
    pub values: Vec<f64>,
}

impl Grid {
    /// An 8-bit image as reals in `0..=1` (`v / 255`), as the tutorial's `x / 255`.
    pub fn from_pixels(pixels: &[u8], rows: usize, cols: usize) -> Self {
        Self {
            rows,
            cols,
            values: pixels.iter().map(|&p| f64::from(p) / 255.0).collect(),
        }
    }

    /// The smallest and the largest value (infinities for an empty grid).
    pub fn range(&self) -> (f64, f64) {
        self.values
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &v| {
                (lo.min(v), hi.max(v))
            })
    }

    /// The gray level (0 = black, 255 = white) of every value, stretched from the grid's
    /// minimum to its maximum as matplotlib's `imshow(cmap='gray')` does:
    /// `round(255 · (v − min) / (max − min))`. A constant grid is black.
    pub fn gray_levels(&self) -> Vec<u8> {
        let (min, max) = self.range();
        self.gray_levels_in((min, max))
    }

    /// The gray level of every value on a given scale: `low` (and below) black, `high` (and
    /// above) white, `round((v − low) / (high − low) · 255)` between, as `imshow(vmin=low,
    /// vmax=high)`. An empty or reversed scale draws everything black.
    pub fn gray_levels_in(&self, (low, high): (f64, f64)) -> Vec<u8> {
        let range = high - low;
        self.values
            .iter()
            .map(|&v| {
                if range > 0.0 && range.is_finite() {
                    ((v - low) / range * 255.0).round().clamp(0.0, 255.0) as u8
                } else {
                    0
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gray_levels_stretch_min_to_black_and_max_to_white() {
        let g = Grid {
            rows: 1,
            cols: 4,
            values: vec![-2.0, -1.0, 0.0, 2.0],
        };
        assert_eq!(g.gray_levels(), [0, 64, 128, 255]);
        let flat = Grid {
            rows: 1,
            cols: 2,
            values: vec![0.5, 0.5],
        };
        assert_eq!(flat.gray_levels(), [0, 0]);
    }

    #[test]
    fn pixels_scale_to_unit_range() {
        let g = Grid::from_pixels(&[0, 51, 255], 1, 3);
        assert_eq!(g.values, [0.0, 0.2, 1.0]);
    }
}

//! A user's picture of a digit (PNG or JPEG, any size, grayscale or colour) prepared the way
//! the MNIST digits were: white on black, the ink's bounding box scaled so its longer side is
//! 20 pixels (aspect ratio kept, anti-aliased), pasted into a black 28×28 field so that its
//! centre of mass is at pixel (14, 14).

use anyhow::{bail, ensure, Context, Result};
use std::path::Path;

/// Side of the prepared image.
pub const SIDE: usize = 28;
/// Longer side of the digit's box after scaling, as in MNIST.
pub const BOX: usize = 20;
/// Where the centre of mass goes (row and column), as in MNIST (its mean is 14.0 on both axes).
pub const CENTRE: f64 = 14.0;
/// Ink weaker than this share of the strongest ink (0..=255 scale) is background: paper
/// texture, shadows and JPEG noise.
const NOISE_FLOOR: u32 = 51;
/// Least difference between the strongest ink and the background for a picture to hold a digit.
const MIN_CONTRAST: u8 = 32;

/// An 8-bit grayscale picture, row-major, 0 = black.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Gray {
    /// Columns.
    pub width: usize,
    /// Rows.
    pub height: usize,
    /// `width × height` luminances.
    pub pixels: Vec<u8>,
}

impl Gray {
    fn at(&self, x: usize, y: usize) -> u8 {
        self.pixels[y * self.width + x]
    }
}

/// A picture prepared as an MNIST digit, with what was done to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepared {
    /// The 28×28 input, white ink on black.
    pub pixels: [[u8; SIDE]; SIDE],
    /// Whether the picture was inverted (dark ink on a light background).
    pub inverted: bool,
    /// The ink's bounding box in the picture: `(x, y, width, height)`.
    pub ink_box: (usize, usize, usize, usize),
    /// Size of the digit after scaling: `(width, height)`, the longer side [`BOX`].
    pub scaled: (usize, usize),
    /// Top-left corner of the scaled digit in the 28×28 field: `(x, y)`.
    pub offset: (usize, usize),
}

/// Reads and decodes a PNG or JPEG file (recognised by its first bytes) to grayscale.
///
/// # Errors
/// If the file cannot be read, is neither PNG nor JPEG, or does not decode; the message names
/// the file.
pub fn load(path: &Path) -> Result<Gray> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    decode(&bytes).with_context(|| format!("decoding {}", path.display()))
}

/// Decodes PNG or JPEG bytes to grayscale (Rec. 601 luma). Transparent pixels are laid over
/// the background that contrasts with the opaque ones (white under dark ink, black under
/// light ink), so a digit drawn on a transparent canvas keeps its strokes.
///
/// # Errors
/// If the bytes are neither PNG nor JPEG, or do not decode.
pub fn decode(bytes: &[u8]) -> Result<Gray> {
    let (width, height, channels, data) = if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        decode_png(bytes)?
    } else if bytes.starts_with(&[0xff, 0xd8, 0xff]) {
        decode_jpeg(bytes)?
    } else {
        bail!(
            "not a PNG or JPEG picture (it starts with {:02x?})",
            &bytes[..bytes.len().min(4)]
        );
    };
    ensure!(
        width > 0 && height > 0,
        "the picture is empty ({width}×{height})"
    );
    ensure!(
        data.len() == width * height * channels,
        "the decoder returned {} bytes for {width}×{height}×{channels}",
        data.len()
    );
    Ok(Gray {
        width,
        height,
        pixels: to_gray(&data, channels),
    })
}

/// Most pixels a picture may declare: 64 megapixels (a large phone photo is 12 to 50). The
/// header is checked before decoding, so a small file declaring a huge picture is refused
/// instead of exhausting memory.
pub const MAX_PIXELS: u64 = 64_000_000;

/// Refuses a `kind` picture whose header declares more than [`MAX_PIXELS`].
fn check_dimensions(kind: &str, width: u32, height: u32) -> Result<()> {
    let pixels = u64::from(width) * u64::from(height);
    ensure!(
        pixels <= MAX_PIXELS,
        "the {kind} declares {width}×{height} pixels ({:.0} megapixels); predict reads \
         pictures of at most {} megapixels: scale it down first",
        pixels as f64 / 1e6,
        MAX_PIXELS / 1_000_000
    );
    Ok(())
}

/// `(width, height, channels, 8-bit samples)` of a PNG, any colour type and bit depth.
fn decode_png(bytes: &[u8]) -> Result<(usize, usize, usize, Vec<u8>)> {
    let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
    decoder.set_transformations(png::Transformations::normalize_to_color8());
    let mut reader = decoder.read_info().context("bad PNG header")?;
    check_dimensions("PNG", reader.info().width, reader.info().height)?;
    let size = reader
        .output_buffer_size()
        .context("the PNG is too large to decode")?;
    let mut data = vec![0; size];
    let info = reader.next_frame(&mut data).context("bad PNG data")?;
    data.truncate(info.buffer_size());
    let channels = info.color_type.samples();
    Ok((info.width as usize, info.height as usize, channels, data))
}

/// `(width, height, channels, 8-bit samples)` of a JPEG, decoded to luma.
fn decode_jpeg(bytes: &[u8]) -> Result<(usize, usize, usize, Vec<u8>)> {
    use zune_core::bytestream::ZCursor;
    use zune_core::colorspace::ColorSpace;
    use zune_core::options::DecoderOptions;
    // The decoder's own size limit (16384 a side) would speak first: MAX_PIXELS is the limit.
    let options = DecoderOptions::default()
        .jpeg_set_out_colorspace(ColorSpace::Luma)
        .set_max_width(usize::from(u16::MAX))
        .set_max_height(usize::from(u16::MAX));
    let mut decoder = zune_jpeg::JpegDecoder::new_with_options(ZCursor::new(bytes), options);
    decoder
        .decode_headers()
        .map_err(|e| anyhow::anyhow!("bad JPEG header: {e:?}"))?;
    if let Some(info) = decoder.info() {
        check_dimensions("JPEG", info.width.into(), info.height.into())?;
    }
    let data = decoder
        .decode()
        .map_err(|e| anyhow::anyhow!("bad JPEG: {e:?}"))?;
    let info = decoder.info().context("the JPEG has no frame header")?;
    let channels = decoder
        .output_colorspace()
        .map_or(1, |c| c.num_components());
    Ok((
        usize::from(info.width),
        usize::from(info.height),
        channels,
        data,
    ))
}

/// Luma of interleaved samples with `channels` per pixel: 1 gray, 2 gray + alpha, 3 RGB,
/// 4 RGBA.
fn to_gray(data: &[u8], channels: usize) -> Vec<u8> {
    let luma = |px: &[u8]| -> u8 {
        if channels >= 3 {
            let (r, g, b) = (u32::from(px[0]), u32::from(px[1]), u32::from(px[2]));
            ((299 * r + 587 * g + 114 * b + 500) / 1000) as u8
        } else {
            px[0]
        }
    };
    let pixels = data.chunks_exact(channels);
    if channels % 2 == 1 {
        return pixels.map(luma).collect();
    }
    // With alpha: the background goes under transparent pixels, against the opaque ink.
    let (mut sum, mut weight) = (0u64, 0u64);
    for px in data.chunks_exact(channels) {
        let alpha = u64::from(px[channels - 1]);
        sum += u64::from(luma(px)) * alpha;
        weight += alpha;
    }
    let background: u32 = if weight > 0 && sum / weight < 128 {
        255
    } else {
        0
    };
    pixels
        .map(|px| {
            let alpha = u32::from(px[channels - 1]);
            ((u32::from(luma(px)) * alpha + background * (255 - alpha) + 127) / 255) as u8
        })
        .collect()
}

/// Prepares `picture` as an MNIST digit (see the module docs).
///
/// The background level is the median of the picture's border; if it is light the picture is
/// inverted. Ink is then measured above the background and stretched to 0..=255, ink below
/// 20 % of the strongest is dropped as noise, and the rest is cropped, scaled and centred.
///
/// # Errors
/// If the picture holds no ink that stands out from its background.
pub fn prepare(picture: &Gray) -> Result<Prepared> {
    let background = border_median(picture);
    let inverted = background > 127;
    let (background, flip) = if inverted {
        (255 - background, 255)
    } else {
        (background, 0)
    };
    let ink: Vec<u8> = picture
        .pixels
        .iter()
        .map(|&v| (v ^ flip).saturating_sub(background))
        .collect();
    let peak = ink.iter().copied().max().unwrap_or(0);
    ensure!(
        peak >= MIN_CONTRAST,
        "no digit found: nothing in the {}×{} picture stands out from its background",
        picture.width,
        picture.height
    );
    let ink = Gray {
        width: picture.width,
        height: picture.height,
        pixels: ink
            .iter()
            .map(|&v| {
                let v = (u32::from(v) * 255 + u32::from(peak) / 2) / u32::from(peak);
                if v < NOISE_FLOOR {
                    0
                } else {
                    v as u8
                }
            })
            .collect(),
    };
    let ink_box = bounding_box(&ink).context("no digit found after removing the noise")?;
    let (_, _, w, h) = ink_box;
    let long = w.max(h);
    let scaled_w = ((w * BOX + long / 2) / long).max(1);
    let scaled_h = ((h * BOX + long / 2) / long).max(1);
    let digit = stretch(&resample_area(&ink, ink_box, scaled_w, scaled_h));

    let (mut mass, mut my, mut mx) = (0.0f64, 0.0f64, 0.0f64);
    for y in 0..scaled_h {
        for x in 0..scaled_w {
            let v = f64::from(digit.at(x, y));
            mass += v;
            my += v * y as f64;
            mx += v * x as f64;
        }
    }
    let place = |centre: f64, size: usize| -> usize {
        let at = (CENTRE - centre / mass).round();
        at.clamp(0.0, (SIDE - size) as f64) as usize
    };
    let (ox, oy) = (place(mx, scaled_w), place(my, scaled_h));
    let mut pixels = [[0u8; SIDE]; SIDE];
    for y in 0..scaled_h {
        for x in 0..scaled_w {
            pixels[oy + y][ox + x] = digit.at(x, y);
        }
    }
    Ok(Prepared {
        pixels,
        inverted,
        ink_box,
        scaled: (scaled_w, scaled_h),
        offset: (ox, oy),
    })
}

/// Median of the pixels on the picture's four edges.
fn border_median(picture: &Gray) -> u8 {
    let (w, h) = (picture.width, picture.height);
    let mut border: Vec<u8> = (0..w)
        .flat_map(|x| [picture.at(x, 0), picture.at(x, h - 1)])
        .chain((0..h).flat_map(|y| [picture.at(0, y), picture.at(w - 1, y)]))
        .collect();
    border.sort_unstable();
    border[border.len() / 2]
}

/// `(x, y, width, height)` of the non-zero pixels, if any.
fn bounding_box(picture: &Gray) -> Option<(usize, usize, usize, usize)> {
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for y in 0..picture.height {
        for x in 0..picture.width {
            if picture.at(x, y) > 0 {
                (x0, y0, x1, y1) = (x0.min(x), y0.min(y), x1.max(x), y1.max(y));
            }
        }
    }
    (x0 != usize::MAX).then(|| (x0, y0, x1 - x0 + 1, y1 - y0 + 1))
}

/// Area-averaging resample of the `(x, y, w, h)` region of `picture` to `out_w × out_h`: each
/// output pixel is the mean of the source area it covers (partial pixels weighted by the part
/// covered). Anti-aliases when shrinking, repeats pixels when enlarging.
fn resample_area(
    picture: &Gray,
    (x0, y0, w, h): (usize, usize, usize, usize),
    out_w: usize,
    out_h: usize,
) -> Gray {
    // Horizontal pass into f64 rows, then the vertical pass.
    let columns = weights(w, out_w);
    let rows = weights(h, out_h);
    let mut wide = vec![0.0f64; h * out_w];
    for y in 0..h {
        for (ox, taps) in columns.iter().enumerate() {
            wide[y * out_w + ox] = taps
                .iter()
                .map(|&(x, k)| k * f64::from(picture.at(x0 + x, y0 + y)))
                .sum();
        }
    }
    let mut pixels = vec![0u8; out_w * out_h];
    for (oy, taps) in rows.iter().enumerate() {
        for ox in 0..out_w {
            let v: f64 = taps.iter().map(|&(y, k)| k * wide[y * out_w + ox]).sum();
            pixels[oy * out_w + ox] = v.round().clamp(0.0, 255.0) as u8;
        }
    }
    Gray {
        width: out_w,
        height: out_h,
        pixels,
    }
}

/// For each of `out` output cells over `len` source pixels: the source pixels it covers and
/// their weights (summing to 1).
fn weights(len: usize, out: usize) -> Vec<Vec<(usize, f64)>> {
    let step = len as f64 / out as f64;
    (0..out)
        .map(|o| {
            let (start, end) = (o as f64 * step, (o + 1) as f64 * step);
            let first = start.floor() as usize;
            let last = (end.ceil() as usize).min(len);
            (first..last)
                .filter_map(|i| {
                    let covered = end.min((i + 1) as f64) - start.max(i as f64);
                    (covered > 0.0).then_some((i, covered / step))
                })
                .collect()
        })
        .collect()
}

/// Stretches the levels so the brightest pixel is 255 (thin strokes of a large picture come
/// out faint after shrinking).
fn stretch(picture: &Gray) -> Gray {
    let peak = u32::from(picture.pixels.iter().copied().max().unwrap_or(0));
    let pixels = if peak == 0 {
        picture.pixels.clone()
    } else {
        picture
            .pixels
            .iter()
            .map(|&v| ((u32::from(v) * 255 + peak / 2) / peak) as u8)
            .collect()
    };
    Gray { pixels, ..*picture }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gray(width: usize, height: usize, f: impl Fn(usize, usize) -> u8) -> Gray {
        Gray {
            width,
            height,
            pixels: (0..height)
                .flat_map(|y| (0..width).map(move |x| (x, y)))
                .map(|(x, y)| f(x, y))
                .collect(),
        }
    }

    #[test]
    fn area_weights_cover_each_output_cell_once() {
        for (len, out) in [(10, 4), (3, 20), (7, 7), (400, 20), (1, 1)] {
            let w = weights(len, out);
            assert_eq!(w.len(), out);
            let mut per_source = vec![0.0; len];
            for taps in &w {
                let total: f64 = taps.iter().map(|t| t.1).sum();
                assert!((total - 1.0).abs() < 1e-9, "{len}->{out}: {total}");
                for &(i, k) in taps {
                    per_source[i] += k;
                }
            }
            // every source pixel is used with total weight out/len
            for s in per_source {
                assert!((s - out as f64 / len as f64).abs() < 1e-9);
            }
        }
    }

    #[test]
    fn shrinking_averages_areas() {
        // 4×2 → 2×1: each output is the mean of a 2×2 block
        let g = gray(4, 2, |x, y| [[0, 100, 200, 255], [50, 50, 250, 255]][y][x]);
        let out = resample_area(&g, (0, 0, 4, 2), 2, 1);
        assert_eq!(out.pixels, vec![50, 240]);
    }

    #[test]
    fn a_white_square_on_black_is_scaled_to_the_box_and_centred() {
        let g = gray(100, 60, |x, y| {
            if (30..70).contains(&x) && (10..50).contains(&y) {
                255
            } else {
                0
            }
        });
        let p = prepare(&g).unwrap();
        assert!(!p.inverted);
        assert_eq!(p.ink_box, (30, 10, 40, 40));
        assert_eq!(p.scaled, (20, 20));
        // centre of mass 9.5 → top-left at 14 − 9.5 = 4.5, rounded away from zero
        assert_eq!(p.offset, (5, 5));
        for (y, row) in p.pixels.iter().enumerate() {
            for (x, &v) in row.iter().enumerate() {
                let inside = (5..25).contains(&x) && (5..25).contains(&y);
                assert_eq!(v, if inside { 255 } else { 0 }, "({x}, {y})");
            }
        }
    }

    #[test]
    fn blank_pictures_are_refused() {
        let msg = format!("{:#}", prepare(&gray(30, 30, |_, _| 200)).unwrap_err());
        assert!(msg.contains("no digit"), "{msg}");
        // faint smudges below the contrast floor are not a digit either
        let faint = gray(30, 30, |x, _| if x == 10 { 220 } else { 200 });
        assert!(prepare(&faint).is_err());
    }

    #[test]
    fn transparency_goes_over_the_contrasting_background() {
        // black ink on transparent → black on white; white ink on transparent → white on black
        let dark = [0, 0, 0, 255, 9, 9, 9, 0];
        assert_eq!(to_gray(&dark, 4), vec![0, 255]);
        let light = [255, 255, 255, 255, 9, 9, 9, 0];
        assert_eq!(to_gray(&light, 4), vec![255, 0]);
        assert_eq!(to_gray(&[10, 20, 30], 3), vec![18]);
        // half-opaque dark ink over white: (77·128 + 255·127) / 255
        assert_eq!(to_gray(&[77, 128], 2), vec![166]);
    }
}

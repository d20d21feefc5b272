//! A user's picture of a digit (PNG or JPEG, any size, grayscale or colour) prepared the way
//! the MNIST digits were: white on black, the ink's bounding box scaled so its longer side is
//! 20 pixels (aspect ratio kept, anti-aliased), pasted into a black 28×28 field so that its
//! centre of mass is at pixel (14, 14). A photo of paper is levelled first (uneven light and
//! noise taken out) and the digit is told from specks of dust by its size ([`prepare`]).

use anyhow::{bail, ensure, Context, Result};
use std::path::Path;

/// Side of the prepared image.
pub const SIDE: usize = 28;
/// Longer side of the digit's box after scaling, as in MNIST.
pub const BOX: usize = 20;
/// Where the centre of mass goes (row and column), as in MNIST (its mean is 14.0 on both axes).
pub const CENTRE: f64 = 14.0;
/// Ink weaker than this share of the digit's ink (0..=255 scale) is background: paper
/// texture, shadows and JPEG noise at the digit's edge.
const NOISE_FLOOR: u32 = 51;
/// Least difference between the digit's ink and the background for a picture to hold a digit.
const MIN_CONTRAST: u8 = 32;
/// The background fit keeps the pixels at most this many standard deviations above it.
const INLIER_SIGMAS: f64 = 2.5;
/// Ink stands out from the paper by at least this many standard deviations of its noise.
const NOISE_SIGMAS: f64 = 4.0;
/// The least noise level assumed (levels), so a clean synthetic picture is not over-fitted.
const MIN_NOISE: f64 = 1.0;
/// Fewest pixels of a digit: anything smaller is a speck.
const MIN_DIGIT_PIXELS: usize = 4;
/// Paper noisier than this (standard deviation, levels) is averaged over a small box before
/// the ink is told from it.
const NOISY: f64 = 4.0;
/// Ink in the dimmest light is boosted at most this much: more would also boost whatever the
/// smooth background misses (a shadow's sharp edge). On 150 MNIST test digits rendered as
/// photos (`trainer/tests/photo_cli.rs`' renderer) 1.6 read 149 of 150 on gradient-lit paper
/// as on clean paper, as many as no cap did.
const MAX_GAIN: f64 = 1.6;
/// A background whose levels span more than this is reported as unevenly lit.
const UNEVEN: u8 = 16;

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
#[derive(Clone, Debug, PartialEq)]
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
    /// Lowest and highest level of the fitted background (the paper), in the picture's own
    /// levels (0 = black).
    pub paper: (u8, u8),
    /// Standard deviation of the paper around its fitted level (noise), in levels.
    pub noise: f64,
    /// Ink pixels of the digit (above the threshold, in its strokes).
    pub ink_pixels: usize,
    /// Connected ink components taken as the digit.
    pub strokes: usize,
    /// Connected ink components ignored as specks (too small, or far from the digit).
    pub specks: usize,
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
///
/// The decoder fills a picture whose data stops early with grey; a JPEG must end its last
/// scan with the end-of-image marker, so one without it is refused as truncated (as a
/// truncated PNG is).
fn decode_jpeg(bytes: &[u8]) -> Result<(usize, usize, usize, Vec<u8>)> {
    ensure!(
        jpeg_is_complete(bytes),
        "the JPEG is truncated: its data stops before the end-of-image marker (FF D9) after \
         {} bytes; copy the whole file again",
        bytes.len()
    );
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

/// True if an end-of-image marker (`FF D9`) follows the JPEG's last start-of-scan marker
/// (`FF DA`). Inside a scan's entropy-coded data `FF` is always followed by `00` or a
/// restart marker, so an `FF D9` there is the real end.
fn jpeg_is_complete(bytes: &[u8]) -> bool {
    let marker = |m: u8| bytes.windows(2).rposition(|w| w == [0xff, m]);
    match (marker(0xda), marker(0xd9)) {
        (Some(scan), Some(end)) => end > scan,
        _ => false,
    }
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
/// 1. Polarity: the median of the picture's border is the paper; if it is light, the picture
///    is inverted so that ink is bright.
/// 2. Background: a smooth surface (quadratic in x and y) is fitted to the paper by robust
///    least squares — pixels far from the fit (ink, specks) are left out and the fit
///    repeated — so uneven light (a gradient, a vignette) is taken away. The spread of the
///    paper around it is the noise level.
/// 3. Ink: what stands above the background — dark ink on light paper measured relative to
///    the paper under it (boosted at most 1.6 times where the light is dim), averaged over a
///    small box first when the paper is noisy — by more than an adaptive threshold (Otsu's on
///    the levels above the background, at least four times the noise).
/// 4. The digit: the largest connected (8-neighbour) ink component, with the components
///    near it of at least a tenth its size (a digit written in more than one stroke); smaller
///    and distant ones are specks of dust or texture and are ignored.
/// 5. The digit's pixels (and a one-pixel rim, its anti-aliased edge) are stretched so that
///    its ink is white; ink weaker than 20 % of that is dropped; the rest is cropped, scaled
///    and centred.
///
/// # Errors
/// If the picture holds no ink that stands out from its background.
pub fn prepare(picture: &Gray) -> Result<Prepared> {
    let paper = border_median(picture);
    let inverted = paper > 127;
    let flip = if inverted { 255 } else { 0 };
    let bright: Vec<u8> = picture.pixels.iter().map(|&v| v ^ flip).collect();
    // The fit that leaves out what stands above the paper holds even where the digit covers
    // much of the picture (a tight crop); if it finds no digit — a shadow's sharp edge it
    // cannot follow, taken for ink — the fit that leaves out what is far off either way.
    segment(picture, &bright, inverted, Fit::Below)
        .or_else(|first| segment(picture, &bright, inverted, Fit::EitherSide).map_err(|_| first))
}

/// Which pixels the background fit leaves out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fit {
    /// Those more than [`INLIER_SIGMAS`] standard deviations above it (ink is brighter).
    Below,
    /// Those more than three standard deviations off it, either way.
    EitherSide,
}

/// Steps 2–5 of [`prepare`] on `bright` (the picture with its ink bright), the background
/// fitted as `fit` says.
fn segment(picture: &Gray, bright: &[u8], inverted: bool, fit: Fit) -> Result<Prepared> {
    let (width, height) = (picture.width, picture.height);
    let background = Background::fit(bright, width, height, fit);
    // Ink above the paper. Light falls on ink and paper alike, so dark ink on light paper is
    // measured relative to the paper under it, as if all of it were lit as its brightest part.
    let brightest_paper = (255.0 - background.lowest()).max(16.0);
    let mut levelled: Vec<f64> = bright
        .iter()
        .enumerate()
        .map(|(i, &v)| {
            let level = background.at(i % width, i / width);
            let gain = if inverted {
                (brightest_paper / (255.0 - level).max(16.0)).min(MAX_GAIN)
            } else {
                1.0
            };
            (f64::from(v) - level) * gain
        })
        .collect();
    let mut noise = spread(&levelled);
    // Noisy paper: average over a small box first (a stroke is wider than the box), which
    // divides white noise by the box's side.
    if noise >= NOISY {
        let radius = (width.min(height) / 100).clamp(1, 4);
        levelled = box_blur(&levelled, width, height, radius);
        noise = spread(&levelled);
    }
    let residual: Vec<u8> = levelled
        .iter()
        .map(|r| r.round().clamp(0.0, 255.0) as u8)
        .collect();
    let noise_floor = (NOISE_SIGMAS * noise).ceil().min(255.0) as u8;
    let threshold = otsu(&residual).max(noise_floor).max(MIN_CONTRAST / 2);
    let mask: Vec<bool> = residual.iter().map(|&r| r > threshold).collect();
    let (labels, found) = components(&mask, width, height);
    let no_digit = || {
        format!(
            "no digit found: nothing in the {width}×{height} picture stands out from its background"
        )
    };
    let largest = found.iter().max_by_key(|c| c.size).with_context(no_digit)?;
    ensure!(largest.size >= MIN_DIGIT_PIXELS, "{}", no_digit());
    let near = |c: &Component| {
        let margin = (largest.x1 - largest.x0).max(largest.y1 - largest.y0) / 2 + 1;
        c.x1 + margin >= largest.x0
            && c.x0 <= largest.x1 + margin
            && c.y1 + margin >= largest.y0
            && c.y0 <= largest.y1 + margin
    };
    let kept: Vec<&Component> = found
        .iter()
        .filter(|c| c.size * 10 >= largest.size && near(c))
        .collect();
    let is_kept = |label: u32| label != 0 && kept.iter().any(|c| c.label == label);
    let mut ink_levels: Vec<u8> = labels
        .iter()
        .zip(&residual)
        .filter(|(&l, _)| is_kept(l))
        .map(|(_, &r)| r)
        .collect();
    let ink_pixels = ink_levels.len();
    ink_levels.sort_unstable();
    // The ink's level: most of the digit's pixels (a noise spike does not set it).
    let level = ink_levels[ink_levels.len() * 9 / 10];
    ensure!(level >= MIN_CONTRAST, "{}", no_digit());
    // The kept components and their one-pixel rim, stretched so the ink is 255.
    let in_digit = |x: usize, y: usize| {
        (y.saturating_sub(1)..(y + 2).min(height)).any(|yy| {
            (x.saturating_sub(1)..(x + 2).min(width)).any(|xx| is_kept(labels[yy * width + xx]))
        })
    };
    let ink = Gray {
        width,
        height,
        pixels: residual
            .iter()
            .enumerate()
            .map(|(i, &r)| {
                if !in_digit(i % width, i / width) {
                    return 0;
                }
                let v = (u32::from(r) * 255 + u32::from(level) / 2) / u32::from(level);
                if v < NOISE_FLOOR {
                    0
                } else {
                    v.min(255) as u8
                }
            })
            .collect(),
    };
    let ink_box = bounding_box(&ink).with_context(no_digit)?;
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
    let (low, high) = background.range();
    let paper_range = if inverted {
        (255 - high, 255 - low)
    } else {
        (low, high)
    };
    Ok(Prepared {
        pixels,
        inverted,
        ink_box,
        scaled: (scaled_w, scaled_h),
        offset: (ox, oy),
        paper: paper_range,
        noise: background.noise,
        ink_pixels,
        strokes: kept.len(),
        specks: found.len() - kept.len(),
    })
}

impl Prepared {
    /// One line saying what was found: the paper (its range of levels and noise), the digit
    /// (its pixels, strokes and box) and the specks passed over.
    pub fn describe(&self) -> String {
        let (x, y, w, h) = self.ink_box;
        let (low, high) = self.paper;
        let polarity = if self.inverted {
            "dark on light (inverted)"
        } else {
            "light on dark"
        };
        let light = if high - low > UNEVEN {
            " (uneven light, levelled)"
        } else {
            ""
        };
        format!(
            "{polarity}; background {low}–{high}{light}, noise σ {:.1}; digit found: {} ink pixels \
             in {} stroke{} at ({x}, {y}) {w}×{h}, {} speck{} ignored; scaled to {}×{}, centred by \
             mass in 28×28",
            self.noise,
            self.ink_pixels,
            self.strokes,
            if self.strokes == 1 { "" } else { "s" },
            self.specks,
            if self.specks == 1 { "" } else { "s" },
            self.scaled.0,
            self.scaled.1
        )
    }
}

/// The paper's level under every pixel: `c0 + c1·u + c2·v + c3·u² + c4·u·v + c5·v²`, with
/// `u`, `v` the pixel's position scaled to −1..=1.
#[derive(Debug, Clone, PartialEq)]
struct Background {
    coefficients: [f64; 6],
    width: usize,
    height: usize,
    /// Standard deviation of the paper around the surface (robust: from the median absolute
    /// residual), at least [`MIN_NOISE`].
    noise: f64,
}

impl Background {
    /// Fits the surface to `pixels` (`width × height`, ink bright): robust least squares,
    /// leaving out the pixels `fit` says, refitted ten times (see [`prepare`]). At most about
    /// 40,000 pixels, evenly spread, take part.
    fn fit(pixels: &[u8], width: usize, height: usize, fit: Fit) -> Self {
        let step = ((pixels.len() as f64 / 40_000.0).sqrt().ceil() as usize).max(1);
        let mut model = Self {
            coefficients: [0.0; 6],
            width,
            height,
            noise: MIN_NOISE,
        };
        let samples: Vec<(usize, usize, f64)> = (0..height)
            .step_by(step)
            .flat_map(|y| (0..width).step_by(step).map(move |x| (x, y)))
            .map(|(x, y)| (x, y, f64::from(pixels[y * width + x])))
            .collect();
        // Below: ink is brighter than the paper, so the fit starts low — the quarter level —
        // and leaves out only what stands above it. Either side: from the median.
        let mut values: Vec<f64> = samples.iter().map(|s| s.2).collect();
        values.sort_unstable_by(f64::total_cmp);
        let start = match fit {
            Fit::Below => values.len() / 4,
            Fit::EitherSide => values.len() / 2,
        };
        model.coefficients[0] = values.get(start).copied().unwrap_or(0.0);
        let mut cutoff = f64::INFINITY;
        for _ in 0..10 {
            let residuals: Vec<f64> = samples
                .iter()
                .map(|&(x, y, v)| v - model.at(x, y))
                .collect();
            // The paper's noise: below, from the residuals under the fit, which ink never
            // reaches; either side, from those kept last time.
            let mut spread: Vec<f64> = residuals
                .iter()
                .filter(|&&r| match fit {
                    Fit::Below => r <= 0.0,
                    Fit::EitherSide => r.abs() <= cutoff,
                })
                .map(|r| r.abs())
                .collect();
            model.noise = (1.4826 * median(&mut spread)).max(MIN_NOISE);
            cutoff = match fit {
                Fit::Below => INLIER_SIGMAS,
                Fit::EitherSide => 3.0,
            } * model.noise;
            let inliers: Vec<(usize, usize, f64)> = samples
                .iter()
                .zip(&residuals)
                .filter(|(_, &r)| match fit {
                    Fit::Below => r <= cutoff,
                    Fit::EitherSide => r.abs() <= cutoff,
                })
                .map(|(&s, _)| s)
                .collect();
            match model.least_squares(&inliers) {
                Some(coefficients) => model.coefficients = coefficients,
                None => break,
            }
        }
        model
    }

    /// Position of pixel `(x, y)` scaled to −1..=1 on both axes.
    fn uv(&self, x: usize, y: usize) -> (f64, f64) {
        let scale = |p: usize, n: usize| {
            if n > 1 {
                2.0 * p as f64 / (n - 1) as f64 - 1.0
            } else {
                0.0
            }
        };
        (scale(x, self.width), scale(y, self.height))
    }

    /// The paper's level at pixel `(x, y)`.
    fn at(&self, x: usize, y: usize) -> f64 {
        let (u, v) = self.uv(x, y);
        let c = &self.coefficients;
        c[0] + c[1] * u + c[2] * v + c[3] * u * u + c[4] * u * v + c[5] * v * v
    }

    /// Lowest level of the surface over the picture (see [`Background::range`]), unclamped.
    fn lowest(&self) -> f64 {
        self.grid_levels().fold(f64::INFINITY, f64::min)
    }

    /// The surface's level on a grid of 9 × 9 points over the picture, corners included.
    fn grid_levels(&self) -> impl Iterator<Item = f64> + '_ {
        (0..9).flat_map(move |i| {
            (0..9).map(move |j| {
                self.at(
                    i * self.width.saturating_sub(1) / 8,
                    j * self.height.saturating_sub(1) / 8,
                )
            })
        })
    }

    /// Lowest and highest level of the surface over the picture (on a grid of 9 × 9 points,
    /// corners included), clamped to 0..=255.
    fn range(&self) -> (u8, u8) {
        let (low, high) = self
            .grid_levels()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), v| {
                (lo.min(v), hi.max(v))
            });
        let byte = |v: f64| v.round().clamp(0.0, 255.0) as u8;
        (byte(low), byte(high))
    }

    /// The coefficients that fit `samples` best: the quadratic surface, else (too few
    /// samples, or all on a line) a plane, else a constant; `None` without samples.
    fn least_squares(&self, samples: &[(usize, usize, f64)]) -> Option<[f64; 6]> {
        let mut normal = [[0.0f64; 6]; 6];
        let mut target = [0.0f64; 6];
        for &(x, y, value) in samples {
            let (u, v) = self.uv(x, y);
            let basis = [1.0, u, v, u * u, u * v, v * v];
            for (i, bi) in basis.iter().enumerate() {
                target[i] += bi * value;
                for (j, bj) in basis.iter().enumerate() {
                    normal[i][j] += bi * bj;
                }
            }
        }
        [6, 3, 1].into_iter().find_map(|terms| {
            if samples.len() < 2 * terms {
                return None;
            }
            let solved = solve(&normal, &target, terms)?;
            let mut coefficients = [0.0; 6];
            coefficients[..terms].copy_from_slice(&solved[..terms]);
            Some(coefficients)
        })
    }
}

/// Robust standard deviation of the paper's noise in `values` (levels above the background):
/// 1.4826 × the median of the values below 0, which ink — always above — never reaches
/// however much of the picture it covers; at least [`MIN_NOISE`].
fn spread(values: &[f64]) -> f64 {
    let mut magnitudes: Vec<f64> = values.iter().filter(|&&v| v <= 0.0).map(|v| -v).collect();
    if magnitudes.is_empty() {
        return MIN_NOISE;
    }
    let middle = magnitudes.len() / 2;
    let (_, median, _) = magnitudes.select_nth_unstable_by(middle, f64::total_cmp);
    (1.4826 * *median).max(MIN_NOISE)
}

/// The mean of each `(2·radius + 1)²` box of `values` (`width × height`), the box clipped at
/// the edges.
fn box_blur(values: &[f64], width: usize, height: usize, radius: usize) -> Vec<f64> {
    // Summed-area table with a zero row and column in front.
    let stride = width + 1;
    let mut sums = vec![0.0f64; stride * (height + 1)];
    for y in 0..height {
        let mut row = 0.0;
        for x in 0..width {
            row += values[y * width + x];
            sums[(y + 1) * stride + x + 1] = sums[y * stride + x + 1] + row;
        }
    }
    let mut out = Vec::with_capacity(values.len());
    for y in 0..height {
        let (y0, y1) = (y.saturating_sub(radius), (y + radius + 1).min(height));
        for x in 0..width {
            let (x0, x1) = (x.saturating_sub(radius), (x + radius + 1).min(width));
            let total = sums[y1 * stride + x1] - sums[y0 * stride + x1] - sums[y1 * stride + x0]
                + sums[y0 * stride + x0];
            out.push(total / ((y1 - y0) * (x1 - x0)) as f64);
        }
    }
    out
}

/// Solves the leading `n × n` block of `a · x = b` by Gaussian elimination with partial
/// pivoting; `None` if it is (nearly) singular.
fn solve(a: &[[f64; 6]; 6], b: &[f64; 6], n: usize) -> Option<[f64; 6]> {
    let mut m = *a;
    let mut x = *b;
    let scale = (0..n).map(|i| m[i][i].abs()).fold(0.0, f64::max);
    for col in 0..n {
        let pivot = (col..n).max_by(|&i, &j| m[i][col].abs().total_cmp(&m[j][col].abs()))?;
        if m[pivot][col].abs() <= 1e-9 * scale.max(1e-300) {
            return None;
        }
        m.swap(col, pivot);
        x.swap(col, pivot);
        let pivot_row = m[col];
        for row in col + 1..n {
            let f = m[row][col] / pivot_row[col];
            for (target, source) in m[row][col..n].iter_mut().zip(&pivot_row[col..n]) {
                *target -= f * source;
            }
            x[row] -= f * x[col];
        }
    }
    for col in (0..n).rev() {
        let tail: f64 = (col + 1..n).map(|k| m[col][k] * x[k]).sum();
        x[col] = (x[col] - tail) / m[col][col];
    }
    Some(x)
}

/// The median of `values` (sorted in place); 0 for none.
fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_unstable_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Otsu's threshold of 8-bit levels: the `t` that best separates the levels `≤ t` from the
/// levels `> t` (largest between-class variance).
fn otsu(levels: &[u8]) -> u8 {
    let mut histogram = [0u64; 256];
    for &v in levels {
        histogram[usize::from(v)] += 1;
    }
    let total = levels.len() as f64;
    let sum: f64 = histogram
        .iter()
        .enumerate()
        .map(|(i, &n)| i as f64 * n as f64)
        .sum();
    let (mut below, mut below_sum) = (0.0f64, 0.0f64);
    let (mut best, mut best_variance) = (0u8, -1.0f64);
    for (t, &n) in histogram.iter().enumerate() {
        below += n as f64;
        below_sum += t as f64 * n as f64;
        let above = total - below;
        if below == 0.0 || above == 0.0 {
            continue;
        }
        let difference = below_sum / below - (sum - below_sum) / above;
        let variance = below * above * difference * difference;
        if variance > best_variance {
            (best, best_variance) = (t as u8, variance);
        }
    }
    best
}

/// One connected (8-neighbour) group of ink pixels.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Component {
    /// Its label in the label image (from 1).
    label: u32,
    /// Pixels.
    size: usize,
    /// Leftmost, topmost, rightmost and bottommost pixel.
    x0: usize,
    y0: usize,
    x1: usize,
    y1: usize,
}

/// Labels the connected groups of `mask` (`width × height`): the label image (0 off the
/// mask) and the groups.
fn components(mask: &[bool], width: usize, height: usize) -> (Vec<u32>, Vec<Component>) {
    let mut labels = vec![0u32; mask.len()];
    let mut found = Vec::new();
    let mut stack = Vec::new();
    for start in 0..mask.len() {
        if !mask[start] || labels[start] != 0 {
            continue;
        }
        let label = found.len() as u32 + 1;
        let mut c = Component {
            label,
            size: 0,
            x0: usize::MAX,
            y0: usize::MAX,
            x1: 0,
            y1: 0,
        };
        labels[start] = label;
        stack.push(start);
        while let Some(i) = stack.pop() {
            let (x, y) = (i % width, i / width);
            c.size += 1;
            (c.x0, c.y0, c.x1, c.y1) = (c.x0.min(x), c.y0.min(y), c.x1.max(x), c.y1.max(y));
            for yy in y.saturating_sub(1)..(y + 2).min(height) {
                for xx in x.saturating_sub(1)..(x + 2).min(width) {
                    let j = yy * width + xx;
                    if mask[j] && labels[j] == 0 {
                        labels[j] = label;
                        stack.push(j);
                    }
                }
            }
        }
        found.push(c);
    }
    (labels, found)
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
    fn the_background_fit_follows_uneven_light_under_ink() {
        // Paper lit by a quadratic surface; a third of it covered by a bright bar (ink, after
        // inversion) that the robust fit must leave out.
        let level = |x: usize, y: usize| 40.0 + 0.5 * x as f64 + 0.002 * (y * y) as f64;
        let g = gray(120, 90, |x, y| {
            if (40..80).contains(&x) {
                250
            } else {
                level(x, y).round() as u8
            }
        });
        let fit = Background::fit(&g.pixels, g.width, g.height, Fit::Below);
        for (x, y) in [(0, 0), (119, 89), (60, 45), (10, 80)] {
            assert!(
                (fit.at(x, y) - level(x, y)).abs() < 1.0,
                "({x}, {y}): {} vs {}",
                fit.at(x, y),
                level(x, y)
            );
        }
        assert!(fit.noise <= 1.0, "{}", fit.noise);
    }

    #[test]
    fn otsu_splits_two_levels_and_components_are_eight_connected() {
        let mut levels = vec![10u8; 90];
        levels.extend([200u8; 10]);
        let t = otsu(&levels);
        assert!((10..200).contains(&t), "{t}");
        // Two diagonal pixels touch (8-neighbours); a third stands apart.
        let mask = [
            true, false, false, false, //
            false, true, false, false, //
            false, false, false, true, //
        ];
        let (labels, found) = components(&mask, 4, 3);
        assert_eq!(found.len(), 2);
        assert_eq!(found[0].size, 2);
        assert_eq!(labels[0], labels[5]);
        assert_ne!(labels[0], labels[11]);
        assert_eq!((found[1].x0, found[1].y0), (3, 2));
    }

    #[test]
    fn specks_are_ignored_and_a_two_stroke_digit_kept_whole() {
        // Dark on white: a "7"-like digit in two separate strokes, and five 2×2 specks far
        // from it in the corners.
        let g = gray(100, 100, |x, y| {
            let bar = (30..70).contains(&x) && (20..26).contains(&y);
            let stem = (55..61).contains(&x) && (30..80).contains(&y);
            let speck = [(2, 2), (95, 3), (3, 94), (94, 95), (50, 96)]
                .iter()
                .any(|&(sx, sy)| (sx..sx + 2).contains(&x) && (sy..sy + 2).contains(&y));
            if bar || stem || speck {
                20
            } else {
                235
            }
        });
        let p = prepare(&g).unwrap();
        assert!(p.inverted);
        assert_eq!(p.ink_box, (30, 20, 40, 60));
        assert_eq!((p.strokes, p.specks), (2, 5));
        assert_eq!(p.ink_pixels, 40 * 6 + 6 * 50);
        assert!(p.describe().contains("in 2 strokes"), "{}", p.describe());
        assert!(
            p.describe().contains("5 specks ignored"),
            "{}",
            p.describe()
        );
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

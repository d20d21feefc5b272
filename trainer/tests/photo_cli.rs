//! `trainer predict --image` on pictures as a phone takes them: a dark MNIST digit on
//! unevenly lit, noisy, speckled grey paper must be read as the same digit on clean paper, and
//! a damaged picture file of either format is refused.
//!
//! Uses the real MNIST test set (`data/mnist`, made by `cargo xtask fetch-mnist`) and the
//! committed model (`firmware-example/assets/model.bin`).

mod cli_support;

use cli_support::{assert_clean_failure, s, trainer, trainer_ok};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::path::{Path, PathBuf};

/// Width and height of the rendered photos.
const PHOTO: (usize, usize) = (240, 180);
/// Each MNIST pixel becomes a `ZOOM × ZOOM` area of the photo.
const ZOOM: usize = 5;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the trainer crate sits in the workspace")
        .to_path_buf()
}

fn mnist_test() -> trainer::data::Dataset {
    let dir = workspace().join("data/mnist");
    trainer::data::load_test(&dir).unwrap_or_else(|e| {
        panic!(
            "{} has no MNIST test set ({e:#}): run `cargo xtask fetch-mnist`",
            dir.display()
        )
    })
}

/// Encodes 8-bit grayscale pixels as a PNG.
fn gray_png(width: usize, height: usize, pixels: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, width as u32, height as u32);
    encoder.set_color(png::ColorType::Grayscale);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().unwrap();
    writer.write_image_data(pixels).unwrap();
    writer.finish().unwrap();
    bytes
}

/// Ink coverage (0..=1) of the photo's pixel `(x, y)`: the 28×28 digit enlarged `ZOOM` times
/// (bilinear) with its top-left corner at `(left, top)`.
fn ink(digit: &[u8], left: usize, top: usize, x: usize, y: usize) -> f64 {
    let u = (x as f64 - left as f64 + 0.5) / ZOOM as f64 - 0.5;
    let v = (y as f64 - top as f64 + 0.5) / ZOOM as f64 - 0.5;
    let at = |c: i64, r: i64| -> f64 {
        if (0..28).contains(&c) && (0..28).contains(&r) {
            f64::from(digit[(r * 28 + c) as usize]) / 255.0
        } else {
            0.0
        }
    };
    let (c0, r0) = (u.floor(), v.floor());
    let (fu, fv) = (u - c0, v - r0);
    let (c0, r0) = (c0 as i64, r0 as i64);
    at(c0, r0) * (1.0 - fu) * (1.0 - fv)
        + at(c0 + 1, r0) * fu * (1.0 - fv)
        + at(c0, r0 + 1) * (1.0 - fu) * fv
        + at(c0 + 1, r0 + 1) * fu * fv
}

/// How a photo is lit.
#[derive(Clone, Copy, Debug)]
enum Light {
    /// White paper, even light, no noise.
    Clean,
    /// Grey paper lit from the right (a third as bright on the left edge as on the right),
    /// sensor noise σ ≈ 12 levels, 60 small dark specks of dust.
    Gradient,
    /// Grey paper lit from the right (0.4 to 0.9), sensor noise σ ≈ 24, the same specks.
    Grainy,
}

/// A photo of `digit` written in dark ink on paper, lit as `light` says.
fn photo(digit: &[u8], light: Light, seed: u64) -> Vec<u8> {
    let (w, h) = PHOTO;
    let (left, top) = (60, 20);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let specks: Vec<(usize, usize)> = (0..60)
        .map(|_| (rng.gen_range(0..w - 2), rng.gen_range(0..h - 2)))
        .collect();
    let mut pixels = Vec::with_capacity(w * h);
    for y in 0..h {
        for x in 0..w {
            let mut a = ink(digit, left, top, x, y);
            let (u, v) = (x as f64 / w as f64, y as f64 / h as f64);
            // Sum of four uniforms in ±s: roughly normal, σ = s · √(4/3).
            let mut noise = |s: f64| -> f64 { (0..4).map(|_| rng.gen_range(-s..s)).sum() };
            let (brightness, paper, noise) = match light {
                Light::Clean => (1.0, 0.95, 0.0),
                Light::Gradient => (0.3 + 0.6 * u + 0.1 * v, 0.8, noise(10.4)),
                Light::Grainy => (0.4 + 0.5 * u, 0.8, noise(21.0)),
            };
            let speck = specks
                .iter()
                .any(|&(sx, sy)| (sx..sx + 2).contains(&x) && (sy..sy + 2).contains(&y));
            if speck && !matches!(light, Light::Clean) {
                a = a.max(0.8);
            }
            let reflectance = paper * (1.0 - a) + 0.08 * a;
            pixels.push(
                (255.0 * brightness * reflectance + noise)
                    .round()
                    .clamp(0.0, 255.0) as u8,
            );
        }
    }
    pixels
}

/// The class `trainer predict --image` gives `file`, from its JSON.
fn predicted(model: &Path, file: &Path) -> u64 {
    let out = trainer_ok(&["predict", "--model", s(model), "--image", s(file), "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    json["class"].as_u64().unwrap()
}

#[test]
fn a_digit_on_noisy_unevenly_lit_paper_reads_as_on_clean_paper() {
    let test = mnist_test();
    let model = workspace().join("firmware-example/assets/model.bin");
    let dir = tempfile::tempdir().unwrap();
    let (w, h) = PHOTO;
    // The first test digit of each class.
    let mut checked = Vec::new();
    for class in 0..10u8 {
        let index = test.labels.iter().position(|&l| l == class).unwrap();
        let digit = test.image(index).unwrap();
        let clean = dir.path().join(format!("clean-{class}.png"));
        std::fs::write(&clean, gray_png(w, h, &photo(digit, Light::Clean, 0))).unwrap();
        let clean = predicted(&model, &clean);
        for light in [Light::Gradient, Light::Grainy] {
            let noisy = dir.path().join(format!("noisy-{class}-{light:?}.png"));
            let pixels = photo(digit, light, index as u64);
            std::fs::write(&noisy, gray_png(w, h, &pixels)).unwrap();
            checked.push((index, class, light, clean, predicted(&model, &noisy)));
        }
        // The gradient-lit photo cropped tight to the digit's 20×20 box (ink covers a third
        // of it and touches the edges): the paper is still found.
        let photo = photo(digit, Light::Gradient, index as u64);
        let tight: Vec<u8> = (40..140)
            .flat_map(|y| photo[y * w + 80..y * w + 180].to_vec())
            .collect();
        let cropped = dir.path().join(format!("tight-{class}.png"));
        std::fs::write(&cropped, gray_png(100, 100, &tight)).unwrap();
        checked.push((
            index,
            class,
            Light::Clean,
            clean,
            predicted(&model, &cropped),
        ));
    }
    // The clean photos are read right (else the comparison below would prove little)…
    let clean_right = checked.iter().filter(|c| u64::from(c.1) == c.3).count();
    assert!(clean_right >= 18, "clean photos: {checked:?}");
    // …and every noisy photo as its clean twin.
    for &(index, class, light, clean, noisy) in &checked {
        assert_eq!(
            noisy, clean,
            "test digit #{index} ({class}): clean photo read as {clean}, {light:?} one as {noisy}"
        );
    }
    // The first line says what was found: the digit, the specks passed over, the uneven light.
    let noisy = dir.path().join("noisy-3-Gradient.png");
    let out = trainer_ok(&["predict", "--model", s(&model), "--image", s(&noisy)]);
    let text = String::from_utf8(out.stdout).unwrap();
    let first = text.lines().next().unwrap();
    for needle in [
        "noisy-3-Gradient.png: 240×180",
        "dark on light (inverted)",
        "digit found",
        "specks ignored",
        "uneven",
    ] {
        assert!(first.contains(needle), "lacks {needle:?}: {first}");
    }
}

#[test]
fn truncated_pictures_of_either_format_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let model = workspace().join("firmware-example/assets/model.bin");
    let jpeg =
        std::fs::read(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seven.jpg"))
            .unwrap();
    let whole = dir.path().join("whole.jpg");
    std::fs::write(&whole, &jpeg).unwrap();
    trainer_ok(&["predict", "--model", s(&model), "--image", s(&whole)]);
    for keep in [jpeg.len() * 2 / 3, jpeg.len() - 2] {
        let cut = dir.path().join(format!("cut-{keep}.jpg"));
        std::fs::write(&cut, &jpeg[..keep]).unwrap();
        let out = trainer(&["predict", "--model", s(&model), "--image", s(&cut)]);
        assert_clean_failure(&out, &[&format!("cut-{keep}.jpg"), "truncated"]);
        assert_eq!(out.status.code(), Some(1));
    }
    let (w, h) = PHOTO;
    let png = gray_png(w, h, &vec![200; w * h]);
    let cut = dir.path().join("cut.png");
    std::fs::write(&cut, &png[..png.len() / 2]).unwrap();
    let out = trainer(&["predict", "--model", s(&model), "--image", s(&cut)]);
    assert_clean_failure(&out, &["cut.png"]);
}

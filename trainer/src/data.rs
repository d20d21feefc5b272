//! Datasets in the standard IDX format (MNIST, Fashion-MNIST), raw or gzipped.
//!
//! A dataset directory holds four files, each either raw or gzipped (`.gz`
//! suffix; the raw file wins when both exist):
//!
//! | file | content |
//! | --- | --- |
//! | [`TRAIN_IMAGES`] | training images |
//! | [`TRAIN_LABELS`] | training labels |
//! | [`TEST_IMAGES`] | test images |
//! | [`TEST_LABELS`] | test labels |
//!
//! An IDX images file is the big-endian `u32` magic `0x00000803`, the
//! big-endian `u32` dimensions count, rows and cols, then `count * rows * cols`
//! pixel bytes. A labels file is the magic `0x00000801`, the count, then one
//! byte per label. [`load`] reads a directory; [`read_pair`] reads one pair of
//! files; [`parse_idx_images`] and [`parse_idx_labels`] parse bytes already in
//! memory; [`encode_idx_images`] and [`encode_idx_labels`] write them.
//!
//! Every failure is an error naming the file, the problem and the fix, never a
//! panic.

use anyhow::{anyhow, bail};
use flate2::read::MultiGzDecoder;
use std::fmt;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

/// A set of equally sized grayscale images with one class label each.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dataset {
    /// All pixels, image after image, row-major, 0 = black, 255 = white.
    pub images: Vec<u8>,
    /// One label per image, in `0..=9`.
    pub labels: Vec<u8>,
    /// Image height in pixels.
    pub rows: usize,
    /// Image width in pixels.
    pub cols: usize,
}

impl Dataset {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// True when the set holds no image.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// Pixels in one image (`rows * cols`).
    pub fn pixels_per_image(&self) -> usize {
        self.rows * self.cols
    }

    /// The pixels of image `index`, or `None` past the end.
    pub fn image(&self, index: usize) -> Option<&[u8]> {
        let n = self.pixels_per_image();
        self.images.get(index * n..(index + 1) * n)
    }
}

/// File name of the training images in a dataset directory.
pub const TRAIN_IMAGES: &str = "train-images-idx3-ubyte";
/// File name of the training labels in a dataset directory.
pub const TRAIN_LABELS: &str = "train-labels-idx1-ubyte";
/// File name of the test images in a dataset directory.
pub const TEST_IMAGES: &str = "t10k-images-idx3-ubyte";
/// File name of the test labels in a dataset directory.
pub const TEST_LABELS: &str = "t10k-labels-idx1-ubyte";

/// Magic number of an IDX images file: unsigned bytes, 3 dimensions.
pub const IMAGES_MAGIC: u32 = 0x0000_0803;
/// Magic number of an IDX labels file: unsigned bytes, 1 dimension.
pub const LABELS_MAGIC: u32 = 0x0000_0801;

/// The largest label the kit accepts: it classifies the ten digits `0..=9`.
const MAX_LABEL: u8 = 9;

/// Classes of the data sets the kit reads: the digits 0–9 (labels above 9 are refused).
pub const CLASSES: usize = MAX_LABEL as usize + 1;

/// The two first bytes of every gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// What to do when a dataset directory or file is missing.
const HOW_TO_GET_DATA: &str = "run `cargo xtask fetch-mnist` to create data/mnist (MNIST), \
or point --data at a directory holding the four IDX files \
train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte and \
t10k-labels-idx1-ubyte (each raw or with a .gz suffix)";

/// Training and test halves of a dataset directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Split {
    /// The training half (`train-*` files).
    pub train: Dataset,
    /// The test half (`t10k-*` files).
    pub test: Dataset,
}

/// The two kinds of IDX file a dataset is made of.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdxKind {
    /// Images: magic `0x00000803`, dimensions count, rows, cols.
    Images,
    /// Labels: magic `0x00000801`, dimension count.
    Labels,
}

impl IdxKind {
    /// The magic number that starts a file of this kind.
    pub const fn magic(self) -> u32 {
        match self {
            Self::Images => IMAGES_MAGIC,
            Self::Labels => LABELS_MAGIC,
        }
    }

    /// Length in bytes of the header (magic and dimensions).
    pub const fn header_len(self) -> usize {
        match self {
            Self::Images => 16,
            Self::Labels => 8,
        }
    }

    /// "images" or "labels".
    const fn noun(self) -> &'static str {
        match self {
            Self::Images => "images",
            Self::Labels => "labels",
        }
    }
}

/// Why bytes are not a valid IDX file of the expected kind, or cannot be
/// encoded as one.
///
/// The messages say what is wrong and how to fix it, but not which file:
/// the file-level functions ([`read_pair`], [`load`]) add the path.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum IdxError {
    /// Fewer bytes than the fixed-size header.
    HeaderTruncated {
        /// The kind of file expected.
        kind: IdxKind,
        /// Bytes the header needs.
        needed: usize,
        /// Bytes present.
        found: usize,
    },
    /// The magic number is not the one of the expected kind.
    WrongMagic {
        /// The kind of file expected.
        expected: IdxKind,
        /// The magic number found.
        found: u32,
    },
    /// An image has zero rows or zero columns.
    ZeroDimension {
        /// Rows per image.
        rows: usize,
        /// Columns per image.
        cols: usize,
    },
    /// `count * rows * cols` overflows: the header is corrupt.
    TooLarge {
        /// Images announced.
        count: usize,
        /// Rows per image.
        rows: usize,
        /// Columns per image.
        cols: usize,
    },
    /// The data after the header is not as long as the header announces.
    LengthMismatch {
        /// The kind of file.
        kind: IdxKind,
        /// Data bytes the header announces.
        expected: usize,
        /// Data bytes present (for gzipped files, at most `expected + 1`: reading stops there).
        found: usize,
    },
    /// A label outside `0..=9`.
    LabelOutOfRange {
        /// Position of the label in the file.
        index: usize,
        /// The label.
        value: u8,
    },
    /// Encoding: the pixel buffer is not a whole number of images.
    NotWholeImages {
        /// Length of the pixel buffer.
        len: usize,
        /// Pixels in one image (`rows * cols`).
        pixels_per_image: usize,
    },
    /// Encoding: a dimension does not fit the `u32` of an IDX header.
    DimensionTooLarge {
        /// The dimension.
        value: usize,
    },
}

impl fmt::Display for IdxError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Self::HeaderTruncated {
                kind,
                needed,
                found,
            } => write!(
                f,
                "header truncated: only {found} bytes, but an IDX {} header needs {needed}; \
                 the file is empty or cut short (truncated download? fetch again)",
                kind.noun()
            ),
            Self::WrongMagic { expected, found } => {
                write!(
                    f,
                    "wrong magic: found {} where an IDX {} file (magic 0x{:08x}) was expected",
                    describe_magic(found),
                    expected.noun(),
                    expected.magic()
                )?;
                let hint = if found == IdxKind::Images.magic() || found == IdxKind::Labels.magic() {
                    "; are the images and labels paths swapped?"
                } else if found >> 16 == u32::from_be_bytes([0, 0, GZIP_MAGIC[0], GZIP_MAGIC[1]]) {
                    "; decompress it first (gunzip)"
                } else {
                    "; is this really an MNIST-style IDX file? fetch it again"
                };
                f.write_str(hint)
            }
            Self::ZeroDimension { rows, cols } => write!(
                f,
                "the header announces {rows}x{cols} images; rows and cols must both be at \
                 least 1 (corrupt header? fetch again)"
            ),
            Self::TooLarge { count, rows, cols } => write!(
                f,
                "the header announces {count} images of {rows}x{cols} pixels, more bytes than \
                 can be addressed; the header is corrupt (fetch again)"
            ),
            Self::LengthMismatch {
                kind,
                expected,
                found,
            } if found < expected => write!(
                f,
                "data length mismatch: the header announces {expected} bytes of {} but only \
                 {found} follow (truncated download? fetch again)",
                kind.noun()
            ),
            Self::LengthMismatch {
                kind,
                expected,
                found,
            } => write!(
                f,
                "data length mismatch: the header announces {expected} bytes of {} but \
                 {found} or more follow; the file is corrupt (fetch again)",
                kind.noun()
            ),
            Self::LabelOutOfRange { index, value } => write!(
                f,
                "label {index} is {value}, above {MAX_LABEL}: the kit classifies ten classes \
                 0-{MAX_LABEL}; use a 10-class dataset such as MNIST or Fashion-MNIST"
            ),
            Self::NotWholeImages {
                len,
                pixels_per_image,
            } => write!(
                f,
                "{len} pixel bytes are not a whole number of images of {pixels_per_image} pixels"
            ),
            Self::DimensionTooLarge { value } => write!(
                f,
                "dimension {value} does not fit the 32-bit field of an IDX header"
            ),
        }
    }
}

impl std::error::Error for IdxError {}

/// Describes a magic number for an error message.
fn describe_magic(magic: u32) -> String {
    let [b0, b1, type_code, dims] = magic.to_be_bytes();
    if magic == IMAGES_MAGIC {
        format!("an images file (magic 0x{magic:08x})")
    } else if magic == LABELS_MAGIC {
        format!("a labels file (magic 0x{magic:08x})")
    } else if [b0, b1] == GZIP_MAGIC {
        "gzip-compressed data (bytes 1f 8b)".to_owned()
    } else if [b0, b1] == [0, 0] {
        format!(
            "an IDX file of element type 0x{type_code:02x} with {dims} dimensions \
             (magic 0x{magic:08x})"
        )
    } else {
        format!("bytes that are not IDX (magic 0x{magic:08x}; IDX starts with two zero bytes)")
    }
}

/// Images parsed from IDX bytes, borrowing the pixels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdxImages<'a> {
    /// Number of images.
    pub count: usize,
    /// Image height in pixels.
    pub rows: usize,
    /// Image width in pixels.
    pub cols: usize,
    /// `count * rows * cols` pixels, image after image, row-major.
    pub pixels: &'a [u8],
}

/// Reads the big-endian `u32` at byte `at`, if present.
fn be_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let end = at.checked_add(4)?;
    let word: [u8; 4] = bytes.get(at..end)?.try_into().ok()?;
    Some(u32::from_be_bytes(word))
}

/// Converts a header dimension to `usize`.
fn dim(value: u32) -> usize {
    // `usize` is at least 32 bits on every target this host code builds for.
    usize::try_from(value).unwrap_or(usize::MAX)
}

/// The parsed header of an IDX file: its dimensions and the data length they announce.
struct Header {
    /// The dimensions, unused trailing ones set to 1.
    dims: [usize; 3],
    /// Data bytes announced: the product of the dimensions.
    data_len: usize,
}

/// Checks the magic and dimensions at the start of `bytes` (the data need not be there).
fn parse_header(bytes: &[u8], kind: IdxKind) -> Result<Header, IdxError> {
    let needed = kind.header_len();
    let truncated = IdxError::HeaderTruncated {
        kind,
        needed,
        found: bytes.len(),
    };
    // Check the magic as soon as it is there: a wrong file is a better diagnosis than a short one.
    let magic = be_u32(bytes, 0).ok_or_else(|| truncated.clone())?;
    if magic != kind.magic() {
        return Err(IdxError::WrongMagic {
            expected: kind,
            found: magic,
        });
    }
    if bytes.len() < needed {
        return Err(truncated);
    }
    let mut dims = [1usize; 3];
    for (i, d) in dims.iter_mut().enumerate().take((needed - 4) / 4) {
        *d = dim(be_u32(bytes, 4 + 4 * i).ok_or_else(|| truncated.clone())?);
    }
    let [count, rows, cols] = dims;
    if kind == IdxKind::Images && (rows == 0 || cols == 0) {
        return Err(IdxError::ZeroDimension { rows, cols });
    }
    let data_len = count
        .checked_mul(rows)
        .and_then(|n| n.checked_mul(cols))
        .filter(|n| n.checked_add(needed).is_some())
        .ok_or(IdxError::TooLarge { count, rows, cols })?;
    Ok(Header { dims, data_len })
}

/// Splits `bytes` into header and data, checking the data length against the header.
fn parse_idx(bytes: &[u8], kind: IdxKind) -> Result<(Header, &[u8]), IdxError> {
    let header = parse_header(bytes, kind)?;
    let data = bytes.get(kind.header_len()..).unwrap_or_default();
    if data.len() != header.data_len {
        return Err(IdxError::LengthMismatch {
            kind,
            expected: header.data_len,
            found: data.len(),
        });
    }
    Ok((header, data))
}

/// Parses an IDX images file already in memory (decompressed).
///
/// Any count and any `rows`, `cols` > 0 are accepted.
///
/// # Errors
///
/// [`IdxError`] when the magic is not [`IMAGES_MAGIC`], the header is cut
/// short, announces zero rows or columns or an impossible size, or the data
/// is not exactly `count * rows * cols` bytes.
pub fn parse_idx_images(bytes: &[u8]) -> Result<IdxImages<'_>, IdxError> {
    let (header, pixels) = parse_idx(bytes, IdxKind::Images)?;
    let [count, rows, cols] = header.dims;
    Ok(IdxImages {
        count,
        rows,
        cols,
        pixels,
    })
}

/// Parses an IDX labels file already in memory (decompressed) and returns the labels.
///
/// # Errors
///
/// [`IdxError`] when the magic is not [`LABELS_MAGIC`], the header is cut
/// short, the data is not exactly `count` bytes, or a label is above 9.
pub fn parse_idx_labels(bytes: &[u8]) -> Result<&[u8], IdxError> {
    let (_, labels) = parse_idx(bytes, IdxKind::Labels)?;
    if let Some((index, &value)) = labels.iter().enumerate().find(|(_, &l)| l > MAX_LABEL) {
        return Err(IdxError::LabelOutOfRange { index, value });
    }
    Ok(labels)
}

/// Converts a dimension to the `u32` of an IDX header.
fn header_u32(value: usize) -> Result<[u8; 4], IdxError> {
    u32::try_from(value)
        .map(u32::to_be_bytes)
        .map_err(|_| IdxError::DimensionTooLarge { value })
}

/// Encodes images of `rows * cols` pixels (image after image, row-major) as an IDX images file.
///
/// # Errors
///
/// [`IdxError::ZeroDimension`] when `rows` or `cols` is 0,
/// [`IdxError::NotWholeImages`] when `pixels` is not a whole number of images,
/// [`IdxError::DimensionTooLarge`] when a dimension exceeds `u32::MAX`.
pub fn encode_idx_images(rows: usize, cols: usize, pixels: &[u8]) -> Result<Vec<u8>, IdxError> {
    if rows == 0 || cols == 0 {
        return Err(IdxError::ZeroDimension { rows, cols });
    }
    let pixels_per_image = rows
        .checked_mul(cols)
        .ok_or(IdxError::DimensionTooLarge { value: usize::MAX })?;
    if pixels.len() % pixels_per_image != 0 {
        return Err(IdxError::NotWholeImages {
            len: pixels.len(),
            pixels_per_image,
        });
    }
    let count = pixels.len() / pixels_per_image;
    let mut out = Vec::with_capacity(IdxKind::Images.header_len() + pixels.len());
    out.extend_from_slice(&IMAGES_MAGIC.to_be_bytes());
    for d in [count, rows, cols] {
        out.extend_from_slice(&header_u32(d)?);
    }
    out.extend_from_slice(pixels);
    Ok(out)
}

/// Encodes labels as an IDX labels file.
///
/// # Errors
///
/// [`IdxError::LabelOutOfRange`] for a label above 9,
/// [`IdxError::DimensionTooLarge`] for more than `u32::MAX` labels.
pub fn encode_idx_labels(labels: &[u8]) -> Result<Vec<u8>, IdxError> {
    if let Some((index, &value)) = labels.iter().enumerate().find(|(_, &l)| l > MAX_LABEL) {
        return Err(IdxError::LabelOutOfRange { index, value });
    }
    let mut out = Vec::with_capacity(IdxKind::Labels.header_len() + labels.len());
    out.extend_from_slice(&LABELS_MAGIC.to_be_bytes());
    out.extend_from_slice(&header_u32(labels.len())?);
    out.extend_from_slice(labels);
    Ok(out)
}

/// Attaches the file path to a parse error.
fn in_file(path: &Path, error: IdxError) -> anyhow::Error {
    anyhow!("{}: {error}", path.display())
}

/// Inflates a gzipped IDX file, reading no more than its header announces
/// (plus one byte, to notice extra data), so a corrupt header cannot make it
/// inflate without bound.
fn gunzip_limited(compressed: &[u8], kind: IdxKind) -> io::Result<Vec<u8>> {
    let mut decoder = MultiGzDecoder::new(compressed);
    let mut out = Vec::new();
    let header_len = u64::try_from(kind.header_len()).unwrap_or(u64::MAX);
    (&mut decoder).take(header_len).read_to_end(&mut out)?;
    // A bad header reads nothing more: the parser then reports it.
    let limit = parse_header(&out, kind).map_or(0, |h| {
        u64::try_from(h.data_len).map_or(u64::MAX, |n| n.saturating_add(1))
    });
    (&mut decoder).take(limit).read_to_end(&mut out)?;
    Ok(out)
}

/// Reads an IDX file of `kind`, inflating it when it starts with the gzip magic.
fn read_idx_file(path: &Path, kind: IdxKind) -> anyhow::Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|e| {
        anyhow!(
            "cannot read IDX {} file {}: {e}",
            kind.noun(),
            path.display()
        )
    })?;
    if !raw.starts_with(&GZIP_MAGIC) {
        return Ok(raw);
    }
    gunzip_limited(&raw, kind).map_err(|e| {
        anyhow!(
            "{}: gzip data truncated or corrupt ({e}); delete the file and fetch it again",
            path.display()
        )
    })
}

/// Reads one images+labels pair of IDX files.
///
/// The paths are used exactly as given; each file may be raw or gzipped, which
/// is decided by the gzip magic bytes `1f 8b`, not by the name.
///
/// # Errors
///
/// An error naming the file, the problem and the fix when a file cannot be
/// read, is corrupt gzip, is not a valid IDX file of its kind (see
/// [`IdxError`]), or when the two files hold different counts.
pub fn read_pair(images: &Path, labels: &Path) -> anyhow::Result<Dataset> {
    let mut image_bytes = read_idx_file(images, IdxKind::Images)?;
    let parsed = parse_idx_images(&image_bytes).map_err(|e| in_file(images, e))?;
    let (count, rows, cols) = (parsed.count, parsed.rows, parsed.cols);
    let label_bytes = read_idx_file(labels, IdxKind::Labels)?;
    let parsed_labels = parse_idx_labels(&label_bytes).map_err(|e| in_file(labels, e))?;
    if parsed_labels.len() != count {
        bail!(
            "count mismatch: {} holds {count} images but {} holds {} labels; \
             both files must come from the same set (both train-* or both t10k-*)",
            images.display(),
            labels.display(),
            parsed_labels.len()
        );
    }
    let labels = parsed_labels.to_vec();
    // Reuse the buffer: drop the header in place rather than copying the pixels.
    image_bytes.drain(..IdxKind::Images.header_len());
    Ok(Dataset {
        images: image_bytes,
        labels,
        rows,
        cols,
    })
}

/// Checks that `dir` is an existing directory.
fn check_dir(dir: &Path) -> anyhow::Result<()> {
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => bail!(
            "{} is a file, not a dataset directory; {HOW_TO_GET_DATA}",
            dir.display()
        ),
        Err(e) if e.kind() == io::ErrorKind::NotFound => bail!(
            "dataset directory {} does not exist; {HOW_TO_GET_DATA}",
            dir.display()
        ),
        Err(e) => bail!("cannot open dataset directory {}: {e}", dir.display()),
    }
}

/// The path of IDX file `name` in `dir`: raw if present, else `.gz`.
fn find_file(dir: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let raw = dir.join(name);
    if raw.is_file() {
        return Ok(raw);
    }
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    bail!(
        "{} holds neither {name} nor {name}.gz; {HOW_TO_GET_DATA}",
        dir.display()
    )
}

/// One half of a dataset directory, with the path of its images file.
fn load_half(dir: &Path, images: &str, labels: &str) -> anyhow::Result<(Dataset, PathBuf)> {
    check_dir(dir)?;
    let images = find_file(dir, images)?;
    let labels = find_file(dir, labels)?;
    Ok((read_pair(&images, &labels)?, images))
}

/// Loads `train-images-idx3-ubyte`, `train-labels-idx1-ubyte`,
/// `t10k-images-idx3-ubyte` and `t10k-labels-idx1-ubyte` from `dir`, each raw
/// or with a `.gz` suffix (raw preferred if both exist).
///
/// # Errors
///
/// As [`read_pair`], plus: `dir` missing (the message says to run
/// `cargo xtask fetch-mnist` or to point `--data` at a dataset directory), a
/// file missing (the message names the expected names), or training and test
/// images of different sizes.
pub fn load(dir: &Path) -> anyhow::Result<Split> {
    let (train, train_path) = load_half(dir, TRAIN_IMAGES, TRAIN_LABELS)?;
    let (test, test_path) = load_half(dir, TEST_IMAGES, TEST_LABELS)?;
    if (train.rows, train.cols) != (test.rows, test.cols) {
        bail!(
            "image size mismatch: training images {} are {}x{} but test images {} are {}x{}; \
             both halves must come from the same dataset",
            train_path.display(),
            train.rows,
            train.cols,
            test_path.display(),
            test.rows,
            test.cols
        );
    }
    Ok(Split { train, test })
}

/// Only the test half of `dir` (the `t10k-*` files); see [`load`].
///
/// # Errors
///
/// As [`load`].
pub fn load_test(dir: &Path) -> anyhow::Result<Dataset> {
    load_half(dir, TEST_IMAGES, TEST_LABELS).map(|(set, _)| set)
}

/// Only the training half of `dir` (the `train-*` files); see [`load`].
///
/// # Errors
///
/// As [`load`].
pub fn load_train(dir: &Path) -> anyhow::Result<Dataset> {
    load_half(dir, TRAIN_IMAGES, TRAIN_LABELS).map(|(set, _)| set)
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::write::GzEncoder;
    use flate2::Compression;
    use std::io::Write;
    use tempfile::TempDir;

    /// A small valid set: `count` images of `rows x cols`, pixel = index mod 256, label = index mod 10.
    fn sample(count: usize, rows: usize, cols: usize) -> Dataset {
        Dataset {
            images: (0..count * rows * cols).map(|i| (i % 256) as u8).collect(),
            labels: (0..count).map(|i| (i % 10) as u8).collect(),
            rows,
            cols,
        }
    }

    fn image_bytes(set: &Dataset) -> Vec<u8> {
        encode_idx_images(set.rows, set.cols, &set.images).expect("valid sample")
    }

    fn label_bytes(set: &Dataset) -> Vec<u8> {
        encode_idx_labels(&set.labels).expect("valid sample")
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
        encoder.write_all(bytes).expect("in-memory write");
        encoder.finish().expect("in-memory write")
    }

    fn write(dir: &Path, name: &str, bytes: &[u8]) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, bytes).expect("write to tempdir");
        path
    }

    /// Writes a full dataset directory: train and test halves, raw or gzipped.
    fn write_dir(dir: &Path, train: &Dataset, test: &Dataset, gz: bool) {
        let files = [
            (TRAIN_IMAGES, image_bytes(train)),
            (TRAIN_LABELS, label_bytes(train)),
            (TEST_IMAGES, image_bytes(test)),
            (TEST_LABELS, label_bytes(test)),
        ];
        for (name, bytes) in files {
            if gz {
                write(dir, &format!("{name}.gz"), &gzip(&bytes));
            } else {
                write(dir, name, &bytes);
            }
        }
    }

    /// The error message of `result`, which must be an error.
    fn message<T: fmt::Debug>(result: anyhow::Result<T>) -> String {
        format!("{:#}", result.expect_err("expected an error"))
    }

    /// Asserts that `text` contains every one of `needles`.
    fn assert_contains(text: &str, needles: &[&str]) {
        for needle in needles {
            assert!(text.contains(needle), "{text:?} lacks {needle:?}");
        }
    }

    fn tempdir() -> TempDir {
        TempDir::new().expect("create tempdir")
    }

    #[test]
    fn parses_valid_bytes() {
        let set = sample(3, 2, 4);
        let images = image_bytes(&set);
        assert_eq!(&images[..4], &[0, 0, 8, 3]);
        assert_eq!(images.len(), 16 + 3 * 2 * 4);
        let parsed = parse_idx_images(&images).expect("valid images");
        assert_eq!((parsed.count, parsed.rows, parsed.cols), (3, 2, 4));
        assert_eq!(parsed.pixels, &set.images[..]);
        let labels = label_bytes(&set);
        assert_eq!(&labels[..8], &[0, 0, 8, 1, 0, 0, 0, 3]);
        assert_eq!(parse_idx_labels(&labels), Ok(&set.labels[..]));
    }

    #[test]
    fn empty_set_is_valid() {
        let set = sample(0, 28, 28);
        let images = image_bytes(&set);
        let parsed = parse_idx_images(&images).expect("valid images");
        assert_eq!(parsed.count, 0);
        assert_eq!(parse_idx_labels(&label_bytes(&set)), Ok(&[][..]));
    }

    #[test]
    fn reads_raw_pair() {
        let dir = tempdir();
        let set = sample(5, 3, 2);
        let images = write(dir.path(), "imgs", &image_bytes(&set));
        let labels = write(dir.path(), "labs", &label_bytes(&set));
        let read = read_pair(&images, &labels).expect("valid pair");
        assert_eq!(read, set);
        assert_eq!(read.image(4), Some(&set.images[24..30]));
    }

    #[test]
    fn reads_gz_pair_by_magic_not_name() {
        let dir = tempdir();
        let set = sample(7, 4, 4);
        // Gzipped without a .gz suffix, raw with one: the content decides.
        let images = write(dir.path(), "imgs", &gzip(&image_bytes(&set)));
        let labels = write(dir.path(), "labs.gz", &label_bytes(&set));
        assert_eq!(read_pair(&images, &labels).expect("valid pair"), set);
    }

    #[test]
    fn loads_raw_and_gz_directories() {
        let (train, test) = (sample(12, 5, 3), sample(4, 5, 3));
        for gz in [false, true] {
            let dir = tempdir();
            write_dir(dir.path(), &train, &test, gz);
            let split = load(dir.path()).expect("valid directory");
            assert_eq!((&split.train, &split.test), (&train, &test));
            assert_eq!(load_train(dir.path()).expect("valid"), train);
            assert_eq!(load_test(dir.path()).expect("valid"), test);
        }
    }

    #[test]
    fn prefers_raw_over_gz() {
        let dir = tempdir();
        let (train, test) = (sample(6, 2, 2), sample(2, 2, 2));
        write_dir(dir.path(), &train, &test, false);
        write_dir(dir.path(), &sample(9, 2, 2), &sample(3, 2, 2), true);
        let split = load(dir.path()).expect("valid directory");
        assert_eq!((split.train, split.test), (train, test));
    }

    #[test]
    fn wrong_magic_names_both_kinds() {
        let dir = tempdir();
        let set = sample(2, 2, 2);
        let images = write(dir.path(), "imgs", &image_bytes(&set));
        let labels = write(dir.path(), "labs", &label_bytes(&set));
        // Swapped paths.
        let text = message(read_pair(&labels, &images));
        assert_contains(
            &text,
            &[
                "labs",
                "wrong magic",
                "labels file",
                "images file",
                "swapped",
            ],
        );
        assert_contains(&text, &["0x00000801", "0x00000803"]);
        // Not IDX at all.
        let junk = write(dir.path(), "junk", b"<html>not found</html>");
        let text = message(read_pair(&junk, &labels));
        assert_contains(&text, &["junk", "wrong magic", "not IDX", "0x3c68746d"]);
        // Other IDX element type.
        let floats = write(dir.path(), "floats", &[0, 0, 0x0d, 3, 0, 0, 0, 0]);
        let text = message(read_pair(&floats, &labels));
        assert_contains(&text, &["floats", "element type 0x0d with 3 dimensions"]);
    }

    #[test]
    fn gzip_bytes_given_to_parser() {
        let gz = gzip(&image_bytes(&sample(1, 1, 1)));
        let text = parse_idx_images(&gz)
            .expect_err("gzip is not IDX")
            .to_string();
        assert_contains(&text, &["gzip", "decompress"]);
    }

    #[test]
    fn header_truncated() {
        let dir = tempdir();
        let set = sample(2, 2, 2);
        let images = write(dir.path(), "imgs", &image_bytes(&set)[..10]);
        let labels = write(dir.path(), "labs", &label_bytes(&set));
        let text = message(read_pair(&images, &labels));
        assert_contains(&text, &["imgs", "header truncated", "10 bytes", "16"]);
        let empty = write(dir.path(), "empty", &[]);
        let text = message(read_pair(&empty, &labels));
        assert_contains(&text, &["empty", "header truncated", "0 bytes"]);
    }

    #[test]
    fn data_length_mismatch_gives_both_numbers() {
        let dir = tempdir();
        let set = sample(3, 2, 2);
        let labels = write(dir.path(), "labs", &label_bytes(&set));
        let mut short = image_bytes(&set);
        short.truncate(short.len() - 5);
        let images = write(dir.path(), "imgs", &short);
        let text = message(read_pair(&images, &labels));
        assert_contains(&text, &["imgs", "12 bytes", "only 7", "fetch again"]);
        let mut long = image_bytes(&set);
        long.push(0);
        let images = write(dir.path(), "long", &long);
        let text = message(read_pair(&images, &labels));
        assert_contains(&text, &["long", "12 bytes", "13 or more", "corrupt"]);
        // The same through gzip.
        let images = write(dir.path(), "short.gz", &gzip(&short));
        let text = message(read_pair(&images, &labels));
        assert_contains(&text, &["short.gz", "12 bytes", "only 7", "fetch again"]);
    }

    #[test]
    fn count_mismatch_names_both_files() {
        let dir = tempdir();
        let images = write(dir.path(), "imgs", &image_bytes(&sample(4, 2, 2)));
        let labels = write(dir.path(), "labs", &label_bytes(&sample(3, 2, 2)));
        let text = message(read_pair(&images, &labels));
        assert_contains(&text, &["imgs", "4 images", "labs", "3 labels"]);
    }

    #[test]
    fn label_above_nine() {
        let dir = tempdir();
        let set = sample(4, 2, 2);
        let images = write(dir.path(), "imgs", &image_bytes(&set));
        let mut bad = label_bytes(&set);
        bad[8 + 2] = 17;
        let labels = write(dir.path(), "labs", &bad);
        let text = message(read_pair(&images, &labels));
        assert_contains(&text, &["labs", "label 2 is 17", "above 9"]);
        assert_eq!(
            encode_idx_labels(&[1, 10]),
            Err(IdxError::LabelOutOfRange {
                index: 1,
                value: 10
            })
        );
    }

    #[test]
    fn truncated_or_corrupt_gz() {
        let dir = tempdir();
        let set = sample(50, 8, 8);
        let labels = write(dir.path(), "labs", &label_bytes(&set));
        let gz = gzip(&image_bytes(&set));
        let images = write(dir.path(), "cut.gz", &gz[..gz.len() - 12]);
        let text = message(read_pair(&images, &labels));
        assert_contains(&text, &["cut.gz", "gzip", "truncated or corrupt", "fetch"]);
        let mut corrupt = gz.clone();
        let middle = corrupt.len() / 2;
        for b in &mut corrupt[middle..middle + 8] {
            *b ^= 0x5a;
        }
        let images = write(dir.path(), "bad.gz", &corrupt);
        let text = message(read_pair(&images, &labels));
        assert_contains(&text, &["bad.gz", "gzip", "truncated or corrupt"]);
        // A broken checksum in the trailer is caught too.
        let mut crc = gz;
        let at = crc.len() - 8;
        crc[at] ^= 1;
        let images = write(dir.path(), "crc.gz", &crc);
        let text = message(read_pair(&images, &labels));
        assert_contains(&text, &["crc.gz", "gzip"]);
    }

    #[test]
    fn missing_directory_says_how_to_get_data() {
        let dir = tempdir();
        let missing = dir.path().join("nope");
        for text in [
            message(load(&missing)),
            message(load_train(&missing)),
            message(load_test(&missing)),
        ] {
            assert_contains(
                &text,
                &[
                    "nope",
                    "does not exist",
                    "cargo xtask fetch-mnist",
                    "--data",
                ],
            );
        }
        let file = write(dir.path(), "plain", b"");
        assert_contains(&message(load(&file)), &["plain", "not a dataset directory"]);
    }

    #[test]
    fn missing_file_names_expected_names() {
        let dir = tempdir();
        write_dir(dir.path(), &sample(3, 2, 2), &sample(1, 2, 2), false);
        std::fs::remove_file(dir.path().join(TEST_LABELS)).expect("remove");
        let text = message(load(dir.path()));
        assert_contains(
            &text,
            &[
                "neither t10k-labels-idx1-ubyte nor t10k-labels-idx1-ubyte.gz",
                "cargo xtask fetch-mnist",
            ],
        );
        // The training half alone is still fine.
        assert!(load_train(dir.path()).is_ok());
    }

    #[test]
    fn train_and_test_sizes_must_match() {
        let dir = tempdir();
        write_dir(dir.path(), &sample(3, 28, 28), &sample(2, 32, 32), true);
        let text = message(load(dir.path()));
        assert_contains(
            &text,
            &[
                "train-images-idx3-ubyte.gz",
                "28x28",
                "t10k-images-idx3-ubyte.gz",
                "32x32",
            ],
        );
    }

    #[test]
    fn absurd_headers_fail_without_allocating() {
        let max = u32::MAX.to_be_bytes();
        let mut header = IMAGES_MAGIC.to_be_bytes().to_vec();
        for _ in 0..3 {
            header.extend_from_slice(&max);
        }
        // 2^96 bytes overflow: corrupt header.
        let err = parse_idx_images(&header).expect_err("overflow");
        assert!(matches!(err, IdxError::TooLarge { .. }), "{err:?}");
        // Huge but representable: a length mismatch, not an allocation.
        let mut big = IMAGES_MAGIC.to_be_bytes().to_vec();
        for d in [u32::MAX, 28, 28] {
            big.extend_from_slice(&d.to_be_bytes());
        }
        big.extend_from_slice(&[0; 100]);
        let err = parse_idx_images(&big).expect_err("mismatch");
        assert_contains(&err.to_string(), &["3367254359280 bytes", "only 100"]);
        // Same through a gzipped file: the decoder stops at the data present.
        let dir = tempdir();
        let images = write(dir.path(), "big.gz", &gzip(&big));
        let labels = write(dir.path(), "labs", &label_bytes(&sample(1, 1, 1)));
        let text = message(read_pair(&images, &labels));
        assert_contains(&text, &["big.gz", "3367254359280 bytes", "only 100"]);
        // Zero rows or columns.
        let mut zero = IMAGES_MAGIC.to_be_bytes().to_vec();
        for d in [5u32, 0, 28] {
            zero.extend_from_slice(&d.to_be_bytes());
        }
        let err = parse_idx_images(&zero).expect_err("zero rows");
        assert_contains(&err.to_string(), &["0x28", "at least 1"]);
    }

    #[test]
    fn every_truncation_is_an_error() {
        let set = sample(3, 3, 2);
        let images = image_bytes(&set);
        let labels = label_bytes(&set);
        for n in 0..images.len() {
            assert!(parse_idx_images(&images[..n]).is_err(), "images cut at {n}");
        }
        for n in 0..labels.len() {
            assert!(parse_idx_labels(&labels[..n]).is_err(), "labels cut at {n}");
        }
        // Every truncation of the gzipped file too, through the file reader.
        let dir = tempdir();
        let labels = write(dir.path(), "labs", &labels);
        let gz = gzip(&images);
        for n in 0..gz.len() {
            let path = write(dir.path(), "imgs.gz", &gz[..n]);
            let text = message(read_pair(&path, &labels));
            assert!(text.contains("imgs.gz"), "gzip cut at {n}: {text}");
        }
    }

    #[test]
    fn encoders_reject_bad_shapes() {
        assert_eq!(
            encode_idx_images(2, 2, &[0; 7]),
            Err(IdxError::NotWholeImages {
                len: 7,
                pixels_per_image: 4
            })
        );
        assert_eq!(
            encode_idx_images(0, 2, &[]),
            Err(IdxError::ZeroDimension { rows: 0, cols: 2 })
        );
    }
}

/// Bytes of one record of the firmware's digits file: a label, then 28×28 pixels.
pub const DIGIT_RECORD_LEN: usize = 1 + 28 * 28;

/// The first `count` images of `dataset` as the firmware's digits file: `count` records of
/// `[label: u8][784 pixels: u8, row-major]` (read by `firmware-example/build.rs`).
///
/// # Errors
/// If the images are not 28×28, `count` is 0 or larger than the dataset.
pub fn digit_records(dataset: &Dataset, count: usize) -> anyhow::Result<Vec<u8>> {
    anyhow::ensure!(
        (dataset.rows, dataset.cols) == (28, 28),
        "the firmware takes 28x28 images but the dataset has {}x{}",
        dataset.rows,
        dataset.cols
    );
    anyhow::ensure!(count > 0, "the digits file needs at least one image");
    anyhow::ensure!(
        count <= dataset.len(),
        "cannot take {count} images: the dataset has only {}",
        dataset.len()
    );
    let mut bytes = Vec::with_capacity(count * DIGIT_RECORD_LEN);
    for (label, pixels) in dataset
        .labels
        .iter()
        .zip(dataset.images.chunks_exact(28 * 28))
        .take(count)
    {
        bytes.push(*label);
        bytes.extend_from_slice(pixels);
    }
    Ok(bytes)
}

#[cfg(test)]
mod digit_record_tests {
    use super::*;

    fn dataset(n: usize) -> Dataset {
        Dataset {
            images: (0..n * 784).map(|i| (i % 251) as u8).collect(),
            labels: (0..n).map(|i| (i % 10) as u8).collect(),
            rows: 28,
            cols: 28,
        }
    }

    #[test]
    fn records_are_label_then_pixels() {
        let set = dataset(5);
        let bytes = digit_records(&set, 3).unwrap();
        assert_eq!(bytes.len(), 3 * DIGIT_RECORD_LEN);
        for (index, record) in bytes.chunks_exact(DIGIT_RECORD_LEN).enumerate() {
            assert_eq!(record[0], set.labels[index]);
            assert_eq!(Some(&record[1..]), set.image(index));
        }
    }

    #[test]
    fn bad_counts_and_shapes_are_refused() {
        assert!(digit_records(&dataset(2), 0).is_err());
        assert!(digit_records(&dataset(2), 3).is_err());
        let mut small = dataset(2);
        small.rows = 14;
        small.cols = 56;
        assert!(digit_records(&small, 1).is_err());
    }
}

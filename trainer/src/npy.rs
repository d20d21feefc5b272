//! NumPy `.npy` files of int8, int32 and float32 arrays (little-endian, C order): what
//! `trainer infer` reads and writes, and what the TFLite golden fixtures are stored as.
//!
//! Format versions 1.0, 2.0 and 3.0 are read; 1.0 is written (2.0 when the header needs it).
//! The header is the Python dict literal NumPy writes: `{'descr': '<f4', 'fortran_order':
//! False, 'shape': (100, 28, 28, 1), }`.

use anyhow::{bail, ensure, Context, Result};

const MAGIC: &[u8] = b"\x93NUMPY";

/// The elements of an array.
#[derive(Debug, Clone, PartialEq)]
pub enum Elements {
    /// `int8` (`|i1`).
    I8(Vec<i8>),
    /// `int32` (`<i4`).
    I32(Vec<i32>),
    /// `float32` (`<f4`).
    F32(Vec<f32>),
}

impl Elements {
    /// Number of elements.
    pub fn len(&self) -> usize {
        match self {
            Elements::I8(v) => v.len(),
            Elements::I32(v) => v.len(),
            Elements::F32(v) => v.len(),
        }
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// NumPy's name of the type.
    pub fn type_name(&self) -> &'static str {
        match self {
            Elements::I8(_) => "int8",
            Elements::I32(_) => "int32",
            Elements::F32(_) => "float32",
        }
    }

    fn descr(&self) -> &'static str {
        match self {
            Elements::I8(_) => "|i1",
            Elements::I32(_) => "<i4",
            Elements::F32(_) => "<f4",
        }
    }
}

/// An array: its shape and its elements in C order.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    /// Dimensions (empty for a scalar).
    pub shape: Vec<usize>,
    /// `shape`'s product of elements.
    pub elements: Elements,
}

impl Array {
    /// Reads `.npy` bytes.
    ///
    /// # Errors
    /// Not an `.npy` file, a header it cannot read, a type other than int8 / int32 /
    /// float32 (little-endian), Fortran order, or a data length that disagrees with the shape.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        ensure!(
            bytes.starts_with(MAGIC),
            "not a NumPy .npy file (no \\x93NUMPY magic)"
        );
        let major = *bytes.get(6).context("truncated .npy header")?;
        let (header_len, start): (usize, usize) = match major {
            1 => {
                let b = bytes.get(8..10).context("truncated .npy header")?;
                (usize::from(u16::from_le_bytes([b[0], b[1]])), 10)
            }
            2 | 3 => {
                let b = bytes.get(8..12).context("truncated .npy header")?;
                let len = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                (usize::try_from(len).context("huge .npy header")?, 12)
            }
            v => bail!(".npy format version {v} (this reads 1, 2 and 3)"),
        };
        let end = start.checked_add(header_len).context("huge .npy header")?;
        let header = bytes.get(start..end).context("truncated .npy header")?;
        let header = std::str::from_utf8(header).context("a .npy header that is not text")?;
        let descr = dict_value(header, "descr")?;
        let descr = descr.trim_matches(|c| c == '\'' || c == '"');
        ensure!(
            dict_value(header, "fortran_order")? == "False",
            "a Fortran-order .npy array (write it in C order)"
        );
        let shape = parse_shape(dict_value(header, "shape")?)?;
        let count = shape
            .iter()
            .try_fold(1usize, |n, &d| n.checked_mul(d))
            .context("a .npy shape too large")?;
        let data = &bytes[end..];
        let size = match descr {
            "|i1" | "<i1" | "i1" => 1,
            "<i4" | "<f4" => 4,
            other => bail!(
                ".npy elements of type {other:?} (this reads int8 '|i1', int32 '<i4' and \
                 float32 '<f4')"
            ),
        };
        ensure!(
            Some(data.len()) == count.checked_mul(size),
            ".npy data of {} bytes for shape {shape:?} of {descr} ({count} elements)",
            data.len()
        );
        let elements = match descr {
            "<i4" => Elements::I32(
                data.chunks_exact(4)
                    .map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            "<f4" => Elements::F32(
                data.chunks_exact(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect(),
            ),
            _ => Elements::I8(data.iter().map(|&b| b as i8).collect()),
        };
        Ok(Self { shape, elements })
    }

    /// The `.npy` bytes of the array (format 1.0, or 2.0 for a header over 65,535 bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        let dims: Vec<String> = self.shape.iter().map(usize::to_string).collect();
        let shape = match dims.len() {
            1 => format!("({},)", dims[0]),
            _ => format!("({})", dims.join(", ")),
        };
        let mut header = format!(
            "{{'descr': '{}', 'fortran_order': False, 'shape': {shape}, }}",
            self.elements.descr()
        );
        // Data aligned to 64 bytes, the header ending in a newline, as NumPy writes it.
        let prefix = if header.len() + 11 > usize::from(u16::MAX) {
            12
        } else {
            10
        };
        while (prefix + header.len() + 1) % 64 != 0 {
            header.push(' ');
        }
        header.push('\n');
        let mut out = Vec::with_capacity(prefix + header.len() + 4 * self.elements.len());
        out.extend_from_slice(MAGIC);
        if prefix == 10 {
            out.extend_from_slice(&[1, 0]);
            out.extend_from_slice(&(header.len() as u16).to_le_bytes());
        } else {
            out.extend_from_slice(&[2, 0]);
            out.extend_from_slice(&(header.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(header.as_bytes());
        match &self.elements {
            Elements::I8(v) => out.extend(v.iter().map(|&x| x as u8)),
            Elements::I32(v) => out.extend(v.iter().flat_map(|x| x.to_le_bytes())),
            Elements::F32(v) => out.extend(v.iter().flat_map(|x| x.to_le_bytes())),
        }
        out
    }
}

/// The text of `key`'s value in the header dict: up to the next `,` outside parentheses, or
/// the closing `}`.
fn dict_value<'h>(header: &'h str, key: &str) -> Result<&'h str> {
    let quoted = [format!("'{key}'"), format!("\"{key}\"")];
    let at = quoted
        .iter()
        .find_map(|k| header.find(k.as_str()).map(|i| i + k.len()))
        .with_context(|| format!("the .npy header has no '{key}'"))?;
    let rest = header[at..].trim_start();
    let rest = rest
        .strip_prefix(':')
        .with_context(|| format!("the .npy header's '{key}' has no value"))?
        .trim_start();
    let mut depth = 0i32;
    for (i, c) in rest.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' | '}' if depth <= 0 => return Ok(rest[..i].trim()),
            _ => {}
        }
    }
    bail!("the .npy header's '{key}' is not terminated")
}

/// `(100, 28, 28, 1)`, `(5,)` or `()`.
fn parse_shape(text: &str) -> Result<Vec<usize>> {
    let inner = text
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .with_context(|| format!("a .npy shape {text:?} that is not a tuple"))?;
    inner
        .split(',')
        .map(str::trim)
        .filter(|d| !d.is_empty())
        .map(|d| {
            d.trim_end_matches('L')
                .parse::<usize>()
                .with_context(|| format!("a .npy dimension {d:?}"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_every_type_and_shape() {
        for (shape, elements) in [
            (vec![2, 3], Elements::I8(vec![-128, -1, 0, 1, 2, 127])),
            (vec![3], Elements::I32(vec![i32::MIN, 0, i32::MAX])),
            (vec![1, 2, 1], Elements::F32(vec![-0.5, 3.25])),
            (vec![], Elements::F32(vec![7.0])),
        ] {
            let array = Array { shape, elements };
            let bytes = array.to_bytes();
            let header_end = bytes.iter().position(|&b| b == b'\n').unwrap() + 1;
            assert_eq!(header_end % 64, 0);
            assert_eq!(Array::from_bytes(&bytes).unwrap(), array);
        }
    }

    #[test]
    fn reads_numpy_headers_and_refuses_bad_files() {
        let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
        let header = "{'descr': '|i1', 'fortran_order': False, 'shape': (2, 2), }\n";
        bytes.extend_from_slice(&(header.len() as u16).to_le_bytes());
        bytes.extend_from_slice(header.as_bytes());
        bytes.extend_from_slice(&[1, 2, 3, 0xff]);
        let a = Array::from_bytes(&bytes).unwrap();
        assert_eq!(a.shape, [2, 2]);
        assert_eq!(a.elements, Elements::I8(vec![1, 2, 3, -1]));
        let err = |b: &[u8]| Array::from_bytes(b).unwrap_err().to_string();
        assert!(err(&bytes[..bytes.len() - 1]).contains("data of 3 bytes"));
        assert!(err(b"PK\x03\x04").contains("not a NumPy"));
        for cut in 0..bytes.len() - 4 {
            assert!(Array::from_bytes(&bytes[..cut]).is_err());
        }
        let mut float64 = bytes.clone();
        let at = float64.windows(3).position(|w| w == b"|i1").unwrap();
        float64[at..at + 3].copy_from_slice(b"<f8");
        assert!(err(&float64).contains("\"<f8\""));
    }
}

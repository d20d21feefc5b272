//! A model.bin that travelled badly — cut short by a serial line, a bit flipped in flash —
//! is refused with the right [`Error`], never loaded and never a panic.
//!
//! Exhaustive on the real trained model the firmware ships
//! (`firmware-example/assets/model.bin`, ~55 KB): every truncation (each length 0..n)
//! and every single-bit flip (each of the 8n bits), through the loader the firmware uses
//! ([`TutorialNet::from_bytes`]). The flips are spread over the machine's cores; each one
//! costs a CRC over the whole file, ~25 GB of CRC in all (seconds in `--release`).

use e2e_tests::workspace_root;
use infer_core::format::{crc32, ModelFile, CRC_LEN, FORMAT_VERSION, HEADER_LEN, MAGIC};
use infer_core::{Error, TutorialNet};
use std::sync::OnceLock;

/// The committed real model.
fn real_model() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let path = workspace_root().join("firmware-example/assets/model.bin");
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(
            TutorialNet::from_bytes(&bytes).is_ok(),
            "{} must be a valid TutorialNet model",
            path.display()
        );
        bytes
    })
}

/// Every case in `--release` (as `cargo xtask test` and CI run it); in an unoptimised
/// build, where infer-core's CRC is some 30 times slower, every 61st of each thread's share.
const STRIDE: usize = if cfg!(debug_assertions) { 61 } else { 1 };

/// Runs `check(&mut copy, i)` for every `i` in `0..n` (see [`STRIDE`]), split over the
/// available cores; `copy` is the thread's own copy of the real model, to be restored by
/// `check`.
fn par_for(n: usize, check: impl Fn(&mut [u8], usize) + Sync) {
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let chunk = n.div_ceil(threads);
    std::thread::scope(|s| {
        for t in 0..threads {
            let check = &check;
            s.spawn(move || {
                let mut copy = real_model().to_vec();
                for i in (t * chunk..((t + 1) * chunk).min(n)).step_by(STRIDE) {
                    check(&mut copy, i);
                }
            });
        }
    });
}

/// Every prefix is refused:
/// * shorter than magic + version + CRC (10 bytes): `Truncated` — a prefix of the magic is
///   still the magic, so the loader knows it is a model.bin that ends too early;
/// * 10 bytes or more: `ChecksumMismatch` — the loader cannot know where the file should
///   end, so it reads the last four bytes of the prefix as the CRC. Those are weight bytes,
///   not the CRC of what precedes them, and the check fails. (A prefix whose last four
///   bytes happened to equal the CRC of the rest would be a 2^-32 accident; this test pins
///   that none of this model's prefixes is one.)
#[test]
fn every_truncation_is_refused_as_truncated_or_corrupt() {
    let bytes = real_model();
    let needed = HEADER_LEN + CRC_LEN;
    par_for(bytes.len(), |_, len| {
        let prefix = &bytes[..len];
        let got = TutorialNet::from_bytes(prefix).map(|_| ());
        let want = if len < needed {
            Error::Truncated { len, needed }
        } else {
            let (body, crc) = prefix.split_at(len - CRC_LEN);
            Error::ChecksumMismatch {
                stored: u32::from_le_bytes(crc.try_into().expect("4 bytes")),
                computed: crc32(body),
            }
        };
        assert_eq!(
            got,
            Err(want),
            "truncated to {len} of {} bytes",
            bytes.len()
        );
    });
}

/// Every single-bit flip is refused, by the first check that covers the bit:
/// * in the magic (bytes 0–3): `BadMagic`, with the flipped bytes;
/// * in the version (bytes 4–5): `UnsupportedVersion`, naming the flipped version and 1 —
///   the version is read before the CRC so a newer file is reported as newer, not corrupt;
/// * anywhere else, body or CRC: `ChecksumMismatch`. CRC-32's generator polynomial has
///   more than one term, so it detects every single-bit error in the codeword; a flip
///   in the body changes the computed CRC, a flip in the CRC changes the stored one.
#[test]
fn every_bit_flip_is_refused_with_the_right_error() {
    let bytes = real_model();
    let n = bytes.len();
    let crc = crc32(&bytes[..n - CRC_LEN]);
    assert_eq!(bytes[n - CRC_LEN..], crc.to_le_bytes());
    par_for(n * 8, |flipped, bit| {
        let (at, mask) = (bit / 8, 1u8 << (bit % 8));
        flipped[at] ^= mask;
        let got = TutorialNet::from_bytes(flipped).map(|_| ());
        let ok = match got {
            Err(Error::BadMagic { found }) => at < 4 && found[..] == flipped[..4],
            Err(Error::UnsupportedVersion { found, supported }) => {
                (4..6).contains(&at)
                    && supported == FORMAT_VERSION
                    && found == FORMAT_VERSION ^ (u16::from(mask) << (8 * (at - 4)))
            }
            Err(Error::ChecksumMismatch { stored, computed }) => {
                if at >= n - CRC_LEN {
                    // The CRC itself was hit: the body is intact.
                    computed == crc && stored == crc ^ (u32::from(mask) << (8 * (at + CRC_LEN - n)))
                } else {
                    // Checking `computed` exactly costs one more CRC; do it on a sample.
                    at >= HEADER_LEN
                        && stored == crc
                        && (bit % 1009 != 0 || computed == crc32(&flipped[..n - CRC_LEN]))
                }
            }
            _ => false,
        };
        assert!(ok, "bit {bit} (byte {at}) flipped: {got:?}");
        flipped[at] ^= mask;
    });
}

/// The real model's content, re-encoded with one field changed.
fn reencode(edit: impl FnOnce(&mut ModelFile<'_>)) -> Vec<u8> {
    let mut model = ModelFile::decode(real_model()).expect("real model decodes");
    edit(&mut model);
    let mut buf = vec![0u8; real_model().len() + 64];
    let len = model.encode(&mut buf).expect("fits").len();
    buf.truncate(len);
    buf
}

fn message(bytes: &[u8]) -> String {
    TutorialNet::from_bytes(bytes)
        .map(|_| ())
        .expect_err("must be refused")
        .to_string()
}

fn assert_contains(text: &str, words: &[&str]) {
    for word in words {
        assert!(text.contains(word), "{text:?} lacks {word:?}");
    }
}

#[test]
fn another_format_version_names_both_versions() {
    let bytes = reencode(|m| m.version = 2);
    assert_eq!(
        TutorialNet::from_bytes(&bytes).map(|_| ()),
        Err(Error::UnsupportedVersion {
            found: 2,
            supported: 1
        })
    );
    assert_contains(
        &message(&bytes),
        &["format version 2", "reads version 1", "re-export"],
    );
    // A version this build does not read is reported as such even though the CRC is right:
    // the version is checked before anything version-specific.
    assert_eq!(&bytes[..4], &MAGIC);
}

#[test]
fn a_model_of_other_shapes_names_both_shapes() {
    // The same network with 16 filters instead of 32: consistent in itself.
    let bytes = reencode(|m| {
        let (c, d) = (&mut m.conv.params, &mut m.dense.params);
        m.conv.filters = 16;
        c.weights = &c.weights[..16 * 9];
        c.weight_scales = &c.weight_scales[..16 * 4];
        c.bias = &c.bias[..16 * 4];
        c.multiplier = &c.multiplier[..16 * 4];
        c.shift = &c.shift[..16];
        m.dense.inputs = 13 * 13 * 16;
        d.weights = &d.weights[..10 * 13 * 13 * 16];
    });
    assert!(ModelFile::decode(&bytes).is_ok(), "a valid model in itself");
    assert_eq!(
        TutorialNet::from_bytes(&bytes).map(|_| ()),
        Err(Error::ShapeMismatch {
            layer: "conv",
            found: [3, 3, 1, 16],
            compiled: [3, 3, 1, 32]
        })
    );
    assert_contains(
        &message(&bytes),
        &["conv", "3×3×1×16 in the file", "3×3×1×32 compiled"],
    );

    // Eight classes instead of ten.
    let bytes = reencode(|m| {
        let d = &mut m.dense.params;
        m.dense.units = 8;
        d.weights = &d.weights[..8 * 5408];
        d.weight_scales = &d.weight_scales[..8 * 4];
        d.bias = &d.bias[..8 * 4];
        d.multiplier = &d.multiplier[..8 * 4];
        d.shift = &d.shift[..8];
    });
    assert_contains(
        &message(&bytes),
        &["dense", "5408×8 in the file", "5408×10 compiled"],
    );
}

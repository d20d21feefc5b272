//! A model.bin that travelled badly — cut short by a serial line, a bit flipped in flash —
//! is refused with the right [`Error`], never loaded and never a panic.
//!
//! Exhaustive on the real trained model the firmware ships
//! (`firmware-example/assets/model.bin`, the tutorial's network in format 2, ~55 KB): every
//! truncation (each length 0..n) and every single-bit flip (each of the 8n bits), through
//! the loader the firmware's generated code uses ([`StackFile::decode`], then the typed
//! network's shape check). The flips are spread over the machine's cores; each one costs a
//! CRC over the whole file, ~25 GB of CRC in all (seconds in `--release`).

use e2e_tests::stack_model::random_model;
use e2e_tests::workspace_root;
use infer_core::format::{crc32, CRC_LEN, HEADER_LEN};
use infer_core::stack::layers::{ConvPoolDense3x3, Layer};
use infer_core::stack::{StackFile, STACK_FORMAT_VERSION};
use infer_core::Error;
use model_spec::plan::Plan;
use model_spec::spec::Spec;
use std::sync::OnceLock;

/// The tutorial's network, as the firmware's build generates it for the committed model.
type Tutorial<'a> = ConvPoolDense3x3<'a, 28, 28, 32, 10, true, false>;

/// Loads `bytes` as the firmware does: decode and check, then check against the network.
fn load(bytes: &[u8]) -> Result<(), Error> {
    let file = StackFile::decode(bytes)?;
    Tutorial::from_file(&file, 0).map(|_| ())
}

/// The committed real model.
fn real_model() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let path = workspace_root().join("firmware-example/assets/model.bin");
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            load(&bytes),
            Ok(()),
            "{} must be the tutorial's network",
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
            load(prefix),
            Err(want),
            "truncated to {len} of {} bytes",
            bytes.len()
        );
    });
}

/// Every single-bit flip is refused, by the first check that covers the bit:
/// * in the magic (bytes 0–3): `BadMagic`, with the flipped bytes;
/// * in the version (bytes 4–5): `UnsupportedVersion`, naming the flipped version and the
///   one this build reads — the version is read before the CRC so a newer file is reported
///   as newer (and an older one as retired), not as corrupt;
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
        let got = load(flipped);
        let ok = match got {
            Err(Error::BadMagic { found }) => at < 4 && found[..] == flipped[..4],
            Err(Error::UnsupportedVersion { found, supported }) => {
                (4..6).contains(&at)
                    && supported == STACK_FORMAT_VERSION
                    && found == STACK_FORMAT_VERSION ^ (u16::from(mask) << (8 * (at - 4)))
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

/// The real model with its version field set to `version` and the CRC fixed up.
fn with_version(version: u16) -> Vec<u8> {
    let mut bytes = real_model().to_vec();
    bytes[4..6].copy_from_slice(&version.to_le_bytes());
    let body = bytes.len() - CRC_LEN;
    let crc = crc32(&bytes[..body]);
    bytes[body..].copy_from_slice(&crc.to_le_bytes());
    bytes
}

fn message(bytes: &[u8]) -> String {
    load(bytes).expect_err("must be refused").to_string()
}

fn assert_contains(text: &str, words: &[&str]) {
    for word in words {
        assert!(text.contains(word), "{text:?} lacks {word:?}");
    }
}

#[test]
fn a_retired_format_names_its_version_and_the_command_that_writes_a_current_one() {
    // Format 1, the tutorial-only format: retired. Refused by its version even though the
    // CRC is right — the version is checked before anything version-specific.
    let bytes = with_version(1);
    assert_eq!(
        load(&bytes),
        Err(Error::UnsupportedVersion {
            found: 1,
            supported: STACK_FORMAT_VERSION
        })
    );
    assert_contains(
        &message(&bytes),
        &[
            "format version 1, which is retired",
            "`trainer fit --out model.bin`",
        ],
    );
    // A newer version is reported as such, not as retired.
    let newer = STACK_FORMAT_VERSION + 1;
    let text = message(&with_version(newer));
    assert_contains(
        &text,
        &[
            &format!("format version {newer}"),
            &format!("reads version {STACK_FORMAT_VERSION}"),
        ],
    );
    assert!(!text.contains("retired"), "{text}");
}

#[test]
fn a_model_of_other_shapes_names_the_operation_and_both_values() {
    // The tutorial's network with 16 filters instead of 32: valid in itself.
    let tutorial = std::fs::read_to_string(workspace_root().join("models/tutorial.toml"))
        .expect("models/tutorial.toml");
    let narrow = tutorial.replace("filters = 32", "filters = 16");
    assert_ne!(narrow, tutorial);
    let plan = Plan::of(&Spec::parse(&narrow).expect("spec")).expect("plan");
    let bytes = random_model(&plan, 1).expect("a model");
    assert!(StackFile::decode(&bytes).is_ok(), "a valid model in itself");
    assert_eq!(
        load(&bytes),
        Err(Error::OpMismatch {
            op: 0,
            what: "conv2d filters",
            found: 16,
            compiled: 32
        })
    );
    assert_contains(
        &message(&bytes),
        &["operation 0's conv2d filters is 16 in the file, 32 compiled"],
    );

    // Eight classes instead of ten.
    let eight = tutorial.replace("units = 10", "units = 8");
    assert_ne!(eight, tutorial);
    let plan = Plan::of(&Spec::parse(&eight).expect("spec")).expect("plan");
    let bytes = random_model(&plan, 2).expect("a model");
    assert_contains(
        &message(&bytes),
        &["operation 2's dense units is 8 in the file, 10 compiled"],
    );
}

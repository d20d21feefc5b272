//! The bodies of the cargo-fuzz targets in `fuzz/`, here so that the stable test
//! `tests/tests/fuzz_bodies.rs` runs exactly the same checks over the seed corpus and
//! pseudo-random inputs on every `cargo test`.
//!
//! Each body takes arbitrary bytes and panics only when a property fails: the code under
//! test must refuse bad bytes with an error, never panic, and uphold the stated
//! invariants on the bytes it accepts.

use infer_core::format::{crc32, ChannelParams, InputSpec, QuantParams, CRC_LEN};
use infer_core::stack::format::{ConvOp, DenseOp, Padding, PoolOp};
use infer_core::stack::{BufferSizes, Kernels, Op, Pixels, StackFile};
use std::path::{Path, PathBuf};
use trainer::data::{parse_idx_images, parse_idx_labels, read_pair};
use trainer::eval::StackBuffers;

/// `stack_loader`: bytes → [`StackFile::decode`] (model.bin format 2) → if the model loads and
/// is small enough to run quickly, one inference on an input taken from the same bytes with
/// the fast kernels and with the reference kernels, which must agree bit for bit.
///
/// The bytes are tried as given, then with their last four bytes replaced by the right
/// CRC-32: as given, almost every mutation stops at the checksum; fixed up, the fuzzer
/// reaches the postcard decoder, the validation and the kernels. A model that decodes
/// must also re-encode to a model that decodes equal.
///
/// Returns how many inferences ran (0 to 2).
pub fn stack_loader(data: &[u8]) -> usize {
    let mut inferences = run_stack(data);
    if let Some(body_len) = data.len().checked_sub(CRC_LEN) {
        let mut fixed = data.to_vec();
        let crc = crc32(&fixed[..body_len]);
        fixed[body_len..].copy_from_slice(&crc.to_le_bytes());
        inferences += run_stack(&fixed);
        stack_round_trip(&fixed);
    }
    inferences
}

fn stack_round_trip(bytes: &[u8]) {
    let Ok(file) = StackFile::decode(bytes) else {
        return;
    };
    let mut buf = vec![0u8; bytes.len()];
    let encoded = file.encode(&mut buf).expect("re-encodes in as many bytes");
    assert_eq!(StackFile::decode(encoded), Ok(file));
}

/// Multiply-accumulates of one inference, saturating.
fn stack_macs(file: &StackFile<'_>) -> usize {
    file.ops
        .iter()
        .map(|op| match op {
            Op::Conv2d(_) | Op::Conv2dRect(..) => op
                .out_len()
                .saturating_mul(op.conv().map_or(0, |(_, g)| g.taps())),
            Op::DepthwiseConv2d(d) => op
                .out_len()
                .saturating_mul(usize::from(d.window.rows) * usize::from(d.window.cols)),
            Op::Dense(d) => (d.inputs as usize).saturating_mul(usize::from(d.units)),
            Op::MaxPool2d(_) | Op::Add(_) => op.in_len(),
            Op::Branch(_) => 0,
            Op::AvgPool2d(p) => op
                .out_len()
                .saturating_mul(usize::from(p.window.rows) * usize::from(p.window.cols)),
        })
        .fold(0usize, usize::saturating_add)
}

fn run_stack(bytes: &[u8]) -> usize {
    let file = match StackFile::decode(bytes) {
        Ok(file) => file,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return 0;
        }
    };
    let sizes = BufferSizes::of(&file, Pixels::Four);
    let image = usize::from(file.input.height)
        * usize::from(file.input.width)
        * usize::from(file.input.channels);
    // Decoding is what the fuzzer is after; huge shapes only cost time in the kernels.
    if image > 1 << 16 || sizes.arena > 3 << 20 || stack_macs(&file) > 1 << 22 {
        return 0;
    }
    let pixels: Vec<u8> = (0..image).map(|i| bytes[i * 31 % bytes.len()]).collect();
    let mut buffers = StackBuffers::new(&file);
    let mut logits = |kernels| {
        buffers
            .logits(&file, &pixels, kernels)
            .expect("buffers of BufferSizes suffice")
            .to_vec()
    };
    let fast = logits(Kernels::Fast);
    let reference = logits(Kernels::Reference);
    assert_eq!(fast, reference, "fast and reference kernels disagree");
    assert_eq!(fast.len(), file.classes());
    1
}

/// The `stack_loader` seed (`fuzz/seeds/stack_loader/small.bin`): a 6×6×2 input, conv 3×3
/// same stride 2 with ReLU (3 filters), conv 2×2 valid (2 filters), max-pool 1, dense 2→2 —
/// every kind of operation and option in about 200 bytes, with deterministic parameters.
pub fn stack_seed() -> Vec<u8> {
    let mut state = 0x5eed_57acu32;
    let mut byte = move || {
        state ^= state << 13;
        state ^= state >> 17;
        state ^= state << 5;
        state as u8
    };
    let arrays = |channels: usize, weights: usize, byte: &mut dyn FnMut() -> u8| {
        let w: Vec<u8> = (0..weights).map(|_| byte()).collect();
        let scales: Vec<u8> = (0..channels).flat_map(|_| 0.02f32.to_le_bytes()).collect();
        let bias: Vec<u8> = (0..channels)
            .flat_map(|_| (i32::from(byte() as i8) * 4).to_le_bytes())
            .collect();
        let mult: Vec<u8> = (0..channels)
            .flat_map(|_| ((1i32 << 30) + (i32::from(byte()) << 20)).to_le_bytes())
            .collect();
        let shift: Vec<u8> = (0..channels).map(|_| (-6i8) as u8).collect();
        (w, scales, bias, mult, shift)
    };
    let owned = [
        arrays(3, 3 * 9 * 2, &mut byte),
        arrays(2, 2 * 4 * 3, &mut byte),
        arrays(2, 2 * 2, &mut byte),
    ];
    let params = |i: usize, zero_point: i32| ChannelParams {
        weights: &owned[i].0,
        weight_scales: &owned[i].1,
        bias: &owned[i].2,
        multiplier: &owned[i].3,
        shift: &owned[i].4,
        output: QuantParams {
            scale: 0.05,
            zero_point,
        },
    };
    let conv = |in_hw, in_c, filters, kernel, stride, padding, relu, params| {
        Op::Conv2d(ConvOp {
            in_h: in_hw,
            in_w: in_hw,
            in_c,
            filters,
            kernel,
            stride,
            padding,
            relu,
            params,
        })
    };
    let all = [
        conv(6, 2, 3, 3, 2, Padding::Same, true, params(0, -20)),
        conv(3, 3, 2, 2, 1, Padding::Valid, false, params(1, 5)),
        Op::MaxPool2d(PoolOp {
            in_h: 2,
            in_w: 2,
            channels: 2,
            pool: 2,
        }),
        Op::Dense(DenseOp {
            inputs: 2,
            units: 2,
            relu: false,
            params: params(2, 0),
        }),
    ];
    let file = StackFile::new(
        InputSpec {
            height: 6,
            width: 6,
            channels: 2,
            quant: QuantParams {
                scale: 1.0 / 255.0,
                zero_point: -128,
            },
        },
        &all,
    );
    let mut buf = vec![0u8; 1024];
    let bytes = file.encode(&mut buf).expect("the seed fits 1 KB");
    bytes.to_vec()
}

/// `idx_reader`: bytes → [`parse_idx_images`] and [`parse_idx_labels`], checking what
/// they accept; bytes that start with the gzip magic also go through the file reader
/// ([`read_pair`]), as the images file (even length) or the labels file (odd length),
/// and every error it returns must name that file.
///
/// Returns how many of the three readers accepted the bytes.
pub fn idx_reader(data: &[u8]) -> usize {
    let mut accepted = 0;
    match parse_idx_images(data) {
        Ok(images) => {
            accepted += 1;
            assert!(images.rows > 0 && images.cols > 0);
            assert_eq!(
                images.pixels.len(),
                images.count * images.rows * images.cols
            );
            assert_eq!(data.len(), 16 + images.pixels.len());
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    match parse_idx_labels(data) {
        Ok(labels) => {
            accepted += 1;
            assert!(labels.iter().all(|&l| l <= 9));
            assert_eq!(data.len(), 8 + labels.len());
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    if data.starts_with(&[0x1f, 0x8b]) {
        FILES.with(|files| {
            std::fs::write(&files.input, data).expect("write the fuzz input");
            // One file read per input (they dominate the time): the length picks the role.
            let result = if data.len() % 2 == 0 {
                read_pair(&files.input, &files.labels)
            } else {
                read_pair(&files.images, &files.input)
            };
            match result {
                Ok(_) => accepted += 1,
                Err(e) => {
                    let text = format!("{e:#}");
                    assert!(text.contains(INPUT_NAME), "{text}");
                }
            }
        });
    }
    accepted
}

const INPUT_NAME: &str = "fuzz-input.gz";

/// A directory per thread holding one valid images file, one valid labels file and the
/// current input.
struct Files {
    _dir: tempfile::TempDir,
    images: PathBuf,
    labels: PathBuf,
    input: PathBuf,
}

impl Files {
    fn new() -> Self {
        // In memory where there is a tmpfs: on ext4, rewriting a file forces a writeback
        // that costs more than everything else the target does.
        let shm = Path::new("/dev/shm");
        let dir = if shm.is_dir() {
            tempfile::tempdir_in(shm)
        } else {
            tempfile::tempdir()
        }
        .expect("temporary directory");
        let at = |name: &str| -> PathBuf { Path::new(dir.path()).join(name) };
        let (images, labels, input) = (at("images"), at("labels"), at(INPUT_NAME));
        let pixels: Vec<u8> = (0..3 * 2 * 3).map(|i| i * 13).collect();
        let encoded = trainer::data::encode_idx_images(2, 3, &pixels).expect("encode images");
        std::fs::write(&images, encoded).expect("write images");
        let encoded = trainer::data::encode_idx_labels(&[7, 0, 9]).expect("encode labels");
        std::fs::write(&labels, encoded).expect("write labels");
        Files {
            _dir: dir,
            images,
            labels,
            input,
        }
    }
}

thread_local! {
    static FILES: Files = Files::new();
}

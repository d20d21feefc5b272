//! The full MNIST distribution layout (and Debian's `dataset-fashion-mnist`, which uses the
//! same names): four gzipped IDX files with 60,000 training and 10,000 test images.

use std::io::Write;
use trainer::data::{encode_idx_images, encode_idx_labels};

/// Image `i`: its first pixel is `i % 251`, its last pixel its label, the rest a ramp.
fn images(n: usize) -> (Vec<u8>, Vec<u8>) {
    let labels: Vec<u8> = (0..n).map(|i| (i * 7 % 10) as u8).collect();
    let mut pixels = vec![0u8; n * 784];
    for (i, image) in pixels.chunks_exact_mut(784).enumerate() {
        for (j, p) in image.iter_mut().enumerate() {
            *p = (j % 256) as u8;
        }
        image[0] = (i % 251) as u8;
        image[783] = labels[i];
    }
    (pixels, labels)
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

#[test]
fn the_60k_and_10k_gzipped_distribution_files_load() {
    let dir = tempfile::tempdir().unwrap();
    for (prefix, n) in [("train", 60_000), ("t10k", 10_000)] {
        let (pixels, labels) = images(n);
        let image_file = gzip(&encode_idx_images(28, 28, &pixels).unwrap());
        let label_file = gzip(&encode_idx_labels(&labels).unwrap());
        std::fs::write(
            dir.path().join(format!("{prefix}-images-idx3-ubyte.gz")),
            image_file,
        )
        .unwrap();
        std::fs::write(
            dir.path().join(format!("{prefix}-labels-idx1-ubyte.gz")),
            label_file,
        )
        .unwrap();
    }
    let split = trainer::data::load(dir.path()).unwrap();
    assert_eq!((split.train.len(), split.test.len()), (60_000, 10_000));
    for (set, n) in [(&split.train, 60_000), (&split.test, 10_000)] {
        assert_eq!((set.rows, set.cols), (28, 28));
        assert_eq!(set.images.len(), n * 784);
        for i in [0, 1, 250, 251, n / 2, n - 1] {
            let image = set.image(i).unwrap();
            assert_eq!(image[0], (i % 251) as u8, "image {i}");
            assert_eq!(image[783], set.labels[i], "image {i}");
            assert_eq!(set.labels[i], (i * 7 % 10) as u8, "label {i}");
            assert_eq!(image[300], (300 % 256) as u8);
        }
    }
}

//! The tutorial's hand-made convolutions: 2-D convolution of one image with a 3×3 kernel,
//! same-size output, symmetric boundary — `scipy.signal.convolve2d(image, kernel,
//! mode='same', boundary='symm')`.
//!
//! It is a true convolution, as scipy's: the kernel is flipped in both directions, so
//!
//! ```text
//! out[i][j] = Σ_{a=0..3} Σ_{b=0..3} kernel[a][b] · x[i + 1 − a][j + 1 − b]
//! ```
//!
//! (a network's "convolution" layer, Keras' included, is a correlation: no flip). Outside
//! the image, rows and columns are mirrored including the edge pixel (`x[−1] = x[0]`,
//! `x[−2] = x[1]`, `x[n] = x[n − 1]`), see [`mirror`].

use super::Grid;
use rand::Rng;

/// A 3×3 kernel, `kernel[row][col]`.
pub type Kernel = [[f32; 3]; 3];

/// The tutorial's edge-detection (Laplacian) kernel.
pub const EDGE_KERNEL: Kernel = [[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]];

/// How many random filters the first picture shows.
pub const RANDOM_FILTERS: usize = 10;

/// Index `i` of a line of `n > 0` samples, mirrored into `0..n` the way scipy's `symm`
/// boundary does: `… 1 0 | 0 1 … n−1 | n−1 n−2 …` (the edge sample is repeated).
pub fn mirror(i: isize, n: usize) -> usize {
    let n = n as isize;
    if n <= 0 {
        return 0;
    }
    // The mirrored line is periodic with period 2n: 0 … n−1 n−1 … 0.
    let m = i.rem_euclid(2 * n);
    let folded = if m < n { m } else { 2 * n - 1 - m };
    folded as usize
}

/// Convolves `image` with `kernel` (true convolution, same size, symmetric boundary; see
/// the module docs). Sums are taken in `f64` in the order `a`, then `b`.
pub fn convolve_same_symm(image: &Grid, kernel: &Kernel) -> Grid {
    let (rows, cols) = (image.rows, image.cols);
    let mut values = Vec::with_capacity(rows * cols);
    for i in 0..rows {
        for j in 0..cols {
            let mut sum = 0.0f64;
            for (a, kernel_row) in kernel.iter().enumerate() {
                let y = mirror(i as isize + 1 - a as isize, rows);
                for (b, &k) in kernel_row.iter().enumerate() {
                    let x = mirror(j as isize + 1 - b as isize, cols);
                    sum += f64::from(k) * image.values[y * cols + x];
                }
            }
            values.push(sum);
        }
    }
    Grid { rows, cols, values }
}

/// Draws `RANDOM_FILTERS` kernels with entries uniform in `[−1, 0)`, as the tutorial's
/// `np.random.uniform(-1, 0, (3, 3))`.
pub fn random_filters(rng: &mut impl Rng) -> [Kernel; RANDOM_FILTERS] {
    let mut filters = [[[0.0f32; 3]; 3]; RANDOM_FILTERS];
    for value in filters.iter_mut().flatten().flatten() {
        *value = rng.gen_range(-1.0f32..0.0);
    }
    filters
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn grid(rows: usize, cols: usize, values: &[f64]) -> Grid {
        Grid {
            rows,
            cols,
            values: values.to_vec(),
        }
    }

    #[test]
    fn mirror_repeats_the_edge_sample() {
        let folded: Vec<usize> = (-4..8).map(|i| mirror(i, 3)).collect();
        assert_eq!(folded, [2, 2, 1, 0, 0, 1, 2, 2, 1, 0, 0, 1]);
        assert_eq!(mirror(-1, 1), 0);
        assert_eq!(mirror(5, 1), 0);
    }

    /// Golden values from scipy 1.x:
    /// `signal.convolve2d(x, k, mode='same', boundary='symm')` on these integers.
    #[test]
    fn matches_scipy_convolve2d_symm_same() {
        let x = grid(
            4,
            5,
            &[
                3., 0., 1., 4., 1., 5., 9., 2., 6., 5., 3., 5., 8., 9., 7., 9., 3., 2., 3., 8.,
            ],
        );
        // Asymmetric on purpose: a correlation (no flip) would give other numbers.
        let k: Kernel = [[1., 2., 0.], [0., 0., -1.], [3., 0., 0.]];
        let expected = [
            16., 20., 22., 19., 14., 6., 16., 28., 26., 18., 45., 11., 20., 21., 30., 27., 23.,
            31., 33., 42.,
        ];
        assert_eq!(convolve_same_symm(&x, &k).values, expected);
        let edges = [
            -1., 13., 3., -4., 7., 0., -24., 16., -4., -1., 10., 3., -14., -12., 1., -12., 7., 8.,
            10., -6.,
        ];
        assert_eq!(convolve_same_symm(&x, &EDGE_KERNEL).values, edges);
    }

    #[test]
    fn random_filters_lie_in_minus_one_to_zero_and_follow_the_seed() {
        let a = random_filters(&mut ChaCha8Rng::seed_from_u64(3));
        let b = random_filters(&mut ChaCha8Rng::seed_from_u64(3));
        let c = random_filters(&mut ChaCha8Rng::seed_from_u64(4));
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(a
            .iter()
            .flatten()
            .flatten()
            .all(|&v| (-1.0..0.0).contains(&v)));
    }
}

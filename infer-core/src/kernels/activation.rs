//! Output activations: argmax over logits and softmax over their real values.

/// Index of the largest value; the first one wins a tie (as TFLite's ARG_MAX). 0 if empty.
pub fn argmax<T: Copy + PartialOrd>(values: &[T]) -> usize {
    let mut best = 0;
    for (i, v) in values.iter().enumerate() {
        if let Some(b) = values.get(best) {
            if v > b {
                best = i;
            }
        }
    }
    best
}

/// Numerically stable softmax: `out[i] = exp(x[i] − max) / Σ exp(x[j] − max)`.
pub fn softmax(logits: &[f32], out: &mut [f32]) {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let mut sum = 0.0;
    for (o, &x) in out.iter_mut().zip(logits) {
        *o = libm::expf(x - max);
        sum += *o;
    }
    if sum > 0.0 {
        out.iter_mut().for_each(|o| *o /= sum);
    }
}

/// Softmax of int8 logits with quantization `scale`, `zero_point`.
pub fn softmax_i8(logits: &[i8], scale: f32, zero_point: i32, out: &mut [f32]) {
    let mut real = [0.0f32; 64];
    for (r, &q) in real.iter_mut().zip(logits) {
        *r = scale * (i32::from(q) - zero_point) as f32;
    }
    let n = logits.len().min(real.len());
    softmax(real.get(..n).unwrap_or(&[]), out);
}

/// Softmax of wide (i32) logits of one common `scale`, zero point 0 (a format-3 model's
/// logits): `out[i] = exp(scale · (x[i] − max)) / Σ exp(scale · (x[j] − max))`. The
/// differences are taken in integers, so they are exact before the scaling.
pub fn softmax_wide(logits: &[i32], scale: f32, out: &mut [f32]) {
    let max = logits.iter().copied().max().unwrap_or(0);
    let mut sum = 0.0f32;
    for (o, &x) in out.iter_mut().zip(logits) {
        let diff = (i64::from(x) - i64::from(max)) as f32;
        *o = libm::expf(scale * diff);
        sum += *o;
    }
    if sum > 0.0 {
        out.iter_mut().for_each(|o| *o /= sum);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_first_maximum_wins() {
        assert_eq!(argmax(&[1i8, 5, 5, -3]), 1);
        assert_eq!(argmax(&[-128i8]), 0);
        assert_eq!(argmax::<i8>(&[]), 0);
    }

    #[test]
    fn softmax_matches_definition() {
        let x = [1.0f32, 2.0, 3.0, -1.0];
        let mut out = [0.0f32; 4];
        softmax(&x, &mut out);
        let denom: f64 = x.iter().map(|&v| (v as f64).exp()).sum();
        for (o, &v) in out.iter().zip(&x) {
            let want = (v as f64).exp() / denom;
            assert!((*o as f64 - want).abs() < 1e-6, "{o} vs {want}");
        }
        let sum: f32 = out.iter().sum();
        assert!((sum - 1.0).abs() < 1e-6);
    }

    #[test]
    fn wide_softmax_is_the_softmax_of_the_dequantized_logits() {
        let logits = [1_000_000i32, -2_000_000, 1_500_000, i32::MIN, i32::MAX];
        let scale = 1e-6f32;
        let mut out = [0.0f32; 5];
        softmax_wide(&logits, scale, &mut out);
        let real: [f64; 5] = logits.map(|l| f64::from(l) * f64::from(scale));
        let max = real.iter().copied().fold(f64::MIN, f64::max);
        let denom: f64 = real.iter().map(|&v| (v - max).exp()).sum();
        for (o, &v) in out.iter().zip(&real) {
            let want = (v - max).exp() / denom;
            assert!((*o as f64 - want).abs() < 1e-6, "{o} vs {want}");
        }
    }
}

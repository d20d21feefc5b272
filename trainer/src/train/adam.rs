//! Adam with Keras 3's defaults and update rule, fused with the gradient reduction.

use rayon::prelude::*;

/// Exponential decay of the first-moment estimate.
const BETA_1: f32 = 0.9;
/// Exponential decay of the second-moment estimate.
const BETA_2: f32 = 0.999;
/// Keras' epsilon, added to `sqrt(v)` (not to `sqrt(v̂)` as in the paper).
const EPSILON: f32 = 1e-7;
/// Parameters per parallel task of [`Adam::step`].
const BLOCK: usize = 4096;

/// Adam optimizer state for a flat parameter vector.
pub(super) struct Adam {
    learning_rate: f32,
    steps: u32,
    m: Vec<f32>,
    v: Vec<f32>,
}

impl Adam {
    /// Zeroed moments for `len` parameters.
    pub(super) fn new(learning_rate: f32, len: usize) -> Self {
        Self {
            learning_rate,
            steps: 0,
            m: vec![0.0; len],
            v: vec![0.0; len],
        }
    }

    /// Sums the partial gradients `parts` (each as long as `params`) in order and applies one
    /// Adam step, Keras 3 style:
    /// `lr_t = lr·√(1−β₂ᵗ)/(1−β₁ᵗ)`, `m += (g−m)(1−β₁)`, `v += (g²−v)(1−β₂)`,
    /// `p −= lr_t·m/(√v + ε)`. Runs on the current rayon pool; the result does not depend on
    /// the number of threads.
    pub(super) fn step<G: AsRef<[f32]> + Sync>(&mut self, params: &mut [f32], parts: &[G]) {
        self.steps += 1;
        let t = f64::from(self.steps);
        let lr_t = (f64::from(self.learning_rate) * (1.0 - f64::from(BETA_2).powf(t)).sqrt()
            / (1.0 - f64::from(BETA_1).powf(t))) as f32;
        params
            .par_chunks_mut(BLOCK)
            .zip(self.m.par_chunks_mut(BLOCK))
            .zip(self.v.par_chunks_mut(BLOCK))
            .enumerate()
            .for_each(|(block, ((p, m), v))| {
                let range = block * BLOCK..block * BLOCK + p.len();
                let mut g = [0.0f32; BLOCK];
                let g = &mut g[..p.len()];
                for part in parts {
                    for (sum, x) in g.iter_mut().zip(&part.as_ref()[range.clone()]) {
                        *sum += x;
                    }
                }
                for (((p, m), v), &g) in p.iter_mut().zip(m).zip(v).zip(&*g) {
                    *m += (g - *m) * (1.0 - BETA_1);
                    *v += (g * g - *v) * (1.0 - BETA_2);
                    *p -= lr_t * *m / (v.sqrt() + EPSILON);
                }
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_step_moves_each_parameter_by_about_lr_against_its_gradient() {
        // With bias correction the first step is lr·g/(|g| + ε/√(1−β₂)) ≈ lr·sign(g).
        let mut params = vec![1.0f32; 5000];
        let grads: Vec<f32> = (0..5000)
            .map(|i| if i % 2 == 0 { 0.5 } else { -2.0 })
            .collect();
        let mut adam = Adam::new(0.001, params.len());
        // Two equal parts sum to 2·g (spanning two blocks): only the sign matters.
        adam.step(&mut params, &[grads.clone(), grads.clone()]);
        for (p, g) in params.iter().zip(&grads) {
            let expected = 1.0 - 0.001 * g.signum();
            assert!((p - expected).abs() < 1e-6, "{p} vs {expected}");
        }
    }

    #[test]
    fn matches_a_scalar_reference_over_several_steps() {
        let grads = [[0.3f32, -0.1], [0.2, 0.05], [-0.4, 0.0]];
        let mut params = vec![0.5f32, -0.25];
        let mut adam = Adam::new(0.01, 2);
        let (mut p, mut m, mut v) = ([0.5f64, -0.25], [0.0f64; 2], [0.0f64; 2]);
        for (t, g) in grads.iter().enumerate() {
            adam.step(&mut params, &[g]);
            let t = (t + 1) as f64;
            let lr_t = 0.01 * (1.0 - 0.999f64.powf(t)).sqrt() / (1.0 - 0.9f64.powf(t));
            for i in 0..2 {
                let g = f64::from(g[i]);
                m[i] = 0.9 * m[i] + 0.1 * g;
                v[i] = 0.999 * v[i] + 0.001 * g * g;
                p[i] -= lr_t * m[i] / (v[i].sqrt() + 1e-7);
            }
        }
        for (a, b) in params.iter().zip(p) {
            assert!((f64::from(*a) - b).abs() < 1e-6, "{a} vs {b}");
        }
    }
}

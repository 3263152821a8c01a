//! AdamW over plain f32 vectors: linear warm-up, decoupled weight decay,
//! global-norm gradient clipping, and the state a checkpoint saves.

use serde::{Deserialize, Serialize};

/// Optimizer settings (DAPO's reference: lr 1e-6, 10 warm-up steps, weight
/// decay 0.1, clip 1.0; a LoRA needs a far larger lr).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
    /// Steps of linear warm-up: step s (0-based) uses lr · min(1, (s + 1) / warmup).
    pub warmup_steps: u64,
    /// Clip the global gradient norm to this (0: off).
    pub max_grad_norm: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        AdamWConfig {
            lr: 1e-4,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.1,
            warmup_steps: 10,
            max_grad_norm: 1.0,
        }
    }
}

/// AdamW state: the step count and the first and second moments per tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct AdamW {
    pub config: AdamWConfig,
    /// Optimizer steps taken.
    pub step: u64,
    pub m: Vec<Vec<f32>>,
    pub v: Vec<Vec<f32>>,
}

/// Global L2 norm of all gradients (f64 accumulation).
pub fn global_norm(grads: &[Vec<f32>]) -> f64 {
    grads
        .iter()
        .flat_map(|g| g.iter())
        .map(|&x| f64::from(x) * f64::from(x))
        .sum::<f64>()
        .sqrt()
}

/// Scale gradients so their global norm is at most `max_norm` (0: no-op);
/// returns the norm before clipping.
pub fn clip_grad_norm(grads: &mut [Vec<f32>], max_norm: f64) -> f64 {
    let norm = global_norm(grads);
    if max_norm > 0.0 && norm > max_norm {
        let s = (max_norm / (norm + 1e-6)) as f32;
        for g in grads.iter_mut().flat_map(|g| g.iter_mut()) {
            *g *= s;
        }
    }
    norm
}

impl AdamW {
    /// Zero moments for tensors of these sizes.
    pub fn new(config: AdamWConfig, sizes: &[usize]) -> AdamW {
        AdamW {
            config,
            step: 0,
            m: sizes.iter().map(|&n| vec![0.0; n]).collect(),
            v: sizes.iter().map(|&n| vec![0.0; n]).collect(),
        }
    }

    /// The learning rate of the next step.
    pub fn lr(&self) -> f64 {
        let c = &self.config;
        if c.warmup_steps == 0 {
            return c.lr;
        }
        c.lr * ((self.step + 1) as f64 / c.warmup_steps as f64).min(1.0)
    }

    /// One update, as PyTorch's AdamW: p ← p·(1 − lr·wd), then
    /// p ← p − lr · m̂ / (√v̂ + eps) with bias-corrected moments.
    /// Returns the learning rate used.
    pub fn update(&mut self, params: &mut [Vec<f32>], grads: &[Vec<f32>]) -> f64 {
        let lr = self.lr();
        self.step += 1;
        let c = self.config;
        let t = self.step as i32;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2 = 1.0 - c.beta2.powi(t);
        for (((p, g), m), v) in params
            .iter_mut()
            .zip(grads)
            .zip(self.m.iter_mut())
            .zip(self.v.iter_mut())
        {
            for i in 0..p.len() {
                let gi = f64::from(g[i]);
                let mi = c.beta1 * f64::from(m[i]) + (1.0 - c.beta1) * gi;
                let vi = c.beta2 * f64::from(v[i]) + (1.0 - c.beta2) * gi * gi;
                m[i] = mi as f32;
                v[i] = vi as f32;
                let mut pi = f64::from(p[i]) * (1.0 - lr * c.weight_decay);
                pi -= lr * (mi / bc1) / ((vi / bc2).sqrt() + c.eps);
                p[i] = pi as f32;
            }
        }
        lr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_is_linear_then_flat() {
        let mut o = AdamW::new(
            AdamWConfig {
                lr: 1.0,
                warmup_steps: 4,
                ..AdamWConfig::default()
            },
            &[1],
        );
        let mut lrs = Vec::new();
        for _ in 0..6 {
            lrs.push(o.update(&mut [vec![0.0]], &[vec![0.0]]));
        }
        assert_eq!(lrs, vec![0.25, 0.5, 0.75, 1.0, 1.0, 1.0]);
    }

    #[test]
    fn first_step_by_hand() {
        // step 1: m̂ = g, v̂ = g², so the move is lr · g/(|g| + eps) ≈ lr · sign(g),
        // after decay p·(1 − lr·wd).
        let cfg = AdamWConfig {
            lr: 0.1,
            weight_decay: 0.5,
            warmup_steps: 0,
            eps: 0.0,
            ..AdamWConfig::default()
        };
        let mut o = AdamW::new(cfg, &[2]);
        let mut p = vec![vec![1.0f32, -2.0]];
        o.update(&mut p, &[vec![0.3, -4.0]]);
        assert!((p[0][0] - (1.0 * 0.95 - 0.1)).abs() < 1e-6, "{:?}", p);
        assert!((p[0][1] - (-2.0 * 0.95 + 0.1)).abs() < 1e-6, "{:?}", p);
        // second step with the same gradient: m̂ = g, v̂ = g² again
        o.update(&mut p, &[vec![0.3, -4.0]]);
        assert!((p[0][0] - ((0.95 - 0.1) * 0.95 - 0.1)).abs() < 1e-6);
        assert_eq!(o.step, 2);
        assert!((o.m[0][0] - (0.9 * 0.03 + 0.03)).abs() < 1e-7);
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        let mut g = vec![vec![3.0f32], vec![4.0]];
        let n = clip_grad_norm(&mut g, 1.0);
        assert!((n - 5.0).abs() < 1e-9);
        assert!((global_norm(&g) - 1.0).abs() < 1e-5);
        assert!((g[0][0] - 0.6).abs() < 1e-5);
        let mut g = vec![vec![0.3f32, 0.4]];
        clip_grad_norm(&mut g, 1.0);
        assert_eq!(g, vec![vec![0.3, 0.4]]);
    }
}

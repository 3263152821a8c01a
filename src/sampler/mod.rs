//! Sampler math: pure functions over logit slices, no model and no FFI.
//!
//! - [`log_softmax`] / [`log_sum_exp`]: full-vocabulary normalisation in f64.
//! - [`token_metrics`]: the per-position statistics of METHOD.md §1
//!   (Δlog p, entropies, both KL directions, JS, ranks) from a base and an RL
//!   logit vector; [`single_metrics`] for one model alone (log p, entropy, rank).
//! - [`extrapolate`] (π_X, METHOD.md §3) and [`Distribution`]: temperature →
//!   top-k → top-p over full-vocabulary log-probs, inverse-CDF sampling.
//! - [`Gate`] / [`Criterion`]: when the RL model intervenes (METHOD.md §2).
//! - [`Pair`] / [`Side`]: a value for each model of a base/RL pair.
//! - [`LogitBias`]: per-token additive biases (OpenAI's `logit_bias`).
//! - [`uniform`]: counter-based draws keyed by (seed, sequence, position, [`Purpose`]).
//!
//! Numerics everywhere: subtract the max before `exp`, accumulate in f64,
//! reject non-finite logits with an error instead of letting NaN through.

mod bias;
mod error;
mod exp;
mod gate;
pub mod metrics;
mod pair;
pub(crate) mod rng;
mod transform;

pub use metrics::{
    single_metrics, token_metrics, MetricsError, Model, SingleMetrics, TokenMetrics,
};

pub use bias::{BiasError, LogitBias, MAX_LOGIT_BIAS};
pub use error::SamplerError;
pub use gate::{Criterion, Gate, GateInput};
pub use pair::{Pair, Side};
pub use rng::{uniform, Purpose};
pub use transform::{extrapolate, Distribution, SamplingParams};

use exp::exp_nonpos;

/// `ln Σ_v exp(logits[v])`, computed in f64 after subtracting the max.
///
/// An empty slice gives `-inf` (the log of an empty sum); a NaN or infinite
/// logit gives NaN. Callers that need a guarantee use
/// [`log_softmax`] or [`token_metrics`], which return errors instead.
pub fn log_sum_exp(logits: &[f32]) -> f64 {
    let Some(max) = logits.iter().copied().reduce(f32::max) else {
        return f64::NEG_INFINITY;
    };
    if logits.iter().any(|z| !z.is_finite()) {
        return f64::NAN;
    }
    let m = f64::from(max);
    let sum: f64 = logits.iter().map(|&z| exp_nonpos(f64::from(z) - m)).sum();
    m + sum.ln()
}

/// Writes `log softmax(logits)` into `out` (f64, max-subtracted, f64 sums).
///
/// Errors when `out` has a different length from `logits`, when `logits` is
/// empty, or when a logit is NaN or infinite (naming its index); `out` is left
/// untouched on error.
pub fn log_softmax(logits: &[f32], out: &mut [f64]) -> Result<(), MetricsError> {
    if logits.len() != out.len() {
        return Err(MetricsError::OutputLength {
            logits: logits.len(),
            out: out.len(),
        });
    }
    if logits.is_empty() {
        return Err(MetricsError::EmptyVocab);
    }
    if let Some(index) = logits.iter().position(|z| !z.is_finite()) {
        return Err(MetricsError::NonFiniteInput { index });
    }
    let lse = log_sum_exp(logits);
    for (o, &z) in out.iter_mut().zip(logits) {
        *o = f64::from(z) - lse;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_softmax_of_uniform_is_minus_log_n() {
        let mut out = [0.0; 4];
        log_softmax(&[2.5; 4], &mut out).unwrap();
        for o in out {
            assert!((o + 4f64.ln()).abs() < 1e-15);
        }
    }

    #[test]
    fn log_softmax_hand_computed() {
        // logits [0, ln 2, ln 3] → probabilities [1/6, 2/6, 3/6]
        let z = [0.0f32, 2f32.ln(), 3f32.ln()];
        let mut out = [0.0; 3];
        log_softmax(&z, &mut out).unwrap();
        let s = 1.0 + f64::from(z[1]).exp() + f64::from(z[2]).exp();
        for (o, zi) in out.iter().zip(z) {
            assert!((o - (f64::from(zi) - s.ln())).abs() < 1e-15);
        }
        assert!((out[0] + 6f64.ln()).abs() < 1e-7);
    }

    #[test]
    fn log_sum_exp_survives_huge_logits() {
        let lse = log_sum_exp(&[3.0e38, 3.0e38]);
        assert_eq!(lse, 3.0e38f32 as f64 + 2f64.ln());
        assert_eq!(log_sum_exp(&[]), f64::NEG_INFINITY);
        assert!(log_sum_exp(&[1.0, f32::NAN]).is_nan());
    }

    #[test]
    fn log_softmax_errors() {
        let mut out = [0.0; 2];
        assert_eq!(
            log_softmax(&[1.0, 2.0, 3.0], &mut out),
            Err(MetricsError::OutputLength { logits: 3, out: 2 })
        );
        assert_eq!(
            log_softmax(&[1.0, f32::INFINITY], &mut out),
            Err(MetricsError::NonFiniteInput { index: 1 })
        );
        assert_eq!(log_softmax(&[], &mut []), Err(MetricsError::EmptyVocab));
    }
}

//! τ calibration for the token-replacement sweep (`dlogp intervene`): the
//! threshold at which each criterion's gate fires on a target share of the
//! base model's own tokens.

use serde::Serialize;

use super::bench::{Bench, BenchError, BenchEvent};
use crate::analysis::{quantile, Metric};
use crate::decode::DecodeConfig;
use crate::sampler::{Criterion, TokenMetrics};

/// The calibrated thresholds and what they were measured on.
#[derive(Debug, Clone, PartialEq, Serialize, serde::Deserialize)]
pub struct Calibration {
    pub n_problems: usize,
    pub n_tokens: usize,
    /// Per criterion, the τ for each target ratio.
    pub taus: Vec<(Criterion, Vec<f64>)>,
}

/// Whether any of `criteria` compares a metric with τ (`random`, `never`
/// and `always` need no scored tokens).
pub fn needs_scores(criteria: &[Criterion]) -> bool {
    criteria.iter().any(|&c| Metric::of_criterion(c).is_some())
}

/// τ per criterion for each target ratio `r`, from scored tokens: the gate
/// fires on a share `r` of them (`dlogp`: Δlog p ≤ τ, the r-quantile; the
/// other metrics: ≥ τ, the (1 − r)-quantile; `random`: τ = r; `never` and
/// `always`: one point, τ = 0). Thresholds are rounded to 4 significant
/// digits, as they become part of a configuration's name.
pub fn thresholds(
    metrics: &[TokenMetrics],
    criteria: &[Criterion],
    ratios: &[f64],
) -> Vec<(Criterion, Vec<f64>)> {
    criteria
        .iter()
        .map(|&c| {
            let taus = match (c, Metric::of_criterion(c)) {
                (Criterion::Random, _) => ratios.to_vec(),
                (_, None) => vec![0.0],
                (_, Some(metric)) => {
                    let mut v: Vec<f64> = metrics.iter().map(|m| metric.of(m)).collect();
                    v.sort_by(f64::total_cmp);
                    ratios
                        .iter()
                        .map(|&r| {
                            let q = if c == Criterion::Dlogp { r } else { 1.0 - r };
                            // `+ 0.0`: a τ of zero is +0 (never `tau=-0` in a name)
                            round_sig(quantile(&v, q) + 0.0)
                        })
                        .collect()
                }
            };
            (c, taus)
        })
        .collect()
}

/// `x` rounded to 4 significant digits.
pub fn round_sig(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let digits = 3 - x.abs().log10().floor() as i32;
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

impl Bench {
    /// τ per criterion for each target ratio, from the samples `cfg` (the
    /// base model) makes of the first `n` problems, scored by both models
    /// (see [`thresholds`]). Generates nothing when no criterion needs a
    /// metric; tells `progress` before it generates.
    pub fn calibrate(
        &self,
        cfg: DecodeConfig,
        criteria: &[Criterion],
        ratios: &[f64],
        n: usize,
        mut progress: impl FnMut(BenchEvent<'_>),
    ) -> Result<Calibration, BenchError> {
        let n = n.clamp(1, self.tasks.len());
        if !needs_scores(criteria) {
            return Ok(Calibration {
                n_problems: 0,
                n_tokens: 0,
                taus: thresholds(&[], criteria, ratios),
            });
        }
        progress(BenchEvent::Calibrating {
            samples: n * self.k,
            problems: n,
        });
        let metrics: Vec<TokenMetrics> = self
            .generate_scored(cfg, n)?
            .into_iter()
            .flat_map(|r| r.metrics)
            .collect();
        if metrics.is_empty() && criteria.iter().any(|&c| c != Criterion::Random) {
            return Err(BenchError::NoCalibrationTokens);
        }
        Ok(Calibration {
            n_problems: n,
            n_tokens: metrics.len(),
            taus: thresholds(&metrics, criteria, ratios),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(dlogp: f64, kl: f64, entropy: f64) -> TokenMetrics {
        TokenMetrics {
            logp_base: -1.0,
            logp_rl: -1.0 + dlogp,
            dlogp,
            entropy_base: entropy,
            entropy_rl: entropy,
            kl,
            kl_r: kl,
            js: kl,
            rank_base: 0,
            rank_rl: 0,
        }
    }

    /// The quantile `dlogp intervene` had before it shared
    /// [`crate::analysis::quantile`].
    fn old_quantile(sorted: &[f64], q: f64) -> f64 {
        let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
        let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
        sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
    }

    #[test]
    fn rounding_keeps_four_significant_digits() {
        assert_eq!(round_sig(-0.0123456), -0.01235);
        assert_eq!(round_sig(1234.5678), 1235.0);
        assert_eq!(round_sig(0.0), 0.0);
        assert_eq!(round_sig(f64::INFINITY), f64::INFINITY);
    }

    #[test]
    fn the_shared_quantile_gives_the_old_calibration_bit_for_bit() {
        // the numbers a calibration sees: mixed signs, exact zeros of both
        // signs, repeats, at every rank and between ranks
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for n in 1..40 {
            let mut v: Vec<f64> = (0..n)
                .map(|_| match next() % 5 {
                    0 => 0.0,
                    1 => -0.0,
                    2 => (next() % 7) as f64 - 3.0,
                    _ => (next() % 1_000_000) as f64 / 1e4 - 50.0,
                })
                .collect();
            v.sort_by(f64::total_cmp);
            for i in 0..=200 {
                let q = i as f64 / 200.0;
                let (new, old) = (quantile(&v, q) + 0.0, old_quantile(&v, q));
                assert_eq!(new.to_bits(), old.to_bits(), "n {n} q {q}: {new} vs {old}");
            }
        }
    }

    #[test]
    fn thresholds_fire_on_the_target_share() {
        // Δlog p -10..-1 and 0..9 (20 tokens), kl 0..19, entropy all 1
        let metrics: Vec<TokenMetrics> = (0..20)
            .map(|i| token(i as f64 - 10.0, i as f64, 1.0))
            .collect();
        let criteria = [
            Criterion::Dlogp,
            Criterion::Kl,
            Criterion::Entropy,
            Criterion::Random,
            Criterion::Never,
        ];
        let t = thresholds(&metrics, &criteria, &[0.05, 0.5]);
        // dlogp: the r-quantile of -10..9 (h = 19 r): 0.95 → -9.05, 9.5 → -0.5
        assert_eq!(t[0], (Criterion::Dlogp, vec![-9.05, -0.5]));
        // kl: the (1 − r)-quantile of 0..19: 18.05, 9.5
        assert_eq!(t[1], (Criterion::Kl, vec![18.05, 9.5]));
        assert_eq!(t[2], (Criterion::Entropy, vec![1.0, 1.0]));
        assert_eq!(t[3], (Criterion::Random, vec![0.05, 0.5]));
        assert_eq!(t[4], (Criterion::Never, vec![0.0]));
        // the dlogp gate (Δlog p ≤ τ) fires on 1 and 10 of the 20 tokens
        let fires = |tau: f64| metrics.iter().filter(|m| m.dlogp <= tau).count();
        assert_eq!((fires(t[0].1[0]), fires(t[0].1[1])), (1, 10));
        // a zero threshold is +0
        let t = thresholds(&[token(-0.0, 0.0, 0.0)], &[Criterion::Dlogp], &[0.5]);
        assert!(t[0].1[0].is_sign_positive());
        assert!(needs_scores(&[Criterion::Random, Criterion::Js]));
        assert!(!needs_scores(&[Criterion::Random, Criterion::Always]));
    }
}

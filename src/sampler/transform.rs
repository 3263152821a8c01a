//! Building the sampling distribution from full-vocabulary log-probs:
//! extrapolation (METHOD.md §3), then temperature → top-k → top-p (the vLLM
//! order), then inverse-CDF sampling.
//!
//! Inputs are log-probs or any log-weights in f64: finite values or `-inf`
//! (a token with zero probability); NaN and `+inf` are errors.

use std::cmp::Ordering;

use serde::{Deserialize, Serialize};

use super::error::SamplerError;
use super::exp::exp_nonpos;
use super::metrics::Model;
use super::pair::Pair;

/// Relative slack when comparing cumulative mass with top-p, so that a prefix
/// whose mass equals p in exact arithmetic is not lost to rounding.
const TOP_P_SLACK: f64 = 1e-12;

/// `|log Σ exp|` below which a vector counts as already normalised and is
/// left bit for bit as it is.
const NORMALISED_TOL: f64 = 1e-12;

/// First batch of candidates the top-p scan sorts; doubled until the mass is reached.
const TOP_P_FIRST_BATCH: usize = 64;

/// Temperature, top-k and top-p, as the user gave them.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct SamplingParams {
    /// Divides the log-probs; must be > 0 and finite.
    pub temperature: f64,
    /// Keep the k most probable tokens; 0 = off.
    pub top_k: usize,
    /// Keep the smallest most-probable prefix with mass ≥ p; in (0, 1], 1 = off.
    pub top_p: f64,
}

impl Default for SamplingParams {
    /// Plain sampling: T = 1, no top-k, no top-p.
    fn default() -> Self {
        SamplingParams {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
        }
    }
}

impl SamplingParams {
    /// Checks temperature > 0 and finite, top-p in (0, 1] (NaN fails both).
    pub fn validate(&self) -> Result<(), SamplerError> {
        let t = self.temperature;
        if !(t > 0.0 && t.is_finite()) {
            return Err(SamplerError::Temperature { value: t });
        }
        let p = self.top_p;
        if !(p > 0.0 && p <= 1.0) {
            return Err(SamplerError::TopP { value: p });
        }
        Ok(())
    }
}

/// Writes the extrapolated log-distribution `log π_X = (1+γ)·lp_rl − γ·lp_base − log Z`
/// into `out` (METHOD.md §3: π_X ∝ π_R · exp(γ Δlog p)).
///
/// Computed as `lp_rl + γ·(lp_rl − lp_base)`, then shifted by the log-sum-exp.
/// Zero-probability tokens: `lp_rl = -inf` stays `-inf`; with γ > 0 a token
/// with `lp_base = -inf` but finite `lp_rl` is also given `-inf` (its Δlog p
/// is +∞; the exact limit would put all mass on such tokens, which for a
/// token the base merely masks is never what is wanted), so π_X lives on the
/// tokens both models allow.
///
/// Guarantee for γ = 0: `out` equals `lp_rl` bit for bit when `lp_rl` is
/// normalised to within 1e-12 (|log Σ exp| ≤ 1e-12), and `lp_rl − log Σ exp(lp_rl)`
/// otherwise; `lp_base` is then only checked, never used, so its `-inf`s don't
/// matter. The same "leave a normalised vector alone" rule applies for any γ.
///
/// Errors (with `out` untouched): γ < 0 or non-finite, different lengths, an
/// empty vocabulary, a NaN or `+inf` input (naming model and index), no token
/// allowed by both models, or a log-weight overflowing for a huge γ.
pub fn extrapolate(lp: Pair<&[f64]>, gamma: f64, out: &mut [f64]) -> Result<(), SamplerError> {
    let Pair {
        base: lp_base,
        rl: lp_rl,
    } = lp;
    if !(gamma >= 0.0 && gamma.is_finite()) {
        return Err(SamplerError::Gamma { value: gamma });
    }
    if lp_rl.len() != lp_base.len() {
        return Err(SamplerError::LengthMismatch {
            rl: lp_rl.len(),
            base: lp_base.len(),
        });
    }
    if out.len() != lp_rl.len() {
        return Err(SamplerError::OutputLength {
            vocab: lp_rl.len(),
            out: out.len(),
        });
    }
    if lp_rl.is_empty() {
        return Err(SamplerError::EmptyVocab);
    }
    check_logprobs(lp_rl, Model::Rl)?;
    check_logprobs(lp_base, Model::Base)?;

    // First pass: the maximum extrapolated log-weight.
    let weight = |a: f64, b: f64| -> f64 {
        if gamma == 0.0 {
            a
        } else if a == f64::NEG_INFINITY || b == f64::NEG_INFINITY {
            f64::NEG_INFINITY
        } else {
            a + gamma * (a - b)
        }
    };
    let mut max = f64::NEG_INFINITY;
    for (index, (&a, &b)) in lp_rl.iter().zip(lp_base).enumerate() {
        let x = weight(a, b);
        // a is finite here, so x is ±inf only through overflow of γ·(a − b).
        if x == f64::INFINITY || x.is_nan() {
            return Err(SamplerError::ExtrapolationOverflow { index, gamma });
        }
        max = max.max(x);
    }
    if max == f64::NEG_INFINITY {
        return Err(if gamma == 0.0 {
            SamplerError::NoMass
        } else {
            SamplerError::NoCommonSupport
        });
    }
    let sum: f64 = lp_rl
        .iter()
        .zip(lp_base)
        .map(|(&a, &b)| exp_nonpos(weight(a, b) - max))
        .sum();
    let lse = max + sum.ln();
    let shift = if lse.abs() <= NORMALISED_TOL {
        0.0
    } else {
        lse
    };
    for (o, (&a, &b)) in out.iter_mut().zip(lp_rl.iter().zip(lp_base)) {
        let x = weight(a, b);
        *o = if shift == 0.0 { x } else { x - shift };
    }
    Ok(())
}

/// Errors on the first NaN or `+inf`.
fn check_logprobs(lp: &[f64], model: Model) -> Result<(), SamplerError> {
    match lp.iter().position(|v| v.is_nan() || *v == f64::INFINITY) {
        Some(index) => Err(SamplerError::BadModelLogProb {
            model,
            index,
            value: lp[index],
        }),
        None => Ok(()),
    }
}

/// Most probable first; equal probabilities by token id, so every cut is deterministic.
fn by_prob_desc(a: &(u32, f64), b: &(u32, f64)) -> Ordering {
    b.1.total_cmp(&a.1).then(a.0.cmp(&b.0))
}

/// A sparse sampling distribution: the candidates that survive temperature,
/// top-k and top-p, most probable first (ties by token id), probabilities
/// renormalised to sum to 1. Never empty.
#[derive(Clone, Debug, PartialEq)]
pub struct Distribution {
    candidates: Vec<(u32, f64)>,
    /// Σ of the stored probabilities, summed in candidate order (1 up to rounding).
    total: f64,
}

impl Distribution {
    /// Temperature (log-probs / T, renormalised), then top-k (the k most
    /// probable), then top-p (the smallest most-probable prefix whose mass
    /// reaches p, with a relative slack of 1e-12; the top token always stays),
    /// then renormalisation. Tokens whose weight underflows to 0 (more than
    /// ~700 nats below the top after temperature) are dropped.
    ///
    /// Cost: one pass over the vocabulary plus, with top-p < 1 or top-k > 0, a
    /// partial selection (`select_nth_unstable`) and a sort of the kept prefix
    /// only; with neither, a full sort of the candidates.
    ///
    /// Errors: invalid params, an empty vocabulary or one over `u32::MAX`
    /// entries, a NaN or `+inf` entry, or every entry `-inf`.
    pub fn from_logprobs(lp: &[f64], params: &SamplingParams) -> Result<Self, SamplerError> {
        params.validate()?;
        if lp.is_empty() {
            return Err(SamplerError::EmptyVocab);
        }
        if u32::try_from(lp.len() - 1).is_err() {
            return Err(SamplerError::VocabTooLarge { len: lp.len() });
        }
        let mut max = f64::NEG_INFINITY;
        for (index, &v) in lp.iter().enumerate() {
            if v.is_nan() || v == f64::INFINITY {
                return Err(SamplerError::BadLogProb { index, value: v });
            }
            max = max.max(v);
        }
        if max == f64::NEG_INFINITY {
            return Err(SamplerError::NoMass);
        }

        // Temperature: weights exp((lp − max) / T) ≤ 1; the top token has weight 1.
        let t = params.temperature;
        // Zero weights (−inf or underflow) are kept for now, so that this loop
        // has no branch; they sort last and are dropped at the end.
        let weights: Vec<f64> = lp.iter().map(|&v| exp_nonpos((v - max) / t)).collect();
        let mut total: f64 = weights.iter().sum();
        let mut cands: Vec<(u32, f64)> = Vec::new();
        if params.top_k == 0 && params.top_p < 1.0 {
            // Fast path: the top-p prefix of the whole vocabulary is the top-p
            // prefix of the tokens heavier than any token left out, as long as
            // those reach the target mass. Try a light cut first.
            let target = params.top_p * total;
            for cut in [1e-4, 1e-7] {
                cands.clear();
                cands.extend(
                    (0u32..)
                        .zip(&weights)
                        .filter(|(_, &w)| w >= cut)
                        .map(|(id, &w)| (id, w)),
                );
                let mass: f64 = cands.iter().map(|c| c.1).sum();
                if mass >= target * (1.0 + 1e-12) {
                    let keep = sorted_top_p_prefix(&mut cands, target);
                    cands.truncate(keep);
                    return Ok(Self::normalised(cands));
                }
            }
        }
        cands.clear();
        cands.extend((0u32..).zip(weights));

        if params.top_k > 0 && params.top_k < cands.len() {
            cands.select_nth_unstable_by(params.top_k - 1, by_prob_desc);
            cands.truncate(params.top_k);
            total = cands.iter().map(|c| c.1).sum();
        }

        if params.top_p < 1.0 {
            let keep = sorted_top_p_prefix(&mut cands, params.top_p * total);
            cands.truncate(keep);
        } else {
            cands.sort_unstable_by(by_prob_desc);
        }

        Ok(Self::normalised(cands))
    }

    /// Drop zero weights (sorted last) and normalise.
    fn normalised(mut cands: Vec<(u32, f64)>) -> Distribution {
        let positive = cands.partition_point(|c| c.1 > 0.0);
        cands.truncate(positive);
        let kept: f64 = cands.iter().map(|c| c.1).sum();
        for c in &mut cands {
            c.1 /= kept;
        }
        let total = cands.iter().map(|c| c.1).sum();
        Distribution {
            candidates: cands,
            total,
        }
    }

    /// Inverse CDF: walks the candidates (most probable first) and returns the
    /// first token whose cumulative probability exceeds `u`. `u` should be in
    /// [0, 1); values outside are clamped and NaN counts as 0.
    pub fn sample(&self, u: f64) -> u32 {
        let u = if u > 0.0 { u.min(1.0) } else { 0.0 };
        let target = u * self.total;
        let mut cum = 0.0;
        for &(token, p) in &self.candidates {
            cum += p;
            if target < cum {
                return token;
            }
        }
        self.candidates.last().map_or(0, |c| c.0)
    }

    /// The probability of `token` (0 when it was cut). Linear in [`len`](Self::len).
    pub fn prob(&self, token: u32) -> f64 {
        self.candidates
            .iter()
            .find(|c| c.0 == token)
            .map_or(0.0, |c| c.1)
    }

    /// Number of candidates (≥ 1).
    pub fn len(&self) -> usize {
        self.candidates.len()
    }

    /// Always false: a distribution keeps at least its top token.
    pub fn is_empty(&self) -> bool {
        self.candidates.is_empty()
    }

    /// The most probable token (lowest id among equals).
    pub fn argmax(&self) -> u32 {
        self.candidates.first().map_or(0, |c| c.0)
    }

    /// The candidates, most probable first.
    pub fn candidates(&self) -> &[(u32, f64)] {
        &self.candidates
    }
}

/// Sorts the most probable prefix of `cands` just far enough to find the
/// smallest one with mass ≥ `target` (minus the slack) and returns its length
/// (≥ 1 when `cands` is non-empty). Batches of 64, 128, 256, … are selected
/// from the unsorted rest with `select_nth_unstable` and sorted.
fn sorted_top_p_prefix(cands: &mut [(u32, f64)], target: f64) -> usize {
    let target = target * (1.0 - TOP_P_SLACK);
    let len = cands.len();
    let (mut sorted, mut batch, mut cum) = (0, TOP_P_FIRST_BATCH, 0.0);
    while sorted < len {
        // Once a batch would cover half of what is left, sort all of it.
        let end = if batch >= (len - sorted) / 2 {
            len
        } else {
            sorted + batch
        };
        let rest = &mut cands[sorted..];
        if end < len {
            rest.select_nth_unstable_by(end - sorted - 1, by_prob_desc);
        }
        rest[..end - sorted].sort_unstable_by(by_prob_desc);
        for (j, c) in cands[sorted..end].iter().enumerate() {
            cum += c.1;
            if cum >= target {
                return sorted + j + 1;
            }
        }
        sorted = end;
        batch = batch.saturating_mul(2);
    }
    len
}

#[cfg(test)]
mod tests;

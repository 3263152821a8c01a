//! Per-position token statistics (METHOD.md §1) from a base and an RL logit vector.
//!
//! With `x = z − max z`, `e = exp(x)`, `S = Σ e` and `L = max z + ln S`
//! (so `log π(v) = z_v − L`), everything reduces to a few sums:
//!
//! - `H(π)         = ln S − Σ e·x / S`
//! - `KL(R‖B)      = Σ e_R·d / S_R − (L_R − L_B)`,  with `d = z_R − z_B`
//! - `KL(B‖R)      = −Σ e_B·d / S_B + (L_R − L_B)`
//! - `Δlog p(y)    = d_y − (L_R − L_B)`
//! - `L_R − L_B    = (m_R − m_B) + ln(S_R / S_B)`
//!
//! [`token_metrics`] makes two passes over the vocabulary: one for the maxima
//! (and finiteness), one fused pass for the exps, the six sums and the ranks.
//! The exps are evaluated in f64 with a vectorisable polynomial, and the sums
//! are accumulated in f64 lanes. Written this way, identical base and RL logits
//! give `d = 0` and `S_R = S_B` bit for bit, so Δlog p, both KLs and JS are
//! exactly `0.0`.
//!
//! Why not `exp` in f32: it would be faster, but f32 carries ~6e-8 relative
//! error per term, which puts the KL of two close models (often 1e-4 or less)
//! off by up to ~1e-7 absolute. f64 keeps every statistic within ~1e-13 of a
//! naive f64 reference over a 49,152-token vocabulary.

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::exp::exp_nonpos;

/// Which of the two models a logit vector belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Model {
    Base,
    Rl,
}

impl std::fmt::Display for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Model::Base => "base model",
            Model::Rl => "RL model",
        })
    }
}

/// Errors from the sampler math.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum MetricsError {
    #[error("the base and RL logit vectors differ in length: {base} vs {rl} entries")]
    LengthMismatch { base: usize, rl: usize },
    #[error("empty vocabulary: there are no logits to normalise")]
    EmptyVocab,
    #[error("token {token} is out of range for a vocabulary of {vocab} entries")]
    TokenOutOfRange { token: usize, vocab: usize },
    #[error("non-finite logit at vocab index {index} in the {model}")]
    NonFiniteLogit { model: Model, index: usize },
    #[error("non-finite logit at vocab index {index}")]
    NonFiniteInput { index: usize },
    #[error("{what} came out non-finite ({value}) although every logit was finite")]
    NonFiniteResult { what: &'static str, value: f64 },
    #[error("output buffer has {out} entries but there are {logits} logits")]
    OutputLength { logits: usize, out: usize },
}

/// Statistics of one response token under both models (METHOD.md §1).
/// Log-probabilities and divergences are in nats.
///
/// Deserialized (from `dlogp score` rows, by `analysis::read_scores`), the
/// ranks may be absent and read as 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct TokenMetrics {
    /// log π_B(y_t)
    pub logp_base: f64,
    /// log π_R(y_t)
    pub logp_rl: f64,
    /// log π_R(y_t) − log π_B(y_t); > 0 means RL promoted the token.
    pub dlogp: f64,
    /// H(π_B) = −Σ π_B log π_B
    pub entropy_base: f64,
    /// H(π_R)
    pub entropy_rl: f64,
    /// KL(π_R ‖ π_B)
    pub kl: f64,
    /// KL(π_B ‖ π_R)
    pub kl_r: f64,
    /// ½ (kl + kl_r)
    pub js: f64,
    /// Vocabulary entries with a strictly larger base logit (0 = argmax).
    #[serde(default)]
    pub rank_base: u32,
    /// Vocabulary entries with a strictly larger RL logit (0 = argmax).
    #[serde(default)]
    pub rank_rl: u32,
}

/// Lanes of the fused pass; enough independent accumulators for the compiler
/// to vectorise and to hide the latency of the additions.
const LANES: usize = 4;

/// Relative size below which a negative entropy or KL is rounding noise.
const CLAMP_REL: f64 = 1e-12;

/// The six sums and two rank counts of the fused pass.
#[derive(Default)]
struct Sums {
    s_b: f64,
    s_r: f64,
    ex_b: f64,
    ex_r: f64,
    ed_r: f64,
    ed_b: f64,
    above_b: usize,
    above_r: usize,
}

/// Computes [`TokenMetrics`] for `token` from the two full logit vectors.
///
/// Errors on different lengths, an empty vocabulary, a token out of range, or
/// any NaN/infinite logit (naming the model and index). Entropies and KLs that
/// come out negative only by rounding (|value| < 1e-12 of the terms they are
/// the difference of) are clamped to 0; anything larger is returned as is.
pub fn token_metrics(
    logits_base: &[f32],
    logits_rl: &[f32],
    token: usize,
) -> Result<TokenMetrics, MetricsError> {
    let (zb, zr) = (logits_base, logits_rl);
    if zb.len() != zr.len() {
        return Err(MetricsError::LengthMismatch {
            base: zb.len(),
            rl: zr.len(),
        });
    }
    if zb.is_empty() {
        return Err(MetricsError::EmptyVocab);
    }
    if token >= zb.len() {
        return Err(MetricsError::TokenOutOfRange {
            token,
            vocab: zb.len(),
        });
    }
    let m_b = f64::from(checked_max(zb, Model::Base)?);
    let m_r = f64::from(checked_max(zr, Model::Rl)?);
    let s = fused_sums(zb, zr, m_b, m_r, zb[token], zr[token]);

    // L_R − L_B; exactly 0 when the vectors are identical.
    let dl = (m_r - m_b) + (s.s_r / s.s_b).ln();
    let d_tok = f64::from(zr[token]) - f64::from(zb[token]);
    let logp_base = f64::from(zb[token]) - m_b - s.s_b.ln();
    let logp_rl = f64::from(zr[token]) - m_r - s.s_r.ln();
    let dlogp = d_tok - dl;

    let entropy_base = clamp_rounding(s.s_b.ln(), s.ex_b / s.s_b);
    let entropy_rl = clamp_rounding(s.s_r.ln(), s.ex_r / s.s_r);
    let kl = clamp_rounding(s.ed_r / s.s_r, dl);
    let kl_r = clamp_rounding(dl, s.ed_b / s.s_b);
    let js = 0.5 * (kl + kl_r);

    let metrics = TokenMetrics {
        logp_base,
        logp_rl,
        dlogp,
        entropy_base,
        entropy_rl,
        kl,
        kl_r,
        js,
        rank_base: u32::try_from(s.above_b).unwrap_or(u32::MAX),
        rank_rl: u32::try_from(s.above_r).unwrap_or(u32::MAX),
    };
    check_finite(&metrics)?;
    Ok(metrics)
}

/// Statistics of one response token under a single model (`dlogp score`
/// without an RL model).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct SingleMetrics {
    /// log π(y_t)
    pub logp: f64,
    /// H(π) = −Σ π log π
    pub entropy: f64,
    /// Vocabulary entries with a strictly larger logit (0 = argmax).
    pub rank: u32,
}

/// [`TokenMetrics`]' single-model half: log-probability, entropy and rank of
/// `token`. Same numerics and errors (a bad logit is reported in the base model).
pub fn single_metrics(logits: &[f32], token: usize) -> Result<SingleMetrics, MetricsError> {
    if logits.is_empty() {
        return Err(MetricsError::EmptyVocab);
    }
    if token >= logits.len() {
        return Err(MetricsError::TokenOutOfRange {
            token,
            vocab: logits.len(),
        });
    }
    let m = f64::from(checked_max(logits, Model::Base)?);
    let tok = logits[token];
    let mut s = [0.0f64; LANES];
    let mut ex = [0.0f64; LANES];
    let mut above = [0usize; LANES];
    let chunks = logits.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            let x = f64::from(c[i]) - m;
            let e = exp_nonpos(x);
            s[i] += e;
            ex[i] += e * x;
            above[i] += usize::from(c[i] > tok);
        }
    }
    for &v in tail {
        let x = f64::from(v) - m;
        let e = exp_nonpos(x);
        s[0] += e;
        ex[0] += e * x;
        above[0] += usize::from(v > tok);
    }
    let (s, ex): (f64, f64) = (s.iter().sum(), ex.iter().sum());
    let metrics = SingleMetrics {
        logp: f64::from(tok) - m - s.ln(),
        entropy: clamp_rounding(s.ln(), ex / s),
        rank: u32::try_from(above.iter().sum::<usize>()).unwrap_or(u32::MAX),
    };
    for (what, value) in [("logp", metrics.logp), ("entropy", metrics.entropy)] {
        if !value.is_finite() {
            return Err(MetricsError::NonFiniteResult { what, value });
        }
    }
    Ok(metrics)
}

/// Max of a logit vector, or an error naming the first non-finite entry.
fn checked_max(z: &[f32], model: Model) -> Result<f32, MetricsError> {
    let mut max = [f32::NEG_INFINITY; LANES];
    let mut finite = [true; LANES];
    let chunks = z.chunks_exact(LANES);
    let tail = chunks.remainder();
    for c in chunks {
        for i in 0..LANES {
            max[i] = if c[i] > max[i] { c[i] } else { max[i] };
            finite[i] &= c[i].is_finite();
        }
    }
    for &v in tail {
        max[0] = if v > max[0] { v } else { max[0] };
        finite[0] &= v.is_finite();
    }
    if finite.iter().all(|&f| f) {
        Ok(max.into_iter().fold(f32::NEG_INFINITY, f32::max))
    } else {
        let index = z.iter().position(|v| !v.is_finite()).unwrap_or(0);
        Err(MetricsError::NonFiniteLogit { model, index })
    }
}

/// The fused second pass: exps of both vectors, six sums, two rank counts.
fn fused_sums(zb: &[f32], zr: &[f32], m_b: f64, m_r: f64, tok_b: f32, tok_r: f32) -> Sums {
    let mut s_b = [0.0f64; LANES];
    let mut s_r = [0.0f64; LANES];
    let mut ex_b = [0.0f64; LANES];
    let mut ex_r = [0.0f64; LANES];
    let mut ed_r = [0.0f64; LANES];
    let mut ed_b = [0.0f64; LANES];
    let mut above_b = [0usize; LANES];
    let mut above_r = [0usize; LANES];

    let cb = zb.chunks_exact(LANES);
    let cr = zr.chunks_exact(LANES);
    let (tail_b, tail_r) = (cb.remainder(), cr.remainder());
    for (b, r) in cb.zip(cr) {
        for i in 0..LANES {
            let (vb, vr) = (f64::from(b[i]), f64::from(r[i]));
            let (xb, xr) = (vb - m_b, vr - m_r);
            let (eb, er) = (exp_nonpos(xb), exp_nonpos(xr));
            let d = vr - vb;
            s_b[i] += eb;
            s_r[i] += er;
            ex_b[i] += eb * xb;
            ex_r[i] += er * xr;
            ed_r[i] += er * d;
            ed_b[i] += eb * d;
            above_b[i] += usize::from(b[i] > tok_b);
            above_r[i] += usize::from(r[i] > tok_r);
        }
    }
    for (&b, &r) in tail_b.iter().zip(tail_r) {
        let (vb, vr) = (f64::from(b), f64::from(r));
        let (xb, xr) = (vb - m_b, vr - m_r);
        let (eb, er) = (exp_nonpos(xb), exp_nonpos(xr));
        let d = vr - vb;
        s_b[0] += eb;
        s_r[0] += er;
        ex_b[0] += eb * xb;
        ex_r[0] += er * xr;
        ed_r[0] += er * d;
        ed_b[0] += eb * d;
        above_b[0] += usize::from(b > tok_b);
        above_r[0] += usize::from(r > tok_r);
    }
    Sums {
        s_b: s_b.iter().sum(),
        s_r: s_r.iter().sum(),
        ex_b: ex_b.iter().sum(),
        ex_r: ex_r.iter().sum(),
        ed_r: ed_r.iter().sum(),
        ed_b: ed_b.iter().sum(),
        above_b: above_b.iter().sum(),
        above_r: above_r.iter().sum(),
    }
}

/// `a − b` for a quantity that is ≥ 0 in exact arithmetic: a negative result
/// within rounding of the operands becomes 0, a larger one is kept.
fn clamp_rounding(a: f64, b: f64) -> f64 {
    let v = a - b;
    if v < 0.0 && -v <= CLAMP_REL * (a.abs() + b.abs()) {
        0.0
    } else {
        v
    }
}

fn check_finite(m: &TokenMetrics) -> Result<(), MetricsError> {
    let fields = [
        ("logp_base", m.logp_base),
        ("logp_rl", m.logp_rl),
        ("dlogp", m.dlogp),
        ("entropy_base", m.entropy_base),
        ("entropy_rl", m.entropy_rl),
        ("kl", m.kl),
        ("kl_r", m.kl_r),
        ("js", m.js),
    ];
    match fields.into_iter().find(|(_, v)| !v.is_finite()) {
        Some((what, value)) => Err(MetricsError::NonFiniteResult { what, value }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests;

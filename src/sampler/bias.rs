//! Per-token additive biases on the log-probs a token is drawn from
//! (OpenAI's `logit_bias`): `lp[v] + bias[v]`, renormalised by whatever
//! samples from it. Pure math, no model.

use std::borrow::Cow;

/// The largest |bias|, as in OpenAI's API (−100 practically bans a token,
/// +100 practically forces it).
pub const MAX_LOGIT_BIAS: f64 = 100.0;

/// A validated set of biases: distinct token ids in increasing order, each
/// with a finite bias in [−100, 100]. Empty by default (no bias).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LogitBias(Vec<(u32, f64)>);

/// Why a bias set is invalid.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum BiasError {
    #[error("the bias of token {token} must be a finite number between -100 and 100, got {value}")]
    Value { token: u32, value: f64 },
    #[error("token {token} is outside the vocabulary of {n_vocab}")]
    Token { token: u32, n_vocab: usize },
}

impl LogitBias {
    /// Check and sort `entries`; a token given twice keeps its last bias.
    /// Ids must be below `n_vocab`.
    pub fn new(entries: Vec<(u32, f64)>, n_vocab: usize) -> Result<LogitBias, BiasError> {
        for &(token, value) in &entries {
            if !(value.is_finite() && value.abs() <= MAX_LOGIT_BIAS) {
                return Err(BiasError::Value { token, value });
            }
            if token as usize >= n_vocab {
                return Err(BiasError::Token { token, n_vocab });
            }
        }
        let mut entries = entries;
        // stable: among equal ids the last one given stays last
        entries.sort_by_key(|e| e.0);
        let mut out: Vec<(u32, f64)> = Vec::with_capacity(entries.len());
        for e in entries {
            match out.last_mut() {
                Some(last) if last.0 == e.0 => *last = e,
                _ => out.push(e),
            }
        }
        Ok(LogitBias(out))
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The (token, bias) pairs, by increasing token id.
    pub fn entries(&self) -> &[(u32, f64)] {
        &self.0
    }

    /// `lp` with the biases added (borrowed unchanged when there are none).
    /// Not renormalised: [`Distribution::from_logprobs`](super::Distribution::from_logprobs)
    /// normalises what it samples from.
    pub fn apply<'a>(&self, lp: &'a [f64]) -> Cow<'a, [f64]> {
        if self.0.is_empty() {
            return Cow::Borrowed(lp);
        }
        let mut out = lp.to_vec();
        for &(t, b) in &self.0 {
            if let Some(v) = out.get_mut(t as usize) {
                *v += b;
            }
        }
        Cow::Owned(out)
    }

    /// `lp` with the biases added and renormalised to log-probs again (a
    /// no-op without biases).
    pub fn apply_normalised<'a>(&self, lp: &'a [f64]) -> Cow<'a, [f64]> {
        let biased = self.apply(lp);
        if self.0.is_empty() {
            return biased;
        }
        let mut v = biased.into_owned();
        let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        if max.is_finite() {
            let sum: f64 = v.iter().map(|&x| (x - max).exp()).sum();
            let lse = max + sum.ln();
            for x in &mut v {
                *x -= lse;
            }
        }
        Cow::Owned(v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn biases_are_checked_sorted_and_added() {
        let b = LogitBias::new(vec![(2, 1.0), (0, -100.0), (2, 0.5)], 3).unwrap();
        assert_eq!(b.entries(), &[(0, -100.0), (2, 0.5)]);
        let lp = [-1.0, -2.0, -3.0];
        assert_eq!(&*b.apply(&lp), &[-101.0, -2.0, -2.5]);
        let n = b.apply_normalised(&lp);
        let total: f64 = n.iter().map(|x| x.exp()).sum();
        assert!((total - 1.0).abs() < 1e-12);
        // the ratio of two unbiased tokens is kept
        assert!(((n[1] - n[2]) - (-2.0 - -2.5)).abs() < 1e-12);
        assert!(matches!(LogitBias::default().apply(&lp), Cow::Borrowed(_)));
        assert_eq!(
            LogitBias::new(vec![(3, 1.0)], 3),
            Err(BiasError::Token {
                token: 3,
                n_vocab: 3
            })
        );
        for bad in [f64::NAN, 100.5, f64::INFINITY] {
            assert!(matches!(
                LogitBias::new(vec![(0, bad)], 3),
                Err(BiasError::Value { .. })
            ));
        }
    }
}

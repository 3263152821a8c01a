//! Errors from the decoding math: bad flags, bad log-prob vectors.
//!
//! Messages are lowercase and name the setting (`gamma`, `top_p`); the edge
//! that reports them (CLI flag, request field, plugin parameter) adds its own
//! spelling of it.

use thiserror::Error;

use super::gate::Criterion;
use super::metrics::Model;

/// Errors from [`SamplingParams`](super::SamplingParams),
/// [`Distribution`](super::Distribution), [`extrapolate`](super::extrapolate)
/// and [`Gate`](super::Gate).
#[derive(Debug, Clone, PartialEq, Error)]
pub enum SamplerError {
    #[error("temperature must be > 0 and finite, got {value}")]
    Temperature { value: f64 },
    #[error("top_p must be in (0, 1], got {value}")]
    TopP { value: f64 },
    #[error("gamma must be >= 0 and finite, got {value}")]
    Gamma { value: f64 },
    #[error("tau must be finite for criterion {criterion}, got {value}")]
    TauNotFinite { criterion: Criterion, value: f64 },
    #[error("tau for criterion random is a probability and must be in [0, 1], got {value}")]
    TauNotProbability { value: f64 },
    #[error("empty vocabulary: there are no log-probs to sample from")]
    EmptyVocab,
    #[error("a vocabulary of {len} entries does not fit u32 token ids")]
    VocabTooLarge { len: usize },
    #[error("the RL and base log-prob vectors differ in length: {rl} vs {base} entries")]
    LengthMismatch { rl: usize, base: usize },
    #[error("output buffer has {out} entries but there are {vocab} log-probs")]
    OutputLength { vocab: usize, out: usize },
    #[error("log-prob {value} at vocab index {index} (must be finite or -inf)")]
    BadLogProb { index: usize, value: f64 },
    #[error("log-prob {value} at vocab index {index} in the {model} (must be finite or -inf)")]
    BadModelLogProb {
        model: Model,
        index: usize,
        value: f64,
    },
    #[error("every token has zero probability (all log-probs are -inf)")]
    NoMass,
    #[error("no token has nonzero probability under both the RL and the base model")]
    NoCommonSupport,
    #[error("the extrapolated log-weight at vocab index {index} overflowed with gamma {gamma}")]
    ExtrapolationOverflow { index: usize, gamma: f64 },
}

//! What to decode: the mode, who proposes, the gate and the sampling
//! parameters, validated once.

use serde::{Deserialize, Serialize};

use crate::sampler::{Gate, SamplerError, SamplingParams};

/// How tokens are chosen (METHOD.md §2–3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The base model alone.
    Base,
    /// The RL model alone.
    Rl,
    /// The proposer samples; where the gate fires, re-sample from π_RL.
    Replace,
    /// The proposer samples; where the gate fires, re-sample from
    /// π_X ∝ π_RL · exp(γ Δlog p).
    Extrapolate,
    /// π_X at every token (for comparison: the paper shows it hurts).
    Global,
}

/// Which model proposes each token in `replace` / `extrapolate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Proposer {
    /// The paper's main setting: the base proposes, the RL model steps in.
    Base,
    /// The second variant: the RL model proposes and is extrapolated.
    Rl,
}

/// One side of a pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Base,
    Rl,
}

/// A validated decoding configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeConfig {
    pub mode: Mode,
    pub proposer: Proposer,
    pub gate: Gate,
    pub gamma: f64,
    pub sampling: SamplingParams,
    pub seed: u64,
}

impl DecodeConfig {
    /// Validate the parts that interact (each part validates itself).
    pub fn new(
        mode: Mode,
        proposer: Proposer,
        gate: Gate,
        gamma: f64,
        sampling: SamplingParams,
        seed: u64,
    ) -> Result<DecodeConfig, SamplerError> {
        sampling.validate()?;
        if !(gamma.is_finite() && gamma >= 0.0) {
            return Err(SamplerError::Gamma { value: gamma });
        }
        Ok(DecodeConfig {
            mode,
            proposer,
            gate,
            gamma,
            sampling,
            seed,
        })
    }

    /// Whether the base model has to be evaluated.
    pub fn needs_base(&self) -> bool {
        self.mode != Mode::Rl
    }

    /// Whether the RL model has to be evaluated.
    pub fn needs_rl(&self) -> bool {
        self.mode != Mode::Base
    }

    /// The model whose own samples are the proposals, when there is one
    /// (`global` samples π_X directly).
    pub fn proposer_side(&self) -> Option<Side> {
        match (self.mode, self.proposer) {
            (Mode::Base, _) => Some(Side::Base),
            (Mode::Rl, _) => Some(Side::Rl),
            (Mode::Global, _) => None,
            (_, Proposer::Base) => Some(Side::Base),
            (_, Proposer::Rl) => Some(Side::Rl),
        }
    }

    /// Whether drafting ahead with the proposer and checking with the other
    /// model in one batch can apply: both models are needed, and a proposal
    /// stands unless the gate fires.
    pub fn can_speculate(&self) -> bool {
        matches!(self.mode, Mode::Replace | Mode::Extrapolate)
    }
}

//! Two-model generation: selective replace and extrapolation (METHOD.md
//! §2–3), in lockstep or speculatively, for many sequences at once.

mod config;
mod engine;
mod job;
mod par;
mod spec;
pub mod step;
mod text;

pub use config::{
    defaults, ConfigError, ConfigPatch, DecodeConfig, Field, Mode, Proposer, Side, SpecError,
    MAX_GAMMA,
};
pub use engine::{Engine, EngineOptions, PromptStats, MIN_SHARED_PREFIX};
pub use job::{Finish, Generation, Job, JobSource, Request, TokenEvent, TokenLogprobs, TraceEntry};
pub use spec::{parse_specs, ConfigSpec};
pub use text::TextStream;

use crate::runtime::RuntimeError;
use crate::sampler::SamplerError;

/// What can go wrong while decoding.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error(transparent)]
    Runtime(RuntimeError),
    #[error(transparent)]
    Sampler(#[from] SamplerError),
    #[error("invalid {0}")]
    Config(#[from] ConfigError),
    #[error("invalid option: {0}")]
    Invalid(String),
    #[error("mode `{}` needs an RL model", .0.name())]
    NeedsRl(Mode),
    #[error("prompt {index} has {n_tokens} tokens, which leaves no room to generate in the context of {n_ctx}")]
    PromptTooLong {
        index: usize,
        n_tokens: usize,
        n_ctx: usize,
    },
    #[error("numerical error: {0}")]
    Numerics(String),
}

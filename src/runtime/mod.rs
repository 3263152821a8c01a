//! The only user of llama.cpp (through `llama-cpp-2`): the backend, models,
//! pairs, chat templates and batched teacher-forced scoring.

mod backend;
pub mod chat;
mod eval;
mod model;
mod noise;
mod pair;
mod probe;
mod prompt;
mod score;
mod session;
mod token;

use std::path::PathBuf;

#[cfg(feature = "shared-llama")]
pub(crate) use backend::adopt_host_backend;
pub use backend::{backend, default_threads, llamafile_gemm, system_info};
pub use chat::{ChatMessage, ChatTemplate, ChatTemplateError};
pub use eval::plain_logits;
pub use llama_cpp_2::context::LlamaContext;
pub use model::{ContextOptions, LoadOptions, Model};
pub use noise::{noise_floor_dlogp, NoiseProbe};
pub use pair::{check_vocab, ModelPair, PairSpec, RlSource};
pub use probe::{
    batch_invariance, devices, has_offload_device, model_batch_invariance, BatchInvariance, Device,
    ProbeOptions,
};
pub use prompt::PromptFormat;
pub use score::{Overlap, ScoreOptions, ScoreSequence, Scorer};
pub use session::{Feed, PairSession, Session};
pub use token::Token;

use crate::gguf::GgufError;

/// A context for `tokens` tokens, rounded up to a multiple of 256 as
/// llama.cpp pads it (so a total that is not divisible by the sequence
/// count is never rounded down below what a sequence needs).
pub fn padded_context(tokens: usize) -> u32 {
    u32::try_from(tokens.div_ceil(256) * 256).unwrap_or(u32::MAX)
}

/// Everything that can go wrong between dlogp and llama.cpp.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("could not initialise llama.cpp: {0}")]
    Backend(String),
    #[error("{path}: no such file\nhint: check the path; the default model is fetched by scripts/fetch-model.sh")]
    NotFound { path: PathBuf },
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error("{path}: metadata key `{key}` is missing")]
    MissingKey { path: PathBuf, key: &'static str },
    #[error("{path} is a LoRA adapter, not a model\nhint: pass it as the RL side (`rl_lora`)")]
    AdapterGivenAsModel { path: PathBuf },
    #[error("{path} is not a LoRA adapter (needs general.type = \"adapter\" and adapter.type = \"lora\")")]
    NotAnAdapter { path: PathBuf },
    #[error(
        "{adapter} is an adapter for architecture `{adapter_arch}`, but {model} is `{model_arch}`"
    )]
    AdapterArchitecture {
        adapter: PathBuf,
        adapter_arch: String,
        model: PathBuf,
        model_arch: String,
    },
    #[error("{adapter} does not fit {model}: {detail}")]
    AdapterTensor {
        adapter: PathBuf,
        model: PathBuf,
        detail: String,
    },
    #[error("llama.cpp could not load {path}: {reason} (its log above says why)")]
    Load { path: PathBuf, reason: String },
    #[error("llama.cpp could not create a context for {path}: {reason}")]
    Context { path: PathBuf, reason: String },
    #[error("{base} and {rl} have different vocabularies: {detail}\nhint: a pair must share one tokenizer; use models from the same family")]
    VocabMismatch {
        base: PathBuf,
        rl: PathBuf,
        detail: String,
    },
    #[error("invalid `{name}`: {reason}")]
    InvalidOption { name: &'static str, reason: String },
    #[error("{row}: {n_tokens} tokens do not fit the context of {n_ctx}\nhint: raise `ctx_size`, or pass `truncate` to cut long responses")]
    TooLong {
        row: String,
        n_tokens: usize,
        n_ctx: usize,
    },
    #[error("{row}: the prompt has {n_tokens} tokens, which leaves no room to generate in the context of {n_ctx}\nhint: raise `ctx_size`, or shorten the prompt")]
    PromptTooLong {
        row: String,
        n_tokens: String,
        n_ctx: usize,
    },
    #[error("{row}: {reason}")]
    Row { row: String, reason: String },
    #[error("llama.cpp failed to decode on the {model} model: {reason}")]
    Decode { model: &'static str, reason: String },
    #[error("internal batching error: {0}")]
    Batch(String),
    #[error("{0}")]
    Output(String),
}

/// The context size to run at: `asked`, or without it 4096 capped by the
/// model's training context (`n_ctx_train`, 0 when unknown). More than the
/// training context is allowed, with a warning.
pub fn context_size(asked: Option<u32>, n_ctx_train: u32) -> Result<u32, RuntimeError> {
    match asked {
        Some(0) => Err(RuntimeError::InvalidOption {
            name: "ctx_size",
            reason: "must be positive".to_string(),
        }),
        Some(n) => {
            if n > n_ctx_train && n_ctx_train > 0 {
                tracing::warn!(
                    "a context size of {n} exceeds the model's training context of {n_ctx_train}"
                );
            }
            Ok(n)
        }
        None => Ok(if n_ctx_train > 0 {
            n_ctx_train.min(4096)
        } else {
            4096
        }),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn context_size_defaults_to_4096_within_the_training_context() {
        use super::context_size;
        assert_eq!(context_size(None, 0).unwrap(), 4096);
        assert_eq!(context_size(None, 256).unwrap(), 256);
        assert_eq!(context_size(None, 8192).unwrap(), 4096);
        assert_eq!(context_size(Some(9000), 256).unwrap(), 9000);
        let e = context_size(Some(0), 256).unwrap_err().to_string();
        assert_eq!(e, "invalid `ctx_size`: must be positive");
    }
}

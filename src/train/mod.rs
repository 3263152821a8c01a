//! The RLVR trainer (METHOD.md §4): a LoRA policy on an f32 llama forward in
//! candle, trained with DAPO and optional token reweighting, written out as a
//! GGUF LoRA adapter llama.cpp loads.
//!
//! - [`ops`]: RMSNorm, RoPE (adjacent pairs), softmax and log-softmax
//!   composed from candle's differentiable primitives (candle's fused kernels
//!   have no backward and silently cut gradients).
//! - [`frozen`]: a frozen base weight as a custom op: f32 GEMM forward,
//!   input gradient only backward.
//! - [`fused`]: CPU kernels with explicit backward passes for the causal
//!   softmax, RMSNorm and log-softmax + gather (equal to the compositions).
//! - [`model`]: the llama forward from a GGUF's dequantized weights with LoRA
//!   on configurable projections and layers; adapter export.
//! - [`loss`]: pure functions: group advantages, reweighting, the DAPO
//!   token loss and its gradient, overlong shaping, dynamic sampling.
//! - [`rollout`]: G samples per prompt by llama.cpp with the current adapter.
//! - [`trainer`]: the loop: rollouts, rewards, π_old, DAPO updates,
//!   checkpoints and resume.
//! - [`optim`]: AdamW with warm-up, weight decay, gradient clipping and
//!   accumulation over plain f32 slices.
//!
//! Threads: candle's CPU pool spins; set [`THREAD_ENV`] and call
//! [`init_threads`] before the first tensor operation (1 thread was fastest
//! on a 2-core laptop).

pub mod config;
pub mod frozen;
pub mod fused;
pub mod loss;
pub mod model;
pub mod ops;
pub mod optim;
pub mod rollout;
pub mod trainer;

pub use config::{LoraConfig, LoraTarget, Reweight};
pub use model::{default_device, Policy, PolicyShape};
pub use trainer::{StepMetrics, TrainSettings, Trainer};

use std::path::PathBuf;

use crate::gguf::GgufError;

/// What can go wrong in the trainer.
#[derive(Debug, thiserror::Error)]
pub enum TrainError {
    #[error(transparent)]
    Gguf(#[from] GgufError),
    #[error(transparent)]
    Runtime(#[from] crate::runtime::RuntimeError),
    #[error(transparent)]
    Decode(#[from] crate::decode::DecodeError),
    #[error(transparent)]
    Sampler(#[from] crate::sampler::SamplerError),
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a checkpoint of this run: {reason}")]
    Checkpoint { path: PathBuf, reason: String },
    #[error("tensor computation failed: {0}")]
    Candle(#[from] candle_core::Error),
    #[error("{path}: architecture `{arch}` is not supported by the trainer (supported: llama)\nhint: the trainer implements the llama forward (Llama, SmolLM, Mistral-style models)")]
    UnsupportedArchitecture { path: PathBuf, arch: String },
    #[error("{path}: the trainer needs {what}, which the file does not have")]
    Missing { path: PathBuf, what: String },
    #[error("{path}: {what} is not supported by the trainer")]
    Unsupported { path: PathBuf, what: String },
    #[error("invalid `{name}`: {reason}")]
    Invalid { name: &'static str, reason: String },
    #[error("token id {token} is outside the vocabulary of {n_vocab}")]
    TokenOutOfRange { token: u32, n_vocab: usize },
    #[error("numerical error: {0}")]
    Numerics(String),
}

/// The environment variables that size candle's CPU thread pools (GEMM and
/// element-wise); candle has no other knob and reads them once. A program
/// sets them (unless the user did) before its first tensor operation and
/// before it starts threads; the library never changes the environment.
pub const THREAD_ENV: [&str; 2] = ["CANDLE_NUM_THREADS", "RAYON_NUM_THREADS"];

/// Prepare the process for training: keep freed memory in the heap (see
/// `keep_freed_memory`). Returns the number of candle threads in effect
/// (from [`THREAD_ENV`]; 1 when unset).
pub fn init_threads() -> usize {
    keep_freed_memory();
    std::env::var("CANDLE_NUM_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1)
}

/// Training allocates and frees tensors of tens of MB every step (the logits
/// of one sequence alone are seq × n_vocab floats). glibc serves those with
/// fresh `mmap`s and hands them back on free, so each step paid for zeroed
/// pages again (~6 % of a step in page faults). Keep freed memory in the
/// heap instead: the largest mmap threshold glibc allows, and no trimming.
// The one `unsafe` outside the plugin: glibc's allocator knobs have no safe
// wrapper.
#[allow(unsafe_code)]
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters; it is called before
    // the training threads start.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, i32::MAX);
    }
}

//! dlogp: the direction of RLVR updates, Δlog p = log p_RL − log p_base,
//! measured and exploited on GGUF models through llama.cpp.
//!
//! # Pipeline
//!
//! ```text
//!  rows.jsonl ──► io::read_rows ──► runtime::PromptFormat (chat template, tokenizer)
//!                                        │
//!  base.gguf ─┐                          ▼
//!             ├─► runtime::ModelPair ──► runtime::Scorer (packed batches, two contexts)
//!  rl.gguf /  ┘                          │  raw logits of both models per position
//!  adapter                               ▼
//!                               sampler::token_metrics (Δlog p, entropy, KL, JS, ranks)
//!                                        │
//!                                        ▼
//!                     tokens.jsonl + analysis::ScoreSummary (quantiles, sparsity)
//! ```
//!
//! - [`gguf`]: a pure-Rust GGUF v3 reader and writer (headers, metadata,
//!   tensor infos, LoRA adapters, test fixtures), used to validate every file
//!   before llama.cpp sees it and to write adapters llama.cpp loads.
//! - [`runtime`]: the only module that talks to llama.cpp.
//! - [`sampler`]: pure math over logit slices; no FFI.
//! - [`analysis`]: summary statistics, the score record, `dlogp analyze`'s
//!   report (one document model, rendered to Markdown or HTML).
//! - [`eval`]: verifiable evaluation (datasets, grading, Avg@k / Pass@k) and
//!   the experiments on it: the bench `eval`, `intervene` and `analyze` run
//!   on, τ calibration, the token-replacement sweep.
//! - [`io`]: JSONL rows in, atomic files out.
//! - [`decode`]: the generation engine (lockstep and speculative, many
//!   sequences side by side, a job source for servers).
//! - [`serve`]: the OpenAI-compatible HTTP server (`dlogp serve`).
//! - [`plugin`]: `libdlogp`, a llama.cpp sampler for C hosts (the cdylib;
//!   header `include/dlogp.h`).
//! - [`train`]: the candle-based RLVR trainer (DAPO + reweighting) that
//!   writes GGUF LoRA adapters.
//! - [`cli`]: the `dlogp` command line (the only place with `anyhow` and
//!   progress bars).

pub mod analysis;
pub mod cli;
pub mod decode;
pub mod eval;
pub mod gguf;
pub mod io;
#[cfg(feature = "plugin")]
pub mod plugin;
pub mod runtime;
pub mod sampler;
#[cfg(feature = "serve")]
pub mod serve;
#[cfg(feature = "train")]
pub mod train;

pub use gguf::{GgufFile, GgufWriter};
pub use runtime::{ModelPair, PairSpec, RlSource, Scorer};
pub use sampler::{token_metrics, TokenMetrics};

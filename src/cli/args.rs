//! Arguments shared by commands that load models.

use std::path::PathBuf;

use clap::Args;

use crate::runtime::{default_threads, LoadOptions, PairSpec, RlSource};

/// Where models run.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// CPU threads (default: the machine's physical cores).
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
    /// Layers to offload to the GPU in CUDA/Metal/Vulkan builds (0: CPU only).
    #[arg(long, default_value_t = 999)]
    pub gpu_layers: u32,
    /// Context size in tokens (default: 4096, or the model's training context if smaller).
    #[arg(long, short = 'c')]
    pub ctx_size: Option<u32>,
    /// Tokens per llama.cpp decode call.
    #[arg(long, short = 'b', default_value_t = 512)]
    pub batch_size: u32,
    /// Use flash attention (faster on some GPUs; on CPU it makes results
    /// depend on how tokens are batched, so it is off by default).
    #[arg(long)]
    pub flash_attn: bool,
}

impl ModelArgs {
    pub fn threads(&self) -> anyhow::Result<usize> {
        match self.threads {
            Some(0) => anyhow::bail!("invalid --threads: must be at least 1"),
            Some(n) => Ok(n),
            None => Ok(default_threads()),
        }
    }

    pub fn load_options(&self) -> LoadOptions {
        LoadOptions {
            n_gpu_layers: self.gpu_layers,
        }
    }

    /// The context size: as asked, or 4096 capped by the model's training context.
    pub fn ctx_size(&self, n_ctx_train: u32) -> anyhow::Result<u32> {
        match self.ctx_size {
            Some(0) => anyhow::bail!("invalid --ctx-size: must be positive"),
            Some(n) => {
                if n > n_ctx_train && n_ctx_train > 0 {
                    tracing::warn!(
                        "--ctx-size {n} exceeds the model's training context of {n_ctx_train}"
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
}

/// A base model and, optionally, the RL side of a pair.
#[derive(Debug, Clone, Args)]
pub struct PairArgs {
    /// The base model (GGUF).
    #[arg(long, value_name = "GGUF")]
    pub base: PathBuf,
    /// The RL model (GGUF with the same vocabulary as the base).
    #[arg(long, value_name = "GGUF", conflicts_with = "rl_lora")]
    pub rl: Option<PathBuf>,
    /// The RL side as a LoRA adapter on the base (GGUF adapter); the weights
    /// are loaded once and shared by both contexts.
    #[arg(long, value_name = "GGUF")]
    pub rl_lora: Option<PathBuf>,
    /// Scale of the LoRA adapter.
    #[arg(long, default_value_t = 1.0, requires = "rl_lora")]
    pub lora_scale: f32,
}

impl PairArgs {
    /// The pair to load, or `None` when only `--base` was given.
    pub fn spec(&self) -> Option<PairSpec> {
        let rl = match (&self.rl, &self.rl_lora) {
            (Some(path), _) => RlSource::Model(path.clone()),
            (None, Some(path)) => RlSource::Lora {
                path: path.clone(),
                scale: self.lora_scale,
            },
            (None, None) => return None,
        };
        Some(PairSpec {
            base: self.base.clone(),
            rl,
        })
    }
}

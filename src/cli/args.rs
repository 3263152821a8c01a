//! Arguments shared by commands that load models.

use std::path::{Path, PathBuf};

use clap::Args;

use crate::decode::{ConfigError, ConfigPatch, DecodeConfig, Mode, Proposer};
use crate::runtime::{context_size, default_threads, LoadOptions, PairSpec, RlSource};
use crate::sampler::Criterion;

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
    /// The threads to run on. More than the machine's logical cores are
    /// clamped with a warning: llama.cpp's spinning thread barriers make an
    /// oversubscribed CPU hundreds of times slower (4 tokens of a tiny model:
    /// 0.01 s at 2 threads on 2 cores, 3.5 s at 8; 1000 threads hang).
    pub fn threads(&self) -> anyhow::Result<usize> {
        if self.batch_size == 0 {
            anyhow::bail!("invalid --batch-size: must be at least 1");
        }
        match self.threads {
            Some(0) => anyhow::bail!("invalid --threads: must be at least 1"),
            Some(n) => Ok(clamp_threads(n, "--threads")),
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
        Ok(context_size(self.ctx_size, n_ctx_train)?)
    }
}

/// `n` threads, or the machine's logical cores if that is fewer (with a
/// warning naming `flag`).
pub fn clamp_threads(n: usize, flag: &str) -> usize {
    let cores = std::thread::available_parallelism().map_or(n, |c| c.get());
    if n > cores {
        tracing::warn!(
            "{flag} {n} is more than the {cores} logical cores of this machine; using {cores} (oversubscribed llama.cpp threads spin and run many times slower)"
        );
        cores
    } else {
        n
    }
}

/// Decoding settings shared by every command that decodes: the paper's
/// settings ([`DecodeConfig::default`]) unless given. The defaults in the
/// help texts are checked against it by a test.
#[derive(Debug, Clone, Default, Args)]
pub struct DecodeArgs {
    /// Gate criterion of replace/extrapolate [default: dlogp].
    #[arg(long, value_enum)]
    pub criterion: Option<Criterion>,
    /// Gate threshold τ [default: -0.3].
    #[arg(long, allow_hyphen_values = true)]
    pub tau: Option<f64>,
    /// Extrapolation strength γ: π_X ∝ π_RL·exp(γ·Δlog p) [default: 0.1].
    #[arg(long, allow_hyphen_values = true)]
    pub gamma: Option<f64>,
    /// Who proposes in replace/extrapolate [default: base].
    #[arg(long, value_enum)]
    pub proposer: Option<Proposer>,
    /// Sampling temperature [default: 1].
    #[arg(long, visible_alias = "temp", allow_hyphen_values = true)]
    pub temperature: Option<f64>,
    /// Nucleus sampling mass, 1 = off [default: 0.7].
    #[arg(long, allow_hyphen_values = true)]
    pub top_p: Option<f64>,
    /// Keep only the k most likely tokens, 0 = off [default: 0].
    #[arg(long)]
    pub top_k: Option<usize>,
}

impl DecodeArgs {
    /// The settings given on the command line.
    pub fn patch(&self) -> ConfigPatch {
        ConfigPatch {
            criterion: self.criterion,
            tau: self.tau,
            gamma: self.gamma,
            proposer: self.proposer,
            temperature: self.temperature,
            top_p: self.top_p,
            top_k: self.top_k,
            ..ConfigPatch::default()
        }
    }

    /// The paper's settings in `mode` with `seed`, these flags on top.
    pub fn resolve(&self, mode: Mode, seed: u64) -> anyhow::Result<DecodeConfig> {
        let base = DecodeConfig::default().with_mode(mode).with_seed(seed);
        self.patch().apply(&base).map_err(flag_error)
    }
}

/// A configuration error in the CLI's words (`invalid --gamma: …`).
pub fn flag_error(e: ConfigError) -> anyhow::Error {
    anyhow::anyhow!(e.render(e.field.flag()))
}

/// The default base model, relative to the working directory (the dlogp
/// checkout): fetched by `scripts/fetch-model.sh`.
pub const DEFAULT_BASE: &str = "gguf/SmolLM2-135M-Instruct.Q4_1.gguf";
/// The default RL side: the committed adapter trained by
/// `scripts/reproduce.sh` (see gguf/README.md).
pub const DEFAULT_RL_LORA: &str = "gguf/SmolLM2-135M-Instruct.arith-lowprob.gguf";

/// A base model and, optionally, the RL side of a pair.
#[derive(Debug, Clone, Args)]
pub struct PairArgs {
    /// The base model (GGUF). Without it, dlogp uses the default pair:
    /// gguf/SmolLM2-135M-Instruct.Q4_1.gguf and, unless --rl or --rl-lora is
    /// given, the adapter gguf/SmolLM2-135M-Instruct.arith-lowprob.gguf.
    #[arg(long, value_name = "GGUF")]
    pub base: Option<PathBuf>,
    /// The RL model (GGUF with the same vocabulary as the base).
    #[arg(long, value_name = "GGUF", conflicts_with = "rl_lora")]
    pub rl: Option<PathBuf>,
    /// The RL side as a LoRA adapter on the base (GGUF adapter); the weights
    /// are loaded once and shared by both contexts.
    #[arg(long, value_name = "GGUF")]
    pub rl_lora: Option<PathBuf>,
    /// Scale of the LoRA adapter.
    #[arg(long, default_value_t = 1.0)]
    pub lora_scale: f32,
}

impl PairArgs {
    /// Fill in the default pair (see `--base`) where the user gave none;
    /// an error with a hint when those files are not here.
    pub fn resolve(mut self) -> anyhow::Result<PairArgs> {
        if self.base.is_none() {
            let missing = |what: &str, path: &str, how: &str| {
                anyhow::anyhow!(
                    "no --base given, and the default {what} {path} is not in {}\nhint: pass --base FILE (and --rl or --rl-lora), or run from the dlogp checkout {how}",
                    std::env::current_dir()
                        .map(|d| d.display().to_string())
                        .unwrap_or_else(|_| "the working directory".into())
                )
            };
            if !Path::new(DEFAULT_BASE).exists() {
                return Err(missing(
                    "model",
                    DEFAULT_BASE,
                    "after scripts/fetch-model.sh",
                ));
            }
            self.base = Some(PathBuf::from(DEFAULT_BASE));
            if self.rl.is_none() && self.rl_lora.is_none() {
                if !Path::new(DEFAULT_RL_LORA).exists() {
                    return Err(missing(
                        "adapter",
                        DEFAULT_RL_LORA,
                        "(it is committed there)",
                    ));
                }
                tracing::info!("using the default pair: {DEFAULT_BASE} + {DEFAULT_RL_LORA}");
                self.rl_lora = Some(PathBuf::from(DEFAULT_RL_LORA));
            }
        }
        if self.rl_lora.is_none() && self.lora_scale != 1.0 {
            anyhow::bail!("--lora-scale needs --rl-lora");
        }
        Ok(self)
    }

    /// The model and adapter files, then `extra`: what an output must not overwrite.
    pub fn inputs_and<'a>(&'a self, extra: &[&'a Path]) -> Vec<&'a Path> {
        let mut v: Vec<&Path> = [&self.base, &self.rl, &self.rl_lora]
            .into_iter()
            .flatten()
            .map(PathBuf::as_path)
            .collect();
        v.extend_from_slice(extra);
        v
    }

    /// The base model; [`PairArgs::resolve`] must have run.
    pub fn base(&self) -> &Path {
        self.base
            .as_deref()
            .expect("PairArgs::resolve fills in the base model")
    }

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
            base: self.base().to_path_buf(),
            rl,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::defaults;

    /// The defaults the help texts show are the configuration's.
    #[test]
    fn decode_flag_help_shows_the_paper_defaults() {
        let cmd = DecodeArgs::augment_args(clap::Command::new("t"));
        let help = |id: &str| {
            cmd.get_arguments()
                .find(|a| a.get_id() == id)
                .and_then(|a| a.get_help())
                .map(|h| h.to_string())
                .unwrap_or_default()
        };
        for (id, value) in [
            ("criterion", defaults::CRITERION.to_string()),
            ("tau", defaults::TAU.to_string()),
            ("gamma", defaults::GAMMA.to_string()),
            ("proposer", defaults::PROPOSER.name().to_string()),
            ("temperature", defaults::TEMPERATURE.to_string()),
            ("top_p", defaults::TOP_P.to_string()),
            ("top_k", defaults::TOP_K.to_string()),
        ] {
            let h = help(id);
            let h = h.trim_end_matches('.');
            assert!(h.ends_with(&format!("[default: {value}]")), "{id}: {h}");
        }
        let d = DecodeArgs::default().resolve(Mode::Replace, 4).unwrap();
        assert_eq!(
            d,
            DecodeConfig::default()
                .with_mode(Mode::Replace)
                .with_seed(4)
        );
    }

    #[test]
    fn flag_errors_name_the_flag() {
        let args = DecodeArgs {
            gamma: Some(-1.0),
            ..DecodeArgs::default()
        };
        let e = args.resolve(Mode::Extrapolate, 0).unwrap_err().to_string();
        assert!(e.starts_with("invalid --gamma: "), "{e}");
        let args = DecodeArgs {
            top_p: Some(0.0),
            ..DecodeArgs::default()
        };
        let e = args.resolve(Mode::Base, 0).unwrap_err().to_string();
        assert!(e.starts_with("invalid --top-p: "), "{e}");
    }
}

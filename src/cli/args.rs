//! Arguments shared by commands that load models.

use std::path::{Path, PathBuf};

use clap::Args;

use crate::analysis::{FileInfo, Provenance};
use crate::decode::{ConfigError, ConfigPatch, DecodeConfig, Mode, Proposer};
use crate::runtime::{context_size, default_threads, LoadOptions, PairSpec, RlSource};
use crate::sampler::Criterion;

/// Where models run.
#[derive(Debug, Clone, Args)]
pub struct ModelArgs {
    /// CPU threads (default: the machine's physical cores).
    #[arg(long, short = 't')]
    pub threads: Option<usize>,
    /// Layers to offload to the GPU in CUDA/Metal/Vulkan builds (0: CPU
    /// only); `-ngl` as in llama.cpp.
    #[arg(long, visible_aliases = ["n-gpu-layers", "ngl"], default_value_t = 999)]
    pub gpu_layers: u32,
    /// Context size in tokens (default: 4096, or the model's training context if smaller).
    #[arg(long, short = 'c')]
    pub ctx_size: Option<u32>,
    /// Tokens per llama.cpp decode call.
    #[arg(long, short = 'b', default_value_t = 512)]
    pub batch_size: u32,
    /// Flash attention for `score`: on, off or auto (= off); a bare
    /// `--flash-attn` / `-fa` is on. Faster on some GPUs; on CPU it makes
    /// results depend on how tokens are batched, so it is off by default,
    /// and decoding (generate, eval, serve, ...) always keeps it off.
    #[arg(
        long,
        visible_alias = "fa",
        value_enum,
        num_args = 0..=1,
        require_equals = false,
        default_missing_value = "on",
        default_value = "off",
        value_name = "on|off|auto"
    )]
    pub flash_attn: FlashAttn,
}

/// `--flash-attn`: llama.cpp's values. `auto` keeps dlogp's exact default (off).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FlashAttn {
    On,
    Off,
    Auto,
}

impl FlashAttn {
    /// Whether flash attention is used.
    pub fn enabled(self) -> bool {
        self == FlashAttn::On
    }
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
    #[arg(long, allow_negative_numbers = true)]
    pub tau: Option<f64>,
    /// Extrapolation strength γ: π_X ∝ π_RL·exp(γ·Δlog p) [default: 0.1].
    #[arg(long, allow_negative_numbers = true)]
    pub gamma: Option<f64>,
    /// Who proposes in replace/extrapolate [default: base].
    #[arg(long, value_enum)]
    pub proposer: Option<Proposer>,
    /// Sampling temperature [default: 1].
    #[arg(long, visible_alias = "temp", allow_negative_numbers = true)]
    pub temperature: Option<f64>,
    /// Nucleus sampling mass, 1 = off [default: 0.7].
    #[arg(long, allow_negative_numbers = true)]
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

/// `--seed`: a number, or `-1` for a seed drawn at start-up (llama.cpp's
/// convention); the drawn seed is announced on stderr so the run can be
/// repeated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seed {
    pub value: u64,
    /// Drawn for `-1`.
    pub drawn: bool,
}

impl Seed {
    pub const ZERO: Seed = Seed {
        value: 0,
        drawn: false,
    };

    /// Say which seed `-1` drew.
    pub fn announce(&self) {
        if self.drawn {
            tracing::warn!(
                "--seed -1: drew seed {} (pass --seed {} to repeat this run)",
                self.value,
                self.value
            );
        }
    }
}

impl std::fmt::Display for Seed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.value)
    }
}

/// Parse `--seed`: a non-negative integer, or -1 for a random one.
pub fn parse_seed(s: &str) -> Result<Seed, String> {
    if s.trim() == "-1" {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut state = nanos ^ u64::from(std::process::id()).rotate_left(32);
        let mixed = crate::sampler::rng::splitmix64(&mut state);
        // a u32, as llama.cpp draws
        return Ok(Seed {
            value: mixed >> 32,
            drawn: true,
        });
    }
    s.trim()
        .parse::<u64>()
        .map(|value| Seed {
            value,
            drawn: false,
        })
        .map_err(|_| {
            format!("`{s}` is not a seed: use a non-negative integer, or -1 for a random seed")
        })
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

/// `base`, or the default base model when none was given (an error with a
/// hint when it is not here).
pub fn base_or_default(base: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(b) = base {
        return Ok(b);
    }
    if !Path::new(DEFAULT_BASE).exists() {
        return Err(missing_default(
            "model",
            DEFAULT_BASE,
            "after scripts/fetch-model.sh",
        ));
    }
    Ok(PathBuf::from(DEFAULT_BASE))
}

fn missing_default(what: &str, path: &str, how: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "no --base given, and the default {what} {path} is not in {}\nhint: pass --base FILE (and --rl or --lora), or run from the dlogp checkout {how}",
        std::env::current_dir()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|_| "the working directory".into())
    )
}

/// A base model and, optionally, the RL side of a pair.
#[derive(Debug, Clone, Args)]
pub struct PairArgs {
    /// The base model (GGUF); `-m/--model` as in llama.cpp. Without it, dlogp
    /// uses the default pair: gguf/SmolLM2-135M-Instruct.Q4_1.gguf and,
    /// unless --rl or --lora is given, the adapter
    /// gguf/SmolLM2-135M-Instruct.arith-lowprob.gguf.
    #[arg(long, short = 'm', visible_alias = "model", value_name = "GGUF")]
    pub base: Option<PathBuf>,
    /// The RL model (GGUF with the same vocabulary as the base).
    #[arg(long, value_name = "GGUF", conflicts_with_all = ["rl_lora", "lora_scaled"])]
    pub rl: Option<PathBuf>,
    /// The RL side as a LoRA adapter on the base (GGUF adapter; `--lora` as
    /// in llama.cpp); the weights are loaded once and shared by both contexts.
    #[arg(long, visible_alias = "lora", value_name = "GGUF")]
    pub rl_lora: Option<PathBuf>,
    /// Scale of the LoRA adapter (negative values reverse it).
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub lora_scale: f32,
    /// The RL adapter and its scale in one flag, as llama.cpp's
    /// `--lora-scaled FILE SCALE` (the same as --lora FILE --lora-scale SCALE).
    #[arg(
        long,
        num_args = 2,
        value_names = ["GGUF", "SCALE"],
        allow_negative_numbers = true,
        conflicts_with_all = ["rl_lora", "lora_scale"]
    )]
    pub lora_scaled: Option<Vec<String>>,
}

impl PairArgs {
    /// Fill in the default pair (see `--base`) where the user gave none;
    /// an error with a hint when those files are not here.
    pub fn resolve(mut self) -> anyhow::Result<PairArgs> {
        if let Some(v) = self.lora_scaled.take() {
            let [file, scale] = v.as_slice() else {
                anyhow::bail!("--lora-scaled takes two values: FILE SCALE");
            };
            let scale: f32 = scale.parse().ok().filter(|s: &f32| s.is_finite()).ok_or_else(|| {
                anyhow::anyhow!(
                    "invalid --lora-scaled {file} {scale}: the scale must be a finite number\nhint: --lora-scaled adapter.gguf 1.0"
                )
            })?;
            self.rl_lora = Some(PathBuf::from(file));
            self.lora_scale = scale;
        }
        super::stdio::model_file("--base", self.base.as_deref())?;
        super::stdio::model_file("--rl", self.rl.as_deref())?;
        super::stdio::model_file("--rl-lora", self.rl_lora.as_deref())?;
        if !self.lora_scale.is_finite() {
            anyhow::bail!(
                "invalid --lora-scale {}: must be a finite number",
                self.lora_scale
            );
        }
        if self.base.is_none() {
            self.base = Some(base_or_default(None)?);
            if self.rl.is_none() && self.rl_lora.is_none() {
                if !Path::new(DEFAULT_RL_LORA).exists() {
                    return Err(missing_default(
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

    /// The provenance of an output of `command` made with this pair: each
    /// file's path, size, hash prefix and architecture, and the LoRA scale.
    pub fn provenance(&self, command: &str) -> anyhow::Result<Provenance> {
        let info = |p: &Option<PathBuf>| -> anyhow::Result<Option<FileInfo>> {
            p.as_deref()
                .map(|p| {
                    FileInfo::read_gguf(p)
                        .map_err(|e| anyhow::anyhow!("{}: could not read: {e}", p.display()))
                })
                .transpose()
        };
        let mut prov = Provenance::new(command);
        prov.base = info(&self.base)?;
        prov.rl = info(&self.rl)?;
        prov.adapter = info(&self.rl_lora)?;
        prov.lora_scale = self.rl_lora.is_some().then_some(self.lora_scale);
        prov.llama_cpp = Some(crate::runtime::system_info().trim().to_string());
        prov.llamafile_gemm = Some(crate::runtime::llamafile_gemm());
        Ok(prov)
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

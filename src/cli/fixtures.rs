//! `dlogp fixtures` and `dlogp lora-init`: small GGUF files made by dlogp's
//! own writer.

use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::gguf::{lora_for_model, write_fixtures, write_lora_adapter, GgufFile, LoraInit, Value};

#[derive(Debug, Args)]
pub struct FixturesArgs {
    /// Directory to write the fixtures into.
    #[arg(long, default_value = "gguf")]
    pub out: PathBuf,
}

pub fn run_fixtures(args: FixturesArgs) -> anyhow::Result<()> {
    std::fs::create_dir_all(&args.out)?;
    for path in write_fixtures(&args.out)? {
        let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        tracing::info!("wrote {} ({len} bytes)", path.display());
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum InitArg {
    /// B = 0: an exact no-op adapter (the starting point of training).
    Zero,
    /// Random A and B: an adapter that visibly changes the model.
    Random,
}

#[derive(Debug, Args)]
pub struct LoraInitArgs {
    /// The model the adapter is for (`-m/--model` as in llama.cpp).
    #[arg(long, short = 'm', visible_alias = "model", value_name = "GGUF")]
    pub base: PathBuf,
    /// Where to write the adapter (`-` for stdout).
    #[arg(long, short = 'o', value_name = "GGUF")]
    pub out: PathBuf,
    /// Projections to adapt (suffixes of blk.N.<target>.weight).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "attn_q,attn_k,attn_v,attn_output,ffn_gate,ffn_up,ffn_down"
    )]
    pub targets: Vec<String>,
    /// LoRA rank r of every adapted projection.
    #[arg(long, default_value_t = 8)]
    pub rank: usize,
    /// LoRA alpha (effective scale = alpha / rank).
    #[arg(long)]
    pub alpha: Option<f32>,
    /// How the factors start.
    #[arg(long, value_enum, default_value_t = InitArg::Random)]
    pub init: InitArg,
    /// Standard deviation of B for --init random (A uses 1/sqrt(n_in)).
    #[arg(long, default_value_t = 0.01)]
    pub std: f32,
    /// Seed of the random factors.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run_lora_init(args: LoraInitArgs) -> anyhow::Result<()> {
    super::stdio::model_file("--base", Some(&args.base))?;
    if !args.base.exists() {
        anyhow::bail!("{}: no such file", args.base.display());
    }
    if !(args.std.is_finite() && args.std >= 0.0) {
        anyhow::bail!("invalid --std: must be a non-negative number");
    }
    crate::io::ensure_distinct(&[&args.out], &[&args.base])?;
    let base = GgufFile::open(&args.base)?;
    let Some(arch) = base.architecture() else {
        anyhow::bail!(
            "{}: metadata key `general.architecture` is missing",
            args.base.display()
        );
    };
    let n_embd = base
        .arch_key("embedding_length")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .max(1);
    let init = match args.init {
        InitArg::Zero => LoraInit::Zero,
        InitArg::Random => LoraInit::Random {
            std_a: 1.0 / (n_embd as f32).sqrt(),
            std_b: args.std,
        },
    };
    let targets: Vec<&str> = args.targets.iter().map(String::as_str).collect();
    let tensors = lora_for_model(&base, &targets, args.rank, init, args.seed)?;
    let alpha = args.alpha.unwrap_or(args.rank as f32);
    write_lora_adapter(&args.out, arch, alpha, &tensors, &[])?;
    tracing::info!(
        "wrote {} ({} tensors, rank {}, alpha {alpha})",
        args.out.display(),
        tensors.len() * 2,
        args.rank
    );
    Ok(())
}

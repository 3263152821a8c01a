//! `dlogp lora-compact`: shrink a LoRA adapter to a lower rank (the best
//! approximation of every update) and/or store it as F16.

use std::collections::BTreeMap;
use std::path::PathBuf;

use clap::{Args, ValueEnum};

use crate::gguf::{
    compact_lora, lora::split_block_name, lora_adapter_writer_as, GgmlType, LoraAdapter, Value,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum StorageArg {
    F32,
    /// Half the size; the factors are balanced, so rounding stays relative.
    F16,
}

#[derive(Debug, Args)]
pub struct LoraCompactArgs {
    /// The adapter to compact (GGUF LoRA, F32 or F16; `-` for stdin).
    #[arg(long, value_name = "GGUF")]
    pub lora: PathBuf,
    /// Where to write the compacted adapter (`-` for stdout).
    #[arg(long, short = 'o', value_name = "GGUF")]
    pub out: PathBuf,
    /// Rank of the result (default: the adapter's own rank, i.e. only
    /// re-store). Each update scale·B·A is replaced by its best rank-k
    /// approximation (truncated SVD).
    #[arg(long)]
    pub rank: Option<usize>,
    /// Tensor storage of the result.
    #[arg(long = "type", value_enum, default_value_t = StorageArg::F16)]
    pub storage: StorageArg,
}

pub fn run(args: LoraCompactArgs) -> anyhow::Result<()> {
    let stdin = crate::io::is_std_stream(&args.lora);
    if !stdin && !args.lora.exists() {
        anyhow::bail!("{}: no such file", args.lora.display());
    }
    crate::io::ensure_distinct(&[&args.out], &[&args.lora])?;
    let adapter = if stdin {
        let tmp = super::stdio::spool_stdin()?;
        LoraAdapter::read(&tmp).map_err(|e| super::stdio::as_stdin(e, &tmp))?
    } else {
        LoraAdapter::read(&args.lora)?
    };
    let source_rank = adapter.tensors.iter().map(|t| t.rank).max().unwrap_or(0);
    let rank = args.rank.unwrap_or(source_rank);
    if rank == 0 {
        anyhow::bail!("invalid --rank 0: the rank must be at least 1");
    }
    if let Some(t) = adapter.tensors.iter().find(|t| t.rank < rank) {
        anyhow::bail!(
            "--rank {rank} exceeds the rank {} of `{}` in {}\nhint: compaction can only lower the rank; pass --rank {} or less",
            t.rank,
            t.base_name,
            args.lora.display(),
            adapter.tensors.iter().map(|t| t.rank).min().unwrap_or(0)
        );
    }
    let mut tensors = Vec::with_capacity(adapter.tensors.len());
    // Retained energy per projection kind (attn_q, ffn_up, ...): (sum, min, count).
    let mut by_kind: BTreeMap<String, (f64, f64, usize)> = BTreeMap::new();
    for t in &adapter.tensors {
        let c = compact_lora(t, f64::from(adapter.scale(t)), rank);
        let kind = split_block_name(&t.base_name)
            .map(|(_, s)| s.to_string())
            .unwrap_or_else(|| t.base_name.clone());
        let e = by_kind.entry(kind).or_insert((0.0, 1.0, 0));
        e.0 += c.retained_energy;
        e.1 = e.1.min(c.retained_energy);
        e.2 += 1;
        tensors.push(c.tensor);
    }
    let min_energy = by_kind.values().map(|e| e.1).fold(1.0, f64::min);
    let mean_energy = by_kind.values().map(|e| e.0).sum::<f64>() / tensors.len() as f64;
    let storage = match args.storage {
        StorageArg::F32 => GgmlType::F32,
        StorageArg::F16 => GgmlType::F16,
    };
    // Keep the source's metadata (training settings, metrics); the writer
    // sets the adapter layout keys itself, and the alignment is its default.
    let mut extra: Vec<(String, Value)> = adapter
        .metadata
        .iter()
        .filter(|(k, _)| k != "general.alignment")
        .cloned()
        .collect();
    extra.extend([
        (
            "dlogp.compact.source_rank".to_string(),
            Value::U32(source_rank as u32),
        ),
        ("dlogp.compact.rank".to_string(), Value::U32(rank as u32)),
        (
            "dlogp.compact.type".to_string(),
            Value::string(storage.name()),
        ),
        (
            "dlogp.compact.energy_min".to_string(),
            Value::F32(min_energy as f32),
        ),
        (
            "dlogp.compact.energy_mean".to_string(),
            Value::F32(mean_energy as f32),
        ),
    ]);
    // The scale is folded into the factors: alpha = rank gives llama.cpp's
    // alpha/rank = 1.
    let writer = lora_adapter_writer_as(
        &adapter.architecture,
        rank as f32,
        &tensors,
        &extra,
        storage,
    )?;
    writer.write(&args.out)?;
    let in_len = std::fs::metadata(&args.lora).map(|m| m.len()).unwrap_or(0);
    let out_len = std::fs::metadata(&args.out).map(|m| m.len()).unwrap_or(0);
    for (kind, (sum, min, n)) in &by_kind {
        tracing::info!(
            "{kind:<12} retained energy: mean {:.4}, min {:.4} ({n} updates)",
            sum / *n as f64,
            min
        );
    }
    tracing::info!(
        "wrote {} ({} updates, rank {source_rank} → {rank}, {}, {:.1} MB from {:.1} MB); retained energy mean {mean_energy:.4}, min {min_energy:.4}",
        args.out.display(),
        tensors.len(),
        storage.name(),
        out_len as f64 / 1e6,
        in_len as f64 / 1e6,
    );
    Ok(())
}

//! The noise floor of a pair, measured on the base model itself: the same
//! responses scored by the base and by the base plus a LoRA adapter whose
//! update is negligible (B ~ N(0, ε²) with ε = 1e-7, on every projection a
//! trained adapter would touch). The function barely changes, but the RL
//! context now runs the adapter path, and on a quantized model every tiny
//! change flips some of llama.cpp's 8-bit activation roundings, which grow
//! through the layers. The |Δlog p| this leaves is the floor below which a
//! pair's Δlog p cannot be told from rounding. (An exactly zero B leaves the
//! activations bit-identical and gives exactly 0, and batching never changes
//! a result, so neither of those measures anything.)

use std::path::Path;

use super::model::LoadOptions;
use super::pair::{ModelPair, PairSpec, RlSource};
use super::score::{ScoreOptions, ScoreSequence, Scorer};
use super::RuntimeError;
use crate::gguf::{lora_for_model, write_lora_adapter, GgufFile, LoraInit, Value};

/// The probe adapter of a noise-floor measurement.
#[derive(Debug, Clone, PartialEq)]
pub struct NoiseProbe {
    /// Standard deviation of B (0: an exact no-op, which must give 0).
    pub std: f32,
    pub rank: usize,
    pub seed: u64,
    pub targets: Vec<String>,
}

impl Default for NoiseProbe {
    fn default() -> Self {
        NoiseProbe {
            std: 1e-7,
            rank: 8,
            seed: 0,
            targets: [
                "attn_q",
                "attn_k",
                "attn_v",
                "attn_output",
                "ffn_gate",
                "ffn_up",
                "ffn_down",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

impl NoiseProbe {
    /// How the floor was measured, for reports and figure legends.
    pub fn describe(&self) -> String {
        format!(
            "base vs base + LoRA with B ~ N(0, {:e}²) (rank {}, seed {})",
            self.std, self.rank, self.seed
        )
    }
}

/// Δlog p of every response token of `rows` between `base` and `base` plus
/// the probe adapter (written to a temporary file), in row order.
pub fn noise_floor_dlogp(
    base: &Path,
    load: &LoadOptions,
    rows: &[ScoreSequence],
    options: ScoreOptions,
    probe: &NoiseProbe,
) -> Result<Vec<f64>, RuntimeError> {
    let file = GgufFile::open(base)?;
    let arch = file
        .architecture()
        .ok_or_else(|| RuntimeError::MissingKey {
            path: base.to_path_buf(),
            key: "general.architecture",
        })?
        .to_string();
    let n_embd = file
        .arch_key("embedding_length")
        .and_then(Value::as_u64)
        .unwrap_or(1)
        .max(1);
    let init = LoraInit::Random {
        std_a: 1.0 / (n_embd as f32).sqrt(),
        std_b: probe.std,
    };
    let targets: Vec<&str> = probe.targets.iter().map(String::as_str).collect();
    let tensors = lora_for_model(&file, &targets, probe.rank, init, probe.seed)?;
    drop(file);
    let dir = tempfile::tempdir().map_err(|e| RuntimeError::Output(e.to_string()))?;
    let adapter = dir.path().join("noise-probe.gguf");
    write_lora_adapter(&adapter, &arch, probe.rank as f32, &tensors, &[])?;
    let pair = ModelPair::load(
        &PairSpec {
            base: base.to_path_buf(),
            rl: RlSource::Lora {
                path: adapter,
                scale: 1.0,
            },
        },
        load,
    )?;
    let mut per_row: Vec<Vec<f64>> = vec![Vec::new(); rows.len()];
    Scorer::for_pair(&pair, options.fitted_to(rows))?.score_pair(
        rows,
        |i, m| {
            per_row[i] = m.iter().map(|t| t.dlogp).collect();
            Ok(())
        },
        |_| {},
    )?;
    Ok(per_row.into_iter().flatten().collect())
}

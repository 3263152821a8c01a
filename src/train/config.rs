//! What the trainer adapts and how tokens are weighted.

use serde::{Deserialize, Serialize};

use super::TrainError;

/// A projection LoRA can adapt, named as on the command line.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Serialize,
    Deserialize,
    clap::ValueEnum,
)]
#[serde(rename_all = "kebab-case")]
pub enum LoraTarget {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl LoraTarget {
    pub const ALL: [LoraTarget; 7] = [
        LoraTarget::Q,
        LoraTarget::K,
        LoraTarget::V,
        LoraTarget::O,
        LoraTarget::Gate,
        LoraTarget::Up,
        LoraTarget::Down,
    ];

    /// The GGUF tensor suffix: `blk.N.<suffix>.weight`.
    pub fn gguf_suffix(self) -> &'static str {
        match self {
            LoraTarget::Q => "attn_q",
            LoraTarget::K => "attn_k",
            LoraTarget::V => "attn_v",
            LoraTarget::O => "attn_output",
            LoraTarget::Gate => "ffn_gate",
            LoraTarget::Up => "ffn_up",
            LoraTarget::Down => "ffn_down",
        }
    }

    pub fn from_gguf_suffix(suffix: &str) -> Option<LoraTarget> {
        LoraTarget::ALL
            .into_iter()
            .find(|t| t.gguf_suffix() == suffix)
    }
}

/// Which weights get an adapter `W' = W + (alpha / rank) · B·A`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f32,
    /// Sorted, without duplicates.
    pub targets: Vec<LoraTarget>,
    /// Layer indices to adapt; `None`: every layer.
    pub layers: Option<Vec<usize>>,
}

impl LoraConfig {
    /// Validate and normalise (sort, deduplicate).
    pub fn new(
        rank: usize,
        alpha: f32,
        targets: &[LoraTarget],
        layers: Option<&[usize]>,
    ) -> Result<LoraConfig, TrainError> {
        if rank == 0 {
            return Err(TrainError::Invalid {
                name: "rank",
                reason: "must be at least 1".into(),
            });
        }
        if !(alpha.is_finite() && alpha > 0.0) {
            return Err(TrainError::Invalid {
                name: "alpha",
                reason: format!("must be a positive number, got {alpha}"),
            });
        }
        if targets.is_empty() {
            return Err(TrainError::Invalid {
                name: "targets",
                reason: "name at least one projection".into(),
            });
        }
        let mut targets = targets.to_vec();
        targets.sort();
        targets.dedup();
        let layers = layers.map(|l| {
            let mut l = l.to_vec();
            l.sort_unstable();
            l.dedup();
            l
        });
        Ok(LoraConfig {
            rank,
            alpha,
            targets,
            layers,
        })
    }

    /// The scale llama.cpp applies: alpha / rank.
    pub fn scale(&self) -> f32 {
        self.alpha / self.rank as f32
    }

    pub fn adapts_layer(&self, layer: usize) -> bool {
        self.layers.as_ref().is_none_or(|l| l.contains(&layer))
    }

    pub fn adapts(&self, target: LoraTarget) -> bool {
        self.targets.contains(&target)
    }
}

/// Per-token weight multiplying the advantage (METHOD.md §4).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "scheme", rename_all = "kebab-case")]
pub enum Reweight {
    /// w = 1 (plain DAPO).
    None,
    /// w = 1 + α (1 − π_old(y_t)): favours low-probability tokens (the paper).
    Lowprob { alpha: f64 },
    /// w = 1 − c + c · π_old(y_t): favours high-probability tokens (Yang et al. 2025).
    Highprob { c: f64 },
    /// Sequence-level perplexity weights: with PPL_i = exp(−mean_t log π_old(y_{i,t})),
    /// w_i = 1 − α + α · PPL_i / mean_{j ∈ group} PPL_j, the same for every token of
    /// response i (mean 1 within a group; high-perplexity responses weigh more).
    Ppl { alpha: f64 },
}

/// The scheme's name as the command line spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ReweightKind {
    None,
    Lowprob,
    Highprob,
    Ppl,
}

impl Reweight {
    /// Build from the command line: `strength` is α (lowprob, ppl) or c
    /// (highprob); `None` takes the default (α 0.2, c 0.5).
    pub fn from_kind(kind: ReweightKind, strength: Option<f64>) -> Result<Reweight, TrainError> {
        if let Some(s) = strength {
            if !(s.is_finite() && (0.0..=1.0).contains(&s)) {
                return Err(TrainError::Invalid {
                    name: "reweight_strength",
                    reason: format!("must lie in [0, 1], got {s}"),
                });
            }
        }
        Ok(match kind {
            ReweightKind::None => Reweight::None,
            ReweightKind::Lowprob => Reweight::Lowprob {
                alpha: strength.unwrap_or(0.2),
            },
            ReweightKind::Highprob => Reweight::Highprob {
                c: strength.unwrap_or(0.5),
            },
            ReweightKind::Ppl => Reweight::Ppl {
                alpha: strength.unwrap_or(0.2),
            },
        })
    }
}

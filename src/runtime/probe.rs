//! What the active llama.cpp backend is: its devices, and whether its logits
//! depend on how tokens are batched. Exact speculative decoding (a drafted
//! token verified inside a batch gets the logits it would get alone) and
//! batch-independent scores hold only on a batch-invariant backend: the CPU
//! build without llamafile's GEMM or flash attention is one (ARCHITECTURE.md,
//! "Batching never changes results"); GPU backends may pick other kernels for
//! one token than for a batch.

use llama_cpp_2::{list_llama_ggml_backend_devices, LlamaBackendDeviceType};
use serde::Serialize;

use super::eval::plain_logits;
use super::model::{ContextOptions, Model};
use super::pair::ModelPair;
use super::session::Session;
use super::token::Token;
use super::{backend, padded_context, RuntimeError};

/// One device llama.cpp can run on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Device {
    /// llama.cpp's name (`CPU`, `Vulkan0`, `CUDA0`).
    pub name: String,
    /// The driver's description (`llvmpipe (LLVM 15.0.6, 256 bits)`).
    pub description: String,
    /// The ggml backend (`CPU`, `Vulkan`, `CUDA`, `Metal`).
    pub backend: String,
    /// `cpu`, `gpu`, `igpu`, `accel` or `unknown`.
    pub kind: &'static str,
    pub memory_total: usize,
    pub memory_free: usize,
}

impl Device {
    /// Whether layers can be offloaded to it (anything but the CPU).
    pub fn is_offload(&self) -> bool {
        !matches!(self.kind, "cpu" | "accel")
    }
}

/// The devices of this build's backends (the CPU always; a GPU when the
/// build has a GPU feature and a driver is present).
pub fn devices() -> Result<Vec<Device>, RuntimeError> {
    backend()?;
    Ok(list_llama_ggml_backend_devices()
        .into_iter()
        .map(|d| Device {
            name: d.name,
            description: d.description,
            backend: d.backend,
            kind: match d.device_type {
                LlamaBackendDeviceType::Cpu => "cpu",
                LlamaBackendDeviceType::Gpu => "gpu",
                LlamaBackendDeviceType::IntegratedGpu => "igpu",
                LlamaBackendDeviceType::Accelerator => "accel",
                LlamaBackendDeviceType::Unknown => "unknown",
            },
            memory_total: d.memory_total,
            memory_free: d.memory_free,
        })
        .collect())
}

/// Whether some device other than the CPU is present.
pub fn has_offload_device() -> Result<bool, RuntimeError> {
    Ok(devices()?.iter().any(Device::is_offload))
}

/// The result of [`batch_invariance`]: a token's logits decoded one token per
/// call against the same tokens decoded in larger batches.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BatchInvariance {
    /// Every logit of every position was bit-identical in every batch shape.
    pub invariant: bool,
    /// The largest |Δ| of a logit between shapes (0 when invariant).
    pub max_abs_diff: f32,
    /// Positions compared (the probe text's tokens).
    pub n_tokens: usize,
    /// The batch sizes compared with one token per call.
    pub batch_sizes: Vec<usize>,
    /// The sides probed (`base`, and `rl` for a pair).
    pub sides: Vec<&'static str>,
}

impl BatchInvariance {
    /// What speculative decoding promises on this backend, in a sentence.
    pub fn speculative_promise(&self) -> &'static str {
        if self.invariant {
            "exact: speculative decoding gives the tokens of lockstep decoding"
        } else {
            "same distribution: speculative decoding may give other tokens than lockstep decoding (--draft 1), drawn from the same distributions up to rounding"
        }
    }

    fn merge(&mut self, other: BatchInvariance) {
        self.invariant &= other.invariant;
        self.max_abs_diff = self.max_abs_diff.max(other.max_abs_diff);
        self.sides.extend(other.sides);
    }
}

/// How to run the probe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProbeOptions {
    pub threads: usize,
    /// As the contexts under test will run (on CPU, flash attention makes
    /// logits depend on the batch).
    pub flash_attention: bool,
}

/// Text the probe decodes: ordinary prose and digits, long enough (about 80
/// tokens with SmolLM2's tokenizer) for batches past the sizes at which
/// backends switch kernels (flash attention on CPU at 64, GPU matrix
/// kernels at 8 or 32).
const PROBE_TEXT: &str = "The quick brown fox jumps over the lazy dog near the river bank. \
    In 1984, 17 + 25 = 42 and 3 * 14 = 42; the answer is forty-two. \
    Once upon a time, a little fox lived in a small house at the edge of a green forest, \
    and every morning it counted the birds: one, two, three, four, five, six, seven.";

/// At most this many tokens of the probe text are decoded.
const PROBE_MAX_TOKENS: usize = 96;

/// Batch sizes compared with one token per call: a speculative verification
/// (K + 1 = 5), a larger one (9) and the whole text at once.
const PROBE_BATCHES: [usize; 3] = [5, 9, usize::MAX];

/// Decode the probe text with the base model (and the RL side of `pair`,
/// adapter applied) one token per `llama_decode` call and in larger batches,
/// and compare every position's logits bit for bit.
pub fn batch_invariance(
    pair: &ModelPair,
    options: &ProbeOptions,
) -> Result<BatchInvariance, RuntimeError> {
    let tokens = probe_tokens(pair.base())?;
    let ctx = context_options(tokens.len(), options);
    let mut result = probe_session(
        Session::new(pair.base_context(&ctx)?, 1, "base"),
        &tokens,
        "base",
    )?;
    result.merge(probe_session(
        Session::new(pair.rl_context(&ctx)?, 1, "RL"),
        &tokens,
        "rl",
    )?);
    Ok(result)
}

/// [`batch_invariance`] for one model.
pub fn model_batch_invariance(
    model: &Model,
    options: &ProbeOptions,
) -> Result<BatchInvariance, RuntimeError> {
    let tokens = probe_tokens(model)?;
    let ctx = context_options(tokens.len(), options);
    probe_session(
        Session::new(model.new_context(&ctx)?, 1, "base"),
        &tokens,
        "base",
    )
}

fn probe_tokens(model: &Model) -> Result<Vec<Token>, RuntimeError> {
    let mut tokens = model.tokenize(PROBE_TEXT, true);
    // a character-level vocabulary (the tiny fixtures) makes ~300 tokens
    tokens.truncate(PROBE_MAX_TOKENS);
    if tokens.len() < 2 {
        return Err(RuntimeError::Row {
            row: "the batch-invariance probe".to_string(),
            reason: format!(
                "{} tokenizes its text to {} token(s); at least 2 are needed",
                model.path().display(),
                tokens.len()
            ),
        });
    }
    Ok(tokens)
}

fn context_options(n_tokens: usize, options: &ProbeOptions) -> ContextOptions {
    ContextOptions {
        n_ctx: padded_context(n_tokens),
        n_batch: u32::try_from(n_tokens).unwrap_or(u32::MAX),
        n_seq: 1,
        threads: options.threads,
        flash_attention: options.flash_attention,
    }
}

fn probe_session(
    mut session: Session<'_>,
    tokens: &[Token],
    side: &'static str,
) -> Result<BatchInvariance, RuntimeError> {
    let alone = plain_logits(&mut session, tokens, 1)?;
    let mut invariant = true;
    let mut max_abs_diff = 0f32;
    let mut batch_sizes = Vec::new();
    for n_batch in PROBE_BATCHES {
        let n_batch = n_batch.min(tokens.len());
        batch_sizes.push(n_batch);
        let batched = plain_logits(&mut session, tokens, n_batch)?;
        for (a, b) in alone.iter().zip(&batched) {
            for (x, y) in a.iter().zip(b) {
                if x.to_bits() != y.to_bits() {
                    invariant = false;
                    let d = (x - y).abs();
                    // NaN compares false: a NaN on one side counts as infinite
                    max_abs_diff = max_abs_diff.max(if d.is_nan() { f32::INFINITY } else { d });
                }
            }
        }
    }
    Ok(BatchInvariance {
        invariant,
        max_abs_diff,
        n_tokens: tokens.len(),
        batch_sizes,
        sides: vec![side],
    })
}

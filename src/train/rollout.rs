//! Rollouts by llama.cpp with the current adapter: G samples per prompt at
//! temperature 1 (no top-k, no top-p), token ids kept as sampled, never
//! re-tokenized.

use std::path::Path;

use super::TrainError;
use crate::decode::{DecodeConfig, Engine, EngineOptions, Finish, Mode, Proposer, Request};
use crate::runtime::{LoadOptions, ModelPair, PairSpec, RlSource, Token};
use crate::sampler::{Criterion, Gate, SamplingParams};

/// One sampled response.
#[derive(Debug, Clone, PartialEq)]
pub struct Rollout {
    /// Index of the task in the training set.
    pub task: usize,
    /// Prompt token ids.
    pub prompt: Vec<u32>,
    /// Response token ids as sampled, including the end-of-generation token
    /// when the model stopped by itself (its probability is part of the policy).
    pub response: Vec<u32>,
    /// The response's text (without the end-of-generation token).
    pub text: String,
    pub finish: Finish,
}

/// What to sample.
#[derive(Debug, Clone, PartialEq)]
pub struct RolloutOptions {
    pub group_size: usize,
    pub max_tokens: usize,
    /// Sequences decoded side by side.
    pub n_seq: u32,
    pub threads: usize,
    pub seed: u64,
}

/// Sample `group_size` responses for each `(task, prompt, key)` with the base
/// model plus the adapter at `adapter`. The random key of sample `g` of a
/// prompt is `key · group_size + g`, so a prompt's samples depend only on the
/// seed, its key and the adapter, never on scheduling. Returns one group per
/// prompt, samples in order. `pair` is the policy: see [`load_policy`].
pub fn sample_groups(
    pair: &ModelPair,
    prompts: &[(usize, &[u32], u64)],
    opts: &RolloutOptions,
) -> Result<Vec<Vec<Rollout>>, TrainError> {
    let g = opts.group_size.max(1);
    let mut requests = Vec::with_capacity(prompts.len() * g);
    for &(_, prompt, key) in prompts {
        for s in 0..g {
            requests.push(Request {
                key: key * g as u64 + s as u64,
                prompt: prompt.iter().map(|&t| Token(t)).collect(),
            });
        }
    }
    let longest = prompts.iter().map(|p| p.1.len()).max().unwrap_or(0);
    let sampling = SamplingParams {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
    };
    let cfg = DecodeConfig::new(
        Mode::Rl,
        Proposer::Rl,
        Gate::new(Criterion::Never, 0.0)?,
        0.0,
        sampling,
        opts.seed,
    )
    .map_err(crate::decode::DecodeError::from)?;
    let engine_opts = EngineOptions {
        max_tokens: opts.max_tokens,
        stop: Vec::new(),
        draft: 1,
        n_seq: opts.n_seq.clamp(1, requests.len().max(1) as u32),
        n_ctx: crate::runtime::padded_context(longest + opts.max_tokens + 1),
        threads: opts.threads,
    };
    let mut engine = Engine::for_pair(pair, cfg, engine_opts)?;
    let mut done: Vec<Option<Rollout>> = vec![None; requests.len()];
    engine.run(
        &requests,
        |_, _| {},
        |gen| {
            let (task, prompt, _) = prompts[gen.request / g];
            let mut response: Vec<u32> = gen.tokens.iter().map(|t| t.0).collect();
            if gen.finish == Finish::Eog {
                if let Some(last) = gen.trace.last() {
                    response.push(last.chosen);
                }
            }
            done[gen.request] = Some(Rollout {
                task,
                prompt: prompt.to_vec(),
                response,
                text: gen.text,
                finish: gen.finish,
            });
            Ok(())
        },
    )?;
    let mut groups = Vec::with_capacity(prompts.len());
    let mut it = done.into_iter();
    for _ in prompts {
        let group: Option<Vec<Rollout>> = it.by_ref().take(g).collect();
        groups.push(group.ok_or_else(|| {
            TrainError::Numerics("the engine returned fewer generations than requested".into())
        })?);
    }
    Ok(groups)
}

/// The current policy for rollouts: `base` with the adapter at `adapter`
/// (loaded once per step and shared by every draw of that step).
pub fn load_policy(base: &Path, adapter: &Path) -> Result<ModelPair, TrainError> {
    let spec = PairSpec {
        base: base.to_path_buf(),
        rl: RlSource::Lora {
            path: adapter.to_path_buf(),
            scale: 1.0,
        },
    };
    let t0 = std::time::Instant::now();
    let pair = ModelPair::load(&spec, &LoadOptions::default())?;
    tracing::debug!(
        "rollouts: loaded {} + adapter in {:.2} s",
        base.display(),
        t0.elapsed().as_secs_f64()
    );
    Ok(pair)
}

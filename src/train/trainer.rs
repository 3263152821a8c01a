//! The RLVR loop (METHOD.md §4): rollouts by llama.cpp with the current
//! adapter, verifier rewards, dynamic sampling, group advantages, token
//! weights from π_old, DAPO updates with AdamW, checkpoints and resume.
//!
//! One *step* is one rollout batch (`prompts_per_step` informative groups of
//! `group_size` samples) followed by `updates_per_step` optimizer updates on
//! equal shares of its groups. π_old is the trainer's own forward before the
//! first update (llama.cpp's quantized kernels differ from it by up to
//! ≈ 0.3 nats on single tokens, so the sampler's probabilities are not used).
//!
//! Everything random is keyed: the prompt order by (seed, epoch), each
//! sample by (seed, prompt draw, sample), so a run resumed from a checkpoint
//! (step, prompts drawn, adapter, AdamW moments) continues exactly as the
//! uninterrupted run.

use std::path::{Path, PathBuf};
use std::time::Instant;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use super::config::{LoraConfig, Reweight};
use super::loss::{
    dapo_token, group_advantages, is_informative, overlong_penalty, token_weights, ClipParams,
};
use super::model::Policy;
use super::optim::{clip_grad_norm, AdamW, AdamWConfig};
use super::rollout::{load_policy, sample_groups, Rollout, RolloutOptions};
use super::TrainError;
use crate::eval::TaskContract;
use crate::gguf::{GgufFile, GgufWriter, LoraTensor, Value};

/// Everything that determines a run (saved in checkpoints and adapters).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainSettings {
    pub lora: LoraConfig,
    pub reweight: Reweight,
    pub clip: ClipParams,
    pub optim: AdamWConfig,
    /// Steps to run (a resumed run may raise it).
    pub steps: u64,
    /// Informative groups per step.
    pub prompts_per_step: usize,
    /// Samples per prompt (G).
    pub group_size: usize,
    /// Optimizer updates per rollout batch (PPO mini-batches).
    pub updates_per_step: usize,
    /// Longest response in tokens.
    pub max_tokens: usize,
    /// DAPO's soft overlong buffer (0: off).
    pub overlong_buffer: usize,
    /// Drop groups whose rewards are all equal and draw more prompts.
    pub dynamic_sampling: bool,
    /// At most `prompts_per_step × this` prompts drawn per step.
    pub max_draw_factor: usize,
    pub reward_correct: f64,
    pub reward_wrong: f64,
    pub seed: u64,
    /// Sequences llama.cpp decodes side by side in rollouts.
    pub rollout_sequences: u32,
    /// CPU threads for llama.cpp's rollouts.
    pub rollout_threads: usize,
}

impl TrainSettings {
    /// Check the values that have to be positive or in range.
    pub fn validate(&self) -> Result<(), TrainError> {
        let bad = |name: &'static str, reason: &str| {
            Err(TrainError::Invalid {
                name,
                reason: reason.to_string(),
            })
        };
        if self.group_size < 2 {
            return bad(
                "group_size",
                "needs at least 2 samples per prompt (advantages are relative to the group)",
            );
        }
        if self.prompts_per_step == 0 {
            return bad("prompts_per_step", "must be at least 1");
        }
        if self.updates_per_step == 0 || self.updates_per_step > self.prompts_per_step {
            return bad("updates_per_step", "must lie in 1..=`prompts_per_step`");
        }
        if self.max_tokens == 0 {
            return bad("max_tokens", "must be at least 1");
        }
        if self.overlong_buffer >= self.max_tokens && self.overlong_buffer > 0 {
            return bad("overlong_buffer", "must be smaller than `max_tokens`");
        }
        if self.max_draw_factor == 0 {
            return bad("max_draw_factor", "must be at least 1");
        }
        if !(self.optim.lr.is_finite() && self.optim.lr > 0.0) {
            return bad("lr", "must be a positive number");
        }
        Ok(())
    }
}

/// One step's numbers (a JSONL row of the metrics file).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StepMetrics {
    pub step: u64,
    /// Mean shaped reward over every sampled response (kept or dropped).
    pub reward_mean: f64,
    /// Share of sampled responses the verifier accepted.
    pub accuracy: f64,
    pub groups_kept: usize,
    pub groups_dropped: usize,
    pub response_len_mean: f64,
    /// Mean entropy (nats) of π_old over the trained tokens.
    pub entropy: f64,
    /// Share of trained tokens whose gradient the clip or dual clip zeroed.
    pub clip_fraction: f64,
    /// Mean token weight of the reweighting scheme.
    pub reweight_mean: f64,
    /// Token-mean DAPO loss.
    pub loss: f64,
    /// Gradient norm before clipping (mean over the step's updates).
    pub grad_norm: f64,
    pub lr: f64,
    pub rollout_tokens: usize,
    pub rollout_s: f64,
    pub rollout_tok_s: f64,
    /// Tokens through forward + backward (prompt and response).
    pub grad_tokens: usize,
    pub grad_s: f64,
    pub grad_tok_s: f64,
}

impl StepMetrics {
    /// The metrics without wall-clock timings (deterministic for a seed):
    /// what adapters record, so a resumed run writes the same bytes.
    pub fn outcome(&self) -> serde_json::Value {
        let mut v = serde_json::to_value(self).unwrap_or_default();
        if let Some(o) = v.as_object_mut() {
            for k in ["rollout_s", "rollout_tok_s", "grad_s", "grad_tok_s"] {
                o.remove(k);
            }
        }
        v
    }
}

/// A reward verdict for one response: `true` if correct.
pub type Verifier<'a> = dyn Fn(usize, &Rollout) -> bool + 'a;

/// Deterministic 64-bit mixing: one SplitMix64 step from state `z`.
fn mix(mut z: u64) -> u64 {
    crate::gguf::rng::splitmix64(&mut z)
}

/// The task index of prompt draw `j`: each epoch visits every task once, in
/// an order keyed by (seed, epoch).
pub fn task_for_draw(seed: u64, n_tasks: usize, j: u64) -> usize {
    let epoch = j / n_tasks as u64;
    let mut order: Vec<(u64, usize)> = (0..n_tasks)
        .map(|i| (mix(mix(seed ^ mix(epoch)) ^ i as u64), i))
        .collect();
    order.sort_unstable();
    order[(j % n_tasks as u64) as usize].1
}

/// One worker's share of a mini-batch: its summed gradients and statistics.
struct Partial {
    grads: Vec<Vec<f32>>,
    loss_sum: f64,
    weight_sum: f64,
    entropy_sum: f64,
    n_clipped: usize,
    n_tokens: usize,
    n_seq_tokens: usize,
}

impl Partial {
    fn new(sizes: &[usize]) -> Partial {
        Partial {
            grads: sizes.iter().map(|&n| vec![0.0; n]).collect(),
            loss_sum: 0.0,
            weight_sum: 0.0,
            entropy_sum: 0.0,
            n_clipped: 0,
            n_tokens: 0,
            n_seq_tokens: 0,
        }
    }
}

/// What a worker needs to compute one sequence's gradient.
struct GradContext<'a> {
    policy: &'a Policy,
    seqs: &'a [Sequence],
    /// π_old per sequence; `None`: on-policy, π_old = the current forward.
    old: &'a [Option<Vec<f64>>],
    weights: &'a [Option<Vec<f64>>],
    reweight: Reweight,
    clip: ClipParams,
    /// Response tokens of the mini-batch (token-mean normalisation).
    total: usize,
}

impl GradContext<'_> {
    /// Forward, DAPO token losses, backward of Σ_t (∂L_t/∂log p_t / total) · log p_t,
    /// gradients added into `acc`.
    fn accumulate(&self, acc: &mut Partial, i: usize) -> Result<(), TrainError> {
        let q = &self.seqs[i];
        let (lp, ent) = self.policy.token_logprobs_and_entropy(&q.tokens, q.start)?;
        let now: Vec<f64> = lp.to_vec1::<f32>()?.into_iter().map(f64::from).collect();
        acc.entropy_sum += ent.iter().map(|&e| f64::from(e)).sum::<f64>();
        let old_i = self.old[i].as_ref().unwrap_or(&now);
        let w = match &self.weights[i] {
            Some(w) => w.clone(),
            None => token_weights(self.reweight, std::slice::from_ref(old_i)).remove(0),
        };
        let mut coef = Vec::with_capacity(now.len());
        for t in 0..now.len() {
            let tl = dapo_token(now[t], old_i[t], q.adv * w[t], &self.clip);
            if !tl.loss.is_finite() {
                return Err(TrainError::Numerics(format!(
                    "non-finite loss at token {t} of a response (log p {}, old {})",
                    now[t], old_i[t]
                )));
            }
            acc.loss_sum += tl.loss;
            acc.weight_sum += w[t];
            acc.n_clipped += usize::from(tl.clipped);
            coef.push((tl.grad / self.total as f64) as f32);
        }
        acc.n_tokens += now.len();
        acc.n_seq_tokens += q.tokens.len();
        let coef = Tensor::from_vec(coef, now.len(), self.policy.device())?;
        let grads = (lp * coef)?.sum_all()?.backward()?;
        for (a, var) in acc.grads.iter_mut().zip(self.policy.vars()) {
            if let Some(g) = grads.get(var.as_tensor()) {
                let g = g.flatten_all()?.to_vec1::<f32>()?;
                for (x, y) in a.iter_mut().zip(g) {
                    *x += y;
                }
            }
        }
        Ok(())
    }
}

/// Fold `items` on the pool's threads: task `w` of `workers` takes items
/// `w, w + workers, …` in order, so each task's result (returned in task
/// order) does not depend on timing. The pool's threads persist, so their
/// allocator arenas and GEMM buffers stay warm from step to step.
fn par_fold<A: Send>(
    pool: Option<&rayon::ThreadPool>,
    items: &[usize],
    init: impl Fn() -> A + Sync,
    fold: impl Fn(&mut A, usize) -> Result<(), TrainError> + Sync,
) -> Result<Vec<A>, TrainError> {
    let workers = pool
        .map_or(1, |p| p.current_num_threads())
        .clamp(1, items.len().max(1));
    let run = |w: usize| -> Result<A, TrainError> {
        let mut acc = init();
        for &i in items.iter().skip(w).step_by(workers) {
            fold(&mut acc, i)?;
        }
        Ok(acc)
    };
    let Some(pool) = pool.filter(|_| workers > 1) else {
        return Ok(vec![run(0)?]);
    };
    let mut slots: Vec<Option<Result<A, TrainError>>> = (0..workers).map(|_| None).collect();
    pool.scope(|scope| {
        for (w, slot) in slots.iter_mut().enumerate() {
            let run = &run;
            scope.spawn(move |_| *slot = Some(run(w)));
        }
    });
    slots
        .into_iter()
        .map(|r| {
            r.unwrap_or_else(|| Err(TrainError::Numerics("a trainer task did not run".into())))
        })
        .collect()
}

/// The trainer's state and the policy it trains.
pub struct Trainer {
    settings: TrainSettings,
    base: PathBuf,
    policy: Policy,
    opt: AdamW,
    /// Steps completed.
    step: u64,
    /// Prompts drawn so far.
    cursor: u64,
    prompts: Vec<Vec<u32>>,
    scratch: tempfile::TempDir,
    last: Option<StepMetrics>,
    /// Threads that process sequences side by side (none: the caller's thread).
    pool: Option<rayon::ThreadPool>,
    /// How the prompts were built and the rewards graded, recorded in adapters.
    task: Option<TaskContract>,
}

struct Sequence {
    tokens: Vec<u32>,
    start: usize,
    adv: f64,
    group: usize,
}

const CHECKPOINT_TYPE: &str = "dlogp-train-checkpoint";

#[derive(Serialize, Deserialize)]
struct CheckpointState {
    step: u64,
    cursor: u64,
    adam_step: u64,
    settings: TrainSettings,
    last: Option<StepMetrics>,
}

impl Trainer {
    /// A fresh run on `base` with one tokenized prompt per task.
    pub fn new(
        base: &Path,
        prompts: Vec<Vec<u32>>,
        settings: TrainSettings,
        device: &candle_core::Device,
    ) -> Result<Trainer, TrainError> {
        settings.validate()?;
        if prompts.is_empty() || prompts.iter().any(Vec::is_empty) {
            return Err(TrainError::Invalid {
                name: "tasks",
                reason: "need at least one task, and every prompt needs a token".into(),
            });
        }
        let policy = Policy::load(base, settings.lora.clone(), settings.seed, device)?;
        let sizes: Vec<usize> = policy.vars().iter().map(|v| v.elem_count()).collect();
        let opt = AdamW::new(settings.optim, &sizes);
        let scratch = tempfile::tempdir().map_err(|e| TrainError::Io {
            path: std::env::temp_dir(),
            source: e,
        })?;
        Ok(Trainer {
            settings,
            base: base.to_path_buf(),
            policy,
            opt,
            step: 0,
            cursor: 0,
            prompts,
            scratch,
            last: None,
            pool: None,
            task: None,
        })
    }

    /// Process this many sequences side by side on their own threads (each
    /// sequence's tensor math stays on one thread). Gradients are summed in a
    /// fixed order, so results depend on the worker count but not on timing:
    /// resume with the same count to continue bit for bit.
    pub fn set_workers(&mut self, workers: usize) -> Result<(), TrainError> {
        self.pool = if workers > 1 {
            Some(
                rayon::ThreadPoolBuilder::new()
                    .num_threads(workers)
                    .thread_name(|i| format!("dlogp-train-{i}"))
                    .build()
                    .map_err(|e| TrainError::Invalid {
                        name: "train_threads",
                        reason: e.to_string(),
                    })?,
            )
        } else {
            None
        };
        Ok(())
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn settings(&self) -> &TrainSettings {
        &self.settings
    }

    /// Steps completed.
    pub fn steps_done(&self) -> u64 {
        self.step
    }

    pub fn last_metrics(&self) -> Option<&StepMetrics> {
        self.last.as_ref()
    }

    /// Whether the configured number of steps is done.
    pub fn finished(&self) -> bool {
        self.step >= self.settings.steps
    }

    fn reward(&self, correct: bool, r: &Rollout) -> f64 {
        let base = if correct {
            self.settings.reward_correct
        } else {
            self.settings.reward_wrong
        };
        base + overlong_penalty(
            r.response.len(),
            self.settings.max_tokens,
            self.settings.overlong_buffer,
        )
    }

    /// One step: sample, score, update. `verify(task, rollout)` says whether
    /// a response is correct.
    pub fn step(&mut self, verify: &Verifier<'_>) -> Result<StepMetrics, TrainError> {
        let s = self.settings.clone();
        let mut m = StepMetrics {
            step: self.step + 1,
            ..StepMetrics::default()
        };
        // --- rollouts with the current adapter
        let t0 = Instant::now();
        let adapter = self.scratch.path().join("current.gguf");
        self.policy.write_adapter(&adapter, &[])?;
        let pair = load_policy(&self.base, &adapter)?;
        let opts = RolloutOptions {
            group_size: s.group_size,
            max_tokens: s.max_tokens,
            n_seq: s.rollout_sequences,
            threads: s.rollout_threads,
            seed: s.seed,
        };
        let mut kept: Vec<(Vec<Rollout>, Vec<f64>)> = Vec::new();
        let (mut n_sampled, mut n_correct, mut reward_sum, mut len_sum) =
            (0usize, 0usize, 0.0, 0usize);
        let max_draws = (s.prompts_per_step * s.max_draw_factor) as u64;
        let step_start = self.cursor;
        while kept.len() < s.prompts_per_step && self.cursor - step_start < max_draws {
            let need = (s.prompts_per_step - kept.len()) as u64;
            let need = need.min(max_draws - (self.cursor - step_start));
            let draws: Vec<(usize, &[u32], u64)> = (self.cursor..self.cursor + need)
                .map(|j| {
                    let task = task_for_draw(s.seed, self.prompts.len(), j);
                    (task, self.prompts[task].as_slice(), j)
                })
                .collect();
            let groups = sample_groups(&pair, &draws, &opts)?;
            self.cursor += need;
            for group in groups {
                let correct: Vec<bool> = group.iter().map(|r| verify(r.task, r)).collect();
                let rewards: Vec<f64> = group
                    .iter()
                    .zip(&correct)
                    .map(|(r, &c)| self.reward(c, r))
                    .collect();
                n_sampled += group.len();
                n_correct += correct.iter().filter(|&&c| c).count();
                reward_sum += rewards.iter().sum::<f64>();
                len_sum += group.iter().map(|r| r.response.len()).sum::<usize>();
                let verdicts: Vec<f64> = correct.iter().map(|&c| f64::from(u8::from(c))).collect();
                if s.dynamic_sampling && !is_informative(&verdicts) {
                    m.groups_dropped += 1;
                } else {
                    kept.push((group, rewards));
                }
            }
        }
        drop(pair); // free llama.cpp's model and contexts before the updates
        m.rollout_s = t0.elapsed().as_secs_f64();
        m.rollout_tokens = len_sum;
        m.rollout_tok_s = len_sum as f64 / m.rollout_s.max(1e-9);
        m.groups_kept = kept.len();
        m.accuracy = n_correct as f64 / n_sampled.max(1) as f64;
        m.reward_mean = reward_sum / n_sampled.max(1) as f64;
        m.response_len_mean = len_sum as f64 / n_sampled.max(1) as f64;
        m.lr = self.opt.lr();

        // --- the updates
        let t1 = Instant::now();
        let mut seqs: Vec<Sequence> = Vec::new();
        for (gi, (group, rewards)) in kept.iter().enumerate() {
            let adv = group_advantages(rewards);
            for (r, a) in group.iter().zip(adv) {
                if r.response.is_empty() {
                    continue;
                }
                let mut tokens = r.prompt.clone();
                tokens.extend_from_slice(&r.response);
                seqs.push(Sequence {
                    tokens,
                    start: r.prompt.len(),
                    adv: a,
                    group: gi,
                });
            }
        }
        let token_local = !matches!(s.reweight, Reweight::Ppl { .. });
        let fused = s.updates_per_step == 1 && token_local;
        // π_old and entropies from the trainer's forward before any update.
        let mut old: Vec<Option<Vec<f64>>> = vec![None; seqs.len()];
        let mut entropy_sum = 0.0;
        if !fused {
            let all: Vec<usize> = (0..seqs.len()).collect();
            let parts = par_fold(self.pool.as_ref(), &all, Vec::new, |acc, i| {
                let q = &seqs[i];
                let (lp, ent) = self.policy.token_stats(&q.tokens, q.start)?;
                acc.push((i, lp, ent));
                Ok(())
            })?;
            for (i, lp, ent) in parts.into_iter().flatten() {
                entropy_sum += ent.iter().map(|&e| f64::from(e)).sum::<f64>();
                old[i] = Some(lp.into_iter().map(f64::from).collect());
            }
        }
        let mut weights: Vec<Option<Vec<f64>>> = vec![None; seqs.len()];
        if !token_local {
            for gi in 0..kept.len() {
                let idx: Vec<usize> = (0..seqs.len()).filter(|&i| seqs[i].group == gi).collect();
                let lps: Vec<Vec<f64>> = idx.iter().filter_map(|&i| old[i].clone()).collect();
                for (w, &i) in token_weights(s.reweight, &lps).into_iter().zip(&idx) {
                    weights[i] = Some(w);
                }
            }
        }
        let (mut n_tokens, mut n_clipped, mut loss_sum, mut weight_sum) =
            (0usize, 0usize, 0.0, 0.0);
        let mut norm_sum = 0.0;
        let mut n_updates = 0usize;
        if !seqs.is_empty() {
            // groups split into `updates_per_step` contiguous shares
            let n_groups = kept.len();
            let share = |g: usize| g * s.updates_per_step / n_groups.max(1);
            for u in 0..s.updates_per_step {
                let members: Vec<usize> = (0..seqs.len())
                    .filter(|&i| share(seqs[i].group) == u)
                    .collect();
                let total: usize = members
                    .iter()
                    .map(|&i| seqs[i].tokens.len() - seqs[i].start)
                    .sum();
                if total == 0 {
                    continue;
                }
                let vars = self.policy.vars();
                let sizes: Vec<usize> = vars.iter().map(|v| v.elem_count()).collect();
                let ctx = GradContext {
                    policy: &self.policy,
                    seqs: &seqs,
                    old: &old,
                    weights: &weights,
                    reweight: s.reweight,
                    clip: s.clip,
                    total,
                };
                let parts = par_fold(
                    self.pool.as_ref(),
                    &members,
                    || Partial::new(&sizes),
                    |acc, i| ctx.accumulate(acc, i),
                )?;
                // summed in worker order: deterministic for a worker count
                let mut accum: Vec<Vec<f32>> = sizes.iter().map(|&n| vec![0.0; n]).collect();
                for part in parts {
                    for (a, g) in accum.iter_mut().zip(&part.grads) {
                        for (x, y) in a.iter_mut().zip(g) {
                            *x += y;
                        }
                    }
                    loss_sum += part.loss_sum;
                    weight_sum += part.weight_sum;
                    n_clipped += part.n_clipped;
                    n_tokens += part.n_tokens;
                    m.grad_tokens += part.n_seq_tokens;
                    if fused {
                        entropy_sum += part.entropy_sum;
                    }
                }
                let norm = clip_grad_norm(&mut accum, s.optim.max_grad_norm);
                if !norm.is_finite() {
                    return Err(TrainError::Numerics(format!("gradient norm is {norm}")));
                }
                norm_sum += norm;
                n_updates += 1;
                let mut params: Vec<Vec<f32>> = vars
                    .iter()
                    .map(|v| v.flatten_all().and_then(|t| t.to_vec1::<f32>()))
                    .collect::<Result<_, _>>()?;
                m.lr = self.opt.update(&mut params, &accum);
                for (var, p) in vars.iter().zip(params) {
                    var.set(&Tensor::from_vec(
                        p,
                        var.shape().clone(),
                        self.policy.device(),
                    )?)?;
                }
            }
        }
        m.grad_s = t1.elapsed().as_secs_f64();
        m.grad_tok_s = m.grad_tokens as f64 / m.grad_s.max(1e-9);
        m.entropy = entropy_sum / n_tokens.max(1) as f64;
        m.clip_fraction = n_clipped as f64 / n_tokens.max(1) as f64;
        m.reweight_mean = if n_tokens > 0 {
            weight_sum / n_tokens as f64
        } else {
            1.0
        };
        m.loss = loss_sum / n_tokens.max(1) as f64;
        m.grad_norm = norm_sum / n_updates.max(1) as f64;
        self.step += 1;
        self.last = Some(m.clone());
        Ok(m)
    }

    /// Record `task` (how the prompts were built and the rewards graded) in
    /// every adapter written from now on, as `dlogp.task.*`.
    pub fn set_task_contract(&mut self, task: TaskContract) {
        self.task = Some(task);
    }

    /// Metadata recorded in adapters: the settings, seed, steps, base file,
    /// the last step's metrics and the task contract (if set).
    pub fn adapter_metadata(&self) -> Vec<(String, Value)> {
        let mut md = vec![
            (
                "dlogp.train.settings".to_string(),
                Value::string(serde_json::to_string(&self.settings).unwrap_or_default()),
            ),
            (
                "dlogp.train.seed".to_string(),
                Value::U64(self.settings.seed),
            ),
            ("dlogp.train.steps".to_string(), Value::U64(self.step)),
            (
                "dlogp.train.base".to_string(),
                Value::string(
                    self.base
                        .file_name()
                        .map(|n| n.to_string_lossy().into_owned())
                        .unwrap_or_default(),
                ),
            ),
        ];
        if let Some(last) = &self.last {
            md.push((
                "dlogp.train.metrics".to_string(),
                Value::string(last.outcome().to_string()),
            ));
        }
        if let Some(task) = &self.task {
            md.extend(task.to_metadata());
        }
        md
    }

    /// Write the current adapter (atomic) with the run's metadata.
    pub fn write_adapter(&self, path: &Path) -> Result<(), TrainError> {
        self.policy.write_adapter(path, &self.adapter_metadata())
    }

    /// Write a checkpoint (atomic): the adapter, the AdamW moments, the step,
    /// the prompts drawn and the settings.
    pub fn save_checkpoint(&self, path: &Path) -> Result<(), TrainError> {
        let state = CheckpointState {
            step: self.step,
            cursor: self.cursor,
            adam_step: self.opt.step,
            settings: self.settings.clone(),
            last: self.last.clone(),
        };
        let mut w = GgufWriter::new();
        w.set("general.type", Value::string(CHECKPOINT_TYPE)).set(
            "dlogp.checkpoint.state",
            Value::string(serde_json::to_string(&state).unwrap_or_default()),
        );
        for t in self.policy.lora_tensors()? {
            w.add_tensor_f32(t.a_name(), &[t.n_in as u64, t.rank as u64], &t.a)?;
            w.add_tensor_f32(t.b_name(), &[t.rank as u64, t.n_out as u64], &t.b)?;
        }
        for (i, (m, v)) in self.opt.m.iter().zip(&self.opt.v).enumerate() {
            w.add_tensor_f32(format!("adam.m.{i}"), &[m.len() as u64], m)?;
            w.add_tensor_f32(format!("adam.v.{i}"), &[v.len() as u64], v)?;
        }
        w.write(path)?;
        Ok(())
    }

    /// Continue the run saved at `checkpoint`. `settings` must equal the
    /// saved ones except for `steps`.
    pub fn resume(
        base: &Path,
        prompts: Vec<Vec<u32>>,
        settings: TrainSettings,
        device: &candle_core::Device,
        checkpoint: &Path,
    ) -> Result<Trainer, TrainError> {
        let bad = |reason: String| TrainError::Checkpoint {
            path: checkpoint.to_path_buf(),
            reason,
        };
        let file = GgufFile::open(checkpoint)?;
        if file.get_str("general.type") != Some(CHECKPOINT_TYPE) {
            return Err(bad("general.type is not a dlogp training checkpoint".into()));
        }
        let state: CheckpointState = file
            .get_str("dlogp.checkpoint.state")
            .and_then(|s| serde_json::from_str(s).ok())
            .ok_or_else(|| bad("its state is missing or unreadable".into()))?;
        let mut saved = state.settings.clone();
        saved.steps = settings.steps;
        if saved != settings {
            return Err(bad(format!(
                "it was made with different settings\n  saved: {}\n  now:   {}\nhint: resume with the same flags (only `steps` may change)",
                serde_json::to_string(&state.settings).unwrap_or_default(),
                serde_json::to_string(&settings).unwrap_or_default()
            )));
        }
        let mut t = Trainer::new(base, prompts, settings, device)?;
        let read = |name: &str| -> Result<Vec<f32>, TrainError> {
            let info = file
                .tensor(name)
                .ok_or_else(|| bad(format!("tensor `{name}` is missing")))?;
            Ok(file.read_tensor_f32(checkpoint, info)?)
        };
        let mut tensors = t.policy.lora_tensors()?;
        for lt in tensors.iter_mut() {
            let (a, b) = (read(&lt.a_name())?, read(&lt.b_name())?);
            if a.len() != lt.a.len() || b.len() != lt.b.len() {
                return Err(bad(format!("`{}` has another shape", lt.base_name)));
            }
            *lt = LoraTensor { a, b, ..lt.clone() };
        }
        t.policy.set_lora(&tensors)?;
        for i in 0..t.opt.m.len() {
            let (m, v) = (read(&format!("adam.m.{i}"))?, read(&format!("adam.v.{i}"))?);
            if m.len() != t.opt.m[i].len() || v.len() != t.opt.v[i].len() {
                return Err(bad(format!("AdamW state {i} has another size")));
            }
            t.opt.m[i] = m;
            t.opt.v[i] = v;
        }
        t.opt.step = state.adam_step;
        t.step = state.step;
        t.cursor = state.cursor;
        t.last = state.last;
        Ok(t)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_epoch_visits_every_task_once() {
        for epoch in 0..3u64 {
            let mut seen: Vec<usize> = (0..7).map(|i| task_for_draw(5, 7, epoch * 7 + i)).collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..7).collect::<Vec<_>>());
        }
        let a: Vec<usize> = (0..7).map(|i| task_for_draw(5, 7, i)).collect();
        let b: Vec<usize> = (7..14).map(|i| task_for_draw(5, 7, i)).collect();
        assert_ne!(a, b, "epochs are shuffled differently");
    }
}

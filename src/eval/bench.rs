//! A dataset ready to decode: the models loaded, every problem's prompt
//! rendered and tokenized, the engine settings fixed. `dlogp eval`,
//! `intervene` and `analyze` run on a [`Bench`]: it decodes configurations
//! (resuming from a [`Journal`]), summarises them, and generates responses
//! scored by both models.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use super::journal::{Journal, JournalError};
use super::run::{
    summarize_config, EvalSummary, Evaluator, Grader, RunStats, SampleKey, SampleRow, SummaryError,
};
use super::tasks::Task;
use super::verify::prompt_for;
use crate::analysis::ScoreRecord;
use crate::decode::{parse_specs, DecodeConfig, DecodeError, EngineOptions, SpecError};
use crate::runtime::{
    context_size, LoadOptions, Model, ModelPair, Overlap, PairSpec, PromptFormat, RuntimeError,
    ScoreOptions, ScoreSequence, Scorer, Token,
};
use crate::sampler::TokenMetrics;

/// The models a bench runs on.
#[derive(Debug, Clone, PartialEq)]
pub enum BenchModels {
    /// A base and an RL model.
    Pair(PairSpec),
    /// The base model alone (`base` configurations only).
    Base(PathBuf),
}

/// Everything [`Bench::load`] needs, resolved (the CLI fills it from its flags).
#[derive(Debug, Clone)]
pub struct BenchSpec {
    pub models: BenchModels,
    pub load: LoadOptions,
    pub tasks: Vec<Task>,
    /// The dataset's name in messages (its path, or `<stdin>`).
    pub source_name: String,
    /// Prompt template; `{question}` is replaced by the problem.
    pub template: String,
    /// Use prompts as written instead of rendering the chat template.
    pub raw: bool,
    pub grader: Grader,
    /// Samples per problem.
    pub k: usize,
    /// The context size asked for; `None` fits the longest prompt and
    /// `max_tokens` (in steps of 256), capped by the training context.
    pub ctx_size: Option<u32>,
    pub max_tokens: usize,
    pub stop: Vec<String>,
    /// Draft length K (1: lockstep).
    pub draft: usize,
    /// Sequences decoded side by side.
    pub n_seq: u32,
    pub threads: usize,
    /// The configuration a bare mode name resolves against.
    pub defaults: DecodeConfig,
    /// What decides the samples, for the journal (a run with other settings
    /// does not resume it); its `seed` is the summary's.
    pub settings: Value,
}

/// A named, resolved decoding configuration.
#[derive(Debug, Clone)]
pub struct NamedConfig {
    pub name: String,
    pub cfg: DecodeConfig,
}

/// Progress of a bench, for the caller to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchEvent<'a> {
    /// [`Bench::run`] is about to decode `total` samples; `resumed` more
    /// came from the journal.
    Start { total: usize, resumed: usize },
    /// The configuration named here starts decoding.
    Config(&'a str),
    /// One more sample is done.
    Sample,
    /// [`Bench::run`] decoded everything.
    Finish,
    /// [`Bench::calibrate`] generates and scores `samples` base samples of
    /// `problems` problems.
    Calibrating { samples: usize, problems: usize },
}

/// Why a bench could not be loaded or run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("invalid `k`: must be at least 1")]
    NoSamples,
    #[error(
        "configuration `{config}` needs an RL model\nhint: pass `rl_model` FILE or `rl_lora` FILE, or use `modes` base"
    )]
    NeedsRl { config: String },
    #[error("scoring needs an RL model\nhint: pass `rl_model` FILE or `rl_lora` FILE")]
    ScoringNeedsRl,
    #[error("calibration: the base model generated no tokens\nhint: raise `calibrate` or `max_tokens`, or give `taus`")]
    NoCalibrationTokens,
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error(transparent)]
    Summary(#[from] SummaryError),
}

/// Models, prompts and engine settings, ready to decode configurations.
pub struct Bench {
    pub tasks: Vec<Task>,
    pub pair: Option<ModelPair>,
    pub single: Option<Model>,
    /// Prompt tokens per problem.
    pub prompts: Vec<Vec<Token>>,
    pub options: EngineOptions,
    pub grader: Grader,
    pub k: usize,
    /// The configuration a bare mode name resolves against.
    pub defaults: DecodeConfig,
    /// What decides the samples, for the journal.
    pub settings: Value,
}

/// A generated response scored by both models of the pair.
pub struct ScoredResponse {
    pub problem: usize,
    pub sample: usize,
    pub tokens: Vec<Token>,
    pub metrics: Vec<TokenMetrics>,
}

impl Bench {
    /// Loads the models, renders and tokenizes every prompt, and fixes the
    /// context: every prompt must leave room for a token before any journal
    /// exists.
    pub fn load(spec: BenchSpec) -> Result<Bench, BenchError> {
        if spec.k == 0 {
            return Err(BenchError::NoSamples);
        }
        let (pair, single) = match &spec.models {
            BenchModels::Pair(p) => (Some(ModelPair::load(p, &spec.load)?), None),
            BenchModels::Base(path) => (None, Some(Model::load(path, &spec.load)?)),
        };
        let model: &Model = pair
            .as_ref()
            .map_or_else(|| single.as_ref().expect("loaded"), ModelPair::base);
        let format = PromptFormat::for_model(model, spec.raw)?;
        let label = |t: &Task| format!("{} (id {})", spec.source_name, t.id);
        // the largest context this run can have, to refuse huge prompts by bytes
        let max_ctx = match (spec.ctx_size, model.n_ctx_train()) {
            (Some(_), train) => context_size(spec.ctx_size, train)? as usize,
            (None, 0) => u32::MAX as usize,
            (None, train) => train as usize,
        };
        let mut prompts = Vec::with_capacity(spec.tasks.len());
        for t in &spec.tasks {
            let text = format
                .user_prompt(&prompt_for(&t.question, &spec.template))
                .map_err(|reason| RuntimeError::Row {
                    row: label(t),
                    reason,
                })?;
            if prompts.is_empty() {
                tracing::debug!("prompt of {}: {text:?}", label(t));
            }
            prompts.push(format.tokenize_prompt_within(model, &text, max_ctx, &label(t))?);
        }
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(1);
        let n_ctx = match spec.ctx_size {
            Some(_) => context_size(spec.ctx_size, model.n_ctx_train())?,
            None => {
                let need = crate::runtime::padded_context(longest + spec.max_tokens + 1);
                match model.n_ctx_train() {
                    0 => need,
                    train => need.min(train),
                }
            }
        };
        for (t, p) in spec.tasks.iter().zip(&prompts) {
            if p.len() + 1 > n_ctx as usize {
                return Err(RuntimeError::PromptTooLong {
                    row: label(t),
                    n_tokens: p.len().to_string(),
                    n_ctx: n_ctx as usize,
                }
                .into());
            }
        }
        let options = EngineOptions {
            max_tokens: spec.max_tokens,
            stop: spec.stop,
            draft: spec.draft,
            n_seq: spec.n_seq,
            n_ctx,
            threads: spec.threads,
        };
        Ok(Bench {
            tasks: spec.tasks,
            pair,
            single,
            prompts,
            options,
            grader: spec.grader,
            k: spec.k,
            defaults: spec.defaults,
            settings: spec.settings,
        })
    }

    /// The base model (the only one without a pair).
    pub fn model(&self) -> &Model {
        self.pair
            .as_ref()
            .map_or_else(|| self.single.as_ref().expect("loaded"), ModelPair::base)
    }

    fn evaluator(&self) -> Evaluator<'_> {
        Evaluator {
            model: self.model(),
            pair: self.pair.as_ref(),
            prompts: self.prompts.clone(),
            tasks: &self.tasks,
            k: self.k,
            grader: self.grader.clone(),
            options: self.options.clone(),
        }
    }

    /// Resolve configuration names (`base,rl,extrapolate:gamma=0.2`) against
    /// the bench's defaults.
    pub fn configs(&self, list: &str) -> Result<Vec<NamedConfig>, BenchError> {
        let mut out = Vec::new();
        for spec in parse_specs(list)? {
            let cfg = spec.resolve(&self.defaults)?;
            if cfg.needs_rl() && self.pair.is_none() {
                return Err(BenchError::NeedsRl { config: spec.name });
            }
            out.push(NamedConfig {
                name: spec.name,
                cfg,
            });
        }
        Ok(out)
    }

    /// Decode every configuration's missing samples, resuming from and
    /// appending to `journal` when given, telling `progress` how it goes.
    /// Returns all rows (journal and new) in one order (configuration,
    /// problem, sample) and each configuration's timing in this run. The
    /// caller writes the outputs, then discards the journal.
    pub fn run(
        &self,
        configs: &[NamedConfig],
        journal: Option<&Path>,
        restart: bool,
        mut progress: impl FnMut(BenchEvent<'_>),
    ) -> Result<(Vec<SampleRow>, Vec<RunStats>), BenchError> {
        let (mut journal, mut rows) = match journal {
            Some(path) => {
                let (j, rows) = Journal::open(path, &self.settings, restart)?;
                (Some(j), rows)
            }
            None => (None, Vec::new()),
        };
        // keep one row per (config, id, sample), the first written
        let mut seen = HashSet::new();
        rows.retain(|r| seen.insert((r.config.clone(), r.id.clone(), r.sample)));
        let index = self.task_index();
        let mut todo: Vec<Vec<SampleKey>> = Vec::new();
        for c in configs {
            let done: HashSet<(usize, usize)> = rows
                .iter()
                .filter(|r| r.config == c.name && r.sample < self.k)
                .filter_map(|r| index.get(r.id.as_str()).map(|&i| (i, r.sample)))
                .collect();
            todo.push(
                SampleKey::grid(self.tasks.len(), self.k)
                    .filter(|s| !done.contains(&(s.problem, s.sample)))
                    .collect(),
            );
        }
        let total: usize = todo.iter().map(Vec::len).sum();
        let resumed = configs.len() * self.tasks.len() * self.k - total;
        progress(BenchEvent::Start { total, resumed });
        let evaluator = self.evaluator();
        let mut stats = Vec::new();
        for (c, todo) in configs.iter().zip(&todo) {
            progress(BenchEvent::Config(&c.name));
            let s = evaluator.run(&c.name, &c.cfg, todo, |row| {
                if let Some(j) = &mut journal {
                    j.append(&row)
                        .map_err(|e| DecodeError::Invalid(e.to_string()))?;
                }
                rows.push(row);
                progress(BenchEvent::Sample);
                Ok(())
            })?;
            stats.push(s);
        }
        progress(BenchEvent::Finish);
        // One order whether resumed or not (configuration, problem, sample),
        // so the summary's sums add up in the same order.
        rows.sort_by_key(|r| {
            (
                configs
                    .iter()
                    .position(|c| c.name == r.config)
                    .unwrap_or(usize::MAX),
                index.get(r.id.as_str()).copied().unwrap_or(usize::MAX),
                r.sample,
            )
        });
        Ok((rows, stats))
    }

    /// The summary of `configs` from `rows`.
    pub fn summary(
        &self,
        configs: &[NamedConfig],
        rows: &[SampleRow],
        stats: &[RunStats],
    ) -> Result<EvalSummary, BenchError> {
        let mut out = Vec::new();
        for (c, s) in configs.iter().zip(stats) {
            out.push(summarize_config(
                &c.name,
                &c.cfg,
                &self.tasks,
                rows,
                self.k,
                *s,
            )?);
        }
        Ok(EvalSummary {
            k: self.k,
            n_problems: self.tasks.len(),
            seed: self.settings["seed"].as_u64().unwrap_or_default(),
            configs: out,
        })
    }

    /// Rows of `configs` in a stable order: configuration, problem, sample.
    pub fn ordered<'r>(
        &self,
        configs: &[NamedConfig],
        rows: &'r [SampleRow],
    ) -> Vec<&'r SampleRow> {
        let index = self.task_index();
        let mut out: Vec<(usize, usize, usize, &SampleRow)> = rows
            .iter()
            .filter_map(|r| {
                let c = configs.iter().position(|c| c.name == r.config)?;
                let p = *index.get(r.id.as_str())?;
                (r.sample < self.k).then_some((c, p, r.sample, r))
            })
            .collect();
        out.sort_by_key(|&(c, p, s, _)| (c, p, s));
        out.into_iter().map(|(.., r)| r).collect()
    }

    /// Problem index by id.
    fn task_index(&self) -> HashMap<&str, usize> {
        self.tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.as_str(), i))
            .collect()
    }

    /// Generates the `k` samples of the first `n` problems under `cfg` (the
    /// same samples `run` would make for that configuration) and scores
    /// each response teacher-forced on the pair: every token's Δlog p,
    /// entropies and KLs. Empty responses are left out.
    pub fn generate_scored(
        &self,
        cfg: DecodeConfig,
        n: usize,
    ) -> Result<Vec<ScoredResponse>, BenchError> {
        self.generate_scored_with(cfg, n, |_| {})
    }

    /// [`Bench::generate_scored`], calling `progress(i)` as the `i`-th
    /// response (in completion order, from 1) finishes generating.
    pub fn generate_scored_with(
        &self,
        cfg: DecodeConfig,
        n: usize,
        mut progress: impl FnMut(usize),
    ) -> Result<Vec<ScoredResponse>, BenchError> {
        let pair = self.pair.as_ref().ok_or(BenchError::ScoringNeedsRl)?;
        let n = n.clamp(1, self.tasks.len());
        let keys: Vec<SampleKey> = SampleKey::grid(n, self.k).collect();
        let evaluator = self.evaluator();
        let requests = evaluator.requests(&keys);
        let mut done: Vec<(usize, Vec<Token>)> = Vec::new();
        let mut finished = 0;
        evaluator.engine(&cfg, requests.len())?.run(
            &requests,
            |_, _| {},
            |g| {
                finished += 1;
                progress(finished);
                if !g.tokens.is_empty() {
                    done.push((g.request, g.tokens));
                }
                Ok(())
            },
        )?;
        done.sort_by_key(|d| d.0);
        let rows: Vec<ScoreSequence> = done
            .iter()
            .map(|(i, tokens)| ScoreSequence {
                label: format!(
                    "problem `{}` sample {}",
                    self.tasks[keys[*i].problem].id, keys[*i].sample
                ),
                prompt: requests[*i].prompt.clone(),
                response: tokens.clone(),
            })
            .collect();
        let mut out: Vec<ScoredResponse> = done
            .into_iter()
            .map(|(i, tokens)| ScoredResponse {
                problem: keys[i].problem,
                sample: keys[i].sample,
                tokens,
                metrics: Vec::new(),
            })
            .collect();
        if rows.is_empty() {
            return Ok(out);
        }
        let options = ScoreOptions {
            n_ctx: self.options.n_ctx,
            n_batch: 512,
            n_seq: 8,
            threads: self.options.threads,
            overlap: Overlap::Concurrent,
            flash_attention: false,
        }
        .fitted_to(&rows);
        Scorer::for_pair(pair, options)?.score_pair(
            &rows,
            |i, m| {
                out[i].metrics = m;
                Ok(())
            },
            |_| {},
        )?;
        Ok(out)
    }

    /// [`Bench::generate_scored`] over every problem, as the records
    /// `dlogp score` writes: id `PROBLEM#SAMPLE`, the token's text under
    /// the base model.
    pub fn score_records(&self, cfg: DecodeConfig) -> Result<Vec<ScoreRecord>, BenchError> {
        self.score_records_with(cfg, |_| {})
    }

    /// [`Bench::score_records`] with `progress` as in
    /// [`Bench::generate_scored_with`].
    pub fn score_records_with(
        &self,
        cfg: DecodeConfig,
        progress: impl FnMut(usize),
    ) -> Result<Vec<ScoreRecord>, BenchError> {
        let responses = self.generate_scored_with(cfg, self.tasks.len(), progress)?;
        let model = self.model();
        let mut out = Vec::new();
        for r in responses {
            let id = Value::String(format!("{}#{}", self.tasks[r.problem].id, r.sample));
            for (position, (m, &t)) in r.metrics.iter().zip(&r.tokens).enumerate() {
                out.push(ScoreRecord {
                    id: id.clone(),
                    position,
                    token: Some(t.0),
                    text: model.piece(t),
                    metrics: *m,
                });
            }
        }
        Ok(out)
    }
}

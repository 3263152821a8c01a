//! `dlogp eval`: a verifiable dataset under one or more decoding
//! configurations, k samples per problem, graded; Avg@k, Pass@k, replacement
//! ratio, length and speed. Also the machinery `dlogp intervene` runs on.

use std::collections::HashSet;
use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde_json::{json, Value};

use super::args::{DecodeArgs, ModelArgs, PairArgs};
use crate::decode::{parse_specs, DecodeConfig, EngineOptions, Mode};
use crate::eval::verify::check_template;
use crate::eval::{
    markdown_table, prompt_for, summarize_config, DatasetSpec, EvalSummary, Evaluator, Extraction,
    Grader, Journal, Preset, RunStats, SampleKey, SampleRow, Task, DEFAULT_PROMPT_TEMPLATE,
};
use crate::io::{ensure_distinct, is_std_stream, write_atomic, Output};
use crate::runtime::{Model, ModelPair, PromptFormat};

/// The dataset and how problems become prompts and answers are graded.
#[derive(Debug, Clone, Args)]
pub struct DataArgs {
    /// The problems (JSONL).
    #[arg(long, short = 'd', value_name = "JSONL")]
    pub data: PathBuf,
    /// Field layout: gsm8k (question/answer after ####), math (problem/answer),
    /// arith (question/answer, as `dlogp tasks arith` writes). Default: arith.
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,
    /// The field holding the question (overrides the preset).
    #[arg(long)]
    pub question_field: Option<String>,
    /// The field holding the reference answer (overrides the preset).
    #[arg(long)]
    pub answer_field: Option<String>,
    /// Use only the first N problems.
    #[arg(long)]
    pub limit: Option<usize>,
    /// Prompt template; `{question}` is replaced by the problem (METHOD.md §5).
    #[arg(long, default_value = DEFAULT_PROMPT_TEMPLATE)]
    pub template: String,
    /// When a response has no \boxed{} or #### answer, grade its last number.
    #[arg(long)]
    pub last_number: bool,
    /// Use prompts as written instead of rendering the chat template.
    #[arg(long)]
    pub raw: bool,
}

impl DataArgs {
    pub fn load(&self) -> anyhow::Result<Vec<Task>> {
        check_template(&self.template)?;
        let mut spec: DatasetSpec = self.preset.unwrap_or(Preset::Arith).into();
        if let Some(q) = &self.question_field {
            spec.question_field = q.clone();
        }
        if let Some(a) = &self.answer_field {
            spec.answer_field = a.clone();
        }
        let name = self.source_name();
        let mut tasks = if is_std_stream(&self.data) {
            crate::eval::load(std::io::stdin().lock(), &name, &spec)?
        } else {
            let file = File::open(&self.data)
                .with_context(|| format!("{name}: could not open the dataset"))?;
            crate::eval::load(BufReader::new(file), &name, &spec)?
        };
        if let Some(n) = self.limit {
            if n == 0 {
                anyhow::bail!("invalid --limit: must be at least 1");
            }
            tasks.truncate(n);
        }
        Ok(tasks)
    }

    /// The dataset's name in messages: its path, or `<stdin>` for `-`.
    pub fn source_name(&self) -> String {
        if is_std_stream(&self.data) {
            "<stdin>".to_string()
        } else {
            self.data.display().to_string()
        }
    }

    pub fn grader(&self) -> Grader {
        let mut grader = Grader::default();
        if self.last_number {
            grader.methods.push(Extraction::LastNumber);
        }
        grader
    }
}

/// Decoding settings shared by every configuration (each may override the
/// gate, γ, proposer and sampling in its name).
#[derive(Debug, Clone, Args)]
pub struct SamplingArgs {
    /// Defaults of every configuration (names in --modes override them).
    #[command(flatten)]
    pub decode: DecodeArgs,
    /// Tokens per response at most.
    #[arg(long, default_value_t = 512)]
    pub max_tokens: usize,
    /// Stop when this text appears (repeatable).
    #[arg(long)]
    pub stop: Vec<String>,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Draft length K for speculative gating (1: lockstep). Default: 4 when
    /// several sequences are decoded side by side, else 1.
    #[arg(long)]
    pub draft: Option<usize>,
    /// Sequences decoded side by side.
    #[arg(long, default_value_t = 8)]
    pub sequences: u32,
}

impl SamplingArgs {
    /// The configuration a bare mode name resolves against.
    pub fn defaults(&self, mode: Mode) -> anyhow::Result<DecodeConfig> {
        if !(1..=256).contains(&self.sequences) {
            anyhow::bail!(
                "invalid --sequences {}: must be between 1 and 256 (llama.cpp's limit)",
                self.sequences
            );
        }
        if self.max_tokens == 0 {
            anyhow::bail!("invalid --max-tokens: must be at least 1");
        }
        if self.draft == Some(0) {
            anyhow::bail!("invalid --draft 0: must be at least 1 (1 decodes in lockstep)");
        }
        if let Some(i) = self.stop.iter().position(String::is_empty) {
            anyhow::bail!(
                "invalid --stop \"\" (stop string {}): an empty stop string would end every response at once",
                i + 1
            );
        }
        self.decode.resolve(mode, self.seed)
    }
}

#[derive(Debug, Args)]
pub struct EvalArgs {
    #[command(flatten)]
    pub pair: PairArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Decoding configurations, comma-separated: a mode (base, rl, replace,
    /// extrapolate, global) with optional overrides, e.g.
    /// `base,rl,extrapolate,extrapolate:gamma=0.2:tau=-0.5,replace:criterion=kl:tau=0.1`.
    /// Default: base,rl,extrapolate with an RL model, base without.
    #[arg(long, short = 'm')]
    pub modes: Option<String>,
    /// Samples per problem (Avg@k and Pass@k use all k).
    #[arg(long, short = 'k', default_value_t = 4)]
    pub k: usize,
    /// Per-sample JSONL rows {"id", "sample", "config", "response", "extracted",
    /// "correct", "replacement_ratio", "n_tokens", "finish"}. Progress goes to
    /// OUTPUT.partial, from which an interrupted run resumes.
    #[arg(long, short = 'o', value_name = "JSONL")]
    pub output: Option<PathBuf>,
    /// The summary as JSON {"k", "n_problems", "seed", "configs": [...]}.
    #[arg(long, value_name = "JSON")]
    pub summary: Option<PathBuf>,
    /// Discard OUTPUT.partial from an earlier run instead of resuming it.
    #[arg(long)]
    pub restart: bool,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// No progress bar or table.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// A named, resolved decoding configuration.
pub struct NamedConfig {
    pub name: String,
    pub cfg: DecodeConfig,
}

/// Models, prompts and engine settings, ready to decode configurations.
pub struct Bench {
    pub tasks: Vec<Task>,
    pub pair: Option<ModelPair>,
    pub single: Option<Model>,
    pub prompts: Vec<Vec<crate::runtime::LlamaToken>>,
    pub options: EngineOptions,
    pub grader: Grader,
    pub k: usize,
    /// What decides the samples, for the journal.
    pub settings: Value,
}

impl Bench {
    pub fn load(
        pair_args: &PairArgs,
        data: &DataArgs,
        sampling: &SamplingArgs,
        model_args: &ModelArgs,
        k: usize,
    ) -> anyhow::Result<Bench> {
        if k == 0 {
            anyhow::bail!("invalid -k: must be at least 1");
        }
        sampling.defaults(Mode::Base)?;
        let tasks = data.load()?;
        let threads = model_args.threads()?;
        let load = model_args.load_options();
        let spec = pair_args.spec();
        let pair = spec
            .as_ref()
            .map(|s| ModelPair::load(s, &load))
            .transpose()?;
        let single = match &pair {
            Some(_) => None,
            None => Some(Model::load(pair_args.base(), &load)?),
        };
        let model: &Model = pair
            .as_ref()
            .map_or_else(|| single.as_ref().expect("loaded"), ModelPair::base);
        let format = PromptFormat::for_model(model, data.raw)?;
        let data_name = data.source_name();
        let label = |t: &Task| format!("{data_name} (id {})", t.id);
        // the largest context this run can have, to refuse huge prompts by bytes
        let max_ctx = match (model_args.ctx_size, model.n_ctx_train()) {
            (Some(_), train) => model_args.ctx_size(train)? as usize,
            (None, 0) => u32::MAX as usize,
            (None, train) => train as usize,
        };
        let mut prompts = Vec::with_capacity(tasks.len());
        for t in &tasks {
            let text = format
                .user_prompt(&prompt_for(&t.question, &data.template))
                .map_err(|e| anyhow::anyhow!("{}: {e}", label(t)))?;
            prompts.push(format.tokenize_prompt_within(model, &text, max_ctx, &label(t))?);
        }
        let longest = prompts.iter().map(Vec::len).max().unwrap_or(1);
        let n_ctx = match model_args.ctx_size {
            Some(_) => model_args.ctx_size(model.n_ctx_train())?,
            None => {
                let need = crate::runtime::padded_context(longest + sampling.max_tokens + 1);
                match model.n_ctx_train() {
                    0 => need,
                    train => need.min(train),
                }
            }
        };
        // every prompt must leave room for a token, before any journal exists
        for (t, p) in tasks.iter().zip(&prompts) {
            if p.len() + 1 > n_ctx as usize {
                return Err(crate::runtime::RuntimeError::PromptTooLong {
                    row: label(t),
                    n_tokens: p.len().to_string(),
                    n_ctx: n_ctx as usize,
                }
                .into());
            }
        }
        let n_seq = sampling.sequences;
        let options = EngineOptions {
            max_tokens: sampling.max_tokens,
            stop: sampling.stop.clone(),
            draft: sampling
                .draft
                .unwrap_or_else(|| EngineOptions::default_draft(n_seq)),
            n_seq,
            n_ctx,
            threads,
        };
        let (rl, lora_scale) = match (&pair_args.rl, &pair_args.rl_lora) {
            (Some(p), _) => (Some(p.display().to_string()), None),
            (None, Some(p)) => (Some(p.display().to_string()), Some(pair_args.lora_scale)),
            _ => (None, None),
        };
        let d = sampling.defaults(Mode::Base)?;
        let settings = json!({
            "base": pair_args.base().display().to_string(),
            "rl": rl,
            "lora_scale": lora_scale,
            "data": data.data.display().to_string(),
            "problems": tasks.iter().map(|t| &t.id).collect::<Vec<_>>(),
            "template": data.template,
            "raw": data.raw,
            "extraction": data.grader().methods,
            "k": k,
            "seed": sampling.seed,
            "criterion": d.gate().criterion(),
            "tau": d.gate().tau(),
            "gamma": d.gamma(),
            "proposer": d.proposer(),
            "sampling": d.sampling(),
            "max_tokens": sampling.max_tokens,
            "stop": sampling.stop,
        });
        Ok(Bench {
            tasks,
            pair,
            single,
            prompts,
            options,
            grader: data.grader(),
            k,
            settings,
        })
    }

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

    /// Resolve configuration names (`base,rl,extrapolate:gamma=0.2`).
    pub fn configs(&self, list: &str, sampling: &SamplingArgs) -> anyhow::Result<Vec<NamedConfig>> {
        let mut out = Vec::new();
        for spec in parse_specs(list)? {
            let cfg = spec.resolve(&sampling.defaults(Mode::Base)?)?;
            if cfg.needs_rl() && self.pair.is_none() {
                anyhow::bail!(
                    "configuration `{}` needs an RL model\nhint: pass --rl FILE or --rl-lora FILE, or use --modes base",
                    spec.name
                );
            }
            out.push(NamedConfig {
                name: spec.name,
                cfg,
            });
        }
        Ok(out)
    }

    /// Decode every configuration's missing samples, resuming from and
    /// appending to `journal` when given. Returns all rows (journal and new)
    /// and each configuration's timing in this run.
    pub fn run(
        &self,
        configs: &[NamedConfig],
        journal: Option<&Path>,
        restart: bool,
        quiet: bool,
    ) -> anyhow::Result<(Vec<SampleRow>, Vec<RunStats>)> {
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
        let index: std::collections::HashMap<&str, usize> = self
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.as_str(), i))
            .collect();
        let mut todo: Vec<Vec<SampleKey>> = Vec::new();
        for c in configs {
            let done: HashSet<(usize, usize)> = rows
                .iter()
                .filter(|r| r.config == c.name && r.sample < self.k)
                .filter_map(|r| index.get(r.id.as_str()).map(|&i| (i, r.sample)))
                .collect();
            todo.push(
                (0..self.tasks.len())
                    .flat_map(|problem| {
                        (0..self.k).map(move |sample| SampleKey { problem, sample })
                    })
                    .filter(|s| !done.contains(&(s.problem, s.sample)))
                    .collect(),
            );
        }
        let total: usize = todo.iter().map(Vec::len).sum();
        let resumed = configs.len() * self.tasks.len() * self.k - total;
        if resumed > 0 && !quiet {
            eprintln!("resuming: {resumed} samples already done, {total} to go");
        }
        let bar = progress_bar(total, quiet);
        let evaluator = self.evaluator();
        let mut stats = Vec::new();
        for (c, todo) in configs.iter().zip(&todo) {
            bar.set_message(c.name.clone());
            let s = evaluator.run(&c.name, &c.cfg, todo, |row| {
                if let Some(j) = &mut journal {
                    j.append(&row)
                        .map_err(|e| crate::decode::DecodeError::Invalid(e.to_string()))?;
                }
                rows.push(row);
                bar.inc(1);
                Ok(())
            })?;
            stats.push(s);
        }
        bar.finish_and_clear();
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
        // the caller writes the outputs, then discards the journal
        Ok((rows, stats))
    }

    /// The summary of `configs` from `rows`.
    pub fn summary(
        &self,
        configs: &[NamedConfig],
        rows: &[SampleRow],
        stats: &[RunStats],
    ) -> anyhow::Result<EvalSummary> {
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
        let index: std::collections::HashMap<&str, usize> = self
            .tasks
            .iter()
            .enumerate()
            .map(|(i, t)| (t.id.as_str(), i))
            .collect();
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
}

/// A generated response scored by both models of the pair.
pub struct ScoredResponse {
    pub problem: usize,
    pub sample: usize,
    pub tokens: Vec<crate::runtime::LlamaToken>,
    pub metrics: Vec<crate::sampler::TokenMetrics>,
}

impl Bench {
    /// Generates the `k` samples of the first `n` problems under `cfg` (the
    /// same samples `run` would make for that configuration) and scores
    /// each response teacher-forced on the pair: every token's Δlog p,
    /// entropies and KLs. Empty responses are left out.
    pub fn generate_scored(
        &self,
        cfg: DecodeConfig,
        n: usize,
    ) -> anyhow::Result<Vec<ScoredResponse>> {
        use crate::decode::{Engine, Request};
        use crate::runtime::{Overlap, ScoreOptions, ScoreSequence, Scorer};
        let pair = self.pair.as_ref().ok_or_else(|| {
            anyhow::anyhow!("scoring needs an RL model\nhint: pass --rl FILE or --rl-lora FILE")
        })?;
        let n = n.clamp(1, self.tasks.len());
        let keys: Vec<SampleKey> = (0..n)
            .flat_map(|problem| (0..self.k).map(move |sample| SampleKey { problem, sample }))
            .collect();
        let requests: Vec<Request> = keys
            .iter()
            .map(|s| Request {
                key: (s.problem * self.k + s.sample) as u64,
                prompt: self.prompts[s.problem].clone(),
            })
            .collect();
        let mut opts = self.options.clone();
        opts.n_seq = opts.n_seq.min(requests.len() as u32).max(1);
        let mut done: Vec<(usize, Vec<crate::runtime::LlamaToken>)> = Vec::new();
        Engine::for_pair(pair, cfg, opts)?.run(
            &requests,
            |_, _| {},
            |g| {
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
}

/// Writes rows as JSONL atomically.
pub fn write_rows(path: &Path, rows: &[&SampleRow]) -> anyhow::Result<()> {
    let mut out =
        Output::create(path).with_context(|| format!("{}: could not create", path.display()))?;
    for r in rows {
        writeln!(out, "{}", serde_json::to_string(r)?)?;
    }
    out.commit()
        .with_context(|| format!("{}: could not write", path.display()))
}

fn progress_bar(total: usize, quiet: bool) -> ProgressBar {
    if quiet || total == 0 {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "{msg:.bold} [{bar:30}] {pos}/{len} samples ({elapsed}, eta {eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

/// The journal beside `--output`: `None` without one; an error for stdout.
pub fn journal_for(output: Option<&Path>) -> anyhow::Result<Option<PathBuf>> {
    match output {
        Some(o) if o.as_os_str() == "-" => {
            anyhow::bail!("--output needs a file (the run journals its progress beside it)")
        }
        o => Ok(o.map(Journal::path_for)),
    }
}

/// Remove the journal once every output is written.
pub fn discard_journal(journal: Option<&Path>) -> anyhow::Result<()> {
    if let Some(path) = journal {
        Journal::discard(path)
            .with_context(|| format!("{}: could not remove the journal", path.display()))?;
    }
    Ok(())
}

/// Check before any work (and before a journal exists) that each output can
/// be created: its directory exists, and it is none of `inputs` nor another
/// output.
pub fn check_outputs(outputs: &[&Path], inputs: &[&Path]) -> anyhow::Result<()> {
    ensure_distinct(outputs, inputs)?;
    for out in outputs {
        if is_std_stream(out) {
            continue;
        }
        let dir = match out.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        if !dir.is_dir() {
            anyhow::bail!(
                "{}: the directory {} does not exist\nhint: create it first (mkdir -p {})",
                out.display(),
                dir.display(),
                dir.display()
            );
        }
        if out.is_dir() {
            anyhow::bail!("{}: is a directory, not a file", out.display());
        }
    }
    Ok(())
}

pub fn run(args: EvalArgs) -> anyhow::Result<()> {
    let journal = journal_for(args.output.as_deref())?;
    let outputs: Vec<&Path> = [
        args.output.as_deref(),
        args.summary.as_deref(),
        journal.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect();
    check_outputs(&outputs, &args.pair.inputs_and(&[&args.data.data]))?;
    let bench = Bench::load(&args.pair, &args.data, &args.sampling, &args.model, args.k)?;
    let list = args.modes.clone().unwrap_or_else(|| {
        if bench.pair.is_some() {
            "base,rl,extrapolate".to_string()
        } else {
            "base".to_string()
        }
    });
    let configs = bench.configs(&list, &args.sampling)?;
    let (rows, stats) = bench.run(&configs, journal.as_deref(), args.restart, args.quiet)?;
    let summary = bench.summary(&configs, &rows, &stats)?;
    if let Some(path) = &args.output {
        write_rows(path, &bench.ordered(&configs, &rows))?;
    }
    if let Some(path) = &args.summary {
        let text = serde_json::to_string_pretty(&summary)? + "\n";
        write_atomic(path, text.as_bytes())
            .with_context(|| format!("{}: could not write", path.display()))?;
    }
    discard_journal(journal.as_deref())?;
    print!("{}", markdown_table(&summary));
    if !args.quiet {
        eprintln!(
            "{} problems × {} samples × {} configurations",
            summary.n_problems,
            summary.k,
            summary.configs.len()
        );
    }
    Ok(())
}

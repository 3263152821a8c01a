//! `dlogp train`: RLVR (DAPO + optional reweighting) on verifiable tasks,
//! writing a GGUF LoRA adapter llama.cpp loads.

use std::fs::File;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::Args;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::args::{parse_seed, ModelArgs, Seed};
use crate::eval::dataset::{self, DatasetSpec, Preset};
use crate::eval::tasks::{arith, Task, LEVELS};
use crate::eval::verify::{check_template, prompt_for, Extraction, DEFAULT_PROMPT_TEMPLATE};
use crate::eval::{Grader, TaskContract};
use crate::runtime::{Model, PromptFormat};
use crate::train::config::ReweightKind;
use crate::train::loss::ClipParams;
use crate::train::optim::AdamWConfig;
use crate::train::rollout::Rollout;
use crate::train::{
    default_device, init_threads, LoraConfig, LoraTarget, Reweight, TrainSettings, Trainer,
    THREAD_ENV,
};

#[derive(Debug, Args)]
pub struct TrainArgs {
    /// The base model (GGUF, llama architecture); `-m/--model` as in
    /// llama.cpp. Default: gguf/SmolLM2-135M-Instruct.Q4_1.gguf, the default
    /// pair's base.
    #[arg(long, short = 'm', visible_alias = "model", value_name = "GGUF")]
    pub base: Option<PathBuf>,
    /// Where to write the adapter (GGUF LoRA); also written at every checkpoint.
    #[arg(long, short = 'o', value_name = "GGUF")]
    pub out: PathBuf,
    /// Training tasks (JSONL, `-` for stdin); see --preset for the field names.
    #[arg(long, value_name = "JSONL", conflicts_with = "arith")]
    pub data: Option<PathBuf>,
    /// Field layout of --data.
    #[arg(long, value_enum, default_value_t = Preset::Arith)]
    pub preset: Preset,
    /// Train on this many generated arithmetic tasks instead of --data.
    #[arg(long, value_name = "N")]
    pub arith: Option<usize>,
    /// Seed of the generated arithmetic tasks.
    #[arg(long, default_value_t = 0)]
    pub task_seed: u64,
    /// Difficulty of the generated arithmetic tasks (default: all mixed).
    #[arg(long)]
    pub level: Option<u8>,
    /// Prompt template; `{question}` is replaced by the question.
    #[arg(long, default_value = DEFAULT_PROMPT_TEMPLATE)]
    pub template: String,
    /// Use prompts as written instead of rendering the chat template.
    #[arg(long)]
    pub raw: bool,
    /// How answers are pulled from responses, tried in order.
    #[arg(long, value_delimiter = ',', default_value = "boxed")]
    pub extract: Vec<Extraction>,

    /// Optimizer steps (each: one rollout batch).
    #[arg(long, default_value_t = 100)]
    pub steps: u64,
    /// Prompts (groups) per step.
    #[arg(long, default_value_t = 8)]
    pub prompts_per_step: usize,
    /// Samples per prompt (G).
    #[arg(long, short = 'G', default_value_t = 8)]
    pub group_size: usize,
    /// Optimizer updates per rollout batch (PPO mini-batches).
    #[arg(long, default_value_t = 1)]
    pub updates_per_step: usize,
    /// Longest response in tokens (`-n/--n-predict` as in llama.cpp).
    #[arg(long, short = 'n', visible_alias = "n-predict", default_value_t = 256)]
    pub max_tokens: usize,
    /// DAPO's soft overlong penalty over the last N tokens before --max-tokens (0: off).
    #[arg(long, default_value_t = 64)]
    pub overlong_buffer: usize,
    /// Keep groups whose rewards are all equal (DAPO drops them and draws more prompts).
    #[arg(long)]
    pub no_dynamic_sampling: bool,
    /// With dynamic sampling, draw at most this many times --prompts-per-step prompts per step.
    #[arg(long, default_value_t = 3)]
    pub max_draw_factor: usize,
    /// Reward of a correct response.
    #[arg(long, default_value_t = 1.0, allow_negative_numbers = true)]
    pub reward_correct: f64,
    /// Reward of a wrong response (or one with no answer).
    #[arg(long, default_value_t = -1.0, allow_negative_numbers = true)]
    pub reward_wrong: f64,

    /// Token reweighting: lowprob w = 1 + α(1 − π_old), highprob w = 1 − c + c·π_old,
    /// ppl w_i = 1 − α + α·PPL_i / mean_group PPL.
    #[arg(long, value_enum, default_value_t = ReweightKind::None)]
    pub reweight: ReweightKind,
    /// α (lowprob, ppl; default 0.2) or c (highprob; default 0.5).
    #[arg(long)]
    pub reweight_strength: Option<f64>,
    /// PPO ratio clip below 1: ratios under 1 − ε_low are clipped.
    #[arg(long, default_value_t = 0.2)]
    pub clip_low: f64,
    /// DAPO's clip-higher: ratios over 1 + ε_high are clipped.
    #[arg(long, default_value_t = 0.28)]
    pub clip_high: f64,
    /// Dual clip: for negative advantages the ratio is capped at this value.
    #[arg(long, default_value_t = 10.0)]
    pub dual_clip: f64,

    /// LoRA rank.
    #[arg(long, default_value_t = 16)]
    pub rank: usize,
    /// LoRA alpha (scale alpha / rank).
    #[arg(long, default_value_t = 32.0)]
    pub alpha: f32,
    /// Projections to adapt.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "q,k,v,o,gate,up,down"
    )]
    pub targets: Vec<LoraTarget>,
    /// Layers to adapt (default: all).
    #[arg(long, value_delimiter = ',')]
    pub layers: Option<Vec<usize>>,

    /// AdamW learning rate (peak, after the warm-up).
    #[arg(long, default_value_t = 1e-4)]
    pub lr: f64,
    /// Linear warm-up steps.
    #[arg(long, default_value_t = 10)]
    pub warmup: u64,
    /// AdamW decoupled weight decay.
    #[arg(long, default_value_t = 0.1)]
    pub weight_decay: f64,
    /// Global gradient-norm clip (0: off).
    #[arg(long, default_value_t = 1.0)]
    pub max_grad_norm: f64,
    /// Seed of the prompt order and the samples (-1: a random seed, announced).
    #[arg(long, short = 's', value_parser = parse_seed, default_value = "0", allow_negative_numbers = true)]
    pub seed: Seed,

    /// Save a checkpoint (and the adapter) every N steps.
    #[arg(long, default_value_t = 10)]
    pub checkpoint_every: u64,
    /// Checkpoint file (default: <out>.ckpt.gguf).
    #[arg(long, value_name = "GGUF")]
    pub checkpoint: Option<PathBuf>,
    /// Continue from the checkpoint (same flags; --steps may be raised).
    #[arg(long)]
    pub resume: bool,
    /// Per-step metrics (default: <out>.metrics.jsonl; `-` for stdout).
    #[arg(long, value_name = "JSONL")]
    pub metrics: Option<PathBuf>,
    /// Sequences the trainer processes side by side, one thread each (default:
    /// the physical cores). Each sequence's tensor math stays on one thread:
    /// candle's own pool spins and scaled poorly. Resume with the same number
    /// to continue bit for bit.
    #[arg(long)]
    pub train_threads: Option<usize>,
    /// Sequences llama.cpp samples side by side.
    #[arg(long, default_value_t = 8)]
    pub sequences: u32,
    /// No progress bar.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(suffix);
    PathBuf::from(s)
}

impl TrainArgs {
    /// The base model: as given, or the default pair's base (checked).
    pub fn resolve(mut self) -> anyhow::Result<TrainArgs> {
        super::stdio::model_file("--base", self.base.as_deref())?;
        self.base = Some(super::args::base_or_default(self.base.take())?);
        for (flag, path) in [
            ("--out", Some(&self.out)),
            ("--checkpoint", self.checkpoint.as_ref()),
        ] {
            if path.is_some_and(|p| crate::io::is_std_stream(p)) {
                anyhow::bail!("{flag} needs a file: the adapter and the checkpoint are rewritten at every checkpoint\nhint: --out adapter.gguf (--metrics - streams the per-step metrics to stdout)");
            }
        }
        Ok(self)
    }

    /// The base model; [`TrainArgs::resolve`] must have run.
    fn base(&self) -> &Path {
        self.base
            .as_deref()
            .expect("TrainArgs::resolve fills in the base model")
    }

    fn settings(&self) -> anyhow::Result<TrainSettings> {
        let lora = LoraConfig::new(self.rank, self.alpha, &self.targets, self.layers.as_deref())?;
        let clip = ClipParams {
            low: self.clip_low,
            high: self.clip_high,
            dual: self.dual_clip,
        };
        if !(clip.low > 0.0 && clip.low < 1.0 && clip.high > 0.0 && clip.dual > 1.0 + clip.high) {
            anyhow::bail!("invalid clip settings: need 0 < --clip-low < 1, --clip-high > 0, --dual-clip > 1 + --clip-high");
        }
        let settings = TrainSettings {
            lora,
            reweight: Reweight::from_kind(self.reweight, self.reweight_strength)?,
            clip,
            optim: AdamWConfig {
                lr: self.lr,
                warmup_steps: self.warmup,
                weight_decay: self.weight_decay,
                max_grad_norm: self.max_grad_norm,
                ..AdamWConfig::default()
            },
            steps: self.steps,
            prompts_per_step: self.prompts_per_step,
            group_size: self.group_size,
            updates_per_step: self.updates_per_step,
            max_tokens: self.max_tokens,
            overlong_buffer: self.overlong_buffer,
            dynamic_sampling: !self.no_dynamic_sampling,
            max_draw_factor: self.max_draw_factor,
            reward_correct: self.reward_correct,
            reward_wrong: self.reward_wrong,
            seed: self.seed.value,
            rollout_sequences: self.sequences,
            rollout_threads: self.model.threads()?,
        };
        settings.validate()?;
        Ok(settings)
    }

    /// How prompts are built and rewards graded: recorded in the adapter
    /// (`dlogp.task.*`) so that `eval` builds the same prompts.
    fn task_contract(&self) -> TaskContract {
        TaskContract {
            template: self.template.clone(),
            chat_template: !self.raw,
            extraction: self.extract.clone(),
            max_tokens: Some(self.max_tokens as u64),
        }
    }

    fn tasks(&self) -> anyhow::Result<Vec<Task>> {
        match (&self.data, self.arith) {
            (Some(path), _) => {
                let spec: DatasetSpec = self.preset.into();
                if crate::io::is_std_stream(path) {
                    return Ok(dataset::load(std::io::stdin().lock(), "<stdin>", &spec)?);
                }
                let file = File::open(path)
                    .with_context(|| format!("{}: could not open", path.display()))?;
                Ok(dataset::load(
                    BufReader::new(file),
                    &path.display().to_string(),
                    &spec,
                )?)
            }
            (None, Some(n)) => {
                if let Some(l) = self.level {
                    if !LEVELS.contains(&l) {
                        anyhow::bail!(
                            "invalid --level {l}: must be between {} and {}",
                            LEVELS.start(),
                            LEVELS.end()
                        );
                    }
                }
                Ok(arith(n, self.task_seed, self.level))
            }
            (None, None) => {
                anyhow::bail!("no training tasks\nhint: pass --data tasks.jsonl or --arith N")
            }
        }
    }
}

/// Tokenize each task's prompt with the model's tokenizer and chat template.
fn tokenize(args: &TrainArgs, tasks: &[Task]) -> anyhow::Result<Vec<Vec<u32>>> {
    let model = Model::load(args.base(), &args.model.load_options())?;
    let format = PromptFormat::for_model(&model, args.raw)?;
    tasks
        .iter()
        .map(|t| {
            let text = format
                .user_prompt(&prompt_for(&t.question, &args.template))
                .map_err(|e| anyhow::anyhow!("task {}: {e}", t.id))?;
            Ok(format
                .tokenize_prompt(&model, &text)
                .iter()
                .map(|t| t.0)
                .collect())
        })
        .collect()
}

/// On resume, keep the metrics rows of the steps the checkpoint covers.
fn trim_metrics(path: &Path, steps_done: u64) -> anyhow::Result<()> {
    let Ok(file) = File::open(path) else {
        return Ok(());
    };
    let mut kept = String::new();
    for line in BufReader::new(file).lines() {
        let line = line?;
        let step = serde_json::from_str::<serde_json::Value>(&line)
            .ok()
            .and_then(|v| v["step"].as_u64());
        if step.is_some_and(|s| s <= steps_done) {
            kept.push_str(&line);
            kept.push('\n');
        }
    }
    crate::io::write_atomic(path, kept.as_bytes())
        .with_context(|| format!("{}: could not rewrite", path.display()))
}

fn progress_bar(steps: u64, done: u64, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(steps), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "training [{bar:30}] {pos}/{len} steps ({elapsed}, eta {eta}) {msg}",
    ) {
        bar.set_style(style);
    }
    bar.set_position(done);
    bar
}

pub fn run(args: TrainArgs) -> anyhow::Result<()> {
    // before any other thread exists: candle reads these once
    for key in THREAD_ENV {
        if std::env::var_os(key).is_none() {
            std::env::set_var(key, "1");
        }
    }
    init_threads();
    let settings = args.settings()?;
    check_template(&args.template)?;
    if args.extract.is_empty() {
        anyhow::bail!("invalid --extract: give at least one method (boxed, gsm8k, last-number)");
    }
    let tasks = args.tasks()?;
    if tasks.is_empty() {
        anyhow::bail!("the task set is empty");
    }
    let grader = Grader {
        methods: args.extract.clone(),
    };
    let prompts = tokenize(&args, &tasks)?;
    let workers = match args.train_threads {
        Some(0) => anyhow::bail!("invalid --train-threads: must be at least 1"),
        Some(n) => super::args::clamp_threads(n, "--train-threads"),
        None => crate::runtime::default_threads(),
    };
    let device = default_device();
    let checkpoint = args
        .checkpoint
        .clone()
        .unwrap_or_else(|| with_suffix(&args.out, ".ckpt.gguf"));
    let metrics_path = args
        .metrics
        .clone()
        .unwrap_or_else(|| with_suffix(&args.out, ".metrics.jsonl"));
    let mut inputs: Vec<&std::path::Path> = vec![args.base()];
    inputs.extend(args.data.as_deref());
    super::eval::check_outputs(&[&args.out, &checkpoint, &metrics_path], &inputs)?;
    let mut trainer = if args.resume {
        if !checkpoint.exists() {
            anyhow::bail!(
                "{}: no checkpoint to resume from\nhint: drop --resume to start afresh, or pass --checkpoint",
                checkpoint.display()
            );
        }
        let t = Trainer::resume(args.base(), prompts, settings, &device, &checkpoint)?;
        if !crate::io::is_std_stream(&metrics_path) {
            trim_metrics(&metrics_path, t.steps_done())?;
        }
        t
    } else {
        if !crate::io::is_std_stream(&metrics_path) {
            let _ = std::fs::remove_file(&metrics_path);
        }
        Trainer::new(args.base(), prompts, settings, &device)?
    };
    trainer.set_workers(workers)?;
    trainer.set_task_contract(args.task_contract());
    tracing::info!(
        "training {} LoRA parameters ({} tensors) on {}, {} tasks, {workers} trainer thread(s), {:?}",
        trainer.policy().n_params(),
        trainer.policy().vars().len(),
        args.base().display(),
        tasks.len(),
        device
    );
    let mut metrics_file: Box<dyn Write> = if crate::io::is_std_stream(&metrics_path) {
        Box::new(std::io::stdout())
    } else {
        Box::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&metrics_path)
                .with_context(|| format!("{}: could not open", metrics_path.display()))?,
        )
    };
    let verify = |task: usize, r: &Rollout| grader.grade(&r.text, &tasks[task].answer).1;
    let bar = progress_bar(args.steps, trainer.steps_done(), args.quiet);
    while !trainer.finished() {
        let m = trainer.step(&verify)?;
        writeln!(metrics_file, "{}", serde_json::to_string(&m)?)
            .with_context(|| format!("{}: could not write", metrics_path.display()))?;
        metrics_file.flush()?;
        bar.set_message(format!(
            "reward {:+.3}, acc {:.3}, kept {}/{}, rollout {:.0} tok/s, grad {:.0} tok/s",
            m.reward_mean,
            m.accuracy,
            m.groups_kept,
            m.groups_kept + m.groups_dropped,
            m.rollout_tok_s,
            m.grad_tok_s
        ));
        bar.inc(1);
        let every = args.checkpoint_every.max(1);
        if trainer.steps_done() % every == 0 || trainer.finished() {
            trainer.save_checkpoint(&checkpoint).with_context(|| {
                format!("{}: could not save the checkpoint", checkpoint.display())
            })?;
            if !trainer.finished() {
                // the final adapter is written once, after the loop
                trainer.write_adapter(&args.out).with_context(|| {
                    format!("{}: could not write the adapter", args.out.display())
                })?;
            }
        }
    }
    bar.finish_and_clear();
    trainer
        .write_adapter(&args.out)
        .with_context(|| format!("{}: could not write the adapter", args.out.display()))?;
    if let Some(m) = trainer.last_metrics() {
        tracing::info!(
            "wrote {} after {} steps (last step: reward {:+.3}, accuracy {:.3})",
            args.out.display(),
            trainer.steps_done(),
            m.reward_mean,
            m.accuracy
        );
    }
    Ok(())
}

//! `dlogp score`: per-token metrics of a pair on given responses.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use serde_json::Value;

use super::args::{ModelArgs, PairArgs};
use super::eval::with_provenance;
use crate::analysis::{FileInfo, NoiseFloor, ScoreRecord, ScoreSummary};
use crate::io::{ensure_distinct, read_rows_from, write_atomic, InputRow, Output, RowBody};
use crate::runtime::{
    noise_floor_dlogp, Model, ModelPair, NoiseProbe, Overlap, PromptFormat, RuntimeError,
    ScoreOptions, ScoreSequence, Scorer,
};
use crate::sampler::{SingleMetrics, TokenMetrics};

#[derive(Debug, Args)]
pub struct ScoreArgs {
    #[command(flatten)]
    pub pair: PairArgs,
    /// Input rows (JSONL): {"id"?, "prompt", "response"} or {"id"?, "messages": [...]}
    /// (the last assistant message is scored); `-` for stdin.
    #[arg(long, short = 'i', value_name = "JSONL")]
    pub input: PathBuf,
    /// Output: one JSON object per response token; `-` for stdout.
    #[arg(long, short = 'o', value_name = "JSONL", default_value = "-")]
    pub output: PathBuf,
    /// Also write the summary as JSON to this file (`-`: stdout, then
    /// --output needs a file).
    #[arg(long, value_name = "JSON")]
    pub summary: Option<PathBuf>,
    /// Use prompts as written instead of rendering the model's chat template.
    #[arg(long)]
    pub raw: bool,
    /// Cut responses that do not fit the context instead of failing.
    #[arg(long)]
    pub truncate: bool,
    /// Rows decoded side by side in one batch.
    #[arg(long, default_value_t = 8)]
    pub sequences: u32,
    /// How the two models share the CPU.
    #[arg(long, value_enum, default_value_t = OverlapArg::Auto)]
    pub overlap: OverlapArg,
    /// Also measure the pair's noise floor: score the rows again with the
    /// base against the base plus a LoRA whose B is ~1e-7 (a practically
    /// zero update; on a quantized model it still flips activation
    /// roundings) and report the |Δlog p| it leaves (p50, p95, p99, max)
    /// next to the Δlog p quantiles and in --summary as `noise_floor`.
    #[arg(long)]
    pub noise_floor: bool,
    /// No summary or progress bar on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// How the two models share the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum OverlapArg {
    /// Concurrent when there are at least two threads (measured faster).
    Auto,
    /// One model after the other, each with all threads.
    Sequential,
    /// Both models at once on two OS threads, each with half the threads.
    Concurrent,
}

/// Write one row's records, calling `each` on every token's metrics.
fn write_row<M: Serialize + Copy>(
    out: &mut Output,
    model: &Model,
    id: &Value,
    seq: &ScoreSequence,
    scores: &[M],
    mut each: impl FnMut(&M),
) -> Result<(), RuntimeError> {
    for (position, (m, &token)) in scores.iter().zip(&seq.response).enumerate() {
        each(m);
        let record = ScoreRecord {
            id: id.clone(),
            position,
            token: Some(token.0),
            text: model.piece(token),
            metrics: *m,
        };
        write_record(out, &record)?;
    }
    Ok(())
}

pub fn run(args: ScoreArgs) -> anyhow::Result<()> {
    if !(1..=256).contains(&args.sequences) {
        anyhow::bail!(
            "invalid --sequences {}: must be between 1 and 256 (llama.cpp's limit)",
            args.sequences
        );
    }
    super::stdio::one_stdout(&[
        ("--output", Some(&args.output)),
        ("--summary", args.summary.as_deref()),
    ])?;
    let mut outputs = vec![args.output.as_path()];
    outputs.extend(args.summary.as_deref());
    ensure_distinct(&outputs, &args.pair.inputs_and(&[&args.input]))?;
    let source_name = if crate::io::is_std_stream(&args.input) {
        "<stdin>".to_string()
    } else {
        args.input.display().to_string()
    };
    let rows = read_rows_from(&args.input)?;

    let threads = args.model.threads()?;
    let load = args.model.load_options();
    // after the models load, so a missing or bad file is named by the loader
    let provenance = || -> anyhow::Result<crate::analysis::Provenance> {
        let mut prov = args.pair.provenance("score")?;
        prov.data = Some(
            FileInfo::read(&args.input)
                .map_err(|e| anyhow::anyhow!("{}: could not read: {e}", args.input.display()))?,
        );
        prov.settings = serde_json::json!({
            "raw": args.raw,
            "truncate": args.truncate,
            "ctx_size": args.model.ctx_size,
            "flash_attn": args.model.flash_attn.enabled(),
        });
        Ok(prov)
    };
    match args.pair.spec() {
        Some(spec) => {
            let pair = ModelPair::load(&spec, &load)?;
            let prov = provenance()?;
            tracing::info!(
                "scoring {} rows: base {} vs RL {}",
                rows.len(),
                spec.base.display(),
                pair.rl_label()
            );
            let options = score_options(&args, pair.base(), threads)?;
            let sequences = sequences(&args, pair.base(), &rows, &source_name, options.n_ctx)?;
            let mut scorer = Scorer::for_pair(&pair, options.fitted_to(&sequences))?;
            let mut out = Output::create(&args.output)
                .with_context(|| format!("{}: could not create", args.output.display()))?;
            let mut summary = ScoreSummary::new();
            let progress = progress_bar(&sequences, args.quiet);
            scorer.score_pair(
                &sequences,
                |i, scores: Vec<TokenMetrics>| {
                    summary.add_row();
                    write_row(
                        &mut out,
                        pair.base(),
                        &rows[i].id,
                        &sequences[i],
                        &scores,
                        |m| summary.push(m),
                    )
                },
                |n| progress.inc(n as u64),
            )?;
            progress.finish_and_clear();
            out.commit()
                .with_context(|| format!("{}: could not write", args.output.display()))?;
            let mut report = summary.finish();
            if args.noise_floor {
                drop(scorer);
                let probe = NoiseProbe::default();
                tracing::info!("measuring the noise floor: {}", probe.describe());
                let dlogp = noise_floor_dlogp(&spec.base, &load, &sequences, options, &probe)?;
                report.noise_floor = NoiseFloor::from_dlogp(probe.describe(), &dlogp);
            }
            if let Some(path) = &args.summary {
                let json = serde_json::to_vec_pretty(&with_provenance(&report, &prov)?)?;
                write_atomic(path, &json)
                    .with_context(|| format!("{}: could not write", path.display()))?;
            }
            if !args.quiet {
                eprintln!("{report}");
            }
        }
        None => {
            if args.noise_floor {
                anyhow::bail!("--noise-floor needs a pair\nhint: pass --rl FILE or --lora FILE");
            }
            let model = Model::load(args.pair.base(), &load)?;
            let prov = provenance()?;
            let options = score_options(&args, &model, threads)?;
            let sequences = sequences(&args, &model, &rows, &source_name, options.n_ctx)?;
            let mut scorer = Scorer::for_model(&model, options.fitted_to(&sequences))?;
            let mut out = Output::create(&args.output)
                .with_context(|| format!("{}: could not create", args.output.display()))?;
            let progress = progress_bar(&sequences, args.quiet);
            let (mut n, mut sum_logp, mut sum_entropy) = (0usize, 0.0f64, 0.0f64);
            scorer.score_single(
                &sequences,
                |i, scores: Vec<SingleMetrics>| {
                    write_row(&mut out, &model, &rows[i].id, &sequences[i], &scores, |m| {
                        n += 1;
                        sum_logp += m.logp;
                        sum_entropy += m.entropy;
                    })
                },
                |k| progress.inc(k as u64),
            )?;
            progress.finish_and_clear();
            out.commit()
                .with_context(|| format!("{}: could not write", args.output.display()))?;
            let nf = n.max(1) as f64;
            let report = serde_json::json!({
                "n_rows": sequences.len(),
                "n_tokens": n,
                "mean_logp": sum_logp / nf,
                "perplexity": (-sum_logp / nf).exp(),
                "mean_entropy": sum_entropy / nf,
            });
            if let Some(path) = &args.summary {
                write_atomic(
                    path,
                    &serde_json::to_vec_pretty(&with_provenance(&report, &prov)?)?,
                )
                .with_context(|| format!("{}: could not write", path.display()))?;
            }
            if !args.quiet {
                eprintln!(
                    "{} rows, {n} tokens: mean log p {:.4}, perplexity {:.3}, mean entropy {:.4}",
                    sequences.len(),
                    sum_logp / nf,
                    (-sum_logp / nf).exp(),
                    sum_entropy / nf
                );
            }
        }
    }
    Ok(())
}

fn score_options(args: &ScoreArgs, model: &Model, threads: usize) -> anyhow::Result<ScoreOptions> {
    let overlap = match args.overlap {
        OverlapArg::Sequential => Overlap::Sequential,
        OverlapArg::Concurrent => Overlap::Concurrent,
        // Measured with scripts/bench-score.sh on 2 cores: concurrent 0.51x of
        // one model, sequential 0.46x.
        OverlapArg::Auto if threads >= 2 => Overlap::Concurrent,
        OverlapArg::Auto => Overlap::Sequential,
    };
    Ok(ScoreOptions {
        n_ctx: args.model.ctx_size(model.n_ctx_train())?,
        n_batch: args.model.batch_size,
        n_seq: args.sequences,
        threads,
        overlap,
        flash_attention: args.model.flash_attn.enabled(),
    })
}

/// Render and tokenize every row up front, so that a bad row fails before
/// any decoding starts.
fn sequences(
    args: &ScoreArgs,
    model: &Model,
    rows: &[InputRow],
    source_name: &str,
    n_ctx: u32,
) -> anyhow::Result<Vec<ScoreSequence>> {
    let format = PromptFormat::for_model(model, args.raw)?;
    let n_ctx = n_ctx as usize;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let label = format!("{source_name}:{} (id {})", row.line, row.id);
        // a row too long by its bytes alone fails before it is tokenized
        let (prompt_bytes, all_bytes) = match &row.body {
            RowBody::Completion { prompt, response } => (
                prompt.len(),
                prompt.len() + response.as_ref().map_or(0, String::len),
            ),
            RowBody::Chat { messages } => {
                let all: usize = messages.iter().map(|m| m.content.len()).sum();
                (all - messages.last().map_or(0, |m| m.content.len()), all)
            }
        };
        let bytes = if args.truncate {
            prompt_bytes
        } else {
            all_bytes
        };
        format.check_bytes(bytes, n_ctx, &label)?;
        let mut seq = format.score_sequence(model, &row.body, label)?;
        let len = seq.prompt.len() + seq.response.len();
        if len > n_ctx && args.truncate && seq.prompt.len() < n_ctx {
            let keep = n_ctx - seq.prompt.len();
            tracing::warn!(
                "{}: response cut from {} to {keep} tokens to fit --ctx-size {n_ctx}",
                seq.label,
                seq.response.len()
            );
            seq.response.truncate(keep);
        } else if len > n_ctx {
            return Err(RuntimeError::TooLong {
                row: seq.label,
                n_tokens: len,
                n_ctx,
            }
            .into());
        }
        out.push(seq);
    }
    Ok(out)
}

fn progress_bar(sequences: &[ScoreSequence], quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let total: usize = sequences
        .iter()
        .map(|s| s.prompt.len() + s.response.len())
        .sum();
    let bar = ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stderr());
    if let Ok(style) = ProgressStyle::with_template(
        "scoring [{bar:30}] {human_pos}/{human_len} tokens ({per_sec}, eta {eta})",
    ) {
        bar.set_style(style.progress_chars("=> "));
    }
    bar
}

fn write_record(out: &mut Output, record: &impl Serialize) -> Result<(), RuntimeError> {
    let mut line = serde_json::to_vec(record).map_err(|e| RuntimeError::Output(e.to_string()))?;
    line.push(b'\n');
    out.write_all(&line).map_err(|e| {
        super::exit_if_broken_pipe(&e);
        RuntimeError::Output(format!("could not write the output: {e}"))
    })
}

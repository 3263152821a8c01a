//! `dlogp generate`: selective replace / extrapolation decoding.

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::PathBuf;
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use serde_json::Value;

use super::args::{ModelArgs, PairArgs};
use super::eval::SamplingArgs;
use crate::decode::{Engine, EngineOptions, Generation, Mode, Request};
use crate::io::{read_rows, InputRow, Output, RowBody};
use crate::runtime::{Model, ModelPair, PromptFormat};

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub pair: PairArgs,
    /// The prompt (a user turn, wrapped in the chat template unless --raw).
    #[arg(conflicts_with = "input")]
    pub prompt: Option<String>,
    /// Prompts (JSONL): {"id"?, "prompt"} or {"id"?, "messages": [...]}.
    #[arg(long, short = 'i', value_name = "JSONL")]
    pub input: Option<PathBuf>,
    /// JSONL rows {"id", "sample", "text", "n_tokens", "replacement_ratio", "finish"};
    /// `-` for stdout. A single prompt with one sample streams plain text instead.
    #[arg(long, short = 'o', value_name = "JSONL", default_value = "-")]
    pub output: PathBuf,
    /// One JSONL row per generated token: {"id", "sample", "position", "proposed",
    /// "chosen", "gate", "dlogp"}.
    #[arg(long, value_name = "JSONL")]
    pub trace: Option<PathBuf>,
    /// Decoding mode (default: extrapolate with an RL model, base without).
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Samples per prompt.
    #[arg(long, short = 'n', default_value_t = 1)]
    pub samples: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Use prompts as written instead of rendering the chat template.
    #[arg(long)]
    pub raw: bool,
    /// No summary on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

#[derive(Serialize)]
struct SampleRow<'a> {
    id: &'a Value,
    sample: usize,
    text: &'a str,
    n_tokens: usize,
    replacement_ratio: f64,
    finish: crate::decode::Finish,
}

#[derive(Serialize)]
struct TraceRow<'a> {
    id: &'a Value,
    sample: usize,
    position: usize,
    proposed: u32,
    chosen: u32,
    gate: bool,
    dlogp: Option<f64>,
}

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    let rows: Vec<InputRow> = match (&args.prompt, &args.input) {
        (Some(p), None) => vec![InputRow {
            id: Value::from(1),
            line: 1,
            body: RowBody::Completion {
                prompt: p.clone(),
                response: None,
            },
        }],
        (None, Some(path)) if path.as_os_str() == "-" => read_rows(std::io::stdin().lock(), "<stdin>")?,
        (None, Some(path)) => {
            let name = path.display().to_string();
            let file = File::open(path).with_context(|| format!("{name}: could not open the input"))?;
            read_rows(BufReader::new(file), &name)?
        }
        _ => anyhow::bail!("give a prompt, or --input FILE\nhint: dlogp generate --base model.gguf \"What is 2 + 3?\""),
    };
    if args.samples == 0 {
        anyhow::bail!("invalid --samples: must be at least 1");
    }
    if !(1..=256).contains(&args.sampling.sequences) {
        anyhow::bail!(
            "invalid --sequences {}: must be between 1 and 256",
            args.sampling.sequences
        );
    }
    let spec = args.pair.spec();
    let mode = args.mode.unwrap_or(if spec.is_some() {
        Mode::Extrapolate
    } else {
        Mode::Base
    });
    let cfg = args.sampling.defaults(mode)?;
    if let Some(w) = cfg.gate.warning() {
        tracing::warn!("{w}");
    }
    if spec.is_none() && cfg.needs_rl() {
        anyhow::bail!("--mode {mode:?} needs an RL model\nhint: pass --rl FILE or --rl-lora FILE");
    }
    let threads = args.model.threads()?;
    let load = args.model.load_options();
    let pair = spec
        .as_ref()
        .map(|s| ModelPair::load(s, &load))
        .transpose()?;
    let single = match &pair {
        Some(_) => None,
        None => Some(Model::load(args.pair.base(), &load)?),
    };
    let model: &Model = pair
        .as_ref()
        .map_or_else(|| single.as_ref().expect("loaded"), ModelPair::base);

    let format = PromptFormat::for_model(model, args.raw)?;
    let mut requests = Vec::with_capacity(rows.len() * args.samples);
    for (i, row) in rows.iter().enumerate() {
        let text = match &row.body {
            RowBody::Completion { prompt, .. } => format.user_prompt(prompt),
            RowBody::Chat { messages } => format.chat_prompt(messages),
        }
        .map_err(|e| anyhow::anyhow!("row {} (id {}): {e}", row.line, row.id))?;
        let prompt = format.tokenize_prompt(model, &text);
        for s in 0..args.samples {
            requests.push(Request {
                key: (i * args.samples + s) as u64,
                prompt: prompt.clone(),
            });
        }
    }
    let n_seq = args.sampling.sequences.min(requests.len() as u32).max(1);
    let opts = EngineOptions {
        max_tokens: args.sampling.max_tokens,
        stop: args.sampling.stop.clone(),
        draft: args
            .sampling
            .draft
            .unwrap_or(if n_seq == 1 { 1 } else { 4 }),
        n_seq,
        n_ctx: args.model.ctx_size(model.n_ctx_train())?,
        threads,
    };
    let mut engine = match &pair {
        Some(p) => Engine::for_pair(p, cfg, opts)?,
        None => Engine::for_model(model, cfg, opts)?,
    };

    let stream = args.prompt.is_some() && args.samples == 1 && args.output.as_os_str() == "-";
    let mut out = if stream {
        None
    } else {
        Some(Output::create(&args.output)?)
    };
    let mut trace = args.trace.as_ref().map(|p| Output::create(p)).transpose()?;
    let mut done: Vec<Option<Generation>> = vec![None; requests.len()];
    let start = Instant::now();
    let mut stdout = std::io::stdout();
    engine.run(
        &requests,
        |_, text| {
            if stream {
                let _ = stdout.write_all(text.as_bytes());
                let _ = stdout.flush();
            }
        },
        |g| {
            let i = g.request;
            done[i] = Some(g);
            Ok(())
        },
    )?;
    let elapsed = start.elapsed().as_secs_f64();
    if stream {
        println_stdout(&mut stdout)?;
    }
    let (mut n_tokens, mut n_fired, mut n_positions) = (0usize, 0usize, 0usize);
    for (k, g) in done.iter().enumerate() {
        let Some(g) = g else { continue };
        let row = &rows[k / args.samples];
        let sample = k % args.samples;
        n_tokens += g.tokens.len();
        n_positions += g.trace.len();
        n_fired += g.trace.iter().filter(|t| t.gate).count();
        if let Some(out) = &mut out {
            let line = serde_json::to_string(&SampleRow {
                id: &row.id,
                sample,
                text: &g.text,
                n_tokens: g.tokens.len(),
                replacement_ratio: g.replacement_ratio(),
                finish: g.finish,
            })?;
            writeln!(out, "{line}")?;
        }
        if let Some(trace) = &mut trace {
            for t in &g.trace {
                let line = serde_json::to_string(&TraceRow {
                    id: &row.id,
                    sample,
                    position: t.position,
                    proposed: t.proposed,
                    chosen: t.chosen,
                    gate: t.gate,
                    dlogp: t.dlogp,
                })?;
                writeln!(trace, "{line}")?;
            }
        }
    }
    if let Some(out) = out {
        out.commit()
            .with_context(|| format!("{}: could not write", args.output.display()))?;
    }
    if let (Some(trace), Some(path)) = (trace, &args.trace) {
        trace
            .commit()
            .with_context(|| format!("{}: could not write", path.display()))?;
    }
    if !args.quiet {
        eprintln!(
            "{} generations, {n_tokens} tokens in {elapsed:.2} s ({:.1} tokens/s), replacement ratio {:.2}%",
            requests.len(),
            n_tokens as f64 / elapsed.max(1e-9),
            100.0 * n_fired as f64 / n_positions.max(1) as f64
        );
    }
    Ok(())
}

fn println_stdout(stdout: &mut std::io::Stdout) -> std::io::Result<()> {
    stdout.write_all(b"\n")?;
    stdout.flush()
}

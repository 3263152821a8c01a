//! `dlogp generate`: selective replace / extrapolation decoding.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::Context;
use clap::Args;
use serde::Serialize;
use serde_json::Value;

use super::args::{ModelArgs, PairArgs};
use super::eval::SamplingArgs;
use crate::decode::{Engine, EngineOptions, Generation, Mode, Request};
use crate::eval::verify::prompt_for;
use crate::eval::{ContractSource, PromptOverrides, Prompting, TaskContract};
use crate::io::{ensure_distinct, is_std_stream, read_rows_from, InputRow, Output, RowBody};
use crate::runtime::{Model, ModelPair, PromptFormat};

#[derive(Debug, Args)]
pub struct GenerateArgs {
    #[command(flatten)]
    pub pair: PairArgs,
    /// The prompt (a user turn, wrapped in the chat template unless --raw);
    /// `-` reads it from stdin.
    #[arg(conflicts_with_all = ["input", "prompt_flag", "file"])]
    pub prompt: Option<String>,
    /// The prompt as a flag, as llama.cpp's `-p`; `-` reads it from stdin.
    #[arg(
        long = "prompt",
        short = 'p',
        value_name = "TEXT",
        allow_hyphen_values = true,
        conflicts_with_all = ["input", "file"]
    )]
    pub prompt_flag: Option<String>,
    /// Read the prompt from this file (`-` for stdin), as llama.cpp's `-f`;
    /// one trailing newline is dropped.
    #[arg(long, short = 'f', value_name = "FILE", conflicts_with = "input")]
    pub file: Option<PathBuf>,
    /// Prompts (JSONL): {"id"?, "prompt"} or {"id"?, "messages": [...]}; `-` for stdin.
    #[arg(long, short = 'i', value_name = "JSONL")]
    pub input: Option<PathBuf>,
    /// JSONL rows {"id", "sample", "text", "n_tokens", "replacement_ratio", "finish"};
    /// `-` for stdout. A single prompt with one sample streams plain text instead.
    #[arg(long, short = 'o', value_name = "JSONL", default_value = "-")]
    pub output: PathBuf,
    /// One JSONL row per generated token: {"id", "sample", "position", "proposed",
    /// "chosen", "gate", "dlogp"}; `-` for stdout (then --output needs a file).
    #[arg(long, value_name = "JSONL")]
    pub trace: Option<PathBuf>,
    /// Decoding mode (default: extrapolate with an RL model, base without).
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// Samples per prompt (`-n` is --n-predict, as in llama.cpp).
    #[arg(long, default_value_t = 1)]
    pub samples: usize,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// Use prompts as written instead of rendering the chat template
    /// (default: as the RL adapter's task contract says, else the chat template).
    #[arg(long, conflicts_with = "chat")]
    pub raw: bool,
    /// Render the chat template even when the adapter's task contract says
    /// its prompts were raw.
    #[arg(long)]
    pub chat: bool,
    /// Wrap each text prompt in the RL adapter's training template
    /// (`dlogp.task.template`, `{question}` = the prompt), as `dlogp eval`
    /// does; without it prompts are used as given.
    #[arg(long)]
    pub task_template: bool,
    /// Ignore the RL side's task contract (chat template unless --raw).
    #[arg(long, conflicts_with = "task_template")]
    pub no_contract: bool,
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

/// The chat-template use (and, with --task-template, the template) of
/// `generate`: flags, then the RL side's task contract, then the chat
/// template; logged. The contract's template is applied only when asked:
/// a generate prompt is free text (it may already end "Answer with just
/// the number."), not a task question. Its answer extraction does not apply.
fn generate_prompting(args: &GenerateArgs) -> anyhow::Result<Prompting> {
    let rl = args.pair.rl_lora.as_ref().or(args.pair.rl.as_ref());
    let found = match rl {
        Some(path) if !args.no_contract => TaskContract::read(path)?.map(|c| (path.clone(), c)),
        _ => None,
    };
    if args.task_template && found.is_none() {
        anyhow::bail!(
            "--task-template needs an RL adapter with a task contract (dlogp.task.*), and {} has none\nhint: record one with `dlogp lora-meta`, or drop --task-template",
            rl.map_or_else(|| "there is no RL side".to_string(), |p| p.display().to_string())
        );
    }
    let flags = PromptOverrides {
        chat_template: match (args.raw, args.chat) {
            (true, _) => Some(false),
            (false, true) => Some(true),
            (false, false) => None,
        },
        ..PromptOverrides::default()
    };
    let p = Prompting::resolve(found, &flags);
    let chat = if p.contract.chat_template {
        "chat template"
    } else {
        "raw (no chat template)"
    };
    let from = match (&p.source, p.overridden.is_empty()) {
        (_, false) => "the flags".to_string(),
        (ContractSource::File(path), true) => {
            format!("the task contract of {} (dlogp.task.*)", path.display())
        }
        (ContractSource::MethodDefault, true) => "the default".to_string(),
    };
    match (&p.source, args.task_template) {
        (ContractSource::File(_), true) => tracing::info!(
            "prompts: {chat} (from {from}), each wrapped in the contract's template {:?}",
            p.contract.template
        ),
        (ContractSource::File(_), false) => tracing::info!(
            "prompts: {chat} (from {from}), as given: the contract's template {:?} is not applied (--task-template applies it)",
            p.contract.template
        ),
        _ => tracing::debug!("prompts: {chat} (from {from}), as given"),
    }
    Ok(p)
}

pub fn run(args: GenerateArgs) -> anyhow::Result<()> {
    super::stdio::one_stdout(&[
        ("--output", Some(&args.output)),
        ("--trace", args.trace.as_deref()),
    ])?;
    let mut outputs = vec![args.output.as_path()];
    outputs.extend(args.trace.as_deref());
    let extra: Vec<&Path> = args
        .input
        .as_deref()
        .into_iter()
        .chain(args.file.as_deref())
        .collect();
    ensure_distinct(&outputs, &args.pair.inputs_and(&extra))?;
    if args.samples == 0 {
        anyhow::bail!("invalid --samples: must be at least 1");
    }
    let prompt = args.prompt.as_ref().or(args.prompt_flag.as_ref());
    let one_prompt = prompt.is_some() || args.file.is_some();
    let (rows, source_name): (Vec<InputRow>, String) = match (prompt, &args.file, &args.input) {
        (Some(p), None, None) => {
            let (prompt, name) = if p == "-" {
                (read_prompt_from(Path::new("-"))?, "<stdin>".to_string())
            } else {
                (p.clone(), "the prompt".to_string())
            };
            (vec![prompt_row(prompt)], name)
        }
        (None, Some(path), None) => {
            let name = if is_std_stream(path) {
                "<stdin>".to_string()
            } else {
                path.display().to_string()
            };
            (vec![prompt_row(read_prompt_from(path)?)], name)
        }
        (None, None, Some(path)) => {
            let name = if is_std_stream(path) {
                "<stdin>".to_string()
            } else {
                path.display().to_string()
            };
            (read_rows_from(path)?, name)
        }
        (Some(_), Some(_), _) => {
            anyhow::bail!("give the prompt as text or as --file FILE, not both")
        }
        _ => anyhow::bail!("give a prompt (TEXT, -p TEXT or -f FILE), or --input FILE\nhint: dlogp generate --base model.gguf \"What is 2 + 3?\""),
    };
    let spec = args.pair.spec();
    let mode = args.mode.unwrap_or(if spec.is_some() {
        Mode::Extrapolate
    } else {
        Mode::Base
    });
    let cfg = args.sampling.defaults(mode)?;
    if let Some(w) = cfg.gate().warning() {
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

    let prompting = generate_prompting(&args)?;
    let template = args
        .task_template
        .then(|| prompting.contract.template.clone());
    let format = PromptFormat::for_model(model, !prompting.contract.chat_template)?;
    let n_ctx = args.model.ctx_size(model.n_ctx_train())?;
    let mut requests = Vec::with_capacity(rows.len() * args.samples);
    for (i, row) in rows.iter().enumerate() {
        let label = if one_prompt {
            source_name.clone()
        } else {
            format!("{source_name}:{} (id {})", row.line, row.id)
        };
        let text = match &row.body {
            RowBody::Completion { prompt, .. } => match &template {
                Some(t) => format.user_prompt(&prompt_for(prompt, t)),
                None => format.user_prompt(prompt),
            },
            RowBody::Chat { messages } => format.chat_prompt(messages),
        }
        .map_err(|e| anyhow::anyhow!("{label}: {e}"))?;
        if i == 0 {
            tracing::debug!("prompt of {label}: {text:?}");
        }
        let prompt = format.tokenize_prompt_within(model, &text, n_ctx as usize, &label)?;
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
        draft: args.sampling.draft,
        n_seq,
        n_ctx,
        threads,
    };
    if let Some(p) = &pair {
        super::probe::report_speculative(p, opts.draft, threads, false)?;
    }
    let mut engine = match &pair {
        Some(p) => Engine::for_pair(p, cfg, opts)?,
        None => Engine::for_model(model, cfg, opts)?,
    };

    let stream = one_prompt && args.samples == 1 && args.output.as_os_str() == "-";
    let mut out = if stream {
        None
    } else {
        Some(Output::create(&args.output)?)
    };
    let mut trace = args.trace.as_ref().map(|p| Output::create(p)).transpose()?;
    let start = Instant::now();
    let mut stdout = std::io::stdout();
    // Rows are written in request order as soon as every earlier one is done,
    // so a reader sees them early and a closed stdout ends the run early.
    let mut done: Vec<Option<Generation>> = vec![None; requests.len()];
    let mut next = 0;
    let (mut n_tokens, mut n_fired, mut n_positions) = (0usize, 0usize, 0usize);
    let mut write_error: Option<std::io::Error> = None;
    let result = engine.run(
        &requests,
        |_, text| {
            if stream {
                if let Err(e) = stdout
                    .write_all(text.as_bytes())
                    .and_then(|_| stdout.flush())
                {
                    super::exit_if_broken_pipe(&e);
                }
            }
        },
        |g| {
            let i = g.request;
            done[i] = Some(g);
            while let Some(g) = done.get(next).and_then(Option::as_ref) {
                let row = &rows[next / args.samples];
                let sample = next % args.samples;
                n_tokens += g.tokens.len();
                n_positions += g.trace.len();
                n_fired += g.trace.iter().filter(|t| t.gate).count();
                if let Err(e) = write_generation(out.as_mut(), trace.as_mut(), row, sample, g) {
                    super::exit_if_broken_pipe(&e);
                    write_error = Some(e);
                    return Err(crate::decode::DecodeError::Invalid(
                        "could not write the output".to_string(),
                    ));
                }
                done[next] = None;
                next += 1;
            }
            Ok(())
        },
    );
    if let Some(e) = write_error {
        return Err(
            anyhow::Error::new(e).context(format!("{}: could not write", args.output.display()))
        );
    }
    result?;
    let elapsed = start.elapsed().as_secs_f64();
    if stream {
        if let Err(e) = println_stdout(&mut stdout) {
            super::exit_if_broken_pipe(&e);
            return Err(e.into());
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
            "{} {}, {n_tokens} tokens in {elapsed:.2} s ({:.1} tokens/s), replacement ratio {:.2}%",
            requests.len(),
            if requests.len() == 1 {
                "generation"
            } else {
                "generations"
            },
            n_tokens as f64 / elapsed.max(1e-9),
            100.0 * n_fired as f64 / n_positions.max(1) as f64
        );
    }
    Ok(())
}

/// Write one finished sample's row and trace lines.
fn write_generation(
    out: Option<&mut Output>,
    trace: Option<&mut Output>,
    row: &InputRow,
    sample: usize,
    g: &Generation,
) -> std::io::Result<()> {
    if let Some(out) = out {
        let line = serde_json::to_string(&SampleRow {
            id: &row.id,
            sample,
            text: &g.text,
            n_tokens: g.tokens.len(),
            replacement_ratio: g.replacement_ratio(),
            finish: g.finish,
        })?;
        writeln!(out, "{line}")?;
        if matches!(out, Output::Stdout(_)) {
            out.flush()?;
        }
    }
    if let Some(trace) = trace {
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
    Ok(())
}

fn println_stdout(stdout: &mut std::io::Stdout) -> std::io::Result<()> {
    stdout.write_all(b"\n")?;
    stdout.flush()
}

/// A single prompt as an input row.
fn prompt_row(prompt: String) -> InputRow {
    InputRow {
        id: Value::from(1),
        line: 1,
        body: RowBody::Completion {
            prompt,
            response: None,
        },
    }
}

/// The whole of a prompt file (`-`: stdin), less one trailing newline.
fn read_prompt_from(path: &Path) -> anyhow::Result<String> {
    let mut text = String::new();
    if is_std_stream(path) {
        std::io::Read::read_to_string(&mut std::io::stdin().lock(), &mut text)
            .context("<stdin>: could not read the prompt (is it UTF-8?)")?;
    } else {
        let bytes = std::fs::read(path)
            .with_context(|| format!("{}: could not read the prompt file", path.display()))?;
        text = String::from_utf8(bytes).map_err(|e| {
            anyhow::anyhow!(
                "{}: the prompt file is not UTF-8 (invalid byte at offset {})",
                path.display(),
                e.utf8_error().valid_up_to()
            )
        })?;
    }
    let text = text.strip_suffix('\n').unwrap_or(&text);
    Ok(text.strip_suffix('\r').unwrap_or(text).to_string())
}

//! The `dlogp` command line: clap definitions and command glue. This is the
//! only module that uses `anyhow` and draws progress bars.

// The command line prints: data on stdout, people-facing text on stderr.
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod analyze;
mod args;
mod compact;
mod eval;
mod fixtures;
mod generate;
mod inspect;
mod intervene;
mod probe;
mod score;
#[cfg(feature = "serve")]
mod serve;
mod tasks;
#[cfg(feature = "train")]
mod train;

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

pub use args::{ModelArgs, PairArgs};

/// Measure and exploit the direction of RLVR updates (Δlog p = log p_RL −
/// log p_base) on GGUF models with llama.cpp.
#[derive(Debug, Parser)]
#[command(name = "dlogp", version, about, long_about = None)]
pub struct Cli {
    /// More log output on stderr (-v: debug, -vv: llama.cpp's own chatter too).
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    pub verbose: u8,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Per-token Δlog p, entropy, KL and JS of a base/RL pair on given responses.
    Score(score::ScoreArgs),
    /// Generate with selective replace/extrapolation (or one model alone).
    Generate(generate::GenerateArgs),
    /// Distributions of Δlog p, entropy and KL on base- and RL-generated responses: report and plots.
    Analyze(analyze::AnalyzeArgs),
    /// Accuracy of decoding configurations on a verifiable dataset (Avg@k, Pass@k).
    Eval(eval::EvalArgs),
    /// Token-replacement sweep: accuracy against replaced tokens per criterion (METHOD.md §2).
    Intervene(intervene::InterveneArgs),
    /// Show a GGUF model's or adapter's metadata, hyper-parameters and tensors.
    Inspect(inspect::InspectArgs),
    /// The devices this build runs on and whether their logits are batch-invariant (JSON).
    Probe(probe::ProbeArgs),
    /// Generate verifiable task sets (seeded arithmetic).
    Tasks(tasks::TasksArgs),
    /// Train a LoRA adapter with RLVR (DAPO + optional token reweighting).
    #[cfg(feature = "train")]
    Train(Box<train::TrainArgs>),
    /// Write a LoRA adapter (zero or random) for a GGUF model.
    LoraInit(fixtures::LoraInitArgs),
    /// Shrink a LoRA adapter: lower its rank by truncated SVD and/or store it as F16.
    LoraCompact(compact::LoraCompactArgs),
    /// An OpenAI-compatible HTTP server (chat and text completions, streaming).
    #[cfg(feature = "serve")]
    Serve(serve::ServeArgs),
    /// Regenerate the small GGUF test fixtures (tiny llama models and adapters).
    Fixtures(fixtures::FixturesArgs),
}

/// Run one command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Score(mut args) => {
            args.pair = args.pair.resolve()?;
            score::run(args)
        }
        Command::Generate(mut args) => {
            args.pair = args.pair.resolve()?;
            generate::run(args)
        }
        Command::Analyze(args) => analyze::run(args),
        Command::Eval(mut args) => {
            args.pair = args.pair.resolve()?;
            eval::run(args)
        }
        Command::Inspect(args) => inspect::run(args),
        Command::Intervene(mut args) => {
            args.pair = args.pair.resolve()?;
            intervene::run(args)
        }
        Command::Probe(mut args) => {
            args.pair = args.pair.resolve()?;
            probe::run(args)
        }
        Command::Tasks(args) => tasks::run(args),
        #[cfg(feature = "train")]
        Command::Train(args) => train::run(*args),
        Command::LoraInit(args) => fixtures::run_lora_init(args),
        Command::LoraCompact(args) => compact::run(args),
        Command::Fixtures(args) => fixtures::run_fixtures(args),
        #[cfg(feature = "serve")]
        Command::Serve(mut args) => {
            args.pair = args.pair.resolve()?;
            serve::run(args)
        }
    }
}

/// Logs go to stderr. llama.cpp's log (target `llama-cpp-2`) shows warnings
/// and errors only, unless -vv; `DLOGP_LOG` overrides everything
/// (e.g. `DLOGP_LOG=debug`).
pub fn init_logging(verbose: u8) {
    let default = match verbose {
        0 => "warn,dlogp=info,llama-cpp-2=warn",
        1 => "info,dlogp=debug,llama-cpp-2=warn",
        _ => "debug,llama-cpp-2=debug",
    };
    let filter = EnvFilter::try_from_env("DLOGP_LOG").unwrap_or_else(|_| EnvFilter::new(default));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .try_init();
}

/// A write to a closed stdout (`dlogp … | head`) ends the run at once,
/// quietly, with 141 (128 + SIGPIPE), as a process killed by SIGPIPE would;
/// temporary outputs are removed first.
pub(crate) fn exit_if_broken_pipe(e: &std::io::Error) {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        crate::io::remove_live_temps();
        std::process::exit(BROKEN_PIPE_EXIT);
    }
}

/// The exit code of a run whose reader went away.
pub const BROKEN_PIPE_EXIT: i32 = 141;

/// Whether `err` comes from writing to a closed pipe.
pub fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

/// Print an error and its causes the way users read them.
pub fn report_error(err: &anyhow::Error) {
    for line in error_lines(err) {
        eprintln!("{line}");
    }
}

/// The lines of an error report: the error, then each cause that says
/// something new (many errors already include their source's text, which
/// would otherwise print twice).
fn error_lines(err: &anyhow::Error) -> Vec<String> {
    let mut lines = vec![format!("error: {}", flags(&err.to_string()))];
    let mut shown = err.to_string();
    for cause in err.chain().skip(1) {
        let text = cause.to_string();
        if !shown.contains(&text) {
            lines.push(format!("  caused by: {}", flags(&text)));
        }
        shown = text;
    }
    lines
}

/// Library errors name settings by key (`` `ctx_size` ``), never by a flag:
/// the same text reaches HTTP clients and C hosts. The command line names
/// them by the flag that sets them.
const SETTING_FLAGS: &[(&str, &str)] = &[
    ("alpha", "--alpha"),
    ("answer_field", "--answer-field"),
    ("base_model", "--base"),
    ("batch_size", "--batch-size"),
    ("calibrate", "--calibrate"),
    ("ctx_size", "--ctx-size"),
    ("group_size", "--group-size"),
    ("k", "-k"),
    ("layers", "--layers"),
    ("lora_scale", "--lora-scale"),
    ("lr", "--lr"),
    ("max_draw_factor", "--max-draw-factor"),
    ("max_tokens", "--max-tokens"),
    ("modes", "--modes"),
    ("overlong_buffer", "--overlong-buffer"),
    ("preset", "--preset"),
    ("prompts_per_step", "--prompts-per-step"),
    ("question_field", "--question-field"),
    ("rank", "--rank"),
    ("raw", "--raw"),
    ("restart", "--restart"),
    ("reweight_strength", "--reweight-strength"),
    ("rl_lora", "--rl-lora"),
    ("rl_model", "--rl"),
    ("sequences", "--sequences"),
    ("steps", "--steps"),
    ("targets", "--targets"),
    ("taus", "--taus"),
    ("train_threads", "--train-threads"),
    ("truncate", "--truncate"),
    ("updates_per_step", "--updates-per-step"),
];

/// `text` with every `` `key` `` of [`SETTING_FLAGS`] replaced by its flag.
fn flags(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(open) = rest.find('`') {
        let Some(len) = rest[open + 1..].find('`') else {
            break;
        };
        let key = &rest[open + 1..open + 1 + len];
        out.push_str(&rest[..open]);
        match SETTING_FLAGS.iter().find(|(k, _)| *k == key) {
            Some((_, flag)) => out.push_str(flag),
            None => out.push_str(&rest[open..open + len + 2]),
        }
        rest = &rest[open + len + 2..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn setting_keys_become_flags_and_other_quotes_stay() {
        assert_eq!(
            super::flags("invalid `ctx_size`: must be positive"),
            "invalid --ctx-size: must be positive"
        );
        assert_eq!(
            super::flags("hint: pass `rl_model` FILE or `rl_lora` FILE, mode `rl` needs `x"),
            "hint: pass --rl FILE or --rl-lora FILE, mode `rl` needs `x"
        );
        assert_eq!(
            super::flags("invalid `batch_size`/`ctx_size`/`sequences`: must be positive"),
            "invalid --batch-size/--ctx-size/--sequences: must be positive"
        );
        let e = anyhow::Error::new(crate::runtime::context_size(Some(0), 0).unwrap_err());
        assert_eq!(
            super::error_lines(&e),
            vec!["error: invalid --ctx-size: must be positive"]
        );
    }

    #[test]
    fn a_cause_already_in_the_message_is_not_repeated() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let with_text = anyhow::Error::new(io).context("x.jsonl: could not open: no such file");
        assert_eq!(
            super::error_lines(&with_text),
            vec!["error: x.jsonl: could not open: no such file"]
        );
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let plain = anyhow::Error::new(io).context("x.jsonl: could not open");
        assert_eq!(
            super::error_lines(&plain),
            vec![
                "error: x.jsonl: could not open",
                "  caused by: no such file"
            ]
        );
    }
}

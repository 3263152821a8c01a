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
mod lora_meta;
mod probe;
mod score;
#[cfg(feature = "serve")]
mod serve;
mod stdio;
mod tasks;
#[cfg(feature = "train")]
mod train;
mod tune;

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
    /// Choose τ and γ of selective extrapolation on a validation split, with
    /// confidence intervals over problems and a noise-aware rule.
    Tune(tune::TuneArgs),
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
    /// Record or show an adapter's task contract (prompt template, chat
    /// template, answer extraction) without touching its tensors.
    LoraMeta(lora_meta::LoraMetaArgs),
    /// An OpenAI-compatible HTTP server (chat and text completions, streaming).
    #[cfg(feature = "serve")]
    Serve(serve::ServeArgs),
    /// Regenerate the small GGUF test fixtures (tiny llama models and adapters).
    Fixtures(fixtures::FixturesArgs),
}

/// llama.cpp's multi-letter short flags, which clap cannot declare, and the
/// long flags they stand for.
pub const LLAMA_SHORT_FLAGS: [(&str, &str); 3] = [
    ("-ngl", "--n-gpu-layers"),
    ("-fa", "--flash-attn"),
    ("-np", "--parallel"),
];

/// The command line with llama.cpp's multi-letter short flags (`-ngl 0`,
/// `-fa`, `-np 4`, also written `-ngl=0`) rewritten to their long forms,
/// so that `dlogp generate -m model.gguf -ngl 0 -fa off` reads as llama.cpp
/// would. Nothing after a `--` is touched, nor the value of a flag that
/// takes free text (`-p -fa` keeps `-fa` as the prompt).
pub fn llama_argv<I, T>(args: I) -> Vec<std::ffi::OsString>
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString>,
{
    const TEXT_FLAGS: [&str; 6] = ["-p", "--prompt", "--stop", "--template", "--name", "--taus"];
    let mut out = Vec::new();
    let mut verbatim = false;
    let mut value_next = false;
    for arg in args {
        let arg: std::ffi::OsString = arg.into();
        let text = arg.to_str();
        if verbatim || value_next {
            value_next = false;
            out.push(arg);
            continue;
        }
        match text {
            Some("--") => verbatim = true,
            Some(t) if TEXT_FLAGS.contains(&t) => value_next = true,
            Some(t) => {
                let (flag, value) = match t.split_once('=') {
                    Some((f, v)) => (f, Some(v)),
                    None => (t, None),
                };
                if let Some((_, long)) = LLAMA_SHORT_FLAGS.iter().find(|(s, _)| *s == flag) {
                    out.push(match value {
                        Some(v) => format!("{long}={v}").into(),
                        None => (*long).into(),
                    });
                    continue;
                }
            }
            None => {}
        }
        out.push(arg);
    }
    out
}

/// Run one command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    announce_seed(&cli.command);
    if loads_models(&cli.command) {
        check_llama_build();
    }
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
            args.data.resolve_contract(&args.pair)?;
            eval::run(args)
        }
        Command::Inspect(args) => inspect::run(args),
        Command::Intervene(mut args) => {
            args.pair = args.pair.resolve()?;
            args.data.resolve_contract(&args.pair)?;
            intervene::run(args)
        }
        Command::Tune(mut args) => {
            args.pair = args.pair.resolve()?;
            args.data.resolve_contract(&args.pair)?;
            tune::run(args)
        }
        Command::Probe(mut args) => {
            args.pair = args.pair.resolve()?;
            probe::run(args)
        }
        Command::Tasks(args) => tasks::run(args),
        #[cfg(feature = "train")]
        Command::Train(args) => train::run(args.resolve()?),
        Command::LoraInit(args) => fixtures::run_lora_init(args),
        Command::LoraCompact(args) => compact::run(args),
        Command::LoraMeta(args) => lora_meta::run(args),
        Command::Fixtures(args) => fixtures::run_fixtures(args),
        #[cfg(feature = "serve")]
        Command::Serve(mut args) => {
            args.pair = args.pair.resolve()?;
            serve::run(args)
        }
    }
}

/// Whether `command` runs llama.cpp.
fn loads_models(command: &Command) -> bool {
    match command {
        Command::Score(_)
        | Command::Generate(_)
        | Command::Eval(_)
        | Command::Intervene(_)
        | Command::Tune(_)
        | Command::Analyze(_) => true,
        #[cfg(feature = "train")]
        Command::Train(_) => true,
        #[cfg(feature = "serve")]
        Command::Serve(_) => true,
        _ => false,
    }
}

/// Say so when the llama.cpp this binary was built with has its llamafile
/// GEMM on: `.cargo/config.toml` turns it off, but only for builds started
/// inside the checkout (`cargo install` from elsewhere loses it).
fn check_llama_build() {
    tracing::debug!("llama.cpp: {}", crate::runtime::system_info().trim());
    if crate::runtime::llamafile_gemm() {
        tracing::warn!(
            "this dlogp was built with llama.cpp's llamafile GEMM on (LLAMAFILE = 1 in its system info): a token's log-probs then depend on how many tokens are decoded with it (up to ~0.16 nats on SmolLM2), so speculative decoding (--draft > 1) no longer reproduces lockstep decoding exactly, and scores and samples depend on --sequences, --batch-size and --draft\nhint: rebuild with the checkout's settings: GGML_LLAMAFILE=OFF RUSTFLAGS=\"-C target-cpu=native\" cargo install --path . --locked (see README, Install)"
        );
    }
}

/// Say which seed a `--seed -1` drew (once, before any work).
fn announce_seed(command: &Command) {
    match command {
        Command::Generate(a) => a.sampling.seed.announce(),
        Command::Eval(a) => a.sampling.seed.announce(),
        Command::Intervene(a) => a.sampling.seed.announce(),
        Command::Tune(a) => a.sampling.seed.announce(),
        Command::Analyze(a) => a.sampling.seed.announce(),
        #[cfg(feature = "train")]
        Command::Train(a) => a.seed.announce(),
        _ => {}
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
    let ansi = colour(
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
        std::env::var_os("NO_COLOR").as_deref(),
    );
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .try_init();
}

/// Whether logs are coloured: only on a terminal, and never when
/// `NO_COLOR` is set to anything but the empty string (no-color.org).
fn colour(stderr_is_terminal: bool, no_color: Option<&std::ffi::OsStr>) -> bool {
    stderr_is_terminal && no_color.is_none_or(|v| v.is_empty())
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
    /// `dlogp <cmd> --help` explains every flag and argument of every
    /// subcommand (nested ones too).
    #[test]
    fn every_argument_has_help() {
        use clap::CommandFactory;
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            for a in cmd.get_arguments() {
                let id = a.get_id().as_str();
                if id == "help" || id == "version" {
                    continue;
                }
                let has = a
                    .get_help()
                    .is_some_and(|h| !h.to_string().trim().is_empty());
                if !has {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                if sub.get_about().is_none() {
                    missing.push(format!("{path} {} (about)", sub.get_name()));
                }
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "dlogp", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }

    #[test]
    fn colour_only_on_a_terminal_without_no_color() {
        use std::ffi::OsStr;
        assert!(super::colour(true, None));
        assert!(super::colour(true, Some(OsStr::new(""))));
        assert!(!super::colour(true, Some(OsStr::new("1"))));
        assert!(!super::colour(false, None));
    }

    #[test]
    fn the_command_line_is_consistent() {
        use clap::CommandFactory;
        super::Cli::command().debug_assert();
    }

    #[test]
    fn llama_short_flags_become_long_ones() {
        let argv = |v: &[&str]| -> Vec<String> {
            super::llama_argv(v.iter().copied())
                .into_iter()
                .map(|s| s.into_string().unwrap())
                .collect()
        };
        assert_eq!(
            argv(&["dlogp", "generate", "-ngl", "0", "-fa", "-np=2", "-p", "-fa", "--", "-ngl"]),
            [
                "dlogp",
                "generate",
                "--n-gpu-layers",
                "0",
                "--flash-attn",
                "--parallel=2",
                "-p",
                "-fa",
                "--",
                "-ngl"
            ]
        );
        assert_eq!(
            argv(&["dlogp", "-ngl=5", "-n", "3"]),
            ["dlogp", "--n-gpu-layers=5", "-n", "3"]
        );
    }

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

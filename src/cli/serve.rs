//! `dlogp serve`: the OpenAI-compatible server.

use std::net::{IpAddr, SocketAddr};

use clap::Args;

use super::args::{DecodeArgs, ModelArgs, PairArgs};
use crate::decode::Mode;
use crate::serve::{Cors, ServeOptions};

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub pair: PairArgs,
    #[arg(long, default_value = "127.0.0.1")]
    pub host: IpAddr,
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Requests decoded side by side (parallel sequences on one engine).
    #[arg(long, default_value_t = 4)]
    pub parallel: u32,
    /// Requests that may wait for a free sequence; beyond that, 503 (0: no
    /// waiting, a request that finds every sequence busy gets 503 at once).
    #[arg(long, default_value_t = 64)]
    pub queue: usize,
    /// Draft length K for speculative gating (1: lockstep, both models
    /// every token). 1 measured fastest here with 1 and 4 sequences
    /// (scripts/bench-serve.sh); try 4 with many sequences or on a GPU.
    #[arg(long, default_value_t = 1)]
    pub draft: usize,
    /// The default decoding mode (requests choose theirs by model name or
    /// the `dlogp` body object).
    #[arg(long, value_enum, default_value_t = Mode::Extrapolate)]
    pub mode: Mode,
    /// The server's decoding defaults (a request's fields override them).
    #[command(flatten)]
    pub decode: DecodeArgs,
    /// Largest request body in bytes.
    #[arg(long, default_value_t = 4 << 20)]
    pub max_body_bytes: usize,
    /// Longest prompt in tokens (default: the context size − 1).
    #[arg(long)]
    pub max_prompt_tokens: Option<usize>,
    /// Largest `max_tokens` a request may ask for (and the default).
    #[arg(long, default_value_t = 2048)]
    pub max_tokens_limit: usize,
    /// The model name that stands for these defaults.
    #[arg(long, default_value = "dlogp")]
    pub name: String,
    /// Allow only this browser origin by CORS (repeat for more; default:
    /// any origin, as llama-server).
    #[arg(long = "cors-origin", value_name = "ORIGIN")]
    pub cors_origins: Vec<String>,
    #[command(flatten)]
    pub model: ModelArgs,
}

pub fn run(args: ServeArgs) -> anyhow::Result<()> {
    let Some(pair) = args.pair.spec() else {
        anyhow::bail!(
            "dlogp serve needs a pair\nhint: pass --rl FILE or --rl-lora FILE next to --base"
        );
    };
    let parallel = args.parallel;
    let preset = args.decode.resolve(args.mode, 0)?;
    if args.draft == 0 {
        anyhow::bail!("invalid --draft 0: must be at least 1 (1 decodes in lockstep)");
    }
    if args.name.trim().is_empty() {
        anyhow::bail!(
            "invalid --name \"{}\": the default model name must not be empty",
            args.name
        );
    }
    if args.model.ctx_size == Some(0) {
        anyhow::bail!("invalid --ctx-size 0: must be positive");
    }
    let cors = Cors::from_origins(&args.cors_origins)
        .map_err(|reason| anyhow::anyhow!("invalid --cors-origin: {reason}"))?;
    let opts = ServeOptions {
        pair,
        load: args.model.load_options(),
        addr: SocketAddr::new(args.host, args.port),
        parallel,
        queue: args.queue,
        draft: args.draft,
        threads: args.model.threads()?,
        n_ctx: args.model.ctx_size,
        max_body: args.max_body_bytes,
        max_prompt_tokens: args.max_prompt_tokens,
        max_tokens: args.max_tokens_limit,
        preset,
        name: args.name,
        cors,
    };
    crate::serve::serve(opts)?;
    Ok(())
}

//! `dlogp serve`: the OpenAI-compatible server.

use std::net::{IpAddr, SocketAddr, ToSocketAddrs};

use clap::Args;

use super::args::{DecodeArgs, ModelArgs, PairArgs};
use crate::decode::Mode;
use crate::serve::{Cors, ServeOptions};

#[derive(Debug, Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub pair: PairArgs,
    /// The address to listen on: an IP address or a host name such as
    /// `localhost` (the first address it resolves to); 0.0.0.0 for every
    /// interface.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// The TCP port (0: any free port, printed at start-up).
    #[arg(long, default_value_t = 8080)]
    pub port: u16,
    /// Requests decoded side by side (parallel sequences on one engine);
    /// `-np` as in llama-server.
    #[arg(long, visible_alias = "np", default_value_t = 4)]
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
    /// Largest `max_tokens` a request may ask for (and the default);
    /// `-n/--n-predict` as in llama-server.
    #[arg(long, short = 'n', visible_alias = "n-predict", default_value_t = 2048)]
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
    if let Some(path) = args.pair.rl_lora.as_ref().or(args.pair.rl.as_ref()) {
        // The server builds no prompts from templates: chat endpoints render
        // the chat template, completion endpoints take the prompt as written
        // (the APIs' own rules), so a contract is only announced.
        if let Some(c) = crate::eval::TaskContract::read(path)? {
            tracing::info!(
                "{} was trained on prompts: {c}; the server applies no task template (chat completions render the chat template, completions take the prompt as written): clients reproduce the training prompts themselves",
                path.display()
            );
        }
    }
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
        addr: resolve_host(&args.host, args.port)?,
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

/// `--host` and `--port` as one address: an IP address as written, a host
/// name through the system resolver (IPv4 first, as `localhost` usually means
/// 127.0.0.1 to clients).
fn resolve_host(host: &str, port: u16) -> anyhow::Result<SocketAddr> {
    let host = host.trim();
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    if host.is_empty() {
        anyhow::bail!(
            "invalid --host \"\": give an address (127.0.0.1, 0.0.0.0) or a host name (localhost)"
        );
    }
    let addrs: Vec<SocketAddr> = (host, port)
        .to_socket_addrs()
        .map_err(|e| {
            anyhow::anyhow!(
                "invalid --host {host}: could not resolve it ({e})\nhint: give an IP address such as 127.0.0.1 or 0.0.0.0"
            )
        })?
        .collect();
    addrs
        .iter()
        .find(|a| a.is_ipv4())
        .or_else(|| addrs.first())
        .copied()
        .ok_or_else(|| anyhow::anyhow!("invalid --host {host}: it resolves to no address"))
}

#[cfg(test)]
mod tests {
    #[test]
    fn host_names_and_addresses_resolve() {
        let a = super::resolve_host("localhost", 8080).unwrap();
        assert!(a.ip().is_loopback(), "{a}");
        assert_eq!(a.port(), 8080);
        assert_eq!(
            super::resolve_host("0.0.0.0", 1).unwrap().to_string(),
            "0.0.0.0:1"
        );
        assert_eq!(
            super::resolve_host("[::1]", 2).unwrap().to_string(),
            "[::1]:2"
        );
        let e = super::resolve_host("no-such-host.invalid", 1)
            .unwrap_err()
            .to_string();
        assert!(e.contains("--host no-such-host.invalid"), "{e}");
    }
}

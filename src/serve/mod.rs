//! `dlogp serve`: an OpenAI-compatible HTTP server over a base/RL pair.
//!
//! ```text
//!  HTTP clients ─► http (axum, tokio): parse, validate, tokenize, queue (bounded)
//!                     │ Submission (Job + event channel)      ▲ Event (token, done, error)
//!                     ▼                                       │
//!                  worker (one OS thread): Engine::serve ── JobSource ──┘
//!                     up to --parallel sequences side by side on the pair
//! ```
//!
//! The engine thread owns the llama.cpp contexts (they are not `Send`);
//! the model weights are shared read-only with the HTTP side, which only
//! tokenizes. A client that disconnects drops its event channel, and the
//! engine cancels its generation at the next iteration. Every request's
//! random draws are keyed by its own seed and position, so a response does
//! not depend on what else the server is decoding.

mod api;
pub mod config;
mod cors;
mod error;
mod fields;
mod http;
mod native;
mod prepared;
mod props;
mod reply;
mod worker;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};

pub use config::{DlogpFields, DlogpObject};
pub use cors::Cors;
pub use error::ApiError;
pub use http::Limits;

use crate::decode::{DecodeConfig, DecodeError, Engine, EngineOptions};
use crate::runtime::{LoadOptions, ModelPair, PairSpec, PromptFormat, RuntimeError};
use crate::sampler::SamplerError;

/// Everything `dlogp serve` needs.
#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub pair: PairSpec,
    pub load: LoadOptions,
    pub addr: SocketAddr,
    /// Sequences decoded side by side.
    pub parallel: u32,
    /// Requests that may wait beyond the running ones.
    pub queue: usize,
    /// Draft length K of speculative decoding (1: lockstep).
    pub draft: usize,
    pub threads: usize,
    /// Context per sequence (`None`: 4096 capped by the model's).
    pub n_ctx: Option<u32>,
    pub max_body: usize,
    /// `None`: the context size − 1.
    pub max_prompt_tokens: Option<usize>,
    pub max_tokens: usize,
    /// The server's decoding defaults (requests override them).
    pub preset: DecodeConfig,
    /// The model name for the server's defaults.
    pub name: String,
    /// Browser origins allowed by CORS.
    pub cors: Cors,
}

/// What can stop the server.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error(transparent)]
    Sampler(#[from] SamplerError),
    #[error(
        "could not listen on {addr}: {source}\nhint: pick another --port, or stop what uses it"
    )]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the server failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("invalid {name}: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// Load the pair, start the engine thread and serve until Ctrl-C / SIGTERM.
pub fn serve(opts: ServeOptions) -> Result<(), ServeError> {
    if opts.parallel == 0 || opts.parallel > 256 {
        return Err(ServeError::Invalid {
            name: "--parallel",
            reason: format!("must be between 1 and 256, got {}", opts.parallel),
        });
    }
    if opts.max_tokens == 0 {
        return Err(ServeError::Invalid {
            name: "--max-tokens-limit",
            reason: "must be at least 1".to_string(),
        });
    }
    let preset_cfg = opts.preset.clone();
    let pair = Arc::new(ModelPair::load(&opts.pair, &opts.load)?);
    let model = pair.base();
    let n_ctx = opts
        .n_ctx
        .unwrap_or_else(|| match model.n_ctx_train() {
            0 => 4096,
            n => n.min(4096),
        })
        .max(2);
    let chat = PromptFormat::for_model(model, false)?;
    let raw = PromptFormat::for_model(model, true)?;

    // The engine thread: both contexts always (any request may need both).
    let (jobs_tx, jobs_rx) = mpsc::channel();
    let alive = Arc::new(AtomicBool::new(true));
    let (ready_tx, ready_rx) = mpsc::channel::<Result<(), DecodeError>>();
    let engine_opts = EngineOptions {
        max_tokens: opts.max_tokens,
        stop: Vec::new(),
        draft: opts.draft.max(1),
        n_seq: opts.parallel,
        n_ctx,
        threads: opts.threads.max(1),
    };
    let engine_cfg = preset_cfg
        .clone()
        .with_mode(crate::decode::Mode::Extrapolate);
    let thread_pair = Arc::clone(&pair);
    let engine_threads = opts.threads.max(1);
    let thread_alive = Arc::clone(&alive);
    let stats = Arc::new(worker::Stats::default());
    let thread_stats = Arc::clone(&stats);
    let slots = Arc::new(worker::Slots::new(opts.parallel as usize));
    let thread_slots = Arc::clone(&slots);
    let engine_thread = std::thread::Builder::new()
        .name("dlogp-engine".to_string())
        .spawn(move || {
            let mut engine = match Engine::for_pair(&thread_pair, engine_cfg, engine_opts) {
                Ok(e) => {
                    let _ = ready_tx.send(Ok(()));
                    e
                }
                Err(e) => {
                    thread_alive.store(false, Ordering::Release);
                    let _ = ready_tx.send(Err(e));
                    return;
                }
            };
            let mut worker = worker::Worker::new(
                &thread_pair,
                jobs_rx,
                thread_stats,
                thread_slots,
                engine_threads,
            );
            worker.run(&mut engine, &thread_alive);
        })?;
    match ready_rx.recv() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(e.into()),
        Err(_) => {
            return Err(ServeError::Invalid {
                name: "engine",
                reason: "the engine thread ended during start-up".to_string(),
            })
        }
    }

    let limits = Limits {
        max_body: opts.max_body,
        max_prompt_tokens: opts
            .max_prompt_tokens
            .unwrap_or(n_ctx as usize - 1)
            .min(n_ctx as usize - 1),
        max_tokens: opts.max_tokens,
        capacity: opts.parallel as usize + opts.queue,
        n_ctx: n_ctx as usize,
    };
    let state = Arc::new(http::AppState {
        pair: Arc::clone(&pair),
        chat,
        raw,
        preset: opts.preset.clone(),
        limits,
        default_name: opts.name.clone(),
        jobs: jobs_tx,
        taken: Arc::new(AtomicUsize::new(0)),
        stats,
        alive,
        next_id: AtomicU64::new(0),
        created: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        cors: Arc::new(opts.cors.clone()),
        parallel: opts.parallel,
        slots,
        speculative: opts.draft > 1,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let addr = opts.addr;
    let served = runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|source| ServeError::Bind { addr, source })?;
        let local = listener.local_addr()?;
        tracing::info!(
            "listening on http://{local} ({} sequences side by side, context {n_ctx}, queue {})",
            opts.parallel,
            opts.queue
        );
        axum::serve(listener, http::router(state))
            .with_graceful_shutdown(shutdown_signal())
            .await?;
        Ok::<(), ServeError>(())
    });
    // Dropping the router's state closed the job channel: the engine ends.
    drop(runtime);
    let _ = engine_thread.join();
    served
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down");
}

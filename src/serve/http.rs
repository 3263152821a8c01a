//! The HTTP side: routes, request validation, and the JSON / server-sent
//! event responses. Runs on tokio; never touches a llama.cpp context (only
//! the shared model's tokenizer and chat template).

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};

use super::api::{ChatRequest, Common, CompletionRequest, Prompt, Stop};
use super::config::{self, SamplingFields};
use super::error::ApiError;
use super::fields;
use super::prepared::{Echo, Kind, Prepared, PromptIn};
use super::reply;
use super::worker::{Event, Permit, Stats, Submission, Task};
use crate::decode::{Job, Mode, Side};
use crate::runtime::{ChatMessage, ModelPair, PromptFormat, Token};

/// Limits on what one request may ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of a request body.
    pub max_body: usize,
    /// Tokens of a prompt (at most the context size − 1).
    pub max_prompt_tokens: usize,
    /// The largest `max_tokens` (also the default).
    pub max_tokens: usize,
    /// Requests running or waiting; more get 503.
    pub capacity: usize,
    /// Context per sequence.
    pub n_ctx: usize,
}

/// What every handler shares.
pub struct AppState {
    pub pair: Arc<ModelPair>,
    pub chat: PromptFormat,
    pub raw: PromptFormat,
    pub preset: crate::decode::DecodeConfig,
    pub limits: Limits,
    /// The model name that means "the server's defaults".
    pub default_name: String,
    pub jobs: mpsc::Sender<Submission>,
    pub taken: Arc<AtomicUsize>,
    pub stats: Arc<Stats>,
    pub alive: Arc<AtomicBool>,
    pub next_id: AtomicU64,
    pub created: u64,
    /// Sequences decoded side by side (`/props`' `total_slots`).
    pub parallel: u32,
    /// The sequences' states (`/slots`).
    pub slots: Arc<super::worker::Slots>,
    /// Whether `--draft` K > 1 (speculative gating).
    pub speculative: bool,
    pub cors: Arc<super::cors::Cors>,
}

/// The routes.
pub fn router(state: Arc<AppState>) -> Router {
    let max_body = state.limits.max_body;
    let cors = Arc::clone(&state.cors);
    Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/models/{name}", get(model))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .route("/v1/health", get(health))
        .route("/completion", post(super::native::completion))
        .route("/tokenize", post(super::native::tokenize))
        .route("/detokenize", post(super::native::detokenize))
        .route("/props", get(super::props::props))
        .route("/tokenizer_info", get(super::props::tokenizer_info))
        .route("/slots", get(super::props::slots))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
        .layer(axum::middleware::from_fn_with_state(
            cors,
            super::cors::layer,
        ))
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::not_found(uri.path())
}

async fn method_not_allowed(uri: Uri) -> ApiError {
    ApiError {
        status: StatusCode::METHOD_NOT_ALLOWED,
        message: format!("method not allowed on {}", uri.path()),
        kind: "invalid_request_error",
        param: None,
        code: None,
    }
}

async fn health(State(st): State<Arc<AppState>>) -> Response {
    if st.alive.load(Ordering::Acquire) {
        axum::Json(json!({
            "status": "ok",
            "requests": st.taken.load(Ordering::Acquire),
            "completed": st.stats.completed.load(Ordering::Relaxed),
            "cancelled": st.stats.cancelled.load(Ordering::Relaxed),
        }))
        .into_response()
    } else {
        ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the engine has stopped".to_string(),
            kind: "server_error",
            param: None,
            code: None,
        }
        .into_response()
    }
}

async fn models(State(st): State<Arc<AppState>>) -> Response {
    let data: Vec<Value> = config::listed_names(&st.default_name, &st.preset)
        .into_iter()
        .map(|id| json!({"id": id, "object": "model", "created": st.created, "owned_by": "dlogp"}))
        .collect();
    axum::Json(json!({"object": "list", "data": data})).into_response()
}

/// One model name: listed or not, any name that parses is served.
async fn model(State(st): State<Arc<AppState>>, Path(name): Path<String>) -> Response {
    match config::parse_model_name(&name, &st.default_name) {
        Ok(_) => axum::Json(
            json!({"id": name, "object": "model", "created": st.created, "owned_by": "dlogp"}),
        )
        .into_response(),
        Err(e) => e.into_response(),
    }
}

/// Most choices per prompt.
const MAX_N: i64 = 16;

fn parse_body<T: DeserializeOwned>(
    st: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    parse_body_with(st, body, fields::check)
}

/// [`parse_body`] with another check of the refused fields.
pub(super) fn parse_body_with<T: DeserializeOwned>(
    st: &AppState,
    body: Result<Bytes, BytesRejection>,
    refused: fn(&serde_json::Map<String, Value>) -> Result<(), ApiError>,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(st.limits.max_body)
        } else {
            ApiError::bad_request(format!("could not read the request body: {e}"))
        }
    })?;
    let value: Value = serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))?;
    let Value::Object(map) = value else {
        return Err(ApiError::bad_request(
            "the request body must be a JSON object",
        ));
    };
    refused(&map)?;
    serde_json::from_value(Value::Object(map))
        .map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

async fn chat(State(st): State<Arc<AppState>>, body: Result<Bytes, BytesRejection>) -> Response {
    let prepared = parse_body::<ChatRequest>(&st, body).and_then(|r| prepare_chat(&st, r));
    match prepared {
        Ok(p) => generate(st, p).await,
        Err(e) => e.into_response(),
    }
}

async fn completions(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let prepared =
        parse_body::<CompletionRequest>(&st, body).and_then(|r| prepare_completion(&st, r));
    match prepared {
        Ok(p) => generate(st, p).await,
        Err(e) => e.into_response(),
    }
}

fn prepare_chat(st: &AppState, r: ChatRequest) -> Result<Prepared, ApiError> {
    if r.messages.is_empty() {
        return Err(ApiError::invalid("messages", "`messages` is empty"));
    }
    let mut messages = Vec::with_capacity(r.messages.len());
    for m in &r.messages {
        let content = match &m.content {
            Some(c) => c.text()?,
            None => String::new(),
        };
        messages.push(ChatMessage::new(m.role.clone(), content));
    }
    if !st.chat.uses_template() {
        return Err(ApiError::invalid(
            "messages",
            "the model has no chat template; use /v1/completions",
        ));
    }
    let text = st
        .chat
        .chat_prompt(&messages)
        .map_err(|e| ApiError::invalid("messages", format!("the chat template failed: {e}")))?;
    let prompt = st.chat.tokenize_prompt(st.pair.base(), &text);
    let top = match (r.logprobs, r.top_logprobs) {
        (_, Some(n)) if !(0..=20).contains(&n) => {
            return Err(ApiError::invalid(
                "top_logprobs",
                format!("top_logprobs must be between 0 and 20, got {n}"),
            ))
        }
        (false, Some(n)) if n > 0 => {
            return Err(ApiError::invalid(
                "top_logprobs",
                "top_logprobs needs \"logprobs\": true",
            ))
        }
        (true, n) => Some(n.unwrap_or(0) as usize),
        (false, _) => None,
    };
    let p = prepare_common(st, Kind::Chat, vec![(prompt, Some(0))], r.common, top)?;
    check_capacity(st, &p)?;
    Ok(p)
}

fn prepare_completion(st: &AppState, r: CompletionRequest) -> Result<Prepared, ApiError> {
    let model = st.pair.base();
    let n_vocab = model.n_vocab();
    let ids = |ids: &[u32]| -> Result<Vec<Token>, ApiError> {
        if let Some(bad) = ids.iter().find(|&&t| t as usize >= n_vocab) {
            return Err(ApiError::invalid(
                "prompt",
                format!("token id {bad} is outside the vocabulary of {n_vocab}"),
            ));
        }
        Ok(ids.iter().map(|&t| Token(t)).collect())
    };
    // (tokens, the prompt's text length when it was given as text)
    let text = |t: &String| (st.raw.tokenize_prompt(model, t), Some(t.len()));
    let prompts: Vec<(Vec<Token>, Option<usize>)> = match &r.prompt {
        Prompt::Text(t) => vec![text(t)],
        Prompt::Texts(ts) => ts.iter().map(text).collect(),
        Prompt::Tokens(t) => vec![(ids(t)?, None)],
        Prompt::TokenLists(ls) => ls
            .iter()
            .map(|l| ids(l).map(|t| (t, None)))
            .collect::<Result<_, _>>()?,
    };
    if prompts.is_empty() {
        return Err(ApiError::invalid("prompt", "the list of prompts is empty"));
    }
    let top = match r.logprobs {
        Some(n) if !(0..=20).contains(&n) => {
            return Err(ApiError::invalid(
                "logprobs",
                format!("logprobs must be between 0 and 20, got {n}"),
            ))
        }
        Some(n) => Some(n as usize),
        None => None,
    };
    if let Some(b) = r.best_of {
        if b != r.common.n.unwrap_or(1) {
            return Err(ApiError::invalid(
                "best_of",
                format!("best_of must equal n (choices are not ranked), got {b}"),
            ));
        }
    }
    let mut p = prepare_common(st, Kind::Completion, prompts, r.common, top)?;
    if r.echo {
        p.echo = true;
        for prompt in &mut p.prompts {
            let mut bytes = Vec::new();
            let tokens: Vec<(u32, String, Vec<u8>)> = prompt
                .tokens
                .iter()
                .map(|&t| {
                    let b = model.piece_bytes(t);
                    bytes.extend_from_slice(&b);
                    (t.0, String::from_utf8_lossy(&b).into_owned(), b)
                })
                .collect();
            // offsets of the generated text continue after the echoed one
            prompt.text_len = bytes.len();
            prompt.echo = Some(Echo {
                text: String::from_utf8_lossy(&bytes).into_owned(),
                tokens,
            });
        }
    }
    check_capacity(st, &p)?;
    Ok(p)
}

/// Bytes of the token texts of a prompt given as token ids, a leading BOS
/// left out.
fn prompt_text_len(st: &AppState, tokens: &[Token]) -> usize {
    let model = st.pair.base();
    let skip = usize::from(tokens.first().copied() == model.bos() && model.bos().is_some());
    tokens[skip..]
        .iter()
        .map(|&t| model.piece_bytes(t).len())
        .sum()
}

pub(super) fn prepare_common(
    st: &AppState,
    kind: Kind,
    prompts: Vec<(Vec<Token>, Option<usize>)>,
    c: Common,
    logprobs: Option<usize>,
) -> Result<Prepared, ApiError> {
    let model = c.model.unwrap_or_else(|| st.default_name.clone());
    let from_name = config::parse_model_name(&model, &st.default_name)?;
    let room = st.limits.max_prompt_tokens.min(st.limits.n_ctx - 1);
    for (prompt, _) in &prompts {
        check_prompt(kind, prompt, room)?;
    }
    let n = match c.n {
        None => 1,
        Some(n) if (1..=MAX_N).contains(&n) => n as usize,
        Some(n) => {
            return Err(ApiError::invalid(
                "n",
                format!("n must be between 1 and {MAX_N}, got {n}"),
            ))
        }
    };
    let prompts: Vec<PromptIn> = prompts
        .into_iter()
        .map(|(tokens, text_len)| PromptIn {
            text_len: text_len.unwrap_or_else(|| prompt_text_len(st, &tokens)),
            tokens,
            echo: None,
        })
        .collect();
    // completions may ask for no tokens (to score an echoed prompt)
    let least = i64::from(kind == Kind::Chat);
    let max_tokens = match c.max_completion_tokens.or(c.max_tokens) {
        None => st.limits.max_tokens,
        Some(n) if n >= least && n as u64 <= st.limits.max_tokens as u64 => n as usize,
        Some(n) => {
            return Err(ApiError::invalid(
                "max_tokens",
                format!(
                    "max_tokens must be between {least} and {}, got {n}",
                    st.limits.max_tokens
                ),
            ))
        }
    };
    let stop = match c.stop {
        None => Vec::new(),
        Some(Stop::One(s)) => vec![s],
        Some(Stop::Many(v)) => v,
    };
    if stop.len() > 16 || stop.iter().any(|s| s.is_empty() || s.len() > 256) {
        return Err(ApiError::invalid(
            "stop",
            "stop takes at most 16 non-empty strings of at most 256 bytes",
        ));
    }
    let top_k = match c.top_k {
        None => None,
        Some(k) if k >= 0 => Some(k as usize),
        Some(k) => {
            return Err(ApiError::invalid(
                "top_k",
                format!("top_k must be 0 (off) or positive, got {k}"),
            ))
        }
    };
    let seed = match &c.seed {
        None => random_seed(st.next_id.load(Ordering::Relaxed)),
        Some(n) => n
            .as_u64()
            .or_else(|| n.as_i64().map(|v| v as u64))
            .ok_or_else(|| {
                ApiError::invalid("seed", format!("seed must be an integer, got {n}"))
            })?,
    };
    let sampling = SamplingFields {
        temperature: c.temperature,
        top_p: c.top_p,
        top_k,
        seed,
    };
    let ext = config::dlogp_object(c.dlogp.as_ref())?;
    let bias = config::logit_bias(c.logit_bias.as_ref(), st.pair.base().n_vocab())?;
    let cfg = config::resolve(&st.preset, &from_name, Some(&ext.settings), &sampling)?
        .with_logit_bias(bias);
    Ok(Prepared {
        kind,
        model,
        prompts,
        n,
        cfg,
        max_tokens,
        stop,
        logprobs,
        stream: c.stream,
        include_usage: c.stream_options.is_some_and(|o| o.include_usage),
        trace: ext.trace,
        echo: false,
        return_tokens: false,
    })
}

/// A 400 when the request needs more engine tasks than the server holds.
pub(super) fn check_capacity(st: &AppState, p: &Prepared) -> Result<(), ApiError> {
    let tasks = p.tasks();
    if tasks > st.limits.capacity {
        return Err(ApiError::invalid(
            if p.n > 1 { "n" } else { "prompt" },
            format!(
                "{} prompts × n = {} need {tasks} generations or scorings; this server holds at most {} at a time",
                p.prompts.len(),
                p.n,
                st.limits.capacity
            ),
        ));
    }
    Ok(())
}

/// A 400 for an empty prompt or one too long for the context.
fn check_prompt(kind: Kind, prompt: &[Token], room: usize) -> Result<(), ApiError> {
    let field = if kind == Kind::Chat {
        "messages"
    } else {
        "prompt"
    };
    if prompt.is_empty() {
        return Err(ApiError::invalid(field, "the prompt is empty"));
    }
    if prompt.len() > room {
        return Err(ApiError {
            code: Some("context_length_exceeded"),
            ..ApiError::invalid(
                field,
                format!(
                    "the prompt has {} tokens; this server accepts at most {room}",
                    prompt.len()
                ),
            )
        });
    }
    Ok(())
}

/// A seed for a request that gave none (reported back in `dlogp.seed`).
fn random_seed(salt: u64) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    let mut state = nanos ^ salt;
    crate::sampler::rng::splitmix64(&mut state) >> 1
}

/// Queue the request's jobs (one per choice); answer with JSON or a stream
/// of events.
async fn generate(st: Arc<AppState>, p: Prepared) -> Response {
    let (id, rx) = match submit(&st, &p) {
        Ok(x) => x,
        Err(e) => return e.into_response(),
    };
    let reply = reply::Reply {
        id: format!(
            "{}-{id}",
            if p.kind == Kind::Chat {
                "chatcmpl"
            } else {
                "cmpl"
            }
        ),
        created: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs()),
        p,
    };
    if reply.p.stream {
        reply::stream(reply, rx).into_response()
    } else {
        reply::full(reply, rx).await
    }
}

/// Send a request's tasks to the engine thread: its first job id and the
/// receiver of its events.
pub(super) fn submit(
    st: &AppState,
    p: &Prepared,
) -> Result<(u64, tokio::sync::mpsc::UnboundedReceiver<(usize, Event)>), ApiError> {
    let k = p.choices();
    // echo: one scoring task per prompt, sent first (the engine thread runs
    // tasks in order, so a prompt's scores come before its choices' tokens)
    let scores = if p.echo { p.prompts.len() } else { 0 };
    let Some(mut permits) = Permit::acquire_many(&st.taken, st.limits.capacity, p.tasks()) else {
        return Err(ApiError::busy(st.limits.capacity));
    };
    let id = st.next_id.fetch_add(k as u64, Ordering::Relaxed);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut sent = true;
    let side = if p.cfg.mode() == Mode::Base {
        Side::Base
    } else {
        Side::Rl
    };
    for (i, permit) in permits.drain(..scores).enumerate() {
        let task = Task::Score {
            prompt: p.prompts[i].tokens.clone(),
            top: p.logprobs.unwrap_or(0),
            side,
        };
        sent &= st
            .jobs
            .send(Submission {
                task,
                choice: k + i,
                events: tx.clone(),
                permit,
            })
            .is_ok();
    }
    for (c, permit) in permits.into_iter().enumerate() {
        let job = Job {
            id: id + c as u64,
            key: 0,
            prompt: p.prompt_of(c).tokens.clone(),
            cfg: p.cfg.clone().with_seed(p.seed_of(c)),
            max_tokens: p.max_tokens,
            stop: p.stop.clone(),
            logprobs: p.logprobs,
        };
        sent &= st
            .jobs
            .send(Submission {
                task: Task::Generate(job),
                choice: c,
                events: tx.clone(),
                permit,
            })
            .is_ok();
    }
    drop(tx);
    if !sent || !st.alive.load(Ordering::Acquire) {
        return Err(ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the engine has stopped".to_string(),
            kind: "server_error",
            param: None,
            code: None,
        });
    }
    Ok((id, rx))
}

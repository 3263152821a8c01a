//! The HTTP side: routes, request validation, and the JSON / server-sent
//! event responses. Runs on tokio; never touches a llama.cpp context (only
//! the shared model's tokenizer and chat template).

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::stream::{self, Stream};
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use super::api::{ChatRequest, Common, CompletionRequest, Prompt, Stop};
use super::config::{self, Preset, SamplingFields};
use super::error::ApiError;
use super::worker::{Event, Permit, Stats, Submission, TokenOut};
use crate::decode::{DecodeConfig, Finish, Job};
use crate::runtime::{ChatMessage, LlamaToken, ModelPair, PromptFormat};

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
    pub preset: Preset,
    pub limits: Limits,
    /// The model name that means "the server's defaults".
    pub default_name: String,
    pub jobs: mpsc::Sender<Submission>,
    pub taken: Arc<AtomicUsize>,
    pub stats: Arc<Stats>,
    pub alive: Arc<AtomicBool>,
    pub next_id: AtomicU64,
    pub created: u64,
}

/// The routes.
pub fn router(state: Arc<AppState>) -> Router {
    let max_body = state.limits.max_body;
    Router::new()
        .route("/health", get(health))
        .route("/v1/models", get(models))
        .route("/v1/models/{name}", get(model))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completions))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(max_body))
        .with_state(state)
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

/// Which API a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Chat,
    Completion,
}

/// A validated request, ready for the engine.
struct Prepared {
    kind: Kind,
    model: String,
    prompt: Vec<LlamaToken>,
    cfg: DecodeConfig,
    max_tokens: usize,
    stop: Vec<String>,
    /// Alternatives per token, when log-probs are asked for.
    logprobs: Option<usize>,
    stream: bool,
    include_usage: bool,
}

fn parse_body<T: DeserializeOwned>(
    st: &AppState,
    body: Result<Bytes, BytesRejection>,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|e| {
        if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::too_large(st.limits.max_body)
        } else {
            ApiError::bad_request(format!("could not read the request body: {e}"))
        }
    })?;
    serde_json::from_slice(&bytes)
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
    prepare_common(st, Kind::Chat, prompt, r.common, top)
}

fn prepare_completion(st: &AppState, r: CompletionRequest) -> Result<Prepared, ApiError> {
    if r.echo {
        return Err(ApiError::invalid("echo", "echo is not supported"));
    }
    let n_vocab = st.pair.base().n_vocab();
    let prompt = match r.prompt {
        Prompt::Text(t) => st.raw.tokenize_prompt(st.pair.base(), &t),
        Prompt::Texts(ts) if ts.len() == 1 => st.raw.tokenize_prompt(st.pair.base(), &ts[0]),
        Prompt::Texts(ts) => {
            return Err(ApiError::invalid(
                "prompt",
                format!("one prompt per request, got {}", ts.len()),
            ))
        }
        Prompt::Tokens(ids) => {
            if let Some(bad) = ids.iter().find(|&&t| t as usize >= n_vocab) {
                return Err(ApiError::invalid(
                    "prompt",
                    format!("token id {bad} is outside the vocabulary of {n_vocab}"),
                ));
            }
            ids.iter().map(|&t| LlamaToken(t as i32)).collect()
        }
    };
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
    prepare_common(st, Kind::Completion, prompt, r.common, top)
}

fn prepare_common(
    st: &AppState,
    kind: Kind,
    prompt: Vec<LlamaToken>,
    c: Common,
    logprobs: Option<usize>,
) -> Result<Prepared, ApiError> {
    let model = c.model.unwrap_or_else(|| st.default_name.clone());
    let from_name = config::parse_model_name(&model, &st.default_name)?;
    if prompt.is_empty() {
        return Err(ApiError::invalid("prompt", "the prompt is empty"));
    }
    let room = st.limits.max_prompt_tokens.min(st.limits.n_ctx - 1);
    if prompt.len() > room {
        return Err(ApiError {
            code: Some("context_length_exceeded"),
            ..ApiError::invalid(
                if kind == Kind::Chat {
                    "messages"
                } else {
                    "prompt"
                },
                format!(
                    "the prompt has {} tokens; this server accepts at most {room}",
                    prompt.len()
                ),
            )
        });
    }
    if let Some(n) = c.n {
        if n != 1 {
            return Err(ApiError::invalid(
                "n",
                format!("only n = 1 is supported, got {n}"),
            ));
        }
    }
    let max_tokens = match c.max_completion_tokens.or(c.max_tokens) {
        None => st.limits.max_tokens,
        Some(n) if n >= 1 && n as u64 <= st.limits.max_tokens as u64 => n as usize,
        Some(n) => {
            return Err(ApiError::invalid(
                "max_tokens",
                format!(
                    "max_tokens must be between 1 and {}, got {n}",
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
    let cfg = config::resolve(&st.preset, &from_name, c.dlogp.as_ref(), &sampling)?;
    Ok(Prepared {
        kind,
        model,
        prompt,
        cfg,
        max_tokens,
        stop,
        logprobs,
        stream: c.stream,
        include_usage: c.stream_options.is_some_and(|o| o.include_usage),
    })
}

/// A seed for a request that gave none (reported back in `dlogp.seed`).
fn random_seed(salt: u64) -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    (nanos ^ salt.wrapping_mul(0x9e37_79b9_7f4a_7c15)).wrapping_mul(0xbf58_476d_1ce4_e5b9) >> 1
}

/// Queue the request; answer with JSON or a stream of events.
async fn generate(st: Arc<AppState>, p: Prepared) -> Response {
    let Some(permit) = Permit::acquire(&st.taken, st.limits.capacity) else {
        return ApiError::busy(st.limits.capacity).into_response();
    };
    let id = st.next_id.fetch_add(1, Ordering::Relaxed);
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let job = Job {
        id,
        key: 0,
        prompt: p.prompt.clone(),
        cfg: p.cfg.clone(),
        max_tokens: p.max_tokens,
        stop: p.stop.clone(),
        logprobs: p.logprobs,
    };
    let sent = st.jobs.send(Submission {
        job,
        events: tx,
        permit,
    });
    if sent.is_err() || !st.alive.load(Ordering::Acquire) {
        return ApiError {
            status: StatusCode::SERVICE_UNAVAILABLE,
            message: "the engine has stopped".to_string(),
            kind: "server_error",
            param: None,
            code: None,
        }
        .into_response();
    }
    let reply = Reply {
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
        stream_reply(reply, rx).into_response()
    } else {
        full_reply(reply, rx).await
    }
}

/// What responses repeat.
struct Reply {
    id: String,
    created: u64,
    p: Prepared,
}

impl Reply {
    fn object(&self, chunk: bool) -> &'static str {
        match (self.p.kind, chunk) {
            (Kind::Chat, false) => "chat.completion",
            (Kind::Chat, true) => "chat.completion.chunk",
            (Kind::Completion, _) => "text_completion",
        }
    }

    fn config_json(&self) -> Value {
        let c = &self.p.cfg;
        json!({
            "mode": c.mode,
            "criterion": c.gate.criterion(),
            "tau": c.gate.tau(),
            "gamma": c.gamma,
            "proposer": c.proposer,
            "temperature": c.sampling.temperature,
            "top_p": c.sampling.top_p,
            "top_k": c.sampling.top_k,
            "seed": c.seed,
        })
    }

    fn usage(&self, n_tokens: usize) -> Value {
        json!({
            "prompt_tokens": self.p.prompt.len(),
            "completion_tokens": n_tokens,
            "total_tokens": self.p.prompt.len() + n_tokens,
        })
    }

    /// The `logprobs` of a choice for these tokens (EOG tokens left out).
    fn logprobs_json(&self, tokens: &[TokenOut], text_offset: &mut usize) -> Value {
        if self.p.logprobs.is_none() {
            return Value::Null;
        }
        let tokens: Vec<&TokenOut> = tokens.iter().filter(|t| !t.eog).collect();
        match self.p.kind {
            Kind::Chat => {
                let content: Vec<Value> = tokens
                    .iter()
                    .map(|t| {
                        let top: Vec<Value> = t
                            .top
                            .iter()
                            .map(|a| json!({"token": a.token, "logprob": a.logprob, "bytes": a.bytes}))
                            .collect();
                        json!({"token": t.token, "logprob": t.logprob, "bytes": t.bytes, "top_logprobs": top})
                    })
                    .collect();
                json!({ "content": content })
            }
            Kind::Completion => {
                let mut offsets = Vec::with_capacity(tokens.len());
                for t in &tokens {
                    offsets.push(*text_offset);
                    *text_offset += t.token.len();
                }
                let top: Vec<Value> = tokens
                    .iter()
                    .map(|t| {
                        let m: serde_json::Map<String, Value> = t
                            .top
                            .iter()
                            .map(|a| (a.token.clone(), json!(a.logprob)))
                            .collect();
                        Value::Object(m)
                    })
                    .collect();
                json!({
                    "tokens": tokens.iter().map(|t| t.token.as_str()).collect::<Vec<_>>(),
                    "token_logprobs": tokens.iter().map(|t| t.logprob).collect::<Vec<_>>(),
                    "top_logprobs": top,
                    "text_offset": offsets,
                })
            }
        }
    }
}

/// dlogp's per-token extension: Δlog p, gate, proposal and both models'
/// log-probs of every decided position.
fn dlogp_tokens(tokens: &[TokenOut]) -> Vec<Value> {
    tokens
        .iter()
        .map(|t| {
            let mut v = json!({
                "id": t.id,
                "token": t.token,
                "proposed": t.proposed,
                "gate": t.gate,
                "dlogp": t.dlogp,
                "logprob_base": t.logprob_base,
                "logprob_rl": t.logprob_rl,
            });
            if t.eog {
                v["eog"] = json!(true);
            }
            v
        })
        .collect()
}

fn replacement_ratio(fired: usize, positions: usize) -> f64 {
    if positions == 0 {
        0.0
    } else {
        fired as f64 / positions as f64
    }
}

fn finish_reason(f: Finish) -> &'static str {
    match f {
        Finish::Eog | Finish::Stop => "stop",
        Finish::Length | Finish::Context => "length",
        Finish::Cancelled => "cancelled",
    }
}

async fn full_reply(reply: Reply, mut rx: UnboundedReceiver<Event>) -> Response {
    let mut text = String::new();
    let mut tokens = Vec::new();
    let (finish, n_tokens) = loop {
        match rx.recv().await {
            Some(Event::Token { text: t, token }) => {
                text.push_str(&t);
                tokens.push(token);
            }
            Some(Event::Done { finish, n_tokens }) => break (finish, n_tokens),
            Some(Event::Error(e)) => return e.into_response(),
            None => return ApiError::internal("the engine stopped").into_response(),
        }
    };
    let fired = tokens.iter().filter(|t| t.gate).count();
    let ext = json!({
        "tokens": dlogp_tokens(&tokens),
        "replacement_ratio": replacement_ratio(fired, tokens.len()),
    });
    let logprobs = reply.logprobs_json(&tokens, &mut 0);
    let choice = match reply.p.kind {
        Kind::Chat => json!({
            "index": 0,
            "message": {"role": "assistant", "content": text},
            "logprobs": logprobs,
            "finish_reason": finish_reason(finish),
            "dlogp": ext,
        }),
        Kind::Completion => json!({
            "index": 0,
            "text": text,
            "logprobs": logprobs,
            "finish_reason": finish_reason(finish),
            "dlogp": ext,
        }),
    };
    axum::Json(json!({
        "id": reply.id,
        "object": reply.object(false),
        "created": reply.created,
        "model": reply.p.model,
        "choices": [choice],
        "usage": reply.usage(n_tokens),
        "dlogp": reply.config_json(),
    }))
    .into_response()
}

/// The state of a streamed reply.
struct Streaming {
    reply: Reply,
    rx: UnboundedReceiver<Event>,
    queue: std::collections::VecDeque<SseEvent>,
    started: bool,
    finished: bool,
    fired: usize,
    positions: usize,
    text_offset: usize,
}

impl Streaming {
    fn chunk(&self, choice: Value) -> SseEvent {
        let mut v = json!({
            "id": self.reply.id,
            "object": self.reply.object(true),
            "created": self.reply.created,
            "model": self.reply.p.model,
            "choices": [choice],
        });
        if !self.started {
            v["dlogp"] = self.reply.config_json();
        }
        SseEvent::default().data(v.to_string())
    }

    fn choice(&self, text: &str, finish: Option<&str>, extra: &[(&str, Value)]) -> Value {
        let mut c = match self.reply.p.kind {
            Kind::Chat => {
                let delta = if finish.is_some() && text.is_empty() {
                    json!({})
                } else {
                    json!({"content": text})
                };
                json!({"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
            Kind::Completion => {
                json!({"index": 0, "text": text, "logprobs": null, "finish_reason": finish})
            }
        };
        for (k, v) in extra {
            c[*k] = v.clone();
        }
        c
    }

    /// Turn an engine event into SSE events.
    fn on_event(&mut self, ev: Option<Event>) {
        if !self.started && self.reply.p.kind == Kind::Chat {
            let mut first = self.choice("", None, &[]);
            first["delta"] = json!({"role": "assistant", "content": ""});
            let e = self.chunk(first);
            self.queue.push_back(e);
            self.started = true;
        }
        match ev {
            Some(Event::Token { text, token }) => {
                self.positions += 1;
                self.fired += usize::from(token.gate);
                let tokens = [token];
                let logprobs = self.reply.logprobs_json(&tokens, &mut self.text_offset);
                let c = self.choice(
                    &text,
                    None,
                    &[
                        ("logprobs", logprobs),
                        ("dlogp", json!({"tokens": dlogp_tokens(&tokens)})),
                    ],
                );
                let e = self.chunk(c);
                self.started = true;
                self.queue.push_back(e);
            }
            Some(Event::Done { finish, n_tokens }) => {
                let c = self.choice(
                    "",
                    Some(finish_reason(finish)),
                    &[(
                        "dlogp",
                        json!({"tokens": [], "replacement_ratio": replacement_ratio(self.fired, self.positions)}),
                    )],
                );
                let e = self.chunk(c);
                self.queue.push_back(e);
                if self.reply.include_usage() {
                    let v = json!({
                        "id": self.reply.id,
                        "object": self.reply.object(true),
                        "created": self.reply.created,
                        "model": self.reply.p.model,
                        "choices": [],
                        "usage": self.reply.usage(n_tokens),
                    });
                    self.queue
                        .push_back(SseEvent::default().data(v.to_string()));
                }
                self.finish();
            }
            Some(Event::Error(e)) => {
                self.queue.push_back(SseEvent::default().data(e.to_json()));
                self.finish();
            }
            None => {
                let e = ApiError::internal("the engine stopped");
                self.queue.push_back(SseEvent::default().data(e.to_json()));
                self.finish();
            }
        }
    }

    fn finish(&mut self) {
        self.queue.push_back(SseEvent::default().data("[DONE]"));
        self.finished = true;
    }
}

impl Reply {
    fn include_usage(&self) -> bool {
        self.p.include_usage
    }
}

fn stream_reply(
    reply: Reply,
    rx: UnboundedReceiver<Event>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let state = Streaming {
        reply,
        rx,
        queue: Default::default(),
        started: false,
        finished: false,
        fired: 0,
        positions: 0,
        text_offset: 0,
    };
    let events = stream::unfold(state, |mut st| async move {
        loop {
            if let Some(e) = st.queue.pop_front() {
                return Some((Ok(e), st));
            }
            if st.finished {
                return None;
            }
            let ev = st.rx.recv().await;
            st.on_event(ev);
        }
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

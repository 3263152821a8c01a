//! llama-server's native API on the same server, with its field names and
//! shapes: `POST /completion` (streamed or not, `n_predict`, `n_probs`),
//! `POST /tokenize`, `POST /detokenize`, `GET /props` (and `/health`, shared
//! with the OpenAI side). A `/completion` request decodes exactly as the
//! `/v1/completions` request with the same prompt, limits and seed.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use super::api::{Common, Stop};
use super::error::ApiError;
use super::fields;
use super::http::{self, AppState};
use super::prepared::{Kind, Prepared};
use super::worker::{Event, TokenOut};
use crate::decode::Finish;
use crate::runtime::Token;

/// `POST /completion` as llama.cpp front-ends send it.
#[derive(Debug, Deserialize)]
struct NativeRequest {
    prompt: NativePrompt,
    /// −1 (or absent): up to the server's limit; 0: nothing generated.
    n_predict: Option<i64>,
    temperature: Option<f64>,
    top_k: Option<i64>,
    top_p: Option<f64>,
    /// −1 (or absent): a random seed, reported back.
    seed: Option<i64>,
    stop: Option<Vec<String>>,
    #[serde(default)]
    stream: bool,
    /// Alternatives per token in `completion_probabilities` (0: none).
    #[serde(default)]
    n_probs: i64,
    logit_bias: Option<Value>,
    #[serde(default)]
    return_tokens: bool,
    model: Option<String>,
    dlogp: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum NativePrompt {
    Text(String),
    Tokens(Vec<u32>),
    Many(Vec<Value>),
}

fn prepare(st: &AppState, r: NativeRequest) -> Result<Prepared, ApiError> {
    let model = st.pair.base();
    let n_vocab = model.n_vocab();
    let prompt = match &r.prompt {
        NativePrompt::Text(t) => st.raw.tokenize_prompt(model, t),
        NativePrompt::Tokens(ids) => {
            if let Some(bad) = ids.iter().find(|&&t| t as usize >= n_vocab) {
                return Err(ApiError::invalid(
                    "prompt",
                    format!("token id {bad} is outside the vocabulary of {n_vocab}"),
                ));
            }
            ids.iter().map(|&t| Token(t)).collect()
        }
        NativePrompt::Many(list) => {
            return Err(ApiError::invalid(
                "prompt",
                format!(
                    "one prompt per /completion request (a string or a list of token ids), \
                     got a list of {} items that are not all token ids; /v1/completions takes \
                     lists of prompts",
                    list.len()
                ),
            ))
        }
    };
    let text_len = match &r.prompt {
        NativePrompt::Text(t) => Some(t.len()),
        _ => None,
    };
    let max_tokens = match r.n_predict {
        None | Some(-1) => None,
        Some(n) if n < -1 => {
            return Err(ApiError::invalid(
                "n_predict",
                format!("n_predict must be -1 (no limit but the server's) or at least 0, got {n}"),
            ))
        }
        Some(n) if n as u64 > st.limits.max_tokens as u64 => {
            return Err(ApiError::invalid(
                "n_predict",
                format!(
                    "n_predict must be at most {} on this server, got {n}",
                    st.limits.max_tokens
                ),
            ))
        }
        Some(n) => Some(n),
    };
    if !(0..=20).contains(&r.n_probs) {
        return Err(ApiError::invalid(
            "n_probs",
            format!("n_probs must be between 0 and 20, got {}", r.n_probs),
        ));
    }
    let common = Common {
        model: r.model,
        max_tokens,
        // llama-server: a temperature ≤ 0 is greedy
        temperature: r.temperature.map(|t| t.max(0.0)),
        top_p: r.top_p,
        top_k: r.top_k,
        seed: r.seed.filter(|&s| s != -1).map(serde_json::Number::from),
        stop: r.stop.map(Stop::Many),
        stream: r.stream,
        logit_bias: r.logit_bias,
        dlogp: r.dlogp,
        ..Common::default()
    };
    let logprobs = (r.n_probs > 0).then_some(r.n_probs as usize);
    let mut p = http::prepare_common(
        st,
        Kind::Completion,
        vec![(prompt, text_len)],
        common,
        logprobs,
    )?;
    p.return_tokens = r.return_tokens;
    http::check_capacity(st, &p)?;
    Ok(p)
}

/// `POST /completion`.
pub(super) async fn completion(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let prepared = http::parse_body_with::<NativeRequest>(&st, body, fields::check_native)
        .and_then(|r| prepare(&st, r));
    let p = match prepared {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let rx = match http::submit(&st, &p) {
        Ok((_, rx)) => rx,
        Err(e) => return e.into_response(),
    };
    let reply = Native {
        p,
        st: Arc::clone(&st),
        text: String::new(),
        tokens: Vec::new(),
    };
    if reply.p.stream {
        stream(reply, rx).into_response()
    } else {
        full(reply, rx).await
    }
}

/// A `/completion` answer being built.
struct Native {
    p: Prepared,
    st: Arc<AppState>,
    text: String,
    tokens: Vec<TokenOut>,
}

impl Native {
    /// `completion_probabilities` entries for these tokens (EOG left out).
    fn probs(&self, tokens: &[TokenOut]) -> Value {
        let v: Vec<Value> = tokens
            .iter()
            .filter(|t| !t.eog)
            .map(|t| {
                let top: Vec<Value> = t
                    .top
                    .iter()
                    .map(|a| json!({"id": a.id, "token": a.token, "bytes": a.bytes, "logprob": a.logprob}))
                    .collect();
                json!({"id": t.id, "token": t.token, "bytes": t.bytes, "logprob": t.logprob, "top_logprobs": top})
            })
            .collect();
        Value::Array(v)
    }

    fn settings(&self) -> Value {
        let c = &self.p.cfg;
        json!({
            "n_ctx": self.st.limits.n_ctx,
            "n_predict": self.p.max_tokens,
            "model": self.p.model,
            "seed": c.seed(),
            "temperature": c.sampling().temperature,
            "top_k": c.sampling().top_k,
            "top_p": c.sampling().top_p,
            "stop": self.p.stop,
            "stream": self.p.stream,
            "n_probs": self.p.logprobs.unwrap_or(0),
        })
    }

    /// The final object: llama-server's fields plus the `dlogp` extension.
    fn last(&self, finish: Finish, n_tokens: usize) -> Value {
        let stop_type = match finish {
            Finish::Eog => "eos",
            Finish::Stop => "word",
            Finish::Length | Finish::Context | Finish::Cancelled => "limit",
        };
        let stopping_word = match (finish, self.p.stop.as_slice()) {
            (Finish::Stop, [one]) => one.clone(),
            _ => String::new(),
        };
        let fired = self.tokens.iter().filter(|t| t.gate).count();
        let mut ext = json!({
            "seed": self.p.cfg.seed(),
            "replacement_ratio": if self.tokens.is_empty() { 0.0 } else { fired as f64 / self.tokens.len() as f64 },
            "mode": self.p.cfg.mode(),
            "gamma": self.p.cfg.gamma(),
            "tau": self.p.cfg.gate().tau(),
            "criterion": self.p.cfg.gate().criterion(),
            "proposer": self.p.cfg.proposer(),
        });
        if self.p.trace {
            ext["tokens"] = json!(self
                .tokens
                .iter()
                .map(|t| json!({"id": t.id, "token": t.token, "proposed": t.proposed, "gate": t.gate,
                                "dlogp": t.dlogp, "logprob_base": t.logprob_base, "logprob_rl": t.logprob_rl}))
                .collect::<Vec<_>>());
        }
        let prompt = &self.p.prompts[0];
        let mut v = json!({
            "index": 0,
            "id_slot": 0,
            "content": self.text,
            "tokens": if self.p.return_tokens { self.ids() } else { Vec::new() },
            "stop": true,
            "model": self.p.model,
            "tokens_predicted": n_tokens,
            "tokens_evaluated": prompt.tokens.len(),
            "tokens_cached": 0,
            "generation_settings": self.settings(),
            "has_new_line": self.text.contains('\n'),
            "truncated": finish == Finish::Context,
            "stop_type": stop_type,
            "stopping_word": stopping_word,
            "dlogp": ext,
        });
        if self.p.logprobs.is_some() {
            v["completion_probabilities"] = self.probs(&self.tokens);
        }
        v
    }

    fn ids(&self) -> Vec<u32> {
        self.tokens
            .iter()
            .filter(|t| !t.eog)
            .map(|t| t.id)
            .collect()
    }
}

async fn full(mut reply: Native, mut rx: UnboundedReceiver<(usize, Event)>) -> Response {
    if reply.p.max_tokens == 0 {
        return axum::Json(reply.last(Finish::Length, 0)).into_response();
    }
    loop {
        match rx.recv().await {
            Some((_, Event::Token { text, token })) => {
                reply.text.push_str(&text);
                reply.tokens.push(token);
            }
            Some((_, Event::Done { finish, n_tokens })) => {
                return axum::Json(reply.last(finish, n_tokens)).into_response()
            }
            Some((_, Event::Prompt(_))) => {}
            Some((_, Event::Error(e))) => return e.into_response(),
            None => return ApiError::internal("the engine stopped").into_response(),
        }
    }
}

/// Streamed: one `data:` object per token (`content`, `tokens`, `stop:
/// false`, and `completion_probabilities` when asked), then the final
/// object with `stop: true`; no `[DONE]`, as llama-server.
fn stream(
    reply: Native,
    rx: UnboundedReceiver<(usize, Event)>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let done = reply.p.max_tokens == 0;
    let state = (reply, rx, done, false);
    let events = stream::unfold(state, |(mut reply, mut rx, done, ended)| async move {
        if ended {
            return None;
        }
        if done {
            let v = reply.last(Finish::Length, 0);
            return Some((
                Ok(SseEvent::default().data(v.to_string())),
                (reply, rx, true, true),
            ));
        }
        loop {
            match rx.recv().await {
                Some((_, Event::Token { text, token })) => {
                    let mut v = json!({
                        "index": 0,
                        "id_slot": 0,
                        "content": text,
                        "tokens": if token.eog { Vec::new() } else { vec![token.id] },
                        "stop": false,
                    });
                    if reply.p.logprobs.is_some() {
                        v["completion_probabilities"] = reply.probs(std::slice::from_ref(&token));
                    }
                    reply.text.push_str(&text);
                    reply.tokens.push(token);
                    return Some((
                        Ok(SseEvent::default().data(v.to_string())),
                        (reply, rx, false, false),
                    ));
                }
                Some((_, Event::Done { finish, n_tokens })) => {
                    // the text went out in the chunks, as llama-server streams
                    let mut v = reply.last(finish, n_tokens);
                    v["content"] = json!("");
                    return Some((
                        Ok(SseEvent::default().data(v.to_string())),
                        (reply, rx, false, true),
                    ));
                }
                Some((_, Event::Prompt(_))) => {}
                Some((_, Event::Error(e))) => {
                    return Some((
                        Ok(SseEvent::default().data(e.to_json())),
                        (reply, rx, false, true),
                    ));
                }
                None => {
                    let e = ApiError::internal("the engine stopped");
                    return Some((
                        Ok(SseEvent::default().data(e.to_json())),
                        (reply, rx, false, true),
                    ));
                }
            }
        }
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}

/// llama-server's fields, and vLLM's names for them (`prompt`,
/// `add_special_tokens`), which lm-evaluation-harness's `remote` tokenizer
/// sends.
#[derive(Debug, Deserialize)]
struct TokenizeRequest {
    #[serde(alias = "prompt")]
    content: String,
    #[serde(default, alias = "add_special_tokens")]
    add_special: bool,
    parse_special: Option<bool>,
    #[serde(default)]
    with_pieces: bool,
}

/// `POST /tokenize`: `{"tokens": [ids]}`, or with `with_pieces` `[{"id",
/// "piece"}]` (the piece a string when it is valid UTF-8, else its bytes).
pub(super) async fn tokenize(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let r: TokenizeRequest = match http::parse_body_with(&st, body, |_| Ok(())) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if r.parse_special == Some(false) {
        return ApiError::invalid(
            "parse_special",
            "special tokens in the text are always parsed here (parse_special: true)",
        )
        .into_response();
    }
    let model = st.pair.base();
    let add_bos = r.add_special && model.llama().vocab().should_add_bos();
    let tokens = model.tokenize(&r.content, add_bos);
    let out: Vec<Value> = tokens
        .iter()
        .map(|&t| {
            if r.with_pieces {
                let bytes = model.piece_bytes(t);
                let piece = match String::from_utf8(bytes) {
                    Ok(s) => json!(s),
                    Err(e) => json!(e.into_bytes()),
                };
                json!({"id": t.0, "piece": piece})
            } else {
                json!(t.0)
            }
        })
        .collect();
    axum::Json(json!({ "tokens": out })).into_response()
}

#[derive(Debug, Deserialize)]
struct DetokenizeRequest {
    tokens: Vec<u32>,
}

/// `POST /detokenize`: `{"content": text}` of the tokens' texts joined
/// (and the same text as `prompt`, vLLM's name, for lm-evaluation-harness).
pub(super) async fn detokenize(
    State(st): State<Arc<AppState>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let r: DetokenizeRequest = match http::parse_body_with(&st, body, |_| Ok(())) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    let model = st.pair.base();
    let n_vocab = model.n_vocab();
    if let Some(bad) = r.tokens.iter().find(|&&t| t as usize >= n_vocab) {
        return ApiError::invalid(
            "tokens",
            format!("token id {bad} is outside the vocabulary of {n_vocab}"),
        )
        .into_response();
    }
    let mut bytes = Vec::new();
    for &t in &r.tokens {
        bytes.extend(model.piece_bytes(Token(t)));
    }
    let text = String::from_utf8_lossy(&bytes);
    axum::Json(json!({ "content": text, "prompt": text })).into_response()
}

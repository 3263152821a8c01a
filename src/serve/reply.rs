//! Responses: the JSON of a whole answer and the server-sent events of a
//! streamed one, from the engine's events, in OpenAI's shapes plus the
//! `dlogp` extension.

use std::convert::Infallible;

use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use super::error::ApiError;
use super::http::{Kind, Prepared};
use super::worker::{Event, TokenOut};
use crate::decode::Finish;

/// What responses repeat.
pub(super) struct Reply {
    pub(super) id: String,
    pub(super) created: u64,
    pub(super) p: Prepared,
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
            "mode": c.mode(),
            "criterion": c.gate().criterion(),
            "tau": c.gate().tau(),
            "gamma": c.gamma(),
            "proposer": c.proposer(),
            "temperature": c.sampling().temperature,
            "top_p": c.sampling().top_p,
            "top_k": c.sampling().top_k,
            "seed": c.seed(),
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

pub(super) async fn full(reply: Reply, mut rx: UnboundedReceiver<Event>) -> Response {
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
    let mut ext = json!({"replacement_ratio": replacement_ratio(fired, tokens.len())});
    if reply.p.trace {
        ext["tokens"] = json!(dlogp_tokens(&tokens));
    }
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
                let mut extra = vec![("logprobs", logprobs)];
                if self.reply.p.trace {
                    extra.push(("dlogp", json!({"tokens": dlogp_tokens(&tokens)})));
                }
                let c = self.choice(&text, None, &extra);
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
                        if self.reply.p.trace {
                            json!({"tokens": [], "replacement_ratio": replacement_ratio(self.fired, self.positions)})
                        } else {
                            json!({"replacement_ratio": replacement_ratio(self.fired, self.positions)})
                        },
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

pub(super) fn stream(
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

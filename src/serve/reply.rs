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
use super::prepared::{Echo, Kind, Prepared};
use super::worker::{Event, PromptToken, TokenOut};
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

    fn usage(&self, completion_tokens: usize) -> Value {
        let prompt = self.p.prompt_tokens();
        json!({
            "prompt_tokens": prompt,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt + completion_tokens,
        })
    }

    /// A choice's `dlogp` extension: its seed, the replacement ratio, and
    /// the trace when asked for.
    fn choice_ext(&self, c: usize, tokens: Option<&[TokenOut]>, ratio: Option<f64>) -> Value {
        let mut ext = json!({"seed": self.p.seed_of(c)});
        if let Some(r) = ratio {
            ext["replacement_ratio"] = json!(r);
        }
        if self.p.trace {
            ext["tokens"] = json!(tokens.map(dlogp_tokens).unwrap_or_default());
        }
        ext
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
                    *text_offset += t.bytes.len();
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

impl Reply {
    /// Legacy log-probs of an echoed prompt: its tokens from offset 0, the
    /// first without a log-prob (nothing precedes it), the others scored
    /// by teacher forcing.
    fn echo_logprobs(&self, echo: &Echo, scored: &[PromptToken]) -> Value {
        if self.p.logprobs.is_none() {
            return Value::Null;
        }
        let mut offsets = Vec::with_capacity(echo.tokens.len());
        let mut at = 0;
        for t in &echo.tokens {
            offsets.push(at);
            at += t.2.len();
        }
        let scored_at = |i: usize| i.checked_sub(1).and_then(|j| scored.get(j));
        let lps: Vec<Value> = (0..echo.tokens.len())
            .map(|i| scored_at(i).map_or(Value::Null, |s| json!(s.logprob)))
            .collect();
        let tops: Vec<Value> = (0..echo.tokens.len())
            .map(|i| {
                scored_at(i).map_or(Value::Null, |s| {
                    Value::Object(
                        s.top
                            .iter()
                            .map(|a| (a.token.clone(), json!(a.logprob)))
                            .collect(),
                    )
                })
            })
            .collect();
        json!({
            "tokens": echo.tokens.iter().map(|t| t.1.as_str()).collect::<Vec<_>>(),
            "token_logprobs": lps,
            "top_logprobs": tops,
            "text_offset": offsets,
        })
    }

    /// The trace of an echoed prompt: every token, with both models'
    /// log-probs and Δlog p after the first.
    fn echo_trace(echo: &Echo, scored: &[PromptToken]) -> Value {
        let v: Vec<Value> = echo
            .tokens
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let mut e = json!({"id": t.0, "token": t.1});
                if let Some(s) = i.checked_sub(1).and_then(|j| scored.get(j)) {
                    e["dlogp"] = json!(s.dlogp);
                    e["logprob_base"] = json!(s.logprob_base);
                    e["logprob_rl"] = json!(s.logprob_rl);
                }
                e
            })
            .collect();
        Value::Array(v)
    }
}

/// Two legacy log-prob objects one after the other.
fn concat_logprobs(mut a: Value, b: Value) -> Value {
    if a.is_null() {
        return b;
    }
    for key in ["tokens", "token_logprobs", "top_logprobs", "text_offset"] {
        if let (Some(x), Some(y)) = (a[key].as_array_mut(), b[key].as_array()) {
            x.extend(y.iter().cloned());
        }
    }
    a
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

/// What one choice has produced so far.
#[derive(Default)]
struct ChoiceOut {
    text: String,
    tokens: Vec<TokenOut>,
    n_tokens: usize,
    finish: Option<Finish>,
}

pub(super) async fn full(reply: Reply, mut rx: UnboundedReceiver<(usize, Event)>) -> Response {
    let k = reply.p.choices();
    let n_prompts = reply.p.prompts.len();
    let mut outs: Vec<ChoiceOut> = (0..k).map(|_| ChoiceOut::default()).collect();
    let mut scored: Vec<Vec<PromptToken>> = vec![Vec::new(); n_prompts];
    let mut left = if reply.p.max_tokens > 0 { k } else { 0 };
    if reply.p.echo {
        left += n_prompts;
    }
    while left > 0 {
        match rx.recv().await {
            Some((c, Event::Prompt(tokens))) => {
                if let Some(slot) = c.checked_sub(k).and_then(|i| scored.get_mut(i)) {
                    *slot = tokens;
                }
                left -= 1;
            }
            Some((c, Event::Token { text, token })) => {
                outs[c].text.push_str(&text);
                outs[c].tokens.push(token);
            }
            Some((c, Event::Done { finish, n_tokens })) => {
                outs[c].finish = Some(finish);
                outs[c].n_tokens = n_tokens;
                left -= 1;
            }
            Some((_, Event::Error(e))) => return e.into_response(),
            None => return ApiError::internal("the engine stopped").into_response(),
        }
    }
    let mut choices = Vec::with_capacity(k);
    for (c, out) in outs.iter().enumerate() {
        let fired = out.tokens.iter().filter(|t| t.gate).count();
        let ext = reply.choice_ext(
            c,
            Some(&out.tokens),
            Some(replacement_ratio(fired, out.tokens.len())),
        );
        let mut ext = ext;
        let prompt = reply.p.prompt_of(c);
        let mut offset = prompt.text_len;
        let mut logprobs = reply.logprobs_json(&out.tokens, &mut offset);
        let mut text = out.text.clone();
        if let Some(echo) = &prompt.echo {
            let s = &scored[c / reply.p.n];
            logprobs = concat_logprobs(reply.echo_logprobs(echo, s), logprobs);
            text = format!("{}{text}", echo.text);
            if reply.p.trace {
                ext["prompt_tokens"] = Reply::echo_trace(echo, s);
            }
        }
        let finish = finish_reason(out.finish.unwrap_or(Finish::Length));
        choices.push(match reply.p.kind {
            Kind::Chat => json!({
                "index": c,
                "message": {"role": "assistant", "content": text},
                "logprobs": logprobs,
                "finish_reason": finish,
                "dlogp": ext,
            }),
            Kind::Completion => json!({
                "index": c,
                "text": text,
                "logprobs": logprobs,
                "finish_reason": finish,
                "dlogp": ext,
            }),
        });
    }
    let completion_tokens = outs.iter().map(|o| o.n_tokens).sum();
    axum::Json(json!({
        "id": reply.id,
        "object": reply.object(false),
        "created": reply.created,
        "model": reply.p.model,
        "choices": choices,
        "usage": reply.usage(completion_tokens),
        "dlogp": reply.config_json(),
    }))
    .into_response()
}

/// The state of one choice of a streamed reply.
#[derive(Default)]
struct ChoiceStream {
    started: bool,
    done: bool,
    fired: usize,
    positions: usize,
    text_offset: usize,
    completion_tokens: usize,
}

/// The state of a streamed reply.
struct Streaming {
    reply: Reply,
    rx: UnboundedReceiver<(usize, Event)>,
    queue: std::collections::VecDeque<SseEvent>,
    /// Whether the first chunk (with the configuration) went out.
    started: bool,
    choices: Vec<ChoiceStream>,
    left: usize,
    finished: bool,
}

impl Streaming {
    fn chunk(&mut self, choice: Value) -> SseEvent {
        let mut v = json!({
            "id": self.reply.id,
            "object": self.reply.object(true),
            "created": self.reply.created,
            "model": self.reply.p.model,
            "choices": [choice],
        });
        if !self.started {
            v["dlogp"] = self.reply.config_json();
            self.started = true;
        }
        SseEvent::default().data(v.to_string())
    }

    fn choice(
        &self,
        c: usize,
        text: &str,
        finish: Option<&str>,
        extra: Vec<(&str, Value)>,
    ) -> Value {
        let mut v = match self.reply.p.kind {
            Kind::Chat => {
                let delta = if finish.is_some() && text.is_empty() {
                    json!({})
                } else {
                    json!({"content": text})
                };
                json!({"index": c, "delta": delta, "logprobs": null, "finish_reason": finish})
            }
            Kind::Completion => {
                json!({"index": c, "text": text, "logprobs": null, "finish_reason": finish})
            }
        };
        for (k, x) in extra {
            v[k] = x;
        }
        v
    }

    /// The first chunk of choice `c`, for chat its role.
    fn start(&mut self, c: usize) {
        if self.choices[c].started {
            return;
        }
        self.choices[c].started = true;
        self.choices[c].text_offset = self.reply.p.prompt_of(c).text_len;
        if self.reply.p.kind == Kind::Chat {
            let mut first = self.choice(c, "", None, Vec::new());
            first["delta"] = json!({"role": "assistant", "content": ""});
            let e = self.chunk(first);
            self.queue.push_back(e);
        }
    }

    /// The last chunk of choice `c`.
    fn end_choice(&mut self, c: usize, finish: Finish) {
        self.start(c);
        let st = &mut self.choices[c];
        st.done = true;
        let ratio = replacement_ratio(st.fired, st.positions);
        let ext = self.reply.choice_ext(c, None, Some(ratio));
        let v = self.choice(c, "", Some(finish_reason(finish)), vec![("dlogp", ext)]);
        let e = self.chunk(v);
        self.queue.push_back(e);
    }

    /// Once every task has reported: close the choices still open (no
    /// tokens were asked for), the usage chunk, `[DONE]`.
    fn end(&mut self) {
        for c in 0..self.choices.len() {
            if !self.choices[c].done {
                self.end_choice(c, Finish::Length);
            }
        }
        if self.reply.p.include_usage {
            let total = self.choices.iter().map(|s| s.completion_tokens).sum();
            let v = json!({
                "id": self.reply.id,
                "object": self.reply.object(true),
                "created": self.reply.created,
                "model": self.reply.p.model,
                "choices": [],
                "usage": self.reply.usage(total),
            });
            self.queue
                .push_back(SseEvent::default().data(v.to_string()));
        }
        self.finish();
    }

    /// Turn an engine event into SSE events.
    fn on_event(&mut self, ev: Option<(usize, Event)>) {
        let Some((c, ev)) = ev else {
            let e = ApiError::internal("the engine stopped");
            self.queue.push_back(SseEvent::default().data(e.to_json()));
            self.finish();
            return;
        };
        let k = self.choices.len();
        if c >= k {
            // a scored prompt: echo it as the first chunk of its choices
            if let Event::Prompt(scored) = &ev {
                let n = self.reply.p.n;
                let p = c - k;
                for c in p * n..(p + 1) * n {
                    self.start(c);
                    let Some(echo) = self.reply.p.prompts[p].echo.as_ref() else {
                        continue;
                    };
                    let mut extra = vec![("logprobs", self.reply.echo_logprobs(echo, scored))];
                    if self.reply.p.trace {
                        extra.push((
                            "dlogp",
                            json!({"prompt_tokens": Reply::echo_trace(echo, scored)}),
                        ));
                    }
                    let text = echo.text.clone();
                    let v = self.choice(c, &text, None, extra);
                    let e = self.chunk(v);
                    self.queue.push_back(e);
                }
                self.left -= 1;
                if self.left == 0 {
                    self.end();
                }
                return;
            }
        }
        self.start(c);
        match ev {
            Event::Token { text, token } => {
                let st = &mut self.choices[c];
                st.positions += 1;
                st.fired += usize::from(token.gate);
                let tokens = [token];
                let mut offset = st.text_offset;
                let logprobs = self.reply.logprobs_json(&tokens, &mut offset);
                self.choices[c].text_offset = offset;
                let mut extra = vec![("logprobs", logprobs)];
                if self.reply.p.trace {
                    extra.push(("dlogp", json!({"tokens": dlogp_tokens(&tokens)})));
                }
                let v = self.choice(c, &text, None, extra);
                let e = self.chunk(v);
                self.queue.push_back(e);
            }
            Event::Done { finish, n_tokens } => {
                self.choices[c].completion_tokens = n_tokens;
                self.end_choice(c, finish);
                self.left -= 1;
                if self.left == 0 {
                    self.end();
                }
            }
            Event::Prompt(_) => {}
            Event::Error(e) => {
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

pub(super) fn stream(
    reply: Reply,
    rx: UnboundedReceiver<(usize, Event)>,
) -> Sse<impl Stream<Item = Result<SseEvent, Infallible>>> {
    let k = reply.p.choices();
    let mut left = if reply.p.max_tokens > 0 { k } else { 0 };
    if reply.p.echo {
        left += reply.p.prompts.len();
    }
    let mut state = Streaming {
        reply,
        rx,
        queue: Default::default(),
        started: false,
        choices: (0..k).map(|_| ChoiceStream::default()).collect(),
        left,
        finished: false,
    };
    if left == 0 {
        state.end();
    }
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

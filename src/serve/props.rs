//! The server's state as llama-server and vLLM clients read it: `GET
//! /props`, `GET /slots`, `GET /tokenizer_info`.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::response::{IntoResponse, Response};
use serde_json::{json, Value};

use super::error::ApiError;
use super::http::AppState;

/// The server's default generation settings in llama-server's `params`
/// shape (requests override them).
fn default_params(st: &AppState) -> Value {
    let c = &st.preset;
    json!({
        "n_predict": -1,
        "seed": c.seed(),
        "temperature": c.sampling().temperature,
        "top_k": c.sampling().top_k,
        "top_p": c.sampling().top_p,
        "max_tokens": st.limits.max_tokens,
        "n_probs": 0,
        "stream": false,
        "stop": [],
    })
}

/// `GET /tokenizer_info`: vLLM's tokenizer description, the part of it
/// that lm-evaluation-harness's `remote` tokenizer reads (`eos_token`,
/// `bos_token`, `pad_token`, `chat_template`) plus the context size; with
/// `/tokenize` and `/detokenize` it lets lm-eval tokenize with the server's
/// own vocabulary, so no tokenizer is fetched from a model hub.
pub(super) async fn tokenizer_info(State(st): State<Arc<AppState>>) -> Response {
    let model = st.pair.base();
    let (bos, eos) = model.bos_eos_texts();
    axum::Json(json!({
        "tokenizer_class": "llama.cpp",
        "bos_token": bos,
        "eos_token": eos,
        "pad_token": null,
        "add_bos_token": model.bos_text().is_some(),
        "chat_template": model.chat_template(),
        "model_max_length": st.limits.n_ctx,
        "vocab_size": model.n_vocab(),
    }))
    .into_response()
}

/// `GET /props`: llama-server's global properties (default generation
/// settings, slots, model path, chat template) plus the `dlogp` pair.
pub(super) async fn props(State(st): State<Arc<AppState>>) -> Response {
    let c = &st.preset;
    let model = st.pair.base();
    axum::Json(json!({
        "default_generation_settings": {
            "id": 0,
            "id_task": -1,
            "n_ctx": st.limits.n_ctx,
            "speculative": st.speculative,
            "is_processing": false,
            "params": default_params(&st),
        },
        "total_slots": st.parallel,
        "model_path": model.path().display().to_string(),
        "chat_template": model.chat_template().unwrap_or(""),
        "modalities": {"vision": false, "audio": false},
        "build_info": concat!("dlogp ", env!("CARGO_PKG_VERSION")),
        "is_sleeping": false,
        "dlogp": {
            "model": st.default_name,
            "rl": st.pair.rl_label(),
            "mode": c.mode(),
            "gamma": c.gamma(),
            "tau": c.gate().tau(),
            "criterion": c.gate().criterion(),
            "proposer": c.proposer(),
        },
    }))
    .into_response()
}

/// `GET /slots`: llama-server's array of slots, one per `--parallel`
/// sequence: `id`, `id_task` (the job decoding there, −1 when idle),
/// `n_ctx`, `speculative`, `is_processing`, `n_prompt_tokens`, `params`
/// (the server's defaults; a request's own settings are in its response)
/// and `next_token` (`has_next_token`, `has_new_line` (always false),
/// `n_remain`, `n_decoded`). `?fail_on_no_slot=1` answers 503 when every
/// slot is busy.
pub(super) async fn slots(State(st): State<Arc<AppState>>, RawQuery(q): RawQuery) -> Response {
    let slots = st.slots.snapshot();
    let fail_on_no_slot = q
        .as_deref()
        .is_some_and(|q| q.split('&').any(|kv| kv == "fail_on_no_slot=1"));
    if fail_on_no_slot && slots.iter().all(|s| s.task.is_some()) {
        return ApiError::no_slot().into_response();
    }
    let params = default_params(&st);
    let out: Vec<Value> = (0..)
        .zip(&slots)
        .map(|(id, s)| {
            let busy = s.task.is_some();
            json!({
                "id": id,
                "id_task": s.task.map_or(-1, |t| t as i64),
                "n_ctx": st.limits.n_ctx,
                "speculative": st.speculative,
                "is_processing": busy,
                "n_prompt_tokens": s.n_prompt,
                "params": params,
                "next_token": {
                    "has_next_token": busy,
                    "has_new_line": false,
                    "n_remain": if busy { s.max_tokens.saturating_sub(s.n_decoded) as i64 } else { -1 },
                    "n_decoded": s.n_decoded,
                },
            })
        })
        .collect();
    axum::Json(out).into_response()
}

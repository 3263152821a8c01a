//! `dlogp serve` over HTTP on loopback: the OpenAI endpoints, streaming,
//! log-probs, stop strings, configuration by model name and by body, errors,
//! cancellation, and a concurrent load whose answers equal each request
//! served alone.

use serde_json::{json, Value};

use crate::common::*;
use crate::http::{start_and_abandon, Server};

fn tiny_server(extra: &[&str]) -> Server {
    let base = fixture("tiny-llama.gguf");
    let lora = fixture("tiny-lora-random.gguf");
    let mut args = vec![
        "--base",
        p(&base),
        "--rl-lora",
        p(&lora),
        "--ctx-size",
        "256",
    ];
    args.extend_from_slice(extra);
    Server::start(&args)
}

fn ok(server: &Server, path: &str, body: &Value) -> Value {
    let r = server.post(path, body);
    assert_eq!(r.status, 200, "{path} {body}: {}", r.body);
    r.json()
}

/// The chosen token ids of a response's (or a chunk's) dlogp extension.
fn token_ids(choice: &Value) -> Vec<u64> {
    choice["dlogp"]["tokens"]
        .as_array()
        .map_or(&[][..], Vec::as_slice)
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect()
}

fn error_of(r: &crate::http::Response, status: u16) -> Value {
    assert_eq!(r.status, status, "{}", r.body);
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("application/json")),
        "{}",
        r.headers
    );
    let v = r.json();
    assert!(v["error"]["message"]
        .as_str()
        .is_some_and(|m| !m.is_empty()));
    assert!(v["error"]["type"].is_string());
    v["error"].clone()
}

#[test]
fn serve_completion_equals_generate_and_chat_works() {
    let server = tiny_server(&["--parallel", "2"]);
    // text completion: the raw prompt, as `dlogp generate --raw`
    let v = ok(
        &server,
        "/v1/completions",
        &json!({"prompt": "the answer is", "max_tokens": 12, "seed": 5, "model": "dlogp"}),
    );
    assert_eq!(v["object"], "text_completion");
    let choice = &v["choices"][0];
    let text = choice["text"].as_str().unwrap();
    assert_eq!(
        v["usage"]["completion_tokens"].as_u64().unwrap() as usize,
        {
            let ids = token_ids(choice);
            ids.len() - usize::from(choice["finish_reason"] == "stop")
        }
    );
    assert_eq!(v["dlogp"]["mode"], "extrapolate");
    assert_eq!(v["dlogp"]["tau"], -0.3);
    assert_eq!(v["dlogp"]["top_p"], 0.7);

    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("gen.jsonl");
    let (base, lora) = (fixture("tiny-llama.gguf"), fixture("tiny-lora-random.gguf"));
    let g = dlogp(&[
        "generate",
        "--base",
        p(&base),
        "--rl-lora",
        p(&lora),
        "--raw",
        "--max-tokens",
        "12",
        "--seed",
        "5",
        "--ctx-size",
        "256",
        "--quiet",
        "-o",
        p(&out),
        "the answer is",
    ]);
    assert!(g.status.success(), "{}", stderr(&g));
    let rows = read_jsonl(&out);
    assert_eq!(rows[0]["text"].as_str().unwrap(), text);

    // chat: the chat template, as `dlogp generate` with a user prompt
    let v = ok(
        &server,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "what is 2 + 2"}], "max_tokens": 10, "seed": 2}),
    );
    assert_eq!(v["object"], "chat.completion");
    let msg = &v["choices"][0]["message"];
    assert_eq!(msg["role"], "assistant");
    let g = dlogp(&[
        "generate",
        "--base",
        p(&base),
        "--rl-lora",
        p(&lora),
        "--max-tokens",
        "10",
        "--seed",
        "2",
        "--ctx-size",
        "256",
        "--quiet",
        "-o",
        p(&out),
        "what is 2 + 2",
    ]);
    assert!(g.status.success(), "{}", stderr(&g));
    assert_eq!(read_jsonl(&out)[0]["text"], msg["content"]);
    // content given as parts is the same prompt
    let parts = ok(
        &server,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": [{"type": "text", "text": "what is 2 + 2"}]}], "max_tokens": 10, "seed": 2}),
    );
    assert_eq!(parts["choices"][0]["message"], *msg);

    // /v1/models lists the configurations, and they all work
    let models = server.request("GET", "/v1/models", None).json();
    let ids: Vec<&str> = models["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    for want in [
        "dlogp",
        "extrapolate",
        "replace",
        "base",
        "rl",
        "extrapolate:gamma=0.1:tau=-0.3",
    ] {
        assert!(ids.contains(&want), "{ids:?}");
    }
    let one = server.request("GET", "/v1/models/replace:tau=-1", None);
    assert_eq!(one.status, 200, "{}", one.body);
    assert_eq!(one.json()["id"], "replace:tau=-1");
    error_of(&server.request("GET", "/v1/models/gpt-4", None), 404);
    for id in ids {
        let v = ok(
            &server,
            "/v1/completions",
            &json!({"prompt": "e t e", "max_tokens": 3, "seed": 1, "model": id}),
        );
        assert_eq!(v["model"], id);
    }
}

#[test]
fn serve_streaming_equals_non_streaming() {
    let server = tiny_server(&["--parallel", "2"]);
    for (path, body) in [
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "the answer"}], "max_tokens": 16, "seed": 11, "logprobs": true, "top_logprobs": 2}),
        ),
        (
            "/v1/completions",
            json!({"prompt": "a tea at", "max_tokens": 16, "seed": 4, "logprobs": 2}),
        ),
    ] {
        let full = ok(&server, path, &body);
        let mut sbody = body.clone();
        sbody["stream"] = json!(true);
        sbody["stream_options"] = json!({"include_usage": true});
        let r = server.post(path, &sbody);
        assert_eq!(r.status, 200, "{}", r.body);
        assert!(r
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/event-stream")));
        let data = r.sse_data();
        assert_eq!(
            data.last().map(String::as_str),
            Some("[DONE]"),
            "{}",
            r.body
        );
        let chunks: Vec<Value> = data[..data.len() - 1]
            .iter()
            .map(|d| serde_json::from_str(d).unwrap())
            .collect();
        let chat = path.contains("chat");
        let mut text = String::new();
        let mut ids = Vec::new();
        let mut lps = Vec::new();
        let mut finish = Value::Null;
        for c in &chunks {
            if let Some(choice) = c["choices"].as_array().and_then(|a| a.first()) {
                let piece = if chat {
                    choice["delta"]["content"].as_str()
                } else {
                    choice["text"].as_str()
                };
                text.push_str(piece.unwrap_or(""));
                ids.extend(token_ids(choice));
                if chat {
                    if let Some(content) = choice["logprobs"]["content"].as_array() {
                        lps.extend(content.iter().map(|e| e["logprob"].as_f64().unwrap()));
                    }
                } else if let Some(l) = choice["logprobs"]["token_logprobs"].as_array() {
                    lps.extend(l.iter().map(|x| x.as_f64().unwrap()));
                }
                if !choice["finish_reason"].is_null() {
                    finish = choice["finish_reason"].clone();
                }
            }
        }
        if chat {
            assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
            assert_eq!(chunks[0]["object"], "chat.completion.chunk");
        }
        let fc = &full["choices"][0];
        let full_text = if chat {
            fc["message"]["content"].as_str().unwrap()
        } else {
            fc["text"].as_str().unwrap()
        };
        assert_eq!(text, full_text, "{path}");
        assert_eq!(ids, token_ids(fc), "{path}");
        assert_eq!(finish, fc["finish_reason"]);
        let full_lps: Vec<f64> = if chat {
            fc["logprobs"]["content"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e["logprob"].as_f64().unwrap())
                .collect()
        } else {
            fc["logprobs"]["token_logprobs"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap())
                .collect()
        };
        assert_eq!(lps, full_lps);
        // the usage chunk comes last, with no choices
        let usage = chunks.last().unwrap();
        assert_eq!(usage["choices"].as_array().unwrap().len(), 0);
        assert_eq!(usage["usage"], full["usage"]);
    }
}

#[test]
fn serve_logprobs_match_the_sampling_distribution() {
    let server = tiny_server(&[]);
    // base alone: the token is drawn from the base model, so its log-prob
    // is the base model's, and the dlogp extension reports both models
    for (model, side) in [("base", "logprob_base"), ("rl", "logprob_rl")] {
        let v = ok(
            &server,
            "/v1/chat/completions",
            &json!({"model": model, "messages": [{"role": "user", "content": "hi"}],
                    "max_tokens": 12, "seed": 3, "logprobs": true, "top_logprobs": 3}),
        );
        let choice = &v["choices"][0];
        let content = choice["logprobs"]["content"].as_array().unwrap();
        let ext = choice["dlogp"]["tokens"].as_array().unwrap();
        assert!(!content.is_empty());
        for (e, t) in content.iter().zip(ext) {
            let lp = e["logprob"].as_f64().unwrap();
            assert!(lp <= 0.0);
            assert!((lp - t[side].as_f64().unwrap()).abs() < 1e-9, "{e} {t}");
            let d = t["logprob_rl"].as_f64().unwrap() - t["logprob_base"].as_f64().unwrap();
            assert!((d - t["dlogp"].as_f64().unwrap()).abs() < 1e-9);
            assert_eq!(t["gate"], false);
            let top = e["top_logprobs"].as_array().unwrap();
            assert_eq!(top.len(), 3);
            let tl: Vec<f64> = top.iter().map(|a| a["logprob"].as_f64().unwrap()).collect();
            assert!(tl.windows(2).all(|w| w[0] >= w[1]), "{tl:?}");
            assert!(lp <= tl[0] + 1e-12);
            if let Some(same) = top.iter().find(|a| a["token"] == e["token"]) {
                assert!((same["logprob"].as_f64().unwrap() - lp).abs() < 1e-12);
            }
            assert_eq!(
                e["bytes"].as_array().unwrap().len(),
                e["token"]
                    .as_str()
                    .unwrap()
                    .len()
                    .min(e["bytes"].as_array().unwrap().len())
            );
        }
    }
    // without logprobs: null
    let v = ok(
        &server,
        "/v1/completions",
        &json!({"prompt": "a", "max_tokens": 2, "seed": 1}),
    );
    assert!(v["choices"][0]["logprobs"].is_null());
}

#[test]
fn serve_stop_strings_cut_the_text() {
    let server = tiny_server(&[]);
    let body = json!({"prompt": "the answer is", "max_tokens": 40, "seed": 8, "model": "rl"});
    let free = ok(&server, "/v1/completions", &body);
    let text = free["choices"][0]["text"].as_str().unwrap().to_string();
    let chars: Vec<char> = text.chars().collect();
    assert!(chars.len() >= 8, "{text:?}");
    let stop: String = chars[4..6].iter().collect();
    let cut = &text[..text.find(&stop).unwrap()];
    for stream in [false, true] {
        let mut b = body.clone();
        b["stop"] = json!([stop, "never-appears"]);
        b["stream"] = json!(stream);
        let r = server.post("/v1/completions", &b);
        assert_eq!(r.status, 200);
        let (got, finish) = if stream {
            let mut t = String::new();
            let mut f = Value::Null;
            for d in r.sse_data().iter().filter(|d| *d != "[DONE]") {
                let c: Value = serde_json::from_str(d).unwrap();
                t.push_str(c["choices"][0]["text"].as_str().unwrap_or(""));
                if !c["choices"][0]["finish_reason"].is_null() {
                    f = c["choices"][0]["finish_reason"].clone();
                }
            }
            (t, f)
        } else {
            let v = r.json();
            (
                v["choices"][0]["text"].as_str().unwrap().to_string(),
                v["choices"][0]["finish_reason"].clone(),
            )
        };
        assert_eq!(got, cut, "stream {stream}");
        assert_eq!(finish, "stop");
    }
    // a single string works too
    let mut b = body.clone();
    b["stop"] = json!(stop);
    let v = ok(&server, "/v1/completions", &b);
    assert_eq!(v["choices"][0]["text"], cut);
}

#[test]
fn serve_model_names_and_body_configure_decoding() {
    let server = tiny_server(&[]);
    let ask = |extra: Value| {
        let mut b = json!({"prompt": "e t e", "max_tokens": 24, "seed": 21});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        ok(&server, "/v1/completions", &b)
    };
    let by_name = ask(json!({"model": "replace:tau=-0.5:gamma=0.3"}));
    assert_eq!(by_name["dlogp"]["mode"], "replace");
    assert_eq!(by_name["dlogp"]["tau"], -0.5);
    assert_eq!(by_name["dlogp"]["gamma"], 0.3);
    let by_body = ask(json!({"dlogp": {"mode": "replace", "tau": -0.5, "gamma": 0.3}}));
    assert_eq!(
        token_ids(&by_name["choices"][0]),
        token_ids(&by_body["choices"][0])
    );
    assert_eq!(by_name["choices"][0]["text"], by_body["choices"][0]["text"]);
    // the body overrides the name
    let both = ask(json!({"model": "base", "dlogp": {"mode": "rl"}}));
    assert_eq!(both["dlogp"]["mode"], "rl");
    // replace: where the gate fired, Δlog p ≤ τ; elsewhere it did not
    let fired: Vec<&Value> = by_name["choices"][0]["dlogp"]["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .collect();
    for t in &fired {
        let d = t["dlogp"].as_f64().unwrap();
        assert_eq!(t["gate"].as_bool().unwrap(), d <= -0.5, "{t}");
    }
    // base mode never gates, and proposals are kept
    let base = ask(json!({"model": "base"}));
    for t in base["choices"][0]["dlogp"]["tokens"].as_array().unwrap() {
        assert_eq!(t["gate"], false);
        assert_eq!(t["proposed"], t["id"]);
    }
    // the generation with the server's default equals the explicit default
    let a = ask(json!({"model": "dlogp"}));
    let b = ask(json!({"model": "extrapolate:gamma=0.1:tau=-0.3"}));
    assert_eq!(token_ids(&a["choices"][0]), token_ids(&b["choices"][0]));
    // temperature 0 is greedy: two seeds, one answer
    let g1 = ask(json!({"temperature": 0, "seed": 1, "model": "rl"}));
    let g2 = ask(json!({"temperature": 0, "seed": 2, "model": "rl"}));
    assert_eq!(g1["choices"][0]["text"], g2["choices"][0]["text"]);
}

#[test]
fn serve_rejects_bad_requests_with_json_errors() {
    let server = tiny_server(&[
        "--max-prompt-tokens",
        "40",
        "--max-body-bytes",
        "4000",
        "--max-tokens-limit",
        "64",
    ]);
    let chat = "/v1/chat/completions";
    let msgs = json!([{"role": "user", "content": "hi"}]);
    // malformed JSON
    let e = error_of(&server.request("POST", chat, Some("{\"messages\": [")), 400);
    assert_eq!(e["type"], "invalid_request_error");
    let e = error_of(&server.request("POST", chat, Some("")), 400);
    assert!(e["message"].as_str().unwrap().contains("JSON"));
    // missing field, wrong type
    error_of(&server.post(chat, &json!({"model": "dlogp"})), 400);
    error_of(&server.post(chat, &json!({"messages": "hi"})), 400);
    // unknown model
    let e = error_of(
        &server.post(chat, &json!({"messages": msgs, "model": "gpt-4o"})),
        404,
    );
    assert_eq!(e["code"], "model_not_found");
    error_of(
        &server.post(
            chat,
            &json!({"messages": msgs, "model": "extrapolate:warp=9"}),
        ),
        404,
    );
    // invalid parameters name the field
    for (field, value, param) in [
        ("temperature", json!(-1), "temperature"),
        ("top_p", json!(0), "top_p"),
        ("max_tokens", json!(0), "max_tokens"),
        ("max_tokens", json!(65), "max_tokens"),
        ("top_logprobs", json!(50), "top_logprobs"),
        ("stop", json!(["a", ""]), "stop"),
        ("seed", json!(1.5), "seed"),
    ] {
        let mut b = json!({"messages": msgs, "logprobs": true});
        b[field] = value.clone();
        let e = error_of(&server.post(chat, &b), 400);
        assert_eq!(e["param"], param, "{field} = {value}: {e}");
    }
    // the dlogp object: an unknown mode, an unknown key, a negative gamma
    error_of(
        &server.post(
            chat,
            &json!({"messages": msgs, "dlogp": {"mode": "sideways"}}),
        ),
        400,
    );
    error_of(
        &server.post(chat, &json!({"messages": msgs, "dlogp": {"gama": 1}})),
        400,
    );
    error_of(
        &server.post(chat, &json!({"messages": msgs, "dlogp": {"gamma": -1}})),
        400,
    );
    // an over-long prompt
    let long = "e t e a ".repeat(30);
    let e = error_of(
        &server.post("/v1/completions", &json!({"prompt": long})),
        400,
    );
    assert_eq!(e["code"], "context_length_exceeded");
    let e = error_of(
        &server.post(
            chat,
            &json!({"messages": [{"role": "user", "content": long}]}),
        ),
        400,
    );
    assert_eq!(e["code"], "context_length_exceeded");
    // token ids outside the vocabulary
    error_of(
        &server.post("/v1/completions", &json!({"prompt": [1, 2, 99999]})),
        400,
    );
    // a body over the limit
    let huge = json!({"prompt": "a".repeat(5000)});
    error_of(&server.post("/v1/completions", &huge), 413);
    // unknown route, wrong method
    error_of(&server.request("GET", "/v1/nothing", None), 404);
    error_of(&server.request("GET", chat, None), 405);
    // and the server still answers
    ok(
        &server,
        chat,
        &json!({"messages": msgs, "max_tokens": 2, "seed": 0}),
    );
}

#[test]
fn serve_trace_opt_out_and_unsupported_fields() {
    let server = tiny_server(&[]);
    let body = json!({"prompt": "the answer is", "max_tokens": 16, "seed": 6});
    let with = ok(&server, "/v1/completions", &body);
    let mut b = body.clone();
    b["dlogp"] = json!({"trace": false, "mode": "extrapolate"});
    let without = ok(&server, "/v1/completions", &b);
    let (cw, co) = (&with["choices"][0], &without["choices"][0]);
    assert_eq!(cw["text"], co["text"]);
    assert!(cw["dlogp"]["tokens"].is_array());
    assert!(co["dlogp"].get("tokens").is_none(), "{co}");
    assert_eq!(
        co["dlogp"]["replacement_ratio"],
        cw["dlogp"]["replacement_ratio"]
    );
    // streamed: no chunk carries a trace, the text is the same
    b["stream"] = json!(true);
    let r = server.post("/v1/completions", &b);
    assert_eq!(r.status, 200);
    let mut text = String::new();
    for d in r.sse_data().iter().filter(|d| *d != "[DONE]") {
        let c: Value = serde_json::from_str(d).unwrap();
        let choice = &c["choices"][0];
        assert!(choice["dlogp"].get("tokens").is_none(), "{c}");
        text.push_str(choice["text"].as_str().unwrap_or(""));
    }
    assert_eq!(text, cw["text"].as_str().unwrap());

    let chat = "/v1/chat/completions";
    let msgs = json!([{"role": "user", "content": "hi"}]);
    for (field, value, param) in [
        ("dlogp", json!({"trace": "no"}), "dlogp.trace"),
        ("dlogp", json!({"gama": 1}), "dlogp"),
        ("dlogp", json!(3), "dlogp"),
        (
            "tools",
            json!([{"type": "function", "function": {"name": "f", "parameters": {}}}]),
            "tools",
        ),
        ("tool_choice", json!("required"), "tool_choice"),
        (
            "response_format",
            json!({"type": "json_object"}),
            "response_format",
        ),
        ("presence_penalty", json!(0.5), "presence_penalty"),
        ("frequency_penalty", json!(1), "frequency_penalty"),
        ("logit_bias", json!({"99999": 1}), "logit_bias"),
        ("logit_bias", json!({"1": 101}), "logit_bias"),
        ("logit_bias", json!({"one": 1}), "logit_bias"),
        ("logit_bias", json!([1, 2]), "logit_bias"),
    ] {
        let mut b = json!({"messages": msgs, "max_tokens": 2});
        b[field] = value.clone();
        let e = error_of(&server.post(chat, &b), 400);
        assert_eq!(e["param"], param, "{field} = {value}: {e}");
    }
    let e = error_of(
        &server.post("/v1/completions", &json!({"prompt": "a", "suffix": "b"})),
        400,
    );
    assert_eq!(e["param"], "suffix");
    // what frontends send by default passes
    ok(
        &server,
        chat,
        &json!({"messages": msgs, "max_tokens": 2, "tools": [], "tool_choice": "none",
                "response_format": {"type": "text"}, "presence_penalty": 0,
                "frequency_penalty": 0, "logit_bias": {}, "user": "u", "dlogp": null}),
    );
}

#[test]
fn serve_logit_bias_moves_proposals_and_resampling() {
    let server = tiny_server(&[]);
    let ask = |model: &str, bias: Value| {
        ok(
            &server,
            "/v1/completions",
            &json!({"prompt": "the answer is", "max_tokens": 6, "seed": 2, "model": model,
                    "temperature": 0, "logprobs": 2, "logit_bias": bias}),
        )
    };
    let free = ask("rl", json!(null));
    let c = &free["choices"][0];
    let first = token_ids(c)[0];
    let top = c["logprobs"]["top_logprobs"][0]
        .as_object()
        .unwrap()
        .clone();
    let mut top: Vec<(String, f64)> = top
        .into_iter()
        .map(|(k, v)| (k, v.as_f64().unwrap()))
        .collect();
    top.sort_by(|a, b| b.1.total_cmp(&a.1));
    assert_eq!(
        top[0].1,
        c["logprobs"]["token_logprobs"][0].as_f64().unwrap()
    );
    // banning the greedy first token: the greedy choice is the runner-up,
    // its reported log-prob is under the biased distribution, renormalised,
    // and the trace keeps the model's own log-prob
    let banned = ask("rl", json!({ first.to_string(): -100 }));
    let b = &banned["choices"][0];
    assert_ne!(token_ids(b)[0], first);
    assert_eq!(b["logprobs"]["tokens"][0].as_str().unwrap(), top[1].0);
    let (lp0, lp1) = (top[0].1, top[1].1);
    let want = lp1 - (1.0 - lp0.exp() + (lp0 - 100.0).exp()).ln();
    let got = b["logprobs"]["token_logprobs"][0].as_f64().unwrap();
    assert!((got - want).abs() < 1e-9, "{got} vs {want}");
    assert!((b["dlogp"]["tokens"][0]["logprob_rl"].as_f64().unwrap() - lp1).abs() < 1e-12);
    // llama-server's list form with `false` is the same ban
    let listed = ask("rl", json!([[first, false]]));
    assert_eq!(token_ids(&listed["choices"][0]), token_ids(b));
    // the re-sampling distribution is biased too: replace with the `always`
    // gate re-samples every token from π_RL, so it equals biased `rl`
    let replaced = ask(
        "replace:criterion=always",
        json!({ first.to_string(): -100 }),
    );
    let r = &replaced["choices"][0];
    assert!(r["dlogp"]["tokens"][0]["gate"].as_bool().unwrap());
    assert_eq!(r["text"], b["text"]);
    assert_ne!(token_ids(r)[0], first);
}

#[test]
fn serve_cors_like_llama_server() {
    use crate::http::request_with;
    let server = tiny_server(&[]);
    let site = "http://localhost:3000";
    // a browser preflight: answered, not 405, with the requested headers allowed
    let pre = request_with(
        server.addr,
        "OPTIONS",
        "/v1/chat/completions",
        &[
            ("Origin", site),
            ("Access-Control-Request-Method", "POST"),
            (
                "Access-Control-Request-Headers",
                "content-type, authorization",
            ),
        ],
        None,
    )
    .unwrap();
    assert_eq!(pre.status, 204, "{}", pre.headers);
    assert_eq!(pre.header("access-control-allow-origin"), Some(site));
    assert!(pre
        .header("access-control-allow-methods")
        .is_some_and(|m| m.contains("POST") && m.contains("GET")));
    assert_eq!(
        pre.header("access-control-allow-headers"),
        Some("content-type, authorization")
    );
    // the answer itself carries the origin, errors too; no Origin, no header
    let body = json!({"prompt": "a", "max_tokens": 1, "seed": 0}).to_string();
    let r = request_with(
        server.addr,
        "POST",
        "/v1/completions",
        &[("Origin", site)],
        Some(&body),
    )
    .unwrap();
    assert_eq!(r.status, 200);
    assert_eq!(r.header("access-control-allow-origin"), Some(site));
    let r = request_with(server.addr, "GET", "/nothing", &[("Origin", site)], None).unwrap();
    assert_eq!(
        (r.status, r.header("access-control-allow-origin")),
        (404, Some(site))
    );
    assert!(server
        .request("GET", "/v1/models", None)
        .header("access-control-allow-origin")
        .is_none());
    // --cors-origin restricts
    let only = tiny_server(&["--cors-origin", site]);
    let other = "http://evil.example";
    let pre = request_with(
        only.addr,
        "OPTIONS",
        "/v1/completions",
        &[("Origin", other)],
        None,
    )
    .unwrap();
    assert_eq!(pre.status, 403);
    assert!(pre.header("access-control-allow-origin").is_none());
    let r = request_with(
        only.addr,
        "POST",
        "/v1/completions",
        &[("Origin", other)],
        Some(&body),
    )
    .unwrap();
    assert!(
        r.header("access-control-allow-origin").is_none(),
        "{}",
        r.headers
    );
    let r = request_with(
        only.addr,
        "POST",
        "/v1/completions",
        &[("Origin", site)],
        Some(&body),
    )
    .unwrap();
    assert_eq!(r.header("access-control-allow-origin"), Some(site));
    // a malformed origin is a start-up error naming the flag
    let (base, lora) = (fixture("tiny-llama.gguf"), fixture("tiny-lora-random.gguf"));
    let out = dlogp(&[
        "serve",
        "--base",
        p(&base),
        "--rl-lora",
        p(&lora),
        "--port",
        "0",
        "--cors-origin",
        "localhost:3000",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--cors-origin"), "{}", stderr(&out));
}

/// (text, token ids) of each choice of a streamed answer, by index.
fn streamed_choices(r: &crate::http::Response, k: usize) -> Vec<(String, Vec<u64>)> {
    assert_eq!(r.status, 200, "{}", r.body);
    let data = r.sse_data();
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let mut out = vec![(String::new(), Vec::new()); k];
    for d in &data[..data.len() - 1] {
        let c: Value = serde_json::from_str(d).unwrap();
        assert!(c.get("error").is_none(), "{c}");
        for choice in c["choices"].as_array().unwrap() {
            let i = choice["index"].as_u64().unwrap() as usize;
            let piece = choice["delta"]["content"]
                .as_str()
                .or(choice["text"].as_str())
                .unwrap_or("");
            out[i].0.push_str(piece);
            out[i].1.extend(token_ids(choice));
        }
    }
    out
}

fn text_of(choice: &Value) -> String {
    choice["text"]
        .as_str()
        .or(choice["message"]["content"].as_str())
        .unwrap()
        .to_string()
}

#[test]
fn serve_n_choices_are_keyed_draws_and_prompt_lists() {
    let server = tiny_server(&["--parallel", "2"]);
    // choice i of n = 3 is the same request with n = 1 and seed S + i
    for (path, body) in [
        (
            "/v1/completions",
            json!({"prompt": "the answer is", "max_tokens": 12, "seed": 40, "logprobs": 1}),
        ),
        (
            "/v1/chat/completions",
            json!({"messages": [{"role": "user", "content": "what is 2 + 2"}], "max_tokens": 12, "seed": 40}),
        ),
    ] {
        let mut b = body.clone();
        b["n"] = json!(3);
        let many = ok(&server, path, &b);
        let choices = many["choices"].as_array().unwrap();
        assert_eq!(choices.len(), 3);
        let mut total = 0;
        for (i, c) in choices.iter().enumerate() {
            assert_eq!(c["index"], i);
            assert_eq!(c["dlogp"]["seed"], 40 + i as u64);
            let mut one = body.clone();
            one["seed"] = json!(40 + i as u64);
            let alone = ok(&server, path, &one);
            let a = &alone["choices"][0];
            assert_eq!(text_of(c), text_of(a), "{path} choice {i}");
            assert_eq!(token_ids(c), token_ids(a), "{path} choice {i}");
            assert_eq!(c["logprobs"], a["logprobs"]);
            total += alone["usage"]["completion_tokens"].as_u64().unwrap();
        }
        // different seeds: not all choices the same
        assert!(choices
            .iter()
            .any(|c| token_ids(c) != token_ids(&choices[0])));
        assert_eq!(many["usage"]["completion_tokens"], total);
        assert_eq!(
            many["usage"]["prompt_tokens"],
            ok(&server, path, &body)["usage"]["prompt_tokens"]
        );
        // streamed: the same choices, by index
        b["stream"] = json!(true);
        let streamed = streamed_choices(&server.post(path, &b), 3);
        for (i, c) in choices.iter().enumerate() {
            assert_eq!(
                streamed[i],
                (text_of(c), token_ids(c)),
                "{path} streamed choice {i}"
            );
        }
    }
    // a list of prompts × n: choice p·n + i is prompt p with seed S + i
    let prompts = ["the answer is", "e t e"];
    let many = ok(
        &server,
        "/v1/completions",
        &json!({"prompt": prompts, "n": 2, "max_tokens": 8, "seed": 7}),
    );
    let choices = many["choices"].as_array().unwrap();
    assert_eq!(choices.len(), 4);
    let mut prompt_tokens = 0;
    for (k, c) in choices.iter().enumerate() {
        let (pi, i) = (k / 2, k % 2);
        let alone = ok(
            &server,
            "/v1/completions",
            &json!({"prompt": prompts[pi], "max_tokens": 8, "seed": 7 + i}),
        );
        assert_eq!(token_ids(c), token_ids(&alone["choices"][0]), "choice {k}");
        assert_eq!(c["text"], alone["choices"][0]["text"]);
        if i == 0 {
            prompt_tokens += alone["usage"]["prompt_tokens"].as_u64().unwrap();
        }
    }
    assert_eq!(many["usage"]["prompt_tokens"], prompt_tokens);
    // token-id lists work as a batch too
    let ids = ok(
        &server,
        "/v1/completions",
        &json!({"prompt": [[1, 2, 3], [4, 5]], "max_tokens": 2, "seed": 1}),
    );
    assert_eq!(ids["choices"].as_array().unwrap().len(), 2);
    // text_offset continues after the prompt (OpenAI's convention)
    let v = ok(
        &server,
        "/v1/completions",
        &json!({"prompt": "the answer is", "max_tokens": 6, "seed": 3, "logprobs": 0}),
    );
    let lp = &v["choices"][0]["logprobs"];
    let offsets: Vec<u64> = lp["text_offset"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap())
        .collect();
    assert_eq!(offsets[0], "the answer is".len() as u64, "{lp}");
    // offsets are bytes of the text; a token that is part of a character
    // shows as U+FFFD but counts its own bytes
    for (j, t) in lp["tokens"].as_array().unwrap().iter().enumerate().skip(1) {
        let prev = lp["tokens"][j - 1].as_str().unwrap();
        if !prev.contains('\u{fffd}') {
            assert_eq!(offsets[j], offsets[j - 1] + prev.len() as u64, "{t}");
        }
        assert!(offsets[j] > offsets[j - 1]);
    }
    let text_len = v["choices"][0]["text"].as_str().unwrap().len() as u64;
    assert!(*offsets.last().unwrap() < offsets[0] + text_len.max(1));
    // bad values name the field
    for (field, value) in [("n", json!(0)), ("n", json!(17)), ("best_of", json!(3))] {
        let mut b = json!({"prompt": "a", "max_tokens": 2});
        b[field] = value.clone();
        let e = error_of(&server.post("/v1/completions", &b), 400);
        assert_eq!(e["param"], field, "{field} = {value}");
    }
    let e = error_of(&server.post("/v1/completions", &json!({"prompt": []})), 400);
    assert_eq!(e["param"], "prompt");
    let e = error_of(
        &server.post(
            "/v1/completions",
            &json!({"prompt": [[1], []], "max_tokens": 1}),
        ),
        400,
    );
    assert_eq!(e["param"], "prompt");
}

#[test]
fn serve_echo_scores_the_prompt_as_dlogp_score_does() {
    let server = tiny_server(&[]);
    let dir = tempfile::tempdir().unwrap();
    let (base, lora) = (fixture("tiny-llama.gguf"), fixture("tiny-lora-random.gguf"));
    let (prompt, response) = ("the answer is", " 1 + 2 = 3 and the answer is 3");
    // the prompt's token ids, from an echo of its text
    let v = ok(
        &server,
        "/v1/completions",
        &json!({"prompt": prompt, "echo": true, "max_tokens": 0, "logprobs": 0}),
    );
    let c = &v["choices"][0];
    assert_eq!(c["finish_reason"], "length");
    assert_eq!(v["usage"]["completion_tokens"], 0);
    let prompt_ids: Vec<u64> = c["dlogp"]["prompt_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_u64().unwrap())
        .collect();
    assert_eq!(
        prompt_ids.len() as u64,
        v["usage"]["prompt_tokens"].as_u64().unwrap()
    );
    assert!(c["logprobs"]["token_logprobs"][0].is_null());
    // dlogp score of (prompt, response), token for token
    let rows = write_rows(
        dir.path(),
        "rows.jsonl",
        &[json!({"prompt": prompt, "response": response})],
    );
    let records = score(
        dir.path(),
        &[
            "--base",
            p(&base),
            "--rl-lora",
            p(&lora),
            "--raw",
            "--input",
            p(&rows),
        ],
    );
    let mut ids = prompt_ids.clone();
    ids.extend(records.iter().map(|r| r["token"].as_u64().unwrap()));
    for (model, key) in [
        ("dlogp", "logp_rl"),
        ("replace", "logp_rl"),
        ("base", "logp_base"),
    ] {
        let v = ok(
            &server,
            "/v1/completions",
            &json!({"prompt": ids, "echo": true, "max_tokens": 0, "logprobs": 2, "model": model}),
        );
        let c = &v["choices"][0];
        let lps = c["logprobs"]["token_logprobs"].as_array().unwrap();
        assert_eq!(lps.len(), ids.len());
        let trace = c["dlogp"]["prompt_tokens"].as_array().unwrap();
        for (j, r) in records.iter().enumerate() {
            let at = prompt_ids.len() + j;
            assert_eq!(lps[at].as_f64().unwrap(), f(r, key), "{model} token {j}");
            assert_eq!(trace[at]["logprob_rl"].as_f64().unwrap(), f(r, "logp_rl"));
            assert_eq!(
                trace[at]["logprob_base"].as_f64().unwrap(),
                f(r, "logp_base")
            );
            assert_eq!(trace[at]["dlogp"].as_f64().unwrap(), f(r, "dlogp"));
            // two alternatives, fewer keys only when their texts collide
            // (byte tokens shown as U+FFFD), the best at least the token's
            let top = c["logprobs"]["top_logprobs"][at].as_object().unwrap();
            assert!((1..=2).contains(&top.len()), "{top:?}");
            let best = top
                .values()
                .map(|x| x.as_f64().unwrap())
                .fold(f64::MIN, f64::max);
            assert!(best >= lps[at].as_f64().unwrap());
        }
        // offsets of the echoed tokens start at 0 and add up to the echoed text
        let offs = c["logprobs"]["text_offset"].as_array().unwrap();
        assert_eq!(offs[0], 0);
        assert!(offs.windows(2).all(|w| w[0].as_u64() <= w[1].as_u64()));
    }
    // echo with generation: the echoed prompt, then exactly the answer of
    // the same request without echo, offsets continuing after the prompt
    let body = json!({"prompt": prompt, "max_tokens": 6, "seed": 9, "logprobs": 1});
    let plain = ok(&server, "/v1/completions", &body);
    let mut b = body.clone();
    b["echo"] = json!(true);
    let echoed = ok(&server, "/v1/completions", &b);
    let echo_only = ok(
        &server,
        "/v1/completions",
        &json!({"prompt": prompt, "echo": true, "max_tokens": 0}),
    );
    let echo_text = echo_only["choices"][0]["text"]
        .as_str()
        .unwrap()
        .to_string();
    let (pc, ec) = (&plain["choices"][0], &echoed["choices"][0]);
    assert_eq!(
        ec["text"].as_str().unwrap(),
        format!("{echo_text}{}", pc["text"].as_str().unwrap())
    );
    assert_eq!(token_ids(ec), token_ids(pc));
    let n_prompt = prompt_ids.len();
    let elp = ec["logprobs"]["token_logprobs"].as_array().unwrap();
    assert_eq!(
        &elp[n_prompt..],
        pc["logprobs"]["token_logprobs"]
            .as_array()
            .unwrap()
            .as_slice()
    );
    let eoff = ec["logprobs"]["text_offset"].as_array().unwrap();
    assert_eq!(eoff[n_prompt].as_u64().unwrap(), echo_text.len() as u64);
    // streamed echo: the same text
    b["stream"] = json!(true);
    let streamed = streamed_choices(&server.post("/v1/completions", &b), 1);
    assert_eq!(streamed[0].0, ec["text"].as_str().unwrap());
    let mut b0 = json!({"prompt": prompt, "echo": true, "max_tokens": 0, "stream": true});
    let streamed = streamed_choices(&server.post("/v1/completions", &b0), 1);
    assert_eq!(streamed[0].0, echo_text);
    // max_tokens 0 without echo: an empty completion; chat still needs 1
    b0["echo"] = json!(false);
    b0["stream"] = json!(false);
    let v = ok(&server, "/v1/completions", &b0);
    assert_eq!(v["choices"][0]["text"], "");
    let e = error_of(
        &server.post(
            "/v1/chat/completions",
            &json!({"messages": [{"role": "user", "content": "hi"}], "max_tokens": 0}),
        ),
        400,
    );
    assert_eq!(e["param"], "max_tokens");
}

#[test]
fn serve_llama_server_native_endpoints() {
    let server = tiny_server(&["--parallel", "3"]);
    let prompt = "the answer is";
    // /completion decodes as /v1/completions with the same prompt and seed
    let oai = ok(
        &server,
        "/v1/completions",
        &json!({"prompt": prompt, "max_tokens": 12, "seed": 5, "logprobs": 2}),
    );
    let oc = &oai["choices"][0];
    let native = ok(
        &server,
        "/completion",
        &json!({"prompt": prompt, "n_predict": 12, "seed": 5, "n_probs": 2, "return_tokens": true,
                // what the llama.cpp web UI sends by default is accepted
                "min_p": 0.05, "repeat_penalty": 1.0, "typical_p": 1, "dry_multiplier": 0,
                "xtc_probability": 0, "cache_prompt": true, "samplers": ["top_k", "top_p"],
                "timings_per_token": false}),
    );
    assert_eq!(native["content"], oc["text"]);
    assert_eq!(native["stop"], true);
    let ids: Vec<u64> = token_ids(oc)
        .into_iter()
        .take(native["tokens_predicted"].as_u64().unwrap() as usize)
        .collect();
    let got: Vec<u64> = native["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap())
        .collect();
    assert_eq!(got, ids);
    assert_eq!(
        native["tokens_predicted"],
        oai["usage"]["completion_tokens"]
    );
    assert_eq!(native["tokens_evaluated"], oai["usage"]["prompt_tokens"]);
    let want_stop = if oc["finish_reason"] == "length" {
        "limit"
    } else {
        "eos"
    };
    assert_eq!(native["stop_type"], want_stop);
    let probs = native["completion_probabilities"].as_array().unwrap();
    let lps = oc["logprobs"]["token_logprobs"].as_array().unwrap();
    assert_eq!(probs.len(), lps.len());
    for (p, lp) in probs.iter().zip(lps) {
        assert_eq!(&p["logprob"], lp);
        let top = p["top_logprobs"].as_array().unwrap();
        assert_eq!(top.len(), 2);
        assert!(top[0]["logprob"].as_f64() >= top[1]["logprob"].as_f64());
        assert!(top[0]["id"].is_u64() && top[0]["bytes"].is_array());
    }
    assert_eq!(native["generation_settings"]["n_ctx"], 256);
    assert_eq!(native["dlogp"]["seed"], 5);
    // streamed: the contents add up, the last object has stop: true, no [DONE]
    let r = server.post(
        "/completion",
        &json!({"prompt": prompt, "n_predict": 12, "seed": 5, "stream": true}),
    );
    assert_eq!(r.status, 200);
    let data = r.sse_data();
    let objs: Vec<Value> = data
        .iter()
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    let text: String = objs
        .iter()
        .map(|o| o["content"].as_str().unwrap_or(""))
        .collect();
    let last = objs.last().unwrap();
    assert_eq!(last["stop"], true);
    assert!(objs[..objs.len() - 1].iter().all(|o| o["stop"] == false));
    assert_eq!(text, oc["text"].as_str().unwrap());
    // n_predict 0 generates nothing
    let none = ok(
        &server,
        "/completion",
        &json!({"prompt": prompt, "n_predict": 0}),
    );
    assert_eq!(
        (none["content"].as_str(), none["tokens_predicted"].as_u64()),
        (Some(""), Some(0))
    );

    // /tokenize and /detokenize agree with the prompt the server decodes
    let echo = ok(
        &server,
        "/v1/completions",
        &json!({"prompt": prompt, "echo": true, "max_tokens": 0}),
    );
    let echo_ids: Vec<Value> = echo["choices"][0]["dlogp"]["prompt_tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].clone())
        .collect();
    let tok = ok(
        &server,
        "/tokenize",
        &json!({"content": prompt, "add_special": true}),
    );
    assert_eq!(tok["tokens"].as_array().unwrap(), &echo_ids);
    let plain = ok(&server, "/tokenize", &json!({"content": prompt}));
    let pieces = ok(
        &server,
        "/tokenize",
        &json!({"content": prompt, "with_pieces": true}),
    );
    let pt = pieces["tokens"].as_array().unwrap();
    assert_eq!(pt.len(), plain["tokens"].as_array().unwrap().len());
    for (a, b) in pt.iter().zip(plain["tokens"].as_array().unwrap()) {
        assert_eq!(&a["id"], b);
        assert!(a["piece"].is_string() || a["piece"].is_array());
    }
    let de = ok(&server, "/detokenize", &json!({"tokens": echo_ids}));
    assert_eq!(de["content"], echo["choices"][0]["text"]);
    // /props: llama-server's names
    let props = server.request("GET", "/props", None).json();
    assert_eq!(props["total_slots"], 3);
    assert_eq!(props["default_generation_settings"]["n_ctx"], 256);
    assert!(props["model_path"]
        .as_str()
        .unwrap()
        .ends_with("tiny-llama.gguf"));
    assert!(props["chat_template"].is_string());
    assert_eq!(props["default_generation_settings"]["params"]["top_p"], 0.7);
    assert_eq!(
        server.request("GET", "/v1/health", None).json()["status"],
        "ok"
    );
    // bad values name the field
    for (body, param) in [
        (json!({"prompt": "a", "n_predict": -2}), "n_predict"),
        (json!({"prompt": "a", "n_predict": 100000}), "n_predict"),
        (json!({"prompt": "a", "n_probs": 50}), "n_probs"),
        (json!({"prompt": "a", "mirostat": 2}), "mirostat"),
        (
            json!({"prompt": "a", "repeat_penalty": 1.1}),
            "repeat_penalty",
        ),
        (
            json!({"prompt": "a", "grammar": "root ::= \"x\""}),
            "grammar",
        ),
        (json!({"prompt": "a", "ignore_eos": true}), "ignore_eos"),
        (json!({"prompt": ["a", "b"]}), "prompt"),
        (json!({"prompt": [1, 99999]}), "prompt"),
        (
            json!({"prompt": "a", "logit_bias": [[99999, 1]]}),
            "logit_bias",
        ),
    ] {
        let e = error_of(&server.post("/completion", &body), 400);
        assert_eq!(e["param"], param, "{body}");
    }
    let e = error_of(
        &server.post("/detokenize", &json!({"tokens": [99999]})),
        400,
    );
    assert_eq!(e["param"], "tokens");
    let e = error_of(
        &server.post(
            "/tokenize",
            &json!({"content": "a", "parse_special": false}),
        ),
        400,
    );
    assert_eq!(e["param"], "parse_special");
    error_of(&server.post("/tokenize", &json!({"text": "a"})), 400);
}

/// `GET /slots`: one slot per `--parallel` sequence with the configured
/// context; while a generation runs exactly one is busy, with its prompt's
/// length and `n_decoded + n_remain` equal to its `max_tokens`; afterwards
/// all are idle again.
#[test]
fn serve_slots_show_each_sequence() {
    let server = tiny_server(&["--parallel", "3"]);
    let slots = |q: &str| {
        let r = server.request("GET", &format!("/slots{q}"), None);
        assert_eq!(r.status, 200, "{}", r.body);
        r.json().as_array().unwrap().clone()
    };
    let idle = slots("");
    let ids: Vec<&Value> = idle.iter().map(|s| &s["id"]).collect();
    assert_eq!(ids, [&json!(0), &json!(1), &json!(2)]);
    for s in &idle {
        assert_eq!(
            (&s["n_ctx"], &s["is_processing"], &s["id_task"]),
            (&json!(256), &json!(false), &json!(-1)),
            "{s}"
        );
        assert_eq!(s["speculative"], false);
    }
    let prompt = "the answer is";
    // the tiny fixture adds BOS to a text prompt
    let n_prompt = ok(
        &server,
        "/tokenize",
        &json!({"content": prompt, "add_special": true}),
    )["tokens"]
        .as_array()
        .unwrap()
        .len();
    let addr = server.addr;
    let mut seen = None;
    for _attempt in 0..20 {
        let holder = std::thread::spawn(move || {
            let body = json!({"prompt": prompt, "max_tokens": 250, "seed": 1, "model": "rl"});
            crate::http::request(addr, "POST", "/v1/completions", Some(&body.to_string()))
        });
        while !holder.is_finished() {
            let now = slots("?fail_on_no_slot=1");
            if now.iter().any(|s| s["is_processing"] == true) {
                seen = Some(now);
                break;
            }
        }
        let held = holder.join().unwrap().unwrap();
        assert_eq!(held.status, 200, "{}", held.body);
        if seen.is_some() {
            break;
        }
    }
    let busy = seen.expect("no slot was seen busy during a generation");
    let running: Vec<&Value> = busy.iter().filter(|s| s["is_processing"] == true).collect();
    assert_eq!(running.len(), 1, "{busy:?}");
    let s = running[0];
    assert_eq!(s["id"], 0, "the lowest free slot");
    assert!(s["id_task"].as_i64().unwrap() >= 0, "{s}");
    assert_eq!(s["n_prompt_tokens"], n_prompt);
    let next = &s["next_token"];
    assert_eq!(next["has_next_token"], true);
    assert_eq!(
        next["n_decoded"].as_u64().unwrap() + next["n_remain"].as_u64().unwrap(),
        250,
        "{s}"
    );
    // done: every slot idle again
    for s in slots("") {
        assert_eq!(
            (&s["is_processing"], &s["id_task"]),
            (&json!(false), &json!(-1)),
            "{s}"
        );
    }
    // one slot, busy: `?fail_on_no_slot=1` is a 503, plain `/slots` is not
    let one = tiny_server(&["--parallel", "1"]);
    let addr = one.addr;
    let mut refused = None;
    for _attempt in 0..20 {
        let holder = std::thread::spawn(move || {
            let body = json!({"prompt": prompt, "max_tokens": 250, "seed": 1, "model": "rl"});
            crate::http::request(addr, "POST", "/v1/completions", Some(&body.to_string()))
        });
        while !holder.is_finished() {
            let r = one.request("GET", "/slots?fail_on_no_slot=1", None);
            if r.status == 503 {
                refused = Some((r, one.request("GET", "/slots", None)));
                break;
            }
            assert_eq!(r.status, 200, "{}", r.body);
        }
        assert_eq!(holder.join().unwrap().unwrap().status, 200);
        if refused.is_some() {
            break;
        }
    }
    let (r, plain) = refused.expect("the only slot was never seen busy");
    assert_eq!(error_of(&r, 503)["code"], "no_slot_available");
    assert_eq!(plain.status, 200);
    assert_eq!(
        one.request("GET", "/slots?fail_on_no_slot=1", None).status,
        200
    );
}

/// vLLM's tokenizer endpoints, as lm-evaluation-harness's `remote`
/// tokenizer calls them: `/tokenize` with `prompt` and `add_special_tokens`
/// is `/tokenize` with `content` and `add_special`, `/detokenize` answers
/// the text as `prompt` too, and `/tokenizer_info` names the vocabulary's
/// special tokens: its BOS, and an EOS that ends a generation.
#[test]
fn serve_vllm_tokenizer_endpoints_for_lm_eval() {
    let server = tiny_server(&[]);
    let text = "the answer is 3";
    for special in [false, true] {
        let llama = ok(
            &server,
            "/tokenize",
            &json!({"content": text, "add_special": special}),
        );
        let vllm = ok(
            &server,
            "/tokenize",
            &json!({"prompt": text, "add_special_tokens": special}),
        );
        assert_eq!(llama, vllm);
    }
    let ids = ok(&server, "/tokenize", &json!({ "content": text }))["tokens"].clone();
    let back = ok(&server, "/detokenize", &json!({ "tokens": ids }));
    // (the tiny fixture's SentencePiece vocabulary gives a leading space)
    assert_eq!(back["content"].as_str().map(str::trim_start), Some(text));
    assert_eq!(back["prompt"], back["content"]);
    let info = server.request("GET", "/tokenizer_info", None);
    assert_eq!(info.status, 200, "{}", info.body);
    let info = info.json();
    assert_eq!(info["model_max_length"], 256);
    let props = server.request("GET", "/props", None).json();
    assert_eq!(info["chat_template"], props["chat_template"]);
    let bos = info["bos_token"].as_str().expect("a bos_token");
    let with_bos = ok(
        &server,
        "/tokenize",
        &json!({"content": text, "add_special": true}),
    )["tokens"]
        .clone();
    let bos_ids = ok(&server, "/tokenize", &json!({ "content": bos }))["tokens"].clone();
    assert_eq!(with_bos[0], bos_ids[0], "BOS is {bos}");
    let eos = info["eos_token"].as_str().expect("an eos_token");
    let eos_ids = ok(&server, "/tokenize", &json!({ "prompt": eos }))["tokens"].clone();
    assert_eq!(eos_ids.as_array().unwrap().len(), 1, "{eos} is one token");
    // and it ends a generation: pushed to the top, it is the first and last token
    let eos_id = eos_ids[0].as_u64().unwrap();
    let v = ok(
        &server,
        "/v1/completions",
        &json!({"prompt": text, "max_tokens": 5, "seed": 0, "logit_bias": {eos_id.to_string(): 100}}),
    );
    assert_eq!(v["choices"][0]["finish_reason"], "stop", "{v}");
    let trace = &v["choices"][0]["dlogp"]["tokens"];
    assert_eq!(
        (&trace[0]["id"], &trace[0]["eog"]),
        (&json!(eos_id), &json!(true)),
        "{v}"
    );
}

#[test]
fn serve_disconnect_cancels_and_frees_the_sequence() {
    let base = smollm2();
    let dir = tempfile::tempdir().unwrap();
    let lora = smollm2_lora(
        dir.path(),
        "lora.gguf",
        &[
            "--rank", "4", "--init", "random", "--std", "0.02", "--seed", "1",
        ],
    );
    // one sequence, no queue: a second request is refused while one runs
    let server = Server::start(&[
        "--base",
        p(&base),
        "--rl-lora",
        p(&lora),
        "--ctx-size",
        "2048",
        "--parallel",
        "1",
        "--queue",
        "0",
    ]);
    let body = json!({"messages": [{"role": "user", "content": "Count from 1 to 1000, separated by commas."}],
                      "max_tokens": 2000, "seed": 0, "stream": true, "temperature": 0});
    let got = start_and_abandon(server.addr, "/v1/chat/completions", &body.to_string(), 600);
    assert!(got.contains("data: "), "{got}");
    let t0 = std::time::Instant::now();
    loop {
        let h = server.request("GET", "/health", None).json();
        if h["cancelled"] == 1 {
            assert_eq!(h["completed"], 0);
            assert_eq!(h["requests"], 0);
            break;
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(30),
            "not cancelled: {h}"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    // the sequence is free again
    let v = ok(
        &server,
        "/v1/chat/completions",
        &json!({"messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4, "seed": 0}),
    );
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() <= 4);
}

#[test]
fn serve_queue_full_is_503() {
    let server = tiny_server(&["--parallel", "1", "--queue", "0"]);
    let addr = server.addr;
    let mut refused = None;
    for _attempt in 0..20 {
        // hold the only place with a long generation
        let holder = std::thread::spawn(move || {
            let body = json!({"prompt": "the", "max_tokens": 250, "seed": 1, "stream": true, "model": "rl"});
            crate::http::request(addr, "POST", "/v1/completions", Some(&body.to_string()))
        });
        while server.request("GET", "/health", None).json()["requests"] == 0
            && !holder.is_finished()
        {
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        let probe = server.post(
            "/v1/completions",
            &json!({"prompt": "a", "max_tokens": 1, "seed": 0}),
        );
        let held = holder.join().unwrap().unwrap();
        assert_eq!(held.status, 200, "{}", held.body);
        match probe.status {
            503 => {
                refused = Some(probe);
                break;
            }
            200 => {} // the holder was already done
            s => panic!("status {s}: {}", probe.body),
        }
    }
    let r = refused.expect("no request was refused while the only sequence was busy");
    let e = error_of(&r, 503);
    assert_eq!(e["code"], "server_busy");
    assert_eq!(r.header("retry-after"), Some("1"));
    // and afterwards the place is free again
    ok(
        &server,
        "/v1/completions",
        &json!({"prompt": "a", "max_tokens": 1, "seed": 0}),
    );
}

/// The load test: 32 streaming clients at once, mixed configurations; every
/// answer equals the same request served alone, and memory stays bounded.
#[test]
fn serve_load_32_streaming_clients_equal_alone() {
    // --draft 4: iterations alternate between speculative (all running jobs
    // gate base proposals) and lockstep (a base/rl/global job is running)
    let server = tiny_server(&["--parallel", "4", "--queue", "64", "--draft", "4"]);
    let models = [
        "dlogp",
        "replace:tau=-0.2",
        "base",
        "rl",
        "extrapolate:gamma=0.5:tau=-0.1",
    ];
    let bodies: Vec<Value> = (0..32)
        .map(|i| {
            let mut b = if i % 2 == 0 {
                json!({"messages": [{"role": "user", "content": format!("what is {i} + 2")}]})
            } else {
                json!({"prompt": format!("the answer is {i}")})
            };
            b["model"] = json!(models[i % models.len()]);
            b["seed"] = json!(i as u64 * 7 + 1);
            b["max_tokens"] = json!(8 + (i * 5) % 40);
            b["stream"] = json!(true);
            b
        })
        .collect();
    let path = |b: &Value| {
        if b.get("messages").is_some() {
            "/v1/chat/completions"
        } else {
            "/v1/completions"
        }
    };
    // (text, token ids) of a streamed answer
    let collect = |r: crate::http::Response| -> (String, Vec<u64>) {
        assert_eq!(r.status, 200, "{}", r.body);
        let data = r.sse_data();
        assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
        let mut text = String::new();
        let mut ids = Vec::new();
        for d in &data[..data.len() - 1] {
            let c: Value = serde_json::from_str(d).unwrap();
            assert!(c.get("error").is_none(), "{c}");
            if let Some(choice) = c["choices"].as_array().and_then(|a| a.first()) {
                let piece = choice["delta"]["content"]
                    .as_str()
                    .or(choice["text"].as_str())
                    .unwrap_or("");
                text.push_str(piece);
                ids.extend(token_ids(choice));
            }
        }
        (text, ids)
    };
    let rss_start = server.rss();
    let mut peak = rss_start;
    let mut rounds = Vec::new();
    for _round in 0..2 {
        let addr = server.addr;
        let handles: Vec<_> = bodies
            .iter()
            .cloned()
            .map(|b| {
                std::thread::spawn(move || {
                    crate::http::request(addr, "POST", path(&b), Some(&b.to_string()))
                })
            })
            .collect();
        while !handles.iter().all(|h| h.is_finished()) {
            peak = peak.max(server.rss());
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let answers: Vec<(String, Vec<u64>)> = handles
            .into_iter()
            .map(|h| collect(h.join().unwrap().expect("no failed request")))
            .collect();
        rounds.push((answers, server.rss()));
    }
    // each alone, one after the other
    for (i, b) in bodies.iter().enumerate() {
        let alone = collect(server.post(path(b), b));
        assert!(!alone.1.is_empty());
        assert_eq!(
            rounds[0].0[i], alone,
            "request {i} ({}) differs when served alone",
            b["model"]
        );
        assert_eq!(rounds[1].0[i], alone, "request {i}, second round");
    }
    let h = server.request("GET", "/health", None).json();
    assert_eq!(h["completed"], 96);
    assert_eq!(h["requests"], 0);
    // memory: bounded, and a second round adds nothing substantial
    assert!(peak < 512 << 20, "peak RSS {} MiB", peak >> 20);
    let (after1, after2) = (rounds[0].1, rounds[1].1);
    assert!(
        after2 < after1 + (16 << 20),
        "RSS grew from {} to {} MiB between identical rounds",
        after1 >> 20,
        after2 >> 20
    );
}

#[test]
fn serve_cli_errors_are_clear() {
    let base = fixture("tiny-llama.gguf");
    // no RL side
    let out = dlogp(&["serve", "--base", p(&base), "--port", "0"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("needs a pair"), "{}", stderr(&out));
    // a port in use
    let server = tiny_server(&[]);
    let port = server.addr.port().to_string();
    let lora = fixture("tiny-lora-random.gguf");
    let out = dlogp(&[
        "serve",
        "--base",
        p(&base),
        "--rl-lora",
        p(&lora),
        "--host",
        "127.0.0.1",
        "--port",
        &port,
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("could not listen on 127.0.0.1:{port}")),
        "{}",
        stderr(&out)
    );
    // invalid defaults die at start-up, naming the flag
    let out = dlogp(&[
        "serve",
        "--base",
        p(&base),
        "--rl-lora",
        p(&lora),
        "--port",
        "0",
        "--top-p",
        "2",
    ]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("top"), "{}", stderr(&out));
    let out = dlogp(&[
        "serve",
        "--base",
        p(&base),
        "--rl-lora",
        p(&lora),
        "--port",
        "0",
        "--parallel",
        "0",
    ]);
    assert!(stderr(&out).contains("--parallel"), "{}", stderr(&out));
}

//! Real clients against `dlogp serve` on loopback: the official `openai`
//! Python SDK (from the venv scripts/client-venv.sh makes under the cache
//! dir) and lm-evaluation-harness (scripts/lm-eval-venv.sh). Every answer
//! a client gets must equal the server's raw answer to the same request
//! (and lm-eval's log-likelihoods `dlogp score`'s); a machine without a
//! venv prints `SKIPPED:` with why.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};

use crate::common::*;
use crate::http::Server;

/// The python of the venv `name` under the cache dir if it can import
/// `module`, or why not (`script` makes it).
fn venv_python(name: &str, module: &str, script: &str) -> Result<PathBuf, String> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .ok_or("neither XDG_CACHE_HOME nor HOME is set")?;
    let py = cache.join("dlogp").join(name).join("bin/python");
    let ok = Command::new(&py)
        .args(["-c", &format!("import {module}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Ok(py)
    } else {
        Err(format!(
            "{} cannot import {module}; run {script} (scripts/test.sh does)",
            py.display()
        ))
    }
}

/// The venv's python with `openai` importable, or why not.
fn client_python() -> Result<PathBuf, String> {
    venv_python("serve-clients-venv", "openai", "scripts/client-venv.sh")
}

const SCRIPT: &str = r#"
import json, sys
from openai import OpenAI
c = OpenAI(base_url=sys.argv[1] + "/v1", api_key="unused", max_retries=0)
msgs = [{"role": "user", "content": "what is 2 + 2"}]
out = {}
r = c.chat.completions.create(model="dlogp", messages=msgs, max_tokens=12, seed=3)
out["chat"] = r.choices[0].message.content
out["chat_ext_seed"] = r.model_extra["dlogp"]["seed"]
s = c.chat.completions.create(model="dlogp", messages=msgs, max_tokens=12, seed=3, stream=True)
out["stream"] = "".join((ch.choices[0].delta.content or "") for ch in s if ch.choices)
r = c.chat.completions.create(model="rl", messages=msgs, max_tokens=8, seed=4,
                              logprobs=True, top_logprobs=2)
out["logprobs"] = [t.logprob for t in r.choices[0].logprobs.content]
r = c.chat.completions.create(model="dlogp", messages=msgs, max_tokens=12, seed=3, n=2)
out["n2"] = [ch.message.content for ch in sorted(r.choices, key=lambda ch: ch.index)]
r = c.completions.create(model="dlogp", prompt=["the answer is", "e t e"], max_tokens=6, seed=4)
out["batch"] = [ch.text for ch in sorted(r.choices, key=lambda ch: ch.index)]
r = c.completions.create(model="dlogp", prompt="the answer is 3", max_tokens=0, echo=True,
                         logprobs=1, extra_body={"dlogp": {"trace": False}})
out["echo"] = r.choices[0].text
out["echo_logprobs"] = r.choices[0].logprobs.token_logprobs
out["models"] = sorted(m.id for m in c.models.list().data)
try:
    c.chat.completions.create(model="dlogp", messages=msgs, max_tokens=2,
                              response_format={"type": "json_object"})
    out["refused"] = None
except Exception as e:
    out["refused"] = [getattr(e, "status_code", None), (getattr(e, "body", None) or {}).get("param")]
print(json.dumps(out))
"#;

#[test]
fn clients_openai_sdk_gets_the_servers_answers() {
    let py = match client_python() {
        Ok(p) => p,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let (base, lora) = (fixture("tiny-llama.gguf"), fixture("tiny-lora-random.gguf"));
    let server = Server::start(&[
        "--base",
        p(&base),
        "--rl-lora",
        p(&lora),
        "--ctx-size",
        "256",
        "--parallel",
        "2",
    ]);
    let url = format!("http://{}", server.addr);
    let run = Command::new(&py)
        .args(["-c", SCRIPT, &url])
        .output()
        .expect("python runs");
    assert!(
        run.status.success(),
        "the SDK script failed: {}\n{}",
        String::from_utf8_lossy(&run.stderr),
        server.log()
    );
    let got: Value = serde_json::from_slice(&run.stdout).expect("the script prints JSON");
    let raw = |path: &str, body: Value| {
        let r = server.post(path, &body);
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()
    };
    let msgs = json!([{"role": "user", "content": "what is 2 + 2"}]);
    let chat = raw(
        "/v1/chat/completions",
        json!({"model": "dlogp", "messages": msgs, "max_tokens": 12, "seed": 3}),
    );
    let content = &chat["choices"][0]["message"]["content"];
    assert_eq!(&got["chat"], content);
    assert_eq!(got["chat_ext_seed"], 3);
    assert_eq!(&got["stream"], content);
    let lp = raw(
        "/v1/chat/completions",
        json!({"model": "rl", "messages": msgs, "max_tokens": 8, "seed": 4, "logprobs": true, "top_logprobs": 2}),
    );
    let want: Vec<Value> = lp["choices"][0]["logprobs"]["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["logprob"].clone())
        .collect();
    assert_eq!(got["logprobs"].as_array().unwrap(), &want);
    // n = 2: choice i is the request with seed 3 + i
    for i in 0..2 {
        let one = raw(
            "/v1/chat/completions",
            json!({"model": "dlogp", "messages": msgs, "max_tokens": 12, "seed": 3 + i}),
        );
        assert_eq!(
            got["n2"][i as usize],
            one["choices"][0]["message"]["content"]
        );
    }
    for (i, prompt) in ["the answer is", "e t e"].iter().enumerate() {
        let one = raw(
            "/v1/completions",
            json!({"model": "dlogp", "prompt": prompt, "max_tokens": 6, "seed": 4}),
        );
        assert_eq!(got["batch"][i], one["choices"][0]["text"]);
    }
    let echo = raw(
        "/v1/completions",
        json!({"model": "dlogp", "prompt": "the answer is 3", "max_tokens": 0, "echo": true, "logprobs": 1}),
    );
    assert_eq!(got["echo"], echo["choices"][0]["text"]);
    assert_eq!(
        got["echo_logprobs"],
        echo["choices"][0]["logprobs"]["token_logprobs"]
    );
    assert!(got["echo_logprobs"][0].is_null());
    let models: Vec<&str> = got["models"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap())
        .collect();
    assert!(
        models.contains(&"dlogp") && models.contains(&"rl"),
        "{models:?}"
    );
    assert_eq!(got["refused"], json!([400, "response_format"]));
}

/// lm-evaluation-harness's `local-completions` model on the default pair,
/// with the server's own tokenizer (`tokenizer_backend=remote`), on two
/// tasks over local sums (tests/python/lm_eval_run.py writes and runs
/// them). Each log-likelihood lm-eval records must be the sum of `dlogp
/// score`'s `logp_rl` over the continuation's tokens (the echo path scores
/// under π_RL in the default `extrapolate` mode), its `acc` must follow
/// from those sums, and each generated answer must be the server's answer
/// to the same request sent directly with the same seed, through
/// `local-completions` and `local-chat-completions` alike.
#[test]
fn clients_lm_eval_harness_matches_score_and_direct_requests() {
    let py = match venv_python(
        "lm-eval-venv",
        "lm_eval.models.openai_completions",
        "scripts/lm-eval-venv.sh",
    ) {
        Ok(p) => p,
        Err(why) => {
            eprintln!("SKIPPED: {why}");
            return;
        }
    };
    let base = smollm2();
    let lora = root().join("gguf/SmolLM2-135M-Instruct.arith-lowprob.gguf");
    let server = Server::start(&[
        "--base",
        p(&base),
        "--rl-lora",
        p(&lora),
        "--ctx-size",
        "512",
        "--parallel",
        "2",
    ]);
    let dir = tempfile::tempdir().unwrap();
    let (limit, seed) = (6, 7);
    let t0 = std::time::Instant::now();
    let run = Command::new(&py)
        .arg(root().join("tests/python/lm_eval_run.py"))
        .args([
            &format!("http://{}", server.addr),
            p(dir.path()),
            &limit.to_string(),
            &seed.to_string(),
        ])
        .output()
        .expect("python runs");
    assert!(
        run.status.success(),
        "lm_eval failed: {}\n{}",
        String::from_utf8_lossy(&run.stderr),
        server.log()
    );
    eprintln!("lm_eval ran in {:.1} s", t0.elapsed().as_secs_f64());
    let got: Value = serde_json::from_slice(&run.stdout).expect("the script prints JSON");
    eprintln!("{}", got["table"].as_str().unwrap_or_default());

    // Log-likelihoods: lm-eval's against `dlogp score` on the same text.
    let lls = got["loglikelihood"].as_array().unwrap();
    assert_eq!(lls.len(), limit * 3, "three choices per document");
    let rows: Vec<Value> = lls
        .iter()
        .enumerate()
        .map(|(k, c)| json!({"id": k, "prompt": c["context"], "response": c["continuation"]}))
        .collect();
    let input = write_rows(dir.path(), "choices.jsonl", &rows);
    let records = score(
        dir.path(),
        &[
            "--base",
            p(&base),
            "--rl-lora",
            p(&lora),
            "--input",
            p(&input),
            "--raw",
            "--threads",
            "2",
        ],
    );
    let tokenize = |text: &str| -> Vec<Value> {
        let r = server.post("/tokenize", &json!({ "content": text }));
        assert_eq!(r.status, 200, "{}", r.body);
        r.json()["tokens"].as_array().unwrap().clone()
    };
    let mut worst: f64 = 0.0;
    let mut sums = Vec::new();
    for (k, c) in lls.iter().enumerate() {
        let mine: Vec<&Value> = records.iter().filter(|r| r["id"] == k).collect();
        // lm-eval's continuation tokens: the whole text's after the context's
        let (context, continuation) = (
            c["context"].as_str().unwrap(),
            c["continuation"].as_str().unwrap(),
        );
        let whole = tokenize(&format!("{context}{continuation}"));
        let n_context = tokenize(context).len();
        let theirs = &whole[n_context..];
        let ids: Vec<&Value> = mine.iter().map(|r| &r["token"]).collect();
        assert_eq!(
            ids,
            theirs.iter().collect::<Vec<_>>(),
            "the same continuation tokens for {c}"
        );
        let sum: f64 = mine.iter().map(|r| f(r, "logp_rl")).sum();
        let ll = c["loglikelihood"].as_f64().unwrap();
        worst = worst.max((ll - sum).abs());
        // f64 sums of the same f64 log-probs, which JSON round-trips exactly;
        // the margin covers the scorer's batch shape (the server scores one
        // prompt alone, `dlogp score` eight rows side by side)
        assert!(
            (ll - sum).abs() < 1e-6,
            "lm-eval {ll} vs dlogp score {sum} for {c}"
        );
        sums.push(sum);
    }
    eprintln!("max |lm-eval log-likelihood − Σ score logp_rl| = {worst:e}");
    let correct = sums
        .chunks(3)
        .filter(|s| s[0] > s[1] && s[0] > s[2])
        .count();
    let acc = got["results"]["dlogp_sum_mc"]["acc,none"].as_f64().unwrap();
    assert!(
        (acc - correct as f64 / limit as f64).abs() < 1e-12,
        "acc {acc} vs {correct}/{limit}"
    );

    // Generations: lm-eval's against the same requests sent directly.
    let gens = got["generate"].as_array().unwrap();
    assert_eq!(gens.len(), limit);
    let eos = server.request("GET", "/tokenizer_info", None).json()["eos_token"].clone();
    let mut differs_by_seed = 0;
    for g in gens {
        let kw = &g["gen_kwargs"];
        let body = |seed: u64| {
            json!({"model": "dlogp", "prompt": g["context"], "max_tokens": kw["max_gen_toks"],
                   "temperature": kw["temperature"], "stop": [kw["until"][0], eos], "seed": seed})
        };
        let r = server.post("/v1/completions", &body(seed));
        assert_eq!(r.status, 200, "{}", r.body);
        let direct = &r.json()["choices"][0]["text"];
        assert_eq!(
            &g["response"], direct,
            "lm-eval's answer to {}",
            g["context"]
        );
        let other = server.post("/v1/completions", &body(seed + 1)).json();
        differs_by_seed += usize::from(&other["choices"][0]["text"] != direct);
    }
    // temperature 1: the seed lm-eval passed is the one that decided
    assert!(differs_by_seed > 0, "no answer depends on the seed");

    // The chat path: lm-eval sends the messages (the server applies the
    // chat template) with `until` as `stop` (no EOS string without a
    // tokenizer).
    eprintln!("{}", got["chat_table"].as_str().unwrap_or_default());
    let chats = got["chat_generate"].as_array().unwrap();
    assert_eq!(chats.len(), limit);
    for g in chats {
        let kw = &g["gen_kwargs"];
        let r = server.post(
            "/v1/chat/completions",
            &json!({"model": "dlogp", "messages": g["messages"], "max_tokens": kw["max_gen_toks"],
                    "temperature": kw["temperature"], "stop": kw["until"], "seed": seed}),
        );
        assert_eq!(r.status, 200, "{}", r.body);
        assert_eq!(
            &g["response"],
            &r.json()["choices"][0]["message"]["content"],
            "lm-eval's chat answer to {}",
            g["messages"]
        );
    }
}

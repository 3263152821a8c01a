//! Real clients against `dlogp serve` on loopback: the official `openai`
//! Python SDK (from the venv scripts/client-venv.sh makes under the cache
//! dir). Every answer the SDK gets must equal the server's raw answer to
//! the same request; a machine without the venv prints why and skips.

use std::path::PathBuf;
use std::process::Command;

use serde_json::{json, Value};

use crate::common::*;
use crate::http::Server;

/// The venv's python with `openai` importable, or why not.
fn client_python() -> Result<PathBuf, String> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
        .ok_or("neither XDG_CACHE_HOME nor HOME is set")?;
    let py = cache.join("dlogp/serve-clients-venv/bin/python");
    let ok = Command::new(&py)
        .args(["-c", "import openai"])
        .output()
        .is_ok_and(|o| o.status.success());
    if ok {
        Ok(py)
    } else {
        Err(format!(
            "{} cannot import openai; run scripts/client-venv.sh (scripts/test.sh does)",
            py.display()
        ))
    }
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
            eprintln!("skipped: {why}");
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

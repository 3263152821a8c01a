use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dlogp::decode::{DecodeConfig, Mode, Proposer};
use dlogp::runtime::{ContextOptions, LoadOptions, ModelPair, PairSpec, RlSource};
use dlogp::sampler::{Criterion, Gate, SamplingParams};
use serde_json::Value;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(name: &str) -> PathBuf {
    let path = root().join("gguf").join(name);
    assert!(
        path.exists(),
        "{} is missing; regenerate with `dlogp fixtures --out gguf`",
        path.display()
    );
    path
}

/// The real default model. Its absence is a failure, not a skip: the test
/// set-up (scripts/test.sh) fetches it.
pub fn smollm2() -> PathBuf {
    let path = root().join("gguf/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        path.exists(),
        "{} is missing; run scripts/fetch-model.sh",
        path.display()
    );
    path
}

pub fn dlogp(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dlogp"))
        .args(args)
        .env("DLOGP_LOG", "warn")
        .output()
        .expect("the dlogp binary runs")
}

pub fn p(path: &Path) -> &str {
    path.to_str().expect("utf-8 path")
}

pub fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Run `dlogp score` with these extra arguments into a file in `dir`, and
/// return the parsed token records; panics with stderr on failure.
pub fn score(dir: &Path, args: &[&str]) -> Vec<Value> {
    let out_path = dir.join(format!("tokens-{}.jsonl", unique()));
    let mut all: Vec<&str> = vec!["score", "--quiet", "--output", p(&out_path)];
    all.extend_from_slice(args);
    let out = dlogp(&all);
    assert!(out.status.success(), "dlogp score failed: {}", stderr(&out));
    read_jsonl(&out_path)
}

pub fn read_jsonl(path: &Path) -> Vec<Value> {
    std::fs::read_to_string(path)
        .expect("output exists")
        .lines()
        .map(|l| serde_json::from_str(l).expect("valid JSON line"))
        .collect()
}

pub fn write_rows(dir: &Path, name: &str, rows: &[Value]) -> PathBuf {
    let path = dir.join(name);
    let text: String = rows.iter().map(|r| format!("{r}\n")).collect();
    std::fs::write(&path, text).unwrap();
    path
}

pub fn unique() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

pub fn f(v: &Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .unwrap_or_else(|| panic!("{key} is a number in {v}"))
}

/// Rows for the tiny fixtures: plain text over their small vocabulary.
pub fn tiny_rows() -> Vec<Value> {
    vec![
        serde_json::json!({"id": "a", "prompt": "the answer is", "response": " 1 + 2 = 3 and the answer is 3"}),
        serde_json::json!({"prompt": "e t e", "response": "a tea at the eat"}),
        serde_json::json!({"id": 7, "messages": [
            {"role": "user", "content": "what is 2 + 2"},
            {"role": "assistant", "content": "the answer is 4"}
        ]}),
    ]
}

/// `dlogp lora-init` for SmolLM2 into `dir/name`, with these extra flags.
pub fn smollm2_lora(dir: &Path, name: &str, flags: &[&str]) -> PathBuf {
    let path = dir.join(name);
    let base = smollm2();
    let mut args = vec!["lora-init", "--base", p(&base), "--out", p(&path)];
    args.extend_from_slice(flags);
    let out = dlogp(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    path
}

/// A SmolLM2 adapter strong enough that the dlogp gate fires on a fair share
/// of tokens (rank 8, random, std 0.08, seed 3) in `dir/lora.gguf`.
pub fn strong_lora(dir: &Path) -> PathBuf {
    smollm2_lora(
        dir,
        "lora.gguf",
        &[
            "--rank",
            "8",
            "--targets",
            "attn_q,attn_v,ffn_up,ffn_down",
            "--init",
            "random",
            "--std",
            "0.08",
            "--seed",
            "3",
        ],
    )
}

/// A decoding configuration at the paper's sampling settings (T 1, top-p 0.7).
pub fn decode_config(
    mode: Mode,
    proposer: Proposer,
    criterion: Criterion,
    tau: f64,
    gamma: f64,
    seed: u64,
) -> DecodeConfig {
    let sampling = SamplingParams {
        temperature: 1.0,
        top_k: 0,
        top_p: 0.7,
    };
    DecodeConfig::new(
        mode,
        proposer,
        Gate::new(criterion, tau).unwrap(),
        gamma,
        sampling,
        seed,
    )
    .unwrap()
}

pub fn load_pair(base: &Path, rl: RlSource) -> ModelPair {
    let spec = PairSpec {
        base: base.to_path_buf(),
        rl,
    };
    ModelPair::load(&spec, &LoadOptions::default()).unwrap()
}

/// One sequence, 512 tokens: the plain reference evaluation's context.
pub const PLAIN_CONTEXT: ContextOptions = ContextOptions {
    n_ctx: 512,
    n_batch: 512,
    n_seq: 1,
    threads: 2,
    flash_attention: false,
};

/// `None` where this backend is batch-invariant, so an exactness test
/// asserts bit-equality; otherwise why it cannot (printed by the test,
/// which then checks nothing: scripts/gpu-checks.sh holds such a backend
/// to its promise). A CPU build is not probed: it is batch-invariant by
/// construction, and `probe::cpu_backend_is_batch_invariant` checks that.
pub fn batch_dependence(pair: &ModelPair) -> Option<String> {
    if !dlogp::runtime::has_offload_device().unwrap() {
        return None;
    }
    let probe = dlogp::runtime::batch_invariance(
        pair,
        &dlogp::runtime::ProbeOptions {
            threads: 2,
            flash_attention: false,
        },
    )
    .unwrap();
    (!probe.invariant).then(|| {
        format!(
            "SKIPPED exact comparison: this GPU backend's logits depend on the batch (max |Δ| {:e}); {}",
            probe.max_abs_diff,
            probe.speculative_promise()
        )
    })
}

//! `dlogp probe`: the devices and the batch-invariance probe that decides
//! what speculative decoding promises.

use serde_json::Value;

use crate::common::*;

fn probe(args: &[&str]) -> Value {
    let mut all = vec!["probe"];
    all.extend_from_slice(args);
    let out = dlogp(&all);
    assert!(out.status.success(), "dlogp probe failed: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("one JSON object")
}

/// The CPU build (llamafile GEMM off, flash attention off) gives every
/// token the same logits alone and inside batches, on both sides of a pair.
#[test]
fn cpu_backend_is_batch_invariant() {
    if dlogp::runtime::has_offload_device().unwrap() {
        eprintln!("SKIPPED: a GPU device is present; scripts/gpu-checks.sh tests the probe there");
        return;
    }
    let base = smollm2();
    let lora = fixture("SmolLM2-135M-Instruct.arith-lowprob.gguf");
    let r = probe(&["--base", p(&base), "--rl-lora", p(&lora)]);
    let bi = &r["batch_invariance"];
    assert_eq!(bi["invariant"], true, "{r}");
    assert_eq!(bi["max_abs_diff"], 0.0);
    assert!(bi["n_tokens"].as_u64().unwrap() > 64, "{r}");
    assert_eq!(bi["sides"], serde_json::json!(["base", "rl"]));
    assert_eq!(r["speculative"], "exact");
    let devices = r["devices"].as_array().unwrap();
    assert!(devices.iter().all(|d| d["kind"] == "cpu"), "{r}");
}

/// The probe sees a batch-dependent backend: on CPU, flash attention
/// switches kernels with the batch, and the probe must say so.
#[test]
fn probe_detects_batch_dependent_logits() {
    let base = smollm2();
    let r = probe(&["--base", p(&base), "--flash-attn"]);
    let bi = &r["batch_invariance"];
    assert_eq!(bi["invariant"], false, "{r}");
    assert!(bi["max_abs_diff"].as_f64().unwrap() > 0.0, "{r}");
    assert_eq!(r["speculative"], "same-distribution");
}

#[test]
fn probe_of_a_missing_model_is_an_error() {
    let out = dlogp(&["probe", "--base", "/nonexistent/model.gguf"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("/nonexistent/model.gguf: no such file"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

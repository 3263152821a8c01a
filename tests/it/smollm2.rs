//! The same checks on the real default model, SmolLM2-135M-Instruct (Q4_1).

use std::path::{Path, PathBuf};

use serde_json::json;

use crate::common::*;

fn lora(dir: &Path, init: &str) -> PathBuf {
    smollm2_lora(
        dir,
        &format!("smollm2-{init}.gguf"),
        &[
            "--rank",
            "4",
            "--targets",
            "attn_q,attn_v,ffn_up",
            "--init",
            init,
            "--std",
            "0.05",
        ],
    )
}

fn rows() -> PathBuf {
    root().join("tests/data/score-rows.jsonl")
}

#[test]
fn zero_and_random_adapters() {
    let dir = tempfile::tempdir().unwrap();
    let base = smollm2();
    let zero = score(
        dir.path(),
        &[
            "--base",
            p(&base),
            "--rl-lora",
            p(&lora(dir.path(), "zero")),
            "--input",
            p(&rows()),
        ],
    );
    assert!(zero.len() > 100);
    for r in &zero {
        for key in ["dlogp", "kl", "kl_r", "js"] {
            assert_eq!(f(r, key), 0.0, "{key} in {r}");
        }
    }
    let random = score(
        dir.path(),
        &[
            "--base",
            p(&base),
            "--rl-lora",
            p(&lora(dir.path(), "random")),
            "--input",
            p(&rows()),
        ],
    );
    assert_eq!(random.len(), zero.len());
    let moved = random.iter().filter(|r| f(r, "dlogp").abs() > 1e-4).count();
    assert!(moved * 2 > random.len(), "{moved}/{}", random.len());
    for (z, r) in zero.iter().zip(&random) {
        assert_eq!(z["token"], r["token"]);
        // the base side does not depend on the RL side
        assert_eq!(f(z, "logp_base"), f(r, "logp_base"));
        assert!(f(r, "kl") >= 0.0 && f(r, "kl_r") >= 0.0);
    }
}

/// Chunked long rows, packed short rows, any batch size: bit-identical
/// results on the quantized model, with and without an adapter.
#[test]
fn batching_is_bit_exact() {
    let dir = tempfile::tempdir().unwrap();
    let base = smollm2();
    let lora = lora(dir.path(), "random");
    if dlogp::runtime::has_offload_device().unwrap() {
        let rl = dlogp::runtime::RlSource::Lora {
            path: lora.clone(),
            scale: 1.0,
        };
        if let Some(reason) = batch_dependence(&load_pair(&base, rl)) {
            eprintln!("{reason}");
            return;
        }
    }
    let mut rows: Vec<serde_json::Value> = std::fs::read_to_string(rows())
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let story = "Once upon a time, there was a little fox who lived near a river. ".repeat(8);
    rows.push(json!({"id": "long", "prompt": "Tell me a story.", "response": story}));
    // the first row again, under an id of its own (ids are unique)
    let mut twin = rows[0].clone();
    twin["id"] = json!("add-1-twin");
    rows.push(twin);
    let input = write_rows(dir.path(), "rows.jsonl", &rows);
    let run = |extra: &[&str]| {
        let mut args = vec![
            "--base",
            p(&base),
            "--rl-lora",
            p(&lora),
            "--input",
            p(&input),
        ];
        args.extend_from_slice(extra);
        score(dir.path(), &args)
    };
    let reference = run(&["--batch-size", "512", "--sequences", "8"]);
    assert!(
        reference
            .iter()
            .filter(|r| r["id"] == json!("long"))
            .count()
            > 100
    );
    assert_eq!(reference, run(&["--batch-size", "7", "--sequences", "1"]));
    assert_eq!(reference, run(&["--batch-size", "64", "--sequences", "3"]));
    // the duplicated row, decoded side by side with its twin, scores the same
    let of = |id: &str| -> Vec<&serde_json::Value> {
        reference.iter().filter(|r| r["id"] == json!(id)).collect()
    };
    let (first, twin) = (of("add-1"), of("add-1-twin"));
    assert!(!first.is_empty());
    assert_eq!(first.len(), twin.len());
    for (x, y) in first.iter().zip(twin) {
        assert_eq!(x["token"], y["token"]);
        assert_eq!(f(x, "logp_rl"), f(y, "logp_rl"));
        assert_eq!(f(x, "logp_base"), f(y, "logp_base"));
    }
}

#[test]
fn same_model_twice_is_all_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let base = smollm2();
    let records = score(
        dir.path(),
        &["--base", p(&base), "--rl", p(&base), "--input", p(&rows())],
    );
    assert!(records.len() > 100);
    for r in &records {
        for key in ["dlogp", "kl", "kl_r", "js"] {
            assert_eq!(f(r, key), 0.0, "{key} in {r}");
        }
        // a trained model puts real mass on text: most tokens are in its top 10
        assert!(f(r, "logp_base") <= 0.0);
    }
    let top10 = records
        .iter()
        .filter(|r| r["rank_base"].as_u64().unwrap() < 10)
        .count();
    assert!(
        top10 * 2 > records.len(),
        "SmolLM2 ranks most of its own tokens highly: {top10}/{}",
        records.len()
    );
}

#[test]
fn chat_rows_and_prompt_rows_render_through_the_same_template() {
    let dir = tempfile::tempdir().unwrap();
    let base = smollm2();
    let prompt = "What is 2 + 3?";
    let response = "2 + 3 = 5. The answer is \\boxed{5}.";
    let rows = write_rows(
        dir.path(),
        "rows.jsonl",
        &[
            json!({"prompt": prompt, "response": response}),
            json!({"messages": [{"role": "user", "content": prompt}, {"role": "assistant", "content": response}]}),
        ],
    );
    let records = score(dir.path(), &["--base", p(&base), "--input", p(&rows)]);
    let (a, b): (Vec<_>, Vec<_>) = records.iter().partition(|r| r["id"] == json!(1));
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(&b) {
        assert_eq!(x["token"], y["token"]);
        assert_eq!(f(x, "logp"), f(y, "logp"));
    }
    // With --raw the prompt is not wrapped, so the context (and log-probs) differ.
    let prompt_row = write_rows(
        dir.path(),
        "prompt.jsonl",
        &[json!({"prompt": prompt, "response": response})],
    );
    let raw = score(
        dir.path(),
        &["--base", p(&base), "--input", p(&prompt_row), "--raw"],
    );
    assert_eq!(raw.len(), a.len());
    assert!(raw
        .iter()
        .zip(&a)
        .any(|(x, y)| f(x, "logp") != f(y, "logp")));
}

#[test]
fn vocabulary_mismatch_with_the_tiny_model() {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("t.jsonl");
    let out = dlogp(&[
        "score",
        "--base",
        p(&smollm2()),
        "--rl",
        p(&fixture("tiny-llama.gguf")),
        "--input",
        p(&rows()),
        "--output",
        p(&out_path),
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("SmolLM2-135M-Instruct.Q4_1.gguf") && err.contains("tiny-llama.gguf"),
        "{err}"
    );
    assert!(err.contains("49152 vs"), "{err}");
    assert!(!out_path.exists());
}

#[test]
fn truncated_copy_of_the_real_model() {
    let dir = tempfile::tempdir().unwrap();
    let mut bytes = vec![0u8; 1 << 20];
    use std::io::Read;
    std::fs::File::open(smollm2())
        .unwrap()
        .read_exact(&mut bytes)
        .unwrap();
    let cut = dir.path().join("smol-cut.gguf");
    std::fs::write(&cut, &bytes).unwrap();
    let out = dlogp(&[
        "score",
        "--base",
        p(&cut),
        "--input",
        p(&rows()),
        "--output",
        p(&dir.path().join("o.jsonl")),
    ]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("smol-cut.gguf"), "{err}");
    assert!(!dir.path().join("o.jsonl").exists());
}

#[test]
fn inspect_the_real_model() {
    let out = dlogp(&["inspect", "--json", p(&smollm2())]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["architecture"], json!("llama"));
    assert_eq!(v["vocab_size"], json!(49152));
    assert_eq!(v["has_chat_template"], json!(true));
    assert_eq!(v["hyperparameters"]["block_count"], json!("30"));
    assert!(v["tensor_types"]["Q4_1"].as_u64().unwrap() > 100, "{v}");
}

//! Bad input: a clear error naming the file or row, a non-zero exit, and no
//! output file left behind.

use std::path::Path;

use serde_json::json;

use crate::common::*;

/// Run `dlogp score` expecting failure; returns stderr after checking that
/// no output file (and no temp file) was left in `dir`.
fn score_fails(dir: &Path, args: &[&str]) -> String {
    let out_path = dir.join("tokens.jsonl");
    let before: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    let mut all: Vec<&str> = vec!["score", "--quiet", "--output", p(&out_path)];
    all.extend_from_slice(args);
    let out = dlogp(&all);
    let err = stderr(&out);
    assert_eq!(
        out.status.code(),
        Some(1),
        "exit code 1 expected; stderr: {err}"
    );
    assert!(!out_path.exists(), "no output file after an error");
    let after: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(before, after, "no stray files");
    assert!(!err.contains("panicked"), "no panic: {err}");
    assert!(
        err.starts_with("error: ") || err.contains("\nerror: "),
        "{err}"
    );
    err
}

fn rows(dir: &Path) -> std::path::PathBuf {
    write_rows(dir, "rows.jsonl", &tiny_rows())
}

#[test]
fn vocabulary_mismatch_names_both_files_and_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let rows = rows(dir.path());
    let err = score_fails(
        dir.path(),
        &[
            "--base",
            p(&fixture("tiny-llama.gguf")),
            "--rl",
            p(&fixture("tiny-llama-othervocab.gguf")),
            "--input",
            p(&rows),
        ],
    );
    assert!(
        err.contains("tiny-llama.gguf") && err.contains("tiny-llama-othervocab.gguf"),
        "{err}"
    );
    assert!(err.contains("different vocabularies"), "{err}");
    assert!(
        err.contains("token 300"),
        "names the first differing token: {err}"
    );
}

#[test]
fn missing_file() {
    let dir = tempfile::tempdir().unwrap();
    let rows = rows(dir.path());
    let missing = dir.path().join("nope.gguf");
    let err = score_fails(dir.path(), &["--base", p(&missing), "--input", p(&rows)]);
    assert!(
        err.contains("nope.gguf") && err.contains("no such file"),
        "{err}"
    );
    let err = score_fails(
        dir.path(),
        &[
            "--base",
            p(&fixture("tiny-llama.gguf")),
            "--input",
            p(&dir.path().join("nope.jsonl")),
        ],
    );
    assert!(err.contains("nope.jsonl"), "{err}");
}

#[test]
fn not_a_gguf_file() {
    let dir = tempfile::tempdir().unwrap();
    let rows = rows(dir.path());
    let bogus = dir.path().join("model.gguf");
    std::fs::write(&bogus, b"this is not a model, just some text\n").unwrap();
    let err = score_fails(dir.path(), &["--base", p(&bogus), "--input", p(&rows)]);
    assert!(
        err.contains("model.gguf") && err.contains("not a GGUF file"),
        "{err}"
    );
}

#[test]
fn truncated_gguf() {
    let dir = tempfile::tempdir().unwrap();
    let rows = rows(dir.path());
    let bytes = std::fs::read(fixture("tiny-llama.gguf")).unwrap();
    for cut in [10, bytes.len() / 3, bytes.len() - 1] {
        let truncated = dir.path().join(format!("cut-{cut}.gguf"));
        std::fs::write(&truncated, &bytes[..cut]).unwrap();
        let err = score_fails(dir.path(), &["--base", p(&truncated), "--input", p(&rows)]);
        assert!(err.contains(&format!("cut-{cut}.gguf")), "{err}");
        assert!(
            err.contains("truncated") || err.contains("outside the file"),
            "{err}"
        );
        std::fs::remove_file(&truncated).unwrap();
    }
}

#[test]
fn adapter_for_another_architecture() {
    let dir = tempfile::tempdir().unwrap();
    let rows = rows(dir.path());
    let err = score_fails(
        dir.path(),
        &[
            "--base",
            p(&fixture("tiny-llama.gguf")),
            "--rl-lora",
            p(&fixture("tiny-lora-otherarch.gguf")),
            "--input",
            p(&rows),
        ],
    );
    assert!(
        err.contains("tiny-lora-otherarch.gguf") && err.contains("gemma3") && err.contains("llama"),
        "{err}"
    );
}

#[test]
fn adapter_passed_as_model_and_model_as_adapter() {
    let dir = tempfile::tempdir().unwrap();
    let rows = rows(dir.path());
    let err = score_fails(
        dir.path(),
        &[
            "--base",
            p(&fixture("tiny-lora-zero.gguf")),
            "--input",
            p(&rows),
        ],
    );
    assert!(
        err.contains("is a LoRA adapter, not a model") && err.contains("--rl-lora"),
        "{err}"
    );
    let err = score_fails(
        dir.path(),
        &[
            "--base",
            p(&fixture("tiny-llama.gguf")),
            "--rl-lora",
            p(&fixture("tiny-llama-b.gguf")),
            "--input",
            p(&rows),
        ],
    );
    assert!(err.contains("is not a LoRA adapter"), "{err}");
}

#[test]
fn malformed_jsonl_names_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.jsonl");
    std::fs::write(
        &path,
        "{\"prompt\": \"a\", \"response\": \"b\"}\n\n{\"prompt\": oops}\n",
    )
    .unwrap();
    let err = score_fails(
        dir.path(),
        &[
            "--base",
            p(&fixture("tiny-llama.gguf")),
            "--input",
            p(&path),
        ],
    );
    assert!(err.contains("bad.jsonl:3"), "{err}");
}

#[test]
fn empty_response_names_the_row() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_rows(
        dir.path(),
        "rows.jsonl",
        &[
            json!({"prompt": "a", "response": "the"}),
            json!({"id": "x9", "prompt": "a", "response": ""}),
        ],
    );
    let err = score_fails(
        dir.path(),
        &[
            "--base",
            p(&fixture("tiny-llama.gguf")),
            "--input",
            p(&path),
        ],
    );
    assert!(
        err.contains("rows.jsonl:2") && err.contains("x9") && err.contains("empty"),
        "{err}"
    );
}

#[test]
fn too_long_row_is_an_error_or_truncated_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let long = "the answer is 3 ".repeat(20);
    let path = write_rows(
        dir.path(),
        "rows.jsonl",
        &[json!({"id": "big", "prompt": "e", "response": long})],
    );
    let base = fixture("tiny-llama.gguf");
    let err = score_fails(
        dir.path(),
        &["--base", p(&base), "--input", p(&path), "--ctx-size", "32"],
    );
    assert!(
        err.contains("big")
            && err.contains("do not fit the context of 32")
            && err.contains("--truncate"),
        "{err}"
    );
    let records = score(
        dir.path(),
        &[
            "--base",
            p(&base),
            "--input",
            p(&path),
            "--ctx-size",
            "32",
            "--truncate",
        ],
    );
    assert!(
        !records.is_empty() && records.len() < 32,
        "cut to fit: {}",
        records.len()
    );
}

#[test]
fn invalid_options_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let rows = rows(dir.path());
    let base = fixture("tiny-llama.gguf");
    for (extra, needle) in [
        (&["--batch-size", "0"][..], "--batch-size"),
        (&["--sequences", "0"][..], "--sequences"),
        (&["--sequences", "100000"][..], "between 1 and 256"),
        (&["--ctx-size", "0"][..], "--ctx-size"),
        (&["--threads", "0"][..], "--threads"),
    ] {
        let mut args = vec!["--base", p(&base), "--input", p(&rows)];
        args.extend_from_slice(extra);
        let err = score_fails(dir.path(), &args);
        assert!(err.contains(needle), "{err}");
    }
}

#[test]
fn inspect_reports_models_and_adapters() {
    let out = dlogp(&["inspect", "--json", p(&fixture("tiny-lora-random.gguf"))]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kind"], json!("lora-adapter"));
    assert_eq!(v["architecture"], json!("llama"));
    assert_eq!(v["lora"]["rank"], json!(4));
    assert!(v["lora"]["targets"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t == "blk.0.attn_q.weight"));

    let out = dlogp(&["inspect", "--json", p(&fixture("tiny-llama.gguf"))]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["kind"], json!("model"));
    assert_eq!(v["hyperparameters"]["block_count"], json!("2"));

    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("x.gguf");
    std::fs::write(&bogus, b"GGUF").unwrap();
    let out = dlogp(&["inspect", p(&bogus)]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("x.gguf"), "{}", stderr(&out));
}

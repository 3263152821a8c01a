//! The task contract of an adapter (`dlogp.task.*`): `dlogp lora-meta`
//! writes it without touching the tensors, and `eval` / `generate` build
//! their prompts from it unless flags say otherwise.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use dlogp::eval::contract::{KEY_EXTRACTION, KEY_PREFIX};
use dlogp::eval::{Extraction, TaskContract, DEFAULT_PROMPT_TEMPLATE};
use dlogp::gguf::{rewrite_metadata, GgufFile, Value};
use serde_json::Value as Json;

use crate::common::*;

/// `dlogp` with the debug log of dlogp itself (the prompts built) on stderr.
fn dlogp_debug(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_dlogp"))
        .args(args)
        .env("DLOGP_LOG", "warn,dlogp=debug")
        .output()
        .expect("the dlogp binary runs")
}

/// The first prompt a command built, from its `prompt of …: "…"` debug line.
fn first_prompt(out: &Output) -> String {
    let err = stderr(out);
    let line = err
        .lines()
        .find(|l| l.contains("prompt of "))
        .unwrap_or_else(|| panic!("no prompt line in: {err}"));
    let quoted = &line[line.find(": \"").expect("a quoted prompt") + 2..];
    serde_json::from_str(quoted).expect("a Rust-quoted prompt reads as JSON")
}

fn contract() -> TaskContract {
    TaskContract {
        template: "Q: {question}\nA:".to_string(),
        chat_template: false,
        extraction: vec![Extraction::LastNumber],
        max_tokens: Some(12),
    }
}

/// tiny-lora-random.gguf with [`contract`] recorded by `dlogp lora-meta`.
fn with_contract(dir: &Path) -> PathBuf {
    let out = dir.join("with-contract.gguf");
    let o = dlogp(&[
        "lora-meta",
        "--file",
        p(&fixture("tiny-lora-random.gguf")),
        "--out",
        p(&out),
        "--template",
        "Q: {question}\nA:",
        "--raw",
        "--extract",
        "last-number",
        "--max-tokens",
        "12",
    ]);
    assert!(o.status.success(), "lora-meta failed: {}", stderr(&o));
    out
}

fn tensor_bytes(path: &Path) -> Vec<(String, Vec<u64>, Vec<u8>)> {
    let file = GgufFile::open(path).unwrap();
    file.tensors
        .iter()
        .map(|t| {
            (
                t.name.clone(),
                t.dims.clone(),
                file.read_tensor_data(path, t).unwrap(),
            )
        })
        .collect()
}

fn dlogps(dir: &Path, lora: &Path) -> Vec<f64> {
    let rows = write_rows(dir, "rows.jsonl", &tiny_rows());
    score(
        dir,
        &[
            "--base",
            p(&fixture("tiny-llama.gguf")),
            "--rl-lora",
            p(lora),
            "--input",
            p(&rows),
        ],
    )
    .iter()
    .map(|r| f(r, "dlogp"))
    .collect()
}

#[test]
fn lora_meta_rewrites_the_metadata_and_keeps_every_tensor_byte() {
    let dir = tempfile::tempdir().unwrap();
    let src = fixture("tiny-lora-random.gguf");
    let out = with_contract(dir.path());
    assert_eq!(TaskContract::read(&src).unwrap(), None);
    assert_eq!(TaskContract::read(&out).unwrap(), Some(contract()));
    // the tensors: same names, shapes, types, offsets and bytes
    let (a, b) = (GgufFile::open(&src).unwrap(), GgufFile::open(&out).unwrap());
    assert_eq!(a.tensors, b.tensors);
    assert_eq!(tensor_bytes(&src), tensor_bytes(&out));
    assert!(!tensor_bytes(&src).is_empty());
    let data =
        |path: &Path, f: &GgufFile| std::fs::read(path).unwrap()[f.data_offset as usize..].to_vec();
    assert!(data(&src, &a) == data(&out, &b), "the data sections differ");
    // the metadata: the old pairs in order, then the contract's
    let old: Vec<_> = b
        .metadata
        .iter()
        .filter(|(k, _)| !k.starts_with(KEY_PREFIX))
        .cloned()
        .collect();
    assert_eq!(old, a.metadata);
    assert_eq!(b.metadata.len(), a.metadata.len() + 4);
    // llama.cpp loads it and it acts as before, bit for bit
    let (before, after) = (dlogps(dir.path(), &src), dlogps(dir.path(), &out));
    assert!(before.iter().any(|d| d.abs() > 1e-6));
    assert_eq!(before, after);

    // in place, changing one part: the rest of the contract stays
    let o = dlogp(&["lora-meta", "--file", p(&out), "--chat"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut want = contract();
    want.chat_template = true;
    assert_eq!(TaskContract::read(&out).unwrap(), Some(want));
    assert_eq!(tensor_bytes(&src), tensor_bytes(&out));
    let leftovers: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    // a file without a contract needs the template and the extraction
    let o = dlogp(&[
        "lora-meta",
        "--file",
        p(&src),
        "--out",
        p(&dir.path().join("x.gguf")),
        "--raw",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stderr(&o).contains("--template is needed"),
        "{}",
        stderr(&o)
    );
    assert!(!dir.path().join("x.gguf").exists());
}

#[test]
fn the_default_adapter_carries_its_training_contract() {
    let c = TaskContract::read(&root().join("gguf/SmolLM2-135M-Instruct.arith-lowprob.gguf"))
        .unwrap()
        .expect("the default adapter has a task contract");
    // as scripts/reproduce.sh trains it (gguf/README.md)
    assert_eq!(c.template, "{question} Answer with just the number.");
    assert!(c.chat_template);
    assert_eq!(
        c.extraction,
        vec![Extraction::Boxed, Extraction::LastNumber]
    );
    assert_eq!(c.max_tokens, Some(48));
}

fn eval_args<'a>(
    base: &'a Path,
    data: &'a Path,
    lora: &'a Path,
    summary: &'a Path,
) -> Vec<&'a str> {
    vec![
        "eval",
        "--base",
        p(base),
        "--rl-lora",
        p(lora),
        "--data",
        p(data),
        "--modes",
        "base",
        "-k",
        "1",
        "--max-tokens",
        "2",
        "--summary",
        p(summary),
        "-q",
    ]
}

#[test]
fn eval_builds_the_contracts_prompts_unless_flags_override_it() {
    let dir = tempfile::tempdir().unwrap();
    let lora = with_contract(dir.path());
    let base = fixture("tiny-llama.gguf");
    let data = write_rows(
        dir.path(),
        "d.jsonl",
        &[serde_json::json!({"id": "x", "question": "the answer is", "answer": "3"})],
    );
    let summary = dir.path().join("s.json");
    let read =
        || -> Json { serde_json::from_str(&std::fs::read_to_string(&summary).unwrap()).unwrap() };

    // the contract: its template, raw, graded on the last number
    let o = dlogp_debug(&eval_args(&base, &data, &lora, &summary));
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(first_prompt(&o), "Q: the answer is\nA:");
    assert!(
        stderr(&o).contains(&format!("from the task contract of {}", lora.display())),
        "{}",
        stderr(&o)
    );
    let s = read();
    assert_eq!(s["provenance"]["template"], "Q: {question}\nA:");
    assert_eq!(s["provenance"]["settings"]["raw"], true);
    assert_eq!(
        s["provenance"]["settings"]["extraction"],
        serde_json::json!(["last-number"])
    );
    assert_eq!(s["provenance"]["settings"]["contract"], p(&lora));

    // flags win: another template, the chat template, boxed grading
    let mut args = eval_args(&base, &data, &lora, &summary);
    args.extend_from_slice(&[
        "--template",
        "{question} ok?",
        "--chat",
        "--extract",
        "boxed",
    ]);
    let o = dlogp_debug(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let prompt = first_prompt(&o);
    assert!(prompt.starts_with("<|im_start|>"), "{prompt:?}");
    assert!(prompt.contains("the answer is ok?"), "{prompt:?}");
    assert!(!prompt.contains("Q: "), "{prompt:?}");
    assert!(
        stderr(&o).contains("overridden by flags: `template`, `chat_template`, `extraction`"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        read()["provenance"]["settings"]["extraction"],
        serde_json::json!(["boxed"])
    );

    // --no-contract: METHOD.md §5
    let mut args = eval_args(&base, &data, &lora, &summary);
    args.push("--no-contract");
    let o = dlogp_debug(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    let prompt = first_prompt(&o);
    assert!(
        prompt.contains(&DEFAULT_PROMPT_TEMPLATE.replace("{question}", "the answer is")),
        "{prompt:?}"
    );
    assert!(
        stderr(&o).contains("METHOD.md §5 defaults"),
        "{}",
        stderr(&o)
    );
    assert_eq!(read()["provenance"]["settings"]["contract"], Json::Null);
}

#[test]
fn generate_takes_the_contracts_chat_template_use_and_its_template_on_request() {
    let dir = tempfile::tempdir().unwrap();
    let lora = with_contract(dir.path());
    let base = fixture("tiny-llama.gguf");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "generate",
            "--base",
            p(&base),
            "--rl-lora",
            p(&lora),
            "--max-tokens",
            "2",
            "-q",
        ];
        args.extend_from_slice(extra);
        args.push("the answer is");
        let o = dlogp_debug(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        first_prompt(&o)
    };
    // raw, as the contract says; the prompt as given
    assert_eq!(run(&[]), "the answer is");
    assert_eq!(run(&["--task-template"]), "Q: the answer is\nA:");
    let chat = run(&["--chat"]);
    assert!(
        chat.starts_with("<|im_start|>") && chat.contains("the answer is"),
        "{chat:?}"
    );
    let none = run(&["--no-contract"]);
    assert!(none.starts_with("<|im_start|>"), "{none:?}");
    // --task-template without a contract is an error
    let o = dlogp(&[
        "generate",
        "--base",
        p(&base),
        "--rl-lora",
        p(&fixture("tiny-lora-random.gguf")),
        "--task-template",
        "x",
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("has none"), "{}", stderr(&o));
}

#[test]
fn a_bad_contract_is_an_error_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let good = with_contract(dir.path());
    let bad = dir.path().join("bad.gguf");
    let base = fixture("tiny-llama.gguf");
    let mut md = GgufFile::open(&good).unwrap().metadata;
    for (k, v) in md.iter_mut() {
        if k == KEY_EXTRACTION {
            *v = Value::string("boxed,first-number");
        }
    }
    rewrite_metadata(&good, &bad, &md).unwrap();
    let data = write_rows(
        dir.path(),
        "d.jsonl",
        &[serde_json::json!({"id": "x", "question": "q", "answer": "3"})],
    );
    let summary = dir.path().join("s.json");
    let o = dlogp(&eval_args(&base, &data, &bad, &summary));
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("`dlogp.task.extraction`"), "{err}");
    assert!(err.contains("\"first-number\""), "{err}");
    assert!(err.contains(p(&bad)), "{err}");
    assert!(!summary.exists());
    // --no-contract does not read it
    let mut args = eval_args(&base, &data, &bad, &summary);
    args.push("--no-contract");
    let o = dlogp(&args);
    assert!(o.status.success(), "{}", stderr(&o));
}

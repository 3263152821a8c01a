//! `-` is stdin for every file a command reads and stdout for every file it
//! writes: the same bytes as through a file, one test per command.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::common::*;

/// `dlogp ARGS` with `input` on stdin.
fn piped(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_dlogp"))
        .args(args)
        .env("DLOGP_LOG", "warn")
        .env("NO_COLOR", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("dlogp runs");
    let mut stdin = child.stdin.take().unwrap();
    let bytes = input.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&bytes);
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(
        out.status.success(),
        "dlogp {} failed: {}",
        args.join(" "),
        stderr(&out)
    );
    out
}

fn ok(args: &[&str]) -> Output {
    piped(args, b"")
}

fn tiny() -> (String, String) {
    (
        p(&fixture("tiny-llama.gguf")).to_string(),
        p(&fixture("tiny-lora-random.gguf")).to_string(),
    )
}

fn file(dir: &Path, name: &str) -> String {
    p(&dir.join(name)).to_string()
}

fn read(path: &str) -> Vec<u8> {
    std::fs::read(path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn score_reads_stdin_and_writes_the_summary_to_stdout() {
    let (base, lora) = tiny();
    let dir = tempfile::tempdir().unwrap();
    let rows = write_rows(dir.path(), "rows.jsonl", &tiny_rows());
    let pair = [
        "-m",
        base.as_str(),
        "--lora",
        lora.as_str(),
        "-t",
        "1",
        "-q",
    ];
    let by_file = ok(&[&["score", "-i", p(&rows)][..], &pair].concat());
    let by_stdin = piped(
        &[&["score", "-i", "-"][..], &pair].concat(),
        &read(p(&rows)),
    );
    assert!(!by_file.stdout.is_empty());
    assert_eq!(by_stdin.stdout, by_file.stdout);
    let (tokens, summary) = (file(dir.path(), "t.jsonl"), file(dir.path(), "s.json"));
    ok(&[
        &[
            "score",
            "-i",
            p(&rows),
            "-o",
            &tokens,
            "--summary",
            &summary,
        ][..],
        &pair,
    ]
    .concat());
    let out = ok(&[
        &["score", "-i", p(&rows), "-o", &tokens, "--summary", "-"][..],
        &pair,
    ]
    .concat());
    assert_eq!(out.stdout, read(&summary));
    // two outputs on stdout are refused, naming both flags
    let bad = dlogp(&[&["score", "-i", p(&rows), "--summary", "-"][..], &pair].concat());
    assert_eq!(bad.status.code(), Some(1));
    let err = stderr(&bad);
    assert!(
        err.contains("--output, --summary all write to stdout"),
        "{err}"
    );
    // a model cannot come from stdin
    let bad = dlogp(&["score", "-m", "-", "-i", p(&rows)]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("--base -: a model or adapter must be a file"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn generate_reads_the_prompt_from_stdin_and_traces_to_stdout() {
    let (base, lora) = tiny();
    let dir = tempfile::tempdir().unwrap();
    let common = [
        "-m",
        base.as_str(),
        "--lora",
        lora.as_str(),
        "-n",
        "8",
        "-s",
        "2",
        "-q",
    ];
    let text = ok(&[&["generate", "the answer is"][..], &common].concat()).stdout;
    assert!(!text.is_empty());
    for flags in [vec!["-f", "-"], vec!["-p", "-"], vec!["-"]] {
        let out = piped(
            &[&["generate"][..], &flags, &common].concat(),
            b"the answer is\n",
        );
        assert_eq!(out.stdout, text, "{flags:?}");
    }
    let rows = write_rows(
        dir.path(),
        "p.jsonl",
        &[serde_json::json!({"id": "q", "prompt": "the answer is"})],
    );
    let (gen, trace) = (file(dir.path(), "g.jsonl"), file(dir.path(), "t.jsonl"));
    ok(&[
        &["generate", "-i", p(&rows), "-o", &gen, "--trace", &trace][..],
        &common,
    ]
    .concat());
    let out = piped(
        &[
            &["generate", "-i", "-", "-o", &gen, "--trace", "-"][..],
            &common,
        ]
        .concat(),
        &read(p(&rows)),
    );
    assert!(!out.stdout.is_empty());
    assert_eq!(out.stdout, read(&trace));
}

#[test]
fn eval_and_intervene_write_rows_summaries_csv_and_plots_to_stdout() {
    let (base, lora) = tiny();
    let dir = tempfile::tempdir().unwrap();
    let data = file(dir.path(), "arith.jsonl");
    ok(&["tasks", "arith", "-n", "2", "--seed", "5", "-o", &data]);
    let common = [
        "-m",
        base.as_str(),
        "--lora",
        lora.as_str(),
        "--modes",
        "base,rl",
        "-k",
        "2",
        "-n",
        "6",
        "-t",
        "1",
        "-q",
    ];
    let (rows, summary) = (file(dir.path(), "rows.jsonl"), file(dir.path(), "sum.json"));
    ok(&[
        &["eval", "-d", &data, "-o", &rows, "--summary", &summary][..],
        &common,
    ]
    .concat());
    let out = piped(
        &[&["eval", "-d", "-", "-o", "-"][..], &common].concat(),
        &read(&data),
    );
    assert_eq!(
        out.stdout,
        read(&rows),
        "rows on stdout, the table elsewhere"
    );
    assert!(!dir.path().join("-.partial").exists());
    let out = ok(&[&["eval", "-d", &data, "--summary", "-"][..], &common].concat());
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON summary");
    assert_eq!(s["configs"].as_array().map(Vec::len), Some(2), "{s}");

    let common = [
        "-m",
        base.as_str(),
        "--lora",
        lora.as_str(),
        "-d",
        data.as_str(),
        "--criteria",
        "dlogp",
        "--taus",
        "-0.5",
        "-k",
        "1",
        "-n",
        "6",
        "-t",
        "1",
        "-q",
    ];
    let csv = file(dir.path(), "sweep.csv");
    ok(&[&["intervene", "--csv", &csv][..], &common].concat());
    let out = ok(&[&["intervene", "--csv", "-"][..], &common].concat());
    assert_eq!(out.stdout, read(&csv));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("criterion,tau,"));
    let out = ok(&[&["intervene", "--plot", "-"][..], &common].concat());
    let svg = String::from_utf8(out.stdout).unwrap();
    assert!(svg.contains("<svg"), "{}", &svg[..svg.len().min(200)]);
    let out = ok(&[&["intervene", "--json", "-"][..], &common].concat());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("sweep JSON");
    assert!(v.is_object());
}

#[test]
fn analyze_reads_score_files_from_stdin_and_writes_to_stdout() {
    let (base, lora) = tiny();
    let dir = tempfile::tempdir().unwrap();
    let rows = write_rows(dir.path(), "rows.jsonl", &tiny_rows());
    let scores = file(dir.path(), "scores.jsonl");
    ok(&[
        "score",
        "-m",
        &base,
        "--lora",
        &lora,
        "-i",
        p(&rows),
        "-o",
        &scores,
        "-q",
    ]);
    let json = file(dir.path(), "a.json");
    ok(&["analyze", "--rl-generated", &scores, "--json", &json, "-q"]);
    let out = piped(
        &["analyze", "--rl-generated", "-", "--json", "-", "-q"],
        &read(&scores),
    );
    let (mut by_stdin, mut by_file): (serde_json::Value, serde_json::Value) = (
        serde_json::from_slice(&out.stdout).unwrap(),
        serde_json::from_slice(&read(&json)).unwrap(),
    );
    let source =
        |v: &serde_json::Value| v["provenance"]["settings"]["rl_generated"]["path"].clone();
    assert_eq!(source(&by_stdin), "<stdin>");
    assert_eq!(source(&by_file), scores.as_str());
    by_stdin["provenance"] = serde_json::Value::Null;
    by_file["provenance"] = serde_json::Value::Null;
    assert_eq!(by_stdin, by_file);
    let out = ok(&["analyze", "--rl-generated", &scores, "--report", "-", "-q"]);
    let html = String::from_utf8(out.stdout).unwrap();
    assert!(
        html.starts_with("<!DOCTYPE html>") || html.starts_with("<html"),
        "{}",
        &html[..80.min(html.len())]
    );
    let bad = dlogp(&[
        "analyze",
        "--base-generated",
        "-",
        "--rl-generated",
        "-",
        "--json",
        &json,
    ]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("can be read only once"),
        "{}",
        stderr(&bad)
    );
}

#[test]
fn inspect_and_the_lora_tools_read_stdin_and_write_stdout() {
    let (base, lora) = tiny();
    let dir = tempfile::tempdir().unwrap();
    let by_file = ok(&["inspect", "--json", &lora]).stdout;
    let by_stdin = piped(&["inspect", "--json", "-"], &read(&lora)).stdout;
    let (mut a, mut b): (serde_json::Value, serde_json::Value) = (
        serde_json::from_slice(&by_file).unwrap(),
        serde_json::from_slice(&by_stdin).unwrap(),
    );
    assert_eq!(b["path"], "<stdin>");
    a["path"] = serde_json::Value::Null;
    b["path"] = serde_json::Value::Null;
    assert_eq!(a, b);

    let out = file(dir.path(), "init.gguf");
    let init = [
        "lora-init",
        "-m",
        base.as_str(),
        "--rank",
        "2",
        "--seed",
        "1",
    ];
    ok(&[&init[..], &["-o", &out]].concat());
    let to_stdout = ok(&[&init[..], &["-o", "-"]].concat()).stdout;
    assert_eq!(to_stdout, read(&out));

    let compacted = file(dir.path(), "c.gguf");
    ok(&[
        "lora-compact",
        "--lora",
        &lora,
        "-o",
        &compacted,
        "--rank",
        "1",
    ]);
    let piped_out = piped(
        &["lora-compact", "--lora", "-", "-o", "-", "--rank", "1"],
        &read(&lora),
    );
    assert_eq!(piped_out.stdout, read(&compacted));
}

#[cfg(feature = "train")]
#[test]
fn train_reads_tasks_from_stdin_and_streams_metrics_to_stdout() {
    let dir = tempfile::tempdir().unwrap();
    let base = fixture("tiny-llama.gguf");
    let data = "{\"question\": \"the answer is\", \"answer\": \"3\"}\n";
    let (a, b) = (file(dir.path(), "a.gguf"), file(dir.path(), "b.gguf"));
    let data_file = file(dir.path(), "tasks.jsonl");
    std::fs::write(&data_file, data).unwrap();
    let flags = [
        "--raw",
        "--template",
        "{question}",
        "--extract",
        "last-number",
        "--steps",
        "2",
        "--prompts-per-step",
        "1",
        "-G",
        "4",
        "-n",
        "4",
        "--overlong-buffer",
        "0",
        "--rank",
        "2",
        "-s",
        "3",
        "--train-threads",
        "1",
        "-t",
        "1",
        "-q",
    ];
    ok(&[
        &["train", "-m", p(&base), "--data", &data_file, "-o", &a][..],
        &flags,
    ]
    .concat());
    let out = piped(
        &[
            &[
                "train",
                "-m",
                p(&base),
                "--data",
                "-",
                "-o",
                &b,
                "--metrics",
                "-",
            ][..],
            &flags,
        ]
        .concat(),
        data.as_bytes(),
    );
    assert_eq!(read(&a), read(&b), "the same adapter from stdin tasks");
    let steps: Vec<u64> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["step"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(steps, [1, 2]);
    let bad = dlogp(&["train", "-m", p(&base), "--arith", "2", "-o", "-"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        stderr(&bad).contains("--out needs a file"),
        "{}",
        stderr(&bad)
    );
}

//! `dlogp tasks`: seeded, verifiable task sets readable by the dataset loader.

use std::path::{Path, PathBuf};

use dlogp::eval::{extract, is_equivalent, load, DatasetSpec, Extraction, Journal, Preset};
use serde_json::Value;

use crate::common::*;

#[test]
fn arith_tasks_are_seeded_and_load_with_the_default_fields() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b, c) = (
        dir.path().join("a.jsonl"),
        dir.path().join("b.jsonl"),
        dir.path().join("c.jsonl"),
    );
    for (path, seed) in [(&a, "3"), (&b, "3"), (&c, "4")] {
        let out = dlogp(&[
            "tasks",
            "arith",
            "-n",
            "40",
            "--seed",
            seed,
            "--output",
            p(path),
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let (ta, tb, tc) = (
        std::fs::read(&a).unwrap(),
        std::fs::read(&b).unwrap(),
        std::fs::read(&c).unwrap(),
    );
    assert_eq!(ta, tb, "same seed, same tasks");
    assert_ne!(ta, tc, "another seed, other tasks");
    let tasks = load(ta.as_slice(), "a.jsonl", &DatasetSpec::from(Preset::Arith)).unwrap();
    assert_eq!(tasks.len(), 40);
    for t in &tasks {
        assert!(t.answer.parse::<i64>().is_ok(), "integer answer: {t:?}");
    }
    // level 1: single-digit sums and differences whose answers check out
    let out = dlogp(&["tasks", "arith", "-n", "20", "--level", "1"]);
    let text = String::from_utf8(out.stdout).unwrap();
    for t in load(text.as_bytes(), "l1", &DatasetSpec::from(Preset::Arith)).unwrap() {
        let q = t
            .question
            .trim_start_matches("What is ")
            .trim_end_matches('?');
        let parts: Vec<&str> = q.split(' ').collect();
        let (x, op, y): (i64, &str, i64) = (
            parts[0].parse().unwrap(),
            parts[1],
            parts[2].parse().unwrap(),
        );
        assert!(x < 10 && y < 10, "{q}");
        let want = if op == "+" { x + y } else { x - y };
        assert_eq!(t.answer, want.to_string(), "{q}");
    }
    let out = dlogp(&["tasks", "arith", "--level", "0"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--level"));
}

fn arith(dir: &Path, n: &str, level: &str) -> PathBuf {
    let path = dir.join(format!("arith-{n}-{level}.jsonl"));
    let out = dlogp(&[
        "tasks",
        "arith",
        "-n",
        n,
        "--level",
        level,
        "--seed",
        "5",
        "-o",
        p(&path),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    path
}

fn read_json(path: &Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every field of a summary but the timing.
fn without_timing(mut summary: Value) -> Value {
    for c in summary["configs"].as_array_mut().unwrap() {
        c.as_object_mut().unwrap().remove("tokens_per_s");
    }
    summary
}

#[test]
fn eval_grades_every_sample_and_summarizes_them_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let (data, rl) = (arith(dir.path(), "4", "1"), strong_lora(dir.path()));
    let (rows_path, summary_path) = (dir.path().join("s.jsonl"), dir.path().join("s.json"));
    let base = smollm2();
    let out = dlogp(&[
        "eval",
        "--base",
        p(&base),
        "--rl-lora",
        p(&rl),
        "--data",
        p(&data),
        "--modes",
        "base,rl,extrapolate:gamma=0.5:tau=-0.2",
        "-k",
        "3",
        "--max-tokens",
        "40",
        "--last-number",
        "--seed",
        "11",
        "-o",
        p(&rows_path),
        "--summary",
        p(&summary_path),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let table = String::from_utf8(out.stdout).unwrap();
    assert!(table.contains("| config | Avg@3 | Pass@3 |"), "{table}");
    assert!(
        !Journal::path_for(&rows_path).exists(),
        "the journal is removed"
    );
    let tasks = load(
        std::fs::read(&data).unwrap().as_slice(),
        "d",
        &DatasetSpec::default(),
    )
    .unwrap();
    let rows = read_jsonl(&rows_path);
    assert_eq!(rows.len(), 3 * 4 * 3);
    let summary = read_json(&summary_path);
    assert_eq!(summary["k"], 3);
    assert_eq!(summary["n_problems"], 4);
    let methods = [Extraction::Boxed, Extraction::Gsm8k, Extraction::LastNumber];
    for (ci, name) in ["base", "rl", "extrapolate:gamma=0.5:tau=-0.2"]
        .iter()
        .enumerate()
    {
        let c = &summary["configs"][ci];
        assert_eq!(c["name"], *name);
        let mine: Vec<&Value> = rows.iter().filter(|r| r["config"] == *name).collect();
        assert_eq!(mine.len(), 12);
        let (mut n_correct, mut pass, mut ratio) = (0, 0.0, 0.0);
        for t in &tasks {
            let per: Vec<&&Value> = mine.iter().filter(|r| r["id"] == t.id.as_str()).collect();
            assert_eq!(per.len(), 3, "{name} {}", t.id);
            let mut c = 0;
            for r in &per {
                // re-grade independently
                let extracted = extract(r["response"].as_str().unwrap(), &methods);
                let ok = extracted
                    .as_deref()
                    .is_some_and(|a| is_equivalent(a, &t.answer));
                assert_eq!(r["correct"], ok, "{r}");
                assert_eq!(r["extracted"].as_str(), extracted.as_deref());
                c += usize::from(ok);
                ratio += f(r, "replacement_ratio");
            }
            n_correct += c;
            pass += if c > 0 { 1.0 } else { 0.0 }; // pass@k with n = k
        }
        assert!(
            (f(c, "avg_at_k") - n_correct as f64 / 12.0).abs() < 1e-12,
            "{c}"
        );
        assert!((f(c, "pass_at_k") - pass / 4.0).abs() < 1e-12, "{c}");
        assert!((f(c, "replacement_ratio") - ratio / 12.0).abs() < 1e-12);
        let tokens: f64 = mine.iter().map(|r| f(r, "n_tokens")).sum();
        assert!((f(c, "mean_tokens") - tokens / 12.0).abs() < 1e-12);
        assert!(f(c, "tokens_per_s") > 0.0);
    }
    // only the extrapolating configuration replaces tokens
    assert_eq!(f(&summary["configs"][0], "replacement_ratio"), 0.0);
    assert!(f(&summary["configs"][2], "replacement_ratio") > 0.0);
}

#[test]
fn an_interrupted_eval_resumes_to_the_same_result() {
    let dir = tempfile::tempdir().unwrap();
    let data = arith(dir.path(), "4", "2");
    let base = smollm2();
    let rl = strong_lora(dir.path());
    let args = |rows: &Path, summary: &Path, sequences: &str| -> Vec<String> {
        [
            "eval",
            "--base",
            p(&base),
            "--rl-lora",
            p(&rl),
            "--data",
            p(&data),
            "--modes",
            "base,extrapolate:tau=-0.2",
            "-k",
            "2",
            "--max-tokens",
            "32",
            "--last-number",
            "--sequences",
            sequences,
            "--draft",
            if sequences == "1" { "1" } else { "4" },
            "-o",
            p(rows),
            "--summary",
            p(summary),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    // uninterrupted, 4 sequences side by side (speculative)
    let (a_rows, a_sum) = (dir.path().join("a.jsonl"), dir.path().join("a.json"));
    let out = dlogp(
        &args(&a_rows, &a_sum, "4")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(out.status.success(), "{}", stderr(&out));

    // one sequence at a time, killed after a few samples
    let (b_rows, b_sum) = (dir.path().join("b.jsonl"), dir.path().join("b.json"));
    let journal = Journal::path_for(&b_rows);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_dlogp"))
        .args(args(&b_rows, &b_sum, "1"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let lines = |p: &Path| std::fs::read_to_string(p).map_or(0, |t| t.lines().count());
    let start = std::time::Instant::now();
    while lines(&journal) < 4 {
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before it could be interrupted"
        );
        assert!(start.elapsed().as_secs() < 300, "no progress");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !b_rows.exists() && !b_sum.exists(),
        "no output from an interrupted run"
    );
    let done = lines(&journal) - 1;
    assert!((3..16).contains(&done), "{done} samples journaled");

    let out = dlogp(
        &args(&b_rows, &b_sum, "1")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains(&format!("resuming: {done} samples already done")),
        "{}",
        stderr(&out)
    );
    assert!(!journal.exists());
    assert_eq!(
        read_jsonl(&a_rows),
        read_jsonl(&b_rows),
        "same samples, same order"
    );
    assert_eq!(
        without_timing(read_json(&a_sum)),
        without_timing(read_json(&b_sum))
    );

    // a journal with samples from other settings is refused, not mixed in
    let sample = std::fs::read_to_string(&b_rows).unwrap();
    let sample = sample.lines().next().unwrap();
    std::fs::write(
        &journal,
        format!("{{\"dlogp_eval_journal\":1,\"settings\":{{\"k\":9}}}}\n{sample}\n"),
    )
    .unwrap();
    let out = dlogp(
        &args(&b_rows, &b_sum, "1")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--restart"), "{}", stderr(&out));
}

#[test]
fn intervene_never_and_always_reproduce_base_and_rl() {
    let dir = tempfile::tempdir().unwrap();
    let data = arith(dir.path(), "3", "1");
    let base = smollm2();
    let rl = strong_lora(dir.path());
    let common = [
        "--base",
        p(&base),
        "--rl-lora",
        p(&rl),
        "--data",
        p(&data),
        "-k",
        "2",
        "--max-tokens",
        "32",
        "--last-number",
        "--seed",
        "4",
    ];
    let (e_rows, e_sum) = (dir.path().join("e.jsonl"), dir.path().join("e.json"));
    let mut a = vec![
        "eval",
        "--modes",
        "base,rl",
        "-o",
        p(&e_rows),
        "--summary",
        p(&e_sum),
    ];
    a.extend(common);
    let out = dlogp(&a);
    assert!(out.status.success(), "{}", stderr(&out));

    let (i_rows, csv, json, svg) = (
        dir.path().join("i.jsonl"),
        dir.path().join("i.csv"),
        dir.path().join("i.json"),
        dir.path().join("i.svg"),
    );
    let mut a = vec![
        "intervene",
        "--criteria",
        "never,always,random",
        "--ratios",
        "0.3",
        "-o",
        p(&i_rows),
        "--csv",
        p(&csv),
        "--json",
        p(&json),
        "--plot",
        p(&svg),
    ];
    a.extend(common);
    let out = dlogp(&a);
    assert!(out.status.success(), "{}", stderr(&out));

    let eval_rows = read_jsonl(&e_rows);
    let sweep_rows = read_jsonl(&i_rows);
    let responses = |rows: &[Value], config: &str| -> Vec<(String, u64, String)> {
        rows.iter()
            .filter(|r| r["config"] == config)
            .map(|r| {
                (
                    r["id"].as_str().unwrap().to_string(),
                    r["sample"].as_u64().unwrap(),
                    r["response"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    assert_eq!(responses(&eval_rows, "base").len(), 6);
    assert_eq!(
        responses(&eval_rows, "base"),
        responses(&sweep_rows, "replace:criterion=never")
    );
    assert_eq!(
        responses(&eval_rows, "rl"),
        responses(&sweep_rows, "replace:criterion=always")
    );

    let e = read_json(&e_sum);
    let r = read_json(&json);
    let point = |c: &str| {
        r["points"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["criterion"] == c)
            .unwrap()
            .clone()
    };
    assert_eq!(
        f(&point("never"), "avg_at_k"),
        f(&e["configs"][0], "avg_at_k")
    );
    assert_eq!(
        f(&point("always"), "avg_at_k"),
        f(&e["configs"][1], "avg_at_k")
    );
    assert_eq!(f(&point("never"), "replacement_ratio"), 0.0);
    assert_eq!(f(&point("always"), "replacement_ratio"), 1.0);
    assert_eq!(f(&r["base"], "avg_at_k"), f(&e["configs"][0], "avg_at_k"));
    assert_eq!(f(&r["rl"], "pass_at_k"), f(&e["configs"][1], "pass_at_k"));
    let random = point("random");
    assert_eq!(f(&random, "tau"), 0.3);
    assert!(
        (0.1..0.5).contains(&f(&random, "replacement_ratio")),
        "{random}"
    );

    let csv = std::fs::read_to_string(&csv).unwrap();
    let lines: Vec<&str> = csv.lines().collect();
    assert!(lines[0].starts_with("criterion,tau,replacement_ratio,avg_at_k"));
    assert_eq!(lines.len(), 1 + 2 + 3);
    assert!(lines.iter().any(|l| l.starts_with("always,0,1,")), "{csv}");
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert!(svg.starts_with("<svg"));
    let texts: Vec<&str> = svg.lines().map(str::trim).collect();
    for label in ["never", "always", "random", "replaced tokens (%)"] {
        assert!(texts.contains(&label), "{label} not in the plot");
    }
    // the references with their accuracy, n and k, and the intervals' caption
    for start in ["base alone (", "RL alone (", "Token replacement: Avg@"] {
        assert!(
            texts.iter().any(|t| t.starts_with(start)),
            "{start} not in the plot"
        );
    }
    assert!(texts.iter().any(|t| t.contains("k = ")), "k on the figure");
    assert!(
        texts.iter().any(|t| t.contains("Wilson 95 %")),
        "the bars' caption"
    );
}

#[test]
fn intervene_calibrates_thresholds_to_target_ratios() {
    let dir = tempfile::tempdir().unwrap();
    let data = arith(dir.path(), "3", "2");
    let base = smollm2();
    let rl = strong_lora(dir.path());
    let (json, png) = (dir.path().join("c.json"), dir.path().join("c.png"));
    let out = dlogp(&[
        "intervene",
        "--base",
        p(&base),
        "--rl-lora",
        p(&rl),
        "--data",
        p(&data),
        "-k",
        "2",
        "--max-tokens",
        "48",
        "--criteria",
        "dlogp,kl",
        "--ratios",
        "0.05,0.3",
        "--calibrate",
        "3",
        "--json",
        p(&json),
        "--plot",
        p(&png),
        "-q",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let r = read_json(&json);
    assert!(r["calibration"]["n_tokens"].as_u64().unwrap() > 50);
    let points = r["points"].as_array().unwrap();
    assert_eq!(points.len(), 4);
    for c in ["dlogp", "kl"] {
        let p: Vec<&Value> = points.iter().filter(|x| x["criterion"] == c).collect();
        // a higher target replaces more: dlogp's τ rises, kl's falls
        let (lo, hi) = (f(p[0], "replacement_ratio"), f(p[1], "replacement_ratio"));
        assert!(lo < hi, "{c}: {lo} vs {hi}");
        assert!(hi > 0.1 && lo < 0.2, "{c}: {lo} {hi}");
        if c == "dlogp" {
            assert!(f(p[0], "tau") < f(p[1], "tau") && f(p[1], "tau") < 0.0);
        } else {
            assert!(f(p[0], "tau") > f(p[1], "tau"));
        }
    }
    let png = std::fs::read(&png).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
}

#[test]
fn analyze_reports_the_numbers_of_the_score_files() {
    let dir = tempfile::tempdir().unwrap();
    let (base, lora) = (fixture("tiny-llama.gguf"), fixture("tiny-lora-random.gguf"));
    let rows = tiny_rows();
    let mut files = Vec::new();
    for (i, part) in [&rows[..2], &rows[2..]].iter().enumerate() {
        let input = write_rows(dir.path(), &format!("in{i}.jsonl"), part);
        let path = dir.path().join(format!("scores{i}.jsonl"));
        let out = dlogp(&[
            "score",
            "--base",
            p(&base),
            "--rl-lora",
            p(&lora),
            "-i",
            p(&input),
            "-o",
            p(&path),
            "-q",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        files.push(path);
    }
    let (json, html, md, plots) = (
        dir.path().join("a.json"),
        dir.path().join("a.html"),
        dir.path().join("rep.md"),
        dir.path().join("plots"),
    );
    let out = dlogp(&[
        "analyze",
        "--base-generated",
        p(&files[0]),
        "--rl-generated",
        p(&files[1]),
        "--json",
        p(&json),
        "--report",
        p(&html),
        "--plots",
        p(&plots),
        "--plot-format",
        "png",
        "--bins",
        "10",
        "--top",
        "3",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let a = read_json(&json);
    let sets: Vec<Vec<Value>> = files.iter().map(|f| read_jsonl(f)).collect();
    // direct computation from the score files
    for (si, set) in sets.iter().enumerate() {
        let d: Vec<f64> = set.iter().map(|r| f(r, "dlogp")).collect();
        let n = d.len();
        assert_eq!(a["sets"][si][1], n);
        let sp = &a["metrics"][0]["sparsity"][si];
        assert_eq!(a["metrics"][0]["metric"], "dlogp");
        assert_eq!(
            f(sp, "min"),
            d.iter().copied().fold(f64::INFINITY, f64::min)
        );
        assert_eq!(
            f(sp, "max"),
            d.iter().copied().fold(f64::NEG_INFINITY, f64::max)
        );
        let above = d.iter().filter(|x| x.abs() > 0.1).count() as f64 / n as f64;
        let share = sp["share_above"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x[0] == 0.1)
            .unwrap();
        assert_eq!(share[1].as_f64().unwrap(), above);
        let h = &a["metrics"][0]["histograms"][si];
        let counts: u64 = h["counts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c.as_u64().unwrap())
            .sum();
        assert_eq!(counts as usize, n);
        let large = d.iter().filter(|x| x.abs() > 1.0).count();
        assert_eq!(a["breakdown"][si]["n_large"], large);
        let low_p_base = set
            .iter()
            .filter(|r| f(r, "logp_base").exp() < 0.01)
            .count();
        assert_eq!(a["breakdown"][si]["by_p_base"][0]["n_tokens"], low_p_base);
    }
    let all: Vec<f64> = sets.iter().flatten().map(|r| f(r, "dlogp")).collect();
    let top = all.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let bottom = all.iter().copied().fold(f64::INFINITY, f64::min);
    assert_eq!(f(&a["top_positive"][0], "dlogp"), top);
    assert_eq!(f(&a["top_negative"][0], "dlogp"), bottom);

    let html = std::fs::read_to_string(&html).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert_eq!(
        html.matches("<svg").count(),
        7,
        "the multi-panel figure and one inline histogram per metric"
    );
    for m in [
        "figure",
        "dlogp",
        "entropy_base",
        "entropy_rl",
        "kl",
        "kl_r",
        "js",
    ] {
        let png = std::fs::read(plots.join(format!("{m}.png"))).unwrap();
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n", "{m}");
    }
    // a Markdown report links plots written beside it
    let out = dlogp(&[
        "analyze",
        "--rl-generated",
        p(&files[1]),
        "--report",
        p(&md),
        "-q",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = std::fs::read_to_string(&md).unwrap();
    assert!(text.contains("![dlogp](rep_plots/dlogp.svg)"), "{text}");
    assert!(
        text.contains("![all metrics](rep_plots/figure.svg)"),
        "{text}"
    );
    assert!(dir.path().join("rep_plots/dlogp.svg").exists());
    assert!(dir.path().join("rep_plots/figure.svg").exists());
    // quantile tables, and the legend's token counts in the SVG
    assert!(text.contains("| set | tokens | mean | p1 | p5 | p25 | p50 | p75 | p95 | p99 | max |"));
    let n = sets[1].len();
    let svg = std::fs::read_to_string(dir.path().join("rep_plots/dlogp.svg")).unwrap();
    assert!(
        svg.contains(&format!("RL-generated (n = {n})")),
        "n in the legend"
    );
}

#[test]
fn eval_intervene_and_analyze_reject_bad_input_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let data = arith(dir.path(), "2", "1");
    let base = fixture("tiny-llama.gguf");
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec![
                "eval",
                "--base",
                p(&base),
                "--data",
                p(&data),
                "--modes",
                "rl",
            ],
            "needs an RL model",
        ),
        (
            vec![
                "eval",
                "--base",
                p(&base),
                "--data",
                p(&data),
                "--modes",
                "extrapolate:gamma=x",
            ],
            "gamma: `x`",
        ),
        (
            vec!["eval", "--base", p(&base), "--data", p(&data), "-k", "0"],
            "-k",
        ),
        (
            vec!["eval", "--base", p(&base), "--data", "/nonexistent.jsonl"],
            "/nonexistent.jsonl",
        ),
        (
            vec!["intervene", "--base", p(&base), "--data", p(&data)],
            "needs an RL model",
        ),
        (
            vec![
                "intervene",
                "--base",
                p(&base),
                "--rl",
                p(&base),
                "--data",
                p(&data),
                "--plot",
                "x.pdf",
            ],
            "x.pdf",
        ),
        (
            vec![
                "intervene",
                "--base",
                p(&base),
                "--rl",
                p(&base),
                "--data",
                p(&data),
                "--ratios",
                "1.5",
            ],
            "--ratios",
        ),
        (
            vec![
                "analyze",
                "--rl-generated",
                p(&data),
                "-m",
                p(&base),
                "--json",
                "x.json",
            ],
            "not both",
        ),
        (
            vec!["analyze", "--rl-generated", p(&data), "--json", "x.json"],
            "field `dlogp`",
        ),
    ];
    for (args, needle) in cases {
        let out = dlogp(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(stderr(&out).contains(needle), "{args:?}: {}", stderr(&out));
    }
}

#[test]
fn eval_on_the_fixtures_with_a_zero_adapter_gives_base_samples_everywhere() {
    // B = 0: Δlog p is exactly 0, so `rl` is the base model token for token
    // and the dlogp gate (τ < 0) never fires.
    let dir = tempfile::tempdir().unwrap();
    let data = write_rows(
        dir.path(),
        "d.jsonl",
        &[
            serde_json::json!({"id": "x", "question": "the answer is", "answer": "3"}),
            serde_json::json!({"id": "y", "question": "e t e", "answer": "1"}),
        ],
    );
    let (rows_path, summary_path) = (dir.path().join("s.jsonl"), dir.path().join("s.json"));
    let (base, zero) = (fixture("tiny-llama.gguf"), fixture("tiny-lora-zero.gguf"));
    let out = dlogp(&[
        "eval",
        "--base",
        p(&base),
        "--rl-lora",
        p(&zero),
        "--data",
        p(&data),
        "--raw",
        "--template",
        "{question}",
        "--modes",
        "base,rl,extrapolate,replace:criterion=kl:tau=0",
        "-k",
        "3",
        "--max-tokens",
        "12",
        "--last-number",
        "-o",
        p(&rows_path),
        "--summary",
        p(&summary_path),
        "-q",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows = read_jsonl(&rows_path);
    let texts = |config: &str| -> Vec<String> {
        rows.iter()
            .filter(|r| r["config"] == config)
            .map(|r| format!("{}/{}: {}", r["id"], r["sample"], r["response"]))
            .collect()
    };
    assert_eq!(texts("base").len(), 6);
    assert_eq!(texts("base"), texts("rl"));
    assert_eq!(texts("base"), texts("extrapolate"));
    // kl ≥ 0 always fires, and the RL draw reuses the proposal's: same tokens again
    assert_eq!(texts("base"), texts("replace:criterion=kl:tau=0"));
    let s = read_json(&summary_path);
    assert_eq!(f(&s["configs"][2], "replacement_ratio"), 0.0);
    assert_eq!(f(&s["configs"][3], "replacement_ratio"), 1.0);
    let distinct: std::collections::HashSet<String> = texts("base")
        .into_iter()
        .map(|t| t[t.find(':').unwrap()..].to_string())
        .collect();
    assert!(distinct.len() > 1, "samples differ by key");
}

/// `dlogp tune`: every cell of the τ × γ grid is the `extrapolate`
/// configuration `dlogp eval` runs under that name (the same samples, the
/// same Avg@k), with an interval around it, and the choice follows the rule:
/// the best cell whose lower bound clears rl's upper bound, else the best
/// estimate, flagged.
#[test]
fn tune_reports_every_cell_as_eval_does_and_chooses_by_the_rule() {
    let dir = tempfile::tempdir().unwrap();
    let rows: Vec<Value> = ["the answer is", "1 + 2 =", "what is", "9 =", "a", "the"]
        .iter()
        .enumerate()
        .map(|(i, q)| serde_json::json!({"id": format!("p{i}"), "question": q, "answer": "8"}))
        .collect();
    let data = write_rows(dir.path(), "d.jsonl", &rows);
    let (base, lora) = (fixture("tiny-llama.gguf"), fixture("tiny-lora-random.gguf"));
    let common = [
        "--base",
        p(&base),
        "--rl-lora",
        p(&lora),
        "--data",
        p(&data),
        "--raw",
        "--template",
        "{question}",
        "--extract",
        "last-number",
        "-k",
        "4",
        "--max-tokens",
        "6",
        "--seed",
        "2",
        "--threads",
        "1",
        "-q",
    ];
    let json = dir.path().join("t.json");
    let mut args = vec![
        "tune",
        "--taus",
        "-0.5,-2",
        "--gammas",
        "0,0.3",
        "--json",
        p(&json),
    ];
    args.extend_from_slice(&common);
    let out = dlogp(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let t = read_json(&json);
    let cells = t["cells"].as_array().unwrap();
    let names: Vec<&str> = cells
        .iter()
        .map(|c| c["config"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "extrapolate:tau=-0.5:gamma=0",
            "extrapolate:tau=-0.5:gamma=0.3",
            "extrapolate:tau=-2:gamma=0",
            "extrapolate:tau=-2:gamma=0.3"
        ]
    );
    assert_eq!(t["n_problems"], 6);
    assert_eq!(t["interval"], "bootstrap");

    let summary = dir.path().join("s.json");
    let mut args = vec!["eval", "--modes", "rl,extrapolate:tau=-0.5:gamma=0,extrapolate:tau=-0.5:gamma=0.3,extrapolate:tau=-2:gamma=0,extrapolate:tau=-2:gamma=0.3", "--summary", p(&summary)];
    args.extend_from_slice(&common);
    let out = dlogp(&args);
    assert!(out.status.success(), "{}", stderr(&out));
    let s = read_json(&summary);
    let avg = |i: usize| f(&s["configs"][i], "avg_at_k");
    assert_eq!(f(&t["rl"], "estimate"), avg(0));
    for (i, c) in cells.iter().enumerate() {
        let iv = &c["avg_at_k"];
        assert_eq!(f(iv, "estimate"), avg(i + 1), "{}", c["config"]);
        assert!(
            f(iv, "lo") <= f(iv, "estimate") && f(iv, "estimate") <= f(iv, "hi"),
            "{c}"
        );
        assert_eq!(
            f(c, "replacement_ratio"),
            f(&s["configs"][i + 1], "replacement_ratio")
        );
    }
    // the paired differences: estimate = the cell's Avg@k − rl's, inside
    // its interval, at the Bonferroni level for 4 cells
    assert!(
        (f(&t, "paired_level") - (1.0 - 0.05 / 4.0)).abs() < 1e-12,
        "{t}"
    );
    for (i, c) in cells.iter().enumerate() {
        let d = &c["vs_rl"];
        assert!(
            (f(d, "estimate") - (avg(i + 1) - avg(0))).abs() < 1e-12,
            "{c}"
        );
        assert!(
            f(d, "lo") <= f(d, "estimate") && f(d, "estimate") <= f(d, "hi"),
            "{c}"
        );
    }
    // the rule, recomputed
    let est = |c: &Value| f(&c["avg_at_k"], "estimate");
    let beating: Vec<usize> = (0..cells.len())
        .filter(|&i| f(&cells[i]["vs_rl"], "lo") > 0.0)
        .collect();
    let chosen = t["selection"]["index"].as_u64().unwrap() as usize;
    let pool: Vec<usize> = if beating.is_empty() {
        (0..cells.len()).collect()
    } else {
        beating.clone()
    };
    let best = pool
        .iter()
        .map(|&i| est(&cells[i]))
        .fold(f64::MIN, f64::max);
    assert!(pool.contains(&chosen) && est(&cells[chosen]) == best, "{t}");
    assert_eq!(t["selection"]["beats_reference"], !beating.is_empty());
}

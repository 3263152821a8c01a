//! `dlogp score` on the tiny fixtures: exact properties and agreement with an
//! independent evaluation.

use dlogp::runtime::{plain_logits, PromptFormat, RlSource, Session};
use serde_json::{json, Value};

use crate::common::*;

const METRICS: [&str; 8] = [
    "logp_base",
    "logp_rl",
    "dlogp",
    "entropy_base",
    "entropy_rl",
    "kl",
    "kl_r",
    "js",
];

fn check_record_shape(r: &Value) {
    for key in ["id", "position", "token", "text", "rank_base", "rank_rl"] {
        assert!(r.get(key).is_some(), "record lacks {key}: {r}");
    }
    for key in METRICS {
        assert!(f(r, key).is_finite(), "{key} finite in {r}");
    }
}

#[test]
fn zero_b_adapter_gives_exact_zeros() {
    let dir = tempfile::tempdir().unwrap();
    let rows = write_rows(dir.path(), "rows.jsonl", &tiny_rows());
    let records = score(
        dir.path(),
        &[
            "--base",
            p(&fixture("tiny-llama.gguf")),
            "--rl-lora",
            p(&fixture("tiny-lora-zero.gguf")),
            "--input",
            p(&rows),
        ],
    );
    assert!(records.len() > 10, "one record per response token");
    for r in &records {
        check_record_shape(r);
        for key in ["dlogp", "kl", "kl_r", "js"] {
            assert_eq!(f(r, key), 0.0, "{key} must be exactly 0 in {r}");
        }
        assert_eq!(f(r, "logp_base"), f(r, "logp_rl"));
        assert_eq!(r["rank_base"], r["rank_rl"]);
    }
}

#[test]
fn random_adapter_moves_the_distribution() {
    let dir = tempfile::tempdir().unwrap();
    let rows = write_rows(dir.path(), "rows.jsonl", &tiny_rows());
    let records = score(
        dir.path(),
        &[
            "--base",
            p(&fixture("tiny-llama.gguf")),
            "--rl-lora",
            p(&fixture("tiny-lora-random.gguf")),
            "--input",
            p(&rows),
        ],
    );
    let nonzero = records
        .iter()
        .filter(|r| f(r, "dlogp").abs() > 1e-3)
        .count();
    assert!(
        nonzero * 2 > records.len(),
        "most tokens move: {nonzero}/{}",
        records.len()
    );
    for r in &records {
        check_record_shape(r);
        assert!(f(r, "kl") > 0.0 && f(r, "kl_r") > 0.0, "{r}");
        let js = 0.5 * (f(r, "kl") + f(r, "kl_r"));
        assert!((f(r, "js") - js).abs() < 1e-12);
        assert!((f(r, "dlogp") - (f(r, "logp_rl") - f(r, "logp_base"))).abs() < 1e-12);
    }
    // ids: given ones kept, missing ones are the line number
    assert_eq!(records[0]["id"], json!("a"));
    assert!(records.iter().any(|r| r["id"] == json!(2)));
    assert!(records.iter().any(|r| r["id"] == json!(7)));
}

#[test]
fn same_model_twice_gives_zeros_and_matches_plain_evaluation() {
    let dir = tempfile::tempdir().unwrap();
    let rows = write_rows(dir.path(), "rows.jsonl", &tiny_rows());
    let model = fixture("tiny-llama.gguf");
    let records = score(
        dir.path(),
        &["--base", p(&model), "--rl", p(&model), "--input", p(&rows)],
    );
    for r in &records {
        for key in ["dlogp", "kl", "kl_r", "js"] {
            assert_eq!(f(r, key), 0.0, "{key} in {r}");
        }
    }
    // logp_rl equals a plain single-context evaluation of the same tokens.
    let pair = load_pair(&model, RlSource::Model(model.clone()));
    let format = PromptFormat::for_model(pair.base(), false).unwrap();
    let input =
        dlogp::io::read_rows(std::fs::read_to_string(&rows).unwrap().as_bytes(), "rows").unwrap();
    let mut ctx = Session::new(pair.rl_context(&PLAIN_CONTEXT).unwrap(), 1, "RL");
    let mut k = 0;
    for row in &input {
        let seq = format
            .score_sequence(pair.base(), &row.body, "row".into())
            .unwrap();
        let tokens: Vec<_> = seq.prompt.iter().chain(&seq.response).copied().collect();
        let logits = plain_logits(&mut ctx, &tokens, 512).unwrap();
        for (j, &tok) in seq.response.iter().enumerate() {
            let at = seq.prompt.len() + j - 1;
            let expected = naive_log_softmax(&logits[at])[tok.0 as usize];
            let r = &records[k];
            assert_eq!(r["token"], json!(tok.0));
            assert_eq!(r["position"], json!(j));
            // Bit-identical logits (split KV cache, no flash attention), so
            // only the f64 summation order differs.
            assert!(
                (f(r, "logp_rl") - expected).abs() < 1e-9,
                "position {j}: {} vs plain {expected}",
                f(r, "logp_rl")
            );
            k += 1;
        }
    }
    assert_eq!(k, records.len());
}

fn naive_log_softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits
        .iter()
        .fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
    let lse = max
        + logits
            .iter()
            .map(|&x| (x as f64 - max).exp())
            .sum::<f64>()
            .ln();
    logits.iter().map(|&x| x as f64 - lse).collect()
}

/// Every metric, at every position, against an independent f64 computation
/// from raw logits of a plain evaluation of base and base+LoRA.
#[test]
fn metrics_equal_independent_f64_computation() {
    let dir = tempfile::tempdir().unwrap();
    let completion_rows: Vec<Value> = tiny_rows()
        .into_iter()
        .filter(|r| r.get("prompt").is_some())
        .collect();
    let rows = write_rows(dir.path(), "rows.jsonl", &completion_rows);
    let base = fixture("tiny-llama.gguf");
    let lora = fixture("tiny-lora-random.gguf");
    let records = score(
        dir.path(),
        &[
            "--base",
            p(&base),
            "--rl-lora",
            p(&lora),
            "--input",
            p(&rows),
            "--raw",
        ],
    );
    let pair = load_pair(
        &base,
        RlSource::Lora {
            path: lora,
            scale: 1.0,
        },
    );
    let format = PromptFormat::for_model(pair.base(), true).unwrap();
    let input =
        dlogp::io::read_rows(std::fs::read_to_string(&rows).unwrap().as_bytes(), "rows").unwrap();
    let mut base_ctx = Session::new(pair.base_context(&PLAIN_CONTEXT).unwrap(), 1, "base");
    let mut rl_ctx = Session::new(pair.rl_context(&PLAIN_CONTEXT).unwrap(), 1, "RL");
    let mut k = 0;
    let mut checked = 0;
    for row in &input {
        let seq = format
            .score_sequence(pair.base(), &row.body, "row".into())
            .unwrap();
        let tokens: Vec<_> = seq.prompt.iter().chain(&seq.response).copied().collect();
        let lb = plain_logits(&mut base_ctx, &tokens, 512).unwrap();
        let lr = plain_logits(&mut rl_ctx, &tokens, 512).unwrap();
        for (j, &tok) in seq.response.iter().enumerate() {
            let at = seq.prompt.len() + j - 1;
            let (b, r) = (naive_log_softmax(&lb[at]), naive_log_softmax(&lr[at]));
            let t = tok.0 as usize;
            let h = |lp: &[f64]| -lp.iter().map(|&l| l.exp() * l).sum::<f64>();
            let kl = |p: &[f64], q: &[f64]| {
                p.iter()
                    .zip(q)
                    .map(|(&a, &b)| a.exp() * (a - b))
                    .sum::<f64>()
            };
            let rank = |l: &[f32]| l.iter().filter(|&&x| x > l[t]).count() as u64;
            let rec = &records[k];
            let expect = [
                ("logp_base", b[t]),
                ("logp_rl", r[t]),
                ("dlogp", r[t] - b[t]),
                ("entropy_base", h(&b)),
                ("entropy_rl", h(&r)),
                ("kl", kl(&r, &b)),
                ("kl_r", kl(&b, &r)),
                ("js", 0.5 * (kl(&r, &b) + kl(&b, &r))),
            ];
            for (key, want) in expect {
                assert!(
                    (f(rec, key) - want).abs() < 1e-9 * (1.0 + want.abs()),
                    "{key} at response token {j}: {} vs {want}",
                    f(rec, key)
                );
            }
            assert_eq!(rec["rank_base"], json!(rank(&lb[at])), "rank_base at {j}");
            assert_eq!(rec["rank_rl"], json!(rank(&lr[at])), "rank_rl at {j}");
            k += 1;
            checked += 1;
        }
    }
    assert!(checked > 10);
}

/// Long rows are chunked by --batch-size and short rows packed as parallel
/// sequences, the models run one after the other or at once: the records are
/// bit-identical. (Regression: a unified KV cache, flash attention or
/// llama.cpp's llamafile GEMM each moved log-probs, by up to 0.5 nats.)
#[test]
fn batching_does_not_change_results() {
    let dir = tempfile::tempdir().unwrap();
    let long = "the answer is 1 + 2 = 3 and ".repeat(8);
    let mut rows = tiny_rows();
    rows.push(json!({"id": "long", "prompt": "e", "response": long}));
    let rows = write_rows(dir.path(), "rows.jsonl", &rows);
    let base = fixture("tiny-llama.gguf");
    let lora = fixture("tiny-lora-random.gguf");
    let common = [
        "--base",
        p(&base),
        "--rl-lora",
        p(&lora),
        "--input",
        p(&rows),
    ];
    let big = score(
        dir.path(),
        &[&common[..], &["--batch-size", "512", "--sequences", "8"]].concat(),
    );
    let small = score(
        dir.path(),
        &[&common[..], &["--batch-size", "7", "--sequences", "1"]].concat(),
    );
    let concurrent = score(
        dir.path(),
        &[
            &common[..],
            &["--batch-size", "16", "--overlap", "concurrent"],
        ]
        .concat(),
    );
    assert_eq!(big.len(), small.len());
    assert_eq!(big.len(), concurrent.len());
    assert!(big.iter().filter(|r| r["id"] == json!("long")).count() > 64);
    for ((a, b), c) in big.iter().zip(&small).zip(&concurrent) {
        assert_eq!(a["id"], b["id"]);
        assert_eq!(a["token"], b["token"]);
        assert_eq!(a["token"], c["token"]);
        assert_eq!(a, b, "batch 512 x 8 sequences vs batch 7 x 1 sequence");
        assert_eq!(a, c, "sequential vs concurrent models");
    }
}

#[test]
fn summary_counts_and_thresholds() {
    let dir = tempfile::tempdir().unwrap();
    let rows = write_rows(dir.path(), "rows.jsonl", &tiny_rows());
    let summary_path = dir.path().join("summary.json");
    let records = score(
        dir.path(),
        &[
            "--base",
            p(&fixture("tiny-llama.gguf")),
            "--rl-lora",
            p(&fixture("tiny-lora-random.gguf")),
            "--input",
            p(&rows),
            "--summary",
            p(&summary_path),
        ],
    );
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(&summary_path).unwrap()).unwrap();
    assert_eq!(summary["n_rows"], json!(3));
    assert_eq!(summary["n_tokens"], json!(records.len()));
    let mean = records.iter().map(|r| f(r, "dlogp")).sum::<f64>() / records.len() as f64;
    assert!(
        (summary["metrics"]["dlogp"]["mean"].as_f64().unwrap() - mean).abs() < 1e-9,
        "{summary}"
    );
    let above = records.iter().filter(|r| f(r, "dlogp").abs() > 0.5).count();
    let entry = summary["abs_dlogp_above"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["threshold"] == json!(0.5))
        .expect("threshold 0.5 reported")
        .clone();
    assert_eq!(entry["count"], json!(above));
}

#[test]
fn single_model_scoring_matches_the_pair_base_side() {
    let dir = tempfile::tempdir().unwrap();
    let rows = write_rows(dir.path(), "rows.jsonl", &tiny_rows());
    let base = fixture("tiny-llama.gguf");
    let pair = score(
        dir.path(),
        &[
            "--base",
            p(&base),
            "--rl-lora",
            p(&fixture("tiny-lora-random.gguf")),
            "--input",
            p(&rows),
        ],
    );
    let single = score(dir.path(), &["--base", p(&base), "--input", p(&rows)]);
    assert_eq!(pair.len(), single.len());
    for (a, b) in pair.iter().zip(&single) {
        assert_eq!(a["token"], b["token"]);
        assert!((f(a, "logp_base") - f(b, "logp")).abs() < 1e-9);
        assert!((f(a, "entropy_base") - f(b, "entropy")).abs() < 1e-9);
        assert_eq!(a["rank_base"], b["rank"]);
    }
}

/// The rows of `tests/data/score-rows.jsonl` as SmolLM2 score sequences.
fn smollm2_sequences(model: &dlogp::runtime::Model) -> Vec<dlogp::runtime::ScoreSequence> {
    let path = root().join("tests/data/score-rows.jsonl");
    let input =
        dlogp::io::read_rows(std::fs::read_to_string(&path).unwrap().as_bytes(), "rows").unwrap();
    let format = PromptFormat::for_model(model, false).unwrap();
    input
        .iter()
        .map(|row| {
            format
                .score_sequence(model, &row.body, "row".into())
                .unwrap()
        })
        .collect()
}

#[test]
fn noise_floor_of_identical_functions_is_exactly_zero_and_of_a_tiny_update_is_not() {
    use dlogp::runtime::{noise_floor_dlogp, LoadOptions, NoiseProbe, Overlap, ScoreOptions};
    let base = smollm2();
    let load = LoadOptions::default();
    let model = dlogp::runtime::Model::load(&base, &load).unwrap();
    let rows = smollm2_sequences(&model);
    drop(model);
    let n_tokens: usize = rows.iter().map(|r| r.response.len()).sum();
    let options = ScoreOptions {
        n_ctx: 1024,
        n_batch: 512,
        n_seq: 4,
        threads: 2,
        overlap: Overlap::Sequential,
        flash_attention: false,
    };
    // B = 0: the probe adapter is the identity, the pair two identical models
    let zero = NoiseProbe {
        std: 0.0,
        ..NoiseProbe::default()
    };
    let d = noise_floor_dlogp(&base, &load, &rows, options, &zero).unwrap();
    assert_eq!(d.len(), n_tokens);
    assert!(
        d.iter().all(|&x| x == 0.0),
        "identical functions: exactly 0"
    );
    let floor = dlogp::analysis::NoiseFloor::from_dlogp("zero", &d).unwrap();
    assert_eq!((floor.abs_dlogp.p99, floor.abs_dlogp.max), (0.0, 0.0));
    // B ~ N(0, 1e-7²): the quantized model's roundings flip, a few tenths of a nat
    let tiny = noise_floor_dlogp(&base, &load, &rows, options, &NoiseProbe::default()).unwrap();
    let floor = dlogp::analysis::NoiseFloor::from_dlogp("tiny", &tiny).unwrap();
    let s = floor.abs_dlogp;
    println!(
        "SmolLM2 Q4_1 noise floor over {} tokens: p50 {:.4} p95 {:.4} p99 {:.4} max {:.4}",
        s.count, s.p50, s.p95, s.p99, s.max
    );
    assert!(s.max > 0.01 && s.max < 1.0, "{s:?}");
    assert!(s.p50 <= s.p99 && s.p99 <= s.max);
}

#[test]
fn score_reports_the_noise_floor_in_its_summary() {
    let dir = tempfile::tempdir().unwrap();
    let rows = write_rows(dir.path(), "rows.jsonl", &tiny_rows());
    let summary_path = dir.path().join("summary.json");
    let records = score(
        dir.path(),
        &[
            "--base",
            p(&fixture("tiny-llama.gguf")),
            "--rl-lora",
            p(&fixture("tiny-lora-random.gguf")),
            "--input",
            p(&rows),
            "--summary",
            p(&summary_path),
            "--noise-floor",
        ],
    );
    let summary: Value =
        serde_json::from_str(&std::fs::read_to_string(&summary_path).unwrap()).unwrap();
    let floor = &summary["noise_floor"];
    assert_eq!(
        floor["abs_dlogp"]["count"],
        json!(records.len()),
        "{summary}"
    );
    assert!(
        floor["method"].as_str().unwrap().contains("1e-7"),
        "{floor}"
    );
    let (p99, max) = (
        floor["abs_dlogp"]["p99"].as_f64().unwrap(),
        floor["abs_dlogp"]["max"].as_f64().unwrap(),
    );
    assert!((0.0..=max).contains(&p99), "{floor}");
    // the pair's own Δlog p is far above a 1e-7 update's
    let pair_max = summary["metrics"]["dlogp"]["max"].as_f64().unwrap();
    assert!(
        max < 0.01 * pair_max.abs().max(1e-3),
        "{floor} vs {pair_max}"
    );
}

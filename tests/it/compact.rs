//! `dlogp lora-compact`: lower rank and F16 storage, checked through
//! llama.cpp's own Δlog p on the F32 fixture model. (On the Q4_1 SmolLM2,
//! llama.cpp quantizes activations to 8 bits, so any change of the factors,
//! even a 1e-6 relative one, moves Δlog p by up to ~0.3 nats: too noisy to
//! check an exact refactorisation.)

use std::path::Path;

use dlogp::gguf::{lora_for_model, write_lora_adapter, GgmlType, GgufFile, LoraInit, Value};

use crate::common::*;

const TARGETS: [&str; 3] = ["attn_q", "attn_v", "ffn_up"];

/// An adapter for tiny-llama stored at rank 8 whose updates have rank 4 (B's
/// last four columns repeat its first four), with alpha 16 (scale 2).
fn rank4_in_rank8(dir: &Path) -> std::path::PathBuf {
    let base = GgufFile::open(&fixture("tiny-llama.gguf")).unwrap();
    let init = LoraInit::Random {
        std_a: 0.125,
        std_b: 0.1,
    };
    let mut tensors = lora_for_model(&base, &TARGETS, 8, init, 9).unwrap();
    for t in &mut tensors {
        for i in 0..t.n_out {
            for c in 4..8 {
                t.b[i * 8 + c] = t.b[i * 8 + c - 4];
            }
        }
    }
    let path = dir.join("r8.gguf");
    let extra = [(
        "general.name".to_string(),
        Value::string("rank-4 update in a rank-8 adapter"),
    )];
    write_lora_adapter(&path, "llama", 16.0, &tensors, &extra).unwrap();
    path
}

fn compact(src: &Path, out: &Path, flags: &[&str]) {
    let mut args = vec!["lora-compact", "--lora", p(src), "--out", p(out)];
    args.extend_from_slice(flags);
    let o = dlogp(&args);
    assert!(o.status.success(), "lora-compact failed: {}", stderr(&o));
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

fn max_abs_diff(x: &[f64], y: &[f64]) -> f64 {
    assert_eq!(x.len(), y.len());
    x.iter()
        .zip(y)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max)
}

#[test]
fn exact_rank_reduction_and_f16_keep_llama_cpp_log_probs() {
    let dir = tempfile::tempdir().unwrap();
    let src = rank4_in_rank8(dir.path());
    let r4 = dir.path().join("r4.gguf");
    let r4h = dir.path().join("r4-f16.gguf");
    compact(&src, &r4, &["--rank", "4", "--type", "f32"]);
    compact(&src, &r4h, &["--rank", "4"]);

    // The files: rank-4 factors in the requested type, alpha = rank (the
    // scale is folded in), the source's metadata kept.
    for (path, ty) in [(&r4, GgmlType::F32), (&r4h, GgmlType::F16)] {
        let f = GgufFile::open(path).unwrap();
        assert_eq!(f.get_f64("adapter.lora.alpha"), Some(4.0));
        assert_eq!(
            f.get_str("general.name"),
            Some("rank-4 update in a rank-8 adapter")
        );
        assert_eq!(f.get_u64("dlogp.compact.source_rank"), Some(8));
        assert_eq!(f.get_u64("dlogp.compact.rank"), Some(4));
        assert!(f.get_f64("dlogp.compact.energy_min").unwrap() > 0.999_99);
        assert_eq!(f.tensors.len(), TARGETS.len() * 2 * 2);
        for t in &f.tensors {
            assert_eq!(t.ggml_type, ty, "{}", t.name);
            let rank_dim = if t.name.ends_with(".lora_a") {
                t.dims[1]
            } else {
                t.dims[0]
            };
            assert_eq!(rank_dim, 4, "{}", t.name);
        }
    }
    // half the rank in half the bytes per value: exactly a quarter of the data
    let data_bytes = |path: &Path| -> u64 {
        let f = GgufFile::open(path).unwrap();
        f.tensors.iter().map(|t| t.n_bytes().unwrap()).sum()
    };
    assert_eq!(data_bytes(&r4h) * 4, data_bytes(&src));

    let want = dlogps(dir.path(), &src);
    let moved = want.iter().map(|x| x.abs()).fold(0.0, f64::max);
    assert!(
        moved > 0.5,
        "the adapter moves log-probs visibly (max |Δ| {moved})"
    );
    let d32 = max_abs_diff(&want, &dlogps(dir.path(), &r4));
    assert!(
        d32 < 1e-3,
        "rank 8 → 4 (exact) changed Δlog p by up to {d32}"
    );
    let d16 = max_abs_diff(&want, &dlogps(dir.path(), &r4h));
    assert!(d16 < 2e-2, "F16 storage changed Δlog p by up to {d16}");
}

#[test]
fn compacting_a_zero_adapter_keeps_it_an_exact_no_op() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("zero-r2.gguf");
    compact(&fixture("tiny-lora-zero.gguf"), &out, &["--rank", "2"]);
    let rows = write_rows(dir.path(), "rows.jsonl", &tiny_rows());
    let records = score(
        dir.path(),
        &[
            "--base",
            p(&fixture("tiny-llama.gguf")),
            "--rl-lora",
            p(&out),
            "--input",
            p(&rows),
        ],
    );
    assert!(records.len() > 10);
    for r in &records {
        assert_eq!(f(r, "dlogp"), 0.0, "{r}");
    }
}

#[test]
fn bad_compaction_requests_are_clear_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.gguf");
    let lora = fixture("tiny-lora-random.gguf");
    let model = fixture("tiny-llama.gguf");
    let cases: [(Vec<&str>, &str); 4] = [
        (vec!["--lora", p(&lora), "--rank", "0"], "--rank 0"),
        (vec!["--lora", p(&lora), "--rank", "5"], "--rank 4 or less"),
        (vec!["--lora", p(&model)], "not a usable LoRA adapter"),
        (vec!["--lora", "/nonexistent/a.gguf"], "no such file"),
    ];
    for (args, needle) in cases {
        let mut all = vec!["lora-compact", "--out", p(&out)];
        all.extend(args);
        let o = dlogp(&all);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{all:?}: {err}");
        assert!(err.contains(needle), "{all:?}: `{needle}` not in {err}");
        assert!(!out.exists(), "no output on error");
    }
}

fn dlogp_in(dir: &Path, args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_dlogp"))
        .args(args)
        .current_dir(dir)
        .env("DLOGP_LOG", "warn")
        .output()
        .expect("the dlogp binary runs")
}

#[test]
fn default_pair_is_smollm2_with_the_committed_adapter() {
    let adapter = root().join("gguf/SmolLM2-135M-Instruct.arith-lowprob.gguf");
    let file = GgufFile::open(&adapter).expect("the trained adapter is committed");
    assert_eq!(file.get_str("general.type"), Some("adapter"));
    assert_eq!(file.get_u64("dlogp.compact.rank"), Some(8));
    let settings = file.get_str("dlogp.train.settings").unwrap();
    assert!(settings.contains("\"scheme\":\"lowprob\""), "{settings}");
    assert!(std::fs::metadata(&adapter).unwrap().len() < 6_000_000);

    let prompt = "What is 23 + 19 + 7? Answer with just the number.";
    let common = ["--max-tokens", "24", "--seed", "3", "--trace"];
    let dir = tempfile::tempdir().unwrap();
    let (t1, t2) = (dir.path().join("t1.jsonl"), dir.path().join("t2.jsonl"));
    let base = smollm2();
    let mut explicit = vec!["generate", "--base", p(&base), "--rl-lora", p(&adapter)];
    explicit.extend(common);
    explicit.extend([p(&t1), prompt]);
    let a = dlogp_in(&root(), &explicit);
    assert!(a.status.success(), "{}", stderr(&a));
    let mut implicit = vec!["generate"];
    implicit.extend(common);
    implicit.extend([p(&t2), prompt]);
    let b = dlogp_in(&root(), &implicit);
    assert!(b.status.success(), "{}", stderr(&b));
    assert_eq!(a.stdout, b.stdout, "same text");
    let (ra, rb) = (read_jsonl(&t1), read_jsonl(&t2));
    assert!(!ra.is_empty());
    assert_eq!(ra, rb, "same tokens, gate decisions and Δlog p");
    // the extrapolating pair really has an RL side: Δlog p is not all zero
    assert!(ra.iter().any(|r| f(r, "dlogp").abs() > 1e-3));

    // Elsewhere there is no default pair: a clear error with a hint.
    let c = dlogp_in(dir.path(), &["generate", prompt]);
    let err = stderr(&c);
    assert_eq!(c.status.code(), Some(1), "{err}");
    assert!(
        err.contains("gguf/SmolLM2-135M-Instruct.Q4_1.gguf") && err.contains("hint: pass --base"),
        "{err}"
    );
}

//! Decoding: exact equivalences between modes and between lockstep and
//! speculative decoding, distributions, and errors.

use dlogp::decode::{
    step, DecodeConfig, Engine, EngineOptions, Generation, Mode, PromptStats, Proposer, Request,
    MIN_SHARED_PREFIX,
};
use dlogp::runtime::{ModelPair, PromptFormat, RlSource};
use dlogp::sampler::{Criterion, Distribution, Gate, Pair, SamplingParams};
use serde_json::json;

use crate::common::*;

/// SmolLM2 and a strong random LoRA (its directory kept alive with it).
fn strong_pair() -> (tempfile::TempDir, ModelPair) {
    let dir = tempfile::tempdir().unwrap();
    let pair = load_pair(
        &smollm2(),
        RlSource::Lora {
            path: strong_lora(dir.path()),
            scale: 1.0,
        },
    );
    (dir, pair)
}

/// [`strong_pair`] where batching cannot change logits; elsewhere `None`,
/// with the reason printed (the exactness tests then skip).
fn exact_strong_pair() -> Option<(tempfile::TempDir, ModelPair)> {
    let (dir, pair) = strong_pair();
    match batch_dependence(&pair) {
        Some(reason) => {
            eprintln!("{reason}");
            None
        }
        None => Some((dir, pair)),
    }
}

fn requests(pair: &ModelPair, prompts: &[&str], samples: usize) -> Vec<Request> {
    let format = PromptFormat::for_model(pair.base(), false).unwrap();
    let mut out = Vec::new();
    for (i, prompt) in prompts.iter().enumerate() {
        let text = format.user_prompt(prompt).unwrap();
        let tokens = format.tokenize_prompt(pair.base(), &text);
        for s in 0..samples {
            out.push(Request {
                key: (i * samples + s) as u64,
                prompt: tokens.clone(),
            });
        }
    }
    out
}

/// One request per tokenized prompt, keyed by its index.
fn keyed(prompts: &[Vec<dlogp::runtime::Token>]) -> Vec<Request> {
    prompts
        .iter()
        .enumerate()
        .map(|(i, p)| Request {
            key: i as u64,
            prompt: p.clone(),
        })
        .collect()
}

fn run(
    pair: &ModelPair,
    cfg: &DecodeConfig,
    reqs: &[Request],
    draft: usize,
    n_seq: u32,
    max_tokens: usize,
) -> Vec<Generation> {
    run_with_stats(pair, cfg, reqs, draft, n_seq, max_tokens).0
}

/// [`run`], and the engine's prompt statistics.
fn run_with_stats(
    pair: &ModelPair,
    cfg: &DecodeConfig,
    reqs: &[Request],
    draft: usize,
    n_seq: u32,
    max_tokens: usize,
) -> (Vec<Generation>, PromptStats) {
    let opts = EngineOptions {
        max_tokens,
        stop: vec![],
        draft,
        n_seq,
        n_ctx: 1024,
        threads: 2,
    };
    let mut engine = Engine::for_pair(pair, cfg.clone(), opts).unwrap();
    let mut out: Vec<Option<Generation>> = vec![None; reqs.len()];
    engine
        .run(
            reqs,
            |_, _| {},
            |g| {
                let i = g.request;
                out[i] = Some(g);
                Ok(())
            },
        )
        .unwrap();
    let gens = out
        .into_iter()
        .map(|g| g.expect("every request finishes"))
        .collect();
    (gens, engine.prompt_stats())
}

const PROMPTS: [&str; 2] = ["What is 7 + 5?", "Name a color of the sky."];

/// Speculative gating (K = 2, 4, 8, 16) gives exactly the tokens, gate
/// decisions and Δlog p of lockstep decoding, across modes, criteria, seeds.
#[test]
fn speculative_equals_lockstep() {
    let Some((_dir, pair)) = exact_strong_pair() else {
        return;
    };
    let reqs = requests(&pair, &PROMPTS, 1);
    let cases = [
        (
            Mode::Extrapolate,
            Proposer::Base,
            Criterion::Dlogp,
            -0.3,
            0.1,
            0,
        ),
        (
            Mode::Replace,
            Proposer::Base,
            Criterion::Random,
            0.2,
            0.0,
            1,
        ),
        (Mode::Extrapolate, Proposer::Rl, Criterion::Kl, 0.05, 0.5, 2),
    ];
    let mut fired_somewhere = false;
    for (mode, proposer, criterion, tau, gamma, seed) in cases {
        let cfg = decode_config(mode, proposer, criterion, tau, gamma, seed);
        let lockstep = run(&pair, &cfg, &reqs, 1, 2, 24);
        fired_somewhere |= lockstep
            .iter()
            .any(|g| g.trace.iter().any(|t| t.gate && t.chosen != t.proposed));
        for k in [2, 4, 8, 16] {
            let spec = run(&pair, &cfg, &reqs, k, 2, 24);
            assert_eq!(
                lockstep, spec,
                "{mode:?}/{criterion:?}/seed {seed}: K = {k} differs from lockstep"
            );
        }
    }
    assert!(
        fired_somewhere,
        "the gate must fire for this test to mean something"
    );
}

/// Several sequences side by side give the same generations as one at a time.
#[test]
fn parallel_sequences_equal_one_at_a_time() {
    let Some((_dir, pair)) = exact_strong_pair() else {
        return;
    };
    let reqs = requests(&pair, &PROMPTS, 2);
    let cfg = decode_config(
        Mode::Extrapolate,
        Proposer::Base,
        Criterion::Dlogp,
        -0.3,
        0.1,
        7,
    );
    let (one, alone) = run_with_stats(&pair, &cfg, &reqs, 4, 1, 24);
    let (four, side_by_side) = run_with_stats(&pair, &cfg, &reqs, 4, 4, 24);
    assert_eq!(one, four);
    assert_ne!(
        one[0].tokens, one[1].tokens,
        "two samples of one prompt differ"
    );
    // One at a time nothing is running to copy from. Side by side all four
    // start together: each copies its longest prefix in common with those
    // before it (the chat template's system turn, or the whole prompt but
    // its last token for a second sample).
    let total: usize = reqs.iter().map(|r| r.prompt.len()).sum();
    assert_eq!(
        alone,
        PromptStats {
            tokens: total,
            copied: 0
        }
    );
    let expected: usize = (0..reqs.len())
        .map(|i| {
            let p = &reqs[i].prompt;
            let best = reqs[..i]
                .iter()
                .map(|q| q.prompt.iter().zip(p).take_while(|(a, b)| a == b).count())
                .max()
                .unwrap_or(0)
                .min(p.len() - 1);
            if best >= MIN_SHARED_PREFIX {
                best
            } else {
                0
            }
        })
        .sum();
    let second: usize = reqs
        .iter()
        .skip(1)
        .step_by(2)
        .map(|r| r.prompt.len() - 1)
        .sum();
    assert!(expected >= second);
    assert_eq!(
        side_by_side,
        PromptStats {
            tokens: total,
            copied: expected
        }
    );
}

/// Prompts that share only a prefix (a few-shot block, then different
/// questions) copy that prefix's cache and decode the rest, with exactly the
/// tokens of prompts decoded one at a time, lockstep and speculative; below
/// [`MIN_SHARED_PREFIX`] tokens in common nothing is copied.
#[test]
fn shared_prompt_prefixes_give_the_tokens_of_a_full_prefill() {
    let Some((_dir, pair)) = exact_strong_pair() else {
        return;
    };
    let shot = "Q: 2 + 3 = ? A: 5. Q: 10 - 4 = ? A: 6. Q: 3 * 3 = ? A: 9. ";
    let texts = [
        format!("{shot}Q: 7 + 8 = ? A:"),
        format!("{shot}Q: 9 - 2 = ? A:"),
    ];
    let tokenize = |t: &str| pair.base().tokenize(t, true);
    let prompts: Vec<_> = texts.iter().map(|t| tokenize(t)).collect();
    let common = prompts[0]
        .iter()
        .zip(&prompts[1])
        .take_while(|(a, b)| a == b)
        .count();
    assert!(common >= MIN_SHARED_PREFIX && common < prompts[0].len() - 1);
    let reqs = keyed(&prompts);
    let cfg = decode_config(
        Mode::Extrapolate,
        Proposer::Base,
        Criterion::Dlogp,
        -0.3,
        0.1,
        3,
    );
    for draft in [1, 4] {
        let (alone, a) = run_with_stats(&pair, &cfg, &reqs, draft, 1, 16);
        let (shared, s) = run_with_stats(&pair, &cfg, &reqs, draft, 2, 16);
        assert_eq!(alone, shared, "K = {draft}");
        assert_eq!(a.copied, 0);
        assert_eq!(a.tokens, s.tokens);
        assert_eq!(
            s.copied, common,
            "K = {draft}: the second prompt copies the shot"
        );
    }
    // a prefix shorter than the threshold is decoded, not copied
    let short = [tokenize("Q: 1 + 1 = ? A:"), tokenize("Q: 4 + 4 = ? A:")];
    assert!(short[0].len() < MIN_SHARED_PREFIX);
    let reqs = keyed(&short);
    let (_, s) = run_with_stats(&pair, &cfg, &reqs, 1, 2, 4);
    assert_eq!(s.copied, 0);
}

#[test]
fn gamma_zero_extrapolation_is_replace() {
    let (_dir, pair) = strong_pair();
    let reqs = requests(&pair, &PROMPTS, 1);
    let replace = run(
        &pair,
        &decode_config(
            Mode::Replace,
            Proposer::Base,
            Criterion::Dlogp,
            -0.2,
            0.0,
            5,
        ),
        &reqs,
        1,
        2,
        24,
    );
    let extrap = run(
        &pair,
        &decode_config(
            Mode::Extrapolate,
            Proposer::Base,
            Criterion::Dlogp,
            -0.2,
            0.0,
            5,
        ),
        &reqs,
        1,
        2,
        24,
    );
    assert_eq!(replace, extrap);
    assert!(replace
        .iter()
        .any(|g| g.trace.iter().any(|t| t.gate && t.chosen != t.proposed)));
}

/// A gate that never fires leaves the proposer's own tokens.
#[test]
fn gate_that_never_fires_gives_the_proposers_tokens() {
    let (_dir, pair) = strong_pair();
    let reqs = requests(&pair, &PROMPTS, 1);
    let tokens = |gs: Vec<Generation>| gs.into_iter().map(|g| g.tokens).collect::<Vec<_>>();
    let base = tokens(run(
        &pair,
        &decode_config(Mode::Base, Proposer::Base, Criterion::Never, 0.0, 0.0, 9),
        &reqs,
        1,
        2,
        24,
    ));
    let rl = tokens(run(
        &pair,
        &decode_config(Mode::Rl, Proposer::Base, Criterion::Never, 0.0, 0.0, 9),
        &reqs,
        1,
        2,
        24,
    ));
    assert_ne!(base, rl, "the adapter changes generations");
    for k in [1, 4] {
        let low_tau = decode_config(
            Mode::Extrapolate,
            Proposer::Base,
            Criterion::Dlogp,
            -1e9,
            0.1,
            9,
        );
        assert_eq!(
            base,
            tokens(run(&pair, &low_tau, &reqs, k, 2, 24)),
            "K = {k}"
        );
        let never_rl = decode_config(
            Mode::Extrapolate,
            Proposer::Rl,
            Criterion::Never,
            0.0,
            0.5,
            9,
        );
        assert_eq!(
            rl,
            tokens(run(&pair, &never_rl, &reqs, k, 2, 24)),
            "K = {k}"
        );
    }
}

/// A model paired with itself: Δlog p is exactly 0, so the dlogp gate never fires.
#[test]
fn a_model_paired_with_itself_never_fires() {
    let model = fixture("tiny-llama.gguf");
    let pair = load_pair(&model, RlSource::Model(model.clone()));
    let reqs = requests(&pair, &["the answer is"], 3);
    let gens = run(
        &pair,
        &decode_config(
            Mode::Extrapolate,
            Proposer::Base,
            Criterion::Dlogp,
            -1e-12,
            0.1,
            1,
        ),
        &reqs,
        1,
        3,
        24,
    );
    for g in &gens {
        assert!(!g.trace.is_empty());
        for t in &g.trace {
            assert!(!t.gate);
            assert_eq!(t.dlogp, Some(0.0));
        }
    }
}

/// Draw many decisions from synthetic log-probs: with `always`, replace
/// samples π_RL and extrapolate samples π_X, like `global`.
#[test]
fn always_gate_samples_the_target_distribution() {
    let lp = |p: &[f64]| p.iter().map(|x| x.ln()).collect::<Vec<f64>>();
    let base = lp(&[0.5, 0.2, 0.2, 0.1]);
    let rl = lp(&[0.1, 0.4, 0.3, 0.2]);
    let gamma = 0.5;
    // π_X ∝ π_R^(1+γ) / π_B^γ
    let x: Vec<f64> = (0..4)
        .map(|i| (rl[i] * (1.0 + gamma) - base[i] * gamma).exp())
        .collect();
    let z: f64 = x.iter().sum();
    let px: Vec<f64> = x.iter().map(|v| v / z).collect();
    let prl: Vec<f64> = rl.iter().map(|v| v.exp()).collect();
    let sampling = SamplingParams {
        temperature: 1.0,
        top_k: 0,
        top_p: 1.0,
    };
    let n = 40_000;
    for (mode, target) in [
        (Mode::Replace, &prl),
        (Mode::Extrapolate, &px),
        (Mode::Global, &px),
    ] {
        let cfg = DecodeConfig::new(
            mode,
            Proposer::Base,
            Gate::new(Criterion::Always, 0.0).unwrap(),
            gamma,
            sampling,
            11,
        )
        .unwrap();
        let mut counts = [0usize; 4];
        for i in 0..n {
            let lp = Pair::new(Some(&base[..]), Some(&rl[..]));
            let d = step::step(&cfg, lp, i as u64, 0).unwrap().decision;
            assert!(d.fired);
            counts[d.chosen as usize] += 1;
        }
        let chi2: f64 = (0..4)
            .map(|i| {
                let e = target[i] * n as f64;
                (counts[i] as f64 - e).powi(2) / e
            })
            .sum();
        // 3 degrees of freedom: p = 0.001 at 16.27
        assert!(
            chi2 < 16.27,
            "{mode:?}: chi2 {chi2}, counts {counts:?}, target {target:?}"
        );
    }
    // sanity: the distributions under test really differ
    assert!(Distribution::from_logprobs(&rl, &sampling).unwrap().prob(0) < 0.11);
}

#[test]
fn generate_cli_streams_and_writes_jsonl() {
    let dir = tempfile::tempdir().unwrap();
    let base = smollm2();
    let common = [
        "generate",
        "--base",
        p(&base),
        "--max-tokens",
        "24",
        "--seed",
        "4",
        "-q",
    ];
    let out = dlogp(&[&common[..], &["What is 2 + 2?"]].concat());
    assert!(out.status.success(), "{}", stderr(&out));
    let streamed = String::from_utf8(out.stdout).unwrap();
    let rows = write_rows(
        dir.path(),
        "p.jsonl",
        &[json!({"id": "q", "prompt": "What is 2 + 2?"})],
    );
    let out_path = dir.path().join("g.jsonl");
    let out = dlogp(
        &[
            &common[..],
            &["--input", p(&rows), "--output", p(&out_path)],
        ]
        .concat(),
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let got = read_jsonl(&out_path);
    assert_eq!(got.len(), 1);
    assert_eq!(got[0]["id"], json!("q"));
    assert_eq!(format!("{}\n", got[0]["text"].as_str().unwrap()), streamed);
    assert!(got[0]["n_tokens"].as_u64().unwrap() > 0);
}

#[test]
fn generate_rejects_bad_parameters() {
    let base = smollm2();
    for (extra, needle) in [
        (&["--gamma", "-1"][..], "gamma"),
        (&["--top-p", "0"][..], "top-p"),
        (&["--top-p", "1.5"][..], "top-p"),
        (&["--temperature", "0"][..], "temperature"),
        (&["--draft", "0"][..], "draft"),
        (&["--ctx-size", "8"][..], "--ctx-size"),
        (&["--mode", "rl"][..], "RL model"),
    ] {
        let mut args = vec!["generate", "--base", p(&base), "--max-tokens", "4"];
        args.extend_from_slice(extra);
        args.push("What is 2 + 2? Please answer.");
        let out = dlogp(&args);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {err}");
        assert!(err.contains(needle), "{extra:?}: {err}");
        assert!(out.stdout.is_empty(), "nothing on stdout after an error");
    }
}

/// The random tiny model emits arbitrary byte tokens (split and invalid UTF-8):
/// text assembly and stop-string search must cope (regression: slicing a
/// string inside a multi-byte character panicked).
#[test]
fn byte_tokens_and_stop_strings_never_panic() {
    let dir = tempfile::tempdir().unwrap();
    let model = fixture("tiny-llama.gguf");
    let rows = write_rows(dir.path(), "p.jsonl", &[json!({"prompt": "the answer is"})]);
    let out_path = dir.path().join("g.jsonl");
    let out = dlogp(&[
        "generate",
        "--base",
        p(&model),
        "--raw",
        "--max-tokens",
        "120",
        "--top-p",
        "1",
        "--stop",
        "zz",
        "--stop",
        "日本",
        "--samples",
        "24",
        "-q",
        "--input",
        p(&rows),
        "--output",
        p(&out_path),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let gens = read_jsonl(&out_path);
    assert_eq!(gens.len(), 24);
    let long = gens
        .iter()
        .filter(|g| g["n_tokens"].as_u64().unwrap() > 20)
        .count();
    assert!(
        long > 3,
        "enough long generations to exercise the text assembly"
    );
    for g in &gens {
        let text = g["text"].as_str().unwrap();
        assert!(
            !text.contains("zz") && !text.contains("日本"),
            "stop strings are cut: {text:?}"
        );
    }
}

/// A sliding-window model never copies a prompt's cache (a long-running
/// source has dropped the positions the copy would need); the same model
/// without the window does.
#[test]
fn sliding_window_models_decode_every_prompt() {
    let dir = tempfile::tempdir().unwrap();
    let mut copied = Vec::new();
    let mut lens = Vec::new();
    for window in [None, Some(4u32)] {
        let mut w = dlogp::gguf::tiny_llama(&Default::default(), 1).unwrap();
        if let Some(n) = window {
            w.set("llama.attention.sliding_window", dlogp::gguf::Value::U32(n));
        }
        let path = dir
            .path()
            .join(format!("window-{}.gguf", window.unwrap_or(0)));
        w.write(&path).unwrap();
        let model = dlogp::runtime::Model::load(&path, &Default::default()).unwrap();
        assert_eq!(model.sliding_window(), window.map(u64::from));
        let prompt = model.tokenize("the answer is the answer is the answer is the answer", true);
        assert!(prompt.len() > MIN_SHARED_PREFIX, "{} tokens", prompt.len());
        let reqs = keyed(&[prompt.clone(), prompt.clone()]);
        let cfg = decode_config(Mode::Base, Proposer::Base, Criterion::Dlogp, -0.3, 0.1, 0);
        let opts = EngineOptions {
            max_tokens: 4,
            stop: vec![],
            draft: 1,
            n_seq: 2,
            n_ctx: 128,
            threads: 2,
        };
        let mut engine = Engine::for_model(&model, cfg, opts).unwrap();
        engine.run(&reqs, |_, _| {}, |_| Ok(())).unwrap();
        copied.push(engine.prompt_stats().copied);
        lens.push(prompt.len());
    }
    assert_eq!(copied, [lens[0] - 1, 0]);
}

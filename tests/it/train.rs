//! The trainer's candle forward against llama.cpp, its gradients against
//! finite differences, and the adapters it writes.

use std::path::Path;

use candle_core::{Device, Tensor};
use dlogp::gguf::LoraTensor;
use dlogp::runtime::{plain_logits, LoadOptions, Model, RlSource, Session, Token};
use dlogp::train::{init_threads, LoraConfig, LoraTarget, Policy, THREAD_ENV};

use crate::common::*;

const TEXT: &str = "The answer is 4. Let me check: 2 + 2 = 4, so the answer \
                    is \\boxed{4}. Next, 12 times 3 is 36 and 36 minus 7 is 29.";

/// candle on one thread (fastest here), set before its first tensor op.
fn single_threaded() {
    for key in THREAD_ENV {
        if std::env::var_os(key).is_none() {
            std::env::set_var(key, "1");
        }
    }
    init_threads();
}

fn lora(rank: usize, targets: &[LoraTarget]) -> LoraConfig {
    LoraConfig::new(rank, rank as f32, targets, None).unwrap()
}

fn policy(path: &Path, cfg: LoraConfig) -> Policy {
    single_threaded();
    Policy::load(path, cfg, 7, &Device::Cpu).unwrap()
}

/// Token ids of `text` under the model's own tokenizer (with BOS).
fn tokens(model: &Model, text: &str) -> Vec<u32> {
    model.tokenize(text, true).iter().map(|t| t.0).collect()
}

/// llama.cpp's log-prob of every next token (`out[t]` = log p(tokens[t+1])).
fn llama_logprobs(model: &Model, toks: &[u32]) -> Vec<f64> {
    let mut ctx = Session::new(model.new_context(&PLAIN_CONTEXT).unwrap(), 1, "model");
    let ids: Vec<Token> = toks.iter().map(|&t| Token(t)).collect();
    let logits = plain_logits(&mut ctx, &ids, 512).unwrap();
    next_token_logprobs(&logits, toks)
}

fn next_token_logprobs(logits: &[Vec<f32>], toks: &[u32]) -> Vec<f64> {
    (0..toks.len() - 1)
        .map(|t| {
            let row = &logits[t];
            let max = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
            let lse = max
                + row
                    .iter()
                    .map(|&x| (x as f64 - max).exp())
                    .sum::<f64>()
                    .ln();
            row[toks[t + 1] as usize] as f64 - lse
        })
        .collect()
}

fn trainer_logprobs(p: &Policy, toks: &[u32]) -> Vec<f64> {
    p.token_logprobs(toks, 1)
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f64::from)
        .collect()
}

fn diffs(a: &[f64], b: &[f64]) -> (f64, f64) {
    assert_eq!(a.len(), b.len());
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| (x - y).abs()).collect();
    let max = d.iter().fold(0.0f64, |m, &x| m.max(x));
    (d.iter().sum::<f64>() / d.len() as f64, max)
}

/// On an F32 model llama.cpp and the trainer compute the same function: the
/// log-prob of every real next token agrees at every position to the
/// precision of llama.cpp's F16 KV cache (measured: mean 5e-4, max 2e-3
/// nats over 112 tokens; a wrong rotation or head mapping is off by far more).
#[test]
fn tiny_forward_matches_llama_cpp_at_every_position() {
    let path = fixture("tiny-llama.gguf");
    let model = Model::load(&path, &LoadOptions::default()).unwrap();
    let toks = tokens(&model, TEXT);
    assert!(toks.len() > 30, "{}", toks.len());
    let want = llama_logprobs(&model, &toks);
    let p = policy(&path, lora(4, &LoraTarget::ALL));
    let got = trainer_logprobs(&p, &toks);
    let (mean, max) = diffs(&got, &want);
    eprintln!(
        "tiny F32: mean |Δ| {mean:.2e}, max {max:.2e} over {} tokens",
        got.len()
    );
    assert!(mean < 1e-3 && max < 5e-3, "mean {mean}, max {max}");
    // the full distributions agree too, not just the chosen tokens
    let ids: Vec<Token> = toks.iter().map(|&t| Token(t)).collect();
    let mut ctx = Session::new(model.new_context(&PLAIN_CONTEXT).unwrap(), 1, "model");
    let ll = plain_logits(&mut ctx, &ids, 512).unwrap();
    let tl = p.logits(&toks).unwrap().to_vec2::<f32>().unwrap();
    for (t, (a, b)) in ll.iter().zip(&tl).enumerate() {
        for (v, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() < 2e-2, "position {t}, token {v}: {x} vs {y}");
        }
    }
}

/// SmolLM2 Q4_1: the trainer dequantizes to f32, llama.cpp multiplies the
/// quantized weights by 8-bit-quantized activations (and keeps an F16 KV
/// cache), so single tokens differ by tenths of a nat. Measured on 52 tokens:
/// mean |Δ| 0.048, max 0.29 nats.
#[test]
fn smollm2_forward_matches_llama_cpp_within_quantization_noise() {
    let path = smollm2();
    let model = Model::load(&path, &LoadOptions::default()).unwrap();
    let toks = tokens(&model, TEXT);
    let want = llama_logprobs(&model, &toks);
    let p = policy(&path, lora(4, &[LoraTarget::Q, LoraTarget::V]));
    let got = trainer_logprobs(&p, &toks);
    let (mean, max) = diffs(&got, &want);
    eprintln!(
        "SmolLM2 Q4_1: mean |Δ| {mean:.4}, max {max:.4} nats over {} tokens",
        got.len()
    );
    assert!(mean < 0.08, "mean {mean}, max {max}");
    assert!(max < 0.4, "mean {mean}, max {max}");
    // a wrong rotation (or layout) would be off by nats well after position 0
    let late = &got[got.len() / 2..];
    let late_want = &want[want.len() / 2..];
    assert!(diffs(late, late_want).0 < 0.08);
}

/// Random values for every adapter (A and B), so every tensor has a gradient.
fn randomize(p: &Policy, std: f32, seed: u64) {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1);
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((state >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 2.0 * std
    };
    let tensors: Vec<LoraTensor> = p
        .lora_tensors()
        .unwrap()
        .into_iter()
        .map(|mut t| {
            t.a.iter_mut().for_each(|x| *x = next());
            t.b.iter_mut().for_each(|x| *x = next());
            t
        })
        .collect();
    p.set_lora(&tensors).unwrap();
}

/// A fixed scalar of the token log-probs: Σ_t c_t log p_t.
fn objective(p: &Policy, toks: &[u32]) -> Tensor {
    let lp = p.token_logprobs(toks, 3).unwrap();
    let n = lp.dims1().unwrap();
    let c: Vec<f32> = (0..n).map(|i| ((i % 5) as f32 - 2.0) * 0.3).collect();
    let c = Tensor::from_vec(c, n, &Device::Cpu).unwrap();
    (lp * c).unwrap().sum_all().unwrap()
}

/// Every trainable tensor gets a non-zero gradient, and the gradients equal
/// central finite differences of the forward.
#[test]
fn tiny_gradients_reach_every_adapter_and_match_finite_differences() {
    let path = fixture("tiny-llama.gguf");
    let model = Model::load(&path, &LoadOptions::default()).unwrap();
    let toks = tokens(&model, TEXT);
    let p = policy(&path, lora(4, &LoraTarget::ALL));
    assert_eq!(p.adapters().len(), 7 * p.shape().n_layer);
    randomize(&p, 0.3, 1);
    let grads = objective(&p, &toks).backward().unwrap();
    for ad in p.adapters() {
        for (which, var) in [("A", &ad.a), ("B", &ad.b)] {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{} {which}: no gradient", ad.base_name));
            let norm = g
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(norm > 1e-12, "{} {which}: zero gradient", ad.base_name);
        }
    }
    // finite differences on the largest gradient entries of a few tensors
    let h = 1e-2f32;
    let mut checked = 0;
    for ad in p.adapters().iter().step_by(3) {
        for var in [&ad.a, &ad.b] {
            let g = grads.get(var.as_tensor()).unwrap();
            let gv = g.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let (i, &gi) = gv
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.abs().total_cmp(&b.1.abs()))
                .unwrap();
            let shape = var.shape().clone();
            let orig = var.flatten_all().unwrap().to_vec1::<f32>().unwrap();
            let eval = |delta: f32| {
                let mut v = orig.clone();
                v[i] += delta;
                var.set(&Tensor::from_vec(v, shape.clone(), &Device::Cpu).unwrap())
                    .unwrap();
                objective(&p, &toks).to_scalar::<f32>().unwrap() as f64
            };
            let fd = (eval(h) - eval(-h)) / (2.0 * h as f64);
            var.set(&Tensor::from_vec(orig, shape, &Device::Cpu).unwrap())
                .unwrap();
            let rel = (fd - gi as f64).abs() / (gi.abs() as f64).max(1e-3);
            assert!(
                rel < 0.02,
                "{}: grad {gi} vs finite difference {fd}",
                ad.base_name
            );
            checked += 1;
        }
    }
    assert!(checked >= 8);
}

/// The same on SmolLM2 with rank 16 on all seven projections: 420 tensors,
/// each with a non-zero gradient (a fused RMSNorm would leave all at none).
#[test]
fn smollm2_every_adapter_gets_a_gradient() {
    let path = smollm2();
    let model = Model::load(&path, &LoadOptions::default()).unwrap();
    let toks = tokens(&model, "Compute 3 + 4. The answer is \\boxed{7}.");
    let p = policy(&path, lora(16, &LoraTarget::ALL));
    assert_eq!(p.vars().len(), 420);
    randomize(&p, 0.02, 2);
    let grads = objective(&p, &toks).backward().unwrap();
    for ad in p.adapters() {
        for var in [&ad.a, &ad.b] {
            let g = grads.get(var.as_tensor()).expect("gradient");
            let norm = g
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .to_scalar::<f32>()
                .unwrap();
            assert!(norm > 0.0, "{}: zero gradient", ad.base_name);
        }
    }
}

/// An adapter written by the trainer, loaded by llama.cpp, moves the
/// log-probs exactly as the trainer's own forward does; B = 0 moves nothing.
#[test]
fn written_adapter_has_the_trainers_effect_in_llama_cpp() {
    let dir = tempfile::tempdir().unwrap();
    let path = fixture("tiny-llama.gguf");
    let model = Model::load(&path, &LoadOptions::default()).unwrap();
    let toks = tokens(&model, TEXT);
    let p = policy(
        &path,
        LoraConfig::new(
            4,
            8.0,
            &[LoraTarget::Q, LoraTarget::O, LoraTarget::Down],
            Some(&[1]),
        )
        .unwrap(),
    );
    assert_eq!(p.adapters().len(), 3);
    // B = 0 (the initial adapter): Δlog p = 0 exactly on the pair
    let zero = dir.path().join("zero.gguf");
    p.write_adapter(&zero, &[]).unwrap();
    let ids: Vec<Token> = toks.iter().map(|&t| Token(t)).collect();
    let pair = load_pair(
        &path,
        RlSource::Lora {
            path: zero,
            scale: 1.0,
        },
    );
    let lb = plain_logits(
        &mut Session::new(pair.base_context(&PLAIN_CONTEXT).unwrap(), 1, "base"),
        &ids,
        512,
    )
    .unwrap();
    let lr = plain_logits(
        &mut Session::new(pair.rl_context(&PLAIN_CONTEXT).unwrap(), 1, "RL"),
        &ids,
        512,
    )
    .unwrap();
    assert_eq!(lb, lr, "a B = 0 adapter changes nothing");
    drop(pair);

    randomize(&p, 0.3, 3);
    let trained = dir.path().join("trained.gguf");
    p.write_adapter(&trained, &[]).unwrap();
    let pair = load_pair(
        &path,
        RlSource::Lora {
            path: trained,
            scale: 1.0,
        },
    );
    let lb = plain_logits(
        &mut Session::new(pair.base_context(&PLAIN_CONTEXT).unwrap(), 1, "base"),
        &ids,
        512,
    )
    .unwrap();
    let lr = plain_logits(
        &mut Session::new(pair.rl_context(&PLAIN_CONTEXT).unwrap(), 1, "RL"),
        &ids,
        512,
    )
    .unwrap();
    let dlogp_llama: Vec<f64> = next_token_logprobs(&lr, &toks)
        .iter()
        .zip(next_token_logprobs(&lb, &toks))
        .map(|(r, b)| r - b)
        .collect();
    let with = trainer_logprobs(&p, &toks);
    let p0 = policy(
        &path,
        LoraConfig::new(4, 8.0, &[LoraTarget::Q], Some(&[1])).unwrap(),
    );
    let without = trainer_logprobs(&p0, &toks);
    let dlogp_trainer: Vec<f64> = with.iter().zip(&without).map(|(a, b)| a - b).collect();
    let moved = dlogp_llama.iter().map(|d| d.abs()).sum::<f64>() / dlogp_llama.len() as f64;
    assert!(
        moved > 0.05,
        "the random adapter should move log-probs, moved {moved}"
    );
    let (mean, max) = diffs(&dlogp_trainer, &dlogp_llama);
    eprintln!("adapter effect: mean |Δlog p| {moved:.3}; trainer vs llama.cpp mean {mean:.2e}, max {max:.2e}");
    // F32 adapter and weights; the difference is llama.cpp's F16 KV cache
    // (measured: mean 6e-4, max 2e-3 nats against a mean effect of 1.35).
    assert!(mean < 1e-3 && max < 5e-3, "mean {mean}, max {max}");
}

mod run {
    use super::*;
    use dlogp::train::loss::ClipParams;
    use dlogp::train::optim::AdamWConfig;
    use dlogp::train::{Reweight, StepMetrics, TrainSettings, Trainer};

    fn settings(steps: u64, reweight: Reweight) -> TrainSettings {
        TrainSettings {
            lora: LoraConfig::new(4, 4.0, &LoraTarget::ALL, None).unwrap(),
            reweight,
            clip: ClipParams::default(),
            optim: AdamWConfig {
                lr: 0.05,
                weight_decay: 0.0,
                warmup_steps: 0,
                ..AdamWConfig::default()
            },
            steps,
            prompts_per_step: 3,
            group_size: 8,
            updates_per_step: 1,
            max_tokens: 3,
            overlong_buffer: 0,
            dynamic_sampling: true,
            max_draw_factor: 3,
            reward_correct: 1.0,
            reward_wrong: -1.0,
            seed: 11,
            rollout_sequences: 8,
            rollout_threads: 2,
        }
    }

    fn prompts(model: &Model) -> Vec<Vec<u32>> {
        ["the answer is", "a tea at the", "e t e", "what is 2 + 2"]
            .iter()
            .map(|t| tokens(model, t))
            .collect()
    }

    /// The synthetic task: a response is correct when its first token is one
    /// of the tokens that (at the start) carry ≈ 30 % of the first prompt's
    /// next-token mass. Returns the set and its mass under a policy.
    fn target_set(p: &Policy, prompt: &[u32]) -> Vec<u32> {
        let logits = p.logits(prompt).unwrap().to_vec2::<f32>().unwrap();
        let last = logits.last().unwrap();
        let max = last.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let z: f32 = last.iter().map(|&x| (x - max).exp()).sum();
        let mut probs: Vec<(f32, u32)> = last
            .iter()
            .enumerate()
            .map(|(i, &x)| ((x - max).exp() / z, i as u32))
            .collect();
        // every other token down the ranking until 30 % of the mass
        probs.sort_by(|a, b| b.0.total_cmp(&a.0));
        let mut set = Vec::new();
        let mut mass = 0.0;
        for &(pr, id) in probs.iter().skip(1).step_by(2) {
            if mass >= 0.3 {
                break;
            }
            set.push(id);
            mass += pr;
        }
        set
    }

    fn mass(p: &Policy, prompt: &[u32], set: &[u32]) -> f64 {
        let logits = p.logits(prompt).unwrap().to_vec2::<f32>().unwrap();
        let last = logits.last().unwrap();
        let max = last.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
        let z: f64 = last.iter().map(|&x| (x as f64 - max).exp()).sum();
        set.iter()
            .map(|&t| (last[t as usize] as f64 - max).exp() / z)
            .sum()
    }

    fn run(trainer: &mut Trainer, set: &[u32], until: u64) -> Vec<StepMetrics> {
        let verify = |_: usize, r: &dlogp::train::rollout::Rollout| {
            r.response.first().is_some_and(|t| set.contains(t))
        };
        let mut out = Vec::new();
        while trainer.steps_done() < until {
            out.push(trainer.step(&verify).unwrap());
        }
        out
    }

    /// A few DAPO steps on a learnable task raise the reward and the
    /// probability of the rewarded tokens, and change the adapter.
    #[test]
    fn a_few_steps_learn_a_synthetic_task() {
        let path = fixture("tiny-llama.gguf");
        let model = Model::load(&path, &LoadOptions::default()).unwrap();
        let prompts = prompts(&model);
        single_threaded();
        for reweight in [Reweight::None, Reweight::Lowprob { alpha: 0.2 }] {
            let mut t =
                Trainer::new(&path, prompts.clone(), settings(8, reweight), &Device::Cpu).unwrap();
            let sets: Vec<Vec<u32>> = prompts.iter().map(|q| target_set(t.policy(), q)).collect();
            // one set for all prompts: the first prompt's
            let set = sets[0].clone();
            let before = mass(t.policy(), &prompts[0], &set);
            let metrics = run(&mut t, &set, 8);
            let after = mass(t.policy(), &prompts[0], &set);
            let first: f64 = metrics[..2].iter().map(|m| m.reward_mean).sum::<f64>() / 2.0;
            let last: f64 = metrics[6..].iter().map(|m| m.reward_mean).sum::<f64>() / 2.0;
            eprintln!(
                "{reweight:?}: mass {before:.3} -> {after:.3}; reward {first:.3} -> {last:.3}; {:?}",
                metrics.iter().map(|m| m.reward_mean).collect::<Vec<_>>()
            );
            assert!(after > before + 0.2, "mass {before} -> {after}");
            assert!(last > first, "reward {first} -> {last}");
            let b_norm: f32 = t
                .policy()
                .lora_tensors()
                .unwrap()
                .iter()
                .flat_map(|l| l.b.iter())
                .map(|x| x * x)
                .sum();
            assert!(b_norm > 0.0, "the adapter changed");
            // the first step has informative groups (accuracy ≈ 0.3)
            let m = &metrics[0];
            assert!(m.groups_kept > 0, "{m:?}");
            assert!(m.grad_tokens > 0 && m.rollout_tokens > 0 && m.entropy > 0.0);
            match reweight {
                Reweight::None => assert_eq!(m.reweight_mean, 1.0),
                _ => assert!(m.reweight_mean > 1.0 && m.reweight_mean < 1.2),
            }
        }
    }

    /// Several updates per rollout batch (π_old fixed before the first, so
    /// later mini-batches are off-policy and get clipped) and the
    /// sequence-level `ppl` weights both take the separate π_old pass; the
    /// task is still learned, and the clip acts.
    #[test]
    fn minibatches_and_ppl_weights_learn_and_clip() {
        let path = fixture("tiny-llama.gguf");
        let model = Model::load(&path, &LoadOptions::default()).unwrap();
        let prompts = prompts(&model);
        single_threaded();
        for (reweight, updates) in [
            (Reweight::Ppl { alpha: 0.2 }, 1),
            (Reweight::Highprob { c: 0.5 }, 3),
        ] {
            let cfg = TrainSettings {
                updates_per_step: updates,
                ..settings(8, reweight)
            };
            let mut t = Trainer::new(&path, prompts.clone(), cfg, &Device::Cpu).unwrap();
            let set = target_set(t.policy(), &prompts[0]);
            let before = mass(t.policy(), &prompts[0], &set);
            let metrics = run(&mut t, &set, 8);
            let after = mass(t.policy(), &prompts[0], &set);
            let clipped = metrics.iter().map(|m| m.clip_fraction).fold(0.0, f64::max);
            eprintln!("{reweight:?}, {updates} updates: mass {before:.3} -> {after:.3}, max clip fraction {clipped:.3}");
            assert!(after > before + 0.2, "mass {before} -> {after}");
            let m = &metrics[0];
            match reweight {
                // mean 1 within each group
                Reweight::Ppl { .. } => {
                    assert!((m.reweight_mean - 1.0).abs() < 0.05, "{m:?}");
                    // The same first rollouts without weights give another
                    // loss: the weights are applied (a mean of 1 alone would
                    // also hold with no reweighting at all).
                    let mut plain = Trainer::new(
                        &path,
                        prompts.clone(),
                        settings(8, Reweight::None),
                        &Device::Cpu,
                    )
                    .unwrap();
                    let m0 = &run(&mut plain, &set, 1)[0];
                    assert_eq!(m0.rollout_tokens, m.rollout_tokens, "same rollouts");
                    assert_eq!(m0.reweight_mean, 1.0);
                    assert!(
                        (m0.loss - m.loss).abs() > 1e-6,
                        "ppl weights must change the loss: {} vs {}",
                        m0.loss,
                        m.loss
                    );
                }
                _ => assert!(m.reweight_mean < 1.0 && m.reweight_mean > 0.5, "{m:?}"),
            }
            if updates > 1 {
                assert!(clipped > 0.0, "off-policy mini-batches should hit the clip");
            } else {
                assert_eq!(clipped, 0.0, "on-policy: ρ = 1, nothing is clipped");
            }
        }
    }

    /// Stopping after 2 steps, checkpointing and resuming gives the same
    /// adapter (bit for bit) and the same metrics as 4 steps in one go.
    #[test]
    fn interrupt_and_resume_equals_an_uninterrupted_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = fixture("tiny-llama.gguf");
        let model = Model::load(&path, &LoadOptions::default()).unwrap();
        let prompts = prompts(&model);
        single_threaded();
        let cfg = settings(4, Reweight::Lowprob { alpha: 0.2 });
        // two workers: sequences side by side, gradients summed in a fixed order
        let mut whole = Trainer::new(&path, prompts.clone(), cfg.clone(), &Device::Cpu).unwrap();
        whole.set_workers(2).unwrap();
        let set = target_set(whole.policy(), &prompts[0]);
        let m_whole = run(&mut whole, &set, 4);

        let mut first = Trainer::new(&path, prompts.clone(), cfg.clone(), &Device::Cpu).unwrap();
        first.set_workers(2).unwrap();
        let mut m_parts = run(&mut first, &set, 2);
        let ckpt = dir.path().join("ckpt.gguf");
        first.save_checkpoint(&ckpt).unwrap();
        drop(first);
        let mut second = Trainer::resume(&path, prompts, cfg, &Device::Cpu, &ckpt).unwrap();
        second.set_workers(2).unwrap();
        assert_eq!(second.steps_done(), 2);
        m_parts.extend(run(&mut second, &set, 4));

        let a = whole.policy().lora_tensors().unwrap();
        let b = second.policy().lora_tensors().unwrap();
        assert_eq!(a, b, "resumed adapter differs");
        for (x, y) in m_whole.iter().zip(&m_parts) {
            assert_eq!(
                (x.step, x.reward_mean, x.loss, x.grad_norm, x.groups_kept),
                (y.step, y.reward_mean, y.loss, y.grad_norm, y.groups_kept)
            );
        }
        // the written adapters are byte-identical too (metadata has no timings)
        let (pa, pb) = (dir.path().join("a.gguf"), dir.path().join("b.gguf"));
        whole.write_adapter(&pa).unwrap();
        second.write_adapter(&pb).unwrap();
        assert_eq!(std::fs::read(&pa).unwrap(), std::fs::read(&pb).unwrap());
    }
}

mod cli {
    use super::*;
    use dlogp::gguf::GgufFile;

    /// A prompt and the digit the tiny model most often answers it with (so
    /// a short response is right sometimes, but not always).
    fn learnable_task() -> (String, String) {
        let path = fixture("tiny-llama.gguf");
        let model = Model::load(&path, &LoadOptions::default()).unwrap();
        let policy = super::policy(&path, lora(2, &[LoraTarget::Q]));
        let digits: Vec<(u32, String)> = (0..model.n_vocab() as i32)
            .map(|i| (i as u32, model.piece(Token(i as u32))))
            .filter(|(_, p)| p.len() == 1 && p.chars().all(|c| c.is_ascii_digit()))
            .collect();
        let mut best = (0.0f64, String::new(), String::new());
        for prompt in [
            "the answer is",
            "1 + 2 =",
            "2 + 2 =",
            "what is",
            "e t e",
            "a",
            "9 =",
            "the",
        ] {
            let toks = tokens(&model, prompt);
            let logits = policy.logits(&toks).unwrap().to_vec2::<f32>().unwrap();
            let last = logits.last().unwrap();
            let max = last.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x)) as f64;
            let z: f64 = last.iter().map(|&x| (x as f64 - max).exp()).sum();
            for (id, piece) in &digits {
                let pr = (last[*id as usize] as f64 - max).exp() / z;
                if pr > best.0 && pr < 0.6 {
                    best = (pr, prompt.to_string(), piece.clone());
                }
            }
        }
        // measured: "what is" → "8" at 4.6 %
        assert!(best.0 > 0.03, "no digit is likely enough: {best:?}");
        (best.1, best.2)
    }

    fn train(dir: &Path, out: &str, steps: &str, extra: &[&str]) -> std::process::Output {
        let base = fixture("tiny-llama.gguf");
        let data = dir.join("tasks.jsonl");
        if !data.exists() {
            let (q, a) = learnable_task();
            let row = serde_json::json!({"question": q, "answer": a});
            std::fs::write(&data, format!("{row}\n")).unwrap();
        }
        let out = dir.join(out);
        let mut args = vec![
            "train",
            "--base",
            p(&base),
            "--data",
            p(&data),
            "--out",
            p(&out),
            "--raw",
            "--template",
            "{question}",
            "--extract",
            "last-number",
            "--steps",
            steps,
            "--prompts-per-step",
            "2",
            "-G",
            "16",
            "--max-tokens",
            "4",
            "--overlong-buffer",
            "0",
            "--rank",
            "2",
            "--alpha",
            "4",
            "--lr",
            "0.01",
            "--warmup",
            "2",
            "--seed",
            "3",
            "--checkpoint-every",
            "1",
            "--train-threads",
            "2",
            "--threads",
            "2",
            "--quiet",
        ];
        args.extend_from_slice(extra);
        let o = dlogp(&args);
        assert!(o.status.success(), "{}", stderr(&o));
        o
    }

    /// `dlogp train` writes a loadable adapter with its settings, seed, steps
    /// and metrics, a metrics row per step, and a checkpoint; stopping at 2
    /// steps and resuming to 4 writes the same adapter bytes as 4 steps.
    #[test]
    fn train_writes_adapter_metrics_and_resumes_exactly() {
        let dir = tempfile::tempdir().unwrap();
        train(dir.path(), "whole.gguf", "4", &[]);
        train(dir.path(), "parts.gguf", "2", &[]);
        train(dir.path(), "parts.gguf", "4", &["--resume"]);
        let whole = std::fs::read(dir.path().join("whole.gguf")).unwrap();
        let parts = std::fs::read(dir.path().join("parts.gguf")).unwrap();
        assert!(
            whole == parts,
            "the resumed adapter differs from the uninterrupted one"
        );

        let rows = read_jsonl(&dir.path().join("parts.gguf.metrics.jsonl"));
        let steps: Vec<u64> = rows.iter().map(|r| r["step"].as_u64().unwrap()).collect();
        assert_eq!(steps, vec![1, 2, 3, 4]);
        for key in [
            "reward_mean",
            "accuracy",
            "entropy",
            "clip_fraction",
            "reweight_mean",
            "rollout_tok_s",
            "grad_tok_s",
        ] {
            assert!(rows[0][key].is_number(), "{key} in {}", rows[0]);
        }
        assert!(dir.path().join("parts.gguf.ckpt.gguf").exists());

        let path = dir.path().join("whole.gguf");
        let file = GgufFile::open(&path).unwrap();
        assert_eq!(file.get_str("general.type"), Some("adapter"));
        assert_eq!(file.get_u64("dlogp.train.steps"), Some(4));
        assert_eq!(file.get_u64("dlogp.train.seed"), Some(3));
        let settings: serde_json::Value =
            serde_json::from_str(file.get_str("dlogp.train.settings").unwrap()).unwrap();
        assert_eq!(settings["group_size"], 16);
        let metrics: serde_json::Value =
            serde_json::from_str(file.get_str("dlogp.train.metrics").unwrap()).unwrap();
        assert_eq!(metrics["step"], 4);
        // the task contract: how the prompts were built and graded, as eval reads it
        let task = dlogp::eval::TaskContract::read(&path).unwrap();
        assert_eq!(
            task,
            Some(dlogp::eval::TaskContract {
                template: "{question}".to_string(),
                chat_template: false,
                extraction: vec![dlogp::eval::Extraction::LastNumber],
                max_tokens: Some(4),
            })
        );
        // trained: B is no longer zero, and llama.cpp loads it as the RL side
        let b_norm: f32 = (0..file.tensors.len())
            .filter(|&i| file.tensors[i].name.ends_with(".lora_b"))
            .flat_map(|i| file.read_tensor_f32(&path, &file.tensors[i]).unwrap())
            .map(|x| x * x)
            .sum();
        assert!(b_norm > 0.0);
        let base = fixture("tiny-llama.gguf");
        let scored = score(
            dir.path(),
            &[
                "--base",
                p(&base),
                "--rl-lora",
                p(&path),
                "--input",
                p(&write_rows(dir.path(), "rows.jsonl", &tiny_rows())),
            ],
        );
        assert!(scored.iter().any(|r| f(r, "dlogp").abs() > 1e-6));
    }

    #[test]
    fn resume_with_other_settings_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        train(dir.path(), "a.gguf", "1", &[]);
        let base = fixture("tiny-llama.gguf");
        let out = dlogp(&[
            "train",
            "--base",
            p(&base),
            "--arith",
            "3",
            "--out",
            p(&dir.path().join("a.gguf")),
            "--steps",
            "2",
            "--resume",
            "--quiet",
        ]);
        assert!(!out.status.success());
        assert!(
            stderr(&out).contains("different settings"),
            "{}",
            stderr(&out)
        );
    }

    #[test]
    fn unsupported_architecture_is_named() {
        single_threaded();
        let err = Policy::load(
            &fixture("tiny-lora-otherarch.gguf"),
            lora(2, &[LoraTarget::Q]),
            0,
            &Device::Cpu,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("`gemma3` is not supported"), "{err}");
    }
}

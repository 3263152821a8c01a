//! Forward + backward throughput of the trainer's LoRA policy, for
//! `scripts/bench-train.sh`: rank-R LoRA on all seven projections, sequences
//! of N deterministic token ids, loss = mean log-prob of tokens 1..N. With
//! THREADS > 1 each step runs THREADS sequences side by side, one thread each
//! (as the trainer does with --train-threads). Prints one JSON line.
//!
//! Usage: bench_train MODEL [SEQ_LEN] [STEPS] [RANK] [THREADS]

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::time::Instant;

use candle_core::Device;
use dlogp::train::{init_threads, LoraConfig, LoraTarget, Policy, THREAD_ENV};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let model = PathBuf::from(
        args.get(1)
            .ok_or("usage: bench_train MODEL [SEQ_LEN] [STEPS] [RANK] [THREADS]")?,
    );
    let arg = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (seq_len, steps, rank, threads) = (arg(2, 128), arg(3, 3), arg(4, 16), arg(5, 1));
    for key in THREAD_ENV {
        if std::env::var_os(key).is_none() {
            std::env::set_var(key, "1");
        }
    }
    init_threads();
    let t0 = Instant::now();
    let lora = LoraConfig::new(rank, 2.0 * rank as f32, &LoraTarget::ALL, None)?;
    let policy = Policy::load(&model, lora, 0, &Device::Cpu)?;
    let load_s = t0.elapsed().as_secs_f64();
    let n_vocab = policy.shape().n_vocab as u64;
    // the same ids as scripts/bench_train_torch.py
    let tokens: Vec<u32> = (0..seq_len as u64)
        .map(|i| ((i * 7919 + 13) % n_vocab) as u32)
        .collect();
    let one = || -> Result<f64, String> {
        let lp = policy
            .token_logprobs(&tokens, 1)
            .map_err(|e| e.to_string())?;
        let loss = lp
            .mean_all()
            .and_then(|l| l.neg())
            .map_err(|e| e.to_string())?;
        let grads = loss.backward().map_err(|e| e.to_string())?;
        // touch every gradient, as an optimizer would
        let mut n = 0usize;
        for v in policy.vars() {
            n += grads.get(v.as_tensor()).map_or(0, |g| g.elem_count());
        }
        assert_eq!(n, policy.n_params());
        Ok(loss.to_scalar::<f32>().map_err(|e| e.to_string())? as f64)
    };
    // THREADS sequences side by side on a persistent pool (as the trainer)
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()?;
    let step = || -> Result<f64, Box<dyn std::error::Error>> {
        let mut losses: Vec<Result<f64, String>> = vec![Err("not run".into()); threads];
        pool.scope(|s| {
            for slot in losses.iter_mut() {
                s.spawn(|_| *slot = one());
            }
        });
        let mut loss = 0.0;
        for l in losses {
            loss = l?;
        }
        Ok(loss)
    };
    let loss = step()?; // warm-up
    let t1 = Instant::now();
    for _ in 0..steps {
        step()?;
    }
    let s = t1.elapsed().as_secs_f64();
    let tok_s = (steps * seq_len * threads) as f64 / s;
    let line = serde_json::json!({
        "impl": "dlogp (candle)",
        "seq_len": seq_len,
        "steps": steps,
        "rank": rank,
        "targets": 7,
        "threads": threads,
        "params": policy.n_params(),
        "load_s": load_s,
        "loss": loss,
        "tokens_per_s": tok_s,
        "s_per_1k_tokens": 1000.0 / tok_s,
    });
    std::io::Write::write_all(&mut std::io::stdout(), format!("{line}\n").as_bytes())?;
    Ok(())
}

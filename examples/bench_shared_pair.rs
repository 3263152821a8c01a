//! What a shared-weights pair could gain (ARCHITECTURE.md, "One forward for
//! a LoRA pair"): the time of one decode step for
//!
//! - `single`: one sequence on the base model (plain decoding's cost);
//! - `lora`: one sequence on the base + LoRA context (the RL side today);
//! - `batch2`: two sequences in one batch on the base context (what one
//!   forward for both sides of a pair would cost, less the adapter's rows);
//! - `pair`: `single` then `lora`, the two contexts a pair runs today.
//!
//! Each is the median over REPS steps after a PROMPT-token prompt, on
//! THREADS threads. Prints one JSON line with the times (ms) and the ratios
//! a design needs.
//!
//! Usage: bench_shared_pair BASE.gguf ADAPTER.gguf [THREADS] [REPS]

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::time::Instant;

use dlogp::runtime::{ContextOptions, Feed, ModelPair, PairSpec, RlSource, Session};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: bench_shared_pair BASE.gguf ADAPTER.gguf [THREADS] [REPS]";
    let base = PathBuf::from(args.get(1).ok_or(usage)?);
    let adapter = PathBuf::from(args.get(2).ok_or(usage)?);
    let arg = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (threads, reps) = (arg(3, 2), arg(4, 64));
    let spec = PairSpec {
        base,
        rl: RlSource::Lora {
            path: adapter,
            scale: 1.0,
        },
    };
    let pair = ModelPair::load(&spec, &Default::default())?;
    let options = |n_seq| ContextOptions {
        n_ctx: 512,
        n_batch: 512,
        n_seq,
        threads,
        flash_attention: false,
    };
    let prompt = pair.base().tokenize(
        "Question: a farmer has 17 sheep and buys 25 more, then sells 9. \
         How many sheep does the farmer have now? Think step by step.",
        true,
    );
    let n = prompt.len() as u32;
    let token = prompt[prompt.len() - 1];

    // one step = one decode at the next position of every sequence given
    let time = |session: &mut Session, seqs: &[u32]| -> Result<f64, Box<dyn std::error::Error>> {
        session.clear();
        for &s in seqs {
            session.feed(s, 0, &prompt)?;
        }
        let mut times = Vec::with_capacity(reps);
        for i in 0..reps as u32 {
            let feeds: Vec<Feed> = seqs
                .iter()
                .map(|&seq| Feed {
                    token,
                    pos: n + i,
                    seq,
                    logits: true,
                })
                .collect();
            let t = Instant::now();
            session.decode(&feeds)?;
            times.push(t.elapsed().as_secs_f64() * 1e3);
        }
        times.sort_by(f64::total_cmp);
        Ok(times[times.len() / 2])
    };
    let mut base1 = Session::new(pair.base_context(&options(1))?, 1, "base");
    let mut base2 = Session::new(pair.base_context(&options(2))?, 2, "base");
    let mut lora = Session::new(pair.rl_context(&options(1))?, 1, "rl");
    // interleaved rounds; the medians of the rounds' medians
    let mut rounds = Vec::new();
    for _ in 0..3 {
        rounds.push([
            time(&mut base1, &[0])?,
            time(&mut lora, &[0])?,
            time(&mut base2, &[0, 1])?,
        ]);
    }
    let med = |k: usize| {
        let mut v: Vec<f64> = rounds.iter().map(|r| r[k]).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (single, with_lora, batch2) = (med(0), med(1), med(2));
    let pair_now = single + with_lora;
    // one forward of both rows: the batch of two plus the adapter's extra
    // cost on one row (its low-rank products)
    let shared = batch2 + (with_lora - single).max(0.0);
    println!(
        "{{\"threads\": {threads}, \"reps\": {reps}, \"single_ms\": {single:.3}, \
         \"lora_ms\": {with_lora:.3}, \"batch2_ms\": {batch2:.3}, \"pair_ms\": {pair_now:.3}, \
         \"shared_estimate_ms\": {shared:.3}, \"pair_over_single\": {:.3}, \
         \"shared_over_single\": {:.3}, \"batch2_over_single\": {:.3}}}",
        single / pair_now,
        single / shared,
        batch2 / single
    );
    Ok(())
}

//! The ceiling of any pair decoder built on two llama.cpp contexts
//! (ARCHITECTURE.md, "The ceiling of a two-context pair"): the time of
//! llama.cpp's forward passes alone, with no sampling, no gate and no
//! scheduling, for
//!
//! - `plain`: one sequence on the base model at THREADS threads (plain
//!   decoding, the denominator of "extrapolation ÷ plain");
//! - `plain_n`: N sequences in one batch on the base model, THREADS threads;
//! - `concurrent_n`: N sequences on both sides of the pair (base, and base +
//!   LoRA), the two contexts decoding at once on THREADS/2 threads each (how
//!   the engine and the llama-cpp-python peer run a pair);
//! - `sequential_n`: the same, one context after the other on THREADS
//!   threads each;
//! - `shared_n` (an estimate, not a run): one forward of a batch of 2N rows
//!   on the base plus the adapter's extra cost on N rows, what the design
//!   "One forward for a LoRA pair" would cost.
//!
//! A decoder that computes both models' distributions at every position
//! cannot beat `N / min(concurrent_n, sequential_n)` tokens per second (a
//! speculative one skips no forward either: it only batches them). Each time
//! is the median over REPS steps after a 29-token prompt, the rounds
//! interleaved. Prints a markdown table, then one JSON line.
//!
//! Usage: bench_ceiling BASE.gguf ADAPTER.gguf [THREADS] [REPS] [N,N,...]

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::time::Instant;

use dlogp::runtime::{ContextOptions, Feed, ModelPair, PairSession, PairSpec, RlSource, Session};
use dlogp::sampler::Pair;

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let usage = "usage: bench_ceiling BASE.gguf ADAPTER.gguf [THREADS] [REPS] [N,N,...]";
    let base = PathBuf::from(args.get(1).ok_or(usage)?);
    let adapter = PathBuf::from(args.get(2).ok_or(usage)?);
    let arg = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (threads, reps) = (arg(3, 2).max(2), arg(4, 32).max(1));
    let ns: Vec<u32> = match args.get(5) {
        Some(list) => list
            .split(',')
            .map(|s| {
                s.trim()
                    .parse()
                    .map_err(|_| format!("bad N {s:?}: {usage}"))
            })
            .collect::<Result<_, _>>()?,
        None => vec![1, 4, 8],
    };
    let spec = PairSpec {
        base,
        rl: RlSource::Lora {
            path: adapter,
            scale: 1.0,
        },
    };
    let pair = ModelPair::load(&spec, &Default::default())?;
    let options = |n_seq: u32, threads: usize| ContextOptions {
        n_ctx: 512 * n_seq.max(1),
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
    let n_prompt = prompt.len() as u32;
    let token = prompt[prompt.len() - 1];
    let feeds = |n: u32, i: u32| -> Vec<Feed> {
        (0..n)
            .map(|seq| Feed {
                token,
                pos: n_prompt + i,
                seq,
                logits: true,
            })
            .collect()
    };
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    // median time (ms) of `decode` on `n` rows at the next position
    let time_steps = |n: u32, decode: &mut dyn FnMut(&[Feed]) -> Result<(), Error>| {
        let mut t = Vec::with_capacity(reps);
        for i in 0..reps as u32 {
            let f = feeds(n, i);
            let start = Instant::now();
            decode(&f)?;
            t.push(start.elapsed().as_secs_f64() * 1e3);
        }
        Ok::<f64, Error>(median(t))
    };
    // the prompt on every sequence first
    let time_session = |s: &mut Session, n: u32| -> Result<f64, Error> {
        s.clear();
        for seq in 0..n {
            s.feed(seq, 0, &prompt)?;
        }
        time_steps(n, &mut |f| Ok(s.decode(f)?))
    };
    let time_pair = |p: &mut PairSession, n: u32| -> Result<f64, Error> {
        p.reset();
        for seq in 0..n {
            p.prefill(seq, &prompt)?;
        }
        time_steps(n, &mut |f| Ok(p.decode(f)?))
    };
    let half = threads / 2;
    let mut plain = Session::new(pair.base_context(&options(1, threads))?, 1, "base");
    let mut rows = Vec::new();
    for &n in &ns {
        let n2 = 2 * n;
        let mut plain_n = Session::new(pair.base_context(&options(n, threads))?, n, "base");
        let mut plain_2n = Session::new(pair.base_context(&options(n2, threads))?, n2, "base");
        let mut lora_n = Session::new(pair.rl_context(&options(n, threads))?, n, "rl");
        let side = |t: usize| -> Result<Pair<Option<Session>>, Error> {
            Ok(Pair {
                base: Some(Session::new(pair.base_context(&options(n, t))?, n, "base")),
                rl: Some(Session::new(pair.rl_context(&options(n, t))?, n, "rl")),
            })
        };
        let mut concurrent = PairSession::new(side(half)?, n, true);
        let mut sequential = PairSession::new(side(threads)?, n, false);
        let mut rounds = Vec::new();
        for _ in 0..3 {
            rounds.push([
                time_session(&mut plain, 1)?,
                time_session(&mut plain_n, n)?,
                time_pair(&mut concurrent, n)?,
                time_pair(&mut sequential, n)?,
                time_session(&mut plain_2n, n2)?,
                time_session(&mut lora_n, n)?,
            ]);
        }
        let m: Vec<f64> = (0..6)
            .map(|k| median(rounds.iter().map(|r| r[k]).collect()))
            .collect();
        // the adapter's extra cost on n rows, on top of a batch of 2n rows
        let shared = m[4] + (m[5] - m[1]).max(0.0);
        rows.push((n, m[0], m[1], m[2], m[3], shared));
        eprintln!("N = {n} done");
    }
    let rate = |n: u32, ms: f64| f64::from(n) * 1e3 / ms;
    println!(
        "| N | plain, 1 seq | plain, N seq | pair, concurrent | pair, sequential | best pair ÷ plain | shared forward (estimate) ÷ plain |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    let mut json = Vec::new();
    for &(n, p1, pn, conc, seq, shared) in &rows {
        let best = conc.min(seq);
        println!(
            "| {n} | {:.1} tok/s | {:.1} | {:.1} | {:.1} | {:.2} | {:.2} |",
            rate(1, p1),
            rate(n, pn),
            rate(n, conc),
            rate(n, seq),
            rate(n, best) / rate(1, p1),
            rate(n, shared) / rate(1, p1)
        );
        json.push(format!(
            "{{\"n\": {n}, \"plain_ms\": {p1:.3}, \"plain_n_ms\": {pn:.3}, \
             \"concurrent_ms\": {conc:.3}, \"sequential_ms\": {seq:.3}, \
             \"shared_estimate_ms\": {shared:.3}, \"ceiling_tok_s\": {:.2}}}",
            rate(n, best)
        ));
    }
    println!(
        "{{\"threads\": {threads}, \"reps\": {reps}, \"rows\": [{}]}}",
        json.join(", ")
    );
    Ok(())
}

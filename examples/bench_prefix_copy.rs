//! What copying a prompt's cache costs against decoding it
//! (`decode::MIN_SHARED_PREFIX`): for contexts of several sizes per
//! sequence, the median time to give a second sequence the first L tokens of
//! a prompt by `Session::copy_prefix` plus decoding its last token, against
//! decoding the whole L + 1-token prompt, on the base model at THREADS
//! threads. llama.cpp copies the source's whole cache across split caches,
//! so the copy grows with the context, the prefill with L.
//!
//! Usage: bench_prefix_copy MODEL.gguf [THREADS] [REPS]

#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::Path;
use std::time::Instant;

use dlogp::runtime::{ContextOptions, Model, Session};

type Error = Box<dyn std::error::Error>;

fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .ok_or("usage: bench_prefix_copy MODEL.gguf [THREADS] [REPS]")?;
    let arg = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (threads, reps) = (arg(2, 2), arg(3, 9).max(1));
    let model = Model::load(Path::new(path), &Default::default())?;
    let text = "The quick brown fox jumps over the lazy dog. ".repeat(40);
    let all = model.tokenize(&text, true);
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    println!(
        "| context per sequence | prefix L | copy + 1 token | prefill of L + 1 | copy ÷ prefill |"
    );
    println!("|---:|---:|---:|---:|---:|");
    for n_ctx in [512u32, 4096] {
        let options = ContextOptions {
            n_ctx,
            n_batch: 512,
            n_seq: 2,
            threads,
            flash_attention: false,
        };
        let mut s = Session::new(model.new_context(&options)?, 2, "base");
        for len in [16usize, 64, 256] {
            let prompt = &all[..len + 1];
            let (mut copy, mut full) = (Vec::new(), Vec::new());
            for _ in 0..reps {
                s.clear();
                s.feed(0, 0, prompt)?;
                let t = Instant::now();
                if !s.copy_prefix(0, 1, len as u32)? {
                    return Err("this model's cache cannot be cut".into());
                }
                s.feed(1, len as u32, &prompt[len..])?;
                copy.push(t.elapsed().as_secs_f64() * 1e3);
                s.clear();
                let t = Instant::now();
                s.feed(1, 0, prompt)?;
                full.push(t.elapsed().as_secs_f64() * 1e3);
            }
            let (c, f) = (median(copy), median(full));
            println!("| {n_ctx} | {len} | {c:.2} ms | {f:.2} ms | {:.2} |", c / f);
        }
    }
    Ok(())
}

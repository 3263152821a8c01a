//! Per-position metric math over a 49,152-token vocabulary (SmolLM2's size).
//!
//! `token_metrics` (two passes, fused vectorisable f64 exps) against the naive
//! baseline it replaces: two full f64 log-softmaxes with libm `exp`, then the
//! entropy and KL sums. Throughput is reported in positions per second.
//! Run: `cargo bench --bench metrics`.

#![allow(clippy::print_stdout, clippy::print_stderr)]

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use dlogp::sampler::token_metrics;

const VOCAB: usize = 49_152;

/// SplitMix64 + Box–Muller, fixed seed: normal logits with the given std.
fn normal_logits(seed: u64, n: usize, std: f64) -> Vec<f32> {
    let mut state = seed;
    let mut next = move || {
        state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    };
    (0..n)
        .map(|_| {
            let (u, v) = (1.0 - next(), next());
            (std * (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()) as f32
        })
        .collect()
}

/// Entropy of base and RL, KL both ways, Δlog p: the straightforward way.
fn naive(zb: &[f32], zr: &[f32], token: usize) -> [f64; 5] {
    fn log_softmax(z: &[f32]) -> Vec<f64> {
        let m = z
            .iter()
            .map(|&v| f64::from(v))
            .fold(f64::NEG_INFINITY, f64::max);
        let lse = m + z
            .iter()
            .map(|&v| (f64::from(v) - m).exp())
            .sum::<f64>()
            .ln();
        z.iter().map(|&v| f64::from(v) - lse).collect()
    }
    let (lb, lr) = (log_softmax(zb), log_softmax(zr));
    let (mut h_b, mut h_r, mut kl, mut kl_r) = (0.0, 0.0, 0.0, 0.0);
    for (&b, &r) in lb.iter().zip(&lr) {
        let (pb, pr) = (b.exp(), r.exp());
        h_b -= pb * b;
        h_r -= pr * r;
        kl += pr * (r - b);
        kl_r += pb * (b - r);
    }
    [lr[token] - lb[token], h_b, h_r, kl, kl_r]
}

fn bench(c: &mut Criterion) {
    let zb = normal_logits(1, VOCAB, 3.0);
    let noise = normal_logits(2, VOCAB, 1.0);
    let zr: Vec<f32> = zb.iter().zip(&noise).map(|(b, n)| b + 0.5 * n).collect();
    let token = 12_345;

    let mut group = c.benchmark_group("per_position_metrics_vocab_49152");
    group.throughput(Throughput::Elements(1));
    group.bench_function("token_metrics", |b| {
        b.iter(|| token_metrics(black_box(&zb), black_box(&zr), black_box(token)))
    });
    group.bench_function("naive_f64_two_log_softmax", |b| {
        b.iter(|| naive(black_box(&zb), black_box(&zr), black_box(token)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);

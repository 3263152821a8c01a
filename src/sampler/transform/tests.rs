#![allow(clippy::print_stderr)] // skip notes and timings
use super::*;
use crate::sampler::rng::{uniform, Purpose};

fn ln(p: &[f64]) -> Vec<f64> {
    p.iter().map(|v| v.ln()).collect()
}

fn params(temperature: f64, top_k: usize, top_p: f64) -> SamplingParams {
    SamplingParams {
        temperature,
        top_k,
        top_p,
    }
}

/// Asserts the candidates are exactly `want` (ids in order, probs to 1e-12).
fn assert_dist(d: &Distribution, want: &[(u32, f64)]) {
    let ids: Vec<u32> = d.candidates().iter().map(|c| c.0).collect();
    let want_ids: Vec<u32> = want.iter().map(|c| c.0).collect();
    assert_eq!(ids, want_ids, "candidates {:?}", d.candidates());
    for (got, w) in d.candidates().iter().zip(want) {
        assert!(
            (got.1 - w.1).abs() < 1e-12,
            "{:?} vs {want:?}",
            d.candidates()
        );
    }
    let sum: f64 = d.candidates().iter().map(|c| c.1).sum();
    assert!((sum - 1.0).abs() < 1e-14);
}

/// Probabilities [0.5, 0.3, 0.15, 0.05] stored under shuffled ids: token 1 is
/// the most probable, then 3, 0, 2.
const SHUFFLED: [f64; 4] = [0.15, 0.5, 0.05, 0.3];

#[test]
fn top_p_hand_computed() {
    let lp = ln(&SHUFFLED);
    let d = |p| Distribution::from_logprobs(&lp, &params(1.0, 0, p)).unwrap();
    assert_dist(&d(0.7), &[(1, 0.625), (3, 0.375)]);
    assert_dist(&d(0.5), &[(1, 1.0)]);
    assert_dist(&d(0.4), &[(1, 1.0)]);
    assert_dist(&d(1e-9), &[(1, 1.0)]);
    // Exactly reaching the boundary stops there; a hair more takes the next token.
    assert_dist(&d(0.8), &[(1, 0.625), (3, 0.375)]);
    let three = [(1, 0.5 / 0.95), (3, 0.3 / 0.95), (0, 0.15 / 0.95)];
    assert_dist(&d(0.800_001), &three);
    assert_dist(&d(0.95), &three);
    assert_dist(&d(1.0), &[(1, 0.5), (3, 0.3), (0, 0.15), (2, 0.05)]);
}

#[test]
fn top_k_hand_computed() {
    let lp = ln(&SHUFFLED);
    let d = |k| Distribution::from_logprobs(&lp, &params(1.0, k, 1.0)).unwrap();
    let greedy = d(1);
    assert_dist(&greedy, &[(1, 1.0)]);
    assert_eq!(greedy.argmax(), 1);
    assert_eq!(greedy.sample(0.999), 1);
    assert_dist(&d(2), &[(1, 0.625), (3, 0.375)]);
    assert_dist(&d(3), &[(1, 0.5 / 0.95), (3, 0.3 / 0.95), (0, 0.15 / 0.95)]);
    assert_eq!(d(4), d(0));
    assert_eq!(d(100), d(0));
}

#[test]
fn top_p_applies_to_the_top_k_renormalised_mass() {
    let lp = ln(&SHUFFLED);
    // After top-k 2: [0.625, 0.375], so p = 0.6 keeps the top token alone
    // (measured against the full mass it would need two: 0.5 < 0.6).
    let d = Distribution::from_logprobs(&lp, &params(1.0, 2, 0.6)).unwrap();
    assert_dist(&d, &[(1, 1.0)]);
    let d = Distribution::from_logprobs(&lp, &params(1.0, 3, 0.8)).unwrap();
    assert_dist(&d, &[(1, 0.625), (3, 0.375)]);
}

#[test]
fn temperature_hand_computed() {
    let p = [0.5, 0.3, 0.15, 0.05];
    let lp = ln(&p);
    // T = 0.5 sharpens to p² / Σ p².
    let s2: f64 = p.iter().map(|v| v * v).sum();
    let d = Distribution::from_logprobs(&lp, &params(0.5, 0, 1.0)).unwrap();
    let want: Vec<(u32, f64)> = (0u32..).zip(p).map(|(i, v)| (i, v * v / s2)).collect();
    assert_dist(&d, &want);
    // T = 2 flattens to √p / Σ √p.
    let s: f64 = p.iter().map(|v| v.sqrt()).sum();
    let d = Distribution::from_logprobs(&lp, &params(2.0, 0, 1.0)).unwrap();
    let want: Vec<(u32, f64)> = (0u32..).zip(p).map(|(i, v)| (i, v.sqrt() / s)).collect();
    assert_dist(&d, &want);
    // Temperature comes before top-p: at T = 0.5, token 0 has 0.25/0.365 = 0.685 ≥ 0.6.
    let d = Distribution::from_logprobs(&lp, &params(0.5, 0, 0.6)).unwrap();
    assert_dist(&d, &[(0, 1.0)]);
    // Unnormalised input is normalised: shifting every log-prob changes nothing.
    let shifted: Vec<f64> = lp.iter().map(|v| v + 123.0).collect();
    let d2 = Distribution::from_logprobs(&shifted, &params(0.5, 0, 0.6)).unwrap();
    assert_eq!(d, d2);
    // A tiny temperature is greedy, a huge one uniform.
    let d = Distribution::from_logprobs(&lp, &params(1e-300, 0, 1.0)).unwrap();
    assert_dist(&d, &[(0, 1.0)]);
    let d = Distribution::from_logprobs(&lp, &params(1e300, 0, 1.0)).unwrap();
    assert_dist(&d, &[(0, 0.25), (1, 0.25), (2, 0.25), (3, 0.25)]);
}

#[test]
fn ties_break_by_token_id() {
    let lp = ln(&[0.25; 4]);
    let d = Distribution::from_logprobs(&lp, &params(1.0, 2, 1.0)).unwrap();
    assert_dist(&d, &[(0, 0.5), (1, 0.5)]);
    let d = Distribution::from_logprobs(&lp, &params(1.0, 0, 0.5)).unwrap();
    assert_dist(&d, &[(0, 0.5), (1, 0.5)]);
    let d = Distribution::from_logprobs(&[0.0, -1.0, 0.0], &params(1.0, 1, 1.0)).unwrap();
    assert_eq!(d.argmax(), 0);
}

#[test]
fn zero_probability_tokens_are_never_candidates() {
    let lp = [
        f64::NEG_INFINITY,
        0.5f64.ln(),
        f64::NEG_INFINITY,
        0.5f64.ln(),
    ];
    let d = Distribution::from_logprobs(&lp, &SamplingParams::default()).unwrap();
    assert_dist(&d, &[(1, 0.5), (3, 0.5)]);
    assert_eq!(d.prob(0), 0.0);
    assert_eq!(d.prob(3), 0.5);
    assert_eq!(d.prob(99), 0.0);
    assert_eq!(d.len(), 2);
    assert!(!d.is_empty());
    // Weights that underflow (> 700 nats below the top) are dropped too.
    let d = Distribution::from_logprobs(&[0.0, -800.0], &SamplingParams::default()).unwrap();
    assert_dist(&d, &[(0, 1.0)]);
}

#[test]
fn sample_is_the_inverse_cdf() {
    let lp = ln(&SHUFFLED);
    let d = Distribution::from_logprobs(&lp, &SamplingParams::default()).unwrap();
    // Sorted: 1 (0.5), 3 (0.3), 0 (0.15), 2 (0.05); CDF 0.5, 0.8, 0.95, 1.
    let cases = [
        (0.0, 1),
        (0.49, 1),
        (0.5, 3),
        (0.79, 3),
        (0.81, 0),
        (0.949, 0),
        (0.951, 2),
        (1.0 - f64::EPSILON, 2),
        // Out of range: clamped; NaN counts as 0.
        (1.0, 2),
        (7.0, 2),
        (-1.0, 1),
        (f64::NAN, 1),
    ];
    for (u, want) in cases {
        assert_eq!(d.sample(u), want, "u = {u}");
    }
}

/// χ² of `counts` against `probs` over `n` draws.
fn chi_square(counts: &[u64], probs: &[f64], n: u64) -> f64 {
    counts
        .iter()
        .zip(probs)
        .map(|(&c, &p)| {
            let e = p * n as f64;
            (c as f64 - e).powi(2) / e
        })
        .sum()
}

#[test]
fn sampling_frequencies_match_the_distribution() {
    const N: u64 = 100_000;
    let draw = |d: &Distribution, vocab: usize| {
        let mut counts = vec![0u64; vocab];
        for i in 0..N {
            counts[d.sample(uniform(2024, 0, i, Purpose::Propose)) as usize] += 1;
        }
        counts
    };
    // Full distribution over 6 tokens: χ²(5) at p = 0.001 is 20.52.
    let p = [0.05, 0.3, 0.1, 0.25, 0.2, 0.1];
    let d = Distribution::from_logprobs(&ln(&p), &SamplingParams::default()).unwrap();
    let counts = draw(&d, 6);
    let chi2 = chi_square(&counts, &p, N);
    assert!(chi2 < 20.52, "chi2 = {chi2}, counts {counts:?}");

    // Top-p 0.7 over [0.5, 0.3, 0.15, 0.05]: only tokens 1 and 3, as 0.625/0.375.
    // χ²(1) at p = 0.001 is 10.83.
    let d = Distribution::from_logprobs(&ln(&SHUFFLED), &params(1.0, 0, 0.7)).unwrap();
    let counts = draw(&d, 4);
    assert_eq!((counts[0], counts[2]), (0, 0), "cut tokens were drawn");
    let chi2 = chi_square(&[counts[1], counts[3]], &[0.625, 0.375], N);
    assert!(chi2 < 10.83, "chi2 = {chi2}, counts {counts:?}");
}

#[test]
fn params_validation() {
    let err = |t, k, p| params(t, k, p).validate().unwrap_err().to_string();
    assert_eq!(
        err(0.0, 0, 1.0),
        "temperature must be > 0 and finite, got 0"
    );
    assert_eq!(
        err(-1.0, 0, 1.0),
        "temperature must be > 0 and finite, got -1"
    );
    assert_eq!(
        err(f64::NAN, 0, 1.0),
        "temperature must be > 0 and finite, got NaN"
    );
    assert_eq!(
        err(f64::INFINITY, 0, 1.0),
        "temperature must be > 0 and finite, got inf"
    );
    assert_eq!(err(1.0, 0, 0.0), "top_p must be in (0, 1], got 0");
    assert_eq!(err(1.0, 0, 1.5), "top_p must be in (0, 1], got 1.5");
    assert_eq!(err(1.0, 0, -0.1), "top_p must be in (0, 1], got -0.1");
    assert_eq!(err(1.0, 0, f64::NAN), "top_p must be in (0, 1], got NaN");
    assert!(params(1e-9, 5, 1.0).validate().is_ok());
    assert!(SamplingParams::default().validate().is_ok());
    // from_logprobs validates too.
    assert_eq!(
        Distribution::from_logprobs(&[0.0], &params(1.0, 0, 0.0)),
        Err(SamplerError::TopP { value: 0.0 })
    );
}

#[test]
fn bad_logprobs_are_errors() {
    let p = SamplingParams::default();
    assert_eq!(
        Distribution::from_logprobs(&[], &p),
        Err(SamplerError::EmptyVocab)
    );
    assert_eq!(
        Distribution::from_logprobs(&[0.0, f64::INFINITY], &p),
        Err(SamplerError::BadLogProb {
            index: 1,
            value: f64::INFINITY
        })
    );
    assert!(matches!(
        Distribution::from_logprobs(&[0.0, -1.0, f64::NAN], &p),
        Err(SamplerError::BadLogProb { index: 2, .. })
    ));
    assert_eq!(
        Distribution::from_logprobs(&[f64::NEG_INFINITY; 3], &p),
        Err(SamplerError::NoMass)
    );
}

// ---- extrapolation ----

fn probs(lp: &[f64]) -> Vec<f64> {
    lp.iter().map(|v| v.exp()).collect()
}

#[test]
fn extrapolation_hand_computed() {
    let rl = ln(&[0.5, 0.5]);
    let base = ln(&[0.8, 0.2]);
    let mut out = [0.0; 2];
    // γ = 1: π_X ∝ [0.5 · 0.625, 0.5 · 2.5] → [0.2, 0.8].
    extrapolate(
        Pair::<&[f64]> {
            base: &base,
            rl: &rl,
        },
        1.0,
        &mut out,
    )
    .unwrap();
    let p = probs(&out);
    assert!(
        (p[0] - 0.2).abs() < 1e-15 && (p[1] - 0.8).abs() < 1e-15,
        "{p:?}"
    );
    // γ = 0.5: π_X ∝ [0.5 √0.625, 0.5 √2.5] → [1/3, 2/3].
    extrapolate(
        Pair::<&[f64]> {
            base: &base,
            rl: &rl,
        },
        0.5,
        &mut out,
    )
    .unwrap();
    let p = probs(&out);
    assert!(
        (p[0] - 1.0 / 3.0).abs() < 1e-15 && (p[1] - 2.0 / 3.0).abs() < 1e-15,
        "{p:?}"
    );
    // Three tokens, γ = 2: π_X ∝ π_R³ / π_B².
    let (r, b) = ([0.6, 0.3, 0.1], [0.2, 0.5, 0.3]);
    let w: Vec<f64> = r.iter().zip(b).map(|(r, b)| r * r * r / (b * b)).collect();
    let z: f64 = w.iter().sum();
    let mut out = [0.0; 3];
    extrapolate(
        Pair::<&[f64]> {
            base: &ln(&b),
            rl: &ln(&r),
        },
        2.0,
        &mut out,
    )
    .unwrap();
    for (o, w) in probs(&out).iter().zip(&w) {
        assert!((o - w / z).abs() < 1e-14);
    }
    // And through the sampler.
    let mut out = [0.0; 2];
    extrapolate(
        Pair::<&[f64]> {
            base: &base,
            rl: &rl,
        },
        1.0,
        &mut out,
    )
    .unwrap();
    let d = Distribution::from_logprobs(&out, &SamplingParams::default()).unwrap();
    assert_dist(&d, &[(1, 0.8), (0, 0.2)]);
}

#[test]
fn gamma_zero_is_the_rl_distribution() {
    let rl = ln(&[0.1, 0.2, 0.3, 0.4]);
    let base = [0.0, f64::NEG_INFINITY, -3.0, -0.5];
    let mut out = [9.0; 4];
    extrapolate(
        Pair::<&[f64]> {
            base: &base,
            rl: &rl,
        },
        0.0,
        &mut out,
    )
    .unwrap();
    for (o, r) in out.iter().zip(&rl) {
        assert_eq!(
            o.to_bits(),
            r.to_bits(),
            "normalised input comes back bit for bit"
        );
    }
    // Unnormalised input is renormalised.
    extrapolate(
        Pair::<&[f64]> {
            base: &[-1.0, -2.0],
            rl: &[0.0, 0.0],
        },
        0.0,
        &mut out[..2],
    )
    .unwrap();
    let ln2 = 2f64.ln();
    assert!((out[0] + ln2).abs() < 1e-15 && (out[1] + ln2).abs() < 1e-15);
}

#[test]
fn extrapolation_with_zero_probability_tokens() {
    let ninf = f64::NEG_INFINITY;
    // Token 2: zero under RL; token 3: zero under base (dropped for γ > 0).
    let rl = [0.5f64.ln(), 0.25f64.ln(), ninf, 0.25f64.ln()];
    let base = [0.8f64.ln(), 0.2f64.ln(), 0.0, ninf];
    let mut out = [0.0; 4];
    extrapolate(
        Pair::<&[f64]> {
            base: &base,
            rl: &rl,
        },
        1.0,
        &mut out,
    )
    .unwrap();
    assert!(out.iter().all(|v| !v.is_nan()));
    assert_eq!((out[2], out[3]), (ninf, ninf));
    // Remaining: ∝ [0.5 · 0.625, 0.25 · 1.25] = [0.3125, 0.3125] → [0.5, 0.5].
    let p = probs(&out);
    assert!(
        (p[0] - 0.5).abs() < 1e-15 && (p[1] - 0.5).abs() < 1e-15,
        "{p:?}"
    );
    // γ = 0 keeps token 3 (the base is not consulted).
    extrapolate(
        Pair::<&[f64]> {
            base: &base,
            rl: &rl,
        },
        0.0,
        &mut out,
    )
    .unwrap();
    assert_eq!(out[3], rl[3]);
    assert_eq!(out[2], ninf);
    // No token allowed by both models.
    assert_eq!(
        extrapolate(
            Pair::<&[f64]> {
                base: &[ninf, 0.0],
                rl: &[0.0, ninf]
            },
            0.5,
            &mut out[..2]
        ),
        Err(SamplerError::NoCommonSupport)
    );
    assert_eq!(
        extrapolate(
            Pair::<&[f64]> {
                base: &[0.0, 0.0],
                rl: &[ninf, ninf]
            },
            0.0,
            &mut out[..2]
        ),
        Err(SamplerError::NoMass)
    );
}

#[test]
fn extrapolation_errors() {
    let mut out = [0.0; 2];
    let (rl, base) = ([-0.5, -1.0], [-0.7, -0.7]);
    for g in [-0.1, f64::NAN, f64::INFINITY] {
        assert_eq!(
            extrapolate(
                Pair::<&[f64]> {
                    base: &base,
                    rl: &rl
                },
                g,
                &mut out
            )
            .unwrap_err()
            .to_string(),
            format!("gamma must be >= 0 and finite, got {g}")
        );
    }
    assert_eq!(
        extrapolate(
            Pair::<&[f64]> {
                base: &[0.0],
                rl: &rl
            },
            1.0,
            &mut out
        ),
        Err(SamplerError::LengthMismatch { rl: 2, base: 1 })
    );
    assert_eq!(
        extrapolate(
            Pair::<&[f64]> {
                base: &base,
                rl: &rl
            },
            1.0,
            &mut [0.0; 3]
        ),
        Err(SamplerError::OutputLength { vocab: 2, out: 3 })
    );
    assert_eq!(
        extrapolate(Pair::<&[f64]> { base: &[], rl: &[] }, 1.0, &mut []),
        Err(SamplerError::EmptyVocab)
    );
    let err = extrapolate(
        Pair::<&[f64]> {
            base: &[0.0, f64::NAN],
            rl: &rl,
        },
        1.0,
        &mut out,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "log-prob NaN at vocab index 1 in the base model (must be finite or -inf)"
    );
    assert!(matches!(
        extrapolate(
            Pair::<&[f64]> {
                base: &base,
                rl: &[f64::INFINITY, 0.0]
            },
            1.0,
            &mut out
        ),
        Err(SamplerError::BadModelLogProb {
            model: Model::Rl,
            index: 0,
            ..
        })
    ));
    assert_eq!(
        extrapolate(
            Pair::<&[f64]> {
                base: &[-1e10, 0.0],
                rl: &[0.0, -1.0]
            },
            1e308,
            &mut out
        ),
        Err(SamplerError::ExtrapolationOverflow {
            index: 0,
            gamma: 1e308
        })
    );
    assert_eq!(out, [0.0, 0.0], "out untouched on error");
}

// ---- a full-size vocabulary: fast paths against a naive reference ----

/// SmolLM2's vocabulary size.
const VOCAB: usize = 49_152;

/// Normal log-weights with standard deviation `std`, from the counter RNG.
fn normal_logprobs(seed: u64, std: f64) -> Vec<f64> {
    (0..VOCAB as u64)
        .map(|i| {
            let u = uniform(seed, 0, i, Purpose::Propose).max(1e-300);
            let v = uniform(seed, 0, i, Purpose::Gate);
            std * (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
        })
        .collect()
}

/// Full sort with libm `exp`, then the cuts, then renormalisation.
fn naive(lp: &[f64], p: &SamplingParams) -> Vec<(u32, f64)> {
    let m = lp.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let mut c: Vec<(u32, f64)> = (0u32..)
        .zip(lp)
        .map(|(i, &v)| (i, ((v - m) / p.temperature).exp()))
        .filter(|c| c.1 > 0.0)
        .collect();
    c.sort_by(by_prob_desc);
    if p.top_k > 0 {
        c.truncate(p.top_k);
    }
    if p.top_p >= 1.0 {
        let z: f64 = c.iter().map(|c| c.1).sum();
        return c.iter().map(|&(i, w)| (i, w / z)).collect();
    }
    let z: f64 = c.iter().map(|c| c.1).sum();
    let mut cum = 0.0;
    let keep = c
        .iter()
        .position(|x| {
            cum += x.1 / z;
            cum >= p.top_p * (1.0 - TOP_P_SLACK)
        })
        .map_or(c.len(), |j| j + 1);
    c.truncate(keep);
    let z: f64 = c.iter().map(|c| c.1).sum();
    c.iter().map(|&(i, w)| (i, w / z)).collect()
}

#[test]
fn full_vocab_matches_naive_and_timing() {
    let cases = [
        params(1.0, 0, 0.7),
        params(1.0, 0, 1.0),
        params(1.0, 50, 1.0),
        params(0.7, 50, 0.9),
        params(1.0, 0, 0.95),
        params(1.5, 0, 0.999),
    ];
    for (std, label) in [(2.0, "flat (std 2)"), (5.0, "peaked (std 5)")] {
        let lp = normal_logprobs(std as u64, std);
        for p in &cases {
            let reps = 10;
            let start = std::time::Instant::now();
            let mut d = Distribution::from_logprobs(&lp, p).unwrap();
            for _ in 1..reps {
                d = Distribution::from_logprobs(&lp, p).unwrap();
            }
            let per_call = start.elapsed() / reps;
            let start = std::time::Instant::now();
            let want = naive(&lp, p);
            let naive_time = start.elapsed();
            eprintln!(
                "{label:15} T={} k={:3} p={:5}: {:6} kept, {:>9.1?}/call (naive full sort {:>9.1?})",
                p.temperature,
                p.top_k,
                p.top_p,
                d.len(),
                per_call,
                naive_time
            );
            assert_eq!(d.len(), want.len(), "{label} {p:?}");
            for (g, w) in d.candidates().iter().zip(&want) {
                assert_eq!(g.0, w.0, "{label} {p:?}");
                assert!((g.1 - w.1).abs() < 1e-12 * w.1.max(1e-3), "{label} {p:?}");
            }
        }
    }
    let (rl, base) = (normal_logprobs(11, 3.0), normal_logprobs(12, 3.0));
    let mut out = vec![0.0; VOCAB];
    let start = std::time::Instant::now();
    extrapolate(
        Pair::<&[f64]> {
            base: &base,
            rl: &rl,
        },
        0.1,
        &mut out,
    )
    .unwrap();
    eprintln!("extrapolate over {VOCAB}: {:.1?}", start.elapsed());
    let z: f64 = out.iter().map(|v| v.exp()).sum();
    assert!((z - 1.0).abs() < 1e-12, "Σ π_X = {z}");
}

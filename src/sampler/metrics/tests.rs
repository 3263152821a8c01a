use super::*;

/// SmolLM2's vocabulary size.
const VOCAB: usize = 49_152;

/// SplitMix64 + Box–Muller: deterministic normal logits without a rand dependency.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn uniform(&mut self) -> f64 {
        ((self.next_u64() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.uniform(), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f64::consts::TAU * v).cos()
    }
    fn logits(&mut self, n: usize, std: f64, shift: f64) -> Vec<f32> {
        (0..n)
            .map(|_| (shift + std * self.normal()) as f32)
            .collect()
    }
}

/// The textbook computation: two full log-softmaxes with libm `exp`, then sums.
fn naive(zb: &[f32], zr: &[f32], token: usize) -> TokenMetrics {
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
    let entropy = |l: &[f64]| -l.iter().map(|&x| x.exp() * x).sum::<f64>();
    let kl = |p: &[f64], q: &[f64]| {
        p.iter()
            .zip(q)
            .map(|(&a, &b)| a.exp() * (a - b))
            .sum::<f64>()
    };
    let rank = |z: &[f32]| z.iter().filter(|&&v| v > z[token]).count() as u32;
    let (k, kr) = (kl(&lr, &lb), kl(&lb, &lr));
    TokenMetrics {
        logp_base: lb[token],
        logp_rl: lr[token],
        dlogp: lr[token] - lb[token],
        entropy_base: entropy(&lb),
        entropy_rl: entropy(&lr),
        kl: k,
        kl_r: kr,
        js: 0.5 * (k + kr),
        rank_base: rank(zb),
        rank_rl: rank(zr),
    }
}

fn assert_close(what: &str, got: f64, want: f64, abs: f64, rel: f64) {
    let err = (got - want).abs();
    assert!(
        err <= abs + rel * want.abs(),
        "{what}: got {got:e}, want {want:e}, error {err:e}"
    );
}

#[test]
fn hand_computed_three_token_vocab() {
    // base: probabilities [1/6, 2/6, 3/6]; RL: uniform.
    let zb = [0.0f32, 2f32.ln(), 3f32.ln()];
    let zr = [5.0f32; 3];
    let m = token_metrics(&zb, &zr, 0).unwrap();
    let pb: [f64; 3] = [1.0 / 6.0, 2.0 / 6.0, 3.0 / 6.0];
    let pr = 1.0f64 / 3.0;
    // f32 rounding of ln 2, ln 3 limits agreement with the exact fractions to ~1e-7.
    let tol = 1e-7;
    assert_close("logp_base", m.logp_base, -(6f64.ln()), tol, 0.0);
    assert_close("logp_rl", m.logp_rl, -(3f64.ln()), 1e-15, 0.0);
    assert_close("dlogp", m.dlogp, 2f64.ln(), tol, 0.0);
    let h_b = -pb.iter().map(|p| p * p.ln()).sum::<f64>();
    assert_close("entropy_base", m.entropy_base, h_b, tol, 0.0);
    assert_close("entropy_rl", m.entropy_rl, 3f64.ln(), 1e-15, 0.0);
    let kl = pb.iter().map(|p| pr * (pr / p).ln()).sum::<f64>();
    let kl_r = pb.iter().map(|p| p * (p / pr).ln()).sum::<f64>();
    assert_close("kl", m.kl, kl, tol, 0.0);
    assert_close("kl_r", m.kl_r, kl_r, tol, 0.0);
    assert_close("js", m.js, 0.5 * (kl + kl_r), tol, 0.0);
    // Token 0 has the smallest base logit; all RL logits tie.
    assert_eq!((m.rank_base, m.rank_rl), (2, 0));
    // Spot values: ln 2 = 0.693…, KL(U‖pb) = ln(6/3) − … computed by hand:
    // kl = (1/3)(ln 2 + ln 1 + ln(2/3)) = (1/3) ln(4/3)
    assert_close("kl by hand", m.kl, (4f64 / 3.0).ln() / 3.0, tol, 0.0);
}

#[test]
fn two_token_vocab_with_exactly_representable_logits() {
    // base [0, 0] → (½, ½); RL [0, ln 3 as f32].
    let zr1 = 3f32.ln();
    let zb = [0.0f32, 0.0];
    let zr = [0.0f32, zr1];
    let m = token_metrics(&zb, &zr, 1).unwrap();
    let q = 1.0 / (1.0 + f64::from(zr1).exp()); // RL prob of token 0
    let (p0, p1) = (q, 1.0 - q);
    assert_close("logp_base", m.logp_base, -(2f64.ln()), 1e-15, 0.0);
    assert_close("logp_rl", m.logp_rl, p1.ln(), 1e-15, 0.0);
    assert_close("entropy_base", m.entropy_base, 2f64.ln(), 1e-15, 0.0);
    assert_close(
        "entropy_rl",
        m.entropy_rl,
        -(p0 * p0.ln() + p1 * p1.ln()),
        1e-15,
        0.0,
    );
    assert_close(
        "kl",
        m.kl,
        p0 * (2.0 * p0).ln() + p1 * (2.0 * p1).ln(),
        1e-15,
        0.0,
    );
    assert_close(
        "kl_r",
        m.kl_r,
        -0.5 * (p0.ln() + p1.ln()) - 2f64.ln(),
        1e-15,
        0.0,
    );
}

#[test]
fn agrees_with_naive_reference_on_random_logits() {
    let mut worst = [0.0f64; 8];
    for seed in 0..6u64 {
        let mut rng = Rng(seed);
        let zb = rng.logits(VOCAB, 3.0, 1.5);
        // RL: the base plus a perturbation, sometimes tiny, sometimes large.
        let scale = [1e-4, 1e-2, 0.3, 1.0, 3.0, 0.0][seed as usize];
        let zr: Vec<f32> = zb
            .iter()
            .map(|&v| v + (scale * rng.normal()) as f32 - 2.0)
            .collect();
        for token in [0, 7, 1234, VOCAB - 1] {
            let got = token_metrics(&zb, &zr, token).unwrap();
            let want = naive(&zb, &zr, token);
            let pairs = [
                (got.logp_base, want.logp_base),
                (got.logp_rl, want.logp_rl),
                (got.dlogp, want.dlogp),
                (got.entropy_base, want.entropy_base),
                (got.entropy_rl, want.entropy_rl),
                (got.kl, want.kl),
                (got.kl_r, want.kl_r),
                (got.js, want.js),
            ];
            for (i, (g, w)) in pairs.into_iter().enumerate() {
                worst[i] = worst[i].max((g - w).abs());
                assert_close("metric", g, w, 1e-12, 1e-9);
            }
            assert_eq!(got.rank_base, want.rank_base);
            assert_eq!(got.rank_rl, want.rank_rl);
        }
    }
    // Observed worst absolute errors are ~1e-14; keep a margin.
    for (i, w) in worst.iter().enumerate() {
        assert!(*w < 1e-12, "metric {i}: worst absolute error {w:e}");
    }
}

#[test]
fn identical_logits_give_exact_zeros() {
    for seed in 10..14u64 {
        let z = Rng(seed).logits(VOCAB, 3.0, 0.0);
        let m = token_metrics(&z, &z, 99).unwrap();
        assert_eq!(m.dlogp, 0.0);
        assert_eq!(m.kl, 0.0);
        assert_eq!(m.kl_r, 0.0);
        assert_eq!(m.js, 0.0);
        assert_eq!(m.logp_base, m.logp_rl);
        assert_eq!(m.entropy_base, m.entropy_rl);
        assert_eq!(m.rank_base, m.rank_rl);
    }
}

#[test]
fn kl_of_a_constant_shift_is_zero_to_rounding() {
    // Quantised to 1/256 so that adding 1 is exact in f32.
    let zb: Vec<f32> = Rng(3)
        .logits(VOCAB, 3.0, 0.0)
        .iter()
        .map(|v| (v * 256.0).round() / 256.0)
        .collect();
    let zr: Vec<f32> = zb.iter().map(|v| v + 1.0).collect();
    let m = token_metrics(&zb, &zr, 5).unwrap();
    assert!(m.kl.abs() < 1e-13 && m.kl_r.abs() < 1e-13, "{m:?}");
    assert!(m.dlogp.abs() < 1e-13, "{m:?}");
}

#[test]
fn ranks_count_strictly_larger_logits() {
    let zb = [1.0f32, 3.0, 3.0, 2.0, 3.0];
    let zr = [0.0f32; 5];
    let ranks = |t| {
        let m = token_metrics(&zb, &zr, t).unwrap();
        (m.rank_base, m.rank_rl)
    };
    assert_eq!(ranks(0), (4, 0));
    assert_eq!(ranks(1), (0, 0)); // tied argmax
    assert_eq!(ranks(2), (0, 0));
    assert_eq!(ranks(3), (3, 0));
    // Ties across a lane boundary (vocab > LANES, with a tail).
    let mut z = vec![0.0f32; 21];
    z[3] = 2.0;
    z[17] = 2.0;
    z[20] = 1.0;
    let m = token_metrics(&z, &z, 20).unwrap();
    assert_eq!(m.rank_base, 2);
    let m = token_metrics(&z, &z, 0).unwrap();
    assert_eq!(m.rank_base, 3);
}

#[test]
fn divergences_are_non_negative_on_random_inputs() {
    let mut rng = Rng(42);
    for case in 0..200 {
        let n = 1 + (rng.next_u64() % 300) as usize;
        let std = [0.01, 1.0, 5.0, 30.0][case % 4];
        let zb = rng.logits(n, std, 0.0);
        let zr: Vec<f32> = if case % 3 == 0 {
            zb.iter()
                .map(|&v| v + (1e-3 * rng.normal()) as f32)
                .collect()
        } else {
            rng.logits(n, std, 10.0)
        };
        let token = (rng.next_u64() % n as u64) as usize;
        let m = token_metrics(&zb, &zr, token).unwrap();
        assert!(m.kl >= 0.0 && m.kl_r >= 0.0 && m.js >= 0.0, "{m:?}");
        assert!(m.entropy_base >= 0.0 && m.entropy_rl >= 0.0, "{m:?}");
        assert!(m.entropy_base <= (n as f64).ln() + 1e-12, "{m:?}");
        assert!(m.logp_base <= 0.0 && m.logp_rl <= 0.0, "{m:?}");
    }
}

#[test]
fn extreme_but_finite_logits_stay_finite() {
    let zb = [f32::MAX, -f32::MAX, 0.0];
    let zr = [-f32::MAX, f32::MAX, 0.0];
    let m = token_metrics(&zb, &zr, 2).unwrap();
    assert_eq!(m.entropy_base, 0.0);
    assert!(m.kl > 1e38 && m.kl_r > 1e38);
    assert_eq!(m.logp_base, -f64::from(f32::MAX));
}

#[test]
fn non_finite_logits_name_the_model_and_index() {
    let mut zb = vec![0.5f32; 40];
    let mut zr = vec![0.5f32; 40];
    zb[17] = f32::NAN;
    let err = token_metrics(&zb, &zr, 0).unwrap_err();
    assert_eq!(
        err.to_string(),
        "non-finite logit at vocab index 17 in the base model"
    );
    zb[17] = 0.0;
    zr[39] = f32::NEG_INFINITY;
    assert_eq!(
        token_metrics(&zb, &zr, 0).unwrap_err(),
        MetricsError::NonFiniteLogit {
            model: Model::Rl,
            index: 39
        }
    );
    zr[39] = 0.0;
    zr[2] = f32::INFINITY;
    zr[30] = f32::NAN;
    assert_eq!(
        token_metrics(&zb, &zr, 0).unwrap_err().to_string(),
        "non-finite logit at vocab index 2 in the RL model"
    );
}

#[test]
fn shape_errors() {
    assert_eq!(
        token_metrics(&[0.0; 3], &[0.0; 4], 0),
        Err(MetricsError::LengthMismatch { base: 3, rl: 4 })
    );
    assert_eq!(token_metrics(&[], &[], 0), Err(MetricsError::EmptyVocab));
    let err = token_metrics(&[0.0; 3], &[0.0; 3], 3).unwrap_err();
    assert_eq!(
        err.to_string(),
        "token 3 is out of range for a vocabulary of 3 entries"
    );
}

#[test]
fn single_metrics_agree_with_the_pair_and_the_reference() {
    for seed in 20..23u64 {
        let mut rng = Rng(seed);
        let z = rng.logits(VOCAB + 3, 3.0, -4.0);
        let other = rng.logits(VOCAB + 3, 3.0, 0.0);
        for token in [0, 5, VOCAB + 2] {
            let single = single_metrics(&z, token).unwrap();
            let want = naive(&z, &other, token);
            assert_close("logp", single.logp, want.logp_base, 1e-12, 0.0);
            assert_close("entropy", single.entropy, want.entropy_base, 1e-12, 0.0);
            assert_eq!(single.rank, want.rank_base);
            let pair = token_metrics(&z, &other, token).unwrap();
            assert_eq!(single.logp, pair.logp_base);
            assert_eq!(single.rank, pair.rank_base);
        }
    }
    let hand = single_metrics(&[0.0, 0.0, 0.0, 0.0], 2).unwrap();
    assert_eq!(hand.logp, -(4f64.ln()));
    assert_close("entropy", hand.entropy, 4f64.ln(), 1e-15, 0.0);
    assert_eq!(hand.rank, 0);
    assert_eq!(single_metrics(&[], 0), Err(MetricsError::EmptyVocab));
    assert_eq!(
        single_metrics(&[1.0, f32::NAN], 0).unwrap_err().to_string(),
        "non-finite logit at vocab index 1 in the base model"
    );
    assert!(matches!(
        single_metrics(&[1.0], 1),
        Err(MetricsError::TokenOutOfRange { token: 1, vocab: 1 })
    ));
}

//! Counter-based random numbers for decoding.
//!
//! A draw is a pure function of `(seed, sequence, position, purpose)`: no
//! stream state, so the token at position 17 of sequence 3 gets the same
//! randomness whether sequences run one by one, batched, resumed or in any
//! order. The tuple is absorbed word by word into a 64-bit state, each step
//! through the SplitMix64 finaliser (a bijection with full avalanche), and a
//! last round whitens the result; the top 53 bits become an `f64` in [0, 1).
//!
//! Changing this file changes every sampled text for a given seed; the
//! `frozen_values` test pins the stream.

/// What a draw is for. Each purpose gets an independent stream, so adding a
/// gate coin never shifts the proposal draws.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Purpose {
    /// Sampling the proposing model's token.
    Propose,
    /// The `random` criterion's coin.
    Gate,
    /// Re-sampling from π_R or π_X when the gate fires.
    Resample,
}

impl Purpose {
    /// Distinct, arbitrary 64-bit words (digits of π) absorbed into the hash.
    fn word(self) -> u64 {
        match self {
            Purpose::Propose => 0x243F_6A88_85A3_08D3,
            Purpose::Gate => 0x1319_8A2E_0370_7344,
            Purpose::Resample => 0xA409_3822_299F_31D0,
        }
    }
}

const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// The SplitMix64 / Stafford "mix13" finaliser: a bijection on `u64`. The
/// crate's one copy: the keyed draws, [`splitmix64`] (fixtures, task sets,
/// the trainer's prompt order) and the server's fresh seeds use it.
#[inline]
pub(crate) fn mix(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// One step of SplitMix64: advance `state` by the golden gamma and return
/// its mix.
#[inline]
pub(crate) fn splitmix64(state: &mut u64) -> u64 {
    *state = state.wrapping_add(GOLDEN);
    mix(*state)
}

/// The 64-bit hash of the tuple.
#[inline]
fn hash(seed: u64, sequence: u64, position: u64, purpose: Purpose) -> u64 {
    let mut h = mix(seed.wrapping_add(GOLDEN));
    for w in [sequence, position, purpose.word()] {
        h = mix(h.wrapping_add(GOLDEN) ^ w);
    }
    mix(h.wrapping_add(GOLDEN))
}

/// A uniform draw in [0, 1) with 53 random bits, determined only by
/// `(seed, sequence, position, purpose)`.
pub fn uniform(seed: u64, sequence: u64, position: u64, purpose: Purpose) -> f64 {
    const SCALE: f64 = 1.0 / (1u64 << 53) as f64;
    (hash(seed, sequence, position, purpose) >> 11) as f64 * SCALE
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    const N: u64 = 100_000;

    #[test]
    fn deterministic_and_order_independent() {
        let forward: Vec<f64> = (0..1000)
            .map(|i| uniform(42, 7, i, Purpose::Propose))
            .collect();
        let backward: Vec<f64> = (0..1000)
            .rev()
            .map(|i| uniform(42, 7, i, Purpose::Propose))
            .collect();
        for (i, &v) in forward.iter().enumerate() {
            assert_eq!(v.to_bits(), backward[999 - i].to_bits());
            assert!((0.0..1.0).contains(&v));
        }
    }

    #[test]
    fn frozen_values() {
        // Pins the stream: a change here changes every seeded generation.
        let got = [
            uniform(0, 0, 0, Purpose::Propose),
            uniform(1, 2, 3, Purpose::Gate),
            uniform(u64::MAX, u64::MAX, u64::MAX, Purpose::Resample),
        ];
        let want = FROZEN;
        for (g, w) in got.iter().zip(want) {
            assert_eq!(g.to_bits(), w.to_bits(), "got {got:?}");
        }
    }
    const FROZEN: [f64; 3] = [0.024086339130761525, 0.5457568490621914, 0.7414200151716721];

    #[test]
    fn every_coordinate_changes_the_value() {
        let purposes = [Purpose::Propose, Purpose::Gate, Purpose::Resample];
        let mut seen = HashSet::new();
        let mut count = 0;
        for seed in 0..8u64 {
            for seq in 0..8u64 {
                for pos in 0..64u64 {
                    for p in purposes {
                        seen.insert(uniform(seed, seq, pos, p).to_bits());
                        count += 1;
                    }
                }
            }
        }
        // 12,288 tuples, 53-bit outputs: any repeat is a structural collision.
        assert_eq!(seen.len(), count);
        // Swapping coordinates must not collide either.
        assert_ne!(
            uniform(1, 2, 3, Purpose::Gate),
            uniform(1, 3, 2, Purpose::Gate)
        );
        assert_ne!(
            uniform(1, 2, 3, Purpose::Gate),
            uniform(2, 1, 3, Purpose::Gate)
        );
    }

    /// Chi-square statistic of `draws` in 20 equal bins.
    fn chi_square_20(draws: impl Iterator<Item = f64>) -> f64 {
        let mut bins = [0u64; 20];
        let mut n = 0u64;
        for u in draws {
            bins[(u * 20.0) as usize] += 1;
            n += 1;
        }
        let expected = n as f64 / 20.0;
        bins.iter()
            .map(|&c| (c as f64 - expected).powi(2) / expected)
            .sum()
    }

    /// χ²(19) at p = 0.001.
    const CHI2_19_P001: f64 = 43.82;

    #[test]
    fn uniform_in_20_bins() {
        for purpose in [Purpose::Propose, Purpose::Gate, Purpose::Resample] {
            let chi2 = chi_square_20((0..N).map(|i| uniform(12345, 0, i, purpose)));
            assert!(chi2 < CHI2_19_P001, "{purpose:?}: chi2 = {chi2}");
        }
        // Along the other axes too.
        let chi2 = chi_square_20((0..N).map(|s| uniform(s, 0, 0, Purpose::Propose)));
        assert!(chi2 < CHI2_19_P001, "over seeds: chi2 = {chi2}");
        let chi2 = chi_square_20((0..N).map(|s| uniform(9, s, 5, Purpose::Propose)));
        assert!(chi2 < CHI2_19_P001, "over sequences: chi2 = {chi2}");
    }

    fn correlation(x: &[f64], y: &[f64]) -> f64 {
        let n = x.len() as f64;
        let (mx, my) = (x.iter().sum::<f64>() / n, y.iter().sum::<f64>() / n);
        let (mut sxy, mut sxx, mut syy) = (0.0, 0.0, 0.0);
        for (a, b) in x.iter().zip(y) {
            sxy += (a - mx) * (b - my);
            sxx += (a - mx) * (a - mx);
            syy += (b - my) * (b - my);
        }
        sxy / (sxx * syy).sqrt()
    }

    #[test]
    fn adjacent_positions_and_purposes_uncorrelated() {
        let u: Vec<f64> = (0..=N)
            .map(|i| uniform(7, 1, i, Purpose::Propose))
            .collect();
        // Under independence r ~ N(0, 1/n); 4 standard deviations.
        let bound = 4.0 / (N as f64).sqrt();
        let r = correlation(&u[..N as usize], &u[1..]);
        assert!(r.abs() < bound, "lag-1 correlation {r}");
        let g: Vec<f64> = (0..N).map(|i| uniform(7, 1, i, Purpose::Gate)).collect();
        let r = correlation(&u[..N as usize], &g);
        assert!(r.abs() < bound, "propose/gate correlation {r}");
        let s: Vec<f64> = (0..N).map(|i| uniform(7, 2, i, Purpose::Propose)).collect();
        let r = correlation(&u[..N as usize], &s);
        assert!(r.abs() < bound, "sequence 1/2 correlation {r}");
    }
}

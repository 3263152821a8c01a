//! Accuracy metrics over k samples per problem: Avg@k and the unbiased Pass@k.
//!
//! Pass@k follows Chen et al. 2021 (the Codex paper): with `n` samples of which
//! `c` are correct, the probability that a random `k`-subset holds at least one
//! correct sample is `1 − C(n−c, k) / C(n, k)`, computed as the product
//! `1 − Π_{i=n−c+1}^{n} (1 − k/i)` so no binomial coefficient is ever formed.

use thiserror::Error;

/// Why a metric could not be computed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum MetricError {
    #[error("pass@{k} needs at least {k} samples per problem, got {n}")]
    KGreaterThanN { k: usize, n: usize },
    #[error("pass@k needs k ≥ 1, got 0")]
    ZeroK,
    #[error("{c} correct samples out of {n} is impossible")]
    CGreaterThanN { c: usize, n: usize },
    #[error("no problems to summarize")]
    NoProblems,
    #[error("problem {index}: {source}")]
    AtProblem {
        index: usize,
        #[source]
        source: Box<MetricError>,
    },
}

/// The unbiased Pass@k estimate for one problem with `n` samples, `c` correct.
///
/// Returns 1.0 when `n − c < k` (every `k`-subset holds a correct sample) and
/// 0.0 when `c = 0`. Errors when `k = 0`, `k > n` or `c > n`; the result is
/// always a finite value in `[0, 1]`.
pub fn pass_at_k(n: usize, c: usize, k: usize) -> Result<f64, MetricError> {
    if k == 0 {
        return Err(MetricError::ZeroK);
    }
    if k > n {
        return Err(MetricError::KGreaterThanN { k, n });
    }
    if c > n {
        return Err(MetricError::CGreaterThanN { c, n });
    }
    if n - c < k {
        return Ok(1.0);
    }
    let k = k as f64;
    let all_wrong: f64 = (n - c + 1..=n).map(|i| 1.0 - k / i as f64).product();
    Ok((1.0 - all_wrong).clamp(0.0, 1.0))
}

/// Avg@k: the share of correct samples; 0.0 for an empty slice.
pub fn avg_at_k(correct: &[bool]) -> f64 {
    if correct.is_empty() {
        return 0.0;
    }
    correct.iter().filter(|&&ok| ok).count() as f64 / correct.len() as f64
}

/// Aggregates per-problem `(n, c)` counts into `(Avg@k, Pass@k)`, each the mean
/// over problems of `c / n` and of [`pass_at_k`]`(n, c, k)`.
///
/// Every problem must have at least `k` samples; the error names the first
/// offending problem by its index.
pub fn summarize(per_problem: &[(usize, usize)], k: usize) -> Result<(f64, f64), MetricError> {
    if per_problem.is_empty() {
        return Err(MetricError::NoProblems);
    }
    let (mut avg, mut pass) = (0.0, 0.0);
    for (index, &(n, c)) in per_problem.iter().enumerate() {
        let p = pass_at_k(n, c, k).map_err(|source| MetricError::AtProblem {
            index,
            source: Box::new(source),
        })?;
        // pass_at_k succeeded, so n ≥ k ≥ 1 and c ≤ n.
        avg += c as f64 / n as f64;
        pass += p;
    }
    let m = per_problem.len() as f64;
    Ok((avg / m, pass / m))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Share of `k`-subsets of `n` samples (the first `c` correct) that hold a
    /// correct sample, by enumerating every subset as a bit mask.
    fn brute_force(n: usize, c: usize, k: usize) -> f64 {
        let correct_mask = (1u32 << c) - 1;
        let (mut hits, mut total) = (0u32, 0u32);
        for subset in 0u32..(1 << n) {
            if subset.count_ones() as usize == k {
                total += 1;
                hits += u32::from(subset & correct_mask != 0);
            }
        }
        f64::from(hits) / f64::from(total)
    }

    #[test]
    fn matches_brute_force_for_all_small_cases() {
        let mut checked = 0;
        for n in 1..=10 {
            for c in 0..=n {
                for k in 1..=n {
                    let got = pass_at_k(n, c, k).unwrap();
                    let want = brute_force(n, c, k);
                    assert!(
                        (got - want).abs() < 1e-12,
                        "n={n} c={c} k={k}: {got} vs {want}"
                    );
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, (1..=10).map(|n| (n + 1) * n).sum::<usize>());
    }

    #[test]
    fn edge_cases() {
        assert_eq!(pass_at_k(10, 0, 3), Ok(0.0));
        assert_eq!(pass_at_k(10, 10, 3), Ok(1.0));
        assert_eq!(pass_at_k(5, 1, 5), Ok(1.0));
        assert_eq!(pass_at_k(5, 0, 5), Ok(0.0));
        // k = 1 is the plain success rate.
        assert!((pass_at_k(8, 3, 1).unwrap() - 3.0 / 8.0).abs() < 1e-15);
        // Large n stays finite and exact enough: 1 − C(900, 10)/C(1000, 10).
        let p = pass_at_k(1000, 100, 10).unwrap();
        let want = 1.0
            - (0..10)
                .map(|i| (900.0 - i as f64) / (1000.0 - i as f64))
                .product::<f64>();
        assert!((p - want).abs() < 1e-12);
    }

    #[test]
    fn invalid_arguments_are_errors() {
        assert_eq!(
            pass_at_k(3, 1, 4),
            Err(MetricError::KGreaterThanN { k: 4, n: 3 })
        );
        assert_eq!(
            pass_at_k(0, 0, 1),
            Err(MetricError::KGreaterThanN { k: 1, n: 0 })
        );
        assert_eq!(pass_at_k(3, 1, 0), Err(MetricError::ZeroK));
        assert_eq!(
            pass_at_k(3, 4, 2),
            Err(MetricError::CGreaterThanN { c: 4, n: 3 })
        );
        assert_eq!(
            MetricError::KGreaterThanN { k: 4, n: 3 }.to_string(),
            "pass@4 needs at least 4 samples per problem, got 3"
        );
    }

    #[test]
    fn avg_is_the_share_correct() {
        assert_eq!(avg_at_k(&[true, false, false, true]), 0.5);
        assert_eq!(avg_at_k(&[false; 3]), 0.0);
        assert_eq!(avg_at_k(&[true; 7]), 1.0);
        assert_eq!(avg_at_k(&[]), 0.0);
    }

    #[test]
    fn summarize_averages_over_problems() {
        let (avg, pass) = summarize(&[(4, 1), (4, 0), (4, 4)], 2).unwrap();
        assert!((avg - (0.25 + 0.0 + 1.0) / 3.0).abs() < 1e-15);
        // pass@2 for (4, 1) is 1 − C(3,2)/C(4,2) = 1/2.
        assert!((pass - (0.5 + 0.0 + 1.0) / 3.0).abs() < 1e-15);
        assert_eq!(summarize(&[], 1), Err(MetricError::NoProblems));
        let err = summarize(&[(4, 1), (1, 0)], 2).unwrap_err();
        assert_eq!(
            err.to_string(),
            "problem 1: pass@2 needs at least 2 samples per problem, got 1"
        );
    }
}

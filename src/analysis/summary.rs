//! Summary statistics of per-token metrics.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::sampler::TokenMetrics;

/// The |Δlog p| thresholds [`ScoreReport::abs_dlogp_above`] counts, in nats.
pub const ABS_DLOGP_THRESHOLDS: [f64; 4] = [0.1, 0.5, 1.0, 2.0];

/// Distribution of one metric over tokens.
///
/// `std` is the population standard deviation (divides by `count`, numpy's
/// default `ddof=0`). Quantiles use linear interpolation between the closest
/// ranks, numpy's default `method="linear"`: for sorted values `x_0 ≤ … ≤ x_{n−1}`
/// and `q ∈ [0, 1]`, with `h = (n − 1) q`, the quantile is
/// `x_⌊h⌋ + (h − ⌊h⌋)(x_⌊h⌋+1 − x_⌊h⌋)`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct MetricSummary {
    pub count: usize,
    pub mean: f64,
    pub std: f64,
    pub min: f64,
    pub p01: f64,
    pub p05: f64,
    pub p25: f64,
    pub p50: f64,
    pub p75: f64,
    pub p95: f64,
    pub p99: f64,
    pub max: f64,
}

impl MetricSummary {
    /// Summarises `values`, sorting them in place (IEEE total order, so NaN
    /// cannot panic; it sorts last and makes the mean NaN). `None` if empty.
    pub fn from_slice(values: &mut [f64]) -> Option<MetricSummary> {
        if values.is_empty() {
            return None;
        }
        values.sort_unstable_by(f64::total_cmp);
        let n = values.len() as f64;
        let mean = values.iter().sum::<f64>() / n;
        let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
        let q = |p| quantile(values, p);
        Some(MetricSummary {
            count: values.len(),
            mean,
            std: var.sqrt(),
            min: values[0],
            p01: q(0.01),
            p05: q(0.05),
            p25: q(0.25),
            p50: q(0.50),
            p75: q(0.75),
            p95: q(0.95),
            p99: q(0.99),
            max: values[values.len() - 1],
        })
    }

    /// [`MetricSummary::from_slice`] for an owned vector.
    pub fn from_vec(mut values: Vec<f64>) -> Option<MetricSummary> {
        Self::from_slice(&mut values)
    }
}

/// Quantile `p ∈ [0, 1]` (clamped) of `sorted` (ascending) by linear
/// interpolation between the closest ranks, numpy's default `method="linear"`:
/// with `h = (n − 1) p`, `x_⌊h⌋ + (h − ⌊h⌋)(x_⌊h⌋+1 − x_⌊h⌋)`, and exactly
/// `x_h` when `h` is a whole number. NaN for an empty slice.
///
/// The one quantile of the crate: [`MetricSummary`] and the τ calibration of
/// `dlogp intervene` ([`crate::eval::calibrate`]) both use it.
pub fn quantile(sorted: &[f64], p: f64) -> f64 {
    let Some(last) = sorted.len().checked_sub(1) else {
        return f64::NAN;
    };
    let h = last as f64 * p.clamp(0.0, 1.0);
    let lo = (h.floor() as usize).min(last);
    let hi = (lo + 1).min(last);
    let t = h - lo as f64;
    let (a, b) = (sorted[lo], sorted[hi]);
    if t == 0.0 {
        a
    } else {
        a + t * (b - a)
    }
}

/// The measured noise floor of a pair: |Δlog p| between the base and the
/// base with a negligible update on the same responses (see
/// `runtime::noise_floor_dlogp`). Δlog p values of the pair inside
/// `[−p99, p99]` are indistinguishable from rounding.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NoiseFloor {
    /// How it was measured.
    pub method: String,
    /// Distribution of |Δlog p| over the probed tokens.
    pub abs_dlogp: MetricSummary,
}

impl NoiseFloor {
    /// The floor from the probe's signed Δlog p values; `None` if empty.
    pub fn from_dlogp(method: impl Into<String>, dlogp: &[f64]) -> Option<NoiseFloor> {
        let abs: Vec<f64> = dlogp.iter().map(|d| d.abs()).collect();
        Some(NoiseFloor {
            method: method.into(),
            abs_dlogp: MetricSummary::from_vec(abs)?,
        })
    }

    /// One line for people: `noise floor |Δlog p|: p50 …, p95 …, p99 …, max … (n tokens; method)`.
    pub fn line(&self) -> String {
        let s = &self.abs_dlogp;
        format!(
            "noise floor |dlogp|: p50 {:.4}, p95 {:.4}, p99 {:.4}, max {:.4} ({} tokens; {})",
            s.p50, s.p95, s.p99, s.max, s.count, self.method
        )
    }
}

/// The normal quantile of a two-sided 95 % interval.
pub const Z95: f64 = 1.959_963_984_540_054;

/// The Wilson score interval for `successes` out of `trials` at normal
/// quantile `z` ([`Z95`] for 95 %): with p = k/n,
/// `(p + z²/2n ± z √(p(1−p)/n + z²/4n²)) / (1 + z²/n)`, clamped to [0, 1].
/// Unlike p ± z√(p(1−p)/n) it stays inside [0, 1] and is not empty at p = 0
/// or 1. No trials: `(0, 1)`.
pub fn wilson(successes: f64, trials: f64, z: f64) -> (f64, f64) {
    if trials <= 0.0 {
        return (0.0, 1.0);
    }
    let p = (successes / trials).clamp(0.0, 1.0);
    let z2 = z * z;
    let denom = 1.0 + z2 / trials;
    let center = (p + z2 / (2.0 * trials)) / denom;
    let half = z * (p * (1.0 - p) / trials + z2 / (4.0 * trials * trials)).sqrt() / denom;
    ((center - half).max(0.0), (center + half).min(1.0))
}

/// One summary per metric of [`TokenMetrics`]; `None` when no tokens were scored.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MetricSummaries {
    pub logp_base: Option<MetricSummary>,
    pub logp_rl: Option<MetricSummary>,
    pub dlogp: Option<MetricSummary>,
    pub entropy_base: Option<MetricSummary>,
    pub entropy_rl: Option<MetricSummary>,
    pub kl: Option<MetricSummary>,
    pub kl_r: Option<MetricSummary>,
    pub js: Option<MetricSummary>,
}

/// How many tokens have |Δlog p| strictly above `threshold`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ThresholdCount {
    pub threshold: f64,
    pub count: usize,
    /// `count / n_tokens`; 0 when there are no tokens.
    pub share: f64,
}

/// What `dlogp score` reports over a set of responses.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ScoreReport {
    /// Responses scored.
    pub n_rows: usize,
    /// Response tokens scored.
    pub n_tokens: usize,
    pub metrics: MetricSummaries,
    /// Counts of |Δlog p| > t for t in [`ABS_DLOGP_THRESHOLDS`].
    pub abs_dlogp_above: Vec<ThresholdCount>,
    /// Share of tokens with Δlog p > 0 (0 when there are no tokens).
    pub dlogp_positive_share: f64,
    /// Share of tokens with Δlog p < 0 (0 when there are no tokens).
    pub dlogp_negative_share: f64,
    /// The pair's measured noise floor (`dlogp score --noise-floor`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub noise_floor: Option<NoiseFloor>,
}

/// Accumulates [`TokenMetrics`] over responses. Keeps every value (8 × f64
/// per token) so that quantiles are exact.
#[derive(Debug, Clone, Default)]
pub struct ScoreSummary {
    n_rows: usize,
    logp_base: Vec<f64>,
    logp_rl: Vec<f64>,
    dlogp: Vec<f64>,
    entropy_base: Vec<f64>,
    entropy_rl: Vec<f64>,
    kl: Vec<f64>,
    kl_r: Vec<f64>,
    js: Vec<f64>,
}

impl ScoreSummary {
    pub fn new() -> Self {
        Self::default()
    }

    /// Records one scored token.
    pub fn push(&mut self, m: &TokenMetrics) {
        self.logp_base.push(m.logp_base);
        self.logp_rl.push(m.logp_rl);
        self.dlogp.push(m.dlogp);
        self.entropy_base.push(m.entropy_base);
        self.entropy_rl.push(m.entropy_rl);
        self.kl.push(m.kl);
        self.kl_r.push(m.kl_r);
        self.js.push(m.js);
    }

    /// Counts one finished response.
    pub fn add_row(&mut self) {
        self.n_rows += 1;
    }

    /// Tokens recorded so far.
    pub fn n_tokens(&self) -> usize {
        self.dlogp.len()
    }

    pub fn finish(self) -> ScoreReport {
        let n_tokens = self.dlogp.len();
        let share = |count: usize| {
            if n_tokens == 0 {
                0.0
            } else {
                count as f64 / n_tokens as f64
            }
        };
        let abs_dlogp_above = ABS_DLOGP_THRESHOLDS
            .iter()
            .map(|&threshold| {
                let count = self.dlogp.iter().filter(|d| d.abs() > threshold).count();
                ThresholdCount {
                    threshold,
                    count,
                    share: share(count),
                }
            })
            .collect();
        let positive = self.dlogp.iter().filter(|&&d| d > 0.0).count();
        let negative = self.dlogp.iter().filter(|&&d| d < 0.0).count();
        ScoreReport {
            n_rows: self.n_rows,
            n_tokens,
            abs_dlogp_above,
            dlogp_positive_share: share(positive),
            dlogp_negative_share: share(negative),
            noise_floor: None,
            metrics: MetricSummaries {
                logp_base: MetricSummary::from_vec(self.logp_base),
                logp_rl: MetricSummary::from_vec(self.logp_rl),
                dlogp: MetricSummary::from_vec(self.dlogp),
                entropy_base: MetricSummary::from_vec(self.entropy_base),
                entropy_rl: MetricSummary::from_vec(self.entropy_rl),
                kl: MetricSummary::from_vec(self.kl),
                kl_r: MetricSummary::from_vec(self.kl_r),
                js: MetricSummary::from_vec(self.js),
            },
        }
    }
}

impl MetricSummaries {
    /// (name, summary) in display order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, Option<&MetricSummary>)> {
        [
            ("logp_base", self.logp_base.as_ref()),
            ("logp_rl", self.logp_rl.as_ref()),
            ("dlogp", self.dlogp.as_ref()),
            ("entropy_base", self.entropy_base.as_ref()),
            ("entropy_rl", self.entropy_rl.as_ref()),
            ("kl", self.kl.as_ref()),
            ("kl_r", self.kl_r.as_ref()),
            ("js", self.js.as_ref()),
        ]
        .into_iter()
    }
}

/// A number in 10 columns: fixed-point unless tiny (then scientific).
struct Num(f64);

impl fmt::Display for Num {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v = self.0;
        if v == 0.0 || (1e-3..1e6).contains(&v.abs()) {
            write!(f, "{v:>10.4}")
        } else {
            write!(f, "{v:>10.2e}")
        }
    }
}

impl fmt::Display for ScoreReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} responses, {} tokens", self.n_rows, self.n_tokens)?;
        writeln!(
            f,
            "{:<13}{:>10}{:>10}{:>10}{:>10}{:>10}",
            "metric", "mean", "p05", "p50", "p95", "max"
        )?;
        for (name, s) in self.metrics.iter() {
            match s {
                Some(s) => writeln!(
                    f,
                    "{name:<13}{}{}{}{}{}",
                    Num(s.mean),
                    Num(s.p05),
                    Num(s.p50),
                    Num(s.p95),
                    Num(s.max)
                )?,
                None => writeln!(f, "{name:<13}{:>10}", "-")?,
            }
        }
        write!(f, "|dlogp| >")?;
        for t in &self.abs_dlogp_above {
            write!(
                f,
                "  {}: {} ({:.2}%)",
                t.threshold,
                t.count,
                100.0 * t.share
            )?;
        }
        writeln!(f)?;
        write!(
            f,
            "dlogp > 0: {:.2}%  dlogp < 0: {:.2}%",
            100.0 * self.dlogp_positive_share,
            100.0 * self.dlogp_negative_share
        )?;
        if let Some(n) = &self.noise_floor {
            write!(f, "\n{}", n.line())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-12
    }

    #[test]
    fn wilson_matches_hand_computed_intervals() {
        // 8/10: centre (0.8 + 0.19207)/1.38415 = 0.71674, half 0.22657
        let (lo, hi) = wilson(8.0, 10.0, Z95);
        assert!(
            (lo - 0.4902).abs() < 1e-4 && (hi - 0.9433).abs() < 1e-4,
            "{lo} {hi}"
        );
        // 0/20: [0, z²/(n + z²)] = [0, 3.8415/23.8415]
        let (lo, hi) = wilson(0.0, 20.0, Z95);
        assert_eq!(lo, 0.0);
        assert!((hi - 0.161_12).abs() < 1e-4, "{hi}");
        // symmetric: 20/20 mirrors 0/20
        let (lo2, hi2) = wilson(20.0, 20.0, Z95);
        assert!((lo2 - (1.0 - hi)).abs() < 1e-12 && hi2 == 1.0);
        assert_eq!(wilson(0.0, 0.0, Z95), (0.0, 1.0));
    }

    #[test]
    fn noise_floor_is_quantiles_of_abs_dlogp() {
        // |Δ| = 0, 0.1, 0.2, 0.3, 0.4: p50 0.2, p99 = 0.3 + 0.96 · 0.1 = 0.396
        let n = NoiseFloor::from_dlogp("probe", &[0.1, -0.4, 0.0, -0.2, 0.3]).unwrap();
        let s = n.abs_dlogp;
        assert_eq!((s.count, s.min, s.max), (5, 0.0, 0.4));
        assert!(close(s.p50, 0.2) && close(s.p99, 0.396), "{s:?}");
        assert!(close(s.mean, 0.2));
        // identical models: every quantile exactly 0
        let zero = NoiseFloor::from_dlogp("zero", &[0.0, -0.0, 0.0]).unwrap();
        assert_eq!((zero.abs_dlogp.p99, zero.abs_dlogp.max), (0.0, 0.0));
        assert!(NoiseFloor::from_dlogp("none", &[]).is_none());
        assert!(n
            .line()
            .contains("p99 0.3960, max 0.4000 (5 tokens; probe)"));
    }

    #[test]
    fn quantiles_of_one_to_four_match_numpy() {
        // numpy.quantile([1, 2, 3, 4], [.01, .05, .25, .5, .75, .95, .99])
        let s = MetricSummary::from_vec(vec![4.0, 2.0, 1.0, 3.0]).unwrap();
        assert_eq!(s.count, 4);
        assert!(close(s.mean, 2.5));
        assert!(close(s.std, 1.25f64.sqrt())); // population std
        assert_eq!((s.min, s.max), (1.0, 4.0));
        let want = [1.03, 1.15, 1.75, 2.5, 3.25, 3.85, 3.97];
        let got = [s.p01, s.p05, s.p25, s.p50, s.p75, s.p95, s.p99];
        for (g, w) in got.iter().zip(want) {
            assert!(close(*g, w), "got {g}, want {w}");
        }
    }

    #[test]
    fn quantile_interpolates_between_ranks() {
        let v = [0.0, 1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.0), 0.0);
        assert_eq!(quantile(&v, 0.5), 2.0);
        assert_eq!(quantile(&v, 0.625), 2.5);
        assert_eq!(quantile(&v, 1.0), 4.0);
        // p is clamped to [0, 1]
        assert_eq!(quantile(&v, -1.0), 0.0);
        assert_eq!(quantile(&v, 2.0), 4.0);
        // an exact rank is the value itself, sign of zero and infinities included
        assert!(quantile(&[-0.0, 1.0], 0.0).is_sign_negative());
        assert_eq!(quantile(&[f64::NEG_INFINITY, 1.0], 0.0), f64::NEG_INFINITY);
        assert_eq!(quantile(&[7.0], 0.3), 7.0);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn quantiles_of_odd_and_single_inputs() {
        let s = MetricSummary::from_vec(vec![10.0, 0.0, 5.0]).unwrap();
        assert_eq!(s.p50, 5.0);
        assert!(close(s.p25, 2.5));
        assert!(close(s.p99, 9.9));
        let one = MetricSummary::from_vec(vec![-7.0]).unwrap();
        assert_eq!(
            (one.p01, one.p50, one.p99, one.std),
            (-7.0, -7.0, -7.0, 0.0)
        );
        assert_eq!(MetricSummary::from_vec(vec![]), None);
    }

    fn token(dlogp: f64, kl: f64) -> TokenMetrics {
        TokenMetrics {
            logp_base: -1.0,
            logp_rl: -1.0 + dlogp,
            dlogp,
            entropy_base: 1.0,
            entropy_rl: 2.0,
            kl,
            kl_r: 2.0 * kl,
            js: 1.5 * kl,
            rank_base: 0,
            rank_rl: 0,
        }
    }

    #[test]
    fn score_summary_counts_shares_and_thresholds() {
        let mut acc = ScoreSummary::new();
        for d in [0.0, 0.05, -0.3, 0.7, -1.5, 3.0, 0.5, -0.1] {
            acc.push(&token(d, d.abs()));
        }
        acc.add_row();
        acc.add_row();
        assert_eq!(acc.n_tokens(), 8);
        let r = acc.finish();
        assert_eq!((r.n_rows, r.n_tokens), (2, 8));
        // |d| > 0.1: 0.3, 0.7, 1.5, 3.0, 0.5 (0.1 itself is not above) → 5
        // |d| > 0.5: 0.7, 1.5, 3.0 → 3;  > 1: 1.5, 3.0 → 2;  > 2: 3.0 → 1
        let counts: Vec<_> = r.abs_dlogp_above.iter().map(|t| t.count).collect();
        assert_eq!(counts, [5, 3, 2, 1]);
        assert_eq!(r.abs_dlogp_above[0].share, 5.0 / 8.0);
        assert_eq!(r.abs_dlogp_above[3].threshold, 2.0);
        assert_eq!(r.dlogp_positive_share, 4.0 / 8.0);
        assert_eq!(r.dlogp_negative_share, 3.0 / 8.0);
        let dl = r.metrics.dlogp.unwrap();
        assert!(close(
            dl.mean,
            (0.05 - 0.3 + 0.7 - 1.5 + 3.0 + 0.5 - 0.1) / 8.0
        ));
        assert_eq!((dl.min, dl.max), (-1.5, 3.0));
        // sorted: -1.5 -0.3 -0.1 0 0.05 0.5 0.7 3.0; median = (0 + 0.05)/2
        assert!(close(dl.p50, 0.025));
        assert_eq!(r.metrics.entropy_rl.unwrap().mean, 2.0);
        assert_eq!(r.metrics.kl_r.unwrap().max, 6.0);
    }

    #[test]
    fn empty_report_is_well_formed_json_and_text() {
        let r = ScoreSummary::new().finish();
        assert_eq!(r.n_tokens, 0);
        assert_eq!(r.metrics.kl, None);
        assert_eq!(r.dlogp_positive_share, 0.0);
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["metrics"]["dlogp"], serde_json::Value::Null);
        assert_eq!(json["abs_dlogp_above"][1]["threshold"], 0.5);
        let text = r.to_string();
        assert!(text.starts_with("0 responses, 0 tokens\n"), "{text}");
    }

    #[test]
    fn display_has_one_line_per_metric() {
        let mut acc = ScoreSummary::new();
        acc.push(&token(1.0, 2e-5));
        acc.add_row();
        let text = acc.finish().to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 1 + 1 + 8 + 2, "{text}");
        assert_eq!(
            lines[4],
            "dlogp            1.0000    1.0000    1.0000    1.0000    1.0000"
        );
        assert_eq!(
            lines[7],
            "kl              2.00e-5   2.00e-5   2.00e-5   2.00e-5   2.00e-5"
        );
        assert_eq!(
            lines[10],
            "|dlogp| >  0.1: 1 (100.00%)  0.5: 1 (100.00%)  1: 0 (0.00%)  2: 0 (0.00%)"
        );
    }
}

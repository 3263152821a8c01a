//! Choosing τ and γ of selective extrapolation on a validation split,
//! aware of sampling noise (`dlogp tune`).
//!
//! Every cell of a τ × γ grid is an `extrapolate` configuration; each gets
//! Avg@k with a confidence interval, and so does the RL model alone. The k
//! samples of one problem are not independent draws (they share the
//! problem's difficulty), so the unit of resampling is the problem: the
//! interval is over the mean of the per-problem accuracies `c_i / k`, by a
//! percentile bootstrap over problems or by the normal approximation with
//! the between-problem variance (the cluster-robust standard error). A
//! binomial interval over all n·k samples would be too narrow.
//!
//! Every cell is also compared with the RL model on the same problems: the
//! interval of the paired difference (cell − RL) of per-problem accuracies,
//! in which each problem's difficulty cancels, so it is much narrower than
//! the two cells' own intervals suggest.
//!
//! The rule ([`select`]): the best cell (by Avg@k) among those whose paired
//! difference has its lower bound above 0 at the Bonferroni-corrected level
//! `1 − (1 − level)/cells` (choosing among many cells would otherwise find a
//! "winner" by chance); when none has, the best point estimate, flagged as
//! not beating RL.

use serde::Serialize;

use crate::analysis::quantile;

/// How intervals are computed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum IntervalMethod {
    /// Percentile bootstrap over problems (seeded, deterministic).
    Bootstrap,
    /// Mean ± z·s/√n with s the standard deviation of per-problem accuracies.
    Normal,
}

/// A point estimate and its interval, all in `[0, 1]`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Interval {
    pub estimate: f64,
    pub lo: f64,
    pub hi: f64,
}

/// The two-sided standard normal quantile for `level` (0.9, 0.95, 0.99 and
/// anything between by Acklam's rational approximation, |error| < 1.2e-9).
pub fn z_for(level: f64) -> f64 {
    inverse_normal_cdf(0.5 + level.clamp(0.0, 0.999_999) / 2.0)
}

/// Φ⁻¹(p) for p in (0, 1) (P. J. Acklam's approximation).
fn inverse_normal_cdf(p: f64) -> f64 {
    const A: [f64; 6] = [
        -3.969_683_028_665_376e1,
        2.209_460_984_245_205e2,
        -2.759_285_104_469_687e2,
        1.383_577_518_672_69e2,
        -3.066_479_806_614_716e1,
        2.506_628_277_459_239,
    ];
    const B: [f64; 5] = [
        -5.447_609_879_822_406e1,
        1.615_858_368_580_409e2,
        -1.556_989_798_598_866e2,
        6.680_131_188_771_972e1,
        -1.328_068_155_288_572e1,
    ];
    const C: [f64; 6] = [
        -7.784_894_002_430_293e-3,
        -3.223_964_580_411_365e-1,
        -2.400_758_277_161_838,
        -2.549_732_539_343_734,
        4.374_664_141_464_968,
        2.938_163_982_698_783,
    ];
    const D: [f64; 4] = [
        7.784_695_709_041_462e-3,
        3.224_671_290_700_398e-1,
        2.445_134_137_142_996,
        3.754_408_661_907_416,
    ];
    let p_low = 0.02425;
    if p < p_low {
        let q = (-2.0 * p.ln()).sqrt();
        (((((C[0] * q + C[1]) * q + C[2]) * q + C[3]) * q + C[4]) * q + C[5])
            / ((((D[0] * q + D[1]) * q + D[2]) * q + D[3]) * q + 1.0)
    } else if p <= 1.0 - p_low {
        let q = p - 0.5;
        let r = q * q;
        (((((A[0] * r + A[1]) * r + A[2]) * r + A[3]) * r + A[4]) * r + A[5]) * q
            / (((((B[0] * r + B[1]) * r + B[2]) * r + B[3]) * r + B[4]) * r + 1.0)
    } else {
        -inverse_normal_cdf(1.0 - p)
    }
}

fn mean(x: &[f64]) -> f64 {
    x.iter().sum::<f64>() / x.len() as f64
}

/// Mean of the per-problem accuracies ± z·s/√n, s their sample standard
/// deviation (n − 1), clamped to [0, 1]. One problem: the point itself.
pub fn normal_interval(per_problem: &[f64], level: f64) -> Interval {
    normal_interval_within(per_problem, level, (0.0, 1.0))
}

/// [`normal_interval`] clamped to `bounds` instead of [0, 1].
fn normal_interval_within(per_problem: &[f64], level: f64, bounds: (f64, f64)) -> Interval {
    let n = per_problem.len();
    if n == 0 {
        return Interval {
            estimate: f64::NAN,
            lo: f64::NAN,
            hi: f64::NAN,
        };
    }
    let m = mean(per_problem);
    if n == 1 {
        return Interval {
            estimate: m,
            lo: m,
            hi: m,
        };
    }
    let var = per_problem.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (n - 1) as f64;
    let half = z_for(level) * (var / n as f64).sqrt();
    Interval {
        estimate: m,
        lo: (m - half).max(bounds.0),
        hi: (m + half).min(bounds.1),
    }
}

/// Percentile bootstrap of the mean over problems: `resamples` resamples of
/// n problems with replacement (drawn by SplitMix64 from `seed`), the
/// interval between the `(1 − level)/2` and `(1 + level)/2` quantiles of
/// their means.
pub fn bootstrap_interval(
    per_problem: &[f64],
    level: f64,
    resamples: usize,
    seed: u64,
) -> Interval {
    let n = per_problem.len();
    let estimate = if n == 0 { f64::NAN } else { mean(per_problem) };
    if n == 0 || resamples == 0 {
        return Interval {
            estimate,
            lo: estimate,
            hi: estimate,
        };
    }
    let mut state = seed;
    let mut means: Vec<f64> = (0..resamples)
        .map(|_| {
            let mut sum = 0.0;
            for _ in 0..n {
                let r = crate::sampler::rng::splitmix64(&mut state);
                // multiply-shift: unbiased enough for n ≪ 2^32
                let i = ((r >> 32) * n as u64) >> 32;
                sum += per_problem[i as usize];
            }
            sum / n as f64
        })
        .collect();
    means.sort_by(f64::total_cmp);
    let tail = (1.0 - level.clamp(0.0, 1.0)) / 2.0;
    Interval {
        estimate,
        lo: quantile(&means, tail),
        hi: quantile(&means, 1.0 - tail),
    }
}

/// Avg@k's interval from per-problem correct counts out of `k`.
pub fn avg_at_k_interval(
    correct: &[usize],
    k: usize,
    method: IntervalMethod,
    level: f64,
    seed: u64,
) -> Interval {
    let p: Vec<f64> = correct
        .iter()
        .map(|&c| c as f64 / k.max(1) as f64)
        .collect();
    match method {
        IntervalMethod::Normal => normal_interval(&p, level),
        IntervalMethod::Bootstrap => bootstrap_interval(&p, level, BOOTSTRAP_RESAMPLES, seed),
    }
}

/// The interval of the paired difference `cell − reference` of per-problem
/// accuracies (correct counts out of `k` on the same problems, in the same
/// order), in [−1, 1].
pub fn paired_difference_interval(
    cell: &[usize],
    reference: &[usize],
    k: usize,
    method: IntervalMethod,
    level: f64,
    seed: u64,
) -> Interval {
    let d: Vec<f64> = cell
        .iter()
        .zip(reference)
        .map(|(&c, &r)| (c as f64 - r as f64) / k.max(1) as f64)
        .collect();
    match method {
        IntervalMethod::Normal => normal_interval_within(&d, level, (-1.0, 1.0)),
        IntervalMethod::Bootstrap => bootstrap_interval(&d, level, BOOTSTRAP_RESAMPLES, seed),
    }
}

/// The level of each cell's paired interval: `1 − (1 − level)/cells`, so
/// that the chance that any of the cells seems to beat the reference by
/// luck alone stays below `1 − level` (Bonferroni).
pub fn corrected_level(level: f64, cells: usize) -> f64 {
    1.0 - (1.0 - level) / cells.max(1) as f64
}

/// Resamples of the bootstrap.
pub const BOOTSTRAP_RESAMPLES: usize = 2000;

/// One cell of the grid.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Cell {
    pub tau: f64,
    pub gamma: f64,
    pub config: String,
    pub avg_at_k: Interval,
    /// The paired difference to the reference (cell − RL), at the
    /// corrected level ([`corrected_level`]).
    pub vs_rl: Interval,
    pub replacement_ratio: f64,
}

/// What [`select`] chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Selection {
    /// Index into the cells.
    pub index: usize,
    /// Whether the chosen cell's paired difference to the reference has its
    /// lower bound above 0; false: no cell's has, and this is merely the
    /// best point estimate.
    pub beats_reference: bool,
}

/// The best cell whose paired difference to the reference has its lower
/// bound above 0 (highest estimate, then highest lower bound, then the
/// first); if there is none, the best point estimate (ties as before), with
/// `beats_reference` false. `None` for no cells.
pub fn select(cells: &[Cell]) -> Option<Selection> {
    let better = |a: &Cell, b: &Cell| {
        a.avg_at_k.estimate > b.avg_at_k.estimate
            || (a.avg_at_k.estimate == b.avg_at_k.estimate && a.avg_at_k.lo > b.avg_at_k.lo)
    };
    let best_of = |keep: &dyn Fn(&Cell) -> bool| {
        let mut best: Option<usize> = None;
        for (i, c) in cells.iter().enumerate() {
            if keep(c) && best.is_none_or(|b| better(c, &cells[b])) {
                best = Some(i);
            }
        }
        best
    };
    if let Some(index) = best_of(&|c: &Cell| c.vs_rl.lo > 0.0) {
        return Some(Selection {
            index,
            beats_reference: true,
        });
    }
    best_of(&|_: &Cell| true).map(|index| Selection {
        index,
        beats_reference: false,
    })
}

/// The grid's results: what `dlogp tune --json` writes.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tuning {
    pub k: usize,
    pub n_problems: usize,
    pub seed: u64,
    pub interval: IntervalMethod,
    pub level: f64,
    /// The level of the paired intervals the rule reads.
    pub paired_level: f64,
    pub rl: Interval,
    pub cells: Vec<Cell>,
    pub selection: Option<Selection>,
}

impl Tuning {
    /// Every cell with its interval, the chosen one marked.
    pub fn markdown(&self) -> String {
        let pct = |x: f64| format!("{:.2}", 100.0 * x);
        let iv = |i: &Interval| format!("{} [{}, {}]", pct(i.estimate), pct(i.lo), pct(i.hi));
        let signed = |x: f64| format!("{:+.2}", 100.0 * x);
        let diff = |i: &Interval| {
            format!(
                "{} [{}, {}]",
                signed(i.estimate),
                signed(i.lo),
                signed(i.hi)
            )
        };
        let level = format!("{:.0}%", 100.0 * self.level);
        let paired = format!("{:.1}%", 100.0 * self.paired_level);
        let mut s = format!(
            "| τ | γ | Avg@{} ({level} CI) | − rl, paired ({paired} CI) | replaced | |\n|---:|---:|---|---|---:|---|\n",
            self.k
        );
        s += &format!("| rl | | {} | | | reference |\n", iv(&self.rl));
        for (i, c) in self.cells.iter().enumerate() {
            let mark = match self.selection {
                Some(sel) if sel.index == i && sel.beats_reference => "**chosen**: beats rl",
                Some(sel) if sel.index == i => "chosen (best estimate; does not beat rl)",
                _ => "",
            };
            s += &format!(
                "| {} | {} | {} | {} | {:.2}% | {mark} |\n",
                c.tau,
                c.gamma,
                iv(&c.avg_at_k),
                diff(&c.vs_rl),
                100.0 * c.replacement_ratio
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn z_matches_the_tables() {
        assert!(close(z_for(0.95), 1.959_964, 1e-6), "{}", z_for(0.95));
        assert!(close(z_for(0.90), 1.644_854, 1e-6));
        assert!(close(z_for(0.99), 2.575_829, 1e-6));
        assert!(close(z_for(0.0), 0.0, 1e-12));
    }

    #[test]
    fn normal_interval_by_hand() {
        // p = 1, 0, ½, ½: mean ½, s² = (¼+¼+0+0)/3 = 1/6, se = √(1/24) = 0.204124
        let i = normal_interval(&[1.0, 0.0, 0.5, 0.5], 0.95);
        assert_eq!(i.estimate, 0.5);
        let half = 1.959_964 * (1.0f64 / 24.0).sqrt(); // 0.400076
        assert!(
            close(i.lo, 0.5 - half, 1e-6) && close(i.hi, 0.5 + half, 1e-6),
            "{i:?}"
        );
        assert!(close(i.lo, 0.099_924, 1e-5), "{i:?}");
        // clamped at the ends; one problem is a point
        let i = normal_interval(&[1.0, 1.0, 1.0, 0.75], 0.95);
        assert_eq!(i.hi, 1.0);
        let i = normal_interval(&[0.25], 0.95);
        assert_eq!((i.lo, i.estimate, i.hi), (0.25, 0.25, 0.25));
    }

    /// The same 8 correct answers out of 16 samples: spread over problems
    /// (each ½) there is no between-problem variance; in whole problems (k
    /// samples all right or all wrong) the interval is as wide as 4
    /// independent draws, not 16: the problem is the unit.
    #[test]
    fn intervals_count_problems_not_samples() {
        let spread = avg_at_k_interval(&[2, 2, 2, 2], 4, IntervalMethod::Normal, 0.95, 0);
        assert_eq!((spread.lo, spread.hi), (0.5, 0.5));
        let clustered = avg_at_k_interval(&[4, 0, 4, 0], 4, IntervalMethod::Normal, 0.95, 0);
        // s² = 4·¼/3 = 1/3, se = √(1/12) = 0.288675
        let half = 1.959_964 * (1.0f64 / 12.0).sqrt();
        assert!(
            close(clustered.lo, (0.5 - half).max(0.0), 1e-6),
            "{clustered:?}"
        );
        // a binomial interval over 16 samples would claim ±0.245
        let naive_half = 1.959_964 * (0.25f64 / 16.0).sqrt();
        assert!(clustered.hi - clustered.estimate > naive_half + 0.2);
    }

    #[test]
    fn bootstrap_by_hand() {
        // two problems, 0 and 1: resampled means are 0, ½, 1 with
        // probabilities ¼, ½, ¼, so the 95% percentile interval is [0, 1]
        let i = bootstrap_interval(&[0.0, 1.0], 0.95, 4000, 7);
        assert_eq!((i.estimate, i.lo, i.hi), (0.5, 0.0, 1.0));
        // ... and the 40% interval (30th to 70th percentile) is the point ½
        let i = bootstrap_interval(&[0.0, 1.0], 0.4, 4000, 7);
        assert_eq!((i.lo, i.hi), (0.5, 0.5));
        // equal problems: no spread at all
        let i = bootstrap_interval(&[0.25; 10], 0.95, 500, 1);
        assert_eq!((i.lo, i.estimate, i.hi), (0.25, 0.25, 0.25));
        // seeded: the same seed, the same interval
        let p: Vec<f64> = (0..30).map(|i| f64::from(i % 5) / 4.0).collect();
        let (a, b) = (
            bootstrap_interval(&p, 0.95, 1000, 3),
            bootstrap_interval(&p, 0.95, 1000, 3),
        );
        assert_eq!(a, b);
        // and close to the normal interval on a larger sample
        let n = normal_interval(&p, 0.95);
        assert!(
            close(a.lo, n.lo, 0.03) && close(a.hi, n.hi, 0.03),
            "{a:?} {n:?}"
        );
    }

    /// A cell with Avg@k `estimate` [lo, hi] and a paired difference to rl
    /// whose lower bound is `diff_lo`.
    fn cell(tau: f64, estimate: f64, lo: f64, hi: f64, diff_lo: f64) -> Cell {
        Cell {
            tau,
            gamma: 0.1,
            config: format!("extrapolate:tau={tau}"),
            avg_at_k: Interval { estimate, lo, hi },
            vs_rl: Interval {
                estimate: estimate - 0.40,
                lo: diff_lo,
                hi: 2.0 * (estimate - 0.40) - diff_lo,
            },
            replacement_ratio: 0.0,
        }
    }

    #[test]
    fn selection_prefers_cells_that_beat_the_reference() {
        // the highest estimate (0.60) is too noisy against rl; 0.58 clears 0
        let cells = [
            cell(-0.1, 0.45, 0.35, 0.55, -0.05),
            cell(-0.2, 0.60, 0.45, 0.75, -0.01),
            cell(-0.3, 0.58, 0.52, 0.64, 0.04),
            cell(-0.4, 0.55, 0.51, 0.59, 0.02),
        ];
        assert_eq!(
            select(&cells),
            Some(Selection {
                index: 2,
                beats_reference: true
            })
        );
        // none clears it: the best estimate, flagged
        let cells = [
            cell(-0.1, 0.45, 0.35, 0.55, -0.1),
            cell(-0.2, 0.60, 0.45, 0.75, -0.01),
        ];
        assert_eq!(
            select(&cells),
            Some(Selection {
                index: 1,
                beats_reference: false
            })
        );
        // equal estimates: the higher lower bound; a paired bound of exactly
        // 0 does not beat rl
        let cells = [
            cell(-0.1, 0.5, 0.40, 0.6, -0.1),
            cell(-0.2, 0.5, 0.50, 0.5, 0.0),
        ];
        assert_eq!(
            select(&cells),
            Some(Selection {
                index: 1,
                beats_reference: false
            })
        );
        assert_eq!(select(&[]), None);
    }

    /// Four problems, k = 4: the cell gets one more sample right than rl on
    /// every problem. Their own intervals overlap widely, yet the paired
    /// difference is exactly +¼ on each problem: no spread, a clear win.
    #[test]
    fn paired_differences_cancel_the_problems_difficulty() {
        let (cell, rl) = ([1, 2, 3, 4], [0, 1, 2, 3]);
        let m = IntervalMethod::Normal;
        let a = avg_at_k_interval(&cell, 4, m, 0.95, 0);
        let b = avg_at_k_interval(&rl, 4, m, 0.95, 0);
        assert!(a.lo < b.hi, "the cells' own intervals overlap: {a:?} {b:?}");
        for method in [IntervalMethod::Normal, IntervalMethod::Bootstrap] {
            let d = paired_difference_interval(&cell, &rl, 4, method, 0.95, 0);
            assert_eq!((d.estimate, d.lo, d.hi), (0.25, 0.25, 0.25), "{method:?}");
        }
        // diffs ¼, ¼, 0, 0: mean ⅛, s² = 4·(⅛)²/3 = 1/48, se = √(1/192),
        // half = 1.959964 · 0.0721688 = 0.141448; the lower bound goes below
        // 0 (no clamping at 0 for a difference)
        let d = paired_difference_interval(&[4, 4, 0, 0], &[3, 3, 0, 0], 4, m, 0.95, 0);
        assert!(close(d.estimate, 0.125, 1e-12), "{d:?}");
        assert!(close(d.lo, 0.125 - 0.141_448, 1e-5), "{d:?}");
        assert!(close(d.hi, 0.125 + 0.141_448, 1e-5), "{d:?}");
        // a loss is negative
        let d = paired_difference_interval(&[0, 0], &[4, 4], 4, m, 0.95, 0);
        assert_eq!((d.estimate, d.lo, d.hi), (-1.0, -1.0, -1.0));
    }

    #[test]
    fn the_correction_divides_the_error_rate_by_the_cells() {
        assert!(close(corrected_level(0.95, 1), 0.95, 1e-12));
        assert!(close(corrected_level(0.95, 10), 0.995, 1e-12));
        assert!(close(corrected_level(0.9, 4), 0.975, 1e-12));
        // the wider level gives the wider interval
        let p = [0.0, 0.25, 0.5, 0.25, 1.0];
        let (a, b) = (
            normal_interval_within(&p, 0.95, (-1.0, 1.0)),
            normal_interval_within(&p, corrected_level(0.95, 9), (-1.0, 1.0)),
        );
        assert!(b.lo < a.lo && b.hi > a.hi, "{a:?} {b:?}");
    }

    #[test]
    fn the_table_marks_the_choice() {
        let t = Tuning {
            k: 4,
            n_problems: 2,
            seed: 0,
            interval: IntervalMethod::Bootstrap,
            level: 0.95,
            paired_level: 0.95,
            rl: Interval {
                estimate: 0.25,
                lo: 0.0,
                hi: 0.5,
            },
            cells: vec![cell(-0.3, 0.75, 0.5, 1.0, -0.05)],
            selection: Some(Selection {
                index: 0,
                beats_reference: false,
            }),
        };
        let md = t.markdown();
        assert!(
            md.contains("| rl | | 25.00 [0.00, 50.00] | | | reference |"),
            "{md}"
        );
        // vs rl: 0.75 − 0.40 = +0.35, lower bound −0.05, upper 0.75
        assert!(md.contains("| -0.3 | 0.1 | 75.00 [50.00, 100.00] | +35.00 [-5.00, +75.00] | 0.00% | chosen (best estimate; does not beat rl) |"), "{md}");
        assert!(md.contains("− rl, paired (95.0% CI)"), "{md}");
    }
}

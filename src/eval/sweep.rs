//! The token-replacement sweep of METHOD.md §2 (`dlogp intervene`): the base
//! and RL models alone, then `replace` under each criterion at each
//! threshold; accuracy against the share of replaced tokens.

use serde::{Deserialize, Serialize};

use super::bench::NamedConfig;
use super::calibrate::Calibration;
use super::run::{ConfigSummary, EvalSummary};
use crate::analysis::plot::{LinePlot, RefLine, Series, Style};
use crate::analysis::{wilson, Z95};
use crate::decode::{ConfigSpec, DecodeConfig, SpecError};
use crate::sampler::Criterion;

/// One point of the sweep.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Point {
    pub criterion: Criterion,
    pub tau: f64,
    /// The replacement ratio τ was calibrated for, if it was.
    pub target_ratio: Option<f64>,
    pub replacement_ratio: f64,
    pub avg_at_k: f64,
    pub pass_at_k: f64,
    pub config: String,
}

/// The configurations of a sweep: `base` and `rl`, then one `replace`
/// configuration per distinct (criterion, τ).
#[derive(Debug, Clone)]
pub struct SweepPlan {
    pub configs: Vec<NamedConfig>,
    /// (criterion, τ, target ratio) of each configuration after the two references.
    points: Vec<(Criterion, f64, Option<f64>)>,
}

impl SweepPlan {
    /// The plan for thresholds `taus` per criterion, resolved against
    /// `defaults`; `targets` are the ratios the thresholds were calibrated
    /// for (the i-th τ of a criterion for the i-th ratio), if they were.
    pub fn new(
        taus: &[(Criterion, Vec<f64>)],
        targets: Option<&[f64]>,
        defaults: &DecodeConfig,
    ) -> Result<SweepPlan, SpecError> {
        let mut configs: Vec<NamedConfig> = Vec::new();
        for name in ["base", "rl"] {
            let spec: ConfigSpec = name.parse()?;
            configs.push(NamedConfig {
                name: name.to_string(),
                cfg: spec.resolve(defaults)?,
            });
        }
        let mut points = Vec::new();
        for (c, list) in taus {
            let single = matches!(c, Criterion::Never | Criterion::Always);
            for (i, &tau) in list.iter().enumerate() {
                let name = if single {
                    format!("replace:criterion={c}")
                } else {
                    format!("replace:criterion={c}:tau={tau}")
                };
                if configs.iter().any(|x| x.name == name) {
                    continue;
                }
                let spec: ConfigSpec = name.parse()?;
                configs.push(NamedConfig {
                    cfg: spec.resolve(defaults)?,
                    name,
                });
                let target = targets.filter(|_| !single).and_then(|t| t.get(i).copied());
                points.push((*c, tau, target));
            }
        }
        Ok(SweepPlan { configs, points })
    }

    /// The sweep's results from the summary of [`SweepPlan::configs`].
    pub fn finish(&self, summary: &EvalSummary, calibration: Option<Calibration>) -> Sweep {
        let points = summary.configs[2..]
            .iter()
            .zip(&self.points)
            .map(|(s, &(criterion, tau, target_ratio))| Point {
                criterion,
                tau,
                target_ratio,
                replacement_ratio: s.replacement_ratio,
                avg_at_k: s.avg_at_k,
                pass_at_k: s.pass_at_k,
                config: s.name.clone(),
            })
            .collect();
        Sweep {
            k: summary.k,
            n_problems: summary.n_problems,
            seed: summary.seed,
            base: summary.configs[0].clone(),
            rl: summary.configs[1].clone(),
            points,
            calibration,
        }
    }
}

/// A finished sweep: the JSON `dlogp intervene --json` writes (and
/// `examples/plot_sweep.rs` reads back to redraw the plot).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Sweep {
    pub k: usize,
    pub n_problems: usize,
    pub seed: u64,
    pub base: ConfigSummary,
    pub rl: ConfigSummary,
    pub points: Vec<Point>,
    pub calibration: Option<Calibration>,
}

impl Sweep {
    /// One line per reference and point:
    /// `criterion,tau,replacement_ratio,avg_at_k,pass_at_k,target_ratio`.
    pub fn csv(&self) -> String {
        let mut s = "criterion,tau,replacement_ratio,avg_at_k,pass_at_k,target_ratio\n".to_string();
        for (name, c) in [("base", &self.base), ("rl", &self.rl)] {
            s += &format!(
                "{name},,{},{},{},\n",
                c.replacement_ratio, c.avg_at_k, c.pass_at_k
            );
        }
        for p in &self.points {
            let target = p.target_ratio.map(|t| t.to_string()).unwrap_or_default();
            s += &format!(
                "{},{},{},{},{},{target}\n",
                p.criterion, p.tau, p.replacement_ratio, p.avg_at_k, p.pass_at_k
            );
        }
        s
    }

    /// The sweep as a Markdown table (percentages).
    pub fn markdown_table(&self) -> String {
        let k = self.k;
        let mut s = format!(
            "| criterion | τ | target | replaced | Avg@{k} | Pass@{k} |\n|---|---:|---:|---:|---:|---:|\n"
        );
        for (name, c) in [("base", &self.base), ("rl", &self.rl)] {
            s += &format!(
                "| {name} | | | {:.2}% | {:.2} | {:.2} |\n",
                100.0 * c.replacement_ratio,
                100.0 * c.avg_at_k,
                100.0 * c.pass_at_k
            );
        }
        for p in &self.points {
            let target = p
                .target_ratio
                .map(|t| format!("{:.1}%", 100.0 * t))
                .unwrap_or_default();
            s += &format!(
                "| {} | {} | {target} | {:.2}% | {:.2} | {:.2} |\n",
                p.criterion,
                p.tau,
                100.0 * p.replacement_ratio,
                100.0 * p.avg_at_k,
                100.0 * p.pass_at_k
            );
        }
        s
    }

    /// Accuracy against replacement ratio, one line per criterion (every
    /// criterion in the sweep), each point with its Wilson 95 % interval over
    /// the n·k samples; the base and RL models as dashed reference lines.
    pub fn plot(&self) -> LinePlot {
        let samples = (self.n_problems * self.k) as f64;
        let interval = |avg: f64| {
            let (lo, hi) = wilson((avg * samples).round(), samples, Z95);
            (100.0 * lo, 100.0 * hi)
        };
        let mut series: Vec<Series> = Vec::new();
        for p in &self.points {
            let name = p.criterion.to_string();
            let xy = (100.0 * p.replacement_ratio, 100.0 * p.avg_at_k);
            let err = interval(p.avg_at_k);
            match series.iter_mut().find(|s| s.name == name) {
                Some(s) => {
                    s.points.push(xy);
                    s.errors.push(err);
                }
                None => series.push(Series {
                    name,
                    points: vec![xy],
                    style: Style::Markers,
                    errors: vec![err],
                }),
            }
        }
        for s in &mut series {
            let mut both: Vec<((f64, f64), (f64, f64))> = s
                .points
                .iter()
                .copied()
                .zip(s.errors.iter().copied())
                .collect();
            both.sort_by(|a, b| a.0 .0.total_cmp(&b.0 .0));
            (s.points, s.errors) = both.into_iter().unzip();
        }
        let k = self.k;
        LinePlot {
            title: format!(
                "Token replacement: Avg@{k} against replaced tokens (n = {} problems, k = {k})",
                self.n_problems
            ),
            x_label: "replaced tokens (%)".to_string(),
            y_label: format!("Avg@{k} (%)"),
            series,
            references: vec![
                RefLine {
                    name: format!("base alone ({:.2})", 100.0 * self.base.avg_at_k),
                    y: 100.0 * self.base.avg_at_k,
                },
                RefLine {
                    name: format!("RL alone ({:.2})", 100.0 * self.rl.avg_at_k),
                    y: 100.0 * self.rl.avg_at_k,
                },
            ],
            caption: format!(
                "n = {} problems × k = {k} samples = {} samples per point, seed {}; error bars: \
                 Wilson 95 % intervals over the {} samples (samples of one problem are correlated, \
                 so these understate the uncertainty).",
                self.n_problems, samples, self.seed, samples
            ),
            ..LinePlot::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::{Mode, Proposer};
    use crate::sampler::{Gate, SamplingParams};

    fn defaults() -> DecodeConfig {
        DecodeConfig::new(
            Mode::Replace,
            Proposer::Base,
            Gate::new(Criterion::Dlogp, -0.3).unwrap(),
            0.1,
            SamplingParams::default(),
            0,
        )
        .unwrap()
    }

    fn summary(name: &str, ratio: f64, avg: f64) -> ConfigSummary {
        ConfigSummary {
            name: name.to_string(),
            mode: Mode::Replace,
            criterion: "dlogp".to_string(),
            tau: 0.0,
            gamma: 0.0,
            proposer: "base".to_string(),
            n_samples: 4,
            avg_at_k: avg,
            pass_at_k: avg,
            replacement_ratio: ratio,
            mean_tokens: 10.0,
            tokens_per_s: None,
            truncated: 0.0,
        }
    }

    #[test]
    fn a_plan_names_each_point_once_and_keeps_its_target() {
        let taus = [
            (Criterion::Dlogp, vec![-1.0, -1.0, -0.5]),
            (Criterion::Never, vec![0.0]),
        ];
        let plan = SweepPlan::new(&taus, Some(&[0.1, 0.2, 0.3]), &defaults()).unwrap();
        let names: Vec<&str> = plan.configs.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "base",
                "rl",
                "replace:criterion=dlogp:tau=-1",
                "replace:criterion=dlogp:tau=-0.5",
                "replace:criterion=never"
            ]
        );
        let needs_rl: Vec<bool> = plan.configs.iter().map(|c| c.cfg.needs_rl()).collect();
        assert_eq!(needs_rl, [false, true, true, true, true]);
        let configs = vec![
            summary("base", 0.0, 0.25),
            summary("rl", 1.0, 0.5),
            summary("replace:criterion=dlogp:tau=-1", 0.05, 0.375),
            summary("replace:criterion=dlogp:tau=-0.5", 0.125, 0.5),
            summary("replace:criterion=never", 0.0, 0.25),
        ];
        let sweep = plan.finish(
            &EvalSummary {
                k: 2,
                n_problems: 2,
                seed: 0,
                configs,
            },
            None,
        );
        // the duplicate τ keeps the target of its first occurrence; never has none
        let targets: Vec<Option<f64>> = sweep.points.iter().map(|p| p.target_ratio).collect();
        assert_eq!(targets, [Some(0.1), Some(0.3), None]);
        assert_eq!(
            sweep.csv(),
            "criterion,tau,replacement_ratio,avg_at_k,pass_at_k,target_ratio\n\
             base,,0,0.25,0.25,\nrl,,1,0.5,0.5,\n\
             dlogp,-1,0.05,0.375,0.375,0.1\ndlogp,-0.5,0.125,0.5,0.5,0.3\nnever,0,0,0.25,0.25,\n"
        );
        let table = sweep.markdown_table();
        assert!(table.starts_with("| criterion | τ | target | replaced | Avg@2 | Pass@2 |\n|---|"));
        assert!(
            table.contains("\n| rl | | | 100.00% | 50.00 | 50.00 |\n"),
            "{table}"
        );
        assert!(
            table.ends_with("\n| never | 0 |  | 0.00% | 25.00 | 25.00 |\n"),
            "{table}"
        );
        let plot = sweep.plot();
        assert_eq!(plot.series.len(), 2);
        assert_eq!(plot.series[0].points, vec![(5.0, 37.5), (12.5, 50.0)]);
        assert_eq!(plot.references[1].y, 50.0);
        // Wilson 95 % over n·k = 4 samples: 37.5 % is 1.5 → 2 of 4
        let (lo, hi) = wilson(2.0, 4.0, Z95);
        assert_eq!(plot.series[0].errors[0], (100.0 * lo, 100.0 * hi));
        assert!(
            plot.title.contains("n = 2 problems, k = 2"),
            "{}",
            plot.title
        );
        // by τ: no targets
        let plan = SweepPlan::new(&taus, None, &defaults()).unwrap();
        assert!(plan.points.iter().all(|p| p.2.is_none()));
    }
}

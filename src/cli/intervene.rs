//! `dlogp intervene`: the token-replacement sweep of METHOD.md §2. The base
//! model generates and the RL model re-samples a token wherever a criterion
//! fires; sweeping each criterion's threshold traces accuracy against the
//! share of replaced tokens (the paper's Fig. 1c), beside the base and RL
//! models alone.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use serde::Serialize;

use super::args::{ModelArgs, PairArgs};
use super::eval::{
    check_outputs, discard_journal, journal_for, write_rows, Bench, DataArgs, NamedConfig,
    SamplingArgs,
};
use crate::analysis::plot::{check_plot_path, LinePlot, RefLine, Series};
use crate::decode::{ConfigSpec, Mode};
use crate::eval::ConfigSummary;
use crate::io::{write_atomic, Output};
use crate::sampler::{Criterion, TokenMetrics};

#[derive(Debug, Args)]
pub struct InterveneArgs {
    #[command(flatten)]
    pub pair: PairArgs,
    #[command(flatten)]
    pub data: DataArgs,
    /// Criteria to sweep: dlogp, kl, kl-r, js, entropy, entropy-rl, random
    /// (never and always are single points).
    #[arg(long, value_delimiter = ',', default_value = "dlogp,kl,entropy,random")]
    pub criteria: Vec<Criterion>,
    /// Thresholds τ: `-0.5,-1,-2` for every criterion, or `kl:0.1,0.5`
    /// for one (repeat the flag per criterion).
    #[arg(long, allow_hyphen_values = true, conflicts_with = "ratios")]
    pub taus: Vec<String>,
    /// Target replacement ratios; each criterion's τ is calibrated to them on
    /// the base model's own samples of the first --calibrate problems.
    #[arg(long, value_delimiter = ',', default_value = "0.01,0.02,0.05,0.1,0.2")]
    pub ratios: Vec<f64>,
    /// Problems whose base samples calibrate τ for --ratios.
    #[arg(long, default_value_t = 4)]
    pub calibrate: usize,
    /// Samples per problem.
    #[arg(long, short = 'k', default_value_t = 4)]
    pub k: usize,
    /// One row per sweep point: criterion,tau,replacement_ratio,avg_at_k,pass_at_k,target_ratio.
    #[arg(long, value_name = "CSV")]
    pub csv: Option<PathBuf>,
    /// Everything as JSON: references, points, calibration.
    #[arg(long, value_name = "JSON")]
    pub json: Option<PathBuf>,
    /// Accuracy against replacement ratio, one line per criterion (.svg or .png).
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    /// Per-sample JSONL rows (as `dlogp eval`); progress goes to
    /// OUTPUT.partial, from which an interrupted sweep resumes.
    #[arg(long, short = 'o', value_name = "JSONL")]
    pub output: Option<PathBuf>,
    /// Discard OUTPUT.partial instead of resuming it.
    #[arg(long)]
    pub restart: bool,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    /// No progress bar or table.
    #[arg(long, short = 'q')]
    pub quiet: bool,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// One point of the sweep.
#[derive(Debug, Clone, Serialize)]
struct Point {
    criterion: Criterion,
    tau: f64,
    target_ratio: Option<f64>,
    replacement_ratio: f64,
    avg_at_k: f64,
    pass_at_k: f64,
    config: String,
}

#[derive(Debug, Serialize)]
struct Calibration {
    n_problems: usize,
    n_tokens: usize,
    /// Per criterion, the τ for each target ratio.
    taus: Vec<(Criterion, Vec<f64>)>,
}

#[derive(Debug, Serialize)]
struct Report<'a> {
    k: usize,
    n_problems: usize,
    seed: u64,
    base: &'a ConfigSummary,
    rl: &'a ConfigSummary,
    points: &'a [Point],
    calibration: Option<Calibration>,
}

/// The threshold lists per criterion from `--taus`.
fn parse_taus(
    items: &[String],
    criteria: &[Criterion],
) -> anyhow::Result<Vec<(Criterion, Vec<f64>)>> {
    use clap::ValueEnum;
    let mut out: Vec<(Criterion, Vec<f64>)> = criteria.iter().map(|&c| (c, Vec::new())).collect();
    for item in items {
        let (target, list) = match item.split_once(':') {
            Some((c, list)) => {
                let c = Criterion::from_str(c.trim(), true)
                    .map_err(|_| anyhow::anyhow!("--taus {item}: unknown criterion `{c}`"))?;
                if !criteria.contains(&c) {
                    anyhow::bail!("--taus {item}: `{c}` is not in --criteria");
                }
                (Some(c), list)
            }
            None => (None, item.as_str()),
        };
        let values: Vec<f64> = list
            .split(',')
            .map(|v| {
                v.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| anyhow::anyhow!("--taus {item}: `{v}` is not a finite number"))
            })
            .collect::<anyhow::Result<_>>()?;
        for (c, taus) in &mut out {
            if target.is_none_or(|t| t == *c) {
                taus.extend(&values);
            }
        }
    }
    for (c, taus) in &out {
        if taus.is_empty() && !matches!(c, Criterion::Never | Criterion::Always) {
            anyhow::bail!("no --taus for criterion `{c}`\nhint: --taus {c}:V1,V2 or a list for every criterion");
        }
    }
    Ok(out)
}

/// The metric a criterion compares with τ.
fn metric(c: Criterion, m: &TokenMetrics) -> f64 {
    match c {
        Criterion::Dlogp => m.dlogp,
        Criterion::Entropy => m.entropy_base,
        Criterion::EntropyRl => m.entropy_rl,
        Criterion::Kl => m.kl,
        Criterion::KlR => m.kl_r,
        Criterion::Js => m.js,
        Criterion::Random | Criterion::Never | Criterion::Always => 0.0,
    }
}

/// `q`-quantile (0..=1) of sorted values, by linear interpolation.
fn quantile(sorted: &[f64], q: f64) -> f64 {
    let pos = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (lo, hi) = (pos.floor() as usize, pos.ceil() as usize);
    sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo as f64)
}

/// A threshold rounded to 4 significant digits (it becomes part of a name).
fn round_sig(x: f64) -> f64 {
    if x == 0.0 || !x.is_finite() {
        return x;
    }
    let digits = 3 - x.abs().log10().floor() as i32;
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// τ per criterion for each target ratio, from the base model's samples of
/// the first `n` problems scored by both models: the gate fires on a share
/// `r` of those tokens (`dlogp`: Δlog p ≤ τ, the r-quantile; metrics: ≥ τ,
/// the (1 − r)-quantile; `random`: τ = r).
fn calibrate(
    bench: &Bench,
    sampling: &SamplingArgs,
    criteria: &[Criterion],
    ratios: &[f64],
    n: usize,
    quiet: bool,
) -> anyhow::Result<Calibration> {
    let n = n.clamp(1, bench.tasks.len());
    let needs_metrics = criteria
        .iter()
        .any(|c| !matches!(c, Criterion::Random | Criterion::Never | Criterion::Always));
    if !needs_metrics {
        return Ok(Calibration {
            n_problems: 0,
            n_tokens: 0,
            taus: criteria
                .iter()
                .map(|&c| {
                    (
                        c,
                        if c == Criterion::Random {
                            ratios.to_vec()
                        } else {
                            vec![0.0]
                        },
                    )
                })
                .collect(),
        });
    }
    if !quiet {
        eprintln!(
            "calibrating τ on {} base samples of {n} problems",
            n * bench.k
        );
    }
    let metrics: Vec<TokenMetrics> = bench
        .generate_scored(sampling.defaults(Mode::Base)?, n)?
        .into_iter()
        .flat_map(|r| r.metrics)
        .collect();
    if metrics.is_empty() && criteria.iter().any(|&c| c != Criterion::Random) {
        anyhow::bail!("calibration: the base model generated no tokens\nhint: raise --calibrate or --max-tokens, or give --taus");
    }
    let mut taus = Vec::new();
    for &c in criteria {
        let t: Vec<f64> = match c {
            Criterion::Never | Criterion::Always => vec![0.0],
            Criterion::Random => ratios.to_vec(),
            _ => {
                let mut v: Vec<f64> = metrics.iter().map(|m| metric(c, m)).collect();
                v.sort_by(f64::total_cmp);
                ratios
                    .iter()
                    .map(|&r| {
                        let q = if c == Criterion::Dlogp { r } else { 1.0 - r };
                        round_sig(quantile(&v, q))
                    })
                    .collect()
            }
        };
        taus.push((c, t));
    }
    Ok(Calibration {
        n_problems: n,
        n_tokens: metrics.len(),
        taus,
    })
}

pub fn run(args: InterveneArgs) -> anyhow::Result<()> {
    if args.pair.spec().is_none() {
        anyhow::bail!("intervene needs an RL model\nhint: pass --rl FILE or --rl-lora FILE");
    }
    if let Some(p) = &args.plot {
        check_plot_path(p)?;
    }
    if args.criteria.is_empty() {
        anyhow::bail!("--criteria is empty");
    }
    for &r in &args.ratios {
        if !(r > 0.0 && r < 1.0) {
            anyhow::bail!("invalid --ratios value {r}: must be in (0, 1)");
        }
    }
    let journal = journal_for(args.output.as_deref())?;
    let outputs: Vec<&std::path::Path> = [
        args.output.as_deref(),
        args.csv.as_deref(),
        args.json.as_deref(),
        args.plot.as_deref(),
        journal.as_deref(),
    ]
    .into_iter()
    .flatten()
    .collect();
    check_outputs(&outputs, &args.pair.inputs_and(&[&args.data.data]))?;
    let by_tau = !args.taus.is_empty();
    let taus = if by_tau {
        Some(parse_taus(&args.taus, &args.criteria)?)
    } else {
        None
    };
    let bench = Bench::load(&args.pair, &args.data, &args.sampling, &args.model, args.k)?;
    let (taus, calibration) = match taus {
        Some(t) => (t, None),
        None => {
            let c = calibrate(
                &bench,
                &args.sampling,
                &args.criteria,
                &args.ratios,
                args.calibrate,
                args.quiet,
            )?;
            (c.taus.clone(), Some(c))
        }
    };
    let defaults = args.sampling.defaults(Mode::Replace)?;
    let mut configs: Vec<NamedConfig> = Vec::new();
    for name in ["base", "rl"] {
        let spec: ConfigSpec = name.parse()?;
        configs.push(NamedConfig {
            name: name.to_string(),
            cfg: spec.resolve(&defaults)?,
        });
    }
    // (criterion, tau, target ratio) per sweep point, in config order after the two references
    let mut meta = Vec::new();
    for (c, list) in &taus {
        for (i, &tau) in list.iter().enumerate() {
            let name = match c {
                Criterion::Never | Criterion::Always => format!("replace:criterion={c}"),
                _ => format!("replace:criterion={c}:tau={tau}"),
            };
            if configs.iter().any(|x| x.name == name) {
                continue;
            }
            let spec: ConfigSpec = name.parse()?;
            configs.push(NamedConfig {
                cfg: spec.resolve(&defaults)?,
                name,
            });
            let target = (!by_tau && !matches!(c, Criterion::Never | Criterion::Always))
                .then(|| args.ratios[i]);
            meta.push((*c, tau, target));
        }
    }
    let (rows, stats) = bench.run(&configs, journal.as_deref(), args.restart, args.quiet)?;
    let summary = bench.summary(&configs, &rows, &stats)?;
    let points: Vec<Point> = summary.configs[2..]
        .iter()
        .zip(&meta)
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
    let (base, rl) = (&summary.configs[0], &summary.configs[1]);

    if let Some(path) = &args.output {
        write_rows(path, &bench.ordered(&configs, &rows))?;
    }
    if let Some(path) = &args.csv {
        let mut out = Output::create(path)
            .with_context(|| format!("{}: could not create", path.display()))?;
        writeln!(
            out,
            "criterion,tau,replacement_ratio,avg_at_k,pass_at_k,target_ratio"
        )?;
        for (name, s) in [("base", base), ("rl", rl)] {
            writeln!(
                out,
                "{name},,{},{},{},",
                s.replacement_ratio, s.avg_at_k, s.pass_at_k
            )?;
        }
        for p in &points {
            let target = p.target_ratio.map(|t| t.to_string()).unwrap_or_default();
            writeln!(
                out,
                "{},{},{},{},{},{target}",
                p.criterion, p.tau, p.replacement_ratio, p.avg_at_k, p.pass_at_k
            )?;
        }
        out.commit()
            .with_context(|| format!("{}: could not write", path.display()))?;
    }
    if let Some(path) = &args.plot {
        plot(&points, base, rl, summary.k).save(path)?;
    }
    if let Some(path) = &args.json {
        let report = Report {
            k: summary.k,
            n_problems: summary.n_problems,
            seed: summary.seed,
            base,
            rl,
            points: &points,
            calibration,
        };
        let text = serde_json::to_string_pretty(&report)? + "\n";
        write_atomic(path, text.as_bytes())
            .with_context(|| format!("{}: could not write", path.display()))?;
    }
    discard_journal(journal.as_deref())?;
    let k = summary.k;
    println!("| criterion | τ | target | replaced | Avg@{k} | Pass@{k} |\n|---|---:|---:|---:|---:|---:|");
    for (name, s) in [("base", base), ("rl", rl)] {
        println!(
            "| {name} | | | {:.2}% | {:.2} | {:.2} |",
            100.0 * s.replacement_ratio,
            100.0 * s.avg_at_k,
            100.0 * s.pass_at_k
        );
    }
    for p in &points {
        let target = p
            .target_ratio
            .map(|t| format!("{:.1}%", 100.0 * t))
            .unwrap_or_default();
        println!(
            "| {} | {} | {target} | {:.2}% | {:.2} | {:.2} |",
            p.criterion,
            p.tau,
            100.0 * p.replacement_ratio,
            100.0 * p.avg_at_k,
            100.0 * p.pass_at_k
        );
    }
    Ok(())
}

/// Accuracy against replacement ratio, one line per criterion.
fn plot(points: &[Point], base: &ConfigSummary, rl: &ConfigSummary, k: usize) -> LinePlot {
    let mut series: Vec<Series> = Vec::new();
    for p in points {
        let name = p.criterion.to_string();
        let xy = (100.0 * p.replacement_ratio, 100.0 * p.avg_at_k);
        match series.iter_mut().find(|s| s.name == name) {
            Some(s) => s.points.push(xy),
            None => series.push(Series {
                name,
                points: vec![xy],
                markers: true,
            }),
        }
    }
    for s in &mut series {
        s.points.sort_by(|a, b| a.0.total_cmp(&b.0));
    }
    LinePlot {
        title: "Token replacement: accuracy against replaced tokens".to_string(),
        x_label: "replaced tokens (%)".to_string(),
        y_label: format!("Avg@{k} (%)"),
        series,
        references: vec![
            RefLine {
                name: "base".to_string(),
                y: 100.0 * base.avg_at_k,
            },
            RefLine {
                name: "RL".to_string(),
                y: 100.0 * rl.avg_at_k,
            },
        ],
        log_y: false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taus_apply_to_all_or_one_criterion() {
        let c = [Criterion::Dlogp, Criterion::Kl];
        let t = parse_taus(&["-1,-2".into(), "kl:0.5".into()], &c).unwrap();
        assert_eq!(
            t,
            vec![
                (Criterion::Dlogp, vec![-1.0, -2.0]),
                (Criterion::Kl, vec![-1.0, -2.0, 0.5])
            ]
        );
        let e = parse_taus(&["kl:0.5".into()], &c).unwrap_err().to_string();
        assert!(e.contains("no --taus for criterion `dlogp`"), "{e}");
        assert!(parse_taus(&["js:1".into()], &c)
            .unwrap_err()
            .to_string()
            .contains("not in --criteria"));
        assert!(parse_taus(&["x".into()], &c)
            .unwrap_err()
            .to_string()
            .contains("`x` is not a finite number"));
        // never/always need no threshold
        assert!(parse_taus(&[], &[Criterion::Never, Criterion::Always]).is_ok());
    }

    #[test]
    fn quantiles_and_rounding() {
        let v = [0.0, 1.0, 2.0, 3.0, 4.0];
        assert_eq!(quantile(&v, 0.0), 0.0);
        assert_eq!(quantile(&v, 0.5), 2.0);
        assert_eq!(quantile(&v, 0.625), 2.5);
        assert_eq!(quantile(&v, 1.0), 4.0);
        assert_eq!(round_sig(-0.0123456), -0.01235);
        assert_eq!(round_sig(1234.5678), 1235.0);
        assert_eq!(round_sig(0.0), 0.0);
    }
}

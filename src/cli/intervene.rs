//! `dlogp intervene`: the token-replacement sweep of METHOD.md §2. The base
//! model generates and the RL model re-samples a token wherever a criterion
//! fires; sweeping each criterion's threshold traces accuracy against the
//! share of replaced tokens (the paper's Fig. 1c), beside the base and RL
//! models alone.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;

use super::args::{ModelArgs, PairArgs};
use super::eval::{progress, BenchCommand, BenchFlags, DataArgs, RowsArgs, SamplingArgs};
use crate::analysis::plot::check_plot_path;
use crate::decode::Mode;
use crate::eval::SweepPlan;
use crate::io::{is_std_stream, write_atomic, Output};
use crate::sampler::Criterion;

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
    /// One row per sweep point: criterion,tau,replacement_ratio,avg_at_k,pass_at_k,target_ratio
    /// (`-` for stdout).
    #[arg(long, value_name = "CSV")]
    pub csv: Option<PathBuf>,
    /// Everything as JSON: references, points, calibration (`-` for stdout).
    #[arg(long, value_name = "JSON")]
    pub json: Option<PathBuf>,
    /// Accuracy against replacement ratio, one line per criterion (.svg or
    /// .png; `-`: SVG on stdout).
    #[arg(long, value_name = "FILE")]
    pub plot: Option<PathBuf>,
    #[command(flatten)]
    pub rows: RowsArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub model: ModelArgs,
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

pub fn run(args: InterveneArgs) -> anyhow::Result<()> {
    if args.pair.spec().is_none() {
        anyhow::bail!("intervene needs an RL model\nhint: pass --rl FILE or --rl-lora FILE");
    }
    if let Some(p) = args.plot.as_deref().filter(|p| !is_std_stream(p)) {
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
    let by_tau = !args.taus.is_empty();
    let taus = if by_tau {
        Some(parse_taus(&args.taus, &args.criteria)?)
    } else {
        None
    };
    let cmd = BenchCommand::open(
        BenchFlags {
            command: "intervene",
            pair: &args.pair,
            data: &args.data,
            sampling: &args.sampling,
            model: &args.model,
            k: args.k,
            rows: &args.rows,
        },
        &[
            ("--csv", args.csv.as_deref()),
            ("--json", args.json.as_deref()),
            ("--plot", args.plot.as_deref()),
        ],
        serde_json::json!({
            "k": args.k,
            "criteria": args.criteria,
            "taus": args.taus,
            "ratios": (!by_tau).then_some(&args.ratios),
            "calibrate": args.calibrate,
        }),
    )?;
    let (taus, calibration) = match taus {
        Some(t) => (t, None),
        None => {
            let c = cmd.bench.calibrate(
                args.sampling.defaults(Mode::Base)?,
                &args.criteria,
                &args.ratios,
                args.calibrate,
                progress(args.rows.quiet),
            )?;
            (c.taus.clone(), Some(c))
        }
    };
    let defaults = args.sampling.defaults(Mode::Replace)?;
    let targets = (!by_tau).then_some(args.ratios.as_slice());
    let plan = SweepPlan::new(&taus, targets, &defaults)?;
    let (rows, stats) = cmd.run(&plan.configs)?;
    let summary = cmd.bench.summary(&plan.configs, &rows, &stats)?;
    let sweep = plan.finish(&summary, calibration);

    if let Some(path) = &args.csv {
        let mut out = Output::create(path)
            .with_context(|| format!("{}: could not create", path.display()))?;
        out.write_all(sweep.csv().as_bytes())?;
        out.commit()
            .with_context(|| format!("{}: could not write", path.display()))?;
    }
    if let Some(path) = &args.plot {
        if is_std_stream(path) {
            write_atomic(path, sweep.plot().to_svg()?.as_bytes())?;
        } else {
            sweep.plot().save(path)?;
        }
    }
    cmd.write_json(args.json.as_deref(), &sweep)?;
    cmd.finish(&plan.configs, &rows, &sweep.markdown_table())?;
    Ok(())
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
}

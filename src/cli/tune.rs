//! `dlogp tune`: a τ × γ grid of selective extrapolation on a validation
//! split, every cell with a confidence interval over problems, and a
//! noise-aware choice (see [`crate::eval::tune`]).

use std::path::PathBuf;

use clap::Args;
use serde_json::json;

use super::args::{ModelArgs, PairArgs};
use super::eval::{BenchCommand, BenchFlags, DataArgs, RowsArgs, SamplingArgs};
use crate::eval::problem_counts;
use crate::eval::tune::{
    avg_at_k_interval, corrected_level, paired_difference_interval, select, Cell, IntervalMethod,
    Tuning,
};

#[derive(Debug, Args)]
pub struct TuneArgs {
    #[command(flatten)]
    pub pair: PairArgs,
    /// The validation split (and how its prompts are built and graded).
    #[command(flatten)]
    pub data: DataArgs,
    /// Gate thresholds τ of the grid (comma-separated).
    #[arg(
        long,
        value_delimiter = ',',
        allow_hyphen_values = true,
        default_value = "-0.1,-0.3,-0.5"
    )]
    pub taus: Vec<f64>,
    /// Extrapolation strengths γ of the grid (comma-separated; 0 is selective replace).
    #[arg(long, value_delimiter = ',', default_value = "0,0.1,0.2")]
    pub gammas: Vec<f64>,
    /// Samples per problem.
    #[arg(long, short = 'k', default_value_t = 4)]
    pub k: usize,
    /// How the intervals are computed (both treat the problem as the unit).
    #[arg(long, value_enum, default_value_t = IntervalMethod::Bootstrap)]
    pub interval: IntervalMethod,
    /// Confidence level of the intervals.
    #[arg(long, default_value_t = 0.95)]
    pub level: f64,
    /// The grid as JSON {"k", "n_problems", "rl", "cells", "selection", ...}; `-` for stdout.
    #[arg(long, value_name = "JSON")]
    pub json: Option<PathBuf>,
    #[command(flatten)]
    pub rows: RowsArgs,
    #[command(flatten)]
    pub sampling: SamplingArgs,
    #[command(flatten)]
    pub model: ModelArgs,
}

/// `extrapolate:tau=T:gamma=G` for every cell, τ-major.
fn grid(taus: &[f64], gammas: &[f64]) -> anyhow::Result<Vec<(f64, f64, String)>> {
    if taus.is_empty() || gammas.is_empty() {
        anyhow::bail!("the grid is empty\nhint: pass --taus and --gammas, e.g. --taus -0.1,-0.3 --gammas 0,0.1");
    }
    let mut cells = Vec::new();
    for &t in taus {
        for &g in gammas {
            let name = format!("extrapolate:tau={t}:gamma={g}");
            if !cells.iter().any(|(_, _, n)| *n == name) {
                cells.push((t, g, name));
            }
        }
    }
    Ok(cells)
}

pub fn run(args: TuneArgs) -> anyhow::Result<()> {
    if !(args.level > 0.0 && args.level < 1.0) {
        anyhow::bail!("invalid --level {}: must be between 0 and 1", args.level);
    }
    if args.pair.spec().is_none() {
        anyhow::bail!("tuning needs an RL model\nhint: pass --rl FILE or --lora FILE");
    }
    let cells = grid(&args.taus, &args.gammas)?;
    let cmd = BenchCommand::open(
        BenchFlags {
            command: "tune",
            pair: &args.pair,
            data: &args.data,
            sampling: &args.sampling,
            model: &args.model,
            k: args.k,
            rows: &args.rows,
        },
        &[("--json", args.json.as_deref())],
        json!({"k": args.k, "taus": args.taus, "gammas": args.gammas,
               "interval": args.interval, "level": args.level}),
    )?;
    let list: Vec<&str> = std::iter::once("rl")
        .chain(cells.iter().map(|(_, _, n)| n.as_str()))
        .collect();
    let configs = cmd.bench.configs(&list.join(","))?;
    let (rows, stats) = cmd.run(&configs)?;
    let summary = cmd.bench.summary(&configs, &rows, &stats)?;
    let seed = args.sampling.seed.value;
    // correct counts per problem, in the dataset's order for every config
    let correct = |name: &str| -> anyhow::Result<Vec<usize>> {
        let counts = problem_counts(name, &cmd.bench.tasks, &rows, args.k)?;
        Ok(counts.iter().map(|&(_, c)| c).collect())
    };
    let rl_correct = correct("rl")?;
    let rl = avg_at_k_interval(&rl_correct, args.k, args.interval, args.level, seed);
    let paired_level = corrected_level(args.level, cells.len());
    let mut out = Vec::with_capacity(cells.len());
    for ((tau, gamma, name), s) in cells.iter().zip(&summary.configs[1..]) {
        let c = correct(name)?;
        out.push(Cell {
            tau: *tau,
            gamma: *gamma,
            config: name.clone(),
            avg_at_k: avg_at_k_interval(&c, args.k, args.interval, args.level, seed),
            vs_rl: paired_difference_interval(
                &c,
                &rl_correct,
                args.k,
                args.interval,
                paired_level,
                seed,
            ),
            replacement_ratio: s.replacement_ratio,
        });
    }
    let selection = select(&out);
    let tuning = Tuning {
        k: args.k,
        n_problems: summary.n_problems,
        seed,
        interval: args.interval,
        level: args.level,
        paired_level,
        rl,
        cells: out,
        selection,
    };
    cmd.write_json(args.json.as_deref(), &tuning)?;
    cmd.finish(&configs, &rows, &tuning.markdown())?;
    if let Some(sel) = selection {
        let c = &tuning.cells[sel.index];
        if sel.beats_reference {
            tracing::info!(
                "chosen: τ {} γ {} ({}): {:+.2} points over rl, paired {:.1}% lower bound {:+.2} > 0",
                c.tau,
                c.gamma,
                c.config,
                100.0 * c.vs_rl.estimate,
                100.0 * tuning.paired_level,
                100.0 * c.vs_rl.lo
            );
        } else {
            tracing::warn!(
                "no cell beats rl on {} problems (no paired {:.1}% lower bound above 0): τ {} γ {} is only the best point estimate ({:.2}%, {:+.2} points, lower bound {:+.2}); use more problems or samples to tell them apart",
                tuning.n_problems,
                100.0 * tuning.paired_level,
                c.tau,
                c.gamma,
                100.0 * c.avg_at_k.estimate,
                100.0 * c.vs_rl.estimate,
                100.0 * c.vs_rl.lo
            );
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_grid_is_tau_major_without_duplicates() {
        let g = super::grid(&[-0.1, -0.3, -0.1], &[0.0, 0.2]).unwrap();
        let names: Vec<&str> = g.iter().map(|c| c.2.as_str()).collect();
        assert_eq!(
            names,
            [
                "extrapolate:tau=-0.1:gamma=0",
                "extrapolate:tau=-0.1:gamma=0.2",
                "extrapolate:tau=-0.3:gamma=0",
                "extrapolate:tau=-0.3:gamma=0.2"
            ]
        );
        assert!(super::grid(&[], &[0.1]).is_err());
    }
}

//! `dlogp tasks`: generate verifiable task sets.

use std::io::Write;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Subcommand};

use crate::eval::tasks::{arith, LEVELS};
use crate::io::Output;

#[derive(Debug, Args)]
pub struct TasksArgs {
    #[command(subcommand)]
    pub kind: TaskKind,
}

#[derive(Debug, Subcommand)]
pub enum TaskKind {
    /// Seeded arithmetic problems of graded difficulty, as JSONL rows
    /// {"id", "question", "answer"}.
    Arith {
        /// Number of problems.
        #[arg(long, short = 'n', default_value_t = 100)]
        n: usize,
        /// Seed of the problems: the same seed, the same problems.
        #[arg(long, default_value_t = 0)]
        seed: u64,
        /// Difficulty 1 (single-digit sums and differences) to 5 (two-step
        /// word problems); default: all levels mixed evenly.
        #[arg(long)]
        level: Option<u8>,
        /// Output file; `-` for stdout.
        #[arg(long, short = 'o', default_value = "-")]
        output: PathBuf,
    },
}

pub fn run(args: TasksArgs) -> anyhow::Result<()> {
    match args.kind {
        TaskKind::Arith {
            n,
            seed,
            level,
            output,
        } => {
            if let Some(l) = level {
                if !LEVELS.contains(&l) {
                    anyhow::bail!(
                        "invalid --level {l}: must be between {} and {}",
                        LEVELS.start(),
                        LEVELS.end()
                    );
                }
            }
            let mut out = Output::create(&output)
                .with_context(|| format!("{}: could not create", output.display()))?;
            for task in arith(n, seed, level) {
                writeln!(out, "{}", serde_json::to_string(&task)?)?;
            }
            out.commit()
                .with_context(|| format!("{}: could not write", output.display()))?;
            Ok(())
        }
    }
}

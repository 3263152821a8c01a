//! Avg@k with intervals over problems, and paired differences against the
//! adapter, from the per-sample rows of `dlogp eval --output` (one or more
//! files; a file's split is its name up to the first `-`):
//!
//! ```sh
//! cargo run --release --example paired_intervals -- out/evidence/test-*.jsonl out/evidence/test2-*.jsonl
//! ```
//!
//! For each split and configuration: Avg@k with its 95 % percentile
//! bootstrap interval over problems, and the paired difference to the
//! split's `rl` rows (the per-problem accuracy differences resampled
//! together, so the problems' shared difficulty cancels), computed by the
//! same functions as `dlogp tune` (`eval::tune::avg_at_k_interval`,
//! `paired_difference_interval`). Every problem of a configuration must have
//! the same number of samples. Prints one markdown table.

#![allow(clippy::print_stdout)] // the table is the output

use std::collections::BTreeMap;
use std::io::BufRead;

use dlogp::eval::tune::{avg_at_k_interval, paired_difference_interval, Interval, IntervalMethod};
use dlogp::eval::SampleRow;

/// Per problem id: (correct, samples, replacement-ratio sum).
type Counts = BTreeMap<String, (usize, usize, f64)>;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files: Vec<String> = std::env::args().skip(1).collect();
    if files.is_empty() {
        return Err("usage: paired_intervals ROWS.jsonl...".into());
    }
    // split -> config -> counts
    let mut table: BTreeMap<String, BTreeMap<String, Counts>> = BTreeMap::new();
    for file in &files {
        let name = std::path::Path::new(file)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(file);
        let split = name.split('-').next().unwrap_or(name).to_string();
        let reader =
            std::io::BufReader::new(std::fs::File::open(file).map_err(|e| format!("{file}: {e}"))?);
        for (i, line) in reader.lines().enumerate() {
            let line = line.map_err(|e| format!("{file}: {e}"))?;
            if line.starts_with("{\"dlogp_eval_journal\"") {
                continue; // the journal's settings header
            }
            let row: SampleRow =
                serde_json::from_str(&line).map_err(|e| format!("{file}:{}: {e}", i + 1))?;
            let c = table
                .entry(split.clone())
                .or_default()
                .entry(row.config)
                .or_default()
                .entry(row.id)
                .or_default();
            c.0 += usize::from(row.correct);
            c.1 += 1;
            c.2 += row.replacement_ratio;
        }
    }
    let pct = |i: Interval| {
        format!(
            "{:.2} [{:.2}, {:.2}]",
            100.0 * i.estimate,
            100.0 * i.lo,
            100.0 * i.hi
        )
    };
    let signed = |i: Interval| {
        format!(
            "{:+.2} [{:+.2}, {:+.2}]",
            100.0 * i.estimate,
            100.0 * i.lo,
            100.0 * i.hi
        )
    };
    println!(
        "| split | config | problems | k | Avg@k [95 % CI] | − rl, paired [95 % CI] | replaced |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    let method = IntervalMethod::Bootstrap;
    for (split, configs) in &table {
        let rl = configs.get("rl");
        for (config, counts) in configs {
            let k = even_k(counts).ok_or_else(|| {
                format!("{split}/{config}: problems have different sample counts; finish the run (or resume it) first")
            })?;
            let correct: Vec<usize> = counts.values().map(|c| c.0).collect();
            let samples = k * counts.len();
            let replaced: f64 = counts.values().map(|c| c.2).sum::<f64>() / samples as f64;
            let own = avg_at_k_interval(&correct, k, method, 0.95, 0);
            let paired = match rl {
                Some(rl) if config != "rl" => {
                    // rl's counts on the same problems, in the same order
                    let reference: Option<Vec<usize>> =
                        counts.keys().map(|id| rl.get(id).map(|r| r.0)).collect();
                    match reference {
                        Some(r) if rl.len() == counts.len() && even_k(rl) == Some(k) => {
                            signed(paired_difference_interval(&correct, &r, k, method, 0.95, 0))
                        }
                        _ => "(problems or k differ from rl's)".to_string(),
                    }
                }
                _ => String::new(),
            };
            println!(
                "| {split} | {config} | {} | {k} | {} | {paired} | {:.2}% |",
                counts.len(),
                pct(own),
                100.0 * replaced
            );
        }
    }
    Ok(())
}

/// The samples per problem when every problem has the same number.
fn even_k(counts: &Counts) -> Option<usize> {
    let mut ks = counts.values().map(|c| c.1);
    let k = ks.next()?;
    ks.all(|n| n == k).then_some(k)
}

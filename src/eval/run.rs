//! Running a verifiable dataset under decoding configurations: k samples per
//! problem, each graded, then Avg@k / Pass@k, the replacement ratio, length
//! and speed per configuration.
//!
//! A sample's random draws are keyed by `(seed, problem index × k + sample,
//! position)`, so a sample is the same tokens whether it was decoded alone,
//! beside others, or in a resumed run.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::metrics::{summarize, MetricError};
use super::tasks::Task;
use super::verify::{extract, is_equivalent, Extraction};
use crate::decode::{
    DecodeConfig, DecodeError, Engine, EngineOptions, Finish, Generation, Mode, Request,
};
use crate::runtime::{Model, ModelPair, Token};

/// One graded sample: a row of `dlogp eval --output`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SampleRow {
    pub id: String,
    pub sample: usize,
    /// The configuration's name.
    pub config: String,
    pub response: String,
    /// The answer pulled out of the response, if any.
    pub extracted: Option<String>,
    pub correct: bool,
    /// Share of generated positions where the gate fired.
    pub replacement_ratio: f64,
    pub n_tokens: usize,
    pub finish: Finish,
}

/// Pulls answers out of responses and compares them with references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grader {
    pub methods: Vec<Extraction>,
}

impl Default for Grader {
    /// The last `\boxed{}`, else a GSM8K `####` line; no last-number fallback.
    fn default() -> Self {
        Grader {
            methods: vec![Extraction::Boxed, Extraction::Gsm8k],
        }
    }
}

impl Grader {
    /// `(extracted answer, correct)` for one response.
    pub fn grade(&self, response: &str, reference: &str) -> (Option<String>, bool) {
        let extracted = extract(response, &self.methods);
        let correct = extracted
            .as_deref()
            .is_some_and(|a| is_equivalent(a, reference));
        (extracted, correct)
    }
}

/// One configuration's results over the dataset.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigSummary {
    pub name: String,
    pub mode: Mode,
    pub criterion: String,
    pub tau: f64,
    pub gamma: f64,
    pub proposer: String,
    pub n_samples: usize,
    pub avg_at_k: f64,
    pub pass_at_k: f64,
    /// Mean over samples of the per-sample replacement ratio.
    pub replacement_ratio: f64,
    /// Mean generated tokens per sample.
    pub mean_tokens: f64,
    /// Generated tokens per second in this run (`None` when every sample
    /// came from a resumed journal).
    pub tokens_per_s: Option<f64>,
    /// Share of samples that hit `max_tokens`.
    pub truncated: f64,
}

/// Timing of one configuration's decoding in this run.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct RunStats {
    pub n_samples: usize,
    pub n_tokens: usize,
    pub seconds: f64,
}

impl RunStats {
    pub fn tokens_per_s(&self) -> Option<f64> {
        (self.n_samples > 0 && self.seconds > 0.0).then(|| self.n_tokens as f64 / self.seconds)
    }
}

/// The whole evaluation: the summary JSON of `dlogp eval`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalSummary {
    pub k: usize,
    pub n_problems: usize,
    pub seed: u64,
    pub configs: Vec<ConfigSummary>,
}

/// Why a summary could not be computed.
#[derive(Debug, thiserror::Error)]
pub enum SummaryError {
    #[error("configuration `{config}`: problem `{id}` has {n} samples, expected {k}")]
    Incomplete {
        config: String,
        id: String,
        n: usize,
        k: usize,
    },
    #[error(transparent)]
    Metric(#[from] MetricError),
}

/// Per problem (in `tasks` order), `(samples, correct)` of configuration
/// `name` from its rows (any order; rows of other configurations and
/// problems are ignored). Every problem must have exactly `k` samples.
pub fn problem_counts(
    name: &str,
    tasks: &[Task],
    rows: &[SampleRow],
    k: usize,
) -> Result<Vec<(usize, usize)>, SummaryError> {
    let index: std::collections::HashMap<&str, usize> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| (t.id.as_str(), i))
        .collect();
    let mut counts = vec![(0usize, 0usize); tasks.len()];
    for r in rows.iter().filter(|r| r.config == name) {
        if let Some(&i) = index.get(r.id.as_str()) {
            counts[i].0 += 1;
            counts[i].1 += usize::from(r.correct);
        }
    }
    if let Some((i, &(got, _))) = counts.iter().enumerate().find(|(_, c)| c.0 != k) {
        return Err(SummaryError::Incomplete {
            config: name.to_string(),
            id: tasks[i].id.clone(),
            n: got,
            k,
        });
    }
    Ok(counts)
}

/// Summarises one configuration from its rows (any order; rows of other
/// configurations are ignored). Every problem must have exactly `k` samples.
pub fn summarize_config(
    name: &str,
    cfg: &DecodeConfig,
    tasks: &[Task],
    rows: &[SampleRow],
    k: usize,
    stats: RunStats,
) -> Result<ConfigSummary, SummaryError> {
    let counts = problem_counts(name, tasks, rows, k)?;
    let ids: std::collections::HashSet<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
    let (mut ratio, mut tokens, mut truncated, mut n) = (0.0, 0usize, 0usize, 0usize);
    for r in rows
        .iter()
        .filter(|r| r.config == name && ids.contains(r.id.as_str()))
    {
        ratio += r.replacement_ratio;
        tokens += r.n_tokens;
        truncated += usize::from(r.finish == Finish::Length);
        n += 1;
    }
    let (avg_at_k, pass_at_k) = summarize(&counts, k)?;
    let n_f = n.max(1) as f64;
    Ok(ConfigSummary {
        name: name.to_string(),
        mode: cfg.mode(),
        criterion: cfg.gate().criterion().to_string(),
        tau: cfg.gate().tau(),
        gamma: cfg.gamma(),
        proposer: match cfg.proposer() {
            crate::decode::Proposer::Base => "base".to_string(),
            crate::decode::Proposer::Rl => "rl".to_string(),
        },
        n_samples: n,
        avg_at_k,
        pass_at_k,
        replacement_ratio: ratio / n_f,
        mean_tokens: tokens as f64 / n_f,
        tokens_per_s: stats.tokens_per_s(),
        truncated: truncated as f64 / n_f,
    })
}

/// The summary as a Markdown table (accuracies in percent).
pub fn markdown_table(summary: &EvalSummary) -> String {
    let k = summary.k;
    let mut s = format!(
        "| config | Avg@{k} | Pass@{k} | replaced | mean tokens | truncated | tokens/s |\n\
         |---|---:|---:|---:|---:|---:|---:|\n"
    );
    for c in &summary.configs {
        let speed = c
            .tokens_per_s
            .map_or_else(|| "resumed".to_string(), |v| format!("{v:.1}"));
        s += &format!(
            "| {} | {:.2} | {:.2} | {:.2}% | {:.1} | {:.0}% | {speed} |\n",
            c.name.replace('|', "\\|"),
            100.0 * c.avg_at_k,
            100.0 * c.pass_at_k,
            100.0 * c.replacement_ratio,
            c.mean_tokens,
            100.0 * c.truncated,
        );
    }
    s
}

/// One sample to decode: a problem and a sample number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SampleKey {
    pub problem: usize,
    pub sample: usize,
}

impl SampleKey {
    /// Every sample of the first `n_problems` problems, `k` each, in
    /// problem then sample order.
    pub fn grid(n_problems: usize, k: usize) -> impl Iterator<Item = SampleKey> {
        (0..n_problems)
            .flat_map(move |problem| (0..k).map(move |sample| SampleKey { problem, sample }))
    }
}

/// Decodes samples of a dataset on a model or a pair and grades them.
pub struct Evaluator<'m> {
    pub model: &'m Model,
    pub pair: Option<&'m ModelPair>,
    /// Prompt tokens per problem.
    pub prompts: Vec<Vec<Token>>,
    pub tasks: &'m [Task],
    pub k: usize,
    pub grader: Grader,
    pub options: EngineOptions,
}

impl<'m> Evaluator<'m> {
    /// The engine's requests for `todo`: sample `s` of problem `p` is key
    /// `p·k + s`, so its draws do not depend on what is decoded beside it.
    pub fn requests(&self, todo: &[SampleKey]) -> Vec<Request> {
        todo.iter()
            .map(|s| Request {
                key: (s.problem * self.k + s.sample) as u64,
                prompt: self.prompts[s.problem].clone(),
            })
            .collect()
    }

    /// An engine for `cfg` on the pair (or the model alone), with no more
    /// sequences side by side than `n_requests`.
    pub fn engine(&self, cfg: &DecodeConfig, n_requests: usize) -> Result<Engine<'m>, DecodeError> {
        let mut opts = self.options.clone();
        opts.n_seq = opts.n_seq.min(n_requests as u32).max(1);
        match self.pair {
            Some(p) => Engine::for_pair(p, cfg.clone(), opts),
            None => Engine::for_model(self.model, cfg.clone(), opts),
        }
    }

    /// Decode `todo` under `cfg` (named `name`), calling `on_row` with each
    /// graded sample as it finishes (completion order).
    pub fn run(
        &self,
        name: &str,
        cfg: &DecodeConfig,
        todo: &[SampleKey],
        mut on_row: impl FnMut(SampleRow) -> Result<(), DecodeError>,
    ) -> Result<RunStats, DecodeError> {
        if todo.is_empty() {
            return Ok(RunStats::default());
        }
        let requests = self.requests(todo);
        let mut engine = self.engine(cfg, requests.len())?;
        let start = Instant::now();
        let mut n_tokens = 0;
        engine.run(
            &requests,
            |_, _| {},
            |g: Generation| {
                let key = todo[g.request];
                let task = &self.tasks[key.problem];
                let (extracted, correct) = self.grader.grade(&g.text, &task.answer);
                n_tokens += g.tokens.len();
                on_row(SampleRow {
                    id: task.id.clone(),
                    sample: key.sample,
                    config: name.to_string(),
                    replacement_ratio: g.replacement_ratio(),
                    n_tokens: g.tokens.len(),
                    finish: g.finish,
                    response: g.text,
                    extracted,
                    correct,
                })
            },
        )?;
        Ok(RunStats {
            n_samples: todo.len(),
            n_tokens,
            seconds: start.elapsed().as_secs_f64(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decode::Proposer;
    use crate::sampler::{Criterion, Gate, SamplingParams};

    fn task(id: &str, answer: &str) -> Task {
        Task {
            id: id.to_string(),
            question: format!("q{id}"),
            answer: answer.to_string(),
        }
    }

    fn row(
        id: &str,
        sample: usize,
        config: &str,
        correct: bool,
        ratio: f64,
        n: usize,
    ) -> SampleRow {
        SampleRow {
            id: id.to_string(),
            sample,
            config: config.to_string(),
            response: String::new(),
            extracted: None,
            correct,
            replacement_ratio: ratio,
            n_tokens: n,
            finish: if n >= 10 { Finish::Length } else { Finish::Eog },
        }
    }

    fn cfg() -> DecodeConfig {
        DecodeConfig::new(
            Mode::Replace,
            Proposer::Base,
            Gate::new(Criterion::Kl, 0.5).unwrap(),
            0.0,
            SamplingParams::default(),
            3,
        )
        .unwrap()
    }

    #[test]
    fn grading_uses_the_last_box_and_equivalence() {
        let g = Grader::default();
        assert_eq!(
            g.grade("so \\boxed{3} no, \\boxed{1,000}", "1000"),
            (Some("1,000".to_string()), true)
        );
        assert_eq!(g.grade("#### 12", "12.0"), (Some("12".to_string()), true));
        assert_eq!(g.grade("the answer is 12", "12"), (None, false));
        let lenient = Grader {
            methods: vec![Extraction::Boxed, Extraction::LastNumber],
        };
        assert!(lenient.grade("the answer is 12.", "12").1);
    }

    #[test]
    fn summary_matches_a_hand_computation() {
        let tasks = [task("a", "1"), task("b", "2")];
        // a: 1 of 2 correct, b: 0 of 2; another config's rows are ignored.
        let rows = [
            row("a", 0, "x", true, 0.1, 4),
            row("a", 1, "x", false, 0.3, 10),
            row("b", 0, "x", false, 0.0, 6),
            row("b", 1, "x", false, 0.2, 8),
            row("b", 1, "y", true, 0.9, 1),
        ];
        let stats = RunStats {
            n_samples: 4,
            n_tokens: 28,
            seconds: 2.0,
        };
        let s = summarize_config("x", &cfg(), &tasks, &rows, 2, stats).unwrap();
        assert_eq!(s.n_samples, 4);
        assert!((s.avg_at_k - 0.25).abs() < 1e-15);
        // pass@2 with n = 2: a has a correct sample, b none.
        assert!((s.pass_at_k - 0.5).abs() < 1e-15);
        assert!((s.replacement_ratio - 0.15).abs() < 1e-15);
        assert!((s.mean_tokens - 7.0).abs() < 1e-15);
        assert_eq!(s.tokens_per_s, Some(14.0));
        assert_eq!(s.truncated, 0.25);
        assert_eq!(s.criterion, "kl");
        assert_eq!(s.tau, 0.5);
        // a missing sample is an error naming the problem
        let e = summarize_config("x", &cfg(), &tasks, &rows[..3], 2, stats).unwrap_err();
        assert!(e.to_string().contains("problem `b` has 1 samples"), "{e}");
        let table = markdown_table(&EvalSummary {
            k: 2,
            n_problems: 2,
            seed: 3,
            configs: vec![s],
        });
        assert!(
            table.contains("| x | 25.00 | 50.00 | 15.00% | 7.0 | 25% | 14.0 |"),
            "{table}"
        );
    }
}

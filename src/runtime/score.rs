//! Batched teacher-forced scoring of (prompt, response) token sequences on a
//! model pair.
//!
//! Rows are packed into `llama_decode` batches as parallel sequences (several
//! short rows share a batch; a long row is fed in chunks of `n_batch`), the
//! base and RL contexts decode the same batch (concurrently on two OS threads
//! when that is enabled), and every response position gets the full-vocabulary
//! metrics of [`crate::sampler::token_metrics`]. Results come back in row order.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::token::Token;

use super::model::{ContextOptions, Model};
use super::pair::ModelPair;
use super::session::{Feed, PairSession, Session};
use super::RuntimeError;
use crate::sampler::{
    single_metrics, token_metrics, MetricsError, Pair, Side, SingleMetrics, TokenMetrics,
};

/// One sequence to score: the prompt (context only) and the response (scored).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoreSequence {
    /// How errors name this row, e.g. `rows.jsonl:3`.
    pub label: String,
    pub prompt: Vec<Token>,
    pub response: Vec<Token>,
}

impl ScoreSequence {
    fn len(&self) -> usize {
        self.prompt.len() + self.response.len()
    }

    fn token(&self, i: usize) -> Token {
        if i < self.prompt.len() {
            self.prompt[i]
        } else {
            self.response[i - self.prompt.len()]
        }
    }
}

/// How the two models are evaluated.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overlap {
    /// One context after the other, each with all threads.
    Sequential,
    /// Both contexts at once on two OS threads, each with half the threads.
    Concurrent,
}

/// Scoring configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScoreOptions {
    /// Context (KV) size of each sequence: the longest row that can be
    /// scored. The KV cache holds `n_ctx * n_seq` tokens.
    pub n_ctx: u32,
    /// Tokens per decode call.
    pub n_batch: u32,
    /// Rows decoded side by side.
    pub n_seq: u32,
    /// Threads in all.
    pub threads: usize,
    pub overlap: Overlap,
    /// See [`ContextOptions::flash_attention`].
    pub flash_attention: bool,
}

impl ScoreOptions {
    /// Shrink the per-sequence context to what `rows` need (rounded up to
    /// 256 tokens) and the sequence count to the number of rows, so the KV
    /// cache is no larger than the work. Never grows either.
    pub fn fitted_to(mut self, rows: &[ScoreSequence]) -> ScoreOptions {
        let longest = rows.iter().map(ScoreSequence::len).max().unwrap_or(1);
        let needed = super::padded_context(longest);
        self.n_ctx = self.n_ctx.min(needed).max(1);
        self.n_seq = self
            .n_seq
            .min(u32::try_from(rows.len()).unwrap_or(u32::MAX))
            .max(1);
        self
    }
}

/// Teacher-forced evaluation of rows on one model or a pair; owns one
/// context per model.
pub struct Scorer<'m> {
    sessions: PairSession<'m>,
    options: ScoreOptions,
}

struct Active<T> {
    row: usize,
    seq: u32,
    fed: usize,
    scores: Vec<T>,
}

impl<'m> Scorer<'m> {
    /// A scorer over both models of a pair.
    pub fn for_pair(pair: &'m ModelPair, options: ScoreOptions) -> Result<Self, RuntimeError> {
        let ctx = Self::context_options(&options, 2)?;
        let sides = Pair::new(
            Some(Session::new(
                pair.base_context(&ctx)?,
                options.n_seq,
                "base",
            )),
            Some(Session::new(pair.rl_context(&ctx)?, options.n_seq, "RL")),
        );
        let concurrent = options.overlap == Overlap::Concurrent;
        let sessions = PairSession::new(sides, options.n_seq, concurrent);
        Ok(Scorer { sessions, options })
    }

    /// A scorer over one model (the single-model reference).
    pub fn for_model(model: &'m Model, options: ScoreOptions) -> Result<Self, RuntimeError> {
        let ctx = Self::context_options(&options, 1)?;
        let base = Session::new(model.new_context(&ctx)?, options.n_seq, "base");
        let sessions = PairSession::new(Pair::new(Some(base), None), options.n_seq, false);
        Ok(Scorer { sessions, options })
    }

    fn context_options(
        options: &ScoreOptions,
        n_models: usize,
    ) -> Result<ContextOptions, RuntimeError> {
        if options.n_batch == 0 || options.n_ctx == 0 || options.n_seq == 0 {
            return Err(RuntimeError::InvalidOption {
                name: "batch_size`/`ctx_size`/`sequences",
                reason: "must be positive".to_string(),
            });
        }
        let threads = match options.overlap {
            Overlap::Sequential => options.threads.max(1),
            Overlap::Concurrent => (options.threads / n_models).max(1),
        };
        Ok(ContextOptions {
            n_ctx: options.n_ctx,
            n_batch: options.n_batch,
            n_seq: options.n_seq,
            threads,
            flash_attention: options.flash_attention,
        })
    }

    /// The longest row (prompt + response tokens) this scorer accepts.
    pub fn max_tokens(&self) -> usize {
        self.options.n_ctx as usize
    }

    /// Score every row on a pair: the metrics of METHOD.md §1 for every
    /// response token. See [`Scorer::run`] for the callbacks.
    pub fn score_pair(
        &mut self,
        rows: &[ScoreSequence],
        on_row: impl FnMut(usize, Vec<TokenMetrics>) -> Result<(), RuntimeError>,
        on_progress: impl FnMut(usize),
    ) -> Result<(), RuntimeError> {
        if !self.sessions.has(Side::Rl) {
            return Err(RuntimeError::Batch(
                "score_pair needs a pair scorer".to_string(),
            ));
        }
        self.run(
            rows,
            |logits, target| token_metrics(logits[0], logits[1], target),
            on_row,
            on_progress,
        )
    }

    /// Score every row on the first model alone: each response token's
    /// log-probability, the entropy and the token's rank.
    pub fn score_single(
        &mut self,
        rows: &[ScoreSequence],
        on_row: impl FnMut(usize, Vec<SingleMetrics>) -> Result<(), RuntimeError>,
        on_progress: impl FnMut(usize),
    ) -> Result<(), RuntimeError> {
        self.run(
            rows,
            |logits, target| single_metrics(logits[0], target),
            on_row,
            on_progress,
        )
    }

    /// The evaluation loop. `per_position(logits, target)` gets each model's
    /// raw logits at a response position and the token that follows;
    /// `on_row(index, results)` is called once per row, in row order, with
    /// one result per response token; `on_progress(tokens)` after every
    /// decode with the number of tokens just evaluated.
    pub fn run<T>(
        &mut self,
        rows: &[ScoreSequence],
        per_position: impl Fn(&[&[f32]], usize) -> Result<T, MetricsError>,
        mut on_row: impl FnMut(usize, Vec<T>) -> Result<(), RuntimeError>,
        mut on_progress: impl FnMut(usize),
    ) -> Result<(), RuntimeError> {
        for row in rows {
            if row.prompt.is_empty() {
                return Err(RuntimeError::Row {
                    row: row.label.clone(),
                    reason: "the prompt has no tokens (the first response token needs context; \
                             the model adds no BOS token)"
                        .to_string(),
                });
            }
            if row.response.is_empty() {
                return Err(RuntimeError::Row {
                    row: row.label.clone(),
                    reason: "the response is empty".to_string(),
                });
            }
            if row.len() > self.max_tokens() {
                return Err(RuntimeError::TooLong {
                    row: row.label.clone(),
                    n_tokens: row.len(),
                    n_ctx: self.max_tokens(),
                });
            }
        }

        let n_batch = self.options.n_batch as usize;
        let mut active: Vec<Active<T>> = Vec::new();
        let mut next_row = 0usize;
        let mut done: BTreeMap<usize, Vec<T>> = BTreeMap::new();
        let mut next_emit = 0usize;
        let mut feeds: Vec<Feed> = Vec::with_capacity(n_batch);
        // (index in active, position in the row) for each feed
        let mut entries: Vec<(usize, usize)> = Vec::with_capacity(n_batch);
        let sides: Vec<Side> = [Side::Base, Side::Rl]
            .into_iter()
            .filter(|&s| self.sessions.has(s))
            .collect();

        self.sessions.reset();
        let (mut decode_time, mut metric_time) = (Duration::ZERO, Duration::ZERO);
        while next_emit < rows.len() {
            // Admit rows while a sequence slot is free.
            while next_row < rows.len() {
                let Some(seq) = self.sessions.acquire() else {
                    break;
                };
                active.push(Active {
                    row: next_row,
                    seq,
                    fed: 0,
                    scores: Vec::with_capacity(rows[next_row].response.len()),
                });
                next_row += 1;
            }

            // Fill one batch, oldest rows first.
            feeds.clear();
            entries.clear();
            for (slot, a) in active.iter_mut().enumerate() {
                let row = &rows[a.row];
                let take = (row.len() - a.fed).min(n_batch - entries.len());
                let first_out = row.prompt.len() - 1;
                for pos in a.fed..a.fed + take {
                    feeds.push(Feed {
                        token: row.token(pos),
                        pos: pos as u32,
                        seq: a.seq,
                        logits: pos >= first_out && pos + 1 < row.len(),
                    });
                    entries.push((slot, pos));
                }
                a.fed += take;
                if entries.len() == n_batch {
                    break;
                }
            }
            if entries.is_empty() {
                break;
            }

            let t0 = Instant::now();
            self.sessions.decode(&feeds)?;
            decode_time += t0.elapsed();
            on_progress(entries.len());
            let t0 = Instant::now();

            for (i, &(slot, pos)) in entries.iter().enumerate() {
                let a = &mut active[slot];
                let row = &rows[a.row];
                if pos + 1 < row.prompt.len() || pos + 1 >= row.len() {
                    continue;
                }
                let target = row.token(pos + 1);
                let logits: Vec<&[f32]> = sides
                    .iter()
                    .filter_map(|&s| self.sessions.logits(s, i))
                    .collect();
                let m = per_position(&logits, target.index()).map_err(|e| RuntimeError::Row {
                    row: row.label.clone(),
                    reason: format!("at response token {}: {e}", pos + 1 - row.prompt.len()),
                })?;
                a.scores.push(m);
            }

            metric_time += t0.elapsed();

            // Retire finished rows and free their sequences.
            let mut k = 0;
            while k < active.len() {
                if active[k].fed == rows[active[k].row].len() {
                    let a = active.remove(k);
                    self.sessions.release(a.seq)?;
                    done.insert(a.row, a.scores);
                } else {
                    k += 1;
                }
            }
            while let Some(scores) = done.remove(&next_emit) {
                on_row(next_emit, scores)?;
                next_emit += 1;
            }
        }
        tracing::debug!(
            "llama.cpp decode {:.2} s, metrics {:.2} s",
            decode_time.as_secs_f64(),
            metric_time.as_secs_f64()
        );
        Ok(())
    }
}

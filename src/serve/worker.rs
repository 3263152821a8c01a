//! The engine thread. llama.cpp contexts are not `Send`, so one OS thread
//! owns the [`Engine`] and decodes every request; HTTP handlers talk to it
//! through channels: a [`Submission`] in, a stream of [`Event`]s out. A
//! handler that goes away (its client disconnected) closes its event channel,
//! which the engine notices at its next iteration and cancels the job.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{mpsc, Arc, Mutex, PoisonError};

use tokio::sync::mpsc::UnboundedSender;

use super::error::ApiError;
use crate::decode::{DecodeError, Engine, Finish, Generation, Job, JobSource, Side, TokenEvent};
use crate::runtime::{
    Model, ModelPair, Overlap, RuntimeError, ScoreOptions, ScoreSequence, Scorer, Token,
};
use crate::sampler::{log_softmax, token_metrics, MetricsError};

/// The events of one HTTP request, tagged with the choice they belong to
/// (a request with `n` > 1 or several prompts is several jobs).
pub type Events = UnboundedSender<(usize, Event)>;

/// What the engine thread is asked to do.
pub enum Task {
    /// Decode one choice.
    Generate(Job),
    /// Score a prompt by teacher forcing with both models (`echo`): every
    /// token after the first, with `top` alternatives under `side`'s model.
    Score {
        prompt: Vec<Token>,
        top: usize,
        side: Side,
    },
}

/// A task for the engine thread: one choice of a request, or one of its
/// prompts to score.
pub struct Submission {
    pub task: Task,
    /// The choice's index in the response.
    pub choice: usize,
    pub events: Events,
    /// Released (queue slot freed) when the engine drops the submission.
    pub permit: Permit,
}

/// A token text with its bytes and log-prob.
#[derive(Debug, Clone, PartialEq)]
pub struct Alternative {
    pub id: u32,
    pub token: String,
    pub bytes: Vec<u8>,
    pub logprob: f64,
}

/// One decided position of a job.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenOut {
    pub id: u32,
    pub token: String,
    pub bytes: Vec<u8>,
    pub proposed: u32,
    pub gate: bool,
    pub dlogp: Option<f64>,
    pub logprob_base: Option<f64>,
    pub logprob_rl: Option<f64>,
    /// Whether it ended the generation (it adds no text).
    pub eog: bool,
    pub logprob: Option<f64>,
    pub top: Vec<Alternative>,
}

/// A prompt token scored by teacher forcing.
#[derive(Debug, Clone, PartialEq)]
pub struct PromptToken {
    /// Its log-prob under the served side's model, with alternatives.
    pub logprob: f64,
    pub top: Vec<Alternative>,
    pub logprob_base: f64,
    pub logprob_rl: f64,
    pub dlogp: f64,
}

/// What the engine reports about a job.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// A decided position and the text that became final with it.
    Token { text: String, token: TokenOut },
    /// The job ended.
    Done { finish: Finish, n_tokens: usize },
    /// A scored prompt: one entry per token after the first.
    Prompt(Vec<PromptToken>),
    /// The job could not run, or the engine failed.
    Error(ApiError),
}

/// Counters for `/health`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Generations that ran to their end (EOG, stop, length, context).
    pub completed: AtomicU64,
    /// Generations cancelled because their client went away.
    pub cancelled: AtomicU64,
}

/// One of the engine's `--parallel` sequences as `/slots` shows it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SlotState {
    /// The job decoding on it (`None`: idle).
    pub task: Option<u64>,
    pub n_prompt: usize,
    pub n_decoded: usize,
    pub max_tokens: usize,
}

/// The sequences' states, kept by the engine thread as it starts, advances
/// and ends jobs (one short lock per token), read by `/slots`. A job takes
/// the lowest free slot; the engine runs at most `--parallel` jobs, so one
/// is always free when it asks for a job.
#[derive(Debug)]
pub struct Slots(Mutex<Vec<SlotState>>);

impl Slots {
    pub fn new(n: usize) -> Slots {
        Slots(Mutex::new(vec![SlotState::default(); n]))
    }

    /// A copy of every slot's state.
    pub fn snapshot(&self) -> Vec<SlotState> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn update<R>(&self, f: impl FnOnce(&mut Vec<SlotState>) -> R) -> R {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }

    /// Put `job` on the lowest free slot (`None` if none is free, which the
    /// engine's bound rules out).
    fn start(&self, job: &Job) -> Option<usize> {
        self.update(|slots| {
            let i = slots.iter().position(|s| s.task.is_none())?;
            slots[i] = SlotState {
                task: Some(job.id),
                n_prompt: job.prompt.len(),
                n_decoded: 0,
                max_tokens: job.max_tokens,
            };
            Some(i)
        })
    }

    fn advance(&self, slot: Option<usize>) {
        if let Some(i) = slot {
            self.update(|slots| slots[i].n_decoded += 1);
        }
    }

    fn end(&self, slot: Option<usize>) {
        if let Some(i) = slot {
            self.update(|slots| slots[i] = SlotState::default());
        }
    }
}

/// A place in the bounded queue (running or waiting), returned on drop.
pub struct Permit(Arc<AtomicUsize>);

impl Permit {
    /// Take `k` places at once, or none if fewer than `k` are free.
    pub fn acquire_many(
        count: &Arc<AtomicUsize>,
        capacity: usize,
        k: usize,
    ) -> Option<Vec<Permit>> {
        count
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n + k <= capacity).then_some(n + k)
            })
            .ok()
            .map(|_| (0..k).map(|_| Permit(Arc::clone(count))).collect())
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

struct Live {
    choice: usize,
    events: Events,
    /// Its place in [`Slots`] while it decodes.
    slot: Option<usize>,
    _permit: Permit,
}

impl Live {
    fn send(&self, event: Event) {
        let _ = self.events.send((self.choice, event));
    }
}

/// The engine's [`JobSource`]: submissions from the channel, events back to
/// each handler.
pub struct Worker<'m> {
    pair: &'m ModelPair,
    model: &'m Model,
    threads: usize,
    jobs: mpsc::Receiver<Submission>,
    live: HashMap<u64, Live>,
    stats: Arc<Stats>,
    slots: Arc<Slots>,
}

impl<'m> Worker<'m> {
    pub fn new(
        pair: &'m ModelPair,
        jobs: mpsc::Receiver<Submission>,
        stats: Arc<Stats>,
        slots: Arc<Slots>,
        threads: usize,
    ) -> Worker<'m> {
        Worker {
            pair,
            model: pair.base(),
            threads,
            jobs,
            live: HashMap::new(),
            stats,
            slots,
        }
    }

    /// Decode until every sender is gone. An engine error fails the jobs
    /// then running (500) and decoding resumes with the next ones.
    pub fn run(&mut self, engine: &mut Engine<'_>, alive: &AtomicBool) {
        loop {
            match engine.serve(self) {
                Ok(()) => break,
                Err(e) => {
                    tracing::error!("the engine failed: {e}");
                    for (_, live) in self.live.drain() {
                        self.slots.end(live.slot);
                        live.send(Event::Error(ApiError::internal(format!(
                            "generation failed: {e}"
                        ))));
                    }
                }
            }
        }
        alive.store(false, Ordering::Release);
    }

    /// Teacher-forced log-probs of every prompt token after the first,
    /// as `dlogp score` computes them ([`token_metrics`] on a [`Scorer`]).
    fn score(
        &self,
        prompt: &[Token],
        top: usize,
        side: Side,
    ) -> Result<Vec<PromptToken>, RuntimeError> {
        if prompt.len() < 2 {
            return Ok(Vec::new());
        }
        let rows = [ScoreSequence {
            label: "prompt".to_string(),
            prompt: prompt[..1].to_vec(),
            response: prompt[1..].to_vec(),
        }];
        let options = ScoreOptions {
            n_ctx: crate::runtime::padded_context(prompt.len()),
            n_batch: 512,
            n_seq: 1,
            threads: self.threads,
            overlap: Overlap::Sequential,
            flash_attention: false,
        }
        .fitted_to(&rows);
        let mut scorer = Scorer::for_pair(self.pair, options)?;
        let which = usize::from(side == Side::Rl);
        let mut out = Vec::new();
        scorer.run(
            &rows,
            |logits: &[&[f32]], target: usize| -> Result<_, MetricsError> {
                let m = token_metrics(logits[0], logits[1], target)?;
                let mut alts = Vec::new();
                if top > 0 {
                    let mut lp = vec![0.0; logits[which].len()];
                    log_softmax(logits[which], &mut lp)?;
                    let mut all: Vec<(u32, f64)> = (0u32..).zip(lp.iter().copied()).collect();
                    let k = top.min(all.len());
                    let by =
                        |a: &(u32, f64), b: &(u32, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
                    if k < all.len() {
                        all.select_nth_unstable_by(k - 1, by);
                    }
                    all.truncate(k);
                    all.sort_by(by);
                    alts = all;
                }
                Ok((m, alts))
            },
            |_, rows| {
                out = rows;
                Ok(())
            },
            |_| {},
        )?;
        Ok(out
            .into_iter()
            .map(|(m, alts)| PromptToken {
                logprob: if side == Side::Rl {
                    m.logp_rl
                } else {
                    m.logp_base
                },
                top: alts
                    .into_iter()
                    .map(|(t, logprob)| {
                        let (token, bytes) = self.piece(t);
                        Alternative {
                            id: t,
                            token,
                            bytes,
                            logprob,
                        }
                    })
                    .collect(),
                logprob_base: m.logp_base,
                logprob_rl: m.logp_rl,
                dlogp: m.dlogp,
            })
            .collect())
    }

    fn piece(&self, id: u32) -> (String, Vec<u8>) {
        let bytes = self.model.piece_bytes(Token(id));
        (String::from_utf8_lossy(&bytes).into_owned(), bytes)
    }
}

impl JobSource for Worker<'_> {
    fn next_job(&mut self, wait: bool) -> Option<Job> {
        loop {
            let sub = if wait {
                self.jobs.recv().ok()?
            } else {
                self.jobs.try_recv().ok()?
            };
            if sub.events.is_closed() {
                continue; // the client left while queued
            }
            let mut live = Live {
                choice: sub.choice,
                events: sub.events,
                slot: None,
                _permit: sub.permit,
            };
            let job = match sub.task {
                Task::Generate(job) => job,
                Task::Score { prompt, top, side } => {
                    // between engine iterations, on this thread: no
                    // threads compete with the decoder's
                    live.send(match self.score(&prompt, top, side) {
                        Ok(tokens) => Event::Prompt(tokens),
                        Err(e) => Event::Error(ApiError::internal(format!(
                            "scoring the prompt failed: {e}"
                        ))),
                    });
                    continue;
                }
            };
            live.slot = self.slots.start(&job);
            self.live.insert(job.id, live);
            return Some(job);
        }
    }

    fn alive(&mut self, id: u64) -> bool {
        self.live.get(&id).is_some_and(|l| !l.events.is_closed())
    }

    fn token(&mut self, id: u64, event: &TokenEvent<'_>) {
        let Some(live) = self.live.get(&id) else {
            return;
        };
        self.slots.advance(live.slot);
        let (token, bytes) = self.piece(event.trace.chosen);
        let (logprob, top) = match &event.logprobs {
            Some(lp) => (
                Some(lp.logprob),
                lp.top
                    .iter()
                    .map(|&(t, logprob)| {
                        let (token, bytes) = self.piece(t);
                        Alternative {
                            id: t,
                            token,
                            bytes,
                            logprob,
                        }
                    })
                    .collect(),
            ),
            None => (None, Vec::new()),
        };
        let out = TokenOut {
            id: event.trace.chosen,
            token,
            bytes,
            proposed: event.trace.proposed,
            gate: event.trace.gate,
            dlogp: event.trace.dlogp,
            logprob_base: event.logprob_base,
            logprob_rl: event.logprob_rl,
            eog: event.eog,
            logprob,
            top,
        };
        live.send(Event::Token {
            text: event.text.to_string(),
            token: out,
        });
    }

    fn done(&mut self, id: u64, generation: Generation) -> Result<(), DecodeError> {
        let counter = if generation.finish == Finish::Cancelled {
            &self.stats.cancelled
        } else {
            &self.stats.completed
        };
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(live) = self.live.remove(&id) {
            self.slots.end(live.slot);
            live.send(Event::Done {
                finish: generation.finish,
                n_tokens: generation.tokens.len(),
            });
        }
        Ok(())
    }

    fn rejected(&mut self, id: u64, error: DecodeError) {
        if let Some(live) = self.live.remove(&id) {
            self.slots.end(live.slot);
            live.send(Event::Error(ApiError::bad_request(error.to_string())));
        }
    }
}

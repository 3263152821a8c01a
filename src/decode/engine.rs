//! The generation engine: several sequences decoded side by side on a pair,
//! in lockstep (both models every token, concurrently) or speculatively (the
//! proposer drafts K tokens, the other model checks them in one batch, and
//! decoding resumes at the first position whose decision differs from the
//! draft). Both loops make every decision with [`step::decide`] and the same
//! counter-based random keys, so they produce the same tokens.
//!
//! [`Engine::run`] decodes a fixed list of [`Request`]s with the engine's own
//! configuration; [`Engine::serve`] is the general loop it is built on: a
//! [`JobSource`] hands out [`Job`]s (each with its own configuration, limits
//! and log-prob request) whenever a sequence slot is free, receives every
//! generated position as it is decided, and can cancel a job at any time.

use crate::runtime::{
    decode_both, ContextOptions, Feed, LlamaToken, Model, ModelPair, RuntimeError, Session,
};
use crate::sampler::log_softmax;

use super::config::{DecodeConfig, Side};
use super::job::{token_logprobs, Job, JobSource, Requests, TokenEvent};
use super::par::par_map;
use super::step::{self, Decision};
use super::text::TextStream;
use super::DecodeError;

/// One prompt to continue; `key` identifies it in the random keys (use
/// `prompt_index * samples + sample`), so results do not depend on order.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub key: u64,
    pub prompt: Vec<LlamaToken>,
}

/// Why a generation ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Finish {
    /// An end-of-generation token.
    Eog,
    /// `max_tokens` reached.
    Length,
    /// A stop string appeared (it is cut from the text).
    Stop,
    /// The context is full.
    Context,
    /// The [`JobSource`] withdrew the job (e.g. its client went away).
    Cancelled,
}

/// One generated position.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct TraceEntry {
    pub position: usize,
    pub proposed: u32,
    pub chosen: u32,
    pub gate: bool,
    pub dlogp: Option<f64>,
}

/// A finished generation.
#[derive(Debug, Clone, PartialEq)]
pub struct Generation {
    /// Index into the requests.
    pub request: usize,
    pub tokens: Vec<LlamaToken>,
    pub text: String,
    pub trace: Vec<TraceEntry>,
    pub finish: Finish,
}

impl Generation {
    /// Share of positions where the gate fired.
    pub fn replacement_ratio(&self) -> f64 {
        if self.trace.is_empty() {
            return 0.0;
        }
        self.trace.iter().filter(|t| t.gate).count() as f64 / self.trace.len() as f64
    }
}

/// Engine limits and scheduling.
#[derive(Debug, Clone, PartialEq)]
pub struct EngineOptions {
    pub max_tokens: usize,
    pub stop: Vec<String>,
    /// Draft length K (1: lockstep).
    pub draft: usize,
    /// Sequences decoded side by side.
    pub n_seq: u32,
    /// Context per sequence.
    pub n_ctx: u32,
    pub threads: usize,
}

impl EngineOptions {
    /// The draft length when the user gives none: 1 (lockstep) for one
    /// sequence, 4 for several side by side (measured with
    /// scripts/bench-decode.sh on 2 cores).
    pub fn default_draft(n_seq: u32) -> usize {
        if n_seq <= 1 {
            1
        } else {
            4
        }
    }
}

/// A position's full-vocabulary log-probs under one model, when evaluated.
type LogProbs = Option<Vec<f64>>;

/// What one sequence's next decision needs: its configuration, log-probs of
/// each model, the request key and the position.
type StepInput<'a> = (
    &'a DecodeConfig,
    Option<&'a [f64]>,
    Option<&'a [f64]>,
    u64,
    u64,
);

struct Slot {
    id: u64,
    key: u64,
    cfg: DecodeConfig,
    max_tokens: usize,
    logprobs: Option<usize>,
    prompt_len: usize,
    seq: u32,
    n_past: u32,
    gen: Vec<LlamaToken>,
    text: TextStream,
    trace: Vec<TraceEntry>,
    lp_base: Option<Vec<f64>>,
    lp_rl: Option<Vec<f64>>,
    finish: Option<Finish>,
}

/// Decodes requests on one model or a pair.
pub struct Engine<'m> {
    timing: [std::time::Duration; 4],
    /// Decode the two models at once (lockstep: half the threads each).
    /// Speculative decoding gives each model all threads and never runs
    /// them at once: llama.cpp's spinning thread barriers collapse when
    /// oversubscribed (a 69-token prefill took 1 s instead of 0.25 s).
    concurrent: bool,
    model: &'m Model,
    base: Option<Session<'m>>,
    rl: Option<Session<'m>>,
    cfg: DecodeConfig,
    opts: EngineOptions,
}

impl<'m> Engine<'m> {
    /// An engine over a pair (any mode).
    pub fn for_pair(
        pair: &'m ModelPair,
        cfg: DecodeConfig,
        opts: EngineOptions,
    ) -> Result<Engine<'m>, DecodeError> {
        Self::build(pair.base(), Some(pair), cfg, opts)
    }

    /// An engine over one model (`base` mode only).
    pub fn for_model(
        model: &'m Model,
        cfg: DecodeConfig,
        opts: EngineOptions,
    ) -> Result<Engine<'m>, DecodeError> {
        if cfg.needs_rl() {
            return Err(DecodeError::NeedsRl(cfg.mode()));
        }
        Self::build(model, None, cfg, opts)
    }

    fn build(
        model: &'m Model,
        pair: Option<&'m ModelPair>,
        cfg: DecodeConfig,
        opts: EngineOptions,
    ) -> Result<Engine<'m>, DecodeError> {
        if opts.draft == 0 {
            return Err(DecodeError::Invalid(
                "the draft length must be at least 1".to_string(),
            ));
        }
        if opts.max_tokens == 0 {
            return Err(DecodeError::Invalid(
                "max_tokens must be at least 1".to_string(),
            ));
        }
        let both = cfg.needs_base() && cfg.needs_rl();
        let mut opts = opts;
        if opts.draft > 1 && model.is_recurrent() {
            // A recurrent cache cannot drop rejected drafts.
            tracing::warn!(
                "{}: recurrent model, decoding in lockstep (draft length 1)",
                model.path().display()
            );
            opts.draft = 1;
        }
        let speculative = opts.draft > 1 && cfg.can_speculate();
        // Lockstep decodes both models at once: half the threads each.
        let threads = if both && !speculative {
            (opts.threads / 2).max(1)
        } else {
            opts.threads.max(1)
        };
        let n_seq = opts.n_seq.max(1);
        let n_batch = (n_seq as usize * opts.draft).max(512) as u32;
        let ctx = ContextOptions {
            n_ctx: opts.n_ctx,
            n_batch,
            n_seq,
            threads,
            flash_attention: false,
        };
        let base = if cfg.needs_base() {
            let c = match pair {
                Some(p) => p.base_context(&ctx)?,
                None => model.new_context(&ctx)?,
            };
            Some(Session::new(c, n_seq, "base"))
        } else {
            None
        };
        let rl = match (cfg.needs_rl(), pair) {
            (true, Some(p)) => Some(Session::new(p.rl_context(&ctx)?, n_seq, "RL")),
            _ => None,
        };
        Ok(Engine {
            concurrent: both && !speculative,
            timing: Default::default(),
            model,
            base,
            rl,
            cfg,
            opts,
        })
    }

    /// Generate for every request. `on_text(request, text)` receives text as
    /// it becomes final (never text a stop string will cut); `on_done` each
    /// finished generation, in completion order.
    pub fn run(
        &mut self,
        requests: &[Request],
        on_text: impl FnMut(usize, &str),
        on_done: impl FnMut(Generation) -> Result<(), DecodeError>,
    ) -> Result<(), DecodeError> {
        for (i, r) in requests.iter().enumerate() {
            if r.prompt.is_empty() {
                return Err(DecodeError::Invalid(format!("prompt {i} has no tokens")));
            }
            if r.prompt.len() + 1 > self.opts.n_ctx as usize {
                return Err(DecodeError::PromptTooLong {
                    index: i,
                    n_tokens: r.prompt.len(),
                    n_ctx: self.opts.n_ctx as usize,
                });
            }
        }
        let mut source = Requests {
            requests,
            next: 0,
            cfg: self.cfg.clone(),
            max_tokens: self.opts.max_tokens,
            stop: self.opts.stop.clone(),
            on_text,
            on_done,
            error: None,
        };
        self.serve(&mut source)?;
        match source.error {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Decode the jobs `source` hands out, up to `n_seq` at a time, until it
    /// has none left (see [`JobSource::next_job`]). An error of llama.cpp or
    /// of the numerics ends the whole loop; the jobs then running get no
    /// [`JobSource::done`].
    pub fn serve<S: JobSource>(&mut self, source: &mut S) -> Result<(), DecodeError> {
        for s in [&mut self.base, &mut self.rl].into_iter().flatten() {
            s.clear();
        }
        let mut free: Vec<u32> = (0..self.opts.n_seq.max(1)).rev().collect();
        let mut slots: Vec<Slot> = Vec::new();
        loop {
            while !free.is_empty() {
                let Some(job) = source.next_job(slots.is_empty()) else {
                    break;
                };
                if let Err(e) = self.check(&job) {
                    source.rejected(job.id, e);
                    continue;
                }
                let Some(seq) = free.pop() else { break };
                let slot = self.prefill(job, seq)?;
                slots.push(slot);
            }
            if slots.is_empty() {
                tracing::debug!(
                    "decode (both/one) {:.2?}, proposer drafts {:.2?}, verify {:.2?}, log-softmax {:.2?}",
                    self.timing[0], self.timing[1], self.timing[2], self.timing[3]
                );
                break;
            }
            if self.can_speculate(&slots) {
                self.speculative_iteration(&mut slots, source)?;
            } else {
                self.lockstep_iteration(&mut slots, source)?;
            }
            for s in &mut slots {
                if s.finish.is_none() && !source.alive(s.id) {
                    s.finish = Some(Finish::Cancelled);
                }
            }
            let mut k = 0;
            while k < slots.len() {
                if let Some(finish) = slots[k].finish {
                    let s = slots.remove(k);
                    for sess in [&mut self.base, &mut self.rl].into_iter().flatten() {
                        sess.trim(s.seq, 0)?;
                    }
                    free.push(s.seq);
                    source.done(
                        s.id,
                        Generation {
                            request: s.id as usize,
                            tokens: s.gen,
                            text: s.text.into_text(),
                            trace: s.trace,
                            finish,
                        },
                    )?;
                } else {
                    k += 1;
                }
            }
        }
        Ok(())
    }

    /// Whether `job` can run here.
    fn check(&self, job: &Job) -> Result<(), DecodeError> {
        if job.prompt.is_empty() {
            return Err(DecodeError::Invalid("the prompt has no tokens".to_string()));
        }
        if job.prompt.len() + 1 > self.opts.n_ctx as usize {
            return Err(DecodeError::PromptTooLong {
                index: 0,
                n_tokens: job.prompt.len(),
                n_ctx: self.opts.n_ctx as usize,
            });
        }
        if job.max_tokens == 0 {
            return Err(DecodeError::Invalid(
                "max_tokens must be at least 1".to_string(),
            ));
        }
        if job.cfg.needs_rl() && self.rl.is_none() {
            return Err(DecodeError::NeedsRl(job.cfg.mode()));
        }
        if job.cfg.needs_base() && self.base.is_none() {
            return Err(DecodeError::Invalid(format!(
                "mode `{:?}` needs the base model, which this engine does not evaluate",
                job.cfg.mode()
            )));
        }
        Ok(())
    }

    /// Speculative decoding applies to this iteration: drafts are allowed,
    /// both models are evaluated, and every sequence gates proposals of the
    /// same model. (Iterations of either kind give the same tokens, so the
    /// choice may change from one iteration to the next.)
    fn can_speculate(&self, slots: &[Slot]) -> bool {
        let Some(first) = slots.first() else {
            return false;
        };
        self.opts.draft > 1
            && self.base.is_some()
            && self.rl.is_some()
            && slots.iter().all(|s| {
                s.cfg.can_speculate() && s.cfg.proposer_side() == first.cfg.proposer_side()
            })
    }

    /// Feed a prompt to every session the mode needs; keep the log-probs of
    /// the next token.
    fn prefill(&mut self, job: Job, seq: u32) -> Result<Slot, DecodeError> {
        let Job {
            id,
            key,
            prompt,
            cfg,
            max_tokens,
            stop,
            logprobs,
        } = job;
        let mut slot = Slot {
            id,
            key,
            cfg,
            max_tokens,
            logprobs,
            prompt_len: prompt.len(),
            seq,
            n_past: 0,
            gen: Vec::new(),
            text: TextStream::new(stop),
            trace: Vec::new(),
            lp_base: None,
            lp_rl: None,
            finish: None,
        };
        let chunk = self
            .base
            .as_ref()
            .or(self.rl.as_ref())
            .map_or(512, Session::n_batch);
        let n = prompt.len();
        for (c, tokens) in prompt.chunks(chunk).enumerate() {
            let feeds: Vec<Feed> = tokens
                .iter()
                .enumerate()
                .map(|(j, &token)| {
                    let pos = c * chunk + j;
                    Feed {
                        token,
                        pos: pos as u32,
                        seq,
                        logits: pos + 1 == n,
                    }
                })
                .collect();
            self.decode(&feeds, &feeds)?;
        }
        let last = (n - 1) % chunk;
        let (mut base, mut rl) = self.read_lps_both(&[last])?;
        slot.lp_base = base.pop().flatten();
        slot.lp_rl = rl.pop().flatten();
        slot.n_past = n as u32;
        Ok(slot)
    }

    /// Decode on the sessions the mode uses, concurrently when both.
    fn decode(&mut self, base_feeds: &[Feed], rl_feeds: &[Feed]) -> Result<(), DecodeError> {
        let t0 = std::time::Instant::now();
        let r = self.decode_inner(base_feeds, rl_feeds);
        self.timing[0] += t0.elapsed();
        tracing::trace!(
            "decode both: {} tokens in {:.2?}",
            base_feeds.len(),
            t0.elapsed()
        );
        r
    }

    fn decode_inner(&mut self, base_feeds: &[Feed], rl_feeds: &[Feed]) -> Result<(), DecodeError> {
        match (&mut self.base, &mut self.rl) {
            (Some(b), Some(r)) if self.concurrent => decode_both(b, base_feeds, r, rl_feeds)?,
            (Some(b), Some(r)) => {
                b.decode(base_feeds)?;
                r.decode(rl_feeds)?;
            }
            (Some(b), None) => b.decode(base_feeds)?,
            (None, Some(r)) => r.decode(rl_feeds)?,
            (None, None) => {}
        }
        Ok(())
    }

    fn session(&mut self, side: Side) -> Option<&mut Session<'m>> {
        match side {
            Side::Base => self.base.as_mut(),
            Side::Rl => self.rl.as_mut(),
        }
    }

    /// Full-vocabulary log-probs after each of the feeds `indices`, for each
    /// of `sides`, all computed in parallel: one vector per side, `None`s for
    /// a side the mode does not evaluate.
    fn read_lps(
        &mut self,
        sides: &[Side],
        indices: &[usize],
    ) -> Result<Vec<Vec<LogProbs>>, DecodeError> {
        let t0 = std::time::Instant::now();
        let mut logits: Vec<&[f32]> = Vec::with_capacity(sides.len() * indices.len());
        let mut evaluated = Vec::with_capacity(sides.len());
        for &side in sides {
            let session = match side {
                Side::Base => self.base.as_ref(),
                Side::Rl => self.rl.as_ref(),
            };
            evaluated.push(session.is_some());
            if let Some(s) = session {
                logits.extend(indices.iter().map(|&i| s.logits(i)));
            }
        }
        let lps = par_map(&logits, self.opts.threads, |l| {
            let mut lp = vec![0.0; l.len()];
            log_softmax(l, &mut lp).map(|()| lp)
        })
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| DecodeError::Numerics(e.to_string()))?;
        let mut lps = lps.into_iter();
        let out = evaluated
            .into_iter()
            .map(|e| {
                (0..indices.len())
                    .map(|_| if e { lps.next() } else { None })
                    .collect()
            })
            .collect();
        self.timing[3] += t0.elapsed();
        Ok(out)
    }

    /// [`Engine::read_lps`] for base and RL.
    fn read_lps_both(
        &mut self,
        indices: &[usize],
    ) -> Result<(Vec<LogProbs>, Vec<LogProbs>), DecodeError> {
        let mut both = self.read_lps(&[Side::Base, Side::Rl], indices)?;
        let rl = both.pop().unwrap_or_default();
        let base = both.pop().unwrap_or_default();
        Ok((base, rl))
    }

    /// Record a decision; returns whether the sequence is finished.
    /// `lp_base` / `lp_rl` are the log-probs the decision was made from.
    fn accept<S: JobSource>(
        &self,
        slot: &mut Slot,
        d: Decision,
        lp_base: Option<&[f64]>,
        lp_rl: Option<&[f64]>,
        source: &mut S,
    ) -> Result<bool, DecodeError> {
        let trace = TraceEntry {
            position: slot.gen.len(),
            proposed: d.proposed,
            chosen: d.chosen,
            gate: d.fired,
            dlogp: d.dlogp,
        };
        slot.trace.push(trace);
        let token = LlamaToken(d.chosen as i32);
        let eog = self.model.is_eog(token);
        if eog {
            slot.finish = Some(Finish::Eog);
        } else {
            slot.gen.push(token);
            if slot.text.push(&self.model.piece_bytes(token)) {
                slot.finish = Some(Finish::Stop);
            } else if slot.gen.len() >= slot.max_tokens {
                slot.finish = Some(Finish::Length);
            } else if slot.prompt_len + slot.gen.len() >= self.opts.n_ctx as usize {
                // the token just kept fills the last cell
                slot.finish = Some(Finish::Context);
            }
        }
        // Stream what no stop string can still cut.
        let text = slot.text.release(slot.finish.is_some());
        let logprobs = match slot.logprobs {
            Some(n) => Some(token_logprobs(&slot.cfg, &d, lp_base, lp_rl, n)?),
            None => None,
        };
        let chosen = d.chosen as usize;
        source.token(
            slot.id,
            &TokenEvent {
                trace,
                eog,
                logprob_base: lp_base.map(|lp| lp[chosen]),
                logprob_rl: lp_rl.map(|lp| lp[chosen]),
                logprobs,
                text,
            },
        );
        Ok(slot.finish.is_some())
    }

    /// Both models (or the one the mode uses) at every token.
    fn lockstep_iteration<S: JobSource>(
        &mut self,
        slots: &mut [Slot],
        source: &mut S,
    ) -> Result<(), DecodeError> {
        let inputs: Vec<StepInput<'_>> = slots
            .iter()
            .map(|s| {
                (
                    &s.cfg,
                    s.lp_base.as_deref(),
                    s.lp_rl.as_deref(),
                    s.key,
                    s.gen.len() as u64,
                )
            })
            .collect();
        let decisions = par_map(&inputs, self.opts.threads, |&(cfg, b, r, key, pos)| {
            step::step(cfg, b, r, key, pos)
        });
        let mut feeds = Vec::with_capacity(slots.len());
        let mut fed = Vec::with_capacity(slots.len());
        for (k, (slot, d)) in slots.iter_mut().zip(decisions).enumerate() {
            let d = d?;
            let (lb, lr) = (slot.lp_base.take(), slot.lp_rl.take());
            if !self.accept(slot, d, lb.as_deref(), lr.as_deref(), source)? {
                feeds.push(Feed {
                    token: LlamaToken(d.chosen as i32),
                    pos: slot.n_past,
                    seq: slot.seq,
                    logits: true,
                });
                fed.push(k);
            }
        }
        if feeds.is_empty() {
            return Ok(());
        }
        self.decode(&feeds, &feeds)?;
        let indices: Vec<usize> = (0..fed.len()).collect();
        let (base, rl) = self.read_lps_both(&indices)?;
        for ((&k, b), r) in fed.iter().zip(base).zip(rl) {
            slots[k].lp_base = b;
            slots[k].lp_rl = r;
            slots[k].n_past += 1;
        }
        Ok(())
    }

    /// Draft with the proposer, verify with the other model in one batch.
    fn speculative_iteration<S: JobSource>(
        &mut self,
        slots: &mut [Slot],
        source: &mut S,
    ) -> Result<(), DecodeError> {
        let p_side = slots
            .first()
            .and_then(|s| s.cfg.proposer_side())
            .unwrap_or(Side::Base);
        let o_side = match p_side {
            Side::Base => Side::Rl,
            Side::Rl => Side::Base,
        };
        let take_lp = |slot: &mut Slot, side: Side| match side {
            Side::Base => slot.lp_base.take(),
            Side::Rl => slot.lp_rl.take(),
        };
        let n = slots.len();
        let mut kmax = vec![0usize; n];
        let mut lp_p: Vec<Vec<Vec<f64>>> = Vec::with_capacity(n);
        let mut lp_o: Vec<Vec<Vec<f64>>> = Vec::with_capacity(n);
        let mut drafts: Vec<Vec<u32>> = vec![Vec::new(); n];
        for (k, slot) in slots.iter_mut().enumerate() {
            let room_ctx = (self.opts.n_ctx as usize).saturating_sub(slot.n_past as usize);
            let room_len = slot.max_tokens.saturating_sub(slot.gen.len());
            kmax[k] = self.opts.draft.min(room_ctx).min(room_len).max(1);
            let p =
                take_lp(slot, p_side).ok_or(DecodeError::Numerics("missing log-probs".into()))?;
            let o =
                take_lp(slot, o_side).ok_or(DecodeError::Numerics("missing log-probs".into()))?;
            lp_p.push(vec![p]);
            lp_o.push(vec![o]);
        }

        // Draft: one proposer decode per draft position, all sequences at once.
        for j in 0..self.opts.draft {
            let who: Vec<usize> = (0..slots.len()).filter(|&k| j < kmax[k]).collect();
            if who.is_empty() {
                break;
            }
            let proposals = par_map(&who, self.opts.threads, |&k| {
                let slot = &slots[k];
                step::propose(
                    &slot.cfg,
                    &lp_p[k][j],
                    slot.key,
                    (slot.gen.len() + j) as u64,
                )
            });
            let mut feeds = Vec::with_capacity(who.len());
            for (&k, d) in who.iter().zip(proposals) {
                let d = d?;
                drafts[k].push(d);
                feeds.push(Feed {
                    token: LlamaToken(d as i32),
                    pos: slots[k].n_past + j as u32,
                    seq: slots[k].seq,
                    logits: true,
                });
            }
            let t0 = std::time::Instant::now();
            self.session(p_side)
                .ok_or(DecodeError::Numerics("no proposer session".into()))?
                .decode(&feeds)?;
            self.timing[1] += t0.elapsed();
            let indices: Vec<usize> = (0..who.len()).collect();
            for (&k, lp) in who
                .iter()
                .zip(self.read_lps(&[p_side], &indices)?.swap_remove(0))
            {
                lp_p[k].push(lp.unwrap_or_default());
            }
        }

        // Verify: the other model scores every draft in one batch.
        let mut feeds = Vec::new();
        let mut owner = Vec::new();
        for (k, slot) in slots.iter().enumerate() {
            for (j, &d) in drafts[k].iter().enumerate() {
                feeds.push(Feed {
                    token: LlamaToken(d as i32),
                    pos: slot.n_past + j as u32,
                    seq: slot.seq,
                    logits: true,
                });
                owner.push(k);
            }
        }
        let t0 = std::time::Instant::now();
        self.session(o_side)
            .ok_or(DecodeError::Numerics("no verifier session".into()))?
            .decode(&feeds)?;
        self.timing[2] += t0.elapsed();
        let indices: Vec<usize> = (0..owner.len()).collect();
        for (&k, lp) in owner
            .iter()
            .zip(self.read_lps(&[o_side], &indices)?.swap_remove(0))
        {
            lp_o[k].push(lp.unwrap_or_default());
        }

        // Accept drafts up to the first decision that differs.
        let mut fix = Vec::new();
        for (k, slot) in slots.iter_mut().enumerate() {
            let key = slot.key;
            let start = slot.n_past;
            let mut cut = None;
            for (j, &draft) in drafts[k].iter().enumerate() {
                let (lb, lr) = match p_side {
                    Side::Base => (&lp_p[k][j], &lp_o[k][j]),
                    Side::Rl => (&lp_o[k][j], &lp_p[k][j]),
                };
                let d = step::decide(
                    &slot.cfg,
                    Some(lb),
                    Some(lr),
                    draft,
                    key,
                    slot.gen.len() as u64,
                )?;
                if self.accept(slot, d, Some(lb), Some(lr), source)? {
                    break;
                }
                if d.chosen != draft {
                    cut = Some((j, d.chosen));
                    break;
                }
            }
            if slot.finish.is_some() {
                continue;
            }
            match cut {
                Some((j, chosen)) => {
                    let at = start + j as u32;
                    for side in [p_side, o_side] {
                        if let Some(s) = self.session(side) {
                            s.trim(slot.seq, at)?;
                        }
                    }
                    slot.n_past = at;
                    fix.push((k, chosen));
                }
                None => {
                    let m = drafts[k].len();
                    slot.n_past = start + m as u32;
                    let (p_last, o_last) = (lp_p[k].swap_remove(m), lp_o[k].swap_remove(m));
                    match p_side {
                        Side::Base => {
                            slot.lp_base = Some(p_last);
                            slot.lp_rl = Some(o_last);
                        }
                        Side::Rl => {
                            slot.lp_rl = Some(p_last);
                            slot.lp_base = Some(o_last);
                        }
                    }
                }
            }
        }

        // Feed the re-sampled tokens to both models.
        if fix.is_empty() {
            return Ok(());
        }
        let feeds: Vec<Feed> = fix
            .iter()
            .map(|&(k, chosen)| Feed {
                token: LlamaToken(chosen as i32),
                pos: slots[k].n_past,
                seq: slots[k].seq,
                logits: true,
            })
            .collect();
        self.decode(&feeds, &feeds)?;
        let indices: Vec<usize> = (0..fix.len()).collect();
        let (base, rl) = self.read_lps_both(&indices)?;
        for ((&(k, _), b), r) in fix.iter().zip(base).zip(rl) {
            slots[k].lp_base = b;
            slots[k].lp_rl = r;
            slots[k].n_past += 1;
        }
        Ok(())
    }
}

impl From<RuntimeError> for DecodeError {
    fn from(e: RuntimeError) -> Self {
        DecodeError::Runtime(e)
    }
}

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
//!
//! The engine is a scheduler over per-sequence state ([`Slot`]): the
//! llama.cpp side (batches, the two contexts, slots) is one
//! [`PairSession`]; a speculative iteration is three steps over plain data
//! ([`Engine::draft`], [`Engine::verify`], [`Engine::accept_drafts`]) and
//! [`Engine::advance`] feeds decided tokens to both models; every decision is
//! [`step`]'s; text assembly is [`TextStream`]'s.

use crate::runtime::{
    ContextOptions, Feed, Model, ModelPair, PairSession, RuntimeError, Session, Token,
};
use crate::sampler::{log_softmax, Pair, Side};

use super::config::DecodeConfig;
use super::job::{
    token_logprobs, Finish, Generation, Job, JobSource, Request, Requests, TokenEvent, TraceEntry,
};
use super::par::par_map;
use super::step::{self, Decided};
use super::text::TextStream;
use super::DecodeError;

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

/// A position's full-vocabulary log-probs under one model, when evaluated.
type LogProbs = Option<Vec<f64>>;

/// What one sequence's next decision needs: its configuration, log-probs of
/// each model, the request key and the position.
type StepInput<'a> = (&'a DecodeConfig, Pair<Option<&'a [f64]>>, u64, u64);

/// One running sequence.
struct Slot {
    id: u64,
    key: u64,
    cfg: DecodeConfig,
    max_tokens: usize,
    logprobs: Option<usize>,
    /// The prompt, whose cache a later job with the same prefix copies.
    prompt: Vec<Token>,
    seq: u32,
    n_past: u32,
    gen: Vec<Token>,
    text: TextStream,
    trace: Vec<TraceEntry>,
    /// Each model's log-probs of the next token.
    lp: Pair<LogProbs>,
    finish: Option<Finish>,
}

/// One sequence's draft: the proposed tokens, and each model's log-probs at
/// every draft position and one past the last (`tokens.len() + 1` each once
/// verified).
struct Draft {
    tokens: Vec<u32>,
    proposer: Vec<Vec<f64>>,
    verifier: Vec<Vec<f64>>,
    /// Most tokens this sequence may draft (context and length limits).
    max_len: usize,
}

/// Prompt tokens an engine has fed so far, and how many of them were
/// copied from another sequence's cache instead of decoded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PromptStats {
    pub tokens: usize,
    pub copied: usize,
}

/// Decodes requests on one model or a pair.
pub struct Engine<'m> {
    timing: [std::time::Duration; 4],
    prompts: PromptStats,
    model: &'m Model,
    /// The two contexts and the sequence slots. Lockstep decodes both models
    /// at once (half the threads each); speculative decoding gives each model
    /// all threads and never runs them at once: llama.cpp's spinning thread
    /// barriers collapse when oversubscribed (a 69-token prefill took 1 s
    /// instead of 0.25 s).
    sessions: PairSession<'m>,
    /// Whether a joining job may copy a running one's prompt cache: not for
    /// recurrent models (their state cannot be cut) nor sliding-window ones
    /// (a long-running source has dropped the window the copy would need).
    share_prompts: bool,
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
            sessions: PairSession::new(Pair::new(base, rl), n_seq, both && !speculative),
            timing: Default::default(),
            prompts: PromptStats::default(),
            share_prompts: [Some(model), pair.map(ModelPair::rl_model)]
                .into_iter()
                .flatten()
                .all(|m| !m.is_recurrent() && m.sliding_window().is_none()),
            model,
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
        self.sessions.reset();
        let mut slots: Vec<Slot> = Vec::new();
        loop {
            while self.sessions.has_free() {
                let Some(job) = source.next_job(slots.is_empty()) else {
                    break;
                };
                if let Err(e) = self.check(&job) {
                    source.rejected(job.id, e);
                    continue;
                }
                let Some(seq) = self.sessions.acquire() else {
                    break;
                };
                let slot = self.prefill(job, seq, &slots)?;
                slots.push(slot);
            }
            if slots.is_empty() {
                tracing::debug!(
                    "decode (both/one) {:.2?}, proposer drafts {:.2?}, verify {:.2?}, log-softmax {:.2?}; prompt tokens {}, {} of them copied from another sequence",
                    self.timing[0], self.timing[1], self.timing[2], self.timing[3],
                    self.prompts.tokens, self.prompts.copied
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
                    self.sessions.release(s.seq)?;
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

    /// The prompt tokens fed since the engine was built, and how many were
    /// copied from a running sequence with the same prefix.
    pub fn prompt_stats(&self) -> PromptStats {
        self.prompts
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
        if job.cfg.needs_rl() && !self.sessions.has(Side::Rl) {
            return Err(DecodeError::NeedsRl(job.cfg.mode()));
        }
        if job.cfg.needs_base() && !self.sessions.has(Side::Base) {
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
            && self.sessions.has(Side::Base)
            && self.sessions.has(Side::Rl)
            && slots.iter().all(|s| {
                s.cfg.can_speculate() && s.cfg.proposer_side() == first.cfg.proposer_side()
            })
    }

    /// Feed a prompt to every session the mode needs; keep the log-probs of
    /// the next token. Where a running sequence's prompt shares a prefix of
    /// at least [`MIN_SHARED_PREFIX`] tokens with it (the k samples of one
    /// problem, a server request with `n` > 1, few-shot prompts) and the
    /// models' caches allow it (`share_prompts`), that prefix's cache is
    /// copied from it and only the rest is decoded; the
    /// last prompt token is always decoded, for its logits. Batching never
    /// changes a row's result on the backends where sequences decoded side
    /// by side are exact, so neither does the copy.
    fn prefill(&mut self, job: Job, seq: u32, running: &[Slot]) -> Result<Slot, DecodeError> {
        let Job {
            id,
            key,
            prompt,
            cfg,
            max_tokens,
            stop,
            logprobs,
        } = job;
        let t0 = std::time::Instant::now();
        let mut start = 0;
        let shared = self
            .share_prompts
            .then(|| shared_prefix(&prompt, running))
            .flatten();
        if let Some((src, len)) = shared {
            if self.sessions.copy_prefix(src, seq, len as u32)? {
                start = len;
            }
        }
        let last = self
            .sessions
            .prefill_from(seq, start as u32, &prompt[start..])?;
        self.timing[0] += t0.elapsed();
        self.prompts.tokens += prompt.len();
        self.prompts.copied += start;
        let lp = self.read_lps(&[Side::Base, Side::Rl], &[last])?.pop();
        Ok(Slot {
            id,
            key,
            cfg,
            max_tokens,
            logprobs,
            n_past: prompt.len() as u32,
            prompt,
            seq,
            gen: Vec::new(),
            text: TextStream::new(stop),
            trace: Vec::new(),
            lp: lp.unwrap_or_default(),
            finish: None,
        })
    }

    /// Full-vocabulary log-probs after each of the feeds `indices` of the
    /// last decode, for each of `sides` that is evaluated (`None` for the
    /// others), all computed in parallel; one pair per index.
    fn read_lps(
        &mut self,
        sides: &[Side],
        indices: &[usize],
    ) -> Result<Vec<Pair<LogProbs>>, DecodeError> {
        let t0 = std::time::Instant::now();
        let mut logits: Vec<&[f32]> = Vec::with_capacity(sides.len() * indices.len());
        let mut read = Vec::with_capacity(sides.len());
        for &side in sides {
            let before = logits.len();
            logits.extend(
                indices
                    .iter()
                    .filter_map(|&i| self.sessions.logits(side, i)),
            );
            if logits.len() > before {
                read.push(side);
            }
        }
        let lps = par_map(&logits, self.opts.threads, |l| {
            let mut lp = vec![0.0; l.len()];
            log_softmax(l, &mut lp).map(|()| lp)
        })
        .into_iter()
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| DecodeError::Numerics(e.to_string()))?;
        let mut out: Vec<Pair<LogProbs>> = vec![Pair::default(); indices.len()];
        let mut lps = lps.into_iter();
        for side in read {
            for o in &mut out {
                *o.get_mut(side) = lps.next();
            }
        }
        self.timing[3] += t0.elapsed();
        Ok(out)
    }

    /// [`Engine::read_lps`] for one side, which must be evaluated.
    fn read_side(&mut self, side: Side, indices: &[usize]) -> Result<Vec<Vec<f64>>, DecodeError> {
        self.read_lps(&[side], indices)?
            .into_iter()
            .map(|mut p| p.get_mut(side).take().ok_or_else(missing_lps))
            .collect()
    }

    /// Record a decision; returns whether the sequence is finished.
    /// `lp` are the log-probs the decision was made from.
    fn accept<S: JobSource>(
        &self,
        slot: &mut Slot,
        d: Decided,
        lp: Pair<Option<&[f64]>>,
        source: &mut S,
    ) -> Result<bool, DecodeError> {
        let decision = d.decision;
        let trace = TraceEntry {
            position: slot.gen.len(),
            proposed: decision.proposed,
            chosen: decision.chosen,
            gate: decision.fired,
            dlogp: decision.dlogp,
        };
        slot.trace.push(trace);
        let token = Token(decision.chosen);
        let eog = self.model.is_eog(token);
        if eog {
            slot.finish = Some(Finish::Eog);
        } else {
            slot.gen.push(token);
            if slot.text.push(&self.model.piece_bytes(token)) {
                slot.finish = Some(Finish::Stop);
            } else if slot.gen.len() >= slot.max_tokens {
                slot.finish = Some(Finish::Length);
            } else if slot.prompt.len() + slot.gen.len() >= self.opts.n_ctx as usize {
                // the token just kept fills the last cell
                slot.finish = Some(Finish::Context);
            }
        }
        // Stream what no stop string can still cut.
        let text = slot.text.release(slot.finish.is_some());
        let logprobs = match slot.logprobs {
            Some(n) => Some(token_logprobs(&slot.cfg, &d, lp, n)?),
            None => None,
        };
        let chosen = decision.chosen as usize;
        source.token(
            slot.id,
            &TokenEvent {
                trace,
                eog,
                logprob_base: lp.base.map(|lp| lp[chosen]),
                logprob_rl: lp.rl.map(|lp| lp[chosen]),
                logprobs,
                text,
            },
        );
        Ok(slot.finish.is_some())
    }

    /// Feed each `(slot, token)` to every model at the slot's next position
    /// and keep the log-probs that follow.
    fn advance(&mut self, slots: &mut [Slot], tokens: &[(usize, u32)]) -> Result<(), DecodeError> {
        if tokens.is_empty() {
            return Ok(());
        }
        let feeds: Vec<Feed> = tokens
            .iter()
            .map(|&(k, token)| Feed {
                token: Token(token),
                pos: slots[k].n_past,
                seq: slots[k].seq,
                logits: true,
            })
            .collect();
        let t0 = std::time::Instant::now();
        self.sessions.decode(&feeds)?;
        self.timing[0] += t0.elapsed();
        let indices: Vec<usize> = (0..tokens.len()).collect();
        let lps = self.read_lps(&[Side::Base, Side::Rl], &indices)?;
        for (&(k, _), lp) in tokens.iter().zip(lps) {
            slots[k].lp = lp;
            slots[k].n_past += 1;
        }
        Ok(())
    }

    /// Both models (or the one the mode uses) at every token.
    fn lockstep_iteration<S: JobSource>(
        &mut self,
        slots: &mut [Slot],
        source: &mut S,
    ) -> Result<(), DecodeError> {
        let inputs: Vec<StepInput<'_>> = slots
            .iter()
            .map(|s| (&s.cfg, s.lp.as_deref(), s.key, s.gen.len() as u64))
            .collect();
        let decisions = par_map(&inputs, self.opts.threads, |&(cfg, lp, key, pos)| {
            step::step(cfg, lp, key, pos)
        });
        let mut next = Vec::with_capacity(slots.len());
        for (k, (slot, d)) in slots.iter_mut().zip(decisions).enumerate() {
            let d = d?;
            let chosen = d.decision.chosen;
            let lp = slot.lp.take();
            if !self.accept(slot, d, lp.as_deref(), source)? {
                next.push((k, chosen));
            }
        }
        self.advance(slots, &next)
    }

    /// Draft with the proposer, verify with the other model in one batch,
    /// keep the drafts up to the first decision that differs, and feed the
    /// re-sampled tokens.
    fn speculative_iteration<S: JobSource>(
        &mut self,
        slots: &mut [Slot],
        source: &mut S,
    ) -> Result<(), DecodeError> {
        let proposer = slots
            .first()
            .and_then(|s| s.cfg.proposer_side())
            .unwrap_or(Side::Base);
        let mut drafts = self.draft(slots, proposer)?;
        self.verify(slots, &mut drafts, proposer.other())?;
        let fixes = self.accept_drafts(slots, drafts, proposer, source)?;
        self.advance(slots, &fixes)
    }

    /// Up to K proposals per sequence: one proposer decode per draft
    /// position, all sequences at once. Takes the slots' log-probs.
    fn draft(&mut self, slots: &mut [Slot], proposer: Side) -> Result<Vec<Draft>, DecodeError> {
        let mut drafts = Vec::with_capacity(slots.len());
        for slot in slots.iter_mut() {
            let room_ctx = (self.opts.n_ctx as usize).saturating_sub(slot.n_past as usize);
            let room_len = slot.max_tokens.saturating_sub(slot.gen.len());
            let (p, o) = slot.lp.take().split(proposer);
            drafts.push(Draft {
                tokens: Vec::with_capacity(self.opts.draft),
                proposer: vec![p.ok_or_else(missing_lps)?],
                verifier: vec![o.ok_or_else(missing_lps)?],
                max_len: self.opts.draft.min(room_ctx).min(room_len).max(1),
            });
        }
        for j in 0..self.opts.draft {
            let who: Vec<usize> = (0..slots.len())
                .filter(|&k| j < drafts[k].max_len)
                .collect();
            if who.is_empty() {
                break;
            }
            let proposals = par_map(&who, self.opts.threads, |&k| {
                let slot = &slots[k];
                let pos = (slot.gen.len() + j) as u64;
                step::propose(&slot.cfg, &drafts[k].proposer[j], slot.key, pos)
            });
            let mut feeds = Vec::with_capacity(who.len());
            for (&k, d) in who.iter().zip(proposals) {
                let d = d?;
                drafts[k].tokens.push(d);
                feeds.push(Feed {
                    token: Token(d),
                    pos: slots[k].n_past + j as u32,
                    seq: slots[k].seq,
                    logits: true,
                });
            }
            let t0 = std::time::Instant::now();
            self.sessions.decode_side(proposer, &feeds)?;
            self.timing[1] += t0.elapsed();
            let indices: Vec<usize> = (0..who.len()).collect();
            for (&k, lp) in who.iter().zip(self.read_side(proposer, &indices)?) {
                drafts[k].proposer.push(lp);
            }
        }
        Ok(drafts)
    }

    /// The other model scores every draft token of every sequence in one
    /// batch.
    fn verify(
        &mut self,
        slots: &[Slot],
        drafts: &mut [Draft],
        verifier: Side,
    ) -> Result<(), DecodeError> {
        let mut feeds = Vec::new();
        let mut owner = Vec::new();
        for (k, (slot, draft)) in slots.iter().zip(drafts.iter()).enumerate() {
            for (j, &d) in draft.tokens.iter().enumerate() {
                feeds.push(Feed {
                    token: Token(d),
                    pos: slot.n_past + j as u32,
                    seq: slot.seq,
                    logits: true,
                });
                owner.push(k);
            }
        }
        let t0 = std::time::Instant::now();
        self.sessions.decode_side(verifier, &feeds)?;
        self.timing[2] += t0.elapsed();
        let indices: Vec<usize> = (0..owner.len()).collect();
        for (&k, lp) in owner.iter().zip(self.read_side(verifier, &indices)?) {
            drafts[k].verifier.push(lp);
        }
        Ok(())
    }

    /// Decide every draft position in order and keep the drafts up to the
    /// first decision that differs; there both caches are trimmed. Returns
    /// the re-sampled tokens still to feed, as `(slot, token)`.
    fn accept_drafts<S: JobSource>(
        &mut self,
        slots: &mut [Slot],
        drafts: Vec<Draft>,
        proposer: Side,
        source: &mut S,
    ) -> Result<Vec<(usize, u32)>, DecodeError> {
        let mut fixes = Vec::new();
        for (k, (slot, mut draft)) in slots.iter_mut().zip(drafts).enumerate() {
            let start = slot.n_past;
            let mut cut = None;
            for (j, &proposed) in draft.tokens.iter().enumerate() {
                let lp = Pair::from_split(
                    proposer,
                    Some(&draft.proposer[j][..]),
                    Some(&draft.verifier[j][..]),
                );
                let d = step::decide(&slot.cfg, lp, proposed, slot.key, slot.gen.len() as u64)?;
                let chosen = d.decision.chosen;
                if self.accept(slot, d, lp, source)? {
                    break;
                }
                if chosen != proposed {
                    cut = Some((j, chosen));
                    break;
                }
            }
            if slot.finish.is_some() {
                continue;
            }
            match cut {
                Some((j, chosen)) => {
                    let at = start + j as u32;
                    self.sessions.trim(slot.seq, at)?;
                    slot.n_past = at;
                    fixes.push((k, chosen));
                }
                None => {
                    let m = draft.tokens.len();
                    slot.n_past = start + m as u32;
                    slot.lp = Pair::from_split(
                        proposer,
                        Some(draft.proposer.swap_remove(m)),
                        Some(draft.verifier.swap_remove(m)),
                    );
                }
            }
        }
        Ok(fixes)
    }
}

/// Shortest prompt prefix copied from another sequence's cache instead of
/// decoded. llama.cpp copies the source's whole cache, so the copy's cost
/// grows with the context, not the prefix: on SmolLM2 (2 cores,
/// `examples/bench_prefix_copy.rs`) copying 16 tokens and decoding one took
/// 22 ms with 512 cells per sequence and 41 ms with 4,096, against 93 ms to
/// decode the 17 tokens; 256 tokens: 28 / 49 ms against 1.3 s.
pub const MIN_SHARED_PREFIX: usize = 16;

/// The running sequence with the longest prompt prefix in common with
/// `prompt`, and that length, at most `prompt.len() − 1` (the last token is
/// decoded for its logits), if it is at least [`MIN_SHARED_PREFIX`].
fn shared_prefix(prompt: &[Token], running: &[Slot]) -> Option<(u32, usize)> {
    let (seq, len) = running
        .iter()
        .map(|s| {
            let common = s
                .prompt
                .iter()
                .zip(prompt)
                .take_while(|(a, b)| a == b)
                .count();
            (s.seq, common.min(prompt.len().saturating_sub(1)))
        })
        .max_by_key(|&(seq, len)| (len, std::cmp::Reverse(seq)))?;
    (len >= MIN_SHARED_PREFIX).then_some((seq, len))
}

fn missing_lps() -> DecodeError {
    DecodeError::Numerics("missing log-probs".into())
}

impl From<RuntimeError> for DecodeError {
    fn from(e: RuntimeError) -> Self {
        DecodeError::Runtime(e)
    }
}

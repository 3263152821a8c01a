//! What the engine decodes and what comes out, as plain data:
//! [`Request`]s and [`Job`]s in, [`TokenEvent`]s, [`Generation`]s and their
//! [`Finish`] out. [`Engine::serve`](super::Engine::serve) takes jobs from a
//! [`JobSource`], which hears about every decided position (with log-probs
//! when asked) and may cancel a job; [`Requests`] is the source
//! [`Engine::run`](super::Engine::run) uses. Nothing here depends on the engine.

use crate::runtime::Token;
use crate::sampler::{extrapolate, Pair, Side};

use super::config::{DecodeConfig, Mode};
use super::step::Decided;
use super::DecodeError;

/// One prompt to continue; `key` identifies it in the random keys (use
/// `prompt_index * samples + sample`), so results do not depend on order.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub key: u64,
    pub prompt: Vec<Token>,
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
    pub tokens: Vec<Token>,
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

/// A request with its own decoding settings, for [`Engine::serve`](super::Engine::serve).
#[derive(Debug, Clone, PartialEq)]
pub struct Job {
    /// The caller's handle, passed back with every event.
    pub id: u64,
    /// The key of the random draws (see [`Request::key`]): the same key,
    /// prompt and configuration give the same tokens however the job is
    /// scheduled next to others.
    pub key: u64,
    pub prompt: Vec<Token>,
    pub cfg: DecodeConfig,
    pub max_tokens: usize,
    /// Stop strings (cut from the text).
    pub stop: Vec<String>,
    /// Report each token's log-prob with this many most likely alternatives
    /// (`None`: no log-probs).
    pub logprobs: Option<usize>,
}

/// Log-probabilities of one generated token.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenLogprobs {
    /// Under the distribution the token was drawn from, before temperature
    /// and truncation: the proposer's, or where the gate fired π_RL
    /// (replace) or π_X (extrapolate, global), with the logit bias added
    /// and renormalised when there is one.
    pub logprob: f64,
    /// The most likely tokens of that distribution, most likely first.
    pub top: Vec<(u32, f64)>,
}

/// One decided position, as reported to a [`JobSource`].
#[derive(Debug, Clone, PartialEq)]
pub struct TokenEvent<'a> {
    pub trace: TraceEntry,
    /// Whether the token ends the generation (it adds no text).
    pub eog: bool,
    /// The chosen token's log-prob under the base and the RL model, for the
    /// models that are evaluated.
    pub logprob_base: Option<f64>,
    pub logprob_rl: Option<f64>,
    /// Present when the job asked for log-probs.
    pub logprobs: Option<TokenLogprobs>,
    /// Text that became final with this token (possibly empty: a stop string
    /// may still cut it, or a character is split across tokens).
    pub text: &'a str,
}

/// Where [`Engine::serve`](super::Engine::serve) gets its work and sends its results.
pub trait JobSource {
    /// A job to start now, if any. `wait` is true when no sequence is
    /// running: then block until there is one; `None` ends [`Engine::serve`](super::Engine::serve).
    fn next_job(&mut self, wait: bool) -> Option<Job>;
    /// Whether job `id` is still wanted (asked once per decoding iteration);
    /// `false` cancels it and frees its sequence.
    fn alive(&mut self, _id: u64) -> bool {
        true
    }
    /// A decided position of job `id`.
    fn token(&mut self, id: u64, event: &TokenEvent<'_>);
    /// Job `id` ended (`generation.request` is `id`).
    fn done(&mut self, id: u64, generation: Generation) -> Result<(), DecodeError>;
    /// Job `id` cannot run on this engine (empty or too long a prompt, or a
    /// mode that needs a model the engine does not evaluate).
    fn rejected(&mut self, id: u64, error: DecodeError);
}

/// [`Engine::run`](super::Engine::run)'s source: a fixed list of requests, all with the
/// engine's configuration.
pub(crate) struct Requests<'r, T, D> {
    pub(crate) requests: &'r [Request],
    pub(crate) next: usize,
    pub(crate) cfg: DecodeConfig,
    pub(crate) max_tokens: usize,
    pub(crate) stop: Vec<String>,
    pub(crate) on_text: T,
    pub(crate) on_done: D,
    pub(crate) error: Option<DecodeError>,
}

impl<T, D> JobSource for Requests<'_, T, D>
where
    T: FnMut(usize, &str),
    D: FnMut(Generation) -> Result<(), DecodeError>,
{
    fn next_job(&mut self, _wait: bool) -> Option<Job> {
        let r = self.requests.get(self.next)?;
        let job = Job {
            id: self.next as u64,
            key: r.key,
            prompt: r.prompt.clone(),
            cfg: self.cfg.clone(),
            max_tokens: self.max_tokens,
            stop: self.stop.clone(),
            logprobs: None,
        };
        self.next += 1;
        Some(job)
    }

    fn token(&mut self, id: u64, event: &TokenEvent<'_>) {
        if !event.text.is_empty() {
            (self.on_text)(id as usize, event.text);
        }
    }

    fn done(&mut self, _id: u64, generation: Generation) -> Result<(), DecodeError> {
        (self.on_done)(generation)
    }

    fn rejected(&mut self, _id: u64, error: DecodeError) {
        // run() checks every request first, so this is not reached
        self.error.get_or_insert(error);
    }
}

/// The log-probs of a decided token under the distribution it was drawn
/// from, and the `top` most likely tokens of that distribution. Where the
/// decision was drawn from π_X, its own π_X is used, never recomputed.
pub(crate) fn token_logprobs(
    cfg: &DecodeConfig,
    d: &Decided,
    lp: Pair<Option<&[f64]>>,
    top: usize,
) -> Result<TokenLogprobs, DecodeError> {
    use std::borrow::Cow;
    let missing = || DecodeError::Numerics("missing log-probs".to_string());
    let lp: Cow<'_, [f64]> = match (cfg.mode(), d.decision.fired, &d.extrapolated) {
        (Mode::Global, _, Some(lp_x)) | (Mode::Extrapolate, true, Some(lp_x)) => {
            Cow::Borrowed(lp_x)
        }
        (Mode::Global, _, None) | (Mode::Extrapolate, true, None) => {
            let both = lp.both().ok_or_else(missing)?;
            let mut lp_x = vec![0.0; both.rl.len()];
            extrapolate(both, cfg.gamma(), &mut lp_x)?;
            Cow::Owned(lp_x)
        }
        (Mode::Replace, true, _) => Cow::Borrowed(lp.rl.ok_or_else(missing)?),
        _ => {
            Cow::Borrowed((*lp.get(cfg.proposer_side().unwrap_or(Side::Base))).ok_or_else(missing)?)
        }
    };
    let lp = match cfg.logit_bias().apply_normalised(&lp) {
        Cow::Borrowed(_) => lp,
        Cow::Owned(v) => Cow::Owned(v),
    };
    let logprob = lp[d.decision.chosen as usize];
    let mut all: Vec<(u32, f64)> = lp.iter().enumerate().map(|(i, &v)| (i as u32, v)).collect();
    let top = top.min(all.len());
    let by_lp = |a: &(u32, f64), b: &(u32, f64)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if top > 0 && top < all.len() {
        all.select_nth_unstable_by(top - 1, by_lp);
    }
    all.truncate(top);
    all.sort_by(by_lp);
    Ok(TokenLogprobs { logprob, top: all })
}

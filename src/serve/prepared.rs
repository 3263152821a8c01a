//! A validated request, between the HTTP handlers that build it
//! ([`super::http`], [`super::native`]) and the replies that answer it
//! ([`super::reply`]): plain data, so neither side imports the other.

use crate::decode::DecodeConfig;
use crate::runtime::Token;

/// Which API a request came through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Chat,
    Completion,
}

/// A prompt as echoed: its text (the token texts joined) and each token.
pub(super) struct Echo {
    pub(super) text: String,
    /// (id, text, bytes) of every prompt token.
    pub(super) tokens: Vec<(u32, String, Vec<u8>)>,
}

/// One prompt of a request: its tokens and the length of its text.
pub(super) struct PromptIn {
    pub(super) tokens: Vec<Token>,
    /// With `echo`: the prompt's text and tokens.
    pub(super) echo: Option<Echo>,
    /// Bytes of the prompt's text (for token ids, of their token texts, a
    /// leading BOS left out): where the completion's `text_offset`s start.
    pub(super) text_len: usize,
}

/// A validated request, ready for the engine: `prompts.len() × n` choices;
/// choice `p·n + i` continues prompt `p` with seed `seed + i`.
pub(super) struct Prepared {
    pub(super) kind: Kind,
    pub(super) model: String,
    pub(super) prompts: Vec<PromptIn>,
    /// Choices per prompt.
    pub(super) n: usize,
    pub(super) cfg: DecodeConfig,
    pub(super) max_tokens: usize,
    pub(super) stop: Vec<String>,
    /// Alternatives per token, when log-probs are asked for.
    pub(super) logprobs: Option<usize>,
    pub(super) stream: bool,
    pub(super) include_usage: bool,
    /// Whether choices carry the per-token `dlogp` trace.
    pub(super) trace: bool,
    /// Whether the prompt is echoed (completions), its tokens scored.
    pub(super) echo: bool,
    /// `/completion`'s `return_tokens`.
    pub(super) return_tokens: bool,
}

impl Prepared {
    /// How many choices the response has.
    pub(super) fn choices(&self) -> usize {
        self.prompts.len() * self.n
    }

    /// The prompt of choice `c`.
    pub(super) fn prompt_of(&self, c: usize) -> &PromptIn {
        &self.prompts[c / self.n]
    }

    /// The seed of choice `c`: the request's seed + `c mod n` (wrapping), so
    /// choice `i` is the answer to the same request with `n` = 1 and that seed.
    pub(super) fn seed_of(&self, c: usize) -> u64 {
        self.cfg.seed().wrapping_add((c % self.n) as u64)
    }

    /// Engine tasks: a generation per choice (unless no tokens are asked
    /// for), a scoring per echoed prompt.
    pub(super) fn tasks(&self) -> usize {
        let gen = if self.max_tokens > 0 {
            self.choices()
        } else {
            0
        };
        gen + if self.echo { self.prompts.len() } else { 0 }
    }

    /// Prompt tokens of the request (each prompt once, whatever `n`).
    pub(super) fn prompt_tokens(&self) -> usize {
        self.prompts.iter().map(|p| p.tokens.len()).sum()
    }
}

//! The one batching core over llama.cpp. [`Session`]: a context with its
//! batch behind a small safe API (feed tokens for several sequences, read the
//! logits of the entries that asked for them, trim a sequence's KV cache);
//! it is the only builder of `llama_batch`es. [`PairSession`]: the sessions
//! of a pair (either side optional), decoded concurrently or one after the
//! other, and the scheduler of their sequence slots. The scorer, the engine,
//! the reference evaluation and the plugin's base context are built on them.

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;

use super::token::Token;
use super::RuntimeError;
use crate::sampler::{Pair, Side};

/// One token to feed: which sequence, at which position, and whether its
/// next-token logits are needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feed {
    pub token: Token,
    pub pos: u32,
    pub seq: u32,
    pub logits: bool,
}

/// A context plus a reusable batch.
pub struct Session<'m> {
    ctx: LlamaContext<'m>,
    batch: LlamaBatch<'m>,
    n_batch: usize,
    /// which model, for error messages
    name: &'static str,
}

impl<'m> Session<'m> {
    pub fn new(ctx: LlamaContext<'m>, n_seq: u32, name: &'static str) -> Session<'m> {
        let n_batch = ctx.n_batch() as usize;
        let batch = LlamaBatch::new(n_batch, i32::try_from(n_seq.max(1)).unwrap_or(i32::MAX));
        Session {
            ctx,
            batch,
            n_batch,
            name,
        }
    }

    /// Largest number of tokens one [`Session::decode`] call accepts.
    pub fn n_batch(&self) -> usize {
        self.n_batch
    }

    /// Context length of each sequence.
    pub fn n_ctx_seq(&self) -> usize {
        self.ctx.n_ctx() as usize
    }

    /// Decode `feeds` (at most `n_batch`) in one llama.cpp call. Afterwards
    /// [`Session::logits`]`(i)` is valid for every `i` whose feed asked for
    /// logits.
    pub fn decode(&mut self, feeds: &[Feed]) -> Result<(), RuntimeError> {
        if feeds.len() > self.n_batch {
            return Err(RuntimeError::Batch(format!(
                "{} tokens exceed the batch size {}",
                feeds.len(),
                self.n_batch
            )));
        }
        self.batch.clear();
        for f in feeds {
            let pos = i32::try_from(f.pos).map_err(|e| RuntimeError::Batch(e.to_string()))?;
            let seq = i32::try_from(f.seq).map_err(|e| RuntimeError::Batch(e.to_string()))?;
            self.batch
                .add(f.token.llama(), pos, &[seq], f.logits)
                .map_err(|e| RuntimeError::Batch(e.to_string()))?;
        }
        self.ctx
            .decode(&mut self.batch)
            .map_err(|e| RuntimeError::Decode {
                model: self.name,
                reason: e.to_string(),
            })
    }

    /// The logits after feed `i` of the last decode (which must have asked
    /// for them).
    pub fn logits(&self, i: usize) -> &[f32] {
        self.ctx.get_logits_ith(i as i32)
    }

    /// Forget positions `from..` of sequence `seq`. Recurrent models cannot
    /// drop part of a sequence: that is an error, not a silent no-op.
    pub fn trim(&mut self, seq: u32, from: u32) -> Result<(), RuntimeError> {
        let removed = self
            .ctx
            .clear_kv_cache_seq(Some(seq), Some(from), None)
            .map_err(|e| RuntimeError::Batch(e.to_string()))?;
        if removed {
            Ok(())
        } else {
            Err(RuntimeError::Batch(format!(
                "the {} model's cache could not drop positions {from}.. of sequence {seq}",
                self.name
            )))
        }
    }

    /// Give sequence `dst`, which must be empty, the cache of positions
    /// `..len` of sequence `src`: copied, not recomputed. With split caches
    /// llama.cpp copies the source's whole cache (its only cross-sequence
    /// copy), then `dst` drops positions `len..`. Returns false, with `dst`
    /// empty again, where the cache cannot drop part of a sequence
    /// (recurrent models).
    pub fn copy_prefix(&mut self, src: u32, dst: u32, len: u32) -> Result<bool, RuntimeError> {
        let id = |s: u32| i32::try_from(s).map_err(|e| RuntimeError::Batch(e.to_string()));
        self.ctx
            .copy_kv_cache_seq(id(src)?, id(dst)?, None, None)
            .map_err(|e| RuntimeError::Batch(e.to_string()))?;
        let cut = self
            .ctx
            .clear_kv_cache_seq(Some(dst), Some(len), None)
            .map_err(|e| RuntimeError::Batch(e.to_string()))?;
        if !cut {
            self.trim(dst, 0)?;
        }
        Ok(cut)
    }

    /// Forget everything.
    pub fn clear(&mut self) {
        self.ctx.clear_kv_cache();
    }

    /// Feed `tokens` to sequence `seq` at positions `start..`, in chunks of
    /// the batch size, asking for the logits of the last token only; returns
    /// the index to read them with [`Session::logits`].
    pub fn feed(&mut self, seq: u32, start: u32, tokens: &[Token]) -> Result<usize, RuntimeError> {
        let mut last = 0;
        for feeds in prompt_feeds(tokens, start, seq, self.n_batch) {
            self.decode(&feeds)?;
            last = feeds.len() - 1;
        }
        Ok(last)
    }
}

/// `tokens` as the feeds of sequence `seq` from position `start`, in batches
/// of at most `n_batch`; only the last token asks for logits.
fn prompt_feeds(tokens: &[Token], start: u32, seq: u32, n_batch: usize) -> Vec<Vec<Feed>> {
    let n = tokens.len();
    let n_batch = n_batch.max(1);
    tokens
        .chunks(n_batch)
        .enumerate()
        .map(|(c, chunk)| {
            chunk
                .iter()
                .enumerate()
                .map(|(j, &token)| {
                    let i = c * n_batch + j;
                    Feed {
                        token,
                        pos: start + i as u32,
                        seq,
                        logits: i + 1 == n,
                    }
                })
                .collect()
        })
        .collect()
}

/// The sessions of a pair, either side optional, and their sequence slots.
/// Both sides always get the same feeds, so a sequence's KV cache holds the
/// same tokens on each.
pub struct PairSession<'m> {
    sides: Pair<Option<Session<'m>>>,
    /// Decode the two sides at once, on two OS threads.
    concurrent: bool,
    n_seq: u32,
    /// Free sequence slots, the lowest last.
    free: Vec<u32>,
}

impl<'m> PairSession<'m> {
    /// `n_seq` sequence slots over the given sessions. `concurrent` decodes
    /// both sides at once (give each context half the threads).
    pub fn new(sides: Pair<Option<Session<'m>>>, n_seq: u32, concurrent: bool) -> PairSession<'m> {
        let n_seq = n_seq.max(1);
        PairSession {
            sides,
            concurrent,
            n_seq,
            free: (0..n_seq).rev().collect(),
        }
    }

    /// Whether `side` is evaluated.
    pub fn has(&self, side: Side) -> bool {
        self.sides.get(side).is_some()
    }

    /// The largest batch every side accepts.
    pub fn n_batch(&self) -> usize {
        [&self.sides.base, &self.sides.rl]
            .into_iter()
            .flatten()
            .map(Session::n_batch)
            .min()
            .unwrap_or(512)
    }

    /// Decode the same feeds on every side.
    pub fn decode(&mut self, feeds: &[Feed]) -> Result<(), RuntimeError> {
        match self.sides.as_mut() {
            Pair {
                base: Some(b),
                rl: Some(r),
            } if self.concurrent => std::thread::scope(|s| {
                let handle = s.spawn(|| r.decode(feeds));
                b.decode(feeds)?;
                handle.join().unwrap_or_else(|_| {
                    Err(RuntimeError::Decode {
                        model: "RL",
                        reason: "the decoding thread panicked".to_string(),
                    })
                })
            }),
            Pair { base, rl } => {
                for s in [base, rl].into_iter().flatten() {
                    s.decode(feeds)?;
                }
                Ok(())
            }
        }
    }

    /// Decode on one side only (a draft or a verification); the caller keeps
    /// the sides' caches in step (see [`PairSession::trim`]).
    pub fn decode_side(&mut self, side: Side, feeds: &[Feed]) -> Result<(), RuntimeError> {
        match self.sides.get_mut(side) {
            Some(s) => s.decode(feeds),
            None => Err(RuntimeError::Batch(format!(
                "the {} model is not evaluated",
                side.name()
            ))),
        }
    }

    /// Feed a prompt to sequence `seq` on every side, in chunks, decoding
    /// each chunk on both sides like [`PairSession::decode`]; returns the
    /// index of the last token's logits.
    pub fn prefill(&mut self, seq: u32, tokens: &[Token]) -> Result<usize, RuntimeError> {
        self.prefill_from(seq, 0, tokens)
    }

    /// Feed `tokens` to sequence `seq` at positions `start..` on every side
    /// (the rest of a prompt whose first `start` positions are cached), like
    /// [`PairSession::prefill`]; returns the index of the last token's logits.
    pub fn prefill_from(
        &mut self,
        seq: u32,
        start: u32,
        tokens: &[Token],
    ) -> Result<usize, RuntimeError> {
        let mut last = 0;
        for feeds in prompt_feeds(tokens, start, seq, self.n_batch()) {
            self.decode(&feeds)?;
            last = feeds.len() - 1;
        }
        Ok(last)
    }

    /// Give the empty sequence `dst` positions `..len` of `src` on every
    /// side, copied ([`Session::copy_prefix`]); false, with `dst` empty,
    /// where a side cannot cut a sequence.
    pub fn copy_prefix(&mut self, src: u32, dst: u32, len: u32) -> Result<bool, RuntimeError> {
        let mut copied = true;
        for s in [&mut self.sides.base, &mut self.sides.rl]
            .into_iter()
            .flatten()
        {
            copied = copied && s.copy_prefix(src, dst, len)?;
        }
        if !copied {
            self.trim(dst, 0)?;
        }
        Ok(copied)
    }

    /// The logits of `side` after feed `i` of its last decode.
    pub fn logits(&self, side: Side, i: usize) -> Option<&[f32]> {
        self.sides.get(side).as_ref().map(|s| s.logits(i))
    }

    /// Forget positions `from..` of sequence `seq` on every side.
    pub fn trim(&mut self, seq: u32, from: u32) -> Result<(), RuntimeError> {
        for s in [&mut self.sides.base, &mut self.sides.rl]
            .into_iter()
            .flatten()
        {
            s.trim(seq, from)?;
        }
        Ok(())
    }

    /// A free sequence slot, if any.
    pub fn acquire(&mut self) -> Option<u32> {
        self.free.pop()
    }

    /// Whether any slot is free.
    pub fn has_free(&self) -> bool {
        !self.free.is_empty()
    }

    /// Give slot `seq` back, its cache emptied.
    pub fn release(&mut self, seq: u32) -> Result<(), RuntimeError> {
        self.trim(seq, 0)?;
        self.free.push(seq);
        Ok(())
    }

    /// Forget every sequence and free every slot.
    pub fn reset(&mut self) {
        for s in [&mut self.sides.base, &mut self.sides.rl]
            .into_iter()
            .flatten()
        {
            s.clear();
        }
        self.free = (0..self.n_seq).rev().collect();
    }
}

#[cfg(test)]
mod tests {
    use super::{prompt_feeds, Feed, Token};

    #[test]
    fn prompt_feeds_chunk_in_order_with_logits_for_the_last_token_only() {
        let tokens: Vec<Token> = (10..15).map(Token).collect();
        let chunks = prompt_feeds(&tokens, 3, 7, 2);
        assert_eq!(chunks.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
        let flat: Vec<Feed> = chunks.concat();
        for (i, f) in flat.iter().enumerate() {
            assert_eq!(f.token, tokens[i]);
            assert_eq!(f.pos, 3 + i as u32);
            assert_eq!(f.seq, 7);
            assert_eq!(f.logits, i == 4);
        }
        assert!(prompt_feeds(&[], 0, 0, 4).is_empty());
    }
}

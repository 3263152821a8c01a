//! A llama.cpp context with its batch, behind a small safe API: feed tokens
//! for several sequences, read the logits of the entries that asked for them,
//! and trim a sequence's KV cache. The decoder works through this, so it
//! never touches llama.cpp types.

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;

use super::RuntimeError;

/// One token to feed: which sequence, at which position, and whether its
/// next-token logits are needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Feed {
    pub token: LlamaToken,
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
                .add(f.token, pos, &[seq], f.logits)
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

    /// Forget everything.
    pub fn clear(&mut self) {
        self.ctx.clear_kv_cache();
    }
}

/// Decode on two sessions at once, on two OS threads.
pub fn decode_both(
    a: &mut Session<'_>,
    feeds_a: &[Feed],
    b: &mut Session<'_>,
    feeds_b: &[Feed],
) -> Result<(), RuntimeError> {
    std::thread::scope(|s| {
        let handle = s.spawn(|| b.decode(feeds_b));
        a.decode(feeds_a)?;
        handle.join().unwrap_or_else(|_| {
            Err(RuntimeError::Decode {
                model: "RL",
                reason: "the decoding thread panicked".to_string(),
            })
        })
    })
}

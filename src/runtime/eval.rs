//! The plainest teacher-forced evaluation: one sequence, one context, every
//! position's logits copied out. Tests use it as the reference the batched
//! scorer must agree with.

use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;

use super::RuntimeError;

/// Logits after each of `tokens` (row `i` predicts token `i + 1`), decoded
/// in chunks of `n_batch` on sequence 0 of a cleared context.
pub fn plain_logits(
    ctx: &mut LlamaContext<'_>,
    tokens: &[LlamaToken],
    n_batch: usize,
) -> Result<Vec<Vec<f32>>, RuntimeError> {
    if tokens.len() > ctx.n_ctx() as usize {
        return Err(RuntimeError::TooLong {
            row: "plain evaluation".to_string(),
            n_tokens: tokens.len(),
            n_ctx: ctx.n_ctx() as usize,
        });
    }
    let n_batch = n_batch.clamp(1, ctx.n_batch() as usize);
    ctx.clear_kv_cache();
    let mut batch = LlamaBatch::new(n_batch, 1);
    let mut out = Vec::with_capacity(tokens.len());
    for (c, chunk) in tokens.chunks(n_batch).enumerate() {
        batch.clear();
        for (j, &token) in chunk.iter().enumerate() {
            let pos = (c * n_batch + j) as i32;
            batch
                .add(token, pos, &[0], true)
                .map_err(|e| RuntimeError::Batch(e.to_string()))?;
        }
        ctx.decode(&mut batch).map_err(|e| RuntimeError::Decode {
            model: "plain",
            reason: e.to_string(),
        })?;
        for j in 0..chunk.len() {
            out.push(ctx.get_logits_ith(j as i32).to_vec());
        }
    }
    Ok(out)
}

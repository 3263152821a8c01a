//! The plainest teacher-forced evaluation: one sequence, every position's
//! logits copied out. Tests use it as the reference the batched scorer must
//! agree with.

use super::token::Token;

use super::session::{Feed, Session};
use super::RuntimeError;

/// Logits after each of `tokens` (row `i` predicts token `i + 1`), decoded
/// in chunks of `n_batch` on sequence 0 of a cleared session.
pub fn plain_logits(
    session: &mut Session<'_>,
    tokens: &[Token],
    n_batch: usize,
) -> Result<Vec<Vec<f32>>, RuntimeError> {
    if tokens.len() > session.n_ctx_seq() {
        return Err(RuntimeError::TooLong {
            row: "plain evaluation".to_string(),
            n_tokens: tokens.len(),
            n_ctx: session.n_ctx_seq(),
        });
    }
    let n_batch = n_batch.clamp(1, session.n_batch());
    session.clear();
    let mut out = Vec::with_capacity(tokens.len());
    for (c, chunk) in tokens.chunks(n_batch).enumerate() {
        let feeds: Vec<Feed> = chunk
            .iter()
            .enumerate()
            .map(|(j, &token)| Feed {
                token,
                pos: (c * n_batch + j) as u32,
                seq: 0,
                logits: true,
            })
            .collect();
        session.decode(&feeds)?;
        out.extend((0..chunk.len()).map(|j| session.logits(j).to_vec()));
    }
    Ok(out)
}

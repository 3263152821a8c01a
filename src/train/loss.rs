//! The policy-gradient math of METHOD.md §4 as pure functions over numbers:
//! group advantages, token weights, the DAPO token loss and its gradient,
//! overlong shaping and the dynamic-sampling filter. No tensors, so every
//! formula is tested against hand computations.

use super::config::Reweight;

/// Group-normalised advantages Â_i = (r_i − mean r) / (std r + 1e-6), with
/// the unbiased (n − 1) standard deviation, as the reference code (verl's
/// GRPO advantage) computes it. A group of one gets Â = 0.
pub fn group_advantages(rewards: &[f64]) -> Vec<f64> {
    let n = rewards.len();
    if n < 2 {
        return vec![0.0; n];
    }
    let mean = rewards.iter().sum::<f64>() / n as f64;
    let var = rewards.iter().map(|r| (r - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let std = var.sqrt();
    rewards.iter().map(|r| (r - mean) / (std + 1e-6)).collect()
}

/// Whether a group can teach anything: DAPO's dynamic sampling drops groups
/// whose rewards are all equal (all correct or all wrong: Â = 0 everywhere).
pub fn is_informative(rewards: &[f64]) -> bool {
    rewards.windows(2).any(|w| w[0] != w[1])
}

/// DAPO's soft overlong penalty for a response of `len` tokens with a
/// maximum of `max_len` and a buffer of `buffer` tokens before it:
/// 0 up to `max_len − buffer`, then falling linearly to −1 at `max_len`,
/// and −1 beyond. `buffer = 0` disables it (always 0).
pub fn overlong_penalty(len: usize, max_len: usize, buffer: usize) -> f64 {
    if buffer == 0 {
        return 0.0;
    }
    let expected = max_len.saturating_sub(buffer);
    if len <= expected {
        0.0
    } else if len <= max_len {
        (expected as f64 - len as f64) / buffer as f64
    } else {
        -1.0
    }
}

/// Detached per-token weights multiplying the advantage, for one group:
/// `old_logprobs[i][t]` = log π_old(y_{i,t}). See [`Reweight`] for the formulas.
pub fn token_weights(scheme: Reweight, old_logprobs: &[Vec<f64>]) -> Vec<Vec<f64>> {
    match scheme {
        Reweight::None => old_logprobs.iter().map(|r| vec![1.0; r.len()]).collect(),
        Reweight::Lowprob { alpha } => old_logprobs
            .iter()
            .map(|r| r.iter().map(|lp| 1.0 + alpha * (1.0 - lp.exp())).collect())
            .collect(),
        Reweight::Highprob { c } => old_logprobs
            .iter()
            .map(|r| r.iter().map(|lp| 1.0 - c + c * lp.exp()).collect())
            .collect(),
        Reweight::Ppl { alpha } => {
            let ppl: Vec<f64> = old_logprobs
                .iter()
                .map(|r| {
                    if r.is_empty() {
                        1.0
                    } else {
                        (-r.iter().sum::<f64>() / r.len() as f64).exp()
                    }
                })
                .collect();
            let mean = ppl.iter().sum::<f64>() / ppl.len().max(1) as f64;
            old_logprobs
                .iter()
                .zip(&ppl)
                .map(|(r, p)| {
                    let w = if mean > 0.0 && mean.is_finite() {
                        1.0 - alpha + alpha * p / mean
                    } else {
                        1.0
                    };
                    vec![w; r.len()]
                })
                .collect()
        }
    }
}

/// Clip settings of the DAPO loss.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ClipParams {
    /// ρ below 1 − low is clipped (0.2).
    pub low: f64,
    /// ρ above 1 + high is clipped (DAPO's clip-higher: 0.28).
    pub high: f64,
    /// Dual clip for negative advantages: the loss never exceeds −c·Ã (10).
    pub dual: f64,
}

impl Default for ClipParams {
    fn default() -> Self {
        ClipParams {
            low: 0.2,
            high: 0.28,
            dual: 10.0,
        }
    }
}

/// One token's DAPO loss and its derivative with respect to log π_θ(y_t).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TokenLoss {
    pub loss: f64,
    /// ∂loss / ∂log π_θ(y_t).
    pub grad: f64,
    /// The clip or the dual clip zeroed this token's gradient.
    pub clipped: bool,
    pub ratio: f64,
}

/// The PPO-clip loss with DAPO's asymmetric clip and the dual clip, as the
/// reference code (verl `compute_policy_loss`) computes it, for one token:
///
/// ρ = exp(log π_θ − log π_old) (log-ratio clamped to ±20),
/// l = max(−Ãρ, −Ã·clip(ρ, 1 − low, 1 + high)), and for Ã < 0: l = min(l, −Ã·dual).
///
/// The gradient is −Ãρ where the unclipped term is selected, else 0.
pub fn dapo_token(logp: f64, logp_old: f64, adv: f64, clip: &ClipParams) -> TokenLoss {
    let ratio = (logp - logp_old).clamp(-20.0, 20.0).exp();
    let l1 = -adv * ratio;
    let l2 = -adv * ratio.clamp(1.0 - clip.low, 1.0 + clip.high);
    // A tie means ρ is inside the clip range (or Ã = 0): the gradient flows.
    let (mut loss, mut grad, mut clipped) = if l2 > l1 {
        (l2, 0.0, true)
    } else {
        (l1, -adv * ratio, false)
    };
    if adv < 0.0 {
        let l3 = -adv * clip.dual;
        if l3 < loss {
            loss = l3;
            grad = 0.0;
            clipped = true;
        }
    }
    TokenLoss {
        loss,
        grad,
        clipped,
        ratio,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-9, "{a} vs {b}");
    }

    #[test]
    fn advantages_by_hand() {
        // rewards 1, −1, −1, −1: mean −0.5, unbiased var (2.25 + 3·0.25)/3 = 1, std 1
        let a = group_advantages(&[1.0, -1.0, -1.0, -1.0]);
        close(a[0], 1.5 / (1.0 + 1e-6));
        close(a[1], -0.5 / (1.0 + 1e-6));
        assert_eq!(group_advantages(&[1.0, 1.0]), vec![0.0, 0.0]);
        assert_eq!(group_advantages(&[1.0]), vec![0.0]);
        // two samples ±1: mean 0, var 2, std √2
        let a = group_advantages(&[1.0, -1.0]);
        close(a[0], 1.0 / (2f64.sqrt() + 1e-6));
    }

    #[test]
    fn dynamic_sampling_filter() {
        assert!(!is_informative(&[1.0, 1.0, 1.0]));
        assert!(!is_informative(&[-1.0, -1.0]));
        assert!(!is_informative(&[1.0]));
        assert!(is_informative(&[1.0, -1.0, 1.0]));
    }

    #[test]
    fn overlong_by_hand() {
        assert_eq!(overlong_penalty(80, 100, 20), 0.0);
        close(overlong_penalty(90, 100, 20), -0.5);
        close(overlong_penalty(100, 100, 20), -1.0);
        assert_eq!(overlong_penalty(101, 100, 20), -1.0);
        assert_eq!(overlong_penalty(1000, 100, 0), 0.0);
    }

    #[test]
    fn weights_by_hand() {
        let lp = vec![vec![0.5f64.ln(), 0.1f64.ln()], vec![0.9f64.ln()]];
        assert_eq!(
            token_weights(Reweight::None, &lp),
            vec![vec![1.0, 1.0], vec![1.0]]
        );
        let w = token_weights(Reweight::Lowprob { alpha: 0.2 }, &lp);
        close(w[0][0], 1.1); // 1 + 0.2·0.5
        close(w[0][1], 1.18); // 1 + 0.2·0.9
        close(w[1][0], 1.02); // 1 + 0.2·0.1
        let w = token_weights(Reweight::Highprob { c: 0.5 }, &lp);
        close(w[0][0], 0.75); // 0.5 + 0.5·0.5
        close(w[0][1], 0.55);
        close(w[1][0], 0.95);
        // PPL_0 = exp(−(ln .5 + ln .1)/2) = 1/√0.05 = 4.4721; PPL_1 = 1/0.9 = 1.1111
        let w = token_weights(Reweight::Ppl { alpha: 0.2 }, &lp);
        let (p0, p1) = (1.0 / 0.05f64.sqrt(), 1.0 / 0.9);
        let mean = (p0 + p1) / 2.0;
        close(w[0][0], 0.8 + 0.2 * p0 / mean);
        close(w[0][1], w[0][0]);
        close(w[1][0], 0.8 + 0.2 * p1 / mean);
        // mean weight 1 within the group (per response)
        close((w[0][0] + w[1][0]) / 2.0, 1.0);
    }

    #[test]
    fn dapo_unclipped_inside_the_range() {
        let c = ClipParams::default();
        let t = dapo_token(0.1f64.ln() + 0.1, 0.1f64.ln(), 2.0, &c);
        let rho = 0.1f64.exp();
        close(t.ratio, rho);
        close(t.loss, -2.0 * rho);
        close(t.grad, -2.0 * rho);
        assert!(!t.clipped);
        // on-policy: ρ = 1, loss −Ã, gradient −Ã
        let t = dapo_token(-3.0, -3.0, -0.5, &c);
        close(t.loss, 0.5);
        close(t.grad, 0.5);
    }

    #[test]
    fn dapo_clips_asymmetrically() {
        let c = ClipParams::default();
        // Ã > 0, ρ = 1.5 > 1.28: loss −1.28·Ã, no gradient
        let t = dapo_token(1.5f64.ln(), 0.0, 1.0, &c);
        close(t.loss, -1.28);
        assert_eq!(t.grad, 0.0);
        assert!(t.clipped);
        // Ã > 0, ρ = 1.25 is inside clip-higher (would be clipped at 1.2)
        let t = dapo_token(1.25f64.ln(), 0.0, 1.0, &c);
        close(t.loss, -1.25);
        close(t.grad, -1.25);
        // Ã > 0, ρ = 0.5 < 0.8: the unclipped term is larger, gradient flows
        let t = dapo_token(0.5f64.ln(), 0.0, 1.0, &c);
        close(t.loss, -0.5);
        close(t.grad, -0.5);
        // Ã < 0, ρ = 0.5 < 0.8: clipped at 0.8, loss 0.8·|Ã|, no gradient
        let t = dapo_token(0.5f64.ln(), 0.0, -1.0, &c);
        close(t.loss, 0.8);
        assert_eq!(t.grad, 0.0);
        // Ã < 0, ρ = 2: unclipped term larger (2 > 1.28), gradient −Ãρ = 2
        let t = dapo_token(2f64.ln(), 0.0, -1.0, &c);
        close(t.loss, 2.0);
        close(t.grad, 2.0);
    }

    #[test]
    fn dapo_dual_clip() {
        let c = ClipParams::default();
        // Ã < 0, ρ = 20 > dual 10: loss capped at 10·|Ã|, no gradient
        let t = dapo_token(20f64.ln(), 0.0, -0.5, &c);
        close(t.loss, 5.0);
        assert_eq!(t.grad, 0.0);
        assert!(t.clipped);
        // Ã > 0 is never dual-clipped: ρ = 20 is clipped high instead
        let t = dapo_token(20f64.ln(), 0.0, 0.5, &c);
        close(t.loss, -0.64);
    }

    /// The analytic gradient equals a finite difference of the loss.
    #[test]
    fn dapo_gradient_is_the_derivative() {
        let c = ClipParams::default();
        for &(lp, old, adv) in &[
            (-1.0, -1.1, 1.3),
            (-1.0, -0.9, -0.7),
            (-2.0, -2.6, 0.4),
            (-0.1, -0.12, -2.0),
        ] {
            let h = 1e-6;
            let fd = (dapo_token(lp + h, old, adv, &c).loss
                - dapo_token(lp - h, old, adv, &c).loss)
                / (2.0 * h);
            let g = dapo_token(lp, old, adv, &c).grad;
            assert!((fd - g).abs() < 1e-6, "{lp} {old} {adv}: {fd} vs {g}");
        }
    }
}

//! One token's decision, from full-vocabulary log-probs: propose, gate,
//! re-sample. The lockstep and the speculative loop both call exactly these
//! functions with the same random keys, which is what makes them agree token
//! for token.

use crate::sampler::{extrapolate, uniform, Distribution, GateInput, Pair, Purpose};

use super::DecodeError;

use super::config::{DecodeConfig, Mode};

/// What happened at one position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// The proposer's sample (for `global`, the chosen token).
    pub proposed: u32,
    /// The token kept.
    pub chosen: u32,
    /// Whether the gate fired.
    pub fired: bool,
    /// Δlog p of the proposal, when both models were evaluated.
    pub dlogp: Option<f64>,
}

/// A decision and the π_X it was drawn from, when it was (the gate fired in
/// `extrapolate`, or `global`), so reporting its log-probs needs no second
/// extrapolation.
#[derive(Debug, Clone, PartialEq)]
pub struct Decided {
    pub decision: Decision,
    pub extrapolated: Option<Vec<f64>>,
}

impl From<Decision> for Decided {
    fn from(decision: Decision) -> Decided {
        Decided {
            decision,
            extrapolated: None,
        }
    }
}

/// The proposer's sample at `pos` of sequence `seq` (from the proposer's
/// log-probs plus the configuration's logit bias).
pub fn propose(cfg: &DecodeConfig, lp: &[f64], seq: u64, pos: u64) -> Result<u32, DecodeError> {
    let lp = cfg.logit_bias().apply(lp);
    let dist = Distribution::from_logprobs(&lp, cfg.sampling())?;
    Ok(dist.sample(uniform(cfg.seed(), seq, pos, Purpose::Propose)))
}

/// The decision at one position given the proposal. A side of `lp` is
/// `None` for a model the mode does not evaluate.
pub fn decide(
    cfg: &DecodeConfig,
    lp: Pair<Option<&[f64]>>,
    proposed: u32,
    seq: u64,
    pos: u64,
) -> Result<Decided, DecodeError> {
    let Pair {
        base: lp_b,
        rl: lp_r,
    } = match (cfg.mode(), lp.both()) {
        (Mode::Base | Mode::Rl, both) => {
            let dlogp = both.map(|lp| lp.rl[proposed as usize] - lp.base[proposed as usize]);
            return Ok(Decision {
                proposed,
                chosen: proposed,
                fired: false,
                dlogp,
            }
            .into());
        }
        (_, Some(both)) => both,
        _ => return Err(missing()),
    };
    let t = proposed as usize;
    let dlogp = lp_r[t] - lp_b[t];
    let fired = match cfg.mode() {
        Mode::Global => true,
        _ => cfg.gate().fires(
            &gate_view(cfg, dlogp, Pair::new(lp_b, lp_r)),
            uniform(cfg.seed(), seq, pos, Purpose::Gate),
        ),
    };
    if !fired {
        return Ok(Decision {
            proposed,
            chosen: proposed,
            fired,
            dlogp: Some(dlogp),
        }
        .into());
    }
    let (chosen, extrapolated) = match cfg.mode() {
        Mode::Replace => (resample(cfg, lp_r, seq, pos)?, None),
        _ => {
            let mut lp_x = vec![0.0; lp_r.len()];
            extrapolate(Pair::new(lp_b, lp_r), cfg.gamma(), &mut lp_x)?;
            (resample(cfg, &lp_x, seq, pos)?, Some(lp_x))
        }
    };
    let decision = if cfg.mode() == Mode::Global {
        // there is no proposal: report the sampled token's Δlog p
        let c = chosen as usize;
        Decision {
            proposed: chosen,
            chosen,
            fired,
            dlogp: Some(lp_r[c] - lp_b[c]),
        }
    } else {
        Decision {
            proposed,
            chosen,
            fired,
            dlogp: Some(dlogp),
        }
    };
    Ok(Decided {
        decision,
        extrapolated,
    })
}

/// A whole step: propose (or, for `global`, sample π_X) and decide.
pub fn step(
    cfg: &DecodeConfig,
    lp: Pair<Option<&[f64]>>,
    seq: u64,
    pos: u64,
) -> Result<Decided, DecodeError> {
    let lp_prop = match cfg.proposer_side() {
        Some(side) => *lp.get(side),
        None => {
            // global: the "proposal" is irrelevant; decide samples π_X.
            return decide(cfg, lp, 0, seq, pos);
        }
    };
    let lp_prop = lp_prop.ok_or_else(missing)?;
    let proposed = propose(cfg, lp_prop, seq, pos)?;
    decide(cfg, lp, proposed, seq, pos)
}

/// The distribution a [`step`] draws from, as one vector of probabilities
/// over the vocabulary: with P the proposer's truncated distribution, f(y)
/// the chance the gate fires on proposal y and R the re-sampling
/// distribution (π_RL for `replace`, π_X for `extrapolate`; all three with
/// the configuration's logit bias and truncation, as the draws use them),
///
/// ```text
/// q(v) = P(v) · (1 − f(v)) + (Σ_y P(y) f(y)) · R(v)
/// ```
///
/// which is exactly the law of "propose, gate, re-sample where it fired"
/// (`base` and `rl` are P alone, `global` is R). A host can sample from it
/// with any sampler (the plugin's composable mode), at the cost of the keyed
/// draws: the distribution is the same, the tokens are not.
pub fn mixture(cfg: &DecodeConfig, lp: Pair<Option<&[f64]>>) -> Result<Vec<f64>, DecodeError> {
    let n = lp.base.or(lp.rl).map_or(0, <[f64]>::len);
    // as `propose` and `resample` draw: the logit bias on, then truncation
    let biased =
        |lp: &[f64]| Distribution::from_logprobs(&cfg.logit_bias().apply(lp), cfg.sampling());
    let dense = |d: &Distribution| {
        let mut q = vec![0.0; n];
        for &(v, p) in d.candidates() {
            q[v as usize] = p;
        }
        q
    };
    if let (Mode::Base | Mode::Rl, Some(side)) = (cfg.mode(), cfg.proposer_side()) {
        // one model alone: its own distribution
        let lp_p = (*lp.get(side)).ok_or_else(missing)?;
        return Ok(dense(&biased(lp_p)?));
    }
    let both = lp.both().ok_or_else(missing)?;
    let resampled = match cfg.mode() {
        Mode::Replace => biased(both.rl)?,
        _ => {
            let mut lp_x = vec![0.0; n];
            extrapolate(both, cfg.gamma(), &mut lp_x)?;
            biased(&lp_x)?
        }
    };
    let Some(side) = cfg.proposer_side() else {
        return Ok(dense(&resampled)); // global
    };
    let proposal = biased(both.get(side))?;
    // the chance the gate fires: the same for every proposal unless the
    // criterion reads the proposed token (as `decide`, over its uniform draw)
    let gate = cfg.gate();
    let fire = |dlogp: f64| gate.fire_probability(&gate_view(cfg, dlogp, both));
    let constant = (!gate.reads_proposal()).then(|| fire(0.0));
    let mut q = vec![0.0; n];
    let mut fired = 0.0;
    for &(y, p) in proposal.candidates() {
        let t = y as usize;
        let f = constant.unwrap_or_else(|| fire(both.rl[t] - both.base[t]));
        q[y as usize] += p * (1.0 - f);
        fired += p * f;
    }
    for &(v, p) in resampled.candidates() {
        q[v as usize] += fired * p;
    }
    Ok(q)
}

/// The gate's view of a position whose proposal has Δlog p `dlogp`: what
/// both [`decide`] and [`mixture`] feed the gate. Entropies and KLs
/// (full-vocabulary sums) are computed only for criteria that read them.
fn gate_view(cfg: &DecodeConfig, dlogp: f64, lp: Pair<&[f64]>) -> GateInput {
    let (lp_b, lp_r) = (lp.base, lp.rl);
    let full = cfg.gate().needs_distribution_metrics();
    let mut input = GateInput {
        dlogp_proposal: dlogp,
        entropy_base: 0.0,
        entropy_rl: 0.0,
        kl: 0.0,
        kl_r: 0.0,
        js: 0.0,
    };
    if full {
        let (mut hb, mut hr, mut kl, mut kl_r) = (0.0, 0.0, 0.0, 0.0);
        for (&b, &r) in lp_b.iter().zip(lp_r) {
            let (pb, pr) = (b.exp(), r.exp());
            if pb > 0.0 {
                hb -= pb * b;
                kl_r += pb * (b - r);
            }
            if pr > 0.0 {
                hr -= pr * r;
                kl += pr * (r - b);
            }
        }
        input.entropy_base = hb;
        input.entropy_rl = hr;
        input.kl = kl;
        input.kl_r = kl_r;
        input.js = 0.5 * (kl + kl_r);
    }
    input
}

/// Draws the replacement token. The draw reuses the proposal's random number
/// unless the gate read the proposed token: a gate that fires independently
/// of that number leaves it uniform, and sharing it couples the trajectories
/// (common random numbers). So `replace` with `always` gives exactly
/// `--mode rl`'s tokens, `extrapolate` with `always` exactly `global`'s, and
/// an intervention sweep compares criteria on the same draws. The `dlogp`
/// gate selects draws by the proposal, so it gets a fresh one. The logit
/// bias applies here as to proposals (the gate reads unbiased log-probs).
fn resample(cfg: &DecodeConfig, lp: &[f64], seq: u64, pos: u64) -> Result<u32, DecodeError> {
    let purpose = if cfg.mode() == Mode::Global || !cfg.gate().reads_proposal() {
        Purpose::Propose
    } else {
        Purpose::Resample
    };
    let lp = cfg.logit_bias().apply(lp);
    let dist = Distribution::from_logprobs(&lp, cfg.sampling())?;
    Ok(dist.sample(uniform(cfg.seed(), seq, pos, purpose)))
}

fn missing() -> DecodeError {
    DecodeError::Numerics("a model the mode needs was not evaluated".to_string())
}

#[cfg(test)]
mod tests {
    use super::{mixture, step};
    use crate::decode::{DecodeConfig, Mode, Proposer};
    use crate::sampler::{log_softmax, Criterion, Gate, Pair, SamplingParams};

    fn lp(logits: &[f32]) -> Vec<f64> {
        let mut out = vec![0.0; logits.len()];
        log_softmax(logits, &mut out).unwrap();
        out
    }

    /// The one-step mixture is the law of the two-step procedure: for every
    /// mode, proposer and kind of criterion, 60 000 keyed draws of `step`
    /// pass a chi-square test against `mixture` (and the mixture sums to 1).
    #[test]
    fn mixture_is_the_law_of_propose_gate_resample() {
        let base = lp(&[2.0, 1.5, 0.2, -0.5, 1.0, -1.0, 0.4, 0.0]);
        let rl = lp(&[0.5, 2.2, 1.4, -0.2, -1.5, 0.3, 0.4, 1.1]);
        let lps = Pair::new(Some(&base[..]), Some(&rl[..]));
        let sampling = SamplingParams {
            temperature: 1.3,
            top_k: 0,
            top_p: 0.9,
        };
        let cases = [
            (Mode::Extrapolate, Proposer::Base, Criterion::Dlogp, -0.3),
            (Mode::Extrapolate, Proposer::Rl, Criterion::Dlogp, -0.3),
            (Mode::Replace, Proposer::Base, Criterion::Dlogp, 0.2),
            (Mode::Replace, Proposer::Base, Criterion::Random, 0.35),
            (Mode::Extrapolate, Proposer::Base, Criterion::Kl, 0.01),
            (Mode::Extrapolate, Proposer::Base, Criterion::Never, 0.0),
            (Mode::Global, Proposer::Base, Criterion::Always, 0.0),
            (Mode::Base, Proposer::Base, Criterion::Dlogp, -0.3),
            (Mode::Rl, Proposer::Base, Criterion::Dlogp, -0.3),
        ];
        let n = 60_000;
        for (mode, proposer, criterion, tau) in cases {
            let gate = Gate::new(criterion, tau).unwrap();
            let cfg = DecodeConfig::new(mode, proposer, gate, 2.0, sampling, 5).unwrap();
            let q = mixture(&cfg, lps).unwrap();
            assert!(
                (q.iter().sum::<f64>() - 1.0).abs() < 1e-12,
                "{mode:?}: {q:?}"
            );
            let mut counts = vec![0usize; q.len()];
            for key in 0..n {
                counts[step(&cfg, lps, key, 3).unwrap().decision.chosen as usize] += 1;
            }
            let mut chi2 = 0.0;
            let mut dof = 0;
            for (v, &c) in counts.iter().enumerate() {
                let e = q[v] * n as f64;
                if e == 0.0 {
                    assert_eq!(c, 0, "{mode:?} {criterion:?}: token {v} is impossible");
                    continue;
                }
                chi2 += (c as f64 - e).powi(2) / e;
                dof += 1;
            }
            // χ² with ≤ 7 degrees of freedom: 24.3 is its 0.999 quantile
            assert!(chi2 < 24.3, "{mode:?} {proposer:?} {criterion:?}: χ² {chi2} over {dof} cells, {counts:?} vs {q:?}");
        }
    }
}

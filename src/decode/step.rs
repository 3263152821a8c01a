//! One token's decision, from full-vocabulary log-probs: propose, gate,
//! re-sample. The lockstep and the speculative loop both call exactly these
//! functions with the same random keys, which is what makes them agree token
//! for token.

use crate::sampler::{extrapolate, uniform, Distribution, GateInput, Purpose};

use super::DecodeError;

use super::config::{DecodeConfig, Mode, Side};

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

/// The proposer's sample at `pos` of sequence `seq` (from the proposer's
/// log-probs plus the configuration's logit bias).
pub fn propose(cfg: &DecodeConfig, lp: &[f64], seq: u64, pos: u64) -> Result<u32, DecodeError> {
    let lp = cfg.logit_bias().apply(lp);
    let dist = Distribution::from_logprobs(&lp, cfg.sampling())?;
    Ok(dist.sample(uniform(cfg.seed(), seq, pos, Purpose::Propose)))
}

/// The decision at one position given the proposal. `lp_base` / `lp_rl` are
/// `None` for a model the mode does not evaluate.
pub fn decide(
    cfg: &DecodeConfig,
    lp_base: Option<&[f64]>,
    lp_rl: Option<&[f64]>,
    proposed: u32,
    seq: u64,
    pos: u64,
) -> Result<Decision, DecodeError> {
    let (lp_b, lp_r) = match (cfg.mode(), lp_base, lp_rl) {
        (Mode::Base | Mode::Rl, _, _) => {
            return Ok(Decision {
                proposed,
                chosen: proposed,
                fired: false,
                dlogp: match (lp_base, lp_rl) {
                    (Some(b), Some(r)) => Some(r[proposed as usize] - b[proposed as usize]),
                    _ => None,
                },
            })
        }
        (_, Some(b), Some(r)) => (b, r),
        _ => return Err(missing()),
    };
    let t = proposed as usize;
    let dlogp = lp_r[t] - lp_b[t];
    let fired = match cfg.mode() {
        Mode::Global => true,
        _ => {
            let input = gate_input(dlogp, lp_b, lp_r, cfg.gate().needs_distribution_metrics());
            cfg.gate()
                .fires(&input, uniform(cfg.seed(), seq, pos, Purpose::Gate))
        }
    };
    if !fired {
        return Ok(Decision {
            proposed,
            chosen: proposed,
            fired,
            dlogp: Some(dlogp),
        });
    }
    let chosen = match cfg.mode() {
        Mode::Replace => resample(cfg, lp_r, seq, pos)?,
        _ => {
            let mut lp_x = vec![0.0; lp_r.len()];
            extrapolate(lp_r, lp_b, cfg.gamma(), &mut lp_x)?;
            resample(cfg, &lp_x, seq, pos)?
        }
    };
    if cfg.mode() == Mode::Global {
        // there is no proposal: report the sampled token's Δlog p
        let c = chosen as usize;
        return Ok(Decision {
            proposed: chosen,
            chosen,
            fired,
            dlogp: Some(lp_r[c] - lp_b[c]),
        });
    }
    Ok(Decision {
        proposed,
        chosen,
        fired,
        dlogp: Some(dlogp),
    })
}

/// A whole step: propose (or, for `global`, sample π_X) and decide.
pub fn step(
    cfg: &DecodeConfig,
    lp_base: Option<&[f64]>,
    lp_rl: Option<&[f64]>,
    seq: u64,
    pos: u64,
) -> Result<Decision, DecodeError> {
    let lp_prop = match cfg.proposer_side() {
        Some(Side::Base) => lp_base,
        Some(Side::Rl) => lp_rl,
        None => {
            // global: the "proposal" is irrelevant; decide samples π_X.
            return decide(cfg, lp_base, lp_rl, 0, seq, pos);
        }
    };
    let lp_prop = lp_prop.ok_or_else(missing)?;
    let proposed = propose(cfg, lp_prop, seq, pos)?;
    decide(cfg, lp_base, lp_rl, proposed, seq, pos)
}

/// The gate's view of a position. Entropies and KLs (full-vocabulary sums)
/// are computed only for criteria that read them.
fn gate_input(dlogp: f64, lp_b: &[f64], lp_r: &[f64], full: bool) -> GateInput {
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

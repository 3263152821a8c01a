//! The intervention gate (METHOD.md §2): at each step, does the RL model
//! replace the proposer's token?

use serde::{Deserialize, Serialize};

use super::error::SamplerError;
use super::metrics::TokenMetrics;

/// When to intervene. Metrics are those of [`TokenMetrics`] at the current
/// step; "proposed token" is the token the proposing model just sampled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Criterion {
    /// Δlog p(proposed token) ≤ τ: the RL model suppressed it (τ < 0 in the paper).
    Dlogp,
    /// Entropy of the base distribution H(π_B) ≥ τ.
    Entropy,
    /// Entropy of the RL distribution H(π_R) ≥ τ.
    #[serde(alias = "entropy_rl")]
    #[value(alias = "entropy_rl")]
    EntropyRl,
    /// KL(π_R ‖ π_B) ≥ τ.
    Kl,
    /// KL(π_B ‖ π_R) ≥ τ.
    #[serde(alias = "kl_r")]
    #[value(alias = "kl_r")]
    KlR,
    /// ½ (KL + reverse KL) ≥ τ.
    Js,
    /// With probability τ, independently of the models.
    Random,
    /// Never intervene (the proposer alone).
    Never,
    /// Always intervene (the RL model alone, or global extrapolation).
    Always,
}

impl std::fmt::Display for Criterion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Criterion::Dlogp => "dlogp",
            Criterion::Entropy => "entropy",
            Criterion::EntropyRl => "entropy-rl",
            Criterion::Kl => "kl",
            Criterion::KlR => "kl-r",
            Criterion::Js => "js",
            Criterion::Random => "random",
            Criterion::Never => "never",
            Criterion::Always => "always",
        })
    }
}

/// What the gate looks at for one step. For [`Criterion::Dlogp`] only
/// `dlogp_proposal` is read, for `random`/`never`/`always` nothing is.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct GateInput {
    /// log π_R(y) − log π_B(y) of the proposed token y.
    pub dlogp_proposal: f64,
    /// H(π_B)
    pub entropy_base: f64,
    /// H(π_R)
    pub entropy_rl: f64,
    /// KL(π_R ‖ π_B)
    pub kl: f64,
    /// KL(π_B ‖ π_R)
    pub kl_r: f64,
    /// ½ (kl + kl_r)
    pub js: f64,
}

impl From<&TokenMetrics> for GateInput {
    /// `m` must be the metrics of the proposed token.
    fn from(m: &TokenMetrics) -> Self {
        GateInput {
            dlogp_proposal: m.dlogp,
            entropy_base: m.entropy_base,
            entropy_rl: m.entropy_rl,
            kl: m.kl,
            kl_r: m.kl_r,
            js: m.js,
        }
    }
}

/// A validated criterion with its threshold τ.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Gate {
    criterion: Criterion,
    tau: f64,
}

impl Gate {
    /// Validates τ for the criterion: `random` needs τ ∈ [0, 1]; `dlogp` and the
    /// metric criteria need a finite τ; `never`/`always` ignore it (any value,
    /// NaN included).
    pub fn new(criterion: Criterion, tau: f64) -> Result<Gate, SamplerError> {
        match criterion {
            Criterion::Never | Criterion::Always => {}
            Criterion::Random => {
                if !(0.0..=1.0).contains(&tau) {
                    return Err(SamplerError::TauNotProbability { value: tau });
                }
            }
            _ => {
                if !tau.is_finite() {
                    return Err(SamplerError::TauNotFinite {
                        criterion,
                        value: tau,
                    });
                }
            }
        }
        Ok(Gate { criterion, tau })
    }

    pub fn criterion(&self) -> Criterion {
        self.criterion
    }

    /// Whether the decision reads the proposed token (only `dlogp` does; the
    /// other criteria look at the two distributions or at nothing). When it
    /// does not, firing is independent of the proposal's random draw, so the
    /// re-sample may reuse that draw and stay exactly distributed.
    pub fn reads_proposal(&self) -> bool {
        self.criterion == Criterion::Dlogp
    }

    pub fn tau(&self) -> f64 {
        self.tau
    }

    /// A people-facing warning for settings that are allowed but probably
    /// unintended (for the CLI to log): `dlogp` with τ > 0 also replaces tokens
    /// the RL model promoted.
    pub fn warning(&self) -> Option<String> {
        (self.criterion == Criterion::Dlogp && self.tau > 0.0).then(|| {
            format!(
                "tau {} > 0 with criterion dlogp also replaces tokens the RL model \
                 promoted; the paper uses tau < 0 (e.g. -0.35)",
                self.tau
            )
        })
    }

    /// Whether the gate fires: `dlogp`: Δlog p(proposed) ≤ τ; the entropy, KL
    /// and JS criteria: metric ≥ τ; `random`: `u < τ` (pass
    /// [`uniform`](super::uniform) with [`Purpose::Gate`](super::Purpose::Gate));
    /// `never`: false; `always`: true. `u` is read only by `random`. A NaN
    /// metric never fires.
    pub fn fires(&self, m: &GateInput, u: f64) -> bool {
        u < self.fire_probability(m)
    }

    /// The chance that [`fires`](Self::fires) is true at this position over
    /// its uniform draw `u` in [0, 1): τ (clamped to [0, 1]) for `random`,
    /// 0 or 1 for every other criterion. The composable distribution
    /// ([`crate::decode::step::mixture`]) weighs the re-sampling by it.
    pub fn fire_probability(&self, m: &GateInput) -> f64 {
        let tau = self.tau;
        let rule = match self.criterion {
            Criterion::Dlogp => m.dlogp_proposal <= tau,
            Criterion::Entropy => m.entropy_base >= tau,
            Criterion::EntropyRl => m.entropy_rl >= tau,
            Criterion::Kl => m.kl >= tau,
            Criterion::KlR => m.kl_r >= tau,
            Criterion::Js => m.js >= tau,
            Criterion::Random => return tau.clamp(0.0, 1.0),
            Criterion::Never => false,
            Criterion::Always => true,
        };
        if rule {
            1.0
        } else {
            0.0
        }
    }

    /// True when [`fires`](Self::fires) reads a full-distribution statistic
    /// (entropy, KL, JS). `dlogp` needs only two log-probs, `random`, `never`
    /// and `always` none, so the decoder can skip the full-vocabulary pass.
    pub fn needs_distribution_metrics(&self) -> bool {
        matches!(
            self.criterion,
            Criterion::Entropy
                | Criterion::EntropyRl
                | Criterion::Kl
                | Criterion::KlR
                | Criterion::Js
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::ValueEnum;

    const ALL: [Criterion; 9] = [
        Criterion::Dlogp,
        Criterion::Entropy,
        Criterion::EntropyRl,
        Criterion::Kl,
        Criterion::KlR,
        Criterion::Js,
        Criterion::Random,
        Criterion::Never,
        Criterion::Always,
    ];

    /// `fires` is "u below the fire probability" for every criterion: the
    /// keyed draw and the composable mixture read the gate the same way.
    #[test]
    fn fires_is_a_draw_below_the_fire_probability() {
        for c in ALL {
            for tau in [-0.5, 0.0, 0.3, 1.5] {
                let Ok(gate) = Gate::new(c, tau) else {
                    continue; // τ out of range for this criterion
                };
                for v in [-1.0, 0.0, 0.3, 2.0] {
                    let m = all(v);
                    let f = gate.fire_probability(&m);
                    let hits = (0..1000)
                        .filter(|i| gate.fires(&m, (*i as f64 + 0.5) / 1000.0))
                        .count();
                    assert!(
                        (hits as f64 / 1000.0 - f).abs() <= 1e-3,
                        "{c:?} τ {tau} v {v}"
                    );
                    if c == Criterion::Random {
                        assert_eq!(f, tau.clamp(0.0, 1.0));
                    } else {
                        assert!(f == 0.0 || f == 1.0);
                    }
                }
            }
        }
    }

    /// Every metric set to `v`.
    fn all(v: f64) -> GateInput {
        GateInput {
            dlogp_proposal: v,
            entropy_base: v,
            entropy_rl: v,
            kl: v,
            kl_r: v,
            js: v,
        }
    }

    /// Only the field `c` reads is `v`; every other field holds a decoy that
    /// would stop the gate firing if it were read instead.
    fn only(c: Criterion, v: f64, tau: f64) -> GateInput {
        let decoy = if c == Criterion::Dlogp {
            tau + 10.0
        } else {
            tau - 10.0
        };
        let mut m = all(decoy);
        let field = match c {
            Criterion::Dlogp => &mut m.dlogp_proposal,
            Criterion::Entropy => &mut m.entropy_base,
            Criterion::EntropyRl => &mut m.entropy_rl,
            Criterion::Kl => &mut m.kl,
            Criterion::KlR => &mut m.kl_r,
            Criterion::Js => &mut m.js,
            _ => return m,
        };
        *field = v;
        m
    }

    #[test]
    fn dlogp_fires_at_or_below_tau() {
        let g = Gate::new(Criterion::Dlogp, -0.35).unwrap();
        let at = |v| g.fires(&only(Criterion::Dlogp, v, -0.35), 0.99);
        assert!(at(-0.35), "equality fires");
        assert!(at(-0.36));
        assert!(at(-5.0));
        assert!(!at(-0.34));
        assert!(!at(0.0));
        assert!(!at(f64::NAN));
    }

    #[test]
    fn metric_criteria_fire_at_or_above_tau_on_their_own_field() {
        for c in [
            Criterion::Entropy,
            Criterion::EntropyRl,
            Criterion::Kl,
            Criterion::KlR,
            Criterion::Js,
        ] {
            let tau = 0.5;
            let g = Gate::new(c, tau).unwrap();
            // `only` makes every other field a decoy that would flip the answer.
            assert!(g.fires(&only(c, 0.5, tau), 0.0), "{c}: equality fires");
            assert!(g.fires(&only(c, 0.51, tau), 0.0), "{c}");
            assert!(!g.fires(&only(c, 0.49, tau), 0.0), "{c}");
            assert!(!g.fires(&only(c, f64::NAN, tau), 0.0), "{c}");
            assert!(g.needs_distribution_metrics(), "{c}");
        }
    }

    #[test]
    fn random_never_always() {
        let g = Gate::new(Criterion::Random, 0.25).unwrap();
        let m = all(0.0);
        assert!(g.fires(&m, 0.0));
        assert!(g.fires(&m, 0.249_999));
        assert!(!g.fires(&m, 0.25), "u < tau is strict");
        assert!(!g.fires(&m, 0.9));
        // The metrics are not read.
        assert!(g.fires(&all(1e9), 0.1));
        assert!(!g.fires(&all(-1e9), 0.3));
        let zero = Gate::new(Criterion::Random, 0.0).unwrap();
        assert!(!zero.fires(&m, 0.0));
        let one = Gate::new(Criterion::Random, 1.0).unwrap();
        assert!(one.fires(&m, 1.0 - f64::EPSILON));

        let never = Gate::new(Criterion::Never, f64::NAN).unwrap();
        let always = Gate::new(Criterion::Always, f64::INFINITY).unwrap();
        for v in [-1e9, 0.0, 1e9, f64::NAN] {
            for u in [0.0, 0.5, 0.999] {
                assert!(!never.fires(&all(v), u));
                assert!(always.fires(&all(v), u));
            }
        }
    }

    #[test]
    fn distribution_metrics_needed_only_for_metric_criteria() {
        let needs: Vec<bool> = ALL
            .iter()
            .map(|&c| Gate::new(c, 0.5).unwrap().needs_distribution_metrics())
            .collect();
        assert_eq!(
            needs,
            [false, true, true, true, true, true, false, false, false]
        );
    }

    #[test]
    fn tau_validation() {
        for tau in [-0.1, 1.1, f64::NAN, f64::INFINITY] {
            let err = Gate::new(Criterion::Random, tau).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "tau for criterion random is a probability and must be in [0, 1], got {tau}"
                )
            );
        }
        for c in ALL {
            let r = Gate::new(c, f64::NAN);
            match c {
                Criterion::Never | Criterion::Always => assert!(r.is_ok()),
                _ => assert!(r.is_err(), "{c}"),
            }
        }
        let err = Gate::new(Criterion::Kl, f64::NEG_INFINITY).unwrap_err();
        assert_eq!(
            err.to_string(),
            "tau must be finite for criterion kl, got -inf"
        );
        // Positive dlogp thresholds are allowed, with a warning.
        let g = Gate::new(Criterion::Dlogp, 0.2).unwrap();
        assert!(g.warning().unwrap().contains("tau 0.2 > 0"));
        assert!(Gate::new(Criterion::Dlogp, -0.3)
            .unwrap()
            .warning()
            .is_none());
        assert!(Gate::new(Criterion::Kl, 0.2).unwrap().warning().is_none());
    }

    #[test]
    fn names_match_across_clap_serde_display() {
        for c in ALL {
            let name = c.to_string();
            let clap_name = c.to_possible_value().unwrap().get_name().to_owned();
            assert_eq!(clap_name, name);
            assert_eq!(serde_json::to_string(&c).unwrap(), format!("\"{name}\""));
            assert_eq!(Criterion::from_str(&name, false).unwrap(), c);
        }
        assert_eq!(
            serde_json::from_str::<Criterion>("\"kl_r\"").unwrap(),
            Criterion::KlR
        );
        assert_eq!(
            Criterion::from_str("entropy_rl", false).unwrap(),
            Criterion::EntropyRl
        );
    }

    #[test]
    fn gate_input_from_token_metrics() {
        let tm = TokenMetrics {
            logp_base: -1.0,
            logp_rl: -2.0,
            dlogp: -1.0,
            entropy_base: 0.1,
            entropy_rl: 0.2,
            kl: 0.3,
            kl_r: 0.4,
            js: 0.35,
            rank_base: 0,
            rank_rl: 1,
        };
        let gi = GateInput::from(&tm);
        assert_eq!(
            gi,
            GateInput {
                dlogp_proposal: -1.0,
                entropy_base: 0.1,
                entropy_rl: 0.2,
                kl: 0.3,
                kl_r: 0.4,
                js: 0.35
            }
        );
    }
}

//! What to decode: the mode, who proposes, the gate and the sampling
//! parameters, in two stages (STYLE.md's LowArgs → HiArgs):
//!
//! - [`ConfigPatch`]: what one edge says, every field optional: CLI flags,
//!   a configuration name (`extrapolate:gamma=0.2:tau=-0.5`), a request's
//!   `dlogp` body object, the plugin's parameters. Patches merge, later
//!   ones winning.
//! - [`DecodeConfig`]: the resolved, validated configuration the engine runs
//!   on. Its fields are private; it is made only by [`ConfigPatch::apply`]
//!   (or [`DecodeConfig::new`]), so it is always valid. The paper's defaults
//!   live here once, in [`DecodeConfig::default`].
//!
//! A validation error names the [`Field`]; each edge renders the field in
//! its own dialect (`--gamma`, `dlogp.gamma`, `params.gamma`).

use std::fmt;
use std::str::FromStr;

use clap::ValueEnum;
use serde::{Deserialize, Serialize};

use crate::sampler::{Criterion, Gate, LogitBias, SamplerError, SamplingParams};

/// How tokens are chosen (METHOD.md §2–3).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// The base model alone.
    Base,
    /// The RL model alone.
    Rl,
    /// The proposer samples; where the gate fires, re-sample from π_RL.
    Replace,
    /// The proposer samples; where the gate fires, re-sample from
    /// π_X ∝ π_RL · exp(γ Δlog p).
    Extrapolate,
    /// π_X at every token (for comparison: the paper shows it hurts).
    Global,
}

impl Mode {
    /// The mode's name as written in names and flags.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Base => "base",
            Mode::Rl => "rl",
            Mode::Replace => "replace",
            Mode::Extrapolate => "extrapolate",
            Mode::Global => "global",
        }
    }
}

/// Which model proposes each token in `replace` / `extrapolate`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Proposer {
    /// The paper's main setting: the base proposes, the RL model steps in.
    Base,
    /// The second variant: the RL model proposes and is extrapolated.
    Rl,
}

impl Proposer {
    pub fn name(self) -> &'static str {
        match self {
            Proposer::Base => "base",
            Proposer::Rl => "rl",
        }
    }
}

pub use crate::sampler::Side;

/// The paper's settings (METHOD.md §3, §5), the defaults everywhere.
pub mod defaults {
    use super::{Criterion, Mode, Proposer};
    pub const MODE: Mode = Mode::Extrapolate;
    pub const PROPOSER: Proposer = Proposer::Base;
    pub const CRITERION: Criterion = Criterion::Dlogp;
    pub const TAU: f64 = -0.3;
    pub const GAMMA: f64 = 0.1;
    pub const TEMPERATURE: f64 = 1.0;
    pub const TOP_P: f64 = 0.7;
    pub const TOP_K: usize = 0;
    pub const SEED: u64 = 0;
}

/// The largest γ: beyond it π_X is a point mass in all but name, and
/// γ·Δlog p overflows f64 for large values (1e308 did).
pub const MAX_GAMMA: f64 = 1000.0;

/// A setting of a decoding configuration, as errors name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Field {
    Mode,
    Proposer,
    Criterion,
    Tau,
    Gamma,
    Temperature,
    TopP,
    TopK,
    Seed,
}

impl Field {
    /// Every field, in the order names print them.
    pub const ALL: [Field; 9] = [
        Field::Gamma,
        Field::Tau,
        Field::Criterion,
        Field::Proposer,
        Field::Temperature,
        Field::TopP,
        Field::TopK,
        Field::Seed,
        Field::Mode,
    ];

    /// The key in names and JSON (`top_p`).
    pub fn key(self) -> &'static str {
        match self {
            Field::Mode => "mode",
            Field::Proposer => "proposer",
            Field::Criterion => "criterion",
            Field::Tau => "tau",
            Field::Gamma => "gamma",
            Field::Temperature => "temperature",
            Field::TopP => "top_p",
            Field::TopK => "top_k",
            Field::Seed => "seed",
        }
    }

    /// The command-line flag (`--top-p`).
    pub fn flag(self) -> &'static str {
        match self {
            Field::Mode => "--mode",
            Field::Proposer => "--proposer",
            Field::Criterion => "--criterion",
            Field::Tau => "--tau",
            Field::Gamma => "--gamma",
            Field::Temperature => "--temperature",
            Field::TopP => "--top-p",
            Field::TopK => "--top-k",
            Field::Seed => "--seed",
        }
    }

    fn from_key(key: &str) -> Option<Field> {
        Some(match key {
            "mode" => Field::Mode,
            "proposer" => Field::Proposer,
            "criterion" => Field::Criterion,
            "tau" => Field::Tau,
            "gamma" => Field::Gamma,
            "temperature" | "t" => Field::Temperature,
            "top_p" | "top-p" => Field::TopP,
            "top_k" | "top-k" => Field::TopK,
            "seed" => Field::Seed,
            _ => return None,
        })
    }
}

/// A setting that is out of range, or settings that do not go together.
/// Displays as `key: reason`; edges render the field their own way.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{}: {reason}", field.key())]
pub struct ConfigError {
    pub field: Field,
    pub reason: String,
}

impl ConfigError {
    fn new(field: Field, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            field,
            reason: reason.into(),
        }
    }

    /// The message with the field written as `name` (`--gamma`, `dlogp.gamma`).
    pub fn render(&self, name: &str) -> String {
        format!("invalid {name}: {}", self.reason)
    }
}

impl From<SamplerError> for ConfigError {
    fn from(e: SamplerError) -> ConfigError {
        let field = match &e {
            SamplerError::Temperature { .. } => Field::Temperature,
            SamplerError::TopP { .. } => Field::TopP,
            SamplerError::Gamma { .. } => Field::Gamma,
            _ => Field::Tau,
        };
        ConfigError::new(field, e.to_string())
    }
}

/// A validated decoding configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodeConfig {
    mode: Mode,
    proposer: Proposer,
    gate: Gate,
    gamma: f64,
    sampling: SamplingParams,
    seed: u64,
    /// Added to the log-probs of every distribution a token is drawn from
    /// (the proposer's and the re-sampling one), never to what the gate
    /// reads; empty except where an edge sets it (the server's `logit_bias`).
    logit_bias: LogitBias,
}

impl Default for DecodeConfig {
    /// The paper's settings: extrapolate with the base proposing, the Δlog p
    /// gate at τ = −0.3, γ = 0.1, T = 1, top-p 0.7, seed 0.
    fn default() -> DecodeConfig {
        DecodeConfig {
            mode: defaults::MODE,
            proposer: defaults::PROPOSER,
            gate: Gate::new(defaults::CRITERION, defaults::TAU).expect("the default gate is valid"),
            gamma: defaults::GAMMA,
            sampling: SamplingParams {
                temperature: defaults::TEMPERATURE,
                top_k: defaults::TOP_K,
                top_p: defaults::TOP_P,
            },
            seed: defaults::SEED,
            logit_bias: LogitBias::default(),
        }
    }
}

impl DecodeConfig {
    /// Validate the parts that interact (each part validates itself).
    pub fn new(
        mode: Mode,
        proposer: Proposer,
        gate: Gate,
        gamma: f64,
        sampling: SamplingParams,
        seed: u64,
    ) -> Result<DecodeConfig, ConfigError> {
        sampling.validate()?;
        if !(gamma.is_finite() && (0.0..=MAX_GAMMA).contains(&gamma)) {
            return Err(ConfigError::new(
                Field::Gamma,
                format!("must be between 0 and {MAX_GAMMA}, got {gamma}"),
            ));
        }
        Ok(DecodeConfig {
            mode,
            proposer,
            gate,
            gamma,
            sampling,
            seed,
            logit_bias: LogitBias::default(),
        })
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    pub fn proposer(&self) -> Proposer {
        self.proposer
    }

    pub fn gate(&self) -> &Gate {
        &self.gate
    }

    pub fn gamma(&self) -> f64 {
        self.gamma
    }

    pub fn sampling(&self) -> &SamplingParams {
        &self.sampling
    }

    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// The same configuration in another mode (modes never make a valid
    /// configuration invalid).
    pub fn with_mode(mut self, mode: Mode) -> DecodeConfig {
        self.mode = mode;
        self
    }

    /// The same configuration with another seed.
    pub fn with_seed(mut self, seed: u64) -> DecodeConfig {
        self.seed = seed;
        self
    }

    /// The same configuration with these token biases (a [`LogitBias`] is
    /// valid by construction).
    pub fn with_logit_bias(mut self, bias: LogitBias) -> DecodeConfig {
        self.logit_bias = bias;
        self
    }

    pub fn logit_bias(&self) -> &LogitBias {
        &self.logit_bias
    }

    /// Whether the base model has to be evaluated.
    pub fn needs_base(&self) -> bool {
        self.mode != Mode::Rl
    }

    /// Whether the RL model has to be evaluated.
    pub fn needs_rl(&self) -> bool {
        self.mode != Mode::Base
    }

    /// The model whose own samples are the proposals, when there is one
    /// (`global` samples π_X directly).
    pub fn proposer_side(&self) -> Option<Side> {
        match (self.mode, self.proposer) {
            (Mode::Base, _) => Some(Side::Base),
            (Mode::Rl, _) => Some(Side::Rl),
            (Mode::Global, _) => None,
            (_, Proposer::Base) => Some(Side::Base),
            (_, Proposer::Rl) => Some(Side::Rl),
        }
    }

    /// Whether drafting ahead with the proposer and checking with the other
    /// model in one batch can apply: both models are needed, and a proposal
    /// stands unless the gate fires.
    pub fn can_speculate(&self) -> bool {
        matches!(self.mode, Mode::Replace | Mode::Extrapolate)
    }
}

/// Settings one edge gives, every one optional; see the module docs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigPatch {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proposer: Option<Proposer>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub criterion: Option<Criterion>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tau: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gamma: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top_k: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seed: Option<u64>,
}

impl ConfigPatch {
    /// Every setting of `cfg`.
    pub fn of(cfg: &DecodeConfig) -> ConfigPatch {
        ConfigPatch {
            mode: Some(cfg.mode),
            proposer: Some(cfg.proposer),
            criterion: Some(cfg.gate.criterion()),
            tau: Some(cfg.gate.tau()),
            gamma: Some(cfg.gamma),
            temperature: Some(cfg.sampling.temperature),
            top_p: Some(cfg.sampling.top_p),
            top_k: Some(cfg.sampling.top_k),
            seed: Some(cfg.seed),
        }
    }

    /// The settings that matter to `cfg`'s mode, as a canonical name
    /// (`extrapolate:gamma=0.1:tau=-0.3:criterion=dlogp:proposer=base`):
    /// it parses back to `cfg`'s gate and γ, sampling and seed aside.
    pub fn name_of(cfg: &DecodeConfig) -> String {
        let mut p = ConfigPatch {
            mode: Some(cfg.mode),
            ..ConfigPatch::default()
        };
        if matches!(cfg.mode, Mode::Extrapolate | Mode::Global) {
            p.gamma = Some(cfg.gamma);
        }
        if matches!(cfg.mode, Mode::Replace | Mode::Extrapolate) {
            p.tau = Some(cfg.gate.tau());
            p.criterion = Some(cfg.gate.criterion());
            p.proposer = Some(cfg.proposer);
        }
        p.to_string()
    }

    /// Whether no setting is given.
    pub fn is_empty(&self) -> bool {
        *self == ConfigPatch::default()
    }

    /// The fields this patch sets.
    pub fn fields(&self) -> Vec<Field> {
        Field::ALL.into_iter().filter(|f| self.sets(*f)).collect()
    }

    /// Whether this patch sets `field`.
    pub fn sets(&self, field: Field) -> bool {
        match field {
            Field::Mode => self.mode.is_some(),
            Field::Proposer => self.proposer.is_some(),
            Field::Criterion => self.criterion.is_some(),
            Field::Tau => self.tau.is_some(),
            Field::Gamma => self.gamma.is_some(),
            Field::Temperature => self.temperature.is_some(),
            Field::TopP => self.top_p.is_some(),
            Field::TopK => self.top_k.is_some(),
            Field::Seed => self.seed.is_some(),
        }
    }

    /// This patch with the settings of `over` on top.
    pub fn merged(mut self, over: &ConfigPatch) -> ConfigPatch {
        self.mode = over.mode.or(self.mode);
        self.proposer = over.proposer.or(self.proposer);
        self.criterion = over.criterion.or(self.criterion);
        self.tau = over.tau.or(self.tau);
        self.gamma = over.gamma.or(self.gamma);
        self.temperature = over.temperature.or(self.temperature);
        self.top_p = over.top_p.or(self.top_p);
        self.top_k = over.top_k.or(self.top_k);
        self.seed = over.seed.or(self.seed);
        self
    }

    /// `base` with these settings on top, validated.
    pub fn apply(&self, base: &DecodeConfig) -> Result<DecodeConfig, ConfigError> {
        for (field, v) in [
            (Field::Tau, self.tau),
            (Field::Gamma, self.gamma),
            (Field::Temperature, self.temperature),
            (Field::TopP, self.top_p),
        ] {
            if let Some(v) = v {
                if !v.is_finite() {
                    return Err(ConfigError::new(
                        field,
                        format!("must be a finite number, got {v}"),
                    ));
                }
            }
        }
        let gate = Gate::new(
            self.criterion.unwrap_or(base.gate.criterion()),
            self.tau.unwrap_or(base.gate.tau()),
        )
        .map_err(|e| {
            // a bad τ for the criterion: name τ when it was given here,
            // else the criterion that made the old τ invalid
            let field = if self.tau.is_none() && self.criterion.is_some() {
                Field::Criterion
            } else {
                Field::Tau
            };
            ConfigError::new(field, e.to_string())
        })?;
        let sampling = SamplingParams {
            temperature: self.temperature.unwrap_or(base.sampling.temperature),
            top_k: self.top_k.unwrap_or(base.sampling.top_k),
            top_p: self.top_p.unwrap_or(base.sampling.top_p),
        };
        DecodeConfig::new(
            self.mode.unwrap_or(base.mode),
            self.proposer.unwrap_or(base.proposer),
            gate,
            self.gamma.unwrap_or(base.gamma),
            sampling,
            self.seed.unwrap_or(base.seed),
        )
        .map(|c| c.with_logit_bias(base.logit_bias.clone()))
    }

    /// Set one field from its text (`key=value` in a name).
    fn set(&mut self, field: Field, value: &str) -> Result<(), String> {
        let number = |v: &str| {
            v.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite())
                .ok_or_else(|| format!("{}: `{v}` is not a finite number", field.key()))
        };
        let count = |v: &str| {
            v.parse::<u64>()
                .map_err(|_| format!("{}: `{v}` is not a count", field.key()))
        };
        match field {
            Field::Mode => {
                self.mode = Some(
                    Mode::from_str(value, true).map_err(|_| format!("unknown mode `{value}`"))?,
                )
            }
            Field::Proposer => {
                self.proposer = Some(
                    Proposer::from_str(value, true)
                        .map_err(|_| format!("unknown proposer `{value}`"))?,
                )
            }
            Field::Criterion => {
                self.criterion = Some(
                    Criterion::from_str(value, true)
                        .map_err(|_| format!("unknown criterion `{value}`"))?,
                )
            }
            Field::Tau => self.tau = Some(number(value)?),
            Field::Gamma => self.gamma = Some(number(value)?),
            Field::Temperature => self.temperature = Some(number(value)?),
            Field::TopP => self.top_p = Some(number(value)?),
            Field::TopK => self.top_k = Some(count(value)? as usize),
            Field::Seed => self.seed = Some(count(value)?),
        }
        Ok(())
    }

    /// The value of `field` as a name writes it.
    fn value_text(&self, field: Field) -> Option<String> {
        match field {
            Field::Mode => self.mode.map(|m| m.name().to_string()),
            Field::Proposer => self.proposer.map(|p| p.name().to_string()),
            Field::Criterion => self.criterion.map(|c| c.to_string()),
            Field::Tau => self.tau.map(|v| v.to_string()),
            Field::Gamma => self.gamma.map(|v| v.to_string()),
            Field::Temperature => self.temperature.map(|v| v.to_string()),
            Field::TopP => self.top_p.map(|v| v.to_string()),
            Field::TopK => self.top_k.map(|v| v.to_string()),
            Field::Seed => self.seed.map(|v| v.to_string()),
        }
    }
}

/// Why a configuration name does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration `{spec}`: {reason}\nhint: write mode[:key=value]..., e.g. extrapolate:gamma=0.1:tau=-0.3 (modes: base, rl, replace, extrapolate, global; keys: criterion, tau, gamma, proposer, temperature, top_p, top_k, seed)")]
pub struct SpecError {
    pub spec: String,
    pub reason: String,
}

impl FromStr for ConfigPatch {
    type Err = SpecError;

    /// `mode[:key=value]...`: the mode is required, each key at most once.
    fn from_str(text: &str) -> Result<ConfigPatch, SpecError> {
        let err = |reason: String| SpecError {
            spec: text.to_string(),
            reason,
        };
        let mut parts = text.split(':');
        let head = parts.next().unwrap_or_default().trim();
        if head.is_empty() {
            return Err(err("the mode is missing".to_string()));
        }
        let mut patch = ConfigPatch::default();
        patch.set(Field::Mode, head).map_err(err)?;
        for part in parts {
            let Some((key, value)) = part.split_once('=') else {
                return Err(err(format!("`{part}` is not key=value")));
            };
            let (key, value) = (key.trim(), value.trim());
            let field = Field::from_key(key)
                .filter(|f| *f != Field::Mode)
                .ok_or_else(|| err(format!("unknown key `{key}`")))?;
            if patch.sets(field) {
                return Err(err(format!("`{key}` is given twice")));
            }
            patch.set(field, value).map_err(err)?;
        }
        Ok(patch)
    }
}

impl fmt::Display for ConfigPatch {
    /// The mode, then every other set key in [`Field::ALL`]'s order.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.mode.map_or("", Mode::name))?;
        for field in Field::ALL {
            if field == Field::Mode {
                continue;
            }
            if let Some(v) = self.value_text(field) {
                write!(f, ":{}={v}", field.key())?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_parses_to_exactly_its_values_and_prints_back() {
        let p: ConfigPatch = "extrapolate:gamma=0.2:tau=-0.5".parse().unwrap();
        assert_eq!(
            p,
            ConfigPatch {
                mode: Some(Mode::Extrapolate),
                gamma: Some(0.2),
                tau: Some(-0.5),
                ..ConfigPatch::default()
            }
        );
        assert_eq!(p.to_string(), "extrapolate:gamma=0.2:tau=-0.5");
        for name in [
            "replace:tau=-1.5:criterion=kl:proposer=rl",
            "global:gamma=0.05",
            "base:temperature=0.7:top_p=0.9:top_k=40:seed=3",
            "rl",
        ] {
            let p: ConfigPatch = name.parse().unwrap();
            assert_eq!(p.to_string(), name);
            assert_eq!(p.to_string().parse::<ConfigPatch>().unwrap(), p);
        }
        // aliases and spacing read, the canonical form prints
        let p: ConfigPatch = "replace: top-p = 0.9 :t=2".parse().unwrap();
        assert_eq!(p.to_string(), "replace:temperature=2:top_p=0.9");
    }

    #[test]
    fn serde_round_trip_and_unknown_fields() {
        let p: ConfigPatch =
            serde_json::from_str(r#"{"mode":"replace","tau":-1,"criterion":"entropy-rl"}"#)
                .unwrap();
        assert_eq!(p.mode, Some(Mode::Replace));
        assert_eq!(p.criterion, Some(Criterion::EntropyRl));
        let back: ConfigPatch = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
        assert!(serde_json::from_str::<ConfigPatch>(r#"{"gama":1}"#).is_err());
    }

    #[test]
    fn apply_overrides_and_keeps_the_rest() {
        let base = DecodeConfig::default().with_seed(7);
        let p: ConfigPatch = "replace:criterion=kl:tau=0.25:top_p=0.9".parse().unwrap();
        let cfg = p.apply(&base).unwrap();
        assert_eq!(cfg.mode(), Mode::Replace);
        assert_eq!(cfg.gate().criterion(), Criterion::Kl);
        assert_eq!(cfg.gate().tau(), 0.25);
        assert_eq!(cfg.sampling().top_p, 0.9);
        assert_eq!(cfg.gamma(), defaults::GAMMA);
        assert_eq!(cfg.seed(), 7);
        assert_eq!(
            ConfigPatch::of(&cfg).apply(&DecodeConfig::default()),
            Ok(cfg)
        );
        // later patches win
        let a = ConfigPatch {
            gamma: Some(0.3),
            tau: Some(-1.0),
            ..Default::default()
        };
        let b = ConfigPatch {
            gamma: Some(0.5),
            ..Default::default()
        };
        let m = a.merged(&b);
        assert_eq!((m.gamma, m.tau), (Some(0.5), Some(-1.0)));
    }

    #[test]
    fn errors_name_the_field() {
        let base = DecodeConfig::default();
        for (patch, field) in [
            ("extrapolate:gamma=-1", Field::Gamma),
            ("extrapolate:gamma=1e308", Field::Gamma),
            ("replace:criterion=random:tau=2", Field::Tau),
            ("base:top_p=0", Field::TopP),
            ("base:temperature=0", Field::Temperature),
        ] {
            let e = patch
                .parse::<ConfigPatch>()
                .unwrap()
                .apply(&base)
                .unwrap_err();
            assert_eq!(e.field, field, "{patch}: {e}");
            assert!(!e.to_string().contains("--"), "no CLI flag: {e}");
        }
        // a criterion whose range the inherited τ misses names the criterion
        let e = ConfigPatch {
            criterion: Some(Criterion::Random),
            ..Default::default()
        }
        .apply(&base)
        .unwrap_err();
        assert_eq!(e.field, Field::Criterion);
        assert_eq!(
            ConfigError::new(Field::Gamma, "x").render("dlogp.gamma"),
            "invalid dlogp.gamma: x"
        );
        let nan = ConfigPatch {
            tau: Some(f64::NAN),
            ..Default::default()
        };
        assert_eq!(nan.apply(&base).unwrap_err().field, Field::Tau);
    }

    #[test]
    fn bad_names_say_why() {
        for (text, needle) in [
            ("", "mode is missing"),
            ("extrapolat", "unknown mode `extrapolat`"),
            ("extrapolate:gamma", "not key=value"),
            ("extrapolate:gamma=x", "gamma: `x` is not a finite number"),
            ("extrapolate:gamma=inf", "not a finite number"),
            ("replace:criterion=foo", "unknown criterion"),
            ("replace:colour=red", "unknown key `colour`"),
            ("replace:tau=1:tau=2", "given twice"),
            ("replace:mode=base", "unknown key `mode`"),
        ] {
            let e = text.parse::<ConfigPatch>().unwrap_err();
            assert!(e.to_string().contains(needle), "{text}: {e}");
        }
    }

    #[test]
    fn canonical_names_resolve_to_the_same_configuration() {
        let base = DecodeConfig::default();
        for text in [
            "extrapolate:gamma=0.2:tau=-0.5",
            "replace:criterion=entropy-rl:tau=1.5:proposer=rl",
            "global:gamma=0.05",
            "rl",
        ] {
            let cfg = text.parse::<ConfigPatch>().unwrap().apply(&base).unwrap();
            let again = ConfigPatch::name_of(&cfg)
                .parse::<ConfigPatch>()
                .unwrap()
                .apply(&base)
                .unwrap();
            assert_eq!(cfg, again, "{text}");
        }
    }
}

//! Named decoding configurations written as one word, for command lines and
//! model names: `mode[:key=value]...`, e.g. `extrapolate:gamma=0.2:tau=-0.5`
//! or `replace:criterion=kl:tau=0.1`.
//!
//! Keys: `criterion`, `tau`, `gamma`, `proposer`, `temperature`, `top_p`,
//! `top_k`. A key that is not given keeps the default it is resolved
//! against, so `extrapolate` alone means "the command's own settings".

use std::fmt;
use std::str::FromStr;

use clap::ValueEnum;

use super::config::{DecodeConfig, Mode, Proposer};
use crate::sampler::{Criterion, Gate, SamplingParams};

/// A decoding configuration as written: the mode and the settings it
/// overrides.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConfigSpec {
    /// The text it was parsed from (its display name).
    pub name: String,
    pub mode: Option<Mode>,
    pub criterion: Option<Criterion>,
    pub tau: Option<f64>,
    pub gamma: Option<f64>,
    pub proposer: Option<Proposer>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<usize>,
}

/// Why a configuration name does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("configuration `{spec}`: {reason}\nhint: write mode[:key=value]..., e.g. extrapolate:gamma=0.1:tau=-0.3 (modes: base, rl, replace, extrapolate, global; keys: criterion, tau, gamma, proposer, temperature, top_p, top_k)")]
pub struct SpecError {
    pub spec: String,
    pub reason: String,
}

impl FromStr for ConfigSpec {
    type Err = SpecError;

    fn from_str(text: &str) -> Result<Self, SpecError> {
        let err = |reason: String| SpecError {
            spec: text.to_string(),
            reason,
        };
        let mut parts = text.split(':');
        let head = parts.next().unwrap_or_default().trim();
        if head.is_empty() {
            return Err(err("the mode is missing".to_string()));
        }
        let mut spec = ConfigSpec {
            name: text.to_string(),
            mode: Some(
                Mode::from_str(head, true).map_err(|_| err(format!("unknown mode `{head}`")))?,
            ),
            ..ConfigSpec::default()
        };
        for part in parts {
            let Some((key, value)) = part.split_once('=') else {
                return Err(err(format!("`{part}` is not key=value")));
            };
            let (key, value) = (key.trim(), value.trim());
            let number = |v: &str| {
                v.parse::<f64>()
                    .ok()
                    .filter(|x| x.is_finite())
                    .ok_or_else(|| err(format!("{key}: `{v}` is not a finite number")))
            };
            match key {
                "criterion" => {
                    spec.criterion = Some(
                        Criterion::from_str(value, true)
                            .map_err(|_| err(format!("unknown criterion `{value}`")))?,
                    )
                }
                "proposer" => {
                    spec.proposer = Some(
                        Proposer::from_str(value, true)
                            .map_err(|_| err(format!("unknown proposer `{value}`")))?,
                    )
                }
                "tau" => spec.tau = Some(number(value)?),
                "gamma" => spec.gamma = Some(number(value)?),
                "temperature" | "t" => spec.temperature = Some(number(value)?),
                "top_p" | "top-p" => spec.top_p = Some(number(value)?),
                "top_k" | "top-k" => {
                    spec.top_k = Some(
                        value
                            .parse()
                            .map_err(|_| err(format!("top_k: `{value}` is not a count")))?,
                    )
                }
                _ => return Err(err(format!("unknown key `{key}`"))),
            }
        }
        Ok(spec)
    }
}

impl fmt::Display for ConfigSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl ConfigSpec {
    /// The spec of a full configuration, every key written out (a canonical
    /// name that parses back to `cfg`, seed aside).
    pub fn of(cfg: &DecodeConfig) -> ConfigSpec {
        let mode = cfg
            .mode
            .to_possible_value()
            .map(|v| v.get_name().to_string());
        let mut name = mode.unwrap_or_default();
        let proposer = match cfg.proposer {
            Proposer::Base => "base",
            Proposer::Rl => "rl",
        };
        if matches!(cfg.mode, Mode::Replace | Mode::Extrapolate) {
            name += &format!(
                ":criterion={}:tau={}:proposer={proposer}",
                cfg.gate.criterion(),
                cfg.gate.tau()
            );
        }
        if matches!(cfg.mode, Mode::Extrapolate | Mode::Global) {
            name += &format!(":gamma={}", cfg.gamma);
        }
        ConfigSpec {
            name,
            mode: Some(cfg.mode),
            criterion: Some(cfg.gate.criterion()),
            tau: Some(cfg.gate.tau()),
            gamma: Some(cfg.gamma),
            proposer: Some(cfg.proposer),
            temperature: Some(cfg.sampling.temperature),
            top_p: Some(cfg.sampling.top_p),
            top_k: Some(cfg.sampling.top_k),
        }
    }

    /// The configuration: this spec's settings over `defaults`, validated.
    pub fn resolve(&self, defaults: &DecodeConfig) -> Result<DecodeConfig, SpecError> {
        let err = |e: &dyn fmt::Display| SpecError {
            spec: self.name.clone(),
            reason: e.to_string(),
        };
        let gate = Gate::new(
            self.criterion.unwrap_or(defaults.gate.criterion()),
            self.tau.unwrap_or(defaults.gate.tau()),
        )
        .map_err(|e| err(&e))?;
        let sampling = SamplingParams {
            temperature: self.temperature.unwrap_or(defaults.sampling.temperature),
            top_k: self.top_k.unwrap_or(defaults.sampling.top_k),
            top_p: self.top_p.unwrap_or(defaults.sampling.top_p),
        };
        DecodeConfig::new(
            self.mode.unwrap_or(defaults.mode),
            self.proposer.unwrap_or(defaults.proposer),
            gate,
            self.gamma.unwrap_or(defaults.gamma),
            sampling,
            defaults.seed,
        )
        .map_err(|e| err(&e))
    }
}

/// Parses a comma-separated list of specs (`base,rl,extrapolate:gamma=0.2`).
pub fn parse_specs(list: &str) -> Result<Vec<ConfigSpec>, SpecError> {
    if list.trim().is_empty() {
        return Err(SpecError {
            spec: list.to_string(),
            reason: "no configuration given".to_string(),
        });
    }
    let specs: Vec<ConfigSpec> = list
        .split(',')
        .map(str::trim)
        .enumerate()
        .map(|(i, s)| {
            if s.is_empty() {
                Err(SpecError {
                    spec: list.to_string(),
                    reason: format!("entry {} is empty (a stray comma?)", i + 1),
                })
            } else {
                s.parse()
            }
        })
        .collect::<Result<_, _>>()?;
    for (i, s) in specs.iter().enumerate() {
        if specs[..i].iter().any(|t| t.name == s.name) {
            return Err(SpecError {
                spec: s.name.clone(),
                reason: "listed twice".to_string(),
            });
        }
    }
    Ok(specs)
}

#[cfg(test)]
mod tests {
    #[test]
    fn empty_entries_are_errors() {
        for list in ["base,", ",base", "base,,rl", "", " "] {
            let e = super::parse_specs(list).unwrap_err().to_string();
            assert!(
                e.contains("empty") || e.contains("no configuration"),
                "{list:?}: {e}"
            );
        }
        assert_eq!(super::parse_specs(" base , rl ").unwrap().len(), 2);
    }

    use super::*;

    fn defaults() -> DecodeConfig {
        DecodeConfig::new(
            Mode::Extrapolate,
            Proposer::Base,
            Gate::new(Criterion::Dlogp, -0.3).unwrap(),
            0.1,
            SamplingParams {
                temperature: 1.0,
                top_k: 0,
                top_p: 0.7,
            },
            7,
        )
        .unwrap()
    }

    #[test]
    fn keys_override_defaults_and_the_rest_stays() {
        let spec: ConfigSpec = "replace:criterion=kl:tau=0.25:top_p=0.9".parse().unwrap();
        let cfg = spec.resolve(&defaults()).unwrap();
        assert_eq!(cfg.mode, Mode::Replace);
        assert_eq!(cfg.gate.criterion(), Criterion::Kl);
        assert_eq!(cfg.gate.tau(), 0.25);
        assert_eq!(cfg.sampling.top_p, 0.9);
        assert_eq!(cfg.gamma, 0.1);
        assert_eq!(cfg.seed, 7);
        assert_eq!(cfg.sampling.temperature, 1.0);
        let plain: ConfigSpec = "base".parse().unwrap();
        assert_eq!(plain.resolve(&defaults()).unwrap().mode, Mode::Base);
        assert_eq!(plain.name, "base");
    }

    #[test]
    fn canonical_names_parse_back() {
        for text in [
            "extrapolate:gamma=0.2:tau=-0.5",
            "replace:criterion=entropy-rl:tau=1.5:proposer=rl",
            "global:gamma=0.05",
            "rl",
        ] {
            let cfg = text
                .parse::<ConfigSpec>()
                .unwrap()
                .resolve(&defaults())
                .unwrap();
            let again = ConfigSpec::of(&cfg)
                .name
                .parse::<ConfigSpec>()
                .unwrap()
                .resolve(&defaults())
                .unwrap();
            assert_eq!(cfg, again, "{text}");
        }
    }

    #[test]
    fn bad_specs_name_the_problem() {
        for (text, needle) in [
            ("", "mode is missing"),
            ("extrapolat", "unknown mode `extrapolat`"),
            ("extrapolate:gamma", "not key=value"),
            ("extrapolate:gamma=x", "gamma: `x` is not a finite number"),
            ("extrapolate:gamma=inf", "not a finite number"),
            ("replace:criterion=foo", "unknown criterion"),
            ("replace:colour=red", "unknown key `colour`"),
        ] {
            let e = text.parse::<ConfigSpec>().unwrap_err();
            assert!(e.to_string().contains(needle), "{text}: {e}");
        }
        // values the parser accepts but the configuration rejects
        for text in [
            "extrapolate:gamma=-1",
            "replace:criterion=random:tau=2",
            "base:top_p=0",
        ] {
            let spec: ConfigSpec = text.parse().unwrap();
            let e = spec.resolve(&defaults()).unwrap_err();
            assert!(e.to_string().contains(text), "{e}");
        }
        assert!(parse_specs("base,rl,base")
            .unwrap_err()
            .to_string()
            .contains("listed twice"));
        assert!(parse_specs(" , ").is_err());
        assert_eq!(parse_specs("base, rl").unwrap().len(), 2);
    }
}

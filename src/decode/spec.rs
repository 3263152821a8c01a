//! Named decoding configurations, for `eval --modes` and model names: a
//! [`ConfigPatch`] written as one word (`mode[:key=value]...`, e.g.
//! `extrapolate:gamma=0.2:tau=-0.5`) together with the name as written,
//! which labels rows and tables. Keys that are not given keep the defaults
//! the name is resolved against, so `extrapolate` alone means "the
//! command's own settings".

use std::fmt;
use std::str::FromStr;

use super::config::{ConfigPatch, DecodeConfig, SpecError};

/// A configuration as written: its name and the settings it sets.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ConfigSpec {
    /// The text it was parsed from (its display name).
    pub name: String,
    pub patch: ConfigPatch,
}

impl FromStr for ConfigSpec {
    type Err = SpecError;

    fn from_str(text: &str) -> Result<Self, SpecError> {
        Ok(ConfigSpec {
            name: text.to_string(),
            patch: text.parse()?,
        })
    }
}

impl fmt::Display for ConfigSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)
    }
}

impl ConfigSpec {
    /// The spec of a full configuration: a canonical name with the keys that
    /// matter to its mode, which parses back to `cfg` (sampling and seed
    /// aside), and every setting in the patch.
    pub fn of(cfg: &DecodeConfig) -> ConfigSpec {
        let mut patch = ConfigPatch::of(cfg);
        patch.seed = None;
        ConfigSpec {
            name: ConfigPatch::name_of(cfg),
            patch,
        }
    }

    /// The configuration: this spec's settings over `defaults`, validated.
    pub fn resolve(&self, defaults: &DecodeConfig) -> Result<DecodeConfig, SpecError> {
        self.patch.apply(defaults).map_err(|e| SpecError {
            spec: self.name.clone(),
            reason: e.to_string(),
        })
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
    use super::*;
    use crate::decode::{Mode, Proposer};
    use crate::sampler::{Criterion, Gate, SamplingParams};

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
    fn empty_entries_are_errors() {
        for list in ["base,", ",base", "base,,rl", "", " "] {
            let e = parse_specs(list).unwrap_err().to_string();
            assert!(
                e.contains("empty") || e.contains("no configuration"),
                "{list:?}: {e}"
            );
        }
        assert_eq!(parse_specs(" base , rl ").unwrap().len(), 2);
    }

    #[test]
    fn keys_override_defaults_and_the_rest_stays() {
        let spec: ConfigSpec = "replace:criterion=kl:tau=0.25:top_p=0.9".parse().unwrap();
        let cfg = spec.resolve(&defaults()).unwrap();
        assert_eq!(cfg.mode(), Mode::Replace);
        assert_eq!(cfg.gate().criterion(), Criterion::Kl);
        assert_eq!(cfg.gate().tau(), 0.25);
        assert_eq!(cfg.sampling().top_p, 0.9);
        assert_eq!(cfg.gamma(), 0.1);
        assert_eq!(cfg.seed(), 7);
        assert_eq!(cfg.sampling().temperature, 1.0);
        let plain: ConfigSpec = "base".parse().unwrap();
        assert_eq!(plain.resolve(&defaults()).unwrap().mode(), Mode::Base);
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

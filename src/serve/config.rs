//! From what a request says to the [`DecodeConfig`] it runs with, in two
//! stages: the server's defaults, then the model name's parameters
//! (`extrapolate:gamma=0.1:tau=-0.3`), then the body's `"dlogp"` object, then
//! the standard sampling fields; the result is validated once.

use serde::{Deserialize, Serialize};

use super::error::ApiError;
use crate::decode::{ConfigSpec, DecodeConfig, Mode, Proposer};
use crate::sampler::{Criterion, Gate, SamplingParams};

/// The `"dlogp"` body object, and what a model name's parameters set: every
/// field optional, unknown fields rejected.
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DlogpFields {
    pub mode: Option<Mode>,
    pub criterion: Option<Criterion>,
    pub tau: Option<f64>,
    pub gamma: Option<f64>,
    pub proposer: Option<Proposer>,
}

impl DlogpFields {
    /// Fields set in `other` override these.
    fn merge(&mut self, other: &DlogpFields) {
        self.mode = other.mode.or(self.mode);
        self.criterion = other.criterion.or(self.criterion);
        self.tau = other.tau.or(self.tau);
        self.gamma = other.gamma.or(self.gamma);
        self.proposer = other.proposer.or(self.proposer);
    }
}

/// The server's decoding defaults (`dlogp serve` flags; the same defaults as
/// `dlogp generate`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Preset {
    pub mode: Mode,
    pub criterion: Criterion,
    pub tau: f64,
    pub gamma: f64,
    pub proposer: Proposer,
    pub temperature: f64,
    pub top_p: f64,
    pub top_k: usize,
}

/// The standard sampling fields of a request.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct SamplingFields {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<usize>,
    pub seed: u64,
}

/// The modes offered as model names.
pub const MODES: [(&str, Mode); 5] = [
    ("extrapolate", Mode::Extrapolate),
    ("replace", Mode::Replace),
    ("base", Mode::Base),
    ("rl", Mode::Rl),
    ("global", Mode::Global),
];

const NAME_HINT: &str = "GET /v1/models lists the names; a name is `dlogp` (the server's \
     defaults) or a mode (extrapolate, replace, base, rl, global), optionally followed by \
     `:key=value` parameters among gamma, tau, criterion and proposer, e.g. \
     `extrapolate:gamma=0.1:tau=-0.3`";

/// Parse a model name into the fields it sets; `default_name` (e.g. `dlogp`)
/// stands for the server's defaults. The syntax is [`ConfigSpec`]'s (the
/// one `dlogp eval --modes` reads), limited to the keys of the `"dlogp"`
/// object: the sampling fields come from the request body.
pub fn parse_model_name(name: &str, default_name: &str) -> Result<DlogpFields, ApiError> {
    let unknown = || ApiError::unknown_model(name, NAME_HINT);
    let (head, params) = match name.split_once(':') {
        Some((head, params)) => (head, Some(params)),
        None => (name, None),
    };
    let is_default = head == default_name;
    let text = match (is_default, params) {
        // any mode stands in for the default's; it is dropped below
        (true, Some(p)) => format!("base:{p}"),
        (true, None) => "base".to_string(),
        (false, _) => name.to_string(),
    };
    if !is_default && !MODES.iter().any(|(n, _)| *n == head) {
        return Err(unknown());
    }
    let spec: ConfigSpec = text.parse().map_err(|_| unknown())?;
    if spec.temperature.is_some() || spec.top_p.is_some() || spec.top_k.is_some() {
        return Err(unknown());
    }
    Ok(DlogpFields {
        mode: if is_default { None } else { spec.mode },
        criterion: spec.criterion,
        tau: spec.tau,
        gamma: spec.gamma,
        proposer: spec.proposer,
    })
}

/// The model names `/v1/models` lists.
pub fn listed_names(default_name: &str, preset: &Preset) -> Vec<String> {
    let mut names = vec![default_name.to_string()];
    names.extend(MODES.iter().map(|(n, _)| n.to_string()));
    names.push(format!(
        "extrapolate:gamma={}:tau={}",
        preset.gamma, preset.tau
    ));
    names.push(format!("replace:tau={}", preset.tau));
    names
}

/// The resolved configuration of one request.
pub fn resolve(
    preset: &Preset,
    from_name: &DlogpFields,
    from_body: Option<&DlogpFields>,
    sampling: &SamplingFields,
) -> Result<DecodeConfig, ApiError> {
    let mut f = DlogpFields::default();
    f.merge(from_name);
    if let Some(body) = from_body {
        f.merge(body);
    }
    let mode = f.mode.unwrap_or(preset.mode);
    let gate = Gate::new(
        f.criterion.unwrap_or(preset.criterion),
        f.tau.unwrap_or(preset.tau),
    )
    .map_err(|e| ApiError::invalid("dlogp.tau", e.to_string()))?;
    let temperature = sampling.temperature.unwrap_or(preset.temperature);
    if !(temperature.is_finite() && (0.0..=100.0).contains(&temperature)) {
        return Err(ApiError::invalid(
            "temperature",
            format!("temperature must be between 0 and 100, got {temperature}"),
        ));
    }
    // temperature 0: greedy, as OpenAI means it
    let (temperature, top_k) = if temperature == 0.0 {
        (1.0, 1)
    } else {
        (temperature, sampling.top_k.unwrap_or(preset.top_k))
    };
    let top_p = sampling.top_p.unwrap_or(preset.top_p);
    if !(top_p > 0.0 && top_p <= 1.0) {
        return Err(ApiError::invalid(
            "top_p",
            format!("top_p must be in (0, 1], got {top_p}"),
        ));
    }
    let params = SamplingParams {
        temperature,
        top_k,
        top_p,
    };
    let gamma = f.gamma.unwrap_or(preset.gamma);
    DecodeConfig::new(
        mode,
        f.proposer.unwrap_or(preset.proposer),
        gate,
        gamma,
        params,
        sampling.seed,
    )
    .map_err(|e| ApiError::invalid("dlogp.gamma", e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn preset() -> Preset {
        Preset {
            mode: Mode::Extrapolate,
            criterion: Criterion::Dlogp,
            tau: -0.3,
            gamma: 0.1,
            proposer: Proposer::Base,
            temperature: 1.0,
            top_p: 0.7,
            top_k: 0,
        }
    }

    #[test]
    fn model_names_set_mode_and_parameters() {
        let f = parse_model_name("replace:tau=-1.5:criterion=dlogp:proposer=rl", "dlogp").unwrap();
        assert_eq!(f.mode, Some(Mode::Replace));
        assert_eq!(f.tau, Some(-1.5));
        assert_eq!(f.criterion, Some(Criterion::Dlogp));
        assert_eq!(f.proposer, Some(Proposer::Rl));
        assert_eq!(
            parse_model_name("dlogp", "dlogp").unwrap(),
            DlogpFields::default()
        );
        assert_eq!(
            parse_model_name("dlogp:gamma=0.5", "dlogp").unwrap().gamma,
            Some(0.5)
        );
        for bad in [
            "gpt-4",
            "extrapolate:gamma",
            "extrapolate:gamma=x",
            "base:foo=1",
            "",
        ] {
            let e = parse_model_name(bad, "dlogp").unwrap_err();
            assert_eq!(e.status.as_u16(), 404, "{bad}");
            assert_eq!(e.code, Some("model_not_found"));
        }
    }

    #[test]
    fn listed_names_parse_back() {
        for name in listed_names("dlogp", &preset()) {
            parse_model_name(&name, "dlogp").unwrap();
        }
    }

    #[test]
    fn body_overrides_name_overrides_preset() {
        let name = parse_model_name("replace:tau=-1:gamma=0.2", "dlogp").unwrap();
        let body = DlogpFields {
            tau: Some(-2.0),
            ..Default::default()
        };
        let s = SamplingFields {
            temperature: Some(0.5),
            seed: 9,
            ..Default::default()
        };
        let cfg = resolve(&preset(), &name, Some(&body), &s).unwrap();
        assert_eq!(cfg.mode, Mode::Replace);
        assert_eq!(cfg.gate.tau(), -2.0);
        assert_eq!(cfg.gamma, 0.2);
        assert_eq!(cfg.sampling.temperature, 0.5);
        assert_eq!(cfg.sampling.top_p, 0.7);
        assert_eq!(cfg.seed, 9);
        let d = resolve(
            &preset(),
            &DlogpFields::default(),
            None,
            &SamplingFields::default(),
        )
        .unwrap();
        assert_eq!(
            (d.mode, d.gamma, d.gate.tau()),
            (Mode::Extrapolate, 0.1, -0.3)
        );
    }

    #[test]
    fn greedy_and_invalid_values() {
        let s = SamplingFields {
            temperature: Some(0.0),
            ..Default::default()
        };
        let cfg = resolve(&preset(), &DlogpFields::default(), None, &s).unwrap();
        assert_eq!((cfg.sampling.temperature, cfg.sampling.top_k), (1.0, 1));
        let bad_t = SamplingFields {
            temperature: Some(-1.0),
            ..Default::default()
        };
        let e = resolve(&preset(), &DlogpFields::default(), None, &bad_t).unwrap_err();
        assert_eq!(e.param, Some("temperature"));
        let bad_p = SamplingFields {
            top_p: Some(1.5),
            ..Default::default()
        };
        let e = resolve(&preset(), &DlogpFields::default(), None, &bad_p).unwrap_err();
        assert_eq!(e.param, Some("top_p"));
        let bad_g = DlogpFields {
            gamma: Some(-1.0),
            ..Default::default()
        };
        let e = resolve(
            &preset(),
            &DlogpFields::default(),
            Some(&bad_g),
            &SamplingFields::default(),
        )
        .unwrap_err();
        assert_eq!(e.status.as_u16(), 400);
    }
}

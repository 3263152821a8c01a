//! From what a request says to the [`DecodeConfig`] it runs with: the
//! server's defaults (the `dlogp serve` flags, validated at start-up), then
//! the model name's parameters (`extrapolate:gamma=0.1:tau=-0.3`), then the
//! standard sampling fields, then the body's `"dlogp"` object, each a
//! [`ConfigPatch`]; the result is validated once, and an invalid setting is
//! a 400 naming the request field that set it.

use serde_json::Value;

use super::error::ApiError;
use crate::decode::{ConfigError, ConfigPatch, DecodeConfig, Field, Mode};
use crate::sampler::{BiasError, LogitBias};

/// The decoding settings of the `"dlogp"` body object: any setting,
/// unknown keys rejected.
pub type DlogpFields = ConfigPatch;

/// The `"dlogp"` body object: decoding settings plus response options.
#[derive(Debug, Clone, PartialEq)]
pub struct DlogpObject {
    pub settings: ConfigPatch,
    /// Whether each choice carries the per-token trace (`"trace": false`
    /// leaves out the `tokens` list; the replacement ratio stays).
    pub trace: bool,
}

impl Default for DlogpObject {
    fn default() -> DlogpObject {
        DlogpObject {
            settings: ConfigPatch::default(),
            trace: true,
        }
    }
}

/// Read the `"dlogp"` body object (absent or `null`: the defaults).
pub fn dlogp_object(v: Option<&Value>) -> Result<DlogpObject, ApiError> {
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(DlogpObject::default());
    };
    let Some(obj) = v.as_object() else {
        return Err(ApiError::invalid("dlogp", "`dlogp` must be an object"));
    };
    let mut obj = obj.clone();
    let trace = match obj.remove("trace") {
        None | Some(Value::Null) => true,
        Some(Value::Bool(b)) => b,
        Some(other) => {
            return Err(ApiError::invalid(
                "dlogp.trace",
                format!("dlogp.trace must be true or false, got {other}"),
            ))
        }
    };
    let settings: ConfigPatch = serde_json::from_value(Value::Object(obj))
        .map_err(|e| ApiError::invalid("dlogp", format!("invalid dlogp object: {e}")))?;
    Ok(DlogpObject { settings, trace })
}

/// Read `logit_bias`: OpenAI's object of token id → bias, or llama-server's
/// list of `[id, bias]` pairs where `false` for a bias bans the token
/// (here: −100). Biases lie in [−100, 100]; ids in the vocabulary.
pub fn logit_bias(v: Option<&Value>, n_vocab: usize) -> Result<LogitBias, ApiError> {
    let bad = |m: String| ApiError::invalid("logit_bias", m);
    let Some(v) = v.filter(|v| !v.is_null()) else {
        return Ok(LogitBias::default());
    };
    let id = |k: &Value| -> Result<u32, ApiError> {
        let parsed = match k {
            Value::String(s) => s.parse::<u32>().ok(),
            Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
            _ => None,
        };
        parsed.ok_or_else(|| bad(format!("logit_bias keys are token ids, got {k}")))
    };
    let bias = |token: u32, b: &Value| -> Result<(u32, f64), ApiError> {
        match b {
            Value::Bool(false) => Ok((token, -crate::sampler::MAX_LOGIT_BIAS)),
            b => b.as_f64().map(|x| (token, x)).ok_or_else(|| {
                bad(format!(
                    "the bias of token {token} must be a number, got {b}"
                ))
            }),
        }
    };
    let mut entries = Vec::new();
    match v {
        Value::Object(m) => {
            for (k, b) in m {
                entries.push(bias(id(&Value::String(k.clone()))?, b)?);
            }
        }
        Value::Array(pairs) => {
            for pair in pairs {
                match pair.as_array().map(Vec::as_slice) {
                    Some([k, b]) => entries.push(bias(id(k)?, b)?),
                    _ => {
                        return Err(bad(format!(
                            "logit_bias pairs are [token id, bias], got {pair}"
                        )))
                    }
                }
            }
        }
        other => {
            return Err(bad(format!(
                "logit_bias must be an object of token id → bias, got {other}"
            )))
        }
    }
    LogitBias::new(entries, n_vocab).map_err(|e: BiasError| bad(format!("invalid logit_bias: {e}")))
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

/// Parse a model name into the settings it gives; `default_name` (e.g.
/// `dlogp`) stands for the server's defaults. The syntax is
/// [`ConfigPatch`]'s (the one `dlogp eval --modes` reads), limited to the
/// gate keys: the sampling fields come from the request body.
pub fn parse_model_name(name: &str, default_name: &str) -> Result<ConfigPatch, ApiError> {
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
    let mut patch: ConfigPatch = text.parse().map_err(|_| unknown())?;
    let sampling = [Field::Temperature, Field::TopP, Field::TopK, Field::Seed];
    if sampling.iter().any(|f| patch.sets(*f)) {
        return Err(unknown());
    }
    if is_default {
        patch.mode = None;
    }
    Ok(patch)
}

/// The model names `/v1/models` lists.
pub fn listed_names(default_name: &str, preset: &DecodeConfig) -> Vec<String> {
    let mut names = vec![default_name.to_string()];
    names.extend(MODES.iter().map(|(n, _)| n.to_string()));
    names.push(format!(
        "extrapolate:gamma={}:tau={}",
        preset.gamma(),
        preset.gate().tau()
    ));
    names.push(format!("replace:tau={}", preset.gate().tau()));
    names
}

/// The request field an invalid `field` came from: the `dlogp` object's key
/// when the body set it there, the standard field, or the model name.
fn param_of(
    field: Field,
    from_name: &ConfigPatch,
    from_fields: &ConfigPatch,
    from_body: Option<&ConfigPatch>,
) -> &'static str {
    if from_body.is_some_and(|b| b.sets(field))
        || !(from_fields.sets(field) || from_name.sets(field))
    {
        return match field {
            Field::Mode => "dlogp.mode",
            Field::Proposer => "dlogp.proposer",
            Field::Criterion => "dlogp.criterion",
            Field::Tau => "dlogp.tau",
            Field::Gamma => "dlogp.gamma",
            Field::Temperature => "dlogp.temperature",
            Field::TopP => "dlogp.top_p",
            Field::TopK => "dlogp.top_k",
            Field::Seed => "dlogp.seed",
        };
    }
    if from_fields.sets(field) {
        return match field {
            Field::Temperature => "temperature",
            Field::TopP => "top_p",
            Field::TopK => "top_k",
            _ => "seed",
        };
    }
    "model"
}

/// The resolved configuration of one request.
pub fn resolve(
    preset: &DecodeConfig,
    from_name: &ConfigPatch,
    from_body: Option<&ConfigPatch>,
    sampling: &SamplingFields,
) -> Result<DecodeConfig, ApiError> {
    let mut fields = ConfigPatch {
        temperature: sampling.temperature,
        top_p: sampling.top_p,
        top_k: sampling.top_k,
        seed: Some(sampling.seed),
        ..ConfigPatch::default()
    };
    if let Some(t) = sampling.temperature {
        if !(t.is_finite() && (0.0..=100.0).contains(&t)) {
            return Err(ApiError::invalid(
                "temperature",
                format!("temperature must be between 0 and 100, got {t}"),
            ));
        }
        // temperature 0: greedy, as OpenAI means it
        if t == 0.0 {
            fields.temperature = Some(1.0);
            fields.top_k = Some(1);
        }
    }
    let mut patch = from_name.clone().merged(&fields);
    if let Some(body) = from_body {
        patch = patch.merged(body);
    }
    patch.apply(preset).map_err(|e: ConfigError| {
        let param = param_of(e.field, from_name, &fields, from_body);
        ApiError::invalid(param, format!("invalid {param}: {}", e.reason))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::decode::Proposer;
    use crate::sampler::Criterion;

    fn preset() -> DecodeConfig {
        DecodeConfig::default()
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
        assert_eq!(cfg.mode(), Mode::Replace);
        assert_eq!(cfg.gate().tau(), -2.0);
        assert_eq!(cfg.gamma(), 0.2);
        assert_eq!(cfg.sampling().temperature, 0.5);
        assert_eq!(cfg.sampling().top_p, 0.7);
        assert_eq!(cfg.seed(), 9);
        let d = resolve(
            &preset(),
            &DlogpFields::default(),
            None,
            &SamplingFields::default(),
        )
        .unwrap();
        assert_eq!(
            (d.mode(), d.gamma(), d.gate().tau()),
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
        assert_eq!((cfg.sampling().temperature, cfg.sampling().top_k), (1.0, 1));
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
        assert_eq!(e.param, Some("dlogp.gamma"));
        // a value that used to overflow at decode time is a 400 up front
        let huge = DlogpFields {
            mode: Some(Mode::Global),
            gamma: Some(1e308),
            ..Default::default()
        };
        let e = resolve(
            &preset(),
            &DlogpFields::default(),
            Some(&huge),
            &SamplingFields::default(),
        )
        .unwrap_err();
        assert_eq!((e.status.as_u16(), e.param), (400, Some("dlogp.gamma")));
        // the field that set a bad value is named: the model name, the body
        let name = parse_model_name("replace:tau=2:criterion=random", "dlogp");
        let e = resolve(&preset(), &name.unwrap(), None, &SamplingFields::default()).unwrap_err();
        assert_eq!(e.param, Some("model"));
        let body = DlogpFields {
            tau: Some(f64::NAN),
            ..Default::default()
        };
        let e = resolve(
            &preset(),
            &DlogpFields::default(),
            Some(&body),
            &SamplingFields::default(),
        )
        .unwrap_err();
        assert_eq!(e.param, Some("dlogp.tau"));
        assert!(!e.message.contains("--"), "{}", e.message);
    }
}

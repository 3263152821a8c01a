//! Request fields this server cannot honour. A field that would change the
//! answer (tool calls, structured output, penalties) is a 400 naming it
//! when it carries anything but its neutral value; the neutral values
//! (`null`, `[]`, `0`, `"none"`, `{"type": "text"}`) are what frontends send
//! by default, so they pass. Fields that change nothing about the tokens
//! (`user`, `metadata`, `store`, ...) are accepted and ignored.

use serde_json::{Map, Value};

use super::error::ApiError;

/// What passes for "not asking for it".
#[derive(Debug, Clone, Copy)]
enum Neutral {
    /// Only `null`.
    Null,
    /// `null` or an empty list.
    EmptyList,
    /// `null` or one of these strings.
    Words(&'static [&'static str]),
    /// `null` or this number.
    Number(f64),
    /// `null`, `""`.
    EmptyText,
    /// `null` or `{"type": "text"}`.
    TextFormat,
    /// `null` or `["text"]`.
    TextModality,
}

impl Neutral {
    fn accepts(self, v: &Value) -> bool {
        if v.is_null() {
            return true;
        }
        match self {
            Neutral::Null => false,
            Neutral::EmptyList => v.as_array().is_some_and(Vec::is_empty),
            Neutral::Words(ws) => v.as_str().is_some_and(|s| ws.contains(&s)),
            Neutral::Number(x) => v.as_f64() == Some(x),
            Neutral::EmptyText => v.as_str() == Some(""),
            Neutral::TextFormat => {
                v.as_object().is_some_and(|o| o.len() == 1) && v["type"] == "text"
            }
            Neutral::TextModality => v.as_array().is_some_and(|a| a.iter().all(|m| m == "text")),
        }
    }
}

/// The refused fields, with why.
const REFUSED: &[(&str, Neutral, &str)] = &[
    ("tools", Neutral::EmptyList, "tool calling is not supported"),
    (
        "tool_choice",
        Neutral::Words(&["none", "auto"]),
        "tool calling is not supported",
    ),
    (
        "functions",
        Neutral::EmptyList,
        "function calling is not supported",
    ),
    (
        "function_call",
        Neutral::Words(&["none", "auto"]),
        "function calling is not supported",
    ),
    (
        "response_format",
        Neutral::TextFormat,
        "structured output is not supported; only {\"type\": \"text\"}",
    ),
    (
        "json_schema",
        Neutral::Null,
        "structured output is not supported",
    ),
    (
        "grammar",
        Neutral::EmptyText,
        "grammar-constrained sampling is not supported",
    ),
    (
        "presence_penalty",
        Neutral::Number(0.0),
        "penalties are not supported (only 0)",
    ),
    (
        "frequency_penalty",
        Neutral::Number(0.0),
        "penalties are not supported (only 0)",
    ),
    (
        "suffix",
        Neutral::EmptyText,
        "insertion (suffix) is not supported",
    ),
    ("audio", Neutral::Null, "audio output is not supported"),
    (
        "modalities",
        Neutral::TextModality,
        "only text output is supported",
    ),
    (
        "prediction",
        Neutral::Null,
        "predicted outputs are not supported",
    ),
];

/// llama-server's own sampling fields of `/completion` this server does not
/// implement, refused unless neutral. (`min_p`, `n_keep`, `cache_prompt`,
/// `id_slot`, `samplers`, `timings_per_token` are accepted and ignored: the
/// llama.cpp web UI sends them by default.)
const NATIVE_REFUSED: &[(&str, Neutral, &str)] = &[
    (
        "mirostat",
        Neutral::Number(0.0),
        "mirostat sampling is not supported",
    ),
    (
        "repeat_penalty",
        Neutral::Number(1.0),
        "penalties are not supported (only 1)",
    ),
    (
        "typical_p",
        Neutral::Number(1.0),
        "typical sampling is not supported (only 1)",
    ),
    (
        "dry_multiplier",
        Neutral::Number(0.0),
        "DRY sampling is not supported (only 0)",
    ),
    (
        "xtc_probability",
        Neutral::Number(0.0),
        "XTC sampling is not supported (only 0)",
    ),
    (
        "dynatemp_range",
        Neutral::Number(0.0),
        "dynamic temperature is not supported (only 0)",
    ),
    (
        "ignore_eos",
        Neutral::Words(&[]),
        "ignore_eos is not supported",
    ),
    (
        "lora",
        Neutral::EmptyList,
        "per-request LoRA is not supported",
    ),
    (
        "post_sampling_probs",
        Neutral::Words(&[]),
        "post-sampling probabilities are not supported",
    ),
    (
        "n_cmpl",
        Neutral::Number(1.0),
        "one completion per /completion request (use n in /v1/completions)",
    ),
];

/// [`check`] plus llama-server's sampling fields, for `/completion`.
pub fn check_native(body: &Map<String, Value>) -> Result<(), ApiError> {
    check(body)?;
    for &(name, neutral, why) in NATIVE_REFUSED {
        if let Some(v) = body.get(name) {
            if !(neutral.accepts(v) || v == &Value::Bool(false)) {
                return Err(ApiError::invalid(name, format!("`{name}`: {why}")));
            }
        }
    }
    Ok(())
}

/// A 400 naming the first refused field `body` sets to a non-neutral value.
pub fn check(body: &Map<String, Value>) -> Result<(), ApiError> {
    for &(name, neutral, why) in REFUSED {
        if let Some(v) = body.get(name) {
            if !neutral.accepts(v) {
                return Err(ApiError::invalid(name, format!("`{name}`: {why}")));
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn neutral_values_pass_and_others_name_the_field() {
        let ok = json!({"tools": [], "tool_choice": "none", "response_format": {"type": "text"},
                        "presence_penalty": 0, "frequency_penalty": 0.0, "suffix": null,
                        "modalities": ["text"], "user": "x", "grammar": ""});
        check(ok.as_object().unwrap()).unwrap();
        for (k, v) in [
            (
                "tools",
                json!([{"type": "function", "function": {"name": "f"}}]),
            ),
            ("tool_choice", json!("required")),
            ("response_format", json!({"type": "json_object"})),
            ("presence_penalty", json!(0.5)),
            ("frequency_penalty", json!(-1)),
            ("suffix", json!("end")),
            ("json_schema", json!({})),
            ("grammar", json!("root ::= \"a\"")),
            ("modalities", json!(["text", "audio"])),
        ] {
            let mut b = Map::new();
            b.insert(k.to_string(), v);
            let e = check(&b).unwrap_err();
            assert_eq!((e.status.as_u16(), e.param), (400, Some(k)));
        }
    }
}

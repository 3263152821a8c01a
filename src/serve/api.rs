//! The request bodies of the OpenAI API as clients send them (stage one of
//! the configuration: what the user typed). Fields that would change the
//! answer but are not supported are refused before these are read
//! ([`super::fields`]); fields that change nothing (`user`, ...) are
//! accepted and ignored, as frontends send them.

use serde::Deserialize;
use serde_json::Value;

use super::error::ApiError;

/// Fields shared by chat and text completions.
#[derive(Debug, Default, Deserialize)]
pub struct Common {
    pub model: Option<String>,
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    /// Not in OpenAI's API, but common in local servers.
    pub top_k: Option<i64>,
    pub seed: Option<serde_json::Number>,
    pub stop: Option<Stop>,
    #[serde(default)]
    pub stream: bool,
    pub stream_options: Option<StreamOptions>,
    pub n: Option<i64>,
    /// Token id → bias (see [`super::config::logit_bias`]).
    pub logit_bias: Option<Value>,
    /// dlogp's extension: the decoding configuration and response options
    /// (see [`super::config::dlogp_object`]).
    pub dlogp: Option<Value>,
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// `stop`: one string or a list.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Stop {
    One(String),
    Many(Vec<String>),
}

/// `POST /v1/chat/completions`.
#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<Message>,
    #[serde(default)]
    pub logprobs: bool,
    pub top_logprobs: Option<i64>,
    #[serde(flatten)]
    pub common: Common,
}

#[derive(Debug, Deserialize)]
pub struct Message {
    pub role: String,
    #[serde(default)]
    pub content: Option<Content>,
}

/// A message's content: text, or a list of parts of which the text parts count.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Content {
    Text(String),
    Parts(Vec<Part>),
}

#[derive(Debug, Deserialize)]
pub struct Part {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub text: Option<String>,
}

impl Content {
    /// The text of the message; non-text parts are an error.
    pub fn text(&self) -> Result<String, ApiError> {
        match self {
            Content::Text(t) => Ok(t.clone()),
            Content::Parts(parts) => {
                let mut out = String::new();
                for p in parts {
                    match (p.kind.as_str(), &p.text) {
                        ("text", Some(t)) => out.push_str(t),
                        (kind, _) => {
                            return Err(ApiError::invalid(
                                "messages",
                                format!(
                                    "content parts of type `{kind}` are not supported; only text"
                                ),
                            ))
                        }
                    }
                }
                Ok(out)
            }
        }
    }
}

/// `POST /v1/completions`.
#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub prompt: Prompt,
    /// The number of alternatives per token (legacy completions API).
    pub logprobs: Option<i64>,
    #[serde(default)]
    pub echo: bool,
    /// Accepted when it equals `n` (no choice is then left out).
    pub best_of: Option<i64>,
    #[serde(flatten)]
    pub common: Common,
}

/// A completion prompt: text, token ids, or a list of either (a batch).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Prompt {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<u32>),
    TokenLists(Vec<Vec<u32>>),
}

//! From input rows to token sequences: chat templates (rendered exactly as
//! the GGUF's Jinja template says) or raw text, then the model's tokenizer.

use super::chat::{ChatMessage, ChatTemplate};
use super::model::Model;
use super::score::ScoreSequence;
use super::RuntimeError;
use crate::io::RowBody;

/// How prompts are turned into text before tokenization.
pub struct PromptFormat {
    template: Option<ChatTemplate>,
    bos: String,
    eos: String,
    add_bos: bool,
    /// The longest token text in bytes: no token stands for more input
    /// bytes, so a text of more than `n · max_token_bytes` bytes has more
    /// than `n` tokens, known without tokenizing it.
    max_token_bytes: usize,
}

/// The longest token text of `model`'s vocabulary, in bytes (at least 1;
/// 64 when the GGUF has no token list, which llama.cpp would have refused).
fn max_token_bytes(model: &Model) -> usize {
    model
        .header()
        .get("tokenizer.ggml.tokens")
        .and_then(|v| v.as_array())
        .map(|a| {
            a.items
                .iter()
                .filter_map(|t| t.as_str())
                .map(str::len)
                .max()
                .unwrap_or(1)
        })
        .unwrap_or(64)
        .max(1)
}

impl PromptFormat {
    /// Use the model's chat template unless `raw` is set (or the model has
    /// none, in which case prompts are used as written).
    pub fn for_model(model: &Model, raw: bool) -> Result<PromptFormat, RuntimeError> {
        let template = match (raw, model.chat_template()) {
            (false, Some(source)) => {
                Some(
                    ChatTemplate::new(source).map_err(|e| RuntimeError::InvalidOption {
                        name: "chat template",
                        reason: format!(
                            "{}: {e}\nhint: pass `raw` to skip it",
                            model.path().display()
                        ),
                    })?,
                )
            }
            _ => None,
        };
        let vocab = model.llama().vocab();
        Ok(PromptFormat {
            template,
            bos: model.special_text(vocab.bos()),
            eos: model.special_text(vocab.eos()),
            add_bos: vocab.should_add_bos(),
            max_token_bytes: max_token_bytes(model),
        })
    }

    /// Whether a chat template is applied.
    pub fn uses_template(&self) -> bool {
        self.template.is_some()
    }

    /// The prompt text for a single user turn.
    pub fn user_prompt(&self, prompt: &str) -> Result<String, String> {
        match &self.template {
            None => Ok(prompt.to_string()),
            Some(t) => t
                .render(
                    &[ChatMessage {
                        role: "user".to_string(),
                        content: prompt.to_string(),
                    }],
                    true,
                    &self.bos,
                    &self.eos,
                )
                .map_err(|e| e.to_string()),
        }
    }

    /// The prompt text for a conversation, ready for the assistant's turn.
    pub fn chat_prompt(&self, messages: &[ChatMessage]) -> Result<String, String> {
        match &self.template {
            None => Err("chat rows need a chat template, and this model has none \
                         (or --raw was given)\nhint: use {\"prompt\", \"response\"} rows"
                .to_string()),
            Some(t) => t
                .render(messages, true, &self.bos, &self.eos)
                .map_err(|e| e.to_string()),
        }
    }

    /// Tokenize a prompt, adding BOS when the model wants one and the
    /// rendered text does not already start with it.
    pub fn tokenize_prompt(&self, model: &Model, text: &str) -> Vec<super::Token> {
        let has_bos = !self.bos.is_empty() && text.starts_with(&self.bos);
        model.tokenize(text, self.add_bos && !has_bos)
    }

    /// Tokenize a prompt that must leave room for at least one new token in
    /// a context of `n_ctx`. A text too long by its bytes alone is refused
    /// before tokenizing (a 10 MB line would otherwise cost ~600 MB).
    pub fn tokenize_prompt_within(
        &self,
        model: &Model,
        text: &str,
        n_ctx: usize,
        label: &str,
    ) -> Result<Vec<super::Token>, RuntimeError> {
        self.check_bytes(text.len(), n_ctx, label)?;
        let tokens = self.tokenize_prompt(model, text);
        if tokens.len() + 1 > n_ctx {
            return Err(RuntimeError::PromptTooLong {
                row: label.to_string(),
                n_tokens: tokens.len().to_string(),
                n_ctx,
            });
        }
        Ok(tokens)
    }

    /// Refuse `n_bytes` of text that cannot fit `n_ctx` tokens whatever its
    /// content.
    pub fn check_bytes(
        &self,
        n_bytes: usize,
        n_ctx: usize,
        label: &str,
    ) -> Result<(), RuntimeError> {
        let cap = n_ctx.saturating_mul(self.max_token_bytes.max(1));
        if n_bytes > cap {
            return Err(RuntimeError::PromptTooLong {
                row: label.to_string(),
                n_tokens: format!("more than {n_ctx} (it is {n_bytes} bytes long)"),
                n_ctx,
            });
        }
        Ok(())
    }

    /// The prompt and the scored response of a row.
    pub fn score_sequence(
        &self,
        model: &Model,
        body: &RowBody,
        label: String,
    ) -> Result<ScoreSequence, RuntimeError> {
        let row_err = |reason: String| RuntimeError::Row {
            row: label.clone(),
            reason,
        };
        let (prompt, response) = match body {
            RowBody::Completion { prompt, response } => {
                let Some(response) = response else {
                    return Err(row_err("a scored row needs a `response`".to_string()));
                };
                (self.user_prompt(prompt).map_err(row_err)?, response.clone())
            }
            RowBody::Chat { messages } => {
                let Some(last) = messages.iter().rposition(|m| m.role == "assistant") else {
                    return Err(row_err(
                        "`messages` has no assistant message to score".to_string(),
                    ));
                };
                (
                    self.chat_prompt(&messages[..last]).map_err(row_err)?,
                    messages[last].content.clone(),
                )
            }
        };
        if response.is_empty() {
            return Err(row_err("the response is empty".to_string()));
        }
        Ok(ScoreSequence {
            label: label.clone(),
            prompt: self.tokenize_prompt(model, &prompt),
            response: model.tokenize(&response, false),
        })
    }
}

//! The task contract of an adapter: how its training prompts were built and
//! how its answers were graded, stored in the adapter's GGUF metadata
//! (`dlogp.task.*`) so that `eval` reproduces them instead of METHOD.md §5's
//! `\boxed{}` prompt.
//!
//! | key | type | meaning |
//! |---|---|---|
//! | `dlogp.task.template` | string | the prompt template; `{question}` is the problem |
//! | `dlogp.task.chat_template` | bool | whether the filled template was wrapped in the model's chat template (false: `--raw`) |
//! | `dlogp.task.extraction` | string | answer extraction, methods tried in order, comma-separated: `boxed`, `gsm8k`, `last-number` |
//! | `dlogp.task.max_tokens` | u64, optional | the response limit in training (informational: eval keeps its own `max_tokens`) |
//!
//! A file with no `dlogp.task.*` key has no contract ([`TaskContract::from_metadata`]
//! gives `None`); a file with some must have the three required ones, well
//! typed, or reading it is an error naming the key. Unknown `dlogp.task.*`
//! keys are ignored (a later version may add some).
//!
//! [`Prompting::resolve`] is the one rule for what a command uses: flags
//! first, then the RL side's contract, then METHOD.md §5.

use std::fmt;
use std::path::{Path, PathBuf};

use clap::ValueEnum;

use super::run::Grader;
use super::verify::{check_template, Extraction, DEFAULT_PROMPT_TEMPLATE};
use crate::gguf::{GgufError, GgufFile, Value};

/// Prefix of every contract key.
pub const KEY_PREFIX: &str = "dlogp.task.";
pub const KEY_TEMPLATE: &str = "dlogp.task.template";
pub const KEY_CHAT_TEMPLATE: &str = "dlogp.task.chat_template";
pub const KEY_EXTRACTION: &str = "dlogp.task.extraction";
pub const KEY_MAX_TOKENS: &str = "dlogp.task.max_tokens";

/// How prompts are built and answers graded for one task.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskContract {
    /// The prompt template; contains `{question}`.
    pub template: String,
    /// Whether the filled template is wrapped in the model's chat template.
    pub chat_template: bool,
    /// Answer extraction methods, tried in order (never empty).
    pub extraction: Vec<Extraction>,
    /// The longest response in training, if known.
    pub max_tokens: Option<u64>,
}

/// A contract that could not be read or built.
#[derive(Debug, thiserror::Error)]
pub enum ContractError {
    #[error("{origin}metadata key `{key}` is missing; a task contract needs `{KEY_TEMPLATE}`, `{KEY_CHAT_TEMPLATE}` and `{KEY_EXTRACTION}`\nhint: rewrite it with `dlogp lora-meta`")]
    Missing { origin: String, key: &'static str },
    #[error("{origin}metadata key `{key}` has type {found}, expected {expected}\nhint: rewrite it with `dlogp lora-meta`")]
    WrongType {
        origin: String,
        key: &'static str,
        expected: &'static str,
        found: String,
    },
    #[error("{origin}metadata key `{key}`: unknown answer extraction {value:?}\nhint: use {} (comma-separated, tried in order)", known_extractions())]
    UnknownExtraction {
        origin: String,
        key: &'static str,
        value: String,
    },
    #[error("{origin}metadata key `{key}`: no answer extraction method\nhint: use {} (comma-separated, tried in order)", known_extractions())]
    NoExtraction { origin: String, key: &'static str },
    #[error("{origin}metadata key `{key}`: {reason}")]
    BadTemplate {
        origin: String,
        key: &'static str,
        reason: String,
    },
    #[error(transparent)]
    Gguf(#[from] GgufError),
}

fn known_extractions() -> String {
    Extraction::value_variants()
        .iter()
        .map(|e| format!("`{}`", extraction_name(*e)))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The name of an extraction method as flags and metadata write it.
pub fn extraction_name(e: Extraction) -> &'static str {
    match e {
        Extraction::Boxed => "boxed",
        Extraction::Gsm8k => "gsm8k",
        Extraction::LastNumber => "last-number",
    }
}

/// `boxed,last-number`.
pub fn extraction_list(methods: &[Extraction]) -> String {
    methods
        .iter()
        .map(|e| extraction_name(*e))
        .collect::<Vec<_>>()
        .join(",")
}

impl TaskContract {
    /// METHOD.md §5: the `\boxed{}` prompt in the chat template, graded on
    /// the last `\boxed{}` (else a GSM8K `####` line).
    pub fn method_default() -> TaskContract {
        TaskContract {
            template: DEFAULT_PROMPT_TEMPLATE.to_string(),
            chat_template: true,
            extraction: Grader::default().methods,
            max_tokens: None,
        }
    }

    /// The metadata pairs that store this contract.
    pub fn to_metadata(&self) -> Vec<(String, Value)> {
        let mut md = vec![
            (KEY_TEMPLATE.to_string(), Value::string(&self.template)),
            (
                KEY_CHAT_TEMPLATE.to_string(),
                Value::Bool(self.chat_template),
            ),
            (
                KEY_EXTRACTION.to_string(),
                Value::string(extraction_list(&self.extraction)),
            ),
        ];
        if let Some(n) = self.max_tokens {
            md.push((KEY_MAX_TOKENS.to_string(), Value::U64(n)));
        }
        md
    }

    /// The contract stored in `metadata`: `None` when no `dlogp.task.*` key
    /// is there. `origin` prefixes messages (`"path: "` or empty).
    pub fn from_metadata(
        metadata: &[(String, Value)],
        origin: &str,
    ) -> Result<Option<TaskContract>, ContractError> {
        if !metadata.iter().any(|(k, _)| k.starts_with(KEY_PREFIX)) {
            return Ok(None);
        }
        let get = |key: &'static str| metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v);
        let origin = origin.to_string();
        let required = |key: &'static str| {
            get(key).ok_or_else(|| ContractError::Missing {
                origin: origin.clone(),
                key,
            })
        };
        let wrong =
            |key: &'static str, expected: &'static str, v: &Value| ContractError::WrongType {
                origin: origin.clone(),
                key,
                expected,
                found: v.value_type().to_string(),
            };
        let v = required(KEY_TEMPLATE)?;
        let template = v
            .as_str()
            .ok_or_else(|| wrong(KEY_TEMPLATE, "string", v))?
            .to_string();
        check_template(&template).map_err(|e| ContractError::BadTemplate {
            origin: origin.clone(),
            key: KEY_TEMPLATE,
            reason: e.to_string(),
        })?;
        let v = required(KEY_CHAT_TEMPLATE)?;
        let chat_template = v
            .as_bool()
            .ok_or_else(|| wrong(KEY_CHAT_TEMPLATE, "bool", v))?;
        let v = required(KEY_EXTRACTION)?;
        let text = v
            .as_str()
            .ok_or_else(|| wrong(KEY_EXTRACTION, "string", v))?;
        let extraction = parse_extraction(text).map_err(|e| match e {
            None => ContractError::NoExtraction {
                origin: origin.clone(),
                key: KEY_EXTRACTION,
            },
            Some(value) => ContractError::UnknownExtraction {
                origin: origin.clone(),
                key: KEY_EXTRACTION,
                value,
            },
        })?;
        let max_tokens = match get(KEY_MAX_TOKENS) {
            None => None,
            Some(v) => Some(
                v.as_u64()
                    .ok_or_else(|| wrong(KEY_MAX_TOKENS, "a non-negative integer", v))?,
            ),
        };
        Ok(Some(TaskContract {
            template,
            chat_template,
            extraction,
            max_tokens,
        }))
    }

    /// The contract of the GGUF file at `path` (its header only).
    pub fn read(path: &Path) -> Result<Option<TaskContract>, ContractError> {
        let file = GgufFile::open(path)?;
        TaskContract::from_metadata(&file.metadata, &format!("{}: ", path.display()))
    }

    /// The grader this contract grades with.
    pub fn grader(&self) -> Grader {
        Grader {
            methods: self.extraction.clone(),
        }
    }
}

/// `boxed,last-number` → the methods; `Err(None)` for an empty list,
/// `Err(Some(name))` for an unknown name.
pub fn parse_extraction(text: &str) -> Result<Vec<Extraction>, Option<String>> {
    let mut out = Vec::new();
    for name in text.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let e = Extraction::from_str(name, false).map_err(|_| Some(name.to_string()))?;
        out.push(e);
    }
    if out.is_empty() {
        return Err(None);
    }
    Ok(out)
}

impl fmt::Display for TaskContract {
    /// `template "…", chat template, extraction boxed,last-number`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "template {:?}, {}, extraction {}",
            self.template,
            if self.chat_template {
                "chat template"
            } else {
                "raw (no chat template)"
            },
            extraction_list(&self.extraction)
        )?;
        if let Some(n) = self.max_tokens {
            write!(f, ", trained with max_tokens {n}")?;
        }
        Ok(())
    }
}

/// What the user set explicitly (each `None`: not given).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PromptOverrides {
    pub template: Option<String>,
    /// `Some(true)`: the chat template; `Some(false)`: raw prompts.
    pub chat_template: Option<bool>,
    /// Replaces the extraction methods.
    pub extraction: Option<Vec<Extraction>>,
    /// Appends `last-number` when it is not already there.
    pub last_number: bool,
}

/// Where the contract a command runs with came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ContractSource {
    /// The `dlogp.task.*` metadata of this RL file.
    File(PathBuf),
    /// METHOD.md §5 (no RL file, or one without a contract, or ignored).
    MethodDefault,
}

/// The resolved prompt and grading settings of a run, and where they came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prompting {
    pub contract: TaskContract,
    pub source: ContractSource,
    /// The settings the user's flags changed (`template`, `chat_template`,
    /// `extraction`), in that order.
    pub overridden: Vec<&'static str>,
}

impl Prompting {
    /// Flags first, then `found` (the RL file's contract, if it has one),
    /// then METHOD.md §5.
    pub fn resolve(found: Option<(PathBuf, TaskContract)>, flags: &PromptOverrides) -> Prompting {
        let (mut contract, source) = match found {
            Some((path, c)) => (c, ContractSource::File(path)),
            None => (
                TaskContract::method_default(),
                ContractSource::MethodDefault,
            ),
        };
        let mut overridden = Vec::new();
        if let Some(t) = &flags.template {
            if *t != contract.template {
                overridden.push("template");
            }
            contract.template = t.clone();
        }
        if let Some(chat) = flags.chat_template {
            if chat != contract.chat_template {
                overridden.push("chat_template");
            }
            contract.chat_template = chat;
        }
        let before = contract.extraction.clone();
        if let Some(e) = &flags.extraction {
            contract.extraction = e.clone();
        }
        if flags.last_number && !contract.extraction.contains(&Extraction::LastNumber) {
            contract.extraction.push(Extraction::LastNumber);
        }
        if contract.extraction != before {
            overridden.push("extraction");
        }
        Prompting {
            contract,
            source,
            overridden,
        }
    }

    /// One line for the log: the settings and where they came from.
    pub fn describe(&self) -> String {
        let from = match &self.source {
            ContractSource::File(p) => {
                format!("the task contract of {} (dlogp.task.*)", p.display())
            }
            ContractSource::MethodDefault => "METHOD.md §5 defaults".to_string(),
        };
        let mut s = format!("prompts: {} — from {from}", self.contract);
        if !self.overridden.is_empty() {
            s.push_str(&format!(
                "; overridden by flags: {}",
                self.overridden
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgufWriter;

    fn arith() -> TaskContract {
        TaskContract {
            template: "{question} Answer with just the number.".to_string(),
            chat_template: true,
            extraction: vec![Extraction::Boxed, Extraction::LastNumber],
            max_tokens: Some(48),
        }
    }

    #[test]
    fn round_trips_through_a_gguf_file() {
        for c in [
            arith(),
            TaskContract {
                template: "Q: {question}\nA:".to_string(),
                chat_template: false,
                extraction: vec![Extraction::Gsm8k],
                max_tokens: None,
            },
        ] {
            let mut w = GgufWriter::new();
            w.set("general.type", Value::string("adapter"));
            for (k, v) in c.to_metadata() {
                w.set(k, v);
            }
            let file = GgufFile::from_bytes(&w.to_bytes().unwrap()).unwrap();
            assert!(file.get_str(KEY_EXTRACTION).is_some());
            let back = TaskContract::from_metadata(&file.metadata, "").unwrap();
            assert_eq!(back, Some(c));
        }
        assert_eq!(
            arith()
                .to_metadata()
                .iter()
                .find(|(k, _)| k == KEY_EXTRACTION)
                .map(|(_, v)| v.clone()),
            Some(Value::string("boxed,last-number"))
        );
    }

    #[test]
    fn no_task_keys_is_no_contract() {
        let md = vec![("dlogp.train.seed".to_string(), Value::U64(1))];
        assert_eq!(TaskContract::from_metadata(&md, "").unwrap(), None);
    }

    fn with(key: &str, value: Value) -> Vec<(String, Value)> {
        let mut md = arith().to_metadata();
        md.retain(|(k, _)| k != key);
        md.push((key.to_string(), value));
        md
    }

    #[test]
    fn bad_metadata_names_the_key() {
        let e = TaskContract::from_metadata(
            &with(KEY_EXTRACTION, Value::string("boxed,first-number")),
            "a.gguf: ",
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("a.gguf: metadata key `dlogp.task.extraction`: unknown answer extraction \"first-number\""),
            "{e}"
        );
        assert!(e.contains("`last-number`"), "{e}");

        let e = TaskContract::from_metadata(&with(KEY_EXTRACTION, Value::string(" , ")), "")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`dlogp.task.extraction`: no answer extraction"),
            "{e}"
        );

        let e = TaskContract::from_metadata(&with(KEY_CHAT_TEMPLATE, Value::U8(1)), "")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("metadata key `dlogp.task.chat_template` has type u8, expected bool"),
            "{e}"
        );

        let e = TaskContract::from_metadata(&with(KEY_TEMPLATE, Value::string("no slot")), "")
            .unwrap_err()
            .to_string();
        assert!(e.contains("`dlogp.task.template`"), "{e}");
        assert!(e.contains("{question}"), "{e}");

        let mut md = arith().to_metadata();
        md.retain(|(k, _)| k != KEY_CHAT_TEMPLATE);
        let e = TaskContract::from_metadata(&md, "")
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("metadata key `dlogp.task.chat_template` is missing"),
            "{e}"
        );
    }

    #[test]
    fn flags_override_the_contract_which_overrides_the_method() {
        let path = PathBuf::from("a.gguf");
        let none = PromptOverrides::default();
        // the adapter's contract, untouched
        let p = Prompting::resolve(Some((path.clone(), arith())), &none);
        assert_eq!(p.contract, arith());
        assert_eq!(p.source, ContractSource::File(path.clone()));
        assert!(p.overridden.is_empty());
        assert!(
            p.describe().contains("a.gguf (dlogp.task.*)"),
            "{}",
            p.describe()
        );
        // no contract: METHOD.md §5
        let p = Prompting::resolve(None, &none);
        assert_eq!(p.contract.template, DEFAULT_PROMPT_TEMPLATE);
        assert_eq!(
            p.contract.extraction,
            vec![Extraction::Boxed, Extraction::Gsm8k]
        );
        assert!(p.contract.chat_template);
        assert_eq!(p.source, ContractSource::MethodDefault);
        // flags win, and are listed
        let flags = PromptOverrides {
            template: Some("{question}".to_string()),
            chat_template: Some(false),
            extraction: Some(vec![Extraction::Gsm8k]),
            last_number: true,
        };
        let p = Prompting::resolve(Some((path.clone(), arith())), &flags);
        assert_eq!(p.contract.template, "{question}");
        assert!(!p.contract.chat_template);
        assert_eq!(
            p.contract.extraction,
            vec![Extraction::Gsm8k, Extraction::LastNumber]
        );
        assert_eq!(p.contract.max_tokens, Some(48));
        assert_eq!(
            p.overridden,
            vec!["template", "chat_template", "extraction"]
        );
        assert!(p.describe().contains("overridden by flags: `template`"));
        // --last-number on a contract that already has it changes nothing
        let flags = PromptOverrides {
            last_number: true,
            ..PromptOverrides::default()
        };
        let p = Prompting::resolve(Some((path, arith())), &flags);
        assert_eq!(p.contract, arith());
        assert!(p.overridden.is_empty());
    }
}

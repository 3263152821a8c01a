//! Verifiable datasets from JSONL, with field mapping and presets.
//!
//! Each non-blank line is a JSON object; a [`DatasetSpec`] names the fields that
//! hold the question and the reference answer. The presets cover the common
//! layouts: GSM8K (`question`/`answer`, the final answer after `####`), MATH
//! (`problem`/`answer`) and the arithmetic sets of [`crate::eval::tasks::arith`]
//! (`question`/`answer`).

use std::collections::HashMap;
use std::io::BufRead;

use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use thiserror::Error;

use super::tasks::Task;

/// Known dataset layouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Preset {
    /// `question` / `answer`, the final answer after `####`.
    Gsm8k,
    /// `problem` / `answer`.
    Math,
    /// `question` / `answer`, as written by `dlogp tasks arith`.
    Arith,
}

/// Where a row keeps its question and answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatasetSpec {
    pub question_field: String,
    pub answer_field: String,
    /// Keep only the text after the last `####` of the answer, commas removed.
    pub gsm8k_answers: bool,
}

impl DatasetSpec {
    /// Explicit fields, answers taken as they are.
    pub fn fields(question_field: impl Into<String>, answer_field: impl Into<String>) -> Self {
        Self {
            question_field: question_field.into(),
            answer_field: answer_field.into(),
            gsm8k_answers: false,
        }
    }
}

impl Default for DatasetSpec {
    /// `question` / `answer`, the layout `dlogp tasks arith` writes.
    fn default() -> Self {
        Preset::Arith.into()
    }
}

impl From<Preset> for DatasetSpec {
    fn from(preset: Preset) -> Self {
        match preset {
            Preset::Gsm8k => Self {
                gsm8k_answers: true,
                ..Self::fields("question", "answer")
            },
            Preset::Math => Self::fields("problem", "answer"),
            Preset::Arith => Self::fields("question", "answer"),
        }
    }
}

/// Why a dataset could not be loaded. Every row error names `source:line`.
#[derive(Debug, Error)]
pub enum DatasetError {
    #[error("`{source_name}:{line}`: not valid UTF-8\nhint: convert the file to UTF-8, e.g. iconv -f latin1 -t utf-8")]
    NotUtf8 { source_name: String, line: usize },
    #[error("`{source_name}:{line}`: could not read the line")]
    Io {
        source_name: String,
        line: usize,
        #[source]
        source: std::io::Error,
    },
    #[error("`{source_name}:{line}`: not valid JSON: {source}")]
    Json {
        source_name: String,
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("`{source_name}:{line}`: expected a JSON object, found {found}")]
    NotAnObject {
        source_name: String,
        line: usize,
        found: &'static str,
    },
    #[error(
        "`{source_name}:{line}`: missing field `{field}`\nhint: the row has fields {available}; choose others with `question_field` / `answer_field` or a `preset`"
    )]
    MissingField {
        source_name: String,
        line: usize,
        field: String,
        available: String,
    },
    #[error("`{source_name}:{line}`: field `{field}` must be a string or a number, found {found}")]
    BadFieldType {
        source_name: String,
        line: usize,
        field: String,
        found: &'static str,
    },
    #[error(
        "`{source_name}:{line}`: answer has no `####` marker\nhint: the gsm8k preset expects GSM8K's `... #### 72` answers"
    )]
    NoGsm8kMarker { source_name: String, line: usize },
    #[error("`{source_name}:{line}`: field `{field}` is empty")]
    EmptyField {
        source_name: String,
        line: usize,
        field: String,
    },
    #[error("`{source_name}:{line}`: id `{id}` already used on line {first_line}")]
    DuplicateId {
        source_name: String,
        line: usize,
        id: String,
        first_line: usize,
    },
    #[error("`{source_name}` holds no rows")]
    Empty { source_name: String },
}

/// Reads tasks from JSONL.
///
/// Lines are numbered from 1; blank lines are skipped. The id comes from an `id`
/// field when present (string or number), else it is the line number. Questions
/// and answers may be strings or numbers (`72` becomes `"72"`). With
/// `spec.gsm8k_answers` the answer is the text after the last `####`, trimmed,
/// with thousands separators removed (`"... #### 1,234"` → `"1234"`).
pub fn load(
    reader: impl BufRead,
    source_name: &str,
    spec: &DatasetSpec,
) -> Result<Vec<Task>, DatasetError> {
    let mut tasks = Vec::new();
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (index, text) in reader.lines().enumerate() {
        let line = index + 1;
        let text = text.map_err(|source| {
            if source.kind() == std::io::ErrorKind::InvalidData {
                DatasetError::NotUtf8 {
                    source_name: source_name.to_owned(),
                    line,
                }
            } else {
                DatasetError::Io {
                    source_name: source_name.to_owned(),
                    line,
                    source,
                }
            }
        })?;
        let text = text.trim_start_matches('\u{feff}');
        if text.trim().is_empty() {
            continue;
        }
        let row = Row::parse(text, source_name, line)?;
        let id = row.optional_text("id")?.unwrap_or_else(|| line.to_string());
        let question = row.text(&spec.question_field)?;
        let mut answer = row.text(&spec.answer_field)?;
        if spec.gsm8k_answers {
            answer = gsm8k_final_answer(&answer).ok_or_else(|| DatasetError::NoGsm8kMarker {
                source_name: source_name.to_owned(),
                line,
            })?;
        }
        for (field, value) in [
            (&spec.question_field, &question),
            (&spec.answer_field, &answer),
        ] {
            if value.trim().is_empty() {
                return Err(DatasetError::EmptyField {
                    source_name: source_name.to_owned(),
                    line,
                    field: field.clone(),
                });
            }
        }
        if let Some(&first_line) = seen.get(&id) {
            return Err(DatasetError::DuplicateId {
                source_name: source_name.to_owned(),
                line,
                id,
                first_line,
            });
        }
        seen.insert(id.clone(), line);
        tasks.push(Task {
            id,
            question,
            answer,
        });
    }
    if tasks.is_empty() {
        return Err(DatasetError::Empty {
            source_name: source_name.to_owned(),
        });
    }
    Ok(tasks)
}

/// The text after the last `####`, trimmed, commas removed; `None` without a marker.
pub fn gsm8k_final_answer(answer: &str) -> Option<String> {
    let (_, tail) = answer.rsplit_once("####")?;
    Some(tail.trim().replace(',', ""))
}

/// One parsed row with the context its errors need.
struct Row<'a> {
    object: Map<String, Value>,
    source_name: &'a str,
    line: usize,
}

impl<'a> Row<'a> {
    fn parse(text: &str, source_name: &'a str, line: usize) -> Result<Self, DatasetError> {
        let value: Value = serde_json::from_str(text).map_err(|source| DatasetError::Json {
            source_name: source_name.to_owned(),
            line,
            source,
        })?;
        match value {
            Value::Object(object) => Ok(Self {
                object,
                source_name,
                line,
            }),
            other => Err(DatasetError::NotAnObject {
                source_name: source_name.to_owned(),
                line,
                found: kind(&other),
            }),
        }
    }

    /// A required string-or-number field as text.
    fn text(&self, field: &str) -> Result<String, DatasetError> {
        self.optional_text(field)?
            .ok_or_else(|| DatasetError::MissingField {
                source_name: self.source_name.to_owned(),
                line: self.line,
                field: field.to_owned(),
                available: self.field_list(),
            })
    }

    /// An optional string-or-number field as text; `None` when absent.
    fn optional_text(&self, field: &str) -> Result<Option<String>, DatasetError> {
        match self.object.get(field) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Number(n)) => Ok(Some(n.to_string())),
            Some(other) => Err(DatasetError::BadFieldType {
                source_name: self.source_name.to_owned(),
                line: self.line,
                field: field.to_owned(),
                found: kind(other),
            }),
        }
    }

    fn field_list(&self) -> String {
        if self.object.is_empty() {
            return "none".to_owned();
        }
        let names: Vec<String> = self.object.keys().map(|k| format!("`{k}`")).collect();
        names.join(", ")
    }
}

fn kind(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufReader, Cursor};

    fn load_str(text: &str, spec: &DatasetSpec) -> Result<Vec<Task>, DatasetError> {
        load(Cursor::new(text), "data.jsonl", spec)
    }

    #[test]
    fn gsm8k_rows_keep_the_final_answer() {
        let text = concat!(
            r#"{"question": "How many?", "answer": "48/2 = <<48/2=24>>24\n#### 72"}"#,
            "\n",
            r#"{"question": "And now?", "answer": "lots\n#### 1,234 "}"#,
            "\n",
        );
        let tasks = load_str(text, &Preset::Gsm8k.into()).unwrap();
        assert_eq!(
            tasks,
            [
                Task {
                    id: "1".into(),
                    question: "How many?".into(),
                    answer: "72".into()
                },
                Task {
                    id: "2".into(),
                    question: "And now?".into(),
                    answer: "1234".into()
                },
            ]
        );
        let err = load_str(
            r#"{"question": "q", "answer": "72"}"#,
            &Preset::Gsm8k.into(),
        );
        assert!(matches!(
            err,
            Err(DatasetError::NoGsm8kMarker { line: 1, .. })
        ));
    }

    #[test]
    fn math_rows_use_problem_and_ids() {
        let text = concat!(
            "\n",
            r#"{"id": "algebra/12", "problem": "Solve $x+1=3$.", "answer": "2", "level": 3}"#,
            "\n\n",
            r#"{"id": 7, "problem": "Find $\\frac{1}{2}$.", "answer": "\\frac{1}{2}"}"#,
            "\n",
        );
        let tasks = load_str(text, &Preset::Math.into()).unwrap();
        assert_eq!(tasks.len(), 2);
        assert_eq!(tasks[0].id, "algebra/12");
        assert_eq!(tasks[0].question, "Solve $x+1=3$.");
        assert_eq!(tasks[1].id, "7");
        assert_eq!(tasks[1].answer, "\\frac{1}{2}");
    }

    #[test]
    fn missing_field_names_the_line_and_field() {
        let text = "{\"problem\": \"a\", \"answer\": \"1\"}\n\n{\"question\": \"b\"}\n";
        let err = load_str(text, &Preset::Math.into()).unwrap_err();
        let DatasetError::MissingField { line, field, .. } = &err else {
            panic!("unexpected {err:?}");
        };
        assert_eq!((*line, field.as_str()), (3, "problem"));
        let message = err.to_string();
        assert!(
            message.starts_with("`data.jsonl:3`: missing field `problem`"),
            "{message}"
        );
        assert!(
            message.contains("the row has fields `question`"),
            "{message}"
        );
    }

    #[test]
    fn numeric_answers_become_strings() {
        let text = "{\"question\": \"What is 2 + 2?\", \"answer\": 4}\n{\"question\": \"Half?\", \"answer\": 0.5}";
        let tasks = load_str(text, &DatasetSpec::default()).unwrap();
        assert_eq!(tasks[0].answer, "4");
        assert_eq!(tasks[1].answer, "0.5");
    }

    #[test]
    fn explicit_fields() {
        let spec = DatasetSpec::fields("prompt", "target");
        let tasks = load_str(r#"{"prompt": "p", "target": "t"}"#, &spec).unwrap();
        assert_eq!(
            (tasks[0].question.as_str(), tasks[0].answer.as_str()),
            ("p", "t")
        );
    }

    #[test]
    fn bad_inputs_are_errors() {
        let spec = DatasetSpec::default();
        assert!(matches!(
            load_str("", &spec),
            Err(DatasetError::Empty { .. })
        ));
        assert!(matches!(
            load_str("\n  \n", &spec),
            Err(DatasetError::Empty { .. })
        ));
        assert!(matches!(
            load_str("{oops", &spec),
            Err(DatasetError::Json { line: 1, .. })
        ));
        assert!(matches!(
            load_str("[1, 2]", &spec),
            Err(DatasetError::NotAnObject {
                found: "an array",
                ..
            })
        ));
        assert!(matches!(
            load_str(r#"{"question": ["x"], "answer": "1"}"#, &spec),
            Err(DatasetError::BadFieldType {
                found: "an array",
                ..
            })
        ));
        assert!(matches!(
            load_str(r#"{"question": "  ", "answer": "1"}"#, &spec),
            Err(DatasetError::EmptyField { .. })
        ));
        let dup = "{\"id\": \"a\", \"question\": \"q\", \"answer\": \"1\"}\n{\"id\": \"a\", \"question\": \"q\", \"answer\": \"1\"}";
        assert!(matches!(
            load_str(dup, &spec),
            Err(DatasetError::DuplicateId {
                line: 2,
                first_line: 1,
                ..
            })
        ));
        let invalid_utf8: &[u8] = b"{\"question\": \"\xff\", \"answer\": \"1\"}";
        assert!(matches!(
            load(invalid_utf8, "bin.jsonl", &spec),
            Err(DatasetError::NotUtf8 { line: 1, .. })
        ));
    }

    #[test]
    fn arith_output_round_trips() {
        let tasks = crate::eval::tasks::arith(25, 3, None);
        let text: String = tasks
            .iter()
            .map(|t| serde_json::to_string(t).unwrap() + "\n")
            .collect();
        assert_eq!(load_str(&text, &Preset::Arith.into()).unwrap(), tasks);
    }

    #[test]
    fn invalid_utf8_names_the_line() {
        let bad = b"{\"question\": \"a\", \"answer\": \"1\"}\n{\"question\": \"caf\xe9\", \"answer\": \"2\"}\n";
        let e = load(&bad[..], "d.jsonl", &DatasetSpec::from(Preset::Arith))
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("`d.jsonl:2`: not valid UTF-8"), "{e}");
    }

    #[test]
    fn preset_names() {
        assert_eq!(serde_json::to_string(&Preset::Gsm8k).unwrap(), "\"gsm8k\"");
        assert_eq!(Preset::from_str("math", false), Ok(Preset::Math));
        assert_eq!(Preset::from_str("gsm8k", false), Ok(Preset::Gsm8k));
    }

    #[test]
    #[allow(clippy::print_stderr)] // the skip note
    fn real_gsm8k_prefix() {
        let path = "/work/shared/data/gsm8k/train.jsonl";
        let Ok(file) = std::fs::File::open(path) else {
            eprintln!("note: {path} absent, skipping");
            return;
        };
        let head: String = BufReader::new(file)
            .lines()
            .take(20)
            .map(|l| l.unwrap() + "\n")
            .collect();
        let tasks = load(Cursor::new(head), path, &Preset::Gsm8k.into()).unwrap();
        assert_eq!(tasks.len(), 20);
        assert_eq!(tasks[0].answer, "72");
        for t in &tasks {
            assert!(!t.question.trim().is_empty());
            let digits = t.answer.strip_prefix('-').unwrap_or(&t.answer);
            assert!(
                !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()),
                "{t:?}"
            );
        }
    }
}

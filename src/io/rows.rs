//! JSONL input rows: `{"id"?, "prompt", "response"}` or `{"id"?, "messages"}`.

use std::collections::HashMap;
use std::io::BufRead;
use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::runtime::ChatMessage;

/// One input row, with where it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct InputRow {
    /// The row's `id`, or its 1-based line number when absent.
    pub id: Value,
    /// 1-based line number in the input.
    pub line: usize,
    pub body: RowBody,
}

/// What a row holds.
#[derive(Debug, Clone, PartialEq)]
pub enum RowBody {
    /// A plain prompt; `response` is absent for generation inputs.
    Completion {
        prompt: String,
        response: Option<String>,
    },
    /// A chat conversation.
    Chat { messages: Vec<ChatMessage> },
}

/// A row that cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum RowsError {
    #[error("{source_name}: could not read: {error}")]
    Io {
        source_name: String,
        error: std::io::Error,
    },
    #[error("{source_name}:{line}: {reason}")]
    Invalid {
        source_name: String,
        line: usize,
        reason: String,
    },
    #[error("{source_name}: no rows (the input is empty)")]
    Empty { source_name: String },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRow {
    id: Option<Value>,
    prompt: Option<String>,
    response: Option<String>,
    messages: Option<Vec<ChatMessage>>,
}

/// Read JSONL rows from a file, or from stdin for `-`.
pub fn read_rows_from(path: &Path) -> Result<Vec<InputRow>, RowsError> {
    if crate::io::is_std_stream(path) {
        return read_rows(std::io::stdin().lock(), "<stdin>");
    }
    let source_name = path.display().to_string();
    let file = std::fs::File::open(path).map_err(|error| RowsError::Io {
        source_name: source_name.clone(),
        error,
    })?;
    read_rows(std::io::BufReader::new(file), &source_name)
}

/// Read JSONL rows. Blank lines are skipped; any other line must be a JSON
/// object of one of the two shapes. `source_name` names the input in errors.
pub fn read_rows(mut reader: impl BufRead, source_name: &str) -> Result<Vec<InputRow>, RowsError> {
    let mut rows: Vec<InputRow> = Vec::new();
    // the first line of each id, to name both lines of a duplicate
    let mut first_line: HashMap<String, usize> = HashMap::new();
    let mut buf = Vec::new();
    for line_no in 1.. {
        buf.clear();
        let read = reader
            .read_until(b'\n', &mut buf)
            .map_err(|error| RowsError::Io {
                source_name: source_name.to_string(),
                error,
            })?;
        if read == 0 {
            break;
        }
        let invalid = |reason: String| RowsError::Invalid {
            source_name: source_name.to_string(),
            line: line_no,
            reason,
        };
        let mut bytes = buf.as_slice();
        if line_no == 1 {
            // a UTF-8 byte-order mark, as some editors write
            bytes = bytes.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(bytes);
        }
        let line = std::str::from_utf8(bytes).map_err(|e| {
            invalid(format!(
                "not valid UTF-8 (byte {} of the line)\nhint: convert the file to UTF-8, e.g. iconv -f latin1 -t utf-8",
                e.valid_up_to() + 1
            ))
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let raw: RawRow =
            serde_json::from_str(line).map_err(|e| invalid(format!("invalid row: {e}")))?;
        let id = match raw.id {
            None | Some(Value::Null) => Value::from(line_no),
            Some(id @ (Value::String(_) | Value::Number(_))) => id,
            Some(other) => {
                return Err(invalid(format!(
                    "`id` must be a string or a number, got {other}"
                )))
            }
        };
        let body = match (raw.prompt, raw.messages) {
            (Some(prompt), None) => RowBody::Completion {
                prompt,
                response: raw.response,
            },
            (None, Some(messages)) => {
                if raw.response.is_some() {
                    return Err(invalid(
                        "`response` goes with `prompt`; in a `messages` row the last \
                         assistant message is the response"
                            .to_string(),
                    ));
                }
                if messages.is_empty() {
                    return Err(invalid("`messages` is empty".to_string()));
                }
                RowBody::Chat { messages }
            }
            (Some(_), Some(_)) => {
                return Err(invalid(
                    "a row has either `prompt` or `messages`, not both".to_string(),
                ))
            }
            (None, None) => {
                return Err(invalid(
                    "a row needs `prompt` (and `response`) or `messages`".to_string(),
                ))
            }
        };
        if let Some(first) = first_line.insert(id.to_string(), line_no) {
            return Err(invalid(format!(
                "duplicate id {id} (first on line {first})\nhint: ids must be unique; omit `id` to use line numbers"
            )));
        }
        rows.push(InputRow {
            id,
            line: line_no,
            body,
        });
    }
    if rows.is_empty() {
        return Err(RowsError::Empty {
            source_name: source_name.to_string(),
        });
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(text: &str) -> Result<Vec<InputRow>, RowsError> {
        read_rows(text.as_bytes(), "rows.jsonl")
    }

    #[test]
    fn both_shapes_and_default_ids() {
        let rows = read(concat!(
            "{\"prompt\": \"2+2=\", \"response\": \"4\"}\n",
            "\n",
            "{\"id\": \"q7\", \"messages\": [{\"role\": \"user\", \"content\": \"hi\"},",
            " {\"role\": \"assistant\", \"content\": \"hello\"}]}\n",
        ))
        .unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].id, Value::from(1));
        assert_eq!(
            rows[0].body,
            RowBody::Completion {
                prompt: "2+2=".into(),
                response: Some("4".into())
            }
        );
        assert_eq!(rows[1].id, Value::from("q7"));
        assert_eq!(rows[1].line, 3);
        match &rows[1].body {
            RowBody::Chat { messages } => assert_eq!(messages[1].content, "hello"),
            other => panic!("expected chat, got {other:?}"),
        }
    }

    #[test]
    fn malformed_line_names_its_number() {
        let err = read("{\"prompt\": \"a\", \"response\": \"b\"}\n{not json\n").unwrap_err();
        let msg = err.to_string();
        assert!(msg.starts_with("rows.jsonl:2: invalid row"), "{msg}");
    }

    #[test]
    fn wrong_shapes_are_errors() {
        for (text, needle) in [
            ("{\"response\": \"b\"}", "needs `prompt`"),
            ("{\"prompt\": \"a\", \"messages\": []}", "not both"),
            ("{\"messages\": []}", "`messages` is empty"),
            ("{\"id\": [1], \"prompt\": \"a\"}", "`id` must be"),
            (
                "{\"prompt\": \"a\", \"respons\": \"typo\"}",
                "unknown field `respons`",
            ),
        ] {
            let msg = read(text).unwrap_err().to_string();
            assert!(msg.contains(needle), "{text}: {msg}");
            assert!(msg.starts_with("rows.jsonl:1:"), "{msg}");
        }
        assert!(matches!(read("\n\n"), Err(RowsError::Empty { .. })));
    }

    #[test]
    fn bom_invalid_utf8_and_duplicate_ids() {
        let rows = read("\u{feff}{\"prompt\": \"a\"}\r\n{\"prompt\": \"b\"}\n").unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].id, Value::from(1));

        let bad = b"{\"prompt\": \"a\"}\n{\"prompt\": \"\xff\"}\n";
        let msg = read_rows(&bad[..], "rows.jsonl").unwrap_err().to_string();
        assert!(
            msg.starts_with("rows.jsonl:2: not valid UTF-8 (byte 13"),
            "{msg}"
        );

        let msg = read(concat!(
            "{\"id\": \"q\", \"prompt\": \"a\"}\n",
            "{\"id\": 2, \"prompt\": \"b\"}\n",
            "{\"id\": \"q\", \"prompt\": \"c\"}\n"
        ))
        .unwrap_err()
        .to_string();
        assert!(
            msg.starts_with("rows.jsonl:3: duplicate id \"q\" (first on line 1)"),
            "{msg}"
        );
        // a string id "2" and a number id 2 are different ids
        assert!(
            read("{\"id\": \"2\", \"prompt\": \"a\"}\n{\"id\": 2, \"prompt\": \"b\"}\n").is_ok()
        );
    }
}

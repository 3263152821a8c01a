//! Chat templates, rendered the way Hugging Face transformers renders them.
//!
//! A GGUF carries its chat template as Jinja source (`tokenizer.chat_template`).
//! transformers compiles it with
//! `ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
//! extensions=[loopcontrols])` (jinja2's default `keep_trailing_newline=False`),
//! overrides the `tojson` filter with `json.dumps(ensure_ascii=False, …)`, adds
//! the globals `raise_exception` and `strftime_now`, and renders with
//! `messages`, `tools`, `documents`, `add_generation_prompt` and the special
//! tokens. [`ChatTemplate`] reproduces that on minijinja, with Python string
//! and dict methods (`.strip()`, `.startswith()`, `.split()`, `.items()`, …)
//! from `minijinja_contrib::pycompat`.
//!
//! Not reproduced: transformers' `{% generation %}` tag (assistant masks), and
//! dicts passed to `tojson` list their keys sorted rather than in insertion
//! order.

use std::time::{SystemTime, UNIX_EPOCH};

use minijinja::value::{Kwargs, Value};
use minijinja::{context, Environment, Error, ErrorKind};
use serde::{Deserialize, Serialize};
use thiserror::Error;

const TEMPLATE_NAME: &str = "chat_template";

/// One turn of a conversation, as transformers' `messages` entries.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    pub role: String,
    pub content: String,
}

impl ChatMessage {
    pub fn new(role: impl Into<String>, content: impl Into<String>) -> Self {
        ChatMessage {
            role: role.into(),
            content: content.into(),
        }
    }
}

#[derive(Debug, Error)]
pub enum ChatTemplateError {
    #[error("chat template does not compile: {0}")]
    Compile(#[source] Error),
    #[error("chat template raised an exception: {0}")]
    Raised(String),
    #[error("chat template failed to render: {0}")]
    Render(#[source] Error),
}

/// The message of a template's `raise_exception(...)`, carried as the source
/// of the render error so that it can be told apart from other failures.
#[derive(Debug, Error)]
#[error("{0}")]
struct TemplateException(String);

/// A compiled chat template.
#[derive(Debug)]
pub struct ChatTemplate {
    env: Environment<'static>,
}

impl ChatTemplate {
    /// Compiles `source` once, in an environment configured as transformers'.
    pub fn new(source: &str) -> Result<ChatTemplate, ChatTemplateError> {
        let mut env = Environment::new();
        env.set_trim_blocks(true);
        env.set_lstrip_blocks(true);
        env.set_keep_trailing_newline(false);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_filter("tojson", tojson);
        env.add_function("raise_exception", raise_exception);
        env.add_function("strftime_now", strftime_now);
        env.add_template_owned(TEMPLATE_NAME, source.to_owned())
            .map_err(ChatTemplateError::Compile)?;
        Ok(ChatTemplate { env })
    }

    /// Renders the conversation. Variables as transformers passes them:
    /// `messages`, `tools` and `documents` (both none), `add_generation_prompt`,
    /// `bos_token`, `eos_token`.
    pub fn render(
        &self,
        messages: &[ChatMessage],
        add_generation_prompt: bool,
        bos_token: &str,
        eos_token: &str,
    ) -> Result<String, ChatTemplateError> {
        let template = self
            .env
            .get_template(TEMPLATE_NAME)
            .map_err(ChatTemplateError::Render)?;
        let ctx = context! {
            messages => Value::from_serialize(messages),
            tools => Value::from(()),
            documents => Value::from(()),
            add_generation_prompt => add_generation_prompt,
            bos_token => bos_token,
            eos_token => eos_token,
        };
        template.render(ctx).map_err(|err| {
            match std::error::Error::source(&err)
                .and_then(|s| s.downcast_ref::<TemplateException>())
            {
                Some(raised) => ChatTemplateError::Raised(raised.0.clone()),
                None => ChatTemplateError::Render(err),
            }
        })
    }
}

/// `raise_exception(message)`: fails the render with `message`.
fn raise_exception(message: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, message.clone())
        .with_source(TemplateException(message)))
}

/// transformers' `tojson`: `json.dumps(x, ensure_ascii=False, indent=indent)`,
/// i.e. Python's separators (`", "` and `": "`) and no HTML escaping, unlike
/// minijinja's built-in filter. `ensure_ascii`, `separators` and `sort_keys`
/// are accepted and ignored.
fn tojson(value: &Value, kwargs: Kwargs) -> Result<Value, Error> {
    let indent: Option<usize> = kwargs.get("indent")?;
    for ignored in ["ensure_ascii", "separators", "sort_keys"] {
        let _: Option<Value> = kwargs.get(ignored)?;
    }
    kwargs.assert_all_used()?;
    let mut out = Vec::new();
    let written = match indent {
        Some(n) => {
            let pad = " ".repeat(n);
            let fmt = serde_json::ser::PrettyFormatter::with_indent(pad.as_bytes());
            value.serialize(&mut serde_json::Serializer::with_formatter(&mut out, fmt))
        }
        None => value.serialize(&mut serde_json::Serializer::with_formatter(
            &mut out,
            PythonJsonFormatter,
        )),
    };
    written.map_err(|e| {
        Error::new(ErrorKind::InvalidOperation, "cannot serialize to JSON").with_source(e)
    })?;
    let json = String::from_utf8(out)
        .map_err(|e| Error::new(ErrorKind::InvalidOperation, "JSON is not UTF-8").with_source(e))?;
    Ok(Value::from_safe_string(json))
}

/// Python `json.dumps` separators without indent: `", "` and `": "`.
struct PythonJsonFormatter;

impl serde_json::ser::Formatter for PythonJsonFormatter {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            writer.write_all(b", ")
        }
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
    ) -> std::io::Result<()> {
        writer.write_all(b": ")
    }
}

/// `strftime_now(format)`: the current time formatted like Python's
/// `datetime.now().strftime(format)`, but in UTC and for the C locale.
/// Supported: `%Y %y %m %d %e %H %M %S %j %b %B %a %A %p %I %%`; any other
/// directive is copied through unchanged.
fn strftime_now(format: String) -> String {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    strftime_utc(&format, secs)
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const WEEKDAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Formats `unix_secs` (UTC) with the directives listed on [`strftime_now`].
fn strftime_utc(format: &str, unix_secs: u64) -> String {
    let days = unix_secs / 86_400;
    let sod = unix_secs % 86_400;
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (sod / 3600, sod % 3600 / 60, sod % 60);
    // 1970-01-01 was a Thursday (index 3 with Monday = 0).
    let weekday = ((days + 3) % 7) as usize;
    let month_name = MONTHS[(month as usize).saturating_sub(1) % 12];
    let day_of_year = days - days_from_civil(year, 1, 1) + 1;
    let hour12 = if hour % 12 == 0 { 12 } else { hour % 12 };

    let mut out = String::with_capacity(format.len() + 16);
    let mut chars = format.chars();
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('Y') => out.push_str(&year.to_string()),
            Some('y') => out.push_str(&format!("{:02}", year % 100)),
            Some('m') => out.push_str(&format!("{month:02}")),
            Some('d') => out.push_str(&format!("{day:02}")),
            Some('e') => out.push_str(&format!("{day:>2}")),
            Some('H') => out.push_str(&format!("{hour:02}")),
            Some('I') => out.push_str(&format!("{hour12:02}")),
            Some('M') => out.push_str(&format!("{minute:02}")),
            Some('S') => out.push_str(&format!("{second:02}")),
            Some('p') => out.push_str(if hour < 12 { "AM" } else { "PM" }),
            Some('j') => out.push_str(&format!("{day_of_year:03}")),
            Some('B') => out.push_str(month_name),
            Some('b') => out.push_str(&month_name[..3]),
            Some('A') => out.push_str(WEEKDAYS[weekday]),
            Some('a') => out.push_str(&WEEKDAYS[weekday][..3]),
            Some('%') => out.push('%'),
            Some(other) => {
                out.push('%');
                out.push(other);
            }
            None => out.push('%'),
        }
    }
    out
}

/// (year, month 1–12, day 1–31) of a day count since 1970-01-01
/// (Howard Hinnant's `civil_from_days`, for non-negative day counts).
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    (year, month, day)
}

/// Days since 1970-01-01 of a date in 1970 or later (inverse of [`civil_from_days`]).
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y % 400;
    let m = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * m + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).saturating_sub(719_468)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CHATML: &str = "{% for message in messages %}{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";

    /// `tokenizer.chat_template` of SmolLM2-135M-Instruct (from
    /// gguf/SmolLM2-135M-Instruct.Q4_1.gguf), byte for byte.
    const SMOLLM2: &str = "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}";

    fn user(content: &str) -> ChatMessage {
        ChatMessage::new("user", content)
    }

    #[test]
    fn chatml_renders_exactly() {
        let t = ChatTemplate::new(CHATML).unwrap();
        let msgs = [
            ChatMessage::new("system", "Be brief."),
            user("Hi"),
            ChatMessage::new("assistant", "Hello!"),
        ];
        assert_eq!(
            t.render(&msgs, false, "", "").unwrap(),
            "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
             <|im_start|>assistant\nHello!<|im_end|>\n"
        );
        assert_eq!(
            t.render(&[user("2+2?")], true, "", "").unwrap(),
            "<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn smollm2_inserts_its_default_system_prompt() {
        // Expected strings from jinja2 3.x ImmutableSandboxedEnvironment(
        // trim_blocks=True, lstrip_blocks=True), i.e. transformers.
        let t = ChatTemplate::new(SMOLLM2).unwrap();
        assert_eq!(
            t.render(&[user("What is 2+2?")], true, "<|im_start|>", "<|im_end|>")
                .unwrap(),
            "<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n\
             <|im_start|>user\nWhat is 2+2?<|im_end|>\n<|im_start|>assistant\n"
        );
        let msgs = [
            ChatMessage::new("system", "Be terse."),
            user("Hi"),
            ChatMessage::new("assistant", "Hello!"),
        ];
        assert_eq!(
            t.render(&msgs, false, "", "").unwrap(),
            "<|im_start|>system\nBe terse.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n\
             <|im_start|>assistant\nHello!<|im_end|>\n"
        );
    }

    #[test]
    fn whitespace_control_matches_transformers() {
        // jinja2 with trim_blocks + lstrip_blocks renders this to 'S=sys\nUSER: hi\nA:'
        // (and drops the template's final newline: keep_trailing_newline=False).
        let src = "{%- for m in messages %}\n    {% if m.role == 'system' %}\nS={{ m.content.strip() }}\n    {% else %}\n{{ m.role.upper() }}: {{ m.content }}\n    {% endif %}\n{% endfor %}\n{% if add_generation_prompt %}A:{% endif %}\n";
        let t = ChatTemplate::new(src).unwrap();
        let msgs = [ChatMessage::new("system", "  sys  "), user("hi")];
        assert_eq!(
            t.render(&msgs, true, "", "").unwrap(),
            "S=sys\nUSER: hi\nA:"
        );
        let t = ChatTemplate::new("{{ 'a' }}\n\n").unwrap();
        assert_eq!(t.render(&[], false, "", "").unwrap(), "a\n");
    }

    #[test]
    fn python_string_methods_work() {
        let t = ChatTemplate::new(
            "{{ messages[0].content.strip() }}|{{ messages[0].content.startswith('  h') }}|\
             {{ messages[0].content.split() }}|{{ bos_token }}{{ eos_token }}",
        )
        .unwrap();
        assert_eq!(
            t.render(&[user("  hi there ")], false, "<s>", "</s>")
                .unwrap(),
            "hi there|True|[\"hi\", \"there\"]|<s></s>"
        );
    }

    #[test]
    fn raise_exception_surfaces_its_message() {
        let t = ChatTemplate::new(
            "{% if messages[0]['role'] != 'system' %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}",
        )
        .unwrap();
        let err = t.render(&[user("x")], false, "", "").unwrap_err();
        assert!(matches!(err, ChatTemplateError::Raised(_)), "{err:?}");
        assert_eq!(
            err.to_string(),
            "chat template raised an exception: Conversation roles must alternate user/assistant/user/assistant/..."
        );
    }

    #[test]
    fn compile_and_render_errors_are_specific() {
        let err = ChatTemplate::new("{% for m in messages %}").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("chat template does not compile: "),
            "{err}"
        );
        let t = ChatTemplate::new("{{ messages[0]['content'] + 1 }}").unwrap();
        let err = t.render(&[user("x")], false, "", "").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("chat template failed to render: "),
            "{err}"
        );
    }

    #[test]
    fn tojson_matches_python_json_dumps() {
        // json.dumps({...}, ensure_ascii=False) in CPython 3.11
        let t = ChatTemplate::new(
            "{{ {'args': [1, 2.5, \"a'b\"], 'n': none, 'name': 'f<x>', 't': true} | tojson }}\n\
             {{ {'a': [1, {'b': []}]} | tojson(indent=2) }}",
        )
        .unwrap();
        assert_eq!(
            t.render(&[], false, "", "").unwrap(),
            "{\"args\": [1, 2.5, \"a'b\"], \"n\": null, \"name\": \"f<x>\", \"t\": true}\n\
             {\n  \"a\": [\n    1,\n    {\n      \"b\": []\n    }\n  ]\n}"
        );
    }

    #[test]
    fn strftime_formats_known_dates() {
        // 2024-02-29 13:05:09 UTC, a Thursday: 1709211909
        let s = strftime_utc(
            "%d %b %Y|%B %e %y|%H:%M:%S %I%p|%a %A|%j|%%|%Q",
            1_709_211_909,
        );
        assert_eq!(
            s,
            "29 Feb 2024|February 29 24|13:05:09 01PM|Thu Thursday|060|%|%Q"
        );
        assert_eq!(strftime_utc("%Y-%m-%d %a", 0), "1970-01-01 Thu");
        // 2000-12-31: day 366 of a leap year.
        assert_eq!(strftime_utc("%j %A", 978_220_800), "366 Sunday");
        let now = ChatTemplate::new("{{ strftime_now('%Y') }}").unwrap();
        let year: u32 = now.render(&[], false, "", "").unwrap().parse().unwrap();
        assert!(year >= 2025);
    }
}

//! Answer extraction and equivalence checking for verifiable evaluation
//! (METHOD.md §5).
//!
//! The pipeline is: build the prompt with [`prompt_for`], pull the final
//! answer out of a response with [`extract`] (the last `\boxed{...}`,
//! GSM8K's `####`, or, only when asked for, the last number), then compare it
//! with the reference with [`is_equivalent`].
//!
//! Equivalence goes through [`normalize`]: an answer that reads as a number
//! becomes an exact [`Rational`] (no floating point anywhere), anything else a
//! canonical lowercase string. Choices worth knowing:
//!
//! - The percent sign is stripped: `50%` and `50\%` are the number 50, not 1/2
//!   (graders compare the number the reference writes).
//! - `$` signs, `\text{}`/`\mathrm{}` wrappers, LaTeX spacing (`\,`, `\!`),
//!   degree signs, a trailing period and trailing unit words (`12 dollars`,
//!   `5 cm^2`) are ignored. Unit words must be separated from the number by
//!   whitespace (or come from a `\text{}` wrapper), so `5x` stays text.
//! - A short variable on the left (`x = 5`) is dropped when the right side is
//!   a number.
//! - Numbers too large for `i128` fall back to text in a canonical form
//!   (separators and leading zeros removed), so they still compare with
//!   themselves written differently; nothing here panics on any input.

use std::fmt;

use serde::{Deserialize, Serialize};

/// The placeholder a prompt template must contain.
pub const QUESTION_PLACEHOLDER: &str = "{question}";

/// The prompt of METHOD.md §5 (before the model's chat template is applied).
pub const DEFAULT_PROMPT_TEMPLATE: &str =
    "{question}\nPlease reason step by step, and put your final answer within \\boxed{}.";

/// Errors of this module.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// A prompt template without `{question}`.
    #[error(
        "prompt template {template:?} has no `{{question}}` placeholder\n\
         hint: put `{{question}}` where the problem text should go"
    )]
    MissingPlaceholder { template: String },
}

/// Checks that `template` has a `{question}` placeholder; call it where a
/// user-supplied template enters the configuration.
pub fn check_template(template: &str) -> Result<(), VerifyError> {
    if template.contains(QUESTION_PLACEHOLDER) {
        Ok(())
    } else {
        Err(VerifyError::MissingPlaceholder {
            template: template.to_string(),
        })
    }
}

/// Fills `{question}` in `template` (every occurrence, in one pass, so a
/// question that itself contains `{question}` is left alone). A template
/// without the placeholder gets the question on a line before it.
pub fn prompt_for(question: &str, template: &str) -> String {
    if template.contains(QUESTION_PLACEHOLDER) {
        template.replace(QUESTION_PLACEHOLDER, question)
    } else {
        format!("{question}\n{template}")
    }
}

/// How to pull the final answer out of a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum Extraction {
    /// The last `\boxed{...}` (or `\fbox{...}`).
    Boxed,
    /// The text after the last `####` (GSM8K references).
    Gsm8k,
    /// The last number anywhere in the text (an explicit fallback).
    LastNumber,
}

impl Extraction {
    /// Applies this one method.
    pub fn apply(self, text: &str) -> Option<String> {
        match self {
            Extraction::Boxed => extract_boxed(text),
            Extraction::Gsm8k => extract_gsm8k(text),
            Extraction::LastNumber => extract_last_number(text),
        }
    }
}

/// The answer from the first method in `methods` that yields one.
pub fn extract(text: &str, methods: &[Extraction]) -> Option<String> {
    methods.iter().find_map(|m| m.apply(text))
}

const BOX_COMMANDS: [&str; 2] = ["\\boxed", "\\fbox"];

/// The content of the last `\boxed{...}` or `\fbox{...}`, with nested braces
/// balanced (escaped `\{`, `\}` do not count).
///
/// The last command decides: if its braces never close (a truncated
/// response), the result is `None`, not an earlier box. `\boxed 5` (a space,
/// no braces, as the MATH grader accepts) yields the token up to the next
/// whitespace or `$`. An empty box yields `None`.
pub fn extract_boxed(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut last: Option<(usize, usize)> = None; // (start, end of command)
    for cmd in BOX_COMMANDS {
        let mut from = 0;
        while let Some(pos) = text.get(from..).and_then(|t| t.find(cmd)) {
            let start = from + pos;
            let end = start + cmd.len();
            let is_command = !bytes.get(end).is_some_and(|b| b.is_ascii_alphabetic());
            if is_command && last.is_none_or(|(s, _)| start > s) {
                last = Some((start, end));
            }
            from = end;
        }
    }
    let (_, end) = last?;
    let rest = text.get(end..)?;
    let trimmed = rest.trim_start();
    if let Some(inner) = trimmed.strip_prefix('{') {
        let close = matching_brace(inner)?;
        non_empty(inner.get(..close)?)
    } else if rest.starts_with(char::is_whitespace) {
        let token = trimmed
            .split(|c: char| c.is_whitespace() || c == '$')
            .next()?;
        non_empty(token)
    } else {
        None
    }
}

/// The text after the last `####`, first line only, trimmed.
pub fn extract_gsm8k(text: &str) -> Option<String> {
    let pos = text.rfind("####")?;
    let rest = text.get(pos + 4..)?.trim_start();
    non_empty(rest.lines().next()?)
}

/// The last number in `text`: an integer (optionally with `1,234`
/// separators), a decimal (`.5`, `2.75`), a fraction (`3/4`), each with an
/// optional `-` or `−` sign when that sign does not follow a letter, digit or
/// closing bracket (so `3-2` ends in `2`, not `-2`). A trailing period is not
/// part of the number.
pub fn extract_last_number(text: &str) -> Option<String> {
    const UNICODE_MINUS: &[u8] = "−".as_bytes();
    let bytes = text.as_bytes();
    let mut last = None;
    let mut i = 0;
    while i < bytes.len() {
        let sign_len = if bytes[i] == b'-' {
            1
        } else if bytes[i..].starts_with(UNICODE_MINUS) {
            UNICODE_MINUS.len()
        } else {
            0
        };
        let sign_ok = sign_len > 0
            && (i == 0
                || !(bytes[i - 1].is_ascii_alphanumeric() || matches!(bytes[i - 1], b')' | b']')));
        let body = if sign_ok { i + sign_len } else { i };
        if starts_number(bytes, body) {
            let end = scan_unsigned_number(bytes, body);
            last = Some((i, end));
            i = end;
        } else {
            i += sign_len.max(1);
        }
    }
    let (start, end) = last?;
    let found = text.get(start..end)?;
    Some(found.replace('−', "-"))
}

fn starts_number(bytes: &[u8], i: usize) -> bool {
    match bytes.get(i) {
        Some(b) if b.is_ascii_digit() => true,
        Some(b'.') => bytes.get(i + 1).is_some_and(u8::is_ascii_digit),
        _ => false,
    }
}

fn digits_end(bytes: &[u8], mut j: usize) -> usize {
    while bytes.get(j).is_some_and(u8::is_ascii_digit) {
        j += 1;
    }
    j
}

/// End of the unsigned number starting at `start` (see [`extract_last_number`]).
fn scan_unsigned_number(bytes: &[u8], start: usize) -> usize {
    let mut j = digits_end(bytes, start);
    if (1..=3).contains(&(j - start)) {
        while bytes.get(j) == Some(&b',') && digits_end(bytes, j + 1) == j + 4 {
            j += 4;
        }
    }
    if bytes.get(j) == Some(&b'.') && bytes.get(j + 1).is_some_and(u8::is_ascii_digit) {
        j = digits_end(bytes, j + 1);
    }
    if bytes.get(j) == Some(&b'/') && bytes.get(j + 1).is_some_and(u8::is_ascii_digit) {
        j = digits_end(bytes, j + 1);
    }
    j
}

fn non_empty(s: &str) -> Option<String> {
    let t = s.trim();
    (!t.is_empty()).then(|| t.to_string())
}

/// Index in `s` of the `}` closing a `{` just before `s`, or `None`.
fn matching_brace(s: &str) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut depth = 1usize;
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'\\' => i += 1,
            b'{' => depth += 1,
            b'}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(i);
                }
            }
            _ => {}
        }
        i += 1;
    }
    None
}

/// An exact rational number: reduced, with a positive denominator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rational {
    numer: i128,
    denom: i128,
}

impl Rational {
    /// `numer / denom` reduced; `None` for a zero denominator or overflow.
    pub fn new(numer: i128, denom: i128) -> Option<Self> {
        if denom == 0 {
            return None;
        }
        let g = i128::try_from(gcd(numer.unsigned_abs(), denom.unsigned_abs())).ok()?;
        let (mut numer, mut denom) = (numer / g, denom / g);
        if denom < 0 {
            numer = numer.checked_neg()?;
            denom = denom.checked_neg()?;
        }
        Some(Rational { numer, denom })
    }

    /// The integer `n`.
    pub fn from_integer(n: i128) -> Self {
        Rational { numer: n, denom: 1 }
    }

    pub fn numer(&self) -> i128 {
        self.numer
    }

    pub fn denom(&self) -> i128 {
        self.denom
    }

    /// `self / other`; `None` when `other` is zero or on overflow.
    pub fn checked_div(self, other: Rational) -> Option<Rational> {
        Rational::new(
            self.numer.checked_mul(other.denom)?,
            self.denom.checked_mul(other.numer)?,
        )
    }

    pub fn checked_neg(self) -> Option<Rational> {
        Some(Rational {
            numer: self.numer.checked_neg()?,
            denom: self.denom,
        })
    }
}

impl fmt::Display for Rational {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.denom == 1 {
            write!(f, "{}", self.numer)
        } else {
            write!(f, "{}/{}", self.numer, self.denom)
        }
    }
}

fn gcd(mut a: u128, mut b: u128) -> u128 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// A normalized answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    /// A number, exactly.
    Number(Rational),
    /// Anything else, in canonical form (lowercase, wrappers removed, spaces
    /// kept only between two letters or digits).
    Text(String),
}

impl fmt::Display for Value {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Value::Number(r) => write!(f, "{r}"),
            Value::Text(t) => f.write_str(t),
        }
    }
}

/// Whether `predicted` and `reference` are the same answer: both normalize,
/// numbers compare exactly, text compares in canonical form, and a number
/// never equals a text.
pub fn is_equivalent(predicted: &str, reference: &str) -> bool {
    match (normalize(predicted), normalize(reference)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// The canonical value of an answer; `None` when nothing is left after
/// stripping wrappers (see the module docs for what is stripped).
pub fn normalize(answer: &str) -> Option<Value> {
    let cleaned = clean(answer);
    if cleaned.is_empty() {
        return None;
    }
    let num = parse_numeric(&cleaned).or_else(|| {
        let (lhs, rhs) = cleaned.split_once('=')?;
        let lhs = lhs.trim();
        let is_var = lhs.len() <= 3
            && lhs.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && lhs.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if is_var {
            parse_numeric(rhs.trim())
        } else {
            None
        }
    });
    Some(match num {
        Some(n) => match n.to_rational() {
            Some(r) => Value::Number(r),
            None => Value::Text(n.canonical()),
        },
        None => Value::Text(text_form(&cleaned)),
    })
}

/// Plain replacements, applied in order.
const REPLACEMENTS: [(&str, &str); 17] = [
    ("\\dfrac", "\\frac"),
    ("\\tfrac", "\\frac"),
    ("{,}", ","),
    ("\\,", ""),
    ("\\!", ""),
    ("\\;", " "),
    ("\\:", " "),
    ("\\ ", " "),
    ("\\%", "%"),
    ("\\$", "$"),
    ("−", "-"),
    ("^{\\circ}", ""),
    ("^\\circ", ""),
    ("°", ""),
    ("~", " "),
    ("\\displaystyle", ""),
    ("\\quad", " "),
];

/// Wrappers whose content is kept (with a space either side).
const TEXT_COMMANDS: [&str; 8] = [
    "\\text{",
    "\\textbf{",
    "\\textit{",
    "\\textrm{",
    "\\textnormal{",
    "\\mathrm{",
    "\\mathbf{",
    "\\mbox{",
];

fn clean(answer: &str) -> String {
    let mut s = strip_wrappers(answer).to_string();
    for (from, to) in REPLACEMENTS {
        if s.contains(from) {
            s = s.replace(from, to);
        }
    }
    s = unwrap_text_commands(s);
    let collapsed = s.split_whitespace().collect::<Vec<_>>().join(" ");
    strip_wrappers(&collapsed).to_string()
}

/// Removes surrounding whitespace, math delimiters, outer braces and trailing
/// periods, repeatedly.
fn strip_wrappers(mut s: &str) -> &str {
    const DELIMITERS: [(&str, &str); 4] =
        [("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")];
    loop {
        let before = s;
        s = s.trim().trim_end_matches('.').trim_end();
        for (open, close) in DELIMITERS {
            if s.len() >= open.len() + close.len() && s.starts_with(open) && s.ends_with(close) {
                s = s.get(open.len()..s.len() - close.len()).unwrap_or(s);
            }
        }
        if let Some(inner) = s.strip_prefix('{') {
            if !inner.is_empty() && matching_brace(inner) == Some(inner.len() - 1) {
                s = inner.get(..inner.len() - 1).unwrap_or(s);
            }
        }
        if s == before {
            return s;
        }
    }
}

/// Replaces `\text{X}` (and the like) by ` X `; an unclosed one is left as is.
fn unwrap_text_commands(mut s: String) -> String {
    loop {
        let found = TEXT_COMMANDS
            .iter()
            .filter_map(|cmd| s.find(cmd).map(|pos| (pos, cmd.len())))
            .min();
        let Some((pos, len)) = found else {
            return s;
        };
        let open_end = pos + len;
        let Some(close) = s.get(open_end..).and_then(matching_brace) else {
            return s;
        };
        let close = open_end + close;
        let (Some(head), Some(body), Some(tail)) =
            (s.get(..pos), s.get(open_end..close), s.get(close + 1..))
        else {
            return s;
        };
        s = format!("{head} {body} {tail}");
    }
}

/// Lowercase; whitespace survives only between two letters or digits.
fn text_form(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_space = false;
    for ch in s.chars().flat_map(char::to_lowercase) {
        if ch.is_whitespace() {
            pending_space = true;
            continue;
        }
        if pending_space
            && ch.is_alphanumeric()
            && out.chars().next_back().is_some_and(char::is_alphanumeric)
        {
            out.push(' ');
        }
        pending_space = false;
        out.push(ch);
    }
    out
}

/// A decimal as written: sign, integer digits, fractional digits.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Decimal {
    neg: bool,
    int: String,
    frac: String,
}

impl Decimal {
    fn to_rational(&self) -> Option<Rational> {
        let frac = self.frac.trim_end_matches('0');
        let mut numer: i128 = 0;
        for d in self.int.bytes().chain(frac.bytes()) {
            numer = numer.checked_mul(10)?.checked_add(i128::from(d - b'0'))?;
        }
        let denom = 10i128.checked_pow(u32::try_from(frac.len()).ok()?)?;
        let r = Rational::new(numer, denom)?;
        if self.neg {
            r.checked_neg()
        } else {
            Some(r)
        }
    }

    fn canonical(&self) -> String {
        let int = self.int.trim_start_matches('0');
        let frac = self.frac.trim_end_matches('0');
        let mut out = String::new();
        if self.neg && !(int.is_empty() && frac.is_empty()) {
            out.push('-');
        }
        out.push_str(if int.is_empty() { "0" } else { int });
        if !frac.is_empty() {
            out.push('.');
            out.push_str(frac);
        }
        out
    }

    fn negated(mut self, neg: bool) -> Self {
        self.neg ^= neg;
        self
    }
}

/// A number as written: a decimal or a ratio of two.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Numeric {
    Plain(Decimal),
    Ratio(Decimal, Decimal),
}

impl Numeric {
    fn to_rational(&self) -> Option<Rational> {
        match self {
            Numeric::Plain(d) => d.to_rational(),
            Numeric::Ratio(a, b) => a.to_rational()?.checked_div(b.to_rational()?),
        }
    }

    /// The text form used when the value does not fit in `i128`.
    fn canonical(&self) -> String {
        match self {
            Numeric::Plain(d) => d.canonical(),
            Numeric::Ratio(a, b) => format!("{}/{}", a.canonical(), b.canonical()),
        }
    }
}

/// A byte cursor over a `str`; it only ever stops on ASCII bytes or after a
/// matched prefix, so positions are char boundaries.
struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn rest(&self) -> &'a str {
        self.s.get(self.pos..).unwrap_or("")
    }

    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.pos).copied()
    }

    fn eat(&mut self, b: u8) -> bool {
        let hit = self.peek() == Some(b);
        if hit {
            self.pos += 1;
        }
        hit
    }

    fn eat_str(&mut self, p: &str) -> bool {
        let hit = self.rest().starts_with(p);
        if hit {
            self.pos += p.len();
        }
        hit
    }

    fn skip_ws(&mut self) -> bool {
        let start = self.pos;
        while self.peek().is_some_and(|b| b.is_ascii_whitespace()) {
            self.pos += 1;
        }
        self.pos > start
    }

    fn digits(&mut self) -> &'a str {
        let start = self.pos;
        self.pos = digits_end(self.s.as_bytes(), self.pos);
        self.s.get(start..self.pos).unwrap_or("")
    }
}

/// Parses a whole answer as a number:
/// `[sign] [$] [sign] (\frac A B | D [/ D]) [%] [unit words]`.
fn parse_numeric(s: &str) -> Option<Numeric> {
    let mut c = Cursor { s, pos: 0 };
    let (mut neg, mut signed, mut currency) = (false, false, false);
    loop {
        c.skip_ws();
        if !signed && c.eat(b'-') {
            (neg, signed) = (true, true);
        } else if !signed && c.eat(b'+') {
            signed = true;
        } else if !currency && c.eat(b'$') {
            currency = true;
        } else {
            break;
        }
    }
    let body = if c.eat_str("\\frac") {
        Numeric::Ratio(frac_arg(&mut c)?.negated(neg), frac_arg(&mut c)?)
    } else {
        let a = unsigned_decimal(&mut c)?.negated(neg);
        let save = c.pos;
        c.skip_ws();
        if c.eat(b'/') {
            c.skip_ws();
            Numeric::Ratio(a, unsigned_decimal(&mut c)?)
        } else {
            c.pos = save;
            Numeric::Plain(a)
        }
    };
    let spaced_before = c.skip_ws();
    let percent = c.eat(b'%');
    let spaced_after = c.skip_ws();
    let spaced = spaced_after || (spaced_before && !percent);
    let rest = c.rest();
    (rest.is_empty() || (spaced && rest.split_whitespace().all(is_unit_word))).then_some(body)
}

fn frac_arg(c: &mut Cursor<'_>) -> Option<Decimal> {
    c.skip_ws();
    if c.eat(b'{') {
        c.skip_ws();
        let neg = c.eat(b'-');
        if !neg {
            c.eat(b'+');
        }
        c.skip_ws();
        let d = unsigned_decimal(c)?.negated(neg);
        c.skip_ws();
        c.eat(b'}').then_some(d)
    } else {
        let b = c.peek().filter(u8::is_ascii_digit)?;
        c.pos += 1;
        Some(Decimal {
            neg: false,
            int: char::from(b).to_string(),
            frac: String::new(),
        })
    }
}

/// `123`, `1,234,567`, `0.50`, `.5` (no sign).
fn unsigned_decimal(c: &mut Cursor<'_>) -> Option<Decimal> {
    let first = c.digits();
    let mut int = first.to_string();
    if (1..=3).contains(&first.len()) {
        loop {
            let save = c.pos;
            if c.eat(b',') {
                let group = c.digits();
                if group.len() == 3 {
                    int.push_str(group);
                    continue;
                }
            }
            c.pos = save;
            break;
        }
    }
    let mut frac = String::new();
    if c.peek() == Some(b'.')
        && c.s
            .as_bytes()
            .get(c.pos + 1)
            .is_some_and(u8::is_ascii_digit)
    {
        c.pos += 1;
        frac.push_str(c.digits());
    }
    (!int.is_empty() || !frac.is_empty()).then_some(Decimal {
        neg: false,
        int,
        frac,
    })
}

/// A unit word after a number: starts with a letter or `^`; then letters,
/// `.`, `/`, and digits or braces only after a `^` (`cm^2`, `^{3}`, `km/h`).
fn is_unit_word(word: &str) -> bool {
    let mut chars = word.chars();
    let mut caret = false;
    match chars.next() {
        Some('^') => caret = true,
        Some(ch) if ch.is_alphabetic() => {}
        _ => return false,
    }
    chars.all(|ch| match ch {
        '^' => {
            caret = true;
            true
        }
        '.' | '/' => true,
        '0'..='9' | '{' | '}' => caret,
        _ => ch.is_alphabetic(),
    })
}

#[cfg(test)]
mod tests;

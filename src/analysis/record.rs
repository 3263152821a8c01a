//! The per-token record: what `dlogp score` writes, one JSON object per
//! response token, and what `dlogp analyze` reads back.

use std::borrow::Cow;
use std::io::BufRead;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::sampler::{Criterion, TokenMetrics};

/// One scored response token: a line of `dlogp score --output`.
///
/// `M` is the pair's [`TokenMetrics`] or, for one model,
/// [`SingleMetrics`](crate::sampler::SingleMetrics); its fields are written
/// into the same object, after `id`, `position`, `token` and `text`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreRecord<M = TokenMetrics> {
    /// The input row's id as given (a string, or a number).
    pub id: Value,
    /// The token's index in the response.
    pub position: usize,
    /// The token id (absent from hand-made rows, which read as `None`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<u32>,
    /// The token's text (read as empty when absent).
    #[serde(default)]
    pub text: String,
    #[serde(flatten)]
    pub metrics: M,
}

impl<M> ScoreRecord<M> {
    /// The id as people read it: a string as is, anything else as JSON.
    pub fn id_text(&self) -> Cow<'_, str> {
        match &self.id {
            Value::String(s) => Cow::Borrowed(s),
            other => Cow::Owned(other.to_string()),
        }
    }
}

/// The per-token metrics the analysis reports on, in report order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Metric {
    Dlogp,
    EntropyBase,
    EntropyRl,
    Kl,
    KlR,
    Js,
}

impl Metric {
    pub const ALL: [Metric; 6] = [
        Metric::Dlogp,
        Metric::EntropyBase,
        Metric::EntropyRl,
        Metric::Kl,
        Metric::KlR,
        Metric::Js,
    ];

    /// Its field in [`TokenMetrics`] (and so in score rows and the analysis JSON).
    pub fn name(self) -> &'static str {
        match self {
            Metric::Dlogp => "dlogp",
            Metric::EntropyBase => "entropy_base",
            Metric::EntropyRl => "entropy_rl",
            Metric::Kl => "kl",
            Metric::KlR => "kl_r",
            Metric::Js => "js",
        }
    }

    /// Its name for people (headings, axes).
    pub fn label(self) -> &'static str {
        match self {
            Metric::Dlogp => "Δlog p",
            Metric::EntropyBase => "entropy (base)",
            Metric::EntropyRl => "entropy (RL)",
            Metric::Kl => "KL(RL ‖ base)",
            Metric::KlR => "KL(base ‖ RL)",
            Metric::Js => "JS (mean KL)",
        }
    }

    /// Its value for one token.
    pub fn of(self, m: &TokenMetrics) -> f64 {
        match self {
            Metric::Dlogp => m.dlogp,
            Metric::EntropyBase => m.entropy_base,
            Metric::EntropyRl => m.entropy_rl,
            Metric::Kl => m.kl,
            Metric::KlR => m.kl_r,
            Metric::Js => m.js,
        }
    }

    /// The metric a gate criterion compares with τ; `None` for `random`,
    /// `never` and `always`, which look at no metric.
    pub fn of_criterion(c: Criterion) -> Option<Metric> {
        match c {
            Criterion::Dlogp => Some(Metric::Dlogp),
            Criterion::Entropy => Some(Metric::EntropyBase),
            Criterion::EntropyRl => Some(Metric::EntropyRl),
            Criterion::Kl => Some(Metric::Kl),
            Criterion::KlR => Some(Metric::KlR),
            Criterion::Js => Some(Metric::Js),
            Criterion::Random | Criterion::Never | Criterion::Always => None,
        }
    }
}

impl std::fmt::Display for Metric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Why score rows could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{source_name}:{line}: {reason}\nhint: analyze reads the per-token rows `dlogp score` writes for a pair (`base_model` and `rl_model`/`rl_lora`)")]
    Row {
        source_name: String,
        line: usize,
        reason: String,
    },
    #[error("{source_name}: could not read: {source}")]
    Io {
        source_name: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{source_name}: no scored tokens")]
    Empty { source_name: String },
}

/// Reads the rows `dlogp score` writes for a pair (blank lines skipped).
pub fn read_scores(reader: impl BufRead, source_name: &str) -> Result<Vec<ScoreRecord>, ReadError> {
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|source| ReadError::Io {
            source_name: source_name.to_string(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let record = parse_record(&line).map_err(|reason| ReadError::Row {
            source_name: source_name.to_string(),
            line: i + 1,
            reason,
        })?;
        out.push(record);
    }
    if out.is_empty() {
        return Err(ReadError::Empty {
            source_name: source_name.to_string(),
        });
    }
    Ok(out)
}

/// One row, or why it is not a pair's score row.
fn parse_record(line: &str) -> Result<ScoreRecord, String> {
    let record: ScoreRecord = serde_json::from_str(line).map_err(|e| {
        // Not JSON: the parser's message. JSON without a Δlog p (a
        // dataset, a single model's scores): say so, as that is the usual
        // mistake. Otherwise what serde found wrong.
        match serde_json::from_str::<Value>(line) {
            Err(syntax) => syntax.to_string(),
            Ok(v)
                if !v
                    .get("dlogp")
                    .and_then(Value::as_f64)
                    .is_some_and(f64::is_finite) =>
            {
                "field `dlogp` is missing or not a finite number".to_string()
            }
            Ok(_) => e.to_string(),
        }
    })?;
    if record.id.is_null() {
        return Err("field `id` is missing".to_string());
    }
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sampler::SingleMetrics;

    fn metrics() -> TokenMetrics {
        TokenMetrics {
            logp_base: -1.5,
            logp_rl: -0.25,
            dlogp: 1.25,
            entropy_base: 2.0,
            entropy_rl: 1.0,
            kl: 0.125,
            kl_r: 0.375,
            js: 0.25,
            rank_base: 3,
            rank_rl: 0,
        }
    }

    #[test]
    fn records_are_written_in_the_score_layout_and_read_back() {
        let r = ScoreRecord {
            id: Value::from("a|b"),
            position: 2,
            token: Some(17),
            text: " x\"".to_string(),
            metrics: metrics(),
        };
        let line = serde_json::to_string(&r).unwrap();
        assert_eq!(
            line,
            r#"{"id":"a|b","position":2,"token":17,"text":" x\"","logp_base":-1.5,"logp_rl":-0.25,"dlogp":1.25,"entropy_base":2.0,"entropy_rl":1.0,"kl":0.125,"kl_r":0.375,"js":0.25,"rank_base":3,"rank_rl":0}"#
        );
        let back = read_scores(line.as_bytes(), "s").unwrap();
        assert_eq!(back, vec![r]);
        let single = ScoreRecord {
            id: Value::from(7),
            position: 0,
            token: Some(1),
            text: "a".to_string(),
            metrics: SingleMetrics {
                logp: -0.5,
                entropy: 1.0,
                rank: 2,
            },
        };
        assert_eq!(
            serde_json::to_string(&single).unwrap(),
            r#"{"id":7,"position":0,"token":1,"text":"a","logp":-0.5,"entropy":1.0,"rank":2}"#
        );
        assert_eq!(single.id_text(), "7");
    }

    #[test]
    fn metric_names_are_the_record_fields() {
        let m = metrics();
        let v = serde_json::to_value(m).unwrap();
        for metric in Metric::ALL {
            assert_eq!(v[metric.name()], metric.of(&m), "{metric}");
        }
        assert_eq!(
            Metric::of_criterion(Criterion::Entropy),
            Some(Metric::EntropyBase)
        );
        assert_eq!(Metric::of_criterion(Criterion::KlR), Some(Metric::KlR));
        assert_eq!(Metric::of_criterion(Criterion::Random), None);
    }

    #[test]
    fn bad_rows_name_the_line() {
        let text = "{\"id\":1,\"position\":0,\"text\":\"a\",\"logp_base\":-1,\"logp_rl\":-1,\"dlogp\":0,\"entropy_base\":1,\"entropy_rl\":1,\"kl\":0,\"kl_r\":0,\"js\":0}\n{\"id\":1,\"position\":1}\n";
        let e = read_scores(text.as_bytes(), "s.jsonl")
            .unwrap_err()
            .to_string();
        assert!(e.contains("s.jsonl:2") && e.contains("`dlogp`"), "{e}");
        let ok = read_scores(text.lines().next().unwrap().as_bytes(), "s.jsonl").unwrap();
        assert_eq!(ok[0].id_text(), "1");
        assert_eq!((ok[0].token, ok[0].metrics.rank_base), (None, 0));
        assert!(matches!(
            read_scores("\n".as_bytes(), "e"),
            Err(ReadError::Empty { .. })
        ));
        let e = read_scores("not json\n".as_bytes(), "s")
            .unwrap_err()
            .to_string();
        assert!(e.starts_with("s:1: expected"), "{e}");
        // a pair's row missing another metric names that one
        let no_kl = text.lines().next().unwrap().replace("\"kl\":0,", "");
        let e = read_scores(no_kl.as_bytes(), "s").unwrap_err().to_string();
        assert!(e.contains("`kl`"), "{e}");
        let null_id = text
            .lines()
            .next()
            .unwrap()
            .replace("\"id\":1", "\"id\":null");
        let e = read_scores(null_id.as_bytes(), "s")
            .unwrap_err()
            .to_string();
        assert!(e.contains("field `id` is missing"), "{e}");
    }
}

//! The distribution analysis of METHOD.md §1 over `dlogp score` outputs of
//! base-generated and RL-generated responses: per-metric histograms (density,
//! for a log axis), sparsity, the tokens with the largest positive and
//! negative Δlog p in context, and Δlog p broken down by the token's
//! probability under each model.

use std::collections::HashMap;
use std::io::BufRead;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::plot::{LinePlot, Series};

/// The metrics of a scored token that the analysis reads.
pub const METRICS: [&str; 6] = ["dlogp", "entropy_base", "entropy_rl", "kl", "kl_r", "js"];

/// One scored token (a row of `dlogp score`).
#[derive(Debug, Clone, PartialEq)]
pub struct ScoredToken {
    pub id: String,
    pub position: usize,
    pub text: String,
    pub logp_base: f64,
    pub logp_rl: f64,
    /// In the order of [`METRICS`].
    pub metrics: [f64; 6],
}

impl ScoredToken {
    pub fn dlogp(&self) -> f64 {
        self.metrics[0]
    }
}

/// A named set of scored responses (e.g. "base-generated").
#[derive(Debug, Clone, PartialEq)]
pub struct TokenSet {
    pub name: String,
    pub tokens: Vec<ScoredToken>,
}

/// Why score rows could not be read.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{source_name}:{line}: {reason}\nhint: analyze reads the per-token rows `dlogp score` writes for a pair (--base and --rl/--rl-lora)")]
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

/// Reads `dlogp score` rows.
pub fn read_scores(reader: impl BufRead, source_name: &str) -> Result<Vec<ScoredToken>, ReadError> {
    let mut out = Vec::new();
    for (i, line) in reader.lines().enumerate() {
        let line = line.map_err(|source| ReadError::Io {
            source_name: source_name.to_string(),
            source,
        })?;
        if line.trim().is_empty() {
            continue;
        }
        let err = |reason: String| ReadError::Row {
            source_name: source_name.to_string(),
            line: i + 1,
            reason,
        };
        let v: Value = serde_json::from_str(&line).map_err(|e| err(e.to_string()))?;
        let num = |key: &str| {
            v.get(key)
                .and_then(Value::as_f64)
                .filter(|x| x.is_finite())
                .ok_or_else(|| err(format!("field `{key}` is missing or not a finite number")))
        };
        let mut metrics = [0.0; 6];
        for (m, key) in metrics.iter_mut().zip(METRICS) {
            *m = num(key)?;
        }
        let id = match v.get("id") {
            Some(Value::String(s)) => s.clone(),
            Some(other) if !other.is_null() => other.to_string(),
            _ => return Err(err("field `id` is missing".to_string())),
        };
        out.push(ScoredToken {
            id,
            position: num("position")? as usize,
            text: v
                .get("text")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_string(),
            logp_base: num("logp_base")?,
            logp_rl: num("logp_rl")?,
            metrics,
        });
    }
    if out.is_empty() {
        return Err(ReadError::Empty {
            source_name: source_name.to_string(),
        });
    }
    Ok(out)
}

/// A histogram of one metric for one set, over bins shared by all sets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Histogram {
    pub set: String,
    /// Bin edges (`counts.len() + 1` of them).
    pub edges: Vec<f64>,
    pub counts: Vec<usize>,
    /// counts / (n · bin width): integrates to 1.
    pub density: Vec<f64>,
}

/// One metric across sets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricReport {
    pub metric: String,
    pub histograms: Vec<Histogram>,
    /// Per set, per threshold: the share of tokens with |metric| > threshold.
    pub sparsity: Vec<SetSparsity>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SetSparsity {
    pub set: String,
    pub n_tokens: usize,
    pub min: f64,
    pub max: f64,
    pub mean: f64,
    /// `(threshold, share of tokens with |value| > threshold)`.
    pub share_above: Vec<(f64, f64)>,
}

/// A token with its neighbourhood, for the top lists.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TokenInContext {
    pub set: String,
    pub id: String,
    pub position: usize,
    pub token: String,
    pub dlogp: f64,
    pub p_base: f64,
    pub p_rl: f64,
    /// Text of the preceding tokens of the same response.
    pub before: String,
    /// Text of the following tokens.
    pub after: String,
}

/// Tokens grouped by their probability under one model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProbabilityBin {
    /// `[low, high)` of the probability (the last bin includes 1).
    pub low: f64,
    pub high: f64,
    pub n_tokens: usize,
    /// Share of all tokens in this bin.
    pub share_of_tokens: f64,
    pub mean_abs_dlogp: f64,
    /// Share of the tokens with |Δlog p| > the large threshold that fall here.
    pub share_of_large: f64,
}

/// Δlog p against the token's probability under each model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Breakdown {
    pub set: String,
    /// |Δlog p| above this counts as large.
    pub large_threshold: f64,
    pub n_large: usize,
    pub by_p_base: Vec<ProbabilityBin>,
    pub by_p_rl: Vec<ProbabilityBin>,
}

/// The whole analysis (the JSON `dlogp analyze` writes).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Analysis {
    pub sets: Vec<(String, usize)>,
    pub metrics: Vec<MetricReport>,
    pub top_positive: Vec<TokenInContext>,
    pub top_negative: Vec<TokenInContext>,
    pub breakdown: Vec<Breakdown>,
}

/// Settings of the analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct AnalysisOptions {
    pub bins: usize,
    pub top: usize,
    /// Tokens of context on each side in the top lists.
    pub context: usize,
    pub thresholds: Vec<f64>,
    pub large_threshold: f64,
    pub probability_edges: Vec<f64>,
}

impl Default for AnalysisOptions {
    fn default() -> Self {
        AnalysisOptions {
            bins: 60,
            top: 20,
            context: 8,
            thresholds: vec![0.01, 0.1, 0.5, 1.0, 2.0, 5.0],
            large_threshold: 1.0,
            probability_edges: vec![0.0, 0.01, 0.1, 0.5, 0.9, 1.0],
        }
    }
}

/// Histogram counts of `values` over `bins` equal bins spanning `[lo, hi]`
/// (the top edge is inclusive).
pub fn histogram(values: &[f64], lo: f64, hi: f64, bins: usize) -> (Vec<f64>, Vec<usize>) {
    let bins = bins.max(1);
    let (lo, hi) = if hi > lo {
        (lo, hi)
    } else {
        (lo - 0.5, lo + 0.5)
    };
    let width = (hi - lo) / bins as f64;
    let edges: Vec<f64> = (0..=bins).map(|i| lo + width * i as f64).collect();
    let mut counts = vec![0usize; bins];
    for &v in values {
        let i = (((v - lo) / width).floor() as isize).clamp(0, bins as isize - 1) as usize;
        counts[i] += 1;
    }
    (edges, counts)
}

/// Runs the analysis over the sets.
pub fn analyze(sets: &[TokenSet], opts: &AnalysisOptions) -> Analysis {
    let mut metrics = Vec::new();
    for (m, name) in METRICS.iter().enumerate() {
        let values: Vec<Vec<f64>> = sets
            .iter()
            .map(|s| s.tokens.iter().map(|t| t.metrics[m]).collect())
            .collect();
        let all = values.iter().flatten();
        let lo = all.clone().copied().fold(f64::INFINITY, f64::min);
        let hi = all.copied().fold(f64::NEG_INFINITY, f64::max);
        let mut histograms = Vec::new();
        let mut sparsity = Vec::new();
        for (s, v) in sets.iter().zip(&values) {
            let (edges, counts) = histogram(v, lo, hi, opts.bins);
            let n = v.len().max(1) as f64;
            let width = edges[1] - edges[0];
            let density = counts.iter().map(|&c| c as f64 / (n * width)).collect();
            histograms.push(Histogram {
                set: s.name.clone(),
                edges,
                counts,
                density,
            });
            sparsity.push(SetSparsity {
                set: s.name.clone(),
                n_tokens: v.len(),
                min: v.iter().copied().fold(f64::INFINITY, f64::min),
                max: v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                mean: v.iter().sum::<f64>() / n,
                share_above: opts
                    .thresholds
                    .iter()
                    .map(|&t| (t, v.iter().filter(|x| x.abs() > t).count() as f64 / n))
                    .collect(),
            });
        }
        metrics.push(MetricReport {
            metric: name.to_string(),
            histograms,
            sparsity,
        });
    }

    // top tokens by Δlog p, over all sets
    let mut ranked: Vec<(usize, usize)> = sets
        .iter()
        .enumerate()
        .flat_map(|(s, set)| (0..set.tokens.len()).map(move |t| (s, t)))
        .collect();
    ranked.sort_by(|a, b| {
        let (x, y) = (sets[a.0].tokens[a.1].dlogp(), sets[b.0].tokens[b.1].dlogp());
        y.total_cmp(&x).then(a.cmp(b))
    });
    let context = |s: usize, t: usize| in_context(&sets[s], t, opts.context);
    let top_positive = ranked
        .iter()
        .take(opts.top)
        .filter(|&&(s, t)| sets[s].tokens[t].dlogp() > 0.0)
        .map(|&(s, t)| context(s, t))
        .collect();
    let top_negative = ranked
        .iter()
        .rev()
        .take(opts.top)
        .filter(|&&(s, t)| sets[s].tokens[t].dlogp() < 0.0)
        .map(|&(s, t)| context(s, t))
        .collect();

    let breakdown = sets
        .iter()
        .map(|s| {
            let n_large = s
                .tokens
                .iter()
                .filter(|t| t.dlogp().abs() > opts.large_threshold)
                .count();
            let by = |p: fn(&ScoredToken) -> f64| {
                probability_bins(
                    &s.tokens,
                    p,
                    &opts.probability_edges,
                    opts.large_threshold,
                    n_large,
                )
            };
            Breakdown {
                set: s.name.clone(),
                large_threshold: opts.large_threshold,
                n_large,
                by_p_base: by(|t| t.logp_base.exp()),
                by_p_rl: by(|t| t.logp_rl.exp()),
            }
        })
        .collect();

    Analysis {
        sets: sets
            .iter()
            .map(|s| (s.name.clone(), s.tokens.len()))
            .collect(),
        metrics,
        top_positive,
        top_negative,
        breakdown,
    }
}

fn probability_bins(
    tokens: &[ScoredToken],
    p: fn(&ScoredToken) -> f64,
    edges: &[f64],
    large: f64,
    n_large: usize,
) -> Vec<ProbabilityBin> {
    let n = tokens.len().max(1) as f64;
    edges
        .windows(2)
        .enumerate()
        .map(|(i, w)| {
            let last = i + 2 == edges.len();
            let inside: Vec<&ScoredToken> = tokens
                .iter()
                .filter(|t| {
                    let v = p(t);
                    v >= w[0] && (v < w[1] || (last && v <= w[1]))
                })
                .collect();
            let k = inside.len();
            ProbabilityBin {
                low: w[0],
                high: w[1],
                n_tokens: k,
                share_of_tokens: k as f64 / n,
                mean_abs_dlogp: if k == 0 {
                    0.0
                } else {
                    inside.iter().map(|t| t.dlogp().abs()).sum::<f64>() / k as f64
                },
                share_of_large: if n_large == 0 {
                    0.0
                } else {
                    inside.iter().filter(|t| t.dlogp().abs() > large).count() as f64
                        / n_large as f64
                },
            }
        })
        .collect()
}

/// The token at `index` of `set` with the text of up to `context` tokens of
/// the same response on each side (responses are runs of rows sharing an id
/// with increasing positions).
fn in_context(set: &TokenSet, index: usize, context: usize) -> TokenInContext {
    let tokens = &set.tokens;
    let t = &tokens[index];
    let same = |j: usize| tokens[j].id == t.id;
    let mut start = index;
    while start > 0
        && index - start < context
        && same(start - 1)
        && tokens[start - 1].position < tokens[start].position
    {
        start -= 1;
    }
    let mut end = index + 1;
    while end < tokens.len()
        && end - index - 1 < context
        && same(end)
        && tokens[end].position > tokens[end - 1].position
    {
        end += 1;
    }
    let join = |r: std::ops::Range<usize>| {
        tokens[r]
            .iter()
            .map(|x| x.text.as_str())
            .collect::<String>()
    };
    TokenInContext {
        set: set.name.clone(),
        id: t.id.clone(),
        position: t.position,
        token: t.text.clone(),
        dlogp: t.dlogp(),
        p_base: t.logp_base.exp(),
        p_rl: t.logp_rl.exp(),
        before: join(start..index),
        after: join(index + 1..end),
    }
}

impl Analysis {
    /// The histogram of one metric as a chart (density on a log axis).
    pub fn histogram_plot(&self, metric: &str) -> Option<LinePlot> {
        let m = self.metrics.iter().find(|m| m.metric == metric)?;
        let series = m
            .histograms
            .iter()
            .map(|h| Series {
                name: h.set.clone(),
                // a step line: each bin's density across its width
                points: h
                    .density
                    .iter()
                    .enumerate()
                    .flat_map(|(i, &d)| [(h.edges[i], d), (h.edges[i + 1], d)])
                    .collect(),
                markers: false,
            })
            .collect();
        Some(LinePlot {
            title: format!("{} per token", label(metric)),
            x_label: label(metric).to_string(),
            y_label: "density (log scale)".to_string(),
            series,
            references: Vec::new(),
            log_y: true,
        })
    }

    /// A Markdown report; `plots` maps a metric to the image path to link.
    pub fn to_markdown(&self, plots: &HashMap<String, String>) -> String {
        let mut s = String::from("# Δlog p analysis\n\n");
        s += "Token sets: ";
        s += &self
            .sets
            .iter()
            .map(|(n, k)| format!("{n} ({k} tokens)"))
            .collect::<Vec<_>>()
            .join(", ");
        s += "\n\n## Distributions\n\n";
        for m in &self.metrics {
            s += &format!("### {}\n\n", label(&m.metric));
            if let Some(p) = plots.get(&m.metric) {
                s += &format!("![{}]({p})\n\n", m.metric);
            }
            s += &sparsity_table(m);
            s += "\n";
        }
        s += "## Largest positive Δlog p (RL promoted the token)\n\n";
        s += &top_table(&self.top_positive);
        s += "\n## Largest negative Δlog p (RL suppressed the token)\n\n";
        s += &top_table(&self.top_negative);
        s += "\n## Δlog p by token probability\n\n";
        for b in &self.breakdown {
            for (model, bins) in [("base", &b.by_p_base), ("RL", &b.by_p_rl)] {
                s += &format!(
                    "**{}**, by p under the {model} model ({} tokens with |Δlog p| > {}):\n\n",
                    b.set, b.n_large, b.large_threshold
                );
                s += "| p | tokens | share of tokens | mean abs Δlog p | share of large abs Δlog p |\n|---|---:|---:|---:|---:|\n";
                for bin in bins {
                    s += &format!(
                        "| [{}, {}{} | {} | {:.2}% | {:.4} | {:.2}% |\n",
                        bin.low,
                        bin.high,
                        if bin.high >= 1.0 { "]" } else { ")" },
                        bin.n_tokens,
                        100.0 * bin.share_of_tokens,
                        bin.mean_abs_dlogp,
                        100.0 * bin.share_of_large
                    );
                }
                s += "\n";
            }
        }
        s
    }

    /// A self-contained HTML report with inline SVG charts.
    pub fn to_html(&self, svgs: &HashMap<String, String>) -> String {
        let mut body = String::new();
        for m in &self.metrics {
            if let Some(svg) = svgs.get(&m.metric) {
                body += &format!(
                    "<h3>{}</h3>\n<div class=\"plot\">{svg}</div>\n",
                    html(label(&m.metric))
                );
            }
        }
        // the tables come from the Markdown, rendered minimally
        let md = self.to_markdown(&HashMap::new());
        format!(
            "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>Δlog p analysis</title>\n\
             <style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto}}table{{border-collapse:collapse;margin:1em 0}}\
             td,th{{border:1px solid #ccc;padding:2px 8px;text-align:right}}td:first-child{{text-align:left}}.plot svg{{max-width:100%;height:auto}}</style>\n\
             </head><body>\n<h1>Δlog p analysis</h1>\n<h2>Histograms</h2>\n{body}{}\n</body></html>\n",
            markdown_tables_to_html(&md)
        )
    }
}

fn label(metric: &str) -> &str {
    match metric {
        "dlogp" => "Δlog p",
        "entropy_base" => "entropy (base)",
        "entropy_rl" => "entropy (RL)",
        "kl" => "KL(RL ‖ base)",
        "kl_r" => "KL(base ‖ RL)",
        "js" => "JS (mean KL)",
        other => other,
    }
}

fn sparsity_table(m: &MetricReport) -> String {
    let Some(first) = m.sparsity.first() else {
        return String::new();
    };
    let mut s = String::from("| set | tokens | min | mean | max |");
    for (t, _) in &first.share_above {
        s += &format!(" abs > {t} |");
    }
    s += "\n|---|---:|---:|---:|---:|";
    s += &"---:|".repeat(first.share_above.len());
    s += "\n";
    for sp in &m.sparsity {
        s += &format!(
            "| {} | {} | {:.4} | {:.4} | {:.4} |",
            sp.set, sp.n_tokens, sp.min, sp.mean, sp.max
        );
        for (_, share) in &sp.share_above {
            s += &format!(" {:.2}% |", 100.0 * share);
        }
        s += "\n";
    }
    s
}

fn top_table(tokens: &[TokenInContext]) -> String {
    let mut s = String::from(
        "| Δlog p | p base | p RL | set | id | context |\n|---:|---:|---:|---|---|---|\n",
    );
    for t in tokens {
        s += &format!(
            "| {:+.3} | {:.4} | {:.4} | {} | {} | {}**[{}]**{} |\n",
            t.dlogp,
            t.p_base,
            t.p_rl,
            t.set,
            cell(&t.id),
            cell(&t.before),
            cell(&t.token),
            cell(&t.after)
        );
    }
    s
}

/// Text safe inside a Markdown table cell.
fn cell(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('|', "\\|")
        .replace('\n', "⏎")
        .replace('*', "\\*")
        .replace('`', "\\`")
}

fn html(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Renders the Markdown this module writes (headings, paragraphs, tables,
/// `**bold**`) as HTML; not a general Markdown renderer.
fn markdown_tables_to_html(md: &str) -> String {
    let inline = |t: &str| {
        let t = html(
            &t.replace("\\|", "\u{1}")
                .replace("\\*", "\u{2}")
                .replace("\\`", "`")
                .replace("\\\\", "\\"),
        );
        let mut out = String::new();
        for (i, part) in t.split("**").enumerate() {
            if i % 2 == 1 {
                out += &format!("<b>{part}</b>");
            } else {
                out += part;
            }
        }
        out.replace('\u{1}', "|").replace('\u{2}', "*")
    };
    let mut out = String::new();
    let mut in_table = false;
    for line in md.lines() {
        if line.starts_with('|') {
            if line.starts_with("|---") {
                continue;
            }
            let cells: Vec<String> = line
                .trim_matches('|')
                .replace("\\|", "\u{3}")
                .split('|')
                .map(|c| inline(c.replace('\u{3}', "\\|").trim()))
                .collect();
            let tag = if in_table { "td" } else { "th" };
            if !in_table {
                out += "<table>\n";
                in_table = true;
            }
            out += "<tr>";
            for c in cells {
                out += &format!("<{tag}>{c}</{tag}>");
            }
            out += "</tr>\n";
            continue;
        }
        if in_table {
            out += "</table>\n";
            in_table = false;
        }
        if let Some(h) = line.strip_prefix("### ") {
            out += &format!("<h3>{}</h3>\n", inline(h));
        } else if let Some(h) = line.strip_prefix("## ") {
            out += &format!("<h2>{}</h2>\n", inline(h));
        } else if line.starts_with("# ") || line.starts_with("![") || line.trim().is_empty() {
        } else {
            out += &format!("<p>{}</p>\n", inline(line));
        }
    }
    if in_table {
        out += "</table>\n";
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(id: &str, position: usize, text: &str, dlogp: f64, lb: f64) -> ScoredToken {
        ScoredToken {
            id: id.to_string(),
            position,
            text: text.to_string(),
            logp_base: lb,
            logp_rl: lb + dlogp,
            metrics: [dlogp, 1.0, 1.0, dlogp.abs() / 2.0, 0.1, 0.2],
        }
    }

    fn sets() -> Vec<TokenSet> {
        vec![
            TokenSet {
                name: "base-generated".to_string(),
                tokens: vec![
                    tok("a", 0, "The", 0.0, -0.01),
                    tok("a", 1, " answer", -3.0, -4.0),
                    tok("a", 2, " is", 0.05, -0.1),
                    tok("b", 0, "X", 0.5, -0.2),
                ],
            },
            TokenSet {
                name: "RL-generated".to_string(),
                tokens: vec![tok("c", 0, "So", 6.0, -8.0), tok("c", 1, "|", -0.2, -0.05)],
            },
        ]
    }

    #[test]
    fn histogram_edges_and_counts() {
        let (edges, counts) = histogram(&[0.0, 0.1, 0.5, 0.99, 1.0], 0.0, 1.0, 4);
        assert_eq!(edges, vec![0.0, 0.25, 0.5, 0.75, 1.0]);
        assert_eq!(counts, vec![2, 0, 1, 2]);
        let (_, counts) = histogram(&[2.0, 2.0], 2.0, 2.0, 3);
        assert_eq!(counts.iter().sum::<usize>(), 2);
    }

    #[test]
    fn analysis_numbers_match_a_hand_count() {
        let a = analyze(
            &sets(),
            &AnalysisOptions {
                bins: 9,
                top: 2,
                context: 1,
                ..Default::default()
            },
        );
        let d = &a.metrics[0];
        assert_eq!(d.metric, "dlogp");
        // shared edges over both sets: [-3, 6] in 9 bins of 1
        assert_eq!(d.histograms[0].edges.first(), Some(&-3.0));
        assert_eq!(d.histograms[1].edges.last(), Some(&6.0));
        assert_eq!(d.histograms[0].counts, vec![1, 0, 0, 3, 0, 0, 0, 0, 0]);
        let integral: f64 = d.histograms[1].density.iter().sum::<f64>() * 1.0;
        assert!((integral - 1.0).abs() < 1e-12);
        let sp = &d.sparsity[0];
        assert_eq!(sp.n_tokens, 4);
        assert_eq!(sp.share_above[1], (0.1, 0.5)); // -3 and 0.5
        assert_eq!(sp.min, -3.0);
        // top lists span both sets, with context inside one response
        assert_eq!(a.top_positive[0].token, "So");
        assert_eq!(a.top_positive[1].dlogp, 0.5);
        assert_eq!(a.top_negative[0].token, " answer");
        assert_eq!(a.top_negative[0].before, "The");
        assert_eq!(a.top_negative[0].after, " is");
        assert_eq!(a.top_negative[1].set, "RL-generated");
        // breakdown: |Δ| > 1 only " answer" (p_base = e^-4) in the base set
        let b = &a.breakdown[0];
        assert_eq!(b.n_large, 1);
        assert_eq!(b.by_p_base[1].share_of_large, 1.0); // [0.01, 0.1)
        assert_eq!(b.by_p_base.iter().map(|x| x.n_tokens).sum::<usize>(), 4);
        assert_eq!(b.by_p_base[4].n_tokens, 2); // e^-0.01 and e^-0.1 ≥ 0.9
    }

    #[test]
    fn reports_render_and_escape() {
        let a = analyze(&sets(), &AnalysisOptions::default());
        let md = a.to_markdown(&HashMap::from([(
            "dlogp".to_string(),
            "plots/dlogp.svg".to_string(),
        )]));
        assert!(md.contains("![dlogp](plots/dlogp.svg)"));
        assert!(md.contains("**[\\|]**"), "a pipe token is escaped");
        let plot = a.histogram_plot("dlogp").unwrap();
        assert_eq!(plot.series.len(), 2);
        assert!(plot.log_y);
        let svg = plot.to_svg().unwrap();
        let html = a.to_html(&HashMap::from([("dlogp".to_string(), svg)]));
        assert!(html.starts_with("<!DOCTYPE html>") && html.contains("<svg"));
        assert!(
            html.contains("<td><b>[|]</b></td>") || html.contains("<b>[|]</b>"),
            "{}",
            &html[html.len() - 3000..]
        );
        assert!(!html.contains("**"));
    }

    #[test]
    fn bad_rows_name_the_line() {
        let text = "{\"id\":1,\"position\":0,\"text\":\"a\",\"logp_base\":-1,\"logp_rl\":-1,\"dlogp\":0,\"entropy_base\":1,\"entropy_rl\":1,\"kl\":0,\"kl_r\":0,\"js\":0}\n{\"id\":1,\"position\":1}\n";
        let e = read_scores(text.as_bytes(), "s.jsonl")
            .unwrap_err()
            .to_string();
        assert!(e.contains("s.jsonl:2") && e.contains("`dlogp`"), "{e}");
        let ok = read_scores(text.lines().next().unwrap().as_bytes(), "s.jsonl").unwrap();
        assert_eq!(ok[0].id, "1");
        assert!(matches!(
            read_scores("\n".as_bytes(), "e"),
            Err(ReadError::Empty { .. })
        ));
    }
}

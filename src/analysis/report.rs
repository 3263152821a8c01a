//! The distribution analysis of METHOD.md §1 over `dlogp score` outputs of
//! base-generated and RL-generated responses: per-metric histograms (density,
//! for a log axis), sparsity, the tokens with the largest positive and
//! negative Δlog p in context, and Δlog p broken down by the token's
//! probability under each model.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::doc::{Align, Block, Document, Image, ImageSource, Inline, Table};
use super::plot::{LinePlot, Series};
use super::record::{Metric, ScoreRecord};

/// A named set of scored responses (e.g. "base-generated"): runs of records
/// sharing an id, with increasing positions.
#[derive(Debug, Clone, PartialEq)]
pub struct TokenSet {
    pub name: String,
    pub tokens: Vec<ScoreRecord>,
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
    /// What produced the analysis (set by the caller; the report's footer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<super::Provenance>,
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

fn dlogp(t: &ScoreRecord) -> f64 {
    t.metrics.dlogp
}

/// Runs the analysis over the sets.
pub fn analyze(sets: &[TokenSet], opts: &AnalysisOptions) -> Analysis {
    let mut metrics = Vec::new();
    for metric in Metric::ALL {
        let values: Vec<Vec<f64>> = sets
            .iter()
            .map(|s| s.tokens.iter().map(|t| metric.of(&t.metrics)).collect())
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
            metric: metric.name().to_string(),
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
        let (x, y) = (dlogp(&sets[a.0].tokens[a.1]), dlogp(&sets[b.0].tokens[b.1]));
        y.total_cmp(&x).then(a.cmp(b))
    });
    let context = |s: usize, t: usize| in_context(&sets[s], t, opts.context);
    let top_positive = ranked
        .iter()
        .take(opts.top)
        .filter(|&&(s, t)| dlogp(&sets[s].tokens[t]) > 0.0)
        .map(|&(s, t)| context(s, t))
        .collect();
    let top_negative = ranked
        .iter()
        .rev()
        .take(opts.top)
        .filter(|&&(s, t)| dlogp(&sets[s].tokens[t]) < 0.0)
        .map(|&(s, t)| context(s, t))
        .collect();

    let breakdown = sets
        .iter()
        .map(|s| {
            let n_large = s
                .tokens
                .iter()
                .filter(|t| dlogp(t).abs() > opts.large_threshold)
                .count();
            let by = |p: fn(&ScoreRecord) -> f64| {
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
                by_p_base: by(|t| t.metrics.logp_base.exp()),
                by_p_rl: by(|t| t.metrics.logp_rl.exp()),
            }
        })
        .collect();

    Analysis {
        provenance: None,
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
    tokens: &[ScoreRecord],
    p: fn(&ScoreRecord) -> f64,
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
            let inside: Vec<&ScoreRecord> = tokens
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
                    inside.iter().map(|t| dlogp(t).abs()).sum::<f64>() / k as f64
                },
                share_of_large: if n_large == 0 {
                    0.0
                } else {
                    inside.iter().filter(|t| dlogp(t).abs() > large).count() as f64 / n_large as f64
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
    // ids compare as they read (`7` and `"7"` are one response, as always)
    let id = t.id_text();
    let same = |j: usize| tokens[j].id_text() == id;
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
        id: id.to_string(),
        position: t.position,
        token: t.text.clone(),
        dlogp: t.metrics.dlogp,
        p_base: t.metrics.logp_base.exp(),
        p_rl: t.metrics.logp_rl.exp(),
        before: join(start..index),
        after: join(index + 1..end),
    }
}

impl Analysis {
    /// The histogram of one metric as a chart (density on a log axis).
    pub fn histogram_plot(&self, metric: Metric) -> Option<LinePlot> {
        let m = self.metrics.iter().find(|m| m.metric == metric.name())?;
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
            title: format!("{} per token", metric.label()),
            x_label: metric.label().to_string(),
            y_label: "density (log scale)".to_string(),
            series,
            references: Vec::new(),
            log_y: true,
        })
    }

    /// The report as a document; `plots` holds the histogram to show under
    /// each metric's heading.
    pub fn document(&self, plots: &HashMap<Metric, ImageSource>) -> Document {
        let mut doc = Document::default();
        doc.push(Block::heading(1, TITLE));
        doc.push(Block::paragraph(format!(
            "Token sets: {}",
            self.sets
                .iter()
                .map(|(n, k)| format!("{n} ({k} tokens)"))
                .collect::<Vec<_>>()
                .join(", ")
        )));
        doc.push(Block::heading(2, "Distributions"));
        for m in &self.metrics {
            let metric = Metric::ALL.into_iter().find(|x| x.name() == m.metric);
            let label = metric.map_or(m.metric.as_str(), |x| x.label());
            doc.push(Block::heading(3, label));
            if let Some(source) = metric.and_then(|x| plots.get(&x)) {
                doc.push(Block::Image(Image {
                    alt: m.metric.clone(),
                    source: source.clone(),
                }));
            }
            if let Some(t) = sparsity_table(m) {
                doc.push(Block::Table(t));
            }
        }
        doc.push(Block::heading(
            2,
            "Largest positive Δlog p (RL promoted the token)",
        ));
        doc.push(Block::Table(top_table(&self.top_positive)));
        doc.push(Block::heading(
            2,
            "Largest negative Δlog p (RL suppressed the token)",
        ));
        doc.push(Block::Table(top_table(&self.top_negative)));
        doc.push(Block::heading(2, "Δlog p by token probability"));
        for b in &self.breakdown {
            for (model, bins) in [("base", &b.by_p_base), ("RL", &b.by_p_rl)] {
                doc.push(Block::Paragraph(vec![
                    Inline::Bold(b.set.clone()),
                    Inline::text(format!(
                        ", by p under the {model} model ({} tokens with |Δlog p| > {}):",
                        b.n_large, b.large_threshold
                    )),
                ]));
                doc.push(Block::Table(probability_table(bins)));
            }
        }
        if let Some(p) = &self.provenance {
            doc.push(Block::heading(2, "Provenance"));
            doc.push(Block::Code(p.lines().join("\n")));
        }
        doc
    }

    /// A Markdown report; `plots` maps a metric to the image path to link.
    pub fn to_markdown(&self, plots: &HashMap<Metric, String>) -> String {
        let links = plots
            .iter()
            .map(|(&m, p)| (m, ImageSource::Link(p.clone())))
            .collect();
        self.document(&links).to_markdown()
    }

    /// A self-contained HTML report with inline SVG charts (`svgs` maps a
    /// metric to its chart's markup).
    pub fn to_html(&self, svgs: &HashMap<Metric, String>) -> String {
        let inline = svgs
            .iter()
            .map(|(&m, svg)| (m, ImageSource::Svg(svg.clone())))
            .collect();
        self.document(&inline).to_html(TITLE)
    }
}

const TITLE: &str = "Δlog p analysis";

/// Per set: tokens, min, mean, max and the share above each threshold;
/// `None` without sets.
fn sparsity_table(m: &MetricReport) -> Option<Table> {
    let first = m.sparsity.first()?;
    let thresholds: Vec<String> = first
        .share_above
        .iter()
        .map(|(t, _)| format!("abs > {t}"))
        .collect();
    let mut columns = vec![
        ("set", Align::Left),
        ("tokens", Align::Right),
        ("min", Align::Right),
        ("mean", Align::Right),
        ("max", Align::Right),
    ];
    columns.extend(thresholds.iter().map(|t| (t.as_str(), Align::Right)));
    let mut table = Table::new(&columns);
    for sp in &m.sparsity {
        let mut row = vec![
            sp.set.clone(),
            sp.n_tokens.to_string(),
            format!("{:.4}", sp.min),
            format!("{:.4}", sp.mean),
            format!("{:.4}", sp.max),
        ];
        row.extend(
            sp.share_above
                .iter()
                .map(|(_, share)| format!("{:.2}%", 100.0 * share)),
        );
        table.push_text_row(row);
    }
    Some(table)
}

fn top_table(tokens: &[TokenInContext]) -> Table {
    let mut table = Table::new(&[
        ("Δlog p", Align::Right),
        ("p base", Align::Right),
        ("p RL", Align::Right),
        ("set", Align::Left),
        ("id", Align::Left),
        ("context", Align::Left),
    ]);
    for t in tokens {
        let text = |s: String| vec![Inline::Text(s)];
        table.rows.push(vec![
            text(format!("{:+.3}", t.dlogp)),
            text(format!("{:.4}", t.p_base)),
            text(format!("{:.4}", t.p_rl)),
            text(t.set.clone()),
            text(t.id.clone()),
            vec![
                Inline::text(t.before.as_str()),
                Inline::Bold(format!("[{}]", t.token)),
                Inline::text(t.after.as_str()),
            ],
        ]);
    }
    table
}

fn probability_table(bins: &[ProbabilityBin]) -> Table {
    let mut table = Table::new(&[
        ("p", Align::Left),
        ("tokens", Align::Right),
        ("share of tokens", Align::Right),
        ("mean abs Δlog p", Align::Right),
        ("share of large abs Δlog p", Align::Right),
    ]);
    for bin in bins {
        table.push_text_row([
            format!(
                "[{}, {}{}",
                bin.low,
                bin.high,
                if bin.high >= 1.0 { "]" } else { ")" }
            ),
            bin.n_tokens.to_string(),
            format!("{:.2}%", 100.0 * bin.share_of_tokens),
            format!("{:.4}", bin.mean_abs_dlogp),
            format!("{:.2}%", 100.0 * bin.share_of_large),
        ]);
    }
    table
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tok(id: &str, position: usize, text: &str, dlogp: f64, lb: f64) -> ScoreRecord {
        ScoreRecord {
            id: id.into(),
            position,
            token: None,
            text: text.to_string(),
            metrics: crate::sampler::TokenMetrics {
                logp_base: lb,
                logp_rl: lb + dlogp,
                dlogp,
                entropy_base: 1.0,
                entropy_rl: 1.0,
                kl: dlogp.abs() / 2.0,
                kl_r: 0.1,
                js: 0.2,
                rank_base: 0,
                rank_rl: 0,
            },
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
    #[cfg(feature = "plots")]
    fn reports_render_and_escape() {
        let a = analyze(&sets(), &AnalysisOptions::default());
        let md = a.to_markdown(&HashMap::from([(
            Metric::Dlogp,
            "plots/dlogp.svg".to_string(),
        )]));
        assert!(md.contains("![dlogp](plots/dlogp.svg)"));
        assert!(md.contains("**[\\|]**"), "a pipe token is escaped");
        let plot = a.histogram_plot(Metric::Dlogp).unwrap();
        assert_eq!(plot.series.len(), 2);
        assert!(plot.log_y);
        let svg = plot.to_svg().unwrap();
        let html = a.to_html(&HashMap::from([(Metric::Dlogp, svg)]));
        assert!(html.starts_with("<!DOCTYPE html>") && html.contains("<svg"));
        assert!(
            html.contains("<td><b>[|]</b></td>") || html.contains("<b>[|]</b>"),
            "{}",
            &html[html.len() - 3000..]
        );
        assert!(!html.contains("**"));
    }
}

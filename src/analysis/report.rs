//! The distribution analysis of METHOD.md §1 over `dlogp score` outputs of
//! base-generated and RL-generated responses: per-metric histograms (density,
//! for a log axis), sparsity, the tokens with the largest positive and
//! negative Δlog p in context, and Δlog p broken down by the token's
//! probability under each model.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use super::doc::{Align, Block, Document, Image, ImageSource, Inline, Table};
use super::plot::{Band, Figure, LinePlot, Series, Style, VLine};
use super::record::{Metric, ScoreRecord};
use super::summary::{MetricSummary, NoiseFloor};

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

/// The scale a metric's histogram is binned on.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "scale")]
pub enum Axis {
    /// The values as they are.
    Linear,
    /// log10 of the value, values below `floor` counted at log10(floor)
    /// (KL and JS: most tokens sit within a few decades of 0).
    Log10 { floor: f64 },
}

/// Values of KL and JS below this are binned at log10 of it.
pub const LOG_FLOOR: f64 = 1e-6;

impl Axis {
    /// The axis a metric is histogrammed on.
    pub fn of(metric: Metric) -> Axis {
        match metric {
            Metric::Kl | Metric::KlR | Metric::Js => Axis::Log10 { floor: LOG_FLOOR },
            _ => Axis::Linear,
        }
    }

    /// A value's position on the axis.
    pub fn map(self, v: f64) -> f64 {
        match self {
            Axis::Linear => v,
            Axis::Log10 { floor } => v.max(floor).log10(),
        }
    }
}

/// A threshold to mark on the histogram of its metric (the gate's τ).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    pub metric: String,
    pub tau: f64,
}

/// One metric across sets.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MetricReport {
    pub metric: String,
    /// The scale of the histograms' edges.
    pub axis: Axis,
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
    /// Mean, std and quantiles (p1 … p99) of the values; `None` when empty.
    pub quantiles: Option<MetricSummary>,
    /// `(threshold, share of tokens with |value| > threshold)`.
    pub share_above: Vec<(f64, f64)>,
}

/// A token with its neighbourhood, for the top lists. Tokens with the same
/// text in the same response (a repetition loop) are one row: the most
/// extreme occurrence, with `count` the occurrences of that sign.
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
    /// Tokens with this text in this response whose Δlog p has this sign.
    #[serde(default = "one")]
    pub count: usize,
}

fn one() -> usize {
    1
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
    /// The pair's measured noise floor (set by the caller), drawn as a band.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub noise_floor: Option<NoiseFloor>,
    /// The gate's threshold, marked on its metric's histogram.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tau: Option<Threshold>,
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
    /// The gate's metric and τ, marked on that histogram.
    pub tau: Option<(Metric, f64)>,
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
            tau: None,
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
        let axis = Axis::of(metric);
        let values: Vec<Vec<f64>> = sets
            .iter()
            .map(|s| s.tokens.iter().map(|t| metric.of(&t.metrics)).collect())
            .collect();
        let mapped: Vec<Vec<f64>> = values
            .iter()
            .map(|v| v.iter().map(|&x| axis.map(x)).collect())
            .collect();
        let all = mapped.iter().flatten();
        let lo = all.clone().copied().fold(f64::INFINITY, f64::min);
        let hi = all.copied().fold(f64::NEG_INFINITY, f64::max);
        let mut histograms = Vec::new();
        let mut sparsity = Vec::new();
        for ((s, v), m) in sets.iter().zip(&values).zip(&mapped) {
            let (edges, counts) = histogram(m, lo, hi, opts.bins);
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
                quantiles: MetricSummary::from_vec(v.clone()),
                share_above: opts
                    .thresholds
                    .iter()
                    .map(|&t| (t, v.iter().filter(|x| x.abs() > t).count() as f64 / n))
                    .collect(),
            });
        }
        metrics.push(MetricReport {
            metric: metric.name().to_string(),
            axis,
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
    let top_positive = top_tokens(sets, ranked.iter().copied(), true, opts);
    let top_negative = top_tokens(sets, ranked.iter().rev().copied(), false, opts);

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
        noise_floor: None,
        tau: opts.tau.map(|(m, tau)| Threshold {
            metric: m.name().to_string(),
            tau,
        }),
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

/// The first `opts.top` rows of `ranked` (most extreme first) with Δlog p
/// of the sign asked for, one row per (set, response, token, context): a
/// repetition loop (the same token in the same context, again and again)
/// shows once, its most extreme occurrence, with the number of occurrences
/// of that sign in that response.
fn top_tokens(
    sets: &[TokenSet],
    ranked: impl Iterator<Item = (usize, usize)>,
    positive: bool,
    opts: &AnalysisOptions,
) -> Vec<TokenInContext> {
    let sign = |d: f64| if positive { d > 0.0 } else { d < 0.0 };
    let mut seen = std::collections::HashSet::new();
    let mut rows: Vec<TokenInContext> = Vec::new();
    for (s, t) in ranked.filter(|&(s, t)| sign(dlogp(&sets[s].tokens[t]))) {
        if rows.len() == opts.top {
            break;
        }
        let mut row = in_context(&sets[s], t, opts.context);
        let key = |r: &TokenInContext| {
            (
                s,
                r.id.clone(),
                r.token.clone(),
                r.before.clone(),
                r.after.clone(),
            )
        };
        if !seen.insert(key(&row)) {
            continue;
        }
        let tokens = &sets[s].tokens;
        row.count = (0..tokens.len())
            .filter(|&j| {
                let r = &tokens[j];
                sign(dlogp(r)) && r.text == row.token && r.id_text() == row.id && {
                    let other = in_context(&sets[s], j, opts.context);
                    other.before == row.before && other.after == row.after
                }
            })
            .count();
        rows.push(row);
    }
    rows
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
        count: 1,
    }
}

impl Analysis {
    /// Tokens in `set`.
    fn n_of(&self, set: &str) -> usize {
        self.sets.iter().find(|s| s.0 == set).map_or(0, |s| s.1)
    }

    /// The caption line under every figure: what made it.
    pub fn caption(&self) -> String {
        let mut parts = Vec::new();
        let sets = self
            .sets
            .iter()
            .map(|(n, k)| format!("{n} n = {k}"))
            .collect::<Vec<_>>()
            .join(", ");
        parts.push(format!("tokens: {sets}"));
        if let Some(p) = &self.provenance {
            parts.extend(p.short_files());
        }
        if let Some(n) = &self.noise_floor {
            parts.push(format!(
                "noise floor: {} over {} tokens",
                n.method, n.abs_dlogp.count
            ));
        }
        if let Some(p) = &self.provenance {
            parts.push(format!(
                "dlogp {} {}, {}",
                p.dlogp_version,
                p.command,
                super::provenance::utc_date()
            ));
        }
        parts.join(" · ")
    }

    /// The histogram of one metric as a chart: translucent filled
    /// histograms on a log density axis, one per set with its n in the
    /// legend; for Δlog p a line at 0 and the noise floor as bands; the
    /// gate's τ on its metric.
    pub fn histogram_plot(&self, metric: Metric) -> Option<LinePlot> {
        let m = self.metrics.iter().find(|m| m.metric == metric.name())?;
        let series = m
            .histograms
            .iter()
            .map(|h| Series {
                name: format!("{} (n = {})", h.set, self.n_of(&h.set)),
                // a step outline: each bin's density across its width
                points: h
                    .density
                    .iter()
                    .enumerate()
                    .flat_map(|(i, &d)| [(h.edges[i], d), (h.edges[i + 1], d)])
                    .collect(),
                style: Style::Filled,
                errors: Vec::new(),
            })
            .collect();
        let mut vlines = Vec::new();
        let mut bands = Vec::new();
        if metric == Metric::Dlogp {
            vlines.push(VLine {
                name: "0".to_string(),
                x: 0.0,
                dashed: false,
            });
            if let Some(n) = &self.noise_floor {
                let s = &n.abs_dlogp;
                bands.push(Band {
                    name: format!("noise floor, max |Δ| = {:.3} (ε-LoRA probe)", s.max),
                    low: -s.max,
                    high: s.max,
                });
                bands.push(Band {
                    name: format!("noise floor, p99 |Δ| = {:.3} (ε-LoRA probe)", s.p99),
                    low: -s.p99,
                    high: s.p99,
                });
            }
        }
        if let Some(t) = self.tau.as_ref().filter(|t| t.metric == m.metric) {
            vlines.push(VLine {
                name: format!("τ = {}", t.tau),
                x: m.axis.map(t.tau),
                dashed: true,
            });
        }
        let x_label = match m.axis {
            Axis::Linear => format!("{} (nats)", metric.label()),
            Axis::Log10 { floor } => {
                format!(
                    "log10 {} (values < {floor:e} at {})",
                    metric.label(),
                    floor.log10()
                )
            }
        };
        Some(LinePlot {
            title: format!("{} per token", metric.label()),
            x_label,
            y_label: "density (log scale)".to_string(),
            series,
            references: Vec::new(),
            vlines,
            bands,
            log_y: true,
            caption: self.caption(),
        })
    }

    /// Every metric's histogram in one figure (two columns), one caption.
    pub fn figure(&self) -> Figure {
        Figure {
            title: "Per-token metrics of base- and RL-generated responses".to_string(),
            panels: Metric::ALL
                .into_iter()
                .filter_map(|m| self.histogram_plot(m))
                .map(|mut p| {
                    p.caption.clear();
                    p
                })
                .collect(),
            columns: 2,
            caption: self.caption(),
        }
    }

    /// The report as a document; `figure` is the multi-panel figure and
    /// `plots` the histogram to show under each metric's heading.
    pub fn document(
        &self,
        figure: Option<&ImageSource>,
        plots: &HashMap<Metric, ImageSource>,
    ) -> Document {
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
        if let Some(n) = &self.noise_floor {
            let s = &n.abs_dlogp;
            doc.push(Block::paragraph(format!(
                "Noise floor of the pair ({}; {} tokens): |Δlog p| p50 {}, p95 {}, p99 {}, max {}. \
                 Δlog p inside ±p99 cannot be told from rounding; the figures shade ±p99 and ±max.",
                n.method,
                s.count,
                num(s.p50),
                num(s.p95),
                num(s.p99),
                num(s.max)
            )));
        }
        doc.push(Block::heading(2, "Distributions"));
        if let Some(source) = figure {
            doc.push(Block::Image(Image {
                alt: "all metrics".to_string(),
                source: source.clone(),
            }));
        }
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
            let floor = self
                .noise_floor
                .as_ref()
                .filter(|_| metric == Some(Metric::Dlogp));
            doc.push(Block::Table(quantile_table(m, floor)));
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
        doc.push(Block::paragraph(
            "The same token in the same context repeated in one response (a loop) is one row; × counts its occurrences of that sign.",
        ));
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

    /// A Markdown report; `figure` and `plots` are the image paths to link.
    pub fn to_markdown(&self, figure: Option<&str>, plots: &HashMap<Metric, String>) -> String {
        let links = plots
            .iter()
            .map(|(&m, p)| (m, ImageSource::Link(p.clone())))
            .collect();
        let figure = figure.map(|f| ImageSource::Link(f.to_string()));
        self.document(figure.as_ref(), &links).to_markdown()
    }

    /// A self-contained HTML report with inline SVG charts (`svgs` maps a
    /// metric to its chart's markup, `figure` is the multi-panel one).
    pub fn to_html(&self, figure: Option<String>, svgs: &HashMap<Metric, String>) -> String {
        let inline = svgs
            .iter()
            .map(|(&m, svg)| (m, ImageSource::Svg(svg.clone())))
            .collect();
        let figure = figure.map(ImageSource::Svg);
        self.document(figure.as_ref(), &inline).to_html(TITLE)
    }
}

const TITLE: &str = "Δlog p analysis";

/// A number for a table: fixed-point, or scientific when tiny.
fn num(v: f64) -> String {
    if v == 0.0 || !v.is_finite() || v.abs() >= 1e-3 {
        format!("{v:.4}")
    } else {
        format!("{v:.2e}")
    }
}

/// Per set: tokens, mean, the quantiles p1 … p99 and max; for Δlog p a last
/// row with the noise floor's |Δlog p| quantiles.
fn quantile_table(m: &MetricReport, floor: Option<&NoiseFloor>) -> Table {
    let mut table = Table::new(&[
        ("set", Align::Left),
        ("tokens", Align::Right),
        ("mean", Align::Right),
        ("p1", Align::Right),
        ("p5", Align::Right),
        ("p25", Align::Right),
        ("p50", Align::Right),
        ("p75", Align::Right),
        ("p95", Align::Right),
        ("p99", Align::Right),
        ("max", Align::Right),
    ]);
    let mut row = |name: String, s: &MetricSummary| {
        table.push_text_row([
            name,
            s.count.to_string(),
            num(s.mean),
            num(s.p01),
            num(s.p05),
            num(s.p25),
            num(s.p50),
            num(s.p75),
            num(s.p95),
            num(s.p99),
            num(s.max),
        ]);
    };
    for sp in &m.sparsity {
        if let Some(q) = &sp.quantiles {
            row(sp.set.clone(), q);
        }
    }
    if let Some(f) = floor {
        row("noise floor, abs Δlog p".to_string(), &f.abs_dlogp);
    }
    table
}

/// Per set: the share of tokens with |value| above each threshold; `None`
/// without sets.
fn sparsity_table(m: &MetricReport) -> Option<Table> {
    let first = m.sparsity.first()?;
    let thresholds: Vec<String> = first
        .share_above
        .iter()
        .map(|(t, _)| format!("abs > {t}"))
        .collect();
    let mut columns = vec![("set", Align::Left), ("tokens", Align::Right)];
    columns.extend(thresholds.iter().map(|t| (t.as_str(), Align::Right)));
    let mut table = Table::new(&columns);
    for sp in &m.sparsity {
        let mut row = vec![sp.set.clone(), sp.n_tokens.to_string()];
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
        ("×", Align::Right),
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
            text(t.count.to_string()),
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
    fn log_density_of_a_known_sample_and_counts_sum_to_n() {
        // KL values 1e-8 (below the floor: at log10 1e-6 = -6), 1e-4, 1e-3, 1e-2, 1
        let mut set = sets()[0].clone();
        let kls = [1e-8, 1e-4, 1e-3, 1e-2, 1.0];
        set.tokens = kls
            .iter()
            .enumerate()
            .map(|(i, &k)| {
                let mut t = tok("a", i, "x", 0.0, -1.0);
                t.metrics.kl = k;
                t
            })
            .collect();
        let a = analyze(
            &[set],
            &AnalysisOptions {
                bins: 3,
                ..Default::default()
            },
        );
        let kl = a.metrics.iter().find(|m| m.metric == "kl").unwrap();
        assert_eq!(kl.axis, Axis::Log10 { floor: 1e-6 });
        let h = &kl.histograms[0];
        // log10 values -6, -4, -3, -2, 0 over [-6, 0] in bins of width 2
        assert_eq!(h.edges, vec![-6.0, -4.0, -2.0, 0.0]);
        assert_eq!(h.counts, vec![1, 2, 2]);
        assert_eq!(h.counts.iter().sum::<usize>(), kls.len());
        // density = count / (n · width) = 1/10, 2/10, 2/10
        for (d, want) in h.density.iter().zip([0.1, 0.2, 0.2]) {
            assert!((d - want).abs() < 1e-12, "{:?}", h.density);
        }
        // quantiles are of the raw values, not the log10 ones
        let q = kl.sparsity[0].quantiles.unwrap();
        assert_eq!((q.p50, q.max), (1e-3, 1.0));
    }

    #[test]
    fn quantile_table_rows_match_hand_computed_values() {
        let a = analyze(&sets(), &AnalysisOptions::default());
        // base-generated Δlog p: -3, 0, 0.05, 0.5; h = 3p
        // p25 = 0 (h 0.75: -3 + 0.75·3 = -0.75), p50 = 0.025, p75 = 0.1625
        let q = a.metrics[0].sparsity[0].quantiles.unwrap();
        let close = |a: f64, b: f64| (a - b).abs() < 1e-12;
        assert!(
            close(q.p25, -0.75) && close(q.p50, 0.025) && close(q.p75, 0.1625),
            "{q:?}"
        );
        assert!(close(q.p01, -3.0 + 0.03 * 3.0) && close(q.mean, -2.45 / 4.0));
        let mut with_floor = a.clone();
        with_floor.noise_floor = NoiseFloor::from_dlogp("probe", &[0.1, -0.3]);
        let md = with_floor.to_markdown(None, &HashMap::new());
        assert!(
            md.contains("| set | tokens | mean | p1 | p5 | p25 | p50 | p75 | p95 | p99 | max |"),
            "{md}"
        );
        assert!(
            md.contains(
                "| base-generated | 4 | -0.6125 | -2.9100 | -2.5500 | -0.7500 | 0.0250 | 0.1625 |"
            ),
            "{md}"
        );
        // the floor's row: |Δ| 0.1, 0.3 → p50 0.2, max 0.3
        assert!(
            md.contains("| noise floor, abs Δlog p | 2 | 0.2000 |"),
            "{md}"
        );
        assert!(
            md.contains("Noise floor of the pair (probe; 2 tokens)"),
            "{md}"
        );
    }

    #[test]
    fn a_repetition_loop_is_one_top_row_with_its_count() {
        let loop_set = TokenSet {
            name: "RL-generated".to_string(),
            tokens: vec![
                tok("r", 0, "A", 0.1, -1.0),
                tok("r", 1, " 4", 5.0, -6.0),
                tok("r", 2, " +", 1.0, -1.0),
                tok("r", 3, " 4", 4.9, -6.0),
                tok("r", 4, " +", 1.0, -1.0),
                tok("r", 5, " 4", 4.8, -6.0),
                tok("r", 6, " +", 1.0, -1.0),
                tok("r", 7, " 4", -2.0, -1.0),
                tok("s", 0, " 4", 3.0, -1.0),
                tok("s", 1, " =", 2.0, -1.0),
            ],
        };
        let a = analyze(
            &[loop_set],
            &AnalysisOptions {
                top: 4,
                context: 1,
                ..Default::default()
            },
        );
        let rows: Vec<(&str, usize, f64, usize)> = a
            .top_positive
            .iter()
            .map(|t| (t.id.as_str(), t.position, t.dlogp, t.count))
            .collect();
        // " 4" at 3 and 5 both read " + [4] +": one row, count 2; at 1 ("A [4] +")
        // it is another context, and s's " 4" another response
        assert_eq!(
            rows,
            [
                ("r", 1, 5.0, 1),
                ("r", 3, 4.9, 2),
                ("s", 0, 3.0, 1),
                ("s", 1, 2.0, 1)
            ]
        );
        let neg: Vec<usize> = a.top_negative.iter().map(|t| t.count).collect();
        assert_eq!(neg, [1]);
    }

    /// `(stroke colour, points)` of every polyline, and `(x, y, w, h, fill)`
    /// of every rect, read from plotters' SVG.
    #[cfg(feature = "plots")]
    type Polyline = (String, Vec<(f64, f64)>);

    #[cfg(feature = "plots")]
    fn svg_shapes(svg: &str) -> (Vec<Polyline>, Vec<[f64; 4]>) {
        let attr = |el: &str, name: &str| -> Option<String> {
            let key = format!(" {name}=\"");
            let i = el.find(&key)? + key.len();
            Some(el[i..i + el[i..].find('"')?].to_string())
        };
        let mut lines = Vec::new();
        let mut rects = Vec::new();
        for el in svg.split('<') {
            if el.starts_with("polyline") {
                let points = attr(el, "points")
                    .unwrap_or_default()
                    .split_whitespace()
                    .filter_map(|p| {
                        let (x, y) = p.split_once(',')?;
                        Some((x.parse().ok()?, y.parse().ok()?))
                    })
                    .collect();
                lines.push((attr(el, "stroke").unwrap_or_default(), points));
            } else if el.starts_with("rect") && attr(el, "fill").as_deref() == Some("#787878") {
                let n = |k| attr(el, k).and_then(|v| v.parse().ok()).unwrap_or(0.0);
                rects.push([n("x"), n("y"), n("width"), n("height")]);
            }
        }
        (lines, rects)
    }

    #[test]
    #[cfg(feature = "plots")]
    fn the_dlogp_histogram_draws_zero_tau_the_noise_band_and_n() {
        let mut a = analyze(
            &sets(),
            &AnalysisOptions {
                tau: Some((Metric::Dlogp, -2.0)),
                ..Default::default()
            },
        );
        a.noise_floor = NoiseFloor::from_dlogp("probe", &[0.5, -1.0, 0.25]);
        let svg = a.histogram_plot(Metric::Dlogp).unwrap().to_svg().unwrap();
        let texts: Vec<&str> = svg
            .split("</text>")
            .filter_map(|t| t.rsplit_once('>').map(|x| x.1.trim()))
            .collect();
        for want in [
            "base-generated (n = 4)",
            "RL-generated (n = 2)",
            "τ = -2",
            "0",
        ] {
            assert!(texts.contains(&want), "{want} missing from {texts:?}");
        }
        assert!(
            texts.iter().any(|t| t.starts_with("noise floor, p99")),
            "{texts:?}"
        );
        let (lines, rects) = svg_shapes(&svg);
        // marker lines: vertical, in their own colour; the solid 0 line is one
        // polyline, the dashed τ line many pieces at one x
        let vertical: Vec<f64> = lines
            .iter()
            .filter(|(c, p)| c == "#141414" && p.len() == 2 && p[0].0 == p[1].0 && p[0].1 != p[1].1)
            .map(|(_, p)| p[0].0)
            .collect();
        let mut xs = vertical.clone();
        xs.sort_by(f64::total_cmp);
        xs.dedup();
        assert_eq!(xs.len(), 2, "{vertical:?}");
        let (x_tau, x_zero) = (xs[0], xs[1]);
        assert!(
            vertical.iter().filter(|&&x| x == x_tau).count() > 3,
            "τ is dashed"
        );
        assert_eq!(
            vertical.iter().filter(|&&x| x == x_zero).count(),
            1,
            "0 is solid"
        );
        // the bands (tall rects; the legend's keys are small): ±max then ±p99,
        // both centred on the 0 line; τ = -2 sits 2/max(=1) half-widths left of 0
        let bands: Vec<[f64; 4]> = rects.into_iter().filter(|r| r[3] > 100.0).collect();
        assert_eq!(bands.len(), 2, "{bands:?}");
        for b in &bands {
            assert!(
                (b[0] + b[2] / 2.0 - x_zero).abs() <= 1.0,
                "{b:?} vs {x_zero}"
            );
        }
        let half_max = bands[0][2] / 2.0;
        assert!(bands[1][2] < bands[0][2], "p99 band inside the max band");
        assert!(
            ((x_zero - x_tau) - 2.0 * half_max).abs() <= 2.5,
            "{x_tau} {x_zero} {half_max}"
        );
        // filled histograms: one polygon per set
        assert_eq!(svg.matches("<polygon").count(), 2);
    }

    #[test]
    #[cfg(feature = "plots")]
    fn reports_render_and_escape() {
        let a = analyze(&sets(), &AnalysisOptions::default());
        let md = a.to_markdown(
            Some("plots/figure.svg"),
            &HashMap::from([(Metric::Dlogp, "plots/dlogp.svg".to_string())]),
        );
        assert!(md.contains("![dlogp](plots/dlogp.svg)"));
        assert!(md.contains("![all metrics](plots/figure.svg)"));
        assert!(md.contains("**[\\|]**"), "a pipe token is escaped");
        let plot = a.histogram_plot(Metric::Dlogp).unwrap();
        assert_eq!(plot.series.len(), 2);
        assert!(plot.log_y);
        let svg = plot.to_svg().unwrap();
        let figure = a.figure();
        assert_eq!(figure.panels.len(), 6);
        let fig_svg = figure.to_svg().unwrap();
        for title in [
            "Δlog p per token",
            "KL(RL ‖ base) per token",
            "entropy (base) per token",
            "JS (mean KL) per token",
        ] {
            assert!(fig_svg.contains(title), "{title}");
        }
        let html = a.to_html(Some(fig_svg), &HashMap::from([(Metric::Dlogp, svg)]));
        assert!(html.starts_with("<!DOCTYPE html>") && html.contains("<svg"));
        assert_eq!(html.matches("<svg").count(), 2);
        assert!(
            html.contains("<td><b>[|]</b></td>") || html.contains("<b>[|]</b>"),
            "{}",
            &html[html.len() - 3000..]
        );
        assert!(!html.contains("**"));
    }
}

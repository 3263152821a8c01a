//! Aggregates over scored tokens and the reports built from them.
//!
//! - [`ScoreRecord`]: one scored token, the line `dlogp score` writes and
//!   `dlogp analyze` reads back ([`read_scores`]).
//! - [`MetricSummary`]: mean, std and quantiles of one metric ([`quantile`]).
//! - [`ScoreSummary`]: accumulates [`TokenMetrics`](crate::sampler::TokenMetrics)
//!   over responses and finishes into a [`ScoreReport`] (JSON via serde, a
//!   compact table via `Display`).
//! - [`Provenance`]: what made an output (models with size and hash,
//!   data, seed, decoding settings, version and features).
//! - [`report`]: `dlogp analyze`'s histograms, sparsity, top tokens and
//!   probability breakdown, as a [`doc::Document`] rendered to Markdown or HTML.

pub mod doc;
pub mod plot;
pub mod provenance;
pub mod record;
pub mod report;
pub mod summary;

pub use provenance::{DecodeSettings, FileInfo, Provenance};
pub use record::{read_scores, Metric, ReadError, ScoreRecord};
pub use summary::{
    quantile, wilson, MetricSummaries, MetricSummary, NoiseFloor, ScoreReport, ScoreSummary,
    ThresholdCount, Z95,
};

//! Aggregates over scored tokens: the statistics `dlogp score` reports.
//!
//! - [`MetricSummary`]: mean, std and quantiles of one metric.
//! - [`ScoreSummary`]: accumulates [`TokenMetrics`](crate::sampler::TokenMetrics)
//!   over responses and finishes into a [`ScoreReport`] (JSON via serde, a
//!   compact table via `Display`).

pub mod summary;

pub use summary::{MetricSummaries, MetricSummary, ScoreReport, ScoreSummary, ThresholdCount};
pub mod plot;
pub mod report;

//! Verifiable evaluation: datasets, the seeded arithmetic task generator,
//! and Avg@k / Pass@k.

pub mod dataset;
pub mod metrics;
pub mod tasks;

pub use dataset::{load, DatasetSpec, Preset};
pub use metrics::{avg_at_k, pass_at_k, summarize};
pub use tasks::{arith, Task};
